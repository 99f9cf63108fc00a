//! The event log and HTML report of a Ballista run cover its executor
//! processes (issue 14: "with Ballista, each executor process's samples
//! arrive in the same log"; `engine/src/events/remote.rs`).
//!
//! One q80 run at SF 0.01 on a 2-executor local cluster with `--event-log`:
//! the log parses; every driver sample after the executors started carries
//! one sample per executor process (distinct ids, its pid, RSS above 0,
//! times inside the run); each executor's last shuffle figures agree with
//! the summary's (its stats file); its committed tasks are task events (the
//! timeline); the HTML report draws a memory and a CPU line per executor
//! process; the `--report` JSON stays valid. Without the executors' samples
//! every one of these fails.

#![cfg(feature = "ballista")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::{golden, run_q80_at};
use engine::cli::{Q80Job, QueryEngine};
use engine::events::{read_event_log, render_html, Event, ExecutorSample};
use engine::{EngineConfig, ShuffleBackend};

/// The `shovel` binary the cluster runs: `SHOVEL_TEST_BIN` when set (a copy
/// that a concurrent build cannot replace mid-run), else this build's.
fn shovel() -> PathBuf {
    std::env::var_os("SHOVEL_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shovel")))
}

#[test]
fn ballista_event_log_has_each_executor_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    let job = Q80Job {
        config: EngineConfig {
            backend: ShuffleBackend::Local,
            executors: 2,
            ..EngineConfig::default()
        },
        engine: QueryEngine::Ballista,
        shovel_exe: Some(shovel()),
        local_dirs: vec![dir.path().join("shuffle")],
        event_log: Some(log.clone()),
        ..Q80Job::default()
    };
    let out = run_q80_at(0.01, &job);
    assert!(out.csv == golden("q80_sf0.01.csv"), "differs from golden");
    let summary = out.report.ballista.as_ref().expect("a Ballista summary");
    assert_eq!(summary.executors.len(), 2, "{}", summary.text());

    let events = read_event_log(&log).expect("the log parses");
    assert_eq!(
        events, out.report.events,
        "the file holds what the run recorded"
    );
    let end_ms = events.iter().map(Event::t_ms).fold(0.0, f64::max);
    let samples: Vec<(f64, &[ExecutorSample])> = events
        .iter()
        .filter_map(|e| match e {
            Event::Sample {
                t_ms, executors, ..
            } => Some((*t_ms, executors.as_slice())),
            _ => None,
        })
        .collect();
    assert!(samples.len() >= 5, "{} samples", samples.len());

    // Per executor: its samples' times, and its latest sample.
    let mut times: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    let mut last: BTreeMap<usize, &ExecutorSample> = BTreeMap::new();
    for (t, execs) in &samples {
        let ids: BTreeSet<usize> = execs.iter().map(|e| e.executor).collect();
        assert_eq!(ids.len(), execs.len(), "one sample per executor: {execs:?}");
        for e in *execs {
            // Samples taken before the cluster started (the recorder starts
            // first) carry the in-process executors: no time, no process.
            let Some(at) = e.t_ms else {
                assert!(e.rss_bytes == 0 && e.pid == 0, "{e:?}");
                assert!(
                    last.is_empty(),
                    "an executor sample without its time: {e:?}"
                );
                continue;
            };
            assert!(
                at >= 0.0 && at <= *t + 50.0 && at <= end_ms + 50.0,
                "executor {} sampled at {at} ms, driver sample at {t} ms, run ended at {end_ms} ms",
                e.executor
            );
            assert!(e.rss_bytes > 0 && e.pid > 0, "{e:?}");
            times.entry(e.executor).or_default().insert(at as u64);
            last.insert(e.executor, e);
        }
    }
    assert_eq!(
        last.keys().copied().collect::<Vec<_>>(),
        vec![0, 1],
        "samples from both executor processes"
    );
    for (id, t) in &times {
        assert!(t.len() >= 3, "executor {id} sampled {} times", t.len());
    }
    let last_sample = samples.last().expect("samples").1;
    assert_eq!(last_sample.len(), 2, "the last sample has both executors");
    for (i, stats) in summary.executors.iter().enumerate() {
        let e = last[&i];
        assert_eq!(e.pid, stats.pid, "executor {i}'s pid");
        assert_eq!(
            (e.shuffle_bytes_written, e.shuffle_bytes_read),
            (stats.shuffle_bytes_written, stats.shuffle_bytes_read),
            "executor {i}: last sample vs summary\n{}",
            summary.text()
        );
        assert!(e.shuffle_bytes_written > 0, "executor {i} wrote nothing");
    }
    // The process sample adds the executors up.
    let Some(Event::Sample { process, .. }) = events
        .iter()
        .rev()
        .find(|e| matches!(e, Event::Sample { .. }))
    else {
        unreachable!()
    };
    let written: u64 = summary
        .executors
        .iter()
        .map(|e| e.shuffle_bytes_written)
        .sum();
    assert_eq!(process.shuffle_bytes_written, written);
    assert_eq!(process.executors, 2);

    // Committed tasks are task events on their executor (the timeline).
    let mut ends: BTreeMap<usize, usize> = BTreeMap::new();
    let mut starts = 0;
    for e in &events {
        match e {
            Event::TaskStart { .. } => starts += 1,
            Event::TaskEnd {
                executor,
                t_ms,
                elapsed_ms,
                ..
            } => {
                assert!(*t_ms <= end_ms && *elapsed_ms >= 0.0);
                *ends.entry(*executor).or_default() += 1;
            }
            _ => {}
        }
    }
    for (i, stats) in summary.executors.iter().enumerate() {
        assert_eq!(
            ends.get(&i).copied().unwrap_or(0),
            stats.tasks.len(),
            "executor {i}'s task events"
        );
    }
    assert_eq!(starts, ends.values().sum::<usize>());
    let stages = events
        .iter()
        .filter(|e| matches!(e, Event::StageEnd { .. }))
        .count();
    assert_eq!(stages as u64, summary.stages, "a stage end per stage");

    // The HTML report draws each executor process.
    let html = render_html(&events, &out.report.advice, "ballista").expect("renders");
    let figure = |id: &str| {
        let start = html
            .find(&format!("<figure id=\"chart-{id}\">"))
            .unwrap_or_else(|| panic!("no {id} chart"));
        let end = start + html[start..].find("</figure>").expect("figure ends");
        html[start..end].to_string()
    };
    let memory = figure("memory");
    let cpu = figure("cpu");
    for i in 0..2 {
        assert!(
            memory.contains(&format!("executor {i} RSS")),
            "memory chart lacks executor {i}"
        );
        assert!(
            cpu.contains(&format!("executor {i}")),
            "CPU chart lacks executor {i}"
        );
    }
    assert!(figure("timeline").contains("executor 1"));
    assert!(html.contains("<table id=\"stages\">"));

    // The --report JSON stays valid, with the executors' events in it.
    let json: serde_json::Value =
        serde_json::from_str(&out.report.to_json()).expect("--report JSON parses");
    assert!(json.get("ballista").is_some(), "{json}");
}
