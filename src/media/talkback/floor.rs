//! Who may talk, without GStreamer or threads: the floor (one talker at a time), the end of a
//! talk burst after silence, what to do after the output failed, and which packets are
//! garbage. The driver in `player.rs` feeds it packets, departures, faults and the current
//! time, and acts on what it returns.
//!
//! Rules:
//! - The newest talker to *start* sending (its first packet after `release_after` of silence,
//!   or its first packet ever) takes the floor, and a new talk burst begins.
//! - A talker that keeps sending while someone else holds the floor is dropped, not queued;
//!   when the floor is free (nobody holds it), the next packet from anyone takes it.
//! - The holder's burst ends after `release_after` without a packet from it, or at once when
//!   it leaves: the output is released (device closed).
//! - Within a burst only one SSRC is accepted: packets that claim another one are garbage (a
//!   browser that really changed SSRC is heard again once the old burst has timed out).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc::rtp::Packet;

use super::AudioCodec;

/// After the output failed (device unplugged, decoder kept failing), how long the holder's
/// packets are discarded before the next attempt to open it. A browser with an open
/// microphone sends without pause, so waiting for the end of its burst could mean forever.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Payloads larger than this are not audio a browser sends (an Opus packet is at most 1275
/// bytes per frame and WebRTC keeps packets under the path MTU).
pub const MAX_PAYLOAD: usize = 1500;

/// Longest Opus frame, per RFC 6716 §3.4 (R1).
const OPUS_MAX_FRAME: usize = 1275;

/// Identifies one talker for the lifetime of a `Talkback`; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TalkerId(pub u64);

/// Why a packet was rejected as garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garbage {
    /// RTP version field other than 2.
    Version(u8),
    /// Not the payload type negotiated for this talker's codec.
    PayloadType(u8),
    /// No payload at all.
    Empty,
    /// More payload than any audio packet carries.
    TooLong(usize),
    /// An Opus payload whose framing (RFC 6716 §3.2) is impossible.
    BadOpus,
    /// Another SSRC than the one the holder's burst started with.
    ForeignSsrc(u32),
}

impl std::fmt::Display for Garbage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Garbage::Version(v) => write!(f, "RTP version {v}"),
            Garbage::PayloadType(pt) => write!(f, "unexpected payload type {pt}"),
            Garbage::Empty => f.write_str("empty payload"),
            Garbage::TooLong(n) => write!(f, "payload of {n} bytes"),
            Garbage::BadOpus => f.write_str("malformed Opus payload"),
            Garbage::ForeignSsrc(s) => write!(f, "SSRC {s:#010x} is not the talker's"),
        }
    }
}

/// The checks that need no state: cheap enough for the caller's thread, so garbage never
/// takes a place in the driver's queue.
pub fn check(codec: AudioCodec, payload_type: u8, packet: &Packet) -> Result<(), Garbage> {
    let header = &packet.header;
    if header.version != 2 {
        return Err(Garbage::Version(header.version));
    }
    if header.payload_type != payload_type {
        return Err(Garbage::PayloadType(header.payload_type));
    }
    let payload = &packet.payload[..];
    if payload.is_empty() {
        return Err(Garbage::Empty);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(Garbage::TooLong(payload.len()));
    }
    match codec {
        AudioCodec::Opus if !opus_packet_is_valid(payload) => Err(Garbage::BadOpus),
        // Every byte is a valid G.711 sample: random bytes are noise, not an error.
        _ => Ok(()),
    }
}

/// Whether `p` obeys the Opus packet framing rules R1–R7 of RFC 6716 §3.4. The decoder
/// refuses exactly these packets; everything else decodes (random bytes to noise).
fn opus_packet_is_valid(p: &[u8]) -> bool {
    let Some((&toc, rest)) = p.split_first() else {
        return false;
    };
    let config = toc >> 3;
    // Frame duration in units of 2.5 ms (config table of RFC 6716 §3.1).
    let frame_units: usize = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    match toc & 3 {
        // One frame (possibly empty: DTX).
        0 => rest.len() <= OPUS_MAX_FRAME,
        // Two frames of equal size.
        1 => rest.len() % 2 == 0 && rest.len() / 2 <= OPUS_MAX_FRAME,
        // Two frames, the first one's length coded in front.
        2 => match frame_length(rest) {
            Some((n1, used)) => {
                let left = rest.len() - used;
                n1 <= left && left - n1 <= OPUS_MAX_FRAME
            }
            None => false,
        },
        // M frames, with optional padding and optional per-frame lengths.
        _ => {
            let Some((&count, mut rest)) = rest.split_first() else {
                return false;
            };
            let vbr = count & 0x80 != 0;
            let padded = count & 0x40 != 0;
            let m = usize::from(count & 0x3f);
            // At least one frame, at most 120 ms of audio (48 units of 2.5 ms).
            if m == 0 || m * frame_units > 48 {
                return false;
            }
            let mut padding = 0usize;
            if padded {
                loop {
                    let Some((&b, r)) = rest.split_first() else {
                        return false;
                    };
                    rest = r;
                    padding += if b == 255 { 254 } else { usize::from(b) };
                    if b != 255 {
                        break;
                    }
                }
            }
            let Some(mut data) = rest.len().checked_sub(padding) else {
                return false;
            };
            if vbr {
                let mut lengths = &rest[..data];
                for _ in 1..m {
                    let Some((n, used)) = frame_length(lengths) else {
                        return false;
                    };
                    lengths = &lengths[used..];
                    // The length bytes and the frame itself both come out of the data.
                    let Some(left) = data.checked_sub(used + n) else {
                        return false;
                    };
                    data = left;
                }
                // What is left is the last frame.
                data <= OPUS_MAX_FRAME
            } else {
                data % m == 0 && data / m <= OPUS_MAX_FRAME
            }
        }
    }
}

/// An Opus frame length in its one- or two-byte form: (length, bytes used).
fn frame_length(p: &[u8]) -> Option<(usize, usize)> {
    match p {
        [b, ..] if *b < 252 => Some((usize::from(*b), 1)),
        [b, b2, ..] => Some((usize::from(*b2) * 4 + usize::from(*b), 2)),
        _ => None,
    }
}

/// What the driver does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Feed it to the open output.
    Play,
    /// Close whatever output is open, open a fresh one for this codec, then feed it. Comes
    /// with every new burst (and after a fault, for the same burst).
    Open { codec: AudioCodec },
    /// Someone else holds the floor.
    NotHolder,
    /// From the holder, but its output failed recently; discarded until the retry time.
    Muted,
    /// Garbage the stateless [`check`] cannot see.
    Rejected(Garbage),
}

/// What went wrong with an open output, as the driver classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The depayloader or decoder gave up (bad input): a fresh pipeline on the next packet
    /// usually fixes it.
    Stream,
    /// The device (or file) failed to open or stopped working: retried after [`RETRY_AFTER`].
    Output,
}

/// Why a burst ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// The holder was silent for `release_after`.
    Silence,
    /// The holder's viewer went away.
    Left,
}

/// A burst ended: the driver closes the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub talker: TalkerId,
    pub reason: ReleaseReason,
}

/// Totals since the floor was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloorCounts {
    /// Packets from talkers that did not hold the floor.
    pub dropped: u64,
    /// Packets rejected here (after the stateless check passed).
    pub rejected: u64,
    /// Holder packets discarded because its output had failed.
    pub muted: u64,
    /// Talk bursts begun (floor taken while free, or handed over).
    pub bursts: u64,
    /// Bursts that began by taking the floor from another talker.
    pub handovers: u64,
    /// Outputs reopened within a burst after a fault.
    pub reopens: u64,
}

/// A talker as the floor knows it.
#[derive(Debug)]
struct Entry {
    /// For status and logs.
    name: String,
    /// Decides the pipeline the driver opens for this talker.
    codec: AudioCodec,
    /// Arrival of its last accepted packet (played or dropped): whether a new packet
    /// *starts* sending or continues.
    last_heard: Option<Instant>,
}

/// State of the output during a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputState {
    /// None open; the next packet opens one.
    Wanted,
    /// The driver has one open.
    Open,
    /// Failed; packets are discarded until then.
    Broken { until: Instant },
}

/// The current talk burst.
#[derive(Debug)]
struct Burst {
    /// Who holds the floor.
    talker: TalkerId,
    /// The SSRC of its first packet; others are garbage until the burst ends.
    ssrc: u32,
    /// Arrival of its last packet: the burst ends `release_after` later.
    last_packet: Instant,
    output: OutputState,
    /// When the last fault happened, so a second one soon after is treated as persistent.
    last_fault: Option<Instant>,
}

/// The sans-IO floor: who holds it, and when to release the output.
#[derive(Debug)]
pub struct Floor {
    /// Silence after which the holder's burst ends.
    release_after: Duration,
    /// Everyone who may talk.
    talkers: HashMap<TalkerId, Entry>,
    /// The burst in progress, if anyone holds the floor.
    burst: Option<Burst>,
    /// Totals for status.
    counts: FloorCounts,
}

impl Floor {
    pub fn new(release_after: Duration) -> Self {
        Floor {
            release_after,
            talkers: HashMap::new(),
            burst: None,
            counts: FloorCounts::default(),
        }
    }

    /// A viewer that may talk. Joining again under the same id replaces the entry.
    pub fn join(&mut self, id: TalkerId, name: &str, codec: AudioCodec) {
        self.talkers.insert(
            id,
            Entry {
                name: name.to_string(),
                codec,
                last_heard: None,
            },
        );
    }

    /// The viewer left; if it held the floor, its burst ends now.
    pub fn leave(&mut self, id: TalkerId) -> Option<Released> {
        self.talkers.remove(&id);
        if self.burst.as_ref().is_some_and(|b| b.talker == id) {
            self.burst = None;
            return Some(Released {
                talker: id,
                reason: ReleaseReason::Left,
            });
        }
        None
    }

    /// Ends the holder's burst once it has been silent for `release_after`.
    pub fn tick(&mut self, now: Instant) -> Option<Released> {
        let burst = self.burst.as_ref()?;
        if now.saturating_duration_since(burst.last_packet) < self.release_after {
            return None;
        }
        let talker = burst.talker;
        self.burst = None;
        Some(Released {
            talker,
            reason: ReleaseReason::Silence,
        })
    }

    /// When [`Floor::tick`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.burst
            .as_ref()
            .map(|b| b.last_packet + self.release_after)
    }

    /// A packet from `id` that passed [`check`], arriving at `now`. The caller must act on
    /// any [`Released`] from [`Floor::tick`] first; a verdict of `Open` also means closing
    /// whatever output is still open.
    pub fn on_packet(&mut self, id: TalkerId, ssrc: u32, now: Instant) -> Verdict {
        let release_after = self.release_after;
        // A burst that timed out without a tick is over all the same.
        if self
            .burst
            .as_ref()
            .is_some_and(|b| now.saturating_duration_since(b.last_packet) >= release_after)
        {
            self.burst = None;
        }
        let Some(entry) = self.talkers.get_mut(&id) else {
            // Not (or no longer) a talker: nobody to play it for.
            self.counts.dropped += 1;
            return Verdict::NotHolder;
        };
        let starting = entry
            .last_heard
            .is_none_or(|t| now.saturating_duration_since(t) >= release_after);
        let open = Verdict::Open { codec: entry.codec };

        if let Some(burst) = self.burst.as_mut().filter(|b| b.talker == id) {
            if ssrc != burst.ssrc {
                self.counts.rejected += 1;
                return Verdict::Rejected(Garbage::ForeignSsrc(ssrc));
            }
            entry.last_heard = Some(now);
            burst.last_packet = now;
            return match burst.output {
                OutputState::Open => Verdict::Play,
                OutputState::Broken { until } if now < until => {
                    self.counts.muted += 1;
                    Verdict::Muted
                }
                OutputState::Wanted | OutputState::Broken { .. } => {
                    burst.output = OutputState::Open;
                    self.counts.reopens += 1;
                    open
                }
            };
        }

        if self.burst.is_some() && !starting {
            entry.last_heard = Some(now);
            self.counts.dropped += 1;
            return Verdict::NotHolder;
        }
        // The floor is free, or this talker just started: it is the holder now.
        entry.last_heard = Some(now);
        if self.burst.is_some() {
            self.counts.handovers += 1;
        }
        self.counts.bursts += 1;
        self.burst = Some(Burst {
            talker: id,
            ssrc,
            last_packet: now,
            output: OutputState::Open,
            last_fault: None,
        });
        open
    }

    /// The driver closed the output after `fault`. A decoder fault reopens on the next
    /// packet, unless it is the second fault within [`RETRY_AFTER`]; a device fault waits
    /// [`RETRY_AFTER`] before trying again.
    pub fn on_fault(&mut self, fault: Fault, now: Instant) {
        let Some(burst) = self.burst.as_mut() else {
            return;
        };
        let repeated = burst
            .last_fault
            .is_some_and(|t| now.saturating_duration_since(t) < RETRY_AFTER);
        burst.last_fault = Some(now);
        burst.output = match fault {
            Fault::Stream if !repeated => OutputState::Wanted,
            _ => OutputState::Broken {
                until: now + RETRY_AFTER,
            },
        };
    }

    /// The holder's name.
    pub fn holder(&self) -> Option<&str> {
        let burst = self.burst.as_ref()?;
        self.talkers.get(&burst.talker).map(|e| e.name.as_str())
    }

    pub fn counts(&self) -> FloorCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::Header;

    const MS: Duration = Duration::from_millis(1);
    const A: TalkerId = TalkerId(1);
    const B: TalkerId = TalkerId(2);
    const OPUS: Verdict = Verdict::Open {
        codec: AudioCodec::Opus,
    };

    fn floor() -> Floor {
        let mut f = Floor::new(1000 * MS);
        f.join(A, "alice", AudioCodec::Opus);
        f.join(B, "bob", AudioCodec::Opus);
        f
    }

    fn packet(pt: u8, payload: &[u8]) -> Packet {
        Packet {
            header: Header {
                version: 2,
                payload_type: pt,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// Feeds `id` one packet every 20 ms from `from` (inclusive) to `to` (exclusive), like a
    /// browser, and returns the verdicts.
    fn talk(f: &mut Floor, id: TalkerId, t0: Instant, from_ms: u32, to_ms: u32) -> Vec<Verdict> {
        (from_ms..to_ms)
            .step_by(20)
            .map(|ms| {
                let now = t0 + ms * MS;
                assert_eq!(f.tick(now), None, "released while talking at {ms} ms");
                f.on_packet(id, u32::try_from(id.0).unwrap_or(0), now)
            })
            .collect()
    }

    #[test]
    fn first_packet_opens_and_the_rest_play() {
        let t0 = Instant::now();
        let mut f = floor();
        assert_eq!(f.deadline(), None);
        let v = talk(&mut f, A, t0, 0, 100);
        assert_eq!(v[0], OPUS);
        assert!(v[1..].iter().all(|v| *v == Verdict::Play), "{v:?}");
        assert_eq!(f.holder(), Some("alice"));
        assert_eq!(f.counts().bursts, 1);
    }

    #[test]
    fn newest_talker_to_start_takes_the_floor() {
        let t0 = Instant::now();
        let mut f = floor();
        talk(&mut f, A, t0, 0, 500);
        // B starts while A talks: B takes over.
        assert_eq!(f.on_packet(B, 2, t0 + 505 * MS), OPUS);
        assert_eq!(f.holder(), Some("bob"));
        // A keeps going: dropped, and A never silently takes the floor back.
        let a = talk(&mut f, A, t0, 520, 1500);
        assert!(a.iter().all(|v| *v == Verdict::NotHolder), "{a:?}");
        let b = talk(&mut f, B, t0, 525, 1500);
        assert!(b.iter().all(|v| *v == Verdict::Play), "{b:?}");
        let c = f.counts();
        assert_eq!((c.bursts, c.handovers, c.dropped), (2, 1, a.len() as u64));
        // A pauses for a second and starts again: it is the newest to start now.
        assert_eq!(f.on_packet(A, 1, t0 + 2500 * MS), OPUS);
        assert_eq!(f.holder(), Some("alice"));
        assert_eq!(f.on_packet(A, 1, t0 + 2520 * MS), Verdict::Play);
        // B has been quiet for a second too, so its next packet starts anew and wins.
        assert_eq!(f.on_packet(B, 2, t0 + 2530 * MS), OPUS);
        assert_eq!(f.on_packet(A, 1, t0 + 2540 * MS), Verdict::NotHolder);
    }

    #[test]
    fn free_floor_goes_to_whoever_still_talks() {
        let t0 = Instant::now();
        let mut f = floor();
        talk(&mut f, A, t0, 0, 300);
        talk(&mut f, B, t0, 100, 300); // B took over at 100 ms
        assert_eq!(f.holder(), Some("bob"));
        // B stops; A never stopped. After B's burst ends, A is heard again.
        talk(&mut f, A, t0, 300, 1280);
        let released = f.tick(t0 + 1280 * MS);
        assert_eq!(
            released,
            Some(Released {
                talker: B,
                reason: ReleaseReason::Silence
            })
        );
        assert_eq!(f.on_packet(A, 1, t0 + 1300 * MS), OPUS);
    }

    #[test]
    fn silence_releases_after_exactly_release_after() {
        let t0 = Instant::now();
        let mut f = floor();
        talk(&mut f, A, t0, 0, 1000); // last packet at 980 ms
        assert_eq!(f.deadline(), Some(t0 + 1980 * MS));
        assert_eq!(f.tick(t0 + 1979 * MS), None);
        assert_eq!(
            f.tick(t0 + 1980 * MS),
            Some(Released {
                talker: A,
                reason: ReleaseReason::Silence
            })
        );
        assert_eq!((f.holder(), f.deadline()), (None, None));
        assert_eq!(f.tick(t0 + 5000 * MS), None);
        // The next packet starts a new burst.
        assert_eq!(f.on_packet(A, 1, t0 + 3000 * MS), OPUS);
        assert_eq!(f.counts().bursts, 2);
    }

    #[test]
    fn a_late_packet_without_a_tick_still_starts_a_new_burst() {
        let t0 = Instant::now();
        let mut f = floor();
        f.on_packet(A, 1, t0);
        assert_eq!(f.on_packet(A, 1, t0 + 1000 * MS), OPUS);
        assert_eq!(f.counts().bursts, 2);
    }

    #[test]
    fn holder_leaving_releases_at_once() {
        let t0 = Instant::now();
        let mut f = floor();
        talk(&mut f, A, t0, 0, 200);
        assert_eq!(f.leave(B), None);
        assert_eq!(
            f.leave(A),
            Some(Released {
                talker: A,
                reason: ReleaseReason::Left
            })
        );
        assert_eq!((f.holder(), f.deadline()), (None, None));
        // A packet still in flight from the departed talker is not played.
        assert_eq!(f.on_packet(A, 1, t0 + 210 * MS), Verdict::NotHolder);
    }

    #[test]
    fn foreign_ssrc_in_a_burst_is_rejected_and_does_not_extend_it() {
        let t0 = Instant::now();
        let mut f = floor();
        f.on_packet(A, 7, t0);
        assert_eq!(
            f.on_packet(A, 8, t0 + 500 * MS),
            Verdict::Rejected(Garbage::ForeignSsrc(8))
        );
        assert_eq!(f.counts().rejected, 1);
        assert!(f.tick(t0 + 1000 * MS).is_some());
        // Once the old burst is over, the new SSRC is a new burst.
        assert_eq!(f.on_packet(A, 8, t0 + 1010 * MS), OPUS);
    }

    #[test]
    fn decoder_fault_reopens_on_next_packet_and_a_second_one_backs_off() {
        let t0 = Instant::now();
        let mut f = floor();
        f.on_packet(A, 1, t0);
        f.on_fault(Fault::Stream, t0 + 10 * MS);
        assert_eq!(f.on_packet(A, 1, t0 + 20 * MS), OPUS);
        assert_eq!(f.on_packet(A, 1, t0 + 40 * MS), Verdict::Play);
        // Again within RETRY_AFTER: muted until the retry time.
        f.on_fault(Fault::Stream, t0 + 50 * MS);
        let muted = talk(&mut f, A, t0, 60, 2050);
        assert!(muted.iter().all(|v| *v == Verdict::Muted), "{muted:?}");
        assert_eq!(f.on_packet(A, 1, t0 + 50 * MS + RETRY_AFTER), OPUS);
        let c = f.counts();
        assert_eq!((c.bursts, c.reopens), (1, 2));
        assert_eq!(c.muted, muted.len() as u64);
    }

    #[test]
    fn device_fault_mutes_until_retry_while_the_talker_keeps_the_floor() {
        let t0 = Instant::now();
        let mut f = floor();
        f.on_packet(A, 1, t0);
        f.on_fault(Fault::Output, t0 + 10 * MS);
        let v = talk(&mut f, A, t0, 20, 2000);
        assert!(v.iter().all(|v| *v == Verdict::Muted), "{v:?}");
        assert_eq!(f.holder(), Some("alice"));
        // Still the holder at the retry time: the output is opened again.
        assert_eq!(f.on_packet(A, 1, t0 + 2010 * MS), OPUS);
        // A fault with nobody holding the floor is ignored.
        let mut g = floor();
        g.on_fault(Fault::Output, t0);
        assert_eq!(g.on_packet(A, 1, t0), OPUS);
    }

    #[test]
    fn packets_from_unknown_talkers_are_dropped() {
        let mut f = floor();
        assert_eq!(
            f.on_packet(TalkerId(99), 1, Instant::now()),
            Verdict::NotHolder
        );
        assert_eq!(f.holder(), None);
    }

    #[test]
    fn stateless_check_rejects_garbage() {
        let ok = packet(111, &[0x78, 1, 2, 3]);
        assert_eq!(check(AudioCodec::Opus, 111, &ok), Ok(()));
        let mut v1 = ok.clone();
        v1.header.version = 1;
        assert_eq!(check(AudioCodec::Opus, 111, &v1), Err(Garbage::Version(1)));
        assert_eq!(
            check(AudioCodec::Opus, 96, &ok),
            Err(Garbage::PayloadType(111))
        );
        assert_eq!(
            check(AudioCodec::Opus, 111, &packet(111, &[])),
            Err(Garbage::Empty)
        );
        assert_eq!(
            check(AudioCodec::Pcmu, 0, &packet(0, &[0u8; 2000])),
            Err(Garbage::TooLong(2000))
        );
        // Any byte is a G.711 sample.
        assert_eq!(check(AudioCodec::Pcma, 8, &packet(8, &[0xff; 160])), Ok(()));
    }

    #[test]
    fn opus_framing_rules() {
        let valid: &[&[u8]] = &[
            &[0x78],                   // TOC only (DTX)
            &[0x79, 1, 2],             // code 1, two 1-byte frames
            &[0x7a, 1, 9, 8],          // code 2, frames of 1 and 1
            &[0x7a, 0, 9],             // code 2, empty first frame
            &[0x7b, 0x03, 1, 2, 3],    // code 3 CBR, 3 frames (20 ms each = 60 ms)
            &[0x7b, 0x82, 1, 7, 8],    // code 3 VBR, 2 frames of 1 and 1
            &[0x7b, 0x41, 2, 5, 0, 0], // code 3 CBR, 1 frame, 2 bytes of padding
            &[0x03, 0x02, 1, 2],       // SILK 10 ms, code 3, 2 frames
            &[0xe3, 0x30],             // CELT 2.5 ms x 48 = 120 ms, empty frames
        ];
        for p in valid {
            assert!(opus_packet_is_valid(p), "{p:x?} should be valid");
        }
        let invalid: &[&[u8]] = &[
            &[],                    // nothing
            &[0x79, 1, 2, 3],       // code 1 with an odd byte count
            &[0x7a],                // code 2 without the length
            &[0x7a, 5, 1],          // code 2, first frame longer than the packet
            &[0x7a, 253],           // code 2, two-byte length cut off
            &[0x7b],                // code 3 without the count byte
            &[0x7b, 0x00],          // code 3 with zero frames
            &[0x7b, 0x07, 1],       // code 3, 7 x 20 ms = 140 ms
            &[0x7b, 0x02, 1, 2, 3], // code 3 CBR, 3 bytes in 2 frames
            &[0x7b, 0x42, 9],       // code 3, more padding than packet
            &[0x7b, 0x41, 255],     // code 3, padding length cut off
            &[0x7b, 0x83, 1, 5],    // code 3 VBR, lengths beyond the packet
        ];
        for p in invalid {
            assert!(!opus_packet_is_valid(p), "{p:x?} should be invalid");
        }
        // Code 1 frames over the 1275-byte limit.
        let mut big = vec![0x79];
        big.resize(1 + 2 * 1276, 0);
        assert!(!opus_packet_is_valid(&big));
    }
}
