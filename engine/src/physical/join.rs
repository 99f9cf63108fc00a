//! Hash join (inner and left outer), shuffled or broadcast.
//!
//! ```text
//!  Partitioned: probe part p ─┐                 Broadcast: probe part p ─┐
//!               build part p ─┴▶ HashJoinExec              build (whole) ─┴▶ HashJoinExec
//! ```
//!
//! The right input is the build side (the planner swaps inner joins so the
//! smaller side builds). Keys are bound to common types on both sides, encoded
//! with Arrow's row format and looked up in a [`RowTable`]; build rows with
//! equal keys are chained, so duplicate keys fan out. Null keys never match.
//!
//! Broadcast: the build side is hashed once per stage and executor and
//! shared by the stage's tasks there ([`crate::runtime::broadcast`]); only a build
//! side that does not fit in memory falls back to a per-task build.
//!
//! Spilling: if the build side does not fit its reservation, both sides are
//! partitioned into 16 spill buckets by key hash (grace hash join) and joined
//! bucket by bucket.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::buffer::NullBuffer;
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use futures::StreamExt;

use super::row_table::{hash_keys, RowTable};
use super::util::{generate, Emitter};
use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::Result;
use crate::expr::PhysicalExpr;
use crate::memory::spill::{BatchSpillReader, BucketSpiller};
use crate::runtime::broadcast::{BroadcastKey, Built};

/// Join semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    /// Left outer: every left (probe) row, with nulls when nothing matches.
    Left,
}

/// How the build side reaches each task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinMode {
    /// Both sides hash-partitioned on the keys; task p joins partition p of each.
    Partitioned,
    /// The build side has one partition every task reads whole.
    Broadcast,
}

#[derive(Debug)]
pub struct HashJoinExec {
    pub probe: Arc<dyn ExecutionPlan>,
    pub build: Arc<dyn ExecutionPlan>,
    pub probe_keys: Vec<PhysicalExpr>,
    pub build_keys: Vec<PhysicalExpr>,
    pub key_types: Vec<DataType>,
    pub join_type: JoinType,
    pub mode: JoinMode,
    /// Probe columns then build columns.
    pub schema: SchemaRef,
}

impl ExecutionPlan for HashJoinExec {
    fn name(&self) -> &'static str {
        "HashJoin"
    }
    fn describe(&self) -> String {
        format!(
            "HashJoin: {:?} {:?} on {} keys",
            self.join_type,
            self.mode,
            self.probe_keys.len()
        )
    }
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn output_partitions(&self) -> usize {
        self.probe.output_partitions()
    }
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        vec![Arc::clone(&self.probe), Arc::clone(&self.build)]
    }
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream> {
        let op = JoinOp {
            probe_keys: self.probe_keys.clone(),
            build_keys: self.build_keys.clone(),
            key_types: self.key_types.clone(),
            join_type: self.join_type,
            schema: Arc::clone(&self.schema),
            build_schema: self.build.schema(),
            probe_schema: self.probe.schema(),
        };
        let probe = crate::physical::execute(&self.probe, partition, Arc::clone(&ctx))?;
        if self.mode == JoinMode::Broadcast {
            let key = BroadcastKey {
                stage_id: ctx.stage_id,
                executor: ctx.executor,
                op: self as *const Self as usize,
            };
            let build = Arc::clone(&self.build);
            return Ok(generate(move |out| {
                op.run_broadcast(key, build, probe, ctx, out)
            }));
        }
        let build = crate::physical::execute(&self.build, partition, Arc::clone(&ctx))?;
        Ok(generate(move |out| op.run(build, probe, ctx, out)))
    }
}

/// A broadcast build side hashed once and shared, with its memory.
struct SharedTable {
    table: JoinTable,
    _reservation: shuffle_core::MemoryReservation,
}

#[derive(Debug, Clone)]
struct JoinOp {
    probe_keys: Vec<PhysicalExpr>,
    build_keys: Vec<PhysicalExpr>,
    key_types: Vec<DataType>,
    join_type: JoinType,
    schema: SchemaRef,
    build_schema: SchemaRef,
    probe_schema: SchemaRef,
}

/// The in-memory build side.
struct JoinTable {
    batch: RecordBatch,
    table: RowTable,
    /// First build row per key id (u32::MAX: none).
    head: Vec<u32>,
    /// Next build row with the same key (u32::MAX: end).
    next: Vec<u32>,
}

impl JoinTable {
    fn size(&self) -> usize {
        self.table.size() + self.head.capacity() * 4 + self.next.capacity() * 4
    }
}

impl JoinOp {
    fn converter(&self) -> Result<RowConverter> {
        Ok(RowConverter::new(
            self.key_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect(),
        )?)
    }

    fn build_table(&self, batches: &[RecordBatch], conv: &RowConverter) -> Result<JoinTable> {
        let batch = concat_batches(&self.build_schema, batches)?;
        let keys = self
            .build_keys
            .iter()
            .map(|k| k.evaluate(&batch))
            .collect::<Result<Vec<_>>>()?;
        let mut table = RowTable::new(conv);
        let mut ids = Vec::new();
        if batch.num_rows() > 0 {
            let rows = conv.convert_columns(&keys)?;
            let mut hashes = Vec::new();
            hash_keys(&keys, &mut hashes)?;
            table.intern(&rows, &hashes, &mut ids);
        }
        let nulls = combined_nulls(&keys);
        let mut head = vec![u32::MAX; table.len()];
        let mut next = vec![u32::MAX; batch.num_rows()];
        for r in (0..batch.num_rows()).rev() {
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                continue;
            }
            let id = ids[r] as usize;
            next[r] = head[id];
            head[id] = r as u32;
        }
        Ok(JoinTable {
            batch,
            table,
            head,
            next,
        })
    }

    /// Joins one probe batch against the table.
    fn probe_batch(
        &self,
        t: &JoinTable,
        probe: &RecordBatch,
        conv: &RowConverter,
        hashes: &mut Vec<u64>,
    ) -> Result<Option<RecordBatch>> {
        let n = probe.num_rows();
        if n == 0 {
            return Ok(None);
        }
        let keys = self
            .probe_keys
            .iter()
            .map(|k| k.evaluate(probe))
            .collect::<Result<Vec<_>>>()?;
        let nulls = combined_nulls(&keys);
        let mut probe_idx: Vec<u32> = Vec::with_capacity(n);
        let mut build_idx: Vec<u32> = Vec::with_capacity(n);
        let mut build_valid: Vec<bool> = Vec::new();
        let left = self.join_type == JoinType::Left;
        if !t.table.is_empty() {
            let rows = conv.convert_columns(&keys)?;
            hash_keys(&keys, hashes)?;
            for (i, h) in hashes.iter().enumerate().take(n) {
                let mut matched = false;
                if !nulls.as_ref().is_some_and(|nb| nb.is_null(i)) {
                    if let Some(id) = t.table.lookup(rows.row(i), *h) {
                        let mut r = t.head[id as usize];
                        while r != u32::MAX {
                            probe_idx.push(i as u32);
                            build_idx.push(r);
                            if left {
                                build_valid.push(true);
                            }
                            matched = true;
                            r = t.next[r as usize];
                        }
                    }
                }
                if left && !matched {
                    probe_idx.push(i as u32);
                    build_idx.push(0);
                    build_valid.push(false);
                }
            }
        } else if left {
            probe_idx.extend(0..n as u32);
            build_idx.resize(n, 0);
            build_valid.resize(n, false);
        }
        if probe_idx.is_empty() {
            return Ok(None);
        }
        let rows_out = probe_idx.len();
        let all_probe =
            rows_out == n && probe_idx.iter().enumerate().all(|(i, p)| *p as usize == i);
        let mut cols: Vec<ArrayRef> = if all_probe {
            probe.columns().to_vec()
        } else {
            let pi = UInt32Array::from(probe_idx);
            probe
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &pi, None))
                .collect::<std::result::Result<_, _>>()?
        };
        let bnulls = if left && build_valid.iter().any(|v| !v) {
            Some(NullBuffer::from(build_valid))
        } else {
            None
        };
        let bi = UInt32Array::new(build_idx.into(), bnulls);
        if t.batch.num_rows() == 0 {
            for f in self.build_schema.fields() {
                cols.push(arrow::array::new_null_array(f.data_type(), rows_out));
            }
        } else {
            for c in t.batch.columns() {
                cols.push(take(c.as_ref(), &bi, None)?);
            }
        }
        Ok(Some(RecordBatch::try_new(Arc::clone(&self.schema), cols)?))
    }

    /// Builds the broadcast table for every task of the stage on this
    /// executor; `None` when it does not fit in memory.
    async fn build_shared(
        &self,
        build: Arc<dyn ExecutionPlan>,
        ctx: Arc<TaskContext>,
    ) -> Result<Option<Built>> {
        let conv = self.converter()?;
        let mut reservation = ctx.memory_pool().reservation(format!(
            "broadcast hash table[stage {} executor {}]",
            ctx.stage_id, ctx.executor
        ));
        let mut stream = crate::physical::execute(&build, 0, Arc::clone(&ctx))?;
        let mut batches = Vec::new();
        while let Some(b) = stream.next().await {
            let b = b?;
            let need = b.get_array_memory_size() + b.num_rows() * 24;
            if reservation.try_grow(need).is_err() {
                return Ok(None);
            }
            batches.push(b);
        }
        let table = self.build_table(&batches, &conv)?;
        drop(batches);
        reservation.resize(table.batch.get_array_memory_size() + table.size());
        Ok(Some(Arc::new(SharedTable {
            table,
            _reservation: reservation,
        })))
    }

    /// A broadcast join: probes the shared table, or joins on its own (with
    /// spilling) when the build side does not fit in memory.
    async fn run_broadcast(
        self,
        key: BroadcastKey,
        build: Arc<dyn ExecutionPlan>,
        mut probe: BatchStream,
        ctx: Arc<TaskContext>,
        mut out: Emitter,
    ) -> Result<()> {
        let shared = ctx
            .broadcasts
            .get_or_build(key, || {
                self.build_shared(Arc::clone(&build), Arc::clone(&ctx))
            })
            .await?;
        let Some(shared) = shared.and_then(|b| b.downcast::<SharedTable>().ok()) else {
            let stream = crate::physical::execute(&build, 0, Arc::clone(&ctx))?;
            return self.run(stream, probe, ctx, out).await;
        };
        let conv = self.converter()?;
        let mut hashes = Vec::new();
        while let Some(p) = probe.next().await {
            let p = p?;
            if let Some(o) = self.probe_batch(&shared.table, &p, &conv, &mut hashes)? {
                if !emit_chunks(o, ctx.batch_size(), &mut out).await {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn run(
        self,
        mut build: BatchStream,
        mut probe: BatchStream,
        ctx: Arc<TaskContext>,
        mut out: Emitter,
    ) -> Result<()> {
        let conv = self.converter()?;
        let mut reservation = ctx.reservation("hash join build");
        let mut batches = Vec::new();
        let mut spiller: Option<BucketSpiller> = None;
        while let Some(b) = build.next().await {
            let b = b?;
            if let Some(s) = spiller.as_mut() {
                s.write(&b).await?;
                continue;
            }
            // batch plus an estimate of its share of the table
            let need = b.get_array_memory_size() + b.num_rows() * 24;
            if reservation.try_grow(need).is_err() {
                let mut s = BucketSpiller::new(&ctx, self.build_keys.clone());
                for old in batches.drain(..) {
                    s.write(&old).await?;
                }
                s.write(&b).await?;
                reservation.free();
                spiller = Some(s);
            } else {
                batches.push(b);
            }
        }
        drop(build);
        let mut hashes = Vec::new();
        let Some(build_spill) = spiller else {
            let t = self.build_table(&batches, &conv)?;
            drop(batches);
            reservation.resize(t.batch.get_array_memory_size() + t.size());
            while let Some(p) = probe.next().await {
                let p = p?;
                if let Some(o) = self.probe_batch(&t, &p, &conv, &mut hashes)? {
                    if !emit_chunks(o, ctx.batch_size(), &mut out).await {
                        return Ok(());
                    }
                }
            }
            return Ok(());
        };
        // Grace hash join: partition the probe side the same way.
        let build_runs = build_spill.finish().await?;
        let mut probe_spill = BucketSpiller::new(&ctx, self.probe_keys.clone());
        while let Some(p) = probe.next().await {
            probe_spill.write(&p?).await?;
        }
        drop(probe);
        let probe_runs = probe_spill.finish().await?;
        for (b_run, p_run) in build_runs.into_iter().zip(probe_runs) {
            let Some(p_run) = p_run else {
                // nothing to probe; drop the build bucket unread
                if let Some(b_run) = b_run {
                    let r = BatchSpillReader::open(&ctx, b_run, Arc::clone(&self.build_schema));
                    drop(r.read_all().await?);
                }
                continue;
            };
            let b_batches = match b_run {
                Some(r) => {
                    BatchSpillReader::open(&ctx, r, Arc::clone(&self.build_schema))
                        .read_all()
                        .await?
                }
                None => Vec::new(),
            };
            let t = self.build_table(&b_batches, &conv)?;
            drop(b_batches);
            reservation.resize(t.batch.get_array_memory_size() + t.size());
            let mut reader = BatchSpillReader::open(&ctx, p_run, Arc::clone(&self.probe_schema));
            while let Some(p) = reader.next().await? {
                if let Some(o) = self.probe_batch(&t, &p, &conv, &mut hashes)? {
                    if !emit_chunks(o, ctx.batch_size(), &mut out).await {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

async fn emit_chunks(b: RecordBatch, size: usize, out: &mut Emitter) -> bool {
    if b.num_rows() <= size * 2 {
        return out.emit(b).await;
    }
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

/// Null where any key is null.
fn combined_nulls(keys: &[ArrayRef]) -> Option<NullBuffer> {
    let mut acc: Option<NullBuffer> = None;
    for k in keys {
        acc = NullBuffer::union(acc.as_ref(), k.logical_nulls().as_ref());
    }
    acc
}
