//! The writer side: a Shovel map task over one or more input partitions.
//!
//! A map task runs its input partitions concurrently (polled together, as
//! `RepartitionExec`'s input tasks are, so operators that wait on each
//! other across partitions, such as a partitioned hash join building its
//! dynamic filter, still make progress) and writes all their rows into one
//! map output.
//!
//! Rows go to partitions exactly as DataFusion's own `RepartitionExec` sends
//! them: the partitioner *is* DataFusion's [`BatchPartitioner`] (its fixed
//! hash seed and `hash % n`), so a plan that mixes a Shovel exchange with a
//! DataFusion repartition (or a source that declares hash partitioning)
//! still co-locates equal keys. Shovel's own stable hash
//! ([`shuffle_arrow::hash`]) is not used here: it agrees across Shovel
//! engines, not with DataFusion.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use futures::StreamExt;
use shuffle_arrow::{MapTaskWriter, PartitionScheme};
use shuffle_core::{MapStatus, ShuffleManager};

use super::metrics::WriteMetrics;
use crate::error::shuffle_error;

/// What one map task needs.
pub(crate) struct MapTask {
    pub input: Arc<dyn ExecutionPlan>,
    /// The input partitions this task writes.
    pub inputs: Vec<usize>,
    pub map_id: usize,
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub partitions: usize,
    pub manager: Arc<dyn ShuffleManager>,
    pub shuffle_id: u32,
    pub metrics: WriteMetrics,
}

impl MapTask {
    /// Runs the input partitions to their end, writes every row into the
    /// map output and commits it; aborts the output on any error.
    pub async fn run(self, ctx: Arc<TaskContext>) -> Result<MapStatus> {
        let (shuffle_id, map_id) = (self.shuffle_id, self.map_id);
        let at = || format!("Shovel exchange: writing shuffle {shuffle_id} map {map_id}");
        let timer = self.metrics.map_time.timer();
        let mut writer = MapTaskWriter::new(
            self.manager.as_ref(),
            shuffle_id,
            map_id as u32,
            0,
            PartitionScheme::hash(self.partitions),
        )
        .await
        .map_err(|e| shuffle_error(e, at()))?;
        let written: Result<()> = async {
            let mut partitioner = BatchPartitioner::new_hash_partitioner(
                self.exprs.clone(),
                self.partitions,
                self.metrics.repartition_time.clone(),
            )?;
            let streams = self
                .inputs
                .iter()
                .map(|&i| self.input.execute(i, Arc::clone(&ctx)))
                .collect::<Result<Vec<_>>>()?;
            let mut input = futures::stream::select_all(streams);
            while let Some(batch) = input.next().await {
                for part in partitioner.partition_iter(batch?)? {
                    let (p, b) = part?;
                    writer
                        .write_to(p as u32, &b)
                        .await
                        .map_err(|e| shuffle_error(e, at()))?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            // The error that stopped the task is what matters; the manager's
            // cleanup deletes whatever an abort could not.
            let _ = writer.abort().await;
            return Err(e);
        }
        let (status, stats) = writer.commit().await.map_err(|e| shuffle_error(e, at()))?;
        timer.done();
        let m = &self.metrics;
        m.records_written.add(stats.records as usize);
        m.encoded_bytes_written.add(stats.encoded_bytes as usize);
        m.blocks_written.add(stats.blocks as usize);
        m.stored_bytes_written.add(status.total_bytes() as usize);
        m.objects_written
            .add(usize::from(status.lengths.iter().any(|&l| l > 0)));
        m.spill_count.add(stats.spills as usize);
        Ok(status)
    }
}
