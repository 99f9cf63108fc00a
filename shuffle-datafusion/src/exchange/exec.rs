//! [`ShovelExchangeExec`]: the plan node that replaces a hash `RepartitionExec`.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    apply_expression_roots, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    ExecutionPlanProperties, Partitioning, PhysicalExpr, PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};
use shuffle_core::{MapStatus, ShuffleHandle, ShuffleManager};

use super::map_task::MapTask;
use super::metrics::{ReadMetrics, WriteMetrics};
use crate::error::{core_error, shuffle_error};

/// Hands out shuffle ids, unique among the exchanges that share it (one per
/// [`crate::ShovelBuilder`], so one per session).
#[derive(Debug, Clone, Default)]
pub struct ShuffleIds(Arc<AtomicU32>);

impl ShuffleIds {
    /// Ids from `first` upwards.
    pub fn starting_at(first: u32) -> Self {
        Self(Arc::new(AtomicU32::new(first)))
    }

    fn next(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// The committed map outputs of one execution of an exchange.
#[derive(Debug)]
struct Committed {
    shuffle_id: u32,
    statuses: Vec<MapStatus>,
}

/// Per-execution state: the map stage runs once, whichever output partition
/// asks first; every output partition then reads from its result.
#[derive(Debug)]
struct ExchangeState {
    maps: tokio::sync::OnceCell<Result<Arc<Committed>, Arc<DataFusionError>>>,
    manager: Arc<dyn ShuffleManager>,
    /// The shuffle this state registered, removed when the plan is dropped.
    registered: Mutex<Option<u32>>,
}

impl Drop for ExchangeState {
    fn drop(&mut self) {
        let id = self
            .registered
            .get_mut()
            .map(|id| id.take())
            .unwrap_or_else(|p| p.into_inner().take());
        let Some(shuffle_id) = id else { return };
        // The plan (and with it every reader) is gone: nothing reads this
        // shuffle any more. Without a runtime, the manager's `cleanup_app`
        // deletes it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let manager = Arc::clone(&self.manager);
            rt.spawn(async move {
                let _ = manager.remove_shuffle(shuffle_id).await;
            });
        }
    }
}

/// A hash exchange through Shovel: the writer side runs each input
/// partition as a map task into a committed Shovel map output; the reader
/// side's output partition `p` reads partition `p` of every committed
/// output (see the crate docs).
pub struct ShovelExchangeExec {
    input: Arc<dyn ExecutionPlan>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    partitions: usize,
    /// At most this many map tasks (and map outputs); 0: one per input
    /// partition.
    map_tasks: usize,
    manager: Arc<dyn ShuffleManager>,
    ids: ShuffleIds,
    state: Arc<ExchangeState>,
    metrics: ExecutionPlanMetricsSet,
    cache: Arc<PlanProperties>,
}

impl fmt::Debug for ShovelExchangeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShovelExchangeExec")
            .field("partitions", &self.partitions)
            .field("backend", &self.manager.backend_name())
            .finish()
    }
}

impl ShovelExchangeExec {
    /// Hash-partitions `input` by `exprs` into `partitions` through `manager`.
    /// The plan properties are those of the `RepartitionExec` it replaces.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        partitions: usize,
        manager: Arc<dyn ShuffleManager>,
        ids: ShuffleIds,
    ) -> Result<Self> {
        if partitions == 0 {
            return Err(DataFusionError::Plan(
                "a Shovel exchange needs at least one output partition".into(),
            ));
        }
        // RepartitionExec computes the properties DataFusion expects of a
        // hash exchange (equivalences, ordering kept for a single input).
        let template = RepartitionExec::try_new(
            Arc::clone(&input),
            Partitioning::Hash(exprs.clone(), partitions),
        )?;
        let cache = Arc::clone(template.properties());
        Ok(Self {
            state: Self::fresh_state(&manager),
            input,
            exprs,
            partitions,
            map_tasks: 0,
            manager,
            ids,
            metrics: ExecutionPlanMetricsSet::new(),
            cache,
        })
    }

    fn fresh_state(manager: &Arc<dyn ShuffleManager>) -> Arc<ExchangeState> {
        Arc::new(ExchangeState {
            maps: tokio::sync::OnceCell::new(),
            manager: Arc::clone(manager),
            registered: Mutex::new(None),
        })
    }

    /// Writes at most `n` map outputs (0: one per input partition, the
    /// default): input partition `i` goes to map task `i % n`. Fewer,
    /// larger outputs mean fewer files or objects, and fewer requests on
    /// S3, for the same rows; a map task is also the unit DataFusion would
    /// re-run, but DataFusion has no stage retry.
    pub fn with_map_tasks(mut self, n: usize) -> Self {
        self.map_tasks = n;
        self
    }

    /// The number of map tasks (and map outputs) an execution runs.
    pub fn map_task_count(&self) -> usize {
        let inputs = self.input.output_partitioning().partition_count();
        match self.map_tasks {
            0 => inputs,
            n => n.min(inputs),
        }
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn exprs(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.exprs
    }

    pub fn manager(&self) -> &Arc<dyn ShuffleManager> {
        &self.manager
    }

    /// Registers a new shuffle and runs `num_maps` map tasks over the input
    /// partitions (concurrently, as `RepartitionExec` runs its inputs).
    #[allow(clippy::too_many_arguments)]
    async fn run_maps(
        input: Arc<dyn ExecutionPlan>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        partitions: usize,
        num_maps: usize,
        state: Arc<ExchangeState>,
        ids: ShuffleIds,
        metrics: ExecutionPlanMetricsSet,
        ctx: Arc<TaskContext>,
    ) -> Result<Arc<Committed>> {
        let manager = Arc::clone(&state.manager);
        let num_inputs = input.output_partitioning().partition_count();
        let shuffle_id = ids.next();
        manager
            .register_shuffle(ShuffleHandle {
                shuffle_id,
                num_maps: num_maps as u32,
                num_partitions: partitions as u32,
            })
            .await
            .map_err(|e| {
                core_error(
                    e,
                    format!("Shovel exchange: registering shuffle {shuffle_id}"),
                )
            })?;
        *state.registered.lock().unwrap_or_else(|p| p.into_inner()) = Some(shuffle_id);
        let tasks: Vec<SpawnedTask<Result<MapStatus>>> = (0..num_maps)
            .map(|map_id| {
                let task = MapTask {
                    input: Arc::clone(&input),
                    inputs: (map_id..num_inputs).step_by(num_maps).collect(),
                    map_id,
                    exprs: exprs.clone(),
                    partitions,
                    manager: Arc::clone(&manager),
                    shuffle_id,
                    metrics: WriteMetrics::new(&metrics, map_id),
                };
                SpawnedTask::spawn(task.run(Arc::clone(&ctx)))
            })
            .collect();
        let mut statuses = Vec::with_capacity(num_maps);
        for task in tasks {
            let status = task.join_unwind().await.map_err(|e| {
                DataFusionError::Execution(format!(
                    "Shovel exchange: a map task of shuffle {shuffle_id} was cancelled: {e}"
                ))
            })??;
            statuses.push(status);
        }
        Ok(Arc::new(Committed {
            shuffle_id,
            statuses,
        }))
    }
}

impl DisplayAs for ShovelExchangeExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let inputs = self.input.output_partitioning().partition_count();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "ShovelExchangeExec: partitioning={}, input_partitions={inputs}, map_tasks={}, backend={}",
                self.cache.output_partitioning(),
                self.map_task_count(),
                self.manager.backend_name()
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "partitioning={}", self.cache.output_partitioning())?;
                write!(f, "backend={}", self.manager.backend_name())
            }
        }
    }
}

impl ExecutionPlan for ShovelExchangeExec {
    fn name(&self) -> &str {
        "ShovelExchangeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(&self.exprs, f)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        // One map output is read back in write order.
        vec![self.input.output_partitioning().partition_count() <= 1]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![true]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "ShovelExchangeExec has one child, got {}",
                children.len()
            )));
        }
        let input = children.swap_remove(0);
        if options.children_properties == ChildrenPropertiesMode::Keep {
            return Ok(Arc::new(Self {
                input,
                exprs: self.exprs.clone(),
                partitions: self.partitions,
                map_tasks: self.map_tasks,
                manager: Arc::clone(&self.manager),
                ids: self.ids.clone(),
                state: Self::fresh_state(&self.manager),
                metrics: ExecutionPlanMetricsSet::new(),
                cache: Arc::clone(&self.cache),
            }));
        }
        Ok(Arc::new(
            Self::try_new(
                input,
                self.exprs.clone(),
                self.partitions,
                Arc::clone(&self.manager),
                self.ids.clone(),
            )?
            .with_map_tasks(self.map_tasks),
        ))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.partitions {
            return Err(DataFusionError::Internal(format!(
                "ShovelExchangeExec has {} partitions, asked for {partition}",
                self.partitions
            )));
        }
        let schema: SchemaRef = self.schema();
        let read = ReadMetrics::new(&self.metrics, partition);
        let (input, exprs, partitions) =
            (Arc::clone(&self.input), self.exprs.clone(), self.partitions);
        let num_maps = self.map_task_count();
        let (state, ids, metrics) = (
            Arc::clone(&self.state),
            self.ids.clone(),
            self.metrics.clone(),
        );
        let out_schema = Arc::clone(&schema);
        let batch_size = context.session_config().batch_size();
        let open = async move {
            let committed = state
                .maps
                .get_or_init(|| async {
                    Self::run_maps(
                        input,
                        exprs,
                        partitions,
                        num_maps,
                        Arc::clone(&state),
                        ids,
                        metrics,
                        context,
                    )
                    .await
                    .map_err(Arc::new)
                })
                .await
                .clone()
                .map_err(DataFusionError::Shared)?;
            let p = partition as u32;
            let shuffle_id = committed.shuffle_id;
            let reader = shuffle_arrow::read_partitions(
                state.manager.as_ref(),
                shuffle_id,
                committed.statuses.clone(),
                p..p + 1,
                schema,
            )
            .map_err(|e| shuffle_error(e, read_context(shuffle_id, partition)))?
            // As RepartitionExec does: operators above get full batches.
            .coalesce_to(batch_size);
            read.stored_bytes_read.add(reader.stored_bytes() as usize);
            read.read_requests.add(reader.planned_requests() as usize);
            let batches = futures::stream::unfold(
                (reader, read, 0u64),
                move |(mut reader, read, seen)| async move {
                    match reader.next().await {
                        None => {
                            read.baseline.done();
                            None
                        }
                        Some(Err(e)) => {
                            let e = shuffle_error(e, read_context(shuffle_id, partition));
                            Some((Err(e), (reader, read, seen)))
                        }
                        Some(Ok(batch)) => {
                            let encoded = reader.stats().encoded_bytes;
                            read.encoded_bytes_read.add((encoded - seen) as usize);
                            read.records_read.add(batch.num_rows());
                            read.baseline.record_output(batch.num_rows());
                            Some((Ok(batch), (reader, read, encoded)))
                        }
                    }
                },
            );
            Ok::<_, DataFusionError>(batches)
        };
        let stream = futures::stream::once(open).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

fn read_context(shuffle_id: u32, partition: usize) -> String {
    format!("Shovel exchange: reading partition {partition} of shuffle {shuffle_id}")
}
