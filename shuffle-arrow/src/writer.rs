//! One map task's record batches into one committed map output.
//!
//! ```text
//!  write(batch, keys) ─▶ Partitioner ─▶ each row's p ─┐
//!  write_rows(batch, partition of each row) ──────────┼─▶ PendingRows ─(64 KiB of p)─▶ p's rows
//!  write_to(p, part) ─────────────────────────────────┘      as one batch ─▶ BatchEncoder
//!      ─▶ MapOutputBuffer.write_block(p)
//!  flush() / commit() ─▶ what is pending, then MapStatus      abort() ─▶ nothing left behind
//! ```
//!
//! A partition's rows are held until they are worth a block of their own
//! ([`crate::pending`]): one block per input sub-batch would cost a message
//! header, a frame and a batch on the read side for every few rows.
//!
//! The buffer (shuffle-core's [`MapOutputBuffer`]) takes partitions in any
//! order, compresses, accounts its memory in the manager's pool and spills
//! when the pool is full; `commit` writes the data object and its index
//! through the manager's protocol and returns the winning attempt's status.

use arrow::array::{ArrayRef, RecordBatch};
use futures::{Stream, StreamExt};
use shuffle_core::{MapOutputBuffer, MapStatus, ShuffleManager, ShuffleManagerExt};

use crate::codec::BatchEncoder;
use crate::error::{Error, Result};
use crate::partition::{PartitionScheme, Partitioner};
use crate::pending::PendingRows;

/// [`MapTaskWriter::write_rows`] cuts a batch into parts (a take, then
/// slices) when its partitions would get at least this many rows each on
/// average, and routes rows one by one below that (see [`crate::pending`]).
const CUT_MIN_ROWS_PER_PART: usize = 128;

/// What a [`MapTaskWriter`] has written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Blocks written (each one partition's pending rows, encoded).
    pub blocks: u64,
    /// Rows.
    pub records: u64,
    /// Encoded (IPC, uncompressed) bytes handed to the shuffle.
    pub encoded_bytes: u64,
    /// Times the map-output buffer spilled to the spill store (memory
    /// limit reached).
    pub spills: u64,
}

/// Writes one map task attempt's batches into a map output (see the module docs).
pub struct MapTaskWriter {
    shuffle_id: u32,
    map_id: u32,
    buffer: MapOutputBuffer,
    partitioner: Partitioner,
    encoder: BatchEncoder,
    block: Vec<u8>,
    parts: Vec<(usize, RecordBatch)>,
    full: Vec<u32>,
    pending: PendingRows,
    stats: WriteStats,
}

impl std::fmt::Debug for MapTaskWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapTaskWriter")
            .field("shuffle_id", &self.shuffle_id)
            .field("map_id", &self.map_id)
            .field("scheme", &self.partitioner.scheme())
            .field("stats", &self.stats)
            .finish()
    }
}

impl MapTaskWriter {
    /// A writer for attempt `attempt` of map `map_id` of a registered
    /// shuffle whose partition count is `scheme.num_partitions()`.
    /// Round-robin partitioning starts at partition `map_id % n`.
    pub async fn new<M: ShuffleManager + ?Sized>(
        manager: &M,
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
        scheme: PartitionScheme,
    ) -> Result<Self> {
        let partitioner = Partitioner::new(scheme, map_id as usize)?;
        let buffer = manager.buffered_writer(shuffle_id, map_id, attempt).await?;
        if buffer.num_partitions() as usize != scheme.num_partitions() {
            let registered = buffer.num_partitions();
            // Best effort: the protocol error below is what the caller needs.
            let _ = buffer.abort().await;
            return Err(Error::Shuffle(shuffle_core::Error::Protocol(format!(
                "shuffle {shuffle_id} is registered with {registered} partitions but map \
                 {map_id} partitions into {}; register it with the writer's partition count",
                scheme.num_partitions()
            ))));
        }
        Ok(Self {
            shuffle_id,
            map_id,
            buffer,
            partitioner,
            encoder: BatchEncoder::new(),
            block: Vec::new(),
            parts: Vec::new(),
            full: Vec::new(),
            pending: PendingRows::new(),
            stats: WriteStats::default(),
        })
    }

    pub fn shuffle_id(&self) -> u32 {
        self.shuffle_id
    }

    pub fn map_id(&self) -> u32 {
        self.map_id
    }

    /// Partitions `batch` by the scheme (`keys`: its evaluated hash key
    /// columns; ignored unless hashing) and writes every non-empty part.
    pub async fn write(&mut self, batch: &RecordBatch, keys: &[ArrayRef]) -> Result<()> {
        if let Some(rows) = self.partitioner.assign(batch, keys)? {
            // Hashing routes rows; they are gathered per partition only
            // when a block is built.
            let rows = rows.to_vec();
            return self.write_rows(batch, &rows).await;
        }
        let mut parts = std::mem::take(&mut self.parts);
        let cut = self.partitioner.partition::<Error>(batch, keys, |p, b| {
            parts.push((p, b));
            Ok(())
        });
        self.write_parts(parts, cut).await
    }

    /// Writes the parts a cut produced, each with [`Self::write_to`],
    /// unless the cut failed; stops at the first error. `parts` is the
    /// writer's reused buffer, handed back empty.
    async fn write_parts(
        &mut self,
        mut parts: Vec<(usize, RecordBatch)>,
        cut: Result<()>,
    ) -> Result<()> {
        let mut result = cut;
        for (p, b) in parts.drain(..) {
            if result.is_ok() {
                result = self.write_to(p as u32, &b).await;
            }
        }
        self.parts = parts;
        result
    }

    /// Writes `batch` whole into `partition` (the caller partitioned it).
    /// The rows may wait in memory (at most
    /// [`crate::pending::PENDING_TOTAL_BYTES`] for all partitions) until
    /// their partition has enough for a block, or until [`Self::flush`] or
    /// [`Self::commit`].
    pub async fn write_to(&mut self, partition: u32, batch: &RecordBatch) -> Result<()> {
        self.check_partition(partition)?;
        if self.pending.push(partition, batch.clone()) {
            self.write_pending(partition).await?;
        }
        if self.pending.over_budget() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes row `r` of `batch` into partition `partitions[r]` (the caller
    /// routed every row; one entry per row). With many partitions for the
    /// rows, nothing is copied until a partition has enough rows for a
    /// block: then its rows are gathered from the batches they came from,
    /// each copied once. With few, the batch is cut into one part per
    /// partition at once (`CUT_MIN_ROWS_PER_PART`).
    pub async fn write_rows(&mut self, batch: &RecordBatch, partitions: &[u32]) -> Result<()> {
        if partitions.len() != batch.num_rows() {
            return Err(Error::Arrow(
                arrow::error::ArrowError::InvalidArgumentError(format!(
                    "write_rows needs one partition per row: {} for a batch of {} rows",
                    partitions.len(),
                    batch.num_rows()
                )),
            ));
        }
        if let Some(max) = partitions.iter().max() {
            self.check_partition(*max)?;
        }
        let n = self.buffer.num_partitions() as usize;
        if batch.num_rows() >= CUT_MIN_ROWS_PER_PART * n {
            // Few partitions for the rows: parts of hundreds of rows. One
            // take and a slice per partition (each part one run) then
            // costs less than keeping and gathering every row alone.
            let mut parts = std::mem::take(&mut self.parts);
            let cut = crate::partition::split_by_index::<Error>(batch, partitions, n, |p, b| {
                parts.push((p, b));
                Ok(())
            });
            return self.write_parts(parts, cut).await;
        }
        let mut full = std::mem::take(&mut self.full);
        self.pending.push_rows(batch.clone(), partitions, &mut full);
        let mut result = Ok(());
        for p in full.drain(..) {
            if result.is_ok() {
                result = self.write_pending(p).await;
            }
        }
        self.full = full;
        result?;
        if self.pending.over_budget() {
            self.flush().await?;
        }
        Ok(())
    }

    fn check_partition(&self, partition: u32) -> Result<()> {
        let n = self.buffer.num_partitions();
        if partition >= n {
            return Err(Error::Shuffle(shuffle_core::Error::Protocol(format!(
                "map {} of shuffle {} wrote to partition {partition}, but the shuffle has \
                 {n} partitions (0..{n})",
                self.map_id, self.shuffle_id
            ))));
        }
        Ok(())
    }

    /// Writes every partition's pending rows (a task that wants its CPU
    /// slot back before the commit calls this first).
    pub async fn flush(&mut self) -> Result<()> {
        for p in self.pending.partitions() {
            self.write_pending(p).await?;
        }
        Ok(())
    }

    /// Encodes `partition`'s pending rows as one block.
    async fn write_pending(&mut self, partition: u32) -> Result<()> {
        let Some(batch) = self.pending.take(partition)? else {
            return Ok(());
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.encoder.encode_into(&batch, &mut self.block)?;
        self.buffer
            .write_block(partition, &self.block, batch.num_rows() as u64)
            .await?;
        self.stats.blocks += 1;
        self.stats.records += batch.num_rows() as u64;
        self.stats.encoded_bytes += self.block.len() as u64;
        Ok(())
    }

    pub fn stats(&self) -> WriteStats {
        WriteStats {
            spills: self.buffer.spill_count() as u64,
            ..self.stats
        }
    }

    /// Writes what is pending and commits the map output; returns the
    /// status of the attempt that won (perhaps another attempt of the same
    /// map) and what this attempt wrote, pending rows included. On a failed
    /// flush the output is aborted.
    pub async fn commit(mut self) -> Result<(MapStatus, WriteStats)> {
        if let Err(e) = self.flush().await {
            let _ = self.buffer.abort().await;
            return Err(e);
        }
        let stats = self.stats();
        Ok((self.buffer.commit().await?, stats))
    }

    /// Drops everything written; leaves nothing behind.
    pub async fn abort(self) -> Result<()> {
        Ok(self.buffer.abort().await?)
    }

    /// Writes every `(batch, keys)` of `input`, then commits. On any error
    /// (of the input or of the shuffle) the output is aborted and the first
    /// error returned (an abort failure is dropped: the manager's cleanup
    /// deletes what an abort could not, by the keys it recorded).
    pub async fn write_all<S, E>(mut self, input: S) -> Result<(MapStatus, WriteStats), E>
    where
        S: Stream<Item = Result<(RecordBatch, Vec<ArrayRef>), E>>,
        E: From<Error>,
    {
        let mut input = std::pin::pin!(input);
        let result: Result<(), E> = async {
            while let Some(item) = input.next().await {
                let (batch, keys) = item?;
                self.write(&batch, &keys).await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(self.commit().await?),
            Err(e) => {
                let _ = self.abort().await;
                Err(e)
            }
        }
    }
}
