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

use shuffle_core::gc::{collect_garbage, GcReport};
use shuffle_core::{ShuffleMetrics, ShuffleStore};

use super::CliError;

/// Parsed `shovel gc` arguments (clap; `shovel gc --help` is generated
/// from these docs).
#[derive(Debug, Clone, clap::Args)]
pub struct GcArgs {
    /// s3://bucket[/prefix] jobs used (--s3-bucket; a comma-separated list works too), or a
    /// local shuffle directory (--local-dir)
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Remove only what is older than this, e.g. 90s, 30m, 24h, 7d (0 removes everything)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true,
          value_parser = super::args::with("--older-than", super::args::parse_duration_arg))]
    pub older_than: Duration,
    /// Print what would be removed and delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// An S3-compatible store (MinIO, Garage, Ceph, R2)
    #[arg(long = "s3-endpoint", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Any S3 key (region, credentials, path style, ...), repeatable
    #[arg(long, value_name = "s3.KEY=VALUE",
          value_parser = super::args::with("--conf", super::args::parse_conf_pair))]
    pub conf: Vec<(String, String)>,
}

/// Runs `shovel gc`.
pub fn run(args: &GcArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(collect(args))?;
    print_report(args, &report);
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
