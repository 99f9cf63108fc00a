//! The CLI side of [`crate::events`]: one recorder per q80 run (the event
//! log, `--event-log`), kept in the [`RunReport`].

use std::path::PathBuf;
use std::sync::Arc;

use shuffle_core::ShuffleManager;

use crate::config::EngineConfig;
use crate::events::{advise, AdviceThresholds, EventRecorder, RecorderOptions};

use super::report::RunReport;
use super::run::Q80Job;
use super::CliError;

/// Starts recording a run's events: always in memory (the report's advice
/// reads them), to `job.event_log` too when set.
pub(crate) fn start_recorder(
    job: &Q80Job,
    config: &EngineConfig,
    manager: &Arc<dyn ShuffleManager>,
    disk_dir: Option<PathBuf>,
) -> Result<Arc<EventRecorder>, CliError> {
    EventRecorder::start(
        Arc::clone(manager),
        RecorderOptions {
            path: job.event_log.clone(),
            interval: job.event_log_interval,
            executors: config.executors.max(1),
            slots: config.parallelism.max(1),
            disk_dirs: disk_dir.into_iter().collect(),
        },
    )
    .map_err(CliError::runtime)
}

/// Stops recording and puts the events, and the advice they call for,
/// into the report.
pub(crate) fn finish_recorder(
    recorder: &EventRecorder,
    report: &mut RunReport,
) -> Result<(), CliError> {
    let events = recorder.finish().map_err(CliError::runtime)?;
    report.advice = advise(&events, &AdviceThresholds::default());
    report.events = events;
    Ok(())
}
