//! The HTML report in a real browser: headless Chromium (Debian's
//! `chromium`) opens the report of a q80 run (SF 0.01, two executors),
//! takes a screenshot and dumps the DOM it built. The screenshot must
//! decode and show the charts' colours; the DOM must hold Glue's five
//! charts, each with a line that moved over several samples, and the
//! timeline with a bar per task attempt.
//!
//! Chromium comes from Debian's packages: when it is missing, the set-up
//! installs it (`apt-get install chromium`, as root, non-interactive; `.ci/run`
//! does the same before `cargo test`). The tests are skipped, with a message
//! on stderr, only when it cannot be installed.
//!
//! The checks can fail: a report whose CPU chart is flat fails the DOM
//! check naming that chart, and a blank page fails the screenshot check
//! (`browser_checks_fail_on_a_flat_chart_and_a_blank_page`).
//!
//! The screenshot is kept in `CARGO_TARGET_TMPDIR/report_browser/q80.png`.

mod common;

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::moving_lines;
use engine::events::{read_event_log, render_html, Event};

/// Glue's five charts, by the id of their `<figure id="chart-...">`.
const GLUE_CHARTS: [&str; 5] = ["etl", "memory", "shuffle", "cpu", "execution"];

/// The first series colours of the report (`engine/src/events/html.rs`).
const PALETTE: [[u8; 3]; 5] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
];

const WINDOW: (usize, usize) = (1400, 4000);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_browser")
}

// ---------------------------------------------------------------- chromium

/// Chromium's path: on `PATH`, else installed with apt-get (root only).
/// `None` (after a message on stderr) when it cannot be had.
fn chromium() -> Option<&'static Path> {
    static CHROMIUM: OnceLock<Option<PathBuf>> = OnceLock::new();
    CHROMIUM
        .get_or_init(|| {
            if let Some(p) = find_chromium() {
                return Some(p);
            }
            match install_chromium() {
                Ok(()) => find_chromium().or_else(|| {
                    eprintln!(
                        "report_browser: SKIPPED: apt-get installed chromium but it is not on PATH"
                    );
                    None
                }),
                Err(why) => {
                    eprintln!(
                        "report_browser: SKIPPED: chromium is not installed and cannot be \
                         installed ({why}); install Debian's `chromium` package to run this test"
                    );
                    None
                }
            }
        })
        .as_deref()
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

fn install_chromium() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root, so apt-get cannot install it".into());
    }
    eprintln!("report_browser: installing chromium with apt-get (once)");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium"][..],
    ] {
        let o = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "apt-get {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Runs headless Chromium on `file` with `mode` (`--dump-dom` or
/// `--screenshot=...`) and a fresh profile; returns its stdout. Panics if
/// it fails or takes more than two minutes.
fn headless(chromium: &Path, mode: &str, file: &Path) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = tempfile::NamedTempFile::new().expect("stdout file");
    let err = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", s(profile.path())))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(mode)
        .arg(format!("file://{}", s(&file.canonicalize().expect("file"))))
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("stdout"))
        .stderr(err.reopen().expect("stderr"))
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for chromium") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {mode} took over 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    assert!(status.success(), "chromium {mode}: {status}\n{stderr}");
    let mut stdout = String::new();
    File::open(out.path())
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("utf-8 stdout");
    stdout
}

// ---------------------------------------------------------------- the DOM

/// The serialized `<figure id="chart-{id}">` element of the browser's DOM.
fn figure<'a>(dom: &'a str, id: &str) -> Result<&'a str, String> {
    let start = dom
        .find(&format!("<figure id=\"chart-{id}\">"))
        .ok_or_else(|| format!("the browser's DOM has no chart {id}"))?;
    let len = dom[start..]
        .find("</figure>")
        .ok_or_else(|| format!("chart {id} is not closed"))?;
    Ok(&dom[start..start + len])
}

/// Checks the DOM Chromium built from a report: Glue's five charts, each
/// one SVG with a line that moved over at least `min_points` samples, and
/// the timeline with at least `tasks` bars and its lane labels.
fn check_dom(dom: &str, min_points: usize, tasks: usize) -> Result<(), String> {
    if !dom.contains("<body>") || !dom.contains("Glue's five job metrics") {
        return Err(format!(
            "not the report's DOM: {}",
            &dom[..dom.len().min(300)]
        ));
    }
    for id in GLUE_CHARTS {
        let f = figure(dom, id)?;
        if f.matches("<svg").count() != 1 {
            return Err(format!(
                "chart {id} has {} <svg>",
                f.matches("<svg").count()
            ));
        }
        let lines = moving_lines(f);
        if !lines.iter().any(|n| *n >= min_points) {
            return Err(format!(
                "chart {id} drew no data (lines that moved, by points: {lines:?})"
            ));
        }
    }
    let t = figure(dom, "timeline")?;
    let bars = t.matches("<rect").count();
    if bars < tasks {
        return Err(format!("timeline: {bars} bars for {tasks} task attempts"));
    }
    for label in ["executor 0", "executor 1", "stage 0"] {
        if !t.contains(label) {
            return Err(format!("timeline: no label {label:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the PNG

/// An 8-bit RGB(A) PNG, decoded to RGB pixels.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Decodes what Chromium writes: 8-bit RGB or RGBA, not interlaced (the
/// IDAT chunks inflated by flate2, then each row unfiltered).
fn decode_png(bytes: &[u8]) -> Result<Image, String> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    if !bytes.starts_with(&SIGNATURE) {
        return Err("no PNG signature".into());
    }
    let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    let mut pos = SIGNATURE.len();
    loop {
        let head = bytes.get(pos..pos + 8).ok_or("truncated: no IEND chunk")?;
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let data = bytes.get(pos + 8..pos + 8 + len).ok_or("truncated chunk")?;
        match &head[4..8] {
            b"IHDR" => {
                let be = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().unwrap());
                (width, height) = (be(0) as usize, be(4) as usize);
                let (depth, colour, interlace) = (data[8], data[9], data[12]);
                channels = match (depth, colour, interlace) {
                    (8, 2, 0) => 3,
                    (8, 6, 0) => 4,
                    _ => {
                        return Err(format!(
                            "unsupported PNG: depth {depth}, colour type {colour}, \
                             interlace {interlace}"
                        ))
                    }
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len; // length, type, data, CRC
    }
    if channels == 0 {
        return Err("no IHDR chunk".into());
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(idat.as_slice())
        .read_to_end(&mut raw)
        .map_err(|e| format!("IDAT does not inflate: {e}"))?;
    let stride = width * channels;
    if raw.len() != height * (stride + 1) {
        return Err(format!(
            "{} bytes of pixels for {width}x{height}x{channels}",
            raw.len()
        ));
    }
    let mut prev = vec![0u8; stride];
    let mut cur = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(width * height);
    for row in raw.chunks_exact(stride + 1) {
        let (filter, line) = (row[0], &row[1..]);
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let c = if i >= channels { prev[i - channels] } else { 0 };
            let b = prev[i];
            cur[i] = line[i].wrapping_add(match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => paeth(a, b, c),
                f => return Err(format!("unknown row filter {f}")),
            });
        }
        rgb.extend(cur.chunks_exact(channels).map(|p| [p[0], p[1], p[2]]));
        std::mem::swap(&mut prev, &mut cur);
    }
    Ok(Image { width, height, rgb })
}

/// Checks a screenshot of the report: a PNG of the window's size that is
/// not blank (1% of its pixels away from white) and shows at least three
/// of the charts' series colours (100 pixels each).
fn check_screenshot(png: &[u8]) -> Result<(), String> {
    let img = decode_png(png)?;
    if (img.width, img.height) != WINDOW {
        return Err(format!(
            "screenshot is {}x{}, not {}x{}",
            img.width, img.height, WINDOW.0, WINDOW.1
        ));
    }
    let inked = img
        .rgb
        .iter()
        .filter(|p| p.iter().any(|c| *c < 235))
        .count();
    if inked * 100 < img.rgb.len() {
        return Err(format!(
            "screenshot is blank: {inked} of {} pixels are not white",
            img.rgb.len()
        ));
    }
    let near = |p: &[u8; 3], q: &[u8; 3]| p.iter().zip(q).all(|(a, b)| a.abs_diff(*b) <= 6);
    let counts: Vec<usize> = PALETTE
        .iter()
        .map(|c| img.rgb.iter().filter(|p| near(p, c)).count())
        .collect();
    if counts.iter().filter(|n| **n >= 100).count() < 3 {
        return Err(format!(
            "screenshot shows too little of the series colours {PALETTE:?}: pixels {counts:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- the run

/// The q80 run the tests share: its event log and HTML report.
struct Run {
    log: PathBuf,
    html: PathBuf,
}

fn q80() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache");
        engine::tpcds::ensure_data(0.01, &cache).expect("generate SF 0.01");
        let dir = out_dir();
        std::fs::create_dir_all(&dir).expect("output dir");
        let run = Run {
            log: dir.join("q80.jsonl"),
            html: dir.join("q80.html"),
        };
        let o = Command::new(env!("CARGO_BIN_EXE_shovel"))
            .args(["q80", "--sf", "0.01", "--cache-dir", s(&cache)])
            .args(["--executors", "2", "--event-log-interval", "5ms"])
            .args(["--event-log", s(&run.log), "--html", s(&run.html)])
            .args(["--output", s(&dir.join("q80.csv"))])
            .env_remove("SHOVEL_S3_BUCKET")
            .env_remove("SHOVEL_S3_ENDPOINT")
            .output()
            .expect("run shovel");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        run
    })
}

fn task_attempts(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::TaskEnd { .. }))
        .count()
}

#[test]
fn q80_report_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let run = q80();
    let events = read_event_log(&run.log).expect("event log");
    let tasks = task_attempts(&events);
    assert!(tasks > 10, "{tasks} task attempts");

    let shot = out_dir().join("q80.png");
    let _ = std::fs::remove_file(&shot);
    headless(chromium, &format!("--screenshot={}", s(&shot)), &run.html);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    check_screenshot(&png).unwrap();
    eprintln!("report_browser: screenshot in {}", shot.display());

    let dom = headless(chromium, "--dump-dom", &run.html);
    check_dom(&dom, 5, tasks).unwrap();
}

#[test]
fn browser_checks_fail_on_a_flat_chart_and_a_blank_page() {
    let Some(chromium) = chromium() else {
        return;
    };
    let mut events = read_event_log(&q80().log).expect("event log");
    let tasks = task_attempts(&events);
    let dir = tempfile::tempdir().expect("temp dir");

    // The same run with no CPU used: its chart draws flat lines only.
    for e in &mut events {
        if let Event::Sample {
            process, executors, ..
        } = e
        {
            process.cpu_load = 0.0;
            process.cpu_ms = 0.0;
            for x in executors {
                x.cpu_ms = 0.0;
            }
        }
    }
    let flat = dir.path().join("flat.html");
    std::fs::write(&flat, render_html(&events, &[], "flat CPU").unwrap()).unwrap();
    let dom = headless(chromium, "--dump-dom", &flat);
    let e = check_dom(&dom, 5, tasks).expect_err("a flat CPU chart fails the check");
    assert!(e.contains("chart cpu drew no data"), "{e}");

    // A page with nothing on it: a blank screenshot.
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let shot = dir.path().join("blank.png");
    headless(chromium, &format!("--screenshot={}", s(&shot)), &blank);
    let e = check_screenshot(&std::fs::read(&shot).unwrap()).expect_err("blank page");
    assert!(e.contains("blank"), "{e}");
}
