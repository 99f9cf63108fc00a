//! # shuffle-local: the local-disk backend
//!
//! Objects are files under one or more root directories:
//!
//! ```text
//! <root[shard % roots]>/<app_id>/shuffle-<id>_map-<m>.data    (index as footer)
//! <root[i]>/spill/<app_id>/spill-<pid>-<n>-<nanos>.bin (local spill store)
//! <root[i]>/<app_id>/_shovel_job.json                   (job marker, on every root)
//! ```
//!
//! A key's `/` is a directory, so a job makes one directory per root and
//! its shuffles none (see `shuffle_core::layout`).
//!
//! `list` reports regular files only: symlinks are skipped and symlinked
//! directories never entered, so `gc` cannot reach outside the roots.
//! `remove_empty_dirs` removes a directory only when it and every directory
//! on its way from the root are real directories and it is empty.
//!
//! - **Atomic publish**: every object is written under a temporary name and
//!   renamed into place; `create_if_absent` and `put_if_absent` hard-link
//!   the finished temporary file to the final name instead, which the OS
//!   refuses if it exists, so the first commit of a map wins even across
//!   processes (`supports_conditional_create()` is true).
//! - **Reads** of a footer are one positioned read from the end
//!   (`get_suffix`).
//! - **Reads** are positioned reads (`pread`) of exactly the requested range.
//! - **Out of space**: `ENOSPC`/`EDQUOT` from the OS, or the optional
//!   per-directory quota `local.max_bytes`, become
//!   [`Error::StorageFull`] naming the directory and suggesting S3 shuffle.
//! - Files vanish with the machine, so `supports_reliable_storage()` is false:
//!   an engine must recompute a lost executor's map outputs.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use shuffle_core::fs::{self, DirQuota, FileSink};
use shuffle_core::store::{ObjectKey, ObjectMeta, ObjectSink, PutOutcome, ShuffleStore};
use shuffle_core::{Error, LocalSpillStore, Result, ShuffleConfig, StoreShuffleManager};

/// One root directory and its optional quota.
#[derive(Debug, Clone)]
struct Root {
    dir: PathBuf,
    quota: Option<Arc<DirQuota>>,
}

/// Shuffle objects as files under local root directories.
#[derive(Debug)]
pub struct LocalStore {
    roots: Vec<Root>,
}

impl LocalStore {
    /// A store over `dirs` (created if missing), each with an optional byte quota.
    pub fn new(dirs: &[PathBuf], max_bytes: Option<u64>) -> Result<Self> {
        if dirs.is_empty() {
            return Err(Error::config("local.dirs", "needs at least one directory"));
        }
        let mut roots = Vec::new();
        for d in dirs {
            std::fs::create_dir_all(d).map_err(|e| {
                Error::config(
                    "local.dirs",
                    format!(
                        "cannot create directory {}: {e}; pick a writable directory with --local-dir",
                        d.display()
                    ),
                )
            })?;
            roots.push(Root {
                dir: d.clone(),
                quota: max_bytes.map(|m| DirQuota::new(d.clone(), m)),
            });
        }
        Ok(Self { roots })
    }

    fn root(&self, key: &ObjectKey) -> &Root {
        &self.roots[(key.shard % self.roots.len() as u64) as usize]
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root(key).dir.join(&key.path)
    }

    /// A spill store over the same directories (`<root>/spill/<app_id>`),
    /// sharing their quotas.
    pub fn spill_store(&self, app_id: &str) -> LocalSpillStore {
        LocalSpillStore::with_quotas(
            self.roots
                .iter()
                .map(|r| (r.dir.join("spill").join(app_id), r.quota.clone()))
                .collect(),
        )
    }

    /// The root directories.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.dir.clone()).collect()
    }
}

/// Builds the local-disk manager from a config (`local.dirs`, `local.max_bytes`).
pub fn local_manager(config: ShuffleConfig) -> Result<StoreShuffleManager> {
    let store = LocalStore::new(&config.local_dirs, config.local_max_bytes)?;
    let spill = Arc::new(store.spill_store(&config.app_id));
    Ok(StoreShuffleManager::builder(Arc::new(store), config)
        .spill_store(spill)
        .build())
}

/// Removes `root/rel` if every component of it is a real directory (no
/// symlink on the way) and it is empty; true when it was removed.
fn remove_empty_dir(root: &Path, rel: &str) -> bool {
    let mut path = root.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return false;
        }
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => return false,
        }
    }
    // remove_dir refuses directories that are not empty.
    std::fs::remove_dir(&path).is_ok()
}

/// The regular files below `root/rel` (`rel` is `/`-separated, `""` for
/// the root) whose key, the path relative to `root`, starts with `prefix`,
/// with their metadata. Only files that match are `stat`ed: a shuffle's
/// prefix names part of the app's directory.
fn walk(
    root: &Path,
    rel: &str,
    prefix: &str,
    out: &mut Vec<(String, std::fs::Metadata)>,
) -> std::io::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue; // not a name Shovel (or any key) can have
        };
        let key = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        // `file_type` does not follow symlinks: a symlink is neither listed
        // nor descended into, so nothing outside the root is ever reached.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // Descend only where keys under the prefix can be.
            let below = format!("{key}/");
            if below.starts_with(prefix) || prefix.starts_with(&below) {
                walk(root, &key, prefix, out)?;
            }
        } else if kind.is_file() && key.starts_with(prefix) {
            out.push((key, entry.metadata()?));
        }
    }
    Ok(())
}

#[async_trait]
impl ShuffleStore for LocalStore {
    fn name(&self) -> &'static str {
        "local"
    }

    fn supports_reliable_storage(&self) -> bool {
        false
    }

    fn describe(&self, key: &ObjectKey) -> String {
        self.path(key).display().to_string()
    }

    async fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        let root = self.root(key);
        let sink = FileSink::create(root.dir.clone(), self.path(key), root.quota.clone()).await?;
        Ok(Box::new(sink))
    }

    fn supports_conditional_create(&self) -> bool {
        true
    }

    async fn create_if_absent(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        let root = self.root(key);
        let sink =
            FileSink::create_new(root.dir.clone(), self.path(key), root.quota.clone()).await?;
        Ok(Box::new(sink))
    }

    async fn get_suffix(&self, key: &ObjectKey, len: u64) -> Result<Bytes> {
        fs::read_suffix(self.path(key), len).await
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        let mut sink = self.create(key).await?;
        sink.write(data).await?;
        sink.finish().await.map(|_| ())
    }

    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome> {
        let mut sink = self.create_if_absent(key).await?;
        sink.write(data).await?;
        match sink.finish().await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        fs::read_all(self.path(key)).await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        fs::read_range(self.path(key), range).await
    }

    async fn delete(&self, keys: &[ObjectKey]) -> Result<()> {
        let items: Vec<(PathBuf, Option<Arc<DirQuota>>)> = keys
            .iter()
            .map(|k| (self.path(k), self.root(k).quota.clone()))
            .collect();
        fs::blocking(move || {
            for (path, quota) in items {
                let freed = fs::remove_file(&path)?;
                if let Some(q) = quota {
                    q.give_back(freed);
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let roots = self.roots.clone();
        let prefix = prefix.to_string();
        fs::blocking(move || {
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let mut out = Vec::new();
            for (i, root) in roots.iter().enumerate() {
                let mut files = Vec::new();
                walk(&root.dir, dir_part, &prefix, &mut files)
                    .map_err(|e| Error::io(root.dir.join(dir_part), e))?;
                for (rel, meta) in files {
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    out.push(ObjectMeta {
                        key: ObjectKey::new(i as u64, rel),
                        size: meta.len(),
                        modified_unix_secs: modified,
                    });
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    fn root_shards(&self) -> Vec<u64> {
        (0..self.roots.len() as u64).collect()
    }

    fn cheap_listing(&self) -> bool {
        true
    }

    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<u64> {
        let roots: Vec<PathBuf> = self.roots.iter().map(|r| r.dir.clone()).collect();
        let dirs = dirs.to_vec();
        fs::blocking(move || {
            let mut n = 0;
            for root in &roots {
                for d in &dirs {
                    n += u64::from(remove_empty_dir(root, d));
                }
            }
            Ok(n)
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let objects = self.list(prefix).await?;
        let keys: Vec<ObjectKey> = objects.iter().map(|o| o.key.clone()).collect();
        self.delete(&keys).await?;
        // Tidy a directory the prefix names whole (`app/`).
        if let Some(dir) = prefix.strip_suffix('/') {
            let dirs: Vec<PathBuf> = self.roots.iter().map(|r| r.dir.join(dir)).collect();
            fs::blocking(move || {
                for d in dirs {
                    let _ = std::fs::remove_dir_all(&d);
                }
                Ok(())
            })
            .await?;
        }
        Ok(keys.len() as u64)
    }
}
