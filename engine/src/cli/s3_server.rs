//! `shovel s3-server`: the embedded S3-compatible server
//! ([`shuffle_s3::embedded::serve`]: s3s + s3s-fs behind the fault layer,
//! `TCP_NODELAY`, SigV4 with one static key pair) as a process of its own.
//!
//! Why a separate process: the in-process server of `shovel q80 --shuffle
//! s3` shares the job's cores and runtime, and has no way to stand in for a
//! store at a distance. This one runs where you like, adds a fixed
//! `--latency` before every answer (a round trip to a remote store, as a
//! `tokio::time::sleep`, so concurrent requests wait in parallel), and can
//! fail a fraction of requests (`--fault-rate`), so S3 runs are reproducible
//! without an AWS account.
//!
//! It prints one line on stdout (the endpoint, the buckets, the static keys
//! and the exact `shovel q80` command with the environment to paste), then
//! serves until Ctrl-C or SIGTERM, and exits 0 after stopping (the accept
//! loop and every connection are aborted; objects stay in `--dir`). The
//! bind address must be loopback unless `--allow-remote` is given: the
//! server speaks plain HTTP and whoever holds the printed keys may read and
//! write the directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;

/// `shovel help s3-server`'s long text.
pub const S3_SERVER_ABOUT: &str = "\
Run the embedded S3-compatible server (s3s + s3s-fs, SigV4 with one static key pair, \
TCP_NODELAY) as its own process, until Ctrl-C or SIGTERM (then exit 0). Objects persist \
under --dir; the bucket `shovel` is created. One line on stdout gives the endpoint, the \
buckets, the keys and the `shovel q80` command (with its environment) that uses it. \
--latency waits that long before answering each request, like the round trip to a remote \
store; --fault-rate fails a fraction of requests. Only loopback addresses are accepted for \
--bind unless --allow-remote is given.";

/// Seed of `--fault-rate`'s choice of requests (runs are repeatable).
const FAULT_SEED: u64 = 0x5eed;

/// `shovel s3-server`'s arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct S3ServerArgs {
    /// The served directory (created if missing).
    pub dir: PathBuf,
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Added before every request is handled.
    pub latency: Duration,
    /// Fraction of requests to fail (mixed faults), if any.
    pub fault_rate: Option<f64>,
    /// A non-loopback `bind` was allowed.
    pub allow_remote: bool,
}

/// The line printed once the server listens: endpoint, buckets, keys,
/// latency, and the command that uses it.
pub fn banner(server: &shuffle_s3::EmbeddedS3, args: &S3ServerArgs) -> String {
    let buckets = server.buckets();
    let buckets = if buckets.is_empty() {
        server.bucket.clone()
    } else {
        buckets.join(", ")
    };
    let faults = match args.fault_rate {
        Some(r) if r > 0.0 => format!(", failing {:.0}% of requests", r * 100.0),
        _ => String::new(),
    };
    format!(
        "shovel s3-server: serving {endpoint} over {dir} (buckets: {buckets}; access key {ak}, \
         secret key {sk}, region {region}; latency {latency:?}{faults}); use it with: \
         SHOVEL_S3_ACCESS_KEY_ID={ak} SHOVEL_S3_SECRET_ACCESS_KEY={sk} SHOVEL_S3_REGION={region} \
         shovel q80 --shuffle s3 --s3-endpoint {endpoint} --s3-bucket s3://{bucket}/shovel",
        endpoint = server.endpoint,
        dir = server.root().display(),
        ak = server.access_key,
        sk = server.secret_key,
        region = server.region,
        latency = args.latency,
        bucket = server.bucket,
    )
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: &S3ServerArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the tokio runtime: {e}")))?;
    let result = rt.block_on(serve_until_stopped(args));
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn serve_until_stopped(args: &S3ServerArgs) -> Result<(), CliError> {
    // Handlers first: a signal right after the banner must stop us cleanly.
    let stop = stop_signal()?;
    let server = shuffle_s3::embedded::serve(&args.dir, args.bind, args.latency)
        .await
        .map_err(|e| {
            CliError::runtime(format!(
                "s3-server --dir {} --bind {}: {}",
                args.dir.display(),
                args.bind,
                super::args::one_line(&e.to_string())
            ))
        })?;
    if let Some(rate) = args.fault_rate {
        server.set_faults(shuffle_s3::FaultConfig::mixed(rate, FAULT_SEED));
    }
    println!("{}", banner(&server, args));
    let sig = stop.await;
    let requests = server.stats().total();
    drop(server);
    eprintln!(
        "shovel s3-server: {sig}: stopped after {requests} requests; objects stay in {}",
        args.dir.display()
    );
    Ok(())
}

/// A future that completes with the name of the first Ctrl-C or SIGTERM.
pub(super) fn stop_signal() -> Result<impl std::future::Future<Output = &'static str>, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let err = |e: std::io::Error| CliError::runtime(format!("installing signal handlers: {e}"));
        let mut int = signal(SignalKind::interrupt()).map_err(err)?;
        let mut term = signal(SignalKind::terminate()).map_err(err)?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => "Ctrl-C (SIGINT)",
                _ = term.recv() => "SIGTERM",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}
