//! q80 benchmark: local disk vs S3 (embedded server), default plan vs
//! broadcast off, in one run with the configurations interleaved so machine
//! noise hits all of them alike.
//!
//! ```text
//! cargo bench -p shovel-benches --bench q80 -- [--sf 1] [--runs 5] [--warmups 3] [--cache-dir DIR]
//! SHOVEL_BENCH_SF=5 SHOVEL_BENCH_RUNS=5 SHOVEL_BENCH_WARMUPS=3 cargo bench -p shovel-benches --bench q80
//! ```
//!
//! Each timed run is one `engine::cli::run_q80` (what `shovel q80` runs);
//! the time is plan + execute (backend setup and cleanup excluded, and
//! reported apart). Every run's CSV must equal the first run's. Peak RSS is
//! reset before each run (`/proc/self/clear_refs`), so it is per run.

use std::path::PathBuf;
use std::time::Instant;

use engine::cli::report::{human_bytes, reset_peak_rss};
use engine::cli::{run_q80, Q80Job, Q80Outcome};
use engine::{EngineConfig, ShuffleBackend};

struct Opts {
    sf: f64,
    runs: usize,
    warmups: usize,
    cache_dir: PathBuf,
}

fn parse() -> Result<Opts, String> {
    let env = |k: &str| std::env::var(k).ok();
    let mut sf = env("SHOVEL_BENCH_SF").unwrap_or_else(|| "1".into());
    let mut runs = env("SHOVEL_BENCH_RUNS").unwrap_or_else(|| "5".into());
    let mut warmups = env("SHOVEL_BENCH_WARMUPS").unwrap_or_else(|| "3".into());
    let mut cache_dir = env("SHOVEL_BENCH_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(engine::cli::data::default_cache_dir);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut val = || {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a {
            "--sf" => sf = val()?,
            "--runs" => runs = val()?,
            "--warmups" => warmups = val()?,
            "--cache-dir" => cache_dir = PathBuf::from(val()?),
            // `cargo bench` passes `--bench`; filters are not used here.
            "--bench" => {}
            other if !other.starts_with('-') => {}
            other => return Err(format!("unknown option {other}")),
        }
        i += 1;
    }
    let sf = engine::cli::args::parse_sf("--sf", &sf).map_err(|e| e.message)?;
    let runs = engine::cli::args::parse_count("--runs", &runs).map_err(|e| e.message)?;
    let warmups: usize = warmups
        .parse()
        .map_err(|_| format!("--warmups `{warmups}`: expected a whole number"))?;
    Ok(Opts {
        sf,
        runs,
        warmups,
        cache_dir,
    })
}

#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    backend: ShuffleBackend,
    broadcast: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        name: "local, default plan",
        backend: ShuffleBackend::Local,
        broadcast: true,
    },
    Config {
        name: "s3,    default plan",
        backend: ShuffleBackend::S3,
        broadcast: true,
    },
    Config {
        name: "local, broadcast off",
        backend: ShuffleBackend::Local,
        broadcast: false,
    },
    Config {
        name: "s3,    broadcast off",
        backend: ShuffleBackend::S3,
        broadcast: false,
    },
];

#[derive(Default)]
struct Samples {
    secs: Vec<f64>,
    last: Option<Q80Outcome>,
    peak_rss: u64,
    setup_cleanup_secs: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("q80 bench: {e}");
            std::process::exit(2);
        }
    };
    let t = Instant::now();
    let data = match engine::cli::data::ensure_cached(opts.sf, &opts.cache_dir, false, true) {
        Ok((d, _)) => d,
        Err(e) => {
            eprintln!("q80 bench: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "q80 bench: SF{} from {} (ready in {:.1} s), {} warm-up + {} timed runs per config, interleaved",
        opts.sf,
        data.display(),
        t.elapsed().as_secs_f64(),
        opts.warmups,
        opts.runs
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("q80 bench: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let mut samples: Vec<Samples> = CONFIGS.iter().map(|_| Samples::default()).collect();
    let mut reference: Option<String> = None;
    for round in 0..opts.warmups + opts.runs {
        let timed = round >= opts.warmups;
        for (c, s) in CONFIGS.iter().zip(samples.iter_mut()) {
            let job = Q80Job {
                config: EngineConfig {
                    backend: c.backend,
                    broadcast_threshold: if c.broadcast {
                        EngineConfig::default().broadcast_threshold
                    } else {
                        0
                    },
                    ..EngineConfig::default()
                },
                ..Q80Job::default()
            };
            reset_peak_rss();
            let out = match rt.block_on(run_q80(&job, &data)) {
                Ok(o) => o,
                Err(f) => {
                    eprintln!("q80 bench: {} failed: {}", c.name, f.error);
                    std::process::exit(1);
                }
            };
            match &reference {
                None => reference = Some(out.csv.clone()),
                Some(r) if *r != out.csv => {
                    eprintln!("q80 bench: {} gave a different answer", c.name);
                    std::process::exit(1);
                }
                Some(_) => {}
            }
            let t = &out.report.timings;
            let secs = (t.plan_ms + t.execute_ms) / 1e3;
            eprintln!(
                "  {} {:<22} {:.3} s",
                if timed { "run   " } else { "warmup" },
                c.name,
                secs
            );
            if timed {
                s.secs.push(secs);
                s.setup_cleanup_secs.push((t.setup_ms + t.cleanup_ms) / 1e3);
                s.peak_rss = s.peak_rss.max(out.report.peak_rss_bytes.unwrap_or(0));
            }
            s.last = Some(out);
        }
    }
    println!();
    println!(
        "{:<22} {:>9} {:>9} {:>11} {:>12} {:>12} {:>9} {:>10}",
        "config", "median", "min", "setup+clean", "shuffle", "shuffle raw", "s3 reqs", "peak RSS"
    );
    for (c, s) in CONFIGS.iter().zip(&samples) {
        let Some(last) = &s.last else { continue };
        let r = &last.report;
        println!(
            "{:<22} {:>7.3} s {:>7.3} s {:>9.3} s {:>12} {:>12} {:>9} {:>10}",
            c.name,
            median(&s.secs),
            s.secs.iter().copied().fold(f64::INFINITY, f64::min),
            median(&s.setup_cleanup_secs),
            human_bytes(r.metrics.shuffle.bytes_written),
            human_bytes(r.metrics.shuffle.raw_bytes_written),
            r.s3_requests(),
            human_bytes(s.peak_rss)
        );
    }
    println!();
    for (plan, (l, s)) in [("default plan", (0, 1)), ("broadcast off", (2, 3))] {
        let (ml, ms) = (median(&samples[l].secs), median(&samples[s].secs));
        println!(
            "S3/local ({plan}): {:.2}x  ({ms:.3} s / {ml:.3} s)",
            ms / ml
        );
    }
}
