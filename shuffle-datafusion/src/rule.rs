//! The physical optimizer rule that puts Shovel exchanges into a plan.
//!
//! It runs last (after DataFusion's own rules, including `SanityCheckPlan`),
//! so every rule that reasons about `RepartitionExec` has already seen the
//! plan, and replaces each `RepartitionExec` that hash-partitions without
//! preserving order with a [`ShovelExchangeExec`] over the same input,
//! expressions and partition count. Round-robin and order-preserving
//! repartitions stay in memory (they do not move rows by key; a later step
//! may route them through Shovel too).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use shuffle_core::ShuffleManager;

use crate::exchange::{ShovelExchangeExec, ShuffleIds};

/// Replaces hash `RepartitionExec`s with [`ShovelExchangeExec`]s.
#[derive(Debug)]
pub struct ShovelExchangeRule {
    manager: Arc<dyn ShuffleManager>,
    ids: ShuffleIds,
    map_tasks: usize,
}

impl ShovelExchangeRule {
    /// Exchanges with one map task per input partition.
    pub fn new(manager: Arc<dyn ShuffleManager>, ids: ShuffleIds) -> Self {
        Self {
            manager,
            ids,
            map_tasks: 0,
        }
    }

    /// Exchanges with at most `n` map tasks each (0: one per input
    /// partition; see [`ShovelExchangeExec::with_map_tasks`]).
    pub fn with_map_tasks(mut self, n: usize) -> Self {
        self.map_tasks = n;
        self
    }
}

impl PhysicalOptimizerRule for ShovelExchangeRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(r) = node.downcast_ref::<RepartitionExec>() else {
                return Ok(Transformed::no(node));
            };
            let Partitioning::Hash(exprs, n) = r.partitioning() else {
                return Ok(Transformed::no(node));
            };
            if r.preserve_order() {
                return Ok(Transformed::no(node));
            }
            let exchange = ShovelExchangeExec::try_new(
                Arc::clone(r.input()),
                exprs.clone(),
                *n,
                Arc::clone(&self.manager),
                self.ids.clone(),
            )?
            .with_map_tasks(self.map_tasks);
            Ok(Transformed::yes(
                Arc::new(exchange) as Arc<dyn ExecutionPlan>
            ))
        })
        .data()
    }

    fn name(&self) -> &str {
        "shovel_exchange"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
