//! SDP policy for answering a viewer's offer (sans-IO).
//!
//! The `webrtc` crate answers with *every* offered codec that matches what we registered, each
//! with the offerer's fmtp. That is wrong for a camera: we send exactly one H.264 stream
//! (constrained baseline, packetization-mode 1), and the answer must say so — Alexa offers
//! H.264 with no fmtp at all and needs an explicit `packetization-mode=1` back, and browsers
//! offer half a dozen H.264 variants. So before the offer reaches the stack we pick the one
//! payload type we will send on, drop the other video payload types from the offer, and give the
//! chosen one our fmtp. The answer then carries exactly that payload type and fmtp.

use std::fmt::Write as _;

/// The fmtp we answer with and send: constrained baseline, level 3.1, single NAL + FU-A.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Offers larger than this are refused before parsing (Chrome's full offer is ~8 KB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// Why an offer cannot be answered. The text is shown to the viewer (HTTP body, logs).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("offer is empty")]
    Empty,
    #[error("offer is {0} bytes; at most {MAX_OFFER_BYTES} are accepted")]
    TooLarge(usize),
    #[error("offer is not an SDP session description (it must start with \"v=0\")")]
    NotSdp,
    #[error("offer has no video m-line; camgate only sends video")]
    NoVideo,
    #[error(
        "offer has no usable H.264 payload type (need H264/90000 with packetization-mode=1); offered video codecs: {0}"
    )]
    NoH264(String),
}

/// What the session layer needs to know about an offer, and the offer rewritten for the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedOffer {
    /// The offer with one H.264 payload type left in the first video section.
    pub sdp: String,
    /// The payload type every video packet to this viewer carries.
    pub video_payload_type: u8,
    /// The offer has `a=ice-options:trickle` (session or media level): we may answer before
    /// gathering ends and send candidates afterwards. Alexa's offers do not.
    pub trickle: bool,
    /// The `a=mid` of the chosen video section.
    pub video_mid: Option<String>,
}

/// One `m=` section of the offer, as line indices into the offer.
struct Section {
    start: usize,
    end: usize,
    kind: String,
    payload_types: Vec<u8>,
}

/// One H.264 payload type offered in the video section, with what we know of it.
#[derive(Debug)]
struct H264Candidate {
    pt: u8,
    fmtp: Option<String>,
}

/// Checks an offer, chooses the H.264 payload type, and rewrites the offer (see module doc).
pub fn prepare_offer(offer: &str) -> Result<PreparedOffer, SdpError> {
    if offer.trim().is_empty() {
        return Err(SdpError::Empty);
    }
    if offer.len() > MAX_OFFER_BYTES {
        return Err(SdpError::TooLarge(offer.len()));
    }
    if !offer.trim_start().starts_with("v=0") {
        return Err(SdpError::NotSdp);
    }
    let lines: Vec<&str> = offer.lines().map(|l| l.trim_end_matches('\r')).collect();
    let sections = split_sections(&lines);
    let video = sections
        .iter()
        .find(|s| s.kind == "video")
        .ok_or(SdpError::NoVideo)?;

    let body = &lines[video.start + 1..video.end];
    let chosen = choose_h264(video, body)?;

    let session_end = sections.first().map_or(lines.len(), |s| s.start);
    let trickle = lines[..session_end]
        .iter()
        .chain(sections.iter().flat_map(|s| &lines[s.start..s.end]))
        .any(|l| is_trickle_option(l));
    let video_mid = mid_of(body);

    let sdp = rewrite(&lines, video, chosen.pt);
    Ok(PreparedOffer {
        sdp,
        video_payload_type: chosen.pt,
        trickle,
        video_mid,
    })
}

fn mid_of(section: &[&str]) -> Option<String> {
    section
        .iter()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned())
}

/// True when an SDP line announces trickle ICE support.
fn is_trickle_option(line: &str) -> bool {
    line.strip_prefix("a=ice-options:")
        .is_some_and(|opts| opts.split_whitespace().any(|o| o == "trickle"))
}

fn split_sections(lines: &[&str]) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("m=") {
            if let Some(last) = sections.last_mut() {
                last.end = i;
            }
            let mut fields = rest.split_whitespace();
            let kind = fields.next().unwrap_or_default().to_ascii_lowercase();
            // m=<media> <port> <proto> <fmt> ...
            let payload_types = fields.skip(2).filter_map(|f| f.parse().ok()).collect();
            sections.push(Section {
                start: i,
                end: lines.len(),
                kind,
                payload_types,
            });
        }
    }
    sections
}

/// Picks the H.264 payload type we will send on.
///
/// Preference: packetization-mode=1 with constrained baseline (42e0), then baseline (4200),
/// then any other profile (a constrained-baseline stream is decodable by every Main/High
/// decoder), then an H.264 entry without fmtp (Alexa). packetization-mode=0 is refused: our
/// packetizer emits FU-A and STAP-A. Ties go to the offerer's order, which is its preference.
fn choose_h264(video: &Section, body: &[&str]) -> Result<H264Candidate, SdpError> {
    let mut offered = Vec::new();
    let mut h264 = Vec::new();
    for line in body {
        if let Some((pt, codec)) = line
            .strip_prefix("a=rtpmap:")
            .and_then(|r| r.split_once(char::is_whitespace))
        {
            let Ok(pt) = pt.parse::<u8>() else { continue };
            if !video.payload_types.contains(&pt) {
                continue;
            }
            offered.push(codec.trim().to_owned());
            if codec.trim().to_ascii_lowercase().starts_with("h264/90000") {
                h264.push(H264Candidate {
                    pt,
                    fmtp: fmtp_of(body, pt),
                });
            }
        }
    }
    h264.iter()
        .filter_map(|c| score(c).map(|s| (s, c)))
        // max_by_key keeps the last of equals; reverse so the first offered wins a tie.
        .rev()
        .max_by_key(|(s, _)| *s)
        .map(|(_, c)| H264Candidate {
            pt: c.pt,
            fmtp: c.fmtp.clone(),
        })
        .ok_or_else(|| {
            if offered.is_empty() {
                SdpError::NoH264("none".into())
            } else {
                SdpError::NoH264(offered.join(", "))
            }
        })
}

fn fmtp_of(body: &[&str], pt: u8) -> Option<String> {
    body.iter().find_map(|l| {
        let (p, params) = l.strip_prefix("a=fmtp:")?.split_once(char::is_whitespace)?;
        (p.parse::<u8>().ok()? == pt).then(|| params.trim().to_owned())
    })
}

/// Higher is better; None means we cannot send on this payload type.
fn score(c: &H264Candidate) -> Option<u8> {
    let Some(fmtp) = &c.fmtp else { return Some(1) };
    let param = |key: &str| {
        fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(key)
                .then(|| v.trim().to_owned())
        })
    };
    if param("packetization-mode").as_deref() != Some("1") {
        return None;
    }
    let profile = param("profile-level-id")
        .filter(|p| p.len() == 6)
        .and_then(|p| p.get(..4).map(str::to_ascii_lowercase));
    Some(match profile.as_deref() {
        Some("42e0") => 5,
        Some("4200") => 4,
        _ => 3,
    })
}

/// Rebuilds the offer with only `pt` left in the video section, carrying [`H264_FMTP`].
fn rewrite(lines: &[&str], video: &Section, pt: u8) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
    for (i, line) in lines.iter().enumerate() {
        if i == video.start {
            // m=video <port> <proto> <fmt...>: keep the first three fields, one format.
            let head: Vec<&str> = line.split_whitespace().take(3).collect();
            let _ = write!(out, "{} {pt}\r\n", head.join(" "));
            continue;
        }
        if i > video.start
            && i < video.end
            && let Some(line_pt) = payload_type_attribute(line)
        {
            {
                if line_pt != pt {
                    continue;
                }
                if line.starts_with("a=fmtp:") {
                    // Replaced below, right after the rtpmap.
                    continue;
                }
                out.push_str(line);
                out.push_str("\r\n");
                if line.starts_with("a=rtpmap:") {
                    let _ = write!(out, "a=fmtp:{pt} {H264_FMTP}\r\n");
                }
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// The payload type an `a=rtpmap:`, `a=fmtp:` or `a=rtcp-fb:` line is about.
fn payload_type_attribute(line: &str) -> Option<u8> {
    let rest = line
        .strip_prefix("a=rtpmap:")
        .or_else(|| line.strip_prefix("a=fmtp:"))
        .or_else(|| line.strip_prefix("a=rtcp-fb:"))?;
    rest.split(|c: char| c.is_whitespace()).next()?.parse().ok()
}

/// Puts the answer's candidates where a viewer looks for them.
///
/// The stack writes every candidate into the *first* m-section. When the viewer also offered
/// audio, that section is audio — which we reject (port 0) — while the transport is the
/// bundled video section, so a strict viewer (Alexa) would find no candidate at all. This moves
/// `a=candidate` / `a=end-of-candidates` out of rejected sections into every accepted one.
pub fn place_candidates(answer: &str) -> String {
    let lines: Vec<&str> = answer.lines().map(|l| l.trim_end_matches('\r')).collect();
    let is_candidate =
        |l: &str| l.starts_with("a=candidate:") || l.starts_with("a=end-of-candidates");
    let candidates: Vec<&str> = lines.iter().copied().filter(|l| is_candidate(l)).collect();
    let sections = split_sections(&lines);
    let accepted = |s: &Section| {
        lines[s.start]
            .split_whitespace()
            .nth(1)
            .is_some_and(|port| port != "0")
    };
    if candidates.is_empty() || sections.iter().all(|s| !accepted(s)) {
        return answer.to_owned();
    }
    let mut out = String::with_capacity(answer.len() + 128 * candidates.len());
    let session_end = sections.first().map_or(lines.len(), |s| s.start);
    for line in &lines[..session_end] {
        out.push_str(line);
        out.push_str("\r\n");
    }
    for s in &sections {
        let body = lines[s.start..s.end].iter().filter(|l| !is_candidate(l));
        for line in body {
            out.push_str(line);
            out.push_str("\r\n");
        }
        if accepted(s) {
            for c in &candidates {
                out.push_str(c);
                out.push_str("\r\n");
            }
        }
    }
    out
}

/// Counts `a=candidate:` lines: a non-trickle answer must carry at least one.
pub fn candidate_count(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.trim_start().starts_with("a=candidate:"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
a=ice-options:trickle\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 127\r\nc=IN IP4 0.0.0.0\r\n\
a=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\na=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:103 H264/90000\r\na=rtcp-fb:103 nack\r\na=rtcp-fb:103 nack pli\r\n\
a=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    const ALEXA_LIKE: &str = "v=0\r\no=- 1234567890 1234567890 IN IP4 0.0.0.0\r\ns=a 2 z\r\nc=IN IP4 0.0.0.0\r\n\
t=0 0\r\na=group:BUNDLE audio0 video0\r\nm=audio 1 UDP/TLS/RTP/SAVPF 96 0 8\r\n\
a=candidate:1 1 UDP 2013266431 192.0.2.10 50000 typ host\r\na=setup:actpass\r\n\
a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtcp-mux\r\n\
a=sendrecv\r\na=mid:audio0\r\nm=video 1 UDP/TLS/RTP/SAVPF 99\r\n\
a=candidate:1 1 UDP 2013266431 192.0.2.10 50002 typ host\r\nb=AS:2500\r\na=setup:actpass\r\n\
a=rtpmap:99 H264/90000\r\na=rtcp-mux\r\na=sendrecv\r\na=mid:video0\r\na=rtcp-fb:99 nack\r\n\
a=rtcp-fb:99 nack pli\r\na=rtcp-fb:99 ccm fir\r\n";

    #[test]
    fn picks_constrained_baseline_mode_1_and_drops_the_rest() {
        let p = prepare_offer(CHROME_LIKE).unwrap();
        assert_eq!(p.video_payload_type, 127);
        assert!(p.trickle);
        assert_eq!(p.video_mid.as_deref(), Some("0"));
        assert!(p.sdp.contains("m=video 9 UDP/TLS/RTP/SAVPF 127\r\n"));
        assert!(p.sdp.contains(&format!("a=fmtp:127 {H264_FMTP}\r\n")));
        for gone in [
            "a=rtpmap:96",
            "a=rtpmap:97",
            "a=fmtp:97",
            "a=rtpmap:102",
            "a=fmtp:103",
        ] {
            assert!(!p.sdp.contains(gone), "{gone} should be removed");
        }
        assert_eq!(p.sdp.matches("a=fmtp:").count(), 1);
    }

    #[test]
    fn alexa_offer_without_fmtp_gets_explicit_mode_1_and_no_trickle() {
        let p = prepare_offer(ALEXA_LIKE).unwrap();
        assert_eq!(p.video_payload_type, 99);
        assert!(!p.trickle, "Alexa offers never trickle");
        assert_eq!(p.video_mid.as_deref(), Some("video0"));
        assert!(p.sdp.contains(&format!("a=fmtp:99 {H264_FMTP}\r\n")));
        assert!(p.sdp.contains("a=rtcp-fb:99 ccm fir"));
        // The audio section is left alone.
        assert!(p.sdp.contains("m=audio 1 UDP/TLS/RTP/SAVPF 96 0 8\r\n"));
        assert!(p.sdp.contains("a=rtpmap:96 opus/48000/2"));
    }

    #[test]
    fn lf_only_offers_are_accepted() {
        let lf = ALEXA_LIKE.replace("\r\n", "\n");
        assert_eq!(prepare_offer(&lf).unwrap().video_payload_type, 99);
    }

    #[test]
    fn media_level_trickle_counts() {
        let offer = ALEXA_LIKE.replace(
            "a=mid:video0\r\n",
            "a=mid:video0\r\na=ice-options:trickle\r\n",
        );
        assert!(prepare_offer(&offer).unwrap().trickle);
    }

    #[test]
    fn refuses_offers_we_cannot_serve() {
        assert_eq!(prepare_offer(""), Err(SdpError::Empty));
        assert_eq!(prepare_offer("hello"), Err(SdpError::NotSdp));
        assert_eq!(
            prepare_offer("v=0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"),
            Err(SdpError::NoVideo)
        );
        let vp8_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(
            prepare_offer(vp8_only),
            Err(SdpError::NoH264("VP8/90000".into()))
        );
        let mode0 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=0;profile-level-id=42e01f\r\n";
        assert!(matches!(prepare_offer(mode0), Err(SdpError::NoH264(_))));
        let big = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_OFFER_BYTES / 4));
        assert!(matches!(prepare_offer(&big), Err(SdpError::TooLarge(_))));
    }

    #[test]
    fn hostile_lines_do_not_panic() {
        for offer in [
            "v=0\r\nm=\r\n",
            "v=0\r\nm=video\r\n",
            "v=0\r\nm=video 9 X 300 -1 abc\r\na=rtpmap:\r\na=rtpmap:96\r\na=fmtp:96\r\n",
            "v=0\r\nm=video 9 X 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 ;;==;packetization-mode\r\n",
            "v=0\r\nm=video 9 X 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=aé€\r\n",
        ] {
            let _ = prepare_offer(offer);
        }
    }

    #[test]
    fn candidates_move_from_a_rejected_section_to_the_accepted_one() {
        let answer = "v=0\r\ns=-\r\na=group:BUNDLE video0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\n\
a=mid:audio0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 99\r\na=mid:video0\r\na=sendonly\r\n";
        let placed = place_candidates(answer);
        let (audio, video) = placed.split_once("m=video").unwrap();
        assert!(!audio.contains("a=candidate"), "{placed}");
        assert!(
            video.contains(
                "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
            ),
            "{placed}"
        );
        assert_eq!(candidate_count(&placed), 1);
        // Already right: unchanged but for line endings.
        let video_only =
            "v=0\r\nm=video 9 X 99\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\n";
        assert_eq!(place_candidates(video_only), video_only);
    }

    #[test]
    fn counts_candidates() {
        assert_eq!(candidate_count(ALEXA_LIKE), 2);
        assert_eq!(candidate_count(CHROME_LIKE), 0);
    }
}
