//! Projection: computes output columns from expressions.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;

use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::Result;
use crate::expr::PhysicalExpr;

#[derive(Debug)]
pub struct ProjectionExec {
    pub input: Arc<dyn ExecutionPlan>,
    pub exprs: Vec<PhysicalExpr>,
    pub schema: SchemaRef,
}

impl ExecutionPlan for ProjectionExec {
    fn name(&self) -> &'static str {
        "Projection"
    }
    fn describe(&self) -> String {
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        format!("Projection: {}", names.join(", "))
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
        let input = crate::physical::execute(&self.input, partition, ctx)?;
        let exprs = self.exprs.clone();
        let schema = Arc::clone(&self.schema);
        Ok(Box::pin(input.map(move |b| {
            let b = b?;
            let cols = exprs
                .iter()
                .map(|e| e.evaluate(&b))
                .collect::<Result<Vec<_>>>()?;
            let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                cols,
                &opts,
            )?)
        })))
    }
}
