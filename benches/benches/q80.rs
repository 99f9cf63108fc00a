//! q80 benchmark: local disk vs S3 (embedded server), default plan vs
//! broadcast off, over S3 round-trip times and partition counts, in one run
//! with the configurations interleaved so machine noise hits all of them
//! alike.
//!
//! ```text
//! cargo bench -p shovel-benches --bench q80 -- [--sf 1] [--runs 5] [--warmups 3] [--cache-dir DIR]
//!                                               [--rtt 0,5,20] [--partitions 8,200,1000]
//! SHOVEL_BENCH_SF=5 SHOVEL_BENCH_RUNS=5 SHOVEL_BENCH_WARMUPS=3 cargo bench -p shovel-benches --bench q80
//! ```
//!
//! `--rtt` (milliseconds, default `0`) is the latency the embedded S3
//! server adds before answering each request (`shovel q80 --s3-latency`),
//! modelling the round trip to a remote store; every S3 configuration runs
//! once per value. `--partitions` (default `8`) sets the partitions of every
//! hash shuffle; every configuration, local ones included, runs once per
//! value. Both take comma-separated lists (also `SHOVEL_BENCH_RTT`,
//! `SHOVEL_BENCH_PARTITIONS`). Issue 11's grid is `--rtt 0,5,20
//! --partitions 8,200,1000`; mind that 1,000 partitions take minutes per
//! run even at SF 0.01 today.
//!
//! Each timed run is one `engine::cli::run_q80` (what `shovel q80` runs);
//! the time is plan + execute (backend setup and cleanup excluded, and
//! reported apart). Every run's CSV must equal the first run's. Peak RSS is
//! reset before each run (`/proc/self/clear_refs`), so it is per run.

// `run_q80`'s future is deep; laying it out in this crate needs more than
// the default 128 query levels.
#![recursion_limit = "256"]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine::cli::report::{human_bytes, reset_peak_rss};
use engine::cli::{run_q80, Q80Job, Q80Outcome};
use engine::{EngineConfig, ShuffleBackend};

struct Opts {
    sf: f64,
    runs: usize,
    warmups: usize,
    cache_dir: PathBuf,
    /// Added S3 round-trip times, in milliseconds.
    rtts: Vec<u64>,
    partitions: Vec<usize>,
}

/// `0,5,20`: a non-empty list, each value parsed by `parse`, no repeats.
fn parse_list<T: PartialEq>(
    flag: &str,
    v: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim) {
        let x = parse(item)?;
        if out.contains(&x) {
            return Err(format!("{flag} `{v}`: `{item}` is given twice"));
        }
        out.push(x);
    }
    Ok(out)
}

fn parse() -> Result<Opts, String> {
    let env = |k: &str| std::env::var(k).ok();
    let mut sf = env("SHOVEL_BENCH_SF").unwrap_or_else(|| "1".into());
    let mut runs = env("SHOVEL_BENCH_RUNS").unwrap_or_else(|| "5".into());
    let mut warmups = env("SHOVEL_BENCH_WARMUPS").unwrap_or_else(|| "3".into());
    let mut rtt = env("SHOVEL_BENCH_RTT").unwrap_or_else(|| "0".into());
    let mut partitions = env("SHOVEL_BENCH_PARTITIONS").unwrap_or_else(|| "8".into());
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
            "--rtt" => rtt = val()?,
            "--partitions" => partitions = val()?,
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
    let rtts = parse_list("--rtt", &rtt, |v| {
        v.trim_end_matches("ms").parse::<u64>().map_err(|_| {
            format!("--rtt `{rtt}`: `{v}` is not a whole number of milliseconds, like 0,5,20")
        })
    })?;
    let partitions = parse_list("--partitions", &partitions, |v| {
        engine::cli::args::parse_count("--partitions", v).map_err(|e| e.message)
    })?;
    Ok(Opts {
        sf,
        runs,
        warmups,
        cache_dir,
        rtts,
        partitions,
    })
}

#[derive(Clone, Debug)]
struct Config {
    name: String,
    backend: ShuffleBackend,
    broadcast: bool,
    /// Added S3 round trip (S3 configurations only).
    rtt_ms: u64,
    partitions: usize,
}

/// Every configuration: per partition count and plan, local disk and S3 at
/// each round-trip time.
fn configs(opts: &Opts) -> Vec<Config> {
    let mut out = Vec::new();
    for &partitions in &opts.partitions {
        for broadcast in [true, false] {
            let plan = if broadcast {
                "default plan"
            } else {
                "broadcast off"
            };
            out.push(Config {
                name: format!("local, {plan}, {partitions} parts"),
                backend: ShuffleBackend::Local,
                broadcast,
                rtt_ms: 0,
                partitions,
            });
            for &rtt_ms in &opts.rtts {
                out.push(Config {
                    name: format!("s3 {rtt_ms}ms, {plan}, {partitions} parts"),
                    backend: ShuffleBackend::S3,
                    broadcast,
                    rtt_ms,
                    partitions,
                });
            }
        }
    }
    out
}

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
    let configs = configs(&opts);
    println!(
        "q80 bench: SF{} from {} (ready in {:.1} s), {} configs (S3 RTT {:?} ms, partitions {:?}), \
         {} warm-up + {} timed runs per config, interleaved",
        opts.sf,
        data.display(),
        t.elapsed().as_secs_f64(),
        configs.len(),
        opts.rtts,
        opts.partitions,
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
    let mut samples: Vec<Samples> = configs.iter().map(|_| Samples::default()).collect();
    let mut reference: Option<String> = None;
    for round in 0..opts.warmups + opts.runs {
        let timed = round >= opts.warmups;
        for (c, s) in configs.iter().zip(samples.iter_mut()) {
            let job = Q80Job {
                config: EngineConfig {
                    backend: c.backend,
                    broadcast_threshold: if c.broadcast {
                        EngineConfig::default().broadcast_threshold
                    } else {
                        0
                    },
                    shuffle_partitions: c.partitions,
                    ..EngineConfig::default()
                },
                s3_latency: (c.backend == ShuffleBackend::S3)
                    .then(|| Duration::from_millis(c.rtt_ms)),
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
                "  {} {:<36} {:.3} s",
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
        "{:<36} {:>9} {:>9} {:>11} {:>12} {:>12} {:>9} {:>10} {:>10}",
        "config",
        "median",
        "min",
        "setup+clean",
        "shuffle",
        "shuffle raw",
        "s3 reqs",
        "s3 cost",
        "peak RSS"
    );
    for (c, s) in configs.iter().zip(&samples) {
        let Some(last) = &s.last else { continue };
        let r = &last.report;
        println!(
            "{:<36} {:>7.3} s {:>7.3} s {:>9.3} s {:>12} {:>12} {:>9} {:>10} {:>10}",
            c.name,
            median(&s.secs),
            s.secs.iter().copied().fold(f64::INFINITY, f64::min),
            median(&s.setup_cleanup_secs),
            human_bytes(r.metrics.shuffle.bytes_written),
            human_bytes(r.metrics.shuffle.raw_bytes_written),
            r.s3_requests(),
            format!("${:.4}", r.request_cost().dollars),
            human_bytes(s.peak_rss)
        );
    }
    println!();
    // Ratios: S3 at each RTT over local disk, per plan and partition count;
    // then each partition count over the first, on local disk.
    let median_of = |pred: &dyn Fn(&Config) -> bool| {
        configs
            .iter()
            .zip(&samples)
            .find(|(c, _)| pred(c))
            .map(|(_, s)| median(&s.secs))
    };
    for &partitions in &opts.partitions {
        for (plan, broadcast) in [("default plan", true), ("broadcast off", false)] {
            let same = |c: &Config| c.partitions == partitions && c.broadcast == broadcast;
            let Some(ml) = median_of(&|c| same(c) && c.backend == ShuffleBackend::Local) else {
                continue;
            };
            for &rtt in &opts.rtts {
                let Some(ms) =
                    median_of(&|c| same(c) && c.backend == ShuffleBackend::S3 && c.rtt_ms == rtt)
                else {
                    continue;
                };
                println!(
                    "S3 {rtt} ms / local ({plan}, {partitions} partitions): {:.2}x  ({ms:.3} s / {ml:.3} s)",
                    ms / ml
                );
            }
        }
    }
    if let Some(&first) = opts.partitions.first() {
        for &partitions in opts.partitions.iter().skip(1) {
            for (plan, broadcast) in [("default plan", true), ("broadcast off", false)] {
                let local = |p: usize| {
                    median_of(&|c| {
                        c.partitions == p
                            && c.broadcast == broadcast
                            && c.backend == ShuffleBackend::Local
                    })
                };
                if let (Some(a), Some(b)) = (local(first), local(partitions)) {
                    println!(
                        "{partitions} / {first} partitions (local, {plan}): {:.2}x  ({b:.3} s / {a:.3} s)",
                        b / a
                    );
                }
            }
        }
    }
}
