//! `shovel gc`: remove what killed jobs left behind.
//!
//! ```text
//! shovel gc --older-than 24h s3://bucket/prefix [--s3-endpoint URL] [--conf s3.key=value ...]
//! shovel gc --older-than 24h /local/shuffle/dir
//! ```
//!
//! Jobs delete their own shuffle and spill objects when they end, failed or
//! not; a killed job cannot. `gc` lists every object under the target (all
//! buckets and hash prefixes), deletes those last modified more than
//! `--older-than` ago, and reports what it removed per app id.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shuffle_core::gc::{collect_garbage, parse_duration, GcReport};
use shuffle_core::{ShuffleMetrics, ShuffleStore};

use super::CliError;

/// `shovel gc --help`.
pub const GC_USAGE: &str = "\
shovel gc: delete shuffle and spill objects older than a cutoff (left by killed jobs)

USAGE:
    shovel gc --older-than DURATION TARGET [OPTIONS]

TARGET:
    s3://bucket[/prefix]     the S3 location jobs used (--s3-bucket); a comma-separated list works too
    DIR                      a local shuffle directory (--local-dir)

OPTIONS:
    --older-than DURATION    e.g. 90s, 30m, 24h, 7d (required; 0 removes everything)
    --s3-endpoint URL        an S3-compatible store (MinIO, Garage, Ceph, R2)
    --conf s3.KEY=VALUE      any S3 key (region, credentials, path style, ...)
";

/// Parsed `shovel gc` arguments.
#[derive(Debug, Clone)]
pub struct GcArgs {
    pub target: String,
    pub older_than: Duration,
    pub endpoint: Option<String>,
    pub conf: Vec<(String, String)>,
}

/// Parses `shovel gc` arguments (without `gc`).
pub fn parse(args: &[String]) -> Result<Option<GcArgs>, CliError> {
    let mut target = None;
    let mut older_than = None;
    let mut endpoint = None;
    let mut conf = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |flag: &str| -> Result<String, CliError> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(CliError::usage(format!(
                    "{flag} needs a value; see `shovel gc --help`"
                ))),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--older-than" => {
                let v = value(flag)?;
                older_than = Some(
                    parse_duration("--older-than", &v)
                        .map_err(|e| CliError::usage(e.to_string()))?,
                );
            }
            "--s3-endpoint" => endpoint = Some(value(flag)?),
            "--conf" => {
                let v = value(flag)?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| CliError::usage(format!("--conf `{v}`: expected KEY=VALUE")))?;
                conf.push((k.trim().to_string(), val.trim().to_string()));
            }
            f if f.starts_with('-') => {
                return Err(CliError::usage(format!(
                    "unknown option `{f}` for `shovel gc`; run `shovel gc --help` for the list"
                )))
            }
            t => {
                if target.replace(t.to_string()).is_some() {
                    return Err(CliError::usage(
                        "shovel gc takes one TARGET (s3://bucket/prefix or a directory)",
                    ));
                }
            }
        }
    }
    let older_than = older_than
        .ok_or_else(|| CliError::usage("shovel gc needs --older-than DURATION (e.g. 24h)"))?;
    let target = target.ok_or_else(|| {
        CliError::usage("shovel gc needs a TARGET: s3://bucket/prefix or a directory")
    })?;
    Ok(Some(GcArgs {
        target,
        older_than,
        endpoint,
        conf,
    }))
}

/// Runs `shovel gc`.
pub fn run(args: &[String]) -> Result<(), CliError> {
    let Some(args) = parse(args)? else {
        print!("{GC_USAGE}");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(collect(&args))?;
    print_report(&args, &report);
    Ok(())
}

async fn collect(args: &GcArgs) -> Result<GcReport, CliError> {
    let store: Arc<dyn ShuffleStore> = if args.target.starts_with("s3://") {
        let mut b = shuffle_s3::S3Config::builder()
            .bucket(&args.target)
            .map_err(|e| CliError::usage(e.to_string()))?;
        if let Some(ep) = &args.endpoint {
            b = b.endpoint(ep.clone()).force_path_style(true);
        }
        b.apply_env(shuffle_s3::config::env_vars())
            .map_err(|e| CliError::usage(e.to_string()))?;
        b.apply_pairs(args.conf.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| CliError::usage(e.to_string()))?;
        let config = b.build().map_err(|e| CliError::usage(e.to_string()))?;
        let store = shuffle_s3::S3Store::new(config, Arc::new(ShuffleMetrics::default()))
            .await
            .map_err(|e| CliError::runtime(e.to_string()))?;
        Arc::new(store)
    } else if args.target.contains("://") {
        return Err(CliError::usage(format!(
            "gc target `{}` is not s3://bucket/prefix or a directory",
            args.target
        )));
    } else {
        let dir = PathBuf::from(&args.target);
        if !dir.is_dir() {
            return Err(CliError::usage(format!(
                "gc target {} is not a directory",
                dir.display()
            )));
        }
        Arc::new(
            shuffle_local::LocalStore::new(&[dir], None)
                .map_err(|e| CliError::usage(e.to_string()))?,
        )
    };
    collect_garbage(&*store, "", args.older_than)
        .await
        .map_err(|e| CliError::runtime(e.to_string()))
}

fn print_report(args: &GcArgs, r: &GcReport) {
    println!(
        "gc {}: removed {} objects ({} bytes) older than {}s; kept {} newer",
        args.target,
        r.objects,
        r.bytes,
        args.older_than.as_secs(),
        r.kept
    );
    for (app, (n, bytes)) in &r.by_app {
        println!("  {app}: {n} objects, {bytes} bytes");
    }
}
