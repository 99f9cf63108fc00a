//! Fault handling: lost map output is recomputed (fetch-failure path), and
//! the job summary says so.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use engine::{col, count_star, sum, EngineConfig, JoinType, Session};
use shuffle_core::{ShuffleConfig, ShuffleManager, StoreShuffleManager};

/// A session on a local-disk manager in a fresh temp dir (kept alive by the
/// returned guard).
fn local_session(config: EngineConfig) -> (Session, StoreShuffleManager, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let shuffle = ShuffleConfig::from_pairs([("local.dirs", dir.path().display().to_string())])
        .expect("config");
    let manager: StoreShuffleManager = shuffle_local::local_manager(shuffle).expect("manager");
    let session = Session::new(config, Arc::new(manager.clone()) as Arc<dyn ShuffleManager>);
    (session, manager, dir)
}

#[test]
fn lost_map_output_is_recomputed() {
    runtime().block_on(async {
        let (session, manager, _dir) = local_session(EngineConfig {
            shuffle_partitions: 3,
            broadcast_threshold: 0,
            ..Default::default()
        });
        // After the first map stage finishes, lose map 0's output (its one
        // data object, as when its executor's disk disappears).
        let fired = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&fired);
        let m = manager.clone();
        session.set_stage_hook(Some(Arc::new(move |ev: &engine::scheduler::StageEvent| {
            if f.swap(true, Ordering::SeqCst) {
                return;
            }
            let st = &ev.statuses[0];
            let data = m.store().describe(&st.location);
            let _ = std::fs::remove_file(data);
        })));
        let a: Vec<RowA> = (0..500)
            .map(|i| {
                (
                    Some(i % 13),
                    Some(format!("k{}", i % 3)),
                    Some(i),
                    Some(i as i128),
                )
            })
            .collect();
        let b: Vec<RowB> = (0..200).map(|i| (Some(i % 17), None, Some(i))).collect();
        let da = session
            .read_batches(schema_a(), batches_a(&a, 4))
            .expect("a");
        let db = session
            .read_batches(schema_b(), batches_b(&b, 2))
            .expect("b");
        let df = da
            .join(&db, JoinType::Inner, &["a_key"], &["b_key"])
            .expect("join")
            .aggregate(
                vec![col("a_k2")],
                vec![count_star().alias("n"), sum(col("b_val")).alias("s")],
            )
            .expect("agg");
        let (batches, summary) = df
            .collect_with_summary()
            .await
            .expect("job survives the loss");
        assert!(fired.load(Ordering::SeqCst));
        // reference
        let mut want = std::collections::BTreeMap::<String, (i64, i64)>::new();
        for ra in &a {
            for rb in &b {
                if ra.0 == rb.0 {
                    let e = want.entry(ra.1.clone().unwrap_or_default()).or_default();
                    e.0 += 1;
                    e.1 += rb.2.unwrap_or(0);
                }
            }
        }
        let want: Vec<Row> = want
            .into_iter()
            .map(|(k, (n, s))| vec![V::S(k), V::I(n), V::I(s)])
            .collect();
        assert_eq!(sorted(rows(&batches)), want);
        assert!(summary.tasks_recomputed >= 1, "{}", summary.to_json());
        assert!(summary
            .retry_reasons
            .iter()
            .any(|r| matches!(r, engine::RetryReason::FetchFailure { .. })));
        assert!(
            summary.tasks_run
                > summary
                    .stages
                    .iter()
                    .map(|s| s.num_tasks as u64)
                    .sum::<u64>()
        );
    });
}

/// Losing an executor loses its outputs of *every* shuffle. A task of the
/// last stage then needs a lost map of shuffle 1, whose re-run needs a lost
/// map of shuffle 0: recovery must nest across shuffles (it once deadlocked
/// on a scheduler-wide lock held during the outer re-run).
#[test]
fn executor_loss_recovers_across_chained_shuffles() {
    runtime().block_on(async {
        let (session, manager, _dir) = local_session(EngineConfig {
            shuffle_partitions: 4,
            scan_partitions: Some(4),
            parallelism: 4,
            executors: 2,
            broadcast_threshold: 0,
            ..Default::default()
        });
        // When executor 1 starts its first result task, it is lost: its
        // running tasks are killed, and its disk (every map output it wrote)
        // goes with it.
        let loss: Arc<std::sync::Mutex<Option<engine::scheduler::executors::ExecutorLoss>>> =
            Arc::default();
        let (l, m, s) = (Arc::clone(&loss), manager.clone(), session.clone());
        session.set_task_hook(Some(Arc::new(move |ev: &engine::scheduler::TaskEvent| {
            let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
            if ev.shuffle_id.is_some() || ev.executor != 1 || l.is_some() {
                return;
            }
            let report = s.lose_executor(1).expect("executor 1");
            for st in &report.outputs_lost {
                let _ = std::fs::remove_file(m.store().describe(&st.location));
            }
            *l = Some(report);
        })));
        let a: Vec<RowA> = (0..2000)
            .map(|i| {
                (
                    Some(i % 97),
                    Some(format!("k{}", i % 7)),
                    Some(i),
                    Some(i as i128),
                )
            })
            .collect();
        let df = session
            .read_batches(schema_a(), batches_a(&a, 4))
            .expect("a")
            .repartition_by(vec![col("a_key")], 4)
            .expect("repartition")
            .aggregate(vec![col("a_k2")], vec![count_star().alias("n")])
            .expect("agg");
        let (batches, summary) = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            df.collect_with_summary(),
        )
        .await
        .expect("recovery across shuffles hangs (deadlock)")
        .expect("job survives losing an executor");
        session.set_task_hook(None);
        let loss = loss
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .expect("executor 1 ran a result task");
        let mut want = std::collections::BTreeMap::<String, i64>::new();
        for r in &a {
            *want.entry(r.1.clone().unwrap_or_default()).or_default() += 1;
        }
        let want: Vec<Row> = want
            .into_iter()
            .map(|(k, n)| vec![V::S(k), V::I(n)])
            .collect();
        assert_eq!(sorted(rows(&batches)), want);

        // Executor 1 ran maps 1 and 3 of both shuffles; all four outputs
        // went with it, and all four were recomputed, each once.
        let lost: std::collections::BTreeSet<(u32, u32)> = loss
            .outputs_lost
            .iter()
            .map(|s| (s.shuffle_id, s.map_id))
            .collect();
        let shuffles: std::collections::BTreeSet<u32> = lost.iter().map(|(s, _)| *s).collect();
        assert_eq!(shuffles.len(), 2, "{lost:?}");
        assert!(lost.iter().all(|(_, m)| m % 2 == 1), "{lost:?}");
        assert_eq!(lost.len(), 4, "{lost:?}");
        let recomputed: Vec<(u32, u32)> = summary
            .retry_reasons
            .iter()
            .filter_map(|r| match r {
                engine::RetryReason::FetchFailure {
                    shuffle_id, map_id, ..
                } => Some((*shuffle_id, *map_id)),
                _ => None,
            })
            .collect();
        let set: std::collections::BTreeSet<(u32, u32)> = recomputed.iter().copied().collect();
        assert_eq!(set, lost, "{}", summary.to_json());
        assert_eq!(recomputed.len(), set.len(), "{}", summary.to_json());
        assert_eq!(summary.tasks_recomputed, 4, "{}", summary.to_json());
        assert!(loss.tasks_killed >= 1, "{loss:?}");
        // Every attempt running on the lost executor failed with it (even
        // one that was finishing at that instant).
        assert!(
            summary.tasks_killed >= 1 && summary.tasks_killed == loss.tasks_killed as u64,
            "{} aborted, {} killed: {}",
            loss.tasks_killed,
            summary.tasks_killed,
            summary.to_json()
        );
    });
}

/// A spilled run that is never read back (its task failed before merging
/// it) deletes its file when dropped; one that is read back is deleted by
/// its reader. Spills of failed tasks must not wait for the app's cleanup.
#[test]
fn unread_spill_runs_are_deleted_when_dropped() {
    runtime().block_on(async {
        let (_session, manager, dir) = local_session(EngineConfig::default());
        let ctx = Arc::new(engine::runtime::TaskContext {
            stage_id: 0,
            partition: 0,
            attempt: 0,
            config: Arc::new(EngineConfig::default()),
            manager: Arc::new(manager.clone()) as Arc<dyn ShuffleManager>,
            tracker: Arc::new(engine::scheduler::tracker::MapOutputTracker::new()),
            metrics: Arc::default(),
            read_range: None,
            executor: 0,
            broadcasts: Arc::default(),
        });
        let rows: Vec<RowA> = (0..100)
            .map(|i| (Some(i), Some("k".to_string()), Some(i), None))
            .collect();
        let batch = batches_a(&rows, 1).remove(0);
        let spill = |ctx: Arc<engine::runtime::TaskContext>, batch: arrow::array::RecordBatch| async move {
            let mut w = engine::memory::spill::BatchSpillWriter::create(&ctx)
                .await
                .expect("spill writer");
            w.write(&batch).await.expect("spill write");
            let run = w.finish().await.expect("spill finish");
            let path = std::path::PathBuf::from(&run.file().expect("file").id);
            assert!(path.exists(), "spill file {} written", path.display());
            (run, path)
        };
        let gone = |path: std::path::PathBuf| async move {
            let start = std::time::Instant::now();
            while path.exists() && start.elapsed() < std::time::Duration::from_secs(10) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            !path.exists()
        };

        // Dropped unread.
        let (run, path) = spill(Arc::clone(&ctx), batch.clone()).await;
        drop(run);
        assert!(gone(path.clone()).await, "unread run {} left behind", path.display());

        // Read back: the reader deletes it once read.
        let (run, path) = spill(Arc::clone(&ctx), batch.clone()).await;
        let back = engine::memory::spill::BatchSpillReader::open(&ctx, run, batch.schema())
            .read_all()
            .await
            .expect("read back");
        assert_eq!(back, vec![batch.clone()]);
        assert!(gone(path.clone()).await, "read run {} left behind", path.display());
        drop(dir);
    });
}
