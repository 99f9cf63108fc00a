//! The batch block codec lives in [`shuffle_arrow::codec`] (shared with the
//! DataFusion adapter); re-exported here for the engine's modules.

pub use shuffle_arrow::codec::*;
