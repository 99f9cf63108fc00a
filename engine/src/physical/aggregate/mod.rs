//! Two-phase hash aggregation.
//!
//! ```text
//!  map side:    input ─▶ AggregateExec(Partial) ─▶ [keys.., state..] ─▶ hash exchange on keys
//!  reduce side: shuffle read ─▶ AggregateExec(Final) ─▶ [keys.., results..]
//! ```
//!
//! Groups are found with [`RowTable`] over Arrow's row format (any number and
//! type of key columns); accumulators fold whole batches by group id.
//!
//! Memory: the table and accumulators are held under a reservation. When it
//! cannot grow, the partial phase simply emits its groups early (the final
//! phase merges them anyway); the final phase switches to a grace-hash spill:
//! its state and all further input go to 16 spill buckets by key hash, and
//! each bucket is then aggregated on its own. Results are identical.
//!
//! Grouping sets with the empty set `()` (ROLLUP's grand total) must yield a
//! grand-total row even over no input, as SQL requires. The final phase's
//! partition that the grand total's key hashes to starts with that group
//! ([`GrandTotal`]); input rows for it merge in as usual.

pub mod accumulator;

use std::sync::Arc;

use arrow::array::{new_empty_array, ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use futures::StreamExt;

use super::row_table::{hash_keys, RowTable};
use super::util::{generate, Emitter};
use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::Result;
use crate::expr::{AggregateFunction, PhysicalExpr};
use crate::memory::spill::{BatchSpillReader, BucketSpiller};
use accumulator::{AggSignature, GroupsAccumulator};

/// Which phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggMode {
    /// Raw rows in, partial states out.
    Partial,
    /// Partial states in, final values out.
    Final,
}

/// One aggregate call, bound.
#[derive(Debug, Clone)]
pub struct AggSpec {
    pub func: AggregateFunction,
    /// Argument over the partial phase's input, already cast to `sig.input`.
    pub arg: PhysicalExpr,
    pub sig: AggSignature,
    pub name: String,
}

/// The grand-total group of a grouping-sets aggregate: its key (one-row
/// arrays: nulls and the empty set's grouping id) and the final partition
/// the exchange sends it to.
#[derive(Debug, Clone)]
pub struct GrandTotal {
    pub key: Vec<ArrayRef>,
    pub partition: usize,
}

#[derive(Debug)]
pub struct AggregateExec {
    pub input: Arc<dyn ExecutionPlan>,
    pub mode: AggMode,
    /// Partial: key expressions over the input. Final: ignored (keys are the first columns).
    pub group_exprs: Vec<PhysicalExpr>,
    pub group_fields: Vec<Field>,
    pub aggs: Vec<AggSpec>,
    pub schema: SchemaRef,
    /// Final phase of grouping sets that include `()`: seed this group.
    pub grand_total: Option<GrandTotal>,
}

impl AggregateExec {
    /// Output schema of a phase.
    pub fn phase_schema(mode: AggMode, group_fields: &[Field], aggs: &[AggSpec]) -> SchemaRef {
        let mut fields: Vec<Field> = group_fields.to_vec();
        for a in aggs {
            match mode {
                AggMode::Partial => fields.extend(accumulator::state_fields(&a.name, &a.sig)),
                AggMode::Final => fields.push(accumulator::output_field(&a.name, a.func, &a.sig)),
            }
        }
        Arc::new(Schema::new(fields))
    }
}

impl ExecutionPlan for AggregateExec {
    fn name(&self) -> &'static str {
        match self.mode {
            AggMode::Partial => "Aggregate(partial)",
            AggMode::Final => "Aggregate(final)",
        }
    }
    fn describe(&self) -> String {
        let keys: Vec<&str> = self
            .group_fields
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let aggs: Vec<&str> = self.aggs.iter().map(|a| a.name.as_str()).collect();
        format!(
            "{}: keys [{}] aggs [{}]",
            self.name(),
            keys.join(", "),
            aggs.join(", ")
        )
    }
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn output_partitions(&self) -> usize {
        self.input.output_partitions()
    }
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        vec![Arc::clone(&self.input)]
    }
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream> {
        let input = crate::physical::execute(&self.input, partition, Arc::clone(&ctx))?;
        let op = Op {
            mode: self.mode,
            group_exprs: match self.mode {
                AggMode::Partial => self.group_exprs.clone(),
                AggMode::Final => (0..self.group_fields.len())
                    .map(PhysicalExpr::Column)
                    .collect(),
            },
            group_fields: self.group_fields.clone(),
            aggs: self.aggs.clone(),
            schema: Arc::clone(&self.schema),
            input_schema: self.input.schema(),
            grand_total: match (&self.grand_total, self.mode) {
                (Some(g), AggMode::Final)
                    if ctx.read_range(partition).contains(&(g.partition as u32)) =>
                {
                    Some(g.key.clone())
                }
                _ => None,
            },
        };
        Ok(generate(move |out| op.run(input, ctx, out)))
    }
}

#[derive(Debug, Clone)]
struct Op {
    mode: AggMode,
    group_exprs: Vec<PhysicalExpr>,
    group_fields: Vec<Field>,
    aggs: Vec<AggSpec>,
    schema: SchemaRef,
    input_schema: SchemaRef,
    /// Key of a group to create before any input (the grand total).
    grand_total: Option<Vec<ArrayRef>>,
}

impl Op {
    /// Creates the group `key` (one row) with empty aggregate states.
    fn seed_group(&self, t: &mut HashTable, key: &[ArrayRef]) -> Result<()> {
        t.assign(key, 1)?;
        let n = t.n_groups;
        for (a, acc) in self.aggs.iter().zip(t.accs.iter_mut()) {
            let empty: Vec<ArrayRef> = a.sig.state.iter().map(new_empty_array).collect();
            acc.merge(&empty, &[], n)?;
        }
        Ok(())
    }

    /// Column index of each aggregate's first state column in Final input.
    fn state_offsets(&self) -> Vec<usize> {
        let mut off = self.group_fields.len();
        self.aggs
            .iter()
            .map(|a| {
                let o = off;
                off += a.sig.state.len();
                o
            })
            .collect()
    }

    fn new_table(&self) -> Result<HashTable> {
        let fields = self
            .group_fields
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let table = RowTable::new(&converter);
        let accs = self
            .aggs
            .iter()
            .map(|a| accumulator::create(a.func, &a.sig))
            .collect::<Result<Vec<_>>>()?;
        Ok(HashTable {
            converter,
            table,
            accs,
            ids: Vec::new(),
            hashes: Vec::new(),
            n_groups: 0,
        })
    }

    /// Folds one input batch into `t`.
    fn process(&self, t: &mut HashTable, batch: &RecordBatch, offsets: &[usize]) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(batch))
            .collect::<Result<Vec<_>>>()?;
        t.assign(&keys, batch.num_rows())?;
        let n = t.n_groups;
        for (i, (a, acc)) in self.aggs.iter().zip(t.accs.iter_mut()).enumerate() {
            match self.mode {
                AggMode::Partial => {
                    let v = a.arg.evaluate(batch)?;
                    acc.update(&v, &t.ids, n)?;
                }
                AggMode::Final => {
                    let o = offsets[i];
                    let states: Vec<ArrayRef> = (o..o + a.sig.state.len())
                        .map(|c| Arc::clone(batch.column(c)))
                        .collect();
                    acc.merge(&states, &t.ids, n)?;
                }
            }
        }
        Ok(())
    }

    /// Drains `t` into one batch: states (Partial, or `as_state`) or final values.
    fn drain(&self, t: &mut HashTable, as_state: bool) -> Result<Option<RecordBatch>> {
        if t.n_groups == 0 {
            if self.group_fields.is_empty() && self.mode == AggMode::Final && !as_state {
                // Global aggregate over no rows: one row of empty aggregates.
                t.n_groups = 1;
                for (a, acc) in self.aggs.iter().zip(t.accs.iter_mut()) {
                    let empty: Vec<ArrayRef> = a.sig.state.iter().map(new_empty_array).collect();
                    acc.merge(&empty, &[], 1)?;
                }
            } else {
                return Ok(None);
            }
        }
        let mut cols = if self.group_fields.is_empty() {
            Vec::new()
        } else {
            t.converter.convert_rows(t.table.keys())?
        };
        let state = as_state || self.mode == AggMode::Partial;
        for acc in t.accs.iter_mut() {
            if state {
                cols.extend(acc.state()?);
            } else {
                cols.push(acc.evaluate()?);
            }
        }
        let schema = if state {
            if self.mode == AggMode::Final {
                Arc::clone(&self.input_schema)
            } else {
                Arc::clone(&self.schema)
            }
        } else {
            Arc::clone(&self.schema)
        };
        let rows = t.n_groups;
        *t = self.new_table()?;
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(Some(RecordBatch::try_new_with_options(
            schema, cols, &opts,
        )?))
    }

    async fn emit_chunks(b: RecordBatch, size: usize, out: &mut Emitter) -> bool {
        let mut off = 0;
        while off < b.num_rows() {
            let len = size.min(b.num_rows() - off);
            if !out.emit(b.slice(off, len)).await {
                return false;
            }
            off += len;
        }
        true
    }

    async fn run(
        self,
        mut input: BatchStream,
        ctx: Arc<TaskContext>,
        mut out: Emitter,
    ) -> Result<()> {
        let offsets = self.state_offsets();
        let mut reservation = ctx.reservation(match self.mode {
            AggMode::Partial => "partial aggregate",
            AggMode::Final => "final aggregate",
        });
        let bs = ctx.batch_size();
        let mut t = self.new_table()?;
        if let Some(key) = &self.grand_total {
            self.seed_group(&mut t, key)?;
        }
        let mut spiller: Option<BucketSpiller> = None;
        while let Some(batch) = input.next().await {
            let batch = batch?;
            if let Some(s) = spiller.as_mut() {
                s.write(&batch).await?;
                continue;
            }
            self.process(&mut t, &batch, &offsets)?;
            if reservation.try_resize(t.size()).is_err() {
                match self.mode {
                    AggMode::Partial => {
                        if let Some(b) = self.drain(&mut t, false)? {
                            reservation.free();
                            if !Self::emit_chunks(b, bs, &mut out).await {
                                return Ok(());
                            }
                        }
                    }
                    AggMode::Final => {
                        let keys: Vec<PhysicalExpr> = (0..self.group_fields.len())
                            .map(PhysicalExpr::Column)
                            .collect();
                        let mut s = BucketSpiller::new(&ctx, keys);
                        if let Some(b) = self.drain(&mut t, true)? {
                            s.write(&b).await?;
                        }
                        reservation.free();
                        spiller = Some(s);
                    }
                }
            }
        }
        drop(input);
        let Some(s) = spiller else {
            if let Some(b) = self.drain(&mut t, false)? {
                reservation.free();
                Self::emit_chunks(b, bs, &mut out).await;
            }
            return Ok(());
        };
        // Grace phase: aggregate each bucket on its own.
        for run in s.finish().await?.into_iter().flatten() {
            let mut reader = BatchSpillReader::open(&ctx, run, Arc::clone(&self.input_schema));
            let mut t = self.new_table()?;
            while let Some(b) = reader.next().await? {
                self.process(&mut t, &b, &offsets)?;
                // A bucket must fit: account for it even past the limit.
                reservation.resize(t.size());
            }
            if let Some(b) = self.drain(&mut t, false)? {
                reservation.free();
                if !Self::emit_chunks(b, bs, &mut out).await {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

struct HashTable {
    converter: RowConverter,
    table: RowTable,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    ids: Vec<u32>,
    hashes: Vec<u64>,
    n_groups: usize,
}

impl HashTable {
    fn assign(&mut self, keys: &[ArrayRef], rows: usize) -> Result<()> {
        if keys.is_empty() {
            self.ids.clear();
            self.ids.resize(rows, 0);
            self.n_groups = 1;
            return Ok(());
        }
        let r = self.converter.convert_columns(keys)?;
        hash_keys(keys, &mut self.hashes)?;
        self.table.intern(&r, &self.hashes, &mut self.ids);
        self.n_groups = self.table.len();
        Ok(())
    }

    fn size(&self) -> usize {
        self.table.size()
            + self.accs.iter().map(|a| a.size()).sum::<usize>()
            + self.ids.capacity() * 4
            + self.hashes.capacity() * 8
    }
}
