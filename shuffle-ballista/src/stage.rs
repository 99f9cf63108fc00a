//! The writer side: one Ballista task's output as one Shovel map output.
//!
//! Ballista cuts a job into stages; every stage plan starts with a shuffle
//! writer, and a task runs a slice of the stage's input partitions. Shovel
//! replaces the writer (not the plan under it):
//!
//! ```text
//!  SortShuffleWriterExec(Hash(keys, K))  ─▶ hash stage: every child partition's rows go through
//!                                           DataFusion's BatchPartitioner into K partitions
//!  ShuffleWriterExec (pass-through)      ─▶ child partition i is output partition ids[i]
//!                                           (the ids the scheduler gave the task)
//!
//!  child partitions, drained concurrently ─▶ (partition, batch) channel ─▶ one MapTaskWriter
//!        ─▶ commit (first attempt wins) ─▶ ShuffleWritePartition per output partition:
//!           rows, stored bytes, file_id = MapOutputId (crate::ids)
//! ```
//!
//! Child partitions are drained at once, as Ballista's writers do: an
//! operator in the child that feeds all of them (a repartition) would
//! otherwise block on the ones nobody reads. Nothing is written to the
//! executor's work directory. A failed task aborts its output; the
//! scheduler re-runs it under a new task id.

use std::fmt;
use std::sync::Arc;

use ballista_core::serde::protobuf::ShuffleWritePartition;
use ballista_executor::execution_engine::QueryStageExecutor;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, PhysicalExpr};
use futures::StreamExt;
use shuffle_arrow::{MapTaskWriter, PartitionScheme};
use shuffle_core::{ShuffleHandle, ShuffleManager};
use shuffle_datafusion::error::{core_error, shuffle_error};
use shuffle_datafusion::exchange::WriteMetrics;
use tokio::sync::mpsc;

use crate::ids::{task_attempts, MapOutputId};

/// How a stage's rows reach its output partitions.
#[derive(Debug, Clone)]
pub enum StageOutput {
    /// Hash partitioning into `partitions` (Ballista's sort-shuffle writer).
    Hash {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        partitions: usize,
    },
    /// Child partition `i` is output partition `ids[i]`.
    PassThrough { ids: Vec<usize> },
}

impl StageOutput {
    fn partitions(&self) -> usize {
        match self {
            StageOutput::Hash { partitions, .. } => *partitions,
            StageOutput::PassThrough { ids } => ids.iter().max().map_or(1, |m| m + 1),
        }
    }

    fn reported(&self) -> Vec<usize> {
        match self {
            StageOutput::Hash { partitions, .. } => (0..*partitions).collect(),
            StageOutput::PassThrough { ids } => ids.clone(),
        }
    }
}

/// One task of a stage, writing through Shovel (see the module docs).
pub struct ShovelStageExec {
    pub(crate) job_id: String,
    pub(crate) stage_id: usize,
    pub(crate) input: Arc<dyn ExecutionPlan>,
    pub(crate) output: StageOutput,
    pub(crate) manager: Arc<dyn ShuffleManager>,
    pub(crate) metrics: ExecutionPlanMetricsSet,
    pub(crate) counters: Arc<crate::EngineCounters>,
}

impl fmt::Debug for ShovelStageExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShovelStageExec")
            .field("job_id", &self.job_id)
            .field("stage_id", &self.stage_id)
            .field("output", &self.output)
            .finish()
    }
}

impl fmt::Display for ShovelStageExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.output {
            StageOutput::Hash { partitions, .. } => format!("hash into {partitions}"),
            StageOutput::PassThrough { ids } => format!("pass-through to {ids:?}"),
        };
        write!(
            f,
            "ShovelStageExec: job {} stage {} ({kind}, {} backend)\n{}",
            self.job_id,
            self.stage_id,
            self.manager.backend_name(),
            DisplayableExecutionPlan::new(self.input.as_ref()).indent(true)
        )
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for ShovelStageExec {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        let (stage_attempt, task_attempt) = task_attempts(&context);
        let _running = self.counters.task_running();
        let started = std::time::SystemTime::now();
        let task = u32::try_from(task_id)
            .map_err(|_| DataFusionError::Internal(format!("task id {task_id} too large")))?;
        let stage = u32::try_from(self.stage_id).unwrap_or(u32::MAX);
        let partitions = self.output.partitions();
        let id = MapOutputId::new(stage, stage_attempt, partitions as u32, task)?;
        let shuffle_id = id.shuffle_id();
        let at = || {
            format!(
                "Shovel on Ballista: job {} stage {} task {task_id} (shuffle {shuffle_id} map {task})",
                self.job_id, self.stage_id
            )
        };
        self.manager
            .register_shuffle(ShuffleHandle {
                shuffle_id,
                num_maps: u32::MAX,
                num_partitions: partitions as u32,
            })
            .await
            .map_err(|e| core_error(e, at()))?;
        let metrics = WriteMetrics::new(&self.metrics, 0);
        let timer = metrics.map_time.timer();
        let mut writer = MapTaskWriter::new(
            self.manager.as_ref(),
            shuffle_id,
            task,
            task_attempt,
            PartitionScheme::hash(partitions),
        )
        .await
        .map_err(|e| shuffle_error(e, at()))?;

        let written = self.drain_into(&mut writer, &metrics, context).await;
        if let Err(e) = written {
            let _ = writer.abort().await;
            return Err(e.context(at()));
        }
        let (status, stats) = writer.commit().await.map_err(|e| shuffle_error(e, at()))?;
        timer.done();
        metrics.records_written.add(stats.records as usize);
        metrics
            .encoded_bytes_written
            .add(stats.encoded_bytes as usize);
        metrics.blocks_written.add(stats.blocks as usize);
        metrics
            .stored_bytes_written
            .add(status.total_bytes() as usize);
        metrics
            .objects_written
            .add(usize::from(status.lengths.iter().any(|&l| l > 0)));
        metrics.spill_count.add(stats.spills as usize);
        self.counters.record_task(crate::engine::TaskRecord {
            job_id: self.job_id.clone(),
            stage_id: stage,
            stage_attempt,
            task_id: task,
            task_attempt,
            stored_bytes: status.total_bytes(),
            records: stats.records,
            started,
            finished: std::time::SystemTime::now(),
        });

        Ok(self
            .output
            .reported()
            .into_iter()
            .map(|p| {
                let rows = status.records.get(p).copied().unwrap_or(0);
                let bytes = status.lengths.get(p).copied().unwrap_or(0);
                ShuffleWritePartition {
                    partition_id: p as u64,
                    num_batches: u64::from(rows > 0),
                    num_rows: rows,
                    num_bytes: bytes,
                    file_id: Some(id.file_id()),
                    is_sort_shuffle: false,
                }
            })
            .collect())
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        let mut all = vec![self.metrics.clone_inner()];
        all.extend(ballista_core::utils::collect_plan_metrics(
            self.input.as_ref(),
        ));
        all
    }
}

impl ShovelStageExec {
    /// Runs every child partition at once and writes what they produce.
    async fn drain_into(
        &self,
        writer: &mut MapTaskWriter,
        metrics: &WriteMetrics,
        context: Arc<TaskContext>,
    ) -> Result<()> {
        let inputs = self.input.output_partitioning().partition_count();
        if let StageOutput::PassThrough { ids } = &self.output {
            if ids.len() != inputs {
                return Err(DataFusionError::Internal(format!(
                    "the scheduler gave {} output partition ids for a stage plan with {inputs} partitions",
                    ids.len()
                )));
            }
        }
        let (tx, mut rx) = mpsc::channel::<Result<(u32, RecordBatch)>>(2 * inputs.max(1));
        let mut drains = Vec::with_capacity(inputs);
        for i in 0..inputs {
            let tx = tx.clone();
            let stream = self.input.execute(i, Arc::clone(&context))?;
            let output = self.output.clone();
            let timer = metrics.repartition_time.clone();
            drains.push(tokio::spawn(async move {
                let sent = drain(stream, i, output, timer, &tx).await;
                if let Err(e) = sent {
                    let _ = tx.send(Err(e)).await;
                }
            }));
        }
        drop(tx);
        let mut result = Ok(());
        while let Some(item) = rx.recv().await {
            match item {
                Ok((p, batch)) => {
                    if let Err(e) = writer.write_to(p, &batch).await {
                        result = Err(shuffle_error(e, "writing a batch"));
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() {
            drains.iter().for_each(|d| d.abort());
        }
        for d in drains {
            if let Err(e) = d.await {
                if e.is_panic() {
                    return Err(DataFusionError::Execution(format!(
                        "a child partition of the stage panicked: {e}"
                    )));
                }
            }
        }
        result
    }
}

/// One child partition's rows, tagged with their output partition.
async fn drain(
    mut stream: datafusion::execution::SendableRecordBatchStream,
    input: usize,
    output: StageOutput,
    timer: datafusion::physical_plan::metrics::Time,
    tx: &mpsc::Sender<Result<(u32, RecordBatch)>>,
) -> Result<()> {
    match output {
        StageOutput::PassThrough { ids } => {
            let p = ids[input] as u32;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if batch.num_rows() > 0 && tx.send(Ok((p, batch))).await.is_err() {
                    return Ok(());
                }
            }
        }
        StageOutput::Hash { exprs, partitions } => {
            let mut partitioner = BatchPartitioner::new_hash_partitioner(exprs, partitions, timer)?;
            while let Some(batch) = stream.next().await {
                let parts: Vec<(usize, RecordBatch)> =
                    partitioner.partition_iter(batch?)?.collect::<Result<_>>()?;
                for (p, b) in parts {
                    if b.num_rows() > 0 && tx.send(Ok((p as u32, b))).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}
