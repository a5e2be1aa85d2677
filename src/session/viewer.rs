//! One viewer's media: read shared frames, stamp this viewer's header, write to its track.
//!
//! The task starts sending when the connection is up, and only from a keyframe: the first
//! thing a decoder sees is SPS/PPS + IDR (the packetizer puts SPS/PPS in front of every IDR):
//! the cached GOP's IDR for a passed-through camera (then a paced catch-up, see
//! [`super::gop`]), else the next IDR, which joining asks the encoder for.
//! If the viewer falls behind (slow link, stuck socket) the shared ring overruns its position;
//! it then skips to the next keyframe and asks for one, so it recovers with a clean picture
//! instead of smeared P-frames, and nobody else is slowed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::rtp::header::Header;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use super::feed::{FrameFeed, KeyframeCause, KeyframeRequests, sleep_until};
use super::gop::{CatchUp, CatchUpStep, Retimer};
use super::interceptor::is_keyframe_request;
use crate::rtp::{Frame, Stamper};

/// Decides, frame by frame, whether a viewer gets a frame (sans-IO).
///
/// A viewer starts at a keyframe, and after losing frames it waits for the next keyframe: a
/// P-frame whose reference the decoder never saw only produces a smeared picture.
#[derive(Debug)]
pub struct KeyframeGate {
    waiting: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum GateDecision {
    Send,
    /// Skip this frame (waiting for a keyframe).
    Skip,
}

impl Default for KeyframeGate {
    fn default() -> Self {
        Self { waiting: true }
    }
}

impl KeyframeGate {
    pub fn on_frame(&mut self, keyframe: bool) -> GateDecision {
        if self.waiting && !keyframe {
            return GateDecision::Skip;
        }
        self.waiting = false;
        GateDecision::Send
    }

    /// Frames were lost (the viewer fell behind the shared ring). Returns true when this
    /// starts a new wait, i.e. when a keyframe should be requested.
    pub fn on_loss(&mut self) -> bool {
        !std::mem::replace(&mut self.waiting, true)
    }
}

/// Counters for one viewer, readable while it runs.
#[derive(Debug, Default)]
pub struct ViewerCounters {
    pub frames_sent: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Frames skipped because the viewer fell behind or waited for a keyframe.
    pub frames_skipped: AtomicU64,
    /// PLI/FIR received from the viewer.
    pub keyframe_requests: AtomicU64,
    /// Milliseconds from the start of the media task to the first frame written.
    pub first_frame_ms: AtomicU64,
}

/// One track's sending loop. Video and audio run the same loop: audio frames are all
/// "keyframes" (every Opus or G.711 packet decodes on its own), and audio has no keyframe
/// requests to pass on.
pub struct MediaTask {
    pub track: Arc<TrackLocalStaticRTP>,
    pub stamper: Stamper,
    pub feed: FrameFeed,
    /// Where PLI/FIR and losses turn into encoder keyframe requests (video only).
    pub keyframes: Option<KeyframeRequests>,
    pub counters: Arc<ViewerCounters>,
    pub cancel: CancellationToken,
    /// Keeps an on-demand encoder (G.711) running while this task lives.
    pub demand: Option<super::audio::DemandGuard>,
    /// When the viewer's offer arrived, and where the time to this task's first written
    /// frame goes (video only).
    pub first_frame: Option<(Instant, prometheus_client::metrics::histogram::Histogram)>,
}

/// Why a media task stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEnd {
    /// The session was closed (by us, the viewer or ICE): nothing to add.
    Cancelled,
    /// The track was unbound: the connection is closing.
    TrackClosed,
    /// The source's feed closed (its capture stopped for good).
    FeedClosed,
    /// The connection took no packets for [`WRITE_STALL`].
    Stalled,
    /// The stack refused a packet.
    Refused,
}

impl MediaEnd {
    /// Whether the session must end with this task: a viewer that can no longer be sent to
    /// must not keep its slot. Only an audio feed closing leaves the video going.
    pub fn ends_session(self, video: bool) -> bool {
        match self {
            MediaEnd::Cancelled => false,
            MediaEnd::FeedClosed => video,
            MediaEnd::TrackClosed | MediaEnd::Stalled | MediaEnd::Refused => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaEnd::Cancelled => "cancelled",
            MediaEnd::TrackClosed => "track closed",
            MediaEnd::FeedClosed => "source stopped",
            MediaEnd::Stalled => "connection stopped taking packets",
            MediaEnd::Refused => "the WebRTC stack refused a packet",
        }
    }
}

/// A viewer whose connection takes no packets for this long is as good as gone.
pub const WRITE_STALL: Duration = Duration::from_secs(5);

impl MediaTask {
    /// Runs until cancelled, the feed closes, or the track stops accepting packets, and says
    /// which.
    ///
    /// A viewer of a passed-through camera first gets the feed's cached GOP, paced, with the
    /// live frames that arrive meanwhile queued behind it (see [`super::gop`]); everyone else
    /// asks for a keyframe and starts at the next one.
    pub async fn run(self) -> MediaEnd {
        let MediaTask {
            track,
            mut stamper,
            feed,
            keyframes,
            counters,
            cancel,
            demand: _demand,
            mut first_frame,
        } = self;
        let started = Instant::now();
        let (cached, mut rx) = feed.subscribe_with_gop(started);
        let mut catch_up = (!cached.is_empty()).then(|| CatchUp::new(cached, &feed.gop_options()));
        let mut retimer = Retimer::new(VIDEO_CLOCK_RATE);
        let mut gate = KeyframeGate::default();
        if catch_up.is_none()
            && let Some(k) = &keyframes
        {
            k.request(KeyframeCause::Join);
        }
        let mut out = Out {
            track: &track,
            stamper: &mut stamper,
            counters: &counters,
            started,
            first_frame: &mut first_frame,
        };
        loop {
            // The catch-up's next frame, if one is due; else when to look again.
            let mut wake = None;
            if let Some(up) = &mut catch_up {
                let now = Instant::now();
                match up.poll(now) {
                    CatchUpStep::Send(frame) => {
                        // Starts with the IDR: the gate opens and stays open.
                        if gate.on_frame(frame.is_keyframe()) == GateDecision::Send {
                            let ts = retimer.catch_up(frame.timestamp(), now);
                            if let Err(end) = out.deliver(&frame, ts).await {
                                return end;
                            }
                        }
                        continue;
                    }
                    CatchUpStep::WaitUntil(t) => wake = Some(t),
                    CatchUpStep::Done => {
                        tracing::debug!(
                            after_ms = started.elapsed().as_millis() as u64,
                            "viewer caught up with the live stream"
                        );
                        catch_up = None;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return MediaEnd::Cancelled,
                event = track.poll() => match event {
                    Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                        if let Some(k) = &keyframes
                            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                        {
                            counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            k.request(KeyframeCause::PliFir);
                        }
                    }
                    Some(_) => {}
                    // Unbound: the connection is closing.
                    None => return MediaEnd::TrackClosed,
                },
                _ = sleep_until(wake) => {}
                next = rx.recv() => match next {
                    Ok(frame) => {
                        if let Some(up) = &mut catch_up {
                            let queued = up.queued() as u64 + 1;
                            if let Err(e) = up.push_live(frame) {
                                tracing::debug!("{e}");
                                counters.frames_skipped.fetch_add(queued, Ordering::Relaxed);
                                catch_up = None;
                                lost(&mut gate, keyframes.as_ref());
                            }
                            continue;
                        }
                        if gate.on_frame(frame.is_keyframe()) == GateDecision::Skip {
                            counters.frames_skipped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let ts = retimer.live(frame.timestamp());
                        if let Err(end) = out.deliver(&frame, ts).await {
                                return end;
                            }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "viewer fell behind; skipping to the next keyframe");
                        // What a catch-up still held is no use without the frames missed.
                        let queued = catch_up.take().map_or(0, |up| up.queued() as u64);
                        counters
                            .frames_skipped
                            .fetch_add(missed + queued, Ordering::Relaxed);
                        lost(&mut gate, keyframes.as_ref());
                    }
                    Err(RecvError::Closed) => return MediaEnd::FeedClosed,
                },
            }
        }
    }
}

/// Frames were lost: wait for the next keyframe, and ask for one if this starts the wait.
fn lost(gate: &mut KeyframeGate, keyframes: Option<&KeyframeRequests>) {
    if gate.on_loss()
        && let Some(k) = keyframes
    {
        k.request(KeyframeCause::Loss);
    }
}

/// RTP clock of H.264 (RFC 6184); only video ever catches up.
const VIDEO_CLOCK_RATE: u32 = 90_000;

/// Where one viewer's frames go, and the first-frame bookkeeping.
struct Out<'a> {
    track: &'a TrackLocalStaticRTP,
    stamper: &'a mut Stamper,
    counters: &'a ViewerCounters,
    /// When the task started, for `first_frame_ms`.
    started: Instant,
    /// Offer time and histogram, taken once the first frame is written.
    first_frame: &'a mut Option<(Instant, prometheus_client::metrics::histogram::Histogram)>,
}

impl Out<'_> {
    /// Writes one frame with RTP timestamp `ts` (before the stamper's offset).
    async fn deliver(&mut self, frame: &Frame, ts: u32) -> Result<(), MediaEnd> {
        if self.counters.first_frame_ms.load(Ordering::Relaxed) == 0 {
            let ms = self.started.elapsed().as_millis() as u64;
            let _ = self.counters.first_frame_ms.compare_exchange(
                0,
                ms.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        send(self.track, self.stamper, self.counters, frame, ts).await?;
        if let Some((offer_at, histogram)) = self.first_frame.take() {
            histogram.observe(offer_at.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

/// Writes every packet of one frame; Err when this viewer can no longer be sent to.
async fn send(
    track: &TrackLocalStaticRTP,
    stamper: &mut Stamper,
    counters: &ViewerCounters,
    frame: &Frame,
    ts: u32,
) -> Result<(), MediaEnd> {
    let mut bytes = 0u64;
    let write_all = async {
        for (i, packet) in frame.iter().enumerate() {
            let h = stamper.next(ts, packet.marker);
            bytes += packet.payload.len() as u64;
            let rtp = rtc::rtp::Packet {
                header: Header {
                    version: 2,
                    marker: h.marker,
                    payload_type: h.payload_type,
                    sequence_number: h.sequence_number,
                    timestamp: h.timestamp,
                    ssrc: h.ssrc,
                    ..Default::default()
                },
                payload: frame.payload(i),
            };
            track.write_rtp(rtp).await?;
        }
        Ok::<(), webrtc::error::Error>(())
    };
    // One bound per frame, not a timer per packet: the driver applies back-pressure in
    // write_rtp, and a viewer whose connection takes no packets for this long is as good as gone.
    match tokio::time::timeout(WRITE_STALL, write_all).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!("track refused a packet: {e}");
            return Err(MediaEnd::Refused);
        }
        Err(_) => {
            tracing::warn!("viewer's connection stopped taking packets for 5 s");
            return Err(MediaEnd::Stalled);
        }
    }
    counters.frames_sent.fetch_add(1, Ordering::Relaxed);
    counters
        .packets_sent
        .fetch_add(frame.len() as u64, Ordering::Relaxed);
    counters.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_that_cannot_be_sent_to_loses_its_session() {
        for end in [MediaEnd::Stalled, MediaEnd::Refused, MediaEnd::TrackClosed] {
            assert!(end.ends_session(true) && end.ends_session(false), "{end:?}");
        }
        assert!(MediaEnd::FeedClosed.ends_session(true));
        assert!(
            !MediaEnd::FeedClosed.ends_session(false),
            "audio source gone: video goes on"
        );
        assert!(!MediaEnd::Cancelled.ends_session(true));
    }

    #[test]
    fn starts_at_a_keyframe() {
        let mut g = KeyframeGate::default();
        assert_eq!(g.on_frame(false), GateDecision::Skip);
        assert_eq!(g.on_frame(false), GateDecision::Skip);
        assert_eq!(g.on_frame(true), GateDecision::Send);
        assert_eq!(g.on_frame(false), GateDecision::Send);
    }

    #[test]
    fn after_a_loss_waits_for_the_next_keyframe_and_asks_once() {
        let mut g = KeyframeGate::default();
        g.on_frame(true);
        assert!(g.on_loss(), "first loss asks for a keyframe");
        assert!(
            !g.on_loss(),
            "a second loss while waiting does not ask again"
        );
        assert_eq!(g.on_frame(false), GateDecision::Skip);
        assert_eq!(g.on_frame(true), GateDecision::Send);
        assert_eq!(g.on_frame(false), GateDecision::Send);
    }
}
