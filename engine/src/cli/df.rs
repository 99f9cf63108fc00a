//! `shovel q80 --engine datafusion`: q80's SQL text on Apache DataFusion,
//! with Shovel's exchange, spill files and memory pool installed by
//! [`shuffle_datafusion::ShovelBuilder`] over the run's one
//! [`ShuffleManager`] (the one `--engine shovel` would use).
//!
//! ```text
//!  run.rs: backend ─▶ ShuffleManager ─┬─▶ Session (--engine shovel)
//!                                     └─▶ ShovelBuilder ─▶ SessionContext (this module)
//!  register the 12 Parquet tables ─▶ crate::queries::Q80_SQL (window from --date)
//!  ─▶ physical plan (hash repartitions = ShovelExchangeExec) ─▶ collect
//!  ─▶ rows in canonical order ─▶ the same canonical CSV as --engine shovel
//! ```
//!
//! Every flag means what it means for Shovel's engine:
//!
//! | flag | with `--engine datafusion` |
//! | --- | --- |
//! | `--shuffle`, `--s3-*`, `--local-dir`, shuffle `--conf` keys | the same manager: exchanges go to that store |
//! | `--memory` | the manager's pool (`memory.limit`), which DataFusion's operators share; each sort's merge reservation is scaled to it ([`sort_merge_reservation`]) |
//! | `--spill-to-s3` | DataFusion's spill files are uploaded to S3 |
//! | `--partitions` | DataFusion's `target_partitions`: the partitions of every hash exchange |
//! | `--parallelism` | the tokio worker threads DataFusion runs on, and the map tasks (map outputs) per exchange |
//! | `--broadcast-threshold` | `hash_join_single_partition_threshold` (0: every join is partitioned) |
//! | `--date` | the 30-day window |
//!
//! One setting differs from DataFusion's defaults, for plain DataFusion
//! (the benchmark's baseline) and DataFusion + Shovel alike:
//! `datafusion.execution.parquet.pushdown_filters` is on, so the Parquet
//! scans evaluate the filters pushed into them, the hash joins' dynamic
//! filters included, while decoding. q80 then joins the 30-day window's
//! sales instead of all of them: the scans drop rows an exchange would
//! otherwise hash, write and read back only for a join to drop them (at
//! SF1 with every join partitioned: 706 MiB of exchange data, uncompressed,
//! at DataFusion's default; 25 MiB with it).
//!
//! `--executors`, `--lose-executor` and `--keep-shuffle` are refused
//! (`args.rs`): DataFusion has no executors, and removes each exchange's
//! shuffle when its plan is dropped. DataFusion has no stage retry: a lost
//! or corrupt map output fails the query with an error naming the object.

use std::path::Path;
use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use shuffle_core::ShuffleManager;
use shuffle_datafusion::{ShovelBuilder, ShovelExchangeExec};

use crate::config::EngineConfig;
use crate::queries::q80::table_path;
use crate::queries::Q80_SQL;
use crate::tpcds::{Q80Row, SqlDate, Q80_DEFAULT_DATE, Q80_TABLES, Q80_WINDOW_DAYS};

use super::args::one_line;
use super::CliError;

/// [`Q80_SQL`] with its window starting at `date` (the text has the
/// default window, [`Q80_DEFAULT_DATE`], three times).
pub fn q80_sql(date: SqlDate) -> Result<String, CliError> {
    let start = format!("'{Q80_DEFAULT_DATE}'");
    let end = format!("'{}'", Q80_DEFAULT_DATE.add_days(Q80_WINDOW_DAYS));
    for lit in [&start, &end] {
        if Q80_SQL.matches(lit.as_str()).count() != 3 {
            return Err(CliError::runtime(format!(
                "q80's SQL text does not have its window {lit} three times; restore \
                 engine/src/queries/q80.sql from shared/golden/q80.sql"
            )));
        }
    }
    // Through placeholders: a new start may equal the default end.
    Ok(Q80_SQL
        .replace(&start, "\u{0}START")
        .replace(&end, "\u{0}END")
        .replace("\u{0}START", &format!("'{date}'"))
        .replace("\u{0}END", &format!("'{}'", date.add_days(Q80_WINDOW_DAYS))))
}

/// DataFusion's settings for `config` (see the module doc's table).
pub fn session_config(config: &EngineConfig) -> SessionConfig {
    let partitions = config.shuffle_partitions.max(1);
    let mut c = SessionConfig::new()
        .with_target_partitions(partitions)
        .set_usize(
            "datafusion.execution.sort_spill_reservation_bytes",
            sort_merge_reservation(config.memory_budget, partitions),
        )
        .set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold",
            config.broadcast_threshold,
        )
        .set_bool("datafusion.execution.parquet.pushdown_filters", true);
    if config.broadcast_threshold == 0 {
        c = c.set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            0,
        );
    }
    c
}

/// What each partition's sort reserves up front for merging its spill
/// files (DataFusion's `sort_spill_reservation_bytes`, 10 MiB by default):
/// a quarter of `--memory`'s share per partition, between 1 and 10 MiB. At
/// the default, 8 partitions' sorts alone would reserve 80 MiB and fail a
/// run under `--memory 64MiB` instead of spilling; much below 1 MiB,
/// DataFusion's external sort runs out of memory while merging.
pub fn sort_merge_reservation(memory: usize, partitions: usize) -> usize {
    (memory / (4 * partitions.max(1))).clamp(1 << 20, 10 << 20)
}

/// A DataFusion context with Shovel installed over `manager` (spill files
/// in `spill_dir`) and q80's tables registered from `data_dir`.
pub async fn q80_context(
    config: &EngineConfig,
    manager: &Arc<dyn ShuffleManager>,
    spill_dir: &Path,
    data_dir: &Path,
) -> Result<SessionContext, CliError> {
    let state = ShovelBuilder::new(Arc::clone(manager))
        .spill_dir(spill_dir)
        .map_tasks(config.parallelism)
        .install(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(session_config(config)),
        )
        .map_err(|e| {
            CliError::runtime(format!(
                "installing Shovel into DataFusion: {}",
                one_line(&e.to_string())
            ))
        })?
        .build();
    let ctx = SessionContext::new_with_state(state);
    register_q80_tables(&ctx, data_dir, "DataFusion").await?;
    Ok(ctx)
}

/// Plain DataFusion with `config`'s settings (in-memory repartitions, its
/// own spill and memory pool) and q80's tables: the baseline the q80
/// benchmark compares DataFusion + Shovel with.
pub async fn plain_q80_context(
    config: &EngineConfig,
    data_dir: &Path,
) -> Result<SessionContext, CliError> {
    let ctx = SessionContext::new_with_config(session_config(config));
    register_q80_tables(&ctx, data_dir, "DataFusion").await?;
    Ok(ctx)
}

/// Registers q80's tables, the Parquet files under `data_dir`, with `ctx`;
/// errors name `engine` (DataFusion, Ballista).
pub(super) async fn register_q80_tables(
    ctx: &SessionContext,
    data_dir: &Path,
    engine: &str,
) -> Result<(), CliError> {
    for table in Q80_TABLES {
        let path = table_path(data_dir, table);
        let Some(url) = path.to_str() else {
            return Err(CliError::usage(format!(
                "--data {}: {engine} needs UTF-8 paths; move the data to a UTF-8 path",
                data_dir.display()
            )));
        };
        ctx.register_parquet(table, url, ParquetReadOptions::default())
            .await
            .map_err(|e| {
                CliError::runtime(format!(
                    "registering table {table} ({}) with {engine}: {}",
                    path.display(),
                    one_line(&e.to_string())
                ))
            })?;
    }
    Ok(())
}

/// Plans q80 (window from `date`) on `ctx`: the physical plan, whose hash
/// repartitions are Shovel exchanges.
pub async fn plan_q80(
    ctx: &SessionContext,
    date: SqlDate,
) -> Result<Arc<dyn ExecutionPlan>, CliError> {
    let plan_err = |e: datafusion::error::DataFusionError| {
        CliError::runtime(format!(
            "planning q80 on DataFusion: {}",
            one_line(&e.to_string())
        ))
    };
    let df = q80_dataframe(ctx, date, &plan_err).await?;
    df.create_physical_plan().await.map_err(plan_err)
}

/// q80's SQL text (window from `date`) on `ctx`, its `returns_` column
/// named as the canonical CSV names it; `err` words DataFusion's errors.
pub(super) async fn q80_dataframe(
    ctx: &SessionContext,
    date: SqlDate,
    err: impl Fn(datafusion::error::DataFusionError) -> CliError,
) -> Result<datafusion::dataframe::DataFrame, CliError> {
    let sql = q80_sql(date)?;
    ctx.sql(&sql)
        .await
        .map_err(&err)?
        .with_column_renamed("returns_", "returns")
        .map_err(&err)
}

/// Shovel exchanges in `plan`.
pub fn exchanges(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let here = usize::from(plan.is::<ShovelExchangeExec>());
    here + plan.children().into_iter().map(exchanges).sum::<usize>()
}

/// Runs `plan` and returns q80's rows in canonical order (the CSV's).
pub async fn run_plan(
    ctx: &SessionContext,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Vec<Q80Row>, datafusion::error::DataFusionError> {
    let batches = collect(plan, ctx.task_ctx()).await?;
    let mut rows = super::run::batches_to_rows(&batches)
        .map_err(|e| datafusion::error::DataFusionError::Execution(e.message))?;
    canonical_order(&mut rows);
    Ok(rows)
}

/// The canonical CSV's order (the golden answers', the reference's and
/// Shovel's engine's): channel, then id, NULLs last. The SQL text's
/// `ORDER BY` puts NULLs first, so the rows are sorted again here.
pub fn canonical_order(rows: &mut [Q80Row]) {
    fn nulls_last(a: &Option<String>, b: &Option<String>) -> std::cmp::Ordering {
        match (a, b) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
    rows.sort_by(|a, b| nulls_last(&a.channel, &b.channel).then_with(|| nulls_last(&a.id, &b.id)));
}
