//! The one error type of shuffle-arrow's public surface.
//!
//! Shuffle failures keep shuffle-core's [`shuffle_core::Error`] (fetch
//! failures name the shuffle, map and object, and [`Error::is_data_loss`]
//! still tells an engine to re-run the map); the Arrow-level failures say
//! which block or column and what to do about it.

use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// `Result` with shuffle-arrow's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between record batches and shuffle blocks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Writing or reading the shuffle failed (storage, checksums, fetches).
    #[error(transparent)]
    Shuffle(#[from] shuffle_core::Error),

    /// An Arrow kernel or the IPC encoder failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),

    /// A block does not hold one record batch as [`crate::codec`] writes it.
    /// Its bytes passed the shuffle's crc32, so this is a writer that did not
    /// use [`crate::codec`] (or a schema mismatch), not storage damage.
    /// `at` names the block (` in shuffle S map M partition P`) when known.
    #[error(
        "malformed batch block{at}: {reason}; every writer of the shuffle must encode \
         with shuffle_arrow::codec and the reader must pass the writer's schema"
    )]
    MalformedBlock { at: String, reason: String },

    /// A key column has a type the stable hash does not cover.
    #[error(
        "cannot hash-partition on a column of type {0}; cast the key to an integer, \
         decimal, float, date, boolean, string or binary type"
    )]
    UnsupportedKeyType(DataType),

    /// Dictionary-encoded columns would need their dictionaries in every block.
    #[error(
        "dictionary-encoded columns are not supported in exchanges; cast the column \
         to its value type before the exchange"
    )]
    DictionaryNotSupported,
}

impl Error {
    /// True when shuffle data was lost or damaged, so the map task that
    /// produced it must be re-run.
    pub fn is_data_loss(&self) -> bool {
        matches!(self, Error::Shuffle(e) if e.is_data_loss())
    }
}
