//! `shovel.*` session options: what a Ballista client tells the executors.
//!
//! Ballista ships every session option with every task, and an executor
//! keeps the options of extensions it registered. The one Shovel option is
//! the **app id** that namespaces a job's shuffle objects: the client picks
//! it (so it can remove the objects when the job is over, see
//! [`crate::cleanup`]), and every executor writes and reads that job's map
//! outputs under it. Without it an executor uses `ballista-<job id>`.
//!
//! ```text
//!  client:   SessionConfig::new_with_ballista().with_option_extension(ShovelOptions { app_id })
//!  executor: ShovelOptions registered by crate::executor (config producer)
//! ```

use std::any::Any;

use datafusion::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

/// Shovel's session options (prefix `shovel`).
///
/// Written out rather than with DataFusion's `extensions_options!`: that
/// macro lists its entries without the prefix, and Ballista ships a
/// session's options to the scheduler and executors as `entries()`, so
/// `app_id` would arrive unprefixed and be dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShovelOptions {
    /// The Shovel app id of the job's shuffle objects (`shovel.app_id`).
    pub app_id: String,
}

impl ExtensionOptions for ShovelOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "app_id" => {
                self.app_id = value.to_string();
                Ok(())
            }
            other => Err(DataFusionError::Configuration(format!(
                "unknown option shovel.{other}; Shovel's session option is shovel.app_id"
            ))),
        }
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        vec![ConfigEntry {
            key: format!("{}.app_id", Self::PREFIX),
            value: (!self.app_id.is_empty()).then(|| self.app_id.clone()),
            description: "The Shovel app id that namespaces the job's shuffle objects",
        }]
    }
}

impl ConfigExtension for ShovelOptions {
    const PREFIX: &'static str = "shovel";
}

impl ShovelOptions {
    /// The app id a job's tasks use: the session's `shovel.app_id`, or
    /// `ballista-<job id>`.
    pub fn app_id_for(config: &SessionConfig, job_id: &str) -> String {
        config
            .options()
            .extensions
            .get::<ShovelOptions>()
            .map(|o| o.app_id.trim().to_string())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| format!("ballista-{job_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_comes_from_the_session_or_the_job() {
        let plain = SessionConfig::new();
        assert_eq!(ShovelOptions::app_id_for(&plain, "j1"), "ballista-j1");
        let mut with = SessionConfig::new().with_option_extension(ShovelOptions::default());
        with.options_mut()
            .set("shovel.app_id", "run-42")
            .expect("registered option");
        assert_eq!(ShovelOptions::app_id_for(&with, "j1"), "run-42");
        // What Ballista ships to the executors: prefixed entries.
        let shipped: Vec<(String, Option<String>)> = with
            .options()
            .entries()
            .into_iter()
            .filter(|e| e.key.starts_with("shovel."))
            .map(|e| (e.key, e.value))
            .collect();
        assert_eq!(
            shipped,
            vec![("shovel.app_id".to_string(), Some("run-42".to_string()))]
        );
        let mut executor = SessionConfig::new().with_option_extension(ShovelOptions::default());
        for (k, v) in &shipped {
            executor
                .options_mut()
                .set(k, v.as_deref().unwrap_or_default())
                .expect("set on the executor");
        }
        assert_eq!(ShovelOptions::app_id_for(&executor, "j1"), "run-42");
        assert!(with.options_mut().set("shovel.nope", "1").is_err());
    }
}
