//! What a job leaves on a local disk: its files sit directly in one
//! directory per root (a shuffle is a name prefix, not a directory), removing
//! a shuffle touches that shuffle's files only, and the app's cleanup leaves
//! the root as it found it.

use bytes::Bytes;
use shuffle_core::layout::JOB_MARKER;
use shuffle_core::testing::{write_map, Expected};
use shuffle_core::{Layout, ShuffleConfig, ShuffleHandle, ShuffleManager};

/// The entries of `dir`, as `name` for files and `name/` for directories.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                Ok(t) if t.is_dir() => format!("{name}/"),
                _ => name,
            }
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffles_share_the_app_directory_and_go_one_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("shuffle");
    let config = ShuffleConfig {
        local_dirs: vec![root.clone()],
        app_id: "layout-app".into(),
        ..ShuffleConfig::default()
    };
    let mgr = shuffle_local::local_manager(config).expect("manager");
    // Shuffles 3 and 30: a prefix that stopped at the id would mix them.
    for shuffle_id in [3, 30] {
        mgr.register_shuffle(ShuffleHandle {
            shuffle_id,
            num_maps: 2,
            num_partitions: 2,
        })
        .await
        .expect("register");
        // One block per map output, so every map leaves a file.
        let blocks: Expected = (0..2)
            .map(|m| ((m, m), vec![Bytes::from_static(b"rows")]))
            .collect();
        for map in 0..2 {
            write_map(&mgr, shuffle_id, map, 0, 2, &blocks)
                .await
                .expect("map output");
        }
    }
    assert_eq!(entries(&root), ["layout-app/"]);
    let layout = Layout::new("layout-app");
    let name = |s: u32, m: u32| {
        let key = layout.map_key(s, m).path;
        key.trim_start_matches("layout-app/").to_string()
    };
    assert_eq!(
        entries(&root.join("layout-app")),
        [
            JOB_MARKER.to_string(),
            name(30, 0),
            name(30, 1),
            name(3, 0),
            name(3, 1)
        ],
        "the job marker, one file per map output and no directory per shuffle"
    );
    assert!(name(3, 0).starts_with("shuffle-3_map-0"), "{}", name(3, 0));

    mgr.remove_shuffle(3).await.expect("remove shuffle 3");
    assert_eq!(
        entries(&root.join("layout-app")),
        [JOB_MARKER.to_string(), name(30, 0), name(30, 1)]
    );
    mgr.cleanup_app().await.expect("cleanup");
    assert!(entries(&root).is_empty(), "{:?}", entries(&root));
}
