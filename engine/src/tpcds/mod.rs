//! TPC-DS data for Shovel's q80 benchmark: generation, a plain-Rust oracle
//! for query 80, and its canonical CSV form.
//!
//! What is where:
//!
//! * [`datagen`](self::datagen): [`generate`] writes the 12 tables q80 reads
//!   ([`Q80_TABLES`]) as one Snappy-compressed Parquet file per table,
//!   `<out>/<table>.parquet`, streaming the `tpcdsgen-arrow` batches straight
//!   into an `ArrowWriter` (memory is bounded by one row group per worker,
//!   never a whole table). Tables are generated in parallel, one table per
//!   worker thread. [`ensure_data`] caches a generated scale factor under
//!   `<cache_dir>/sf<sf>/`, published atomically (temp dir + rename, with a
//!   completion marker).
//! * [`reference`](self::reference): [`q80_reference`], query 80 written as
//!   plain Rust over Parquet (projection, hash maps, exact `i128` decimals, SQL
//!   NULL semantics spelled out). It is the oracle for the engine's
//!   differential tests; its module doc is the semantic spec of q80.
//! * [`csv`](self::csv): [`q80_csv`], the canonical CSV of the golden files
//!   in `shared/golden/`.
//! * [`date`](self::date): [`SqlDate`], a tiny calendar date (the engine does
//!   not depend on `chrono`).
//!
//! Readers ([`q80_reference`]) accept either layout for a table:
//! `<dir>/<table>.parquet`, or a directory `<dir>/<table>/` of `*.parquet`
//! parts (read in file-name order), so data written by other tools such as
//! `tpcgen-cli` can be used too.

pub mod csv;
pub mod datagen;
pub mod date;
pub mod reference;

use std::path::PathBuf;

pub use self::csv::q80_csv;
pub use self::datagen::{
    ensure_data, generate, generate_with, table_schema, GenOptions, GenProgress, GenSummary,
    TableSummary,
};
pub use self::date::SqlDate;
pub use self::reference::{q80_reference, Q80Row, Q80_DEFAULT_DATE, Q80_SCALE, Q80_WINDOW_DAYS};

/// The tables TPC-DS query 80 reads, in the order [`generate`] reports them.
pub const Q80_TABLES: [&str; 12] = [
    "store_sales",
    "store_returns",
    "catalog_sales",
    "catalog_returns",
    "web_sales",
    "web_returns",
    "date_dim",
    "store",
    "catalog_page",
    "web_site",
    "item",
    "promotion",
];

/// Errors of the TPC-DS module. Each names the table, column or path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpcdsError {
    /// The scale factor is not a finite number > 0.
    #[error("invalid scale factor {0}: must be a finite number > 0")]
    InvalidScale(f64),
    /// The generator rejected its configuration (`tpcdsgen`'s own error,
    /// carried as text because `engine` does not depend on `tpcdsgen`
    /// directly).
    #[error("TPC-DS generator configuration: {0}")]
    Generator(String),
    /// A table name outside [`Q80_TABLES`] was asked for.
    #[error("unknown table {0:?}: expected one of {Q80_TABLES:?}")]
    UnknownTable(String),
    /// The generator or an Arrow kernel failed.
    #[error("arrow error in {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    /// Reading or writing a Parquet file failed.
    #[error("parquet error on {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A file system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither `<dir>/<table>.parquet` nor a `<dir>/<table>/` directory of
    /// `.parquet` files exists.
    #[error("table {table} not found in {}: expected {table}.parquet or a {table}/ directory of .parquet files", dir.display())]
    MissingTable { table: String, dir: PathBuf },
    /// A column is missing or has a type the reference cannot read exactly.
    #[error("column {table}.{column}: {reason}")]
    Column {
        table: String,
        column: String,
        reason: String,
    },
    /// A date string or triple that is not a valid calendar date.
    #[error("invalid date {0:?}: expected a valid YYYY-MM-DD date")]
    InvalidDate(String),
    /// A generator worker thread panicked.
    #[error("generator worker panicked: {0}")]
    WorkerPanic(String),
}

/// `Result` with [`TpcdsError`] as the default error.
pub type Result<T, E = TpcdsError> = std::result::Result<T, E>;

impl TpcdsError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TpcdsError::Io { path, source }
    }

    pub(crate) fn parquet(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(parquet::errors::ParquetError) -> Self {
        let path = path.into();
        move |source| TpcdsError::Parquet { path, source }
    }

    pub(crate) fn arrow(table: &str) -> impl FnOnce(arrow::error::ArrowError) -> Self + '_ {
        move |source| TpcdsError::Arrow {
            table: table.to_string(),
            source,
        }
    }
}
