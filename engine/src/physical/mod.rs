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

pub mod aggregate;
pub mod broadcast;
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
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::Stream;
use shuffle_core::{MemoryPool, ShuffleManager, SpillStore};

use crate::config::EngineConfig;
use crate::error::Result;
use crate::metrics::TaskMetrics;
use crate::scheduler::tracker::MapOutputTracker;

/// A stream of batches of one partition.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

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

/// Everything a running task needs.
#[derive(Debug)]
pub struct TaskContext {
    pub stage_id: usize,
    pub partition: usize,
    pub attempt: u32,
    pub config: Arc<EngineConfig>,
    pub manager: Arc<dyn ShuffleManager>,
    pub tracker: Arc<MapOutputTracker>,
    pub metrics: Arc<TaskMetrics>,
    /// Shuffle partitions each task of the stage reads, when the scheduler
    /// coalesced them (task `i` reads `ranges[i]` of every non-broadcast
    /// shuffle of the stage); `None`: task `i` reads partition `i`.
    pub read_ranges: Option<Arc<Vec<Range<u32>>>>,
    /// The executor the attempt runs on.
    pub executor: usize,
    /// Broadcast hash tables shared by the stage's tasks on one executor.
    pub broadcasts: Arc<broadcast::BroadcastCache>,
}

impl TaskContext {
    pub fn memory_pool(&self) -> &Arc<MemoryPool> {
        self.manager.memory_pool()
    }

    pub fn spill_store(&self) -> &Arc<dyn SpillStore> {
        self.manager.spill_store()
    }

    pub fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    /// The shuffle partitions task `partition` reads (see `read_ranges`).
    pub fn read_range(&self, partition: usize) -> Range<u32> {
        match self.read_ranges.as_ref().and_then(|r| r.get(partition)) {
            Some(r) => r.clone(),
            None => partition as u32..partition as u32 + 1,
        }
    }

    /// A reservation named after the operator and task.
    pub fn reservation(&self, op: &str) -> shuffle_core::MemoryReservation {
        self.memory_pool().reservation(format!(
            "{op}[stage {} task {}]",
            self.stage_id, self.partition
        ))
    }
}
