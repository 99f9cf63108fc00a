//! Ctrl-C: `shovel q80` interrupted mid-job stops its tasks, removes every
//! shuffle and spill file it wrote, and exits with 130.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn ctrl_c_stops_the_job_and_removes_its_files() {
    let data = engine::tpcds::ensure_data(0.1, &cache_dir()).expect("generate SF 0.1");
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("shuffle");
    std::fs::create_dir_all(&local).expect("local dir");
    // A small budget makes the run spill and last long enough to interrupt.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(["q80", "--data"])
        .arg(&data)
        .arg("--local-dir")
        .arg(&local)
        .args(["--memory", "8MiB", "--broadcast-threshold", "0", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shovel");

    // Interrupt once the job has written shuffle or spill files.
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(120) {
        seen = files_under(&local).len();
        if seen > 0 || child.try_wait().expect("poll").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        seen > 0,
        "the job wrote no shuffle file before it ended (or within 120 s)"
    );
    let status = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .expect("send SIGINT");
    assert!(status.success(), "kill -INT failed");

    let out = child.wait_with_output().expect("wait for shovel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "an interrupted run exits with 130: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("shovel: error: interrupted"),
        "no interrupted error line: {err}"
    );
    assert!(out.stdout.is_empty(), "an interrupted run printed a result");
    let left = files_under(&local);
    assert!(
        left.is_empty(),
        "files left behind after the interrupted run ({seen} were there mid-job): {left:?}"
    );
}
