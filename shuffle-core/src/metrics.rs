//! Shuffle and spill metrics: lock-free counters shared by every writer,
//! reader and store of one manager, plus a plain snapshot for reports.
//!
//! Times are summed across tasks (not wall-clock): `write_time_ns` is time
//! spent encoding and handing frames to storage, `fetch_wait_ns` is time a
//! reader's consumer waited for bytes that had not arrived yet.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident, $snap:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: AtomicU64,)*
        }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct $snap {
            $($(#[$fmeta])* pub $field: u64,)*
        }

        impl $name {
            /// Copies every counter.
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }

        impl $snap {
            /// `(name, value)` for every counter, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field),)*]
            }

            /// Counter-wise difference `self - earlier` (for per-stage deltas).
            pub fn delta(&self, earlier: &Self) -> Self {
                $snap { $($field: self.$field.saturating_sub(earlier.$field),)* }
            }
        }
    };
}

counters!(
    /// Storage requests made by a backend, by type.
    RequestMetrics, RequestSnapshot {
        put, get, list, delete, head,
        multipart_create, multipart_part, multipart_complete, multipart_abort,
        /// Requests retried (each retry counts once).
        retries,
        /// Retries caused by throttling (503 SlowDown and the like).
        throttles,
        bytes_uploaded, bytes_downloaded,
    }
);

impl RequestSnapshot {
    /// Requests of every type (not retries, throttles or bytes).
    pub fn total(&self) -> u64 {
        self.put
            + self.get
            + self.list
            + self.delete
            + self.head
            + self.multipart_create
            + self.multipart_part
            + self.multipart_complete
            + self.multipart_abort
    }
}

counters!(
    /// Shuffle write, read and spill counters.
    ShuffleCounters, ShuffleSnapshot {
        /// Stored (compressed, framed) bytes of committed map outputs.
        bytes_written,
        /// Raw bytes handed to writers.
        raw_bytes_written,
        records_written,
        frames_written,
        maps_committed,
        maps_aborted,
        /// Commits that lost to an earlier successful attempt of the same map.
        commit_conflicts,
        /// Stored bytes fetched by readers.
        bytes_read,
        /// Raw bytes handed to readers' consumers.
        raw_bytes_read,
        frames_read,
        /// Number of spill files written.
        spill_count,
        /// Stored bytes spilled (all spill stores).
        spill_bytes,
        /// Stored bytes read back from spills.
        spill_read_bytes,
        write_time_ns,
        fetch_wait_ns,
    }
);

counters!(
    /// The local tier in front of a durable store (see `tier`).
    CacheCounters, CacheSnapshot {
        /// Reads served from a local copy (no request).
        hits,
        /// Reads the tier passed to the store.
        misses,
        /// Bytes served from local copies.
        bytes_served,
        /// Bytes of copies dropped to stay within `cache.memory` and `cache.disk`.
        bytes_evicted,
        /// Local I/O errors (full disk, quota, unusable `cache.dir`) that
        /// dropped a copy; the store served instead.
        fall_throughs,
    }
);

/// All metrics of one shuffle manager.
#[derive(Debug, Default)]
pub struct ShuffleMetrics {
    pub shuffle: ShuffleCounters,
    /// Backend request counts (zero for backends that make none).
    pub requests: RequestMetrics,
    /// The local tier (zero without one).
    pub cache: CacheCounters,
}

/// A snapshot of [`ShuffleMetrics`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub shuffle: ShuffleSnapshot,
    pub requests: RequestSnapshot,
    pub cache: CacheSnapshot,
}

impl ShuffleMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            shuffle: self.shuffle.snapshot(),
            requests: self.requests.snapshot(),
            cache: self.cache.snapshot(),
        }
    }
}

impl MetricsSnapshot {
    pub fn delta(&self, earlier: &Self) -> Self {
        Self {
            shuffle: self.shuffle.delta(&earlier.shuffle),
            requests: self.requests.delta(&earlier.requests),
            cache: self.cache.delta(&earlier.cache),
        }
    }
}

/// Adds to a counter (relaxed: counters are statistics, not synchronisation).
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
