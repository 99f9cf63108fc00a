//! Local-file building blocks shared by the local backend and the local
//! spill store: an atomically published file sink, positioned range reads,
//! and an optional per-directory byte quota.
//!
//! Blocking file calls run on tokio's blocking pool, in batches of about
//! 1 MiB, so the async tasks that drive shuffle writers never block.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::ObjectSink;
use crate::{Error, Result};

/// Writes are handed to the OS in batches of this size.
const WRITE_BATCH: usize = 1 << 20;

/// A byte budget for one directory (the optional `local.max_bytes`).
#[derive(Debug)]
pub struct DirQuota {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
}

impl DirQuota {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            dir: dir.into(),
            max_bytes,
            used: AtomicU64::new(0),
        })
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes of the quota or fails with [`Error::StorageFull`].
    pub fn take(&self, n: u64) -> Result<()> {
        let prev = self.used.fetch_add(n, Ordering::AcqRel);
        if prev + n > self.max_bytes {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(Error::StorageFull {
                path: self.dir.clone(),
                reason: format!(
                    "the configured quota of {} bytes (local.max_bytes) is used up",
                    self.max_bytes
                ),
            });
        }
        Ok(())
    }

    pub fn give_back(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique suffix for temporary names (pid, counter, clock).
pub fn unique_suffix() -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:08x}", std::process::id())
}

/// Runs a blocking closure on the blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::Protocol(format!("blocking file task failed: {e}"))),
    }
}

/// A file written under a temporary name and renamed into place on `finish`.
///
/// The temporary file is created by the first batch of writes, not by
/// `create`, and the last batch is written by the same blocking call that
/// publishes: an object smaller than a batch (most map outputs of a small
/// stage) costs one trip to the blocking pool, not three.
#[derive(Debug)]
pub struct FileSink {
    /// The root directory, named in storage-full errors.
    root: PathBuf,
    final_path: PathBuf,
    tmp_path: PathBuf,
    /// The temporary file, once a batch has created it.
    file: Option<File>,
    /// A batch tried to create the temporary file (it may exist).
    started: bool,
    /// Pending writes, handed to the OS together once about 1 MiB is queued
    /// (kept as `Bytes` so nothing is copied on the way).
    buf: Vec<Bytes>,
    buffered: usize,
    written: u64,
    quota: Option<Arc<DirQuota>>,
    done: bool,
    /// Publish only if the final name is free (see [`FileSink::create_new`]).
    no_replace: bool,
}

impl FileSink {
    /// A sink that publishes to `final_path` (creating missing parent
    /// directories) when it finishes.
    pub async fn create(
        root: PathBuf,
        final_path: PathBuf,
        quota: Option<Arc<DirQuota>>,
    ) -> Result<Self> {
        let tmp_path = final_path.with_extension(format!("tmp-{}", unique_suffix()));
        Ok(Self {
            root,
            final_path,
            tmp_path,
            file: None,
            started: false,
            buf: Vec::new(),
            buffered: 0,
            written: 0,
            quota,
            done: false,
            no_replace: false,
        })
    }

    /// Like [`FileSink::create`], but `finish` publishes only if nothing has
    /// the final name: it hard-links the temporary file to it (the OS
    /// refuses atomically when the name exists, whoever created it) and
    /// then removes the temporary name. An existing name fails `finish`
    /// with [`Error::AlreadyExists`] and leaves nothing of this sink.
    pub async fn create_new(
        root: PathBuf,
        final_path: PathBuf,
        quota: Option<Arc<DirQuota>>,
    ) -> Result<Self> {
        let mut sink = Self::create(root, final_path, quota).await?;
        sink.no_replace = true;
        Ok(sink)
    }

    /// Takes the pending writes and their share of the quota, and what the
    /// blocking call needs to write them: the open file, or the paths to
    /// create it.
    fn take_batch(&mut self) -> Result<Batch> {
        let n = self.buffered as u64;
        if let Some(q) = &self.quota {
            q.take(n)?;
        }
        let file = self.file.take();
        if file.is_none() && self.started {
            if let Some(q) = &self.quota {
                q.give_back(n);
            }
            return Err(Error::Protocol("file sink used after an error".into()));
        }
        self.started = true;
        self.buffered = 0;
        Ok(Batch {
            file,
            bufs: std::mem::take(&mut self.buf),
            len: n,
            root: self.root.clone(),
            tmp: self.tmp_path.clone(),
        })
    }

    /// Counts a written batch, or gives its quota back if it failed.
    fn batch_done<T>(&mut self, len: u64, res: &Result<T>) {
        match res {
            Ok(_) => self.written += len,
            Err(_) => {
                if let Some(q) = &self.quota {
                    q.give_back(len);
                }
            }
        }
    }

    async fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = self.take_batch()?;
        let len = batch.len;
        let res = blocking(move || batch.write()).await;
        self.batch_done(len, &res);
        self.file = Some(res?);
        Ok(())
    }

    fn remove_tmp(&mut self) {
        self.done = true;
        self.file = None;
        if self.started {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
        if let Some(q) = &self.quota {
            q.give_back(self.written);
        }
    }
}

/// One batch of a [`FileSink`]'s writes, moved to the blocking pool.
struct Batch {
    file: Option<File>,
    bufs: Vec<Bytes>,
    len: u64,
    root: PathBuf,
    tmp: PathBuf,
}

impl Batch {
    /// Writes the batch, creating the temporary file first if no batch has.
    fn write(self) -> Result<File> {
        let (root, tmp) = (&self.root, &self.tmp);
        let mut file = match self.file {
            Some(f) => f,
            None => {
                if let Some(parent) = tmp.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| map_write_err(root, parent, e))?;
                }
                File::create(tmp).map_err(|e| map_write_err(root, tmp, e))?
            }
        };
        for b in &self.bufs {
            file.write_all(b).map_err(|e| map_write_err(root, tmp, e))?;
        }
        Ok(file)
    }
}

/// Maps a write error: out-of-space names the root directory.
fn map_write_err(root: &Path, path: &Path, e: std::io::Error) -> Error {
    match Error::io(path, e) {
        Error::StorageFull { reason, .. } => Error::StorageFull {
            path: root.to_path_buf(),
            reason,
        },
        other => other,
    }
}

#[async_trait]
impl ObjectSink for FileSink {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buffered += data.len();
        self.buf.push(data);
        if self.buffered >= WRITE_BATCH {
            if let Err(e) = self.flush_buf().await {
                self.remove_tmp();
                return Err(e);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        // The last batch (or the only one: an empty object is created too)
        // and the publish, in one blocking call.
        let batch = match self.take_batch() {
            Ok(b) => b,
            Err(e) => {
                self.remove_tmp();
                return Err(e);
            }
        };
        let len = batch.len;
        let fin = self.final_path.clone();
        let no_replace = self.no_replace;
        let res = blocking(move || {
            let (root, tmp) = (batch.root.clone(), batch.tmp.clone());
            drop(batch.write()?);
            if !no_replace {
                return std::fs::rename(&tmp, &fin).map_err(|e| map_write_err(&root, &fin, e));
            }
            match std::fs::hard_link(&tmp, &fin) {
                Ok(()) => {
                    // The object is published; the temporary name goes.
                    let _ = std::fs::remove_file(&tmp);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(Error::AlreadyExists {
                        object: fin.display().to_string(),
                    })
                }
                Err(e) => Err(map_write_err(&root, &fin, e)),
            }
        })
        .await;
        self.batch_done(len, &res);
        match res {
            Ok(()) => {
                self.done = true;
                Ok(self.written)
            }
            Err(e) => {
                self.remove_tmp();
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.remove_tmp();
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.done {
            self.remove_tmp();
        }
    }
}

/// Reads `range` of a file with positioned reads; short if the file is shorter.
pub async fn read_range(path: PathBuf, range: Range<u64>) -> Result<Bytes> {
    blocking(move || {
        use std::os::unix::fs::FileExt;
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = range.end.saturating_sub(range.start) as usize;
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], range.start + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        buf.truncate(filled);
        Ok(Bytes::from(buf))
    })
    .await
}

/// Reads a whole file.
pub async fn read_all(path: PathBuf) -> Result<Bytes> {
    blocking(move || {
        std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| Error::io(&path, e))
    })
    .await
}

/// Removes a file; a missing file is fine. Returns the bytes it held.
pub fn remove_file(path: &Path) -> Result<u64> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(path) {
        Ok(()) => Ok(len),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Reads the last `len` bytes of a file (all of it when shorter) with one
/// positioned read from the end.
pub async fn read_suffix(path: PathBuf, len: u64) -> Result<Bytes> {
    blocking(move || {
        use std::os::unix::fs::FileExt;
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let start = size.saturating_sub(len);
        let mut buf = vec![0u8; (size - start) as usize];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Bytes::from(buf))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_small_object_touches_the_disk_only_when_it_finishes() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b");
        let fin = dir.join("obj.data");
        let quota = DirQuota::new(root.path(), 1 << 30);
        let mut sink = Box::new(
            FileSink::create(root.path().into(), fin.clone(), Some(quota.clone()))
                .await
                .expect("create"),
        );
        sink.write(Bytes::from_static(b"hello "))
            .await
            .expect("write");
        sink.write(Bytes::from_static(b"world"))
            .await
            .expect("write");
        assert!(!dir.exists(), "nothing is created before a batch or finish");
        assert_eq!(sink.finish().await.expect("finish"), 11);
        assert_eq!(std::fs::read(&fin).expect("read"), b"hello world");
        assert_eq!(
            names(&dir),
            vec!["obj.data".to_string()],
            "no temporary name left"
        );
        assert_eq!(quota.used(), 11);
    }

    #[tokio::test]
    async fn an_empty_object_is_created() {
        let root = tempfile::tempdir().expect("tempdir");
        let fin = root.path().join("empty.data");
        let sink = Box::new(
            FileSink::create(root.path().into(), fin.clone(), None)
                .await
                .expect("create"),
        );
        assert_eq!(sink.finish().await.expect("finish"), 0);
        assert_eq!(std::fs::read(&fin).expect("read").len(), 0);
    }

    #[tokio::test]
    async fn a_full_batch_reaches_the_temporary_file_and_abort_removes_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let quota = DirQuota::new(root.path(), 1 << 30);
        let fin = root.path().join("big.data");
        let mut sink = Box::new(
            FileSink::create(root.path().into(), fin.clone(), Some(quota.clone()))
                .await
                .expect("create"),
        );
        sink.write(Bytes::from(vec![1u8; WRITE_BATCH]))
            .await
            .expect("write");
        let on_disk = names(root.path());
        assert_eq!(on_disk.len(), 1, "{on_disk:?}");
        assert!(on_disk[0].starts_with("big.tmp-"), "{on_disk:?}");
        assert_eq!(quota.used(), WRITE_BATCH as u64);
        sink.abort().await.expect("abort");
        assert!(names(root.path()).is_empty());
        assert_eq!(quota.used(), 0, "abort gives the quota back");
    }

    #[tokio::test]
    async fn a_taken_name_fails_create_new_and_gives_the_quota_back() {
        let root = tempfile::tempdir().expect("tempdir");
        let quota = DirQuota::new(root.path(), 1 << 30);
        let fin = root.path().join("map-0.data");
        for (i, body) in [&b"first"[..], &b"second"[..]].into_iter().enumerate() {
            let mut sink = Box::new(
                FileSink::create_new(root.path().into(), fin.clone(), Some(quota.clone()))
                    .await
                    .expect("create"),
            );
            sink.write(Bytes::copy_from_slice(body))
                .await
                .expect("write");
            let res = sink.finish().await;
            if i == 0 {
                assert_eq!(res.expect("the first publishes"), 5);
            } else {
                assert!(matches!(res, Err(Error::AlreadyExists { .. })), "{res:?}");
            }
        }
        assert_eq!(
            std::fs::read(&fin).expect("read"),
            b"first",
            "the first attempt wins"
        );
        assert_eq!(names(root.path()), vec!["map-0.data".to_string()]);
        assert_eq!(quota.used(), 5, "only the published bytes count");
    }

    #[tokio::test]
    async fn a_quota_too_small_for_the_last_batch_fails_finish_and_leaves_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let quota = DirQuota::new(root.path(), 4);
        let fin = root.path().join("x.data");
        let mut sink = Box::new(
            FileSink::create(root.path().into(), fin.clone(), Some(quota.clone()))
                .await
                .expect("create"),
        );
        sink.write(Bytes::from_static(b"too long"))
            .await
            .expect("buffered");
        let res = sink.finish().await;
        assert!(matches!(res, Err(Error::StorageFull { .. })), "{res:?}");
        assert!(names(root.path()).is_empty());
        assert_eq!(quota.used(), 0);
    }
}
