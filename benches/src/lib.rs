//! Shared helpers for Shovel's benchmarks (`benches/benches/`).

/// Deterministic shuffle-like bytes: fixed-width integer columns and short
/// repeated strings, which compress about as well as Arrow IPC batches of a
/// fact table do (roughly 2-3x with lz4).
pub fn shuffle_like_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let words = [
        &b"store"[..],
        b"catalog",
        b"web",
        b"AAAAAAAABAAAAAAA",
        b"N",
        b"Y",
    ];
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&((x % 100_000) as u32).to_le_bytes());
        out.extend_from_slice(&((x >> 20) % 5_000).to_le_bytes());
        out.extend_from_slice(words[(x >> 40) as usize % words.len()]);
    }
    out.truncate(len);
    out
}
