//! Alexa's side of the exchange for tests: offers in the shape an Echo Show sends (reference
//! §5.4–5.5), made from a real `webrtc` peer's offer, and the checklist an answer must pass.

use base64::Engine as _;

use super::viewer::{AudioKind, Heard};

/// The offer variants the reference names (§5.4 "Accept every offer variant", §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// CRLF, UDP/TLS/RTP/SAVPF, b=AS:2500, audio 96 0 8 with rtpmaps, JSON-wrapped.
    Canonical,
    /// LF line endings and a raw (not JSON-wrapped) payload.
    LfRaw,
    /// `RTP/SAVPF` profile and `b=AS:500` (older captures).
    SavpfAs500,
    /// Static payload types 0 and 8 without `a=rtpmap` lines (older Alexa offers).
    NoStaticRtpmap,
    /// Audio `96 0` only (no PCMA).
    OpusPcmu,
    /// TCP (active port 9, passive) and RTCP component-2 candidates, as Alexa sends.
    TcpAndComponent2,
    /// PCMU only: no Opus at all; served by the on-demand G.711 encoder.
    PcmuOnly,
}

impl Variant {
    pub fn audio(self) -> Vec<(u8, AudioKind)> {
        match self {
            Variant::PcmuOnly => vec![(0, AudioKind::Pcmu)],
            Variant::OpusPcmu => vec![(96, AudioKind::Opus), (0, AudioKind::Pcmu)],
            _ => vec![
                (96, AudioKind::Opus),
                (0, AudioKind::Pcmu),
                (8, AudioKind::Pcma),
            ],
        }
    }
}

/// Rewrites a `webrtc` offer (mids 0 = audio, 1 = video) into Alexa's shape.
pub fn alexa_offer(sdp: &str, v: Variant) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut section = "";
    let crlf_lines: Vec<&str> = sdp.lines().map(|l| l.trim_end_matches('\r')).collect();
    // Candidates go first in each section, as in captured Alexa offers.
    let candidates: Vec<&str> = crlf_lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let mut extra: Vec<String> = Vec::new();
    if v == Variant::TcpAndComponent2 {
        // Loopback only: the daemon may try these, and nothing else is a target.
        extra.push("a=candidate:2 1 TCP 1015021823 127.0.0.1 9 typ host tcptype active".into());
        extra.push("a=candidate:3 1 TCP 1010827519 127.0.0.1 9 typ host tcptype passive".into());
        for c in &candidates {
            let mut f: Vec<&str> = c.split(' ').collect();
            if f.len() > 1 {
                f[1] = "2";
                extra.push(f.join(" "));
            }
        }
    }
    for line in crlf_lines {
        if line.starts_with("a=group:BUNDLE") {
            out.push("a=group:BUNDLE audio0 video0".into());
            continue;
        }
        if line.starts_with("a=ice-options")
            || line.starts_with("a=msid")
            || line.starts_with("a=extmap-allow-mixed")
            || line.starts_with("a=candidate:")
            || line.starts_with("a=end-of-candidates")
        {
            continue;
        }
        if let Some(rest) = line.strip_prefix("m=") {
            section = if rest.starts_with("audio") {
                "audio"
            } else {
                "video"
            };
            let mut f: Vec<String> = rest.split(' ').map(str::to_owned).collect();
            if f.len() > 2 {
                f[1] = "1".into();
                if v == Variant::SavpfAs500 {
                    f[2] = "RTP/SAVPF".into();
                }
            }
            out.push(format!("m={}", f.join(" ")));
            out.extend(candidates.iter().map(|c| c.to_string()));
            out.extend(extra.iter().cloned());
            if section == "video" {
                let kbps = if v == Variant::SavpfAs500 { 500 } else { 2500 };
                out.push(format!("b=AS:{kbps}"));
            }
            continue;
        }
        if section == "video" && line.starts_with("a=fmtp:") {
            continue; // Alexa offers H.264 without fmtp.
        }
        if v == Variant::NoStaticRtpmap
            && (line.starts_with("a=rtpmap:0 ") || line.starts_with("a=rtpmap:8 "))
        {
            continue;
        }
        let line = match line {
            "a=mid:0" => "a=mid:audio0",
            "a=mid:1" => "a=mid:video0",
            "a=recvonly" if section == "video" => "a=sendrecv",
            other => other,
        };
        out.push(line.to_owned());
    }
    let eol = if v == Variant::LfRaw { "\n" } else { "\r\n" };
    let mut s = out.join(eol);
    s.push_str(eol);
    s
}

/// The daemon's answer with Alexa's mids mapped back to the test peer's.
pub fn answer_for_peer(answer: &str) -> String {
    answer
        .replace("a=group:BUNDLE audio0 video0", "a=group:BUNDLE 0 1")
        .replace("a=mid:audio0", "a=mid:0")
        .replace("a=mid:video0", "a=mid:1")
}

/// The reference's answer checklist (§5.4–5.5); returns every item that fails.
pub fn checklist(answer: &str, payload_chars: usize, v: Variant) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    check(
        !answer.replace("\r\n", "").contains('\n'),
        "CRLF line endings",
    );
    check(
        answer.contains("a=group:BUNDLE audio0 video0\r\n"),
        "a=group:BUNDLE audio0 video0",
    );
    check(
        !answer.contains("a=ice-options:trickle"),
        "no a=ice-options:trickle",
    );
    check(
        payload_chars < 10_000,
        "payload under 10 000 base64 characters",
    );
    let sections: Vec<&str> = answer.split("\r\nm=").skip(1).collect();
    check(sections.len() == 2, "two m-sections");
    for (i, s) in sections.iter().enumerate() {
        let name = if s.starts_with("audio") {
            "audio"
        } else {
            "video"
        };
        check(
            !s.starts_with(&format!("{name} 0 ")),
            &format!("{name} accepted (port ≠ 0)"),
        );
        check(
            s.contains(&format!("a=mid:{name}0\r\n")),
            &format!("{name}: offer's mid kept"),
        );
        for attr in [
            "a=rtcp-mux",
            "a=setup:active",
            "a=ice-ufrag:",
            "a=ice-pwd:",
            "a=fingerprint:sha-256 ",
        ] {
            check(s.contains(attr), &format!("{name}: {attr}"));
        }
        if i == 0 {
            check(
                s.contains("a=candidate:"),
                "candidates in the first m-section",
            );
        }
    }
    if let Some(video) = sections.iter().find(|s| s.starts_with("video")) {
        check(
            video.starts_with("video 9 UDP/TLS/RTP/SAVPF 99\r\n")
                || video.starts_with("video 9 RTP/SAVPF 99\r\n"),
            "video: PT 99 only",
        );
        check(
            video.contains("a=rtpmap:99 H264/90000"),
            "video: rtpmap 99 H264",
        );
        check(
            video.contains("packetization-mode=1") && video.contains("profile-level-id="),
            "video: fmtp with packetization-mode=1 and a profile-level-id",
        );
        check(video.contains("a=sendonly"), "video: sendonly");
    }
    if let Some(audio) = sections.iter().find(|s| s.starts_with("audio")) {
        if v == Variant::PcmuOnly {
            check(
                audio.contains("a=rtpmap:0 PCMU/8000"),
                "audio: PCMU answered",
            );
        } else {
            check(
                audio.contains("a=rtpmap:96 opus/48000/2"),
                "audio: Opus PT 96",
            );
            check(!audio.contains("a=rtpmap:0 "), "audio: one codec");
        }
        check(
            audio.contains("a=sendrecv"),
            "audio: sendrecv (audio + talkback)",
        );
    }
    problems
}

pub fn payload_chars(sdp: &str) -> usize {
    let json = serde_json::json!({"type": "answer", "sdp": sdp}).to_string();
    base64::engine::general_purpose::STANDARD.encode(json).len()
}

pub fn assert_tone(heard: &Heard, hz: f64, what: &str) {
    assert!(
        heard.rms() > 500.0,
        "{what}: silence (rms {:.0})",
        heard.rms()
    );
    let got = heard.dominant_hz(0.5);
    assert!(
        (got - hz).abs() < 15.0,
        "{what}: heard {got:.0} Hz, expected {hz}"
    );
}
