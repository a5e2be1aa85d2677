//! Building one viewer's peer connection with the `webrtc` crate.
//!
//! Everything that touches the `webrtc` API to *create* a connection lives here, so a breaking
//! minor of the crate is one file to fix. A peer is built per viewer because `webrtc` 0.21 binds
//! a local track to one connection only; the shared part (one packetized frame for everyone)
//! is the fan-out in `viewer.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateType, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

use super::IceServer;
use super::interceptor::{KeyframeRequestForwarder, SLOT};
use super::sdp::{AudioCodec, Direction};
use crate::media::talkback::Talker;

/// Network settings shared by every peer, from `[webrtc]` in the config.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Addresses to gather host candidates on; empty = every non-loopback interface.
    pub host_addresses: Vec<IpAddr>,
    pub nat_1to1_ips: Vec<String>,
    pub stun_urls: Vec<String>,
    /// How long without traffic before ICE says "disconnected", then "failed". KVS has no
    /// "bye": a viewer that vanishes is noticed only through these.
    pub ice_disconnected_timeout: Duration,
    pub ice_failed_timeout: Duration,
}

/// The tick `rtc-ice` 0.21 runs its connectivity checks on unless told otherwise
/// (`DEFAULT_CHECK_INTERVAL`, private to the crate).
pub const STACK_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Checks per candidate pair before the stack gives the pair up, by default
/// (`DEFAULT_MAX_BINDING_REQUESTS`, private to the crate).
pub const STACK_MAX_BINDING_REQUESTS: u16 = 7;
/// Our tick. Every step of ICE on the stack waits for the next tick: the controlled side
/// (us, answering) accepts the viewer's nomination only after its own check on that pair came
/// back, so a 200 ms tick cost about 170 ms per connection on loopback. The tick also bounds a
/// second wait: as DTLS client, `rtc` 0.21 queues its ClientHello when ICE selects the pair
/// but sends it only at the next timer, which is this tick (measured: ICE up 0.5 ms after the
/// answer, DTLS done one tick later). The stack pings every pair each tick, so 25 ms is
/// busier than RFC 8445's pacing (Ta = 50 ms between any two new checks): with a handful of
/// pairs, a few hundred small packets a second while checking lasts, which is tens of
/// milliseconds when a pair answers and the 1.4 s budget when none does.
pub const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(25);

/// The check interval and the checks per pair for a tick of `interval`, so that a pair that
/// never answers is given up after as long as with the stack's defaults (the budget is
/// counted in ticks: 7 × 200 ms = 1.4 s). Rounded up: never sooner than the default.
pub fn ice_check_schedule(interval: Duration) -> (Duration, u16) {
    let interval = interval.max(Duration::from_millis(1));
    let budget = STACK_CHECK_INTERVAL.as_nanos() * u128::from(STACK_MAX_BINDING_REQUESTS);
    let attempts = budget.div_ceil(interval.as_nanos());
    (interval, u16::try_from(attempts).unwrap_or(u16::MAX))
}

/// `settings` with our faster connectivity-check tick and the same failure budget. Used for
/// every answer we build, and by the test viewers (so what tests measure is what ships).
pub fn fast_ice_checks(settings: SettingEngineBuilder) -> SettingEngineBuilder {
    let (interval, attempts) = ice_check_schedule(ICE_CHECK_INTERVAL);
    settings.with_ice_connection_attempts(Some(interval), Some(attempts))
}

/// How often a connected session looks whether the viewer has closed the connection.
///
/// `webrtc` 0.21 reports the viewer's DTLS `close_notify` only as the DTLS transport's state:
/// no event, and the connection state stays "connected" (ICE still is, and a closed DTLS
/// transport counts as connected in the W3C state table). Without a look, a viewer that hangs
/// up keeps its slot until ICE gives up on it, 15 s later. A look is one uncontended lock.
pub const PEER_CLOSE_POLL: Duration = Duration::from_millis(250);

/// Resolves once the viewer has closed the DTLS transport (sent `close_notify`, which
/// `RTCPeerConnection.close()` does in browsers and in webrtc-rs) or it failed; never when the
/// connection has no DTLS transport yet (then ICE and the connect timeout end the session).
pub async fn closed_by_peer(pc: &Arc<dyn PeerConnection>) {
    use rtc::peer_connection::transport::RTCDtlsTransportState;
    let mut transport = None;
    for sender in pc.get_senders().await {
        if let Ok(Some(t)) = sender.transport().await {
            transport = Some(t);
            break;
        }
    }
    let Some(transport) = transport else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(PEER_CLOSE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(RTCDtlsTransportState::Closed | RTCDtlsTransportState::Failed) =
            transport.state().await
        {
            return;
        }
    }
}

/// What the connection tells us, moved out of the `webrtc` callbacks through channels so the
/// handler never holds the connection (a strong reference there would leak it).
pub struct PeerEvents {
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub gathering_done: watch::Receiver<bool>,
}

pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    /// The audio track we send on, when this viewer gets audio.
    pub audio: Option<(Arc<TrackLocalStaticRTP>, u32)>,
}

/// The audio side of one peer, decided by the SDP policy before the peer is built.
pub struct AudioPeerPlan {
    /// The one audio codec registered for this peer (and so the one the answer carries).
    pub codec: AudioCodec,
    /// The viewer's payload type for `codec` (registered so the answer carries it).
    pub payload_type: u8,
    /// Our answer's direction for the audio section.
    pub direction: Direction,
    /// Where the viewer's audio goes when `direction` receives (talkback).
    pub talker: Option<Talker>,
}

#[derive(Debug, thiserror::Error)]
#[error("{stage}: {source}")]
pub struct PeerError {
    pub stage: &'static str,
    #[source]
    pub source: webrtc::error::Error,
}

fn at(stage: &'static str) -> impl FnOnce(webrtc::error::Error) -> PeerError {
    move |source| PeerError { stage, source }
}

/// The codec we send, as the stack wants to see it (fmtp must match the rewritten offer).
pub fn h264_codec(fmtp: &str) -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: fmtp.into(),
        rtcp_feedback: vec![
            fb("nack", ""),
            fb("nack", "pli"),
            fb("ccm", "fir"),
            fb("transport-cc", ""),
        ],
    }
}

/// The codec we send or receive audio with, as the stack wants to see it.
pub fn audio_codec(codec: AudioCodec) -> RTCRtpCodec {
    let (mime_type, clock_rate, channels, fmtp) = match codec {
        AudioCodec::Opus => (MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1"),
        AudioCodec::Pcmu => (MIME_TYPE_PCMU, 8_000, 0, ""),
        AudioCodec::Pcma => (MIME_TYPE_PCMA, 8_000, 0, ""),
    };
    RTCRtpCodec {
        mime_type: mime_type.into(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.into(),
        rtcp_feedback: vec![],
    }
}

/// Where trickled local candidates go (JSON), and the (mid, m-line index) they are tagged with.
pub type Trickle = (mpsc::Sender<String>, (Option<String>, u16));

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathering_done: watch::Sender<bool>,
    /// Where trickled local candidates go (JSON), with the mid and m-line index of the
    /// section they belong to (the first bundled one).
    candidates: Option<Trickle>,
    /// Talkback for this viewer's audio track; taken by the first remote audio track.
    talker: std::sync::Mutex<Option<Talker>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Some((tx, (mid, index))) = &self.candidates else {
            return;
        };
        match event.candidate.to_json() {
            Ok(mut init) => {
                // With BUNDLE every candidate belongs to the first section.
                init.sdp_mid = mid.clone();
                init.sdp_mline_index = Some(*index);
                match serde_json::to_string(&init) {
                    Ok(json) => {
                        if tx.try_send(json).is_err() {
                            tracing::debug!("trickle channel full or closed; candidate dropped");
                        }
                    }
                    Err(e) => tracing::warn!("cannot encode local candidate: {e}"),
                }
            }
            Err(e) => tracing::warn!("cannot encode local candidate: {e}"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathering_done.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await != RtpCodecKind::Audio {
            return;
        }
        let talker = self.talker.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(talker) = talker else {
            tracing::debug!("viewer sends audio but talkback is off for it; ignored");
            return;
        };
        // The task ends with the track (the connection closed), dropping the talker, which
        // gives the speaker back at once.
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    talker.push(&packet);
                }
            }
        });
    }
}

/// Builds a connection that sends H.264 on `payload_type` with a fresh SSRC.
///
/// `bind_port` is 0 for an ephemeral port, or a port from the configured range.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    net: &NetworkOptions,
    payload_type: u8,
    video_fmtp: &str,
    mut audio: Option<AudioPeerPlan>,
    ice_servers: &[IceServer],
    bind_port: u16,
    trickle: Option<Trickle>,
) -> Result<(Peer, PeerEvents), PeerError> {
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(video_fmtp),
                payload_type,
            },
            RtpCodecKind::Video,
        )
        .map_err(at("registering H.264"))?;
    if let Some(a) = &audio {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: audio_codec(a.codec),
                    payload_type: a.payload_type,
                },
                RtpCodecKind::Audio,
            )
            .map_err(at("registering the audio codec"))?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .map_err(at("registering interceptors"))?
        .with(SLOT.into(), KeyframeRequestForwarder::default());

    let loopback = net.host_addresses.iter().any(|a| a.is_loopback());
    let mut settings = fast_ice_checks(SettingEngineBuilder::new())
        .with_include_loopback_candidate(loopback)
        .with_ice_timeouts(
            Some(net.ice_disconnected_timeout),
            Some(net.ice_failed_timeout),
            Some(Duration::from_secs(2)),
        );
    if !net.nat_1to1_ips.is_empty() {
        settings = settings.with_nat_1to1_ips(net.nat_1to1_ips.clone(), RTCIceCandidateType::Host);
    }

    let mut servers: Vec<RTCIceServer> = Vec::new();
    if !net.stun_urls.is_empty() {
        servers.push(RTCIceServer {
            urls: net.stun_urls.clone(),
            ..Default::default()
        });
    }
    servers.extend(ice_servers.iter().map(|s| RTCIceServer {
        urls: s.urls.clone(),
        username: s.username.clone().unwrap_or_default(),
        credential: s.credential.clone().unwrap_or_default(),
    }));
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(servers)
        .build();

    let addrs: Vec<String> = if net.host_addresses.is_empty() {
        vec![format!("0.0.0.0:{bind_port}")]
    } else {
        net.host_addresses
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, bind_port).to_string())
            .collect()
    };

    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (gather_tx, gather_rx) = watch::channel(false);
    let talker = audio.as_mut().and_then(|a| a.talker.take());
    let handler = Arc::new(Handler {
        state: state_tx,
        gathering_done: gather_tx,
        candidates: trickle,
        talker: std::sync::Mutex::new(talker),
    });

    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_setting_engine(settings.build())
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(addrs)
        .build()
        .await
        .map_err(at("creating the peer connection"))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    let ssrc = rand::random::<u32>();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "camgate".into(),
        "video".into(),
        "camera".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: h264_codec(video_fmtp),
            ..Default::default()
        }],
    )));
    if let Err(e) = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await {
        let _ = pc.close().await;
        return Err(at("adding the video track")(e));
    }

    // An audio track only when we send audio; a receive-only (talkback) or inactive section
    // gets the transceiver the stack creates for the offer's section.
    let mut audio_track = None;
    if let Some(a) = audio
        .as_ref()
        .filter(|a| matches!(a.direction, Direction::SendRecv | Direction::SendOnly))
    {
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "camgate".into(),
            "audio".into(),
            "microphone".into(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: audio_codec(a.codec),
                ..Default::default()
            }],
        )));
        if let Err(e) = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await {
            let _ = pc.close().await;
            return Err(at("adding the audio track")(e));
        }
        audio_track = Some((track, ssrc));
    }

    Ok((
        Peer {
            pc,
            track,
            ssrc,
            audio: audio_track,
        },
        PeerEvents {
            state: state_rx,
            gathering_done: gather_rx,
        },
    ))
}

/// Sets each transceiver's direction for the answer: video `sendonly`, audio as the SDP
/// policy decided (`audio`; None leaves the stack's choice, which rejects an unusable section).
///
/// `add_track` creates sendrecv transceivers (only such transceivers may be matched to a
/// remote offer's m-section, per JSEP), so an offer's `sendrecv` would be answered `sendrecv`,
/// promising a receiver we do not run. Called between applying the offer and creating the
/// answer.
pub async fn set_directions(
    pc: &Arc<dyn PeerConnection>,
    audio: Option<(&str, Direction)>,
) -> Result<(), PeerError> {
    use rtc::rtp_transceiver::RTCRtpTransceiverDirection as Dir;
    for t in pc.get_transceivers().await {
        let mid = t.mid().await.map_err(at("reading a transceiver"))?;
        let current = t.direction().await.map_err(at("reading a transceiver"))?;
        let wanted = match audio {
            Some((audio_mid, dir)) if mid.as_deref() == Some(audio_mid) => match dir {
                Direction::SendRecv => Dir::Sendrecv,
                Direction::SendOnly => Dir::Sendonly,
                Direction::RecvOnly => Dir::Recvonly,
                Direction::Inactive => Dir::Inactive,
            },
            _ => {
                let sends = t
                    .sender()
                    .await
                    .map_err(at("reading a transceiver"))?
                    .is_some();
                if sends && current == Dir::Sendrecv {
                    Dir::Sendonly
                } else {
                    current
                }
            }
        };
        if wanted != current {
            t.set_direction(wanted)
                .await
                .map_err(at("setting a transceiver's direction"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The wall-clock time a silent pair is tried for (ticks × interval).
    fn budget((interval, attempts): (Duration, u16)) -> Duration {
        interval * u32::from(attempts)
    }

    #[test]
    fn the_default_tick_keeps_the_default_schedule() {
        assert_eq!(
            ice_check_schedule(STACK_CHECK_INTERVAL),
            (STACK_CHECK_INTERVAL, STACK_MAX_BINDING_REQUESTS)
        );
    }

    #[test]
    fn a_shorter_tick_tries_a_pair_for_as_long_as_the_default() {
        let default = budget((STACK_CHECK_INTERVAL, STACK_MAX_BINDING_REQUESTS));
        assert_eq!(default, 1400 * MS);
        for tick in [1, 10, 20, 25, 30, 33, 50, 70, 100, 150, 199] {
            let s = ice_check_schedule(tick * MS);
            assert_eq!(s.0, tick * MS);
            assert!(
                budget(s) >= default,
                "tick {tick} ms gives up after {:?}",
                budget(s)
            );
            assert!(
                budget(s) < default + tick * MS,
                "tick {tick} ms tries for {:?}, a whole tick more than needed",
                budget(s)
            );
        }
    }

    #[test]
    fn our_tick_is_shorter_and_keeps_the_budget() {
        let s = ice_check_schedule(ICE_CHECK_INTERVAL);
        assert!(ICE_CHECK_INTERVAL < STACK_CHECK_INTERVAL);
        assert_eq!(s, (ICE_CHECK_INTERVAL, 56));
        assert_eq!(budget(s), 1400 * MS);
    }

    #[test]
    fn a_zero_tick_is_not_passed_on() {
        // rtc-ice reads a zero interval as "use the default", and the budget would divide by 0.
        let (interval, attempts) = ice_check_schedule(Duration::ZERO);
        assert_eq!(interval, MS);
        assert_eq!(attempts, 1400);
    }
}
