//! Starting Ballista's scheduler and a Shovel-backed executor in this
//! process (what `shovel ballista scheduler|executor` run).
//!
//! Both are Ballista's own servers, configured through their public
//! configs; Shovel only plugs in:
//! - the executor's execution engine ([`ShovelExecutionEngine`]), so stages
//!   write and read through Shovel;
//! - a config producer that knows the `shovel.*` options
//!   ([`ShovelOptions`]), on both sides;
//! - heartbeat and timeout settings short enough that a lost executor is
//!   noticed in seconds ([`Liveness`]), since Shovel's outputs outlive it.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::utils::default_session_builder;
use ballista_core::ConfigProducer;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

use crate::engine::ShovelExecutionEngine;
use crate::options::ShovelOptions;

/// How quickly a silent executor is declared lost.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Executors send a heartbeat this often (seconds).
    pub heartbeat_secs: u64,
    /// The scheduler declares an executor lost after this much silence.
    pub timeout_secs: u64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            heartbeat_secs: 2,
            timeout_secs: 10,
        }
    }
}

/// Ballista's session config with Shovel's options registered.
pub fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista().with_option_extension(ShovelOptions::default())
}

fn config_producer() -> ConfigProducer {
    Arc::new(session_config)
}

/// A client session on the scheduler at `scheduler` (`host:port`) with
/// `state`'s settings and tables: queries run on the cluster.
pub async fn connect(
    scheduler: SocketAddr,
    state: datafusion::execution::SessionState,
) -> Result<datafusion::prelude::SessionContext> {
    use ballista::prelude::SessionContextExt;
    datafusion::prelude::SessionContext::remote_with_state(&format!("df://{scheduler}"), state)
        .await
}

/// How tasks reach executors: executors poll the scheduler (every 50 ms
/// when idle, Ballista's pull-staged policy). With Ballista 55's push
/// policy, an executor lost while the scheduler was launching tasks on it
/// left the job's reset tasks unscheduled for good (no offer was revived:
/// q80 hung after `kill -9`); a polling executor asks again.
pub const SCHEDULING: TaskSchedulingPolicy = TaskSchedulingPolicy::PullStaged;

/// Runs Ballista's scheduler on `bind` until the process ends.
pub async fn run_scheduler(bind: SocketAddr, liveness: Liveness) -> Result<()> {
    let producer = config_producer();
    let cluster = BallistaCluster::new_memory(
        bind.to_string(),
        Arc::new(default_session_builder),
        Arc::clone(&producer),
    );
    let mut config = SchedulerConfig::default().with_scheduler_policy(SCHEDULING);
    config.bind_host = bind.ip().to_string();
    config.external_host = bind.ip().to_string();
    config.bind_port = bind.port();
    config.executor_timeout_seconds = liveness.timeout_secs;
    config.expire_dead_executor_interval_seconds = 1;
    config.no_executors_grace_period_seconds = liveness.timeout_secs;
    config.override_config_producer = Some(producer);
    start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(|e| {
            DataFusionError::External(Box::new(e)).context(format!("Ballista scheduler on {bind}"))
        })
}

/// Where an executor listens and whom it works for.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub scheduler: SocketAddr,
    /// Host the executor binds and advertises.
    pub host: String,
    /// Arrow Flight port: the client fetches the job's results there
    /// (served from Shovel's store, see [`crate::flight`]).
    pub flight_port: u16,
    /// Port of the executor's task gRPC service.
    pub grpc_port: u16,
    /// Task slots.
    pub slots: usize,
    /// Ballista's work directory (stays empty of shuffle files).
    pub work_dir: String,
    pub liveness: Liveness,
}

/// Runs a Ballista executor with `engine` (Shovel-backed, or recording
/// Ballista's own shuffle: [`ShovelExecutionEngine::with_ballista_shuffle`])
/// until it is told to stop.
pub async fn run_executor(
    settings: ExecutorSettings,
    engine: Arc<ShovelExecutionEngine>,
) -> Result<()> {
    let s = settings;
    let config = ExecutorProcessConfig {
        bind_host: s.host.clone(),
        external_host: Some(s.host.clone()),
        port: s.flight_port,
        grpc_port: s.grpc_port,
        scheduler_host: s.scheduler.ip().to_string(),
        scheduler_port: s.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: s.slots.max(1),
        task_scheduling_policy: SCHEDULING,
        work_dir: Some(s.work_dir.clone()),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: s.liveness.heartbeat_secs,
        override_arrow_flight_service: Some(crate::flight::flight_server_provider(Arc::clone(
            &engine,
        ))),
        override_execution_engine: Some(
            engine as Arc<dyn ballista_executor::execution_engine::ExecutionEngine>,
        ),
        override_config_producer: Some(config_producer()),
        ..Default::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(|e| {
        DataFusionError::External(Box::new(e))
            .context(format!("Ballista executor on {}:{}", s.host, s.flight_port))
    })
}
