//! The engine's q80, rendered as the canonical CSV, is byte-identical to
//! DuckDB's golden answers (`shared/golden/q80_sf*.csv`) on both shuffle
//! backends (local disk; S3 through an embedded server), with and without
//! broadcast joins, and under a memory budget small enough to force
//! spilling. Runs go through `engine::cli::run_q80`, the code path of the
//! `shovel q80` binary. Data is generated once into `<workspace>/target/tpcds-cache`.

mod common;

use std::path::Path;

use engine::cli::{Q80Job, Q80Outcome};
use engine::{EngineConfig, ShuffleBackend};

fn golden(sf: f64) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(format!("q80_sf{sf}.csv"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[derive(Debug, Clone, Copy)]
struct Case {
    backend: ShuffleBackend,
    broadcast: bool,
    /// Memory budget; small ones force spilling.
    memory: Option<usize>,
}

fn run(sf: f64, case: Case) -> Q80Outcome {
    let config = EngineConfig {
        backend: case.backend,
        spill_to_s3: case.backend == ShuffleBackend::S3 && case.memory.is_some(),
        broadcast_threshold: if case.broadcast {
            EngineConfig::default().broadcast_threshold
        } else {
            0
        },
        memory_budget: case.memory.unwrap_or(EngineConfig::default().memory_budget),
        ..EngineConfig::default()
    };
    let job = Q80Job {
        config,
        ..Q80Job::default()
    };
    eprintln!("q80 at SF{sf}: {case:?}");
    common::run_q80_at(sf, &job)
}

fn check(sf: f64, case: Case) -> Q80Outcome {
    let out = run(sf, case);
    let want = golden(sf);
    if out.csv != want {
        let path =
            common::cache_dir().join(format!("q80_sf{sf}.engine-{:?}.actual.csv", case.backend));
        let _ = std::fs::write(&path, &out.csv);
        let first = out
            .csv
            .lines()
            .zip(want.lines())
            .enumerate()
            .find(|(_, (a, e))| a != e);
        panic!(
            "q80 {case:?} at SF{sf} differs from golden ({} vs {} lines); first difference {first:?}; \
             actual in {}",
            out.csv.lines().count(),
            want.lines().count(),
            path.display()
        );
    }
    let r = &out.report;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.metrics.shuffle.bytes_written > 0, "shuffle written");
    let job = r.job.as_ref().expect("job summary");
    assert_eq!(job.rows_out as usize, want.lines().count() - 1);
    if case.backend == ShuffleBackend::S3 {
        assert!(r.s3_requests() > 0, "S3 requests counted");
        assert!(r.embedded_s3.is_some(), "embedded S3 used");
    } else {
        assert_eq!(r.s3_requests(), 0);
    }
    if case.memory.is_some() {
        assert!(r.spill_bytes() > 0, "expected spilling: {}", r.to_json());
        if case.backend == ShuffleBackend::S3 {
            assert_eq!(r.spill_split().0, 0, "spills went to S3");
        }
    }
    out
}

const LOCAL: ShuffleBackend = ShuffleBackend::Local;
const S3: ShuffleBackend = ShuffleBackend::S3;

#[test]
fn sf0_01_local() {
    for broadcast in [true, false] {
        check(
            0.01,
            Case {
                backend: LOCAL,
                broadcast,
                memory: None,
            },
        );
    }
}

#[test]
fn sf0_01_s3() {
    for broadcast in [true, false] {
        check(
            0.01,
            Case {
                backend: S3,
                broadcast,
                memory: None,
            },
        );
    }
}

#[test]
fn sf0_01_spilling() {
    for backend in [LOCAL, S3] {
        check(
            0.01,
            Case {
                backend,
                broadcast: false,
                memory: Some(256 << 10),
            },
        );
    }
}

#[test]
fn sf0_1_local_default_plan() {
    check(
        0.1,
        Case {
            backend: LOCAL,
            broadcast: true,
            memory: None,
        },
    );
}

#[test]
fn sf0_1_s3_broadcast_off() {
    check(
        0.1,
        Case {
            backend: S3,
            broadcast: false,
            memory: None,
        },
    );
}

#[test]
fn sf0_1_local_spilling() {
    check(
        0.1,
        Case {
            backend: LOCAL,
            broadcast: true,
            memory: Some(1 << 20),
        },
    );
}
