//! q80's input: generating and caching TPC-DS data (with a progress bar),
//! and checking a `--data` directory before a job starts.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::tpcds::datagen::{cache_dir_name, COMPLETE_MARKER};
use crate::tpcds::{generate_with, GenOptions, GenProgress, GenSummary, Q80_TABLES};

use super::progress::Bar;
use super::CliError;

/// `$XDG_CACHE_HOME/shovel/tpcds`, else `~/.cache/shovel/tpcds`, else
/// `<temp>/shovel-cache/tpcds`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("shovel-cache"));
    base.join("shovel").join("tpcds")
}

/// Generates the q80 tables into `out` with a progress bar (when `progress`).
pub fn generate(
    sf: f64,
    out: &Path,
    threads: Option<usize>,
    progress: bool,
) -> Result<GenSummary, CliError> {
    let mut options = GenOptions::default();
    if let Some(t) = threads {
        options.threads = t;
    }
    let bar = Bar::new(
        format!("generating SF{sf}"),
        Q80_TABLES.len() as u64,
        progress,
    );
    let done = std::cell::Cell::new(0u64);
    let rows = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u64>::new());
    let summary = generate_with(sf, out, &options, &|event| {
        match event {
            GenProgress::Started { table } => {
                rows.borrow_mut().insert(table, 0);
            }
            GenProgress::Rows { table, rows: n } => {
                rows.borrow_mut().insert(table, n);
            }
            GenProgress::Finished(t) => {
                rows.borrow_mut().insert(t.table, t.rows);
                done.set(done.get() + 1);
            }
        }
        let total: u64 = rows.borrow().values().sum();
        bar.set(done.get(), &format!("{} rows", human_count(total)));
    })
    .map_err(|e| {
        CliError::runtime(format!(
            "generating TPC-DS SF{sf} into {}: {e}",
            out.display()
        ))
    })?;
    bar.finish();
    Ok(summary)
}

/// The cached copy of scale factor `sf` under `cache_dir`, generating it
/// first (with progress) if missing. Returns the directory and whether it was
/// generated now. Publication is atomic (temp dir, marker, rename), as
/// [`crate::tpcds::ensure_data`] does, so the two share the cache.
pub fn ensure_cached(
    sf: f64,
    cache_dir: &Path,
    progress: bool,
    announce: bool,
) -> Result<(PathBuf, bool), CliError> {
    let dir = cache_dir.join(cache_dir_name(sf));
    if dir.join(COMPLETE_MARKER).is_file() {
        return Ok((dir, false));
    }
    let io = |path: &Path, e: std::io::Error| {
        CliError::runtime(format!(
            "cache directory {}: {e}; pick another with --cache-dir or pass --data",
            path.display()
        ))
    };
    fs::create_dir_all(cache_dir).map_err(|e| io(cache_dir, e))?;
    if announce {
        eprintln!(
            "note: generating TPC-DS SF{sf} once into {} (cached for later runs)",
            dir.display()
        );
    }
    let tmp = cache_dir.join(format!(
        ".{}.tmp-{}-cli",
        cache_dir_name(sf),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    let written = (|| -> Result<(), CliError> {
        let summary = generate(sf, &tmp, None, progress)?;
        let marker = tmp.join(COMPLETE_MARKER);
        let mut text = format!("sf={sf}\n");
        for t in &summary.tables {
            text.push_str(&format!(
                "{}.parquet rows={} bytes={}\n",
                t.table, t.rows, t.bytes
            ));
        }
        let mut f = File::create(&marker).map_err(|e| io(&marker, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&marker, e))
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() && !dir.join(COMPLETE_MARKER).is_file() {
        // Not written by the atomic protocol: replace it.
        fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok((dir, true)),
        Err(_) if dir.join(COMPLETE_MARKER).is_file() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok((dir, true))
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io(&dir, e))
        }
    }
}

/// Checks that `dir` holds every q80 table and that each Parquet footer
/// reads, so a bad `--data` fails before any work with a message naming
/// the table or file. Returns the total rows and on-disk bytes.
pub fn check_data_dir(dir: &Path) -> Result<(u64, u64), CliError> {
    if !dir.exists() {
        return Err(CliError::usage(format!(
            "data directory {} does not exist; create it with `shovel gen --sf 1 --out {}` \
             or use --sf N instead of --data",
            dir.display(),
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "--data {} is not a directory; point it at a directory of <table>.parquet files",
            dir.display()
        )));
    }
    let (mut rows, mut bytes) = (0u64, 0u64);
    for table in Q80_TABLES {
        let files = crate::tpcds::reference::table_files(dir, table).map_err(|e| {
            CliError::usage(format!(
                "{e}; regenerate the data with `shovel gen --sf N --out {}`",
                dir.display()
            ))
        })?;
        for f in files {
            let corrupt = |e: &dyn std::fmt::Display| {
                CliError::runtime(format!(
                    "corrupt Parquet file {} (table {table}): {}; regenerate it with \
                     `shovel gen --sf N --out {}`",
                    f.display(),
                    super::args::one_line(&e.to_string()),
                    dir.display()
                ))
            };
            let file = File::open(&f)
                .map_err(|e| CliError::runtime(format!("cannot open {}: {e}", f.display())))?;
            bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
            let reader = SerializedFileReader::new(file).map_err(|e| corrupt(&e))?;
            rows += reader.metadata().file_metadata().num_rows().max(0) as u64;
        }
    }
    Ok((rows, bytes))
}

/// `1234567` as `1.2M`.
pub fn human_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

/// Runs `shovel gen`.
pub fn run_gen(args: &super::args::GenArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let progress = super::progress::enabled(args.quiet);
    let summary = generate(args.sf, &args.out, args.threads, progress)?;
    if !args.quiet {
        let mut err = std::io::stderr().lock();
        for t in &summary.tables {
            let _ = writeln!(
                err,
                "  {:<16} {:>12} rows {:>10}  {:>6.2} s",
                t.table,
                t.rows,
                super::report::human_bytes(t.bytes),
                t.elapsed.as_secs_f64()
            );
        }
        let _ = writeln!(
            err,
            "wrote {} tables ({}) at SF{} into {} in {:.2} s",
            summary.tables.len(),
            super::report::human_bytes(summary.total_bytes()),
            args.sf,
            args.out.display(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
