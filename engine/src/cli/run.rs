//! Running q80 end to end: backend setup (local dirs, S3, or an embedded S3
//! server), planning, execution with a per-stage progress bar, the
//! canonical CSV, cleanup, and the [`RunReport`].
//!
//! [`run_q80`] is shared by the `shovel` binary, the golden tests and the
//! q80 benchmark, so all three measure and check the same code path.
//!
//! # Stopping: Ctrl-C, SIGTERM, SIGHUP
//!
//! An interruptible run ([`Q80Job::interruptible`], the binary) installs
//! handlers for all three before its backend is set up
//! ([`StopSignals::install`]: a small thread of its own, so they stay
//! installed from then until the process exits, whatever the run's runtime
//! does). What a signal does depends on when it comes:
//!
//! | when | first signal | second signal |
//! | --- | --- | --- |
//! | before `run_q80` installs the handlers (data generation) | the default action: the process dies of it (shells report 128+n); a half-generated data set is a temp dir the next run removes | |
//! | backend setup | setup is dropped (its temp dirs and embedded server go with it; nothing is written to the store yet), exit 128+n | quits at once |
//! | planning / running the job | running tasks are stopped (`Session::cancel`), the job's shuffle and spill objects removed (with `--keep-shuffle`: spills removed, committed map outputs kept), temp dirs removed (unless kept), exit 128+n | quits at once: whatever was not yet removed stays for `shovel gc` |
//! | after the job, before [`run_q80_answer`] hands the answer out | cleanup runs, exit 128+n, no answer is printed | quits at once, as above |
//! | writing the answer, then cleanup ([`Q80Answer::finish`]) | cleanup finishes, exit 128+n (the answer is already written) | quits at once, as above |
//! | after `finish` returns (writing the report) | quits at once with 128+n: nothing of the run is left to clean | |
//!
//! # Cleanup off the result path
//! The answer never waits for cleanup: the job's session defers shuffle
//! removal ([`Session::defer_shuffle_removal`]), [`run_q80_answer`] returns
//! once the CSV is ready, and [`Q80Answer::finish`] then deletes the app's
//! objects by the keys the manager knows it wrote (batched, no LIST; see
//! `shuffle_core::manager`) and completes the report. The binary writes
//! the CSV between the two; [`run_q80`] does both at once.
//!
//! Exit codes: SIGINT 130, SIGTERM 143, SIGHUP 129 ([`StopSignal::exit_code`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Decimal128Type};
use shuffle_core::ShuffleManager;

use crate::config::{EngineConfig, ShuffleBackend};
use crate::queries::q80::{q80, Q80Options};
use crate::scheduler::{wait_in_hook, StageEvent, TaskEvent};
use crate::session::{build_shuffle_manager, ManagedShuffle, Session};
use crate::tpcds::{q80_csv, Q80Row, SqlDate, Q80_DEFAULT_DATE, Q80_SCALE};

use super::args::one_line;
use super::progress::Bar;
use super::report::{peak_rss_bytes, Cleanup, Kept, RunReport, Timings};
use super::CliError;

/// Everything about one q80 run except where the data is.
#[derive(Debug, Clone)]
pub struct Q80Job {
    pub config: EngineConfig,
    /// Extra shuffle keys (`local.dirs`, `shuffle.codec`, `s3.*`, ...).
    pub shuffle_pairs: Vec<(String, String)>,
    /// Local shuffle/spill roots; empty: a temp dir removed afterwards.
    pub local_dirs: Vec<PathBuf>,
    pub s3_endpoint: Option<String>,
    pub date: SqlDate,
    /// Keep the committed map outputs (data and index objects) of every
    /// shuffle, and the directory they are in when it is a temp dir (the
    /// default local dir, the embedded S3 server's); spills are still
    /// removed. Same as `shuffle.keep` in [`Q80Job::config`].
    pub keep_shuffle: bool,
    /// Draw the stage progress bar (only ever on a terminal).
    pub progress: bool,
    /// Print notes (embedded S3, kept files) on stderr.
    pub announce: bool,
    /// Fault injection: fail this fraction of the embedded S3 server's
    /// requests (`--s3-fault-rate`).
    pub s3_fault_rate: Option<f64>,
    /// Latency the embedded S3 server adds to every request
    /// (`--s3-latency`, as `shovel s3-server --latency`); `None` adds none.
    pub s3_latency: Option<Duration>,
    /// Fault injection: lose an executor mid-job (`--lose-executor`).
    pub lose_executor: Option<ExecutorLossPlan>,
    /// Stop on Ctrl-C, SIGTERM or SIGHUP: cancel the job, clean up, fail
    /// with exit code 130 / 143 / 129 (the binary; see the module doc).
    pub interruptible: bool,
    /// The engine that runs q80 (`--engine`).
    pub engine: QueryEngine,
    /// Write the job's event log here (`--event-log`); the events are
    /// recorded (in memory, for the advice) either way.
    pub event_log: Option<PathBuf>,
    /// Time between samples (`--event-log-interval`).
    pub event_log_interval: Duration,
    /// `--engine ballista`: run on the scheduler at this address instead
    /// of starting a local cluster (`--cluster`).
    pub cluster: Option<std::net::SocketAddr>,
    /// `--engine ballista`: the `shovel` binary that runs the scheduler and
    /// executors [default: this process's executable].
    pub shovel_exe: Option<PathBuf>,
    /// `--engine ballista`: executors use Ballista's own shuffle (the
    /// benchmark's baseline; not a CLI flag).
    pub ballista_native_shuffle: bool,
    /// Write the samples as CloudWatch EMF lines here (`--emf`).
    pub emf: Option<PathBuf>,
    /// Serve the latest sample as Prometheus metrics here while the job
    /// runs (`--metrics-addr`, loopback only).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Which engine runs q80 (`--engine`); both shuffle through the run's one
/// `ShuffleManager` and give the same canonical CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryEngine {
    /// Shovel's own Arrow engine (q80 written with its DataFrame API).
    #[default]
    Shovel,
    /// Apache DataFusion running q80's SQL text, with Shovel's exchange,
    /// spill and memory pool installed (see `cli::df`).
    DataFusion,
    /// Apache Ballista (a scheduler and executor processes) running q80's
    /// SQL text, every stage shuffled through Shovel (see `cli::ballista`).
    Ballista,
}

impl QueryEngine {
    pub const ALL: [QueryEngine; 3] = [
        QueryEngine::Shovel,
        QueryEngine::DataFusion,
        QueryEngine::Ballista,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryEngine::Shovel => "shovel",
            QueryEngine::DataFusion => "datafusion",
            QueryEngine::Ballista => "ballista",
        }
    }
}

impl std::fmt::Display for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for QueryEngine {
    type Err = CliError;

    fn from_str(s: &str) -> Result<Self, CliError> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                CliError::usage(format!(
                    "invalid --engine `{s}`: expected shovel, datafusion or ballista"
                ))
            })
    }
}

/// `--s3-fault-rate` or `--s3-latency` with a real S3 target.
fn embedded_only(job: &Q80Job) -> CliError {
    let flag = if job.s3_fault_rate.is_some() {
        "--s3-fault-rate"
    } else {
        "--s3-latency"
    };
    CliError::usage(format!(
        "{flag} applies to the embedded S3 server only; drop --s3-bucket/--s3-endpoint to use \
         it, or drop {flag}"
    ))
}

/// Seed of `--s3-fault-rate`'s choice of requests (runs are repeatable).
const FAULT_SEED: u64 = 0x5eed;

/// `--lose-executor E` without `@S`: stages the executor must have committed
/// outputs in first.
pub const DEFAULT_LOSS_AFTER_STAGES: usize = 2;

/// When `--lose-executor` loses which executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorLossPlan {
    pub executor: usize,
    /// Map stages the executor must have committed outputs in first;
    /// `None`: [`DEFAULT_LOSS_AFTER_STAGES`].
    pub after_stages: Option<usize>,
}

impl Default for Q80Job {
    fn default() -> Self {
        Self {
            config: EngineConfig::default(),
            shuffle_pairs: Vec::new(),
            local_dirs: Vec::new(),
            s3_endpoint: None,
            date: Q80_DEFAULT_DATE,
            keep_shuffle: false,
            progress: false,
            announce: false,
            s3_fault_rate: None,
            s3_latency: None,
            lose_executor: None,
            interruptible: false,
            engine: QueryEngine::default(),
            event_log: None,
            event_log_interval: Duration::from_millis(100),
            cluster: None,
            shovel_exe: None,
            ballista_native_shuffle: false,
            emf: None,
            metrics_addr: None,
        }
    }
}

/// A finished run: the canonical CSV and the report.
#[derive(Debug)]
pub struct Q80Outcome {
    pub csv: String,
    pub rows: Vec<Q80Row>,
    pub report: RunReport,
}

/// A failed run: the error, and what was measured up to it.
#[derive(Debug)]
pub struct Q80Failure {
    pub error: CliError,
    pub report: RunReport,
}

/// The shuffle manager and what must outlive it.
struct Backend {
    managed: ManagedShuffle,
    embedded: Option<shuffle_s3::EmbeddedS3>,
    /// `shovel s3-server` as a child process (`--engine ballista`: the
    /// executors are processes too and reach it over HTTP).
    s3_process: Option<super::s3_server::S3ServerProcess>,
    /// The default local dir (no `--local-dir`, no `local.dirs`).
    local_temp: Option<tempfile::TempDir>,
    /// The embedded S3 server's directory.
    s3_temp: Option<tempfile::TempDir>,
    description: String,
    /// Where committed map outputs live, for `--keep-shuffle`'s note: the
    /// local directories, `s3://bucket/prefix`, or the embedded server's
    /// directory.
    outputs_at: String,
    /// The first local shuffle/spill directory (`--engine datafusion`
    /// writes its spill files under `<it>/spill/<app id>`).
    local_root: PathBuf,
    /// The resolved shuffle keys the manager was built from (Ballista's
    /// executors get the same).
    pairs: Vec<(String, String)>,
}

/// The value of shuffle key `key` in `pairs` (last wins), else its
/// environment variable.
fn shuffle_key_value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| {
            shuffle_core::config::canonical_key(k) == Some(key)
                || shuffle_s3::config::canonical_key(k) == Some(key)
        })
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(shuffle_s3::config::env_var_for(key)).ok())
}

/// True when an S3 bucket or endpoint is configured by keys or environment.
fn s3_target_configured(config: &EngineConfig, pairs: &[(String, String)]) -> (bool, bool) {
    let has = |key: &str| {
        pairs
            .iter()
            .any(|(k, _)| shuffle_s3::config::canonical_key(k) == Some(key))
            || std::env::var_os(shuffle_s3::config::env_var_for(key)).is_some()
    };
    (
        config.s3_bucket.is_some() || has("s3.bucket"),
        has("s3.endpoint"),
    )
}

/// `host:port` of an `http(s)://` URL.
fn endpoint_authority(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        (url.strip_prefix("https://")?, 443)
    };
    let auth = rest.split('/').next()?;
    let auth = auth.rsplit('@').next()?;
    if let Some(v6) = auth.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_string(), port));
    }
    match auth.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((auth.to_string(), default_port)),
    }
}

/// Fails fast (one TCP connect, 3 s timeout) when an S3 endpoint cannot be
/// reached, instead of spending the S3 client's whole retry budget.
async fn check_endpoint(url: &str) -> Result<(), CliError> {
    let Some((host, port)) = endpoint_authority(url) else {
        return Err(CliError::usage(format!(
            "invalid --s3-endpoint `{url}`: expected http(s)://host[:port]"
        )));
    };
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(CliError::runtime(format!(
            "cannot reach S3 endpoint {url} (--s3-endpoint): {e}; check the URL and that \
             the server is running"
        ))),
        Err(_) => Err(CliError::runtime(format!(
            "cannot reach S3 endpoint {url} (--s3-endpoint): no answer within 3 s; check the \
             URL, the port and any firewall"
        ))),
    }
}

async fn setup_backend(job: &Q80Job) -> Result<(Backend, EngineConfig), CliError> {
    let mut config = job.config.clone();
    config.keep_shuffle |= job.keep_shuffle;
    let keep = config.keep_shuffle;
    let mut pairs = job.shuffle_pairs.clone();
    let mut local_temp = None;
    let mut s3_temp = None;
    let has_local_dirs = pairs
        .iter()
        .any(|(k, _)| shuffle_core::config::canonical_key(k) == Some("local.dirs"));
    let local_desc;
    if !job.local_dirs.is_empty() {
        let joined = job
            .local_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        local_desc = joined.clone();
        pairs.push(("local.dirs".into(), joined));
    } else if has_local_dirs {
        local_desc = "from --conf local.dirs".to_string();
    } else {
        let tmp = tempfile::Builder::new()
            .prefix("shovel-local-")
            .tempdir()
            .map_err(|e| {
                CliError::runtime(format!(
                    "cannot create a temp dir under {}: {e}; pass --local-dir DIR",
                    std::env::temp_dir().display()
                ))
            })?;
        local_desc = tmp.path().display().to_string();
        pairs.push(("local.dirs".into(), local_desc.clone()));
        local_temp = Some(tmp);
    }
    let local_at = shuffle_key_value(&pairs, "local.dirs").unwrap_or_else(|| local_desc.clone());
    let local_root = PathBuf::from(local_at.split(',').next().unwrap_or_default().trim());
    let mut outputs_at = local_at;
    let mut embedded = None;
    let mut s3_process = None;
    let description = match config.backend {
        ShuffleBackend::Local => format!("local disk ({local_desc})"),
        ShuffleBackend::S3 => {
            let embedded_flags = job.s3_fault_rate.is_some() || job.s3_latency.is_some();
            if embedded_flags && (job.s3_endpoint.is_some() || config.s3_bucket.is_some()) {
                return Err(embedded_only(job));
            }
            if let Some(e) = &job.s3_endpoint {
                check_endpoint(e).await?;
                pairs.push(("s3.endpoint".into(), e.clone()));
            }
            let (bucket, endpoint) = s3_target_configured(&config, &pairs);
            match (bucket, endpoint) {
                (false, true) => {
                    return Err(CliError::usage(
                        "an S3 endpoint needs a bucket: add --s3-bucket s3://bucket/prefix",
                    ))
                }
                (true, _) if embedded_flags => return Err(embedded_only(job)),
                (true, _) => {
                    let where_ = config
                        .s3_bucket
                        .clone()
                        .unwrap_or_else(|| "the configured bucket".into());
                    let via = job
                        .s3_endpoint
                        .clone()
                        .unwrap_or_else(|| "AWS S3 (credentials from the AWS chain)".into());
                    outputs_at = config
                        .s3_bucket
                        .clone()
                        .or_else(|| shuffle_key_value(&pairs, "s3.bucket"))
                        .unwrap_or_else(|| where_.clone());
                    format!("S3 {where_} via {via}")
                }
                (false, false) if job.engine == QueryEngine::Ballista => {
                    if let Some(c) = job.cluster {
                        return Err(CliError::usage(format!(
                            "--cluster {c} with --shuffle s3 needs the store its executors use: \
                             add --s3-bucket (and --s3-endpoint), the same as theirs"
                        )));
                    }
                    let tmp = s3_temp_dir()?;
                    let exe = shovel_exe(job)?;
                    let dir = tmp.path().to_path_buf();
                    let latency = job.s3_latency.unwrap_or_default();
                    let faults = job.s3_fault_rate;
                    let server = tokio::task::spawn_blocking(move || {
                        super::s3_server::S3ServerProcess::start(&exe, &dir, latency, faults)
                    })
                    .await
                    .map_err(|e| CliError::runtime(format!("starting shovel s3-server: {e}")))??;
                    let a = &server.address;
                    if job.announce {
                        eprintln!(
                            "note: --shuffle s3 without --s3-bucket/--s3-endpoint: started \
                             `shovel s3-server` (pid {}) at {} over {}{}{}",
                            server.pid(),
                            a.endpoint,
                            tmp.path().display(),
                            match latency.is_zero() {
                                true => String::new(),
                                false => format!(", answering after {latency:?}"),
                            },
                            if keep {
                                " (kept)"
                            } else {
                                " (removed at exit)"
                            }
                        );
                    }
                    config.s3_bucket = None;
                    pairs.extend(a.config_pairs());
                    let d = format!(
                        "S3 server process (pid {}) {} over {}",
                        server.pid(),
                        a.endpoint,
                        tmp.path().display()
                    );
                    outputs_at = format!("{} (the S3 server's directory)", tmp.path().display());
                    s3_temp = Some(tmp);
                    s3_process = Some(server);
                    d
                }
                (false, false) => {
                    let tmp = s3_temp_dir()?;
                    let server = shuffle_s3::EmbeddedS3::start(tmp.path())
                        .await
                        .map_err(|e| {
                            CliError::runtime(format!("starting the embedded S3 server: {e}"))
                        })?;
                    if job.announce {
                        eprintln!(
                            "note: --shuffle s3 without --s3-bucket/--s3-endpoint: using an \
                             embedded S3 server at {} over {}{}",
                            server.endpoint,
                            tmp.path().display(),
                            if keep {
                                " (kept)"
                            } else {
                                " (removed at exit)"
                            }
                        );
                    }
                    if let Some(latency) = job.s3_latency {
                        server.set_latency(latency);
                        if job.announce && !latency.is_zero() {
                            eprintln!(
                                "note: --s3-latency: the embedded S3 server waits {latency:?} \
                                 before answering each request"
                            );
                        }
                    }
                    if let Some(rate) = job.s3_fault_rate {
                        server.set_faults(shuffle_s3::FaultConfig::mixed(rate, FAULT_SEED));
                        if job.announce {
                            eprintln!(
                                "note: --s3-fault-rate: the embedded S3 server fails {:.0}% of \
                                 requests (503 SlowDown, 500, resets, slow answers)",
                                rate * 100.0
                            );
                        }
                    }
                    config.s3_bucket = None;
                    pairs.extend(server.config_pairs("shovel"));
                    let d = format!(
                        "embedded S3 {} over {}",
                        server.endpoint,
                        tmp.path().display()
                    );
                    outputs_at = format!(
                        "{} (the embedded S3 server's directory)",
                        tmp.path().display()
                    );
                    s3_temp = Some(tmp);
                    embedded = Some(server);
                    d
                }
            }
        }
    };
    // Validate the shuffle keys with the names the user wrote.
    let managed = build_shuffle_manager(&config, &pairs)
        .await
        .map_err(|e| CliError::usage(format!("shuffle setup: {}", one_line(&e.to_string()))))?;
    Ok((
        Backend {
            managed,
            embedded,
            s3_process,
            local_temp,
            s3_temp,
            description,
            outputs_at,
            local_root,
            pairs,
        },
        config,
    ))
}

/// Converts q80's result batches into rows (money at scale 2).
pub fn batches_to_rows(batches: &[RecordBatch]) -> Result<Vec<Q80Row>, CliError> {
    let bad = |m: String| CliError::runtime(format!("unexpected q80 result: {m}"));
    let mut out = Vec::new();
    for b in batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| bad(format!("no column `{name}`")))
        };
        let strings = |name: &str| -> Result<arrow::array::StringArray, CliError> {
            let c = cast(&col(name)?, &DataType::Utf8).map_err(|e| bad(e.to_string()))?;
            Ok(c.as_string::<i32>().clone())
        };
        let money = |name: &str| -> Result<arrow::array::Decimal128Array, CliError> {
            let c = col(name)?;
            let target = DataType::Decimal128(38, Q80_SCALE as i8);
            match c.data_type() {
                DataType::Decimal128(_, s) if *s as u32 <= Q80_SCALE => {}
                t => return Err(bad(format!("column `{name}` has type {t}"))),
            }
            let c = cast(&c, &target).map_err(|e| bad(e.to_string()))?;
            Ok(c.as_primitive::<Decimal128Type>().clone())
        };
        let (ch, id) = (strings("channel")?, strings("id")?);
        let (sales, returns, profit) = (money("sales")?, money("returns")?, money("profit")?);
        for r in 0..b.num_rows() {
            let s = |a: &arrow::array::StringArray| a.is_valid(r).then(|| a.value(r).to_string());
            let d = |a: &arrow::array::Decimal128Array| a.is_valid(r).then(|| a.value(r));
            out.push(Q80Row {
                channel: s(&ch),
                id: s(&id),
                sales: d(&sales),
                returns: d(&returns),
                profit: d(&profit),
            });
        }
    }
    Ok(out)
}

/// Runs q80 over `data_dir`. Cleans up the app's shuffle objects afterwards
/// (unless `keep_shuffle`: then spills only), whether the job succeeded,
/// failed or was stopped by a signal (see the module doc).
///
/// The same as [`run_q80_answer`] followed at once by [`Q80Answer::finish`]
/// (for tests and benchmarks, which want the whole run in one call).
pub async fn run_q80(job: &Q80Job, data_dir: &Path) -> Result<Q80Outcome, Q80Failure> {
    run_q80_answer(job, data_dir).await?.finish().await
}

/// A q80 run whose answer is ready and whose cleanup has not run yet (from
/// [`run_q80_answer`]). Write [`Q80Answer::csv`] out, then await
/// [`Q80Answer::finish`]: it removes the run's objects (the job's shuffles,
/// spills and job marker, by the keys the manager knows, without listing),
/// completes the report and gives the outcome. Dropping it instead leaves
/// the objects for `shovel gc`.
pub struct Q80Answer {
    job: Q80Job,
    config: EngineConfig,
    backend: Backend,
    session: Session,
    manager: Arc<dyn ShuffleManager>,
    before: shuffle_core::MetricsSnapshot,
    report: RunReport,
    timings: Timings,
    total: Instant,
    result: Result<(String, Vec<Q80Row>), CliError>,
    run_guard: Option<RunGuard>,
    announcer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Q80Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q80Answer")
            .field("backend", &self.backend.description)
            .field("ok", &self.result.is_ok())
            .finish()
    }
}

/// Runs q80 over `data_dir` up to its answer: setup, planning, the job and
/// the canonical CSV, but not the cleanup, which [`Q80Answer::finish`] runs
/// after the caller wrote the answer out (so the answer never waits for it).
/// The job's shuffles are not removed when the job ends; the cleanup
/// removes them with everything else of the app in one batched delete.
/// Fails here only when the backend could not be set up (nothing was
/// written yet); a failed job is an answer without CSV.
pub async fn run_q80_answer(job: &Q80Job, data_dir: &Path) -> Result<Q80Answer, Q80Failure> {
    let mut report = RunReport::new(job, data_dir);
    let total = Instant::now();
    let mut timings = Timings::default();
    let fail = |error: CliError, mut report: RunReport, mut timings: Timings, t: Instant| {
        timings.setup_ms = ms(t);
        timings.total_ms = ms(total);
        report.timings = timings;
        report.fail(&error);
        Q80Failure { error, report }
    };

    let t = Instant::now();
    let signals = if job.interruptible {
        match StopSignals::install() {
            Ok(s) => Some(s),
            Err(error) => return Err(fail(error, report, timings, t)),
        }
    } else {
        None
    };
    let run_guard = signals.map(StopSignals::arm);
    let keep = job.keep_shuffle || job.config.keep_shuffle;
    let announcer = signals.map(|s| tokio::spawn(announce_stop(s, keep)));
    // Boxed, like `execute` below: the whole run as one unboxed state
    // machine is deep enough to overflow rustc's layout query limit.
    let setup = Box::pin(async {
        match signals {
            Some(s) => tokio::select! {
                biased;
                sig = s.wait() => Err(interrupted(sig, "during setup; nothing was written")),
                r = setup_backend(job) => r,
            },
            None => setup_backend(job).await,
        }
    });
    let (backend, config) = match setup.await {
        Ok(b) => b,
        Err(error) => {
            if let Some(a) = announcer {
                a.abort();
            }
            return Err(fail(error, report, timings, t));
        }
    };
    timings.setup_ms = ms(t);
    report.backend = backend.description.clone();
    tracing::debug!(
        backend = %report.backend,
        setup_ms = timings.setup_ms,
        "shuffle backend ready"
    );
    report.embedded_s3 = backend
        .embedded
        .as_ref()
        .map(|e| e.endpoint.clone())
        .or_else(|| {
            let p = backend.s3_process.as_ref()?;
            Some(p.address.endpoint.clone())
        });
    let manager: Arc<dyn ShuffleManager> = Arc::clone(&backend.managed.manager);
    report.spill_location = manager.spill_store().location().to_string();
    let before = manager.metrics().snapshot();

    let session = Session::new(config.clone(), Arc::clone(&manager));
    // The job's shuffles go with the app's cleanup, after the answer is out.
    session.defer_shuffle_removal(true);
    let disk_dir = job
        .local_dirs
        .first()
        .cloned()
        .or_else(|| backend.local_temp.as_ref().map(|d| d.path().to_path_buf()));
    // The stage bar: drawn by `execute` once planned, fed task counts by
    // the recorder's samples meanwhile.
    let bar = Arc::new(Bar::new(
        "q80",
        1,
        job.progress && super::progress::enabled(false),
    ));
    let (recorder, metrics_server) =
        match super::observe::start_recorder(job, &config, &manager, disk_dir, bar.clone()) {
            Ok(r) => r,
            Err(error) => return Err(fail(error, report, timings, t)),
        };
    session.set_event_sink(Some(recorder.clone()));
    let canceller = signals.map(|s| {
        let session = session.clone();
        tokio::spawn(async move {
            s.wait().await;
            session.cancel();
        })
    });
    let mut result = match job.engine {
        QueryEngine::Shovel => {
            Box::pin(execute(
                job,
                &session,
                &manager,
                &bar,
                data_dir,
                &mut timings,
                &mut report,
            ))
            .await
        }
        QueryEngine::DataFusion => {
            let spill_dir = backend.local_root.join("spill").join(manager.app_id());
            Box::pin(execute_datafusion(
                job,
                &config,
                &manager,
                &spill_dir,
                data_dir,
                &mut timings,
                &mut report,
            ))
            .await
        }
        QueryEngine::Ballista => {
            Box::pin(execute_ballista(
                job,
                &config,
                &backend.pairs,
                &manager,
                &recorder,
                data_dir,
                &mut timings,
                &mut report,
            ))
            .await
        }
    };
    // The S3 server process is stopped at cleanup: measure it now.
    if let (Some(b), Some(p)) = (report.ballista.as_mut(), backend.s3_process.as_ref()) {
        b.s3_server = Some(super::report::ServerProcessStats {
            pid: p.pid(),
            endpoint: p.address.endpoint.clone(),
            peak_rss_bytes: p.peak_rss_bytes().unwrap_or(0),
        });
    }
    if let Some(c) = canceller {
        c.abort();
    }
    session.set_event_sink(None);
    if let Err(e) = super::observe::finish_recorder(&recorder, &mut report) {
        result = result.and(Err(e));
    }
    // The endpoint serves while the job runs, and stops with it.
    drop(metrics_server);
    // A signal that came before the answer is handed out withholds it (the
    // run then fails with 128+n once cleaned up).
    if let (Some(sig), Ok(_)) = (signals.and_then(|_| StopSignals::received()), &result) {
        result = Err(interrupted(
            sig,
            "after the job finished; its answer is not printed",
        ));
    }
    Ok(Q80Answer {
        job: job.clone(),
        config,
        backend,
        session,
        manager,
        before,
        report,
        timings,
        total,
        result,
        run_guard,
        announcer,
    })
}

impl Q80Answer {
    /// The canonical CSV, if the job succeeded (and no stop signal came).
    pub fn csv(&self) -> Option<&str> {
        self.result.as_ref().ok().map(|(csv, _)| csv.as_str())
    }

    /// Cleans up (see [`Q80Answer`]) and gives the outcome with the whole
    /// report, cleanup included. A stop signal that comes during cleanup
    /// lets it finish and then fails the run with 128+n.
    pub async fn finish(self) -> Result<Q80Outcome, Q80Failure> {
        let Q80Answer {
            job,
            config,
            backend,
            session,
            manager,
            before,
            mut report,
            mut timings,
            total,
            mut result,
            run_guard,
            announcer,
        } = self;
        let job = &job;
        let t = Instant::now();
        let Backend {
            managed,
            embedded,
            s3_process,
            mut local_temp,
            mut s3_temp,
            outputs_at,
            ..
        } = backend;
        if config.keep_shuffle {
            let shuffles = session
                .kept_shuffles()
                .iter()
                .map(|k| (k.shuffle_id, k.outputs.len() as u64, k.bytes()))
                .collect();
            let (spill_objects_removed, spill_error) = match manager.spill_store().cleanup().await {
                Ok(n) => (n, None),
                Err(e) => (0, Some(one_line(&e.to_string()))),
            };
            // The outputs stay where they are: a temp dir holding them is kept.
            // (With S3 the local temp dir held only spills: it goes.)
            if config.backend == ShuffleBackend::Local {
                if let Some(d) = local_temp.take() {
                    let _ = d.keep();
                }
            }
            if let Some(d) = s3_temp.take() {
                let _ = d.keep();
            }
            let kept = Kept {
                app_id: manager.app_id().to_string(),
                location: outputs_at.clone(),
                shuffles,
                spill_objects_removed,
                spill_error,
            };
            if job.announce {
                let target = outputs_at
                    .split(" (")
                    .next()
                    .unwrap_or(&outputs_at)
                    .replace(',', " ");
                eprintln!(
                    "note: --keep-shuffle: {}; spills removed. `shovel gc --older-than <age> {target}` \
                     removes them later",
                    kept.describe()
                );
                if let Some(e) = &kept.spill_error {
                    eprintln!(
                        "warning: removing the spill objects of app {} failed: {e}",
                        kept.app_id
                    );
                }
            }
            report.cleanup = Some(Cleanup::Kept(kept));
            // Stop the job marker's heartbeat and remove the marker, keeping the
            // outputs: `shovel gc` then judges them by their age.
            if let Err(e) = manager.release_app().await {
                if job.announce {
                    eprintln!(
                        "warning: removing the job marker of app {} failed: {}",
                        manager.app_id(),
                        one_line(&e.to_string())
                    );
                }
            }
        } else {
            match manager.cleanup_app().await {
                Ok(n) => report.cleanup = Some(Cleanup::Removed(n)),
                Err(e) => {
                    let msg = one_line(&e.to_string());
                    if job.announce {
                        eprintln!(
                            "warning: cleaning up shuffle objects of app {} failed: {msg}",
                            manager.app_id()
                        );
                    }
                    report.cleanup = Some(Cleanup::Failed(msg));
                }
            }
        }
        let after = manager.metrics().snapshot();
        report.metrics = after.delta(&before);
        drop(session);
        drop(manager);
        drop(managed);
        drop(embedded);
        drop(s3_process);
        // Not kept: the temp dirs go now (the embedded server has stopped,
        // though a write it cut off may still be finishing).
        drop(local_temp);
        if let Some(dir) = s3_temp {
            shuffle_s3::remove_server_dir(dir);
        }
        timings.cleanup_ms = ms(t);
        report.peak_rss_bytes = peak_rss_bytes();
        timings.total_ms = ms(total);
        report.timings = timings;

        // From here on a signal quits at once: nothing of the run is left to
        // clean. One that came before (even during cleanup) fails the run.
        if let Some(a) = announcer {
            a.abort();
        }
        if let Some(sig) = run_guard.and_then(RunGuard::finish) {
            if result.is_ok() {
                result = Err(interrupted(sig, "during cleanup, after the job finished"));
            } else if let Err(e) = &mut result {
                if e.code != sig.exit_code() {
                    *e = interrupted(sig, "");
                }
            }
        }

        match result {
            Ok((csv, rows)) => {
                report.rows = rows.len() as u64;
                Ok(Q80Outcome { csv, rows, report })
            }
            Err(error) => {
                report.fail(&error);
                Err(Q80Failure { error, report })
            }
        }
    }
}

/// The error of a run stopped by `sig`.
fn interrupted(sig: StopSignal, detail: &str) -> CliError {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    CliError {
        message: format!(
            "interrupted by {}: the job was cancelled and its tasks stopped{detail}",
            sig.describe()
        ),
        code: sig.exit_code(),
    }
}

/// Prints what happens next when the first stop signal comes.
async fn announce_stop(signals: &'static StopSignals, keep: bool) {
    let sig = signals.wait().await;
    let what = if keep {
        "removing this run's spill objects (its committed map outputs are kept)"
    } else {
        "removing this run's shuffle and spill objects"
    };
    eprintln!(
        "\nshovel: {}: stopping tasks, then {what} ({} again to quit at once)",
        sig.describe(),
        sig.again()
    );
}

async fn execute(
    job: &Q80Job,
    session: &Session,
    manager: &Arc<dyn ShuffleManager>,
    bar: &Arc<Bar>,
    data_dir: &Path,
    timings: &mut Timings,
    report: &mut RunReport,
) -> Result<(String, Vec<Q80Row>), CliError> {
    let t = Instant::now();
    let config = session.config();
    let opts = Q80Options {
        date: job.date.to_date32(),
        limit: None,
    };
    let plan_err = |e: crate::error::EngineError| {
        CliError::runtime(format!(
            "planning q80 over {}: {}",
            data_dir.display(),
            one_line(&e.to_string())
        ))
    };
    let df = q80(session, data_dir, &opts).map_err(plan_err)?;
    let stages = session
        .plan_job(df.logical_plan())
        .map_err(plan_err)?
        .stages
        .len() as u64
        + 1;
    report.planned_stages = stages;
    timings.plan_ms = ms(t);

    let t = Instant::now();
    bar.start(stages);
    let done = Arc::new(AtomicU64::new(0));
    // Map stages in which the executor to lose (if any) committed outputs.
    let victim_stages = Arc::new(AtomicU64::new(0));
    {
        let (bar, done, victim) = (
            Arc::clone(bar),
            Arc::clone(&done),
            Arc::clone(&victim_stages),
        );
        let executors = config.executors.max(1);
        let victim_id = job.lose_executor.map(|p| p.executor);
        session.set_stage_hook(Some(Arc::new(move |ev: &StageEvent| {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if victim_id.is_some_and(|v| {
                ev.statuses
                    .iter()
                    .any(|s| s.map_id as usize % executors == v)
            }) {
                victim.fetch_add(1, Ordering::Relaxed);
            }
            bar.set(
                n,
                &format!(
                    "stages done (last: stage {}, shuffle {})",
                    ev.stage_id, ev.shuffle_id
                ),
            );
        })));
    }
    if let Some(plan) = job.lose_executor {
        install_executor_loss(session, manager, plan, &victim_stages, job.announce);
    }
    bar.set(0, "stages done");
    let result = df.collect_with_summary().await;
    session.set_stage_hook(None);
    session.set_task_hook(None);
    if session.executors().is_cancelled() {
        bar.finish();
        timings.execute_ms = ms(t);
        let sig = StopSignals::received().unwrap_or(StopSignal::Interrupt);
        return Err(interrupted(sig, ""));
    }
    bar.finish();
    timings.execute_ms = ms(t);
    let (batches, summary) = result.map_err(|e| {
        CliError::runtime(format!(
            "q80 failed on {}: {}",
            report.backend,
            one_line(&e.to_string())
        ))
    })?;
    report.job = Some(summary);

    let t = Instant::now();
    let rows = batches_to_rows(&batches)?;
    let csv = q80_csv(&rows);
    timings.output_ms = ms(t);
    Ok((csv, rows))
}

/// `--engine datafusion`: plans and runs q80 on DataFusion with Shovel
/// installed over `manager` (see `cli::df`). A stop signal drops the
/// running plan, which stops its tasks.
async fn execute_datafusion(
    job: &Q80Job,
    config: &EngineConfig,
    manager: &Arc<dyn ShuffleManager>,
    spill_dir: &Path,
    data_dir: &Path,
    timings: &mut Timings,
    report: &mut RunReport,
) -> Result<(String, Vec<Q80Row>), CliError> {
    let t = Instant::now();
    let ctx = super::df::q80_context(config, manager, spill_dir, data_dir).await?;
    let plan = super::df::plan_q80(&ctx, job.date).await?;
    report.planned_stages = super::df::exchanges(&plan) as u64 + 1;
    timings.plan_ms = ms(t);

    let t = Instant::now();
    let result = unless_stopped(job, super::df::run_plan(&ctx, plan)).await;
    timings.execute_ms = ms(t);
    let result = result?;
    // Spill files are gone with the plan; an empty directory goes too.
    let _ = std::fs::remove_dir(spill_dir);
    let rows = result.map_err(|e| {
        CliError::runtime(format!(
            "q80 failed on DataFusion over {}: {}",
            report.backend,
            one_line(&e.to_string())
        ))
    })?;
    let t = Instant::now();
    let csv = q80_csv(&rows);
    timings.output_ms = ms(t);
    Ok((csv, rows))
}

/// Awaits `run`; for an interruptible job, the first stop signal wins
/// instead (`run` is dropped) and the run fails with it.
async fn unless_stopped<T>(
    job: &Q80Job,
    run: impl std::future::Future<Output = T>,
) -> Result<T, CliError> {
    if !job.interruptible {
        return Ok(run.await);
    }
    let signals = StopSignals::install()?;
    tokio::select! {
        biased;
        sig = signals.wait() => Err(interrupted(sig, "")),
        r = run => Ok(r),
    }
}

/// The directory an S3 server started for this run serves (removed with
/// the run unless kept).
fn s3_temp_dir() -> Result<tempfile::TempDir, CliError> {
    tempfile::Builder::new()
        .prefix("shovel-s3-")
        .tempdir()
        .map_err(|e| CliError::runtime(format!("cannot create a temp dir for S3: {e}")))
}

/// The `shovel` binary that starts the run's processes (Ballista's
/// scheduler and executors, the S3 server).
fn shovel_exe(job: &Q80Job) -> Result<PathBuf, CliError> {
    match &job.shovel_exe {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().map_err(|e| {
            CliError::runtime(format!(
                "cannot find the shovel binary to start the run's processes with: {e}"
            ))
        }),
    }
}

/// `--engine ballista`: q80 on a Ballista cluster (see `cli::ballista`).
#[cfg(feature = "ballista")]
#[allow(clippy::too_many_arguments)] // the run's parts, one argument each
async fn execute_ballista(
    job: &Q80Job,
    config: &EngineConfig,
    pairs: &[(String, String)],
    manager: &Arc<dyn ShuffleManager>,
    recorder: &crate::events::EventRecorder,
    data_dir: &Path,
    timings: &mut Timings,
    report: &mut RunReport,
) -> Result<(String, Vec<Q80Row>), CliError> {
    // The executors of a local cluster sample themselves into files the
    // recorder reads (`events::remote`); a cluster that is already up
    // (`--cluster`) is not sampled.
    let samples = job.cluster.is_none().then(|| {
        let feed = Arc::new(crate::events::RemoteExecutors::new());
        recorder.attach_remote(Arc::clone(&feed));
        (feed, job.event_log_interval)
    });
    let shovel_exe = shovel_exe(job)?;
    let spec = super::ballista::ClusterSpec {
        shovel_exe,
        executors: config.executors.max(1),
        slots: config.parallelism.max(1),
        config: config.clone(),
        pairs: pairs.to_vec(),
        lose: job.lose_executor.map(|l| {
            (
                l.executor,
                l.after_stages.unwrap_or(DEFAULT_LOSS_AFTER_STAGES),
            )
        }),
        native_shuffle: job.ballista_native_shuffle,
        samples,
    };
    let t = Instant::now();
    // A stop signal drops the run, and with it the cluster, which stops
    // its processes.
    let run = super::ballista::execute(&spec, job.cluster, config, manager, data_dir, job.date);
    let result = unless_stopped(job, run).await;
    timings.execute_ms = ms(t);
    let (rows, summary) = result??;
    report.planned_stages = summary.stages;
    report.ballista = Some(summary);
    let t = Instant::now();
    let csv = q80_csv(&rows);
    timings.output_ms = ms(t);
    Ok((csv, rows))
}

#[cfg(not(feature = "ballista"))]
#[allow(clippy::too_many_arguments)]
async fn execute_ballista(
    _job: &Q80Job,
    _config: &EngineConfig,
    _pairs: &[(String, String)],
    _manager: &Arc<dyn ShuffleManager>,
    _recorder: &crate::events::EventRecorder,
    _data_dir: &Path,
    _timings: &mut Timings,
    _report: &mut RunReport,
) -> Result<(String, Vec<Q80Row>), CliError> {
    Err(CliError::usage(
        "this shovel was built without Ballista; build it with \
         `cargo build --release --features ballista` (or `cargo run --release --features ballista --bin shovel -- q80 --engine ballista`)",
    ))
}

/// A signal that stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, `timeout`, systemd, Kubernetes, batch schedulers).
    Terminate,
    /// SIGHUP (the terminal went away).
    Hangup,
}

impl StopSignal {
    /// `SIGINT`, `SIGTERM`, `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        }
    }

    /// The exit code of a run it stopped: 128 + the signal number, as a
    /// shell reports a process the signal killed (130, 143, 129).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
            Self::Hangup => 129,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Interrupt => "Ctrl-C (SIGINT)",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        }
    }

    fn again(self) -> &'static str {
        match self {
            Self::Interrupt => "Ctrl-C",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        }
    }
}

/// The process's handlers for [`StopSignal`]s, installed once by
/// [`StopSignals::install`] and kept until the process exits.
///
/// The handlers run on a thread of their own (with a one-thread tokio
/// runtime), so they work before, during and after any run's runtime. While
/// a run is armed ([`StopSignals::arm`]) the first signal is recorded and
/// wakes [`StopSignals::wait`]; any other signal (a second one, or one when
/// no run is armed) exits the process at once with its code.
#[derive(Debug)]
pub struct StopSignals {
    first: tokio::sync::watch::Sender<Option<StopSignal>>,
}

/// Set while a run is armed: the first signal is for it to handle.
static ARMED: AtomicBool = AtomicBool::new(false);
static SIGNALS: OnceLock<Result<StopSignals, String>> = OnceLock::new();

impl StopSignals {
    /// Installs the handlers (once per process; later calls return the same
    /// handlers). Returns once they are installed, so no signal that comes
    /// after is lost.
    pub fn install() -> Result<&'static StopSignals, CliError> {
        SIGNALS
            .get_or_init(|| {
                let (tx, _) = tokio::sync::watch::channel(None);
                let thread_tx = tx.clone();
                let (ready_tx, ready_rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("shovel-signals".into())
                    .spawn(move || signal_thread(thread_tx, ready_tx))
                    .map_err(|e| format!("cannot start the signal thread: {e}"))?;
                match ready_rx.recv() {
                    Ok(Ok(())) => Ok(StopSignals { first: tx }),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("the signal thread ended before installing handlers".into()),
                }
            })
            .as_ref()
            .map_err(|e| CliError::runtime(format!("installing signal handlers: {e}")))
    }

    /// The first signal received while a run was armed, if any.
    pub fn received() -> Option<StopSignal> {
        SIGNALS
            .get()
            .and_then(|s| s.as_ref().ok())
            .and_then(|s| *s.first.borrow())
    }

    /// Waits for the first signal of the armed run.
    pub async fn wait(&self) -> StopSignal {
        let mut rx = self.first.subscribe();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Arms the handlers for a run: until the guard is finished or dropped,
    /// the first signal is the run's to handle.
    pub fn arm(&'static self) -> RunGuard {
        ARMED.store(true, Ordering::SeqCst);
        RunGuard { signals: self }
    }
}

/// A run armed for [`StopSignals`]; disarms when finished or dropped.
#[derive(Debug)]
pub struct RunGuard {
    signals: &'static StopSignals,
}

impl RunGuard {
    /// Disarms (from now on a signal exits at once) and returns the signal
    /// that came while armed, if any.
    pub fn finish(self) -> Option<StopSignal> {
        ARMED.store(false, Ordering::SeqCst);
        *self.signals.first.borrow()
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        ARMED.store(false, Ordering::SeqCst);
    }
}

/// What the signal thread does with `sig`.
fn on_signal(sig: StopSignal, first: &tokio::sync::watch::Sender<Option<StopSignal>>) {
    let earlier = *first.borrow();
    if earlier.is_none() && ARMED.load(Ordering::SeqCst) {
        first.send_replace(Some(sig));
        return;
    }
    if earlier.is_some() {
        eprintln!(
            "\nshovel: {}: quitting at once; objects not removed yet stay until `shovel gc`",
            sig.describe()
        );
    }
    std::process::exit(i32::from(sig.exit_code()));
}

fn signal_thread(
    first: tokio::sync::watch::Sender<Option<StopSignal>>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start its runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let kinds = [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
            ];
            let mut streams = Vec::new();
            for k in kinds {
                match signal(k) {
                    Ok(s) => streams.push(s),
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                }
            }
            let _ = ready.send(Ok(()));
            let [int, term, hup] = &mut streams[..] else {
                return;
            };
            loop {
                let sig = tokio::select! {
                    Some(()) = int.recv() => StopSignal::Interrupt,
                    Some(()) = term.recv() => StopSignal::Terminate,
                    Some(()) = hup.recv() => StopSignal::Hangup,
                    else => return,
                };
                on_signal(sig, &first);
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ready.send(Ok(()));
            while tokio::signal::ctrl_c().await.is_ok() {
                on_signal(StopSignal::Interrupt, &first);
            }
        }
    });
}

/// `--lose-executor`: once the executor has committed map outputs in
/// `after_stages` stages, the next task that starts on it triggers its loss.
/// Its running tasks are killed; with storage that is not reliable (local
/// disk) the outputs it committed are deleted, as if its disk went with it.
fn install_executor_loss(
    session: &Session,
    manager: &Arc<dyn ShuffleManager>,
    plan: ExecutorLossPlan,
    victim_stages: &Arc<AtomicU64>,
    announce: bool,
) {
    let fired = AtomicBool::new(false);
    let (s, m, stages) = (
        session.clone(),
        Arc::clone(manager),
        Arc::clone(victim_stages),
    );
    let executor = plan.executor;
    let after = plan.after_stages.unwrap_or(DEFAULT_LOSS_AFTER_STAGES) as u64;
    session.set_task_hook(Some(Arc::new(move |ev: &TaskEvent| {
        if ev.executor != executor
            || stages.load(Ordering::Relaxed) < after
            || fired.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let Ok(loss) = s.lose_executor(executor) else {
            return;
        };
        // The hook is synchronous; deleting through the store is not.
        let (store, lost) = (Arc::clone(&m), loss.outputs_lost.clone());
        let deleted = wait_in_hook(async move {
            let mut n = 0;
            for st in &lost {
                match store
                    .invalidate_map_output(st.shuffle_id, st.map_id, st.attempt)
                    .await
                {
                    Ok(()) => n += 1,
                    Err(e) => tracing::warn!("deleting a lost output: {e}"),
                }
            }
            n
        });
        if announce {
            let outputs = if m.supports_reliable_storage() {
                "its committed map outputs are in S3 and stay".to_string()
            } else {
                format!("its disk took {deleted} committed map output(s) with it")
            };
            eprintln!(
                "shovel: lost executor {executor} as stage {} task {} started: killed {} \
                 running task(s); {outputs}",
                ev.stage_id, ev.partition, loss.tasks_killed,
            );
        }
    })));
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
