//! `shuffle.codec` is honoured by every writer: map outputs written through
//! the engine's buffered writer, the buffer's own spills, and operators'
//! spill files. q80 runs under a budget small enough that both kinds of
//! spill happen, over a store that records the codec byte of every frame of
//! every object written; with `none` no frame may be lz4, and (so that the
//! check can fail) with `lz4` some must be.

mod reliability_support;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use engine::Session;
use reliability_support::*;
use shuffle_core::format::frame::{parse_header, FRAME_HEADER_LEN};
use shuffle_core::{
    ObjectKey, ObjectMeta, ObjectSink, ObjectSpillStore, PutOutcome, Result, ShuffleConfig,
    ShuffleStore, StoreShuffleManager,
};
use shuffle_local::LocalStore;

/// Frames seen per kind of object (`data`, `spill`) and codec byte.
type Seen = Arc<Mutex<BTreeMap<(&'static str, u8), u64>>>;

/// A store that parses every object written through `create` as a run of
/// frames and counts their codec bytes.
#[derive(Debug)]
struct RecordingStore {
    inner: Arc<dyn ShuffleStore>,
    seen: Seen,
}

struct RecordingSink {
    inner: Box<dyn ObjectSink>,
    kind: &'static str,
    bytes: Vec<u8>,
    seen: Seen,
}

#[async_trait]
impl ObjectSink for RecordingSink {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.bytes.extend_from_slice(&data);
        self.inner.write(data).await
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let mut at = 0;
        while at < self.bytes.len() {
            let h = parse_header(&self.bytes[at..], "recorded object").expect("a run of frames");
            let codec = self.bytes[at + 3];
            *self
                .seen
                .lock()
                .expect("lock")
                .entry((self.kind, codec))
                .or_default() += 1;
            at += FRAME_HEADER_LEN + h.payload_len as usize;
        }
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ShuffleStore for RecordingStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn supports_reliable_storage(&self) -> bool {
        self.inner.supports_reliable_storage()
    }
    fn describe(&self, key: &ObjectKey) -> String {
        self.inner.describe(key)
    }
    async fn create(&self, key: &ObjectKey) -> Result<Box<dyn ObjectSink>> {
        let kind = if key.path.ends_with(".data") {
            "data"
        } else {
            "spill"
        };
        Ok(Box::new(RecordingSink {
            inner: self.inner.create(key).await?,
            kind,
            bytes: Vec::new(),
            seen: Arc::clone(&self.seen),
        }))
    }
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome> {
        self.inner.put_if_absent(key, data).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn delete(&self, keys: &[ObjectKey]) -> Result<()> {
        self.inner.delete(keys).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
}

/// Runs q80 with `shuffle.codec=codec` under a spilling budget; returns the
/// frames written per (object kind, codec byte).
async fn frames_written(codec: &str) -> BTreeMap<(&'static str, u8), u64> {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ShuffleConfig::from_args([
        format!("shuffle.codec={codec}"),
        "memory.limit=256KiB".to_string(),
    ])
    .expect("config");
    let local: Arc<dyn ShuffleStore> =
        Arc::new(LocalStore::new(&[dir.path().to_path_buf()], None).expect("local store"));
    let seen = Seen::default();
    let store: Arc<dyn ShuffleStore> = Arc::new(RecordingStore {
        inner: local,
        seen: Arc::clone(&seen),
    });
    let spill = Arc::new(ObjectSpillStore::new(
        Arc::clone(&store),
        format!("spill/{}", config.app_id),
    ));
    let manager = StoreShuffleManager::builder(store, config)
        .spill_store(spill)
        .build();
    let manager: Arc<dyn shuffle_core::ShuffleManager> = Arc::new(manager);
    let session = Session::new(engine_config(Some(256 << 10)), Arc::clone(&manager));
    let (csv, _) = run_q80(&session, &data_dir()).await.expect("q80");
    assert_golden(&csv, &format!("codec {codec}"));
    manager.cleanup_app().await.expect("cleanup");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.keys().any(|(k, _)| *k == "spill"),
        "codec {codec}: q80 at this budget must spill, saw {seen:?}"
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_writer_honours_shuffle_codec() {
    let none = frames_written("none").await;
    let lz4_frames: u64 = none
        .iter()
        .filter(|((_, c), _)| *c == 1)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        lz4_frames, 0,
        "shuffle.codec=none, yet lz4 frames were written: {none:?}"
    );
    assert!(none.contains_key(&("data", 0)), "{none:?}");
    assert!(none.contains_key(&("spill", 0)), "{none:?}");

    // The same run with lz4 writes lz4 frames in both kinds of object, so
    // the check above would see a writer that ignores the setting.
    let lz4 = frames_written("lz4").await;
    assert!(lz4.contains_key(&("data", 1)), "{lz4:?}");
    assert!(lz4.contains_key(&("spill", 1)), "{lz4:?}");
}
