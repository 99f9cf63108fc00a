//! Installing Shovel into a DataFusion session in a few lines.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use shuffle_core::ShuffleManager;

use crate::exchange::ShuffleIds;
use crate::memory::ShovelMemoryPool;
use crate::rule::ShovelExchangeRule;
use crate::spill::ShovelTempFiles;

/// Plugs Shovel into a DataFusion [`SessionStateBuilder`]: the exchange
/// rule, the spill-file factory and the shared memory pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use datafusion::execution::SessionStateBuilder;
/// use datafusion::prelude::SessionContext;
/// use shuffle_datafusion::ShovelBuilder;
///
/// // The application builds the manager from Shovel's config (local disk here).
/// let manager = shuffle_local::local_manager(shuffle_core::ShuffleConfig::default())?;
/// let state = ShovelBuilder::new(Arc::new(manager))
///     .install(SessionStateBuilder::new().with_default_features())?
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// ctx.sql("SELECT 1").await?.show().await?;
/// # Ok(())
/// # }
/// ```
///
/// The builder takes a ready [`ShuffleManager`] rather than a config: the
/// application chooses the backend (local, S3) once, and every engine it
/// runs shares that manager, its memory pool, its spill store and its
/// cleanup.
#[derive(Debug, Clone)]
pub struct ShovelBuilder {
    manager: Arc<dyn ShuffleManager>,
    ids: ShuffleIds,
    exchange: bool,
    spill: bool,
    memory: bool,
    spill_dir: Option<PathBuf>,
    map_tasks: usize,
}

impl ShovelBuilder {
    pub fn new(manager: Arc<dyn ShuffleManager>) -> Self {
        Self {
            manager,
            ids: ShuffleIds::default(),
            exchange: true,
            spill: true,
            memory: true,
            spill_dir: None,
            map_tasks: default_map_tasks(),
        }
    }

    /// Map tasks (and map outputs) per exchange, at most (default: the
    /// machine's available parallelism; 0: one per input partition).
    /// DataFusion runs every input partition of an exchange at once on its
    /// worker threads, so one output per worker keeps both cores busy and
    /// writes a fraction of the files or S3 objects (and requests) that
    /// one per input partition does: with `target_partitions` 8 on 2 cores,
    /// a quarter.
    pub fn map_tasks(mut self, n: usize) -> Self {
        self.map_tasks = n;
        self
    }

    /// The first shuffle id the exchanges use (default 0). Shuffle ids must
    /// be unique per manager: give each builder sharing a manager a
    /// disjoint range (or its own manager / app id).
    pub fn first_shuffle_id(mut self, id: u32) -> Self {
        self.ids = ShuffleIds::starting_at(id);
        self
    }

    /// Whether hash repartitions go through Shovel (default true).
    pub fn exchange(mut self, on: bool) -> Self {
        self.exchange = on;
        self
    }

    /// Whether DataFusion's spill files go through Shovel's spill store
    /// (default true; see [`crate::spill`]).
    pub fn spill(mut self, on: bool) -> Self {
        self.spill = on;
        self
    }

    /// Whether DataFusion's operators reserve memory from the manager's pool
    /// (default true; see [`crate::memory`]).
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.memory = on;
        self
    }

    /// The local directory DataFusion's spill files are written in (and
    /// kept in, with a local spill store). Default:
    /// `<temp dir>/shovel-datafusion/<app id>`; the `shovel` binary passes
    /// `<first local dir>/spill/<app id>`, the local spill store's own.
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// The exchange rule on its own, for sessions assembled by hand.
    pub fn exchange_rule(&self) -> Arc<ShovelExchangeRule> {
        Arc::new(
            ShovelExchangeRule::new(Arc::clone(&self.manager), self.ids.clone())
                .with_map_tasks(self.map_tasks),
        )
    }

    /// The spill-file factory on its own (for a hand-built `DiskManager`).
    pub fn temp_files(&self) -> Arc<ShovelTempFiles> {
        let dir = self.spill_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("shovel-datafusion")
                .join(self.manager.app_id())
        });
        Arc::new(ShovelTempFiles::new(
            Arc::clone(self.manager.spill_store()),
            Arc::clone(self.manager.metrics()),
            dir,
        ))
    }

    /// The memory pool on its own (for a hand-built `RuntimeEnv`).
    pub fn memory_pool(&self) -> Arc<ShovelMemoryPool> {
        Arc::new(ShovelMemoryPool::new(Arc::clone(
            self.manager.memory_pool(),
        )))
    }

    /// `base` (or a default runtime) with Shovel's spill factory and memory
    /// pool, as configured; its object stores and caches are kept.
    pub fn runtime_env(&self, base: Option<&RuntimeEnv>) -> Result<Arc<RuntimeEnv>> {
        let mut rt = match base {
            Some(env) => RuntimeEnvBuilder::from_runtime_env(env),
            None => RuntimeEnvBuilder::new(),
        };
        if self.memory {
            rt = rt.with_memory_pool(self.memory_pool());
        }
        if self.spill {
            rt = rt.with_disk_manager_builder(
                DiskManagerBuilder::default().with_temp_file_factory(self.temp_files()),
            );
        }
        rt.build_arc()
    }

    /// Adds Shovel to `builder`: the exchange rule (after DataFusion's own
    /// physical optimizer rules) and a runtime with Shovel's spill factory
    /// and memory pool (built over the builder's runtime, if it has one).
    pub fn install(self, mut builder: SessionStateBuilder) -> Result<SessionStateBuilder> {
        if self.exchange {
            builder = builder.with_physical_optimizer_rule(self.exchange_rule());
        }
        if self.spill || self.memory {
            let base = builder.runtime_env().clone();
            let runtime = self.runtime_env(base.as_deref())?;
            builder = builder.with_runtime_env(runtime);
        }
        Ok(builder)
    }
}

/// The machine's available parallelism (1 if unknown).
fn default_map_tasks() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
