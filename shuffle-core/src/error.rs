//! The one error type of Shovel's public surface.
//!
//! Every variant names the object it is about (a storage key, a directory, a
//! config key) and, where there is one, the fix. Backends keep private error
//! types and map into this enum at their boundary, the way `object_store` does.

use std::path::PathBuf;

/// `Result` with Shovel's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a shuffle or a spill.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist (never committed, removed, or lost with an executor).
    #[error("shuffle object not found: {object}")]
    NotFound { object: String },

    /// A conditional create ([`ShuffleStore::create_if_absent`](crate::store::ShuffleStore::create_if_absent))
    /// found an object under the key: another writer published first, and
    /// nothing of this writer's became visible.
    #[error(
        "shuffle object {object} already exists: another attempt published it first; \
         read its footer for the winning status"
    )]
    AlreadyExists { object: String },

    /// A stored checksum does not match the bytes read back.
    #[error(
        "checksum mismatch in {object} (partition {partition}): expected crc32 {expected:#010x}, \
         got {actual:#010x}; the object is corrupt and its map task must be re-run"
    )]
    ChecksumMismatch {
        object: String,
        partition: u32,
        expected: u32,
        actual: u32,
    },

    /// The object is malformed or shorter than its index says.
    #[error("corrupt or truncated shuffle object {object}: {reason}")]
    Corrupt { object: String, reason: String },

    /// A spill object read back damaged: a checksum mismatch, a malformed
    /// frame, or fewer bytes than were written. `at` says where (`partition
    /// p` of a map-output buffer's spill, or `block b at byte o`). No
    /// committed map output is affected: retrying the task that spilled
    /// writes the spill again.
    #[error(
        "corrupt spill object {object} ({at}): {reason}; the task that spilled it must be re-run"
    )]
    SpillCorrupt {
        object: String,
        at: String,
        reason: String,
    },

    /// The storage ran out of space (the OS said so, or a configured quota was reached).
    #[error(
        "no space left for shuffle data in {}: {reason}. Free space, add directories with \
         --local-dir, or move shuffle and spill to S3 with `--shuffle s3 --spill-to-s3`",
        path.display()
    )]
    StorageFull { path: PathBuf, reason: String },

    /// A configuration value is missing or malformed.
    #[error("invalid config `{key}`: {reason}")]
    Config { key: String, reason: String },

    /// A memory reservation could not grow and the caller could not spill.
    #[error(
        "memory budget exhausted: {consumer} asked for {requested} bytes, {available} of \
         {limit} available; raise the memory budget (--memory)"
    )]
    MemoryExhausted {
        consumer: String,
        requested: usize,
        available: usize,
        limit: usize,
    },

    /// The caller broke the writer protocol (for example partitions out of order).
    #[error("shuffle protocol violation: {0}")]
    Protocol(String),

    /// Reading one map output failed (Spark's fetch failure). When
    /// [`Error::is_data_loss`] holds, the engine re-runs that map task.
    #[error("fetch of shuffle {shuffle_id} map {map_id} (attempt {attempt}) failed: {source}")]
    FetchFailed {
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
        #[source]
        source: Box<Error>,
    },

    /// A local I/O error, with what was being done and to which path.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A backend (such as S3) failed; `store` names it, `message` says what and how to fix it.
    #[error("{store} error: {message}")]
    Backend {
        store: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

impl Error {
    /// Wraps an I/O error, turning out-of-space and quota errors into [`Error::StorageFull`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_out_of_space(&source) {
            return Error::StorageFull {
                reason: source.to_string(),
                path,
            };
        }
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound {
                object: path.display().to_string(),
            };
        }
        Error::Io { path, source }
    }

    /// A corrupt-object error.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// A damaged-spill error; see [`Error::SpillCorrupt`].
    pub fn spill_corrupt(
        object: impl Into<String>,
        at: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::SpillCorrupt {
            object: object.into(),
            at: at.into(),
            reason: reason.into(),
        }
    }

    /// A config error.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// True when the data read back was damaged: a checksum mismatch, a corrupt
    /// or truncated object (shuffle data or spill), or an object that is gone.
    /// Engines re-run the task that produced it: for a map output the map task
    /// (Spark's fetch-failure path), for a spill the task that spilled it.
    pub fn is_data_loss(&self) -> bool {
        match self {
            Error::FetchFailed { source, .. } => source.is_data_loss(),
            Error::ChecksumMismatch { .. }
            | Error::Corrupt { .. }
            | Error::SpillCorrupt { .. }
            | Error::NotFound { .. } => true,
            _ => false,
        }
    }

    /// The innermost error (through [`Error::FetchFailed`]).
    pub fn root(&self) -> &Error {
        match self {
            Error::FetchFailed { source, .. } => source.root(),
            other => other,
        }
    }
}

fn is_out_of_space(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
    {
        return true;
    }
    // ENOSPC = 28, EDQUOT = 122 on Linux.
    matches!(e.raw_os_error(), Some(28) | Some(122))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_from_the_os_is_storage_full() {
        // /dev/full answers every write with ENOSPC.
        let e = std::fs::write("/dev/full", b"x").expect_err("ENOSPC");
        let err = Error::io("/data/shuffle", e);
        assert!(matches!(err, Error::StorageFull { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("/data/shuffle") && msg.contains("--shuffle s3 --spill-to-s3"),
            "{msg}"
        );
    }

    #[test]
    fn fetch_failures_expose_data_loss() {
        let inner = Error::corrupt("k", "truncated");
        let e = Error::FetchFailed {
            shuffle_id: 1,
            map_id: 2,
            attempt: 0,
            source: Box::new(inner),
        };
        assert!(e.is_data_loss());
        assert!(matches!(e.root(), Error::Corrupt { .. }));
        let e = Error::config("k", "bad");
        assert!(!e.is_data_loss());
    }

    #[test]
    fn spill_damage_names_object_and_place() {
        let e = Error::spill_corrupt(
            "s3://b/spill/app/spill-7.bin",
            "partition 3",
            "checksum mismatch: expected crc32 0x00000001, got 0x00000002",
        );
        assert!(e.is_data_loss());
        let msg = e.to_string();
        assert!(
            msg.contains("s3://b/spill/app/spill-7.bin (partition 3)")
                && msg.contains("checksum mismatch")
                && msg.contains("re-run"),
            "{msg}"
        );
    }
}
