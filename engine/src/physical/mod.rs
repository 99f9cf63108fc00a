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
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::error::Result;
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
