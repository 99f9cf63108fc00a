//! The map-output tracker: committed [`MapStatus`]es per shuffle.
//!
//! The first status registered for a map wins (later attempts' statuses are
//! ignored), mirroring the shuffle layer's first-commit-wins rule. A fetch
//! failure invalidates a map's status so the scheduler re-runs that map.

use std::collections::HashMap;
use std::sync::Mutex;

use shuffle_core::MapStatus;

use crate::error::{EngineError, Result};

#[derive(Debug, Default)]
struct ShuffleEntry {
    maps: Vec<Option<MapStatus>>,
    /// Next attempt number per map.
    attempts: Vec<u32>,
}

/// Committed map outputs of every shuffle of a session.
#[derive(Debug, Default)]
pub struct MapOutputTracker {
    shuffles: Mutex<HashMap<u32, ShuffleEntry>>,
}

impl MapOutputTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, ShuffleEntry>> {
        self.shuffles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares a shuffle with `num_maps` map tasks.
    pub fn register_shuffle(&self, shuffle_id: u32, num_maps: usize) {
        self.lock().insert(
            shuffle_id,
            ShuffleEntry {
                maps: vec![None; num_maps],
                attempts: vec![0; num_maps],
            },
        );
    }

    /// Records a committed status; returns false if one was already registered.
    pub fn register_map_output(&self, status: MapStatus) -> bool {
        let mut g = self.lock();
        let Some(e) = g.get_mut(&status.shuffle_id) else {
            return false;
        };
        match e.maps.get_mut(status.map_id as usize) {
            Some(slot @ None) => {
                *slot = Some(status);
                true
            }
            _ => false,
        }
    }

    /// Allocates the attempt number for the next run of a map task.
    pub fn next_attempt(&self, shuffle_id: u32, map_id: u32) -> u32 {
        let mut g = self.lock();
        match g
            .get_mut(&shuffle_id)
            .and_then(|e| e.attempts.get_mut(map_id as usize))
        {
            Some(a) => {
                let n = *a;
                *a += 1;
                n
            }
            None => 0,
        }
    }

    /// Forgets a map's output (it was lost); returns whether it was present.
    pub fn invalidate(&self, shuffle_id: u32, map_id: u32) -> bool {
        let mut g = self.lock();
        g.get_mut(&shuffle_id)
            .and_then(|e| e.maps.get_mut(map_id as usize))
            .and_then(|s| s.take())
            .is_some()
    }

    /// Attempt of a map's registered status.
    pub fn attempt_of(&self, shuffle_id: u32, map_id: u32) -> Option<u32> {
        let g = self.lock();
        g.get(&shuffle_id)
            .and_then(|e| e.maps.get(map_id as usize))
            .and_then(|s| s.as_ref().map(|s| s.attempt))
    }

    /// Maps whose output is not (or no longer) registered.
    pub fn missing_maps(&self, shuffle_id: u32) -> Vec<u32> {
        let g = self.lock();
        g.get(&shuffle_id)
            .map(|e| {
                e.maps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_none())
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every map's status; an error if any is missing.
    pub fn statuses(&self, shuffle_id: u32) -> Result<Vec<MapStatus>> {
        let g = self.lock();
        let e = g
            .get(&shuffle_id)
            .ok_or_else(|| EngineError::internal(format!("shuffle {shuffle_id} not registered")))?;
        e.maps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.clone().ok_or_else(|| EngineError::FetchFailed {
                    shuffle_id,
                    map_id: Some(i as u32),
                    source: shuffle_core::Error::NotFound {
                        object: format!("map status of shuffle {shuffle_id} map {i}"),
                    },
                })
            })
            .collect()
    }

    /// Drops a shuffle's entries.
    pub fn remove_shuffle(&self, shuffle_id: u32) {
        self.lock().remove(&shuffle_id);
    }
}
