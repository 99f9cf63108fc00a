//! Logical → physical planning, cutting the plan into stages at exchanges.
//!
//! Every wide transform becomes an exchange: the subtree below it becomes a
//! map stage whose output is a shuffle, and a [`ShuffleReadExec`] takes its
//! place above. The rules:
//!
//! | logical | physical |
//! | --- | --- |
//! | aggregate | [Expand for grouping sets] → partial agg → hash exchange on keys (single if no keys) → final agg |
//! | join, small side ≤ threshold (or hinted) | small side → single-partition exchange read whole by every task (broadcast) → hash join |
//! | join otherwise | both sides → hash exchange on the keys (N partitions) → hash join |
//! | sort | local sort (top-k with a limit) → single exchange → final sort (merge) |
//! | limit | local limit → single exchange → limit |
//! | repartition | hash or round-robin exchange |
//! | distinct | aggregate with every column as key |

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::aggregate::accumulator::signature;
use super::aggregate::{AggMode, AggSpec, AggregateExec, GrandTotal};
use super::expand::ExpandExec;
use super::filter::FilterExec;
use super::join::{HashJoinExec, JoinMode, JoinType};
use super::limit::LimitExec;
use super::projection::ProjectionExec;
use super::scan::{MemoryExec, ParquetChunk, ParquetExec};
use super::shuffle_read::ShuffleReadExec;
use super::sort::SortExec;
use super::union::UnionExec;
use super::ExecutionPlan;
use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::exchange::Partitioning;
use crate::expr::coerce::common_type;
use crate::expr::physical::{bind, cast_to};
use crate::expr::{AggregateFunction, Expr, PhysicalExpr, ScalarValue};
use crate::logical::plan::{BroadcastHint, LogicalPlan, RepartitionScheme, ScanSource};

/// A map stage: runs `plan` for each of its partitions and writes a shuffle.
#[derive(Debug, Clone)]
pub struct StageDef {
    pub stage_id: usize,
    pub plan: Arc<dyn ExecutionPlan>,
    pub shuffle_id: u32,
    pub partitioning: Partitioning,
    pub broadcast: bool,
}

/// Stages in dependency order plus the result plan.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub stages: Vec<StageDef>,
    pub root: Arc<dyn ExecutionPlan>,
}

impl JobPlan {
    /// Text rendering of every stage.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for st in &self.stages {
            s.push_str(&format!(
                "Stage {} → shuffle {} ({}{}), {} tasks\n",
                st.stage_id,
                st.shuffle_id,
                st.partitioning.describe(),
                if st.broadcast { ", broadcast" } else { "" },
                st.plan.output_partitions()
            ));
            for line in super::display_plan(st.plan.as_ref()).lines() {
                s.push_str("  ");
                s.push_str(line);
                s.push('\n');
            }
        }
        s.push_str(&format!(
            "Result stage {}, {} tasks\n",
            self.stages.len(),
            self.root.output_partitions()
        ));
        for line in super::display_plan(self.root.as_ref()).lines() {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

/// Plans one job.
pub struct PhysicalPlanner<'a> {
    config: &'a EngineConfig,
    next_shuffle_id: &'a AtomicU32,
    stages: Vec<StageDef>,
    /// Broadcast reads by logical subtree (pointer identity).
    broadcasts: std::collections::HashMap<usize, Arc<dyn ExecutionPlan>>,
}

impl<'a> PhysicalPlanner<'a> {
    pub fn new(config: &'a EngineConfig, next_shuffle_id: &'a AtomicU32) -> Self {
        Self {
            config,
            next_shuffle_id,
            stages: Vec::new(),
            broadcasts: std::collections::HashMap::new(),
        }
    }

    /// Plans `plan` into stages.
    pub fn plan_job(mut self, plan: &LogicalPlan) -> Result<JobPlan> {
        let root = self.plan(plan)?;
        Ok(JobPlan {
            stages: self.stages,
            root,
        })
    }

    fn exchange(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        partitioning: Partitioning,
        broadcast: bool,
    ) -> Arc<dyn ExecutionPlan> {
        let shuffle_id = self.next_shuffle_id.fetch_add(1, Ordering::Relaxed);
        let stage_id = self.stages.len();
        let schema = input.schema();
        let n = partitioning.num_partitions();
        self.stages.push(StageDef {
            stage_id,
            plan: input,
            shuffle_id,
            partitioning,
            broadcast,
        });
        Arc::new(ShuffleReadExec {
            shuffle_id,
            producer_stage: stage_id,
            schema,
            num_partitions: n,
            broadcast,
        })
    }

    fn plan(&mut self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(match plan {
            LogicalPlan::Scan {
                source,
                projection,
                schema,
                ..
            } => self.plan_scan(source, projection.clone(), Arc::clone(schema))?,
            LogicalPlan::Filter { input, predicate } => {
                let input = self.plan(input)?;
                let predicate = bind(predicate, &input.schema())?;
                Arc::new(FilterExec { input, predicate })
            }
            LogicalPlan::Project {
                input,
                exprs,
                schema,
            } => {
                let input = self.plan(input)?;
                let s = input.schema();
                let exprs = exprs
                    .iter()
                    .map(|e| bind(e, &s))
                    .collect::<Result<Vec<_>>>()?;
                Arc::new(ProjectionExec {
                    input,
                    exprs,
                    schema: Arc::clone(schema),
                })
            }
            LogicalPlan::Join {
                left,
                right,
                on,
                join_type,
                hint,
                schema,
            } => self.plan_join(left, right, on, *join_type, *hint, schema)?,
            LogicalPlan::Aggregate {
                input,
                group,
                aggs,
                grouping_sets,
                schema,
            } => self.plan_aggregate(input, group, aggs, grouping_sets.as_ref(), schema)?,
            LogicalPlan::Repartition { input, scheme } => {
                let input = self.plan(input)?;
                let part = match scheme {
                    RepartitionScheme::Hash(keys, n) => {
                        let s = input.schema();
                        Partitioning::Hash(
                            keys.iter().map(|k| bind(k, &s)).collect::<Result<_>>()?,
                            *n,
                        )
                    }
                    RepartitionScheme::RoundRobin(n) => Partitioning::RoundRobin(*n),
                };
                self.exchange(input, part, false)
            }
            LogicalPlan::Union { inputs, schema } => {
                let inputs = inputs
                    .iter()
                    .map(|i| self.plan(i))
                    .collect::<Result<Vec<_>>>()?;
                Arc::new(UnionExec {
                    inputs,
                    schema: Arc::clone(schema),
                })
            }
            LogicalPlan::Sort {
                input,
                exprs,
                fetch,
            } => {
                let input = self.plan(input)?;
                let s = input.schema();
                let keys = exprs
                    .iter()
                    .map(|e| {
                        Ok((
                            bind(&e.expr, &s)?,
                            SortOptions {
                                descending: !e.ascending,
                                nulls_first: e.nulls_first,
                            },
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let local: Arc<dyn ExecutionPlan> = Arc::new(SortExec {
                    input: Arc::clone(&input),
                    keys: keys.clone(),
                    fetch: *fetch,
                });
                if input.output_partitions() <= 1 {
                    local
                } else {
                    let read = self.exchange(local, Partitioning::Single, false);
                    Arc::new(SortExec {
                        input: read,
                        keys,
                        fetch: *fetch,
                    })
                }
            }
            LogicalPlan::Limit { input, fetch } => {
                let input = self.plan(input)?;
                let many = input.output_partitions() > 1;
                let local: Arc<dyn ExecutionPlan> = Arc::new(LimitExec {
                    input,
                    fetch: *fetch,
                });
                if many {
                    let read = self.exchange(local, Partitioning::Single, false);
                    Arc::new(LimitExec {
                        input: read,
                        fetch: *fetch,
                    })
                } else {
                    local
                }
            }
        })
    }

    fn plan_scan(
        &mut self,
        source: &ScanSource,
        projection: Option<Vec<usize>>,
        schema: SchemaRef,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let n = self.config.scan_partitions();
        Ok(match source {
            ScanSource::Memory {
                batches,
                partitions,
            } => {
                let parts = split_batches(batches, (*partitions).max(1));
                Arc::new(MemoryExec {
                    partitions: parts,
                    schema,
                    projection,
                })
            }
            ScanSource::Parquet { files, .. } => {
                let mut groups: Vec<(std::path::PathBuf, usize, i64)> = Vec::new();
                for f in files {
                    let file = std::fs::File::open(f).map_err(|e| EngineError::Io {
                        path: f.display().to_string(),
                        source: e,
                    })?;
                    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        file,
                    )?;
                    for (i, rg) in b.metadata().row_groups().iter().enumerate() {
                        groups.push((f.clone(), i, rg.num_rows()));
                    }
                }
                // Greedy balance by rows, keeping each file's row groups in order.
                let n = n.min(groups.len()).max(1);
                let mut parts: Vec<Vec<ParquetChunk>> = vec![Vec::new(); n];
                let mut load = vec![0i64; n];
                let mut order: Vec<usize> = (0..groups.len()).collect();
                order.sort_by_key(|i| std::cmp::Reverse(groups[*i].2));
                let mut assign = vec![0usize; groups.len()];
                for i in order {
                    let p = (0..n).min_by_key(|p| load[*p]).unwrap_or(0);
                    load[p] += groups[i].2;
                    assign[i] = p;
                }
                for (i, (path, rg, _)) in groups.iter().enumerate() {
                    let part = &mut parts[assign[i]];
                    match part.last_mut() {
                        Some(c) if &c.path == path => c.row_groups.push(*rg),
                        _ => part.push(ParquetChunk {
                            path: path.clone(),
                            row_groups: vec![*rg],
                        }),
                    }
                }
                Arc::new(ParquetExec {
                    partitions: parts,
                    projection,
                    schema,
                })
            }
        })
    }

    fn plan_join(
        &mut self,
        left: &Arc<LogicalPlan>,
        right: &Arc<LogicalPlan>,
        on: &[(Expr, Expr)],
        join_type: JoinType,
        hint: Option<BroadcastHint>,
        schema: &SchemaRef,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (ls, rs) = (left.schema(), right.schema());
        let mut lk = Vec::new();
        let mut rk = Vec::new();
        let mut types = Vec::new();
        for (l, r) in on {
            let bl = bind(l, &ls)?;
            let br = bind(r, &rs)?;
            let (tl, tr) = (bl.data_type(&ls)?, br.data_type(&rs)?);
            let t = common_type(&tl, &tr).ok_or_else(|| {
                EngineError::plan(format!(
                    "join keys `{l}` ({tl}) and `{r}` ({tr}) are incompatible"
                ))
            })?;
            lk.push(cast_to(bl, &t, &ls)?);
            rk.push(cast_to(br, &t, &rs)?);
            types.push(t);
        }
        let threshold = self.config.broadcast_threshold as u64;
        let fits =
            |p: &LogicalPlan| threshold > 0 && p.estimated_bytes().is_some_and(|b| b <= threshold);
        let (l_est, r_est) = (
            left.estimated_bytes().unwrap_or(u64::MAX),
            right.estimated_bytes().unwrap_or(u64::MAX),
        );
        // Which side builds (is hashed in memory): true = left.
        let (build_left, broadcast) = match join_type {
            JoinType::Left => (
                false,
                threshold > 0 && (hint == Some(BroadcastHint::Right) || fits(right)),
            ),
            JoinType::Inner => {
                if threshold > 0 && hint == Some(BroadcastHint::Left) {
                    (true, true)
                } else if threshold > 0 && hint == Some(BroadcastHint::Right) {
                    (false, true)
                } else {
                    let build_left = l_est < r_est;
                    let side = if build_left { left } else { right };
                    (build_left, fits(side))
                }
            }
        };
        let (probe_l, build_l, pk, bk) = if build_left {
            (right, left, rk, lk)
        } else {
            (left, right, lk, rk)
        };
        let probe = self.plan(probe_l)?;
        let (probe, build, mode) = if broadcast {
            // One broadcast per logical subtree: reused by every join that
            // builds on the same DataFrame.
            let key = Arc::as_ptr(build_l) as *const () as usize;
            let b = match self.broadcasts.get(&key) {
                Some(b) => Arc::clone(b),
                None => {
                    let planned = self.plan(build_l)?;
                    let b = self.exchange(planned, Partitioning::Single, true);
                    self.broadcasts.insert(key, Arc::clone(&b));
                    b
                }
            };
            (probe, b, JoinMode::Broadcast)
        } else {
            let n = self.config.shuffle_partitions;
            let build = self.plan(build_l)?;
            let p = self.exchange(probe, Partitioning::Hash(pk.clone(), n), false);
            let b = self.exchange(build, Partitioning::Hash(bk.clone(), n), false);
            (p, b, JoinMode::Partitioned)
        };
        let mut fields: Vec<Field> = probe
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for f in build.schema().fields() {
            let f = f.as_ref().clone();
            fields.push(if join_type == JoinType::Left {
                f.with_nullable(true)
            } else {
                f
            });
        }
        let join_schema = Arc::new(Schema::new(fields));
        let join: Arc<dyn ExecutionPlan> = Arc::new(HashJoinExec {
            probe,
            build,
            probe_keys: pk,
            build_keys: bk,
            key_types: types,
            join_type,
            mode,
            schema: Arc::clone(&join_schema),
        });
        if !build_left {
            return Ok(join);
        }
        // Restore left-then-right column order.
        let nr = rs.fields().len();
        let nl = ls.fields().len();
        let exprs: Vec<PhysicalExpr> = (nr..nr + nl)
            .chain(0..nr)
            .map(PhysicalExpr::Column)
            .collect();
        Ok(Arc::new(ProjectionExec {
            input: join,
            exprs,
            schema: Arc::clone(schema),
        }))
    }

    fn plan_aggregate(
        &mut self,
        input: &LogicalPlan,
        group: &[Expr],
        aggs: &[crate::expr::AggregateExpr],
        grouping_sets: Option<&Vec<Vec<usize>>>,
        schema: &SchemaRef,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut input = self.plan(input)?;
        let in_schema = input.schema();
        let mut group_fields = Vec::new();
        let mut group_exprs = Vec::new();
        for g in group {
            let b = bind(g, &in_schema)?;
            group_fields.push(Field::new(g.name(), b.data_type(&in_schema)?, true));
            group_exprs.push(b);
        }
        if let Some(sets) = grouping_sets {
            // Expand: [__g0.., __grouping_id, input columns..]
            let k = group_exprs.len();
            let mut fields: Vec<Field> = (0..k)
                .map(|i| Field::new(format!("__g{i}"), group_fields[i].data_type().clone(), true))
                .collect();
            fields.push(Field::new("__grouping_id", DataType::Int64, false));
            fields.extend(in_schema.fields().iter().map(|f| f.as_ref().clone()));
            let expand_schema = Arc::new(Schema::new(fields));
            let mut projections = Vec::new();
            for (set_id, set) in sets.iter().enumerate() {
                let mut p = Vec::new();
                for i in 0..k {
                    if set.contains(&i) {
                        p.push(group_exprs[i].clone());
                    } else {
                        let t = group_fields[i].data_type().clone();
                        let arr = ScalarValue::Null(t.clone()).to_array(1)?;
                        p.push(PhysicalExpr::Literal(ScalarValue::Null(t), arr));
                    }
                }
                let id = ScalarValue::Int64(set_id as i64);
                let arr = id.to_array(1)?;
                p.push(PhysicalExpr::Literal(id, arr));
                p.extend((0..in_schema.fields().len()).map(PhysicalExpr::Column));
                projections.push(p);
            }
            input = Arc::new(ExpandExec {
                input,
                projections,
                schema: Arc::clone(&expand_schema),
            });
            group_exprs = (0..=k).map(PhysicalExpr::Column).collect();
            group_fields.push(Field::new("__grouping_id", DataType::Int64, true));
        }
        let agg_in = input.schema();
        let specs = aggs
            .iter()
            .map(|a| {
                let b = bind(&a.arg, &agg_in)?;
                let t = b.data_type(&agg_in)?;
                let sig = signature(a.func, &t)?;
                let arg = if matches!(
                    a.func,
                    AggregateFunction::Count | AggregateFunction::CountStar
                ) {
                    b
                } else {
                    cast_to(b, &sig.input, &agg_in)?
                };
                Ok(AggSpec {
                    func: a.func,
                    arg,
                    sig,
                    name: a.name.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let partial_schema = AggregateExec::phase_schema(AggMode::Partial, &group_fields, &specs);
        let partial = Arc::new(AggregateExec {
            input,
            mode: AggMode::Partial,
            group_exprs,
            group_fields: group_fields.clone(),
            aggs: specs.clone(),
            schema: partial_schema,
            grand_total: None,
        });
        let nk = group_fields.len();
        let part = if nk == 0 {
            Partitioning::Single
        } else {
            Partitioning::Hash(
                (0..nk).map(PhysicalExpr::Column).collect(),
                self.config.shuffle_partitions,
            )
        };
        let grand_total = match grouping_sets.and_then(|s| s.iter().position(|s| s.is_empty())) {
            Some(set_id) => Some(grand_total_key(&group_fields, set_id, &part)?),
            None => None,
        };
        let read = self.exchange(partial, part, false);
        let final_schema = AggregateExec::phase_schema(AggMode::Final, &group_fields, &specs);
        let fin: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec {
            input: read,
            mode: AggMode::Final,
            group_exprs: Vec::new(),
            group_fields: group_fields.clone(),
            aggs: specs,
            schema: Arc::clone(&final_schema),
            grand_total,
        });
        // Drop the grouping id and apply the logical names/nullability.
        let keep: Vec<PhysicalExpr> = if grouping_sets.is_some() {
            let k = nk - 1;
            (0..k)
                .chain(nk..final_schema.fields().len())
                .map(PhysicalExpr::Column)
                .collect()
        } else {
            (0..final_schema.fields().len())
                .map(PhysicalExpr::Column)
                .collect()
        };
        Ok(Arc::new(ProjectionExec {
            input: fin,
            exprs: keep,
            schema: Arc::clone(schema),
        }))
    }
}

/// The grand-total group of grouping sets (`set_id` is the empty set): null
/// keys and the grouping id, and the partition `part` sends that key to.
fn grand_total_key(
    group_fields: &[Field],
    set_id: usize,
    part: &Partitioning,
) -> Result<GrandTotal> {
    let k = group_fields.len() - 1;
    let mut key: Vec<ArrayRef> = group_fields[..k]
        .iter()
        .map(|f| arrow::array::new_null_array(f.data_type(), 1))
        .collect();
    key.push(Arc::new(arrow::array::Int64Array::from(vec![
        set_id as i64,
    ])));
    let partition = match part {
        Partitioning::Hash(_, n) => {
            let mut h = Vec::new();
            crate::exchange::hash::hash_columns(
                &key,
                crate::exchange::hash::SEED_EXCHANGE,
                &mut h,
            )?;
            crate::exchange::hash::bucket(h[0], *n)
        }
        Partitioning::RoundRobin(_) | Partitioning::Single => 0,
    };
    Ok(GrandTotal { key, partition })
}

/// Splits batches into `n` partitions of roughly equal row counts (zero-copy slices).
pub fn split_batches(batches: &[RecordBatch], n: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let per = total.div_ceil(n).max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    let mut p = 0;
    let mut in_p = 0;
    for b in batches {
        let mut off = 0;
        while off < b.num_rows() {
            let take = (per - in_p).min(b.num_rows() - off);
            parts[p].push(b.slice(off, take));
            off += take;
            in_p += take;
            if in_p == per && p + 1 < n {
                p += 1;
                in_p = 0;
            }
        }
    }
    parts
}
