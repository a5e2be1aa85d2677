//! H.264 packetizer behaviour, checked byte by byte and by round trip through `rtc`'s
//! independent RFC 6184 depacketizer.

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

use super::*;

const H1000: u64 = 1000 * 3600 * 1_000_000_000;
const FRAME_NS: u64 = 33_333_333;

/// A NAL of `len` bytes with header `header` and a body free of zero bytes, so it can never
/// emulate a start code.
fn nal(header: u8, len: usize) -> Vec<u8> {
    let mut v = vec![header];
    v.extend((1..len).map(|i| (i % 251 + 1) as u8));
    v
}

/// Annex-B with alternating 4- and 3-byte start codes.
fn annexb(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, n) in nals.iter().enumerate() {
        if i % 2 == 0 {
            out.extend_from_slice(&[0, 0, 0, 1]);
        } else {
            out.extend_from_slice(&[0, 0, 1]);
        }
        out.extend_from_slice(n);
    }
    out
}

fn packetizer() -> H264Packetizer {
    H264Packetizer::new(PacketizerConfig::default()).unwrap()
}

fn packetize(p: &mut H264Packetizer, au: &[u8], pts: u64) -> Frame {
    let mut f = Frame::new();
    p.packetize_into(au, pts, &mut f).unwrap();
    f
}

/// NALs recovered from our packets by rtc's depacketizer.
fn depacketize(frame: &Frame) -> Vec<Vec<u8>> {
    let mut d = H264Packet::default();
    let mut annexb = Vec::new();
    for i in 0..frame.len() {
        let out = d.depacketize(&frame.payload(i)).unwrap();
        annexb.extend_from_slice(&out);
    }
    NalUnits::new(&annexb)
        .map(|it| it.map(|n| n.data.to_vec()).collect())
        .unwrap_or_default()
}

fn assert_budget(frame: &Frame, budget: usize) {
    for (i, p) in frame.iter().enumerate() {
        assert!(
            p.payload.len() <= budget,
            "packet {i} is {} > {budget}",
            p.payload.len()
        );
    }
}

fn markers(frame: &Frame) -> Vec<bool> {
    frame.iter().map(|p| p.marker).collect()
}

#[test]
fn default_budget_is_1164() {
    assert_eq!(PacketizerConfig::default().max_payload, 1164);
    assert_eq!(packetizer().max_payload(), 1164);
    assert_eq!(packetizer().clock_rate(), 90_000);
}

#[test]
fn config_outside_sane_range_is_rejected() {
    for bad in [0, 3, 99, 65_001] {
        assert_eq!(
            H264Packetizer::new(PacketizerConfig { max_payload: bad }).err(),
            Some(PacketizeError::InvalidMaxPayload {
                max_payload: bad,
                min: 100,
                max: 65_000
            })
        );
    }
    assert!(H264Packetizer::new(PacketizerConfig { max_payload: 100 }).is_ok());
}

#[test]
fn small_nal_is_a_single_nal_packet_with_marker() {
    let slice = nal(0x41, 500);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&slice]), H1000);
    assert_eq!(f.len(), 1);
    assert_eq!(f.packet(0).payload, &slice[..]);
    assert!(f.packet(0).marker);
    assert!(!f.is_keyframe());
    assert_eq!(f.timestamp(), 0);
}

#[test]
fn sps_pps_go_in_one_stap_a_laid_out_per_rfc() {
    let sps = nal(0x67, 10);
    let pps = nal(0x68, 4);
    let idr = nal(0x65, 3000);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&sps, &pps, &idr]), H1000);
    assert!(f.is_keyframe());
    let stap = f.packet(0).payload;
    let mut want = vec![0x78, 0, 10]; // F=0, NRI=3 (max of parts), type 24
    want.extend_from_slice(&sps);
    want.extend_from_slice(&[0, 4]);
    want.extend_from_slice(&pps);
    assert_eq!(stap, &want[..]);
    assert!(!f.packet(0).marker);
    assert_eq!(f.len(), 1 + 3, "STAP-A then the IDR in 3 FU-A fragments");
}

#[test]
fn stap_a_nri_is_highest_of_aggregated_nals() {
    let sei = nal(0x06, 20); // NRI 0
    let slice = nal(0x21, 30); // NRI 1
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&sei, &slice]), 0);
    assert_eq!(f.len(), 1);
    assert_eq!(f.packet(0).payload[0], 0x20 | 24);
    assert_eq!(depacketize(&f), vec![sei, slice]);
}

#[test]
fn large_nal_is_fragmented_into_fu_a_with_s_and_e_bits() {
    let idr = nal(0x65, 3000);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&idr]), 0);
    // 2999 body bytes, at most 1162 per fragment → 3 fragments of near-equal size.
    assert_eq!(f.len(), 3);
    let headers: Vec<[u8; 2]> = f.iter().map(|p| [p.payload[0], p.payload[1]]).collect();
    assert_eq!(headers, vec![[0x7c, 0x85], [0x7c, 0x05], [0x7c, 0x45]]);
    let body: Vec<u8> = f.iter().flat_map(|p| p.payload[2..].to_vec()).collect();
    assert_eq!(body, idr[1..]);
    let sizes: Vec<usize> = f.iter().map(|p| p.payload.len()).collect();
    assert_eq!(sizes, vec![1002, 1002, 1001]);
    assert_eq!(markers(&f), vec![false, false, true]);
    assert_eq!(depacketize(&f), vec![idr]);
}

#[test]
fn fu_a_keeps_nri_of_non_reference_nal() {
    let slice = nal(0x01, 2000); // NRI 0, type 1
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&slice]), 0);
    assert_eq!(f.packet(0).payload[..2], [28, 0x81]);
    assert_eq!(f.packet(1).payload[..2], [28, 0x41]);
}

#[test]
fn marker_only_on_last_packet_of_multi_nal_au() {
    let a = nal(0x65, 1500);
    let b = nal(0x65, 1500);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&a, &b]), 0);
    assert_eq!(markers(&f), vec![false, false, false, true]);
}

/// A NAL whose payload starts with `prefix` bytes, then the exp-Golomb numbers `ues`, then
/// `body` bytes of 0x5a and the RBSP stop bit, with emulation prevention applied: how an
/// encoder writes an SPS (prefix: profile, constraints, level; then its id), a PPS (its id, its
/// SPS's id) or a slice header (first_mb_in_slice, slice_type, PPS id).
fn nal_with_ids(header: u8, prefix: &[u8], ues: &[u32], body: usize) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    for &v in ues {
        let x = u64::from(v) + 1;
        let n = 64 - x.leading_zeros();
        bits.extend(std::iter::repeat_n(false, n as usize - 1));
        bits.extend((0..n).rev().map(|i| x >> i & 1 == 1));
    }
    for _ in 0..body {
        bits.extend((0..8).rev().map(|i| 0x5a >> i & 1 == 1));
    }
    bits.push(true);
    while !bits.len().is_multiple_of(8) {
        bits.push(false);
    }
    let mut raw = prefix.to_vec();
    raw.extend(
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |b, &bit| b << 1 | u8::from(bit))),
    );
    let mut out = vec![header];
    let mut zeros = 0;
    for b in raw {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

fn sps_with_id(id: u32, body: usize) -> Vec<u8> {
    nal_with_ids(0x67, &[0x42, 0xc0, 0x1f], &[id], body)
}

fn pps_with_ids(id: u32, sps: u32) -> Vec<u8> {
    nal_with_ids(0x68, &[], &[id, sps], 2)
}

/// An IDR slice (slice_type 7, I) on PPS `pps`.
fn idr_on(pps: u32, first_mb: u32, body: usize) -> Vec<u8> {
    nal_with_ids(0x65, &[], &[first_mb, 7, pps], body)
}

#[test]
fn cached_sps_pps_are_injected_before_idr_without_them() {
    let sps = sps_with_id(0, 8);
    let pps = pps_with_ids(0, 0);
    let idr = idr_on(0, 0, 800);
    let p_slice = nal(0x41, 300);
    let mut p = packetizer();
    packetize(&mut p, &annexb(&[&sps, &pps, &idr]), H1000);
    assert_eq!(p.stats().params_injected, 0, "the AU carried its own");
    packetize(&mut p, &annexb(&[&p_slice]), H1000 + FRAME_NS);
    let f = packetize(&mut p, &annexb(&[&idr]), H1000 + 2 * FRAME_NS);
    assert_eq!(depacketize(&f), vec![sps.clone(), pps.clone(), idr.clone()]);
    assert_eq!(f.packet(0).payload[0] & 0x1f, 24, "injected as a STAP-A");
    assert_eq!(p.stats().params_injected, 1);
    assert_eq!(p.stats().idr_without_params, 0);

    // New parameter sets with the same ids replace the cached ones.
    let sps2 = sps_with_id(0, 11);
    let pps2 = nal_with_ids(0x68, &[], &[0, 0], 4);
    packetize(&mut p, &annexb(&[&sps2, &pps2, &idr]), H1000 + 3 * FRAME_NS);
    let f = packetize(&mut p, &annexb(&[&idr]), H1000 + 4 * FRAME_NS);
    assert_eq!(depacketize(&f), vec![sps2, pps2, idr]);
    assert_eq!(p.stats().params_injected, 2);

    // P frames never get parameter sets.
    let f = packetize(&mut p, &annexb(&[&p_slice]), H1000 + 5 * FRAME_NS);
    assert_eq!(depacketize(&f), vec![p_slice]);
}

/// Several SPS and PPS: each IDR gets the PPS its slices name and that PPS's SPS, not the
/// latest ones, and only those its AU does not carry.
#[test]
fn parameter_sets_are_cached_and_injected_by_id() {
    let (sps0, sps1) = (sps_with_id(0, 6), sps_with_id(1, 9));
    let (pps0, pps1, pps2) = (pps_with_ids(0, 0), pps_with_ids(1, 1), pps_with_ids(2, 0));
    let mut p = packetizer();
    let mut t = 0;
    let mut run = |p: &mut H264Packetizer, nals: &[&[u8]]| {
        t += FRAME_NS;
        depacketize(&packetize(p, &annexb(nals), t))
    };
    run(
        &mut p,
        &[&sps0, &sps1, &pps0, &pps1, &pps2, &idr_on(0, 0, 400)],
    );
    assert_eq!(p.stats().params_injected, 0);

    let idr1 = idr_on(1, 0, 400);
    assert_eq!(
        run(&mut p, &[&idr1]),
        vec![sps1.clone(), pps1.clone(), idr1.clone()]
    );
    let idr2 = idr_on(2, 0, 400);
    assert_eq!(
        run(&mut p, &[&idr2]),
        vec![sps0.clone(), pps2.clone(), idr2.clone()]
    );
    // The AU carries the PPS but not its SPS: only the SPS is added, before it.
    assert_eq!(
        run(&mut p, &[&pps1, &idr1]),
        vec![sps1.clone(), pps1.clone(), idr1.clone()]
    );
    // Two slices on two PPS sharing SPS 0: that SPS once, then both PPS.
    let (a, b) = (idr_on(0, 0, 300), idr_on(2, 40, 300));
    assert_eq!(
        run(&mut p, &[&a, &b]),
        vec![sps0.clone(), pps0.clone(), pps2.clone(), a, b]
    );
    assert_eq!(p.stats().params_injected, 4);
    assert_eq!(p.stats().idr_without_params, 0);
    // The latest SPS seen gives the profile, whatever its id.
    assert_eq!(p.profile_level_id(), Some(0x42_c0_1f));

    // A PPS never seen: nothing to add, and counted.
    let idr7 = idr_on(7, 0, 100);
    assert_eq!(run(&mut p, &[&idr7]), vec![idr7]);
    assert_eq!(p.stats().idr_without_params, 1);
    assert_eq!(p.stats().params_injected, 4);
    // A PPS whose SPS was never seen: the PPS is still sent, and the IDR counted.
    let pps9 = pps_with_ids(9, 5);
    let idr9 = idr_on(9, 0, 100);
    run(&mut p, &[&pps9, &idr_on(0, 0, 10)]);
    assert_eq!(run(&mut p, &[&idr9]), vec![pps9, idr9]);
    assert_eq!(p.stats().idr_without_params, 2);
}

#[test]
fn unreadable_ids_are_counted_never_cached() {
    let mut p = packetizer();
    // An SPS cut off before its id, a PPS with an out-of-range id (ue 256), an IDR with a
    // slice_type of 10.
    let bad_sps = [0x67, 0x42, 0xc0];
    let bad_pps = nal_with_ids(0x68, &[], &[256, 0], 1);
    let bad_idr = nal_with_ids(0x65, &[], &[0, 10, 0], 20);
    let f = packetize(&mut p, &annexb(&[&bad_sps, &bad_pps, &bad_idr]), 0);
    assert_eq!(
        depacketize(&f),
        vec![bad_sps.to_vec(), bad_pps.clone(), bad_idr.clone()],
        "sent as they are"
    );
    assert_eq!(p.stats().unparsable_ids, 3);
    assert!(!p.has_parameter_sets());
    assert_eq!(p.profile_level_id(), None);
}

#[test]
fn idr_before_any_parameter_sets_is_counted() {
    let idr = nal(0x65, 800);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&idr]), 0);
    assert_eq!(depacketize(&f), vec![idr]);
    assert!(f.is_keyframe());
    assert_eq!(p.stats().idr_without_params, 1);
    assert_eq!(p.stats().params_injected, 0);
    assert!(!p.has_parameter_sets());
}

#[test]
fn aud_and_filler_are_dropped() {
    let aud = vec![0x09, 0xf0];
    let filler = vec![0x0c, 0xff, 0xff, 0xff, 0x80];
    let slice = nal(0x41, 2000);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&aud, &slice, &filler]), 0);
    assert_eq!(depacketize(&f), vec![slice]);
    assert_eq!(p.stats().dropped_aud, 1);
    assert_eq!(p.stats().dropped_filler, 1);
    // An AU of nothing but droppable NALs yields an empty frame, not an error.
    let f = packetize(&mut p, &annexb(&[&aud]), 0);
    assert!(f.is_empty());
}

#[test]
fn two_slice_idr_au_like_x264_zerolatency() {
    let aud = vec![0x09, 0x10];
    let sps = nal(0x67, 11);
    let pps = nal(0x68, 4);
    let sei = nal(0x06, 600);
    let s1 = nal(0x65, 9000);
    let s2 = nal(0x65, 8000);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&aud, &sps, &pps, &sei, &s1, &s2]), 0);
    assert!(f.is_keyframe());
    assert_budget(&f, 1164);
    assert_eq!(depacketize(&f), vec![sps, pps, sei, s1, s2]);
    assert_eq!(
        p.stats().params_injected,
        0,
        "AU carried its own parameter sets"
    );

    // Two small P slices travel in one STAP-A: one packet instead of two.
    let p1 = nal(0x41, 300);
    let p2 = nal(0x41, 280);
    let f = packetize(&mut p, &annexb(&[&aud, &p1, &p2]), FRAME_NS);
    assert_eq!(f.len(), 1);
    assert!(!f.is_keyframe());
    assert_eq!(depacketize(&f), vec![p1, p2]);
}

#[test]
fn timestamps_are_90khz_relative_to_first_au() {
    let slice = annexb(&[&nal(0x41, 50)]);
    let mut p = packetizer();
    let ts: Vec<u32> = [0, 1, 2, 30]
        .iter()
        .map(|&k| packetize(&mut p, &slice, H1000 + k * FRAME_NS).timestamp())
        .collect();
    assert_eq!(ts, vec![0, 2999, 5999, 89_999]);
    // PTS going backwards wraps below zero instead of panicking.
    assert_eq!(
        packetize(&mut p, &slice, H1000 - 1_000_000_000).timestamp(),
        u32::MAX - 89_999
    );
    // 2^32 ticks later the timestamp has wrapped.
    let wrap = (1u64 << 32) * 1_000_000_000 / 90_000 + 1;
    assert!(packetize(&mut p, &slice, H1000 + wrap).timestamp() < 2);
}

#[test]
fn every_packet_respects_budget() {
    let sps = nal(0x67, 20);
    let pps = nal(0x68, 6);
    let sizes = [1, 2, 97, 98, 99, 100, 101, 1163, 1164, 1165, 5000, 70_000];
    let nals: Vec<Vec<u8>> = sizes.iter().map(|&n| nal(0x41, n.max(2))).collect();
    let mut refs: Vec<&[u8]> = vec![&sps, &pps];
    refs.extend(nals.iter().map(|n| &n[..]));
    let au = annexb(&refs);
    for budget in [100, 101, 500, 1164, 1400, 65_000] {
        let mut p = H264Packetizer::new(PacketizerConfig {
            max_payload: budget,
        })
        .unwrap();
        let f = packetize(&mut p, &au, 0);
        assert_budget(&f, budget);
        let mut want = vec![sps.clone(), pps.clone()];
        want.extend(nals.iter().cloned());
        assert_eq!(depacketize(&f), want, "budget {budget}");
        assert_eq!(markers(&f).iter().filter(|&&m| m).count(), 1);
    }
}

#[test]
fn four_megabyte_nal_is_fragmented() {
    let big = nal(0x65, 4 << 20);
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&big]), 0);
    assert_eq!(f.len(), (big.len() - 1).div_ceil(1162));
    assert_budget(&f, 1164);
    assert_eq!(depacketize(&f), vec![big]);
}

#[test]
fn hostile_inputs_error_or_skip_without_panicking() {
    let mut p = packetizer();
    let mut f = Frame::new();
    p.packetize_into(&annexb(&[&nal(0x41, 10)]), 0, &mut f)
        .unwrap();
    assert_eq!(
        p.packetize_into(&[], 0, &mut f),
        Err(PacketizeError::EmptyInput)
    );
    assert!(f.is_empty(), "errors leave no stale packets behind");
    assert_eq!(
        p.packetize_into(&[0x65, 1, 2, 3], 0, &mut f),
        Err(PacketizeError::NoStartCode { len: 4 })
    );
    let huge = vec![0u8; MAX_INPUT_LEN + 1];
    assert_eq!(
        p.packetize_into(&huge, 0, &mut f),
        Err(PacketizeError::InputTooLarge {
            len: MAX_INPUT_LEN + 1,
            max: MAX_INPUT_LEN
        })
    );
    assert_eq!(p.stats().rejected_inputs, 3);

    // Forbidden bit, types 0 and 24..=31, empty NALs, junk before the first start code:
    // skipped and counted, the good NAL still goes out.
    let good = nal(0x41, 40);
    let mut au = vec![0xde, 0xad];
    au.extend(annexb(&[
        &nal(0xE5, 30),
        &nal(0x00, 5),
        &nal(0x18, 30),
        &nal(0x7c, 30),
        &nal(0x1f, 30),
        &good,
    ]));
    au.extend_from_slice(&[0, 0, 1, 0, 0, 1]);
    p.packetize_into(&au, 0, &mut f).unwrap();
    assert_eq!(depacketize(&f), vec![good]);
    let s = p.stats();
    assert_eq!(s.dropped_forbidden_bit, 1);
    assert_eq!(s.dropped_invalid_type, 4);
    assert_eq!(s.dropped_empty, 1);
    assert_eq!(s.junk_bytes, 2);

    // Only start codes / only zeros: nothing to send, no panic.
    p.packetize_into(&[0, 0, 1, 0, 0, 0, 1], 0, &mut f).unwrap();
    assert!(f.is_empty());
    // A truncated NAL (header only) is passed on as-is; the decoder judges it.
    p.packetize_into(&[0, 0, 1, 0x65], 0, &mut f).unwrap();
    assert_eq!(f.packet(0).payload, &[0x65]);
}

#[test]
fn payload_is_zero_copy_view_of_frame_buffer() {
    let mut p = packetizer();
    let f = packetize(&mut p, &annexb(&[&nal(0x65, 5000)]), 0);
    let a: Bytes = f.payload(1);
    assert_eq!(a.as_ptr(), f.packet(1).payload.as_ptr());
    assert_eq!(f.iter().len(), f.len());
    assert_eq!(
        f.payload_bytes(),
        f.iter().map(|p| p.payload.len()).sum::<usize>()
    );
}

#[test]
fn frame_stays_valid_while_viewers_hold_old_payloads() {
    let mut p = packetizer();
    let mut f = Frame::new();
    let first = nal(0x65, 3000);
    p.packetize_into(&annexb(&[&first]), 0, &mut f).unwrap();
    let held: Vec<Bytes> = (0..f.len()).map(|i| f.payload(i)).collect();
    let second = nal(0x41, 3000);
    p.packetize_into(&annexb(&[&second]), FRAME_NS, &mut f)
        .unwrap();
    let mut d = H264Packet::default();
    let mut out = Vec::new();
    for b in &held {
        out.extend_from_slice(&d.depacketize(b).unwrap());
    }
    assert_eq!(
        &out[4..],
        &first[..],
        "old payloads untouched by the next frame"
    );
    assert_eq!(depacketize(&f), vec![second]);
}

#[test]
fn frame_can_be_shared_across_viewer_tasks_and_payloaders_boxed() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Frame>();
    shareable::<H264Packetizer>();
    let mut payloaders: Vec<Box<dyn Payloader + Send>> =
        vec![Box::new(packetizer()), Box::new(OpusPacketizer::new())];
    let mut f = Frame::new();
    payloaders[1].packetize_into(&[1, 2, 3], 0, &mut f).unwrap();
    assert_eq!(payloaders[0].clock_rate(), 90_000);
    assert_eq!(f.len(), 1);
}

#[test]
fn arena_rewinds_to_same_memory_when_no_viewer_holds_the_previous_frame() {
    let mut p = packetizer();
    let mut f = Frame::new();
    let au = annexb(&[&nal(0x65, 5000)]);
    p.packetize_into(&au, 0, &mut f).unwrap();
    let first = f.packet(0).payload.as_ptr();
    p.packetize_into(&au, FRAME_NS, &mut f).unwrap();
    assert_eq!(f.packet(0).payload.as_ptr(), first);
    // A viewer still holding a payload forces a fresh buffer; the held bytes stay intact.
    let held = f.payload(0);
    let copy = held.to_vec();
    p.packetize_into(&annexb(&[&nal(0x41, 5000)]), 2 * FRAME_NS, &mut f)
        .unwrap();
    assert_ne!(f.packet(0).payload.as_ptr(), first);
    assert_eq!(&held[..], &copy[..]);
}

#[test]
fn profile_level_id_comes_from_the_last_sps() {
    let mut p = packetizer();
    assert_eq!(p.profile_level_id(), None);
    let pps = nal(0x68, 4);
    let idr = nal(0x65, 30);
    let high_4_0 = [0x67, 0x64, 0x00, 0x28, 0xac, 0xd9];
    packetize(&mut p, &annexb(&[&high_4_0, &pps, &idr]), 0);
    assert_eq!(p.profile_level_id(), Some(0x64_00_28));
    let cb_3_1 = [0x67, 0x42, 0xe0, 0x1f, 0x8c];
    packetize(&mut p, &annexb(&[&cb_3_1, &pps, &idr]), 3000);
    assert_eq!(p.profile_level_id(), Some(0x42_e0_1f));
}

#[test]
fn pool_rewrites_a_frame_only_once_nobody_else_holds_it() {
    use std::sync::Arc;
    let mut p = packetizer();
    let mut pool = FramePool::new(4);
    let au = |len| annexb(&[&nal(0x41, len)]);
    let first = pool.fill(|f| p.packetize_into(&au(3000), 0, f)).unwrap();
    let first_bytes = depacketize(&first);
    // A viewer still holds the first frame: the next one is a different frame, and the held
    // one is untouched.
    let second = pool
        .fill(|f| p.packetize_into(&au(2000), FRAME_NS, f))
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(depacketize(&first), first_bytes);
    // Once every viewer let go, its `Arc` and buffers come back for the next frame.
    let first_ptr = Arc::as_ptr(&first);
    let first_payload = first.packet(0).payload.as_ptr();
    drop(first);
    let third = pool
        .fill(|f| p.packetize_into(&au(2500), 2 * FRAME_NS, f))
        .unwrap();
    assert_eq!(Arc::as_ptr(&third), first_ptr);
    assert_eq!(third.packet(0).payload.as_ptr(), first_payload);
    assert_eq!(depacketize(&third), vec![nal(0x41, 2500)]);
    assert_eq!(depacketize(&second), vec![nal(0x41, 2000)]);
}

#[test]
fn pool_tracks_a_bounded_number_of_frames_and_keeps_few_spares() {
    let mut p = packetizer();
    let mut pool = FramePool::new(8);
    let au = annexb(&[&nal(0x41, 500)]);
    // A lagging holder keeps every frame: the pool makes new ones and forgets the oldest.
    let held: Vec<_> = (0..20)
        .map(|i| {
            pool.fill(|f| p.packetize_into(&au, i * FRAME_NS, f))
                .unwrap()
        })
        .collect();
    assert_eq!(pool.tracked(), 8);
    assert!(held.iter().all(|f| depacketize(f) == vec![nal(0x41, 500)]));
    // The holder lets go of all at once (a GOP cache dropping a GOP): one is reused, two
    // are kept as spares, the rest are freed.
    drop(held);
    let next = pool.fill(|f| p.packetize_into(&au, 0, f)).unwrap();
    assert_eq!(pool.tracked(), 1 + 2);
    drop(next);
}

#[test]
fn pool_keeps_the_frame_of_a_rejected_input_empty_and_reuses_it() {
    let mut p = packetizer();
    let mut pool = FramePool::new(2);
    let bad = pool.fill(|f| p.packetize_into(&[1, 2, 3], 0, f));
    assert_eq!(bad.err(), Some(PacketizeError::NoStartCode { len: 3 }));
    assert_eq!(pool.tracked(), 1);
    let good = pool
        .fill(|f| p.packetize_into(&annexb(&[&nal(0x41, 50)]), 0, f))
        .unwrap();
    assert_eq!(pool.tracked(), 1, "the rejected input's frame was reused");
    assert_eq!(depacketize(&good), vec![nal(0x41, 50)]);
}
