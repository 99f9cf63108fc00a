//! Engine join and aggregate throughput (input rows per second), with and
//! without spilling, on the local shuffle backend.
//!
//! - `join/{memory,spill}`: a 400k-row fact table inner-joined with a 50k-row
//!   dimension on an Int64 key; broadcast is off, so both sides shuffle.
//! - `aggregate/{memory,spill}`: the fact table grouped by the same key
//!   (50k groups) with sum and count: partial aggregate, shuffle, final.
//!
//! `memory` has a 1 GiB budget; `spill` has 2 MiB, so the join build side,
//! the final aggregate and the shuffle buffers spill to local disk. The
//! spill/memory ratio is the cost of running out of memory.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::session::build_shuffle_manager;
use engine::{col, count_star, sum, EngineConfig, JoinType, Session};

const FACT_ROWS: usize = 400_000;
const DIM_ROWS: usize = 50_000;
const BATCH: usize = 8192;

fn table(
    rows: usize,
    keys: usize,
    seed: u64,
    key: &str,
    value: &str,
) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new(key, DataType::Int64, false),
        Field::new(value, DataType::Int64, true),
    ]));
    let mut x = seed | 1;
    let mut batches = Vec::new();
    let mut done = 0;
    while done < rows {
        let n = BATCH.min(rows - done);
        let (mut ks, mut vs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ks.push(if keys == rows {
                (done + i) as i64
            } else {
                (x % keys as u64) as i64
            });
            vs.push((x >> 40) as i64);
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ks)),
                Arc::new(Int64Array::from(vs)),
            ],
        )
        .expect("batch");
        batches.push(batch);
        done += n;
    }
    (schema, batches)
}

fn config(memory: usize) -> EngineConfig {
    EngineConfig {
        memory_budget: memory,
        broadcast_threshold: 0,
        ..EngineConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (fs, fact) = table(FACT_ROWS, DIM_ROWS, 7, "k", "v");
    let (ds, dim) = table(DIM_ROWS, DIM_ROWS, 11, "dk", "w");
    let dir = tempfile::tempdir().expect("temp dir");
    let local = vec![("local.dirs".to_string(), dir.path().display().to_string())];

    for (op, name) in [("join", "join"), ("aggregate", "aggregate")] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(FACT_ROWS as u64))
            .sample_size(10);
        for (mode, memory) in [("memory", 1usize << 30), ("spill", 2 << 20)] {
            let cfg = config(memory);
            let managed = rt
                .block_on(build_shuffle_manager(&cfg, &local))
                .expect("manager");
            let session = Session::new(cfg, Arc::clone(&managed.manager));
            let f = session
                .read_batches(Arc::clone(&fs), fact.clone())
                .expect("fact");
            let d = session
                .read_batches(Arc::clone(&ds), dim.clone())
                .expect("dim");
            let df = if op == "join" {
                f.join(&d, JoinType::Inner, &["k"], &["dk"]).expect("join")
            } else {
                f.aggregate(vec![col("k")], vec![sum(col("v")), count_star()])
                    .expect("aggregate")
            };
            g.bench_function(mode, |b| {
                b.iter(|| {
                    let out = rt.block_on(df.collect()).expect("collect");
                    let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
                    assert!(rows > 0);
                    rows
                })
            });
            if mode == "spill" {
                let s = session.last_job_summary().expect("summary");
                assert!(s.total_spill_bytes() > 0, "the spill variant must spill");
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
