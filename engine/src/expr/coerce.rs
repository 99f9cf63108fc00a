//! Type coercion rules applied when binding expressions.
//!
//! Numeric operands of different types are widened (ints → Int64, int with
//! decimal → decimal, anything with float → Float64); a literal next to a
//! column is cast to the column's type when it fits, so `price > 50` compares
//! decimals without casting the column. Dates accept `date ± days` and
//! comparison with a string literal.

use arrow::datatypes::DataType;

use crate::error::{EngineError, Result};

pub fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

pub fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

pub fn is_decimal(t: &DataType) -> bool {
    matches!(t, DataType::Decimal128(_, _))
}

pub fn is_numeric(t: &DataType) -> bool {
    is_integer(t) || is_float(t) || is_decimal(t)
}

pub fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Decimal type able to hold every value of an integer type.
fn int_as_decimal(t: &DataType) -> DataType {
    match t {
        DataType::Int8 | DataType::UInt8 => DataType::Decimal128(3, 0),
        DataType::Int16 | DataType::UInt16 => DataType::Decimal128(5, 0),
        DataType::Int32 | DataType::UInt32 => DataType::Decimal128(10, 0),
        _ => DataType::Decimal128(20, 0),
    }
}

/// The common type two values are cast to before comparing them (or before
/// arithmetic when they differ); `None` if incompatible.
pub fn common_type(l: &DataType, r: &DataType) -> Option<DataType> {
    if l == r {
        return Some(l.clone());
    }
    if *l == DataType::Null {
        return Some(r.clone());
    }
    if *r == DataType::Null {
        return Some(l.clone());
    }
    match (l, r) {
        (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => {
            let s = (*s1).max(*s2);
            let int_digits = (*p1 as i16 - *s1 as i16).max(*p2 as i16 - *s2 as i16);
            let p = (int_digits + s as i16).clamp(1, 38) as u8;
            Some(DataType::Decimal128(p, s))
        }
        (d @ DataType::Decimal128(..), i) | (i, d @ DataType::Decimal128(..)) if is_integer(i) => {
            common_type(d, &int_as_decimal(i))
        }
        (a, b) if (is_float(a) && is_numeric(b)) || (is_float(b) && is_numeric(a)) => {
            Some(DataType::Float64)
        }
        (a, b) if is_integer(a) && is_integer(b) => Some(DataType::Int64),
        (a, b) if is_string(a) && is_string(b) => Some(DataType::Utf8),
        (DataType::Date32, s) | (s, DataType::Date32) if is_string(s) => Some(DataType::Date32),
        _ => None,
    }
}

/// Operand types for an arithmetic operator: `(left, right)` targets.
pub fn arithmetic_operands(l: &DataType, r: &DataType) -> Result<(DataType, DataType)> {
    if !(is_numeric(l) || *l == DataType::Null) || !(is_numeric(r) || *r == DataType::Null) {
        return Err(EngineError::plan(format!(
            "arithmetic needs numeric operands, got {l} and {r}"
        )));
    }
    match (l, r) {
        // Decimal kernels handle differing precision and scale themselves.
        (DataType::Decimal128(..), DataType::Decimal128(..)) => Ok((l.clone(), r.clone())),
        _ => {
            let t = common_type(l, r)
                .ok_or_else(|| EngineError::plan(format!("no common type for {l} and {r}")))?;
            match (&t, l, r) {
                (DataType::Decimal128(..), DataType::Decimal128(..), i) if is_integer(i) => {
                    Ok((l.clone(), int_as_decimal(i)))
                }
                (DataType::Decimal128(..), i, DataType::Decimal128(..)) if is_integer(i) => {
                    Ok((int_as_decimal(i), r.clone()))
                }
                _ => Ok((t.clone(), t)),
            }
        }
    }
}
