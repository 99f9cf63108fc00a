//! `--emf FILE`: the event log's samples as CloudWatch Embedded Metric
//! Format (EMF) lines, named as AWS Glue names its job metrics so a Glue
//! user reads them as they read a Glue job's.
//!
//! Each line is one JSON object that CloudWatch Logs (or the CloudWatch
//! agent) turns into metrics:
//!
//! ```text
//! {"_aws":{"Timestamp":1764525000123,
//!          "CloudWatchMetrics":[{"Namespace":"Glue",
//!                                "Dimensions":[["JobName","JobRunId","Type"]],
//!                                "Metrics":[{"Name":"glue.driver.aggregate.bytesRead","Unit":"Bytes"}, ...]}]},
//!  "JobName":"shovel-q80","JobRunId":"<app id>","Type":"count",
//!  "glue.driver.aggregate.bytesRead":1234, ...}
//! ```
//!
//! Per sample (every `--event-log-interval`) it writes:
//!
//! * the driver's `Type=count` line: what the counters grew by since the
//!   previous sample (Glue's `count` metrics are summed over time, so the
//!   CloudWatch `Sum` of a run is its total);
//! * the driver's `Type=gauge` line: memory, CPU load, executors;
//! * per executor, a `Type=count` line (its tasks' bytes) and a
//!   `Type=gauge` line (its CPU load, and for an executor process of its
//!   own, Ballista's, its RSS as `glue.<executor>.memory.used`), named
//!   `glue.<executor>.…` with the event log's executor id (0-based; Glue's
//!   are 1-based).
//!
//! When the recorder finishes, one `Type=total` line carries the run's
//! cumulative counters under the same names, plus the job's elapsed time
//! and task counts (`Type=total` keeps it out of the `count` sums).
//!
//! | Glue name (driver) | from [`ProcessSample`] | unit |
//! | --- | --- | --- |
//! | `glue.driver.aggregate.bytesRead` | `input_bytes` (tasks' source bytes) | Bytes |
//! | `glue.driver.aggregate.bytesWritten` | `s3_bytes_written + local_bytes_written` (q80's answer goes to stdout, so the storage writes: shuffle and spill) | Bytes |
//! | `glue.driver.s3.filesystem.read_bytes` / `write_bytes` | `s3_bytes_read` / `s3_bytes_written` | Bytes |
//! | `glue.driver.aggregate.shuffleBytesWritten` | `shuffle_bytes_written` | Bytes |
//! | `glue.driver.aggregate.shuffleLocalBytesRead` | `shuffle_bytes_read` (executors share one process) | Bytes |
//! | `glue.driver.aggregate.numCompletedStages` | `completed_stages` | Count |
//! | `glue.driver.memory.used` | `rss_bytes` | Bytes |
//! | `glue.driver.memory.pool.used` / `pool.limit` | `pool_used` / `pool_limit` | Bytes |
//! | `glue.driver.system.cpuSystemLoad` | `cpu_load` over the machine's cores (0–1, as Glue) | None |
//! | `glue.driver.ExecutorAllocationManager.executors.numberAllExecutors` | `active_executors` | Count |
//! | `glue.driver.ExecutorAllocationManager.executors.numberMaxNeededExecutors` | `max_needed_executors` | Count |
//!
//! Executors share the process's memory pool, so there is no per-executor
//! memory line.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use super::{Event, EventObserver, ExecutorSample, ProcessSample};

/// The EMF namespace (Glue's own, so dashboards built for Glue apply).
pub const NAMESPACE: &str = "Glue";

/// The dimension set of every line.
pub const DIMENSIONS: [&str; 3] = ["JobName", "JobRunId", "Type"];

/// Writes EMF lines (see the module docs) as the recorder observes events.
pub struct EmfWriter {
    job_name: String,
    run_id: String,
    cores: f64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    writer: Option<std::io::BufWriter<std::fs::File>>,
    error: Option<String>,
    /// Wall-clock start of the log (Unix ms), from its first event.
    unix_ms: u64,
    prev: Option<(f64, ProcessSample, Vec<ExecutorSample>)>,
    tasks_succeeded: u64,
    tasks_failed: u64,
    job_elapsed_ms: Option<f64>,
    path: String,
}

/// One metric of a line: Glue's name, CloudWatch unit, value.
type Metric = (String, &'static str, Value);

impl EmfWriter {
    /// Creates `path`; `job_name` and `run_id` are the `JobName` and
    /// `JobRunId` dimensions.
    pub fn create(path: &Path, job_name: &str, run_id: &str) -> Result<Self, String> {
        let f = std::fs::File::create(path).map_err(|e| {
            format!(
                "cannot create --emf {}: {e}; choose a writable path",
                path.display()
            )
        })?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        Ok(Self {
            job_name: job_name.to_string(),
            run_id: run_id.to_string(),
            cores,
            state: Mutex::new(State {
                writer: Some(std::io::BufWriter::new(f)),
                path: path.display().to_string(),
                ..State::default()
            }),
        })
    }

    fn line(&self, st: &mut State, t_ms: f64, kind: &str, metrics: Vec<Metric>) {
        let mut obj = Map::new();
        let defs: Vec<Value> = metrics
            .iter()
            .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit }))
            .collect();
        obj.insert(
            "_aws".into(),
            json!({
                "Timestamp": st.unix_ms + t_ms.max(0.0).round() as u64,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [DIMENSIONS],
                    "Metrics": defs,
                }],
            }),
        );
        obj.insert("JobName".into(), json!(self.job_name));
        obj.insert("JobRunId".into(), json!(self.run_id));
        obj.insert("Type".into(), json!(kind));
        for (name, _, v) in metrics {
            obj.insert(name, v);
        }
        let Some(w) = st.writer.as_mut() else { return };
        if st.error.is_some() {
            return;
        }
        let res = serde_json::to_writer(&mut *w, &Value::Object(obj))
            .map_err(std::io::Error::from)
            .and_then(|()| w.write_all(b"\n"));
        if let Err(e) = res {
            st.error = Some(e.to_string());
        }
    }

    fn sample(&self, st: &mut State, t: f64, p: &ProcessSample, execs: &[ExecutorSample]) {
        let zero = ProcessSample::default();
        let (prev_t, prev_p, prev_e) = match &st.prev {
            Some((t, p, e)) => (*t, p.clone(), e.clone()),
            None => (0.0, zero, Vec::new()),
        };
        self.line(st, t, "count", driver_counts(p, Some(&prev_p)));
        let gauges = vec![
            m("glue.driver.memory.used", "Bytes", p.rss_bytes),
            m("glue.driver.memory.pool.used", "Bytes", p.pool_used),
            m("glue.driver.memory.pool.limit", "Bytes", p.pool_limit),
            (
                "glue.driver.system.cpuSystemLoad".into(),
                "None",
                json!(round3(p.cpu_load / self.cores)),
            ),
            m(
                "glue.driver.ExecutorAllocationManager.executors.numberAllExecutors",
                "Count",
                p.active_executors as u64,
            ),
            m(
                "glue.driver.ExecutorAllocationManager.executors.numberMaxNeededExecutors",
                "Count",
                p.max_needed_executors as u64,
            ),
        ];
        self.line(st, t, "gauge", gauges);
        let dt = t - prev_t;
        for e in execs {
            let before = prev_e.iter().find(|b| b.executor == e.executor);
            self.line(st, t, "count", executor_counts(e, before));
            let cpu = e.cpu_ms - before.map(|b| b.cpu_ms).unwrap_or(0.0);
            // An executor process's figures are as of its own sample time
            // (`t_ms`), and its CPU time counts from its start.
            let dt = match (e.t_ms, before.and_then(|b| b.t_ms)) {
                (Some(now), Some(then)) => now - then,
                (Some(_), None) => 0.0,
                _ => dt,
            };
            let load = if dt > 0.0 {
                (cpu / dt / self.cores).max(0.0)
            } else {
                0.0
            };
            let id = e.executor;
            let mut gauges = vec![(
                format!("glue.{id}.system.cpuSystemLoad"),
                "None",
                json!(round3(load)),
            )];
            if e.rss_bytes > 0 {
                // A process of its own (Ballista's executors): its memory.
                gauges.push((
                    format!("glue.{id}.memory.used"),
                    "Bytes",
                    json!(e.rss_bytes),
                ));
            }
            self.line(st, t, "gauge", gauges);
        }
        st.prev = Some((t, p.clone(), execs.to_vec()));
    }

    /// The `Type=total` line (module docs), from the last sample.
    fn totals(&self, st: &mut State) {
        let Some((t, p, execs)) = st.prev.clone() else {
            return;
        };
        let mut metrics = driver_counts(&p, None);
        metrics.push((
            "glue.driver.aggregate.elapsedTime".into(),
            "Milliseconds",
            json!(round3(st.job_elapsed_ms.unwrap_or(t))),
        ));
        metrics.push(m(
            "glue.driver.aggregate.numCompletedTasks",
            "Count",
            st.tasks_succeeded,
        ));
        metrics.push(m(
            "glue.driver.aggregate.numFailedTasks",
            "Count",
            st.tasks_failed,
        ));
        for e in &execs {
            metrics.extend(executor_counts(e, None));
        }
        self.line(st, t, "total", metrics);
    }
}

fn m(name: &str, unit: &'static str, v: u64) -> Metric {
    (name.to_string(), unit, json!(v))
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

/// The driver's counters, as growth since `prev` (or cumulative).
fn driver_counts(p: &ProcessSample, prev: Option<&ProcessSample>) -> Vec<Metric> {
    let d = |f: fn(&ProcessSample) -> u64| f(p).saturating_sub(prev.map(f).unwrap_or(0));
    vec![
        m(
            "glue.driver.aggregate.bytesRead",
            "Bytes",
            d(|s| s.input_bytes),
        ),
        m(
            "glue.driver.aggregate.bytesWritten",
            "Bytes",
            d(|s| s.s3_bytes_written + s.local_bytes_written),
        ),
        m(
            "glue.driver.s3.filesystem.read_bytes",
            "Bytes",
            d(|s| s.s3_bytes_read),
        ),
        m(
            "glue.driver.s3.filesystem.write_bytes",
            "Bytes",
            d(|s| s.s3_bytes_written),
        ),
        m(
            "glue.driver.aggregate.shuffleBytesWritten",
            "Bytes",
            d(|s| s.shuffle_bytes_written),
        ),
        m(
            "glue.driver.aggregate.shuffleLocalBytesRead",
            "Bytes",
            d(|s| s.shuffle_bytes_read),
        ),
        m(
            "glue.driver.aggregate.numCompletedStages",
            "Count",
            d(|s| s.completed_stages as u64),
        ),
    ]
}

/// One executor's counters, as growth since `prev` (or cumulative).
fn executor_counts(e: &ExecutorSample, prev: Option<&ExecutorSample>) -> Vec<Metric> {
    let d = |f: fn(&ExecutorSample) -> u64| f(e).saturating_sub(prev.map(f).unwrap_or(0));
    let id = e.executor;
    vec![
        m(
            &format!("glue.{id}.aggregate.bytesRead"),
            "Bytes",
            d(|s| s.bytes_in),
        ),
        m(
            &format!("glue.{id}.aggregate.bytesWritten"),
            "Bytes",
            d(|s| s.bytes_out),
        ),
        m(
            &format!("glue.{id}.aggregate.shuffleBytesWritten"),
            "Bytes",
            d(|s| s.shuffle_bytes_written),
        ),
        m(
            &format!("glue.{id}.aggregate.shuffleLocalBytesRead"),
            "Bytes",
            d(|s| s.shuffle_bytes_read),
        ),
        m(
            &format!("glue.{id}.aggregate.spillBytes"),
            "Bytes",
            d(|s| s.spill_bytes),
        ),
    ]
}

impl EventObserver for EmfWriter {
    fn observe(&self, event: &Event) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::LogStart { unix_ms, .. } => st.unix_ms = *unix_ms,
            Event::TaskEnd { succeeded, .. } => {
                if *succeeded {
                    st.tasks_succeeded += 1;
                } else {
                    st.tasks_failed += 1;
                }
            }
            Event::JobEnd { elapsed_ms, .. } => st.job_elapsed_ms = Some(*elapsed_ms),
            Event::Sample {
                t_ms,
                process,
                executors,
            } => self.sample(&mut st, *t_ms, process, executors),
            _ => {}
        }
    }

    fn finish(&self) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.totals(&mut st);
        if let Some(mut w) = st.writer.take() {
            if let Err(e) = w.flush() {
                st.error.get_or_insert(e.to_string());
            }
        }
        match &st.error {
            Some(e) => Err(format!(
                "writing --emf {}: {e}; check the disk and the path",
                st.path
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_lines_carry_growth_and_the_total_line_the_sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.emf");
        let w = EmfWriter::create(&path, "job", "run").unwrap();
        w.observe(&Event::LogStart {
            t_ms: 0.0,
            unix_ms: 1_000,
            version: "x".into(),
            interval_ms: 100.0,
        });
        for (t, b) in [(0.0, 0), (100.0, 40), (200.0, 100)] {
            w.observe(&Event::Sample {
                t_ms: t,
                process: ProcessSample {
                    input_bytes: b,
                    ..Default::default()
                },
                executors: vec![ExecutorSample {
                    bytes_in: b,
                    ..Default::default()
                }],
            });
        }
        w.finish().unwrap();
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // 3 samples x (driver count + gauge, executor count + gauge) + total.
        assert_eq!(lines.len(), 13);
        let sum = |kind: &str, name: &str| -> u64 {
            lines
                .iter()
                .filter(|l| l["Type"] == kind)
                .filter_map(|l| l[name].as_u64())
                .sum()
        };
        assert_eq!(sum("count", "glue.driver.aggregate.bytesRead"), 100);
        assert_eq!(sum("count", "glue.0.aggregate.bytesRead"), 100);
        assert_eq!(sum("total", "glue.driver.aggregate.bytesRead"), 100);
        assert_eq!(lines[12]["_aws"]["Timestamp"], 1_200);
    }
}
