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

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::format::frame::encode_frame;
use crate::format::Codec;
use crate::manager::MapStatus;
use crate::memory::MemoryReservation;
use crate::metrics::{add, ShuffleMetrics};
use crate::spill::{SpillFile, SpillReader, SpillStore, SpillWriter};
use crate::writer::MapOutputWriter;
use crate::{Error, Result};

struct SpillRun {
    file: SpillFile,
    lengths: Vec<u64>,
    raw: Vec<u64>,
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
    spills: Vec<SpillRun>,
    busy_ns: u64,
}

impl std::fmt::Debug for MapOutputBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapOutputBuffer")
            .field("writer", &self.writer)
            .field("buffered", &self.reservation.size())
            .field("spills", &self.spills.len())
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
        Self {
            codec: Codec::Lz4,
            writer,
            frames: vec![Vec::new(); n],
            raw: vec![0; n],
            records: vec![0; n],
            reservation,
            spill_store,
            metrics,
            spills: Vec::new(),
            busy_ns: 0,
        }
    }

    /// Sets the frame codec (default lz4).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    pub fn num_partitions(&self) -> u32 {
        self.writer.num_partitions()
    }

    /// Spill files written so far.
    pub fn spill_count(&self) -> usize {
        self.spills.len()
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
        let mut frame = Vec::with_capacity(block.len() / 2 + 64);
        encode_frame(block, self.codec, &mut frame)?;
        add(&self.metrics.shuffle.frames_written, 1);
        let size = frame.len();
        if self.reservation.try_grow(size).is_err() {
            self.spill().await?;
            // One frame may exceed a tiny budget on its own: hold it anyway.
            if self.reservation.try_grow(size).is_err() {
                self.reservation.grow(size);
            }
        }
        let p = partition as usize;
        self.frames[p].push(Bytes::from(frame));
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
        for (p, frames) in self.frames.iter().enumerate() {
            for f in frames {
                if let Err(e) = w.write_frames(f).await {
                    let _ = w.abort().await;
                    return Err(e);
                }
                lengths[p] += f.len() as u64;
            }
        }
        let file = w.finish().await?;
        let raw = std::mem::replace(&mut self.raw, vec![0; n]);
        self.spills.push(SpillRun { file, lengths, raw });
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
            .iter()
            .map(|s| {
                SpillReader::open(Arc::clone(&self.spill_store), s.file.clone(), &self.metrics)
            })
            .collect();
        let merged = self.merge(&mut readers).await;
        for r in &mut readers {
            let _ = r.delete().await;
        }
        self.spills.clear();
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
            let spilled: u64 = self.spills.iter().map(|s| s.lengths[p]).sum();
            if spilled == 0 && self.frames[p].is_empty() {
                continue;
            }
            let mut pw = self.writer.partition_writer(p as u32).await?;
            for (run, reader) in self.spills.iter().zip(readers.iter_mut()) {
                let mut left = run.lengths[p];
                let mut raw = run.raw[p];
                while left > 0 {
                    let chunk = reader.read_up_to(left.min(1 << 20) as usize).await?;
                    if chunk.is_empty() {
                        return Err(Error::corrupt(
                            &run.file.id,
                            format!("spill file ends early in partition {p}"),
                        ));
                    }
                    left -= chunk.len() as u64;
                    // Raw bytes are accounted once per run and partition.
                    pw.write_frames(chunk, std::mem::take(&mut raw)).await?;
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
        for run in self.spills.drain(..) {
            let _ = self.spill_store.delete(&run.file).await;
        }
        self.reservation.free();
        self.writer.abort().await
    }
}
