//! Batches through the codec, the partitioner and a real local shuffle come
//! back unchanged, each row in the partition its key hashes to.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::array_value_to_string;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use proptest::prelude::*;
use shuffle_arrow::hash::{bucket, hash_columns, SEED_EXCHANGE};
use shuffle_arrow::{
    decode_batch, read_partitions, BatchEncoder, Error, MapTaskWriter, PartitionScheme, Partitioner,
};
use shuffle_core::{ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleManagerExt};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("f", DataType::Float64, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("d", DataType::Decimal128(12, 2), true),
    ]))
}

type Row = (
    Option<i64>,
    Option<String>,
    Option<f64>,
    Option<bool>,
    Option<i128>,
);

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.clone()))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.3))),
        Arc::new(
            Decimal128Array::from_iter(rows.iter().map(|r| r.4))
                .with_precision_and_scale(12, 2)
                .expect("decimal type"),
        ),
    ];
    RecordBatch::try_new(schema(), cols).expect("batch")
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (
            prop::option::of(-50i64..50),
            prop::option::of("[a-z]{0,12}"),
            prop::option::of(-1e6f64..1e6),
            prop::option::of(any::<bool>()),
            prop::option::of(-99_999_999_999i128..99_999_999_999),
        ),
        0..200,
    )
}

/// Rows as sortable strings, for order-insensitive comparison.
fn row_strings(b: &RecordBatch) -> Vec<String> {
    let mut out: Vec<String> = (0..b.num_rows())
        .map(|r| {
            b.columns()
                .iter()
                .map(|c| array_value_to_string(c, r).expect("display"))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn codec_round_trips(rows in rows(), cut in 0usize..200) {
        let b = batch(&rows);
        let start = cut.min(b.num_rows());
        let slice = b.slice(start, b.num_rows() - start);
        let mut enc = BatchEncoder::new();
        for part in [&b, &slice] {
            let bytes = enc.encode(part).expect("encode");
            let back = decode_batch(Bytes::from(bytes), &schema()).expect("decode");
            prop_assert_eq!(&back, part);
        }
    }

    #[test]
    fn hash_partitions_keep_every_row_in_its_bucket(rows in rows(), n in 1usize..9) {
        let b = batch(&rows);
        let keys = vec![Arc::clone(b.column(0)), Arc::clone(b.column(1))];
        let mut p = Partitioner::new(PartitionScheme::hash(n), 0).expect("partitioner");
        let mut parts = Vec::new();
        p.partition::<Error>(&b, &keys, |part, sub| {
            parts.push((part, sub));
            Ok(())
        }).expect("partition");
        let mut h = Vec::new();
        for (part, sub) in &parts {
            hash_columns(&[Arc::clone(sub.column(0)), Arc::clone(sub.column(1))], SEED_EXCHANGE, &mut h)
                .expect("hash");
            prop_assert!(h.iter().all(|h| bucket(*h, n) == *part));
        }
        let all: Vec<RecordBatch> = parts.into_iter().map(|(_, b)| b).collect();
        let joined = concat_batches(&schema(), &all).expect("concat");
        prop_assert_eq!(row_strings(&joined), row_strings(&b));
    }
}

fn local(dir: &tempfile::TempDir) -> shuffle_core::StoreShuffleManager {
    shuffle_local::local_manager(ShuffleConfig {
        local_dirs: vec![dir.path().to_path_buf()],
        ..ShuffleConfig::default()
    })
    .expect("local manager")
}

/// A local manager in `dir` with one shuffle registered.
async fn registered(
    dir: &tempfile::TempDir,
    shuffle_id: u32,
    num_maps: u32,
    num_partitions: u32,
) -> shuffle_core::StoreShuffleManager {
    let mgr = local(dir);
    mgr.register_shuffle(ShuffleHandle {
        shuffle_id,
        num_maps,
        num_partitions,
    })
    .await
    .expect("register");
    mgr
}

/// A local manager in `dir` with one shuffle of one map and `n`
/// partitions, and the hash-partitioning writer of that map.
async fn hash_writer(
    dir: &tempfile::TempDir,
    shuffle_id: u32,
    n: u32,
) -> (shuffle_core::StoreShuffleManager, MapTaskWriter) {
    let mgr = registered(dir, shuffle_id, 1, n).await;
    let w = MapTaskWriter::new(&mgr, shuffle_id, 0, 0, PartitionScheme::hash(n as usize))
        .await
        .expect("writer");
    (mgr, w)
}

/// Partition `p` of one committed map output, read back in order.
async fn read_partition(
    mgr: &shuffle_core::StoreShuffleManager,
    shuffle_id: u32,
    status: &shuffle_core::MapStatus,
    p: u32,
) -> Vec<RecordBatch> {
    read_partitions(mgr, shuffle_id, vec![status.clone()], p..p + 1, schema())
        .expect("reader")
        .try_collect()
        .await
        .expect("read")
}

fn sample(offset: i64) -> RecordBatch {
    let rows: Vec<Row> = (0..500)
        .map(|i| {
            let k = offset + i;
            (
                Some(k % 37),
                Some(format!("s{}", k % 11)),
                Some(k as f64 / 3.0),
                (k % 5 != 0).then_some(k % 2 == 0),
                Some(k as i128 * 101),
            )
        })
        .collect();
    batch(&rows)
}

#[tokio::test]
async fn map_outputs_read_back_partition_by_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 4u32;
    let mgr = registered(&dir, 3, 2, n).await;
    let mut statuses = Vec::new();
    let mut input = Vec::new();
    for map in 0..2u32 {
        let w = MapTaskWriter::new(&mgr, 3, map, 0, PartitionScheme::hash(n as usize))
            .await
            .expect("writer");
        let batches: Vec<RecordBatch> = (0..3)
            .map(|i| sample(map as i64 * 10_000 + i * 500))
            .collect();
        input.extend(batches.iter().cloned());
        let stream = futures::stream::iter(
            batches
                .into_iter()
                .map(|b| Ok::<_, Error>((b.clone(), vec![Arc::clone(b.column(0))]))),
        );
        let (status, stats) = w.write_all(stream).await.expect("write");
        assert_eq!(stats.records, 1500);
        assert_eq!(status.records.iter().sum::<u64>(), 1500);
        statuses.push(status);
    }
    let mut read = Vec::new();
    let mut h = Vec::new();
    for p in 0..n {
        let reader =
            read_partitions(&mgr, 3, statuses.clone(), p..p + 1, schema()).expect("reader");
        let batches: Vec<RecordBatch> = reader.try_collect().await.expect("read");
        for b in &batches {
            hash_columns(&[Arc::clone(b.column(0))], SEED_EXCHANGE, &mut h).expect("hash");
            assert!(h.iter().all(|h| bucket(*h, n as usize) == p as usize));
        }
        read.extend(batches);
    }
    let expected = concat_batches(&schema(), &input).expect("concat");
    let got = concat_batches(&schema(), &read).expect("concat");
    assert_eq!(row_strings(&got), row_strings(&expected));

    // The whole range at once reads the same rows, and counts them.
    let mut reader = read_partitions(&mgr, 3, statuses, 0..n, schema()).expect("reader");
    let mut rows = 0;
    while let Some(b) = reader.next().await {
        rows += b.expect("batch").num_rows() as u64;
    }
    assert_eq!(rows, 3000);
    assert_eq!(reader.stats().records, 3000);
    assert!(reader.stats().encoded_bytes > 0 && reader.stored_bytes() > 0);
}

#[tokio::test]
async fn a_block_that_is_not_a_batch_names_shuffle_map_and_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = registered(&dir, 1, 1, 2).await;
    let mut raw = mgr.buffered_writer(1, 0, 0).await.expect("writer");
    raw.write_block(1, b"\x08\x00\x00\x00not arrow", 1)
        .await
        .expect("write");
    let status = raw.commit().await.expect("commit");
    let reader = read_partitions(&mgr, 1, vec![status], 0..2, schema()).expect("reader");
    let err = reader
        .try_collect::<Vec<_>>()
        .await
        .expect_err("garbage must not decode");
    let msg = err.to_string();
    assert!(matches!(err, Error::MalformedBlock { .. }), "{msg}");
    assert!(msg.contains("shuffle 1 map 0 partition 1"), "{msg}");
}

#[tokio::test]
async fn a_writer_with_the_wrong_partition_count_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = registered(&dir, 2, 1, 3).await;
    let err = MapTaskWriter::new(&mgr, 2, 0, 0, PartitionScheme::hash(5))
        .await
        .expect_err("5 partitions into a 3-partition shuffle");
    assert!(
        err.to_string().contains("registered with 3 partitions"),
        "{err}"
    );
}

/// Rows as strings, in stream order.
fn ordered_rows(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                b.columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).expect("display"))
                    .collect::<Vec<_>>()
                    .join("|")
            })
        })
        .collect()
}

#[tokio::test]
async fn small_parts_share_blocks_and_read_back_coalesced_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 4u32;
    let (mgr, mut w) = hash_writer(&dir, 7, n).await;
    // 400 parts of 50 rows, 100 per partition, as a partitioner over many
    // partitions hands them over.
    let mut written: Vec<Vec<RecordBatch>> = vec![Vec::new(); n as usize];
    for i in 0..400u32 {
        let rows: Vec<Row> = (0..50)
            .map(|r| {
                let k = i as i64 * 50 + r;
                (
                    Some(k),
                    Some(format!("s{k}")),
                    None,
                    Some(k % 2 == 0),
                    Some(k as i128),
                )
            })
            .collect();
        let part = batch(&rows);
        w.write_to(i % n, &part).await.expect("write");
        written[(i % n) as usize].push(part);
    }
    let per_partition: usize = written[0].iter().map(|b| b.get_array_memory_size()).sum();
    assert!(
        per_partition > 2 * shuffle_arrow::pending::PENDING_PARTITION_BYTES,
        "the test needs several blocks per partition"
    );
    w.flush().await.expect("flush");
    let stats = w.stats();
    assert_eq!(stats.records, 20_000);
    assert!(
        stats.blocks >= 2 * n as u64 && stats.blocks < 100,
        "{} blocks for 400 parts: parts were not gathered into blocks of 64 KiB",
        stats.blocks
    );
    let (status, committed) = w.commit().await.expect("commit");
    assert_eq!(committed, stats, "nothing was pending after the flush");
    assert_eq!(status.records.iter().sum::<u64>(), 20_000);

    let mut blocks_read = 0;
    for p in 0..n {
        let plain =
            read_partitions(&mgr, 7, vec![status.clone()], p..p + 1, schema()).expect("reader");
        let blocks: Vec<RecordBatch> = plain.try_collect().await.expect("read");
        blocks_read += blocks.len() as u64;
        let coalesced: Vec<RecordBatch> =
            read_partitions(&mgr, 7, vec![status.clone()], p..p + 1, schema())
                .expect("reader")
                .coalesce_to(8192)
                .try_collect()
                .await
                .expect("read");
        // One writer: a partition's rows come back in write order, either way.
        let want = ordered_rows(&written[p as usize]);
        assert_eq!(ordered_rows(&blocks), want, "partition {p}, blocks");
        assert_eq!(ordered_rows(&coalesced), want, "partition {p}, coalesced");
        assert!(blocks.len() >= 2, "partition {p}: {} blocks", blocks.len());
        let sizes: Vec<usize> = coalesced.iter().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, vec![5_000], "partition {p}: {} blocks", blocks.len());
    }
    // Without coalescing, the reader yields one batch per block.
    assert_eq!(blocks_read, stats.blocks);
}

/// Rows routed one by one (as the hash partitioner routes them) read back
/// in the order they were written, partition by partition: over many
/// partitions, where they wait as row numbers and are gathered into blocks
/// of many batches' rows, and over few, where each batch is cut into parts
/// at once. A routing that does not fit the batch or the shuffle is
/// refused by name.
#[tokio::test]
async fn rows_routed_to_partitions_read_back_in_order() {
    // 500-row batches: 300 partitions get about 2 rows each (gathered),
    // 3 partitions about 167 (cut).
    for (shuffle, n) in [(10u32, 300u32), (11, 3)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mgr, mut w) = hash_writer(&dir, shuffle, n).await;
        let mut want: Vec<Vec<String>> = vec![Vec::new(); n as usize];
        let mut total = 0u64;
        for i in 0..40i64 {
            let b = sample(i * 500);
            // A scattered routing.
            let route: Vec<u32> = (0..b.num_rows() as u64)
                .map(|r| ((r * 7919 + i as u64 * 31) % n as u64) as u32)
                .collect();
            let rows = ordered_rows(std::slice::from_ref(&b));
            for (r, p) in route.iter().enumerate() {
                want[*p as usize].push(rows[r].clone());
            }
            w.write_rows(&b, &route).await.expect("write_rows");
            total += b.num_rows() as u64;
        }
        let short = w
            .write_rows(&sample(0), &[0, 1])
            .await
            .expect_err("two partitions for 500 rows");
        assert!(
            short.to_string().contains("one partition per row"),
            "{short}"
        );
        let out_of_range = w
            .write_rows(&sample(0).slice(0, 1), &[n])
            .await
            .expect_err("partition n does not exist");
        assert!(
            out_of_range.to_string().contains(&format!("partition {n}")),
            "{out_of_range}"
        );
        let (status, stats) = w.commit().await.expect("commit");
        assert_eq!(stats.records, total);
        // 20,000 rows over 300 partitions: a block per batch and partition
        // would be 12,000 blocks.
        assert!(
            stats.blocks < 2_000,
            "{n} partitions, {} blocks: rows were not gathered across batches",
            stats.blocks
        );
        for p in [0u32, 1, n / 2, n - 1] {
            let got = read_partition(&mgr, shuffle, &status, p).await;
            assert_eq!(
                ordered_rows(&got),
                want[p as usize],
                "{n} partitions: partition {p}"
            );
        }
    }
}

/// Parts that are slices of one input batch (as DataFusion's partitioner
/// and `split_by_index` hand them over) are gathered by their own size: each
/// used to count as its whole parent and became a block of its own.
#[tokio::test]
async fn slices_of_one_batch_share_blocks_and_read_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 4u32;
    let (mgr, mut w) = hash_writer(&dir, 9, n).await;
    let mut written: Vec<Vec<RecordBatch>> = vec![Vec::new(); n as usize];
    let mut parts = 0u64;
    for i in 0..100i64 {
        let rows: Vec<Row> = (0..2000)
            .map(|r| {
                let k = i * 2000 + r;
                (Some(k), Some(format!("s{k}")), Some(k as f64), None, None)
            })
            .collect();
        let parent = batch(&rows);
        assert!(
            parent.get_array_memory_size() >= shuffle_arrow::pending::PENDING_PARTITION_BYTES,
            "each slice must report a parent of at least a block"
        );
        for p in 0..n {
            let part = parent.slice(p as usize * 500, 500);
            w.write_to(p, &part).await.expect("write");
            written[p as usize].push(part);
            parts += 1;
        }
    }
    let (status, stats) = w.commit().await.expect("commit");
    assert_eq!(stats.records, 200_000);
    assert!(
        stats.blocks >= 2 * n as u64 && stats.blocks * 2 < parts,
        "{} blocks for {parts} slices: slices were not gathered into blocks",
        stats.blocks
    );
    for p in 0..n {
        let got = read_partition(&mgr, 9, &status, p).await;
        assert_eq!(
            ordered_rows(&got),
            ordered_rows(&written[p as usize]),
            "partition {p}"
        );
    }
}

#[tokio::test]
async fn a_failing_input_aborts_with_rows_still_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = registered(&dir, 8, 1, 2).await;
    let w = MapTaskWriter::new(&mgr, 8, 0, 0, PartitionScheme::hash(2))
        .await
        .expect("writer");
    let b = sample(0).slice(0, 5);
    let input = futures::stream::iter(vec![
        Ok((b.clone(), vec![Arc::clone(b.column(0))])),
        Err(Error::DictionaryNotSupported),
    ]);
    w.write_all(input)
        .await
        .expect_err("the input's error is returned");
    // Nothing was committed: a new attempt commits and wins.
    let w = MapTaskWriter::new(&mgr, 8, 0, 1, PartitionScheme::hash(2))
        .await
        .expect("writer");
    let input = futures::stream::iter(vec![Ok::<_, Error>((
        b.clone(),
        vec![Arc::clone(b.column(0))],
    ))]);
    let (status, _) = w.write_all(input).await.expect("second attempt");
    assert_eq!(status.attempt, 1);
    assert_eq!(status.records.iter().sum::<u64>(), 5);
}
