//! Out-of-space handling of the local backend: a quota (`local.max_bytes`)
//! is reported as storage-full naming the directory, nothing half-written
//! stays behind, and committed outputs stay readable.

use bytes::Bytes;
use futures::StreamExt;
use shuffle_core::{Error, ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleManagerExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_is_storage_full_and_loses_nothing_committed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("shuffle");
    let config = ShuffleConfig {
        local_dirs: vec![root.clone()],
        local_max_bytes: Some(4 << 20),
        memory_limit: 64 << 10,
        ..ShuffleConfig::default()
    };
    let mgr = shuffle_local::local_manager(config).expect("manager");
    mgr.register_shuffle(ShuffleHandle {
        shuffle_id: 0,
        num_maps: 2,
        num_partitions: 4,
    })
    .await
    .expect("register");

    // Map 0 fits and commits.
    let small = Bytes::from(vec![1u8; 100_000]);
    let mut w = mgr.buffered_writer(0, 0, 0).await.expect("writer");
    w.write_block(1, &small, 1).await.expect("write");
    let committed = w.commit().await.expect("commit");

    // Map 1 writes incompressible data past the quota.
    let mut w = mgr.buffered_writer(0, 1, 0).await.expect("writer");
    let mut state = 1u64;
    let mut err = None;
    for i in 0..80 {
        let block: Vec<u8> = (0..100_000)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        if let Err(e) = w.write_block(i % 4, &block, 1).await {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => w.commit().await.expect_err("8 MB cannot fit a 4 MiB quota"),
    };
    match &err {
        Error::StorageFull { path, .. } => assert!(path.starts_with(&root), "{}", path.display()),
        other => panic!("expected storage full, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("local.max_bytes") && msg.contains("--shuffle s3"),
        "{msg}"
    );

    // The committed map output is intact.
    let mut reader = mgr.reader(0, vec![committed], 0..4).expect("reader");
    let block = reader.next().await.expect("one block").expect("readable");
    assert_eq!(block.data, small);
    assert!(reader.next().await.is_none());
    mgr.cleanup_app().await.expect("cleanup");
}

#[test]
fn uncreatable_directory_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let err = shuffle_local::LocalStore::new(&[file.join("sub")], None)
        .expect_err("a directory cannot live under a file");
    let msg = err.to_string();
    assert!(
        msg.contains("local.dirs") && msg.contains("a-file/sub"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_old_objects_and_keeps_new_ones() {
    use shuffle_core::store::{ObjectKey, ShuffleStore};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = shuffle_local::LocalStore::new(&[dir.path().to_path_buf()], None).expect("store");
    for (i, path) in [
        "app-a/shuffle-0/map-0.index",
        "app-b/shuffle-1/map-0-0.data",
        "spill/app-a/spill-1.bin",
    ]
    .iter()
    .enumerate()
    {
        store
            .put(
                &ObjectKey::new(0, *path),
                Bytes::from(vec![0u8; 10 * (i + 1)]),
            )
            .await
            .expect("put");
    }
    use shuffle_core::gc::{collect_garbage, GcOptions, JobState};
    let gc = |secs| GcOptions {
        older_than: std::time::Duration::from_secs(secs),
        dry_run: false,
    };
    // Nothing is older than an hour: all kept.
    let report = collect_garbage(&store, "", &gc(3600)).await.expect("gc");
    assert_eq!((report.removed(), report.kept()), ((0, 0), (3, 60)));
    // Everything is at least 0 s old: all removed, reported per app.
    let report = collect_garbage(&store, "", &gc(0)).await.expect("gc");
    assert_eq!(report.removed(), (3, 60));
    let row = |app| report.job(app).map(|j| (j.objects, j.bytes, j.state));
    assert_eq!(row("app-b"), Some((1, 20, JobState::Removed)));
    assert_eq!(row("app-a"), Some((2, 40, JobState::Removed)));
    assert!(store.list("").await.expect("list").is_empty());
    // The directories the jobs' files were in went too.
    assert_eq!(std::fs::read_dir(dir.path()).expect("read root").count(), 0);
}
