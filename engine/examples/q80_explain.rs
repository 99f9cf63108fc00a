//! Prints q80's plan and times three runs:
//! `cargo run --release -p engine --example q80_explain -- <data dir | sf=N> [key=value ...]`
//! (`sf=N` generates or reuses `target/tpcds-cache/sf<N>`).
use std::sync::Arc;

use engine::queries::q80::{q80, Q80Options};
use engine::{EngineConfig, Session};
use shuffle_core::{ShuffleConfig, ShuffleManager};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args
        .first()
        .ok_or("usage: q80_explain <data dir> [key=value ...]")?;
    let mut config = EngineConfig::default();
    for kv in &args[1..] {
        let (k, v) = kv.split_once('=').ok_or("expected key=value")?;
        config.set(k, v)?;
    }
    let dir = tempfile::tempdir()?;
    let shuffle = ShuffleConfig::from_pairs([
        ("local.dirs", dir.path().display().to_string()),
        ("memory.limit", config.memory_budget.to_string()),
    ])?;
    let manager = shuffle_local::local_manager(shuffle)?;
    let session = Session::new(config, Arc::new(manager) as Arc<dyn ShuffleManager>);
    let data = match data.strip_prefix("sf=") {
        Some(sf) => {
            let t = std::time::Instant::now();
            let dir = engine::tpcds::ensure_data(
                sf.parse()?,
                std::path::Path::new("target/tpcds-cache"),
            )?;
            println!("data ready in {:?}", t.elapsed());
            dir
        }
        None => std::path::PathBuf::from(data),
    };
    let df = q80(&session, &data, &Q80Options::default())?;
    println!("{}", df.explain()?);
    for i in 0..3 {
        let t = std::time::Instant::now();
        let (batches, summary) = df.collect_with_summary().await?;
        println!(
            "run {i}: {} rows in {:?} (stages {}, tasks {}, shuffle {} B)",
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            t.elapsed(),
            summary.num_stages,
            summary.tasks_run,
            summary.shuffle_bytes_written
        );
        if i == 2 {
            for s in &summary.stages {
                println!(
                    "  stage {:2} {:8.1} ms rows_in {:9} rows_out {:9} {} | {}",
                    s.stage_id, s.elapsed_ms, s.rows_in, s.rows_out, s.output, s.description
                );
            }
        }
    }
    Ok(())
}
