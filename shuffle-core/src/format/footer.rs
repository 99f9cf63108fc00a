//! The footer: a data object's own index, so one write commits a map output.
//!
//! ```text
//! offset (from the object's start)   size         field
//!  0                                  D            segments of partitions 0..N (frames), D = offsets[N]
//!  D                                  L = 36+20N   index block (see `index`: magic "SHVI", version 2)
//!  D+L                                4            L, u32 BE (the index block's length)
//!  D+L+4                              8            footer magic "SHVFOOTR"
//! total: D + L + 12 bytes
//! ```
//!
//! A reader that holds a [`MapStatus`](crate::MapStatus) knows every
//! segment's range and never reads the footer. The footer is for
//! recovering a status from storage: one suffix read of the last
//! `L + 12` bytes ([`footer_len`]; a reader that knows N knows L), or of the
//! last [`TRAILER_LEN`] bytes first when it does not. Readers check, in
//! order: the trailer's magic (else the object is not a Shovel data object,
//! or its end was cut off), that the read holds the whole index block, and
//! then everything [`IndexFile::decode`] checks (magic, version, size for
//! N, crc32, monotonic offsets). Any failure is [`Error::Corrupt`] or
//! [`Error::ChecksumMismatch`] naming the object.

use bytes::Bytes;

use crate::format::IndexFile;
use crate::{Error, Result};

/// The footer magic, the object's last 8 bytes.
pub const FOOTER_MAGIC: [u8; 8] = *b"SHVFOOTR";
/// Bytes after the index block: its length (u32 BE) and the magic.
pub const TRAILER_LEN: usize = 12;

/// Bytes of the footer (index block + trailer) for `num_partitions`.
pub fn footer_len(num_partitions: usize) -> usize {
    IndexFile::encoded_len(num_partitions) + TRAILER_LEN
}

/// Encodes `index` as a footer: the index block followed by the trailer.
pub fn encode_footer(index: &IndexFile) -> Bytes {
    let block = index.encode();
    let mut out = Vec::with_capacity(block.len() + TRAILER_LEN);
    out.extend_from_slice(&block);
    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
    out.extend_from_slice(&FOOTER_MAGIC);
    Bytes::from(out)
}

/// The index block's length named by the trailer at the end of `tail` (the
/// last bytes of an object, at least [`TRAILER_LEN`] of them).
pub fn index_len(tail: &[u8], object: &str) -> Result<usize> {
    if tail.len() < TRAILER_LEN {
        return Err(Error::corrupt(
            object,
            format!(
                "object is {} bytes, shorter than a footer (truncated?)",
                tail.len()
            ),
        ));
    }
    let t = &tail[tail.len() - TRAILER_LEN..];
    if t[4..] != FOOTER_MAGIC {
        return Err(Error::corrupt(
            object,
            "no footer magic at the end (truncated, or not a Shovel data object)",
        ));
    }
    Ok(u32::from_be_bytes([t[0], t[1], t[2], t[3]]) as usize)
}

/// Decodes the footer at the end of `tail` (the last bytes of an object).
/// `Ok(None)` when `tail` is too short to hold the index block the trailer
/// names: read the last [`index_len`]` + TRAILER_LEN` bytes and call again.
pub fn decode_footer(tail: &[u8], object: &str) -> Result<Option<IndexFile>> {
    let len = index_len(tail, object)?;
    let Some(start) = tail.len().checked_sub(TRAILER_LEN + len) else {
        return Ok(None);
    };
    IndexFile::decode(&tail[start..tail.len() - TRAILER_LEN], object).map(Some)
}
