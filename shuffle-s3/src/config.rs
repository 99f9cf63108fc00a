//! [`S3Config`]: where and how the S3 backend stores objects.
//!
//! Build one with the typed [`S3ConfigBuilder`], or parse it from `key=value`
//! pairs (`--conf s3.bucket=s3://shuffle/prod`, as collected by core's
//! `ShuffleConfig::backend_options`) over `SHOVEL_S3_*` environment
//! variables. Every key starts with `s3.`; [`KEYS`] documents them all (with
//! defaults and aliases; [`markdown_table`] renders it). `-` and `_` are
//! interchangeable in key names, and Spark/Hadoop-style aliases work
//! (`s3.endpoint_url`, `s3.path.style.access`, `s3.access.key`, ...).
//!
//! - Buckets: `s3.bucket=s3://b1/prefix,s3://b2` spreads map outputs over
//!   several buckets by shard; `s3a://` is accepted.
//! - Credentials: `s3.access_key_id` + `s3.secret_access_key` (+
//!   `s3.session_token`) for static keys, else the standard AWS chain,
//!   resolved once when the store is built, within `s3.credentials_timeout`.
//! - Values are read by [`shuffle_core::parse`], like every other key's:
//!   booleans are `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` (an empty
//!   value, `--conf s3.path_style=`, is an error naming the key); sizes take
//!   a binary unit (`8m`, `16MiB`, `1.5g`: powers of 1024 as in Spark);
//!   durations need a unit (`250ms`, `5s`, `2m`, `1h`; `0` alone is allowed).
//! - The environment variable of a key is `SHOVEL_` + the canonical key
//!   upper-cased with `.`/`-` as `_`: `s3.retry.max_attempts` is
//!   `SHOVEL_S3_RETRY_MAX_ATTEMPTS`. Explicit pairs win over the environment.
//!
//! Malformed values are [`Error::Config`] naming the key and the fix.
//! Secrets never reach logs: `Debug` of [`S3Config`], [`S3ConfigBuilder`]
//! and [`Credentials`] redacts the secret key and the session token.

use std::fmt;
use std::time::Duration;

use shuffle_core::{Error, Result};

use shuffle_core::config::KeyDoc;

use crate::retry::RetryConfig;

/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest number of parts per upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest number of hash prefixes (four hex digits).
pub const MAX_HASH_PREFIXES: u32 = 1 << 16;

const MIB: u64 = 1024 * 1024;

/// One bucket and the key prefix under it (`s3://bucket/prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUri {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
}

impl BucketUri {
    /// Parses `s3://bucket[/prefix]` (`s3a://` is accepted too).
    pub fn parse(uri: &str) -> Result<Self> {
        Self::parse_for("s3.bucket", uri)
    }

    fn parse_for(key: &str, uri: &str) -> Result<Self> {
        let uri = uri.trim();
        let rest = uri
            .strip_prefix("s3://")
            .or_else(|| uri.strip_prefix("s3a://"))
            .ok_or_else(|| {
                Error::config(
                    key,
                    format!("`{uri}` is not an S3 URI; write it as s3://bucket[/prefix]"),
                )
            })?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        validate_bucket_name(key, bucket)?;
        if prefix
            .split('/')
            .any(|seg| seg.is_empty() && !prefix.is_empty())
        {
            return Err(Error::config(
                key,
                format!("prefix `{prefix}` in `{uri}` has an empty path segment (`//`); remove it"),
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl fmt::Display for BucketUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

fn validate_bucket_name(key: &str, bucket: &str) -> Result<()> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = bucket
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && bucket
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!(
                "`{bucket}` is not a valid bucket name: use 3-63 lowercase letters, digits, \
                 `-` or `.`, starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Server-side encryption applied to every PutObject and CreateMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// `x-amz-server-side-encryption: AES256` (SSE-S3).
    Aes256,
    /// `x-amz-server-side-encryption: aws:kms`, with an optional key id (else the bucket default).
    Kms { key_id: Option<String> },
}

/// A string that never shows up in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; only for handing to the SDK.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where credentials come from.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// The standard AWS chain: environment, profile, SSO, web identity, ECS, IMDS.
    #[default]
    Chain,
    /// Fixed keys.
    Static {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Chain => f.write_str("Chain"),
            Credentials::Static {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}

/// Validated configuration of the S3 backend. Build with [`S3Config::builder`].
#[derive(Clone)]
pub struct S3Config {
    /// Buckets (with prefixes) map outputs are spread across by shard.
    pub buckets: Vec<BucketUri>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub credentials: Credentials,
    /// `P`: objects go under `hash(shard) % P`, written as 4 hex digits.
    pub hash_prefixes: u32,
    pub sse: Option<Sse>,
    pub expected_bucket_owner: Option<String>,
    /// Objects up to this size are one PutObject; larger ones use multipart upload.
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub max_parts_in_flight: usize,
    /// Threads of the store's own I/O runtime, on which every request runs
    /// (`s3.io_threads`); 0 runs requests on the caller's runtime.
    pub io_threads: usize,
    pub connect_timeout: Duration,
    /// Limit of one attempt of one request (also capped by the retry deadline).
    pub request_timeout: Duration,
    /// Limit of resolving the AWS chain (credentials, and the region when
    /// none is set) when the store is built; unused with static keys.
    pub credentials_timeout: Duration,
    pub retry: RetryConfig,
    /// Check the store answers like S3 and the buckets can be written
    /// before any work (see [`S3Store::probe`](crate::S3Store::probe)).
    pub probe: bool,
    /// Commit map outputs with conditional writes (`If-None-Match: *`), so
    /// S3 decides which attempt wins (`s3.conditional_writes`); `false` for
    /// stores that ignore the header (then attempt ids go into keys).
    pub conditional_writes: bool,
    /// Sign each PutObject/UploadPart body with SigV4's SHA-256
    /// (`s3.sign_payload`); `false` sends `UNSIGNED-PAYLOAD`. Defaults to
    /// `false` over HTTPS (TLS protects the body in transit, and Shovel
    /// checks a crc32 of every frame it reads back) and to a loopback
    /// endpoint (the bytes never leave the machine), `true` over plain HTTP
    /// to another host, where the signature is the only protection in
    /// transit.
    pub sign_payload: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field(
                "buckets",
                &self
                    .buckets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("credentials", &self.credentials)
            .field("hash_prefixes", &self.hash_prefixes)
            .field("sse", &self.sse)
            .field("expected_bucket_owner", &self.expected_bucket_owner)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("max_parts_in_flight", &self.max_parts_in_flight)
            .field("io_threads", &self.io_threads)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("credentials_timeout", &self.credentials_timeout)
            .field("retry", &self.retry)
            .field("probe", &self.probe)
            .field("conditional_writes", &self.conditional_writes)
            .field("sign_payload", &self.sign_payload)
            .finish()
    }
}

impl S3Config {
    pub fn builder() -> S3ConfigBuilder {
        S3ConfigBuilder::default()
    }

    /// Parses `s3.*` pairs; keys without the `s3.` prefix are ignored (they
    /// belong to other components).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut b = S3ConfigBuilder::default();
        b.apply_pairs(pairs)?;
        b.build()
    }

    /// `SHOVEL_S3_*` environment variables, overridden by `pairs`.
    pub fn from_env_and_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut b = S3ConfigBuilder::default();
        b.apply_env(env_vars())?;
        b.apply_pairs(pairs)?;
        b.build()
    }

    /// Largest object this config can upload (`part_size * 10,000`).
    pub fn max_object_size(&self) -> u64 {
        self.part_size.saturating_mul(MAX_PARTS)
    }

    /// Where requests go, for error messages.
    pub fn endpoint_description(&self) -> String {
        match (&self.endpoint, &self.region) {
            (Some(e), _) => e.clone(),
            (None, Some(r)) => format!("AWS S3 ({r})"),
            (None, None) => "AWS S3 (region from the AWS config chain)".to_string(),
        }
    }
}

/// Every S3 key, with aliases, default and meaning.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { key: "s3.bucket", aliases: &["s3.uri", "s3.buckets", "s3.path"], default: "required", doc: "`s3://bucket[/prefix]`; a comma-separated list spreads map outputs across buckets by shard." },
    KeyDoc { key: "s3.region", aliases: &["s3.aws_region"], default: "AWS chain, else `us-east-1`", doc: "AWS region of the bucket(s)." },
    KeyDoc { key: "s3.endpoint", aliases: &["s3.endpoint_url"], default: "AWS", doc: "`http(s)://host[:port]` of an S3-compatible store (MinIO, Garage, Ceph, R2)." },
    KeyDoc { key: "s3.path_style", aliases: &["s3.force_path_style", "s3.path.style.access"], default: "`true` with an endpoint, else `false`", doc: "Path-style addressing (`endpoint/bucket/key`)." },
    KeyDoc { key: "s3.access_key_id", aliases: &["s3.access_key", "s3.access.key"], default: "AWS credential chain", doc: "Static access key id (needs the secret)." },
    KeyDoc { key: "s3.secret_access_key", aliases: &["s3.secret_key", "s3.secret.key"], default: "", doc: "Static secret access key; never logged." },
    KeyDoc { key: "s3.session_token", aliases: &["s3.session.token"], default: "", doc: "Static session token; never logged." },
    KeyDoc { key: "s3.credentials_timeout", aliases: &["s3.credentials.timeout"], default: "5s", doc: "Without static keys, the AWS credential chain (and the region, if `s3.region` is unset) is resolved once when the store is built, within this limit; finding no credentials fails then, naming the fixes." },
    KeyDoc { key: "s3.hash_prefixes", aliases: &["s3.prefixes"], default: "16", doc: "`P`: objects go under `<prefix>/<hash(shard) % P as 4 hex digits>/`, 1..=65536. More prefixes raise S3's request-rate ceiling; `list`/`delete_prefix` cost one request per bucket x prefix." },
    KeyDoc { key: "s3.sse", aliases: &["s3.server_side_encryption"], default: "none", doc: "Server-side encryption on every PutObject/CreateMultipartUpload: `AES256`, `aws:kms` or `none`." },
    KeyDoc { key: "s3.sse_kms_key_id", aliases: &["s3.kms_key_id", "s3.sse.kms_key_id"], default: "bucket default", doc: "KMS key id or ARN (implies `aws:kms`)." },
    KeyDoc { key: "s3.expected_bucket_owner", aliases: &["s3.bucket_owner"], default: "", doc: "12-digit account id the bucket must belong to (sent on every request)." },
    KeyDoc { key: "s3.multipart_threshold", aliases: &["s3.multipart.threshold"], default: "`s3.part_size`", doc: "Objects up to this size are one PutObject; larger ones use multipart upload (at most 5GiB)." },
    KeyDoc { key: "s3.part_size", aliases: &["s3.multipart.part_size", "s3.multipart_part_size"], default: "16MiB", doc: "Multipart part size, 5MiB..=5GiB; objects hold at most 10,000 parts." },
    KeyDoc { key: "s3.max_parts_in_flight", aliases: &["s3.upload_concurrency", "s3.multipart.max_in_flight"], default: "4", doc: "Parts of one object uploading at once, 1..=1000." },
    KeyDoc { key: "s3.io_threads", aliases: &["s3.io.threads"], default: "2", doc: "Threads of the store's own runtime, on which every request runs, so a request never waits for a worker busy with the engine's CPU work; 0 runs requests on the caller's runtime. 0..=64." },
    KeyDoc { key: "s3.connect_timeout", aliases: &[], default: "5s", doc: "TCP/TLS connect timeout." },
    KeyDoc { key: "s3.request_timeout", aliases: &["s3.attempt_timeout"], default: "60s", doc: "Limit of one attempt of one request." },
    KeyDoc { key: "s3.retry.max_attempts", aliases: &[], default: "10", doc: "Attempts per request including the first (1 = no retries)." },
    KeyDoc { key: "s3.retry.initial_backoff", aliases: &[], default: "100ms", doc: "Backoff cap of the first retry (doubles per retry, full jitter)." },
    KeyDoc { key: "s3.retry.max_backoff", aliases: &[], default: "10s", doc: "Largest backoff cap." },
    KeyDoc { key: "s3.retry.total_deadline", aliases: &["s3.retry.deadline"], default: "120s", doc: "Time budget of one request across attempts and backoffs." },
    KeyDoc { key: "s3.probe", aliases: &["s3.check"], default: "true", doc: "Before any work, check every bucket exists and answers like S3, and that a small object can be written, read and deleted under the job's prefix; fails within 15s with one line naming the endpoint or bucket and the fix." },
    KeyDoc { key: "s3.sign_payload", aliases: &["s3.payload_signing"], default: "`false` over HTTPS and to loopback, `true` over HTTP to another host", doc: "Hash every uploaded body into its SigV4 signature (SHA-256, a few % of CPU when uploads are large); without it the body goes as `UNSIGNED-PAYLOAD`, protected by TLS (or by never leaving the machine) in transit and by Shovel's crc32 per frame on read." },
    KeyDoc { key: "s3.conditional_writes", aliases: &[], default: "true", doc: "Commit each map output with one conditional PUT (If-None-Match: *) under a key without attempt, so S3 picks the winning attempt; set false for stores that ignore If-None-Match (attempt ids then go into keys). The start-up check detects such a store and switches this off with a warning." },
];

/// The canonical name of `key` (itself or an alias; `-` and `_` alike), if known.
pub fn canonical_key(key: &str) -> Option<&'static str> {
    let key = key
        .trim()
        .trim_start_matches("--")
        .to_ascii_lowercase()
        .replace('-', "_");
    KEYS.iter()
        .find(|d| d.key == key || d.aliases.contains(&key.as_str()))
        .map(|d| d.key)
}

/// Every canonical key.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|d| d.key)
}

/// The environment variable of a canonical key.
pub fn env_var_for(key: &str) -> String {
    format!(
        "SHOVEL_{}",
        key.replace(['.', '-'], "_").to_ascii_uppercase()
    )
}

/// The key table as Markdown, for the README.
pub fn markdown_table() -> String {
    shuffle_core::config::markdown_table_for(KEYS)
}

/// Builder of [`S3Config`]; [`S3ConfigBuilder::build`] validates.
#[derive(Clone, Default)]
pub struct S3ConfigBuilder {
    buckets: Vec<BucketUri>,
    region: Option<String>,
    endpoint: Option<String>,
    force_path_style: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<Secret>,
    session_token: Option<Secret>,
    hash_prefixes: Option<u32>,
    sse: Option<Option<SseKind>>,
    sse_kms_key_id: Option<String>,
    expected_bucket_owner: Option<String>,
    multipart_threshold: Option<u64>,
    part_size: Option<u64>,
    max_parts_in_flight: Option<usize>,
    io_threads: Option<usize>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    credentials_timeout: Option<Duration>,
    retry: RetryConfig,
    probe: Option<bool>,
    conditional_writes: Option<bool>,
    sign_payload: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SseKind {
    Aes256,
    Kms,
}

impl fmt::Debug for S3ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ConfigBuilder")
            .field("buckets", &self.buckets)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .finish_non_exhaustive()
    }
}

impl S3ConfigBuilder {
    /// Adds a bucket (`s3://bucket[/prefix]`).
    pub fn bucket(mut self, uri: &str) -> Result<Self> {
        self.buckets.push(BucketUri::parse(uri)?);
        Ok(self)
    }
    /// Replaces the bucket list.
    pub fn buckets(mut self, buckets: Vec<BucketUri>) -> Self {
        self.buckets = buckets;
        self
    }
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
    pub fn force_path_style(mut self, on: bool) -> Self {
        self.force_path_style = Some(on);
        self
    }
    /// Static credentials instead of the AWS chain.
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(Secret::new(secret_access_key));
        self.session_token = session_token.map(Secret::new);
        self
    }
    pub fn hash_prefixes(mut self, p: u32) -> Self {
        self.hash_prefixes = Some(p);
        self
    }
    pub fn sse(mut self, sse: Option<Sse>) -> Self {
        match sse {
            None => {
                self.sse = Some(None);
                self.sse_kms_key_id = None;
            }
            Some(Sse::Aes256) => self.sse = Some(Some(SseKind::Aes256)),
            Some(Sse::Kms { key_id }) => {
                self.sse = Some(Some(SseKind::Kms));
                self.sse_kms_key_id = key_id;
            }
        }
        self
    }
    pub fn expected_bucket_owner(mut self, account_id: impl Into<String>) -> Self {
        self.expected_bucket_owner = Some(account_id.into());
        self
    }
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = Some(bytes);
        self
    }
    pub fn part_size(mut self, bytes: u64) -> Self {
        self.part_size = Some(bytes);
        self
    }
    pub fn max_parts_in_flight(mut self, n: usize) -> Self {
        self.max_parts_in_flight = Some(n);
        self
    }
    /// Threads of the store's I/O runtime (`s3.io_threads`; 0: none).
    pub fn io_threads(mut self, n: usize) -> Self {
        self.io_threads = Some(n);
        self
    }
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = Some(d);
        self
    }
    /// Limit of resolving the AWS credential chain when the store is built.
    /// Turns the start-up check (`s3.probe`) on or off.
    pub fn probe(mut self, on: bool) -> Self {
        self.probe = Some(on);
        self
    }

    /// Signs upload bodies (`s3.sign_payload`) or sends them as
    /// `UNSIGNED-PAYLOAD`.
    pub fn sign_payload(mut self, on: bool) -> Self {
        self.sign_payload = Some(on);
        self
    }

    /// Turns conditional commits (`s3.conditional_writes`) on or off.
    pub fn conditional_writes(mut self, on: bool) -> Self {
        self.conditional_writes = Some(on);
        self
    }

    pub fn credentials_timeout(mut self, d: Duration) -> Self {
        self.credentials_timeout = Some(d);
        self
    }
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Applies `s3.*` pairs (others are ignored). Unknown `s3.*` keys are errors.
    pub fn apply_pairs<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        for (k, v) in pairs {
            let k = k.as_ref().trim();
            if k.to_ascii_lowercase().starts_with("s3.") {
                self.set(k, v.as_ref())?;
            }
        }
        Ok(())
    }

    /// Applies `SHOVEL_S3_*` variables from `vars` (pass [`env_vars()`]).
    /// Unknown `SHOVEL_S3_*` names are ignored.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        for key in known_keys() {
            let var = env_var_for(key);
            if let Some((_, v)) = vars.iter().find(|(k, _)| *k == var) {
                self.set(key, v).map_err(|e| match e {
                    Error::Config { reason, .. } => {
                        Error::config(format!("{key} (from ${var})"), reason)
                    }
                    other => other,
                })?;
            }
        }
        Ok(())
    }

    /// Sets one key (canonical or alias) from its string value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let Some(canon) = canonical_key(key) else {
            return Err(Error::config(
                key,
                format!(
                    "unknown S3 setting; known keys: {}",
                    known_keys().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        let v = value.trim();
        match canon {
            "s3.bucket" => {
                let mut out = Vec::new();
                for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    out.push(BucketUri::parse_for(key, part)?);
                }
                if out.is_empty() {
                    return Err(Error::config(
                        key,
                        "empty; set it to s3://bucket[/prefix] (comma-separate several buckets)",
                    ));
                }
                self.buckets = out;
            }
            "s3.region" => {
                self.region = Some(non_empty(key, v, "an AWS region such as us-east-1")?)
            }
            "s3.endpoint" => self.endpoint = Some(non_empty(key, v, "http(s)://host[:port]")?),
            "s3.path_style" => self.force_path_style = Some(parse_bool(key, v)?),
            "s3.probe" => self.probe = Some(parse_bool(key, v)?),
            "s3.conditional_writes" => self.conditional_writes = Some(parse_bool(key, v)?),
            "s3.sign_payload" => self.sign_payload = Some(parse_bool(key, v)?),
            "s3.access_key_id" => self.access_key_id = Some(non_empty(key, v, "an access key id")?),
            "s3.secret_access_key" => {
                self.secret_access_key = Some(Secret::new(non_empty(key, v, "a secret key")?))
            }
            "s3.session_token" => {
                self.session_token = Some(Secret::new(non_empty(key, v, "a session token")?))
            }
            "s3.hash_prefixes" => {
                self.hash_prefixes = Some(v.parse::<u32>().map_err(|_| {
                    Error::config(
                        key,
                        format!("`{v}` is not a whole number; use 1..={MAX_HASH_PREFIXES}"),
                    )
                })?)
            }
            "s3.sse" => {
                self.sse = Some(match v.to_ascii_lowercase().as_str() {
                    "aes256" | "sse-s3" => Some(SseKind::Aes256),
                    "aws:kms" | "kms" | "sse-kms" => Some(SseKind::Kms),
                    "none" | "" | "off" | "false" => None,
                    _ => {
                        return Err(Error::config(
                            key,
                            format!(
                                "`{v}` is not a supported encryption; use AES256, aws:kms or none"
                            ),
                        ))
                    }
                })
            }
            "s3.sse_kms_key_id" => {
                self.sse_kms_key_id = Some(non_empty(key, v, "a KMS key id or ARN")?)
            }
            "s3.expected_bucket_owner" => self.expected_bucket_owner = Some(v.to_string()),
            "s3.multipart_threshold" => self.multipart_threshold = Some(parse_size(key, v)?),
            "s3.part_size" => self.part_size = Some(parse_size(key, v)?),
            "s3.max_parts_in_flight" => {
                self.max_parts_in_flight = Some(v.parse::<usize>().map_err(|_| {
                    Error::config(key, format!("`{v}` is not a whole number; use 1..=1000"))
                })?)
            }
            "s3.io_threads" => {
                self.io_threads = Some(v.parse::<usize>().map_err(|_| {
                    Error::config(key, format!("`{v}` is not a whole number; use 0..=64"))
                })?)
            }
            "s3.connect_timeout" => self.connect_timeout = Some(parse_duration(key, v)?),
            "s3.request_timeout" => self.request_timeout = Some(parse_duration(key, v)?),
            "s3.credentials_timeout" => self.credentials_timeout = Some(parse_duration(key, v)?),
            "s3.retry.max_attempts" => {
                self.retry.max_attempts = v.parse::<u32>().map_err(|_| {
                    Error::config(
                        key,
                        format!("`{v}` is not a whole number; use 1 (no retries) or more"),
                    )
                })?
            }
            "s3.retry.initial_backoff" => self.retry.initial_backoff = parse_duration(key, v)?,
            "s3.retry.max_backoff" => self.retry.max_backoff = parse_duration(key, v)?,
            "s3.retry.total_deadline" => self.retry.total_deadline = parse_duration(key, v)?,
            other => {
                return Err(Error::config(
                    other,
                    "documented but not handled (a bug in shuffle-s3)",
                ))
            }
        }
        Ok(())
    }

    /// Validates and builds.
    pub fn build(self) -> Result<S3Config> {
        if self.buckets.is_empty() {
            return Err(Error::config(
                "s3.bucket",
                format!(
                    "no bucket configured; set s3.bucket=s3://bucket[/prefix] (or ${})",
                    env_var_for("s3.bucket")
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for b in &self.buckets {
            if !seen.insert((b.bucket.as_str(), b.prefix.as_str())) {
                return Err(Error::config(
                    "s3.bucket",
                    format!("{b} is listed twice; list each bucket once"),
                ));
            }
        }
        if let Some(e) = &self.endpoint {
            validate_endpoint(e)?;
        }
        let credentials = match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Credentials::Static {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: self.session_token.clone(),
            },
            (None, None) if self.session_token.is_none() => Credentials::Chain,
            (Some(_), None) => {
                return Err(Error::config(
                    "s3.secret_access_key",
                    "missing: s3.access_key_id is set, so set the secret too (or unset both to use the AWS credential chain)",
                ))
            }
            _ => {
                return Err(Error::config(
                    "s3.access_key_id",
                    "missing: a secret key or session token is set without an access key id; set s3.access_key_id",
                ))
            }
        };
        let hash_prefixes = self.hash_prefixes.unwrap_or(16);
        if !(1..=MAX_HASH_PREFIXES).contains(&hash_prefixes) {
            return Err(Error::config(
                "s3.hash_prefixes",
                format!("{hash_prefixes} is out of range; use 1..={MAX_HASH_PREFIXES}"),
            ));
        }
        let sse = match (self.sse, self.sse_kms_key_id) {
            (None, None) | (Some(None), None) => None,
            (Some(Some(SseKind::Aes256)), None) => Some(Sse::Aes256),
            (Some(Some(SseKind::Kms)), key_id) | (None, key_id @ Some(_)) => {
                Some(Sse::Kms { key_id })
            }
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "s3.sse_kms_key_id",
                    "a KMS key id needs s3.sse=aws:kms; change s3.sse or remove the key id",
                ))
            }
        };
        if let Some(owner) = &self.expected_bucket_owner {
            if owner.len() != 12 || !owner.chars().all(|c| c.is_ascii_digit()) {
                return Err(Error::config(
                    "s3.expected_bucket_owner",
                    format!("`{owner}` is not an AWS account id; use the 12-digit account id of the bucket owner"),
                ));
            }
        }
        let part_size = self.part_size.unwrap_or(16 * MIB);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(Error::config(
                "s3.part_size",
                format!("{part_size} bytes is out of S3's range; use 5MiB..=5GiB"),
            ));
        }
        let multipart_threshold = self.multipart_threshold.unwrap_or(part_size);
        if multipart_threshold > MAX_PART_SIZE {
            return Err(Error::config(
                "s3.multipart_threshold",
                format!("{multipart_threshold} bytes exceeds the 5GiB single-PUT limit; use at most 5GiB"),
            ));
        }
        let max_parts_in_flight = self.max_parts_in_flight.unwrap_or(4);
        if !(1..=1000).contains(&max_parts_in_flight) {
            return Err(Error::config(
                "s3.max_parts_in_flight",
                format!("{max_parts_in_flight} is out of range; use 1..=1000"),
            ));
        }
        let io_threads = self.io_threads.unwrap_or(2);
        if io_threads > 64 {
            return Err(Error::config(
                "s3.io_threads",
                format!("{io_threads} is out of range; use 0..=64 (0: the caller's runtime)"),
            ));
        }
        let connect_timeout = self.connect_timeout.unwrap_or(Duration::from_secs(5));
        let request_timeout = self.request_timeout.unwrap_or(Duration::from_secs(60));
        if connect_timeout.is_zero() {
            return Err(Error::config(
                "s3.connect_timeout",
                "must be positive, e.g. 5s",
            ));
        }
        if request_timeout.is_zero() {
            return Err(Error::config(
                "s3.request_timeout",
                "must be positive, e.g. 60s",
            ));
        }
        let credentials_timeout = self.credentials_timeout.unwrap_or(Duration::from_secs(5));
        if credentials_timeout.is_zero() {
            return Err(Error::config(
                "s3.credentials_timeout",
                "must be positive, e.g. 5s",
            ));
        }
        self.retry.validate()?;
        let force_path_style = self.force_path_style.unwrap_or(self.endpoint.is_some());
        // AWS's own endpoints are HTTPS; a given one may be plain HTTP, and
        // only plain HTTP to another host leaves the body unprotected.
        let protected = self.endpoint.as_deref().is_none_or(|e| {
            e.trim().to_ascii_lowercase().starts_with("https://") || is_loopback(e)
        });
        let sign_payload = self.sign_payload.unwrap_or(!protected);
        Ok(S3Config {
            buckets: self.buckets,
            region: self.region,
            endpoint: self.endpoint.map(|e| e.trim_end_matches('/').to_string()),
            force_path_style,
            credentials,
            hash_prefixes,
            sse,
            expected_bucket_owner: self.expected_bucket_owner,
            multipart_threshold,
            part_size,
            max_parts_in_flight,
            io_threads,
            connect_timeout,
            request_timeout,
            credentials_timeout,
            retry: self.retry,
            probe: self.probe.unwrap_or(true),
            conditional_writes: self.conditional_writes.unwrap_or(true),
            sign_payload,
        })
    }
}

/// Whether `endpoint` (`scheme://host[:port][/path]`) names this machine
/// over loopback (`localhost`, `127.0.0.0/8`, `::1`): bytes sent there never
/// cross a network.
fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.trim();
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        // [v6]:port
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The process environment, skipping variables that are not UTF-8
/// (`std::env::vars` would panic on them).
pub fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

fn non_empty(key: &str, v: &str, what: &str) -> Result<String> {
    if v.is_empty() {
        Err(Error::config(key, format!("empty; set it to {what}")))
    } else {
        Ok(v.to_string())
    }
}

fn validate_endpoint(e: &str) -> Result<()> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(|| {
            Error::config(
                "s3.endpoint",
                format!("`{e}` needs a scheme; write it as http://host:port or https://host"),
            )
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(Error::config(
            "s3.endpoint",
            format!("`{e}` has no host; write it as http://host:port or https://host"),
        ));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if !host.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(Error::config(
                "s3.endpoint",
                format!("`{e}` has an invalid port `{port}`; use 1-65535"),
            ));
        }
    }
    Ok(())
}

/// Sizes, durations and booleans are read by shuffle-core's one parser
/// module, so `s3.*` keys accept exactly what every other key accepts.
pub use shuffle_core::parse::{parse_bool, parse_duration, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    fn err_key(r: Result<S3Config>) -> String {
        match r {
            Err(Error::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn payloads_are_signed_over_plain_http_to_another_host_only_unless_told() {
        let sign = |pairs: &[(&str, &str)]| {
            let mut all = vec![("s3.bucket", "s3://bkt1")];
            all.extend_from_slice(pairs);
            S3Config::from_pairs(all).unwrap().sign_payload
        };
        assert!(!sign(&[]), "AWS's endpoints are HTTPS");
        assert!(!sign(&[("s3.endpoint", "https://minio.example:9000")]));
        assert!(sign(&[("s3.endpoint", "http://minio.internal:9000")]));
        assert!(sign(&[("s3.endpoint", "http://10.0.0.7:9000/")]));
        // A host that merely starts like a loopback address is another host.
        assert!(sign(&[(
            "s3.endpoint",
            "http://127.0.0.1.example.com:9000"
        )]));
        assert!(sign(&[("s3.endpoint", "http://localhost.example.com")]));
        // Loopback: the bytes never cross a network.
        for e in [
            "http://127.0.0.1:9000",
            "http://127.0.0.2",
            "http://LOCALHOST:9000/prefix",
            "http://[::1]:9000",
            "http://user@127.0.0.1:9000",
        ] {
            assert!(!sign(&[("s3.endpoint", e)]), "{e}");
        }
        assert!(sign(&[
            ("s3.endpoint", "http://127.0.0.1:9000"),
            ("s3.sign_payload", "true")
        ]));
        assert!(!sign(&[
            ("s3.endpoint", "http://minio.internal:9000"),
            ("s3.sign_payload", "false")
        ]));
        assert!(sign(&[("s3.payload_signing", "true")]), "the alias");
        assert_eq!(
            err_key(S3Config::from_pairs([
                ("s3.bucket", "s3://bkt1"),
                ("s3.sign_payload", "sometimes"),
            ])),
            "s3.sign_payload"
        );
    }

    #[test]
    fn parses_pairs_with_aliases() {
        let c = S3Config::from_pairs([
            ("s3.buckets", "s3://a-bucket/some/prefix/, s3a://b-bucket"),
            ("s3.endpoint_url", "http://127.0.0.1:9000/"),
            ("s3.force-path-style", "yes"),
            ("s3.access-key", "AK"),
            ("s3.secret-key", "SK"),
            ("s3.prefixes", "64"),
            ("s3.sse", "aws:kms"),
            ("s3.kms-key-id", "alias/x"),
            ("s3.multipart.part-size", "8MiB"),
            ("s3.retry.deadline", "30s"),
            ("spark.other", "ignored"),
        ])
        .unwrap();
        assert_eq!(c.buckets[0].bucket, "a-bucket");
        assert_eq!(c.buckets[0].prefix, "some/prefix");
        assert_eq!(c.buckets[1].prefix, "");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.force_path_style);
        assert_eq!(c.hash_prefixes, 64);
        assert_eq!(
            c.sse,
            Some(Sse::Kms {
                key_id: Some("alias/x".into())
            })
        );
        assert_eq!(c.part_size, 8 * MIB);
        assert_eq!(c.multipart_threshold, 8 * MIB);
        assert_eq!(c.retry.total_deadline, Duration::from_secs(30));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SK"), "secret leaked: {dbg}");
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err_key(S3Config::from_pairs([("s3.bucket", "bucket")])),
            "s3.bucket"
        );
        assert_eq!(
            err_key(S3Config::from_pairs([
                ("s3.bucket", "s3://bkt1"),
                ("s3.part_size", "1MiB")
            ])),
            "s3.part_size"
        );
        assert_eq!(
            err_key(S3Config::from_pairs([
                ("s3.bucket", "s3://bkt1"),
                ("s3.retry.max_backoff", "5")
            ])),
            "s3.retry.max_backoff"
        );
        assert_eq!(
            err_key(S3Config::from_pairs([
                ("s3.bucket", "s3://bkt1"),
                ("s3.nope", "5")
            ])),
            "s3.nope"
        );
        assert_eq!(err_key(S3Config::from_pairs::<&str, &str>([])), "s3.bucket");
    }

    #[test]
    fn empty_boolean_is_an_error_and_credentials_timeout_parses() {
        assert_eq!(
            err_key(S3Config::from_pairs([
                ("s3.bucket", "s3://bkt1"),
                ("s3.path_style", ""),
            ])),
            "s3.path_style",
            "an empty boolean is an error naming the key, as in every crate"
        );
        let c = S3Config::from_pairs([
            ("s3.bucket", "s3://bkt1"),
            ("s3.path_style", "on"),
            ("s3.credentials.timeout", "2s"),
        ])
        .unwrap();
        assert!(c.force_path_style);
        assert_eq!(c.credentials_timeout, Duration::from_secs(2));
        let c = S3Config::from_pairs([("s3.bucket", "s3://bkt1")]).unwrap();
        assert!(!c.force_path_style);
        assert_eq!(c.credentials_timeout, Duration::from_secs(5));
        assert_eq!(
            err_key(S3Config::from_pairs([
                ("s3.bucket", "s3://bkt1"),
                ("s3.credentials_timeout", "0")
            ])),
            "s3.credentials_timeout"
        );
    }

    #[test]
    fn env_is_overridden_by_pairs() {
        let mut b = S3ConfigBuilder::default();
        b.apply_env([
            (
                "SHOVEL_S3_BUCKET".to_string(),
                "s3://env-bucket".to_string(),
            ),
            ("SHOVEL_S3_HASH_PREFIXES".to_string(), "4".to_string()),
        ])
        .unwrap();
        b.apply_pairs([("s3.hash_prefixes", "8")]).unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.buckets[0].bucket, "env-bucket");
        assert_eq!(c.hash_prefixes, 8);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("k", "5m").unwrap(), 5 * MIB);
        assert_eq!(parse_size("k", "1GiB").unwrap(), 1 << 30);
        assert!(parse_size("k", "5 parsecs").is_err());
        assert_eq!(parse_size("k", "1.5m").unwrap(), 3 * MIB / 2);
        assert_eq!(
            parse_duration("k", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("k", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("k", "12").is_err());
    }
}
