//! Publishing once to an SFU over WHIP (RFC 9725), so that the fan-out to many viewers
//! happens on a media server and the device's uplink carries one copy.
//!
//! The publisher is one more consumer of the same packetized frames every viewer reads
//! ([`FrameFeed`]): no second encoder, no second packetizer. It is a viewer whose offer we
//! make: the peer is built by the session code's `peer::build`, media is sent by the same
//! `MediaTask` (so PLI/FIR from the SFU go through the same keyframe coalescing as viewers'),
//! and only who offers and how the SDP travels differ.
//!
//! - [`machine`]: when to post, retry, delete (sans-IO, virtual-clock tests).
//! - [`whip`]: the HTTP exchange and its headers.
//! - this file: the thin tokio driver, and the counters health, `/stats` and metrics read.
//!
//! Bitrate: the published copy is the main encoder's output (`encoder.bitrate_kbps`). A
//! different rendition for the SFU would need a second encoder, which is what a Pi cannot
//! afford; an SFU that wants lower rates for some viewers does simulcast/transcoding itself.

pub mod machine;
pub mod whip;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

use crate::rtp::Stamper;
use crate::session::peer::{self, AudioPeerPlan, NetworkOptions, Peer, PeerEvents};
use crate::session::sdp::{AudioCodec, Direction, ProfileLevelId};
use crate::session::viewer::{MediaTask, ViewerCounters};
use crate::session::{AudioService, FrameFeed, IceServer, KeyframeRequests};
use machine::{Action, Cause, Event, Failure, Phase, PublishMachine};
pub use whip::Token;

/// The payload types we offer: the ones browsers use, which every SFU accepts.
const H264_PT: u8 = 102;
const OPUS_PT: u8 = 111;
/// Constrained Baseline 3.1, when the encoder has not told us its profile yet.
const DEFAULT_PROFILE: u32 = 0x42e01f;
/// How long a DELETE may take at shutdown or before republishing.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);
/// ICE timeouts of the publishing peer: no traffic from the SFU for 3 s is "disconnected",
/// 3 s more is "failed" (viewers get 5 + 10 s). An SFU that vanished (crashed, restarted)
/// takes every viewer behind it along, so giving up sooner means they are back sooner; a
/// false alarm costs one POST and a keyframe. The SFU's RTCP reports (about every second) and
/// our 2 s consent checks keep a live connection well inside it.
const ICE_DISCONNECTED: Duration = Duration::from_secs(3);
const ICE_FAILED: Duration = Duration::from_secs(3);

/// `[publish]`, validated. Its `Debug` shows only the endpoint's host: the path may hold a
/// secret (Cloudflare's stream key), and the token is masked by [`Token`].
#[derive(Clone)]
pub struct PublishOptions {
    /// The WHIP endpoint (`publish.whip_url`).
    pub whip_url: url::Url,
    /// `publish.bearer_token`; None sends no `Authorization`.
    pub token: Option<Token>,
    /// `[webrtc]` network settings, shared with viewers (host addresses, STUN, NAT 1:1).
    pub network: NetworkOptions,
    /// Cap on gathering before the (complete) offer is posted (`webrtc.gather_timeout_ms`).
    pub gather_timeout: Duration,
    /// From the answer to ICE+DTLS up, at most (`webrtc.connect_timeout_s`).
    pub connect_timeout: Duration,
    /// Each WHIP HTTP request, at most.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for PublishOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishOptions")
            .field("whip_url", &redacted_target(&self.whip_url))
            .field("token", &self.token)
            .field("network", &self.network)
            .field("gather_timeout", &self.gather_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The publisher's state, as health, `/stats`, metrics and the STATUS line read it.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Phase, last error, timestamps: changed only by the driver.
    status: Mutex<StatusInner>,
    /// Retries after a failure, by [`Cause::index`].
    republishes: [AtomicU64; Cause::ALL.len()],
    /// Sent video, across every publication (one set of counters for all attempts).
    pub video: Arc<ViewerCounters>,
    /// Sent audio, across every publication.
    pub audio: Arc<ViewerCounters>,
    /// Publications that reached "publishing".
    connections: AtomicU64,
    /// Local candidates sent in trickle PATCHes.
    trickled: AtomicU64,
}

#[derive(Debug)]
struct StatusInner {
    /// Where the machine is.
    phase: Phase,
    /// When it got there.
    since: Instant,
    /// The last failure since media last flowed.
    last_error: Option<String>,
    /// When the next attempt is due, while backing off.
    retry_at: Option<Instant>,
}

impl Default for StatusInner {
    fn default() -> Self {
        StatusInner {
            phase: Phase::Idle,
            since: Instant::now(),
            last_error: None,
            retry_at: None,
        }
    }
}

/// A copy of the publisher's state at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishSnapshot {
    /// `idle`, `posting`, `connecting`, `publishing`, `backoff` or `stopped`.
    pub state: &'static str,
    /// Seconds in this state.
    pub state_s: f64,
    /// Why the last attempt failed (cleared once media flows).
    pub last_error: Option<String>,
    /// Seconds until the next attempt, while backing off.
    pub retry_in_s: Option<f64>,
    /// Retries after a failure, by cause (every cause listed).
    pub republishes: std::collections::BTreeMap<&'static str, u64>,
    /// Publications that connected.
    pub connections: u64,
    /// Local candidates sent in trickle PATCHes (0 while offers are complete).
    pub trickled_candidates: u64,
    pub video_frames_sent: u64,
    pub video_bytes_sent: u64,
    pub audio_bytes_sent: u64,
    pub keyframe_requests: u64,
}

impl PublishStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    pub fn snapshot(&self) -> PublishSnapshot {
        let now = Instant::now();
        let s = self.lock();
        PublishSnapshot {
            state: s.phase.as_str(),
            state_s: now.saturating_duration_since(s.since).as_secs_f64(),
            last_error: s.last_error.clone(),
            retry_in_s: s
                .retry_at
                .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            republishes: self.republishes().into_iter().collect(),
            connections: self.connections.load(Ordering::Relaxed),
            trickled_candidates: self.trickled.load(Ordering::Relaxed),
            video_frames_sent: self.video.frames_sent.load(Ordering::Relaxed),
            video_bytes_sent: self.video.bytes_sent.load(Ordering::Relaxed),
            audio_bytes_sent: self.audio.bytes_sent.load(Ordering::Relaxed),
            keyframe_requests: self.video.keyframe_requests.load(Ordering::Relaxed),
        }
    }

    /// Retries by cause, every cause listed.
    pub fn republishes(&self) -> Vec<(&'static str, u64)> {
        Cause::ALL
            .iter()
            .map(|c| {
                (
                    c.as_str(),
                    self.republishes[c.index()].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// One line for systemd's STATUS: `publish: publishing` or `publish: backoff (…)`.
    pub fn status_line(&self) -> String {
        let s = self.lock();
        match (&s.phase, &s.last_error) {
            (Phase::Backoff, Some(e)) => format!("publish: {} ({e})", s.phase.as_str()),
            _ => format!("publish: {}", s.phase.as_str()),
        }
    }

    fn record(&self, m: &PublishMachine, now: Instant) {
        let mut s = self.lock();
        if s.phase != m.phase() {
            s.phase = m.phase();
            s.since = now;
            if m.phase() == Phase::Publishing {
                self.connections.fetch_add(1, Ordering::Relaxed);
            }
        }
        s.last_error = m.last_failure().map(|f| f.detail.clone());
        s.retry_at = m.retry_at();
    }
}

/// The running publisher.
pub struct Publisher {
    /// Shared with health, `/stats` and metrics.
    pub stats: Arc<PublishStats>,
    /// Cancelled to stop: the driver then DELETEs the resource and ends.
    stop: CancellationToken,
    /// The driver task.
    task: tokio::task::JoinHandle<()>,
}

/// What the driver needs to make and feed a publication.
struct Context {
    opts: PublishOptions,
    client: whip::WhipClient,
    feed: FrameFeed,
    keyframes: KeyframeRequests,
    audio: AudioService,
    video_profile: ProfileLevelId,
    stats: Arc<PublishStats>,
}

/// One publication's peer, from offer to close.
struct Attempt {
    peer: Peer,
    events: PeerEvents,
    /// Whether the offer had an Opus section we send on.
    audio: bool,
    /// The server's answer, applied when the machine says to await the connection.
    answer: Option<String>,
    /// Cancels this publication's media tasks.
    media: CancellationToken,
    /// The offer as posted (its ICE credentials and first section head trickle fragments).
    offer: String,
    /// Local candidates (JSON) as they are gathered, when this offer went out before
    /// gathering finished (trickle).
    candidates: Option<mpsc::Receiver<String>>,
    /// PATCHes the candidates to the resource; aborted with the attempt.
    trickle: Option<tokio::task::JoinHandle<()>>,
}

impl Attempt {
    async fn close(self) {
        if let Some(t) = &self.trickle {
            t.abort();
        }
        self.media.cancel();
        if let Err(e) = self.peer.pc.close().await {
            tracing::debug!("closing the publishing peer: {e}");
        }
    }
}

impl Publisher {
    /// Starts publishing in the background.
    pub fn start(
        mut opts: PublishOptions,
        feed: FrameFeed,
        keyframes: KeyframeRequests,
        audio: AudioService,
        video_profile: ProfileLevelId,
    ) -> Result<Publisher, String> {
        opts.network.ice_disconnected_timeout = ICE_DISCONNECTED;
        opts.network.ice_failed_timeout = ICE_FAILED;
        let client = whip::WhipClient::new(
            opts.whip_url.clone(),
            opts.token.clone(),
            opts.request_timeout,
        )?;
        let stats = Arc::new(PublishStats::default());
        let stop = CancellationToken::new();
        let ctx = Context {
            opts,
            client,
            feed,
            keyframes,
            audio,
            video_profile,
            stats: stats.clone(),
        };
        let machine =
            PublishMachine::new(machine::backoff_config(), crate::backoff::system_jitter());
        let task = tokio::spawn(drive(ctx, machine, stop.clone()));
        Ok(Publisher { stats, stop, task })
    }

    /// Stops publishing: DELETEs the resource (bounded) and closes the peer.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The driver: does what the machine says, reports back what happened.
async fn drive(ctx: Context, mut m: PublishMachine, stop: CancellationToken) {
    let target = redacted_target(&ctx.opts.whip_url);
    tracing::info!(endpoint = %target, "publishing over WHIP");
    let mut attempt: Option<Attempt> = None;
    // ICE servers from the last 201's `Link` headers, used from the next offer on.
    let mut link_servers: Vec<IceServer> = Vec::new();
    // The last 201 said the server takes trickle PATCHes (`Accept-Patch`): the next offer
    // goes out without waiting for gathering, its candidates follow. The first offer, before
    // we know, is complete.
    let mut trickle_ok = false;
    let mut actions = m.handle(Event::Start, Instant::now());
    ctx.stats.record(&m, Instant::now());
    loop {
        let mut event = None;
        for action in actions {
            match action {
                Action::Post => {
                    event = Some(tokio::select! {
                        _ = stop.cancelled() => Event::Stop,
                        r = post(&ctx, &link_servers, trickle_ok) => match r {
                                Ok((mut a, created)) => {
                                if !created.ice_servers.is_empty() {
                                    link_servers = created.ice_servers.clone();
                                }
                                trickle_ok = created.trickle;
                                if let Some(rx) = a.candidates.take() {
                                    if created.trickle {
                                        a.trickle = Some(tokio::spawn(trickle(
                                            ctx.client.clone(),
                                            created.resource.clone(),
                                            created.etag.clone(),
                                            a.offer.clone(),
                                            rx,
                                            a.events.gathering_done.clone(),
                                            ctx.stats.clone(),
                                        )));
                                    } else {
                                        tracing::info!("the WHIP server no longer takes trickle; the next offer will be complete");
                                    }
                                }
                                attempt = Some(a);
                                Event::Created { resource: created.resource }
                            }
                            Err((a, f)) => {
                                if let Some(a) = a {
                                    a.close().await;
                                }
                                Event::Failed(f)
                            }
                        },
                    });
                }
                Action::AwaitConnection => {
                    let Some(a) = attempt.as_mut() else {
                        event = Some(Event::Failed(Failure::new(
                            Cause::Local,
                            "no peer to connect",
                        )));
                        continue;
                    };
                    event = Some(tokio::select! {
                        _ = stop.cancelled() => Event::Stop,
                        r = connect(a, ctx.opts.connect_timeout) => match r {
                            Ok(()) => Event::Connected,
                            Err(f) => {
                                if a.trickle.is_some() {
                                    // Whatever went wrong, the next offer carries every
                                    // candidate itself.
                                    trickle_ok = false;
                                }
                                Event::Failed(f)
                            }
                        },
                    });
                }
                Action::Run => {
                    let Some(a) = attempt.as_ref() else {
                        event = Some(Event::Failed(Failure::new(Cause::Local, "no peer to run")));
                        continue;
                    };
                    tracing::info!(endpoint = %target, "publishing: media flows to the WHIP server");
                    event = Some(tokio::select! {
                        _ = stop.cancelled() => Event::Stop,
                        why = run_media(&ctx, a) => Event::Failed(Failure::new(Cause::Dropped, why)),
                    });
                }
                Action::Delete { resource } => {
                    if let Some(a) = attempt.take() {
                        a.close().await;
                    }
                    match tokio::time::timeout(DELETE_TIMEOUT, ctx.client.delete(&resource)).await {
                        Ok(Ok(())) => tracing::debug!("WHIP resource deleted"),
                        Ok(Err(f)) => tracing::info!("WHIP DELETE: {}", f.detail),
                        Err(_) => tracing::info!("WHIP DELETE: no answer within 2 s"),
                    }
                }
                Action::WaitUntil(t) => {
                    if let Some(a) = attempt.take() {
                        a.close().await;
                    }
                    event = Some(tokio::select! {
                        _ = stop.cancelled() => Event::Stop,
                        _ = tokio::time::sleep_until(t.into()) => Event::Timer,
                    });
                }
                Action::Done => {
                    if let Some(a) = attempt.take() {
                        a.close().await;
                    }
                    ctx.stats.record(&m, Instant::now());
                    tracing::info!("publishing stopped");
                    return;
                }
            }
        }
        let Some(event) = event else {
            // The machine asked for nothing to wait on: only a stop can follow.
            stop.cancelled().await;
            actions = m.handle(Event::Stop, Instant::now());
            continue;
        };
        if let Event::Failed(f) = &event {
            if matches!(f.cause, Cause::Unauthorized) {
                tracing::error!(endpoint = %target, "{}", f.detail);
            } else {
                tracing::warn!(endpoint = %target, cause = f.cause.as_str(), "publishing failed: {}; republishing after a backoff", f.detail);
            }
            if m.phase() != Phase::Backoff {
                ctx.stats.republishes[f.cause.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
        actions = m.handle(event, Instant::now());
        ctx.stats.record(&m, Instant::now());
    }
}

/// The endpoint for logs: scheme, host and port only. Some services (Cloudflare Stream)
/// put the stream's secret key in the path.
fn redacted_target(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}/…", url.scheme()),
        (Some(h), None) => format!("{}://{h}/…", url.scheme()),
        _ => "(endpoint)".to_string(),
    }
}

type PostResult = Result<(Attempt, whip::Created), (Option<Attempt>, Failure)>;

/// Builds the peer, makes the offer and POSTs it: complete (after gathering, bounded), or at
/// once with candidates to follow when `trickle`.
async fn post(ctx: &Context, link_servers: &[IceServer], trickle: bool) -> PostResult {
    let local = |stage: &str, e: &dyn std::fmt::Display| {
        Failure::new(Cause::Local, format!("{stage}: {e}"))
    };
    let profile = ctx.video_profile.get().unwrap_or(DEFAULT_PROFILE);
    let fmtp =
        format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile:06x}");
    let with_audio = (ctx.audio.available)();
    let audio = with_audio.then_some(AudioPeerPlan {
        codec: AudioCodec::Opus,
        payload_type: OPUS_PT,
        direction: Direction::SendOnly,
        talker: None,
    });
    // Room for every candidate a host gathers (one per address and server) before the
    // PATCH task starts reading; a full channel drops a candidate with a debug line.
    let (tx, rx) = mpsc::channel(64);
    let (peer, events) = peer::build(
        &ctx.opts.network,
        H264_PT,
        &fmtp,
        audio,
        link_servers,
        0,
        trickle.then(|| (tx, (Some("0".to_string()), 0))),
    )
    .await
    .map_err(|e| (None, local("building the peer", &e)))?;
    let mut attempt = Attempt {
        peer,
        events,
        audio: with_audio,
        answer: None,
        media: CancellationToken::new(),
        offer: String::new(),
        candidates: trickle.then_some(rx),
        trickle: None,
    };
    let gather = if trickle {
        Duration::ZERO
    } else {
        ctx.opts.gather_timeout
    };
    let offer = match make_offer(&attempt, gather).await {
        Ok(o) => o,
        Err(f) => return Err((Some(attempt), f)),
    };
    attempt.offer = offer.clone();
    match ctx.client.post(&offer).await {
        Ok(created) => {
            let mut attempt = attempt;
            attempt.answer = Some(created.answer.clone());
            tracing::info!(
                trickle,
                trickle_offered = created.trickle,
                ice_servers = created.ice_servers.len(),
                audio = attempt.audio,
                "WHIP offer accepted (201)"
            );
            Ok((attempt, created))
        }
        Err(f) => Err((Some(attempt), f)),
    }
}

/// Sendonly transceivers, the offer, gathering (bounded; zero for a trickle offer): the SDP to
/// POST.
async fn make_offer(a: &Attempt, gather_timeout: Duration) -> Result<String, Failure> {
    let pc = &a.peer.pc;
    let local = |stage: &str, e: &dyn std::fmt::Display| {
        Failure::new(Cause::Local, format!("{stage}: {e}"))
    };
    peer::set_directions(pc, None)
        .await
        .map_err(|e| local("setting directions", &e))?;
    let offer = pc
        .create_offer(None)
        .await
        .map_err(|e| local("creating the offer", &e))?;
    pc.set_local_description(offer)
        .await
        .map_err(|e| local("applying the offer", &e))?;
    let mut done = a.events.gathering_done.clone();
    if !gather_timeout.is_zero()
        && tokio::time::timeout(gather_timeout, done.wait_for(|d| *d))
            .await
            .is_err()
    {
        tracing::debug!("gathering not complete at the cap; offering what we have");
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| Failure::new(Cause::Local, "no local description after the offer"))
}

/// Sends local candidates to the resource as they are gathered (RFC 9725 §4.3.1), then
/// `a=end-of-candidates`. Stops at the first 405/501 (the server does not take them).
async fn trickle(
    client: whip::WhipClient,
    resource: String,
    mut etag: Option<String>,
    offer: String,
    mut rx: mpsc::Receiver<String>,
    mut gathered: tokio::sync::watch::Receiver<bool>,
    stats: Arc<PublishStats>,
) {
    loop {
        let mut batch = Vec::new();
        let end = tokio::select! {
            c = rx.recv() => match c {
                Some(json) => {
                    batch.push(json);
                    false
                }
                None => true,
            },
            r = gathered.wait_for(|d| *d) => { let _ = r; true }
        };
        while let Ok(json) = rx.try_recv() {
            batch.push(json);
        }
        let candidates: Vec<String> = batch
            .iter()
            .filter_map(|j| {
                serde_json::from_str::<webrtc::peer_connection::RTCIceCandidateInit>(j)
                    .ok()
                    .map(|c| c.candidate)
                    .filter(|c| !c.is_empty())
            })
            .collect();
        if candidates.is_empty() && !end {
            continue;
        }
        let Some(fragment) = whip::trickle_fragment(&offer, &candidates, end) else {
            tracing::warn!("cannot trickle: the offer has no ICE credentials or section");
            return;
        };
        match client.patch(&resource, etag.as_deref(), fragment).await {
            Ok(new) => {
                if new.is_some() {
                    etag = new;
                }
                stats
                    .trickled
                    .fetch_add(candidates.len() as u64, Ordering::Relaxed);
            }
            Err(whip::PatchError::NotSupported) => {
                tracing::info!(
                    "the WHIP server refuses trickle PATCHes (405/501); relying on the offer's candidates"
                );
                return;
            }
            Err(whip::PatchError::Failed(f)) => tracing::info!("trickle PATCH: {}", f.detail),
        }
        if end {
            return;
        }
    }
}

/// Applies the answer and waits for ICE+DTLS.
async fn connect(a: &mut Attempt, timeout: Duration) -> Result<(), Failure> {
    if let Some(answer) = a.answer.take() {
        let desc = RTCSessionDescription::answer(answer)
            .map_err(|e| Failure::new(Cause::BadAnswer, format!("answer: {e}")))?;
        a.peer
            .pc
            .set_remote_description(desc)
            .await
            .map_err(|e| Failure::new(Cause::BadAnswer, format!("answer refused: {e}")))?;
    }
    let mut state = a.events.state.clone();
    let r = tokio::time::timeout(
        timeout,
        state.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        }),
    )
    .await;
    match r {
        Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected => Ok(()),
        Ok(Ok(s)) => Err(Failure::new(
            Cause::ConnectFailed,
            format!("the connection to the WHIP server {}", *s),
        )),
        Ok(Err(_)) => Err(Failure::new(Cause::ConnectFailed, "the peer went away")),
        Err(_) => Err(Failure::new(
            Cause::ConnectFailed,
            format!(
                "ICE/DTLS to the WHIP server not up within {} s",
                timeout.as_secs()
            ),
        )),
    }
}

/// Sends media until the connection fails or a media task ends; says why.
async fn run_media(ctx: &Context, a: &Attempt) -> String {
    let stamper = |ssrc, pt| Stamper::new(ssrc, pt, rand::random(), rand::random());
    let video = MediaTask {
        track: a.peer.track.clone(),
        stamper: stamper(a.peer.ssrc, H264_PT),
        feed: ctx.feed.clone(),
        keyframes: Some(ctx.keyframes.clone()),
        counters: ctx.stats.video.clone(),
        cancel: a.media.clone(),
        demand: None,
        first_frame: None,
    };
    let mut tasks = futures_util::stream::FuturesUnordered::new();
    tasks.push(tokio::spawn(async move { (true, video.run().await) }));
    if let Some((track, ssrc)) = &a.peer.audio {
        let audio = MediaTask {
            track: track.clone(),
            stamper: stamper(*ssrc, OPUS_PT),
            feed: ctx.audio.opus.clone(),
            keyframes: None,
            counters: ctx.stats.audio.clone(),
            cancel: a.media.clone(),
            demand: None,
            first_frame: None,
        };
        tasks.push(tokio::spawn(async move { (false, audio.run().await) }));
    }
    let mut state = a.events.state.clone();
    // An SFU that hangs up (Janus on a kick or when its room goes) sends close_notify: seen
    // here at once, where ICE would take its disconnected + failed timeouts.
    let sfu_closed = crate::session::peer::closed_by_peer(&a.peer.pc);
    tokio::pin!(sfu_closed);
    let why = loop {
        tokio::select! {
            _ = &mut sfu_closed => break "the WHIP server closed the connection".to_string(),
            r = state.wait_for(|s| matches!(s, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) => {
                break match r {
                    Ok(s) => format!("the connection to the WHIP server {}", *s),
                    Err(_) => "the peer went away".to_string(),
                };
            }
            Some(ended) = futures_util::StreamExt::next(&mut tasks) => match ended {
                Ok((video, end)) if end.ends_session(video) => break end.as_str().to_string(),
                Ok(_) => {}
                Err(_) => break "a media task failed".to_string(),
            },
        }
    };
    a.media.cancel();
    while futures_util::StreamExt::next(&mut tasks).await.is_some() {}
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_never_print_the_secrets() {
        let opts = PublishOptions {
            whip_url: url::Url::parse("https://cf.example/KEY123/webRTC/publish").unwrap(),
            token: Some(Token("tok-s3cret".into())),
            network: NetworkOptions {
                host_addresses: Vec::new(),
                nat_1to1_ips: Vec::new(),
                stun_urls: Vec::new(),
                ice_disconnected_timeout: Duration::from_secs(5),
                ice_failed_timeout: Duration::from_secs(10),
            },
            gather_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        };
        let printed = format!("{opts:?}");
        assert!(
            !printed.contains("KEY123") && !printed.contains("tok-s3cret"),
            "{printed}"
        );
    }

    #[test]
    fn logs_name_the_host_but_not_the_path() {
        let u = url::Url::parse("https://customer-x.cloudflarestream.com/SECRETKEY/webRTC/publish")
            .unwrap();
        assert_eq!(
            redacted_target(&u),
            "https://customer-x.cloudflarestream.com/…"
        );
        let u = url::Url::parse("http://10.0.0.2:7080/whip/endpoint/cam").unwrap();
        assert_eq!(redacted_target(&u), "http://10.0.0.2:7080/…");
    }
}
