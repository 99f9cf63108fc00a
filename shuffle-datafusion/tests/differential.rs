//! Differential property test: random small tables, and fixed plus random
//! join / aggregate / window (repartition) queries, give the same rows on
//! plain DataFusion and on DataFusion + Shovel, over the local backend and
//! over S3 (the embedded server on 127.0.0.1); the Shovel plans really
//! exchange through Shovel, and their metrics add up.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::catalog::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::{collect, displayable, ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shuffle_core::{ShuffleConfig, ShuffleManager};
use shuffle_datafusion::{ShovelBuilder, ShovelExchangeExec};
use shuffle_s3::EmbeddedS3;

mod common;
use common::{local_manager, s3_manager};

const QUERIES: &[&str] = &[
    "SELECT g, count(*) AS n, sum(v) AS s, min(k) AS lo FROM t1 GROUP BY g",
    "SELECT t1.k, count(*) AS n, sum(t2.w) AS s FROM t1 JOIN t2 ON t1.k = t2.k GROUP BY t1.k",
    "SELECT t1.g, t1.v, t2.w FROM t1 LEFT JOIN t2 ON t1.k = t2.k AND t1.v < t2.w",
    "SELECT t2.k, t2.w, t1.g FROM t1 RIGHT JOIN t2 ON t1.k = t2.k AND t1.g = t2.h",
    "SELECT v, count(DISTINCT g) AS d, count(DISTINCT k) AS e FROM t1 GROUP BY v",
    "SELECT k, max(v) AS m FROM t1 GROUP BY k HAVING count(*) > 1",
    "SELECT h, k, count(*) AS n FROM t2 WHERE k IN (SELECT k FROM t1 WHERE v > 0) GROUP BY h, k",
];

/// Random queries per seed, on top of [`QUERIES`].
const RANDOM_QUERIES: usize = 6;

/// A random query over `t1(k, g, v)` and `t2(k, h, w)` from a small grammar
/// whose every shape DataFusion plans with hash repartitions: a grouped
/// aggregate, an inner / outer join (projected or aggregated), or a window
/// partitioned by a key. Integer aggregates only, so the answer does not
/// depend on the order rows are added in.
fn random_query(rng: &mut StdRng) -> String {
    fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
        from[rng.gen_range(0..from.len())]
    }
    let filter = |rng: &mut StdRng, col: &str| match rng.gen_range(0..3) {
        0 => String::new(),
        1 => format!(" WHERE {col} > {}", rng.gen_range(-100..100)),
        _ => format!(" WHERE {col} IS NOT NULL"),
    };
    const AGGS: &[&str] = &[
        "count(*)",
        "count(v)",
        "sum(v)",
        "min(k)",
        "max(v)",
        "count(DISTINCT g)",
    ];
    match rng.gen_range(0..3) {
        0 => {
            let mut keys: Vec<&str> = ["k", "g", "v"]
                .into_iter()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            if keys.is_empty() {
                keys.push(pick(rng, &["k", "g"]));
            }
            let keys = keys.join(", ");
            let aggs: Vec<String> = (0..rng.gen_range(1..4))
                .map(|i| format!("{} AS a{i}", pick(rng, AGGS)))
                .collect();
            let filter = filter(rng, "v");
            format!(
                "SELECT {keys}, {} FROM t1{filter} GROUP BY {keys}",
                aggs.join(", ")
            )
        }
        1 => {
            let kind = pick(rng, &["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"]);
            let on = pick(rng, &["t1.k = t2.k", "t1.k = t2.k AND t1.g = t2.h"]);
            if rng.gen_bool(0.5) {
                let filter = filter(rng, "t1.v");
                format!("SELECT t1.k, t1.g, t1.v, t2.h, t2.w FROM t1 {kind} t2 ON {on}{filter}")
            } else {
                format!(
                    "SELECT t2.h, count(*) AS n, sum(t1.v) AS s, max(t2.w) AS m \
                     FROM t1 {kind} t2 ON {on} GROUP BY t2.h"
                )
            }
        }
        _ => {
            let by = pick(rng, &["k", "g", "k, g"]);
            let filter = filter(rng, "v");
            format!(
                "SELECT k, g, v, sum(v) OVER (PARTITION BY {by}) AS s, \
                 count(*) OVER (PARTITION BY {by}) AS n FROM t1{filter}"
            )
        }
    }
}

fn t1_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("g", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn t2_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("h", DataType::Utf8, true),
        Field::new("w", DataType::Int64, true),
    ]))
}

/// `parts` partitions of random rows (some empty, keys with nulls and skew).
fn table(rng: &mut StdRng, schema: SchemaRef, parts: usize) -> MemTable {
    let keys = rng.gen_range(1..20);
    let partitions = (0..parts)
        .map(|_| {
            let rows = rng.gen_range(0..120);
            let k: Vec<Option<i64>> = (0..rows)
                .map(|_| (rng.gen_range(0..10) > 0).then(|| rng.gen_range(0..keys)))
                .collect();
            let g: Vec<Option<String>> = (0..rows)
                .map(|_| (rng.gen_range(0..8) > 0).then(|| format!("g{}", rng.gen_range(0..5))))
                .collect();
            let v: Vec<Option<i64>> = (0..rows)
                .map(|_| (rng.gen_range(0..6) > 0).then(|| rng.gen_range(-100..100)))
                .collect();
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(k)),
                Arc::new(StringArray::from(g)),
                Arc::new(Int64Array::from(v)),
            ];
            vec![RecordBatch::try_new(Arc::clone(&schema), cols).expect("batch")]
        })
        .collect();
    MemTable::try_new(schema, partitions).expect("mem table")
}

fn config() -> SessionConfig {
    SessionConfig::new()
        .with_target_partitions(4)
        .set_bool("datafusion.optimizer.repartition_joins", true)
        .set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold",
            0,
        )
        .set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            0,
        )
}

fn plain() -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config())
        .build();
    SessionContext::new_with_state(state)
}

fn shovel(manager: Arc<dyn ShuffleManager>, map_tasks: usize) -> SessionContext {
    let state = ShovelBuilder::new(manager)
        .map_tasks(map_tasks)
        .install(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(config()),
        )
        .expect("install Shovel")
        .build();
    SessionContext::new_with_state(state)
}

async fn register(ctx: &SessionContext, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let parts = rng.gen_range(2..5);
    ctx.register_table("t1", Arc::new(table(&mut rng, t1_schema(), parts)))
        .expect("t1");
    let parts = rng.gen_range(2..5);
    ctx.register_table("t2", Arc::new(table(&mut rng, t2_schema(), parts)))
        .expect("t2");
}

async fn plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The rows of `batches`, one line each, sorted.
fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).expect("format").to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1) // header
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn exchanges(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
    if plan.is::<ShovelExchangeExec>() {
        out.push(Arc::clone(plan));
    }
    for c in plan.children() {
        exchanges(c, out);
    }
}

fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    plan.metrics()
        .and_then(|m| m.sum_by_name(name))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .as_usize()
}

/// Plain DataFusion and DataFusion over `manager` agree on [`QUERIES`] and
/// [`RANDOM_QUERIES`] random queries for each of `seeds`; returns how many
/// queries ran. The seeds take turns at the exchanges' map tasks: one per
/// input partition (0), all inputs in one task (1), and 3 (over the 4
/// input partitions most exchanges have: tasks of 2, 1 and 1 inputs).
async fn same_rows_as_datafusion(
    manager: Arc<dyn ShuffleManager>,
    seeds: std::ops::Range<u64>,
) -> usize {
    let mut ran = 0;
    for seed in seeds {
        let map_tasks = [0, 1, 3][(seed % 3) as usize];
        let (a, b) = (plain(), shovel(Arc::clone(&manager), map_tasks));
        register(&a, seed).await;
        register(&b, seed).await;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let random: Vec<String> = (0..RANDOM_QUERIES)
            .map(|_| random_query(&mut rng))
            .collect();
        let queries = QUERIES
            .iter()
            .copied()
            .chain(random.iter().map(String::as_str));
        for (q, sql) in queries.enumerate() {
            let pa = plan(&a, sql).await;
            let pb = plan(&b, sql).await;
            let plain_shown = displayable(pa.as_ref()).indent(true).to_string();
            let shown = displayable(pb.as_ref()).indent(true).to_string();
            assert!(
                !shown.contains("RepartitionExec: partitioning=Hash"),
                "a hash repartition was left in memory:\n{shown}"
            );
            let mut found = Vec::new();
            exchanges(&pb, &mut found);
            assert_eq!(
                found.is_empty(),
                !plain_shown.contains("RepartitionExec: partitioning=Hash"),
                "seed {seed}: {sql}: every hash repartition, and only those, is a Shovel exchange:\n{plain_shown}\n{shown}"
            );
            let want = collect(pa, a.task_ctx())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let got = collect(Arc::clone(&pb), b.task_ctx())
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {sql}: {e}"));
            assert_eq!(
                sorted_rows(&got),
                sorted_rows(&want),
                "seed {seed}: {sql}\n{shown}"
            );
            for x in &found {
                let written = metric(x, "shuffle_records_written");
                let read = metric(x, "shuffle_records_read");
                // A join whose build side is empty never reads its probe
                // side's partitions; an aggregate reads everything.
                assert!(read <= written, "{sql}: read {read} of {written}");
                if q == 0 {
                    assert_eq!(read, written, "{sql}");
                }
                let output = x.metrics().and_then(|m| m.output_rows());
                assert_eq!(Some(read), output, "{sql}");
                assert_eq!(written > 0, metric(x, "shuffle_bytes_written") > 0, "{sql}");
                // One object per map output with rows; one ranged read at
                // least per map output a reader needed.
                let objects = metric(x, "shuffle_objects_written");
                let inputs = x.children()[0].output_partitioning().partition_count();
                let maps = match map_tasks {
                    0 => inputs,
                    n => n.min(inputs),
                };
                let exchange = x.downcast_ref::<ShovelExchangeExec>().expect("exchange");
                assert_eq!(exchange.map_task_count(), maps, "{sql}");
                assert!(objects <= maps, "{sql}: {objects} objects from {maps} maps");
                assert_eq!(written > 0, objects > 0, "{sql}");
                let requests = metric(x, "shuffle_read_requests");
                assert_eq!(requests > 0, metric(x, "shuffle_bytes_read") > 0, "{sql}");
                let spills = x.metrics().and_then(|m| m.spill_count());
                assert_eq!(spills, Some(0), "{sql}: spilled without a limit");
            }
            ran += 1;
        }
    }
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shovel_exchanges_give_the_same_rows_as_datafusion_on_local_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ran = same_rows_as_datafusion(
        local_manager(dir.path(), ShuffleConfig::default().memory_limit),
        0..12,
    )
    .await;
    assert_eq!(ran, 12 * (QUERIES.len() + RANDOM_QUERIES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shovel_exchanges_give_the_same_rows_as_datafusion_on_s3() {
    let server = EmbeddedS3::start_temp().await.expect("embedded S3");
    let local = tempfile::tempdir().expect("tempdir");
    let manager = s3_manager(&server, local.path(), ShuffleConfig::default().memory_limit).await;
    let ran = same_rows_as_datafusion(Arc::clone(&manager), 100..104).await;
    assert_eq!(ran, 4 * (QUERIES.len() + RANDOM_QUERIES));
    assert!(
        manager.metrics().snapshot().requests.total() > 0,
        "the exchanges went through S3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_shows_shuffle_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = shovel(
        local_manager(dir.path(), ShuffleConfig::default().memory_limit),
        2,
    );
    register(&ctx, 7).await;
    let batches = ctx
        .sql("EXPLAIN ANALYZE SELECT g, count(*) FROM t1 GROUP BY g")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("explain analyze");
    let text = pretty_format_batches(&batches).expect("format").to_string();
    for needle in [
        "ShovelExchangeExec",
        "map_tasks=2",
        "backend=local",
        "shuffle_records_written",
        "shuffle_bytes_read",
        "shuffle_objects_written",
        "shuffle_read_requests",
        "spill_count",
    ] {
        assert!(text.contains(needle), "no {needle} in\n{text}");
    }
}

/// Every file under `dir` whose name says it is a map output object.
fn map_objects(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            map_objects(&path, out);
        } else if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("_map-"))
        {
            out.push(path);
        }
    }
}

/// A Shovel session on local disk under `dir` (`map_tasks` per exchange)
/// with seed 3's tables, and the first exchange of `QUERIES[0]`'s plan.
async fn first_exchange(
    dir: &std::path::Path,
    map_tasks: usize,
) -> (SessionContext, Arc<dyn ExecutionPlan>) {
    let ctx = shovel(
        local_manager(dir, ShuffleConfig::default().memory_limit),
        map_tasks,
    );
    register(&ctx, 3).await;
    let plan = plan(&ctx, QUERIES[0]).await;
    let mut found = Vec::new();
    exchanges(&plan, &mut found);
    (ctx, found.swap_remove(0))
}

/// With one map task, an exchange over several input partitions writes one
/// map output (one file), and its readers still see every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_map_task_writes_one_map_output_for_all_input_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, exchange) = first_exchange(dir.path(), 1).await;
    let exchange = &exchange;
    let inputs = exchange.children()[0]
        .output_partitioning()
        .partition_count();
    assert!(
        inputs >= 2,
        "the exchange must have several inputs: {inputs}"
    );
    let mut rows = 0;
    for p in 0..exchange.output_partitioning().partition_count() {
        let batches: Vec<_> = exchange
            .execute(p, ctx.task_ctx())
            .expect("execute")
            .try_collect()
            .await
            .expect("read");
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    let mut objects = Vec::new();
    map_objects(dir.path(), &mut objects);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(rows, metric(exchange, "shuffle_records_written"));
    let input_rows: usize = collect(Arc::clone(exchange.children()[0]), ctx.task_ctx())
        .await
        .expect("input")
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, input_rows, "every input row is read back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_map_output_fails_the_query_naming_shuffle_map_and_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, exchange) = first_exchange(dir.path(), 0).await;
    let exchange = &exchange;
    // Reading partition 0 runs the map stage: every map output is committed.
    exchange
        .execute(0, ctx.task_ctx())
        .expect("execute")
        .try_collect::<Vec<_>>()
        .await
        .expect("partition 0 before the damage");
    let mut objects = Vec::new();
    map_objects(dir.path(), &mut objects);
    assert!(!objects.is_empty(), "no map output under {:?}", dir.path());
    for path in &objects {
        let bytes: Vec<u8> = std::fs::read(path)
            .expect("read")
            .iter()
            .map(|b| !b)
            .collect();
        std::fs::write(path, bytes).expect("write");
    }
    let mut errors = Vec::new();
    for p in 1..exchange.output_partitioning().partition_count() {
        let read = exchange
            .execute(p, ctx.task_ctx())
            .expect("execute")
            .try_collect::<Vec<_>>()
            .await;
        if let Err(e) = read {
            errors.push(e.to_string());
        }
    }
    assert!(!errors.is_empty(), "reading damaged map outputs succeeded");
    for e in &errors {
        assert!(e.contains("Shovel exchange: reading partition"), "{e}");
        assert!(e.contains("fetch of shuffle 0 map"), "{e}");
        assert!(e.contains("shuffle-0_map-"), "the object is not named: {e}");
    }
}
