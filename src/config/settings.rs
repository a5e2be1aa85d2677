//! The settings themselves: one struct per section, the built-in defaults, and the single list
//! of keys ([`Settings::visit`]) that reading, printing and the documentation test all share.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::fields::{Field, config_enum};
use super::render::redact_url;

config_enum! {
    /// Where the video comes from (`source.kind`).
    pub enum SourceKind {
        /// GStreamer's test pattern; needs no camera.
        Test = "test",
        /// A local camera through Video4Linux2.
        V4l2 = "v4l2",
        /// A network camera's RTSP stream.
        Rtsp = "rtsp",
        /// A video file, played in a loop by default.
        File = "file",
    }
}

config_enum! {
    /// What a V4L2 camera is asked to deliver (`source.format`).
    pub enum InputFormat {
        /// Prefer H.264, then MJPEG, then raw, whichever the camera offers.
        Auto = "auto",
        Raw = "raw",
        Mjpeg = "mjpeg",
        H264 = "h264",
    }
}

config_enum! {
    /// How RTSP media travels (`source.transport`).
    pub enum RtspTransport {
        /// Interleaved in the RTSP TCP connection: survives NAT and loss.
        Tcp = "tcp",
        Udp = "udp",
    }
}

config_enum! {
    /// Where the sound comes from (`audio.source`).
    pub enum AudioSource {
        /// A test tone for the test pattern, the stream's own audio for RTSP cameras and
        /// files (when they have any), nothing for V4L2 cameras.
        Auto = "auto",
        /// No audio: viewers get video only.
        Off = "none",
        /// A generated tone; needs no microphone.
        Test = "test",
        /// A microphone through ALSA (`audio.device`, default the system default).
        Alsa = "alsa",
        /// A microphone through PulseAudio / PipeWire (`audio.device`).
        Pulse = "pulse",
        /// The RTSP camera's or the file's own audio track, re-encoded to Opus once.
        Camera = "camera",
    }
}

config_enum! {
    /// How viewers find the camera (`signaling.mode`).
    pub enum SignalingMode {
        /// WHEP on the built-in HTTP server.
        Local = "local",
        /// Master on an Amazon Kinesis Video Streams signaling channel.
        Kvs = "kvs",
    }
}

config_enum! {
    /// Where log records go (`log.format`).
    pub enum LogFormat {
        /// The journal when running under systemd, otherwise text on stderr.
        Auto = "auto",
        /// The systemd journal, with structured fields.
        Journald = "journald",
        /// Human-readable lines on stderr.
        Text = "text",
        /// One JSON object per line on stderr, for log shippers without a journal.
        Json = "json",
    }
}

/// The whole configuration. Field names match the keys in `camgate.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub source: SourceSettings,
    pub encoder: EncoderSettings,
    pub webrtc: WebRtcSettings,
    pub signaling: SignalingSettings,
    pub http: HttpSettings,
    pub audio: AudioSettings,
    pub kvs: KvsSettings,
    pub publish: PublishSettings,
    pub log: LogSettings,
    /// Where the values came from, for messages; not a setting.
    pub(crate) provenance: Provenance,
}

/// `[source]`: capture.
#[derive(Clone, PartialEq)]
pub struct SourceSettings {
    pub kind: SourceKind,
    pub device: PathBuf,
    pub format: InputFormat,
    /// May contain `user:password@`; print it only through [`redact_url`].
    pub url: Option<String>,
    pub username: Option<String>,
    /// Secret.
    pub password: Option<String>,
    pub transport: RtspTransport,
    pub latency_ms: u32,
    pub path: Option<PathBuf>,
    /// Key `source.loop` (`loop` is a Rust keyword).
    pub looping: bool,
    pub pattern: String,
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
    pub stall_timeout_s: u32,
}

/// `[encoder]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderSettings {
    /// `"auto"` or a GStreamer element name.
    pub name: String,
    pub bitrate_kbps: u32,
    pub keyframe_interval_s: u32,
}

/// `[webrtc]`: peer connections.
#[derive(Clone, Debug, PartialEq)]
pub struct WebRtcSettings {
    pub max_viewers: usize,
    pub stun_urls: Vec<String>,
    /// Empty means every non-loopback interface.
    pub host_addresses: Vec<IpAddr>,
    /// 0 and 0 mean ephemeral ports.
    pub udp_port_min: u16,
    pub udp_port_max: u16,
    pub nat_1to1_ips: Vec<IpAddr>,
    pub gather_timeout_ms: u32,
    pub viewer_queue_frames: usize,
    /// KiB of a passed-through camera's latest GOP kept for joining viewers; 0 = off.
    pub gop_cache_kb: u32,
    /// A GOP older than this (ms since its IDR) is not kept.
    pub gop_cache_max_age_ms: u32,
    /// Rate a joining viewer is sent the cached GOP at, kbit/s.
    pub gop_cache_pace_kbps: u32,
    /// Seconds an answered session may take to connect before it is dropped.
    pub connect_timeout_s: u32,
    /// Sessions connecting at once; past it the oldest connecting one is dropped.
    pub max_pending: usize,
    /// Remote ICE candidates one session takes (offer and trickle together).
    pub max_remote_candidates: usize,
}

/// `[audio]`: sound to viewers, and talkback from them.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioSettings {
    /// Where the sound comes from; `auto` follows `source.kind`.
    pub source: AudioSource,
    /// ALSA device (`hw:1,0`, `plughw:CARD=Mic`) or Pulse source name; `None` = system default.
    pub device: Option<String>,
    /// Opus bitrate; G.711 is fixed at 64 kbit/s.
    pub bitrate_kbps: u32,
    /// Play what viewers say (Echo Show microphone, the page's push-to-talk) on this device.
    pub talkback: bool,
    /// Where talkback is played: `default`, `alsa:<device>`, `pulse:<sink>` or `file:<path.wav>`.
    pub talkback_sink: String,
}

/// `[signaling]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalingSettings {
    pub mode: SignalingMode,
}

/// `[http]`. Its `Debug` masks the tokens.
#[derive(Clone, PartialEq)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Bearer tokens for WHEP, `/stats` and `/metrics`; empty = no token asked.
    pub tokens: Vec<String>,
    /// A file of more tokens, one per line; read again on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// A token that opens `/metrics` only (a Prometheus server).
    pub metrics_token: Option<String>,
    /// Serve without a token on a non-loopback address (refused at start otherwise).
    pub allow_anonymous: bool,
    /// PEM certificate chain and private key for HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Origins of other pages allowed to use WHEP (CORS); empty = same origin only.
    pub cors_origins: Vec<String>,
    pub header_timeout_s: u32,
    pub body_timeout_s: u32,
    pub max_connections: usize,
    /// WHEP offers per client IP address per second; 0 = no limit.
    pub offers_per_ip_per_s: u32,
}

/// `[publish]`: publishing once to an SFU over WHIP. Its `Debug` masks the token.
#[derive(Clone, PartialEq, Default)]
pub struct PublishSettings {
    /// Publish at all.
    pub enabled: bool,
    /// The WHIP endpoint, `http://` or `https://`. Some services put a secret in the path:
    /// print it only through `redact_url`-like host-only forms.
    pub whip_url: Option<String>,
    /// Secret: sent as `Authorization: Bearer`.
    pub bearer_token: Option<String>,
}

impl std::fmt::Debug for PublishSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishSettings")
            .field("enabled", &self.enabled)
            .field("whip_url", &self.whip_url.as_ref().map(|_| "(set)"))
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `[kvs]`: only used when `signaling.mode = "kvs"`.
#[derive(Clone, Debug, PartialEq)]
pub struct KvsSettings {
    pub region: Option<String>,
    pub channel_name: Option<String>,
    pub channel_arn: Option<String>,
    pub endpoint_url: Option<String>,
    pub create_channel: bool,
    /// WebSocket ping after this many idle seconds (the service cuts idle sockets at 10 min).
    pub ping_interval_s: u32,
    /// A Ping with nothing received for this many seconds means the WebSocket is dead.
    pub pong_timeout_s: u32,
    /// Deadline in seconds of each connection step (an API call with its credential fetch,
    /// or the WebSocket connect).
    pub step_timeout_s: u32,
    /// `/healthz` reports degraded once the master has been offline this many seconds.
    pub offline_degraded_after_s: u32,
    /// Give every session the channel region's KVS STUN server.
    pub region_stun: bool,
    pub iot: IotSettings,
}

impl Default for KvsSettings {
    fn default() -> Self {
        KvsSettings {
            region: None,
            channel_name: None,
            channel_arn: None,
            endpoint_url: None,
            create_channel: false,
            ping_interval_s: 25,
            pong_timeout_s: 20,
            step_timeout_s: 20,
            offline_degraded_after_s: 120,
            region_stun: true,
            iot: IotSettings::default(),
        }
    }
}

/// `[kvs.iot]`: credentials from the AWS IoT credentials provider (certificate + role alias).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct IotSettings {
    pub endpoint: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub role_alias: Option<String>,
    pub thing_name: Option<String>,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

/// Where the effective values came from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Provenance {
    pub(crate) file: Option<PathBuf>,
    /// Names of the `CAMGATE__*` variables that were applied.
    pub(crate) env_vars: Vec<String>,
    /// Key → the file or variable that set it.
    pub(crate) origins: BTreeMap<String, String>,
}

/// Two configurations are equal when their settings are, wherever the values came from: a
/// reload that moves a value from the file to the environment changes nothing.
impl PartialEq for Provenance {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            source: SourceSettings {
                kind: SourceKind::Test,
                device: PathBuf::from("/dev/video0"),
                format: InputFormat::Auto,
                url: None,
                username: None,
                password: None,
                transport: RtspTransport::Tcp,
                latency_ms: 200,
                path: None,
                looping: true,
                pattern: "smpte".to_string(),
                width: 1280,
                height: 720,
                framerate: 30,
                stall_timeout_s: 5,
            },
            encoder: EncoderSettings {
                name: "auto".to_string(),
                bitrate_kbps: 2000,
                keyframe_interval_s: 2,
            },
            webrtc: WebRtcSettings {
                max_viewers: 10,
                stun_urls: Vec::new(),
                host_addresses: Vec::new(),
                udp_port_min: 0,
                udp_port_max: 0,
                nat_1to1_ips: Vec::new(),
                gather_timeout_ms: 2000,
                viewer_queue_frames: 30,
                gop_cache_kb: 4096,
                gop_cache_max_age_ms: 10_000,
                gop_cache_pace_kbps: 8000,
                connect_timeout_s: 10,
                max_pending: 8,
                max_remote_candidates: 32,
            },
            audio: AudioSettings {
                source: AudioSource::Auto,
                device: None,
                bitrate_kbps: 32,
                talkback: true,
                talkback_sink: "default".to_string(),
            },
            signaling: SignalingSettings {
                mode: SignalingMode::Local,
            },
            http: HttpSettings {
                listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
                tokens: Vec::new(),
                tokens_file: None,
                metrics_token: None,
                allow_anonymous: false,
                tls_cert: None,
                tls_key: None,
                cors_origins: Vec::new(),
                header_timeout_s: 10,
                body_timeout_s: 10,
                max_connections: 64,
                offers_per_ip_per_s: 2,
            },
            kvs: KvsSettings::default(),
            publish: PublishSettings::default(),
            log: LogSettings {
                level: "info".to_string(),
                format: LogFormat::Auto,
            },
            provenance: Provenance::default(),
        }
    }
}

/// Something that goes over every setting with its key.
pub(crate) trait Visitor {
    fn field<T: Field>(&mut self, key: &'static str, value: &mut T);
}

impl Settings {
    /// Every key, in the order of the shipped file. Reading, printing and the check that the
    /// shipped file documents every key all go through this one list, so they cannot drift.
    pub(crate) fn visit(&mut self, v: &mut impl Visitor) {
        let s = &mut self.source;
        v.field("source.kind", &mut s.kind);
        v.field("source.device", &mut s.device);
        v.field("source.format", &mut s.format);
        v.field("source.url", &mut s.url);
        v.field("source.username", &mut s.username);
        v.field("source.password", &mut s.password);
        v.field("source.transport", &mut s.transport);
        v.field("source.latency_ms", &mut s.latency_ms);
        v.field("source.path", &mut s.path);
        v.field("source.loop", &mut s.looping);
        v.field("source.pattern", &mut s.pattern);
        v.field("source.width", &mut s.width);
        v.field("source.height", &mut s.height);
        v.field("source.framerate", &mut s.framerate);
        v.field("source.stall_timeout_s", &mut s.stall_timeout_s);

        let e = &mut self.encoder;
        v.field("encoder.name", &mut e.name);
        v.field("encoder.bitrate_kbps", &mut e.bitrate_kbps);
        v.field("encoder.keyframe_interval_s", &mut e.keyframe_interval_s);

        let w = &mut self.webrtc;
        v.field("webrtc.max_viewers", &mut w.max_viewers);
        v.field("webrtc.stun_urls", &mut w.stun_urls);
        v.field("webrtc.host_addresses", &mut w.host_addresses);
        v.field("webrtc.udp_port_min", &mut w.udp_port_min);
        v.field("webrtc.udp_port_max", &mut w.udp_port_max);
        v.field("webrtc.nat_1to1_ips", &mut w.nat_1to1_ips);
        v.field("webrtc.gather_timeout_ms", &mut w.gather_timeout_ms);
        v.field("webrtc.viewer_queue_frames", &mut w.viewer_queue_frames);
        v.field("webrtc.gop_cache_kb", &mut w.gop_cache_kb);
        v.field("webrtc.gop_cache_max_age_ms", &mut w.gop_cache_max_age_ms);
        v.field("webrtc.gop_cache_pace_kbps", &mut w.gop_cache_pace_kbps);
        v.field("webrtc.connect_timeout_s", &mut w.connect_timeout_s);
        v.field("webrtc.max_pending", &mut w.max_pending);
        v.field("webrtc.max_remote_candidates", &mut w.max_remote_candidates);

        let a = &mut self.audio;
        v.field("audio.source", &mut a.source);
        v.field("audio.device", &mut a.device);
        v.field("audio.bitrate_kbps", &mut a.bitrate_kbps);
        v.field("audio.talkback", &mut a.talkback);
        v.field("audio.talkback_sink", &mut a.talkback_sink);

        v.field("signaling.mode", &mut self.signaling.mode);

        let h = &mut self.http;
        v.field("http.listen", &mut h.listen);
        v.field("http.tokens", &mut h.tokens);
        v.field("http.tokens_file", &mut h.tokens_file);
        v.field("http.metrics_token", &mut h.metrics_token);
        v.field("http.allow_anonymous", &mut h.allow_anonymous);
        v.field("http.tls_cert", &mut h.tls_cert);
        v.field("http.tls_key", &mut h.tls_key);
        v.field("http.cors_origins", &mut h.cors_origins);
        v.field("http.header_timeout_s", &mut h.header_timeout_s);
        v.field("http.body_timeout_s", &mut h.body_timeout_s);
        v.field("http.max_connections", &mut h.max_connections);
        v.field("http.offers_per_ip_per_s", &mut h.offers_per_ip_per_s);

        let k = &mut self.kvs;
        v.field("kvs.region", &mut k.region);
        v.field("kvs.channel_name", &mut k.channel_name);
        v.field("kvs.channel_arn", &mut k.channel_arn);
        v.field("kvs.endpoint_url", &mut k.endpoint_url);
        v.field("kvs.create_channel", &mut k.create_channel);
        v.field("kvs.ping_interval_s", &mut k.ping_interval_s);
        v.field("kvs.pong_timeout_s", &mut k.pong_timeout_s);
        v.field("kvs.step_timeout_s", &mut k.step_timeout_s);
        v.field(
            "kvs.offline_degraded_after_s",
            &mut k.offline_degraded_after_s,
        );
        v.field("kvs.region_stun", &mut k.region_stun);
        let i = &mut k.iot;
        v.field("kvs.iot.endpoint", &mut i.endpoint);
        v.field("kvs.iot.cert", &mut i.cert);
        v.field("kvs.iot.key", &mut i.key);
        v.field("kvs.iot.ca", &mut i.ca);
        v.field("kvs.iot.role_alias", &mut i.role_alias);
        v.field("kvs.iot.thing_name", &mut i.thing_name);

        let p = &mut self.publish;
        v.field("publish.enabled", &mut p.enabled);
        v.field("publish.whip_url", &mut p.whip_url);
        v.field("publish.bearer_token", &mut p.bearer_token);

        v.field("log.level", &mut self.log.level);
        v.field("log.format", &mut self.log.format);
    }

    /// Every key, dotted, in file order.
    pub fn keys() -> Vec<&'static str> {
        struct Keys(Vec<&'static str>);
        impl Visitor for Keys {
            fn field<T: Field>(&mut self, key: &'static str, _: &mut T) {
                self.0.push(key);
            }
        }
        let mut keys = Keys(Vec::new());
        Settings::default().visit(&mut keys);
        keys.0
    }

    /// The configuration file that was read, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.provenance.file.as_deref()
    }

    /// Where the effective configuration came from, for logs and `check-config`, e.g.
    /// `built-in defaults + /etc/camgate/camgate.toml + environment (CAMGATE__HTTP__LISTEN)`.
    pub fn source_description(&self) -> String {
        let mut out = String::from("built-in defaults");
        if let Some(file) = &self.provenance.file {
            out.push_str(" + ");
            out.push_str(&file.display().to_string());
        }
        if !self.provenance.env_vars.is_empty() {
            out.push_str(&format!(
                " + environment ({})",
                self.provenance.env_vars.join(", ")
            ));
        }
        out
    }

    /// The file or environment variable that set `key`, if it was not left at its default.
    pub fn origin_of(&self, key: &str) -> Option<&str> {
        self.provenance.origins.get(key).map(String::as_str)
    }
}

impl KvsSettings {
    /// The region to sign for: `kvs.region`, else the region field of `kvs.channel_arn`.
    pub fn effective_region(&self) -> Option<&str> {
        self.region
            .as_deref()
            .or_else(|| self.channel_arn.as_deref().and_then(arn_region))
    }
}

/// The region field (the fourth) of an ARN, if present and non-empty.
pub(crate) fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// Hand-written so that a stray `{:?}` in a log line cannot leak the RTSP password.
impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("listen", &self.listen)
            .field("tokens", &format_args!("[{} masked]", self.tokens.len()))
            .field("tokens_file", &self.tokens_file)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("allow_anonymous", &self.allow_anonymous)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("cors_origins", &self.cors_origins)
            .field("header_timeout_s", &self.header_timeout_s)
            .field("body_timeout_s", &self.body_timeout_s)
            .field("max_connections", &self.max_connections)
            .field("offers_per_ip_per_s", &self.offers_per_ip_per_s)
            .finish()
    }
}

impl std::fmt::Debug for SourceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSettings")
            .field("kind", &self.kind)
            .field("device", &self.device)
            .field("format", &self.format)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("transport", &self.transport)
            .field("latency_ms", &self.latency_ms)
            .field("path", &self.path)
            .field("looping", &self.looping)
            .field("pattern", &self.pattern)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("framerate", &self.framerate)
            .field("stall_timeout_s", &self.stall_timeout_s)
            .finish()
    }
}
