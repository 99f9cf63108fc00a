//! S3Store against the embedded S3 server over real HTTP (aws-sdk-s3 ->
//! 127.0.0.1 -> s3s -> s3s-fs). No mocks.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use shuffle_core::metrics::ShuffleMetrics;
use shuffle_core::spill::{SpillReader, SpillStore, SpillWriter};
use shuffle_core::store::{ObjectKey, PutOutcome, ShuffleStore};
use shuffle_core::Error;
use shuffle_s3::config::{BucketUri, S3ConfigBuilder};
use shuffle_s3::{EmbeddedS3, FaultConfig, RetryConfig, S3Op, S3Store, Sse};

const MIB: usize = 1024 * 1024;

async fn store_with(
    server: &EmbeddedS3,
    tweak: impl FnOnce(S3ConfigBuilder) -> S3ConfigBuilder,
) -> (S3Store, Arc<ShuffleMetrics>) {
    let config = tweak(server.config_builder("test/prefix")).build().unwrap();
    let metrics = Arc::new(ShuffleMetrics::default());
    let store = S3Store::new(config, Arc::clone(&metrics)).await.unwrap();
    (store, metrics)
}

fn random_bytes(seed: u64, len: usize) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    Bytes::from(v)
}

/// Writes `data` through a streaming sink in uneven chunks.
async fn write_streaming(store: &S3Store, key: &ObjectKey, data: &Bytes, chunk: usize) -> u64 {
    let mut sink = store.create(key).await.unwrap();
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        sink.write(data.slice(off..end)).await.unwrap();
        off = end;
    }
    sink.finish().await.unwrap()
}

fn backend_message(e: &Error) -> String {
    match e {
        Error::Backend { store, message, .. } => {
            assert_eq!(*store, "s3");
            message.clone()
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_put_get_range_list_delete() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| b).await;
    assert!(store.supports_reliable_storage());
    assert_eq!(store.name(), "s3");

    let a = ObjectKey::new(1, "app/shuffle-0/map-0-0.data");
    let b = ObjectKey::new(2, "app/shuffle-0/map-1-0.data");
    let c = ObjectKey::new(3, "app/shuffle-1/map-0-0.data");
    let data = random_bytes(1, 100_000);
    store.put(&a, data.clone()).await.unwrap();
    store.put(&b, Bytes::from_static(b"hello")).await.unwrap();
    store.put(&c, Bytes::new()).await.unwrap();

    assert_eq!(store.get(&a).await.unwrap(), data);
    assert_eq!(store.get(&c).await.unwrap(), Bytes::new());
    assert_eq!(
        store.get_range(&a, 10..20).await.unwrap(),
        data.slice(10..20)
    );
    assert_eq!(store.get_range(&a, 0..100_000).await.unwrap(), data);
    // Short: the object ends first.
    assert_eq!(
        store.get_range(&a, 99_990..100_100).await.unwrap(),
        data.slice(99_990..)
    );
    // Past the end: empty.
    assert_eq!(
        store.get_range(&a, 200_000..200_010).await.unwrap(),
        Bytes::new()
    );
    assert_eq!(store.get_range(&c, 0..10).await.unwrap(), Bytes::new());
    assert_eq!(store.get_range(&b, 3..3).await.unwrap(), Bytes::new());

    let missing = ObjectKey::new(9, "app/shuffle-0/nope");
    match store.get(&missing).await.unwrap_err() {
        Error::NotFound { object } => {
            let (bucket, key) = store.locate(&missing);
            assert_eq!(object, format!("s3://{bucket}/{key}"));
            assert!(key.starts_with("test/prefix/"), "{key}");
            assert!(key.ends_with("/app/shuffle-0/nope"), "{key}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.get_range(&missing, 0..10).await.unwrap_err(),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        store.get_range(&missing, 5..5).await.unwrap_err(),
        Error::NotFound { .. }
    ));
    assert_eq!(store.describe(&missing), {
        let (b, k) = store.locate(&missing);
        format!("s3://{b}/{k}")
    });

    let listed = store.list("app/shuffle-0/").await.unwrap();
    let paths: Vec<&str> = listed.iter().map(|m| m.key.path.as_str()).collect();
    assert_eq!(
        paths,
        ["app/shuffle-0/map-0-0.data", "app/shuffle-0/map-1-0.data"]
    );
    assert_eq!(listed[0].size, 100_000);
    assert!(listed[0].modified_unix_secs > 0);
    // Listed keys address the same objects.
    assert_eq!(
        store.get(&listed[1].key).await.unwrap(),
        Bytes::from_static(b"hello")
    );
    assert_eq!(store.list("app/").await.unwrap().len(), 3);

    store.delete(&[b.clone(), missing.clone()]).await.unwrap();
    assert!(matches!(
        store.get(&b).await.unwrap_err(),
        Error::NotFound { .. }
    ));
    assert_eq!(store.delete_prefix("app/").await.unwrap(), 2);
    assert!(store.list("").await.unwrap().is_empty());
    assert_eq!(store.delete_prefix("app/").await.unwrap(), 0);

    let m = metrics.requests.snapshot();
    assert_eq!(m.put, 3);
    assert!(m.get >= 8, "{m:?}");
    assert!(m.list > 0 && m.delete > 0, "{m:?}");
    assert_eq!(m.bytes_uploaded, 100_005);
    assert_eq!(m.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_is_byte_identical() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| {
        b.part_size(5 * MIB as u64)
            .multipart_threshold(5 * MIB as u64)
            .max_parts_in_flight(2)
    })
    .await;
    let key = ObjectKey::new(7, "app/shuffle-0/map-3-0.data");
    let data = random_bytes(7, 17 * MIB + 12_345);
    let n = write_streaming(&store, &key, &data, 777_777).await;
    assert_eq!(n, data.len() as u64);

    let back = store.get(&key).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "multipart object differs");
    let boundary = 5 * MIB as u64;
    assert_eq!(
        store
            .get_range(&key, boundary - 100..boundary + 100)
            .await
            .unwrap(),
        data.slice(boundary as usize - 100..boundary as usize + 100)
    );

    let s = server.stats();
    assert_eq!(s.count(S3Op::CreateMultipartUpload), 1);
    assert_eq!(s.count(S3Op::UploadPart), 4);
    assert_eq!(s.count(S3Op::CompleteMultipartUpload), 1);
    assert_eq!(s.count(S3Op::PutObject), 0);
    assert_eq!(server.pending_multipart_uploads(), 0);
    let m = metrics.requests.snapshot();
    assert_eq!(
        (m.multipart_create, m.multipart_part, m.multipart_complete),
        (1, 4, 1)
    );
    assert_eq!(m.bytes_uploaded, data.len() as u64);

    // `put` of a large object goes multipart too.
    let big = ObjectKey::new(8, "app/big");
    store.put(&big, data.slice(..6 * MIB)).await.unwrap();
    assert_eq!(store.get(&big).await.unwrap(), data.slice(..6 * MIB));
    assert_eq!(server.stats().count(S3Op::CreateMultipartUpload), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_payloads_to_loopback_by_default_and_signed_when_asked() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    // The embedded server is plain HTTP on 127.0.0.1: bodies that never
    // leave the machine go unsigned by default; signing is asked for here.
    let (signed, _) = store_with(&server, |b| b.sign_payload(true)).await;
    assert!(signed.config().sign_payload);
    let data = random_bytes(11, 300_000);
    signed
        .put(&ObjectKey::new(1, "app/signed"), data.clone())
        .await
        .unwrap();
    assert_eq!(server.stats().unsigned_uploads, 0);

    // By default, a PutObject and the parts of a multipart upload are sent
    // as UNSIGNED-PAYLOAD and come back byte for byte.
    let (unsigned, _) = store_with(&server, |b| {
        b.part_size(5 * MIB as u64)
            .multipart_threshold(5 * MIB as u64)
    })
    .await;
    assert!(!unsigned.config().sign_payload);
    let small = ObjectKey::new(2, "app/unsigned");
    unsigned.put(&small, data.clone()).await.unwrap();
    assert_eq!(unsigned.get(&small).await.unwrap(), data);
    let big = ObjectKey::new(3, "app/unsigned-big");
    let big_data = random_bytes(12, 11 * MIB);
    let n = write_streaming(&unsigned, &big, &big_data, 1 << 20).await;
    assert_eq!(n, big_data.len() as u64);
    assert!(unsigned.get(&big).await.unwrap() == big_data);
    let s = server.stats();
    assert_eq!(s.count(S3Op::UploadPart), 3);
    assert_eq!(s.unsigned_uploads, 1 + 3, "the PutObject and 3 parts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_leaves_no_object() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| {
        b.part_size(5 * MIB as u64)
            .multipart_threshold(5 * MIB as u64)
    })
    .await;

    // Buffered (single-PUT) path: nothing was sent.
    let small = ObjectKey::new(1, "app/small");
    let mut sink = store.create(&small).await.unwrap();
    sink.write(random_bytes(1, 1000)).await.unwrap();
    sink.abort().await.unwrap();

    // Multipart path: parts were uploaded, then aborted.
    let big = ObjectKey::new(2, "app/big");
    let mut sink = store.create(&big).await.unwrap();
    let data = random_bytes(2, 12 * MIB);
    sink.write(data.slice(..6 * MIB)).await.unwrap();
    sink.write(data.slice(6 * MIB..)).await.unwrap();
    sink.abort().await.unwrap();

    assert!(store.list("").await.unwrap().is_empty());
    assert!(matches!(
        store.get(&big).await.unwrap_err(),
        Error::NotFound { .. }
    ));
    assert_eq!(server.pending_multipart_uploads(), 0);
    let s = server.stats();
    assert_eq!(s.count(S3Op::PutObject), 0);
    assert_eq!(s.count(S3Op::CreateMultipartUpload), 1);
    assert_eq!(s.count(S3Op::AbortMultipartUpload), 1);
    assert_eq!(s.count(S3Op::CompleteMultipartUpload), 0);
    assert_eq!(metrics.requests.snapshot().multipart_abort, 1);

    // A dropped, unfinished multipart sink is aborted in the background.
    let dropped = ObjectKey::new(3, "app/dropped");
    let mut sink = store.create(&dropped).await.unwrap();
    sink.write(data.clone()).await.unwrap();
    drop(sink);
    for _ in 0..200 {
        if server.pending_multipart_uploads() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(server.pending_multipart_uploads(), 0);
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_absent_first_writer_wins() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, _) = store_with(&server, |b| b).await;
    let key = ObjectKey::new(5, "app/shuffle-0/map-0.index");
    assert_eq!(
        store
            .put_if_absent(&key, Bytes::from_static(b"first"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store
            .put_if_absent(&key, Bytes::from_static(b"second"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"first"));

    // Racing writers: exactly one wins.
    let race = ObjectKey::new(6, "app/shuffle-0/map-1.index");
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = store.clone();
        let race = race.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put_if_absent(&race, Bytes::from(vec![i; 10]))
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == PutOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_put_per_object_under_the_threshold() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| b.part_size(5 * MIB as u64)).await;
    for i in 0..20u64 {
        let key = ObjectKey::new(i, format!("app/shuffle-0/map-{i}-0.data"));
        let data = random_bytes(i, 64 * 1024 + i as usize * 1000);
        write_streaming(&store, &key, &data, 10_000).await;
    }
    // Exactly at the threshold is still one PUT.
    let edge = ObjectKey::new(99, "app/edge");
    write_streaming(&store, &edge, &random_bytes(99, 5 * MIB), MIB).await;
    let s = server.stats();
    assert_eq!(s.count(S3Op::PutObject), 21);
    assert_eq!(s.count(S3Op::CreateMultipartUpload), 0);
    assert_eq!(s.count(S3Op::UploadPart), 0);
    assert_eq!(metrics.requests.snapshot().put, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_header_on_every_put() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, _) = store_with(&server, |b| {
        b.sse(Some(Sse::Aes256))
            .part_size(5 * MIB as u64)
            .multipart_threshold(5 * MIB as u64)
    })
    .await;
    store
        .put(&ObjectKey::new(1, "a"), random_bytes(1, 100))
        .await
        .unwrap();
    store
        .put_if_absent(&ObjectKey::new(2, "b"), random_bytes(2, 100))
        .await
        .unwrap();
    write_streaming(
        &store,
        &ObjectKey::new(3, "c"),
        &random_bytes(3, 11 * MIB),
        MIB,
    )
    .await;
    let records = server.stats().sse;
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records.iter().any(|r| r.op == S3Op::CreateMultipartUpload));
    for r in &records {
        assert_eq!(r.sse.as_deref(), Some("AES256"), "{r:?}");
    }

    server.reset_stats();
    let (kms, _) = store_with(&server, |b| {
        b.sse(Some(Sse::Kms {
            key_id: Some("alias/shovel".into()),
        }))
    })
    .await;
    kms.put(&ObjectKey::new(4, "d"), random_bytes(4, 10))
        .await
        .unwrap();
    let records = server.stats().sse;
    assert_eq!(records[0].sse.as_deref(), Some("aws:kms"));
    assert_eq!(records[0].kms_key_id.as_deref(), Some("alias/shovel"));

    server.reset_stats();
    let (plain, _) = store_with(&server, |b| b).await;
    plain
        .put(&ObjectKey::new(5, "e"), random_bytes(5, 10))
        .await
        .unwrap();
    assert_eq!(server.stats().sse[0].sse, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_delete_cover_every_bucket_and_hash_prefix() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    server.create_bucket("second-bucket").unwrap();
    let (store, _) = store_with(&server, |b| {
        b.buckets(vec![
            BucketUri::parse(&format!("s3://{}/p1", server.bucket)).unwrap(),
            BucketUri::parse("s3://second-bucket").unwrap(),
        ])
        .hash_prefixes(8)
    })
    .await;
    let mut expected = BTreeSet::new();
    for i in 0..200u64 {
        let path = format!("app/shuffle-{}/map-{i}-0.data", i % 2);
        store
            .put(&ObjectKey::new(i, path.clone()), Bytes::from(i.to_string()))
            .await
            .unwrap();
        expected.insert(path);
    }
    // Raw view: both buckets and all 8 prefixes are used.
    let mut cells = BTreeSet::new();
    for bucket in [server.bucket.as_str(), "second-bucket"] {
        let out = store
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        for o in out.contents() {
            let key = o.key().unwrap();
            let hp = if bucket == "second-bucket" {
                key.split('/').next().unwrap().to_string()
            } else {
                assert!(key.starts_with("p1/"), "{key}");
                key.split('/').nth(1).unwrap().to_string()
            };
            assert_eq!(hp.len(), 4, "{key}");
            cells.insert((bucket.to_string(), hp));
        }
    }
    assert_eq!(cells.len(), 16, "{cells:?}");

    let listed = store.list("app/").await.unwrap();
    let got: BTreeSet<String> = listed.iter().map(|m| m.key.path.clone()).collect();
    assert_eq!(got, expected);
    for m in listed.iter().take(20) {
        let i: u64 = m
            .key
            .path
            .split("map-")
            .nth(1)
            .unwrap()
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(store.get(&m.key).await.unwrap(), Bytes::from(i.to_string()));
    }
    assert_eq!(store.list("app/shuffle-1/").await.unwrap().len(), 100);
    assert_eq!(store.delete_prefix("app/shuffle-1/").await.unwrap(), 100);
    let keys: Vec<ObjectKey> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys.len(), 100);
    store.delete(&keys).await.unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_injected_faults() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| {
        b.part_size(5 * MIB as u64)
            .multipart_threshold(5 * MIB as u64)
            .retry(RetryConfig {
                max_attempts: 20,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(100),
                total_deadline: Duration::from_secs(60),
            })
    })
    .await;
    server.set_faults(FaultConfig::mixed(0.2, 42));

    let mut objects = Vec::new();
    for i in 0..30u64 {
        let key = ObjectKey::new(i, format!("app/shuffle-0/map-{i}-0.data"));
        let data = random_bytes(100 + i, 10_000 + i as usize * 517);
        store.put(&key, data.clone()).await.unwrap();
        objects.push((key, data));
    }
    let big_key = ObjectKey::new(1000, "app/shuffle-0/big.data");
    let big = random_bytes(1000, 16 * MIB + 3);
    write_streaming(&store, &big_key, &big, MIB).await;
    let idx = ObjectKey::new(1001, "app/shuffle-0/map-0.index");
    assert_eq!(
        store
            .put_if_absent(&idx, Bytes::from_static(b"idx"))
            .await
            .unwrap(),
        PutOutcome::Created
    );

    for (key, data) in &objects {
        assert_eq!(&store.get(key).await.unwrap(), data);
        assert_eq!(
            store.get_range(key, 100..200).await.unwrap(),
            data.slice(100..200)
        );
    }
    assert!(store.get(&big_key).await.unwrap() == big);
    assert_eq!(store.list("app/").await.unwrap().len(), 32);
    assert_eq!(store.delete_prefix("app/").await.unwrap(), 32);

    let m = metrics.requests.snapshot();
    let s = server.stats();
    assert!(s.faults_injected > 0, "{s:?}");
    assert!(m.retries > 0, "{m:?}");
    assert!(m.throttles > 0, "{m:?}");
    server.clear_faults();
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_gives_up_at_the_deadline() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| {
        b.retry(RetryConfig {
            max_attempts: 1000,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            total_deadline: Duration::from_secs(2),
        })
    })
    .await;
    server.fail_all(true);
    let err = store
        .put(&ObjectKey::new(1, "app/x"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let msg = backend_message(&err);
    assert!(msg.contains(&server.endpoint), "{msg}");
    assert!(msg.contains("InternalError"), "{msg}");
    assert!(msg.contains("s3://shovel/test/prefix/"), "{msg}");
    assert!(msg.contains("attempts"), "{msg}");
    let m = metrics.requests.snapshot();
    assert!(m.retries > 0 && m.retries < 999, "{m:?}");

    server.fail_all(false);
    store
        .put(&ObjectKey::new(1, "app/x"), Bytes::from_static(b"x"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_names_the_endpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = shuffle_s3::S3Config::builder()
        .bucket("s3://nowhere")
        .unwrap()
        .endpoint(endpoint.clone())
        .static_credentials("AK", "SK", None)
        .connect_timeout(Duration::from_millis(500))
        .retry(RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            total_deadline: Duration::from_secs(5),
        })
        .build()
        .unwrap();
    let metrics = Arc::new(ShuffleMetrics::default());
    let store = S3Store::new(config, Arc::clone(&metrics)).await.unwrap();
    let err = store.get(&ObjectKey::new(0, "app/x")).await.unwrap_err();
    let msg = backend_message(&err);
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(msg.contains("no response from S3 endpoint"), "{msg}");
    assert!(msg.contains("s3://nowhere/"), "{msg}");
    assert_eq!(metrics.requests.snapshot().get, 4);
}

/// An endpoint that is not S3 (a bare `404` for everything) must not make
/// objects look missing: that would read as data loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_s3_endpoint_404_is_not_not_found() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    let config = shuffle_s3::S3Config::builder()
        .bucket("s3://some-bucket")
        .unwrap()
        .endpoint(endpoint.clone())
        .static_credentials("AK", "SK", None)
        .build()
        .unwrap();
    let store = S3Store::new(config, Arc::default()).await.unwrap();
    let err = store.get(&ObjectKey::new(0, "k")).await.unwrap_err();
    let msg = backend_message(&err);
    assert!(msg.contains(&endpoint) && msg.contains("404"), "{msg}");
    assert!(msg.contains("s3.endpoint"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried_and_name_the_fix() {
    let server = EmbeddedS3::start_temp().await.unwrap();

    // Wrong secret.
    let (bad_creds, metrics) = store_with(&server, |b| {
        b.static_credentials(server.access_key.clone(), "wrong-secret", None)
    })
    .await;
    let err = bad_creds
        .put(&ObjectKey::new(1, "a"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let msg = backend_message(&err);
    assert!(msg.contains("credentials"), "{msg}");
    assert!(msg.contains("s3://shovel/"), "{msg}");
    assert_eq!(metrics.requests.snapshot().retries, 0);

    // Missing bucket.
    let (no_bucket, metrics) = store_with(&server, |b| {
        b.buckets(vec![BucketUri::parse("s3://missing-bucket").unwrap()])
    })
    .await;
    let err = no_bucket
        .put(&ObjectKey::new(1, "a"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let msg = backend_message(&err);
    assert!(msg.contains("missing-bucket"), "{msg}");
    assert!(msg.contains("create it"), "{msg}");
    assert_eq!(metrics.requests.snapshot().retries, 0);
    let err = no_bucket.list("").await.unwrap_err();
    assert!(backend_message(&err).contains("missing-bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_store_round_trip_deletes_after_read() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| b).await;
    let spill: Arc<dyn SpillStore> = Arc::new(store.spill_store("app-1"));
    assert_eq!(spill.location(), "s3");
    let mut w = SpillWriter::create(&spill, &metrics).await.unwrap();
    let blocks: Vec<Bytes> = (0..50u64).map(|i| random_bytes(i, 20_000)).collect();
    for b in &blocks {
        w.write_block(b).await.unwrap();
    }
    let file = w.finish().await.unwrap();
    let listed = store.list("spill/app-1/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, file.len);

    let mut r = SpillReader::open(Arc::clone(&spill), file, &metrics).with_chunk_size(64 * 1024);
    for b in &blocks {
        assert_eq!(&r.next_block().await.unwrap().unwrap(), b);
    }
    assert!(r.next_block().await.unwrap().is_none());
    assert!(store.list("spill/").await.unwrap().is_empty());
}

#[tokio::test]
async fn config_pairs_from_the_server_work() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let mut pairs = server.config_pairs("pairs");
    pairs.push(("s3.hash_prefixes".into(), "2".into()));
    let config = shuffle_s3::S3Config::from_pairs(pairs).unwrap();
    assert_eq!(config.hash_prefixes, 2);
    let store = S3Store::new(config, Arc::default()).await.unwrap();
    let key = ObjectKey::new(rand::thread_rng().gen(), "k");
    store.put(&key, Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"v"));
    assert_eq!(store.delete_prefix("").await.unwrap(), 1);
}

#[test]
fn config_errors_name_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("s3.bucket", "not-a-uri")], "s3.bucket"),
        (&[("s3.bucket", "s3://UPPER")], "s3.bucket"),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.part_size", "1MiB")],
            "s3.part_size",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.part-size", "lots")],
            "s3.part-size",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.hash_prefixes", "0")],
            "s3.hash_prefixes",
        ),
        (
            &[
                ("s3.bucket", "s3://ok-bucket"),
                ("s3.hash_prefixes", "70000"),
            ],
            "s3.hash_prefixes",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.sse", "rot13")],
            "s3.sse",
        ),
        (
            &[
                ("s3.bucket", "s3://ok-bucket"),
                ("s3.endpoint", "localhost:9000"),
            ],
            "s3.endpoint",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.path_style", "maybe")],
            "s3.path_style",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.access_key_id", "AK")],
            "s3.secret_access_key",
        ),
        (
            &[
                ("s3.bucket", "s3://ok-bucket"),
                ("s3.retry.total_deadline", "10"),
            ],
            "s3.retry.total_deadline",
        ),
        (
            &[
                ("s3.bucket", "s3://ok-bucket"),
                ("s3.retry.max_attempts", "0"),
            ],
            "s3.retry.max_attempts",
        ),
        (
            &[
                ("s3.bucket", "s3://ok-bucket"),
                ("s3.expected_bucket_owner", "me"),
            ],
            "s3.expected_bucket_owner",
        ),
        (
            &[
                ("s3.bucket", "s3://ok-bucket"),
                ("s3.max_parts_in_flight", "0"),
            ],
            "s3.max_parts_in_flight",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.io_threads", "65")],
            "s3.io_threads",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.io-threads", "two")],
            "s3.io-threads",
        ),
        (
            &[("s3.bucket", "s3://ok-bucket"), ("s3.bogus", "1")],
            "s3.bogus",
        ),
        (&[("s3.region", "us-east-1")], "s3.bucket"),
    ];
    for (pairs, key) in cases {
        match shuffle_s3::S3Config::from_pairs(pairs.iter().copied()) {
            Err(e @ Error::Config { .. }) => {
                let Error::Config { key: k, reason } = &e else {
                    unreachable!()
                };
                assert_eq!(k, key, "{pairs:?}: {e}");
                assert!(e.to_string().contains(key), "{e}");
                assert!(!reason.is_empty());
            }
            other => panic!("{pairs:?}: expected a config error for {key}, got {other:?}"),
        }
    }
    // Secrets are redacted.
    let c = shuffle_s3::S3Config::from_pairs([
        ("s3.bucket", "s3://ok-bucket"),
        ("s3.access_key_id", "AKIDEXAMPLE"),
        ("s3.secret_access_key", "super-secret-value"),
        ("s3.session_token", "token-value"),
    ])
    .unwrap();
    let dbg = format!("{c:?}");
    assert!(dbg.contains("AKIDEXAMPLE"));
    assert!(
        !dbg.contains("super-secret-value") && !dbg.contains("token-value"),
        "{dbg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_type() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| b.hash_prefixes(2)).await;
    let key = ObjectKey::new(1, "k");
    store.put(&key, Bytes::from_static(b"abc")).await.unwrap();
    store.get(&key).await.unwrap();
    store.get_range(&key, 0..2).await.unwrap();
    store.list("").await.unwrap();
    store.delete(&[key]).await.unwrap();
    let m = metrics.requests.snapshot();
    assert_eq!(m.put, 1);
    assert_eq!(m.get, 2);
    assert_eq!(m.list, 2, "one per hash prefix");
    assert_eq!(m.delete, 1);
    assert_eq!(m.bytes_uploaded, 3);
    assert_eq!(m.bytes_downloaded, 5);
    assert_eq!(metrics.requests.put.load(Ordering::Relaxed), 1);
    let s = server.stats();
    assert_eq!(s.count(S3Op::PutObject), 1);
    assert_eq!(s.count(S3Op::GetObject), 2);
    assert_eq!(s.count(S3Op::ListObjects), 2);
    assert_eq!(s.count(S3Op::DeleteObjects), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_from_shuffle_config_pairs() {
    use shuffle_core::{ShuffleConfig, ShuffleManager};
    let server = EmbeddedS3::start_temp().await.unwrap();
    let mut pairs = server.config_pairs("mgr");
    pairs.push(("shuffle.backend".into(), "s3".into()));
    pairs.push(("s3.hash_prefixes".into(), "3".into()));
    let config = ShuffleConfig::from_pairs(pairs).unwrap();
    let manager = shuffle_s3::s3_manager(config).await.unwrap();
    assert!(manager.supports_reliable_storage());
    // Building probed the store (its own PUT, then the same key again with
    // If-None-Match: * to learn that the store honours it); count from here.
    assert_eq!(server.stats().count(S3Op::PutObject), 2);
    server.reset_stats();
    let key = ObjectKey::new(1, "x");
    manager
        .store()
        .put(&key, Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert_eq!(server.stats().count(S3Op::PutObject), 1);
    assert_eq!(manager.store().list("").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_falls_back_to_an_embedded_server() {
    use shuffle_core::ShuffleConfig;
    let config =
        ShuffleConfig::from_pairs([("s3.hash_prefixes", "2"), ("spill.to_s3", "true")]).unwrap();
    let s3 = shuffle_s3::S3ShuffleBuilder::new(config)
        .embedded_fallback(true)
        .build()
        .await
        .unwrap();
    let server = s3.embedded.as_ref().expect("embedded server started");
    assert_eq!(s3.store.config().hash_prefixes, 2);
    assert_eq!(
        s3.store.config().endpoint.as_deref(),
        Some(server.endpoint.as_str())
    );
    let key = ObjectKey::new(1, "x");
    s3.store.put(&key, Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(s3.store.get(&key).await.unwrap(), Bytes::from_static(b"v"));
    assert_eq!(s3.metrics.requests.snapshot().put, 1);

    // Without the fallback, a missing bucket is a config error naming the key.
    let config = ShuffleConfig::from_pairs([("s3.hash_prefixes", "2")]).unwrap();
    match shuffle_s3::S3ShuffleBuilder::new(config).build().await {
        Err(Error::Config { key, .. }) => assert_eq!(key, "s3.bucket"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Requests run on the store's I/O runtime (`s3.io_threads`): a PUT goes
/// through while the runtime that asked for it is blocked, as an engine's
/// workers are in long CPU-bound polls.
#[tokio::test(flavor = "current_thread")]
async fn a_request_goes_through_while_the_callers_runtime_is_blocked() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let (store, metrics) = store_with(&server, |b| b.io_threads(1)).await;
    let key = ObjectKey::new(3, "blocked/map-0.data");
    let mut put = Box::pin(store.put(&key, Bytes::from_static(b"while blocked")));
    // One poll hands the request to the I/O runtime; then this thread (the
    // caller's only worker) sleeps and drives nothing.
    assert!(futures::poll!(put.as_mut()).is_pending());
    let served = || {
        server
            .stats()
            .requests
            .get(&S3Op::PutObject)
            .copied()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while served() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(served(), 1, "the PUT waited for its caller's runtime");
    put.await.unwrap();
    assert_eq!(&store.get(&key).await.unwrap()[..], b"while blocked");
    assert_eq!(metrics.requests.put.load(Ordering::Relaxed), 1);
}
