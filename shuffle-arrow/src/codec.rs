//! Arrow IPC encoding of one `RecordBatch` per shuffle/spill block.
//!
//! Both sides of an exchange know the schema, so a block carries only the
//! record-batch message: `[u32 LE metadata length][flatbuffer Message][body]`.
//! No schema message, no stream framing; the shuffle layer adds lz4 frames and
//! a crc32. Decoding is zero-copy over the block's `Bytes`.
//!
//! ```text
//!  block = [ meta_len: u32 LE ][ flatbuffer Message (RecordBatch header) ][ body buffers ]
//!           0..4                4..4+meta_len                              4+meta_len..
//! ```
//!
//! Dictionary-encoded columns are refused (their dictionaries would have to
//! travel in every block); cast them to their value type first.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use bytes::Bytes;

use crate::error::{Error, Result};

/// Reusable batch encoder (one per writer; not shared between threads).
#[derive(Default)]
pub struct BatchEncoder {
    gen: IpcDataGenerator,
    ctx: IpcWriteContext,
    opts: IpcWriteOptions,
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchEncoder")
    }
}

impl BatchEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes `batch` into `out` (cleared first).
    pub fn encode_into(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let mut tracker = DictionaryTracker::new(false);
        let (dicts, data) = self
            .gen
            .encode(batch, &mut tracker, &self.opts, &mut self.ctx)?;
        if !dicts.is_empty() {
            return Err(Error::DictionaryNotSupported);
        }
        out.clear();
        out.reserve(4 + data.ipc_message.len() + data.arrow_data.len());
        out.extend_from_slice(&(data.ipc_message.len() as u32).to_le_bytes());
        out.extend_from_slice(&data.ipc_message);
        out.extend_from_slice(&data.arrow_data);
        Ok(())
    }

    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(batch, &mut out)?;
        Ok(out)
    }
}

/// Decodes a block written by [`BatchEncoder`].
pub fn decode_batch(block: Bytes, schema: &SchemaRef) -> Result<RecordBatch> {
    let bad = |why: &str| Error::MalformedBlock {
        at: String::new(),
        reason: why.to_string(),
    };
    if block.len() < 4 {
        return Err(bad("shorter than its header"));
    }
    let meta_len = u32::from_le_bytes([block[0], block[1], block[2], block[3]]) as usize;
    if block.len() < 4 + meta_len {
        return Err(bad("metadata longer than the block"));
    }
    let message = arrow::ipc::root_as_message(&block[4..4 + meta_len])
        .map_err(|e| bad(&format!("invalid flatbuffer: {e}")))?;
    let rb = message
        .header_as_record_batch()
        .ok_or_else(|| bad("not a record batch message"))?;
    let body = Buffer::from(block.slice(4 + meta_len..));
    let batch = arrow::ipc::reader::read_record_batch(
        &body,
        rb,
        Arc::clone(schema),
        &HashMap::new(),
        None,
        &message.version(),
    )
    .map_err(|e| bad(&format!("record batch does not match the schema: {e}")))?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("x"), Some("yy"), None])),
            ],
        )
        .unwrap();
        let mut enc = BatchEncoder::new();
        let bytes = enc.encode(&batch.slice(1, 2)).unwrap();
        let back = decode_batch(Bytes::from(bytes), &schema).unwrap();
        assert_eq!(back, batch.slice(1, 2));
        let empty = enc.encode(&batch.slice(0, 0)).unwrap();
        assert_eq!(
            decode_batch(Bytes::from(empty), &schema)
                .unwrap()
                .num_rows(),
            0
        );
    }
}
