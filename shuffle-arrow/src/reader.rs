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

use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
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
}

impl Stream for BatchReader {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let block = match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                return Poll::Ready(Some(Err(Error::Shuffle(e))));
            }
            Poll::Ready(Some(Ok(block))) => block,
        };
        let len = block.data.len() as u64;
        match decode_batch(block.data, &this.schema) {
            Ok(batch) => {
                this.stats.blocks += 1;
                this.stats.records += batch.num_rows() as u64;
                this.stats.encoded_bytes += len;
                Poll::Ready(Some(Ok(batch)))
            }
            Err(Error::MalformedBlock { reason, .. }) => {
                this.done = true;
                Poll::Ready(Some(Err(Error::MalformedBlock {
                    at: format!(
                        " in shuffle {} map {} partition {}",
                        this.shuffle_id, block.map_id, block.partition
                    ),
                    reason,
                })))
            }
            Err(e) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}
