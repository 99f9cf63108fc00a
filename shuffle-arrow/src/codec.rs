//! Arrow IPC encoding of one `RecordBatch` per shuffle/spill block.
//!
//! Both sides of an exchange know the schema, so a block carries only the
//! record-batch message, body first:
//!
//! ```text
//!  block = [ body buffers ][ flatbuffer Message (RecordBatch header) ][ meta_len: u32 LE ][ "SAB1" ]
//!           0..body_len     body_len..body_len+meta_len                 len-8..len-4        len-4..len
//! ```
//!
//! `body_len` is the message's `bodyLength` and must equal
//! `len - 8 - meta_len`. No schema message, no stream framing; the shuffle
//! layer adds lz4 frames and a crc32.
//!
//! Why body first. Encoding appends the small header to the body arrow's
//! `IpcDataGenerator` already wrote, so the body is never copied again; a
//! header in front would cost a copy of every byte. Decoding is zero-copy
//! over the block's `Bytes`, and only because the body starts at offset 0
//! of an allocation is every buffer 8- and 16-byte aligned: with a 4-byte
//! length in front (as before), arrow had to copy every 64-bit column to
//! realign it on read. The trailing magic turns a block of another layout
//! into a clear [`Error::MalformedBlock`] instead of a misread.
//!
//! String and binary view columns (`Utf8View`, `BinaryView`: what
//! DataFusion and Shovel's engine read Parquet strings as) are compacted
//! first when their data buffers hold more than twice the bytes their views
//! use. IPC writes a view column's data buffers whole, and a partition's
//! part (a `take` or a slice) still points into its input batch's buffers,
//! so without this every block carried all the strings of the batch it came
//! from: at 1,000 partitions, a stage of 11,718 rows wrote 111 MiB.
//!
//! Dictionary-encoded columns are refused (their dictionaries would have to
//! travel in every block); cast them to their value type first.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatchOptions;
use arrow::array::{Array, ArrayRef, AsArray, GenericByteViewArray, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{ByteViewType, DataType};
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use bytes::Bytes;

use crate::error::{Error, Result};

/// The last four bytes of every block (Shovel Arrow Block, layout 1).
pub const BLOCK_MAGIC: [u8; 4] = *b"SAB1";
/// Bytes after the message: its length and [`BLOCK_MAGIC`].
const TRAILER_LEN: usize = 8;

/// Reusable batch encoder (one per writer; not shared between threads).
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

impl Default for BatchEncoder {
    fn default() -> Self {
        let mut ctx = IpcWriteContext::default();
        // Arrow then sizes the next body's buffer like the last one, so a
        // body is written once instead of regrown (and copied) from empty.
        ctx.set_reserve_scratch(true);
        Self {
            gen: IpcDataGenerator::default(),
            ctx,
            opts: IpcWriteOptions::default(),
        }
    }
}

impl BatchEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes `batch` as one block into `out`, replacing its contents
    /// (and, to avoid a copy, usually its allocation).
    pub fn encode_into(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let batch = compact_views(batch)?;
        let mut tracker = DictionaryTracker::new(false);
        let (dicts, data) = self
            .gen
            .encode(&batch, &mut tracker, &self.opts, &mut self.ctx)?;
        if !dicts.is_empty() {
            return Err(Error::DictionaryNotSupported);
        }
        let mut block = data.arrow_data;
        let meta = data.ipc_message;
        block.reserve_exact(meta.len() + TRAILER_LEN);
        block.extend_from_slice(&meta);
        block.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        block.extend_from_slice(&BLOCK_MAGIC);
        *out = block;
        Ok(())
    }

    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(batch, &mut out)?;
        Ok(out)
    }
}

/// `batch` with every view column whose data buffers hold more than twice
/// the bytes its views use rewritten compactly (see the module docs); the
/// batch itself when none does.
pub fn compact_views(batch: &RecordBatch) -> Result<Cow<'_, RecordBatch>> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, col) in batch.columns().iter().enumerate() {
        let compacted = match col.data_type() {
            DataType::Utf8View => compact(col.as_string_view()),
            DataType::BinaryView => compact(col.as_binary_view()),
            _ => None,
        };
        if let Some(c) = compacted {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = c;
        }
    }
    let Some(columns) = columns else {
        return Ok(Cow::Borrowed(batch));
    };
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(Cow::Owned(RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &options,
    )?))
}

fn compact<T: ByteViewType + ?Sized>(a: &GenericByteViewArray<T>) -> Option<ArrayRef> {
    let held: usize = a.data_buffers().iter().map(|b| b.len()).sum();
    if held == 0 || held <= 2 * a.total_buffer_bytes_used() {
        return None;
    }
    Some(Arc::new(a.gc()))
}

/// Decodes a block written by [`BatchEncoder`].
pub fn decode_batch(block: Bytes, schema: &SchemaRef) -> Result<RecordBatch> {
    let bad = |why: &str| Error::MalformedBlock {
        at: String::new(),
        reason: why.to_string(),
    };
    let len = block.len();
    if len < TRAILER_LEN {
        return Err(bad("shorter than its trailer"));
    }
    if block[len - 4..] != BLOCK_MAGIC {
        return Err(bad(
            "no SAB1 trailer (not a block of this Shovel version's layout)",
        ));
    }
    let t = len - TRAILER_LEN;
    let meta_len =
        u32::from_le_bytes([block[t], block[t + 1], block[t + 2], block[t + 3]]) as usize;
    let Some(body_len) = t.checked_sub(meta_len) else {
        return Err(bad("metadata longer than the block"));
    };
    let message = arrow::ipc::root_as_message(&block[body_len..t])
        .map_err(|e| bad(&format!("invalid flatbuffer: {e}")))?;
    if usize::try_from(message.bodyLength()).ok() != Some(body_len) {
        return Err(bad(&format!(
            "message says its body is {} bytes, the block holds {body_len}",
            message.bodyLength()
        )));
    }
    let rb = message
        .header_as_record_batch()
        .ok_or_else(|| bad("not a record batch message"))?;
    let body = Buffer::from(block.slice(..body_len));
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
    use arrow::array::{Array, Decimal128Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Decimal128(7, 2), true),
        ]))
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("x"), Some("yy"), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), Some(-1), None])
                        .with_precision_and_scale(7, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap()
    }

    fn malformed(block: Vec<u8>) -> String {
        match decode_batch(Bytes::from(block), &schema()) {
            Err(Error::MalformedBlock { reason, .. }) => reason,
            other => panic!("expected MalformedBlock, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let batch = batch();
        let mut enc = BatchEncoder::new();
        let bytes = enc.encode(&batch.slice(1, 2)).unwrap();
        assert_eq!(bytes[bytes.len() - 4..], BLOCK_MAGIC);
        let back = decode_batch(Bytes::from(bytes), &schema()).unwrap();
        assert_eq!(back, batch.slice(1, 2));
        let empty = enc.encode(&batch.slice(0, 0)).unwrap();
        assert_eq!(
            decode_batch(Bytes::from(empty), &schema())
                .unwrap()
                .num_rows(),
            0
        );
        // The encoder is reused: a second, larger batch after a smaller one.
        let mut out = Vec::new();
        enc.encode_into(&batch, &mut out).unwrap();
        assert_eq!(decode_batch(Bytes::from(out), &schema()).unwrap(), batch);
    }

    /// The body starts the block, so decoding neither copies nor realigns:
    /// every column buffer of the decoded batch points into the block.
    #[test]
    fn decode_is_zero_copy() {
        let mut enc = BatchEncoder::new();
        let block = Bytes::from(enc.encode(&batch()).unwrap());
        let range = block.as_ptr() as usize..block.as_ptr() as usize + block.len();
        let back = decode_batch(block.clone(), &schema()).unwrap();
        for (i, col) in back.columns().iter().enumerate() {
            let data = col.to_data();
            for buf in data.buffers() {
                let at = buf.as_ptr() as usize;
                assert!(
                    range.contains(&at),
                    "column {i}: a buffer at {at:#x} lies outside the block {range:x?} (copied)"
                );
            }
        }
    }

    #[test]
    fn damaged_blocks_are_named_errors() {
        let mut enc = BatchEncoder::new();
        let good = enc.encode(&batch()).unwrap();

        assert!(malformed(vec![1, 2, 3]).contains("shorter than its trailer"));

        // The layout before the SAB1 trailer: [meta_len][message][body].
        let mut old = good.clone();
        old.truncate(old.len() - 4);
        old.extend_from_slice(b"XXXX");
        assert!(malformed(old).contains("no SAB1 trailer"));

        let mut long_meta = good.clone();
        let t = long_meta.len() - TRAILER_LEN;
        long_meta[t..t + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(malformed(long_meta).contains("metadata longer than the block"));

        // A body byte lost: the message's bodyLength no longer matches.
        let mut short_body = good.clone();
        short_body.remove(0);
        assert!(malformed(short_body).contains("the block holds"));
    }

    /// A slice of a view column is written with the strings it uses, not
    /// with every data buffer of the batch it was cut from.
    #[test]
    fn view_columns_are_compacted_before_encoding() {
        use arrow::array::{BinaryViewArray, StringViewArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("b", DataType::BinaryView, true),
        ]));
        let strings: Vec<Option<String>> = (0..1000)
            .map(|i| (i % 7 != 0).then(|| format!("{i:0>40}")))
            .collect();
        let big = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from_iter(strings.iter().cloned())),
                Arc::new(BinaryViewArray::from_iter(
                    strings.iter().map(|s| s.as_ref().map(|s| s.as_bytes())),
                )),
            ],
        )
        .unwrap();
        let mut enc = BatchEncoder::new();
        let whole = enc.encode(&big).unwrap();
        assert!(whole.len() > 2 * 1000 * 40 * 6 / 7, "{}", whole.len());
        assert!(matches!(compact_views(&big).unwrap(), Cow::Borrowed(_)));

        let part = big.slice(500, 10);
        let block = enc.encode(&part).unwrap();
        assert!(
            block.len() < 4096,
            "10 rows of 40 bytes took {} bytes: the data buffers went whole",
            block.len()
        );
        let back = decode_batch(Bytes::from(block), &schema).unwrap();
        assert_eq!(back, part);
    }
}
