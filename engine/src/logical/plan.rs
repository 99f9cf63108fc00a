//! The logical plan: what to compute, by column name, with schemas resolved.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::expr::{AggregateExpr, Expr, SortExpr};
use crate::physical::join::JoinType;

/// Where a scan reads from.
#[derive(Debug, Clone)]
pub enum ScanSource {
    /// Batches in memory, split into `partitions` (round-robin by batch).
    Memory {
        batches: Arc<Vec<RecordBatch>>,
        partitions: usize,
    },
    /// Parquet files (a file, or every `*.parquet` under a directory).
    Parquet {
        files: Vec<PathBuf>,
        /// Uncompressed bytes of the projected columns (for broadcast decisions).
        projected_bytes: u64,
    },
}

/// Which side to broadcast, when hinted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastHint {
    Left,
    Right,
}

/// How a repartition distributes rows.
#[derive(Debug, Clone)]
pub enum RepartitionScheme {
    Hash(Vec<Expr>, usize),
    RoundRobin(usize),
}

/// A logical plan node. Each node knows its output schema.
#[derive(Debug, Clone)]
pub enum LogicalPlan {
    Scan {
        source: ScanSource,
        /// Full schema of the source.
        source_schema: SchemaRef,
        /// Projected columns (indices into `source_schema`).
        projection: Option<Vec<usize>>,
        schema: SchemaRef,
    },
    Filter {
        input: Arc<LogicalPlan>,
        predicate: Expr,
    },
    Project {
        input: Arc<LogicalPlan>,
        exprs: Vec<Expr>,
        schema: SchemaRef,
    },
    Join {
        left: Arc<LogicalPlan>,
        right: Arc<LogicalPlan>,
        on: Vec<(Expr, Expr)>,
        join_type: JoinType,
        hint: Option<BroadcastHint>,
        schema: SchemaRef,
    },
    Aggregate {
        input: Arc<LogicalPlan>,
        group: Vec<Expr>,
        aggs: Vec<AggregateExpr>,
        /// Grouping sets as indices into `group` (None: plain GROUP BY).
        grouping_sets: Option<Vec<Vec<usize>>>,
        schema: SchemaRef,
    },
    Repartition {
        input: Arc<LogicalPlan>,
        scheme: RepartitionScheme,
    },
    Union {
        inputs: Vec<Arc<LogicalPlan>>,
        schema: SchemaRef,
    },
    Sort {
        input: Arc<LogicalPlan>,
        exprs: Vec<SortExpr>,
        fetch: Option<usize>,
    },
    Limit {
        input: Arc<LogicalPlan>,
        fetch: usize,
    },
}

impl LogicalPlan {
    pub fn schema(&self) -> SchemaRef {
        match self {
            LogicalPlan::Scan { schema, .. }
            | LogicalPlan::Project { schema, .. }
            | LogicalPlan::Join { schema, .. }
            | LogicalPlan::Aggregate { schema, .. }
            | LogicalPlan::Union { schema, .. } => Arc::clone(schema),
            LogicalPlan::Filter { input, .. }
            | LogicalPlan::Repartition { input, .. }
            | LogicalPlan::Sort { input, .. }
            | LogicalPlan::Limit { input, .. } => input.schema(),
        }
    }

    /// Estimated output size in bytes (for broadcast decisions); `None` if unknown.
    pub fn estimated_bytes(&self) -> Option<u64> {
        match self {
            LogicalPlan::Scan {
                source,
                source_schema,
                projection,
                ..
            } => match source {
                ScanSource::Memory { batches, .. } => {
                    let total: u64 = batches
                        .iter()
                        .map(|b| b.get_array_memory_size() as u64)
                        .sum();
                    let frac = match projection {
                        Some(p) if !source_schema.fields().is_empty() => {
                            p.len() as f64 / source_schema.fields().len() as f64
                        }
                        _ => 1.0,
                    };
                    Some((total as f64 * frac) as u64)
                }
                ScanSource::Parquet {
                    projected_bytes, ..
                } => Some(*projected_bytes),
            },
            // Like Spark: filters keep the input estimate (no selectivity guess).
            LogicalPlan::Filter { input, .. }
            | LogicalPlan::Repartition { input, .. }
            | LogicalPlan::Sort { input, .. } => input.estimated_bytes(),
            LogicalPlan::Project { input, exprs, .. } => {
                let in_cols = input.schema().fields().len().max(1) as f64;
                input
                    .estimated_bytes()
                    .map(|b| (b as f64 * (exprs.len() as f64 / in_cols).max(0.1)) as u64)
            }
            LogicalPlan::Limit { input, fetch } => {
                input.estimated_bytes().map(|b| b.min(*fetch as u64 * 64))
            }
            LogicalPlan::Join { left, right, .. } => Some(
                left.estimated_bytes()?
                    .saturating_add(right.estimated_bytes()?),
            ),
            LogicalPlan::Aggregate { input, .. } => input.estimated_bytes(),
            LogicalPlan::Union { inputs, .. } => {
                let mut t = 0u64;
                for i in inputs {
                    t = t.saturating_add(i.estimated_bytes()?);
                }
                Some(t)
            }
        }
    }

    /// Indented text rendering.
    pub fn display(&self) -> String {
        let mut s = String::new();
        self.fmt_into(0, &mut s);
        s
    }

    fn fmt_into(&self, depth: usize, out: &mut String) {
        out.push_str(&"  ".repeat(depth));
        let line = match self {
            LogicalPlan::Scan { source, schema, .. } => {
                let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                match source {
                    ScanSource::Memory { batches, .. } => {
                        format!(
                            "Scan memory ({} batches) [{}]",
                            batches.len(),
                            cols.join(", ")
                        )
                    }
                    ScanSource::Parquet { files, .. } => {
                        format!("Scan parquet ({} files) [{}]", files.len(), cols.join(", "))
                    }
                }
            }
            LogicalPlan::Filter { predicate, .. } => format!("Filter {predicate}"),
            LogicalPlan::Project { exprs, .. } => format!(
                "Project {}",
                exprs
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LogicalPlan::Join {
                on,
                join_type,
                hint,
                ..
            } => format!(
                "Join {join_type:?} on {}{}",
                on.iter()
                    .map(|(l, r)| format!("{l} = {r}"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
                if hint.is_some() {
                    " (broadcast hint)"
                } else {
                    ""
                }
            ),
            LogicalPlan::Aggregate {
                group,
                aggs,
                grouping_sets,
                ..
            } => format!(
                "Aggregate by [{}]{} [{}]",
                group
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if grouping_sets.is_some() {
                    " grouping sets"
                } else {
                    ""
                },
                aggs.iter()
                    .map(|a| a.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LogicalPlan::Repartition { scheme, .. } => format!("Repartition {scheme:?}"),
            LogicalPlan::Union { inputs, .. } => format!("Union ({} inputs)", inputs.len()),
            LogicalPlan::Sort { exprs, fetch, .. } => format!(
                "Sort [{}] fetch {fetch:?}",
                exprs
                    .iter()
                    .map(|s| format!("{} {}", s.expr, if s.ascending { "ASC" } else { "DESC" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LogicalPlan::Limit { fetch, .. } => format!("Limit {fetch}"),
        };
        out.push_str(&line);
        out.push('\n');
        for c in self.inputs() {
            c.fmt_into(depth + 1, out);
        }
    }

    pub fn inputs(&self) -> Vec<&Arc<LogicalPlan>> {
        match self {
            LogicalPlan::Scan { .. } => vec![],
            LogicalPlan::Filter { input, .. }
            | LogicalPlan::Project { input, .. }
            | LogicalPlan::Aggregate { input, .. }
            | LogicalPlan::Repartition { input, .. }
            | LogicalPlan::Sort { input, .. }
            | LogicalPlan::Limit { input, .. } => vec![input],
            LogicalPlan::Join { left, right, .. } => vec![left, right],
            LogicalPlan::Union { inputs, .. } => inputs.iter().collect(),
        }
    }
}
