//! The map-output writer: one per map task attempt (Spark's
//! `ShuffleMapOutputWriter`).
//!
//! ```text
//!  partition_writer(0) ─▶ write/write_block ─┐
//!  partition_writer(2) ─▶ ...                ├─▶ frames ─▶ ObjectSink (data object, streamed)
//!  partition_writer(5) ─▶ ...                ┘
//!  commit() ─▶ footer (index) appended ─▶ finish: ONE write publishes ─▶ MapStatus (the winner's)
//!  abort()  ─▶ data object discarded, nothing visible
//! ```
//!
//! Partition writers are handed out in strictly increasing partition order,
//! so the data object is written front to back and never buffered whole.
//! Skipped partitions are empty. Lengths, crc32s and record counts are
//! tracked as bytes go by; `commit` appends the index as the footer and
//! publishes the object, which is the whole commit (see `manager` for who
//! wins between attempts). An all-empty output writes nothing.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::format::frame::encode_frame;
use crate::format::{encode_footer, footer_len, Codec, IndexFile};
use crate::layout::Layout;
use crate::metrics::{add, ShuffleMetrics};
use crate::status::{read_footer, KeyLog, MapStatus, Winners};
use crate::store::{ObjectKey, ObjectSink, ShuffleStore};
use crate::{Error, Result};

/// Encoded frames are handed to the sink in batches of about this size.
const SINK_BATCH: usize = 1 << 20;
/// Raw bytes per frame for byte-stream writes ([`PartitionWriter::write`]).
pub const STREAM_FRAME_BYTES: usize = 256 << 10;

/// Writes one map task attempt's output.
pub struct MapOutputWriter {
    store: Arc<dyn ShuffleStore>,
    metrics: Arc<ShuffleMetrics>,
    layout: Layout,
    codec: Codec,
    shuffle_id: u32,
    map_id: u32,
    attempt: u32,
    num_partitions: u32,
    /// Where every key is recorded before it is written (see `manager`).
    written: Arc<KeyLog>,
    /// The manager's first commit per map (see `manager`).
    winners: Arc<Winners>,
    /// The store's `create_if_absent` decides the winner (key without attempt).
    conditional: bool,
    sink: Option<Box<dyn ObjectSink>>,
    /// Next partition that may be opened.
    next_partition: u32,
    current: Option<u32>,
    crc: crc32fast::Hasher,
    lengths: Vec<u64>,
    checksums: Vec<u32>,
    records: Vec<u64>,
    /// Byte-stream bytes not yet framed.
    pending: Vec<u8>,
    /// Encoded frames not yet handed to the sink.
    out: Vec<u8>,
    raw_bytes: u64,
    busy_ns: u64,
    finished: bool,
}

impl std::fmt::Debug for MapOutputWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapOutputWriter")
            .field("shuffle_id", &self.shuffle_id)
            .field("map_id", &self.map_id)
            .field("attempt", &self.attempt)
            .field("current", &self.current)
            .finish()
    }
}

impl MapOutputWriter {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn ShuffleStore>,
        metrics: Arc<ShuffleMetrics>,
        layout: Layout,
        codec: Codec,
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
        num_partitions: u32,
        written: Arc<KeyLog>,
        winners: Arc<Winners>,
        conditional: bool,
    ) -> Self {
        let n = num_partitions as usize;
        Self {
            store,
            metrics,
            layout,
            codec,
            shuffle_id,
            map_id,
            attempt,
            num_partitions,
            written,
            winners,
            conditional,
            sink: None,
            next_partition: 0,
            current: None,
            crc: crc32fast::Hasher::new(),
            lengths: vec![0; n],
            checksums: vec![0; n],
            records: vec![0; n],
            pending: Vec::new(),
            out: Vec::new(),
            raw_bytes: 0,
            busy_ns: 0,
            finished: false,
        }
    }

    pub fn shuffle_id(&self) -> u32 {
        self.shuffle_id
    }
    pub fn map_id(&self) -> u32 {
        self.map_id
    }
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// The frame codec this writer encodes with (`shuffle.codec`).
    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn num_partitions(&self) -> u32 {
        self.num_partitions
    }

    /// Opens the writer of `partition`; partitions must strictly increase.
    pub async fn partition_writer(&mut self, partition: u32) -> Result<PartitionWriter<'_>> {
        if partition >= self.num_partitions {
            return Err(Error::Protocol(format!(
                "partition {partition} out of range: shuffle {} has {} partitions",
                self.shuffle_id, self.num_partitions
            )));
        }
        if partition < self.next_partition {
            return Err(Error::Protocol(format!(
                "partition writers must be opened in strictly increasing order: \
                 asked for {partition} after {}",
                self.next_partition - 1
            )));
        }
        self.close_partition().await?;
        self.current = Some(partition);
        self.next_partition = partition + 1;
        Ok(PartitionWriter { w: self })
    }

    async fn close_partition(&mut self) -> Result<()> {
        let Some(p) = self.current.take() else {
            return Ok(());
        };
        self.flush_pending(p)?;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
        self.checksums[p as usize] = crc.finalize();
        self.maybe_flush_out().await
    }

    fn flush_pending(&mut self, p: u32) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.encode_block(p, &pending)?;
        self.pending = pending;
        self.pending.clear();
        Ok(())
    }

    fn encode_block(&mut self, p: u32, block: &[u8]) -> Result<()> {
        let start = self.out.len();
        let n = encode_frame(block, self.codec, &mut self.out)?;
        self.crc.update(&self.out[start..]);
        self.lengths[p as usize] += n as u64;
        self.raw_bytes += block.len() as u64;
        add(&self.metrics.shuffle.frames_written, 1);
        Ok(())
    }

    async fn maybe_flush_out(&mut self) -> Result<()> {
        if self.out.len() >= SINK_BATCH {
            self.flush_out().await?;
        }
        Ok(())
    }

    async fn flush_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::take(&mut self.out));
        self.sink_write(data).await
    }

    /// The data object's key: one per map with conditional create, one
    /// per attempt without.
    fn key(&self) -> ObjectKey {
        if self.conditional {
            self.layout.map_key(self.shuffle_id, self.map_id)
        } else {
            self.layout
                .data_key(self.shuffle_id, self.map_id, self.attempt)
        }
    }

    async fn sink_write(&mut self, data: Bytes) -> Result<()> {
        if self.sink.is_none() {
            let key = self.key();
            self.written.record(self.shuffle_id, key.clone());
            self.sink = Some(if self.conditional {
                self.store.create_if_absent(&key).await?
            } else {
                self.store.create(&key).await?
            });
        }
        match self.sink.as_mut() {
            Some(sink) => sink.write(data).await,
            None => Err(Error::Protocol("data sink missing".into())),
        }
    }

    /// Publishes the output. Returns the map status of the winning attempt:
    /// this one, or an earlier one that committed first.
    pub async fn commit(mut self) -> Result<MapStatus> {
        let started = Instant::now();
        let res = self.commit_inner().await;
        self.busy_ns += started.elapsed().as_nanos() as u64;
        add(&self.metrics.shuffle.write_time_ns, self.busy_ns);
        if res.is_err() {
            self.discard().await;
        }
        res
    }

    async fn commit_inner(&mut self) -> Result<MapStatus> {
        self.close_partition().await?;
        let key = self.key();
        // A map this process already committed keeps its winner: no request.
        if let Some(winner) = self.winners.get(self.shuffle_id, self.map_id) {
            return Ok(self.lost_to(winner, &key, false).await);
        }
        let total: u64 = self.lengths.iter().sum();
        let index = IndexFile::from_lengths(
            self.shuffle_id,
            self.map_id,
            self.attempt,
            &self.lengths,
            self.checksums.clone(),
            self.records.clone(),
        );
        if total == 0 {
            // All empty: the status is the whole output; nothing is stored.
            self.finished = true;
            let status = MapStatus::from_index(&index, self.raw_bytes, key.clone());
            return match self.winners.claim(status) {
                Ok(status) => {
                    self.count_commit(0);
                    Ok(status)
                }
                Err(winner) => Ok(self.lost_to(*winner, &key, false).await),
            };
        }
        self.out.extend_from_slice(&encode_footer(&index));
        self.flush_out().await?;
        let sink = self
            .sink
            .take()
            .ok_or_else(|| Error::Protocol("data sink missing at commit".into()))?;
        let expected = total + footer_len(self.lengths.len()) as u64;
        match sink.finish().await {
            Ok(written) => {
                self.finished = true;
                if written != expected {
                    return Err(Error::corrupt(
                        self.store.describe(&key),
                        format!(
                            "wrote {written} bytes but partitions and footer add up to {expected}"
                        ),
                    ));
                }
                let status = MapStatus::from_index(&index, self.raw_bytes, key.clone());
                if self.conditional {
                    // The store published ours: it is the winner.
                    self.winners.set(status.clone());
                } else if let Err(winner) = self.winners.claim(status.clone()) {
                    // Another attempt of this process committed meanwhile.
                    return Ok(self.lost_to(*winner, &key, true).await);
                }
                self.count_commit(total);
                Ok(status)
            }
            Err(Error::AlreadyExists { .. }) if self.conditional => {
                // Another attempt (perhaps another process) published
                // first; ours never became visible. Its footer says who.
                self.finished = true;
                add(&self.metrics.shuffle.commit_conflicts, 1);
                let winner = read_footer(&*self.store, &key, Some(self.num_partitions)).await?;
                self.winners.set(winner.clone());
                Ok(winner)
            }
            Err(e) => Err(e),
        }
    }

    fn count_commit(&self, total: u64) {
        let m = &self.metrics.shuffle;
        add(&m.bytes_written, total);
        add(&m.raw_bytes_written, self.raw_bytes);
        add(&m.records_written, self.records.iter().sum());
        add(&m.maps_committed, 1);
    }

    /// Gives up this attempt for `winner`: discards what it wrote (its
    /// own object when `published`, which only happens with attempt ids in
    /// keys) and reports the winner.
    async fn lost_to(&mut self, winner: MapStatus, key: &ObjectKey, published: bool) -> MapStatus {
        add(&self.metrics.shuffle.commit_conflicts, 1);
        self.finished = true;
        self.discard().await;
        if !published && !self.conditional {
            // Nothing of ours became visible.
            self.written.forget(self.shuffle_id, key);
        }
        if published && winner.location != *key {
            match self.store.delete(std::slice::from_ref(key)).await {
                Ok(()) => self.written.forget(self.shuffle_id, key),
                Err(e) => tracing::warn!(
                    object = %self.store.describe(key),
                    error = %e,
                    "could not delete a losing attempt's data object; cleanup retries it"
                ),
            }
        }
        winner
    }

    async fn discard(&mut self) {
        if let Some(sink) = self.sink.take() {
            let _ = sink.abort().await;
        }
    }

    /// Discards everything this attempt wrote.
    pub async fn abort(mut self) -> Result<()> {
        self.finished = true;
        add(&self.metrics.shuffle.maps_aborted, 1);
        match self.sink.take() {
            Some(sink) => {
                sink.abort().await?;
                if !self.conditional {
                    // With conditional create the key may be the winner's.
                    let key = self.key();
                    self.written.forget(self.shuffle_id, &key);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// Writes one partition's bytes; obtained from [`MapOutputWriter::partition_writer`].
pub struct PartitionWriter<'a> {
    w: &'a mut MapOutputWriter,
}

impl PartitionWriter<'_> {
    fn partition(&self) -> u32 {
        self.w.current.unwrap_or(0)
    }

    /// Appends bytes as a stream: they are cut into frames of
    /// [`STREAM_FRAME_BYTES`]; readers get them back in frame-sized blocks.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        let started = Instant::now();
        let p = self.partition();
        while !data.is_empty() {
            let room = STREAM_FRAME_BYTES - self.w.pending.len();
            let take = room.min(data.len());
            self.w.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.w.pending.len() == STREAM_FRAME_BYTES {
                self.w.flush_pending(p)?;
                self.w.maybe_flush_out().await?;
            }
        }
        self.w.busy_ns += started.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Appends one block as exactly one frame; readers get it back whole.
    pub async fn write_block(&mut self, block: &[u8]) -> Result<()> {
        let started = Instant::now();
        let p = self.partition();
        self.w.flush_pending(p)?;
        self.w.encode_block(p, block)?;
        self.w.maybe_flush_out().await?;
        self.w.busy_ns += started.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Appends bytes that are already whole frames of this format (from a
    /// spill or a memory buffer): concatenated without decompressing.
    pub(crate) async fn write_frames(&mut self, frames: Bytes, raw_bytes: u64) -> Result<()> {
        let p = self.partition();
        self.w.flush_pending(p)?;
        self.w.crc.update(&frames);
        self.w.lengths[p as usize] += frames.len() as u64;
        self.w.raw_bytes += raw_bytes;
        if frames.len() >= 64 << 10 {
            // Large runs go to the sink as they are: no copy.
            self.w.flush_out().await?;
            self.w.sink_write(frames).await
        } else {
            self.w.out.extend_from_slice(&frames);
            self.w.maybe_flush_out().await
        }
    }

    /// Counts records written to this partition (for metrics and the index).
    pub fn add_records(&mut self, n: u64) {
        let p = self.partition() as usize;
        self.w.records[p] += n;
    }
}

impl Drop for MapOutputWriter {
    fn drop(&mut self) {
        if !self.finished && self.sink.is_some() {
            tracing::debug!(
                shuffle = self.shuffle_id,
                map = self.map_id,
                attempt = self.attempt,
                "map output writer dropped without commit or abort; discarding"
            );
        }
    }
}
