//! Semantic checks: ranges, required keys per mode, formats, and keys that must agree.
//!
//! Everything that can be known from the configuration alone is checked here, so that a typo
//! fails `camgate check-config` instead of the first viewer's session. What needs the running
//! system (is the encoder installed, is the camera plugged in) is checked at startup.

use std::fmt::Display;
use std::net::IpAddr;
use std::path::Path;

use super::error::{ConfigError, Problem};
use super::settings::{Settings, SignalingMode, SourceKind, arn_region};
use super::sources::with_origin;

/// `videotestsrc` pattern nicks (GStreamer 1.22).
pub const TEST_PATTERNS: &[&str] = &[
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
    "smpte-rp-219",
];

const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

struct Checker<'a> {
    s: &'a Settings,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn push(&mut self, key: &str, message: String) {
        let origin = self.s.origin_of(key);
        self.problems
            .push(Problem::new(key, with_origin(message, origin)));
    }

    fn range<T: PartialOrd + Display>(&mut self, key: &str, value: T, lo: T, hi: T) {
        if value < lo || value > hi {
            self.push(
                key,
                format!("{key}: {value} is out of range; allowed {lo} to {hi}"),
            );
        }
    }

    fn required(&mut self, key: &str, present: bool, when: &str) {
        if !present {
            self.push(key, format!("{key} is required when {when}"));
        }
    }

    fn file_exists(&mut self, key: &str, path: &Path) {
        self.file_exists_or(key, path, "a regular file");
    }

    fn file_exists_or(&mut self, key: &str, path: &Path, what: &str) {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => self.push(key, format!("{key}: {} is not {what}", path.display())),
            Err(e) => self.push(key, format!("{key}: cannot open {}: {e}", path.display())),
        }
    }
}

impl Settings {
    /// Checks every setting and reports all problems together, one per line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checker {
            s: self,
            problems: Vec::new(),
        };
        check_source(&mut c);
        check_encoder(&mut c);
        check_webrtc(&mut c);
        check_audio(&mut c);
        check_kvs(&mut c);
        check_publish(&mut c);
        check_http(&mut c);
        check_log(&mut c);
        if c.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                problems: c.problems,
            })
        }
    }
}

fn check_source(c: &mut Checker<'_>) {
    let s = &c.s.source;
    c.range("source.width", s.width, 16, 7680);
    c.range("source.height", s.height, 16, 4320);
    // x264 and most hardware encoders refuse odd sizes with 4:2:0 chroma.
    for (key, v) in [("source.width", s.width), ("source.height", s.height)] {
        if v % 2 == 1 && (16..=7680).contains(&v) {
            c.push(
                key,
                format!("{key}: {v} must be even (H.264 4:2:0 needs even dimensions)"),
            );
        }
    }
    c.range("source.framerate", s.framerate, 1, 120);
    c.range("source.latency_ms", s.latency_ms, 0, 10_000);
    c.range("source.stall_timeout_s", s.stall_timeout_s, 1, 3600);

    if s.device.as_os_str().is_empty() {
        c.push(
            "source.device",
            "source.device: must not be empty; expected a device path such as /dev/video0".into(),
        );
    }
    if !TEST_PATTERNS.contains(&s.pattern.as_str()) {
        c.push(
            "source.pattern",
            format!(
                "source.pattern: unknown value {:?}; expected one of {}",
                s.pattern,
                TEST_PATTERNS.join(", ")
            ),
        );
    }

    let url_user = match &s.url {
        None => None,
        Some(raw) => match url::Url::parse(raw) {
            Err(e) => {
                let shown = super::render::redact_url(raw);
                c.push("source.url", format!("source.url: {shown:?} is not a valid URL ({e}); expected rtsp://host[:port]/path"));
                None
            }
            Ok(u) => {
                if !matches!(u.scheme(), "rtsp" | "rtsps" | "rtspt" | "rtspu") {
                    c.push(
                        "source.url",
                        format!(
                            "source.url: unsupported scheme {:?}; expected rtsp, rtsps, rtspt or rtspu",
                            u.scheme()
                        ),
                    );
                }
                if u.host_str().is_none_or(str::is_empty) {
                    c.push(
                        "source.url",
                        "source.url: has no host; expected rtsp://host[:port]/path".into(),
                    );
                }
                Some(!u.username().is_empty())
            }
        },
    };
    if url_user == Some(true) && (s.username.is_some() || s.password.is_some()) {
        c.push(
            "source.username",
            "source.username/source.password are set but source.url already contains credentials; keep one of the two".into(),
        );
    }
    if s.password.is_some() && s.username.is_none() && url_user != Some(true) {
        c.push(
            "source.username",
            "source.username is required when source.password is set".into(),
        );
    }

    match s.kind {
        SourceKind::Rtsp => c.required("source.url", s.url.is_some(), "source.kind = \"rtsp\""),
        SourceKind::File => match &s.path {
            None => c.required("source.path", false, "source.kind = \"file\""),
            // A named pipe is a live stream (e.g. `libcamera-vid -o <fifo>` or ffmpeg writing
            // MPEG-TS); it cannot loop.
            Some(p) if is_fifo(p) => {}
            Some(p) => c.file_exists_or("source.path", p, "a regular file or named pipe"),
        },
        SourceKind::Test | SourceKind::V4l2 => {}
    }
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// A GStreamer element factory name: letters, digits, `_` and `-`. This keeps pipeline syntax
/// (`!`, spaces, `=`) out of a value that is put into a pipeline.
fn plausible_element(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_encoder(c: &mut Checker<'_>) {
    let e = &c.s.encoder;
    if e.name != "auto" && !plausible_element(&e.name) {
        c.push(
            "encoder.name",
            format!(
                "encoder.name: {:?} is not a GStreamer element name; expected \"auto\" or an element such as x264enc, v4l2h264enc, vah264enc",
                e.name
            ),
        );
    }
    c.range("encoder.bitrate_kbps", e.bitrate_kbps, 100, 50_000);
    c.range("encoder.keyframe_interval_s", e.keyframe_interval_s, 1, 10);
}

fn check_audio(c: &mut Checker<'_>) {
    use super::settings::AudioSource;
    let a = &c.s.audio;
    c.range("audio.bitrate_kbps", a.bitrate_kbps, 6, 510);
    if let Some(d) = &a.device
        && (d.trim().is_empty() || d.chars().any(char::is_control))
    {
        c.push(
            "audio.device",
            format!("audio.device: {d:?} is not a device name; expected e.g. \"hw:1,0\", \"plughw:CARD=Mic\" or a Pulse source name (or leave it unset for the default)"),
        );
    }
    if a.device.is_some() && !matches!(a.source, AudioSource::Alsa | AudioSource::Pulse) {
        c.push(
            "audio.device",
            format!(
                "audio.device is only used with audio.source = \"alsa\" or \"pulse\" (audio.source is {:?})",
                a.source.as_str()
            ),
        );
    }
    if a.source == AudioSource::Camera
        && !matches!(c.s.source.kind, SourceKind::Rtsp | SourceKind::File)
    {
        c.push(
            "audio.source",
            format!(
                "audio.source = \"camera\" needs source.kind = \"rtsp\" or \"file\" (source.kind is {:?}); use \"alsa\" or \"pulse\" for a microphone",
                c.s.source.kind.as_str()
            ),
        );
    }
    if let Err(e) = a
        .talkback_sink
        .parse::<crate::media::talkback::TalkbackSink>()
    {
        c.push("audio.talkback_sink", format!("audio.talkback_sink: {e}"));
    }
}

fn check_ip_list(c: &mut Checker<'_>, key: &str, ips: &[IpAddr]) {
    for ip in ips {
        if ip.is_unspecified() || ip.is_multicast() {
            c.push(
                key,
                format!("{key}: {ip} is not a unicast interface address; list specific addresses (or none)"),
            );
        }
    }
}

fn check_webrtc(c: &mut Checker<'_>) {
    let w = &c.s.webrtc;
    c.range("webrtc.max_viewers", w.max_viewers, 1, 100);
    c.range("webrtc.connect_timeout_s", w.connect_timeout_s, 2, 120);
    c.range("webrtc.max_pending", w.max_pending, 1, 100);
    c.range(
        "webrtc.max_remote_candidates",
        w.max_remote_candidates,
        4,
        256,
    );
    for url in &w.stun_urls {
        let host = url
            .strip_prefix("stun:")
            .or_else(|| url.strip_prefix("stuns:"));
        match host {
            Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => {}
            _ => c.push(
                "webrtc.stun_urls",
                format!("webrtc.stun_urls: {url:?} is not a STUN URL; expected stun:host[:port] or stuns:host[:port]"),
            ),
        }
    }
    check_ip_list(c, "webrtc.host_addresses", &w.host_addresses);
    check_ip_list(c, "webrtc.nat_1to1_ips", &w.nat_1to1_ips);

    let (min, max) = (w.udp_port_min, w.udp_port_max);
    if min != 0 || max != 0 {
        for (key, port) in [("webrtc.udp_port_min", min), ("webrtc.udp_port_max", max)] {
            if port == 0 {
                c.push(key, format!("{key} must be set (1024 to 65535) when the other end of the port range is set"));
            } else {
                c.range(key, port, 1024, 65535);
            }
        }
        if min > max && max != 0 {
            c.push(
                "webrtc.udp_port_min",
                format!("webrtc.udp_port_min ({min}) is greater than webrtc.udp_port_max ({max})"),
            );
        }
    }
    c.range("webrtc.gather_timeout_ms", w.gather_timeout_ms, 100, 10_000);
    c.range("webrtc.viewer_queue_frames", w.viewer_queue_frames, 1, 600);
    if w.gop_cache_kb != 0 {
        c.range("webrtc.gop_cache_kb", w.gop_cache_kb, 64, 65_536);
    }
    c.range(
        "webrtc.gop_cache_max_age_ms",
        w.gop_cache_max_age_ms,
        500,
        60_000,
    );
    c.range(
        "webrtc.gop_cache_pace_kbps",
        w.gop_cache_pace_kbps,
        500,
        1_000_000,
    );
}

/// `[a-zA-Z0-9_.-]{1,256}`: what KVS accepts as a channel name.
fn valid_channel_name(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `arn:<partition>:kinesisvideo:<region>:<account>:channel/<name>/<creation ms>`, max 1024:
/// the rule the KVS module parses `kvs.channel_arn` with when it sets up the control plane.
fn valid_channel_arn(arn: &str) -> bool {
    crate::signaling::kvs::ChannelArn::parse(arn).is_ok()
}

fn valid_region(region: &str) -> bool {
    (1..=32).contains(&region.len())
        && region.contains('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_publish(c: &mut Checker<'_>) {
    let p = &c.s.publish;
    if p.enabled {
        c.required(
            "publish.whip_url",
            p.whip_url.is_some(),
            "publish.enabled = true",
        );
    }
    if let Some(u) = &p.whip_url {
        // The URL may carry a secret (Cloudflare puts the stream key in its path): never echo it.
        match url::Url::parse(u) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && !url.username().is_empty()
                    && p.bearer_token.is_some() =>
            {
                c.push(
                    "publish.bearer_token",
                    "publish.bearer_token: publish.whip_url already carries credentials (user:password@, sent as HTTP Basic); keep one of the two".into(),
                );
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            Ok(_) => c.push(
                "publish.whip_url",
                "publish.whip_url: expected an http:// or https:// URL with a host".into(),
            ),
            Err(e) => c.push(
                "publish.whip_url",
                format!("publish.whip_url: not a URL ({e}); expected e.g. https://sfu.example.com/whip/endpoint/cam1"),
            ),
        }
    }
    if let Some(t) = &p.bearer_token
        && (t.is_empty() || t.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
    {
        c.push(
            "publish.bearer_token",
            "publish.bearer_token: must be non-empty without spaces or control characters (leave it unset to send no token)".into(),
        );
    }
}

fn check_kvs(c: &mut Checker<'_>) {
    let k = &c.s.kvs;
    let kvs_mode = c.s.signaling.mode == SignalingMode::Kvs;
    const WHEN: &str = "signaling.mode = \"kvs\"";

    if let Some(r) = &k.region
        && !valid_region(r)
    {
        c.push(
            "kvs.region",
            format!("kvs.region: {r:?} is not an AWS region; expected e.g. us-west-2"),
        );
    }
    if let Some(n) = &k.channel_name
        && !valid_channel_name(n)
    {
        c.push(
            "kvs.channel_name",
            format!("kvs.channel_name: {n:?} is not a channel name; expected 1 to 256 of a-z A-Z 0-9 _ . -"),
        );
    }
    if let Some(a) = &k.channel_arn {
        if !valid_channel_arn(a) {
            c.push(
                "kvs.channel_arn",
                format!("kvs.channel_arn: {a:?} is not a signaling channel ARN; expected arn:aws:kinesisvideo:<region>:<account>:channel/<name>/<number>"),
            );
        } else if let (Some(r), Some(ar)) = (&k.region, arn_region(a))
            && r != ar
        {
            c.push(
                "kvs.region",
                format!("kvs.region ({r}) differs from the region in kvs.channel_arn ({ar})"),
            );
        }
    }
    if let Some(u) = &k.endpoint_url {
        match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {}
            _ => c.push(
                "kvs.endpoint_url",
                format!("kvs.endpoint_url: {u:?} is not an http:// or https:// URL"),
            ),
        }
    }

    if kvs_mode {
        match (&k.channel_name, &k.channel_arn) {
            (None, None) => c.push(
                "kvs.channel_name",
                format!("kvs.channel_name or kvs.channel_arn is required when {WHEN}"),
            ),
            (Some(_), Some(_)) => c.push(
                "kvs.channel_name",
                "kvs.channel_name and kvs.channel_arn are both set; set exactly one".into(),
            ),
            _ => {}
        }
        if k.effective_region().is_none() {
            c.push(
                "kvs.region",
                format!("kvs.region is required when {WHEN} (unless kvs.channel_arn gives it)"),
            );
        }
        c.range("kvs.ping_interval_s", k.ping_interval_s, 1, 300);
        c.range("kvs.pong_timeout_s", k.pong_timeout_s, 1, 300);
        c.range("kvs.step_timeout_s", k.step_timeout_s, 1, 300);
        c.range(
            "kvs.offline_degraded_after_s",
            k.offline_degraded_after_s,
            1,
            86_400,
        );
        if k.create_channel && k.channel_name.is_none() {
            c.push(
                "kvs.create_channel",
                "kvs.create_channel = true needs kvs.channel_name (a channel cannot be created from an ARN)".into(),
            );
        }
    }

    check_iot(c, kvs_mode);
}

fn check_iot(c: &mut Checker<'_>, kvs_mode: bool) {
    let i = &c.s.kvs.iot;
    let required = [
        ("kvs.iot.endpoint", i.endpoint.is_some()),
        ("kvs.iot.cert", i.cert.is_some()),
        ("kvs.iot.key", i.key.is_some()),
        ("kvs.iot.role_alias", i.role_alias.is_some()),
        ("kvs.iot.thing_name", i.thing_name.is_some()),
    ];
    let any = required.iter().any(|&(_, set)| set) || i.ca.is_some();
    if !any {
        return;
    }
    let set: Vec<&str> = required
        .iter()
        .chain([("kvs.iot.ca", i.ca.is_some())].iter())
        .filter(|&&(_, s)| s)
        .map(|&(k, _)| k)
        .collect();
    for (key, present) in required {
        if !present {
            c.push(
                key,
                format!(
                    "{key} is required when other [kvs.iot] keys are set (set: {})",
                    set.join(", ")
                ),
            );
        }
    }
    if let Some(e) = &i.endpoint {
        let host = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"))
            .unwrap_or(e)
            .trim_end_matches('/');
        if host.is_empty() || host.contains(|ch: char| ch.is_whitespace() || ch == '/') {
            c.push(
                "kvs.iot.endpoint",
                format!("kvs.iot.endpoint: {e:?} is not a host name; expected e.g. c1abc2def3.credentials.iot.us-west-2.amazonaws.com"),
            );
        }
    }
    // Temporary credentials come back over this connection: TLS only, unless the control
    // plane too is a plain http:// emulator (signaling::kvs::KvsOptions::allows_plaintext).
    let emulator =
        c.s.kvs
            .endpoint_url
            .as_deref()
            .is_some_and(|u| u.len() >= 7 && u[..7].eq_ignore_ascii_case("http://"));
    if let Some(e) = &i.endpoint
        && e.len() >= 7
        && e[..7].eq_ignore_ascii_case("http://")
        && !emulator
    {
        c.push(
            "kvs.iot.endpoint",
            format!(
                "kvs.iot.endpoint: {e:?} is plain http://; credentials are fetched over https:// only (plain http only when kvs.endpoint_url is an http:// URL too)"
            ),
        );
    }
    if let Some(n) = &i.role_alias
        && (n.is_empty() || n.contains(|ch: char| ch.is_whitespace() || ch == '/'))
    {
        c.push(
            "kvs.iot.role_alias",
            format!("kvs.iot.role_alias: {n:?} is not a role alias name"),
        );
    }
    // The files are only opened when they will be used.
    if kvs_mode {
        let files = [
            ("kvs.iot.cert", i.cert.clone()),
            ("kvs.iot.key", i.key.clone()),
            ("kvs.iot.ca", i.ca.clone()),
        ];
        for (key, path) in files {
            if let Some(p) = path {
                c.file_exists(key, &p);
            }
        }
    }
}

fn check_log(c: &mut Checker<'_>) {
    if let Err(msg) = check_log_level(&c.s.log.level) {
        c.push("log.level", format!("log.level: {msg}"));
    }
}

/// Checks an `EnvFilter` directive. A bare word that is not a level is refused: `EnvFilter`
/// would take `inf` as "everything from target inf" and silently log nothing else.
pub(crate) fn check_log_level(directive: &str) -> Result<(), String> {
    if directive.trim().is_empty() {
        return Err(format!(
            "must not be empty; expected a level ({}) or target=level directives",
            LOG_LEVELS.join(", ")
        ));
    }
    for part in directive
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if !part.contains(['=', '[']) && !LOG_LEVELS.contains(&part.to_ascii_lowercase().as_str()) {
            let place = if part == directive.trim() {
                String::new()
            } else {
                format!(" (in {directive:?})")
            };
            return Err(format!(
                "{part:?}{place} is not a level; expected one of {} or target=level (e.g. camgate=debug,webrtc=warn)",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(directive)
        .map(|_| ())
        .map_err(|e| format!("{directive:?} is not a valid filter: {e}"))
}

fn check_http(c: &mut Checker<'_>) {
    use crate::http::auth::token_problem;
    let h = &c.s.http;
    c.range("http.header_timeout_s", h.header_timeout_s, 1, 300);
    c.range("http.body_timeout_s", h.body_timeout_s, 1, 300);
    c.range("http.max_connections", h.max_connections, 4, 10_000);
    c.range("http.offers_per_ip_per_s", h.offers_per_ip_per_s, 0, 1000);
    for (i, t) in h.tokens.iter().enumerate() {
        if let Some(p) = token_problem(t) {
            c.push("http.tokens", format!("http.tokens[{i}]: {p}"));
        }
    }
    if let Some(t) = &h.metrics_token
        && let Some(p) = token_problem(t)
    {
        c.push("http.metrics_token", format!("http.metrics_token: {p}"));
    }
    if let Some(f) = &h.tokens_file {
        c.file_exists("http.tokens_file", f);
    }
    match (&h.tls_cert, &h.tls_key) {
        (Some(cert), Some(key)) => {
            c.file_exists("http.tls_cert", cert);
            c.file_exists("http.tls_key", key);
        }
        (Some(_), None) => c.push(
            "http.tls_key",
            "http.tls_key is required when http.tls_cert is set".into(),
        ),
        (None, Some(_)) => c.push(
            "http.tls_cert",
            "http.tls_cert is required when http.tls_key is set".into(),
        ),
        (None, None) => {}
    }
    for o in &h.cors_origins {
        if o != "*" && !is_origin(o) {
            c.push(
                "http.cors_origins",
                format!("http.cors_origins: {o:?} is not an origin; expected scheme://host[:port] with no path, e.g. \"https://dashboard.example:8123\", or \"*\""),
            );
        }
    }
    let has_tokens = !h.tokens.is_empty() || h.tokens_file.is_some();
    if !h.listen.ip().is_loopback() && !has_tokens && !h.allow_anonymous {
        c.push(
            "http.tokens",
            format!(
                "http.tokens: http.listen = \"{}\" reaches beyond this machine, so viewers need a token: \
                 set http.tokens (e.g. from `openssl rand -hex 16`) or http.tokens_file; \
                 or set http.allow_anonymous = true to let anyone who can reach the port watch",
                h.listen
            ),
        );
    }
}

/// `scheme://host[:port]` exactly, as browsers send in `Origin`.
fn is_origin(o: &str) -> bool {
    match url::Url::parse(o) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && !o.ends_with('/')
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_pattern_matches_the_reference() {
        assert!(valid_channel_arn(
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/my-cam_1.x/1700000000000"
        ));
        assert!(!valid_channel_arn(
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam/1700000000000"
        ));
        assert!(!valid_channel_arn(
            "arn:aws:kinesisvideo:us-west-2:acct:channel/cam/1"
        ));
        assert!(!valid_channel_arn("cam"));
    }

    #[test]
    fn element_names_exclude_pipeline_syntax() {
        assert!(plausible_element("x264enc"));
        assert!(plausible_element("avenc_h264_omx"));
        assert!(!plausible_element("x264enc ! fakesink"));
        assert!(!plausible_element(""));
    }

    #[test]
    fn log_levels_refuse_bare_typos() {
        assert!(check_log_level("info").is_ok());
        assert!(check_log_level("camgate=debug,webrtc=warn,info").is_ok());
        let err = check_log_level("inof").unwrap_err();
        assert!(err.contains("\"inof\""), "{err}");
        assert!(check_log_level("camgate=loud").is_err());
    }
}
