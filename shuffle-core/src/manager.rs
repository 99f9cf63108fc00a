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
//! # Committing: one write, first attempt wins
//! A map output is one data object with its index as a footer
//! ([`crate::format`]); publishing it is the commit, so a map task commits
//! with a single write, and an all-empty output writes nothing (its status,
//! all lengths 0, is the whole commit). Who wins between attempts of one
//! map depends on the store:
//!
//! - **Conditional create** ([`ShuffleStore::supports_conditional_create`],
//!   local disk and S3 with `s3.conditional_writes`): the key has no
//!   attempt (`shuffle-<s>_map-<m>.data`) and is published with
//!   `create_if_absent`, so storage picks the winner across processes. A
//!   loser's bytes never become visible; it reads the winner's footer (one
//!   suffix read) and returns the winner's [`MapStatus`]. A retried
//!   conditional PUT whose first response was lost sees its own object and
//!   reads it back the same way.
//! - **Otherwise** (a store that ignores `If-None-Match`): every attempt
//!   writes its own key (`shuffle-<s>_map-<m>-<a>.data`, never
//!   overwritten) and the manager arbitrates in-process: the first commit
//!   recorded for (shuffle, map) wins; a later attempt deletes its object
//!   and returns the winner's status. Across processes the driver's map-output tracker
//!   arbitrates (it keeps the first status it is given); the objects of
//!   other losers are removed with the shuffle.
//!
//! In both modes the manager keeps the first status per map it saw (cheap),
//! so a later attempt in the same process loses without a request and
//! [`ShuffleManager::committed_map_status`] answers for maps committed here
//! without one. For other maps it reads storage: with conditional create
//! one suffix read of `shuffle-<s>_map-<m>.data`; otherwise one LIST of
//! `shuffle-<s>_map-<m>-` (across the store's shards: this is the recovery
//! path only, never the normal one) and the footer of the lowest attempt
//! whose footer is valid. An all-empty output is not on storage: for a
//! process that did not commit it, `committed_map_status` says `NotFound`
//! and the caller recomputes it, which is cheap since it has no rows.
//!
//! # Cleanup without listing
//! A [`StoreShuffleManager`] records every key it may write *before* it
//! writes it (a [`KeyLog`]: the data object of each attempt or
//! map), so the set it knows is a superset of what it wrote, whatever
//! failed or was cancelled half-way. [`ShuffleManager::remove_shuffles`] and
//! [`ShuffleManager::cleanup_app`] delete exactly those keys with the store's
//! batched `delete` (one S3 DeleteObjects per bucket and 1,000 keys) and never
//! list: on S3 a `delete_prefix` is one LIST per bucket and hash prefix.
//! Objects the manager never knew of (written under the same app id by
//! another process, or left by a process killed before its cleanup) are
//! `gc`'s to delete; `delete_prefix` is kept for `gc`, for stores used
//! without a manager, and for [`ShuffleManager::purge_app`]: the owner of
//! an app whose map outputs other processes wrote (a distributed engine's
//! driver, whose executors write under the app id it chose) removes the
//! whole app by listing it once the job is over.
//!
//! # Object layout
//! See [`crate::layout`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::buffer::MapOutputBuffer;
use crate::config::ShuffleConfig;
use crate::format::Codec;
use crate::job::{Heartbeat, JobMarker};
use crate::memory::MemoryPool;
use crate::metrics::ShuffleMetrics;
use crate::reader::{ReaderOptions, ShuffleReader};
use crate::spill::{LocalSpillStore, SpillStore};
use crate::store::{ObjectKey, ShuffleStore};
use crate::writer::MapOutputWriter;
use crate::{Error, Result};

// The types engines reach through `manager::` (they live in their own modules).
pub use crate::layout::{Layout, ObjectKind, ShovelObject, JOB_MARKER, PROBE_OBJECT, SPILL_DIR};
use crate::status::{read_footer, Winners};
pub use crate::status::{KeyLog, MapStatus, ShuffleHandle};

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
    /// The committed status of a map: the one committed in this process,
    /// else from storage (the footer; see the module docs), cached. An
    /// all-empty output is not on storage: another process gets
    /// [`Error::NotFound`] and recomputes it.
    async fn committed_map_status(&self, shuffle_id: u32, map_id: u32) -> Result<MapStatus>;
    /// Forgets a committed map output found lost or corrupt, so that a
    /// re-run of its map task can commit in its place: deletes the data
    /// object if it is `attempt`'s (with conditional create: if its footer
    /// names `attempt` or cannot be read; otherwise the attempt's own key),
    /// and forgets the in-process winner if it is `attempt`.
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
    /// Deletes every object under this app's prefix, listing the store,
    /// then does what [`Self::cleanup_app`] does: for the owner of an app
    /// whose objects other processes wrote under its app id (a distributed
    /// engine's executors). Call it only once no process writes to the app.
    /// Returns how many objects it deleted.
    async fn purge_app(&self) -> Result<u64>;
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
    /// The first commit per map seen by this process (see the module docs).
    winners: Arc<Winners>,
    /// Whether the store decides winners (`create_if_absent`), fixed when
    /// the manager is built so keys never mix within a job.
    conditional: bool,
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
        let conditional = self.store.supports_conditional_create();
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
                winners: Arc::new(Winners::default()),
                conditional,
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
    /// batched delete, then, on stores where listing is cheap (local disks),
    /// the temporary files of writes cut off under those prefixes, and with
    /// `None` the app's empty directory; returns how many keys it deleted. On failure the keys stay
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
            // A shuffle is a name prefix, not a directory (see `layout`):
            // only the app's directory is left to tidy.
            let app = inner.layout.app_id().to_string();
            inner.store.remove_empty_dirs(&[app]).await?;
        }
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
            Arc::clone(&self.inner.winners),
            self.inner.conditional,
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
        if let Some(status) = self.inner.winners.get(shuffle_id, map_id) {
            return Ok(status);
        }
        let inner = Arc::clone(&self.inner);
        let partitions = self.handle(shuffle_id).ok().map(|h| h.num_partitions);
        self.inner
            .statuses
            .try_get_with((shuffle_id, map_id), async move {
                let status = if inner.conditional {
                    let key = inner.layout.map_key(shuffle_id, map_id);
                    read_footer(&*inner.store, &key, partitions).await?
                } else {
                    inner.status_from_attempts(shuffle_id, map_id, partitions).await?
                };
                if status.shuffle_id != shuffle_id || status.map_id != map_id {
                    return Err(Error::corrupt(
                        inner.store.describe(&status.location),
                        format!(
                            "its footer names shuffle {} map {}, not shuffle {shuffle_id} map {map_id}",
                            status.shuffle_id, status.map_id
                        ),
                    ));
                }
                Ok::<_, Error>(status)
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
        let known = inner.winners.get(shuffle_id, map_id);
        inner.winners.forget(shuffle_id, map_id, Some(attempt));
        let key = if inner.conditional {
            let key = inner.layout.map_key(shuffle_id, map_id);
            // Delete the object only if it is `attempt`'s (or unreadable).
            let names_attempt = match known {
                Some(w) => w.attempt == attempt,
                None => match read_footer(&*inner.store, &key, None).await {
                    Ok(status) => status.attempt == attempt,
                    Err(Error::NotFound { .. }) => false,
                    Err(e) if e.is_data_loss() => true, // unreadable: it cannot stand
                    Err(e) => return Err(e),
                },
            };
            names_attempt.then_some(key)
        } else {
            // The key is the attempt's own: nobody else's output is there.
            Some(inner.layout.data_key(shuffle_id, map_id, attempt))
        };
        if let Some(key) = key {
            inner.store.delete(std::slice::from_ref(&key)).await?;
            inner.written.forget(shuffle_id, &key);
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
        self.inner.winners.forget_shuffles(Some(shuffle_ids));
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
        self.inner.winners.forget_shuffles(None);
        let shuffle = self.delete_known(None).await?;
        let spills = self.inner.spill.cleanup().await?;
        Ok(shuffle + spills)
    }

    async fn purge_app(&self) -> Result<u64> {
        // Known keys first: that also stops the marker's refresh, which
        // would otherwise write the marker again after the listing.
        let known = self.cleanup_app().await?;
        let listed = self
            .inner
            .store
            .delete_prefix(&self.inner.layout.app_prefix())
            .await?;
        Ok(known + listed)
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

impl Inner {
    /// The status of a map whose attempts have keys of their own: the
    /// lowest attempt with a valid footer (the recovery path; one LIST).
    async fn status_from_attempts(
        &self,
        shuffle_id: u32,
        map_id: u32,
        partitions: Option<u32>,
    ) -> Result<MapStatus> {
        let prefix = self.layout.attempts_prefix(shuffle_id, map_id);
        let mut attempts: Vec<(u32, ObjectKey)> = self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| match Layout::parse(&o.key.path)?.kind {
                ObjectKind::Data {
                    shuffle_id: s,
                    map_id: m,
                    attempt,
                } if s == shuffle_id && m == map_id => {
                    Some((attempt, self.layout.data_key(shuffle_id, map_id, attempt)))
                }
                _ => None,
            })
            .collect();
        attempts.sort();
        let mut first_err = None;
        for (_, key) in attempts {
            match read_footer(&*self.store, &key, partitions).await {
                Ok(status) => return Ok(status),
                Err(e) if e.is_data_loss() => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err.unwrap_or_else(|| Error::NotFound {
            object: self.store.describe_prefix(&prefix).join(", "),
        }))
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
