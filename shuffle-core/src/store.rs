//! The small trait a storage backend implements.
//!
//! Everything above it (framing, checksums, the map-output writer, buffering
//! and spilling, the reader with bounded run-ahead, first-attempt-wins commit)
//! lives once in shuffle-core, so a new backend only moves bytes:
//!
//! ```text
//!   ShuffleManager (trait) ── StoreShuffleManager ── Arc<dyn ShuffleStore>
//!                                                     ├── shuffle-local: LocalStore (files)
//!                                                     └── shuffle-s3:    S3Store (objects)
//! ```
//!
//! # Contract
//! Implementors owe:
//! - [`ShuffleStore::create`] returns a sink whose bytes become visible under
//!   the key only after [`ObjectSink::finish`] (atomic publish: temp file and
//!   rename, or a single PUT / completed multipart upload). [`ObjectSink::abort`]
//!   and dropping an unfinished sink leave nothing visible.
//! - [`ShuffleStore::put_if_absent`] creates the object only if no object has
//!   the key and reports which happened. Stores that cannot enforce this (some
//!   S3-compatible stores ignore `If-None-Match`) may return `Created` twice;
//!   correctness then rests on attempt ids in keys and on the map status the
//!   caller records (see `manager`).
//! - [`ShuffleStore::create_if_absent`] returns a sink like `create`'s whose
//!   `finish` publishes only if no object has the key, atomically against
//!   every other writer of any process; otherwise `finish` fails with
//!   [`Error::AlreadyExists`](crate::Error::AlreadyExists) and nothing of its
//!   own stays visible. A store reports whether it can honour this with
//!   [`ShuffleStore::supports_conditional_create`]; when it says `false`,
//!   shuffle-core never calls `create_if_absent` and keeps attempts apart by
//!   attempt ids in keys instead (see `manager`). The local store publishes
//!   with a hard link, which the OS refuses when the name exists; S3 sends
//!   `If-None-Match: *` on PutObject / CompleteMultipartUpload (412 or 409
//!   means `AlreadyExists`).
//! - [`ShuffleStore::get_suffix`] returns the last `len` bytes of an object
//!   (all of it when shorter), or `NotFound`: one request (S3's
//!   `Range: bytes=-len`), used to read a data object's footer.
//! - [`ShuffleStore::get_range`] returns exactly the bytes asked for, or fewer
//!   when the object is shorter (the caller reports truncation), or
//!   [`Error::NotFound`](crate::Error::NotFound).
//! - [`ShuffleStore::delete`] and [`ShuffleStore::delete_prefix`] succeed when
//!   the objects are already gone.
//! - Keys are relative paths (`/`-separated) plus a shard hint; the store maps
//!   them to directories, buckets or S3 prefixes and must cover every shard in
//!   `list` and `delete_prefix`.
//! - [`ShuffleStore::root_shards`] names one shard per root (directory or
//!   bucket), distinct roots for distinct shards, so writing a key with each
//!   puts a copy on every root (the job marker relies on it: `gc` may be
//!   pointed at any one root).
//! - `list` reports regular files or objects only: a local store neither
//!   reports symlinks nor descends into symlinked directories, so nothing
//!   outside the root is ever listed (and hence never deleted by `gc`).
//! - [`ShuffleStore::remove_empty_dirs`] removes only empty, real directories
//!   (never a symlink, never a directory with anything in it); stores without
//!   directories keep the default no-op.

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

/// Where an object lives, relative to the store's root(s).
///
/// `shard` spreads objects: the local store picks one of its root directories
/// with it, the S3 store one of its buckets and `P` hash prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub shard: u64,
    pub path: String,
}

impl ObjectKey {
    pub fn new(shard: u64, path: impl Into<String>) -> Self {
        Self {
            shard,
            path: path.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

/// What [`ShuffleStore::put_if_absent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created by this call.
    Created,
    /// An object with this key already existed; nothing was written.
    AlreadyExists,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch (0 when unknown).
    pub modified_unix_secs: u64,
}

/// A streaming writer for one object. Bytes are visible only after `finish`.
#[async_trait]
pub trait ObjectSink: Send {
    /// Appends bytes. May upload or write in the background; errors surface
    /// here or at `finish`.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Publishes the object atomically and returns its length.
    async fn finish(self: Box<Self>) -> Result<u64>;
    /// Discards everything written; nothing stays visible.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// A storage backend for shuffle and spill objects.
#[async_trait]
pub trait ShuffleStore: Send + Sync + Debug + 'static {
    /// Short name for errors and metrics ("local", "s3").
    fn name(&self) -> &'static str;

    /// True when objects outlive the process that wrote them (S3), so a lost
    /// executor's committed map outputs need not be recomputed.
    fn supports_reliable_storage(&self) -> bool;

    /// Human-readable location of a key (a path or `s3://bucket/key`), for errors.
    fn describe(&self, key: &ObjectKey) -> String;

    /// Starts a streaming write of `key`.
    async fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>>;

    /// Writes a small object whole (atomically).
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()>;

    /// Writes a small object only if none exists under `key`.
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome>;

    /// True when [`ShuffleStore::create_if_absent`] is atomic across
    /// processes (see the Contract). The default is `false`.
    fn supports_conditional_create(&self) -> bool {
        false
    }

    /// Starts a streaming write of `key` whose `finish` publishes only if
    /// no object has the key, else fails with
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) and leaves
    /// nothing of its own. The default fails: the store cannot.
    async fn create_if_absent(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        Err(crate::Error::Protocol(format!(
            "the {} store cannot create {} conditionally; check supports_conditional_create \
             before calling create_if_absent",
            self.name(),
            self.describe(key)
        )))
    }

    /// Reads the last `len` bytes of an object (the whole object when it is
    /// shorter). The default reads the whole object.
    async fn get_suffix(&self, key: &ObjectKey, len: u64) -> Result<Bytes> {
        let all = self.get(key).await?;
        let start = all
            .len()
            .saturating_sub(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(all.slice(start..))
    }

    /// Reads a whole object.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes>;

    /// Reads `range` of an object (short when the object is shorter).
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes>;

    /// Deletes objects; missing ones are not an error.
    async fn delete(&self, keys: &[ObjectKey]) -> Result<()>;

    /// Lists every object whose path starts with `prefix`, across all shards.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// One shard per root (local directory or bucket); see the Contract.
    /// The default is a single root.
    fn root_shards(&self) -> Vec<u64> {
        vec![0]
    }

    /// Where objects under `prefix` live, one human-readable location per
    /// root (for messages such as "outputs kept at ...").
    fn describe_prefix(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .root_shards()
            .into_iter()
            .map(|shard| self.describe(&ObjectKey::new(shard, prefix)))
            .collect();
        out.dedup();
        out
    }

    /// Removes each of `dirs` (relative paths, deepest first) on every root
    /// where it is an empty real directory; anything else (missing, not
    /// empty, a symlink, a file) is left alone. Returns how many directories
    /// were removed. Object stores have no directories: the default does
    /// nothing.
    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<u64> {
        let _ = dirs;
        Ok(0)
    }

    /// True when `list` costs no requests (a local directory walk): then
    /// cleanup also sweeps the app's prefix, which removes the temporary
    /// files of writes cut off mid-flight (a cancelled task's sink) that no
    /// key record names. Object stores keep the default `false`: there a
    /// LIST is a paid request per bucket and hash prefix.
    fn cheap_listing(&self) -> bool {
        false
    }

    /// Forgets any copy of `keys` this process keeps besides the store (a
    /// local tier's cached copies), so later reads come from the store
    /// itself: the engine calls it with the map outputs of a lost executor,
    /// whose local copies would be gone on a real cluster. Stores without
    /// local copies keep the default no-op.
    fn drop_local_copies(&self, keys: &[ObjectKey]) {
        let _ = keys;
    }

    /// Deletes every object whose path starts with `prefix`, across all
    /// shards; returns how many were deleted.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let objects = self.list(prefix).await?;
        let keys: Vec<ObjectKey> = objects.into_iter().map(|o| o.key).collect();
        let n = keys.len() as u64;
        for chunk in keys.chunks(1000) {
            self.delete(chunk).await?;
        }
        Ok(n)
    }
}
