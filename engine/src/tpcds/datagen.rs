//! Generate the q80 tables as Parquet with `tpcdsgen-arrow`, and cache them.
//!
//! # Layout
//!
//! [`generate`] writes one file per table, `<out>/<table>.parquet`, for each
//! of [`Q80_TABLES`]. A file holds the generator's full schema (Arrow types
//! embedded: keys `Int32`/`Int64`, money `Decimal128(7, 2)`, strings
//! `Utf8View`, dates `Date32`), Snappy-compressed, in row groups of at most
//! [`GenOptions::max_row_group_rows`] rows, rows in generator order. The
//! output is deterministic: the same scale factor gives the same rows.
//!
//! # Memory and parallelism
//!
//! Each table is one `tpcdsgen-arrow` iterator of 8,000-row batches piped
//! straight into an `ArrowWriter`; a worker holds at most one batch plus the
//! row group being encoded. Tables are spread over [`GenOptions::threads`]
//! workers, largest first. The `tpcdsgen-arrow` generators can also split a
//! table by source-row range; one file per table was preferred for a simpler
//! layout, as the sales and returns tables already balance two workers.
//!
//! # Cache
//!
//! [`ensure_data`] generates a scale factor once into `<cache_dir>/sf<sf>/`:
//! it writes into a fresh `<cache_dir>/.sf<sf>.tmp-<pid>-<n>/`, writes the
//! [`COMPLETE_MARKER`] file last, then renames the directory into place. A
//! killed run leaves at worst a stray temp directory (the next call removes
//! temp directories whose process is gone), never a half-written `sf<sf>/`. Concurrent callers (threads or processes) may both generate;
//! the first rename wins and the loser discards its copy.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatchReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpcdsgen_arrow::{
    CatalogPageArrow, CatalogReturnsArrow, CatalogSalesArrow, DateDimArrow, ItemArrow,
    PromotionArrow, StoreArrow, StoreReturnsArrow, StoreSalesArrow, WebReturnsArrow, WebSalesArrow,
    WebSiteArrow,
};

use super::{Result, TpcdsError, Q80_TABLES};

/// Name of the file [`ensure_data`] writes last into a complete cache entry.
pub const COMPLETE_MARKER: &str = "_COMPLETE";

/// [`Q80_TABLES`] in the order workers pick them up: largest first, so the
/// long poles start early.
const GENERATION_ORDER: [&str; 12] = [
    "store_sales",
    "catalog_sales",
    "web_sales",
    "store_returns",
    "catalog_returns",
    "web_returns",
    "item",
    "date_dim",
    "promotion",
    "catalog_page",
    "store",
    "web_site",
];

/// Tuning knobs of [`generate_with`].
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Worker threads (tables generated at once). Default: available cores.
    pub threads: usize,
    /// Rows per generated batch (the unit of progress reports).
    pub batch_rows: usize,
    /// Upper bound on rows per Parquet row group.
    pub max_row_group_rows: usize,
    /// `fsync` every file before returning (on by default so a cache entry
    /// survives a crash once its marker exists).
    pub sync: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            batch_rows: tpcdsgen_arrow::DEFAULT_BATCH_SIZE,
            max_row_group_rows: 128 * 1024,
            sync: true,
        }
    }
}

/// A progress event of [`generate`], delivered on the calling thread.
#[derive(Debug, Clone)]
pub enum GenProgress {
    /// A worker started generating `table`.
    Started { table: &'static str },
    /// `rows` rows of `table` have been written so far.
    Rows { table: &'static str, rows: u64 },
    /// `table` is complete.
    Finished(TableSummary),
}

/// What [`generate`] wrote for one table.
#[derive(Debug, Clone)]
pub struct TableSummary {
    pub table: &'static str,
    pub path: PathBuf,
    pub rows: u64,
    /// Size of the Parquet file.
    pub bytes: u64,
    /// Wall-clock time of this table's worker.
    pub elapsed: Duration,
}

/// What [`generate`] wrote: one entry per table, in [`Q80_TABLES`] order.
#[derive(Debug, Clone)]
pub struct GenSummary {
    pub sf: f64,
    pub tables: Vec<TableSummary>,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

impl GenSummary {
    /// Rows written for `table`, if it was generated.
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.table(table).map(|t| t.rows)
    }

    pub fn table(&self, table: &str) -> Option<&TableSummary> {
        self.tables.iter().find(|t| t.table == table)
    }

    /// Total Parquet bytes written.
    pub fn total_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

/// Generate the 12 [`Q80_TABLES`] at scale factor `sf` into `out` (created if
/// missing) as `<out>/<table>.parquet`, with default [`GenOptions`].
///
/// `progress` is called on the calling thread. Files are written in place: if
/// the run fails or is killed, `out` holds partial files (use
/// [`ensure_data`] for an atomic, cached result).
pub fn generate(sf: f64, out: &Path, progress: &dyn Fn(GenProgress)) -> Result<GenSummary> {
    generate_with(sf, out, &GenOptions::default(), progress)
}

/// [`generate`] with explicit [`GenOptions`].
pub fn generate_with(
    sf: f64,
    out: &Path,
    options: &GenOptions,
    progress: &dyn Fn(GenProgress),
) -> Result<GenSummary> {
    if !sf.is_finite() || sf <= 0.0 {
        return Err(TpcdsError::InvalidScale(sf));
    }
    fs::create_dir_all(out).map_err(TpcdsError::io(out))?;
    let start = Instant::now();

    let order = GENERATION_ORDER;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let threads = options.threads.clamp(1, order.len());
    let (tx, rx) = mpsc::channel::<GenProgress>();

    let results: Vec<Result<Vec<TableSummary>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let tx = tx.clone();
                let (order, next, failed) = (&order, &next, &failed);
                scope.spawn(move || -> Result<Vec<TableSummary>> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&table) = order.get(i) else {
                            return Ok(done);
                        };
                        if failed.load(Ordering::SeqCst) {
                            return Ok(done);
                        }
                        match write_table(sf, table, out, options, &tx) {
                            Ok(summary) => done.push(summary),
                            Err(e) => {
                                failed.store(true, Ordering::SeqCst);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        // Deliver progress on this thread until every worker has hung up.
        for event in rx {
            progress(event);
        }
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(TpcdsError::WorkerPanic(msg))
                })
            })
            .collect()
    });

    let mut tables = Vec::with_capacity(order.len());
    for r in results {
        tables.extend(r?);
    }
    tables.sort_by_key(|t| Q80_TABLES.iter().position(|&n| n == t.table));
    Ok(GenSummary {
        sf,
        tables,
        elapsed: start.elapsed(),
    })
}

/// `S::default()` for the parameter type `S` of a generator constructor.
///
/// `tpcdsgen-arrow` takes a `tpcdsgen::config::Session` but does not
/// re-export `tpcdsgen`, and `engine` depends on `tpcdsgen-arrow` only. Going
/// through the constructor's signature names the type without that
/// dependency; the session is then configured with its own builder methods.
fn default_param<S: Default, G>(_ctor: fn(S) -> G) -> S {
    S::default()
}

/// The `tpcdsgen-arrow` generator of `table` at scale factor `sf`.
fn open_generator(
    table: &str,
    sf: f64,
    batch_rows: usize,
) -> Result<Box<dyn RecordBatchReader + Send>> {
    macro_rules! generator {
        ($ty:ident) => {{
            let session = default_param($ty::new)
                .into_builder()
                .with_scale_factor(sf)
                .build()
                .map_err(|e| TpcdsError::Generator(e.to_string()))?;
            Box::new($ty::new(session).with_batch_size(batch_rows))
        }};
    }
    Ok(match table {
        "store_sales" => generator!(StoreSalesArrow),
        "store_returns" => generator!(StoreReturnsArrow),
        "catalog_sales" => generator!(CatalogSalesArrow),
        "catalog_returns" => generator!(CatalogReturnsArrow),
        "web_sales" => generator!(WebSalesArrow),
        "web_returns" => generator!(WebReturnsArrow),
        "date_dim" => generator!(DateDimArrow),
        "store" => generator!(StoreArrow),
        "catalog_page" => generator!(CatalogPageArrow),
        "web_site" => generator!(WebSiteArrow),
        "item" => generator!(ItemArrow),
        "promotion" => generator!(PromotionArrow),
        other => return Err(TpcdsError::UnknownTable(other.to_string())),
    })
}

/// The Arrow schema the generator writes for `table` (what q80 expects to
/// read back); building a generator generates nothing until it is polled.
pub fn table_schema(table: &str) -> Result<arrow::datatypes::SchemaRef> {
    Ok(open_generator(table, 1.0, 1)?.schema())
}

/// Stream one table from its generator into `<out>/<table>.parquet`.
fn write_table(
    sf: f64,
    table: &'static str,
    out: &Path,
    options: &GenOptions,
    progress: &mpsc::Sender<GenProgress>,
) -> Result<TableSummary> {
    let start = Instant::now();
    // A closed channel only means nobody listens any more.
    let _ = progress.send(GenProgress::Started { table });
    let generator = open_generator(table, sf, options.batch_rows.max(1))?;
    let path = out.join(format!("{table}.parquet"));
    let file = File::create(&path).map_err(TpcdsError::io(&path))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(options.max_row_group_rows.max(1)))
        .build();
    let mut writer = ArrowWriter::try_new(BufWriter::new(file), generator.schema(), Some(props))
        .map_err(TpcdsError::parquet(&path))?;
    let mut rows = 0u64;
    for batch in generator {
        let batch = batch.map_err(TpcdsError::arrow(table))?;
        writer.write(&batch).map_err(TpcdsError::parquet(&path))?;
        rows += batch.num_rows() as u64;
        let _ = progress.send(GenProgress::Rows { table, rows });
    }
    let mut buffered = writer.into_inner().map_err(TpcdsError::parquet(&path))?;
    buffered.flush().map_err(TpcdsError::io(&path))?;
    let file = buffered
        .into_inner()
        .map_err(|e| TpcdsError::io(&path)(e.into_error()))?;
    if options.sync {
        file.sync_all().map_err(TpcdsError::io(&path))?;
    }
    let bytes = file.metadata().map_err(TpcdsError::io(&path))?.len();
    let summary = TableSummary {
        table,
        path,
        rows,
        bytes,
        elapsed: start.elapsed(),
    };
    let _ = progress.send(GenProgress::Finished(summary.clone()));
    Ok(summary)
}

/// The cache directory name of scale factor `sf`: `sf0.01`, `sf0.1`, `sf1`.
pub fn cache_dir_name(sf: f64) -> String {
    format!("sf{sf}")
}

/// Generate the q80 tables at `sf` into `<cache_dir>/sf<sf>/` unless a
/// complete copy is already there; return that directory.
///
/// See the [module docs](self) for the atomic-publication protocol. Within
/// one process, callers asking for the same `sf` wait for each other rather
/// than generating twice.
pub fn ensure_data(sf: f64, cache_dir: &Path) -> Result<PathBuf> {
    if !sf.is_finite() || sf <= 0.0 {
        return Err(TpcdsError::InvalidScale(sf));
    }
    let name = cache_dir_name(sf);
    let dir = cache_dir.join(&name);
    let marker = dir.join(COMPLETE_MARKER);

    let lock = sf_lock(&dir);
    let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if marker.is_file() {
        return Ok(dir);
    }
    if dir.exists() {
        // Not written by this protocol (renames publish only complete
        // entries); clear it rather than trust it.
        fs::remove_dir_all(&dir).map_err(TpcdsError::io(&dir))?;
    }

    fs::create_dir_all(cache_dir).map_err(TpcdsError::io(cache_dir))?;
    remove_stale_temp_dirs(cache_dir, &name);
    static ATTEMPT: AtomicUsize = AtomicUsize::new(0);
    let tmp = cache_dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        ATTEMPT.fetch_add(1, Ordering::SeqCst)
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(TpcdsError::io(&tmp))?;
    }
    let written = (|| -> Result<()> {
        let summary = generate(sf, &tmp, &|_| {})?;
        let tmp_marker = tmp.join(COMPLETE_MARKER);
        let mut text = format!("sf={sf}\n");
        for t in &summary.tables {
            text.push_str(&format!(
                "{}.parquet rows={} bytes={}\n",
                t.table, t.rows, t.bytes
            ));
        }
        let mut f = File::create(&tmp_marker).map_err(TpcdsError::io(&tmp_marker))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(TpcdsError::io(&tmp_marker))
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => {
            // Make the rename itself durable; best effort.
            if let Ok(d) = File::open(cache_dir) {
                let _ = d.sync_all();
            }
            Ok(dir)
        }
        // Another process published first: use its copy.
        Err(_) if marker.is_file() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(TpcdsError::Io {
                path: dir,
                source: e,
            })
        }
    }
}

/// Remove `<cache_dir>/.<name>.tmp-<pid>-<n>` directories left by killed
/// processes (best effort; liveness is checked through `/proc/<pid>`, so on
/// systems without `/proc` nothing is removed).
fn remove_stale_temp_dirs(cache_dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        let ours = pid == std::process::id().to_string();
        if !ours && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// One mutex per cache directory, so threads of one process generate a
/// given scale factor once.
fn sf_lock(dir: &Path) -> Arc<Mutex<()>> {
    type Locks = Mutex<Vec<(PathBuf, Arc<Mutex<()>>)>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, l)) = locks.iter().find(|(p, _)| p == dir) {
        return Arc::clone(l);
    }
    let l = Arc::new(Mutex::new(()));
    locks.push((dir.to_path_buf(), Arc::clone(&l)));
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_scale() {
        let dir = tempfile::tempdir().unwrap();
        for sf in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                generate(sf, dir.path(), &|_| {}),
                Err(TpcdsError::InvalidScale(_))
            ));
        }
    }

    #[test]
    fn cache_names() {
        assert_eq!(cache_dir_name(0.01), "sf0.01");
        assert_eq!(cache_dir_name(0.1), "sf0.1");
        assert_eq!(cache_dir_name(1.0), "sf1");
    }

    #[test]
    fn unknown_table() {
        assert!(matches!(
            open_generator("customer", 1.0, 10),
            Err(TpcdsError::UnknownTable(_))
        ));
    }
}
