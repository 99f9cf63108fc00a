//! # shuffle-s3: Shovel's Amazon S3 (and S3-compatible) backend
//!
//! Every map output is a data object plus an index object in S3, so
//! committed outputs outlive the executors that wrote them
//! (`supports_reliable_storage() == true`). Works with Amazon S3 and
//! S3-compatible stores (MinIO, Garage, Ceph RGW, Cloudflare R2) via
//! `s3.endpoint` + path-style addressing.
//!
//! ```text
//!  StoreShuffleManager (shuffle-core) ──▶ S3Store ──aws-sdk-s3──▶ S3 / MinIO / ... / EmbeddedS3
//!        │ spill.to_s3                    │  ├── retry: backoff + full jitter, counted
//!        └──▶ ObjectSpillStore ───────────┘  └── metrics: ShuffleMetrics.requests
//! ```
//!
//! ## Key layout
//!
//! ```text
//!   s3://<bucket>/<prefix>/<hp>/<app_id>/shuffle-<s>_map-<m>.data            (s3.conditional_writes, the default)
//!   s3://<bucket>/<prefix>/<hp>/<app_id>/shuffle-<s>_map-<m>-<attempt>.data  (stores that ignore If-None-Match)
//!   s3://<bucket>/<prefix>/<hp>/spill/<app_id>/spill-<n>.bin
//! ```
//!
//! The relative path comes from core's [`ObjectKey`](shuffle_core::ObjectKey);
//! the bucket (of `s3.bucket`'s list) and the hash prefix `<hp>` (4 hex
//! digits, `0000`..`P-1` for `P = s3.hash_prefixes`) come from the key's
//! shard, so load spreads over S3's per-prefix request limits and over
//! buckets (the private `layout` module has the exact mapping). `list` and
//! `delete_prefix` visit every bucket x hash prefix.
//!
//! ## Local tier
//!
//! With `cache.enabled` (the default) the manager writes and reads map
//! outputs through a [`TieredStore`](shuffle_core::TieredStore): a copy of
//! each output stays in a bounded local cache once its upload finished, so
//! readers in the same process skip the GET; S3 serves whatever the cache no
//! longer holds. Spills bypass it.
//!
//! ## Modules
//! - [`config`]: [`S3Config`], typed builder and `key=value`/env parsing.
//! - [`store`]: [`S3Store`], the `ShuffleStore` (streaming multipart sink,
//!   conditional put, ranged get, paginated list, batched delete) and the
//!   start-up check [`S3Store::probe`] that [`S3ShuffleBuilder::build`]
//!   runs unless `s3.probe=false`.
//! - [`retry`]: [`RetryConfig`] and the single, counted retry loop.
//! - `embedded` (feature `embedded`, default): [`EmbeddedS3`], an
//!   s3s + s3s-fs server on loopback with fault injection, for tests,
//!   benchmarks and `shovel --shuffle s3` without an endpoint.
//!
//! ## Use
//! ```no_run
//! # async fn demo() -> shuffle_core::Result<()> {
//! use shuffle_core::{ShuffleConfig, ShuffleManager};
//! let config = ShuffleConfig::from_args(["shuffle.backend=s3", "s3.bucket=s3://my-bucket/shovel"])?;
//! let s3 = shuffle_s3::S3ShuffleBuilder::new(config).build().await?;
//! let manager = s3.manager; // a StoreShuffleManager over S3
//! # let _ = manager; Ok(()) }
//! ```

pub mod config;
#[cfg(feature = "embedded")]
pub mod embedded;
mod layout;
pub mod retry;
pub mod store;

use std::sync::Arc;

use shuffle_core::memory::MemoryPool;
use shuffle_core::{
    Result, ShuffleConfig, ShuffleMetrics, ShuffleStore, StoreShuffleManager, TierConfig,
    TieredStore,
};

pub use config::{BucketUri, Credentials, S3Config, S3ConfigBuilder, Sse};
#[cfg(feature = "embedded")]
pub use embedded::{
    remove_server_dir, server_config_pairs, EmbeddedS3, FaultConfig, S3Op, ServerStats, SseRecord,
};
pub use retry::RetryConfig;
pub use store::S3Store;

/// A shuffle manager over S3, with what it was built from.
#[derive(Debug)]
pub struct S3Shuffle {
    pub manager: StoreShuffleManager,
    pub store: S3Store,
    /// The local tier the manager writes and reads through (`cache.enabled`).
    pub tier: Option<Arc<TieredStore>>,
    pub metrics: Arc<ShuffleMetrics>,
    /// The in-process server, when one was started (keep it alive as long
    /// as the manager is used; it stops when dropped).
    #[cfg(feature = "embedded")]
    pub embedded: Option<EmbeddedS3>,
}

/// Builds a [`StoreShuffleManager`] over an [`S3Store`].
///
/// The S3 settings come from [`S3ShuffleBuilder::s3_config`] or, by
/// default, from the `s3.*` keys of the shuffle config
/// (`ShuffleConfig::backend_options`) over `SHOVEL_S3_*` variables. With
/// `spill.to_s3` (or [`S3ShuffleBuilder::spill_to_s3`]) spills go to
/// `spill/<app_id>/` in the same buckets.
#[derive(Debug)]
pub struct S3ShuffleBuilder {
    shuffle: ShuffleConfig,
    s3: Option<S3Config>,
    metrics: Option<Arc<ShuffleMetrics>>,
    pool: Option<Arc<MemoryPool>>,
    spill_to_s3: Option<bool>,
    cache: Option<bool>,
    #[cfg(feature = "embedded")]
    embedded_fallback: bool,
}

impl S3ShuffleBuilder {
    pub fn new(shuffle: ShuffleConfig) -> Self {
        Self {
            shuffle,
            s3: None,
            metrics: None,
            pool: None,
            spill_to_s3: None,
            cache: None,
            #[cfg(feature = "embedded")]
            embedded_fallback: false,
        }
    }

    /// Uses this S3 config instead of parsing the `s3.*` keys.
    pub fn s3_config(mut self, config: S3Config) -> Self {
        self.s3 = Some(config);
        self
    }

    /// Shares metrics (request counters land here too).
    pub fn metrics(mut self, metrics: Arc<ShuffleMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Shares a memory pool with other consumers.
    pub fn memory_pool(mut self, pool: Arc<MemoryPool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Overrides `spill.to_s3`.
    pub fn spill_to_s3(mut self, on: bool) -> Self {
        self.spill_to_s3 = Some(on);
        self
    }

    /// Overrides `cache.enabled` (the local tier in front of S3).
    pub fn cache(mut self, on: bool) -> Self {
        self.cache = Some(on);
        self
    }

    /// When neither `s3.bucket` nor `s3.endpoint` is configured (keys or
    /// environment), start an [`EmbeddedS3`] in a temporary directory and
    /// use it (other `s3.*` keys still apply).
    #[cfg(feature = "embedded")]
    pub fn embedded_fallback(mut self, on: bool) -> Self {
        self.embedded_fallback = on;
        self
    }

    /// Builds the store and the manager. Unless `s3.probe=false`, the store
    /// is first checked with [`S3Store::probe`] (every bucket exists and
    /// answers like S3; a small object under the app prefix can be written,
    /// read and deleted), so a wrong endpoint, a missing bucket, rejected
    /// credentials or a read-only bucket fail here, within 15 s, with one
    /// line naming the endpoint or bucket and the fix.
    pub async fn build(self) -> Result<S3Shuffle> {
        #[cfg(feature = "embedded")]
        let (s3_config, embedded) = match self.s3 {
            Some(c) => (c, None),
            None if self.embedded_fallback && !s3_target_configured(&self.shuffle) => {
                let server = EmbeddedS3::start_temp().await?;
                let mut b = server.config_builder("");
                b.apply_env(config::env_vars())?;
                b.apply_pairs(&self.shuffle.backend_options)?;
                tracing::info!(
                    endpoint = %server.endpoint,
                    dir = %server.root().display(),
                    "no S3 bucket or endpoint configured: using an embedded S3 server"
                );
                (b.build()?, Some(server))
            }
            None => (
                S3Config::from_env_and_pairs(&self.shuffle.backend_options)?,
                None,
            ),
        };
        #[cfg(not(feature = "embedded"))]
        let s3_config = match self.s3 {
            Some(c) => c,
            None => S3Config::from_env_and_pairs(&self.shuffle.backend_options)?,
        };
        let metrics = self.metrics.unwrap_or_default();
        let store = S3Store::new(s3_config, Arc::clone(&metrics)).await?;
        let spill_to_s3 = self.spill_to_s3.unwrap_or(self.shuffle.spill_to_s3);
        let app_id = self.shuffle.app_id.clone();
        if store.config().probe {
            store.probe(&app_id).await?;
        }
        // Map outputs go through the local tier; spills (below) do not: a
        // spill is read back once, by its writer, straight from S3.
        let tier = self.cache.unwrap_or(self.shuffle.cache_enabled).then(|| {
            Arc::new(TieredStore::new(
                Arc::new(store.clone()),
                TierConfig::from_config(&self.shuffle),
                Arc::clone(&metrics),
            ))
        });
        let shuffle_store: Arc<dyn ShuffleStore> = match &tier {
            Some(t) => Arc::clone(t) as Arc<dyn ShuffleStore>,
            None => Arc::new(store.clone()),
        };
        let mut builder =
            StoreShuffleManager::builder(shuffle_store, self.shuffle).metrics(Arc::clone(&metrics));
        if let Some(pool) = self.pool {
            builder = builder.memory_pool(pool);
        }
        if spill_to_s3 {
            builder = builder.spill_store(Arc::new(store.spill_store(&app_id)));
        }
        Ok(S3Shuffle {
            manager: builder.build(),
            store,
            tier,
            metrics,
            #[cfg(feature = "embedded")]
            embedded,
        })
    }
}

/// True when `s3.bucket` or `s3.endpoint` (or an alias) is set in the
/// shuffle config or the environment.
#[cfg(feature = "embedded")]
fn s3_target_configured(shuffle: &ShuffleConfig) -> bool {
    ["s3.bucket", "s3.endpoint"].iter().any(|key| {
        shuffle
            .backend_options
            .keys()
            .any(|k| config::canonical_key(k) == Some(*key))
            || std::env::var_os(config::env_var_for(key)).is_some()
    })
}

/// A [`StoreShuffleManager`] over S3 configured by the `s3.*` keys of
/// `config` (see [`S3ShuffleBuilder`] for more control).
pub async fn s3_manager(config: ShuffleConfig) -> Result<StoreShuffleManager> {
    Ok(S3ShuffleBuilder::new(config).build().await?.manager)
}
