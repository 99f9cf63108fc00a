//! `--metrics-addr`: the latest sample in Prometheus' text exposition
//! format (version 0.0.4), for a live `/metrics` endpoint while a job runs.
//!
//! [`PromMetrics`] observes the recorder and keeps its latest
//! [`Event::Sample`]; [`PromMetrics::render`] writes it out. The format is
//! written here rather than through a client crate: these are a fixed
//! set of families, rendered once per scrape from one struct, so a
//! registry of atomics would only copy the sample a second time.
//!
//! Counters (`_total`) are the event log's cumulative counters (they only
//! grow during a run); gauges are as of the sample. Per-executor series
//! carry an `executor` label (the event log's 0-based id). Names follow
//! Prometheus' conventions (base units: bytes and seconds).

use std::fmt::Write;
use std::sync::Mutex;

use super::{Event, EventObserver, ExecutorSample, ProcessSample};

/// Keeps the latest sample for scrapes (see the module docs).
#[derive(Debug, Default)]
pub struct PromMetrics {
    latest: Mutex<Option<(ProcessSample, Vec<ExecutorSample>)>>,
}

impl PromMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The exposition text of the latest sample (empty before the first).
    pub fn render(&self) -> String {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((p, execs)) = latest else {
            return String::new();
        };
        render(&p, &execs)
    }
}

impl EventObserver for PromMetrics {
    fn observe(&self, event: &Event) {
        if let Event::Sample {
            process, executors, ..
        } = event
        {
            *self.latest.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((process.clone(), executors.clone()));
        }
    }
}

/// One family: name, type, help, and its series (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, series: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in series {
        let _ = writeln!(out, "{name}{labels} {}", number(*v));
    }
}

/// A sample value: integers without a fraction, others as Rust prints
/// them (shortest round-trip), non-finite as Prometheus spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        let inf = if v > 0.0 { "+Inf" } else { "-Inf" };
        inf.to_string()
    } else if v.fract() == 0.0 && v.abs() < 9e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn one(v: f64) -> Vec<(String, f64)> {
    vec![(String::new(), v)]
}

fn per_executor(
    execs: &[ExecutorSample],
    f: impl Fn(&ExecutorSample) -> f64,
) -> Vec<(String, f64)> {
    execs
        .iter()
        .map(|e| (format!("{{executor=\"{}\"}}", e.executor), f(e)))
        .collect()
}

/// The exposition text of one sample (module docs).
pub fn render(p: &ProcessSample, execs: &[ExecutorSample]) -> String {
    let mut o = String::new();
    let by_storage = |s3: u64, local: u64| {
        vec![
            ("{storage=\"s3\"}".to_string(), s3 as f64),
            ("{storage=\"local\"}".to_string(), local as f64),
        ]
    };
    family(
        &mut o,
        "shovel_storage_read_bytes_total",
        "counter",
        "Bytes read from storage (S3, local disk) by shuffle and spill.",
        &by_storage(p.s3_bytes_read, p.local_bytes_read),
    );
    family(
        &mut o,
        "shovel_storage_written_bytes_total",
        "counter",
        "Bytes written to storage (S3, local disk) by shuffle and spill.",
        &by_storage(p.s3_bytes_written, p.local_bytes_written),
    );
    family(
        &mut o,
        "shovel_input_bytes_total",
        "counter",
        "Bytes tasks read from their sources (Glue's bytesRead).",
        &one(p.input_bytes as f64),
    );
    family(
        &mut o,
        "shovel_shuffle_written_bytes_total",
        "counter",
        "Stored bytes of committed map outputs.",
        &one(p.shuffle_bytes_written as f64),
    );
    family(
        &mut o,
        "shovel_shuffle_read_bytes_total",
        "counter",
        "Shuffle bytes fetched by readers.",
        &one(p.shuffle_bytes_read as f64),
    );
    family(
        &mut o,
        "shovel_spill_bytes_total",
        "counter",
        "Stored bytes spilled, by place.",
        &[
            ("{place=\"local\"}".to_string(), p.spill_bytes_local as f64),
            ("{place=\"s3\"}".to_string(), p.spill_bytes_s3 as f64),
        ],
    );
    family(
        &mut o,
        "shovel_s3_requests_total",
        "counter",
        "S3 requests made.",
        &one(p.s3_requests as f64),
    );
    family(
        &mut o,
        "shovel_s3_retries_total",
        "counter",
        "S3 requests retried.",
        &one(p.s3_retries as f64),
    );
    family(
        &mut o,
        "shovel_cpu_seconds_total",
        "counter",
        "Process CPU time (user + system).",
        &one(p.cpu_ms / 1e3),
    );
    family(
        &mut o,
        "shovel_stages_completed_total",
        "counter",
        "Stages completed (Glue's numCompletedStages).",
        &one(p.completed_stages as f64),
    );
    family(
        &mut o,
        "shovel_memory_rss_bytes",
        "gauge",
        "Resident set size of the process.",
        &one(p.rss_bytes as f64),
    );
    family(
        &mut o,
        "shovel_memory_pool_used_bytes",
        "gauge",
        "Bytes reserved in the memory pool.",
        &one(p.pool_used as f64),
    );
    family(
        &mut o,
        "shovel_memory_pool_limit_bytes",
        "gauge",
        "The memory pool's limit.",
        &one(p.pool_limit as f64),
    );
    family(
        &mut o,
        "shovel_cpu_load",
        "gauge",
        "CPU time over wall time since the previous sample, in cores.",
        &one(p.cpu_load),
    );
    family(
        &mut o,
        "shovel_executors_active",
        "gauge",
        "Executors with a running task (Glue's numberAllExecutors).",
        &one(p.active_executors as f64),
    );
    family(
        &mut o,
        "shovel_executors_allocated",
        "gauge",
        "Executors of the session.",
        &one(p.executors as f64),
    );
    family(
        &mut o,
        "shovel_executors_max_needed",
        "gauge",
        "Running plus pending tasks over task slots per executor (Glue's numberMaxNeededExecutors).",
        &one(p.max_needed_executors as f64),
    );
    family(
        &mut o,
        "shovel_tasks_running",
        "gauge",
        "Tasks running.",
        &one(p.running_tasks as f64),
    );
    family(
        &mut o,
        "shovel_tasks_pending",
        "gauge",
        "Tasks of started stages not yet run.",
        &one(p.pending_tasks as f64),
    );
    family(
        &mut o,
        "shovel_executor_input_bytes_total",
        "counter",
        "Bytes an executor's tasks read.",
        &per_executor(execs, |e| e.bytes_in as f64),
    );
    family(
        &mut o,
        "shovel_executor_output_bytes_total",
        "counter",
        "Bytes an executor's tasks wrote.",
        &per_executor(execs, |e| e.bytes_out as f64),
    );
    family(
        &mut o,
        "shovel_executor_shuffle_written_bytes_total",
        "counter",
        "Shuffle bytes an executor's tasks wrote.",
        &per_executor(execs, |e| e.shuffle_bytes_written as f64),
    );
    family(
        &mut o,
        "shovel_executor_shuffle_read_bytes_total",
        "counter",
        "Shuffle bytes an executor's tasks read.",
        &per_executor(execs, |e| e.shuffle_bytes_read as f64),
    );
    family(
        &mut o,
        "shovel_executor_spill_bytes_total",
        "counter",
        "Bytes an executor's tasks spilled.",
        &per_executor(execs, |e| e.spill_bytes as f64),
    );
    family(
        &mut o,
        "shovel_executor_cpu_seconds_total",
        "counter",
        "Process CPU time attributed to an executor by running-task share (an executor \
         process's own CPU time).",
        &per_executor(execs, |e| e.cpu_ms / 1e3),
    );
    let processes: Vec<ExecutorSample> =
        execs.iter().filter(|e| e.rss_bytes > 0).cloned().collect();
    family(
        &mut o,
        "shovel_executor_memory_rss_bytes",
        "gauge",
        "Resident memory of an executor that is a process of its own (Ballista's executors).",
        &per_executor(&processes, |e| e.rss_bytes as f64),
    );
    family(
        &mut o,
        "shovel_executor_tasks_running",
        "gauge",
        "Tasks running on an executor.",
        &per_executor(execs, |e| e.running_tasks as f64),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_type_and_well_formed_series() {
        let text = render(
            &ProcessSample {
                input_bytes: 42,
                cpu_ms: 1500.0,
                cpu_load: 0.25,
                ..Default::default()
            },
            &[
                ExecutorSample {
                    executor: 1,
                    bytes_in: 7,
                    ..Default::default()
                },
                ExecutorSample {
                    executor: 2,
                    rss_bytes: 9,
                    ..Default::default()
                },
            ],
        );
        assert!(text.contains("shovel_input_bytes_total 42\n"), "{text}");
        assert!(text.contains("shovel_cpu_seconds_total 1.5\n"), "{text}");
        assert!(text.contains("shovel_cpu_load 0.25\n"), "{text}");
        assert!(
            text.contains("shovel_executor_input_bytes_total{executor=\"1\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("shovel_executor_memory_rss_bytes{executor=\"2\"} 9\n")
                && !text.contains("shovel_executor_memory_rss_bytes{executor=\"1\"}"),
            "{text}"
        );
        let mut declared = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(kind == "counter" || kind == "gauge");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                declared = Some(name.to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(Some(name), declared.as_deref(), "{line}");
                let value = line.rsplit(' ').next().unwrap();
                value.parse::<f64>().unwrap();
            }
        }
        assert_eq!(PromMetrics::new().render(), "");
    }
}
