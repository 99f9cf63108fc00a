//! Property tests of the on-storage format: round trips, and random or
//! mutated bytes never make a decoder panic (and single-byte damage is
//! always caught).

use proptest::prelude::*;
use shuffle_core::format::footer::index_len;
use shuffle_core::format::frame::{decode_frame, encode_frame, FrameDecoder};
use shuffle_core::format::{
    decode_footer, encode_footer, footer_len, Codec, IndexFile, TRAILER_LEN,
};

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::Lz4), Just(Codec::None)]
}

fn block() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (any::<u8>(), 0usize..3000).prop_map(|(b, n)| vec![b; n]),
        (0usize..2000).prop_map(|n| (0..n).map(|i| (i % 13) as u8).collect()),
    ]
}

fn encode_all(blocks: &[Vec<u8>], codec: Codec) -> Vec<u8> {
    let mut out = Vec::new();
    for b in blocks {
        encode_frame(b, codec, &mut out).expect("encode");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn frames_round_trip(blocks in prop::collection::vec(block(), 0..8), codec in codec()) {
        let bytes = encode_all(&blocks, codec);
        let decoded = FrameDecoder::decode_all(&bytes, "obj", 0).expect("decode");
        prop_assert_eq!(decoded.len(), blocks.len());
        for (d, b) in decoded.iter().zip(&blocks) {
            prop_assert_eq!(&d[..], &b[..]);
        }
    }

    #[test]
    fn incremental_decoder_handles_any_chunking(
        blocks in prop::collection::vec(block(), 1..6),
        cuts in prop::collection::vec(1usize..700, 1..20),
    ) {
        let bytes = encode_all(&blocks, Codec::Lz4);
        let mut dec = FrameDecoder::new("obj");
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - pos);
            dec.push(&bytes[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some(f) = dec.next_frame().expect("frame") {
                got.push(decode_frame(&f, "obj", 0).expect("decode"));
            }
        }
        prop_assert_eq!(dec.buffered(), 0);
        prop_assert_eq!(got.len(), blocks.len());
        for (g, b) in got.iter().zip(&blocks) {
            prop_assert_eq!(&g[..], &b[..]);
        }
    }

    #[test]
    fn zero_copy_decoder_handles_any_chunking(
        blocks in prop::collection::vec(block(), 1..6),
        cuts in prop::collection::vec(1usize..700, 1..20),
    ) {
        let bytes = bytes::Bytes::from(encode_all(&blocks, Codec::Lz4));
        let mut dec = FrameDecoder::new("obj");
        let mut got = Vec::new();
        let (mut pos, mut i) = (0, 0);
        while pos < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - pos);
            for f in dec.push_bytes(bytes.slice(pos..pos + n)).expect("frames") {
                got.push(decode_frame(&f, "obj", 0).expect("decode"));
            }
            pos += n;
            i += 1;
        }
        prop_assert_eq!(dec.buffered(), 0);
        prop_assert_eq!(got.len(), blocks.len());
        for (g, b) in got.iter().zip(&blocks) {
            prop_assert_eq!(&g[..], &b[..]);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = FrameDecoder::decode_all(&bytes, "obj", 0);
        let _ = IndexFile::decode(&bytes, "obj");
        let _ = FrameDecoder::new("obj").push_bytes(bytes::Bytes::from(bytes.clone()));
        let mut with_magic = b"SHF\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = FrameDecoder::decode_all(&with_magic, "obj", 0);
    }

    #[test]
    fn any_single_byte_change_is_caught(
        blocks in prop::collection::vec(block(), 1..5),
        codec in codec(),
        pos in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let mut bytes = encode_all(&blocks, codec);
        let i = pos.index(bytes.len());
        bytes[i] ^= delta;
        // A length change can make a frame run past the end: an error too.
        prop_assert!(FrameDecoder::decode_all(&bytes, "obj", 0).is_err());
    }

    #[test]
    fn truncation_inside_a_frame_is_caught(blocks in prop::collection::vec(block(), 1..5), cut in 1usize..20) {
        let bytes = encode_all(&blocks, Codec::Lz4);
        // Cut strictly inside the last frame (cutting at a frame boundary
        // just drops whole frames, which only the index can tell).
        let mut last = Vec::new();
        encode_frame(&blocks[blocks.len() - 1], Codec::Lz4, &mut last).expect("encode");
        let cut = cut.min(last.len() - 1);
        prop_assert!(FrameDecoder::decode_all(&bytes[..bytes.len() - cut], "obj", 0).is_err());
    }

    #[test]
    fn index_round_trips_and_rejects_damage(
        lengths in prop::collection::vec(0u64..1 << 40, 0..40),
        seed in any::<u32>(),
        pos in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let n = lengths.len();
        let checksums: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(seed)).collect();
        let records: Vec<u64> = (0..n as u64).collect();
        let idx = IndexFile::from_lengths(3, 7, 2, &lengths, checksums, records);
        let bytes = idx.encode();
        prop_assert_eq!(bytes.len(), IndexFile::encoded_len(n));
        let back = IndexFile::decode(&bytes, "idx").expect("decode");
        prop_assert_eq!(&back, &idx);
        prop_assert_eq!(back.lengths(), lengths);
        let mut damaged = bytes.to_vec();
        let i = pos.index(damaged.len());
        damaged[i] ^= delta;
        prop_assert!(IndexFile::decode(&damaged, "idx").is_err());
        prop_assert!(IndexFile::decode(&bytes[..bytes.len() - 1], "idx").is_err());
    }
}

#[test]
fn incompressible_blocks_are_stored_raw_and_errors_name_the_object() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let block: Vec<u8> = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let mut out = Vec::new();
    encode_frame(&block, Codec::Lz4, &mut out).expect("encode");
    assert_eq!(out[3], 0, "incompressible data is stored uncompressed");
    assert_eq!(out.len(), 16 + block.len());
    out[40] ^= 1;
    let err = decode_frame(&out, "s3://b/k.data", 4).expect_err("damaged");
    let msg = err.to_string();
    assert!(
        msg.contains("s3://b/k.data") && msg.contains("partition 4"),
        "{msg}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A data object (segments + footer) gives back its index from any
    /// suffix that holds the footer, asks for more from a shorter one, and
    /// rejects a cut end or a damaged footer byte.
    #[test]
    fn footer_round_trips_and_rejects_damage(
        segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..12),
        extra in 0usize..64,
        cut in 1usize..40,
        pos in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let lengths: Vec<u64> = segments.iter().map(|s| s.len() as u64).collect();
        let checksums: Vec<u32> = segments.iter().map(|s| crc32fast::hash(s)).collect();
        let records: Vec<u64> = segments.iter().map(|s| s.len() as u64 / 3).collect();
        let idx = IndexFile::from_lengths(5, 9, 1, &lengths, checksums, records);
        let mut object: Vec<u8> = segments.concat();
        let data_len = object.len();
        object.extend_from_slice(&encode_footer(&idx));
        let n = segments.len();
        prop_assert_eq!(object.len(), data_len + footer_len(n));
        // Exactly the footer, or more of the object.
        let take = (footer_len(n) + extra).min(object.len());
        let tail = &object[object.len() - take..];
        prop_assert_eq!(decode_footer(tail, "obj").expect("decode"), Some(idx.clone()));
        // Only the trailer: it names the index length, asks for more.
        let tail = &object[object.len() - TRAILER_LEN..];
        prop_assert_eq!(index_len(tail, "obj").expect("trailer"), IndexFile::encoded_len(n));
        prop_assert_eq!(decode_footer(tail, "obj").expect("short"), None);
        // A cut end is never taken for a footer.
        let cut_obj = &object[..object.len() - cut.min(object.len())];
        let take = footer_len(n).min(cut_obj.len());
        prop_assert!(decode_footer(&cut_obj[cut_obj.len() - take..], "obj").is_err());
        // One damaged footer byte is caught.
        let mut damaged = object.clone();
        let i = data_len + pos.index(footer_len(n));
        damaged[i] ^= delta;
        let tail = &damaged[damaged.len() - footer_len(n)..];
        prop_assert!(!matches!(decode_footer(tail, "obj"), Ok(Some(ref got)) if *got == idx));
    }
}
