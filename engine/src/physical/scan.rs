//! Sources: in-memory batches and Parquet files.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::util::generate;
use super::{BatchStream, ExecutionPlan, TaskContext};
use crate::error::{EngineError, Result};
use crate::metrics::TaskMetrics;

/// Batches held in memory, pre-split into partitions.
#[derive(Debug)]
pub struct MemoryExec {
    pub partitions: Vec<Vec<RecordBatch>>,
    pub schema: SchemaRef,
    /// Output columns (indices into the batches), if projected.
    pub projection: Option<Vec<usize>>,
}

impl ExecutionPlan for MemoryExec {
    fn name(&self) -> &'static str {
        "MemoryScan"
    }
    fn describe(&self) -> String {
        let rows: usize = self.partitions.iter().flatten().map(|b| b.num_rows()).sum();
        format!(
            "MemoryScan: {} partitions, {rows} rows",
            self.partitions.len()
        )
    }
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn output_partitions(&self) -> usize {
        self.partitions.len().max(1)
    }
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream> {
        let batches = self.partitions.get(partition).cloned().unwrap_or_default();
        let projection = self.projection.clone();
        let schema = Arc::clone(&self.schema);
        Ok(generate(move |mut out| async move {
            for b in batches {
                let b = match &projection {
                    Some(p) => RecordBatch::try_new(
                        Arc::clone(&schema),
                        p.iter().map(|i| Arc::clone(b.column(*i))).collect(),
                    )?,
                    None => b,
                };
                TaskMetrics::add(&ctx.metrics.rows_in, b.num_rows() as u64);
                TaskMetrics::add(&ctx.metrics.bytes_in, b.get_array_memory_size() as u64);
                if !out.emit(b).await {
                    break;
                }
            }
            Ok(())
        }))
    }
}

/// A slice of a Parquet file: its row groups `row_groups`.
#[derive(Debug, Clone)]
pub struct ParquetChunk {
    pub path: PathBuf,
    pub row_groups: Vec<usize>,
}

/// Parquet files read with column projection; partitions are groups of row groups.
#[derive(Debug)]
pub struct ParquetExec {
    pub partitions: Vec<Vec<ParquetChunk>>,
    /// Projected leaf columns (indices into the file schema's root columns).
    pub projection: Option<Vec<usize>>,
    pub schema: SchemaRef,
}

impl ExecutionPlan for ParquetExec {
    fn name(&self) -> &'static str {
        "ParquetScan"
    }
    fn describe(&self) -> String {
        let cols: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        format!(
            "ParquetScan: {} partitions, columns [{}]",
            self.partitions.len(),
            cols.join(", ")
        )
    }
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn output_partitions(&self) -> usize {
        self.partitions.len().max(1)
    }
    fn children(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<BatchStream> {
        let chunks = self.partitions.get(partition).cloned().unwrap_or_default();
        let projection = self.projection.clone();
        let schema = Arc::clone(&self.schema);
        let batch_size = ctx.batch_size();
        // Position of each requested column among the file-ordered output.
        let order: Option<Vec<usize>> = projection.as_ref().map(|p| {
            let mut sorted = p.clone();
            sorted.sort_unstable();
            p.iter()
                .map(|i| sorted.binary_search(i).unwrap_or(0))
                .collect()
        });
        Ok(generate(move |mut out| async move {
            for chunk in chunks {
                if chunk.row_groups.is_empty() {
                    continue;
                }
                let file = File::open(&chunk.path).map_err(|e| EngineError::Io {
                    path: chunk.path.display().to_string(),
                    source: e,
                })?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
                let mask = match &projection {
                    Some(p) => ProjectionMask::roots(builder.parquet_schema(), p.iter().copied()),
                    None => ProjectionMask::all(),
                };
                let reader = builder
                    .with_projection(mask)
                    .with_row_groups(chunk.row_groups.clone())
                    .with_batch_size(batch_size)
                    .build()?;
                for b in reader {
                    let b = b?;
                    // The reader yields projected columns in file order; put
                    // them in the requested order and use the plan's schema.
                    let cols = match &order {
                        Some(o) => o.iter().map(|i| Arc::clone(b.column(*i))).collect(),
                        None => b.columns().to_vec(),
                    };
                    let b = RecordBatch::try_new(Arc::clone(&schema), cols)?;
                    TaskMetrics::add(&ctx.metrics.rows_in, b.num_rows() as u64);
                    TaskMetrics::add(&ctx.metrics.bytes_in, b.get_array_memory_size() as u64);
                    if !out.emit(b).await {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }))
    }
}

/// Lists the Parquet files of a path (a file, or a directory of `*.parquet`).
pub fn list_parquet_files(path: &std::path::Path) -> Result<Vec<PathBuf>> {
    let io = |e| EngineError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_file() && name.ends_with(".parquet") && !name.starts_with('.') {
            files.push(p);
        } else if p.is_dir() && !name.starts_with('.') && !name.starts_with('_') {
            files.extend(list_parquet_files(&p)?);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(EngineError::plan(format!(
            "no .parquet files under {}",
            path.display()
        )));
    }
    Ok(files)
}
