//! `shuffle.keep` ([`EngineConfig::keep_shuffle`]) at the session level: a
//! job run with it leaves every committed map output (data and index
//! objects) in the store and says which through `Session::kept_shuffles`;
//! without it the job removes them. Both backends.

mod common;

use std::path::Path;

use common::*;
use engine::{col, count_star, sum, EngineConfig, JoinType};

fn config(keep: bool) -> EngineConfig {
    EngineConfig {
        shuffle_partitions: 3,
        // Every join shuffles both sides: three shuffles in all.
        broadcast_threshold: 0,
        keep_shuffle: keep,
        ..Default::default()
    }
}

/// Runs a shuffle join plus an aggregate; returns the number of rows.
async fn run_join(t: &TestSession) -> usize {
    let a: Vec<RowA> = (0..400)
        .map(|i| (Some(i % 11), Some(format!("k{}", i % 4)), Some(i), None))
        .collect();
    let b: Vec<RowB> = (0..150).map(|i| (Some(i % 7), None, Some(i))).collect();
    let s = &t.session;
    let da = s.read_batches(schema_a(), batches_a(&a, 4)).expect("a");
    let db = s.read_batches(schema_b(), batches_b(&b, 2)).expect("b");
    let df = da
        .join(&db, JoinType::Inner, &["a_key"], &["b_key"])
        .expect("join")
        .aggregate(
            vec![col("a_k2")],
            vec![count_star().alias("n"), sum(col("b_val")).alias("s")],
        )
        .expect("agg");
    let (batches, _) = df.collect_with_summary().await.expect("job");
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Where the backend's shuffle objects live on disk.
fn store_dir(t: &TestSession) -> &Path {
    t.s3_dir().unwrap_or_else(|| t.local_dir())
}

fn keeps_outputs(backend: Backend) {
    runtime().block_on(async {
        let t = session(backend, config(true)).await;
        assert_eq!(run_join(&t).await, 4);
        let kept = t.session.kept_shuffles();
        assert_eq!(kept.len(), 3, "two join inputs and the aggregate: {kept:?}");
        let app = t.session.manager().app_id().to_string();
        for k in &kept {
            assert!(!k.outputs.is_empty(), "shuffle {}", k.shuffle_id);
            let data = shuffle_files(store_dir(&t), k.shuffle_id, ".data");
            // Every non-empty committed output is one data object (index
            // as footer); all-empty ones are not stored.
            let non_empty = k.outputs.iter().filter(|s| s.total_bytes() > 0).count();
            assert_eq!(data.len(), non_empty, "shuffle {}", k.shuffle_id);
            assert!(non_empty > 0, "shuffle {} wrote no data", k.shuffle_id);
            assert!(
                data.iter().all(|p| p.to_string_lossy().contains(&app)),
                "{data:?} not under app {app}"
            );
        }
        // A second job of the same session adds its own shuffles.
        assert_eq!(run_join(&t).await, 4);
        let again = t.session.kept_shuffles();
        assert_eq!(again.len(), 6);
        assert!(again[3..].iter().all(|k| k.job_id == 1));
    });
}

fn removes_outputs_by_default(backend: Backend) {
    runtime().block_on(async {
        let t = session(backend, config(false)).await;
        assert_eq!(run_join(&t).await, 4);
        assert!(t.session.kept_shuffles().is_empty());
        for id in 0..3 {
            let left: Vec<_> = [".data", ".index"]
                .iter()
                .flat_map(|s| shuffle_files(store_dir(&t), id, s))
                .collect();
            assert!(left.is_empty(), "shuffle {id} left {left:?}");
        }
    });
}

#[test]
fn keep_shuffle_leaves_data_and_index_local() {
    keeps_outputs(Backend::Local);
}

#[test]
fn keep_shuffle_leaves_data_and_index_s3() {
    keeps_outputs(Backend::S3);
}

#[test]
fn jobs_remove_their_shuffles_without_keep_local() {
    removes_outputs_by_default(Backend::Local);
}

#[test]
fn jobs_remove_their_shuffles_without_keep_s3() {
    removes_outputs_by_default(Backend::S3);
}
