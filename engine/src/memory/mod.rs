//! Memory accounting and spilling for operators.
//!
//! Operators hold a [`MemoryReservation`](shuffle_core::MemoryReservation)
//! from the manager's single [`MemoryPool`](shuffle_core::MemoryPool) sized to
//! the memory budget. When `try_grow` fails they spill through the manager's
//! `SpillStore` (local disk or S3, per `shuffle.spill_to_s3`):
//!
//! ```text
//!  hash aggregate (final)  state ─▶ K buckets by hash ─▶ SpillWriter ... merge each bucket
//!  hash join build         build + probe ─▶ K buckets (grace hash) ─▶ join bucket by bucket
//!  sort                    sorted runs ─▶ SpillWriter ─▶ k-way merge of SpillReaders
//!  partial aggregate       emits early (no spill needed)
//! ```
//!
//! Spilled batches use the exchange's IPC codec; the spill layer adds lz4 and
//! crc32 framing, and deletes each spill object once read back.

pub mod spill;
