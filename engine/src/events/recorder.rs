//! [`EventRecorder`]: the [`EventSink`] that writes the log and samples.
//!
//! Every event goes through one mutex: it is stamped, kept in memory, and
//! (with a path) written as one JSON line to a buffered file. A sampler
//! thread (a plain thread, so samples keep coming while the runtime's
//! workers are all busy) takes a [`Event::Sample`] every interval until
//! [`EventRecorder::finish`], which takes a last one, flushes and returns
//! every event. A write error is kept and reported by `finish` (the job is
//! not failed for it mid-run).
//!
//! With executors that are processes of their own (Ballista's), the driver
//! attaches their samples files ([`EventRecorder::attach_remote`], see
//! [`super::remote`]): each sample then reads their new lines, carries each
//! executor process's latest figures in `executors`, adds their shuffle,
//! store and task figures to the process sample, and records their
//! committed tasks as task events.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use shuffle_core::{MetricsSnapshot, ShuffleManager};

use super::remote::{ExecutorTask, RemoteExecutors};
use super::{proc, Event, EventSink, ExecutorSample, ProcessSample, TaskKey};
use crate::metrics::TaskMetrics;

/// Sees every event the recorder records, in order, as it is recorded
/// (the exports: `--emf`, `--metrics-addr`). Called under the recorder's
/// lock, so it must be quick and must not call back into the recorder.
pub trait EventObserver: Send + Sync {
    fn observe(&self, event: &Event);
    /// The recorder finished (after its last sample); flush, and report a
    /// write error.
    fn finish(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How an [`EventRecorder`] records.
#[derive(Clone)]
pub struct RecorderOptions {
    /// Write the log here (JSON lines); `None`: keep it in memory only.
    pub path: Option<PathBuf>,
    /// Time between samples (`--event-log-interval`, 100 ms by default).
    pub interval: Duration,
    /// Executors and task slots of the session (for "max needed executors").
    pub executors: usize,
    pub slots: usize,
    /// Local shuffle/spill directories, for the free space on their disks.
    pub disk_dirs: Vec<PathBuf>,
    /// Also handed every event (see [`EventObserver`]).
    pub observers: Vec<Arc<dyn EventObserver>>,
}

impl std::fmt::Debug for RecorderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderOptions")
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("executors", &self.executors)
            .field("slots", &self.slots)
            .field("disk_dirs", &self.disk_dirs)
            .field("observers", &self.observers.len())
            .finish()
    }
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            path: None,
            interval: Duration::from_millis(100),
            executors: 1,
            slots: 1,
            disk_dirs: Vec::new(),
            observers: Vec::new(),
        }
    }
}

struct Running {
    executor: usize,
    metrics: Option<Arc<TaskMetrics>>,
}

/// Finished tasks' counters of one executor.
#[derive(Default, Clone)]
struct Totals {
    bytes_in: u64,
    bytes_out: u64,
    shuffle_bytes_written: u64,
    shuffle_bytes_read: u64,
    spill_bytes: u64,
    cpu_ms: f64,
}

struct Inner {
    observers: Vec<Arc<dyn EventObserver>>,
    writer: Option<std::io::BufWriter<std::fs::File>>,
    error: Option<String>,
    events: Vec<Event>,
    running: HashMap<TaskKey, Running>,
    finished: Vec<Totals>,
    /// Tasks of started stages not yet finished successfully.
    outstanding: usize,
    completed_stages: usize,
    /// CPU time and wall time at the previous sample.
    last_cpu: f64,
    last_t: f64,
    /// Executor processes' samples, when attached.
    remote: Option<Remote>,
}

/// What the recorder keeps of executor processes (see the module docs).
struct Remote {
    feed: Arc<RemoteExecutors>,
    /// Each executor's latest sample, by its index in the cluster.
    latest: BTreeMap<usize, ExecutorSample>,
    /// Every task they committed (executor, task): stages at the end.
    tasks: Vec<(usize, ExecutorTask)>,
}

/// Records events (see the module docs). Install with
/// `Session::set_event_sink`, call [`EventRecorder::finish`] when the job
/// is done.
pub struct EventRecorder {
    origin: Instant,
    /// Wall clock at `origin` (Unix ms): executor processes' times are
    /// converted with it.
    origin_unix_ms: f64,
    manager: Arc<dyn ShuffleManager>,
    base: MetricsSnapshot,
    cpu_base: f64,
    opts: RecorderOptions,
    inner: Mutex<Inner>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    sampler: Mutex<Option<std::thread::JoinHandle<()>>>,
    samples: AtomicU64,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("path", &self.opts.path)
            .field("interval", &self.opts.interval)
            .finish()
    }
}

impl EventRecorder {
    /// Starts recording: opens the log (if any), writes its first line and
    /// a first sample, and starts the sampler thread.
    pub fn start(
        manager: Arc<dyn ShuffleManager>,
        opts: RecorderOptions,
    ) -> Result<Arc<Self>, String> {
        let writer = match &opts.path {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
                |e| {
                    format!(
                        "cannot create event log {}: {e}; choose a writable path",
                        p.display()
                    )
                },
            )?)),
            None => None,
        };
        let cpu_base = proc::cpu_ms().unwrap_or(0.0);
        let origin_unix_ms = super::remote::unix_ms(std::time::SystemTime::now());
        let rec = Arc::new(Self {
            origin: Instant::now(),
            origin_unix_ms,
            base: manager.metrics().snapshot(),
            manager,
            cpu_base,
            inner: Mutex::new(Inner {
                observers: opts.observers.clone(),
                writer,
                error: None,
                events: Vec::new(),
                running: HashMap::new(),
                finished: vec![Totals::default(); opts.executors.max(1)],
                outstanding: 0,
                completed_stages: 0,
                last_cpu: 0.0,
                last_t: 0.0,
                remote: None,
            }),
            opts,
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            sampler: Mutex::new(None),
            samples: AtomicU64::new(0),
        });
        rec.emit(Event::LogStart {
            t_ms: 0.0,
            unix_ms: origin_unix_ms as u64,
            version: env!("CARGO_PKG_VERSION").to_string(),
            interval_ms: rec.opts.interval.as_secs_f64() * 1e3,
        });
        rec.sample();
        let weak: Weak<Self> = Arc::downgrade(&rec);
        let stop = Arc::clone(&rec.stop);
        let interval = rec.opts.interval.max(Duration::from_millis(1));
        let handle = std::thread::Builder::new()
            .name("shovel-events".into())
            .spawn(move || loop {
                let (lock, cv) = &*stop;
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let (guard, _) = cv
                    .wait_timeout_while(guard, interval, |stopped| !*stopped)
                    .unwrap_or_else(|p| p.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                match weak.upgrade() {
                    Some(rec) => rec.sample(),
                    None => return,
                }
            })
            .map_err(|e| format!("cannot start the event sampler thread: {e}"))?;
        *rec.sampler.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(rec)
    }

    /// Milliseconds since the start, to the microsecond (enough for a
    /// timeline, and short lines).
    fn now_ms(&self) -> f64 {
        round3(self.origin.elapsed().as_secs_f64() * 1e3)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, every sample reads the samples files of these executor
    /// processes (see the module docs).
    pub fn attach_remote(&self, feed: Arc<RemoteExecutors>) {
        self.lock().remote = Some(Remote {
            feed,
            latest: BTreeMap::new(),
            tasks: Vec::new(),
        });
    }

    /// A wall-clock time (Unix ms) on the log's time base.
    fn log_ms(&self, unix_ms: f64) -> f64 {
        round3((unix_ms - self.origin_unix_ms).max(0.0))
    }

    /// Reads the executor processes' new lines: their new tasks become
    /// task events, their latest samples replace `executors` and add to
    /// `process` (see the module docs).
    fn sample_remote(
        &self,
        inner: &mut Inner,
        t: f64,
        process: &mut ProcessSample,
        executors: &mut Vec<ExecutorSample>,
    ) {
        let Some(mut remote) = inner.remote.take() else {
            return;
        };
        for (e, line) in remote.feed.poll() {
            for task in &line.tasks {
                let (start, end) = (
                    self.log_ms(task.start_unix_ms),
                    self.log_ms(task.end_unix_ms),
                );
                Self::push(
                    inner,
                    Event::TaskStart {
                        t_ms: start,
                        stage_id: task.stat.stage as usize,
                        partition: task.stat.task as usize,
                        attempt: task.stat.task_attempt,
                        executor: e,
                    },
                );
                Self::push(
                    inner,
                    Event::TaskEnd {
                        t_ms: end,
                        stage_id: task.stat.stage as usize,
                        partition: task.stat.task as usize,
                        attempt: task.stat.task_attempt,
                        executor: e,
                        succeeded: true,
                        elapsed_ms: round3(end - start),
                        rows_in: 0,
                        bytes_in: 0,
                        rows_out: task.stat.records,
                        bytes_out: task.stat.bytes,
                        shuffle_bytes_written: task.stat.bytes,
                        shuffle_bytes_read: 0,
                        spill_bytes: 0,
                        spill_count: 0,
                        error: None,
                    },
                );
                remote.tasks.push((e, task.clone()));
            }
            remote
                .latest
                .insert(e, line.to_sample(e, self.log_ms(line.unix_ms)));
        }
        // An executor silent this long is gone (killed): its running
        // tasks no longer count.
        let stale_ms = (self.opts.interval.as_secs_f64() * 20e3).max(2e3);
        let on_s3 = self.manager.backend_name() == "s3";
        let spill_on_s3 = self.manager.spill_store().location() != "local";
        executors.clear();
        let mut running = 0;
        let mut active = 0;
        let (mut written, mut read) = (0, 0);
        for s in remote.latest.values() {
            let mut s = s.clone();
            if t - s.t_ms.unwrap_or(t) > stale_ms {
                s.running_tasks = 0;
            }
            running += s.running_tasks;
            active += usize::from(s.running_tasks > 0);
            written += s.shuffle_bytes_written;
            read += s.shuffle_bytes_read;
            if on_s3 {
                process.s3_bytes_read += s.store_bytes_read;
                process.s3_bytes_written += s.store_bytes_written;
            } else {
                process.local_bytes_read += s.store_bytes_read;
                process.local_bytes_written += s.store_bytes_written;
            }
            if on_s3 || spill_on_s3 {
                process.s3_requests += s.store_requests;
            }
            if spill_on_s3 {
                process.spill_bytes_s3 += s.spill_bytes;
            } else {
                process.spill_bytes_local += s.spill_bytes;
            }
            executors.push(s);
        }
        let allocated = remote.feed.len().max(remote.latest.len()).max(1);
        let per_exec_slots = self.opts.slots.max(1).div_ceil(allocated);
        process.executors = allocated;
        process.running_tasks = running;
        process.active_executors = active;
        process.pending_tasks = 0;
        process.max_needed_executors = running.div_ceil(per_exec_slots);
        process.shuffle_bytes_written += written;
        process.shuffle_bytes_read += read;
        process.input_bytes += read;
        inner.remote = Some(remote);
    }

    /// A start and end event per stage of the executor processes' tasks
    /// (from its first task's start to its last task's commit).
    fn remote_stages(&self, inner: &mut Inner) {
        let Some(remote) = &inner.remote else {
            return;
        };
        let mut stages: BTreeMap<u32, Vec<&ExecutorTask>> = BTreeMap::new();
        for (_, t) in &remote.tasks {
            stages.entry(t.stat.stage).or_default().push(t);
        }
        let mut evs = Vec::new();
        for (stage, tasks) in stages {
            let start = tasks
                .iter()
                .map(|t| t.start_unix_ms)
                .fold(f64::MAX, f64::min);
            let end = tasks.iter().map(|t| t.end_unix_ms).fold(0.0, f64::max);
            let distinct: std::collections::BTreeSet<u32> =
                tasks.iter().map(|t| t.stat.task).collect();
            let (start, end) = (self.log_ms(start), self.log_ms(end));
            evs.push((start, stage, end, tasks.len(), distinct.len(), {
                let rows: u64 = tasks.iter().map(|t| t.stat.records).sum();
                let bytes: u64 = tasks.iter().map(|t| t.stat.bytes).sum();
                (rows, bytes)
            }));
        }
        for (start, stage, end, attempts, tasks, (rows, bytes)) in evs {
            let stage_id = stage as usize;
            let events = [
                Event::StageStart {
                    t_ms: start,
                    job_id: 0,
                    stage_id,
                    description: format!("Ballista stage {stage}"),
                    output: "ballista".into(),
                    tasks,
                    partitions: tasks,
                },
                Event::StageEnd {
                    t_ms: end,
                    job_id: 0,
                    stage_id,
                    elapsed_ms: round3(end - start),
                    attempts,
                    rows_out: rows,
                    shuffle_bytes_written: bytes,
                    shuffle_bytes_read: 0,
                    spill_bytes: 0,
                    operators: Vec::new(),
                },
            ];
            for ev in events {
                Self::push(inner, ev);
            }
        }
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    /// Takes one sample now.
    pub fn sample(&self) {
        let snap = self.manager.metrics().snapshot().delta(&self.base);
        let pool = self.manager.memory_pool();
        let cpu = proc::cpu_ms().map(|c| (c - self.cpu_base).max(0.0));
        let rss = proc::rss_bytes().unwrap_or(0);
        let disk = self
            .opts
            .disk_dirs
            .iter()
            .filter_map(|d| proc::disk_space(d))
            .min_by_key(|(free, _)| *free);
        let on_s3 = self.manager.backend_name() == "s3";
        let spill_on_s3 = self.manager.spill_store().location() != "local";
        let sh = &snap.shuffle;
        let spill_local = if spill_on_s3 { 0 } else { sh.spill_bytes };
        let spill_read_local = if spill_on_s3 { 0 } else { sh.spill_read_bytes };
        let (local_written, local_read) = if on_s3 {
            (spill_local, spill_read_local)
        } else {
            (
                sh.bytes_written + spill_local,
                sh.bytes_read + spill_read_local,
            )
        };
        let r = &snap.requests;
        let requests = r.total();
        let executors = self.opts.executors.max(1);
        let per_exec_slots = self.opts.slots.max(1).div_ceil(executors);
        let mut inner = self.lock();
        let t = self.now_ms();
        let mut running_by = vec![0usize; executors];
        let mut live: Vec<Totals> = inner.finished.clone();
        let mut input_bytes: u64 = 0;
        for r in inner.running.values() {
            let e = r.executor.min(executors - 1);
            running_by[e] += 1;
            if let Some(m) = &r.metrics {
                let tot = &mut live[e];
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                tot.bytes_in += get(&m.bytes_in);
                tot.bytes_out += get(&m.bytes_out);
                tot.shuffle_bytes_written += get(&m.shuffle_bytes_written);
                tot.shuffle_bytes_read += get(&m.shuffle_bytes_read);
                tot.spill_bytes += get(&m.spill_bytes);
            }
        }
        // This interval's CPU time, split by running-task share.
        let (cpu_ms, cpu_load) = match cpu {
            Some(c) => {
                let dc = (c - inner.last_cpu).max(0.0);
                let dt = t - inner.last_t;
                let running: usize = running_by.iter().sum();
                if running > 0 {
                    for (e, n) in running_by.iter().enumerate() {
                        inner.finished[e].cpu_ms += dc * *n as f64 / running as f64;
                        live[e].cpu_ms = inner.finished[e].cpu_ms;
                    }
                }
                let load = if dt > 0.0 { dc / dt } else { 0.0 };
                inner.last_cpu = c;
                inner.last_t = t;
                (round3(c), round3(load))
            }
            None => (0.0, 0.0),
        };
        for tot in &live {
            input_bytes += tot.bytes_in;
        }
        let running: usize = running_by.iter().sum();
        let pending = inner.outstanding.saturating_sub(running);
        let mut process = ProcessSample {
            s3_bytes_read: r.bytes_downloaded,
            s3_bytes_written: r.bytes_uploaded,
            local_bytes_read: local_read,
            local_bytes_written: local_written,
            input_bytes,
            rss_bytes: rss,
            pool_used: pool.used() as u64,
            pool_limit: pool.limit() as u64,
            shuffle_bytes_written: sh.bytes_written,
            shuffle_bytes_read: sh.bytes_read,
            spill_bytes_local: spill_local,
            spill_bytes_s3: sh.spill_bytes - spill_local,
            cpu_ms,
            cpu_load,
            s3_requests: if on_s3 || spill_on_s3 { requests } else { 0 },
            s3_retries: r.retries,
            s3_throttles: r.throttles,
            active_executors: running_by.iter().filter(|n| **n > 0).count(),
            executors,
            running_tasks: running,
            pending_tasks: pending,
            max_needed_executors: (running + pending).div_ceil(per_exec_slots),
            completed_stages: inner.completed_stages,
            local_disk_free: disk.map(|d| d.0),
            local_disk_total: disk.map(|d| d.1),
        };
        let mut executors = live
            .iter()
            .enumerate()
            .map(|(e, tot)| ExecutorSample {
                executor: e,
                running_tasks: running_by[e],
                bytes_in: tot.bytes_in,
                bytes_out: tot.bytes_out,
                shuffle_bytes_written: tot.shuffle_bytes_written,
                shuffle_bytes_read: tot.shuffle_bytes_read,
                spill_bytes: tot.spill_bytes,
                cpu_ms: tot.cpu_ms,
                ..Default::default()
            })
            .collect();
        self.sample_remote(&mut inner, t, &mut process, &mut executors);
        self.samples.fetch_add(1, Ordering::Relaxed);
        Self::push(
            &mut inner,
            Event::Sample {
                t_ms: t,
                process,
                executors,
            },
        );
    }

    fn push(inner: &mut Inner, ev: Event) {
        for o in &inner.observers {
            o.observe(&ev);
        }
        if let Some(w) = &mut inner.writer {
            if inner.error.is_none() {
                let res = serde_json::to_writer(&mut *w, &ev)
                    .map_err(std::io::Error::from)
                    .and_then(|()| w.write_all(b"\n"));
                if let Err(e) = res {
                    inner.error = Some(e.to_string());
                }
            }
        }
        inner.events.push(ev);
    }

    /// Stops sampling, takes a last sample, flushes the log and returns
    /// every event. Fails when the log could not be written.
    pub fn finish(&self) -> Result<Vec<Event>, String> {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(h) = self
            .sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
        self.sample();
        let mut inner = self.lock();
        self.remote_stages(&mut inner);
        if let Some(w) = &mut inner.writer {
            if let Err(e) = w.flush() {
                inner.error.get_or_insert(e.to_string());
            }
        }
        let mut observed = Ok(());
        for o in &inner.observers {
            observed = observed.and(o.finish());
        }
        if let Some(e) = &inner.error {
            let path = self
                .opts
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(format!(
                "writing event log {path}: {e}; check the disk and the path"
            ));
        }
        observed?;
        Ok(inner.events.clone())
    }
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

impl Drop for EventRecorder {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}

impl EventSink for EventRecorder {
    fn emit(&self, mut ev: Event) {
        let mut inner = self.lock();
        ev.set_t_ms(self.now_ms());
        match &ev {
            Event::StageStart { tasks, .. } => inner.outstanding += tasks,
            Event::StageEnd { .. } => inner.completed_stages += 1,
            // A lost map output is recomputed: one more task to run.
            Event::Rerun { kind, .. } if kind == "fetch_failure" => inner.outstanding += 1,
            Event::TaskStart {
                stage_id,
                partition,
                attempt,
                executor,
                ..
            } => {
                let key = TaskKey {
                    stage_id: *stage_id,
                    partition: *partition,
                    attempt: *attempt,
                };
                inner.running.insert(
                    key,
                    Running {
                        executor: *executor,
                        metrics: None,
                    },
                );
            }
            Event::TaskEnd {
                stage_id,
                partition,
                attempt,
                executor,
                succeeded,
                bytes_in,
                bytes_out,
                shuffle_bytes_written,
                shuffle_bytes_read,
                spill_bytes,
                ..
            } => {
                inner.running.remove(&TaskKey {
                    stage_id: *stage_id,
                    partition: *partition,
                    attempt: *attempt,
                });
                if *succeeded {
                    inner.outstanding = inner.outstanding.saturating_sub(1);
                }
                let n = inner.finished.len();
                let tot = &mut inner.finished[(*executor).min(n - 1)];
                tot.bytes_in += bytes_in;
                tot.bytes_out += bytes_out;
                tot.shuffle_bytes_written += shuffle_bytes_written;
                tot.shuffle_bytes_read += shuffle_bytes_read;
                tot.spill_bytes += spill_bytes;
            }
            _ => {}
        }
        Self::push(&mut inner, ev);
    }

    fn track(&self, task: TaskKey, metrics: &Arc<TaskMetrics>) {
        if let Some(r) = self.lock().running.get_mut(&task) {
            r.metrics = Some(Arc::clone(metrics));
        }
    }
}
