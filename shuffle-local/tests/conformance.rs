//! The shuffle-core conformance suite against the local-disk backend, with
//! map outputs hashed across two root directories; and again through a
//! small local tier (`TieredStore`, which the S3 backend puts in front of
//! S3), to prove the tier keeps the contract over any store.

use async_trait::async_trait;
use shuffle_core::testing::Backend;
use shuffle_core::{ShuffleConfig, ShuffleMetrics, StoreShuffleManager, TierConfig, TieredStore};
use std::sync::Arc;

struct Local {
    dir: tempfile::TempDir,
    roots: Vec<std::path::PathBuf>,
    tiered: bool,
}

impl Local {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let roots = vec![dir.path().join("a"), dir.path().join("b")];
        Self {
            dir,
            roots,
            tiered: false,
        }
    }

    fn tiered() -> Self {
        Self {
            tiered: true,
            ..Self::new()
        }
    }
}

#[async_trait]
impl Backend for Local {
    async fn manager(&self, mut config: ShuffleConfig) -> StoreShuffleManager {
        config.local_dirs = self.roots.clone();
        if !self.tiered {
            return shuffle_local::local_manager(config).expect("local manager");
        }
        let store = shuffle_local::LocalStore::new(&config.local_dirs, config.local_max_bytes)
            .expect("local store");
        let spill = Arc::new(store.spill_store(&config.app_id));
        let metrics = Arc::new(ShuffleMetrics::default());
        let tier = TieredStore::new(
            Arc::new(store),
            TierConfig {
                memory: 16 << 10,
                disk: 48 << 10,
                dir: self.dir.path().join("cache"),
            },
            Arc::clone(&metrics),
        );
        StoreShuffleManager::builder(Arc::new(tier), config)
            .metrics(metrics)
            .spill_store(spill)
            .build()
    }
}

mod plain {
    shuffle_core::conformance_tests!(super::Local::new());
}

mod tiered {
    shuffle_core::conformance_tests!(super::Local::tiered());
}
