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
//! - [`error`]: Shovel failures as DataFusion errors naming the shuffle, map
//!   and object. DataFusion has no stage retry: a lost or corrupt map output
//!   fails the query.
//!
//! Rows land in the same partitions as with DataFusion's `RepartitionExec`
//! (the exchange uses DataFusion's partitioner), and blocks are
//! [`shuffle_arrow::codec`] blocks, the format Shovel's engine writes.
//!
//! Spill files, the shared memory pool and `shovel q80 --engine datafusion`
//! come in later steps of issue 12.

pub mod builder;
pub mod error;
pub mod exchange;
pub mod rule;

pub use builder::ShovelBuilder;
pub use exchange::{ShovelExchangeExec, ShuffleIds};
pub use rule::ShovelExchangeRule;
