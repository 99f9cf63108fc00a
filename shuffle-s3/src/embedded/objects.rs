//! Plain objects as plain files: how the embedded server writes the objects
//! Shovel writes.
//!
//! `s3s-fs` writes an object through tokio's file API (8 KiB buffered
//! writes, each a hop to the blocking pool), hashes it with MD5 for its
//! ETag, and writes two JSON side files (attributes and checksums) next to
//! it: three new inodes and an MD5 per object. On the bench's two cores
//! that was a third of all CPU with shuffle on S3, work real S3 does on its
//! own machines. A *plain* write (no user metadata, content headers,
//! checksums, `Content-MD5` or `If-Match`: nothing a side file would hold)
//! is one file here instead:
//!
//! - the body goes to a temporary file at the root in a few large writes,
//!   which is renamed onto the key (readers never see a partial object);
//!   a body under 1 MiB (most map outputs) is written, checked (bucket,
//!   `If-None-Match`) and renamed in one trip to the blocking pool
//!   ([`read_start`]);
//! - no side files, so `s3s-fs` reads such an object as one written
//!   without attributes;
//! - the ETag is a token of the file's length, modification time and inode
//!   ([`etag_of`]), which HEAD answers the same way ([`plain_head`]). S3
//!   ETags are opaque to clients (multipart ones are not an MD5 either);
//!   this one changes whenever the object is rewritten.
//!
//! Anything else still goes through `s3s-fs` unchanged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Result};

/// The content type of every plain object: what the AWS SDKs send when
/// the caller sets none, and what HEAD reports for such an object.
pub(crate) const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Body bytes gathered before one blocking write.
const WRITE_CHUNK: usize = 1 << 20;

/// How the names of temporary files at the root begin.
pub(crate) const TEMP_PREFIX: &str = ".shovel-tmp.";

/// Names of temporary files at the root (never a bucket: buckets are
/// directories, and `.` starts no bucket name). Every instance has a
/// random token of its own, so two of them (the object writer and the
/// multipart uploads) never hand out the same name, and files are created
/// with `O_EXCL`: a clash would fail loudly rather than mix two objects.
pub(crate) struct TempNames {
    token: String,
    next: AtomicU64,
}

impl TempNames {
    pub(crate) fn new() -> Self {
        Self {
            token: super::random_token(12),
            next: AtomicU64::new(0),
        }
    }

    /// A fresh temporary path under `root`.
    pub(crate) fn next(&self, root: &Path) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        root.join(format!("{TEMP_PREFIX}{}.{n}", self.token))
    }
}

/// Creates `path`, which must not exist.
pub(crate) fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The side files `s3s-fs` keeps at the root for `bucket/key`.
pub(crate) fn side_files(root: &Path, bucket: &str, key: &str) -> [PathBuf; 2] {
    let encode = |s: &str| base64_simd::URL_SAFE_NO_PAD.encode_to_string(s);
    let stem = format!(".bucket-{}.object-{}", encode(bucket), encode(key));
    [
        root.join(format!("{stem}.metadata.json")),
        root.join(format!("{stem}.internal.json")),
    ]
}

/// The ETag of a plainly written file: its length, modification time and
/// inode, in hex (see the module docs).
pub(crate) fn etag_of(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{:x}-{:x}{:09x}-{:x}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    )
}

/// True when a write (`PutObjectInput`, `CreateMultipartUploadInput`)
/// carries no attribute a side file would keep: no metadata, no content
/// headers but the SDKs' default type, no SSE-C, the standard class. One
/// list for both, so the two write paths agree on what is plain.
macro_rules! no_attributes {
    ($input:expr) => {{
        let i = $input;
        i.metadata.as_ref().is_none_or(|m| m.is_empty())
            && i.cache_control.is_none()
            && i.content_disposition.is_none()
            && i.content_encoding.is_none()
            && i.content_language.is_none()
            && i.content_type
                .as_deref()
                .is_none_or(|t| t == $crate::embedded::objects::DEFAULT_CONTENT_TYPE)
            && i.expires.is_none()
            && i.website_redirect_location.is_none()
            && i.sse_customer_algorithm.is_none()
            && i.storage_class
                .as_ref()
                .is_none_or(|c| c.as_str() == "STANDARD")
    }};
}
pub(crate) use no_attributes;

/// True when a read (`GetObjectInput`, `HeadObjectInput`) asks for the
/// current object as it is: no part, version, condition, checksum mode,
/// SSE-C or response header override.
macro_rules! no_read_options {
    ($input:expr) => {{
        let i = $input;
        i.part_number.is_none()
            && i.version_id.is_none()
            && i.if_match.is_none()
            && i.if_none_match.is_none()
            && i.if_modified_since.is_none()
            && i.if_unmodified_since.is_none()
            && i.sse_customer_algorithm.is_none()
            && i.checksum_mode.is_none()
            && i.response_cache_control.is_none()
            && i.response_content_disposition.is_none()
            && i.response_content_encoding.is_none()
            && i.response_content_language.is_none()
            && i.response_content_type.is_none()
            && i.response_expires.is_none()
    }};
}
pub(crate) use no_read_options;

/// Whether a PutObject holds nothing a side file would keep and nothing
/// `s3s-fs` would check beyond `If-None-Match: *`.
pub(crate) fn is_plain_put(input: &PutObjectInput) -> bool {
    no_attributes!(input)
        && input.content_md5.is_none()
        && input.checksum_algorithm.is_none()
        && input.checksum_crc32.is_none()
        && input.checksum_crc32c.is_none()
        && input.checksum_crc64nvme.is_none()
        && input.checksum_sha1.is_none()
        && input.checksum_sha256.is_none()
        && input.if_match.is_none()
        && input.if_none_match.as_ref().is_none_or(|c| c.is_any())
        && input.write_offset_bytes.is_none()
}

/// Whether a HeadObject asks only for the object's length, time and ETag.
pub(crate) fn is_plain_head(input: &HeadObjectInput) -> bool {
    no_read_options!(input) && input.range.is_none()
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| s3_error!(e, InternalError, "{what}: task failed"))?
        .map_err(|e| s3_error!(e, InternalError, "{what}"))
}

/// A request body as far as [`read_start`] read it.
pub(crate) enum Body {
    /// The whole body: it ended before [`WRITE_CHUNK`] bytes.
    Small(Vec<Bytes>),
    /// At least [`WRITE_CHUNK`] bytes, and the rest of the stream.
    Large(Vec<Bytes>, StreamingBlob),
}

/// Reads `body` until it ends or [`WRITE_CHUNK`] bytes have arrived. A
/// small object (most map outputs) is then stored in one trip to the
/// blocking pool ([`write_file`] and [`publish`] together) instead of one
/// per step.
pub(crate) async fn read_start(mut body: StreamingBlob) -> S3Result<Body> {
    let mut chunks = Vec::new();
    let mut len = 0;
    while len < WRITE_CHUNK {
        match body.next().await {
            Some(Ok(c)) => {
                len += c.len();
                chunks.push(c);
            }
            Some(Err(e)) => return Err(s3_error!(IncompleteBody, "reading the body: {e}")),
            None => return Ok(Body::Small(chunks)),
        }
    }
    Ok(Body::Large(chunks, body))
}

/// Writes `chunks` in order at `file`'s position; returns their length.
fn put_chunks(file: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<u64> {
    for c in chunks {
        file.write_all(c)?;
    }
    Ok(chunks.iter().map(|c| c.len() as u64).sum())
}

/// Writes `chunks` to a new file at `tmp`; returns its length. The file
/// is removed on failure.
pub(crate) fn write_file(tmp: &Path, chunks: &[Bytes]) -> std::io::Result<u64> {
    let written = create_new(tmp).and_then(|mut file| put_chunks(&mut file, chunks));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// Writes `body` to a new file at `tmp` in writes of about
/// [`WRITE_CHUNK`]; returns its length. The file is removed on failure.
pub(crate) async fn write_body(tmp: PathBuf, body: Body) -> S3Result<u64> {
    let (head, rest) = match body {
        Body::Small(chunks) => {
            return blocking("writing an object", move || write_file(&tmp, &chunks)).await
        }
        Body::Large(head, rest) => (head, rest),
    };
    let path = tmp.clone();
    let file = blocking("creating a temporary object file", move || {
        create_new(&path)
    })
    .await?;
    let result = write_chunks(file, head, rest).await;
    if result.is_err() {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(tmp)).await;
    }
    result
}

/// Writes `body` into `file` from its current position, in writes of
/// about [`WRITE_CHUNK`]; returns the bytes written.
pub(crate) async fn write_into(file: std::fs::File, body: Body) -> S3Result<u64> {
    match body {
        Body::Small(chunks) => {
            blocking("writing an object", move || {
                let mut file = file;
                put_chunks(&mut file, &chunks)
            })
            .await
        }
        Body::Large(head, rest) => write_chunks(file, head, rest).await,
    }
}

async fn write_chunks(
    mut file: std::fs::File,
    mut pending: Vec<Bytes>,
    mut body: StreamingBlob,
) -> S3Result<u64> {
    let mut pending_len: usize = pending.iter().map(Bytes::len).sum();
    let mut total = pending_len as u64;
    loop {
        let chunk = match body.next().await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return Err(s3_error!(IncompleteBody, "reading the body: {e}")),
            None => None,
        };
        let done = chunk.is_none();
        if let Some(c) = chunk {
            pending_len += c.len();
            total += c.len() as u64;
            pending.push(c);
        }
        if pending_len >= WRITE_CHUNK || (done && pending_len > 0) {
            let chunks = std::mem::take(&mut pending);
            pending_len = 0;
            file = blocking("writing an object", move || {
                put_chunks(&mut file, &chunks)?;
                Ok(file)
            })
            .await?;
        }
        if done {
            return Ok(total);
        }
    }
}

/// Moves the written `tmp` onto `dest` (creating its directories below
/// `base`) and returns the new object's metadata; removes `tmp` on failure.
pub(crate) fn publish(tmp: &Path, dest: &Path, base: &Path) -> std::io::Result<std::fs::Metadata> {
    let moved = create_parents(base, dest).and_then(|()| std::fs::rename(tmp, dest));
    if let Err(e) = moved {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::metadata(dest)
}

/// Creates the directories between `base` (the bucket's, or the root)
/// and `dest`, never `base` or anything above it. A write that a stopped
/// server cut off can finish on a blocking thread after the server's
/// directory was removed; `create_dir_all` would then bring the whole tree
/// back, empty, where the removal had already looked.
pub(crate) fn create_parents(base: &Path, dest: &Path) -> std::io::Result<()> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(()); // the common case: one `stat`, nothing to create
    }
    let below = parent.strip_prefix(base).map_err(|_| {
        std::io::Error::other(format!(
            "{} is not under {}",
            dest.display(),
            base.display()
        ))
    })?;
    let mut dir = base.to_path_buf();
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is gone", dir.display()),
        ));
    }
    for part in below.components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// HEAD of a plainly written object: `None` when `s3s-fs` must answer
/// (the object has side files, so attributes or an MD5 ETag to report).
pub(crate) fn plain_head(
    root: &Path,
    bucket: &str,
    key: &str,
    path: &Path,
) -> S3Result<Option<HeadObjectOutput>> {
    if !root.join(bucket).is_dir() {
        return Err(s3_error!(NoSuchBucket));
    }
    if side_files(root, bucket, key).iter().any(|p| p.exists()) {
        return Ok(None);
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(s3_error!(NoSuchKey)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(s3_error!(NoSuchKey)),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(s3_error!(NoSuchKey))
        }
        Err(e) => return Err(s3_error!(e, InternalError, "reading the object's metadata")),
    };
    Ok(Some(HeadObjectOutput {
        content_length: Some(meta.len() as i64),
        content_type: Some(DEFAULT_CONTENT_TYPE.to_string()),
        e_tag: Some(ETag::Strong(etag_of(&meta))),
        last_modified: meta.modified().ok().map(Timestamp::from),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers (plain objects, multipart parts) with names of their own:
    /// the same counter value never names the same file.
    #[test]
    fn temp_names_of_two_writers_never_clash() {
        let root = Path::new("/r");
        let (a, b) = (TempNames::new(), TempNames::new());
        let names: std::collections::HashSet<PathBuf> = (0..100)
            .flat_map(|_| [a.next(root), b.next(root)])
            .collect();
        assert_eq!(names.len(), 200);
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("x");
        create_new(&p).expect("first");
        assert!(create_new(&p).is_err(), "a second create must fail");
    }

    /// A publish that finishes after the server's directory was removed
    /// fails and leaves nothing; one under a live bucket makes the key's
    /// directories.
    #[test]
    fn publish_makes_directories_below_the_bucket_only() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("server");
        let bucket = root.join("b");
        std::fs::create_dir_all(&bucket).expect("bucket");
        let tmp = root.join(".tmp-1");
        std::fs::write(&tmp, b"abc").expect("tmp");
        let dest = bucket.join("app/shuffle-0/map-0.data");
        let meta = publish(&tmp, &dest, &bucket).expect("publish");
        assert_eq!(meta.len(), 3);
        assert!(!tmp.exists());

        std::fs::remove_dir_all(&root).expect("remove the server's directory");
        let late = publish(&tmp, &bucket.join("app/shuffle-1/map-0.data"), &bucket);
        assert!(late.is_err(), "{late:?}");
        assert!(!root.exists(), "the removed directory came back");

        std::fs::create_dir_all(&bucket).expect("bucket again");
        let outside = create_parents(&bucket, &root.join("other/x"));
        assert!(outside.is_err(), "a path outside the bucket is refused");
    }
}
