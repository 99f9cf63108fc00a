//! Apache Ballista with Shovel as its shuffle: `shovel ballista scheduler`,
//! `shovel ballista executor` and `shovel q80 --engine ballista`.
//!
//! ```text
//!  shovel q80 --engine ballista --executors N        (the driver; LocalCluster)
//!     ├─ spawns  shovel ballista scheduler --bind 127.0.0.1:P          (Ballista's scheduler)
//!     ├─ spawns  N × shovel ballista executor --scheduler 127.0.0.1:P \
//!     │             --shuffle .. --conf <the run's resolved shuffle keys> (Shovel-backed executors)
//!     ├─ registers q80's Parquet tables, submits q80's SQL with shovel.app_id = the run's app id
//!     ├─ collects the answer ─▶ the same canonical CSV as the other engines
//!     └─ stops every process it started (also on failure and on Ctrl-C / SIGTERM),
//!        reads each executor's stats file, purges the app's objects
//! ```
//!
//! With `--cluster HOST:PORT` the driver submits to a cluster that is up and
//! starts nothing; the executors there must use the same store.
//!
//! Every executor writes and reads every stage through Shovel
//! ([`shuffle_ballista`]): with `--shuffle s3` nothing lands in its work
//! directory; with `--shuffle local` the map outputs go to the run's local
//! directory, which all executors on this machine share (as a shared mount
//! would on a real cluster).
//!
//! **Executor loss.** `--lose-executor E@S` makes executor E SIGKILL itself
//! once it has committed map outputs in S stages: a real `kill -9` of a real
//! process, at a repeatable point. Once its heartbeat is overdue (6 s),
//! Ballista's scheduler re-runs the tasks that were in flight there, and the
//! tasks of finished stages whose outputs a stage still waiting to read them
//! had located on that executor (it does not know they are in Shovel's
//! store; outputs already read are not touched, and every later reader gets
//! them from the store). The summary gives both counts, from the
//! scheduler's log ([`SchedulerResets`]), and the recomputed ones from the
//! executors' own records too (commits of a stage attempt above 0).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use shuffle_ballista::cluster::{ExecutorSettings, Liveness};
use shuffle_ballista::{ManagerFactory, ShovelExecutionEngine, TaskRecord};
use shuffle_core::ShuffleManager;

use super::args::one_line;
use super::report::{BallistaSummary, ExecutorStats};
use super::CliError;
use crate::config::{EngineConfig, ShuffleBackend};
use crate::events::{ExecutorLine, ExecutorSampler, ExecutorTask, RemoteExecutors, TaskStat};
use crate::tpcds::{Q80Row, SqlDate};

/// `shovel ballista scheduler`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerArgs {
    pub bind: SocketAddr,
    /// An executor silent this long is lost (seconds).
    pub executor_timeout: u64,
}

/// `shovel ballista executor`.
#[derive(Debug, Clone)]
pub struct ExecutorArgs {
    pub scheduler: SocketAddr,
    pub bind_host: IpAddr,
    /// Arrow Flight port (0: a free one).
    pub flight_port: u16,
    /// Task gRPC port (0: a free one).
    pub grpc_port: u16,
    pub slots: usize,
    /// Ballista's work directory [default: a temp dir].
    pub work_dir: Option<PathBuf>,
    /// The shuffle backend and memory settings (as for `q80`).
    pub config: EngineConfig,
    /// Shuffle keys (`--conf`, `--local-dir`, `--s3-endpoint`).
    pub pairs: Vec<(String, String)>,
    /// Write this executor's stats (JSON) here, refreshed as tasks commit.
    pub stats: Option<PathBuf>,
    /// Append a sample (JSON line) here every `sample_interval`, and one
    /// on exit: the driver's event log reads them (`events::remote`).
    pub samples: Option<PathBuf>,
    pub sample_interval: Duration,
    /// SIGKILL this process once it committed map outputs in this many
    /// stages (`q80 --lose-executor`).
    pub sigkill_after_stages: Option<usize>,
    pub heartbeat_secs: u64,
    /// Ballista's own shuffle (files in the work directory, served over
    /// Flight) instead of Shovel: the baseline of the benchmark.
    pub native_shuffle: bool,
}

/// `shovel ballista {scheduler|executor}`.
#[derive(Debug, Clone)]
pub enum BallistaArgs {
    Scheduler(SchedulerArgs),
    Executor(Box<ExecutorArgs>),
}

/// Runs a `shovel ballista` subcommand until Ctrl-C or SIGTERM.
pub fn run(args: &BallistaArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the tokio runtime: {e}")))?;
    let result = rt.block_on(async {
        match args {
            BallistaArgs::Scheduler(a) => run_scheduler(a).await,
            BallistaArgs::Executor(a) => run_executor(a).await,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn run_scheduler(a: &SchedulerArgs) -> Result<(), CliError> {
    let stop = super::s3_server::stop_signal()?;
    let liveness = Liveness {
        heartbeat_secs: (a.executor_timeout / 4).max(1),
        timeout_secs: a.executor_timeout.max(2),
    };
    eprintln!("shovel ballista scheduler: listening on {}", a.bind);
    tokio::select! {
        r = shuffle_ballista::cluster::run_scheduler(a.bind, liveness) => r.map_err(|e| {
            CliError::runtime(format!("ballista scheduler: {}", one_line(&e.to_string())))
        }),
        sig = stop => {
            eprintln!("shovel ballista scheduler: {sig}: stopped");
            Ok(())
        }
    }
}

/// The factory of per-app managers: the executor's backend with the app id
/// the client chose. Building an S3 client is async and Ballista asks for
/// an engine synchronously, once per job, on one of its runtime's workers:
/// the build runs on a thread of its own, driven by `runtime`, the
/// executor's store runtime (see [`run_executor`]), so whatever the store
/// spawns (upload workers, the job marker's refresh) lives there for as
/// long as the process. It must not be Ballista's runtime: when every
/// worker of that one waits on a build at once (two tasks of a new job on
/// two cores), nothing is left to drive the build's requests.
fn manager_factory(
    config: EngineConfig,
    pairs: Vec<(String, String)>,
    runtime: tokio::runtime::Handle,
) -> ManagerFactory {
    Arc::new(move |app_id: &str| {
        let mut pairs = pairs.clone();
        pairs.push(("shuffle.app_id".into(), app_id.to_string()));
        let config = config.clone();
        let runtime = runtime.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                runtime
                    .block_on(crate::session::build_shuffle_manager(&config, &pairs))
                    .map(|m| m.manager)
                    .map_err(|e| shuffle_core::Error::Protocol(e.to_string()))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(shuffle_core::Error::Protocol(
                    "building the shuffle manager panicked".into(),
                ))
            })
        })
    })
}

async fn run_executor(a: &ExecutorArgs) -> Result<(), CliError> {
    // The runtime that builds each job's store and keeps what the build
    // spawns (the job marker's refresh): never a worker that Ballista's
    // tasks (or a blocked engine build) hold. S3 requests themselves run on
    // the S3 store's own I/O runtime (`s3.io_threads`).
    let store_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shovel-store")
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the store runtime: {e}")))?;
    let result = run_executor_on(a, store_runtime.handle().clone()).await;
    store_runtime.shutdown_background();
    result
}

async fn run_executor_on(
    a: &ExecutorArgs,
    store_runtime: tokio::runtime::Handle,
) -> Result<(), CliError> {
    // Fail on a bad backend before registering with the scheduler.
    let factory = manager_factory(a.config.clone(), a.pairs.clone(), store_runtime.clone());
    let probe = factory("shovel-probe")
        .map_err(|e| CliError::usage(format!("shuffle setup: {}", one_line(&e.to_string()))))?;
    drop(probe);
    let work = match &a.work_dir {
        Some(d) => WorkDir::Given(d.clone()),
        None => WorkDir::Temp(
            tempfile::Builder::new()
                .prefix("shovel-ballista-")
                .tempdir()
                .map_err(|e| CliError::runtime(format!("cannot create a work dir: {e}")))?,
        ),
    };
    let flight_port = pick_port(a.bind_host, a.flight_port)?;
    let grpc_port = pick_port(a.bind_host, a.grpc_port)?;
    let engine = ShovelExecutionEngine::new(factory);
    let engine = Arc::new(if a.native_shuffle {
        engine.with_ballista_shuffle()
    } else {
        engine
    });
    let settings = ExecutorSettings {
        scheduler: a.scheduler,
        host: a.bind_host.to_string(),
        flight_port,
        grpc_port,
        slots: a.slots,
        work_dir: work.path().display().to_string(),
        liveness: Liveness {
            heartbeat_secs: a.heartbeat_secs.max(1),
            timeout_secs: 0,
        },
    };
    eprintln!(
        "shovel ballista executor: pid {} flight {}:{flight_port}, scheduler {}, shuffle {}",
        std::process::id(),
        a.bind_host,
        a.scheduler,
        if a.native_shuffle {
            "Ballista's own (work dir + Flight)"
        } else {
            backend_name(&a.config)
        }
    );
    let sampler = match &a.samples {
        Some(path) => Some(start_sampler(path, a.sample_interval, &engine)?),
        None => None,
    };
    let stats = a.stats.clone();
    let watcher = {
        let engine = Arc::clone(&engine);
        let kill_after = a.sigkill_after_stages;
        tokio::spawn(async move {
            // (tasks, Flight fetches) last written.
            let mut written = (0usize, 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let tasks = engine.counters().tasks();
                if let Some(path) = &stats {
                    let c = engine.counters();
                    let now = (
                        tasks.len(),
                        c.flight_fetches_from_store.load(Ordering::Relaxed)
                            + c.flight_fetches_from_work_dir.load(Ordering::Relaxed),
                    );
                    if now != written {
                        written = now;
                        let _ = write_stats(path, &engine);
                    }
                }
                if let Some(n) = kill_after {
                    let stages: std::collections::BTreeSet<u32> =
                        tasks.iter().map(|t| t.stage_id).collect();
                    if stages.len() >= n {
                        if let Some(path) = &stats {
                            let _ = write_stats(path, &engine);
                        }
                        eprintln!(
                            "shovel ballista executor: --lose-executor: SIGKILL after committing \
                             outputs in {} stages",
                            stages.len()
                        );
                        // SAFETY: kill(2) on our own pid; no memory is touched.
                        unsafe {
                            libc::kill(libc::getpid(), libc::SIGKILL);
                        }
                    }
                }
            }
        })
    };
    let result = shuffle_ballista::cluster::run_executor(settings, Arc::clone(&engine)).await;
    watcher.abort();
    if let Some(path) = &a.stats {
        let _ = write_stats(path, &engine);
    }
    if let Some(s) = sampler {
        s.finish();
    }
    // Outputs stay for the rest of the job (the client purges the app);
    // markers and spill files go.
    for m in engine.managers() {
        let _ = m.release_app().await;
    }
    result
        .map_err(|e| CliError::runtime(format!("ballista executor: {}", one_line(&e.to_string()))))
}

/// Samples this executor process into `path` (see `events::remote`): its
/// shuffle figures are those of its stats file ([`write_stats`]), so the
/// last sample agrees with the summary.
fn start_sampler(
    path: &Path,
    interval: Duration,
    engine: &Arc<ShovelExecutionEngine>,
) -> Result<ExecutorSampler, CliError> {
    let engine = Arc::clone(engine);
    let mut seen = 0usize;
    let source = move |line: &mut ExecutorLine| {
        let c = engine.counters();
        let tasks = c.tasks();
        line.shuffle_bytes_written = tasks.iter().map(|t| t.stored_bytes).sum();
        line.shuffle_bytes_read = c.bytes_read.load(Ordering::Relaxed);
        line.running_tasks = c.running_tasks.load(Ordering::Relaxed) as usize;
        for m in engine.managers() {
            let snap = m.metrics().snapshot();
            let (sh, r) = (&snap.shuffle, &snap.requests);
            if m.backend_name() == "s3" {
                line.store_bytes_read += r.bytes_downloaded;
                line.store_bytes_written += r.bytes_uploaded;
                line.store_requests += r.total();
            } else {
                line.store_bytes_read += sh.bytes_read + sh.spill_read_bytes;
                line.store_bytes_written += sh.bytes_written + sh.spill_bytes;
            }
            line.spill_bytes += sh.spill_bytes;
            line.pool_used += m.memory_pool().used() as u64;
        }
        let ms = |t: std::time::SystemTime| crate::events::remote::unix_ms(t);
        line.tasks = tasks
            .iter()
            .skip(seen)
            .map(|t| ExecutorTask {
                stat: task_stat(t),
                start_unix_ms: ms(t.started),
                end_unix_ms: ms(t.finished),
            })
            .collect();
        seen = tasks.len();
    };
    ExecutorSampler::start(path, interval, Box::new(source)).map_err(|e| {
        CliError::runtime(format!(
            "cannot write executor samples to {}: {e}",
            path.display()
        ))
    })
}

enum WorkDir {
    Given(PathBuf),
    Temp(tempfile::TempDir),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Given(p) => p,
            WorkDir::Temp(t) => t.path(),
        }
    }
}

fn backend_name(c: &EngineConfig) -> &'static str {
    match c.backend {
        ShuffleBackend::Local => "local",
        ShuffleBackend::S3 => "s3",
    }
}

/// `port`, or a free one for 0 (Ballista advertises the port it is given,
/// so 0 cannot be passed through).
fn pick_port(host: IpAddr, port: u16) -> Result<u16, CliError> {
    if port != 0 {
        return Ok(port);
    }
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::runtime(format!("cannot find a free port on {host}: {e}")))
}

/// Which task a Ballista executor committed and what it wrote.
fn task_stat(t: &TaskRecord) -> TaskStat {
    TaskStat {
        stage: t.stage_id,
        stage_attempt: t.stage_attempt,
        task: t.task_id,
        task_attempt: t.task_attempt,
        bytes: t.stored_bytes,
        records: t.records,
    }
}

fn write_stats(path: &Path, engine: &ShovelExecutionEngine) -> std::io::Result<()> {
    let c = engine.counters();
    let tasks = c.tasks();
    let stats = ExecutorStats {
        pid: std::process::id(),
        tasks: tasks.iter().map(task_stat).collect(),
        shuffle_bytes_written: tasks.iter().map(|t| t.stored_bytes).sum(),
        shuffle_records_written: tasks.iter().map(|t| t.records).sum(),
        shuffle_bytes_read: c.bytes_read.load(Ordering::Relaxed),
        shuffle_read_requests: c.read_requests.load(Ordering::Relaxed),
        store_requests: engine
            .managers()
            .iter()
            .map(|m| m.metrics().snapshot().requests.total())
            .sum(),
        peak_rss_bytes: crate::events::proc::peak_rss_bytes().unwrap_or(0),
        flight_fetches_from_store: c.flight_fetches_from_store.load(Ordering::Relaxed),
        flight_fetches_from_work_dir: c.flight_fetches_from_work_dir.load(Ordering::Relaxed),
        flight_stages: c.flight_stages(),
    };
    let json = serde_json::to_vec_pretty(&stats).map_err(std::io::Error::other)?;
    // Write then rename: a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, path)
}

/// A scheduler and executors started by this process; all are killed when
/// it is dropped (also on failure or a signal).
pub struct LocalCluster {
    pub scheduler: SocketAddr,
    children: Vec<(String, Child)>,
    executors: Vec<ExecutorProc>,
    _dir: tempfile::TempDir,
}

struct ExecutorProc {
    stats: PathBuf,
    work_dir: PathBuf,
}

/// How `q80 --engine ballista` starts its cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub shovel_exe: PathBuf,
    pub executors: usize,
    pub slots: usize,
    pub config: EngineConfig,
    pub pairs: Vec<(String, String)>,
    /// (executor, stages) of `--lose-executor`.
    pub lose: Option<(usize, usize)>,
    /// Ballista's own shuffle (the benchmark's baseline).
    pub native_shuffle: bool,
    /// Each executor samples itself every this often into a file of the
    /// cluster directory, added to this feed (the driver's event log
    /// reads it; `events::remote`).
    pub samples: Option<(Arc<RemoteExecutors>, Duration)>,
}

impl LocalCluster {
    pub fn start(spec: &ClusterSpec) -> Result<Self, CliError> {
        let dir = tempfile::Builder::new()
            .prefix("shovel-ballista-cluster-")
            .tempdir()
            .map_err(|e| CliError::runtime(format!("cannot create a cluster dir: {e}")))?;
        let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = pick_port(host, 0)?;
        let scheduler = SocketAddr::new(host, port);
        let mut cluster = Self {
            scheduler,
            children: Vec::new(),
            executors: Vec::new(),
            _dir: dir,
        };
        let logs = cluster._dir.path().to_path_buf();
        let log = |name: &str| -> Result<Stdio, CliError> {
            let f = std::fs::File::create(cluster_log(&logs, name))
                .map_err(|e| CliError::runtime(format!("cannot create {name}'s log: {e}")))?;
            Ok(Stdio::from(f))
        };
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let child = Command::new(&spec.shovel_exe)
            .args(["ballista", "scheduler", "--bind", &scheduler.to_string()])
            .args(["--executor-timeout", "6"])
            .env("RUST_LOG", format!("{rust_log},{SCHEDULER_RESET_LOG}"))
            .env(
                super::orphan::PARENT_PID_ENV,
                std::process::id().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("scheduler")?)
            .spawn()
            .map_err(|e| {
                CliError::runtime(format!(
                    "starting the Ballista scheduler ({}): {e}",
                    spec.shovel_exe.display()
                ))
            })?;
        cluster.children.push(("scheduler".into(), child));
        wait_listening(scheduler, "the Ballista scheduler", &mut cluster)?;
        for i in 0..spec.executors {
            let stats = cluster._dir.path().join(format!("executor-{i}.json"));
            let work_dir = cluster._dir.path().join(format!("executor-{i}-work"));
            std::fs::create_dir_all(&work_dir).map_err(|e| {
                CliError::runtime(format!("cannot create {}: {e}", work_dir.display()))
            })?;
            let flight = pick_port(host, 0)?;
            let mut cmd = Command::new(&spec.shovel_exe);
            cmd.args([
                "ballista",
                "executor",
                "--scheduler",
                &scheduler.to_string(),
            ])
            .args(["--flight-port", &flight.to_string()])
            .args(["--slots", &spec.slots.to_string()])
            .arg("--work-dir")
            .arg(&work_dir)
            .arg("--stats")
            .arg(&stats)
            .args(["--shuffle", backend_name(&spec.config)])
            .args(["--memory", &spec.config.memory_budget.to_string()]);
            if spec.config.spill_to_s3 {
                cmd.arg("--spill-to-s3");
            }
            if let Some(b) = &spec.config.s3_bucket {
                cmd.args(["--s3-bucket", b]);
            }
            for (k, v) in &spec.pairs {
                cmd.arg("--conf").arg(format!("{k}={v}"));
            }
            if spec.native_shuffle {
                cmd.arg("--native-shuffle");
            }
            if let Some((feed, interval)) = &spec.samples {
                let path = cluster
                    ._dir
                    .path()
                    .join(format!("executor-{i}.samples.jsonl"));
                feed.add(i, &path).map_err(|e| {
                    CliError::runtime(format!("cannot create {}: {e}", path.display()))
                })?;
                cmd.arg("--samples").arg(&path).args([
                    "--sample-interval",
                    &format!("{}ms", interval.as_millis().max(1)),
                ]);
            }
            if let Some((e, s)) = spec.lose {
                if e == i {
                    cmd.args(["--sigkill-after-stages", &s.to_string()]);
                }
            }
            let child = cmd
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .env(
                    super::orphan::PARENT_PID_ENV,
                    std::process::id().to_string(),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log(&format!("executor-{i}"))?)
                .spawn()
                .map_err(|e| CliError::runtime(format!("starting Ballista executor {i}: {e}")))?;
            cluster.children.push((format!("executor {i}"), child));
            cluster.executors.push(ExecutorProc { stats, work_dir });
            wait_listening(
                SocketAddr::new(host, flight),
                &format!("Ballista executor {i}"),
                &mut cluster,
            )?;
        }
        Ok(cluster)
    }

    /// The pids of the executors, in start order.
    pub fn executor_pids(&self) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(n, _)| n.starts_with("executor"))
            .map(|(_, c)| c.id())
            .collect()
    }

    /// Files in the executors' work directories, as
    /// `<job>/<stage>/<partition>/<file>` (Ballista's layout: its own
    /// writer puts every stage's output there).
    pub fn work_dir_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.executors {
            list_files(&e.work_dir, &e.work_dir, &mut out);
        }
        out.sort();
        out
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s) and reads what
    /// they left: the executors' stats (`lost` executors may have none),
    /// what the scheduler reset, the scheduler's peak RSS, and which
    /// processes had exited before they were told to.
    pub fn stop(mut self) -> Stopped {
        let scheduler_peak_rss_bytes = self
            .children
            .iter()
            .find(|(n, _)| n == "scheduler")
            .and_then(|(_, c)| crate::events::proc::peak_rss_bytes_of(c.id()))
            .unwrap_or(0);
        let mut exited_early = Vec::new();
        for (name, c) in self.children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let log = name.replace(' ', "-");
                exited_early.push(format!(
                    "{name} (pid {}) exited on its own ({status}); its log ends: {}",
                    c.id(),
                    log_tail_of(self._dir.path(), &log)
                ));
            }
        }
        self.terminate();
        let executors = self
            .executors
            .iter()
            .map(|e| {
                std::fs::read(&e.stats)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default()
            })
            .collect();
        let log =
            std::fs::read_to_string(cluster_log(self._dir.path(), "scheduler")).unwrap_or_default();
        Stopped {
            executors,
            resets: SchedulerResets::from_log(&log),
            scheduler_peak_rss_bytes,
            exited_early,
        }
    }

    fn terminate(&mut self) {
        // Executors first, the scheduler last.
        let mut children: Vec<&mut Child> =
            self.children.iter_mut().rev().map(|(_, c)| c).collect();
        super::orphan::terminate(&mut children, Duration::from_secs(5));
        self.children.clear();
    }

    /// The last lines of a process's log, for errors.
    fn log_tail(&self, name: &str) -> String {
        log_tail_of(self._dir.path(), name)
    }
}

/// What [`LocalCluster::stop`] found.
#[derive(Debug, Default)]
pub struct Stopped {
    pub executors: Vec<ExecutorStats>,
    pub resets: SchedulerResets,
    pub scheduler_peak_rss_bytes: u64,
    /// Processes that had exited before the stop (a lost executor, or one
    /// that failed), each with its status and the end of its log.
    pub exited_early: Vec<String>,
}

/// The last lines of `name`'s log in the cluster dir `dir`.
fn log_tail_of(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(cluster_log(dir, name)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// What Ballista's scheduler reset on losing executors, read from its
/// log: its only public account of it (Ballista 55 exposes no counter).
/// The scheduler started by [`LocalCluster`] always logs these lines
/// ([`SCHEDULER_RESET_LOG`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerResets {
    /// `Reset N tasks for running job/stage ..`: in flight on the lost executor.
    pub in_flight: u64,
    /// `Reset N tasks for successful job/stage ..`: committed, to recompute.
    pub committed: u64,
    /// `Roll back running job/stage J/S ..`: stages that had located an
    /// input on the lost executor while running; Ballista re-runs all of
    /// their tasks under a new stage attempt (it logs no count).
    pub rolled_back_running_stages: Vec<u32>,
}

/// The `RUST_LOG` directive that keeps the scheduler's reset lines.
pub const SCHEDULER_RESET_LOG: &str = "ballista_scheduler::state::execution_graph=warn";

impl SchedulerResets {
    pub fn from_log(log: &str) -> Self {
        let mut r = Self::default();
        for line in log.lines() {
            if let Some(rest) = line.split("Roll back running job/stage ").nth(1) {
                let stage = rest
                    .split_whitespace()
                    .next()
                    .and_then(|js| js.rsplit('/').next())
                    .and_then(|s| s.parse::<u32>().ok());
                if let Some(stage) = stage {
                    if !r.rolled_back_running_stages.contains(&stage) {
                        r.rolled_back_running_stages.push(stage);
                    }
                }
                continue;
            }
            let Some(rest) = line.split("Reset ").nth(1) else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let (Some(n), Some("tasks"), Some("for"), Some(kind)) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "running" => r.in_flight += n,
                "successful" => r.committed += n,
                _ => {}
            }
        }
        r
    }
}

fn cluster_log(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.log", name.replace(' ', "-")))
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            list_files(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.display().to_string());
        }
    }
}

/// Waits until `addr` accepts connections (30 s), or a child died.
fn wait_listening(
    addr: SocketAddr,
    what: &str,
    cluster: &mut LocalCluster,
) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        for (name, c) in cluster.children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let name = name.clone();
                return Err(CliError::runtime(format!(
                    "{name} exited ({status}) before {what} listened on {addr}: {}",
                    cluster.log_tail(&name)
                )));
            }
        }
        if Instant::now() >= deadline {
            return Err(CliError::runtime(format!(
                "{what} did not listen on {addr} within 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Ballista client session on `scheduler` with q80's tables, q80's
/// settings, and `shovel.app_id` set to `app_id`.
pub async fn q80_context(
    scheduler: SocketAddr,
    config: &EngineConfig,
    app_id: &str,
    data_dir: &Path,
) -> Result<SessionContext, CliError> {
    let df = super::df::session_config(config);
    let mut session = shuffle_ballista::cluster::session_config();
    for e in df.options().entries() {
        if e.key.starts_with("datafusion.") {
            if let Some(v) = &e.value {
                let _ = session.options_mut().set(&e.key, v);
            }
        }
    }
    // Ballista's adaptive planner sorts through range-partitioned stages,
    // which Shovel does not store yet; its static planner cuts q80 at hash
    // exchanges only.
    session
        .options_mut()
        .set("ballista.planner.adaptive.enabled", "false")
        .map_err(|e| CliError::runtime(format!("ballista.planner.adaptive.enabled: {e}")))?;
    // Broadcast joins follow DataFusion's thresholds (`--broadcast-threshold`
    // sets them). Ballista's planner promotes partitioned joins under its own
    // threshold to broadcasts as well, so "off" must turn that off too
    // (threshold 0). Ballista 55 then demotes DataFusion's CollectLeft joins,
    // swapping the inputs of some, after DataFusion's post-optimization
    // filter pushdown built dynamic filters on them: DataFusion refuses the
    // swap ("Cannot swap HashJoinExec inputs after dynamic filters have been
    // constructed"), the scheduler logs "Failed to update task statuses" and
    // neither fails nor reschedules the job, which hangs. Without dynamic
    // filters the swap is allowed.
    if config.broadcast_threshold == 0 {
        for (key, value) in [
            ("ballista.optimizer.broadcast_join_threshold_bytes", "0"),
            (
                "datafusion.optimizer.enable_dynamic_filter_pushdown",
                "false",
            ),
        ] {
            session
                .options_mut()
                .set(key, value)
                .map_err(|e| CliError::runtime(format!("{key}: {e}")))?;
        }
    }
    session
        .options_mut()
        .set("shovel.app_id", app_id)
        .map_err(|e| CliError::runtime(format!("shovel.app_id: {e}")))?;
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(session)
        .build();
    let ctx = shuffle_ballista::cluster::connect(scheduler, state)
        .await
        .map_err(|e| {
            CliError::runtime(format!(
                "connecting to the Ballista scheduler at {scheduler}: {}",
                one_line(&e.to_string())
            ))
        })?;
    super::df::register_q80_tables(&ctx, data_dir, "Ballista").await?;
    Ok(ctx)
}

/// Runs q80 on the cluster at `scheduler`: rows in canonical order.
pub async fn run_q80(ctx: &SessionContext, date: SqlDate) -> Result<Vec<Q80Row>, CliError> {
    let err = |e: datafusion::error::DataFusionError| {
        CliError::runtime(format!("q80 on Ballista: {}", one_line(&e.to_string())))
    };
    let batches = super::df::q80_dataframe(ctx, date, &err)
        .await?
        .collect()
        .await
        .map_err(err)?;
    let mut rows = super::run::batches_to_rows(&batches)?;
    super::df::canonical_order(&mut rows);
    Ok(rows)
}

/// `q80 --engine ballista`: start the cluster (unless `cluster` is given),
/// run q80, stop everything, purge the app's objects.
pub async fn execute(
    spec: &ClusterSpec,
    cluster: Option<SocketAddr>,
    config: &EngineConfig,
    manager: &Arc<dyn ShuffleManager>,
    data_dir: &Path,
    date: SqlDate,
) -> Result<(Vec<Q80Row>, BallistaSummary), CliError> {
    let local = match cluster {
        Some(_) => None,
        None => {
            let spec = spec.clone();
            Some(
                tokio::task::spawn_blocking(move || LocalCluster::start(&spec))
                    .await
                    .map_err(|e| CliError::runtime(format!("starting the cluster: {e}")))??,
            )
        }
    };
    let scheduler = cluster
        .or(local.as_ref().map(|c| c.scheduler))
        .ok_or_else(|| CliError::runtime("no Ballista scheduler to run on"))?;
    let run = async {
        let ctx = q80_context(scheduler, config, manager.app_id(), data_dir).await?;
        run_q80(&ctx, date).await
    };
    let t = std::time::Instant::now();
    let rows = run.await;
    let query_ms = t.elapsed().as_secs_f64() * 1e3;
    let work_files = local
        .as_ref()
        .map(|c| c.work_dir_files())
        .unwrap_or_default();
    let stopped = match local {
        Some(c) => tokio::task::spawn_blocking(move || c.stop())
            .await
            .unwrap_or_default(),
        None => Stopped::default(),
    };
    let Stopped {
        executors,
        resets,
        scheduler_peak_rss_bytes,
        exited_early,
    } = stopped;
    // Every process that wrote under the app is gone: list and delete it.
    let purge = manager.purge_app().await;
    let lost = spec.lose.map(|(e, _)| vec![e]).unwrap_or_default();
    let mut summary = BallistaSummary::from_executors(scheduler.to_string(), executors, lost);
    summary.work_dir_files = work_files;
    summary.scheduler_reset_in_flight = resets.in_flight;
    summary.scheduler_reset_committed = resets.committed;
    summary.scheduler_rolled_back_stages = resets.rolled_back_running_stages;
    summary.scheduler_peak_rss_bytes = scheduler_peak_rss_bytes;
    summary.exited_early = exited_early;
    summary.query_ms = query_ms;
    let rows = rows?;
    purge.map_err(|e| {
        CliError::runtime(format!(
            "removing the run's shuffle objects: {}",
            one_line(&e.to_string())
        ))
    })?;
    Ok((rows, summary))
}

#[cfg(test)]
mod tests {
    use super::SchedulerResets;

    #[test]
    fn scheduler_resets_are_read_from_ballistas_log_lines() {
        // Lines as Ballista 55's scheduler writes them (through tracing).
        let log = "\
2026-11-30T23:19:18.586391Z  WARN ballista_scheduler::state::execution_graph: Reset 5 tasks for running job/stage 038HER5Q9R000/20 on lost Executor 65724ade
2026-11-30T23:19:18.586402Z  WARN ballista_scheduler::state::execution_graph: Roll back running job/stage 038HER5Q9R000/20 and change ShuffleReaderExec back to UnresolvedShuffleExec
2026-11-30T23:19:18.586435Z  WARN ballista_scheduler::state::execution_graph: Reset 1 tasks for successful job/stage 038HER5Q9R000/9 on lost Executor 65724ade
2026-11-30T23:19:18.586440Z  WARN ballista_scheduler::state::execution_graph: Reset 2 tasks for successful job/stage 038HER5Q9R000/19 on lost Executor 65724ade
Reset x tasks for running job/stage broken
";
        assert_eq!(
            SchedulerResets::from_log(log),
            SchedulerResets {
                in_flight: 5,
                committed: 3,
                rolled_back_running_stages: vec![20],
            }
        );
        assert_eq!(SchedulerResets::from_log(""), SchedulerResets::default());
    }
}
