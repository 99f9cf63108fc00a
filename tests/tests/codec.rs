//! `shuffle.codec` is honoured by every writer: map outputs written through
//! the engine's buffered writer, the buffer's own spills, and operators'
//! spill files. q80 runs under a budget small enough that both kinds of
//! spill happen, over a store that shows every object written to a check
//! that parses it (a data object: each partition's run of frames, then the
//! footer; a spill file: a run of frames) and counts the frames' codecs;
//! with `none` no frame may be lz4, and (so that the check can fail) with
//! `lz4` some must be.

mod reliability_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use engine::Session;
use reliability_support::*;
use shuffle_core::format::frame::parse_header;
use shuffle_core::format::{decode_footer, Codec, FRAME_HEADER_LEN};
use shuffle_core::testing::CountingStore;
use shuffle_core::{ObjectKey, ObjectSpillStore, ShuffleConfig, ShuffleStore, StoreShuffleManager};
use shuffle_local::LocalStore;

/// Frames per (object kind `data` | `spill`, codec).
type Frames = BTreeMap<(&'static str, &'static str), u64>;

/// What the check saw: frames by kind and codec, and objects it could not
/// parse (reported after the run rather than by a panic inside a writer).
#[derive(Debug, Default)]
struct Recorded {
    frames: Frames,
    unparsable: Vec<String>,
}

/// Counts the codecs of the frames in `bytes[range]`, which must be a run
/// of whole frames.
fn count_frames(
    bytes: &[u8],
    range: std::ops::Range<usize>,
    kind: &'static str,
    object: &str,
    frames: &mut Frames,
) -> Result<(), String> {
    let mut at = range.start;
    while at < range.end {
        let h = parse_header(&bytes[at..range.end], object).map_err(|e| e.to_string())?;
        let codec = match h.codec {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
        };
        *frames.entry((kind, codec)).or_default() += 1;
        at += FRAME_HEADER_LEN + h.payload_len as usize;
    }
    if at != range.end {
        return Err(format!("{object}: a frame runs past {range:?}"));
    }
    Ok(())
}

/// Parses one object written: a data object as its partitions' segments of
/// frames followed by the footer, a spill file (under `spill/`) as a run of
/// frames; other objects (the job marker) hold no frames.
fn parse(key: &ObjectKey, bytes: &[u8], frames: &mut Frames) -> Result<(), String> {
    let object = key.path.as_str();
    if object.starts_with("spill/") {
        return count_frames(bytes, 0..bytes.len(), "spill", object, frames);
    }
    if !object.ends_with(".data") {
        return Ok(());
    }
    let index = decode_footer(bytes, object)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{object}: shorter than the footer it names"))?;
    for segment in index.offsets.windows(2) {
        let range = segment[0] as usize..segment[1] as usize;
        if range.end > bytes.len() {
            return Err(format!("{object}: segment {range:?} past the end"));
        }
        count_frames(bytes, range, "data", object, frames)?;
    }
    Ok(())
}

/// Runs q80 with `shuffle.codec=codec` under a spilling budget; returns the
/// frames written per (object kind, codec).
async fn frames_written(codec: &str) -> Frames {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ShuffleConfig::from_args([
        format!("shuffle.codec={codec}"),
        "memory.limit=256KiB".to_string(),
    ])
    .expect("config");
    let local: Arc<dyn ShuffleStore> =
        Arc::new(LocalStore::new(&[dir.path().to_path_buf()], None).expect("local store"));
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let observed = Arc::clone(&recorded);
    let store: Arc<dyn ShuffleStore> =
        Arc::new(CountingStore::new(local).observe_writes(move |key, bytes| {
            let mut r = observed.lock().expect("lock");
            if let Err(e) = parse(key, bytes, &mut r.frames) {
                r.unparsable.push(e);
            }
        }));
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
    let r = recorded.lock().expect("lock");
    assert!(r.unparsable.is_empty(), "codec {codec}: {:?}", r.unparsable);
    let seen = r.frames.clone();
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
        .filter(|((_, c), _)| *c == "lz4")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        lz4_frames, 0,
        "shuffle.codec=none, yet lz4 frames were written: {none:?}"
    );
    assert!(none.contains_key(&("data", "none")), "{none:?}");
    assert!(none.contains_key(&("spill", "none")), "{none:?}");

    // The same run with lz4 writes lz4 frames in both kinds of object, so
    // the check above would see a writer that ignores the setting.
    let lz4 = frames_written("lz4").await;
    assert!(lz4.contains_key(&("data", "lz4")), "{lz4:?}");
    assert!(lz4.contains_key(&("spill", "lz4")), "{lz4:?}");
}
