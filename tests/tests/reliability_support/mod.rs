//! Shared helpers of the reliability tests (`reliability_s3.rs`,
//! `reliability_engine.rs`): TPC-DS SF 0.01 data (generated once into
//! `<workspace>/target/tpcds-cache`), the golden q80 answer, q80 through the
//! engine on a given shuffle manager, and S3 managers over an embedded server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use engine::cli::run::batches_to_rows;
use engine::queries::q80::{q80, Q80Options};
use engine::tpcds::{ensure_data, q80_csv};
use engine::{EngineConfig, EngineError, JobSummary, Session};
use shuffle_core::{ObjectMeta, ShuffleConfig, ShuffleManager, StoreShuffleManager};
use shuffle_s3::{EmbeddedS3, RetryConfig, S3Config, S3ShuffleBuilder, S3Store};

/// Scale factor of every reliability test.
pub const SF: f64 = 0.01;

/// Upper bound of one q80 run, to fail instead of hanging (not a performance limit).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// `<workspace>/target/tpcds-cache`.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tpcds-cache")
}

/// The SF 0.01 tables (generated on first use, once per process).
pub fn data_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| ensure_data(SF, &cache_dir()).expect("generate TPC-DS SF 0.01 data"))
        .clone()
}

/// DuckDB's answer, `shared/golden/q80_sf0.01.csv`.
pub fn golden() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/q80_sf0.01.csv");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Engine settings that move a lot through the shuffle layer: every join
/// shuffled, a few partitions, and (with `memory`) a budget small enough to
/// force spilling.
pub fn engine_config(memory: Option<usize>) -> EngineConfig {
    EngineConfig {
        shuffle_partitions: 4,
        broadcast_threshold: 0,
        memory_budget: memory.unwrap_or(EngineConfig::default().memory_budget),
        ..EngineConfig::default()
    }
}

/// Every regular file under `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Runs the whole q80 (no LIMIT, like the golden file) on `session`; the
/// canonical CSV and the job summary, or the engine's error. Fails the test
/// (instead of hanging) if the job takes longer than [`JOB_TIMEOUT`].
pub async fn run_q80(session: &Session, data: &Path) -> Result<(String, JobSummary), EngineError> {
    let opts = Q80Options {
        limit: None,
        ..Default::default()
    };
    let df = q80(session, data, &opts)?;
    let (batches, summary) = tokio::time::timeout(JOB_TIMEOUT, df.collect_with_summary())
        .await
        .unwrap_or_else(|_| panic!("q80 did not finish within {JOB_TIMEOUT:?}: it hangs"))?;
    let rows = batches_to_rows(&batches)
        .unwrap_or_else(|e| panic!("q80 result does not have q80's shape: {}", e.message));
    Ok((q80_csv(&rows), summary))
}

/// Panics with a useful diff if `csv` is not the golden answer.
pub fn assert_golden(csv: &str, what: &str) {
    let want = golden();
    if csv != want {
        let first = csv
            .lines()
            .zip(want.lines())
            .enumerate()
            .find(|(_, (a, e))| a != e);
        panic!(
            "{what}: q80 differs from the golden answer ({} vs {} lines); first difference {first:?}",
            csv.lines().count(),
            want.lines().count()
        );
    }
}

/// Quick retries bounded by `deadline` per request.
pub fn quick_retries(deadline: Duration) -> RetryConfig {
    RetryConfig {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        total_deadline: deadline,
    }
}

/// A q80-ready session over S3 (shuffle and, with `spill_to_s3`, spill).
pub struct S3Job {
    pub session: Session,
    pub manager: StoreShuffleManager,
    pub store: S3Store,
    _local: tempfile::TempDir,
}

impl S3Job {
    pub async fn new(
        app_id: &str,
        s3: S3Config,
        engine: EngineConfig,
        spill_to_s3: bool,
    ) -> shuffle_core::Result<Self> {
        let local = tempfile::tempdir().expect("temp dir");
        let shuffle = ShuffleConfig {
            app_id: app_id.to_string(),
            memory_limit: engine.memory_budget as u64,
            local_dirs: vec![local.path().to_path_buf()],
            ..ShuffleConfig::default()
        };
        let built = S3ShuffleBuilder::new(shuffle)
            .s3_config(s3)
            .spill_to_s3(spill_to_s3)
            .build()
            .await?;
        let manager = built.manager;
        let session = Session::new(engine, Arc::new(manager.clone()) as Arc<dyn ShuffleManager>);
        Ok(Self {
            session,
            manager,
            store: built.store,
            _local: local,
        })
    }

    /// Objects under the app's prefix (`<app_id>/`).
    pub async fn app_objects(&self) -> Vec<ObjectMeta> {
        list(&self.manager, &format!("{}/", self.manager.app_id())).await
    }

    /// Objects under the app's spill prefix (`spill/<app_id>/`).
    pub async fn spill_objects(&self) -> Vec<ObjectMeta> {
        list(&self.manager, &format!("spill/{}/", self.manager.app_id())).await
    }
}

/// Lists `prefix` in the manager's store (all shards).
pub async fn list(manager: &StoreShuffleManager, prefix: &str) -> Vec<ObjectMeta> {
    manager
        .store()
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("listing {prefix}: {e}"))
}

/// Starts an embedded S3 server in a temp dir.
pub async fn server() -> EmbeddedS3 {
    EmbeddedS3::start_temp().await.expect("embedded S3 server")
}
