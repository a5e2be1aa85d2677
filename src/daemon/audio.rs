//! The daemon's audio: the capture that feeds every viewer's audio track, its packetizers,
//! on-demand G.711, and talkback. Audio is never a reason for the daemon (or video) to stop:
//! whatever fails here is logged once and viewers are answered without it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::media::audio::{AudioCapture, AudioCodec, AudioOptions, AudioPacket, AudioSink};
use crate::media::lock;
use crate::media::talkback::{Talkback, TalkbackOptions};
use crate::rtp::{FramePool, OpusPacketizer, Payloader};
use crate::session::{AudioService, FrameFeed, G711Demand};

/// 50 frames = one second of 20 ms audio a viewer may fall behind before it skips ahead.
const AUDIO_QUEUE_FRAMES: usize = 50;

/// The running audio parts, for shutdown and status.
pub struct DaemonAudio {
    /// The running capture; None when no source is configured or it could not start (taken
    /// out at shutdown).
    pub capture: Arc<Mutex<Option<AudioCapture>>>,
    /// Talkback, when on and its sound card opened.
    pub talkback: Option<Talkback>,
    /// What the session layer uses: feeds, availability, talkback, G.711 demand.
    pub service: AudioService,
    /// Audio frames the packetizer refused (oversized Opus packets, empty buffers).
    pub packetizer_errors: Arc<AtomicU64>,
}

impl DaemonAudio {
    /// Starts what is configured. `source` None means no audio to send; `talkback` None
    /// means talkback is off.
    pub fn start(source: Option<AudioOptions>, talkback: Option<TalkbackOptions>) -> DaemonAudio {
        let opus = FrameFeed::new(AUDIO_QUEUE_FRAMES);
        let pcmu = FrameFeed::new(AUDIO_QUEUE_FRAMES);
        let pcma = FrameFeed::new(AUDIO_QUEUE_FRAMES);
        let packetizer_errors = Arc::new(AtomicU64::new(0));
        let capture: Arc<Mutex<Option<AudioCapture>>> = Arc::new(Mutex::new(None));
        if let Some(opts) = source {
            let sink = packetizing_sink(
                [opus.clone(), pcmu.clone(), pcma.clone()],
                packetizer_errors.clone(),
            );
            match AudioCapture::start(opts, sink) {
                Ok(c) => *lock(&capture) = Some(c),
                Err(e) => tracing::error!(
                    "audio capture cannot start, viewers get video only: {e} (set audio.source = \"none\" to silence this)"
                ),
            }
        }
        let talkback = talkback.and_then(|opts| match Talkback::start(opts) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "talkback is off: {e}; audio sections are answered without receiving (set audio.talkback = false to silence this)"
                );
                None
            }
        });
        let available = {
            let capture = capture.clone();
            Arc::new(move || lock(&capture).as_ref().is_some_and(sends_audio))
        };
        let demand = {
            let capture = capture.clone();
            G711Demand::new(Arc::new(move |codec, wanted| {
                tracing::info!(?codec, wanted, "G.711 encoder demand changed");
                if let Some(c) = lock(&capture).as_ref() {
                    c.set_g711(codec, wanted);
                }
            }))
        };
        let service = AudioService {
            opus,
            pcmu,
            pcma,
            available,
            talkback: talkback.clone(),
            demand,
        };
        DaemonAudio {
            capture,
            talkback,
            service,
            packetizer_errors,
        }
    }

    /// Stops the capture and the talkback player (blocking: pipelines wind down; call it
    /// from a blocking context).
    pub fn stop(&self) {
        // Not under the lock: stopping joins the supervisor thread, and offers, health and
        // G.711 demand changes read the capture meanwhile.
        let capture = lock(&self.capture).take();
        if let Some(c) = capture {
            c.stop();
        }
        if let Some(t) = &self.talkback {
            t.clone().stop();
        }
    }

    /// One word (or a short phrase) for /healthz and systemd's status line.
    pub fn state_text(&self) -> String {
        use crate::media::audio::AudioState;
        match lock(&self.capture).as_ref().map(|c| c.status()) {
            None => "off".into(),
            Some(s) => match s.state {
                AudioState::Starting => "starting".into(),
                AudioState::Running => "running".into(),
                AudioState::NoAudio => "no_audio".into(),
                AudioState::Stopped => "stopped".into(),
                AudioState::Restarting { attempt, retry_in } => format!(
                    "restarting (attempt {attempt}, next try in {} ms{})",
                    retry_in.as_millis(),
                    s.last_error.map(|e| format!("; {e}")).unwrap_or_default()
                ),
            },
        }
    }

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "capture": lock(&self.capture).as_ref().map(|c| c.status()),
            "talkback": self.talkback.as_ref().map(|t| t.status()),
            "opus_frames_published": self.service.opus.published(),
            "g711_viewers": {
                "pcmu": self.service.demand.viewers(AudioCodec::Pcmu),
                "pcma": self.service.demand.viewers(AudioCodec::Pcma),
            },
            "packetizer_errors": self.packetizer_errors.load(Ordering::Relaxed),
        })
    }
}

/// Whether the capture can be expected to deliver audio: everything but a camera that
/// turned out to have no audio track (and a capture that has stopped for good).
fn sends_audio(c: &AudioCapture) -> bool {
    c.status().sends_audio()
}

/// Packetizes each encoded audio frame once, into the feed of its codec. Runs on the audio
/// pipeline's streaming thread. Frames are recycled per codec as for video
/// ([`FramePool`]), so steady state allocates nothing here.
fn packetizing_sink(feeds: [FrameFeed; 3], errors: Arc<AtomicU64>) -> AudioSink {
    let state = Mutex::new([
        (OpusPacketizer::new(), FramePool::new(AUDIO_POOL_FRAMES)),
        (OpusPacketizer::g711(), FramePool::new(AUDIO_POOL_FRAMES)),
        (OpusPacketizer::g711(), FramePool::new(AUDIO_POOL_FRAMES)),
    ]);
    Arc::new(move |packet: AudioPacket| {
        let slot = match packet.codec {
            AudioCodec::Opus => 0,
            AudioCodec::Pcmu => 1,
            AudioCodec::Pcma => 2,
        };
        let frame = {
            let mut state = lock(&state);
            let (packetizer, pool) = &mut state[slot];
            pool.fill(|f| packetizer.packetize_into(&packet.data, packet.pts_ns, f))
        };
        super::publish(frame, &feeds[slot], &errors, "audio frame");
    })
}

/// Published audio frames each codec's pool tracks: a lagging viewer holds up to its queue
/// ([`AUDIO_QUEUE_FRAMES`]) before the pool gives up on those and allocates.
const AUDIO_POOL_FRAMES: usize = AUDIO_QUEUE_FRAMES + 14;
