//! The reader side: Ballista's `ShuffleReaderExec`, reading through Shovel.
//!
//! The scheduler resolves each reader to the partition locations its
//! upstream stage's tasks reported. Shovel keeps that plan node (its
//! partitioning, broadcast and coalescing are the scheduler's business) and
//! only changes where the bytes come from:
//!
//! ```text
//!  ShuffleReaderExec.partition[p] (or [0] when broadcast): locations
//!      ─▶ drop empty ones (0 stored bytes: nothing was written)
//!      ─▶ group by (shuffle, partition): MapOutputId from (stage, file_id)
//!      ─▶ committed_map_status per map (the data object's footer, cached)
//!      ─▶ shuffle_arrow::read_partitions ─▶ batches
//! ```
//!
//! No byte crosses between executors over Flight, and the writing executor
//! need not be alive: a committed map output is read from the store. A
//! missing or corrupt object fails the task with an error naming it; the
//! scheduler then re-runs the stage that wrote it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ballista_core::execution_plans::ShuffleReaderExec;
use ballista_core::serde::scheduler::PartitionLocation;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use shuffle_core::ShuffleManager;
use shuffle_datafusion::error::{core_error, shuffle_error};
use shuffle_datafusion::exchange::ReadMetrics;

use crate::ids::MapOutputId;

/// A Ballista shuffle reader whose data comes from Shovel.
pub struct ShovelShuffleReaderExec {
    inner: Arc<ShuffleReaderExec>,
    manager: Arc<dyn ShuffleManager>,
    counters: Arc<crate::EngineCounters>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for ShovelShuffleReaderExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShovelShuffleReaderExec")
            .field("stage_id", &self.inner.stage_id)
            .finish()
    }
}

impl ShovelShuffleReaderExec {
    pub fn new(
        inner: &ShuffleReaderExec,
        manager: Arc<dyn ShuffleManager>,
        counters: Arc<crate::EngineCounters>,
    ) -> Self {
        Self {
            inner: Arc::new(inner.clone()),
            manager,
            counters,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The locations partition `partition` reads, empty ones left out.
    fn locations(&self, partition: usize) -> Result<Vec<PartitionLocation>> {
        let index = if self.inner.broadcast { 0 } else { partition };
        let locations = self.inner.partition.get(index).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "shuffle reader of stage {} has no partition {index}",
                self.inner.stage_id
            ))
        })?;
        Ok(locations
            .iter()
            .filter(|l| l.partition_stats.num_bytes() != Some(0))
            .cloned()
            .collect())
    }
}

impl DisplayAs for ShovelShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShovelShuffleReaderExec: stage={}, partitions={}, broadcast={}, backend={}",
            self.inner.stage_id,
            self.inner.partition.len(),
            self.inner.broadcast,
            self.manager.backend_name()
        )
    }
}

impl ExecutionPlan for ShovelShuffleReaderExec {
    fn name(&self) -> &str {
        "ShovelShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "ShovelShuffleReaderExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.inner.schema();
        // Group the locations by (shuffle, partition): one reader per group
        // fetches all its maps' ranges concurrently.
        let mut groups: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
        for l in self.locations(partition)? {
            let id = MapOutputId::from_file_id(l.partition_id.stage_id, l.file_id)?;
            groups
                .entry((id.shuffle_id(), l.partition_id.partition_id as u32))
                .or_default()
                .push(id.task_id);
        }
        let manager = Arc::clone(&self.manager);
        let read = ReadMetrics::new(&self.metrics, partition);
        let counters = Arc::clone(&self.counters);
        let stage = self.inner.stage_id;
        let batch_schema = Arc::clone(&schema);
        let streams = futures::stream::iter(groups).then(move |((shuffle_id, p), maps)| {
            let manager = Arc::clone(&manager);
            let read = read.clone();
            let counters = Arc::clone(&counters);
            let schema = Arc::clone(&batch_schema);
            async move {
                let at = move || {
                    format!("Shovel on Ballista: reading stage {stage} partition {p} (shuffle {shuffle_id})")
                };
                let statuses = futures::future::try_join_all(
                    maps.iter()
                        .map(|&m| manager.committed_map_status(shuffle_id, m)),
                )
                .await
                .map_err(|e| core_error(e, at()))?;
                let reader =
                    shuffle_arrow::read_partitions(manager.as_ref(), shuffle_id, statuses, p..p + 1, schema)
                        .map_err(|e| shuffle_error(e, at()))?;
                read.stored_bytes_read.add(reader.stored_bytes() as usize);
                read.read_requests.add(reader.planned_requests() as usize);
                counters.record_read(reader.stored_bytes(), reader.planned_requests());
                let batches = reader.map(move |b| {
                    let b = b.map_err(|e| shuffle_error(e, at()))?;
                    read.records_read.add(b.num_rows());
                    read.baseline.record_output(b.num_rows());
                    Ok(b)
                });
                Ok::<_, DataFusionError>(batches)
            }
        });
        let stream = streams.try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
