//! Literal values.

use std::sync::Arc;

use arrow::array::{
    new_null_array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, StringArray,
};
use arrow::datatypes::DataType;

use crate::error::{EngineError, Result};

/// A single typed value (a literal).
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarValue {
    /// A typed null.
    Null(DataType),
    Boolean(bool),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    Utf8(String),
    /// Days since the Unix epoch.
    Date32(i32),
    /// Unscaled value, precision, scale.
    Decimal128(i128, u8, i8),
}

impl ScalarValue {
    pub fn data_type(&self) -> DataType {
        match self {
            ScalarValue::Null(t) => t.clone(),
            ScalarValue::Boolean(_) => DataType::Boolean,
            ScalarValue::Int32(_) => DataType::Int32,
            ScalarValue::Int64(_) => DataType::Int64,
            ScalarValue::Float64(_) => DataType::Float64,
            ScalarValue::Utf8(_) => DataType::Utf8,
            ScalarValue::Date32(_) => DataType::Date32,
            ScalarValue::Decimal128(_, p, s) => DataType::Decimal128(*p, *s),
        }
    }

    /// An array repeating the value `n` times.
    pub fn to_array(&self, n: usize) -> Result<ArrayRef> {
        Ok(match self {
            ScalarValue::Null(t) => new_null_array(t, n),
            ScalarValue::Boolean(v) => Arc::new(BooleanArray::from(vec![*v; n])),
            ScalarValue::Int32(v) => Arc::new(Int32Array::from_value(*v, n)),
            ScalarValue::Int64(v) => Arc::new(Int64Array::from_value(*v, n)),
            ScalarValue::Float64(v) => Arc::new(Float64Array::from_value(*v, n)),
            ScalarValue::Utf8(v) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                v.as_str(),
                n,
            ))),
            ScalarValue::Date32(v) => Arc::new(Date32Array::from_value(*v, n)),
            ScalarValue::Decimal128(v, p, s) => {
                Arc::new(Decimal128Array::from_value(*v, n).with_precision_and_scale(*p, *s)?)
            }
        })
    }

    /// Parses `YYYY-MM-DD` into a date literal.
    pub fn date(s: &str) -> Result<Self> {
        parse_date(s).map(ScalarValue::Date32).ok_or_else(|| {
            EngineError::plan(format!("invalid date literal `{s}` (want YYYY-MM-DD)"))
        })
    }
}

impl std::fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScalarValue::Null(_) => write!(f, "NULL"),
            ScalarValue::Boolean(v) => write!(f, "{v}"),
            ScalarValue::Int32(v) => write!(f, "{v}"),
            ScalarValue::Int64(v) => write!(f, "{v}"),
            ScalarValue::Float64(v) => write!(f, "{v}"),
            ScalarValue::Utf8(v) => write!(f, "'{v}'"),
            ScalarValue::Date32(v) => write!(f, "DATE {}", format_date(*v)),
            ScalarValue::Decimal128(v, _, s) => write!(f, "{}", format_decimal(*v, *s)),
        }
    }
}

/// Formats an unscaled decimal.
pub fn format_decimal(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return format!("{}", v * 10i128.pow((-scale) as u32));
    }
    let p = 10i128.pow(scale as u32);
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let p = p as u128;
    format!("{sign}{}.{:0width$}", a / p, a % p, width = scale as usize)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn parse_date(s: &str) -> Option<i32> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

/// `YYYY-MM-DD` of days since the epoch.
pub fn format_date(days: i32) -> String {
    let z = days as i64 + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for s in ["1970-01-01", "2000-08-23", "1999-12-31", "2000-02-29"] {
            let ScalarValue::Date32(d) = ScalarValue::date(s).unwrap() else {
                panic!()
            };
            assert_eq!(format_date(d), s);
        }
        assert_eq!(
            ScalarValue::date("2000-08-23").unwrap(),
            ScalarValue::Date32(11192)
        );
        assert_eq!(format_decimal(-1234, 2), "-12.34");
        assert_eq!(format_decimal(5, 2), "0.05");
    }
}
