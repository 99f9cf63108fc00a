//! The `shovel` command line, on clap (derive).
//!
//! clap does the tokenising (`--flag value`, `--flag=value`, `-o`, `-q`,
//! repeated flags, `help`, `--version`, completions); this module adds what
//! clap cannot know:
//!
//! - **One-line errors.** Every error is one line naming the offending flag
//!   or value and the fix, printed as `shovel: error: ...` with exit code 2;
//!   clap's multi-line errors are folded into that line ([`render_clap_error`]),
//!   keeping its tips (`tip: a similar argument exists: '--shuffle'`).
//! - **Values** are read by the same functions as every config key
//!   ([`shuffle_core::parse`]), wrapped so the message names the flag.
//! - **Honest flags.** A flag the run would ignore or that contradicts
//!   another is a usage error naming both (`--s3-bucket` with
//!   `--shuffle local`, `--data` with `--sf`, `--memory 1GiB --conf
//!   memory.budget=2GiB`, ...); a single-valued flag given twice is refused
//!   by clap; `--memory` has a floor ([`MEMORY_FLOOR`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{EngineConfig, ShuffleBackend};
use crate::tpcds::SqlDate;

use super::run::{ExecutorLossPlan, Q80Job, QueryEngine};
use super::CliError;

/// The smallest `--memory` the command line accepts: 8MiB.
///
/// q80's widest operator input is a `store_sales` scan batch of 8192 rows
/// and 7 columns, about 0.5MiB in Arrow; 8MiB holds a few such batches per
/// task slot plus a map-output buffer's lz4 frames, so every operator can
/// make progress and spill the rest. Below it the pool cannot hold one
/// batch per operator and overruns its budget instead of spilling (`--memory
/// 1` was accepted and ignored). The floor applies to `--memory`; library
/// budgets (`EngineConfig`, `memory.limit`) and `--conf memory.budget` have
/// none: tests use tiny ones to force spilling.
pub const MEMORY_FLOOR: usize = 8 << 20;

const EXAMPLES: &str = "\
Examples:
  cargo run --release --bin shovel -- q80 --sf 1
  shovel q80 --sf 1 --shuffle s3 --output q80.csv --report run.json
  shovel q80 --data ./tpcds-sf1 --shuffle s3 --s3-bucket s3://my-bucket/shovel
  shovel gc --older-than 24h --dry-run s3://my-bucket/shovel
  shovel s3-server --dir ./s3-data --bind 127.0.0.1:9000 --latency 20ms
  shovel completions bash > /etc/bash_completion.d/shovel";

/// `shovel`'s flags, as clap sees them.
#[derive(Parser, Debug)]
#[command(
    name = "shovel",
    version,
    about = "TPC-DS q80 on Shovel's Arrow engine, shuffling through local disk or S3",
    after_help = EXAMPLES,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Run TPC-DS query 80: CSV on stdout, run summary on stderr
    Q80(Box<Q80Flags>),
    /// Write the 12 tables q80 reads as Parquet (<DIR>/<table>.parquet)
    Gen(GenFlags),
    /// Delete shuffle and spill objects killed jobs left (s3://bucket/prefix or a dir)
    #[command(long_about = super::gc::GC_ABOUT)]
    Gc(super::gc::GcArgs),
    /// Run the embedded S3-compatible server as its own process, until Ctrl-C or SIGTERM
    #[command(long_about = super::s3_server::S3_SERVER_ABOUT)]
    S3Server(S3ServerFlags),
    /// Render an event log (from --event-log) as the HTML report
    Report(ReportFlags),
    /// Run Apache Ballista's scheduler, or an executor whose shuffle is Shovel
    #[cfg(feature = "ballista")]
    Ballista(BallistaFlags),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `shovel q80`'s flags. Arg ids are the field names (`value_source` and
/// the conflict checks below use them).
#[derive(Args, Debug)]
struct Q80Flags {
    /// Scale factor, generated once and cached
    #[arg(long, value_name = "N", default_value = "1", allow_negative_numbers = true,
          value_parser = with("--sf", parse_sf), help_heading = "Data")]
    sf: f64,
    /// Cache of generated data [default: $XDG_CACHE_HOME/shovel/tpcds or ~/.cache/shovel/tpcds]
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    cache_dir: Option<PathBuf>,
    /// Read existing Parquet instead (<table>.parquet or <table>/*.parquet)
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    data: Option<PathBuf>,
    /// Start of the 30-day window
    #[arg(long, value_name = "YYYY-MM-DD", default_value = "2000-08-23",
          value_parser = with("--date", parse_date), help_heading = "Data")]
    date: SqlDate,

    /// Where shuffle files go
    #[arg(long, value_name = "BACKEND", default_value = "local", ignore_case = true,
          value_parser = backend_parser(), help_heading = "Shuffle and spill")]
    shuffle: ShuffleBackend,
    /// Spill to the S3 bucket too (needs --shuffle s3)
    #[arg(long, help_heading = "Shuffle and spill")]
    spill_to_s3: bool,
    /// Local shuffle/spill directory, repeatable [default: a temp dir]
    #[arg(long, value_name = "DIR", help_heading = "Shuffle and spill")]
    local_dir: Vec<PathBuf>,
    /// Bucket and prefix for shuffle objects (needs --shuffle s3)
    #[arg(long, value_name = "s3://B/P", value_parser = with("--s3-bucket", parse_bucket),
          help_heading = "Shuffle and spill")]
    s3_bucket: Option<String>,
    /// S3-compatible endpoint (MinIO, ...); with neither bucket nor endpoint, --shuffle s3
    /// starts an embedded S3 server on 127.0.0.1
    #[arg(long, value_name = "URL", value_parser = with("--s3-endpoint", parse_endpoint),
          help_heading = "Shuffle and spill")]
    s3_endpoint: Option<String>,
    /// Do not delete this run's shuffle and spill objects at the end
    #[arg(long, help_heading = "Shuffle and spill")]
    keep_shuffle: bool,
    /// With the embedded S3 server: add this round trip to every request (e.g. 20ms), as
    /// `shovel s3-server --latency` does
    #[arg(long, value_name = "DURATION", value_parser = with("--s3-latency", parse_duration_arg),
          help_heading = "Shuffle and spill")]
    s3_latency: Option<std::time::Duration>,

    /// Query engine: shovel (Shovel's own) or datafusion (Apache DataFusion with Shovel's
    /// exchange, spill and memory pool); both shuffle through the same store
    #[arg(long, value_name = "ENGINE", default_value = "shovel", ignore_case = true,
          value_parser = engine_parser(), help_heading = "Engine")]
    engine: QueryEngine,
    /// Memory budget, e.g. 512MiB, 2GiB; at least 8MiB
    #[arg(long, value_name = "SIZE", default_value = "2GiB", allow_negative_numbers = true,
          value_parser = with("--memory", parse_size_arg), help_heading = "Engine")]
    memory: usize,
    /// Concurrent tasks
    #[arg(long, value_name = "N", default_value = "2", allow_negative_numbers = true,
          value_parser = with("--parallelism", parse_count), help_heading = "Engine")]
    parallelism: usize,
    /// Partitions of every hash shuffle
    #[arg(long, value_name = "N", default_value = "8", allow_negative_numbers = true,
          value_parser = with("--partitions", parse_count), help_heading = "Engine")]
    partitions: usize,
    /// Broadcast join sides under SIZE; 0 shuffles every join
    #[arg(long, value_name = "SIZE", default_value = "10MiB", allow_negative_numbers = true,
          value_parser = with("--broadcast-threshold", parse_size_arg), help_heading = "Engine")]
    broadcast_threshold: usize,
    /// Any engine, shuffle or s3.* key, e.g. --conf s3.region=eu-west-1 (repeatable)
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Engine")]
    conf: Vec<String>,
    /// With --engine ballista: run on the Ballista scheduler at HOST:PORT instead of starting
    /// a local cluster (its executors must use the same shuffle store)
    #[arg(long, value_name = "HOST:PORT", value_parser = with("--cluster", parse_bind),
          help_heading = "Engine")]
    cluster: Option<std::net::SocketAddr>,
    /// With --engine ballista: Ballista's own shuffle (each executor's work directory, served
    /// over Arrow Flight) instead of Shovel, to compare against
    #[arg(long, help_heading = "Engine")]
    ballista_shuffle: bool,

    /// Executors tasks are placed on (partition % N)
    #[arg(long, value_name = "N", default_value = "1", allow_negative_numbers = true,
          value_parser = with("--executors", parse_count), help_heading = "Fault injection")]
    executors: usize,
    /// With the embedded S3 server: fail a fraction R (0..1) of its requests (503 SlowDown,
    /// 500, connection resets, slow answers) to see retries
    #[arg(long, value_name = "R", allow_negative_numbers = true,
          value_parser = with("--s3-fault-rate", parse_fault_rate), help_heading = "Fault injection")]
    s3_fault_rate: Option<f64>,
    /// Lose executor E (from 0) when it starts a task after committing map outputs in S
    /// stages [default S: 2]: its running tasks are killed and, with local shuffle, the
    /// outputs on its disk deleted
    #[arg(long, value_name = "E[@S]", value_parser = with("--lose-executor", parse_executor_loss),
          help_heading = "Fault injection")]
    lose_executor: Option<ExecutorLossPlan>,

    /// Same as --shuffle s3 (false: --shuffle local)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = with("--write-shuffle-files-to-s3", parse_flag_bool),
          help_heading = "Glue spellings")]
    write_shuffle_files_to_s3: Option<bool>,
    /// Same as --spill-to-s3; also --conf spark.shuffle.glue.s3ShuffleBucket=s3://B/P
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = with("--write-shuffle-spills-to-s3", parse_flag_bool),
          help_heading = "Glue spellings")]
    write_shuffle_spills_to_s3: Option<bool>,

    /// Write the CSV here [default: stdout]
    #[arg(long, short = 'o', value_name = "FILE.csv", help_heading = "Output")]
    output: Option<PathBuf>,
    /// Write the run summary as JSON
    #[arg(long, value_name = "FILE.json", help_heading = "Output")]
    report: Option<PathBuf>,
    /// No progress bars and no summary on stderr
    #[arg(long, short = 'q', help_heading = "Output")]
    quiet: bool,
    /// Write the event log (JSON lines: job, stage and task events, samples of Glue's five
    /// metrics)
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    event_log: Option<PathBuf>,
    /// Write the HTML report (Glue's five charts, timeline, stage table, advice; one
    /// self-contained file)
    #[arg(long, value_name = "FILE.html", help_heading = "Output")]
    html: Option<PathBuf>,
    /// Time between the event log's samples
    #[arg(long, value_name = "DURATION", default_value = "100ms",
          value_parser = with("--event-log-interval", parse_duration_arg), help_heading = "Output")]
    event_log_interval: std::time::Duration,
    /// Write the samples as CloudWatch Embedded Metric Format lines (Glue's metric names)
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    emf: Option<PathBuf>,
    /// Serve live Prometheus metrics at http://ADDR/metrics while the job runs (a loopback
    /// address; port 0 picks a free port, printed on stderr)
    #[arg(long, value_name = "127.0.0.1:PORT",
          value_parser = with("--metrics-addr", parse_metrics_addr), help_heading = "Output")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// `--metrics-addr`: a socket address on a loopback interface (the
/// endpoint has no authentication, so it is never exposed beyond the host).
fn parse_metrics_addr(flag: &str, v: &str) -> Result<std::net::SocketAddr, CliError> {
    let addr: std::net::SocketAddr = v.trim().parse().map_err(|_| {
        CliError::usage(format!(
            "invalid {flag} `{v}`: expected IP:PORT, e.g. 127.0.0.1:9464"
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(CliError::usage(format!(
            "invalid {flag} `{v}`: the endpoint has no authentication, so it listens on \
             loopback only; use 127.0.0.1:{}",
            addr.port()
        )));
    }
    Ok(addr)
}

/// `shovel s3-server`'s flags.
#[derive(Args, Debug)]
struct S3ServerFlags {
    /// Directory holding the buckets and objects (created if missing; objects persist)
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Address to listen on; port 0 picks a free one (printed)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0",
          value_parser = with("--bind", parse_bind))]
    bind: std::net::SocketAddr,
    /// Added before every request is answered, like the round trip to a remote store
    #[arg(long, value_name = "DURATION", default_value = "0",
          value_parser = with("--latency", parse_duration_arg))]
    latency: std::time::Duration,
    /// Fail a fraction R (0..1) of requests (503 SlowDown, 500, connection resets, slow
    /// answers) to see clients retry
    #[arg(long, value_name = "R", allow_negative_numbers = true,
          value_parser = with("--fault-rate", parse_fault_rate))]
    fault_rate: Option<f64>,
    /// Accept a --bind address other than loopback (anyone who can reach it and has the
    /// printed keys can read and write DIR, over plain HTTP)
    #[arg(long)]
    allow_remote: bool,
}

/// `shovel ballista`'s flags.
#[cfg(feature = "ballista")]
#[derive(Args, Debug)]
struct BallistaFlags {
    #[command(subcommand)]
    role: BallistaSub,
}

#[cfg(feature = "ballista")]
#[derive(Subcommand, Debug)]
enum BallistaSub {
    /// Ballista's scheduler (plans jobs, cuts stages, assigns tasks), until Ctrl-C or SIGTERM
    Scheduler {
        /// Address to listen on (loopback only)
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:50050",
              value_parser = with("--bind", parse_bind))]
        bind: std::net::SocketAddr,
        /// Declare an executor lost after this many seconds without a heartbeat
        #[arg(long, value_name = "SECS", default_value = "10",
              value_parser = with("--executor-timeout", parse_count))]
        executor_timeout: usize,
    },
    /// A Ballista executor that writes and reads every shuffle through Shovel
    Executor(Box<BallistaExecutorFlags>),
}

#[cfg(feature = "ballista")]
#[derive(Args, Debug)]
struct BallistaExecutorFlags {
    /// The scheduler's address
    #[arg(long, value_name = "HOST:PORT", value_parser = with("--scheduler", parse_bind))]
    scheduler: std::net::SocketAddr,
    /// Arrow Flight port (Ballista requires one; Shovel's stages serve no data on it); 0: free
    #[arg(long, value_name = "PORT", default_value = "0")]
    flight_port: u16,
    /// Task gRPC port; 0: a free one
    #[arg(long, value_name = "PORT", default_value = "0")]
    grpc_port: u16,
    /// Task slots
    #[arg(long, value_name = "N", default_value = "2", value_parser = with("--slots", parse_count))]
    slots: usize,
    /// Ballista's work directory [default: a temp dir]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Where shuffle files go (every executor and the client must use the same store)
    #[arg(long, value_name = "BACKEND", default_value = "local", ignore_case = true,
          value_parser = backend_parser())]
    shuffle: ShuffleBackend,
    /// Spill to the S3 bucket too (needs --shuffle s3)
    #[arg(long)]
    spill_to_s3: bool,
    /// Local shuffle directory, shared by the executors (repeatable)
    #[arg(long, value_name = "DIR")]
    local_dir: Vec<PathBuf>,
    /// Bucket and prefix for shuffle objects
    #[arg(long, value_name = "s3://B/P", value_parser = with("--s3-bucket", parse_bucket))]
    s3_bucket: Option<String>,
    /// S3-compatible endpoint
    #[arg(long, value_name = "URL", value_parser = with("--s3-endpoint", parse_endpoint))]
    s3_endpoint: Option<String>,
    /// Memory budget of the executor's shuffle buffers
    #[arg(long, value_name = "SIZE", default_value = "2GiB",
          value_parser = with("--memory", parse_size_arg))]
    memory: usize,
    /// Any shuffle or s3.* key (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    conf: Vec<String>,
    /// Write this executor's stats (JSON: tasks, shuffle bytes, peak RSS) here
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// Append a sample of this process (JSON line: RSS, CPU, shuffle and store figures,
    /// running and newly committed tasks) here every --sample-interval, and one on exit
    #[arg(long, value_name = "FILE")]
    samples: Option<PathBuf>,
    /// Time between --samples lines
    #[arg(long, value_name = "DURATION", default_value = "100ms",
          value_parser = with("--sample-interval", parse_duration_arg))]
    sample_interval: std::time::Duration,
    /// Seconds between heartbeats to the scheduler
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = with("--heartbeat", parse_count))]
    heartbeat: usize,
    /// Use Ballista's own shuffle (work dir + Flight) instead of Shovel: a baseline
    #[arg(long)]
    native_shuffle: bool,
    /// Testing: SIGKILL this process once it committed map outputs in N stages
    #[arg(long, value_name = "N", hide = true, value_parser = with("--sigkill-after-stages", parse_count))]
    sigkill_after_stages: Option<usize>,
}

#[cfg(feature = "ballista")]
fn build_ballista(f: BallistaFlags) -> Result<Command, CliError> {
    use super::ballista::{BallistaArgs, ExecutorArgs, SchedulerArgs};
    let loopback = |flag: &str, a: &std::net::SocketAddr| {
        if a.ip().is_loopback() {
            Ok(())
        } else {
            Err(CliError::usage(format!(
                "{flag} {a} is not a loopback address: Ballista's gRPC is unauthenticated plain \
                 HTTP/2; bind 127.0.0.1:PORT"
            )))
        }
    };
    Ok(Command::Ballista(match f.role {
        BallistaSub::Scheduler {
            bind,
            executor_timeout,
        } => {
            loopback("--bind", &bind)?;
            BallistaArgs::Scheduler(SchedulerArgs {
                bind,
                executor_timeout: executor_timeout as u64,
            })
        }
        BallistaSub::Executor(e) => {
            let mut config = EngineConfig {
                backend: e.shuffle,
                spill_to_s3: e.spill_to_s3,
                s3_bucket: e.s3_bucket,
                memory_budget: e.memory,
                ..EngineConfig::default()
            };
            let mut pairs = Vec::new();
            if !e.local_dir.is_empty() {
                let dirs: Vec<String> = e
                    .local_dir
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                pairs.push(("local.dirs".to_string(), dirs.join(",")));
            }
            if let Some(ep) = e.s3_endpoint {
                pairs.push(("s3.endpoint".to_string(), ep));
            }
            for kv in &e.conf {
                apply_conf(&mut config, &mut pairs, kv)?;
            }
            let has = |key: &str| {
                pairs
                    .iter()
                    .any(|(k, _)| shuffle_s3::config::canonical_key(k) == Some(key))
            };
            if config.backend == ShuffleBackend::S3
                && config.s3_bucket.is_none()
                && !has("s3.bucket")
            {
                return Err(CliError::usage(
                    "ballista executor --shuffle s3 needs the bucket every executor shares: add \
                     --s3-bucket s3://bucket/prefix (and --s3-endpoint for a store other than AWS)",
                ));
            }
            BallistaArgs::Executor(Box::new(ExecutorArgs {
                scheduler: e.scheduler,
                bind_host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                flight_port: e.flight_port,
                grpc_port: e.grpc_port,
                slots: e.slots,
                work_dir: e.work_dir,
                config,
                pairs,
                stats: e.stats,
                samples: e.samples,
                sample_interval: e.sample_interval,
                sigkill_after_stages: e.sigkill_after_stages,
                heartbeat_secs: e.heartbeat as u64,
                native_shuffle: e.native_shuffle,
            }))
        }
    }))
}

/// `shovel report`'s flags.
#[derive(Args, Debug)]
struct ReportFlags {
    /// The event log `shovel q80 --event-log` wrote
    #[arg(value_name = "EVENTLOG")]
    event_log: PathBuf,
    /// Write the HTML report here
    #[arg(long, value_name = "FILE.html")]
    html: PathBuf,
}

/// `shovel gen`'s flags.
#[derive(Args, Debug)]
struct GenFlags {
    /// Scale factor
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = with("--sf", parse_sf))]
    sf: f64,
    /// Output directory
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Generator threads [default: all cores]
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = with("--threads", parse_count))]
    threads: Option<usize>,
    /// No progress bar
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    /// Print this text on stdout and exit 0 (`--help`, `help [COMMAND]`).
    Help(String),
    Version,
    Gen(GenArgs),
    Q80(Box<Q80Args>),
    /// `shovel gc`.
    Gc(super::gc::GcArgs),
    /// `shovel completions SHELL`.
    Completions(clap_complete::Shell),
    /// `shovel s3-server`.
    S3Server(super::s3_server::S3ServerArgs),
    /// `shovel report EVENTLOG --html FILE`.
    Report(ReportArgs),
    /// `shovel ballista scheduler|executor`.
    #[cfg(feature = "ballista")]
    Ballista(super::ballista::BallistaArgs),
}

/// `shovel report`.
#[derive(Debug, Clone)]
pub struct ReportArgs {
    pub event_log: PathBuf,
    pub html: PathBuf,
}

/// `shovel gen`.
#[derive(Debug, Clone)]
pub struct GenArgs {
    pub sf: f64,
    pub out: PathBuf,
    pub threads: Option<usize>,
    pub quiet: bool,
}

/// Where q80's input comes from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// Generate (or reuse) scale factor `sf` under `cache_dir`.
    Generated { sf: f64, cache_dir: PathBuf },
    /// Existing Parquet tables.
    Dir(PathBuf),
}

/// `shovel q80`.
#[derive(Debug, Clone)]
pub struct Q80Args {
    pub data: DataSource,
    pub job: super::run::Q80Job,
    pub output: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub quiet: bool,
    /// `--event-log FILE` (also in [`Q80Job::event_log`], which writes it).
    pub event_log: Option<PathBuf>,
    /// `--html FILE`: the HTML report of the run.
    pub html: Option<PathBuf>,
}

/// The clap command, for help texts and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), "shovel", &mut out);
    out
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    match args.first().map(String::as_str) {
        None => {
            return Err(CliError::usage(
                "missing command; run `shovel q80 --sf 1`, or `shovel help` for all commands",
            ))
        }
        Some("version") => return Ok(Command::Version),
        _ => {}
    }
    let argv = std::iter::once(OsString::from("shovel")).chain(args.iter().map(OsString::from));
    let matches = match command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return render_clap_error(e, args),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| match render_clap_error(e, args) {
        Err(e) => e,
        Ok(_) => CliError::usage("cannot read the command line; see `shovel help`"),
    })?;
    match cli.command {
        Sub::Q80(f) => {
            let m = matches
                .subcommand_matches("q80")
                .ok_or_else(|| CliError::usage("cannot read q80's flags; see `shovel help q80`"))?;
            Ok(Command::Q80(Box::new(build_q80(*f, m)?)))
        }
        Sub::Gen(g) => Ok(Command::Gen(GenArgs {
            sf: g.sf,
            out: g.out,
            threads: g.threads,
            quiet: g.quiet,
        })),
        Sub::Gc(g) => Ok(Command::Gc(g)),
        Sub::S3Server(f) => {
            if !f.allow_remote && !f.bind.ip().is_loopback() {
                return Err(CliError::usage(format!(
                    "--bind {} is not a loopback address: anyone who can reach it and has the \
                     printed keys could read and write the directory, over plain HTTP; bind \
                     127.0.0.1:PORT, or add --allow-remote if that is what you want",
                    f.bind
                )));
            }
            Ok(Command::S3Server(super::s3_server::S3ServerArgs {
                dir: f.dir,
                bind: f.bind,
                latency: f.latency,
                fault_rate: f.fault_rate,
                allow_remote: f.allow_remote,
            }))
        }
        Sub::Report(r) => Ok(Command::Report(ReportArgs {
            event_log: r.event_log,
            html: r.html,
        })),
        Sub::Completions { shell } => Ok(Command::Completions(shell)),
        #[cfg(feature = "ballista")]
        Sub::Ballista(b) => build_ballista(b),
    }
}

/// Folds a clap error into one line (or the help/version it carries).
fn render_clap_error(e: clap::Error, args: &[String]) -> Result<Command, CliError> {
    let sub = args.first().map(String::as_str).filter(|s| {
        matches!(
            *s,
            "q80" | "gen" | "gc" | "s3-server" | "report" | "completions" | "ballista"
        )
    });
    let see = match sub {
        Some(s) => format!("run `shovel {s} --help` for the list"),
        None => "run `shovel help` for the commands".to_string(),
    };
    let arg = || match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(a)) => a.split_whitespace().next().unwrap_or("").to_string(),
        _ => String::new(),
    };
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return Ok(Command::Help(e.render().to_string()))
        }
        ErrorKind::DisplayVersion => return Ok(Command::Version),
        // Our value parsers' messages already name the flag and the fix.
        ErrorKind::ValueValidation => {
            if let Some(src) = std::error::Error::source(&e) {
                return Err(CliError::usage(one_line(&src.to_string())));
            }
        }
        ErrorKind::InvalidValue => {
            if let Some(ContextValue::String(v)) = e.get(ContextKind::InvalidValue) {
                if v.is_empty() {
                    let cmd = sub.unwrap_or("q80");
                    return Err(CliError::usage(format!(
                        "{} needs a value; see `shovel {cmd} --help`",
                        arg()
                    )));
                }
            }
        }
        _ => {}
    }
    // clap's text without its usage block and "For more information" line.
    let text = e.render().to_string();
    let mut parts = Vec::new();
    let mut in_usage = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Usage:") {
            in_usage = true;
            continue;
        }
        if t.is_empty() {
            in_usage = false;
            continue;
        }
        if in_usage || t.starts_with("For more information") {
            continue;
        }
        parts.push(t.strip_prefix("error: ").unwrap_or(t).to_string());
    }
    let mut msg = parts.join("; ");
    match e.kind() {
        ErrorKind::InvalidSubcommand | ErrorKind::MissingSubcommand => msg.push_str(
            "; commands are q80, gen, gc, s3-server, completions and help (see `shovel help`)",
        ),
        ErrorKind::ArgumentConflict if msg.contains("multiple times") => {
            msg.push_str(&format!("; give {} once", arg()))
        }
        _ => msg.push_str(&format!("; {see}")),
    }
    Err(CliError::usage(msg))
}

/// Wraps a `parse_*(flag, value)` function as a clap value parser whose
/// error is our one-line message.
pub(super) fn with<T: 'static>(
    flag: &'static str,
    f: fn(&str, &str) -> Result<T, CliError>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |v: &str| f(flag, v).map_err(|e| e.message)
}

fn engine_parser() -> impl TypedValueParser<Value = QueryEngine> {
    PossibleValuesParser::new(QueryEngine::ALL.map(|e| e.as_str()))
        .map(|s| s.parse::<QueryEngine>().unwrap_or_default())
}

fn backend_parser() -> impl TypedValueParser<Value = ShuffleBackend> {
    PossibleValuesParser::new(ShuffleBackend::ALL.map(|b| b.as_str()))
        .map(|s| s.parse::<ShuffleBackend>().unwrap_or_default())
}

/// The boolean of a Glue flag (`--write-shuffle-files-to-s3 false`).
fn parse_flag_bool(flag: &str, v: &str) -> Result<bool, CliError> {
    shuffle_core::parse::parse_bool(flag, v)
        .map_err(|e| CliError::usage(format!("invalid {flag} `{v}`: {}", reason(&e, v))))
}

/// The reason of a [`shuffle_core::Error::Config`], without the value it
/// quotes first (the CLI's message quotes it already).
fn reason(e: &shuffle_core::Error, v: &str) -> String {
    let r = match e {
        shuffle_core::Error::Config { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    let quoted = format!("`{v}`");
    match r.strip_prefix(&quoted) {
        Some(rest) => rest
            .trim_start_matches(':')
            .trim_start()
            .trim_start_matches("is ")
            .to_string(),
        None => r,
    }
}

fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(ValueSource::CommandLine)
}

/// `--flag value` as the user wrote it, for messages.
fn spelled(m: &ArgMatches, id: &str, flag: &str) -> String {
    match m.get_raw(id).and_then(|mut v| v.next()) {
        Some(v) => format!("{flag} {}", v.to_string_lossy()),
        None => flag.to_string(),
    }
}

fn both(a: &str, b: &str, fix: &str) -> CliError {
    CliError::usage(format!("{a} contradicts {b}; {fix}"))
}

fn build_q80(f: Q80Flags, m: &ArgMatches) -> Result<Q80Args, CliError> {
    let mut config = EngineConfig::default();
    let mut job = Q80Job::default();

    // The backend, and which flag chose it (for messages).
    let mut backend_by: Option<String> = None;
    if given(m, "shuffle") {
        config.backend = f.shuffle;
        backend_by = Some(format!("--shuffle {}", f.shuffle));
    }
    if let Some(on) = f.write_shuffle_files_to_s3 {
        let b = if on {
            ShuffleBackend::S3
        } else {
            ShuffleBackend::Local
        };
        let by = format!("--write-shuffle-files-to-s3 {on}");
        if let Some(prev) = &backend_by {
            if config.backend != b {
                return Err(both(&by, prev, "give one of them"));
            }
        }
        config.backend = b;
        backend_by = Some(by);
    }
    let mut spill_by: Option<String> = None;
    if f.spill_to_s3 {
        config.spill_to_s3 = true;
        spill_by = Some("--spill-to-s3".into());
    }
    if let Some(on) = f.write_shuffle_spills_to_s3 {
        let by = format!("--write-shuffle-spills-to-s3 {on}");
        if let Some(prev) = &spill_by {
            if !on {
                return Err(both(&by, prev, "give one of them"));
            }
        }
        config.spill_to_s3 = on;
        spill_by = Some(by);
    }
    config.s3_bucket = f.s3_bucket;
    job.s3_endpoint = f.s3_endpoint;
    config.memory_budget = f.memory;
    config.parallelism = f.parallelism;
    config.shuffle_partitions = f.partitions;
    config.broadcast_threshold = f.broadcast_threshold;
    config.executors = f.executors;
    job.local_dirs = f.local_dir;
    job.s3_fault_rate = f.s3_fault_rate;
    job.s3_latency = f.s3_latency;
    job.lose_executor = f.lose_executor;
    job.keep_shuffle = f.keep_shuffle;
    job.date = f.date;
    job.engine = f.engine;
    job.cluster = f.cluster;
    job.ballista_native_shuffle = f.ballista_shuffle;

    // --conf, refusing one that contradicts a flag on the same line.
    let mut memory_by = given(m, "memory").then(|| spelled(m, "memory", "--memory"));
    let mut bucket_by = given(m, "s3_bucket").then(|| spelled(m, "s3_bucket", "--s3-bucket"));
    let mut endpoint_by =
        given(m, "s3_endpoint").then(|| spelled(m, "s3_endpoint", "--s3-endpoint"));
    for kv in &f.conf {
        let before = config.clone();
        let pairs_before = job.shuffle_pairs.len();
        apply_conf(&mut config, &mut job.shuffle_pairs, kv)?;
        let this = format!("--conf {kv}");
        let clash = |id: &str, flag: &str| -> Result<(), CliError> {
            if given(m, id) {
                return Err(both(&this, &spelled(m, id, flag), "give the setting once"));
            }
            Ok(())
        };
        if config.backend != before.backend {
            if let Some(prev) = &backend_by {
                return Err(both(&this, prev, "give the backend once"));
            }
        }
        if config.backend != before.backend || backend_by.is_none() && kv_key_is(kv, "backend") {
            backend_by = Some(this.clone());
        }
        // A setting this --conf changed may have been set once before.
        let claim = |changed: bool, by: &mut Option<String>, fix: &str| -> Result<(), CliError> {
            if changed {
                if let Some(prev) = by {
                    return Err(both(&this, prev, fix));
                }
                *by = Some(this.clone());
            }
            Ok(())
        };
        claim(
            config.spill_to_s3 != before.spill_to_s3,
            &mut spill_by,
            "give the setting once",
        )?;
        claim(
            config.s3_bucket != before.s3_bucket,
            &mut bucket_by,
            "give the bucket once",
        )?;
        claim(
            config.memory_budget != before.memory_budget,
            &mut memory_by,
            "give the memory budget once",
        )?;
        if config.parallelism != before.parallelism {
            clash("parallelism", "--parallelism")?;
        }
        if config.shuffle_partitions != before.shuffle_partitions {
            clash("partitions", "--partitions")?;
        }
        if config.broadcast_threshold != before.broadcast_threshold {
            clash("broadcast_threshold", "--broadcast-threshold")?;
        }
        if config.executors != before.executors {
            clash("executors", "--executors")?;
        }
        for (k, v) in &job.shuffle_pairs[pairs_before..] {
            match shuffle_s3::config::canonical_key(k)
                .or_else(|| shuffle_core::config::canonical_key(k))
            {
                Some("s3.bucket") => {
                    if let Some(prev) = &bucket_by {
                        if config.s3_bucket.as_deref() != Some(v.as_str()) {
                            return Err(both(&this, prev, "give the bucket once"));
                        }
                    }
                    bucket_by = Some(this.clone());
                }
                Some("s3.endpoint") => {
                    if let Some(prev) = &endpoint_by {
                        if job.s3_endpoint.as_deref() != Some(v.trim_end_matches('/')) {
                            return Err(both(&this, prev, "give the endpoint once"));
                        }
                    }
                    endpoint_by = Some(this.clone());
                }
                Some("local.dirs") if !job.local_dirs.is_empty() => {
                    return Err(both(
                        &this,
                        "--local-dir",
                        "give the directories with one of them",
                    ))
                }
                _ => {}
            }
        }
    }

    // Data.
    let data = match &f.data {
        Some(dir) => {
            if given(m, "sf") {
                return Err(CliError::usage(format!(
                    "--data contradicts {}: --data reads existing tables, --sf generates them; \
                     give one of them",
                    spelled(m, "sf", "--sf")
                )));
            }
            if given(m, "cache_dir") {
                return Err(CliError::usage(
                    "--cache-dir has no effect with --data (it holds generated data, --data \
                     reads existing tables); drop --cache-dir or --data",
                ));
            }
            DataSource::Dir(dir.clone())
        }
        None => DataSource::Generated {
            sf: f.sf,
            cache_dir: f
                .cache_dir
                .clone()
                .unwrap_or_else(super::data::default_cache_dir),
        },
    };

    // Flags that need S3 shuffle.
    if config.backend != ShuffleBackend::S3 {
        let local = backend_by
            .clone()
            .unwrap_or_else(|| "--shuffle local (the default)".to_string());
        let needs_s3 = [
            spill_by.clone().filter(|_| config.spill_to_s3),
            bucket_by.clone(),
            endpoint_by.clone(),
            f.s3_fault_rate
                .is_some()
                .then(|| spelled(m, "s3_fault_rate", "--s3-fault-rate")),
            f.s3_latency
                .is_some()
                .then(|| spelled(m, "s3_latency", "--s3-latency")),
        ];
        if let Some(flag) = needs_s3.into_iter().flatten().next() {
            return Err(CliError::usage(format!(
                "{flag} needs --shuffle s3, but the run uses {local}, which would ignore it; \
                 add --shuffle s3 or drop {}",
                flag.split(['=', ' ']).next().unwrap_or(&flag)
            )));
        }
    }
    if job.s3_fault_rate.is_some() {
        if let Some(target) = bucket_by.as_ref().or(endpoint_by.as_ref()) {
            return Err(CliError::usage(format!(
                "--s3-fault-rate injects faults into the embedded S3 server only, which {target} \
                 replaces; drop --s3-fault-rate or {}",
                target.split(['=', ' ']).next().unwrap_or(target)
            )));
        }
    }
    if job.s3_latency.is_some() {
        if let Some(target) = bucket_by.as_ref().or(endpoint_by.as_ref()) {
            return Err(CliError::usage(format!(
                "{} adds latency to the embedded S3 server only, which {target} replaces; \
                 drop --s3-latency or {} (run `shovel s3-server --latency` for a separate server)",
                spelled(m, "s3_latency", "--s3-latency"),
                target.split(['=', ' ']).next().unwrap_or(target)
            )));
        }
    }
    if job.engine == QueryEngine::Ballista && !given(m, "executors") && config.executors == 1 {
        // A Ballista run starts two executor processes unless told otherwise.
        config.executors = 2;
    }
    if let Some(loss) = &job.lose_executor {
        if loss.executor >= config.executors {
            return Err(CliError::usage(format!(
                "invalid --lose-executor {}: the run has {} executor(s), numbered from 0; \
                 add --executors {}",
                loss.executor,
                config.executors,
                loss.executor + 1
            )));
        }
    }
    if job.engine == QueryEngine::DataFusion {
        check_datafusion_flags(&job, m, &config)?;
    }
    if job.engine == QueryEngine::Ballista {
        check_ballista_flags(&job, &config)?;
    } else if job.cluster.is_some() {
        return Err(CliError::usage(
            "--cluster applies to --engine ballista only; add --engine ballista or drop --cluster",
        ));
    } else if job.ballista_native_shuffle {
        return Err(CliError::usage(
            "--ballista-shuffle applies to --engine ballista only; add --engine ballista or drop it",
        ));
    }
    if let Some(b) = &config.s3_bucket {
        // `--conf spark.shuffle.glue.s3ShuffleBucket=...` is only prefix-checked by the engine.
        parse_bucket("s3 bucket", b)?;
    }
    // The floor guards the flag users type; `--conf memory.budget` stays the
    // unchecked expert key (like the library's budget) that tests use to
    // force spilling at small scale factors.
    if given(m, "memory") && config.memory_budget < MEMORY_FLOOR {
        let by = memory_by.unwrap_or_else(|| "--memory".to_string());
        return Err(CliError::usage(format!(
            "{by} is below the floor of {}: the engine needs room for a few 8192-row batches \
             and a map-output buffer; use --memory {} or more (smaller budgets spill sooner, \
             not less)",
            human_size(MEMORY_FLOOR as u64),
            human_size(MEMORY_FLOOR as u64)
        )));
    }
    if f.event_log_interval.is_zero() {
        return Err(CliError::usage(
            "--event-log-interval must be above 0; the default is 100ms",
        ));
    }
    job.config = config;
    job.progress = !f.quiet;
    job.event_log = f.event_log.clone();
    job.event_log_interval = f.event_log_interval;
    job.emf = f.emf.clone();
    job.metrics_addr = f.metrics_addr;
    Ok(Q80Args {
        data,
        job,
        output: f.output,
        report: f.report,
        quiet: f.quiet,
        event_log: f.event_log,
        html: f.html,
    })
}

/// True when `kv`'s key names the shuffle backend.
fn kv_key_is(kv: &str, what: &str) -> bool {
    let k = kv.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
    match what {
        "backend" => {
            shuffle_core::config::canonical_key(k) == Some("shuffle.backend")
                || k == "write-shuffle-files-to-s3"
        }
        _ => false,
    }
}

/// `8MiB`, `2GiB`, `1536B`: the largest binary unit that divides `n`.
fn human_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// A warning when `budget` is above the machine's physical memory
/// (`MemTotal` of /proc/meminfo; `None` where that cannot be read).
pub fn memory_warning(budget: usize) -> Option<String> {
    let total = physical_memory()?;
    (budget as u64 > total).then(|| {
        format!(
            "--memory {} is more than this machine's {} of memory; the run may swap or be \
             killed before it spills",
            human_size(budget as u64),
            human_size(total & !((1 << 20) - 1))
        )
    })
}

/// Physical memory in bytes, from /proc/meminfo.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A scale factor: a finite number > 0.
pub fn parse_sf(flag: &str, v: &str) -> Result<f64, CliError> {
    match v.trim().parse::<f64>() {
        Ok(sf) if sf.is_finite() && sf > 0.0 => Ok(sf),
        _ => Err(CliError::usage(format!(
            "invalid {flag} `{v}`: expected a scale factor > 0, like 1 or 0.1"
        ))),
    }
}

/// A positive integer.
pub fn parse_count(flag: &str, v: &str) -> Result<usize, CliError> {
    let t = v.trim();
    if t.starts_with('-') {
        return Err(CliError::usage(format!(
            "invalid {flag} `{v}`: must be a positive integer, not negative"
        )));
    }
    match t.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(CliError::usage(format!(
            "invalid {flag} `{v}`: expected a positive integer, like 2"
        ))),
    }
}

/// A fraction in `[0, 1)` for `--s3-fault-rate`.
pub fn parse_fault_rate(flag: &str, v: &str) -> Result<f64, CliError> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..1.0).contains(&r) => Ok(r),
        _ => Err(CliError::usage(format!(
            "invalid {flag} `{v}`: expected a fraction of requests from 0 up to (not including) 1, \
             like 0.1"
        ))),
    }
}

/// Flags of Shovel's engine that `--engine datafusion` cannot honour.
fn check_datafusion_flags(
    job: &Q80Job,
    m: &ArgMatches,
    config: &EngineConfig,
) -> Result<(), CliError> {
    let why = if job.lose_executor.is_some() {
        Some((
            spelled(m, "lose_executor", "--lose-executor"),
            "DataFusion has no executors to lose (and no stage retry)",
        ))
    } else if config.executors != 1 {
        let flag = if given(m, "executors") {
            spelled(m, "executors", "--executors")
        } else {
            "--conf engine.executors".to_string()
        };
        Some((flag, "DataFusion has no executors to place tasks on"))
    } else if job.keep_shuffle || config.keep_shuffle {
        let flag = if job.keep_shuffle {
            "--keep-shuffle".to_string()
        } else {
            "--conf shuffle.keep".to_string()
        };
        Some((
            flag,
            "DataFusion removes each exchange's shuffle when its plan is dropped",
        ))
    } else {
        None
    };
    match why {
        Some((flag, reason)) => {
            let remove = if flag.starts_with("--conf") {
                flag.as_str()
            } else {
                flag.split(' ').next().unwrap_or(&flag)
            };
            Err(CliError::usage(format!(
                "{flag} applies to --engine shovel only: {reason}; drop {remove} or use --engine \
                 shovel"
            )))
        }
        None => Ok(()),
    }
}

/// `--engine ballista`: `--executors` counts executor processes (2 unless
/// given), `--parallelism` is each one's task slots; `--keep-shuffle` and
/// `--lose-executor` with `--cluster` are refused.
fn check_ballista_flags(job: &Q80Job, config: &EngineConfig) -> Result<(), CliError> {
    if job.keep_shuffle || config.keep_shuffle {
        return Err(CliError::usage(
            "--keep-shuffle applies to --engine shovel only: a Ballista run's objects are purged \
             once its executors stop; drop --keep-shuffle",
        ));
    }
    if job.cluster.is_some() && job.ballista_native_shuffle {
        return Err(CliError::usage(
            "--ballista-shuffle picks the shuffle of the executors this run starts; a running \
             cluster's executors chose theirs (shovel ballista executor --native-shuffle): drop \
             --cluster or --ballista-shuffle",
        ));
    }
    if job.cluster.is_some() && job.lose_executor.is_some() {
        return Err(CliError::usage(
            "--lose-executor needs the executors this run starts; drop --cluster or --lose-executor",
        ));
    }
    if let Some(loss) = &job.lose_executor {
        if config.executors < 2 {
            return Err(CliError::usage(format!(
                "--lose-executor {} needs another executor to finish the query; add --executors 2",
                loss.executor
            )));
        }
    }
    Ok(())
}

/// `E[@S]` of `--lose-executor`.
pub fn parse_executor_loss(flag: &str, v: &str) -> Result<super::run::ExecutorLossPlan, CliError> {
    let bad = || {
        CliError::usage(format!(
            "invalid {flag} `{v}`: expected EXECUTOR[@STAGES], like 1 or 1@4"
        ))
    };
    let (e, s) = match v.trim().split_once('@') {
        Some((e, s)) => (e, Some(s)),
        None => (v.trim(), None),
    };
    let executor = e.trim().parse::<usize>().map_err(|_| bad())?;
    let after_stages = match s {
        Some(s) => Some(s.trim().parse::<usize>().map_err(|_| bad())?),
        None => None,
    };
    Ok(super::run::ExecutorLossPlan {
        executor,
        after_stages,
    })
}

/// A size (`512MiB`, `2GiB`, `1.5GiB`, `64k`, `1048576`), read by
/// [`shuffle_core::parse::parse_size`].
pub fn parse_size_arg(flag: &str, v: &str) -> Result<usize, CliError> {
    let bad = |r: String| CliError::usage(format!("invalid {flag} `{v}`: {r}"));
    let n = shuffle_core::parse::parse_size(flag, v).map_err(|e| bad(reason(&e, v)))?;
    usize::try_from(n).map_err(|_| bad("too large for this machine".into()))
}

/// A duration (`90s`, `30m`, `24h`, `7d`), read by
/// [`shuffle_core::parse::parse_duration`].
pub fn parse_duration_arg(flag: &str, v: &str) -> Result<std::time::Duration, CliError> {
    shuffle_core::parse::parse_duration(flag, v)
        .map_err(|e| CliError::usage(format!("invalid {flag} `{v}`: {}", reason(&e, v))))
}

/// A socket address to listen on: `IP:PORT` (`[::1]:PORT` for IPv6) or
/// `localhost:PORT`.
pub fn parse_bind(flag: &str, v: &str) -> Result<std::net::SocketAddr, CliError> {
    let t = v.trim();
    let t = match t.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => t.to_string(),
    };
    t.parse::<std::net::SocketAddr>().map_err(|_| {
        CliError::usage(format!(
            "invalid {flag} `{v}`: expected IP:PORT, like 127.0.0.1:9000 (port 0 picks a free one)"
        ))
    })
}

/// `KEY=VALUE` of a `--conf`.
pub fn parse_conf_pair(flag: &str, v: &str) -> Result<(String, String), CliError> {
    match v.split_once('=') {
        Some((k, val)) if !k.trim().is_empty() => {
            Ok((k.trim().to_string(), val.trim().to_string()))
        }
        _ => Err(CliError::usage(format!(
            "invalid {flag} `{v}`: expected KEY=VALUE, e.g. {flag} s3.region=eu-west-1"
        ))),
    }
}

/// `s3://bucket[/prefix]`, validated like the S3 backend does.
pub fn parse_bucket(flag: &str, v: &str) -> Result<String, CliError> {
    let t = v.trim();
    match shuffle_s3::BucketUri::parse(t) {
        Ok(_) => Ok(t.to_string()),
        Err(e) => {
            let detail = match &e {
                shuffle_core::Error::Config { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            Err(CliError::usage(format!("invalid {flag} `{v}`: {detail}")))
        }
    }
}

/// `http(s)://host[:port][/]`.
pub fn parse_endpoint(flag: &str, v: &str) -> Result<String, CliError> {
    let t = v.trim().trim_end_matches('/');
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(t.to_string()),
        _ => Err(CliError::usage(format!(
            "invalid {flag} `{v}`: expected http(s)://host[:port], like http://127.0.0.1:9000"
        ))),
    }
}

pub fn parse_date(flag: &str, v: &str) -> Result<SqlDate, CliError> {
    v.parse::<SqlDate>().map_err(|_| {
        CliError::usage(format!(
            "invalid {flag} `{v}`: expected a calendar date YYYY-MM-DD, like 2000-08-23"
        ))
    })
}

/// Routes `--conf key=value`: engine keys (and their Spark/Glue aliases) to
/// the [`EngineConfig`], shuffle and `s3.*` keys to the shuffle pairs.
pub fn apply_conf(
    config: &mut EngineConfig,
    pairs: &mut Vec<(String, String)>,
    kv: &str,
) -> Result<(), CliError> {
    let (k, v) = kv.split_once('=').ok_or_else(|| {
        CliError::usage(format!(
            "invalid --conf `{kv}`: expected KEY=VALUE, e.g. --conf shuffle.partitions=16"
        ))
    })?;
    let k = k.trim();
    let conf_err = |e: crate::error::EngineError| {
        CliError::usage(format!(
            "invalid --conf `{kv}`: {}",
            one_line(&e.to_string())
        ))
    };
    // Shuffle-level aliases that mean an engine setting.
    let engine_key = match shuffle_core::config::canonical_key(k) {
        Some("spill.to_s3") => Some("shuffle.spill_to_s3"),
        Some("memory.limit") => Some("memory.budget"),
        Some("shuffle.backend") => Some("shuffle.backend"),
        _ => None,
    };
    if let Some(ek) = engine_key {
        return config.set(ek, v).map_err(conf_err);
    }
    match config.set(k, v) {
        Ok(()) => {
            if k == "spark.shuffle.glue.s3ShuffleBucket" || k == "shuffle.s3.bucket" {
                if let Some(b) = &config.s3_bucket {
                    parse_bucket(k, b)?;
                }
            }
            Ok(())
        }
        Err(crate::error::EngineError::Config { reason, .. })
            if reason == "unknown configuration key" =>
        {
            let lower = k.to_ascii_lowercase();
            if lower.starts_with("s3.") {
                if shuffle_s3::config::canonical_key(&lower).is_none() {
                    return Err(CliError::usage(format!(
                        "unknown --conf key `{k}`: known s3 keys are {}",
                        shuffle_s3::config::known_keys()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                pairs.push((lower, v.trim().to_string()));
                Ok(())
            } else if shuffle_core::config::canonical_key(k).is_some() {
                pairs.push((k.to_string(), v.trim().to_string()));
                Ok(())
            } else {
                Err(CliError::usage(format!(
                    "unknown --conf key `{k}`; engine keys: shuffle.partitions, engine.parallelism, engine.executors, \
                     memory.budget, join.broadcast_threshold, ...; shuffle keys: local.dirs, \
                     shuffle.codec, fetch.*; and s3.* (see `shovel q80 --help`)"
                )))
            }
        }
        Err(e) => Err(conf_err(e)),
    }
}

/// Collapses a multi-line message into one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn q80(s: &str) -> Result<Q80Args, CliError> {
        match parse(&args(s))? {
            Command::Q80(a) => Ok(*a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn q80_flags() {
        let a = q80(
            "q80 --sf 0.1 --shuffle s3 --spill-to-s3 --memory 512MiB --parallelism 3 \
                     --partitions=4 --broadcast-threshold 0 --local-dir /a --local-dir /b \
                     --s3-bucket s3://bkt/p --keep-shuffle --date 2000-01-02",
        )
        .unwrap();
        let c = &a.job.config;
        assert_eq!(c.backend, ShuffleBackend::S3);
        assert!(c.spill_to_s3);
        assert_eq!(c.memory_budget, 512 << 20);
        assert_eq!(
            (c.parallelism, c.shuffle_partitions, c.broadcast_threshold),
            (3, 4, 0)
        );
        assert_eq!(a.job.local_dirs.len(), 2);
        assert!(a.job.keep_shuffle);
        assert_eq!(a.job.date.to_string(), "2000-01-02");
        assert!(matches!(a.data, DataSource::Generated { sf, .. } if sf == 0.1));
    }

    #[test]
    fn executor_loss_flags() {
        let a = q80("q80 --executors 3 --lose-executor 2@5").unwrap();
        assert_eq!(a.job.config.executors, 3);
        assert_eq!(
            a.job.lose_executor,
            Some(super::super::run::ExecutorLossPlan {
                executor: 2,
                after_stages: Some(5)
            })
        );
        let a = q80("q80 --executors 2 --lose-executor 0").unwrap();
        assert_eq!(a.job.lose_executor.map(|p| p.after_stages), Some(None));
        let a = q80("q80 --conf engine.executors=4").unwrap();
        assert_eq!(a.job.config.executors, 4);
    }

    #[test]
    fn glue_spellings() {
        let a = q80("q80 --write-shuffle-files-to-s3 --write-shuffle-spills-to-s3 true \
                     --conf spark.shuffle.glue.s3ShuffleBucket=s3://bkt/x --conf s3.region=eu-west-1 \
                     --conf spark.sql.shuffle.partitions=3")
        .unwrap();
        let c = &a.job.config;
        assert_eq!(c.backend, ShuffleBackend::S3);
        assert!(c.spill_to_s3);
        assert_eq!(c.s3_bucket.as_deref(), Some("s3://bkt/x"));
        assert_eq!(c.shuffle_partitions, 3);
        assert_eq!(
            a.job.shuffle_pairs,
            vec![("s3.region".to_string(), "eu-west-1".to_string())]
        );
    }

    #[test]
    fn errors_name_the_flag() {
        for (cmd, needle) in [
            ("q80 --frobnicate", "--frobnicate"),
            ("q80 --memory -1", "negative"),
            ("q80 --memory lots", "--memory `lots`"),
            ("q80 --parallelism -2", "--parallelism"),
            ("q80 --sf -1", "--sf"),
            ("q80 --s3-bucket http://x", "s3://bucket"),
            ("q80 --s3-endpoint ftp://x", "--s3-endpoint"),
            ("q80 --date 2001-02-29", "--date"),
            ("q80 --conf nope=1", "nope"),
            ("q80 --conf s3.nope=1", "s3.nope"),
            ("q80 --spill-to-s3", "--shuffle s3"),
            ("q80 --memory", "--memory needs a value"),
            ("q80 --lose-executor 1", "add --executors 2"),
            (
                "q80 --executors 2 --lose-executor one",
                "--lose-executor `one`",
            ),
            ("q80 --executors 2 --lose-executor 1@x", "EXECUTOR[@STAGES]"),
            ("q80 --executors 0", "--executors"),
            ("q80 --shuffle s3 --s3-fault-rate 1", "--s3-fault-rate `1`"),
            (
                "q80 --shuffle s3 --s3-fault-rate lots",
                "--s3-fault-rate `lots`",
            ),
            ("q80 --s3-fault-rate 0.1", "--shuffle s3"),
            ("frob", "frob"),
            ("gen --out x", "--sf"),
            ("q80 --shuffel s3", "similar argument exists: '--shuffle'"),
            ("q80 --shuffle hdfs", "--shuffle"),
            (
                "q80 --write-shuffle-files-to-s3 maybe",
                "--write-shuffle-files-to-s3 `maybe`",
            ),
            ("gc --older-than 90 /tmp", "90s"),
        ] {
            let e = parse(&args(cmd)).unwrap_err();
            assert!(e.message.contains(needle), "{cmd}: {}", e.message);
            assert!(!e.message.contains('\n'), "{cmd}: {}", e.message);
            assert_eq!(e.code, 2);
        }
    }

    /// `cmd` is refused with exit 2 and one line holding every `needles`.
    fn refused(cmd: &str, needles: &[&str]) {
        let e = parse(&args(cmd)).expect_err(cmd);
        for n in needles {
            assert!(e.message.contains(n), "{cmd}: `{n}` not in `{}`", e.message);
        }
        assert!(!e.message.contains('\n'), "{cmd}: {}", e.message);
        assert_eq!(e.code, 2, "{cmd}");
    }

    #[test]
    fn conflicting_flags_name_both() {
        for (cmd, needles) in [
            (
                "q80 --s3-bucket s3://bkt/p",
                &["--s3-bucket", "--shuffle local"][..],
            ),
            (
                "q80 --shuffle local --s3-bucket s3://bkt/p",
                &["--s3-bucket", "--shuffle local"],
            ),
            (
                "q80 --shuffle local --s3-endpoint http://127.0.0.1:9000",
                &["--s3-endpoint", "--shuffle local"],
            ),
            ("q80 --spill-to-s3", &["--spill-to-s3", "--shuffle local"]),
            (
                "q80 --write-shuffle-files-to-s3 false --write-shuffle-spills-to-s3",
                &[
                    "--write-shuffle-spills-to-s3",
                    "--write-shuffle-files-to-s3 false",
                ],
            ),
            (
                "q80 --s3-fault-rate 0.1",
                &["--s3-fault-rate", "--shuffle local"],
            ),
            (
                "q80 --conf s3.endpoint=http://127.0.0.1:9000",
                &["s3.endpoint", "--shuffle local"],
            ),
            (
                "q80 --shuffle s3 --s3-fault-rate 0.1 --s3-bucket s3://bkt/p",
                &["--s3-fault-rate", "--s3-bucket"],
            ),
            (
                "q80 --shuffle s3 --s3-fault-rate 0.1 --s3-endpoint http://127.0.0.1:9000",
                &["--s3-fault-rate", "--s3-endpoint"],
            ),
            ("q80 --data /x --sf 1", &["--data", "--sf"]),
            ("q80 --data /x --cache-dir /y", &["--data", "--cache-dir"]),
            (
                "q80 --memory 1GiB --conf memory.budget=2GiB",
                &["--memory 1GiB", "--conf memory.budget=2GiB"],
            ),
            (
                "q80 --memory 1GiB --conf memory=2GiB",
                &["--memory 1GiB", "memory=2GiB"],
            ),
            (
                "q80 --partitions 4 --conf spark.sql.shuffle.partitions=8",
                &["--partitions 4", "spark.sql.shuffle.partitions=8"],
            ),
            (
                "q80 --parallelism 4 --conf engine.parallelism=3",
                &["--parallelism 4", "engine.parallelism=3"],
            ),
            (
                "q80 --shuffle local --write-shuffle-files-to-s3",
                &["--shuffle local", "--write-shuffle-files-to-s3 true"],
            ),
            (
                "q80 --shuffle local --conf shuffle.backend=s3",
                &["--shuffle local", "shuffle.backend=s3"],
            ),
            (
                "q80 --shuffle s3 --s3-bucket s3://bka/p --conf s3.bucket=s3://bkb/q",
                &["--s3-bucket s3://bka/p", "s3.bucket=s3://bkb/q"],
            ),
        ] {
            refused(cmd, needles);
        }
        // Saying the same thing twice is not a contradiction.
        let a = q80("q80 --memory 1GiB --conf memory.budget=1GiB --shuffle s3 \
                     --write-shuffle-files-to-s3 --conf shuffle.backend=s3")
        .unwrap();
        assert_eq!(a.job.config.memory_budget, 1 << 30);
        // The conf alone chooses S3, so S3 flags are fine.
        let a = q80("q80 --conf shuffle.backend=s3 --s3-bucket s3://bkt/p").unwrap();
        assert_eq!(a.job.config.backend, ShuffleBackend::S3);
    }

    #[test]
    fn single_valued_flags_once() {
        refused("q80 --sf 1 --sf 2", &["--sf", "multiple times"]);
        refused(
            "q80 --memory 1GiB --memory=2GiB",
            &["--memory", "multiple times"],
        );
        refused("gc --older-than 1h --older-than 2h /tmp", &["--older-than"]);
        // Repeatable ones.
        let a = q80(
            "q80 --local-dir /a --local-dir /b --conf engine.batch_size=10 \
                     --conf scan.partitions=2",
        )
        .unwrap();
        assert_eq!(a.job.local_dirs.len(), 2);
        assert_eq!(a.job.config.batch_size, 10);
    }

    #[test]
    fn memory_floor() {
        refused("q80 --memory 1MiB", &["--memory 1MiB", "floor of 8MiB"]);
        refused("q80 --memory 0", &["--memory 0", "8MiB"]);
        // `--conf memory.budget` is the unchecked expert key.
        let a = q80("q80 --conf memory.budget=256KiB").unwrap();
        assert_eq!(a.job.config.memory_budget, 256 << 10);
        let a = q80("q80 --memory 8MiB").unwrap();
        assert_eq!(a.job.config.memory_budget, MEMORY_FLOOR);
        assert_eq!(MEMORY_FLOOR, 8 << 20);
        // The floor is the CLI's: the library takes any budget.
        let mut c = EngineConfig::default();
        c.set("memory.budget", "1MiB").unwrap();
        assert_eq!(c.memory_budget, 1 << 20);
        assert!(memory_warning(1 << 20).is_none());
        if physical_memory().is_some() {
            let w = memory_warning(usize::MAX / 2).expect("a warning");
            assert!(w.contains("--memory") && w.contains("machine"), "{w}");
        }
    }

    #[test]
    fn help_lists_every_command_and_defaults() {
        let Command::Help(top) = parse(&args("help")).unwrap() else {
            panic!("help")
        };
        for c in ["q80", "gen", "gc", "s3-server", "completions", "help"] {
            assert!(
                top.lines().any(|l| l.trim_start().starts_with(c)),
                "{c} missing in {top}"
            );
        }
        let Command::Help(q) = parse(&args("q80 --help")).unwrap() else {
            panic!("q80 --help")
        };
        for d in [
            "[default: 2GiB]",
            "[default: 1]",
            "[default: local]",
            "--write-shuffle-files-to-s3",
        ] {
            assert!(q.contains(d), "{d} missing in {q}");
        }
        let Command::Help(g) = parse(&args("help gc")).unwrap() else {
            panic!("help gc")
        };
        assert!(g.contains("--dry-run") && g.contains("--older-than"), "{g}");
        assert!(matches!(
            parse(&args("--version")).unwrap(),
            Command::Version
        ));
    }

    #[test]
    fn gc_and_completions() {
        let Command::Gc(g) = parse(&args(
            "gc --older-than 24h --dry-run --conf s3.region=x s3://bkt/p",
        ))
        .unwrap() else {
            panic!("gc")
        };
        assert_eq!(g.older_than, std::time::Duration::from_secs(86_400));
        assert!(g.dry_run);
        assert_eq!(g.target, "s3://bkt/p");
        assert_eq!(g.conf, vec![("s3.region".to_string(), "x".to_string())]);
        assert!(matches!(
            parse(&args("completions bash")).unwrap(),
            Command::Completions(clap_complete::Shell::Bash)
        ));
        let script = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        assert!(
            script.contains("shovel") && script.contains("--older-than"),
            "{script}"
        );
        refused("completions tcsh", &["tcsh"]);
    }

    #[test]
    fn s3_server_and_latency_flags() {
        let Command::S3Server(a) = parse(&args(
            "s3-server --dir /d --bind 127.0.0.1:9000 --latency 20ms --fault-rate 0.1",
        ))
        .unwrap() else {
            panic!("s3-server")
        };
        assert_eq!(a.bind.to_string(), "127.0.0.1:9000");
        assert_eq!(a.latency, std::time::Duration::from_millis(20));
        assert_eq!(a.fault_rate, Some(0.1));
        let Command::S3Server(a) = parse(&args("s3-server --dir /d")).unwrap() else {
            panic!("s3-server")
        };
        assert_eq!(a.bind.to_string(), "127.0.0.1:0");
        assert!(a.latency.is_zero());
        let Command::S3Server(a) = parse(&args(
            "s3-server --dir /d --bind 0.0.0.0:9000 --allow-remote",
        ))
        .unwrap() else {
            panic!("s3-server")
        };
        assert!(a.allow_remote);
        refused(
            "s3-server --dir /d --bind 0.0.0.0:9000",
            &["--bind 0.0.0.0:9000", "--allow-remote"],
        );
        refused(
            "s3-server --dir /d --latency 20",
            &["--latency `20`", "20s"],
        );
        refused("s3-server --dir /d --bind x", &["--bind `x`", "IP:PORT"]);
        refused("s3-server --latency 1s", &["--dir"]);

        let a = q80("q80 --shuffle s3 --s3-latency 5ms").unwrap();
        assert_eq!(a.job.s3_latency, Some(std::time::Duration::from_millis(5)));
        refused(
            "q80 --shuffle s3 --s3-latency 5ms --s3-bucket s3://bkt/p",
            &["--s3-latency 5ms", "--s3-bucket"],
        );
        refused(
            "q80 --shuffle s3 --s3-latency 5ms --s3-endpoint http://127.0.0.1:9000",
            &["--s3-latency 5ms", "--s3-endpoint"],
        );
        refused(
            "q80 --s3-latency 5ms",
            &["--s3-latency 5ms", "--shuffle local"],
        );
    }

    #[test]
    fn glue_flag_value_is_optional() {
        let a = q80("q80 --write-shuffle-files-to-s3 --memory 1GiB").unwrap();
        assert_eq!(a.job.config.backend, ShuffleBackend::S3);
        assert_eq!(a.job.config.memory_budget, 1 << 30);
        let a = q80("q80 --write-shuffle-files-to-s3=false -q -o out.csv").unwrap();
        assert_eq!(a.job.config.backend, ShuffleBackend::Local);
        assert!(a.quiet);
        assert_eq!(a.output.as_deref(), Some(std::path::Path::new("out.csv")));
        let a = q80("q80 --memory 1.5GiB").unwrap();
        assert_eq!(a.job.config.memory_budget, 3 << 29);
    }
}
