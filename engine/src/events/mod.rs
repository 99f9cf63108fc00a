//! The event log: what a job did, over time (issue 14's "see the job").
//!
//! ```text
//!  scheduler ──emit(&Event)──▶ dyn EventSink ──▶ EventRecorder ──▶ JSON lines (--event-log)
//!   job/stage/task start+end,        │             │  keeps every event in memory too
//!   re-runs with their reason        │             │  (advice, HTML report)
//!                                    │             ▼
//!                                    │       sampler thread, every `interval` (100 ms):
//!                                    │       Sample { process, executors[] }
//!                                    └─ track(task, Arc<TaskMetrics>): live counters of
//!                                       running attempts, so samples move mid-task
//! ```
//!
//! One JSON object per line, tagged by `"event"` (like Spark's event log);
//! times are `t_ms`, milliseconds since the recorder started. The first line
//! is a [`Event::LogStart`] with the wall-clock start (Unix ms), so a log can
//! be read later (`shovel report EVENTLOG`) without the run.
//!
//! **Samples** carry AWS Glue's five job metrics, for the process and per
//! executor (see [`ProcessSample`] and [`ExecutorSample`] for what each
//! field measures and where it comes from):
//!
//! | Glue metric | fields |
//! | --- | --- |
//! | ETL data movement | `s3_bytes_read/written`, `local_bytes_read/written`, `input_bytes` |
//! | memory profile | `rss_bytes`, `pool_used`, `pool_limit` |
//! | data shuffle | `shuffle_bytes_written/read` |
//! | CPU load | `cpu_ms`, `cpu_load` (process); `cpu_ms` per executor, attributed |
//! | job execution | `active_executors`, `max_needed_executors`, `completed_stages` |
//!
//! Executors live in one process here, so memory is one pool and CPU time
//! is one process figure: an executor's `cpu_ms` is the process's CPU time
//! of each interval split by the share of running tasks it had in it (the
//! attribution Spark's per-executor CPU would make with one JVM per
//! executor). Byte counters of an executor are its tasks' counters, the
//! finished ones plus the live counters of those still running.
//!
//! Ballista's executors are processes of their own: each samples itself
//! into a file the driver's recorder reads ([`remote`]), and the driver's
//! samples carry each executor process's latest figures (its own RSS, CPU
//! time and pool, with the time it took them).
//!
//! The scheduler knows nothing of files or threads: it calls a small
//! [`EventSink`] (none installed: no cost beyond a branch).

pub mod advice;
pub mod emf;
pub mod html;
pub(crate) mod proc;
pub mod prom;
mod recorder;
pub mod remote;

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::metrics::{RetryReason, TaskMetrics, TaskSummary};

pub use advice::{advise, Advice, AdviceThresholds};
pub use emf::EmfWriter;
pub use html::render_html;
pub use prom::PromMetrics;
pub use recorder::{EventObserver, EventRecorder, RecorderOptions};
pub use remote::{ExecutorLine, ExecutorSampler, ExecutorTask, RemoteExecutors, TaskStat};

/// Where the scheduler reports what happens (see the module docs).
/// Implementations must not call back into the scheduler and must be cheap:
/// `emit` runs on the task path.
pub trait EventSink: Send + Sync {
    /// Records one event (its `t_ms` is filled in by the sink: callers pass 0).
    fn emit(&self, event: Event);
    /// Lets the sink read a running attempt's live counters until its
    /// [`Event::TaskEnd`].
    fn track(&self, _task: TaskKey, _metrics: &Arc<TaskMetrics>) {}
}

/// One task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub stage_id: usize,
    pub partition: usize,
    pub attempt: u32,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first line: when the log started, and what wrote it.
    LogStart {
        t_ms: f64,
        unix_ms: u64,
        version: String,
        /// Samples are taken every this many milliseconds.
        interval_ms: f64,
    },
    JobStart {
        t_ms: f64,
        job_id: u64,
        /// `local` or `s3`.
        backend: String,
        executors: usize,
        /// Task slots (`engine.parallelism`) over all executors.
        slots: usize,
        /// Map stages plus the result stage.
        stages: usize,
        memory_limit: u64,
    },
    StageStart {
        t_ms: f64,
        job_id: u64,
        stage_id: usize,
        /// Root operator chain.
        description: String,
        /// `shuffle N (hash 8)` or `result`.
        output: String,
        /// Tasks it runs (after coalescing).
        tasks: usize,
        partitions: usize,
    },
    TaskStart {
        t_ms: f64,
        stage_id: usize,
        partition: usize,
        attempt: u32,
        executor: usize,
    },
    TaskEnd {
        t_ms: f64,
        stage_id: usize,
        partition: usize,
        attempt: u32,
        executor: usize,
        succeeded: bool,
        /// From the slot being granted to the output committed.
        elapsed_ms: f64,
        rows_in: u64,
        bytes_in: u64,
        rows_out: u64,
        bytes_out: u64,
        shuffle_bytes_written: u64,
        shuffle_bytes_read: u64,
        spill_bytes: u64,
        spill_count: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A stage's last task ended (its outputs are all committed).
    StageEnd {
        t_ms: f64,
        job_id: u64,
        stage_id: usize,
        /// From its first task start to its last task end.
        elapsed_ms: f64,
        /// Attempts, successful or not (re-runs included).
        attempts: usize,
        rows_out: u64,
        shuffle_bytes_written: u64,
        shuffle_bytes_read: u64,
        spill_bytes: u64,
        /// The stage's operators in plan order (root first): rows out, own
        /// time and spill, over its successful tasks.
        #[serde(default)]
        operators: Vec<OperatorEnd>,
    },
    /// A task ran again, and why.
    Rerun {
        t_ms: f64,
        /// `task_error`, `fetch_failure` (a lost map output was recomputed),
        /// `refetch` or `executor_lost`.
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage_id: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shuffle_id: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map_id: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        executor: Option<usize>,
        reason: String,
    },
    JobEnd {
        t_ms: f64,
        job_id: u64,
        succeeded: bool,
        elapsed_ms: f64,
        tasks_run: u64,
        tasks_retried: u64,
        tasks_recomputed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Glue's five metrics at one instant (counters are cumulative since
    /// the log started).
    Sample {
        t_ms: f64,
        process: ProcessSample,
        executors: Vec<ExecutorSample>,
    },
}

impl Event {
    /// Milliseconds since the log started.
    pub fn t_ms(&self) -> f64 {
        match self {
            Event::LogStart { t_ms, .. }
            | Event::JobStart { t_ms, .. }
            | Event::StageStart { t_ms, .. }
            | Event::TaskStart { t_ms, .. }
            | Event::TaskEnd { t_ms, .. }
            | Event::StageEnd { t_ms, .. }
            | Event::Rerun { t_ms, .. }
            | Event::JobEnd { t_ms, .. }
            | Event::Sample { t_ms, .. } => *t_ms,
        }
    }

    fn set_t_ms(&mut self, t: f64) {
        match self {
            Event::LogStart { t_ms, .. }
            | Event::JobStart { t_ms, .. }
            | Event::StageStart { t_ms, .. }
            | Event::TaskStart { t_ms, .. }
            | Event::TaskEnd { t_ms, .. }
            | Event::StageEnd { t_ms, .. }
            | Event::Rerun { t_ms, .. }
            | Event::JobEnd { t_ms, .. }
            | Event::Sample { t_ms, .. } => *t_ms = t,
        }
    }

    /// The end of a task attempt, from its summary.
    pub fn task_end(t: &TaskSummary, executor: usize) -> Self {
        Event::TaskEnd {
            t_ms: 0.0,
            stage_id: t.stage_id,
            partition: t.partition,
            attempt: t.attempt,
            executor,
            succeeded: t.succeeded,
            elapsed_ms: t.elapsed_ms,
            rows_in: t.rows_in,
            bytes_in: t.bytes_in,
            rows_out: t.rows_out,
            bytes_out: t.bytes_out,
            shuffle_bytes_written: t.shuffle_bytes_written,
            shuffle_bytes_read: t.shuffle_bytes_read,
            spill_bytes: t.spill_bytes,
            spill_count: t.spill_count,
            error: t.error.clone(),
        }
    }

    /// A re-run, from the scheduler's reason.
    pub fn rerun(r: &RetryReason) -> Self {
        let mut ev = RerunFields::default();
        match r {
            RetryReason::TaskError(e) => {
                ev.kind = "task_error";
                ev.reason = e.clone();
            }
            RetryReason::FetchFailure {
                shuffle_id,
                map_id,
                error,
            } => {
                ev.kind = "fetch_failure";
                ev.shuffle_id = Some(*shuffle_id);
                ev.map_id = Some(*map_id);
                ev.reason = error.clone();
            }
            RetryReason::Refetch {
                stage_id,
                partition,
                error,
            } => {
                ev.kind = "refetch";
                ev.stage_id = Some(*stage_id);
                ev.partition = Some(*partition);
                ev.reason = error.clone();
            }
            RetryReason::ExecutorLost {
                executor,
                stage_id,
                partition,
            } => {
                ev.kind = "executor_lost";
                ev.stage_id = Some(*stage_id);
                ev.partition = Some(*partition);
                ev.executor = Some(*executor);
                ev.reason = format!("executor {executor} was lost");
            }
        }
        Event::Rerun {
            t_ms: 0.0,
            kind: ev.kind.to_string(),
            stage_id: ev.stage_id,
            partition: ev.partition,
            shuffle_id: ev.shuffle_id,
            map_id: ev.map_id,
            executor: ev.executor,
            reason: ev.reason,
        }
    }
}

#[derive(Default)]
struct RerunFields {
    kind: &'static str,
    stage_id: Option<usize>,
    partition: Option<usize>,
    shuffle_id: Option<u32>,
    map_id: Option<u32>,
    executor: Option<usize>,
    reason: String,
}

/// The process at one instant. Byte and request counters are cumulative
/// since the log started (the shuffle manager's counters); gauges are as of
/// the sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    /// Bytes S3 answered / was sent (every S3 request, shuffle and spill).
    pub s3_bytes_read: u64,
    pub s3_bytes_written: u64,
    /// Bytes read from / written to local disk by shuffle and spill.
    pub local_bytes_read: u64,
    pub local_bytes_written: u64,
    /// Bytes tasks read from their sources (scans and shuffle reads).
    pub input_bytes: u64,
    /// Resident set size (`/proc/self/status` VmRSS); 0 where unknown.
    pub rss_bytes: u64,
    /// Bytes reserved in the memory pool, and its limit.
    pub pool_used: u64,
    pub pool_limit: u64,
    /// Stored bytes of committed map outputs, and fetched by readers.
    pub shuffle_bytes_written: u64,
    pub shuffle_bytes_read: u64,
    /// Stored bytes spilled, by place.
    pub spill_bytes_local: u64,
    pub spill_bytes_s3: u64,
    /// Process CPU time (user + system, `/proc/self/stat`).
    pub cpu_ms: f64,
    /// CPU time over wall time since the previous sample, in cores (2.0:
    /// two cores busy).
    pub cpu_load: f64,
    /// S3 requests made, retried, and retried because throttled (503).
    pub s3_requests: u64,
    pub s3_retries: u64,
    pub s3_throttles: u64,
    /// Executors with at least one running task, and allocated.
    pub active_executors: usize,
    pub executors: usize,
    pub running_tasks: usize,
    /// Tasks of started stages that have not run yet.
    pub pending_tasks: usize,
    /// `ceil((running + pending) / slots per executor)`, Glue's "maximum
    /// needed executors".
    pub max_needed_executors: usize,
    pub completed_stages: usize,
    /// Free bytes on the filesystem of the local shuffle/spill directory
    /// (the emptiest one); `None` where unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_disk_free: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_disk_total: Option<u64>,
}

/// One executor at one instant (cumulative counters of its tasks).
///
/// The fields after `cpu_ms` are only set for an executor that is a
/// process of its own (a Ballista executor, see [`remote`]); they default
/// to 0 / absent so logs written before them still parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutorSample {
    pub executor: usize,
    pub running_tasks: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub shuffle_bytes_written: u64,
    pub shuffle_bytes_read: u64,
    pub spill_bytes: u64,
    /// Process CPU time attributed by running-task share (module docs);
    /// for an executor process, that process's own CPU time since it
    /// started sampling.
    pub cpu_ms: f64,
    /// When the executor process took this sample, on the log's time base
    /// (ms since [`Event::LogStart`]): a driver sample carries each
    /// executor's latest, so a value that stops moving is an executor that
    /// stopped (or was killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_ms: Option<f64>,
    /// The executor process's id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid: u32,
    /// The executor process's resident set size.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rss_bytes: u64,
    /// Bytes reserved in the executor's shuffle memory pools.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pool_used: u64,
    /// Bytes the executor's stores answered / were sent, and requests made
    /// (S3, or the local backend's file operations).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub store_bytes_read: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub store_bytes_written: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub store_requests: u64,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Reads an event log written by [`EventRecorder`] (one JSON object per
/// line; blank lines are skipped).
pub fn read_event_log(path: &Path) -> Result<Vec<Event>, String> {
    let f = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot open event log {}: {e}; give the file --event-log wrote",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("reading event log {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev = serde_json::from_str(&line).map_err(|e| {
            format!(
                "event log {} line {}: {e}; is it a file --event-log wrote?",
                path.display(),
                i + 1
            )
        })?;
        out.push(ev);
    }
    Ok(out)
}

/// One operator of a finished stage (see `metrics::OperatorSummary`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorEnd {
    pub index: usize,
    pub depth: usize,
    pub name: String,
    pub rows_out: u64,
    pub elapsed_ms: f64,
    pub spill_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_samples_of_older_logs_still_parse() {
        // A line as logs wrote it before executor processes were sampled.
        let old = r#"{"executor":1,"running_tasks":2,"bytes_in":3,"bytes_out":4,"shuffle_bytes_written":5,"shuffle_bytes_read":6,"spill_bytes":7,"cpu_ms":8.5}"#;
        let e: ExecutorSample = serde_json::from_str(old).unwrap();
        assert_eq!(
            (e.executor, e.cpu_ms, e.t_ms, e.pid, e.rss_bytes),
            (1, 8.5, None, 0, 0)
        );
        // In-process executors still write none of the process fields.
        assert_eq!(serde_json::to_string(&e).unwrap(), old);
    }

    #[test]
    fn events_round_trip_as_tagged_json_lines() {
        let evs = vec![
            Event::rerun(&RetryReason::FetchFailure {
                shuffle_id: 2,
                map_id: 3,
                error: "gone".into(),
            }),
            Event::Sample {
                t_ms: 1.5,
                process: ProcessSample {
                    cpu_load: 1.25,
                    local_disk_free: Some(7),
                    ..Default::default()
                },
                executors: vec![ExecutorSample::default()],
            },
        ];
        for ev in evs {
            let line = serde_json::to_string(&ev).unwrap();
            assert!(!line.contains('\n'));
            let back: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(back, ev, "{line}");
        }
        let line =
            serde_json::to_string(&Event::rerun(&RetryReason::TaskError("x".into()))).unwrap();
        assert!(
            line.starts_with("{\"event\":\"rerun\",\"t_ms\":0.0,\"kind\":\"task_error\""),
            "{line}"
        );
    }
}
