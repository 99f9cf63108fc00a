//! Limit: the first `fetch` rows of each partition.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use futures::StreamExt;

use super::util::generate;
use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::Result;

#[derive(Debug)]
pub struct LimitExec {
    pub input: Arc<dyn ExecutionPlan>,
    pub fetch: usize,
}

impl ExecutionPlan for LimitExec {
    fn name(&self) -> &'static str {
        "Limit"
    }
    fn describe(&self) -> String {
        format!("Limit: {}", self.fetch)
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
        let mut input = crate::physical::execute(&self.input, partition, ctx)?;
        let fetch = self.fetch;
        Ok(generate(move |mut out| async move {
            let mut left = fetch;
            while left > 0 {
                let Some(b) = input.next().await else { break };
                let b = b?;
                let b = if b.num_rows() > left {
                    b.slice(0, left)
                } else {
                    b
                };
                left -= b.num_rows();
                if !out.emit(b).await {
                    break;
                }
            }
            Ok(())
        }))
    }
}
