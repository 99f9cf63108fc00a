//! Stop signals: `shovel q80` stopped mid-job by Ctrl-C (SIGINT), SIGTERM or
//! SIGHUP stops its tasks, removes every shuffle and spill file or object it
//! wrote (and its temp dirs), and exits with 130 / 143 / 129.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{cache_dir, files_under};

/// Starts q80 at SF 0.1 with `args` (and TMPDIR = `tmpdir`), waits until a
/// file appears under `watch` (and `ready` holds), sends `signal` (a `kill`
/// name), and returns the output and how many files were there when it was
/// sent.
fn stop_mid_job(signal: &str, args: &[&str], tmpdir: &Path, watch: &Path) -> (Output, usize) {
    stop_when(signal, args, tmpdir, watch, &|| true)
}

fn stop_when(
    signal: &str,
    args: &[&str],
    tmpdir: &Path,
    watch: &Path,
    ready: &dyn Fn() -> bool,
) -> (Output, usize) {
    let data = engine::tpcds::ensure_data(0.1, &cache_dir()).expect("generate SF 0.1");
    // A small budget makes the run spill and last long enough to stop.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(["q80", "--data"])
        .arg(&data)
        .args(["--memory", "8MiB", "--broadcast-threshold", "0", "-q"])
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shovel");

    // Stop it once the job has written shuffle or spill files.
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(120) {
        seen = files_under(watch).len();
        if (seen > 0 && ready()) || child.try_wait().expect("poll").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        seen > 0,
        "the job wrote no shuffle file before it ended (or within 120 s)"
    );
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("send the signal");
    assert!(status.success(), "kill -{signal} failed");
    (child.wait_with_output().expect("wait for shovel"), seen)
}

fn assert_stopped(out: &Output, code: i32, name: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "a run stopped by {name} exits with {code}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("shovel: error: interrupted"),
        "no interrupted error line: {err}"
    );
    assert!(err.contains(name), "the error does not name {name}: {err}");
    assert!(out.stdout.is_empty(), "a stopped run printed a result");
}

/// On local disk (`--local-dir`): nothing left under it.
fn stops_and_removes_local_files(signal: &str, code: i32, name: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("shuffle");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&local).expect("local dir");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let local_s = local.display().to_string();
    let (out, seen) = stop_mid_job(signal, &["--local-dir", &local_s], &tmp, &local);
    assert_stopped(&out, code, name);
    let left = files_under(&local);
    assert!(
        left.is_empty(),
        "files left behind after {name} ({seen} were there mid-job): {left:?}"
    );
    let left = files_under(&tmp);
    assert!(left.is_empty(), "files left in TMPDIR: {left:?}");
}

#[test]
fn ctrl_c_stops_the_job_and_removes_its_files() {
    stops_and_removes_local_files("INT", 130, "SIGINT");
}

#[test]
fn sigterm_stops_the_job_and_removes_its_files() {
    stops_and_removes_local_files("TERM", 143, "SIGTERM");
}

#[test]
fn sighup_stops_the_job_and_removes_its_files() {
    stops_and_removes_local_files("HUP", 129, "SIGHUP");
}

/// With `--shuffle s3` and no bucket: the embedded S3 server's directory
/// and the default local dir live in TMPDIR; after SIGTERM it is empty.
#[test]
fn sigterm_with_embedded_s3_leaves_no_objects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, seen) = stop_mid_job(
        "TERM",
        &["--shuffle", "s3", "--spill-to-s3"],
        dir.path(),
        dir.path(),
    );
    assert_stopped(&out, 143, "SIGTERM");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read TMPDIR")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "TMPDIR not empty after SIGTERM ({seen} files were there mid-job): {left:?} holding {:?}",
        files_under(dir.path())
    );
}

/// A stop signal with `--keep-shuffle`: spills go, committed outputs stay.
#[test]
fn sigterm_with_keep_shuffle_removes_spills_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("shuffle");
    std::fs::create_dir_all(&local).expect("local dir");
    let local_s = local.display().to_string();
    // Once a map output is committed.
    let committed = || {
        files_under(&local)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".data"))
    };
    let (out, _) = stop_when(
        "TERM",
        &["--local-dir", &local_s, "--keep-shuffle"],
        dir.path(),
        &local,
        &committed,
    );
    assert_stopped(&out, 143, "SIGTERM");
    let left = files_under(&local);
    let spills: Vec<_> = left
        .iter()
        .filter(|p| p.starts_with(local.join("spill")))
        .collect();
    assert!(spills.is_empty(), "spill files kept: {spills:?}");
    assert!(
        left.iter().any(|p| p.to_string_lossy().ends_with(".data")),
        "no committed map output kept: {left:?}"
    );
}
