//! Requests per map output on the embedded S3 server (issue 11, item 2),
//! counted by the server: one PutObject per non-empty map output, none for
//! an all-empty one, no LIST and no GET on the commit path; the same with
//! `s3.conditional_writes=false`.

use bytes::Bytes;
use shuffle_core::{ShuffleConfig, ShuffleHandle, ShuffleManager};
use shuffle_s3::{EmbeddedS3, S3Op, S3ShuffleBuilder};

async fn commit_maps(conditional: bool) {
    let server = EmbeddedS3::start_temp().await.expect("embedded S3");
    let s3 = server
        .config_builder("per-map")
        .hash_prefixes(4)
        .conditional_writes(conditional)
        .build()
        .expect("config");
    let config = ShuffleConfig {
        app_id: format!("per-map-{conditional}"),
        ..ShuffleConfig::default()
    };
    let shuffle = S3ShuffleBuilder::new(config)
        .s3_config(s3)
        .build()
        .await
        .expect("manager");
    assert_eq!(shuffle.store.conditional_writes(), conditional);
    let mgr = shuffle.manager;
    let (maps, parts) = (8u32, 6u32);
    mgr.register_shuffle(ShuffleHandle {
        shuffle_id: 0,
        num_maps: maps,
        num_partitions: parts,
    })
    .await
    .expect("register");
    server.reset_stats();
    let mut non_empty = 0;
    for m in 0..maps {
        let mut w = mgr.map_writer(0, m, 0).await.expect("writer");
        if m % 3 != 0 {
            non_empty += 1;
            for p in (0..parts).filter(|p| (p + m) % 2 == 0) {
                w.partition_writer(p)
                    .await
                    .expect("partition")
                    .write_block(&Bytes::from(vec![m as u8; 3000]))
                    .await
                    .expect("write");
            }
        }
        w.commit().await.expect("commit");
    }
    // A second attempt of a committed map loses without a request.
    let mut late = mgr.map_writer(0, 1, 1).await.expect("writer");
    late.partition_writer(0)
        .await
        .expect("partition")
        .write_block(b"late")
        .await
        .expect("write");
    assert_eq!(late.commit().await.expect("late").attempt, 0);
    let stats = server.stats();
    let writes = stats.count(S3Op::PutObject) + stats.count(S3Op::CompleteMultipartUpload);
    assert_eq!(
        writes, non_empty,
        "conditional={conditional}: one write per non-empty map output: {:?}",
        stats.requests
    );
    assert_eq!(stats.count(S3Op::ListObjects), 0, "{:?}", stats.requests);
    assert_eq!(stats.count(S3Op::GetObject), 0, "{:?}", stats.requests);
    assert_eq!(stats.count(S3Op::HeadObject), 0, "{:?}", stats.requests);
    mgr.cleanup_app().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_put_per_non_empty_map_output() {
    commit_maps(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_put_per_non_empty_map_output_without_conditional_writes() {
    commit_maps(false).await;
}
