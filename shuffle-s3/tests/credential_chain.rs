//! Without static keys the store resolves the AWS credential chain once, when
//! it is built: no credentials fail there at once with the fixes, a chain
//! that does not answer fails at `s3.credentials_timeout`, and credentials
//! from the environment work against the embedded server.
//!
//! The chain reads the process environment, so each case runs this test
//! binary again (the `child` test) with a controlled environment: no
//! inherited variables, `HOME` and the AWS config and credentials files in
//! an empty temp dir, and instance metadata disabled
//! (`AWS_EC2_METADATA_DISABLED=true`), so nothing beyond 127.0.0.1 is ever
//! contacted. The child prints one `RESULT` line the parent checks.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shuffle_core::store::{ObjectKey, ShuffleStore};
use shuffle_core::Error;
use shuffle_s3::{EmbeddedS3, S3Config, S3Store};

/// Set in the child's environment.
const CHILD: &str = "SHOVEL_TEST_CREDENTIAL_CHAIN_CHILD";

/// What the child saw.
struct Outcome {
    ok: bool,
    message: String,
    elapsed: Duration,
    output: String,
}

/// Runs the `child` test with only `vars` (plus the isolation above) set.
fn run_child(home: &Path, vars: &[(&str, String)]) -> Outcome {
    let missing = home.join("no-such-dir");
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["child", "--exact", "--nocapture", "--test-threads", "1"])
        .env_clear()
        .env(CHILD, "1")
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", missing.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", missing.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed: {output}");
    assert!(!output.contains("panicked"), "child panicked: {output}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no RESULT line: {output}"));
    let (status, rest) = line.split_once(' ').expect("status");
    let (ms, message) = rest.split_once(' ').unwrap_or((rest, ""));
    Outcome {
        ok: status == "ok",
        message: message.to_string(),
        elapsed: Duration::from_millis(ms.parse().expect("elapsed ms")),
        output,
    }
}

/// The child: builds a store from `SHOVEL_S3_*` and, when that works,
/// writes, reads and deletes one object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let config = S3Config::from_env_and_pairs::<&str, &str>([]).expect("config from env");
    let started = Instant::now();
    let built = S3Store::new(config, Arc::default()).await;
    let elapsed = started.elapsed().as_millis();
    let store = match built {
        Ok(s) => s,
        Err(Error::Backend { message, .. }) => {
            println!("RESULT err {elapsed} {message}");
            return;
        }
        Err(other) => {
            println!("RESULT other {elapsed} {other}");
            return;
        }
    };
    let key = ObjectKey::new(7, "chain/x");
    let roundtrip = async {
        store.put(&key, Bytes::from_static(b"v")).await?;
        let got = store.get(&key).await?;
        store.delete(std::slice::from_ref(&key)).await?;
        Ok::<_, Error>(got)
    };
    match roundtrip.await {
        Ok(got) if got == Bytes::from_static(b"v") => println!("RESULT ok {elapsed}"),
        Ok(got) => println!("RESULT other {elapsed} read back {got:?}"),
        Err(e) => println!("RESULT other {elapsed} {e}"),
    }
}

fn base_vars(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SHOVEL_S3_BUCKET", "s3://shovel/chain".to_string()),
        ("SHOVEL_S3_ENDPOINT", endpoint.to_string()),
        ("SHOVEL_S3_RETRY_TOTAL_DEADLINE", "10s".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_anywhere_fail_at_build_with_the_fixes() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut vars = base_vars(&server.endpoint);
    // A generous limit: the failure must come from the chain finding
    // nothing, not from waiting it out.
    vars.push(("SHOVEL_S3_CREDENTIALS_TIMEOUT", "30s".to_string()));
    let endpoint = server.endpoint.clone();
    let o = tokio::task::spawn_blocking(move || run_child(home.path(), &vars))
        .await
        .unwrap();
    assert!(!o.ok, "built without credentials: {}", o.output);
    for needle in [
        "no AWS credentials",
        endpoint.as_str(),
        "found none",
        "s3.access_key_id",
        "s3.secret_access_key",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "instance or task role",
    ] {
        assert!(
            o.message.contains(needle),
            "`{needle}` not in: {}",
            o.message
        );
    }
    assert!(o.elapsed < Duration::from_secs(5), "took {:?}", o.elapsed);
    // Nothing reached the server.
    assert_eq!(server.stats().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_does_not_answer_fails_at_the_credentials_timeout() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    // A container-credentials endpoint on loopback that accepts
    // connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_uri = format!("http://{}/creds", silent.local_addr().unwrap());
    let home = tempfile::tempdir().unwrap();
    let mut vars = base_vars(&server.endpoint);
    vars.push(("SHOVEL_S3_CREDENTIALS_TIMEOUT", "1s".to_string()));
    vars.push(("AWS_CONTAINER_CREDENTIALS_FULL_URI", silent_uri));
    let o = tokio::task::spawn_blocking(move || run_child(home.path(), &vars))
        .await
        .unwrap();
    drop(silent);
    assert!(!o.ok, "built without credentials: {}", o.output);
    for needle in [
        "no AWS credentials",
        "within 1s (s3.credentials_timeout)",
        "s3.access_key_id",
        "AWS_PROFILE",
    ] {
        assert!(
            o.message.contains(needle),
            "`{needle}` not in: {}",
            o.message
        );
    }
    assert!(
        o.elapsed >= Duration::from_millis(900) && o.elapsed < Duration::from_secs(4),
        "took {:?}",
        o.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_environment_work_through_the_chain() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut vars = base_vars(&server.endpoint);
    vars.push(("AWS_ACCESS_KEY_ID", server.access_key.clone()));
    vars.push(("AWS_SECRET_ACCESS_KEY", server.secret_key.clone()));
    let o = tokio::task::spawn_blocking(move || run_child(home.path(), &vars))
        .await
        .unwrap();
    assert!(o.ok, "{}", o.output);
    assert!(!o.output.contains(&server.secret_key), "secret leaked");
    let stats = server.stats();
    assert_eq!(stats.count(shuffle_s3::S3Op::PutObject), 1);
    assert_eq!(stats.count(shuffle_s3::S3Op::GetObject), 1);
}
