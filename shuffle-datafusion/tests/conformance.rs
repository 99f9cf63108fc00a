//! The shuffle-core conformance checks the DataFusion adapter relies on, run
//! against managers built the way an adapter user builds them: the local
//! backend, and S3 (the embedded server on 127.0.0.1) with spills to S3.
//!
//! | check | what the adapter counts on |
//! | --- | --- |
//! | `round_trip`, `every_contiguous_range` | an output partition reads exactly the rows the map tasks wrote to it |
//! | `empty_partitions`, `all_empty_map_output` | hash partitions without rows; an all-empty map output writes nothing (`shuffle_objects_written`) |
//! | `concurrent_writers` | DataFusion runs every input partition's map task at once |
//! | `spilling_is_byte_identical` | map-output buffers spill under `memory.limit` without changing a byte |
//! | `abort_leaves_nothing` | a map task whose input fails aborts its output |
//! | `remove_leaves_nothing` | an exchange removes its shuffle when its plan is dropped |
//! | `flipped_byte_is_checksum_mismatch`, `truncated_object_is_reported` | a damaged map output fails the query naming the object (no stage retry) |
//! | `one_write_per_map_output` | one request per map output on the write path |
//! | `cleanup_removes_spills` | spill files (DataFusion's and the buffers') go with the manager's cleanup |

use async_trait::async_trait;
use shuffle_core::testing::Backend;
use shuffle_core::{ShuffleConfig, StoreShuffleManager};
use shuffle_s3::{EmbeddedS3, S3ShuffleBuilder};

/// The local backend in a temporary directory.
struct Local(tempfile::TempDir);

#[async_trait]
impl Backend for Local {
    async fn manager(&self, mut config: ShuffleConfig) -> StoreShuffleManager {
        config.local_dirs = vec![self.0.path().to_path_buf()];
        shuffle_local::local_manager(config).expect("local manager")
    }
}

fn local() -> Local {
    Local(tempfile::tempdir().expect("temp dir"))
}

/// S3 on an embedded server started on the test's runtime, spills to S3.
struct S3(tokio::sync::OnceCell<EmbeddedS3>, tempfile::TempDir);

#[async_trait]
impl Backend for S3 {
    async fn manager(&self, mut config: ShuffleConfig) -> StoreShuffleManager {
        let server = self
            .0
            .get_or_init(|| async { EmbeddedS3::start_temp().await.expect("embedded S3") })
            .await;
        config.local_dirs = vec![self.1.path().to_path_buf()];
        S3ShuffleBuilder::new(config)
            .s3_config(server.config("datafusion").expect("S3 config"))
            .spill_to_s3(true)
            .build()
            .await
            .expect("S3 manager")
            .manager
    }
}

fn s3() -> S3 {
    S3(
        tokio::sync::OnceCell::new(),
        tempfile::tempdir().expect("temp dir"),
    )
}

/// One test per check, on each backend.
macro_rules! relied_on {
    ($($check:ident),+ $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    shuffle_core::testing::$check(&super::local()).await;
                }
            )+
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    shuffle_core::testing::$check(&super::s3()).await;
                }
            )+
        }
    };
}

relied_on!(
    round_trip,
    every_contiguous_range,
    empty_partitions,
    all_empty_map_output,
    concurrent_writers,
    spilling_is_byte_identical,
    abort_leaves_nothing,
    remove_leaves_nothing,
    flipped_byte_is_checksum_mismatch,
    truncated_object_is_reported,
    one_write_per_map_output,
    cleanup_removes_spills,
);
