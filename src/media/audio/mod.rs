//! Audio capture: one Opus encoder for every viewer, plus G.711 only while someone needs it.
//!
//! The audio source (a microphone through ALSA or PulseAudio, the IP camera's own audio track,
//! a file's audio, a test tone) runs in its own pipeline, apart from the video one, so a
//! microphone that is unplugged or a camera that has no audio never touches video. The source
//! is converted to 48 kHz mono, cut into 20 ms buffers and split by a `tee`:
//!
//! - Opus (what browsers and most viewers negotiate) is encoded once, always, and every
//!   encoded 20 ms frame goes to the [`AudioSink`].
//! - PCMU and PCMA (G.711, for viewers that offer nothing else) sit behind closed `valve`s and
//!   only encode while [`AudioCapture::set_g711`] says a viewer wants them, so the usual case
//!   pays for one encoder only.
//!
//! Layout: [`plan`] turns [`AudioOptions`] into a launch description and holds the sans-IO
//! rules (does the stream have audio, what timestamp a packet gets); [`capture`] runs it on a
//! supervisor thread that restarts it with the same backoff and stall rules as video.

pub mod capture;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

pub use capture::{AudioCapture, AudioPacketCounts, AudioState, AudioStatus};

use crate::media::MediaError;

/// Where the audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSourceSpec {
    /// A live sine tone (`audiotestsrc`), for tests and for checking a viewer's audio path.
    Test { freq_hz: u32 },
    /// A microphone through ALSA; `None` opens ALSA's default device.
    Alsa { device: Option<String> },
    /// A microphone through PulseAudio (or PipeWire's Pulse server); `None` is the default
    /// source.
    Pulse { device: Option<String> },
    /// The audio track of the camera the video comes from: [`SourceSpec::Rtsp`] (a second RTSP
    /// session that sets up only the audio stream) or [`SourceSpec::File`]. Other video
    /// sources have no audio track; asking for theirs is a configuration error.
    ///
    /// [`SourceSpec::Rtsp`]: crate::media::SourceSpec::Rtsp
    /// [`SourceSpec::File`]: crate::media::SourceSpec::File
    Camera(crate::media::SourceSpec),
}

/// Everything the audio capture needs; the config module builds one from the settings file.
#[derive(Debug, Clone)]
pub struct AudioOptions {
    pub source: AudioSourceSpec,
    /// Opus target bitrate; 32 kbit/s is plenty for one mono voice channel.
    pub bitrate_kbps: u32,
    /// Restart backoff: first delay, doubling up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A pipeline that streamed this long before failing counts as healthy: backoff starts over.
    pub healthy_after: Duration,
    /// Grace before the first packet of a fresh pipeline (RTSP connects, devices open).
    pub startup_timeout: Duration,
    /// A running pipeline that delivers no Opus packet for this long is restarted.
    pub stall_timeout: Duration,
}

impl Default for AudioOptions {
    fn default() -> Self {
        AudioOptions {
            source: AudioSourceSpec::Test { freq_hz: 440 },
            bitrate_kbps: 32,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(5),
        }
    }
}

impl AudioOptions {
    /// Rejects values GStreamer would only fail on later, with a less helpful message.
    pub fn validate(&self) -> Result<(), MediaError> {
        use MediaError::InvalidOption;
        if let AudioSourceSpec::Test { freq_hz } = self.source
            && !(1..=20_000).contains(&freq_hz)
        {
            return Err(InvalidOption(format!(
                "audio test tone {freq_hz} Hz (must be 1..=20000)"
            )));
        }
        // The range the Opus codec itself defines.
        if !(6..=510).contains(&self.bitrate_kbps) {
            return Err(InvalidOption(format!(
                "audio bitrate {} kbit/s (must be 6..=510)",
                self.bitrate_kbps
            )));
        }
        if self.stall_timeout.is_zero() || self.backoff_min.is_zero() {
            return Err(InvalidOption(
                "audio stall_timeout and backoff_min must be > 0".into(),
            ));
        }
        if self.backoff_max < self.backoff_min {
            return Err(InvalidOption("audio backoff_max < backoff_min".into()));
        }
        Ok(())
    }
}

/// The encodings the capture produces (Opus always; G.711 µ-law and A-law only while wanted):
/// the daemon's one audio codec type.
pub use crate::media::codec::AudioCodec;

impl AudioCodec {
    /// Name of the branch's appsink in the launch description.
    pub(crate) fn sink_name(self) -> &'static str {
        match self {
            AudioCodec::Opus => plan::OPUS_SINK,
            AudioCodec::Pcmu => plan::PCMU_SINK,
            AudioCodec::Pcma => plan::PCMA_SINK,
        }
    }

    /// Name of the valve in front of a G.711 branch; Opus has none.
    pub(crate) fn valve_name(self) -> Option<&'static str> {
        match self {
            AudioCodec::Opus => None,
            AudioCodec::Pcmu => Some(plan::PCMU_VALVE),
            AudioCodec::Pcma => Some(plan::PCMA_VALVE),
        }
    }

    /// Position in per-codec counters.
    pub(crate) fn index(self) -> usize {
        match self {
            AudioCodec::Opus => 0,
            AudioCodec::Pcmu => 1,
            AudioCodec::Pcma => 2,
        }
    }
}

/// One encoded 20 ms frame.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub codec: AudioCodec,
    /// Opus: exactly one Opus packet. G.711: 160 bytes, one per 8 kHz mono sample. Cloning is
    /// a reference-count bump, so one packet can go to every viewer.
    pub data: bytes::Bytes,
    /// Capture time on the pipeline clock in nanoseconds: the buffer's running time plus the
    /// pipeline's base time. The audio pipeline is pinned to the GStreamer system clock
    /// (CLOCK_MONOTONIC), the clock the video pipeline runs on too. Video access units carry
    /// running time made continuous across restarts instead (`supervisor::PtsContinuity`),
    /// so the two are not comparable numbers: each stream's RTP timestamps count from its own
    /// first packet, and receivers line the streams up through RTCP sender reports, which the
    /// `webrtc` crate builds from the time packets are sent (tests/av_sync.rs measures the
    /// result). It moves forward across pipeline restarts and file loops because the clock
    /// itself does. Consecutive
    /// packets are 20 ms apart, except that the first Opus packet of each pipeline is only
    /// 13.5 ms before the second: opusenc stamps all later packets 6.5 ms earlier (its
    /// lookahead).
    pub pts_ns: u64,
}

/// Where packets go. Called on GStreamer's streaming threads (one per codec branch), so it
/// must be cheap and must not block; the same sink survives pipeline restarts.
pub type AudioSink = Arc<dyn Fn(AudioPacket) + Send + Sync>;
