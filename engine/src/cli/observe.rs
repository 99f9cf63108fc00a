//! The CLI side of [`crate::events`]: one recorder per q80 run (the event
//! log, `--event-log`), kept in the [`RunReport`]; the HTML report of a run
//! (`--html`) or of a saved log (`shovel report EVENTLOG --html FILE`); the
//! exports the recorder feeds as it records (`--emf`, `--metrics-addr`).

use std::path::PathBuf;
use std::sync::Arc;

use shuffle_core::ShuffleManager;

use crate::config::EngineConfig;
use crate::events::{
    advise, read_event_log, render_html, AdviceThresholds, EmfWriter, Event, EventObserver,
    EventRecorder, PromMetrics, RecorderOptions,
};

use super::args::ReportArgs;
use super::metrics_server::MetricsServer;
use super::report::RunReport;
use super::run::Q80Job;
use super::CliError;

/// `JobName` of the EMF lines.
pub const EMF_JOB_NAME: &str = "shovel-q80";

/// Starts recording a run's events: always in memory (the report's advice
/// reads them), to `job.event_log` too when set; with `job.emf`, as EMF
/// lines too; with `job.metrics_addr`, served as Prometheus metrics until
/// the returned server is dropped; samples also feed the `progress` bar.
pub(crate) fn start_recorder(
    job: &Q80Job,
    config: &EngineConfig,
    manager: &Arc<dyn ShuffleManager>,
    disk_dir: Option<PathBuf>,
    progress: Arc<dyn EventObserver>,
) -> Result<(Arc<EventRecorder>, Option<MetricsServer>), CliError> {
    let mut observers: Vec<Arc<dyn EventObserver>> = vec![progress];
    if let Some(path) = &job.emf {
        let emf =
            EmfWriter::create(path, EMF_JOB_NAME, manager.app_id()).map_err(CliError::runtime)?;
        observers.push(Arc::new(emf));
    }
    let server = match job.metrics_addr {
        Some(addr) => {
            let prom = Arc::new(PromMetrics::new());
            observers.push(prom.clone());
            let server = MetricsServer::start(addr, prom)?;
            eprintln!("metrics: serving http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let recorder = EventRecorder::start(
        Arc::clone(manager),
        RecorderOptions {
            path: job.event_log.clone(),
            interval: job.event_log_interval,
            executors: config.executors.max(1),
            slots: config.parallelism.max(1),
            disk_dirs: disk_dir.into_iter().collect(),
            observers,
        },
    )
    .map_err(CliError::runtime)?;
    Ok((recorder, server))
}

/// Stops recording and puts the events, and the advice they call for,
/// into the report.
pub(crate) fn finish_recorder(
    recorder: &EventRecorder,
    report: &mut RunReport,
) -> Result<(), CliError> {
    let events = recorder.finish().map_err(CliError::runtime)?;
    report.advice = advise(&events, &AdviceThresholds::default());
    tracing::debug!(
        events = events.len(),
        samples = recorder.samples(),
        advice = report.advice.len(),
        "event recorder finished"
    );
    report.events = events;
    Ok(())
}

/// The HTML report of a finished (or failed) q80 run (`--html`).
pub(crate) fn html_of_run(report: &RunReport) -> Result<String, CliError> {
    let sf = report.sf.map(|s| format!(" SF{s}")).unwrap_or_default();
    let title = format!(
        "shovel q80{sf}: shuffle on {}, {} stages",
        report.backend_kind, report.planned_stages
    );
    render_html(&report.events, &report.advice, &title).map_err(CliError::runtime)
}

/// `shovel report EVENTLOG --html FILE`: renders a saved event log, with
/// the advice it calls for (also printed on stderr).
pub fn run_report(args: &ReportArgs) -> Result<(), CliError> {
    let events = read_event_log(&args.event_log).map_err(CliError::usage)?;
    if !events.iter().any(|e| matches!(e, Event::Sample { .. })) {
        return Err(CliError::usage(format!(
            "event log {} has no samples; give a file `shovel q80 --event-log` wrote",
            args.event_log.display()
        )));
    }
    let advice = advise(&events, &AdviceThresholds::default());
    let title = format!("shovel report: {}", args.event_log.display());
    let html = render_html(&events, &advice, &title).map_err(CliError::runtime)?;
    super::check_output_path("--html", &args.html)?;
    std::fs::write(&args.html, html)
        .map_err(|e| CliError::runtime(format!("writing --html {}: {e}", args.html.display())))?;
    for a in &advice {
        eprintln!("advice: {a}");
    }
    eprintln!("wrote {}", args.html.display());
    Ok(())
}
