//! The exchange's metrics, in DataFusion's metrics set (`EXPLAIN ANALYZE`).
//!
//! Writer-side counters are per input partition (= map task), reader-side
//! counters per output partition; DataFusion sums them per operator.
//! "Stored" bytes are what the shuffle wrote or fetched (compressed, as in
//! storage); "encoded" bytes are the IPC blocks before compression.

use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, Time,
};

/// One map task's counters.
#[derive(Debug, Clone)]
pub struct WriteMetrics {
    pub records_written: Count,
    pub encoded_bytes_written: Count,
    pub stored_bytes_written: Count,
    pub blocks_written: Count,
    /// Data objects written: one per map output with any row (the index is
    /// its footer), none for an all-empty one.
    pub objects_written: Count,
    /// Spills of the map-output buffer (DataFusion's `spill_count`).
    pub spill_count: Count,
    /// Hashing and splitting batches (DataFusion's `repartition_time`).
    pub repartition_time: Time,
    /// The whole map task: running the input, partitioning, writing, commit.
    pub map_time: Time,
}

impl WriteMetrics {
    pub fn new(metrics: &ExecutionPlanMetricsSet, map: usize) -> Self {
        let b = || MetricBuilder::new(metrics);
        Self {
            records_written: b().counter("shuffle_records_written", map),
            encoded_bytes_written: b().counter("shuffle_encoded_bytes_written", map),
            stored_bytes_written: b().counter("shuffle_bytes_written", map),
            blocks_written: b().counter("shuffle_blocks_written", map),
            objects_written: b().counter("shuffle_objects_written", map),
            spill_count: b().spill_count(map),
            repartition_time: b().subset_time("repartition_time", map),
            map_time: b().subset_time("shuffle_map_time", map),
        }
    }
}

/// One output partition's counters.
#[derive(Debug, Clone)]
pub struct ReadMetrics {
    pub baseline: BaselineMetrics,
    pub records_read: Count,
    pub encoded_bytes_read: Count,
    pub stored_bytes_read: Count,
    /// Ranged reads of map outputs, retries not counted.
    pub read_requests: Count,
}

impl ReadMetrics {
    pub fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let b = || MetricBuilder::new(metrics);
        Self {
            baseline: BaselineMetrics::new(metrics, partition),
            records_read: b().counter("shuffle_records_read", partition),
            encoded_bytes_read: b().counter("shuffle_encoded_bytes_read", partition),
            stored_bytes_read: b().counter("shuffle_bytes_read", partition),
            read_requests: b().counter("shuffle_read_requests", partition),
        }
    }
}
