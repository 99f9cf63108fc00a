//! Exchanges: moving Arrow batches between stages through the shuffle manager.
//!
//! ```text
//!  map task (stage S)                                   reduce task (stage S+1)
//!  plan.execute(p) ─▶ BatchPartitioner ─▶ shuffle_arrow::MapTaskWriter.write_rows(batch, row → part)
//!                      (hash: a partition per row;          or .write_to(part, rows)
//!                       round-robin | single: parts)       (gathers, encodes, MapOutputBuffer.write_block)
//!                                                          └─ commit ─▶ MapStatus ─▶ MapOutputTracker
//!  ShuffleReadExec(part) ◀─ decode_batch ◀─ manager.reader(shuffle, statuses, part..part+1)
//! ```
//!
//! A map task computes under a CPU slot and commits under the I/O budget:
//! once its last block is buffered it gives the slot back and waits for an
//! upload permit, so the next task's CPU work overlaps this one's PUTs. The
//! buffer (and its memory reservation) lives until the commit ends, so
//! memory stays bounded by the slots plus the uploads in flight.
//!
//! Each block is one IPC-encoded record batch (schema known to both sides, see
//! [`codec`]); the shuffle layer compresses, checksums, buffers and spills.
//! Hash partitioning uses the stable hash in [`hash`], so every backend and
//! every retry routes a key to the same partition.

pub mod codec;
pub mod hash;

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::StreamExt;
use shuffle_arrow::{MapTaskWriter, PartitionScheme};
use shuffle_core::MapStatus;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Result;
use crate::expr::PhysicalExpr;
use crate::metrics::TaskMetrics;
use crate::runtime::{BatchStream, TaskContext};

/// How an exchange distributes rows.
#[derive(Debug, Clone)]
pub enum Partitioning {
    /// By the stable hash of key expressions into `n` partitions.
    Hash(Vec<PhysicalExpr>, usize),
    /// Evenly into `n` partitions, ignoring content.
    RoundRobin(usize),
    /// Everything into one partition (global sort, limit, broadcast).
    Single,
}

impl Partitioning {
    pub fn num_partitions(&self) -> usize {
        match self {
            Partitioning::Hash(_, n) | Partitioning::RoundRobin(n) => *n,
            Partitioning::Single => 1,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Partitioning::Hash(k, n) => format!("hash({} keys) x{n}", k.len()),
            Partitioning::RoundRobin(n) => format!("round-robin x{n}"),
            Partitioning::Single => "single".into(),
        }
    }
}

/// Splits batches into per-partition batches.
#[derive(Debug)]
pub struct BatchPartitioner {
    partitioning: Partitioning,
    seed: u64,
    hashes: Vec<u64>,
    next_rr: usize,
}

impl BatchPartitioner {
    pub fn new(partitioning: Partitioning, seed: u64, start: usize) -> Self {
        Self {
            partitioning,
            seed,
            hashes: Vec::new(),
            next_rr: start,
        }
    }

    /// Splits `batch`; calls `f(partition, sub_batch)` for every non-empty part.
    pub fn partition(
        &mut self,
        batch: &RecordBatch,
        mut f: impl FnMut(usize, RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        match &self.partitioning {
            Partitioning::Single => f(0, batch.clone()),
            Partitioning::RoundRobin(n) => {
                let n = *n;
                let per = rows.div_ceil(n).max(1);
                let mut off = 0;
                while off < rows {
                    let len = per.min(rows - off);
                    let p = self.next_rr % n;
                    self.next_rr = self.next_rr.wrapping_add(1);
                    f(p, batch.slice(off, len))?;
                    off += len;
                }
                Ok(())
            }
            Partitioning::Hash(_, n) => {
                let n = *n;
                let parts = self.route(batch)?.unwrap_or_default();
                split_by_index(batch, &parts, n, f)
            }
        }
    }

    /// With hash partitioning, each row's partition (the batch is not
    /// split: the map-output writer gathers rows per partition when it
    /// builds a block); `None` for the other schemes.
    pub fn route(&mut self, batch: &RecordBatch) -> Result<Option<Vec<u32>>> {
        let Partitioning::Hash(keys, n) = &self.partitioning else {
            return Ok(None);
        };
        let n = *n;
        let cols = keys
            .iter()
            .map(|k| k.evaluate(batch))
            .collect::<Result<Vec<_>>>()?;
        hash::hash_columns(&cols, self.seed, &mut self.hashes)?;
        Ok(Some(
            self.hashes
                .iter()
                .map(|h| hash::bucket(*h, n) as u32)
                .collect(),
        ))
    }
}

/// Splits a batch by a per-row partition index: shared with the DataFusion
/// adapter through the Arrow layer.
pub use shuffle_arrow::partition::split_by_index;

/// Writes `stream` (partition `ctx.partition` of a map stage, already
/// executed, so its shuffle reads may be under way) as map output of
/// `shuffle_id`.
///
/// `slot` (the task's CPU slot) is released once the output is computed;
/// the commit then waits for a permit of `io` (the uploads in flight).
pub async fn write_map_output(
    mut stream: BatchStream,
    ctx: Arc<TaskContext>,
    shuffle_id: u32,
    partitioning: Partitioning,
    slot: Option<OwnedSemaphorePermit>,
    io: &Semaphore,
) -> Result<MapStatus> {
    let map_id = ctx.partition as u32;
    // The engine partitions by its own expressions and hands the writer
    // each row's partition (`write_rows`) or each part (`write_to`); the
    // scheme only sizes the writer.
    let mut writer = MapTaskWriter::new(
        ctx.manager.as_ref(),
        shuffle_id,
        map_id,
        ctx.attempt,
        PartitionScheme::hash(partitioning.num_partitions()),
    )
    .await?;
    let mut partitioner = BatchPartitioner::new(partitioning, hash::SEED_EXCHANGE, ctx.partition);
    // Encoded bytes reported to the task's metrics as blocks are written.
    let mut reported = 0u64;
    let mut report = |w: &MapTaskWriter| {
        let encoded = w.stats().encoded_bytes;
        TaskMetrics::add(&ctx.metrics.bytes_out, encoded - reported);
        reported = encoded;
    };
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            TaskMetrics::add(&ctx.metrics.rows_out, batch.num_rows() as u64);
            if batch.num_rows() == 0 {
                continue;
            }
            if let Some(rows) = partitioner.route(&batch)? {
                writer.write_rows(&batch, &rows).await?;
                report(&writer);
                continue;
            }
            let mut parts = Vec::new();
            partitioner.partition(&batch, |p, b| {
                parts.push((p, b));
                Ok(())
            })?;
            for (p, b) in parts {
                writer.write_to(p as u32, &b).await?;
            }
            report(&writer);
        }
        // What waits for a full block, before the slot is given back.
        writer.flush().await?;
        report(&writer);
        Ok(())
    }
    .await;
    drop(stream);
    drop(slot);
    match result {
        Ok(()) => {
            let _upload = io
                .acquire()
                .await
                .map_err(|_| crate::error::EngineError::internal("upload budget closed"))?;
            let (status, _) = writer.commit().await?;
            let written: u64 = status.lengths.iter().sum();
            TaskMetrics::add(&ctx.metrics.shuffle_bytes_written, written);
            Ok(status)
        }
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!("aborting map output {shuffle_id}/{map_id}: {abort}");
            }
            Err(e)
        }
    }
}
