//! Where Shovel's objects live: [`Layout`] names them and parses them back
//! (the key grammar `gc` trusts), plus the fixed names [`JOB_MARKER`],
//! [`PROBE_OBJECT`] and [`SPILL_DIR`].
//!
//! # Object layout
//! Relative to a store's root (a local directory, or `s3://bucket/prefix/<shard>`):
//!
//! ```text
//! <app_id>/shuffle-<s>_map-<m>.data             one map output, index as footer   (conditional stores)
//! <app_id>/shuffle-<s>_map-<m>-<attempt>.data   one attempt's map output, footer  (other stores)
//! <app_id>/_shovel_job.json                     job marker (see crate::job)
//! spill/<app_id>/spill-<suffix>.bin             spill file
//!
//! written by older versions, parsed by gc, never written:
//! <app_id>/shuffle-<s>/map-<m>.data             map output, index as footer
//! <app_id>/shuffle-<s>/map-<m>-<attempt>.data   one attempt's map output
//! <app_id>/shuffle-<s>/map-<m>.index            index of versions before the footer
//! ```
//!
//! Every object of a job sits directly under `<app_id>/`: a shuffle is a
//! name prefix (`shuffle-<s>_`), not a directory. On a local disk, and on a
//! file-backed S3 server, a directory per shuffle meant a `mkdir` and a
//! `rmdir` per shuffle (up to 16 per shuffle on S3, one below each hash
//! prefix), each a new inode, which ext4 without a journal makes expensive.
//! The `_` after the id keeps `shuffle-3_` from matching `shuffle-30_...`.
//!
//! Which of the two data names a map output gets depends on the store: one
//! whose [`ShuffleStore::create_if_absent`](crate::store::ShuffleStore::create_if_absent)
//! is atomic stores each map once under a key without attempt, and the
//! store decides which attempt wins; any other store gets the attempt in
//! the key so attempts never overwrite each other (see [`crate::manager`]).

use crate::store::ObjectKey;
use crate::{Error, Result};

/// Names objects; see the module docs.
#[derive(Debug, Clone)]
pub struct Layout {
    app_id: String,
}

impl Layout {
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Spreads a map's objects across directories, buckets and prefixes.
    pub fn shard(shuffle_id: u32, map_id: u32) -> u64 {
        // splitmix64 finaliser: consecutive ids land on unrelated shards.
        let mut z = ((shuffle_id as u64) << 32 | map_id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The prefix holding every object of the app.
    pub fn app_prefix(&self) -> String {
        format!("{}/", self.app_id)
    }

    /// The prefix of every object of a shuffle (a name prefix, not a
    /// directory: `<app>/shuffle-<s>_`).
    pub fn shuffle_prefix(&self, shuffle_id: u32) -> String {
        format!("{}/shuffle-{shuffle_id}_", self.app_id)
    }

    pub fn data_key(&self, shuffle_id: u32, map_id: u32, attempt: u32) -> ObjectKey {
        ObjectKey::new(
            Self::shard(shuffle_id, map_id),
            format!(
                "{}map-{map_id}-{attempt}.data",
                self.shuffle_prefix(shuffle_id)
            ),
        )
    }

    /// The data object of a map on a store with atomic conditional create
    /// (no attempt in the key: the first attempt to publish it wins).
    pub fn map_key(&self, shuffle_id: u32, map_id: u32) -> ObjectKey {
        ObjectKey::new(
            Self::shard(shuffle_id, map_id),
            format!("{}map-{map_id}.data", self.shuffle_prefix(shuffle_id)),
        )
    }

    /// The prefix of every attempt's data object of one map (attempt ids in
    /// keys; see [`Layout::data_key`]).
    pub fn attempts_prefix(&self, shuffle_id: u32, map_id: u32) -> String {
        format!("{}map-{map_id}-", self.shuffle_prefix(shuffle_id))
    }

    /// The index object of versions before the footer format (in their
    /// directory per shuffle); Shovel no longer writes it but `gc` still
    /// recognises it.
    pub fn index_key(&self, shuffle_id: u32, map_id: u32) -> ObjectKey {
        ObjectKey::new(
            Self::shard(shuffle_id, map_id),
            format!("{}/shuffle-{shuffle_id}/map-{map_id}.index", self.app_id),
        )
    }
}

/// The name of the job marker object under `<app_id>/` (see [`crate::job`]).
pub const JOB_MARKER: &str = "_shovel_job.json";

/// The object a start-up probe of a store writes and deletes under
/// `<app_id>/` (S3's `s3.probe`); one left by a probe that was cut off is
/// a temporary file to `gc`.
pub const PROBE_OBJECT: &str = "_shovel_probe";

/// `_shovel_probe` or `_shovel_probe-<16 hex digits>` (a probe named by the
/// process that wrote it; several processes of one job probe at once).
fn is_probe(file: &str) -> bool {
    match file.strip_prefix(PROBE_OBJECT) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('-')
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit())),
        None => false,
    }
}

/// The top-level directory of spill objects (`spill/<app_id>/...`); never an app id.
pub const SPILL_DIR: &str = "spill";

/// What kind of object Shovel wrote under a key (see [`Layout::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `<app>/shuffle-<s>_map-<m>-<attempt>.data` (stores without
    /// conditional create; older versions: `<app>/shuffle-<s>/map-<m>-<attempt>.data`)
    Data {
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
    },
    /// `<app>/shuffle-<s>_map-<m>.data` (stores with conditional create;
    /// older versions: `<app>/shuffle-<s>/map-<m>.data`)
    MapOutput { shuffle_id: u32, map_id: u32 },
    /// `<app>/shuffle-<s>/map-<m>.index` (written by versions before the
    /// footer format)
    Index { shuffle_id: u32, map_id: u32 },
    /// `spill/<app>/spill-<suffix>.bin`
    Spill,
    /// `<app>/_shovel_job.json`, the job marker.
    JobMarker,
    /// A local file sink's temporary file for one of the above
    /// (`<stem>.tmp-<suffix>`), left behind when a process is killed mid-write.
    Temp,
}

/// A key Shovel wrote: whose job it belongs to and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShovelObject {
    pub app_id: String,
    pub kind: ObjectKind,
}

impl Layout {
    /// Checks that `app_id` is usable as the first segment of every key:
    /// 1 to 128 characters of `[A-Za-z0-9._-]`, not starting with `.`, and
    /// not `spill` (the spill directory). This keeps [`Layout::parse`]
    /// unambiguous.
    pub fn validate_app_id(app_id: &str) -> Result<()> {
        let bad = |why: &str| {
            Err(Error::config(
                "shuffle.app_id",
                format!("`{app_id}` {why}; use 1 to 128 characters of A-Z a-z 0-9 . _ - such as my-job-42"),
            ))
        };
        if app_id.is_empty() || app_id.len() > 128 {
            return bad("has the wrong length");
        }
        if let Some(c) = app_id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(&format!("contains `{c}`"));
        }
        if app_id.starts_with('.') {
            return bad("starts with `.`");
        }
        if app_id == SPILL_DIR {
            return bad("is reserved for spill files");
        }
        Ok(())
    }

    /// The job marker's key on root `shard` (see
    /// [`ShuffleStore::root_shards`](crate::store::ShuffleStore::root_shards)).
    pub fn marker_key(&self, shard: u64) -> ObjectKey {
        ObjectKey::new(shard, format!("{}/{JOB_MARKER}", self.app_id))
    }

    /// The prefix of this app's spill objects in an object store.
    pub fn spill_prefix(&self) -> String {
        format!("{SPILL_DIR}/{}/", self.app_id)
    }

    /// Parses a key path relative to a store root into what Shovel wrote
    /// there, or `None` for anything Shovel never writes. This is the whole
    /// grammar; `gc` deletes nothing it does not recognise:
    ///
    /// ```text
    /// <app>/shuffle-<u32>_map-<u32>-<u32>.data
    /// <app>/shuffle-<u32>_map-<u32>.data
    /// <app>/shuffle-<u32>/map-<u32>-<u32>.data   (older versions)
    /// <app>/shuffle-<u32>/map-<u32>.data         (older versions)
    /// <app>/shuffle-<u32>/map-<u32>.index        (older versions)
    /// <app>/_shovel_job.json
    /// spill/<app>/spill-<suffix>.bin
    /// any of the file names above with its extension replaced by
    ///     .tmp-<suffix>                     (a local sink's temporary file)
    /// <app>    = a valid app id (see validate_app_id)
    /// <suffix> = [0-9a-f-]+                 (see fs::unique_suffix)
    /// ```
    pub fn parse(path: &str) -> Option<ShovelObject> {
        let parts: Vec<&str> = path.split('/').collect();
        let (app, kind) = match parts.as_slice() {
            [SPILL_DIR, app, file] => {
                let kind = match split_temp(file) {
                    Some(stem) => is_spill_stem(stem).then_some(ObjectKind::Temp),
                    None => file
                        .strip_suffix(".bin")
                        .filter(|s| is_spill_stem(s))
                        .map(|_| ObjectKind::Spill),
                }?;
                (*app, kind)
            }
            [app, file] => {
                let kind = match split_temp(file) {
                    Some(stem) if stem == marker_stem() => Some(ObjectKind::Temp),
                    Some(stem) => split_shuffle(stem)
                        .and_then(|(_, map)| parse_map_stem(map))
                        .map(|_| ObjectKind::Temp),
                    None if *file == JOB_MARKER => Some(ObjectKind::JobMarker),
                    None if is_probe(file) => Some(ObjectKind::Temp),
                    None => {
                        let (shuffle_id, map) = split_shuffle(file)?;
                        map_object(shuffle_id, map, false)
                    }
                }?;
                (*app, kind)
            }
            [app, dir, file] => {
                let shuffle_id = parse_u32(dir.strip_prefix("shuffle-")?)?;
                let kind = match split_temp(file) {
                    Some(stem) => parse_map_stem(stem).map(|_| ObjectKind::Temp),
                    None => map_object(shuffle_id, file, true),
                }?;
                (*app, kind)
            }
            _ => return None,
        };
        Self::validate_app_id(app).ok()?;
        Some(ShovelObject {
            app_id: app.to_string(),
            kind,
        })
    }

    /// True when `dir` (a relative directory path, no trailing `/`) is one
    /// Shovel creates: `<app>`, `spill`, `spill/<app>`, or older versions'
    /// `<app>/shuffle-<u32>`.
    pub fn is_shovel_dir(dir: &str) -> bool {
        let parts: Vec<&str> = dir.split('/').collect();
        match parts.as_slice() {
            [SPILL_DIR] => true,
            [SPILL_DIR, app] | [app] => Self::validate_app_id(app).is_ok(),
            [app, sub] => {
                Self::validate_app_id(app).is_ok()
                    && sub.strip_prefix("shuffle-").and_then(parse_u32).is_some()
            }
            _ => false,
        }
    }
}

fn marker_stem() -> &'static str {
    JOB_MARKER.strip_suffix(".json").unwrap_or(JOB_MARKER)
}

/// A canonical decimal `u32` (no sign, no leading zeros).
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn is_suffix(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
}

fn is_spill_stem(stem: &str) -> bool {
    stem.strip_prefix("spill-").is_some_and(is_suffix)
}

/// `<stem>.tmp-<suffix>` gives `stem`.
fn split_temp(file: &str) -> Option<&str> {
    let (stem, ext) = file.rsplit_once('.')?;
    ext.strip_prefix("tmp-").filter(|s| is_suffix(s))?;
    Some(stem)
}

/// `shuffle-<s>_<rest>` gives `(s, rest)`.
fn split_shuffle(file: &str) -> Option<(u32, &str)> {
    let (id, rest) = file.strip_prefix("shuffle-")?.split_once('_')?;
    Some((parse_u32(id)?, rest))
}

/// A map output's file name after its shuffle (`map-<m>.data`,
/// `map-<m>-<attempt>.data` and, in an older version's directory per
/// shuffle, `map-<m>.index`).
fn map_object(shuffle_id: u32, file: &str, older: bool) -> Option<ObjectKind> {
    if let Some(stem) = file.strip_suffix(".data") {
        return match parse_map_stem(stem)? {
            (map_id, Some(attempt)) => Some(ObjectKind::Data {
                shuffle_id,
                map_id,
                attempt,
            }),
            (map_id, None) => Some(ObjectKind::MapOutput { shuffle_id, map_id }),
        };
    }
    match parse_map_stem(file.strip_suffix(".index").filter(|_| older)?)? {
        (map_id, None) => Some(ObjectKind::Index { shuffle_id, map_id }),
        (_, Some(_)) => None,
    }
}

/// `map-<m>` or `map-<m>-<attempt>`.
fn parse_map_stem(stem: &str) -> Option<(u32, Option<u32>)> {
    let rest = stem.strip_prefix("map-")?;
    match rest.split_once('-') {
        Some((m, a)) => Some((parse_u32(m)?, Some(parse_u32(a)?))),
        None => Some((parse_u32(rest)?, None)),
    }
}

#[cfg(test)]
mod grammar_tests {
    use super::*;

    fn kind(path: &str) -> Option<ObjectKind> {
        Layout::parse(path).map(|o| {
            assert_eq!(o.app_id, "app-1-2", "{path}");
            o.kind
        })
    }

    #[test]
    fn parses_every_name_shovel_writes() {
        let layout = Layout::new("app-1-2");
        let data = layout.data_key(3, 7, 1);
        let index = layout.index_key(3, 7);
        let map = layout.map_key(3, 7);
        assert_eq!(
            kind(&map.path),
            Some(ObjectKind::MapOutput {
                shuffle_id: 3,
                map_id: 7
            })
        );
        assert_eq!(
            kind(&data.path),
            Some(ObjectKind::Data {
                shuffle_id: 3,
                map_id: 7,
                attempt: 1
            })
        );
        assert_eq!(
            kind(&index.path),
            Some(ObjectKind::Index {
                shuffle_id: 3,
                map_id: 7
            })
        );
        assert_eq!(
            kind(&layout.marker_key(0).path),
            Some(ObjectKind::JobMarker)
        );
        let suffix = crate::fs::unique_suffix();
        let spill = format!("{}spill-{suffix}.bin", layout.spill_prefix());
        assert_eq!(kind(&spill), Some(ObjectKind::Spill));
        // Temporary names exactly as FileSink makes them.
        for fin in [
            &data.path,
            &map.path,
            &index.path,
            &layout.marker_key(0).path,
            &spill,
        ] {
            let tmp = std::path::Path::new(fin)
                .with_extension(format!("tmp-{}", crate::fs::unique_suffix()));
            let tmp = tmp.to_string_lossy();
            assert_eq!(kind(&tmp), Some(ObjectKind::Temp), "{tmp}");
        }
        // What an interrupted start-up probe leaves (older and current names).
        for name in [
            PROBE_OBJECT.to_string(),
            format!("{PROBE_OBJECT}-0000abcd12345678"),
        ] {
            assert_eq!(
                kind(&format!("{}{name}", layout.app_prefix())),
                Some(ObjectKind::Temp),
                "{name}"
            );
        }
        assert_eq!(
            kind(&format!("{}{PROBE_OBJECT}-x", layout.app_prefix())),
            None
        );
        // Older versions' directory per shuffle, still collected by gc.
        assert_eq!(
            kind("app-1-2/shuffle-3/map-7.data"),
            Some(ObjectKind::MapOutput {
                shuffle_id: 3,
                map_id: 7
            })
        );
        assert_eq!(
            kind("app-1-2/shuffle-3/map-7-1.data"),
            Some(ObjectKind::Data {
                shuffle_id: 3,
                map_id: 7,
                attempt: 1
            })
        );
    }

    #[test]
    fn a_shuffle_prefix_holds_that_shuffle_only() {
        let layout = Layout::new("app-1-2");
        let three = layout.shuffle_prefix(3);
        assert_eq!(three, "app-1-2/shuffle-3_");
        for key in [layout.map_key(3, 0), layout.data_key(3, 12, 4)] {
            assert!(key.path.starts_with(&three), "{}", key.path);
        }
        for key in [
            layout.map_key(30, 0),
            layout.data_key(31, 3, 0),
            layout.marker_key(0),
        ] {
            assert!(!key.path.starts_with(&three), "{}", key.path);
        }
        let attempts = layout.attempts_prefix(3, 1);
        assert!(layout.data_key(3, 1, 9).path.starts_with(&attempts));
        assert!(!layout.data_key(3, 10, 0).path.starts_with(&attempts));
        assert!(!layout.map_key(3, 1).path.starts_with(&attempts));
    }

    #[test]
    fn rejects_everything_else() {
        for path in [
            ".git/HEAD",
            "report.parquet",
            ".hidden",
            "app-1-2/shuffle-3/notes.txt",
            "app-1-2/shuffle-3/map-1-0.data.bak",
            "app-1-2/shuffle-3/map-1-0.index",
            "app-1-2/shuffle-03/map-1-0.data",
            "app-1-2/shuffle-x/map-1-0.data",
            "app-1-2/shuffle-3/map--1-0.data",
            "app-1-2/shuffle-3/map-1-0.tmp-xyz",
            "app-1-2/shuffle-3/sub/map-1-0.data",
            "app-1-2/shuffle-3_notes.txt",
            "app-1-2/shuffle-3_map-1.index",
            "app-1-2/shuffle-3_map-1-0.data.bak",
            "app-1-2/shuffle-03_map-1-0.data",
            "app-1-2/shuffle-3map-1-0.data",
            "app-1-2/shuffle-3_map-1-0.tmp-xyz",
            "app-1-2/shuffle-_map-1.data",
            "app-1-2/shuffle-3_/map-1.data",
            "app-1-2/map-1-0.data",
            "app-1-2/_shovel_job.json.bak",
            "app-1-2/other.json",
            ".app/_shovel_job.json",
            "spill/_shovel_job.json",
            "spill/shuffle-1/map-1-0.data",
            "spill/app-1-2/spill-1.txt",
            "spill/app-1-2/notspill-1.bin",
            "spill/app-1-2/spill-XYZ.bin",
            "spill/.x/spill-1.bin",
            "spill/app-1-2/deeper/spill-1.bin",
            "a b/_shovel_job.json",
            "/app-1-2/_shovel_job.json",
            "",
        ] {
            assert_eq!(Layout::parse(path), None, "{path}");
        }
    }

    #[test]
    fn shovel_dirs() {
        for d in ["app-1", "app-1/shuffle-0", "spill", "spill/app-1"] {
            assert!(Layout::is_shovel_dir(d), "{d}");
        }
        for d in [
            ".git",
            "app-1/shuffle-x",
            "app-1/other",
            "spill/.x",
            "a/b/c",
            "",
        ] {
            assert!(!Layout::is_shovel_dir(d), "{d}");
        }
    }

    #[test]
    fn app_ids() {
        assert!(Layout::validate_app_id("app-1700000000-42").is_ok());
        for bad in ["", ".x", "spill", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(Layout::validate_app_id(bad).is_err(), "{bad}");
        }
    }
}
