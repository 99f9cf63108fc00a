//! Reads one partition of a shuffle written by an upstream stage (or, when
//! the scheduler coalesced the stage's partitions, a range of neighbouring
//! ones: [`TaskContext::read_range`]).

use std::sync::Arc;

use arrow::compute::BatchCoalescer;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;

use super::util::generate;
use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::{EngineError, Result};
use crate::exchange::codec::decode_batch;
use crate::metrics::TaskMetrics;

/// The downstream side of an exchange.
#[derive(Debug)]
pub struct ShuffleReadExec {
    pub shuffle_id: u32,
    /// Stage that writes the shuffle.
    pub producer_stage: usize,
    pub schema: SchemaRef,
    /// Partitions of the shuffle (= output partitions unless `broadcast`).
    pub num_partitions: usize,
    /// Broadcast: a single partition every consumer task reads whole.
    pub broadcast: bool,
}

impl ExecutionPlan for ShuffleReadExec {
    fn name(&self) -> &'static str {
        "ShuffleRead"
    }
    fn describe(&self) -> String {
        format!(
            "ShuffleRead: shuffle {} from stage {}{}",
            self.shuffle_id,
            self.producer_stage,
            if self.broadcast { " (broadcast)" } else { "" }
        )
    }
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn output_partitions(&self) -> usize {
        if self.broadcast {
            1
        } else {
            self.num_partitions
        }
    }
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn shuffle_reads(&self) -> Vec<u32> {
        vec![self.shuffle_id]
    }
    fn partitioned_read(&self) -> Option<(u32, usize)> {
        (!self.broadcast).then_some((self.shuffle_id, self.num_partitions))
    }
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream> {
        // A coalesced task reads a range of neighbouring partitions.
        let parts = if self.broadcast {
            0..1
        } else {
            ctx.read_range(partition)
        };
        let shuffle_id = self.shuffle_id;
        let statuses = ctx.tracker.statuses(shuffle_id)?;
        let mut reader = ctx
            .manager
            .reader(shuffle_id, statuses, parts)
            .map_err(|e| wrap(shuffle_id, e))?;
        let schema = Arc::clone(&self.schema);
        let batch_size = ctx.batch_size();
        Ok(generate(move |mut out| async move {
            let mut coalescer = BatchCoalescer::new(Arc::clone(&schema), batch_size);
            while let Some(block) = reader.next().await {
                let block = block.map_err(|e| wrap(shuffle_id, e))?;
                TaskMetrics::add(&ctx.metrics.shuffle_bytes_read, block.data.len() as u64);
                TaskMetrics::add(&ctx.metrics.bytes_in, block.data.len() as u64);
                let batch = decode_batch(block.data, &schema)?;
                TaskMetrics::add(&ctx.metrics.rows_in, batch.num_rows() as u64);
                if batch.num_rows() >= batch_size / 2 && coalescer.is_empty() {
                    if !out.emit(batch).await {
                        return Ok(());
                    }
                    continue;
                }
                coalescer.push_batch(batch)?;
                while let Some(b) = coalescer.next_completed_batch() {
                    if !out.emit(b).await {
                        return Ok(());
                    }
                }
            }
            coalescer.finish_buffered_batch()?;
            while let Some(b) = coalescer.next_completed_batch() {
                if !out.emit(b).await {
                    return Ok(());
                }
            }
            Ok(())
        }))
    }
}

fn wrap(shuffle_id: u32, e: shuffle_core::Error) -> EngineError {
    if !e.is_data_loss() {
        return EngineError::Shuffle(e);
    }
    let map_id = match &e {
        shuffle_core::Error::FetchFailed { map_id, .. } => Some(*map_id),
        _ => None,
    };
    EngineError::FetchFailed {
        shuffle_id,
        map_id,
        source: e,
    }
}
