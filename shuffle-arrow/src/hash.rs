//! Stable, vectorised hashing of key columns.
//!
//! The hash is defined here (not `std`'s randomised SipHash), so every task,
//! process and backend agrees on which partition a key belongs to. Both sides
//! of a join bind their keys to the same types first, so equal keys hash
//! equally. Different `seed`s give independent hashes: the exchange, the
//! grace-hash spill buckets and the in-memory tables each use their own.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, GenericByteArray, PrimitiveArray};
use arrow::datatypes::{
    ArrowPrimitiveType, ByteArrayType, DataType, Date32Type, Date64Type, Decimal128Type,
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};

use crate::error::{Error, Result};

/// Seed of exchanges: which partition a row goes to.
pub const SEED_EXCHANGE: u64 = 0x51_7c_c1_b7_27_22_0a_95;
/// Seed of grace-hash spill buckets (independent of the exchange's).
pub const SEED_SPILL: u64 = 0x2545_f491_4f6c_dd1d;

const K: u64 = 0x9e37_79b9_7f4a_7c15;
const NULL_HASH: u64 = 0x0bad_cafe_dead_beef;

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(K)
}

/// Final avalanche (murmur3 fmix64).
#[inline(always)]
pub fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Hashes a byte string.
#[inline]
pub fn hash_bytes(seed: u64, b: &[u8]) -> u64 {
    let mut h = seed ^ (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h, u64::from_le_bytes(w));
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut w = [0u8; 8];
        w[..rem.len()].copy_from_slice(rem);
        h = mix(h, u64::from_le_bytes(w));
    }
    finish(h)
}

fn prim<T: ArrowPrimitiveType>(
    a: &PrimitiveArray<T>,
    hashes: &mut [u64],
    f: impl Fn(T::Native) -> u64,
) {
    if a.null_count() == 0 {
        for (h, v) in hashes.iter_mut().zip(a.values().iter()) {
            *h = mix(*h, f(*v));
        }
    } else {
        for (i, h) in hashes.iter_mut().enumerate() {
            *h = if a.is_null(i) {
                mix(*h, NULL_HASH)
            } else {
                mix(*h, f(a.value(i)))
            };
        }
    }
}

fn bytes<T: ByteArrayType>(a: &GenericByteArray<T>, hashes: &mut [u64]) {
    for (i, h) in hashes.iter_mut().enumerate() {
        *h = if a.is_null(i) {
            mix(*h, NULL_HASH)
        } else {
            let v: &[u8] = a.value(i).as_ref();
            mix(*h, hash_bytes(0, v))
        };
    }
}

fn boolean(a: &BooleanArray, hashes: &mut [u64]) {
    for (i, h) in hashes.iter_mut().enumerate() {
        *h = if a.is_null(i) {
            mix(*h, NULL_HASH)
        } else {
            mix(*h, a.value(i) as u64 + 1)
        };
    }
}

/// Hashes the rows of `columns` into `out` (resized to the row count).
pub fn hash_columns(columns: &[ArrayRef], seed: u64, out: &mut Vec<u64>) -> Result<()> {
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    out.clear();
    out.resize(n, seed);
    for c in columns {
        let h = out.as_mut_slice();
        match c.data_type() {
            DataType::Int8 => prim(c.as_primitive::<Int8Type>(), h, |v| v as i64 as u64),
            DataType::Int16 => prim(c.as_primitive::<Int16Type>(), h, |v| v as i64 as u64),
            DataType::Int32 => prim(c.as_primitive::<Int32Type>(), h, |v| v as i64 as u64),
            DataType::Int64 => prim(c.as_primitive::<Int64Type>(), h, |v| v as u64),
            DataType::UInt8 => prim(c.as_primitive::<UInt8Type>(), h, |v| v as u64),
            DataType::UInt16 => prim(c.as_primitive::<UInt16Type>(), h, |v| v as u64),
            DataType::UInt32 => prim(c.as_primitive::<UInt32Type>(), h, |v| v as u64),
            DataType::UInt64 => prim(c.as_primitive::<UInt64Type>(), h, |v| v),
            DataType::Date32 => prim(c.as_primitive::<Date32Type>(), h, |v| v as i64 as u64),
            DataType::Date64 => prim(c.as_primitive::<Date64Type>(), h, |v| v as u64),
            DataType::Float32 => prim(c.as_primitive::<Float32Type>(), h, |v| {
                if v == 0.0 {
                    0
                } else {
                    v.to_bits() as u64
                }
            }),
            DataType::Float64 => prim(c.as_primitive::<Float64Type>(), h, |v| {
                if v == 0.0 {
                    0
                } else {
                    v.to_bits()
                }
            }),
            DataType::Decimal128(_, _) => prim(c.as_primitive::<Decimal128Type>(), h, |v| {
                (v as u64) ^ ((v >> 64) as u64).wrapping_mul(K)
            }),
            DataType::Utf8 => bytes(c.as_string::<i32>(), h),
            DataType::LargeUtf8 => bytes(c.as_string::<i64>(), h),
            DataType::Binary => bytes(c.as_binary::<i32>(), h),
            DataType::LargeBinary => bytes(c.as_binary::<i64>(), h),
            DataType::Utf8View => {
                let a = c.as_string_view();
                for (i, h) in h.iter_mut().enumerate() {
                    *h = if a.is_null(i) {
                        mix(*h, NULL_HASH)
                    } else {
                        mix(*h, hash_bytes(0, a.value(i).as_bytes()))
                    };
                }
            }
            DataType::Boolean => boolean(c.as_boolean(), h),
            DataType::Null => h.iter_mut().for_each(|x| *x = mix(*x, NULL_HASH)),
            other => return Err(Error::UnsupportedKeyType(other.clone())),
        }
    }
    for h in out.iter_mut() {
        *h = finish(*h);
    }
    Ok(())
}

/// Maps a hash to `0..n` (multiply-shift, uniform for a good hash).
#[inline(always)]
pub fn bucket(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}
