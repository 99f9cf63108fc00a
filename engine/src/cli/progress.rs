//! Progress bars on stderr (`indicatif`), drawn only when stderr is a
//! terminal.
//!
//! A [`Bar`] counts steps (q80's stages, generated tables) and shows a
//! message, the elapsed time and an ETA. During a q80 run it also observes
//! the event recorder ([`EventObserver`]): each sample's running and
//! pending tasks and shuffle bytes written are shown next to the message,
//! once the bar has [`Bar::start`]ed (so a run that never draws it, such
//! as `--engine datafusion`, shows nothing).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, EventObserver};

/// True when progress should be drawn: stderr is a terminal and not quiet.
pub fn enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// `label [#####-----] pos/total  msg | tasks  elapsed (ETA)`, redrawn at
/// most 10 times a second. Thread-safe; a disabled bar draws nothing.
pub struct Bar {
    pb: ProgressBar,
    label: String,
    /// Draw on stderr once started (hidden until then).
    enabled: bool,
    started: AtomicBool,
    text: Mutex<Text>,
}

#[derive(Default)]
struct Text {
    msg: String,
    tasks: String,
}

impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bar")
            .field("label", &self.label)
            .field("total", &self.pb.length())
            .finish()
    }
}

const TEMPLATE: &str = "{prefix} [{bar:30}] {pos}/{len}  {wide_msg}  {elapsed} (ETA {eta})";

impl Bar {
    pub fn new(label: impl Into<String>, total: u64, enabled: bool) -> Self {
        let label = label.into();
        let pb = ProgressBar::with_draw_target(Some(total.max(1)), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-");
        pb.set_style(style);
        pb.set_prefix(label.clone());
        Self {
            pb,
            label,
            enabled,
            started: AtomicBool::new(false),
            text: Mutex::new(Text::default()),
        }
    }

    /// Sets the number of steps (when it is known only after the bar was
    /// handed to the recorder) and starts showing task samples.
    pub fn start(&self, total: u64) {
        self.pb.set_length(total.max(1));
        self.pb.reset_eta();
        self.begin();
    }

    /// The first start or set: from here on the bar draws (if enabled).
    fn begin(&self) {
        if !self.started.swap(true, Ordering::Relaxed) && self.enabled {
            self.pb
                .set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        }
    }

    /// Sets the position and message.
    pub fn set(&self, pos: u64, msg: &str) {
        self.begin();
        let mut t = self.text.lock().unwrap_or_else(|p| p.into_inner());
        t.msg.clear();
        t.msg.push_str(msg);
        self.pb.set_position(pos);
        self.pb.set_message(Self::line(&t));
    }

    fn line(t: &Text) -> String {
        if t.tasks.is_empty() {
            t.msg.clone()
        } else {
            format!("{} | {}", t.msg, t.tasks)
        }
    }

    /// The message currently shown (with the tasks part).
    pub fn message(&self) -> String {
        self.pb.message()
    }

    /// Erases the bar.
    pub fn finish(&self) {
        if !self.pb.is_finished() {
            self.pb.finish_and_clear();
        }
    }
}

impl EventObserver for Bar {
    fn observe(&self, event: &Event) {
        let Event::Sample { process: p, .. } = event else {
            return;
        };
        // Not started yet, or erased: a sample redraws nothing.
        if !self.started.load(Ordering::Relaxed) || self.pb.is_finished() {
            return;
        }
        let mut t = self.text.lock().unwrap_or_else(|p| p.into_inner());
        t.tasks = format!(
            "tasks: {} running, {} pending | shuffle {} written",
            p.running_tasks,
            p.pending_tasks,
            HumanBytes(p.shuffle_bytes_written)
        );
        self.pb.set_message(Self::line(&t));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ProcessSample;

    #[test]
    fn samples_show_running_and_pending_tasks_once_started() {
        let bar = Bar::new("q80", 1, false);
        let sample = Event::Sample {
            t_ms: 1.0,
            process: ProcessSample {
                running_tasks: 3,
                pending_tasks: 5,
                shuffle_bytes_written: 2048,
                ..Default::default()
            },
            executors: Vec::new(),
        };
        bar.observe(&sample);
        assert_eq!(bar.message(), "", "not started: nothing shown");
        bar.start(4);
        bar.set(1, "stages done");
        bar.observe(&sample);
        assert_eq!(
            bar.message(),
            "stages done | tasks: 3 running, 5 pending | shuffle 2.00 KiB written"
        );
        bar.set(2, "stages done (last: stage 1)");
        assert!(bar
            .message()
            .starts_with("stages done (last: stage 1) | tasks: 3 running"));
        bar.finish();
        bar.finish();
    }
}
