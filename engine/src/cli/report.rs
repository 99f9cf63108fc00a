//! The run summary: built from the engine's [`JobSummary`] and the shuffle
//! manager's metrics (a delta over the job), printed on stderr and written
//! as JSON with `--report`.

use std::fmt::Write as _;
use std::path::Path;

use shuffle_core::metrics::RequestSnapshot;
use shuffle_core::MetricsSnapshot;

use crate::config::RequestPrices;
use crate::json::Json;
use crate::metrics::JobSummary;
use serde::{Deserialize, Serialize};

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

    /// The JSON form (`--report`).
    pub fn to_json(&self) -> String {
        let mut w = Json::new();
        w.str("query", "q80");
        w.str("status", if self.error.is_some() { "failed" } else { "ok" });
        match &self.error {
            Some(e) => w.str("error", e),
            None => w.raw("error", "null"),
        }
        match self.sf {
            Some(sf) => w.raw("sf", &json_f64(sf)),
            None => w.raw("sf", "null"),
        }
        w.str("data_dir", &self.data_dir);
        w.str("date", &self.date);
        w.num("rows", self.rows);

        let mut c = Json::new();
        c.str("engine", self.engine);
        c.str("backend", self.backend_kind);
        c.str("shuffle_location", &self.backend);
        match &self.embedded_s3 {
            Some(e) => c.str("embedded_s3_endpoint", e),
            None => c.raw("embedded_s3_endpoint", "null"),
        }
        c.bool("spill_to_s3", self.spill_to_s3);
        c.num("memory_budget", self.memory_budget);
        c.num("parallelism", self.parallelism as u64);
        c.num("partitions", self.partitions as u64);
        c.num("broadcast_threshold", self.broadcast_threshold);
        w.raw("config", &c.end());

        let t = &self.timings;
        let mut tj = Json::new();
        tj.f64("data", t.data_ms);
        tj.f64("setup", t.setup_ms);
        tj.f64("plan", t.plan_ms);
        tj.f64("execute", t.execute_ms);
        tj.f64("output", t.output_ms);
        tj.f64("cleanup", t.cleanup_ms);
        tj.f64("total", t.data_ms + t.total_ms);
        w.raw("timings_ms", &tj.end());

        let mut stages = Vec::new();
        if let Some(j) = &self.job {
            for s in &j.stages {
                let mut sj = Json::new();
                sj.num("stage_id", s.stage_id as u64);
                sj.str("output", &s.output);
                sj.str("description", &s.description);
                sj.f64("elapsed_ms", s.elapsed_ms);
                sj.num("tasks", s.num_tasks as u64);
                sj.num("partitions", s.partitions as u64);
                sj.num("rows_in", s.rows_in);
                sj.num("bytes_in", s.bytes_in);
                sj.num("rows_out", s.rows_out);
                sj.num("shuffle_bytes_written", s.shuffle_bytes_written);
                sj.num("shuffle_bytes_read", s.shuffle_bytes_read);
                sj.num("spill_bytes", s.spill_bytes);
                sj.array(
                    "operators",
                    s.operators.iter().map(crate::metrics::operator_json),
                );
                stages.push(sj.end());
            }
        }
        w.raw("stages", &format!("[{}]", stages.join(",")));

        let (rows_in, bytes_in, scan_bytes) = self.read_totals();
        let mut r = Json::new();
        r.num("rows", rows_in);
        r.num("bytes", bytes_in);
        r.num("scan_bytes", scan_bytes);
        r.opt_num("input_table_rows", self.input_rows);
        r.opt_num("input_file_bytes", self.input_file_bytes);
        w.raw("read", &r.end());

        let s = &self.metrics.shuffle;
        let mut sh = Json::new();
        sh.num("bytes_written", s.bytes_written);
        sh.num("raw_bytes_written", s.raw_bytes_written);
        sh.num("records_written", s.records_written);
        sh.num("maps_committed", s.maps_committed);
        sh.num("bytes_read", s.bytes_read);
        sh.num("raw_bytes_read", s.raw_bytes_read);
        sh.num("frames_read", s.frames_read);
        w.raw("shuffle", &sh.end());

        let (local, s3) = self.spill_split();
        let mut sp = Json::new();
        sp.num("bytes", self.spill_bytes());
        sp.num("count", s.spill_count);
        sp.num(
            "operator_bytes",
            self.job.as_ref().map_or(0, |j| j.spill_bytes),
        );
        sp.num(
            "shuffle_buffer_bytes",
            self.job.as_ref().map_or(0, |j| j.shuffle_spill_bytes),
        );
        sp.num("read_back_bytes", s.spill_read_bytes);
        sp.str("location", &self.spill_location);
        sp.num("local_disk_bytes", local);
        sp.num("s3_bytes", s3);
        w.raw("spill", &sp.end());

        let mut rq = Json::new();
        for (k, v) in self.metrics.requests.fields() {
            rq.num(k, v);
        }
        rq.num("total", self.s3_requests());
        w.raw("s3_requests", &rq.end());

        let mut lc = Json::new();
        for (k, v) in self.metrics.cache.fields() {
            lc.num(k, v);
        }
        w.raw("local_cache", &lc.end());

        let cost = self.request_cost();
        let mut cj = Json::new();
        // Full precision: `Json::f64` keeps 3 decimals, less than a price has.
        cj.raw("dollars", &json_f64(cost.dollars));
        cj.num("requests", cost.requests());
        cj.num("put_class", cost.put_class);
        cj.num("get_class", cost.get_class);
        cj.num("free", cost.free);
        cj.raw("put_per_1000", &json_f64(cost.prices.put_per_1000));
        cj.raw("get_per_1000", &json_f64(cost.prices.get_per_1000));
        cj.bool("list_prices", cost.at_list_prices());
        w.raw("s3_cost", &cj.end());

        let mut m = Json::new();
        m.num("budget", self.memory_budget);
        m.opt_num("pool_peak", self.job.as_ref().map(|j| j.peak_memory));
        m.opt_num("peak_rss_bytes", self.peak_rss_bytes);
        w.raw("memory", &m.end());

        let mut tk = Json::new();
        tk.opt_num("run", self.job.as_ref().map(|j| j.tasks_run));
        tk.opt_num("retried", self.job.as_ref().map(|j| j.tasks_retried));
        tk.opt_num("recomputed", self.job.as_ref().map(|j| j.tasks_recomputed));
        tk.opt_num("killed", self.job.as_ref().map(|j| j.tasks_killed));
        w.raw("tasks", &tk.end());
        w.num(
            "stages_completed",
            self.job.as_ref().map_or(0, |j| j.num_stages as u64),
        );
        w.num("stages_planned", self.planned_stages);

        let mut cl = Json::new();
        match &self.cleanup {
            Some(Cleanup::Kept(k)) => {
                cl.bool("kept", true);
                cl.str("app_id", &k.app_id);
                cl.str("location", &k.location);
                cl.num("map_outputs_kept", k.map_outputs());
                cl.array(
                    "shuffles_kept",
                    k.shuffles.iter().map(|(id, n, b)| {
                        let mut j = Json::new();
                        j.num("shuffle_id", u64::from(*id));
                        j.num("map_outputs", *n);
                        j.num("data_bytes", *b);
                        j.end()
                    }),
                );
                cl.num("spill_objects_removed", k.spill_objects_removed);
                if let Some(e) = &k.spill_error {
                    cl.str("error", e);
                }
            }
            Some(Cleanup::Removed(n)) => {
                cl.bool("kept", false);
                cl.num("objects_removed", *n);
            }
            Some(Cleanup::Failed(e)) => {
                cl.bool("kept", false);
                cl.str("error", e);
            }
            None => cl.bool("kept", false),
        }
        w.raw("cleanup", &cl.end());
        // serde for the new parts (issue 14 retires the hand-written writer).
        let advice = serde_json::to_string(&self.advice).unwrap_or_else(|_| "[]".into());
        w.raw("advice", &advice);
        if let Some(b) = &self.ballista {
            w.raw(
                "ballista",
                &serde_json::to_string(b).unwrap_or_else(|_| "null".into()),
            );
        }
        match &self.job {
            Some(j) => w.raw("job", &j.to_json()),
            None => w.raw("job", "null"),
        }
        let mut out = w.end();
        out.push('\n');
        out
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

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".to_string()
    }
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

/// One committed task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskStat {
    pub stage: u32,
    pub stage_attempt: u32,
    pub task: u32,
    pub task_attempt: u32,
    pub bytes: u64,
    pub records: u64,
}

/// What a Ballista run reports (the summary's Ballista section).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BallistaSummary {
    pub scheduler: String,
    /// Per executor, in start order (killed ones included).
    pub executors: Vec<ExecutorStats>,
    /// Stages that committed map outputs.
    pub stages: u64,
    /// Tasks Ballista ran again after losing an executor (stage attempts
    /// above 0).
    pub recomputed_tasks: u64,
    /// Executors killed on purpose (`--lose-executor`).
    pub lost_executors: Vec<usize>,
    /// Peak RSS of the driver (this process).
    pub driver_peak_rss_bytes: u64,
    /// Files in the executors' work directories after the query
    /// (`<job>/<stage>/<partition>/<file>`): none when Shovel is the
    /// shuffle; Ballista's own shuffle files with `--native-shuffle`.
    pub work_dir_files: Vec<String>,
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
            lost_executors: lost,
            work_dir_files: Vec::new(),
            driver_peak_rss_bytes: crate::events::proc::peak_rss_bytes().unwrap_or(0),
        }
    }

    /// The summary's text lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "ballista: scheduler {}, {} executor(s), {} stages, {} task(s) re-run after executor loss{}\n",
            self.scheduler,
            self.executors.len(),
            self.stages,
            self.recomputed_tasks,
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
        out
    }
}
