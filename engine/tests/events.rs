//! The event log (`--event-log`) of real q80 runs at SF 0.01: it parses,
//! its stage and task events agree with the job summary, and its samples
//! cover the run.

mod common;

use std::path::Path;
use std::time::Duration;

use engine::cli::{Q80Job, Q80Outcome};
use engine::events::{read_event_log, Event, ProcessSample};
use engine::EngineConfig;

/// Runs q80 at SF 0.01 with `config`, writing the event log to `log`.
fn run(config: EngineConfig, log: Option<&Path>, interval: Duration) -> Q80Outcome {
    let job = Q80Job {
        config,
        event_log: log.map(Path::to_path_buf),
        event_log_interval: interval,
        ..Q80Job::default()
    };
    common::run_q80_at(0.01, &job)
}

fn samples(events: &[Event]) -> Vec<(f64, &ProcessSample)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Sample { t_ms, process, .. } => Some((*t_ms, process)),
            _ => None,
        })
        .collect()
}

#[test]
fn event_log_agrees_with_the_summary_and_samples_cover_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.jsonl");
    let config = EngineConfig {
        executors: 2,
        ..EngineConfig::default()
    };
    let out = run(config, Some(&log), Duration::from_millis(10));
    let summary = out.report.job.clone().expect("job summary");
    let events = read_event_log(&log).expect("the log parses");
    assert_eq!(
        events, out.report.events,
        "the file holds what was recorded"
    );
    assert!(
        matches!(events[0], Event::LogStart { .. }),
        "{:?}",
        events[0]
    );

    // Stages: one start and one end each, as many as the summary has.
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(|e| matches!(e, Event::StageStart { .. })),
        summary.num_stages
    );
    assert_eq!(
        count(|e| matches!(e, Event::StageEnd { .. })),
        summary.num_stages
    );
    // Tasks: every attempt started and ended once.
    assert_eq!(
        count(|e| matches!(e, Event::TaskStart { .. })) as u64,
        summary.tasks_run
    );
    assert_eq!(
        count(|e| matches!(e, Event::TaskEnd { .. })) as u64,
        summary.tasks_run
    );
    // Per stage, the successful task ends add up to the summary's bytes and rows.
    for s in &summary.stages {
        let (mut written, mut read, mut rows, mut n) = (0, 0, 0, 0);
        for e in &events {
            if let Event::TaskEnd {
                stage_id,
                succeeded: true,
                shuffle_bytes_written,
                shuffle_bytes_read,
                rows_out,
                ..
            } = e
            {
                if *stage_id == s.stage_id {
                    written += shuffle_bytes_written;
                    read += shuffle_bytes_read;
                    rows += rows_out;
                    n += 1;
                }
            }
        }
        assert_eq!(written, s.shuffle_bytes_written, "stage {}", s.stage_id);
        assert_eq!(read, s.shuffle_bytes_read, "stage {}", s.stage_id);
        assert_eq!(rows, s.rows_out, "stage {}", s.stage_id);
        assert_eq!(n, s.num_tasks, "stage {}", s.stage_id);
        let ends: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::StageEnd {
                    stage_id,
                    shuffle_bytes_written,
                    ..
                } if *stage_id == s.stage_id => Some(*shuffle_bytes_written),
                _ => None,
            })
            .collect();
        assert_eq!(ends, vec![s.shuffle_bytes_written], "stage {}", s.stage_id);
        // Stage end events carry the stage's operators as the summary has them.
        let ops: Vec<Vec<(String, u64)>> = events
            .iter()
            .filter_map(|e| match e {
                Event::StageEnd {
                    stage_id,
                    operators,
                    ..
                } if *stage_id == s.stage_id => Some(
                    operators
                        .iter()
                        .map(|o| (o.name.clone(), o.rows_out))
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        let want: Vec<(String, u64)> = s
            .operators
            .iter()
            .map(|o| (o.name.clone(), o.rows_out))
            .collect();
        assert!(!want.is_empty(), "stage {} has operators", s.stage_id);
        assert_eq!(ops, vec![want], "stage {} operators", s.stage_id);
    }
    // Every task ran on one of the two executors, and both were used.
    let mut used = [false; 2];
    for e in &events {
        if let Event::TaskStart { executor, .. } = e {
            used[*executor] = true;
        }
    }
    assert_eq!(used, [true, true]);

    // Samples cover the run: one before the job started, one after it ended,
    // and some while it ran.
    let job_start = events
        .iter()
        .find_map(|e| matches!(e, Event::JobStart { .. }).then(|| e.t_ms()))
        .expect("job start");
    let job_end = events
        .iter()
        .find_map(|e| match e {
            Event::JobEnd {
                t_ms,
                succeeded,
                tasks_run,
                ..
            } => {
                assert!(*succeeded);
                assert_eq!(*tasks_run, summary.tasks_run);
                Some(*t_ms)
            }
            _ => None,
        })
        .expect("job end");
    let s = samples(&events);
    assert!(s.first().is_some_and(|(t, _)| *t <= job_start), "{s:?}");
    assert!(s.last().is_some_and(|(t, _)| *t >= job_end));
    assert!(s.iter().any(|(t, _)| *t > job_start && *t < job_end));
    assert!(s.windows(2).all(|w| w[0].0 <= w[1].0), "samples in order");
    let (_, last) = s[s.len() - 1];
    // The last sample holds the whole run's counters.
    assert_eq!(last.shuffle_bytes_written, summary.shuffle_bytes_written);
    assert_eq!(
        last.local_bytes_written,
        last.shuffle_bytes_written + last.spill_bytes_local
    );
    assert_eq!(last.completed_stages, summary.num_stages);
    assert_eq!((last.running_tasks, last.pending_tasks), (0, 0));
    assert!(last.cpu_ms > 0.0 && last.rss_bytes > 0, "{last:?}");
    assert!(last.local_disk_free.is_some(), "{last:?}");
    // While it ran, some executor was active and some executors were needed.
    assert!(s.iter().any(|(_, p)| p.active_executors > 0));
    assert!(s.iter().any(|(_, p)| p.max_needed_executors > 0));
    assert!(s
        .iter()
        .any(|(_, p)| p.pool_used > 0 || p.running_tasks > 0));
    // Per executor: the last sample's shuffle bytes add up to the job's.
    let per_exec: u64 = match events
        .iter()
        .rev()
        .find(|e| matches!(e, Event::Sample { .. }))
    {
        Some(Event::Sample { executors, .. }) => {
            assert_eq!(executors.len(), 2);
            executors.iter().map(|e| e.shuffle_bytes_written).sum()
        }
        _ => unreachable!(),
    };
    assert_eq!(per_exec, summary.shuffle_bytes_written);
}
