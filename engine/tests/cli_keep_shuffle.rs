//! `shovel q80 --keep-shuffle`: the committed map outputs (data and index
//! objects of every shuffle) stay where the note on stderr says, spills do
//! not, and the answer is unchanged. Local disk and the embedded S3 server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{cache_dir, files_under, golden, shuffle_files};

/// q80 at SF 0.01, every join shuffled, a budget that spills, with `args`
/// and TMPDIR = `tmpdir`.
fn run_kept(args: &[&str], tmpdir: &Path) -> (Output, String) {
    let data = engine::tpcds::ensure_data(0.01, &cache_dir()).expect("generate SF 0.01");
    let out = Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(["q80", "--data"])
        .arg(&data)
        .args([
            "--memory",
            "8MiB",
            "--broadcast-threshold",
            "0",
            "--keep-shuffle",
        ])
        .args(args)
        .env("TMPDIR", tmpdir)
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .output()
        .expect("run shovel");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        golden("q80_sf0.01.csv")
    );
    (out, err)
}

/// From the `--keep-shuffle` note: the shuffle ids and the location.
fn kept_note(err: &str) -> (Vec<u32>, String) {
    let line = err
        .lines()
        .find(|l| l.starts_with("note: --keep-shuffle: kept "))
        .unwrap_or_else(|| panic!("no --keep-shuffle note in {err}"));
    assert!(line.contains("shovel gc"), "{line}");
    let ids = line
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(ids, _)| ids)
        .unwrap_or_else(|| panic!("no shuffle ids in {line}"));
    let ids: Vec<u32> = ids
        .split(", ")
        .map(|i| i.parse().unwrap_or_else(|_| panic!("{line}")))
        .collect();
    let at = line
        .split_once(" in ")
        .and_then(|(_, r)| r.split(['(', ';']).next())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no location in {line}"));
    (ids, at)
}

/// Every listed shuffle has at least one data object (index as footer) under `dir`.
fn assert_kept(dir: &Path, ids: &[u32]) {
    assert!(ids.len() >= 3, "every join shuffles: {ids:?}");
    for &id in ids {
        let data = shuffle_files(dir, id, ".data");
        assert!(
            !data.is_empty(),
            "shuffle {id}: data {data:?} under {}: {:?}",
            dir.display(),
            files_under(dir)
        );
    }
}

#[test]
fn keep_shuffle_keeps_local_outputs_and_removes_spills() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("shuffle");
    std::fs::create_dir_all(&local).expect("local dir");
    let local_s = local.display().to_string();
    let (_, err) = run_kept(&["--local-dir", &local_s], dir.path());
    let (ids, at) = kept_note(&err);
    assert_eq!(at, local_s, "{err}");
    assert!(err.contains("cleanup     kept"), "{err}");
    assert_kept(&local, &ids);
    let spills = files_under(&local.join("spill"));
    assert!(spills.is_empty(), "spill files kept: {spills:?}");
}

#[test]
fn keep_shuffle_keeps_embedded_s3_objects_in_the_printed_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, err) = run_kept(&["--shuffle", "s3", "--spill-to-s3"], dir.path());
    let (ids, at) = kept_note(&err);
    let at = PathBuf::from(at);
    assert!(at.starts_with(dir.path()), "{}: {err}", at.display());
    assert_kept(&at, &ids);
    let spills: Vec<_> = files_under(&at)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/spill/"))
        .collect();
    assert!(spills.is_empty(), "spill objects kept: {spills:?}");
    // Only the server's directory is kept (the local temp dir held spills).
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read TMPDIR")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        entries,
        vec![at.clone()],
        "TMPDIR holds more than the kept dir"
    );
}
