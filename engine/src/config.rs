//! Engine configuration.
//!
//! Keys are dotted (`shuffle.backend=s3`); Glue-compatible spellings are
//! accepted too (`--write-shuffle-files-to-s3`, `--write-shuffle-spills-to-s3`,
//! `--conf spark.shuffle.glue.s3ShuffleBucket=s3://bucket/prefix`).
//! Sizes (`512MiB`, `2GiB`, `1.5g`, `64k`, `0`) and booleans are read by
//! [`shuffle_core::parse`], like every other crate's. Every error names the key.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `shuffle.backend` | `local` | `local` or `s3` |
//! | `shuffle.spill_to_s3` | `false` | spill files go to the S3 store |
//! | `shuffle.s3.bucket` | none | `s3://bucket[/prefix]` for shuffle and spill objects |
//! | `shuffle.partitions` | 8 | partitions of every hash exchange |
//! | `engine.parallelism` | 2 | concurrent task slots |
//! | `engine.executors` | 1 | executors tasks are placed on (`partition % executors`); losing one kills its running tasks |
//! | `memory.budget` | `2GiB` | memory pool limit shared by operators and shuffle buffers |
//! | `join.broadcast_threshold` | `10MiB` | broadcast the smaller join side under this estimated size; 0 disables |
//! | `engine.batch_size` | 8192 | target rows per batch |
//! | `task.max_attempts` | 4 | attempts per task before the job fails |
//! | `scan.partitions` | cores | partitions of in-memory and Parquet scans; defaults to the machine's cores (one split per core keeps every core busy), not to `engine.parallelism`, so raising the slots never multiplies scan tasks |
//! | `io.requests_in_flight` | 64 | shuffle uploads in flight at once; a map task gives its CPU slot back when its output is handed to the upload |
//! | `shuffle.coalesce_target` | `32MiB` | reduce tasks read about this many committed bytes: neighbouring small partitions are coalesced (adaptive execution), never into fewer tasks than `engine.parallelism` slots; 0 disables |
//! | `cost.put_per_1000` | `0.005` | US dollars per 1,000 PUT-class S3 requests (PUT, COPY, POST, LIST, multipart create/part/complete), for the run summary's request-cost line; S3 Standard list price |
//! | `cost.get_per_1000` | `0.0004` | US dollars per 1,000 GET-class S3 requests (GET, HEAD and all others except DELETE and multipart abort, which are free) |
//! | `shuffle.keep` | `false` | leave every job's committed map outputs (data and index objects) in the store instead of removing them when the job ends; `shovel gc` removes them later (`--keep-shuffle`) |

use crate::error::{EngineError, Result};

/// Which shuffle backend to use: shuffle-core's [`BackendKind`], under the
/// engine's historical name (one enum for every crate).
pub use shuffle_core::config::BackendKind as ShuffleBackend;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub backend: ShuffleBackend,
    pub spill_to_s3: bool,
    /// `s3://bucket[/prefix]`.
    pub s3_bucket: Option<String>,
    pub shuffle_partitions: usize,
    pub parallelism: usize,
    /// Executors tasks are placed on; see [`crate::scheduler::executors`].
    pub executors: usize,
    pub scan_partitions: Option<usize>,
    /// Shuffle uploads in flight at once (`io.requests_in_flight`).
    pub io_requests_in_flight: usize,
    /// Bytes a coalesced reduce task aims to read; 0 disables coalescing
    /// (`shuffle.coalesce_target`).
    pub coalesce_target: usize,
    pub memory_budget: usize,
    pub broadcast_threshold: usize,
    pub batch_size: usize,
    pub max_task_attempts: u32,
    /// Keep committed map outputs when a job ends (`shuffle.keep`).
    pub keep_shuffle: bool,
    /// Prices of S3 requests for the run summary (`cost.*`).
    pub request_prices: RequestPrices,
}

/// US dollars per 1,000 S3 requests of each price class, for the request
/// cost a run summary shows. Defaults: S3 Standard list prices
/// (us-east-1): PUT, COPY, POST and LIST $0.005; GET and all others
/// $0.0004; DELETE (and multipart abort) free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestPrices {
    /// PUT-class: PUT, COPY, POST, LIST, multipart create, part and complete.
    pub put_per_1000: f64,
    /// GET-class: GET, HEAD and every other request that is not free.
    pub get_per_1000: f64,
}

impl Default for RequestPrices {
    fn default() -> Self {
        Self {
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            backend: ShuffleBackend::Local,
            spill_to_s3: false,
            s3_bucket: None,
            shuffle_partitions: 8,
            parallelism: 2,
            executors: 1,
            scan_partitions: None,
            io_requests_in_flight: 64,
            coalesce_target: 32 << 20,
            memory_budget: 2 << 30,
            broadcast_threshold: 10 << 20,
            batch_size: 8192,
            max_task_attempts: 4,
            keep_shuffle: false,
            request_prices: RequestPrices::default(),
        }
    }
}

impl EngineConfig {
    /// Partitions used by scans: `scan.partitions`, else the machine's
    /// cores. Deliberately not `engine.parallelism`: slots are a concurrency
    /// knob, and tying the split count to them made every extra slot an
    /// extra scan task (and an extra broadcast build).
    pub fn scan_partitions(&self) -> usize {
        self.scan_partitions
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }

    /// Sets one key. Unknown keys are an error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let value = value.trim();
        match key {
            "shuffle.backend" => {
                self.backend = value
                    .parse()
                    .map_err(|e: String| EngineError::config(key, e))?
            }
            "shuffle.spill_to_s3" | "write-shuffle-spills-to-s3" => {
                self.spill_to_s3 = parse_bool(key, value)?
            }
            "write-shuffle-files-to-s3" => {
                self.backend = if parse_bool(key, value)? {
                    ShuffleBackend::S3
                } else {
                    ShuffleBackend::Local
                }
            }
            "shuffle.s3.bucket" | "spark.shuffle.glue.s3ShuffleBucket" => {
                if !value.starts_with("s3://") || value.len() <= 5 {
                    return Err(EngineError::config(
                        key,
                        format!("expected `s3://bucket[/prefix]`, got `{value}`"),
                    ));
                }
                self.s3_bucket = Some(value.to_string());
            }
            "shuffle.keep" => self.keep_shuffle = parse_bool(key, value)?,
            "shuffle.partitions" | "spark.sql.shuffle.partitions" => {
                self.shuffle_partitions = parse_positive(key, value)?
            }
            "engine.parallelism" => self.parallelism = parse_positive(key, value)?,
            "engine.executors" => self.executors = parse_positive(key, value)?,
            "scan.partitions" => self.scan_partitions = Some(parse_positive(key, value)?),
            "io.requests_in_flight" => self.io_requests_in_flight = parse_positive(key, value)?,
            "shuffle.coalesce_target" => self.coalesce_target = parse_size(key, value)?,
            "memory.budget" => self.memory_budget = parse_size(key, value)?,
            "join.broadcast_threshold" | "spark.sql.autoBroadcastJoinThreshold" => {
                // Spark uses -1 to disable.
                self.broadcast_threshold = if value == "-1" {
                    0
                } else {
                    parse_size(key, value)?
                }
            }
            "engine.batch_size" => self.batch_size = parse_positive(key, value)?,
            "cost.put_per_1000" => self.request_prices.put_per_1000 = parse_price(key, value)?,
            "cost.get_per_1000" => self.request_prices.get_per_1000 = parse_price(key, value)?,
            "task.max_attempts" => {
                self.max_task_attempts = parse_positive(key, value)?.min(u32::MAX as usize) as u32
            }
            _ => return Err(EngineError::config(key, "unknown configuration key")),
        }
        Ok(())
    }

    /// Parses command-line style arguments: `--conf k=v`, `--k v`, `--k=v`,
    /// and the Glue flags (a flag without a value means `true`).
    /// Returns the arguments that were not configuration.
    pub fn apply_args<I, S>(&mut self, args: I) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let mut rest = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if arg == "--conf" {
                let kv = args
                    .get(i + 1)
                    .ok_or_else(|| EngineError::config("--conf", "expected `key=value`"))?;
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    EngineError::config(kv.clone(), "expected `key=value` after --conf")
                })?;
                self.set(k.trim(), v)?;
                i += 2;
                continue;
            }
            if let Some(flag) = arg.strip_prefix("--") {
                if let Some((k, v)) = flag.split_once('=') {
                    if is_key(k) {
                        self.set(k, v)?;
                        i += 1;
                        continue;
                    }
                } else if matches!(
                    flag,
                    "write-shuffle-files-to-s3" | "write-shuffle-spills-to-s3"
                ) {
                    match args.get(i + 1).map(|s| s.as_str()) {
                        Some(v @ ("true" | "false")) => {
                            self.set(flag, v)?;
                            i += 2;
                        }
                        _ => {
                            self.set(flag, "true")?;
                            i += 1;
                        }
                    }
                    continue;
                } else if is_key(flag) {
                    let v = args
                        .get(i + 1)
                        .ok_or_else(|| EngineError::config(flag, "missing value"))?;
                    self.set(flag, v)?;
                    i += 2;
                    continue;
                }
            }
            rest.push(arg.clone());
            i += 1;
        }
        Ok(rest)
    }

    /// Builds a config from `key=value` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut c = Self::default();
        for (k, v) in pairs {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// `(bucket, prefix)` of the S3 location, if configured.
    pub fn s3_location(&self) -> Option<(String, String)> {
        let rest = self.s3_bucket.as_deref()?.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

fn is_key(k: &str) -> bool {
    const KEYS: &[&str] = &[
        "shuffle.backend",
        "shuffle.spill_to_s3",
        "shuffle.s3.bucket",
        "shuffle.partitions",
        "shuffle.keep",
        "engine.parallelism",
        "scan.partitions",
        "io.requests_in_flight",
        "shuffle.coalesce_target",
        "memory.budget",
        "join.broadcast_threshold",
        "engine.batch_size",
        "task.max_attempts",
        "cost.put_per_1000",
        "cost.get_per_1000",
        "write-shuffle-files-to-s3",
        "write-shuffle-spills-to-s3",
        "spark.shuffle.glue.s3ShuffleBucket",
        "spark.sql.shuffle.partitions",
        "spark.sql.autoBroadcastJoinThreshold",
    ];
    KEYS.contains(&k)
}

/// A price in dollars: a finite number >= 0 (a leading `$` is allowed).
fn parse_price(key: &str, v: &str) -> Result<f64> {
    match v.trim().trim_start_matches('$').parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(EngineError::config(
            key,
            format!("`{v}` is not a price; give US dollars per 1,000 requests, like 0.005"),
        )),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    shuffle_core::parse::parse_bool(key, v).map_err(core_config_error)
}

/// A core config error as the engine's, keeping the key and reason.
fn core_config_error(e: shuffle_core::Error) -> EngineError {
    match e {
        shuffle_core::Error::Config { key, reason } => EngineError::Config { key, reason },
        other => EngineError::config("config", other.to_string()),
    }
}

fn parse_positive(key: &str, v: &str) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(EngineError::config(
            key,
            format!("expected a positive integer, got `{v}`"),
        )),
    }
}

/// A size in bytes (`512MiB`, `2GiB`, `1.5g`, `64k`, `0`, `1024`), read by
/// [`shuffle_core::parse::parse_size`].
pub fn parse_size(key: &str, v: &str) -> Result<usize> {
    let n = shuffle_core::parse::parse_size(key, v).map_err(core_config_error)?;
    usize::try_from(n)
        .map_err(|_| EngineError::config(key, format!("`{v}` is too large for this machine")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("k", "512MiB").ok(), Some(512 << 20));
        assert_eq!(parse_size("k", "2GiB").ok(), Some(2 << 30));
        assert_eq!(parse_size("k", "0").ok(), Some(0));
        assert_eq!(parse_size("k", "64k").ok(), Some(64 << 10));
        assert_eq!(parse_size("k", "1.5k").ok(), Some(1536));
        assert!(parse_size("k", "-1").is_err());
        let e = parse_size("memory.budget", "lots").unwrap_err().to_string();
        assert!(e.contains("memory.budget"), "{e}");
    }

    #[test]
    fn glue_spellings() {
        let mut c = EngineConfig::default();
        let rest = c
            .apply_args([
                "--write-shuffle-files-to-s3",
                "--write-shuffle-spills-to-s3",
                "true",
                "--conf",
                "spark.shuffle.glue.s3ShuffleBucket=s3://b/p",
                "--memory.budget",
                "512MiB",
                "query.sql",
            ])
            .unwrap();
        assert_eq!(rest, vec!["query.sql".to_string()]);
        assert_eq!(c.backend, ShuffleBackend::S3);
        assert!(c.spill_to_s3);
        assert_eq!(c.s3_location(), Some(("b".into(), "p".into())));
        assert_eq!(c.memory_budget, 512 << 20);
        let e = c.set("shuffle.partitions", "zero").unwrap_err().to_string();
        assert!(e.contains("shuffle.partitions"));
        assert!(c.set("nope", "1").unwrap_err().to_string().contains("nope"));
        assert!(!c.keep_shuffle);
        c.set("shuffle.keep", "true").unwrap();
        assert!(c.keep_shuffle);
        let e = c.set("shuffle.keep", "maybe").unwrap_err().to_string();
        assert!(e.contains("shuffle.keep"), "{e}");
    }
}
