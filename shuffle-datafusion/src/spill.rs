//! DataFusion's spill files through Shovel's spill store.
//!
//! DataFusion 55 creates every spill file (sorts, aggregates, the
//! repartition spill pool, ...) through its `DiskManager`, which can take a
//! custom [`TempFileFactory`]. A spill file there is a [`SpillFile`]: a
//! *synchronous* `std::io::Write` writer (DataFusion's IPC writer calls it
//! from inside its operators, on an async worker thread) and an *async*
//! byte stream to read it back. [`ShovelTempFiles`] is such a factory:
//!
//! ```text
//!  DataFusion operator ── write (sync) ─▶ local file <spill dir>/spill-df-*.arrow
//!                       ── finish ──────▶ local spill store: done, read back from the file
//!                                         S3 spill store (spill.to_s3): a tokio task uploads
//!                                           the file through shuffle_core::SpillWriter (lz4 +
//!                                           crc32 frames), then deletes the local file
//!  read_stream (async) ◀─ the local file, or ranged reads of the spill object (after the upload)
//!  last reference dropped ─▶ local file removed / spill object deleted (a tokio task)
//! ```
//!
//! What blocks and what does not, honestly:
//! - **Writes** go to a buffered local file, synchronously, on the thread
//!   DataFusion calls from: DataFusion's own spill files do exactly this
//!   (its writer trait is synchronous). They never wait for the network.
//! - **Uploads** run in a spawned tokio task (`tokio::fs` reads on the
//!   blocking pool, S3 requests async), never on the caller's thread; the
//!   operator carries on as soon as `finish` returns. Without a tokio runtime
//!   at `finish` the file stays local (DataFusion always runs in one).
//! - **Reads** of an uploaded file wait (asynchronously) for its upload and
//!   then stream ranged reads of the object; a frame whose crc32 does not
//!   match fails the read naming the object. A read that starts before the
//!   file is finished (DataFusion's repartition spill pool reads while it
//!   writes) reads the local file, which stays readable through its open
//!   handle after the upload removes its name.
//!
//! With `spill.to_s3` every finished spill file therefore ends up in S3 and
//! the local spill directory holds only files being written or uploaded.
//! The staging file costs local disk while it is written; Shovel's
//! `local.max_bytes` quota does not cover it (DataFusion's own
//! `max_temp_directory_size` does not apply to custom factories either).

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SpillFile, SpillWriter, TempFileFactory};
use futures::{Stream, TryStreamExt};
use shuffle_core::format::frame::{decode_frame, FrameDecoder};
use shuffle_core::metrics::{add, ShuffleMetrics};
use shuffle_core::spill::{SpillFile as StoredFile, SpillStore, SpillWriter as StoreWriter};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// One frame of an uploaded spill file.
const UPLOAD_BLOCK: usize = 1 << 20;
/// One ranged read of an uploaded spill file.
const READ_CHUNK: u64 = 4 << 20;
/// One read of a local spill file.
const LOCAL_READ: usize = 128 << 10;
/// The buffer in front of a local spill file's writes.
const WRITE_BUFFER: usize = 256 << 10;

/// DataFusion's [`TempFileFactory`] over a Shovel [`SpillStore`] (see the
/// module doc).
pub struct ShovelTempFiles {
    store: Arc<dyn SpillStore>,
    metrics: Arc<ShuffleMetrics>,
    dir: PathBuf,
    upload: bool,
}

impl fmt::Debug for ShovelTempFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShovelTempFiles")
            .field("store", &self.store.location())
            .field("dir", &self.dir)
            .finish()
    }
}

impl ShovelTempFiles {
    /// Spill files written in `dir` (created when first needed) and, unless
    /// `store` is local, uploaded to `store`; spill counters go to `metrics`.
    pub fn new(
        store: Arc<dyn SpillStore>,
        metrics: Arc<ShuffleMetrics>,
        dir: impl Into<PathBuf>,
    ) -> Self {
        let upload = store.location() != "local";
        Self {
            store,
            metrics,
            dir: dir.into(),
            upload,
        }
    }

    /// Where spill files are written (and, with a local store, kept).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when finished files are uploaded to the spill store.
    pub fn uploads(&self) -> bool {
        self.upload
    }
}

impl TempFileFactory for ShovelTempFiles {
    fn create_temp_file(&self, description: &str) -> Result<Arc<dyn SpillFile>> {
        let io = |e: std::io::Error, what: &str| {
            DataFusionError::IoError(e).context(format!(
                "{what} for {description} in Shovel's spill directory {}; check that it is \
                 writable or pass another one (local.dirs / ShovelBuilder::spill_dir)",
                self.dir.display()
            ))
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(e, "creating the directory"))?;
        let path = self.dir.join(format!(
            "spill-df-{}.arrow",
            shuffle_core::fs::unique_suffix()
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(e, "creating a spill file"))?;
        let (state, _) = watch::channel(Where::Local);
        Ok(Arc::new(ShovelSpillFile(Arc::new(Inner {
            path,
            size: AtomicU64::new(0),
            state,
            store: Arc::clone(&self.store),
            metrics: Arc::clone(&self.metrics),
            upload: self.upload,
        }))))
    }
}

/// Where a spill file's bytes are.
#[derive(Debug, Clone)]
enum Where {
    /// In the local file (being written, or kept there: local store).
    Local,
    /// Finished, being uploaded; the local file is still there.
    Uploading,
    /// In the spill store; the local file is gone.
    Stored(StoredFile),
    /// The upload failed (the message says why and where).
    Failed(String),
}

struct Inner {
    path: PathBuf,
    size: AtomicU64,
    state: watch::Sender<Where>,
    store: Arc<dyn SpillStore>,
    metrics: Arc<ShuffleMetrics>,
    upload: bool,
}

impl Inner {
    fn now(&self) -> Where {
        self.state.borrow().clone()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every reader and the upload task hold an `Arc<Inner>`: nothing
        // reads this file any more.
        match self.now() {
            Where::Stored(file) => {
                // Without a runtime the store's cleanup (at the app's end)
                // deletes the object.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let store = Arc::clone(&self.store);
                    rt.spawn(async move {
                        if let Err(e) = store.delete(&file).await {
                            tracing::warn!(spill = %file.id, error = %e, "could not delete a DataFusion spill object");
                        }
                    });
                }
            }
            Where::Local | Where::Uploading | Where::Failed(_) => {
                // One unlink, as DataFusion's own temp files do on drop.
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// One DataFusion spill file (see the module doc).
struct ShovelSpillFile(Arc<Inner>);

impl SpillFile for ShovelSpillFile {
    fn path(&self) -> Option<&Path> {
        (!self.0.upload).then_some(self.0.path.as_path())
    }

    fn size(&self) -> Option<u64> {
        Some(self.0.size.load(Ordering::Relaxed))
    }

    fn read_stream(&self) -> Result<ByteStream> {
        let inner = Arc::clone(&self.0);
        match inner.now() {
            Where::Local => local_stream(inner),
            Where::Failed(e) => Err(DataFusionError::Execution(e)),
            Where::Uploading | Where::Stored(_) => {
                let mut rx = inner.state.subscribe();
                let after_upload = async move {
                    let now = rx
                        .wait_for(|w| !matches!(w, Where::Uploading))
                        .await
                        .map(|w| w.clone())
                        .map_err(|_| {
                            DataFusionError::Internal(format!(
                                "the upload of DataFusion spill file {} ended without a result",
                                inner.path.display()
                            ))
                        })?;
                    match now {
                        Where::Stored(file) => Ok(stored_stream(inner, file)),
                        Where::Failed(e) => Err(DataFusionError::Execution(e)),
                        Where::Local | Where::Uploading => local_stream(inner),
                    }
                };
                Ok(Box::pin(futures::stream::once(after_upload).try_flatten()))
            }
        }
    }

    fn open_writer(&self) -> Result<Box<dyn SpillWriter>> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.0.path)
            .map_err(|e| {
                DataFusionError::IoError(e).context(format!(
                    "opening DataFusion spill file {} for writing",
                    self.0.path.display()
                ))
            })?;
        Ok(Box::new(ShovelSpillWriter {
            file: std::io::BufWriter::with_capacity(WRITE_BUFFER, file),
            inner: Arc::clone(&self.0),
            finished: false,
        }))
    }
}

struct ShovelSpillWriter {
    file: std::io::BufWriter<std::fs::File>,
    inner: Arc<Inner>,
    finished: bool,
}

impl Write for ShovelSpillWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.inner.size.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl SpillWriter for ShovelSpillWriter {
    fn finish(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| {
            DataFusionError::IoError(e).context(format!(
                "writing DataFusion spill file {}",
                self.inner.path.display()
            ))
        })?;
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        let inner = &self.inner;
        if !inner.upload {
            // Kept in the local spill directory: count it as a Shovel spill.
            let shuffle = &inner.metrics.shuffle;
            add(&shuffle.spill_count, 1);
            add(&shuffle.spill_bytes, inner.size.load(Ordering::Relaxed));
            return Ok(());
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        inner.state.send_replace(Where::Uploading);
        rt.spawn(upload(Arc::clone(inner)));
        Ok(())
    }
}

/// Uploads a finished local file to the spill store, then removes it.
/// A failed upload keeps the local file (removed with the last reference)
/// and fails every read, naming the file and the store.
async fn upload(inner: Arc<Inner>) {
    match upload_file(&inner).await {
        Ok(file) => {
            // Removed before readers are told: once a file is `Stored` no
            // local copy remains (readers that opened it earlier keep their
            // handle; those waiting read the object).
            if let Err(e) = tokio::fs::remove_file(&inner.path).await {
                tracing::warn!(path = %inner.path.display(), error = %e, "could not remove an uploaded DataFusion spill file");
            }
            inner.state.send_replace(Where::Stored(file));
        }
        Err(e) => {
            inner.state.send_replace(Where::Failed(format!(
                "uploading DataFusion spill file {} to the {} spill store failed: {e}",
                inner.path.display(),
                inner.store.location()
            )));
        }
    }
}

async fn upload_file(inner: &Inner) -> shuffle_core::Result<StoredFile> {
    let mut writer = StoreWriter::create(&inner.store, &inner.metrics).await?;
    let copied: shuffle_core::Result<()> = async {
        let io = |e: std::io::Error| shuffle_core::Error::io(&inner.path, e);
        let mut file = tokio::fs::File::open(&inner.path).await.map_err(io)?;
        let mut block = vec![0u8; UPLOAD_BLOCK];
        loop {
            let mut filled = 0;
            while filled < block.len() {
                let n = file.read(&mut block[filled..]).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            writer.write_block(&block[..filled]).await?;
            if filled < block.len() {
                return Ok(());
            }
        }
    }
    .await;
    match copied {
        Ok(()) => writer.finish().await,
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// The local file, opened now (so a later upload removing its name does
/// not pull it away from this reader).
fn local_stream(inner: Arc<Inner>) -> Result<ByteStream> {
    let file = std::fs::File::open(&inner.path).map_err(|e| {
        DataFusionError::IoError(e).context(format!(
            "opening DataFusion spill file {} for reading",
            inner.path.display()
        ))
    })?;
    let file = tokio::fs::File::from_std(file);
    let stream = futures::stream::try_unfold((file, inner), |(mut file, inner)| async move {
        let mut buf = vec![0u8; LOCAL_READ];
        let n = file.read(&mut buf).await.map_err(|e| {
            DataFusionError::IoError(e).context(format!(
                "reading DataFusion spill file {}",
                inner.path.display()
            ))
        })?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (file, inner))))
    });
    Ok(Box::pin(stream))
}

/// Reading an uploaded spill object back: ranged reads, frames decoded and
/// checked (crc32) one by one.
struct StoredRead {
    inner: Arc<Inner>,
    file: StoredFile,
    object: String,
    pos: u64,
    decoder: FrameDecoder,
    frames: VecDeque<Bytes>,
    block: u64,
}

fn stored_stream(inner: Arc<Inner>, file: StoredFile) -> ByteStream {
    let object = inner.store.describe(&file);
    let read = StoredRead {
        decoder: FrameDecoder::new(object.clone()),
        inner,
        file,
        object,
        pos: 0,
        frames: VecDeque::new(),
        block: 0,
    };
    Box::pin(futures::stream::try_unfold(read, |mut r| async move {
        let damaged = |r: &StoredRead, e: shuffle_core::Error| {
            DataFusionError::External(Box::new(e)).context(format!(
                "reading DataFusion spill object {} (block {})",
                r.object, r.block
            ))
        };
        loop {
            if let Some(frame) = r.frames.pop_front() {
                let block = decode_frame(&frame, &r.object, 0).map_err(|e| damaged(&r, e))?;
                r.block += 1;
                return Ok(Some((block, r)));
            }
            if r.pos >= r.file.len {
                if r.decoder.buffered() != 0 {
                    let e = shuffle_core::Error::spill_corrupt(
                        &r.object,
                        format!("block {}", r.block),
                        "the object ends inside a frame: a damaged frame header",
                    );
                    return Err(damaged(&r, e));
                }
                return Ok(None);
            }
            let end = (r.pos + READ_CHUNK).min(r.file.len);
            let data = r
                .inner
                .store
                .read_range(&r.file, r.pos..end)
                .await
                .map_err(|e| damaged(&r, e))?;
            if data.len() as u64 != end - r.pos {
                let e = shuffle_core::Error::spill_corrupt(
                    &r.object,
                    format!("bytes {}..{end}", r.pos),
                    format!(
                        "truncated: {} bytes were written, the read returned {}",
                        r.file.len,
                        data.len()
                    ),
                );
                return Err(damaged(&r, e));
            }
            add(&r.inner.metrics.shuffle.spill_read_bytes, data.len() as u64);
            r.pos = end;
            let frames = r.decoder.push_bytes(data).map_err(|e| damaged(&r, e))?;
            r.frames.extend(frames);
        }
    }))
}
