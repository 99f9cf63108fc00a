//! Spill: where operators put what does not fit in their memory reservation.
//!
//! ```text
//!   operator ──write_block──▶ SpillWriter ──frames──▶ SpillStore ──▶ local dir | S3 `spill/`
//!   operator ◀──next_block── SpillReader ◀─ranged reads─┘   (object deleted once read back)
//! ```
//!
//! A spill file is a run of [frames](crate::format::frame): lz4 and crc32
//! like shuffle data, so a corrupt spill is caught, not silently merged.
//! Damage (a frame whose crc32 does not match, a malformed frame, an object
//! shorter than what was written) is an [`Error::SpillCorrupt`] naming the
//! object as the store describes it ([`SpillStore::describe`]) and where in
//! it: the block and byte offset, or the byte range of a read.
//! [`SpillStore`] is the small trait a place to spill implements;
//! [`LocalSpillStore`] keeps files in local directories,
//! [`ObjectSpillStore`] turns any [`ShuffleStore`] (such as S3) into one.

use std::fmt::Debug;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::format::frame::decode_frame;
use crate::format::frame::{encode_frame, Codec, FrameDecoder};
use crate::fs::{self, DirQuota, FileSink};
use crate::metrics::{add, ShuffleMetrics};
use crate::store::{ObjectKey, ObjectSink, ShuffleStore};
use crate::{Error, Result};

/// A finished spill file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillFile {
    /// Store-specific id (a path or an object key).
    pub id: String,
    /// Shard hint for object stores.
    pub shard: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A place to spill.
#[async_trait]
pub trait SpillStore: Send + Sync + Debug + 'static {
    /// Where spills go, for metrics and reports ("local", "s3").
    fn location(&self) -> &'static str;
    /// Human-readable location of a spill file (a path or `s3://bucket/key`),
    /// for errors. Defaults to the file's id.
    fn describe(&self, file: &SpillFile) -> String {
        file.id.clone()
    }
    /// Starts a new spill file.
    async fn create(&self) -> Result<(SpillFile, Box<dyn ObjectSink>)>;
    /// Reads `range` of a finished spill file (short if the file is shorter).
    async fn read_range(&self, file: &SpillFile, range: Range<u64>) -> Result<Bytes>;
    /// Deletes a spill file; a missing one is fine.
    async fn delete(&self, file: &SpillFile) -> Result<()>;
    /// Deletes every spill file this store holds (a job's end, failed or
    /// not); returns how many there were.
    async fn cleanup(&self) -> Result<u64>;
}

/// Spill files in local directories (round-robin across them).
#[derive(Debug)]
pub struct LocalSpillStore {
    dirs: Vec<(PathBuf, Option<Arc<DirQuota>>)>,
    next: AtomicU64,
}

impl LocalSpillStore {
    /// Spills into `dirs` (created if missing); an empty list means the OS temp dir.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self::with_quotas(dirs.into_iter().map(|d| (d, None)).collect())
    }

    /// Spills into directories that share quotas with a local shuffle store.
    pub fn with_quotas(mut dirs: Vec<(PathBuf, Option<Arc<DirQuota>>)>) -> Self {
        if dirs.is_empty() {
            dirs.push((std::env::temp_dir().join("shovel-spill"), None));
        }
        Self {
            dirs,
            next: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl SpillStore for LocalSpillStore {
    fn location(&self) -> &'static str {
        "local"
    }

    async fn create(&self) -> Result<(SpillFile, Box<dyn ObjectSink>)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.dirs.len();
        let (dir, quota) = &self.dirs[i];
        let path = dir.join(format!("spill-{}.bin", fs::unique_suffix()));
        let sink = FileSink::create(dir.clone(), path.clone(), quota.clone()).await?;
        let file = SpillFile {
            id: path.display().to_string(),
            shard: i as u64,
            len: 0,
        };
        Ok((file, Box::new(sink)))
    }

    async fn read_range(&self, file: &SpillFile, range: Range<u64>) -> Result<Bytes> {
        fs::read_range(PathBuf::from(&file.id), range).await
    }

    async fn delete(&self, file: &SpillFile) -> Result<()> {
        let path = PathBuf::from(&file.id);
        let freed = fs::blocking(move || fs::remove_file(&path)).await?;
        if let Some((_, Some(q))) = self.dirs.get(file.shard as usize) {
            q.give_back(freed);
        }
        Ok(())
    }

    async fn cleanup(&self) -> Result<u64> {
        let dirs = self.dirs.clone();
        fs::blocking(move || {
            let mut n = 0;
            for (dir, quota) in dirs {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(&dir, e)),
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with("spill-") {
                        let freed = fs::remove_file(&entry.path())?;
                        if let Some(q) = &quota {
                            q.give_back(freed);
                        }
                        n += 1;
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
            Ok(n)
        })
        .await
    }
}

/// Spill files as objects of a [`ShuffleStore`] under a prefix (S3's `spill/`).
///
/// It remembers every spill object it created and has not deleted, so
/// [`SpillStore::cleanup`] deletes exactly those in one batched delete,
/// without listing the prefix (a LIST per bucket and hash prefix on S3).
#[derive(Debug)]
pub struct ObjectSpillStore {
    store: Arc<dyn ShuffleStore>,
    prefix: String,
    next: AtomicU64,
    /// Spill objects created (recorded before the first byte) and not yet deleted.
    live: std::sync::Mutex<std::collections::BTreeSet<ObjectKey>>,
}

impl ObjectSpillStore {
    pub fn new(store: Arc<dyn ShuffleStore>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into().trim_end_matches('/').to_string(),
            next: AtomicU64::new(0),
            live: std::sync::Mutex::new(Default::default()),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<ObjectKey>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spill objects this store created and has not deleted.
    pub fn live_files(&self) -> usize {
        self.live().len()
    }
}

#[async_trait]
impl SpillStore for ObjectSpillStore {
    fn location(&self) -> &'static str {
        self.store.name()
    }

    fn describe(&self, file: &SpillFile) -> String {
        self.store
            .describe(&ObjectKey::new(file.shard, file.id.clone()))
    }

    async fn create(&self) -> Result<(SpillFile, Box<dyn ObjectSink>)> {
        let shard = self.next.fetch_add(1, Ordering::Relaxed);
        let path = format!("{}/spill-{}.bin", self.prefix, fs::unique_suffix());
        let key = ObjectKey::new(shard, path.clone());
        self.live().insert(key.clone());
        let sink = self.store.create(&key).await?;
        Ok((
            SpillFile {
                id: path,
                shard,
                len: 0,
            },
            sink,
        ))
    }

    async fn read_range(&self, file: &SpillFile, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&ObjectKey::new(file.shard, file.id.clone()), range)
            .await
    }

    async fn delete(&self, file: &SpillFile) -> Result<()> {
        let key = ObjectKey::new(file.shard, file.id.clone());
        self.store.delete(std::slice::from_ref(&key)).await?;
        self.live().remove(&key);
        Ok(())
    }

    async fn cleanup(&self) -> Result<u64> {
        let keys: Vec<ObjectKey> = std::mem::take(&mut *self.live()).into_iter().collect();
        if let Err(e) = self.store.delete(&keys).await {
            self.live().extend(keys);
            return Err(e);
        }
        Ok(keys.len() as u64)
    }
}

/// Buffered, framed writing of one spill file.
pub struct SpillWriter {
    file: SpillFile,
    sink: Option<Box<dyn ObjectSink>>,
    buf: Vec<u8>,
    codec: Codec,
    written: u64,
    metrics: Arc<ShuffleMetrics>,
}

impl Debug for SpillWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillWriter")
            .field("file", &self.file)
            .field("written", &self.written)
            .finish()
    }
}

const SPILL_WRITE_BATCH: usize = 1 << 20;

impl SpillWriter {
    /// Starts a spill file in `store`.
    pub async fn create(
        store: &Arc<dyn SpillStore>,
        metrics: &Arc<ShuffleMetrics>,
    ) -> Result<Self> {
        let (file, sink) = store.create().await?;
        Ok(Self {
            file,
            sink: Some(sink),
            buf: Vec::with_capacity(SPILL_WRITE_BATCH),
            codec: Codec::Lz4,
            written: 0,
            metrics: Arc::clone(metrics),
        })
    }

    /// Sets the codec for blocks written after this call.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Appends one block as one frame.
    pub async fn write_block(&mut self, block: &[u8]) -> Result<()> {
        let n = encode_frame(block, self.codec, &mut self.buf)?;
        self.written += n as u64;
        self.maybe_flush().await
    }

    /// Appends bytes that are already frames (used when spilling buffered
    /// shuffle frames: no re-encoding).
    pub async fn write_frames(&mut self, frames: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(frames);
        self.written += frames.len() as u64;
        self.maybe_flush().await
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    async fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= SPILL_WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let data = Bytes::from(std::mem::take(&mut self.buf));
        match self.sink.as_mut() {
            Some(sink) => sink.write(data).await,
            None => Err(Error::Protocol("spill writer used after finish".into())),
        }
    }

    /// Publishes the spill file.
    pub async fn finish(mut self) -> Result<SpillFile> {
        self.flush().await?;
        let sink = self
            .sink
            .take()
            .ok_or_else(|| Error::Protocol("spill writer finished twice".into()))?;
        let len = sink.finish().await?;
        add(&self.metrics.shuffle.spill_count, 1);
        add(&self.metrics.shuffle.spill_bytes, len);
        self.file.len = len;
        Ok(self.file.clone())
    }

    /// Discards the spill file.
    pub async fn abort(mut self) -> Result<()> {
        match self.sink.take() {
            Some(sink) => sink.abort().await,
            None => Ok(()),
        }
    }
}

/// Sequential reading of a spill file in large ranged reads; the file is
/// deleted once read to the end (or when the reader is dropped).
pub struct SpillReader {
    store: Arc<dyn SpillStore>,
    file: SpillFile,
    /// The file as the store describes it, for errors.
    object: String,
    pos: u64,
    chunk: Bytes,
    chunk_size: u64,
    decoder: FrameDecoder,
    metrics: Arc<ShuffleMetrics>,
    deleted: bool,
    /// Blocks decoded so far, and the byte offset of the next frame.
    blocks: u64,
    frame_offset: u64,
}

impl Debug for SpillReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillReader")
            .field("file", &self.file)
            .field("pos", &self.pos)
            .finish()
    }
}

/// Default size of one read from a spill file.
pub const SPILL_READ_CHUNK: u64 = 4 << 20;

impl SpillReader {
    pub fn open(
        store: Arc<dyn SpillStore>,
        file: SpillFile,
        metrics: &Arc<ShuffleMetrics>,
    ) -> Self {
        let object = store.describe(&file);
        let decoder = FrameDecoder::new(object.clone());
        Self {
            store,
            file,
            object,
            pos: 0,
            chunk: Bytes::new(),
            chunk_size: SPILL_READ_CHUNK,
            decoder,
            metrics: Arc::clone(metrics),
            deleted: false,
            blocks: 0,
            frame_offset: 0,
        }
    }

    /// Sets how many bytes one read fetches.
    pub fn with_chunk_size(mut self, n: u64) -> Self {
        self.chunk_size = n.max(1);
        self
    }

    pub fn file(&self) -> &SpillFile {
        &self.file
    }

    /// The file as its store describes it (a path or `s3://bucket/key`).
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> u64 {
        self.file.len - self.pos + self.chunk.len() as u64
    }

    async fn fill(&mut self) -> Result<bool> {
        if !self.chunk.is_empty() {
            return Ok(true);
        }
        if self.pos >= self.file.len {
            return Ok(false);
        }
        let end = (self.pos + self.chunk_size).min(self.file.len);
        let data = self.store.read_range(&self.file, self.pos..end).await?;
        if data.len() as u64 != end - self.pos {
            return Err(Error::spill_corrupt(
                &self.object,
                format!("bytes {}..{end}", self.pos),
                format!(
                    "truncated: {} bytes were written, the read returned {}",
                    self.file.len,
                    data.len()
                ),
            ));
        }
        add(&self.metrics.shuffle.spill_read_bytes, data.len() as u64);
        self.pos = end;
        self.chunk = data;
        Ok(true)
    }

    /// Returns up to `max` raw bytes (empty at the end of the file).
    pub async fn read_up_to(&mut self, max: usize) -> Result<Bytes> {
        if max == 0 || !self.fill().await? {
            return Ok(Bytes::new());
        }
        let n = max.min(self.chunk.len());
        Ok(self.chunk.split_to(n))
    }

    /// Where the next frame starts, for errors.
    fn at(&self) -> String {
        format!("block {} at byte {}", self.blocks, self.frame_offset)
    }

    /// Decodes the next block, or `None` at the end (and deletes the file).
    pub async fn next_block(&mut self) -> Result<Option<Bytes>> {
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(f) => f,
                Err(e) => return Err(spill_damage(&self.object, self.at(), e)),
            };
            if let Some(frame) = frame {
                let block = decode_frame(&frame, &self.object, 0)
                    .map_err(|e| spill_damage(&self.object, self.at(), e))?;
                self.blocks += 1;
                self.frame_offset += frame.len() as u64;
                return Ok(Some(block));
            }
            if !self.fill().await? {
                let left = self.decoder.buffered();
                if left != 0 {
                    // Every written byte was read back (a short object is
                    // caught in `fill`): the frame's length field is damaged.
                    return Err(Error::spill_corrupt(
                        &self.object,
                        self.at(),
                        format!(
                            "the object ends inside a frame ({left} bytes left): a damaged frame header"
                        ),
                    ));
                }
                self.delete().await?;
                return Ok(None);
            }
            let chunk = std::mem::take(&mut self.chunk);
            self.decoder.push(&chunk);
        }
    }

    /// Deletes the spill file now.
    pub async fn delete(&mut self) -> Result<()> {
        if !self.deleted {
            self.deleted = true;
            self.store.delete(&self.file).await?;
        }
        Ok(())
    }
}

/// Restates a frame error met in a spill as [`Error::SpillCorrupt`] at `at`.
fn spill_damage(object: &str, at: String, e: Error) -> Error {
    match e {
        Error::ChecksumMismatch {
            expected, actual, ..
        } => Error::spill_corrupt(
            object,
            at,
            format!("checksum mismatch: expected crc32 {expected:#010x}, got {actual:#010x}"),
        ),
        Error::Corrupt { reason, .. } => Error::spill_corrupt(object, at, reason),
        other => other,
    }
}

impl Drop for SpillReader {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Best effort: an abandoned spill must not outlive its reader.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            let file = self.file.clone();
            handle.spawn(async move {
                if let Err(e) = store.delete(&file).await {
                    tracing::warn!(spill = %file.id, error = %e, "could not delete spill file");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame::FRAME_HEADER_LEN;

    /// Three blocks spilled to a local store; the file and its blocks.
    async fn spill(store: &Arc<dyn SpillStore>) -> (SpillFile, Vec<Vec<u8>>) {
        let metrics = Arc::new(ShuffleMetrics::default());
        let blocks: Vec<Vec<u8>> = (0..3u32)
            .map(|b| (0..5000u32).map(|i| (i * 7 + b) as u8).collect())
            .collect();
        let mut w = SpillWriter::create(store, &metrics).await.expect("create");
        for b in &blocks {
            w.write_block(b).await.expect("write");
        }
        (w.finish().await.expect("finish"), blocks)
    }

    /// Reads `file` to the end (or the first error) in small chunks.
    async fn read_back(store: &Arc<dyn SpillStore>, file: SpillFile) -> Result<Vec<Bytes>> {
        let metrics = Arc::new(ShuffleMetrics::default());
        let mut r = SpillReader::open(Arc::clone(store), file, &metrics).with_chunk_size(1000);
        let mut out = Vec::new();
        while let Some(b) = r.next_block().await? {
            out.push(b);
        }
        Ok(out)
    }

    /// Byte offset of block `i`'s frame and its length.
    fn frame_of(bytes: &[u8], i: usize) -> (usize, usize) {
        let mut off = 0;
        for _ in 0..i {
            let h = crate::format::frame::parse_header(&bytes[off..], "t").expect("header");
            off += FRAME_HEADER_LEN + h.payload_len as usize;
        }
        let h = crate::format::frame::parse_header(&bytes[off..], "t").expect("header");
        (off, FRAME_HEADER_LEN + h.payload_len as usize)
    }

    fn expect_damage(err: Error, object: &str, at: &str, reason: &str) {
        assert!(err.is_data_loss(), "{err}");
        match &err {
            Error::SpillCorrupt {
                object: o,
                at: a,
                reason: r,
            } => {
                assert_eq!(o, object);
                assert!(a.contains(at), "{err}");
                assert!(r.contains(reason), "{err}");
            }
            other => panic!("expected a damaged spill, got {other}"),
        }
    }

    /// Spills three blocks, damages the file with `damage` (given its bytes
    /// and the offset and length of each frame), and reads it back: the
    /// error, the file and its frames.
    async fn damaged(
        damage: impl FnOnce(&mut Vec<u8>, &[(usize, usize)]),
    ) -> (Error, SpillFile, Vec<(usize, usize)>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn SpillStore> = Arc::new(LocalSpillStore::new(vec![dir.path().into()]));
        let (file, _) = spill(&store).await;
        let mut bytes = std::fs::read(&file.id).expect("spill file");
        let frames: Vec<(usize, usize)> = (0..3).map(|i| frame_of(&bytes, i)).collect();
        damage(&mut bytes, &frames);
        std::fs::write(&file.id, &bytes).expect("damage");
        let err = read_back(&store, file.clone()).await.expect_err("damaged");
        (err, file, frames)
    }

    #[tokio::test]
    async fn damaged_spill_is_reported_with_object_and_block() {
        // A flipped payload byte of block 1: its checksum.
        let (err, file, frames) = damaged(|b, f| b[f[1].0 + f[1].1 / 2] ^= 0x5a).await;
        let at = format!("block 1 at byte {}", frames[1].0);
        expect_damage(err, &file.id, &at, "checksum mismatch");

        // A flipped magic byte of block 2.
        let (err, file, _) = damaged(|b, f| b[f[2].0] ^= 0x01).await;
        expect_damage(err, &file.id, "block 2", "magic");

        // A length field of the last frame grown past the end of the object.
        let (err, file, _) = damaged(|b, f| b[f[2].0 + 9] ^= 0x10).await;
        expect_damage(err, &file.id, "block 2", "damaged frame header");

        // Truncated in the middle of block 2: fewer bytes than were written.
        let (err, file, _) = damaged(|b, f| b.truncate(f[2].0 + f[2].1 / 2)).await;
        let msg = err.to_string();
        expect_damage(err, &file.id, "bytes", "truncated");
        assert!(
            msg.contains(&format!("{} bytes were written", file.len)),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn undamaged_spill_reads_back_and_is_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn SpillStore> = Arc::new(LocalSpillStore::new(vec![dir.path().into()]));
        let (file, blocks) = spill(&store).await;
        assert_eq!(
            store.describe(&file),
            file.id,
            "a local spill is named by its path"
        );
        let read = read_back(&store, file.clone()).await.expect("read");
        assert_eq!(read, blocks);
        assert!(!std::path::Path::new(&file.id).exists());
    }
}
