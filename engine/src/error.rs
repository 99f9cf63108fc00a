//! The engine's error type: wraps the shuffle contract's errors, Arrow's and
//! Parquet's, and adds planning and execution failures.

/// `Result` with [`EngineError`] as the default error type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong while planning or running a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A shuffle or spill operation failed.
    #[error("shuffle: {0}")]
    Shuffle(#[from] shuffle_core::Error),

    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Reading a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// A local file could not be opened or listed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A configuration key has a bad value (the key is named).
    #[error("invalid config `{key}`: {reason}")]
    Config { key: String, reason: String },

    /// The query is malformed: unknown column, type mismatch, bad arguments.
    #[error("plan error: {0}")]
    Plan(String),

    /// An input table's column does not have the type the query expects.
    #[error(
        "table `{table}` ({file}): column `{column}` is {found}, expected {expected}; \
         regenerate the table with `shovel gen --sf N --out DIR` or write the column as {expected}"
    )]
    Schema {
        table: String,
        column: String,
        file: String,
        expected: String,
        found: String,
    },

    /// Reading shuffle output failed because a map output is missing or corrupt.
    /// The scheduler re-runs the map task(s) that produced it.
    #[error("fetch failed for shuffle {shuffle_id}{}: {source}", map_suffix(*.map_id))]
    FetchFailed {
        shuffle_id: u32,
        map_id: Option<u32>,
        #[source]
        source: shuffle_core::Error,
    },

    /// A task failed more often than the configured limit.
    #[error("stage {stage_id} task {partition} failed after {attempts} attempts: {last}")]
    TaskFailed {
        stage_id: usize,
        partition: usize,
        attempts: u32,
        last: String,
    },

    /// The task attempt was killed because the executor running it was lost.
    /// The scheduler re-runs it; this does not count as a task failure.
    #[error("task killed: executor {executor} was lost")]
    ExecutorLost { executor: usize },

    /// The job was cancelled (Ctrl-C); its tasks were stopped.
    #[error("cancelled: the job was interrupted and its tasks stopped")]
    Cancelled,

    /// Re-running a lost map output failed (shared by every task that
    /// waited for that re-run).
    #[error("re-running map {map_id} of shuffle {shuffle_id} failed: {source}")]
    RecomputeFailed {
        shuffle_id: u32,
        map_id: u32,
        #[source]
        source: std::sync::Arc<EngineError>,
    },

    /// Internal invariant broken (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// ` map M` when the map is known.
fn map_suffix(map_id: Option<u32>) -> String {
    map_id.map(|m| format!(" map {m}")).unwrap_or_default()
}

/// Keeps the engine's classification: shuffle failures stay shuffle errors
/// (so [`EngineError::is_fetch_failure`] still triggers map re-runs), an
/// unhashable key is a planning error, the rest are bugs in the engine's use
/// of the codec.
impl From<shuffle_arrow::Error> for EngineError {
    fn from(e: shuffle_arrow::Error) -> Self {
        match e {
            shuffle_arrow::Error::Shuffle(e) => EngineError::Shuffle(e),
            shuffle_arrow::Error::Arrow(e) => EngineError::Arrow(e),
            e @ shuffle_arrow::Error::UnsupportedKeyType(_) => EngineError::Plan(e.to_string()),
            e => EngineError::Internal(e.to_string()),
        }
    }
}

impl EngineError {
    pub fn plan(msg: impl Into<String>) -> Self {
        EngineError::Plan(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        EngineError::Internal(msg.into())
    }

    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        EngineError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// True when the error means shuffle data was lost or damaged, so the
    /// producing map task must be re-run.
    pub fn is_fetch_failure(&self) -> bool {
        match self {
            EngineError::FetchFailed { .. } => true,
            EngineError::Shuffle(e) => e.is_data_loss(),
            _ => false,
        }
    }
}
