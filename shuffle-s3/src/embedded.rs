//! An S3-protocol server in the process, on loopback (feature `embedded`).
//!
//! ```text
//!   aws-sdk-s3 ──HTTP/1.1──▶ 127.0.0.1:<port> ── FaultLayer ──▶ s3s (SigV4, SimpleAuth) ──▶ s3s-fs (files in `dir`)
//! ```
//!
//! [`EmbeddedS3::start`] serves `dir` with s3s + s3s-fs on `127.0.0.1:0`
//! (hyper on a tokio runtime of the server's own, so that, as in another
//! process, it never waits for the caller's busy workers), checks SigV4
//! signatures against one random key pair, creates the bucket `shovel`,
//! and stops when dropped. Tests,
//! benchmarks and `shovel --shuffle s3` without an endpoint use it; real
//! HTTP, real signing, real error responses, no mocks.
//!
//! The fault layer in front of s3s makes the server misbehave on purpose:
//! - [`FaultConfig`]: with probability `rate` (seeded RNG) a request gets
//!   503 SlowDown, 500 InternalError, its connection closed without a
//!   response, or a delayed response;
//! - [`EmbeddedS3::fail_all`]: every request gets 500 InternalError;
//! - [`EmbeddedS3::set_read_only`]: every write (PUT, multipart, copy,
//!   delete) gets 403 AccessDenied, as for read-only credentials;
//! - [`EmbeddedS3::set_ignore_if_none_match`]: `If-None-Match` is ignored,
//!   as by stores that ignore conditional writes (a second conditional PUT
//!   replaces the object). The header stays on the request, since SigV4
//!   signs it; the storage layer drops the parsed condition instead;
//! - [`EmbeddedS3::set_latency`]: every request waits a fixed time before it
//!   is handled (a `tokio::time::sleep`, never blocking), which models the
//!   round trip to a remote store; 0 (the default) adds nothing;
//! - [`ServerStats`]: requests by type, injected faults, and for every
//!   PutObject / CreateMultipartUpload the `x-amz-server-side-encryption`
//!   header it carried.
//!
//! The layer also closes two gaps between s3s-fs and S3: conditional writes
//! (`If-None-Match: *` on PutObject and CompleteMultipartUpload) are
//! serialized, which makes s3s-fs's check-then-write atomic (the first
//! writer wins, as on S3), and requests to a missing bucket get
//! `404 NoSuchBucket` (s3s-fs would create its directory on PUT).
//!
//! Accepted sockets get `TCP_NODELAY`. [`serve`] runs the server as the
//! body of a standalone process (e.g. a `shovel s3-server` subcommand): it
//! prints nothing and hands back the endpoint, buckets and static keys.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use shuffle_core::{Error, Result};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{S3Config, S3ConfigBuilder};
use fast_fs::EmbeddedFs;

mod fast_fs;
mod multipart;
mod objects;
use crate::retry::RetryConfig;

/// Where [`EmbeddedS3::start`] listens: loopback, a free port.
const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Runs the embedded server as the body of a standalone process: serves
/// `dir` (created if missing; objects persist there) on `bind` (port 0
/// picks a free one) with `latency` added to every request, and creates
/// the bucket [`DEFAULT_BUCKET`]. Prints nothing: the caller shows
/// [`EmbeddedS3::endpoint`], [`EmbeddedS3::buckets`] and the static keys
/// ([`EmbeddedS3::access_key`], [`EmbeddedS3::secret_key`], or
/// [`EmbeddedS3::config_pairs`]) and keeps the value alive for as long as
/// it should serve. Must run inside a tokio runtime.
pub async fn serve(
    dir: impl AsRef<Path>,
    bind: SocketAddr,
    latency: Duration,
) -> Result<EmbeddedS3> {
    let server = EmbeddedS3::start_inner(dir.as_ref().to_path_buf(), None, bind).await?;
    server.set_latency(latency);
    Ok(server)
}

/// The bucket [`EmbeddedS3::start`] creates.
pub const DEFAULT_BUCKET: &str = "shovel";

/// S3 request types as seen by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum S3Op {
    PutObject,
    CopyObject,
    GetObject,
    HeadObject,
    DeleteObject,
    DeleteObjects,
    ListObjects,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListMultipartUploads,
    CreateBucket,
    HeadBucket,
    DeleteBucket,
    ListBuckets,
    Other,
}

/// The encryption headers one PutObject or CreateMultipartUpload carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseRecord {
    pub op: S3Op,
    /// `bucket/key` as requested.
    pub path: String,
    /// `x-amz-server-side-encryption`, if present.
    pub sse: Option<String>,
    /// `x-amz-server-side-encryption-aws-kms-key-id`, if present.
    pub kms_key_id: Option<String>,
}

/// What the server saw.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// Every request received (faulted ones included), by type.
    pub requests: BTreeMap<S3Op, u64>,
    /// Requests answered with an injected fault (errors, drops, delays).
    pub faults_injected: u64,
    /// One record per PutObject and CreateMultipartUpload, in arrival order.
    pub sse: Vec<SseRecord>,
    /// PutObject and UploadPart requests whose body was sent unsigned
    /// (`x-amz-content-sha256: UNSIGNED-PAYLOAD`, `s3.sign_payload=false`).
    pub unsigned_uploads: u64,
}

impl ServerStats {
    /// Requests of type `op`.
    pub fn count(&self, op: S3Op) -> u64 {
        self.requests.get(&op).copied().unwrap_or(0)
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// Randomly injected faults.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Probability (0..=1) that a request is faulted.
    pub rate: f64,
    /// Seed of the RNG deciding which requests are faulted and how.
    pub seed: u64,
    /// Fault kinds to pick from (uniformly); all off means no faults.
    pub slow_down: bool,
    pub internal_error: bool,
    pub drop_connection: bool,
    pub slow_response: bool,
    /// Delay of a slow response.
    pub slow_delay: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::none()
    }
}

impl FaultConfig {
    /// No faults.
    pub fn none() -> Self {
        Self {
            rate: 0.0,
            seed: 0,
            slow_down: false,
            internal_error: false,
            drop_connection: false,
            slow_response: false,
            slow_delay: Duration::from_millis(50),
        }
    }

    /// Every kind of fault, `rate` of all requests.
    pub fn mixed(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            slow_down: true,
            internal_error: true,
            drop_connection: true,
            slow_response: true,
            slow_delay: Duration::from_millis(50),
        }
    }

    /// Only 503 SlowDown, `rate` of all requests.
    pub fn slow_down(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            slow_down: true,
            ..Self::none()
        }
    }

    fn kinds(&self) -> Vec<Fault> {
        let mut k = Vec::new();
        if self.slow_down {
            k.push(Fault::SlowDown);
        }
        if self.internal_error {
            k.push(Fault::InternalError);
        }
        if self.drop_connection {
            k.push(Fault::Drop);
        }
        if self.slow_response {
            k.push(Fault::Slow(self.slow_delay));
        }
        k
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    SlowDown,
    InternalError,
    Drop,
    Slow(Duration),
}

struct Faults {
    config: Mutex<(FaultConfig, StdRng)>,
    fail_all: AtomicBool,
    read_only: AtomicBool,
    /// Ignore `If-None-Match` (a store that ignores it); shared with
    /// [`EmbeddedFs`], which drops the parsed condition after s3s has
    /// checked the signature that covers the header.
    ignore_if_none_match: Arc<AtomicBool>,
    /// Added latency per request, in nanoseconds.
    latency_nanos: AtomicU64,
    stats: Mutex<ServerStats>,
    /// Serializes conditional writes so If-None-Match is atomic.
    conditional: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Faults {
    fn draw(&self) -> Option<Fault> {
        let mut guard = lock(&self.config);
        let (config, rng) = &mut *guard;
        let kinds = config.kinds();
        if kinds.is_empty() || config.rate <= 0.0 {
            return None;
        }
        if rng.gen::<f64>() >= config.rate {
            return None;
        }
        Some(kinds[rng.gen_range(0..kinds.len())])
    }
}

/// The fault layer: a hyper service around s3s.
#[derive(Clone)]
struct FaultService {
    s3: S3Service,
    faults: Arc<Faults>,
    root: Arc<PathBuf>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn classify(method: &Method, path: &str, query: &str, has_copy_source: bool) -> S3Op {
    let has = |name: &str| {
        query
            .split('&')
            .any(|kv| kv == name || kv.starts_with(&format!("{name}=")))
    };
    let trimmed = path.trim_start_matches('/');
    let has_key = trimmed.split_once('/').is_some_and(|(_, k)| !k.is_empty());
    if trimmed.is_empty() {
        return if *method == Method::GET {
            S3Op::ListBuckets
        } else {
            S3Op::Other
        };
    }
    match (method.as_str(), has_key) {
        ("PUT", true) if has("uploadId") => S3Op::UploadPart,
        ("PUT", true) if has_copy_source => S3Op::CopyObject,
        ("PUT", true) => S3Op::PutObject,
        ("PUT", false) => S3Op::CreateBucket,
        ("POST", true) if has("uploads") => S3Op::CreateMultipartUpload,
        ("POST", true) if has("uploadId") => S3Op::CompleteMultipartUpload,
        ("POST", false) if has("delete") => S3Op::DeleteObjects,
        ("DELETE", true) if has("uploadId") => S3Op::AbortMultipartUpload,
        ("DELETE", true) => S3Op::DeleteObject,
        ("DELETE", false) => S3Op::DeleteBucket,
        ("GET", true) => S3Op::GetObject,
        ("GET", false) if has("uploads") => S3Op::ListMultipartUploads,
        ("GET", false) => S3Op::ListObjects,
        ("HEAD", true) => S3Op::HeadObject,
        ("HEAD", false) => S3Op::HeadBucket,
        _ => S3Op::Other,
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>shovel-fault</RequestId></Error>"
    );
    let mut resp = Response::new(s3s::Body::from(xml));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// Reads a request body to its end, so an injected error response is seen
/// by the client instead of a broken pipe while it is still sending a large
/// PUT (which made the error a client hears depend on timing).
async fn drain(body: Incoming) {
    use hyper::body::Body as _;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if frame.is_err() {
            break;
        }
    }
}

impl FaultService {
    async fn handle(
        self,
        req: Request<Incoming>,
    ) -> std::result::Result<Response<s3s::Body>, BoxError> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let op = classify(
            req.method(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
            req.headers().contains_key("x-amz-copy-source"),
        );
        {
            let mut stats = lock(&self.faults.stats);
            *stats.requests.entry(op).or_default() += 1;
            if matches!(op, S3Op::PutObject | S3Op::UploadPart)
                && header("x-amz-content-sha256").as_deref() == Some("UNSIGNED-PAYLOAD")
            {
                stats.unsigned_uploads += 1;
            }
            if matches!(op, S3Op::PutObject | S3Op::CreateMultipartUpload) {
                stats.sse.push(SseRecord {
                    op,
                    path: req.uri().path().trim_start_matches('/').to_string(),
                    sse: header("x-amz-server-side-encryption"),
                    kms_key_id: header("x-amz-server-side-encryption-aws-kms-key-id"),
                });
            }
        }
        let latency = self.faults.latency_nanos.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_nanos(latency)).await;
        }
        if self.faults.fail_all.load(Ordering::Relaxed) {
            lock(&self.faults.stats).faults_injected += 1;
            drain(req.into_body()).await;
            return Ok(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again. (injected: fail_all)",
            ));
        }
        if let Some(fault) = self.faults.draw() {
            lock(&self.faults.stats).faults_injected += 1;
            match fault {
                Fault::SlowDown => {
                    drain(req.into_body()).await;
                    return Ok(error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "SlowDown",
                        "Please reduce your request rate. (injected)",
                    ));
                }
                Fault::InternalError => {
                    drain(req.into_body()).await;
                    return Ok(error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "We encountered an internal error. Please try again. (injected)",
                    ));
                }
                // hyper closes the connection without a response.
                Fault::Drop => return Err("injected connection drop".into()),
                Fault::Slow(d) => tokio::time::sleep(d).await,
            }
        }
        // s3s-fs creates missing buckets on PUT; S3 answers NoSuchBucket.
        if !matches!(op, S3Op::CreateBucket | S3Op::ListBuckets | S3Op::Other) {
            let bucket = req
                .uri()
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            if !bucket.is_empty() && !bucket.contains("..") && !self.root.join(bucket).is_dir() {
                return Ok(error_response(
                    StatusCode::NOT_FOUND,
                    "NoSuchBucket",
                    "The specified bucket does not exist",
                ));
            }
        }
        if self.faults.read_only.load(Ordering::Relaxed)
            && matches!(
                op,
                S3Op::PutObject
                    | S3Op::CopyObject
                    | S3Op::DeleteObject
                    | S3Op::DeleteObjects
                    | S3Op::CreateMultipartUpload
                    | S3Op::UploadPart
                    | S3Op::CompleteMultipartUpload
                    | S3Op::CreateBucket
                    | S3Op::DeleteBucket
            )
        {
            drain(req.into_body()).await;
            return Ok(error_response(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied (read-only server)",
            ));
        }
        let conditional = matches!(op, S3Op::PutObject | S3Op::CompleteMultipartUpload)
            && req.headers().contains_key(hyper::header::IF_NONE_MATCH)
            && !self.faults.ignore_if_none_match.load(Ordering::Relaxed);
        let _guard = if conditional {
            Some(self.faults.conditional.lock().await)
        } else {
            None
        };
        let req = req.map(s3s::Body::from);
        self.s3.call(req).await.map_err(BoxError::from)
    }
}

impl hyper::service::Service<Request<Incoming>> for FaultService {
    type Response = Response<s3s::Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(self.clone().handle(req))
    }
}

/// A running in-process S3 server; stops when dropped.
pub struct EmbeddedS3 {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// The bucket created at start ([`DEFAULT_BUCKET`]).
    pub bucket: String,
    pub region: String,
    addr: SocketAddr,
    root: PathBuf,
    faults: Arc<Faults>,
    /// Multipart uploads of plain objects in progress.
    uploads: Arc<multipart::Uploads>,
    server: JoinHandle<()>,
    /// The server's own runtime (see [`server_runtime`]).
    runtime: Option<tokio::runtime::Runtime>,
    temp_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for EmbeddedS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedS3")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

impl EmbeddedS3 {
    /// Serves `dir` (created if missing) on `127.0.0.1:0` and creates the
    /// bucket [`DEFAULT_BUCKET`]. Must run inside a tokio runtime.
    pub async fn start(dir: impl AsRef<Path>) -> Result<Self> {
        Self::start_inner(dir.as_ref().to_path_buf(), None, LOOPBACK).await
    }

    /// Like [`EmbeddedS3::start`] in a temporary directory removed on drop.
    pub async fn start_temp() -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("shovel-s3-")
            .tempdir()
            .map_err(|e| io_err(&std::env::temp_dir(), e))?;
        let dir = temp.path().to_path_buf();
        Self::start_inner(dir, Some(temp), LOOPBACK).await
    }

    async fn start_inner(
        dir: PathBuf,
        temp: Option<tempfile::TempDir>,
        bind: SocketAddr,
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let fs = s3s_fs::FileSystem::new(&dir).map_err(|e| Error::Backend {
            store: "s3",
            message: format!(
                "embedded S3 server cannot serve {}: {e:?}; pick a writable directory",
                dir.display()
            ),
            source: None,
        })?;
        let root = dir.canonicalize().map_err(|e| io_err(&dir, e))?;
        let ignore_if_none_match = Arc::new(AtomicBool::new(false));
        let uploads = Arc::new(multipart::Uploads::new(root.clone()));
        let fs = EmbeddedFs::new(
            fs,
            root.clone(),
            Arc::clone(&ignore_if_none_match),
            Arc::clone(&uploads),
        );
        let access_key = format!("SHOVEL{}", random_token(14));
        let secret_key = random_token(40);
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(
            access_key.clone(),
            secret_key.clone(),
        ));
        let s3 = builder.build();
        let faults = Arc::new(Faults {
            config: Mutex::new((FaultConfig::none(), StdRng::seed_from_u64(0))),
            fail_all: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            ignore_if_none_match,
            latency_nanos: AtomicU64::new(0),
            stats: Mutex::new(ServerStats::default()),
            conditional: tokio::sync::Mutex::new(()),
        });
        let listen_err = |e: std::io::Error| Error::Backend {
            store: "s3",
            message: format!(
                "embedded S3 server cannot listen on {bind}: {e}; pick a free port or address"
            ),
            source: Some(Box::new(e)),
        };
        let listener = std::net::TcpListener::bind(bind).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let addr = listener.local_addr().map_err(|e| Error::Backend {
            store: "s3",
            message: format!("embedded S3 server has no local address: {e}"),
            source: Some(Box::new(e)),
        })?;
        let service = FaultService {
            s3,
            faults: Arc::clone(&faults),
            root: Arc::new(root.clone()),
        };
        let runtime = server_runtime()?;
        let server = runtime.spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept_loop(listener, service).await,
                Err(e) => {
                    tracing::error!(error = %e, "embedded S3 server cannot accept connections")
                }
            }
        });
        // A wildcard bind is reached through loopback on this machine.
        let reachable = if addr.ip().is_unspecified() {
            SocketAddr::new(LOOPBACK.ip(), addr.port())
        } else {
            addr
        };
        let this = Self {
            endpoint: format!("http://{reachable}"),
            access_key,
            secret_key,
            bucket: DEFAULT_BUCKET.to_string(),
            region: "us-east-1".to_string(),
            addr,
            root,
            faults,
            uploads,
            server,
            runtime: Some(runtime),
            temp_dir: temp,
        };
        this.create_bucket(DEFAULT_BUCKET)?;
        Ok(this)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates another bucket (a directory of the served root).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let path = self.root.join(name);
        std::fs::create_dir_all(&path).map_err(|e| io_err(&path, e))
    }

    /// A config builder pointing at this server: endpoint, static keys,
    /// region, path-style, bucket `s3://<bucket>/<prefix>`, and quick retries
    /// (10 attempts, 10ms..200ms backoff, 30s deadline).
    pub fn config_builder(&self, prefix: &str) -> S3ConfigBuilder {
        S3Config::builder()
            .buckets(vec![crate::config::BucketUri {
                bucket: self.bucket.clone(),
                prefix: prefix.trim_matches('/').to_string(),
            }])
            .endpoint(self.endpoint.clone())
            .region(self.region.clone())
            .force_path_style(true)
            .static_credentials(self.access_key.clone(), self.secret_key.clone(), None)
            .connect_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(30))
            .retry(RetryConfig {
                max_attempts: 10,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(200),
                total_deadline: Duration::from_secs(30),
            })
    }

    /// `config_builder(prefix).build()`.
    pub fn config(&self, prefix: &str) -> Result<S3Config> {
        self.config_builder(prefix).build()
    }

    /// `key=value` pairs for this server (as `shovel --conf` would pass them).
    pub fn config_pairs(&self, prefix: &str) -> Vec<(String, String)> {
        let uri = if prefix.trim_matches('/').is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, prefix.trim_matches('/'))
        };
        server_config_pairs(
            uri,
            &self.endpoint,
            &self.region,
            &self.access_key,
            &self.secret_key,
        )
    }

    /// Replaces the random fault plan (and reseeds its RNG).
    pub fn set_faults(&self, config: FaultConfig) {
        let rng = StdRng::seed_from_u64(config.seed);
        *lock(&self.faults.config) = (config, rng);
    }

    /// Makes every write (PUT, multipart, copy, delete, bucket create or
    /// delete) fail with 403 AccessDenied (`true`), as for read-only
    /// credentials, or not. Reads and lists still work.
    pub fn set_read_only(&self, on: bool) {
        self.faults.read_only.store(on, Ordering::Relaxed);
    }

    /// Makes the server ignore `If-None-Match` (`true`), as some
    /// S3-compatible stores do: a conditional PutObject or
    /// CompleteMultipartUpload then replaces an existing object instead of
    /// getting 412 PreconditionFailed.
    pub fn set_ignore_if_none_match(&self, on: bool) {
        self.faults
            .ignore_if_none_match
            .store(on, Ordering::Relaxed);
    }

    /// Adds `latency` before every request is handled (0 = none, the
    /// default). The wait is a `tokio::time::sleep`, so concurrent
    /// requests each wait it in parallel, as round trips to a remote
    /// store do.
    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.faults.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The latency added per request.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.faults.latency_nanos.load(Ordering::Relaxed))
    }

    /// The buckets served (directories of the root), sorted.
    pub fn buckets(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Stops random faults.
    pub fn clear_faults(&self) {
        self.set_faults(FaultConfig::none());
    }

    /// Makes every request fail with 500 InternalError (`true`) or not.
    pub fn fail_all(&self, on: bool) {
        self.faults.fail_all.store(on, Ordering::Relaxed);
    }

    /// What the server saw so far.
    pub fn stats(&self) -> ServerStats {
        lock(&self.faults.stats).clone()
    }

    /// Forgets the stats.
    pub fn reset_stats(&self) {
        *lock(&self.faults.stats) = ServerStats::default();
    }

    /// Multipart uploads created and neither completed nor aborted.
    pub fn pending_multipart_uploads(&self) -> usize {
        let ours = self.uploads.len();
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return ours;
        };
        ours + dir
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    }
}

impl Drop for EmbeddedS3 {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection; the runtime goes without waiting (so a server may be
        // dropped inside another runtime).
        self.server.abort();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        if let Some(temp) = self.temp_dir.take() {
            remove_server_dir(temp);
        }
    }
}

/// Removes the directory a stopped (dropped) embedded server served. A
/// write the stop cut off can still be finishing on a blocking thread
/// (s3s-fs's `.tmp.N.internal.part`, or this server's own temporary file),
/// so the removal may meet a file created after it listed the directory:
/// it retries for up to half a second. Once the directory is gone, nothing
/// brings it back (the server makes directories only below a bucket that
/// exists).
pub fn remove_server_dir(dir: tempfile::TempDir) {
    let path = dir.path().to_path_buf();
    let _ = dir.close();
    for _ in 0..50 {
        if !path.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Threads of the server's runtime.
const SERVER_THREADS: usize = 2;

/// The runtime a server runs on: its own, as a server in another process
/// would have. On the caller's runtime its connections would wait for
/// workers busy with the caller's CPU work (an engine's operators), and a
/// request would take as long as the polls it queued behind, which no
/// remote store adds.
fn server_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_THREADS)
        .thread_name("shovel-s3-server")
        .enable_all()
        .build()
        .map_err(|e| Error::Backend {
            store: "s3",
            message: format!("embedded S3 server cannot start its runtime: {e}"),
            source: Some(Box::new(e)),
        })
}

async fn accept_loop(listener: TcpListener, service: FaultService) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                conns.spawn(async move {
                    let io = TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The `s3.*` shuffle keys (as `shovel --conf` passes them) that point a
/// manager at an S3-compatible server reached with static keys and
/// path-style addressing: an [`EmbeddedS3`] in this process, or a
/// `shovel s3-server` process whose banner gave these values. One list, so
/// both spell the same keys.
pub fn server_config_pairs(
    bucket_uri: String,
    endpoint: &str,
    region: &str,
    access_key: &str,
    secret_key: &str,
) -> Vec<(String, String)> {
    vec![
        ("s3.bucket".into(), bucket_uri),
        ("s3.endpoint".into(), endpoint.into()),
        ("s3.region".into(), region.into()),
        ("s3.path_style".into(), "true".into()),
        ("s3.access_key_id".into(), access_key.into()),
        ("s3.secret_access_key".into(), secret_key.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_requests() {
        let c = |m: &str, p: &str, q: &str| {
            classify(&Method::from_bytes(m.as_bytes()).unwrap(), p, q, false)
        };
        assert_eq!(c("PUT", "/b/k/x", ""), S3Op::PutObject);
        assert_eq!(
            c("PUT", "/b/k", "partNumber=1&uploadId=x"),
            S3Op::UploadPart
        );
        assert_eq!(c("POST", "/b/k", "uploads"), S3Op::CreateMultipartUpload);
        assert_eq!(
            c("POST", "/b/k", "uploadId=x"),
            S3Op::CompleteMultipartUpload
        );
        assert_eq!(
            c("DELETE", "/b/k", "uploadId=x"),
            S3Op::AbortMultipartUpload
        );
        assert_eq!(c("POST", "/b", "delete"), S3Op::DeleteObjects);
        assert_eq!(c("GET", "/b", "list-type=2&prefix=x"), S3Op::ListObjects);
        assert_eq!(c("GET", "/b/k", ""), S3Op::GetObject);
        assert_eq!(c("HEAD", "/b/k", ""), S3Op::HeadObject);
    }
}
