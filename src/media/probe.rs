//! What this machine offers for capture, for `camgate probe` and for support requests.

use std::fmt;

use gstreamer as gst;

use crate::media::capture::v4l2_formats;
use crate::media::encoder::{PREFERENCE, installed_encoders, select_encoder};
use crate::media::error::debian_package;

/// Elements camgate's pipelines use besides the encoders.
const ELEMENTS: [&str; 13] = [
    "videotestsrc",
    "clockoverlay",
    "v4l2src",
    "jpegdec",
    "rtspsrc",
    "rtph264depay",
    "h264parse",
    "filesrc",
    "decodebin",
    "videoconvert",
    "videoscale",
    "videorate",
    "appsink",
];

#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub gstreamer_version: String,
    /// Every H.264 encoder camgate can drive, best first, and whether it is installed.
    pub encoders: Vec<EncoderProbe>,
    /// What `encoder = "auto"` would pick, or why nothing can be picked.
    pub auto_encoder: Result<String, String>,
    pub elements: Vec<ElementProbe>,
    pub v4l2_devices: Vec<DeviceProbe>,
}

#[derive(Debug, Clone)]
pub struct EncoderProbe {
    pub element: String,
    pub hardware: bool,
    pub available: bool,
}

#[derive(Debug, Clone)]
pub struct ElementProbe {
    pub element: String,
    pub available: bool,
    pub package: &'static str,
}

#[derive(Debug, Clone)]
pub struct DeviceProbe {
    pub path: String,
    /// Media types offered (video/x-raw, image/jpeg, video/x-h264), or why it can't be opened.
    pub formats: Result<Vec<String>, String>,
}

/// Looks at the GStreamer registry and /dev/video*. Hardware encoders only register when
/// their device exists, so this reflects the machine, not just installed packages.
pub fn probe() -> ProbeReport {
    if let Err(e) = gst::init() {
        return ProbeReport {
            gstreamer_version: format!("unavailable: {e}"),
            encoders: Vec::new(),
            auto_encoder: Err(e.to_string()),
            elements: Vec::new(),
            v4l2_devices: Vec::new(),
        };
    }
    let available = |name: &str| gst::ElementFactory::find(name).is_some();
    let encoders = PREFERENCE
        .iter()
        .map(|k| EncoderProbe {
            element: k.element().to_string(),
            hardware: k.is_hardware(),
            available: available(k.element()),
        })
        .collect();
    let elements = ELEMENTS
        .iter()
        .map(|e| ElementProbe {
            element: e.to_string(),
            available: available(e),
            package: debian_package(e),
        })
        .collect();
    let mut paths: Vec<String> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path().to_string_lossy().into_owned())
                .filter(|p| {
                    p.strip_prefix("/dev/video")
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let v4l2_devices = paths
        .into_iter()
        .map(|path| DeviceProbe {
            formats: v4l2_formats(&path).map_err(|e| e.to_string()),
            path,
        })
        .collect();
    ProbeReport {
        gstreamer_version: gst::version_string().to_string(),
        encoders,
        auto_encoder: select_encoder("auto", &installed_encoders())
            .map(|c| c.element().to_string())
            .map_err(|e| e.to_string()),
        elements,
        v4l2_devices,
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "GStreamer: {}", self.gstreamer_version)?;
        writeln!(f, "H.264 encoders (preference order):")?;
        for e in &self.encoders {
            writeln!(
                f,
                "  {:<14} {:<8} {}",
                e.element,
                if e.hardware { "hardware" } else { "software" },
                if e.available { "available" } else { "-" }
            )?;
        }
        match &self.auto_encoder {
            Ok(name) => writeln!(f, "encoder = \"auto\" selects: {name}")?,
            Err(e) => writeln!(f, "encoder = \"auto\": {e}")?,
        }
        writeln!(f, "Elements:")?;
        for e in &self.elements {
            if e.available {
                writeln!(f, "  {:<14} ok", e.element)?;
            } else {
                writeln!(f, "  {:<14} MISSING (install {})", e.element, e.package)?;
            }
        }
        writeln!(f, "V4L2 devices:")?;
        if self.v4l2_devices.is_empty() {
            writeln!(f, "  none")?;
        }
        for d in &self.v4l2_devices {
            match &d.formats {
                Ok(formats) => writeln!(f, "  {:<14} {}", d.path, formats.join(", "))?,
                Err(e) => writeln!(f, "  {:<14} {e}", d.path)?,
            }
        }
        Ok(())
    }
}
