//! The buffered map-output writer: blocks for any partition, in any order.
//!
//! ```text
//!  write_block(p, block) ─▶ lz4 frame ─▶ per-partition frame lists (memory,
//!                                        under a MemoryReservation)
//!                                 │ reservation cannot grow
//!                                 ▼
//!                         spill: every partition's frames, in partition
//!                         order, into one spill file (+ its lengths)
//!  commit: for p in 0..N ─▶ partition_writer(p) ◀─ spill 1 segment p
//!                                                ◀─ spill 2 segment p ...
//!                                                ◀─ memory frames of p
//! ```
//!
//! Frames are compressed once, when the block arrives; spilling and merging
//! only move frame bytes (no decompression), so a spilled output is byte-for-
//! byte the output that would have been written without spilling. Blocks of
//! one partition keep their write order: spills first, oldest first, then
//! memory.
//!
//! Because merging does not decode frames, each spill records the crc32 of
//! every partition's segment (as a map status does), and the merge checks it
//! while copying: a damaged spill is an [`Error::SpillCorrupt`] naming the
//! spill object and the partition, never a map output whose own checksums
//! vouch for damaged bytes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::format::frame::{encode_frame_into, max_frame_len};
use crate::format::Codec;
use crate::memory::MemoryReservation;
use crate::metrics::{add, ShuffleMetrics};
use crate::spill::{SpillFile, SpillReader, SpillStore, SpillWriter};
use crate::status::MapStatus;
use crate::writer::MapOutputWriter;
use crate::{Error, Result};

struct SpillRun {
    file: SpillFile,
    lengths: Vec<u64>,
    /// crc32 of each partition's segment.
    checksums: Vec<u32>,
    raw: Vec<u64>,
}

/// The spill files of one buffer. Dropped with files left (the buffer was
/// dropped without `commit` or `abort`: its task failed or was killed), it
/// deletes them in the background, so they do not wait for the app's cleanup.
struct Spills {
    runs: Vec<SpillRun>,
    store: Arc<dyn SpillStore>,
}

impl Drop for Spills {
    fn drop(&mut self) {
        if self.runs.is_empty() {
            return;
        }
        let files: Vec<SpillFile> = self.runs.drain(..).map(|r| r.file).collect();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            handle.spawn(async move {
                for file in files {
                    if let Err(e) = store.delete(&file).await {
                        tracing::warn!(spill = %file.id, error = %e, "could not delete spill file");
                    }
                }
            });
        }
    }
}

/// Memory-accounted, spilling map-output writer (see the module docs).
pub struct MapOutputBuffer {
    writer: MapOutputWriter,
    codec: Codec,
    frames: Vec<Vec<Bytes>>,
    raw: Vec<u64>,
    records: Vec<u64>,
    reservation: MemoryReservation,
    spill_store: Arc<dyn SpillStore>,
    metrics: Arc<ShuffleMetrics>,
    spills: Spills,
    busy_ns: u64,
    /// Encoding buffer, reused across blocks.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for MapOutputBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapOutputBuffer")
            .field("writer", &self.writer)
            .field("buffered", &self.reservation.size())
            .field("spills", &self.spills.runs.len())
            .finish()
    }
}

impl MapOutputBuffer {
    pub fn new(
        writer: MapOutputWriter,
        reservation: MemoryReservation,
        spill_store: Arc<dyn SpillStore>,
        metrics: Arc<ShuffleMetrics>,
    ) -> Self {
        let n = writer.num_partitions() as usize;
        let spills_store = Arc::clone(&spill_store);
        Self {
            // The writer carries the configured `shuffle.codec`.
            codec: writer.codec(),
            writer,
            frames: vec![Vec::new(); n],
            raw: vec![0; n],
            records: vec![0; n],
            reservation,
            spill_store,
            metrics,
            spills: Spills {
                runs: Vec::new(),
                store: Arc::clone(&spills_store),
            },
            busy_ns: 0,
            scratch: Vec::new(),
        }
    }

    /// Overrides the frame codec (default: the writer's, i.e. `shuffle.codec`).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    pub fn num_partitions(&self) -> u32 {
        self.writer.num_partitions()
    }

    /// Spill files written so far.
    pub fn spill_count(&self) -> usize {
        self.spills.runs.len()
    }

    /// Bytes held in memory.
    pub fn buffered_bytes(&self) -> usize {
        self.reservation.size()
    }

    /// Buffers one block for `partition`; readers get it back whole.
    pub async fn write_block(&mut self, partition: u32, block: &[u8], records: u64) -> Result<()> {
        let n = self.num_partitions();
        if partition >= n {
            return Err(Error::Protocol(format!(
                "partition {partition} out of range: the shuffle has {n} partitions"
            )));
        }
        let started = Instant::now();
        // Compress into a reused scratch buffer (sized for the worst case,
        // never cleared), then keep an exact copy: what the reservation
        // counts is then what is held, however well the block compressed.
        let need = max_frame_len(block.len());
        if self.scratch.len() < need {
            self.scratch.resize(need, 0);
        }
        let n = encode_frame_into(block, self.codec, &mut self.scratch)?;
        add(&self.metrics.shuffle.frames_written, 1);
        let frame = Bytes::copy_from_slice(&self.scratch[..n]);
        let size = frame.len();
        if self.reservation.try_grow(size).is_err() {
            self.spill().await?;
            // One frame may exceed a tiny budget on its own: hold it anyway.
            if self.reservation.try_grow(size).is_err() {
                self.reservation.grow(size);
            }
        }
        let p = partition as usize;
        self.frames[p].push(frame);
        self.raw[p] += block.len() as u64;
        self.records[p] += records;
        self.busy_ns += started.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Writes everything in memory to one spill file and frees the memory.
    pub async fn spill(&mut self) -> Result<()> {
        if self.reservation.size() == 0 {
            return Ok(());
        }
        let mut w = SpillWriter::create(&self.spill_store, &self.metrics).await?;
        let n = self.frames.len();
        let mut lengths = vec![0u64; n];
        let mut checksums = vec![0u32; n];
        for (p, frames) in self.frames.iter().enumerate() {
            let mut crc = crc32fast::Hasher::new();
            for f in frames {
                if let Err(e) = w.write_frames(f).await {
                    let _ = w.abort().await;
                    return Err(e);
                }
                crc.update(f);
                lengths[p] += f.len() as u64;
            }
            checksums[p] = crc.finalize();
        }
        let file = w.finish().await?;
        let raw = std::mem::replace(&mut self.raw, vec![0; n]);
        self.spills.runs.push(SpillRun {
            file,
            lengths,
            checksums,
            raw,
        });
        for f in &mut self.frames {
            f.clear();
        }
        self.reservation.free();
        Ok(())
    }

    /// Merges spills and memory into the map output and commits it; returns
    /// the winning attempt's status.
    pub async fn commit(mut self) -> Result<MapStatus> {
        let started = Instant::now();
        let mut readers: Vec<SpillReader> = self
            .spills
            .runs
            .iter()
            .map(|s| {
                SpillReader::open(Arc::clone(&self.spill_store), s.file.clone(), &self.metrics)
            })
            .collect();
        let merged = self.merge(&mut readers).await;
        for r in &mut readers {
            let _ = r.delete().await;
        }
        self.spills.runs.clear();
        self.busy_ns += started.elapsed().as_nanos() as u64;
        add(&self.metrics.shuffle.write_time_ns, self.busy_ns);
        match merged {
            Ok(()) => {
                self.reservation.free();
                self.writer.commit().await
            }
            Err(e) => {
                let _ = self.writer.abort().await;
                Err(e)
            }
        }
    }

    async fn merge(&mut self, readers: &mut [SpillReader]) -> Result<()> {
        for p in 0..self.frames.len() {
            let spilled: u64 = self.spills.runs.iter().map(|s| s.lengths[p]).sum();
            if spilled == 0 && self.frames[p].is_empty() {
                continue;
            }
            let mut pw = self.writer.partition_writer(p as u32).await?;
            for (run, reader) in self.spills.runs.iter().zip(readers.iter_mut()) {
                let mut left = run.lengths[p];
                if left == 0 {
                    continue;
                }
                let mut raw = run.raw[p];
                let mut crc = crc32fast::Hasher::new();
                while left > 0 {
                    let chunk = reader
                        .read_up_to(left.min(1 << 20) as usize)
                        .await
                        .map_err(|e| in_partition(e, p))?;
                    if chunk.is_empty() {
                        return Err(Error::spill_corrupt(
                            reader.object(),
                            format!("partition {p}"),
                            format!("truncated: {left} bytes of the partition missing"),
                        ));
                    }
                    left -= chunk.len() as u64;
                    crc.update(&chunk);
                    // Raw bytes are accounted once per run and partition.
                    pw.write_frames(chunk, std::mem::take(&mut raw)).await?;
                }
                // The bytes went out unchecked; if they were damaged, commit
                // aborts the output they went into.
                let (expected, actual) = (run.checksums[p], crc.finalize());
                if actual != expected {
                    return Err(Error::spill_corrupt(
                        reader.object(),
                        format!("partition {p}"),
                        format!(
                            "checksum mismatch: expected crc32 {expected:#010x}, got {actual:#010x}"
                        ),
                    ));
                }
            }
            let frames = std::mem::take(&mut self.frames[p]);
            let mut raw = self.raw[p];
            let held: usize = frames.iter().map(Bytes::len).sum();
            for f in frames {
                pw.write_frames(f, std::mem::take(&mut raw)).await?;
            }
            pw.add_records(self.records[p]);
            self.reservation.shrink(held);
        }
        Ok(())
    }

    /// Discards everything: memory, spills and the attempt's output.
    pub async fn abort(mut self) -> Result<()> {
        for run in self.spills.runs.drain(..) {
            let _ = self.spill_store.delete(&run.file).await;
        }
        self.reservation.free();
        self.writer.abort().await
    }
}

/// Adds the partition being merged to where a spill was found damaged.
fn in_partition(e: Error, p: usize) -> Error {
    match e {
        Error::SpillCorrupt { object, at, reason } => Error::SpillCorrupt {
            object,
            at: format!("partition {p}, {at}"),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ops::Range;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::layout::Layout;
    use crate::memory::MemoryPool;
    use crate::spill::LocalSpillStore;
    use crate::store::{ObjectKey, ObjectMeta, ObjectSink, PutOutcome, ShuffleStore};

    /// Objects in a map (enough for one map output).
    #[derive(Debug, Default)]
    struct MemStore(Arc<Mutex<HashMap<String, Bytes>>>);

    struct MemSink(Arc<Mutex<HashMap<String, Bytes>>>, String, Vec<u8>);

    #[async_trait]
    impl ObjectSink for MemSink {
        async fn write(&mut self, data: Bytes) -> Result<()> {
            self.2.extend_from_slice(&data);
            Ok(())
        }
        async fn finish(self: Box<Self>) -> Result<u64> {
            let len = self.2.len() as u64;
            self.0.lock().unwrap().insert(self.1, Bytes::from(self.2));
            Ok(len)
        }
        async fn abort(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }

    #[async_trait]
    impl ShuffleStore for MemStore {
        fn name(&self) -> &'static str {
            "memory"
        }
        fn supports_reliable_storage(&self) -> bool {
            false
        }
        fn describe(&self, key: &ObjectKey) -> String {
            format!("mem://{}", key.path)
        }
        async fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
            Ok(Box::new(MemSink(
                Arc::clone(&self.0),
                key.path.clone(),
                Vec::new(),
            )))
        }
        async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
            self.0.lock().unwrap().insert(key.path.clone(), data);
            Ok(())
        }
        async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome> {
            let mut m = self.0.lock().unwrap();
            if m.contains_key(&key.path) {
                return Ok(PutOutcome::AlreadyExists);
            }
            m.insert(key.path.clone(), data);
            Ok(PutOutcome::Created)
        }
        async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
            self.0
                .lock()
                .unwrap()
                .get(&key.path)
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    object: key.path.clone(),
                })
        }
        async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
            let b = self.get(key).await?;
            let end = (range.end as usize).min(b.len());
            Ok(b.slice((range.start as usize).min(end)..end))
        }
        async fn delete(&self, keys: &[ObjectKey]) -> Result<()> {
            let mut m = self.0.lock().unwrap();
            for k in keys {
                m.remove(&k.path);
            }
            Ok(())
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            let m = self.0.lock().unwrap();
            Ok(m.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| ObjectMeta {
                    key: ObjectKey::new(0, k.clone()),
                    size: v.len() as u64,
                    modified_unix_secs: 0,
                })
                .collect())
        }
    }

    /// A buffer for map 0 of shuffle 0 (4 partitions) over `store`, that
    /// has spilled blocks of partition 2 once; the spill file's path.
    async fn spilled(store: &Arc<MemStore>, dir: &std::path::Path) -> (MapOutputBuffer, String) {
        let metrics = Arc::new(ShuffleMetrics::default());
        let writer = MapOutputWriter::new(
            Arc::clone(store) as Arc<dyn ShuffleStore>,
            Arc::clone(&metrics),
            Layout::new("app"),
            Codec::Lz4,
            0,
            0,
            0,
            4,
            Default::default(),
            Default::default(),
            false,
        );
        let spill: Arc<dyn SpillStore> = Arc::new(LocalSpillStore::new(vec![dir.into()]));
        let mut buf = MapOutputBuffer::new(
            writer,
            MemoryPool::new(1 << 20).reservation("test buffer"),
            spill,
            metrics,
        );
        for i in 0..4u32 {
            let block: Vec<u8> = (0..4000u32).map(|j| (j * 13 + i) as u8).collect();
            buf.write_block(2, &block, 1).await.expect("write");
        }
        buf.spill().await.expect("spill");
        buf.write_block(0, b"in memory", 1).await.expect("write");
        buf.write_block(1, b"in memory", 1).await.expect("write");
        let path = buf.spills.runs[0].file.id.clone();
        (buf, path)
    }

    /// Damage in a spill is caught by the merge (which copies frames without
    /// decoding them), reported with the spill object and partition, and
    /// nothing is committed.
    #[tokio::test]
    async fn damaged_spill_fails_the_commit_naming_object_and_partition() {
        let dir = tempfile::tempdir().expect("temp dir");
        for damage in ["flip", "truncate"] {
            let store = Arc::new(MemStore::default());
            let (buf, path) = spilled(&store, dir.path()).await;
            let mut bytes = std::fs::read(&path).expect("spill file");
            let mid = bytes.len() / 2;
            match damage {
                "flip" => bytes[mid] ^= 0x5a,
                _ => bytes.truncate(mid),
            }
            std::fs::write(&path, &bytes).expect("damage");
            let err = buf.commit().await.expect_err(damage);
            assert!(err.is_data_loss(), "{err}");
            let want = if damage == "flip" {
                "checksum mismatch"
            } else {
                "truncated"
            };
            match &err {
                Error::SpillCorrupt { object, at, reason } => {
                    assert_eq!(object, &path, "{err}");
                    assert!(at.starts_with("partition 2"), "{err}");
                    assert!(reason.contains(want), "{err}");
                }
                other => panic!("{damage}: expected a damaged spill, got {other}"),
            }
            assert!(
                store.0.lock().unwrap().is_empty(),
                "{damage}: nothing may be committed"
            );
            assert!(!std::path::Path::new(&path).exists(), "spill deleted");
        }
        // Undamaged, the same buffer commits all three partitions.
        let store = Arc::new(MemStore::default());
        let (buf, _) = spilled(&store, dir.path()).await;
        let status = buf.commit().await.expect("commit");
        assert_eq!(status.records, vec![1, 1, 4, 0]);
    }

    /// A buffer dropped without commit or abort (its task failed or was
    /// killed) deletes its spill files.
    #[tokio::test]
    async fn dropped_buffer_deletes_its_spills() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(MemStore::default());
        let (buf, path) = spilled(&store, dir.path()).await;
        assert!(std::path::Path::new(&path).exists(), "spilled");
        drop(buf);
        let start = Instant::now();
        while std::path::Path::new(&path).exists() && start.elapsed().as_secs() < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            !std::path::Path::new(&path).exists(),
            "the dropped buffer's spill {path} is still there"
        );
    }
}
