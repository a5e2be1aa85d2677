//! A real WebRTC viewer for tests: a `webrtc` peer that receives our H.264 over loopback,
//! depacketizes it with GStreamer's `rtph264depay` (not our code) and decodes it with
//! `avdec_h264`. What it reports is what a user would see: frames decoded, their size, and
//! how long the first one took.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::Marshal;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};

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
    pub errors: Vec<String>,
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
        let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        let decoded = Arc::new(Mutex::new(Decoded::default()));
        let (decoded_tx, decoded_rx) = watch::channel(0);
        let track = Arc::new(Mutex::new(None));
        let handler = Arc::new(Handler {
            state: state_tx,
            gathered: gathered_tx,
            candidates: cand_tx,
            decoded: decoded.clone(),
            decoded_tx,
            track: track.clone(),
            decode,
        });
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_include_loopback_candidate(true)
                    .build(),
            )
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
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
        }
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
        let _ = self.pc.close().await;
    }
}
