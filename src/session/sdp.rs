//! SDP policy for answering a viewer's offer (sans-IO).
//!
//! The `webrtc` crate answers with *every* offered codec that matches what we registered, each
//! with the offerer's fmtp. That is wrong for a camera: we send exactly one H.264 stream
//! (constrained baseline, packetization-mode 1) and one audio stream, and the answer must say
//! so — Alexa offers H.264 with no fmtp at all and needs an explicit `packetization-mode=1`
//! back, and browsers offer half a dozen H.264 variants. So before the offer reaches the stack
//! we pick the one video payload type we will send on (and give it our fmtp) and the one audio
//! codec (Opus, else PCMU, else PCMA), drop the other payload types from those sections, and add
//! the `a=rtpmap` lines that static payload types may lack (older Alexa offers list `0 8`
//! without them, and the stack refuses such offers). The answer then carries exactly those
//! payload types, in the offer's sections and mids.
//!
//! After the stack answers, [`finish_answer`] shapes it for strict viewers (Alexa's checklist:
//! candidates in every section, no trickle option in a complete answer, CRLF; the fingerprint
//! per section too), and [`fit_answer`] keeps it under a size limit (KVS's 10 000 characters).

use std::fmt::Write as _;

/// The fmtp we answer with before the stream's first SPS is known: constrained baseline,
/// level 3.1 (what our encoders are configured for), single NAL + FU-A.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// The fmtp for the stream we really send: its `profile-level-id` (from the packetizer's last
/// SPS; a passed-through camera may send Main or High) or, before the first SPS, [`H264_FMTP`].
pub fn h264_fmtp(profile_level_id: Option<u32>) -> String {
    match profile_level_id {
        Some(id) => format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={:06x}",
            id & 0xff_ff_ff
        ),
        None => H264_FMTP.to_owned(),
    }
}

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
    #[error(
        "offer has no video m-line; camgate is a camera and always sends video (audio-only offers are not served)"
    )]
    NoVideo,
    #[error(
        "offer has no usable H.264 payload type (need H264/90000 with packetization-mode=1); offered video codecs: {0}"
    )]
    NoH264(String),
}

/// The `profile-level-id` of the H.264 stream being sent, shared between the packetizer
/// (which sees every SPS) and the session layer (which declares it in answers). 0 = unknown.
#[derive(Debug, Clone, Default)]
pub struct ProfileLevelId(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl ProfileLevelId {
    pub fn set(&self, id: u32) {
        self.0
            .store(id & 0xff_ff_ff, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<u32> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }
}

/// An audio codec we can send and receive. One type for the whole daemon: capture, fan-out,
/// SDP and talkback all speak of these three.
pub use crate::media::audio::AudioCodec;

/// Which way media flows in one m-section, from the point of view of the side that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction attribute of a section (RFC 8866 §6.7; sendrecv when absent).
    fn of(section: &[&str]) -> Direction {
        section
            .iter()
            .find_map(|l| match *l {
                "a=sendrecv" => Some(Direction::SendRecv),
                "a=sendonly" => Some(Direction::SendOnly),
                "a=recvonly" => Some(Direction::RecvOnly),
                "a=inactive" => Some(Direction::Inactive),
                _ => None,
            })
            .unwrap_or(Direction::SendRecv)
    }

    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_flags(send: bool, receive: bool) -> Direction {
        match (send, receive) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// Our answer's direction for a section the viewer offered as `offered`: we send only what we
/// have and the viewer wants, and receive only what we can play and the viewer sends.
///
/// With audio and talkback: sendrecv; audio only: sendonly; talkback only: recvonly;
/// neither: inactive (the section stays in the answer and in the BUNDLE, carrying nothing).
pub fn answer_direction(offered: Direction, we_send: bool, we_receive: bool) -> Direction {
    Direction::from_flags(we_send && offered.receives(), we_receive && offered.sends())
}

/// The audio section we will answer, when the viewer offered one with a codec we handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChoice {
    /// What we send and expect back: Opus when offered, else PCMU, else PCMA.
    pub codec: AudioCodec,
    /// The viewer's payload type for `codec`: what we stamp on audio we send, and what the
    /// viewer stamps on talkback.
    pub payload_type: u8,
    /// The section's `a=mid` (Alexa: `audio0`), to find its transceiver after negotiation.
    pub mid: Option<String>,
    /// What the viewer said it does with audio.
    pub offered: Direction,
}

/// What becomes of the offer's (first) audio section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPlan {
    /// The viewer offered no audio.
    NotOffered,
    /// Offered, but with no codec we handle: the stack answers it with port 0 and the rest of
    /// the answer (video, bundle, candidates) is unaffected. The text says what was offered.
    Rejected(String),
    Chosen(AudioChoice),
}

/// What the session layer needs to know about an offer, and the offer rewritten for the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedOffer {
    /// The offer with one H.264 payload type left in the first video section, one audio
    /// payload type left in the first audio section, and the static payload types' missing
    /// `a=rtpmap` lines added (the stack refuses offers without them).
    pub sdp: String,
    /// The payload type every video packet to this viewer carries.
    pub video_payload_type: u8,
    /// The fmtp of that payload type, in the rewritten offer and in the answer.
    pub video_fmtp: String,
    /// The viewer gave that payload type no fmtp (Alexa): it named no profile, so it may
    /// expect constrained baseline.
    pub video_profile_unstated: bool,
    /// The offer has `a=ice-options:trickle` (session or media level): we may answer before
    /// gathering ends and send candidates afterwards. Alexa's offers do not.
    pub trickle: bool,
    /// The `a=mid` of the chosen video section.
    pub video_mid: Option<String>,
    /// The m-line index of the video section.
    pub video_index: usize,
    /// The m-line index of the audio section, and whether it comes before the video one.
    pub audio_index: Option<usize>,
    /// What becomes of the viewer's audio section.
    pub audio: AudioPlan,
}

impl PreparedOffer {
    /// The (mid, m-line index) trickled candidates are tagged with: the first section we
    /// accept, which carries the bundled transport.
    pub fn candidate_section(&self) -> (Option<String>, u16) {
        let index = |i: usize| u16::try_from(i).unwrap_or(u16::MAX);
        match (&self.audio, self.audio_index) {
            (AudioPlan::Chosen(c), Some(a)) if a < self.video_index => (c.mid.clone(), index(a)),
            _ => (self.video_mid.clone(), index(self.video_index)),
        }
    }
}

/// One `m=` section of the offer, as line indices into the offer.
struct Section {
    /// Line index of the `m=` line.
    start: usize,
    /// One past the section's last line.
    end: usize,
    /// `audio`, `video`, `application`, lower case.
    kind: String,
    /// The m-line's formats that are RTP payload types (0..=127), each once.
    payload_types: Vec<u8>,
    /// Port 0: the offerer disabled the section (unless it is `a=bundle-only`).
    port_zero: bool,
}

/// One H.264 payload type offered in the video section, with what we know of it.
#[derive(Debug)]
struct H264Candidate {
    pt: u8,
    fmtp: Option<String>,
}

/// RFC 3551 static audio payload types, for offers that list them without `a=rtpmap`.
const STATIC_AUDIO: &[(u8, &str)] = &[
    (0, "PCMU/8000"),
    (3, "GSM/8000"),
    (4, "G723/8000"),
    (8, "PCMA/8000"),
    (9, "G722/8000"),
    (13, "CN/8000"),
    (18, "G729/8000"),
];

/// [`prepare_offer_for`] before the stream's profile is known.
pub fn prepare_offer(offer: &str) -> Result<PreparedOffer, SdpError> {
    prepare_offer_for(offer, None)
}

/// Checks an offer, chooses the payload types, and rewrites the offer (see module doc).
/// `sending` is the `profile-level-id` of the H.264 stream we send, when known.
pub fn prepare_offer_for(offer: &str, sending: Option<u32>) -> Result<PreparedOffer, SdpError> {
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
    let chosen = choose_h264(video, body, sending.map(|id| (id >> 16) as u8))?;
    let video_fmtp = h264_fmtp(sending);

    let session_end = sections.first().map_or(lines.len(), |s| s.start);
    let trickle = lines[..session_end]
        .iter()
        .chain(sections.iter().flat_map(|s| &lines[s.start..s.end]))
        .any(|l| is_trickle_option(l));
    let video_mid = mid_of(body);

    let audio_section = sections.iter().find(|s| s.kind == "audio");
    let audio = match audio_section {
        None => AudioPlan::NotOffered,
        Some(a) if a.port_zero && !lines[a.start + 1..a.end].contains(&"a=bundle-only") => {
            AudioPlan::Rejected("the viewer disabled its audio section (port 0)".into())
        }
        Some(a) => choose_audio(a, &lines[a.start + 1..a.end]),
    };
    let video_index = sections
        .iter()
        .position(|s| s.start == video.start)
        .unwrap_or(0);
    let audio_pt = match &audio {
        AudioPlan::Chosen(c) => Some(c.payload_type),
        _ => None,
    };

    let sdp = rewrite(
        &lines,
        video,
        chosen.pt,
        &video_fmtp,
        audio_section,
        audio_pt,
    );
    let audio_index = audio_section.and_then(|a| sections.iter().position(|s| s.start == a.start));
    Ok(PreparedOffer {
        sdp,
        video_payload_type: chosen.pt,
        video_fmtp,
        video_profile_unstated: chosen.fmtp.is_none(),
        trickle,
        video_mid,
        video_index,
        audio_index,
        audio,
    })
}

/// The codec (and its payload type) we answer an audio section with: Opus, else PCMU, else
/// PCMA. Static payload types count even without an `a=rtpmap` line.
fn choose_audio(section: &Section, body: &[&str]) -> AudioPlan {
    let mut offered: Vec<(u8, String)> = Vec::new();
    for &pt in &section.payload_types {
        let mapped = body.iter().find_map(|l| {
            let (p, codec) = l
                .strip_prefix("a=rtpmap:")?
                .split_once(char::is_whitespace)?;
            (p.parse::<u8>().ok()? == pt).then(|| codec.trim().to_owned())
        });
        let name = mapped.or_else(|| {
            STATIC_AUDIO
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, c)| (*c).to_owned())
        });
        if let Some(name) = name {
            offered.push((pt, name));
        }
    }
    let find = |want: &str| {
        offered.iter().find(|(_, name)| {
            let lower = name.to_ascii_lowercase();
            lower == want || lower.starts_with(&format!("{want}/"))
        })
    };
    let pick = find("opus/48000")
        .map(|(pt, _)| (AudioCodec::Opus, *pt))
        .or_else(|| find("pcmu/8000").map(|(pt, _)| (AudioCodec::Pcmu, *pt)))
        .or_else(|| find("pcma/8000").map(|(pt, _)| (AudioCodec::Pcma, *pt)));
    match pick {
        Some((codec, payload_type)) => AudioPlan::Chosen(AudioChoice {
            codec,
            payload_type,
            mid: mid_of(body),
            offered: Direction::of(body),
        }),
        None => {
            let names: Vec<&str> = offered.iter().map(|(_, n)| n.as_str()).collect();
            AudioPlan::Rejected(format!(
                "no Opus, PCMU or PCMA in the audio section (offered: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
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
            let port_zero = fields.next() == Some("0");
            let mut payload_types: Vec<u8> = Vec::new();
            for pt in fields.skip(1).filter_map(|f| f.parse::<u8>().ok()) {
                if pt <= 127 && !payload_types.contains(&pt) {
                    payload_types.push(pt);
                }
            }
            sections.push(Section {
                start: i,
                end: lines.len(),
                kind,
                payload_types,
                port_zero,
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
/// packetizer emits FU-A and STAP-A. Above all that, an entry whose profile is the one we
/// send (`profile_idc`, when known: a passed-through camera may send High) wins, so the answer
/// declares what really arrives. Ties go to the offerer's order, which is its preference.
fn choose_h264(
    video: &Section,
    body: &[&str],
    profile_idc: Option<u8>,
) -> Result<H264Candidate, SdpError> {
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
        .filter_map(|c| score(c, profile_idc).map(|s| (s, c)))
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
fn score(c: &H264Candidate, ours: Option<u8>) -> Option<u8> {
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
    let same_profile = match (ours, profile.as_deref().and_then(|p| p.get(..2))) {
        (Some(ours), Some(theirs)) => u8::from_str_radix(theirs, 16).ok() == Some(ours),
        _ => false,
    };
    let base = match profile.as_deref() {
        Some("42e0") => 5,
        Some("4200") => 4,
        _ => 3,
    };
    Some(if same_profile { base + 10 } else { base })
}

/// Rebuilds the offer: only `video_pt` left in the video section, carrying `video_fmtp`;
/// only `audio_pt` (when one was chosen) left in the audio section; and in the audio section,
/// `a=rtpmap` lines for static payload types that had none.
fn rewrite(
    lines: &[&str],
    video: &Section,
    video_pt: u8,
    video_fmtp: &str,
    audio: Option<&Section>,
    audio_pt: Option<u8>,
) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 2).sum::<usize>() + 128);
    let m_line = |out: &mut String, line: &str, pt: u8| {
        // m=<media> <port> <proto> <fmt...>: keep the first three fields, one format. The
        // fields are read after "m=" as split_sections reads them, so whitespace there
        // ("m= video") cannot shift them.
        let fields = line.strip_prefix("m=").unwrap_or(line);
        let head: Vec<&str> = fields.split_whitespace().take(3).collect();
        let _ = write!(out, "m={} {pt}\r\n", head.join(" "));
    };
    let in_section = |i: usize, s: &Section| i > s.start && i < s.end;
    for (i, line) in lines.iter().enumerate() {
        if i == video.start {
            m_line(&mut out, line, video_pt);
            continue;
        }
        if in_section(i, video)
            && let Some(line_pt) = payload_type_attribute(line)
        {
            if line_pt != video_pt || line.starts_with("a=fmtp:") {
                // Other payload types go; our fmtp replaces the offer's, right after the rtpmap.
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
            if line.starts_with("a=rtpmap:") {
                let _ = write!(out, "a=fmtp:{video_pt} {video_fmtp}\r\n");
            }
            continue;
        }
        if let Some(a) = audio {
            if i == a.start {
                match audio_pt {
                    Some(pt) => m_line(&mut out, line, pt),
                    None => {
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                }
                add_static_rtpmaps(&mut out, lines, a, audio_pt);
                continue;
            }
            if in_section(i, a)
                && let (Some(line_pt), Some(pt)) = (payload_type_attribute(line), audio_pt)
                && line_pt != pt
            {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// Writes `a=rtpmap` lines for the section's static payload types that have none (only for
/// `only` when set), right after its m-line.
fn add_static_rtpmaps(out: &mut String, lines: &[&str], section: &Section, only: Option<u8>) {
    let body = &lines[section.start + 1..section.end];
    for &pt in &section.payload_types {
        if only.is_some_and(|o| o != pt) {
            continue;
        }
        let mapped = body.iter().any(|l| {
            l.strip_prefix("a=rtpmap:")
                .and_then(|r| r.split(char::is_whitespace).next())
                .and_then(|p| p.parse::<u8>().ok())
                == Some(pt)
        });
        if mapped {
            continue;
        }
        if let Some((_, name)) = STATIC_AUDIO.iter().find(|(p, _)| *p == pt) {
            let _ = write!(out, "a=rtpmap:{pt} {name}\r\n");
        }
    }
}

/// The payload type an `a=rtpmap:`, `a=fmtp:` or `a=rtcp-fb:` line is about.
fn payload_type_attribute(line: &str) -> Option<u8> {
    let rest = line
        .strip_prefix("a=rtpmap:")
        .or_else(|| line.strip_prefix("a=fmtp:"))
        .or_else(|| line.strip_prefix("a=rtcp-fb:"))?;
    rest.split(|c: char| c.is_whitespace()).next()?.parse().ok()
}

/// Shapes the stack's answer for the viewer (sans-IO).
///
/// - Every candidate goes into every accepted (port ≠ 0) m-section. The stack writes them into
///   the first section only; when that section is rejected, a strict viewer (Alexa) would find
///   none, and repeating them is what the checklist in the reference asks for.
/// - A complete (non-trickle) answer says so: no `a=ice-options:trickle` (Alexa rejects
///   trickle), and `a=end-of-candidates` in each accepted section.
/// - The DTLS fingerprint is repeated in every m-section (the stack writes it once at session
///   level). Both places are valid SDP; Alexa's own offers carry it per section, and strict
///   parsers that only look at media level then find it.
/// - CRLF line endings throughout.
pub fn finish_answer(answer: &str, trickle: bool) -> String {
    let lines: Vec<&str> = answer.lines().map(|l| l.trim_end_matches('\r')).collect();
    let is_candidate =
        |l: &str| l.starts_with("a=candidate:") || l.starts_with("a=end-of-candidates");
    let drop_line = |l: &str| is_candidate(l) || (!trickle && is_trickle_option(l));
    let candidates: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let sections = split_sections(&lines);
    let mut out = String::with_capacity(answer.len() + 128 * candidates.len() * 2);
    let session_end = sections.first().map_or(lines.len(), |s| s.start);
    for line in lines[..session_end].iter().filter(|l| !drop_line(l)) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    let session_fingerprints: Vec<&str> = lines[..session_end]
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=fingerprint:"))
        .collect();
    for s in &sections {
        let body = &lines[s.start..s.end];
        for line in body.iter().filter(|l| !drop_line(l)) {
            out.push_str(line);
            out.push_str("\r\n");
        }
        if !body.iter().any(|l| l.starts_with("a=fingerprint:")) {
            for f in &session_fingerprints {
                out.push_str(f);
                out.push_str("\r\n");
            }
        }
        if accepted(&lines, s) {
            for c in &candidates {
                out.push_str(c);
                out.push_str("\r\n");
            }
            if !trickle {
                out.push_str("a=end-of-candidates\r\n");
            }
        }
    }
    out
}

fn accepted(lines: &[&str], s: &Section) -> bool {
    lines[s.start]
        .split_whitespace()
        .nth(1)
        .is_some_and(|port| port != "0")
}

/// One `a=candidate` line, parsed as far as pruning needs.
struct CandidateLine<'a> {
    component: &'a str,
    priority: u64,
    typ: &'a str,
}

impl<'a> CandidateLine<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        // a=candidate:<foundation> <component> <transport> <priority> <ip> <port> typ <type> ...
        let mut f = line.strip_prefix("a=candidate:")?.split_whitespace();
        let _foundation = f.next()?;
        let component = f.next()?;
        let _transport = f.next()?;
        let priority = f.next()?.parse().ok()?;
        let typ = f.skip(2).skip_while(|w| *w != "typ").nth(1)?;
        Some(CandidateLine {
            component,
            priority,
            typ,
        })
    }
}

/// Makes an answer fit a size limit (`fits`, e.g. KVS's 10 000 base64 characters) instead of
/// refusing to answer: first candidates stop being repeated after the first accepted section,
/// then the lowest-priority candidates go, one at a time. Relay candidates and the best host
/// candidate of each component always stay. Returns the smallest answer reached; the caller
/// still checks it, as a pathological answer may not fit even then.
pub fn fit_answer(answer: &str, fits: impl Fn(&str) -> bool) -> String {
    if fits(answer) {
        return answer.to_owned();
    }
    let lines: Vec<&str> = answer.lines().map(|l| l.trim_end_matches('\r')).collect();
    let sections = split_sections(&lines);
    let first_accepted = sections.iter().position(|s| accepted(&lines, s));
    // Step 1: candidates only in the first accepted section.
    let keep_in =
        |idx: usize, section_of_line: Option<usize>| match (section_of_line, first_accepted) {
            (Some(s), Some(first)) => s == first || !lines[idx].starts_with("a=candidate:"),
            _ => true,
        };
    let section_of = |i: usize| sections.iter().position(|s| i >= s.start && i < s.end);
    let mut kept: Vec<usize> = (0..lines.len())
        .filter(|&i| keep_in(i, section_of(i)))
        .collect();
    let render = |kept: &[usize]| {
        let mut out = String::with_capacity(answer.len());
        for &i in kept {
            out.push_str(lines[i]);
            out.push_str("\r\n");
        }
        out
    };
    let mut best = render(&kept);
    if fits(&best) {
        return best;
    }
    // Step 2: drop the least useful candidates first: RTCP (component 2) ones, which
    // rtcp-mux makes redundant (the stack lists every candidate for both components), then
    // surplus host candidates, then surplus server-reflexive ones; within each, the lowest
    // priority first. Relay candidates, the best host of each component and the best srflx
    // are never dropped.
    let parsed: Vec<(usize, CandidateLine<'_>)> = kept
        .iter()
        .filter_map(|&i| CandidateLine::parse(lines[i]).map(|c| (i, c)))
        .collect();
    let best_of = |typ: &str, component: &str| {
        parsed
            .iter()
            .filter(|(_, c)| c.typ == typ && c.component == component)
            .max_by_key(|(i, c)| (c.priority, std::cmp::Reverse(*i)))
            .map(|(i, _)| *i)
    };
    let mut protected: Vec<usize> = Vec::new();
    for (_, c) in &parsed {
        protected.extend(best_of("host", c.component));
    }
    protected.extend(best_of("srflx", "1"));
    let mut droppable: Vec<((u8, u8, u64), usize)> = parsed
        .iter()
        .filter(|(i, c)| c.typ != "relay" && !protected.contains(i))
        .map(|(i, c)| {
            let rtcp = u8::from(c.component == "1");
            let kind = u8::from(c.typ != "host");
            ((rtcp, kind, c.priority), *i)
        })
        .collect();
    droppable.sort_unstable();
    for (_, victim) in droppable {
        kept.retain(|&i| i != victim);
        best = render(&kept);
        if fits(&best) {
            break;
        }
    }
    best
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

    /// Found by fuzzing (fuzz/corpus/sdp_offer/regression-m-line-space): whitespace after
    /// "m=" shifted the fields of the rewritten m-line, which lost its protocol and payload
    /// type, so the stack would have been handed an offer with no H.264 left.
    #[test]
    fn whitespace_after_m_equals_keeps_the_rewritten_m_line_whole() {
        let offer = "v=0\r\nm=\rvideo 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 H264/90000\r\n\
                     a=fmtp:96 packetization-mode=1\r\n";
        let p = prepare_offer(offer).unwrap();
        assert!(
            p.sdp.contains("\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"),
            "{}",
            p.sdp
        );
        assert_eq!(prepare_offer(&p.sdp).unwrap().video_payload_type, 96);
    }

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
        // Opus is chosen and the other audio payload types go.
        assert_eq!(
            p.audio,
            AudioPlan::Chosen(AudioChoice {
                codec: AudioCodec::Opus,
                payload_type: 96,
                mid: Some("audio0".into()),
                offered: Direction::SendRecv,
            })
        );
        assert!(
            p.sdp.contains("m=audio 1 UDP/TLS/RTP/SAVPF 96\r\n"),
            "{}",
            p.sdp
        );
        assert!(p.sdp.contains("a=rtpmap:96 opus/48000/2"));
        assert!(!p.sdp.contains("a=rtpmap:0 ") && !p.sdp.contains("a=rtpmap:8 "));
    }

    #[test]
    fn static_payload_types_without_rtpmap_get_one() {
        // Older Alexa offers: "96 0 8" with rtpmap for 96 only; a G.711-only viewer.
        let no_maps = ALEXA_LIKE
            .replace("a=rtpmap:0 PCMU/8000\r\n", "")
            .replace("a=rtpmap:8 PCMA/8000\r\n", "");
        let p = prepare_offer(&no_maps).unwrap();
        assert!(matches!(&p.audio, AudioPlan::Chosen(c) if c.codec == AudioCodec::Opus));
        let pcmu_only = no_maps
            .replace(
                "m=audio 1 UDP/TLS/RTP/SAVPF 96 0 8",
                "m=audio 1 RTP/SAVPF 0 8",
            )
            .replace("a=rtpmap:96 opus/48000/2\r\n", "");
        let p = prepare_offer(&pcmu_only).unwrap();
        assert!(
            matches!(&p.audio, AudioPlan::Chosen(c) if c.codec == AudioCodec::Pcmu && c.payload_type == 0),
            "{:?}",
            p.audio
        );
        assert!(
            p.sdp
                .contains("m=audio 1 RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n"),
            "{}",
            p.sdp
        );
        let pcma_only = pcmu_only.replace("RTP/SAVPF 0 8", "RTP/SAVPF 8");
        let p = prepare_offer(&pcma_only).unwrap();
        assert!(
            matches!(&p.audio, AudioPlan::Chosen(c) if c.codec == AudioCodec::Pcma && c.payload_type == 8)
        );
        assert!(p.sdp.contains("a=rtpmap:8 PCMA/8000\r\n"));
    }

    #[test]
    fn unknown_audio_codecs_are_rejected_but_the_offer_is_answered() {
        let g722 = ALEXA_LIKE.replace("96 0 8", "9 101").replace(
            "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n",
            "a=rtpmap:101 telephone-event/8000\r\n",
        );
        let p = prepare_offer(&g722).unwrap();
        match &p.audio {
            AudioPlan::Rejected(why) => {
                assert!(
                    why.contains("G722/8000") && why.contains("telephone-event"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        // The static type got its rtpmap so the stack can parse (and reject) the section.
        assert!(p.sdp.contains("a=rtpmap:9 G722/8000\r\n"));
        assert_eq!(p.video_payload_type, 99);
        let none = prepare_offer(CHROME_LIKE).unwrap();
        assert_eq!(none.audio, AudioPlan::NotOffered);
    }

    #[test]
    fn disabled_audio_sections_and_odd_payload_lists() {
        let off = ALEXA_LIKE.replace("m=audio 1 UDP", "m=audio 0 UDP");
        assert!(matches!(
            prepare_offer(&off).unwrap().audio,
            AudioPlan::Rejected(_)
        ));
        let bundle_only = off.replace("a=mid:audio0\r\n", "a=mid:audio0\r\na=bundle-only\r\n");
        assert!(matches!(
            prepare_offer(&bundle_only).unwrap().audio,
            AudioPlan::Chosen(_)
        ));
        // Repeated and out-of-range payload types: one rtpmap each, nothing above 127.
        let odd = ALEXA_LIKE
            .replace("96 0 8", "96 0 0 200 8")
            .replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "");
        let p = prepare_offer_for(&odd, None).unwrap();
        assert!(matches!(&p.audio, AudioPlan::Chosen(c) if c.payload_type == 96));
        let pcmu = odd
            .replace("96 0 0 200 8", "0 0 200")
            .replace("a=rtpmap:96 opus/48000/2\r\n", "");
        let p = prepare_offer(&pcmu).unwrap();
        assert_eq!(
            p.sdp.matches("a=rtpmap:0 PCMU/8000").count(),
            1,
            "{}",
            p.sdp
        );
        // Trickled candidates are tagged with the first accepted section.
        assert_eq!(
            prepare_offer(ALEXA_LIKE).unwrap().candidate_section(),
            (Some("audio0".into()), 0)
        );
        assert_eq!(
            prepare_offer(&off).unwrap().candidate_section(),
            (Some("video0".into()), 1)
        );
    }

    #[test]
    fn directions_follow_what_we_have_and_what_the_viewer_offers() {
        use Direction::*;
        assert_eq!(answer_direction(SendRecv, true, true), SendRecv);
        assert_eq!(answer_direction(SendRecv, true, false), SendOnly);
        assert_eq!(answer_direction(SendRecv, false, true), RecvOnly);
        assert_eq!(answer_direction(SendRecv, false, false), Inactive);
        assert_eq!(answer_direction(RecvOnly, true, true), SendOnly);
        assert_eq!(answer_direction(SendOnly, true, true), RecvOnly);
        assert_eq!(answer_direction(Inactive, true, true), Inactive);
        assert_eq!(Direction::of(&["a=mid:0"]), SendRecv);
        assert_eq!(Direction::of(&["a=recvonly"]), RecvOnly);
    }

    #[test]
    fn a_passed_through_high_profile_stream_is_declared_as_such() {
        let offer = CHROME_LIKE.replace(
            "a=rtpmap:127 H264/90000\r\n",
            "a=rtpmap:125 H264/90000\r\na=fmtp:125 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\na=rtpmap:127 H264/90000\r\n",
        ).replace("96 97 102 103 127", "96 97 102 103 125 127");
        let p = prepare_offer_for(&offer, Some(0x64_00_28)).unwrap();
        assert_eq!(
            p.video_payload_type, 125,
            "the High entry matches what we send"
        );
        assert!(p.sdp.contains("a=fmtp:125 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640028\r\n"), "{}", p.sdp);
        // Constrained baseline streams keep preferring the 42e0 entry.
        let p = prepare_offer_for(&offer, Some(0x42_e0_1e)).unwrap();
        assert_eq!(p.video_payload_type, 127);
        assert!(p.video_fmtp.ends_with("profile-level-id=42e01e"));
        // Alexa (no fmtp) gets the real profile too.
        let p = prepare_offer_for(ALEXA_LIKE, Some(0x4d_40_1f)).unwrap();
        assert!(p.sdp.contains(
            "a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d401f\r\n"
        ));
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
        let placed = finish_answer(answer, true);
        let (audio, video) = placed.split_once("m=video").unwrap();
        assert!(!audio.contains("a=candidate"), "{placed}");
        assert!(
            video.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"),
            "{placed}"
        );
        assert!(
            !placed.contains("end-of-candidates"),
            "trickling: more may follow"
        );
        assert_eq!(candidate_count(&placed), 1);
    }

    #[test]
    fn complete_answers_repeat_candidates_and_drop_trickle() {
        let answer = "v=0\ns=-\na=group:BUNDLE audio0 video0\na=ice-options:trickle\n\
m=audio 9 UDP/TLS/RTP/SAVPF 96\na=mid:audio0\na=ice-options:trickle\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\n\
m=video 9 UDP/TLS/RTP/SAVPF 99\na=mid:video0\n";
        let with_fp = answer.replace("s=-\n", "s=-\na=fingerprint:sha-256 AB:CD\n");
        let done = finish_answer(&with_fp, false);
        assert_eq!(
            done.matches("a=fingerprint:sha-256 AB:CD\r\n").count(),
            3,
            "{done}"
        );
        assert!(!done.contains("trickle"), "{done}");
        assert_eq!(candidate_count(&done), 2, "{done}");
        assert_eq!(done.matches("a=end-of-candidates\r\n").count(), 2);
        assert!(!done.replace("\r\n", "").contains('\n'), "CRLF only");
    }

    #[test]
    fn oversized_answers_shed_low_value_candidates_but_keep_relay_and_a_host_each() {
        let mut answer = String::from(
            "v=0\r\ns=-\r\na=group:BUNDLE audio0 video0\r\nm=audio 9 X 96\r\na=mid:audio0\r\n",
        );
        let mut cands = String::new();
        for i in 0..40u32 {
            cands.push_str(&format!(
                "a=candidate:{i} 1 udp {} 10.0.{i}.1 {} typ host\r\n",
                2_000_000_000 - i,
                40_000 + i
            ));
        }
        cands.push_str(
            "a=candidate:s 1 udp 1600000000 198.51.100.7 4000 typ srflx raddr 0.0.0.0 rport 0\r\n",
        );
        cands.push_str(
            "a=candidate:r 1 udp 10 203.0.113.9 5000 typ relay raddr 0.0.0.0 rport 0\r\n",
        );
        answer.push_str(&cands);
        answer.push_str("m=video 9 X 99\r\na=mid:video0\r\n");
        answer.push_str(&cands);
        let limit = 1_500;
        let fitted = fit_answer(&answer, |a| a.len() <= limit);
        assert!(fitted.len() <= limit, "{}", fitted.len());
        assert!(fitted.contains("typ relay"), "relay kept");
        assert!(fitted.contains("10.0.0.1 40000 typ host"), "best host kept");
        assert!(!fitted.contains("10.0.39.1"), "lowest host dropped first");
        let (_, video) = fitted.split_once("m=video").unwrap();
        assert!(
            !video.contains("a=candidate"),
            "no repeats once space runs out"
        );
        // Already small: unchanged.
        assert_eq!(fit_answer("v=0\r\n", |_| true), "v=0\r\n");

        // As the stack writes them: every candidate for components 1 and 2, same priority.
        // Component 2 goes first, then hosts; the srflx survives many hosts.
        let mut answer = String::from("v=0\r\nm=audio 9 X 96\r\na=mid:audio0\r\n");
        for i in 0..20u32 {
            for comp in [1, 2] {
                answer.push_str(&format!(
                    "a=candidate:{i} {comp} udp {} 10.1.{i}.1 5{i:03} typ host\r\n",
                    2_130_706_431 - i
                ));
            }
        }
        for comp in [1, 2] {
            answer.push_str(&format!(
                "a=candidate:s {comp} udp 1694498815 198.51.100.7 4000 typ srflx raddr 0.0.0.0 rport 0\r\n"
            ));
        }
        let fitted = fit_answer(&answer, |a| a.len() <= 700);
        assert!(fitted.len() <= 700, "{fitted}");
        assert!(
            fitted.contains("a=candidate:s 1 udp 1694498815 198.51.100.7"),
            "{fitted}"
        );
        assert!(
            fitted.contains("a=candidate:0 1 udp 2130706431 10.1.0.1"),
            "{fitted}"
        );
        assert!(
            fitted.contains("a=candidate:0 2 udp"),
            "best host of component 2 kept"
        );
        assert!(
            !fitted.contains("a=candidate:s 2 "),
            "RTCP srflx goes before any RTP one"
        );
    }

    #[test]
    fn counts_candidates() {
        assert_eq!(candidate_count(ALEXA_LIKE), 2);
        assert_eq!(candidate_count(CHROME_LIKE), 0);
    }
}
