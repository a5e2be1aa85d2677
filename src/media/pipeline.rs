//! Turns capture options into a GStreamer launch description.
//!
//! This is plain string building, kept apart from GStreamer so the shape of every pipeline
//! (what is passed through, what is encoded, which elements it needs) is unit-tested without
//! running one. Every user-supplied value is quoted, so a device path or URL can never add
//! elements to the pipeline.

use crate::media::MediaError;
use crate::media::encoder::EncoderChoice;
use crate::media::options::{CaptureOptions, RtspTransport, SourceSpec, V4l2Format};

/// Name of the appsink every pipeline ends in.
pub const SINK_NAME: &str = "sink";
/// Name of the encoder element, when there is one.
pub const ENCODER_NAME: &str = "enc";
/// Name of the RTSP source, so the driver can check what the camera offers.
pub const RTSP_SOURCE_NAME: &str = "src";
/// Name of a file source's decodebin, so the driver can keep it from decoding audio (the
/// audio capture reads the file's audio itself).
pub const FILE_DECODER_NAME: &str = "filedec";

/// A pipeline ready to be handed to `gst::parse::launch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelinePlan {
    pub description: String,
    /// The encoder in the pipeline; None when the source's H.264 is passed through.
    pub encoder: Option<EncoderChoice>,
    /// Elements that must be installed for this description to build.
    pub required: Vec<&'static str>,
    /// End-of-stream means "seek back to the start", not failure.
    pub looping: bool,
    /// Passwords as they appear in `description`, masked by [`PipelinePlan::redacted`].
    secrets: Vec<String>,
}

impl PipelinePlan {
    pub fn passthrough(&self) -> bool {
        self.encoder.is_none()
    }

    /// The description with camera passwords masked, for errors and logs.
    pub fn redacted(&self) -> String {
        self.secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(self.description.clone(), |d, secret| {
                d.replace(secret.as_str(), "***")
            })
    }
}

/// Builds the plan. `v4l2_format` is the camera format already resolved from `Auto` (the
/// driver asks the device); `clock_overlay` says whether `clockoverlay` is installed.
pub fn plan(
    opts: &CaptureOptions,
    encoder: Option<EncoderChoice>,
    v4l2_format: Option<V4l2Format>,
    clock_overlay: bool,
) -> Result<PipelinePlan, MediaError> {
    let (w, h, f) = (opts.width, opts.height, opts.framerate);
    let need_encoder = || {
        encoder.ok_or_else(|| {
            MediaError::InvalidOption(
                "this source needs an H.264 encoder but none was selected".into(),
            )
        })
    };
    let mut required = vec!["appsink", "h264parse"];
    let mut secrets = Vec::new();
    let (description, encoder, looping) = match &opts.source {
        SourceSpec::Test { pattern } => {
            let enc = need_encoder()?;
            required.extend(["videotestsrc", "videoconvert", "videoscale", "videorate"]);
            let overlay = if clock_overlay {
                "clockoverlay time-format=\"%H:%M:%S\" ! "
            } else {
                ""
            };
            (
                format!(
                    "videotestsrc is-live=true pattern={} horizontal-speed=2 ! video/x-raw,width={w},height={h},framerate={f}/1 ! {overlay}{}",
                    quote(pattern)?,
                    encode_tail(&enc, opts, false, true)
                ),
                Some(enc),
                false,
            )
        }
        SourceSpec::V4l2 { device, format } => {
            required.push("v4l2src");
            let format = match format {
                V4l2Format::Auto => v4l2_format.unwrap_or(V4l2Format::Raw),
                other => *other,
            };
            let src = format!("v4l2src device={}", quote(device)?);
            match format {
                V4l2Format::H264 => (
                    format!(
                        "{src} ! video/x-h264,width={w},height={h},framerate={f}/1 ! h264parse config-interval=-1 ! {}",
                        sink_tail(false, false)
                    ),
                    None,
                    false,
                ),
                V4l2Format::Mjpeg => {
                    let enc = need_encoder()?;
                    required.extend(["jpegdec", "videoconvert", "videoscale", "videorate"]);
                    (
                        format!(
                            "{src} ! image/jpeg,width={w},height={h},framerate={f}/1 ! jpegdec ! {}",
                            encode_tail(&enc, opts, false, true)
                        ),
                        Some(enc),
                        false,
                    )
                }
                V4l2Format::Raw | V4l2Format::Auto => {
                    let enc = need_encoder()?;
                    required.extend(["videoconvert", "videoscale", "videorate"]);
                    (
                        format!(
                            "{src} ! video/x-raw,width={w},height={h},framerate={f}/1 ! {}",
                            encode_tail(&enc, opts, false, true)
                        ),
                        Some(enc),
                        false,
                    )
                }
            }
        }
        SourceSpec::Rtsp {
            url,
            transport,
            username,
            password,
            latency_ms,
        } => {
            required.extend(["rtspsrc", "rtph264depay"]);
            let src = rtsp_source(
                RTSP_SOURCE_NAME,
                url,
                *transport,
                username.as_deref(),
                password.as_deref(),
                *latency_ms,
                &mut secrets,
            )?;
            // The camera's H.264 goes through untouched: depayload, then h264parse re-inserts
            // SPS/PPS before every IDR so a viewer can join at any keyframe.
            (
                format!(
                    "{src} ! rtph264depay request-keyframe=true wait-for-keyframe=true ! h264parse config-interval=-1 ! {}",
                    sink_tail(false, false)
                ),
                None,
                false,
            )
        }
        SourceSpec::File { path, looping } => {
            let enc = need_encoder()?;
            required.extend([
                "filesrc",
                "decodebin",
                "videoconvert",
                "videoscale",
                "videorate",
            ]);
            let path = path.to_str().ok_or_else(|| {
                MediaError::InvalidOption(format!("file path {} is not UTF-8", path.display()))
            })?;
            // A file is not live: the sink syncs to the clock so it plays at its own pace
            // instead of as fast as the CPU can decode.
            (
                format!(
                    "filesrc location={} ! decodebin name={FILE_DECODER_NAME} ! {}",
                    quote(path)?,
                    encode_tail(&enc, opts, true, false)
                ),
                Some(enc),
                *looping,
            )
        }
    };
    if let Some(enc) = &encoder {
        required.push(enc.element());
        if enc.pre_elements().is_some() {
            required.push("nvvidconv");
        }
    }
    Ok(PipelinePlan {
        description,
        encoder,
        required,
        looping,
        secrets,
    })
}

/// Scale/convert/rate to exactly what was configured, encode, and end in the sink.
fn encode_tail(enc: &EncoderChoice, opts: &CaptureOptions, sync: bool, drop: bool) -> String {
    let props: String = enc
        .properties(&opts.encoder, opts.framerate)
        .iter()
        .map(|(k, v)| format!(" {k}=\"{}\"", escape(v)))
        .collect();
    let pre = enc
        .pre_elements()
        .map(|p| format!("{p} ! "))
        .unwrap_or_default();
    format!(
        "videoconvert ! videoscale ! videorate ! video/x-raw,format={},width={},height={},framerate={}/1,pixel-aspect-ratio=1/1 ! {pre}{} name={ENCODER_NAME}{props} ! {} ! h264parse config-interval=-1 ! {}",
        enc.input_format(),
        opts.width,
        opts.height,
        opts.framerate,
        enc.element(),
        enc.output_caps(),
        sink_tail(sync, drop)
    )
}

/// Byte-stream, one access unit per buffer: what the packetizer expects. Passthrough sinks
/// never drop, since a lost AU corrupts the picture until an IDR the camera won't send early.
fn sink_tail(sync: bool, drop: bool) -> String {
    format!(
        "video/x-h264,stream-format=byte-stream,alignment=au ! appsink name={SINK_NAME} sync={sync} max-buffers=8 drop={drop} enable-last-sample=false"
    )
}

/// An `rtspsrc` named `name` with the camera's connection settings (shared by the video session
/// and the audio capture's own session, so a camera that needs credentials or TCP gets them on
/// both). Passwords, as they appear in the description, are added to `secrets`.
pub(crate) fn rtsp_source(
    name: &str,
    url: &str,
    transport: RtspTransport,
    username: Option<&str>,
    password: Option<&str>,
    latency_ms: u32,
    secrets: &mut Vec<String>,
) -> Result<String, MediaError> {
    let protocols = match transport {
        RtspTransport::Tcp => "tcp",
        RtspTransport::Udp => "udp",
    };
    let mut src = format!(
        "rtspsrc name={name} location={} protocols={protocols} latency={latency_ms}",
        quote(url)?
    );
    if let Some(user) = username {
        src.push_str(&format!(" user-id={}", quote(user)?));
    }
    if let Some(pw) = password {
        src.push_str(&format!(" user-pw={}", quote(pw)?));
        secrets.push(escape(pw));
    }
    if let Some(pw) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(escape))
    {
        secrets.push(pw);
    }
    Ok(src)
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Quotes a user value for a launch description; control characters are refused outright.
pub(crate) fn quote(s: &str) -> Result<String, MediaError> {
    if s.chars().any(char::is_control) {
        return Err(MediaError::InvalidOption(format!(
            "{:?} contains control characters",
            s
        )));
    }
    Ok(format!("\"{}\"", escape(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::encoder::{EncoderChoice, EncoderKind};

    const X264: EncoderChoice = EncoderChoice {
        kind: EncoderKind::X264,
    };

    fn opts(source: SourceSpec) -> CaptureOptions {
        CaptureOptions {
            source,
            width: 640,
            height: 480,
            framerate: 30,
            ..CaptureOptions::default()
        }
    }

    #[test]
    fn test_source_pins_i420_and_constrained_baseline() {
        let p = plan(
            &opts(SourceSpec::Test {
                pattern: "ball".into(),
            }),
            Some(X264),
            None,
            true,
        )
        .unwrap();
        let d = &p.description;
        assert!(d.contains("is-live=true"));
        assert!(d.contains("clockoverlay"));
        let i420 = d.find("format=I420").unwrap();
        let enc = d.find("x264enc").unwrap();
        let cb = d.find("profile=constrained-baseline").unwrap();
        assert!(i420 < enc && enc < cb, "{d}");
        assert!(d.ends_with("enable-last-sample=false"));
        assert!(
            d.contains("stream-format=byte-stream,alignment=au ! appsink name=sink sync=false")
        );
        assert!(!p.passthrough());
    }

    #[test]
    fn rtsp_is_passthrough_without_encoder() {
        let p = plan(
            &opts(SourceSpec::Rtsp {
                url: "rtsp://cam/stream".into(),
                transport: RtspTransport::Tcp,
                username: Some("admin".into()),
                password: Some("p\"w".into()),
                latency_ms: 100,
            }),
            Some(X264),
            None,
            false,
        )
        .unwrap();
        assert!(p.passthrough());
        assert!(!p.description.contains("name=enc"), "{}", p.description);
        assert!(!p.description.contains("x264enc"));
        assert!(p.description.contains("protocols=tcp latency=100"));
        assert!(p.description.contains("user-pw=\"p\\\"w\""));
        assert!(p.description.contains("rtph264depay"));
        assert!(!p.redacted().contains("p\\\"w"), "{}", p.redacted());
        let p = plan(
            &opts(SourceSpec::Rtsp {
                url: "rtsp://admin:hunter2@cam/stream".into(),
                transport: RtspTransport::Udp,
                username: None,
                password: None,
                latency_ms: 0,
            }),
            None,
            None,
            false,
        )
        .unwrap();
        assert!(p.description.contains("hunter2"));
        assert!(
            p.redacted().contains("rtsp://admin:***@cam/stream"),
            "{}",
            p.redacted()
        );
    }

    #[test]
    fn v4l2_formats_choose_decode_or_passthrough() {
        let src = |format| {
            opts(SourceSpec::V4l2 {
                device: "/dev/video0".into(),
                format,
            })
        };
        let mjpeg = plan(&src(V4l2Format::Mjpeg), Some(X264), None, false).unwrap();
        assert!(mjpeg.description.contains("image/jpeg") && mjpeg.description.contains("jpegdec"));
        let h264 = plan(&src(V4l2Format::H264), None, None, false).unwrap();
        assert!(h264.passthrough());
        let auto = plan(&src(V4l2Format::Auto), None, Some(V4l2Format::H264), false).unwrap();
        assert!(auto.passthrough());
        let err = plan(&src(V4l2Format::Raw), None, None, false).unwrap_err();
        assert!(err.to_string().contains("encoder"));
    }

    #[test]
    fn hostile_values_stay_inside_quotes() {
        let p = plan(
            &opts(SourceSpec::V4l2 {
                device: "/dev/video0\" ! filesink location=\"/tmp/x".into(),
                format: V4l2Format::Raw,
            }),
            Some(X264),
            None,
            false,
        )
        .unwrap();
        assert!(
            p.description
                .contains("device=\"/dev/video0\\\" ! filesink location=\\\"/tmp/x\"")
        );
        let err = plan(
            &opts(SourceSpec::Test {
                pattern: "a\nb".into(),
            }),
            Some(X264),
            None,
            false,
        );
        assert!(err.is_err());
    }

    #[test]
    fn file_syncs_to_clock_and_loops() {
        let p = plan(
            &opts(SourceSpec::File {
                path: "/tmp/a b.mp4".into(),
                looping: true,
            }),
            Some(X264),
            None,
            false,
        )
        .unwrap();
        assert!(p.looping);
        assert!(
            p.description
                .contains("location=\"/tmp/a b.mp4\" ! decodebin")
        );
        assert!(p.description.contains("sync=true"));
    }
}
