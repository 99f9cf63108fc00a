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
use crate::manager::MapStatus;
use crate::metrics::{add, ShuffleMetrics};
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

struct Fetch {
    map: usize,
    key: ObjectKey,
    range: Range<u64>,
}

struct Fetched {
    map: usize,
    expected: u64,
    task: JoinHandle<Result<Bytes>>,
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
}

impl std::fmt::Debug for ShuffleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShuffleReader")
            .field("total_bytes", &self.total_bytes)
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
            let mut start = r.start;
            while start < r.end {
                let end = (start + chunk).min(r.end);
                plan.push(Fetch {
                    map: i,
                    key: m.location.clone(),
                    range: start..end,
                });
                start = end;
            }
        }
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
        })
    }

    /// Stored bytes this reader will fetch.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
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
        let (key, range) = (f.key, f.range);
        let task = tokio::spawn(async move { store.get_range(&key, range).await });
        let fetched = Fetched {
            map: f.map,
            expected: len,
            task,
            _permit: permit,
        };
        if tx.send(fetched).await.is_err() {
            return; // the reader was dropped
        }
    }
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
                        let e = Error::corrupt(c.object.clone(), "map output ended early");
                        return Err(self.fetch_failed(c.map, e));
                    }
                }
                return Ok(None);
            };
            let map = fetched.map;
            let data = match fetched.task.await {
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
            add(&self.metrics.shuffle.bytes_read, data.len() as u64);
            if data.len() as u64 != fetched.expected {
                let object = self.store.describe(&self.maps[map].location);
                let e = Error::corrupt(
                    object,
                    format!(
                        "truncated: expected {} bytes, read {}",
                        fetched.expected,
                        data.len()
                    ),
                );
                return Err(self.fetch_failed(map, e));
            }
            if let Err(e) = self.consume(map, data) {
                return Err(self.fetch_failed(map, e));
            }
        }
    }

    /// Feeds the next bytes of map `map`, splitting at partition boundaries.
    fn consume(&mut self, map: usize, mut data: Bytes) -> Result<()> {
        if self.cursor.as_ref().map(|c| c.map) != Some(map) {
            if let Some(c) = &self.cursor {
                if c.left_in_partition > 0 || c.decoder.buffered() > 0 {
                    return Err(Error::corrupt(c.object.clone(), "map output ended early"));
                }
            }
            let m = &self.maps[map];
            let object = self.store.describe(&m.location);
            self.cursor = Some(MapCursor {
                map,
                decoder: FrameDecoder::new(object.clone()),
                object,
                partition: self.partitions.start,
                left_in_partition: m.lengths[self.partitions.start as usize],
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
