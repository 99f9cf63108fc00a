//! Reliability when the local disk fills up: q80 (TPC-DS SF 0.01, every join
//! shuffled, a small memory budget so operators and shuffle buffers spill)
//!
//! - on the local backend with a local shuffle directory quota
//!   (`local.max_bytes`) far below what the job writes, fails with a job
//!   error (not a panic, not a hang) that names the directory and suggests
//!   `--shuffle s3 --spill-to-s3`; map outputs committed before the disk
//!   filled stay intact while later stages run; afterwards `cleanup_app`
//!   leaves no file under the directory and the quota is free again;
//! - with the same settings (same quota'd local directory) but shuffle and
//!   spill on S3 (embedded server), completes with the golden answer and
//!   writes nothing to the local directory;
//! - with shuffle on S3 behind the local tier whose directory is unusable
//!   (`cache.dir` under a regular file, so every copy moved to disk fails
//!   like a full disk), completes with the golden answer, counting the
//!   fall-throughs and reading those outputs from S3.

mod reliability_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use engine::scheduler::StageEvent;
use engine::{EngineError, Session};
use futures::StreamExt;
use reliability_support::*;
use shuffle_core::format::footer_len;
use shuffle_core::{MapStatus, ShuffleConfig, ShuffleHandle, ShuffleManager, StoreShuffleManager};
use shuffle_s3::S3ShuffleBuilder;

/// The local shuffle directory quota: a few hundred KiB, while q80 at SF 0.01
/// writes about 5 MiB of shuffle data plus spills with these settings.
const QUOTA: u64 = 512 << 10;

/// A memory budget small enough that q80 must spill.
const MEMORY: usize = 256 << 10;

/// Shuffle settings of both runs: one local directory with the quota.
fn shuffle_config(app_id: &str, dir: &Path) -> ShuffleConfig {
    ShuffleConfig {
        app_id: app_id.to_string(),
        memory_limit: MEMORY as u64,
        local_dirs: vec![dir.to_path_buf()],
        local_max_bytes: Some(QUOTA),
        ..ShuffleConfig::default()
    }
}

/// Reads every partition of `statuses` back through the manager (checksums
/// verified); panics naming the map output that cannot be read.
async fn read_all(m: &StoreShuffleManager, shuffle_id: u32, statuses: &[MapStatus]) {
    let parts = statuses.first().map_or(0, MapStatus::num_partitions);
    let mut reader = m
        .reader(shuffle_id, statuses.to_vec(), 0..parts)
        .expect("reader");
    while let Some(block) = reader.next().await {
        if let Err(e) = block {
            panic!("shuffle {shuffle_id} cannot be read back: {e}");
        }
    }
}

/// After each map stage, checks on disk that every map output committed so
/// far in the job is still there, whole (a write failing for lack of space
/// must only ever remove its own temporary file). Returns the number of map
/// stages that completed.
fn check_committed_outputs(session: &Session, m: &StoreShuffleManager) -> Arc<Mutex<usize>> {
    let stages = Arc::new(Mutex::new(0usize));
    // (data file, stored bytes with the footer) of every committed map output.
    let committed: Arc<Mutex<Vec<(PathBuf, u64)>>> = Arc::default();
    let (n, m) = (Arc::clone(&stages), m.clone());
    session.set_stage_hook(Some(Arc::new(move |ev: &StageEvent| {
        let mut committed = committed.lock().unwrap_or_else(|p| p.into_inner());
        for st in ev.statuses.iter().filter(|s| s.total_bytes() > 0) {
            committed.push((
                PathBuf::from(m.store().describe(&st.location)),
                st.total_bytes() + footer_len(st.lengths.len()) as u64,
            ));
        }
        for (data, bytes) in committed.iter() {
            let len = std::fs::metadata(data).map_or(0, |md| md.len());
            assert_eq!(
                len,
                *bytes,
                "committed map output {} lost or truncated while the disk filled",
                data.display()
            );
        }
        *n.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    })));
    stages
}

/// Full local disk: q80 fails with an error that names the directory and the
/// fix; nothing is left behind and the quota is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_local_disk_fails_with_a_clear_error() {
    let data = tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("shuffle-dir");
    let m = shuffle_local::local_manager(shuffle_config("disk-full-local", &dir))
        .expect("local manager");
    let session = Session::new(
        engine_config(Some(MEMORY)),
        Arc::new(m.clone()) as Arc<dyn ShuffleManager>,
    );
    let stages_done = check_committed_outputs(&session, &m);

    let err = match run_q80(&session, &data).await {
        Ok((_, summary)) => panic!(
            "q80 fitted into a {QUOTA}-byte local directory: {}",
            summary.to_json()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            EngineError::TaskFailed { .. } | EngineError::Shuffle(_)
        ),
        "a full disk should fail the job with a task or shuffle error, got {err:?}"
    );
    assert!(!msg.contains("panicked"), "a task panicked: {msg}");
    assert!(
        msg.contains("no space left") && msg.contains("local.max_bytes"),
        "the error does not say the disk (quota) is full: {msg}"
    );
    assert!(
        msg.contains(&dir.display().to_string()),
        "the error does not name the directory {}: {msg}",
        dir.display()
    );
    assert!(
        msg.contains("--shuffle s3 --spill-to-s3"),
        "the error does not suggest `--shuffle s3 --spill-to-s3`: {msg}"
    );
    // The disk filled mid-job, with some map stages committed (and checked
    // intact by the hook while the later ones ran).
    let stages_done = *stages_done.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        stages_done >= 1,
        "the quota was hit before any map stage committed; raise QUOTA to test a mid-job failure"
    );

    // Cleanup works and leaves no file behind (no committed object, no
    // temporary file, no spill).
    m.cleanup_app().await.expect("cleanup after a full disk");
    let left = files_under(&dir);
    assert!(
        left.is_empty(),
        "files left under {} after cleanup: {left:?}",
        dir.display()
    );

    // The quota was given back in full: a map output of 3/4 of the quota now
    // fits, commits and reads back. (This also fails when a task of the failed
    // job is still running and writing after the job returned its error.)
    let shuffle_id = 1_000;
    m.register_shuffle(ShuffleHandle {
        shuffle_id,
        num_maps: 1,
        num_partitions: 2,
    })
    .await
    .expect("register");
    // Incompressible bytes (xorshift), 3/4 of the quota in all.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let block: Vec<u8> = (0..(QUOTA as usize * 3 / 4) / 8)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut w = m.map_writer(shuffle_id, 0, 0).await.expect("writer");
    for p in 0..2 {
        let mut pw = w.partition_writer(p).await.expect("partition writer");
        for _ in 0..4 {
            pw.write_block(&block).await.unwrap_or_else(|e| {
                panic!(
                    "the quota is not free again after cleanup (partition {p}): {e}; files: {:?}",
                    files_under(&dir)
                )
            });
            pw.add_records(1);
        }
    }
    let status = w.commit().await.unwrap_or_else(|e| {
        panic!(
            "the quota is not free again after cleanup: {e}; files now under the directory \
             (a task of the failed job still running?): {:?}",
            files_under(&dir)
        )
    });
    assert_eq!(status.records, vec![4, 4]);
    read_all(&m, shuffle_id, &[status]).await;
    m.remove_shuffle(shuffle_id).await.expect("remove shuffle");
    m.cleanup_app().await.expect("cleanup");
    let left = files_under(&dir);
    assert!(
        left.is_empty(),
        "files under {} after the final cleanup (a task of the failed job still running?): \
         {left:?}",
        dir.display()
    );
}

/// The same run with shuffle and spill on S3: golden answer, nothing written
/// to the (quota'd) local directory, nothing left in S3 after cleanup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_local_disk_is_avoided_with_s3_shuffle_and_spill() {
    let data = tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation");
    let s3 = server().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("shuffle-dir");
    let built = S3ShuffleBuilder::new(shuffle_config("disk-full-s3", &dir))
        .s3_config(s3.config("disk-full").expect("s3 config"))
        .spill_to_s3(true)
        .build()
        .await
        .expect("s3 manager");
    let m = built.manager;
    let session = Session::new(
        engine_config(Some(MEMORY)),
        Arc::new(m.clone()) as Arc<dyn ShuffleManager>,
    );
    let (csv, summary) = run_q80(&session, &data)
        .await
        .unwrap_or_else(|e| panic!("q80 with shuffle and spill on S3 failed: {e}"));
    assert_golden(&csv, "S3 shuffle and spill, local disk quota");
    // The run moved more than the quota through shuffle and spill: on the
    // local backend it could not have fitted.
    assert!(
        summary.shuffle_bytes_written > QUOTA && summary.total_spill_bytes() > 0,
        "expected more than {QUOTA} shuffle bytes and some spilling: {}",
        summary.to_json()
    );
    let local = files_under(&dir);
    assert!(
        local.is_empty(),
        "S3 shuffle with spill to S3 wrote to the local directory: {local:?}"
    );
    m.cleanup_app().await.expect("cleanup");
    assert!(list(&m, &m.layout().app_prefix()).await.is_empty());
    assert!(list(&m, &format!("spill/{}/", m.app_id())).await.is_empty());
}

/// Shuffle on S3 behind the local tier, whose disk is unusable: copies over
/// `cache.memory` cannot move to disk, fall through (counted), and are read
/// from S3; the job never sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cache_disk_falls_through_to_s3() {
    let data = tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation");
    let s3 = server().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("file");
    let mut config = shuffle_config("disk-full-cache", &tmp.path().join("shuffle-dir"));
    config.cache_memory = 64 << 10;
    config.cache_dir = blocker.join("cache");
    let built = S3ShuffleBuilder::new(config)
        .s3_config(s3.config("disk-full-cache").expect("s3 config"))
        .spill_to_s3(true)
        .build()
        .await
        .expect("s3 manager");
    let m = built.manager;
    let tier = built.tier.expect("cache.enabled defaults to true");
    let session = Session::new(
        engine_config(Some(MEMORY)),
        Arc::new(m.clone()) as Arc<dyn ShuffleManager>,
    );
    let (csv, summary) = run_q80(&session, &data)
        .await
        .unwrap_or_else(|e| panic!("q80 on S3 with an unusable cache disk failed: {e}"));
    assert_golden(&csv, "S3 shuffle, unusable cache directory");
    let cache = m.metrics().snapshot().cache;
    assert!(
        cache.fall_throughs > 0 && cache.misses > 0,
        "copies should have fallen through to S3: {cache:?}; {}",
        summary.to_json()
    );
    assert!(tier.spill_dir().is_none());
    assert!(tier.usage().memory_bytes <= 64 << 10, "{:?}", tier.usage());
    m.cleanup_app().await.expect("cleanup");
    assert!(list(&m, &m.layout().app_prefix()).await.is_empty());
}
