//! A small hand-written argument parser for `shovel`.
//!
//! Accepts `--flag value` and `--flag=value`. Every error is one line naming
//! the offending flag or value and the fix; usage errors exit with code 2.

use std::path::PathBuf;

use crate::config::{EngineConfig, ShuffleBackend};
use crate::tpcds::{SqlDate, Q80_DEFAULT_DATE};

use super::CliError;

/// Top-level usage text (`shovel --help`).
pub const USAGE: &str = "\
shovel: TPC-DS q80 on Shovel's Arrow engine, shuffling through local disk or S3

USAGE:
    shovel q80  [OPTIONS]                 run TPC-DS query 80, CSV on stdout, summary on stderr
    shovel gen  --sf N --out DIR          write the 12 q80 tables as Parquet
    shovel gc   --older-than 24h TARGET   delete objects killed jobs left (TARGET: s3://bucket/prefix or a dir)
    shovel help [q80|gen]                 this text, or a command's options
    shovel --version

EXAMPLES:
    cargo run --release --bin shovel -- q80 --sf 1
    shovel q80 --sf 1 --shuffle s3 --output q80.csv --report run.json
    shovel q80 --data ./tpcds-sf1 --shuffle s3 --s3-bucket s3://my-bucket/shovel
";

/// `shovel q80 --help`.
pub const Q80_USAGE: &str = "\
shovel q80: run TPC-DS query 80 (full answer, no LIMIT)

USAGE:
    shovel q80 [OPTIONS]

DATA:
    --sf N                    scale factor, generated once and cached [default: 1]
    --cache-dir DIR           cache of generated data
                              [default: $XDG_CACHE_HOME/shovel/tpcds or ~/.cache/shovel/tpcds]
    --data DIR                read existing Parquet instead (<table>.parquet or <table>/*.parquet)
    --date YYYY-MM-DD         start of the 30-day window [default: 2000-08-23]

SHUFFLE AND SPILL:
    --shuffle local|s3        where shuffle files go [default: local]
    --spill-to-s3             spill to the S3 bucket too (needs --shuffle s3)
    --local-dir DIR           local shuffle/spill directory, repeatable [default: a temp dir]
    --s3-bucket s3://B/P      bucket and prefix for shuffle objects
    --s3-endpoint URL         S3-compatible endpoint (MinIO, ...); with neither bucket nor
                              endpoint, --shuffle s3 starts an embedded S3 server on 127.0.0.1
    --keep-shuffle            do not delete this run's shuffle and spill objects at the end

ENGINE:
    --memory SIZE             memory budget, e.g. 512MiB, 2GiB [default: 2GiB]
    --parallelism N           concurrent tasks [default: 2]
    --partitions N            partitions of every hash shuffle [default: 8]
    --broadcast-threshold SIZE  broadcast join sides under SIZE; 0 shuffles every join [default: 10MiB]
    --conf KEY=VALUE          any engine, shuffle or s3.* key, e.g. --conf s3.region=eu-west-1

FAULT INJECTION:
    --executors N             executors tasks are placed on (partition % N) [default: 1]
    --s3-fault-rate R         with the embedded S3 server: fail a fraction R (0..1) of its requests
                              (503 SlowDown, 500, connection resets, slow answers) to see retries
    --lose-executor E[@S]     lose executor E (from 0) when it starts a task after committing
                              map outputs in S stages [default S: 2]: its running tasks are
                              killed and, with local shuffle, the outputs on its disk deleted

GLUE SPELLINGS:
    --write-shuffle-files-to-s3 [true|false]     same as --shuffle s3
    --write-shuffle-spills-to-s3 [true|false]    same as --spill-to-s3
    --conf spark.shuffle.glue.s3ShuffleBucket=s3://B/P

OUTPUT:
    --output FILE.csv         write the CSV here [default: stdout]
    --report FILE.json        write the run summary as JSON
    --quiet, -q               no progress bars and no summary on stderr
";

/// `shovel gen --help`.
pub const GEN_USAGE: &str = "\
shovel gen: write the 12 tables TPC-DS q80 reads as Parquet (<DIR>/<table>.parquet)

USAGE:
    shovel gen --sf N --out DIR [--threads N] [--quiet]
";

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    /// Print this text and exit 0.
    Help(&'static str),
    Version,
    Gen(GenArgs),
    Q80(Box<Q80Args>),
    /// `shovel gc` (parsed by `cli::gc`).
    Gc(Vec<String>),
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
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let Some(first) = args.first() else {
        return Err(CliError::usage(
            "missing command; run `shovel q80 --sf 1`, or `shovel --help` for all commands",
        ));
    };
    let rest = &args[1..];
    match first.as_str() {
        "-h" | "--help" => Ok(Command::Help(USAGE)),
        "help" => Ok(Command::Help(match rest.first().map(String::as_str) {
            Some("q80") => Q80_USAGE,
            Some("gen") => GEN_USAGE,
            Some("gc") => super::gc::GC_USAGE,
            _ => USAGE,
        })),
        "-V" | "--version" | "version" => Ok(Command::Version),
        "gen" => parse_gen(rest),
        "gc" => Ok(Command::Gc(rest.to_vec())),
        "q80" => parse_q80(rest),
        other if other.starts_with('-') => Err(CliError::usage(format!(
            "`{other}` before a command; put options after the command, e.g. `shovel q80 {other} ...`"
        ))),
        other => Err(CliError::usage(format!(
            "unknown command `{other}`; commands are `q80` and `gen` (see `shovel --help`)"
        ))),
    }
}

/// Splits `--flag=value` and fetches the value of `--flag value`.
struct Cursor<'a> {
    args: &'a [String],
    i: usize,
    cmd: &'static str,
}

impl<'a> Cursor<'a> {
    /// The next flag and its inline `=value`, if any.
    fn next_flag(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let a = self.args.get(self.i)?;
        self.i += 1;
        if a.starts_with("--") {
            if let Some((f, v)) = a.split_once('=') {
                return Some((f, Some(v)));
            }
        }
        Some((a.as_str(), None))
    }

    fn value(&mut self, flag: &str, inline: Option<&'a str>) -> Result<&'a str, CliError> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.args.get(self.i) {
            // A value may start with `-` only if it is not a flag (`--memory -1`
            // must reach the size check, which explains the problem better).
            Some(v) if !v.starts_with("--") => {
                self.i += 1;
                Ok(v)
            }
            _ => Err(CliError::usage(format!(
                "{flag} needs a value; see `shovel {} --help`",
                self.cmd
            ))),
        }
    }

    /// `true`/`false` following a Glue flag, or `true` when absent.
    fn optional_bool(&mut self, flag: &str, inline: Option<&'a str>) -> Result<bool, CliError> {
        let v = match inline {
            Some(v) => v,
            None => match self.args.get(self.i).map(String::as_str) {
                Some(v @ ("true" | "false")) => {
                    self.i += 1;
                    v
                }
                _ => return Ok(true),
            },
        };
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(CliError::usage(format!(
                "invalid {flag} `{v}`: expected true or false"
            ))),
        }
    }

    fn no_value(&self, flag: &str, inline: Option<&str>) -> Result<(), CliError> {
        match inline {
            Some(v) => Err(CliError::usage(format!(
                "{flag} takes no value (got `{v}`); write just {flag}"
            ))),
            None => Ok(()),
        }
    }

    fn unknown(&self, flag: &str) -> CliError {
        if flag.starts_with('-') {
            CliError::usage(format!(
                "unknown option `{flag}` for `shovel {}`; run `shovel {} --help` for the list",
                self.cmd, self.cmd
            ))
        } else {
            CliError::usage(format!(
                "unexpected argument `{flag}`: `shovel {}` takes only options (run `shovel {} --help`)",
                self.cmd, self.cmd
            ))
        }
    }
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

/// A size (`512MiB`, `2GiB`, `64k`, `1048576`).
pub fn parse_size_arg(flag: &str, v: &str) -> Result<usize, CliError> {
    let t = v.trim();
    if t.starts_with('-') {
        return Err(CliError::usage(format!(
            "invalid {flag} `{v}`: a size cannot be negative; use e.g. 512MiB or 2GiB"
        )));
    }
    crate::config::parse_size(flag, t).map_err(|_| {
        CliError::usage(format!(
            "invalid {flag} `{v}`: expected a size like 512MiB, 2GiB, 64k or a byte count"
        ))
    })
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

fn parse_date(flag: &str, v: &str) -> Result<SqlDate, CliError> {
    v.parse::<SqlDate>().map_err(|_| {
        CliError::usage(format!(
            "invalid {flag} `{v}`: expected a calendar date YYYY-MM-DD, like 2000-08-23"
        ))
    })
}

fn parse_gen(args: &[String]) -> Result<Command, CliError> {
    let mut c = Cursor {
        args,
        i: 0,
        cmd: "gen",
    };
    let (mut sf, mut out, mut threads, mut quiet) = (None, None, None, false);
    while let Some((flag, inline)) = c.next_flag() {
        match flag {
            "-h" | "--help" => return Ok(Command::Help(GEN_USAGE)),
            "--sf" => sf = Some(parse_sf(flag, c.value(flag, inline)?)?),
            "--out" => out = Some(PathBuf::from(c.value(flag, inline)?)),
            "--threads" => threads = Some(parse_count(flag, c.value(flag, inline)?)?),
            "-q" | "--quiet" => {
                c.no_value(flag, inline)?;
                quiet = true
            }
            _ => return Err(c.unknown(flag)),
        }
    }
    let sf = sf.ok_or_else(|| CliError::usage("shovel gen needs --sf N (e.g. --sf 1)"))?;
    let out = out.ok_or_else(|| CliError::usage("shovel gen needs --out DIR"))?;
    Ok(Command::Gen(GenArgs {
        sf,
        out,
        threads,
        quiet,
    }))
}

fn parse_q80(args: &[String]) -> Result<Command, CliError> {
    let mut c = Cursor {
        args,
        i: 0,
        cmd: "q80",
    };
    let mut config = EngineConfig::default();
    let mut job = super::run::Q80Job::default();
    let mut sf: Option<f64> = None;
    let mut data: Option<PathBuf> = None;
    let mut cache_dir: Option<PathBuf> = None;
    let (mut output, mut report, mut quiet) = (None, None, false);
    let mut date = Q80_DEFAULT_DATE;
    while let Some((flag, inline)) = c.next_flag() {
        match flag {
            "-h" | "--help" => return Ok(Command::Help(Q80_USAGE)),
            "--sf" => sf = Some(parse_sf(flag, c.value(flag, inline)?)?),
            "--data" => data = Some(PathBuf::from(c.value(flag, inline)?)),
            "--cache-dir" => cache_dir = Some(PathBuf::from(c.value(flag, inline)?)),
            "--date" => date = parse_date(flag, c.value(flag, inline)?)?,
            "--shuffle" => {
                let v = c.value(flag, inline)?;
                config.backend = match v.trim().to_ascii_lowercase().as_str() {
                    "local" => ShuffleBackend::Local,
                    "s3" => ShuffleBackend::S3,
                    _ => {
                        return Err(CliError::usage(format!(
                            "invalid --shuffle `{v}`: expected `local` or `s3`"
                        )))
                    }
                }
            }
            "--write-shuffle-files-to-s3" => {
                config.backend = if c.optional_bool(flag, inline)? {
                    ShuffleBackend::S3
                } else {
                    ShuffleBackend::Local
                }
            }
            "--spill-to-s3" => {
                c.no_value(flag, inline)?;
                config.spill_to_s3 = true
            }
            "--write-shuffle-spills-to-s3" => config.spill_to_s3 = c.optional_bool(flag, inline)?,
            "--local-dir" => job.local_dirs.push(PathBuf::from(c.value(flag, inline)?)),
            "--s3-bucket" => config.s3_bucket = Some(parse_bucket(flag, c.value(flag, inline)?)?),
            "--s3-endpoint" => {
                job.s3_endpoint = Some(parse_endpoint(flag, c.value(flag, inline)?)?)
            }
            "--memory" => {
                let n = parse_size_arg(flag, c.value(flag, inline)?)?;
                if n == 0 {
                    return Err(CliError::usage(
                        "invalid --memory `0`: the memory budget must be more than 0, e.g. 512MiB",
                    ));
                }
                config.memory_budget = n
            }
            "--parallelism" => config.parallelism = parse_count(flag, c.value(flag, inline)?)?,
            "--executors" => config.executors = parse_count(flag, c.value(flag, inline)?)?,
            "--s3-fault-rate" => {
                job.s3_fault_rate = Some(parse_fault_rate(flag, c.value(flag, inline)?)?)
            }
            "--lose-executor" => {
                job.lose_executor = Some(parse_executor_loss(flag, c.value(flag, inline)?)?)
            }
            "--partitions" => {
                config.shuffle_partitions = parse_count(flag, c.value(flag, inline)?)?
            }
            "--broadcast-threshold" => {
                config.broadcast_threshold = parse_size_arg(flag, c.value(flag, inline)?)?
            }
            "--conf" => {
                let kv = c.value(flag, inline)?;
                apply_conf(&mut config, &mut job.shuffle_pairs, kv)?;
            }
            "--output" | "-o" => output = Some(PathBuf::from(c.value(flag, inline)?)),
            "--report" => report = Some(PathBuf::from(c.value(flag, inline)?)),
            "--keep-shuffle" => {
                c.no_value(flag, inline)?;
                job.keep_shuffle = true
            }
            "-q" | "--quiet" => {
                c.no_value(flag, inline)?;
                quiet = true
            }
            _ => return Err(c.unknown(flag)),
        }
    }
    let data =
        match (data, sf) {
            (Some(_), Some(_)) => return Err(CliError::usage(
                "--data and --sf are exclusive: --data reads existing tables, --sf generates them",
            )),
            (Some(dir), None) => DataSource::Dir(dir),
            (None, sf) => DataSource::Generated {
                sf: sf.unwrap_or(1.0),
                cache_dir: cache_dir.unwrap_or_else(super::data::default_cache_dir),
            },
        };
    if config.spill_to_s3 && config.backend != ShuffleBackend::S3 {
        return Err(CliError::usage(
            "--spill-to-s3 needs --shuffle s3 (spills go to the shuffle bucket); add --shuffle s3",
        ));
    }
    if job.s3_fault_rate.is_some() && config.backend != ShuffleBackend::S3 {
        return Err(CliError::usage(
            "--s3-fault-rate injects faults into the embedded S3 server; add --shuffle s3",
        ));
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
    if let Some(b) = &config.s3_bucket {
        // `--conf spark.shuffle.glue.s3ShuffleBucket=...` is only prefix-checked by the engine.
        parse_bucket("s3 bucket", b)?;
    }
    job.config = config;
    job.date = date;
    job.progress = !quiet;
    Ok(Command::Q80(Box::new(Q80Args {
        data,
        job,
        output,
        report,
        quiet,
    })))
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
        ] {
            let e = parse(&args(cmd)).unwrap_err();
            assert!(e.message.contains(needle), "{cmd}: {}", e.message);
            assert!(!e.message.contains('\n'), "{cmd}: {}", e.message);
            assert_eq!(e.code, 2);
        }
    }
}
