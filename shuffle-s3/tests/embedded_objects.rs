//! The embedded server's own paths for plain objects (one file per object,
//! no MD5, no side files; multipart parts concatenated by the kernel),
//! driven with the AWS SDK over real HTTP on 127.0.0.1: what a client sees
//! must be what S3 (and `s3s-fs`, for everything else) answers.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use shuffle_s3::{EmbeddedS3, S3Store};

const MIB: usize = 1 << 20;

async fn client(server: &EmbeddedS3) -> Client {
    let config = server.config("p").expect("config");
    let metrics = std::sync::Arc::default();
    S3Store::new(config, metrics)
        .await
        .expect("store")
        .client()
        .clone()
}

/// A server in a temporary directory, a client of it, and its bucket.
async fn setup() -> (EmbeddedS3, Client, String) {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let c = client(&server).await;
    let b = server.bucket.clone();
    (server, c, b)
}

fn bytes(seed: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

/// Files at the server's root whose names start with `prefix`.
fn root_files(server: &EmbeddedS3, prefix: &str) -> Vec<String> {
    std::fs::read_dir(server.root())
        .expect("root")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// One PutObject (with `If-None-Match: *` when `only_new`); the error's
/// S3 code on failure.
async fn put(
    c: &Client,
    bucket: &str,
    key: &str,
    data: Bytes,
    only_new: bool,
) -> Result<aws_sdk_s3::operation::put_object::PutObjectOutput, String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .set_if_none_match(only_new.then(|| "*".to_string()))
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| e.code().unwrap_or("no code").to_string())
}

async fn head(
    c: &Client,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    c.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("head")
}

async fn get(c: &Client, bucket: &str, key: &str) -> Bytes {
    c.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_put_is_one_file_and_head_reports_its_etag() {
    let (server, c, b) = setup().await;
    let data = bytes(1, 300_000);
    let first = put(&c, &b, "a/b/map-0.data", data.clone(), false)
        .await
        .expect("put");
    assert!(
        root_files(&server, ".bucket-").is_empty(),
        "a plain object has no side files: {:?}",
        root_files(&server, ".bucket-")
    );
    assert!(root_files(&server, ".shovel-tmp").is_empty(), "temp left");
    let h = head(&c, &b, "a/b/map-0.data").await;
    assert_eq!(h.content_length(), Some(300_000));
    assert_eq!(h.e_tag(), first.e_tag(), "HEAD and PUT agree on the ETag");
    assert_eq!(h.content_type(), Some("application/octet-stream"));
    assert_eq!(get(&c, &b, "a/b/map-0.data").await, data);

    // Rewritten: a new ETag.
    let again = put(&c, &b, "a/b/map-0.data", bytes(2, 1000), false)
        .await
        .expect("put again");
    assert_ne!(again.e_tag(), first.e_tag());

    // First writer wins.
    let err = put(&c, &b, "a/b/map-0.data", bytes(3, 10), true).await;
    assert_eq!(err.err().as_deref(), Some("PreconditionFailed"));
    assert_eq!(get(&c, &b, "a/b/map-0.data").await, bytes(2, 1000));

    // No such bucket: S3's error, nothing created.
    let err = put(&c, "no-such-bucket", "k", bytes(4, 10), false).await;
    assert_eq!(err.err().as_deref(), Some("NoSuchBucket"));
    assert!(!server.root().join("no-such-bucket").exists());
    let err = c
        .head_object()
        .bucket(&b)
        .key("a/b/missing")
        .send()
        .await
        .expect_err("missing");
    assert!(err.into_service_error().is_not_found());

    // A body over the server's write chunk (1 MiB) takes the other path:
    // the same answers.
    let big = bytes(5, 3 * MIB + 17);
    let stored = put(&c, &b, "a/c/map-1.data", big.clone(), true)
        .await
        .expect("put big");
    assert_eq!(get(&c, &b, "a/c/map-1.data").await, big);
    let h = head(&c, &b, "a/c/map-1.data").await;
    assert_eq!(h.content_length(), Some(big.len() as i64));
    assert_eq!(h.e_tag(), stored.e_tag());
    let err = put(&c, &b, "a/c/map-1.data", bytes(6, 2 * MIB), true).await;
    assert_eq!(err.err().as_deref(), Some("PreconditionFailed"));
    assert_eq!(get(&c, &b, "a/c/map-1.data").await, big);
    let err = put(&c, "no-such-bucket", "k", bytes(7, 2 * MIB), false).await;
    assert_eq!(err.err().as_deref(), Some("NoSuchBucket"));
    assert!(!server.root().join("no-such-bucket").exists());
    assert!(root_files(&server, ".shovel-tmp").is_empty(), "temp left");
}

/// An object with attributes still goes through `s3s-fs` (side files,
/// metadata on HEAD); a plain rewrite drops the stale attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_with_attributes_keep_them_until_a_plain_rewrite() {
    let (server, c, b) = setup().await;
    c.put_object()
        .bucket(&b)
        .key("meta")
        .metadata("owner", "someone")
        .content_type("text/plain")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect("put with metadata");
    assert!(!root_files(&server, ".bucket-").is_empty(), "side files");
    let h = head(&c, &b, "meta").await;
    assert_eq!(
        h.metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("someone")
    );
    assert_eq!(h.content_type(), Some("text/plain"));
    put(&c, &b, "meta", Bytes::from_static(b"plain"), false)
        .await
        .expect("plain rewrite");
    assert!(
        root_files(&server, ".bucket-").is_empty(),
        "stale side files"
    );
    let h = head(&c, &b, "meta").await;
    assert!(h.metadata().is_none_or(|m| m.is_empty()));
    assert_eq!(h.content_length(), Some(5));
}

async fn upload(c: &Client, b: &str, key: &str) -> String {
    c.create_multipart_upload()
        .bucket(b)
        .key(key)
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("upload id")
        .to_string()
}

async fn part(c: &Client, b: &str, key: &str, id: &str, n: i32, data: Bytes) -> CompletedPart {
    let out = c
        .upload_part()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(data))
        .send()
        .await
        .expect("part");
    CompletedPart::builder()
        .part_number(n)
        .set_e_tag(out.e_tag().map(str::to_string))
        .build()
}

async fn complete(
    c: &Client,
    b: &str,
    key: &str,
    id: &str,
    parts: Vec<CompletedPart>,
) -> Result<(), String> {
    c.complete_multipart_upload()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .if_none_match("*")
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.code().unwrap_or("no code").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_concatenate_parts_and_check_what_s3_checks() {
    let (server, c, b) = setup().await;
    let (p1, p2, p3) = (bytes(1, 5 * MIB), bytes(2, 5 * MIB + 7), bytes(3, 1234));

    let id = upload(&c, &b, "big").await;
    assert_eq!(server.pending_multipart_uploads(), 1);
    let one = part(&c, &b, "big", &id, 1, p1.clone()).await;
    // A retried part replaces the first attempt.
    part(&c, &b, "big", &id, 2, bytes(9, 5 * MIB)).await;
    let two = part(&c, &b, "big", &id, 2, p2.clone()).await;
    let three = part(&c, &b, "big", &id, 3, p3.clone()).await;
    let listed = c
        .list_parts()
        .bucket(&b)
        .key("big")
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    let sizes: Vec<(Option<i32>, Option<i64>)> = listed
        .parts()
        .iter()
        .map(|p| (p.part_number(), p.size()))
        .collect();
    assert_eq!(
        sizes,
        vec![
            (Some(1), Some(p1.len() as i64)),
            (Some(2), Some(p2.len() as i64)),
            (Some(3), Some(p3.len() as i64))
        ]
    );
    // What S3 refuses, this server refuses, and the upload survives it.
    assert_eq!(
        complete(&c, &b, "big", &id, vec![two.clone(), one.clone()]).await,
        Err("InvalidPartOrder".into())
    );
    let forged = CompletedPart::builder()
        .part_number(1)
        .e_tag("\"not-the-etag\"")
        .build();
    assert_eq!(
        complete(&c, &b, "big", &id, vec![forged, two.clone()]).await,
        Err("InvalidPart".into())
    );
    // Any ascending subset completes; a single part has no minimum size.
    complete(&c, &b, "big", &id, vec![three.clone()])
        .await
        .expect("complete with part 3 alone");
    assert_eq!(get(&c, &b, "big").await, p3, "one-part object");
    assert_eq!(server.pending_multipart_uploads(), 0);
    assert!(root_files(&server, ".shovel-part").is_empty(), "parts left");

    // A full upload, and If-None-Match against the existing object.
    let id = upload(&c, &b, "big2").await;
    let small = part(&c, &b, "big2", &id, 1, bytes(5, 1000)).await;
    let two = part(&c, &b, "big2", &id, 2, p2.clone()).await;
    assert_eq!(
        complete(&c, &b, "big2", &id, vec![small, two.clone()]).await,
        Err("EntityTooSmall".into())
    );
    let one = part(&c, &b, "big2", &id, 1, p1.clone()).await;
    let three = part(&c, &b, "big2", &id, 3, p3.clone()).await;
    complete(&c, &b, "big2", &id, vec![one, two, three])
        .await
        .expect("complete");
    let mut want = p1.to_vec();
    want.extend_from_slice(&p2);
    want.extend_from_slice(&p3);
    assert_eq!(get(&c, &b, "big2").await, Bytes::from(want.clone()));
    let h = head(&c, &b, "big2").await;
    assert_eq!(h.content_length(), Some(want.len() as i64));

    let id = upload(&c, &b, "big2").await;
    let again = part(&c, &b, "big2", &id, 1, bytes(6, 100)).await;
    assert_eq!(
        complete(&c, &b, "big2", &id, vec![again]).await,
        Err("PreconditionFailed".into()),
        "first writer wins"
    );
    assert_eq!(get(&c, &b, "big2").await.len(), want.len());

    // Abort leaves nothing; the id is gone afterwards.
    c.abort_multipart_upload()
        .bucket(&b)
        .key("big2")
        .upload_id(&id)
        .send()
        .await
        .expect("abort");
    assert_eq!(server.pending_multipart_uploads(), 0);
    assert!(root_files(&server, ".shovel-part").is_empty(), "parts left");
    let part_error = |key: &'static str, id: String| {
        let (c, b) = (c.clone(), b.clone());
        async move {
            c.upload_part()
                .bucket(&b)
                .key(key)
                .upload_id(&id)
                .part_number(1)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .expect_err("the part must be refused")
                .code()
                .map(str::to_string)
        }
    };
    assert_eq!(
        part_error("big2", id).await.as_deref(),
        Some("NoSuchUpload"),
        "aborted"
    );
    // An id of another key is not this key's upload.
    let id = upload(&c, &b, "k1").await;
    assert_eq!(
        part_error("k2", id).await.as_deref(),
        Some("NoSuchUpload"),
        "wrong key"
    );
}

/// Completion cuts the parts' file and renames it; one that fails must
/// leave the parts as they were, so completing again (same ETags) gives
/// exactly the listed parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_completion_leaves_the_parts_to_complete_again() {
    let (server, c, b) = setup().await;
    let (p1, p2) = (bytes(11, 5 * MIB + 3), bytes(12, 777));
    // An object named like the key's directory: the rename cannot happen.
    put(&c, &b, "dir", Bytes::from_static(b"a file"), false)
        .await
        .expect("put");
    let id = upload(&c, &b, "dir/obj").await;
    let one = part(&c, &b, "dir/obj", &id, 1, p1.clone()).await;
    let two = part(&c, &b, "dir/obj", &id, 2, p2.clone()).await;
    let failed = complete(&c, &b, "dir/obj", &id, vec![one.clone(), two.clone()]).await;
    assert!(failed.is_err(), "completion under an object must fail");
    assert_eq!(server.pending_multipart_uploads(), 1, "the upload survives");
    let listed = c
        .list_parts()
        .bucket(&b)
        .key("dir/obj")
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    let parts: Vec<(Option<i64>, Option<String>)> = listed
        .parts()
        .iter()
        .map(|p| (p.size(), p.e_tag().map(str::to_string)))
        .collect();
    assert_eq!(
        parts,
        vec![
            (Some(p1.len() as i64), one.e_tag().map(str::to_string)),
            (Some(p2.len() as i64), two.e_tag().map(str::to_string)),
        ],
        "part 1 keeps its size and ETag"
    );
    c.delete_object()
        .bucket(&b)
        .key("dir")
        .send()
        .await
        .expect("delete");
    complete(&c, &b, "dir/obj", &id, vec![one, two])
        .await
        .expect("completing again");
    let mut want = p1.to_vec();
    want.extend_from_slice(&p2);
    assert_eq!(get(&c, &b, "dir/obj").await, Bytes::from(want));
    assert!(root_files(&server, ".shovel-part").is_empty(), "parts left");
}

/// A key, its parts as (number, size) in arrival order, and whether the
/// object should be the parts' file itself (no copy).
type Case = (&'static str, &'static [(i32, usize)], bool);

/// A part of the smallest size S3 allows but for the last.
const PART: usize = 5 * MIB;

/// The inode of a file.
fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("metadata").ino()
}

/// Parts of one size (but the last) lie end to end in one file, whatever
/// order they arrive in, and that file becomes the object: no byte is
/// copied. Parts that do not fit (a small last part first, parts of mixed
/// sizes, a part sent twice) are files of their own, and completion copies;
/// every object reads back as its listed parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_of_one_size_become_the_object_without_a_copy_and_others_are_copied() {
    let (server, c, b) = setup().await;
    let cases: &[Case] = &[
        ("in-order", &[(1, PART), (2, PART), (3, 999)], true),
        ("out-of-order", &[(2, PART), (3, 12_345), (1, PART)], true),
        ("two-full", &[(1, PART + 1), (2, PART + 1)], true),
        ("last-first", &[(3, 777), (1, PART), (2, PART)], false),
        (
            "mixed-sizes",
            &[(1, PART + 4096), (2, PART), (3, 10)],
            false,
        ),
        (
            "sent-twice",
            &[(1, PART), (2, PART), (2, PART), (3, 5)],
            false,
        ),
    ];
    for (i, (key, arrivals, zero_copy)) in cases.iter().enumerate() {
        let id = upload(&c, &b, key).await;
        let mut last = std::collections::BTreeMap::new();
        for (j, (n, size)) in arrivals.iter().enumerate() {
            let data = bytes(100 * i as u64 + j as u64, *size);
            let done = part(&c, &b, key, &id, *n, data.clone()).await;
            last.insert(*n, (done, data));
        }
        let data_file = server.root().join(format!(".shovel-part.{id}"));
        let before = inode(&data_file);
        let listed: Vec<CompletedPart> = last.values().map(|(p, _)| p.clone()).collect();
        complete(&c, &b, key, &id, listed)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let want: Vec<u8> = last.values().flat_map(|(_, d)| d.to_vec()).collect();
        assert_eq!(get(&c, &b, key).await, Bytes::from(want), "{key}");
        let object = server.root().join(&b).join(key);
        assert_eq!(
            inode(&object) == before,
            *zero_copy,
            "{key}: the parts' file became the object"
        );
        assert!(
            root_files(&server, ".shovel-part").is_empty(),
            "{key}: parts left"
        );
        assert!(
            root_files(&server, ".shovel-tmp").is_empty(),
            "{key}: temp left"
        );
    }
    assert_eq!(server.pending_multipart_uploads(), 0);
}

/// Random uploads against a model: parts of one size or of mixed sizes,
/// uploaded at once in a random order, some sent again with new bytes,
/// completed with every part or an ascending subset. The object must be
/// the last bytes uploaded for each listed part, in order, and nothing
/// may be left at the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_uploads_read_back_as_their_listed_parts() {
    use rand::seq::SliceRandom;
    use rand::Rng;
    let (server, c, b) = setup().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for case in 0..12u64 {
        let key = format!("random-{case}");
        let parts = rng.gen_range(1..=3usize);
        let stride = PART + 4096 * rng.gen_range(0..3usize);
        let mixed = rng.gen_bool(0.3);
        let sizes: Vec<usize> = (0..parts)
            .map(|i| match i + 1 == parts {
                true => rng.gen_range(1..=stride),
                false if mixed => PART + 4096 * rng.gen_range(0..4usize),
                false => stride,
            })
            .collect();
        let mut order: Vec<usize> = (0..parts).collect();
        order.shuffle(&mut rng);
        let id = upload(&c, &b, &key).await;
        let mut seed = 1000 * case;
        let mut latest: Vec<(Bytes, Option<CompletedPart>)> = sizes
            .iter()
            .map(|&n| {
                seed += 1;
                (bytes(seed, n), None)
            })
            .collect();
        let sent = futures::future::join_all(order.iter().map(|&i| {
            let (c, b, key, id) = (c.clone(), b.clone(), key.clone(), id.clone());
            let data = latest[i].0.clone();
            async move { (i, part(&c, &b, &key, &id, i as i32 + 1, data).await) }
        }))
        .await;
        for (i, done) in sent {
            latest[i].1 = Some(done);
        }
        for i in 0..parts {
            if rng.gen_bool(0.25) {
                seed += 1;
                let data = bytes(seed, sizes[i]);
                let done = part(&c, &b, &key, &id, i as i32 + 1, data.clone()).await;
                latest[i] = (data, Some(done));
            }
        }
        // Every part, or an ascending subset ending anywhere.
        let listed: Vec<usize> = match rng.gen_bool(0.7) {
            true => (0..parts).collect(),
            false => (0..parts).filter(|_| rng.gen_bool(0.6)).collect(),
        };
        let listed = if listed.is_empty() { vec![0] } else { listed };
        let too_small = listed
            .split_last()
            .is_some_and(|(_, head)| head.iter().any(|&i| sizes[i] < PART));
        assert!(!too_small, "sizes are drawn at 5 MiB or more but the last");
        let completed: Vec<CompletedPart> = listed
            .iter()
            .map(|&i| latest[i].1.clone().expect("uploaded"))
            .collect();
        complete(&c, &b, &key, &id, completed)
            .await
            .unwrap_or_else(|e| panic!("case {case} ({sizes:?}, {order:?}, {listed:?}): {e}"));
        let want: Vec<u8> = listed.iter().flat_map(|&i| latest[i].0.to_vec()).collect();
        assert!(
            get(&c, &b, &key).await[..] == want[..],
            "case {case}: sizes {sizes:?}, order {order:?}, listed {listed:?}"
        );
        assert!(
            root_files(&server, ".shovel-part").is_empty(),
            "case {case}: parts left"
        );
    }
    assert!(root_files(&server, ".shovel-tmp").is_empty(), "temp left");
}

/// After a completion, a late part of that upload is refused and changes
/// nothing (with parts in place, it would otherwise write into the object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_after_completion_is_refused_and_leaves_the_object_alone() {
    let (server, c, b) = setup().await;
    let (p1, p2) = (bytes(41, 5 * MIB), bytes(42, 10));
    let id = upload(&c, &b, "late").await;
    let one = part(&c, &b, "late", &id, 1, p1.clone()).await;
    let two = part(&c, &b, "late", &id, 2, p2.clone()).await;
    complete(&c, &b, "late", &id, vec![one, two])
        .await
        .expect("complete");
    for n in [2, 3] {
        let refused = c
            .upload_part()
            .bucket(&b)
            .key("late")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(bytes(43, 5 * MIB)))
            .send()
            .await
            .expect_err("a part after completion");
        assert_eq!(refused.code(), Some("NoSuchUpload"));
    }
    let mut want = p1.to_vec();
    want.extend_from_slice(&p2);
    assert_eq!(get(&c, &b, "late").await, Bytes::from(want));
    assert!(root_files(&server, ".shovel-part").is_empty(), "parts left");
}

/// Plain PUTs and multipart uploads at once, many in flight: every object
/// reads back as exactly what was written to its key (temporary files of
/// the two paths must never be shared; a clash once renamed one map
/// output's bytes onto another's key, which every crc32 then accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_and_multipart_uploads_never_mix_objects() {
    let (server, c, b) = setup().await;
    let uploads = 8u64;
    let mut ids = Vec::new();
    for i in 0..uploads {
        let key = format!("mpu-{i}");
        ids.push((upload(&c, &b, &key).await, key));
    }
    // Every write starts at once: the n-th PUT and the n-th part overlap.
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..uploads {
        let (c, b) = (c.clone(), b.clone());
        puts.spawn(async move {
            let key = format!("put-{i}");
            let data = bytes(i, 5 * MIB + i as usize);
            put(&c, &b, &key, data.clone(), false).await.expect("put");
            (key, data)
        });
    }
    let mut parts = tokio::task::JoinSet::new();
    for (i, (id, key)) in ids.iter().enumerate() {
        let (c, b, id, key) = (c.clone(), b.clone(), id.clone(), key.clone());
        parts.spawn(async move {
            let data = bytes(1000 + i as u64, 5 * MIB + 7);
            let done = part(&c, &b, &key, &id, 1, data.clone()).await;
            (id, key, done, data)
        });
    }
    let mut written = Vec::new();
    while let Some(r) = puts.join_next().await {
        written.push(r.expect("put task"));
    }
    while let Some(r) = parts.join_next().await {
        let (id, key, done, data) = r.expect("part task");
        complete(&c, &b, &key, &id, vec![done])
            .await
            .expect("complete");
        written.push((key, data));
    }
    assert_eq!(written.len(), 2 * uploads as usize);
    for (key, data) in written {
        let got = get(&c, &b, &key).await;
        assert!(
            got == data,
            "{key}: {} bytes read back, {} written, or other bytes",
            got.len(),
            data.len()
        );
    }
    assert!(root_files(&server, ".shovel-tmp").is_empty(), "temp left");
}

/// The server runs on a runtime of its own, as a server in another process
/// would: it answers while the runtime that started it is blocked (here in
/// a `join`; in an engine, in long CPU-bound polls).
#[tokio::test(flavor = "current_thread")]
async fn the_server_answers_while_the_runtime_that_started_it_is_blocked() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let config = server.config("p").expect("config");
    let got = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use shuffle_core::store::{ObjectKey, ShuffleStore};
            let store = S3Store::new(config, std::sync::Arc::default()).await?;
            let key = ObjectKey::new(0, "blocked/x");
            store.put(&key, Bytes::from_static(b"answered")).await?;
            store.get(&key).await
        })
    })
    .join()
    .expect("client thread");
    assert_eq!(&got.expect("the server answered")[..], b"answered");
}
