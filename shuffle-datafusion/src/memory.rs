//! One memory budget: DataFusion's operators reserve from Shovel's pool.
//!
//! ```text
//!   shuffle_core::MemoryPool (memory.limit)
//!   ┌──────────────────────────────┬─────────────────────────────┐
//!   │ "datafusion": one reservation│ Shovel map-output buffers,  │
//!   │  ▲ grow / shrink / try_grow  │ readers, the engine's ops   │
//!   └──┼───────────────────────────┴─────────────────────────────┘
//!      │
//!   ShovelMemoryPool (DataFusion's MemoryPool): sorts, aggregates, joins, ...
//! ```
//!
//! [`ShovelMemoryPool`] implements DataFusion's [`MemoryPool`] over a
//! [`shuffle_core::MemoryPool`]: every DataFusion reservation grows and
//! shrinks one Shovel reservation named `datafusion`, so DataFusion's
//! operators and Shovel's map-output buffers (the exchange's writers) draw
//! from the same `memory.limit`. When the pool is full, `try_grow` fails
//! with DataFusion's `ResourcesExhausted`, and DataFusion does what it does
//! with its own greedy pool: a sort or aggregate that can spill spills, an
//! operator that cannot fails the query. Shovel's buffers likewise spill
//! when DataFusion holds the budget.
//!
//! Sharing follows DataFusion's `FairSpillPool`, the pool DataFusion
//! recommends for queries that spill: an operator that cannot spill (a hash
//! join's build side, a merge's buffers) takes what is free, first come,
//! first served; an operator that can spill (a sort, an aggregate) may hold
//! at most an equal share of what the others leave, `(limit - Shovel's own
//! use - unspillable) / spillable consumers`, so one partition's sort cannot
//! starve another's merge. Shovel's buffers are counted as they come and go.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::common::human_readable_size;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// DataFusion's [`MemoryPool`] over Shovel's [`shuffle_core::MemoryPool`].
#[derive(Debug)]
pub struct ShovelMemoryPool {
    pool: Arc<shuffle_core::MemoryPool>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Everything DataFusion holds, as one Shovel consumer.
    held: shuffle_core::MemoryReservation,
    /// Registered DataFusion consumers that can spill.
    spillers: usize,
    /// Of `held`, what consumers that can spill hold.
    spillable: usize,
}

impl State {
    fn unspillable(&self) -> usize {
        self.held.size().saturating_sub(self.spillable)
    }
}

impl ShovelMemoryPool {
    /// DataFusion reservations drawn from `pool`.
    pub fn new(pool: Arc<shuffle_core::MemoryPool>) -> Self {
        let state = Mutex::new(State {
            held: pool.reservation("datafusion"),
            spillers: 0,
            spillable: 0,
        });
        Self { pool, state }
    }

    /// The Shovel pool this draws from.
    pub fn shovel_pool(&self) -> &Arc<shuffle_core::MemoryPool> {
        &self.pool
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The guarded values are counters updated together under the lock:
        // a panic elsewhere cannot leave them half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exhausted(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
        available: usize,
    ) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "Failed to allocate additional {} for {} with {} already allocated for this \
             reservation - {} remain available to it of Shovel's memory.limit of {} (shared \
             with Shovel's shuffle buffers); raise memory.limit (shovel --memory)",
            human_readable_size(additional),
            reservation.consumer().name(),
            human_readable_size(reservation.size()),
            human_readable_size(available),
            human_readable_size(self.pool.limit()),
        ))
    }
}

impl fmt::Display for ShovelMemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shovel(datafusion: {}, pool used: {}, memory.limit: {})",
            human_readable_size(self.reserved()),
            human_readable_size(self.pool.used()),
            human_readable_size(self.pool.limit())
        )
    }
}

impl MemoryPool for ShovelMemoryPool {
    fn name(&self) -> &str {
        "shovel"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.state().spillers += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            let mut state = self.state();
            state.spillers = state.spillers.saturating_sub(1);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let mut state = self.state();
        state.held.grow(additional);
        if reservation.consumer().can_spill() {
            state.spillable += additional;
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut state = self.state();
        state.held.shrink(shrink);
        if reservation.consumer().can_spill() {
            state.spillable = state.spillable.saturating_sub(shrink);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let mut state = self.state();
        if reservation.consumer().can_spill() {
            // What Shovel's own consumers and DataFusion's unspillable ones
            // leave, in equal shares among the consumers that can spill.
            let shovel_own = self.pool.used().saturating_sub(state.held.size());
            let share = self
                .pool
                .limit()
                .saturating_sub(shovel_own)
                .saturating_sub(state.unspillable())
                / state.spillers.max(1);
            if reservation.size() + additional > share {
                let available = share.saturating_sub(reservation.size());
                return Err(self.exhausted(reservation, additional, available));
            }
        }
        if state.held.try_grow(additional).is_err() {
            let available = self.pool.available();
            return Err(self.exhausted(reservation, additional, available));
        }
        if reservation.consumer().can_spill() {
            state.spillable += additional;
        }
        Ok(())
    }

    /// What DataFusion's operators hold (Shovel's own consumers are in
    /// [`shuffle_core::MemoryPool::used`]).
    fn reserved(&self) -> usize {
        self.state().held.size()
    }

    fn memory_limit(&self) -> MemoryLimit {
        match self.pool.limit() {
            usize::MAX => MemoryLimit::Infinite,
            n => MemoryLimit::Finite(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spillers_share_what_the_others_leave() {
        let shovel = shuffle_core::MemoryPool::new(1000);
        let pool: Arc<dyn MemoryPool> = Arc::new(ShovelMemoryPool::new(Arc::clone(&shovel)));
        let a = MemoryConsumer::new("a")
            .with_can_spill(true)
            .register(&pool);
        let b = MemoryConsumer::new("b")
            .with_can_spill(true)
            .register(&pool);
        a.try_grow(500).expect("a within its half");
        assert!(a.try_grow(1).is_err(), "a beyond its half");
        // An operator that cannot spill takes what is free.
        let join = MemoryConsumer::new("join").register(&pool);
        join.try_grow(200).expect("unspillable");
        // b's share is now (1000 - 200) / 2.
        let e = b.try_grow(401).expect_err("b beyond its share");
        assert!(e.to_string().contains("raise memory.limit"), "{e}");
        b.try_grow(300).expect("b within its share");
        assert_eq!(shovel.used(), 1000);
        // Shovel's own buffers draw from the same limit.
        let mut own = shovel.reservation("buffers");
        assert!(own.try_grow(1).is_err(), "the limit is shared");
        drop(a);
        own.try_grow(100).expect("freed by a");
        // b alone can spill: (1000 - 100 - 200) / 1.
        b.try_grow(400).expect("b's whole share");
        assert!(b.try_grow(1).is_err());
        assert_eq!(shovel.used(), 1000);
        drop((b, join, own));
        assert_eq!(shovel.used(), 0);
    }
}
