//! Garbage collection of what killed jobs left behind.
//!
//! A job removes its own objects when it ends, failed or not; a job that is
//! killed cannot. [`collect_garbage`] deletes every object under a store's
//! root (all shards) last modified more than `older_than` ago, and reports
//! what it removed per app id. An S3 lifecycle rule on the prefix is the
//! backstop for stores nobody runs `gc` against (see the README).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::{ObjectKey, ShuffleStore};
use crate::{Error, Result};

/// What [`collect_garbage`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub objects: u64,
    pub bytes: u64,
    /// Objects and bytes removed per app id (first path segment, or
    /// `spill/<app id>` for spill objects).
    pub by_app: BTreeMap<String, (u64, u64)>,
    /// Objects seen but kept because they are newer than the cutoff.
    pub kept: u64,
}

/// Deletes objects under `prefix` older than `older_than`.
pub async fn collect_garbage(
    store: &dyn ShuffleStore,
    prefix: &str,
    older_than: Duration,
) -> Result<GcReport> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::Protocol(format!("system clock before 1970: {e}")))?
        .as_secs();
    let cutoff = now.saturating_sub(older_than.as_secs());
    let mut report = GcReport::default();
    let mut doomed: Vec<ObjectKey> = Vec::new();
    for o in store.list(prefix).await? {
        if o.modified_unix_secs > cutoff {
            report.kept += 1;
            continue;
        }
        let mut parts = o.key.path.split('/');
        let app = match parts.next() {
            Some("spill") => format!("spill/{}", parts.next().unwrap_or("")),
            Some(a) => a.to_string(),
            None => String::new(),
        };
        let e = report.by_app.entry(app).or_default();
        e.0 += 1;
        e.1 += o.size;
        report.objects += 1;
        report.bytes += o.size;
        doomed.push(o.key);
    }
    for chunk in doomed.chunks(1000) {
        store.delete(chunk).await?;
    }
    Ok(report)
}

/// Parses a duration like `90s`, `30m`, `12h`, `7d`; see [`crate::parse`]
/// (a bare number other than `0` needs a unit).
pub fn parse_duration(key: &str, value: &str) -> Result<Duration> {
    crate::parse::parse_duration(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("k", "90s").expect("secs"),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("k", "2h").expect("hours"),
            Duration::from_secs(7200)
        );
        assert_eq!(
            parse_duration("k", "7d").expect("days"),
            Duration::from_secs(604_800)
        );
        assert!(parse_duration("k", "-1h")
            .expect_err("negative")
            .to_string()
            .contains("negative"));
        assert!(parse_duration("k", "soon")
            .expect_err("bad")
            .to_string()
            .contains("not a duration"));
    }
}
