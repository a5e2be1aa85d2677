//! A real WebRTC viewer for tests: a `webrtc` peer that receives our H.264 over loopback,
//! depacketizes it with GStreamer's `rtph264depay` (not our code) and decodes it with
//! `avdec_h264`. What it reports is what a user would see: frames decoded, their size, and
//! how long the first one took. With audio it also decodes Opus/G.711 to samples (what a
//! listener would hear) and can talk back: a GStreamer tone, Opus-encoded, on its own track.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};

/// An audio codec the viewer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioKind {
    Opus,
    Pcmu,
    Pcma,
}

impl AudioKind {
    fn codec(self) -> RTCRtpCodec {
        let (mime, rate, channels, fmtp) = match self {
            AudioKind::Opus => (MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1"),
            AudioKind::Pcmu => (MIME_TYPE_PCMU, 8_000, 0, ""),
            AudioKind::Pcma => (MIME_TYPE_PCMA, 8_000, 0, ""),
        };
        RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: vec![],
        }
    }

    fn of_mime(mime: &str) -> Option<AudioKind> {
        let m = mime.to_ascii_lowercase();
        if m == MIME_TYPE_OPUS.to_ascii_lowercase() {
            Some(AudioKind::Opus)
        } else if m == MIME_TYPE_PCMU.to_ascii_lowercase() {
            Some(AudioKind::Pcmu)
        } else if m == MIME_TYPE_PCMA.to_ascii_lowercase() {
            Some(AudioKind::Pcma)
        } else {
            None
        }
    }

    /// GStreamer depayloader + decoder for this codec.
    fn decode_chain(self) -> (&'static str, u32, &'static str) {
        match self {
            AudioKind::Opus => ("OPUS", 48_000, "rtpopusdepay ! opusdec plc=true"),
            AudioKind::Pcmu => ("PCMU", 8_000, "rtppcmudepay ! mulawdec"),
            AudioKind::Pcma => ("PCMA", 8_000, "rtppcmadepay ! alawdec"),
        }
    }
}

/// How a [`TestViewer`] is set up.
#[derive(Clone)]
pub struct ViewerOptions {
    /// The H.264 payload type offered.
    pub video_pt: u8,
    /// Decode video (false for load tests that only count RTP).
    pub decode: bool,
    /// Audio payload types offered, in preference order; empty: no audio section.
    pub audio: Vec<(u8, AudioKind)>,
    /// Send a tone of this frequency on the audio track (talkback), Opus-encoded.
    pub talk_tone_hz: Option<u32>,
    pub ice_servers: Vec<RTCIceServer>,
    /// Use relay candidates only (`iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// Where to gather host candidates (default 127.0.0.1); a subscriber of an SFU in a
    /// network namespace needs the veth address (tests/support/janus.rs).
    pub udp_addrs: Vec<String>,
}

impl ViewerOptions {
    pub fn video(pt: u8) -> Self {
        ViewerOptions {
            video_pt: pt,
            decode: true,
            audio: Vec::new(),
            talk_tone_hz: None,
            ice_servers: Vec::new(),
            relay_only: false,
            udp_addrs: vec!["127.0.0.1:0".to_string()],
        }
    }

    /// A browser-like viewer: H.264 and Opus (PT 111), receive only.
    pub fn browser() -> Self {
        ViewerOptions {
            audio: vec![
                (111, AudioKind::Opus),
                (0, AudioKind::Pcmu),
                (8, AudioKind::Pcma),
            ],
            ..Self::video(102)
        }
    }
}

/// What the viewer heard so far.
#[derive(Debug, Default, Clone)]
pub struct Heard {
    pub rtp_packets: u64,
    pub payload_type: Option<u8>,
    pub codec: Option<&'static str>,
    /// Decoded mono samples at `rate`, first 20 s at most.
    pub samples: Vec<i16>,
    pub rate: u32,
    pub first_packet_at: Option<Instant>,
    /// RTP timestamp of the first packet, and its arrival (for A/V offset estimates).
    pub errors: Vec<String>,
}

impl Heard {
    /// Root mean square of the decoded samples (0 = silence; full scale 32768).
    pub fn rms(&self) -> f64 {
        rms(&self.samples)
    }

    /// The dominant frequency of the last `seconds` of samples, by FFT.
    pub fn dominant_hz(&self, seconds: f64) -> f64 {
        let n = ((self.rate as f64 * seconds) as usize).min(self.samples.len());
        dominant_hz(&self.samples[self.samples.len() - n..], self.rate)
    }
}

pub use super::sound::{dominant_hz, rms};

/// What the decoder saw so far.
#[derive(Debug, Default, Clone)]
pub struct Decoded {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    pub first_frame_at: Option<Instant>,
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub payload_type: Option<u8>,
    pub ssrc: Option<u32>,
    /// Keyframes received (packets that carry an SPS: the packetizer sends SPS/PPS before
    /// every IDR).
    pub keyframes: u64,
    /// NAL unit types carried by the first RTP packet (inside a STAP-A: its aggregated NALs).
    pub first_packet_nals: Vec<u8>,
    /// profile_idc, constraint flags and level_idc of the last SPS received (the
    /// `profile-level-id` the stream really has).
    pub sps_profile_level_id: Option<u32>,
    pub errors: Vec<String>,
}

/// The profile-level-id of an SPS carried in an H.264 RTP payload (single NAL or STAP-A).
pub fn payload_sps_profile(payload: &[u8]) -> Option<u32> {
    let sps = match payload.first()? & 0x1f {
        7 => payload,
        24 => {
            let mut i = 1;
            let mut found = None;
            while i + 2 < payload.len() {
                let len = usize::from(payload[i]) << 8 | usize::from(payload[i + 1]);
                let nal = payload.get(i + 2..i + 2 + len)?;
                if nal.first().is_some_and(|h| h & 0x1f == 7) {
                    found = Some(nal);
                }
                i += 2 + len;
            }
            found?
        }
        _ => return None,
    };
    let b = sps.get(1..4)?;
    Some(u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]))
}

/// The NAL types an H.264 RTP payload carries (RFC 6184: single NAL, STAP-A 24, FU-A 28).
pub fn payload_nal_types(payload: &[u8]) -> Vec<u8> {
    let Some(&first) = payload.first() else {
        return vec![];
    };
    match first & 0x1f {
        24 => {
            let mut types = Vec::new();
            let mut i = 1;
            while i + 2 < payload.len() {
                let len = usize::from(payload[i]) << 8 | usize::from(payload[i + 1]);
                if let Some(&h) = payload.get(i + 2) {
                    types.push(h & 0x1f);
                }
                i += 2 + len;
            }
            types
        }
        28 => payload.get(1).map(|h| vec![h & 0x1f]).unwrap_or_default(),
        t => vec![t],
    }
}

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    candidates: mpsc::UnboundedSender<String>,
    decoded: Arc<Mutex<Decoded>>,
    decoded_tx: watch::Sender<u64>,
    track: Arc<Mutex<Option<Arc<dyn TrackRemote>>>>,
    decode: bool,
    heard: Arc<Mutex<Heard>>,
    heard_tx: watch::Sender<u64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json()
            && let Ok(json) = serde_json::to_string(&init)
        {
            let _ = self.candidates.send(json);
        }
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await == RtpCodecKind::Audio {
            let heard = self.heard.clone();
            let tx = self.heard_tx.clone();
            let decode = self.decode;
            tokio::spawn(async move { listen(track, heard, tx, decode).await });
            return;
        }
        *self.track.lock().unwrap() = Some(track.clone());
        let decoded = self.decoded.clone();
        let tx = self.decoded_tx.clone();
        let decode = self.decode;
        tokio::spawn(async move { receive(track, decoded, tx, decode).await });
    }
}

/// Feeds every RTP packet of the track into rtph264depay ! avdec_h264 and counts frames.
async fn receive(
    track: Arc<dyn TrackRemote>,
    decoded: Arc<Mutex<Decoded>>,
    tx: watch::Sender<u64>,
    decode: bool,
) {
    let mut decoder: Option<Decoder> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let pt = packet.header.payload_type;
                {
                    let mut d = decoded.lock().unwrap();
                    let nals = payload_nal_types(&packet.payload);
                    if nals.contains(&7) {
                        d.keyframes += 1;
                        if let Some(id) = payload_sps_profile(&packet.payload) {
                            d.sps_profile_level_id = Some(id);
                        }
                    }
                    if d.rtp_packets == 0 {
                        d.first_packet_nals = nals;
                    }
                    d.rtp_packets += 1;
                    d.rtp_bytes += packet.payload.len() as u64;
                    d.payload_type = Some(pt);
                    d.ssrc = Some(packet.header.ssrc);
                }
                if !decode {
                    continue;
                }
                let dec = match &decoder {
                    Some(d) => d,
                    None => decoder.insert(Decoder::new(pt, decoded.clone(), tx.clone())),
                };
                if let Ok(bytes) = packet.marshal() {
                    dec.push(&bytes);
                }
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
    if let Some(d) = decoder {
        d.stop();
    }
}

/// Feeds every audio RTP packet into a GStreamer depayloader + decoder and keeps the samples.
async fn listen(
    track: Arc<dyn TrackRemote>,
    heard: Arc<Mutex<Heard>>,
    tx: watch::Sender<u64>,
    decode: bool,
) {
    let mut decoder: Option<(gst::Pipeline, gst_app::AppSrc)> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let pt = packet.header.payload_type;
                let n = {
                    let mut h = heard.lock().unwrap();
                    h.rtp_packets += 1;
                    h.payload_type = Some(pt);
                    h.first_packet_at.get_or_insert_with(Instant::now);
                    h.rtp_packets
                };
                let _ = tx.send(n);
                if !decode {
                    continue;
                }
                if decoder.is_none() {
                    let kind = track
                        .codec(packet.header.ssrc)
                        .await
                        .and_then(|c| AudioKind::of_mime(&c.mime_type))
                        .unwrap_or(if pt == 0 {
                            AudioKind::Pcmu
                        } else if pt == 8 {
                            AudioKind::Pcma
                        } else {
                            AudioKind::Opus
                        });
                    decoder = Some(audio_decoder(kind, pt, heard.clone()));
                }
                if let (Some((_, src)), Ok(bytes)) = (&decoder, packet.marshal()) {
                    let _ = src.push_buffer(gst::Buffer::from_slice(bytes.to_vec()));
                }
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
    if let Some((pipeline, _)) = decoder {
        let _ = pipeline.set_state(gst::State::Null);
    }
}

fn audio_decoder(
    kind: AudioKind,
    pt: u8,
    heard: Arc<Mutex<Heard>>,
) -> (gst::Pipeline, gst_app::AppSrc) {
    let (name, rate, chain) = kind.decode_chain();
    {
        let mut h = heard.lock().unwrap();
        h.codec = Some(name);
        h.rate = 48_000;
    }
    let desc = format!(
        "appsrc name=src is-live=true do-timestamp=true format=time \
         caps=application/x-rtp,media=audio,clock-rate={rate},encoding-name={name},payload={pt} \
         ! rtpjitterbuffer latency=50 ! {chain} ! audioconvert ! audioresample \
         ! audio/x-raw,format=S16LE,channels=1,rate=48000 \
         ! appsink name=sink sync=false emit-signals=false"
    );
    let (pipeline, src, sink) = super::gst::app_pipeline(&desc, "sink");
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                    let mut h = heard.lock().unwrap();
                    if h.samples.len() < 20 * 48_000 {
                        h.samples.extend(
                            map.as_slice()
                                .chunks_exact(2)
                                .map(|b| i16::from_le_bytes([b[0], b[1]])),
                        );
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, src)
}

/// Sends an Opus-encoded tone on `track` until the returned pipeline is stopped: talkback.
fn talk(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    hz: u32,
    seq: Arc<std::sync::atomic::AtomicU16>,
) -> gst::Pipeline {
    let desc = format!(
        "audiotestsrc is-live=true wave=sine freq={hz} volume=0.5 ! audioconvert ! audioresample \
         ! audio/x-raw,rate=48000,channels=1 ! opusenc frame-size=20 ! rtpopuspay pt={pt} \
         ! appsink name=sink sync=false emit-signals=false"
    );
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<rtc::rtp::Packet>();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                    let mut raw: &[u8] = map.as_slice();
                    if let Ok(mut p) = rtc::rtp::Packet::unmarshal(&mut raw) {
                        p.header.ssrc = ssrc;
                        p.header.payload_type = pt;
                        // One sequence for everything this viewer sends on the track (SRTP's
                        // replay window follows it).
                        p.header.sequence_number =
                            seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = tx.send(p);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if track.write_rtp(p).await.is_err() {
                break;
            }
        }
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    pipeline
}

struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
}

impl Decoder {
    fn new(pt: u8, decoded: Arc<Mutex<Decoded>>, tx: watch::Sender<u64>) -> Self {
        gst::init().unwrap();
        let desc = format!(
            "appsrc name=src is-live=true do-timestamp=true format=time \
             caps=application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload={pt} \
             ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert \
             ! appsink name=sink sync=false emit-signals=false"
        );
        let (pipeline, src, sink) = super::gst::app_pipeline(&desc, "sink");
        let d2 = decoded.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut d = d2.lock().unwrap();
                    if let Some(s) = sample
                        .caps()
                        .and_then(|c| c.structure(0).map(|s| s.to_owned()))
                    {
                        d.width = s.get::<i32>("width").unwrap_or(0) as u32;
                        d.height = s.get::<i32>("height").unwrap_or(0) as u32;
                    }
                    d.frames += 1;
                    d.first_frame_at.get_or_insert_with(Instant::now);
                    let _ = tx.send(d.frames);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let bus = pipeline.bus().unwrap();
        let d3 = decoded;
        std::thread::spawn(move || {
            for msg in bus.iter_timed(gst::ClockTime::NONE) {
                match msg.view() {
                    gst::MessageView::Error(e) => {
                        d3.lock()
                            .unwrap()
                            .errors
                            .push(format!("{} ({:?})", e.error(), e.debug()));
                    }
                    gst::MessageView::Eos(_) => break,
                    _ => {}
                }
            }
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Decoder { pipeline, src }
    }

    fn push(&self, rtp: &[u8]) {
        let _ = self.src.push_buffer(gst::Buffer::from_slice(rtp.to_vec()));
    }

    fn stop(&self) {
        let _ = self.src.end_of_stream();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct TestViewer {
    pub pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    pub candidates: Mutex<mpsc::UnboundedReceiver<String>>,
    decoded: Arc<Mutex<Decoded>>,
    decoded_rx: watch::Receiver<u64>,
    track: Arc<Mutex<Option<Arc<dyn TrackRemote>>>>,
    heard: Arc<Mutex<Heard>>,
    heard_rx: watch::Receiver<u64>,
    /// The talkback tone, while it plays.
    talking: Mutex<Option<gst::Pipeline>>,
    talk_track: Option<(Arc<TrackLocalStaticRTP>, u32)>,
    /// Next RTP sequence number on the talk track.
    talk_seq: Arc<std::sync::atomic::AtomicU16>,
    opts: ViewerOptions,
}

impl TestViewer {
    /// A receive-only viewer bound to 127.0.0.1, offering H.264 on `pt`
    /// (packetization-mode 1, constrained baseline) as browsers do.
    pub async fn new(pt: u8) -> TestViewer {
        Self::with_decoder(pt, true).await
    }

    /// `decode = false`: count RTP only (load tests, where decoding would eat the CPU that
    /// is being measured).
    pub async fn with_decoder(pt: u8, decode: bool) -> TestViewer {
        Self::with_options(ViewerOptions {
            decode,
            ..ViewerOptions::video(pt)
        })
        .await
    }

    pub async fn with_options(opts: ViewerOptions) -> TestViewer {
        let pt = opts.video_pt;
        let mut media = MediaEngine::default();
        let fb = |t: &str, p: &str| RTCPFeedback {
            typ: t.into(),
            parameter: p.into(),
        };
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_H264.into(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line:
                            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                                .into(),
                        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
                    },
                    payload_type: pt,
                },
                RtpCodecKind::Video,
            )
            .unwrap();
        for (apt, kind) in &opts.audio {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: kind.codec(),
                        payload_type: *apt,
                    },
                    RtpCodecKind::Audio,
                )
                .unwrap();
        }
        let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        let decoded = Arc::new(Mutex::new(Decoded::default()));
        let (decoded_tx, decoded_rx) = watch::channel(0);
        let heard = Arc::new(Mutex::new(Heard::default()));
        let (heard_tx, heard_rx) = watch::channel(0);
        let track = Arc::new(Mutex::new(None));
        let handler = Arc::new(Handler {
            state: state_tx,
            gathered: gathered_tx,
            candidates: cand_tx,
            decoded: decoded.clone(),
            decoded_tx,
            track: track.clone(),
            decode: opts.decode,
            heard: heard.clone(),
            heard_tx,
        });
        let mut config = RTCConfigurationBuilder::new().with_ice_servers(opts.ice_servers.clone());
        if opts.relay_only {
            config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                // The daemon's check tick, so a test connects as a deployment does.
                camgate::session::fast_ice_checks(SettingEngineBuilder::new())
                    .with_include_loopback_candidate(true)
                    .build(),
            )
            .with_handler(handler)
            .with_udp_addrs(opts.udp_addrs.clone())
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        // Audio first, as Alexa and browsers that add the microphone first do.
        let mut talk_track = None;
        if let Some((apt, kind)) = opts.audio.first().copied() {
            if opts.talk_tone_hz.is_some() {
                let ssrc = rand::random::<u32>();
                let t = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    "viewer".into(),
                    "mic".into(),
                    "mic".into(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: kind.codec(),
                        ..Default::default()
                    }],
                )));
                pc.add_track(t.clone() as Arc<dyn TrackLocal>)
                    .await
                    .unwrap();
                talk_track = Some((t, ssrc));
                let _ = apt;
            } else {
                pc.add_transceiver_from_kind(
                    RtpCodecKind::Audio,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap();
            }
        }
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        TestViewer {
            pc,
            state,
            gathered,
            candidates: Mutex::new(cand_rx),
            decoded,
            decoded_rx,
            track,
            heard,
            heard_rx,
            talking: Mutex::new(None),
            talk_track,
            talk_seq: Arc::new(std::sync::atomic::AtomicU16::new(rand::random())),
            opts,
        }
    }

    /// Starts the talkback tone (needs `talk_tone_hz`); the viewer must be connected.
    pub fn start_talking(&self) {
        let (track, ssrc) = self
            .talk_track
            .clone()
            .expect("viewer built without talk_tone_hz");
        let hz = self.opts.talk_tone_hz.unwrap_or(1000);
        let pt = self.opts.audio.first().map(|a| a.0).unwrap_or(111);
        *self.talking.lock().unwrap() = Some(talk(track, ssrc, pt, hz, self.talk_seq.clone()));
    }

    /// Sends `n` audio packets whose payloads are random bytes and whose timestamps and marker
    /// bits are random (valid SRTP, garbage RTP content), as a broken or hostile app would; the
    /// viewer must be connected.
    pub async fn send_garbage_audio(&self, n: usize) {
        let (track, ssrc) = self
            .talk_track
            .clone()
            .expect("viewer built without talk_tone_hz");
        let pt = self.opts.audio.first().map(|a| a.0).unwrap_or(111);
        let mut every = tokio::time::interval(Duration::from_millis(5));
        for i in 0..n {
            every.tick().await;
            let len = 1 + (rand::random::<u32>() % 300) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            let p = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: self
                        .talk_seq
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    timestamp: (i as u32).wrapping_mul(rand::random::<u32>() % 5000),
                    ssrc,
                    marker: rand::random(),
                    ..Default::default()
                },
                payload: payload.into(),
            };
            let _ = track.write_rtp(p).await;
        }
    }

    pub fn stop_talking(&self) {
        if let Some(p) = self.talking.lock().unwrap().take() {
            let _ = p.set_state(gst::State::Null);
        }
    }

    /// Waits (bounded) until `n` audio RTP packets arrived; returns what was heard either way.
    pub async fn wait_audio(&self, n: u64, within: Duration) -> Heard {
        let mut rx = self.heard_rx.clone();
        let _ = tokio::time::timeout(within, rx.wait_for(|p| *p >= n)).await;
        self.heard()
    }

    pub fn heard(&self) -> Heard {
        self.heard.lock().unwrap().clone()
    }

    /// Creates the offer. With `complete`, waits for gathering so the offer carries our
    /// candidates (what WHEP clients and Alexa do); otherwise returns at once (trickle).
    pub async fn offer(&self, complete: bool) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        if complete {
            let mut g = self.gathered.clone();
            tokio::time::timeout(Duration::from_secs(5), g.wait_for(|d| *d))
                .await
                .expect("gathering did not complete")
                .unwrap();
        }
        self.pc.local_description().await.unwrap().sdp
    }

    pub async fn accept_answer(&self, sdp: &str) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp.to_owned()).unwrap())
            .await
            .unwrap();
    }

    pub async fn add_candidate(&self, json: &str) {
        let init: RTCIceCandidateInit = serde_json::from_str(json).unwrap();
        self.pc.add_ice_candidate(init).await.unwrap();
    }

    pub async fn wait_connected(&self, within: Duration) -> bool {
        let mut s = self.state.clone();
        matches!(
            tokio::time::timeout(
                within,
                s.wait_for(|s| *s == RTCPeerConnectionState::Connected)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Waits (bounded) until `n` frames were decoded; returns what was decoded either way.
    pub async fn wait_frames(&self, n: u64, within: Duration) -> Decoded {
        let mut rx = self.decoded_rx.clone();
        let _ = tokio::time::timeout(within, rx.wait_for(|f| *f >= n)).await;
        self.decoded()
    }

    pub fn decoded(&self) -> Decoded {
        self.decoded.lock().unwrap().clone()
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Sends a Picture Loss Indication for the received stream, as a decoder that lost data does.
    pub async fn send_pli(&self) {
        use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        let track = self.track.lock().unwrap().clone().expect("no track yet");
        let media_ssrc = self.decoded().ssrc.expect("no RTP yet");
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await
            .unwrap();
    }

    pub async fn close(&self) {
        self.stop_talking();
        let _ = self.pc.close().await;
    }
}
