//! shuffle-core's conformance suite against S3Store over the embedded S3
//! server (real HTTP): plain (through the local tier, `cache.enabled`'s
//! default); with spills to S3; with 20% injected faults (503 SlowDown, 500,
//! dropped connections, delays) that retries must hide completely; without
//! the tier (bare S3Store); with a tier so small that copies move to disk
//! and get evicted all the time; and on a server that ignores
//! `If-None-Match`, which the start-up probe must detect.

use async_trait::async_trait;
use shuffle_core::testing::Backend;
use shuffle_core::{ShuffleConfig, StoreShuffleManager};
use shuffle_s3::{EmbeddedS3, FaultConfig, RetryConfig, S3ShuffleBuilder};
use std::time::Duration;

/// Starts one embedded server per test (lazily, on that test's runtime).
struct S3Backend {
    server: tokio::sync::OnceCell<EmbeddedS3>,
    faults: Option<FaultConfig>,
    spill_to_s3: bool,
    /// `cache.*` settings over the defaults.
    cache: &'static [(&'static str, &'static str)],
    /// The server ignores `If-None-Match`; the probe must notice.
    ignore_if_none_match: bool,
}

impl S3Backend {
    fn new(spill_to_s3: bool, faults: Option<FaultConfig>) -> Self {
        Self {
            server: tokio::sync::OnceCell::new(),
            faults,
            spill_to_s3,
            cache: &[],
            ignore_if_none_match: false,
        }
    }

    fn ignoring_if_none_match() -> Self {
        Self {
            ignore_if_none_match: true,
            ..Self::new(false, None)
        }
    }

    fn with_cache(mut self, cache: &'static [(&'static str, &'static str)]) -> Self {
        self.cache = cache;
        self
    }
}

#[async_trait]
impl Backend for S3Backend {
    async fn manager(&self, mut config: ShuffleConfig) -> StoreShuffleManager {
        for (k, v) in self.cache {
            config.set(k, v).expect("cache setting");
        }
        let server = self
            .server
            .get_or_init(|| async {
                let s = EmbeddedS3::start_temp().await.expect("embedded S3");
                if let Some(f) = &self.faults {
                    s.set_faults(f.clone());
                }
                s.set_ignore_if_none_match(self.ignore_if_none_match);
                s
            })
            .await;
        let s3 = server
            .config_builder("conformance")
            .hash_prefixes(4)
            .retry(RetryConfig {
                max_attempts: 30,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(100),
                total_deadline: Duration::from_secs(60),
            })
            .build()
            .expect("config");
        let shuffle = S3ShuffleBuilder::new(config)
            .s3_config(s3)
            .spill_to_s3(self.spill_to_s3)
            .build()
            .await
            .expect("manager");
        assert_eq!(
            shuffle.store.conditional_writes(),
            !self.ignore_if_none_match,
            "the probe must find out whether the store honours If-None-Match"
        );
        shuffle.manager
    }
}

mod plain {
    shuffle_core::conformance_tests!(super::S3Backend::new(false, None));
}

mod spill_to_s3 {
    shuffle_core::conformance_tests!(super::S3Backend::new(true, None));
}

mod faults {
    shuffle_core::conformance_tests!(super::S3Backend::new(
        true,
        Some(shuffle_s3::FaultConfig::mixed(0.2, 20240601))
    ));
}

mod no_cache {
    shuffle_core::conformance_tests!(
        super::S3Backend::new(false, None).with_cache(&[("cache.enabled", "false")])
    );
}

mod tiny_cache {
    shuffle_core::conformance_tests!(super::S3Backend::new(false, None)
        .with_cache(&[("cache.memory", "16KiB"), ("cache.disk", "48KiB"),]));
}

/// A store that ignores `If-None-Match`: the probe switches to attempt ids
/// in keys, and every promise still holds.
mod ignores_if_none_match {
    shuffle_core::conformance_tests!(super::S3Backend::ignoring_if_none_match());
}
