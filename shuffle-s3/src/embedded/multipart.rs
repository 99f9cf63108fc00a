//! Multipart uploads of plain objects (see [`super::objects`]).
//!
//! `s3s-fs` writes each part with an MD5, then at completion reads every
//! part back through 64 KiB async reads, hashes it again and copies it into
//! the object. Here a part is a file at the root written as a plain object
//! is, and completion appends the other listed parts to the first listed
//! part's file with `std::io::copy` (on Linux `copy_file_range`, so the
//! bytes do not pass through user space) and renames that file onto the
//! key: the first part, most of a two-part map output, is never copied.
//! A completion that fails puts the first part back as it was (length and
//! modification time, hence its ETag), so the client may complete again.
//!
//! Upload ids this server hands out start with [`ID_PREFIX`]; every
//! multipart request with another id (an upload `s3s-fs` created, for an
//! object with attributes) goes to `s3s-fs`. The uploads in progress live
//! in memory: a restarted server no longer knows them (their part files
//! are removed when it starts), as a client would see an upload that was
//! aborted by a lifecycle rule.
//!
//! What S3 checks is checked: part numbers 1..=10,000, parts listed in
//! ascending order with the ETags their uploads returned, every part but
//! the last at least 5 MiB, and `If-None-Match: *` at completion.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use s3s::dto::*;
use s3s::{s3_error, S3Response, S3Result};

use super::objects::{
    blocking, create_parents, etag_of, publish, read_start, write_body, TempNames, TEMP_PREFIX,
};

/// Prefix of the upload ids this module serves.
pub(crate) const ID_PREFIX: &str = "shovel-";
/// How the names of part files at the root begin.
const PART_PREFIX: &str = ".shovel-part.";
/// Smallest part but the last, as S3 enforces.
const MIN_PART: u64 = 5 << 20;
const MAX_PART_NUMBER: i32 = 10_000;

/// One uploaded part.
#[derive(Debug, Clone)]
struct PartFile {
    path: PathBuf,
    size: u64,
    etag: String,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    parts: BTreeMap<i32, PartFile>,
}

/// The uploads in progress.
pub(crate) struct Uploads {
    root: PathBuf,
    uploads: Mutex<HashMap<String, Upload>>,
    names: TempNames,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a CreateMultipartUpload asks for nothing a side file would keep.
pub(crate) fn is_plain_create(input: &CreateMultipartUploadInput) -> bool {
    super::objects::no_attributes!(input)
        && input.checksum_algorithm.is_none()
        && input.checksum_type.is_none()
}

impl Uploads {
    /// Uploads under `root`; removes the part and temporary files a
    /// previous server left (names only this server gives).
    pub(crate) fn new(root: PathBuf) -> Self {
        if let Ok(dir) = std::fs::read_dir(&root) {
            for e in dir.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(PART_PREFIX) || name.starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Self {
            root,
            uploads: Mutex::new(HashMap::new()),
            names: TempNames::new(),
        }
    }

    /// Uploads in progress.
    pub(crate) fn len(&self) -> usize {
        lock(&self.uploads).len()
    }

    pub(crate) fn is_ours(upload_id: &str) -> bool {
        upload_id.starts_with(ID_PREFIX)
    }

    pub(crate) fn create(&self, bucket: &str, key: &str) -> S3Result<String> {
        if !self.root.join(bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        // 26 characters of 36: about 134 bits, not guessable.
        let id = format!("{ID_PREFIX}{}", super::random_token(26));
        lock(&self.uploads).insert(
            id.clone(),
            Upload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// The upload `id` of `bucket/key`, or S3's NoSuchUpload.
    fn check(&self, id: &str, bucket: &str, key: &str) -> S3Result<()> {
        match lock(&self.uploads).get(id) {
            Some(u) if u.bucket == bucket && u.key == key => Ok(()),
            _ => Err(s3_error!(NoSuchUpload)),
        }
    }

    pub(crate) async fn upload_part(
        &self,
        input: UploadPartInput,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let UploadPartInput {
            body,
            bucket,
            key,
            part_number,
            upload_id,
            ..
        } = input;
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        self.check(&upload_id, &bucket, &key)?;
        let body = read_start(body.ok_or_else(|| s3_error!(IncompleteBody))?).await?;
        let tmp = self.names.next(&self.root);
        let size = write_body(tmp.clone(), body).await?;
        let path = self
            .root
            .join(format!("{PART_PREFIX}{upload_id}.{part_number}"));
        let dest = path.clone();
        let root = self.root.clone();
        let meta = blocking("storing a part", move || publish(&tmp, &dest, &root)).await?;
        let etag = etag_of(&meta);
        {
            let mut uploads = lock(&self.uploads);
            let Some(u) = uploads.get_mut(&upload_id) else {
                // Aborted meanwhile: the part goes too.
                drop(uploads);
                let _ = std::fs::remove_file(&path);
                return Err(s3_error!(NoSuchUpload));
            };
            // A part uploaded again (a retry) replaced the same file.
            u.parts.insert(
                part_number,
                PartFile {
                    path,
                    size,
                    etag: etag.clone(),
                },
            );
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    /// Completes upload `id` into `dest` (the caller holds the key's lock).
    pub(crate) async fn complete(
        &self,
        input: CompleteMultipartUploadInput,
        dest: PathBuf,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let CompleteMultipartUploadInput {
            bucket,
            key,
            upload_id,
            multipart_upload,
            if_none_match,
            ..
        } = input;
        self.check(&upload_id, &bucket, &key)?;
        let listed = multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(InvalidPart, "You must specify at least one part"))?;
        let files = {
            let uploads = lock(&self.uploads);
            let upload = uploads
                .get(&upload_id)
                .ok_or_else(|| s3_error!(NoSuchUpload))?;
            let mut files = Vec::with_capacity(listed.len());
            let mut last = 0;
            for p in &listed {
                let n = p
                    .part_number
                    .ok_or_else(|| s3_error!(InvalidPart, "a listed part has no number"))?;
                if n <= last {
                    return Err(s3_error!(InvalidPartOrder));
                }
                last = n;
                let file = upload
                    .parts
                    .get(&n)
                    .ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
                if let Some(etag) = &p.e_tag {
                    if etag.value() != file.etag {
                        return Err(s3_error!(InvalidPart, "part {n}: ETag does not match"));
                    }
                }
                files.push(file.clone());
            }
            files
        };
        if let Some((_, head)) = files.split_last() {
            if let Some(small) = head.iter().find(|f| f.size < MIN_PART) {
                return Err(s3_error!(
                    EntityTooSmall,
                    "a part of {} bytes is smaller than 5 MiB and not the last",
                    small.size
                ));
            }
        }
        if if_none_match.as_ref().is_some_and(|c| c.is_any()) && dest.exists() {
            return Err(s3_error!(PreconditionFailed, "Object already exists"));
        }
        let (first, rest) = files
            .split_first()
            .ok_or_else(|| s3_error!(InvalidPart, "You must specify at least one part"))?;
        let (first, rest) = (first.clone(), rest.iter().map(|f| f.path.clone()).collect());
        let bucket_dir = self.root.join(&bucket);
        let meta = blocking("completing a multipart upload", move || {
            assemble(&first, rest, &dest, &bucket_dir)
        })
        .await?;
        let n = files.len();
        self.drop_upload(&upload_id).await;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            e_tag: Some(ETag::Strong(format!("{}-{n}", etag_of(&meta)))),
            ..Default::default()
        }))
    }

    pub(crate) async fn abort(&self, id: &str, bucket: &str, key: &str) -> S3Result<()> {
        self.check(id, bucket, key)?;
        self.drop_upload(id).await;
        Ok(())
    }

    pub(crate) fn list_parts(&self, input: &ListPartsInput) -> S3Result<ListPartsOutput> {
        self.check(&input.upload_id, &input.bucket, &input.key)?;
        let uploads = lock(&self.uploads);
        let upload = uploads
            .get(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        let after = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let mut parts: Vec<Part> = upload
            .parts
            .range(after + 1..)
            .map(|(n, f)| Part {
                part_number: Some(*n),
                size: Some(f.size as i64),
                e_tag: Some(ETag::Strong(f.etag.clone())),
                ..Default::default()
            })
            .take(max + 1)
            .collect();
        let truncated = parts.len() > max;
        parts.truncate(max);
        Ok(ListPartsOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            upload_id: Some(input.upload_id.clone()),
            is_truncated: Some(truncated),
            next_part_number_marker: parts.last().and_then(|p| p.part_number),
            max_parts: Some(max as i32),
            parts: Some(parts),
            ..Default::default()
        })
    }

    /// Forgets upload `id` and removes its part files.
    async fn drop_upload(&self, id: &str) {
        let Some(upload) = lock(&self.uploads).remove(id) else {
            return;
        };
        let paths: Vec<PathBuf> = upload.parts.into_values().map(|p| p.path).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        })
        .await;
    }
}

/// Appends `rest` to the first part's file and renames it onto `dest`. On
/// failure the first part gets its length and modification time back, so
/// its ETag (and a later completion with it) still holds.
fn assemble(
    first: &PartFile,
    rest: Vec<PathBuf>,
    dest: &Path,
    bucket_dir: &Path,
) -> std::io::Result<std::fs::Metadata> {
    use std::io::{Seek, SeekFrom};
    let mut out = std::fs::OpenOptions::new().write(true).open(&first.path)?;
    let before = out.metadata()?;
    if etag_of(&before) != first.etag {
        // Replaced since it was listed: never publish other bytes.
        return Err(std::io::Error::other(format!(
            "part file {} changed during completion",
            first.path.display()
        )));
    }
    let result = (|| {
        out.seek(SeekFrom::End(0))?;
        for p in &rest {
            let mut src = std::fs::File::open(p)?;
            std::io::copy(&mut src, &mut out)?;
        }
        create_parents(bucket_dir, dest)?;
        std::fs::rename(&first.path, dest)
    })();
    if let Err(e) = result {
        let _ = out.set_len(first.size);
        if let Ok(mtime) = before.modified() {
            let _ = out.set_modified(mtime);
        }
        return Err(e);
    }
    std::fs::metadata(dest)
}
