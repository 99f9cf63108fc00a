//! Typed configuration, parsed once from `key=value` pairs and the environment.
//!
//! Every key has one canonical name, optional aliases (Spark's spelling where
//! one exists) and a documented default; [`KEYS`] is the single table the
//! README reproduces (see [`markdown_table`]). Environment variables use the
//! canonical key upper-cased with `.` as `_` and a `SHOVEL_` prefix
//! (`SHOVEL_SHUFFLE_BACKEND=s3`); explicit pairs win over the environment.
//! Keys under `s3.` belong to the S3 backend and are passed through to it
//! untouched in [`ShuffleConfig::backend_options`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::format::Codec;
use crate::{Error, Result};

/// Which backend stores shuffle data: the one backend enum of every crate
/// (the engine's `ShuffleBackend` is this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum BackendKind {
    #[default]
    Local,
    S3,
}

impl BackendKind {
    /// Every backend, in the order help texts list them.
    pub const ALL: [BackendKind; 2] = [BackendKind::Local, BackendKind::S3];

    /// The canonical spelling (`local`, `s3`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::S3 => "s3",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    /// `local` (or `disk`) and `s3`, any case.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" | "disk" => Ok(BackendKind::Local),
            "s3" => Ok(BackendKind::S3),
            _ => Err(format!(
                "`{}` is not a backend; use `local` or `s3`",
                s.trim()
            )),
        }
    }
}

/// One documented key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub key: &'static str,
    pub aliases: &'static [&'static str],
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every core key, in the order the docs list them.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { key: "shuffle.backend", aliases: &["backend"], default: "local", doc: "`local` (local disk) or `s3` (Amazon S3 or an S3-compatible store)." },
    KeyDoc { key: "shuffle.app_id", aliases: &["app_id", "spark.app.id"], default: "generated `app-<unix secs>-<pid>`", doc: "Namespace of this job's objects; concurrent jobs never see each other's data." },
    KeyDoc { key: "shuffle.codec", aliases: &["spark.shuffle.compress"], default: "lz4", doc: "Frame codec: `lz4` or `none`." },
    KeyDoc { key: "local.dirs", aliases: &["spark.local.dir", "local_dirs"], default: "`<temp dir>/shovel`", doc: "Comma-separated root directories for local shuffle and spill files; map outputs are hashed across them." },
    KeyDoc { key: "local.max_bytes", aliases: &[], default: "unlimited", doc: "Optional quota per local directory; exceeding it is a storage-full error." },
    KeyDoc { key: "memory.limit", aliases: &["memory"], default: "1GiB", doc: "Memory pool shared by map-output buffers and operators; beyond it they spill." },
    KeyDoc { key: "spill.to_s3", aliases: &["write-shuffle-spills-to-s3", "spark.shuffle.glue.spillToS3"], default: "false", doc: "Spill to the S3 store's `spill/` prefix instead of local directories." },
    KeyDoc { key: "fetch.max_bytes_in_flight", aliases: &["spark.reducer.maxSizeInFlight"], default: "48MiB", doc: "Bytes a reader fetches ahead of its consumer." },
    KeyDoc { key: "fetch.max_requests_in_flight", aliases: &["spark.reducer.maxReqsInFlight"], default: "8", doc: "Concurrent read requests per reader." },
    KeyDoc { key: "fetch.chunk_bytes", aliases: &[], default: "8MiB", doc: "Largest single ranged read; larger map-output ranges are split." },
    KeyDoc { key: "cache.enabled", aliases: &[], default: "true", doc: "Keep a local copy of map outputs written to S3 so readers in the same process skip the GET (S3 backend only; the local backend ignores it)." },
    KeyDoc { key: "cache.memory", aliases: &[], default: "128MiB", doc: "Memory for local copies (a budget of its own, apart from `memory.limit`); beyond it the oldest copies move to `cache.dir`." },
    KeyDoc { key: "cache.disk", aliases: &[], default: "1GiB", doc: "Local disk for copies moved out of memory; the oldest go first, and what does not fit is read from S3. `0` keeps copies in memory only." },
    KeyDoc { key: "cache.dir", aliases: &[], default: "`<temp dir>`", doc: "Parent of the private directory (`shovel-cache-<pid>-<n>`) the cache creates and removes; if it is unusable or full, reads fall through to S3." },
    KeyDoc { key: "job.heartbeat", aliases: &[], default: "30s", doc: "How often a running job refreshes its marker `<app_id>/_shovel_job.json`; `gc --older-than` should be well above it." },
];

/// Shovel's shuffle configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ShuffleConfig {
    pub backend: BackendKind,
    pub app_id: String,
    pub codec: Codec,
    pub local_dirs: Vec<PathBuf>,
    pub local_max_bytes: Option<u64>,
    pub memory_limit: u64,
    pub spill_to_s3: bool,
    pub fetch_max_bytes_in_flight: u64,
    pub fetch_max_requests_in_flight: usize,
    pub fetch_chunk_bytes: u64,
    /// Local copies of map outputs in front of S3 (`cache.enabled`).
    pub cache_enabled: bool,
    /// Memory for local copies (`cache.memory`).
    pub cache_memory: u64,
    /// Local disk for local copies (`cache.disk`).
    pub cache_disk: u64,
    /// Parent of the cache's private directory (`cache.dir`).
    pub cache_dir: PathBuf,
    /// How often the job marker is refreshed (`job.heartbeat`).
    pub job_heartbeat: Duration,
    /// Keys for the backend (`s3.*`), unparsed.
    pub backend_options: BTreeMap<String, String>,
}

impl Default for ShuffleConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Local,
            app_id: default_app_id(),
            codec: Codec::Lz4,
            local_dirs: vec![std::env::temp_dir().join("shovel")],
            local_max_bytes: None,
            memory_limit: 1 << 30,
            spill_to_s3: false,
            fetch_max_bytes_in_flight: 48 << 20,
            fetch_max_requests_in_flight: 8,
            fetch_chunk_bytes: 8 << 20,
            cache_enabled: true,
            cache_memory: 128 << 20,
            cache_disk: 1 << 30,
            cache_dir: std::env::temp_dir(),
            job_heartbeat: Duration::from_secs(30),
            backend_options: BTreeMap::new(),
        }
    }
}

fn default_app_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("app-{secs}-{}", std::process::id())
}

/// The canonical name of `key`, resolving aliases; `None` if unknown.
pub fn canonical_key(key: &str) -> Option<&'static str> {
    let k = key.trim().trim_start_matches("--");
    KEYS.iter()
        .find(|d| {
            d.key.eq_ignore_ascii_case(k) || d.aliases.iter().any(|a| a.eq_ignore_ascii_case(k))
        })
        .map(|d| d.key)
}

impl ShuffleConfig {
    /// Parses `key=value` pairs over the `SHOVEL_*` environment and defaults.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut cfg = Self::default();
        for doc in KEYS {
            let env = format!("SHOVEL_{}", doc.key.to_ascii_uppercase().replace('.', "_"));
            if let Ok(v) = std::env::var(&env) {
                cfg.set(doc.key, &v)?;
            }
        }
        for (k, v) in pairs {
            cfg.set(k.as_ref(), v.as_ref())?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses `key=value` strings.
    pub fn from_args<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut pairs = Vec::new();
        for a in args {
            let a = a.as_ref();
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| Error::config(a, "expected `key=value`"))?;
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        Self::from_pairs(pairs)
    }

    /// Sets one key (canonical name or alias); `s3.*` keys are kept for the backend.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let raw = key.trim().trim_start_matches("--");
        if raw.to_ascii_lowercase().starts_with("s3.") {
            self.backend_options
                .insert(raw.to_ascii_lowercase(), value.trim().to_string());
            return Ok(());
        }
        let Some(key) = canonical_key(raw) else {
            return Err(Error::config(
                raw,
                format!(
                    "unknown key; known keys: {}, and `s3.*` for the S3 backend",
                    KEYS.iter().map(|d| d.key).collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        let v = value.trim();
        match key {
            "shuffle.backend" => {
                self.backend = v.parse().map_err(|e: String| Error::config(key, e))?
            }
            "shuffle.app_id" => {
                crate::Layout::validate_app_id(v)?;
                self.app_id = v.to_string();
            }
            "shuffle.codec" => {
                self.codec = match v.to_ascii_lowercase().as_str() {
                    "true" => Codec::Lz4,
                    other => other.parse().map_err(|e: String| Error::config(key, e))?,
                }
            }
            "local.dirs" => {
                let dirs: Vec<PathBuf> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect();
                if dirs.is_empty() {
                    return Err(Error::config(key, "needs at least one directory"));
                }
                self.local_dirs = dirs;
            }
            "local.max_bytes" => self.local_max_bytes = Some(parse_size(key, v)?),
            "memory.limit" => self.memory_limit = parse_size(key, v)?,
            "spill.to_s3" => self.spill_to_s3 = parse_bool(key, v)?,
            "fetch.max_bytes_in_flight" => self.fetch_max_bytes_in_flight = parse_size(key, v)?,
            "fetch.max_requests_in_flight" => {
                self.fetch_max_requests_in_flight = v
                    .parse()
                    .map_err(|_| Error::config(key, format!("`{v}` is not a positive integer")))?
            }
            "fetch.chunk_bytes" => self.fetch_chunk_bytes = parse_size(key, v)?,
            "cache.enabled" => self.cache_enabled = parse_bool(key, v)?,
            "cache.memory" => self.cache_memory = parse_size(key, v)?,
            "cache.disk" => self.cache_disk = parse_size(key, v)?,
            "cache.dir" => {
                if v.is_empty() {
                    return Err(Error::config(key, "needs a directory, like /mnt/nvme"));
                }
                self.cache_dir = PathBuf::from(v);
            }
            "job.heartbeat" => {
                self.job_heartbeat = parse_duration(key, v)?;
                if self.job_heartbeat.is_zero() {
                    return Err(Error::config(key, "must be at least 1s, like 30s"));
                }
            }
            _ => return Err(Error::config(key, "key is documented but not handled")),
        }
        Ok(())
    }

    /// Checks cross-key constraints.
    pub fn validate(&self) -> Result<()> {
        if self.fetch_max_requests_in_flight == 0 {
            return Err(Error::config(
                "fetch.max_requests_in_flight",
                "must be at least 1",
            ));
        }
        if self.fetch_chunk_bytes < 64 << 10 {
            return Err(Error::config("fetch.chunk_bytes", "must be at least 64KiB"));
        }
        if self.fetch_max_bytes_in_flight == 0 {
            return Err(Error::config(
                "fetch.max_bytes_in_flight",
                "must be more than 0",
            ));
        }
        Ok(())
    }
}

pub use crate::parse::{parse_bool, parse_duration, parse_size};

/// The key table as Markdown, for the README.
pub fn markdown_table() -> String {
    markdown_table_for(KEYS)
}

/// `keys` as a Markdown table (every crate's key list renders the same way).
pub fn markdown_table_for(keys: &[KeyDoc]) -> String {
    let mut s = String::from("| key | aliases | default | meaning |\n| --- | --- | --- | --- |\n");
    for d in keys {
        let aliases = d
            .aliases
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.key, aliases, d.default, d.doc
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_aliases_and_sizes() {
        let cfg = ShuffleConfig::from_args([
            "shuffle.backend=s3",
            "spark.reducer.maxSizeInFlight=16m",
            "memory=2GiB",
            "s3.bucket=s3://b/p",
            "--write-shuffle-spills-to-s3=true",
            "cache.memory=32MiB",
            "cache.disk=2g",
            "cache.dir=/var/cache/shovel",
        ])
        .expect("valid");
        assert_eq!(cfg.backend, BackendKind::S3);
        assert_eq!(cfg.fetch_max_bytes_in_flight, 16 << 20);
        assert_eq!(cfg.memory_limit, 2 << 30);
        assert_eq!(
            (cfg.cache_memory, cfg.cache_disk, cfg.cache_dir.clone()),
            (32 << 20, 2 << 30, PathBuf::from("/var/cache/shovel"))
        );
        assert!(cfg.spill_to_s3);
        assert!(cfg.cache_enabled);
        assert_eq!(
            cfg.backend_options.get("s3.bucket").map(String::as_str),
            Some("s3://b/p")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = ShuffleConfig::from_args(["memory.limit=-5"]).expect_err("negative");
        assert!(
            e.to_string().contains("memory.limit") && e.to_string().contains("negative"),
            "{e}"
        );
        let e = ShuffleConfig::from_args(["memory.limit=lots"]).expect_err("unparsable");
        assert!(e.to_string().contains("not a size"), "{e}");
        let e = ShuffleConfig::from_args(["shuffle.bakend=s3"]).expect_err("unknown");
        assert!(
            e.to_string().contains("shuffle.bakend") && e.to_string().contains("unknown key"),
            "{e}"
        );
        let e = ShuffleConfig::from_args(["shuffle.backend=hdfs"]).expect_err("bad backend");
        assert!(e.to_string().contains("use `local` or `s3`"), "{e}");
        let e = ShuffleConfig::from_args(["novalue"]).expect_err("no =");
        assert!(e.to_string().contains("key=value"), "{e}");
        for bad in ["a/b", "..", ".hidden", "spill", "x y", "", "é"] {
            let e = ShuffleConfig::from_args([format!("shuffle.app_id={bad}")]).expect_err(bad);
            assert!(e.to_string().contains("shuffle.app_id"), "{bad}: {e}");
        }
        let ok = ShuffleConfig::from_args(["shuffle.app_id=My_job-4.2"]).expect("valid id");
        assert_eq!(ok.app_id, "My_job-4.2");
        let e = ShuffleConfig::from_args(["job.heartbeat=0s"]).expect_err("zero heartbeat");
        assert!(e.to_string().contains("job.heartbeat"), "{e}");
    }

    #[test]
    fn every_documented_key_is_handled() {
        let samples = [
            ("shuffle.backend", "local"),
            ("shuffle.app_id", "x"),
            ("shuffle.codec", "none"),
            ("local.dirs", "/tmp/a"),
            ("local.max_bytes", "1g"),
            ("memory.limit", "1g"),
            ("spill.to_s3", "false"),
            ("fetch.max_bytes_in_flight", "1m"),
            ("fetch.max_requests_in_flight", "2"),
            ("fetch.chunk_bytes", "1m"),
            ("cache.enabled", "false"),
            ("cache.memory", "64m"),
            ("cache.disk", "0"),
            ("cache.dir", "/tmp/c"),
            ("job.heartbeat", "10s"),
        ];
        assert_eq!(samples.len(), KEYS.len());
        let mut cfg = ShuffleConfig::default();
        for (k, v) in samples {
            cfg.set(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        assert!(markdown_table().lines().count() == KEYS.len() + 2);
    }
}
