//! # shuffle-datafusion: Apache DataFusion on Shovel
//!
//! A DataFusion user adds this crate and a few lines ([`ShovelBuilder`]) and
//! every hash repartition of their queries goes through a Shovel
//! [`shuffle_core::ShuffleManager`]: map outputs committed on local disk or
//! in S3, read back by partition, as Shovel's own engine does.
//!
//! ```text
//!  SQL / DataFrame ─▶ DataFusion logical + physical planning (its own rules)
//!        ─▶ ShovelExchangeRule (last): RepartitionExec(Hash(keys, n))
//!                                      ⇒ ShovelExchangeExec(Hash(keys, n))
//!  execution:  input partitions ─ map tasks ─▶ shuffle_arrow::MapTaskWriter ─▶ ShuffleManager
//!              output partition p ◀─ shuffle_arrow::read_partitions(p) ◀────────┘
//! ```
//!
//! - [`rule`]: which repartitions are replaced, and when.
//! - [`exchange`]: the operator (writer and reader sides), its metrics
//!   (`shuffle_bytes_written`, `shuffle_records_read`, ... in `EXPLAIN
//!   ANALYZE`), cleanup.
//! - [`spill`]: DataFusion's spill files (sorts, aggregates, ...) through
//!   Shovel's spill store: local files in Shovel's spill directory, or, with
//!   `spill.to_s3`, uploaded to S3 off the operator's thread.
//! - [`memory`]: DataFusion's `MemoryPool` over Shovel's, so DataFusion's
//!   operators and Shovel's map-output buffers share one `memory.limit`.
//! - [`builder`]: [`ShovelBuilder`] installs all three into a
//!   `SessionStateBuilder`.
//! - [`error`]: Shovel failures as DataFusion errors naming the shuffle, map
//!   and object. DataFusion has no stage retry: a lost or corrupt map output
//!   fails the query (re-run it).
//!
//! Rows land in the same partitions as with DataFusion's `RepartitionExec`
//! (the exchange uses DataFusion's partitioner), and blocks are
//! [`shuffle_arrow::codec`] blocks, the format Shovel's engine writes.
//!
//! `shovel q80 --engine datafusion` runs TPC-DS q80 this way; the
//! `datafusion_sql` example shows the few lines a DataFusion user adds.

pub mod builder;
pub mod error;
pub mod exchange;
pub mod memory;
pub mod rule;
pub mod spill;

pub use builder::ShovelBuilder;
pub use exchange::{ShovelExchangeExec, ShuffleIds};
pub use memory::ShovelMemoryPool;
pub use rule::ShovelExchangeRule;
pub use spill::ShovelTempFiles;
