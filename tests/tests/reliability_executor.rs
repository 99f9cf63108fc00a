//! Reliability when an executor is lost mid-job: q80 (TPC-DS SF 0.01, every
//! join shuffled) on a session with two executors (tasks placed on executor
//! `partition % 2`). Once four map stages with several tasks have committed, the first task
//! that starts on executor 1 triggers its loss, as a cluster manager would
//! report it (`Session::lose_executor`): the tasks running on it are killed.
//!
//! - Local backend: the executor's disk goes with it, so the data and index
//!   files of every map output it committed (in every shuffle so far) are
//!   deleted. The killed tasks re-run; the lost outputs that later tasks
//!   need are recomputed — including outputs of earlier shuffles that a
//!   recomputed map itself needs (recovery nests across shuffles) — and the
//!   answer is golden. The summary counts killed and recomputed tasks, each
//!   with its reason.
//! - S3 backend (shuffle and spill on the embedded server): committed map
//!   outputs live in S3 and survive the executor. Only the killed tasks
//!   re-run; no finished map task is recomputed, and the answer is golden.
//!   The local tier in front of S3 (on by default) held every committed
//!   output before the loss; the lost executor's cached copies are dropped
//!   with it (the others' stay), so reads of its outputs go to S3.

mod reliability_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use engine::scheduler::executors::ExecutorLoss;
use engine::scheduler::{StageEvent, TaskEvent};
use engine::{EngineConfig, RetryReason, Session};
use reliability_support::*;
use shuffle_core::metrics::CacheSnapshot;
use shuffle_core::{MapStatus, ShuffleConfig, ShuffleManager, StoreShuffleManager, TieredStore};
use shuffle_s3::{EmbeddedS3, S3ShuffleBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
}

/// The executor that is lost.
const LOST: usize = 1;

/// Map stages with several tasks (so executor 1 ran some) that must have
/// committed before the loss.
const STAGES_BEFORE_LOSS: usize = 4;

/// What the task hook did when it lost the executor.
#[derive(Debug, Default, Clone)]
struct Loss {
    report: ExecutorLoss,
    /// The task whose start triggered the loss.
    trigger: Option<(usize, usize)>,
    files_removed: Vec<PathBuf>,
    /// Regular files under the executor's local directory at the time.
    local_files: Vec<PathBuf>,
    /// The local tier's counters just before the loss.
    cache_before: CacheSnapshot,
    /// Committed outputs of the lost executor and of the others, each with
    /// whether the tier held a copy before and after the loss.
    cached_lost: Vec<(bool, bool)>,
    cached_kept: Vec<(bool, bool)>,
}

/// A manager on `backend` with its own local directory (the executor's
/// disk), and what must outlive it.
async fn manager(
    backend: Backend,
    app_id: &str,
    dir: &Path,
) -> (
    StoreShuffleManager,
    Option<EmbeddedS3>,
    Option<Arc<TieredStore>>,
) {
    let config = ShuffleConfig {
        app_id: app_id.to_string(),
        memory_limit: engine_config(None).memory_budget as u64,
        local_dirs: vec![dir.to_path_buf()],
        ..ShuffleConfig::default()
    };
    match backend {
        Backend::Local => (
            shuffle_local::local_manager(config).expect("local manager"),
            None,
            None,
        ),
        Backend::S3 => {
            let s3 = server().await;
            let m = S3ShuffleBuilder::new(config)
                .s3_config(s3.config("executor-loss").expect("s3 config"))
                .spill_to_s3(true)
                .build()
                .await
                .expect("s3 manager");
            (m.manager, Some(s3), m.tier)
        }
    }
}

/// Hooks that lose executor [`LOST`] when one of its tasks starts after
/// [`STAGES_BEFORE_LOSS`] map stages committed. On the local backend the
/// files of the outputs it lost are deleted from disk.
fn lose_executor_mid_job(
    session: &Session,
    m: &StoreShuffleManager,
    tier: Option<Arc<TieredStore>>,
    backend: Backend,
    local_dir: &Path,
) -> Arc<Mutex<Option<Loss>>> {
    let loss: Arc<Mutex<Option<Loss>>> = Arc::default();
    let stages_done = Arc::new(AtomicUsize::new(0));
    let done = Arc::clone(&stages_done);
    let committed: Arc<Mutex<Vec<MapStatus>>> = Arc::default();
    let c = Arc::clone(&committed);
    session.set_stage_hook(Some(Arc::new(move |ev: &StageEvent| {
        c.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ev.statuses.iter().cloned());
        if ev.statuses.len() >= 2 {
            done.fetch_add(1, Ordering::SeqCst);
        }
    })));
    let (l, m, local_dir) = (Arc::clone(&loss), m.clone(), local_dir.to_path_buf());
    // The hook lives in the session: the session reaches it through a clone
    // (the test clears the hook at the end to break the cycle).
    let s = session.clone();
    session.set_task_hook(Some(Arc::new(move |ev: &TaskEvent| {
        if ev.executor != LOST || stages_done.load(Ordering::SeqCst) < STAGES_BEFORE_LOSS {
            return;
        }
        let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
        if l.is_some() {
            return;
        }
        let cache_before = m.metrics().snapshot().cache;
        let outputs: Vec<MapStatus> = committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|st| st.total_bytes() > 0)
            .cloned()
            .collect();
        let held = |st: &MapStatus| tier.as_ref().is_some_and(|t| t.contains(&st.location));
        let before: Vec<bool> = outputs.iter().map(held).collect();
        let report = s.lose_executor(LOST).expect("executor 1 exists");
        let (mut cached_lost, mut cached_kept) = (Vec::new(), Vec::new());
        for (st, was) in outputs.iter().zip(before) {
            let now = held(st);
            if st.map_id as usize % 2 == LOST {
                cached_lost.push((was, now));
            } else {
                cached_kept.push((was, now));
            }
        }
        let mut loss = Loss {
            cache_before,
            cached_lost,
            cached_kept,
            trigger: Some((ev.stage_id, ev.partition)),
            local_files: files_under(&local_dir),
            report,
            ..Loss::default()
        };
        if backend == Backend::Local {
            // The executor's disk is gone: its data files (index as footer) too.
            for st in &loss.report.outputs_lost {
                let path = PathBuf::from(m.store().describe(&st.location));
                if path.is_file() {
                    std::fs::remove_file(&path)
                        .unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
                    loss.files_removed.push(path);
                }
            }
        }
        *l = Some(loss);
    })));
    loss
}

async fn executor_lost(backend: Backend) {
    let data = tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation");
    let dir = tempfile::tempdir().expect("temp dir");
    let local_dir = dir.path().join("executor-disk");
    let (m, _s3, tier) = manager(backend, "executor-loss", &local_dir).await;
    let config = EngineConfig {
        executors: 2,
        parallelism: 4,
        ..engine_config(None)
    };
    let session = Session::new(config, Arc::new(m.clone()) as Arc<dyn ShuffleManager>);
    let loss = lose_executor_mid_job(&session, &m, tier, backend, &local_dir);
    let result = run_q80(&session, &data).await;
    session.set_task_hook(None);
    let (csv, summary) =
        result.unwrap_or_else(|e| panic!("{backend:?}: q80 after losing an executor failed: {e}"));
    let loss = loss
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("executor 1 never ran a task after four multi-task map stages: nothing was lost");
    assert_golden(&csv, &format!("{backend:?}, executor lost"));
    let json = summary.to_json();

    // The running tasks were killed, reported, and re-run.
    assert!(
        loss.report.tasks_killed >= 1,
        "losing the executor killed no running task (the trigger {:?} was running): {loss:?}",
        loss.trigger
    );
    let killed: Vec<(usize, usize, usize)> = summary
        .retry_reasons
        .iter()
        .filter_map(|r| match r {
            RetryReason::ExecutorLost {
                executor,
                stage_id,
                partition,
            } => Some((*executor, *stage_id, *partition)),
            _ => None,
        })
        .collect();
    // Every attempt aborted with the executor re-ran with that reason (even
    // one that was finishing at that instant: it failed with its executor).
    assert!(
        !killed.is_empty() && killed.len() == loss.report.tasks_killed,
        "{} attempts aborted, {} reported killed: {json}",
        loss.report.tasks_killed,
        killed.len()
    );
    assert_eq!(summary.tasks_killed, killed.len() as u64, "{json}");
    assert!(
        killed.iter().all(|(e, _, p)| *e == LOST && p % 2 == LOST),
        "killed tasks not on executor {LOST}: {killed:?}"
    );
    // The attempt whose start triggered the loss was killed, unless it had
    // already failed on its own (a lost input) in that instant.
    let (ts, tp) = loss.trigger.expect("trigger");
    let failed_itself = summary.retry_reasons.iter().any(|r| {
        matches!(r, RetryReason::Refetch { stage_id, partition, .. } if (*stage_id, *partition) == (ts, tp))
    });
    assert!(
        failed_itself || killed.iter().any(|(_, s, p)| (*s, *p) == (ts, tp)),
        "the task that was starting on the lost executor ({ts}, {tp}) was not killed: {killed:?}"
    );
    assert!(json.contains("\"kind\":\"executor_lost\""), "{json}");

    let recomputed: Vec<(u32, u32, String)> = summary
        .retry_reasons
        .iter()
        .filter_map(|r| match r {
            RetryReason::FetchFailure {
                shuffle_id,
                map_id,
                error,
            } => Some((*shuffle_id, *map_id, error.clone())),
            _ => None,
        })
        .collect();
    match backend {
        Backend::Local => {
            let lost: BTreeSet<(u32, u32)> = loss
                .report
                .outputs_lost
                .iter()
                .map(|s| (s.shuffle_id, s.map_id))
                .collect();
            let lost_shuffles: BTreeSet<u32> = lost.iter().map(|(s, _)| *s).collect();
            assert!(
                lost_shuffles.len() >= STAGES_BEFORE_LOSS,
                "the executor's outputs of every finished shuffle should be lost: {lost:?}"
            );
            assert!(
                lost.iter().all(|(_, m)| m % 2 == LOST as u32),
                "outputs of maps not on executor {LOST} were lost: {lost:?}"
            );
            assert!(
                !loss.files_removed.is_empty(),
                "no file was deleted: {loss:?}"
            );
            // Exactly lost outputs were recomputed, each once, with the reason.
            let set: BTreeSet<(u32, u32)> = recomputed.iter().map(|(s, m, _)| (*s, *m)).collect();
            assert!(!set.is_empty(), "nothing was recomputed: {json}");
            assert!(
                set.is_subset(&lost),
                "recomputed maps {set:?} that were not lost ({lost:?})"
            );
            assert_eq!(
                set.len(),
                recomputed.len(),
                "a lost output was recomputed twice: {recomputed:?}"
            );
            assert_eq!(summary.tasks_recomputed, set.len() as u64, "{json}");
            for (s, m, error) in &recomputed {
                assert!(
                    error.contains(&format!("lost with executor {LOST}"))
                        || error.contains("not found"),
                    "the reason for recomputing shuffle {s} map {m} does not say its output \
                     was lost: {error}"
                );
            }
            // Recomputing a map of a later shuffle needed lost outputs of an
            // earlier one: recovery nested across shuffles.
            let shuffles: BTreeSet<u32> = set.iter().map(|(s, _)| *s).collect();
            assert!(
                shuffles.len() >= 2,
                "recovery did not reach back into an earlier shuffle: recomputed {set:?}"
            );
        }
        Backend::S3 => {
            assert!(
                loss.report.outputs_lost.is_empty(),
                "S3 outputs were dropped with the executor: {loss:?}"
            );
            assert!(
                loss.local_files.is_empty(),
                "the S3 backend kept shuffle or spill files on the executor's disk: {:?}",
                loss.local_files
            );
            assert_eq!(
                summary.tasks_recomputed, 0,
                "a finished map task was recomputed although its output is in S3: {json}"
            );
            assert!(
                recomputed.is_empty(),
                "fetch failures with outputs in S3: {recomputed:?}"
            );
            // The tier held every committed output until the loss; the lost
            // executor's copies went with it, the others' stayed, and the
            // lost ones were then read from S3.
            assert!(
                !loss.cached_lost.is_empty() && !loss.cached_kept.is_empty(),
                "no committed output on one of the executors: {loss:?}"
            );
            assert!(
                loss.cached_lost.iter().all(|c| *c == (true, false)),
                "the lost executor's outputs should be cached before the loss and dropped by it: \
                 {:?}",
                loss.cached_lost
            );
            assert!(
                loss.cached_kept.iter().all(|c| *c == (true, true)),
                "the other executor's cached outputs should stay: {:?}",
                loss.cached_kept
            );
            let (before, after) = (loss.cache_before, m.metrics().snapshot().cache);
            assert!(
                before.hits > 0,
                "the local tier served no read before the loss: {before:?}"
            );
            assert!(
                after.misses > before.misses,
                "no read went to S3 after the executor (and its cached copies) was lost: \
                 {after:?}"
            );
        }
    }
    m.cleanup_app().await.expect("cleanup");
    assert!(list(&m, &m.layout().app_prefix()).await.is_empty());
}

/// Lost executor, local backend: its running tasks re-run and the outputs
/// it held are recomputed where needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_executor_outputs_are_recomputed_local() {
    executor_lost(Backend::Local).await;
}

/// Lost executor, S3 backend: only its running tasks re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_executor_loses_nothing_on_s3() {
    executor_lost(Backend::S3).await;
}
