//! Reliability when an executor is lost mid-job: q80 (TPC-DS SF 0.01, every
//! join shuffled) with a stage hook that, once the first multi-map stage has
//! committed, "loses" the executor that ran its odd-numbered map tasks.
//!
//! - Local backend: the executor's shuffle files vanish with it (data and
//!   index of every odd map of that shuffle are removed from disk). The
//!   readers' fetch failures name them, exactly those map outputs are
//!   recomputed (`tasks_recomputed > 0`, one fetch-failure reason per lost
//!   map), and the answer is golden.
//! - S3 backend (shuffle and spill on the embedded server): committed map
//!   outputs live in S3 and survive the executor; losing it wipes only its
//!   local directory. No finished map task is recomputed
//!   (`tasks_recomputed == 0`, no fetch failure) and the answer is golden.
//!
//! The engine has no notion of executors and no way to kill running tasks,
//! so the loss is simulated between stages (see the module report).

mod reliability_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use engine::scheduler::StageEvent;
use engine::{RetryReason, Session};
use reliability_support::*;
use shuffle_core::{ShuffleConfig, ShuffleManager, StoreShuffleManager};
use shuffle_s3::{EmbeddedS3, S3ShuffleBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
}

/// What the hook did: the shuffle whose odd maps were on the lost executor,
/// those maps, and the ones among them that had data (readers need them).
#[derive(Debug, Default, Clone)]
struct Loss {
    shuffle_id: u32,
    lost: BTreeSet<u32>,
    lost_with_data: BTreeSet<u32>,
    files_removed: Vec<PathBuf>,
}

/// A manager on `backend` with its own local directory (the executor's
/// disk), and what must outlive it.
async fn manager(
    backend: Backend,
    app_id: &str,
    dir: &Path,
) -> (StoreShuffleManager, Option<EmbeddedS3>) {
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
        ),
        Backend::S3 => {
            let s3 = server().await;
            let m = S3ShuffleBuilder::new(config)
                .s3_config(s3.config("executor-loss").expect("s3 config"))
                .spill_to_s3(true)
                .build()
                .await
                .expect("s3 manager")
                .manager;
            (m, Some(s3))
        }
    }
}

/// Every regular file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Once: after the first map stage with several maps of which an odd one
/// wrote data, loses the executor that ran the odd maps. On the local
/// backend its files of that shuffle are deleted from disk; on both backends
/// everything under the executor's local directory is wiped.
fn lose_executor(
    session: &Session,
    m: &StoreShuffleManager,
    backend: Backend,
    local_dir: &Path,
) -> Arc<Mutex<Option<Loss>>> {
    let loss: Arc<Mutex<Option<Loss>>> = Arc::default();
    let (l, m, local_dir) = (Arc::clone(&loss), m.clone(), local_dir.to_path_buf());
    session.set_stage_hook(Some(Arc::new(move |ev: &StageEvent| {
        let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
        let odd_with_data = |s: &&shuffle_core::MapStatus| s.map_id % 2 == 1 && s.total_bytes() > 0;
        if l.is_some() || ev.statuses.len() < 2 || !ev.statuses.iter().any(|s| odd_with_data(&s)) {
            return;
        }
        let mut loss = Loss {
            shuffle_id: ev.shuffle_id,
            lost: ev
                .statuses
                .iter()
                .filter(|s| s.map_id % 2 == 1)
                .map(|s| s.map_id)
                .collect(),
            lost_with_data: ev
                .statuses
                .iter()
                .filter(odd_with_data)
                .map(|s| s.map_id)
                .collect(),
            files_removed: Vec::new(),
        };
        if backend == Backend::Local {
            // The executor's disk is gone: its data and index files too.
            for st in ev.statuses.iter().filter(|s| s.map_id % 2 == 1) {
                let index = m.layout().index_key(st.shuffle_id, st.map_id);
                for key in [&st.location, &index] {
                    let path = PathBuf::from(m.store().describe(key));
                    if path.is_file() {
                        std::fs::remove_file(&path)
                            .unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
                        loss.files_removed.push(path);
                    }
                }
            }
        } else {
            // S3: the outputs are in S3; the executor takes only its local
            // directory with it (spills and temp files, if any).
            for f in files_under(&local_dir) {
                if std::fs::remove_file(&f).is_ok() {
                    loss.files_removed.push(f);
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
    let local_dir = dir.path().join("executor-1");
    let (m, _s3) = manager(backend, "executor-loss", &local_dir).await;
    let session = Session::new(
        engine_config(None),
        Arc::new(m.clone()) as Arc<dyn ShuffleManager>,
    );
    let loss = lose_executor(&session, &m, backend, &local_dir);
    let (csv, summary) = run_q80(&session, &data)
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: q80 after losing an executor failed: {e}"));
    let loss = loss
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("the hook never found a multi-map stage to lose an executor in");
    assert_golden(&csv, &format!("{backend:?}, executor lost"));

    let fetch_failures: Vec<(u32, u32, String)> = summary
        .retry_reasons
        .iter()
        .filter_map(|r| match r {
            RetryReason::FetchFailure {
                shuffle_id,
                map_id,
                error,
            } => Some((*shuffle_id, *map_id, error.clone())),
            RetryReason::TaskError(_) => None,
        })
        .collect();
    match backend {
        Backend::Local => {
            assert!(
                !loss.files_removed.is_empty(),
                "the hook removed no file: {loss:?}"
            );
            assert!(
                summary.tasks_recomputed > 0,
                "no map task was recomputed after losing {loss:?}: {}",
                summary.to_json()
            );
            // Exactly the lost map outputs that readers needed were recomputed,
            // each for a fetch failure that says the output is gone.
            let recomputed: BTreeSet<u32> = fetch_failures
                .iter()
                .filter(|(s, _, _)| *s == loss.shuffle_id)
                .map(|(_, m, _)| *m)
                .collect();
            assert_eq!(
                recomputed, loss.lost_with_data,
                "recomputed maps of shuffle {} differ from the lost ones ({:?}): {fetch_failures:?}",
                loss.shuffle_id, loss.lost
            );
            assert!(
                fetch_failures.iter().all(|(s, _, _)| *s == loss.shuffle_id),
                "maps of other shuffles were recomputed: {fetch_failures:?}"
            );
            for (_, map, error) in &fetch_failures {
                assert!(
                    error.contains("not found") && error.contains(&format!("map {map}")),
                    "fetch failure of map {map} does not say its output is gone: {error}"
                );
            }
            assert_eq!(
                summary.tasks_recomputed,
                fetch_failures.len() as u64,
                "{}",
                summary.to_json()
            );
        }
        Backend::S3 => {
            assert_eq!(
                summary.tasks_recomputed,
                0,
                "a finished map task was recomputed although its output is in S3 ({loss:?}): {}",
                summary.to_json()
            );
            assert!(
                fetch_failures.is_empty(),
                "fetch failures with outputs in S3: {fetch_failures:?}"
            );
        }
    }
    m.cleanup_app().await.expect("cleanup");
    assert!(list(&m, &m.layout().app_prefix()).await.is_empty());
}

/// Lost executor, local backend: its map outputs are recomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_executor_outputs_are_recomputed_local() {
    executor_lost(Backend::Local).await;
}

/// Lost executor, S3 backend: nothing finished is recomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_executor_loses_nothing_on_s3() {
    executor_lost(Backend::S3).await;
}
