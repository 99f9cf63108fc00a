//! Splitting record batches into shuffle partitions.
//!
//! The partitioner never evaluates expressions: the engine evaluates its key
//! expressions (Shovel's `PhysicalExpr`, DataFusion's `PhysicalExpr`, ...) and
//! hands the key columns over, so this crate stays engine-agnostic.
//!
//! - [`PartitionScheme::Hash`]: row `r` goes to
//!   `bucket(hash_columns(keys, seed)[r], n)` ([`crate::hash`]), the same on
//!   every task, process and backend.
//! - [`PartitionScheme::RoundRobin`]: consecutive zero-copy slices of
//!   `ceil(rows / n)` rows, starting at a per-writer offset.
//! - [`PartitionScheme::Single`]: everything to partition 0.

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::error::ArrowError;

use crate::error::{Error, Result};
use crate::hash;

/// How rows are distributed over partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionScheme {
    /// By the stable hash (with `seed`) of the key columns into `partitions`.
    Hash { partitions: usize, seed: u64 },
    /// Evenly into `partitions`, ignoring content.
    RoundRobin { partitions: usize },
    /// Everything into one partition.
    Single,
}

impl PartitionScheme {
    /// Hash partitioning with the exchange seed ([`hash::SEED_EXCHANGE`]).
    pub fn hash(partitions: usize) -> Self {
        PartitionScheme::Hash {
            partitions,
            seed: hash::SEED_EXCHANGE,
        }
    }

    pub fn num_partitions(&self) -> usize {
        match self {
            PartitionScheme::Hash { partitions, .. }
            | PartitionScheme::RoundRobin { partitions } => *partitions,
            PartitionScheme::Single => 1,
        }
    }
}

/// Splits batches into per-partition batches (one per writer; keeps the
/// hash buffer and the round-robin position between batches).
#[derive(Debug)]
pub struct Partitioner {
    scheme: PartitionScheme,
    hashes: Vec<u64>,
    parts: Vec<u32>,
    next_rr: usize,
}

impl Partitioner {
    /// `start` is the first round-robin partition (the map id spreads
    /// writers over partitions); ignored by the other schemes.
    pub fn new(scheme: PartitionScheme, start: usize) -> Result<Self> {
        if scheme.num_partitions() == 0 {
            return Err(Error::Arrow(ArrowError::InvalidArgumentError(
                "a partitioner needs at least one partition".into(),
            )));
        }
        Ok(Self {
            scheme,
            hashes: Vec::new(),
            parts: Vec::new(),
            next_rr: start,
        })
    }

    pub fn scheme(&self) -> PartitionScheme {
        self.scheme
    }

    /// Splits `batch` (with its evaluated hash `keys`, one array per key,
    /// each as long as the batch; ignored unless hashing) and calls
    /// `f(partition, sub_batch)` for every non-empty part, in increasing
    /// partition order for hash partitioning.
    pub fn partition<E: From<Error>>(
        &mut self,
        batch: &RecordBatch,
        keys: &[ArrayRef],
        mut f: impl FnMut(usize, RecordBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        match self.scheme {
            PartitionScheme::Single => f(0, batch.clone()),
            PartitionScheme::RoundRobin { partitions: n } => {
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
            PartitionScheme::Hash {
                partitions: n,
                seed,
            } => {
                self.assign_hash(rows, keys, n, seed)?;
                split_by_index(batch, &self.parts, n, f)
            }
        }
    }

    /// With hash partitioning: each row's partition (`keys` as for
    /// [`Self::partition`]), without splitting the batch; `None` for the
    /// other schemes.
    pub fn assign(&mut self, batch: &RecordBatch, keys: &[ArrayRef]) -> Result<Option<&[u32]>> {
        match self.scheme {
            PartitionScheme::Hash {
                partitions: n,
                seed,
            } => {
                self.assign_hash(batch.num_rows(), keys, n, seed)?;
                Ok(Some(&self.parts))
            }
            _ => Ok(None),
        }
    }

    fn assign_hash(&mut self, rows: usize, keys: &[ArrayRef], n: usize, seed: u64) -> Result<()> {
        if rows == 0 {
            self.parts.clear();
            return Ok(());
        }
        if keys.is_empty() || keys.iter().any(|k| k.len() != rows) {
            return Err(Error::Arrow(ArrowError::InvalidArgumentError(format!(
                "hash partitioning needs key columns of the batch's {rows} rows, got {:?}",
                keys.iter().map(|k| k.len()).collect::<Vec<_>>()
            ))));
        }
        hash::hash_columns(keys, seed, &mut self.hashes)?;
        self.parts.clear();
        self.parts
            .extend(self.hashes.iter().map(|h| hash::bucket(*h, n) as u32));
        Ok(())
    }
}

/// Splits `batch` by a per-row partition index in `0..n` (counting sort,
/// one `take`, then slices: the parts share one allocation, see
/// [`crate::pending`]); calls `f` for each non-empty partition in
/// increasing order. A batch wholly in one partition is passed on without
/// copying.
pub fn split_by_index<E: From<Error>>(
    batch: &RecordBatch,
    parts: &[u32],
    n: usize,
    mut f: impl FnMut(usize, RecordBatch) -> Result<(), E>,
) -> Result<(), E> {
    let mut counts = vec![0u32; n + 1];
    for p in parts {
        counts[*p as usize + 1] += 1;
    }
    if let Some(p) = counts[1..].iter().position(|c| *c as usize == parts.len()) {
        return f(p, batch.clone());
    }
    for i in 1..=n {
        counts[i] += counts[i - 1];
    }
    let mut pos = counts.clone();
    let mut idx = vec![0u32; parts.len()];
    for (row, p) in parts.iter().enumerate() {
        let slot = &mut pos[*p as usize];
        idx[*slot as usize] = row as u32;
        *slot += 1;
    }
    // One take of the whole batch in partition order, then a slice per
    // partition (as DataFusion's own partitioner does): a take per
    // partition allocated every column n times, which dominated at
    // hundreds of partitions.
    let grouped = take_record_batch(batch, &UInt32Array::from(idx)).map_err(Error::from)?;
    for p in 0..n {
        let (s, e) = (counts[p] as usize, counts[p + 1] as usize);
        if e > s {
            f(p, grouped.slice(s, e - s))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    #[test]
    fn hash_routes_every_row_to_its_bucket() {
        let b = batch((0..1000).collect());
        let mut p = Partitioner::new(PartitionScheme::hash(7), 0).unwrap();
        let mut seen = 0;
        let mut last = None;
        p.partition::<Error>(&b, &[Arc::clone(b.column(0))], |part, sub| {
            assert!(last < Some(part), "partitions come in increasing order");
            last = Some(part);
            let mut h = Vec::new();
            hash::hash_columns(&[Arc::clone(sub.column(0))], hash::SEED_EXCHANGE, &mut h)?;
            assert!(h.iter().all(|h| hash::bucket(*h, 7) == part));
            seen += sub.num_rows();
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 1000);
    }

    #[test]
    fn round_robin_slices_in_order() {
        let b = batch((0..10).collect());
        let mut p = Partitioner::new(PartitionScheme::RoundRobin { partitions: 3 }, 2).unwrap();
        let mut got = Vec::new();
        p.partition::<Error>(&b, &[], |part, sub| {
            let v = sub.column(0).as_primitive::<Int64Type>();
            got.push((part, v.values().to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (2, vec![0, 1, 2, 3]),
                (0, vec![4, 5, 6, 7]),
                (1, vec![8, 9])
            ]
        );
    }

    #[test]
    fn hash_without_keys_is_an_error() {
        let b = batch(vec![1, 2]);
        let mut p = Partitioner::new(PartitionScheme::hash(2), 0).unwrap();
        let err = p.partition::<Error>(&b, &[], |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("key columns"), "{err}");
        assert!(Partitioner::new(PartitionScheme::hash(0), 0).is_err());
        let short: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        assert_eq!(short.len(), 1);
        assert!(p.partition::<Error>(&b, &[short], |_, _| Ok(())).is_err());
    }
}
