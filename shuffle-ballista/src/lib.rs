//! # shuffle-ballista: Apache Ballista on Shovel
//!
//! Ballista (DataFusion's distributed engine: a scheduler and executor
//! processes) writes each stage's output to the executor's local disk and
//! serves it to other executors over Arrow Flight, so a lost executor loses
//! its outputs and a full disk fails the job. With this crate every
//! executor writes and reads every shuffle stage through a Shovel
//! [`shuffle_core::ShuffleManager`] (local disk shared by the executors, or
//! S3), through Ballista's public extension points only:
//!
//! ```text
//!  client (SessionContext::remote_with_state, shovel.app_id set)
//!     ─▶ Ballista scheduler: plans, cuts stages, assigns tasks       (unchanged)
//!     ─▶ Ballista executor with ShovelExecutionEngine:
//!          stage writer   ⇒ ShovelStageExec: one map output per task  ─▶ Shovel store
//!          shuffle reader ⇒ ShovelShuffleReaderExec                  ◀─ Shovel store
//!          Flight service ⇒ ShovelFlightService: the client's fetch of
//!                           the last stage                           ◀─ Shovel store
//! ```
//!
//! - [`engine`]: the `ExecutionEngine` that swaps the writer and readers.
//! - [`stage`]: one task's output as one committed map output.
//! - [`reader`]: a stage's input partitions read from committed map outputs.
//! - [`flight`]: the executor's Flight service, serving the job's results
//!   from the store.
//! - [`ids`]: how a task's output is named (the `file_id` Ballista carries).
//! - [`options`]: `shovel.app_id`, the job's namespace, set by the client.
//! - [`cluster`]: running Ballista's scheduler and a Shovel executor.
//!
//! What Ballista still decides: on losing an executor, its scheduler marks
//! the lost executor's completed outputs as gone and re-runs the tasks that
//! wrote them, whatever the storage (its public extension points cannot
//! say "these outputs are on reliable storage"). Shovel keeps the answer
//! right and the re-run writes a new stage attempt; see the README.

pub mod cluster;
pub mod engine;
pub mod flight;
pub mod ids;
pub mod options;
pub mod reader;
pub mod stage;

pub use engine::{EngineCounters, ManagerFactory, ShovelExecutionEngine, TaskRecord};
pub use options::ShovelOptions;
