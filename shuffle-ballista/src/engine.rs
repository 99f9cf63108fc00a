//! [`ShovelExecutionEngine`]: Ballista's executor extension point, so that
//! every stage a Ballista executor runs writes and reads through Shovel.
//!
//! ```text
//!  executor receives a task ─▶ create_query_stage_exec(job, stage, task, plan)
//!     app id  = session's shovel.app_id, or ballista-<job>   (crate::options)
//!     manager = one per app id in this process, from the ManagerFactory
//!     plan    : every ShuffleReaderExec of a stage Shovel wrote ⇒ ShovelShuffleReaderExec
//!     root    : SortShuffleWriterExec(Hash(keys, K)) ⇒ ShovelStageExec   (crate::stage)
//!               ShuffleWriterExec (pass-through)  ⇒ Ballista's own writer (see below)
//! ```
//!
//! **Hash stages go through Shovel** (every shuffle that moves rows between
//! executors by key). **Pass-through stages stay Ballista's**: the job's
//! last stage, whose partitions the *client* fetches over Arrow Flight
//! through a path Ballista's client derives itself (no extension point
//! reaches it), and broadcast build sides. Their outputs are written by
//! Ballista's writer into the work directory and read by Ballista's reader,
//! as without Shovel. A reader tells the two apart by the mark Shovel puts
//! in each location's `file_id` ([`crate::ids::is_shovel_file_id`]).
//!
//! Range-partitioned stages (Ballista's `RangeShuffleWriterExec`, used by
//! its adaptive planner for distributed sorts) are refused with an error
//! that names the setting to turn off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ballista_core::execution_plans::{
    RangeShuffleReaderExec, RangeShuffleWriterExec, ShuffleReaderExec, ShuffleWriterExec,
    SortShuffleWriterExec,
};
use ballista_core::JobId;
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion::prelude::SessionConfig;
use shuffle_core::ShuffleManager;

use crate::options::ShovelOptions;
use crate::reader::ShovelShuffleReaderExec;
use crate::stage::ShovelStageExec;

/// Builds the manager of one app id (the executor's backend flags decide
/// the store; the app id namespaces one job's objects).
pub type ManagerFactory =
    Arc<dyn Fn(&str) -> shuffle_core::Result<Arc<dyn ShuffleManager>> + Send + Sync>;

/// One task this executor committed through Shovel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub job_id: String,
    pub stage_id: u32,
    /// Above 0 when Ballista re-ran the stage (after losing an executor).
    pub stage_attempt: u32,
    pub task_id: u32,
    pub task_attempt: u32,
    pub stored_bytes: u64,
    pub records: u64,
}

/// What this executor's tasks moved through Shovel (for its summary).
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub bytes_read: AtomicU64,
    pub read_requests: AtomicU64,
    tasks: Mutex<Vec<TaskRecord>>,
}

impl EngineCounters {
    /// Bytes and records written are the sums over [`Self::tasks`].
    pub(crate) fn record_task(&self, task: TaskRecord) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
    pub(crate) fn record_read(&self, bytes: u64, requests: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        self.read_requests.fetch_add(requests, Ordering::Relaxed);
    }
    /// The tasks committed so far, in commit order.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Ballista's `ExecutionEngine` over Shovel (see the module docs).
pub struct ShovelExecutionEngine {
    factory: ManagerFactory,
    /// Ballista's own engine, for pass-through stages.
    ballista: DefaultExecutionEngine,
    managers: Mutex<HashMap<String, Arc<dyn ShuffleManager>>>,
    counters: Arc<EngineCounters>,
}

impl ShovelExecutionEngine {
    pub fn new(factory: ManagerFactory) -> Self {
        Self {
            factory,
            ballista: DefaultExecutionEngine::new(),
            managers: Mutex::new(HashMap::new()),
            counters: Arc::new(EngineCounters::default()),
        }
    }

    pub fn counters(&self) -> &Arc<EngineCounters> {
        &self.counters
    }

    /// The managers this executor opened so far, by app id.
    pub fn managers(&self) -> Vec<Arc<dyn ShuffleManager>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn ShuffleManager>>> {
        self.managers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn manager(&self, app_id: &str) -> Result<Arc<dyn ShuffleManager>> {
        if let Some(m) = self.lock().get(app_id) {
            return Ok(Arc::clone(m));
        }
        let m = (self.factory)(app_id).map_err(|e| {
            DataFusionError::External(Box::new(e))
                .context(format!("opening Shovel's shuffle store for app {app_id}"))
        })?;
        Ok(Arc::clone(
            self.lock().entry(app_id.to_string()).or_insert(m),
        ))
    }
}

impl ExecutionEngine for ShovelExecutionEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        let app_id = ShovelOptions::app_id_for(config, job_id.as_str());
        let manager = self.manager(&app_id)?;
        let counters = Arc::clone(&self.counters);
        let reader_manager = Arc::clone(&manager);
        let plan = plan
            .transform(|p| {
                if let Some(r) = p
                    .downcast_ref::<ShuffleReaderExec>()
                    .filter(|r| reads_shovel_outputs(r))
                {
                    Ok(Transformed::yes(Arc::new(ShovelShuffleReaderExec::new(
                        r,
                        Arc::clone(&reader_manager),
                        Arc::clone(&counters),
                    ))
                        as Arc<dyn ExecutionPlan>))
                } else if let Some(r) = p.downcast_ref::<ShuffleReaderExec>() {
                    // A stage Ballista's own writer ran: its reader, pointed
                    // at the work directory as Ballista's engine does.
                    Ok(Transformed::yes(
                        Arc::new(r.with_work_dir(work_dir.to_string())) as Arc<dyn ExecutionPlan>,
                    ))
                } else if p.downcast_ref::<RangeShuffleReaderExec>().is_some() {
                    Err(range_refused(stage_id))
                } else {
                    Ok(Transformed::no(p))
                }
            })?
            .data;
        let child = || {
            plan.children()
                .first()
                .map(|c| Arc::clone(*c))
                .ok_or_else(|| {
                    DataFusionError::Internal(format!("stage {stage_id}'s writer has no input"))
                })
        };
        let (exprs, partitions) = if let Some(w) = plan.downcast_ref::<SortShuffleWriterExec>() {
            match w.shuffle_output_partitioning() {
                Partitioning::Hash(exprs, n) => (exprs.clone(), *n),
                other => {
                    return Err(DataFusionError::NotImplemented(format!(
                        "Shovel on Ballista: stage {stage_id} shuffles by {other}, only hash is supported"
                    )))
                }
            }
        } else if plan.downcast_ref::<ShuffleWriterExec>().is_some() {
            // Ballista's own writer (see the module docs); it also points
            // the readers Shovel left alone at the work directory.
            return self.ballista.create_query_stage_exec(
                job_id,
                stage_id,
                task_id,
                global_output_partition_ids,
                plan,
                work_dir,
                config,
            );
        } else if plan.downcast_ref::<RangeShuffleWriterExec>().is_some() {
            return Err(range_refused(stage_id));
        } else {
            return Err(DataFusionError::Internal(format!(
                "stage {stage_id} does not start with a Ballista shuffle writer: {}",
                plan.name()
            )));
        };
        Ok(Arc::new(ShovelStageExec {
            job_id: job_id.to_string(),
            stage_id,
            input: child()?,
            exprs,
            partitions,
            manager,
            metrics: ExecutionPlanMetricsSet::new(),
            counters: Arc::clone(&self.counters),
        }))
    }
}

/// True when the stage this reader reads was written by Shovel: every
/// location carries Shovel's mark (a stage with no location at all reads
/// nothing either way).
fn reads_shovel_outputs(r: &ShuffleReaderExec) -> bool {
    r.partition
        .iter()
        .flatten()
        .all(|l| crate::ids::is_shovel_file_id(l.file_id))
}

fn range_refused(stage_id: usize) -> DataFusionError {
    DataFusionError::NotImplemented(format!(
        "Shovel on Ballista: stage {stage_id} is range-partitioned (a distributed sort), \
         which Shovel does not store yet; run the query with the client setting \
         ballista.planner.adaptive.enabled=false or without a global ORDER BY"
    ))
}
