//! `shovel q80 --engine ballista`: q80 on Apache Ballista, with a scheduler
//! and executor processes started on 127.0.0.1 and every shuffle stage going
//! through Shovel.
//!
//! - Byte-identical to the golden CSVs at SF 0.01 and 0.1, with local
//!   shuffle (a directory the executors share) and with S3 (the embedded
//!   server, and `shovel s3-server` as a process of its own), broadcast
//!   joins on and off.
//! - The executors' work directories hold no file (Ballista's own shuffle
//!   writes its outputs there), every stage's output went through Shovel
//!   (bytes written and read per executor), the only Arrow Flight fetches
//!   are the client's, of the last stage, served from Shovel's store (none
//!   between executors), and nothing is left: no shuffle object, no process.
//! - `kill -9` of an executor mid-query (`--lose-executor`, the executor
//!   SIGKILLs itself at a repeatable point): the answer is right, and the
//!   tasks Ballista re-ran are counted.
//! - `kill -9` of the driver mid-query: every process it started (the
//!   scheduler, the executors, the S3 server) stops by itself.

#![cfg(feature = "ballista")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cache_dir, files_under, golden, run_q80_at};
use engine::cli::report::BallistaSummary;
use engine::cli::run::ExecutorLossPlan;
use engine::cli::{Q80Job, Q80Outcome, QueryEngine};
use engine::events::{Event, ExecutorSample};
use engine::{EngineConfig, ShuffleBackend};

/// The `shovel` binary the cluster runs: `SHOVEL_TEST_BIN` when set (a copy
/// that a concurrent build cannot replace mid-run), else this build's.
fn shovel() -> PathBuf {
    std::env::var_os("SHOVEL_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shovel")))
}

fn job(backend: ShuffleBackend, broadcast: bool) -> Q80Job {
    Q80Job {
        config: EngineConfig {
            backend,
            executors: 2,
            broadcast_threshold: if broadcast {
                EngineConfig::default().broadcast_threshold
            } else {
                0
            },
            ..EngineConfig::default()
        },
        engine: QueryEngine::Ballista,
        shovel_exe: Some(shovel()),
        ..Q80Job::default()
    }
}

fn summary(out: &Q80Outcome) -> &BallistaSummary {
    out.report
        .ballista
        .as_ref()
        .unwrap_or_else(|| panic!("no Ballista summary: {}", out.report.to_json()))
}

/// True if a process with this pid exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.contains(") Z "),
        Err(_) => false,
    }
}

/// What every run must show: two executors that both shuffled through
/// Shovel, no file in their work directories, no process left.
fn check_cluster(out: &Q80Outcome, executors: usize) {
    let s = summary(out);
    assert_eq!(s.executors.len(), executors, "{}", s.text());
    let written: u64 = s.executors.iter().map(|e| e.shuffle_bytes_written).sum();
    let read: u64 = s.executors.iter().map(|e| e.shuffle_bytes_read).sum();
    assert!(
        written > 0 && read > 0,
        "stages went through Shovel: {}",
        s.text()
    );
    assert_eq!(s.exited_early, Vec::<String>::new(), "{}", s.text());
    assert!(
        s.executors.iter().all(|e| !e.tasks.is_empty()),
        "every executor ran tasks: {}",
        s.text()
    );
    assert!(s.stages >= 2, "{}", s.text());
    // Ballista's own writer puts every output in <work dir>/<job>/...:
    // with Shovel, every stage (the last one and broadcast sides too) is
    // in Shovel's store and nothing is there.
    assert_eq!(s.work_dir_files, Vec::<String>::new(), "{}", s.text());
    // No executor fetched from another over Flight: the only fetches are
    // the client's, of the job's last stage, served from the store.
    let from_work_dir: u64 = s
        .executors
        .iter()
        .map(|e| e.flight_fetches_from_work_dir)
        .sum();
    let from_store: u64 = s
        .executors
        .iter()
        .map(|e| e.flight_fetches_from_store)
        .sum();
    assert_eq!(from_work_dir, 0, "{}", s.text());
    assert!(
        from_store > 0,
        "the client fetched the results: {}",
        s.text()
    );
    let last_stage = s
        .executors
        .iter()
        .flat_map(|e| e.tasks.iter().map(|t| t.stage))
        .max();
    for e in &s.executors {
        assert!(
            e.flight_stages.iter().all(|st| Some(*st) == last_stage),
            "Flight served stages {:?}, the last stage is {last_stage:?}: {}",
            e.flight_stages,
            s.text()
        );
    }
    for e in &s.executors {
        assert!(
            e.pid > 0 && !alive(e.pid),
            "executor pid {} left running",
            e.pid
        );
    }
    // S3 without an endpoint: the run started `shovel s3-server` as a
    // process of its own (the executors reached it over HTTP) and stopped it.
    if out.report.backend_kind == "s3" {
        let server = s
            .s3_server
            .as_ref()
            .unwrap_or_else(|| panic!("S3 run without an S3 server process: {}", s.text()));
        assert!(server.pid > 0 && !alive(server.pid), "{}", s.text());
        assert!(server.peak_rss_bytes > 0, "{}", s.text());
        assert!(
            out.report.backend.starts_with("S3 server process"),
            "{}",
            out.report.backend
        );
    }
    assert!(s.scheduler_peak_rss_bytes > 0, "{}", s.text());
    assert!(out.report.render_text().contains("ballista: scheduler"));
    assert!(out.report.to_json().contains(r#""ballista":{"#));
}

#[test]
fn sf0_01_local_two_executors_matches_golden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = job(ShuffleBackend::Local, true);
    j.local_dirs = vec![dir.path().to_path_buf()];
    let out = run_q80_at(0.01, &j);
    assert!(
        out.csv == golden("q80_sf0.01.csv"),
        "differs from golden:\n{}",
        out.csv
    );
    check_cluster(&out, 2);
    assert_eq!(summary(&out).recomputed_tasks, 0);
    assert_eq!(
        files_under(dir.path()),
        Vec::<PathBuf>::new(),
        "shuffle files left"
    );
}

#[test]
fn sf0_01_s3_broadcast_off_matches_golden() {
    let out = run_q80_at(0.01, &job(ShuffleBackend::S3, false));
    assert!(
        out.csv == golden("q80_sf0.01.csv"),
        "differs from golden:\n{}",
        out.csv
    );
    check_cluster(&out, 2);
    let s = summary(&out);
    assert!(
        s.executors.iter().all(|e| e.store_requests > 0),
        "every executor talked to S3: {}",
        s.text()
    );
}

#[test]
fn sf0_1_s3_and_local_match_golden() {
    for (backend, broadcast) in [(ShuffleBackend::S3, true), (ShuffleBackend::Local, false)] {
        let out = run_q80_at(0.1, &job(backend, broadcast));
        assert!(
            out.csv == golden("q80_sf0.1.csv"),
            "{backend:?} broadcast {broadcast}: differs from golden"
        );
        check_cluster(&out, 2);
    }
}

/// q80 at SF 0.01 with executor 1 killed after its first committed stage:
/// the golden answer, the victim committed outputs first and is gone, and
/// the summary's recompute count is what the executors' records show
/// (commits under a stage attempt above 0).
fn killed_run(mut j: Q80Job) -> Q80Outcome {
    j.lose_executor = Some(ExecutorLossPlan {
        executor: 1,
        after_stages: Some(1),
    });
    let out = run_q80_at(0.01, &j);
    assert!(
        out.csv == golden("q80_sf0.01.csv"),
        "differs from golden:\n{}",
        out.csv
    );
    let s = summary(&out);
    assert_eq!(s.lost_executors, vec![1]);
    assert!(
        s.exited_early.len() == 1 && s.exited_early[0].starts_with("executor 1 "),
        "only the victim exited early: {}",
        s.text()
    );
    assert!(
        !s.executors[1].tasks.is_empty(),
        "the victim committed outputs first: {}",
        s.text()
    );
    let rerun = s
        .executors
        .iter()
        .flat_map(|e| &e.tasks)
        .filter(|t| t.stage_attempt > 0)
        .count() as u64;
    assert_eq!(s.recomputed_tasks, rerun, "{}", s.text());
    for e in &s.executors {
        assert!(e.pid > 0 && !alive(e.pid), "executor pid {} left", e.pid);
    }
    // The victim's samples reach the event log up to its death
    // (engine/src/events/remote.rs), and stop there.
    let victim: Vec<&ExecutorSample> = out
        .report
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Sample { executors, .. } => executors
                .iter()
                .find(|x| x.executor == 1 && x.t_ms.is_some()),
            _ => None,
        })
        .collect();
    let last = victim
        .last()
        .unwrap_or_else(|| panic!("no samples of the killed executor"));
    assert_eq!(last.pid, s.executors[1].pid);
    let end = out
        .report
        .events
        .iter()
        .map(Event::t_ms)
        .fold(0.0, f64::max);
    let died = last.t_ms.unwrap_or_default();
    assert!(
        died > 0.0 && died < end - 3000.0,
        "the killed executor's last sample at {died} ms, the run ended at {end} ms"
    );
    out
}

#[test]
fn executor_killed_mid_query_still_gives_the_golden_answer() {
    let out = killed_run(job(ShuffleBackend::S3, false));
    let s = summary(&out);
    // Ballista's scheduler agrees with the executors' records: the commits
    // under a new stage attempt are the committed outputs it dropped, plus
    // the whole re-run of any running stage it rolled back.
    let dropped_and_redone = s
        .executors
        .iter()
        .flat_map(|e| &e.tasks)
        .filter(|t| t.stage_attempt > 0 && !s.scheduler_rolled_back_stages.contains(&t.stage))
        .count() as u64;
    assert_eq!(
        dropped_and_redone,
        s.scheduler_reset_committed,
        "{}",
        s.text()
    );
    // The survivor finished the job: it committed every stage the victim
    // did not finish, and the outputs the victim committed before dying
    // were read from S3 (the answer is right).
    assert!(
        s.executors[0].tasks.len() > s.executors[1].tasks.len(),
        "{}",
        s.text()
    );
    let from_work_dir: u64 = s
        .executors
        .iter()
        .map(|e| e.flight_fetches_from_work_dir)
        .sum();
    assert_eq!(from_work_dir, 0, "{}", s.text());
    assert!(out
        .report
        .render_text()
        .contains("re-run after executor loss"));
}

/// The baseline: Ballista's own shuffle (work directories and Flight) with
/// the same kill. The answer is right too, but the shuffle crossed between
/// executors over Flight, and the stages that read the dead executor's
/// files failed their fetches and ran again.
#[test]
#[ignore = "Ballista 55's own shuffle lost rows after this kill in 2 of ~12 runs of this file \
            under load (store channel sums too low; README, executor loss): an upstream bug, \
            run with --ignored"]
fn ballistas_own_shuffle_recovers_by_recompute() {
    let mut j = job(ShuffleBackend::Local, false);
    j.ballista_native_shuffle = true;
    let out = killed_run(j);
    let s = summary(&out);
    assert!(!s.work_dir_files.is_empty(), "{}", s.text());
    let from_work_dir: u64 = s
        .executors
        .iter()
        .map(|e| e.flight_fetches_from_work_dir)
        .sum();
    assert!(from_work_dir > 0, "{}", s.text());
}

/// `shovel s3-server` as its own process and `shovel q80 --engine ballista`
/// as a process: the golden answer on stdout, and no object left in the
/// server's directory but the bucket.
#[test]
fn binary_with_s3_server_process_matches_golden() {
    let data = engine::tpcds::ensure_data(0.01, &cache_dir()).expect("SF 0.01");
    let s3dir = tempfile::tempdir().expect("tempdir");
    let mut server = Command::new(shovel())
        .args(["s3-server", "--bind", "127.0.0.1:0", "--dir"])
        .arg(s3dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start shovel s3-server");
    let banner = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("banner");
        line
    };
    let usage = banner
        .split("use it with: ")
        .nth(1)
        .expect("usage")
        .trim()
        .to_string();
    let mut cmd = Command::new(shovel());
    let mut words = usage.split_whitespace();
    for w in words.by_ref() {
        match w.split_once('=') {
            Some((k, v)) => {
                cmd.env(k, v);
            }
            None => break,
        }
    }
    let args: Vec<&str> = words.collect();
    let out = cmd
        .args(&args)
        .args(["--engine", "ballista", "--executors", "2", "--data"])
        .arg(&data)
        .output()
        .expect("run shovel q80");
    let _ = server.kill();
    let _ = server.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "args {args:?}\n{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout) == golden("q80_sf0.01.csv"),
        "differs from golden; {stderr}"
    );
    assert!(stderr.contains("ballista: scheduler"), "{stderr}");
    let left: Vec<PathBuf> = files_under(s3dir.path())
        .into_iter()
        .filter(|p| !is_bucket_metadata(p))
        .collect();
    assert!(left.is_empty(), "objects left: {left:?}");
}

fn is_bucket_metadata(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

#[test]
fn ballista_flags_are_checked_before_work_starts() {
    for (args, want) in [
        (
            vec!["q80", "--cluster", "127.0.0.1:1"],
            "--engine ballista only",
        ),
        (
            vec!["q80", "--engine", "ballista", "--keep-shuffle"],
            "--keep-shuffle",
        ),
        (
            vec![
                "q80",
                "--engine",
                "ballista",
                "--cluster",
                "127.0.0.1:1",
                "--lose-executor",
                "1",
            ],
            "drop --cluster or --lose-executor",
        ),
        (
            vec!["ballista", "scheduler", "--bind", "10.1.2.3:5"],
            "not a loopback",
        ),
        (vec!["q80", "--ballista-shuffle"], "--engine ballista only"),
        (
            vec![
                "q80",
                "--engine",
                "ballista",
                "--cluster",
                "127.0.0.1:1",
                "--ballista-shuffle",
            ],
            "drop --cluster or --ballista-shuffle",
        ),
        (
            // The driver's own S3 server would not be the executors' store.
            vec![
                "q80",
                "--engine",
                "ballista",
                "--cluster",
                "127.0.0.1:1",
                "--shuffle",
                "s3",
                "--sf",
                "0.01",
            ],
            "needs the store its executors use",
        ),
    ] {
        let out = Command::new(shovel()).args(&args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(shovel())
        .args(["s3-server", "--dir"])
        .arg(dir.path())
        .env("SHOVEL_PARENT_PID", "driver")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SHOVEL_PARENT_PID"), "{stderr}");
}

/// The pids whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, ...
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if rest.split_whitespace().nth(1) == Some(pid.to_string().as_str()) {
            out.push(child);
        }
    }
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// `kill -9` of `shovel q80 --engine ballista --shuffle s3` once its
/// processes are up: the scheduler, both executors and the S3 server (a
/// process of its own, slowed to keep the query running) notice that their
/// parent is gone and stop.
#[test]
fn driver_killed_mid_query_leaves_no_process() {
    let data = engine::tpcds::ensure_data(0.01, &cache_dir()).expect("SF 0.01");
    // A killed driver cannot remove its temp dirs (cluster, S3 server,
    // local shuffle): they go in one the test removes.
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut driver = Command::new(shovel())
        .env("TMPDIR", tmp.path())
        .args(["q80", "--engine", "ballista", "--executors", "2"])
        .args(["--shuffle", "s3", "--s3-latency", "100ms", "--data"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start shovel q80");
    let pid = driver.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let kids = loop {
        let kids = children_of(pid);
        let lines: Vec<String> = kids.iter().map(|k| cmdline(*k)).collect();
        let executors = lines
            .iter()
            .filter(|l| l.contains("ballista executor"))
            .count();
        let servers = lines.iter().filter(|l| l.contains(" s3-server ")).count();
        let schedulers = lines
            .iter()
            .filter(|l| l.contains("ballista scheduler"))
            .count();
        if (executors, servers, schedulers) == (2, 1, 1) {
            break kids;
        }
        if let Ok(Some(st)) = driver.try_wait() {
            panic!("the driver ended ({st}) before its processes were seen: {lines:?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes never all up: {lines:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Let the query get going, then kill the driver outright.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        driver.try_wait().expect("wait").is_none(),
        "the query ended before the kill; slow it down more"
    );
    driver.kill().expect("kill -9 the driver");
    let _ = driver.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left: Vec<(u32, String)> = kids
            .iter()
            .filter(|k| alive(**k))
            .map(|k| (*k, cmdline(*k)))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left after the driver died: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
