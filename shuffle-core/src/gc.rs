//! Garbage collection of what killed jobs left behind, and nothing else.
//!
//! A job removes its own objects when it ends, failed or not; a job that is
//! killed cannot. [`collect_garbage`] lists a store (every root, bucket and
//! hash prefix) and works only on keys that fit Shovel's key grammar
//! ([`Layout::parse`]):
//!
//! ```text
//! <app>/shuffle-<u32>_map-<u32>-<u32>.data     map output (attempt in key), index as footer
//! <app>/shuffle-<u32>_map-<u32>.data           map output (conditional create), index as footer
//! <app>/shuffle-<u32>/map-<u32>-<u32>.data     the same two, as older versions named them
//! <app>/shuffle-<u32>/map-<u32>.data
//! <app>/shuffle-<u32>/map-<u32>.index          map output index of older versions
//! <app>/_shovel_job.json                        job marker (see crate::job)
//! spill/<app>/spill-<suffix>.bin                spill file
//! the same names with `.tmp-<suffix>` in place of the extension (temporary files)
//! ```
//!
//! **Never deleted**, however old: any other file or object (user files,
//! hidden files, `.git/`, Parquet files, `<app>/shuffle-3/notes.txt`, keys
//! whose app id is not a valid one), anything reached through a symlink, and
//! symlinks themselves (the local store does not list them).
//!
//! Recognised keys are grouped into jobs by app id (shuffle objects, spill
//! files and the marker of one app are one job), and a job goes whole or
//! not at all:
//! - **kept live**: its marker was refreshed less than `older_than` ago;
//! - **kept recent**: no fresh marker, but its newest object is younger
//!   than `older_than`;
//! - **removed** (or **would remove** with `dry_run`): everything else.
//!   Objects go in batches of at most 1000 keys, the marker last; then the
//!   directories the job's objects were in are removed when empty (local
//!   stores: `<app>/`, `spill/<app>/`, `spill/`, and older versions'
//!   `<app>/shuffle-N/`).
//!
//! A running job refreshes its marker every `job.heartbeat` (30 s by
//! default), so an `older_than` below twice that may take live jobs for dead
//! ([`heartbeat_warning`]). An S3 lifecycle rule on the prefix is the
//! backstop for stores nobody runs `gc` against (see the README).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::job::{now_unix_secs, JobMarker};
use crate::layout::{Layout, ObjectKind, SPILL_DIR};
use crate::store::{ObjectKey, ObjectMeta, ShuffleStore};
use crate::Result;

/// How [`collect_garbage`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Jobs whose marker and newest object are older than this go.
    pub older_than: Duration,
    /// Report what would go; delete nothing.
    pub dry_run: bool,
}

/// What happened to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Deleted.
    Removed,
    /// Would be deleted (dry run).
    WouldRemove,
    /// Kept: its marker is younger than the cutoff (the job is running).
    KeptLive,
    /// Kept: no fresh marker, but its newest object is younger than the cutoff.
    KeptRecent,
}

impl JobState {
    /// True for jobs whose objects go (or would go).
    pub fn removes(self) -> bool {
        matches!(self, JobState::Removed | JobState::WouldRemove)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobState::Removed => "removed",
            JobState::WouldRemove => "would remove",
            JobState::KeptLive => "kept: live (job marker refreshed recently)",
            JobState::KeptRecent => "kept: recent (newest object younger than the cutoff)",
        })
    }
}

/// One job's row in a [`GcReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub app_id: String,
    /// Recognised objects of the job (shuffle, spill, temporary files, markers).
    pub objects: u64,
    pub bytes: u64,
    pub state: JobState,
    /// Modification time of its newest object, seconds since the Unix epoch.
    pub newest_unix_secs: u64,
    /// The job marker's content, when the job has a readable marker.
    pub marker: Option<JobMarker>,
}

/// What [`collect_garbage`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// One row per job (app id order).
    pub jobs: Vec<JobReport>,
    /// Objects that are not Shovel's (left alone).
    pub unrecognised_objects: u64,
    pub unrecognised_bytes: u64,
    /// Empty Shovel directories removed (local stores).
    pub dirs_removed: u64,
    /// True when nothing was deleted because of `dry_run`.
    pub dry_run: bool,
}

impl GcReport {
    /// Objects and bytes removed (or, in a dry run, that would be).
    pub fn removed(&self) -> (u64, u64) {
        self.jobs
            .iter()
            .filter(|j| j.state.removes())
            .fold((0, 0), |(n, b), j| (n + j.objects, b + j.bytes))
    }

    /// Objects and bytes kept (live or recent jobs).
    pub fn kept(&self) -> (u64, u64) {
        self.jobs
            .iter()
            .filter(|j| !j.state.removes())
            .fold((0, 0), |(n, b), j| (n + j.objects, b + j.bytes))
    }

    /// The row of `app_id`.
    pub fn job(&self, app_id: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.app_id == app_id)
    }

    /// The largest heartbeat interval recorded in the markers seen.
    pub fn max_heartbeat(&self) -> Option<Duration> {
        self.jobs
            .iter()
            .filter_map(|j| j.marker.as_ref().map(|m| m.heartbeat))
            .max()
    }
}

/// A warning when `older_than` is under twice `heartbeat`: a running job's
/// marker may then look older than the cutoff between two refreshes.
pub fn heartbeat_warning(older_than: Duration, heartbeat: Duration) -> Option<String> {
    (older_than < heartbeat * 2).then(|| {
        format!(
            "warning: --older-than {}s is less than twice the job heartbeat ({}s): running jobs may look dead and be removed; use at least {}s",
            older_than.as_secs(),
            heartbeat.as_secs(),
            heartbeat.as_secs() * 2
        )
    })
}

#[derive(Default)]
struct Job {
    objects: Vec<ObjectMeta>,
    markers: Vec<ObjectMeta>,
}

/// Deletes the jobs under `prefix` that are neither live nor recent (see
/// the module docs); never touches an object outside Shovel's key grammar.
pub async fn collect_garbage(
    store: &dyn ShuffleStore,
    prefix: &str,
    options: &GcOptions,
) -> Result<GcReport> {
    let cutoff = now_unix_secs().saturating_sub(options.older_than.as_secs());
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    for o in store.list(prefix).await? {
        match Layout::parse(&o.key.path) {
            Some(obj) => {
                let job = jobs.entry(obj.app_id).or_default();
                if obj.kind == ObjectKind::JobMarker {
                    job.markers.push(o);
                } else {
                    job.objects.push(o);
                }
            }
            None => {
                report.unrecognised_objects += 1;
                report.unrecognised_bytes += o.size;
            }
        }
    }
    let mut doomed: Vec<ObjectKey> = Vec::new();
    let mut doomed_markers: Vec<ObjectKey> = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for (app_id, job) in jobs {
        let all = || job.objects.iter().chain(&job.markers);
        let newest = all().map(|o| o.modified_unix_secs).max().unwrap_or(0);
        let marker_fresh = job.markers.iter().any(|m| m.modified_unix_secs > cutoff);
        let state = if marker_fresh {
            JobState::KeptLive
        } else if newest > cutoff {
            JobState::KeptRecent
        } else if options.dry_run {
            JobState::WouldRemove
        } else {
            JobState::Removed
        };
        let marker = match job.markers.iter().max_by_key(|m| m.modified_unix_secs) {
            Some(m) => store
                .get(&m.key)
                .await
                .ok()
                .and_then(|b| JobMarker::decode(&b)),
            None => None,
        };
        if state == JobState::Removed {
            for o in &job.objects {
                if let Some((dir, _)) = o.key.path.rsplit_once('/') {
                    dirs.push(dir.to_string());
                }
            }
            dirs.push(app_id.clone());
            dirs.push(format!("{SPILL_DIR}/{app_id}"));
            doomed.extend(job.objects.iter().map(|o| o.key.clone()));
            doomed_markers.extend(job.markers.iter().map(|o| o.key.clone()));
        }
        report.jobs.push(JobReport {
            objects: all().count() as u64,
            bytes: all().map(|o| o.size).sum(),
            app_id,
            state,
            newest_unix_secs: newest,
            marker,
        });
    }
    if options.dry_run {
        return Ok(report);
    }
    // The markers go last: a gc stopped half-way leaves a stale marker, not
    // an unmarked half job.
    for chunk in doomed.chunks(1000).chain(doomed_markers.chunks(1000)) {
        store.delete(chunk).await?;
    }
    if !dirs.is_empty() {
        dirs.push(SPILL_DIR.to_string());
        // Deepest first, each once; only names Shovel creates.
        dirs.sort_by(|a, b| {
            b.matches('/')
                .count()
                .cmp(&a.matches('/').count())
                .then(a.cmp(b))
        });
        dirs.dedup();
        dirs.retain(|d| Layout::is_shovel_dir(d));
        report.dirs_removed = store.remove_empty_dirs(&dirs).await?;
    }
    Ok(report)
}
