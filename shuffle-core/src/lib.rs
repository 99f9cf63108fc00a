//! # shuffle-core: the contract every engine programs against
//!
//! Shovel moves a Spark-style engine's intermediate data (shuffle) and memory
//! overflow (spill) through a pluggable store, so that storage scales apart
//! from compute and, on S3, outlives the executors that wrote it.
//!
//! ```text
//!  engine map task                                        engine reduce task
//!  ┌───────────────────────┐                              ┌──────────────────┐
//!  │ MapOutputBuffer       │ any partition order          │ ShuffleReader    │
//!  │  lz4 frames in memory │──spill──▶ SpillStore         │  ranged reads,   │
//!  │  (MemoryReservation)  │◀─merge──  (local | S3)       │  crc checks,     │
//!  └──────────┬────────────┘                              │  bounded fetch   │
//!             ▼ partitions in order                       └────────▲─────────┘
//!  ┌───────────────────────┐   data + index objects    ┌──────────┴─────────┐
//!  │ MapOutputWriter       │──────────────────────────▶│ ShuffleStore       │
//!  │  commit / abort       │   (first attempt wins)    │  local dir | S3    │
//!  └───────────────────────┘                           └────────────────────┘
//! ```
//!
//! - [`ShuffleManager`] is the contract (register, write, read, remove);
//!   [`StoreShuffleManager`] implements it once over any [`ShuffleStore`],
//!   the small trait a backend implements (see [`store`]). [`status`] holds
//!   the values passed between writer, reader and manager ([`MapStatus`]);
//!   [`layout`] names objects and parses names back (the `gc` grammar).
//! - [`format`] specifies the bytes on storage; [`memory`] the budget;
//!   [`spill`] where overflow goes; [`metrics`] and [`config`] what is
//!   counted and configured; [`parse`] reads sizes, durations and booleans
//!   for every crate; [`tier`] keeps local copies in front of a durable
//!   store so same-process readers skip the network.
//! - [`testing`] (feature `testing`) is the conformance suite every backend
//!   runs: the suite is the specification.

pub mod buffer;
pub mod config;
pub mod error;
pub mod format;
pub mod fs;
pub mod gc;
pub mod job;
pub mod layout;
pub mod manager;
pub mod memory;
pub mod metrics;
pub mod parse;
pub mod reader;
pub mod spill;
pub mod status;
pub mod store;
pub mod tier;
pub mod writer;

#[cfg(feature = "testing")]
pub mod testing;

pub use buffer::MapOutputBuffer;
pub use config::{BackendKind, ShuffleConfig};
pub use error::{Error, Result};
pub use format::Codec;
pub use layout::{Layout, ObjectKind, ShovelObject};
pub use manager::{
    ShuffleManager, ShuffleManagerExt, StoreShuffleManager, StoreShuffleManagerBuilder,
};
pub use memory::{MemoryPool, MemoryReservation};
pub use metrics::{MetricsSnapshot, ShuffleMetrics};
pub use reader::{Block, ReaderOptions, ShuffleReader};
pub use spill::{
    LocalSpillStore, ObjectSpillStore, SpillFile, SpillReader, SpillStore, SpillWriter,
};
pub use status::{KeyLog, MapStatus, ShuffleHandle};
pub use store::{ObjectKey, ObjectMeta, ObjectSink, PutOutcome, ShuffleStore};
pub use tier::{TierConfig, TierUsage, TieredStore};
pub use writer::{MapOutputWriter, PartitionWriter};
