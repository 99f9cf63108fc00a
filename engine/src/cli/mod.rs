//! The `shovel` command line: `shovel q80`, `gen`, `gc`, `s3-server` and
//! `completions`.
//!
//! ```text
//!  args.rs ──▶ Command::Q80 ──▶ data.rs (cache / generate with progress, or check --data)
//!                                 │
//!                                 ▼
//!                 run.rs: backend (local | S3 | embedded S3) ─▶ plan ─▶ execute
//!                         (per-stage progress bar) ─▶ canonical CSV ─▶ cleanup_app
//!                         (--engine datafusion: df.rs plans and runs q80's SQL on
//!                          DataFusion with Shovel installed, same manager, same CSV)
//!                                 │
//!                                 ▼
//!                 report.rs: RunReport (stderr text, --report JSON)
//! ```
//!
//! `--engine ballista` and `shovel ballista scheduler|executor` (cargo
//! feature `ballista`): ballista.rs starts a local Ballista cluster of
//! `shovel` processes whose executors shuffle through Shovel.
//!
//! [`run::run_q80`] is public so the golden tests and the q80 benchmark run
//! exactly what the binary runs.

pub mod args;
#[cfg(feature = "ballista")]
pub mod ballista;
pub mod data;
pub mod df;
pub mod gc;
pub mod metrics_server;
pub mod observe;
pub mod orphan;
pub mod progress;
pub mod report;
pub mod run;
pub mod s3_server;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

pub use args::{Command, DataSource, Q80Args};
pub use report::RunReport;
pub use run::{run_q80, run_q80_answer, Q80Answer, Q80Job, Q80Outcome, QueryEngine};

/// A one-line error for the user, and the exit code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    /// 2 for usage errors (bad flags or values), 1 for failures at run time,
    /// 130 / 143 / 129 when stopped by SIGINT (Ctrl-C) / SIGTERM / SIGHUP.
    pub code: u8,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Runs `shovel` with `args` (without the program name); prints errors as
/// `shovel: error: <one line>`.
pub fn main_with_args(args: &[String]) -> ExitCode {
    match dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shovel: error: {}", args::one_line(&e.message));
            ExitCode::from(e.code)
        }
    }
}

fn dispatch(args: &[String]) -> Result<(), CliError> {
    match args::parse(args)? {
        Command::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Command::Completions(shell) => {
            let script = args::completions(shell);
            std::io::stdout()
                .write_all(&script)
                .map_err(|e| CliError::runtime(format!("writing stdout: {e}")))
        }
        Command::Version => {
            println!("shovel {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Gen(g) => data::run_gen(&g),
        Command::Q80(q) => run_q80_command(&q),
        Command::Gc(g) => gc::run(&g),
        Command::S3Server(a) => {
            orphan::watch_parent_from_env()?;
            s3_server::run(&a)
        }
        Command::Report(r) => observe::run_report(&r),
        #[cfg(feature = "ballista")]
        Command::Ballista(b) => {
            orphan::watch_parent_from_env()?;
            ballista::run(&b)
        }
    }
}

/// Checks that an output file can be written (its directory exists and
/// takes a new file, or the file itself opens for writing), so a typo or a
/// read-only directory fails before the job rather than after it. Leaves
/// nothing behind: a file created by the check is removed, an existing one
/// is opened without truncation.
fn check_output_path(flag: &str, path: &Path) -> Result<(), CliError> {
    if path.is_dir() {
        return Err(CliError::usage(format!(
            "{flag} {} is a directory; give a file name",
            path.display()
        )));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent {
        if !p.is_dir() {
            return Err(CliError::usage(format!(
                "{flag} {}: directory {} does not exist; create it first",
                path.display(),
                p.display()
            )));
        }
    }
    let existed = path.exists();
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => Err(CliError::usage(format!(
            "{flag} {}: cannot write there ({e}); choose a writable path",
            path.display()
        ))),
    }
}

fn write_file(flag: &str, path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text)
        .map_err(|e| CliError::runtime(format!("writing {flag} {}: {e}", path.display())))
}

/// Writes the q80 CSV to `--output` or stdout (a closed pipe is fine:
/// `shovel q80 | head`).
fn write_answer(output: Option<&Path>, csv: &str) -> Result<(), CliError> {
    match output {
        Some(p) => write_file("--output", p, csv),
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(csv.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(CliError::runtime(format!("writing stdout: {e}"))),
            }
        }
    }
}

fn run_q80_command(q: &Q80Args) -> Result<(), CliError> {
    let started = Instant::now();
    // Handlers first: a signal while data is generated exits with its code
    // (130 / 143 / 129); a half-generated data set is a temp dir the next
    // run removes. During the job the run handles it (see `run`).
    run::StopSignals::install()?;
    if let Some(p) = &q.output {
        check_output_path("--output", p)?;
    }
    if let Some(p) = &q.report {
        check_output_path("--report", p)?;
    }
    if let Some(p) = &q.event_log {
        check_output_path("--event-log", p)?;
    }
    if let Some(p) = &q.html {
        check_output_path("--html", p)?;
    }
    if let Some(p) = &q.job.emf {
        check_output_path("--emf", p)?;
    }
    if let Some(w) = args::memory_warning(q.job.config.memory_budget) {
        eprintln!("shovel: warning: {w}");
    }
    let progress = progress::enabled(q.quiet);
    let (data_dir, sf) = match &q.data {
        DataSource::Dir(d) => (d.clone(), None),
        DataSource::Generated { sf, cache_dir } => {
            let (dir, _generated) = data::ensure_cached(*sf, cache_dir, progress, !q.quiet)?;
            (dir, Some(*sf))
        }
    };
    let (input_rows, input_bytes) = data::check_data_dir(&data_dir)?;
    let data_ms = started.elapsed().as_secs_f64() * 1e3;

    let mut job = q.job.clone();
    job.progress = progress;
    job.announce = !q.quiet;
    job.interruptible = true;
    let threads = job.config.parallelism.clamp(2, 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the tokio runtime: {e}")))?;
    // The answer is written out before the run's cleanup, which then runs
    // (awaited: the process leaves no objects) and completes the report.
    let answer = rt.block_on(run_q80_answer(&job, &data_dir));
    let mut out_err = None;
    if let Some(csv) = answer.as_ref().ok().and_then(|a| a.csv()) {
        out_err = write_answer(q.output.as_deref(), csv).err();
    }
    let result = match answer {
        Ok(a) => rt.block_on(a.finish()),
        Err(f) => Err(f),
    };
    // Do not wait for stray background work (an S3 request in flight).
    rt.shutdown_timeout(std::time::Duration::from_secs(2));

    let (mut report, error) = match result {
        Ok(o) => (o.report, None),
        Err(f) => (f.report, Some(f.error)),
    };
    report.sf = sf;
    report.input_rows = Some(input_rows);
    report.input_file_bytes = Some(input_bytes);
    report.timings.data_ms = data_ms;

    if let Some(e) = &out_err {
        report.fail(e);
    }
    if let Some(p) = &q.report {
        write_file("--report", p, &report.to_json())?;
    }
    if let Some(p) = &q.html {
        let html = observe::html_of_run(&report)?;
        write_file("--html", p, &html)?;
    }
    // A run that failed before its job started has nothing to summarise
    // beyond the error line.
    let started_job = report.planned_stages > 0 || report.job.is_some();
    if !q.quiet && (error.is_none() || started_job) {
        eprint!("{}", report.render_text());
    }
    match error.or(out_err) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
