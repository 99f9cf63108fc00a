//! The on-storage format: one **data** object and one **index** object per
//! map task attempt.
//!
//! ```text
//!  data object                                   index object
//!  ┌─────────────── partition 0 segment ──────┐  ┌──────────────────────────┐
//!  │ frame │ frame │ ...                       │  │ header (24 bytes)        │
//!  ├─────────────── partition 1 segment ──────┤  │ N+1 × u64 BE offsets     │  ← Spark's index
//!  │ (empty: zero bytes)                       │  │ N   × u32 BE crc32       │
//!  ├─────────────── partition 2 segment ──────┤  │ N   × u64 BE records     │
//!  │ frame │ ...                               │  │ u32 BE crc32 of the above│
//!  └───────────────────────────────────────────┘  └──────────────────────────┘
//! ```
//!
//! A partition's segment is a run of [frames](frame) back to back; an empty
//! partition has a zero-length segment. The index's offsets give each
//! segment's byte range (`offsets[p]..offsets[p + 1]`), so a reducer that
//! knows the map status (which carries the same lengths) needs no index read
//! at all: it issues one ranged read per map output for a contiguous range of
//! partitions. Per-partition crc32s cover each segment's stored bytes, on top
//! of each frame's own crc32, so corruption is reported with its partition.
//!
//! **All-empty map output**: when every partition is empty no data object is
//! written (`FLAG_NO_DATA` in the index header); the index still is, since it
//! is the commit record. Readers skip such outputs without a request.
//!
//! All integers are big-endian. See [`frame`] and [`index`] for byte offsets.

pub mod frame;
pub mod index;

pub use frame::{Codec, FrameDecoder, FrameHeader, FRAME_HEADER_LEN};
pub use index::{IndexFile, FLAG_NO_DATA, INDEX_MAGIC, INDEX_VERSION};
