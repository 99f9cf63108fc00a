//! Vectorised group accumulators: each call handles a whole batch with the
//! group id of every row; the inner loops are monomorphised per Arrow type.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowNativeTypeOp, AsArray, Int64Array, PrimitiveArray, StringArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Decimal128Type, Field, Float64Type, Int32Type,
    Int64Type,
};

use crate::error::{EngineError, Result};
use crate::expr::coerce::{is_decimal, is_float, is_integer, is_string};
use crate::expr::AggregateFunction;

/// Accumulates one aggregate for many groups.
pub trait GroupsAccumulator: Send + Debug {
    /// Folds raw input values.
    fn update(&mut self, values: &ArrayRef, groups: &[u32], n_groups: usize) -> Result<()>;
    /// Folds partial states (as produced by [`state`](Self::state)).
    fn merge(&mut self, states: &[ArrayRef], groups: &[u32], n_groups: usize) -> Result<()>;
    /// Partial state columns for every group; resets.
    fn state(&mut self) -> Result<Vec<ArrayRef>>;
    /// Final values for every group; resets.
    fn evaluate(&mut self) -> Result<ArrayRef>;
    /// Bytes held.
    fn size(&self) -> usize;
}

/// Types an aggregate's input is cast to, and its state and output fields.
#[derive(Debug, Clone)]
pub struct AggSignature {
    pub input: DataType,
    pub state: Vec<DataType>,
    pub output: DataType,
}

/// Decides the types of `func` over input type `t`.
pub fn signature(func: AggregateFunction, t: &DataType) -> Result<AggSignature> {
    use AggregateFunction::*;
    let bad = || EngineError::plan(format!("{func:?} is not supported on {t}"));
    Ok(match func {
        Count | CountStar => AggSignature {
            input: t.clone(),
            state: vec![DataType::Int64],
            output: DataType::Int64,
        },
        Sum => {
            if is_integer(t) {
                AggSignature {
                    input: DataType::Int64,
                    state: vec![DataType::Int64],
                    output: DataType::Int64,
                }
            } else if is_float(t) {
                AggSignature {
                    input: DataType::Float64,
                    state: vec![DataType::Float64],
                    output: DataType::Float64,
                }
            } else if let DataType::Decimal128(p, s) = t {
                let out = DataType::Decimal128((*p + 10).min(38), *s);
                AggSignature {
                    input: t.clone(),
                    state: vec![out.clone()],
                    output: out,
                }
            } else if *t == DataType::Null {
                AggSignature {
                    input: DataType::Int64,
                    state: vec![DataType::Int64],
                    output: DataType::Int64,
                }
            } else {
                return Err(bad());
            }
        }
        Avg => {
            if is_integer(t) || is_float(t) || *t == DataType::Null {
                AggSignature {
                    input: DataType::Float64,
                    state: vec![DataType::Float64, DataType::Int64],
                    output: DataType::Float64,
                }
            } else if let DataType::Decimal128(p, s) = t {
                AggSignature {
                    input: t.clone(),
                    state: vec![DataType::Decimal128(38, *s), DataType::Int64],
                    output: DataType::Decimal128((*p + 4).min(38), (*s + 4).min(38)),
                }
            } else {
                return Err(bad());
            }
        }
        Min | Max => {
            let input = if is_string(t) {
                DataType::Utf8
            } else if is_integer(t) && *t != DataType::Int32 {
                DataType::Int64
            } else if is_float(t) {
                DataType::Float64
            } else if matches!(t, DataType::Int32 | DataType::Date32 | DataType::Null)
                || is_decimal(t)
            {
                if *t == DataType::Null {
                    DataType::Int64
                } else {
                    t.clone()
                }
            } else {
                return Err(bad());
            };
            AggSignature {
                input: input.clone(),
                state: vec![input.clone()],
                output: input,
            }
        }
    })
}

/// Creates the accumulator for a signature.
pub fn create(func: AggregateFunction, sig: &AggSignature) -> Result<Box<dyn GroupsAccumulator>> {
    use AggregateFunction::*;
    Ok(match func {
        Count => Box::new(CountAcc::new(false)),
        CountStar => Box::new(CountAcc::new(true)),
        Sum => match &sig.input {
            DataType::Int64 => Box::new(SumAcc::<Int64Type>::new(sig.output.clone())),
            DataType::Float64 => Box::new(SumAcc::<Float64Type>::new(sig.output.clone())),
            DataType::Decimal128(..) => Box::new(SumAcc::<Decimal128Type>::new(sig.output.clone())),
            t => return Err(EngineError::internal(format!("sum over {t}"))),
        },
        Avg => match &sig.input {
            DataType::Float64 => Box::new(AvgAcc::<Float64Type>::new(sig.clone())),
            DataType::Decimal128(..) => Box::new(AvgAcc::<Decimal128Type>::new(sig.clone())),
            t => return Err(EngineError::internal(format!("avg over {t}"))),
        },
        Min | Max => {
            let is_min = func == Min;
            match &sig.input {
                DataType::Int32 => {
                    Box::new(MinMaxAcc::<Int32Type>::new(is_min, sig.output.clone()))
                }
                DataType::Int64 => {
                    Box::new(MinMaxAcc::<Int64Type>::new(is_min, sig.output.clone()))
                }
                DataType::Float64 => {
                    Box::new(MinMaxAcc::<Float64Type>::new(is_min, sig.output.clone()))
                }
                DataType::Date32 => {
                    Box::new(MinMaxAcc::<Date32Type>::new(is_min, sig.output.clone()))
                }
                DataType::Decimal128(..) => {
                    Box::new(MinMaxAcc::<Decimal128Type>::new(is_min, sig.output.clone()))
                }
                DataType::Utf8 => Box::new(MinMaxStringAcc {
                    is_min,
                    vals: Vec::new(),
                    bytes: 0,
                }),
                t => return Err(EngineError::internal(format!("min/max over {t}"))),
            }
        }
    })
}

/// Output field of an aggregate.
pub fn output_field(name: &str, func: AggregateFunction, sig: &AggSignature) -> Field {
    let nullable = !matches!(
        func,
        AggregateFunction::Count | AggregateFunction::CountStar
    );
    Field::new(name, sig.output.clone(), nullable)
}

/// State fields of an aggregate (named `name#i`).
pub fn state_fields(name: &str, sig: &AggSignature) -> Vec<Field> {
    sig.state
        .iter()
        .enumerate()
        .map(|(i, t)| Field::new(format!("{name}#state{i}"), t.clone(), true))
        .collect()
}

fn prim_array<T: ArrowPrimitiveType + Debug>(
    vals: Vec<T::Native>,
    has: Option<Vec<bool>>,
    dt: &DataType,
) -> Result<ArrayRef> {
    let nulls = has.map(NullBuffer::from);
    let a = PrimitiveArray::<T>::try_new(vals.into(), nulls)?.with_data_type(dt.clone());
    Ok(Arc::new(a))
}

/// Sum with a native accumulator (i64 wrapping, f64, i128 for decimals).
#[derive(Debug)]
struct SumAcc<T: ArrowPrimitiveType + Debug> {
    sums: Vec<T::Native>,
    has: Vec<bool>,
    out: DataType,
}

impl<T: ArrowPrimitiveType + Debug> SumAcc<T> {
    fn new(out: DataType) -> Self {
        Self {
            sums: Vec::new(),
            has: Vec::new(),
            out,
        }
    }

    fn fold(&mut self, values: &dyn Array, groups: &[u32], n: usize) -> Result<()> {
        self.sums.resize(n, T::Native::default());
        self.has.resize(n, false);
        let a = values
            .as_primitive_opt::<T>()
            .ok_or_else(|| EngineError::internal(format!("sum input {}", values.data_type())))?;
        let vals = a.values();
        if a.null_count() == 0 {
            for (g, v) in groups.iter().zip(vals.iter()) {
                let g = *g as usize;
                self.sums[g] = self.sums[g].add_wrapping(*v);
                self.has[g] = true;
            }
        } else {
            for (i, g) in groups.iter().enumerate() {
                if a.is_valid(i) {
                    let g = *g as usize;
                    self.sums[g] = self.sums[g].add_wrapping(vals[i]);
                    self.has[g] = true;
                }
            }
        }
        Ok(())
    }
}

impl<T: ArrowPrimitiveType + Debug> GroupsAccumulator for SumAcc<T> {
    fn update(&mut self, values: &ArrayRef, groups: &[u32], n: usize) -> Result<()> {
        self.fold(values.as_ref(), groups, n)
    }
    fn merge(&mut self, states: &[ArrayRef], groups: &[u32], n: usize) -> Result<()> {
        self.fold(states[0].as_ref(), groups, n)
    }
    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> Result<ArrayRef> {
        let sums = std::mem::take(&mut self.sums);
        let has = std::mem::take(&mut self.has);
        prim_array::<T>(sums, Some(has), &self.out)
    }
    fn size(&self) -> usize {
        self.sums.capacity() * std::mem::size_of::<T::Native>() + self.has.capacity()
    }
}

#[derive(Debug)]
struct CountAcc {
    star: bool,
    counts: Vec<i64>,
}

impl CountAcc {
    fn new(star: bool) -> Self {
        Self {
            star,
            counts: Vec::new(),
        }
    }
}

impl GroupsAccumulator for CountAcc {
    fn update(&mut self, values: &ArrayRef, groups: &[u32], n: usize) -> Result<()> {
        self.counts.resize(n, 0);
        if self.star || values.null_count() == 0 {
            for g in groups {
                self.counts[*g as usize] += 1;
            }
        } else {
            for (i, g) in groups.iter().enumerate() {
                if values.is_valid(i) {
                    self.counts[*g as usize] += 1;
                }
            }
        }
        Ok(())
    }
    fn merge(&mut self, states: &[ArrayRef], groups: &[u32], n: usize) -> Result<()> {
        self.counts.resize(n, 0);
        let c = states[0]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| EngineError::internal("count state"))?;
        for (i, g) in groups.iter().enumerate() {
            if c.is_valid(i) {
                self.counts[*g as usize] += c.value(i);
            }
        }
        Ok(())
    }
    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from(std::mem::take(&mut self.counts))))
    }
    fn size(&self) -> usize {
        self.counts.capacity() * 8
    }
}

#[derive(Debug)]
struct MinMaxAcc<T: ArrowPrimitiveType + Debug> {
    is_min: bool,
    vals: Vec<T::Native>,
    has: Vec<bool>,
    out: DataType,
}

impl<T: ArrowPrimitiveType + Debug> MinMaxAcc<T> {
    fn new(is_min: bool, out: DataType) -> Self {
        Self {
            is_min,
            vals: Vec::new(),
            has: Vec::new(),
            out,
        }
    }
}

impl<T: ArrowPrimitiveType + Debug> GroupsAccumulator for MinMaxAcc<T> {
    fn update(&mut self, values: &ArrayRef, groups: &[u32], n: usize) -> Result<()> {
        self.vals.resize(n, T::Native::default());
        self.has.resize(n, false);
        let a = values.as_primitive_opt::<T>().ok_or_else(|| {
            EngineError::internal(format!("min/max input {}", values.data_type()))
        })?;
        for (i, g) in groups.iter().enumerate() {
            if a.is_valid(i) {
                let g = *g as usize;
                let v = a.value(i);
                let better = if self.is_min {
                    v.is_lt(self.vals[g])
                } else {
                    v.is_gt(self.vals[g])
                };
                if !self.has[g] || better {
                    self.vals[g] = v;
                    self.has[g] = true;
                }
            }
        }
        Ok(())
    }
    fn merge(&mut self, states: &[ArrayRef], groups: &[u32], n: usize) -> Result<()> {
        self.update(&states[0], groups, n)
    }
    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> Result<ArrayRef> {
        let vals = std::mem::take(&mut self.vals);
        let has = std::mem::take(&mut self.has);
        prim_array::<T>(vals, Some(has), &self.out)
    }
    fn size(&self) -> usize {
        self.vals.capacity() * std::mem::size_of::<T::Native>() + self.has.capacity()
    }
}

#[derive(Debug)]
struct MinMaxStringAcc {
    is_min: bool,
    vals: Vec<Option<String>>,
    bytes: usize,
}

impl GroupsAccumulator for MinMaxStringAcc {
    fn update(&mut self, values: &ArrayRef, groups: &[u32], n: usize) -> Result<()> {
        self.vals.resize(n, None);
        let a = values
            .as_string_opt::<i32>()
            .ok_or_else(|| EngineError::internal("min/max string input"))?;
        for (i, g) in groups.iter().enumerate() {
            if a.is_valid(i) {
                let v = a.value(i);
                let slot = &mut self.vals[*g as usize];
                let replace = match slot {
                    None => true,
                    Some(cur) => {
                        if self.is_min {
                            v < cur.as_str()
                        } else {
                            v > cur.as_str()
                        }
                    }
                };
                if replace {
                    self.bytes += v.len();
                    *slot = Some(v.to_string());
                }
            }
        }
        Ok(())
    }
    fn merge(&mut self, states: &[ArrayRef], groups: &[u32], n: usize) -> Result<()> {
        self.update(&states[0], groups, n)
    }
    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> Result<ArrayRef> {
        self.bytes = 0;
        let vals = std::mem::take(&mut self.vals);
        Ok(Arc::new(StringArray::from(vals)))
    }
    fn size(&self) -> usize {
        self.vals.capacity() * 24 + self.bytes
    }
}

/// Average: sum and count; decimals divide exactly with half-up rounding.
#[derive(Debug)]
struct AvgAcc<T: ArrowPrimitiveType + Debug> {
    sum: SumAcc<T>,
    counts: Vec<i64>,
    sig: AggSignature,
}

impl<T: ArrowPrimitiveType + Debug> AvgAcc<T> {
    fn new(sig: AggSignature) -> Self {
        Self {
            sum: SumAcc::new(sig.state[0].clone()),
            counts: Vec::new(),
            sig,
        }
    }
}

impl<T: ArrowPrimitiveType + Debug> GroupsAccumulator for AvgAcc<T> {
    fn update(&mut self, values: &ArrayRef, groups: &[u32], n: usize) -> Result<()> {
        self.sum.fold(values.as_ref(), groups, n)?;
        self.counts.resize(n, 0);
        for (i, g) in groups.iter().enumerate() {
            if values.is_valid(i) {
                self.counts[*g as usize] += 1;
            }
        }
        Ok(())
    }
    fn merge(&mut self, states: &[ArrayRef], groups: &[u32], n: usize) -> Result<()> {
        self.sum.fold(states[0].as_ref(), groups, n)?;
        self.counts.resize(n, 0);
        let c = states[1]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| EngineError::internal("avg count state"))?;
        for (i, g) in groups.iter().enumerate() {
            if c.is_valid(i) {
                self.counts[*g as usize] += c.value(i);
            }
        }
        Ok(())
    }
    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        let s = self.sum.evaluate()?;
        let c = Arc::new(Int64Array::from(std::mem::take(&mut self.counts)));
        Ok(vec![s, c])
    }
    fn evaluate(&mut self) -> Result<ArrayRef> {
        let s = self.sum.evaluate()?;
        let counts = std::mem::take(&mut self.counts);
        match (&self.sig.state[0], &self.sig.output) {
            (DataType::Decimal128(_, s_in), DataType::Decimal128(_, s_out)) => {
                let sums = s.as_primitive::<Decimal128Type>();
                let mul = 10i128.pow((*s_out - *s_in).max(0) as u32);
                let vals: Vec<Option<i128>> = sums
                    .iter()
                    .zip(counts.iter())
                    .map(|(v, c)| {
                        let v = v?;
                        if *c == 0 {
                            return None;
                        }
                        let num = v.checked_mul(mul)?;
                        let c = *c as i128;
                        let q = num / c;
                        let r = num % c;
                        // half away from zero
                        Some(if 2 * r.abs() >= c {
                            q + num.signum()
                        } else {
                            q
                        })
                    })
                    .collect();
                let a = arrow::array::Decimal128Array::from(vals)
                    .with_data_type(self.sig.output.clone());
                Ok(Arc::new(a))
            }
            _ => {
                let sums = s.as_primitive::<Float64Type>();
                let vals: Vec<Option<f64>> = sums
                    .iter()
                    .zip(counts.iter())
                    .map(|(v, c)| {
                        if *c == 0 {
                            None
                        } else {
                            v.map(|v| v / *c as f64)
                        }
                    })
                    .collect();
                Ok(Arc::new(arrow::array::Float64Array::from(vals)))
            }
        }
    }
    fn size(&self) -> usize {
        self.sum.size() + self.counts.capacity() * 8
    }
}
