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

use shuffle_core::gc::{collect_garbage, heartbeat_warning, parse_duration, GcOptions, GcReport};
use shuffle_core::{ShuffleConfig, ShuffleMetrics, ShuffleStore};

use super::CliError;

/// `shovel gc --help`.
pub const GC_USAGE: &str = "\
shovel gc: delete the shuffle and spill objects of jobs that were killed

Only Shovel's own objects are ever deleted:
    <app>/shuffle-N/map-M-A.data, <app>/shuffle-N/map-M.index, <app>/_shovel_job.json,
    spill/<app>/spill-*.bin, and their *.tmp-* temporary files
Any other file or object (user files, hidden files, symlinks) is left alone, however old.
A job goes whole, or not at all: it is kept while its job marker (refreshed by a
running job every job.heartbeat, 30s by default) or its newest object is younger
than --older-than.

USAGE:
    shovel gc --older-than DURATION TARGET [OPTIONS]

TARGET:
    s3://bucket[/prefix]     the S3 location jobs used (--s3-bucket); a comma-separated list works too
    DIR                      a local shuffle directory (--local-dir)

OPTIONS:
    --older-than DURATION    e.g. 90s, 30m, 24h, 7d (required; 0 removes every job, running ones too)
    --dry-run                print what would be removed; delete nothing
    --s3-endpoint URL        an S3-compatible store (MinIO, Garage, Ceph, R2)
    --conf s3.KEY=VALUE      any S3 key (region, credentials, path style, ...)
";

/// Parsed `shovel gc` arguments.
#[derive(Debug, Clone)]
pub struct GcArgs {
    pub target: String,
    pub older_than: Duration,
    /// Report only; delete nothing.
    pub dry_run: bool,
    pub endpoint: Option<String>,
    pub conf: Vec<(String, String)>,
}

/// Parses `shovel gc` arguments (without `gc`).
pub fn parse(args: &[String]) -> Result<Option<GcArgs>, CliError> {
    let mut target = None;
    let mut older_than = None;
    let mut endpoint = None;
    let mut dry_run = false;
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
            "--dry-run" if inline.is_none() => dry_run = true,
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
        dry_run,
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
    // Warn before anything is deleted.
    if let Some(w) = heartbeat_warning(args.older_than, ShuffleConfig::default().job_heartbeat) {
        eprintln!("{w}");
    }
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
