//! What a committed map output is ([`MapStatus`]), the shuffle it belongs
//! to ([`ShuffleHandle`]) and the keys a manager may have written
//! ([`KeyLog`]).
//!
//! These are the values the buffer, writer, reader and manager pass between
//! them; keeping them here (with the key grammar in [`crate::layout`]) means
//! none of those modules imports another for its types.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use crate::format::footer::index_len;
use crate::format::{decode_footer, footer_len, IndexFile, TRAILER_LEN};
use crate::store::{ObjectKey, ShuffleStore};
use crate::{Error, Result};

/// A registered shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleHandle {
    pub shuffle_id: u32,
    pub num_maps: u32,
    pub num_partitions: u32,
}

/// What a committed map output is and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapStatus {
    pub shuffle_id: u32,
    pub map_id: u32,
    /// The attempt whose output this is.
    pub attempt: u32,
    /// The data object (meaningless when every length is 0).
    pub location: ObjectKey,
    /// Stored bytes per partition.
    pub lengths: Vec<u64>,
    /// crc32 of each partition's stored bytes.
    pub checksums: Vec<u32>,
    /// Records per partition, as counted by the writer.
    pub records: Vec<u64>,
    /// Raw (uncompressed) bytes written, when known (0 otherwise).
    pub raw_bytes: u64,
}

impl MapStatus {
    /// The status an index (a data object's footer) describes, for the
    /// data object at `location`.
    pub(crate) fn from_index(index: &IndexFile, raw_bytes: u64, location: ObjectKey) -> Self {
        Self {
            shuffle_id: index.shuffle_id,
            map_id: index.map_id,
            attempt: index.attempt,
            location,
            lengths: index.lengths(),
            checksums: index.checksums.clone(),
            records: index.records.clone(),
            raw_bytes,
        }
    }

    pub fn num_partitions(&self) -> u32 {
        self.lengths.len() as u32
    }

    /// Stored bytes of all partitions.
    pub fn total_bytes(&self) -> u64 {
        self.lengths.iter().sum()
    }

    /// Byte range of a contiguous partition range in the data object.
    pub fn byte_range(&self, partitions: Range<u32>) -> Range<u64> {
        let start: u64 = self.lengths[..partitions.start as usize].iter().sum();
        let len: u64 = self.lengths[partitions.start as usize..partitions.end as usize]
            .iter()
            .sum();
        start..start + len
    }
}

/// The keys a manager may have written, per shuffle (see the module docs).
///
/// Writers record a key *before* they write it and forget it once they
/// deleted it themselves, so deleting every recorded key leaves nothing of
/// what went through the manager, and the count is close to the number of
/// objects that exist (a write cut off mid-request is counted too).
#[derive(Debug, Default)]
pub struct KeyLog {
    keys: Mutex<HashMap<u32, std::collections::BTreeSet<ObjectKey>>>,
}

impl KeyLog {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u32, std::collections::BTreeSet<ObjectKey>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `key` of `shuffle_id` is about to be written.
    pub fn record(&self, shuffle_id: u32, key: ObjectKey) {
        self.lock().entry(shuffle_id).or_default().insert(key);
    }

    /// Notes that `key` was deleted by whoever wrote it.
    pub fn forget(&self, shuffle_id: u32, key: &ObjectKey) {
        if let Some(keys) = self.lock().get_mut(&shuffle_id) {
            keys.remove(key);
        }
    }

    /// Removes and returns the keys of the given shuffles (of every shuffle
    /// with `None`), with the shuffle each belongs to.
    pub fn take(&self, shuffle_ids: Option<&[u32]>) -> Vec<(u32, ObjectKey)> {
        let mut g = self.lock();
        let ids: Vec<u32> = match shuffle_ids {
            Some(ids) => ids.to_vec(),
            None => g.keys().copied().collect(),
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(keys) = g.remove(&id) {
                out.extend(keys.into_iter().map(|k| (id, k)));
            }
        }
        out
    }

    /// Puts back keys whose delete failed, so a later cleanup retries them.
    pub fn restore(&self, keys: Vec<(u32, ObjectKey)>) {
        let mut g = self.lock();
        for (id, k) in keys {
            g.entry(id).or_default().insert(k);
        }
    }

    /// Keys recorded and not yet deleted.
    pub fn len(&self) -> usize {
        self.lock().values().map(|k| k.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first commit of each map this process saw: the in-process half of
/// first-attempt-wins (see `manager`). Kept in both commit modes: it is
/// the only arbiter within a process on stores without conditional
/// create, and it lets `committed_map_status` answer without a request for
/// maps committed here.
#[derive(Debug, Default)]
pub(crate) struct Winners {
    map: Mutex<HashMap<(u32, u32), MapStatus>>,
}

impl Winners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, u32), MapStatus>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, shuffle_id: u32, map_id: u32) -> Option<MapStatus> {
        self.lock().get(&(shuffle_id, map_id)).cloned()
    }

    /// Records `status` unless a winner is recorded: `Ok` with `status`
    /// when it is the first, `Err` with the earlier winner otherwise.
    pub(crate) fn claim(&self, status: MapStatus) -> Result<MapStatus, Box<MapStatus>> {
        let mut g = self.lock();
        match g.get(&(status.shuffle_id, status.map_id)) {
            Some(w) => Err(Box::new(w.clone())),
            None => {
                g.insert((status.shuffle_id, status.map_id), status.clone());
                Ok(status)
            }
        }
    }

    /// Records `status` as the winner, whatever was recorded (storage
    /// decided, see `manager`).
    pub(crate) fn set(&self, status: MapStatus) {
        self.lock()
            .insert((status.shuffle_id, status.map_id), status);
    }

    /// Forgets the winner of a map if it is `attempt` (any attempt with
    /// `None`); returns the winner that was forgotten.
    pub(crate) fn forget(
        &self,
        shuffle_id: u32,
        map_id: u32,
        attempt: Option<u32>,
    ) -> Option<MapStatus> {
        let mut g = self.lock();
        match g.get(&(shuffle_id, map_id)) {
            Some(w) if attempt.is_none_or(|a| a == w.attempt) => g.remove(&(shuffle_id, map_id)),
            _ => None,
        }
    }

    /// Forgets every winner of the given shuffles (all with `None`).
    pub(crate) fn forget_shuffles(&self, shuffle_ids: Option<&[u32]>) {
        let mut g = self.lock();
        match shuffle_ids {
            Some(ids) => g.retain(|(s, _), _| !ids.contains(s)),
            None => g.clear(),
        }
    }
}

/// Reads the status of the data object at `location` from its footer
/// (see [`crate::format::footer`]): one suffix read when `num_partitions`
/// is right, a second one only when the footer is of another size. The
/// status's `raw_bytes` is 0 (not stored).
pub(crate) async fn read_footer(
    store: &dyn ShuffleStore,
    location: &ObjectKey,
    num_partitions: Option<u32>,
) -> Result<MapStatus> {
    let name = store.describe(location);
    let guess = num_partitions.map_or(TRAILER_LEN, |n| footer_len(n as usize));
    let tail = store.get_suffix(location, guess as u64).await?;
    let index = match decode_footer(&tail, &name)? {
        Some(index) => index,
        None => {
            let need = index_len(&tail, &name)? + TRAILER_LEN;
            let tail = store.get_suffix(location, need as u64).await?;
            decode_footer(&tail, &name)?.ok_or_else(|| {
                Error::corrupt(
                    &name,
                    format!(
                        "the footer names a {} byte index but the object is {} bytes (truncated?)",
                        need - TRAILER_LEN,
                        tail.len()
                    ),
                )
            })?
        }
    };
    if let Some(n) = num_partitions {
        if index.num_partitions() != n as usize {
            return Err(Error::corrupt(
                &name,
                format!(
                    "the footer lists {} partitions, the shuffle has {n}",
                    index.num_partitions()
                ),
            ));
        }
    }
    Ok(MapStatus::from_index(&index, 0, location.clone()))
}
