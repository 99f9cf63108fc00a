//! Installing Shovel into a DataFusion session in a few lines.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use shuffle_core::ShuffleManager;

use crate::exchange::ShuffleIds;
use crate::rule::ShovelExchangeRule;

/// Plugs Shovel into a DataFusion [`SessionStateBuilder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use datafusion::execution::SessionStateBuilder;
/// use datafusion::prelude::SessionContext;
/// use shuffle_datafusion::ShovelBuilder;
///
/// // The application builds the manager from Shovel's config (local disk here).
/// let manager = shuffle_local::local_manager(shuffle_core::ShuffleConfig::default())?;
/// let state = ShovelBuilder::new(Arc::new(manager))
///     .install(SessionStateBuilder::new().with_default_features())
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// ctx.sql("SELECT 1").await?.show().await?;
/// # Ok(())
/// # }
/// ```
///
/// The builder takes a ready [`ShuffleManager`] rather than a config: the
/// application chooses the backend (local, S3) once, and every engine it
/// runs shares that manager, its memory pool and its cleanup.
#[derive(Debug, Clone)]
pub struct ShovelBuilder {
    manager: Arc<dyn ShuffleManager>,
    ids: ShuffleIds,
    exchange: bool,
}

impl ShovelBuilder {
    pub fn new(manager: Arc<dyn ShuffleManager>) -> Self {
        Self {
            manager,
            ids: ShuffleIds::default(),
            exchange: true,
        }
    }

    /// The first shuffle id the exchanges use (default 0). Shuffle ids must
    /// be unique per manager: give each builder sharing a manager a
    /// disjoint range (or its own manager / app id).
    pub fn first_shuffle_id(mut self, id: u32) -> Self {
        self.ids = ShuffleIds::starting_at(id);
        self
    }

    /// Whether hash repartitions go through Shovel (default true).
    pub fn exchange(mut self, on: bool) -> Self {
        self.exchange = on;
        self
    }

    /// The exchange rule on its own, for sessions assembled by hand.
    pub fn exchange_rule(&self) -> Arc<ShovelExchangeRule> {
        Arc::new(ShovelExchangeRule::new(
            Arc::clone(&self.manager),
            self.ids.clone(),
        ))
    }

    /// Adds Shovel to `builder`; the rule runs after DataFusion's own
    /// physical optimizer rules.
    pub fn install(self, builder: SessionStateBuilder) -> SessionStateBuilder {
        if !self.exchange {
            return builder;
        }
        builder.with_physical_optimizer_rule(self.exchange_rule())
    }
}
