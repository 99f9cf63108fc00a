//! Expressions.
//!
//! [`Expr`] is the logical, name-based form users build with [`col`], [`lit`]
//! and operator methods; it is bound to a schema into a [`PhysicalExpr`]
//! (column indices, explicit casts inserted by [`coerce`]) that evaluates one
//! whole `RecordBatch` at a time with Arrow kernels — dispatch happens once
//! per batch, never per row.
//!
//! ```text
//!   Expr (names) ──bind(schema)──▶ PhysicalExpr (indices + casts) ──evaluate(batch)──▶ ArrayRef
//! ```

pub mod coerce;
pub mod physical;
pub mod scalar;

use std::fmt;

use arrow::datatypes::DataType;

pub use physical::PhysicalExpr;
pub use scalar::ScalarValue;

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Plus,
    Minus,
    Multiply,
    Divide,
    Modulo,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

impl Operator {
    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            Operator::Plus
                | Operator::Minus
                | Operator::Multiply
                | Operator::Divide
                | Operator::Modulo
        )
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
        )
    }

    fn symbol(self) -> &'static str {
        match self {
            Operator::Plus => "+",
            Operator::Minus => "-",
            Operator::Multiply => "*",
            Operator::Divide => "/",
            Operator::Modulo => "%",
            Operator::Eq => "=",
            Operator::NotEq => "!=",
            Operator::Lt => "<",
            Operator::LtEq => "<=",
            Operator::Gt => ">",
            Operator::GtEq => ">=",
            Operator::And => "AND",
            Operator::Or => "OR",
        }
    }
}

/// A scalar expression over named columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    Literal(ScalarValue),
    Binary {
        left: Box<Expr>,
        op: Operator,
        right: Box<Expr>,
    },
    Not(Box<Expr>),
    Negative(Box<Expr>),
    IsNull(Box<Expr>),
    IsNotNull(Box<Expr>),
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    /// First non-null argument.
    Coalesce(Vec<Expr>),
    /// String concatenation like SQL `concat()`: non-strings are cast to text and a
    /// NULL argument counts as the empty string.
    Concat(Vec<Expr>),
    Cast {
        expr: Box<Expr>,
        to: DataType,
    },
    Alias(Box<Expr>, String),
}

/// A column reference.
pub fn col(name: impl Into<String>) -> Expr {
    Expr::Column(name.into())
}

/// A literal.
pub fn lit(v: impl Into<ScalarValue>) -> Expr {
    Expr::Literal(v.into())
}

/// A date literal from `YYYY-MM-DD`; panics never: an invalid date becomes a plan error on use.
pub fn lit_date(s: &str) -> Expr {
    match ScalarValue::date(s) {
        Ok(v) => Expr::Literal(v),
        Err(_) => Expr::Cast {
            expr: Box::new(Expr::Literal(ScalarValue::Utf8(s.to_string()))),
            to: DataType::Date32,
        },
    }
}

/// A Decimal128 literal: `unscaled / 10^scale`.
pub fn lit_decimal(unscaled: i128, precision: u8, scale: i8) -> Expr {
    Expr::Literal(ScalarValue::Decimal128(unscaled, precision, scale))
}

/// A typed null literal.
pub fn lit_null(t: DataType) -> Expr {
    Expr::Literal(ScalarValue::Null(t))
}

/// `coalesce(a, b, ...)`.
pub fn coalesce(args: Vec<Expr>) -> Expr {
    Expr::Coalesce(args)
}

/// String concatenation.
pub fn concat(args: Vec<Expr>) -> Expr {
    Expr::Concat(args)
}

/// `date + days` (days may be a column or literal integer).
pub fn date_add(date: Expr, days: Expr) -> Expr {
    date.add(days)
}

impl From<bool> for ScalarValue {
    fn from(v: bool) -> Self {
        ScalarValue::Boolean(v)
    }
}
impl From<i32> for ScalarValue {
    fn from(v: i32) -> Self {
        ScalarValue::Int32(v)
    }
}
impl From<i64> for ScalarValue {
    fn from(v: i64) -> Self {
        ScalarValue::Int64(v)
    }
}
impl From<f64> for ScalarValue {
    fn from(v: f64) -> Self {
        ScalarValue::Float64(v)
    }
}
impl From<&str> for ScalarValue {
    fn from(v: &str) -> Self {
        ScalarValue::Utf8(v.to_string())
    }
}
impl From<String> for ScalarValue {
    fn from(v: String) -> Self {
        ScalarValue::Utf8(v)
    }
}

macro_rules! binop {
    ($($name:ident => $op:ident),*) => {
        $(
            #[allow(clippy::should_implement_trait)]
            pub fn $name(self, other: Expr) -> Expr {
                Expr::Binary { left: Box::new(self), op: Operator::$op, right: Box::new(other) }
            }
        )*
    };
}

impl Expr {
    binop!(add => Plus, sub => Minus, mul => Multiply, div => Divide, modulo => Modulo,
           eq => Eq, not_eq => NotEq, lt => Lt, lt_eq => LtEq, gt => Gt, gt_eq => GtEq,
           and => And, or => Or);

    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }

    #[allow(clippy::should_implement_trait)]
    pub fn neg(self) -> Expr {
        Expr::Negative(Box::new(self))
    }

    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }

    pub fn is_not_null(self) -> Expr {
        Expr::IsNotNull(Box::new(self))
    }

    pub fn between(self, low: Expr, high: Expr) -> Expr {
        Expr::Between {
            expr: Box::new(self),
            low: Box::new(low),
            high: Box::new(high),
            negated: false,
        }
    }

    pub fn cast(self, to: DataType) -> Expr {
        Expr::Cast {
            expr: Box::new(self),
            to,
        }
    }

    pub fn alias(self, name: impl Into<String>) -> Expr {
        Expr::Alias(Box::new(self), name.into())
    }

    /// The output column name.
    pub fn name(&self) -> String {
        match self {
            Expr::Column(c) => c.clone(),
            Expr::Alias(_, n) => n.clone(),
            other => other.to_string(),
        }
    }

    /// Columns referenced.
    pub fn columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Column(c) => {
                if !out.contains(c) {
                    out.push(c.clone())
                }
            }
            Expr::Literal(_) => {}
            Expr::Binary { left, right, .. } => {
                left.columns(out);
                right.columns(out);
            }
            Expr::Not(e)
            | Expr::Negative(e)
            | Expr::IsNull(e)
            | Expr::IsNotNull(e)
            | Expr::Cast { expr: e, .. }
            | Expr::Alias(e, _) => e.columns(out),
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.columns(out);
                low.columns(out);
                high.columns(out);
            }
            Expr::Coalesce(v) | Expr::Concat(v) => v.iter().for_each(|e| e.columns(out)),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(c) => write!(f, "{c}"),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Binary { left, op, right } => write!(f, "({left} {} {right})", op.symbol()),
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::Negative(e) => write!(f, "-{e}"),
            Expr::IsNull(e) => write!(f, "{e} IS NULL"),
            Expr::IsNotNull(e) => write!(f, "{e} IS NOT NULL"),
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => write!(
                f,
                "{expr} {}BETWEEN {low} AND {high}",
                if *negated { "NOT " } else { "" }
            ),
            Expr::Coalesce(v) => write!(f, "coalesce({})", join(v)),
            Expr::Concat(v) => write!(f, "concat({})", join(v)),
            Expr::Cast { expr, to } => write!(f, "CAST({expr} AS {to})"),
            Expr::Alias(e, n) => write!(f, "{e} AS {n}"),
        }
    }
}

fn join(v: &[Expr]) -> String {
    v.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    Sum,
    Count,
    /// `count(*)`: counts rows including nulls.
    CountStar,
    Min,
    Max,
    Avg,
}

/// An aggregate call with its output name.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateExpr {
    pub func: AggregateFunction,
    pub arg: Expr,
    pub name: String,
}

impl AggregateExpr {
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

fn agg(func: AggregateFunction, arg: Expr, prefix: &str) -> AggregateExpr {
    let name = format!("{prefix}({arg})");
    AggregateExpr { func, arg, name }
}

pub fn sum(e: Expr) -> AggregateExpr {
    agg(AggregateFunction::Sum, e, "sum")
}
pub fn count(e: Expr) -> AggregateExpr {
    agg(AggregateFunction::Count, e, "count")
}
pub fn count_star() -> AggregateExpr {
    AggregateExpr {
        func: AggregateFunction::CountStar,
        arg: Expr::Literal(ScalarValue::Int64(1)),
        name: "count(*)".into(),
    }
}
pub fn min(e: Expr) -> AggregateExpr {
    agg(AggregateFunction::Min, e, "min")
}
pub fn max(e: Expr) -> AggregateExpr {
    agg(AggregateFunction::Max, e, "max")
}
pub fn avg(e: Expr) -> AggregateExpr {
    agg(AggregateFunction::Avg, e, "avg")
}

/// A sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortExpr {
    pub expr: Expr,
    pub ascending: bool,
    pub nulls_first: bool,
}

impl Expr {
    /// Ascending, nulls first (Spark's default for ASC).
    pub fn sort_asc(self) -> SortExpr {
        SortExpr {
            expr: self,
            ascending: true,
            nulls_first: true,
        }
    }
    /// Descending, nulls last (Spark's default for DESC).
    pub fn sort_desc(self) -> SortExpr {
        SortExpr {
            expr: self,
            ascending: false,
            nulls_first: false,
        }
    }
}
