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

    /// The map outputs partition `partition` reads: the current stage
    /// attempts' ([`current_attempts`]), empty ones left out.
    fn locations(&self, partition: usize) -> Result<Vec<(MapOutputId, PartitionLocation)>> {
        let index = if self.inner.broadcast { 0 } else { partition };
        let locations = self.inner.partition.get(index).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "shuffle reader of stage {} has no partition {index}",
                self.inner.stage_id
            ))
        })?;
        let located = locations
            .iter()
            .map(|l| {
                Ok((
                    MapOutputId::from_file_id(l.partition_id.stage_id, l.file_id)?,
                    l.clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(current_attempts(located)
            .into_iter()
            .filter(|(_, l)| l.partition_stats.num_bytes() != Some(0))
            .collect())
    }
}

/// The locations of one upstream stage that its current attempts wrote.
///
/// Ballista re-runs a stage in two ways. When a stage that finished loses
/// an executor's outputs, it re-runs only the lost tasks, as a new stage
/// attempt whose tasks take new slots (task ids after the stage's others):
/// the older attempt's other outputs stay current, and both are read. When
/// a running stage loses an input, it rolls the whole stage back and runs
/// every task again as a new attempt numbered from slot 0; but the tasks of
/// the old attempt that had finished already handed their locations to the
/// next stage, and Ballista does not take them back (with its own shuffle
/// they are files that a re-run overwrites in place; with Shovel each
/// attempt is its own map output, so reading both would count those rows
/// twice). So an attempt that has a task 0, or a task id an older attempt
/// also has, is a full re-run, and every older attempt's location goes.
pub(crate) fn current_attempts<L>(located: Vec<(MapOutputId, L)>) -> Vec<(MapOutputId, L)> {
    let attempts: std::collections::BTreeSet<u32> =
        located.iter().map(|(id, _)| id.stage_attempt).collect();
    let tasks_of = |a: u32| -> std::collections::BTreeSet<u32> {
        located
            .iter()
            .filter(|(id, _)| id.stage_attempt == a)
            .map(|(id, _)| id.task_id)
            .collect()
    };
    let mut floor = 0;
    for &b in attempts.iter().rev() {
        let tasks = tasks_of(b);
        let older: std::collections::BTreeSet<u32> = located
            .iter()
            .filter(|(id, _)| id.stage_attempt < b)
            .map(|(id, _)| id.task_id)
            .collect();
        if !older.is_empty() && (tasks.contains(&0) || !tasks.is_disjoint(&older)) {
            floor = b;
            break;
        }
    }
    let before = located.len();
    let current: Vec<_> = located
        .into_iter()
        .filter(|(id, _)| id.stage_attempt >= floor)
        .collect();
    if current.len() < before {
        tracing::info!(
            superseded = before - current.len(),
            attempt = floor,
            "Shovel on Ballista: reading a fully re-run stage's attempt {floor} only"
        );
    }
    current
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
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.inner.schema();
        let batch_size = context.session_config().batch_size();
        // Group the locations by (shuffle, partition): one reader per group
        // fetches all its maps' ranges concurrently.
        let mut groups: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
        for (id, l) in self.locations(partition)? {
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
                        .map_err(|e| shuffle_error(e, at()))?
                        // Full batches for the operators above: a block is one
                        // map task's rows of one partition, often a few hundred.
                        .coalesce_to(batch_size);
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

#[cfg(test)]
mod tests {
    use super::current_attempts;
    use crate::ids::MapOutputId;

    fn ids(list: &[(u32, u32)]) -> Vec<(MapOutputId, ())> {
        list.iter()
            .map(|&(attempt, task)| (MapOutputId::new(5, attempt, 8, task).expect("id"), ()))
            .collect()
    }

    fn kept(list: &[(u32, u32)]) -> Vec<(u32, u32)> {
        current_attempts(ids(list))
            .into_iter()
            .map(|(id, ())| (id.stage_attempt, id.task_id))
            .collect()
    }

    #[test]
    fn a_re_run_of_lost_tasks_adds_to_the_older_attempt() {
        // Tasks 0..3 ran; task 2's output was lost and re-ran in slot 4.
        let l = [(0, 0), (0, 1), (0, 3), (1, 4)];
        assert_eq!(kept(&l), l.to_vec());
        // The same again for a later loss.
        let l = [(0, 0), (0, 1), (1, 4), (2, 5)];
        assert_eq!(kept(&l), l.to_vec());
    }

    #[test]
    fn a_full_re_run_replaces_what_the_older_attempt_handed_over() {
        // Two tasks of attempt 0 had finished when the stage was rolled
        // back; attempt 1 ran every slot again.
        assert_eq!(
            kept(&[
                (0, 3),
                (0, 5),
                (1, 0),
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 5)
            ]),
            vec![(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
        );
        // Seen by a reader of one pass-through partition: same slot twice.
        assert_eq!(kept(&[(0, 2), (1, 2)]), vec![(1, 2)]);
        // A full re-run, then a re-run of lost tasks on top of it.
        assert_eq!(
            kept(&[(0, 1), (1, 0), (1, 1), (2, 7)]),
            vec![(1, 0), (1, 1), (2, 7)]
        );
        // One attempt only: nothing to choose.
        assert_eq!(kept(&[(2, 0), (2, 1)]), vec![(2, 0), (2, 1)]);
    }
}
