//! The logical layer: [`DataFrame`] builds a [`LogicalPlan`] eagerly
//! validated (names resolved, types checked, schemas known at every node).

pub mod dataframe;
pub mod plan;

pub use dataframe::DataFrame;
pub use plan::{BroadcastHint, LogicalPlan, RepartitionScheme, ScanSource};
