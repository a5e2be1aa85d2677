//! Which H.264 encoder to use and how to configure it for live, low-latency WebRTC.
//!
//! All encoder knowledge lives here so the pipeline builder never special-cases an element:
//! each [`EncoderKind`] knows its element name, its properties (units differ: x264enc wants
//! kbit/s, openh264enc bit/s), and what it needs before and after it.

use crate::media::MediaError;
use crate::media::options::EncoderSpec;

/// The encoders camgate knows how to configure, best first: hardware saves a Pi or Jetson
/// most of its CPU, x264 is the best software encoder, openh264 the fallback.
pub const PREFERENCE: [EncoderKind; 7] = [
    EncoderKind::V4l2,
    EncoderKind::NvV4l2,
    EncoderKind::Va,
    EncoderKind::Vaapi,
    EncoderKind::Nvenc,
    EncoderKind::X264,
    EncoderKind::OpenH264,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// Raspberry Pi 3/4 stateful M2M encoder (`v4l2h264enc`).
    V4l2,
    /// NVIDIA Jetson (`nvv4l2h264enc`, fed NVMM buffers by `nvvidconv`).
    NvV4l2,
    /// Intel/AMD VA-API through the `va` plugin (`vah264enc`).
    Va,
    /// Intel/AMD VA-API through the legacy `gstreamer-vaapi` plugin (`vaapih264enc`).
    Vaapi,
    /// NVIDIA desktop NVENC (`nvh264enc`).
    Nvenc,
    X264,
    OpenH264,
}

impl EncoderKind {
    pub fn element(self) -> &'static str {
        match self {
            EncoderKind::V4l2 => "v4l2h264enc",
            EncoderKind::NvV4l2 => "nvv4l2h264enc",
            EncoderKind::Va => "vah264enc",
            EncoderKind::Vaapi => "vaapih264enc",
            EncoderKind::Nvenc => "nvh264enc",
            EncoderKind::X264 => "x264enc",
            EncoderKind::OpenH264 => "openh264enc",
        }
    }

    pub fn is_hardware(self) -> bool {
        !matches!(self, EncoderKind::X264 | EncoderKind::OpenH264)
    }

    fn from_element(name: &str) -> Option<EncoderKind> {
        PREFERENCE.into_iter().find(|k| k.element() == name)
    }
}

/// The encoder picked for this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderChoice {
    pub kind: EncoderKind,
}

impl EncoderChoice {
    pub fn element(&self) -> &'static str {
        self.kind.element()
    }

    /// Properties for live streaming: no B-frames (WebRTC has no reordering), a bounded GOP so
    /// a viewer whose keyframe request is ignored still starts within `keyframe_interval_s`,
    /// and constant-ish bitrate.
    pub fn properties(&self, spec: &EncoderSpec, framerate: u32) -> Vec<(&'static str, String)> {
        let kbps = spec.bitrate_kbps;
        let bps = u64::from(kbps) * 1000;
        let gop = spec
            .keyframe_interval_s
            .max(1)
            .saturating_mul(framerate.max(1));
        match self.kind {
            EncoderKind::X264 => vec![
                ("tune", "zerolatency".into()),
                ("speed-preset", "ultrafast".into()),
                ("bitrate", kbps.to_string()),
                ("key-int-max", gop.to_string()),
                ("bframes", "0".into()),
            ],
            EncoderKind::OpenH264 => vec![
                ("bitrate", bps.to_string()),
                ("gop-size", gop.to_string()),
                ("complexity", "low".into()),
                ("usage-type", "camera".into()),
                ("rate-control", "bitrate".into()),
            ],
            // h264_i_frame_period=1 hangs the Pi firmware (raspberrypi/linux#4740), hence max(2).
            EncoderKind::V4l2 => vec![(
                "extra-controls",
                format!(
                    "controls,video_bitrate={bps},video_bitrate_mode=1,h264_i_frame_period={},repeat_sequence_header=1",
                    gop.max(2)
                ),
            )],
            EncoderKind::NvV4l2 => vec![
                ("bitrate", bps.to_string()),
                ("control-rate", "1".into()),
                ("iframeinterval", gop.to_string()),
                ("idrinterval", gop.to_string()),
                ("insert-sps-pps", "true".into()),
                ("preset-level", "1".into()),
                ("maxperf-enable", "true".into()),
                ("num-B-Frames", "0".into()),
            ],
            EncoderKind::Va => vec![
                ("bitrate", kbps.to_string()),
                ("key-int-max", gop.to_string()),
                ("rate-control", "cbr".into()),
                ("b-frames", "0".into()),
            ],
            EncoderKind::Vaapi => vec![
                ("bitrate", kbps.to_string()),
                ("keyframe-period", gop.to_string()),
                ("rate-control", "cbr".into()),
                ("max-bframes", "0".into()),
            ],
            EncoderKind::Nvenc => vec![
                ("bitrate", kbps.to_string()),
                ("gop-size", gop.to_string()),
                ("rc-mode", "cbr".into()),
                ("zerolatency", "true".into()),
                ("bframes", "0".into()),
            ],
        }
    }

    /// Raw format the encoder is fed; I420 is pinned because x264enc otherwise negotiates
    /// High 4:4:4, which browsers cannot decode.
    pub fn input_format(&self) -> &'static str {
        match self.kind {
            EncoderKind::X264 | EncoderKind::OpenH264 => "I420",
            _ => "NV12",
        }
    }

    /// Elements between the raw caps and the encoder (Jetson needs frames in NVMM memory).
    pub fn pre_elements(&self) -> Option<&'static str> {
        match self.kind {
            EncoderKind::NvV4l2 => Some("nvvidconv ! video/x-raw(memory:NVMM),format=NV12"),
            _ => None,
        }
    }

    /// Caps right after the encoder: constrained baseline is what every browser decodes.
    /// The Pi encoder also needs an explicit level or it refuses to negotiate.
    pub fn output_caps(&self) -> &'static str {
        match self.kind {
            EncoderKind::V4l2 => "video/x-h264,level=(string)4,profile=constrained-baseline",
            _ => "video/x-h264,profile=constrained-baseline",
        }
    }

    /// Whether an upstream force-key-unit event makes this encoder emit an IDR. The Pi's
    /// v4l2h264enc ignores it in GStreamer 1.22; viewers then wait for the periodic IDR.
    pub fn honours_keyframe_requests(&self) -> bool {
        !matches!(self.kind, EncoderKind::V4l2)
    }
}

/// The encoders of [`PREFERENCE`] the GStreamer registry has, best first: what the daemon
/// passes to [`select_encoder`]. Needs `gst::init`.
pub fn installed_encoders() -> Vec<&'static str> {
    PREFERENCE
        .iter()
        .map(|k| k.element())
        .filter(|name| gstreamer::ElementFactory::find(name).is_some())
        .collect()
}

/// Picks the encoder from the element names `installed` on this machine (the daemon passes
/// [`installed_encoders`]; tests pass a Pi's, a Jetson's, a desktop's list): `auto` takes the
/// first installed one in [`PREFERENCE`]; an explicit name must be known and installed.
pub fn select_encoder(requested: &str, installed: &[&str]) -> Result<EncoderChoice, MediaError> {
    let is_installed = |kind: &EncoderKind| installed.contains(&kind.element());
    let available: Vec<String> = PREFERENCE
        .iter()
        .filter(|k| is_installed(k))
        .map(|k| k.element().to_string())
        .collect();
    let requested = requested.trim();
    if requested.is_empty() || requested.eq_ignore_ascii_case("auto") {
        return PREFERENCE
            .into_iter()
            .find(is_installed)
            .map(|kind| EncoderChoice { kind })
            .ok_or(MediaError::EncoderUnavailable {
                requested: "auto".to_string(),
                available,
            });
    }
    let Some(kind) = EncoderKind::from_element(requested) else {
        return Err(MediaError::UnknownEncoder {
            requested: requested.to_string(),
            known: PREFERENCE.iter().map(|k| k.element().to_string()).collect(),
        });
    };
    if !is_installed(&kind) {
        return Err(MediaError::EncoderUnavailable {
            requested: requested.to_string(),
            available,
        });
    }
    Ok(EncoderChoice { kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_hardware_when_present() {
        let c = select_encoder("auto", &["x264enc", "openh264enc", "vah264enc"]).unwrap();
        assert_eq!(c.element(), "vah264enc");
        let c = select_encoder("auto", &["x264enc", "v4l2h264enc", "nvh264enc"]).unwrap();
        assert_eq!(c.element(), "v4l2h264enc");
        assert!(c.kind.is_hardware());
    }

    #[test]
    fn auto_falls_back_to_x264_then_openh264() {
        assert_eq!(
            select_encoder("auto", &["openh264enc", "x264enc"])
                .unwrap()
                .element(),
            "x264enc"
        );
        assert_eq!(
            select_encoder("", &["openh264enc"]).unwrap().element(),
            "openh264enc"
        );
        let err = select_encoder("auto", &[]).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn explicit_missing_encoder_names_it_and_lists_alternatives() {
        let err = select_encoder("nvh264enc", &["x264enc", "openh264enc"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nvh264enc"), "{text}");
        assert!(text.contains("x264enc, openh264enc"), "{text}");
    }

    #[test]
    fn explicit_available_encoder_is_used_even_if_not_preferred() {
        let c = select_encoder("openh264enc", &["x264enc", "openh264enc"]).unwrap();
        assert_eq!(c.element(), "openh264enc");
    }

    #[test]
    fn unknown_element_is_rejected_with_known_list() {
        let err = select_encoder("avenc_h264", &["avenc_h264"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("avenc_h264") && text.contains("x264enc"),
            "{text}"
        );
    }

    #[test]
    fn properties_carry_units_each_element_expects() {
        let spec = EncoderSpec {
            name: "auto".into(),
            bitrate_kbps: 1500,
            keyframe_interval_s: 2,
        };
        let x = EncoderChoice {
            kind: EncoderKind::X264,
        }
        .properties(&spec, 30);
        assert!(x.contains(&("bitrate", "1500".into())));
        assert!(x.contains(&("key-int-max", "60".into())));
        assert!(x.contains(&("bframes", "0".into())));
        let o = EncoderChoice {
            kind: EncoderKind::OpenH264,
        }
        .properties(&spec, 30);
        assert!(o.contains(&("bitrate", "1500000".into())));
        assert!(o.contains(&("gop-size", "60".into())));
        let pi = EncoderChoice {
            kind: EncoderKind::V4l2,
        }
        .properties(&spec, 30);
        assert!(pi[0].1.contains("h264_i_frame_period=60"));
    }
}
