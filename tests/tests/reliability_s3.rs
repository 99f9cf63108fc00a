//! Reliability on S3: q80 (TPC-DS SF 0.01) through the engine over the
//! embedded S3 server survives a flaky store with nothing lost, fails (not
//! hangs) with an error naming the endpoint when the store is down or
//! unreachable, keeps concurrent jobs apart, never shows the secret key,
//! encrypts every object it writes when SSE is configured, and leaves
//! nothing behind (cleanup after success and failure, GC after a kill).

mod reliability_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reliability_support::*;
use shuffle_core::gc::collect_garbage;
use shuffle_core::{ShuffleHandle, ShuffleManager, ShuffleManagerExt, SpillWriter};
use shuffle_s3::{FaultConfig, RetryConfig, S3Op, Sse};

/// Retries that give up quickly (for the failure tests).
fn give_up_fast() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        total_deadline: Duration::from_secs(2),
    }
}

async fn data() -> std::path::PathBuf {
    tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation")
}

/// 1. ~10% of requests fail (503 SlowDown, 500, dropped connections, slow
/// responses); q80 with shuffle and spill on S3 and a small memory budget
/// still gives the golden answer, and the metrics show the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q80_survives_flaky_s3() {
    let data = data().await;
    let s3 = server().await;
    let cfg = s3
        .config_builder("flaky")
        .retry(quick_retries(Duration::from_secs(60)))
        .build()
        .expect("s3 config");
    let job = S3Job::new("flaky-app", cfg, engine_config(Some(256 << 10)), true)
        .await
        .expect("s3 job");
    s3.set_faults(FaultConfig::mixed(0.10, 0x5eed));
    let before = job.manager.metrics().snapshot();
    let (csv, summary) = run_q80(&job.session, &data)
        .await
        .unwrap_or_else(|e| panic!("q80 over a flaky S3 failed: {e}"));
    let delta = job.manager.metrics().snapshot().delta(&before);
    s3.clear_faults();
    assert_golden(&csv, "flaky S3");
    let stats = s3.stats();
    eprintln!(
        "flaky S3: {} requests, {} faults injected, {} retries ({} throttled)",
        stats.total(),
        stats.faults_injected,
        delta.requests.retries,
        delta.requests.throttles
    );
    assert!(
        stats.faults_injected > 0,
        "no fault was injected: {stats:?}"
    );
    assert!(
        delta.requests.retries > 0,
        "faults were injected but no retry counted: {delta:?}"
    );
    assert!(
        delta.requests.throttles > 0,
        "503 SlowDown was injected but no throttle counted: {delta:?}"
    );
    assert!(
        summary.total_spill_bytes() > 0 && delta.shuffle.spill_count > 0,
        "the small budget should spill (to S3): {delta:?} {}",
        summary.to_json()
    );
    assert!(summary.shuffle_bytes_written > 0);
    job.manager.cleanup_app().await.expect("cleanup");
}

/// Runs q80 and expects a failure; returns its text.
async fn expect_failure(job: &S3Job, what: &str) -> String {
    let data = data().await;
    match run_q80(&job.session, &data).await {
        Ok(_) => panic!("{what}: q80 succeeded"),
        Err(e) => format!("{e}"),
    }
}

/// 2. A store that answers every request with 500, and an endpoint where
/// nothing listens: the job fails (within the retry deadline, not hanging)
/// with an error that names the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q80_fails_with_the_endpoint_named_when_s3_is_down() {
    let s3 = server().await;
    let engine = engine::EngineConfig {
        max_task_attempts: 2,
        ..engine_config(None)
    };

    // Permanently failing endpoint.
    let cfg = s3
        .config_builder("down")
        .retry(give_up_fast())
        .hash_prefixes(1)
        .build()
        .expect("s3 config");
    let job = S3Job::new("down-app", cfg, engine.clone(), true)
        .await
        .expect("s3 job");
    s3.fail_all(true);
    let err = expect_failure(&job, "fail_all").await;
    s3.fail_all(false);
    eprintln!("fail_all: {err}");
    assert!(
        err.contains(&s3.endpoint),
        "error does not name the endpoint {}: {err}",
        s3.endpoint
    );
    assert!(
        err.contains("500"),
        "error does not say what S3 answered: {err}"
    );

    // Unreachable endpoint: a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = |probe: bool| {
        s3.config_builder("unreachable")
            .endpoint(endpoint.clone())
            .retry(give_up_fast())
            .hash_prefixes(1)
            .probe(probe)
            .build()
            .expect("s3 config")
    };
    // The start-up probe finds it before any work...
    match S3Job::new("unreachable-app", cfg(true), engine.clone(), true).await {
        Ok(_) => panic!("the start-up probe must fail on an unreachable endpoint"),
        Err(e) => assert!(
            e.to_string().contains(&endpoint),
            "the probe error does not name the endpoint {endpoint}: {e}"
        ),
    }
    // ...and without it (`s3.probe=false`) the job fails naming it too.
    let job = S3Job::new("unreachable-app", cfg(false), engine, true)
        .await
        .expect("s3 job");
    let err = expect_failure(&job, "unreachable endpoint").await;
    eprintln!("unreachable: {err}");
    assert!(
        err.contains(&endpoint),
        "error does not name the endpoint {endpoint}: {err}"
    );
}

/// Writes one small map output of shuffle `shuffle_id` (maps 0..2) and a
/// spill file, and leaves them in place (as a killed job would).
async fn leave_objects(manager: &shuffle_core::StoreShuffleManager, shuffle_id: u32) -> u64 {
    manager
        .register_shuffle(ShuffleHandle {
            shuffle_id,
            num_maps: 2,
            num_partitions: 3,
        })
        .await
        .expect("register");
    for map in 0..2 {
        let mut w = manager
            .buffered_writer(shuffle_id, map, 0)
            .await
            .expect("writer");
        for p in 0..3 {
            w.write_block(p, format!("map {map} partition {p}").as_bytes(), 1)
                .await
                .expect("write");
        }
        w.commit().await.expect("commit");
    }
    let mut spill = SpillWriter::create(manager.spill_store(), manager.metrics())
        .await
        .expect("spill");
    spill.write_block(b"spilled").await.expect("spill write");
    spill.finish().await.expect("spill finish");
    // one data object per map (its index is the footer), one spill object,
    // the job marker
    4
}

/// 3. Two q80 jobs at once in the same bucket and prefix with different app
/// ids: both give the golden answer without recomputing anything (neither
/// lost an object to the other), every object seen while they run lies under
/// one app's prefix, and each job's cleanup removes only its own objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_are_isolated() {
    let data = data().await;
    let s3 = server().await;
    let cfg = || s3.config("shared").expect("s3 config");
    let a = S3Job::new("job-a", cfg(), engine_config(Some(512 << 10)), true)
        .await
        .expect("job a");
    let b = S3Job::new("job-b", cfg(), engine_config(Some(512 << 10)), true)
        .await
        .expect("job b");

    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let running = Arc::clone(&running);
        let m = a.manager.clone();
        async move {
            let mut seen = BTreeSet::new();
            while running.load(Ordering::SeqCst) {
                for o in list(&m, "").await {
                    seen.insert(o.key.path);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }
    };
    let run = |job: &S3Job| {
        let data = data.clone();
        let session = job.session.clone();
        async move { run_q80(&session, &data).await }
    };
    let both = async {
        let r = tokio::join!(run(&a), run(&b));
        running.store(false, Ordering::SeqCst);
        r
    };
    let ((ra, rb), seen) = tokio::join!(both, watcher);
    let (csv_a, sum_a) = ra.unwrap_or_else(|e| panic!("job a failed: {e}"));
    let (csv_b, sum_b) = rb.unwrap_or_else(|e| panic!("job b failed: {e}"));
    assert_golden(&csv_a, "concurrent job a");
    assert_golden(&csv_b, "concurrent job b");
    for s in [&sum_a, &sum_b] {
        assert_eq!(
            (s.tasks_retried, s.tasks_recomputed),
            (0, 0),
            "a job lost objects to the other: {}",
            s.to_json()
        );
    }
    eprintln!(
        "isolation: {} distinct objects seen while both jobs ran",
        seen.len()
    );
    let apps: BTreeSet<&str> = seen
        .iter()
        .map(|p| {
            let app = p.strip_prefix("spill/").unwrap_or(p);
            app.split('/').next().unwrap_or("")
        })
        .collect();
    assert!(
        seen.iter().any(|p| p.starts_with("job-a/"))
            && seen.iter().any(|p| p.starts_with("job-b/")),
        "the watcher saw no shuffle objects of one of the jobs: {apps:?}"
    );
    assert!(
        apps.iter().all(|a| *a == "job-a" || *a == "job-b"),
        "objects outside the jobs' prefixes: {apps:?}"
    );

    // Leftovers of both apps; A's cleanup must leave B's alone.
    let n = leave_objects(&a.manager, 1000).await;
    assert_eq!(leave_objects(&b.manager, 1000).await, n);
    let b_objects = b.app_objects().await.len() + b.spill_objects().await.len();
    assert_eq!(b_objects as u64, n, "{:?}", list(&b.manager, "").await);
    a.manager.cleanup_app().await.expect("cleanup a");
    assert!(
        a.app_objects().await.is_empty(),
        "{:?}",
        a.app_objects().await
    );
    assert_eq!(
        (b.app_objects().await.len() + b.spill_objects().await.len()) as u64,
        n,
        "job a's cleanup touched job b's objects"
    );
    b.manager.cleanup_app().await.expect("cleanup b");
    assert!(b.app_objects().await.is_empty());
}

/// 4. The secret access key never shows: not in the config's Debug (nor
/// the store's, manager's or session's), not in the error of a run with a
/// wrong secret, not in a job summary (Debug or JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leak() {
    let data = data().await;
    let s3 = server().await;
    let secret = s3.secret_key.clone();
    let no_secret = |what: &str, text: &str, secret: &str| {
        assert!(
            !text.contains(secret),
            "{what} shows the secret key: {text}"
        );
    };

    let builder = s3.config_builder("secrets");
    no_secret("S3ConfigBuilder Debug", &format!("{builder:?}"), &secret);
    let cfg = builder.build().expect("s3 config");
    no_secret("S3Config Debug", &format!("{cfg:?}"), &secret);
    no_secret("S3Config Debug", &format!("{cfg:#?}"), &secret);
    let job = S3Job::new("secret-app", cfg, engine_config(None), true)
        .await
        .expect("s3 job");
    no_secret("S3Store Debug", &format!("{:?}", job.store), &secret);
    no_secret("manager Debug", &format!("{:?}", job.manager), &secret);
    no_secret("Session Debug", &format!("{:?}", job.session), &secret);
    let (csv, summary) = run_q80(&job.session, &data)
        .await
        .unwrap_or_else(|e| panic!("q80 failed: {e}"));
    assert_golden(&csv, "secrets run");
    no_secret("JobSummary Debug", &format!("{summary:?}"), &secret);
    no_secret("JobSummary JSON", &summary.to_json(), &secret);
    job.manager.cleanup_app().await.expect("cleanup");

    // A wrong secret: the server rejects every request.
    let wrong = format!("WRONG{}", &secret[5..]);
    let cfg = |probe: bool| {
        s3.config_builder("secrets")
            .static_credentials(s3.access_key.clone(), wrong.clone(), None)
            .retry(give_up_fast())
            .hash_prefixes(1)
            .probe(probe)
            .build()
            .expect("s3 config")
    };
    no_secret("S3Config Debug", &format!("{:?}", cfg(true)), &wrong);
    // The start-up probe rejects the credentials before any work, naming
    // the endpoint and no secret.
    match S3Job::new("bad-credentials", cfg(true), engine_config(None), true).await {
        Ok(_) => panic!("the start-up probe must reject a wrong secret"),
        Err(e) => {
            for text in [format!("{e}"), format!("{e:?}")] {
                no_secret("probe error of bad credentials", &text, &wrong);
                no_secret("probe error of bad credentials", &text, &secret);
            }
            assert!(e.to_string().contains(&s3.endpoint), "{e}");
        }
    }
    // Without the probe the job itself fails, with the same guarantees.
    let job = S3Job::new(
        "bad-credentials",
        cfg(false),
        engine::EngineConfig {
            max_task_attempts: 2,
            ..engine_config(None)
        },
        true,
    )
    .await
    .expect("s3 job");
    let opts = engine::queries::q80::Q80Options {
        limit: None,
        ..Default::default()
    };
    let df = engine::queries::q80::q80(&job.session, &data, &opts).expect("plan q80");
    let err = tokio::time::timeout(JOB_TIMEOUT, df.collect_with_summary())
        .await
        .expect("bad-credential run hangs")
        .expect_err("a wrong secret must fail the job");
    eprintln!("bad credentials: {err}");
    for text in [format!("{err}"), format!("{err:?}"), format!("{err:#?}")] {
        no_secret("error of a bad-credential run", &text, &wrong);
        no_secret("error of a bad-credential run", &text, &secret);
    }
    assert!(
        format!("{err}").contains(&s3.endpoint),
        "the credential error should name the endpoint: {err}"
    );
    let cleanup = job.manager.cleanup_app().await;
    if let Err(e) = cleanup {
        no_secret("cleanup error", &format!("{e} {e:?}"), &wrong);
    }
}

/// 5. With SSE configured, every PutObject and CreateMultipartUpload the
/// server saw during a q80 run (shuffle data, indexes, spills) carried it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_encrypted() {
    let data = data().await;
    for (name, sse) in [
        ("aes256", Sse::Aes256),
        (
            "kms",
            Sse::Kms {
                key_id: Some("alias/shovel-test".into()),
            },
        ),
    ] {
        let s3 = server().await;
        // A low multipart threshold sends the larger objects through
        // CreateMultipartUpload, the rest through PutObject.
        let cfg = s3
            .config_builder("sse")
            .sse(Some(sse.clone()))
            .multipart_threshold(64 << 10)
            .part_size(5 << 20)
            .build()
            .expect("s3 config");
        let job = S3Job::new(
            &format!("sse-{name}"),
            cfg,
            engine_config(Some(256 << 10)),
            true,
        )
        .await
        .expect("s3 job");
        let (csv, _) = run_q80(&job.session, &data)
            .await
            .unwrap_or_else(|e| panic!("q80 with SSE {name} failed: {e}"));
        assert_golden(&csv, name);
        job.manager.cleanup_app().await.expect("cleanup");
        let stats = s3.stats();
        eprintln!(
            "SSE {name}: {} PutObject, {} CreateMultipartUpload",
            stats.count(S3Op::PutObject),
            stats.count(S3Op::CreateMultipartUpload)
        );
        let (want_sse, want_key) = match &sse {
            Sse::Aes256 => ("AES256", None),
            Sse::Kms { key_id } => ("aws:kms", key_id.clone()),
        };
        assert!(
            stats.count(S3Op::PutObject) > 0 && stats.count(S3Op::CreateMultipartUpload) > 0,
            "{name}: expected both single and multipart uploads: {:?}",
            stats.requests
        );
        assert_eq!(
            stats.sse.len() as u64,
            stats.count(S3Op::PutObject) + stats.count(S3Op::CreateMultipartUpload)
        );
        assert!(
            stats.sse.iter().any(|r| r.path.contains("/spill/")),
            "{name}: no spill object was written"
        );
        for r in &stats.sse {
            assert_eq!(
                (r.sse.as_deref(), r.kms_key_id.clone()),
                (Some(want_sse), want_key.clone()),
                "{name}: {:?} of {} was not encrypted as configured",
                r.op,
                r.path
            );
        }
    }
}

/// 6a. After a successful job and after a job that failed half-way (S3 went
/// down after the first stage), `cleanup_app` leaves no object under the
/// app's prefix and none under `spill/<app_id>/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_leaves_nothing_after_success_or_failure() {
    let data = data().await;
    let s3 = Arc::new(server().await);
    let cfg = || {
        s3.config_builder("cleanup")
            .retry(give_up_fast())
            .build()
            .expect("s3 config")
    };

    let ok = S3Job::new("cleanup-ok", cfg(), engine_config(Some(256 << 10)), true)
        .await
        .expect("s3 job");
    let (csv, summary) = run_q80(&ok.session, &data)
        .await
        .unwrap_or_else(|e| panic!("q80 failed: {e}"));
    assert_golden(&csv, "cleanup run");
    assert!(summary.total_spill_bytes() > 0, "{}", summary.to_json());
    ok.manager.cleanup_app().await.expect("cleanup");
    assert!(
        ok.app_objects().await.is_empty(),
        "{:?}",
        ok.app_objects().await
    );
    assert!(
        ok.spill_objects().await.is_empty(),
        "{:?}",
        ok.spill_objects().await
    );

    let failed = S3Job::new(
        "cleanup-failed",
        cfg(),
        engine::EngineConfig {
            max_task_attempts: 2,
            ..engine_config(Some(256 << 10))
        },
        true,
    )
    .await
    .expect("s3 job");
    let fired = Arc::new(AtomicBool::new(false));
    {
        let (s3, fired) = (Arc::clone(&s3), Arc::clone(&fired));
        failed
            .session
            .set_stage_hook(Some(Arc::new(move |_: &engine::scheduler::StageEvent| {
                if !fired.swap(true, Ordering::SeqCst) {
                    s3.fail_all(true);
                }
            })));
    }
    let err = expect_failure(&failed, "S3 down after the first stage").await;
    assert!(fired.load(Ordering::SeqCst));
    assert!(err.contains(&s3.endpoint), "{err}");
    // Let task attempts still in flight run into the outage and end before
    // the store comes back (their requests give up after 2 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    s3.fail_all(false);
    let left = failed.app_objects().await.len();
    eprintln!(
        "failed job left {left} shuffle objects and {} spill objects before cleanup: {err}",
        failed.spill_objects().await.len()
    );
    assert!(
        left > 0,
        "the first stage's output should still be there (removing it failed)"
    );
    failed.manager.cleanup_app().await.expect("cleanup");
    assert!(
        failed.app_objects().await.is_empty(),
        "{:?}",
        failed.app_objects().await
    );
    assert!(
        failed.spill_objects().await.is_empty(),
        "spill objects of the failed job survive cleanup_app: {:?}",
        failed.spill_objects().await
    );
}

/// 6a'. A task that fails between spilling and reading its spill back
/// leaves the spill object behind (a `SpillFile` has no async drop); the
/// app's `cleanup_app` must remove it with the rest of the app's objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_orphaned_spill_files() {
    let s3 = server().await;
    let job = S3Job::new(
        "orphaned-spill",
        s3.config("cleanup").expect("config"),
        engine_config(None),
        true,
    )
    .await
    .expect("s3 job");
    let mut spill = SpillWriter::create(job.manager.spill_store(), job.manager.metrics())
        .await
        .expect("spill");
    spill.write_block(b"never read back").await.expect("write");
    let file = spill.finish().await.expect("finish");
    drop(file);
    assert_eq!(job.spill_objects().await.len(), 1);
    job.manager.cleanup_app().await.expect("cleanup");
    let left = job.spill_objects().await;
    assert!(
        left.is_empty(),
        "cleanup_app left {} object(s) under spill/{}/: {:?}",
        left.len(),
        job.manager.app_id(),
        left.iter().map(|o| &o.key.path).collect::<Vec<_>>()
    );
}

/// 6b. What a killed job left behind (a committed shuffle, a spill file and
/// its job marker, never cleaned up) is removed by `collect_garbage`,
/// reported by app id; an object Shovel did not write is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_what_a_killed_job_left() {
    let s3 = server().await;
    let killed = S3Job::new(
        "killed-job",
        s3.config("gc").expect("config"),
        engine_config(None),
        true,
    )
    .await
    .expect("s3 job");
    let survivor_n = leave_objects(&killed.manager, 7).await;
    assert_eq!(
        (killed.app_objects().await.len() + killed.spill_objects().await.len()) as u64,
        survivor_n
    );
    // A plain object outside any app, to see GC report it apart.
    killed
        .manager
        .store()
        .put(
            &shuffle_core::ObjectKey::new(3, "other-app/stray.bin"),
            Bytes::from_static(b"x"),
        )
        .await
        .expect("put");
    // Modification times have one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let options = shuffle_core::gc::GcOptions {
        older_than: Duration::ZERO,
        dry_run: false,
    };
    let report = collect_garbage(killed.manager.store().as_ref(), "", &options)
        .await
        .expect("gc");
    assert_eq!(report.removed().0, survivor_n, "{report:?}");
    assert_eq!(
        report.job("killed-job").map(|j| (j.objects, j.state)),
        Some((survivor_n, shuffle_core::gc::JobState::Removed)),
        "{report:?}"
    );
    assert_eq!(report.unrecognised_objects, 1, "{report:?}");
    let left: Vec<String> = list(&killed.manager, "")
        .await
        .into_iter()
        .map(|o| o.key.path)
        .collect();
    assert_eq!(left, ["other-app/stray.bin"]);
}
