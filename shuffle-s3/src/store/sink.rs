//! The streaming multipart sink behind [`ShuffleStore::create`](shuffle_core::store::ShuffleStore::create).

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
use shuffle_core::store::ObjectSink;
use shuffle_core::{Error, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Inner, Op};
use crate::retry::Kind;

/// The bytes written but not yet uploaded, kept as the writer's own
/// chunks: a part or object that is one chunk (or a slice of one) is sent
/// without a copy, and one that spans chunks is copied once, into a buffer
/// of its exact size (a growing buffer would copy most bytes twice more).
#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Pending {
    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.chunks.push_back(data);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` bytes (all of them if fewer).
    fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        self.len -= n;
        if let Some(first) = self.chunks.front_mut() {
            if first.len() >= n {
                let out = first.split_to(n);
                if first.is_empty() {
                    self.chunks.pop_front();
                }
                return out;
            }
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(mut chunk) = self.chunks.pop_front() else {
                break;
            };
            let want = n - out.len();
            if chunk.len() > want {
                out.extend_from_slice(&chunk.split_to(want));
                self.chunks.push_front(chunk);
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        out.freeze()
    }

    fn take_all(&mut self) -> Bytes {
        self.take(self.len)
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
pub(super) struct S3Sink {
    inner: Arc<Inner>,
    bucket: String,
    key: String,
    buf: Pending,
    total: u64,
    upload: Option<Multipart>,
    closed: bool,
    /// Publish with `If-None-Match: *` (`create_if_absent`).
    if_none_match: bool,
}

impl S3Sink {
    /// A sink that writes `s3://bucket/key` once finished.
    /// With `if_none_match`, `finish` publishes only if no object has the
    /// key, else fails with [`Error::AlreadyExists`] (the upload aborted).
    pub(super) fn new(inner: Arc<Inner>, bucket: String, key: String, if_none_match: bool) -> Self {
        Self {
            inner,
            bucket,
            key,
            buf: Pending::default(),
            total: 0,
            upload: None,
            closed: false,
            if_none_match,
        }
    }

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
        self.buf.push(data);
        if self.upload.is_none() && self.buf.len() as u64 > cfg.multipart_threshold {
            self.start_upload().await?;
        }
        if self.upload.is_some() {
            let part_size = self.inner.config.part_size as usize;
            while self.buf.len() >= part_size {
                let part = self.buf.take(part_size);
                self.spawn_part(part).await?;
            }
        }
        Ok(())
    }

    async fn finish_inner(&mut self) -> Result<u64> {
        if self.upload.is_none() {
            let data = self.buf.take_all();
            let conditional = self.if_none_match;
            return match self
                .inner
                .put_object(&self.bucket, &self.key, data, conditional)
                .await
            {
                Ok(()) => Ok(self.total),
                Err(e) if conditional && e.last.kind == Kind::Precondition => {
                    Err(Error::AlreadyExists {
                        object: self.object(),
                    })
                }
                Err(e) => Err(self.inner.error(Op::Put, &self.bucket, &self.key, e)),
            };
        }
        if !self.buf.is_empty() {
            let last = self.buf.take_all();
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
            .complete_multipart(
                &self.bucket,
                &self.key,
                &upload_id,
                parts,
                self.total,
                self.if_none_match,
            )
            .await?;
        self.upload = None;
        Ok(self.total)
    }

    /// Stops part uploads and aborts the multipart upload, if any.
    async fn abort_inner(&mut self) -> Result<()> {
        self.buf = Pending::default();
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

#[cfg(test)]
mod tests {
    use super::Pending;
    use bytes::Bytes;

    #[test]
    fn pending_bytes_come_out_in_order_and_whole_chunks_without_a_copy() {
        let mut p = Pending::default();
        let a = Bytes::from(vec![1u8; 10]);
        p.push(a.clone());
        p.push(Bytes::new());
        p.push(Bytes::from(vec![2u8; 5]));
        p.push(Bytes::from(vec![3u8; 7]));
        assert_eq!(p.len(), 22);
        let first = p.take(4);
        assert_eq!(
            first.as_ptr(),
            a.as_ptr(),
            "a slice of one chunk is not copied"
        );
        assert_eq!(&first[..], &[1u8; 4]);
        // Across the rest of chunk 1, all of chunk 2 and part of chunk 3.
        let mid = p.take(13);
        let mut want = vec![1u8; 6];
        want.extend([2u8; 5]);
        want.extend([3u8; 2]);
        assert_eq!(&mid[..], &want[..]);
        assert_eq!(p.len(), 5);
        assert_eq!(
            &p.take(100)[..],
            &[3u8; 5],
            "asking for more gives what is left"
        );
        assert!(p.is_empty());
        assert!(p.take_all().is_empty());
    }
}
