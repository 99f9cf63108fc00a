//! The scheduler: runs a [`JobPlan`]'s stage graph.
//!
//! ```text
//!   stages whose inputs are done ──▶ map tasks (≤ parallelism computing at once)
//!        │                              │ placed on executor partition % executors
//!        │                              │ compute under a CPU slot, then give it back;
//!        │                              │ commit under the I/O budget → MapStatus
//!        │                              ▼
//!        │                        MapOutputTracker (first status per map wins)
//!        ▼
//!   result stage tasks ──▶ ShuffleReadExec reads statuses from the tracker
//!        │
//!        └─ fetch failure (data loss) for shuffle S map M:
//!             invalidate M's status, re-run map task M of S's stage (new attempt),
//!             then retry the failed task — Spark's fetch-failure path
//! ```
//!
//! **Scheduling by dependencies.** A stage starts as soon as every stage it
//! reads is complete (all its map outputs committed and registered), not
//! when a whole "level" of the graph is: independent branches overlap and
//! a short branch never waits for a long one. A stage is complete only when
//! its last upload is durable, so readers never see a partial shuffle.
//!
//! **Slots are for CPU.** `engine.parallelism` slots bound the tasks
//! computing at once; a map task hands its slot back when its output is
//! buffered and then waits for one of `io.requests_in_flight` upload
//! permits (see [`crate::exchange`]), so S3 round trips overlap the next
//! task's CPU work instead of idling a slot.
//!
//! **Reads start before the slot.** A task executes its plan (which opens
//! its shuffle readers, so their first ranged GETs go out) before it waits
//! for a CPU slot; at most `2 × parallelism` tasks hold readers at once
//! (the running ones and one wave behind them), each fetching at most
//! `fetch.max_bytes_in_flight` ahead, so the wait for a slot overlaps the
//! round trips of the reads without unbounded memory.
//!
//! **Coalescing** (Spark's adaptive execution). When a stage is about to
//! start, the committed byte counts of the shuffles it reads are known: it
//! groups neighbouring reduce partitions into ranges of about
//! `shuffle.coalesce_target` bytes ([`coalesce`]) and runs one task per
//! range. Every non-broadcast shuffle the stage reads (both sides of a
//! join) gets the same ranges, computed from the sum of their byte counts,
//! so co-partitioning holds; hash joins, aggregates and sorts work per
//! range exactly as they did per partition. A union coalesces each input
//! on its own (its partitions are its inputs' one after another), so no
//! task's range spans two inputs. The ranges of a stage are
//! fixed once computed, so a recompute of one of its maps reads the same.
//! Because a stage's map count is known only then, its shuffle is
//! registered when the stage starts.
//!
//! Re-runs of lost map outputs are shared: every task that needs map M of
//! shuffle S waits on the same re-run (no lock is held while it runs, so a
//! re-run that itself finds an output of an earlier shuffle lost recovers
//! that one the same way — losing an executor loses outputs of every
//! shuffle at once).
//!
//! Other task failures are retried up to `task.max_attempts`; attempts
//! killed with a lost executor ([`executors`]) are re-run without counting
//! as failures. Every attempt is recorded (tasks run / retried / recomputed
//! / killed, and why) in the [`JobSummary`].
//!
//! With a backend that reports reliable storage (S3), committed outputs
//! survive the loss of the executor that wrote them, so only data actually
//! reported lost or corrupt is recomputed; other read errors just retry the
//! reading task.
//!
//! When a job ends (finished, failed or cancelled) its shuffles are removed
//! from storage, unless `shuffle.keep` ([`EngineConfig::keep_shuffle`]) is
//! set: then every committed map output (data and index objects) stays, and
//! the job records what it left as [`KeptShuffle`]s in
//! [`JobContext::kept`] (the session's [`crate::Session::kept_shuffles`]).
//!
//! Removal is one [`ShuffleManager::remove_shuffles`] call for all of the
//! job's shuffles: the manager deletes the keys it knows it wrote, batched
//! across shuffles (one S3 DeleteObjects per bucket and 1,000 keys), and
//! never lists. With [`PendingRemovals::set_deferred`] (the session's
//! [`crate::Session::defer_shuffle_removal`]) a job does not wait for it at
//! all: it returns its answer and leaves its shuffles to
//! [`PendingRemovals::remove`] (or the manager's `cleanup_app`), which the
//! caller runs once the answer is out.

pub mod executors;
pub mod tracker;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use futures::future::{BoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use shuffle_core::{MapStatus, ShuffleHandle, ShuffleManager};
use tokio::sync::Semaphore;

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::events::{Event, EventSink, TaskKey};
use crate::exchange::write_map_output;
use crate::metrics::{JobSummary, RetryReason, StageSummary, TaskMetrics, TaskSummary};
use crate::physical::planner::{JobPlan, StageDef};
use crate::physical::util::collect;
use crate::physical::{ExecutionPlan, TaskContext};
use crate::runtime::broadcast::BroadcastCache;
use executors::{Executors, Kill};
use tracker::MapOutputTracker;

/// Called after a map stage first completes (used by tests to inject faults).
///
/// Hooks run inside the job's future and must not block on the runtime
/// with `Handle::block_on`; use [`wait_in_hook`] for async work.
pub type StageHook = Arc<dyn Fn(&StageEvent) + Send + Sync>;

/// Called when a task attempt has started running on its executor (used by
/// tests to lose an executor while tasks run).
pub type TaskHook = Arc<dyn Fn(&TaskEvent) + Send + Sync>;

/// Runs `fut` to completion from a synchronous hook and returns its output.
///
/// The future runs as a task on the current (multi-thread) runtime while
/// this thread waits on a plain channel. A nested `Handle::block_on` would
/// instead park this thread on the same parker as the job's own
/// `block_on`, swallowing wake-ups meant for the job (tasks that finish
/// meanwhile are then never polled again: the job hangs).
///
/// # Panics
/// On a current-thread runtime, like `tokio::task::block_in_place`.
pub fn wait_in_hook<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    tokio::runtime::Handle::current().spawn(async move {
        // The receiver only goes away if this thread panicked.
        let _ = tx.send(fut.await);
    });
    tokio::task::block_in_place(|| rx.recv()).unwrap_or_else(|_| {
        panic!("a hook's task ended without an answer (it panicked or the runtime shut down)")
    })
}

/// Hooks of a job: test callbacks, and where its events go.
#[derive(Clone, Default)]
pub struct Hooks {
    pub stage: Option<StageHook>,
    pub task: Option<TaskHook>,
    /// Receives job, stage and task starts and ends and re-runs
    /// ([`crate::events`]).
    pub events: Option<Arc<dyn EventSink>>,
}

/// A task attempt that started running.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub stage_id: usize,
    /// The shuffle a map task writes; `None` for result tasks.
    pub shuffle_id: Option<u32>,
    pub partition: usize,
    pub attempt: u32,
    pub executor: usize,
}

/// A shuffle a job left in storage because `shuffle.keep` is set: the
/// committed map outputs the scheduler knew of when the job ended.
#[derive(Debug, Clone)]
pub struct KeptShuffle {
    pub job_id: u64,
    pub stage_id: usize,
    pub shuffle_id: u32,
    /// One status per committed map output (each a data object, unless all
    /// its partitions are empty, and an index object).
    pub outputs: Vec<MapStatus>,
}

impl KeptShuffle {
    /// Stored bytes of the kept data objects.
    pub fn bytes(&self) -> u64 {
        self.outputs.iter().map(MapStatus::total_bytes).sum()
    }
}

/// Shuffles of finished jobs whose removal was deferred (see the module
/// docs): a job with deferral on records its shuffles here instead of
/// removing them before it returns.
#[derive(Debug, Default)]
pub struct PendingRemovals {
    deferred: AtomicBool,
    shuffles: Mutex<Vec<u32>>,
}

impl PendingRemovals {
    /// Defers (or stops deferring) the removal of the shuffles of jobs that
    /// end from now on.
    pub fn set_deferred(&self, on: bool) {
        self.deferred.store(on, Ordering::SeqCst);
    }

    pub fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::SeqCst)
    }

    /// Shuffles waiting to be removed.
    pub fn pending(&self) -> Vec<u32> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        self.shuffles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, ids: &[u32]) {
        self.lock().extend_from_slice(ids);
    }

    /// Removes every pending shuffle with one batched
    /// [`ShuffleManager::remove_shuffles`]; returns how many shuffles it
    /// removed. On failure they stay pending for a later call.
    pub async fn remove(&self, manager: &dyn ShuffleManager) -> Result<usize> {
        let ids = std::mem::take(&mut *self.lock());
        if ids.is_empty() {
            return Ok(0);
        }
        if let Err(e) = manager.remove_shuffles(&ids).await {
            self.push(&ids);
            return Err(e.into());
        }
        Ok(ids.len())
    }
}

/// A shared re-run of one lost map output.
type Recompute = Shared<BoxFuture<'static, std::result::Result<(), Arc<EngineError>>>>;

/// A finished map stage.
#[derive(Debug, Clone)]
pub struct StageEvent {
    pub stage_id: usize,
    pub shuffle_id: u32,
    pub statuses: Vec<MapStatus>,
}

#[derive(Debug, Default)]
struct Stats {
    tasks_run: u64,
    tasks_retried: u64,
    tasks_recomputed: u64,
    tasks_killed: u64,
    reasons: Vec<RetryReason>,
    stages: HashMap<usize, (StageSummary, Option<Instant>, Option<Instant>)>,
}

struct Job {
    config: Arc<EngineConfig>,
    manager: Arc<dyn ShuffleManager>,
    tracker: Arc<MapOutputTracker>,
    slots: Arc<Semaphore>,
    /// Uploads in flight (`io.requests_in_flight`).
    io: Arc<Semaphore>,
    /// Tasks whose reads have started while they wait for a slot.
    prefetch: Arc<Semaphore>,
    stages: Vec<StageDef>,
    root: Arc<dyn ExecutionPlan>,
    shuffle_stage: HashMap<u32, usize>,
    stats: Mutex<Stats>,
    executors: Arc<Executors>,
    /// In-flight re-runs of lost map outputs, by (shuffle, map).
    recomputes: Mutex<HashMap<(u32, u32), Recompute>>,
    hooks: Hooks,
    /// Partition ranges per stage (its tasks), fixed when the stage starts.
    ranges: Mutex<HashMap<usize, Arc<Vec<Range<u32>>>>>,
    broadcasts: Arc<BroadcastCache>,
    job_id: u64,
}

enum TaskOutput {
    Map,
    Result(Vec<RecordBatch>),
}

/// What a job runs on: the session's shuffle manager, map-output tracker
/// and executors.
#[derive(Clone)]
pub struct JobContext {
    pub config: Arc<EngineConfig>,
    pub manager: Arc<dyn ShuffleManager>,
    pub tracker: Arc<MapOutputTracker>,
    pub executors: Arc<Executors>,
    pub hooks: Hooks,
    /// Where a job with `shuffle.keep` set records the shuffles it left.
    pub kept: Arc<Mutex<Vec<KeptShuffle>>>,
    /// Whether the job removes its shuffles before it returns, or leaves
    /// them here for the caller (see the module docs).
    pub removals: Arc<PendingRemovals>,
}

/// Runs a job to completion.
pub async fn run_job(
    ctx: JobContext,
    plan: JobPlan,
    job_id: u64,
) -> Result<(Vec<RecordBatch>, JobSummary)> {
    let JobContext {
        config,
        manager,
        tracker,
        executors,
        hooks,
        kept,
        removals,
    } = ctx;
    let started = Instant::now();
    let before = manager.metrics().snapshot();
    let shuffle_stage = plan
        .stages
        .iter()
        .map(|s| (s.shuffle_id, s.stage_id))
        .collect();
    let broadcasts = Arc::new(BroadcastCache::default());
    executors.attach_broadcasts(&broadcasts);
    if let Some(ev) = &hooks.events {
        ev.emit(Event::JobStart {
            t_ms: 0.0,
            job_id,
            backend: manager.backend_name().to_string(),
            executors: executors.count(),
            slots: config.parallelism.max(1),
            stages: plan.stages.len() + 1,
            memory_limit: manager.memory_pool().limit() as u64,
        });
    }
    let job = Arc::new(Job {
        slots: Arc::new(Semaphore::new(config.parallelism.max(1))),
        io: Arc::new(Semaphore::new(config.io_requests_in_flight.max(1))),
        // The running tasks plus as many queued behind them: the next
        // wave's first bytes arrive while the current one computes.
        prefetch: Arc::new(Semaphore::new(2 * config.parallelism.max(1))),
        config,
        manager: Arc::clone(&manager),
        tracker,
        stages: plan.stages,
        root: plan.root,
        shuffle_stage,
        stats: Mutex::new(Stats::default()),
        executors,
        recomputes: Mutex::new(HashMap::new()),
        hooks,
        ranges: Mutex::new(HashMap::new()),
        broadcasts,
        job_id,
    });
    let result = job.run().await;
    // Re-runs nobody waits for any more (the job failed) would keep the job alive.
    job.recomputes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    if job.config.keep_shuffle {
        // Leave the committed outputs in storage and say which they are.
        let mut left = kept.lock().unwrap_or_else(|p| p.into_inner());
        for s in &job.stages {
            left.push(KeptShuffle {
                job_id,
                stage_id: s.stage_id,
                shuffle_id: s.shuffle_id,
                outputs: job.tracker.committed(s.shuffle_id),
            });
            job.tracker.remove_shuffle(s.shuffle_id);
        }
    } else {
        let ids: Vec<u32> = job.stages.iter().map(|s| s.shuffle_id).collect();
        for id in &ids {
            job.tracker.remove_shuffle(*id);
        }
        if removals.is_deferred() {
            removals.push(&ids);
        } else if let Err(e) = manager.remove_shuffles(&ids).await {
            // `cleanup_app` retries: the manager keeps the keys it failed to delete.
            tracing::warn!("removing shuffles {ids:?}: {e}");
        }
    }
    if let Some(ev) = &job.hooks.events {
        let st = job.stats.lock().unwrap_or_else(|p| p.into_inner());
        ev.emit(Event::JobEnd {
            t_ms: 0.0,
            job_id,
            succeeded: result.is_ok(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            tasks_run: st.tasks_run,
            tasks_retried: st.tasks_retried,
            tasks_recomputed: st.tasks_recomputed,
            error: result.as_ref().err().map(|e| e.to_string()),
        });
    }
    let batches = result?;
    let after = manager.metrics().snapshot();
    let delta = after.delta(&before);
    let stats = std::mem::take(&mut *job.stats.lock().unwrap_or_else(|p| p.into_inner()));
    let mut stages: Vec<StageSummary> = stats
        .stages
        .into_values()
        .map(|(mut s, a, b)| {
            if let (Some(a), Some(b)) = (a, b) {
                s.elapsed_ms = b.duration_since(a).as_secs_f64() * 1e3;
            }
            s.finish_operators();
            s
        })
        .collect();
    stages.sort_by_key(|s| s.stage_id);
    let pool = manager.memory_pool();
    let mut summary = JobSummary {
        job_id,
        backend: manager.backend_name().to_string(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        rows_out: batches.iter().map(|b| b.num_rows() as u64).sum(),
        num_stages: stages.len(),
        tasks_run: stats.tasks_run,
        tasks_retried: stats.tasks_retried,
        tasks_recomputed: stats.tasks_recomputed,
        tasks_killed: stats.tasks_killed,
        retry_reasons: stats.reasons,
        peak_memory: pool.peak() as u64,
        broadcast_builds: job.broadcasts.builds(),
        memory_limit: pool.limit() as u64,
        ..Default::default()
    };
    for s in &stages {
        summary.shuffle_bytes_written += s.shuffle_bytes_written;
        summary.shuffle_bytes_read += s.shuffle_bytes_read;
        summary.spill_bytes += s.spill_bytes;
        summary.spill_count += s.spill_count;
    }
    summary.shuffle_spill_bytes = delta
        .shuffle
        .spill_bytes
        .saturating_sub(summary.spill_bytes);
    summary.stages = stages;
    Ok((batches, summary))
}

impl Job {
    async fn run(self: &Arc<Self>) -> Result<Vec<RecordBatch>> {
        let deps: Vec<Vec<usize>> = self
            .stages
            .iter()
            .map(|s| self.deps(s.plan.as_ref()))
            .collect();
        let mut done: HashSet<usize> = HashSet::new();
        let mut started: HashSet<usize> = HashSet::new();
        let mut running = FuturesUnordered::new();
        let mut first_err = None;
        loop {
            // Start every stage whose inputs are complete (none after a
            // failure: the running ones settle, then the job fails).
            if first_err.is_none() {
                // In stage order, each registered before the next is pushed:
                // ready stages queue for slots in a deterministic order.
                for s in &self.stages {
                    let id = s.stage_id;
                    if !started.contains(&id) && deps[id].iter().all(|d| done.contains(d)) {
                        started.insert(id);
                        if let Err(e) = self.prepare_map_stage(id).await {
                            first_err.get_or_insert(e);
                            break;
                        }
                        let job = Arc::clone(self);
                        running.push(async move { (id, job.run_map_stage(id).await) });
                    }
                }
            }
            let Some((id, res)) = running.next().await else {
                break;
            };
            match res {
                Ok(()) => {
                    done.insert(id);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if done.len() < self.stages.len() {
            return Err(EngineError::internal("stage graph has a cycle"));
        }
        // Result stage.
        let stage_id = self.stages.len();
        let n = self.stage_ranges(stage_id, self.root.as_ref())?.len();
        self.stage_entry(stage_id, "result".into(), self.root.as_ref(), n);
        let tasks = (0..n).map(|p| Arc::clone(self).run_task(stage_id, p));
        let outs = join_settled(tasks).await?;
        self.stage_end(stage_id);
        let mut batches = Vec::new();
        for o in outs {
            if let TaskOutput::Result(b) = o {
                batches.extend(b);
            }
        }
        Ok(batches)
    }

    /// The partition ranges of `stage_id`'s tasks (see the module docs),
    /// computed from the committed outputs of the shuffles it reads the
    /// first time they are asked for.
    fn stage_ranges(
        &self,
        stage_id: usize,
        plan: &dyn ExecutionPlan,
    ) -> Result<Arc<Vec<Range<u32>>>> {
        let mut all = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = all.get(&stage_id) {
            return Ok(Arc::clone(r));
        }
        let ranges = self.task_ranges(plan)?;
        let ranges = Arc::new(ranges);
        all.insert(stage_id, Arc::clone(&ranges));
        Ok(ranges)
    }

    /// The ranges of `plan`'s partitions its tasks read. Only a plan whose
    /// partitions are exactly those of the shuffles it reads (not a scan)
    /// coalesces; a union coalesces each input on its own, and its ranges
    /// follow one another as its partitions do, wherever it sits in the
    /// stage.
    fn task_ranges(&self, plan: &dyn ExecutionPlan) -> Result<Vec<Range<u32>>> {
        let n = plan.output_partitions();
        if plan.concatenates_inputs() {
            let mut out = Vec::with_capacity(n);
            let mut offset = 0u32;
            for input in plan.children() {
                let ranges = self.task_ranges(input.as_ref())?;
                out.extend(ranges.into_iter().map(|r| r.start + offset..r.end + offset));
                offset += input.output_partitions() as u32;
            }
            return Ok(out);
        }
        // Operators that keep their input's partitions (a projection, a
        // partial aggregate over a union) take its ranges.
        if let [input] = plan.children().as_slice() {
            if plan.partitioned_read().is_none() && input.output_partitions() == n {
                return self.task_ranges(input.as_ref());
            }
        }
        let mut reads = Vec::new();
        partitioned_reads(plan, &mut reads);
        let aligned = !reads.is_empty() && reads.iter().all(|(_, p)| *p == n);
        if !(aligned && self.config.coalesce_target > 0 && n > 1) {
            return Ok((0..n as u32).map(|p| p..p + 1).collect());
        }
        let mut bytes = vec![0u64; n];
        for (shuffle, _) in &reads {
            for st in self.tracker.statuses(*shuffle)? {
                for (b, l) in bytes.iter_mut().zip(&st.lengths) {
                    *b += *l;
                }
            }
        }
        Ok(coalesce(
            &bytes,
            self.config.coalesce_target as u64,
            self.config.parallelism.max(1),
        ))
    }

    /// Stages whose shuffles `plan` reads.
    fn deps(&self, plan: &dyn ExecutionPlan) -> Vec<usize> {
        let mut out = Vec::new();
        for s in plan.shuffle_reads() {
            if let Some(st) = self.shuffle_stage.get(&s) {
                out.push(*st);
            }
        }
        for c in plan.children() {
            out.extend(self.deps(c.as_ref()));
        }
        out
    }

    fn stage_entry(&self, stage_id: usize, output: String, plan: &dyn ExecutionPlan, n: usize) {
        let partitions = plan.output_partitions();
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if st.stages.contains_key(&stage_id) {
            return;
        }
        let summary = StageSummary {
            stage_id,
            description: describe_chain(plan),
            output,
            num_tasks: n,
            partitions,
            operators: operator_tree(plan),
            ..Default::default()
        };
        if let Some(ev) = &self.hooks.events {
            ev.emit(Event::StageStart {
                t_ms: 0.0,
                job_id: self.job_id,
                stage_id,
                description: summary.description.clone(),
                output: summary.output.clone(),
                tasks: n,
                partitions,
            });
        }
        st.stages.insert(stage_id, (summary, None, None));
    }

    /// Reports a stage's end to the event sink (its totals so far).
    fn stage_end(&self, stage_id: usize) {
        let Some(ev) = &self.hooks.events else {
            return;
        };
        let st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, a, b)) = st.stages.get(&stage_id) {
            ev.emit(Event::StageEnd {
                t_ms: 0.0,
                job_id: self.job_id,
                stage_id,
                elapsed_ms: match (a, b) {
                    (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64() * 1e3,
                    _ => 0.0,
                },
                attempts: s.tasks.len(),
                rows_out: s.rows_out,
                shuffle_bytes_written: s.shuffle_bytes_written,
                shuffle_bytes_read: s.shuffle_bytes_read,
                spill_bytes: s.spill_bytes,
                operators: {
                    let mut own = s.clone();
                    own.tasks.clear();
                    own.finish_operators();
                    own.operators
                        .iter()
                        .map(|o| crate::events::OperatorEnd {
                            index: o.index,
                            depth: o.depth,
                            name: o.name.clone(),
                            rows_out: o.rows_out,
                            elapsed_ms: o.elapsed_ms,
                            spill_bytes: o.spill_bytes,
                        })
                        .collect()
                },
            });
        }
    }

    /// Fixes a ready map stage's tasks (coalescing its reads) and registers
    /// its shuffle with that many maps.
    async fn prepare_map_stage(&self, stage_id: usize) -> Result<()> {
        let stage = &self.stages[stage_id];
        let n = self.stage_ranges(stage_id, stage.plan.as_ref())?.len();
        self.manager
            .register_shuffle(ShuffleHandle {
                shuffle_id: stage.shuffle_id,
                num_maps: n as u32,
                num_partitions: stage.partitioning.num_partitions() as u32,
            })
            .await?;
        self.tracker.register_shuffle(stage.shuffle_id, n);
        self.stage_entry(
            stage_id,
            format!(
                "shuffle {} ({}{})",
                stage.shuffle_id,
                stage.partitioning.describe(),
                if stage.broadcast { ", broadcast" } else { "" }
            ),
            stage.plan.as_ref(),
            n,
        );
        Ok(())
    }

    async fn run_map_stage(self: &Arc<Self>, stage_id: usize) -> Result<()> {
        let stage = &self.stages[stage_id];
        let shuffle_id = stage.shuffle_id;
        let missing = self.tracker.missing_maps(shuffle_id);
        let tasks = missing
            .into_iter()
            .map(|m| Arc::clone(self).run_task(stage_id, m as usize));
        join_settled(tasks).await?;
        // Outputs committed in this stage may have been lost since (their
        // executor died while siblings ran): re-run them before moving on.
        let mut rounds = 0;
        loop {
            let missing = self.tracker.missing_maps(shuffle_id);
            if missing.is_empty() {
                break;
            }
            rounds += 1;
            if rounds > self.config.max_task_attempts.max(1) {
                return Err(EngineError::internal(format!(
                    "map outputs {missing:?} of shuffle {shuffle_id} kept getting lost"
                )));
            }
            let reruns = missing
                .into_iter()
                .map(|m| self.recompute_map(shuffle_id, m, None));
            join_settled(reruns).await?;
        }
        self.stage_end(stage_id);
        if let Some(hook) = &self.hooks.stage {
            let statuses = self.tracker.statuses(stage.shuffle_id)?;
            hook(&StageEvent {
                stage_id,
                shuffle_id: stage.shuffle_id,
                statuses,
            });
        }
        Ok(())
    }

    /// Runs one task until it succeeds or runs out of attempts.
    fn run_task(
        self: Arc<Self>,
        stage_id: usize,
        partition: usize,
    ) -> BoxFuture<'static, Result<TaskOutput>> {
        async move {
            let max = self.config.max_task_attempts.max(1);
            let mut failures = 0u32;
            let mut fetch_failures = 0u32;
            let mut kills = 0u32;
            let mut local_attempt = 0u32;
            loop {
                let attempt = match self.stages.get(stage_id) {
                    Some(s) => self.tracker.next_attempt(s.shuffle_id, partition as u32),
                    None => {
                        local_attempt += 1;
                        local_attempt - 1
                    }
                };
                let res = self.run_attempt(stage_id, partition, attempt).await;
                match res {
                    Ok(out) => return Ok(out),
                    Err(e) if self.executors.is_cancelled() => {
                        return Err(match e {
                            EngineError::ExecutorLost { .. } => EngineError::Cancelled,
                            e => e,
                        })
                    }
                    Err(EngineError::ExecutorLost { executor }) if kills < max => {
                        // Not the task's fault: re-run it on the replacement.
                        kills += 1;
                        self.bump(|s| {
                            s.tasks_retried += 1;
                            s.tasks_killed += 1;
                            s.reasons.push(RetryReason::ExecutorLost {
                                executor,
                                stage_id,
                                partition,
                            });
                        });
                    }
                    Err(e) if e.is_fetch_failure() && fetch_failures < max => {
                        fetch_failures += 1;
                        self.handle_fetch_failure(&e).await?;
                        // A shuffle input re-read after its recompute, or the
                        // task's own damaged data (a spill) rebuilt by re-running.
                        let reason = match &e {
                            EngineError::FetchFailed { .. } => RetryReason::Refetch {
                                stage_id,
                                partition,
                                error: e.to_string(),
                            },
                            _ => RetryReason::TaskError(format!(
                                "stage {stage_id} task {partition}: {e}"
                            )),
                        };
                        self.bump(|s| {
                            s.tasks_retried += 1;
                            s.reasons.push(reason);
                        });
                    }
                    Err(e) => {
                        failures += 1;
                        if failures >= max
                            || matches!(e, EngineError::Plan(_) | EngineError::Config { .. })
                        {
                            return Err(EngineError::TaskFailed {
                                stage_id,
                                partition,
                                attempts: failures + fetch_failures + kills,
                                last: e.to_string(),
                            });
                        }
                        self.bump(|s| {
                            s.tasks_retried += 1;
                            s.reasons.push(RetryReason::TaskError(format!(
                                "stage {stage_id} task {partition}: {e}"
                            )));
                        });
                    }
                }
            }
        }
        .boxed()
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let before = st.reasons.len();
        f(&mut st);
        // Every re-run reason recorded is an event too.
        if let Some(ev) = &self.hooks.events {
            for r in &st.reasons[before.min(st.reasons.len())..] {
                ev.emit(Event::rerun(r));
            }
        }
    }

    /// Invalidates lost map outputs and re-runs their map tasks.
    async fn handle_fetch_failure(self: &Arc<Self>, e: &EngineError) -> Result<()> {
        let (shuffle_id, map_id, attempt) = match e {
            EngineError::FetchFailed {
                shuffle_id,
                map_id,
                source,
            } => {
                let attempt = match source {
                    shuffle_core::Error::FetchFailed { attempt, .. } => Some(*attempt),
                    _ => None,
                };
                (*shuffle_id, *map_id, attempt)
            }
            _ => return Ok(()),
        };
        if !self.shuffle_stage.contains_key(&shuffle_id) {
            return Ok(());
        }
        let cause = e.to_string();
        if let (Some(m), Some(a)) = (map_id, attempt) {
            // Only the attempt that failed is invalidated: another re-run may
            // have replaced it already. (Errors without an attempt come from a
            // status that is already missing: nothing to invalidate.)
            let mut inflight = self.lock_recomputes();
            if self.tracker.invalidate_attempt(shuffle_id, m, a, &cause) {
                // Storage keeps the first committed attempt; the re-run first
                // forgets the damaged one there so its own output can win.
                // Registered under the same lock as the invalidation, so no
                // other task starts a re-run that skips that step.
                let rerun = self.new_recompute(shuffle_id, m, Some(a), Some(cause.clone()));
                inflight.insert((shuffle_id, m), rerun);
            }
        }
        let reruns = self.tracker.missing_maps(shuffle_id).into_iter().map(|m| {
            // The error names one map; the others missing get their own reason.
            let cause = (map_id == Some(m)).then(|| cause.clone());
            self.recompute_map(shuffle_id, m, cause)
        });
        join_settled(reruns).await?;
        Ok(())
    }

    fn lock_recomputes(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, u32), Recompute>> {
        self.recomputes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-runs map `map_id` of `shuffle_id` unless its output is registered,
    /// joining a re-run already in flight. `cause`: the error that found the
    /// output missing, if it names this map.
    async fn recompute_map(
        self: &Arc<Self>,
        shuffle_id: u32,
        map_id: u32,
        cause: Option<String>,
    ) -> Result<()> {
        let rerun = {
            let mut inflight = self.lock_recomputes();
            match inflight.get(&(shuffle_id, map_id)) {
                Some(r) => r.clone(),
                None => {
                    // A re-run registers its status before it leaves the
                    // in-flight set, so this sees it (no duplicate re-run).
                    if self.tracker.attempt_of(shuffle_id, map_id).is_some() {
                        return Ok(());
                    }
                    let r = self.new_recompute(shuffle_id, map_id, None, cause);
                    inflight.insert((shuffle_id, map_id), r.clone());
                    r
                }
            }
        };
        rerun.await.map_err(|source| EngineError::RecomputeFailed {
            shuffle_id,
            map_id,
            source,
        })
    }

    /// A shared re-run of a lost map output (counted as recomputed, with
    /// why). With `damaged`, that attempt is first forgotten in storage;
    /// so is an output that went with a lost executor: the shuffle manager
    /// still holds it as its map's winner (in one process it outlives the
    /// executor), and the re-run would otherwise lose to it.
    fn new_recompute(
        self: &Arc<Self>,
        shuffle_id: u32,
        map_id: u32,
        damaged: Option<u32>,
        cause: Option<String>,
    ) -> Recompute {
        let damaged = damaged.or_else(|| self.tracker.lost_attempt(shuffle_id, map_id));
        let error = cause.unwrap_or_else(|| {
            let why = self
                .tracker
                .loss_reason(shuffle_id, map_id)
                .unwrap_or_else(|| "is missing".to_string());
            format!("map output of shuffle {shuffle_id} map {map_id} {why}")
        });
        self.bump(|s| {
            s.tasks_recomputed += 1;
            s.reasons.push(RetryReason::FetchFailure {
                shuffle_id,
                map_id,
                error,
            });
        });
        let job = Arc::clone(self);
        async move {
            let run = async {
                let producer = *job.shuffle_stage.get(&shuffle_id).ok_or_else(|| {
                    EngineError::internal(format!("shuffle {shuffle_id} has no stage"))
                })?;
                if let Some(a) = damaged {
                    job.manager
                        .invalidate_map_output(shuffle_id, map_id, a)
                        .await?;
                }
                Arc::clone(&job).run_task(producer, map_id as usize).await?;
                Ok::<_, EngineError>(())
            };
            let res = run.await.map_err(Arc::new);
            job.lock_recomputes().remove(&(shuffle_id, map_id));
            res
        }
        .boxed()
        .shared()
    }

    async fn run_attempt(
        self: &Arc<Self>,
        stage_id: usize,
        partition: usize,
        attempt: u32,
    ) -> Result<TaskOutput> {
        // Start the task's reads before its CPU slot is free (bounded: at
        // most `prefetch` tasks waiting with reads in flight).
        let prefetch = Arc::clone(&self.prefetch)
            .acquire_owned()
            .await
            .map_err(|_| EngineError::internal("prefetch budget closed"))?;
        if self.executors.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let executor = self.executors.place(partition);
        let metrics = Arc::new(TaskMetrics::default());
        let read_range = self
            .ranges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&stage_id)
            .and_then(|r| r.get(partition).cloned());
        let ctx = Arc::new(TaskContext {
            stage_id,
            partition,
            attempt,
            config: Arc::clone(&self.config),
            manager: Arc::clone(&self.manager),
            tracker: self.tracker.clone(),
            metrics: Arc::clone(&metrics),
            read_range: read_range.clone(),
            executor,
            broadcasts: Arc::clone(&self.broadcasts),
        });
        let plan = match self.stages.get(stage_id) {
            Some(stage) => Arc::clone(&stage.plan),
            None => Arc::clone(&self.root),
        };
        // An error (a missing input, say) surfaces in the task as before.
        // A task executes the first partition of its range (a union picks
        // its input by it; every read under it covers the whole range).
        let first = read_range.map_or(partition, |r| r.start as usize);
        let stream = crate::physical::execute(&plan, first, Arc::clone(&ctx));
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| EngineError::internal("task slots closed"))?;
        drop(prefetch);
        if self.executors.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let start = Instant::now();
        self.bump(|s| {
            s.tasks_run += 1;
            if let Some(e) = s.stages.get_mut(&stage_id) {
                e.1 = Some(e.1.map_or(start, |t| t.min(start)));
            }
        });
        let job = Arc::clone(self);
        let handle = tokio::spawn(async move {
            match job.stages.get(stage_id) {
                Some(stage) => {
                    // The slot goes back once the output is buffered; the
                    // attempt (and the stage) ends when it is committed.
                    let status = write_map_output(
                        stream?,
                        Arc::clone(&ctx),
                        stage.shuffle_id,
                        stage.partitioning.clone(),
                        Some(permit),
                        &job.io,
                    )
                    .await?;
                    job.tracker.register_map_output(status, executor);
                    Ok(TaskOutput::Map)
                }
                None => {
                    let _slot = permit;
                    let batches = collect(stream?).await?;
                    for b in &batches {
                        TaskMetrics::add(&ctx.metrics.rows_out, b.num_rows() as u64);
                        TaskMetrics::add(&ctx.metrics.bytes_out, b.get_array_memory_size() as u64);
                    }
                    Ok(TaskOutput::Result(batches))
                }
            }
        });
        let running = self.executors.register(executor, handle.abort_handle());
        if let Some(ev) = &self.hooks.events {
            ev.emit(Event::TaskStart {
                t_ms: 0.0,
                stage_id,
                partition,
                attempt,
                executor,
            });
            let key = TaskKey {
                stage_id,
                partition,
                attempt,
            };
            ev.track(key, &metrics);
        }
        if let Some(hook) = &self.hooks.task {
            hook(&TaskEvent {
                stage_id,
                shuffle_id: self.stages.get(stage_id).map(|s| s.shuffle_id),
                partition,
                attempt,
                executor,
            });
        }
        let joined = handle.await;
        let res = match (joined, running.killed_by()) {
            // An attempt still registered when its executor was lost failed
            // with it, even if its last poll had just finished (as Spark
            // fails every task of a lost executor): the outcome does not
            // depend on that race. What it committed stays first-wins.
            (_, Some(Kill::ExecutorLost(executor))) => Err(EngineError::ExecutorLost { executor }),
            (Ok(r), _) => r,
            (Err(e), _) if e.is_cancelled() => Err(EngineError::Cancelled),
            (Err(e), _) => Err(EngineError::internal(format!("task panicked: {e}"))),
        };
        drop(running);
        let end = Instant::now();
        let mut t = TaskSummary::from_metrics(&metrics);
        t.stage_id = stage_id;
        t.partition = partition;
        t.attempt = attempt;
        t.succeeded = res.is_ok();
        t.elapsed_ms = end.duration_since(start).as_secs_f64() * 1e3;
        t.error = res.as_ref().err().map(|e| e.to_string());
        if let Some(ev) = &self.hooks.events {
            ev.emit(Event::task_end(&t, executor));
        }
        self.bump(|s| {
            if let Some(e) = s.stages.get_mut(&stage_id) {
                if t.succeeded {
                    e.0.absorb(&t);
                }
                e.0.tasks.push(t);
                e.2 = Some(e.2.map_or(end, |x| x.max(end)));
            }
        });
        res
    }
}

/// The non-broadcast shuffle reads under `plan`: (shuffle, partitions).
fn partitioned_reads(plan: &dyn ExecutionPlan, out: &mut Vec<(u32, usize)>) {
    out.extend(plan.partitioned_read());
    for c in plan.children() {
        partitioned_reads(c.as_ref(), out);
    }
}

/// Groups neighbouring reduce partitions (with `bytes[p]` committed bytes
/// each) into ranges of about `target` bytes, like Spark's adaptive
/// coalescing: a range closes before the partition that would take it past
/// the target. Coalescing must not idle CPU slots, so the target shrinks to
/// the total over `slots`, and a result with fewer than `slots` ranges (a
/// skewed stage) splits its largest ranges until it has that many (or one
/// per partition); a stage that small never gets more ranges than slots
/// either (the neighbours with the fewest bytes merge). A stage over 94 KiB
/// at 2 slots thus runs 2 tasks, not 24; one over gigabytes runs one task
/// per `target` bytes.
pub fn coalesce(bytes: &[u64], target: u64, slots: usize) -> Vec<Range<u32>> {
    let total: u64 = bytes.iter().sum();
    let slots = slots.max(1);
    let per_slot = total.div_ceil(slots as u64);
    // A small stage is sized by its slots, not by the target: exactly one
    // range per slot (the greedy pass below can leave one more).
    let by_slots = target > per_slot;
    let target = target.min(per_slot).max(1);
    let mut out: Vec<Range<u32>> = Vec::new();
    let mut start = 0usize;
    let mut acc = 0u64;
    for (p, b) in bytes.iter().enumerate() {
        if p > start && acc + b > target {
            out.push(start as u32..p as u32);
            start = p;
            acc = 0;
        }
        acc += b;
    }
    if start < bytes.len() {
        out.push(start as u32..bytes.len() as u32);
    }
    let size = |r: &Range<u32>| -> u64 { bytes[r.start as usize..r.end as usize].iter().sum() };
    while by_slots && out.len() > slots {
        // Merge the neighbours with the fewest bytes together.
        let Some(i) = (0..out.len() - 1).min_by_key(|i| size(&out[*i]) + size(&out[*i + 1])) else {
            break;
        };
        let merged = out[i].start..out[i + 1].end;
        out.splice(i..=i + 1, [merged]);
    }
    while out.len() < slots.min(bytes.len()) {
        let Some(i) = (0..out.len())
            .filter(|i| out[*i].len() > 1)
            .max_by_key(|i| size(&out[*i]))
        else {
            break;
        };
        // Cut where the range's bytes are halved (at least one partition each side).
        let r = out[i].clone();
        let half = size(&r).div_ceil(2);
        let mut acc = 0;
        let mut cut = r.start + 1;
        for p in r.start..r.end - 1 {
            acc += bytes[p as usize];
            cut = p + 1;
            if acc >= half {
                break;
            }
        }
        out.splice(i..=i, [r.start..cut, cut..r.end]);
    }
    out
}

/// `Root <- child <- ...` along the first-child path, plus side inputs.
fn describe_chain(plan: &dyn ExecutionPlan) -> String {
    let mut names = Vec::new();
    fn go(p: &dyn ExecutionPlan, names: &mut Vec<String>) {
        names.push(p.name().to_string());
        for c in p.children() {
            go(c.as_ref(), names);
        }
    }
    go(plan, &mut names);
    names.join(" <- ")
}

/// Awaits every future and then returns the first error, if any.
///
/// Unlike `try_join_all`, a failure does not drop the sibling futures while
/// their spawned task attempts are still running: a failed job returns only
/// once none of its tasks can write any more, so the cleanup that follows a
/// failure really leaves nothing behind.
async fn join_settled<T, F>(futs: impl IntoIterator<Item = F>) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    futures::future::join_all(futs).await.into_iter().collect()
}

/// A stage's operators in pre-order, for its [`StageSummary`].
fn operator_tree(plan: &dyn ExecutionPlan) -> Vec<crate::metrics::OperatorSummary> {
    fn go(
        p: &dyn ExecutionPlan,
        depth: usize,
        out: &mut Vec<crate::metrics::OperatorSummary>,
    ) -> usize {
        let index = out.len();
        out.push(crate::metrics::OperatorSummary {
            index,
            depth,
            name: p.name().to_string(),
            key: crate::physical::operator_key(p),
            ..Default::default()
        });
        for c in p.children() {
            let ci = go(c.as_ref(), depth + 1, out);
            out[index].children.push(ci);
        }
        index
    }
    let mut out = Vec::new();
    go(plan, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesce_groups_small_neighbours_and_keeps_the_slots_busy() {
        // 24 partitions over 94 KiB at 2 slots: 2 tasks, not 24.
        let tiny = vec![4 << 10; 24];
        assert_eq!(coalesce(&tiny, 32 << 20, 2), vec![0..12, 12..24]);
        // Uneven small partitions still give one range per slot, not one more
        // (greedy at total/2 would close 0..1 and 1..2 and leave 2..3).
        assert_eq!(
            coalesce(&[13728, 13352, 1144], 32 << 20, 2),
            vec![0..1, 1..3]
        );
        // A big stage keeps one task per target.
        let big = vec![8 << 20; 64];
        let r = coalesce(&big, 32 << 20, 2);
        assert_eq!(r.len(), 16);
        assert!(r.iter().all(|r| r.len() == 4), "{r:?}");
        // Ranges cover every partition once, in order.
        let skewed = [5, 0, 0, 5, 90, 0, 0, 0];
        let r = coalesce(&skewed, 1 << 20, 4);
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r.first().map(|r| r.start), Some(0));
        assert_eq!(r.last().map(|r| r.end), Some(8));
        assert!(r.windows(2).all(|w| w[0].end == w[1].start), "{r:?}");
        // Never more slots than partitions; all-empty stages work.
        assert_eq!(coalesce(&[0, 0, 0], 1 << 20, 8), vec![0..1, 1..2, 2..3]);
        assert_eq!(coalesce(&[0; 6], 1 << 20, 1), vec![0..6]);
    }
}
