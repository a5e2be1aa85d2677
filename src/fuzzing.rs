//! Fuzz entry points: one function per cargo-fuzz target (`fuzz/fuzz_targets/`), also replayed
//! over the committed corpus by `tests/fuzz_corpus.rs` on stable.
//!
//! Each takes arbitrary bytes, drives one parser or packetizer the daemon runs on untrusted
//! input, and panics when an invariant breaks (a panic is what the fuzzer reports). Not part
//! of the daemon's API.

use std::path::PathBuf;

use crate::rtp::{Frame, H264Packetizer, NalUnits, OpusPacketizer, PacketizerConfig, Payloader};
use crate::rtp::{MAX_MAX_PAYLOAD, MIN_MAX_PAYLOAD, PacketizeError};
use crate::session::sdp;
use crate::signaling::kvs::message;
use crate::signaling::local::sdpfrag;

/// A fuzz target: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/corpus/`) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("sdp_offer", sdp_offer),
    ("kvs_message", kvs_message),
    ("whep_sdpfrag", whep_sdpfrag),
    ("rtp_packetizer", rtp_packetizer),
    ("config_load", config_load),
];

/// A viewer's offer through [`sdp::prepare_offer`] / [`sdp::prepare_offer_for`], then the
/// same text through the answer policy ([`sdp::finish_answer`], [`sdp::fit_answer`]).
pub fn sdp_offer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let plain = sdp::prepare_offer(&text);
    // A profile the stream could have: taken from the input so both paths get exercised.
    let sending = data
        .get(..3)
        .map(|b| u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]));
    let with_profile = sdp::prepare_offer_for(&text, sending);
    assert_eq!(
        plain.is_ok(),
        with_profile.is_ok(),
        "the stream's profile changed whether the offer is accepted"
    );
    if let Ok(p) = &plain {
        check_prepared(p);
        // The rewritten offer is what the stack parses; it must still be one we accept, with
        // the same choice.
        match sdp::prepare_offer(&p.sdp) {
            Ok(again) => {
                assert_eq!(again.video_payload_type, p.video_payload_type);
                assert_eq!(again.video_index, p.video_index);
            }
            Err(e) => panic!("rewritten offer refused: {e}\n{}", p.sdp),
        }
    }
    if let Ok(p) = &with_profile {
        check_prepared(p);
    }

    let trickle = data.first().is_some_and(|b| b & 1 == 1);
    let finished = sdp::finish_answer(&text, trickle);
    let bare_lf = finished
        .as_bytes()
        .windows(2)
        .any(|w| w[1] == b'\n' && w[0] != b'\r')
        || finished.starts_with('\n');
    assert!(!bare_lf, "finish_answer left a bare LF");
    let limit = finished.len() / 2;
    let fitted = sdp::fit_answer(&finished, |a| a.len() <= limit);
    assert!(
        sdp::candidate_count(&fitted) <= sdp::candidate_count(&finished),
        "fit_answer added candidates"
    );
}

fn check_prepared(p: &sdp::PreparedOffer) {
    assert!(p.video_fmtp.contains("packetization-mode=1"));
    let m_video = p
        .sdp
        .lines()
        .filter(|l| l.starts_with("m="))
        .nth(p.video_index)
        .unwrap_or_default();
    assert!(
        m_video.ends_with(&format!(" {}", p.video_payload_type)),
        "video m-line {m_video:?} does not carry exactly payload type {}",
        p.video_payload_type
    );
    if let Some(a) = p.audio_index {
        assert_ne!(a, p.video_index);
    }
    let _ = p.candidate_section();
}

/// One WebSocket frame from the KVS signaling service, as text and as binary.
pub fn kvs_message(data: &[u8]) {
    match message::parse_binary(data) {
        message::Rejected::Empty => assert!(data.is_empty()),
        message::Rejected::Binary(n) => assert_eq!(n, data.len()),
        other => panic!("binary frame parsed as {other:?}"),
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match message::parse_frame(text) {
        Ok(message::Incoming::Offer { sender, .. } | message::Incoming::Answer { sender, .. }) => {
            // A sender that comes out is one the service could have stamped.
            assert!(message::valid_id(sender.as_str()));
        }
        Ok(message::Incoming::Candidate {
            sender,
            candidate_json,
        }) => {
            assert!(message::valid_id(sender.as_str()));
            // The driver hands this to the stack as JSON.
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(&candidate_json);
            assert!(parsed.is_ok(), "candidate is not JSON: {candidate_json}");
        }
        Ok(_) => {}
        Err(e) => {
            // Every rejection is logged: its text must be printable.
            let _ = e.to_string();
        }
    }
}

/// The body of a WHEP `PATCH` (trickle ICE fragment).
pub fn whep_sdpfrag(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match sdpfrag::parse(&text) {
        Ok(f) => {
            assert!(f.candidates.len() <= sdpfrag::MAX_CANDIDATES_PER_PATCH);
            for c in &f.candidates {
                assert!(c.starts_with("candidate:"));
                assert!(!c.contains('\n'));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The Annex-B scanner and the H.264, Opus and G.711 packetizers.
///
/// Input: byte 0 picks the codec, bytes 1..3 the payload budget, the rest is split at each
/// `\xff\xfe\xfd` into consecutive access units (so the parameter-set cache is exercised).
pub fn rtp_packetizer(data: &[u8]) {
    let [mode, b0, b1, rest @ ..] = data else {
        return;
    };
    let span = MAX_MAX_PAYLOAD - MIN_MAX_PAYLOAD + 1;
    let budget = MIN_MAX_PAYLOAD + usize::from(u16::from_be_bytes([*b0, *b1])) % span;
    let config = PacketizerConfig {
        max_payload: budget,
    };
    let units: Vec<&[u8]> = split_units(rest);
    let mut frame = Frame::new();
    match mode % 3 {
        0 => {
            let Ok(mut p) = H264Packetizer::new(config) else {
                panic!("budget {budget} within range refused");
            };
            for (i, unit) in units.iter().enumerate() {
                check_annexb(unit);
                h264_unit(&mut p, unit, i as u64 * 33_333_333, &mut frame);
            }
        }
        m => {
            let mut p = if m == 1 {
                match OpusPacketizer::with_config(config) {
                    Ok(p) => p,
                    Err(e) => panic!("budget {budget} within range refused: {e}"),
                }
            } else {
                OpusPacketizer::g711()
            };
            let mut started = false;
            for (i, unit) in units.iter().enumerate() {
                match p.packetize_into(unit, i as u64 * 20_000_000, &mut frame) {
                    Ok(()) => {
                        assert_eq!(frame.len(), 1);
                        assert_eq!(frame.packet(0).payload, *unit);
                        // RFC 7587: the marker only on the stream's first packet.
                        assert_eq!(frame.packet(0).marker, !started);
                        started = true;
                    }
                    Err(PacketizeError::EmptyInput) => assert!(unit.is_empty()),
                    Err(PacketizeError::PayloadTooLarge { len, max }) => {
                        assert!(len > max && len == unit.len());
                        assert!(m == 2 || max == budget);
                        assert!(frame.is_empty());
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
    }
}

fn split_units(data: &[u8]) -> Vec<&[u8]> {
    const SEP: &[u8] = b"\xff\xfe\xfd";
    let mut units = Vec::new();
    let mut rest = data;
    while let Some(i) = memchr::memmem::find(rest, SEP) {
        units.push(&rest[..i]);
        rest = &rest[i + SEP.len()..];
    }
    units.push(rest);
    units
}

/// The scanner's NALs are the input's bytes between start codes, none holding one.
fn check_annexb(input: &[u8]) {
    let Some(nals) = NalUnits::new(input) else {
        assert!(memchr::memmem::find(input, &[0, 0, 1]).is_none());
        return;
    };
    let mut last_end = 0;
    for nal in nals {
        let end = nal.offset + nal.data.len();
        assert!(nal.offset >= last_end && end <= input.len());
        assert_eq!(&input[nal.offset..end], nal.data);
        assert!(memchr::memmem::find(nal.data, &[0, 0, 1]).is_none());
        assert_ne!(nal.data.last(), Some(&0));
        last_end = end;
    }
}

/// The NALs an RTP receiver reassembles from `frame` (RFC 6184 single NAL, STAP-A, FU-A).
fn depacketize(frame: &Frame) -> Vec<Vec<u8>> {
    let mut nals = Vec::new();
    let mut fu: Option<Vec<u8>> = None;
    for pkt in frame.iter() {
        let p = pkt.payload;
        let Some(&header) = p.first() else {
            panic!("empty RTP payload");
        };
        match header & 0x1f {
            24 => {
                assert!(fu.is_none(), "STAP-A inside an FU-A run");
                let mut rest = &p[1..];
                let mut count = 0;
                while !rest.is_empty() {
                    let Some((size, body)) = rest.split_first_chunk::<2>() else {
                        panic!("truncated STAP-A size");
                    };
                    let size = usize::from(u16::from_be_bytes(*size));
                    assert!(size > 0 && size <= body.len(), "bad STAP-A size");
                    nals.push(body[..size].to_vec());
                    rest = &body[size..];
                    count += 1;
                }
                assert!(count >= 2, "STAP-A with {count} NAL");
            }
            28 => {
                let Some(&fu_header) = p.get(1) else {
                    panic!("FU-A without FU header");
                };
                assert!(p.len() > 2, "empty FU-A fragment");
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                if start {
                    assert!(fu.is_none(), "FU-A start inside a run");
                    fu = Some(vec![(header & 0xe0) | (fu_header & 0x1f)]);
                }
                let Some(buf) = fu.as_mut() else {
                    panic!("FU-A continuation without start");
                };
                buf.extend_from_slice(&p[2..]);
                if end {
                    nals.extend(fu.take());
                }
            }
            _ => {
                assert!(fu.is_none(), "single NAL inside an FU-A run");
                nals.push(p.to_vec());
            }
        }
    }
    assert!(fu.is_none(), "unterminated FU-A");
    nals
}

fn h264_unit(p: &mut H264Packetizer, unit: &[u8], pts: u64, frame: &mut Frame) {
    let injected_before = p.stats().params_injected;
    let result = p.packetize_into(unit, pts, frame);
    let budget = p.max_payload();
    let Ok(()) = result else {
        assert!(frame.is_empty(), "error left packets behind");
        return;
    };
    for (i, pkt) in frame.iter().enumerate() {
        assert!(
            !pkt.payload.is_empty() && pkt.payload.len() <= budget,
            "payload of {} bytes, budget {budget}",
            pkt.payload.len()
        );
        assert_eq!(
            pkt.marker,
            i + 1 == frame.len(),
            "marker not on the last packet"
        );
    }
    // What a receiver reassembles is what we meant to send: the cached SPS/PPS when injected
    // (every SPS before every PPS), then the AU's NALs minus the ones RFC 6184 cannot or need
    // not carry.
    let sent: Vec<&[u8]> = NalUnits::new(unit)
        .into_iter()
        .flatten()
        .map(|n| n.data)
        .filter(|d| match d.first() {
            None => false,
            Some(h) if h & 0x80 != 0 => false,
            Some(h) => !matches!(h & 0x1f, 0 | 9 | 12 | 24..=31),
        })
        .collect();
    let got = depacketize(frame);
    assert!(got.len() >= sent.len(), "NALs lost");
    let (injected, rest) = got.split_at(got.len() - sent.len());
    assert_eq!(rest, &sent[..], "reassembly differs");
    assert_eq!(
        !injected.is_empty(),
        p.stats().params_injected > injected_before,
        "injected NALs not counted, or counted and missing"
    );
    let types: Vec<Option<u8>> = injected
        .iter()
        .map(|n| n.first().map(|h| h & 0x1f))
        .collect();
    let sps = types.iter().take_while(|t| **t == Some(7)).count();
    assert!(
        types[sps..].iter().all(|t| *t == Some(8)),
        "injected NALs are not SPS then PPS: {types:?}"
    );
    let has_idr = sent.iter().any(|d| d[0] & 0x1f == 5);
    assert_eq!(frame.is_keyframe(), has_idr);
}

/// A configuration file and `CAMGATE__*` variables through [`crate::config::load_from`].
///
/// Input: the file's text, then after the first NUL byte one `NAME=VALUE` per line (a name
/// without the prefix gets it). With no NUL there is no file, only the text as variables.
pub fn config_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, env_text) = match text.split_once('\0') {
        Some((f, e)) => (Some(f), e),
        None => (None, &*text),
    };
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let name = if crate::config::ENV_PREFIX.len() <= k.len()
                && k.is_char_boundary(crate::config::ENV_PREFIX.len())
                && k[..crate::config::ENV_PREFIX.len()]
                    .eq_ignore_ascii_case(crate::config::ENV_PREFIX)
            {
                k.to_owned()
            } else {
                format!("{}{k}", crate::config::ENV_PREFIX)
            };
            (name, v.to_owned())
        })
        .collect();
    let path = file.and_then(|f| {
        let path = scratch_path();
        std::fs::write(&path, f).ok().map(|()| path)
    });
    if file.is_some() && path.is_none() {
        return;
    }
    match crate::config::load_from(path.as_deref(), &env) {
        Ok(settings) => {
            let _ = settings.to_redacted_toml();
            let _ = settings.source_description();
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
    }
}

/// One file per process and thread, rewritten on every call.
fn scratch_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "camgate-fuzz-{}-{:?}.toml",
        std::process::id(),
        std::thread::current().id()
    ))
}
