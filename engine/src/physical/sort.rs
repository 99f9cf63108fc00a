//! Sort (optionally top-k) with external merge.
//!
//! Each partition buffers its input under a reservation. When the pool
//! refuses to grow, the buffer is sorted and spilled as a run; at the end the
//! runs (plus what is still in memory) are merged k-way by the row-format
//! sort key. A `fetch` keeps only the first k rows (compacting as it goes).
//!
//! A global ORDER BY is planned as: local sort (with fetch) in every map task
//! → exchange to a single partition → final sort of that partition.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, interleave_record_batch, take_record_batch, SortOptions};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use futures::StreamExt;

use super::util::{generate, Emitter};
use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::Result;
use crate::expr::PhysicalExpr;
use crate::memory::spill::{BatchSpillReader, BatchSpillWriter, SpillRun};

#[derive(Debug)]
pub struct SortExec {
    pub input: Arc<dyn ExecutionPlan>,
    pub keys: Vec<(PhysicalExpr, SortOptions)>,
    pub fetch: Option<usize>,
}

impl ExecutionPlan for SortExec {
    fn name(&self) -> &'static str {
        "Sort"
    }
    fn describe(&self) -> String {
        format!("Sort: {} keys, fetch {:?}", self.keys.len(), self.fetch)
    }
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
    fn output_partitions(&self) -> usize {
        self.input.output_partitions()
    }
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        vec![Arc::clone(&self.input)]
    }
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream> {
        let input = crate::physical::execute(&self.input, partition, Arc::clone(&ctx))?;
        let op = SortOp {
            keys: self.keys.clone(),
            fetch: self.fetch,
            schema: self.input.schema(),
        };
        Ok(generate(move |out| op.run(input, ctx, out)))
    }
}

#[derive(Debug, Clone)]
struct SortOp {
    keys: Vec<(PhysicalExpr, SortOptions)>,
    fetch: Option<usize>,
    schema: SchemaRef,
}

impl SortOp {
    fn converter(&self) -> Result<RowConverter> {
        let fields = self
            .keys
            .iter()
            .map(|(e, o)| Ok(SortField::new_with_options(e.data_type(&self.schema)?, *o)))
            .collect::<Result<Vec<_>>>()?;
        Ok(RowConverter::new(fields)?)
    }

    fn key_rows(&self, conv: &RowConverter, b: &RecordBatch) -> Result<Rows> {
        let cols = self
            .keys
            .iter()
            .map(|(e, _)| e.evaluate(b))
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(conv.convert_columns(&cols)?)
    }

    /// Sorts batches into one batch (first `fetch` rows only).
    fn sort_batches(&self, conv: &RowConverter, batches: &[RecordBatch]) -> Result<RecordBatch> {
        let b = concat_batches(&self.schema, batches)?;
        let rows = self.key_rows(conv, &b)?;
        let mut idx: Vec<u32> = (0..b.num_rows() as u32).collect();
        let cmp = |a: &u32, c: &u32| {
            rows.row(*a as usize)
                .cmp(&rows.row(*c as usize))
                .then(a.cmp(c))
        };
        match self.fetch {
            Some(k) if k < idx.len() => {
                if k == 0 {
                    idx.clear();
                } else {
                    idx.select_nth_unstable_by(k - 1, cmp);
                    idx.truncate(k);
                    idx.sort_unstable_by(cmp);
                }
            }
            _ => idx.sort_unstable_by(cmp),
        }
        Ok(take_record_batch(&b, &UInt32Array::from(idx))?)
    }

    async fn run(
        self,
        mut input: BatchStream,
        ctx: Arc<TaskContext>,
        mut out: Emitter,
    ) -> Result<()> {
        let conv = self.converter()?;
        let mut reservation = ctx.reservation("sort");
        let bs = ctx.batch_size();
        let mut buffer: Vec<RecordBatch> = Vec::new();
        let mut buffered_rows = 0usize;
        let mut runs: Vec<SpillRun> = Vec::new();
        while let Some(b) = input.next().await {
            let b = b?;
            let sz = b.get_array_memory_size();
            if reservation.try_grow(sz).is_err() && !buffer.is_empty() {
                let sorted = self.sort_batches(&conv, &buffer)?;
                buffer.clear();
                buffered_rows = 0;
                runs.push(self.spill(&ctx, &sorted, bs).await?);
                reservation.free();
                reservation.grow(sz);
            } else if reservation.size() < sz {
                reservation.grow(sz);
            }
            buffered_rows += b.num_rows();
            buffer.push(b);
            if let Some(k) = self.fetch {
                if buffered_rows > (2 * k).max(bs) {
                    let top = self.sort_batches(&conv, &buffer)?;
                    buffered_rows = top.num_rows();
                    reservation.resize(top.get_array_memory_size());
                    buffer = vec![top];
                }
            }
        }
        drop(input);
        if runs.is_empty() {
            if buffer.is_empty() {
                return Ok(());
            }
            let sorted = self.sort_batches(&conv, &buffer)?;
            drop(buffer);
            let mut off = 0;
            while off < sorted.num_rows() {
                let len = bs.min(sorted.num_rows() - off);
                if !out.emit(sorted.slice(off, len)).await {
                    return Ok(());
                }
                off += len;
            }
            return Ok(());
        }
        if !buffer.is_empty() {
            let sorted = self.sort_batches(&conv, &buffer)?;
            buffer.clear();
            runs.push(self.spill(&ctx, &sorted, bs).await?);
        }
        reservation.free();
        self.merge(&ctx, &conv, runs, bs, &mut out).await
    }

    async fn spill(
        &self,
        ctx: &Arc<TaskContext>,
        sorted: &RecordBatch,
        bs: usize,
    ) -> Result<SpillRun> {
        let mut w = BatchSpillWriter::create(ctx).await?;
        let mut off = 0;
        while off < sorted.num_rows() {
            let len = bs.min(sorted.num_rows() - off);
            w.write(&sorted.slice(off, len)).await?;
            off += len;
        }
        w.finish().await
    }

    /// k-way merge of sorted runs.
    async fn merge(
        &self,
        ctx: &Arc<TaskContext>,
        conv: &RowConverter,
        runs: Vec<SpillRun>,
        bs: usize,
        out: &mut Emitter,
    ) -> Result<()> {
        struct Cursor {
            reader: BatchSpillReader,
            batch: RecordBatch,
            rows: Rows,
            pos: usize,
            /// Index of `batch` in the current output's source list.
            src: usize,
        }
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut cursors: Vec<Cursor> = Vec::new();
        for run in runs {
            let mut reader = BatchSpillReader::open(ctx, run, Arc::clone(&self.schema));
            if let Some(batch) = reader.next().await? {
                let rows = self.key_rows(conv, &batch)?;
                sources.push(batch.clone());
                cursors.push(Cursor {
                    reader,
                    batch,
                    rows,
                    pos: 0,
                    src: sources.len() - 1,
                });
            }
        }
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(bs);
        let mut emitted = 0usize;
        let limit = self.fetch.unwrap_or(usize::MAX);
        while !cursors.is_empty() && emitted < limit {
            // smallest current row (k is small: linear scan)
            let mut best = 0;
            for i in 1..cursors.len() {
                let a = cursors[i].rows.row(cursors[i].pos);
                let b = cursors[best].rows.row(cursors[best].pos);
                if a < b {
                    best = i;
                }
            }
            let c = &mut cursors[best];
            picks.push((c.src, c.pos));
            emitted += 1;
            c.pos += 1;
            let exhausted = c.pos == c.batch.num_rows();
            if picks.len() == bs || (exhausted && sources.len() > 64) {
                let refs: Vec<&RecordBatch> = sources.iter().collect();
                let batch = interleave_record_batch(&refs, &picks)?;
                picks.clear();
                if !out.emit(batch).await {
                    return Ok(());
                }
                // restart the source list with the live batches
                sources.clear();
                for c in cursors.iter_mut() {
                    sources.push(c.batch.clone());
                    c.src = sources.len() - 1;
                }
            }
            let c = &mut cursors[best];
            if c.pos == c.batch.num_rows() {
                match c.reader.next().await? {
                    Some(batch) => {
                        c.rows = self.key_rows(conv, &batch)?;
                        c.pos = 0;
                        sources.push(batch.clone());
                        c.src = sources.len() - 1;
                        c.batch = batch;
                    }
                    None => {
                        cursors.swap_remove(best);
                    }
                }
            }
        }
        if !picks.is_empty() {
            let refs: Vec<&RecordBatch> = sources.iter().collect();
            let batch = interleave_record_batch(&refs, &picks)?;
            out.emit(batch).await;
        }
        Ok(())
    }
}
