//! The start-up check: [`S3Store::probe`].
//!
//! A wrong endpoint, a missing bucket, rejected credentials or a read-only
//! bucket used to surface only after tasks had failed (a web server given as
//! the endpoint was retried for minutes). The probe finds each of them
//! before any work, within [`PROBE_BUDGET`], and says so in one line naming
//! the endpoint or bucket and the fix:
//!
//! ```text
//!  for each bucket:  HeadBucket                      exists? answers like S3? may we read?
//!  for each bucket:  PutObject  <app>/_shovel_probe  may we write?
//!                    GetObject  (bytes compared)      is it really S3?
//!  first bucket:     PutObject  again, If-None-Match: *  412? (else: conditional writes off)
//!                    DeleteObjects                    may we delete? (leaves nothing behind)
//! ```
//!
//! A store that accepts the second, conditional PUT of an existing object
//! ignores `If-None-Match`: the probe then switches the store to
//! non-conditional commits (attempt ids in keys) with a warning rather than
//! failing, since such a store is still a correct place for shuffle data;
//! `s3.conditional_writes=false` skips that request.
//!
//! It runs on a copy of the store with its own short budget and its own
//! metrics. Answers that are not S3's and other errors are never retried;
//! transient ones (503 SlowDown, 500, resets) are retried with short
//! backoff for at most [`PROBE_REQUEST_DEADLINE`] per request
//! ([`PROBE_ATTEMPT_TIMEOUT`] per attempt), and the whole probe is cut at
//! [`PROBE_BUDGET`]. A deadline rather than a fixed 2 attempts, because a
//! healthy store that throttles one request in seven (the fault-injection
//! suites run at 20%) must still pass, and the deadline bounds the wait
//! just as well. Its own metrics keep the job's request counters to the
//! job's requests. The probe object lives inside the app's namespace
//! (`<app_id>/_shovel_probe`, in hash prefix 0 of each bucket), so a probe
//! cut short by a kill is left for `gc` to recognise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use shuffle_core::metrics::ShuffleMetrics;
use shuffle_core::store::ObjectKey;
use shuffle_core::{Error, Result};

use super::{Inner, Op, S3Store};
use crate::layout::Cell;
use crate::retry::{Exhausted, Kind, RetryConfig};

/// The whole probe's time limit.
pub const PROBE_BUDGET: Duration = Duration::from_secs(15);
/// Time budget of one probe request across its attempts (transient
/// failures only; answers that are not S3's are never retried).
pub const PROBE_REQUEST_DEADLINE: Duration = Duration::from_secs(4);
/// Most attempts of one probe request.
const PROBE_ATTEMPTS: u32 = 10;
/// Limit of one attempt of one probe request.
pub const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The name of the probe object under the app prefix.
pub use shuffle_core::manager::PROBE_OBJECT;

fn backend(message: String) -> Error {
    Error::Backend {
        store: "s3",
        message,
        source: None,
    }
}

impl S3Store {
    /// Checks, before any work, that every configured bucket exists and
    /// answers like S3 (HeadBucket), and that one small object
    /// `<app_prefix>/_shovel_probe` can be written, read back byte for byte
    /// and deleted in each bucket. Fails within 15 s with one
    /// [`Error::Backend`] line naming the endpoint or bucket and the fix.
    /// Leaves no object behind when it succeeds. Probe requests are not
    /// counted in [`S3Store::metrics`].
    pub async fn probe(&self, app_prefix: &str) -> Result<()> {
        let probe = self.probe_view();
        let endpoint = &self.inner.endpoint;
        match tokio::time::timeout(PROBE_BUDGET, probe.inner.probe(app_prefix)).await {
            Ok(Ok(Conditional::Honoured | Conditional::Unchecked)) => Ok(()),
            Ok(Ok(Conditional::Ignored { object })) => {
                tracing::warn!(
                    endpoint = %endpoint,
                    object = %object,
                    "the S3 store ignores If-None-Match (a second conditional PUT of the probe \
                     object succeeded): committing map outputs with attempt ids in keys instead; \
                     set s3.conditional_writes=false to skip this check's extra request"
                );
                self.inner.conditional.store(false, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(backend(format!(
                "{endpoint} did not finish the S3 start-up check (HeadBucket, then a small PUT, \
                 GET and DELETE) within {PROBE_BUDGET:?}: check s3.endpoint (--s3-endpoint), \
                 s3.region and network access, or set s3.probe=false to skip the check"
            ))),
        }
    }

    /// This store with the probe's short budget and its own metrics.
    fn probe_view(&self) -> S3Store {
        let mut config = self.inner.config.clone();
        config.request_timeout = config.request_timeout.min(PROBE_ATTEMPT_TIMEOUT);
        config.retry = RetryConfig {
            max_attempts: config.retry.max_attempts.min(PROBE_ATTEMPTS),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            total_deadline: PROBE_REQUEST_DEADLINE,
        };
        S3Store {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                config,
                layout: self.inner.layout.clone(),
                metrics: Arc::new(ShuffleMetrics::default()),
                endpoint: self.inner.endpoint.clone(),
                conditional: AtomicBool::new(self.conditional_writes()),
                io: Arc::clone(&self.inner.io),
            }),
        }
    }
}

/// What the probe learnt about conditional writes.
enum Conditional {
    /// Not checked (`s3.conditional_writes=false`).
    Unchecked,
    /// A second `If-None-Match: *` PUT of an existing key got 412.
    Honoured,
    /// It succeeded: the store ignores the header.
    Ignored { object: String },
}

impl Inner {
    async fn probe(&self, app_prefix: &str) -> Result<Conditional> {
        let mut buckets: Vec<&str> = Vec::new();
        for b in &self.config.buckets {
            if !buckets.contains(&b.bucket.as_str()) {
                buckets.push(&b.bucket);
            }
        }
        for bucket in &buckets {
            self.probe_bucket_exists(bucket).await?;
        }
        let app = app_prefix.trim_matches('/');
        // A name of this process's own: the processes of one distributed job
        // share the app id and start at once (Ballista's executors), and one
        // probe's DELETE must not remove another's object before its GET.
        let name = format!(
            "{PROBE_OBJECT}-{:08x}{:08x}",
            std::process::id(),
            rand::thread_rng().gen::<u32>()
        );
        let path = if app.is_empty() {
            name
        } else {
            format!("{app}/{name}")
        };
        let mut conditional = if self.conditional.load(Ordering::Relaxed) {
            Conditional::Honoured
        } else {
            Conditional::Unchecked
        };
        for index in 0..self.config.buckets.len() {
            let cell = Cell {
                bucket: index,
                hash_prefix: 0,
            };
            let key = ObjectKey::new(self.layout.canonical_shard(cell), path.clone());
            let (bucket, s3_key) = self.layout.locate(&key);
            // One bucket answers for the store: one extra PUT in all.
            let check = index == 0 && matches!(conditional, Conditional::Honoured);
            if self.probe_write_read_delete(bucket, &s3_key, check).await? {
                conditional = Conditional::Ignored {
                    object: format!("s3://{bucket}/{s3_key}"),
                };
            }
        }
        Ok(conditional)
    }

    /// HeadBucket; a failure without an S3 error code (HEAD answers have
    /// no body) is explained by a ListObjectsV2 of one key, whose answer
    /// carries the code (bad key, bad signature, denied, wrong region).
    async fn probe_bucket_exists(&self, bucket: &str) -> Result<()> {
        let head = self
            .send(Op::HeadBucket, || {
                self.client
                    .head_bucket()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await;
        let e = match head {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let endpoint = &self.endpoint;
        if e.last.kind == Kind::NotS3 {
            return Err(self.error(Op::HeadBucket, bucket, "", e));
        }
        if e.last.no_response {
            return Err(backend(format!(
                "no response from S3 endpoint {endpoint} for HeadBucket `{bucket}` after {} \
                 attempts in {:.1?} ({}): check s3.endpoint (--s3-endpoint), s3.region, network \
                 access, and that the store is running",
                e.attempts, e.elapsed, e.last.detail
            )));
        }
        let code = e.last.code.as_deref().unwrap_or("");
        if e.last.status == Some(404) || matches!(code, "NoSuchBucket" | "NotFound") {
            return Err(backend(format!(
                "bucket `{bucket}` does not exist at {endpoint}: create it or fix s3.bucket \
                 (--s3-bucket)"
            )));
        }
        if e.last.status.is_some() && (code.is_empty() || code == "Forbidden") {
            let prefix = self
                .config
                .buckets
                .iter()
                .find(|b| b.bucket == bucket)
                .map(|b| b.prefix.clone())
                .unwrap_or_default();
            self.call(Op::List, bucket, &prefix, || {
                self.client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&prefix)
                    .max_keys(1)
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await?;
        }
        Err(self.error(Op::HeadBucket, bucket, "", e))
    }

    /// Writes, reads back and deletes the probe object; with
    /// `check_conditional`, also PUTs it again with `If-None-Match: *`
    /// while it exists and returns true when that succeeded (the store
    /// ignores the header).
    async fn probe_write_read_delete(
        &self,
        bucket: &str,
        key: &str,
        check_conditional: bool,
    ) -> Result<bool> {
        let object = format!("s3://{bucket}/{key}");
        let endpoint = &self.endpoint;
        let nonce: u64 = rand::thread_rng().gen();
        let data = Bytes::from(format!("shovel S3 start-up check {nonce:016x}\n"));
        if let Err(e) = self.put_object(bucket, key, data.clone(), false).await {
            return Err(self.probe_write_error(bucket, key, e));
        }
        let read = self.get_object(bucket, key, None).await;
        let checked = match read {
            Ok((got, _)) if got == data => Ok(()),
            Ok((got, _)) => {
                let what = if got.trim_ascii_start().starts_with(b"<") {
                    "an HTML or XML page"
                } else {
                    "other bytes"
                };
                Err(backend(format!(
                    "{endpoint} does not answer like S3 (GET of {object} returned {} bytes of \
                     {what}, not the {} bytes just written): check s3.endpoint (--s3-endpoint)",
                    got.len(),
                    data.len()
                )))
            }
            Err(e) => Err(self.error(Op::Get, bucket, key, e)),
        };
        let mut ignored = false;
        if checked.is_ok() && check_conditional {
            match self.put_object(bucket, key, data.clone(), true).await {
                Ok(()) => ignored = true,
                Err(e) if e.last.kind == Kind::Precondition => {}
                Err(e) => {
                    let _ = self.delete_batch(bucket, &[key.to_string()]).await;
                    return Err(self.probe_write_error(bucket, key, e));
                }
            }
        }
        let deleted = self.delete_batch(bucket, &[key.to_string()]).await;
        checked?;
        deleted.map_err(|e| {
            backend(format!(
                "the S3 start-up check could not delete {object} it had just written: {e}"
            ))
        })?;
        Ok(ignored)
    }

    /// A failed probe PUT: the bucket could be read (HeadBucket passed), so
    /// a denial means read-only credentials or a read-only bucket.
    fn probe_write_error(&self, bucket: &str, key: &str, e: Exhausted) -> Error {
        let code = e.last.code.clone().unwrap_or_default();
        if matches!(code.as_str(), "AccessDenied" | "AllAccessDisabled")
            || (code.is_empty() && e.last.status == Some(403))
        {
            let shown = if code.is_empty() { "HTTP 403" } else { &code };
            return backend(format!(
                "{shown} writing s3://{bucket}/{key} at {}: the credentials can read bucket \
                 `{bucket}` but not write it; allow s3:PutObject and s3:DeleteObject on it for \
                 them, or pick a writable bucket with s3.bucket (--s3-bucket)",
                self.endpoint
            ));
        }
        self.error(Op::Put, bucket, key, e)
    }
}
