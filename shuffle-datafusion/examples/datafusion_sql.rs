//! DataFusion with Shovel in a few lines:
//! `cargo run -p shuffle-datafusion --example datafusion_sql`.
//!
//! Builds a local-disk `ShuffleManager` from Shovel's config, installs
//! Shovel into a DataFusion session (hash exchanges through the manager,
//! spill files through its spill store, operators' memory from its pool)
//! and runs SQL whose `GROUP BY` exchanges through Shovel. For S3, build the
//! manager with `shuffle_s3::S3ShuffleBuilder` instead; nothing else changes.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use shuffle_core::{ShuffleConfig, ShuffleManager};
use shuffle_datafusion::ShovelBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let local_dirs = format!("local.dirs={}", dir.path().display());

    // 1. Shovel's manager, from Shovel's config.
    let config = ShuffleConfig::from_args([local_dirs.as_str(), "memory.limit=256MiB"])?;
    let manager = Arc::new(shuffle_local::local_manager(config)?);

    // 2. Shovel into DataFusion: exchange rule, spill files, memory pool.
    let state = ShovelBuilder::new(manager.clone())
        .install(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(SessionConfig::new().with_target_partitions(4)),
        )?
        .build();
    let ctx = SessionContext::new_with_state(state);

    // 3. SQL as usual.
    ctx.sql("CREATE TABLE t AS SELECT value % 10 AS g, value AS v FROM generate_series(1, 100000)")
        .await?
        .collect()
        .await?;
    ctx.sql("SELECT g, count(*) AS n, sum(v) AS total FROM t GROUP BY g ORDER BY g")
        .await?
        .show()
        .await?;
    // The plan's ShovelExchangeExec, with its shuffle metrics.
    ctx.sql("EXPLAIN ANALYZE SELECT g, count(*) FROM t GROUP BY g")
        .await?
        .show()
        .await?;
    let shuffle = manager.metrics().snapshot().shuffle;
    println!(
        "through Shovel: {} bytes written, {} read; peak memory {} bytes of {}",
        shuffle.bytes_written,
        shuffle.bytes_read,
        manager.memory_pool().peak(),
        manager.memory_pool().limit()
    );
    Ok(())
}
