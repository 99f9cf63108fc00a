//! [`S3Store`]: the [`ShuffleStore`] over Amazon S3 and S3-compatible stores.
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
//! A store that ignores `If-None-Match` makes `put_if_absent` report
//! `Created` for a second writer too; shuffle-core stays correct through
//! attempt ids in keys. A conditional PUT whose success response is lost and
//! is then retried reports `AlreadyExists` for the same reason.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig as SdkRetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use shuffle_core::metrics::{add, RequestMetrics, ShuffleMetrics};
use shuffle_core::spill::ObjectSpillStore;
use shuffle_core::store::{ObjectKey, ObjectMeta, ObjectSink, PutOutcome, ShuffleStore};
use shuffle_core::{Error, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::{Credentials, S3Config, Sse};
use crate::layout::{Cell, Layout};
use crate::retry::{retry, Exhausted, Failure, Kind};

/// Concurrent list requests of one `list` / `delete_prefix` call.
const LIST_CONCURRENCY: usize = 16;
/// Keys per DeleteObjects request (S3's limit).
const DELETE_BATCH: usize = 1000;

/// The S3 request types, for counters and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Head,
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
            Op::List => "s3:ListBucket",
            Op::Delete => "s3:DeleteObject",
            Op::AbortMultipart => "s3:AbortMultipartUpload",
        }
    }

    fn counter(self, m: &RequestMetrics) -> &AtomicU64 {
        match self {
            Op::Put => &m.put,
            Op::Get => &m.get,
            Op::Head => &m.head,
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

/// The fixes for missing credentials, for messages.
const CREDENTIAL_FIXES: &str = "Set s3.access_key_id and s3.secret_access_key (or \
     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), pick a profile with AWS_PROFILE, or run with \
     an instance or task role";

/// Loads the AWS chain's config and resolves its credentials once, within
/// `config.credentials_timeout` in all, so that missing credentials fail
/// here with the fixes instead of at the first request, after the chain's
/// instance-metadata lookup and the retry deadline. Only the outcome is
/// used (the client resolves and refreshes credentials itself); nothing
/// about the credentials is logged.
async fn load_chain(config: &S3Config, endpoint: &str) -> Result<aws_config::SdkConfig> {
    let limit = config.credentials_timeout;
    let started = tokio::time::Instant::now();
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = &config.region {
        loader = loader.region(Region::new(r.clone()));
    }
    let backend = |message: String| Error::Backend {
        store: "s3",
        message,
        source: None,
    };
    let sdk = tokio::time::timeout(limit, loader.load())
        .await
        .map_err(|_| {
            backend(format!(
                "the AWS config chain did not answer within {limit:?} (s3.credentials_timeout) \
                 for {endpoint}: without s3.region the region lookup waits on instance \
                 metadata. Set s3.region (or AWS_REGION)"
            ))
        })?;
    let Some(provider) = sdk.credentials_provider() else {
        return Err(backend(format!(
            "no AWS credentials to sign requests to {endpoint}: the AWS credential chain is \
             disabled. {CREDENTIAL_FIXES}"
        )));
    };
    let left = limit.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(sdk),
        Ok(Err(e)) => Err(Error::Backend {
            store: "s3",
            message: format!(
                "no AWS credentials to sign requests to {endpoint}: the AWS credential chain \
                 found none ({}). {CREDENTIAL_FIXES}",
                credentials_error(&e)
            ),
            source: Some(Box::new(e)),
        }),
        Err(_) => Err(backend(format!(
            "no AWS credentials to sign requests to {endpoint} within {limit:?} \
             (s3.credentials_timeout): the AWS credential chain did not answer. \
             {CREDENTIAL_FIXES}; or raise s3.credentials_timeout if the role's provider is slow"
        ))),
    }
}

/// What the chain said, on one line: the innermost useful text (the chain
/// lists each provider it tried and why it gave nothing), without the
/// error's `Debug` form.
fn credentials_error(e: &(dyn std::error::Error + 'static)) -> String {
    let inner = e.source().unwrap_or(e);
    let mut text = inner.to_string();
    let mut next = inner.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    // Each provider the chain skipped says "the credential provider was not
    // enabled" before its reason; the reason is what helps.
    let text = text
        .replace("the credential provider was not enabled: ", "")
        .replace("the credential provider was not enabled", "not configured");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first} {}", rest.join("; "))
    }
}

/// Builds the SDK client: SDK retries off (ours count), connect timeout set,
/// checksums only where S3 requires them (many S3-compatible stores reject
/// the SDK's default trailing checksums; shuffle data carries its own crc32).
/// With the AWS chain, credentials are resolved here (see [`load_chain`]).
async fn build_client(config: &S3Config) -> Result<Client> {
    let mut builder = match &config.credentials {
        Credentials::Chain => {
            let sdk = load_chain(config, &config.endpoint_description()).await?;
            let region = sdk.region().cloned();
            let mut b = aws_sdk_s3::config::Builder::from(&sdk);
            if region.is_none() {
                b = b.region(Region::new("us-east-1"));
            }
            b
        }
        Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(
                config.region.clone().unwrap_or_else(|| "us-east-1".into()),
            ))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose().to_string(),
                session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "shovel-static",
            )),
    };
    builder = builder
        .retry_config(SdkRetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout)
                .build(),
        )
        .force_path_style(config.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(e) = &config.endpoint {
        builder = builder.endpoint_url(e.clone());
    }
    Ok(Client::from_conf(builder.build()))
}

impl S3Store {
    /// Connects with `config`, counting requests into `metrics`. No request
    /// is made to S3 here, but without static keys the AWS credential chain
    /// is resolved (within `s3.credentials_timeout`): finding no
    /// credentials is an [`Error::Backend`] naming the fixes.
    pub async fn new(config: S3Config, metrics: Arc<ShuffleMetrics>) -> Result<Self> {
        let client = build_client(&config).await?;
        Ok(Self::with_client(client, config, metrics))
    }

    /// Uses a ready SDK client. Its retries should be disabled so this
    /// store's retries are the only ones (see [`crate::retry`]).
    pub fn with_client(client: Client, config: S3Config, metrics: Arc<ShuffleMetrics>) -> Self {
        let layout = Layout::new(config.buckets.clone(), config.hash_prefixes);
        let endpoint = config.endpoint_description();
        Self {
            inner: Arc::new(Inner {
                client,
                config,
                layout,
                metrics,
                endpoint,
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.inner.config
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

impl Inner {
    async fn run<T, F, Fut>(&self, op: Op, f: F) -> std::result::Result<T, Exhausted>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        retry(
            &self.config.retry,
            self.config.request_timeout,
            &self.metrics.requests,
            op.counter(&self.metrics.requests),
            f,
        )
        .await
    }

    /// One S3 request through [`Inner::run`]: `send` builds and sends a
    /// fresh request for each attempt (a fluent builder's `.send()`), and
    /// its SDK errors are classified by [`Failure::from`].
    async fn send<O, E, Fut>(
        &self,
        op: Op,
        mut send: impl FnMut() -> Fut,
    ) -> std::result::Result<O, Exhausted>
    where
        Fut: Future<Output = std::result::Result<O, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.run(op, |_| {
            let sent = send();
            async move { sent.await.map_err(Failure::from) }
        })
        .await
    }

    /// [`Inner::send`], a failure mapped by [`Inner::error`] for
    /// `s3://bucket/key`.
    async fn call<O, E, Fut>(
        &self,
        op: Op,
        bucket: &str,
        key: &str,
        send: impl FnMut() -> Fut,
    ) -> Result<O>
    where
        Fut: Future<Output = std::result::Result<O, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.send(op, send)
            .await
            .map_err(|e| self.error(op, bucket, key, e))
    }

    /// Maps a failed request to the public error, naming the object and the fix.
    fn error(&self, op: Op, bucket: &str, key: &str, mut e: Exhausted) -> Error {
        let object = format!("s3://{bucket}/{key}");
        // S3 answers a GET of a missing key with a `NoSuchKey` body; only
        // HEAD has a bare 404 (the SDK calls it `NotFound`). A bare 404 on
        // anything else comes from something that is not S3 and must not
        // read as a lost object.
        let bare_404 = e.last.kind == Kind::NotFound && e.last.code.as_deref() != Some("NoSuchKey");
        if e.last.kind == Kind::NotFound && (op == Op::Head || !bare_404) {
            return Error::NotFound { object };
        }
        let what = format!("{} {object}", op.name());
        let endpoint = &self.endpoint;
        let f = &e.last;
        let short = f.short();
        let detail = &f.detail;
        let tries = if e.attempts > 1 {
            format!(" after {} attempts in {:.1?}", e.attempts, e.elapsed)
        } else {
            String::new()
        };
        let code = f.code.as_deref().unwrap_or("");
        let message = if bare_404 {
            format!(
                "{what}: {endpoint} answered HTTP 404 without an S3 error body; is s3.endpoint \
                 an S3 service, and is s3.path_style right for it?"
            )
        } else if e.gave_up {
            if f.no_response {
                format!(
                    "no response from S3 endpoint {endpoint} for {what}{tries}: {detail}. Check \
                     s3.endpoint and s3.region, network access, and that the store is running \
                     (s3.retry.total_deadline={:?} bounds the wait)",
                    self.config.retry.total_deadline
                )
            } else if f.kind == Kind::Throttle {
                format!(
                    "{what} was throttled by {endpoint} ({short}){tries}. Spread the load over \
                     more s3.hash_prefixes or buckets, lower the concurrency, or raise \
                     s3.retry.total_deadline / s3.retry.max_attempts"
                )
            } else {
                format!(
                    "{what} kept failing at {endpoint} ({short}){tries}: {detail}. The store is \
                     unhealthy; retry later or raise s3.retry.max_attempts / s3.retry.total_deadline"
                )
            }
        } else if code == "NoSuchBucket" {
            format!(
                "bucket `{bucket}` does not exist at {endpoint} ({what}): create it or fix s3.bucket"
            )
        } else if matches!(
            code,
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem"
        ) || (code.is_empty() && f.status == Some(403))
        {
            let owner = if self.config.expected_bucket_owner.is_some() {
                " (and that s3.expected_bucket_owner is the bucket's account)"
            } else {
                ""
            };
            format!(
                "{what} was denied by {endpoint} ({short}): check the credentials \
                 (s3.access_key_id / s3.secret_access_key or the AWS credential chain) and that \
                 the bucket policy or IAM role allows {} on bucket `{bucket}`{owner}",
                op.action()
            )
        } else if matches!(
            code,
            "InvalidAccessKeyId"
                | "NotSignedUp"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "InvalidClientTokenId"
        ) {
            format!(
                "credentials were rejected by {endpoint} ({short}) for {what}: fix \
                 s3.access_key_id / s3.secret_access_key / s3.session_token, or refresh the \
                 credentials of the AWS chain"
            )
        } else if matches!(
            code,
            "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException"
        ) || f.status == Some(301)
        {
            format!(
                "bucket `{bucket}` is not served by {endpoint} in region {} ({short}, {what}): set \
                 s3.region to the bucket's region or fix s3.endpoint",
                self.config.region.as_deref().unwrap_or("from the AWS chain")
            )
        } else if code.starts_with("KMS") || code.contains("Encryption") {
            format!(
                "{what} was rejected by {endpoint} ({short}): {detail}. Check s3.sse / \
                 s3.sse_kms_key_id and the KMS key policy"
            )
        } else if matches!(
            code,
            "EntityTooLarge" | "EntityTooSmall" | "InvalidPart" | "InvalidPartOrder"
        ) {
            format!(
                "{what} was rejected by {endpoint} ({short}): {detail}. Check s3.part_size \
                 (5MiB..5GiB) and s3.multipart_threshold"
            )
        } else if f.kind == Kind::NoSuchUpload {
            format!(
                "the multipart upload of {object} vanished at {endpoint} ({short}): it was \
                 aborted or removed by a lifecycle rule; re-run the write"
            )
        } else if detail.to_ascii_lowercase().contains("credentials") {
            format!(
                "{what} could not be signed: no usable credentials ({detail}). Set \
                 s3.access_key_id / s3.secret_access_key, or configure the AWS chain \
                 (AWS_ACCESS_KEY_ID, a profile, or an instance/pod role)"
            )
        } else if f.no_response {
            format!(
                "{what} could not be sent to S3 endpoint {endpoint}: {detail}. Check s3.endpoint"
            )
        } else {
            format!("{what} failed at {endpoint} ({short}): {detail}")
        };
        Error::Backend {
            store: "s3",
            message,
            source: e.last.source.take(),
        }
    }

    fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.config.sse {
            None => (None, None),
            Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
    }

    fn owner(&self) -> Option<String> {
        self.config.expected_bucket_owner.clone()
    }

    /// One PutObject (optionally `If-None-Match: *`).
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        if_none_match: bool,
    ) -> std::result::Result<(), Exhausted> {
        let (sse, kms) = self.sse();
        let len = data.len() as u64;
        self.send(Op::Put, || {
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_length(len as i64)
                .body(ByteStream::from(data.clone()))
                .set_server_side_encryption(sse.clone())
                .set_ssekms_key_id(kms.clone())
                .set_expected_bucket_owner(self.owner())
                .set_if_none_match(if_none_match.then(|| "*".to_string()))
                .send()
        })
        .await?;
        add(&self.metrics.requests.bytes_uploaded, len);
        Ok(())
    }

    /// One GetObject, optionally ranged. Returns the bytes and whether the
    /// response was partial (`Content-Range` present).
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<&Range<u64>>,
    ) -> std::result::Result<(Bytes, bool), Exhausted> {
        let header = range.map(|r| format!("bytes={}-{}", r.start, r.end - 1));
        let (data, partial) = self
            .run(Op::Get, |_| {
                let req = self
                    .client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .set_range(header.clone())
                    .set_expected_bucket_owner(self.owner());
                async move {
                    let out = req.send().await.map_err(Failure::from)?;
                    let partial = out.content_range().is_some();
                    let data = out.body.collect().await.map_err(Failure::body)?;
                    Ok((data.into_bytes(), partial))
                }
            })
            .await?;
        add(&self.metrics.requests.bytes_downloaded, data.len() as u64);
        Ok((data, partial))
    }

    async fn head_object(&self, bucket: &str, key: &str) -> std::result::Result<u64, Exhausted> {
        let out = self
            .send(Op::Head, || {
                self.client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn create_multipart(&self, bucket: &str, key: &str) -> Result<String> {
        let (sse, kms) = self.sse();
        let out = self
            .call(Op::CreateMultipart, bucket, key, || {
                self.client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .set_server_side_encryption(sse.clone())
                    .set_ssekms_key_id(kms.clone())
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| Error::Backend {
                store: "s3",
                message: format!(
                    "CreateMultipartUpload s3://{bucket}/{key} at {} returned no upload id: \
                     the store does not support multipart upload; raise s3.multipart_threshold",
                    self.endpoint
                ),
                source: None,
            })
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        data: Bytes,
    ) -> Result<CompletedPart> {
        let len = data.len() as u64;
        let out = self
            .call(Op::UploadPart, bucket, key, || {
                self.client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .content_length(len as i64)
                    .body(ByteStream::from(data.clone()))
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await?;
        add(&self.metrics.requests.bytes_uploaded, len);
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        expected_len: u64,
    ) -> Result<()> {
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        let res = self
            .send(Op::CompleteMultipart, || {
                self.client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(upload.clone())
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            // An earlier attempt completed the upload but its response was lost.
            Err(e) if e.last.kind == Kind::NoSuchUpload && e.attempts > 1 => {
                match self.head_object(bucket, key).await {
                    Ok(len) if len == expected_len => Ok(()),
                    _ => Err(self.error(Op::CompleteMultipart, bucket, key, e)),
                }
            }
            Err(e) => Err(self.error(Op::CompleteMultipart, bucket, key, e)),
        }
    }

    async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let res = self
            .send(Op::AbortMultipart, || {
                self.client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.last.kind, Kind::NoSuchUpload | Kind::NotFound) => Ok(()),
            Err(e) => Err(self.error(Op::AbortMultipart, bucket, key, e)),
        }
    }

    /// Lists one bucket x hash-prefix cell.
    async fn list_cell(&self, cell: Cell, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let bucket = self.layout.bucket(cell);
        let cell_prefix = self.layout.cell_prefix(cell);
        let full = format!("{cell_prefix}{prefix}");
        let shard = self.layout.canonical_shard(cell);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call(Op::List, bucket, &full, || {
                    self.client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(&full)
                        .set_continuation_token(token.clone())
                        .set_expected_bucket_owner(self.owner())
                        .send()
                })
                .await?;
            for obj in page.contents() {
                let Some(path) = obj.key().and_then(|k| k.strip_prefix(&cell_prefix)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: ObjectKey::new(shard, path),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified_unix_secs: obj
                        .last_modified()
                        .map(|t| t.secs().max(0) as u64)
                        .unwrap_or(0),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// One DeleteObjects request (at most 1000 keys of one bucket).
    async fn delete_batch(&self, bucket: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let ids = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Backend {
                store: "s3",
                message: format!(
                    "could not build a DeleteObjects request for bucket `{bucket}`: {e}"
                ),
                source: Some(Box::new(e)),
            })?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| Error::Backend {
                store: "s3",
                message: format!(
                    "could not build a DeleteObjects request for bucket `{bucket}`: {e}"
                ),
                source: Some(Box::new(e)),
            })?;
        let described = if keys.len() == 1 {
            keys[0].clone()
        } else {
            format!("{} (and {} more keys)", keys[0], keys.len() - 1)
        };
        let out = self
            .call(Op::Delete, bucket, &described, || {
                self.client
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete.clone())
                    .set_expected_bucket_owner(self.owner())
                    .send()
            })
            .await?;
        let failed: Vec<String> = out
            .errors()
            .iter()
            .filter(|e| e.code() != Some("NoSuchKey"))
            .map(|e| {
                format!(
                    "s3://{bucket}/{}: {} {}",
                    e.key().unwrap_or("?"),
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or("")
                )
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let denied = out
            .errors()
            .iter()
            .any(|e| e.code() == Some("AccessDenied"));
        let fix = if denied {
            "allow s3:DeleteObject on the bucket for these credentials"
        } else {
            "retry the cleanup; objects that stay can be removed with a lifecycle rule"
        };
        let shown = failed
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::Backend {
            store: "s3",
            message: format!(
                "DeleteObjects at {} failed for {} of {} keys ({shown}{}): {fix}",
                self.endpoint,
                failed.len(),
                keys.len(),
                if failed.len() > 5 { "; ..." } else { "" }
            ),
            source: None,
        })
    }
}

#[async_trait]
impl ShuffleStore for S3Store {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn supports_reliable_storage(&self) -> bool {
        true
    }

    fn describe(&self, key: &ObjectKey) -> String {
        let (b, k) = self.inner.layout.locate(key);
        format!("s3://{b}/{k}")
    }

    async fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        let (bucket, s3_key) = self.locate(key);
        Ok(Box::new(S3Sink {
            inner: Arc::clone(&self.inner),
            bucket,
            key: s3_key,
            buf: BytesMut::new(),
            total: 0,
            upload: None,
            closed: false,
        }))
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        if data.len() as u64 > self.inner.config.multipart_threshold {
            let mut sink = self.create(key).await?;
            sink.write(data).await?;
            sink.finish().await?;
            return Ok(());
        }
        let (bucket, s3_key) = self.inner.layout.locate(key);
        self.inner
            .put_object(bucket, &s3_key, data, false)
            .await
            .map_err(|e| self.inner.error(Op::Put, bucket, &s3_key, e))
    }

    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome> {
        let (bucket, s3_key) = self.inner.layout.locate(key);
        match self.inner.put_object(bucket, &s3_key, data, true).await {
            Ok(()) => Ok(PutOutcome::Created),
            Err(e) if e.last.kind == Kind::Precondition => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.inner.error(Op::Put, bucket, &s3_key, e)),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let (bucket, s3_key) = self.inner.layout.locate(key);
        self.inner
            .get_object(bucket, &s3_key, None)
            .await
            .map(|(data, _)| data)
            .map_err(|e| self.inner.error(Op::Get, bucket, &s3_key, e))
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        let (bucket, s3_key) = self.inner.layout.locate(key);
        if range.start >= range.end {
            // Nothing to read, but a missing object must still say so.
            return self
                .inner
                .head_object(bucket, &s3_key)
                .await
                .map(|_| Bytes::new())
                .map_err(|e| self.inner.error(Op::Head, bucket, &s3_key, e));
        }
        match self.inner.get_object(bucket, &s3_key, Some(&range)).await {
            Ok((data, true)) => Ok(data),
            // A store that ignored `Range` sent the whole object.
            Ok((data, false)) => {
                let len = data.len() as u64;
                Ok(data.slice(range.start.min(len) as usize..range.end.min(len) as usize))
            }
            Err(e) if e.last.kind == Kind::InvalidRange => Ok(Bytes::new()),
            Err(e) => Err(self.inner.error(Op::Get, bucket, &s3_key, e)),
        }
    }

    /// One shard per bucket (the job marker goes into every bucket).
    fn root_shards(&self) -> Vec<u64> {
        self.inner.layout.bucket_shards()
    }

    fn describe_prefix(&self, prefix: &str) -> Vec<String> {
        self.inner.layout.describe_prefix(prefix)
    }

    async fn delete(&self, keys: &[ObjectKey]) -> Result<()> {
        let mut by_bucket: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for key in keys {
            let (bucket, s3_key) = self.inner.layout.locate(key);
            by_bucket.entry(bucket).or_default().push(s3_key);
        }
        for (bucket, keys) in by_bucket {
            for chunk in keys.chunks(DELETE_BATCH) {
                self.inner.delete_batch(bucket, chunk).await?;
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.trim_start_matches('/');
        let inner = &self.inner;
        let cells: Vec<Cell> = inner.layout.cells().collect();
        let pages: Vec<Vec<ObjectMeta>> = futures::stream::iter(cells)
            .map(|cell| inner.list_cell(cell, prefix))
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut all: Vec<ObjectMeta> = pages.into_iter().flatten().collect();
        all.sort_by(|a, b| {
            a.key
                .path
                .cmp(&b.key.path)
                .then(a.key.shard.cmp(&b.key.shard))
        });
        Ok(all)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.trim_start_matches('/');
        let inner = &self.inner;
        let cells: Vec<Cell> = inner.layout.cells().collect();
        let counts: Vec<u64> = futures::stream::iter(cells)
            .map(|cell| async move {
                let objects = inner.list_cell(cell, prefix).await?;
                let bucket = inner.layout.bucket(cell);
                let cell_prefix = inner.layout.cell_prefix(cell);
                let keys: Vec<String> = objects
                    .iter()
                    .map(|o| format!("{cell_prefix}{}", o.key.path))
                    .collect();
                for chunk in keys.chunks(DELETE_BATCH) {
                    inner.delete_batch(bucket, chunk).await?;
                }
                Ok::<u64, Error>(keys.len() as u64)
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(counts.into_iter().sum())
    }
}

/// An upload in progress.
struct Multipart {
    upload_id: String,
    next_part: i32,
    tasks: JoinSet<Result<CompletedPart>>,
    permits: Arc<Semaphore>,
    parts: Vec<CompletedPart>,
}

/// Streaming writer: buffers up to the multipart threshold (then one
/// PutObject at `finish`); beyond it, uploads parts in the background with
/// at most `max_parts_in_flight` in flight, so memory stays within about
/// `threshold + max_parts_in_flight * part_size`.
struct S3Sink {
    inner: Arc<Inner>,
    bucket: String,
    key: String,
    buf: BytesMut,
    total: u64,
    upload: Option<Multipart>,
    closed: bool,
}

impl S3Sink {
    fn object(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Starts the multipart upload.
    async fn start_upload(&mut self) -> Result<()> {
        let upload_id = self.inner.create_multipart(&self.bucket, &self.key).await?;
        self.upload = Some(Multipart {
            upload_id,
            next_part: 1,
            tasks: JoinSet::new(),
            permits: Arc::new(Semaphore::new(self.inner.config.max_parts_in_flight)),
            parts: Vec::new(),
        });
        Ok(())
    }

    /// Uploads `data` as the next part once a slot is free.
    async fn spawn_part(&mut self, data: Bytes) -> Result<()> {
        let object = self.object();
        let Some(mp) = self.upload.as_mut() else {
            return Err(Error::Protocol(format!("no multipart upload for {object}")));
        };
        let permit = Arc::clone(&mp.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Protocol(format!("upload slots of {object} closed")))?;
        // Surface failures of finished parts early.
        while let Some(res) = mp.tasks.try_join_next() {
            mp.parts.push(joined(res, &object)?);
        }
        let part_number = mp.next_part;
        mp.next_part += 1;
        let inner = Arc::clone(&self.inner);
        let bucket = self.bucket.clone();
        let key = self.key.clone();
        let upload_id = mp.upload_id.clone();
        mp.tasks.spawn(async move {
            let _permit = permit;
            inner
                .upload_part(&bucket, &key, &upload_id, part_number, data)
                .await
        });
        Ok(())
    }

    async fn write_inner(&mut self, data: Bytes) -> Result<()> {
        let cfg = &self.inner.config;
        self.total += data.len() as u64;
        if self.total > cfg.max_object_size() {
            return Err(Error::Backend {
                store: "s3",
                message: format!(
                    "{} would exceed {} bytes, the most 10,000 parts of s3.part_size={} can hold; \
                     raise s3.part_size",
                    self.object(),
                    cfg.max_object_size(),
                    cfg.part_size
                ),
                source: None,
            });
        }
        self.buf.extend_from_slice(&data);
        if self.upload.is_none() && self.buf.len() as u64 > cfg.multipart_threshold {
            self.start_upload().await?;
        }
        if self.upload.is_some() {
            let part_size = self.inner.config.part_size as usize;
            while self.buf.len() >= part_size {
                let part = self.buf.split_to(part_size).freeze();
                self.spawn_part(part).await?;
            }
        }
        Ok(())
    }

    async fn finish_inner(&mut self) -> Result<u64> {
        if self.upload.is_none() {
            let data = std::mem::take(&mut self.buf).freeze();
            self.inner
                .put_object(&self.bucket, &self.key, data, false)
                .await
                .map_err(|e| self.inner.error(Op::Put, &self.bucket, &self.key, e))?;
            return Ok(self.total);
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf).freeze();
            self.spawn_part(last).await?;
        }
        let object = self.object();
        let Some(mp) = self.upload.as_mut() else {
            return Err(Error::Protocol(format!("no multipart upload for {object}")));
        };
        while let Some(res) = mp.tasks.join_next().await {
            mp.parts.push(joined(res, &object)?);
        }
        let mut parts = std::mem::take(&mut mp.parts);
        parts.sort_by_key(|p| p.part_number());
        let upload_id = mp.upload_id.clone();
        self.inner
            .complete_multipart(&self.bucket, &self.key, &upload_id, parts, self.total)
            .await?;
        self.upload = None;
        Ok(self.total)
    }

    /// Stops part uploads and aborts the multipart upload, if any.
    async fn abort_inner(&mut self) -> Result<()> {
        self.buf = BytesMut::new();
        if let Some(mut mp) = self.upload.take() {
            mp.tasks.abort_all();
            while mp.tasks.join_next().await.is_some() {}
            self.inner
                .abort_multipart(&self.bucket, &self.key, &mp.upload_id)
                .await?;
        }
        Ok(())
    }

    /// Aborts after a failure; the original error wins.
    async fn fail(&mut self, err: Error) -> Error {
        self.closed = true;
        if let Err(abort_err) = self.abort_inner().await {
            tracing::warn!(object = %self.object(), error = %abort_err, "could not abort multipart upload after a failure");
        }
        err
    }
}

fn joined(
    res: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>,
    object: &str,
) -> Result<CompletedPart> {
    match res {
        Ok(r) => r,
        Err(e) => Err(Error::Backend {
            store: "s3",
            message: format!("a part upload of {object} did not finish: {e}"),
            source: Some(Box::new(e)),
        }),
    }
}

#[async_trait]
impl ObjectSink for S3Sink {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.closed {
            return Err(Error::Protocol(format!(
                "write to {} after it failed or was closed",
                self.object()
            )));
        }
        match self.write_inner(data).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.closed {
            return Err(Error::Protocol(format!(
                "finish of {} after it failed or was closed",
                self.object()
            )));
        }
        self.closed = true;
        match self.finish_inner().await {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.closed = true;
        self.abort_inner().await
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        let Some(mut mp) = self.upload.take() else {
            return;
        };
        mp.tasks.abort_all();
        // Best effort: an abandoned upload must not linger (and cost storage).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            let bucket = std::mem::take(&mut self.bucket);
            let key = std::mem::take(&mut self.key);
            handle.spawn(async move {
                while mp.tasks.join_next().await.is_some() {}
                if let Err(e) = inner.abort_multipart(&bucket, &key, &mp.upload_id).await {
                    tracing::warn!(bucket, key, error = %e, "could not abort an abandoned multipart upload");
                }
            });
        }
    }
}
