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
//! The pool is greedy (first come, first served), like DataFusion's
//! `GreedyMemoryPool`; it has no per-consumer fairness.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::common::human_readable_size;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};

/// DataFusion's [`MemoryPool`] over Shovel's [`shuffle_core::MemoryPool`].
#[derive(Debug)]
pub struct ShovelMemoryPool {
    pool: Arc<shuffle_core::MemoryPool>,
    /// Everything DataFusion holds, as one Shovel consumer.
    held: Mutex<shuffle_core::MemoryReservation>,
}

impl ShovelMemoryPool {
    /// DataFusion reservations drawn from `pool`.
    pub fn new(pool: Arc<shuffle_core::MemoryPool>) -> Self {
        let held = Mutex::new(pool.reservation("datafusion"));
        Self { pool, held }
    }

    /// The Shovel pool this draws from.
    pub fn shovel_pool(&self) -> &Arc<shuffle_core::MemoryPool> {
        &self.pool
    }

    fn held(&self) -> MutexGuard<'_, shuffle_core::MemoryReservation> {
        // The guarded value is a counter: a panic elsewhere cannot leave it
        // half-updated.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
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

    fn grow(&self, _reservation: &MemoryReservation, additional: usize) {
        self.held().grow(additional);
    }

    fn shrink(&self, _reservation: &MemoryReservation, shrink: usize) {
        self.held().shrink(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.held().try_grow(additional).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "Failed to allocate additional {} for {} with {} already allocated for this \
                 reservation - {} remain available of Shovel's memory.limit of {} (shared with \
                 Shovel's shuffle buffers); raise memory.limit (shovel --memory)",
                human_readable_size(additional),
                reservation.consumer().name(),
                human_readable_size(reservation.size()),
                human_readable_size(self.pool.available()),
                human_readable_size(self.pool.limit()),
            ))
        })
    }

    /// What DataFusion's operators hold (Shovel's own consumers are in
    /// [`shuffle_core::MemoryPool::used`]).
    fn reserved(&self) -> usize {
        self.held().size()
    }

    fn memory_limit(&self) -> MemoryLimit {
        match self.pool.limit() {
            usize::MAX => MemoryLimit::Infinite,
            n => MemoryLimit::Finite(n),
        }
    }
}
