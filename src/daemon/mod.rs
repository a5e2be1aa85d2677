//! The running daemon: one capture, one packetizer, the audio ([`audio`]), the session
//! manager, the HTTP server, and (in KVS mode) the signaling client — started in that order,
//! stopped in reverse.

mod audio;
mod health;
mod notify;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::media::{AccessUnit, Capture, CaptureOptions, CaptureState, FrameSink};
use crate::rtp::{Frame, FramePool, H264Packetizer, PacketizerConfig, Payloader};
use crate::session::{FrameFeed, KeyframeRequests, SessionManager, SessionOptions};
use crate::signaling;

/// Everything `run` needs, already validated (built from the config file by `config`).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub capture: CaptureOptions,
    pub sessions: SessionOptions,
    /// `[http]`: where to listen, tokens, TLS, CORS and limits.
    pub http: crate::http::HttpOptions,
    /// Frames a viewer may fall behind before it skips to the next keyframe.
    pub viewer_queue_frames: usize,
    /// The GOP cache for passed-through sources (`webrtc.gop_cache_*`).
    pub gop: crate::session::GopOptions,
    pub signaling: SignalingMode,
    /// The audio source; None sends no audio.
    pub audio: Option<crate::media::audio::AudioOptions>,
    /// Talkback; None when `audio.talkback = false`.
    pub talkback: Option<crate::media::talkback::TalkbackOptions>,
    /// Kvs mode: `/healthz` reports degraded once the master is offline this long.
    pub kvs_offline_degraded_after: Duration,
    /// `[publish]`: publish once to an SFU over WHIP; None when `publish.enabled = false`.
    pub publish: Option<crate::publish::PublishOptions>,
}

#[derive(Debug, Clone)]
pub enum SignalingMode {
    /// WHEP and the viewer page on `listen`.
    Local,
    /// Master on a KVS signaling channel; `listen` serves health and stats only.
    Kvs(Box<signaling::kvs::KvsOptions>),
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("GStreamer could not be initialised: {0}")]
    Gstreamer(String),
    #[error("packetizer: {0}")]
    Packetizer(#[from] crate::rtp::PacketizeError),
    #[error("capture: {0}")]
    Capture(#[from] crate::media::MediaError),
    #[error("{0}")]
    HttpSetup(#[from] crate::http::HttpSetupError),
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("KVS signaling: {0}")]
    Kvs(#[from] signaling::kvs::control::ControlError),
    #[error("publish: cannot make the WHIP HTTP client: {0}")]
    Publish(String),
    #[error("audio setup did not finish: {0}")]
    Audio(#[source] tokio::task::JoinError),
}

/// What the health endpoint reports, and systemd's status line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub ok: bool,
    pub reason: Option<String>,
    pub frames: u64,
    pub last_frame_age_ms: Option<u64>,
    pub capture_state: String,
    pub restarts: u64,
    pub encoder: Option<String>,
    pub passthrough: bool,
    pub viewers: usize,
    pub max_viewers: usize,
    pub packetizer_errors: u64,
    /// The audio capture: "off", "starting", "running", "no_audio", "stopped" or
    /// "restarting (...)".
    /// Audio never makes the daemon unhealthy: viewers still get video without it.
    pub audio: String,
    /// Kvs mode: the signaling master; None in local mode.
    pub signaling: Option<health::SignalingHealth>,
    /// Serving, but not fully: the KVS master has been offline longer than
    /// `kvs.offline_degraded_after_s` (see `signaling.reason`). Does not change `ok`: viewers
    /// already watching still get video.
    pub degraded: bool,
    /// The WHIP publisher, when `publish.enabled`. Never makes the daemon unhealthy: local
    /// viewers are served whether or not the SFU takes the stream.
    pub publish: Option<crate::publish::PublishSnapshot>,
}

/// Shared handles the HTTP handlers read.
#[derive(Clone)]
pub struct Runtime {
    capture: Arc<Mutex<Option<Capture>>>,
    pub sessions: Arc<SessionManager>,
    pub feed: FrameFeed,
    stall_after: Duration,
    packetizer_errors: Arc<std::sync::atomic::AtomicU64>,
    pub started: Instant,
    /// KVS signaling counters, in kvs mode.
    kvs: Option<Arc<signaling::kvs::KvsStats>>,
    /// See [`DaemonOptions::kvs_offline_degraded_after`].
    kvs_offline_degraded_after: Duration,
    /// The KVS step deadline, for the watchdog's idea of a stuck machine.
    kvs_step_timeout: Option<Duration>,
    audio: Arc<audio::DaemonAudio>,
    /// HTTP connection counters, for `/stats`.
    connections: Arc<crate::http::ConnectionStats>,
    /// The WHIP publisher's state, when publishing.
    publish: Option<Arc<crate::publish::PublishStats>>,
}

impl Runtime {
    /// The capture's status; None once it has been stopped.
    fn capture_status(&self) -> Option<crate::media::CaptureStatus> {
        self.capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.status())
    }

    fn signaling_health(&self) -> Option<health::SignalingHealth> {
        self.kvs.as_ref().map(|k| {
            health::SignalingHealth::from_snapshot(&k.snapshot(), self.kvs_offline_degraded_after)
        })
    }

    pub fn health(&self) -> Health {
        let status = self.capture_status();
        let signaling = self.signaling_health();
        let degraded = signaling.as_ref().is_some_and(|s| s.degraded);
        let viewers = self.sessions.count();
        let max_viewers = self.sessions.max_viewers();
        let packetizer_errors = self
            .packetizer_errors
            .load(std::sync::atomic::Ordering::Relaxed);
        let Some(status) = status else {
            return Health {
                ok: false,
                reason: Some("capture is stopped".into()),
                frames: 0,
                last_frame_age_ms: None,
                capture_state: "stopped".into(),
                restarts: 0,
                encoder: None,
                passthrough: false,
                viewers,
                max_viewers,
                packetizer_errors,
                audio: self.audio.state_text(),
                signaling,
                degraded,
                publish: self.publish.as_ref().map(|p| p.snapshot()),
            };
        };
        let age = status.last_frame_age;
        let fresh = age.is_some_and(|a| a <= self.stall_after);
        let state = match &status.state {
            CaptureState::Starting => "starting".to_string(),
            CaptureState::Running => "running".to_string(),
            CaptureState::Restarting { attempt, retry_in } => {
                format!(
                    "restarting (attempt {attempt}, next try in {} ms)",
                    retry_in.as_millis()
                )
            }
            CaptureState::Stopped => "stopped".to_string(),
        };
        let reason = (!fresh).then(|| {
            let mut r = match age {
                Some(a) => format!("no video from the camera for {:.1} s", a.as_secs_f64()),
                None => "no video from the camera yet".to_string(),
            };
            r.push_str(&format!("; capture {state}"));
            if let Some(e) = &status.last_error {
                r.push_str(&format!("; last error: {e}"));
            }
            r
        });
        Health {
            ok: fresh,
            reason,
            frames: status.frames,
            last_frame_age_ms: age.map(|a| a.as_millis() as u64),
            capture_state: state,
            restarts: status.restarts,
            encoder: status.encoder.clone(),
            passthrough: status.passthrough,
            viewers,
            max_viewers,
            packetizer_errors,
            audio: self.audio.state_text(),
            signaling,
            degraded,
            publish: self.publish.as_ref().map(|p| p.snapshot()),
        }
    }
}

/// Starts everything, prints where to watch, and runs until `shutdown` resolves.
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    gstreamer::init().map_err(|e| DaemonError::Gstreamer(e.to_string()))?;

    // The port first: a taken port or a bad certificate fails the start before the camera
    // is opened, and candidates naming our real listening socket can be ignored.
    let (tokens, tls) = opts.http.load()?;
    let listener = TcpListener::bind(opts.http.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: opts.http.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(DaemonError::Http)?;
    let mut session_opts = opts.sessions.clone();
    session_opts.candidates.own = vec![bound];

    let feed = FrameFeed::with_gop(opts.viewer_queue_frames, opts.gop);
    let packetizer_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let packetizer = H264Packetizer::new(PacketizerConfig::default())?;
    let video_profile = crate::session::sdp::ProfileLevelId::default();
    let sink = packetizing_sink(
        packetizer,
        feed.clone(),
        packetizer_errors.clone(),
        video_profile.clone(),
    );
    let capture = Capture::start(opts.capture.clone(), sink)?;
    let capture = Arc::new(Mutex::new(Some(capture)));

    let cap = capture.clone();
    let keyframes = KeyframeRequests::spawn(
        crate::session::keyframe::KeyframePolicy::for_framerate(opts.capture.framerate),
        Arc::new(move || {
            if let Some(c) = cap.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                c.request_keyframe();
            }
        }),
    );
    // Opening sound devices blocks (ALSA, Pulse, a pipeline's first state change).
    let (audio_opts, talkback_opts) = (opts.audio.clone(), opts.talkback.clone());
    let daemon_audio = Arc::new(
        tokio::task::spawn_blocking(move || audio::DaemonAudio::start(audio_opts, talkback_opts))
            .await
            .map_err(DaemonError::Audio)?,
    );
    let sessions = SessionManager::new(
        session_opts,
        feed.clone(),
        keyframes.clone(),
        daemon_audio.service.clone(),
        video_profile.clone(),
        crate::metrics::Timings::default(),
    );
    let mut rt = Runtime {
        capture: capture.clone(),
        sessions: sessions.clone(),
        feed,
        stall_after: opts.capture.stall_timeout.max(Duration::from_secs(3)),
        packetizer_errors,
        started: Instant::now(),
        kvs: None,
        kvs_offline_degraded_after: opts.kvs_offline_degraded_after,
        kvs_step_timeout: match &opts.signaling {
            SignalingMode::Kvs(k) => Some(k.step_timeout),
            SignalingMode::Local => None,
        },
        audio: daemon_audio.clone(),
        connections: Arc::default(),
        publish: None,
    };

    let mut kvs_task = None;
    if let SignalingMode::Kvs(kvs) = &opts.signaling {
        let handler = Arc::new(KvsViewers(sessions.clone()));
        let stats = signaling::kvs::KvsStats::with_offer_to_answer(
            sessions.timings().offer_to_answer.clone(),
        );
        let master =
            signaling::kvs::KvsMaster::start_with_stats((**kvs).clone(), handler, Arc::new(stats))
                .await?;
        rt.kvs = Some(master.stats().clone());
        kvs_task = Some(master);
    }
    // One more consumer of the same frames: no second encoder.
    let mut publisher = None;
    if let Some(p) = &opts.publish {
        match crate::publish::Publisher::start(
            p.clone(),
            rt.feed.clone(),
            keyframes.clone(),
            daemon_audio.service.clone(),
            video_profile.clone(),
        ) {
            Ok(started) => {
                rt.publish = Some(started.stats.clone());
                publisher = Some(started);
            }
            Err(e) => return Err(DaemonError::Publish(e)),
        }
    }
    let connections = Arc::new(crate::http::ConnectionStats::default());
    rt.connections = connections.clone();
    let metrics = crate::metrics::Metrics::new(crate::metrics::Sources {
        http: connections.clone(),
        capture: capture.clone(),
        audio: daemon_audio.capture.clone(),
        sessions: sessions.clone(),
        keyframes,
        publish: rt.publish.clone(),
        signaling: match &rt.kvs {
            Some(k) => crate::metrics::Signaling::Kvs(k.clone()),
            None => crate::metrics::Signaling::Local,
        },
    });
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .merge(
            Router::new()
                .route("/stats", get(stats))
                .route_layer(axum::middleware::from_fn(crate::http::require_viewer)),
        )
        .with_state(rt.clone())
        .merge(
            crate::metrics::router(Arc::new(metrics))
                .route_layer(axum::middleware::from_fn(crate::http::require_metrics)),
        );
    match &opts.signaling {
        SignalingMode::Local => {
            let whep = signaling::local::Whep::new(
                sessions.clone(),
                opts.http.offers_per_ip_per_s,
                opts.http.body_timeout,
            );
            app = app.merge(signaling::local::router(whep, &opts.http.cors_origins));
            announce(&opts, bound, "local (WHEP)", &tokens, tls.as_deref());
        }
        SignalingMode::Kvs(_) => {
            announce(&opts, bound, "Amazon KVS master", &tokens, tls.as_deref())
        }
    }
    let app = app.layer(axum::middleware::from_fn_with_state(
        crate::http::Gate {
            tokens: tokens.clone(),
            stats: connections.clone(),
        },
        crate::http::identify,
    ));

    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::http::server::serve(
        listener,
        app,
        opts.http.limits.clone(),
        tls.clone(),
        connections,
        stop.clone(),
    ));
    let reloader = spawn_reloader(opts.http.clone(), tokens, tls);

    let mode = match &opts.signaling {
        SignalingMode::Local => "local (WHEP)",
        SignalingMode::Kvs(_) => "KVS master",
    };
    let what = format!(
        "{mode}, {} {}x{}@{}",
        describe_source(&opts.capture),
        opts.capture.width,
        opts.capture.height,
        opts.capture.framerate
    );
    let notifier = spawn_notifier(rt.clone(), what);

    shutdown.await;
    tracing::info!("shutting down");
    reloader.abort();
    if let Some((task, notifier)) = notifier {
        task.abort();
        let stopping = lock_notifier(&notifier).stopping();
        send_notices(&stopping);
    }
    if let Some(k) = kvs_task {
        let _ = tokio::time::timeout(Duration::from_millis(500), k.stop()).await;
    }
    // DELETE the WHIP resource (bounded inside) so the SFU drops the publisher at once.
    if let Some(p) = publisher {
        let _ = tokio::time::timeout(Duration::from_millis(2500), p.stop()).await;
    }
    // Peers first (they say goodbye over DTLS), then the camera, then HTTP.
    let _ = tokio::time::timeout(Duration::from_millis(1200), sessions.shutdown()).await;
    let stopping_audio = daemon_audio.clone();
    let _ = tokio::time::timeout(
        Duration::from_millis(700),
        tokio::task::spawn_blocking(move || stopping_audio.stop()),
    )
    .await;
    let capture = capture.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(c) = capture {
        let _ = tokio::time::timeout(
            Duration::from_millis(700),
            tokio::task::spawn_blocking(move || c.stop()),
        )
        .await;
    }
    stop.cancel();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(300), server).await {
        return Err(DaemonError::Http(e));
    }
    tracing::info!("stopped");
    Ok(())
}

/// The capture's sink: packetize each access unit once and publish it to every viewer.
/// Runs on GStreamer's streaming thread. Public so that tests and benches drive the exact
/// function the daemon runs (tests/hot_path.rs counts its allocations).
///
/// Per access unit, in steady state: no copy before packetizing (the packetizer reads the
/// mapped GStreamer buffer), one copy into the shared frame, and no allocation (the frame
/// and its `Arc` come back from a [`FramePool`] once viewers have let go of them).
pub fn packetizing_sink(
    packetizer: H264Packetizer,
    feed: FrameFeed,
    errors: Arc<std::sync::atomic::AtomicU64>,
    profile: crate::session::sdp::ProfileLevelId,
) -> FrameSink {
    /// What each access unit updates, under one lock (only the streaming thread takes it).
    struct State {
        /// Parameter-set cache and counters carry over from one AU to the next.
        packetizer: H264Packetizer,
        /// Frames the viewers have finished with, to write the next ones into.
        pool: FramePool,
    }
    let state = Mutex::new(State {
        packetizer,
        pool: FramePool::new(VIDEO_POOL_FRAMES),
    });
    Arc::new(move |au: AccessUnit| {
        feed.on_source(au.source);
        let Ok(data) = au.map() else {
            count_dropped(
                &errors,
                "access unit",
                &"buffer cannot be mapped for reading",
            );
            return;
        };
        let frame = {
            let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
            let State { packetizer, pool } = &mut *guard;
            let frame = pool.fill(|f| packetizer.packetize_into(&data, au.pts_ns, f));
            if au.keyframe
                && let Some(id) = packetizer.profile_level_id()
            {
                profile.set(id);
            }
            frame
        };
        // Unmapped before the viewers are woken; the buffer goes back to GStreamer when this
        // call returns (the frame holds its own copy).
        drop(data);
        publish(frame, &feed, &errors, "access unit");
    })
}

/// Published video frames the sink's pool tracks. A frame comes back once the feed's ring and
/// every viewer have let go of it: within a frame or two for viewers that keep up; a lagging
/// viewer holds frames for up to the feed's capacity (30 by default), and then the pool
/// allocates instead of waiting. 64 covers that with room to spare at one atomic load per
/// tracked frame per access unit.
const VIDEO_POOL_FRAMES: usize = 64;

/// Hands a packetized frame to its viewers, or counts (and sparingly logs) why there is none.
fn publish(
    frame: Result<Arc<Frame>, crate::rtp::PacketizeError>,
    feed: &FrameFeed,
    errors: &std::sync::atomic::AtomicU64,
    what: &str,
) {
    match frame {
        Ok(frame) if !frame.is_empty() => feed.publish(frame),
        Ok(_) => {}
        Err(e) => count_dropped(errors, what, &e),
    }
}

/// Counts a unit that could not be sent; logs the first few and then every hundredth, so a
/// broken encoder cannot flood the journal.
fn count_dropped(errors: &std::sync::atomic::AtomicU64, what: &str, why: &dyn std::fmt::Display) {
    let n = errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n < 5 || n.is_multiple_of(100) {
        tracing::warn!(count = n + 1, "{what} dropped: {why}");
    }
}

/// Reads the tokens file and the certificate again on every SIGHUP.
fn spawn_reloader(
    http: crate::http::HttpOptions,
    tokens: crate::http::Tokens,
    tls: Option<Arc<crate::http::TlsFiles>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("SIGHUP reloads are unavailable: {e}");
                return;
            }
        };
        while hup.recv().await.is_some() {
            http.reload(&tokens, tls.as_deref());
        }
    })
}

fn announce(
    opts: &DaemonOptions,
    bound: SocketAddr,
    mode: &str,
    tokens: &crate::http::Tokens,
    tls: Option<&crate::http::TlsFiles>,
) {
    let host = if bound.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if bound.is_ipv6() {
        format!("[{}]", bound.ip())
    } else {
        bound.ip().to_string()
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}/", bound.port());
    tracing::info!(%url, mode, "camgate {} running", env!("CARGO_PKG_VERSION"));
    if let Some(t) = tls {
        tracing::info!(
            fingerprint = %t.fingerprint(),
            "HTTPS certificate (SHA-256); compare it with what the browser shows for a self-signed one"
        );
    }
    if !tokens.required() && !bound.ip().is_loopback() {
        tracing::warn!(
            listen = %bound,
            "http.allow_anonymous: anyone who can reach this address can watch the camera; set http.tokens to require a token"
        );
    }
    // Plain stdout on purpose: this line is for the person who just typed the command.
    println!(
        "camgate {}: {mode}, {} {}x{}@{}",
        env!("CARGO_PKG_VERSION"),
        describe_source(&opts.capture),
        opts.capture.width,
        opts.capture.height,
        opts.capture.framerate
    );
    match opts.signaling {
        SignalingMode::Local if tokens.required() => println!(
            "camgate: open {url} in a browser to watch (it asks for one of http.tokens; {url}#token=<token> logs straight in)"
        ),
        SignalingMode::Local => println!("camgate: open {url} in a browser to watch"),
        SignalingMode::Kvs(_) => println!("camgate: health at {url}healthz"),
    }
    if let Some(t) = tls {
        println!(
            "camgate: HTTPS certificate SHA-256 {} (check it against the browser's when it is self-signed)",
            t.fingerprint()
        );
    }
}

fn describe_source(c: &CaptureOptions) -> String {
    use crate::media::SourceSpec;
    match &c.source {
        SourceSpec::Test { pattern } => format!("test pattern \"{pattern}\""),
        SourceSpec::V4l2 { device, .. } => format!("V4L2 camera {device}"),
        SourceSpec::Rtsp { url, .. } => {
            format!("RTSP camera {}", crate::media::capture::redact_url(url))
        }
        SourceSpec::File { path, .. } => format!("file {}", path.display()),
    }
}

/// `/healthz`: 200 or 503 for anyone; what is wrong only for callers who may read `/stats`.
async fn healthz(
    State(rt): State<Runtime>,
    access: Option<axum::Extension<crate::http::Access>>,
) -> axum::response::Response {
    let h = rt.health();
    let code = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if crate::http::may_see_details(access.as_deref()) {
        (code, Json(h)).into_response()
    } else {
        (code, Json(serde_json::json!({ "ok": h.ok }))).into_response()
    }
}

async fn stats(
    State(rt): State<Runtime>,
    access: Option<axum::Extension<crate::http::Access>>,
) -> impl IntoResponse {
    // Session ids are what WHEP's PATCH and DELETE act on: only a token holder sees them.
    let authenticated = matches!(access.as_deref(), Some(crate::http::Access::Viewer));
    let mut sessions = rt.sessions.summaries();
    if !authenticated {
        for s in &mut sessions {
            s.id = None;
        }
    }
    let (connected, connecting) = rt.sessions.occupancy();
    let c = &rt.connections;
    Json(serde_json::json!({
        "uptime_s": rt.started.elapsed().as_secs_f64(),
        "frames_published": rt.feed.published(),
        "gop_cache": rt.feed.gop_status().map(|(frames, bytes, c)| serde_json::json!({
            "frames": frames,
            "bytes": bytes,
            "overflows": c.overflows,
            "expired": c.expired,
            "restarts": c.restarts,
        })),
        "health": rt.health(),
        "viewers": { "connected": connected, "connecting": connecting },
        "http": {
            "connections_open": c.open.load(std::sync::atomic::Ordering::Relaxed),
            "connections_refused": c.refused.load(std::sync::atomic::Ordering::Relaxed),
            "connections_evicted": c.evicted.load(std::sync::atomic::Ordering::Relaxed),
            "refused": c.refusals().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        },
        "sessions": sessions,
        "kvs": rt.kvs.as_ref().map(|k| k.snapshot().to_json()),
        "audio": rt.audio.status_json(),
        "publish": rt.publish.as_ref().map(|p| p.snapshot()),
    }))
}

/// Sends the notifier's messages to systemd (`NOTIFY_SOCKET`); failures only matter to a
/// debugger, since systemd is not always there.
fn send_notices(notices: &[notify::Notice]) {
    use sd_notify::NotifyState;
    for n in notices {
        let state = match n {
            notify::Notice::Ready => NotifyState::Ready,
            notify::Notice::Watchdog => NotifyState::Watchdog,
            notify::Notice::Stopping => NotifyState::Stopping,
            notify::Notice::Status(s) => NotifyState::Status(s),
            notify::Notice::ExtendTimeout(d) => {
                NotifyState::ExtendTimeoutUsec(u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
            }
        };
        if let Err(e) = sd_notify::notify(&[state]) {
            tracing::debug!("sd_notify: {e}");
        }
    }
}

type SharedNotifier = Arc<Mutex<notify::Notifier>>;

fn lock_notifier(n: &SharedNotifier) -> std::sync::MutexGuard<'_, notify::Notifier> {
    n.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the systemd notifier when started by systemd (`NOTIFY_SOCKET` set): every 100 ms until
/// `READY=1`, then at half the watchdog interval (at most every second). The task runs on the
/// daemon's runtime, so a hung runtime stops the pings too.
fn spawn_notifier(
    rt: Runtime,
    what: String,
) -> Option<(tokio::task::JoinHandle<()>, SharedNotifier)> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled();
    let steady = watchdog
        .map(|w| (w / 2).min(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1));
    let notifier = Arc::new(Mutex::new(notify::Notifier::new(
        notify::Policy::for_stall(rt.stall_after).with_kvs_step_timeout(rt.kvs_step_timeout),
        what,
        rt.started,
    )));
    let shared = notifier.clone();
    let task = tokio::spawn(async move {
        loop {
            let o = observe(&rt);
            let (notices, ready) = {
                let mut n = lock_notifier(&shared);
                (n.poll(&o), n.is_ready())
            };
            send_notices(&notices);
            if notices.contains(&notify::Notice::Ready) {
                tracing::info!(
                    after_ms = rt.started.elapsed().as_millis() as u64,
                    "systemd notified: ready"
                );
            }
            let wait = if ready {
                steady
            } else {
                Duration::from_millis(100)
            };
            tokio::time::sleep(wait).await;
        }
    });
    Some((task, notifier))
}

fn observe(rt: &Runtime) -> notify::Observation {
    let (capture, frames, last_frame_age, last_capture_error) = match rt.capture_status() {
        Some(s) => (s.state, s.frames, s.last_frame_age, s.last_error),
        None => (CaptureState::Stopped, 0, None, None),
    };
    notify::Observation {
        now: Instant::now(),
        capture,
        frames,
        last_frame_age,
        last_capture_error,
        viewers: rt.sessions.count(),
        kvs: rt.kvs.as_ref().map(|k| {
            let snap = k.snapshot();
            notify::KvsView {
                state: snap.state,
                last_error: snap.last_error,
            }
        }),
        publish: rt.publish.as_ref().map(|p| p.status_line()),
    }
}

/// `[audio]` onto the audio capture's options: `auto` picks what fits the video source.
fn audio_options(
    s: &crate::config::Settings,
    video: &crate::media::SourceSpec,
) -> Option<crate::media::audio::AudioOptions> {
    use crate::config::AudioSource;
    use crate::media::SourceSpec;
    use crate::media::audio::{AudioOptions, AudioSourceSpec};
    let device = s.audio.device.clone();
    let source = match s.audio.source {
        AudioSource::Off => None,
        AudioSource::Test => Some(AudioSourceSpec::Test { freq_hz: 440 }),
        AudioSource::Alsa => Some(AudioSourceSpec::Alsa { device }),
        AudioSource::Pulse => Some(AudioSourceSpec::Pulse { device }),
        AudioSource::Camera => Some(AudioSourceSpec::Camera(video.clone())),
        AudioSource::Auto => match video {
            SourceSpec::Test { .. } => Some(AudioSourceSpec::Test { freq_hz: 440 }),
            SourceSpec::Rtsp { .. } | SourceSpec::File { .. } => {
                Some(AudioSourceSpec::Camera(video.clone()))
            }
            SourceSpec::V4l2 { .. } => None,
        },
    }?;
    Some(AudioOptions {
        source,
        bitrate_kbps: s.audio.bitrate_kbps,
        ..AudioOptions::default()
    })
}

/// KVS viewers are ordinary sessions: the signaling client hands offers to the same manager
/// that serves WHEP, so both paths share admission, fan-out and cleanup.
struct KvsViewers(Arc<SessionManager>);

#[async_trait::async_trait]
impl signaling::kvs::OfferHandler for KvsViewers {
    async fn offer(
        &self,
        client_id: &signaling::kvs::ClientId,
        offer_sdp: &str,
        ice_servers: Vec<signaling::kvs::IceServer>,
        candidates: Option<tokio::sync::mpsc::Sender<String>>,
    ) -> Result<String, String> {
        self.0
            .offer(crate::session::OfferRequest {
                viewer: Some(client_id.clone()),
                sdp: offer_sdp.to_owned(),
                ice_servers,
                trickle: candidates,
            })
            .await
            .map(|a| a.sdp)
            .map_err(|e| e.to_string())
    }

    async fn remote_candidate(&self, client_id: &signaling::kvs::ClientId, candidate_json: &str) {
        let Some(id) = self.0.session_of(client_id) else {
            tracing::debug!(
                viewer = client_id.as_str(),
                "candidate for a viewer with no session; dropped"
            );
            return;
        };
        match serde_json::from_str::<webrtc::peer_connection::RTCIceCandidateInit>(candidate_json) {
            Ok(c) if c.candidate.is_empty() => {}
            Ok(c) => {
                if let Err(e) = self.0.add_remote_candidate(&id, c).await {
                    tracing::info!(viewer = client_id.as_str(), "remote candidate refused: {e}");
                }
            }
            Err(e) => tracing::info!(
                viewer = client_id.as_str(),
                "malformed remote candidate: {e}"
            ),
        }
    }
}

impl DaemonOptions {
    /// Maps validated settings onto what each part of the daemon takes.
    pub fn from_settings(s: &crate::config::Settings) -> DaemonOptions {
        use crate::config::{InputFormat, RtspTransport, SourceKind};
        use crate::media::{EncoderSpec, SourceSpec, V4l2Format};

        let source = match s.source.kind {
            SourceKind::Test => SourceSpec::Test {
                pattern: s.source.pattern.clone(),
            },
            SourceKind::V4l2 => SourceSpec::V4l2 {
                device: s.source.device.display().to_string(),
                format: match s.source.format {
                    InputFormat::Auto => V4l2Format::Auto,
                    InputFormat::Raw => V4l2Format::Raw,
                    InputFormat::Mjpeg => V4l2Format::Mjpeg,
                    InputFormat::H264 => V4l2Format::H264,
                },
            },
            SourceKind::Rtsp => SourceSpec::Rtsp {
                url: s.source.url.clone().unwrap_or_default(),
                transport: match s.source.transport {
                    RtspTransport::Tcp => crate::media::RtspTransport::Tcp,
                    RtspTransport::Udp => crate::media::RtspTransport::Udp,
                },
                username: s.source.username.clone(),
                password: s.source.password.clone(),
                latency_ms: s.source.latency_ms,
            },
            SourceKind::File => SourceSpec::File {
                path: s.source.path.clone().unwrap_or_default(),
                looping: s.source.looping,
            },
        };
        let capture = CaptureOptions {
            source,
            width: s.source.width,
            height: s.source.height,
            framerate: s.source.framerate,
            encoder: EncoderSpec {
                name: s.encoder.name.clone(),
                bitrate_kbps: s.encoder.bitrate_kbps,
                keyframe_interval_s: s.encoder.keyframe_interval_s,
            },
            stall_timeout: Duration::from_secs(u64::from(s.source.stall_timeout_s)),
            ..CaptureOptions::default()
        };
        let w = &s.webrtc;
        let gather_timeout = Duration::from_millis(u64::from(w.gather_timeout_ms));
        let sessions = SessionOptions {
            max_viewers: w.max_viewers,
            network: crate::session::NetworkOptions {
                host_addresses: w.host_addresses.clone(),
                nat_1to1_ips: w.nat_1to1_ips.iter().map(|ip| ip.to_string()).collect(),
                stun_urls: w.stun_urls.clone(),
                ice_disconnected_timeout: Duration::from_secs(5),
                ice_failed_timeout: Duration::from_secs(10),
            },
            udp_port_range: (w.udp_port_min != 0 || w.udp_port_max != 0)
                .then_some((w.udp_port_min, w.udp_port_max)),
            gather_timeout,
            connect_timeout: Duration::from_secs(u64::from(w.connect_timeout_s)),
            max_pending: w.max_pending,
            max_remote_candidates: w.max_remote_candidates,
            candidates: crate::session::CandidatePolicy {
                own: vec![s.http.listen],
            },
        };
        let sessions_network = sessions.network.clone();
        let signaling = match s.signaling.mode {
            crate::config::SignalingMode::Local => SignalingMode::Local,
            crate::config::SignalingMode::Kvs => {
                let k = &s.kvs;
                let iot = match (
                    &k.iot.endpoint,
                    &k.iot.cert,
                    &k.iot.key,
                    &k.iot.role_alias,
                    &k.iot.thing_name,
                ) {
                    (Some(endpoint), Some(cert), Some(key), Some(role_alias), Some(thing_name)) => {
                        Some(signaling::kvs::IotOptions {
                            endpoint: endpoint.clone(),
                            cert: cert.clone(),
                            key: key.clone(),
                            ca: k.iot.ca.clone(),
                            role_alias: role_alias.clone(),
                            thing_name: thing_name.clone(),
                        })
                    }
                    _ => None,
                };
                SignalingMode::Kvs(Box::new(signaling::kvs::KvsOptions {
                    region: k.region.clone(),
                    channel_name: k.channel_name.clone(),
                    channel_arn: k.channel_arn.clone(),
                    endpoint_url: k.endpoint_url.clone(),
                    create_channel: k.create_channel,
                    iot,
                    gather_timeout,
                    ping_interval: Duration::from_secs(u64::from(k.ping_interval_s)),
                    pong_timeout: Duration::from_secs(u64::from(k.pong_timeout_s)),
                    step_timeout: Duration::from_secs(u64::from(k.step_timeout_s)),
                    region_stun: k.region_stun,
                    ..Default::default()
                }))
            }
        };
        let audio = audio_options(s, &capture.source);
        let talkback = s
            .audio
            .talkback
            .then(|| crate::media::talkback::TalkbackOptions {
                // Validated by `Settings::validate`; an unparsable value cannot reach here, and
                // would mean the default sink.
                sink: s
                    .audio
                    .talkback_sink
                    .parse()
                    .unwrap_or(crate::media::talkback::TalkbackSink::Default),
                release_after: Duration::from_secs(1),
            });
        DaemonOptions {
            capture,
            sessions,
            http: http_options(&s.http),
            viewer_queue_frames: w.viewer_queue_frames,
            gop: crate::session::GopOptions {
                max_bytes: w.gop_cache_kb as usize * 1024,
                max_age: Duration::from_millis(u64::from(w.gop_cache_max_age_ms)),
                pace_bytes_per_s: u64::from(w.gop_cache_pace_kbps) * 1000 / 8,
            },
            signaling,
            audio,
            talkback,
            kvs_offline_degraded_after: Duration::from_secs(u64::from(
                s.kvs.offline_degraded_after_s,
            )),
            publish: publish_options(s, &sessions_network, gather_timeout),
        }
    }
}

/// `[publish]` onto the publisher's options; None when disabled (or, which validation
/// prevents, without a usable URL).
fn publish_options(
    s: &crate::config::Settings,
    network: &crate::session::NetworkOptions,
    gather_timeout: Duration,
) -> Option<crate::publish::PublishOptions> {
    let p = &s.publish;
    if !p.enabled {
        return None;
    }
    let whip_url = url::Url::parse(p.whip_url.as_deref()?).ok()?;
    Some(crate::publish::PublishOptions {
        whip_url,
        token: p.bearer_token.clone().map(crate::publish::Token),
        network: network.clone(),
        gather_timeout,
        connect_timeout: Duration::from_secs(u64::from(s.webrtc.connect_timeout_s)),
        request_timeout: Duration::from_secs(10),
    })
}

/// `[http]` onto the server's options.
fn http_options(h: &crate::config::HttpSettings) -> crate::http::HttpOptions {
    crate::http::HttpOptions {
        listen: h.listen,
        tokens: h.tokens.clone(),
        tokens_file: h.tokens_file.clone(),
        metrics_token: h.metrics_token.clone(),
        allow_anonymous: h.allow_anonymous,
        tls: h.tls_cert.clone().zip(h.tls_key.clone()),
        cors_origins: h.cors_origins.clone(),
        limits: crate::http::ConnectionLimits {
            header_timeout: Duration::from_secs(u64::from(h.header_timeout_s)),
            max_connections: h.max_connections,
        },
        body_timeout: Duration::from_secs(u64::from(h.body_timeout_s)),
        offers_per_ip_per_s: h.offers_per_ip_per_s,
    }
}
