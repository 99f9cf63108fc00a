//! Union all: the partitions of every input, one after another.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;

use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::{EngineError, Result};

#[derive(Debug)]
pub struct UnionExec {
    pub inputs: Vec<Arc<dyn ExecutionPlan>>,
    pub schema: SchemaRef,
}

impl ExecutionPlan for UnionExec {
    fn name(&self) -> &'static str {
        "Union"
    }
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn output_partitions(&self) -> usize {
        self.inputs.iter().map(|i| i.output_partitions()).sum()
    }
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        self.inputs.clone()
    }
    fn concatenates_inputs(&self) -> bool {
        true
    }
    fn execute(&self, mut partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream> {
        let mut offset = 0u32;
        for input in &self.inputs {
            let n = input.output_partitions();
            if partition < n {
                let schema = Arc::clone(&self.schema);
                // A coalesced task's range lies within this input (the
                // scheduler never lets one span two); the input counts its
                // partitions from 0.
                let ctx = match &ctx.read_range {
                    Some(r) if r.start >= offset => Arc::new(TaskContext {
                        read_range: Some(r.start - offset..r.end - offset),
                        ..(*ctx).clone()
                    }),
                    _ => ctx,
                };
                let s = crate::physical::execute(input, partition, ctx)?;
                // Re-label columns with the union's names (types already match).
                return Ok(Box::pin(s.map(move |b| {
                    let b = b?;
                    Ok(RecordBatch::try_new(
                        Arc::clone(&schema),
                        b.columns().to_vec(),
                    )?)
                })));
            }
            partition -= n;
            offset += n as u32;
        }
        Err(EngineError::internal("union partition out of range"))
    }
}
