//! q80 through the engine, compared with the plain-Rust oracle at SF 0.01
//! (data generated once into `target/tpcds-cache`), on every backend and
//! with forced spilling.

mod common;

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type};
use common::{session, Backend};
use engine::queries::q80::{q80, Q80Options};
use engine::tpcds::{ensure_data, q80_reference, Q80Row, Q80_DEFAULT_DATE};
use engine::EngineConfig;

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

fn to_rows(batches: &[RecordBatch]) -> Vec<Q80Row> {
    let mut out = Vec::new();
    for b in batches {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let d = |i: usize| {
            let c = b.column(i);
            assert!(
                matches!(c.data_type(), DataType::Decimal128(_, 2)),
                "{}",
                c.data_type()
            );
            c.as_primitive::<Decimal128Type>().clone()
        };
        let (ch, id, sales, ret, profit) = (s(0), s(1), d(2), d(3), d(4));
        for r in 0..b.num_rows() {
            let opt_s =
                |a: &arrow::array::StringArray| a.is_valid(r).then(|| a.value(r).to_string());
            let opt_d = |a: &arrow::array::Decimal128Array| a.is_valid(r).then(|| a.value(r));
            out.push(Q80Row {
                channel: opt_s(&ch),
                id: opt_s(&id),
                sales: opt_d(&sales),
                returns: opt_d(&ret),
                profit: opt_d(&profit),
            });
        }
    }
    out
}

fn run(backend: Backend, config: EngineConfig, data: &Path) -> (Vec<Q80Row>, engine::JobSummary) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t = session(backend, config).await;
        let opts = Q80Options {
            limit: None,
            ..Default::default()
        };
        let df = q80(&t.session, data, &opts).expect("plan q80");
        let (batches, summary) = df.collect_with_summary().await.expect("run q80");
        (to_rows(&batches), summary)
    })
}

#[test]
fn q80_matches_reference_on_every_backend() {
    let data = ensure_data(0.01, &cache_dir()).expect("generate TPC-DS data");
    let want = q80_reference(&data, Q80_DEFAULT_DATE).expect("reference");
    assert!(want.len() > 3, "reference has rows");

    let base = EngineConfig {
        shuffle_partitions: 4,
        ..Default::default()
    };
    let (got, s) = run(Backend::Local, base.clone(), &data);
    assert_eq!(got, want, "local, default plan");
    assert!(s.shuffle_bytes_written > 0);

    let shuffled = EngineConfig {
        broadcast_threshold: 0,
        ..base.clone()
    };
    let (got, _) = run(Backend::Local, shuffled.clone(), &data);
    assert_eq!(got, want, "local, every join shuffled");

    let (got, _) = run(Backend::S3, shuffled.clone(), &data);
    assert_eq!(got, want, "s3, every join shuffled");

    let spill = EngineConfig {
        memory_budget: 256 << 10,
        ..shuffled
    };
    let (got, s) = run(Backend::Local, spill, &data);
    assert_eq!(got, want, "local, tiny memory budget");
    assert!(s.total_spill_bytes() > 0, "spilled: {}", s.to_json());
}
