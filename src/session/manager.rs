//! The set of live viewer sessions: admission, answering, lifetime, cleanup.
//!
//! Local WHEP and KVS both come here with an offer and leave with an answer; everything after
//! that (connect, media, teardown) is the session's own task. A session ends when the viewer
//! says so (WHEP DELETE, a new offer from the same KVS client id), when ICE gives up on it
//! (the only signal we get from a viewer that simply vanished), when it never connects, or on
//! shutdown — and in every case its slot, sockets and port are returned.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

use super::IceServer;
use super::audio::AudioService;
use super::feed::{FrameFeed, KeyframeRequests};
use super::peer::{self, AudioPeerPlan, NetworkOptions, PeerEvents};
use super::ports::PortPool;
use super::sdp::{self, AudioPlan, Direction, SdpError};
use super::viewer::{MediaTask, ViewerCounters};
use crate::rtp::Stamper;

/// Settings for admission and connection handling.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub max_viewers: usize,
    pub network: NetworkOptions,
    pub udp_port_range: Option<(u16, u16)>,
    /// Cap on gathering for answers that must carry every candidate (WHEP, Alexa).
    pub gather_timeout: Duration,
    /// A session that is answered but not connected after this long is dropped.
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("bad offer: {0}")]
    BadOffer(#[from] SdpError),
    #[error("viewer limit reached ({max} of webrtc.max_viewers = {max} in use); try again later")]
    Full { max: usize },
    #[error("no free UDP port in webrtc.udp_port_min..=webrtc.udp_port_max ({size} ports)")]
    NoPort { size: usize },
    #[error("offer rejected by the WebRTC stack: {0}")]
    Negotiation(String),
    #[error("WebRTC failure: {0}")]
    Internal(String),
    #[error("no session {0}")]
    NotFound(String),
    #[error("shutting down")]
    ShuttingDown,
}

/// One offer to answer.
pub struct OfferRequest {
    /// Stable viewer identity (the KVS client id). A new offer from the same viewer replaces
    /// its previous session. None for WHEP, where every POST is a new session.
    pub viewer: Option<String>,
    pub sdp: String,
    /// Extra ICE servers for this session (KVS TURN), on top of `webrtc.stun_urls`.
    pub ice_servers: Vec<IceServer>,
    /// Where to send local candidates if the viewer trickles. Ignored when the offer does not
    /// announce trickle support: such viewers (Alexa) get one complete answer.
    pub trickle: Option<mpsc::Sender<String>>,
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub session_id: String,
    pub sdp: String,
    /// True when the answer went out before gathering and candidates follow on the channel.
    pub trickled: bool,
    pub offer_to_answer: Duration,
}

/// A snapshot of one session, for logs, health and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    pub id: String,
    pub viewer: Option<String>,
    pub state: String,
    pub age_s: f64,
    pub frames_sent: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub frames_skipped: u64,
    pub keyframe_requests: u64,
    pub first_frame_ms: Option<u64>,
    /// e.g. "opus/111 sendrecv"; None when the viewer offered no usable audio.
    pub audio: Option<String>,
    pub audio_packets_sent: u64,
}

struct Entry {
    viewer: Option<String>,
    pc: Arc<dyn PeerConnection>,
    cancel: CancellationToken,
    counters: Arc<ViewerCounters>,
    /// The audio we answered, and its counters when we send audio.
    audio: Option<(String, Option<Arc<ViewerCounters>>)>,
    state: watch::Receiver<RTCPeerConnectionState>,
    created: Instant,
    done: watch::Receiver<bool>,
}

/// What every viewer was sent, added up: ended sessions plus the live ones (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentTotals {
    pub video_frames: u64,
    pub video_bytes: u64,
    pub audio_frames: u64,
    pub audio_bytes: u64,
}

impl SentTotals {
    fn add(&mut self, e: &Entry) {
        self.video_frames += e.counters.frames_sent.load(Ordering::Relaxed);
        self.video_bytes += e.counters.bytes_sent.load(Ordering::Relaxed);
        if let Some((_, Some(a))) = &e.audio {
            self.audio_frames += a.frames_sent.load(Ordering::Relaxed);
            self.audio_bytes += a.bytes_sent.load(Ordering::Relaxed);
        }
    }
}

struct Inner {
    sessions: HashMap<String, Entry>,
    /// What sessions that have ended were sent.
    ended: SentTotals,
    /// Slots promised to offers still being answered.
    reserved: usize,
    ports: PortPool,
    closing: bool,
}

pub struct SessionManager {
    opts: SessionOptions,
    feed: FrameFeed,
    keyframes: KeyframeRequests,
    audio: AudioService,
    /// The H.264 profile we really send, for the answer's fmtp.
    video_profile: sdp::ProfileLevelId,
    /// Where offer → answer (observed by the signaling layer that sends the answer) and
    /// offer → first frame (observed by each viewer's video task) go.
    timings: crate::metrics::Timings,
    inner: Mutex<Inner>,
    me: Weak<SessionManager>,
}

/// Gives a reserved slot (and its port) back unless the session took it over.
struct Reservation<'a> {
    mgr: &'a SessionManager,
    port: u16,
    armed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut inner = self.mgr.lock();
            inner.reserved -= 1;
            inner.ports.release(self.port);
        }
    }
}

impl SessionManager {
    pub fn new(
        opts: SessionOptions,
        feed: FrameFeed,
        keyframes: KeyframeRequests,
        audio: AudioService,
        video_profile: sdp::ProfileLevelId,
        timings: crate::metrics::Timings,
    ) -> Arc<Self> {
        let ports = PortPool::new(opts.udp_port_range);
        Arc::new_cyclic(|me| SessionManager {
            opts,
            feed,
            keyframes,
            audio,
            video_profile,
            timings,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                ended: SentTotals::default(),
                reserved: 0,
                ports,
                closing: false,
            }),
            me: me.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated in a way that
        // matters more than stopping the daemon would; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn max_viewers(&self) -> usize {
        self.opts.max_viewers
    }

    /// Live sessions (answered, connecting or connected).
    pub fn count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The histograms signaling layers and viewer tasks report timings into.
    pub fn timings(&self) -> &crate::metrics::Timings {
        &self.timings
    }

    /// Frames and bytes sent to every viewer since start. Never goes down: a session's
    /// counts move from the live sum to `ended` under the same lock, after its media tasks
    /// have stopped.
    pub fn sent_totals(&self) -> SentTotals {
        let inner = self.lock();
        let mut t = inner.ended;
        for e in inner.sessions.values() {
            t.add(e);
        }
        t
    }

    /// Answers an offer: the core of both WHEP and KVS.
    pub async fn offer(&self, req: OfferRequest) -> Result<Answer, SessionError> {
        let started = Instant::now();
        let sending = self.video_profile.get();
        let prepared = sdp::prepare_offer_for(&req.sdp, sending)?;
        if let Some(id) = sending
            && prepared.video_profile_unstated
            && id >> 16 != 0x42
        {
            // Alexa offers H.264 without a profile; Echo Shows are documented for constrained
            // baseline. What we send is declared truthfully, but may not play there.
            tracing::warn!(
                profile_level_id = format!("{id:06x}"),
                "the viewer named no H.264 profile (as Alexa does) and the camera's stream is not                  baseline: if it shows no picture, set the camera's stream to Baseline, or for                  a V4L2 camera use source.format = \"mjpeg\" or \"raw\" so camgate encodes it"
            );
        }

        if let Some(viewer) = &req.viewer {
            let old: Vec<String> = self
                .lock()
                .sessions
                .iter()
                .filter(|(_, e)| e.viewer.as_deref() == Some(viewer))
                .map(|(id, _)| id.clone())
                .collect();
            for id in old {
                tracing::info!(session = %id, viewer = %viewer, "new offer from the same viewer replaces its session");
                self.close(&id).await;
            }
        }

        let mut reservation = self.reserve()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let audio = self.plan_audio(&prepared.audio, req.viewer.as_deref().unwrap_or(&id));
        let audio_answer = audio
            .as_ref()
            .map(|a| (a.codec, a.payload_type, a.direction));
        let trickle = match (&req.trickle, prepared.trickle) {
            // Candidates belong to the first bundled section: audio when we answer it.
            (Some(tx), true) => Some((tx.clone(), prepared.candidate_section())),
            _ => None,
        };
        let trickled = trickle.is_some();
        let audio_mid = match (&prepared.audio, &audio_answer) {
            (AudioPlan::Chosen(c), Some((_, _, dir))) => c.mid.clone().map(|m| (m, *dir)),
            _ => None,
        };

        let ice_servers = if trickled {
            req.ice_servers.clone()
        } else {
            super::servers_for_complete_answer(&req.ice_servers)
        };
        let (peer, events) = peer::build(
            &self.opts.network,
            prepared.video_payload_type,
            &prepared.video_fmtp,
            audio,
            &ice_servers,
            reservation.port,
            trickle,
        )
        .await
        .map_err(|e| SessionError::Internal(e.to_string()))?;

        let answer = match negotiate(
            &peer.pc,
            &prepared.sdp,
            &events,
            trickled,
            audio_mid.as_ref().map(|(m, d)| (m.as_str(), *d)),
            self.opts.gather_timeout,
        )
        .await
        {
            Ok(sdp) => sdp,
            Err(e) => {
                let _ = peer.pc.close().await;
                return Err(e);
            }
        };

        let cancel = CancellationToken::new();
        let counters = Arc::new(ViewerCounters::default());
        let audio_counters = peer
            .audio
            .as_ref()
            .map(|_| Arc::new(ViewerCounters::default()));
        // e.g. "opus/111 sendrecv", for /stats and the log line below.
        let audio_desc =
            audio_answer.map(|(codec, pt, dir)| format!("{}/{pt} {}", codec.name(), dir.as_str()));
        let audio_summary = audio_desc
            .clone()
            .map(|desc| (desc, audio_counters.clone()));
        let (done_tx, done_rx) = watch::channel(false);
        let admitted = {
            let mut inner = self.lock();
            if inner.closing {
                false
            } else {
                inner.reserved -= 1;
                inner.sessions.insert(
                    id.clone(),
                    Entry {
                        viewer: req.viewer.clone(),
                        pc: peer.pc.clone(),
                        cancel: cancel.clone(),
                        counters: counters.clone(),
                        audio: audio_summary,
                        state: events.state.clone(),
                        created: started,
                        done: done_rx,
                    },
                );
                reservation.armed = false;
                true
            }
        };
        if !admitted {
            let _ = peer.pc.close().await;
            return Err(SessionError::ShuttingDown);
        }

        let mut media = vec![MediaTask {
            track: peer.track.clone(),
            stamper: Stamper::new(
                peer.ssrc,
                prepared.video_payload_type,
                rand::random(),
                rand::random(),
            ),
            feed: self.feed.clone(),
            keyframes: Some(self.keyframes.clone()),
            counters,
            cancel: cancel.clone(),
            demand: None,
            first_frame: Some((started, self.timings.offer_to_first_frame.clone())),
        }];
        if let (Some((track, ssrc)), Some((codec, pt, _)), Some(audio_counters)) =
            (&peer.audio, audio_answer, audio_counters)
        {
            media.push(MediaTask {
                track: track.clone(),
                stamper: Stamper::new(*ssrc, pt, rand::random(), rand::random()),
                feed: self.audio.feed(codec).clone(),
                keyframes: None,
                counters: audio_counters,
                cancel: cancel.clone(),
                demand: self.audio.demand.join(codec),
                first_frame: None,
            });
        }
        tokio::spawn(lifetime(
            self.me.clone(),
            id.clone(),
            reservation.port,
            peer.pc,
            events,
            media,
            cancel,
            self.opts.connect_timeout,
            done_tx,
        ));

        let offer_to_answer = started.elapsed();
        tracing::info!(
            session = %id,
            viewer = req.viewer.as_deref().unwrap_or("-"),
            payload_type = prepared.video_payload_type,
            audio = audio_desc.as_deref().unwrap_or("none"),
            trickled,
            candidates = sdp::candidate_count(&answer),
            ms = offer_to_answer.as_millis() as u64,
            "answered offer"
        );
        Ok(Answer {
            session_id: id,
            sdp: answer,
            trickled,
            offer_to_answer,
        })
    }

    /// How this viewer's audio section is answered: codec and payload type from the SDP
    /// policy, direction from what we have (a source that is running, talkback that could
    /// open its sound card) and what the viewer offered.
    fn plan_audio(&self, plan: &AudioPlan, talker_name: &str) -> Option<AudioPeerPlan> {
        match plan {
            AudioPlan::NotOffered => None,
            AudioPlan::Rejected(why) => {
                tracing::info!("audio section rejected (video is unaffected): {why}");
                None
            }
            AudioPlan::Chosen(c) => {
                let have_audio = (self.audio.available)();
                let talkback = self.audio.talkback.as_ref();
                let direction = sdp::answer_direction(c.offered, have_audio, talkback.is_some());
                let talker = match (direction, talkback) {
                    (Direction::SendRecv | Direction::RecvOnly, Some(t)) => {
                        Some(t.talker(talker_name, c.codec, c.payload_type))
                    }
                    _ => None,
                };
                Some(AudioPeerPlan {
                    codec: c.codec,
                    payload_type: c.payload_type,
                    direction,
                    talker,
                })
            }
        }
    }

    fn reserve(&self) -> Result<Reservation<'_>, SessionError> {
        let mut inner = self.lock();
        if inner.closing {
            return Err(SessionError::ShuttingDown);
        }
        if inner.sessions.len() + inner.reserved >= self.opts.max_viewers {
            return Err(SessionError::Full {
                max: self.opts.max_viewers,
            });
        }
        let port = inner.ports.acquire().ok_or(SessionError::NoPort {
            size: inner.ports.size(),
        })?;
        inner.reserved += 1;
        Ok(Reservation {
            mgr: self,
            port,
            armed: true,
        })
    }

    /// A trickled candidate from the viewer of session `id`.
    pub async fn add_remote_candidate(
        &self,
        id: &str,
        candidate: RTCIceCandidateInit,
    ) -> Result<(), SessionError> {
        let pc = self
            .lock()
            .sessions
            .get(id)
            .map(|e| e.pc.clone())
            .ok_or_else(|| SessionError::NotFound(id.to_owned()))?;
        pc.add_ice_candidate(candidate)
            .await
            .map_err(|e| SessionError::Negotiation(format!("bad candidate: {e}")))
    }

    /// The session of a viewer id (KVS), if it has one.
    pub fn session_of(&self, viewer: &str) -> Option<String> {
        self.lock()
            .sessions
            .iter()
            .find(|(_, e)| e.viewer.as_deref() == Some(viewer))
            .map(|(id, _)| id.clone())
    }

    /// Ends a session and waits (bounded) until its connection is closed. False if unknown.
    pub async fn close(&self, id: &str) -> bool {
        let found = self
            .lock()
            .sessions
            .get(id)
            .map(|e| (e.cancel.clone(), e.done.clone()));
        let Some((cancel, mut done)) = found else {
            return false;
        };
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), done.wait_for(|d| *d)).await;
        true
    }

    /// Closes every session (daemon shutdown); new offers are refused from now on.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = {
            let mut inner = self.lock();
            inner.closing = true;
            inner.sessions.keys().cloned().collect()
        };
        let closes = ids.iter().map(|id| self.close(id));
        futures_util::future::join_all(closes).await;
    }

    pub fn summaries(&self) -> Vec<SessionSummary> {
        let inner = self.lock();
        inner
            .sessions
            .iter()
            .map(|(id, e)| {
                let c = &e.counters;
                let first = c.first_frame_ms.load(Ordering::Relaxed);
                SessionSummary {
                    id: id.clone(),
                    viewer: e.viewer.clone(),
                    state: e.state.borrow().to_string(),
                    age_s: e.created.elapsed().as_secs_f64(),
                    frames_sent: c.frames_sent.load(Ordering::Relaxed),
                    packets_sent: c.packets_sent.load(Ordering::Relaxed),
                    bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
                    frames_skipped: c.frames_skipped.load(Ordering::Relaxed),
                    keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
                    first_frame_ms: (first > 0).then_some(first),
                    audio: e.audio.as_ref().map(|(desc, _)| desc.clone()),
                    audio_packets_sent: e
                        .audio
                        .as_ref()
                        .and_then(|(_, c)| c.as_ref())
                        .map_or(0, |c| c.packets_sent.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }

    /// Called by a session's task when it has ended.
    fn remove(&self, id: &str, port: u16) {
        let mut inner = self.lock();
        if let Some(e) = inner.sessions.remove(id) {
            inner.ended.add(&e);
        }
        inner.ports.release(port);
    }
}

/// set_remote → create_answer → set_local, then the answer text: at once when trickling,
/// otherwise after gathering completes or `gather_timeout` passes (whatever was gathered by
/// then goes in; host candidates come first and are instant).
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    offer: &str,
    events: &PeerEvents,
    trickled: bool,
    audio: Option<(&str, Direction)>,
    gather_timeout: Duration,
) -> Result<String, SessionError> {
    let desc = RTCSessionDescription::offer(offer.to_owned())
        .map_err(|e| SessionError::Negotiation(e.to_string()))?;
    pc.set_remote_description(desc)
        .await
        .map_err(|e| SessionError::Negotiation(e.to_string()))?;
    peer::set_directions(pc, audio)
        .await
        .map_err(|e| SessionError::Internal(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| SessionError::Negotiation(e.to_string()))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| SessionError::Internal(e.to_string()))?;
    if !trickled {
        let mut done = events.gathering_done.clone();
        if tokio::time::timeout(gather_timeout, done.wait_for(|d| *d))
            .await
            .is_err()
        {
            tracing::debug!(
                ms = gather_timeout.as_millis() as u64,
                "gathering not complete at the cap; answering with what we have"
            );
        }
    }
    pc.local_description()
        .await
        .map(|d| sdp::finish_answer(&d.sdp, trickled))
        .ok_or_else(|| SessionError::Internal("no local description after answering".into()))
}

/// A session's whole life after the answer.
#[allow(clippy::too_many_arguments)]
async fn lifetime(
    mgr: Weak<SessionManager>,
    id: String,
    port: u16,
    pc: Arc<dyn PeerConnection>,
    events: PeerEvents,
    media: Vec<MediaTask>,
    cancel: CancellationToken,
    connect_timeout: Duration,
    done: watch::Sender<bool>,
) {
    let mut state = events.state;
    let born = SystemTime::now();
    let connected = tokio::select! {
        _ = cancel.cancelled() => false,
        r = tokio::time::timeout(connect_timeout, state.wait_for(|s| matches!(s,
            RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed))) => {
            match r {
                Ok(Ok(s)) => *s == RTCPeerConnectionState::Connected,
                Ok(Err(_)) => false,
                Err(_) => {
                    tracing::info!(session = %id, "viewer never connected; dropping the session");
                    false
                }
            }
        }
    };

    if connected {
        tracing::info!(session = %id, "viewer connected");
        let media_cancel = cancel.clone();
        let media_tasks: Vec<_> = media.into_iter().map(|m| tokio::spawn(m.run())).collect();
        let reason = tokio::select! {
            _ = media_cancel.cancelled() => "closed by us",
            r = state.wait_for(|s| matches!(s, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) => {
                if r.is_ok() { "connection failed or closed by the viewer" } else { "connection gone" }
            }
        };
        cancel.cancel();
        for task in media_tasks {
            let _ = task.await;
        }
        tracing::info!(session = %id, reason, seconds = born.elapsed().unwrap_or_default().as_secs(), "session ended");
    }

    if let Err(e) = pc.close().await {
        tracing::debug!(session = %id, "closing peer connection: {e}");
    }
    if let Some(mgr) = mgr.upgrade() {
        mgr.remove(&id, port);
    }
    let _ = done.send(true);
}
