//! Physical operators.
//!
//! Every operator implements [`ExecutionPlan`]: it knows its output schema and
//! partition count and turns one partition into an async stream of Arrow
//! batches (DataFusion's model). Streaming operators (filter, project, expand,
//! limit, union, scans, shuffle read) map batches as they arrive; blocking
//! ones (hash aggregate, the hash-join build side, sort) hold state under a
//! [`MemoryReservation`](shuffle_core::MemoryReservation) and spill through
//! the manager's `SpillStore` when the pool refuses to grow.
//!
//! ```text
//!   ParquetExec ─▶ FilterExec ─▶ ProjectionExec ─▶ AggregateExec(partial) ─▶ [shuffle write]
//!   [shuffle read] ─▶ AggregateExec(final) ─▶ SortExec ─▶ ...
//! ```
//!
//! Exchanges are not operators: the planner cuts the plan there into stages
//! (see `scheduler`), the upstream stage's tasks write their partitions
//! through the shuffle manager and [`shuffle_read::ShuffleReadExec`] reads
//! them back in the downstream stage.
//!
//! What a running task receives ([`TaskContext`]) lives below this module,
//! in [`crate::runtime`]; it is re-exported here for operator code.

pub mod aggregate;
pub mod expand;
pub mod filter;
pub mod join;
pub mod limit;
pub mod planner;
pub mod projection;
pub mod row_table;
pub mod scan;
pub mod shuffle_read;
pub mod sort;
pub mod union;
pub mod util;

use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::Stream;

use crate::error::Result;
use crate::metrics::{OperatorMetrics, TaskMetrics};
pub use crate::runtime::{BatchStream, TaskContext};

/// A physical operator.
pub trait ExecutionPlan: Send + Sync + Debug {
    /// Operator name for plans and metrics.
    fn name(&self) -> &'static str;
    /// One-line description (operator plus arguments).
    fn describe(&self) -> String {
        self.name().to_string()
    }
    fn schema(&self) -> SchemaRef;
    /// Number of output partitions (= tasks when this is a stage root).
    fn output_partitions(&self) -> usize;
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>>;
    /// Runs one partition.
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream>;
    /// Shuffle ids this operator reads directly (only shuffle reads override).
    fn shuffle_reads(&self) -> Vec<u32> {
        Vec::new()
    }
    /// For a read of one partition per task (not a broadcast): the shuffle
    /// and its partition count. The scheduler coalesces those partitions.
    fn partitioned_read(&self) -> Option<(u32, usize)> {
        None
    }
    /// True when the output partitions are the inputs' partitions one after
    /// another (a union): the scheduler then coalesces each input's reads on
    /// its own, and a task's range never spans two inputs.
    fn concatenates_inputs(&self) -> bool {
        false
    }
}

/// Renders a plan tree, one operator per line.
pub fn display_plan(plan: &dyn ExecutionPlan) -> String {
    fn go(p: &dyn ExecutionPlan, depth: usize, out: &mut String) {
        out.push_str(&"  ".repeat(depth));
        out.push_str(&p.describe());
        out.push('\n');
        for c in p.children() {
            go(c.as_ref(), depth + 1, out);
        }
    }
    let mut s = String::new();
    go(plan, 0, &mut s);
    s
}

/// The key an operator's metrics are recorded under: its address in the
/// job's plan (which lives as long as the job).
pub fn operator_key(plan: &dyn ExecutionPlan) -> usize {
    plan as *const dyn ExecutionPlan as *const () as usize
}

/// Runs one partition of `plan` with its [`OperatorMetrics`] counted: rows
/// out, time in its polls and task spill bytes written during them. Every
/// operator runs its inputs through this, and the scheduler the stage root.
pub fn execute(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    ctx: Arc<TaskContext>,
) -> Result<BatchStream> {
    let op = ctx.metrics.operator(operator_key(plan.as_ref()));
    let task = Arc::clone(&ctx.metrics);
    let inner = plan.execute(partition, ctx)?;
    Ok(Box::pin(Metered { inner, op, task }))
}

struct Metered {
    inner: BatchStream,
    op: Arc<OperatorMetrics>,
    task: Arc<TaskMetrics>,
}

impl Stream for Metered {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let started = Instant::now();
        let spilled = this.task.spill_bytes.load(Ordering::Relaxed);
        let r = this.inner.as_mut().poll_next(cx);
        let ns = started.elapsed().as_nanos() as u64;
        TaskMetrics::add(&this.op.elapsed_ns, ns);
        let spill = this
            .task
            .spill_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(spilled);
        TaskMetrics::add(&this.op.spill_bytes, spill);
        if let Poll::Ready(Some(Ok(b))) = &r {
            TaskMetrics::add(&this.op.rows_out, b.num_rows() as u64);
        }
        r
    }
}
