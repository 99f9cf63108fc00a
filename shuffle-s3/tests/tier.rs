//! The local tier in front of S3 (`TieredStore`, on by default in
//! `S3ShuffleBuilder`), against the embedded server: which reads it serves
//! (counted as GetObject requests on the server), what it evicts, how it
//! falls through on a broken local directory, and that it never serves
//! bytes S3 does not hold.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shuffle_core::testing::{read_range, write_map, Expected};
use shuffle_core::{
    Error, MapStatus, ObjectKey, ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleStore,
};
use shuffle_s3::{EmbeddedS3, S3Op, S3Shuffle, S3ShuffleBuilder};

const MAPS: u32 = 5;
const PARTS: u32 = 4;

/// A shuffle over `server` with the `cache.*` settings in `pairs`.
async fn shuffle(server: &EmbeddedS3, app: &str, pairs: &[(&str, String)]) -> S3Shuffle {
    let mut config = ShuffleConfig::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .expect("cache settings");
    config.app_id = app.to_string();
    S3ShuffleBuilder::new(config)
        .s3_config(server.config("tier").expect("s3 config"))
        .build()
        .await
        .expect("s3 shuffle")
}

/// Incompressible blocks: about 8 KiB stored per map output.
fn blocks(seed: u64) -> Expected {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut e = Expected::new();
    for m in 0..MAPS {
        for p in 0..PARTS {
            let v: Vec<u8> = (0..2000).map(|_| rng.gen()).collect();
            e.insert((m, p), vec![Bytes::from(v)]);
        }
    }
    e
}

async fn write(s: &S3Shuffle, e: &Expected) -> Vec<MapStatus> {
    s.manager
        .register_shuffle(ShuffleHandle {
            shuffle_id: 1,
            num_maps: MAPS,
            num_partitions: PARTS,
        })
        .await
        .expect("register");
    let mut out = Vec::new();
    for m in 0..MAPS {
        out.push(
            write_map(&s.manager, 1, m, 0, PARTS, e)
                .await
                .expect("commit"),
        );
    }
    out
}

/// Reads everything back (compared with `e`) and returns the GetObject
/// requests the server saw meanwhile.
async fn read_back(
    server: &EmbeddedS3,
    s: &S3Shuffle,
    statuses: &[MapStatus],
    e: &Expected,
) -> u64 {
    server.reset_stats();
    let got = read_range(&s.manager, 1, statuses, 0..PARTS)
        .await
        .expect("read");
    assert_eq!(&got, e, "bytes read differ from bytes written");
    server.stats().count(S3Op::GetObject)
}

/// Reads after commit in the same process make no GET; once the copies are
/// dropped (as for a lost executor), S3 serves the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_process_reads_make_no_get() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let s = shuffle(&server, "tier-hits", &[]).await;
    let tier = s.tier.clone().expect("cache.enabled defaults to true");
    let e = blocks(1);
    let statuses = write(&s, &e).await;
    assert_eq!(tier.usage().entries, MAPS as usize, "{:?}", tier.usage());

    assert_eq!(
        read_back(&server, &s, &statuses, &e).await,
        0,
        "a cached output was fetched"
    );
    let c = s.metrics.snapshot().cache;
    assert!(c.hits >= MAPS as u64 && c.misses == 0, "{c:?}");
    assert!(
        c.bytes_served >= statuses.iter().map(MapStatus::total_bytes).sum::<u64>(),
        "{c:?}"
    );

    s.manager.drop_local_copies(&statuses);
    assert_eq!(tier.usage().entries, 0);
    assert_eq!(
        read_back(&server, &s, &statuses, &e).await,
        MAPS as u64,
        "dropped copies must be read from S3, one GET per map output"
    );
    assert!(s.metrics.snapshot().cache.misses >= MAPS as u64);
    s.manager.cleanup_app().await.expect("cleanup");
}

/// A memory budget for about two outputs and no disk: the oldest copies are
/// evicted, and S3 serves them (same bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_outputs_are_read_from_s3() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let s = shuffle(
        &server,
        "tier-evict",
        &[("cache.memory", "20KiB".into()), ("cache.disk", "0".into())],
    )
    .await;
    let tier = s.tier.clone().expect("tier");
    let e = blocks(2);
    let statuses = write(&s, &e).await;
    let usage = tier.usage();
    assert!(
        usage.memory_bytes <= 20 << 10 && usage.disk_bytes == 0,
        "{usage:?}"
    );
    assert!(
        usage.entries >= 1 && usage.entries < MAPS as usize,
        "{usage:?}"
    );
    let gets = read_back(&server, &s, &statuses, &e).await;
    assert_eq!(gets, (MAPS as usize - usage.entries) as u64, "{usage:?}");
    let c = s.metrics.snapshot().cache;
    assert!(
        c.bytes_evicted > 0 && c.hits >= 1 && c.fall_throughs == 0,
        "{c:?}"
    );
    s.manager.cleanup_app().await.expect("cleanup");
}

/// Copies over the memory budget move to a private directory within the
/// disk quota and are served from there; the directory goes with the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_move_to_disk_within_the_quota() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let dir = tempfile::tempdir().expect("temp dir");
    let s = shuffle(
        &server,
        "tier-disk",
        &[
            ("cache.memory", "20KiB".into()),
            ("cache.disk", "1MiB".into()),
            ("cache.dir", dir.path().display().to_string()),
        ],
    )
    .await;
    let tier = s.tier.clone().expect("tier");
    let e = blocks(3);
    let statuses = write(&s, &e).await;
    let usage = tier.usage();
    assert_eq!(usage.entries, MAPS as usize, "{usage:?}");
    assert!(
        usage.memory_bytes <= 20 << 10 && usage.disk_bytes > 0,
        "{usage:?}"
    );
    let private = tier.spill_dir().expect("a private directory was created");
    assert!(private.starts_with(dir.path()), "{}", private.display());
    let files = std::fs::read_dir(&private).expect("private dir").count();
    assert!(files >= 1, "no copy on disk in {}", private.display());

    assert_eq!(
        read_back(&server, &s, &statuses, &e).await,
        0,
        "a cached output was fetched"
    );
    s.manager.cleanup_app().await.expect("cleanup");
    assert_eq!(tier.usage(), Default::default(), "cleanup evicts");
    drop((s, tier));
    assert!(
        !private.exists(),
        "{} outlived its store",
        private.display()
    );
}

/// A disk quota below what spills: the oldest copies on disk are evicted and
/// the quota holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_quota_evicts_the_oldest() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let dir = tempfile::tempdir().expect("temp dir");
    let s = shuffle(
        &server,
        "tier-quota",
        &[
            ("cache.memory", "12KiB".into()),
            ("cache.disk", "20KiB".into()),
            ("cache.dir", dir.path().display().to_string()),
        ],
    )
    .await;
    let tier = s.tier.clone().expect("tier");
    let e = blocks(4);
    let statuses = write(&s, &e).await;
    let usage = tier.usage();
    assert!(
        usage.disk_bytes > 0 && usage.disk_bytes <= 20 << 10,
        "{usage:?}"
    );
    assert!(usage.entries < MAPS as usize, "{usage:?}");
    let gets = read_back(&server, &s, &statuses, &e).await;
    assert_eq!(gets, (MAPS as usize - usage.entries) as u64, "{usage:?}");
    assert!(s.metrics.snapshot().cache.bytes_evicted > 0);
    s.manager.cleanup_app().await.expect("cleanup");
}

/// An unusable `cache.dir` (a path under a regular file) never fails a
/// write or a read: copies that would move to disk are dropped, counted as
/// fall-throughs, and read from S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_cache_dir_falls_through_to_s3() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("file");
    let s = shuffle(
        &server,
        "tier-broken-dir",
        &[
            ("cache.memory", "20KiB".into()),
            ("cache.dir", file.join("cache").display().to_string()),
        ],
    )
    .await;
    let tier = s.tier.clone().expect("tier");
    let e = blocks(5);
    let statuses = write(&s, &e).await;
    assert!(tier.spill_dir().is_none());
    let c = s.metrics.snapshot().cache;
    assert!(c.fall_throughs >= 1, "{c:?}");
    let usage = tier.usage();
    let gets = read_back(&server, &s, &statuses, &e).await;
    assert_eq!(gets, (MAPS as usize - usage.entries) as u64, "{usage:?}");
    s.manager.cleanup_app().await.expect("cleanup");
}

/// A write whose upload fails, is aborted, or is dropped unfinished leaves
/// nothing to read: a later read is NotFound, never the bytes the tier saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_durable_are_never_served() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let s = shuffle(&server, "tier-durable", &[]).await;
    let tier = s.tier.clone().expect("tier");
    let data = Bytes::from(vec![7u8; 10_000]);

    let failed = ObjectKey::new(0, "tier-durable/failed.data");
    let mut sink = tier.create(&failed).await.expect("create");
    sink.write(data.clone()).await.expect("write");
    server.set_read_only(true);
    let err = sink
        .finish()
        .await
        .expect_err("the upload must fail on a read-only server");
    server.set_read_only(false);
    assert!(!matches!(err, Error::NotFound { .. }), "{err}");

    let aborted = ObjectKey::new(0, "tier-durable/aborted.data");
    let mut sink = tier.create(&aborted).await.expect("create");
    sink.write(data.clone()).await.expect("write");
    sink.abort().await.expect("abort");

    let dropped = ObjectKey::new(0, "tier-durable/dropped.data");
    let mut sink = tier.create(&dropped).await.expect("create");
    sink.write(data.clone()).await.expect("write");
    drop(sink);

    for key in [&failed, &aborted, &dropped] {
        match tier.get(key).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("{key}: expected NotFound, got {other:?}"),
        }
        match tier.get_range(key, 0..10).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("{key}: expected NotFound, got {other:?}"),
        }
    }
    assert_eq!(tier.usage().entries, 0);

    // A finished write is served from the tier, and a delete evicts it.
    let ok = ObjectKey::new(0, "tier-durable/ok.data");
    let mut sink = tier.create(&ok).await.expect("create");
    sink.write(data.clone()).await.expect("write");
    assert_eq!(sink.finish().await.expect("finish"), data.len() as u64);
    server.reset_stats();
    assert_eq!(
        tier.get_range(&ok, 9_990..20_000).await.expect("read"),
        data.slice(9_990..)
    );
    assert_eq!(server.stats().count(S3Op::GetObject), 0);
    tier.delete(std::slice::from_ref(&ok))
        .await
        .expect("delete");
    assert!(matches!(tier.get(&ok).await, Err(Error::NotFound { .. })));
    s.manager.cleanup_app().await.expect("cleanup");
}

/// The disk fails after the tier started using it (its directory replaced by
/// a file, as when a disk is pulled or remounted read-only): copies on disk
/// and new moves fall through to S3, counted, and reads stay correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_failing_mid_run_falls_through_to_s3() {
    let server = EmbeddedS3::start_temp().await.expect("server");
    let dir = tempfile::tempdir().expect("temp dir");
    let s = shuffle(
        &server,
        "tier-disk-fails",
        &[
            ("cache.memory", "20KiB".into()),
            ("cache.dir", dir.path().display().to_string()),
        ],
    )
    .await;
    let tier = s.tier.clone().expect("tier");
    let e = blocks(6);
    let statuses = write(&s, &e).await;
    let private = tier.spill_dir().expect("a private directory");
    let on_disk = tier.usage().disk_bytes;
    assert!(on_disk > 0, "{:?}", tier.usage());
    std::fs::remove_dir_all(&private).expect("remove the private directory");
    std::fs::write(&private, b"not a directory").expect("a file in its place");

    // Copies on disk are gone: those reads fall through.
    let gets = read_back(&server, &s, &statuses, &e).await;
    let c = s.metrics.snapshot().cache;
    assert!(gets >= 1 && c.fall_throughs >= gets, "{gets} GETs, {c:?}");

    // New copies cannot move to disk either: dropped, counted, read from S3.
    let before = c.fall_throughs;
    s.manager
        .register_shuffle(ShuffleHandle {
            shuffle_id: 2,
            num_maps: MAPS,
            num_partitions: PARTS,
        })
        .await
        .expect("register");
    let mut more = Vec::new();
    for m in 0..MAPS {
        more.push(
            write_map(&s.manager, 2, m, 0, PARTS, &e)
                .await
                .expect("commit"),
        );
    }
    let c = s.metrics.snapshot().cache;
    assert!(c.fall_throughs > before, "{c:?}");
    server.reset_stats();
    let got = read_range(&s.manager, 2, &more, 0..PARTS)
        .await
        .expect("read");
    assert_eq!(got, e);
    assert!(server.stats().count(S3Op::GetObject) >= 1);
    s.manager.cleanup_app().await.expect("cleanup");
    std::fs::remove_file(&private).expect("our stand-in file");
}
