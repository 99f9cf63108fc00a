//! Job markers: how `gc` tells a running job from one that was killed.
//!
//! ```text
//!   start_app / first register_shuffle ──▶ put <app_id>/_shovel_job.json on every root
//!   every job.heartbeat (default 30s)  ──▶ put it again (its modification time is the heartbeat)
//!   cleanup_app / release_app          ──▶ stop the refresh task, delete the marker
//!   killed process                     ──▶ the marker stops being refreshed and ages like the rest
//! ```
//!
//! `gc` only reads the marker's modification time (and, for its report, the
//! recorded heartbeat interval); the content is there for people: a small
//! JSON object written by hand (no serde), with the app id, pid, host, start
//! time and heartbeat interval. A marker goes on every root directory or
//! bucket ([`ShuffleStore::root_shards`]) because `gc` may be pointed at any
//! one of them.
//!
//! The refresh runs on a tokio task owned by the manager. It is stopped (and
//! awaited, so no refresh lands after the marker was deleted) by
//! `cleanup_app` and `release_app`, and aborted when the manager is dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::{ObjectKey, ShuffleStore};
use crate::Result;

/// The content of a job marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMarker {
    pub app_id: String,
    pub pid: u32,
    pub host: String,
    pub started_unix_secs: u64,
    pub heartbeat: Duration,
}

impl JobMarker {
    /// A marker for a job of this process starting now.
    pub fn for_this_process(app_id: &str, heartbeat: Duration) -> Self {
        Self {
            app_id: app_id.to_string(),
            pid: std::process::id(),
            host: host_name(),
            started_unix_secs: now_unix_secs(),
            heartbeat,
        }
    }

    /// `{"app_id":"..","pid":1,"host":"..","started_unix_secs":1,"heartbeat_secs":30}`
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{{\"app_id\":\"{}\",\"pid\":{},\"host\":\"{}\",\"started_unix_secs\":{},\"heartbeat_secs\":{}}}\n",
            sanitize(&self.app_id),
            self.pid,
            sanitize(&self.host),
            self.started_unix_secs,
            self.heartbeat.as_secs()
        ))
    }

    /// Reads what [`JobMarker::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        let body = text.strip_prefix('{')?.strip_suffix('}')?;
        let (mut app_id, mut pid, mut host, mut started, mut heartbeat) =
            (None, None, None, None, None);
        for field in body.split(',') {
            let (k, v) = field.split_once(':')?;
            let v = v.trim();
            let text = || v.strip_prefix('"')?.strip_suffix('"').map(str::to_string);
            match k.trim().trim_matches('"') {
                "app_id" => app_id = text(),
                "pid" => pid = v.parse().ok(),
                "host" => host = text(),
                "started_unix_secs" => started = v.parse().ok(),
                "heartbeat_secs" => heartbeat = v.parse().ok().map(Duration::from_secs),
                _ => {}
            }
        }
        Some(Self {
            app_id: app_id?,
            pid: pid?,
            host: host?,
            started_unix_secs: started?,
            heartbeat: heartbeat?,
        })
    }
}

/// Keeps only characters that need no JSON escaping.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| sanitize(h.trim()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

pub(crate) fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes the marker to every key at once.
async fn put_all(store: &dyn ShuffleStore, keys: &[ObjectKey], data: &Bytes) -> Result<()> {
    let puts = keys.iter().map(|k| store.put(k, data.clone()));
    for r in futures::future::join_all(puts).await {
        r?;
    }
    Ok(())
}

/// A written marker and the task that refreshes it.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    store: Arc<dyn ShuffleStore>,
    keys: Vec<ObjectKey>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Writes the marker under every key (failing if it cannot), then
    /// refreshes it every `marker.heartbeat` until stopped.
    pub(crate) async fn start(
        store: Arc<dyn ShuffleStore>,
        keys: Vec<ObjectKey>,
        marker: JobMarker,
    ) -> Result<Self> {
        let data = marker.encode();
        put_all(store.as_ref(), &keys, &data).await?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let (task_store, task_keys) = (Arc::clone(&store), keys.clone());
        let every = marker.heartbeat.max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(every) => {
                        if let Err(e) = put_all(task_store.as_ref(), &task_keys, &data).await {
                            tracing::warn!(error = %e, "could not refresh the job marker; gc may take this job for dead");
                        }
                    }
                }
            }
        });
        Ok(Self {
            store,
            keys,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops refreshing (waiting for a refresh in flight) and deletes the marker.
    pub(crate) async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.store.delete(&self.keys).await
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips() {
        let m = JobMarker {
            app_id: "app-1-2".into(),
            pid: 42,
            host: "box-1.example".into(),
            started_unix_secs: 1_700_000_000,
            heartbeat: Duration::from_secs(30),
        };
        assert_eq!(JobMarker::decode(&m.encode()), Some(m));
        assert_eq!(JobMarker::decode(b"not a marker"), None);
        let here = JobMarker::for_this_process("x", Duration::from_secs(5));
        assert_eq!(JobMarker::decode(&here.encode()), Some(here));
    }
}
