//! The standard exports of a real q80 run: CloudWatch EMF lines (`--emf`)
//! that validate against the EMF structure and agree with the event log and
//! the run summary; the live Prometheus endpoint (`--metrics-addr`) answering
//! while the job runs; `RUST_LOG` turning on the binary's logs.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use engine::events::{read_event_log, Event};
use serde_json::Value;

fn shovel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shovel"));
    c.env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .env_remove("RUST_LOG");
    c
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn q80_args(dir: &Path) -> Vec<String> {
    engine::tpcds::ensure_data(0.01, &cache_dir()).expect("generate SF 0.01");
    [
        "q80",
        "--sf",
        "0.01",
        "--cache-dir",
        s(&cache_dir()),
        "--executors",
        "2",
        "--output",
        s(&dir.join("q80.csv")),
    ]
    .map(String::from)
    .to_vec()
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run shovel");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// CloudWatch's units (PutMetricData's `StandardUnit`).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one line against the EMF specification: `_aws` with an integer
/// `Timestamp` and `CloudWatchMetrics` directives; every dimension a string
/// member; every metric a number member with a CloudWatch unit. Returns
/// the line's metric names.
fn validate_emf(line: &Value) -> Vec<String> {
    let obj = line.as_object().expect("a JSON object");
    let aws = obj["_aws"].as_object().expect("_aws object");
    assert!(aws["Timestamp"].is_u64(), "Timestamp: {line}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty(), "{line}");
    let mut names = Vec::new();
    for d in directives {
        assert_eq!(d["Namespace"], "Glue", "{line}");
        let dims = d["Dimensions"].as_array().expect("Dimensions");
        assert!(!dims.is_empty());
        for set in dims {
            let set = set.as_array().expect("a dimension set");
            assert!(!set.is_empty() && set.len() <= 30, "{line}");
            for key in set {
                let key = key.as_str().expect("dimension name");
                assert!(obj[key].is_string(), "dimension {key} member: {line}");
            }
        }
        let metrics = d["Metrics"].as_array().expect("Metrics");
        assert!(!metrics.is_empty() && metrics.len() <= 100, "{line}");
        for m in metrics {
            let name = m["Name"].as_str().expect("Name");
            let unit = m["Unit"].as_str().expect("Unit");
            assert!(UNITS.contains(&unit), "unit {unit}: {line}");
            assert!(obj[name].is_number(), "metric {name} member: {line}");
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn emf_lines_validate_and_agree_with_the_event_log_and_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, emf, report) = (
        dir.path().join("events.jsonl"),
        dir.path().join("metrics.emf"),
        dir.path().join("report.json"),
    );
    let mut cmd = shovel();
    cmd.args(q80_args(dir.path())).args([
        "--event-log",
        s(&log),
        "--event-log-interval",
        "10ms",
        "--emf",
        s(&emf),
        "--report",
        s(&report),
    ]);
    run(&mut cmd);
    let text = std::fs::read_to_string(&emf).expect("emf written");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let events = read_event_log(&log).expect("event log");
    let samples: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Sample {
                process, executors, ..
            } => Some((process, executors)),
            _ => None,
        })
        .collect();
    assert!(samples.len() > 2, "{}", samples.len());
    let execs = samples[0].1.len();
    assert_eq!(execs, 2);
    // Per sample: driver count + gauge, and count + gauge per executor;
    // then the one total line.
    assert_eq!(lines.len(), samples.len() * (2 + 2 * execs) + 1);
    let mut run_ids = HashSet::new();
    let mut last_ts = 0;
    for l in &lines {
        let names = validate_emf(l);
        assert!(names.iter().all(|n| n.starts_with("glue.")), "{l}");
        assert_eq!(l["JobName"], "shovel-q80");
        run_ids.insert(l["JobRunId"].as_str().unwrap().to_string());
        let ts = l["_aws"]["Timestamp"].as_u64().unwrap();
        assert!(ts >= last_ts, "timestamps in order");
        last_ts = ts;
    }
    assert_eq!(run_ids.len(), 1, "one run id: {run_ids:?}");

    // Count lines carry growth: their sums are the total line's values, which
    // are the event log's last sample.
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines.iter().filter(|l| l["Type"] == "count") {
        for (k, v) in l.as_object().unwrap() {
            if let Some(v) = v.as_u64().filter(|_| k.starts_with("glue.")) {
                *sums.entry(k.clone()).or_default() += v;
            }
        }
    }
    let total = lines.last().unwrap();
    assert_eq!(total["Type"], "total");
    for (name, sum) in &sums {
        assert_eq!(total[name].as_u64(), Some(*sum), "{name}");
    }
    let (last, last_execs) = samples[samples.len() - 1];
    let t = |n: &str| total[n].as_u64().unwrap_or_else(|| panic!("{n}"));
    assert_eq!(t("glue.driver.aggregate.bytesRead"), last.input_bytes);
    assert_eq!(
        t("glue.driver.aggregate.shuffleBytesWritten"),
        last.shuffle_bytes_written
    );
    assert_eq!(
        t("glue.driver.aggregate.shuffleLocalBytesRead"),
        last.shuffle_bytes_read
    );
    assert_eq!(
        t("glue.driver.aggregate.bytesWritten"),
        last.s3_bytes_written + last.local_bytes_written
    );
    assert_eq!(
        t("glue.driver.aggregate.numCompletedStages"),
        last.completed_stages as u64
    );
    for e in last_execs {
        let id = e.executor;
        assert_eq!(
            t(&format!("glue.{id}.aggregate.shuffleBytesWritten")),
            e.shuffle_bytes_written
        );
    }
    assert!(last.shuffle_bytes_written > 0 && last.input_bytes > 0);

    // ... and the run summary's.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).unwrap();
    let job = &report["job"];
    assert_eq!(
        Some(t("glue.driver.aggregate.shuffleBytesWritten")),
        job["shuffle_bytes_written"].as_u64()
    );
    assert_eq!(
        Some(t("glue.driver.aggregate.numCompletedStages")),
        job["num_stages"].as_u64()
    );
    let succeeded = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::TaskEnd {
                    succeeded: true,
                    ..
                }
            )
        })
        .count() as u64;
    assert_eq!(t("glue.driver.aggregate.numCompletedTasks"), succeeded);
    assert!(total["glue.driver.aggregate.elapsedTime"].as_f64().unwrap() > 0.0);

    // Gauges: memory was used, and some executors were needed.
    let gauges: Vec<&Value> = lines.iter().filter(|l| l["Type"] == "gauge").collect();
    assert!(gauges
        .iter()
        .any(|l| l["glue.driver.memory.used"].as_u64() > Some(0)));
    assert!(gauges.iter().any(|l| {
        l["glue.driver.ExecutorAllocationManager.executors.numberMaxNeededExecutors"].as_u64()
            > Some(0)
    }));
}

/// One `GET /metrics` over a plain socket: the status line and the body.
fn scrape(addr: &str) -> Option<(String, String)> {
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    c.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// `name value` lines of an exposition, by series (name and labels).
fn series(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("series value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn metrics_endpoint_answers_while_the_job_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = shovel();
    // Shuffle on the embedded S3 server with latency: a run of a few
    // seconds to scrape during; samples every 20 ms.
    cmd.args(q80_args(dir.path()))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--write-shuffle-files-to-s3",
            "true",
            "--s3-latency",
            "100ms",
            "--event-log-interval",
            "20ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shovel");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if let Some(rest) = line.strip_prefix("metrics: serving http://") {
                let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the bound address on stderr");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut scrapes = Vec::new();
    let t = Instant::now();
    while child.try_wait().expect("wait").is_none() && t.elapsed() < Duration::from_secs(300) {
        if let Some((status, body)) = scrape(&addr) {
            assert!(status.contains(" 200 "), "{status}");
            if !body.is_empty() {
                scrapes.push(series(&body));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().expect("wait");
    let err = reader.join().unwrap();
    assert!(status.success(), "{err}");
    assert!(
        scrapes.len() >= 2,
        "scraped {} times during the run",
        scrapes.len()
    );
    for name in [
        "shovel_shuffle_written_bytes_total",
        "shovel_shuffle_read_bytes_total",
        "shovel_input_bytes_total",
        "shovel_memory_rss_bytes",
        "shovel_executors_active",
        "shovel_executors_max_needed",
        "shovel_stages_completed_total",
        "shovel_storage_written_bytes_total{storage=\"s3\"}",
        "shovel_executor_cpu_seconds_total{executor=\"1\"}",
    ] {
        assert!(scrapes[0].contains_key(name), "{name}: {:?}", scrapes[0]);
    }
    // Counters never go down between scrapes, and the job moved them.
    for w in scrapes.windows(2) {
        for (k, v) in &w[0] {
            if k.starts_with("shovel_") && k.split('{').next().unwrap().ends_with("_total") {
                assert!(w[1][k] >= *v, "{k} went from {v} to {}", w[1][k]);
            }
        }
    }
    // The job moved them while the endpoint served.
    let last = scrapes.last().unwrap();
    let s3 = "shovel_storage_written_bytes_total{storage=\"s3\"}";
    assert!(last[s3] > scrapes[0][s3], "{:?} then {last:?}", scrapes[0]);
    // The endpoint went away with the job.
    assert!(scrape(&addr).is_none());
}

#[test]
fn metrics_addr_must_be_loopback_and_parsable() {
    for (addr, want) in [
        ("0.0.0.0:9464", "loopback only"),
        ("localhost", "expected IP:PORT"),
    ] {
        let o = shovel()
            .args(["q80", "--sf", "0.01", "--metrics-addr", addr])
            .output()
            .expect("run shovel");
        assert_eq!(o.status.code(), Some(2), "{addr}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--metrics-addr") && err.contains(want),
            "{err}"
        );
    }
}

#[test]
fn rust_log_turns_on_the_binary_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut quiet = shovel();
    quiet.args(q80_args(dir.path())).arg("--quiet");
    let o = run(&mut quiet);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("DEBUG"), "{err}");
    assert!(!err.contains("shuffle backend ready"), "{err}");

    let mut debug = shovel();
    debug
        .args(q80_args(dir.path()))
        .arg("--quiet")
        .env("RUST_LOG", "engine=debug");
    let o = run(&mut debug);
    let err = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("engine::"))
        .collect();
    assert!(
        ours.iter().any(|l| l.contains("shuffle backend ready")),
        "{err}"
    );
    assert!(
        ours.iter().any(|l| l.contains("event recorder finished")),
        "{err}"
    );
}
