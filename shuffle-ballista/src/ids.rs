//! How a Ballista task's output is named in Shovel.
//!
//! Ballista tells the reader of a shuffle only what it put in the writer's
//! `ShuffleWritePartition`s: the stage, the output partition, and a free
//! `file_id` (Ballista's own writer puts its task id there). Shovel packs
//! everything a reader needs to find the map output into that `file_id`:
//!
//! ```text
//!  file_id (u64) = 1 (Shovel's mark) | partitions (15 bits) | stage attempt (16 bits) | task id (32 bits)
//!  shuffle id (u32) = partitions (16 bits) | stage attempt (4 bits) | stage id (12 bits)
//!  map id = task id        attempt = the task's attempt number
//! ```
//!
//! - The **task id** is unique within a stage attempt (Ballista's
//!   append-order slot; a retried task gets a new slot), so one task's
//!   output is one Shovel map output.
//! - The **stage attempt** is part of the shuffle: when Ballista re-runs a
//!   stage (after losing an executor), slots are numbered again from 0 and
//!   may cover other input partitions, so the new attempt's outputs must not
//!   meet the old ones under first-attempt-wins.
//! - The **partition count** is part of the shuffle because a pass-through
//!   stage's tasks each know only their own partitions (the highest + 1);
//!   every task of a hash stage has the same count.
//!
//! The top bit marks a location as Shovel's: Ballista's own writers put a
//! task id there (far below 2^63), so a reader tells which stages Shovel
//! wrote from the locations alone (see [`is_shovel_file_id`]).
//!
//! Each shuffle of a job lives in the job's Shovel app (see
//! [`crate::options`]), so shuffle ids only need to be unique within a job.

use datafusion::error::{DataFusionError, Result};

/// Where one Ballista task's map output lives in Shovel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapOutputId {
    pub stage_id: u32,
    pub stage_attempt: u32,
    /// Partitions of the map output.
    pub partitions: u32,
    /// Ballista's task id: the Shovel map id.
    pub task_id: u32,
}

const MAX_STAGE: u32 = (1 << 12) - 1;
const MAX_STAGE_ATTEMPT: u32 = (1 << 4) - 1;
const MAX_PARTITIONS: u32 = (1 << 15) - 1;
const SHOVEL_MARK: u64 = 1 << 63;

/// True when a partition location's `file_id` names a Shovel map output.
pub fn is_shovel_file_id(file_id: Option<u64>) -> bool {
    file_id.is_some_and(|f| f & SHOVEL_MARK != 0)
}

impl MapOutputId {
    /// Checks the fields fit the packing (see the module docs).
    pub fn new(stage_id: u32, stage_attempt: u32, partitions: u32, task_id: u32) -> Result<Self> {
        let limit = |what: &str, v: u32, max: u32| {
            if v > max {
                Err(DataFusionError::Plan(format!(
                    "Shovel on Ballista supports {what} up to {max}, got {v}"
                )))
            } else {
                Ok(())
            }
        };
        limit("stage ids", stage_id, MAX_STAGE)?;
        limit("stage attempts", stage_attempt, MAX_STAGE_ATTEMPT)?;
        limit(
            "shuffle partitions (lower datafusion.execution.target_partitions)",
            partitions,
            MAX_PARTITIONS,
        )?;
        if partitions == 0 {
            return Err(DataFusionError::Plan(
                "a Shovel map output needs at least one partition".into(),
            ));
        }
        Ok(Self {
            stage_id,
            stage_attempt,
            partitions,
            task_id,
        })
    }

    /// The Shovel shuffle id within the job's app.
    pub fn shuffle_id(&self) -> u32 {
        self.partitions << 16 | self.stage_attempt << 12 | self.stage_id
    }

    /// The `file_id` Ballista carries from the writer to the readers.
    pub fn file_id(&self) -> u64 {
        SHOVEL_MARK
            | (self.partitions as u64) << 48
            | (self.stage_attempt as u64) << 32
            | self.task_id as u64
    }

    /// The id a reader finds in a partition location of stage `stage_id`.
    pub fn from_file_id(stage_id: usize, file_id: Option<u64>) -> Result<Self> {
        let f = file_id.ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a partition location of stage {stage_id} has no file id: it was not \
                 written by Shovel (run every executor with Shovel's execution engine)"
            ))
        })?;
        let stage = u32::try_from(stage_id)
            .map_err(|_| DataFusionError::Internal(format!("stage id {stage_id} too large")))?;
        Self::new(
            stage,
            ((f >> 32) & 0xFFFF) as u32,
            ((f & !SHOVEL_MARK) >> 48) as u32,
            f as u32,
        )
    }
}

/// The (stage attempt, task attempt) of the task `context` runs, (0, 0)
/// when its identity does not say ([`parse_task_identity`]).
pub fn task_attempts(context: &datafusion::execution::TaskContext) -> (u32, u32) {
    context
        .task_id()
        .as_deref()
        .and_then(parse_task_identity)
        .unwrap_or((0, 0))
}

/// The stage attempt and task attempt in the task identity Ballista's
/// executor gives each task's context: `TID {job}/{stage}.{stage
/// attempt}/{task}.{task attempt}`.
pub fn parse_task_identity(identity: &str) -> Option<(u32, u32)> {
    let rest = identity.strip_prefix("TID ")?;
    let mut parts = rest.rsplitn(3, '/');
    let task = parts.next()?;
    let stage = parts.next()?;
    let (_, task_attempt) = task.split_once('.')?;
    let (_, stage_attempt) = stage.split_once('.')?;
    Some((stage_attempt.parse().ok()?, task_attempt.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_round_trip() {
        for (s, a, p, t) in [(0, 0, 1, 0), (4095, 15, 32767, u32::MAX), (7, 2, 200, 31)] {
            let id = MapOutputId::new(s, a, p, t).expect("in range");
            assert!(is_shovel_file_id(Some(id.file_id())));
            let back = MapOutputId::from_file_id(s as usize, Some(id.file_id())).expect("parses");
            assert_eq!(back, id);
        }
        // Ballista's own writers use the task id.
        assert!(!is_shovel_file_id(Some(17)));
        assert!(!is_shovel_file_id(None));
    }

    #[test]
    fn shuffle_ids_differ_by_stage_attempt_and_partitions() {
        let a = MapOutputId::new(3, 0, 8, 1).expect("ok");
        let b = MapOutputId::new(3, 1, 8, 1).expect("ok");
        let c = MapOutputId::new(3, 0, 9, 1).expect("ok");
        let d = MapOutputId::new(4, 0, 8, 1).expect("ok");
        let ids = [a, b, c, d].map(|x| x.shuffle_id());
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                assert_ne!(ids[i], ids[j], "{i} vs {j}");
            }
        }
    }

    #[test]
    fn out_of_range_ids_are_refused_with_the_limit() {
        let e = MapOutputId::new(4096, 0, 1, 0).expect_err("stage too large");
        assert!(e.to_string().contains("stage ids up to 4095"), "{e}");
        let e = MapOutputId::new(1, 0, 40_000, 0).expect_err("too many partitions");
        assert!(e.to_string().contains("target_partitions"), "{e}");
        assert!(MapOutputId::from_file_id(1, None).is_err());
    }

    #[test]
    fn task_identities_parse() {
        assert_eq!(parse_task_identity("TID abc1234/5.2/17.3"), Some((2, 3)));
        assert_eq!(parse_task_identity("TID a/b/c/5.0/1.0"), Some((0, 0)));
        assert_eq!(parse_task_identity("task 5"), None);
    }
}
