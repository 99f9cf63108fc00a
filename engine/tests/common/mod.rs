//! Shared helpers for the engine's integration tests: sessions on each
//! backend, random tables, and row-multiset comparison.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float64Type, Int32Type, Int64Type, Schema,
    SchemaRef,
};
use engine::{EngineConfig, Session};
use shuffle_core::{ShuffleConfig, ShuffleManager};

/// The runtime the tests that drive sessions directly run on: two workers,
/// as on CI.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `job` in-process (the `shovel q80` code path) on the cached TPC-DS
/// data at scale factor `sf`, generated on first use.
pub fn run_q80_at(sf: f64, job: &engine::cli::Q80Job) -> engine::cli::Q80Outcome {
    let data = engine::tpcds::ensure_data(sf, &cache_dir()).expect("generate TPC-DS data");
    runtime()
        .block_on(engine::cli::run_q80(job, &data))
        .unwrap_or_else(|f| panic!("q80 at SF{sf} failed: {}", f.error))
}

/// A cell value for reference computations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum V {
    Null,
    I(i64),
    S(String),
    /// Decimal unscaled value and scale.
    D(i128, i8),
    /// Float bits (compared exactly).
    F(u64),
    B(bool),
}

pub type Row = Vec<V>;

/// Which backend a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

/// A session plus what must outlive it.
pub struct TestSession {
    pub session: Session,
    _dir: tempfile::TempDir,
    _s3: Option<shuffle_s3::EmbeddedS3>,
}

impl TestSession {
    /// The local directory of shuffle files (local backend) and spills.
    pub fn local_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The embedded S3 server's directory (S3 backend): where its objects live.
    pub fn s3_dir(&self) -> Option<&Path> {
        self._s3.as_ref().map(|s| s.root())
    }
}

/// `<workspace>/target/tpcds-cache`, where tests generate TPC-DS data once.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

/// A golden answer from `../shared/golden/` (e.g. `q80_sf0.01.csv`).
pub fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every file (not directory) under `dir`, recursively; symlinks are not
/// followed. Empty when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Files under `dir` of shuffle `shuffle_id` (named `shuffle-<id>_...`)
/// whose name ends with `suffix`.
pub fn shuffle_files(dir: &Path, shuffle_id: u32, suffix: &str) -> Vec<PathBuf> {
    let prefix = format!("shuffle-{shuffle_id}_");
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(suffix))
        })
        .collect()
}

pub async fn session(backend: Backend, config: EngineConfig) -> TestSession {
    let dir = tempfile::tempdir().expect("temp dir");
    let shuffle = ShuffleConfig::from_pairs([
        ("local.dirs", dir.path().display().to_string()),
        ("memory.limit", config.memory_budget.to_string()),
    ])
    .expect("shuffle config");
    match backend {
        Backend::Local => {
            let m = shuffle_local::local_manager(shuffle).expect("local manager");
            TestSession {
                session: Session::new(config, Arc::new(m) as Arc<dyn ShuffleManager>),
                _dir: dir,
                _s3: None,
            }
        }
        Backend::S3 => {
            let server = shuffle_s3::EmbeddedS3::start_temp()
                .await
                .expect("embedded s3");
            let s3 = shuffle_s3::S3ShuffleBuilder::new(shuffle)
                .s3_config(server.config("engine-tests").expect("s3 config"))
                .spill_to_s3(true)
                .build()
                .await
                .expect("s3 manager");
            TestSession {
                session: Session::new(config, Arc::new(s3.manager) as Arc<dyn ShuffleManager>),
                _dir: dir,
                _s3: Some(server),
            }
        }
    }
}

/// Converts batches to rows.
pub fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(b.columns().iter().map(|c| cell(c, r)).collect());
        }
    }
    out
}

pub fn cell(c: &ArrayRef, r: usize) -> V {
    if c.is_null(r) {
        return V::Null;
    }
    match c.data_type() {
        DataType::Int64 => V::I(c.as_primitive::<Int64Type>().value(r)),
        DataType::Int32 => V::I(c.as_primitive::<Int32Type>().value(r) as i64),
        DataType::Date32 => V::I(c.as_primitive::<Date32Type>().value(r) as i64),
        DataType::Utf8 => V::S(c.as_string::<i32>().value(r).to_string()),
        DataType::Decimal128(_, s) => V::D(c.as_primitive::<Decimal128Type>().value(r), *s),
        DataType::Float64 => V::F(c.as_primitive::<Float64Type>().value(r).to_bits()),
        DataType::Boolean => V::B(c.as_boolean().value(r)),
        t => panic!("unsupported type in test: {t}"),
    }
}

pub fn sorted(mut v: Vec<Row>) -> Vec<Row> {
    v.sort();
    v
}

/// Table A: (a_key i64?, a_k2 utf8?, a_val i64?, a_dec decimal(7,2)?)
pub fn schema_a() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a_key", DataType::Int64, true),
        Field::new("a_k2", DataType::Utf8, true),
        Field::new("a_val", DataType::Int64, true),
        Field::new("a_dec", DataType::Decimal128(7, 2), true),
    ]))
}

/// Table B: (b_key i64?, b_k2 utf8?, b_val i64?)
pub fn schema_b() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("b_key", DataType::Int64, true),
        Field::new("b_k2", DataType::Utf8, true),
        Field::new("b_val", DataType::Int64, true),
    ]))
}

pub type RowA = (Option<i64>, Option<String>, Option<i64>, Option<i128>);
pub type RowB = (Option<i64>, Option<String>, Option<i64>);

/// Splits rows into `chunks` batches (some possibly empty).
pub fn batches_a(rows: &[RowA], chunks: usize) -> Vec<RecordBatch> {
    let per = rows.len().div_ceil(chunks.max(1)).max(1);
    let mut out = Vec::new();
    for c in rows.chunks(per) {
        out.push(
            RecordBatch::try_new(
                schema_a(),
                vec![
                    Arc::new(Int64Array::from(c.iter().map(|r| r.0).collect::<Vec<_>>())),
                    Arc::new(StringArray::from(
                        c.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(c.iter().map(|r| r.2).collect::<Vec<_>>())),
                    Arc::new(
                        Decimal128Array::from(c.iter().map(|r| r.3).collect::<Vec<_>>())
                            .with_precision_and_scale(7, 2)
                            .expect("decimal"),
                    ),
                ],
            )
            .expect("batch a"),
        );
    }
    out
}

pub fn batches_b(rows: &[RowB], chunks: usize) -> Vec<RecordBatch> {
    let per = rows.len().div_ceil(chunks.max(1)).max(1);
    let mut out = Vec::new();
    for c in rows.chunks(per) {
        out.push(
            RecordBatch::try_new(
                schema_b(),
                vec![
                    Arc::new(Int64Array::from(c.iter().map(|r| r.0).collect::<Vec<_>>())),
                    Arc::new(StringArray::from(
                        c.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(c.iter().map(|r| r.2).collect::<Vec<_>>())),
                ],
            )
            .expect("batch b"),
        );
    }
    out
}

pub fn va(r: &RowA) -> Row {
    vec![
        r.0.map_or(V::Null, V::I),
        r.1.clone().map_or(V::Null, V::S),
        r.2.map_or(V::Null, V::I),
        r.3.map_or(V::Null, |d| V::D(d, 2)),
    ]
}

pub fn vb(r: &RowB) -> Row {
    vec![
        r.0.map_or(V::Null, V::I),
        r.1.clone().map_or(V::Null, V::S),
        r.2.map_or(V::Null, V::I),
    ]
}

/// The point counts of the polylines (plotters draws each line series as
/// one `<polyline points="x,y x,y ...">`) in `svg` that have more than two
/// points and are not all at one height: lines that moved. The axes and
/// the legend's samples are polylines too, but straight.
pub fn moving_lines(svg: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in svg.split("<polyline").skip(1) {
        let tag = part.split('>').next().unwrap_or("");
        let Some(p) = tag.split("points=\"").nth(1) else {
            continue;
        };
        let pts: Vec<(f64, f64)> = p
            .split('"')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|xy| {
                let (x, y) = xy.split_once(',')?;
                Some((x.parse().ok()?, y.parse().ok()?))
            })
            .collect();
        let moved = pts.iter().any(|q| (q.1 - pts[0].1).abs() > 0.5);
        if pts.len() > 2 && moved {
            out.push(pts.len());
        }
    }
    out
}
