//! Differential test of the two backends: the same map outputs written
//! through the local-disk and the S3 backend (embedded server over real
//! HTTP) give byte-identical data objects, identical map statuses, and read
//! back identically, with and without spilling.

use bytes::Bytes;
use shuffle_core::testing::{random_blocks, read_range, write_map};
use shuffle_core::{
    ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleManagerExt, StoreShuffleManager,
};

const MAPS: u32 = 6;
const PARTS: u32 = 10;

async fn write_both_ways(
    mgr: &StoreShuffleManager,
    e: &shuffle_core::testing::Expected,
) -> Vec<shuffle_core::MapStatus> {
    mgr.register_shuffle(ShuffleHandle {
        shuffle_id: 1,
        num_maps: MAPS,
        num_partitions: PARTS,
    })
    .await
    .expect("register");
    let mut statuses = Vec::new();
    // Even maps through ordered partition writers, odd maps through the
    // buffered (spilling) writer in reverse partition order.
    for m in 0..MAPS {
        if m % 2 == 0 {
            statuses.push(write_map(mgr, 1, m, 0, PARTS, e).await.expect("commit"));
        } else {
            let mut w = mgr.buffered_writer(1, m, 0).await.expect("writer");
            for p in (0..PARTS).rev() {
                for b in e.get(&(m, p)).into_iter().flatten() {
                    w.write_block(p, b, 1).await.expect("write");
                }
            }
            statuses.push(w.commit().await.expect("commit"));
        }
    }
    statuses
}

async fn data_objects(
    mgr: &StoreShuffleManager,
    statuses: &[shuffle_core::MapStatus],
) -> Vec<Bytes> {
    let mut out = Vec::new();
    for s in statuses {
        if s.total_bytes() > 0 {
            out.push(mgr.store().get(&s.location).await.expect("data object"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_s3_backends_agree_byte_for_byte() {
    let e = random_blocks(42, MAPS, PARTS);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = shuffle_s3::EmbeddedS3::start_temp()
        .await
        .expect("embedded S3");

    for memory_limit in [1u64 << 30, 8 << 10] {
        let base = ShuffleConfig {
            memory_limit,
            local_dirs: vec![dir.path().to_path_buf()],
            ..ShuffleConfig::default()
        };
        let local = shuffle_local::local_manager(ShuffleConfig {
            app_id: format!("local-{memory_limit}"),
            ..base.clone()
        })
        .expect("local");
        let s3 = shuffle_s3::S3ShuffleBuilder::new(ShuffleConfig {
            app_id: format!("s3-{memory_limit}"),
            ..base
        })
        .s3_config(server.config("diff").expect("s3 config"))
        .spill_to_s3(true)
        .build()
        .await
        .expect("s3")
        .manager;

        let ls = write_both_ways(&local, &e).await;
        let ss = write_both_ways(&s3, &e).await;
        for (l, s) in ls.iter().zip(&ss) {
            assert_eq!(
                (l.lengths.clone(), l.checksums.clone(), l.records.clone()),
                (s.lengths.clone(), s.checksums.clone(), s.records.clone())
            );
        }
        assert!(
            data_objects(&local, &ls).await == data_objects(&s3, &ss).await,
            "data objects differ"
        );
        for range in [0..PARTS, 3..7, 9..10] {
            let a = read_range(&local, 1, &ls, range.clone())
                .await
                .expect("local read");
            let b = read_range(&s3, 1, &ss, range.clone())
                .await
                .expect("s3 read");
            assert_eq!(a, b, "range {range:?}");
            let want: shuffle_core::testing::Expected = e
                .iter()
                .filter(|((_, p), _)| range.contains(p))
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            assert_eq!(a, want);
        }
        if memory_limit < 1 << 20 {
            assert!(
                local.metrics().snapshot().shuffle.spill_count > 0,
                "local spilled"
            );
            assert!(
                s3.metrics().snapshot().shuffle.spill_count > 0,
                "s3 spilled"
            );
        }
        local.cleanup_app().await.expect("cleanup");
        s3.cleanup_app().await.expect("cleanup");
        assert!(s3
            .store()
            .list(&s3.layout().app_prefix())
            .await
            .expect("list")
            .is_empty());
    }
}
