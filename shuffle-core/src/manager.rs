//! The shuffle manager: the contract engines program against.
//!
//! ```text
//!   driver                      map task (attempt a)                 reduce task
//!   register_shuffle(h) ──▶  map_writer / buffered_writer ─commit─▶ MapStatus ─▶ tracker
//!                                                                          │
//!                            reader(statuses, partitions p..q) ◀───────────┘
//!                            ─▶ Stream<Block> (map order, then partition order)
//!   remove_shuffle(id)   ──▶  every object of the shuffle deleted
//! ```
//!
//! # Cleanup without listing
//! A [`StoreShuffleManager`] records every key it may write *before* it
//! writes it (a [`KeyLog`]: the data object of each attempt, the index of
//! each map), so the set it knows is a superset of what it wrote, whatever
//! failed or was cancelled half-way. [`ShuffleManager::remove_shuffles`] and
//! [`ShuffleManager::cleanup_app`] delete exactly those keys with the store's
//! batched `delete` (one S3 DeleteObjects per bucket and 1,000 keys) and never
//! list: on S3 a `delete_prefix` is one LIST per bucket and hash prefix.
//! Objects the manager never knew of (written under the same app id by
//! another process, or left by a process killed before its cleanup) are
//! `gc`'s to delete; `delete_prefix` is kept for `gc` and for stores used
//! without a manager.
//!
//! # Object layout
//! Relative to a store's root (a local directory, or `s3://bucket/prefix/<shard>`):
//!
//! ```text
//! <app_id>/shuffle-<shuffle_id>/map-<map_id>-<attempt>.data   frames of every partition
//! <app_id>/shuffle-<shuffle_id>/map-<map_id>.index            index; written last, once
//! ```
//!
//! Attempt ids in data keys mean two attempts never write the same object.
//! The index key has no attempt: it is created with `put_if_absent` and so
//! records the winning attempt. Stores that ignore conditional writes may let
//! a later attempt replace the index; readers that hold a [`MapStatus`] read
//! the data object it names directly and are unaffected, and the engine's
//! map-output tracker keeps the first status it was given.

use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::buffer::MapOutputBuffer;
use crate::config::ShuffleConfig;
use crate::format::{Codec, IndexFile};
use crate::job::{Heartbeat, JobMarker};
use crate::memory::MemoryPool;
use crate::metrics::ShuffleMetrics;
use crate::reader::{ReaderOptions, ShuffleReader};
use crate::spill::{LocalSpillStore, SpillStore};
use crate::store::{ObjectKey, ShuffleStore};
use crate::writer::MapOutputWriter;
use crate::{Error, Result};

/// A registered shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleHandle {
    pub shuffle_id: u32,
    pub num_maps: u32,
    pub num_partitions: u32,
}

/// What a committed map output is and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapStatus {
    pub shuffle_id: u32,
    pub map_id: u32,
    /// The attempt whose output this is.
    pub attempt: u32,
    /// The data object (meaningless when every length is 0).
    pub location: ObjectKey,
    /// Stored bytes per partition.
    pub lengths: Vec<u64>,
    /// crc32 of each partition's stored bytes.
    pub checksums: Vec<u32>,
    /// Records per partition, as counted by the writer.
    pub records: Vec<u64>,
    /// Raw (uncompressed) bytes written, when known (0 otherwise).
    pub raw_bytes: u64,
}

impl MapStatus {
    pub(crate) fn from_index(index: &IndexFile, raw_bytes: u64, layout: &Layout) -> Self {
        Self {
            shuffle_id: index.shuffle_id,
            map_id: index.map_id,
            attempt: index.attempt,
            location: layout.data_key(index.shuffle_id, index.map_id, index.attempt),
            lengths: index.lengths(),
            checksums: index.checksums.clone(),
            records: index.records.clone(),
            raw_bytes,
        }
    }

    pub fn num_partitions(&self) -> u32 {
        self.lengths.len() as u32
    }

    /// Stored bytes of all partitions.
    pub fn total_bytes(&self) -> u64 {
        self.lengths.iter().sum()
    }

    /// Byte range of a contiguous partition range in the data object.
    pub fn byte_range(&self, partitions: Range<u32>) -> Range<u64> {
        let start: u64 = self.lengths[..partitions.start as usize].iter().sum();
        let len: u64 = self.lengths[partitions.start as usize..partitions.end as usize]
            .iter()
            .sum();
        start..start + len
    }
}

/// The keys a manager may have written, per shuffle (see the module docs).
///
/// Writers record a key *before* they write it and forget it once they
/// deleted it themselves, so deleting every recorded key leaves nothing of
/// what went through the manager, and the count is close to the number of
/// objects that exist (a write cut off mid-request is counted too).
#[derive(Debug, Default)]
pub struct KeyLog {
    keys: Mutex<HashMap<u32, std::collections::BTreeSet<ObjectKey>>>,
}

impl KeyLog {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u32, std::collections::BTreeSet<ObjectKey>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `key` of `shuffle_id` is about to be written.
    pub fn record(&self, shuffle_id: u32, key: ObjectKey) {
        self.lock().entry(shuffle_id).or_default().insert(key);
    }

    /// Notes that `key` was deleted by whoever wrote it.
    pub fn forget(&self, shuffle_id: u32, key: &ObjectKey) {
        if let Some(keys) = self.lock().get_mut(&shuffle_id) {
            keys.remove(key);
        }
    }

    /// Removes and returns the keys of the given shuffles (of every shuffle
    /// with `None`), with the shuffle each belongs to.
    pub fn take(&self, shuffle_ids: Option<&[u32]>) -> Vec<(u32, ObjectKey)> {
        let mut g = self.lock();
        let ids: Vec<u32> = match shuffle_ids {
            Some(ids) => ids.to_vec(),
            None => g.keys().copied().collect(),
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(keys) = g.remove(&id) {
                out.extend(keys.into_iter().map(|k| (id, k)));
            }
        }
        out
    }

    /// Puts back keys whose delete failed, so a later cleanup retries them.
    pub fn restore(&self, keys: Vec<(u32, ObjectKey)>) {
        let mut g = self.lock();
        for (id, k) in keys {
            g.entry(id).or_default().insert(k);
        }
    }

    /// Keys recorded and not yet deleted.
    pub fn len(&self) -> usize {
        self.lock().values().map(|k| k.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Names objects; see the module docs.
#[derive(Debug, Clone)]
pub struct Layout {
    app_id: String,
}

impl Layout {
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Spreads a map's objects across directories, buckets and prefixes.
    pub fn shard(shuffle_id: u32, map_id: u32) -> u64 {
        // splitmix64 finaliser: consecutive ids land on unrelated shards.
        let mut z = ((shuffle_id as u64) << 32 | map_id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The prefix holding every object of the app.
    pub fn app_prefix(&self) -> String {
        format!("{}/", self.app_id)
    }

    /// The prefix holding every object of a shuffle.
    pub fn shuffle_prefix(&self, shuffle_id: u32) -> String {
        format!("{}/shuffle-{shuffle_id}/", self.app_id)
    }

    pub fn data_key(&self, shuffle_id: u32, map_id: u32, attempt: u32) -> ObjectKey {
        ObjectKey::new(
            Self::shard(shuffle_id, map_id),
            format!(
                "{}map-{map_id}-{attempt}.data",
                self.shuffle_prefix(shuffle_id)
            ),
        )
    }

    pub fn index_key(&self, shuffle_id: u32, map_id: u32) -> ObjectKey {
        ObjectKey::new(
            Self::shard(shuffle_id, map_id),
            format!("{}map-{map_id}.index", self.shuffle_prefix(shuffle_id)),
        )
    }
}

/// The name of the job marker object under `<app_id>/` (see [`crate::job`]).
pub const JOB_MARKER: &str = "_shovel_job.json";

/// The object a start-up probe of a store writes and deletes under
/// `<app_id>/` (S3's `s3.probe`); one left by a probe that was cut off is
/// a temporary file to `gc`.
pub const PROBE_OBJECT: &str = "_shovel_probe";

/// The top-level directory of spill objects (`spill/<app_id>/...`); never an app id.
pub const SPILL_DIR: &str = "spill";

/// What kind of object Shovel wrote under a key (see [`Layout::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `<app>/shuffle-<s>/map-<m>-<attempt>.data`
    Data {
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
    },
    /// `<app>/shuffle-<s>/map-<m>.index`
    Index { shuffle_id: u32, map_id: u32 },
    /// `spill/<app>/spill-<suffix>.bin`
    Spill,
    /// `<app>/_shovel_job.json`, the job marker.
    JobMarker,
    /// A local file sink's temporary file for one of the above
    /// (`<stem>.tmp-<suffix>`), left behind when a process is killed mid-write.
    Temp,
}

/// A key Shovel wrote: whose job it belongs to and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShovelObject {
    pub app_id: String,
    pub kind: ObjectKind,
}

impl Layout {
    /// Checks that `app_id` is usable as the first segment of every key:
    /// 1 to 128 characters of `[A-Za-z0-9._-]`, not starting with `.`, and
    /// not `spill` (the spill directory). This keeps [`Layout::parse`]
    /// unambiguous.
    pub fn validate_app_id(app_id: &str) -> Result<()> {
        let bad = |why: &str| {
            Err(Error::config(
                "shuffle.app_id",
                format!("`{app_id}` {why}; use 1 to 128 characters of A-Z a-z 0-9 . _ - such as my-job-42"),
            ))
        };
        if app_id.is_empty() || app_id.len() > 128 {
            return bad("has the wrong length");
        }
        if let Some(c) = app_id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(&format!("contains `{c}`"));
        }
        if app_id.starts_with('.') {
            return bad("starts with `.`");
        }
        if app_id == SPILL_DIR {
            return bad("is reserved for spill files");
        }
        Ok(())
    }

    /// The job marker's key on root `shard` (see [`ShuffleStore::root_shards`]).
    pub fn marker_key(&self, shard: u64) -> ObjectKey {
        ObjectKey::new(shard, format!("{}/{JOB_MARKER}", self.app_id))
    }

    /// The prefix of this app's spill objects in an object store.
    pub fn spill_prefix(&self) -> String {
        format!("{SPILL_DIR}/{}/", self.app_id)
    }

    /// Parses a key path relative to a store root into what Shovel wrote
    /// there, or `None` for anything Shovel never writes. This is the whole
    /// grammar; `gc` deletes nothing it does not recognise:
    ///
    /// ```text
    /// <app>/shuffle-<u32>/map-<u32>-<u32>.data
    /// <app>/shuffle-<u32>/map-<u32>.index
    /// <app>/_shovel_job.json
    /// spill/<app>/spill-<suffix>.bin
    /// any of the file names above with its extension replaced by
    ///     .tmp-<suffix>                     (a local sink's temporary file)
    /// <app>    = a valid app id (see validate_app_id)
    /// <suffix> = [0-9a-f-]+                 (see fs::unique_suffix)
    /// ```
    pub fn parse(path: &str) -> Option<ShovelObject> {
        let parts: Vec<&str> = path.split('/').collect();
        let (app, kind) = match parts.as_slice() {
            [SPILL_DIR, app, file] => {
                let kind = match split_temp(file) {
                    Some(stem) => is_spill_stem(stem).then_some(ObjectKind::Temp),
                    None => file
                        .strip_suffix(".bin")
                        .filter(|s| is_spill_stem(s))
                        .map(|_| ObjectKind::Spill),
                }?;
                (*app, kind)
            }
            [app, file] => {
                let kind = match split_temp(file) {
                    Some(stem) => (stem == marker_stem()).then_some(ObjectKind::Temp),
                    None if *file == JOB_MARKER => Some(ObjectKind::JobMarker),
                    None => (*file == PROBE_OBJECT).then_some(ObjectKind::Temp),
                }?;
                (*app, kind)
            }
            [app, dir, file] => {
                let shuffle_id = parse_u32(dir.strip_prefix("shuffle-")?)?;
                let kind = match split_temp(file) {
                    Some(stem) => parse_map_stem(stem).map(|_| ObjectKind::Temp),
                    None => {
                        if let Some(stem) = file.strip_suffix(".data") {
                            match parse_map_stem(stem)? {
                                (map_id, Some(attempt)) => Some(ObjectKind::Data {
                                    shuffle_id,
                                    map_id,
                                    attempt,
                                }),
                                (_, None) => None,
                            }
                        } else if let Some(stem) = file.strip_suffix(".index") {
                            match parse_map_stem(stem)? {
                                (map_id, None) => Some(ObjectKind::Index { shuffle_id, map_id }),
                                (_, Some(_)) => None,
                            }
                        } else {
                            None
                        }
                    }
                }?;
                (*app, kind)
            }
            _ => return None,
        };
        Self::validate_app_id(app).ok()?;
        Some(ShovelObject {
            app_id: app.to_string(),
            kind,
        })
    }

    /// True when `dir` (a relative directory path, no trailing `/`) is one
    /// Shovel creates: `<app>`, `<app>/shuffle-<u32>`, `spill`, `spill/<app>`.
    pub fn is_shovel_dir(dir: &str) -> bool {
        let parts: Vec<&str> = dir.split('/').collect();
        match parts.as_slice() {
            [SPILL_DIR] => true,
            [SPILL_DIR, app] | [app] => Self::validate_app_id(app).is_ok(),
            [app, sub] => {
                Self::validate_app_id(app).is_ok()
                    && sub.strip_prefix("shuffle-").and_then(parse_u32).is_some()
            }
            _ => false,
        }
    }
}

fn marker_stem() -> &'static str {
    JOB_MARKER.strip_suffix(".json").unwrap_or(JOB_MARKER)
}

/// A canonical decimal `u32` (no sign, no leading zeros).
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn is_suffix(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
}

fn is_spill_stem(stem: &str) -> bool {
    stem.strip_prefix("spill-").is_some_and(is_suffix)
}

/// `<stem>.tmp-<suffix>` gives `stem`.
fn split_temp(file: &str) -> Option<&str> {
    let (stem, ext) = file.rsplit_once('.')?;
    ext.strip_prefix("tmp-").filter(|s| is_suffix(s))?;
    Some(stem)
}

/// `map-<m>` or `map-<m>-<attempt>`.
fn parse_map_stem(stem: &str) -> Option<(u32, Option<u32>)> {
    let rest = stem.strip_prefix("map-")?;
    match rest.split_once('-') {
        Some((m, a)) => Some((parse_u32(m)?, Some(parse_u32(a)?))),
        None => Some((parse_u32(rest)?, None)),
    }
}

/// The shuffle contract (Spark's `ShuffleDataIO`, engine-agnostic: bytes in, bytes out).
///
/// # Contract
/// - `map_writer` gives one writer per map task attempt; partition writers
///   come in strictly increasing order; `commit` returns the status of the
///   first attempt that committed (perhaps another one); `abort` leaves
///   nothing behind.
/// - `reader` yields, for a contiguous partition range of committed map
///   statuses, every block in map order then partition order, verifying
///   checksums, with bounded memory; failures are [`Error::FetchFailed`]
///   naming the map.
/// - `remove_shuffle` / `remove_shuffles` delete every object of the
///   shuffles that this manager's writers wrote (including losing, aborted
///   and invalidated attempts), without listing; `cleanup_app` does the same
///   for every shuffle of the app, plus its spill files and job markers. The
///   manager learns each key before anything is written under it, so a job
///   that failed or was cancelled at any point still leaves nothing once
///   `cleanup_app` returns. A failed delete keeps its keys for the next call.
///   Objects of the app this manager never wrote (another process's) are
///   left to `gc`.
/// - `start_app` writes the job marker (`<app_id>/_shovel_job.json`, see
///   [`crate::job`]) on every root and keeps refreshing it; it is idempotent
///   and `register_shuffle` calls it, so every job that writes has a marker.
///   `cleanup_app` and `release_app` stop the refresh and delete the marker;
///   dropping the manager stops the refresh (the marker then ages and `gc`
///   treats the job as dead once it is older than `--older-than`).
/// - `supports_reliable_storage` is true when committed outputs survive the
///   loss of the process that wrote them.
#[async_trait]
pub trait ShuffleManager: Send + Sync + Debug {
    /// Declares a shuffle before any of its map tasks run.
    async fn register_shuffle(&self, handle: ShuffleHandle) -> Result<()>;
    /// A writer for one map task attempt (ordered partition writers).
    async fn map_writer(
        &self,
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
    ) -> Result<MapOutputWriter>;
    /// Reads partitions `partitions` of the given committed map outputs.
    fn reader(
        &self,
        shuffle_id: u32,
        maps: Vec<MapStatus>,
        partitions: Range<u32>,
    ) -> Result<ShuffleReader>;
    /// The committed status of a map, from storage (for a process that has
    /// only the ids); cached.
    async fn committed_map_status(&self, shuffle_id: u32, map_id: u32) -> Result<MapStatus>;
    /// Forgets a committed map output found lost or corrupt, so that a
    /// re-run of its map task can commit in its place: deletes the index if
    /// it still names `attempt` (or cannot be read), and that attempt's data.
    async fn invalidate_map_output(&self, shuffle_id: u32, map_id: u32, attempt: u32)
        -> Result<()>;
    /// Deletes every object of a shuffle (see the Contract: known keys, no
    /// listing).
    async fn remove_shuffle(&self, shuffle_id: u32) -> Result<()>;
    /// Deletes every object of several shuffles, batched across them (one
    /// batched delete per store root instead of one per shuffle). The
    /// default removes them one by one.
    async fn remove_shuffles(&self, shuffle_ids: &[u32]) -> Result<()> {
        for id in shuffle_ids {
            self.remove_shuffle(*id).await?;
        }
        Ok(())
    }
    /// Writes the job marker and starts refreshing it every `job.heartbeat`
    /// (idempotent; also called by `register_shuffle`).
    async fn start_app(&self) -> Result<()>;
    /// Deletes every object of this manager's app (shuffles, spills and the
    /// job marker) by the keys it knows, without listing (see the
    /// Contract); returns how many shuffle and spill objects it deleted.
    async fn cleanup_app(&self) -> Result<u64>;
    /// Ends the job but keeps its committed map outputs (`--keep-shuffle`):
    /// stops refreshing and deletes the job marker, deletes spill files, and
    /// returns where the outputs are (one location per root). `gc` removes
    /// the outputs once they are older than its `--older-than`.
    async fn release_app(&self) -> Result<Vec<String>>;
    /// True when committed outputs outlive their writer's process.
    fn supports_reliable_storage(&self) -> bool;
    /// Forgets any copy of these committed map outputs kept in this process
    /// besides storage (a local tier's cache), so later reads come from
    /// storage: called for the outputs of a lost executor, whose local
    /// copies would be gone on a real cluster. Default: none are kept.
    fn drop_local_copies(&self, maps: &[MapStatus]) {
        let _ = maps;
    }
    fn metrics(&self) -> &Arc<ShuffleMetrics>;
    fn memory_pool(&self) -> &Arc<MemoryPool>;
    fn spill_store(&self) -> &Arc<dyn SpillStore>;
    /// The app id that namespaces this manager's objects.
    fn app_id(&self) -> &str;
    /// The backend's name ("local", "s3").
    fn backend_name(&self) -> &'static str;
    /// The frame codec every writer of this manager uses (`shuffle.codec`):
    /// map outputs, their buffers' spills, and operators' spill files.
    fn codec(&self) -> Codec;
}

/// Conveniences on every [`ShuffleManager`].
#[async_trait]
pub trait ShuffleManagerExt: ShuffleManager {
    /// A writer that takes blocks for any partition in any order, buffers
    /// them in memory from the pool and spills when the pool is full.
    async fn buffered_writer(
        &self,
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
    ) -> Result<MapOutputBuffer> {
        let writer = self.map_writer(shuffle_id, map_id, attempt).await?;
        Ok(MapOutputBuffer::new(
            writer,
            self.memory_pool()
                .reservation(format!("map output buffer {shuffle_id}/{map_id}")),
            Arc::clone(self.spill_store()),
            Arc::clone(self.metrics()),
        ))
    }
}

impl<T: ShuffleManager + ?Sized> ShuffleManagerExt for T {}

/// The [`ShuffleManager`] over any [`ShuffleStore`]: both backends use it.
#[derive(Debug, Clone)]
pub struct StoreShuffleManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ShuffleStore>,
    config: ShuffleConfig,
    layout: Layout,
    metrics: Arc<ShuffleMetrics>,
    pool: Arc<MemoryPool>,
    spill: Arc<dyn SpillStore>,
    shuffles: Mutex<HashMap<u32, ShuffleHandle>>,
    statuses: moka::future::Cache<(u32, u32), MapStatus>,
    /// Every key a writer of this manager may have written.
    written: Arc<KeyLog>,
    /// The job marker and its refresh task, once `start_app` ran.
    job: tokio::sync::Mutex<Option<Heartbeat>>,
}

/// Builds a [`StoreShuffleManager`].
#[derive(Debug)]
pub struct StoreShuffleManagerBuilder {
    store: Arc<dyn ShuffleStore>,
    config: ShuffleConfig,
    metrics: Option<Arc<ShuffleMetrics>>,
    pool: Option<Arc<MemoryPool>>,
    spill: Option<Arc<dyn SpillStore>>,
}

impl StoreShuffleManagerBuilder {
    /// Metrics shared with the store (so request counts land in the same place).
    pub fn metrics(mut self, metrics: Arc<ShuffleMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
    /// A memory pool shared with other consumers (default: `memory.limit`).
    pub fn memory_pool(mut self, pool: Arc<MemoryPool>) -> Self {
        self.pool = Some(pool);
        self
    }
    /// Where to spill (default: local directories `local.dirs`).
    pub fn spill_store(mut self, spill: Arc<dyn SpillStore>) -> Self {
        self.spill = Some(spill);
        self
    }

    pub fn build(self) -> StoreShuffleManager {
        let config = self.config;
        let spill = self.spill.unwrap_or_else(|| {
            Arc::new(LocalSpillStore::new(
                config
                    .local_dirs
                    .iter()
                    .map(|d| d.join("spill").join(&config.app_id))
                    .collect(),
            ))
        });
        StoreShuffleManager {
            inner: Arc::new(Inner {
                store: self.store,
                layout: Layout::new(config.app_id.clone()),
                metrics: self.metrics.unwrap_or_default(),
                pool: self
                    .pool
                    .unwrap_or_else(|| MemoryPool::new(config.memory_limit as usize)),
                spill,
                shuffles: Mutex::new(HashMap::new()),
                statuses: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .support_invalidation_closures()
                    .build(),
                written: Arc::new(KeyLog::default()),
                job: tokio::sync::Mutex::new(None),
                config,
            }),
        }
    }
}

impl StoreShuffleManager {
    pub fn builder(
        store: Arc<dyn ShuffleStore>,
        config: ShuffleConfig,
    ) -> StoreShuffleManagerBuilder {
        StoreShuffleManagerBuilder {
            store,
            config,
            metrics: None,
            pool: None,
            spill: None,
        }
    }

    pub fn store(&self) -> &Arc<dyn ShuffleStore> {
        &self.inner.store
    }

    pub fn config(&self) -> &ShuffleConfig {
        &self.inner.config
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The keys this manager's writers may have written and nobody deleted yet.
    pub fn known_keys(&self) -> &Arc<KeyLog> {
        &self.inner.written
    }

    /// Deletes the recorded keys of `shuffle_ids` (all with `None`) in one
    /// batched delete, then tidies the directories they were in (local
    /// stores); returns how many keys it deleted. On failure the keys stay
    /// recorded for a later call.
    async fn delete_known(&self, shuffle_ids: Option<&[u32]>) -> Result<u64> {
        let inner = &self.inner;
        let taken = inner.written.take(shuffle_ids);
        let mut shuffles: Vec<u32> = taken.iter().map(|(id, _)| *id).collect();
        if let Some(ids) = shuffle_ids {
            shuffles.extend_from_slice(ids);
        }
        shuffles.sort_unstable();
        shuffles.dedup();
        let keys: Vec<ObjectKey> = taken.iter().map(|(_, k)| k.clone()).collect();
        if let Err(e) = inner.store.delete(&keys).await {
            inner.written.restore(taken);
            return Err(e);
        }
        let mut dirs: Vec<String> = shuffles
            .iter()
            .map(|id| {
                let p = inner.layout.shuffle_prefix(*id);
                p.trim_end_matches('/').to_string()
            })
            .collect();
        if inner.store.cheap_listing() {
            // A directory walk, not a request: also catches the temporary
            // files of writes that were cut off (see `cheap_listing`).
            match shuffle_ids {
                Some(_) => {
                    for id in &shuffles {
                        inner
                            .store
                            .delete_prefix(&inner.layout.shuffle_prefix(*id))
                            .await?;
                    }
                }
                None => {
                    inner
                        .store
                        .delete_prefix(&inner.layout.app_prefix())
                        .await?;
                }
            }
        }
        if shuffle_ids.is_none() {
            dirs.push(inner.layout.app_id().to_string());
        }
        inner.store.remove_empty_dirs(&dirs).await?;
        Ok(keys.len() as u64)
    }

    /// Stops the marker refresh and deletes the marker, if `start_app` ran.
    async fn stop_job_marker(&self) -> Result<()> {
        let heartbeat = self.inner.job.lock().await.take();
        match heartbeat {
            Some(h) => h.stop().await,
            None => Ok(()),
        }
    }

    fn handle(&self, shuffle_id: u32) -> Result<ShuffleHandle> {
        let shuffles = self
            .inner
            .shuffles
            .lock()
            .map_err(|_| Error::Protocol("shuffle registry poisoned".into()))?;
        shuffles.get(&shuffle_id).copied().ok_or_else(|| {
            Error::Protocol(format!(
                "shuffle {shuffle_id} is not registered; call register_shuffle first"
            ))
        })
    }
}

#[async_trait]
impl ShuffleManager for StoreShuffleManager {
    async fn register_shuffle(&self, handle: ShuffleHandle) -> Result<()> {
        if handle.num_partitions == 0 {
            return Err(Error::Protocol(format!(
                "shuffle {} needs at least one partition",
                handle.shuffle_id
            )));
        }
        self.start_app().await?;
        let mut shuffles = self
            .inner
            .shuffles
            .lock()
            .map_err(|_| Error::Protocol("shuffle registry poisoned".into()))?;
        match shuffles.get(&handle.shuffle_id) {
            Some(existing) if *existing != handle => Err(Error::Protocol(format!(
                "shuffle {} is already registered as {existing:?}",
                handle.shuffle_id
            ))),
            _ => {
                shuffles.insert(handle.shuffle_id, handle);
                Ok(())
            }
        }
    }

    async fn map_writer(
        &self,
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
    ) -> Result<MapOutputWriter> {
        let h = self.handle(shuffle_id)?;
        if map_id >= h.num_maps {
            return Err(Error::Protocol(format!(
                "map {map_id} out of range: shuffle {shuffle_id} has {} maps",
                h.num_maps
            )));
        }
        Ok(MapOutputWriter::new(
            Arc::clone(&self.inner.store),
            Arc::clone(&self.inner.metrics),
            self.inner.layout.clone(),
            self.inner.config.codec,
            shuffle_id,
            map_id,
            attempt,
            h.num_partitions,
            Arc::clone(&self.inner.written),
        ))
    }

    fn reader(
        &self,
        shuffle_id: u32,
        maps: Vec<MapStatus>,
        partitions: Range<u32>,
    ) -> Result<ShuffleReader> {
        let c = &self.inner.config;
        ShuffleReader::new(
            Arc::clone(&self.inner.store),
            Arc::clone(&self.inner.metrics),
            shuffle_id,
            maps,
            partitions,
            ReaderOptions {
                max_bytes_in_flight: c.fetch_max_bytes_in_flight,
                max_requests_in_flight: c.fetch_max_requests_in_flight,
                chunk_bytes: c.fetch_chunk_bytes,
            },
        )
    }

    async fn committed_map_status(&self, shuffle_id: u32, map_id: u32) -> Result<MapStatus> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .statuses
            .try_get_with((shuffle_id, map_id), async move {
                let key = inner.layout.index_key(shuffle_id, map_id);
                let name = inner.store.describe(&key);
                let bytes = inner.store.get(&key).await?;
                let index = IndexFile::decode(&bytes, &name)?;
                if index.shuffle_id != shuffle_id || index.map_id != map_id {
                    return Err(Error::corrupt(name, "index names another map output"));
                }
                Ok::<_, Error>(MapStatus::from_index(&index, 0, &inner.layout))
            })
            .await
            .map_err(|e: Arc<Error>| clone_error(&e))
    }

    async fn invalidate_map_output(
        &self,
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
    ) -> Result<()> {
        let inner = &self.inner;
        inner.statuses.invalidate(&(shuffle_id, map_id)).await;
        let index_key = inner.layout.index_key(shuffle_id, map_id);
        let names_attempt = match inner.store.get(&index_key).await {
            Ok(bytes) => match IndexFile::decode(&bytes, &inner.store.describe(&index_key)) {
                Ok(index) => Some(index.attempt == attempt),
                Err(_) => Some(true), // unreadable: it cannot stand
            },
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if names_attempt == Some(true) {
            inner.store.delete(std::slice::from_ref(&index_key)).await?;
            inner.written.forget(shuffle_id, &index_key);
        }
        if names_attempt != Some(false) {
            let data = inner.layout.data_key(shuffle_id, map_id, attempt);
            inner.store.delete(std::slice::from_ref(&data)).await?;
            inner.written.forget(shuffle_id, &data);
        }
        tracing::info!(
            shuffle_id,
            map_id,
            attempt,
            "invalidated map output for recomputation"
        );
        Ok(())
    }

    async fn remove_shuffle(&self, shuffle_id: u32) -> Result<()> {
        self.remove_shuffles(&[shuffle_id]).await
    }

    async fn remove_shuffles(&self, shuffle_ids: &[u32]) -> Result<()> {
        if shuffle_ids.is_empty() {
            return Ok(());
        }
        self.delete_known(Some(shuffle_ids)).await?;
        if let Ok(mut s) = self.inner.shuffles.lock() {
            for id in shuffle_ids {
                s.remove(id);
            }
        }
        let ids: Vec<u32> = shuffle_ids.to_vec();
        self.inner
            .statuses
            .invalidate_entries_if(move |k, _| ids.contains(&k.0))
            .map_err(|e| Error::Protocol(format!("status cache: {e}")))?;
        Ok(())
    }

    async fn start_app(&self) -> Result<()> {
        let mut job = self.inner.job.lock().await;
        if job.is_some() {
            return Ok(());
        }
        let store = &self.inner.store;
        let keys = store
            .root_shards()
            .into_iter()
            .map(|shard| self.inner.layout.marker_key(shard))
            .collect();
        let marker = JobMarker::for_this_process(self.app_id(), self.inner.config.job_heartbeat);
        *job = Some(Heartbeat::start(Arc::clone(store), keys, marker).await?);
        Ok(())
    }

    async fn release_app(&self) -> Result<Vec<String>> {
        self.stop_job_marker().await?;
        self.inner.spill.cleanup().await?;
        Ok(self
            .inner
            .store
            .describe_prefix(&self.inner.layout.app_prefix()))
    }

    async fn cleanup_app(&self) -> Result<u64> {
        self.stop_job_marker().await?;
        self.inner.statuses.invalidate_all();
        let shuffle = self.delete_known(None).await?;
        let spills = self.inner.spill.cleanup().await?;
        Ok(shuffle + spills)
    }

    fn supports_reliable_storage(&self) -> bool {
        self.inner.store.supports_reliable_storage()
    }
    fn drop_local_copies(&self, maps: &[MapStatus]) {
        let keys: Vec<ObjectKey> = maps.iter().map(|m| m.location.clone()).collect();
        self.inner.store.drop_local_copies(&keys);
    }
    fn metrics(&self) -> &Arc<ShuffleMetrics> {
        &self.inner.metrics
    }
    fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.inner.pool
    }
    fn spill_store(&self) -> &Arc<dyn SpillStore> {
        &self.inner.spill
    }
    fn app_id(&self) -> &str {
        self.inner.layout.app_id()
    }
    fn backend_name(&self) -> &'static str {
        self.inner.store.name()
    }
    fn codec(&self) -> Codec {
        self.inner.config.codec
    }
}

/// Rebuilds an error shared through the status cache.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::NotFound { object } => Error::NotFound {
            object: object.clone(),
        },
        Error::ChecksumMismatch {
            object,
            partition,
            expected,
            actual,
        } => Error::ChecksumMismatch {
            object: object.clone(),
            partition: *partition,
            expected: *expected,
            actual: *actual,
        },
        Error::Corrupt { object, reason } => Error::corrupt(object.clone(), reason.clone()),
        other => Error::Backend {
            store: "shuffle",
            message: other.to_string(),
            source: None,
        },
    }
}

#[cfg(test)]
mod grammar_tests {
    use super::*;

    fn kind(path: &str) -> Option<ObjectKind> {
        Layout::parse(path).map(|o| {
            assert_eq!(o.app_id, "app-1-2", "{path}");
            o.kind
        })
    }

    #[test]
    fn parses_every_name_shovel_writes() {
        let layout = Layout::new("app-1-2");
        let data = layout.data_key(3, 7, 1);
        let index = layout.index_key(3, 7);
        assert_eq!(
            kind(&data.path),
            Some(ObjectKind::Data {
                shuffle_id: 3,
                map_id: 7,
                attempt: 1
            })
        );
        assert_eq!(
            kind(&index.path),
            Some(ObjectKind::Index {
                shuffle_id: 3,
                map_id: 7
            })
        );
        assert_eq!(
            kind(&layout.marker_key(0).path),
            Some(ObjectKind::JobMarker)
        );
        let suffix = crate::fs::unique_suffix();
        let spill = format!("{}spill-{suffix}.bin", layout.spill_prefix());
        assert_eq!(kind(&spill), Some(ObjectKind::Spill));
        // Temporary names exactly as FileSink makes them.
        for fin in [&data.path, &index.path, &layout.marker_key(0).path, &spill] {
            let tmp = std::path::Path::new(fin)
                .with_extension(format!("tmp-{}", crate::fs::unique_suffix()));
            let tmp = tmp.to_string_lossy();
            assert_eq!(kind(&tmp), Some(ObjectKind::Temp), "{tmp}");
        }
        // What an interrupted start-up probe leaves.
        assert_eq!(
            kind(&format!("{}{PROBE_OBJECT}", layout.app_prefix())),
            Some(ObjectKind::Temp)
        );
    }

    #[test]
    fn rejects_everything_else() {
        for path in [
            ".git/HEAD",
            "report.parquet",
            ".hidden",
            "app-1-2/shuffle-3/notes.txt",
            "app-1-2/shuffle-3/map-1-0.data.bak",
            "app-1-2/shuffle-3/map-1.data",
            "app-1-2/shuffle-3/map-1-0.index",
            "app-1-2/shuffle-03/map-1-0.data",
            "app-1-2/shuffle-x/map-1-0.data",
            "app-1-2/shuffle-3/map--1-0.data",
            "app-1-2/shuffle-3/map-1-0.tmp-xyz",
            "app-1-2/shuffle-3/sub/map-1-0.data",
            "app-1-2/map-1-0.data",
            "app-1-2/_shovel_job.json.bak",
            "app-1-2/other.json",
            ".app/_shovel_job.json",
            "spill/_shovel_job.json",
            "spill/shuffle-1/map-1-0.data",
            "spill/app-1-2/spill-1.txt",
            "spill/app-1-2/notspill-1.bin",
            "spill/app-1-2/spill-XYZ.bin",
            "spill/.x/spill-1.bin",
            "spill/app-1-2/deeper/spill-1.bin",
            "a b/_shovel_job.json",
            "/app-1-2/_shovel_job.json",
            "",
        ] {
            assert_eq!(Layout::parse(path), None, "{path}");
        }
    }

    #[test]
    fn shovel_dirs() {
        for d in ["app-1", "app-1/shuffle-0", "spill", "spill/app-1"] {
            assert!(Layout::is_shovel_dir(d), "{d}");
        }
        for d in [
            ".git",
            "app-1/shuffle-x",
            "app-1/other",
            "spill/.x",
            "a/b/c",
            "",
        ] {
            assert!(!Layout::is_shovel_dir(d), "{d}");
        }
    }

    #[test]
    fn app_ids() {
        assert!(Layout::validate_app_id("app-1700000000-42").is_ok());
        for bad in ["", ".x", "spill", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(Layout::validate_app_id(bad).is_err(), "{bad}");
        }
    }
}
