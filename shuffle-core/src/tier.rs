//! A bounded local tier in front of a durable store (S3): same-process
//! readers get map outputs without a GET.
//!
//! ```text
//!   MapOutputWriter ──create──▶ TieredStore ──▶ inner sink (S3 upload)
//!                                 │ tee: the same Bytes, no copy yet
//!                                 ▼
//!                   in-flight copy ── inner finish Ok ──▶ cache entry (memory)
//!                   (dropped on abort, on error,             │ LRU over budget
//!                    or when it does not fit)                ▼
//!                                                  private file in cache.dir
//!                                                  (within cache.disk, LRU)
//!   ShuffleReader ──get / get_range──▶ cached? serve it : inner (GET)
//! ```
//!
//! # Rules
//! - **Only durable bytes are served.** A copy becomes readable when the
//!   inner sink's `finish` returned `Ok` (the object is in S3); an abort, a
//!   failed finish or a dropped sink discards it. So executor loss still
//!   recomputes nothing: S3 holds everything the cache holds.
//! - **Bounded.** `cache.memory` bounds resident copies and, separately,
//!   copies still being written (a write stops copying when its copy would
//!   not fit among the other in-flight ones), so the tier holds about twice
//!   `cache.memory` at most (plus copies on their way to disk). It is a budget of its own, not drawn from the
//!   [`MemoryPool`](crate::MemoryPool): the pool's consumers must spill when
//!   refused, and an optional, evictable copy must never make an operator
//!   spill. Resident copies over the budget move, least recently used
//!   first, to files in a private directory under `cache.dir` (created on
//!   first use, removed when the store is dropped), within `cache.disk`;
//!   what fits nowhere is simply not cached.
//! - **Never fails the job.** A local I/O error (full disk, quota, a
//!   `cache.dir` that cannot be created or written) drops the copy and
//!   counts a fall-through; the write or read goes on against the inner
//!   store.
//! - **What is cached.** Objects written with `create` (map outputs), kept
//!   whole and contiguous so a ranged read is a slice. Small objects written
//!   with `put` / `put_if_absent` (index, job marker) pass through.
//! - **Deletes evict.** `put`, `delete` and `delete_prefix` drop cached
//!   copies of the keys they touch, so a replaced or removed object is never
//!   served from the cache.
//! - **Lost executors.** All of a process's executors share one tier (the
//!   engine simulates executors in one process). When the engine reports an
//!   executor lost it calls [`ShuffleStore::drop_local_copies`] with the map
//!   outputs that executor wrote: on a real cluster those copies went with
//!   it, so later reads must go to S3, as they do here.
//!
//! Counters land in [`CacheCounters`](crate::metrics::CacheCounters):
//! hits, misses, bytes served, bytes evicted, fall-throughs.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::config::ShuffleConfig;
use crate::metrics::{add, ShuffleMetrics};
use crate::store::{ObjectKey, ObjectMeta, ObjectSink, PutOutcome, ShuffleStore};
use crate::Result;

/// Sizes and place of the local tier (`cache.*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierConfig {
    /// Bytes of resident copies in memory (`cache.memory`).
    pub memory: u64,
    /// Bytes of copies on local disk (`cache.disk`); 0 keeps the tier in memory.
    pub disk: u64,
    /// Parent of the private directory for copies on disk (`cache.dir`).
    pub dir: PathBuf,
}

impl TierConfig {
    /// The `cache.*` settings of `config`.
    pub fn from_config(config: &ShuffleConfig) -> Self {
        Self {
            memory: config.cache_memory,
            disk: config.cache_disk,
            dir: config.cache_dir.clone(),
        }
    }
}

impl Default for TierConfig {
    fn default() -> Self {
        Self::from_config(&ShuffleConfig::default())
    }
}

/// What the tier holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierUsage {
    pub entries: usize,
    /// Bytes of copies in memory (copies being moved to disk count on disk).
    pub memory_bytes: u64,
    /// Bytes reserved on disk.
    pub disk_bytes: u64,
}

/// A [`ShuffleStore`] that keeps a bounded local copy of what it writes
/// through to `inner`; see the module doc.
#[derive(Debug)]
pub struct TieredStore {
    inner: Arc<dyn ShuffleStore>,
    cache: Arc<Cache>,
}

impl TieredStore {
    /// A tier over `inner`; counters land in `metrics.cache`.
    pub fn new(
        inner: Arc<dyn ShuffleStore>,
        config: TierConfig,
        metrics: Arc<ShuffleMetrics>,
    ) -> Self {
        Self {
            inner,
            cache: Arc::new(Cache {
                config,
                metrics,
                state: Mutex::new(State::default()),
                inflight: AtomicU64::new(0),
                next_id: AtomicU64::new(0),
                dir: OnceLock::new(),
            }),
        }
    }

    /// The durable store behind the tier.
    pub fn inner(&self) -> &Arc<dyn ShuffleStore> {
        &self.inner
    }

    /// What the tier holds.
    pub fn usage(&self) -> TierUsage {
        let s = self.cache.lock();
        TierUsage {
            entries: s.entries.len(),
            memory_bytes: s.memory_used,
            disk_bytes: s.disk_used,
        }
    }

    /// True when a copy of `key` is cached (in memory or on disk).
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.cache.lock().entries.contains_key(key)
    }

    /// The private directory of copies on disk, once one was created.
    pub fn spill_dir(&self) -> Option<PathBuf> {
        self.cache.dir.get().and_then(|d| d.clone())
    }

    /// Drops the cached copies of `keys` (later reads go to the inner store).
    pub fn forget(&self, keys: &[ObjectKey]) {
        self.cache.evict_keys(keys);
    }

    /// `inner`, with a copy of what it writes kept in the cache.
    fn tee(&self, key: &ObjectKey, inner: Box<dyn ObjectSink>) -> Box<dyn ObjectSink> {
        Box::new(TeeSink {
            inner: Some(inner),
            key: key.clone(),
            cache: Arc::clone(&self.cache),
            copy: Some(Vec::new()),
            reserved: 0,
        })
    }
}

#[async_trait]
impl ShuffleStore for TieredStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn supports_reliable_storage(&self) -> bool {
        self.inner.supports_reliable_storage()
    }

    fn describe(&self, key: &ObjectKey) -> String {
        self.inner.describe(key)
    }

    async fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        let inner = self.inner.create(key).await?;
        Ok(self.tee(key, inner))
    }

    fn supports_conditional_create(&self) -> bool {
        self.inner.supports_conditional_create()
    }

    async fn create_if_absent(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        // The one-write commit of a map output on stores with conditional
        // writes: cached like `create`, kept only if this attempt won.
        let inner = self.inner.create_if_absent(key).await?;
        Ok(self.tee(key, inner))
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        let keys = std::slice::from_ref(key);
        self.cache.evict_keys(keys);
        let out = self.inner.put(key, data).await;
        self.cache.evict_keys(keys);
        out
    }

    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome> {
        // An existing object is unchanged; a created one replaces nothing
        // the tier could hold. Evicting anyway keeps "cached = durable" simple.
        let out = self.inner.put_if_absent(key, data).await;
        self.cache.evict_keys(std::slice::from_ref(key));
        out
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        if let Some(b) = self.cache.read(key, None).await {
            return Ok(b);
        }
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        if let Some(b) = self.cache.read(key, Some(range.clone())).await {
            return Ok(b);
        }
        self.inner.get_range(key, range).await
    }

    async fn get_suffix(&self, key: &ObjectKey, len: u64) -> Result<Bytes> {
        let total = self.cache.len_of(key);
        if let Some(b) = self
            .cache
            .read(key, Some(total.saturating_sub(len)..total))
            .await
        {
            return Ok(b);
        }
        self.inner.get_suffix(key, len).await
    }

    async fn delete(&self, keys: &[ObjectKey]) -> Result<()> {
        self.cache.evict_keys(keys);
        self.inner.delete(keys).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    fn root_shards(&self) -> Vec<u64> {
        self.inner.root_shards()
    }

    fn describe_prefix(&self, prefix: &str) -> Vec<String> {
        self.inner.describe_prefix(prefix)
    }

    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<u64> {
        self.inner.remove_empty_dirs(dirs).await
    }

    fn cheap_listing(&self) -> bool {
        self.inner.cheap_listing()
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.cache.evict_prefix(prefix);
        self.inner.delete_prefix(prefix).await
    }

    fn drop_local_copies(&self, keys: &[ObjectKey]) {
        self.cache.evict_keys(keys);
        self.inner.drop_local_copies(keys);
    }
}

/// Streams to the inner sink and keeps a copy for the cache.
struct TeeSink {
    /// `None` once finished or aborted.
    inner: Option<Box<dyn ObjectSink>>,
    key: ObjectKey,
    cache: Arc<Cache>,
    /// The copy so far; `None` once it did not fit.
    copy: Option<Vec<Bytes>>,
    /// In-flight bytes reserved for `copy`.
    reserved: u64,
}

impl TeeSink {
    fn drop_copy(&mut self) {
        self.copy = None;
        self.cache
            .inflight
            .fetch_sub(self.reserved, Ordering::AcqRel);
        self.reserved = 0;
    }
}

impl Drop for TeeSink {
    fn drop(&mut self) {
        self.drop_copy();
    }
}

#[async_trait]
impl ObjectSink for TeeSink {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| crate::Error::Protocol("write after finish or abort".into()))?;
        inner.write(data.clone()).await?;
        if self.copy.is_some() {
            let n = data.len() as u64;
            if self.cache.reserve_inflight(n) {
                self.reserved += n;
                if let Some(copy) = self.copy.as_mut() {
                    copy.push(data);
                }
            } else {
                self.drop_copy();
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let inner = self
            .inner
            .take()
            .ok_or_else(|| crate::Error::Protocol("finish after finish or abort".into()))?;
        let result = inner.finish().await;
        let copy = self.copy.take();
        match (&result, copy) {
            (Ok(len), Some(chunks)) if *len == self.reserved => {
                let mut all = BytesMut::with_capacity(*len as usize);
                for c in &chunks {
                    all.extend_from_slice(c);
                }
                drop(chunks);
                self.drop_copy();
                self.cache.insert(self.key.clone(), all.freeze()).await;
            }
            // A conditional write another attempt won: the winner's object
            // (and any copy of it held here) is untouched.
            (Err(crate::Error::AlreadyExists { .. }), _) => self.drop_copy(),
            // Durable but not kept, or not durable (a failed finish may or
            // may not have published): whatever the tier held is stale.
            _ => {
                self.drop_copy();
                self.cache.evict_keys(std::slice::from_ref(&self.key));
            }
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.drop_copy();
        match self.inner.take() {
            Some(inner) => inner.abort().await,
            None => Ok(()),
        }
    }
}

/// Where a cached copy lives.
#[derive(Debug)]
enum Place {
    Memory(Bytes),
    /// Being written to `file` (readable from memory meanwhile; its disk
    /// bytes are already reserved).
    Moving(Bytes, PathBuf),
    Disk(PathBuf),
}

#[derive(Debug)]
struct Entry {
    id: u64,
    tick: u64,
    len: u64,
    place: Place,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<ObjectKey, Entry>,
    /// Entries by last use, oldest first.
    lru: BTreeMap<u64, ObjectKey>,
    tick: u64,
    memory_used: u64,
    disk_used: u64,
}

impl State {
    fn touch(&mut self, key: &ObjectKey) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.lru.remove(&e.tick);
            e.tick = tick;
            self.lru.insert(tick, key.clone());
        }
    }

    /// Removes `key`; returns a file to delete, if it had one.
    fn remove(&mut self, key: &ObjectKey) -> Option<(u64, Option<PathBuf>)> {
        let e = self.entries.remove(key)?;
        self.lru.remove(&e.tick);
        let file = match e.place {
            Place::Memory(_) => {
                self.memory_used -= e.len;
                None
            }
            Place::Moving(_, f) | Place::Disk(f) => {
                self.disk_used -= e.len;
                Some(f)
            }
        };
        Some((e.len, file))
    }
}

#[derive(Debug)]
struct Cache {
    config: TierConfig,
    metrics: Arc<ShuffleMetrics>,
    state: Mutex<State>,
    /// Bytes held by copies of writes not finished yet.
    inflight: AtomicU64,
    next_id: AtomicU64,
    /// The private directory: `None` inside when it could not be created.
    dir: OnceLock<Option<PathBuf>>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(Some(dir)) = self.dir.get() {
            // Only files this store wrote live there.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn counters(&self) -> &crate::metrics::CacheCounters {
        &self.metrics.cache
    }

    fn fall_through(&self, what: &str, e: &dyn std::fmt::Display) {
        add(&self.counters().fall_throughs, 1);
        tracing::debug!(dir = %self.config.dir.display(), "local cache {what} failed, using the store: {e}");
    }

    fn reserve_inflight(&self, n: u64) -> bool {
        let limit = self.config.memory;
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(n).filter(|next| *next <= limit)
            })
            .is_ok()
    }

    /// The private directory, created on first use (`None` if that failed).
    fn dir(&self) -> Option<PathBuf> {
        self.dir
            .get_or_init(|| {
                static N: AtomicU64 = AtomicU64::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let dir = self
                    .config
                    .dir
                    .join(format!("shovel-cache-{}-{n}", std::process::id()));
                match std::fs::create_dir_all(&self.config.dir).and_then(|()| std::fs::create_dir(&dir)) {
                    Ok(()) => Some(dir),
                    Err(e) => {
                        tracing::warn!(
                            dir = %self.config.dir.display(),
                            "local cache cannot use its directory ({e}); copies stay in memory only: set cache.dir to a writable directory"
                        );
                        None
                    }
                }
            })
            .clone()
    }

    fn evict_keys(&self, keys: &[ObjectKey]) {
        let files: Vec<PathBuf> = {
            let mut s = self.lock();
            keys.iter()
                .filter_map(|k| s.remove(k))
                .filter_map(|(_, f)| f)
                .collect()
        };
        remove_files(files);
    }

    fn evict_prefix(&self, prefix: &str) {
        let files: Vec<PathBuf> = {
            let mut s = self.lock();
            let keys: Vec<ObjectKey> = s
                .entries
                .keys()
                .filter(|k| k.path.starts_with(prefix))
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|k| s.remove(k))
                .filter_map(|(_, f)| f)
                .collect()
        };
        remove_files(files);
    }

    /// The length of the cached copy of `key` (0 when there is none).
    fn len_of(&self, key: &ObjectKey) -> u64 {
        self.lock().entries.get(key).map_or(0, |e| e.len)
    }

    /// Serves `range` (all with `None`) of a cached copy, or `None` (a miss).
    async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Option<Bytes> {
        let (len, found) = {
            let mut s = self.lock();
            s.touch(key);
            match s.entries.get(key) {
                Some(e) => (
                    e.len,
                    Some(match &e.place {
                        Place::Memory(b) | Place::Moving(b, _) => Ok(b.clone()),
                        Place::Disk(f) => Err((e.id, f.clone())),
                    }),
                ),
                None => (0, None),
            }
        };
        let clip = |r: &Option<Range<u64>>| match r {
            Some(r) => r.start.min(len)..r.end.clamp(r.start.min(len), len),
            None => 0..len,
        };
        let r = clip(&range);
        let out = match found {
            None => {
                add(&self.counters().misses, 1);
                return None;
            }
            Some(Ok(b)) => b.slice(r.start as usize..r.end as usize),
            Some(Err((id, file))) => {
                let path = file.clone();
                let read = tokio::task::spawn_blocking(move || read_file_range(&path, r)).await;
                match read {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        // Evicted meanwhile (the file is gone) or a local I/O
                        // error: either way the store answers.
                        self.drop_if_same(key, id);
                        self.fall_through("read", &e);
                        add(&self.counters().misses, 1);
                        return None;
                    }
                    Err(e) => {
                        self.fall_through("read", &e);
                        add(&self.counters().misses, 1);
                        return None;
                    }
                }
            }
        };
        add(&self.counters().hits, 1);
        add(&self.counters().bytes_served, out.len() as u64);
        Some(out)
    }

    fn drop_if_same(&self, key: &ObjectKey, id: u64) {
        let file = {
            let mut s = self.lock();
            if s.entries.get(key).map(|e| e.id) != Some(id) {
                return;
            }
            s.remove(key).and_then(|(_, f)| f)
        };
        remove_files(file.into_iter().collect());
    }

    /// Caches a durable copy of `key`, replacing any older one, then moves
    /// least recently used copies to disk while memory is over budget.
    async fn insert(self: &Arc<Self>, key: ObjectKey, data: Bytes) {
        let len = data.len() as u64;
        let (mut stale, moves) = {
            let mut s = self.lock();
            let mut stale: Vec<PathBuf> = s.remove(&key).and_then(|(_, f)| f).into_iter().collect();
            s.tick += 1;
            let tick = s.tick;
            s.entries.insert(
                key.clone(),
                Entry {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    tick,
                    len,
                    place: Place::Memory(data),
                },
            );
            s.lru.insert(tick, key);
            s.memory_used += len;
            let moves = self.plan_moves(&mut s, &mut stale);
            (stale, moves)
        };
        remove_files(std::mem::take(&mut stale));
        for (key, id, data, file) in moves {
            let path = file.clone();
            let written = tokio::task::spawn_blocking(move || write_file(&path, &data)).await;
            let error = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            let mut s = self.lock();
            let current = s.entries.get_mut(&key).filter(|e| e.id == id);
            match (current, error) {
                (Some(e), None) => e.place = Place::Disk(file),
                (Some(_), Some(err)) => {
                    let gone = s.remove(&key);
                    drop(s);
                    if let Some((n, _)) = gone {
                        add(&self.counters().bytes_evicted, n);
                    }
                    let _ = std::fs::remove_file(&file);
                    self.fall_through("write", &err);
                }
                // Evicted or replaced while it was written.
                (None, _) => {
                    drop(s);
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
    }

    /// Chooses memory copies to move to disk (oldest first) until memory is
    /// within budget, reserving their disk bytes (evicting the oldest disk
    /// copies); copies that cannot go to disk are dropped.
    fn plan_moves(
        &self,
        s: &mut State,
        stale: &mut Vec<PathBuf>,
    ) -> Vec<(ObjectKey, u64, Bytes, PathBuf)> {
        let mut moves = Vec::new();
        if s.memory_used <= self.config.memory {
            return moves;
        }
        // Oldest memory copies, just enough of them to get within budget.
        let mut need = s.memory_used - self.config.memory;
        let mut candidates: Vec<ObjectKey> = Vec::new();
        for k in s.lru.values() {
            if let Some(Entry {
                len,
                place: Place::Memory(_),
                ..
            }) = s.entries.get(k)
            {
                candidates.push(k.clone());
                need = need.saturating_sub(*len);
                if need == 0 {
                    break;
                }
            }
        }
        for key in candidates {
            if s.memory_used <= self.config.memory {
                break;
            }
            let Some(len) = s.entries.get(&key).map(|e| e.len) else {
                continue;
            };
            let dir = if len <= self.config.disk {
                self.dir()
            } else {
                None
            };
            let Some(dir) = dir else {
                if len <= self.config.disk {
                    // The directory is unusable: a fall-through, not a policy.
                    self.fall_through("directory", &"cannot be created");
                }
                if let Some((n, _)) = s.remove(&key) {
                    add(&self.counters().bytes_evicted, n);
                }
                continue;
            };
            // Room on disk: oldest disk copies go.
            while s.disk_used + len > self.config.disk {
                let oldest = s
                    .lru
                    .values()
                    .find(|k| matches!(s.entries.get(*k).map(|e| &e.place), Some(Place::Disk(_))))
                    .cloned();
                let Some(victim) = oldest else { break };
                if let Some((n, f)) = s.remove(&victim) {
                    add(&self.counters().bytes_evicted, n);
                    stale.extend(f);
                }
            }
            if s.disk_used + len > self.config.disk {
                // Copies still being moved hold the rest of the quota.
                if let Some((n, _)) = s.remove(&key) {
                    add(&self.counters().bytes_evicted, n);
                }
                continue;
            }
            let Some(e) = s.entries.get_mut(&key) else {
                continue;
            };
            let file = dir.join(format!("{}.bin", e.id));
            let Place::Memory(data) = std::mem::replace(&mut e.place, Place::Disk(PathBuf::new()))
            else {
                continue;
            };
            e.place = Place::Moving(data.clone(), file.clone());
            moves.push((key.clone(), e.id, data, file));
            s.disk_used += len;
            // A moving copy still sits in memory, but it no longer holds
            // the budget: it is on its way out.
            s.memory_used -= len;
        }
        moves
    }
}

fn remove_files(files: Vec<PathBuf>) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

fn write_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let out = f.write_all(data);
    if out.is_err() {
        let _ = std::fs::remove_file(path);
    }
    out
}

fn read_file_range(path: &std::path::Path, range: Range<u64>) -> std::io::Result<Bytes> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(range.start))?;
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    f.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}
