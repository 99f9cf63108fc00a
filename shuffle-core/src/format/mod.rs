//! The on-storage format: one **data** object per committed map output,
//! its index as a footer, so committing is a single write.
//!
//! ```text
//!  data object
//!  ┌─────────────── partition 0 segment ──────┐
//!  │ frame │ frame │ ...                       │
//!  ├─────────────── partition 1 segment ──────┤
//!  │ (empty: zero bytes)                       │
//!  ├─────────────── partition 2 segment ──────┤
//!  │ frame │ ...                               │
//!  ├─────────────── index block (36+20N) ─────┤  header (24 bytes)
//!  │                                           │  N+1 × u64 BE offsets   ← Spark's index
//!  │                                           │  N   × u32 BE crc32
//!  │                                           │  N   × u64 BE records
//!  │                                           │  u32 BE crc32 of the above
//!  ├─────────────── trailer (12) ─────────────┤
//!  │ u32 BE index block length │ "SHVFOOTR"   │
//!  └───────────────────────────────────────────┘
//! ```
//!
//! A partition's segment is a run of [frames](frame) back to back; an empty
//! partition has a zero-length segment. The index's offsets give each
//! segment's byte range (`offsets[p]..offsets[p + 1]`), so a reducer that
//! knows the map status (which carries the same lengths) never reads the
//! footer: it issues one ranged read per map output for a contiguous range
//! of partitions. The footer serves a process that has only the ids: one
//! suffix read recovers the status ([`footer`]). Per-partition crc32s cover
//! each segment's stored bytes, on top of each frame's own crc32, so
//! corruption is reported with its partition.
//!
//! **All-empty map output**: when every partition is empty nothing is
//! written at all; its status (all lengths 0) is the whole commit, and
//! readers skip such outputs without a request.
//!
//! **Versions**: version 1 wrote the index as a separate object
//! `map-<m>.index` (the commit record, written after the data object);
//! version 2 (this one) appends it as the footer and bumps the index
//! block's version to 2. This build reads only version 2; `gc` still
//! recognises version 1 keys so it can remove old jobs.
//!
//! All integers are big-endian. See [`frame`], [`index`] and [`footer`] for
//! byte offsets.

pub mod footer;
pub mod frame;
pub mod index;

pub use footer::{decode_footer, encode_footer, footer_len, FOOTER_MAGIC, TRAILER_LEN};
pub use frame::{Codec, FrameDecoder, FrameHeader, FRAME_HEADER_LEN};
pub use index::{IndexFile, FLAG_NO_DATA, INDEX_MAGIC, INDEX_VERSION};
