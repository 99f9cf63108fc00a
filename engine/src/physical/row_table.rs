//! An open-addressing hash table from multi-column keys (Arrow row format) to
//! dense ids, shared by hash aggregation (group ids) and the hash join
//! (distinct build keys). Keys live once in an Arrow `Rows` buffer; the slot
//! array holds only ids, so growing rehashes with the stored hashes.

use arrow::array::ArrayRef;
use arrow::row::{Row, RowConverter, Rows};

use crate::error::Result;
use crate::exchange::hash::hash_columns;

pub const SEED_TABLE: u64 = 0x7a3c_59d1_e2b4_0f68;

/// Key → dense id.
#[derive(Debug)]
pub struct RowTable {
    slots: Vec<u32>,
    mask: usize,
    hashes: Vec<u64>,
    keys: Rows,
}

impl RowTable {
    pub fn new(converter: &RowConverter) -> Self {
        let cap = 1024;
        Self {
            slots: vec![0; cap],
            mask: cap - 1,
            hashes: Vec::new(),
            keys: converter.empty_rows(0, 0),
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Stored keys, in id order.
    pub fn keys(&self) -> &Rows {
        &self.keys
    }

    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        self.slots.len() * 4 + self.hashes.capacity() * 8 + self.keys.size()
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let mask = cap - 1;
        let mut slots = vec![0u32; cap];
        for (id, h) in self.hashes.iter().enumerate() {
            let mut i = (*h as usize) & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = id as u32 + 1;
        }
        self.slots = slots;
        self.mask = mask;
    }

    /// Id of every row of `rows` (inserting new keys); `hashes` from [`hash_keys`].
    pub fn intern(&mut self, rows: &Rows, hashes: &[u64], ids: &mut Vec<u32>) {
        ids.clear();
        ids.reserve(rows.num_rows());
        for (r, h) in hashes.iter().enumerate() {
            if (self.hashes.len() + 1) * 2 > self.slots.len() {
                self.grow();
            }
            let row = rows.row(r);
            let mut i = (*h as usize) & self.mask;
            loop {
                let s = self.slots[i];
                if s == 0 {
                    let id = self.hashes.len() as u32;
                    self.slots[i] = id + 1;
                    self.hashes.push(*h);
                    self.keys.push(row);
                    ids.push(id);
                    break;
                }
                let id = s - 1;
                if self.hashes[id as usize] == *h && self.keys.row(id as usize) == row {
                    ids.push(id);
                    break;
                }
                i = (i + 1) & self.mask;
            }
        }
    }

    /// Id of a key, if present.
    #[inline]
    pub fn lookup(&self, row: Row<'_>, h: u64) -> Option<u32> {
        let mut i = (h as usize) & self.mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            let id = s - 1;
            if self.hashes[id as usize] == h && self.keys.row(id as usize) == row {
                return Some(id);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Table hashes of key columns.
pub fn hash_keys(cols: &[ArrayRef], out: &mut Vec<u64>) -> Result<()> {
    hash_columns(cols, SEED_TABLE, out)
}
