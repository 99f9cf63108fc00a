//! Shovel failures as DataFusion errors.
//!
//! A failed fetch keeps shuffle-core's message, which names the shuffle, the
//! map, the attempt and the object (`fetch of shuffle 3 map 1 (attempt 0)
//! failed: checksum mismatch in <object> ...`); the context line says which
//! side of which exchange saw it. DataFusion has no stage retry, so a lost
//! or corrupt map output fails the query (re-run it; the shuffle is written
//! again under a new shuffle id).

use datafusion::error::DataFusionError;

/// Wraps a shuffle-arrow error with `context` (which operator, which partition).
pub fn shuffle_error(e: shuffle_arrow::Error, context: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(e)).context(context)
}

/// Wraps a shuffle-core error with `context`.
pub fn core_error(e: shuffle_core::Error, context: impl Into<String>) -> DataFusionError {
    shuffle_error(shuffle_arrow::Error::Shuffle(e), context)
}
