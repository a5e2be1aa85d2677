//! Capture and encode through GStreamer: one pipeline serves every viewer.
//!
//! The camera (or an RTSP camera, a file, a test pattern) is opened once; its H.264 access
//! units go to a single [`FrameSink`] on GStreamer's streaming thread, where the packetizer
//! turns each one into RTP once for all viewers. Encoding is avoided whenever the source
//! already speaks H.264 (RTSP, UVC H.264 cameras): re-encoding on a Pi costs more CPU than
//! everything else combined, and every re-encode loses quality.
//!
//! Layout: [`options`] says what to open, [`encoder`] picks and configures the encoder,
//! [`pipeline`] turns both into a launch description, [`supervisor`] holds the sans-IO
//! restart/stall/timestamp rules, [`capture`] runs it all on a thread, [`probe`] reports what
//! this machine offers.

pub mod audio;
pub mod capture;
pub mod codec;
pub mod encoder;
pub mod error;
pub mod options;
pub mod pipeline;
pub mod probe;
pub mod supervisor;
pub mod talkback;
mod thread;

pub use audio::{
    AudioCapture, AudioCodec, AudioOptions, AudioPacket, AudioPacketCounts, AudioSink,
    AudioSourceSpec, AudioState, AudioStatus,
};
pub use capture::{Capture, CaptureState, CaptureStatus};
pub use encoder::{EncoderChoice, EncoderKind, installed_encoders, select_encoder};
pub use error::MediaError;
pub use options::{CaptureOptions, EncoderSpec, RtspTransport, SourceSpec, V4l2Format};
pub use probe::{ProbeReport, probe};

/// One encoded H.264 access unit in Annex-B byte-stream form (start codes, SPS/PPS inline
/// before every IDR).
#[derive(Debug, Clone)]
pub struct AccessUnit {
    /// The access unit as the pipeline delivered it: a reference to GStreamer's buffer, not a
    /// copy. The daemon's sink maps it, packetizes it (the one copy, into the frame every
    /// viewer shares) and lets go before it returns. A sink that keeps it holds GStreamer
    /// memory, which for a camera may be one of a small fixed pool: copy what must outlive
    /// the call.
    pub buffer: gstreamer::Buffer,
    /// Presentation time in nanoseconds on a clock that only moves forward across pipeline
    /// restarts and file loops (it may jump ahead, never back).
    pub pts_ns: u64,
    /// An IDR: a viewer can start decoding here.
    pub keyframe: bool,
    /// Which pipeline produced it.
    pub source: SourceInfo,
}

/// The pipeline an access unit comes from, as far as viewers care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo {
    /// Counts pipelines built (1 for the first; each capture restart adds one). Frames of
    /// different generations never reference each other.
    pub generation: u64,
    /// The source's own H.264 is passed through (no encoder of ours that could be asked for
    /// an IDR).
    pub passthrough: bool,
}

impl AccessUnit {
    /// The bytes, mapped for reading (no copy). Fails only for memory that cannot be read
    /// from the CPU, which no pipeline we build produces.
    pub fn map(
        &self,
    ) -> Result<
        gstreamer::buffer::BufferMap<'_, gstreamer::buffer::Readable>,
        gstreamer::glib::BoolError,
    > {
        self.buffer.map_readable()
    }
}

/// Where access units go. Called on GStreamer's streaming thread, so it must be cheap and
/// must not block; the same sink survives pipeline restarts so viewers keep their stream.
pub type FrameSink = std::sync::Arc<dyn Fn(AccessUnit) + Send + Sync>;

/// A poisoned lock only means some thread panicked while holding it; the data (status
/// fields, an element handle) is still usable, and capture must keep going.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Factory names of every element in `pipeline`, for diagnostics (which decoder decodebin
/// chose; that a passthrough pipeline has no encoder).
pub(crate) fn element_names(pipeline: &gstreamer::Pipeline) -> Vec<String> {
    use gstreamer::prelude::*;
    pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.factory().map(|f| f.name().to_string()))
        .collect()
}

/// Builds a pipeline from a launch description; errors show `redacted` (no passwords).
pub(crate) fn launch(description: &str, redacted: &str) -> Result<gstreamer::Pipeline, MediaError> {
    use gstreamer::prelude::*;
    let build_err = |reason: String| MediaError::Build {
        description: redacted.to_owned(),
        reason,
    };
    gstreamer::parse::launch(description)
        .map_err(|e| build_err(e.to_string()))?
        .downcast::<gstreamer::Pipeline>()
        .map_err(|_| build_err("description did not produce a pipeline".into()))
}
