//! Bound expressions evaluated a batch at a time.

use std::sync::Arc;

use arrow::array::{new_empty_array, Array, ArrayRef, BooleanArray, Datum, StringArray};
use arrow::compute::kernels::{boolean, cmp, concat_elements, numeric, zip};
use arrow::compute::{cast, is_not_null, is_null};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;

use super::coerce::{arithmetic_operands, common_type, is_integer};
use super::{Expr, Operator, ScalarValue};
use crate::error::{EngineError, Result};

/// An expression bound to an input schema.
#[derive(Debug, Clone)]
pub enum PhysicalExpr {
    Column(usize),
    /// Literal plus its one-element array (built once).
    Literal(ScalarValue, ArrayRef),
    Binary {
        left: Box<PhysicalExpr>,
        op: Operator,
        right: Box<PhysicalExpr>,
    },
    /// `date + days` (`negate`: `date - days`).
    DateAdd {
        date: Box<PhysicalExpr>,
        days: Box<PhysicalExpr>,
        negate: bool,
    },
    Not(Box<PhysicalExpr>),
    Negative(Box<PhysicalExpr>),
    IsNull(Box<PhysicalExpr>),
    IsNotNull(Box<PhysicalExpr>),
    Coalesce(Vec<PhysicalExpr>),
    Concat(Vec<PhysicalExpr>),
    Cast {
        expr: Box<PhysicalExpr>,
        to: DataType,
    },
}

/// An evaluated value: a full column, or a scalar (one-element array).
#[derive(Debug, Clone)]
pub enum Value {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Datum for Value {
    fn get(&self) -> (&dyn Array, bool) {
        match self {
            Value::Array(a) => (a.as_ref(), false),
            Value::Scalar(a) => (a.as_ref(), true),
        }
    }
}

impl Value {
    pub fn into_array(self, len: usize) -> Result<ArrayRef> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(s) => {
                if len == 1 {
                    return Ok(s);
                }
                let idx = arrow::array::UInt32Array::from(vec![0u32; len]);
                Ok(arrow::compute::take(s.as_ref(), &idx, None)?)
            }
        }
    }

    fn map(self, f: impl FnOnce(&dyn Array) -> Result<ArrayRef>) -> Result<Value> {
        Ok(match self {
            Value::Array(a) => Value::Array(f(a.as_ref())?),
            Value::Scalar(a) => Value::Scalar(f(a.as_ref())?),
        })
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }
}

/// Binds `expr` to `schema`, resolving names and inserting casts.
pub fn bind(expr: &Expr, schema: &Schema) -> Result<PhysicalExpr> {
    Ok(match expr {
        Expr::Column(name) => PhysicalExpr::Column(column_index(schema, name)?),
        Expr::Literal(v) => literal(v.clone())?,
        Expr::Alias(e, _) => bind(e, schema)?,
        Expr::Binary { left, op, right } => bind_binary(left, *op, right, schema)?,
        Expr::Not(e) => PhysicalExpr::Not(Box::new(bind_bool(e, schema)?)),
        Expr::Negative(e) => PhysicalExpr::Negative(Box::new(bind(e, schema)?)),
        Expr::IsNull(e) => PhysicalExpr::IsNull(Box::new(bind(e, schema)?)),
        Expr::IsNotNull(e) => PhysicalExpr::IsNotNull(Box::new(bind(e, schema)?)),
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let e = (**expr)
                .clone()
                .gt_eq((**low).clone())
                .and((**expr).clone().lt_eq((**high).clone()));
            let e = if *negated { e.not() } else { e };
            bind(&e, schema)?
        }
        Expr::Coalesce(args) => {
            if args.is_empty() {
                return Err(EngineError::plan("coalesce needs at least one argument"));
            }
            let bound = args
                .iter()
                .map(|a| bind(a, schema))
                .collect::<Result<Vec<_>>>()?;
            let mut t = bound[0].data_type(schema)?;
            for b in &bound[1..] {
                let bt = b.data_type(schema)?;
                t = common_type(&t, &bt).ok_or_else(|| {
                    EngineError::plan(format!("coalesce arguments of types {t} and {bt} differ"))
                })?;
            }
            PhysicalExpr::Coalesce(
                bound
                    .into_iter()
                    .map(|b| cast_to(b, &t, schema))
                    .collect::<Result<_>>()?,
            )
        }
        Expr::Concat(args) => PhysicalExpr::Concat(
            args.iter()
                .map(|a| cast_to(bind(a, schema)?, &DataType::Utf8, schema))
                .collect::<Result<_>>()?,
        ),
        Expr::Cast { expr, to } => cast_to(bind(expr, schema)?, to, schema)?,
    })
}

fn column_index(schema: &Schema, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        EngineError::plan(format!(
            "unknown column `{name}`; available: {}",
            names.join(", ")
        ))
    })
}

fn literal(v: ScalarValue) -> Result<PhysicalExpr> {
    let arr = v.to_array(1)?;
    Ok(PhysicalExpr::Literal(v, arr))
}

fn bind_bool(e: &Expr, schema: &Schema) -> Result<PhysicalExpr> {
    let b = bind(e, schema)?;
    let t = b.data_type(schema)?;
    match t {
        DataType::Boolean => Ok(b),
        DataType::Null => cast_to(b, &DataType::Boolean, schema),
        other => Err(EngineError::plan(format!(
            "expected a boolean expression, `{e}` is {other}"
        ))),
    }
}

/// Wraps `e` in a cast unless it already has type `to` (literals are folded).
pub fn cast_to(e: PhysicalExpr, to: &DataType, schema: &Schema) -> Result<PhysicalExpr> {
    let from = e.data_type(schema)?;
    if &from == to {
        return Ok(e);
    }
    if !arrow::compute::can_cast_types(&from, to) {
        return Err(EngineError::plan(format!("cannot cast {from} to {to}")));
    }
    if let PhysicalExpr::Literal(_, arr) = &e {
        let out = cast(arr.as_ref(), to)?;
        return Ok(PhysicalExpr::Literal(ScalarValue::Null(to.clone()), out));
    }
    Ok(PhysicalExpr::Cast {
        expr: Box::new(e),
        to: to.clone(),
    })
}

/// Casts a literal to `to` only if the value survives unchanged (no overflow).
fn try_cast_literal(e: &PhysicalExpr, to: &DataType) -> Option<PhysicalExpr> {
    let PhysicalExpr::Literal(_, arr) = e else {
        return None;
    };
    if arr.is_null(0) {
        return Some(PhysicalExpr::Literal(
            ScalarValue::Null(to.clone()),
            arrow::array::new_null_array(to, 1),
        ));
    }
    let opts = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let out = arrow::compute::cast_with_options(arr.as_ref(), to, &opts).ok()?;
    let back = cast(out.as_ref(), arr.data_type()).ok()?;
    let string_to_date = super::coerce::is_string(arr.data_type()) && *to == DataType::Date32;
    if back.as_ref() == arr.as_ref() || string_to_date {
        // exact round trips and strings → dates are accepted
        if out.is_null(0) {
            return None;
        }
        Some(PhysicalExpr::Literal(ScalarValue::Null(to.clone()), out))
    } else {
        None
    }
}

fn bind_binary(left: &Expr, op: Operator, right: &Expr, schema: &Schema) -> Result<PhysicalExpr> {
    if matches!(op, Operator::And | Operator::Or) {
        return Ok(PhysicalExpr::Binary {
            left: Box::new(bind_bool(left, schema)?),
            op,
            right: Box::new(bind_bool(right, schema)?),
        });
    }
    let mut l = bind(left, schema)?;
    let mut r = bind(right, schema)?;
    let lt = l.data_type(schema)?;
    let rt = r.data_type(schema)?;
    // date ± days
    if op.is_arithmetic() && matches!(op, Operator::Plus | Operator::Minus) {
        if lt == DataType::Date32 && is_integer(&rt) {
            return Ok(PhysicalExpr::DateAdd {
                date: Box::new(l),
                days: Box::new(cast_to(r, &DataType::Int32, schema)?),
                negate: op == Operator::Minus,
            });
        }
        if rt == DataType::Date32 && is_integer(&lt) && op == Operator::Plus {
            return Ok(PhysicalExpr::DateAdd {
                date: Box::new(r),
                days: Box::new(cast_to(l, &DataType::Int32, schema)?),
                negate: false,
            });
        }
    }
    if lt != rt {
        // A literal adopts the other side's type when it fits.
        let l_lit = matches!(l, PhysicalExpr::Literal(..));
        let r_lit = matches!(r, PhysicalExpr::Literal(..));
        if r_lit && !l_lit {
            if let Some(c) = try_cast_literal(&r, &lt) {
                r = c;
            }
        } else if l_lit && !r_lit {
            if let Some(c) = try_cast_literal(&l, &rt) {
                l = c;
            }
        }
    }
    let lt = l.data_type(schema)?;
    let rt = r.data_type(schema)?;
    if lt != rt {
        if op.is_arithmetic() {
            let (lt2, rt2) = arithmetic_operands(&lt, &rt)?;
            l = cast_to(l, &lt2, schema)?;
            r = cast_to(r, &rt2, schema)?;
        } else {
            let t = common_type(&lt, &rt).ok_or_else(|| {
                EngineError::plan(format!(
                    "cannot compare `{left}` ({lt}) with `{right}` ({rt})"
                ))
            })?;
            l = cast_to(l, &t, schema)?;
            r = cast_to(r, &t, schema)?;
        }
    } else if op.is_arithmetic() {
        arithmetic_operands(&lt, &rt)?;
    }
    Ok(PhysicalExpr::Binary {
        left: Box::new(l),
        op,
        right: Box::new(r),
    })
}

impl PhysicalExpr {
    /// The result type for inputs of `schema`.
    pub fn data_type(&self, schema: &Schema) -> Result<DataType> {
        Ok(match self {
            PhysicalExpr::Column(i) => schema.field(*i).data_type().clone(),
            PhysicalExpr::Literal(_, a) => a.data_type().clone(),
            PhysicalExpr::Binary { left, op, right } => {
                if op.is_arithmetic() {
                    // Let the kernel decide (decimal precision rules live there).
                    let l = new_empty_array(&left.data_type(schema)?);
                    let r = new_empty_array(&right.data_type(schema)?);
                    arith(*op, &Value::Array(l), &Value::Array(r))?
                        .data_type()
                        .clone()
                } else {
                    DataType::Boolean
                }
            }
            PhysicalExpr::DateAdd { .. } => DataType::Date32,
            PhysicalExpr::Not(_) | PhysicalExpr::IsNull(_) | PhysicalExpr::IsNotNull(_) => {
                DataType::Boolean
            }
            PhysicalExpr::Negative(e) => e.data_type(schema)?,
            PhysicalExpr::Coalesce(v) => v[0].data_type(schema)?,
            PhysicalExpr::Concat(_) => DataType::Utf8,
            PhysicalExpr::Cast { to, .. } => to.clone(),
        })
    }

    /// Whether the result may contain nulls.
    pub fn nullable(&self, schema: &Schema) -> bool {
        match self {
            PhysicalExpr::Column(i) => schema.field(*i).is_nullable(),
            PhysicalExpr::Literal(_, a) => a.is_null(0),
            PhysicalExpr::IsNull(_) | PhysicalExpr::IsNotNull(_) => false,
            PhysicalExpr::Coalesce(v) => v.iter().all(|e| e.nullable(schema)),
            _ => true,
        }
    }

    /// Evaluates over a batch to a column of `batch.num_rows()` values.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        self.evaluate_value(batch)?.into_array(batch.num_rows())
    }

    /// Evaluates, keeping scalars scalar.
    pub fn evaluate_value(&self, batch: &RecordBatch) -> Result<Value> {
        Ok(match self {
            PhysicalExpr::Column(i) => Value::Array(Arc::clone(batch.column(*i))),
            PhysicalExpr::Literal(_, a) => Value::Scalar(Arc::clone(a)),
            PhysicalExpr::Binary { left, op, right } => {
                let l = left.evaluate_value(batch)?;
                let r = right.evaluate_value(batch)?;
                let scalar = l.is_scalar() && r.is_scalar();
                let out = match op {
                    Operator::And | Operator::Or => {
                        let n = if scalar { 1 } else { batch.num_rows() };
                        let la = l.into_array(n)?;
                        let ra = r.into_array(n)?;
                        let (la, ra) = (as_bool(&la)?, as_bool(&ra)?);
                        let out = if *op == Operator::And {
                            boolean::and_kleene(la, ra)?
                        } else {
                            boolean::or_kleene(la, ra)?
                        };
                        Arc::new(out) as ArrayRef
                    }
                    op if op.is_arithmetic() => arith(*op, &l, &r)?,
                    op => Arc::new(compare(*op, &l, &r)?) as ArrayRef,
                };
                if scalar {
                    Value::Scalar(out)
                } else {
                    Value::Array(out)
                }
            }
            PhysicalExpr::DateAdd { date, days, negate } => {
                let d = date.evaluate_value(batch)?;
                let n = days.evaluate_value(batch)?;
                let scalar = d.is_scalar() && n.is_scalar();
                let di = d.map(|a| Ok(cast(a, &DataType::Int32)?))?;
                let out = if *negate {
                    numeric::sub(&di, &n)?
                } else {
                    numeric::add(&di, &n)?
                };
                let out = cast(out.as_ref(), &DataType::Date32)?;
                if scalar {
                    Value::Scalar(out)
                } else {
                    Value::Array(out)
                }
            }
            PhysicalExpr::Not(e) => e
                .evaluate_value(batch)?
                .map(|a| Ok(Arc::new(boolean::not(as_bool(a)?)?) as ArrayRef))?,
            PhysicalExpr::Negative(e) => e.evaluate_value(batch)?.map(|a| Ok(numeric::neg(a)?))?,
            PhysicalExpr::IsNull(e) => e
                .evaluate_value(batch)?
                .map(|a| Ok(Arc::new(is_null(a)?) as ArrayRef))?,
            PhysicalExpr::IsNotNull(e) => e
                .evaluate_value(batch)?
                .map(|a| Ok(Arc::new(is_not_null(a)?) as ArrayRef))?,
            PhysicalExpr::Cast { expr, to } => {
                expr.evaluate_value(batch)?.map(|a| Ok(cast(a, to)?))?
            }
            PhysicalExpr::Coalesce(args) => {
                let n = batch.num_rows();
                let mut acc = args[0].evaluate(batch)?;
                for a in &args[1..] {
                    if acc.null_count() == 0 {
                        break;
                    }
                    let next = a.evaluate_value(batch)?;
                    let mask = is_not_null(acc.as_ref())?;
                    acc = zip::zip(&mask, &acc, &next)?;
                }
                debug_assert_eq!(acc.len(), n);
                Value::Array(acc)
            }
            PhysicalExpr::Concat(args) => {
                let n = batch.num_rows();
                let mut acc: Option<ArrayRef> = None;
                for a in args {
                    // SQL concat(): a NULL argument counts as the empty string.
                    let v = a.evaluate(batch)?;
                    let v = if v.null_count() > 0 {
                        let empty = ScalarValue::Utf8(String::new()).to_array(1)?;
                        let mask = is_not_null(v.as_ref())?;
                        zip::zip(&mask, &v, &arrow::array::Scalar::new(empty))?
                    } else {
                        v
                    };
                    acc = Some(match acc {
                        None => v,
                        Some(prev) => {
                            let l = prev.as_any().downcast_ref::<StringArray>();
                            let r = v.as_any().downcast_ref::<StringArray>();
                            match (l, r) {
                                (Some(l), Some(r)) => {
                                    Arc::new(concat_elements::concat_elements_utf8(l, r)?)
                                }
                                _ => return Err(EngineError::internal("concat of non-strings")),
                            }
                        }
                    });
                }
                match acc {
                    Some(a) => Value::Array(a),
                    None => Value::Array(ScalarValue::Utf8(String::new()).to_array(n)?),
                }
            }
        })
    }
}

fn as_bool(a: &dyn Array) -> Result<&BooleanArray> {
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| EngineError::internal(format!("expected boolean, got {}", a.data_type())))
}

fn arith(op: Operator, l: &dyn Datum, r: &dyn Datum) -> Result<ArrayRef> {
    Ok(match op {
        Operator::Plus => numeric::add(l, r)?,
        Operator::Minus => numeric::sub(l, r)?,
        Operator::Multiply => numeric::mul(l, r)?,
        Operator::Divide => numeric::div(l, r)?,
        Operator::Modulo => numeric::rem(l, r)?,
        _ => return Err(EngineError::internal("not arithmetic")),
    })
}

fn compare(op: Operator, l: &dyn Datum, r: &dyn Datum) -> Result<BooleanArray> {
    Ok(match op {
        Operator::Eq => cmp::eq(l, r)?,
        Operator::NotEq => cmp::neq(l, r)?,
        Operator::Lt => cmp::lt(l, r)?,
        Operator::LtEq => cmp::lt_eq(l, r)?,
        Operator::Gt => cmp::gt(l, r)?,
        Operator::GtEq => cmp::gt_eq(l, r)?,
        _ => return Err(EngineError::internal("not a comparison")),
    })
}

impl std::fmt::Display for PhysicalExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[PhysicalExpr]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            PhysicalExpr::Column(i) => write!(f, "#{i}"),
            PhysicalExpr::Literal(_, a) => {
                let s = arrow::util::display::array_value_to_string(a.as_ref(), 0)
                    .unwrap_or_else(|_| "?".into());
                if a.is_null(0) {
                    write!(f, "NULL")
                } else {
                    write!(f, "{s}")
                }
            }
            PhysicalExpr::Binary { left, op, right } => write!(f, "({left} {op:?} {right})"),
            PhysicalExpr::DateAdd { date, days, negate } => {
                write!(
                    f,
                    "({date} {} {days} days)",
                    if *negate { "-" } else { "+" }
                )
            }
            PhysicalExpr::Not(e) => write!(f, "NOT {e}"),
            PhysicalExpr::Negative(e) => write!(f, "-{e}"),
            PhysicalExpr::IsNull(e) => write!(f, "{e} IS NULL"),
            PhysicalExpr::IsNotNull(e) => write!(f, "{e} IS NOT NULL"),
            PhysicalExpr::Coalesce(v) => write!(f, "coalesce({})", list(v)),
            PhysicalExpr::Concat(v) => write!(f, "concat({})", list(v)),
            PhysicalExpr::Cast { expr, to } => write!(f, "CAST({expr} AS {to})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{coalesce, col, concat, lit, lit_date, lit_decimal};
    use arrow::array::{Date32Array, Decimal128Array, Int32Array};
    use arrow::datatypes::Field;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("p", DataType::Decimal128(7, 2), true),
            Field::new("d", DataType::Date32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(
                    Decimal128Array::from(vec![Some(5050), Some(4999), None])
                        .with_precision_and_scale(7, 2)
                        .unwrap(),
                ),
                Arc::new(Date32Array::from(vec![11192, 11222, 11223])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
            ],
        )
        .unwrap()
    }

    fn eval(e: Expr) -> ArrayRef {
        let b = batch();
        bind(&e, b.schema().as_ref()).unwrap().evaluate(&b).unwrap()
    }

    #[test]
    fn arithmetic_comparison_and_dates() {
        let r = eval(col("p").gt(lit(50)));
        assert_eq!(
            as_bool(r.as_ref()).unwrap(),
            &BooleanArray::from(vec![Some(true), Some(false), None])
        );
        let r = eval(col("d").between(lit_date("2000-08-23"), lit_date("2000-08-23").add(lit(30))));
        assert_eq!(
            as_bool(r.as_ref()).unwrap(),
            &BooleanArray::from(vec![true, true, false])
        );
        let r = eval(coalesce(vec![col("a"), lit(0)]).add(col("a")));
        assert_eq!(r.data_type(), &DataType::Int32);
        let r = eval(col("p").sub(coalesce(vec![col("p"), lit_decimal(0, 7, 2)])));
        assert_eq!(r.null_count(), 1);
        let r = eval(concat(vec![lit("store"), col("s")]));
        let s = r.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(s.value(0), "storex");
        assert_eq!(s.value(2), "store");
        let r = eval(col("a").add(col("p")));
        assert!(matches!(r.data_type(), DataType::Decimal128(_, 2)));
    }
}
