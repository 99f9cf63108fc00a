//! The S3 requests (each through [`crate::retry`], counted, with SSE and
//! expected-owner headers) and the [`ShuffleStore`] impl built on them.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use shuffle_core::metrics::add;
use shuffle_core::store::{ObjectKey, ObjectMeta, ObjectSink, PutOutcome, ShuffleStore};
use shuffle_core::{Error, Result};

use super::sink::S3Sink;
use super::{Inner, Op, S3Store};
use crate::config::Sse;
use crate::layout::Cell;
use crate::retry::{retry, Exhausted, Failure, Kind};

/// Concurrent list requests of one `list` / `delete_prefix` call.
const LIST_CONCURRENCY: usize = 16;
/// Keys per DeleteObjects request (S3's limit).
const DELETE_BATCH: usize = 1000;

impl Inner {
    /// Runs `f`'s attempts through [`retry`], each on the store's I/O
    /// runtime (see [`super::io`]).
    pub(super) async fn run<T, F, Fut>(&self, op: Op, mut f: F) -> std::result::Result<T, Exhausted>
    where
        T: Send + 'static,
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>> + Send + 'static,
    {
        retry(
            &self.config.retry,
            self.config.request_timeout,
            &self.metrics.requests,
            op.counter(&self.metrics.requests),
            |attempt| self.io.run(f(attempt)),
        )
        .await
    }

    /// One S3 request through [`Inner::run`]: `send` builds and sends a
    /// fresh request for each attempt (a fluent builder's `.send()`), and
    /// its SDK errors are classified by [`Failure::from`].
    pub(super) async fn send<O, E, Fut>(
        &self,
        op: Op,
        mut send: impl FnMut() -> Fut,
    ) -> std::result::Result<O, Exhausted>
    where
        O: Send + 'static,
        Fut: Future<Output = std::result::Result<O, SdkError<E, HttpResponse>>> + Send + 'static,
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
    pub(super) async fn call<O, E, Fut>(
        &self,
        op: Op,
        bucket: &str,
        key: &str,
        send: impl FnMut() -> Fut,
    ) -> Result<O>
    where
        O: Send + 'static,
        Fut: Future<Output = std::result::Result<O, SdkError<E, HttpResponse>>> + Send + 'static,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.send(op, send)
            .await
            .map_err(|e| self.error(op, bucket, key, e))
    }

    pub(super) fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.config.sse {
            None => (None, None),
            Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
    }

    pub(super) fn owner(&self) -> Option<String> {
        self.config.expected_bucket_owner.clone()
    }

    /// One PutObject (optionally `If-None-Match: *`).
    pub(super) async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        if_none_match: bool,
    ) -> std::result::Result<(), Exhausted> {
        let (sse, kms) = self.sse();
        let len = data.len() as u64;
        self.send(Op::Put, || {
            let req = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_length(len as i64)
                .body(ByteStream::from(data.clone()))
                .set_server_side_encryption(sse.clone())
                .set_ssekms_key_id(kms.clone())
                .set_expected_bucket_owner(self.owner())
                .set_if_none_match(if_none_match.then(|| "*".to_string()))
                .customize();
            // `s3.sign_payload` (see S3Config::sign_payload).
            if self.config.sign_payload {
                req.send()
            } else {
                req.disable_payload_signing().send()
            }
        })
        .await?;
        add(&self.metrics.requests.bytes_uploaded, len);
        Ok(())
    }

    /// One GetObject, optionally ranged. Returns the bytes and whether the
    /// response was partial (`Content-Range` present).
    pub(super) async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<&Range<u64>>,
    ) -> std::result::Result<(Bytes, bool), Exhausted> {
        let header = range.map(|r| format!("bytes={}-{}", r.start, r.end - 1));
        self.get_object_with(bucket, key, header).await
    }

    /// One GetObject with a raw `Range` header (`bytes=-N` for a suffix).
    pub(super) async fn get_object_with(
        &self,
        bucket: &str,
        key: &str,
        header: Option<String>,
    ) -> std::result::Result<(Bytes, bool), Exhausted> {
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

    pub(super) async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> std::result::Result<u64, Exhausted> {
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

    pub(super) async fn create_multipart(&self, bucket: &str, key: &str) -> Result<String> {
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

    pub(super) async fn upload_part(
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
                let req = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .content_length(len as i64)
                    .body(ByteStream::from(data.clone()))
                    .set_expected_bucket_owner(self.owner())
                    .customize();
                if self.config.sign_payload {
                    req.send()
                } else {
                    req.disable_payload_signing().send()
                }
            })
            .await?;
        add(&self.metrics.requests.bytes_uploaded, len);
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }

    pub(super) async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        expected_len: u64,
        if_none_match: bool,
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
                    .set_if_none_match(if_none_match.then(|| "*".to_string()))
                    .send()
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if if_none_match && e.last.kind == Kind::Precondition => {
                Err(Error::AlreadyExists {
                    object: format!("s3://{bucket}/{key}"),
                })
            }
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

    pub(super) async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<()> {
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
    pub(super) async fn list_cell(&self, cell: Cell, prefix: &str) -> Result<Vec<ObjectMeta>> {
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
    pub(super) async fn delete_batch(&self, bucket: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let build_err = |e: aws_sdk_s3::error::BuildError| Error::Backend {
            store: "s3",
            message: format!("could not build a DeleteObjects request for bucket `{bucket}`: {e}"),
            source: Some(Box::new(e)),
        };
        let ids = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(build_err)?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(build_err)?;
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
        Ok(Box::new(S3Sink::new(
            Arc::clone(&self.inner),
            bucket,
            s3_key,
            false,
        )))
    }

    fn supports_conditional_create(&self) -> bool {
        self.conditional_writes()
    }

    async fn create_if_absent(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        let (bucket, s3_key) = self.locate(key);
        Ok(Box::new(S3Sink::new(
            Arc::clone(&self.inner),
            bucket,
            s3_key,
            true,
        )))
    }

    async fn get_suffix(&self, key: &ObjectKey, len: u64) -> Result<Bytes> {
        let (bucket, s3_key) = self.inner.layout.locate(key);
        if len == 0 {
            return self.get_range(key, 0..0).await;
        }
        match self
            .inner
            .get_object_with(bucket, &s3_key, Some(format!("bytes=-{len}")))
            .await
        {
            Ok((data, _)) => {
                // A store that ignored `Range` sent the whole object.
                let start = data
                    .len()
                    .saturating_sub(usize::try_from(len).unwrap_or(usize::MAX));
                Ok(data.slice(start..))
            }
            // An empty object has no suffix to satisfy.
            Err(e) if e.last.kind == Kind::InvalidRange => Ok(Bytes::new()),
            Err(e) => Err(self.inner.error(Op::Get, bucket, &s3_key, e)),
        }
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
