//! Rows partitioned but not yet encoded: every block a map task writes
//! should be big enough to be worth its framing.
//!
//! Partitioning a batch of `b` rows over `n` partitions leaves about `b / n`
//! rows per part. Encoded alone, each part costs an IPC message header, an
//! lz4 frame, a crc32 and, on the read side, a decode and a batch for the
//! operators above: with 1,000 partitions, q80 wrote 3x the bytes of 8
//! partitions. So a partition's parts wait here until they reach
//! [`PENDING_PARTITION_BYTES`] and are then encoded as one block. Order
//! within a partition is kept.
//!
//! # Two sizes
//! A part is often a slice of a bigger batch: DataFusion's partitioner and
//! [`crate::partition::split_by_index`] take the whole input batch once,
//! in partition order, and hand out slices of it. A slice keeps its whole
//! parent allocation alive, and arrow's `get_array_memory_size` reports
//! that whole allocation for every slice.
//! - **A partition's size** is what its slices hold of their parents
//!   (`get_slice_memory_size`): it decides when the partition is worth a
//!   block. Counting every slice at its parent's size made each part look
//!   full on arrival, so every part was written as a block of its own.
//! - **What is held** counts every parent allocation once, however many
//!   slices of it wait, until the last of them is written. Past
//!   [`PENDING_TOTAL_BYTES`] of it, [`PendingRows::over_budget`] asks for
//!   everything to be written. This bounds what a map task holds outside
//!   the memory pool, even when a rare partition keeps a few rows of every
//!   batch the task has seen.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, RecordBatch};

/// A partition's rows are encoded once they reach this many bytes (Arrow
/// memory of their slices).
pub const PENDING_PARTITION_BYTES: usize = 64 << 10;
/// Everything pending is written once the allocations it holds pass this
/// many bytes.
pub const PENDING_TOTAL_BYTES: usize = 8 << 20;

/// One partition's rows, with the parent allocation of each.
#[derive(Debug, Default)]
struct Part {
    rows: Vec<(RecordBatch, ParentKey)>,
    slice_bytes: usize,
}

/// Identifies the allocations a batch's columns live in.
type ParentKey = u64;

/// Per-partition pending rows of one map task (see the module docs).
#[derive(Debug, Default)]
pub struct PendingRows {
    parts: BTreeMap<u32, Part>,
    /// Parent allocations held: bytes (counted once) and pending slices.
    held: HashMap<ParentKey, (usize, usize)>,
    held_bytes: usize,
}

/// The slice's own bytes and the key of the allocations it lives in.
fn measure(batch: &RecordBatch) -> (usize, ParentKey) {
    let mut slice = 0usize;
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for col in batch.columns() {
        let data = col.to_data();
        slice += data
            .get_slice_memory_size()
            .unwrap_or_else(|_| col.get_array_memory_size());
        let ptr = data
            .buffers()
            .first()
            .map_or(0, |b| b.data_ptr().as_ptr() as usize as u64);
        key = (key ^ ptr).wrapping_mul(0x0100_0000_01b3);
    }
    (slice, key)
}

impl PendingRows {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `batch` to `partition`; returns the partition's rows, to be
    /// encoded as one block, once they reach [`PENDING_PARTITION_BYTES`].
    pub fn push(&mut self, partition: u32, batch: RecordBatch) -> Option<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return None;
        }
        let (slice, key) = measure(&batch);
        let held = self.held.entry(key).or_insert_with(|| {
            // Every slice reports its parents' whole buffers: the parent's size.
            let size = batch.get_array_memory_size();
            self.held_bytes += size;
            (size, 0)
        });
        held.1 += 1;
        let part = self.parts.entry(partition).or_default();
        part.rows.push((batch, key));
        part.slice_bytes += slice;
        if part.slice_bytes < PENDING_PARTITION_BYTES {
            return None;
        }
        let part = self.parts.remove(&partition)?;
        Some(self.release(part))
    }

    /// Whether everything pending should be written now (the allocations
    /// held passed [`PENDING_TOTAL_BYTES`]).
    pub fn over_budget(&self) -> bool {
        self.held_bytes > PENDING_TOTAL_BYTES
    }

    /// Bytes of the allocations pending rows hold (each counted once).
    pub fn bytes(&self) -> usize {
        self.held_bytes
    }

    /// Takes every partition's pending rows, in partition order.
    pub fn drain(&mut self) -> Vec<(u32, Vec<RecordBatch>)> {
        let parts = std::mem::take(&mut self.parts);
        let out = parts
            .into_iter()
            .map(|(p, part)| (p, self.release(part)))
            .collect();
        debug_assert!(self.held.is_empty() && self.held_bytes == 0);
        out
    }

    /// Stops holding `part`'s parents (those no other partition holds).
    fn release(&mut self, part: Part) -> Vec<RecordBatch> {
        part.rows
            .into_iter()
            .map(|(batch, key)| {
                if let Some(h) = self.held.get_mut(&key) {
                    h.1 -= 1;
                    if h.1 == 0 {
                        self.held_bytes -= h.0;
                        self.held.remove(&key);
                    }
                }
                batch
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: usize, start: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let col = Int64Array::from_iter_values(start..start + rows as i64);
        RecordBatch::try_new(schema, vec![Arc::new(col)]).unwrap()
    }

    #[test]
    fn a_partition_is_released_at_the_threshold_in_order() {
        let mut p = PendingRows::new();
        // 1,000 i64 rows are ~8 KiB: eight pushes stay below 64 KiB.
        let mut released = None;
        let mut pushed = 0;
        while released.is_none() {
            released = p.push(3, batch(1000, pushed * 1000));
            pushed += 1;
            assert!(pushed < 100, "never released");
        }
        let rows = released.unwrap();
        assert_eq!(rows.len() as i64, pushed);
        let total: usize = rows.iter().map(|b| b.get_array_memory_size()).sum();
        assert!(total >= PENDING_PARTITION_BYTES);
        let firsts: Vec<i64> = rows
            .iter()
            .map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0)
            })
            .collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
        assert_eq!(p.bytes(), 0);
        assert!(p.drain().is_empty());
    }

    #[test]
    fn drain_returns_partitions_in_order_and_empties() {
        let mut p = PendingRows::new();
        assert!(p.push(5, batch(10, 0)).is_none());
        assert!(p.push(1, batch(10, 0)).is_none());
        assert!(p.push(5, batch(0, 0)).is_none());
        assert!(p.bytes() > 0);
        assert!(!p.over_budget());
        let d = p.drain();
        assert_eq!(d.iter().map(|(q, _)| *q).collect::<Vec<_>>(), vec![1, 5]);
        assert_eq!(d[1].1.len(), 1, "the empty batch is not kept");
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn over_budget_past_the_total() {
        let mut p = PendingRows::new();
        // Many partitions, each below its own threshold.
        let mut q = 0;
        while !p.over_budget() {
            assert!(p.push(q, batch(1000, 0)).is_none());
            q += 1;
        }
        assert!(p.bytes() > PENDING_TOTAL_BYTES);
        assert_eq!(p.drain().len(), q as usize);
    }

    /// Slices of one parent: each partition is sized by its own rows, and
    /// the parent is held (and counted) once until its last slice is out.
    #[test]
    fn slices_are_sized_by_their_rows_and_their_parent_counted_once() {
        let mut p = PendingRows::new();
        let parent = batch(8192, 0);
        let parent_bytes = parent.get_array_memory_size();
        assert!(parent_bytes >= PENDING_PARTITION_BYTES, "{parent_bytes}");
        for q in 0..8u32 {
            let part = parent.slice(q as usize * 1024, 1024);
            assert!(
                p.push(q, part).is_none(),
                "partition {q}: 8 KiB of rows released as if it were the whole parent"
            );
        }
        assert_eq!(p.bytes(), parent_bytes, "the parent is counted once");
        // Partition 3 fills up and is released; the others still hold the parent.
        let mut released = None;
        let mut next = 1;
        while released.is_none() {
            released = p.push(3, batch(1024, next * 1024));
            next += 1;
            assert!(next < 100, "never released");
        }
        let rows = released.unwrap();
        assert_eq!(rows[0].num_rows(), 1024);
        assert_eq!(p.bytes(), parent_bytes, "7 slices still hold the parent");
        let rest = p.drain();
        assert_eq!(rest.len(), 7);
        assert_eq!(p.bytes(), 0);
    }

    /// A partition that keeps a few rows of every batch holds every batch:
    /// that is what the total budget counts, so memory stays bounded.
    #[test]
    fn a_rare_partition_holding_many_parents_trips_the_budget() {
        let mut p = PendingRows::new();
        let mut batches = 0;
        while !p.over_budget() {
            let parent = batch(8192, 0);
            assert!(p.push(0, parent.slice(0, 2)).is_none());
            batches += 1;
            assert!(batches < 1000, "the budget never tripped");
        }
        // Each 64 KiB parent counts whole for its 2 pending rows: 8 MiB is
        // passed after about 128 of them.
        assert!(p.bytes() > PENDING_TOTAL_BYTES);
        assert!(batches <= PENDING_TOTAL_BYTES / (8192 * 8) + 1, "{batches}");
        let d = p.drain();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1.len(), batches);
        assert_eq!(p.bytes(), 0);
    }
}
