//! The embedded server's storage: `s3s-fs`, with fast paths for what
//! Shovel does.
//!
//! - **GetObject.** `s3s-fs` streams a GET through tokio's file API in
//!   4 KiB chunks, each a round trip to the blocking pool, and reads two
//!   JSON side files per request; ranged reads of shuffle data spent most
//!   of their time there. [`EmbeddedFs`] serves a plain GET (optionally
//!   ranged) with one positioned read on the blocking pool and sends it as
//!   one chunk, with `Content-Length`, `Content-Range` and `Last-Modified`
//!   but no `ETag` or stored content headers (Shovel's clients use
//!   neither).
//! - **PutObject, HeadObject and multipart uploads** of plain objects (no
//!   attributes, checksums or `If-Match`): one file per object, no MD5 and
//!   no side files ([`super::objects`], [`super::multipart`]).
//!
//! Anything it would not answer exactly as `s3s-fs` does (directory keys,
//! versions, parts, conditional, checksum or SSE-C requests, response
//! header overrides, attributes, keys that are not plain relative paths)
//! goes to `s3s-fs` unchanged, as does every other operation.
//!
//! It also implements [`crate::EmbeddedS3::set_ignore_if_none_match`]: with
//! the shared flag on, PutObject and CompleteMultipartUpload drop the parsed
//! `If-None-Match` condition (the header itself is signed, so it cannot be
//! removed before s3s checks the signature) and overwrite as a store that
//! ignores conditional writes does.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use super::multipart::{is_plain_create, Uploads};
use super::objects::{
    blocking, etag_of, is_plain_head, is_plain_put, plain_head, publish, read_start, side_files,
    write_body, write_file, Body, TempNames,
};

/// `s3s-fs` with GetObject served by one positioned read.
pub(crate) struct EmbeddedFs {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
    /// Drop `If-None-Match` from conditional writes (shared with the
    /// server's fault switches).
    ignore_if_none_match: Arc<AtomicBool>,
    /// Writes and deletes of one key, one at a time (striped by key hash):
    /// `s3s-fs` writes an object, then its side files, so a DELETE that ran
    /// between the two left a side file behind for good.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// Multipart uploads of plain objects (shared with the server handle,
    /// which counts them).
    uploads: Arc<Uploads>,
    temp: TempNames,
}

/// Stripes of [`EmbeddedFs::key_locks`].
const KEY_LOCKS: usize = 64;

impl EmbeddedFs {
    /// `inner` serving `root` (the same directory); `ignore_if_none_match`
    /// switches conditional writes off while it is `true`.
    pub(crate) fn new(
        inner: s3s_fs::FileSystem,
        root: PathBuf,
        ignore_if_none_match: Arc<AtomicBool>,
        uploads: Arc<Uploads>,
    ) -> Self {
        Self {
            inner,
            uploads,
            temp: TempNames::new(),
            root,
            ignore_if_none_match,
            key_locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn stripe(bucket: &str, key: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (bucket, key).hash(&mut h);
        (h.finish() % KEY_LOCKS as u64) as usize
    }

    /// Holds the stripes of `keys` of `bucket` (taken in ascending order,
    /// so two callers never wait on each other crosswise).
    async fn lock_keys<'a>(
        &self,
        bucket: &str,
        keys: impl Iterator<Item = &'a str>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.map(|k| Self::stripe(bucket, k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.key_locks[i].lock().await);
        }
        guards
    }

    fn ignores_if_none_match(&self) -> bool {
        self.ignore_if_none_match.load(Ordering::Relaxed)
    }

    /// The file of `bucket/key`, when both are plain relative names that
    /// cannot leave the root.
    fn plain_path(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        let normal = |s: &str| {
            !s.is_empty()
                && Path::new(s)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
        };
        (normal(bucket) && normal(key) && !key.ends_with('/'))
            .then(|| self.root.join(bucket).join(key))
    }

    /// Removes the JSON side files `s3s-fs` keeps at the root for each
    /// object (`.bucket-<b64>.object-<b64>.{metadata,internal}.json`) and
    /// leaves behind when the object is deleted, so a long-running server's
    /// directory does not grow with every deleted object. Best effort: a
    /// side file that is already gone, or cannot be removed, changes nothing
    /// S3 clients see.
    async fn remove_side_files<'a>(&self, bucket: &str, keys: impl Iterator<Item = &'a str>) {
        let paths: Vec<PathBuf> = keys
            .filter(|k| self.plain_path(bucket, k).is_some())
            .flat_map(|k| side_files(&self.root, bucket, k))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        })
        .await;
    }

    /// Whether `input` is a GET the fast path answers as `s3s-fs` would.
    fn is_plain(input: &GetObjectInput) -> bool {
        super::objects::no_read_options!(input)
    }

    async fn fast_get(
        &self,
        path: PathBuf,
        range: Option<Range>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let read = tokio::task::spawn_blocking(move || read_range(&path, range))
            .await
            .map_err(|e| s3_error!(e, InternalError, "read task failed"))??;
        let content_range = read.ranged.then(|| {
            format!(
                "bytes {}-{}/{}",
                read.range.start,
                read.range.end.saturating_sub(1),
                read.file_len
            )
        });
        let content_length = read.bytes.len() as i64;
        let bytes = read.bytes;
        let body = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(content_length),
            content_range,
            last_modified: read.modified.map(Timestamp::from),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

/// What [`read_range`] read.
struct ReadRange {
    bytes: Bytes,
    range: std::ops::Range<u64>,
    /// A `Range` was asked for (so the answer carries `Content-Range`).
    ranged: bool,
    file_len: u64,
    modified: Option<std::time::SystemTime>,
}

/// One positioned read of `range` (the whole file without one).
fn read_range(path: &Path, range: Option<Range>) -> S3Result<ReadRange> {
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            s3_error!(e, NoSuchKey)
        }
        _ => s3_error!(e, InternalError, "opening the object"),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| s3_error!(e, InternalError, "reading the object's metadata"))?;
    if meta.is_dir() {
        return Err(s3_error!(NoSuchKey));
    }
    let file_len = meta.len();
    let ranged = range.is_some();
    let range = match range {
        Some(r) => r.check(file_len)?,
        None => 0..file_len,
    };
    let len = usize::try_from(range.end - range.start)
        .map_err(|e| s3_error!(e, InvalidRange, "range too large"))?;
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(range.start))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| s3_error!(e, InternalError, "reading the object"))?;
    Ok(ReadRange {
        bytes: Bytes::from(buf),
        range,
        ranged,
        file_len,
        modified: meta.modified().ok(),
    })
}

/// What storing a plain object came to.
enum Stored {
    NoBucket,
    /// `If-None-Match: *` found the key taken.
    Taken,
    /// The new object's metadata and length.
    Done(std::fs::Metadata, u64),
}

impl EmbeddedFs {
    /// A plain PutObject (see [`super::objects`]); the caller holds the
    /// key's lock, so `If-None-Match: *` and the rename are one step.
    async fn plain_put(
        &self,
        path: PathBuf,
        input: PutObjectInput,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let PutObjectInput {
            body,
            bucket,
            key,
            if_none_match,
            ..
        } = input;
        let body = read_start(body.ok_or_else(|| s3_error!(IncompleteBody))?).await?;
        let bucket_dir = self.root.join(&bucket);
        let conditional = if_none_match.is_some_and(|c| c.is_any());
        let sides = side_files(&self.root, &bucket, &key);
        let tmp = self.temp.next(&self.root);
        let stored = match body {
            Body::Small(chunks) => {
                blocking("storing the object", move || {
                    let size = write_file(&tmp, &chunks)?;
                    store(&tmp, size, &path, &bucket_dir, conditional, sides)
                })
                .await?
            }
            large => {
                let size = write_body(tmp.clone(), large).await?;
                blocking("storing the object", move || {
                    store(&tmp, size, &path, &bucket_dir, conditional, sides)
                })
                .await?
            }
        };
        match stored {
            Stored::NoBucket => Err(s3_error!(NoSuchBucket)),
            Stored::Taken => Err(s3_error!(PreconditionFailed, "Object already exists")),
            Stored::Done(meta, size) => Ok(S3Response::new(PutObjectOutput {
                e_tag: Some(ETag::Strong(etag_of(&meta))),
                size: Some(size as i64),
                ..Default::default()
            })),
        }
    }
}

/// Moves the written temporary file `tmp` (`size` bytes) onto `path`,
/// unless the bucket is gone or `conditional` finds the key taken (then
/// `tmp` is removed). The body is read whole before either answer, as S3
/// evaluates `If-None-Match` when the upload completes: answering early
/// would leave body bytes on the connection, which the client could not
/// reuse.
fn store(
    tmp: &Path,
    size: u64,
    path: &Path,
    bucket_dir: &Path,
    conditional: bool,
    sides: [PathBuf; 2],
) -> std::io::Result<Stored> {
    let refused = if !bucket_dir.is_dir() {
        Some(Stored::NoBucket)
    } else if conditional && path.exists() {
        Some(Stored::Taken)
    } else {
        None
    };
    if let Some(r) = refused {
        let _ = std::fs::remove_file(tmp);
        return Ok(r);
    }
    // Side files of an earlier write with attributes would describe this
    // object wrongly.
    for s in sides {
        let _ = std::fs::remove_file(s);
    }
    publish(tmp, path, bucket_dir).map(|meta| Stored::Done(meta, size))
}

#[async_trait::async_trait]
impl S3 for EmbeddedFs {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let path = if Self::is_plain(&req.input) {
            self.plain_path(&req.input.bucket, &req.input.key)
        } else {
            None
        };
        match path {
            Some(path) => self.fast_get(path, req.input.range).await,
            None => self.inner.get_object(req).await,
        }
    }

    // Everything else: s3s-fs as it is.

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = &req.input;
        if Uploads::is_ours(&i.upload_id) {
            self.uploads.abort(&i.upload_id, &i.bucket, &i.key).await?;
            return Ok(S3Response::new(AbortMultipartUploadOutput::default()));
        }
        self.inner.abort_multipart_upload(req).await
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        if self.ignores_if_none_match() {
            req.input.if_none_match = None;
        }
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let _held = self.lock_keys(&bucket, std::iter::once(key.as_str())).await;
        if Uploads::is_ours(&req.input.upload_id) {
            if req.input.if_match.is_some() {
                return Err(s3_error!(
                    NotImplemented,
                    "If-Match on completing an upload of a plain object"
                ));
            }
            let dest = self
                .plain_path(&bucket, &key)
                .ok_or_else(|| s3_error!(NoSuchUpload))?;
            return self.uploads.complete(req.input, dest).await;
        }
        self.inner.complete_multipart_upload(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.inner.copy_object(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (bucket, key) = (&req.input.bucket, &req.input.key);
        if self.plain_path(bucket, key).is_some() && is_plain_create(&req.input) {
            let id = self.uploads.create(bucket, key).await?;
            return Ok(S3Response::new(CreateMultipartUploadOutput {
                bucket: Some(bucket.clone()),
                key: Some(key.clone()),
                upload_id: Some(id),
                ..Default::default()
            }));
        }
        self.inner.create_multipart_upload(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let _held = self.lock_keys(&bucket, std::iter::once(key.as_str())).await;
        let out = self.inner.delete_object(req).await?;
        self.remove_side_files(&bucket, std::iter::once(key.as_str()))
            .await;
        Ok(out)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let keys: Vec<String> = req
            .input
            .delete
            .objects
            .iter()
            .map(|o| o.key.clone())
            .collect();
        let _held = self
            .lock_keys(&bucket, keys.iter().map(String::as_str))
            .await;
        let out = self.inner.delete_objects(req).await?;
        self.remove_side_files(&bucket, keys.iter().map(String::as_str))
            .await;
        Ok(out)
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        if let Some(path) = self.plain_path(&bucket, &key) {
            if is_plain_head(&req.input) {
                let root = self.root.clone();
                let head =
                    tokio::task::spawn_blocking(move || plain_head(&root, &bucket, &key, &path))
                        .await
                        .map_err(|e| s3_error!(e, InternalError, "head task failed"))??;
                if let Some(out) = head {
                    return Ok(S3Response::new(out));
                }
            }
        }
        self.inner.head_object(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        if Uploads::is_ours(&req.input.upload_id) {
            return Ok(S3Response::new(self.uploads.list_parts(&req.input)?));
        }
        self.inner.list_parts(req).await
    }

    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if self.ignores_if_none_match() {
            req.input.if_none_match = None;
        }
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let _held = self.lock_keys(&bucket, std::iter::once(key.as_str())).await;
        match self.plain_path(&bucket, &key) {
            Some(path) if is_plain_put(&req.input) && req.trailing_headers.is_none() => {
                self.plain_put(path, req.input).await
            }
            _ => self.inner.put_object(req).await,
        }
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        if Uploads::is_ours(&req.input.upload_id) {
            let plain = req.input.content_md5.is_none()
                && req.input.checksum_algorithm.is_none()
                && req.input.sse_customer_algorithm.is_none()
                && req.trailing_headers.is_none();
            if !plain {
                return Err(s3_error!(
                    NotImplemented,
                    "the embedded server does not check part checksums of uploads \
                     created without a checksum algorithm"
                ));
            }
            return self.uploads.upload_part(req.input).await;
        }
        self.inner.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.inner.upload_part_copy(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_at(dir: &Path) -> EmbeddedFs {
        let inner = s3s_fs::FileSystem::new(dir).expect("s3s-fs");
        EmbeddedFs::new(
            inner,
            dir.to_path_buf(),
            Arc::default(),
            Arc::new(Uploads::new(dir.to_path_buf())),
        )
    }

    #[test]
    fn only_plain_keys_take_the_fast_path() {
        let dir = tempfile::tempdir().expect("dir");
        let fs = fs_at(dir.path());
        assert_eq!(
            fs.plain_path("b", "app/shuffle-1/map-0-0.data"),
            Some(dir.path().join("b/app/shuffle-1/map-0-0.data"))
        );
        for (bucket, key) in [
            ("b", "../escape"),
            ("b", "a/../../x"),
            ("b", "/abs"),
            ("b", "dir/"),
            ("b", ""),
            ("..", "k"),
        ] {
            assert_eq!(fs.plain_path(bucket, key), None, "{bucket}/{key}");
        }
    }

    #[test]
    fn reads_ranges_like_s3() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("obj");
        std::fs::write(&path, b"0123456789").expect("write");
        let whole = read_range(&path, None).expect("whole");
        assert_eq!(&whole.bytes[..], b"0123456789");
        assert!(!whole.ranged);
        let mid = read_range(
            &path,
            Some(Range::Int {
                first: 2,
                last: Some(4),
            }),
        )
        .expect("mid");
        assert_eq!(&mid.bytes[..], b"234");
        assert_eq!(
            (mid.range.clone(), mid.file_len, mid.ranged),
            (2..5, 10, true)
        );
        let open = read_range(
            &path,
            Some(Range::Int {
                first: 7,
                last: None,
            }),
        )
        .expect("open");
        assert_eq!(&open.bytes[..], b"789");
        let suffix = read_range(&path, Some(Range::Suffix { length: 4 })).expect("suffix");
        assert_eq!(&suffix.bytes[..], b"6789");
        // Past the end: 416, as S3 answers.
        assert!(read_range(
            &path,
            Some(Range::Int {
                first: 10,
                last: None
            })
        )
        .is_err());
        let missing = read_range(&dir.path().join("nope"), None)
            .err()
            .expect("missing object");
        assert_eq!(missing.code(), &s3s::S3ErrorCode::NoSuchKey);
    }
}
