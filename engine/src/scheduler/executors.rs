//! Executors: where tasks run, and what losing one costs.
//!
//! The engine runs in one process, but it models Spark's executors so that
//! losing one can be exercised end to end. A session has
//! `engine.executors` executors; a task's attempts are placed on executor
//! `partition % executors` (a stable placement, so a map task's outputs of
//! every shuffle sit on one executor). Every running attempt is registered
//! here with an abort handle.
//!
//! [`Executors::lose`] is what the cluster manager reports when an executor
//! dies:
//!
//! ```text
//!   lose(e) ──▶ abort e's running attempts ──▶ they fail with ExecutorLost
//!     │                                         and are re-run (not counted
//!     │                                         as task failures)
//!     └─ storage not reliable (local disk)? ──▶ forget every map output e
//!          committed (its files went with it); readers then find them
//!          missing, and the scheduler re-runs exactly those maps
//!        storage reliable (S3)? ──▶ keep them: nothing finished re-runs
//!   and drop the broadcast tables built on e (its memory is gone too)
//! ```
//!
//! [`Executors::cancel`] stops everything (Ctrl-C): running attempts are
//! aborted, no new ones start, and jobs fail with `Cancelled` once every
//! attempt has ended, so the cleanup that follows sees no more writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use shuffle_core::MapStatus;
use tokio::task::AbortHandle;

use super::tracker::MapOutputTracker;
use crate::runtime::broadcast::BroadcastCache;

/// What losing an executor did.
#[derive(Debug, Clone, Default)]
pub struct ExecutorLoss {
    /// The executor that was lost.
    pub executor: usize,
    /// Running task attempts that were aborted with it. (One finishing at
    /// that very instant keeps its own result, so the job summary may count
    /// fewer attempts killed.)
    pub tasks_killed: usize,
    /// Committed map outputs that were unregistered because they lived on
    /// the executor's disk (empty with reliable storage).
    pub outputs_lost: Vec<MapStatus>,
}

struct Running {
    executor: usize,
    abort: AbortHandle,
    /// Set when aborted on purpose, so its failure reads as such.
    killed: Option<Kill>,
}

/// Why an attempt was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Its executor was lost.
    ExecutorLost(usize),
    /// The session was cancelled.
    Cancelled,
}

/// The executors of a session and the task attempts running on them.
#[derive(Default)]
pub struct Executors {
    count: usize,
    next_id: AtomicU64,
    running: Mutex<HashMap<u64, Running>>,
    cancelled: AtomicBool,
    /// Broadcast tables of running jobs, dropped per executor on loss.
    broadcasts: Mutex<Vec<Weak<BroadcastCache>>>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("count", &self.count)
            .field("running", &self.lock_running().len())
            .finish()
    }
}

/// A running attempt's registration; unregisters on drop.
pub(crate) struct RunningGuard<'a> {
    executors: &'a Executors,
    id: u64,
}

impl RunningGuard<'_> {
    /// Why this attempt was aborted, if it was.
    pub(crate) fn killed_by(&self) -> Option<Kill> {
        self.executors
            .lock_running()
            .get(&self.id)
            .and_then(|r| r.killed)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.executors.lock_running().remove(&self.id);
    }
}

impl Executors {
    /// `count` executors (at least one).
    pub fn new(count: usize) -> Self {
        Self {
            count: count.max(1),
            ..Self::default()
        }
    }

    /// Number of executors.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The executor that runs `partition`'s attempts.
    pub fn place(&self, partition: usize) -> usize {
        partition % self.count
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a running attempt on `executor` (aborted at once if the
    /// session is cancelled).
    pub(crate) fn register(&self, executor: usize, abort: AbortHandle) -> RunningGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            // Under the lock `cancel` takes, so no attempt slips past it.
            let mut running = self.lock_running();
            let killed = self.is_cancelled().then_some(Kill::Cancelled);
            if killed.is_some() {
                abort.abort();
            }
            running.insert(
                id,
                Running {
                    executor,
                    abort,
                    killed,
                },
            );
        }
        RunningGuard {
            executors: self,
            id,
        }
    }

    /// Lets losing an executor drop its copies in a job's broadcast cache
    /// (held weakly: it goes with the job).
    pub(crate) fn attach_broadcasts(&self, cache: &Arc<BroadcastCache>) {
        let mut all = self.broadcasts.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(cache));
    }

    /// Whether [`Executors::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Cancels every running and future attempt; returns how many were
    /// running. Jobs then fail with `EngineError::Cancelled`.
    pub fn cancel(&self) -> usize {
        let mut running = self.lock_running();
        self.cancelled.store(true, Ordering::SeqCst);
        for r in running.values_mut() {
            r.killed = Some(Kill::Cancelled);
            r.abort.abort();
        }
        running.len()
    }

    /// Loses `executor`: kills its running attempts and, unless the shuffle
    /// storage is reliable, unregisters the map outputs it committed.
    ///
    /// The executor is replaced at once (its partitions' next attempts run on
    /// a fresh executor with the same id and an empty disk).
    pub fn lose(
        &self,
        executor: usize,
        tracker: &MapOutputTracker,
        reliable_storage: bool,
    ) -> ExecutorLoss {
        let mut killed = 0;
        {
            let mut running = self.lock_running();
            for r in running.values_mut().filter(|r| r.executor == executor) {
                r.killed.get_or_insert(Kill::ExecutorLost(executor));
                r.abort.abort();
                killed += 1;
            }
        }
        for cache in self
            .broadcasts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
        {
            cache.drop_executor(executor);
        }
        let outputs_lost = if reliable_storage {
            Vec::new()
        } else {
            tracker.invalidate_executor(executor, &format!("lost with executor {executor}"))
        };
        tracing::warn!(
            executor,
            tasks_killed = killed,
            outputs_lost = outputs_lost.len(),
            "executor lost"
        );
        ExecutorLoss {
            executor,
            tasks_killed: killed,
            outputs_lost,
        }
    }
}
