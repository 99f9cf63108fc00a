//! Memory accounting: one pool per process (or job), reservations per consumer.
//!
//! ```text
//!            MemoryPool (limit)
//!   ┌───────────┬──────────────┬──────────────┐
//!   │ map buffer│ hash agg     │ join build   │ ...  MemoryReservation each
//!   └───────────┴──────────────┴──────────────┘
//!   try_grow(n) fails when used + n > limit  ─▶  the consumer spills, then retries
//! ```
//!
//! A reservation frees what it holds when dropped, so an aborted task or an
//! early return can never leak budget. The pool only counts bytes the
//! consumers declare; it does not allocate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{Error, Result};

/// A shared memory budget.
#[derive(Debug)]
pub struct MemoryPool {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// A pool without a limit.
    pub fn unbounded() -> Arc<Self> {
        Self::new(usize::MAX)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes currently reserved.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Most bytes ever reserved at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Bytes still free.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// A new, empty reservation named for error messages.
    pub fn reservation(self: &Arc<Self>, consumer: impl Into<String>) -> MemoryReservation {
        MemoryReservation {
            pool: Arc::clone(self),
            consumer: consumer.into(),
            size: 0,
        }
    }

    fn try_add(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n) else {
                return false;
            };
            if next > self.limit {
                return false;
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn add(&self, n: usize) {
        let next = self.used.fetch_add(n, Ordering::AcqRel) + n;
        self.peak.fetch_max(next, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes held by one consumer; released on drop.
#[derive(Debug)]
pub struct MemoryReservation {
    pool: Arc<MemoryPool>,
    consumer: String,
    size: usize,
}

impl MemoryReservation {
    /// Bytes held.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }

    /// Grows by `n` bytes if the pool has room; otherwise the caller should spill.
    pub fn try_grow(&mut self, n: usize) -> Result<()> {
        if self.pool.try_add(n) {
            self.size += n;
            Ok(())
        } else {
            Err(Error::MemoryExhausted {
                consumer: self.consumer.clone(),
                requested: n,
                available: self.pool.available(),
                limit: self.pool.limit,
            })
        }
    }

    /// Grows by `n` bytes even past the limit (for memory already in use that
    /// cannot be given back, such as the one block being spilled).
    pub fn grow(&mut self, n: usize) {
        self.pool.add(n);
        self.size += n;
    }

    /// Gives back up to `n` bytes.
    pub fn shrink(&mut self, n: usize) {
        let n = n.min(self.size);
        self.pool.sub(n);
        self.size -= n;
    }

    /// Sets the held size to `n`, growing without a limit check if needed.
    pub fn resize(&mut self, n: usize) {
        if n > self.size {
            self.grow(n - self.size);
        } else {
            self.shrink(self.size - n);
        }
    }

    /// Sets the held size to `n`, failing if growing does not fit.
    pub fn try_resize(&mut self, n: usize) -> Result<()> {
        if n > self.size {
            self.try_grow(n - self.size)
        } else {
            self.shrink(self.size - n);
            Ok(())
        }
    }

    /// Gives back everything; returns how much that was.
    pub fn free(&mut self) -> usize {
        let n = self.size;
        self.shrink(n);
        n
    }
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        self.free();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_the_limit_and_free_on_drop() {
        let pool = MemoryPool::new(100);
        let mut a = pool.reservation("a");
        a.try_grow(60).expect("fits");
        let mut b = pool.reservation("b");
        let err = b.try_grow(50).expect_err("over the limit");
        assert!(err.to_string().contains("b asked for 50"), "{err}");
        b.try_grow(40).expect("fits exactly");
        assert_eq!(pool.used(), 100);
        drop(a);
        assert_eq!(pool.used(), 40);
        b.shrink(100);
        assert_eq!(pool.used(), 0);
        assert_eq!(pool.peak(), 100);
    }
}
