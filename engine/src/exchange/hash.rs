//! The stable key hash lives in [`shuffle_arrow::hash`] (shared with the
//! DataFusion adapter, so every engine routes a key to the same partition);
//! re-exported here for the engine's modules.

use arrow::array::ArrayRef;

pub use shuffle_arrow::hash::*;

/// [`shuffle_arrow::hash::hash_columns`] with the engine's error type.
pub fn hash_columns(
    columns: &[ArrayRef],
    seed: u64,
    out: &mut Vec<u64>,
) -> crate::error::Result<()> {
    Ok(shuffle_arrow::hash::hash_columns(columns, seed, out)?)
}
