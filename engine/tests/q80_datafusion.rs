//! `shovel q80 --engine datafusion`: q80's SQL text on DataFusion with
//! Shovel's exchange, spill and memory pool gives the golden CSV byte for
//! byte on local disk and on S3 (the embedded server on 127.0.0.1), through
//! `run_q80` (the binary's code path) and through the binary itself;
//! `--date` moves the window as it does for Shovel's engine; flags
//! DataFusion cannot honour are refused naming the flag.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{cache_dir, golden};
use engine::cli::args::{parse, Command as Parsed};
use engine::cli::df::q80_sql;
use engine::cli::{run_q80, Q80Job, Q80Outcome, QueryEngine};
use engine::queries::Q80_SQL;
use engine::tpcds::{ensure_data, q80_csv, q80_reference, SqlDate, Q80_DEFAULT_DATE};
use engine::{EngineConfig, ShuffleBackend};

fn sf001() -> PathBuf {
    ensure_data(0.01, &cache_dir()).expect("generate SF 0.01")
}

fn run(backend: ShuffleBackend, date: SqlDate) -> Q80Outcome {
    let job = Q80Job {
        config: EngineConfig {
            backend,
            ..EngineConfig::default()
        },
        date,
        engine: QueryEngine::DataFusion,
        ..Q80Job::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run_q80(&job, &sf001()))
        .unwrap_or_else(|f| panic!("q80 on DataFusion over {backend:?} failed: {}", f.error))
}

fn check_golden(backend: ShuffleBackend) -> Q80Outcome {
    let out = run(backend, Q80_DEFAULT_DATE);
    let want = golden("q80_sf0.01.csv");
    assert!(
        out.csv == want,
        "DataFusion over {backend:?} differs from golden:\n{}",
        out.csv
    );
    let r = &out.report;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.engine, "datafusion");
    assert!(
        r.to_json().contains(r#""engine":"datafusion""#),
        "{}",
        r.to_json()
    );
    assert!(
        r.planned_stages > 1,
        "no Shovel exchange in the plan: {}",
        r.to_json()
    );
    assert!(
        r.metrics.shuffle.bytes_written > 0 && r.metrics.shuffle.bytes_read > 0,
        "exchanges went through Shovel: {}",
        r.to_json()
    );
    out
}

#[test]
fn sf0_01_local_matches_golden() {
    let out = check_golden(ShuffleBackend::Local);
    assert_eq!(out.report.s3_requests(), 0);
}

#[test]
fn sf0_01_s3_matches_golden() {
    let out = check_golden(ShuffleBackend::S3);
    assert!(out.report.s3_requests() > 0, "S3 requests counted");
    assert!(out.report.embedded_s3.is_some(), "embedded S3 used");
}

#[test]
fn date_moves_the_window_as_for_shovels_engine() {
    let date: SqlDate = "2000-09-10".parse().expect("date");
    let out = run(ShuffleBackend::Local, date);
    let want = q80_csv(&q80_reference(&sf001(), date).expect("reference"));
    assert_ne!(want, golden("q80_sf0.01.csv"), "the window did not move");
    assert_eq!(out.csv, want);
}

#[test]
fn the_binary_runs_datafusion() {
    let data = sf001();
    let out = Command::new(env!("CARGO_BIN_EXE_shovel"))
        .args(["q80", "--engine", "datafusion", "--quiet", "--data"])
        .arg(&data)
        .env_remove("SHOVEL_S3_BUCKET")
        .env_remove("SHOVEL_S3_ENDPOINT")
        .output()
        .expect("run shovel");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shovel failed: {err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        golden("q80_sf0.01.csv")
    );
}

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn flags_datafusion_cannot_honour_are_refused() {
    for (line, needles) in [
        (
            "q80 --engine datafusion --executors 2 --lose-executor 1",
            &["--lose-executor 1", "--engine shovel"][..],
        ),
        (
            "q80 --engine datafusion --executors 2",
            &["--executors 2", "--engine shovel"],
        ),
        (
            "q80 --engine datafusion --conf engine.executors=3",
            &["--conf engine.executors", "--engine shovel"],
        ),
        (
            "q80 --engine datafusion --keep-shuffle",
            &["--keep-shuffle", "--engine shovel"],
        ),
        ("q80 --engine spark", &["--engine", "datafusion"]),
    ] {
        let e = parse(&args(line)).expect_err(line);
        assert_eq!(e.code, 2, "{line}: {}", e.message);
        for n in needles {
            assert!(
                e.message.contains(n),
                "{line}: `{n}` not in `{}`",
                e.message
            );
        }
    }
    // The same flags are fine on Shovel's engine, and the engine is parsed.
    for (line, engine) in [
        (
            "q80 --executors 2 --lose-executor 1 --keep-shuffle",
            QueryEngine::Shovel,
        ),
        (
            "q80 --engine DataFusion --memory 64MiB",
            QueryEngine::DataFusion,
        ),
    ] {
        match parse(&args(line)) {
            Ok(Parsed::Q80(q)) => assert_eq!(q.job.engine, engine, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn the_sql_is_the_golden_text_without_its_limit() {
    let golden_sql = golden("q80.sql");
    let without_limit = golden_sql
        .trim_end()
        .strip_suffix("LIMIT 100;")
        .expect("the golden q80.sql ends with LIMIT 100;");
    assert_eq!(Q80_SQL.trim_end(), without_limit.trim_end());
    assert_eq!(q80_sql(Q80_DEFAULT_DATE).expect("sql"), Q80_SQL);
    // A start on the default end moves both ends (no double replacement).
    let moved = q80_sql("2000-09-22".parse().expect("date")).expect("sql");
    assert_eq!(moved.matches("'2000-09-22'").count(), 3, "{moved}");
    assert_eq!(moved.matches("'2000-10-22'").count(), 3, "{moved}");
    assert!(!moved.contains("'2000-08-23'"), "{moved}");
}
