//! The conformance suite: public async checks every backend runs.
//!
//! The suite is the specification of [`ShuffleManager`] over a
//! [`ShuffleStore`]. A backend implements [`Backend`] (how to build a manager
//! for a config) and calls [`conformance_tests!`](crate::conformance_tests),
//! which generates one `#[tokio::test]` per check:
//!
//! ```ignore
//! shuffle_core::conformance_tests!(crate::MyBackend::new());
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::store::{ObjectKey, ObjectMeta, ObjectSink, PutOutcome, ShuffleStore};
use crate::{
    Error, MapStatus, ShuffleConfig, ShuffleHandle, ShuffleManager, ShuffleManagerExt,
    StoreShuffleManager,
};

/// How the suite gets managers from a backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A manager for `config` (its `app_id` is unique per check; honour
    /// `memory_limit` and the fetch settings).
    async fn manager(&self, config: ShuffleConfig) -> StoreShuffleManager;
}

/// A fresh config with a unique app id.
pub fn fresh_config(check: &str) -> ShuffleConfig {
    ShuffleConfig {
        app_id: format!("conformance-{check}-{}", crate::fs::unique_suffix()),
        ..ShuffleConfig::default()
    }
}

/// Expected blocks per (map, partition).
pub type Expected = BTreeMap<(u32, u32), Vec<Bytes>>;

/// Random blocks for `maps` x `partitions`; about a third of the partitions
/// are empty; block sizes vary from 0 to a few KiB, compressible or not.
pub fn random_blocks(seed: u64, maps: u32, partitions: u32) -> Expected {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Expected::new();
    for m in 0..maps {
        for p in 0..partitions {
            if rng.gen_bool(0.33) {
                continue;
            }
            let n = rng.gen_range(1..4);
            let blocks = (0..n)
                .map(|_| {
                    let len = rng.gen_range(0..4096);
                    let compressible = rng.gen_bool(0.5);
                    let v: Vec<u8> = (0..len)
                        .map(|i| {
                            if compressible {
                                (i % 7) as u8
                            } else {
                                rng.gen()
                            }
                        })
                        .collect();
                    Bytes::from(v)
                })
                .collect();
            out.insert((m, p), blocks);
        }
    }
    out
}

/// Writes `expected`'s blocks of map `m` with ordered partition writers.
pub async fn write_map(
    mgr: &dyn ShuffleManager,
    shuffle: u32,
    m: u32,
    attempt: u32,
    partitions: u32,
    expected: &Expected,
) -> crate::Result<MapStatus> {
    let mut w = mgr.map_writer(shuffle, m, attempt).await?;
    for p in 0..partitions {
        if let Some(blocks) = expected.get(&(m, p)) {
            let mut pw = w.partition_writer(p).await?;
            for b in blocks {
                pw.write_block(b).await?;
                pw.add_records(1);
            }
        }
    }
    w.commit().await
}

/// Reads partitions `range` and returns blocks per (map, partition), in order.
pub async fn read_range(
    mgr: &dyn ShuffleManager,
    shuffle: u32,
    statuses: &[MapStatus],
    range: std::ops::Range<u32>,
) -> crate::Result<Expected> {
    let mut reader = mgr.reader(shuffle, statuses.to_vec(), range)?;
    let mut out = Expected::new();
    let mut last = None;
    while let Some(b) = reader.next().await {
        let b = b?;
        let key = (b.map_id, b.partition);
        if let Some(prev) = last {
            assert!(prev <= key, "blocks out of order: {prev:?} then {key:?}");
        }
        last = Some(key);
        out.entry(key).or_default().push(b.data);
    }
    Ok(out)
}

fn subset(expected: &Expected, range: std::ops::Range<u32>) -> Expected {
    expected
        .iter()
        .filter(|((_, p), _)| range.contains(p))
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

async fn setup(mgr: &dyn ShuffleManager, shuffle: u32, maps: u32, partitions: u32) {
    mgr.register_shuffle(ShuffleHandle {
        shuffle_id: shuffle,
        num_maps: maps,
        num_partitions: partitions,
    })
    .await
    .expect("register shuffle");
}

async fn write_all(
    mgr: &dyn ShuffleManager,
    shuffle: u32,
    maps: u32,
    parts: u32,
    e: &Expected,
) -> Vec<MapStatus> {
    let mut statuses = Vec::new();
    for m in 0..maps {
        statuses.push(
            write_map(mgr, shuffle, m, 0, parts, e)
                .await
                .expect("commit"),
        );
    }
    statuses
}

async fn objects_under(mgr: &StoreShuffleManager, prefix: &str) -> Vec<String> {
    mgr.store()
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key.path)
        .collect()
}

/// Random data over many maps and partitions reads back identically.
pub async fn round_trip(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("round-trip")).await;
    let (maps, parts) = (12, 24);
    setup(&mgr, 1, maps, parts).await;
    let e = random_blocks(1, maps, parts);
    let statuses = write_all(&mgr, 1, maps, parts, &e).await;
    for s in &statuses {
        let records: u64 = s.records.iter().sum();
        let want = e
            .iter()
            .filter(|((m, _), _)| *m == s.map_id)
            .map(|(_, v)| v.len() as u64)
            .sum();
        assert_eq!(records, want, "records of map {}", s.map_id);
    }
    let got = read_range(&mgr, 1, &statuses, 0..parts)
        .await
        .expect("read");
    assert_eq!(got, e);
    mgr.cleanup_app().await.expect("cleanup");
}

/// Empty partitions read back as nothing, alone or between full ones.
pub async fn empty_partitions(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("empty-partitions")).await;
    setup(&mgr, 2, 2, 6).await;
    let mut e = Expected::new();
    e.insert((0, 1), vec![Bytes::from_static(b"one")]);
    e.insert((0, 4), vec![Bytes::from_static(b"four"), Bytes::new()]);
    e.insert((1, 5), vec![Bytes::from(vec![9u8; 5000])]);
    let statuses = write_all(&mgr, 2, 2, 6, &e).await;
    assert_eq!(statuses[0].lengths[0], 0);
    assert_eq!(statuses[0].lengths[2], 0);
    assert!(read_range(&mgr, 2, &statuses, 2..4)
        .await
        .expect("read")
        .is_empty());
    assert_eq!(read_range(&mgr, 2, &statuses, 0..6).await.expect("read"), e);
    mgr.cleanup_app().await.expect("cleanup");
}

/// A map output with no data at all commits, reads as nothing, and writes
/// no object at all.
pub async fn all_empty_map_output(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("all-empty")).await;
    setup(&mgr, 3, 1, 4).await;
    let w = mgr.map_writer(3, 0, 0).await.expect("writer");
    let status = w.commit().await.expect("commit");
    assert_eq!(status.lengths, vec![0; 4]);
    assert!(read_range(&mgr, 3, std::slice::from_ref(&status), 0..4)
        .await
        .expect("read")
        .is_empty());
    let objects = objects_under(&mgr, &mgr.layout().shuffle_prefix(3)).await;
    assert!(objects.is_empty(), "nothing stored: {objects:?}");
    let known = mgr.committed_map_status(3, 0).await.expect("known here");
    assert_eq!(known.lengths, status.lengths);
    mgr.cleanup_app().await.expect("cleanup");
}

/// Every contiguous partition range reads exactly its blocks.
pub async fn every_contiguous_range(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("ranges")).await;
    let (maps, parts) = (3, 7);
    setup(&mgr, 4, maps, parts).await;
    let e = random_blocks(4, maps, parts);
    let statuses = write_all(&mgr, 4, maps, parts, &e).await;
    for a in 0..=parts {
        for z in a..=parts {
            let got = read_range(&mgr, 4, &statuses, a..z).await.expect("read");
            assert_eq!(got, subset(&e, a..z), "range {a}..{z}");
        }
    }
    mgr.cleanup_app().await.expect("cleanup");
}

/// Partition writers out of order, repeated or out of range are rejected.
pub async fn partition_writers_out_of_order_rejected(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("order")).await;
    setup(&mgr, 5, 1, 4).await;
    let mut w = mgr.map_writer(5, 0, 0).await.expect("writer");
    w.partition_writer(2)
        .await
        .expect("first")
        .write_block(b"x")
        .await
        .expect("write");
    let err = w
        .partition_writer(1)
        .await
        .map(|_| ())
        .expect_err("backwards");
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    let err = w.partition_writer(2).await.map(|_| ()).expect_err("repeat");
    assert!(err.to_string().contains("strictly increasing"), "{err}");
    let err = w
        .partition_writer(4)
        .await
        .map(|_| ())
        .expect_err("out of range");
    assert!(err.to_string().contains("out of range"), "{err}");
    w.abort().await.expect("abort");
    mgr.cleanup_app().await.expect("cleanup");
}

/// Two attempts of one map: the first to commit wins, in either order, and
/// the loser leaves nothing.
pub async fn first_attempt_wins(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("attempts")).await;
    setup(&mgr, 6, 2, 3).await;
    let mut a = Expected::new();
    a.insert((0, 1), vec![Bytes::from_static(b"attempt zero")]);
    let mut z = Expected::new();
    z.insert((0, 1), vec![Bytes::from_static(b"attempt one, different")]);
    // Attempt 0 commits first.
    let first = write_map(&mgr, 6, 0, 0, 3, &a).await.expect("commit 0");
    let second = write_map(&mgr, 6, 0, 1, 3, &z).await.expect("commit 1");
    assert_eq!(first.attempt, 0);
    assert_eq!(
        second,
        MapStatus {
            raw_bytes: second.raw_bytes,
            ..first.clone()
        }
    );
    assert_eq!(read_range(&mgr, 6, &[second], 0..3).await.expect("read"), a);
    // Map 1: both open, the later attempt commits first and wins.
    let mut w0 = mgr.map_writer(6, 1, 0).await.expect("w0");
    let mut w1 = mgr.map_writer(6, 1, 1).await.expect("w1");
    w0.partition_writer(0)
        .await
        .expect("p")
        .write_block(b"slow attempt")
        .await
        .expect("w");
    w1.partition_writer(0)
        .await
        .expect("p")
        .write_block(b"fast attempt")
        .await
        .expect("w");
    let s1 = w1.commit().await.expect("commit 1");
    let s0 = w0.commit().await.expect("commit 0");
    assert_eq!(s1.attempt, 1);
    assert_eq!(s0.attempt, 1, "the loser reports the winner");
    let got = read_range(&mgr, 6, &[s0], 0..3).await.expect("read");
    assert_eq!(
        got.get(&(1, 0)),
        Some(&vec![Bytes::from_static(b"fast attempt")])
    );
    let objects = objects_under(&mgr, &mgr.layout().shuffle_prefix(6)).await;
    let data: Vec<_> = objects.iter().filter(|o| o.ends_with(".data")).collect();
    assert_eq!(
        data.len(),
        2,
        "one data object per map, losers removed: {objects:?}"
    );
    assert_eq!(mgr.metrics().snapshot().shuffle.commit_conflicts, 2);
    mgr.cleanup_app().await.expect("cleanup");
}

/// An aborted attempt, plain or buffered with spills, leaves no objects.
pub async fn abort_leaves_nothing(b: &dyn Backend) {
    let mut cfg = fresh_config("abort");
    cfg.memory_limit = 2048;
    let mgr = b.manager(cfg).await;
    setup(&mgr, 7, 2, 4).await;
    let mut w = mgr.map_writer(7, 0, 0).await.expect("writer");
    let big = vec![7u8; 3 << 20];
    w.partition_writer(1)
        .await
        .expect("p")
        .write_block(&big)
        .await
        .expect("write");
    w.abort().await.expect("abort");
    let mut bw = mgr.buffered_writer(7, 1, 0).await.expect("buffered");
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..50u32 {
        let block: Vec<u8> = (0..1000).map(|_| rng.gen()).collect();
        bw.write_block(i % 4, &block, 1).await.expect("write");
    }
    assert!(bw.spill_count() > 0, "a 2 KiB budget must spill");
    bw.abort().await.expect("abort");
    // Nothing but the running job's marker.
    let objects: Vec<String> = objects_under(&mgr, &mgr.layout().app_prefix())
        .await
        .into_iter()
        .filter(|p| crate::Layout::parse(p).map(|o| o.kind) != Some(crate::ObjectKind::JobMarker))
        .collect();
    assert!(objects.is_empty(), "left behind: {objects:?}");
    assert_eq!(mgr.memory_pool().used(), 0, "reservations released");
}

/// Removing a shuffle deletes every object; reads then fail as fetch failures.
pub async fn remove_leaves_nothing(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("remove")).await;
    setup(&mgr, 8, 3, 5).await;
    setup(&mgr, 9, 1, 2).await;
    let e = random_blocks(8, 3, 5);
    let statuses = write_all(&mgr, 8, 3, 5, &e).await;
    let mut other = Expected::new();
    other.insert((0, 0), vec![Bytes::from_static(b"keep me")]);
    let kept = write_all(&mgr, 9, 1, 2, &other).await;
    mgr.remove_shuffle(8).await.expect("remove");
    assert!(objects_under(&mgr, &mgr.layout().shuffle_prefix(8))
        .await
        .is_empty());
    let nonempty: Vec<_> = statuses
        .into_iter()
        .filter(|s| s.total_bytes() > 0)
        .collect();
    assert!(!nonempty.is_empty());
    let err = read_range(&mgr, 8, &nonempty, 0..5)
        .await
        .expect_err("removed");
    assert!(
        matches!(err, Error::FetchFailed { .. }) && err.is_data_loss(),
        "{err}"
    );
    assert_eq!(
        read_range(&mgr, 9, &kept, 0..2)
            .await
            .expect("other shuffle intact"),
        other
    );
    mgr.cleanup_app().await.expect("cleanup");
    assert!(objects_under(&mgr, &mgr.layout().app_prefix())
        .await
        .is_empty());
}

/// Many map tasks writing at once.
pub async fn concurrent_writers(b: &dyn Backend) {
    let mgr = Arc::new(b.manager(fresh_config("concurrent")).await);
    let (maps, parts) = (16, 8);
    setup(&*mgr, 10, maps, parts).await;
    let e = Arc::new(random_blocks(10, maps, parts));
    let tasks: Vec<_> = (0..maps)
        .map(|m| {
            let (mgr, e) = (Arc::clone(&mgr), Arc::clone(&e));
            tokio::spawn(async move { write_map(&*mgr, 10, m, 0, parts, &e).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("join").expect("commit"));
    }
    assert_eq!(
        read_range(&*mgr, 10, &statuses, 0..parts)
            .await
            .expect("read"),
        *e
    );
    mgr.cleanup_app().await.expect("cleanup");
}

async fn buffered_write(
    mgr: &StoreShuffleManager,
    shuffle: u32,
    e: &Expected,
    parts: u32,
    seed: u64,
) -> (MapStatus, Bytes, usize) {
    setup(mgr, shuffle, 1, parts).await;
    let mut bw = mgr.buffered_writer(shuffle, 0, 0).await.expect("buffered");
    // Interleave partitions in a random order, keeping each partition's own order.
    let mut queues: Vec<Vec<Bytes>> = (0..parts)
        .map(|p| e.get(&(0, p)).cloned().unwrap_or_default())
        .collect();
    for q in &mut queues {
        q.reverse();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let live: Vec<usize> = (0..queues.len())
            .filter(|&p| !queues[p].is_empty())
            .collect();
        if live.is_empty() {
            break;
        }
        let p = live[rng.gen_range(0..live.len())];
        let block = queues[p].pop().expect("live");
        bw.write_block(p as u32, &block, 1).await.expect("write");
    }
    let spills = bw.spill_count();
    let status = bw.commit().await.expect("commit");
    let data = if status.total_bytes() > 0 {
        mgr.store()
            .get(&status.location)
            .await
            .expect("data object")
    } else {
        Bytes::new()
    };
    (status, data, spills)
}

/// A budget small enough to spill gives byte-identical output to no spilling.
pub async fn spilling_is_byte_identical(b: &dyn Backend) {
    let parts = 9;
    let mut e = random_blocks(11, 1, parts);
    e.entry((0, 3))
        .or_default()
        .push(Bytes::from(vec![3u8; 200_000]));
    let roomy = b.manager(fresh_config("no-spill")).await;
    let mut cfg = fresh_config("spill");
    cfg.memory_limit = 4096;
    let tight = b.manager(cfg).await;
    let (s1, d1, spills1) = buffered_write(&roomy, 11, &e, parts, 5).await;
    let (s2, d2, spills2) = buffered_write(&tight, 11, &e, parts, 5).await;
    assert_eq!(spills1, 0);
    assert!(
        spills2 > 1,
        "a 4 KiB budget must spill more than once, spilled {spills2}"
    );
    assert!(tight.metrics().snapshot().shuffle.spill_bytes > 0);
    assert_eq!(s1.lengths, s2.lengths);
    assert_eq!(s1.checksums, s2.checksums);
    assert!(d1 == d2, "spilled output differs from in-memory output");
    assert_eq!(
        read_range(&tight, 11, &[s2], 0..parts).await.expect("read"),
        e
    );
    assert_eq!(tight.memory_pool().used(), 0);
    roomy.cleanup_app().await.expect("cleanup");
    tight.cleanup_app().await.expect("cleanup");
}

/// Byte-stream writes come back as the same bytes.
pub async fn byte_stream_round_trip(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("stream")).await;
    setup(&mgr, 12, 1, 2).await;
    let mut rng = StdRng::seed_from_u64(12);
    let data: Vec<u8> = (0..700_000)
        .map(|i| if i % 3 == 0 { rng.gen() } else { 1 })
        .collect();
    let mut w = mgr.map_writer(12, 0, 0).await.expect("writer");
    {
        let mut pw = w.partition_writer(1).await.expect("p");
        for piece in data.chunks(9_999) {
            pw.write(piece).await.expect("write");
        }
    }
    let status = w.commit().await.expect("commit");
    let got = read_range(&mgr, 12, &[status], 0..2).await.expect("read");
    let joined: Vec<u8> = got
        .get(&(0, 1))
        .expect("partition 1")
        .iter()
        .flat_map(|b| b.iter().copied())
        .collect();
    assert!(joined == data, "byte stream differs");
    mgr.cleanup_app().await.expect("cleanup");
}

async fn damage(mgr: &StoreShuffleManager, status: &MapStatus, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = mgr
        .store()
        .get(&status.location)
        .await
        .expect("data")
        .to_vec();
    f(&mut bytes);
    mgr.store()
        .put(&status.location, Bytes::from(bytes))
        .await
        .expect("overwrite");
}

/// One flipped byte anywhere in a partition is a checksum mismatch naming
/// the object and the partition.
pub async fn flipped_byte_is_checksum_mismatch(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("flip")).await;
    setup(&mgr, 13, 1, 4).await;
    let mut e = Expected::new();
    e.insert((0, 0), vec![Bytes::from(vec![1u8; 3000])]);
    e.insert(
        (0, 2),
        vec![
            Bytes::from(
                (0..5000u32)
                    .map(|i| (i * 31 % 251) as u8)
                    .collect::<Vec<_>>(),
            ),
            Bytes::from_static(b"tail"),
        ],
    );
    let status = write_all(&mgr, 13, 1, 4, &e).await.remove(0);
    let range = status.byte_range(2..3);
    // Flip a header byte, a payload byte and the last byte, one at a time.
    for pos in [range.start, range.start + 20, range.end - 1] {
        let original = mgr.store().get(&status.location).await.expect("data");
        damage(&mgr, &status, |b| b[pos as usize] ^= 0x40).await;
        let err = read_range(&mgr, 13, std::slice::from_ref(&status), 0..4)
            .await
            .expect_err("corrupt");
        assert!(err.is_data_loss(), "{err}");
        match err.root() {
            Error::ChecksumMismatch {
                object, partition, ..
            } => {
                assert_eq!(*partition, 2, "byte {pos}");
                assert!(object.contains(&status.location.path), "{object}");
            }
            other => panic!("byte {pos}: expected a checksum mismatch, got {other}"),
        }
        mgr.store()
            .put(&status.location, original)
            .await
            .expect("restore");
    }
    // Partition 0 alone still reads: damage is reported where it is.
    assert_eq!(
        read_range(&mgr, 13, &[status], 0..1).await.expect("read"),
        subset(&e, 0..1)
    );
    mgr.cleanup_app().await.expect("cleanup");
}

/// A truncated data object is reported as truncated/corrupt: through a
/// status with the first partition the cut leaves incomplete, from storage
/// (a cut footer) naming the object.
pub async fn truncated_object_is_reported(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("truncate")).await;
    setup(&mgr, 14, 1, 3).await;
    let mut e = Expected::new();
    e.insert((0, 0), vec![Bytes::from(vec![7u8; 4_000])]);
    e.insert(
        (0, 2),
        vec![Bytes::from(vec![5u8; 10_000]), Bytes::from_static(b"end")],
    );
    let status = write_all(&mgr, 14, 1, 3, &e).await.remove(0);
    let original = mgr.store().get(&status.location).await.expect("data");
    let middle_of_0 = status.byte_range(0..1).end / 2;
    for (cut, partition) in [(status.total_bytes() - 10, 2), (middle_of_0, 0)] {
        damage(&mgr, &status, |b| b.truncate(cut as usize)).await;
        let err = read_range(&mgr, 14, std::slice::from_ref(&status), 0..3)
            .await
            .expect_err("truncated");
        assert!(err.is_data_loss(), "{err}");
        match err.root() {
            Error::Corrupt { object, reason } => {
                assert!(object.contains(&status.location.path), "{object}");
                assert!(
                    reason.contains(&format!("truncated in partition {partition}")),
                    "cut at {cut}: {reason}"
                );
            }
            other => panic!("expected truncated, got {other}"),
        }
        mgr.store()
            .put(&status.location, original.clone())
            .await
            .expect("restore");
    }
    // A cut footer: the status cannot be recovered from storage.
    damage(&mgr, &status, |b| b.truncate(b.len() - 3)).await;
    let err = same_app(&mgr)
        .committed_map_status(14, 0)
        .await
        .expect_err("truncated footer");
    assert!(
        err.is_data_loss() && err.to_string().contains("truncated"),
        "{err}"
    );
    mgr.cleanup_app().await.expect("cleanup");
}

/// The status read back from storage equals the one commit returned, and
/// reading through it works with tiny fetch limits (chunked ranged reads).
pub async fn status_from_storage_and_small_fetches(b: &dyn Backend) {
    let mut cfg = fresh_config("status");
    cfg.fetch_chunk_bytes = 64 << 10;
    cfg.fetch_max_bytes_in_flight = 100 << 10;
    cfg.fetch_max_requests_in_flight = 2;
    let mgr = b.manager(cfg).await;
    let (maps, parts) = (4, 3);
    setup(&mgr, 15, maps, parts).await;
    let mut e = random_blocks(15, maps, parts);
    let mut rng = StdRng::seed_from_u64(15);
    e.insert(
        (2, 1),
        vec![Bytes::from(
            (0..400_000).map(|_| rng.gen::<u8>()).collect::<Vec<_>>(),
        )],
    );
    let statuses = write_all(&mgr, 15, maps, parts, &e).await;
    let mut from_storage = Vec::new();
    let other = same_app(&mgr);
    setup(&other, 15, maps, parts).await;
    for s in &statuses {
        let stored = other
            .committed_map_status(15, s.map_id)
            .await
            .expect("stored status");
        assert_eq!(
            stored,
            MapStatus {
                raw_bytes: 0,
                ..s.clone()
            }
        );
        from_storage.push(stored);
    }
    assert_eq!(
        read_range(&mgr, 15, &from_storage, 0..parts)
            .await
            .expect("read"),
        e
    );
    let err = other
        .committed_map_status(15, 99)
        .await
        .expect_err("never written");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    mgr.cleanup_app().await.expect("cleanup");
}

/// A committed output found corrupt can be invalidated and replaced by a
/// re-run; invalidating a stale attempt leaves the winner alone.
pub async fn invalidated_output_can_be_replaced(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("invalidate")).await;
    setup(&mgr, 16, 1, 2).await;
    let mut bad = Expected::new();
    bad.insert(
        (0, 1),
        vec![Bytes::from_static(b"first, later found corrupt")],
    );
    let first = write_map(&mgr, 16, 0, 0, 2, &bad).await.expect("commit 0");
    mgr.invalidate_map_output(16, 0, 0)
        .await
        .expect("invalidate");
    let err = mgr
        .committed_map_status(16, 0)
        .await
        .expect_err("forgotten");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(
        read_range(&mgr, 16, &[first], 0..2).await.is_err(),
        "old data gone"
    );
    let mut good = Expected::new();
    good.insert((0, 1), vec![Bytes::from_static(b"the re-run")]);
    let second = write_map(&mgr, 16, 0, 1, 2, &good).await.expect("commit 1");
    assert_eq!(second.attempt, 1, "the re-run wins after invalidation");
    // A stale invalidation (attempt 0 again) must not remove the re-run.
    mgr.invalidate_map_output(16, 0, 0)
        .await
        .expect("stale invalidate");
    assert_eq!(
        read_range(&mgr, 16, &[second], 0..2).await.expect("read"),
        good
    );
    mgr.cleanup_app().await.expect("cleanup");
}

/// Cleaning up an app removes its spill files too, even ones never read back.
pub async fn cleanup_removes_spills(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("spill-cleanup")).await;
    let mut w = crate::SpillWriter::create(mgr.spill_store(), mgr.metrics())
        .await
        .expect("spill");
    w.write_block(b"orphaned spill").await.expect("write");
    let file = w.finish().await.expect("finish");
    let removed = mgr.cleanup_app().await.expect("cleanup");
    assert!(
        removed >= 1,
        "cleanup removed {removed} objects; spill file {file:?}"
    );
    let err = mgr.spill_store().read_range(&file, 0..4).await;
    assert!(
        matches!(err, Err(Error::NotFound { .. })) || matches!(err, Ok(ref b) if b.is_empty()),
        "{err:?}"
    );
}

/// The job marker: written on every root by `start_app` (idempotent) and
/// lazily by `register_shuffle`, recognised by the key grammar, refreshed
/// every `job.heartbeat`, gone after `release_app` (which keeps the map
/// outputs and says where they are) and after `cleanup_app`.
pub async fn job_marker_lifecycle(b: &dyn Backend) {
    let mut config = fresh_config("marker");
    config.job_heartbeat = std::time::Duration::from_secs(1);
    let mgr = b.manager(config).await;
    let marker_path = mgr.layout().marker_key(0).path;
    let markers = || async { mgr.store().list(&marker_path).await.expect("list markers") };
    assert!(
        markers().await.is_empty(),
        "no marker before the job starts"
    );
    mgr.start_app().await.expect("start");
    mgr.start_app().await.expect("start again");
    let first = markers().await;
    assert_eq!(
        first.len(),
        mgr.store().root_shards().len(),
        "one marker per root: {first:?}"
    );
    for m in &first {
        assert_eq!(
            crate::Layout::parse(&m.key.path).map(|o| o.kind),
            Some(crate::ObjectKind::JobMarker)
        );
        let body = mgr.store().get(&m.key).await.expect("read marker");
        let marker = crate::job::JobMarker::decode(&body).expect("marker content");
        assert_eq!(marker.app_id, mgr.app_id());
        assert_eq!(marker.pid, std::process::id());
    }
    // Refreshed: its modification time moves on (1 s resolution).
    let t0 = first
        .iter()
        .map(|m| m.modified_unix_secs)
        .min()
        .unwrap_or(0);
    let mut refreshed = false;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = markers().await;
        if now.len() == first.len() && now.iter().all(|m| m.modified_unix_secs > t0) {
            refreshed = true;
            break;
        }
    }
    assert!(refreshed, "marker never refreshed: {:?}", markers().await);

    setup(&mgr, 30, 1, 2).await;
    let e = random_blocks(30, 1, 2);
    let statuses = write_all(&mgr, 30, 1, 2, &e).await;
    let locations = mgr.release_app().await.expect("release");
    assert!(markers().await.is_empty(), "release_app deletes the marker");
    assert!(
        !locations.is_empty() && locations.iter().all(|l| l.contains(mgr.app_id())),
        "{locations:?}"
    );
    assert_eq!(
        read_range(&mgr, 30, &statuses, 0..2).await.expect("kept"),
        e,
        "release_app keeps the map outputs"
    );
    // A later shuffle starts the job (and its marker) again.
    setup(&mgr, 31, 1, 1).await;
    assert_eq!(markers().await.len(), first.len());
    mgr.cleanup_app().await.expect("cleanup");
    assert!(objects_under(&mgr, &mgr.layout().app_prefix())
        .await
        .is_empty());
}

/// A [`ShuffleStore`] that forwards everything to another and counts the
/// requests that list (`list`, `delete_prefix`) and the writes of shuffle
/// objects (`create`, `create_if_absent`, `put`, `put_if_absent` of keys
/// under a `shuffle-` directory), so a check can prove that a path never
/// lists and how many writes a commit makes. [`CountingStore::without_conditional_create`]
/// makes it report `supports_conditional_create() == false`, as a store
/// that ignores `If-None-Match` must. [`CountingStore::with_get_gate`] runs
/// a check before every ranged read (to hold one back until another read
/// has been seen, say); [`CountingStore::observe_writes`] hands every
/// object written in full (any key) to a callback, so a check can look
/// at the bytes a writer produced.
pub struct CountingStore {
    inner: Arc<dyn ShuffleStore>,
    lists: AtomicU64,
    writes: AtomicU64,
    conditional: bool,
    gate: Option<GetGate>,
    observer: Option<WriteObserver>,
}

/// Awaited before a ranged read of `key` is forwarded; an error fails the read.
pub type GetGate = Arc<
    dyn Fn(
            &ObjectKey,
            &std::ops::Range<u64>,
        ) -> futures::future::BoxFuture<'static, crate::Result<()>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner)
            .field("lists", &self.lists())
            .field("writes", &self.writes())
            .field("conditional", &self.conditional)
            .field("gated", &self.gate.is_some())
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

/// The callback of [`CountingStore::observe_writes`].
type ObserveFn = dyn Fn(&ObjectKey, &Bytes) + Send + Sync;

#[derive(Clone)]
struct WriteObserver(Arc<ObserveFn>);

impl std::fmt::Debug for WriteObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteObserver")
    }
}

/// A sink that keeps a copy of what it forwards and shows it to the
/// observer once the inner sink has published it.
struct ObservedSink {
    inner: Box<dyn ObjectSink>,
    key: ObjectKey,
    bytes: Vec<u8>,
    observer: WriteObserver,
}

#[async_trait]
impl ObjectSink for ObservedSink {
    async fn write(&mut self, data: Bytes) -> crate::Result<()> {
        self.bytes.extend_from_slice(&data);
        self.inner.write(data).await
    }

    async fn finish(self: Box<Self>) -> crate::Result<u64> {
        let len = self.inner.finish().await?;
        (self.observer.0)(&self.key, &Bytes::from(self.bytes));
        Ok(len)
    }

    async fn abort(self: Box<Self>) -> crate::Result<()> {
        self.inner.abort().await
    }
}

/// The old name of [`CountingStore`].
pub type ListCountingStore = CountingStore;

impl CountingStore {
    pub fn new(inner: Arc<dyn ShuffleStore>) -> Self {
        let conditional = inner.supports_conditional_create();
        Self {
            inner,
            lists: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            conditional,
            gate: None,
            observer: None,
        }
    }

    /// Calls `observer` with the key and the whole contents of every object
    /// this store writes (`create` and `create_if_absent` sinks once
    /// `finish` succeeded, `put`, and `put_if_absent` when it created the
    /// object); aborted and failed writes are not shown. Sinks then keep a
    /// copy of their object in memory until they finish.
    pub fn observe_writes(
        mut self,
        observer: impl Fn(&ObjectKey, &Bytes) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(WriteObserver(Arc::new(observer)));
        self
    }

    fn observed(&self, key: &ObjectKey, sink: Box<dyn ObjectSink>) -> Box<dyn ObjectSink> {
        match &self.observer {
            Some(observer) => Box::new(ObservedSink {
                inner: sink,
                key: key.clone(),
                bytes: Vec::new(),
                observer: observer.clone(),
            }),
            None => sink,
        }
    }

    fn observe(&self, key: &ObjectKey, data: &Bytes) {
        if let Some(observer) = &self.observer {
            (observer.0)(key, data);
        }
    }

    /// The same store, awaiting `gate` before every ranged read.
    pub fn with_get_gate(mut self, gate: GetGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The same store, reporting no conditional create.
    pub fn without_conditional_create(mut self) -> Self {
        self.conditional = false;
        self
    }

    /// `list` and `delete_prefix` calls so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    /// Writes of shuffle objects so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn count_write(&self, key: &ObjectKey) {
        if key.path.contains("/shuffle-") {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl ShuffleStore for CountingStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn supports_reliable_storage(&self) -> bool {
        self.inner.supports_reliable_storage()
    }
    fn describe(&self, key: &ObjectKey) -> String {
        self.inner.describe(key)
    }
    async fn create(&self, key: &ObjectKey) -> crate::Result<Box<dyn ObjectSink>> {
        self.count_write(key);
        let sink = self.inner.create(key).await?;
        Ok(self.observed(key, sink))
    }
    fn supports_conditional_create(&self) -> bool {
        self.conditional
    }
    async fn create_if_absent(&self, key: &ObjectKey) -> crate::Result<Box<dyn ObjectSink>> {
        if !self.conditional {
            return Err(Error::Protocol(format!(
                "create_if_absent({key}) on a store that says it has no conditional create"
            )));
        }
        self.count_write(key);
        let sink = self.inner.create_if_absent(key).await?;
        Ok(self.observed(key, sink))
    }
    async fn get_suffix(&self, key: &ObjectKey, len: u64) -> crate::Result<Bytes> {
        self.inner.get_suffix(key, len).await
    }
    async fn put(&self, key: &ObjectKey, data: Bytes) -> crate::Result<()> {
        self.count_write(key);
        self.inner.put(key, data.clone()).await?;
        self.observe(key, &data);
        Ok(())
    }
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> crate::Result<PutOutcome> {
        self.count_write(key);
        let outcome = self.inner.put_if_absent(key, data.clone()).await?;
        if outcome == PutOutcome::Created {
            self.observe(key, &data);
        }
        Ok(outcome)
    }
    async fn get(&self, key: &ObjectKey) -> crate::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &ObjectKey,
        range: std::ops::Range<u64>,
    ) -> crate::Result<Bytes> {
        if let Some(gate) = &self.gate {
            gate(key, &range).await?;
        }
        self.inner.get_range(key, range).await
    }
    async fn delete(&self, keys: &[ObjectKey]) -> crate::Result<()> {
        self.inner.delete(keys).await
    }
    async fn list(&self, prefix: &str) -> crate::Result<Vec<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix).await
    }
    fn root_shards(&self) -> Vec<u64> {
        self.inner.root_shards()
    }
    fn describe_prefix(&self, prefix: &str) -> Vec<String> {
        self.inner.describe_prefix(prefix)
    }
    fn cheap_listing(&self) -> bool {
        self.inner.cheap_listing()
    }
    async fn remove_empty_dirs(&self, dirs: &[String]) -> crate::Result<u64> {
        self.inner.remove_empty_dirs(dirs).await
    }
    async fn delete_prefix(&self, prefix: &str) -> crate::Result<u64> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_prefix(prefix).await
    }
    fn drop_local_copies(&self, keys: &[ObjectKey]) {
        self.inner.drop_local_copies(keys)
    }
}

/// A manager over `store` wrapped in a [`CountingStore`] (without
/// conditional create when `conditional` is false), with `base`'s config.
fn counting_manager(
    base: &StoreShuffleManager,
    conditional: bool,
) -> (StoreShuffleManager, Arc<CountingStore>) {
    let mut counting = CountingStore::new(Arc::clone(base.store()));
    if !conditional {
        counting = counting.without_conditional_create();
    }
    let counting = Arc::new(counting);
    let store: Arc<dyn ShuffleStore> = counting.clone();
    let mgr = StoreShuffleManager::builder(store, base.config().clone()).build();
    (mgr, counting)
}

/// The commit modes a backend's store can run: both when it has
/// conditional create, else only without.
fn modes(base: &StoreShuffleManager) -> Vec<bool> {
    if base.store().supports_conditional_create() {
        vec![true, false]
    } else {
        vec![false]
    }
}

/// A second manager of the same app over the same store (another process
/// that has only the ids).
fn same_app(mgr: &StoreShuffleManager) -> StoreShuffleManager {
    StoreShuffleManager::builder(Arc::clone(mgr.store()), mgr.config().clone()).build()
}

/// Exactly one store write per non-empty map output and none for an
/// all-empty one, in both commit modes; no LIST on the way.
pub async fn one_write_per_map_output(b: &dyn Backend) {
    let base = b.manager(fresh_config("one-write")).await;
    for conditional in modes(&base) {
        let (mgr, counting) = counting_manager(&base, conditional);
        let shuffle = 50 + u32::from(conditional);
        let (maps, parts) = (6, 5);
        setup(&mgr, shuffle, maps, parts).await;
        let mut e = random_blocks(u64::from(shuffle), maps, parts);
        e.retain(|(m, _), _| *m != 2); // map 2 all empty
        let before = counting.writes();
        let statuses = write_all(&mgr, shuffle, maps, parts, &e).await;
        let non_empty = statuses.iter().filter(|s| s.total_bytes() > 0).count() as u64;
        assert_eq!(statuses[2].total_bytes(), 0);
        assert_eq!(
            counting.writes() - before,
            non_empty,
            "conditional={conditional}: one write per non-empty map output"
        );
        assert_eq!(counting.lists(), 0, "no LIST on the commit path");
        assert_eq!(
            read_range(&mgr, shuffle, &statuses, 0..parts)
                .await
                .expect("read"),
            e
        );
        mgr.cleanup_app().await.expect("cleanup");
    }
    base.cleanup_app().await.expect("cleanup");
}

/// An all-empty output writes nothing; the process that committed it
/// knows its status, another gets `NotFound` (it recomputes, which is cheap).
pub async fn all_empty_output_writes_nothing(b: &dyn Backend) {
    let base = b.manager(fresh_config("empty-nothing")).await;
    for conditional in modes(&base) {
        let (mgr, counting) = counting_manager(&base, conditional);
        let shuffle = 52 + u32::from(conditional);
        setup(&mgr, shuffle, 1, 3).await;
        let before = counting.writes();
        let status = write_map(&mgr, shuffle, 0, 0, 3, &Expected::new())
            .await
            .expect("commit");
        assert_eq!(status.lengths, vec![0; 3]);
        assert_eq!(counting.writes(), before, "conditional={conditional}");
        assert!(objects_under(&mgr, &mgr.layout().shuffle_prefix(shuffle))
            .await
            .is_empty());
        assert_eq!(
            mgr.committed_map_status(shuffle, 0).await.expect("known"),
            status
        );
        let err = same_app(&mgr)
            .committed_map_status(shuffle, 0)
            .await
            .expect_err("not on storage");
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        // A later attempt still gets the first status.
        let mut late = Expected::new();
        late.insert((0, 1), vec![Bytes::from_static(b"late")]);
        let again = write_map(&mgr, shuffle, 0, 1, 3, &late)
            .await
            .expect("late");
        assert_eq!(again, status);
        mgr.cleanup_app().await.expect("cleanup");
    }
    base.cleanup_app().await.expect("cleanup");
}

/// Several attempts of one map commit at once: every caller gets the same
/// winning status, reading returns the winner's rows once, and no loser
/// object is left; with conditional create, also across managers (processes).
pub async fn racing_attempts(b: &dyn Backend) {
    let base = b.manager(fresh_config("race")).await;
    for conditional in modes(&base) {
        let (mgr, _) = counting_manager(&base, conditional);
        let shuffle = 54 + u32::from(conditional);
        let parts = 3;
        setup(&mgr, shuffle, 1, parts).await;
        // Separate managers share nothing in-process: only storage arbitrates.
        let managers: Vec<StoreShuffleManager> = (0..6)
            .map(|i| {
                if conditional && i % 2 == 1 {
                    same_app(&mgr)
                } else {
                    mgr.clone()
                }
            })
            .collect();
        for m in &managers {
            setup(m, shuffle, 1, parts).await;
        }
        let tasks: Vec<_> = managers
            .into_iter()
            .enumerate()
            .map(|(a, m)| {
                tokio::spawn(async move {
                    let mut e = Expected::new();
                    let rows = vec![Bytes::from(format!("rows of attempt {a}"))];
                    e.insert((0, 1), rows);
                    write_map(&m, shuffle, 0, a as u32, parts, &e).await
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.expect("join").expect("commit"));
        }
        let winner = statuses[0].clone();
        for s in &statuses {
            assert_eq!(
                MapStatus {
                    raw_bytes: 0,
                    ..s.clone()
                },
                MapStatus {
                    raw_bytes: 0,
                    ..winner.clone()
                },
                "conditional={conditional}: every attempt reports one winner"
            );
        }
        let got = read_range(&mgr, shuffle, std::slice::from_ref(&winner), 0..parts)
            .await
            .expect("read");
        let want = format!("rows of attempt {}", winner.attempt);
        assert_eq!(got.get(&(0, 1)), Some(&vec![Bytes::from(want)]));
        let objects = objects_under(&mgr, &mgr.layout().shuffle_prefix(shuffle)).await;
        assert_eq!(objects, vec![winner.location.path.clone()], "no loser left");
        mgr.cleanup_app().await.expect("cleanup");
    }
    base.cleanup_app().await.expect("cleanup");
}

/// On a store without conditional create (one that ignores
/// `If-None-Match`), attempts get keys of their own and the first commit
/// wins in-process; statuses come back from storage by listing.
pub async fn store_without_conditional_writes(b: &dyn Backend) {
    let base = b.manager(fresh_config("no-conditional")).await;
    let (mgr, counting) = counting_manager(&base, false);
    setup(&mgr, 56, 2, 3).await;
    let mut a = Expected::new();
    a.insert((0, 1), vec![Bytes::from_static(b"attempt zero")]);
    let mut z = Expected::new();
    z.insert((0, 1), vec![Bytes::from_static(b"attempt one")]);
    let first = write_map(&mgr, 56, 0, 0, 3, &a).await.expect("commit 0");
    let second = write_map(&mgr, 56, 0, 1, 3, &z).await.expect("commit 1");
    assert_eq!(second.attempt, 0, "first attempt wins");
    assert_eq!(counting.lists(), 0, "committing never lists");
    assert_eq!(first.location, mgr.layout().data_key(56, 0, 0));
    let objects = objects_under(&mgr, &mgr.layout().shuffle_prefix(56)).await;
    assert_eq!(objects, vec![first.location.path.clone()], "loser removed");
    let lists = counting.lists();
    let stored = same_app(&mgr)
        .committed_map_status(56, 0)
        .await
        .expect("from storage");
    assert_eq!(
        stored,
        MapStatus {
            raw_bytes: 0,
            ..first.clone()
        }
    );
    assert_eq!(
        read_range(&mgr, 56, &[stored], 0..3).await.expect("read"),
        a
    );
    assert_eq!(counting.lists(), lists + 1, "the recovery path lists once");
    mgr.invalidate_map_output(56, 0, 0)
        .await
        .expect("invalidate");
    let rerun = write_map(&mgr, 56, 0, 2, 3, &z).await.expect("re-run");
    assert_eq!(rerun.attempt, 2, "the re-run wins after invalidation");
    assert_eq!(counting.lists(), lists + 1, "only the recovery path lists");
    mgr.cleanup_app().await.expect("cleanup");
    base.cleanup_app().await.expect("cleanup");
}

/// Torn writes: a dropped or aborted sink of `create_if_absent` leaves
/// nothing, and a data object whose footer is cut off is reported as
/// corrupt naming the object.
pub async fn torn_writes(b: &dyn Backend) {
    let mgr = b.manager(fresh_config("torn")).await;
    let store = mgr.store();
    if store.supports_conditional_create() {
        let key = mgr.layout().map_key(57, 0);
        let mut sink = store.create_if_absent(&key).await.expect("sink");
        sink.write(Bytes::from(vec![3u8; 1 << 20]))
            .await
            .expect("write");
        drop(sink);
        let mut sink = store.create_if_absent(&key).await.expect("sink");
        sink.write(Bytes::from_static(b"partial"))
            .await
            .expect("write");
        sink.abort().await.expect("abort");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(objects_under(&mgr, &mgr.layout().shuffle_prefix(57))
            .await
            .is_empty());
        // The key is still free: a real commit takes it, a second loses.
        let mut sink = store.create_if_absent(&key).await.expect("sink");
        sink.write(Bytes::from_static(b"first"))
            .await
            .expect("write");
        sink.finish().await.expect("publish");
        let mut sink = store.create_if_absent(&key).await.expect("sink");
        sink.write(Bytes::from_static(b"second"))
            .await
            .expect("write");
        let err = sink.finish().await.expect_err("taken");
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert_eq!(
            store.get(&key).await.expect("get"),
            Bytes::from_static(b"first")
        );
        assert_eq!(
            store.get_suffix(&key, 3).await.expect("suffix"),
            Bytes::from_static(b"rst")
        );
        assert_eq!(
            store.get_suffix(&key, 99).await.expect("suffix"),
            Bytes::from_static(b"first")
        );
        store.delete(&[key]).await.expect("delete");
    }
    setup(&mgr, 58, 1, 3).await;
    let mut e = Expected::new();
    e.insert((0, 2), vec![Bytes::from(vec![5u8; 1000])]);
    let status = write_all(&mgr, 58, 1, 3, &e).await.remove(0);
    damage(&mgr, &status, |b| b.truncate(b.len() - 3)).await;
    let err = same_app(&mgr)
        .committed_map_status(58, 0)
        .await
        .expect_err("cut footer");
    assert!(err.is_data_loss(), "{err}");
    assert!(
        matches!(err.root(), Error::Corrupt { object, .. } if object.contains(&status.location.path)),
        "{err}"
    );
    mgr.cleanup_app().await.expect("cleanup");
}

/// Cleanup deletes the keys the manager knows it wrote, without listing:
/// after `remove_shuffles` and `cleanup_app` nothing of the app is left
/// (committed outputs, a losing attempt, an aborted attempt, a writer
/// dropped mid-write, an all-empty output, spill files never read back, the
/// job marker), and neither made a single `list` or `delete_prefix`.
pub async fn cleanup_without_listing(b: &dyn Backend) {
    let mut cfg = fresh_config("known-keys");
    cfg.memory_limit = 4096;
    let base = b.manager(cfg).await;
    let counting = Arc::new(CountingStore::new(Arc::clone(base.store())));
    let store: Arc<dyn ShuffleStore> = counting.clone();
    let spill = Arc::new(crate::ObjectSpillStore::new(
        Arc::clone(&store),
        base.layout().spill_prefix(),
    ));
    let mgr = StoreShuffleManager::builder(Arc::clone(&store), base.config().clone())
        .spill_store(spill.clone())
        .build();
    let app = mgr.layout().app_prefix();
    let spills = mgr.layout().spill_prefix();

    setup(&mgr, 40, 3, 4).await;
    setup(&mgr, 41, 2, 2).await;
    setup(&mgr, 42, 1, 3).await;
    let e = random_blocks(40, 3, 4);
    write_all(&mgr, 40, 3, 4, &e).await;
    // A second attempt of map 0 loses the commit.
    let mut again = Expected::new();
    again.insert((0, 1), vec![Bytes::from_static(b"late attempt")]);
    let winner = write_map(&mgr, 40, 0, 1, 4, &again).await.expect("late");
    assert_eq!(winner.attempt, 0, "first attempt wins");
    // An aborted attempt, and one dropped mid-write.
    let mut w = mgr.map_writer(40, 1, 2).await.expect("writer");
    w.partition_writer(0)
        .await
        .expect("p")
        .write_block(&vec![1u8; 2 << 20])
        .await
        .expect("write");
    w.abort().await.expect("abort");
    let mut w = mgr.map_writer(40, 2, 3).await.expect("writer");
    w.partition_writer(0)
        .await
        .expect("p")
        .write_block(&vec![2u8; 2 << 20])
        .await
        .expect("write");
    drop(w);
    // Buffered writers that spill (spills read back and deleted), and an
    // all-empty output.
    let mut rng = StdRng::seed_from_u64(41);
    for m in 0..2 {
        let mut bw = mgr.buffered_writer(41, m, 0).await.expect("buffered");
        for i in 0..20u32 {
            let block: Vec<u8> = (0..1000).map(|_| rng.gen()).collect();
            bw.write_block(i % 2, &block, 1).await.expect("write");
        }
        bw.commit().await.expect("commit");
    }
    let empty = write_map(&mgr, 42, 0, 0, 3, &Expected::new())
        .await
        .expect("empty");
    assert_eq!(empty.total_bytes(), 0);
    // A spill file never read back (its task failed).
    let mut sw = crate::SpillWriter::create(mgr.spill_store(), mgr.metrics())
        .await
        .expect("spill");
    sw.write_block(b"orphaned").await.expect("write");
    let orphan = sw.finish().await.expect("finish");
    drop(orphan);

    let before = objects_under(&base, &app).await.len();
    // Stores whose listing is a directory walk may sweep; others never list.
    let max_lists = if store.cheap_listing() { u64::MAX } else { 0 };
    mgr.remove_shuffles(&[40, 41]).await.expect("remove");
    assert!(counting.lists() <= max_lists, "remove_shuffles listed");
    for s in [40, 41] {
        let left = objects_under(&base, &mgr.layout().shuffle_prefix(s)).await;
        assert!(left.is_empty(), "shuffle {s} left: {left:?}");
    }
    let removed = mgr.cleanup_app().await.expect("cleanup");
    assert!(counting.lists() <= max_lists, "cleanup_app listed");
    assert!(removed >= 1, "removed {removed} (the spill)");
    let left_app = objects_under(&base, &app).await;
    let left_spill = objects_under(&base, &spills).await;
    assert!(
        left_app.is_empty() && left_spill.is_empty(),
        "left after cleanup ({before} objects before): {left_app:?} {left_spill:?}"
    );
    assert!(mgr.known_keys().is_empty());
    assert_eq!(spill.live_files(), 0);
    // Nothing left to do: a second cleanup deletes nothing and still does not list.
    assert_eq!(mgr.cleanup_app().await.expect("cleanup again"), 0);
    assert!(counting.lists() <= max_lists);
}

/// Generates one `#[tokio::test]` per conformance check for a backend.
/// `$backend` is an expression of a type implementing [`Backend`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@each $backend;
            round_trip, empty_partitions, all_empty_map_output, every_contiguous_range,
            partition_writers_out_of_order_rejected, first_attempt_wins, abort_leaves_nothing,
            remove_leaves_nothing, concurrent_writers, spilling_is_byte_identical,
            byte_stream_round_trip, flipped_byte_is_checksum_mismatch,
            truncated_object_is_reported, status_from_storage_and_small_fetches,
            invalidated_output_can_be_replaced, cleanup_removes_spills, job_marker_lifecycle,
            cleanup_without_listing, one_write_per_map_output, all_empty_output_writes_nothing,
            racing_attempts, store_without_conditional_writes, torn_writes);
    };
    (@each $backend:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let backend = $backend;
                $crate::testing::$check(&backend).await;
            }
        )*
    };
}
