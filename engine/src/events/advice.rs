//! Tuning advice from an event log: the lessons AWS Glue users draw from
//! its job metrics, each naming the stage and the figure that triggered it.
//!
//! | rule | triggers when | advice |
//! | --- | --- | --- |
//! | `memory` | the pool peaked at ≥ `memory_fraction` (90%) of its limit, or spill ≥ `spill_fraction` (10%) of shuffle bytes written (and ≥ `spill_min_bytes`) | raise `--memory`, or `--spill-to-s3` |
//! | `executors` | max needed executors ≥ `executors_factor` (2×) allocated for ≥ half the job **and** ≥ `backlog_ms` (10 s) | more `--executors` / `--parallelism` |
//! | `skew` | in a stage with ≥ 4 tasks, the task that read the most read ≥ `skew_factor` (4×) the median input bytes **and** ≥ `skew_min_bytes` (256 MiB), **and** took ≥ `skew_min_ms` (1 s) longer than the median task | a better key / salting |
//! | `small_files` | a stage wrote ≥ `small_objects_min` (64) shuffle objects under `small_object_bytes` (1 MiB) | fewer `--partitions`, coalescing |
//! | `s3_throttling` | throttled retries ≥ `throttle_fraction` (1%) of S3 requests | more hash prefixes (`s3.hash_prefixes`) |
//! | `local_disk` | the local disk's free space fell under `disk_free_fraction` (10%) | shuffle and spill to S3 |
//!
//! Thresholds are chosen so that a clean run gives no advice: the time
//! thresholds (`backlog_ms`, `skew_min_ms`) keep millisecond-scale noise
//! of small runs out, since adding executors or re-keying only pays off
//! when seconds are at stake (an executor takes seconds to start).
//!
//! Skew is decided on data first, the way Spark's adaptive execution
//! decides a partition is skewed (`spark.sql.adaptive.skewJoin.*`: larger
//! than `skewedPartitionFactor` (5) × the median partition size **and**
//! than `skewedPartitionThresholdInBytes` (256 MB)): the ratio alone would
//! call a 16 KiB partition among empty ones skewed, and task time alone
//! measures the machine as much as the data (a task descheduled on a busy
//! host looks "skewed"). Time is checked too, on the same task, as what
//! the skew costs: it took `skew_min_ms` longer than the median task (skew
//! that costs no time needs no advice). Not as a ratio: once the data ratio
//! holds it adds nothing, and it is what noise breaks. On a busy 2-core
//! machine the small tasks that share the cores with the hot one stretch
//! with it (a join's hot task of 790k rows took 267 ms while the median
//! task, of 1.7k rows, took 144 ms).

use serde::{Deserialize, Serialize};

use super::{Event, ProcessSample};

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// `memory`, `executors`, `skew`, `small_files`, `s3_throttling`, `local_disk`.
    pub rule: String,
    /// The stage the figure comes from (none for whole-job figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<usize>,
    /// The figure that triggered it, in words.
    pub figure: String,
    /// What to do.
    pub advice: String,
}

impl std::fmt::Display for Advice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.figure, self.advice)
    }
}

/// When each rule triggers (see the module docs for the defaults' reasons).
#[derive(Debug, Clone, PartialEq)]
pub struct AdviceThresholds {
    pub memory_fraction: f64,
    pub spill_fraction: f64,
    pub spill_min_bytes: u64,
    pub executors_factor: f64,
    pub backlog_ms: f64,
    pub skew_factor: f64,
    pub skew_min_ms: f64,
    pub skew_min_bytes: u64,
    pub small_object_bytes: u64,
    pub small_objects_min: usize,
    pub throttle_fraction: f64,
    pub disk_free_fraction: f64,
}

impl Default for AdviceThresholds {
    fn default() -> Self {
        Self {
            memory_fraction: 0.9,
            spill_fraction: 0.1,
            spill_min_bytes: 1 << 20,
            executors_factor: 2.0,
            backlog_ms: 10_000.0,
            skew_factor: 4.0,
            skew_min_ms: 1_000.0,
            skew_min_bytes: 256 << 20,
            small_object_bytes: 1 << 20,
            small_objects_min: 64,
            throttle_fraction: 0.01,
            disk_free_fraction: 0.1,
        }
    }
}

/// A successful task attempt, as the rules see it.
struct Task {
    stage_id: usize,
    elapsed_ms: f64,
    rows_in: u64,
    bytes_in: u64,
    shuffle_bytes_written: u64,
    spill_bytes: u64,
}

/// The advice `events` call for, in rule order.
pub fn advise(events: &[Event], t: &AdviceThresholds) -> Vec<Advice> {
    let samples: Vec<(f64, &ProcessSample)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Sample { t_ms, process, .. } => Some((*t_ms, process)),
            _ => None,
        })
        .collect();
    let tasks: Vec<Task> = events
        .iter()
        .filter_map(|e| match e {
            Event::TaskEnd {
                stage_id,
                succeeded: true,
                elapsed_ms,
                rows_in,
                bytes_in,
                shuffle_bytes_written,
                spill_bytes,
                ..
            } => Some(Task {
                stage_id: *stage_id,
                elapsed_ms: *elapsed_ms,
                rows_in: *rows_in,
                bytes_in: *bytes_in,
                shuffle_bytes_written: *shuffle_bytes_written,
                spill_bytes: *spill_bytes,
            }),
            _ => None,
        })
        .collect();
    let map_stages: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::StageStart {
                stage_id, output, ..
            } if output.starts_with("shuffle") => Some(*stage_id),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    memory(&samples, &tasks, t, &mut out);
    executors(&samples, events, t, &mut out);
    skew(&tasks, t, &mut out);
    small_files(&tasks, &map_stages, t, &mut out);
    throttling(&samples, events, t, &mut out);
    local_disk(&samples, &tasks, t, &mut out);
    out
}

/// The stage with the largest `f` over its tasks.
fn top_stage(tasks: &[Task], f: impl Fn(&Task) -> u64) -> Option<(usize, u64)> {
    let mut by: std::collections::BTreeMap<usize, u64> = Default::default();
    for task in tasks {
        *by.entry(task.stage_id).or_default() += f(task);
    }
    by.into_iter()
        .filter(|(_, v)| *v > 0)
        .max_by_key(|(_, v)| *v)
}

fn pct(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        100.0 * a / b
    } else {
        0.0
    }
}

fn memory(
    samples: &[(f64, &ProcessSample)],
    tasks: &[Task],
    t: &AdviceThresholds,
    out: &mut Vec<Advice>,
) {
    let Some((_, last)) = samples.last() else {
        return;
    };
    let peak = samples.iter().map(|(_, s)| s.pool_used).max().unwrap_or(0);
    let limit = last.pool_limit;
    let spill = last.spill_bytes_local + last.spill_bytes_s3;
    let near = limit > 0 && peak as f64 >= t.memory_fraction * limit as f64;
    let spilled = spill >= t.spill_min_bytes
        && spill as f64 >= t.spill_fraction * last.shuffle_bytes_written.max(1) as f64;
    if !near && !spilled {
        return;
    }
    let stage = top_stage(tasks, |t| t.spill_bytes);
    let mut figure = format!(
        "memory pool peaked at {} of {} ({:.0}%); {} spilled ({} local, {} to S3; {:.0}% of the \
         {} of shuffle written)",
        human_bytes(peak),
        human_bytes(limit),
        pct(peak as f64, limit as f64),
        human_bytes(spill),
        human_bytes(last.spill_bytes_local),
        human_bytes(last.spill_bytes_s3),
        pct(spill as f64, last.shuffle_bytes_written as f64),
        human_bytes(last.shuffle_bytes_written),
    );
    if let Some((s, b)) = stage {
        figure.push_str(&format!(
            "; stage {s} spilled the most ({})",
            human_bytes(b)
        ));
    }
    out.push(Advice {
        rule: "memory".into(),
        stage_id: stage.map(|s| s.0),
        figure,
        advice: "raise --memory so the work fits, or spill to S3 (--shuffle s3 --spill-to-s3) \
                 so spill does not fill the local disk"
            .into(),
    });
}

fn executors(
    samples: &[(f64, &ProcessSample)],
    events: &[Event],
    t: &AdviceThresholds,
    out: &mut Vec<Advice>,
) {
    let (Some(start), Some(end)) = (
        events
            .iter()
            .find(|e| matches!(e, Event::JobStart { .. }))
            .map(Event::t_ms),
        events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::JobEnd { .. }))
            .map(Event::t_ms),
    ) else {
        return;
    };
    // Time during the job in which far more executors were needed than allocated.
    let mut backlog = 0.0;
    let mut peak = (0usize, 0usize, 0.0f64);
    for w in samples.windows(2) {
        let ((t0, s), (t1, _)) = (w[0], w[1]);
        if t1 <= start || t0 >= end {
            continue;
        }
        let dt = t1.min(end) - t0.max(start);
        if s.max_needed_executors as f64 >= t.executors_factor * s.executors.max(1) as f64 {
            backlog += dt;
        }
        if s.max_needed_executors > peak.0 {
            peak = (s.max_needed_executors, s.executors, t0);
        }
    }
    let job = end - start;
    if job <= 0.0 || backlog < t.backlog_ms || backlog < 0.5 * job {
        return;
    }
    let stage = running_stage_at(events, peak.2);
    out.push(Advice {
        rule: "executors".into(),
        stage_id: stage,
        figure: format!(
            "max needed executors reached {} with {} allocated{}; at least {:.0}x the allocation \
             was needed for {:.1} s ({:.0}% of the job)",
            peak.0,
            peak.1,
            stage
                .map(|s| format!(" (in stage {s})"))
                .unwrap_or_default(),
            t.executors_factor,
            backlog / 1e3,
            pct(backlog, job)
        ),
        advice: "tasks waited for slots: add executors (--executors) or slots (--parallelism), \
                 up to the max needed"
            .into(),
    });
}

/// The stage with a task running at `at` (the latest started), if any.
fn running_stage_at(events: &[Event], at: f64) -> Option<usize> {
    let mut starts: std::collections::HashMap<usize, f64> = Default::default();
    let mut best: Option<(f64, usize)> = None;
    for e in events {
        match e {
            Event::StageStart { t_ms, stage_id, .. } => {
                starts.insert(*stage_id, *t_ms);
            }
            Event::StageEnd { t_ms, stage_id, .. } => {
                if let Some(s) = starts.get(stage_id) {
                    if *s <= at && *t_ms >= at && best.is_none_or(|b| *s > b.0) {
                        best = Some((*s, *stage_id));
                    }
                }
            }
            _ => {}
        }
    }
    best.map(|b| b.1)
}

/// A stage's tasks as the skew check sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TaskInput {
    pub elapsed_ms: f64,
    pub rows_in: u64,
    pub bytes_in: u64,
}

/// Why a stage is skewed: its largest task against the stage's medians.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Skew {
    pub tasks: usize,
    pub bytes: u64,
    pub rows: u64,
    pub median_bytes: u64,
    pub ms: f64,
    pub median_ms: f64,
}

/// Skew is a task that is slow because it holds more data (module docs):
/// the task that read the most bytes read ≥ `skew_factor` × the stage's
/// median **and** ≥ `skew_min_bytes`, and took ≥ `skew_min_ms` longer than
/// the median task. `floors: false` drops the two absolute floors (the HTML
/// stage table flags small stages too: the task is bigger and slower).
/// Stages of fewer than 4 tasks have no meaningful median.
pub(crate) fn skewed(tasks: &[TaskInput], t: &AdviceThresholds, floors: bool) -> Option<Skew> {
    if tasks.len() < 4 {
        return None;
    }
    let mut times: Vec<f64> = tasks.iter().map(|x| x.elapsed_ms).collect();
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    let mut bytes: Vec<u64> = tasks.iter().map(|x| x.bytes_in).collect();
    bytes.sort_unstable();
    let median_bytes = bytes[bytes.len() / 2];
    // The largest by input; of equals, the slowest.
    let big = tasks.iter().max_by(|a, b| {
        a.bytes_in
            .cmp(&b.bytes_in)
            .then(a.elapsed_ms.total_cmp(&b.elapsed_ms))
    })?;
    let data = big.bytes_in as f64 >= t.skew_factor * median_bytes.max(1) as f64
        && (!floors || big.bytes_in >= t.skew_min_bytes);
    let floor = if floors { t.skew_min_ms } else { 0.0 };
    let time = big.elapsed_ms - median_ms >= floor;
    (data && time).then_some(Skew {
        tasks: tasks.len(),
        bytes: big.bytes_in,
        rows: big.rows_in,
        median_bytes,
        ms: big.elapsed_ms,
        median_ms,
    })
}

fn skew(tasks: &[Task], t: &AdviceThresholds, out: &mut Vec<Advice>) {
    let mut by: std::collections::BTreeMap<usize, Vec<TaskInput>> = Default::default();
    for task in tasks {
        by.entry(task.stage_id).or_default().push(TaskInput {
            elapsed_ms: task.elapsed_ms,
            rows_in: task.rows_in,
            bytes_in: task.bytes_in,
        });
    }
    for (stage, group) in by {
        let Some(k) = skewed(&group, t, true) else {
            continue;
        };
        out.push(Advice {
            rule: "skew".into(),
            stage_id: Some(stage),
            figure: format!(
                "stage {stage}: its largest of {} tasks read {} ({} rows), {:.1}x the median {}, \
                 and took {:.0} ms, {:.1}x the median {:.0} ms",
                k.tasks,
                human_bytes(k.bytes),
                k.rows,
                k.bytes as f64 / k.median_bytes.max(1) as f64,
                human_bytes(k.median_bytes),
                k.ms,
                k.ms / k.median_ms.max(1e-3),
                k.median_ms
            ),
            advice: "one partition holds most of the work: look for a hot key (salt it, or \
                     broadcast the smaller join side with --broadcast-threshold)"
                .into(),
        });
    }
}

fn small_files(tasks: &[Task], map_stages: &[usize], t: &AdviceThresholds, out: &mut Vec<Advice>) {
    for stage in map_stages {
        let mut sizes: Vec<u64> = tasks
            .iter()
            .filter(|x| x.stage_id == *stage && x.shuffle_bytes_written > 0)
            .map(|x| x.shuffle_bytes_written)
            .collect();
        let small = sizes.iter().filter(|b| **b < t.small_object_bytes).count();
        if small < t.small_objects_min {
            continue;
        }
        sizes.sort_unstable();
        out.push(Advice {
            rule: "small_files".into(),
            stage_id: Some(*stage),
            figure: format!(
                "stage {stage} wrote {small} of its {} shuffle objects under {} (median {})",
                sizes.len(),
                human_bytes(t.small_object_bytes),
                human_bytes(sizes[sizes.len() / 2])
            ),
            advice: "each small object costs a request: use fewer --partitions, or let reduce \
                     partitions coalesce (--conf shuffle.coalesce_target)"
                .into(),
        });
    }
}

fn throttling(
    samples: &[(f64, &ProcessSample)],
    events: &[Event],
    t: &AdviceThresholds,
    out: &mut Vec<Advice>,
) {
    let Some((_, last)) = samples.last() else {
        return;
    };
    if last.s3_throttles == 0
        || (last.s3_throttles as f64) < t.throttle_fraction * last.s3_requests as f64
    {
        return;
    }
    // The interval with the most throttles, and the stage running then.
    let worst = samples
        .windows(2)
        .max_by_key(|w| w[1].1.s3_throttles.saturating_sub(w[0].1.s3_throttles))
        .map(|w| w[0].0);
    let stage = worst.and_then(|at| running_stage_at(events, at));
    out.push(Advice {
        rule: "s3_throttling".into(),
        stage_id: stage,
        figure: format!(
            "{} S3 requests were throttled and retried ({:.1}% of {} requests){}",
            last.s3_throttles,
            pct(last.s3_throttles as f64, last.s3_requests as f64),
            last.s3_requests,
            stage
                .map(|s| format!(", most during stage {s}"))
                .unwrap_or_default()
        ),
        advice: "S3 throttles per key prefix: spread objects over more hash prefixes \
                 (--conf s3.hash_prefixes=N, default 16), or write fewer, larger objects"
            .into(),
    });
}

fn local_disk(
    samples: &[(f64, &ProcessSample)],
    tasks: &[Task],
    t: &AdviceThresholds,
    out: &mut Vec<Advice>,
) {
    let Some((free, total)) = samples
        .iter()
        .filter_map(|(_, s)| Some((s.local_disk_free?, s.local_disk_total?)))
        .min_by_key(|(f, _)| *f)
    else {
        return;
    };
    if total == 0 || free as f64 >= t.disk_free_fraction * total as f64 {
        return;
    }
    let last = samples.last().map(|s| s.1);
    let written = last.map_or(0, |s| s.local_bytes_written);
    let stage = top_stage(tasks, |t| t.shuffle_bytes_written + t.spill_bytes);
    out.push(Advice {
        rule: "local_disk".into(),
        stage_id: stage.map(|s| s.0),
        figure: format!(
            "the local shuffle/spill disk fell to {} free of {} ({:.1}%); the job wrote {} there{}",
            human_bytes(free),
            human_bytes(total),
            pct(free as f64, total as f64),
            human_bytes(written),
            stage
                .map(|(s, b)| format!(", stage {s} the most ({})", human_bytes(b)))
                .unwrap_or_default()
        ),
        advice: "move shuffle and spill off the local disk: --shuffle s3 --spill-to-s3".into(),
    });
}

/// `1.5 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(ms: f64, bytes: u64) -> TaskInput {
        TaskInput {
            elapsed_ms: ms,
            rows_in: bytes / 16,
            bytes_in: bytes,
        }
    }

    #[test]
    fn skew_needs_data_and_time_above_factor_and_floor() {
        let t = AdviceThresholds {
            skew_min_ms: 5.0,
            skew_min_bytes: 1 << 20,
            ..Default::default()
        };
        let even = [task(2.0, 400 << 10); 7];
        let with = |extra: TaskInput| {
            let mut v = even.to_vec();
            v.push(extra);
            skewed(&v, &t, true)
        };
        // A hot partition that costs time: skewed, with its figures.
        let k = with(task(40.0, 4 << 20)).expect("skewed");
        assert_eq!((k.tasks, k.bytes, k.median_bytes), (8, 4 << 20, 400 << 10));
        assert_eq!((k.ms, k.median_ms), (40.0, 2.0));
        // Slow but not bigger (scheduling noise): not skew.
        assert_eq!(with(task(400.0, 400 << 10)), None);
        // Bigger but barely slower: not worth advice.
        assert_eq!(with(task(6.5, 4 << 20)), None);
        // Slower by the floor, not by a ratio: small tasks that stretched
        // with the hot one on busy cores do not hide it.
        let busy: Vec<TaskInput> = [task(150.0, 16 << 10); 7]
            .into_iter()
            .chain([task(270.0, 12 << 20)])
            .collect();
        assert!(skewed(&busy, &t, true).is_some());
        // 4x the median, but under the absolute floor (16 KiB among empty
        // partitions): not skew; without the floors (the HTML table), it is.
        let tiny: Vec<TaskInput> = [task(1.0, 0); 5]
            .into_iter()
            .chain([task(9.0, 16 << 10)])
            .collect();
        assert_eq!(skewed(&tiny, &t, true), None);
        assert!(skewed(&tiny, &t, false).is_some());
        // Too few tasks for a median.
        assert_eq!(skewed(&[task(1.0, 0), task(50.0, 8 << 20)], &t, true), None);
    }
}
