//! Cleanup without listing (issue 11, item 3): q80 (TPC-DS SF 0.01) with
//! shuffle and spill on the embedded S3 server makes no LIST request over
//! the whole run, setup and cleanup included, and leaves no object of the
//! app behind. Requests are counted by the server (`ServerStats`).

mod reliability_support;

use reliability_support::*;
use shuffle_core::ShuffleManager;
use shuffle_s3::S3Op;

const LISTS: [S3Op; 2] = [S3Op::ListObjects, S3Op::ListMultipartUploads];

fn lists(s3: &shuffle_s3::EmbeddedS3) -> u64 {
    let stats = s3.stats();
    LISTS.iter().map(|op| stats.count(*op)).sum()
}

async fn data() -> std::path::PathBuf {
    tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation")
}

/// The engine removes each job's shuffles by the keys it knows (one batched
/// DeleteObjects), and `cleanup_app` the rest (spills, marker): no LIST, and
/// the bucket holds nothing of the app afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q80_on_s3_never_lists_and_leaves_nothing() {
    let data = data().await;
    let s3 = server().await;
    let job = S3Job::new(
        "no-list",
        s3.config("known-keys").expect("s3 config"),
        engine_config(Some(256 << 10)),
        true,
    )
    .await
    .expect("s3 job");
    let (csv, summary) = run_q80(&job.session, &data)
        .await
        .unwrap_or_else(|e| panic!("q80 failed: {e}"));
    assert_golden(&csv, "no-list run");
    assert!(
        summary.total_spill_bytes() > 0,
        "the run must spill to S3 too: {}",
        summary.to_json()
    );
    let removed = job.manager.cleanup_app().await.expect("cleanup");
    let stats = s3.stats();
    eprintln!("requests: {:?}; cleanup removed {removed}", stats.requests);
    assert!(
        stats.count(S3Op::DeleteObjects) > 0,
        "nothing was deleted: {:?}",
        stats.requests
    );
    assert_eq!(
        lists(&s3),
        0,
        "LIST requests in a q80 run with cleanup: {:?}",
        stats.requests
    );
    let left: Vec<String> = list(&job.manager, "")
        .await
        .into_iter()
        .map(|o| o.key.path)
        .filter(|p| p.starts_with("no-list/") || p.starts_with("spill/no-list/"))
        .collect();
    assert!(left.is_empty(), "objects left after cleanup: {left:?}");
}

/// A job whose removal is deferred answers first: its shuffles are still
/// in the bucket when it returns, and the session's deferred removal (one
/// batched delete, no LIST) then removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_removal_runs_after_the_answer() {
    let data = data().await;
    let s3 = server().await;
    let job = S3Job::new(
        "deferred",
        s3.config("known-keys").expect("s3 config"),
        engine_config(None),
        false,
    )
    .await
    .expect("s3 job");
    job.session.defer_shuffle_removal(true);
    let (csv, _) = run_q80(&job.session, &data)
        .await
        .unwrap_or_else(|e| panic!("q80 failed: {e}"));
    assert_golden(&csv, "deferred run");
    let shuffle_objects = |objects: Vec<shuffle_core::ObjectMeta>| {
        objects
            .into_iter()
            .map(|o| o.key.path)
            .filter(|p| p.contains("/shuffle-"))
            .collect::<Vec<_>>()
    };
    assert!(
        !shuffle_objects(job.app_objects().await).is_empty(),
        "the job removed its shuffles before answering"
    );
    s3.reset_stats();
    let removed = job
        .session
        .remove_finished_shuffles()
        .await
        .expect("remove");
    assert!(removed > 0);
    assert_eq!(lists(&s3), 0, "{:?}", s3.stats().requests);
    let left = shuffle_objects(job.app_objects().await);
    assert!(left.is_empty(), "left: {left:?}");
    job.manager.cleanup_app().await.expect("cleanup");
    assert!(job.app_objects().await.is_empty());
}
