//! The runtime context a task receives, below every layer that runs tasks.
//!
//! The engine's layers import only downward:
//!
//! ```text
//!   scheduler/            stage graph, task slots, MapOutputTracker
//!       │ builds TaskContext, implements MapOutputs
//!       ▼
//!   physical/             operators and the planner
//!       │
//!       ▼
//!   exchange/  memory/    map-side writing, spilling
//!       │         │
//!       ▼         ▼
//!   runtime/              TaskContext, MapOutputs, BroadcastCache, BatchStream
//!       │
//!       ▼
//!   config, metrics, error, shuffle_core
//! ```
//!
//! What a task needs from the scheduler's tracker is one question, "where
//! are the committed map outputs of shuffle N?", expressed as the
//! [`MapOutputs`] trait; the scheduler's `MapOutputTracker` implements it.
//! The `layering` test of the `shovel-tests` crate keeps it so: it fails
//! naming the file and line of any import that goes upward.

pub mod broadcast;

use std::fmt::Debug;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures::Stream;
use shuffle_core::{MapStatus, MemoryPool, ShuffleManager, SpillStore};

use crate::config::EngineConfig;
use crate::error::Result;
use crate::metrics::TaskMetrics;

/// A stream of batches of one partition.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// The committed map outputs a task reads, as the scheduler knows them.
///
/// Contract: `statuses` returns one [`MapStatus`] per map of the shuffle, in
/// map order, or an error naming the shuffle (a `FetchFailed` naming the
/// missing map when one output is lost, so the scheduler re-runs it).
pub trait MapOutputs: Send + Sync + Debug {
    fn statuses(&self, shuffle_id: u32) -> Result<Vec<MapStatus>>;
}

/// Everything a running task needs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub stage_id: usize,
    pub partition: usize,
    pub attempt: u32,
    pub config: Arc<EngineConfig>,
    pub manager: Arc<dyn ShuffleManager>,
    /// Committed map outputs (the scheduler's tracker).
    pub tracker: Arc<dyn MapOutputs>,
    pub metrics: Arc<TaskMetrics>,
    /// The shuffle partitions this task reads of every non-broadcast
    /// shuffle of the stage, when the scheduler fixed them (coalesced
    /// neighbours, counted in the partitions of the plan being executed: a
    /// union shifts it for its input); `None`: the partition executed.
    pub read_range: Option<Range<u32>>,
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

    /// The shuffle partitions a read of `partition` covers (see `read_range`).
    pub fn read_range(&self, partition: usize) -> Range<u32> {
        match &self.read_range {
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
