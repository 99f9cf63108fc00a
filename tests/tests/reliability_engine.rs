//! Reliability of map outputs under duplicate attempts and corruption, on
//! both backends (local disk; S3 through the embedded server):
//!
//! - two attempts of the same map task racing through the shuffle manager
//!   (as speculative execution or a retry after a lost heartbeat would) leave
//!   exactly one committed output, and the reducer sees every row once;
//! - a byte flipped in, or the truncation of, a committed shuffle data object
//!   between stages is caught (checksum / short read), reported with object
//!   and partition, repaired by re-running the producing map task, and q80
//!   still gives the golden answer.
//!
//! Damaged spill objects are covered in `reliability_spill.rs`.

mod reliability_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use bytes::Bytes;
use engine::exchange::codec::{decode_batch, BatchEncoder};
use engine::scheduler::{wait_in_hook, StageEvent};
use engine::{RetryReason, Session};
use futures::StreamExt;
use reliability_support::*;
use shuffle_core::{
    Layout, MapStatus, ObjectKind, ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleManagerExt,
    StoreShuffleManager,
};
use shuffle_s3::{EmbeddedS3, FaultConfig, S3ShuffleBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
}

/// A manager on `backend` (S3: shuffle and spill on an embedded server) and
/// what must outlive it.
async fn manager(
    backend: Backend,
    app_id: &str,
    memory_limit: u64,
) -> (StoreShuffleManager, tempfile::TempDir, Option<EmbeddedS3>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ShuffleConfig {
        app_id: app_id.to_string(),
        memory_limit,
        local_dirs: vec![dir.path().to_path_buf()],
        ..ShuffleConfig::default()
    };
    match backend {
        Backend::Local => (
            shuffle_local::local_manager(config).expect("local manager"),
            dir,
            None,
        ),
        Backend::S3 => {
            let s3 = server().await;
            let m = S3ShuffleBuilder::new(config)
                .s3_config(s3.config("reliability").expect("s3 config"))
                .spill_to_s3(true)
                .build()
                .await
                .expect("s3 manager")
                .manager;
            (m, dir, Some(s3))
        }
    }
}

const PARTS: u32 = 4;
const ROWS_PER_MAP: i64 = 400;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("attempt", DataType::Int64, false),
    ]))
}

/// The rows map `map` produces: ids `map*10^6 + 0..ROWS_PER_MAP`, tagged
/// with the attempt, as Arrow blocks of 25 rows per partition.
fn blocks(map: u32, attempt: u32) -> Vec<(u32, Vec<u8>, u64)> {
    let mut enc = BatchEncoder::new();
    let mut by_part: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for i in 0..ROWS_PER_MAP {
        let id = i64::from(map) * 1_000_000 + i;
        by_part
            .entry((id % PARTS as i64) as u32)
            .or_default()
            .push(id);
    }
    let mut out = Vec::new();
    for (p, ids) in by_part {
        for chunk in ids.chunks(25) {
            let batch = RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(chunk.to_vec())),
                    Arc::new(Int64Array::from(vec![i64::from(attempt); chunk.len()])),
                ],
            )
            .expect("batch");
            out.push((p, enc.encode(&batch).expect("encode"), chunk.len() as u64));
        }
    }
    // Partitions in a scrambled order, as a hash exchange emits them.
    out.sort_by_key(|(p, b, _)| (b.len() as u32 ^ p) % 7);
    out
}

/// One attempt of map 0: writes its blocks (yielding between them, so two
/// attempts interleave), waits for the other attempt, then commits.
async fn attempt(
    m: StoreShuffleManager,
    shuffle_id: u32,
    attempt: u32,
    barrier: Arc<tokio::sync::Barrier>,
) -> MapStatus {
    let mut w = m
        .buffered_writer(shuffle_id, 0, attempt)
        .await
        .expect("writer");
    for (p, b, rows) in blocks(0, attempt) {
        w.write_block(p, &b, rows).await.expect("write");
        tokio::task::yield_now().await;
    }
    barrier.wait().await;
    w.commit().await.expect("commit")
}

/// Reads every partition of `statuses` and returns `id -> (count, attempts)`.
async fn reduce(
    m: &StoreShuffleManager,
    shuffle_id: u32,
    statuses: Vec<MapStatus>,
) -> BTreeMap<i64, Vec<i64>> {
    let mut seen: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for p in 0..PARTS {
        let mut reader = m
            .reader(shuffle_id, statuses.clone(), p..p + 1)
            .expect("reader");
        while let Some(block) = reader.next().await {
            let block = block.expect("read block");
            let batch = decode_batch(block.data, &schema()).expect("decode");
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let attempts = batch.column(1).as_primitive::<Int64Type>();
            for r in 0..batch.num_rows() {
                assert_eq!(
                    ids.value(r) % PARTS as i64,
                    p as i64,
                    "row in wrong partition"
                );
                seen.entry(ids.value(r))
                    .or_default()
                    .push(attempts.value(r));
            }
        }
    }
    seen
}

async fn duplicate_attempts(backend: Backend) {
    for round in 0..6u32 {
        // Odd rounds: a tiny pool, so the attempts' buffers spill.
        let memory = if round % 2 == 1 { 8 << 10 } else { 64 << 20 };
        let (m, _dir, s3) = manager(backend, &format!("dup-{round}"), memory).await;
        if let Some(s3) = &s3 {
            s3.set_faults(FaultConfig::mixed(0.05, u64::from(round)));
        }
        let shuffle_id = round;
        m.register_shuffle(ShuffleHandle {
            shuffle_id,
            num_maps: 2,
            num_partitions: PARTS,
        })
        .await
        .expect("register");
        let before = m.metrics().snapshot();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let a0 = tokio::spawn(attempt(m.clone(), shuffle_id, 0, Arc::clone(&barrier)));
        let a1 = tokio::spawn(attempt(m.clone(), shuffle_id, 1, barrier));
        let (s0, s1) = tokio::time::timeout(Duration::from_secs(120), async {
            (a0.await.expect("attempt 0"), a1.await.expect("attempt 1"))
        })
        .await
        .expect("racing attempts hang");
        // Both report the winner (`raw_bytes` is only known to the attempt
        // that wrote the output).
        let key = |s: &MapStatus| {
            (
                s.attempt,
                s.location.clone(),
                s.lengths.clone(),
                s.checksums.clone(),
                s.records.clone(),
            )
        };
        assert_eq!(
            key(&s0),
            key(&s1),
            "{backend:?}: both attempts must report the winner"
        );
        let winner = s0.attempt;
        let delta = m.metrics().snapshot().delta(&before);
        assert_eq!(delta.shuffle.maps_committed, 1, "{backend:?}: {delta:?}");
        assert_eq!(delta.shuffle.commit_conflicts, 1, "{backend:?}: {delta:?}");

        // Map 1: a single attempt.
        let mut w = m.buffered_writer(shuffle_id, 1, 0).await.expect("writer");
        for (p, b, rows) in blocks(1, 0) {
            w.write_block(p, &b, rows).await.expect("write");
        }
        let s_map1 = w.commit().await.expect("commit map 1");
        if let Some(s3) = &s3 {
            s3.clear_faults();
        }

        // Exactly one data object (index as footer) for map 0: the winner's.
        let prefix = m.layout().shuffle_prefix(shuffle_id);
        let mut map0: Vec<String> = list(&m, &prefix)
            .await
            .into_iter()
            .map(|o| o.key.path)
            .filter(|p| {
                matches!(
                    Layout::parse(p).map(|o| o.kind),
                    Some(
                        ObjectKind::MapOutput { map_id: 0, .. }
                            | ObjectKind::Data { map_id: 0, .. }
                    )
                )
            })
            .collect();
        map0.sort();
        assert_eq!(map0, vec![s0.location.path.clone()], "{backend:?}");
        // The status read back from storage agrees.
        let stored = m
            .committed_map_status(shuffle_id, 0)
            .await
            .expect("stored status");
        assert_eq!(
            (&stored.location, &stored.lengths, &stored.checksums),
            (&s0.location, &s0.lengths, &s0.checksums)
        );

        // The reducer sees every row exactly once, map 0's from the winner.
        let seen = reduce(&m, shuffle_id, vec![s0.clone(), s_map1]).await;
        assert_eq!(seen.len() as i64, 2 * ROWS_PER_MAP, "{backend:?}");
        for (id, attempts) in &seen {
            let want = if *id < 1_000_000 { winner } else { 0 };
            assert_eq!(
                attempts,
                &vec![i64::from(want)],
                "{backend:?}: row {id} read {} times",
                attempts.len()
            );
        }
        m.cleanup_app().await.expect("cleanup");
        assert!(list(&m, &m.layout().app_prefix()).await.is_empty());
    }
}

/// 7. Two attempts of one map task racing, on local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_map_attempts_commit_once_local() {
    duplicate_attempts(Backend::Local).await;
}

/// 7. Two attempts of one map task racing, on S3 (with 5% injected faults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_map_attempts_commit_once_s3() {
    duplicate_attempts(Backend::S3).await;
}

/// What the stage hook damaged: object (as the store names it) and partition.
type Damage = Arc<Mutex<Option<(String, u32)>>>;

/// How a committed data object is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Harm {
    /// One byte flipped in the middle of the first non-empty partition.
    Flip,
    /// Cut in the middle of the last non-empty partition (so only that
    /// partition's readers fail, and they name it).
    Truncate,
}

/// After the first map stage with output, damages (`harm`) one of its
/// committed data objects once.
fn damage_once(session: &Session, m: &StoreShuffleManager, harm: Harm) -> Damage {
    let damage: Damage = Arc::new(Mutex::new(None));
    let (d, m) = (Arc::clone(&damage), m.clone());
    session.set_stage_hook(Some(Arc::new(move |ev: &StageEvent| {
        let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_some() {
            return;
        }
        let Some(st) = ev.statuses.iter().find(|s| s.total_bytes() > 0) else {
            return;
        };
        let non_empty = |(_, l): &(usize, &u64)| **l > 0;
        let p = match harm {
            Harm::Flip => st.lengths.iter().enumerate().find(non_empty),
            Harm::Truncate => st.lengths.iter().enumerate().rfind(non_empty),
        }
        .expect("non-empty")
        .0 as u32;
        let range = st.byte_range(p..p + 1);
        let offset = (range.start + (range.end - range.start) / 2) as usize;
        let store = Arc::clone(m.store());
        let loc = st.location.clone();
        // The hook is synchronous; the store is not.
        let described = store.describe(&loc);
        wait_in_hook(async move {
            let mut bytes = store.get(&loc).await.expect("get data object").to_vec();
            match harm {
                Harm::Flip => bytes[offset] ^= 0x5a,
                Harm::Truncate => bytes.truncate(offset),
            }
            store
                .put(&loc, Bytes::from(bytes))
                .await
                .expect("put damaged data object");
        });
        *d = Some((described, p));
    })));
    damage
}

async fn corruption_is_repaired(backend: Backend, harm: Harm) {
    let data = tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation");
    let (m, _dir, _s3) = manager(backend, "corrupt", 2 << 30).await;
    let session = Session::new(
        engine_config(None),
        Arc::new(m.clone()) as Arc<dyn ShuffleManager>,
    );
    let damage = damage_once(&session, &m, harm);
    let (csv, summary) = run_q80(&session, &data)
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: q80 with a {harm:?} map output failed: {e}"));
    let (object, partition) = damage
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("the hook damaged an object");
    assert_golden(&csv, &format!("{backend:?}, {harm:?} map output"));
    assert!(
        summary.tasks_recomputed >= 1,
        "{backend:?}: no map task was recomputed: {}",
        summary.to_json()
    );
    let what = match harm {
        Harm::Flip => "checksum mismatch",
        Harm::Truncate => "truncated",
    };
    let reported = summary.retry_reasons.iter().any(|r| match r {
        RetryReason::FetchFailure { error, .. } => {
            error.contains(what)
                && error.contains(&object)
                && error.contains(&format!("partition {partition}"))
        }
        _ => false,
    });
    assert!(
        reported,
        "{backend:?}: no fetch failure says {what} in {object} partition {partition}: {:?}",
        summary.retry_reasons
    );
    m.cleanup_app().await.expect("cleanup");
}

/// 8. A flipped byte in a committed data object, on local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_map_output_is_recomputed_local() {
    corruption_is_repaired(Backend::Local, Harm::Flip).await;
}

/// 8. A flipped byte in a committed data object, on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_map_output_is_recomputed_s3() {
    corruption_is_repaired(Backend::S3, Harm::Flip).await;
}

/// 8. A committed data object cut short in a partition, on local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_map_output_is_recomputed_local() {
    corruption_is_repaired(Backend::Local, Harm::Truncate).await;
}

/// 8. A committed data object cut short in a partition, on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_map_output_is_recomputed_s3() {
    corruption_is_repaired(Backend::S3, Harm::Truncate).await;
}
