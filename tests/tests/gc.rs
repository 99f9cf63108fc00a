//! `gc` deletes only what Shovel wrote, and only for jobs that are dead.
//!
//! One test body ([`gc_scenario`]) runs on a local directory and on an S3
//! prefix of the embedded server: user files, a killed job's leftovers
//! (written through a real manager that was dropped without cleanup, its
//! files aged with `File::set_modified`: one data object per map, a spill
//! file, the marker and, on local disk, an unfinished sink's temporary
//! file), a live job (manager running, old objects including such a
//! temporary file, fresh marker), a recent job without a marker, an old one
//! without a marker, and one with old and new objects (never half removed).
//! A dry run first must delete nothing and report exactly what the real run
//! removes. The embedded S3 server reports an object's file mtime as
//! LastModified, so aging works the same way on both backends.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use shuffle_core::gc::{collect_garbage, GcOptions, GcReport, JobState};
use shuffle_core::testing::{random_blocks, write_map};
use shuffle_core::{
    Layout, ObjectKey, ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleMetrics, ShuffleStore,
    SpillWriter, StoreShuffleManager,
};
use shuffle_s3::{EmbeddedS3, S3ShuffleBuilder, S3Store};

const KILLED: &str = "gc-killed-1";
const LIVE: &str = "gc-live-1";
const RECENT: &str = "gc-recent-1";
const OLD: &str = "gc-old-1";
const MIXED: &str = "gc-mixed-1";

/// A store to run gc on, where its bytes physically live, and how to build
/// managers writing into it.
struct Env {
    store: Arc<dyn ShuffleStore>,
    /// Directory holding the objects as files (the local root, or the
    /// embedded server's served directory).
    physical: PathBuf,
    local_root: Option<PathBuf>,
    s3: Option<EmbeddedS3>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn local() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        let store =
            shuffle_local::LocalStore::new(std::slice::from_ref(&root), None).expect("local store");
        Env {
            store: Arc::new(store),
            physical: root.clone(),
            local_root: Some(root),
            s3: None,
            _dir: dir,
        }
    }

    async fn s3() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = EmbeddedS3::start(dir.path().join("s3"))
            .await
            .expect("embedded S3");
        let config = server
            .config_builder("gc")
            .hash_prefixes(4)
            .build()
            .expect("config");
        let store = S3Store::new(config, Arc::new(ShuffleMetrics::default()))
            .await
            .expect("s3 store");
        Env {
            store: Arc::new(store),
            physical: server.root().to_path_buf(),
            local_root: None,
            s3: Some(server),
            _dir: dir,
        }
    }

    async fn manager(&self, app_id: &str) -> StoreShuffleManager {
        let mut config = ShuffleConfig::from_pairs([("shuffle.app_id", app_id)]).expect("config");
        match (&self.local_root, &self.s3) {
            (Some(root), _) => {
                config.local_dirs = vec![root.clone()];
                shuffle_local::local_manager(config).expect("local manager")
            }
            (None, Some(server)) => {
                let s3 = server
                    .config_builder("gc")
                    .hash_prefixes(4)
                    .build()
                    .expect("config");
                S3ShuffleBuilder::new(config)
                    .s3_config(s3)
                    .spill_to_s3(true)
                    .build()
                    .await
                    .expect("s3 manager")
                    .manager
            }
            (None, None) => unreachable!("an env is local or S3"),
        }
    }

    async fn paths(&self) -> BTreeSet<String> {
        self.store
            .list("")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key.path)
            .collect()
    }
}

/// Writes two shuffles, a spill file and an unfinished sink (a temporary
/// file on local disk), as a job does until it is killed.
async fn write_job(mgr: &StoreShuffleManager) {
    for shuffle_id in 0..2 {
        mgr.register_shuffle(ShuffleHandle {
            shuffle_id,
            num_maps: 2,
            num_partitions: 3,
        })
        .await
        .expect("register");
        let blocks = random_blocks(u64::from(shuffle_id), 2, 3);
        for m in 0..2 {
            write_map(mgr, shuffle_id, m, 0, 3, &blocks)
                .await
                .expect("commit");
        }
    }
    let mut spill = SpillWriter::create(mgr.spill_store(), mgr.metrics())
        .await
        .expect("spill");
    spill
        .write_block(b"spilled rows never read back")
        .await
        .expect("spill write");
    spill.finish().await.expect("spill finish");
    let mut sink = mgr
        .store()
        .create(&mgr.layout().data_key(1, 1, 7))
        .await
        .expect("sink");
    // A batch (1 MiB on local disk) reaches the temporary file; less would
    // wait in memory for `finish`.
    sink.write(Bytes::from(vec![7u8; 1 << 20]))
        .await
        .expect("write");
    // A killed process never finishes, aborts or drops its sink.
    std::mem::forget(sink);
}

/// Sets the modification time of every regular file under `dir` whose path
/// `pick`s to `age` ago (symlinks are not followed).
fn age(dir: &Path, ago: Duration, pick: &dyn Fn(&str) -> bool) {
    let when = SystemTime::now() - ago;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("dir entry");
        let kind = entry.file_type().expect("file type");
        let path = entry.path();
        if kind.is_dir() {
            age(&path, ago, pick);
        } else if kind.is_file() && pick(&path.to_string_lossy()) {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(when))
                .unwrap_or_else(|e| panic!("age {}: {e}", path.display()));
        }
    }
}

fn in_app(path: &str, app: &str) -> bool {
    path.split('/').any(|seg| seg == app)
}

const TWO_DAYS: Duration = Duration::from_secs(2 * 86_400);

async fn put(env: &Env, shard: u64, path: &str, len: usize) {
    env.store
        .put(&ObjectKey::new(shard, path), Bytes::from(vec![7u8; len]))
        .await
        .unwrap_or_else(|e| panic!("put {path}: {e}"));
}

/// The shared body: see the module docs.
async fn gc_scenario(env: &Env) {
    // User data, some of it inside Shovel-looking places.
    let user = [
        ".git/HEAD",
        "report.parquet",
        ".hidden",
        &format!("{KILLED}/shuffle-0/notes.txt"),
        &format!("{KILLED}/shuffle-0_notes.txt"),
        "spill/README",
        "data/2024/part-0.csv",
    ];
    for (i, p) in user.iter().enumerate() {
        put(env, i as u64, p, 10 + i).await;
    }
    // A killed job: a real manager, dropped without cleanup.
    let killed = env.manager(KILLED).await;
    write_job(&killed).await;
    drop(killed);
    // A live job: running, objects old, marker fresh.
    let live = env.manager(LIVE).await;
    write_job(&live).await;
    // Jobs without a marker; OLD and RECENT as older versions named their
    // objects (a directory per shuffle).
    put(env, 1, &format!("{OLD}/shuffle-4/map-0-0.data"), 30).await;
    put(env, 2, &format!("{OLD}/shuffle-4/map-0.index"), 40).await;
    put(env, 3, &format!("{RECENT}/shuffle-0/map-0-0.data"), 50).await;
    put(env, 4, &format!("{MIXED}/shuffle-0_map-0-0.data"), 60).await;
    put(env, 5, &format!("spill/{MIXED}/spill-12-3-ab.bin"), 70).await;

    age(&env.physical, TWO_DAYS, &|p| {
        in_app(p, KILLED)
            || in_app(p, OLD)
            || (in_app(p, LIVE) && !p.ends_with("_shovel_job.json"))
            || (in_app(p, MIXED) && !p.ends_with(".bin"))
            || !p.contains("gc-")
    });

    let before = env.paths().await;
    let of = |app: &str| -> BTreeSet<String> {
        before
            .iter()
            .filter(|p| Layout::parse(p).is_some_and(|o| o.app_id == app))
            .cloned()
            .collect()
    };
    let killed_objects = of(KILLED);
    let old_objects = of(OLD);
    let killed_count =
        |pick: &dyn Fn(&str) -> bool| killed_objects.iter().filter(|p| pick(p.as_str())).count();
    // One data object per map output (2 shuffles x 2 maps; the index is its
    // footer), the spill file and the marker stay behind ...
    assert_eq!(
        killed_count(&|p| p.ends_with(".data")),
        4,
        "one data object per map: {killed_objects:?}"
    );
    assert_eq!(
        killed_count(&|p| p.ends_with(".index")),
        0,
        "no index objects: {killed_objects:?}"
    );
    assert_eq!(
        killed_count(&|p| p.starts_with("spill/")),
        1,
        "the spill file: {killed_objects:?}"
    );
    assert_eq!(
        killed_count(&|p| p.ends_with("_shovel_job.json")),
        1,
        "the killed job's marker stays behind: {killed_objects:?}"
    );
    // ... and on local disk the unfinished sink's temporary file (S3 lists
    // nothing for an upload that never finished), which gc must remove too.
    let temps = usize::from(env.local_root.is_some());
    assert_eq!(
        killed_count(&|p| p.contains(".tmp-")),
        temps,
        "the unfinished sink's temporary file: {killed_objects:?}"
    );
    assert_eq!(
        killed_objects.len(),
        6 + temps,
        "data, spill, marker, temporary file: {killed_objects:?}"
    );
    for p in user {
        assert!(before.contains(p), "{p} planted: {before:?}");
    }

    let day = Duration::from_secs(86_400);
    let dry = collect_garbage(
        env.store.as_ref(),
        "",
        &GcOptions {
            older_than: day,
            dry_run: true,
        },
    )
    .await
    .expect("dry run");
    assert_eq!(env.paths().await, before, "a dry run deletes nothing");

    let report = collect_garbage(
        env.store.as_ref(),
        "",
        &GcOptions {
            older_than: day,
            dry_run: false,
        },
    )
    .await
    .expect("gc");
    let after = env.paths().await;
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    let expected: BTreeSet<String> = killed_objects.union(&old_objects).cloned().collect();
    assert_eq!(gone, expected, "exactly the dead jobs' objects go");
    assert!(after.is_subset(&before));
    // The live job's unfinished sink (aged like its data) keeps its
    // temporary file: only dead jobs' temporaries go.
    let live_temps = |paths: &BTreeSet<String>| {
        paths
            .iter()
            .filter(|p| in_app(p, LIVE) && p.contains(".tmp-"))
            .count()
    };
    assert_eq!(live_temps(&before), temps, "{before:?}");
    assert_eq!(live_temps(&after), temps, "{after:?}");
    for p in user {
        assert!(after.contains(p), "user object {p} kept");
    }

    let state = |r: &GcReport, app: &str| r.job(app).map(|j| j.state);
    assert_eq!(
        state(&report, KILLED),
        Some(JobState::Removed),
        "{report:?}"
    );
    assert_eq!(state(&report, OLD), Some(JobState::Removed));
    assert_eq!(state(&report, LIVE), Some(JobState::KeptLive));
    assert_eq!(state(&report, RECENT), Some(JobState::KeptRecent));
    assert_eq!(state(&report, MIXED), Some(JobState::KeptRecent));
    assert_eq!(state(&dry, KILLED), Some(JobState::WouldRemove));
    assert_eq!(state(&dry, LIVE), Some(JobState::KeptLive));
    let killed_row = report.job(KILLED).expect("killed row");
    assert_eq!(killed_row.objects, killed_objects.len() as u64);
    assert_eq!(
        killed_row.marker.as_ref().map(|m| m.app_id.as_str()),
        Some(KILLED)
    );
    // The dry run reported the same jobs, objects and bytes.
    assert_eq!(dry.removed(), report.removed());
    assert_eq!(dry.kept(), report.kept());
    assert_eq!(dry.jobs.len(), report.jobs.len());
    for (d, r) in dry.jobs.iter().zip(&report.jobs) {
        assert_eq!(
            (&d.app_id, d.objects, d.bytes),
            (&r.app_id, r.objects, r.bytes)
        );
    }
    assert_eq!(report.unrecognised_objects, user.len() as u64);
    assert_eq!(dry.unrecognised_objects, user.len() as u64);

    // The live job still works and cleans up after itself.
    live.cleanup_app().await.expect("cleanup live");
    assert!(env.paths().await.iter().all(|p| !in_app(p, LIVE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_a_local_dir_removes_only_dead_jobs() {
    let env = Env::local().await;
    let root = env.local_root.clone().expect("local");
    // A symlinked directory with Shovel-looking, old files outside the root,
    // and a symlink named like a Shovel object.
    let outside = env._dir.path().join("outside");
    std::fs::create_dir_all(outside.join("shuffle-0")).expect("mkdir");
    std::fs::write(outside.join("shuffle-0/map-0-0.data"), b"not yours").expect("write");
    std::fs::write(outside.join("spill-1.bin"), b"not yours either").expect("write");
    std::fs::create_dir_all(root.join("spill")).expect("mkdir");
    std::os::unix::fs::symlink(&outside, root.join("spill/gc-linked")).expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("gc-linked")).expect("symlink");
    std::fs::create_dir_all(root.join("gc-symfile/shuffle-0")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.join("shuffle-0/map-0-0.data"),
        root.join("gc-symfile/shuffle-0/map-0-0.data"),
    )
    .expect("symlink");
    age(&outside, TWO_DAYS, &|_| true);

    gc_scenario(&env).await;

    // Outside the root nothing changed; the symlinks are still there.
    assert!(outside.join("shuffle-0/map-0-0.data").is_file());
    assert!(outside.join("spill-1.bin").is_file());
    for link in [
        "spill/gc-linked",
        "gc-linked",
        "gc-symfile/shuffle-0/map-0-0.data",
    ] {
        assert!(
            root.join(link).symlink_metadata().is_ok(),
            "{link} still there"
        );
    }
    // Empty Shovel directories went (OLD's directory per shuffle too);
    // those holding user files stayed, with only the user files in them.
    assert!(!root.join("spill").join(KILLED).exists());
    assert!(!root.join(OLD).exists());
    assert!(root.join("spill/README").is_file());
    assert!(root.join(".git/HEAD").is_file());
    let killed_dir = root.join(KILLED);
    let mut left: Vec<String> = files_below(&killed_dir);
    left.sort();
    assert_eq!(left, ["shuffle-0/notes.txt", "shuffle-0_notes.txt"]);
}

/// Every file below `dir`, relative and `/`-separated.
fn files_below(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_an_s3_prefix_removes_only_dead_jobs() {
    let env = Env::s3().await;
    gc_scenario(&env).await;
}

/// `older_than` below twice the heartbeat is warned about.
#[test]
fn short_cutoffs_are_warned_about() {
    let hb = Duration::from_secs(30);
    assert!(shuffle_core::gc::heartbeat_warning(Duration::from_secs(59), hb).is_some());
    assert!(shuffle_core::gc::heartbeat_warning(Duration::from_secs(60), hb).is_none());
}
