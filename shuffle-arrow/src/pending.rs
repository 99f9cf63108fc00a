//! Rows partitioned but not yet encoded: every block a map task writes
//! should be big enough to be worth its framing.
//!
//! Partitioning a batch of `b` rows over `n` partitions leaves about `b / n`
//! rows per part. Encoded alone, each part costs an IPC message header, an
//! lz4 frame, a crc32 and, on the read side, a decode and a batch for the
//! operators above: with 1,000 partitions, q80 wrote 3x the bytes of 8
//! partitions. So a partition's parts wait here until they reach
//! [`PENDING_PARTITION_BYTES`] and are then encoded as one block; all
//! partitions' pending rows together are flushed past
//! [`PENDING_TOTAL_BYTES`], which bounds what a map task holds outside the
//! memory pool. Order within a partition is kept.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;

/// A partition's rows are encoded once they reach this many bytes (Arrow
/// memory size).
pub const PENDING_PARTITION_BYTES: usize = 64 << 10;
/// All partitions' pending rows together are flushed past this many bytes.
pub const PENDING_TOTAL_BYTES: usize = 8 << 20;

/// Per-partition pending rows of one map task (see the module docs).
#[derive(Debug, Default)]
pub struct PendingRows {
    parts: BTreeMap<u32, (Vec<RecordBatch>, usize)>,
    bytes: usize,
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
        let size = batch.get_array_memory_size();
        let e = self.parts.entry(partition).or_default();
        e.0.push(batch);
        e.1 += size;
        self.bytes += size;
        if e.1 < PENDING_PARTITION_BYTES {
            return None;
        }
        let (rows, size) = self.parts.remove(&partition)?;
        self.bytes -= size;
        Some(rows)
    }

    /// Whether everything pending should be written now
    /// ([`PENDING_TOTAL_BYTES`] reached).
    pub fn over_budget(&self) -> bool {
        self.bytes > PENDING_TOTAL_BYTES
    }

    /// Arrow memory held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes every partition's pending rows, in partition order.
    pub fn drain(&mut self) -> Vec<(u32, Vec<RecordBatch>)> {
        self.bytes = 0;
        std::mem::take(&mut self.parts)
            .into_iter()
            .map(|(p, (rows, _))| (p, rows))
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
}
