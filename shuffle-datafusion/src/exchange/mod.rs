//! The Shovel exchange: a hash repartition whose data goes through a
//! [`shuffle_core::ShuffleManager`] (local disk or S3) instead of in-memory
//! channels.
//!
//! ```text
//!             output partition p (any of them, first one triggers the map stage)
//!                   │ execute(p)
//!  ShovelExchangeExec ── OnceCell: register shuffle S, then for every map task m < k
//!                   │      (concurrently; k = map_tasks, at most the inputs):
//!                   │      MapTask m = select_all(input.execute(i) for i ≡ m mod k)
//!                   │        ─▶ DataFusion BatchPartitioner (hash % n, DataFusion's seed)
//!                   │        ─▶ shuffle_arrow::MapTaskWriter.write_to(p, batch)  (held until 64 KiB)
//!                   │        ─▶ flush ─▶ commit
//!                   │      ─▶ Vec<MapStatus>  (every map output committed: the barrier)
//!                   ▼
//!  shuffle_arrow::read_partitions(S, statuses, p..p+1).coalesce_to(batch_size) ─▶ RecordBatch stream
//! ```
//!
//! The reader coalesces because DataFusion 55's `RepartitionExec` does (and
//! the planner no longer puts a `CoalesceBatchesExec` above one): without
//! it, every operator above an exchange would see one small batch per map
//! task and partition.
//!
//! One node holds both sides: in a single DataFusion process the readers
//! pull, so the map stage runs when the first output partition is polled
//! and the others wait for it (a stage barrier, as in Spark). A distributed
//! scheduler (Ballista) would split the two sides into stages.
//!
//! The shuffle is registered per execution (a fresh id from
//! [`ShuffleIds`]) and removed when the plan is dropped; a query that fails
//! or stops early leaves its objects to the manager's `cleanup_app`.

mod exec;
mod map_task;
mod metrics;

pub use exec::{ShovelExchangeExec, ShuffleIds};
pub use metrics::{ReadMetrics, WriteMetrics};
