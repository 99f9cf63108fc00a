//! Task, stage and job metrics.
//!
//! Tasks count into lock-free [`TaskMetrics`]; when a task finishes the
//! scheduler snapshots them into a [`TaskSummary`], folds those into
//! [`StageSummary`]s and the [`JobSummary`] the CLI prints and serialises
//! with [`JobSummary::to_json`] (serde: the summaries derive `Serialize`,
//! counters that are internal, such as operator addresses, are skipped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Serialize, Serializer};

/// Counters of one running task attempt.
#[derive(Debug, Default)]
pub struct TaskMetrics {
    /// Rows and bytes read from sources (scans and shuffle reads).
    pub rows_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Rows and bytes the task produced (written to shuffle or returned).
    pub rows_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Stored bytes of committed map output.
    pub shuffle_bytes_written: AtomicU64,
    /// Block bytes fetched from shuffle.
    pub shuffle_bytes_read: AtomicU64,
    /// Bytes operators spilled (agg, join, sort).
    pub spill_bytes: AtomicU64,
    pub spill_count: AtomicU64,
    /// Per-operator counters, keyed by the operator's address in the job's
    /// plan (see [`OperatorMetrics`]).
    pub operators: Mutex<Vec<(usize, Arc<OperatorMetrics>)>>,
}

/// Counters of one operator in one task attempt (DataFusion's
/// `BaselineMetrics` plus spill), counted around each poll of its stream:
/// rows it returned, time inside its polls and task spill bytes written
/// during them. Time and spill include the operator's inputs (polled from
/// inside); the stage summary subtracts the children's
/// ([`StageSummary::finish_operators`]), so each operator keeps its own.
#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub rows_out: AtomicU64,
    pub elapsed_ns: AtomicU64,
    pub spill_bytes: AtomicU64,
}

/// A snapshot of [`OperatorMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OperatorCounts {
    pub rows_out: u64,
    pub elapsed_ns: u64,
    pub spill_bytes: u64,
}

impl TaskMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of the operator at `key` (created on first use).
    pub fn operator(&self, key: usize) -> Arc<OperatorMetrics> {
        let mut ops = self.operators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = ops.iter().find(|(k, _)| *k == key) {
            return Arc::clone(m);
        }
        let m = Arc::new(OperatorMetrics::default());
        ops.push((key, Arc::clone(&m)));
        m
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Why a task ran again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryReason {
    /// The task failed; it is retried.
    TaskError(String),
    /// This map's output was lost or unreadable (a downstream task's fetch
    /// failed, or its executor was lost with it); the map was re-run.
    FetchFailure {
        shuffle_id: u32,
        map_id: u32,
        error: String,
    },
    /// The task could not read a shuffle input (lost or corrupt); it re-ran
    /// once the map outputs it needed were recomputed.
    Refetch {
        stage_id: usize,
        partition: usize,
        error: String,
    },
    /// The attempt was killed because its executor was lost; it was re-run.
    ExecutorLost {
        executor: usize,
        stage_id: usize,
        partition: usize,
    },
}

/// JSON: an object tagged by `kind` (`task_error`, `fetch_failure`,
/// `refetch`, `executor_lost`) with the variant's fields; a task error's
/// message is `error`, as in the other variants.
impl Serialize for RetryReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Json<'a> {
            TaskError {
                error: &'a str,
            },
            FetchFailure {
                shuffle_id: u32,
                map_id: u32,
                error: &'a str,
            },
            Refetch {
                stage_id: usize,
                partition: usize,
                error: &'a str,
            },
            ExecutorLost {
                executor: usize,
                stage_id: usize,
                partition: usize,
            },
        }
        let j = match self {
            RetryReason::TaskError(error) => Json::TaskError { error },
            RetryReason::FetchFailure {
                shuffle_id,
                map_id,
                error,
            } => Json::FetchFailure {
                shuffle_id: *shuffle_id,
                map_id: *map_id,
                error,
            },
            RetryReason::Refetch {
                stage_id,
                partition,
                error,
            } => Json::Refetch {
                stage_id: *stage_id,
                partition: *partition,
                error,
            },
            RetryReason::ExecutorLost {
                executor,
                stage_id,
                partition,
            } => Json::ExecutorLost {
                executor: *executor,
                stage_id: *stage_id,
                partition: *partition,
            },
        };
        j.serialize(s)
    }
}

/// One finished task attempt (JSON: its stage, spill count and operators
/// are left out; the stage's entry carries them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskSummary {
    #[serde(skip)]
    pub stage_id: usize,
    pub partition: usize,
    pub attempt: u32,
    pub succeeded: bool,
    pub rows_in: u64,
    pub bytes_in: u64,
    pub rows_out: u64,
    pub bytes_out: u64,
    pub shuffle_bytes_written: u64,
    pub shuffle_bytes_read: u64,
    pub spill_bytes: u64,
    #[serde(skip)]
    pub spill_count: u64,
    pub elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per-operator counters (inclusive of inputs), by operator address.
    #[serde(skip)]
    pub operators: Vec<(usize, OperatorCounts)>,
}

impl TaskSummary {
    pub fn from_metrics(m: &TaskMetrics) -> Self {
        Self {
            rows_in: TaskMetrics::get(&m.rows_in),
            bytes_in: TaskMetrics::get(&m.bytes_in),
            rows_out: TaskMetrics::get(&m.rows_out),
            bytes_out: TaskMetrics::get(&m.bytes_out),
            shuffle_bytes_written: TaskMetrics::get(&m.shuffle_bytes_written),
            shuffle_bytes_read: TaskMetrics::get(&m.shuffle_bytes_read),
            spill_bytes: TaskMetrics::get(&m.spill_bytes),
            spill_count: TaskMetrics::get(&m.spill_count),
            operators: m
                .operators
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, o)| {
                    let c = OperatorCounts {
                        rows_out: TaskMetrics::get(&o.rows_out),
                        elapsed_ns: TaskMetrics::get(&o.elapsed_ns),
                        spill_bytes: TaskMetrics::get(&o.spill_bytes),
                    };
                    (*k, c)
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// One stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageSummary {
    pub stage_id: usize,
    /// Root operator chain, e.g. `ShuffleRead -> HashJoin -> Aggregate(partial)`.
    pub description: String,
    /// `shuffle N (hash 8)` or `result`.
    pub output: String,
    /// Tasks the stage ran (after coalescing its reduce partitions).
    pub num_tasks: usize,
    /// Partitions its tasks read before coalescing (= `num_tasks` when the
    /// stage was not coalesced).
    pub partitions: usize,
    pub rows_in: u64,
    pub bytes_in: u64,
    pub rows_out: u64,
    pub bytes_out: u64,
    pub shuffle_bytes_written: u64,
    pub shuffle_bytes_read: u64,
    pub spill_bytes: u64,
    pub spill_count: u64,
    /// Wall-clock from the stage's first task start to its last task end.
    pub elapsed_ms: f64,
    /// The stage's operators in plan order (pre-order: the root first),
    /// summed over its successful tasks.
    pub operators: Vec<OperatorSummary>,
    /// Every task attempt (successful and failed).
    pub tasks: Vec<TaskSummary>,
}

/// One operator of a stage, over the stage's successful tasks (JSON: its
/// address and children, which only mean something inside the process,
/// are left out).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorSummary {
    /// Position in the stage's plan, pre-order (0 is the stage's root).
    pub index: usize,
    /// Depth below the root.
    pub depth: usize,
    /// Operator name (`HashJoin`, `Aggregate`, ...).
    pub name: String,
    /// The operator's address in the job's plan (unique within the job).
    #[serde(skip)]
    pub key: usize,
    /// Indices of its inputs.
    #[serde(skip)]
    pub children: Vec<usize>,
    /// Rows it returned.
    pub rows_out: u64,
    /// Time in its own polls (its inputs' excluded), summed over tasks.
    pub elapsed_ms: f64,
    /// Bytes it spilled.
    pub spill_bytes: u64,
}

impl StageSummary {
    /// Adds a successful attempt's counters.
    pub fn absorb(&mut self, t: &TaskSummary) {
        self.rows_in += t.rows_in;
        self.bytes_in += t.bytes_in;
        self.rows_out += t.rows_out;
        self.bytes_out += t.bytes_out;
        self.shuffle_bytes_written += t.shuffle_bytes_written;
        self.shuffle_bytes_read += t.shuffle_bytes_read;
        self.spill_bytes += t.spill_bytes;
        self.spill_count += t.spill_count;
        for (key, c) in &t.operators {
            if let Some(o) = self.operators.iter_mut().find(|o| o.key == *key) {
                o.rows_out += c.rows_out;
                o.elapsed_ms += c.elapsed_ns as f64 / 1e6;
                o.spill_bytes += c.spill_bytes;
            }
        }
    }

    /// Turns the operators' absorbed time and spill, which include their
    /// inputs', into their own: each subtracts its children's (call once,
    /// after the last task).
    pub fn finish_operators(&mut self) {
        let incl: Vec<(f64, u64)> = self
            .operators
            .iter()
            .map(|o| (o.elapsed_ms, o.spill_bytes))
            .collect();
        for o in &mut self.operators {
            let (mut t, mut s) = incl[o.index];
            for c in &o.children {
                t -= incl[*c].0;
                s = s.saturating_sub(incl[*c].1);
            }
            o.elapsed_ms = t.max(0.0);
            o.spill_bytes = s;
        }
    }
}

/// Summary of one job (one `collect`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobSummary {
    pub job_id: u64,
    /// `local` or `s3` (the manager's reliability decides recompute behaviour).
    pub backend: String,
    pub elapsed_ms: f64,
    pub rows_out: u64,
    pub num_stages: usize,
    /// Task attempts started (including retries and recomputations).
    pub tasks_run: u64,
    /// Attempts that re-ran a failed task.
    pub tasks_retried: u64,
    /// Map tasks re-run because their output was lost (fetch failures, or
    /// outputs that went with a lost executor).
    pub tasks_recomputed: u64,
    /// Running attempts killed with a lost executor (each was re-run).
    pub tasks_killed: u64,
    pub retry_reasons: Vec<RetryReason>,
    pub shuffle_bytes_written: u64,
    pub shuffle_bytes_read: u64,
    /// Bytes spilled by operators (agg, join, sort).
    pub spill_bytes: u64,
    pub spill_count: u64,
    /// Bytes spilled by shuffle map-output buffers (from the manager's metrics).
    pub shuffle_spill_bytes: u64,
    /// Peak bytes reserved in the memory pool.
    pub peak_memory: u64,
    pub memory_limit: u64,
    /// Broadcast hash tables built (once per stage, executor and join).
    pub broadcast_builds: u64,
    pub stages: Vec<StageSummary>,
}

impl JobSummary {
    /// Why tasks re-ran, in one line (`None` when none did): counts per
    /// reason, with the first few lost map outputs named.
    pub fn rerun_summary(&self) -> Option<String> {
        let mut killed: std::collections::BTreeMap<usize, usize> = Default::default();
        let mut lost = Vec::new();
        let mut errors = 0usize;
        let mut refetches = 0usize;
        for r in &self.retry_reasons {
            match r {
                RetryReason::ExecutorLost { executor, .. } => {
                    *killed.entry(*executor).or_default() += 1
                }
                RetryReason::FetchFailure {
                    shuffle_id, map_id, ..
                } => lost.push(format!("shuffle {shuffle_id} map {map_id}")),
                RetryReason::Refetch { .. } => refetches += 1,
                RetryReason::TaskError(_) => errors += 1,
            }
        }
        let mut parts = Vec::new();
        for (e, n) in killed {
            parts.push(format!("{n} killed with lost executor {e}"));
        }
        if !lost.is_empty() {
            let shown = lost.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
            let more = if lost.len() > 4 { ", ..." } else { "" };
            parts.push(format!(
                "{} map output(s) lost or corrupt, recomputed ({shown}{more})",
                lost.len()
            ));
        }
        if refetches > 0 {
            parts.push(format!(
                "{refetches} re-read their input after the recompute"
            ));
        }
        if errors > 0 {
            parts.push(format!("{errors} retried after task errors"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Total spilled bytes (operators plus shuffle buffers).
    pub fn total_spill_bytes(&self) -> u64 {
        self.spill_bytes + self.shuffle_spill_bytes
    }

    /// Serialises to JSON (one line; times in milliseconds at full
    /// precision, non-finite ones as `null`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JobSummary always serialises (string keys only)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut j = JobSummary {
            backend: "local".into(),
            ..Default::default()
        };
        j.retry_reasons
            .push(RetryReason::TaskError("boom \"x\"".into()));
        j.stages.push(StageSummary {
            description: "Scan".into(),
            tasks: vec![TaskSummary::default()],
            ..Default::default()
        });
        let s = j.to_json();
        assert!(s.starts_with("{\"job_id\":0,\"backend\":\"local\""), "{s}");
        assert!(s.contains("boom \\\"x\\\""));
        assert!(s.ends_with("]}]}"), "{s}");
    }

    #[test]
    fn json_keeps_full_precision_and_leaves_internals_out() {
        let j = JobSummary {
            elapsed_ms: 1.234_567_891,
            stages: vec![StageSummary {
                elapsed_ms: f64::NAN,
                operators: vec![OperatorSummary {
                    name: "Scan".into(),
                    key: 0xdead,
                    children: vec![1],
                    elapsed_ms: 0.000_125,
                    ..Default::default()
                }],
                tasks: vec![
                    TaskSummary::default(),
                    TaskSummary {
                        error: Some("boom".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = j.to_json();
        // The operator's keys in the order they always had; no address.
        assert!(
            json.contains(
                "\"operators\":[{\"index\":0,\"depth\":0,\"name\":\"Scan\",\"rows_out\":0,\
                 \"elapsed_ms\":0.000125,\"spill_bytes\":0}]"
            ),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["elapsed_ms"], 1.234_567_891);
        let stage = &v["stages"][0];
        assert!(stage["elapsed_ms"].is_null(), "not finite: null");
        assert!(stage["tasks"][0].get("error").is_none());
        assert_eq!(stage["tasks"][1]["error"], "boom");
        assert!(stage["tasks"][0].get("stage_id").is_none());
    }

    #[test]
    fn rerun_summary_counts_each_reason() {
        let mut j = JobSummary::default();
        assert_eq!(j.rerun_summary(), None);
        for p in [1, 3] {
            j.retry_reasons.push(RetryReason::ExecutorLost {
                executor: 1,
                stage_id: 4,
                partition: p,
            });
        }
        for m in 0..6 {
            j.retry_reasons.push(RetryReason::FetchFailure {
                shuffle_id: 2,
                map_id: m,
                error: "gone".into(),
            });
        }
        j.retry_reasons.push(RetryReason::TaskError("boom".into()));
        j.retry_reasons.push(RetryReason::Refetch {
            stage_id: 5,
            partition: 0,
            error: "gone".into(),
        });
        assert_eq!(
            j.rerun_summary().as_deref(),
            Some(
                "2 killed with lost executor 1; 6 map output(s) lost or corrupt, recomputed \
                 (shuffle 2 map 0, shuffle 2 map 1, shuffle 2 map 2, shuffle 2 map 3, ...); \
                 1 re-read their input after the recompute; 1 retried after task errors"
            )
        );
        let json = j.to_json();
        assert!(
            json.contains(
                "{\"kind\":\"executor_lost\",\"executor\":1,\"stage_id\":4,\"partition\":1}"
            ),
            "{json}"
        );
    }
}
