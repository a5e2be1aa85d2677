//! Property tests for the Annex-B scanner and the H.264 packetizer, plus the steady-state
//! zero-allocation guarantee (measured with a counting allocator).

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use bytes::Bytes;
use camgate::rtp::{Frame, H264Packetizer, NalUnits, PacketizerConfig, Payloader};
use counting_alloc::allocs;
use proptest::prelude::*;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

/// A NAL as an encoder would write it: header, then a body with emulation prevention applied
/// (no `00 00 0x` with x <= 3 inside) and a non-zero last byte (the RBSP stop bit).
fn escaped_nal(header: u8, raw: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut zeros = 0;
    for &b in raw {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out.push(0x80);
    out
}

fn depacketize(frame: &Frame) -> Vec<Vec<u8>> {
    let mut d = H264Packet::default();
    let mut annexb = Vec::new();
    for i in 0..frame.len() {
        annexb.extend_from_slice(&d.depacketize(&frame.payload(i)).unwrap());
    }
    NalUnits::new(&annexb)
        .map(|it| it.map(|n| n.data.to_vec()).collect())
        .unwrap_or_default()
}

/// `len` pseudo-random bytes; about `zeros`/8 of them are zero.
fn bytes_from_seed(len: usize, mut seed: u64, zeros: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed % 8 < zeros {
                0
            } else {
                (seed >> 32) as u8
            }
        })
        .collect()
}

/// The bits of exp-Golomb numbers (H.264 §9.1), padded with ones to whole bytes: how an SPS
/// (after its 3 profile bytes), a PPS or a slice header begins.
fn ue_bytes(ues: &[u32]) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    for &v in ues {
        let x = u64::from(v) + 1;
        let n = 64 - x.leading_zeros();
        bits.extend(std::iter::repeat_n(false, n as usize - 1));
        bits.extend((0..n).rev().map(|i| x >> i & 1 == 1));
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    bits.chunks(8)
        .map(|c| c.iter().fold(0u8, |b, &bit| b << 1 | u8::from(bit)))
        .collect()
}

/// What an SPS, PPS or IDR slice refers to; the ids are few so that they collide often.
#[derive(Debug, Clone, Copy)]
enum Ids {
    None,
    Sps(u32),
    Pps { id: u32, sps: u32 },
    Idr { pps: u32 },
}

/// (header byte, raw body, ids written at the body's start) for NAL types a camera emits,
/// biased towards the ones with logic.
fn nal_strategy() -> impl Strategy<Value = (u8, Vec<u8>, Ids)> {
    let nal_type = prop_oneof![
        Just(1u8),
        Just(5),
        Just(6),
        Just(7),
        Just(8),
        Just(9),
        Just(12),
        2u8..=23,
    ];
    // Bodies from a seeded generator: proptest's per-byte strategies are too slow for
    // kilobyte NALs in a debug build. Zeros are frequent so emulation prevention is exercised.
    let body = (prop_oneof![1usize..64, 1usize..3000], any::<u64>(), 0u64..4)
        .prop_map(|(len, seed, zeros)| bytes_from_seed(len, seed, zeros));
    (nal_type, 0u8..4, body, 0u32..3, 0u32..3, 0u32..60).prop_map(
        |(t, nri, body, a, b, first_mb)| {
            let (ids, mut raw) = match t {
                7 => (
                    Ids::Sps(a),
                    [vec![0x42, 0xc0, 0x1f], ue_bytes(&[a])].concat(),
                ),
                8 => (Ids::Pps { id: a, sps: b }, ue_bytes(&[a, b])),
                5 => (Ids::Idr { pps: a }, ue_bytes(&[first_mb, 7, a])),
                _ => (Ids::None, Vec::new()),
            };
            raw.extend(body);
            ((nri << 5) | t, raw, ids)
        },
    )
}

/// Access units of generated NALs; each NAL gets a 3- or 4-byte start code and maybe
/// trailing zero bytes.
/// One generated NAL: header, raw body, its ids, 4-byte start code?, trailing zero bytes.
type GenNal = (u8, Vec<u8>, Ids, bool, usize);

fn stream_strategy() -> impl Strategy<Value = Vec<Vec<GenNal>>> {
    let nal = (nal_strategy(), any::<bool>(), 0usize..3)
        .prop_map(|((h, b, ids), four, z)| (h, b, ids, four, z));
    proptest::collection::vec(proptest::collection::vec(nal, 1..8), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the bytes, no panic; packets within budget; one marker, on the last packet.
    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            (0usize..2048, any::<u64>()).prop_map(|(len, seed)| bytes_from_seed(len, seed, 0)),
            (0usize..6000, any::<u64>(), 0u64..8).prop_map(|(len, seed, zeros)| {
                // Many zeros and ones: start codes, empty NALs and long zero runs.
                bytes_from_seed(len, seed, zeros).into_iter().map(|b| if b < 16 { 1 } else { b }).collect()
            }),
        ],
        budget in 100usize..1500,
    ) {
        let mut p = H264Packetizer::new(PacketizerConfig { max_payload: budget }).unwrap();
        let mut f = Frame::new();
        if p.packetize_into(&input, 0, &mut f).is_ok() {
            for (i, pkt) in f.iter().enumerate() {
                prop_assert!(pkt.payload.len() <= budget);
                prop_assert_eq!(pkt.marker, i + 1 == f.len());
            }
        } else {
            prop_assert!(f.is_empty());
        }
        // The scanner alone: NALs lie inside the input, in order, without start codes.
        if let Some(nals) = NalUnits::new(&input) {
            let mut last = 0;
            for n in nals {
                prop_assert!(n.offset >= last && n.offset + n.data.len() <= input.len());
                prop_assert_eq!(&input[n.offset..n.offset + n.data.len()], n.data);
                last = n.offset + n.data.len();
            }
        }
    }

    /// Valid streams come back NAL for NAL through rtc's depacketizer: minus AUD/filler, plus,
    /// in front of an IDR, the cached SPS and PPS its slices refer to (by id) that its AU
    /// lacks: every SPS first, then every PPS.
    #[test]
    fn valid_streams_round_trip(stream in stream_strategy(), budget in 100usize..2000) {
        use std::collections::HashMap;
        let mut p = H264Packetizer::new(PacketizerConfig { max_payload: budget }).unwrap();
        let mut f = Frame::new();
        // The model: the last SPS per id, the last PPS per id with the SPS id it names.
        let mut sps: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut pps: HashMap<u32, (Vec<u8>, u32)> = HashMap::new();
        for (k, au) in stream.iter().enumerate() {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            let (mut carried_sps, mut carried_pps, mut wanted) = (Vec::new(), Vec::new(), Vec::new());
            for (header, body, ids, four, trailing) in au {
                let nal = escaped_nal(*header, body);
                input.extend_from_slice(if *four { &[0, 0, 0, 1][..] } else { &[0, 0, 1][..] });
                input.extend_from_slice(&nal);
                input.extend(std::iter::repeat_n(0u8, *trailing));
                if matches!(header & 0x1f, 9 | 12) {
                    continue;
                }
                match *ids {
                    Ids::Sps(id) => { carried_sps.push(id); sps.insert(id, nal.clone()); }
                    Ids::Pps { id, sps: s } => { carried_pps.push(id); pps.insert(id, (nal.clone(), s)); }
                    Ids::Idr { pps: id } if !wanted.contains(&id) => wanted.push(id),
                    _ => {}
                }
                expected.push(nal);
            }
            let mut inject_sps: Vec<u32> = Vec::new();
            let mut inject = Vec::new();
            for id in &wanted {
                if let Some((_, s)) = pps.get(id)
                    && !carried_sps.contains(s)
                    && !inject_sps.contains(s)
                    && let Some(nal) = sps.get(s)
                {
                    inject_sps.push(*s);
                    inject.push(nal.clone());
                }
            }
            for id in &wanted {
                if !carried_pps.contains(id) && let Some((nal, _)) = pps.get(id) {
                    inject.push(nal.clone());
                }
            }
            expected.splice(0..0, inject);
            p.packetize_into(&input, k as u64 * 33_333_333, &mut f).unwrap();
            prop_assert_eq!(f.is_keyframe(), !wanted.is_empty());
            for (i, pkt) in f.iter().enumerate() {
                prop_assert!(pkt.payload.len() <= budget, "packet {} of {} bytes", i, pkt.payload.len());
                prop_assert_eq!(pkt.marker, i + 1 == f.len());
            }
            prop_assert_eq!(depacketize(&f), expected);
        }
        prop_assert_eq!(p.stats().unparsable_ids, 0);
    }
}

/// A synthetic AU: `slices` slices of `slice_len` bytes, SPS/PPS/SEI when `idr`.
fn synthetic_au(idr: bool, slices: usize, slice_len: usize) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x09, 0xf0];
    if idr {
        for (h, len) in [(0x67u8, 20usize), (0x68, 5), (0x06, 700)] {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(&escaped_nal(h, &vec![0x5a; len]));
        }
    }
    for s in 0..slices {
        au.extend_from_slice(&[0, 0, 1]);
        let body: Vec<u8> = (0..slice_len).map(|i| ((i * 7 + s) % 256) as u8).collect();
        au.extend_from_slice(&escaped_nal(if idr { 0x65 } else { 0x41 }, &body));
    }
    au
}

/// Steady state: once buffers have grown, packetizing an AU and fanning its payloads out
/// (then dropping them, as viewers do after sending) allocates nothing.
#[test]
fn steady_state_packetizing_allocates_nothing() {
    let gop: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            if i == 0 {
                synthetic_au(true, 4, 50_000)
            } else {
                synthetic_au(false, 2, 3_000 + i * 400)
            }
        })
        .collect();
    let mut p = H264Packetizer::new(PacketizerConfig::default()).unwrap();
    let mut f = Frame::new();
    let mut fanout: Vec<Bytes> = Vec::with_capacity(1024);
    let run = |p: &mut H264Packetizer, f: &mut Frame, fanout: &mut Vec<Bytes>, round: u64| {
        for (i, au) in gop.iter().enumerate() {
            let pts = (round * 30 + i as u64) * 33_333_333;
            p.packetize_into(au, pts, f).unwrap();
            fanout.extend((0..f.len()).map(|k| f.payload(k)));
            fanout.clear();
        }
    };
    for round in 0..2 {
        run(&mut p, &mut f, &mut fanout, round);
    }
    let before = allocs();
    for round in 2..5 {
        run(&mut p, &mut f, &mut fanout, round);
    }
    let during = allocs() - before;
    assert_eq!(during, 0, "{during} allocations over 90 access units");
    assert_eq!(p.stats().access_units, 150);
}
