//! `shovel gc` on a local directory holding user files, a killed job's
//! leftovers and a running job: `--dry-run` deletes nothing and says what
//! would go; the real run removes exactly the leftovers and says so, per job.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use shuffle_core::{ShuffleConfig, ShuffleHandle, ShuffleManager, StoreShuffleManager};

fn shovel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(args)
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .output()
        .expect("run shovel")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every regular file under `dir` (relative paths), not following symlinks.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("type");
            if t.is_dir() {
                walk(root, &e.path(), out);
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root).expect("under root").to_owned();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Sets the mtime of every regular file under `dir` whose relative path
/// `pick`s to two days ago.
fn age(dir: &Path, pick: &dyn Fn(&str) -> bool) {
    let when = SystemTime::now() - Duration::from_secs(2 * 86_400);
    for rel in files(dir) {
        if pick(&rel) {
            std::fs::File::options()
                .write(true)
                .open(dir.join(&rel))
                .and_then(|f| f.set_modified(when))
                .expect("set mtime");
        }
    }
}

/// A local manager for `app_id` under `root` that has written one shuffle.
async fn job(root: &Path, app_id: &str) -> StoreShuffleManager {
    let mut config = ShuffleConfig::from_pairs([("shuffle.app_id", app_id)]).expect("config");
    config.local_dirs = vec![root.to_path_buf()];
    let mgr = shuffle_local::local_manager(config).expect("manager");
    mgr.register_shuffle(ShuffleHandle {
        shuffle_id: 0,
        num_maps: 2,
        num_partitions: 2,
    })
    .await
    .expect("register");
    for m in 0..2 {
        let mut w = mgr.map_writer(0, m, 0).await.expect("writer");
        let mut p = w.partition_writer(1).await.expect("partition");
        p.write_block(&[m as u8; 300]).await.expect("block");
        w.commit().await.expect("commit");
    }
    mgr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_cli_removes_only_a_killed_jobs_leftovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for (path, body) in [
        (".git/HEAD", "ref: refs/heads/main\n"),
        ("report.parquet", "PAR1"),
        (".hidden", "x"),
        ("cli-killed/shuffle-0/notes.txt", "mine"),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
    }
    drop(job(root, "cli-killed").await); // killed: never cleaned up
    let live = job(root, "cli-live").await;
    age(root, &|p| {
        !(p.starts_with("cli-live") && p.ends_with("_shovel_job.json"))
    });
    let before = files(root);
    let leftovers: Vec<&String> = before
        .iter()
        .filter(|p| p.starts_with("cli-killed/") && !p.ends_with("notes.txt"))
        .collect();
    // One data object per map (the index is its footer) and the marker.
    let data = leftovers.iter().filter(|p| p.ends_with(".data")).count();
    let markers = leftovers
        .iter()
        .filter(|p| p.ends_with("_shovel_job.json"))
        .count();
    assert_eq!((data, markers), (2, 1), "2 data, marker: {before:?}");
    assert_eq!(leftovers.len(), 3, "2 data, marker: {before:?}");
    let target = root.to_string_lossy().into_owned();

    let o = shovel(&["gc", "--older-than", "24h", "--dry-run", &target]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dry = stdout(&o);
    assert_eq!(files(root), before, "--dry-run deleted something: {dry}");
    assert!(dry.contains("would remove 3 objects"), "{dry}");
    assert!(dry.contains("cli-killed: would remove, 3 objects"), "{dry}");
    assert!(dry.contains("cli-live: kept: live"), "{dry}");
    assert!(dry.contains("left alone 4 unrecognised objects"), "{dry}");

    let o = shovel(&["gc", "--older-than", "24h", &target]);
    assert!(o.status.success(), "{}", stderr(&o));
    let real = stdout(&o);
    assert!(real.contains("removed 3 objects"), "{real}");
    assert!(real.contains("cli-killed: removed, 3 objects"), "{real}");
    assert!(real.contains("cli-live: kept: live"), "{real}");
    assert!(real.contains("left alone 4 unrecognised objects"), "{real}");
    // The dry run announced the same bytes the real run removed.
    let bytes = |s: &str| {
        s.lines()
            .find(|l| l.contains("cli-killed:"))
            .and_then(|l| l.split(", ").nth(2).map(str::to_string))
    };
    assert_eq!(bytes(&dry), bytes(&real), "{dry}\n{real}");
    let after = files(root);
    for p in &before {
        let gone = !after.contains(p);
        assert_eq!(gone, leftovers.contains(&p), "{p}: {after:?}");
    }
    assert!(root.join("cli-killed/shuffle-0/notes.txt").is_file());

    // A cutoff shorter than twice the heartbeat is warned about.
    let o = shovel(&["gc", "--older-than", "10s", "--dry-run", &target]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("may look dead"), "{}", stderr(&o));

    live.cleanup_app().await.expect("cleanup");
    assert!(!root.join("cli-live").exists());
}

#[test]
fn gc_cli_rejects_bad_arguments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().to_string_lossy().into_owned();
    for (args, needles) in [
        (vec!["gc", target.as_str()], vec!["--older-than"]),
        (
            vec!["gc", "--older-than", "-1h", &target],
            vec!["--older-than", "negative"],
        ),
        (
            vec!["gc", "--older-than", "soon", &target],
            vec!["not a duration"],
        ),
        (
            vec!["gc", "--older-than", "1h", "http://x/y"],
            vec!["not s3://bucket/prefix"],
        ),
        (vec!["gc", "--older-than", "1h", "s3://"], vec!["s3"]),
    ] {
        let o = shovel(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: `{n}` not in {err}");
        }
    }
}
