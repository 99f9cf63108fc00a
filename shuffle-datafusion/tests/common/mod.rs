//! Managers the adapter's tests run DataFusion over.

use std::path::Path;
use std::sync::Arc;

use shuffle_core::{ShuffleConfig, ShuffleManager};
use shuffle_s3::{EmbeddedS3, S3ShuffleBuilder};

/// The local backend in `dir` under `memory` bytes of `memory.limit`.
pub fn local_manager(dir: &Path, memory: u64) -> Arc<dyn ShuffleManager> {
    Arc::new(
        shuffle_local::local_manager(ShuffleConfig {
            local_dirs: vec![dir.to_path_buf()],
            memory_limit: memory,
            ..ShuffleConfig::default()
        })
        .expect("local manager"),
    )
}

/// S3 on the embedded `server` (local files in `local`), with spills to
/// S3, under `memory` bytes of `memory.limit`.
pub async fn s3_manager(server: &EmbeddedS3, local: &Path, memory: u64) -> Arc<dyn ShuffleManager> {
    let config = ShuffleConfig {
        local_dirs: vec![local.to_path_buf()],
        memory_limit: memory,
        ..ShuffleConfig::default()
    };
    let shuffle = S3ShuffleBuilder::new(config)
        .s3_config(server.config("df").expect("S3 config"))
        .spill_to_s3(true)
        .build()
        .await
        .expect("S3 manager");
    Arc::new(shuffle.manager)
}
