//! Broadcast hash tables built once per stage and executor.
//!
//! Every task of a broadcast join reads the same build side whole. Built
//! per task, a stage of N tasks hashed it N times and held N copies; here
//! the first task of a stage on an executor builds it and the others on
//! that executor share it (Spark keeps one broadcast per executor too):
//!
//! ```text
//!   task 0 ─┐                       ┌─ builds (one reservation) ─┐
//!   task 1 ─┼─▶ (stage, executor, op) OnceCell ─────────────────▶ Arc<table>
//!   task 2 ─┘                       └─ others wait, then share ──┘
//! ```
//!
//! The table's memory is reserved once, by the build, and freed when the
//! last task holding it ends and the job drops the cache. Losing an
//! executor drops that executor's copies ([`BroadcastCache::drop_executor`]):
//! its next attempts rebuild on the replacement. A build that fails (or is
//! cancelled) leaves the cell empty, so the next task tries again. A build
//! side too big for memory is recorded as "not shared": each task then runs
//! the spilling (grace) join on its own, as before.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::error::Result;

/// A built table, type-erased (the join downcasts it).
pub type Built = Arc<dyn Any + Send + Sync>;

/// What a shared build is keyed by: the stage, the executor and the
/// operator (its address in the job's plan, which lives as long as the job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BroadcastKey {
    pub stage_id: usize,
    pub executor: usize,
    pub op: usize,
}

/// Shared broadcast builds of one job.
#[derive(Debug, Default)]
pub struct BroadcastCache {
    cells: Mutex<HashMap<BroadcastKey, Arc<OnceCell<Option<Built>>>>>,
    builds: AtomicU64,
}

impl BroadcastCache {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<BroadcastKey, Arc<OnceCell<Option<Built>>>>> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared build for `key`, running `build` if no task built it yet.
    /// `Ok(None)`: the build side does not fit in memory and is not shared.
    pub async fn get_or_build<F, Fut>(&self, key: BroadcastKey, build: F) -> Result<Option<Built>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Built>>>,
    {
        let cell = Arc::clone(self.lock().entry(key).or_default());
        let built = cell
            .get_or_try_init(|| async {
                let b = build().await?;
                if b.is_some() {
                    self.builds.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, crate::error::EngineError>(b)
            })
            .await?;
        Ok(built.clone())
    }

    /// Drops the copies built on `executor` (it was lost).
    pub fn drop_executor(&self, executor: usize) {
        self.lock().retain(|k, _| k.executor != executor);
    }

    /// Tables built so far (each stage, executor and join at most once,
    /// unless an executor was lost).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}
