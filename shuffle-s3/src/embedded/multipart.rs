//! Multipart uploads of plain objects (see [`super::objects`]).
//!
//! `s3s-fs` writes each part with an MD5, then at completion reads every
//! part back through 64 KiB async reads, hashes it again and copies it into
//! the object. Here the parts of an upload go into one file at the root,
//! part `n` at offset `(n - 1) * stride`, where the stride is the declared
//! length of the first part to arrive (at least 5 MiB). Clients cut every
//! part but the last to one size, so the parts of a completed upload
//! usually lie end to end: completion cuts the file after the last listed
//! part and renames it onto the key, and no byte is copied. (The copy it
//! replaces was a twentieth of all CPU of q80 at SF10 with shuffle on the
//! embedded server; real S3 does that work on its own machines.)
//!
//! A part that does not fit the scheme is a file of its own, written as a
//! plain object is: one under 5 MiB that arrives before the stride is
//! known, one longer than the stride, one without a declared length, a
//! second upload of a part number (a retry, or new bytes: S3 keeps the last
//! upload, and rewriting the range in place could tear the first one's
//! bytes), and one that arrives while the upload completes. A completion
//! whose listed parts are not all in place end to end, or that meets an
//! in-place write still running (which would write into the published
//! object), builds the object in a new file, copying each part with
//! `std::io::copy` (on Linux `copy_file_range`: the bytes stay in the
//! kernel); a lone part in a file of its own is renamed. A completion that
//! fails leaves every part as it was, so the client may complete again.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Response, S3Result};

use super::objects::{
    blocking, create_new, create_parents, etag_of, publish, read_start, write_body, write_into,
    TempNames, TEMP_PREFIX,
};

/// Prefix of the upload ids this module serves.
pub(crate) const ID_PREFIX: &str = "shovel-";
/// How the names of part files at the root begin.
const PART_PREFIX: &str = ".shovel-part.";
/// Smallest part but the last, as S3 enforces.
const MIN_PART: u64 = 5 << 20;
const MAX_PART_NUMBER: i32 = 10_000;
/// S3's largest object: no part of a valid upload ends beyond it.
const MAX_OBJECT: u64 = 5 << 40;

/// Where a part's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// In the upload's data file, from this offset.
    At(u64),
    /// A file of its own.
    File(PathBuf),
}

/// One uploaded part.
#[derive(Debug, Clone)]
struct PartFile {
    place: Place,
    size: u64,
    etag: String,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    /// The file in-place parts are written into.
    data: PathBuf,
    /// Offset step between in-place parts, once the first part set it.
    stride: Option<u64>,
    /// Part numbers whose range of `data` a write has claimed (at most once).
    claimed: BTreeSet<i32>,
    /// In-place writes under way.
    writing: usize,
    /// A completion that renames `data` is under way: no write starts in place.
    completing: bool,
    parts: BTreeMap<i32, PartFile>,
}

impl Upload {
    /// Claims part `n`'s range of the data file for a body of `len` bytes
    /// (see the module doc); its offset, or `None` for a file of its own.
    fn claim(&mut self, n: i32, len: Option<u64>) -> Option<u64> {
        let len = len?;
        if self.completing || self.claimed.contains(&n) {
            return None;
        }
        let stride = match self.stride {
            Some(s) if len <= s => s,
            Some(_) => return None,
            None if len >= MIN_PART => len,
            None => return None,
        };
        let offset = (n as u64 - 1).checked_mul(stride)?;
        if offset.checked_add(len)? > MAX_OBJECT {
            return None;
        }
        self.stride = Some(stride);
        self.claimed.insert(n);
        self.writing += 1;
        Some(offset)
    }

    /// Whether `listed` are every part there is, in place end to end from
    /// offset 0: then the data file, cut after the last, is the object.
    fn end_to_end(&self, listed: &[PartFile]) -> bool {
        let Some(stride) = self.stride else {
            return false;
        };
        let Some((last, head)) = listed.split_last() else {
            return false;
        };
        self.writing == 0
            && self.parts.len() == listed.len()
            && head.iter().all(|p| p.size == stride)
            && last.size <= stride
            && listed
                .iter()
                .enumerate()
                .all(|(i, p)| p.place == Place::At(i as u64 * stride))
    }
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

/// An in-place write of upload `id`: counted in [`Upload::writing`] until
/// dropped (also when its request is cut off).
struct Writing<'a> {
    uploads: &'a Uploads,
    id: &'a str,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(u) = lock(&self.uploads.uploads).get_mut(self.id) {
            u.writing -= 1;
        }
    }
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

    /// Starts an upload of `bucket/key`: its id, and its (empty) data file.
    pub(crate) async fn create(&self, bucket: &str, key: &str) -> S3Result<String> {
        // 26 characters of 36: about 134 bits, not guessable.
        let id = format!("{ID_PREFIX}{}", super::random_token(26));
        let data = self.root.join(format!("{PART_PREFIX}{id}"));
        let bucket_dir = self.root.join(bucket);
        let path = data.clone();
        let exists = blocking("starting a multipart upload", move || {
            if !bucket_dir.is_dir() {
                return Ok(false);
            }
            create_new(&path).map(|_| true)
        })
        .await?;
        if !exists {
            return Err(s3_error!(NoSuchBucket));
        }
        lock(&self.uploads).insert(
            id.clone(),
            Upload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                data,
                stride: None,
                claimed: BTreeSet::new(),
                writing: 0,
                completing: false,
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
            content_length,
            ..
        } = input;
        let mut body = body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let refused = if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ))
        } else {
            self.check(&upload_id, &bucket, &key)
        };
        if let Err(e) = refused {
            // Answered only once the body is in: a client still sending it
            // would otherwise lose the connection instead of reading the error.
            while let Some(Ok(_)) = body.next().await {}
            return Err(e);
        }
        let body = read_start(body).await?;
        let declared = content_length.and_then(|l| u64::try_from(l).ok());
        let claimed = lock(&self.uploads)
            .get_mut(&upload_id)
            .and_then(|u| Some((u.claim(part_number, declared)?, u.data.clone())));
        let (place, size, etag) = match claimed {
            Some((offset, data)) => {
                let _writing = Writing {
                    uploads: self,
                    id: &upload_id,
                };
                // Never created here: once the upload is gone, so is its file.
                let file = blocking("opening an upload's data file", move || {
                    let mut f = std::fs::OpenOptions::new().write(true).open(&data)?;
                    f.seek(SeekFrom::Start(offset))?;
                    Ok(f)
                })
                .await?;
                let size = write_into(file, body).await?;
                if Some(size) != declared {
                    return Err(s3_error!(
                        IncompleteBody,
                        "the body had {size} bytes, not its Content-Length"
                    ));
                }
                // Unique per upload of a part, as an MD5 would be per content.
                let etag = format!("{size:x}-{}", super::random_token(16).to_lowercase());
                (Place::At(offset), size, etag)
            }
            None => {
                let tmp = self.names.next(&self.root);
                let size = write_body(tmp.clone(), body).await?;
                let path = self
                    .root
                    .join(format!("{PART_PREFIX}{upload_id}.{part_number}"));
                let dest = path.clone();
                let root = self.root.clone();
                let meta = blocking("storing a part", move || publish(&tmp, &dest, &root)).await?;
                (Place::File(path), size, etag_of(&meta))
            }
        };
        {
            let mut uploads = lock(&self.uploads);
            let Some(u) = uploads.get_mut(&upload_id) else {
                // Aborted or completed meanwhile: the part goes too.
                drop(uploads);
                if let Place::File(path) = place {
                    let _ = std::fs::remove_file(path);
                }
                return Err(s3_error!(NoSuchUpload));
            };
            // A part uploaded again (a retry) replaces the earlier one; its
            // own file goes unless the new one was renamed onto it.
            let replaced = u.parts.insert(
                part_number,
                PartFile {
                    place: place.clone(),
                    size,
                    etag: etag.clone(),
                },
            );
            drop(uploads);
            if let Some(PartFile {
                place: Place::File(old),
                ..
            }) = replaced
            {
                if place != Place::File(old.clone()) {
                    let _ = std::fs::remove_file(old);
                }
            }
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
        let (files, data) = {
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
            (files, upload.data.clone())
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
        // Decided under the lock that stops new in-place writes.
        let in_place = {
            let mut uploads = lock(&self.uploads);
            let upload = uploads
                .get_mut(&upload_id)
                .ok_or_else(|| s3_error!(NoSuchUpload))?;
            let whole = upload.end_to_end(&files);
            upload.completing = whole;
            whole
        };
        let bucket_dir = self.root.join(&bucket);
        let n = files.len();
        let result = if in_place {
            let total = files.iter().map(|f| f.size).sum();
            blocking("completing a multipart upload", move || {
                rename_cut(&data, total, &dest, &bucket_dir)
            })
            .await
        } else {
            let tmp = self.names.next(&self.root);
            blocking("completing a multipart upload", move || {
                assemble(&files, &data, &tmp, &dest, &bucket_dir)
            })
            .await
        };
        let meta = match result {
            Ok(meta) => meta,
            Err(e) => {
                if let Some(u) = lock(&self.uploads).get_mut(&upload_id) {
                    u.completing = false;
                }
                return Err(e);
            }
        };
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

    /// Forgets upload `id` and removes its files (the data file is gone
    /// already when a completion renamed it).
    async fn drop_upload(&self, id: &str) {
        let Some(upload) = lock(&self.uploads).remove(id) else {
            return;
        };
        let mut paths: Vec<PathBuf> = upload
            .parts
            .into_values()
            .filter_map(|p| match p.place {
                Place::File(path) => Some(path),
                Place::At(_) => None,
            })
            .collect();
        if !upload.completing {
            paths.push(upload.data);
        }
        let _ = tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        })
        .await;
    }
}

/// Cuts the data file after `len` bytes and renames it onto `dest`. Only
/// bytes of no listed part are cut, so on failure the parts still hold.
fn rename_cut(
    data: &Path,
    len: u64,
    dest: &Path,
    bucket_dir: &Path,
) -> std::io::Result<std::fs::Metadata> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(data)?
        .set_len(len)?;
    create_parents(bucket_dir, dest)?;
    std::fs::rename(data, dest)?;
    std::fs::metadata(dest)
}

/// Builds the object from `parts` in order: a lone part in a file of its
/// own is renamed, anything else is copied into `tmp`, then published.
/// Each own file is checked against its ETag first: one replaced since it
/// was listed must never lend its bytes to the object.
fn assemble(
    parts: &[PartFile],
    data: &Path,
    tmp: &Path,
    dest: &Path,
    bucket_dir: &Path,
) -> std::io::Result<std::fs::Metadata> {
    let open_checked = |path: &Path, part: &PartFile| {
        let f = std::fs::File::open(path)?;
        if etag_of(&f.metadata()?) != part.etag {
            return Err(std::io::Error::other(format!(
                "part file {} changed during completion",
                path.display()
            )));
        }
        Ok(f)
    };
    if let [part @ PartFile {
        place: Place::File(path),
        ..
    }] = parts
    {
        drop(open_checked(path, part)?);
        create_parents(bucket_dir, dest)?;
        std::fs::rename(path, dest)?;
        return std::fs::metadata(dest);
    }
    let copied = (|| {
        let mut out = create_new(tmp)?;
        for part in parts {
            let mut src = match &part.place {
                Place::At(offset) => {
                    let mut f = std::fs::File::open(data)?;
                    f.seek(SeekFrom::Start(*offset))?;
                    f
                }
                Place::File(path) => open_checked(path, part)?,
            };
            let n = std::io::copy(&mut (&mut src).take(part.size), &mut out)?;
            if n != part.size {
                return Err(std::io::Error::other(format!(
                    "a part of {} bytes had {n} at completion",
                    part.size
                )));
            }
        }
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    publish(tmp, dest, bucket_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = MIN_PART;

    fn upload() -> Upload {
        Upload {
            bucket: "b".into(),
            key: "k".into(),
            data: PathBuf::from("/nonexistent"),
            stride: None,
            claimed: BTreeSet::new(),
            writing: 0,
            completing: false,
            parts: BTreeMap::new(),
        }
    }

    fn done(u: &mut Upload, n: i32, place: Place, size: u64) -> PartFile {
        let p = PartFile {
            place,
            size,
            etag: format!("e{n}"),
        };
        u.parts.insert(n, p.clone());
        p
    }

    #[test]
    fn the_first_part_of_5mib_or_more_sets_the_stride_and_misfits_get_files() {
        let mut u = upload();
        assert_eq!(
            u.claim(3, Some(100)),
            None,
            "a small part before the stride"
        );
        assert_eq!(u.claim(2, None), None, "no declared length");
        assert_eq!(u.stride, None);
        assert_eq!(u.claim(2, Some(S + 1)), Some(S + 1));
        assert_eq!(u.stride, Some(S + 1));
        assert_eq!(u.claim(1, Some(S + 1)), Some(0));
        assert_eq!(u.claim(4, Some(7)), Some(3 * (S + 1)), "a short last part");
        assert_eq!(u.claim(5, Some(S + 2)), None, "longer than the stride");
        assert_eq!(u.claim(1, Some(S + 1)), None, "a number claimed before");
        assert_eq!(u.writing, 3);
        u.completing = true;
        assert_eq!(u.claim(6, Some(S)), None, "while completing");
        let mut far = upload();
        far.stride = Some(5 << 30);
        assert_eq!(far.claim(10_000, Some(5 << 30)), None, "beyond 5 TiB");
    }

    #[test]
    fn only_every_part_in_place_end_to_end_and_no_write_running_is_renamed() {
        let mut u = upload();
        u.stride = Some(S);
        let a = done(&mut u, 1, Place::At(0), S);
        let b = done(&mut u, 2, Place::At(S), S);
        let c = done(&mut u, 3, Place::At(2 * S), 10);
        assert!(u.end_to_end(&[a.clone(), b.clone(), c.clone()]));
        assert!(!u.end_to_end(&[a.clone(), c.clone()]), "a gap");
        assert!(!u.end_to_end(&[b.clone(), c.clone()]), "not from 0");
        u.writing = 1;
        assert!(
            !u.end_to_end(&[a.clone(), b.clone(), c.clone()]),
            "a write runs"
        );
        u.writing = 0;
        let own = done(&mut u, 2, Place::File("/p".into()), S);
        assert!(!u.end_to_end(&[a.clone(), own, c.clone()]), "an own file");
        let mut v = upload();
        v.stride = Some(S);
        let a = done(&mut v, 1, Place::At(0), S);
        let short = done(&mut v, 2, Place::At(S), S - 1);
        let c = done(&mut v, 3, Place::At(2 * S), 10);
        assert!(
            !v.end_to_end(&[a, short, c]),
            "a short part before the last"
        );
    }
}
