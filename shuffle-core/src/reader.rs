//! The shuffle reader: a contiguous partition range of many map outputs.
//!
//! ```text
//!  statuses ─▶ fetch plan: one ranged read per non-empty map output
//!              (split into chunk_bytes pieces) ── in map order
//!     producer task: takes byte permits (max_bytes_in_flight), spawns the
//!                    read, queues it (max_requests_in_flight deep)
//!     consumer (the stream): awaits reads in order, walks partition
//!                    boundaries from the status lengths, checks each
//!                    partition's crc32 and each frame's crc32, decodes
//!                    frames, yields blocks, then frees the byte permits
//! ```
//!
//! The reader never needs the index object: a map status's lengths give the
//! byte range of any contiguous partition range. Reads run ahead of the
//! consumer by at most `max_bytes_in_flight` stored bytes, so memory stays
//! bounded however many map outputs there are. Every failure is reported as
//! [`Error::FetchFailed`] naming the shuffle, map and attempt.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::format::frame::{decode_frame, FrameDecoder};
use crate::metrics::{add, ShuffleMetrics};
use crate::status::MapStatus;
use crate::store::{ObjectKey, ShuffleStore};
use crate::{Error, Result};

/// One block as written by a map task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub map_id: u32,
    pub partition: u32,
    pub data: Bytes,
}

/// Bounds on a reader's run-ahead.
#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    pub max_bytes_in_flight: u64,
    pub max_requests_in_flight: usize,
    pub chunk_bytes: u64,
}

/// Permits count KiB so that large budgets fit a semaphore.
const PERMIT_UNIT: u64 = 1024;

/// One ranged read of the plan.
struct Fetch {
    map: usize,
    key: ObjectKey,
    range: Range<u64>,
    kind: FetchKind,
}

#[derive(Clone)]
enum FetchKind {
    /// Whole partitions: checked and decoded in the fetch task itself, so
    /// decompression runs in parallel and ahead of the consumer.
    Whole {
        partitions: Range<u32>,
        lengths: Vec<u64>,
        checksums: Vec<u32>,
        map_id: u32,
        object: String,
    },
    /// A piece of one partition larger than `chunk_bytes`, decoded by the
    /// consumer as pieces arrive; `first` starts the partition.
    Piece { partition: u32, first: bool },
}

enum Payload {
    Blocks(Vec<Block>),
    Raw(Bytes),
}

struct Fetched {
    map: usize,
    kind: FetchKind,
    task: JoinHandle<Result<Payload>>,
    _permit: OwnedSemaphorePermit,
}

/// Per-map decoding state while its bytes stream in.
struct MapCursor {
    map: usize,
    object: String,
    partition: u32,
    /// Stored bytes of `partition` not yet seen.
    left_in_partition: u64,
    crc: crc32fast::Hasher,
    decoder: FrameDecoder,
    /// A frame error seen mid-partition, reported once the partition's
    /// checksum has been checked.
    poisoned: Option<Error>,
}

struct State {
    store: Arc<dyn ShuffleStore>,
    metrics: Arc<ShuffleMetrics>,
    shuffle_id: u32,
    maps: Vec<MapStatus>,
    partitions: Range<u32>,
    rx: mpsc::Receiver<Fetched>,
    cursor: Option<MapCursor>,
    ready: VecDeque<Block>,
    failed: bool,
}

/// A stream of [`Block`]s; see the module docs.
pub struct ShuffleReader {
    inner: Pin<Box<dyn Stream<Item = Result<Block>> + Send>>,
    total_bytes: u64,
    requests: u64,
}

impl std::fmt::Debug for ShuffleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShuffleReader")
            .field("total_bytes", &self.total_bytes)
            .field("requests", &self.requests)
            .finish()
    }
}

impl ShuffleReader {
    pub fn new(
        store: Arc<dyn ShuffleStore>,
        metrics: Arc<ShuffleMetrics>,
        shuffle_id: u32,
        maps: Vec<MapStatus>,
        partitions: Range<u32>,
        opts: ReaderOptions,
    ) -> Result<Self> {
        if partitions.start > partitions.end {
            return Err(Error::Protocol(format!(
                "empty or reversed partition range {partitions:?}"
            )));
        }
        for m in &maps {
            if m.shuffle_id != shuffle_id {
                return Err(Error::Protocol(format!(
                    "map status of shuffle {} given to a reader of shuffle {shuffle_id}",
                    m.shuffle_id
                )));
            }
            if partitions.end > m.num_partitions() || m.checksums.len() != m.lengths.len() {
                return Err(Error::Protocol(format!(
                    "partitions {partitions:?} out of range for map {} with {} partitions",
                    m.map_id,
                    m.num_partitions()
                )));
            }
        }
        let chunk = opts.chunk_bytes.max(1);
        let mut plan = Vec::new();
        let mut total_bytes = 0;
        for (i, m) in maps.iter().enumerate() {
            let r = m.byte_range(partitions.clone());
            total_bytes += r.end - r.start;
            plan_map(&mut plan, i, m, &store, partitions.clone(), r.start, chunk);
        }
        let requests = plan.len() as u64;
        let depth = opts.max_requests_in_flight.max(1);
        let budget_units = (opts.max_bytes_in_flight / PERMIT_UNIT).clamp(1, u32::MAX as u64 >> 4);
        let (tx, rx) = mpsc::channel(depth);
        if !plan.is_empty() {
            let store = Arc::clone(&store);
            let semaphore = Arc::new(Semaphore::new(budget_units as usize));
            tokio::spawn(produce(store, plan, semaphore, budget_units, tx));
        }
        let state = State {
            store,
            metrics,
            shuffle_id,
            maps,
            partitions,
            rx,
            cursor: None,
            ready: VecDeque::new(),
            failed: false,
        };
        let inner = futures::stream::unfold(state, |mut st| async move {
            if st.failed {
                return None;
            }
            match st.next_block().await {
                Ok(Some(b)) => Some((Ok(b), st)),
                Ok(None) => None,
                Err(e) => {
                    st.failed = true;
                    Some((Err(e), st))
                }
            }
        });
        Ok(Self {
            inner: Box::pin(inner),
            total_bytes,
            requests,
        })
    }

    /// Stored bytes this reader will fetch.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Ranged reads this reader issues, retries not counted: one per chunk
    /// of each map output's byte range (an empty range needs none).
    pub fn planned_requests(&self) -> u64 {
        self.requests
    }
}

impl Stream for ShuffleReader {
    type Item = Result<Block>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

async fn produce(
    store: Arc<dyn ShuffleStore>,
    plan: Vec<Fetch>,
    semaphore: Arc<Semaphore>,
    budget_units: u64,
    tx: mpsc::Sender<Fetched>,
) {
    for f in plan {
        let len = f.range.end - f.range.start;
        let units = len.div_ceil(PERMIT_UNIT).clamp(1, budget_units) as u32;
        let Ok(permit) = Arc::clone(&semaphore).acquire_many_owned(units).await else {
            return;
        };
        let store = Arc::clone(&store);
        let kind = f.kind.clone();
        let (key, range) = (f.key, f.range);
        let task = tokio::spawn(async move {
            let data = store.get_range(&key, range.clone()).await?;
            if data.len() as u64 != len {
                return Err(Error::corrupt(
                    store.describe(&key),
                    format!(
                        "truncated in partition {}: expected {len} bytes at offset {}, read {}",
                        short_partition(&kind, data.len() as u64),
                        range.start,
                        data.len()
                    ),
                ));
            }
            match kind {
                FetchKind::Whole {
                    partitions,
                    lengths,
                    checksums,
                    map_id,
                    object,
                } => {
                    let mut blocks = Vec::new();
                    let mut data = data;
                    for (i, p) in partitions.enumerate() {
                        let segment = data.split_to(lengths[i] as usize);
                        decode_segment(segment, &object, map_id, p, checksums[i], &mut blocks)?;
                    }
                    Ok(Payload::Blocks(blocks))
                }
                FetchKind::Piece { .. } => Ok(Payload::Raw(data)),
            }
        });
        let fetched = Fetched {
            map: f.map,
            kind: f.kind,
            task,
            _permit: permit,
        };
        if tx.send(fetched).await.is_err() {
            return; // the reader was dropped
        }
    }
}

/// The partition of a fetch whose bytes end after the first `got` bytes
/// (the first one a short read leaves incomplete).
fn short_partition(kind: &FetchKind, got: u64) -> u32 {
    match kind {
        FetchKind::Whole {
            partitions,
            lengths,
            ..
        } => {
            let mut end = 0;
            for (p, len) in partitions.clone().zip(lengths) {
                end += len;
                if end > got {
                    return p;
                }
            }
            partitions.end.saturating_sub(1)
        }
        FetchKind::Piece { partition, .. } => *partition,
    }
}

/// Splits one map output's partition range into reads of at most `chunk`
/// bytes: runs of whole partitions, or pieces of one large partition.
fn plan_map(
    plan: &mut Vec<Fetch>,
    i: usize,
    m: &MapStatus,
    store: &Arc<dyn ShuffleStore>,
    partitions: Range<u32>,
    mut offset: u64,
    chunk: u64,
) {
    let object = store.describe(&m.location);
    let mut run: Option<(u32, u64)> = None; // (first partition, start offset)
    let flush = |plan: &mut Vec<Fetch>, run: &mut Option<(u32, u64)>, end_p: u32, end: u64| {
        if let Some((p0, start)) = run.take() {
            let range = p0 as usize..end_p as usize;
            plan.push(Fetch {
                map: i,
                key: m.location.clone(),
                range: start..end,
                kind: FetchKind::Whole {
                    partitions: p0..end_p,
                    lengths: m.lengths[range.clone()].to_vec(),
                    checksums: m.checksums[range].to_vec(),
                    map_id: m.map_id,
                    object: object.clone(),
                },
            });
        }
    };
    for p in partitions.clone() {
        let len = m.lengths[p as usize];
        if len > chunk {
            flush(plan, &mut run, p, offset);
            let mut start = offset;
            while start < offset + len {
                let end = (start + chunk).min(offset + len);
                plan.push(Fetch {
                    map: i,
                    key: m.location.clone(),
                    range: start..end,
                    kind: FetchKind::Piece {
                        partition: p,
                        first: start == offset,
                    },
                });
                start = end;
            }
        } else if len > 0 {
            if let Some((_, start)) = run {
                if offset + len - start > chunk {
                    flush(plan, &mut run, p, offset);
                }
            }
            if run.is_none() {
                run = Some((p, offset));
            }
        }
        offset += len;
    }
    flush(plan, &mut run, partitions.end, offset);
}

/// Checks one whole partition segment and decodes its frames. The segment
/// checksum speaks first, so any damaged byte is reported as a mismatch
/// naming the partition.
fn decode_segment(
    segment: Bytes,
    object: &str,
    map_id: u32,
    partition: u32,
    expected: u32,
    out: &mut Vec<Block>,
) -> Result<()> {
    let actual = crc32fast::hash(&segment);
    if actual != expected {
        return Err(Error::ChecksumMismatch {
            object: object.to_string(),
            partition,
            expected,
            actual,
        });
    }
    let mut decoder = FrameDecoder::new(object);
    for frame in decoder.push_bytes(segment)? {
        out.push(Block {
            map_id,
            partition,
            data: decode_frame(&frame, object, partition)?,
        });
    }
    if decoder.buffered() != 0 {
        return Err(Error::corrupt(
            object,
            format!("partition {partition} ends inside a frame"),
        ));
    }
    Ok(())
}

impl State {
    fn fetch_failed(&self, map: usize, source: Error) -> Error {
        let m = &self.maps[map];
        Error::FetchFailed {
            shuffle_id: self.shuffle_id,
            map_id: m.map_id,
            attempt: m.attempt,
            source: Box::new(source),
        }
    }

    async fn next_block(&mut self) -> Result<Option<Block>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                add(&self.metrics.shuffle.raw_bytes_read, b.data.len() as u64);
                add(&self.metrics.shuffle.frames_read, 1);
                return Ok(Some(b));
            }
            let waited = Instant::now();
            let Some(fetched) = self.rx.recv().await else {
                if let Some(c) = &self.cursor {
                    if c.left_in_partition > 0 || c.decoder.buffered() > 0 {
                        let e = Error::corrupt(
                            c.object.clone(),
                            format!("map output ended early in partition {}", c.partition),
                        );
                        return Err(self.fetch_failed(c.map, e));
                    }
                }
                return Ok(None);
            };
            let map = fetched.map;
            let payload = match fetched.task.await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => return Err(self.fetch_failed(map, e)),
                Err(e) => {
                    let err = Error::Protocol(format!("fetch task failed: {e}"));
                    return Err(self.fetch_failed(map, err));
                }
            };
            add(
                &self.metrics.shuffle.fetch_wait_ns,
                waited.elapsed().as_nanos() as u64,
            );
            match (payload, fetched.kind) {
                (Payload::Blocks(blocks), FetchKind::Whole { lengths, .. }) => {
                    add(&self.metrics.shuffle.bytes_read, lengths.iter().sum());
                    self.ready.extend(blocks);
                }
                (Payload::Raw(data), FetchKind::Piece { partition, first }) => {
                    add(&self.metrics.shuffle.bytes_read, data.len() as u64);
                    if let Err(e) = self.consume(map, partition, first, data) {
                        return Err(self.fetch_failed(map, e));
                    }
                }
                _ => {
                    let err = Error::Protocol("fetch payload does not match its plan".into());
                    return Err(self.fetch_failed(map, err));
                }
            }
        }
    }

    /// Feeds the next piece of one large partition of map `map`.
    fn consume(&mut self, map: usize, partition: u32, first: bool, mut data: Bytes) -> Result<()> {
        if first {
            if let Some(c) = &self.cursor {
                if c.left_in_partition > 0 || c.decoder.buffered() > 0 {
                    return Err(Error::corrupt(
                        c.object.clone(),
                        format!("map output ended early in partition {}", c.partition),
                    ));
                }
            }
            let m = &self.maps[map];
            let object = self.store.describe(&m.location);
            self.cursor = Some(MapCursor {
                map,
                decoder: FrameDecoder::new(object.clone()),
                object,
                partition,
                left_in_partition: m.lengths[partition as usize],
                crc: crc32fast::Hasher::new(),
                poisoned: None,
            });
        }
        let m = &self.maps[map];
        let Some(c) = self.cursor.as_mut() else {
            return Ok(());
        };
        while !data.is_empty() {
            // Skip empty partitions.
            while c.left_in_partition == 0 {
                c.partition += 1;
                if c.partition >= self.partitions.end {
                    return Err(Error::corrupt(
                        c.object.clone(),
                        "more bytes than the map status says",
                    ));
                }
                c.left_in_partition = m.lengths[c.partition as usize];
            }
            let take = (c.left_in_partition as usize).min(data.len());
            let piece = data.split_to(take);
            c.crc.update(&piece);
            c.left_in_partition -= take as u64;
            if c.poisoned.is_none() {
                match c.decoder.push_bytes(piece) {
                    Ok(frames) => {
                        for frame in frames {
                            match decode_frame(&frame, &c.object, c.partition) {
                                Ok(block) => self.ready.push_back(Block {
                                    map_id: m.map_id,
                                    partition: c.partition,
                                    data: block,
                                }),
                                Err(e) => {
                                    c.poisoned = Some(e);
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => c.poisoned = Some(e),
                }
            }
            if c.left_in_partition == 0 {
                // The segment checksum speaks first: a damaged byte anywhere in
                // the partition is reported as a mismatch naming it.
                let actual = std::mem::replace(&mut c.crc, crc32fast::Hasher::new()).finalize();
                let expected = m.checksums[c.partition as usize];
                if actual != expected {
                    self.ready.clear();
                    return Err(Error::ChecksumMismatch {
                        object: c.object.clone(),
                        partition: c.partition,
                        expected,
                        actual,
                    });
                }
                if let Some(e) = c.poisoned.take() {
                    self.ready.clear();
                    return Err(e);
                }
                if c.decoder.buffered() != 0 {
                    return Err(Error::corrupt(
                        c.object.clone(),
                        format!("partition {} ends inside a frame", c.partition),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_read_names_the_first_incomplete_partition() {
        // Partitions 3..7 of lengths 10, 0, 5, 0: bytes 0..10 are partition 3,
        // 10..15 partition 5.
        let whole = FetchKind::Whole {
            partitions: 3..7,
            lengths: vec![10, 0, 5, 0],
            checksums: vec![0; 4],
            map_id: 0,
            object: "o".into(),
        };
        let cases = [(0, 3), (9, 3), (10, 5), (14, 5)];
        for (got, want) in cases {
            assert_eq!(short_partition(&whole, got), want, "{got} bytes read");
        }
        let piece = FetchKind::Piece {
            partition: 4,
            first: false,
        };
        assert_eq!(short_partition(&piece, 0), 4);
    }
}
