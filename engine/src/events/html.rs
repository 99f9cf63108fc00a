//! The HTML report (`--html`, `shovel report EVENTLOG --html`): one
//! self-contained file (no scripts, no network) rendered from an event log.
//!
//! ```text
//!  events ──▶ series over time ──▶ plotters (SVG backend) ──▶ <svg> inlined
//!         ├─▶ stage table (task-time min / median / max, skew flagged), advice
//!         └─▶ operator tables (stage-end events: rows, own time, spill per operator)
//! ```
//!
//! Charts, each an `<svg>` in a `<figure id="chart-...">`:
//! Glue's five (`etl` data movement per storage, `memory` profile, data
//! `shuffle`, `cpu` load of the process and each executor, job `execution`:
//! active and max needed executors, completed stages), then `timeline`
//! (each task attempt as a bar on its executor's slot lanes, coloured by
//! stage, stages as bars above), `s3` requests and retries over time, and
//! `spill` by place. Below the stage table, one small table per stage
//! (`<table class="operators" id="operators-stage-N">`) lists its operators
//! in plan order, inputs indented under their reader: rows out, compute
//! time (its own, inputs' subtracted, summed over tasks) and spill bytes,
//! from the stage-end events. The charts are drawn by `plotters` (its naive text
//! layout: no font files needed), the page is XHTML-compatible so an XML
//! parser can check it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use plotters::prelude::*;

use super::advice::{skewed, Advice, AdviceThresholds, TaskInput};
use super::{Event, ExecutorSample, OperatorEnd, ProcessSample};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 300;
const MIB: f64 = 1024.0 * 1024.0;

/// Colours of series and stages (plotters' basic colours, then a few more).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a chart: a name and (seconds, value) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing a chart: {e}")
}

/// Draws `series` as lines over time.
fn line_chart(title: &str, y_desc: &str, series: &[Series]) -> Result<String, String> {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.001f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A task attempt's bar: (stage, executor, start s, end s, succeeded).
struct Bar {
    stage: usize,
    executor: usize,
    start: f64,
    end: f64,
    ok: bool,
}

/// Draws the stages (one row each) above the task attempts (one lane per
/// concurrently running attempt of each executor).
fn timeline(events: &[Event], stages: &[StageRow], end_s: f64) -> Result<String, String> {
    let mut open: HashMap<(usize, usize, u32), (f64, usize)> = HashMap::new();
    let mut bars = Vec::new();
    for e in events {
        match e {
            Event::TaskStart {
                t_ms,
                stage_id,
                partition,
                attempt,
                executor,
            } => {
                open.insert((*stage_id, *partition, *attempt), (*t_ms / 1e3, *executor));
            }
            Event::TaskEnd {
                t_ms,
                stage_id,
                partition,
                attempt,
                succeeded,
                ..
            } => {
                if let Some((start, executor)) = open.remove(&(*stage_id, *partition, *attempt)) {
                    bars.push(Bar {
                        stage: *stage_id,
                        executor,
                        start,
                        end: *t_ms / 1e3,
                        ok: *succeeded,
                    });
                }
            }
            _ => {}
        }
    }
    // Lanes per executor: a bar takes the first lane of its executor free
    // at its start.
    bars.sort_by(|a, b| a.start.total_cmp(&b.start));
    let executors = bars.iter().map(|b| b.executor + 1).max().unwrap_or(1);
    let mut lanes: Vec<Vec<f64>> = vec![Vec::new(); executors];
    let mut placed = Vec::new();
    for b in &bars {
        let l = &mut lanes[b.executor];
        let i = match l.iter().position(|free_at| *free_at <= b.start) {
            Some(i) => i,
            None => {
                l.push(0.0);
                l.len() - 1
            }
        };
        l[i] = b.end;
        placed.push((b, i));
    }
    // Rows from the bottom: executor 0's lanes, executor 1's, ..., then stages.
    let mut base = vec![0usize; executors];
    let mut acc = 0;
    for (e, l) in lanes.iter().enumerate() {
        base[e] = acc;
        acc += l.len().max(1);
    }
    let task_rows = acc;
    let rows = task_rows + stages.len() + 1;
    let x_max = end_s.max(0.001);
    let height = (rows as u32 * 14 + 90).clamp(HEIGHT, 1600);
    let labels: HashMap<usize, String> = (0..executors)
        .map(|e| (base[e], format!("executor {e}")))
        .chain(
            stages
                .iter()
                .enumerate()
                .map(|(i, s)| (task_rows + 1 + i, format!("stage {}", s.stage_id))),
        )
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Timeline: stages (top) and task attempts by executor",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..x_max, 0f64..rows as f64)
            .map_err(err)?;
        let fmt = |y: &f64| labels.get(&(*y as usize)).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows + 1)
            .y_label_formatter(&fmt)
            .x_desc("seconds")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(placed.iter().map(|(b, lane)| {
                let y = (base[b.executor] + lane) as f64;
                let c = COLOURS[b.stage % COLOURS.len()];
                let style = if b.ok {
                    c.filled()
                } else {
                    RED.stroke_width(2)
                };
                Rectangle::new([(b.start, y + 0.1), (b.end.max(b.start), y + 0.9)], style)
            }))
            .map_err(err)?;
        chart
            .draw_series(stages.iter().enumerate().map(|(i, s)| {
                let y = (task_rows + 1 + i) as f64;
                let c = COLOURS[s.stage_id % COLOURS.len()];
                Rectangle::new(
                    [(s.start_s, y + 0.15), (s.end_s, y + 0.85)],
                    c.mix(0.6).filled(),
                )
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One stage of the table.
struct StageRow {
    stage_id: usize,
    output: String,
    description: String,
    tasks: usize,
    attempts: usize,
    start_s: f64,
    end_s: f64,
    min: f64,
    median: f64,
    max: f64,
    shuffle_written: u64,
    spill: u64,
    /// Data and time skew, without the advice's absolute floors (see
    /// `stage_rows`).
    skew: bool,
    /// From the stage-end event (empty in logs that predate them).
    operators: Vec<OperatorEnd>,
}

fn stage_rows(events: &[Event]) -> Vec<StageRow> {
    let mut rows: Vec<StageRow> = Vec::new();
    let mut times: HashMap<usize, Vec<TaskInput>> = HashMap::new();
    let mut attempts: HashMap<usize, usize> = HashMap::new();
    let mut spill: HashMap<usize, u64> = HashMap::new();
    for e in events {
        match e {
            Event::StageStart {
                t_ms,
                stage_id,
                description,
                output,
                tasks,
                ..
            } => rows.push(StageRow {
                stage_id: *stage_id,
                output: output.clone(),
                description: description.clone(),
                tasks: *tasks,
                attempts: 0,
                start_s: t_ms / 1e3,
                end_s: t_ms / 1e3,
                min: 0.0,
                median: 0.0,
                max: 0.0,
                shuffle_written: 0,
                spill: 0,
                skew: false,
                operators: Vec::new(),
            }),
            Event::TaskEnd {
                stage_id,
                succeeded,
                elapsed_ms,
                rows_in,
                bytes_in,
                spill_bytes,
                ..
            } => {
                *attempts.entry(*stage_id).or_default() += 1;
                if *succeeded {
                    times.entry(*stage_id).or_default().push(TaskInput {
                        elapsed_ms: *elapsed_ms,
                        rows_in: *rows_in,
                        bytes_in: *bytes_in,
                    });
                    *spill.entry(*stage_id).or_default() += spill_bytes;
                }
            }
            Event::StageEnd {
                t_ms,
                stage_id,
                shuffle_bytes_written,
                operators,
                ..
            } => {
                if let Some(r) = rows.iter_mut().find(|r| r.stage_id == *stage_id) {
                    r.end_s = t_ms / 1e3;
                    r.shuffle_written = *shuffle_bytes_written;
                    r.operators = operators.clone();
                }
            }
            _ => {}
        }
    }
    let thresholds = AdviceThresholds::default();
    for r in &mut rows {
        let tasks = times.remove(&r.stage_id).unwrap_or_default();
        let mut t: Vec<f64> = tasks.iter().map(|x| x.elapsed_ms).collect();
        t.sort_by(f64::total_cmp);
        if let (Some(first), Some(last)) = (t.first(), t.last()) {
            r.min = *first;
            r.max = *last;
            r.median = t[t.len() / 2];
        }
        // The task that read the most is 4x the median's input and slower
        // than the median, and the slowest took 4x the median time: the
        // skew rule without its absolute floors (and with the time ratio
        // the max/median column shows), so short, small stages are flagged
        // too, and empty partitions beside a small one are not.
        r.skew = skewed(&tasks, &thresholds, false).is_some()
            && r.max >= thresholds.skew_factor * r.median;
        r.attempts = attempts.get(&r.stage_id).copied().unwrap_or(0);
        r.spill = spill.get(&r.stage_id).copied().unwrap_or(0);
    }
    rows.sort_by_key(|r| r.stage_id);
    rows
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

fn mib(b: u64) -> String {
    format!("{:.2}", b as f64 / MIB)
}

/// The samples as (seconds, process, executors).
fn samples(events: &[Event]) -> Vec<(f64, &ProcessSample, &[ExecutorSample])> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Sample {
                t_ms,
                process,
                executors,
            } => Some((*t_ms / 1e3, process, executors.as_slice())),
            _ => None,
        })
        .collect()
}

/// Each executor's own samples, by executor id: (seconds, sample), one per
/// new sample. An executor process's samples carry the time it took them
/// (`t_ms`); a driver sample repeats an executor's latest until a newer one
/// comes, so a repeat is skipped (a killed executor's line ends where it
/// died). In-process executors have no `t_ms`: every driver sample counts.
fn executor_series<'a>(
    s: &[(f64, &'a ProcessSample, &'a [ExecutorSample])],
) -> BTreeMap<usize, Vec<(f64, &'a ExecutorSample)>> {
    let mut out: BTreeMap<usize, Vec<(f64, &ExecutorSample)>> = BTreeMap::new();
    for (t, _, executors) in s {
        for e in *executors {
            let at = e.t_ms.map_or(*t, |ms| ms / 1e3);
            let points = out.entry(e.executor).or_default();
            if e.t_ms.is_some() && points.last().is_some_and(|(last, _)| *last >= at) {
                continue;
            }
            points.push((at, e));
        }
    }
    // A process's series starts at its first own sample (the driver's
    // first samples, before the cluster started, have none).
    for points in out.values_mut() {
        if points.iter().any(|(_, e)| e.t_ms.is_some()) {
            points.retain(|(_, e)| e.t_ms.is_some());
        }
    }
    out
}

/// Renders the report for `events` (and the `advice` they gave) as one
/// self-contained HTML page titled `title`.
pub fn render_html(events: &[Event], advice: &[Advice], title: &str) -> Result<String, String> {
    let s = samples(events);
    let line = |name: &str, f: &dyn Fn(&ProcessSample) -> f64| Series {
        name: name.to_string(),
        points: s.iter().map(|(t, p, _)| (*t, f(p))).collect(),
    };
    // Events of executor processes are recorded when the driver reads
    // them, after their time: the last event is not always the latest.
    let end_s = events.iter().map(|e| e.t_ms() / 1e3).fold(0.0, f64::max);
    let per_executor = executor_series(&s);
    // Executor processes (Ballista's) have their own memory.
    let processes: Vec<usize> = per_executor
        .iter()
        .filter(|(_, points)| points.iter().any(|(_, e)| e.rss_bytes > 0))
        .map(|(id, _)| *id)
        .collect();
    let stages = stage_rows(events);

    let mut charts: Vec<(&str, String, &str)> = Vec::new();
    charts.push((
        "etl",
        line_chart(
            "ETL data movement (cumulative)",
            "MiB",
            &[
                line("S3 read", &|p| p.s3_bytes_read as f64 / MIB),
                line("S3 written", &|p| p.s3_bytes_written as f64 / MIB),
                line("local disk read", &|p| p.local_bytes_read as f64 / MIB),
                line("local disk written", &|p| {
                    p.local_bytes_written as f64 / MIB
                }),
                line("tasks' input", &|p| p.input_bytes as f64 / MIB),
            ],
        )?,
        "Glue's ETL data movement: bytes read from and written to each storage so far.",
    ));
    let mut memory = if processes.is_empty() {
        vec![
            line("process RSS", &|p| p.rss_bytes as f64 / MIB),
            line("memory pool used", &|p| p.pool_used as f64 / MIB),
        ]
    } else {
        vec![line("driver RSS", &|p| p.rss_bytes as f64 / MIB)]
    };
    for id in &processes {
        let points = &per_executor[id];
        memory.push(Series {
            name: format!("executor {id} RSS"),
            points: points
                .iter()
                .map(|(t, e)| (*t, e.rss_bytes as f64 / MIB))
                .collect(),
        });
        memory.push(Series {
            name: format!("executor {id} pool used"),
            points: points
                .iter()
                .map(|(t, e)| (*t, e.pool_used as f64 / MIB))
                .collect(),
        });
    }
    charts.push((
        "memory",
        line_chart("Memory profile", "MiB", &memory)?,
        if processes.is_empty() {
            "Glue's memory profile: the process's resident memory and the engine's memory pool \
             (executors share one pool in this process). A line that climbs and never falls leaks."
        } else {
            "Glue's memory profile: the driver's and each executor process's resident memory, \
             and each executor's shuffle memory pool. A line that climbs and never falls leaks; \
             a line that stops is an executor that stopped."
        },
    ));
    charts.push((
        "shuffle",
        line_chart(
            "Data shuffle across executors (cumulative)",
            "MiB",
            &[
                line("shuffle written", &|p| p.shuffle_bytes_written as f64 / MIB),
                line("shuffle read", &|p| p.shuffle_bytes_read as f64 / MIB),
            ],
        )?,
        "Glue's data shuffle: stored bytes of committed map outputs, and bytes readers fetched.",
    ));
    let mut cpu = vec![line(
        if processes.is_empty() {
            "process"
        } else {
            "driver"
        },
        &|p| p.cpu_load,
    )];
    for (e, samples) in &per_executor {
        let mut points = Vec::new();
        for w in samples.windows(2) {
            let (t0, a) = w[0];
            let (t1, b) = w[1];
            if t1 > t0 {
                points.push((t1, (b.cpu_ms - a.cpu_ms).max(0.0) / 1e3 / (t1 - t0)));
            }
        }
        cpu.push(Series {
            name: format!("executor {e}"),
            points,
        });
    }
    charts.push((
        "cpu",
        line_chart("CPU load", "cores busy", &cpu)?,
        if processes.is_empty() {
            "Glue's CPU load: process CPU time per second of wall time; an executor's share is \
             the process's split by its running tasks."
        } else {
            "Glue's CPU load: CPU time per second of wall time of the driver and of each \
             executor process."
        },
    ));
    charts.push((
        "execution",
        line_chart(
            "Job execution",
            "count",
            &[
                line("active executors", &|p| p.active_executors as f64),
                line("max needed executors", &|p| p.max_needed_executors as f64),
                line("allocated executors", &|p| p.executors as f64),
                line("completed stages", &|p| p.completed_stages as f64),
            ],
        )?,
        "Glue's job execution: executors running tasks, executors the running plus pending \
         tasks would need, and stages completed. Max needed far above allocated: add executors.",
    ));
    charts.push((
        "timeline",
        timeline(events, &stages, end_s)?,
        "Stages (top rows, from their start to their last task's end) and every task attempt \
         on its executor's slots; failed attempts are outlined in red.",
    ));
    charts.push((
        "s3",
        line_chart(
            "S3 requests and retries (cumulative)",
            "requests",
            &[
                line("requests", &|p| p.s3_requests as f64),
                line("retries", &|p| p.s3_retries as f64),
                line("throttled (503)", &|p| p.s3_throttles as f64),
            ],
        )?,
        "S3 requests made, retried, and retried because S3 throttled them.",
    ));
    charts.push((
        "spill",
        line_chart(
            "Spill by place (cumulative)",
            "MiB",
            &[
                line("local disk", &|p| p.spill_bytes_local as f64 / MIB),
                line("S3", &|p| p.spill_bytes_s3 as f64 / MIB),
            ],
        )?,
        "Bytes spilled to the local disk and to S3.",
    ));

    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n\
         <meta charset=\"utf-8\"/>\n<title>{t}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}\n\
         figure {{ margin: 1em 0; }}\n\
         figcaption {{ color: #555; font-size: 0.9em; max-width: 960px; }}\n\
         table {{ border-collapse: collapse; font-size: 0.85em; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}\n\
         td.l, th.l {{ text-align: left; }}\n\
         tr.skew td {{ background: #fde0dc; }}\n\
         div.ops {{ display: flex; flex-wrap: wrap; gap: 0.8em; align-items: flex-start; }}\n\
         caption {{ text-align: left; font-size: 0.9em; color: #555; }}\n\
         </style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(title)
    );
    let _ = writeln!(o, "<h2>Advice</h2>");
    if advice.is_empty() {
        let _ = writeln!(
            o,
            "<p id=\"advice\">No advice: nothing in this run calls for tuning.</p>"
        );
    } else {
        let _ = writeln!(o, "<ul id=\"advice\">");
        for a in advice {
            let _ = writeln!(
                o,
                "<li><b>{}</b>{}: {} &#8212; {}</li>",
                escape(&a.rule),
                a.stage_id
                    .map(|s| format!(" (stage {s})"))
                    .unwrap_or_default(),
                escape(&a.figure),
                escape(&a.advice)
            );
        }
        let _ = writeln!(o, "</ul>");
    }
    let _ = writeln!(o, "<h2>Glue's five job metrics</h2>");
    for (i, (id, svg, caption)) in charts.iter().enumerate() {
        if i == 5 {
            let _ = writeln!(o, "<h2>Stages and tasks</h2>");
        }
        let _ = writeln!(
            o,
            "<figure id=\"chart-{id}\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
            escape(caption)
        );
        if *id == "timeline" {
            stage_table(&mut o, &stages);
            operator_tables(&mut o, &stages);
            let _ = writeln!(o, "<h2>S3 and spill</h2>");
        }
    }
    let _ = writeln!(o, "</body>\n</html>");
    Ok(o)
}

fn stage_table(o: &mut String, stages: &[StageRow]) {
    let _ = writeln!(
        o,
        "<table id=\"stages\">\n<tr><th>stage</th><th>output</th><th>tasks</th><th>attempts</th>\
         <th>start s</th><th>end s</th><th>task ms min</th><th>median</th><th>max</th>\
         <th>max/median</th><th>shuffle written MiB</th><th>spill MiB</th><th>skew</th>\
         <th class=\"l\">operators</th></tr>"
    );
    for r in stages {
        let ratio = if r.median > 0.0 {
            r.max / r.median
        } else {
            0.0
        };
        let skew = r.skew;
        let _ = writeln!(
            o,
            "<tr{}><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.3}</td>\
             <td>{:.3}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            if skew { " class=\"skew\"" } else { "" },
            r.stage_id,
            escape(&r.output),
            r.tasks,
            r.attempts,
            r.start_s,
            r.end_s,
            r.min,
            r.median,
            r.max,
            ratio,
            mib(r.shuffle_written),
            mib(r.spill),
            if skew { "skewed" } else { "" },
            escape(&r.description)
        );
    }
    let _ = writeln!(o, "</table>");
}

/// One compact table per stage: its operators in plan order (inputs
/// indented under the operator that reads them) with rows out, own compute
/// time and spill. Stages without operator figures are left out.
fn operator_tables(o: &mut String, stages: &[StageRow]) {
    if stages.iter().all(|r| r.operators.is_empty()) {
        return;
    }
    let _ = writeln!(
        o,
        "<h3>Operators</h3>\n<p>Each stage's operators over its successful tasks: rows \
         returned, compute time in the operator itself (its inputs' time subtracted, summed \
         over tasks) and bytes it spilled.</p>\n<div class=\"ops\">"
    );
    for r in stages.iter().filter(|r| !r.operators.is_empty()) {
        let _ = writeln!(
            o,
            "<table class=\"operators\" id=\"operators-stage-{id}\">\n\
             <caption>stage {id}: {}</caption>\n<tr><th class=\"l\">operator</th>\
             <th>rows out</th><th>compute ms</th><th>spill MiB</th></tr>",
            escape(&r.output),
            id = r.stage_id
        );
        for op in &r.operators {
            let _ = writeln!(
                o,
                "<tr><td class=\"l\" style=\"padding-left: {:.1}em\">{}</td><td>{}</td>\
                 <td>{:.1}</td><td>{}</td></tr>",
                0.4 + 1.2 * op.depth as f64,
                escape(&op.name),
                op.rows_out,
                op.elapsed_ms,
                mib(op.spill_bytes)
            );
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(o, "</div>");
}
