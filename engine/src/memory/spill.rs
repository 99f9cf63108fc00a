//! Writing and reading back batches through the `SpillStore`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use shuffle_core::{SpillFile, SpillReader, SpillStore, SpillWriter};

use crate::error::Result;
use crate::exchange::codec::{decode_batch, BatchEncoder};
use crate::exchange::hash::{bucket, hash_columns, SEED_SPILL};
use crate::exchange::split_by_index;
use crate::expr::PhysicalExpr;
use crate::metrics::TaskMetrics;
use crate::runtime::TaskContext;

/// A run of spilled batches. It owns its file: a run dropped without being
/// read back (its task failed, or stopped early) deletes the file, so spills
/// of failed tasks do not wait for the app's cleanup.
#[derive(Debug)]
pub struct SpillRun {
    file: Option<SpillFile>,
    store: Arc<dyn SpillStore>,
    pub rows: usize,
}

impl SpillRun {
    /// The spill file (for errors and tests).
    pub fn file(&self) -> Option<&SpillFile> {
        self.file.as_ref()
    }

    /// Hands the file to a reader, which deletes it once read or dropped.
    fn take(mut self) -> Option<SpillFile> {
        self.file.take()
    }
}

impl Drop for SpillRun {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        // Best effort, as for SpillReader: delete in the background.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            handle.spawn(async move {
                if let Err(e) = store.delete(&file).await {
                    tracing::warn!(spill = %file.id, error = %e, "could not delete spill file");
                }
            });
        }
    }
}

/// Writes batches to one spill file.
pub struct BatchSpillWriter {
    writer: SpillWriter,
    encoder: BatchEncoder,
    buf: Vec<u8>,
    rows: usize,
    ctx: Arc<TaskContext>,
}

impl std::fmt::Debug for BatchSpillWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSpillWriter")
            .field("rows", &self.rows)
            .finish()
    }
}

impl BatchSpillWriter {
    pub async fn create(ctx: &Arc<TaskContext>) -> Result<Self> {
        let writer = SpillWriter::create(ctx.spill_store(), ctx.manager.metrics())
            .await?
            .with_codec(ctx.manager.codec());
        Ok(Self {
            writer,
            encoder: BatchEncoder::new(),
            buf: Vec::new(),
            rows: 0,
            ctx: Arc::clone(ctx),
        })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.encoder.encode_into(batch, &mut self.buf)?;
        self.writer.write_block(&self.buf).await?;
        self.rows += batch.num_rows();
        Ok(())
    }

    pub async fn finish(self) -> Result<SpillRun> {
        let bytes = self.writer.bytes_written();
        let file = self.writer.finish().await?;
        TaskMetrics::add(&self.ctx.metrics.spill_bytes, bytes);
        TaskMetrics::add(&self.ctx.metrics.spill_count, 1);
        Ok(SpillRun {
            file: Some(file),
            store: Arc::clone(self.ctx.spill_store()),
            rows: self.rows,
        })
    }
}

/// Reads a spilled run back batch by batch (the file is deleted once read).
pub struct BatchSpillReader {
    reader: Option<SpillReader>,
    schema: SchemaRef,
}

impl std::fmt::Debug for BatchSpillReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchSpillReader")
    }
}

impl BatchSpillReader {
    pub fn open(ctx: &TaskContext, run: SpillRun, schema: SchemaRef) -> Self {
        let reader = run.take().map(|file| {
            SpillReader::open(Arc::clone(ctx.spill_store()), file, ctx.manager.metrics())
        });
        Self { reader, schema }
    }

    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        match reader.next_block().await? {
            Some(b) => Ok(Some(decode_batch(b, &self.schema)?)),
            None => Ok(None),
        }
    }

    /// Reads every remaining batch.
    pub async fn read_all(mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next().await? {
            out.push(b);
        }
        Ok(out)
    }
}

/// Number of grace-hash buckets used when a hash table spills.
pub const SPILL_BUCKETS: usize = 16;

/// Spills batches into [`SPILL_BUCKETS`] files by the hash of `keys`.
pub struct BucketSpiller {
    keys: Vec<PhysicalExpr>,
    writers: Vec<Option<BatchSpillWriter>>,
    hashes: Vec<u64>,
    ctx: Arc<TaskContext>,
}

impl std::fmt::Debug for BucketSpiller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BucketSpiller")
    }
}

impl BucketSpiller {
    pub fn new(ctx: &Arc<TaskContext>, keys: Vec<PhysicalExpr>) -> Self {
        Self {
            keys,
            writers: (0..SPILL_BUCKETS).map(|_| None).collect(),
            hashes: Vec::new(),
            ctx: Arc::clone(ctx),
        }
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let cols = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch))
            .collect::<Result<Vec<_>>>()?;
        hash_columns(&cols, SEED_SPILL, &mut self.hashes)?;
        let parts: Vec<u32> = self
            .hashes
            .iter()
            .map(|h| bucket(*h, SPILL_BUCKETS) as u32)
            .collect();
        let mut pieces = Vec::new();
        split_by_index(batch, &parts, SPILL_BUCKETS, |p, b| {
            pieces.push((p, b));
            Ok::<_, crate::EngineError>(())
        })?;
        for (p, b) in pieces {
            if self.writers[p].is_none() {
                self.writers[p] = Some(BatchSpillWriter::create(&self.ctx).await?);
            }
            if let Some(w) = self.writers[p].as_mut() {
                w.write(&b).await?;
            }
        }
        Ok(())
    }

    /// Finishes every bucket; `None` for buckets that received nothing.
    pub async fn finish(self) -> Result<Vec<Option<SpillRun>>> {
        let mut out = Vec::with_capacity(SPILL_BUCKETS);
        for w in self.writers {
            out.push(match w {
                Some(w) => Some(w.finish().await?),
                None => None,
            });
        }
        Ok(out)
    }
}
