//! The map-output tracker: committed [`MapStatus`]es per shuffle.
//!
//! The first status registered for a map wins (later attempts' statuses are
//! ignored), mirroring the shuffle layer's first-commit-wins rule. A fetch
//! failure invalidates a map's status so the scheduler re-runs that map; so
//! does losing the executor that wrote it when storage is not reliable
//! (the tracker remembers which executor committed each output, and why an
//! output went missing, so the readers' errors say).

use std::collections::HashMap;
use std::sync::Mutex;

use shuffle_core::MapStatus;

use crate::error::{EngineError, Result};
use crate::runtime::MapOutputs;

#[derive(Debug, Default)]
struct ShuffleEntry {
    maps: Vec<Option<MapStatus>>,
    /// Executor that committed each registered output.
    executors: Vec<Option<usize>>,
    /// Why an output is missing after it was registered once.
    lost: HashMap<u32, String>,
    /// The attempt whose output went with a lost executor, per map.
    lost_attempts: HashMap<u32, u32>,
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
                executors: vec![None; num_maps],
                lost: HashMap::new(),
                lost_attempts: HashMap::new(),
                attempts: vec![0; num_maps],
            },
        );
    }

    /// Records a status committed on `executor`; returns false if one was
    /// already registered.
    pub fn register_map_output(&self, status: MapStatus, executor: usize) -> bool {
        let mut g = self.lock();
        let Some(e) = g.get_mut(&status.shuffle_id) else {
            return false;
        };
        let map = status.map_id;
        match e.maps.get_mut(map as usize) {
            Some(slot @ None) => {
                *slot = Some(status);
                e.executors[map as usize] = Some(executor);
                e.lost.remove(&map);
                e.lost_attempts.remove(&map);
                true
            }
            _ => false,
        }
    }

    /// Forgets every output `executor` committed (its disk is gone), noting
    /// `why` for the readers that will miss them. Returns the forgotten ones.
    pub fn invalidate_executor(&self, executor: usize, why: &str) -> Vec<MapStatus> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for e in g.values_mut() {
            for (i, slot) in e.maps.iter_mut().enumerate() {
                if slot.is_some() && e.executors[i] == Some(executor) {
                    if let Some(st) = slot.take() {
                        e.executors[i] = None;
                        e.lost.insert(i as u32, why.to_string());
                        e.lost_attempts.insert(i as u32, st.attempt);
                        out.push(st);
                    }
                }
            }
        }
        out.sort_by_key(|s| (s.shuffle_id, s.map_id));
        out
    }

    /// The registered outputs `executor` committed (kept registered).
    pub fn committed_on(&self, executor: usize) -> Vec<MapStatus> {
        let g = self.lock();
        let mut out: Vec<MapStatus> = g
            .values()
            .flat_map(|e| {
                e.maps
                    .iter()
                    .zip(&e.executors)
                    .filter(|(_, ex)| **ex == Some(executor))
                    .filter_map(|(st, _)| st.clone())
            })
            .collect();
        out.sort_by_key(|s| (s.shuffle_id, s.map_id));
        out
    }

    /// Why a map's output is missing, if it was lost after being registered.
    pub fn loss_reason(&self, shuffle_id: u32, map_id: u32) -> Option<String> {
        self.lock()
            .get(&shuffle_id)
            .and_then(|e| e.lost.get(&map_id).cloned())
    }

    /// The attempt whose output went with a lost executor, if the map's
    /// output is missing for that reason.
    pub fn lost_attempt(&self, shuffle_id: u32, map_id: u32) -> Option<u32> {
        self.lock()
            .get(&shuffle_id)
            .and_then(|e| e.lost_attempts.get(&map_id).copied())
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
        let Some(e) = g.get_mut(&shuffle_id) else {
            return false;
        };
        match e.maps.get_mut(map_id as usize).and_then(|s| s.take()) {
            Some(_) => {
                e.executors[map_id as usize] = None;
                true
            }
            None => false,
        }
    }

    /// Forgets a map's output if `attempt` is the registered one (it was
    /// found damaged), noting `why`; false if another attempt replaced it.
    pub fn invalidate_attempt(
        &self,
        shuffle_id: u32,
        map_id: u32,
        attempt: u32,
        why: &str,
    ) -> bool {
        let mut g = self.lock();
        let Some(e) = g.get_mut(&shuffle_id) else {
            return false;
        };
        let Some(slot) = e.maps.get_mut(map_id as usize) else {
            return false;
        };
        if slot.as_ref().map(|s| s.attempt) != Some(attempt) {
            return false;
        }
        *slot = None;
        e.executors[map_id as usize] = None;
        e.lost.insert(map_id, why.to_string());
        true
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
                s.clone().ok_or_else(|| {
                    let why = e
                        .lost
                        .get(&(i as u32))
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default();
                    EngineError::FetchFailed {
                        shuffle_id,
                        map_id: Some(i as u32),
                        source: shuffle_core::Error::NotFound {
                            object: format!("map output of shuffle {shuffle_id} map {i}{why}"),
                        },
                    }
                })
            })
            .collect()
    }

    /// The committed statuses of a shuffle's maps that have one (in map
    /// order), skipping maps with none; empty for an unknown shuffle.
    pub fn committed(&self, shuffle_id: u32) -> Vec<MapStatus> {
        self.lock()
            .get(&shuffle_id)
            .map(|e| e.maps.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops a shuffle's entries.
    pub fn remove_shuffle(&self, shuffle_id: u32) {
        self.lock().remove(&shuffle_id);
    }
}

impl MapOutputs for MapOutputTracker {
    fn statuses(&self, shuffle_id: u32) -> Result<Vec<MapStatus>> {
        MapOutputTracker::statuses(self, shuffle_id)
    }
}
