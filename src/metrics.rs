//! Prometheus metrics: `GET /metrics` in the OpenMetrics text format, on the daemon's HTTP
//! listener in both signaling modes.
//!
//! Most numbers already exist as the daemon's own status (the captures' status, the session
//! manager's per-viewer counters, the keyframe requests, the KVS stats), so they are read when
//! Prometheus scrapes, by [`DaemonCollector`]; nothing on the media path is counted twice.
//! What exists only as an event, the time from an offer to its answer and to the viewer's
//! first frame, goes into the two histograms of [`Timings`]: the session manager holds them,
//! the WHEP handler and the KVS stats observe offer → answer (each where its answer leaves),
//! and every viewer's video task observes its first frame.
//!
//! Nothing here does I/O: [`Metrics::encode`] renders the text, [`router`] serves it.

use std::fmt;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::media::{AudioCapture, Capture};
use crate::session::{KeyframeRequests, SessionManager};
use crate::signaling::kvs::KvsStats;
use crate::signaling::kvs::machine::State as KvsState;

/// What `/metrics` answers with: OpenMetrics 1.0 text, which Prometheus asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Offer → answer: from a few milliseconds (loopback, host candidates only) to the gather cap
/// (`webrtc.gather_timeout_ms`, 2 s by default; up to 10 s for KVS).
const ANSWER_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 6.0, 10.0,
];
/// Offer → first frame: ICE and DTLS on top of the answer, plus the wait for a keyframe
/// (at once when the encoder can be forced; up to a GOP from a camera passed through).
const FIRST_FRAME_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

/// The event-driven histograms. Cloning shares them (a handle, not a copy).
#[derive(Debug, Clone)]
pub struct Timings {
    /// Offer received → answer sent: the WHEP POST's 201 (local), or the SDP_ANSWER written
    /// to the signaling WebSocket (KVS).
    pub offer_to_answer: Histogram,
    /// Offer reaching the session manager → first video frame written to that viewer.
    pub offer_to_first_frame: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            offer_to_answer: Histogram::new(ANSWER_BUCKETS),
            offer_to_first_frame: Histogram::new(FIRST_FRAME_BUCKETS),
        }
    }
}

/// How viewers reach the daemon, with the KVS master's stats in kvs mode.
#[derive(Debug, Clone)]
pub enum Signaling {
    Local,
    Kvs(Arc<KvsStats>),
}

impl Signaling {
    fn label(&self) -> &'static str {
        match self {
            Signaling::Local => "local",
            Signaling::Kvs(_) => "kvs",
        }
    }
}

/// Where the scrape-time numbers come from: the daemon's running parts.
pub struct Sources {
    pub capture: Arc<Mutex<Option<Capture>>>,
    /// None when no audio source is configured or it could not start.
    pub audio: Arc<Mutex<Option<AudioCapture>>>,
    pub sessions: Arc<SessionManager>,
    pub keyframes: KeyframeRequests,
    /// The WHIP publisher, when `publish.enabled`.
    pub publish: Option<Arc<crate::publish::PublishStats>>,
    pub signaling: Signaling,
    /// The HTTP server's connection and refusal counters.
    pub http: Arc<crate::http::ConnectionStats>,
}

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Registers build info, the session manager's [`Timings`] and the scrape-time collector.
    pub fn new(sources: Sources) -> Metrics {
        let mut registry = Registry::with_prefix("camgate");
        registry.register(
            "build",
            "The running camgate's version (value always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let timings = sources.sessions.timings().clone();
        registry.register_with_unit(
            "offer_to_answer",
            "Offer received to answer sent: the WHEP POST's response (local mode) or the \
             SDP_ANSWER written to the signaling WebSocket (kvs mode)",
            Unit::Seconds,
            timings.offer_to_answer,
        );
        registry.register_with_unit(
            "offer_to_first_frame",
            "Offer received to the first video frame written to that viewer",
            Unit::Seconds,
            timings.offer_to_first_frame,
        );
        registry.register_collector(Box::new(DaemonCollector(sources)));
        Metrics { registry }
    }

    /// The whole exposition, `# EOF` included.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `GET /metrics`, to merge into the daemon's router.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(metrics)
}

async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::warn!("encoding metrics failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
    }
}

/// Reads the daemon's status at scrape time.
struct DaemonCollector(Sources);

impl fmt::Debug for DaemonCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonCollector")
            .field("signaling", &self.0.signaling.label())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Status snapshots stay readable after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Collector for DaemonCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.0;
        let mode = s.signaling.label();

        gauge_family(
            &mut enc,
            "viewers",
            "Viewer sessions (answered, connecting or connected), by signaling mode.",
            &[([("signaling", mode)], s.sessions.count() as i64)],
        )?;

        let (connected, connecting) = s.sessions.occupancy();
        gauge_family(
            &mut enc,
            "viewer_sessions",
            "Viewer sessions connected (against webrtc.max_viewers) and still connecting (against webrtc.max_pending).",
            &[
                ([("state", "connected")], connected as i64),
                ([("state", "connecting")], connecting as i64),
            ],
        )?;
        gauge_family(
            &mut enc,
            "http_connections",
            "HTTP connections open now (http.max_connections is the cap).",
            &[(
                [("signaling", mode)],
                s.http.open.load(std::sync::atomic::Ordering::Relaxed) as i64,
            )],
        )?;
        let refusals: Vec<_> = s
            .http
            .refusals()
            .into_iter()
            .map(|(reason, n)| ([("reason", reason)], n))
            .collect();
        counter_family(
            &mut enc,
            "http_refused",
            "HTTP connections and requests refused, by reason: connection_cap (503 at the cap, every connection busy), evicted (an idle or slow connection closed to make room), tls_handshake, unauthorized (401), host_name (an anonymous request naming a DNS name), offer_rate (429).",
            &refusals,
        )?;

        let video = lock(&s.capture).as_ref().map(|c| c.status());
        let audio = lock(&s.audio).as_ref().map(|c| c.status());

        counter(
            &mut enc,
            "video_frames_captured",
            "Encoded video frames (access units) delivered by the capture, across restarts.",
            None,
            video.as_ref().map_or(0, |v| v.frames),
        )?;

        let sent = s.sessions.sent_totals();
        counter(
            &mut enc,
            "video_frames_sent",
            "Video frames written to viewers, added up over every viewer.",
            None,
            sent.video_frames,
        )?;
        counter(
            &mut enc,
            "video_sent",
            "RTP payload bytes of video written to viewers, added up over every viewer.",
            Some(&Unit::Bytes),
            sent.video_bytes,
        )?;

        let requested: Vec<_> = s
            .keyframes
            .requested()
            .into_iter()
            .map(|(cause, n)| ([("cause", cause.as_str())], n))
            .collect();
        counter_family(
            &mut enc,
            "keyframe_requests",
            "Keyframe requests from viewers, by cause: join (new viewer), pli_fir (PLI or FIR \
             from the viewer), loss (the viewer fell behind).",
            &requested,
        )?;
        counter(
            &mut enc,
            "keyframes_forced",
            "Keyframe requests (after merging) that the encoder accepted: each makes an IDR.",
            None,
            video.as_ref().map_or(0, |v| v.keyframes_forced),
        )?;
        counter(
            &mut enc,
            "keyframe_requests_ignored",
            "Keyframe requests (after merging) that could not be forced because the camera's \
             H.264 is passed through; viewers wait for its next IDR.",
            None,
            video.as_ref().map_or(0, |v| v.keyframe_requests_ignored),
        )?;

        let mut restarts = Vec::new();
        for (capture, by_reason) in [
            ("video", video.as_ref().map(|v| &v.restarts_by_reason)),
            ("audio", audio.as_ref().map(|a| &a.restarts_by_reason)),
        ] {
            let Some(by_reason) = by_reason else { continue };
            for (reason, n) in by_reason {
                // Audio never checks for H.264: that series would only ever say 0.
                if capture == "audio" && *reason == "not_h264" {
                    continue;
                }
                restarts.push(([("capture", capture), ("reason", *reason)], *n));
            }
        }
        counter_family(
            &mut enc,
            "capture_restarts",
            "Capture pipeline restarts, by capture (video, audio) and reason.",
            &restarts,
        )?;

        if let Some(a) = &audio {
            counter_family(
                &mut enc,
                "audio_frames_captured",
                "Encoded 20 ms audio frames delivered by the audio capture, by codec.",
                &[
                    ([("codec", "opus")], a.packets.opus),
                    ([("codec", "pcmu")], a.packets.pcmu),
                    ([("codec", "pcma")], a.packets.pcma),
                ],
            )?;
        }
        counter(
            &mut enc,
            "audio_frames_sent",
            "Audio frames written to viewers, added up over every viewer.",
            None,
            sent.audio_frames,
        )?;
        counter(
            &mut enc,
            "audio_sent",
            "RTP payload bytes of audio written to viewers, added up over every viewer.",
            Some(&Unit::Bytes),
            sent.audio_bytes,
        )?;

        if let Some(p) = &s.publish {
            let phase = p.phase();
            let states: Vec<_> = crate::publish::machine::Phase::ALL
                .iter()
                .map(|st| ([("state", st.as_str())], i64::from(*st == phase)))
                .collect();
            gauge_family(
                &mut enc,
                "publish_state",
                "The WHIP publisher's state: 1 for the current one, 0 for the others.",
                &states,
            )?;
            let republishes: Vec<_> = p
                .republishes()
                .into_iter()
                .map(|(cause, n)| ([("cause", cause)], n))
                .collect();
            counter_family(
                &mut enc,
                "publish_republishes",
                "WHIP publications retried after a failure, by cause: unauthorized (401/403), \
                 unavailable (503/429), refused (other statuses), network, timeout, bad_answer, \
                 connect_failed (ICE/DTLS never up), dropped (up, then lost), local.",
                &republishes,
            )?;
            let snap = p.snapshot();
            counter_family(
                &mut enc,
                "publish_sent_bytes",
                "RTP payload bytes sent to the WHIP server, by media.",
                &[
                    ([("media", "video")], snap.video_bytes_sent),
                    ([("media", "audio")], snap.audio_bytes_sent),
                ],
            )?;
        }

        if let Signaling::Kvs(stats) = &s.signaling {
            let snap = stats.snapshot();
            let states: Vec<_> = KvsState::ALL
                .iter()
                .map(|st| {
                    let name = st.as_str();
                    ([("state", name)], i64::from(name == snap.state))
                })
                .collect();
            gauge_family(
                &mut enc,
                "kvs_signaling_state",
                "The KVS signaling client's state: 1 for the current one, 0 for the others.",
                &states,
            )?;
            let reconnects: Vec<_> = snap
                .reconnects
                .iter()
                .map(|(cause, n)| ([("cause", *cause)], *n))
                .collect();
            counter_family(
                &mut enc,
                "kvs_reconnects",
                "Successful reconnects of the KVS signaling WebSocket, by cause.",
                &reconnects,
            )?;
            if let Some(age) = snap.ice_config_age {
                let g = ConstGauge::new(age.as_secs_f64());
                let m = enc.encode_descriptor(
                    "kvs_ice_config_age",
                    "Time since the ICE (TURN) servers handed to new viewers were fetched \
                     with GetIceServerConfig.",
                    Some(&Unit::Seconds),
                    g.metric_type(),
                )?;
                g.encode(m)?;
            }
        }
        Ok(())
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), fmt::Error> {
    let c = ConstCounter::new(value);
    let m = enc.encode_descriptor(name, help, unit, c.metric_type())?;
    c.encode(m)
}

fn counter_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, u64)],
) -> Result<(), fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, i64)],
) -> Result<(), fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::session::{AudioService, FrameFeed, KeyframeCause, NetworkOptions, SessionOptions};
    use crate::signaling::kvs::machine::Cause;

    fn session_options() -> SessionOptions {
        SessionOptions {
            max_viewers: 4,
            network: NetworkOptions {
                host_addresses: Vec::new(),
                nat_1to1_ips: Vec::new(),
                stun_urls: Vec::new(),
                ice_disconnected_timeout: Duration::from_secs(5),
                ice_failed_timeout: Duration::from_secs(10),
            },
            udp_port_range: None,
            gather_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(30),
            max_pending: 4,
            max_remote_candidates: 32,
            candidates: Default::default(),
        }
    }

    /// kvs mode with no capture running (as during shutdown): every state and cause is listed,
    /// the numbers follow the stats, families without a source are left out.
    #[tokio::test]
    async fn kvs_mode_lists_every_state_and_follows_the_stats() {
        let timings = Timings::default();
        let stats = Arc::new(KvsStats::with_offer_to_answer(
            timings.offer_to_answer.clone(),
        ));
        let keyframes = KeyframeRequests::spawn(
            crate::session::keyframe::KeyframePolicy::for_framerate(30),
            Arc::new(|| {}),
        );
        let sessions = SessionManager::new(
            session_options(),
            FrameFeed::new(4),
            keyframes.clone(),
            AudioService::none(),
            Default::default(),
            timings.clone(),
        );
        let metrics = Metrics::new(Sources {
            capture: Arc::new(Mutex::new(None)),
            audio: Arc::new(Mutex::new(None)),
            sessions,
            keyframes: keyframes.clone(),
            publish: None,
            signaling: Signaling::Kvs(stats.clone()),
            http: Default::default(),
        });

        let text = metrics.encode().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("camgate_viewers{signaling=\"kvs\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("camgate_kvs_signaling_state{state=\"idle\"} 1\n"));
        assert_eq!(text.matches("camgate_kvs_signaling_state{").count(), 8);
        assert_eq!(
            text.matches(" 1\n").count(),
            2,
            "build info and one state: {text}"
        );
        assert_eq!(text.matches("camgate_kvs_reconnects_total{").count(), 6);
        assert!(
            !text.contains("camgate_kvs_ice_config_age"),
            "absent before a fetch"
        );
        assert!(!text.contains("camgate_capture_restarts_total{"));
        assert!(!text.contains("camgate_audio_frames_captured"));

        stats.connected(Cause::Initial, Instant::now());
        stats.connected(Cause::GoAway, Instant::now());
        stats.ice_fetched(Instant::now(), 1);
        stats.answered(Duration::from_millis(40));
        timings.offer_to_first_frame.observe(0.3);
        keyframes.request(KeyframeCause::PliFir);
        let text = metrics.encode().unwrap();
        for line in [
            "camgate_kvs_signaling_state{state=\"connected\"} 1\n",
            "camgate_kvs_signaling_state{state=\"idle\"} 0\n",
            "camgate_kvs_reconnects_total{cause=\"go-away\"} 1\n",
            "camgate_kvs_reconnects_total{cause=\"max-age\"} 0\n",
            "# UNIT camgate_kvs_ice_config_age_seconds seconds\n",
            "camgate_offer_to_answer_seconds_count 1\n",
            "camgate_offer_to_answer_seconds_bucket{le=\"0.025\"} 0\n",
            "camgate_offer_to_answer_seconds_bucket{le=\"0.05\"} 1\n",
            "camgate_offer_to_first_frame_seconds_count 1\n",
            "camgate_keyframe_requests_total{cause=\"pli_fir\"} 1\n",
            "camgate_keyframe_requests_total{cause=\"join\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn publishing_lists_every_state_and_cause() {
        let timings = Timings::default();
        let keyframes = KeyframeRequests::spawn(
            crate::session::keyframe::KeyframePolicy::for_framerate(30),
            Arc::new(|| {}),
        );
        let sessions = SessionManager::new(
            session_options(),
            FrameFeed::new(4),
            keyframes.clone(),
            AudioService::none(),
            Default::default(),
            timings,
        );
        let publish = Arc::new(crate::publish::PublishStats::default());
        let metrics = Metrics::new(Sources {
            capture: Arc::new(Mutex::new(None)),
            audio: Arc::new(Mutex::new(None)),
            sessions,
            keyframes,
            publish: Some(publish.clone()),
            signaling: Signaling::Local,
            http: Default::default(),
        });
        let text = metrics.encode().unwrap();
        assert_eq!(text.matches("camgate_publish_state{").count(), 6, "{text}");
        assert!(
            text.contains("camgate_publish_state{state=\"idle\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("camgate_publish_republishes_total{").count(),
            9,
            "{text}"
        );
        assert!(text.contains("camgate_publish_republishes_total{cause=\"unauthorized\"} 0\n"));
        publish
            .video
            .bytes_sent
            .fetch_add(1234, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("camgate_publish_sent_bytes_total{media=\"video\"} 1234\n"),
            "{text}"
        );
    }
}
