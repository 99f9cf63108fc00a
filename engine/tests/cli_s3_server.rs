//! `shovel s3-server` as a process of its own: `shovel q80` runs against it
//! with the command and keys it prints and gets the golden answer; SIGTERM
//! stops it with exit 0 and no Shovel objects left; `--latency` delays every
//! answer; a non-loopback `--bind` is refused.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{cache_dir, files_under, golden};

/// A running `shovel s3-server`, killed if the test fails before stopping it.
struct Server {
    child: Option<Child>,
    banner: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shovel"))
            .arg("s3-server")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shovel s3-server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        stdout.read_line(&mut banner).expect("read the banner");
        assert!(
            banner.starts_with("shovel s3-server: serving http://127.0.0.1:"),
            "banner: {banner:?}"
        );
        Server {
            child: Some(child),
            banner,
            _stdout: stdout,
        }
    }

    /// `http://127.0.0.1:PORT` from the banner.
    fn endpoint(&self) -> String {
        let rest = self.banner.split("serving ").nth(1).expect("endpoint");
        rest.split_whitespace()
            .next()
            .expect("endpoint")
            .to_string()
    }

    /// The pasteable part: `(env assignments, shovel's arguments)`.
    fn usage(&self) -> (Vec<(String, String)>, Vec<String>) {
        let cmd = self
            .banner
            .split("use it with: ")
            .nth(1)
            .expect("a command in the banner");
        let mut env = Vec::new();
        let mut words = cmd.split_whitespace();
        for w in words.by_ref() {
            match w.split_once('=') {
                Some((k, v)) => env.push((k.to_string(), v.to_string())),
                None => {
                    assert_eq!(w, "shovel", "{cmd}");
                    break;
                }
            }
        }
        (env, words.map(String::from).collect())
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(mut self) -> Output {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success(), "kill -TERM failed");
        let start = Instant::now();
        while child.try_wait().expect("poll").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "s3-server still running 60 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("wait for s3-server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn q80_against_a_separate_s3_server_then_sigterm() {
    let data = engine::tpcds::ensure_data(0.01, &cache_dir()).expect("generate SF 0.01");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("s3");
    let server = Server::start(&[
        "--dir",
        dir.to_str().expect("utf-8"),
        "--bind",
        "127.0.0.1:0",
    ]);
    let endpoint = server.endpoint();
    assert!(
        server.banner.contains("buckets: shovel"),
        "{}",
        server.banner
    );
    let (env, args) = server.usage();
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "SHOVEL_S3_ACCESS_KEY_ID",
            "SHOVEL_S3_SECRET_ACCESS_KEY",
            "SHOVEL_S3_REGION"
        ]
    );
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--s3-endpoint" && w[1] == endpoint),
        "{args:?}"
    );
    assert!(args.iter().any(|a| a == "--s3-bucket"), "{args:?}");

    let report = tmp.path().join("run.json");
    let out = Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(&args)
        .arg("--data")
        .arg(&data)
        .arg("--report")
        .arg(&report)
        // The local tier would serve every read (no GET); without it the
        // run reads from the server, so both price classes are checked.
        .args(["--conf", "cache.enabled=false"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .output()
        .expect("run shovel q80");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "q80 failed: {err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        golden("q80_sf0.01.csv"),
        "{err}"
    );
    assert!(err.contains(&format!("via {endpoint}")), "{err}");
    assert!(
        !err.contains("embedded S3"),
        "used the separate server: {err}"
    );
    check_cost(
        &err,
        &std::fs::read_to_string(&report).expect("read the report"),
    );

    let stopped = server.terminate();
    let serr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(0), "{serr}");
    assert!(serr.contains("SIGTERM"), "{serr}");
    assert!(
        !serr.contains("stopped after 0 requests"),
        "q80 did not use it: {serr}"
    );
    // q80 cleaned up: no object is left in the bucket, and no side file
    // of a deleted object at the root (the server removes s3s-fs's
    // `.bucket-*.json` files with the object).
    let bucket = dir.join("shovel");
    assert!(bucket.is_dir());
    assert_eq!(files_under(&dir), Vec::<PathBuf>::new());
}

/// The flat JSON object after `"key":` in `json`.
fn object<'a>(json: &'a str, key: &str) -> &'a str {
    let k = format!("\"{key}\":{{");
    let at = json
        .find(&k)
        .unwrap_or_else(|| panic!("`{key}` missing in {json}"));
    let rest = &json[at + k.len() - 1..];
    &rest[..=rest.find('}').expect("end of object")]
}

/// The number after `"key":` in the flat object `obj`.
fn num(obj: &str, key: &str) -> f64 {
    let k = format!("\"{key}\":");
    let at = obj
        .find(&k)
        .unwrap_or_else(|| panic!("`{key}` missing in {obj}"))
        + k.len();
    obj[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not a number in {obj}"))
}

/// The summary's cost line and the report's `s3_cost` agree with each
/// other and with the request counts, at S3 Standard list prices.
fn check_cost(summary: &str, json: &str) {
    let requests = object(json, "s3_requests");
    let cost = object(json, "s3_cost");
    let n = |k: &str| num(requests, k);
    let put_class = n("put")
        + n("list")
        + n("multipart_create")
        + n("multipart_part")
        + n("multipart_complete");
    let get_class = n("get") + n("head");
    let free = n("delete") + n("multipart_abort");
    assert!(put_class > 0.0 && get_class > 0.0, "{requests}");
    assert_eq!(num(cost, "put_class"), put_class, "{cost}");
    assert_eq!(num(cost, "get_class"), get_class, "{cost}");
    assert_eq!(num(cost, "free"), free, "{cost}");
    assert_eq!(num(cost, "requests"), n("total"), "{cost} vs {requests}");
    assert_eq!(num(cost, "put_per_1000"), 0.005, "{cost}");
    assert_eq!(num(cost, "get_per_1000"), 0.0004, "{cost}");
    let dollars = (put_class * 0.005 + get_class * 0.0004) / 1000.0;
    assert!((num(cost, "dollars") - dollars).abs() < 1e-9, "{cost}");

    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("s3 cost"))
        .unwrap_or_else(|| panic!("no cost line in {summary}"));
    let expected = format!(
        " in requests ({} requests: {put_class} PUT-class, {get_class} GET-class, \
         {free} free) at S3 Standard list prices",
        n("total")
    );
    assert!(line.ends_with(&expected), "{line}\nexpected: {expected}");
    let shown: f64 = line
        .split('$')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no dollar amount in {line}"));
    assert!((shown - dollars).abs() <= 0.00005, "{line}: {dollars}");
}

/// One raw HTTP request to `endpoint`; how long until its answer is read.
fn one_request(endpoint: &str) -> Duration {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let start = Instant::now();
    s.write_all(
        format!("GET /shovel?list-type=2 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("send");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read the answer");
    let took = start.elapsed();
    assert!(
        answer.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    took
}

#[test]
fn latency_delays_every_answer() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("s3");
    let server = Server::start(&["--dir", dir.to_str().expect("utf-8"), "--latency", "50ms"]);
    assert!(server.banner.contains("latency 50ms"), "{}", server.banner);
    let endpoint = server.endpoint();
    for _ in 0..3 {
        let took = one_request(&endpoint);
        assert!(took >= Duration::from_millis(50), "answered in {took:?}");
    }
    let stopped = server.terminate();
    assert_eq!(stopped.status.code(), Some(0));
}

#[test]
fn non_loopback_bind_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("s3");
    for bind in ["0.0.0.0:0", "192.0.2.1:9000", "[::]:0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_shovel"))
            .args(["s3-server", "--dir", dir.to_str().expect("utf-8")])
            .args(["--bind", bind])
            .output()
            .expect("run shovel s3-server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bind}: {err}");
        assert!(
            err.contains(&format!("--bind {bind}")) && err.contains("--allow-remote"),
            "{bind}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty(), "no banner: {bind}");
        assert!(!dir.exists(), "nothing served for {bind}");
    }
    for (bind, needle) in [("nonsense", "IP:PORT"), ("127.0.0.1", "IP:PORT")] {
        let out = Command::new(env!("CARGO_BIN_EXE_shovel"))
            .args(["s3-server", "--dir", dir.to_str().expect("utf-8")])
            .args(["--bind", bind])
            .output()
            .expect("run shovel s3-server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bind}: {err}");
        assert!(err.contains(needle), "{bind}: {err}");
    }
}
