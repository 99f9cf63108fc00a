//! Shuffle write and read throughput beside the codec's own limit.
//!
//! Every figure is MB/s of raw (uncompressed) bytes, measured in one run on
//! the same bytes, so the ratio writer/lz4-compress and reader/lz4-decompress
//! shows how close the shuffle path is to the codec's limit:
//!
//! - `codec/lz4_compress`, `codec/lz4_decompress`: lz4_flex alone, block by block.
//! - `local/write`: buffered map writers (frame, crc32, commit to files).
//! - `local/read`: a reader over every partition (ranged reads, crc32, decode).
//! - `s3/write`, `s3/read`: the same through the S3 backend against the
//!   embedded S3 server on 127.0.0.1 (real HTTP, SigV4, s3s-fs on disk), so
//!   `s3/x` over `local/x` is the cost of the protocol on one machine.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use shovel_benches::shuffle_like_bytes;
use shuffle_core::{MapStatus, ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleManagerExt};

const BLOCK: usize = 256 << 10;
const MAPS: u32 = 4;
const PARTITIONS: u32 = 16;
const TOTAL: usize = 64 << 20;

fn blocks() -> Vec<Vec<u8>> {
    (0..TOTAL / BLOCK)
        .map(|i| shuffle_like_bytes(BLOCK, i as u64))
        .collect()
}

async fn write_shuffle(mgr: &dyn ShuffleManager, id: u32, blocks: &[Vec<u8>]) -> Vec<MapStatus> {
    mgr.register_shuffle(ShuffleHandle {
        shuffle_id: id,
        num_maps: MAPS,
        num_partitions: PARTITIONS,
    })
    .await
    .expect("register");
    let per_map = blocks.len() / MAPS as usize;
    let mut statuses = Vec::new();
    for m in 0..MAPS {
        let mut w = mgr.buffered_writer(id, m, 0).await.expect("writer");
        for (i, b) in blocks[m as usize * per_map..(m as usize + 1) * per_map]
            .iter()
            .enumerate()
        {
            w.write_block(i as u32 % PARTITIONS, b, 1)
                .await
                .expect("write");
        }
        statuses.push(w.commit().await.expect("commit"));
    }
    statuses
}

async fn read_shuffle(mgr: &dyn ShuffleManager, id: u32, statuses: &[MapStatus]) -> usize {
    let mut r = mgr
        .reader(id, statuses.to_vec(), 0..PARTITIONS)
        .expect("reader");
    let mut n = 0;
    while let Some(b) = r.next().await {
        n += b.expect("block").data.len();
    }
    n
}

fn bench(c: &mut Criterion) {
    let blocks = blocks();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(TOTAL as u64))
        .sample_size(10);
    let compressed: Vec<Vec<u8>> = blocks
        .iter()
        .map(|b| lz4_flex::block::compress(b))
        .collect();
    g.bench_function("lz4_compress", |b| {
        b.iter(|| {
            blocks
                .iter()
                .map(|x| lz4_flex::block::compress(x).len())
                .sum::<usize>()
        })
    });
    g.bench_function("lz4_decompress", |b| {
        b.iter(|| {
            compressed
                .iter()
                .map(|x| {
                    lz4_flex::block::decompress(x, BLOCK)
                        .map(|v| v.len())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    g.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let config = ShuffleConfig {
        local_dirs: vec![dir.path().to_path_buf()],
        ..ShuffleConfig::default()
    };
    let local = Arc::new(shuffle_local::local_manager(config.clone()).expect("manager"));
    bench_backend(c, &rt, "local", local, &blocks);

    let server = rt
        .block_on(shuffle_s3::EmbeddedS3::start_temp())
        .expect("embedded S3");
    let s3 = rt
        .block_on(
            shuffle_s3::S3ShuffleBuilder::new(config)
                .s3_config(server.config("bench").expect("s3 config"))
                .build(),
        )
        .expect("s3 manager")
        .manager;
    bench_backend(c, &rt, "s3", Arc::new(s3), &blocks);
    drop(server);
}

fn bench_backend(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    mgr: Arc<shuffle_core::StoreShuffleManager>,
    blocks: &[Vec<u8>],
) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(TOTAL as u64))
        .sample_size(10);
    let mut next_id = 0u32;
    g.bench_function("write", |b| {
        b.iter(|| {
            next_id += 1;
            rt.block_on(async {
                write_shuffle(&*mgr, next_id, blocks).await;
                mgr.remove_shuffle(next_id).await.expect("remove");
            })
        })
    });
    let statuses = rt.block_on(write_shuffle(&*mgr, u32::MAX, blocks));
    g.bench_function("read", |b| {
        b.iter(|| {
            let n = rt.block_on(read_shuffle(&*mgr, u32::MAX, &statuses));
            assert_eq!(n, TOTAL);
        })
    });
    g.finish();
    rt.block_on(mgr.cleanup_app()).expect("cleanup");
}

criterion_group!(benches, bench);
criterion_main!(benches);
