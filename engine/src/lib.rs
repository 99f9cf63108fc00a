//! # Shovel execution engine
//!
//! A small columnar engine over Arrow `RecordBatch`es whose every wide
//! transform moves data through a [`shuffle_core::ShuffleManager`], so the
//! shuffle backend (local disk or S3) is one config flag.
//!
//! ```text
//!  DataFrame (logical/)  ──plan──▶  PhysicalPlanner (physical/planner.rs)
//!     filter/select/join/             │ cuts at every exchange
//!     aggregate/rollup/sort/...       ▼
//!                          stages: [map stage]* + result stage
//!                                     │
//!  scheduler/ ── N task slots ──▶ map task: operators ─▶ exchange/ (hash|rr|single)
//!     │ MapOutputTracker              ─▶ IPC encode ─▶ MapOutputBuffer (pool, spill) ─▶ commit
//!     │ fetch failure ⇒ re-run map    reduce task: ShuffleReadExec ◀─ ShuffleReader
//!     ▼
//!  JobSummary (metrics.rs): per stage / task rows, bytes, shuffle, spill, time
//! ```
//!
//! Layers import only downward (the `layering` test keeps it so):
//! `scheduler/` ─▶ `physical/` ─▶ `exchange/`, `memory/` ─▶ `runtime/` (the
//! [`TaskContext`](runtime::TaskContext) a task receives) ─▶ `config`,
//! `metrics`, `error`.
//!
//! - [`expr`]: expressions, type coercion and vectorised evaluation.
//! - [`logical`]: [`DataFrame`] and [`LogicalPlan`](logical::LogicalPlan).
//! - [`physical`]: operators (scan, filter, projection, hash aggregate, hash
//!   join, sort, limit, union, expand, shuffle read) and the planner.
//! - [`exchange`]: batch codec, stable hash partitioning, map-side writing.
//! - [`scheduler`]: stage graph execution, retries, fetch-failure recompute.
//! - [`memory`]: reservations and spilling (grace hash, external sort).
//! - [`runtime`]: what a running task receives (context, map outputs,
//!   shared broadcast tables), below every layer that runs tasks.
//! - [`queries`]: ready-made DataFrame queries (TPC-DS q80).
//! - [`config`], [`metrics`], [`error`].

pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod exchange;
pub mod expr;
pub mod logical;
pub mod memory;
pub mod metrics;
pub mod physical;
pub mod queries;
pub mod runtime;
pub mod scheduler;
pub mod session;
pub mod tpcds;

pub use config::{EngineConfig, ShuffleBackend};
pub use error::{EngineError, Result};
pub use expr::{
    avg, coalesce, col, concat, count, count_star, date_add, lit, lit_date, lit_decimal, lit_null,
    max, min, sum, AggregateExpr, Expr, ScalarValue, SortExpr,
};
pub use logical::{BroadcastHint, DataFrame};
pub use metrics::{JobSummary, RetryReason, StageSummary, TaskSummary};
pub use physical::join::JoinType;
pub use session::Session;
