//! Running q80 end to end: backend setup (local dirs, S3, or an embedded S3
//! server), planning, execution with a per-stage progress bar, the
//! canonical CSV, cleanup, and the [`RunReport`].
//!
//! [`run_q80`] is shared by the `shovel` binary, the golden tests and the
//! q80 benchmark, so all three measure and check the same code path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Decimal128Type};
use shuffle_core::ShuffleManager;

use crate::config::{EngineConfig, ShuffleBackend};
use crate::queries::q80::{q80, Q80Options};
use crate::scheduler::{StageEvent, TaskEvent};
use crate::session::{build_shuffle_manager, ManagedShuffle, Session};
use crate::tpcds::{q80_csv, Q80Row, SqlDate, Q80_DEFAULT_DATE, Q80_SCALE};

use super::args::one_line;
use super::progress::Bar;
use super::report::{peak_rss_bytes, RunReport, Timings};
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
    /// Leave shuffle and spill objects (and temp dirs) in place.
    pub keep_shuffle: bool,
    /// Draw the stage progress bar (only ever on a terminal).
    pub progress: bool,
    /// Print notes (embedded S3, kept files) on stderr.
    pub announce: bool,
    /// Fault injection: fail this fraction of the embedded S3 server's
    /// requests (`--s3-fault-rate`).
    pub s3_fault_rate: Option<f64>,
    /// Fault injection: lose an executor mid-job (`--lose-executor`).
    pub lose_executor: Option<ExecutorLossPlan>,
    /// Stop on Ctrl-C: cancel the job, clean up, exit 130 (the binary).
    pub interruptible: bool,
}

/// `--s3-fault-rate` with a real S3 target.
fn embedded_only() -> CliError {
    CliError::usage(
        "--s3-fault-rate injects faults into the embedded S3 server only; drop \
         --s3-bucket/--s3-endpoint to use it",
    )
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
            lose_executor: None,
            interruptible: false,
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
    temp_dirs: Vec<tempfile::TempDir>,
    description: String,
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
    let mut pairs = job.shuffle_pairs.clone();
    let mut temp_dirs = Vec::new();
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
        temp_dirs.push(tmp);
    }
    let mut embedded = None;
    let description = match config.backend {
        ShuffleBackend::Local => format!("local disk ({local_desc})"),
        ShuffleBackend::S3 => {
            if job.s3_fault_rate.is_some()
                && (job.s3_endpoint.is_some() || config.s3_bucket.is_some())
            {
                return Err(embedded_only());
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
                (true, _) if job.s3_fault_rate.is_some() => return Err(embedded_only()),
                (true, _) => {
                    let where_ = config
                        .s3_bucket
                        .clone()
                        .unwrap_or_else(|| "the configured bucket".into());
                    let via = job
                        .s3_endpoint
                        .clone()
                        .unwrap_or_else(|| "AWS S3 (credentials from the AWS chain)".into());
                    format!("S3 {where_} via {via}")
                }
                (false, false) => {
                    let tmp = tempfile::Builder::new()
                        .prefix("shovel-s3-")
                        .tempdir()
                        .map_err(|e| {
                            CliError::runtime(format!("cannot create a temp dir for S3: {e}"))
                        })?;
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
                            if job.keep_shuffle {
                                " (kept)"
                            } else {
                                " (removed at exit)"
                            }
                        );
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
                    temp_dirs.push(tmp);
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
            temp_dirs,
            description,
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
/// (unless `keep_shuffle`), whether the job succeeded or not.
pub async fn run_q80(job: &Q80Job, data_dir: &Path) -> Result<Q80Outcome, Q80Failure> {
    let mut report = RunReport::new(job, data_dir);
    let total = Instant::now();
    let mut timings = Timings::default();

    let t = Instant::now();
    let (backend, config) = match setup_backend(job).await {
        Ok(b) => b,
        Err(error) => {
            timings.setup_ms = ms(t);
            timings.total_ms = ms(total);
            report.timings = timings;
            report.fail(&error);
            return Err(Q80Failure { error, report });
        }
    };
    timings.setup_ms = ms(t);
    report.backend = backend.description.clone();
    report.embedded_s3 = backend.embedded.as_ref().map(|e| e.endpoint.clone());
    let manager: Arc<dyn ShuffleManager> = Arc::clone(&backend.managed.manager);
    report.spill_location = manager.spill_store().location().to_string();
    let before = manager.metrics().snapshot();

    let result = execute(job, &config, &manager, data_dir, &mut timings, &mut report).await;

    let t = Instant::now();
    if job.keep_shuffle {
        report.cleanup = Some(super::report::Cleanup::Kept);
        let mut kept = Vec::new();
        for d in backend.temp_dirs {
            kept.push(d.keep().display().to_string());
        }
        if job.announce && !kept.is_empty() {
            eprintln!("note: --keep-shuffle: kept {}", kept.join(", "));
        }
    } else {
        match manager.cleanup_app().await {
            Ok(n) => report.cleanup = Some(super::report::Cleanup::Removed(n)),
            Err(e) => {
                let msg = one_line(&e.to_string());
                if job.announce {
                    eprintln!(
                        "warning: cleaning up shuffle objects of app {} failed: {msg}",
                        manager.app_id()
                    );
                }
                report.cleanup = Some(super::report::Cleanup::Failed(msg));
            }
        }
    }
    timings.cleanup_ms = ms(t);
    let after = manager.metrics().snapshot();
    report.metrics = after.delta(&before);
    report.peak_rss_bytes = peak_rss_bytes();
    timings.total_ms = ms(total);
    report.timings = timings;
    drop(manager);
    drop(backend.managed);
    drop(backend.embedded);

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

async fn execute(
    job: &Q80Job,
    config: &EngineConfig,
    manager: &Arc<dyn ShuffleManager>,
    data_dir: &Path,
    timings: &mut Timings,
    report: &mut RunReport,
) -> Result<(String, Vec<Q80Row>), CliError> {
    let t = Instant::now();
    let session = Session::new(config.clone(), Arc::clone(manager));
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
    let df = q80(&session, data_dir, &opts).map_err(plan_err)?;
    let stages = session
        .plan_job(df.logical_plan())
        .map_err(plan_err)?
        .stages
        .len() as u64
        + 1;
    report.planned_stages = stages;
    timings.plan_ms = ms(t);

    let t = Instant::now();
    let bar = Arc::new(Bar::new(
        "q80",
        stages,
        job.progress && super::progress::enabled(false),
    ));
    let done = Arc::new(AtomicU64::new(0));
    // Map stages in which the executor to lose (if any) committed outputs.
    let victim_stages = Arc::new(AtomicU64::new(0));
    {
        let (bar, done, victim) = (
            Arc::clone(&bar),
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
        install_executor_loss(&session, manager, plan, &victim_stages, job.announce);
    }
    let watcher = job.interruptible.then(|| watch_interrupt(session.clone()));
    bar.set(0, "stages done");
    let result = df.collect_with_summary().await;
    if let Some(w) = watcher {
        w.abort();
    }
    session.set_stage_hook(None);
    session.set_task_hook(None);
    if session.executors().is_cancelled() {
        bar.finish();
        timings.execute_ms = ms(t);
        return Err(CliError {
            message: "interrupted: the job was cancelled and its tasks stopped".into(),
            code: 130,
        });
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

/// On the first Ctrl-C, cancels the session's job (its caller then removes
/// the run's shuffle and spill objects); on the second, exits at once.
///
/// On Unix the SIGINT handler is installed before this returns, so an
/// interrupt that comes right after the job starts is not lost.
fn watch_interrupt(session: Session) -> tokio::task::JoinHandle<()> {
    let mut sigint = Interrupts::install();
    tokio::spawn(async move {
        if !sigint.next().await {
            return;
        }
        eprintln!(
            "\nshovel: interrupted: stopping tasks, then removing this run's shuffle and spill \
             objects (Ctrl-C again to quit at once)"
        );
        session.cancel();
        if sigint.next().await {
            std::process::exit(130);
        }
    })
}

/// Ctrl-C notifications (SIGINT on Unix, listened to from creation).
struct Interrupts {
    #[cfg(unix)]
    sigint: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn install() -> Self {
        Self {
            #[cfg(unix)]
            sigint: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
        }
    }

    /// Waits for the next interrupt; false if none can come.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(s) = self.sigint.as_mut() {
            return s.recv().await.is_some();
        }
        tokio::signal::ctrl_c().await.is_ok()
    }
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
        let deleted = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut n = 0;
                for st in &loss.outputs_lost {
                    match m
                        .invalidate_map_output(st.shuffle_id, st.map_id, st.attempt)
                        .await
                    {
                        Ok(()) => n += 1,
                        Err(e) => tracing::warn!("deleting a lost output: {e}"),
                    }
                }
                n
            })
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
