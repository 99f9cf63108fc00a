//! The start-up check (`S3Store::probe`, run by `S3ShuffleBuilder::build`)
//! and the "not S3" classification, over real HTTP on 127.0.0.1: plain HTTP
//! servers started here, and the embedded S3 server with a missing bucket,
//! other keys, or writes refused. Also the embedded server's added latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shuffle_core::metrics::ShuffleMetrics;
use shuffle_core::store::{ObjectKey, ShuffleStore};
use shuffle_core::{Error, ShuffleConfig};
use shuffle_s3::config::BucketUri;
use shuffle_s3::{EmbeddedS3, S3Config, S3Op, S3ShuffleBuilder, S3Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The issue says a bad endpoint must fail "within 15 seconds".
const PROBE_LIMIT: Duration = Duration::from_secs(15);

/// A web server that is not S3: answers every request with `status` and an
/// HTML page, and counts the requests it saw.
struct PlainHttp {
    endpoint: String,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlainHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn plain_http(status: &'static str) -> PlainHttp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                // Read the head, then the body by Content-Length.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let page = "<!DOCTYPE html><html><head><title>It works</title></head>\
                            <body><h1>It works!</h1></body></html>";
                let mut resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    page.len()
                );
                if !head.starts_with("head ") {
                    resp.push_str(page);
                }
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    PlainHttp {
        endpoint: format!("http://{addr}"),
        requests,
        task,
    }
}

/// A config for `endpoint` with the default retry policy (10 attempts,
/// 120 s deadline): what a user gets, and what ran 317 s against a 501.
fn config_for(endpoint: &str, bucket: &str) -> S3Config {
    S3Config::builder()
        .buckets(vec![
            BucketUri::parse(&format!("s3://{bucket}/jobs")).unwrap()
        ])
        .endpoint(endpoint.to_string())
        .region("us-east-1".to_string())
        .force_path_style(true)
        .hash_prefixes(1)
        .static_credentials("AKIDEXAMPLE", "secret", None::<String>)
        .build()
        .unwrap()
}

fn shuffle_config(app: &str) -> ShuffleConfig {
    ShuffleConfig::from_args([
        "shuffle.backend=s3".to_string(),
        format!("shuffle.app_id={app}"),
    ])
    .unwrap()
}

/// Builds a manager over `s3`; returns the error text and how long it took.
async fn build_err(s3: S3Config, app: &str) -> (String, Duration) {
    let started = Instant::now();
    let res = S3ShuffleBuilder::new(shuffle_config(app))
        .s3_config(s3)
        .build()
        .await;
    let took = started.elapsed();
    match res {
        Ok(_) => panic!("built a manager; the probe should have failed"),
        Err(e @ Error::Backend { .. }) => (e.to_string(), took),
        Err(other) => panic!("expected a backend error, got {other:?}"),
    }
}

fn one_line(message: &str) {
    assert!(!message.contains('\n'), "not one line: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_answering_501_is_not_s3_and_is_not_retried() {
    let web = plain_http("501 Not Implemented").await;
    let (message, took) = build_err(config_for(&web.endpoint, "web-bucket"), "app-501").await;
    eprintln!("{message} ({took:?})");
    assert!(took < PROBE_LIMIT, "took {took:?}");
    assert!(message.contains(&web.endpoint), "{message}");
    assert!(message.contains("does not answer like S3"), "{message}");
    assert!(message.contains("HTTP 501"), "{message}");
    assert!(message.contains("s3.endpoint"), "{message}");
    one_line(&message);
    let seen = web.requests.load(Ordering::SeqCst);
    assert!((1..=2).contains(&seen), "{seen} requests: a retry loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_answering_200_html_is_not_s3() {
    let web = plain_http("200 OK").await;
    let (message, took) = build_err(config_for(&web.endpoint, "web-bucket"), "app-200").await;
    eprintln!("{message} ({took:?})");
    assert!(took < PROBE_LIMIT, "took {took:?}");
    assert!(message.contains(&web.endpoint), "{message}");
    assert!(message.contains("does not answer like S3"), "{message}");
    one_line(&message);
    let seen = web.requests.load(Ordering::SeqCst);
    assert!(seen <= 5, "{seen} requests: a retry loop");
}

/// Not only the probe: any request answered by a web page fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_path_gives_up_at_once_on_a_web_page() {
    let web = plain_http("501 Not Implemented").await;
    let store = S3Store::new(config_for(&web.endpoint, "web-bucket"), Arc::default())
        .await
        .unwrap();
    let key = ObjectKey::new(7, "app/shuffle-0/map-0.index");
    let started = Instant::now();
    let get = store.get(&key).await.unwrap_err().to_string();
    let put = store
        .put(&key, bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err()
        .to_string();
    let list = store.list("app/").await.unwrap_err().to_string();
    assert!(started.elapsed() < PROBE_LIMIT, "{:?}", started.elapsed());
    for m in [&get, &put, &list] {
        assert!(m.contains("does not answer like S3"), "{m}");
        assert!(m.contains(&web.endpoint), "{m}");
    }
    // One GET, one PUT, one LIST (one hash prefix): no retries.
    let seen = web.requests.load(Ordering::SeqCst);
    assert_eq!(seen, 3, "requests were retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_nobody_listens_on_fails_within_the_limit() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (message, took) = build_err(config_for(&endpoint, "web-bucket"), "app-down").await;
    eprintln!("{message} ({took:?})");
    assert!(took < PROBE_LIMIT, "took {took:?}");
    assert!(message.contains(&endpoint), "{message}");
    assert!(message.contains("no response"), "{message}");
    assert!(message.contains("s3.endpoint"), "{message}");
    one_line(&message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_can_be_turned_off() {
    let web = plain_http("501 Not Implemented").await;
    let mut cfg = config_for(&web.endpoint, "web-bucket");
    cfg.probe = false;
    let built = S3ShuffleBuilder::new(shuffle_config("app-off"))
        .s3_config(cfg)
        .build()
        .await;
    assert!(built.is_ok(), "{:?}", built.err());
    assert_eq!(web.requests.load(Ordering::SeqCst), 0);
    let parsed = S3Config::from_env_and_pairs(&std::collections::BTreeMap::from([
        ("s3.bucket".to_string(), "s3://web-bucket".to_string()),
        ("s3.probe".to_string(), "false".to_string()),
    ]))
    .unwrap();
    assert!(!parsed.probe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_at_build_naming_it() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let cfg = server
        .config_builder("jobs")
        .buckets(vec![BucketUri::parse("s3://no-such-bucket/jobs").unwrap()])
        .build()
        .unwrap();
    let (message, took) = build_err(cfg, "app-nb").await;
    eprintln!("{message}");
    assert!(took < PROBE_LIMIT, "took {took:?}");
    assert!(message.contains("`no-such-bucket`"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains(&server.endpoint), "{message}");
    assert!(message.contains("create it or fix s3.bucket"), "{message}");
    one_line(&message);
    assert_eq!(server.stats().count(S3Op::PutObject), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_at_build_naming_the_endpoint() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    let cfg = server
        .config_builder("jobs")
        .static_credentials("SHOVELWRONGKEY0000", "not-the-secret", None::<String>)
        .build()
        .unwrap();
    let (message, took) = build_err(cfg, "app-creds").await;
    eprintln!("{message}");
    assert!(took < PROBE_LIMIT, "took {took:?}");
    assert!(message.contains(&server.endpoint), "{message}");
    assert!(message.contains("credentials"), "{message}");
    assert!(message.contains("s3.access_key_id"), "{message}");
    one_line(&message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_bucket_fails_at_build_naming_it() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    server.set_read_only(true);
    let (message, took) = build_err(server.config("jobs").unwrap(), "app-ro").await;
    eprintln!("{message}");
    assert!(took < PROBE_LIMIT, "took {took:?}");
    assert!(
        message.contains("AccessDenied writing s3://shovel/jobs/"),
        "{message}"
    );
    assert!(message.contains("/app-ro/_shovel_probe"), "{message}");
    assert!(message.contains("`shovel`"), "{message}");
    assert!(message.contains("but not write"), "{message}");
    one_line(&message);
}

/// A successful probe on two buckets, with or without the conditional-write
/// check (`s3.conditional_writes`).
async fn successful_probe(conditional: bool) {
    let server = EmbeddedS3::start_temp().await.unwrap();
    server.create_bucket("second").unwrap();
    let cfg = server
        .config_builder("jobs")
        .buckets(vec![
            BucketUri::parse("s3://shovel/jobs").unwrap(),
            BucketUri::parse("s3://second").unwrap(),
        ])
        .conditional_writes(conditional)
        .build()
        .unwrap();
    let s3 = S3ShuffleBuilder::new(shuffle_config(&format!("app-ok-{conditional}")))
        .s3_config(cfg)
        .build()
        .await
        .unwrap();
    assert_eq!(s3.store.conditional_writes(), conditional);
    let stats = server.stats();
    // The probe ran: both buckets checked, written, read and cleaned, and
    // with conditional writes on, the first bucket's probe object PUT once
    // more with If-None-Match: * (the server honours it: 412, kept on).
    let puts = if conditional { 3 } else { 2 };
    assert_eq!(stats.count(S3Op::HeadBucket), 2, "{:?}", stats.requests);
    assert_eq!(stats.count(S3Op::PutObject), puts, "{:?}", stats.requests);
    assert_eq!(stats.count(S3Op::GetObject), 2, "{:?}", stats.requests);
    assert_eq!(stats.count(S3Op::DeleteObjects), 2, "{:?}", stats.requests);
    // ... and is not counted as the job's work.
    assert_eq!(s3.metrics.requests.put.load(Ordering::Relaxed), 0);
    for bucket in ["shovel", "second"] {
        let listed = s3
            .store
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert!(keys.is_empty(), "left in {bucket}: {keys:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_probe_leaves_nothing_behind() {
    successful_probe(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_conditional_writes_the_probe_skips_the_conditional_put() {
    successful_probe(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_latency_delays_every_request_and_defaults_to_zero() {
    let server = EmbeddedS3::start_temp().await.unwrap();
    assert_eq!(server.latency(), Duration::ZERO);
    let store = S3Store::new(
        server.config("lat").unwrap(),
        Arc::new(ShuffleMetrics::default()),
    )
    .await
    .unwrap();
    let key = ObjectKey::new(1, "app/x");
    store
        .put(&key, bytes::Bytes::from_static(b"x"))
        .await
        .unwrap();
    server.set_latency(Duration::from_millis(50));
    assert_eq!(server.latency(), Duration::from_millis(50));
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(&store.get(&key).await.unwrap()[..], b"x");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(50), "took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_standalone_server_with_latency() {
    let dir = tempfile::tempdir().unwrap();
    let server = shuffle_s3::embedded::serve(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    assert!(
        server.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        server.endpoint
    );
    assert_eq!(server.buckets(), vec!["shovel".to_string()]);
    assert_eq!(server.latency(), Duration::from_millis(50));
    assert!(!server.access_key.is_empty() && !server.secret_key.is_empty());
    let store = S3Store::new(server.config("p").unwrap(), Arc::default())
        .await
        .unwrap();
    let started = Instant::now();
    store.probe("standalone").await.unwrap();
    // HeadBucket, PUT, GET, DELETE: four round trips.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}
