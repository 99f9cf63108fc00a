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
#[derive(Debug)]
pub struct FileSink {
    /// The root directory, named in storage-full errors.
    root: PathBuf,
    final_path: PathBuf,
    tmp_path: PathBuf,
    file: Option<File>,
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
    /// Creates the temporary file (and missing parent directories).
    pub async fn create(
        root: PathBuf,
        final_path: PathBuf,
        quota: Option<Arc<DirQuota>>,
    ) -> Result<Self> {
        let tmp_path = final_path.with_extension(format!("tmp-{}", unique_suffix()));
        let (root2, tmp2) = (root.clone(), tmp_path.clone());
        let file = blocking(move || {
            if let Some(parent) = tmp2.parent() {
                std::fs::create_dir_all(parent).map_err(|e| map_write_err(&root2, parent, e))?;
            }
            File::create(&tmp2).map_err(|e| map_write_err(&root2, &tmp2, e))
        })
        .await?;
        Ok(Self {
            root,
            final_path,
            tmp_path,
            file: Some(file),
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

    async fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let n = self.buffered as u64;
        if let Some(q) = &self.quota {
            q.take(n)?;
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::Protocol("file sink used after an error".into()))?;
        let bufs = std::mem::take(&mut self.buf);
        self.buffered = 0;
        let (root, tmp) = (self.root.clone(), self.tmp_path.clone());
        let file = blocking(move || {
            for b in &bufs {
                file.write_all(b)
                    .map_err(|e| map_write_err(&root, &tmp, e))?;
            }
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        self.written += n;
        Ok(())
    }

    fn remove_tmp(&mut self) {
        self.done = true;
        self.file = None;
        let _ = std::fs::remove_file(&self.tmp_path);
        if let Some(q) = &self.quota {
            q.give_back(self.written);
        }
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
        if let Err(e) = self.flush_buf().await {
            self.remove_tmp();
            return Err(e);
        }
        let file = self.file.take();
        let (root, tmp, fin) = (
            self.root.clone(),
            self.tmp_path.clone(),
            self.final_path.clone(),
        );
        let no_replace = self.no_replace;
        let res = blocking(move || {
            drop(file);
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
