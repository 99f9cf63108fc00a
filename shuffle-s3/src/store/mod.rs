//! [`S3Store`]: the [`ShuffleStore`](shuffle_core::store::ShuffleStore) over Amazon S3 and S3-compatible stores.
//!
//! Request mapping:
//!
//! | store call | S3 requests |
//! |---|---|
//! | `create` + `write`/`finish` up to the multipart threshold | one PutObject at `finish` |
//! | ... beyond the threshold | CreateMultipartUpload, UploadPart (at most `max_parts_in_flight` spawned at once), CompleteMultipartUpload |
//! | `abort`, failed `write`/`finish`, dropped sink | AbortMultipartUpload (nothing becomes visible) |
//! | `put` | PutObject (multipart when larger than the threshold) |
//! | `put_if_absent` | PutObject with `If-None-Match: *`; 412/409 means `AlreadyExists` |
//! | `create_if_absent` + `finish` | as `create`, with `If-None-Match: *` on the PutObject or CompleteMultipartUpload; 412/409 is [`Error::AlreadyExists`](shuffle_core::Error::AlreadyExists) (the upload is aborted) |
//! | `get_suffix` | GetObject with `Range: bytes=-len` |
//! | `get` / `get_range` | GetObject (`Range: bytes=a-(b-1)`); 416 gives empty bytes |
//! | `list` | ListObjectsV2, paginated, over every bucket x hash prefix |
//! | `delete` | DeleteObjects in batches of 1000, per-key errors checked |
//! | `delete_prefix` | list + delete per bucket x hash prefix |
//!
//! Without static keys, [`S3Store::new`] resolves the AWS credential chain
//! once, within `s3.credentials_timeout`: no credentials is an error there,
//! naming the fixes, not a failure of the first request.
//!
//! Every request goes through [`crate::retry`] (via `Inner::send`, or
//! `Inner::run` for GetObject, whose body is read within the attempt), is
//! counted in the shared
//! [`ShuffleMetrics::requests`], and carries the configured SSE headers
//! (PutObject, CreateMultipartUpload) and expected bucket owner (all).
//! Failures map to [`Error::NotFound`] (missing object) or [`Error::Backend`]
//! naming `s3://bucket/key`, the endpoint and the likely fix.
//!
//! A store that ignores `If-None-Match` would let a second writer replace
//! the first: `s3.conditional_writes=false` makes
//! `supports_conditional_create()` false, and shuffle-core then puts
//! attempt ids in keys (see `shuffle_core::manager`); the probe detects
//! such a store and switches the mode off itself. A conditional PUT whose
//! success response is lost and is then retried reports `AlreadyExists`;
//! the committing writer then reads the footer it finds, which is its own,
//! so the outcome is still right.
//!
//! ## Modules (one job each, as object_store's `aws/`)
//!
//! | module | job |
//! |---|---|
//! | this one | [`S3Store`], its shared state (`Inner`) and the request types (`Op`) |
//! | `client` | building the SDK client (retries off, timeouts, checksums, endpoint) |
//! | `io` | the store's own runtime every request runs on (`s3.io_threads`) |
//! | `credentials` | resolving the AWS credential chain once, with the fixes on failure |
//! | `diagnose` | turning a failed request into one error naming object, endpoint and fix |
//! | `requests` | the S3 requests and the [`ShuffleStore`](shuffle_core::store::ShuffleStore) impl over them |
//! | `probe` | the start-up check ([`S3Store::probe`]) |
//! | `sink` | the streaming multipart [`ObjectSink`](shuffle_core::store::ObjectSink) |

mod client;
mod credentials;
mod diagnose;
mod io;
mod probe;
mod requests;
mod sink;

pub use probe::{PROBE_ATTEMPT_TIMEOUT, PROBE_BUDGET, PROBE_OBJECT, PROBE_REQUEST_DEADLINE};

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::Client;
use shuffle_core::metrics::{RequestMetrics, ShuffleMetrics};
use shuffle_core::spill::ObjectSpillStore;
use shuffle_core::store::ObjectKey;
use shuffle_core::Result;

use crate::config::S3Config;
use crate::layout::Layout;

/// The S3 request types, for counters and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Head,
    HeadBucket,
    List,
    Delete,
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PutObject",
            Op::Get => "GetObject",
            Op::Head => "HeadObject",
            Op::HeadBucket => "HeadBucket",
            Op::List => "ListObjectsV2",
            Op::Delete => "DeleteObjects",
            Op::CreateMultipart => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::CompleteMultipart => "CompleteMultipartUpload",
            Op::AbortMultipart => "AbortMultipartUpload",
        }
    }

    /// The IAM action that permits this request.
    fn action(self) -> &'static str {
        match self {
            Op::Put | Op::CreateMultipart | Op::UploadPart | Op::CompleteMultipart => {
                "s3:PutObject"
            }
            Op::Get | Op::Head => "s3:GetObject",
            Op::List | Op::HeadBucket => "s3:ListBucket",
            Op::Delete => "s3:DeleteObject",
            Op::AbortMultipart => "s3:AbortMultipartUpload",
        }
    }

    fn counter(self, m: &RequestMetrics) -> &AtomicU64 {
        match self {
            Op::Put => &m.put,
            Op::Get => &m.get,
            Op::Head | Op::HeadBucket => &m.head,
            Op::List => &m.list,
            Op::Delete => &m.delete,
            Op::CreateMultipart => &m.multipart_create,
            Op::UploadPart => &m.multipart_part,
            Op::CompleteMultipart => &m.multipart_complete,
            Op::AbortMultipart => &m.multipart_abort,
        }
    }
}

struct Inner {
    client: Client,
    config: S3Config,
    layout: Layout,
    metrics: Arc<ShuffleMetrics>,
    endpoint: String,
    /// Whether commits use `If-None-Match: *` (`s3.conditional_writes`,
    /// switched off by the probe for a store that ignores the header).
    conditional: AtomicBool,
    /// Where requests run (`s3.io_threads`).
    io: Arc<io::IoRuntime>,
}

/// Shuffle and spill objects in S3. Cheap to clone.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("endpoint", &self.inner.endpoint)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl S3Store {
    /// Connects with `config`, counting requests into `metrics`. No request
    /// is made to S3 here, but without static keys the AWS credential chain
    /// is resolved (within `s3.credentials_timeout`): finding no
    /// credentials is an [`Error::Backend`] naming the fixes.
    pub async fn new(config: S3Config, metrics: Arc<ShuffleMetrics>) -> Result<Self> {
        let client = client::build_client(&config).await?;
        Self::with_client(client, config, metrics)
    }

    /// Uses a ready SDK client. Its retries should be disabled so this
    /// store's retries are the only ones (see [`crate::retry`]).
    /// Fails only if the I/O runtime's threads cannot start.
    pub fn with_client(
        client: Client,
        config: S3Config,
        metrics: Arc<ShuffleMetrics>,
    ) -> Result<Self> {
        let layout = Layout::new(config.buckets.clone(), config.hash_prefixes);
        let endpoint = config.endpoint_description();
        let conditional = AtomicBool::new(config.conditional_writes);
        let io = Arc::new(io::IoRuntime::new(config.io_threads)?);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                layout,
                metrics,
                endpoint,
                conditional,
                io,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.inner.config
    }

    /// True while map outputs are committed with conditional writes
    /// (`s3.conditional_writes`, unless the probe found the store ignores
    /// `If-None-Match`).
    pub fn conditional_writes(&self) -> bool {
        self.inner.conditional.load(Ordering::Relaxed)
    }

    /// The SDK client (for tools and tests).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The metrics requests are counted into.
    pub fn metrics(&self) -> &Arc<ShuffleMetrics> {
        &self.inner.metrics
    }

    /// `(bucket, S3 key)` where `key` is stored.
    pub fn locate(&self, key: &ObjectKey) -> (String, String) {
        let (b, k) = self.inner.layout.locate(key);
        (b.to_string(), k)
    }

    /// A spill store keeping spill files of `app_id` under `spill/<app_id>/`
    /// in this store's buckets (core deletes each after reading it back).
    pub fn spill_store(&self, app_id: &str) -> ObjectSpillStore {
        let app = app_id.trim_matches('/');
        let prefix = if app.is_empty() {
            "spill".to_string()
        } else {
            format!("spill/{app}")
        };
        ObjectSpillStore::new(Arc::new(self.clone()), prefix)
    }
}
