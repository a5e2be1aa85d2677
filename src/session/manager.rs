//! The set of live viewer sessions: admission, answering, lifetime, cleanup.
//!
//! Local WHEP and KVS both come here with an offer and leave with an answer; everything after
//! that (connect, media, teardown) is the session's own task. A session ends when the viewer
//! says so (WHEP DELETE, a new offer from the same KVS client id), when ICE gives up on it
//! (the only signal we get from a viewer that simply vanished), when it never connects, when
//! it can no longer be sent to (a write stall), or on shutdown — and in every case its slot,
//! sockets and port are returned.
//!
//! Admission counts two kinds of session separately: connected viewers (`webrtc.max_viewers`)
//! and sessions still connecting (`webrtc.max_pending`). Offers that never connect (a client
//! that posts and goes away, a flood) only ever fill the second; when it is full the oldest
//! connecting session makes room, and each expires after `webrtc.connect_timeout_s`. So
//! offers that go nowhere can delay a real viewer but not lock it out.

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
use super::candidate::{self, CandidatePolicy, Verdict};
use super::feed::{FrameFeed, KeyframeRequests};
use super::id::SessionId;
use super::peer::{self, AudioPeerPlan, NetworkOptions, PeerEvents};
use super::ports::PortPool;
use super::sdp::{self, AudioPlan, Direction, SdpError};
use super::viewer::{MediaTask, ViewerCounters};
use crate::rtp::Stamper;
use crate::signaling::kvs::ClientId;

/// Settings for admission and connection handling.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub max_viewers: usize,
    pub network: NetworkOptions,
    pub udp_port_range: Option<(u16, u16)>,
    /// Cap on gathering for answers that must carry every candidate (WHEP, Alexa).
    pub gather_timeout: Duration,
    /// A session that is answered but not connected after this long is dropped
    /// (`webrtc.connect_timeout_s`).
    pub connect_timeout: Duration,
    /// Sessions answered (or being answered) but not connected, at most
    /// (`webrtc.max_pending`); past it the oldest connecting session is dropped.
    pub max_pending: usize,
    /// Remote ICE candidates one session takes, offer and trickle together
    /// (`webrtc.max_remote_candidates`).
    pub max_remote_candidates: usize,
    /// Which remote candidates are used at all.
    pub candidates: CandidatePolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("bad offer: {0}")]
    BadOffer(#[from] SdpError),
    #[error("viewer limit reached ({max} of webrtc.max_viewers = {max} in use); try again later")]
    Full { max: usize },
    #[error("too many viewers connecting at once (webrtc.max_pending = {max}); try again shortly")]
    Busy { max: usize },
    #[error(
        "this session already has {max} remote candidates (webrtc.max_remote_candidates); no more are taken"
    )]
    TooManyCandidates { max: usize },
    #[error("a newer offer from the same viewer replaced this one")]
    Superseded,
    #[error("no free UDP port in webrtc.udp_port_min..=webrtc.udp_port_max ({size} ports)")]
    NoPort { size: usize },
    #[error("offer rejected by the WebRTC stack: {0}")]
    Negotiation(String),
    #[error("WebRTC failure: {0}")]
    Internal(String),
    #[error("no session {0}")]
    NotFound(SessionId),
    #[error("shutting down")]
    ShuttingDown,
}

/// One offer to answer.
pub struct OfferRequest {
    /// Stable viewer identity (the KVS client id). A new offer from the same viewer replaces
    /// its previous session. None for WHEP, where every POST is a new session.
    pub viewer: Option<ClientId>,
    pub sdp: String,
    /// Extra ICE servers for this session (KVS TURN), on top of `webrtc.stun_urls`.
    pub ice_servers: Vec<IceServer>,
    /// Where to send local candidates if the viewer trickles. Ignored when the offer does not
    /// announce trickle support: such viewers (Alexa) get one complete answer.
    pub trickle: Option<mpsc::Sender<String>>,
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub session_id: SessionId,
    pub sdp: String,
    /// True when the answer went out before gathering and candidates follow on the channel.
    pub trickled: bool,
    pub offer_to_answer: Duration,
}

/// A snapshot of one session, for logs, health and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// What WHEP's PATCH and DELETE act on: shown only to token holders. None when the
    /// reader may not see it; serialized as `""` then, as /stats always has.
    #[serde(serialize_with = "id_or_empty")]
    pub id: Option<SessionId>,
    /// The KVS client id, or for WHEP a label derived from the session id (`whep-` and 8 hex
    /// digits of its SHA-256) that names the viewer in talkback status and logs without
    /// giving its id away.
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
    /// The KVS viewer it serves (None for WHEP): a newer offer from it replaces this session.
    viewer: Option<ClientId>,
    pc: Arc<dyn PeerConnection>,
    cancel: CancellationToken,
    counters: Arc<ViewerCounters>,
    /// The audio we answered, and its counters when we send audio.
    audio: Option<(String, Option<Arc<ViewerCounters>>)>,
    state: watch::Receiver<RTCPeerConnectionState>,
    created: Instant,
    done: watch::Receiver<bool>,
    /// Counted against `max_viewers` (true) or `max_pending` (false).
    connected: bool,
    /// Dropped to make room for a newer connecting session; its task is closing it, and it no
    /// longer counts against either cap.
    evicted: bool,
    /// Remote candidates taken so far (the offer's and trickled ones).
    remote_candidates: usize,
    /// The offer generation that made it (see `Inner::latest_offer`).
    generation: u64,
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
    sessions: HashMap<SessionId, Entry>,
    /// Per viewer id (KVS): the generation of its newest offer. An offer admits its session
    /// only if it is still the newest, so two quick offers from one viewer end with one
    /// session, the second's.
    latest_offer: HashMap<ClientId, u64>,
    /// The last generation handed out.
    generation: u64,
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

/// Closes a peer connection that never became a session: the offer failed, or its caller
/// went away (an HTTP client that hung up, a KVS handler that timed out) and dropped the
/// future mid-answer. Without it the connection, its socket and its gathering would live on.
struct PeerGuard(Option<Arc<dyn PeerConnection>>);

impl PeerGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        if let Some(pc) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = pc.close().await {
                    tracing::debug!("closing an unanswered peer connection: {e}");
                }
            });
        }
    }
}

/// Forgets a viewer's newest-offer generation when that offer does not become a session.
struct LatestOffer<'a> {
    mgr: &'a SessionManager,
    viewer: Option<(ClientId, u64)>,
}

impl Drop for LatestOffer<'_> {
    fn drop(&mut self) {
        if let Some((viewer, generation)) = self.viewer.take() {
            let mut inner = self.mgr.lock();
            if inner.latest_offer.get(&viewer) == Some(&generation) {
                inner.latest_offer.remove(&viewer);
            }
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
                latest_offer: HashMap::new(),
                generation: 0,
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
        self.lock().sessions.values().filter(|e| !e.evicted).count()
    }

    /// Sessions connected (against `max_viewers`) and connecting (against `max_pending`,
    /// offers still being answered included).
    pub fn occupancy(&self) -> (usize, usize) {
        let inner = self.lock();
        let (connected, pending) = inner.occupancy();
        (connected, pending)
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
    ///
    /// The answer is made on a task of its own, so a caller that goes away (an HTTP client
    /// that hangs up, a KVS handler past its deadline) never interrupts the peer connection
    /// halfway through being built, which would leave its sockets behind. When the answer is
    /// ready and nobody is waiting for it any more, its session is closed at once.
    pub async fn offer(&self, req: OfferRequest) -> Result<Answer, SessionError> {
        let Some(me) = self.me.upgrade() else {
            return Err(SessionError::ShuttingDown);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let result = me.answer(req).await;
            if let Err(Ok(orphan)) = tx.send(result) {
                tracing::info!(session = %orphan.session_id, "the offer's sender went away before the answer; closing its session");
                me.close(&orphan.session_id).await;
            }
        });
        rx.await
            .unwrap_or_else(|_| Err(SessionError::Internal("the answering task failed".into())))
    }

    async fn answer(&self, req: OfferRequest) -> Result<Answer, SessionError> {
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

        let (offer_sdp, dropped) = candidate::filter_offer(
            &prepared.sdp,
            &self.opts.candidates,
            self.opts.max_remote_candidates,
        );
        if dropped > 0 {
            tracing::info!(
                dropped,
                max = self.opts.max_remote_candidates,
                "offer candidates ignored (unusable addresses, or past webrtc.max_remote_candidates)"
            );
        }
        let offered_candidates = candidate::count_in(&offer_sdp);

        // This offer becomes the viewer's newest before its old sessions are looked up, so an
        // older offer still being answered can no longer admit its session.
        let mut latest = LatestOffer {
            mgr: self,
            viewer: None,
        };
        let mut generation = 0;
        if let Some(viewer) = &req.viewer {
            let old: Vec<SessionId> = {
                let mut inner = self.lock();
                inner.generation += 1;
                generation = inner.generation;
                inner.latest_offer.insert(viewer.clone(), generation);
                inner
                    .sessions
                    .iter()
                    .filter(|(_, e)| e.viewer.as_ref() == Some(viewer))
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            latest.viewer = Some((viewer.clone(), generation));
            for id in old {
                tracing::info!(session = %id, viewer = %viewer, "new offer from the same viewer replaces its session");
                self.close(&id).await;
            }
        }

        let mut reservation = self.reserve()?;
        let id = SessionId::generate();
        let label = req
            .viewer
            .as_ref()
            .map_or_else(|| whep_label(&id), ClientId::to_string);
        let audio = self.plan_audio(&prepared.audio, &label);
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
        let guard = PeerGuard(Some(peer.pc.clone()));

        let answer = negotiate(
            &peer.pc,
            &offer_sdp,
            &events,
            trickled,
            audio_mid.as_ref().map(|(m, d)| (m.as_str(), *d)),
            self.opts.gather_timeout,
        )
        .await?;

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
        {
            let mut inner = self.lock();
            if inner.closing {
                return Err(SessionError::ShuttingDown);
            }
            if let Some((viewer, generation)) = &latest.viewer
                && inner.latest_offer.get(viewer) != Some(generation)
            {
                tracing::info!(viewer = %viewer, "a newer offer from this viewer arrived while answering; this one is dropped");
                latest.viewer = None;
                return Err(SessionError::Superseded);
            }
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
                    connected: false,
                    evicted: false,
                    remote_candidates: offered_candidates,
                    generation,
                },
            );
            reservation.armed = false;
            // The session owns the connection and the generation from here on.
            latest.viewer = None;
        }
        guard.disarm();

        let video = MediaTask {
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
        };
        let mut audio_task = None;
        if let (Some((track, ssrc)), Some((codec, pt, _)), Some(audio_counters)) =
            (&peer.audio, audio_answer, audio_counters)
        {
            audio_task = Some(MediaTask {
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
            (video, audio_task),
            cancel,
            self.opts.connect_timeout,
            done_tx,
        ));

        let offer_to_answer = started.elapsed();
        tracing::info!(
            session = %id,
            viewer = req.viewer.as_ref().map_or("-", ClientId::as_str),
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
        let (connected, pending) = inner.occupancy();
        if connected >= self.opts.max_viewers {
            return Err(SessionError::Full {
                max: self.opts.max_viewers,
            });
        }
        if pending >= self.opts.max_pending {
            // Make room by dropping the connecting session that has waited longest: a real
            // viewer connects within a second of its answer, so the oldest is the likeliest
            // to be one that never will.
            let oldest = inner
                .sessions
                .iter_mut()
                .filter(|(_, e)| !e.connected && !e.evicted)
                .min_by_key(|(_, e)| e.created);
            match oldest {
                Some((id, e)) => {
                    tracing::info!(session = %id, age_ms = e.created.elapsed().as_millis() as u64,
                        "webrtc.max_pending reached: dropping the oldest unconnected session");
                    e.evicted = true;
                    e.cancel.cancel();
                }
                None => {
                    return Err(SessionError::Busy {
                        max: self.opts.max_pending,
                    });
                }
            }
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

    /// Whether a remote candidate is skipped whatever session it names (an address the
    /// candidate policy does not use): [`add_remote_candidate`](Self::add_remote_candidate)
    /// answers Ok for it before looking the session up.
    pub fn ignores_candidate(&self, candidate: &str) -> bool {
        matches!(self.opts.candidates.judge(candidate), Verdict::Ignore(_))
    }

    /// A trickled candidate from the viewer of session `id`. Unusable addresses are skipped
    /// (Ok); past `max_remote_candidates` the candidate is refused.
    pub async fn add_remote_candidate(
        &self,
        id: &SessionId,
        candidate: RTCIceCandidateInit,
    ) -> Result<(), SessionError> {
        if let Verdict::Ignore(why) = self.opts.candidates.judge(&candidate.candidate) {
            tracing::debug!(session = %id, why, "remote candidate ignored");
            return Ok(());
        }
        let pc = {
            let mut inner = self.lock();
            let e = inner
                .sessions
                .get_mut(id)
                .filter(|e| !e.evicted)
                .ok_or_else(|| SessionError::NotFound(id.clone()))?;
            if e.remote_candidates >= self.opts.max_remote_candidates {
                return Err(SessionError::TooManyCandidates {
                    max: self.opts.max_remote_candidates,
                });
            }
            e.remote_candidates += 1;
            e.pc.clone()
        };
        pc.add_ice_candidate(candidate)
            .await
            .map_err(|e| SessionError::Negotiation(format!("bad candidate: {e}")))
    }

    /// The session of a viewer id (KVS), if it has one.
    pub fn session_of(&self, viewer: &ClientId) -> Option<SessionId> {
        self.lock()
            .sessions
            .iter()
            .find(|(_, e)| e.viewer.as_ref() == Some(viewer) && !e.evicted)
            .map(|(id, _)| id.clone())
    }

    /// A session has connected: it moves from the connecting count to the viewer count, if
    /// there is room. False when `max_viewers` are already connected (it must close).
    fn mark_connected(&self, id: &SessionId) -> bool {
        let mut inner = self.lock();
        let (connected, _) = inner.occupancy();
        match inner.sessions.get_mut(id) {
            Some(e) if !e.evicted && connected < self.opts.max_viewers => {
                e.connected = true;
                true
            }
            _ => false,
        }
    }

    /// Ends a session and waits (bounded) until its connection is closed. False if unknown.
    pub async fn close(&self, id: &SessionId) -> bool {
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
        let ids: Vec<SessionId> = {
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
                    id: Some(id.clone()),
                    viewer: Some(
                        e.viewer
                            .as_ref()
                            .map_or_else(|| whep_label(id), ClientId::to_string),
                    ),
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
    fn remove(&self, id: &SessionId, port: u16) {
        let mut inner = self.lock();
        if let Some(e) = inner.sessions.remove(id) {
            inner.ended.add(&e);
            if let Some(viewer) = &e.viewer
                && inner.latest_offer.get(viewer) == Some(&e.generation)
            {
                inner.latest_offer.remove(viewer);
            }
        }
        inner.ports.release(port);
    }
}

impl Inner {
    /// (connected, connecting): evicted sessions count as neither; offers still being
    /// answered count as connecting.
    fn occupancy(&self) -> (usize, usize) {
        let mut connected = 0;
        let mut pending = self.reserved;
        for e in self.sessions.values().filter(|e| !e.evicted) {
            if e.connected {
                connected += 1;
            } else {
                pending += 1;
            }
        }
        (connected, pending)
    }
}

/// The public name of a WHEP session: `whep-` and the first 8 hex digits of the SHA-256 of
/// its id. Enough to tell viewers apart, nothing to act on them with.
pub fn whep_label(id: &SessionId) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(id.as_str().as_bytes());
    format!("whep-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// A summary's id as /stats has always shown it: the id, or `""` when it is hidden.
fn id_or_empty<S: serde::Serializer>(id: &Option<SessionId>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.as_ref().map_or("", SessionId::as_str))
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
    id: SessionId,
    port: u16,
    pc: Arc<dyn PeerConnection>,
    events: PeerEvents,
    (video, audio): (MediaTask, Option<MediaTask>),
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

    let admitted = connected && mgr.upgrade().is_some_and(|m| m.mark_connected(&id));
    if connected && !admitted {
        tracing::info!(session = %id, "viewer connected, but webrtc.max_viewers are already watching; closing");
    }

    if admitted {
        tracing::info!(session = %id, "viewer connected");
        let media_cancel = cancel.clone();
        let mut tasks = futures_util::stream::FuturesUnordered::new();
        tasks.push(tokio::spawn(async move { (true, video.run().await) }));
        if let Some(a) = audio {
            tasks.push(tokio::spawn(async move { (false, a.run().await) }));
        }
        let peer_closed = peer::closed_by_peer(&pc);
        tokio::pin!(peer_closed);
        let reason = loop {
            tokio::select! {
                _ = media_cancel.cancelled() => break "closed by us",
                r = state.wait_for(|s| matches!(s, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) => {
                    break if r.is_ok() { "connection failed or closed by the viewer" } else { "connection gone" };
                }
                _ = &mut peer_closed => break "viewer closed the connection",
                Some(ended) = futures_util::StreamExt::next(&mut tasks) => match ended {
                    Ok((video, end)) if end.ends_session(video) => break end.as_str(),
                    Ok(_) => {}
                    Err(_) => break "media task failed",
                },
            }
        };
        cancel.cancel();
        while futures_util::StreamExt::next(&mut tasks).await.is_some() {}
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
