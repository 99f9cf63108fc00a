//! Expand: one output row per input row and grouping set (for ROLLUP and
//! GROUPING SETS, as in Spark). Keys not in a set become null and a
//! `__grouping_id` column tells the sets apart.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::util::generate;
use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::Result;
use crate::expr::PhysicalExpr;
use futures::StreamExt;

#[derive(Debug)]
pub struct ExpandExec {
    pub input: Arc<dyn ExecutionPlan>,
    /// One projection per grouping set.
    pub projections: Vec<Vec<PhysicalExpr>>,
    pub schema: SchemaRef,
}

impl ExecutionPlan for ExpandExec {
    fn name(&self) -> &'static str {
        "Expand"
    }
    fn describe(&self) -> String {
        format!("Expand: {} grouping sets", self.projections.len())
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
        let mut input = crate::physical::execute(&self.input, partition, ctx)?;
        let projections = self.projections.clone();
        let schema = Arc::clone(&self.schema);
        Ok(generate(move |mut out| async move {
            while let Some(b) = input.next().await {
                let b = b?;
                for p in &projections {
                    let cols = p
                        .iter()
                        .map(|e| e.evaluate(&b))
                        .collect::<Result<Vec<_>>>()?;
                    if !out
                        .emit(RecordBatch::try_new(Arc::clone(&schema), cols)?)
                        .await
                    {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }))
    }
}
