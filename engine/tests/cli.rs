//! End-to-end tests of the `shovel` binary: a q80 run at SF 0.01 whose CSV
//! must equal the golden answer and whose `--report` JSON must carry the
//! summary fields, and bad inputs that must fail fast with one clear line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn shovel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(args)
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .output()
        .expect("run shovel")
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn sf001() -> PathBuf {
    engine::tpcds::ensure_data(0.01, &cache_dir()).expect("generate SF 0.01")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run must fail with a non-zero exit, no panic, and one error line
/// containing every `needles`.
fn assert_fails(args: &[&str], needles: &[&str]) {
    let o = shovel(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("shovel: error: "))
        .unwrap_or_else(|| panic!("{args:?}: no error line in {err}"));
    for n in needles {
        assert!(line.contains(n), "{args:?}: `{n}` not in `{line}`");
    }
    assert!(o.stdout.is_empty(), "{args:?} wrote to stdout");
}

fn json_has(json: &str, key: &str) {
    assert!(
        json.contains(&format!("\"{key}\":")),
        "`{key}` missing in {json}"
    );
}

#[test]
fn q80_end_to_end_with_output_and_report() {
    sf001();
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("q80.csv");
    let report = dir.path().join("run.json");
    let cache = cache_dir();
    let o = shovel(&[
        "q80",
        "--sf",
        "0.01",
        "--cache-dir",
        cache.to_str().expect("utf-8 path"),
        "--output",
        csv.to_str().expect("utf-8 path"),
        "--report",
        report.to_str().expect("utf-8 path"),
        "--partitions",
        "4",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(o.stdout.is_empty(), "CSV went to --output, not stdout");
    assert_eq!(
        std::fs::read_to_string(&csv).expect("read CSV"),
        golden("q80_sf0.01.csv")
    );
    assert!(err.contains("shovel q80 ok"), "{err}");
    assert!(err.contains("peak RSS"), "{err}");
    let json = std::fs::read_to_string(&report).expect("read report");
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'));
    for key in [
        "status",
        "rows",
        "timings_ms",
        "execute",
        "total",
        "stages",
        "elapsed_ms",
        "read",
        "scan_bytes",
        "shuffle",
        "bytes_written",
        "raw_bytes_written",
        "records_written",
        "bytes_read",
        "raw_bytes_read",
        "spill",
        "local_disk_bytes",
        "s3_bytes",
        "s3_requests",
        "local_cache",
        "retries",
        "memory",
        "peak_rss_bytes",
        "tasks",
        "retried",
        "recomputed",
        "stages_completed",
        "cleanup",
        "job",
    ] {
        json_has(&json, key);
    }
    assert!(json.contains("\"status\":\"ok\""), "{json}");
    assert!(json.contains("\"rows\":102"), "{json}");
    assert!(json.contains("\"partitions\":4"), "{json}");
}

#[test]
fn q80_on_embedded_s3_to_stdout() {
    let data = sf001();
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("run.json");
    let o = shovel(&[
        "q80",
        "--data",
        data.to_str().expect("utf-8 path"),
        "--write-shuffle-files-to-s3",
        "--write-shuffle-spills-to-s3",
        "true",
        // Below --memory's floor (8MiB, where SF 0.01 does not spill) through
        // the unchecked expert key, so the run spills to S3.
        "--conf",
        "memory.budget=256KiB",
        "--broadcast-threshold",
        "0",
        "--report",
        report.to_str().expect("utf-8 path"),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), golden("q80_sf0.01.csv"));
    assert!(err.contains("embedded S3 server"), "says so: {err}");
    assert!(err.contains("s3 requests"), "{err}");
    let json = std::fs::read_to_string(&report).expect("read report");
    let spilled_to_s3 = json_num(&json, "\"s3_bytes\":");
    assert!(spilled_to_s3 > 0, "no spill to S3: {json}");
}

/// The first number after `key` in `json`.
fn json_num(json: &str, key: &str) -> u64 {
    let at = json
        .find(key)
        .unwrap_or_else(|| panic!("`{key}` missing in {json}"))
        + key.len();
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not a number in {json}"))
}

#[test]
fn bad_flags_fail_with_one_clear_line() {
    assert_fails(&["q80", "--frobnicate"], &["--frobnicate", "--help"]);
    assert_fails(&["q80", "--memory", "-1"], &["--memory", "negative"]);
    assert_fails(
        &["q80", "--memory", "lots"],
        &["--memory", "lots", "512MiB"],
    );
    assert_fails(&["q80", "--parallelism", "-3"], &["--parallelism"]);
    assert_fails(&["q80", "--sf", "-1"], &["--sf"]);
    assert_fails(
        &["q80", "--s3-bucket", "http://x"],
        &["http://x", "s3://bucket"],
    );
    assert_fails(
        &[
            "q80",
            "--conf",
            "spark.shuffle.glue.s3ShuffleBucket=http://x",
        ],
        &["http://x"],
    );
    assert_fails(&["q80", "--date", "2001-02-30"], &["--date", "YYYY-MM-DD"]);
    assert_fails(&["q80", "--conf", "no.such.key=1"], &["no.such.key"]);
    assert_fails(&["bogus"], &["bogus", "q80"]);
    assert_fails(&[], &["missing command"]);
    assert_fails(
        &["q80", "--shuffel", "s3"],
        &["--shuffel", "similar argument exists: '--shuffle'"],
    );
    assert_fails(&["q80", "--memory"], &["--memory needs a value"]);
}

/// Usage errors exit with 2.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    assert_fails(args, needles);
    assert_eq!(shovel(args).status.code(), Some(2), "{args:?}");
}

#[test]
fn conflicting_and_repeated_flags_are_usage_errors_naming_both() {
    for (args, needles) in [
        (
            &["q80", "--s3-bucket", "s3://bkt/p"][..],
            &["--s3-bucket", "--shuffle local"][..],
        ),
        (
            &[
                "q80",
                "--shuffle",
                "local",
                "--s3-endpoint",
                "http://127.0.0.1:9",
            ],
            &["--s3-endpoint", "--shuffle local"],
        ),
        (
            &[
                "q80",
                "--write-shuffle-files-to-s3",
                "false",
                "--spill-to-s3",
            ],
            &["--spill-to-s3", "--write-shuffle-files-to-s3 false"],
        ),
        (
            &["q80", "--s3-fault-rate", "0.1"],
            &["--s3-fault-rate", "--shuffle local"],
        ),
        (
            &[
                "q80",
                "--shuffle",
                "s3",
                "--s3-fault-rate",
                "0.1",
                "--s3-bucket",
                "s3://bkt/p",
            ],
            &["--s3-fault-rate", "--s3-bucket"],
        ),
        (&["q80", "--data", "/x", "--sf", "1"], &["--data", "--sf"]),
        (
            &["q80", "--data", "/x", "--cache-dir", "/y"],
            &["--data", "--cache-dir"],
        ),
        (
            &["q80", "--memory", "1GiB", "--conf", "memory.budget=2GiB"],
            &["--memory 1GiB", "memory.budget=2GiB"],
        ),
        (
            &["q80", "--sf", "1", "--sf", "2"],
            &["--sf", "multiple times"],
        ),
        (&["q80", "--memory", "1MiB"], &["--memory 1MiB", "8MiB"]),
    ] {
        assert_usage_error(args, needles);
    }
}

#[test]
fn unwritable_output_fails_before_any_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).expect("mkdir");
    let mut perms = std::fs::metadata(&ro).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&ro, perms).expect("chmod");
    // Root writes through permission bits: then use a directory no one can
    // create files in.
    let ro = if std::fs::write(ro.join("probe"), b"").is_ok() {
        PathBuf::from("/sys")
    } else {
        ro
    };
    let cache = dir.path().join("cache");
    let out = ro.join("q80.csv");
    for flag in ["--output", "--report"] {
        let started = Instant::now();
        assert_usage_error(
            &[
                "q80",
                "--sf",
                "0.01",
                "--cache-dir",
                cache.to_str().expect("utf-8 path"),
                flag,
                out.to_str().expect("utf-8 path"),
            ],
            &[flag, out.to_str().expect("utf-8 path"), "cannot write"],
        );
        assert!(started.elapsed() < Duration::from_secs(30), "not fail-fast");
        assert!(!cache.exists(), "data was generated before the check");
        assert!(!out.exists(), "the check left {} behind", out.display());
    }
    // A writable path is left as it was: no file created by the check.
    let ok = dir.path().join("absent.csv");
    let o = shovel(&[
        "q80",
        "--data",
        "/nonexistent/d",
        "--output",
        ok.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(!ok.exists(), "the check left {} behind", ok.display());
}

#[test]
fn help_lists_every_command_and_completions_print_a_script() {
    let o = shovel(&["help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for c in ["q80", "gen", "gc", "completions"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(c)),
            "{c}: {out}"
        );
    }
    let o = shovel(&["q80", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("[default: 2GiB]"));
    let o = shovel(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        script.contains("complete") && script.contains("shovel"),
        "{script}"
    );
    assert!(script.contains("--s3-bucket"), "{script}");
}

#[test]
fn missing_data_dir() {
    assert_fails(
        &["q80", "--data", "/nonexistent/shovel-data"],
        &["/nonexistent/shovel-data", "does not exist", "shovel gen"],
    );
}

#[test]
fn missing_table() {
    let src = sf001();
    let dir = tempfile::tempdir().expect("temp dir");
    for e in std::fs::read_dir(&src).expect("list data") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "parquet") && !p.ends_with("item.parquet") {
            std::fs::copy(&p, dir.path().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    assert_fails(
        &["q80", "--data", dir.path().to_str().expect("utf-8 path")],
        &["item"],
    );
}

#[test]
fn corrupt_parquet() {
    let src = sf001();
    let dir = tempfile::tempdir().expect("temp dir");
    for e in std::fs::read_dir(&src).expect("list data") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "parquet") {
            std::fs::copy(&p, dir.path().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::write(dir.path().join("store.parquet"), b"not a parquet file").expect("corrupt");
    assert_fails(
        &["q80", "--data", dir.path().to_str().expect("utf-8 path")],
        &["store.parquet", "corrupt"],
    );
}

#[test]
fn unreachable_s3_endpoint() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let data = sf001();
    assert_fails(
        &[
            "q80",
            "--data",
            data.to_str().expect("utf-8 path"),
            "--shuffle",
            "s3",
            "--s3-endpoint",
            &endpoint,
            "--s3-bucket",
            "s3://shovel-test/cli",
        ],
        &[&endpoint, "--s3-endpoint"],
    );
}

/// Runs q80 (SF 0.01) with `--shuffle s3` against `server` as an explicit
/// endpoint, without static keys, as a `shovel` process with no inherited
/// environment and an AWS credential chain that can find nothing by itself:
/// `HOME` and the AWS config and credentials files in an empty temp dir,
/// instance metadata disabled (so no request leaves 127.0.0.1). `vars` are
/// added on top; returns the output and how long the process took.
fn q80_without_static_keys(
    server: &shuffle_s3::EmbeddedS3,
    extra_args: &[&str],
    vars: &[(&str, &str)],
) -> (Output, Duration) {
    let data = sf001();
    let home = tempfile::tempdir().expect("temp dir");
    let missing = home.path().join("no-such-dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shovel"));
    cmd.args(["q80", "--data", data.to_str().expect("utf-8 path")])
        .args(["--shuffle", "s3", "--s3-endpoint", &server.endpoint])
        .args(["--s3-bucket", "s3://shovel/cli-chain"])
        .args(extra_args)
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", missing.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", missing.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().expect("run shovel");
    (out, started.elapsed())
}

/// An embedded S3 server on 127.0.0.1 served by its own runtime while the
/// test waits on the `shovel` process.
fn embedded_s3() -> (tokio::runtime::Runtime, shuffle_s3::EmbeddedS3) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt
        .block_on(shuffle_s3::EmbeddedS3::start_temp())
        .expect("embedded S3");
    (rt, server)
}

#[test]
fn missing_credentials_fail_fast_naming_the_fixes() {
    let (_rt, server) = embedded_s3();
    // A generous limit: the failure must come from the chain finding
    // nothing, not from waiting this out.
    let (o, elapsed) =
        q80_without_static_keys(&server, &["--conf", "s3.credentials_timeout=60s"], &[]);
    let err = stderr(&o);
    assert!(!o.status.success(), "succeeded without credentials: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(o.stdout.is_empty(), "wrote to stdout");
    let line = err
        .lines()
        .find(|l| l.starts_with("shovel: error: "))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    for needle in [
        "no AWS credentials",
        server.endpoint.as_str(),
        "s3.access_key_id",
        "s3.secret_access_key",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "instance or task role",
    ] {
        assert!(line.contains(needle), "`{needle}` not in `{line}`");
    }
    assert!(
        !line.contains("s3.credentials_timeout"),
        "waited for the timeout: {line}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_eq!(server.stats().total(), 0, "no request reached S3");
}

#[test]
fn credentials_from_the_environment_reach_an_explicit_endpoint() {
    let (_rt, server) = embedded_s3();
    let (o, _) = q80_without_static_keys(
        &server,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", &server.access_key),
            ("AWS_SECRET_ACCESS_KEY", &server.secret_key),
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), golden("q80_sf0.01.csv"));
    assert!(!err.contains(&server.secret_key), "secret leaked: {err}");
    assert!(server.stats().total() > 0, "S3 was used");
}

#[test]
fn gen_writes_tables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("sf");
    let o = shovel(&[
        "gen",
        "--sf",
        "0.01",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for t in engine::tpcds::Q80_TABLES {
        assert!(out.join(format!("{t}.parquet")).is_file(), "{t}");
    }
    // Not a terminal: no progress bar escape codes.
    assert!(!stderr(&o).contains('\r'), "{}", stderr(&o));
}

/// A web server on 127.0.0.1 that answers every request with `501 Not
/// Implemented` and an HTML page (what a wrong `--s3-endpoint` often is);
/// returns its URL and a count of the requests it answered.
fn not_s3_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let body = "<html><body><h1>501 Not Implemented</h1></body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

/// `shovel q80 --shuffle s3` against `endpoint` and `bucket` with static
/// keys in the environment; returns the output and how long it took.
fn q80_on_s3(endpoint: &str, bucket: &str, key: &str, secret: &str) -> (Output, Duration) {
    let data = sf001();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(["q80", "--data", data.to_str().expect("utf-8 path")])
        .args([
            "--shuffle",
            "s3",
            "--s3-endpoint",
            endpoint,
            "--s3-bucket",
            bucket,
        ])
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run shovel");
    (out, started.elapsed())
}

/// The first line on stderr, which must be the error (not a cleanup warning).
fn first_line_is_the_error(o: &Output) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(o.stdout.is_empty(), "wrote to stdout");
    let first = err.lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("shovel: error: "),
        "the first stderr line is not the cause: {err}"
    );
    first
}

#[test]
fn an_endpoint_that_is_not_s3_fails_fast_naming_it() {
    let (endpoint, seen) = not_s3_server();
    let (o, elapsed) = q80_on_s3(&endpoint, "s3://shovel-test/cli", "AKIDEXAMPLE", "secret");
    let line = first_line_is_the_error(&o);
    assert!(line.contains(&endpoint), "{line}");
    assert!(line.contains("does not answer like S3"), "{line}");
    // The bound; the failure comes from the answer, not a timeout.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let requests = seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        requests <= 4,
        "{requests} requests: an answer that is not S3 must not be retried"
    );
}

#[test]
fn a_missing_bucket_fails_before_any_task_naming_it() {
    let (_rt, server) = embedded_s3();
    let (o, elapsed) = q80_on_s3(
        &server.endpoint,
        "s3://no-such-bucket/cli",
        &server.access_key,
        &server.secret_key,
    );
    let line = first_line_is_the_error(&o);
    assert!(line.contains("no-such-bucket"), "{line}");
    assert!(line.contains("does not exist"), "{line}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let stats = server.stats();
    assert!(
        stats.total() <= 4,
        "a missing bucket must stop the run at the probe: {stats:?}"
    );
}
