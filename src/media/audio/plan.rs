//! The audio pipeline as a launch description, and the capture's small pure decisions.
//!
//! Plain string building, kept apart from GStreamer so the shape of every audio pipeline is
//! unit-tested without running one. Every user-supplied value (device name, URL, path,
//! credentials) is quoted, so none of them can add elements to the pipeline.

use crate::media::MediaError;
use crate::media::audio::{AudioOptions, AudioSourceSpec};
use crate::media::options::SourceSpec;

/// Name of the source element, so the driver can attach signal handlers (rtspsrc) and
/// attribute device errors (alsasrc, pulsesrc).
pub const SOURCE_NAME: &str = "src";
/// The demuxer of a file source; the driver links its audio pad to [`DECODER_NAME`].
pub const DEMUX_NAME: &str = "demux";
/// Decodes the one audio stream of a file source.
pub const DECODER_NAME: &str = "dec";
pub const OPUS_SINK: &str = "opus";
pub const PCMU_SINK: &str = "pcmu";
pub const PCMA_SINK: &str = "pcma";
pub const PCMU_VALVE: &str = "pcmu_valve";
pub const PCMA_VALVE: &str = "pcma_valve";

/// Every packet holds this much audio: the usual WebRTC packetization, and G.711's 160 bytes.
pub const FRAME_MS: u32 = 20;
/// What every source is converted to before encoding: Opus runs at 48 kHz, and mono halves
/// the encoder's work for what is a microphone or a camera's single capsule anyway.
pub const SAMPLE_RATE: u32 = 48_000;
pub const CHANNELS: u32 = 1;
/// G.711's fixed rate: 160 samples (bytes) per 20 ms frame.
pub const G711_RATE: u32 = 8_000;

/// How the driver has to treat the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A live source that starts producing by itself (test tone, ALSA, PulseAudio).
    Live,
    /// rtspsrc: the driver must answer `select-stream` with "audio only".
    Rtsp,
    /// A file: the driver links the demuxer's audio pad to the decoder, and end of stream
    /// means "seek back to the start" when `looping`.
    File { looping: bool },
}

/// A pipeline ready to be handed to `gst::parse::launch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPlan {
    pub description: String,
    /// Elements that must be installed for this description to build. Depayloaders and
    /// decoders for a camera's or file's codec are chosen by decodebin at run time and are
    /// not listed.
    pub required: Vec<&'static str>,
    pub input: Input,
    /// Passwords as they appear in `description`, masked by [`AudioPlan::redacted`].
    secrets: Vec<String>,
}

impl AudioPlan {
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

/// Elements of the shared part: conversion, 20 ms framing, the tee and the three encoders.
const COMMON: [&str; 10] = [
    "audioconvert",
    "audioresample",
    "audiobuffersplit",
    "tee",
    "queue",
    "opusenc",
    "valve",
    "mulawenc",
    "alawenc",
    "appsink",
];

pub fn plan(opts: &AudioOptions) -> Result<AudioPlan, MediaError> {
    let mut required: Vec<&'static str> = COMMON.to_vec();
    let mut secrets = Vec::new();
    let (source, input) = match &opts.source {
        AudioSourceSpec::Test { freq_hz } => {
            required.push("audiotestsrc");
            (
                format!("audiotestsrc name={SOURCE_NAME} is-live=true wave=sine freq={freq_hz}"),
                Input::Live,
            )
        }
        AudioSourceSpec::Alsa { device } => {
            required.push("alsasrc");
            (device_source("alsasrc", device.as_deref())?, Input::Live)
        }
        AudioSourceSpec::Pulse { device } => {
            required.push("pulsesrc");
            (device_source("pulsesrc", device.as_deref())?, Input::Live)
        }
        AudioSourceSpec::Camera(SourceSpec::Rtsp {
            url,
            transport,
            username,
            password,
            latency_ms,
        }) => {
            required.extend(["rtspsrc", "decodebin"]);
            let src = rtsp_source(
                SOURCE_NAME,
                url,
                *transport,
                username.as_deref(),
                password.as_deref(),
                *latency_ms,
                &mut secrets,
            )?;
            // decodebin picks the depayloader and decoder for whatever the camera sends
            // (AAC, G.711, Opus); the audio is decoded and re-encoded to Opus once.
            (
                format!("{src} ! decodebin name={DECODER_NAME}"),
                Input::Rtsp,
            )
        }
        AudioSourceSpec::Camera(SourceSpec::File { path, looping }) => {
            required.extend(["filesrc", "parsebin", "decodebin", "fakesink"]);
            let path = path.to_str().ok_or_else(|| {
                MediaError::InvalidOption(format!("file path {} is not UTF-8", path.display()))
            })?;
            // parsebin only demuxes and parses; the driver links its audio pad to the
            // decoder and the others to fakesinks, so the video is never decoded here.
            (
                format!(
                    "filesrc name={SOURCE_NAME} location={} ! parsebin name={DEMUX_NAME}  decodebin name={DECODER_NAME}",
                    quote(path)?
                ),
                Input::File { looping: *looping },
            )
        }
        AudioSourceSpec::Camera(other) => {
            let kind = match other {
                SourceSpec::Test { .. } => "the video test pattern",
                SourceSpec::V4l2 { .. } => "a V4L2 camera",
                SourceSpec::Rtsp { .. } | SourceSpec::File { .. } => "this source",
            };
            return Err(MediaError::InvalidOption(format!(
                "audio source \"camera\" needs an RTSP or file video source; {kind} has no audio track (use a microphone source: alsa or pulse)"
            )));
        }
    };
    // A file is not live: its Opus sink syncs to the clock so the file plays at its own pace
    // instead of as fast as the CPU decodes, and that sink paces the tee for the others.
    let file = matches!(input, Input::File { .. });
    Ok(AudioPlan {
        description: format!("{source} ! {}", common_tail(opts.bitrate_kbps, file)),
        required,
        input,
        secrets,
    })
}

/// Convert, frame into 20 ms buffers, and split into the Opus branch and two G.711 branches
/// behind closed valves.
///
/// - `audiobuffersplit` before the tee makes each Opus input one 20 ms frame, and again after
///   the 8 kHz resampler because the resampler's first output is short (its filter delay):
///   `strict-buffer-size` drops such remainders so every G.711 packet is exactly 160 bytes.
/// - The valves forward sticky events while closed (`drop-mode=forward-sticky-events`), so
///   caps, segment and end-of-stream still reach the closed branches: a reopened branch is
///   already negotiated, and end of file still completes.
/// - The G.711 sinks never get a buffer while closed, so they must not wait for one before the
///   pipeline may play (`async=false`); otherwise a file pipeline would never reach PLAYING.
/// - Sinks keep a short queue and drop the oldest rather than block the encoder.
fn common_tail(bitrate_kbps: u32, file: bool) -> String {
    let g711 = |valve: &str, enc: &str, sink: &str| {
        format!(
            "t. ! queue ! valve name={valve} drop=true drop-mode=forward-sticky-events \
             ! audioresample ! audio/x-raw,rate={G711_RATE} \
             ! audiobuffersplit output-buffer-duration=1/{fps} strict-buffer-size=true \
             ! {enc} ! appsink name={sink} sync=false async=false max-buffers=8 drop=true enable-last-sample=false",
            fps = 1000 / FRAME_MS
        )
    };
    format!(
        "audioconvert ! audioresample \
         ! audio/x-raw,format=S16LE,layout=interleaved,rate={SAMPLE_RATE},channels={CHANNELS} \
         ! audiobuffersplit output-buffer-duration=1/{fps} ! tee name=t  \
         t. ! queue ! opusenc bitrate={bps} frame-size={FRAME_MS} audio-type=voice \
         ! appsink name={OPUS_SINK} sync={file} max-buffers=8 drop=true enable-last-sample=false  \
         {}  {}",
        g711(PCMU_VALVE, "mulawenc", PCMU_SINK),
        g711(PCMA_VALVE, "alawenc", PCMA_SINK),
        fps = 1000 / FRAME_MS,
        bps = bitrate_kbps.saturating_mul(1000),
    )
}

fn device_source(element: &str, device: Option<&str>) -> Result<String, MediaError> {
    Ok(match device {
        Some(d) => format!("{element} name={SOURCE_NAME} device={}", quote(d)?),
        None => format!("{element} name={SOURCE_NAME}"),
    })
}

/// What the capture has learnt about the stream's tracks. A camera's SDP or a file may hold
/// no audio at all; that is not a failure to retry but a fact to report once. Fed by
/// rtspsrc's `select-stream` (one stream at a time) and by parsebin's stream collection (all
/// of a file's streams at once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackCensus {
    /// Streams the source described (RTSP) or exposed (file), audio or not.
    offered: u32,
    /// Of those, audio streams.
    audio: u32,
    /// The source has described all its streams.
    complete: bool,
}

impl TrackCensus {
    pub fn offer(&mut self, is_audio: bool) {
        self.offered += 1;
        self.audio += u32::from(is_audio);
    }

    /// The source failed after describing its streams one by one: rtspsrc reports an error
    /// when none was selected, after asking about every stream of the SDP.
    pub fn complete(&mut self) {
        self.complete = true;
    }

    /// The source listed all its streams at once (a file's stream collection); a later list
    /// replaces an earlier one.
    pub fn describe(&mut self, streams: usize, audio: usize) {
        self.offered = u32::try_from(streams).unwrap_or(u32::MAX);
        self.audio = u32::try_from(audio).unwrap_or(u32::MAX);
        self.complete = true;
    }

    /// The stream exists but has no audio track: stop retrying. A source that described no
    /// stream at all did not get far enough to tell (unreachable, broken file), so that stays
    /// a failure to retry.
    pub fn no_audio(&self) -> bool {
        self.complete && self.offered > 0 && self.audio == 0
    }
}

/// A packet's capture time on the pipeline clock, in nanoseconds: its running time (the
/// buffer's PTS mapped through its segment; it starts over at zero with each pipeline and
/// after each file-loop seek) plus the pipeline's base time (the clock reading at running
/// time zero). With the pipeline pinned to the system clock the sum is a CLOCK_MONOTONIC
/// reading, comparable with video timestamps and moving forward across restarts and loops.
/// A packet without a timestamp, or before the pipeline has a base time, gets `now`.
pub fn capture_time_ns(running_ns: Option<u64>, base_ns: Option<u64>, now_ns: u64) -> u64 {
    match (running_ns, base_ns) {
        (Some(running), Some(base)) => running.saturating_add(base),
        _ => now_ns,
    }
}

pub use crate::media::error::debian_package;

use crate::media::pipeline::{quote, rtsp_source};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::options::RtspTransport;

    fn opts(source: AudioSourceSpec) -> AudioOptions {
        AudioOptions {
            source,
            ..AudioOptions::default()
        }
    }

    fn rtsp(url: &str, password: Option<&str>) -> AudioSourceSpec {
        AudioSourceSpec::Camera(SourceSpec::Rtsp {
            url: url.into(),
            transport: RtspTransport::Tcp,
            username: Some("admin".into()),
            password: password.map(Into::into),
            latency_ms: 50,
        })
    }

    #[test]
    fn test_tone_feeds_one_opus_encoder_and_two_closed_g711_branches() {
        let p = plan(&opts(AudioSourceSpec::Test { freq_hz: 440 })).unwrap();
        let d = &p.description;
        assert_eq!(p.input, Input::Live);
        assert!(d.starts_with("audiotestsrc name=src is-live=true wave=sine freq=440 ! "));
        assert!(d.contains("rate=48000,channels=1"), "{d}");
        assert!(d.contains("audiobuffersplit output-buffer-duration=1/50 ! tee name=t"));
        assert!(d.contains("opusenc bitrate=32000 frame-size=20"), "{d}");
        assert_eq!(d.matches("opusenc").count(), 1);
        assert!(d.contains("valve name=pcmu_valve drop=true"));
        assert!(d.contains("valve name=pcma_valve drop=true"));
        assert!(d.contains("mulawenc ! appsink name=pcmu sync=false async=false"));
        assert!(d.contains("alawenc ! appsink name=pcma sync=false async=false"));
        assert!(d.contains("appsink name=opus sync=false"));
        // Valves sit before the G.711 resampler and encoder, so closed branches cost nothing.
        let valve = d.find("pcmu_valve").unwrap();
        assert!(valve < d.find("mulawenc").unwrap());
        assert!(d[valve..].find("rate=8000").is_some());
        for e in ["audiotestsrc", "opusenc", "mulawenc", "alawenc", "valve"] {
            assert!(p.required.contains(&e), "{e}");
        }
        let p = plan(&AudioOptions {
            bitrate_kbps: 64,
            ..opts(AudioSourceSpec::Test { freq_hz: 1000 })
        })
        .unwrap();
        assert!(p.description.contains("bitrate=64000"));
        assert!(p.description.contains("freq=1000"));
    }

    #[test]
    fn microphones_quote_the_device_or_use_the_default() {
        let p = plan(&opts(AudioSourceSpec::Alsa {
            device: Some("hw:1,0".into()),
        }))
        .unwrap();
        assert!(
            p.description
                .starts_with("alsasrc name=src device=\"hw:1,0\" ! ")
        );
        assert!(p.required.contains(&"alsasrc"));
        let p = plan(&opts(AudioSourceSpec::Pulse { device: None })).unwrap();
        assert!(
            p.description
                .starts_with("pulsesrc name=src ! audioconvert")
        );
        assert!(p.required.contains(&"pulsesrc"));
    }

    #[test]
    fn hostile_values_stay_inside_quotes() {
        let p = plan(&opts(AudioSourceSpec::Alsa {
            device: Some("hw:0\" ! filesink location=\"/tmp/x".into()),
        }))
        .unwrap();
        assert!(
            p.description.starts_with(
                "alsasrc name=src device=\"hw:0\\\" ! filesink location=\\\"/tmp/x\" ! audioconvert"
            ),
            "{}",
            p.description
        );
        assert_eq!(p.description.matches("filesink").count(), 1);
        let p = plan(&opts(rtsp("rtsp://cam/a\" ! fakesink \"", Some("p\"w")))).unwrap();
        assert!(
            p.description
                .contains("location=\"rtsp://cam/a\\\" ! fakesink \\\"\" protocols=tcp"),
            "{}",
            p.description
        );
        assert!(p.description.contains("user-pw=\"p\\\"w\""));
        for bad in [
            AudioSourceSpec::Pulse {
                device: Some("a\nb".into()),
            },
            rtsp("rtsp://cam/\r\nx", None),
        ] {
            assert!(plan(&opts(bad)).is_err());
        }
    }

    #[test]
    fn rtsp_camera_decodes_with_the_video_sessions_settings_and_hides_passwords() {
        let p = plan(&opts(rtsp("rtsp://cam/stream", Some("hunter2")))).unwrap();
        let d = &p.description;
        assert_eq!(p.input, Input::Rtsp);
        assert!(
            d.starts_with(
                "rtspsrc name=src location=\"rtsp://cam/stream\" protocols=tcp latency=50 user-id=\"admin\" user-pw=\"hunter2\" ! decodebin name=dec ! audioconvert"
            ),
            "{d}"
        );
        assert!(!p.redacted().contains("hunter2"));
        let p = plan(&opts(AudioSourceSpec::Camera(SourceSpec::Rtsp {
            url: "rtsp://u:s3cret@cam/x".into(),
            transport: RtspTransport::Udp,
            username: None,
            password: None,
            latency_ms: 0,
        })))
        .unwrap();
        assert!(
            p.description
                .contains("protocols=udp latency=0 ! decodebin")
        );
        assert!(
            p.redacted().contains("rtsp://u:***@cam/x"),
            "{}",
            p.redacted()
        );
    }

    #[test]
    fn file_camera_demuxes_without_decoding_video_and_paces_itself() {
        let p = plan(&opts(AudioSourceSpec::Camera(SourceSpec::File {
            path: "/tmp/a b.mp4".into(),
            looping: true,
        })))
        .unwrap();
        let d = &p.description;
        assert_eq!(p.input, Input::File { looping: true });
        assert!(
            d.starts_with(
                "filesrc name=src location=\"/tmp/a b.mp4\" ! parsebin name=demux  decodebin name=dec ! audioconvert"
            ),
            "{d}"
        );
        assert!(d.contains("appsink name=opus sync=true"));
        assert!(d.contains("appsink name=pcmu sync=false async=false"));
    }

    #[test]
    fn cameras_without_an_audio_track_are_refused() {
        for source in [
            SourceSpec::Test {
                pattern: "ball".into(),
            },
            SourceSpec::V4l2 {
                device: "/dev/video0".into(),
                format: crate::media::V4l2Format::Auto,
            },
        ] {
            let err = plan(&opts(AudioSourceSpec::Camera(source))).unwrap_err();
            assert!(err.is_permanent());
            assert!(err.to_string().contains("no audio track"), "{err}");
        }
    }

    #[test]
    fn census_reports_no_audio_only_when_the_source_described_everything() {
        let mut c = TrackCensus::default();
        assert!(!c.no_audio());
        c.complete();
        assert!(!c.no_audio(), "nothing described: unreachable, not silent");
        c.offer(false);
        assert!(c.no_audio());
        let mut c = TrackCensus::default();
        c.offer(false);
        assert!(!c.no_audio(), "more streams may follow");
        c.offer(true);
        c.complete();
        assert!(!c.no_audio());
        let mut c = TrackCensus::default();
        c.describe(2, 0);
        assert!(c.no_audio());
        c.describe(2, 1);
        assert!(!c.no_audio());
        c.describe(0, 0);
        assert!(!c.no_audio(), "an empty file is broken, not silent");
    }

    #[test]
    fn capture_time_is_running_time_plus_base_time_or_now() {
        let base = 5_000_000_000_000;
        assert_eq!(
            capture_time_ns(Some(20_000_000), Some(base), 7),
            base + 20_000_000
        );
        assert_eq!(capture_time_ns(None, Some(base), 7), 7);
        assert_eq!(capture_time_ns(Some(1), None, 7), 7);
        assert_eq!(capture_time_ns(Some(u64::MAX), Some(base), 7), u64::MAX);
    }

    #[test]
    fn packages_name_where_to_get_each_element() {
        assert_eq!(debian_package("alsasrc"), "gstreamer1.0-alsa");
        assert_eq!(
            debian_package("audiobuffersplit"),
            "gstreamer1.0-plugins-bad"
        );
        assert_eq!(debian_package("opusenc"), "gstreamer1.0-plugins-base");
        assert_eq!(debian_package("avdec_h264"), "gstreamer1.0-libav");
    }
}
