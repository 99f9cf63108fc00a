//! The DataFrame API.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::plan::{BroadcastHint, LogicalPlan, RepartitionScheme};
use crate::error::{EngineError, Result};
use crate::expr::physical::bind;
use crate::expr::{AggregateExpr, AggregateFunction, Expr, SortExpr};
use crate::metrics::JobSummary;
use crate::physical::aggregate::accumulator::{output_field, signature};
use crate::physical::join::JoinType;
use crate::session::Session;

/// A lazily evaluated query over a [`Session`].
#[derive(Debug, Clone)]
pub struct DataFrame {
    session: Session,
    plan: Arc<LogicalPlan>,
}

impl DataFrame {
    pub(crate) fn new(session: Session, plan: LogicalPlan) -> Self {
        Self {
            session,
            plan: Arc::new(plan),
        }
    }

    fn wrap(&self, plan: LogicalPlan) -> Self {
        Self {
            session: self.session.clone(),
            plan: Arc::new(plan),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    pub fn logical_plan(&self) -> &Arc<LogicalPlan> {
        &self.plan
    }

    /// Keeps rows where `predicate` is true.
    pub fn filter(&self, predicate: Expr) -> Result<Self> {
        let schema = self.schema();
        let t = bind(&predicate, &schema)?.data_type(&schema)?;
        if t != arrow::datatypes::DataType::Boolean {
            return Err(EngineError::plan(format!(
                "filter predicate `{predicate}` is {t}, not boolean"
            )));
        }
        Ok(self.wrap(LogicalPlan::Filter {
            input: Arc::clone(&self.plan),
            predicate,
        }))
    }

    /// Computes the given expressions (use `.alias()` to name them).
    pub fn select(&self, exprs: Vec<Expr>) -> Result<Self> {
        let input = self.schema();
        let mut fields = Vec::with_capacity(exprs.len());
        for e in &exprs {
            let b = bind(e, &input)?;
            let name = e.name();
            if fields.iter().any(|f: &Field| f.name() == &name) {
                return Err(EngineError::plan(format!(
                    "duplicate output column `{name}`; rename with alias()"
                )));
            }
            fields.push(Field::new(name, b.data_type(&input)?, b.nullable(&input)));
        }
        Ok(self.wrap(LogicalPlan::Project {
            input: Arc::clone(&self.plan),
            exprs,
            schema: Arc::new(Schema::new(fields)),
        }))
    }

    /// Selects columns by name.
    pub fn select_columns(&self, names: &[&str]) -> Result<Self> {
        self.select(names.iter().map(|n| crate::expr::col(*n)).collect())
    }

    /// Adds (or replaces) a computed column.
    pub fn with_column(&self, name: &str, e: Expr) -> Result<Self> {
        let mut exprs: Vec<Expr> = Vec::new();
        let mut replaced = false;
        for f in self.schema().fields() {
            if f.name() == name {
                exprs.push(e.clone().alias(name));
                replaced = true;
            } else {
                exprs.push(crate::expr::col(f.name().as_str()));
            }
        }
        if !replaced {
            exprs.push(e.alias(name));
        }
        self.select(exprs)
    }

    /// Equi-join on pairs of column names (left name, right name).
    pub fn join(
        &self,
        right: &DataFrame,
        join_type: JoinType,
        left_keys: &[&str],
        right_keys: &[&str],
    ) -> Result<Self> {
        if left_keys.len() != right_keys.len() || left_keys.is_empty() {
            return Err(EngineError::plan(
                "join needs the same number (≥1) of left and right keys",
            ));
        }
        let on = left_keys
            .iter()
            .zip(right_keys)
            .map(|(l, r)| (crate::expr::col(*l), crate::expr::col(*r)))
            .collect();
        self.join_on(right, join_type, on, None)
    }

    /// Equi-join on expression pairs, optionally hinting which side to broadcast.
    pub fn join_on(
        &self,
        right: &DataFrame,
        join_type: JoinType,
        on: Vec<(Expr, Expr)>,
        hint: Option<BroadcastHint>,
    ) -> Result<Self> {
        let (ls, rs) = (self.schema(), right.schema());
        for (l, r) in &on {
            bind(l, &ls)?;
            bind(r, &rs)?;
        }
        let mut fields: Vec<Field> = ls.fields().iter().map(|f| f.as_ref().clone()).collect();
        for f in rs.fields() {
            if fields.iter().any(|x| x.name() == f.name()) {
                return Err(EngineError::plan(format!(
                    "column `{}` exists on both join sides; rename one with select/alias first",
                    f.name()
                )));
            }
            let f = f.as_ref().clone();
            fields.push(if join_type == JoinType::Left {
                f.with_nullable(true)
            } else {
                f
            });
        }
        Ok(self.wrap(LogicalPlan::Join {
            left: Arc::clone(&self.plan),
            right: Arc::clone(&right.plan),
            on,
            join_type,
            hint,
            schema: Arc::new(Schema::new(fields)),
        }))
    }

    fn agg_schema(&self, group: &[Expr], aggs: &[AggregateExpr]) -> Result<SchemaRef> {
        let input = self.schema();
        let mut fields = Vec::new();
        for g in group {
            let b = bind(g, &input)?;
            fields.push(Field::new(g.name(), b.data_type(&input)?, true));
        }
        for a in aggs {
            let b = bind(&a.arg, &input)?;
            let t = b.data_type(&input)?;
            let sig = signature(a.func, &t)?;
            if fields.iter().any(|f: &Field| f.name() == &a.name) {
                return Err(EngineError::plan(format!(
                    "duplicate output column `{}`; rename with alias()",
                    a.name
                )));
            }
            fields.push(output_field(&a.name, a.func, &sig));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// GROUP BY `group` computing `aggs` (two-phase: partial, shuffle, final).
    pub fn aggregate(&self, group: Vec<Expr>, aggs: Vec<AggregateExpr>) -> Result<Self> {
        let schema = self.agg_schema(&group, &aggs)?;
        Ok(self.wrap(LogicalPlan::Aggregate {
            input: Arc::clone(&self.plan),
            group,
            aggs,
            grouping_sets: None,
            schema,
        }))
    }

    /// GROUP BY ROLLUP(g1, .., gn): sets (g1..gn), (g1..gn-1), .., ().
    pub fn rollup(&self, group: Vec<Expr>, aggs: Vec<AggregateExpr>) -> Result<Self> {
        let n = group.len();
        let sets = (0..=n).rev().map(|k| (0..k).collect()).collect();
        self.grouping_sets(group, sets, aggs)
    }

    /// GROUP BY GROUPING SETS, each set given as indices into `group`.
    pub fn grouping_sets(
        &self,
        group: Vec<Expr>,
        sets: Vec<Vec<usize>>,
        aggs: Vec<AggregateExpr>,
    ) -> Result<Self> {
        if sets.iter().flatten().any(|i| *i >= group.len()) {
            return Err(EngineError::plan("grouping set index out of range"));
        }
        let schema = self.agg_schema(&group, &aggs)?;
        Ok(self.wrap(LogicalPlan::Aggregate {
            input: Arc::clone(&self.plan),
            group,
            aggs,
            grouping_sets: Some(sets),
            schema,
        }))
    }

    /// Distinct rows.
    pub fn distinct(&self) -> Result<Self> {
        let group: Vec<Expr> = self
            .schema()
            .fields()
            .iter()
            .map(|f| crate::expr::col(f.name().as_str()))
            .collect();
        self.aggregate(group, vec![])
    }

    /// Hash-repartitions by `keys` into `n` partitions.
    pub fn repartition_by(&self, keys: Vec<Expr>, n: usize) -> Result<Self> {
        let schema = self.schema();
        for k in &keys {
            bind(k, &schema)?;
        }
        Ok(self.wrap(LogicalPlan::Repartition {
            input: Arc::clone(&self.plan),
            scheme: RepartitionScheme::Hash(keys, n.max(1)),
        }))
    }

    /// Round-robin repartitions into `n` partitions.
    pub fn repartition(&self, n: usize) -> Result<Self> {
        Ok(self.wrap(LogicalPlan::Repartition {
            input: Arc::clone(&self.plan),
            scheme: RepartitionScheme::RoundRobin(n.max(1)),
        }))
    }

    /// UNION ALL (columns matched by position; types must agree).
    pub fn union_all(&self, other: &DataFrame) -> Result<Self> {
        let (a, b) = (self.schema(), other.schema());
        if a.fields().len() != b.fields().len() {
            return Err(EngineError::plan(format!(
                "union inputs have {} and {} columns; they must have the same number",
                a.fields().len(),
                b.fields().len()
            )));
        }
        if let Some((i, (x, y))) = a
            .fields()
            .iter()
            .zip(b.fields())
            .enumerate()
            .find(|(_, (x, y))| x.data_type() != y.data_type())
        {
            return Err(EngineError::plan(format!(
                "union inputs must have the same column types: column {i} is `{}` {} on the \
                 left and `{}` {} on the right",
                x.name(),
                x.data_type(),
                y.name(),
                y.data_type()
            )));
        }
        let fields: Vec<Field> = a
            .fields()
            .iter()
            .zip(b.fields())
            .map(|(x, y)| {
                x.as_ref()
                    .clone()
                    .with_nullable(x.is_nullable() || y.is_nullable())
            })
            .collect();
        let mut inputs = match self.plan.as_ref() {
            LogicalPlan::Union { inputs, .. } => inputs.clone(),
            _ => vec![Arc::clone(&self.plan)],
        };
        inputs.push(Arc::clone(&other.plan));
        Ok(self.wrap(LogicalPlan::Union {
            inputs,
            schema: Arc::new(Schema::new(fields)),
        }))
    }

    /// Global sort.
    pub fn sort(&self, exprs: Vec<SortExpr>) -> Result<Self> {
        let schema = self.schema();
        for e in &exprs {
            bind(&e.expr, &schema)?;
        }
        Ok(self.wrap(LogicalPlan::Sort {
            input: Arc::clone(&self.plan),
            exprs,
            fetch: None,
        }))
    }

    /// First `n` rows (after a sort: top-n).
    pub fn limit(&self, n: usize) -> Result<Self> {
        if let LogicalPlan::Sort {
            input,
            exprs,
            fetch,
        } = self.plan.as_ref()
        {
            let f = fetch.map_or(n, |f| f.min(n));
            return Ok(self.wrap(LogicalPlan::Sort {
                input: Arc::clone(input),
                exprs: exprs.clone(),
                fetch: Some(f),
            }));
        }
        Ok(self.wrap(LogicalPlan::Limit {
            input: Arc::clone(&self.plan),
            fetch: n,
        }))
    }

    /// Runs the query and returns its batches.
    pub async fn collect(&self) -> Result<Vec<RecordBatch>> {
        Ok(self.collect_with_summary().await?.0)
    }

    /// Runs the query; returns batches and the job's metrics.
    pub async fn collect_with_summary(&self) -> Result<(Vec<RecordBatch>, JobSummary)> {
        self.session.execute(&self.plan).await
    }

    /// Number of rows.
    pub async fn count(&self) -> Result<usize> {
        let df = self.aggregate(vec![], vec![crate::expr::count_star().alias("n")])?;
        let b = df.collect().await?;
        let n = b
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        Ok(n as usize)
    }

    /// The logical plan and the physical stages.
    pub fn explain(&self) -> Result<String> {
        let job = self.session.plan_job(&self.plan)?;
        Ok(format!(
            "== Logical ==\n{}\n== Physical ==\n{}",
            self.plan.display(),
            job.display()
        ))
    }
}

/// Whether an aggregate function is count-like (never null).
pub fn is_count(f: AggregateFunction) -> bool {
    matches!(f, AggregateFunction::Count | AggregateFunction::CountStar)
}
