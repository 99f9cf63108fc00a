//! Key layout: which bucket and which S3 key an [`ObjectKey`] maps to.
//!
//! ```text
//!   slot   = mix64(shard) % (B * P)        B buckets, P hash prefixes
//!   bucket = buckets[slot % B]
//!   hp     = slot / B                       (0..P)
//!   key    = "<prefix>/<hp as 4 hex digits>/<ObjectKey::path>"
//! ```
//!
//! `mix64` is the splitmix64 finalizer, a bijection on `u64`, so shards
//! spread evenly even when callers pass small sequential numbers, and listing
//! can hand back a *canonical* shard (`unmix64(slot)`) that maps to the very
//! same bucket and prefix; the original shard value is not recoverable from a
//! key, and does not need to be.

use shuffle_core::store::ObjectKey;

use crate::config::BucketUri;

/// The splitmix64 finalizer (a bijection).
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The inverse of [`mix64`].
pub(crate) fn unmix64(mut z: u64) -> u64 {
    z = z ^ (z >> 31) ^ (z >> 62);
    z = z.wrapping_mul(0x3196_42b2_d24d_8ec3);
    z = z ^ (z >> 27) ^ (z >> 54);
    z = z.wrapping_mul(0x96de_1b17_3f11_9089);
    z ^ (z >> 30) ^ (z >> 60)
}

/// Maps object keys to `(bucket, S3 key)`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    buckets: Vec<BucketUri>,
    hash_prefixes: u32,
}

/// One `(bucket, hash prefix)` cell of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    pub bucket: usize,
    pub hash_prefix: u32,
}

impl Layout {
    pub(crate) fn new(buckets: Vec<BucketUri>, hash_prefixes: u32) -> Self {
        Self {
            buckets,
            hash_prefixes: hash_prefixes.max(1),
        }
    }

    fn slots(&self) -> u64 {
        self.buckets.len() as u64 * u64::from(self.hash_prefixes)
    }

    pub(crate) fn cell(&self, shard: u64) -> Cell {
        let b = self.buckets.len() as u64;
        let slot = mix64(shard) % self.slots();
        Cell {
            bucket: (slot % b) as usize,
            hash_prefix: (slot / b) as u32,
        }
    }

    /// A shard that maps to `cell`.
    pub(crate) fn canonical_shard(&self, cell: Cell) -> u64 {
        unmix64(u64::from(cell.hash_prefix) * self.buckets.len() as u64 + cell.bucket as u64)
    }

    /// Every cell, bucket-major.
    pub(crate) fn cells(&self) -> impl Iterator<Item = Cell> + '_ {
        (0..self.buckets.len()).flat_map(move |bucket| {
            (0..self.hash_prefixes).map(move |hash_prefix| Cell {
                bucket,
                hash_prefix,
            })
        })
    }

    pub(crate) fn bucket(&self, cell: Cell) -> &str {
        &self.buckets[cell.bucket].bucket
    }

    /// `<prefix>/<hp>/` (or `<hp>/` at the bucket root).
    pub(crate) fn cell_prefix(&self, cell: Cell) -> String {
        let prefix = &self.buckets[cell.bucket].prefix;
        if prefix.is_empty() {
            format!("{:04x}/", cell.hash_prefix)
        } else {
            format!("{prefix}/{:04x}/", cell.hash_prefix)
        }
    }

    /// One shard per bucket (its hash prefix 0), for keys every bucket holds.
    pub(crate) fn bucket_shards(&self) -> Vec<u64> {
        (0..self.buckets.len())
            .map(|bucket| {
                self.canonical_shard(Cell {
                    bucket,
                    hash_prefix: 0,
                })
            })
            .collect()
    }

    /// Where keys under `prefix` live, one line per bucket:
    /// `s3://bucket/<prefix>/{0000..000f}/<key prefix>`.
    pub(crate) fn describe_prefix(&self, prefix: &str) -> Vec<String> {
        let hp = if self.hash_prefixes == 1 {
            "0000".to_string()
        } else {
            format!("{{0000..{:04x}}}", self.hash_prefixes - 1)
        };
        self.buckets
            .iter()
            .map(|b| {
                let base = if b.prefix.is_empty() {
                    String::new()
                } else {
                    format!("{}/", b.prefix)
                };
                format!(
                    "s3://{}/{base}{hp}/{}",
                    b.bucket,
                    prefix.trim_start_matches('/')
                )
            })
            .collect()
    }

    /// `(bucket, S3 key)` of an object.
    pub(crate) fn locate(&self, key: &ObjectKey) -> (&str, String) {
        let cell = self.cell(key.shard);
        let mut s3_key = self.cell_prefix(cell);
        s3_key.push_str(key.path.trim_start_matches('/'));
        (self.bucket(cell), s3_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_invertible() {
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            assert_eq!(unmix64(mix64(x)), x);
            assert_eq!(mix64(unmix64(x)), x);
        }
    }

    #[test]
    fn canonical_shard_maps_back() {
        let l = Layout::new(
            vec![
                BucketUri::parse("s3://aaa/p").unwrap(),
                BucketUri::parse("s3://bbb").unwrap(),
            ],
            16,
        );
        let mut seen = std::collections::HashSet::new();
        for shard in 0..1000 {
            let c = l.cell(shard);
            seen.insert((c.bucket, c.hash_prefix));
            assert_eq!(l.cell(l.canonical_shard(c)), c);
        }
        assert_eq!(seen.len(), 32, "sequential shards should reach every cell");
        let (b, k) = l.locate(&ObjectKey::new(
            l.canonical_shard(Cell {
                bucket: 0,
                hash_prefix: 10,
            }),
            "app/x",
        ));
        assert_eq!((b, k.as_str()), ("aaa", "p/000a/app/x"));
    }
}
