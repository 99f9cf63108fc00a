//! DataFusion's spill files and memory through Shovel: a spill file written
//! through [`ShovelTempFiles`] with `spill.to_s3` ends up as an object in S3
//! (the embedded server on 127.0.0.1) with no local copy left, reads back
//! byte for byte (twice), and is deleted with its last reference; a sort
//! that spills under a small `memory.limit` gives the rows of an unlimited
//! run; DataFusion's reservations show in Shovel's pool; a limit too small
//! for an operator that cannot spill fails the query as DataFusion does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::execution::{SessionStateBuilder, TempFileFactory};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shuffle_core::ShuffleManager;
use shuffle_datafusion::{ShovelBuilder, ShovelExchangeExec};
use shuffle_s3::EmbeddedS3;

mod common;
use common::{local_manager, s3_manager};

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Spill objects the embedded server holds.
fn spill_objects(server: &EmbeddedS3) -> Vec<PathBuf> {
    files_under(server.root())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("spill-"))
        })
        .collect()
}

/// Deleting a dropped spill object runs in a task: give it time to finish.
async fn until_no_spill_objects(server: &EmbeddedS3) -> Vec<PathBuf> {
    for _ in 0..400 {
        if spill_objects(server).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    spill_objects(server)
}

/// Memory still reserved once the tasks of a finished (or failed) query,
/// which stop asynchronously, have let go.
async fn until_pool_empty(manager: &Arc<dyn ShuffleManager>) -> usize {
    for _ in 0..400 {
        if manager.memory_pool().used() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    manager.memory_pool().used()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_file_goes_to_s3_reads_back_and_is_deleted() {
    let server = EmbeddedS3::start_temp().await.expect("embedded S3");
    let (local, staging) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let manager = s3_manager(&server, local.path(), 1 << 30).await;
    let files = ShovelBuilder::new(Arc::clone(&manager))
        .spill_dir(staging.path())
        .temp_files();
    assert!(files.uploads(), "spill.to_s3 must upload");

    // Three 1 MiB frames and a short one.
    let data: Vec<u8> = (0..3_300_000u32).map(|i| (i % 251) as u8).collect();
    let file = files.create_temp_file("a test spill").expect("create");
    let mut writer = file.open_writer().expect("open writer");
    for chunk in data.chunks(70_000) {
        writer.write_all(chunk).expect("write");
    }
    writer.finish().expect("finish");
    assert_eq!(file.size(), Some(data.len() as u64));

    for pass in 0..2 {
        let read: Vec<Bytes> = file
            .read_stream()
            .expect("read stream")
            .try_collect()
            .await
            .expect("read back");
        assert!(read.concat() == data, "pass {pass}: bytes differ");
    }
    assert_eq!(spill_objects(&server).len(), 1, "one spill object in S3");
    assert_eq!(
        files_under(staging.path()),
        Vec::<PathBuf>::new(),
        "the local copy must be gone after the upload"
    );
    let spill = manager.metrics().snapshot().shuffle;
    assert_eq!(spill.spill_count, 1);
    assert!(spill.spill_bytes > 0 && spill.spill_read_bytes >= 2 * spill.spill_bytes);

    drop(writer);
    drop(file);
    assert_eq!(until_no_spill_objects(&server).await, Vec::<PathBuf>::new());
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("s", DataType::Utf8, false),
    ]))
}

/// `parts` partitions of `rows` random rows each, in 8192-row batches.
fn table(parts: usize, rows: usize) -> Arc<MemTable> {
    let mut rng = StdRng::seed_from_u64(80);
    let partitions = (0..parts)
        .map(|_| {
            (0..rows.div_ceil(8192))
                .map(|_| {
                    let k: Vec<i64> = (0..8192).map(|_| rng.gen_range(0..1_000_000)).collect();
                    let s: Vec<String> = k.iter().map(|k| format!("value-{}", k % 977)).collect();
                    let cols: Vec<ArrayRef> = vec![
                        Arc::new(Int64Array::from(k)),
                        Arc::new(StringArray::from(s)),
                    ];
                    RecordBatch::try_new(schema(), cols).expect("batch")
                })
                .collect()
        })
        .collect();
    Arc::new(MemTable::try_new(schema(), partitions).expect("mem table"))
}

fn config() -> SessionConfig {
    SessionConfig::new()
        .with_target_partitions(2)
        // The merge reservation a sort takes up front (10 MiB by default,
        // more than these tests' limit).
        .set_usize("datafusion.execution.sort_spill_reservation_bytes", 1 << 20)
}

fn shovel_ctx(builder: ShovelBuilder) -> SessionContext {
    shovel_ctx_with(builder, config())
}

fn shovel_ctx_with(builder: ShovelBuilder, config: SessionConfig) -> SessionContext {
    let state = builder
        .install(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(config),
        )
        .expect("install Shovel")
        .build();
    SessionContext::new_with_state(state)
}

async fn rows(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<RecordBatch> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(concat_batches(&schema_of(&batches), &batches)?)
}

fn schema_of(batches: &[RecordBatch]) -> SchemaRef {
    batches.first().map(|b| b.schema()).unwrap_or_else(schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_that_spills_to_s3_gives_the_same_rows_and_leaves_no_local_file() {
    let server = EmbeddedS3::start_temp().await.expect("embedded S3");
    let (local, staging) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    // ~20 MiB of rows sorted under an 8 MiB memory.limit, in one partition:
    // two sorts side by side under so tight a limit make DataFusion's
    // external sort fail now and then (with its own FairSpillPool as well).
    let manager = s3_manager(&server, local.path(), 8 << 20).await;
    let t = table(1, 600_000);
    let sql = "SELECT k, s FROM t ORDER BY k, s";

    let config = config().with_target_partitions(1);
    let plain = SessionContext::new_with_config(config.clone());
    plain.register_table("t", t.clone()).expect("t");
    let want = rows(&plain, sql).await.expect("plain DataFusion");

    let ctx = shovel_ctx_with(
        ShovelBuilder::new(Arc::clone(&manager)).spill_dir(staging.path()),
        config,
    );
    ctx.register_table("t", t).expect("t");
    let before = manager.metrics().snapshot().shuffle;
    let got = rows(&ctx, sql).await.expect("DataFusion + Shovel");
    assert_eq!(got.num_rows(), want.num_rows());
    assert!(got == want, "rows differ from the un-spilled run");

    let after = manager.metrics().snapshot().shuffle;
    assert!(
        after.spill_count > before.spill_count,
        "the sort did not spill through Shovel"
    );
    assert!(
        after.spill_read_bytes > before.spill_read_bytes,
        "spills read back from S3"
    );
    assert_eq!(
        files_under(staging.path()),
        Vec::<PathBuf>::new(),
        "DataFusion spill files left in the local spill directory"
    );
    assert!(
        manager.memory_pool().peak() > 0,
        "the sort's reservations were not in Shovel's pool"
    );
    drop(ctx);
    assert_eq!(until_no_spill_objects(&server).await, Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datafusion_reservations_are_in_shovels_pool() {
    let sql = "SELECT k % 1000 AS g, count(*) AS n, sum(k) AS total FROM t GROUP BY g ORDER BY g";
    let t = table(2, 100_000);
    let mut peaks = Vec::new();
    let mut answers = Vec::new();
    // Exchanges off: only DataFusion's own operators reserve memory.
    for shared in [false, true] {
        let dir = tempfile::tempdir().expect("dir");
        let manager = local_manager(dir.path(), 1 << 30);
        let ctx = shovel_ctx(
            ShovelBuilder::new(Arc::clone(&manager))
                .exchange(false)
                .shared_memory(shared),
        );
        ctx.register_table("t", t.clone()).expect("t");
        answers.push(rows(&ctx, sql).await.expect("aggregate"));
        peaks.push(manager.memory_pool().peak());
        drop(ctx);
        assert_eq!(
            until_pool_empty(&manager).await,
            0,
            "reservations not given back"
        );
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(peaks[0], 0, "nothing else reserves from the pool here");
    assert!(
        peaks[1] > 0,
        "DataFusion's reservations are not in Shovel's pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_too_small_fails_as_datafusion_does() {
    let dir = tempfile::tempdir().expect("dir");
    // A hash join's build side cannot spill: 64 KiB cannot hold it.
    let manager = local_manager(dir.path(), 64 << 10);
    let ctx = shovel_ctx(ShovelBuilder::new(Arc::clone(&manager)).exchange(false));
    ctx.register_table("t", table(2, 50_000)).expect("t");
    let e = rows(&ctx, "SELECT count(*) FROM t a JOIN t b ON a.k = b.k")
        .await
        .expect_err("a join over a 64 KiB limit must fail")
        .to_string();
    assert!(e.contains("Resources exhausted"), "{e}");
    assert!(e.contains("memory.limit"), "{e}");
    drop(ctx);
    assert_eq!(
        until_pool_empty(&manager).await,
        0,
        "reservations not given back"
    );
}

/// The spills of every Shovel exchange in `plan` (DataFusion's
/// `spill_count`).
fn exchange_spills(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let here = if plan.is::<ShovelExchangeExec>() {
        plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0)
    } else {
        0
    };
    here + plan
        .children()
        .into_iter()
        .map(exchange_spills)
        .sum::<usize>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_buffers_spill_under_a_small_limit_and_say_so_in_the_metrics() {
    let sql = "SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k";
    let t = table(2, 300_000);
    let plain = SessionContext::new_with_config(config());
    plain.register_table("t", t.clone()).expect("t");
    let want = rows(&plain, sql).await.expect("plain DataFusion");

    let dir = tempfile::tempdir().expect("dir");
    // 256 KiB for the exchange's map-output buffers alone (DataFusion's
    // operators keep their own pool here), a few MiB of partial aggregates
    // through it: the buffers spill.
    let manager = local_manager(dir.path(), 256 << 10);
    let ctx = shovel_ctx(ShovelBuilder::new(Arc::clone(&manager)).shared_memory(false));
    ctx.register_table("t", t).expect("t");
    let plan = ctx
        .sql(sql)
        .await
        .expect("sql")
        .create_physical_plan()
        .await
        .expect("plan");
    let batches = collect(Arc::clone(&plan), ctx.task_ctx())
        .await
        .expect("DataFusion + Shovel");
    let got = concat_batches(&schema_of(&batches), &batches).expect("concat");
    assert!(got == want, "rows differ from plain DataFusion's");
    let spills = exchange_spills(&plan);
    assert!(spills > 0, "the exchange's buffers did not spill");
    assert_eq!(
        spills as u64,
        manager.metrics().snapshot().shuffle.spill_count,
        "the exchange's spill_count is the manager's"
    );
}
