//! A minimal progress bar on stderr, drawn only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// True when progress should be drawn: stderr is a terminal and not quiet.
pub fn enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

struct State {
    pos: u64,
    msg: String,
    last_draw: Option<Instant>,
    drawn: bool,
}

/// `label [#######-------] pos/total  msg  12.3s`, redrawn at most every 100 ms.
/// Thread-safe; a disabled bar does nothing.
pub struct Bar {
    enabled: bool,
    label: String,
    total: u64,
    start: Instant,
    state: Mutex<State>,
}

impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bar")
            .field("label", &self.label)
            .field("total", &self.total)
            .finish()
    }
}

const WIDTH: u64 = 30;

impl Bar {
    pub fn new(label: impl Into<String>, total: u64, enabled: bool) -> Self {
        Self {
            enabled,
            label: label.into(),
            total: total.max(1),
            start: Instant::now(),
            state: Mutex::new(State {
                pos: 0,
                msg: String::new(),
                last_draw: None,
                drawn: false,
            }),
        }
    }

    /// Sets the position and message; redraws if due (or `pos` reached the end).
    pub fn set(&self, pos: u64, msg: &str) {
        if !self.enabled {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let changed_pos = pos != st.pos;
        st.pos = pos.min(self.total);
        st.msg.clear();
        st.msg.push_str(msg);
        let due = st
            .last_draw
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if due || (changed_pos && pos >= self.total) {
            self.draw(&mut st);
        }
    }

    fn draw(&self, st: &mut State) {
        let filled = (st.pos * WIDTH / self.total) as usize;
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH as usize - filled);
        let mut line = format!(
            "\r{} [{bar}] {}/{}  {}  {:.1}s\x1b[K",
            self.label,
            st.pos,
            self.total,
            st.msg,
            self.start.elapsed().as_secs_f64()
        );
        // Keep the line short enough not to wrap on narrow terminals.
        if line.len() > 160 {
            line.truncate(line.floor_char_boundary(157));
            line.push_str("\x1b[K");
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        st.last_draw = Some(Instant::now());
        st.drawn = true;
    }

    /// Erases the bar.
    pub fn finish(&self) {
        if !self.enabled {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::take(&mut st.drawn) {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[K");
            let _ = err.flush();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
