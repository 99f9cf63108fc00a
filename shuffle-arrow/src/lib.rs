//! # shuffle-arrow: where Arrow meets the shuffle
//!
//! shuffle-core and the backends move bytes; this crate turns Arrow record
//! batches into shuffle blocks and back, so that every engine on Shovel
//! (Shovel's own engine, the DataFusion adapter, ...) writes the same blocks
//! and a map output written by one can be read by another.
//!
//! ```text
//!  map task                                                   reduce task
//!  batches + key columns                                      BatchReader (Stream<RecordBatch>)
//!     │                                                          ▲ decode_batch (codec)
//!     ▼ Partitioner (hash: a partition per row;                  │
//!     │   round-robin | single: sub-batches)                     │
//!  PendingRows (rows wait per partition)                      manager.reader(shuffle,
//!     ▼ BatchEncoder (codec: one IPC record-batch message)        statuses, partitions)
//!  MapOutputBuffer.write_block(p, bytes, rows)                   ▲
//!     ▼ commit                                                   │
//!  MapStatus ──────────── the engine's map-output tracker ───────┘
//! ```
//!
//! - [`codec`]: the block format (one IPC record-batch message, schema
//!   known to both sides).
//! - [`hash`]: the stable hash every process agrees on; [`partition`]: the
//!   partitioner over *evaluated* key columns (engines evaluate their own
//!   expressions, so this crate knows no expression language).
//! - [`pending`]: a partition's rows wait, as row numbers into the input
//!   batches, until they fill a block; then they are gathered once.
//! - [`MapTaskWriter`]: one map task attempt's batches into one committed
//!   map output; [`read_partitions`]: a partition range of committed outputs
//!   back as a stream of batches.
//!
//! Everything goes through the public API of [`shuffle_core::ShuffleManager`],
//! so it works over any backend (local disk, S3).

pub mod codec;
pub mod error;
pub mod hash;
pub mod partition;
pub mod pending;
pub mod reader;
pub mod writer;

pub use codec::{decode_batch, BatchEncoder};
pub use error::{Error, Result};
pub use partition::{split_by_index, PartitionScheme, Partitioner};
pub use pending::PendingRows;
pub use reader::{read_partitions, BatchReader, ReadStats};
pub use writer::{MapTaskWriter, WriteStats};
