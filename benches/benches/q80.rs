//! q80 benchmark: local disk vs S3 (embedded server), default plan vs
//! broadcast off, over S3 round-trip times, partition counts and engines
//! (Shovel's own, DataFusion + Shovel, plain DataFusion), in one run with
//! the configurations interleaved so machine noise hits all of them alike.
//!
//! ```text
//! cargo bench -p shovel-benches --bench q80 -- [--sf 1] [--runs 5] [--warmups 3] [--cache-dir DIR]
//!                                               [--rtt 0,5,20] [--partitions 8,200,1000]
//!                                               [--engines shovel,datafusion] [--codecs lz4,none]
//! SHOVEL_BENCH_SF=5 SHOVEL_BENCH_RUNS=5 SHOVEL_BENCH_WARMUPS=3 cargo bench -p shovel-benches --bench q80
//! ```
//!
//! `--engines` (default `shovel`; also `SHOVEL_BENCH_ENGINES`) picks the
//! engines: `shovel` is `shovel q80`, `datafusion` is `shovel q80 --engine
//! datafusion` (every hash repartition persisted through Shovel) and, as its
//! baseline, plain DataFusion on the same SQL and settings with its
//! in-memory repartitions (`engine::cli::df::plain_q80_context`). Issue 12's
//! comparison is `--engines shovel,datafusion --rtt 20`.
//!
//! `ballista` (cargo feature `ballista`) is `shovel q80 --engine ballista`:
//! a local cluster of 2 executor processes (2 task slots each) with every
//! stage through Shovel, on local disk and on S3 (a `shovel s3-server`
//! process with the same `--rtt`), and, as its baseline, Ballista's own
//! shuffle (work directories and Flight, `--ballista-shuffle`). Their time
//! is the query's on the running cluster (`BallistaSummary::query_ms`;
//! starting and stopping the processes is under setup+clean); peak RSS and
//! shuffle figures add up every process. The processes are the `shovel`
//! binary of the same build (`target/release/shovel`, or
//! `SHOVEL_BENCH_EXE`). Issue 13's comparison:
//!
//! ```text
//! cargo build --release -p engine -p shovel-benches --features engine/ballista --bins --benches
//! cargo bench -p shovel-benches --features ballista --bench q80 -- --engines shovel,ballista --sf 1
//! ```
//!
//! `--codecs` (default `lz4`; also `SHOVEL_BENCH_CODECS`) sets
//! `shuffle.codec` for every engine with a Shovel shuffle: `lz4,none`
//! runs each such configuration once per codec.
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

use engine::cli::report::{human_bytes, peak_rss_bytes, reset_peak_rss};
use engine::cli::{run_q80, Q80Job, Q80Outcome, QueryEngine};
use engine::{EngineConfig, ShuffleBackend};

struct Opts {
    sf: f64,
    runs: usize,
    warmups: usize,
    cache_dir: PathBuf,
    /// Added S3 round-trip times, in milliseconds.
    rtts: Vec<u64>,
    partitions: Vec<usize>,
    engines: Vec<Engine>,
    /// Shuffle frame codecs (`shuffle.codec`).
    codecs: Vec<String>,
}

/// Who runs q80.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// Shovel's own engine (`shovel q80`).
    Shovel,
    /// DataFusion with Shovel installed (`shovel q80 --engine datafusion`).
    DataFusion,
    /// DataFusion alone: in-memory repartitions, its own spill and pool.
    PlainDataFusion,
    /// Ballista with Shovel as every stage's shuffle (`--engine ballista`).
    Ballista,
    /// Ballista's own shuffle (`--engine ballista --ballista-shuffle`).
    BallistaOwn,
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::Shovel => "shovel",
            Engine::DataFusion => "df+shovel",
            Engine::PlainDataFusion => "df plain",
            Engine::Ballista => "ballista+shovel",
            Engine::BallistaOwn => "ballista own",
        }
    }

    /// Runs on local disk only (no S3 variant).
    fn local_only(self) -> bool {
        matches!(self, Engine::PlainDataFusion | Engine::BallistaOwn)
    }
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
    let mut codecs = env("SHOVEL_BENCH_CODECS").unwrap_or_else(|| "lz4".into());
    let mut engines = env("SHOVEL_BENCH_ENGINES").unwrap_or_else(|| "shovel".into());
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
            "--engines" => engines = val()?,
            "--codecs" => codecs = val()?,
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
    let named = parse_list("--engines", &engines, |v| match v {
        "shovel" => Ok(Engine::Shovel),
        "datafusion" => Ok(Engine::DataFusion),
        "ballista" if cfg!(feature = "ballista") => Ok(Engine::Ballista),
        "ballista" => Err(
            "--engines ballista needs the bench built with Ballista: cargo bench -p \
             shovel-benches --features ballista --bench q80 -- --engines ballista"
                .to_string(),
        ),
        _ => Err(format!(
            "--engines `{engines}`: `{v}` is not an engine; use shovel, datafusion, ballista"
        )),
    })?;
    let mut engines = named.clone();
    if named.contains(&Engine::DataFusion) {
        engines.push(Engine::PlainDataFusion);
    }
    if named.contains(&Engine::Ballista) {
        engines.push(Engine::BallistaOwn);
    }
    let codecs = parse_list("--codecs", &codecs, |v| match v {
        "lz4" | "none" => Ok(v.to_string()),
        _ => Err(format!(
            "--codecs `{codecs}`: `{v}` is not a shuffle codec; use lz4, none"
        )),
    })?;
    Ok(Opts {
        sf,
        runs,
        warmups,
        cache_dir,
        rtts,
        partitions,
        engines,
        codecs,
    })
}

#[derive(Clone, Debug)]
struct Config {
    name: String,
    engine: Engine,
    backend: ShuffleBackend,
    broadcast: bool,
    /// Added S3 round trip (S3 configurations only).
    rtt_ms: u64,
    partitions: usize,
    /// `shuffle.codec` (engines with a Shovel shuffle).
    codec: String,
}

/// Every configuration: per partition count, plan and engine, local disk
/// and S3 at each round-trip time (plain DataFusion: neither, once).
fn configs(opts: &Opts) -> Vec<Config> {
    let mut out = Vec::new();
    for &partitions in &opts.partitions {
        for broadcast in [true, false] {
            let plan = if broadcast {
                "default plan"
            } else {
                "broadcast off"
            };
            for &engine in &opts.engines {
                if engine.local_only() {
                    out.push(Config {
                        name: format!("{}, {plan}, {partitions} parts", engine.label()),
                        engine,
                        backend: ShuffleBackend::Local,
                        broadcast,
                        rtt_ms: 0,
                        partitions,
                        codec: "lz4".into(),
                    });
                    continue;
                }
                for codec in &opts.codecs {
                    // The codec is named only when it is not the default.
                    let e = match codec.as_str() {
                        "lz4" => engine.label().to_string(),
                        c => format!("{} {c}", engine.label()),
                    };
                    out.push(Config {
                        name: format!("{e} local, {plan}, {partitions} parts"),
                        engine,
                        backend: ShuffleBackend::Local,
                        broadcast,
                        rtt_ms: 0,
                        partitions,
                        codec: codec.clone(),
                    });
                    for &rtt_ms in &opts.rtts {
                        out.push(Config {
                            name: format!("{e} s3 {rtt_ms}ms, {plan}, {partitions} parts"),
                            engine,
                            backend: ShuffleBackend::S3,
                            broadcast,
                            rtt_ms,
                            partitions,
                            codec: codec.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// What one run left to print.
struct Run {
    csv: String,
    secs: f64,
    setup_cleanup_secs: f64,
    peak_rss: u64,
    shuffle_bytes: u64,
    shuffle_raw_bytes: u64,
    s3_requests: u64,
    s3_dollars: f64,
}

impl Run {
    fn of(out: Q80Outcome) -> Self {
        let r = &out.report;
        let t = &r.timings;
        if let Some(b) = &r.ballista {
            // Every process: the driver, the scheduler, the executors and
            // the S3 server.
            let executors_rss: u64 = b.executors.iter().map(|e| e.peak_rss_bytes).sum();
            let server_rss = b.s3_server.as_ref().map_or(0, |s| s.peak_rss_bytes);
            let secs = (t.plan_ms + b.query_ms) / 1e3;
            return Self {
                secs,
                setup_cleanup_secs: (t.setup_ms + t.cleanup_ms + t.execute_ms - b.query_ms) / 1e3,
                peak_rss: b.driver_peak_rss_bytes
                    + b.scheduler_peak_rss_bytes
                    + executors_rss
                    + server_rss,
                shuffle_bytes: b.executors.iter().map(|e| e.shuffle_bytes_written).sum(),
                shuffle_raw_bytes: 0,
                s3_requests: b.executors.iter().map(|e| e.store_requests).sum(),
                s3_dollars: 0.0,
                csv: out.csv,
            };
        }
        Self {
            secs: (t.plan_ms + t.execute_ms) / 1e3,
            setup_cleanup_secs: (t.setup_ms + t.cleanup_ms) / 1e3,
            peak_rss: r.peak_rss_bytes.unwrap_or(0),
            shuffle_bytes: r.metrics.shuffle.bytes_written,
            shuffle_raw_bytes: r.metrics.shuffle.raw_bytes_written,
            s3_requests: r.s3_requests(),
            s3_dollars: r.request_cost().dollars,
            csv: out.csv,
        }
    }
}

/// Plain DataFusion on q80's SQL with `config`'s settings: plan + execute.
async fn run_plain(config: &EngineConfig, data: &std::path::Path) -> Result<Run, String> {
    let t = Instant::now();
    let ctx = engine::cli::df::plain_q80_context(config, data)
        .await
        .map_err(|e| e.message)?;
    let plan = engine::cli::df::plan_q80(&ctx, engine::tpcds::Q80_DEFAULT_DATE)
        .await
        .map_err(|e| e.message)?;
    let rows = engine::cli::df::run_plan(&ctx, plan)
        .await
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Run {
        csv: engine::tpcds::q80_csv(&rows),
        secs,
        setup_cleanup_secs: 0.0,
        peak_rss: peak_rss_bytes().unwrap_or(0),
        shuffle_bytes: 0,
        shuffle_raw_bytes: 0,
        s3_requests: 0,
        s3_dollars: 0.0,
    })
}

#[derive(Default)]
struct Samples {
    secs: Vec<f64>,
    last: Option<Run>,
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
    // The `shovel` binary Ballista's processes run: the same build's.
    let shovel_exe = std::env::var_os("SHOVEL_BENCH_EXE")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.join("shovel"))
        })
        .unwrap_or_else(|| PathBuf::from("shovel"));
    if opts.engines.contains(&Engine::Ballista) && !shovel_exe.is_file() {
        eprintln!(
            "q80 bench: --engines ballista runs {} (not found); build it first: cargo build \
             --release -p engine -p shovel-benches --features engine/ballista --bins --benches, \
             or point SHOVEL_BENCH_EXE at a shovel built with --features ballista",
            shovel_exe.display()
        );
        std::process::exit(2);
    }
    println!(
        "q80 bench: SF{} from {} (ready in {:.1} s), {} configs (engines {:?}, S3 RTT {:?} ms, \
         partitions {:?}), {} warm-up + {} timed runs per config, interleaved",
        opts.sf,
        data.display(),
        t.elapsed().as_secs_f64(),
        configs.len(),
        opts.engines,
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
            let config = EngineConfig {
                backend: c.backend,
                broadcast_threshold: if c.broadcast {
                    EngineConfig::default().broadcast_threshold
                } else {
                    0
                },
                shuffle_partitions: c.partitions,
                ..EngineConfig::default()
            };
            reset_peak_rss();
            let run = match c.engine {
                Engine::PlainDataFusion => rt.block_on(run_plain(&config, &data)),
                _ => {
                    let ballista = matches!(c.engine, Engine::Ballista | Engine::BallistaOwn);
                    let job = Q80Job {
                        config: EngineConfig {
                            executors: if ballista { 2 } else { config.executors },
                            ..config
                        },
                        engine: match c.engine {
                            Engine::Shovel => QueryEngine::Shovel,
                            Engine::DataFusion => QueryEngine::DataFusion,
                            _ => QueryEngine::Ballista,
                        },
                        shuffle_pairs: vec![("shuffle.codec".into(), c.codec.clone())],
                        shovel_exe: ballista.then(|| shovel_exe.clone()),
                        ballista_native_shuffle: c.engine == Engine::BallistaOwn,
                        s3_latency: (c.backend == ShuffleBackend::S3)
                            .then(|| Duration::from_millis(c.rtt_ms)),
                        ..Q80Job::default()
                    };
                    rt.block_on(run_q80(&job, &data))
                        .map(Run::of)
                        .map_err(|f| f.error.to_string())
                }
            };
            let out = match run {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("q80 bench: {} failed: {e}", c.name);
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
            eprintln!(
                "  {} {:<44} {:.3} s",
                if timed { "run   " } else { "warmup" },
                c.name,
                out.secs
            );
            if timed {
                s.secs.push(out.secs);
                s.setup_cleanup_secs.push(out.setup_cleanup_secs);
                s.peak_rss = s.peak_rss.max(out.peak_rss);
            }
            s.last = Some(out);
        }
    }
    println!();
    println!(
        "{:<44} {:>9} {:>9} {:>11} {:>12} {:>12} {:>9} {:>10} {:>10}",
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
        println!(
            "{:<44} {:>7.3} s {:>7.3} s {:>9.3} s {:>12} {:>12} {:>9} {:>10} {:>10}",
            c.name,
            median(&s.secs),
            s.secs.iter().copied().fold(f64::INFINITY, f64::min),
            median(&s.setup_cleanup_secs),
            human_bytes(last.shuffle_bytes),
            human_bytes(last.shuffle_raw_bytes),
            last.s3_requests,
            format!("${:.4}", last.s3_dollars),
            human_bytes(s.peak_rss)
        );
    }
    println!();
    // Ratios: per engine, S3 at each RTT over local disk, per plan and
    // partition count; each partition count over the first, on local disk;
    // then every configuration over plain DataFusion's.
    let median_of = |pred: &dyn Fn(&Config) -> bool| {
        configs
            .iter()
            .zip(&samples)
            .find(|(c, _)| pred(c))
            .map(|(_, s)| median(&s.secs))
    };
    let plans = [("default plan", true), ("broadcast off", false)];
    for &engine in opts
        .engines
        .iter()
        .filter(|e| **e != Engine::PlainDataFusion)
    {
        for codec in &opts.codecs {
            let e = match codec.as_str() {
                "lz4" => engine.label().to_string(),
                c => format!("{} {c}", engine.label()),
            };
            for &partitions in &opts.partitions {
                for (plan, broadcast) in plans {
                    let same = |c: &Config| {
                        c.engine == engine
                            && c.codec == *codec
                            && c.partitions == partitions
                            && c.broadcast == broadcast
                    };
                    let Some(ml) = median_of(&|c| same(c) && c.backend == ShuffleBackend::Local)
                    else {
                        continue;
                    };
                    for &rtt in &opts.rtts {
                        let Some(ms) = median_of(&|c| {
                            same(c) && c.backend == ShuffleBackend::S3 && c.rtt_ms == rtt
                        }) else {
                            continue;
                        };
                        println!(
                            "{e}: S3 {rtt} ms / local ({plan}, {partitions} partitions): {:.2}x  \
                         ({ms:.3} s / {ml:.3} s)",
                            ms / ml
                        );
                    }
                }
            }
            if let Some(&first) = opts.partitions.first() {
                for &partitions in opts.partitions.iter().skip(1) {
                    for (plan, broadcast) in plans {
                        let local = |p: usize| {
                            median_of(&|c| {
                                c.engine == engine
                                    && c.codec == *codec
                                    && c.partitions == p
                                    && c.broadcast == broadcast
                                    && c.backend == ShuffleBackend::Local
                            })
                        };
                        if let (Some(a), Some(b)) = (local(first), local(partitions)) {
                            println!(
                                "{e}: {partitions} / {first} partitions (local, {plan}): {:.2}x  \
                             ({b:.3} s / {a:.3} s)",
                                b / a
                            );
                        }
                    }
                }
            }
        }
    }
    // Every configuration over a baseline engine's, same plan and partitions.
    let over = |baseline: Engine, label: &str, of: &dyn Fn(Engine) -> bool| {
        for (c, s) in configs.iter().zip(&samples) {
            if !of(c.engine) {
                continue;
            }
            let Some(base) = median_of(&|p| {
                p.engine == baseline && p.partitions == c.partitions && p.broadcast == c.broadcast
            }) else {
                continue;
            };
            let m = median(&s.secs);
            println!(
                "{} / {label}: {:.2}x  ({m:.3} s / {base:.3} s)",
                c.name,
                m / base
            );
        }
    };
    over(Engine::BallistaOwn, "Ballista's own shuffle", &|e| {
        e == Engine::Ballista || e == Engine::Shovel
    });
    over(Engine::PlainDataFusion, "plain DataFusion", &|e| {
        e != Engine::PlainDataFusion
    });
}
