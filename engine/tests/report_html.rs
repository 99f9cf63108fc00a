//! The HTML report of a real run (`shovel q80 --html`) and of its saved
//! event log (`shovel report EVENTLOG --html`): well-formed (an XML parser
//! reads it to the end with matching tags), self-contained, with Glue's five
//! charts each drawing data, the timeline, the stage table, and each
//! stage's operator table with the run's figures.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{cache_dir, moving_lines};
use quick_xml::events::Event as Xml;

fn shovel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(args)
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .output()
        .expect("run shovel")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Parses `html` as XML; panics on any error (unclosed or mismatched tags,
/// bad entities).
fn well_formed(html: &str) {
    let mut r = quick_xml::Reader::from_str(html);
    r.config_mut().check_end_names = true;
    let mut depth = 0i64;
    loop {
        match r.read_event() {
            Ok(Xml::Eof) => break,
            Ok(Xml::Start(_)) => depth += 1,
            Ok(Xml::End(_)) => depth -= 1,
            Ok(_) => {}
            Err(e) => panic!(
                "not well-formed at byte {}: {e}\n{}",
                r.buffer_position(),
                &html[(r.buffer_position() as usize).saturating_sub(200)
                    ..(r.buffer_position() as usize + 50).min(html.len())]
            ),
        }
    }
    assert_eq!(depth, 0, "every element is closed");
}

/// The `<figure id="chart-{id}">` element's text.
fn figure<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<figure id=\"chart-{id}\">"))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let len = html[start..].find("</figure>").expect("figure closed");
    &html[start..start + len]
}

fn check_report(html: &str, tasks_at_least: usize) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..100]);
    well_formed(html);
    // Self-contained: no scripts, nothing fetched.
    for banned in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(banned), "{banned}");
    }
    // Glue's five charts, each with a line that moved over several samples
    // (the axes are polylines too, but straight).
    for id in ["etl", "memory", "shuffle", "cpu", "execution"] {
        let f = figure(html, id);
        assert_eq!(f.matches("<svg").count(), 1, "{id}");
        let lines = moving_lines(f);
        assert!(!lines.is_empty(), "chart {id} drew no data:\n{f}");
    }
    for id in ["s3", "spill"] {
        assert_eq!(figure(html, id).matches("<svg").count(), 1, "{id}");
    }
    // The timeline: a bar per task attempt (and per stage), executors named.
    let t = figure(html, "timeline");
    assert!(
        t.matches("<rect").count() >= tasks_at_least,
        "{} bars",
        t.matches("<rect").count()
    );
    assert!(
        t.contains("executor 0") && t.contains("executor 1"),
        "lane labels"
    );
    assert!(t.contains("stage 0"), "stage rows");
    // The stage table with the task-time spread.
    assert!(html.contains("<table id=\"stages\">"));
    assert!(html.contains("<th>median</th>"));
    assert!(html.contains("HashJoin &lt;- "), "operators escaped");
}

/// The rows of stage `stage`'s operator table: (operator, rows out,
/// compute ms, spill MiB), in plan order.
fn operator_rows(html: &str, stage: usize) -> Vec<(String, u64, f64, f64)> {
    let open = format!("<table class=\"operators\" id=\"operators-stage-{stage}\">");
    let start = html
        .find(&open)
        .unwrap_or_else(|| panic!("no operator table for stage {stage}"));
    let len = html[start..].find("</table>").expect("table closed");
    let table = &html[start..start + len];
    assert!(
        table.contains(
            "<th class=\"l\">operator</th><th>rows out</th><th>compute ms</th><th>spill MiB</th>"
        ),
        "{table}"
    );
    table
        .split("<tr>")
        .filter(|r| r.starts_with("<td"))
        .map(|r| {
            let cells: Vec<&str> = r
                .split("<td")
                .skip(1)
                .map(|c| {
                    let c = &c[c.find('>').expect("td opened") + 1..];
                    &c[..c.find("</td>").expect("td closed")]
                })
                .collect();
            assert_eq!(cells.len(), 4, "{r}");
            (
                cells[0].to_string(),
                cells[1].parse().expect("rows"),
                cells[2].parse().expect("ms"),
                cells[3].parse().expect("MiB"),
            )
        })
        .collect()
}

/// Each ended stage has an operator table whose root's rows are the
/// stage's output rows; the result stage's root returned the answer's rows.
fn check_operators(html: &str, events: &[engine::events::Event], answer_rows: u64) {
    use engine::events::Event;
    let mut result = None;
    let mut ended = 0;
    for e in events {
        match e {
            Event::StageStart {
                stage_id, output, ..
            } if output == "result" => result = Some(*stage_id),
            Event::StageEnd {
                stage_id,
                rows_out,
                operators,
                ..
            } => {
                ended += 1;
                let rows = operator_rows(html, *stage_id);
                assert_eq!(rows.len(), operators.len(), "stage {stage_id}: {rows:?}");
                assert!(!rows.is_empty(), "stage {stage_id}");
                assert_eq!(rows[0].1, *rows_out, "stage {stage_id} root: {rows:?}");
                for ((name, rows, ms, _), o) in rows.iter().zip(operators) {
                    assert_eq!((name, *rows), (&o.name, o.rows_out));
                    assert!((ms - o.elapsed_ms).abs() <= 0.051, "{name}: {ms} vs {o:?}");
                }
            }
            _ => {}
        }
    }
    assert_eq!(html.matches("<table class=\"operators\"").count(), ended);
    let result = result.expect("a result stage");
    let root = &operator_rows(html, result)[0];
    assert_eq!(root.1, answer_rows, "the result stage's root: {root:?}");
    assert!(root.1 > 0);
}

#[test]
fn q80_html_report_and_report_from_its_event_log() {
    engine::tpcds::ensure_data(0.01, &cache_dir()).expect("generate SF 0.01");
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, html, again) = (
        dir.path().join("events.jsonl"),
        dir.path().join("run.html"),
        dir.path().join("again.html"),
    );
    let o = shovel(&[
        "q80",
        "--sf",
        "0.01",
        "--cache-dir",
        s(&cache_dir()),
        "--executors",
        "2",
        "--event-log",
        s(&log),
        "--event-log-interval",
        "5ms",
        "--html",
        s(&html),
        "--output",
        s(&dir.path().join("q80.csv")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let events = engine::events::read_event_log(&log).expect("event log");
    let tasks = events
        .iter()
        .filter(|e| matches!(e, engine::events::Event::TaskEnd { .. }))
        .count();
    assert!(tasks > 10);
    let first = std::fs::read_to_string(&html).expect("html written");
    check_report(&first, tasks);
    let csv = std::fs::read_to_string(dir.path().join("q80.csv")).expect("answer");
    let answer_rows = csv.lines().count() as u64 - 1; // the header
    check_operators(&first, &events, answer_rows);

    // The same log rendered later gives the same charts.
    let o = shovel(&["report", s(&log), "--html", s(&again)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let second = std::fs::read_to_string(&again).expect("html written");
    check_report(&second, tasks);
    check_operators(&second, &events, answer_rows);
    assert_eq!(figure(&first, "timeline"), figure(&second, "timeline"));

    // A file that is not an event log fails with one line naming it.
    let o = shovel(&["report", s(&html), "--html", s(&again)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run.html line 1"), "{err}");
}
