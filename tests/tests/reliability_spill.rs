//! Reliability of spills, on local disk and on S3 (`spill_to_s3`, through
//! the embedded server): a spill object that is damaged after it was written
//! and before it is read back — one flipped byte, or cut short — is caught
//! (checksum / short read), reported naming the object, repaired by retrying
//! the task that spilled it, and q80 still gives the golden answer; after
//! `cleanup_app` no shuffle or spill object is left.
//!
//! Both writers of spills are covered: the map-output buffer (its spills are
//! merged into the map output without decoding, so the merge checks each
//! partition's crc32; the report names the partition) and the operators
//! (through the engine's `BatchSpillWriter`; in q80 at this budget, the
//! grace-hash joins; frames are decoded and checked; the report names the
//! block and byte offset, or the byte range of a short read).
//!
//! The damage comes from [`DamagingSpillStore`], a [`SpillStore`] around the
//! backend's real one: it picks the first spill object written by the
//! target writer, and when that object is first read back it rewrites it in
//! storage (damaged) before letting the read through. q80 runs with a memory
//! budget small enough that both kinds of writer spill. The `SpillStore`
//! interface does not say who writes a spill, so the store tells them apart
//! by the backtrace of `create` (a `MapOutputBuffer` frame or an engine
//! `BatchSpillWriter` frame); backtraces are taken only until the target
//! is found.

mod reliability_support;

use std::backtrace::Backtrace;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use engine::{RetryReason, Session};
use reliability_support::*;
use shuffle_core::format::frame::{parse_header, FRAME_HEADER_LEN};
use shuffle_core::{
    ObjectKey, ObjectSink, Result, ShuffleConfig, ShuffleManager, ShuffleMetrics, ShuffleStore,
    SpillFile, SpillStore, StoreShuffleManager,
};
use shuffle_local::LocalStore;
use shuffle_s3::{EmbeddedS3, S3Store};

/// A budget that makes q80 (SF 0.01) spill in map-output buffers and operators.
const MEMORY: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
}

/// Who wrote the spill object to damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A map task's `MapOutputBuffer`, spilling buffered output frames.
    MapOutputBuffer,
    /// An engine operator (through `BatchSpillWriter`).
    Operator,
}

impl Writer {
    /// Who is creating a spill now, from the call stack.
    fn of_this_spill() -> Self {
        let bt = Backtrace::force_capture().to_string();
        if bt.contains("MapOutputBuffer") {
            Writer::MapOutputBuffer
        } else if bt.contains("BatchSpillWriter") {
            Writer::Operator
        } else {
            panic!(
                "cannot tell who writes this spill: no MapOutputBuffer or BatchSpillWriter frame \
                 in the backtrace (built without symbols?):\n{bt}"
            )
        }
    }

    /// Where in the object the report must place the damage.
    fn place(self, harm: Harm) -> &'static str {
        match (self, harm) {
            (Writer::MapOutputBuffer, _) => "(partition ",
            (Writer::Operator, Harm::Flip) => "(block ",
            (Writer::Operator, Harm::Truncate) => "(bytes ",
        }
    }
}

/// How the spill object is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Harm {
    /// One byte flipped in the middle of the payload of the frame that holds
    /// the object's middle byte (so the frame's crc32, or the partition
    /// segment's, must catch it).
    Flip,
    /// Cut at half its length.
    Truncate,
}

impl Harm {
    /// What the report must say.
    fn says(self) -> &'static str {
        match self {
            Harm::Flip => "checksum mismatch",
            Harm::Truncate => "truncated",
        }
    }

    fn apply(self, bytes: &mut Vec<u8>) {
        match self {
            Harm::Flip => {
                let offset = payload_byte_near(bytes, bytes.len() / 2);
                bytes[offset] ^= 0x5a;
            }
            Harm::Truncate => bytes.truncate(bytes.len() / 2),
        }
    }
}

/// The middle byte of the payload of the frame that contains byte `target`.
fn payload_byte_near(bytes: &[u8], target: usize) -> usize {
    let mut offset = 0;
    loop {
        let h = parse_header(&bytes[offset..], "spill").expect("a spill is a run of frames");
        let end = offset + FRAME_HEADER_LEN + h.payload_len as usize;
        if target < end || end >= bytes.len() {
            return offset + FRAME_HEADER_LEN + h.payload_len as usize / 2;
        }
        offset = end;
    }
}

/// Where a spill object's bytes really are, to rewrite them in place.
#[derive(Debug)]
enum Underneath {
    /// `SpillFile::id` is a path.
    Files,
    /// `SpillFile::id` is a key of this store (shard `SpillFile::shard`).
    Objects(Arc<dyn ShuffleStore>),
}

/// A [`SpillStore`] that damages (`harm`) the first spill object `target`
/// writes, once, in storage, when it is first read back; then lets the read
/// through to the real store.
#[derive(Debug)]
struct DamagingSpillStore {
    inner: Arc<dyn SpillStore>,
    underneath: Underneath,
    harm: Harm,
    target: Writer,
    /// The id of the spill file to damage, once known.
    victim: Mutex<Option<String>>,
    armed: AtomicBool,
    /// The damaged object, as the store describes it.
    damaged: Mutex<Option<String>>,
}

impl DamagingSpillStore {
    fn new(
        inner: Arc<dyn SpillStore>,
        underneath: Underneath,
        harm: Harm,
        target: Writer,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner,
            underneath,
            harm,
            target,
            victim: Mutex::new(None),
            armed: AtomicBool::new(true),
            damaged: Mutex::new(None),
        })
    }

    fn victim(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.victim.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn damaged(&self) -> Option<String> {
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn damage(&self, file: &SpillFile) {
        let mut bytes = self
            .inner
            .read_range(file, 0..file.len)
            .await
            .expect("read the spill object to damage")
            .to_vec();
        assert_eq!(bytes.len() as u64, file.len, "spill object {file:?}");
        self.harm.apply(&mut bytes);
        match &self.underneath {
            Underneath::Files => std::fs::write(&file.id, &bytes).expect("rewrite spill file"),
            Underneath::Objects(store) => store
                .put(
                    &ObjectKey::new(file.shard, file.id.clone()),
                    Bytes::from(bytes),
                )
                .await
                .expect("rewrite spill object"),
        }
        *self.damaged.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.describe(file));
    }
}

#[async_trait]
impl SpillStore for DamagingSpillStore {
    fn location(&self) -> &'static str {
        self.inner.location()
    }

    fn describe(&self, file: &SpillFile) -> String {
        self.inner.describe(file)
    }

    async fn create(&self) -> Result<(SpillFile, Box<dyn ObjectSink>)> {
        let (file, sink) = self.inner.create().await?;
        if self.victim().is_none() && Writer::of_this_spill() == self.target {
            self.victim().get_or_insert_with(|| file.id.clone());
        }
        Ok((file, sink))
    }

    async fn read_range(&self, file: &SpillFile, range: Range<u64>) -> Result<Bytes> {
        // The first read of a spill starts at 0.
        let victim = self.victim().as_deref() == Some(file.id.as_str());
        if victim
            && range.start == 0
            && file.len > 0
            && self
                .armed
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.damage(file).await;
        }
        self.inner.read_range(file, range).await
    }

    async fn delete(&self, file: &SpillFile) -> Result<()> {
        self.inner.delete(file).await
    }

    async fn cleanup(&self) -> Result<u64> {
        self.inner.cleanup().await
    }
}

/// A manager on `backend` whose spills go through a [`DamagingSpillStore`]
/// (S3: shuffle and spill on an embedded server), and what must outlive it.
struct Job {
    manager: StoreShuffleManager,
    spill: Arc<DamagingSpillStore>,
    local: tempfile::TempDir,
    _s3: Option<EmbeddedS3>,
}

async fn job(backend: Backend, harm: Harm, target: Writer) -> Job {
    let local = tempfile::tempdir().expect("temp dir");
    let app_id = format!("spill-{harm:?}-{target:?}").to_lowercase();
    let config = ShuffleConfig {
        app_id: app_id.clone(),
        memory_limit: MEMORY as u64,
        local_dirs: vec![local.path().to_path_buf()],
        ..ShuffleConfig::default()
    };
    match backend {
        Backend::Local => {
            let store = LocalStore::new(&config.local_dirs, None).expect("local store");
            let spill = DamagingSpillStore::new(
                Arc::new(store.spill_store(&app_id)),
                Underneath::Files,
                harm,
                target,
            );
            let manager = StoreShuffleManager::builder(Arc::new(store), config)
                .spill_store(Arc::clone(&spill) as Arc<dyn SpillStore>)
                .build();
            Job {
                manager,
                spill,
                local,
                _s3: None,
            }
        }
        Backend::S3 => {
            let s3 = server().await;
            let metrics = Arc::new(ShuffleMetrics::default());
            let store = S3Store::new(
                s3.config("reliability").expect("s3 config"),
                Arc::clone(&metrics),
            )
            .await
            .expect("s3 store");
            let spill = DamagingSpillStore::new(
                Arc::new(store.spill_store(&app_id)),
                Underneath::Objects(Arc::new(store.clone())),
                harm,
                target,
            );
            let manager = StoreShuffleManager::builder(Arc::new(store), config)
                .metrics(metrics)
                .spill_store(Arc::clone(&spill) as Arc<dyn SpillStore>)
                .build();
            Job {
                manager,
                spill,
                local,
                _s3: Some(s3),
            }
        }
    }
}

/// The text of a retry reason that carries an error.
fn reason_text(r: &RetryReason) -> Option<&str> {
    match r {
        RetryReason::TaskError(e) | RetryReason::FetchFailure { error: e, .. } => Some(e),
        _ => None,
    }
}

async fn damaged_spill_is_repaired(backend: Backend, harm: Harm, target: Writer) {
    let what = format!("{backend:?}, {harm:?} spill written by {target:?}");
    let data = tokio::task::spawn_blocking(data_dir)
        .await
        .expect("data generation");
    let job = job(backend, harm, target).await;
    let m = &job.manager;
    let session = Session::new(
        engine_config(Some(MEMORY)),
        Arc::new(m.clone()) as Arc<dyn ShuffleManager>,
    );
    let (csv, summary) = run_q80(&session, &data)
        .await
        .unwrap_or_else(|e| panic!("{what}: q80 failed: {e}"));
    let object = job
        .spill
        .damaged()
        .unwrap_or_else(|| panic!("{what}: no such spill was read back, none damaged"));
    assert_golden(&csv, &what);
    if backend == Backend::S3 {
        assert!(object.starts_with("s3://"), "{what}: {object}");
    }
    assert!(
        summary.tasks_retried >= 1,
        "{what}: no task was retried: {}",
        summary.to_json()
    );
    let (says, place) = (harm.says(), target.place(harm));
    let report = summary
        .retry_reasons
        .iter()
        .filter_map(reason_text)
        .find(|e| e.contains(&format!("corrupt spill object {object} {place}")) && e.contains(says))
        .unwrap_or_else(|| {
            panic!(
                "{what}: no retry reason says {says} in spill object {object} {place}...): {:?}",
                summary.retry_reasons
            )
        });
    eprintln!("{what}: retried after: {report}");

    let removed = m.cleanup_app().await.expect("cleanup");
    let left = files_under(job.local.path());
    assert!(
        left.is_empty(),
        "{what}: files left after cleanup ({removed} removed): {left:?}"
    );
    if backend == Backend::S3 {
        for prefix in [m.layout().app_prefix(), format!("spill/{}/", m.app_id())] {
            let objects = list(m, &prefix).await;
            assert!(
                objects.is_empty(),
                "{what}: objects left under {prefix} after cleanup: {objects:?}"
            );
        }
    }
}

/// A flipped byte in a local spill file of a map-output buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_local_buffer_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::Local, Harm::Flip, Writer::MapOutputBuffer).await;
}

/// A local spill file of a map-output buffer cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_local_buffer_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::Local, Harm::Truncate, Writer::MapOutputBuffer).await;
}

/// A flipped byte in a local spill file of an operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_local_operator_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::Local, Harm::Flip, Writer::Operator).await;
}

/// A local spill file of an operator cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_local_operator_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::Local, Harm::Truncate, Writer::Operator).await;
}

/// A flipped byte in a spill object of a map-output buffer on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_s3_buffer_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::S3, Harm::Flip, Writer::MapOutputBuffer).await;
}

/// A spill object of a map-output buffer on S3 cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_s3_buffer_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::S3, Harm::Truncate, Writer::MapOutputBuffer).await;
}

/// A flipped byte in a spill object of an operator on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_s3_operator_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::S3, Harm::Flip, Writer::Operator).await;
}

/// A spill object of an operator on S3 cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_s3_operator_spill_is_repaired() {
    damaged_spill_is_repaired(Backend::S3, Harm::Truncate, Writer::Operator).await;
}
