//! Rows partitioned but not yet encoded: every block a map task writes
//! should be big enough to be worth its framing.
//!
//! Partitioning a batch of `b` rows over `n` partitions leaves about `b / n`
//! rows per part. Encoded alone, each part costs an IPC message header, an
//! lz4 frame, a crc32 and, on the read side, a decode and a batch for the
//! operators above: with 1,000 partitions, q80 wrote 3x the bytes of 8
//! partitions. So a partition's rows wait here until they reach
//! [`PENDING_PARTITION_BYTES`] and are then built into one batch, encoded as
//! one block. Order within a partition is kept.
//!
//! # Rows, not slices
//! What waits is the input batches themselves (*slots*) and, per partition,
//! runs of row numbers into them: `(slot, start, len)`. Two ways in:
//! - [`PendingRows::push_rows`] takes a whole batch and each row's
//!   partition (the hash partitioner's output). Nothing is copied or
//!   sliced: a row costs one index, merged into a run when it follows the
//!   previous row of its partition. Cutting every batch into one slice per
//!   partition first (a take, then a slice and an `ArrayData` per column
//!   and partition, then a concat) cost more than the rows themselves at
//!   1,000 partitions, where a part is about 8 rows.
//! - [`PendingRows::push`] takes a part someone else cut (DataFusion's
//!   partitioner hands out slices of one `take`): one run over all of it.
//!   `MapTaskWriter::write_rows` cuts parts itself when a batch has
//!   hundreds of rows for each partition (8 partitions, say): then one
//!   take and a slice per partition cost less than a run per row.
//!
//! [`PendingRows::take`] builds a partition's batch: its one run as a
//! zero-copy slice, a few long runs concatenated, and many short runs
//! gathered row by row with one `interleave` per column, so each row is
//! copied once.
//!
//! # Two sizes
//! - **A partition's size** is its rows at their batch's bytes per row
//!   (`get_slice_memory_size`): it decides when the partition is worth a
//!   block.
//! - **What is held** counts every input allocation once, however many
//!   partitions still hold rows of it, until the last of them is written,
//!   plus the runs themselves. A slice keeps its whole parent allocation
//!   alive (and `get_array_memory_size` reports that whole allocation for
//!   every slice), so slices of one parent share one count. Past
//!   [`PENDING_TOTAL_BYTES`], [`PendingRows::over_budget`] asks for
//!   everything to be written. This bounds what a map task holds outside
//!   the memory pool, even when a rare partition keeps a few rows of every
//!   batch the task has seen.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch, RecordBatchOptions};
use arrow::compute::{concat_batches, interleave};

use crate::error::Result;

/// A partition's rows are built into a block once they reach this many
/// bytes (Arrow memory of their rows).
pub const PENDING_PARTITION_BYTES: usize = 64 << 10;
/// Everything pending is written once the allocations it holds pass this
/// many bytes.
pub const PENDING_TOTAL_BYTES: usize = 8 << 20;

/// Below this many rows per run on average, a block is gathered row by
/// row (`interleave`) rather than concatenated from slices.
const CONCAT_MIN_RUN: usize = 16;

/// Rows `start..start + len` of slot `slot`.
#[derive(Debug, Clone, Copy)]
struct Run {
    slot: u32,
    start: u32,
    len: u32,
}

/// One partition's pending rows, in order.
#[derive(Debug, Default)]
struct Part {
    runs: Vec<Run>,
    rows: usize,
    bytes: usize,
}

/// An input batch some partition still holds rows of.
#[derive(Debug)]
struct Slot {
    batch: RecordBatch,
    parent: ParentKey,
    /// Partitions holding rows of it.
    holders: usize,
}

/// Identifies the allocations a batch's columns live in.
type ParentKey = u64;

/// Bytes a run costs to hold.
const RUN_BYTES: usize = std::mem::size_of::<Run>();

/// Per-partition pending rows of one map task (see the module docs).
#[derive(Debug, Default)]
pub struct PendingRows {
    /// Indexed by partition, grown on demand.
    parts: Vec<Part>,
    slots: HashMap<u32, Slot>,
    next_slot: u32,
    /// Parent allocations held: bytes (counted once) and slots in them.
    parents: HashMap<ParentKey, (usize, usize)>,
    held_bytes: usize,
    runs: usize,
}

/// The batch's own bytes and the key of the allocations it lives in.
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

    /// Holds `batch` as a new slot (held by no partition yet); returns its
    /// id and its bytes per row.
    fn hold(&mut self, batch: RecordBatch) -> (u32, usize) {
        let (slice, parent) = measure(&batch);
        let per_row = slice.div_ceil(batch.num_rows().max(1));
        let held = self.parents.entry(parent).or_insert_with(|| {
            // Every slice reports its parents' whole buffers: the parent's size.
            let size = batch.get_array_memory_size();
            self.held_bytes += size;
            (size, 0)
        });
        held.1 += 1;
        let id = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1);
        self.slots.insert(
            id,
            Slot {
                batch,
                parent,
                holders: 0,
            },
        );
        (id, per_row)
    }

    /// One partition fewer holds rows of `slot`; the last one frees it.
    fn unhold(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        s.holders = s.holders.saturating_sub(1);
        if s.holders > 0 {
            return;
        }
        let parent = s.parent;
        self.slots.remove(&slot);
        if let Some(h) = self.parents.get_mut(&parent) {
            h.1 -= 1;
            if h.1 == 0 {
                self.held_bytes -= h.0;
                self.parents.remove(&parent);
            }
        }
    }

    fn part(&mut self, partition: u32) -> &mut Part {
        let p = partition as usize;
        if p >= self.parts.len() {
            self.parts.resize_with(p + 1, Part::default);
        }
        &mut self.parts[p]
    }

    /// Adds `batch` (one part, cut by the caller) to `partition`; returns
    /// true once the partition holds [`PENDING_PARTITION_BYTES`]: the
    /// caller then [`take`](Self::take)s it.
    pub fn push(&mut self, partition: u32, batch: RecordBatch) -> bool {
        let rows = batch.num_rows();
        if rows == 0 {
            return false;
        }
        let (slot, per_row) = self.hold(batch);
        if let Some(s) = self.slots.get_mut(&slot) {
            s.holders = 1;
        }
        self.runs += 1;
        let part = self.part(partition);
        part.runs.push(Run {
            slot,
            start: 0,
            len: rows as u32,
        });
        part.rows += rows;
        part.bytes += per_row * rows;
        part.bytes >= PENDING_PARTITION_BYTES
    }

    /// Adds every row `r` of `batch` to partition `partitions[r]` (one
    /// entry per row); appends to `full` each partition that reached
    /// [`PENDING_PARTITION_BYTES`] with these rows, for the caller to
    /// [`take`](Self::take).
    pub fn push_rows(&mut self, batch: RecordBatch, partitions: &[u32], full: &mut Vec<u32>) {
        debug_assert_eq!(batch.num_rows(), partitions.len());
        if partitions.is_empty() {
            return;
        }
        let (slot, per_row) = self.hold(batch);
        let mut holders = 0usize;
        let mut new_runs = 0usize;
        if let Some(max) = partitions.iter().max() {
            self.part(*max);
        }
        for (row, p) in partitions.iter().enumerate() {
            let part = &mut self.parts[*p as usize];
            let row = row as u32;
            match part.runs.last_mut() {
                Some(r) if r.slot == slot && r.start + r.len == row => r.len += 1,
                last => {
                    if last.is_none_or(|r| r.slot != slot) {
                        holders += 1;
                    }
                    part.runs.push(Run {
                        slot,
                        start: row,
                        len: 1,
                    });
                    new_runs += 1;
                }
            }
            part.rows += 1;
            let before = part.bytes;
            part.bytes += per_row;
            if before < PENDING_PARTITION_BYTES && part.bytes >= PENDING_PARTITION_BYTES {
                full.push(*p);
            }
        }
        self.runs += new_runs;
        if let Some(s) = self.slots.get_mut(&slot) {
            s.holders = holders;
        }
    }

    /// Whether everything pending should be written now (the allocations
    /// held passed [`PENDING_TOTAL_BYTES`]).
    pub fn over_budget(&self) -> bool {
        self.bytes() > PENDING_TOTAL_BYTES
    }

    /// Bytes held: the input allocations pending rows live in (each
    /// counted once) and the runs that name the rows.
    pub fn bytes(&self) -> usize {
        self.held_bytes + self.runs * RUN_BYTES
    }

    /// The partitions with pending rows, in increasing order.
    pub fn partitions(&self) -> Vec<u32> {
        (0..self.parts.len() as u32)
            .filter(|p| self.parts[*p as usize].rows > 0)
            .collect()
    }

    /// Builds `partition`'s pending rows into one batch, in order, and
    /// stops holding what only they held; `None` when nothing is pending.
    pub fn take(&mut self, partition: u32) -> Result<Option<RecordBatch>> {
        let Some(part) = self.parts.get_mut(partition as usize) else {
            return Ok(None);
        };
        if part.rows == 0 {
            return Ok(None);
        }
        let part = std::mem::take(part);
        let built = self.build(&part);
        self.runs -= part.runs.len();
        let mut last = None;
        for r in &part.runs {
            if last != Some(r.slot) {
                self.unhold(r.slot);
                last = Some(r.slot);
            }
        }
        built.map(Some)
    }

    /// Takes every partition's pending rows, in partition order.
    pub fn drain(&mut self) -> Result<Vec<(u32, RecordBatch)>> {
        let mut out = Vec::new();
        for p in self.partitions() {
            if let Some(b) = self.take(p)? {
                out.push((p, b));
            }
        }
        debug_assert!(self.slots.is_empty() && self.bytes() == 0);
        Ok(out)
    }

    fn build(&self, part: &Part) -> Result<RecordBatch> {
        let slot = |r: &Run| -> Result<&RecordBatch> {
            self.slots.get(&r.slot).map(|s| &s.batch).ok_or_else(|| {
                crate::error::Error::Arrow(arrow::error::ArrowError::ComputeError(format!(
                    "pending rows name slot {} that is no longer held",
                    r.slot
                )))
            })
        };
        let first = slot(&part.runs[0])?;
        let schema = first.schema();
        if let [r] = part.runs.as_slice() {
            return Ok(first.slice(r.start as usize, r.len as usize));
        }
        if part.runs.len() * CONCAT_MIN_RUN <= part.rows {
            let slices = part
                .runs
                .iter()
                .map(|r| Ok(slot(r)?.slice(r.start as usize, r.len as usize)))
                .collect::<Result<Vec<_>>>()?;
            return Ok(concat_batches(&schema, &slices)?);
        }
        // Many short runs: gather each row once, one interleave per column.
        let mut sources: Vec<&RecordBatch> = Vec::new();
        let mut indices: Vec<(usize, usize)> = Vec::with_capacity(part.rows);
        let mut last = None;
        for r in &part.runs {
            if last != Some(r.slot) {
                sources.push(slot(r)?);
                last = Some(r.slot);
            }
            let src = sources.len() - 1;
            indices.extend((r.start..r.start + r.len).map(|row| (src, row as usize)));
        }
        let columns = (0..schema.fields().len())
            .map(|c| {
                let values: Vec<&dyn Array> =
                    sources.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&values, &indices)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(part.rows)),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringViewArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use proptest::prelude::*;

    fn batch(rows: usize, start: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let col = Int64Array::from_iter_values(start..start + rows as i64);
        RecordBatch::try_new(schema, vec![Arc::new(col)]).unwrap()
    }

    fn values(b: &RecordBatch) -> Vec<i64> {
        b.column(0).as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn a_partition_is_released_at_the_threshold_in_order() {
        let mut p = PendingRows::new();
        // 1,000 i64 rows are ~8 KiB: eight pushes stay below 64 KiB.
        let mut pushed = 0;
        while !p.push(3, batch(1000, pushed * 1000)) {
            pushed += 1;
            assert!(pushed < 100, "never released");
        }
        pushed += 1;
        let rows = p.take(3).unwrap().expect("rows");
        assert_eq!(rows.num_rows() as i64, pushed * 1000);
        assert!(rows.get_array_memory_size() >= PENDING_PARTITION_BYTES);
        assert_eq!(values(&rows), (0..pushed * 1000).collect::<Vec<_>>());
        assert_eq!(p.bytes(), 0);
        assert!(p.drain().unwrap().is_empty());
    }

    #[test]
    fn drain_returns_partitions_in_order_and_empties() {
        let mut p = PendingRows::new();
        assert!(!p.push(5, batch(10, 0)));
        assert!(!p.push(1, batch(10, 0)));
        assert!(!p.push(5, batch(0, 0)));
        assert!(p.bytes() > 0);
        assert!(!p.over_budget());
        let d = p.drain().unwrap();
        assert_eq!(d.iter().map(|(q, _)| *q).collect::<Vec<_>>(), vec![1, 5]);
        assert_eq!(d[1].1.num_rows(), 10, "the empty batch adds nothing");
        assert_eq!(p.bytes(), 0);
        assert_eq!(p.take(5).unwrap(), None);
    }

    #[test]
    fn over_budget_past_the_total() {
        let mut p = PendingRows::new();
        // Many partitions, each below its own threshold.
        let mut q = 0;
        while !p.over_budget() {
            assert!(!p.push(q, batch(1000, 0)));
            q += 1;
        }
        assert!(p.bytes() > PENDING_TOTAL_BYTES);
        assert_eq!(p.drain().unwrap().len(), q as usize);
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
                !p.push(q, part),
                "partition {q}: 8 KiB of rows released as if it were the whole parent"
            );
        }
        let runs = 8 * RUN_BYTES;
        assert_eq!(p.bytes(), parent_bytes + runs, "the parent is counted once");
        // Partition 3 fills up and is released; the others still hold the parent.
        let mut next = 1;
        while !p.push(3, batch(1024, next * 1024)) {
            next += 1;
            assert!(next < 100, "never released");
        }
        let rows = p.take(3).unwrap().expect("rows");
        assert_eq!(rows.num_rows(), 1024 * (next as usize + 1));
        assert_eq!(
            p.bytes(),
            parent_bytes + 7 * RUN_BYTES,
            "7 slices still hold the parent"
        );
        let rest = p.drain().unwrap();
        assert_eq!(rest.len(), 7);
        assert_eq!(p.bytes(), 0);
    }

    /// A partition that keeps a few rows of every batch holds every batch:
    /// that is what the total budget counts, so memory stays bounded.
    #[test]
    fn a_rare_partition_holding_many_parents_trips_the_budget() {
        let mut p = PendingRows::new();
        let mut batches = 0;
        let mut full = Vec::new();
        while !p.over_budget() {
            // Rows 0 and 1 go to partition 0, the rest to partition 1,
            // which is taken at once (as a writer does with full partitions).
            let mut parts = vec![1u32; 10_000];
            parts[0] = 0;
            parts[1] = 0;
            p.push_rows(batch(10_000, 0), &parts, &mut full);
            assert_eq!(full, vec![1], "9,998 rows of i64 fill a block");
            assert!(p.take(1).unwrap().is_some());
            full.clear();
            batches += 1;
            assert!(batches < 1000, "the budget never tripped");
        }
        // Each 80 KB batch counts whole for its 2 pending rows: 8 MiB is
        // passed after about 105 of them.
        assert!(p.bytes() > PENDING_TOTAL_BYTES);
        assert!(
            batches <= PENDING_TOTAL_BYTES / (10_000 * 8) + 1,
            "{batches}"
        );
        let d = p.drain().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1.num_rows(), 2 * batches);
        assert_eq!(p.bytes(), 0);
    }

    /// One run is handed out as a slice of its batch, without a copy.
    #[test]
    fn a_single_run_is_a_zero_copy_slice() {
        let mut p = PendingRows::new();
        let b = batch(100, 0);
        let mut full = Vec::new();
        // Rows 10..20 to partition 2, the rest to partition 0.
        let parts: Vec<u32> = (0..100)
            .map(|r| if (10..20).contains(&r) { 2 } else { 0 })
            .collect();
        p.push_rows(b.clone(), &parts, &mut full);
        assert!(full.is_empty());
        let two = p.take(2).unwrap().expect("rows");
        assert_eq!(values(&two), (10..20).collect::<Vec<_>>());
        let base = b.column(0).as_primitive::<Int64Type>().values().as_ptr();
        let got = two.column(0).as_primitive::<Int64Type>().values().as_ptr();
        assert_eq!(got, base.wrapping_add(10), "one run must not be copied");
        // Partition 0 holds two runs (0..10 and 20..100) of one batch.
        let zero = p.take(0).unwrap().expect("rows");
        assert_eq!(values(&zero), (0..10).chain(20..100).collect::<Vec<_>>());
        assert_eq!(p.bytes(), 0);
    }

    /// Strings gathered from several batches keep their values (views
    /// into other batches' buffers are remapped, not misread).
    #[test]
    fn view_columns_are_gathered_across_batches() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        let mk = |tag: &str| {
            let v: Vec<Option<String>> = (0..50)
                .map(|i| (i % 7 != 0).then(|| format!("{tag}-a-long-string-value-{i}")))
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringViewArray::from(v))],
            )
            .unwrap()
        };
        let mut p = PendingRows::new();
        let mut full = Vec::new();
        let parts: Vec<u32> = (0..50).map(|r| r % 3).collect();
        p.push_rows(mk("x"), &parts, &mut full);
        p.push_rows(mk("y"), &parts, &mut full);
        let one = p.take(1).unwrap().expect("rows");
        let got: Vec<Option<String>> = one
            .column(0)
            .as_string_view()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect();
        let want: Vec<Option<String>> = ["x", "y"]
            .iter()
            .flat_map(|tag| {
                (0..50)
                    .filter(|i| i % 3 == 1)
                    .map(move |i| (i % 7 != 0).then(|| format!("{tag}-a-long-string-value-{i}")))
            })
            .collect();
        assert_eq!(got, want);
    }

    proptest! {
        /// Whatever mix of whole parts and per-row routing, with takes and
        /// drains at any point, every partition gets exactly its rows, in
        /// the order they came, and nothing stays held.
        #[test]
        fn every_partition_gets_its_rows_in_order(
            ops in prop::collection::vec(
                (0usize..3, 1usize..300, prop::collection::vec(0u32..7, 300), 0u32..7, any::<bool>()),
                1..40,
            )
        ) {
            let mut p = PendingRows::new();
            let mut want: Vec<Vec<i64>> = vec![Vec::new(); 7];
            let mut got: Vec<Vec<i64>> = vec![Vec::new(); 7];
            let mut next = 0i64;
            let mut full = Vec::new();
            for (kind, rows, route, q, sorted) in ops {
                let b = batch(rows, next);
                next += rows as i64;
                match kind {
                    0 => {
                        want[q as usize].extend(values(&b));
                        if p.push(q, b) {
                            got[q as usize].extend(values(&p.take(q).unwrap().unwrap()));
                        }
                    }
                    1 => {
                        // Mostly runs of equal partitions (concatenated)
                        // or scattered rows (interleaved), by the route.
                        let mut parts: Vec<u32> = route[..rows].to_vec();
                        if sorted {
                            parts.sort_unstable();
                        }
                        for (r, v) in values(&b).into_iter().enumerate() {
                            want[parts[r] as usize].push(v);
                        }
                        p.push_rows(b, &parts, &mut full);
                        for f in full.drain(..) {
                            got[f as usize].extend(values(&p.take(f).unwrap().unwrap()));
                        }
                    }
                    _ => {
                        for (f, b) in p.drain().unwrap() {
                            got[f as usize].extend(values(&b));
                        }
                        prop_assert_eq!(p.bytes(), 0);
                    }
                }
            }
            for (f, b) in p.drain().unwrap() {
                got[f as usize].extend(values(&b));
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(p.bytes(), 0);
        }
    }
}
