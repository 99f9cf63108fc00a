//! Filter: keeps rows whose predicate is true (null counts as false).

use std::sync::Arc;

use arrow::array::{Array, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;

use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::{EngineError, Result};
use crate::expr::PhysicalExpr;

#[derive(Debug)]
pub struct FilterExec {
    pub input: Arc<dyn ExecutionPlan>,
    pub predicate: PhysicalExpr,
}

impl ExecutionPlan for FilterExec {
    fn name(&self) -> &'static str {
        "Filter"
    }
    fn describe(&self) -> String {
        format!("Filter: {}", self.predicate)
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
        let input = crate::physical::execute(&self.input, partition, ctx)?;
        let pred = self.predicate.clone();
        Ok(Box::pin(input.filter_map(move |b| {
            let out = b.and_then(|b| {
                let mask = pred.evaluate(&b)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| EngineError::plan("filter predicate is not boolean"))?;
                if mask.true_count() == b.num_rows() && mask.null_count() == 0 {
                    return Ok(b);
                }
                Ok(filter_record_batch(&b, mask)?)
            });
            futures::future::ready(match out {
                Ok(b) if b.num_rows() == 0 => None,
                other => Some(other),
            })
        })))
    }
}
