//! The session: configuration, the shuffle manager, and job execution.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shuffle_core::ShuffleManager;

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::events::EventSink;
use crate::logical::plan::{LogicalPlan, ScanSource};
use crate::logical::DataFrame;
use crate::metrics::JobSummary;
use crate::physical::planner::{JobPlan, PhysicalPlanner};
use crate::physical::scan::list_parquet_files;
use crate::scheduler::executors::{ExecutorLoss, Executors};
use crate::scheduler::tracker::MapOutputTracker;
use crate::scheduler::{
    run_job, Hooks, JobContext, KeptShuffle, PendingRemovals, StageHook, TaskHook,
};

struct SessionState {
    config: Arc<EngineConfig>,
    manager: Arc<dyn ShuffleManager>,
    tracker: Arc<MapOutputTracker>,
    next_shuffle_id: AtomicU32,
    next_job_id: AtomicU64,
    last_summary: Mutex<Option<JobSummary>>,
    executors: Arc<Executors>,
    hooks: Mutex<Hooks>,
    kept: Arc<Mutex<Vec<KeptShuffle>>>,
    removals: Arc<PendingRemovals>,
}

/// Entry point: holds the config and the shuffle manager every exchange uses.
///
/// ```ignore
/// let session = Session::new(EngineConfig::default(), manager);
/// let df = session.read_parquet("data/store_sales", Some(&["ss_item_sk", "ss_net_profit"]))?;
/// let out = df.aggregate(vec![col("ss_item_sk")], vec![sum(col("ss_net_profit"))])?.collect().await?;
/// ```
#[derive(Clone)]
pub struct Session {
    state: Arc<SessionState>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("config", &self.state.config)
            .field("manager", &self.state.manager)
            .finish()
    }
}

impl Session {
    /// A session over `manager` (which owns the memory pool and spill store).
    /// Shuffle ids are allocated per session: give each session its own manager
    /// (or app id) when several share a store.
    pub fn new(config: EngineConfig, manager: Arc<dyn ShuffleManager>) -> Self {
        Self {
            state: Arc::new(SessionState {
                executors: Arc::new(Executors::new(config.executors)),
                config: Arc::new(config),
                manager,
                tracker: Arc::new(MapOutputTracker::new()),
                next_shuffle_id: AtomicU32::new(0),
                next_job_id: AtomicU64::new(0),
                last_summary: Mutex::new(None),
                hooks: Mutex::new(Hooks::default()),
                kept: Arc::new(Mutex::new(Vec::new())),
                removals: Arc::new(PendingRemovals::default()),
            }),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.state.config
    }

    pub fn manager(&self) -> &Arc<dyn ShuffleManager> {
        &self.state.manager
    }

    /// Metrics of the last finished job.
    pub fn last_job_summary(&self) -> Option<JobSummary> {
        self.state
            .last_summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The shuffles this session's jobs left in storage because
    /// `shuffle.keep` ([`EngineConfig::keep_shuffle`]) is set, oldest first:
    /// every committed map output of every job that ended (finished, failed
    /// or cancelled). Empty when the setting is off (jobs remove their
    /// shuffles when they end).
    pub fn kept_shuffles(&self) -> Vec<KeptShuffle> {
        self.state
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs a callback run after each map stage completes (fault injection in tests).
    pub fn set_stage_hook(&self, hook: Option<StageHook>) {
        self.state
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stage = hook;
    }

    /// Installs a callback run when each task attempt starts (fault injection in tests).
    pub fn set_task_hook(&self, hook: Option<TaskHook>) {
        self.state
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .task = hook;
    }

    /// Sends the events of jobs that start from now on to `sink`
    /// ([`crate::events`]: job, stage and task starts and ends, re-runs);
    /// `None` stops sending them.
    pub fn set_event_sink(&self, sink: Option<Arc<dyn EventSink>>) {
        self.state
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events = sink;
    }

    /// The map-output tracker: committed map outputs per shuffle (tests
    /// observe from hooks which outputs are committed).
    pub fn map_output_tracker(&self) -> &Arc<MapOutputTracker> {
        &self.state.tracker
    }

    /// The session's executors (`engine.executors`).
    pub fn executors(&self) -> &Arc<Executors> {
        &self.state.executors
    }

    /// Cancels the session's running job (and any later one): running task
    /// attempts are aborted and no new ones start; the job fails with
    /// [`EngineError::Cancelled`] once all its attempts have ended, so the
    /// caller's cleanup runs after the last write. Returns the number of
    /// attempts that were running.
    pub fn cancel(&self) -> usize {
        self.state.executors.cancel()
    }

    /// Reports executor `executor` lost, as a cluster manager would: its
    /// running task attempts are killed (and re-run), and unless the shuffle
    /// backend stores outputs reliably (S3), the map outputs it committed are
    /// forgotten, so the tasks that need them re-run their maps. With
    /// reliable storage, local copies of its outputs are dropped instead
    /// (`ShuffleManager::drop_local_copies`), so they are read from storage.
    pub fn lose_executor(&self, executor: usize) -> Result<ExecutorLoss> {
        let count = self.state.executors.count();
        if executor >= count {
            return Err(EngineError::config(
                "engine.executors",
                format!("no executor {executor}: the session has {count} (0..{count})"),
            ));
        }
        let reliable = self.state.manager.supports_reliable_storage();
        let loss = self
            .state
            .executors
            .lose(executor, &self.state.tracker, reliable);
        if reliable {
            // The outputs stay in storage, but any local copy (the S3
            // backend's cache, shared by the in-process executors) went with
            // the executor on a real cluster: later reads go to storage.
            let held = self.state.tracker.committed_on(executor);
            self.state.manager.drop_local_copies(&held);
        }
        Ok(loss)
    }

    /// A DataFrame over in-memory batches (split into `scan.partitions` partitions).
    pub fn read_batches(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<DataFrame> {
        for b in &batches {
            if b.schema().fields() != schema.fields() {
                return Err(EngineError::plan(
                    "batch schema differs from the given schema",
                ));
            }
        }
        let partitions = self.state.config.scan_partitions();
        Ok(DataFrame::new(
            self.clone(),
            LogicalPlan::Scan {
                source: ScanSource::Memory {
                    batches: Arc::new(batches),
                    partitions,
                },
                source_schema: Arc::clone(&schema),
                projection: None,
                schema,
            },
        ))
    }

    /// A DataFrame over Parquet: one file or a directory of `*.parquet` files,
    /// reading only `columns` (all when `None`).
    pub fn read_parquet(
        &self,
        path: impl AsRef<Path>,
        columns: Option<&[&str]>,
    ) -> Result<DataFrame> {
        let files = list_parquet_files(path.as_ref())?;
        let mut schema: Option<SchemaRef> = None;
        let mut projection: Option<Vec<usize>> = None;
        let mut bytes = 0u64;
        for f in &files {
            let file = std::fs::File::open(f).map_err(|e| EngineError::Io {
                path: f.display().to_string(),
                source: e,
            })?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)?;
            let s = Arc::clone(b.schema());
            if schema.is_none() {
                projection = match columns {
                    Some(cols) => Some(
                        cols.iter()
                            .map(|c| {
                                s.index_of(c).map_err(|_| {
                                    EngineError::plan(format!(
                                        "column `{c}` not in {}",
                                        f.display()
                                    ))
                                })
                            })
                            .collect::<Result<_>>()?,
                    ),
                    None => None,
                };
                if let Some(p) = &projection {
                    let mut seen = p.clone();
                    seen.sort_unstable();
                    seen.dedup();
                    if seen.len() != p.len() {
                        return Err(EngineError::plan(
                            "a column is listed twice in the projection",
                        ));
                    }
                }
                schema = Some(Arc::clone(&s));
            } else if schema.as_ref().is_some_and(|x| x.fields() != s.fields()) {
                return Err(EngineError::plan(format!(
                    "{} has a different schema from the other files",
                    f.display()
                )));
            }
            for rg in b.metadata().row_groups() {
                for (i, c) in rg.columns().iter().enumerate() {
                    if projection.as_ref().is_none_or(|p| p.contains(&i)) {
                        bytes += c.uncompressed_size().max(0) as u64;
                    }
                }
            }
        }
        let source_schema = schema.ok_or_else(|| EngineError::plan("no parquet files"))?;
        // Like Spark, treat every Parquet column as nullable: writers do not
        // always honour their declared REQUIRED columns.
        let source_schema = Arc::new(Schema::new(
            source_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let out_schema = match &projection {
            Some(p) => Arc::new(source_schema.project(p)?),
            None => Arc::clone(&source_schema),
        };
        Ok(DataFrame::new(
            self.clone(),
            LogicalPlan::Scan {
                source: ScanSource::Parquet {
                    files,
                    projected_bytes: bytes,
                },
                source_schema,
                projection,
                schema: out_schema,
            },
        ))
    }

    /// Plans a logical plan into stages.
    pub fn plan_job(&self, plan: &LogicalPlan) -> Result<JobPlan> {
        PhysicalPlanner::new(&self.state.config, &self.state.next_shuffle_id).plan_job(plan)
    }

    /// With `on`, jobs return their answer without waiting for their
    /// shuffles to be removed from storage; call
    /// [`Session::remove_finished_shuffles`] (or the manager's
    /// `cleanup_app`, which removes them too) once the answer is out.
    pub fn defer_shuffle_removal(&self, on: bool) {
        self.state.removals.set_deferred(on);
    }

    /// Removes the shuffles of finished jobs whose removal was deferred, in
    /// one batched delete; returns how many shuffles it removed.
    pub async fn remove_finished_shuffles(&self) -> Result<usize> {
        self.state
            .removals
            .remove(self.state.manager.as_ref())
            .await
    }

    /// Plans and runs a logical plan.
    pub async fn execute(&self, plan: &LogicalPlan) -> Result<(Vec<RecordBatch>, JobSummary)> {
        let job = self.plan_job(plan)?;
        let job_id = self.state.next_job_id.fetch_add(1, Ordering::Relaxed);
        let hooks = self
            .state
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ctx = JobContext {
            config: Arc::clone(&self.state.config),
            manager: Arc::clone(&self.state.manager),
            tracker: Arc::clone(&self.state.tracker),
            executors: Arc::clone(&self.state.executors),
            hooks,
            kept: Arc::clone(&self.state.kept),
            removals: Arc::clone(&self.state.removals),
        };
        let (batches, summary) = run_job(ctx, job, job_id).await?;
        *self
            .state
            .last_summary
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(summary.clone());
        Ok((batches, summary))
    }
}

/// A shuffle manager built from an [`EngineConfig`], with whatever must stay
/// alive as long as it is used (an embedded S3 server, temp dirs).
pub struct ManagedShuffle {
    pub manager: Arc<dyn ShuffleManager>,
    guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for ManagedShuffle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedShuffle")
            .field("manager", &self.manager)
            .field("guards", &self.guards.len())
            .finish()
    }
}

impl ManagedShuffle {
    /// Keeps `guard` alive with the manager.
    pub fn keep(&mut self, guard: impl std::any::Any + Send + Sync) {
        self.guards.push(Box::new(guard));
    }
}

/// Builds the manager `config` selects: `shuffle.backend=local` (local dirs
/// from `shuffle_pairs`' `local.dirs`, default temp) or `s3` (bucket from
/// `shuffle.s3.bucket` / the Glue key, other `s3.*` keys from `shuffle_pairs`;
/// with no bucket and no endpoint, an embedded S3 server is started).
/// The pool is sized to `memory.budget`; `shuffle.spill_to_s3` moves spills to S3.
pub async fn build_shuffle_manager(
    config: &EngineConfig,
    shuffle_pairs: &[(String, String)],
) -> Result<ManagedShuffle> {
    use crate::config::ShuffleBackend;
    let mut pairs: Vec<(String, String)> = shuffle_pairs.to_vec();
    pairs.push(("memory.limit".into(), config.memory_budget.to_string()));
    pairs.push(("spill.to_s3".into(), config.spill_to_s3.to_string()));
    if let Some(b) = &config.s3_bucket {
        pairs.push(("s3.bucket".into(), b.clone()));
    }
    let backend = match config.backend {
        ShuffleBackend::Local => "local",
        ShuffleBackend::S3 => "s3",
    };
    pairs.push(("shuffle.backend".into(), backend.into()));
    let shuffle = shuffle_core::ShuffleConfig::from_pairs(pairs)?;
    match config.backend {
        ShuffleBackend::Local => {
            if config.spill_to_s3 {
                return Err(EngineError::config(
                    "shuffle.spill_to_s3",
                    "spilling to S3 needs shuffle.backend=s3",
                ));
            }
            let m = shuffle_local::local_manager(shuffle)?;
            Ok(ManagedShuffle {
                manager: Arc::new(m),
                guards: Vec::new(),
            })
        }
        ShuffleBackend::S3 => {
            let s3 = shuffle_s3::S3ShuffleBuilder::new(shuffle)
                .embedded_fallback(true)
                .build()
                .await?;
            let mut out = ManagedShuffle {
                manager: Arc::new(s3.manager),
                guards: Vec::new(),
            };
            if let Some(e) = s3.embedded {
                out.keep(e);
            }
            Ok(out)
        }
    }
}
