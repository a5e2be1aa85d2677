//! What to capture and how to encode it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the capture needs; the config module builds one of these from the settings file.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub source: SourceSpec,
    /// Output size and rate when camgate encodes; passthrough sources keep the camera's own.
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
    pub encoder: EncoderSpec,
    /// A running pipeline that delivers no access unit for this long is restarted.
    pub stall_timeout: Duration,
    /// Grace before the first access unit of a fresh pipeline (RTSP connects, cameras warm up).
    pub startup_timeout: Duration,
    /// Restart backoff: first delay, doubling up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A pipeline that streamed this long before failing counts as healthy: backoff starts over.
    pub healthy_after: Duration,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            source: SourceSpec::Test {
                pattern: "smpte".to_string(),
            },
            width: 1280,
            height: 720,
            framerate: 30,
            encoder: EncoderSpec::default(),
            stall_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(15),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Live synthetic video (moving pattern, clock overlay when `clockoverlay` is installed).
    Test {
        pattern: String,
    },
    V4l2 {
        device: String,
        format: V4l2Format,
    },
    /// An IP camera; its H.264 is passed through without decoding.
    Rtsp {
        url: String,
        transport: RtspTransport,
        username: Option<String>,
        password: Option<String>,
        latency_ms: u32,
    },
    /// A media file, decoded and re-encoded at the configured size and rate.
    File {
        path: PathBuf,
        looping: bool,
    },
}

/// What to ask a V4L2 camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V4l2Format {
    /// H.264 if the camera offers it (no encode), else MJPEG, else raw.
    Auto,
    Raw,
    Mjpeg,
    H264,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    /// Interleaved in the RTSP connection: survives NAT and firewalls, no loss.
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderSpec {
    /// `auto` or a GStreamer element name such as `x264enc`.
    pub name: String,
    pub bitrate_kbps: u32,
    /// Maximum distance between IDRs; bounds how long a viewer waits when a keyframe request
    /// cannot be honoured.
    pub keyframe_interval_s: u32,
}

impl Default for EncoderSpec {
    fn default() -> Self {
        EncoderSpec {
            name: "auto".to_string(),
            bitrate_kbps: 2000,
            keyframe_interval_s: 2,
        }
    }
}

impl CaptureOptions {
    /// Rejects values GStreamer would only fail on later, with a less helpful message.
    pub fn validate(&self) -> Result<(), crate::media::MediaError> {
        use crate::media::MediaError::InvalidOption;
        if self.width == 0 || self.height == 0 || self.width > 8192 || self.height > 8192 {
            return Err(InvalidOption(format!(
                "size {}x{} (must be 1..=8192)",
                self.width, self.height
            )));
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(InvalidOption(format!(
                "size {}x{} must be even for 4:2:0 video",
                self.width, self.height
            )));
        }
        if self.framerate == 0 || self.framerate > 240 {
            return Err(InvalidOption(format!(
                "framerate {} (must be 1..=240)",
                self.framerate
            )));
        }
        if self.encoder.bitrate_kbps == 0 {
            return Err(InvalidOption("bitrate_kbps must be > 0".into()));
        }
        if self.stall_timeout.is_zero() || self.backoff_min.is_zero() {
            return Err(InvalidOption(
                "stall_timeout and backoff_min must be > 0".into(),
            ));
        }
        if self.backoff_max < self.backoff_min {
            return Err(InvalidOption("backoff_max < backoff_min".into()));
        }
        Ok(())
    }
}
