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
//!
//! [`S3ServerProcess`] is the other side: `shovel q80 --engine ballista
//! --shuffle s3` without an endpoint starts this command as a child process
//! (the driver and every executor then talk to it over HTTP, as they would
//! to a remote store), reads the endpoint and keys back from the banner
//! ([`ServerAddress::from_banner`]) and stops it when the run ends; the
//! server also stops by itself if the run's process dies
//! ([`super::orphan`]).

use std::io::{BufRead, BufReader, Read, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
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

/// Runs the server until Ctrl-C or SIGTERM. The server brings its own
/// runtime; this one only waits for the signal.
pub fn run(args: &S3ServerArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
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

/// Where a `shovel s3-server` listens and how to sign in, as its banner
/// prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub endpoint: String,
    /// `s3://bucket/prefix` of the printed command.
    pub bucket_uri: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl ServerAddress {
    /// Reads the banner's pasteable part (`use it with: KEY=VALUE ...
    /// shovel q80 ... --s3-endpoint E --s3-bucket B`); `None` if a piece is
    /// missing.
    pub fn from_banner(line: &str) -> Option<Self> {
        let usage = line.split("use it with: ").nth(1)?;
        let words: Vec<&str> = usage.split_whitespace().collect();
        let env = |key: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        let flag = |name: &str| {
            let i = words.iter().position(|w| *w == name)?;
            words.get(i + 1).map(|v| v.to_string())
        };
        Some(Self {
            endpoint: flag("--s3-endpoint")?,
            bucket_uri: flag("--s3-bucket")?,
            access_key: env("SHOVEL_S3_ACCESS_KEY_ID")?,
            secret_key: env("SHOVEL_S3_SECRET_ACCESS_KEY")?,
            region: env("SHOVEL_S3_REGION")?,
        })
    }

    /// The shuffle keys that point a manager at this server.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        shuffle_s3::server_config_pairs(
            self.bucket_uri.clone(),
            &self.endpoint,
            &self.region,
            &self.access_key,
            &self.secret_key,
        )
    }
}

/// How long a starting server may take to print its banner.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `shovel s3-server` child process serving `dir` on 127.0.0.1 (a free
/// port). Dropping it stops the server: SIGTERM, then SIGKILL after 5 s.
pub struct S3ServerProcess {
    child: Child,
    pub address: ServerAddress,
    /// Kept open: the server must not get EPIPE writing to stdout.
    _stdout: BufReader<ChildStdout>,
}

impl std::fmt::Debug for S3ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ServerProcess")
            .field("pid", &self.child.id())
            .field("address", &self.address)
            .finish()
    }
}

impl S3ServerProcess {
    /// Starts `exe s3-server` over `dir` and waits for its banner. Blocks:
    /// call it from a blocking context.
    pub fn start(
        exe: &Path,
        dir: &Path,
        latency: Duration,
        fault_rate: Option<f64>,
    ) -> Result<Self, CliError> {
        let what = format!("starting `{} s3-server`", exe.display());
        let mut log = tempfile::tempfile()
            .map_err(|e| CliError::runtime(format!("{what}: cannot create its log: {e}")))?;
        let stderr = log
            .try_clone()
            .map_err(|e| CliError::runtime(format!("{what}: cannot open its log: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.args(["s3-server", "--bind", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(["--latency", &format!("{}ms", latency.as_millis())]);
        if let Some(r) = fault_rate {
            cmd.args(["--fault-rate", &r.to_string()]);
        }
        let mut child = cmd
            .env(
                super::orphan::PARENT_PID_ENV,
                std::process::id().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| CliError::runtime(format!("{what}: {e}")))?;
        let mut stdout = match child.stdout.take() {
            Some(s) => BufReader::new(s),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CliError::runtime(format!("{what}: no stdout")));
            }
        };
        // The banner comes once the server listens; EOF means it exited.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            let r = stdout.read_line(&mut line);
            let _ = tx.send(r.map(|_| line));
            stdout
        });
        let banner = rx.recv_timeout(START_TIMEOUT);
        let fail = |child: &mut Child, log: &mut std::fs::File, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            let mut text = String::new();
            let _ = log.rewind();
            let _ = log.read_to_string(&mut text);
            CliError::runtime(format!(
                "{what}: {why}{}",
                match text.trim() {
                    "" => String::new(),
                    t => format!("; it said: {}", super::args::one_line(t)),
                }
            ))
        };
        let line = match banner {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) => {
                return Err(fail(
                    &mut child,
                    &mut log,
                    "it exited before listening".into(),
                ))
            }
            Ok(Err(e)) => {
                return Err(fail(
                    &mut child,
                    &mut log,
                    format!("reading its banner: {e}"),
                ))
            }
            Err(_) => {
                return Err(fail(
                    &mut child,
                    &mut log,
                    format!("no banner within {START_TIMEOUT:?}"),
                ))
            }
        };
        let stdout = match reader.join() {
            Ok(s) => s,
            Err(_) => {
                return Err(fail(
                    &mut child,
                    &mut log,
                    "its banner reader panicked".into(),
                ))
            }
        };
        let Some(address) = ServerAddress::from_banner(&line) else {
            return Err(fail(
                &mut child,
                &mut log,
                format!("unexpected banner `{}`", line.trim()),
            ));
        };
        Ok(Self {
            child,
            address,
            _stdout: stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the server so far (its VmHWM).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        crate::events::proc::peak_rss_bytes_of(self.pid())
    }
}

impl Drop for S3ServerProcess {
    fn drop(&mut self) {
        super::orphan::terminate(&mut [&mut self.child], Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_is_read_back_into_the_address_it_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let args = S3ServerArgs {
            dir: dir.path().to_path_buf(),
            bind: "127.0.0.1:0".parse().expect("addr"),
            latency: Duration::from_millis(5),
            fault_rate: Some(0.1),
            allow_remote: false,
        };
        let server = rt
            .block_on(shuffle_s3::embedded::serve(
                &args.dir,
                args.bind,
                args.latency,
            ))
            .expect("serve");
        let a = ServerAddress::from_banner(&banner(&server, &args)).expect("parsed");
        let mut want = server.config_pairs("shovel");
        let mut got = a.config_pairs();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert!(ServerAddress::from_banner("shovel s3-server: serving").is_none());
    }
}
