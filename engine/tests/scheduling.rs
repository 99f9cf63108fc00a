//! The scheduler keeps I/O off the critical path: stages start by
//! dependencies, map tasks give their CPU slot back before their upload,
//! reduce partitions are coalesced from committed bytes, broadcast tables
//! are built once per stage and executor, and scan splits do not follow
//! `engine.parallelism`. Every check observes hooks, plans or counters,
//! never the clock.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use engine::physical::ExecutionPlan;
use engine::scheduler::{StageEvent, TaskEvent};
use engine::{col, count_star, sum, DataFrame, EngineConfig, JobSummary, JoinType, Session};
use shuffle_core::{ShuffleConfig, ShuffleManager};

/// A session on the embedded S3 server, every request delayed by `latency`.
async fn s3_session(
    config: EngineConfig,
    latency: Duration,
) -> (Session, shuffle_s3::EmbeddedS3, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let shuffle = ShuffleConfig::from_pairs([("local.dirs", dir.path().display().to_string())])
        .expect("shuffle config");
    let server = shuffle_s3::EmbeddedS3::start_temp()
        .await
        .expect("embedded s3");
    let s3 = shuffle_s3::S3ShuffleBuilder::new(shuffle)
        .s3_config(server.config("scheduling").expect("s3 config"))
        .build()
        .await
        .expect("s3 manager");
    server.set_latency(latency);
    let session = Session::new(config, Arc::new(s3.manager) as Arc<dyn ShuffleManager>);
    (session, server, dir)
}

fn rows_a(n: i64, keys: i64) -> Vec<RowA> {
    (0..n)
        .map(|i| {
            (
                Some(i % keys),
                Some(format!("k{}", i % 7)),
                Some(i),
                Some(i as i128),
            )
        })
        .collect()
}

fn rows_b(n: i64, keys: i64) -> Vec<RowB> {
    (0..n)
        .map(|i| (Some(i % keys), Some(format!("b{}", i % 5)), Some(i * 3)))
        .collect()
}

/// `a` (in `chunks` batches) inner-joined with `b` on `a_key = b_key`.
fn join_a_b(session: &Session, a: (&[RowA], usize), b: (&[RowB], usize)) -> DataFrame {
    let ta = session
        .read_batches(schema_a(), batches_a(a.0, a.1))
        .expect("a");
    let tb = session
        .read_batches(schema_b(), batches_b(b.0, b.1))
        .expect("b");
    ta.join(&tb, JoinType::Inner, &["a_key"], &["b_key"])
        .expect("join")
}

/// Stage levels of a plan: 0 for stages that read no shuffle, else one more
/// than the deepest stage they read.
fn levels(session: &Session, df: &DataFrame) -> Vec<usize> {
    let plan = session.plan_job(df.logical_plan()).expect("plan");
    let by_shuffle: HashMap<u32, usize> = plan
        .stages
        .iter()
        .map(|s| (s.shuffle_id, s.stage_id))
        .collect();
    fn reads(p: &dyn ExecutionPlan, out: &mut Vec<u32>) {
        out.extend(p.shuffle_reads());
        for c in p.children() {
            reads(c.as_ref(), out);
        }
    }
    let mut level = vec![0usize; plan.stages.len()];
    for s in &plan.stages {
        let mut r = Vec::new();
        reads(s.plan.as_ref(), &mut r);
        level[s.stage_id] = r
            .iter()
            .filter_map(|sh| by_shuffle.get(sh))
            .map(|d| level[*d] + 1)
            .max()
            .unwrap_or(0);
    }
    level
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Start(usize),
    Done(usize),
}

/// A stage whose inputs are committed starts while a stage of an earlier
/// level (an unrelated branch) still runs: no barrier per level. Branch A
/// is one scan task; branch B is eight, and its uploads queue behind one
/// upload permit on a slow S3, so B's first stage is still committing when
/// A's second stage starts. With waves, that second stage would wait for B.
#[test]
fn a_stage_starts_when_its_inputs_are_done_not_when_its_level_is() {
    runtime().block_on(async {
        let config = EngineConfig {
            shuffle_partitions: 2,
            parallelism: 1,
            scan_partitions: Some(1),
            broadcast_threshold: 0,
            io_requests_in_flight: 1,
            ..Default::default()
        };
        let (session, _s3, _dir) = s3_session(config, Duration::from_millis(40)).await;
        let a = rows_a(200, 13);
        let b = rows_b(400, 13);
        let ta = session
            .read_batches(schema_a(), batches_a(&a, 1))
            .expect("a");
        let mut tb = session
            .read_batches(schema_b(), batches_b(&b[..50], 1))
            .expect("b");
        for chunk in b[50..].chunks(50) {
            let more = session
                .read_batches(schema_b(), batches_b(chunk, 1))
                .expect("b");
            tb = tb.union_all(&more).expect("union");
        }
        // A: scan → repartition → aggregate; B: 8 scans → repartition → aggregate.
        let left = ta
            .repartition_by(vec![col("a_key")], 2)
            .expect("repartition a")
            .aggregate(vec![col("a_key")], vec![count_star().alias("na")])
            .expect("agg a");
        let right = tb
            .repartition_by(vec![col("b_key")], 2)
            .expect("repartition b")
            .aggregate(vec![col("b_key")], vec![sum(col("b_val")).alias("sb")])
            .expect("agg b");
        let df = left
            .join(&right, JoinType::Left, &["a_key"], &["b_key"])
            .expect("join");
        let level = levels(&session, &df);
        let events: Arc<Mutex<Vec<Ev>>> = Arc::default();
        let e = Arc::clone(&events);
        session.set_task_hook(Some(Arc::new(move |ev: &TaskEvent| {
            e.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Ev::Start(ev.stage_id));
        })));
        let e = Arc::clone(&events);
        session.set_stage_hook(Some(Arc::new(move |ev: &StageEvent| {
            e.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Ev::Done(ev.stage_id));
        })));
        let (batches, _) = df.collect_with_summary().await.expect("job");
        session.set_task_hook(None);
        session.set_stage_hook(None);
        assert_eq!(rows(&batches).len(), 13);
        let events = events.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let first_start = |s: usize| events.iter().position(|e| *e == Ev::Start(s));
        let done_at = |s: usize| events.iter().position(|e| *e == Ev::Done(s));
        let early: Vec<(usize, usize)> = (0..level.len())
            .flat_map(|s| (0..level.len()).map(move |t| (s, t)))
            .filter(|(s, t)| level[*s] > level[*t])
            .filter(|(s, t)| match (first_start(*s), done_at(*t)) {
                (Some(a), Some(b)) => a < b,
                _ => false,
            })
            .collect();
        assert!(
            !early.is_empty(),
            "every stage waited for the whole previous level (levels {level:?}): {events:?}"
        );
    });
}

/// With one slot, a map task hands it back once its output is buffered: the
/// second map task starts computing while the first one's upload to a slow
/// S3 is still pending (its output not yet committed).
#[test]
fn a_map_task_gives_its_slot_back_before_its_upload_completes() {
    runtime().block_on(async {
        let config = EngineConfig {
            shuffle_partitions: 2,
            parallelism: 1,
            scan_partitions: Some(2),
            ..Default::default()
        };
        let (session, _s3, _dir) = s3_session(config, Duration::from_millis(300)).await;
        let a = rows_a(100, 10);
        let df = session
            .read_batches(schema_a(), batches_a(&a, 2))
            .expect("a")
            .repartition_by(vec![col("a_key")], 2)
            .expect("repartition");
        // Whether map 0 was committed when map 1 of the same stage started.
        let seen: Arc<Mutex<Option<bool>>> = Arc::default();
        let (s, tracker) = (Arc::clone(&seen), Arc::clone(session.map_output_tracker()));
        session.set_task_hook(Some(Arc::new(move |ev: &TaskEvent| {
            if let (Some(shuffle), 1, 0) = (ev.shuffle_id, ev.partition, ev.attempt) {
                *s.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(tracker.attempt_of(shuffle, 0).is_some());
            }
        })));
        let (batches, summary) = df.collect_with_summary().await.expect("job");
        session.set_task_hook(None);
        assert_eq!(rows(&batches).len(), 100);
        let committed = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expect("map 1 ran");
        assert!(
            !committed,
            "map 1 waited for map 0's upload: the slot was held during I/O"
        );
        // The stage still ended only when both outputs were committed.
        assert_eq!(summary.tasks_run, 3, "{}", summary.to_json());
    });
}

/// The stage that reads `partitions` shuffle partitions.
fn reader_stage(summary: &JobSummary, partitions: usize) -> &engine::StageSummary {
    summary
        .stages
        .iter()
        .find(|s| s.partitions == partitions && s.description.contains("ShuffleRead"))
        .unwrap_or_else(|| {
            panic!(
                "no stage reads {partitions} partitions: {}",
                summary.to_json()
            )
        })
}

/// A tiny stage over 24 partitions runs as few tasks as there are slots; a
/// stage with much more data than the target keeps its partitions.
#[test]
fn reduce_partitions_are_coalesced_from_committed_bytes() {
    runtime().block_on(async {
        let a = rows_a(3000, 500);
        // 256 bytes is less than any partition here holds: nothing merges.
        for (target, big) in [(32usize << 20, false), (256, true)] {
            let t = session(
                Backend::Local,
                EngineConfig {
                    shuffle_partitions: 24,
                    parallelism: 2,
                    scan_partitions: Some(2),
                    coalesce_target: target,
                    ..Default::default()
                },
            )
            .await;
            let df = t
                .session
                .read_batches(schema_a(), batches_a(&a, 4))
                .expect("a")
                .aggregate(vec![col("a_key")], vec![sum(col("a_val")).alias("s")])
                .expect("agg");
            let (batches, summary) = df.collect_with_summary().await.expect("job");
            assert_eq!(rows(&batches).len(), 500);
            let st = reader_stage(&summary, 24);
            if big {
                assert!(
                    st.num_tasks >= 16,
                    "{} tasks: {}",
                    st.num_tasks,
                    summary.to_json()
                );
            } else {
                assert!(
                    (1..=2).contains(&st.num_tasks),
                    "a tiny stage ran {} tasks: {}",
                    st.num_tasks,
                    summary.to_json()
                );
            }
        }
    });
}

/// Both sides of a shuffled join are coalesced with the same ranges, even
/// when their bytes sit in different partitions: the answer matches the
/// reference and the run without coalescing, on both backends.
#[test]
fn both_join_sides_get_the_same_ranges_and_answers_do_not_change() {
    runtime().block_on(async {
        // A's rows crowd a few keys, B's spread over all: per-side byte
        // counts differ, so ranges computed per side would differ too.
        let a: Vec<RowA> = (0..3000)
            .map(|i| {
                let key = if i % 10 == 0 { i % 200 } else { i % 3 };
                (Some(key), Some(format!("k{}", i % 7)), Some(i), None)
            })
            .collect();
        let b = rows_b(1500, 200);
        let mut want: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        for ra in &a {
            for rb in b.iter().filter(|rb| rb.0 == ra.0) {
                let e = want
                    .entry((rb.0.unwrap_or_default(), rb.1.clone().unwrap_or_default()))
                    .or_default();
                e.0 += 1;
                e.1 += rb.2.unwrap_or_default();
            }
        }
        let want: Vec<Row> = want
            .into_iter()
            .map(|((k, s), (n, v))| vec![V::I(k), V::S(s), V::I(n), V::I(v)])
            .collect();
        for backend in [Backend::Local, Backend::S3] {
            let mut answers = Vec::new();
            for target in [8usize << 10, 0] {
                let t = session(
                    backend,
                    EngineConfig {
                        shuffle_partitions: 16,
                        parallelism: 2,
                        scan_partitions: Some(3),
                        broadcast_threshold: 0,
                        coalesce_target: target,
                        ..Default::default()
                    },
                )
                .await;
                let df = join_a_b(&t.session, (&a, 3), (&b, 3))
                    .aggregate(
                        vec![col("b_key"), col("b_k2")],
                        vec![count_star().alias("n"), sum(col("b_val")).alias("v")],
                    )
                    .expect("agg");
                let (batches, summary) = df.collect_with_summary().await.expect("job");
                let join = reader_stage(&summary, 16);
                if target > 0 {
                    assert!(
                        join.num_tasks < 16 && join.num_tasks >= 2,
                        "{backend:?}: join stage ran {} tasks: {}",
                        join.num_tasks,
                        summary.to_json()
                    );
                } else {
                    assert_eq!(join.num_tasks, 16, "{backend:?}: coalescing off");
                }
                answers.push(sorted(rows(&batches)));
            }
            assert_eq!(
                answers[0], answers[1],
                "{backend:?}: coalescing changed the answer"
            );
            assert_eq!(answers[0], want, "{backend:?}: wrong answer");
        }
    });
}

/// A union of two shuffled aggregates coalesces each input on its own (as
/// q80's channel union does): its stage runs a few tasks, not one per
/// partition of every input, no task's range spans both inputs, and the
/// answer is the same as without coalescing, on both backends.
#[test]
fn a_union_of_shuffle_reads_coalesces_each_input() {
    runtime().block_on(async {
        let a = rows_a(3000, 300);
        let b = rows_b(2000, 200);
        let mut want: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &a {
            *want.entry(r.0.unwrap_or_default()).or_default() += r.2.unwrap_or_default();
        }
        for r in &b {
            *want.entry(r.0.unwrap_or_default()).or_default() += r.2.unwrap_or_default();
        }
        let want: Vec<Row> = want
            .into_iter()
            .map(|(k, v)| vec![V::I(k), V::I(v)])
            .collect();
        for backend in [Backend::Local, Backend::S3] {
            let mut answers = Vec::new();
            for target in [32usize << 20, 0] {
                let t = session(
                    backend,
                    EngineConfig {
                        shuffle_partitions: 24,
                        parallelism: 2,
                        scan_partitions: Some(2),
                        broadcast_threshold: 0,
                        coalesce_target: target,
                        ..Default::default()
                    },
                )
                .await;
                let sa = t
                    .session
                    .read_batches(schema_a(), batches_a(&a, 2))
                    .expect("a")
                    .aggregate(vec![col("a_key")], vec![sum(col("a_val")).alias("s")])
                    .expect("agg a");
                let sb = t
                    .session
                    .read_batches(schema_b(), batches_b(&b, 2))
                    .expect("b")
                    .aggregate(vec![col("b_key")], vec![sum(col("b_val")).alias("s")])
                    .expect("agg b");
                let df = sa
                    .union_all(&sb)
                    .expect("union")
                    .aggregate(vec![col("a_key")], vec![sum(col("s")).alias("s")])
                    .expect("agg union");
                let (batches, summary) = df.collect_with_summary().await.expect("job");
                let union = summary
                    .stages
                    .iter()
                    .find(|s| s.description.contains("Union"))
                    .unwrap_or_else(|| panic!("no union stage: {}", summary.to_json()));
                assert_eq!(union.partitions, 48, "two inputs of 24 partitions");
                if target > 0 {
                    // Two slots: two ranges per input.
                    assert_eq!(
                        union.num_tasks,
                        4,
                        "{backend:?}: union stage ran {} tasks: {}",
                        union.num_tasks,
                        summary.to_json()
                    );
                } else {
                    assert_eq!(union.num_tasks, 48, "{backend:?}: coalescing off");
                }
                answers.push(sorted(rows(&batches)));
            }
            assert_eq!(
                answers[0], answers[1],
                "{backend:?}: coalescing the union changed the answer"
            );
            assert_eq!(answers[0], want, "{backend:?}: wrong answer");
        }
    });
}

/// A broadcast join's table is built once per stage and executor, however
/// many tasks the stage runs there.
#[test]
fn broadcast_tables_are_built_once_per_stage_and_executor() {
    runtime().block_on(async {
        let a = rows_a(4000, 50);
        let b = rows_b(50, 50);
        for executors in [1usize, 2] {
            let t = session(
                Backend::Local,
                EngineConfig {
                    scan_partitions: Some(8),
                    parallelism: 2,
                    executors,
                    ..Default::default()
                },
            )
            .await;
            let df = join_a_b(&t.session, (&a, 8), (&b, 1))
                .aggregate(vec![col("b_k2")], vec![count_star().alias("n")])
                .expect("agg");
            assert!(
                df.explain().expect("explain").contains("Broadcast"),
                "the join should broadcast"
            );
            let (batches, summary) = df.collect_with_summary().await.expect("job");
            let n: i64 = rows(&batches)
                .iter()
                .map(|r| match r[1] {
                    V::I(n) => n,
                    _ => 0,
                })
                .sum();
            assert_eq!(n, 4000, "every row of a matches one row of b");
            let probe = summary
                .stages
                .iter()
                .find(|s| s.description.contains("HashJoin"))
                .expect("join stage");
            assert_eq!(probe.num_tasks, 8);
            assert_eq!(
                summary.broadcast_builds, executors as u64,
                "{} builds for 8 tasks on {executors} executor(s)",
                summary.broadcast_builds
            );
        }
    });
}

/// `scan.partitions` has its own default: raising `engine.parallelism`
/// does not split the data into more scan tasks.
#[test]
fn scan_partitions_do_not_follow_parallelism() {
    runtime().block_on(async {
        let a = rows_a(1000, 10);
        let mut splits = Vec::new();
        for parallelism in [1usize, 32] {
            let config = EngineConfig {
                parallelism,
                ..Default::default()
            };
            assert_eq!(
                config.scan_partitions(),
                EngineConfig::default().scan_partitions()
            );
            let t = session(Backend::Local, config).await;
            let df = t
                .session
                .read_batches(schema_a(), batches_a(&a, 40))
                .expect("a")
                .repartition(4)
                .expect("repartition");
            let plan = t.session.plan_job(df.logical_plan()).expect("plan");
            splits.push(plan.stages[0].plan.output_partitions());
        }
        assert_eq!(splits[0], splits[1], "scan splits followed --parallelism");
    });
}

/// A task's shuffle reads start before it has a CPU slot. With one slot and
/// two reduce tasks, each task's first read is held back until the other
/// task's first read has reached the store: without prefetch the task
/// holding the slot would wait for a read that cannot start, and the held
/// read fails after the grace period, failing the job.
#[test]
fn reads_start_before_the_task_has_a_slot() {
    use shuffle_core::testing::{CountingStore, GetGate};
    use shuffle_core::{ShuffleStore, StoreShuffleManager};

    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let shuffle = ShuffleConfig::from_pairs([("local.dirs", dir.path().display().to_string())])
            .expect("shuffle config");
        let local = shuffle_local::local_manager(shuffle.clone()).expect("local manager");
        // Reads at offset 0 are partition 0's, later ones partition 1's
        // (every map output holds both: 10 keys over 100 rows).
        let (tx, rx) = tokio::sync::watch::channel([false, false]);
        let gate: GetGate = Arc::new(move |key, range| {
            let (tx, mut rx) = (tx.clone(), rx.clone());
            let shuffle_data = key.path.contains("/shuffle-");
            let me = usize::from(range.start > 0);
            Box::pin(async move {
                if !shuffle_data {
                    return Ok(());
                }
                tx.send_modify(|seen| seen[me] = true);
                let other = 1 - me;
                tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s[other]))
                    .await
                    .map(|_| ())
                    .map_err(|_| {
                        shuffle_core::Error::Protocol(format!(
                            "the read of partition {me} waited 30 s for partition {other}'s \
                             task to start reading: reads wait for a slot"
                        ))
                    })
            })
        });
        let store: Arc<dyn ShuffleStore> =
            Arc::new(CountingStore::new(Arc::clone(local.store())).with_get_gate(gate));
        let manager = StoreShuffleManager::builder(store, shuffle).build();
        let config = EngineConfig {
            shuffle_partitions: 2,
            parallelism: 1,
            scan_partitions: Some(2),
            coalesce_target: 0,
            max_task_attempts: 1,
            ..Default::default()
        };
        let session = Session::new(config, Arc::new(manager) as Arc<dyn ShuffleManager>);
        let a = rows_a(100, 10);
        let df = session
            .read_batches(schema_a(), batches_a(&a, 2))
            .expect("a")
            .repartition_by(vec![col("a_key")], 2)
            .expect("repartition");
        let (batches, summary) = df.collect_with_summary().await.expect("job");
        assert_eq!(rows(&batches).len(), 100);
        assert_eq!(summary.tasks_retried, 0, "{}", summary.to_json());
    });
}
