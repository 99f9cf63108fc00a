//! The shuffle-core conformance suite against the local-disk backend, with
//! map outputs hashed across two root directories.

use async_trait::async_trait;
use shuffle_core::testing::Backend;
use shuffle_core::{ShuffleConfig, StoreShuffleManager};

struct Local {
    _dir: tempfile::TempDir,
    roots: Vec<std::path::PathBuf>,
}

impl Local {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let roots = vec![dir.path().join("a"), dir.path().join("b")];
        Self { _dir: dir, roots }
    }
}

#[async_trait]
impl Backend for Local {
    async fn manager(&self, mut config: ShuffleConfig) -> StoreShuffleManager {
        config.local_dirs = self.roots.clone();
        shuffle_local::local_manager(config).expect("local manager")
    }
}

shuffle_core::conformance_tests!(Local::new());
