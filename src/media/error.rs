//! What can go wrong while opening or running a capture pipeline.

/// Errors from building or running the capture. [`MediaError::is_permanent`] separates
/// configuration mistakes (fail at start) from conditions the supervisor retries (an
/// unplugged camera, an RTSP server that is down).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("GStreamer element `{element}` is not installed (Debian package: {package})")]
    ElementMissing {
        element: String,
        package: &'static str,
    },
    #[error("encoder `{requested}` is not available here; available: {}", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    EncoderUnavailable {
        requested: String,
        available: Vec<String>,
    },
    #[error("`{requested}` is not an H.264 encoder camgate knows how to configure; known: {}", known.join(", "))]
    UnknownEncoder {
        requested: String,
        known: Vec<String>,
    },
    #[error("bad RTSP URL `{url}`: {reason}")]
    BadRtspUrl { url: String, reason: String },
    #[error("invalid capture option: {0}")]
    InvalidOption(String),
    #[error("could not build the pipeline `{description}`: {reason}")]
    Build { description: String, reason: String },
    #[error("pipeline has no element named `{0}`")]
    MissingNamedElement(&'static str),
    #[error("video device {device}: {reason}")]
    Device { device: String, reason: String },
    #[error("pipeline failed to reach {state}: {reason}")]
    StateChange { state: &'static str, reason: String },
    #[error("error from element {element}: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Element {
        element: String,
        message: String,
        debug: Option<String>,
    },
    #[error("RTSP stream is not H.264 (got {0}); configure the camera for H.264")]
    NotH264(String),
    #[error("stream ended")]
    EndOfStream,
    #[error("no access unit for {0:?}; restarting the pipeline")]
    Stalled(std::time::Duration),
    #[error("could not start the capture thread: {0}")]
    Thread(String),
    /// A sound output (talkback) that cannot be opened or stopped working; `output` is the
    /// sink as configured (`alsa:hw:1`, `pulse:…`, `default`, `file:…`).
    #[error("sound output {output} cannot be used: {reason}")]
    AudioOutput { output: String, reason: String },
    /// A sound input (microphone, camera audio) that cannot be opened or stopped working.
    #[error("audio device {device}: {reason}")]
    AudioDevice { device: String, reason: String },
    #[error("no audio packet for {0:?}; restarting the audio pipeline")]
    AudioStalled(std::time::Duration),
}

impl MediaError {
    /// Configuration mistakes that no amount of retrying will fix: `Capture::start` returns
    /// these instead of entering the restart loop.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            MediaError::Init(_)
                | MediaError::ElementMissing { .. }
                | MediaError::EncoderUnavailable { .. }
                | MediaError::UnknownEncoder { .. }
                | MediaError::BadRtspUrl { .. }
                | MediaError::InvalidOption(_)
                | MediaError::Thread(_)
        )
    }
}

impl MediaError {
    /// Every value [`MediaError::restart_reason`] returns, for metrics that list each one.
    pub const RESTART_REASONS: [&'static str; 8] = [
        "stalled",
        "element_error",
        "end_of_stream",
        "device",
        "state_change",
        "pipeline_build",
        "not_h264",
        "other",
    ];

    /// A short, fixed label for why a pipeline failed (metrics group restarts by it).
    pub fn restart_reason(&self) -> &'static str {
        match self {
            MediaError::Stalled(_) | MediaError::AudioStalled(_) => "stalled",
            MediaError::Element { .. } => "element_error",
            MediaError::EndOfStream => "end_of_stream",
            MediaError::Device { .. }
            | MediaError::AudioDevice { .. }
            | MediaError::AudioOutput { .. } => "device",
            MediaError::StateChange { .. } => "state_change",
            MediaError::Build { .. } | MediaError::MissingNamedElement(_) => "pipeline_build",
            MediaError::NotH264(_) => "not_h264",
            MediaError::Init(_)
            | MediaError::ElementMissing { .. }
            | MediaError::EncoderUnavailable { .. }
            | MediaError::UnknownEncoder { .. }
            | MediaError::BadRtspUrl { .. }
            | MediaError::InvalidOption(_)
            | MediaError::Thread(_) => "other",
        }
    }
}

/// The Debian (bookworm) package that ships a GStreamer element, for error messages that tell
/// the operator what to install.
pub fn debian_package(element: &str) -> &'static str {
    match element {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "openh264enc" | "h264parse" | "vah264enc" | "nvh264enc" | "audiobuffersplit" => {
            "gstreamer1.0-plugins-bad"
        }
        "vaapih264enc" => "gstreamer1.0-vaapi",
        "nvv4l2h264enc" | "nvvidconv" => "nvidia-l4t-gstreamer (Jetson L4T)",
        "v4l2src" | "v4l2h264enc" | "rtspsrc" | "rtph264depay" | "jpegdec" | "qtdemux"
        | "matroskademux" | "pulsesrc" | "pulsesink" | "mulawenc" | "alawenc" | "mulawdec"
        | "alawdec" | "rtpjitterbuffer" | "rtpopusdepay" | "rtppcmudepay" | "rtppcmadepay"
        | "wavenc" => "gstreamer1.0-plugins-good",
        "alsasrc" | "alsasink" => "gstreamer1.0-alsa",
        "clockoverlay" => "gstreamer1.0-x",
        "avdec_h264" => "gstreamer1.0-libav",
        "tee" | "queue" | "valve" | "fakesink" | "filesrc" | "filesink" => "libgstreamer1.0-0",
        // opusenc/opusdec, audiotestsrc, audioconvert, audioresample, appsrc/appsink,
        // decodebin, parsebin, videotestsrc, ...
        _ => "gstreamer1.0-plugins-base",
    }
}
