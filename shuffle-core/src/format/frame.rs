//! Frames: the unit of compression and checksumming.
//!
//! ```text
//! offset  size  field
//!  0      3     magic  "SHF"
//!  3      1     codec  (0 = none, 1 = lz4 block, lz4_flex)
//!  4      4     raw_len      u32 BE  (bytes after decompression)
//!  8      4     payload_len  u32 BE  (bytes stored after the header)
//! 12      4     crc32        u32 BE  of bytes 0..12 followed by the payload
//! 16      payload_len bytes of payload
//! ```
//!
//! The crc covers the header fields too, so a flipped length byte is caught
//! before anything is allocated from it. A block that lz4 cannot shrink is
//! stored uncompressed. Each frame holds exactly one block that a writer
//! handed in, so readers get back the writer's block boundaries.

use bytes::{Buf, Bytes, BytesMut};

use crate::{Error, Result};

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 16;
/// The frame magic.
pub const FRAME_MAGIC: [u8; 3] = *b"SHF";
/// Largest block a frame may hold (raw); larger blocks are a protocol error.
pub const MAX_FRAME_RAW_LEN: usize = 1 << 30;

/// How a frame's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Stored as is.
    None,
    /// lz4 block format (lz4_flex).
    #[default]
    Lz4,
}

impl Codec {
    fn id(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Lz4 => 1,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "off" | "false" => Ok(Codec::None),
            "lz4" => Ok(Codec::Lz4),
            other => Err(format!("unknown codec `{other}`; use `lz4` or `none`")),
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub codec: Codec,
    pub raw_len: u32,
    pub payload_len: u32,
    pub crc: u32,
}

/// Encodes `block` as one frame appended to `out`. Returns the frame's length.
pub fn encode_frame(block: &[u8], codec: Codec, out: &mut Vec<u8>) -> Result<usize> {
    let start = out.len();
    out.resize(start + max_frame_len(block.len()), 0);
    let n = encode_frame_into(block, codec, &mut out[start..]);
    out.truncate(start + n.as_ref().map_or(0, |n| *n));
    n
}

/// The longest frame a block of `raw_len` bytes can become.
pub fn max_frame_len(raw_len: usize) -> usize {
    FRAME_HEADER_LEN + lz4_flex::block::get_maximum_output_size(raw_len).max(raw_len)
}

/// Encodes `block` as one frame at the start of `out`, which must hold at
/// least [`max_frame_len`] bytes (a reused buffer need not be cleared).
/// Returns the frame's length.
pub fn encode_frame_into(block: &[u8], codec: Codec, out: &mut [u8]) -> Result<usize> {
    if block.len() > MAX_FRAME_RAW_LEN {
        return Err(Error::Protocol(format!(
            "block of {} bytes exceeds the {} byte frame limit; write smaller blocks",
            block.len(),
            MAX_FRAME_RAW_LEN
        )));
    }
    let need = max_frame_len(block.len());
    if out.len() < need {
        return Err(Error::Protocol(format!(
            "frame buffer of {} bytes is under the {need} a {} byte block may need",
            out.len(),
            block.len()
        )));
    }
    let (header, payload) = out.split_at_mut(FRAME_HEADER_LEN);
    let mut codec_used = Codec::None;
    let mut payload_len = 0;
    if codec == Codec::Lz4 && !block.is_empty() {
        if let Ok(n) = lz4_flex::block::compress_into(block, payload) {
            if n < block.len() {
                payload_len = n;
                codec_used = Codec::Lz4;
            }
        }
    }
    if codec_used == Codec::None {
        payload[..block.len()].copy_from_slice(block);
        payload_len = block.len();
    }
    header[0..3].copy_from_slice(&FRAME_MAGIC);
    header[3] = codec_used.id();
    header[4..8].copy_from_slice(&(block.len() as u32).to_be_bytes());
    header[8..12].copy_from_slice(&(payload_len as u32).to_be_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..12]);
    hasher.update(&payload[..payload_len]);
    header[12..16].copy_from_slice(&hasher.finalize().to_be_bytes());
    Ok(FRAME_HEADER_LEN + payload_len)
}

/// Parses a frame header; `object` and `partition` name the source in errors.
pub fn parse_header(buf: &[u8], object: &str) -> Result<FrameHeader> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(Error::corrupt(object, "truncated frame header"));
    }
    if buf[0..3] != FRAME_MAGIC {
        return Err(Error::corrupt(
            object,
            "bad frame magic (not a Shovel frame)",
        ));
    }
    let codec = Codec::from_id(buf[3])
        .ok_or_else(|| Error::corrupt(object, format!("unknown frame codec {}", buf[3])))?;
    let raw_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let payload_len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let crc = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
    Ok(FrameHeader {
        codec,
        raw_len,
        payload_len,
        crc,
    })
}

/// Verifies and decodes one whole frame (header + payload) into its block.
pub fn decode_frame(frame: &[u8], object: &str, partition: u32) -> Result<Bytes> {
    let h = parse_header(frame, object)?;
    let end = FRAME_HEADER_LEN + h.payload_len as usize;
    if frame.len() < end {
        return Err(Error::corrupt(
            object,
            format!("truncated frame in partition {partition}"),
        ));
    }
    let payload = &frame[FRAME_HEADER_LEN..end];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[0..12]);
    hasher.update(payload);
    let actual = hasher.finalize();
    if actual != h.crc {
        return Err(Error::ChecksumMismatch {
            object: object.to_string(),
            partition,
            expected: h.crc,
            actual,
        });
    }
    let raw_len = h.raw_len as usize;
    if raw_len > MAX_FRAME_RAW_LEN {
        return Err(Error::corrupt(object, "frame raw length over the limit"));
    }
    match h.codec {
        Codec::None => {
            if raw_len != payload.len() {
                return Err(Error::corrupt(object, "uncompressed frame length mismatch"));
            }
            Ok(Bytes::copy_from_slice(payload))
        }
        Codec::Lz4 => match lz4_flex::block::decompress(payload, raw_len) {
            Ok(out) if out.len() == raw_len => Ok(Bytes::from(out)),
            Ok(out) => Err(Error::corrupt(
                object,
                format!(
                    "lz4 frame decoded to {} bytes, header says {raw_len}",
                    out.len()
                ),
            )),
            Err(e) => Err(Error::corrupt(object, format!("lz4: {e}"))),
        },
    }
}

/// Incremental decoder over a byte stream of frames that may arrive in
/// arbitrary chunks (ranged reads split frames anywhere).
#[derive(Debug)]
pub struct FrameDecoder {
    object: String,
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new(object: impl Into<String>) -> Self {
        Self {
            object: object.into(),
            buf: BytesMut::new(),
        }
    }

    /// Appends bytes to decode.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Splits every whole frame off the front of `chunk` without copying
    /// (when nothing is carried over) and keeps only the tail of a partial
    /// frame; returns the whole frames in order.
    pub fn push_bytes(&mut self, mut chunk: Bytes) -> Result<Vec<Bytes>> {
        let mut frames = Vec::new();
        if !self.buf.is_empty() {
            // Complete the carried-over frame first.
            let need = if self.buf.len() >= FRAME_HEADER_LEN {
                FRAME_HEADER_LEN + parse_header(&self.buf, &self.object)?.payload_len as usize
            } else {
                FRAME_HEADER_LEN
            };
            let take = need.saturating_sub(self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            while let Some(f) = self.next_frame()? {
                frames.push(f);
            }
            if !self.buf.is_empty() {
                self.buf.extend_from_slice(&chunk);
                while let Some(f) = self.next_frame()? {
                    frames.push(f);
                }
                return Ok(frames);
            }
        }
        while chunk.len() >= FRAME_HEADER_LEN {
            let h = parse_header(&chunk, &self.object)?;
            if h.raw_len as usize > MAX_FRAME_RAW_LEN {
                return Err(Error::corrupt(
                    &self.object,
                    "frame raw length over the limit",
                ));
            }
            let len = FRAME_HEADER_LEN + h.payload_len as usize;
            if chunk.len() < len {
                break;
            }
            frames.push(chunk.split_to(len));
        }
        self.buf.extend_from_slice(&chunk);
        Ok(frames)
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Splits off the next whole frame (header included), or `None` if more
    /// bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let h = parse_header(&self.buf, &self.object)?;
        if h.raw_len as usize > MAX_FRAME_RAW_LEN {
            return Err(Error::corrupt(
                &self.object,
                "frame raw length over the limit",
            ));
        }
        let len = FRAME_HEADER_LEN + h.payload_len as usize;
        if self.buf.len() < len {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Decodes every complete frame of `data` (a whole segment); errors if
    /// bytes are left over.
    pub fn decode_all(data: &[u8], object: &str, partition: u32) -> Result<Vec<Bytes>> {
        let mut blocks = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let h = parse_header(rest, object)?;
            let len = FRAME_HEADER_LEN + h.payload_len as usize;
            if rest.len() < len {
                return Err(Error::corrupt(
                    object,
                    format!("truncated frame in partition {partition}"),
                ));
            }
            blocks.push(decode_frame(&rest[..len], object, partition)?);
            rest.advance(len);
        }
        Ok(blocks)
    }
}
