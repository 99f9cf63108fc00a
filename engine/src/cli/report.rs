//! The run summary: built from the engine's [`JobSummary`] and the shuffle
//! manager's metrics (a delta over the job), printed on stderr and written
//! as JSON with `--report`.

use std::fmt::Write as _;
use std::path::Path;

use shuffle_core::metrics::RequestSnapshot;
use shuffle_core::MetricsSnapshot;

use crate::config::RequestPrices;
use crate::events::{Advice, TaskStat};
use crate::metrics::{JobSummary, OperatorSummary};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::run::Q80Job;
use super::CliError;

/// Wall time of each phase, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Generating or checking the input (set by the caller).
    pub data_ms: f64,
    /// Building the shuffle manager (temp dirs, S3 client, embedded server).
    pub setup_ms: f64,
    pub plan_ms: f64,
    pub execute_ms: f64,
    /// Converting the result to CSV.
    pub output_ms: f64,
    pub cleanup_ms: f64,
    /// From backend setup to the end of cleanup (callers add `data_ms`).
    pub total_ms: f64,
}

/// What `--keep-shuffle` left in place.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// The app id under which the objects are kept.
    pub app_id: String,
    /// Where they are: the local directories, `s3://bucket/prefix`, or the
    /// embedded S3 server's directory.
    pub location: String,
    /// `(shuffle id, committed map outputs, stored data bytes)` of every
    /// shuffle of the job; each output is a data object (unless all its
    /// partitions are empty) and an index object.
    pub shuffles: Vec<(u32, u64, u64)>,
    /// Spill objects removed (spills are never kept).
    pub spill_objects_removed: u64,
    /// Removing the spills failed (the message).
    pub spill_error: Option<String>,
}

impl Kept {
    /// Committed map outputs kept, over every shuffle.
    pub fn map_outputs(&self) -> u64 {
        self.shuffles.iter().map(|s| s.1).sum()
    }

    /// One line: what was kept and where.
    pub fn describe(&self) -> String {
        let ids = self
            .shuffles
            .iter()
            .map(|s| s.0.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let bytes = self.shuffles.iter().map(|s| s.2).sum();
        format!(
            "kept {} map outputs (data + index, {}) of {} shuffle(s) [{ids}] of app {} in {}",
            self.map_outputs(),
            human_bytes(bytes),
            self.shuffles.len(),
            self.app_id,
            self.location
        )
    }
}

/// A run's S3 requests by price class, and what they cost at
/// [`RequestPrices`].
///
/// Classes follow S3's price list: PUT-class is PUT, COPY, POST and LIST,
/// which takes in multipart create, part and complete (POST and PUT
/// requests); GET-class is GET, HEAD and everything else that is not free;
/// DELETE (single or batch) and multipart abort are free. Every request of
/// a [`RequestSnapshot`] is in exactly one class, so the three counts add
/// up to [`RunReport::s3_requests`]. Retries are requests too and are
/// counted where they were made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestCost {
    pub put_class: u64,
    pub get_class: u64,
    pub free: u64,
    /// US dollars.
    pub dollars: f64,
    pub prices: RequestPrices,
}

impl RequestCost {
    /// Classifies `r` and prices it at `prices`.
    pub fn of(r: &RequestSnapshot, prices: RequestPrices) -> Self {
        let put_class =
            r.put + r.list + r.multipart_create + r.multipart_part + r.multipart_complete;
        let get_class = r.get + r.head;
        let free = r.delete + r.multipart_abort;
        let dollars = (put_class as f64 * prices.put_per_1000
            + get_class as f64 * prices.get_per_1000)
            / 1000.0;
        Self {
            put_class,
            get_class,
            free,
            dollars,
            prices,
        }
    }

    /// All requests counted.
    pub fn requests(&self) -> u64 {
        self.put_class + self.get_class + self.free
    }

    /// Whether the prices are S3 Standard's list prices.
    pub fn at_list_prices(&self) -> bool {
        self.prices == RequestPrices::default()
    }

    /// `$0.0027 in requests (534 requests: 120 PUT-class, 300 GET-class,
    /// 114 free) at S3 Standard list prices`.
    pub fn describe(&self) -> String {
        let at = if self.at_list_prices() {
            "at S3 Standard list prices".to_string()
        } else {
            format!(
                "at ${} per 1,000 PUT-class and ${} per 1,000 GET-class (--conf cost.*)",
                self.prices.put_per_1000, self.prices.get_per_1000
            )
        };
        format!(
            "{} in requests ({} requests: {} PUT-class, {} GET-class, {} free) {at}",
            dollars(self.dollars),
            self.requests(),
            self.put_class,
            self.get_class,
            self.free
        )
    }
}

/// `$0.0027`; four decimals, more for a nonzero cost below $0.0001.
fn dollars(d: f64) -> String {
    if d > 0.0 && d < 0.0001 {
        format!("${d:.7}")
    } else {
        format!("${d:.4}")
    }
}

/// What happened to the app's shuffle objects.
#[derive(Debug, Clone)]
pub enum Cleanup {
    /// `--keep-shuffle`: map outputs kept, spills removed.
    Kept(Kept),
    /// Objects removed by `cleanup_app`.
    Removed(u64),
    Failed(String),
}

/// Everything `shovel q80` reports about one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub data_dir: String,
    pub sf: Option<f64>,
    pub date: String,
    /// `--engine`: `shovel` or `datafusion`.
    pub engine: &'static str,
    pub backend_kind: &'static str,
    /// Where shuffle data went, in words.
    pub backend: String,
    pub embedded_s3: Option<String>,
    pub spill_to_s3: bool,
    pub spill_location: String,
    pub memory_budget: u64,
    pub parallelism: usize,
    pub partitions: usize,
    pub broadcast_threshold: u64,
    /// Prices of the request-cost line (`cost.*`).
    pub request_prices: RequestPrices,
    pub input_rows: Option<u64>,
    pub input_file_bytes: Option<u64>,
    pub rows: u64,
    pub planned_stages: u64,
    pub timings: Timings,
    /// The engine's own summary (absent if the job did not finish).
    pub job: Option<JobSummary>,
    /// Shuffle-manager metrics over the run (including cleanup requests).
    pub metrics: MetricsSnapshot,
    pub peak_rss_bytes: Option<u64>,
    pub cleanup: Option<Cleanup>,
    pub error: Option<String>,
    /// The job's events ([`crate::events`]; written with `--event-log`,
    /// not part of the JSON report).
    pub events: Vec<crate::events::Event>,
    /// Tuning advice from the events ([`crate::events::advice`]).
    pub advice: Vec<crate::events::Advice>,
    /// `--engine ballista`: the cluster's processes and what they did.
    pub ballista: Option<BallistaSummary>,
}

impl RunReport {
    pub fn new(job: &Q80Job, data_dir: &Path) -> Self {
        let c = &job.config;
        Self {
            data_dir: data_dir.display().to_string(),
            sf: None,
            date: job.date.to_string(),
            engine: job.engine.as_str(),
            backend_kind: match c.backend {
                crate::config::ShuffleBackend::Local => "local",
                crate::config::ShuffleBackend::S3 => "s3",
            },
            backend: String::new(),
            embedded_s3: None,
            spill_to_s3: c.spill_to_s3,
            spill_location: String::new(),
            memory_budget: c.memory_budget as u64,
            parallelism: c.parallelism,
            partitions: c.shuffle_partitions,
            broadcast_threshold: c.broadcast_threshold as u64,
            request_prices: c.request_prices,
            input_rows: None,
            input_file_bytes: None,
            rows: 0,
            planned_stages: 0,
            timings: Timings::default(),
            job: None,
            metrics: MetricsSnapshot::default(),
            peak_rss_bytes: None,
            cleanup: None,
            error: None,
            events: Vec::new(),
            advice: Vec::new(),
            ballista: None,
        }
    }

    pub fn fail(&mut self, e: &CliError) {
        self.error = Some(e.message.clone());
    }

    /// Total bytes spilled (operators and shuffle buffers), as stored.
    pub fn spill_bytes(&self) -> u64 {
        let from_job = self.job.as_ref().map_or(0, JobSummary::total_spill_bytes);
        from_job.max(self.metrics.shuffle.spill_bytes)
    }

    /// `(local disk, S3)` spilled bytes.
    pub fn spill_split(&self) -> (u64, u64) {
        let b = self.spill_bytes();
        if self.spill_location == "local" {
            (b, 0)
        } else {
            (0, b)
        }
    }

    /// Rows entering stages (scans plus shuffle reads) and the bytes read
    /// by scans (Arrow in-memory size), from the stage summaries.
    pub fn read_totals(&self) -> (u64, u64, u64) {
        let Some(j) = &self.job else { return (0, 0, 0) };
        let rows: u64 = j.stages.iter().map(|s| s.rows_in).sum();
        let bytes: u64 = j.stages.iter().map(|s| s.bytes_in).sum();
        let shuffle: u64 = j.stages.iter().map(|s| s.shuffle_bytes_read).sum();
        (rows, bytes, bytes.saturating_sub(shuffle))
    }

    /// Total S3 requests (all types).
    pub fn s3_requests(&self) -> u64 {
        self.metrics.requests.total()
    }

    /// The S3 requests by price class and their cost.
    pub fn request_cost(&self) -> RequestCost {
        RequestCost::of(&self.metrics.requests, self.request_prices)
    }

    /// The human-readable summary printed on stderr.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let t = &self.timings;
        let status = if self.error.is_some() { "FAILED" } else { "ok" };
        let sf = self.sf.map(|s| format!("SF{s}, ")).unwrap_or_default();
        let _ = writeln!(
            o,
            "── shovel q80 {status}: {sf}{} rows, window from {}, shuffle on {}{}",
            self.rows,
            self.date,
            self.backend,
            if self.engine == "shovel" {
                String::new()
            } else {
                format!(", engine {}", self.engine)
            }
        );
        let _ = writeln!(
            o,
            "   config      memory {}, parallelism {}, partitions {}, broadcast threshold {}",
            human_bytes(self.memory_budget),
            self.parallelism,
            self.partitions,
            if self.broadcast_threshold == 0 {
                "0 (every join shuffles)".to_string()
            } else {
                human_bytes(self.broadcast_threshold)
            }
        );
        let _ = writeln!(
            o,
            "   time        total {} = data {} + setup {} + plan {} + execute {} + output {} + cleanup {}",
            secs(t.data_ms + t.total_ms),
            secs(t.data_ms),
            secs(t.setup_ms),
            secs(t.plan_ms),
            secs(t.execute_ms),
            secs(t.output_ms),
            secs(t.cleanup_ms)
        );
        if let Some(j) = &self.job {
            for s in &j.stages {
                let _ = writeln!(
                    o,
                    "     stage {:>2} {:>9} {:>3} tasks  rows in {:>10} out {:>10}  shuffle w {:>9} r {:>9}  {}{}",
                    s.stage_id,
                    secs(s.elapsed_ms),
                    s.num_tasks,
                    s.rows_in,
                    s.rows_out,
                    human_bytes(s.shuffle_bytes_written),
                    human_bytes(s.shuffle_bytes_read),
                    s.output,
                    if s.partitions > s.num_tasks {
                        format!(" (reads {} partitions, coalesced)", s.partitions)
                    } else {
                        String::new()
                    }
                );
                for op in &s.operators {
                    let name = format!("{}{}", "  ".repeat(op.depth), op.name);
                    let spill = if op.spill_bytes > 0 {
                        format!("  spill {}", human_bytes(op.spill_bytes))
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        o,
                        "       {name:<28} rows {:>10} {:>9}{spill}",
                        op.rows_out,
                        secs(op.elapsed_ms),
                    );
                }
            }
            let (rows, _, scan_bytes) = self.read_totals();
            let input = match (self.input_rows, self.input_file_bytes) {
                (Some(r), Some(b)) => {
                    format!("; input tables {} rows, {} on disk", r, human_bytes(b))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "   read        {} rows into stages (scans + shuffle reads), {} scanned (Arrow){input}",
                rows,
                human_bytes(scan_bytes)
            );
            let _ = writeln!(
                o,
                "   tasks       {} run, {} retried, {} recomputed, {} killed; {} of {} stages completed",
                j.tasks_run,
                j.tasks_retried,
                j.tasks_recomputed,
                j.tasks_killed,
                j.num_stages,
                self.planned_stages
            );
            if let Some(why) = j.rerun_summary() {
                let _ = writeln!(o, "   re-ran      {why}");
            }
        }
        let s = &self.metrics.shuffle;
        let _ = writeln!(
            o,
            "   shuffle     wrote {} ({} raw, {} records, {} maps), read {} ({} raw)",
            human_bytes(s.bytes_written),
            human_bytes(s.raw_bytes_written),
            s.records_written,
            s.maps_committed,
            human_bytes(s.bytes_read),
            human_bytes(s.raw_bytes_read)
        );
        let (local, s3) = self.spill_split();
        let (op, buf) = self
            .job
            .as_ref()
            .map_or((0, 0), |j| (j.spill_bytes, j.shuffle_spill_bytes));
        let _ = writeln!(
            o,
            "   spill       {} in {} files (operators {}, shuffle buffers {}): local disk {}, S3 {}",
            human_bytes(self.spill_bytes()),
            s.spill_count,
            human_bytes(op),
            human_bytes(buf),
            human_bytes(local),
            human_bytes(s3)
        );
        if self.backend_kind == "s3" || self.s3_requests() > 0 {
            let r = &self.metrics.requests;
            let _ = writeln!(
                o,
                "   s3 requests {} (put {}, get {}, list {}, delete {}, head {}, multipart {}/{}/{}/{} create/part/complete/abort), {} retries, {} throttled; {} up, {} down",
                self.s3_requests(),
                r.put,
                r.get,
                r.list,
                r.delete,
                r.head,
                r.multipart_create,
                r.multipart_part,
                r.multipart_complete,
                r.multipart_abort,
                r.retries,
                r.throttles,
                human_bytes(r.bytes_uploaded),
                human_bytes(r.bytes_downloaded)
            );
            let _ = writeln!(o, "   s3 cost     {}", self.request_cost().describe());
        }
        let c = &self.metrics.cache;
        if c.hits + c.misses + c.fall_throughs > 0 {
            let _ = writeln!(
                o,
                "   local cache {} hits ({} served without a request), {} misses, {} evicted, {} fall-throughs",
                c.hits,
                human_bytes(c.bytes_served),
                c.misses,
                human_bytes(c.bytes_evicted),
                c.fall_throughs
            );
        }
        let pool = self
            .job
            .as_ref()
            .map_or("n/a".to_string(), |j| human_bytes(j.peak_memory));
        let _ = writeln!(
            o,
            "   memory      peak RSS {}, memory pool peak {} of {}",
            self.peak_rss_bytes.map_or("n/a".to_string(), human_bytes),
            pool,
            human_bytes(self.memory_budget)
        );
        match &self.cleanup {
            Some(Cleanup::Kept(k)) => {
                let spills = match &k.spill_error {
                    Some(e) => format!("removing spills FAILED: {e}"),
                    None => format!("removed {} spill objects", k.spill_objects_removed),
                };
                let _ = writeln!(
                    o,
                    "   cleanup     {} (--keep-shuffle); {spills}",
                    k.describe()
                );
            }
            Some(Cleanup::Removed(n)) => {
                let _ = writeln!(o, "   cleanup     removed {n} leftover objects");
            }
            Some(Cleanup::Failed(e)) => {
                let _ = writeln!(o, "   cleanup     FAILED: {e}");
            }
            None => {}
        }
        if let Some(b) = &self.ballista {
            for line in b.text().lines() {
                let _ = writeln!(o, "   {line}");
            }
        }
        for (i, a) in self.advice.iter().enumerate() {
            let head = if i == 0 { "advice" } else { "" };
            let _ = writeln!(o, "   {head:<11} {a}");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(o, "   error       {e}");
        }
        o
    }

    /// The JSON form (`--report`): one line, serialised with serde from
    /// the view structs below (which keep the report's schema apart from
    /// the engine's types), then a newline.
    pub fn to_json(&self) -> String {
        let job = self.job.as_ref();
        let t = &self.timings;
        let (rows_in, bytes_in, scan_bytes) = self.read_totals();
        let s = &self.metrics.shuffle;
        let (local, s3) = self.spill_split();
        let cost = self.request_cost();
        let mut requests = Counters(self.metrics.requests.fields());
        requests.0.push(("total", self.s3_requests()));
        let report = ReportJson {
            query: "q80",
            status: if self.error.is_some() { "failed" } else { "ok" },
            error: self.error.as_deref(),
            sf: self.sf,
            data_dir: &self.data_dir,
            date: &self.date,
            rows: self.rows,
            config: ConfigJson {
                engine: self.engine,
                backend: self.backend_kind,
                shuffle_location: &self.backend,
                embedded_s3_endpoint: self.embedded_s3.as_deref(),
                spill_to_s3: self.spill_to_s3,
                memory_budget: self.memory_budget,
                parallelism: self.parallelism,
                partitions: self.partitions,
                broadcast_threshold: self.broadcast_threshold,
            },
            timings_ms: TimingsJson {
                data: t.data_ms,
                setup: t.setup_ms,
                plan: t.plan_ms,
                execute: t.execute_ms,
                output: t.output_ms,
                cleanup: t.cleanup_ms,
                total: t.data_ms + t.total_ms,
            },
            stages: job
                .map(|j| {
                    j.stages
                        .iter()
                        .map(|s| StageJson {
                            stage_id: s.stage_id,
                            output: &s.output,
                            description: &s.description,
                            elapsed_ms: s.elapsed_ms,
                            tasks: s.num_tasks,
                            partitions: s.partitions,
                            rows_in: s.rows_in,
                            bytes_in: s.bytes_in,
                            rows_out: s.rows_out,
                            shuffle_bytes_written: s.shuffle_bytes_written,
                            shuffle_bytes_read: s.shuffle_bytes_read,
                            spill_bytes: s.spill_bytes,
                            operators: &s.operators,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            read: ReadJson {
                rows: rows_in,
                bytes: bytes_in,
                scan_bytes,
                input_table_rows: self.input_rows,
                input_file_bytes: self.input_file_bytes,
            },
            shuffle: ShuffleJson {
                bytes_written: s.bytes_written,
                raw_bytes_written: s.raw_bytes_written,
                records_written: s.records_written,
                maps_committed: s.maps_committed,
                bytes_read: s.bytes_read,
                raw_bytes_read: s.raw_bytes_read,
                frames_read: s.frames_read,
            },
            spill: SpillJson {
                bytes: self.spill_bytes(),
                count: s.spill_count,
                operator_bytes: job.map_or(0, |j| j.spill_bytes),
                shuffle_buffer_bytes: job.map_or(0, |j| j.shuffle_spill_bytes),
                read_back_bytes: s.spill_read_bytes,
                location: &self.spill_location,
                local_disk_bytes: local,
                s3_bytes: s3,
            },
            s3_requests: requests,
            local_cache: Counters(self.metrics.cache.fields()),
            s3_cost: CostJson {
                dollars: cost.dollars,
                requests: cost.requests(),
                put_class: cost.put_class,
                get_class: cost.get_class,
                free: cost.free,
                put_per_1000: cost.prices.put_per_1000,
                get_per_1000: cost.prices.get_per_1000,
                list_prices: cost.at_list_prices(),
            },
            memory: MemoryJson {
                budget: self.memory_budget,
                pool_peak: job.map(|j| j.peak_memory),
                peak_rss_bytes: self.peak_rss_bytes,
            },
            tasks: TasksJson {
                run: job.map(|j| j.tasks_run),
                retried: job.map(|j| j.tasks_retried),
                recomputed: job.map(|j| j.tasks_recomputed),
                killed: job.map(|j| j.tasks_killed),
            },
            stages_completed: job.map_or(0, |j| j.num_stages),
            stages_planned: self.planned_stages,
            cleanup: CleanupJson::of(self.cleanup.as_ref()),
            advice: &self.advice,
            ballista: self.ballista.as_ref(),
            job,
        };
        let mut out =
            serde_json::to_string(&report).expect("the report always serialises (string keys)");
        out.push('\n');
        out
    }
}

// ── The `--report` JSON's shape: views over the report, in key order ──

#[derive(Serialize)]
struct ReportJson<'a> {
    query: &'static str,
    status: &'static str,
    error: Option<&'a str>,
    sf: Option<f64>,
    data_dir: &'a str,
    date: &'a str,
    rows: u64,
    config: ConfigJson<'a>,
    timings_ms: TimingsJson,
    stages: Vec<StageJson<'a>>,
    read: ReadJson,
    shuffle: ShuffleJson,
    spill: SpillJson<'a>,
    s3_requests: Counters,
    local_cache: Counters,
    s3_cost: CostJson,
    memory: MemoryJson,
    tasks: TasksJson,
    stages_completed: usize,
    stages_planned: u64,
    cleanup: CleanupJson<'a>,
    advice: &'a [Advice],
    #[serde(skip_serializing_if = "Option::is_none")]
    ballista: Option<&'a BallistaSummary>,
    /// The engine's own summary (`JobSummary`'s JSON), or `null`.
    job: Option<&'a JobSummary>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    engine: &'static str,
    backend: &'static str,
    shuffle_location: &'a str,
    embedded_s3_endpoint: Option<&'a str>,
    spill_to_s3: bool,
    memory_budget: u64,
    parallelism: usize,
    partitions: usize,
    broadcast_threshold: u64,
}

/// Milliseconds per phase.
#[derive(Serialize)]
struct TimingsJson {
    data: f64,
    setup: f64,
    plan: f64,
    execute: f64,
    output: f64,
    cleanup: f64,
    total: f64,
}

/// A stage as the report shows it (the job's own entry, under `job`, has
/// the tasks too).
#[derive(Serialize)]
struct StageJson<'a> {
    stage_id: usize,
    output: &'a str,
    description: &'a str,
    elapsed_ms: f64,
    tasks: usize,
    partitions: usize,
    rows_in: u64,
    bytes_in: u64,
    rows_out: u64,
    shuffle_bytes_written: u64,
    shuffle_bytes_read: u64,
    spill_bytes: u64,
    operators: &'a [OperatorSummary],
}

#[derive(Serialize)]
struct ReadJson {
    rows: u64,
    bytes: u64,
    scan_bytes: u64,
    input_table_rows: Option<u64>,
    input_file_bytes: Option<u64>,
}

#[derive(Serialize)]
struct ShuffleJson {
    bytes_written: u64,
    raw_bytes_written: u64,
    records_written: u64,
    maps_committed: u64,
    bytes_read: u64,
    raw_bytes_read: u64,
    frames_read: u64,
}

#[derive(Serialize)]
struct SpillJson<'a> {
    bytes: u64,
    count: u64,
    operator_bytes: u64,
    shuffle_buffer_bytes: u64,
    read_back_bytes: u64,
    location: &'a str,
    local_disk_bytes: u64,
    s3_bytes: u64,
}

/// Request and cache counters, as an object in their declaration order
/// (`shuffle_core`'s snapshots list them with `fields()`).
struct Counters(Vec<(&'static str, u64)>);

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Dollars and prices at full precision (a price has more than the three
/// decimals the report's times show).
#[derive(Serialize)]
struct CostJson {
    dollars: f64,
    requests: u64,
    put_class: u64,
    get_class: u64,
    free: u64,
    put_per_1000: f64,
    get_per_1000: f64,
    list_prices: bool,
}

#[derive(Serialize)]
struct MemoryJson {
    budget: u64,
    pool_peak: Option<u64>,
    peak_rss_bytes: Option<u64>,
}

#[derive(Serialize)]
struct TasksJson {
    run: Option<u64>,
    retried: Option<u64>,
    recomputed: Option<u64>,
    killed: Option<u64>,
}

/// `kept` always; the rest as the outcome has them.
#[derive(Serialize)]
struct CleanupJson<'a> {
    kept: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map_outputs_kept: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shuffles_kept: Option<Vec<ShuffleKeptJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spill_objects_removed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects_removed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct ShuffleKeptJson {
    shuffle_id: u32,
    map_outputs: u64,
    data_bytes: u64,
}

impl<'a> CleanupJson<'a> {
    fn of(c: Option<&'a Cleanup>) -> Self {
        let mut j = CleanupJson {
            kept: false,
            app_id: None,
            location: None,
            map_outputs_kept: None,
            shuffles_kept: None,
            spill_objects_removed: None,
            objects_removed: None,
            error: None,
        };
        match c {
            Some(Cleanup::Kept(k)) => {
                j.kept = true;
                j.app_id = Some(&k.app_id);
                j.location = Some(&k.location);
                j.map_outputs_kept = Some(k.map_outputs());
                j.shuffles_kept = Some(
                    k.shuffles
                        .iter()
                        .map(|(id, n, b)| ShuffleKeptJson {
                            shuffle_id: *id,
                            map_outputs: *n,
                            data_bytes: *b,
                        })
                        .collect(),
                );
                j.spill_objects_removed = Some(k.spill_objects_removed);
                j.error = k.spill_error.as_deref();
            }
            Some(Cleanup::Removed(n)) => j.objects_removed = Some(*n),
            Some(Cleanup::Failed(e)) => j.error = Some(e),
            None => {}
        }
        j
    }
}

/// Peak resident set size of this process (`VmHWM` in `/proc/self/status`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resets the peak RSS counter (Linux: `5` into `/proc/self/clear_refs`), so
/// the next [`peak_rss_bytes`] covers only what follows. Best effort.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `1536` as `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn secs(ms: f64) -> String {
    format!("{:.3} s", ms / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rss() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        if Path::new("/proc/self/status").exists() {
            assert!(peak_rss_bytes().unwrap_or(0) > 0);
        }
    }

    #[test]
    fn request_cost_classes_and_arithmetic() {
        let r = RequestSnapshot {
            put: 100,
            get: 280,
            list: 10,
            delete: 110,
            head: 20,
            multipart_create: 3,
            multipart_part: 5,
            multipart_complete: 2,
            multipart_abort: 4,
            retries: 7,
            throttles: 1,
            bytes_uploaded: 1 << 20,
            bytes_downloaded: 1 << 20,
        };
        let c = RequestCost::of(&r, RequestPrices::default());
        assert_eq!((c.put_class, c.get_class, c.free), (120, 300, 114));
        assert_eq!(c.requests(), 534);
        // 120 × $0.005/1000 + 300 × $0.0004/1000 = $0.0006 + $0.00012.
        assert!((c.dollars - 0.00072).abs() < 1e-12, "{}", c.dollars);
        assert_eq!(
            c.describe(),
            "$0.0007 in requests (534 requests: 120 PUT-class, 300 GET-class, 114 free) \
             at S3 Standard list prices"
        );
        // Every request type is in exactly one class.
        let mut report = RunReport::new(&Q80Job::default(), Path::new("/d"));
        report.metrics.requests = r;
        assert_eq!(report.request_cost().requests(), report.s3_requests());

        let c = RequestCost::of(
            &r,
            RequestPrices {
                put_per_1000: 1.0,
                get_per_1000: 0.5,
            },
        );
        assert!((c.dollars - (0.120 + 0.150)).abs() < 1e-12, "{}", c.dollars);
        assert!(c.describe().contains("--conf cost."), "{}", c.describe());
        let none = RequestCost::of(&RequestSnapshot::default(), RequestPrices::default());
        assert_eq!(none.dollars, 0.0);
        assert!(none
            .describe()
            .starts_with("$0.0000 in requests (0 requests"));
        assert_eq!(dollars(0.00002), "$0.0000200");
    }

    #[test]
    fn cost_keys_are_engine_config() {
        let mut c = crate::EngineConfig::default();
        assert_eq!(c.request_prices, RequestPrices::default());
        c.set("cost.put_per_1000", "0.0055").unwrap();
        c.set("cost.get_per_1000", "$0.00044").unwrap();
        assert_eq!(c.request_prices.put_per_1000, 0.0055);
        assert_eq!(c.request_prices.get_per_1000, 0.00044);
        for bad in ["-1", "free", "inf", ""] {
            let e = c.set("cost.get_per_1000", bad).unwrap_err().to_string();
            assert!(e.contains("cost.get_per_1000"), "{e}");
        }
    }

    #[test]
    fn json_sections_keep_their_shape() {
        let mut r = RunReport::new(&Q80Job::default(), Path::new("/d"));
        r.sf = Some(0.01);
        r.cleanup = Some(Cleanup::Kept(Kept {
            app_id: "a".into(),
            location: "/x".into(),
            shuffles: vec![(3, 2, 100)],
            spill_objects_removed: 1,
            spill_error: None,
        }));
        let j = r.to_json();
        assert!(j.contains("\"sf\":0.01,"), "{j}");
        assert!(
            j.contains(
                "\"cleanup\":{\"kept\":true,\"app_id\":\"a\",\"location\":\"/x\",\
                 \"map_outputs_kept\":2,\"shuffles_kept\":[{\"shuffle_id\":3,\"map_outputs\":2,\
                 \"data_bytes\":100}],\"spill_objects_removed\":1}"
            ),
            "{j}"
        );
        // Request counters in shuffle_core's order, then their total.
        assert!(j.contains("\"s3_requests\":{\"put\":0,\"get\":0,"), "{j}");
        assert!(
            j.contains("\"bytes_downloaded\":0,\"total\":0},\"local_cache\":{"),
            "{j}"
        );
        assert!(j.contains("\"tasks\":{\"run\":null,"), "{j}");
        r.cleanup = Some(Cleanup::Removed(4));
        let j = r.to_json();
        assert!(
            j.contains("\"cleanup\":{\"kept\":false,\"objects_removed\":4}"),
            "{j}"
        );
        r.cleanup = Some(Cleanup::Failed("no".into()));
        let j = r.to_json();
        assert!(
            j.contains("\"cleanup\":{\"kept\":false,\"error\":\"no\"}"),
            "{j}"
        );
        // Prices at full precision.
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(
            v["s3_cost"]["get_per_1000"],
            RequestPrices::default().get_per_1000
        );
        assert!(v["ballista"].is_null() && v.get("ballista").is_none());
    }

    #[test]
    fn json_is_one_object() {
        let r = RunReport::new(&Q80Job::default(), Path::new("/d\"x"));
        let j = r.to_json();
        assert!(j.starts_with("{\"query\":\"q80\""), "{j}");
        assert!(j.contains("\"data_dir\":\"/d\\\"x\""), "{j}");
        assert!(j.trim_end().ends_with("\"job\":null}"), "{j}");
    }
}

// ── Ballista runs (`--engine ballista`, see `cli::ballista`) ──

/// One executor's record of the run (its stats file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecutorStats {
    pub pid: u32,
    pub tasks: Vec<TaskStat>,
    pub shuffle_bytes_written: u64,
    pub shuffle_records_written: u64,
    pub shuffle_bytes_read: u64,
    pub shuffle_read_requests: u64,
    /// Requests this executor sent to the store (S3; 0 on local disk).
    pub store_requests: u64,
    /// Peak resident memory of the process (VmHWM).
    pub peak_rss_bytes: u64,
    /// Arrow Flight fetches this executor served from Shovel's store (the
    /// client fetching the job's results) and from its work directory
    /// (Ballista's own shuffle files: executors fetching from each other).
    #[serde(default)]
    pub flight_fetches_from_store: u64,
    #[serde(default)]
    pub flight_fetches_from_work_dir: u64,
    /// The stages whose outputs were fetched over Flight.
    #[serde(default)]
    pub flight_stages: Vec<u32>,
}

/// What a Ballista run reports (the summary's Ballista section).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BallistaSummary {
    pub scheduler: String,
    /// Per executor, in start order (killed ones included).
    pub executors: Vec<ExecutorStats>,
    /// Stages that committed map outputs.
    pub stages: u64,
    /// Committed tasks Ballista ran again after losing an executor, from
    /// the executors' own records (commits of stage attempts above 0).
    pub recomputed_tasks: u64,
    /// What Ballista's scheduler says it reset on losing executors (its
    /// log, `Reset N tasks for running|successful job/stage`): tasks that
    /// were in flight on the lost executor, and tasks of finished stages
    /// whose outputs it dropped (re-run as a new stage attempt).
    #[serde(default)]
    pub scheduler_reset_in_flight: u64,
    #[serde(default)]
    pub scheduler_reset_committed: u64,
    /// Running stages the scheduler rolled back (an input was on the lost
    /// executor) and re-ran whole under a new stage attempt.
    #[serde(default)]
    pub scheduler_rolled_back_stages: Vec<u32>,
    /// Executors killed on purpose (`--lose-executor`).
    pub lost_executors: Vec<usize>,
    /// Peak RSS of the driver (this process).
    pub driver_peak_rss_bytes: u64,
    /// Planning and running the query on the cluster, without starting
    /// and stopping it (ms).
    #[serde(default)]
    pub query_ms: f64,
    /// Processes of the run that exited before they were stopped (a lost
    /// executor, or one that failed: its status and the end of its log).
    #[serde(default)]
    pub exited_early: Vec<String>,
    /// Peak RSS of the scheduler this run started (0: not started here).
    #[serde(default)]
    pub scheduler_peak_rss_bytes: u64,
    /// The `shovel s3-server` process this run started (`--shuffle s3`
    /// without an endpoint).
    #[serde(default)]
    pub s3_server: Option<ServerProcessStats>,
    /// Files in the executors' work directories after the query
    /// (`<job>/<stage>/<partition>/<file>`): none when Shovel is the
    /// shuffle; Ballista's own shuffle files with `--native-shuffle`.
    pub work_dir_files: Vec<String>,
}

/// A helper process of a Ballista run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerProcessStats {
    pub pid: u32,
    pub endpoint: String,
    /// Peak resident memory (VmHWM) just before it was stopped.
    pub peak_rss_bytes: u64,
}

impl BallistaSummary {
    pub fn from_executors(
        scheduler: String,
        executors: Vec<ExecutorStats>,
        lost: Vec<usize>,
    ) -> Self {
        let stages: std::collections::BTreeSet<u32> = executors
            .iter()
            .flat_map(|e| e.tasks.iter().map(|t| t.stage))
            .collect();
        let recomputed = executors
            .iter()
            .flat_map(|e| &e.tasks)
            .filter(|t| t.stage_attempt > 0)
            .count() as u64;
        Self {
            scheduler,
            executors,
            stages: stages.len() as u64,
            recomputed_tasks: recomputed,
            scheduler_reset_in_flight: 0,
            scheduler_reset_committed: 0,
            scheduler_rolled_back_stages: Vec::new(),
            lost_executors: lost,
            work_dir_files: Vec::new(),
            driver_peak_rss_bytes: crate::events::proc::peak_rss_bytes().unwrap_or(0),
            query_ms: 0.0,
            exited_early: Vec::new(),
            scheduler_peak_rss_bytes: 0,
            s3_server: None,
        }
    }

    /// The summary's text lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "ballista: scheduler {}, {} executor(s), {} stages, query {:.0} ms, {} task(s) re-run after executor loss \
             ({} in flight on it, {} under a new stage attempt; the scheduler dropped {} committed outputs \
             and rolled back running stages {:?}){}\n",
            self.scheduler,
            self.executors.len(),
            self.stages,
            self.query_ms,
            self.scheduler_reset_in_flight + self.recomputed_tasks,
            self.scheduler_reset_in_flight,
            self.recomputed_tasks,
            self.scheduler_reset_committed,
            self.scheduler_rolled_back_stages,
            if self.lost_executors.is_empty() {
                String::new()
            } else {
                format!(" (lost: {:?})", self.lost_executors)
            }
        );
        for (i, e) in self.executors.iter().enumerate() {
            let mut per_stage: std::collections::BTreeMap<u32, usize> =
                std::collections::BTreeMap::new();
            for t in &e.tasks {
                *per_stage.entry(t.stage).or_default() += 1;
            }
            out.push_str(&format!(
                "  executor {i} (pid {}): {} tasks in stages {:?}, shuffle written {} B, read {} B in {} ranged reads, {} store requests, Flight fetches served {} from the store (stages {:?}) and {} from the work dir, peak RSS {} MiB\n",
                e.pid,
                e.tasks.len(),
                per_stage,
                e.shuffle_bytes_written,
                e.shuffle_bytes_read,
                e.shuffle_read_requests,
                e.store_requests,
                e.flight_fetches_from_store,
                e.flight_stages,
                e.flight_fetches_from_work_dir,
                e.peak_rss_bytes >> 20
            ));
        }
        for e in &self.exited_early {
            out.push_str(&format!("  {e}\n"));
        }
        out.push_str(&format!(
            "  peak RSS: driver {} MiB, scheduler {} MiB{}\n",
            self.driver_peak_rss_bytes >> 20,
            self.scheduler_peak_rss_bytes >> 20,
            match &self.s3_server {
                Some(s) => format!(
                    ", S3 server (pid {}, {}) {} MiB",
                    s.pid,
                    s.endpoint,
                    s.peak_rss_bytes >> 20
                ),
                None => String::new(),
            }
        ));
        out
    }
}
