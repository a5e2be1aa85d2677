//! STUB (replaced by the audio branch).
use std::sync::Arc;
use std::time::Duration;

use crate::media::{MediaError, SourceSpec};

#[derive(Debug, Clone)]
pub enum AudioSourceSpec {
    Test { freq_hz: u32 },
    Alsa { device: Option<String> },
    Pulse { device: Option<String> },
    Camera(SourceSpec),
}

#[derive(Debug, Clone)]
pub struct AudioOptions {
    pub source: AudioSourceSpec,
    pub bitrate_kbps: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub healthy_after: Duration,
    pub startup_timeout: Duration,
    pub stall_timeout: Duration,
}

impl Default for AudioOptions {
    fn default() -> Self {
        AudioOptions {
            source: AudioSourceSpec::Test { freq_hz: 440 },
            bitrate_kbps: 32,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(5),
        }
    }
}

pub use crate::media::codec::AudioCodec;

pub struct AudioPacket {
    pub codec: AudioCodec,
    pub data: bytes::Bytes,
    pub pts_ns: u64,
}

pub type AudioSink = Arc<dyn Fn(AudioPacket) + Send + Sync>;

#[derive(Debug, Clone, serde::Serialize)]
pub struct AudioStatus {
    pub state: String,
}

impl AudioStatus {
    pub fn sends_audio(&self) -> bool {
        self.state != "no_audio"
    }
}

pub struct AudioCapture;

impl AudioCapture {
    pub fn start(_opts: AudioOptions, _sink: AudioSink) -> Result<AudioCapture, MediaError> {
        Ok(AudioCapture)
    }
    pub fn set_g711(&self, _codec: AudioCodec, _wanted: bool) {}
    pub fn status(&self) -> AudioStatus {
        AudioStatus {
            state: "running".into(),
        }
    }
    pub fn stop(self) {}
}
