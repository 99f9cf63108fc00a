//! The plain-Rust q80 oracle against DuckDB's golden answers.
//!
//! Generates SF 0.01 and SF 0.1 once into `<workspace>/target/tpcds-cache`
//! (reused by later runs) and requires `q80_csv(q80_reference(..))` to be
//! byte-identical to `shared/golden/q80_sf<sf>.csv`. On a mismatch the
//! actual CSV is written next to the cache for diffing.

use std::path::{Path, PathBuf};

use engine::tpcds::{ensure_data, q80_csv, q80_reference, Q80_DEFAULT_DATE, Q80_TABLES};

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn check_against_golden(sf: f64) {
    let data = ensure_data(sf, &cache_dir()).expect("generate TPC-DS data");
    for table in Q80_TABLES {
        assert!(
            data.join(format!("{table}.parquet")).is_file(),
            "{table} missing"
        );
    }
    let rows = q80_reference(&data, Q80_DEFAULT_DATE).expect("q80 reference");
    let actual = q80_csv(&rows);
    let expected = golden(&format!("q80_sf{sf}.csv"));
    if actual != expected {
        let out = cache_dir().join(format!("q80_sf{sf}.actual.csv"));
        std::fs::write(&out, &actual).expect("write actual CSV");
        let first_diff = actual
            .lines()
            .zip(expected.lines())
            .enumerate()
            .find(|(_, (a, e))| a != e);
        panic!(
            "q80 at SF {sf} differs from the golden answer ({} vs {} lines); first difference: \
             {first_diff:?}; actual written to {}",
            actual.lines().count(),
            expected.lines().count(),
            out.display()
        );
    }
}

#[test]
fn q80_reference_matches_golden_sf0_01() {
    check_against_golden(0.01);
}

#[test]
fn q80_reference_matches_golden_sf0_1() {
    check_against_golden(0.1);
}

#[test]
fn q80_reference_empty_window_is_only_a_null_grand_total() {
    let data = ensure_data(0.01, &cache_dir()).expect("generate TPC-DS data");
    // date_dim ends in 2100; no sales then.
    let date = "2150-01-01".parse().expect("date");
    let rows = q80_reference(&data, date).expect("q80 reference");
    assert_eq!(q80_csv(&rows), "channel,id,sales,returns,profit\n,,,,\n");
}

/// Timing and sizes of `generate`, for the record:
/// `TPCDS_MEASURE_SF=0.01,0.1,1 cargo test --release -p engine --test
/// tpcds_reference measure_generate -- --ignored --nocapture`.
/// Writes into a temporary directory under `target/`, removed afterwards.
#[test]
#[ignore = "measurement, not a check; run explicitly"]
fn measure_generate() {
    let sfs = std::env::var("TPCDS_MEASURE_SF").unwrap_or_else(|_| "0.01,0.1,1".into());
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    for sf in sfs
        .split(',')
        .map(|s| s.trim().parse::<f64>().expect("scale factor"))
    {
        let dir = tempfile::tempdir_in(&target).expect("temp dir");
        let summary = engine::tpcds::generate(sf, dir.path(), &|_| {}).expect("generate");
        println!(
            "SF {sf}: {:.2} s wall, {} bytes total",
            summary.elapsed.as_secs_f64(),
            summary.total_bytes()
        );
        for t in &summary.tables {
            println!(
                "  {:<16} {:>10} rows {:>12} bytes {:>8.2} s",
                t.table,
                t.rows,
                t.bytes,
                t.elapsed.as_secs_f64()
            );
        }
    }
}
