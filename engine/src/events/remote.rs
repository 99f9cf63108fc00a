//! Samples of executors that are processes of their own (Ballista's), in
//! the driver's event log.
//!
//! ```text
//!  executor process i                        cluster dir                 driver (q80 --engine ballista)
//!  ExecutorSampler thread, every interval:                               EventRecorder's sampler, every interval:
//!    /proc/self (RSS, CPU), engine counters ──▶ executor-i.samples.jsonl ──▶ RemoteExecutors::poll (tail, complete
//!    one JSON line (ExecutorLine), one            (O_APPEND, one write       lines only) ──▶ Sample.executors[i]
//!    write(2) per line; a last line on exit        per line)                 (latest line, t_ms on the log's base)
//!                                                                          + task start/end events of new tasks
//! ```
//!
//! **Why files, tailed while the job runs.** The executors already share a
//! directory with the driver (the local cluster's), and a file is the one
//! channel that survives `kill -9` of its writer with nothing to do: each
//! line is handed to the kernel by a single `write(2)` on an `O_APPEND`
//! file, so a line written before the process died is in the page cache
//! and the driver reads it (no `fsync`: only a machine crash loses it, and
//! the run goes with it). A socket to the driver would need a server, a
//! reconnect policy and a buffer for the lines a dead driver never takes;
//! reading the files only at the end would lose nothing either, but the
//! live exports (`--metrics-addr`, the progress bar) would see the
//! executors only after the job. The driver creates each file before it
//! starts the executor and keeps it open, so the lines stay readable after
//! the cluster directory is deleted (the recorder's last sample, taken
//! after the cluster stopped, reads the executors' last lines). A torn last
//! line (a process killed in the middle of its `write`) is never complete,
//! so it is never parsed.
//!
//! **Time.** Each line carries the executor's wall clock (Unix ms). The
//! executors run on the driver's machine, so the clocks are one; the
//! recorder converts with the wall-clock time of its own start (its
//! [`super::Event::LogStart`]), so an executor's sample and task times land
//! on the log's time base. A driver sample carries each executor's latest
//! line with the time it was taken ([`ExecutorSample::t_ms`]); readers that
//! plot an executor's own series (the HTML report) take a point per new
//! `t_ms`, so a killed executor's line ends where it died.
//!
//! **Tasks.** Each line also lists the tasks committed since the previous
//! one, with their wall-clock start and commit times; the recorder turns
//! them into [`super::Event::TaskStart`] / [`super::Event::TaskEnd`] events
//! (executor = the executor's index in the cluster), and at the end into
//! a start and end event per stage, so the report's timeline and stage
//! table show the Ballista run. Only committed tasks are known (a task the
//! executor lost or failed has no record), and per-task input bytes are
//! not (readers count per executor), so `bytes_in` is 0 and the skew
//! advice does not apply to Ballista runs.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{proc, ExecutorSample};

/// One line an executor process writes: its figures at one instant
/// (counters cumulative since the process started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutorLine {
    /// Wall clock when taken (ms since the Unix epoch).
    pub unix_ms: f64,
    pub pid: u32,
    /// `/proc/self` VmRSS and user + system CPU time.
    pub rss_bytes: u64,
    pub cpu_ms: f64,
    /// Bytes reserved in the executor's shuffle memory pools.
    pub pool_used: u64,
    /// Stored bytes its tasks committed, and its readers fetched (the
    /// figures of its stats file, so the last line agrees with the
    /// summary).
    pub shuffle_bytes_written: u64,
    pub shuffle_bytes_read: u64,
    pub spill_bytes: u64,
    /// What its stores read and wrote, and the requests they made.
    pub store_bytes_read: u64,
    pub store_bytes_written: u64,
    pub store_requests: u64,
    pub running_tasks: usize,
    /// Tasks committed since the previous line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<ExecutorTask>,
}

/// One committed task: which it was and what it wrote (the executor's
/// stats file lists these; [`ExecutorTask`] adds its times).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStat {
    pub stage: u32,
    pub stage_attempt: u32,
    pub task: u32,
    pub task_attempt: u32,
    /// Stored bytes and records of its output.
    pub bytes: u64,
    pub records: u64,
}

/// One task an executor committed, with its times (flattened: the JSON
/// line has the same keys as before the two types were merged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutorTask {
    #[serde(flatten)]
    pub stat: TaskStat,
    /// Wall clock at its start and commit (Unix ms).
    pub start_unix_ms: f64,
    pub end_unix_ms: f64,
}

/// Unix milliseconds of a wall-clock time.
pub fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// Fills a line's engine figures (everything but the time, pid, RSS and
/// CPU, which the sampler reads itself); called on the sampler's thread.
pub type LineSource = Box<dyn FnMut(&mut ExecutorLine) + Send>;

/// The executor side: a thread that appends an [`ExecutorLine`] to a file
/// every interval, and a last one when finished (see the module docs).
pub struct ExecutorSampler {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExecutorSampler {
    /// Opens `path` for appending (creating it) and starts sampling.
    pub fn start(path: &Path, interval: Duration, mut source: LineSource) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let interval = interval.max(Duration::from_millis(1));
        let pid = std::process::id();
        let thread = std::thread::Builder::new()
            .name("shovel-exec-samples".into())
            .spawn(move || {
                let mut buf = Vec::new();
                // Set once the stop was seen: that line is the last.
                let mut last = false;
                loop {
                    let mut line = ExecutorLine {
                        unix_ms: unix_ms(SystemTime::now()),
                        pid,
                        rss_bytes: proc::rss_bytes().unwrap_or(0),
                        cpu_ms: proc::cpu_ms().unwrap_or(0.0),
                        ..Default::default()
                    };
                    source(&mut line);
                    buf.clear();
                    if serde_json::to_writer(&mut buf, &line).is_ok() {
                        buf.push(b'\n');
                        // One write per line: a kill leaves whole lines
                        // (and at most a torn last one, never parsed).
                        if file.write_all(&buf).is_err() {
                            return;
                        }
                    }
                    if last {
                        return;
                    }
                    let (lock, cv) = &*flag;
                    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (guard, _) = cv
                        .wait_timeout_while(guard, interval, |stopped| !*stopped)
                        .unwrap_or_else(|p| p.into_inner());
                    last = *guard;
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Writes a last line and stops.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ExecutorSampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// One executor's samples file, as the driver reads it.
#[derive(Debug)]
struct Tail {
    executor: usize,
    path: PathBuf,
    file: std::fs::File,
    /// Read so far.
    offset: u64,
    /// An incomplete last line.
    partial: Vec<u8>,
}

/// The driver side: the samples files of a cluster's executors, read as
/// they grow (see the module docs). Attach it to the run's recorder
/// ([`super::EventRecorder::attach_remote`]).
#[derive(Debug, Default)]
pub struct RemoteExecutors {
    tails: Mutex<Vec<Tail>>,
}

impl RemoteExecutors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates (empties) executor `executor`'s samples file at `path` and
    /// keeps it open for reading: give the path to the executor.
    pub fn add(&self, executor: usize, path: &Path) -> std::io::Result<()> {
        std::fs::File::create(path)?;
        let file = std::fs::File::open(path)?;
        self.lock().push(Tail {
            executor,
            path: path.to_path_buf(),
            file,
            offset: 0,
            partial: Vec::new(),
        });
        Ok(())
    }

    /// Executors added.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The complete lines written since the last call, by executor, in
    /// the order each wrote them. A line that does not parse is skipped
    /// (with a warning): one bad line must not cost the others.
    pub fn poll(&self) -> Vec<(usize, ExecutorLine)> {
        let mut out = Vec::new();
        for t in self.lock().iter_mut() {
            let mut bytes = Vec::new();
            let read = t
                .file
                .seek(SeekFrom::Start(t.offset))
                .and_then(|_| t.file.read_to_end(&mut bytes));
            if let Err(e) = read {
                tracing::warn!(path = %t.path.display(), "reading executor samples: {e}");
                continue;
            }
            t.offset += bytes.len() as u64;
            t.partial.extend_from_slice(&bytes);
            let Some(end) = t.partial.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = t.partial.drain(..=end).collect();
            for line in complete.split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<ExecutorLine>(line) {
                    Ok(l) => out.push((t.executor, l)),
                    Err(e) => tracing::warn!(
                        path = %t.path.display(),
                        "skipping an executor sample line that does not parse: {e}"
                    ),
                }
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Tail>> {
        self.tails.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ExecutorLine {
    /// As a sample of executor `executor`, taken at `t_ms` on the log's
    /// time base. `bytes_in` / `bytes_out` are the shuffle bytes (what
    /// its tasks read from and wrote to shuffle).
    pub fn to_sample(&self, executor: usize, t_ms: f64) -> ExecutorSample {
        ExecutorSample {
            executor,
            running_tasks: self.running_tasks,
            bytes_in: self.shuffle_bytes_read,
            bytes_out: self.shuffle_bytes_written,
            shuffle_bytes_written: self.shuffle_bytes_written,
            shuffle_bytes_read: self.shuffle_bytes_read,
            spill_bytes: self.spill_bytes,
            cpu_ms: self.cpu_ms,
            t_ms: Some(t_ms),
            pid: self.pid,
            rss_bytes: self.rss_bytes,
            pool_used: self.pool_used,
            store_bytes_read: self.store_bytes_read,
            store_bytes_written: self.store_bytes_written,
            store_requests: self.store_requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_they_grow_and_a_torn_last_line_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let feed = RemoteExecutors::new();
        feed.add(3, &path).unwrap();
        assert!(feed.poll().is_empty());
        let line = |n: u64| {
            let mut s = serde_json::to_string(&ExecutorLine {
                unix_ms: 1.0,
                shuffle_bytes_written: n,
                ..Default::default()
            })
            .unwrap();
            s.push('\n');
            s
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let second = line(2);
        write!(f, "{}{}", line(1), &second[..10]).unwrap();
        let got = feed.poll();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.shuffle_bytes_written), (3, 1));
        writeln!(f, "{}not json", &second[10..]).unwrap();
        // The directory goes (the cluster stopped): the open file is read.
        drop(dir);
        let got = feed.poll();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1.shuffle_bytes_written, 2);
        assert!(feed.poll().is_empty());
    }

    #[test]
    fn the_sampler_writes_lines_and_a_last_one_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let feed = RemoteExecutors::new();
        feed.add(0, &path).unwrap();
        let mut n = 0;
        let s = ExecutorSampler::start(
            &path,
            Duration::from_millis(5),
            Box::new(move |l: &mut ExecutorLine| {
                n += 1;
                l.shuffle_bytes_written = n;
            }),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        s.finish();
        let lines = feed.poll();
        assert!(lines.len() >= 3, "{}", lines.len());
        let last = &lines.last().unwrap().1;
        assert_eq!(last.shuffle_bytes_written, lines.len() as u64);
        assert!(last.rss_bytes > 0 && last.pid == std::process::id());
        assert!(lines.windows(2).all(|w| w[0].1.unix_ms <= w[1].1.unix_ms));
    }
}
