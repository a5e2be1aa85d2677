//! Logging: `tracing` events (and the `log` records of webrtc/rtc) to the systemd journal or
//! to stderr.
//!
//! Under systemd, stderr already reaches the journal, but as plain lines; the journald layer
//! keeps levels and fields searchable (`journalctl -u camgate -p warning`). Elsewhere the
//! journal may not exist, so `auto` falls back to text rather than failing.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_log::AsLog;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use crate::config::LogFormat;

/// Setting up logging failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` (or `RUST_LOG`, named in `source_name`) is not a valid filter.
    #[error("{source_name}: invalid log filter {directive:?}: {reason}")]
    Filter {
        source_name: &'static str,
        directive: String,
        reason: String,
    },
    /// `log.format = "journald"` but the journal socket cannot be used.
    #[error("log.format = \"journald\" but the systemd journal is unavailable: {0}")]
    Journald(#[source] std::io::Error),
    /// A global subscriber or `log` logger was already installed.
    #[error("logging is already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Where the records will go, decided from the format and the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Journald,
    Stderr,
}

/// `Auto` picks the journal when systemd started us (it sets `JOURNAL_STREAM` for services
/// whose output it captures).
fn wanted_sink(format: LogFormat, journal_stream: bool) -> Sink {
    match format {
        LogFormat::Journald => Sink::Journald,
        LogFormat::Auto if journal_stream => Sink::Journald,
        LogFormat::Auto | LogFormat::Text | LogFormat::Json => Sink::Stderr,
    }
}

/// Log targets that print credentials at their most verbose levels, with the level they are
/// capped at whatever the filter asks (tests/logs.rs greps a `trace` run for every secret):
/// * `tungstenite` (the whole crate, `tokio_tungstenite` too): `trace` prints the WebSocket
///   handshake request, whose URL is the presigned KVS URL (signature, credential scope,
///   session token);
/// * `aws_sigv4`: `trace` prints the canonical request, whose query is the presigned URL's
///   (session token and credential included; only headers are redacted);
/// * `aws_smithy_runtime`, `aws_smithy_http_client`: the orchestrator's `trace` prints whole
///   requests and responses, which carry TURN passwords (GetIceServerConfig) and signed headers;
/// * `hyper`, `hyper_util`, `h2`, `reqwest`: the HTTP stacks under the SDK and the IoT
///   credentials provider, whose `trace` output may show what goes over the wire (the IoT
///   response is a set of temporary credentials).
const SECRET_BEARING_TARGETS: &[&str] = &[
    "tungstenite=debug",
    "tokio_tungstenite=debug",
    "aws_sigv4=debug",
    "aws_smithy_runtime=debug",
    "aws_smithy_http_client=debug",
    "hyper=debug",
    "hyper_util=debug",
    "h2=debug",
    "reqwest=debug",
];

/// The filter: `RUST_LOG` if set and non-empty, else the configured level; then the caps of
/// [`SECRET_BEARING_TARGETS`].
fn build_filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let (source_name, directive) = match rust_log.filter(|v| !v.trim().is_empty()) {
        Some(v) => ("RUST_LOG", v),
        None => ("log.level", level),
    };
    let mut filter = EnvFilter::builder()
        .parse(directive)
        .map_err(|e| TelemetryError::Filter {
            source_name,
            directive: directive.to_string(),
            reason: e.to_string(),
        })?;
    // Only a filter that reaches `trace` somewhere needs the caps; adding them to a quieter
    // one would make those targets louder than asked.
    if filter
        .max_level_hint()
        .is_none_or(|l| l > LevelFilter::DEBUG)
    {
        for cap in SECRET_BEARING_TARGETS {
            if let Ok(d) = cap.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    Ok(filter)
}

/// Makes `log` records (webrtc, rtc and other `log`-based crates) tracing events, so that they
/// pass the same filter and reach the same output. `max` is the filter's most verbose level:
/// `log` then drops disabled records before formatting them.
fn bridge_log(max: LevelFilter) -> Result<(), tracing_log::log::SetLoggerError> {
    tracing_log::LogTracer::builder()
        .with_max_level(max.as_log())
        .init()
}

/// Installs the global subscriber and the `log` bridge. Call once, early in `main`.
pub fn init(level: &str, format: LogFormat) -> Result<(), TelemetryError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = build_filter(level, rust_log.as_deref())?;
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();

    let journald = match wanted_sink(format, under_systemd) {
        Sink::Stderr => None,
        Sink::Journald => match tracing_journald::layer() {
            // Under a template unit the process name is still camgate; the identifier keeps
            // `journalctl -t camgate` working for every instance.
            // Fields go in unprefixed (VIEWER, SESSION, SIGNALING_STATE), so that
            // `journalctl SESSION=…` works; none of ours collides with a journal field.
            Ok(layer) => Some(
                layer
                    .with_syslog_identifier("camgate".into())
                    .with_field_prefix(None),
            ),
            Err(e) if format == LogFormat::Journald => return Err(TelemetryError::Journald(e)),
            // `auto`: the socket is missing (e.g. in a container); stderr still works.
            Err(_) => None,
        },
    };
    let stderr = journald.is_none().then(|| {
        if format == LogFormat::Json {
            return tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed();
        }
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        // The journal stamps each line itself.
        if under_systemd {
            layer.without_time().boxed()
        } else {
            layer.boxed()
        }
    });

    let max = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    bridge_log(max).map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn auto_uses_the_journal_only_under_systemd() {
        assert_eq!(wanted_sink(LogFormat::Auto, true), Sink::Journald);
        assert_eq!(wanted_sink(LogFormat::Auto, false), Sink::Stderr);
        assert_eq!(wanted_sink(LogFormat::Text, true), Sink::Stderr);
        assert_eq!(wanted_sink(LogFormat::Journald, false), Sink::Journald);
    }

    #[test]
    fn rust_log_overrides_the_configured_level() {
        let f = build_filter("info", Some("debug")).unwrap();
        assert_eq!(
            f.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::DEBUG)
        );
        let f = build_filter("warn", Some("  ")).unwrap();
        assert_eq!(
            f.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::WARN)
        );
        // A trace filter gets the caps on secret-bearing targets; quieter ones are untouched.
        let f = build_filter("trace", None).unwrap();
        for cap in [
            "tungstenite=debug",
            "aws_sigv4=debug",
            "aws_smithy_runtime=debug",
        ] {
            assert!(f.to_string().contains(cap), "{cap} missing in {f}");
        }
        let f = build_filter("warn", None).unwrap();
        assert!(!f.to_string().contains("tungstenite"), "{f}");
        let err = build_filter("info", Some("camgate=loud")).unwrap_err();
        assert!(
            err.to_string().starts_with("RUST_LOG: invalid log filter"),
            "{err}"
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A `log` record, as webrtc emits them, comes out through our filter and formatter.
    #[test]
    fn log_crate_records_reach_tracing() {
        // Global, once per process; it forwards to whichever dispatcher is current.
        let _ = bridge_log(LevelFilter::TRACE);
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(build_filter("info,noisy=error", None).unwrap())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            log::warn!(target: "webrtc::peer_connection", "ice failed for {}", "viewer-1");
            log::debug!(target: "webrtc::peer_connection", "hidden debug");
            log::warn!(target: "noisy", "filtered out");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("webrtc::peer_connection"), "{text}");
        assert!(text.contains("ice failed for viewer-1"), "{text}");
        assert!(!text.contains("hidden debug"), "{text}");
        assert!(!text.contains("filtered out"), "{text}");
    }
}
