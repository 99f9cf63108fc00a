//! [`ShovelExecutionEngine`]: Ballista's executor extension point, so that
//! every stage a Ballista executor runs writes and reads through Shovel.
//!
//! ```text
//!  executor receives a task ─▶ create_query_stage_exec(job, stage, task, plan)
//!     app id  = session's shovel.app_id, or ballista-<job>   (crate::options)
//!     manager = one per app id in this process, from the ManagerFactory
//!     plan    : every ShuffleReaderExec of a stage Shovel wrote ⇒ ShovelShuffleReaderExec
//!     root    : SortShuffleWriterExec(Hash(keys, K)) ⇒ ShovelStageExec, hash into K
//!               ShuffleWriterExec (pass-through)     ⇒ ShovelStageExec, child partition i ⇒ ids[i]
//! ```
//!
//! **Every stage goes through Shovel**: hash stages (rows moved between
//! executors by key), broadcast build sides, and the job's last stage. The
//! client fetches the last stage's partitions over Arrow Flight from the
//! executor that wrote them; that executor's Flight service
//! ([`crate::flight`]) serves them from the store, with the schema and
//! manager this engine remembered for the stage ([`StageSources`]). No
//! executor reads another's outputs over Flight, and nothing is written to
//! the work directory.
//!
//! A location Ballista's own writer produced (an executor started with
//! Ballista's shuffle, the benchmark's baseline) carries no Shovel mark
//! ([`crate::ids::is_shovel_file_id`]); its reader is Ballista's, pointed at
//! the work directory.
//!
//! Range-partitioned stages (Ballista's `RangeShuffleWriterExec`, used by
//! its adaptive planner for distributed sorts) are refused with an error
//! that names the setting to turn off.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ballista_core::execution_plans::{
    RangeShuffleReaderExec, RangeShuffleWriterExec, ShuffleReaderExec, ShuffleWriterExec,
    SortShuffleWriterExec,
};
use ballista_core::serde::protobuf::ShuffleWritePartition;
use ballista_core::JobId;
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion::prelude::SessionConfig;
use shuffle_core::ShuffleManager;

use crate::options::ShovelOptions;
use crate::reader::ShovelShuffleReaderExec;
use crate::stage::{ShovelStageExec, StageOutput};

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
    /// When the task started and committed (wall clock: the event log
    /// turns them into task start and end events on the driver's time
    /// base).
    pub started: std::time::SystemTime,
    pub finished: std::time::SystemTime,
}

/// What this executor's tasks moved through Shovel (for its summary).
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub bytes_read: AtomicU64,
    pub read_requests: AtomicU64,
    /// Flight fetches this executor served from Shovel's store (the
    /// client's fetches of a job's last stage).
    pub flight_fetches_from_store: AtomicU64,
    /// Flight fetches served from the work directory (Ballista's own
    /// shuffle files: only when Ballista's shuffle wrote them).
    pub flight_fetches_from_work_dir: AtomicU64,
    /// Tasks running now (see [`EngineCounters::task_running`]).
    pub running_tasks: AtomicU64,
    /// The stages whose outputs were fetched over Flight.
    flight_stages: Mutex<std::collections::BTreeSet<u32>>,
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
    /// Counts a task as running until the guard is dropped (committed,
    /// failed or cancelled).
    pub(crate) fn task_running(self: &Arc<Self>) -> RunningTask {
        self.running_tasks.fetch_add(1, Ordering::Relaxed);
        RunningTask(Arc::clone(self))
    }
    pub(crate) fn record_read(&self, bytes: u64, requests: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        self.read_requests.fetch_add(requests, Ordering::Relaxed);
    }
    pub(crate) fn record_flight_fetch(&self, stage_id: usize, from_store: bool) {
        let counter = if from_store {
            &self.flight_fetches_from_store
        } else {
            &self.flight_fetches_from_work_dir
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.flight_stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(u32::try_from(stage_id).unwrap_or(u32::MAX));
    }
    /// The stages whose outputs this executor served over Flight.
    pub fn flight_stages(&self) -> Vec<u32> {
        self.flight_stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
    /// The tasks committed so far, in commit order.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A task in [`EngineCounters::running_tasks`] while it lives.
pub(crate) struct RunningTask(Arc<EngineCounters>);

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.0.running_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a stage's outputs are and what they hold: what the Flight service
/// needs to serve them (see the module docs).
#[derive(Clone)]
pub(crate) struct StageSource {
    pub manager: Arc<dyn ShuffleManager>,
    pub schema: SchemaRef,
}

/// The last [`STAGE_SOURCES`] pass-through stages this executor
/// ran, by (job, stage): bounded, since Ballista never tells an engine a
/// job is over; a client fetches a job's results right after it finishes.
#[derive(Default)]
pub(crate) struct StageSources {
    stages: VecDeque<((String, usize), StageSource)>,
}

/// How many pass-through stages an executor remembers for Flight.
pub(crate) const STAGE_SOURCES: usize = 1024;

impl StageSources {
    fn remember(&mut self, job_id: &str, stage_id: usize, source: StageSource) {
        if self.get(job_id, stage_id).is_some() {
            return;
        }
        if self.stages.len() == STAGE_SOURCES {
            self.stages.pop_front();
        }
        self.stages
            .push_back(((job_id.to_string(), stage_id), source));
    }

    fn get(&self, job_id: &str, stage_id: usize) -> Option<&StageSource> {
        self.stages
            .iter()
            .rev()
            .find(|((j, s), _)| j == job_id && *s == stage_id)
            .map(|(_, src)| src)
    }
}

/// Ballista's `ExecutionEngine` over Shovel (see the module docs).
pub struct ShovelExecutionEngine {
    factory: ManagerFactory,
    managers: Mutex<HashMap<String, Arc<dyn ShuffleManager>>>,
    sources: Mutex<StageSources>,
    counters: Arc<EngineCounters>,
    /// Ballista's own engine, when this executor runs Ballista's shuffle
    /// (the baseline benchmarks and loss comparisons run against).
    ballista: Option<DefaultExecutionEngine>,
}

impl ShovelExecutionEngine {
    pub fn new(factory: ManagerFactory) -> Self {
        Self {
            factory,
            managers: Mutex::new(HashMap::new()),
            sources: Mutex::new(StageSources::default()),
            counters: Arc::new(EngineCounters::default()),
            ballista: None,
        }
    }

    /// Runs every stage with Ballista's own shuffle (work directory and
    /// Flight), recording its tasks in [`Self::counters`] as Shovel's are:
    /// the baseline to compare Shovel against, with the same accounting.
    pub fn with_ballista_shuffle(mut self) -> Self {
        self.ballista = Some(DefaultExecutionEngine::new());
        self
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

    /// The store and schema of a pass-through stage this executor ran.
    pub(crate) fn stage_source(&self, job_id: &str, stage_id: usize) -> Option<StageSource> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id, stage_id)
            .cloned()
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
        if let Some(ballista) = &self.ballista {
            let inner = ballista.create_query_stage_exec(
                job_id.clone(),
                stage_id,
                task_id,
                global_output_partition_ids,
                plan,
                work_dir,
                config,
            )?;
            return Ok(Arc::new(RecordedStage {
                inner,
                stage_id,
                job_id: job_id.to_string(),
                counters: Arc::clone(&self.counters),
            }));
        }
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
                    // A stage Ballista's own writer ran (see the module
                    // docs): its reader, on the work directory.
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
        let output = if let Some(w) = plan.downcast_ref::<SortShuffleWriterExec>() {
            match w.shuffle_output_partitioning() {
                Partitioning::Hash(exprs, n) => StageOutput::Hash {
                    exprs: exprs.clone(),
                    partitions: *n,
                },
                other => {
                    return Err(DataFusionError::NotImplemented(format!(
                        "Shovel on Ballista: stage {stage_id} shuffles by {other}, only hash is supported"
                    )))
                }
            }
        } else if plan.downcast_ref::<ShuffleWriterExec>().is_some() {
            // The client may fetch this stage over Flight (the job's last
            // stage): remember where it is and what it holds.
            self.sources
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remember(
                    job_id.as_str(),
                    stage_id,
                    StageSource {
                        manager: Arc::clone(&manager),
                        schema: child()?.schema(),
                    },
                );
            StageOutput::PassThrough {
                ids: global_output_partition_ids,
            }
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
            output,
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

/// A stage Ballista's own writer runs, its committed task recorded like a
/// Shovel task (see [`ShovelExecutionEngine::with_ballista_shuffle`]).
#[derive(Debug)]
struct RecordedStage {
    inner: Arc<dyn QueryStageExecutor>,
    job_id: String,
    stage_id: usize,
    counters: Arc<EngineCounters>,
}

impl std::fmt::Display for RecordedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for RecordedStage {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        let (stage_attempt, task_attempt) = crate::ids::task_attempts(&context);
        let _running = self.counters.task_running();
        let started = std::time::SystemTime::now();
        let written = self.inner.execute_query_stage(task_id, context).await?;
        self.counters.record_task(TaskRecord {
            job_id: self.job_id.clone(),
            stage_id: u32::try_from(self.stage_id).unwrap_or(u32::MAX),
            stage_attempt,
            task_id: u32::try_from(task_id).unwrap_or(u32::MAX),
            task_attempt,
            stored_bytes: written.iter().map(|p| p.num_bytes).sum(),
            records: written.iter().map(|p| p.num_rows).sum(),
            started,
            finished: std::time::SystemTime::now(),
        });
        Ok(written)
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.inner.collect_plan_metrics()
    }

    fn collect_runtime_stats_reports(
        &self,
    ) -> Vec<ballista_core::serde::protobuf::RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(
        &self,
    ) -> Result<Vec<ballista_core::serde::protobuf::WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<ballista_core::serde::protobuf::TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}
