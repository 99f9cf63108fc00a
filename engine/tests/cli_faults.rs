//! The `shovel` binary's fault-injection flags, as the README's reliability
//! demos use them: a flaky embedded S3 (`--s3-fault-rate`) and an executor
//! lost mid-job (`--executors`, `--lose-executor`), each on both backends
//! where it applies. Every run must print the golden answer and report what
//! it survived.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

fn sf001() -> PathBuf {
    engine::tpcds::ensure_data(0.01, &cache_dir()).expect("generate SF 0.01")
}

fn golden() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/q80_sf0.01.csv");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs `shovel q80` on SF 0.01 with every join shuffled and `extra` flags;
/// the output and the `--report` JSON.
fn q80(extra: &[&str]) -> (Output, String) {
    let data = sf001();
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("run.json");
    let o = Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(["q80", "--data"])
        .arg(&data)
        .args(["--broadcast-threshold", "0", "--partitions", "4"])
        .args(["--parallelism", "4", "--report"])
        .arg(&report)
        .args(extra)
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .output()
        .expect("run shovel");
    let json = std::fs::read_to_string(&report).unwrap_or_default();
    (o, json)
}

fn assert_golden(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        golden(),
        "{what}: wrong answer"
    );
}

/// A number in the report: the first `"key":N` after `after`.
fn num_after(json: &str, after: &str, key: &str) -> u64 {
    let start = json
        .find(after)
        .unwrap_or_else(|| panic!("`{after}` not in {json}"));
    let rest = &json[start..];
    let at = rest
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("`{key}` not after `{after}` in {json}"));
    rest[at + key.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not a number in {json}"))
}

#[test]
fn flaky_embedded_s3_is_retried_to_the_right_answer() {
    let (o, json) = q80(&["--shuffle", "s3", "--spill-to-s3", "--s3-fault-rate", "0.1"]);
    assert_golden(&o, "10% of S3 requests failing");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fails 10% of requests"), "{err}");
    let retries = num_after(&json, "\"s3_requests\"", "retries");
    assert!(
        retries > 0,
        "faults were injected but no retry was reported: {json}"
    );
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with("s3 requests"))
        .unwrap_or_else(|| panic!("no s3 requests line: {err}"));
    assert!(line.contains(&format!("{retries} retries")), "{line}");
}

#[test]
fn lost_executor_is_survived_on_both_backends() {
    for (backend, flags) in [
        ("local", vec![]),
        ("s3", vec!["--shuffle", "s3", "--spill-to-s3"]),
    ] {
        let mut args = vec!["--executors", "2", "--lose-executor", "1"];
        args.extend(flags);
        let (o, json) = q80(&args);
        assert_golden(&o, &format!("{backend}: executor 1 lost"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("shovel: lost executor 1"), "{backend}: {err}");
        assert!(
            err.contains("killed with lost executor 1"),
            "{backend}: {err}"
        );
        let killed = num_after(&json, "\"tasks\":{", "killed");
        let recomputed = num_after(&json, "\"tasks\":{", "recomputed");
        assert!(killed >= 1, "{backend}: nothing was killed: {json}");
        match backend {
            "local" => {
                assert!(err.contains("its disk took"), "{err}");
                assert!(
                    recomputed >= 1,
                    "local: lost outputs not recomputed: {json}"
                );
                assert!(json.contains("\"kind\":\"fetch_failure\""), "{json}");
            }
            _ => {
                assert!(err.contains("are in S3 and stay"), "{err}");
                assert_eq!(recomputed, 0, "s3: a finished map re-ran: {json}");
            }
        }
    }
}

#[test]
fn fault_flags_reject_what_they_cannot_do() {
    for (args, needle) in [
        (
            vec![
                "--shuffle",
                "s3",
                "--s3-bucket",
                "s3://shovel-b/p",
                "--s3-fault-rate",
                "0.1",
            ],
            "embedded S3 server only",
        ),
        (vec!["--s3-fault-rate", "0.1"], "add --shuffle s3"),
        (
            vec!["--lose-executor", "3", "--executors", "2"],
            "add --executors 4",
        ),
    ] {
        let (o, _) = q80(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
    }
}
