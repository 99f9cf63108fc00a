//! `shovel q80 --engine datafusion`: q80's SQL text on DataFusion with
//! Shovel's exchange, spill and memory pool gives the golden CSV byte for
//! byte on local disk and on S3 (the embedded server on 127.0.0.1), through
//! `run_q80` (the binary's code path) and through the binary itself;
//! at SF 0.1 too; under `--memory 8MiB` with `--spill-to-s3` DataFusion's
//! spill files go to S3, read back, and none is left on the local disk;
//! `--date` moves the window as it does for Shovel's engine; flags
//! DataFusion cannot honour are refused naming the flag.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{cache_dir, files_under, golden, run_q80_at};
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

fn datafusion_job(backend: ShuffleBackend) -> Q80Job {
    Q80Job {
        config: EngineConfig {
            backend,
            ..EngineConfig::default()
        },
        engine: QueryEngine::DataFusion,
        ..Q80Job::default()
    }
}

#[test]
fn sf0_1_matches_golden_on_local_disk_and_s3() {
    let want = golden("q80_sf0.1.csv");
    for backend in [ShuffleBackend::Local, ShuffleBackend::S3] {
        let out = run_q80_at(0.1, &datafusion_job(backend));
        assert!(
            out.csv == want,
            "SF 0.1 over {backend:?} differs from golden:\n{}",
            out.csv
        );
        assert!(out.report.metrics.shuffle.bytes_written > 0, "{backend:?}");
        assert_eq!(out.report.s3_requests() > 0, backend == ShuffleBackend::S3);
    }
}

#[test]
fn spilling_to_s3_under_a_small_budget_matches_golden_and_leaves_no_local_file() {
    let local = tempfile::tempdir().expect("tempdir");
    let mut job = datafusion_job(ShuffleBackend::S3);
    job.config.memory_budget = 8 << 20;
    job.config.spill_to_s3 = true;
    job.local_dirs = vec![local.path().to_path_buf()];
    let out = run_q80_at(0.1, &job);
    assert!(
        out.csv == golden("q80_sf0.1.csv"),
        "differs from golden:\n{}",
        out.csv
    );
    let shuffle = &out.report.metrics.shuffle;
    assert!(
        shuffle.spill_count > 0,
        "DataFusion did not spill under 8 MiB"
    );
    assert!(
        shuffle.spill_read_bytes > 0 && shuffle.spill_bytes > 0,
        "spill files are read back from S3: {shuffle:?}"
    );
    assert_eq!(out.report.spill_split(), (0, out.report.spill_bytes()));
    assert_eq!(
        files_under(local.path()),
        Vec::<PathBuf>::new(),
        "spill files left on the local disk"
    );
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

#[test]
fn each_sorts_merge_reservation_is_scaled_to_the_budget() {
    use engine::cli::df::{session_config, sort_merge_reservation};
    // DataFusion's 10 MiB default at the default budget, a quarter of each
    // partition's share under a small one, never below 1 MiB.
    assert_eq!(sort_merge_reservation(2 << 30, 8), 10 << 20);
    assert_eq!(sort_merge_reservation(64 << 20, 8), 2 << 20);
    assert_eq!(sort_merge_reservation(8 << 20, 8), 1 << 20);
    assert_eq!(sort_merge_reservation(8 << 20, 0), 2 << 20);
    let config = EngineConfig {
        memory_budget: 64 << 20,
        ..EngineConfig::default()
    };
    let c = session_config(&config);
    assert_eq!(c.options().execution.sort_spill_reservation_bytes, 2 << 20);
    assert_eq!(c.target_partitions(), config.shuffle_partitions);
}
