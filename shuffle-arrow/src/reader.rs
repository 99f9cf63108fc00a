//! A contiguous partition range of committed map outputs, as record batches.
//!
//! ```text
//!  manager.reader(shuffle, statuses, partitions) ─▶ Block { map, partition, bytes }
//!        ─▶ decode_batch(bytes, schema) ─▶ RecordBatch      (map order, then partition order)
//! ```
//!
//! Fetch failures are shuffle-core's [`shuffle_core::Error::FetchFailed`]
//! (naming the shuffle, map, attempt and object); a block that does not
//! decode is an [`Error::MalformedBlock`] naming the shuffle, map and
//! partition. The stream ends after its first error.
//!
//! A block holds what one map task wrote for one partition, often a few
//! hundred rows. [`BatchReader::coalesce_to`] makes the stream yield batches
//! of the engine's batch size instead (arrow's `BatchCoalescer`), as
//! DataFusion's own `RepartitionExec` does: operators downstream pay per
//! batch, and an exchange that yields 8x more batches than the one it
//! replaced slows every operator above it.

use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::compute::BatchCoalescer;
use arrow::datatypes::SchemaRef;
use futures::Stream;
use shuffle_core::{MapStatus, ShuffleManager, ShuffleReader};

use crate::codec::decode_batch;
use crate::error::{Error, Result};

/// What a [`BatchReader`] has read so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Blocks decoded.
    pub blocks: u64,
    /// Rows decoded.
    pub records: u64,
    /// Encoded (IPC, decompressed) bytes of those blocks.
    pub encoded_bytes: u64,
}

/// A stream of the record batches of a partition range (see the module docs).
pub struct BatchReader {
    inner: ShuffleReader,
    shuffle_id: u32,
    schema: SchemaRef,
    stats: ReadStats,
    /// Set by [`BatchReader::coalesce_to`].
    coalescer: Option<BatchCoalescer>,
    /// No more blocks: the inner reader ended (its last rows may still be
    /// in the coalescer).
    input_done: bool,
    /// Nothing more to yield (after the last batch or the first error).
    done: bool,
}

impl std::fmt::Debug for BatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReader")
            .field("shuffle_id", &self.shuffle_id)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Reads partitions `partitions` of every map output in `maps` (statuses
/// returned by commits of `shuffle_id`), decoding blocks with `schema`.
pub fn read_partitions<M: ShuffleManager + ?Sized>(
    manager: &M,
    shuffle_id: u32,
    maps: Vec<MapStatus>,
    partitions: Range<u32>,
    schema: SchemaRef,
) -> Result<BatchReader> {
    let inner = manager.reader(shuffle_id, maps, partitions)?;
    Ok(BatchReader {
        inner,
        shuffle_id,
        schema,
        stats: ReadStats::default(),
        coalescer: None,
        input_done: false,
        done: false,
    })
}

impl BatchReader {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Stored (compressed) bytes this reader fetches in all.
    pub fn stored_bytes(&self) -> u64 {
        self.inner.total_bytes()
    }

    /// Ranged reads this reader issues, retries not counted.
    pub fn planned_requests(&self) -> u64 {
        self.inner.planned_requests()
    }

    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// Yields batches of about `rows` rows instead of one batch per block:
    /// small blocks are copied together into batches of `rows`; a block of
    /// more than half `rows` passes through whole and uncopied when little
    /// is buffered (arrow's `biggest_coalesce_batch_size`), so it may be
    /// larger. The last batch may be shorter. Row order is kept.
    pub fn coalesce_to(mut self, rows: usize) -> Self {
        let rows = rows.max(1);
        self.coalescer = Some(
            BatchCoalescer::new(self.schema.clone(), rows)
                .with_biggest_coalesce_batch_size(Some(rows / 2)),
        );
        self
    }

    /// The next block, decoded; `None` at the end of the input.
    fn poll_block(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        let block = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Error::Shuffle(e)))),
            Poll::Ready(Some(Ok(block))) => block,
        };
        let len = block.data.len() as u64;
        Poll::Ready(Some(match decode_batch(block.data, &self.schema) {
            Ok(batch) => {
                self.stats.blocks += 1;
                self.stats.records += batch.num_rows() as u64;
                self.stats.encoded_bytes += len;
                Ok(batch)
            }
            Err(Error::MalformedBlock { reason, .. }) => Err(Error::MalformedBlock {
                at: format!(
                    " in shuffle {} map {} partition {}",
                    self.shuffle_id, block.map_id, block.partition
                ),
                reason,
            }),
            Err(e) => Err(e),
        }))
    }
}

impl Stream for BatchReader {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(c) = this.coalescer.as_mut() {
                if let Some(batch) = c.next_completed_batch() {
                    return Poll::Ready(Some(Ok(batch)));
                }
            }
            if this.input_done {
                match this.coalescer.as_mut() {
                    Some(c) if !c.is_empty() => {
                        if let Err(e) = c.finish_buffered_batch() {
                            this.done = true;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        continue;
                    }
                    _ => {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                }
            }
            match this.poll_block(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.input_done = true,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(batch))) => match this.coalescer.as_mut() {
                    None => return Poll::Ready(Some(Ok(batch))),
                    Some(c) => {
                        if let Err(e) = c.push_batch(batch) {
                            this.done = true;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                },
            }
        }
    }
}
