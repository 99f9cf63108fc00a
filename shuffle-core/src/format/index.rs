//! The index block: where each partition's segment lies in the data object.
//! It is the data object's footer (see [`footer`](super::footer)); before
//! version 2 it was an object of its own (`map-<m>.index`).
//!
//! ```text
//! offset        size      field
//!  0            4         magic "SHVI"
//!  4            2         version u16 BE (2: a footer; 1 was a separate index object)
//!  6            2         flags   u16 BE (bit 0: FLAG_NO_DATA, all partitions empty)
//!  8            4         shuffle_id u32 BE
//! 12            4         map_id     u32 BE
//! 16            4         attempt    u32 BE (the attempt that wrote the object)
//! 20            4         N = number of partitions, u32 BE
//! 24            8(N+1)    offsets u64 BE: offsets[0] = 0, offsets[N] = bytes of all segments
//! 32+8N         4N        crc32 u32 BE of each partition's segment bytes
//! 32+12N        8N        records u64 BE per partition (as counted by the writer)
//! 32+20N        4         crc32 u32 BE of bytes 0..32+20N
//! total: 36 + 20N bytes
//! ```
//!
//! The N+1 offsets are exactly Spark's index file; the rest makes the block
//! self-describing and self-checking. Decoding rejects a wrong size, magic,
//! version or trailer crc, and offsets that are not monotonic. An all-empty
//! map output is never stored (version 2), so `FLAG_NO_DATA` is set only in
//! indexes built in memory for one.

use bytes::Bytes;

use crate::{Error, Result};

pub const INDEX_MAGIC: [u8; 4] = *b"SHVI";
pub const INDEX_VERSION: u16 = 2;
/// Header flag: every partition is empty (such outputs are not stored).
pub const FLAG_NO_DATA: u16 = 1;
const HEADER_LEN: usize = 24;

/// A decoded index object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub flags: u16,
    pub shuffle_id: u32,
    pub map_id: u32,
    pub attempt: u32,
    /// N + 1 offsets.
    pub offsets: Vec<u64>,
    pub checksums: Vec<u32>,
    pub records: Vec<u64>,
}

impl IndexFile {
    /// Builds an index from per-partition lengths.
    pub fn from_lengths(
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
        lengths: &[u64],
        checksums: Vec<u32>,
        records: Vec<u64>,
    ) -> Self {
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        let mut acc = 0u64;
        offsets.push(0);
        for l in lengths {
            acc += l;
            offsets.push(acc);
        }
        let flags = if acc == 0 { FLAG_NO_DATA } else { 0 };
        Self {
            flags,
            shuffle_id,
            map_id,
            attempt,
            offsets,
            checksums,
            records,
        }
    }

    pub fn num_partitions(&self) -> usize {
        self.checksums.len()
    }

    /// Per-partition segment lengths.
    pub fn lengths(&self) -> Vec<u64> {
        self.offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Serialised size for `n` partitions.
    pub fn encoded_len(n: usize) -> usize {
        HEADER_LEN + 8 * (n + 1) + 4 * n + 8 * n + 4
    }

    pub fn encode(&self) -> Bytes {
        let n = self.checksums.len();
        let mut out = Vec::with_capacity(Self::encoded_len(n));
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.shuffle_id.to_be_bytes());
        out.extend_from_slice(&self.map_id.to_be_bytes());
        out.extend_from_slice(&self.attempt.to_be_bytes());
        out.extend_from_slice(&(n as u32).to_be_bytes());
        for o in &self.offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        for c in &self.checksums {
            out.extend_from_slice(&c.to_be_bytes());
        }
        for r in &self.records {
            out.extend_from_slice(&r.to_be_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    /// Decodes and validates an index; `object` names it in errors.
    pub fn decode(buf: &[u8], object: &str) -> Result<Self> {
        let bad = |reason: String| Error::corrupt(object, reason);
        if buf.len() < HEADER_LEN + 12 {
            return Err(bad(format!(
                "index is {} bytes, too short (truncated?)",
                buf.len()
            )));
        }
        if buf[0..4] != INDEX_MAGIC {
            return Err(bad("bad index magic (not a Shovel index)".into()));
        }
        let u16_at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let version = u16_at(4);
        if version != INDEX_VERSION {
            return Err(bad(format!(
                "index version {version} not supported (this build reads {INDEX_VERSION})"
            )));
        }
        let n = u32_at(20) as usize;
        let expected = (n as u64)
            .checked_mul(20)
            .and_then(|x| x.checked_add((HEADER_LEN + 12) as u64));
        if expected != Some(buf.len() as u64) {
            return Err(bad(format!(
                "index is {} bytes but {} partitions need {} (truncated?)",
                buf.len(),
                n,
                expected.map_or_else(|| "too many".to_string(), |e| e.to_string())
            )));
        }
        let body = buf.len() - 4;
        let stored = u32_at(body);
        let actual = crc32fast::hash(&buf[..body]);
        if stored != actual {
            return Err(Error::ChecksumMismatch {
                object: object.to_string(),
                partition: u32::MAX,
                expected: stored,
                actual,
            });
        }
        let mut pos = HEADER_LEN;
        let mut offsets = Vec::with_capacity(n + 1);
        for _ in 0..=n {
            offsets.push(u64_at(pos));
            pos += 8;
        }
        if offsets[0] != 0 || offsets.windows(2).any(|w| w[1] < w[0]) {
            return Err(bad("index offsets are not monotonic from 0".into()));
        }
        let mut checksums = Vec::with_capacity(n);
        for _ in 0..n {
            checksums.push(u32_at(pos));
            pos += 4;
        }
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            records.push(u64_at(pos));
            pos += 8;
        }
        Ok(Self {
            flags: u16_at(6),
            shuffle_id: u32_at(8),
            map_id: u32_at(12),
            attempt: u32_at(16),
            offsets,
            checksums,
            records,
        })
    }
}
