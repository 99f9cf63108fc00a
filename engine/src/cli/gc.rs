//! `shovel gc`: remove what killed jobs left behind.
//!
//! ```text
//! shovel gc --older-than 24h [--dry-run] s3://bucket/prefix [--s3-endpoint URL] [--conf s3.key=value ...]
//! shovel gc --older-than 24h [--dry-run] /local/shuffle/dir
//! ```
//!
//! Jobs delete their own shuffle and spill objects when they end, failed or
//! not; a killed job cannot. `gc` lists the target (all buckets and hash
//! prefixes) and deletes only objects that fit Shovel's key grammar, job by
//! job: a job goes whole when its marker and its newest object are older than
//! `--older-than`, and is kept otherwise. Everything else is left alone,
//! however old. See `shuffle_core::gc` for the exact rules.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shuffle_core::gc::{collect_garbage, heartbeat_warning, GcOptions, GcReport};
use shuffle_core::{ShuffleConfig, ShuffleMetrics, ShuffleStore};

use super::CliError;

/// `shovel gc --help`'s description: what gc can and cannot delete.
pub const GC_ABOUT: &str = "\
Delete the shuffle and spill objects of jobs that were killed.

Only Shovel's own objects are ever deleted:
    <app>/shuffle-N_map-M.data, <app>/shuffle-N_map-M-A.data, <app>/_shovel_job.json,
    spill/<app>/spill-*.bin, their *.tmp-* temporary files, and the
    <app>/shuffle-N/map-M.{data,index} objects of older Shovel versions
Any other file or object (user files, hidden files, symlinks) is left alone, however old.
A job goes whole, or not at all: it is kept while its job marker (refreshed by a
running job every job.heartbeat, 30s by default) or its newest object is younger
than --older-than. Empty directories Shovel created go with the job.";

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
    // Warn before anything is deleted.
    if let Some(w) = heartbeat_warning(args.older_than, ShuffleConfig::default().job_heartbeat) {
        eprintln!("{w}");
    }
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
    let options = GcOptions {
        older_than: args.older_than,
        dry_run: args.dry_run,
    };
    collect_garbage(&*store, "", &options)
        .await
        .map_err(|e| CliError::runtime(e.to_string()))
}

fn print_report(args: &GcArgs, r: &GcReport) {
    // Jobs may run with a longer heartbeat than the default warned about.
    let default = ShuffleConfig::default().job_heartbeat;
    if let Some(hb) = r.max_heartbeat().filter(|hb| *hb > default) {
        if let Some(w) = heartbeat_warning(args.older_than, hb) {
            eprintln!("{w}");
        }
    }
    let (n, bytes) = r.removed();
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!(
        "gc {}{}: {verb} {n} objects ({bytes} bytes) of {} job(s) older than {}s",
        args.target,
        if r.dry_run {
            " (dry run: nothing deleted)"
        } else {
            ""
        },
        r.jobs.iter().filter(|j| j.state.removes()).count(),
        args.older_than.as_secs(),
    );
    for j in &r.jobs {
        let who = match &j.marker {
            Some(m) => format!(", pid {} on {}", m.pid, m.host),
            None => String::new(),
        };
        println!(
            "  {}: {}, {} objects, {} bytes{who}",
            j.app_id, j.state, j.objects, j.bytes
        );
    }
    let (kept, kept_bytes) = r.kept();
    println!("kept {kept} objects ({kept_bytes} bytes) of live or recent jobs");
    if r.dirs_removed > 0 {
        println!("removed {} empty Shovel directories", r.dirs_removed);
    }
    println!(
        "left alone {} unrecognised objects ({} bytes): not written by Shovel",
        r.unrecognised_objects, r.unrecognised_bytes
    );
}
