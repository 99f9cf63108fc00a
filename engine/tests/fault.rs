//! Fault handling: lost map output is recomputed (fetch-failure path), and
//! the job summary says so.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use engine::{col, count_star, sum, EngineConfig, JoinType, Session};
use shuffle_core::{ShuffleConfig, ShuffleManager, StoreShuffleManager};

#[test]
fn lost_map_output_is_recomputed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let shuffle = ShuffleConfig::from_pairs([("local.dirs", dir.path().display().to_string())])
            .expect("config");
        let manager: StoreShuffleManager = shuffle_local::local_manager(shuffle).expect("manager");
        let config = EngineConfig {
            shuffle_partitions: 3,
            broadcast_threshold: 0,
            ..Default::default()
        };
        let session = Session::new(config, Arc::new(manager.clone()) as Arc<dyn ShuffleManager>);
        // After the first map stage finishes, lose map 0's output (data and
        // index, as when its executor's disk disappears).
        let fired = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&fired);
        let m = manager.clone();
        session.set_stage_hook(Some(Arc::new(move |ev: &engine::scheduler::StageEvent| {
            if f.swap(true, Ordering::SeqCst) {
                return;
            }
            let st = &ev.statuses[0];
            let data = m.store().describe(&st.location);
            let index = m
                .store()
                .describe(&m.layout().index_key(st.shuffle_id, st.map_id));
            let _ = std::fs::remove_file(data);
            let _ = std::fs::remove_file(index);
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
