//! Configuration: built-in defaults, then a TOML file, then `CAMGATE__SECTION__KEY` environment
//! variables, each overriding the one before; then validation.
//!
//! Configuration mistakes are the most common way a long-running daemon fails to start, so the
//! messages are the product: each names the key, the bad value, what is allowed and where the
//! value came from, and all problems are reported together rather than one per restart.

mod error;
mod fields;
mod render;
mod settings;
mod sources;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Problem};
pub use render::redact_url;
pub use settings::{
    AudioSettings, AudioSource, EncoderSettings, HttpSettings, InputFormat, IotSettings,
    KvsSettings, LogFormat, LogSettings, RtspTransport, Settings, SignalingMode, SignalingSettings,
    SourceKind, SourceSettings, WebRtcSettings,
};
pub use sources::ENV_PREFIX;
pub use validate::TEST_PATTERNS;

/// Read when no file is named on the command line, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/camgate/camgate.toml";

/// Loads the configuration the daemon runs with: `explicit` (which must exist) or else
/// [`DEFAULT_CONFIG_PATH`] if present, then this process's `CAMGATE__*` variables; validated.
pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigError> {
    let file = sources::choose_file(explicit, Path::new(DEFAULT_CONFIG_PATH))?;
    // `std::env::vars` panics on non-UTF-8 entries; take them lossily instead.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            sources::has_env_prefix(&k).then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect();
    load_from(file.as_deref(), &env)
}

/// Loads from `file` (which must exist, if given) and the given environment instead of the
/// process's, then validates. Entries of `env` without the `CAMGATE__` prefix are ignored.
pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Settings, ConfigError> {
    let (settings, mut problems) = sources::read(file, env)?;
    if let Err(e) = settings.validate() {
        // A value that could not be read stayed at its default; checks on that default would
        // only confuse, so keep validation problems for other keys.
        let unreadable: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
        problems.extend(
            e.problems()
                .iter()
                .filter(|p| !unreadable.contains(&p.key))
                .cloned(),
        );
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        sort_in_file_order(&mut problems);
        Err(ConfigError::Invalid { problems })
    }
}

/// Orders problems the way the keys appear in the file, so that they read section by section.
/// Unknown keys go with their section; what belongs nowhere goes last.
fn sort_in_file_order(problems: &mut [Problem]) {
    let keys = Settings::keys();
    let rank = |key: &str| {
        keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            let section = key.rsplit_once('.').map_or(key, |(s, _)| s);
            keys.iter()
                .rposition(|k| k.rsplit_once('.').is_some_and(|(s, _)| s == section))
                .unwrap_or(usize::MAX)
        })
    };
    problems.sort_by_key(|p| rank(&p.key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, SocketAddr};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A TOML file in the temp directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "camgate-config-test-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Loads `text` as a file and returns the problem lines.
    fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        let f = TempFile::new(text);
        match load_from(Some(f.path()), &env(vars)) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems()
                .iter()
                .map(|p| p.message.replace(&f.path().display().to_string(), "FILE"))
                .collect(),
        }
    }

    fn without_provenance(mut s: Settings) -> Settings {
        s.provenance = Default::default();
        s
    }

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/camgate.toml")
    }

    #[test]
    fn defaults_are_valid_and_need_no_file() {
        Settings::default().validate().unwrap();
        let s = load_from(None, &env(&[("PATH", "/bin"), ("CAMGATEX", "1")])).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.source_description(), "built-in defaults");
        assert_eq!(
            s.http.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(s.source.kind, SourceKind::Test);
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let f = TempFile::new(
            "[source]\nwidth = 640\nheight = 480\n[http]\nlisten = \"0.0.0.0:9000\"\n",
        );
        let s = load_from(
            Some(f.path()),
            &env(&[
                ("CAMGATE__HTTP__LISTEN", "127.0.0.1:7000"),
                ("CAMGATE__SOURCE__HEIGHT", "360"),
                ("CAMGATE__SOURCE__LOOP", "false"),
                ("camgate__kvs__region", "eu-west-1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.http.listen,
            "127.0.0.1:7000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!((s.source.width, s.source.height), (640, 360));
        assert_eq!(s.source.framerate, 30);
        assert!(!s.source.looping);
        assert_eq!(s.kvs.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.config_file(), Some(f.path()));
        assert_eq!(
            s.origin_of("source.width"),
            Some(f.path().display().to_string().as_str())
        );
        assert_eq!(
            s.origin_of("http.listen"),
            Some("environment variable CAMGATE__HTTP__LISTEN")
        );
        assert_eq!(s.origin_of("source.framerate"), None);
        let d = s.source_description();
        assert!(d.contains(&f.path().display().to_string()), "{d}");
        assert!(d.contains("CAMGATE__HTTP__LISTEN"), "{d}");
    }

    #[test]
    fn list_keys_take_comma_separated_environment_values() {
        let s = load_from(
            None,
            &env(&[
                (
                    "CAMGATE__WEBRTC__STUN_URLS",
                    "stun:stun.example.net:3478, stuns:b.example.net",
                ),
                ("CAMGATE__WEBRTC__HOST_ADDRESSES", "127.0.0.1"),
                ("CAMGATE__WEBRTC__NAT_1TO1_IPS", "192.0.2.1,2001:db8::1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.webrtc.stun_urls,
            ["stun:stun.example.net:3478", "stuns:b.example.net"]
        );
        assert_eq!(
            s.webrtc.host_addresses,
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.webrtc.nat_1to1_ips.len(), 2);
    }

    #[test]
    fn empty_environment_value_restores_the_default() {
        let f = TempFile::new(
            "[webrtc]\nstun_urls = [\"stun:a.example\"]\n[kvs]\nregion = \"eu-west-1\"\n",
        );
        let s = load_from(
            Some(f.path()),
            &env(&[
                ("CAMGATE__WEBRTC__STUN_URLS", ""),
                ("CAMGATE__KVS__REGION", ""),
            ]),
        )
        .unwrap();
        assert!(s.webrtc.stun_urls.is_empty());
        assert_eq!(s.kvs.region, None);
    }

    #[test]
    fn wrong_type_names_key_value_and_file() {
        assert_eq!(
            problems("[source]\nwidth = \"abc\"\n", &[]),
            ["source.width: invalid type: found string \"abc\", expected an integer (from FILE)"]
        );
        assert_eq!(
            problems("", &[("CAMGATE__WEBRTC__MAX_VIEWERS", "ten")]),
            [
                "webrtc.max_viewers: invalid type: found string \"ten\", expected an integer (from environment variable CAMGATE__WEBRTC__MAX_VIEWERS)"
            ]
        );
        assert_eq!(
            problems("[source]\nloop = 1\n", &[]),
            [
                "source.loop: invalid type: found integer 1, expected a boolean (true or false) (from FILE)"
            ]
        );
        assert_eq!(
            problems("source = 3\n", &[]),
            [
                "source: invalid type: found integer 3, expected a table ([source] section) (from FILE)"
            ]
        );
    }

    #[test]
    fn unknown_enum_value_lists_the_allowed_ones() {
        assert_eq!(
            problems("[source]\nkind = \"v4l\"\n", &[]),
            [
                "source.kind: unknown value \"v4l\"; expected one of test, v4l2, rtsp, file (from FILE)"
            ]
        );
        let p = problems(
            "[log]\nformat = \"yaml\"\n[signaling]\nmode = \"aws\"\n",
            &[],
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("signaling.mode: unknown value \"aws\"; expected one of local, kvs")
        );
        assert!(p[1].starts_with(
            "log.format: unknown value \"yaml\"; expected one of auto, journald, text, json"
        ));
        // Names are case-insensitive, as environment values often are upper case.
        let s = load_from(None, &env(&[("CAMGATE__SOURCE__TRANSPORT", "UDP")])).unwrap();
        assert_eq!(s.source.transport, RtspTransport::Udp);
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let p = problems(
            "[source]\nwidht = 640\n[sources]\nx = 1\n[http]\nport = 80\n",
            &[],
        );
        assert_eq!(
            p,
            [
                "source.widht: unknown key; did you mean source.width? (from FILE)",
                "http.port: unknown key; keys in [http] are listen, tokens, tokens_file, \
                 metrics_token, allow_anonymous, tls_cert, tls_key, cors_origins, \
                 header_timeout_s, body_timeout_s, max_connections, offers_per_ip_per_s \
                 (from FILE)",
                "sources: unknown key; did you mean source? (from FILE)",
            ]
        );
        assert_eq!(
            problems("", &[("CAMGATE__KVS__IOT__CERTIFICATE", "/x")]),
            [
                "kvs.iot.certificate: unknown key; keys in [kvs.iot] are endpoint, cert, key, ca, role_alias, thing_name (from environment variable CAMGATE__KVS__IOT__CERTIFICATE)"
            ]
        );
        assert_eq!(
            problems("", &[("CAMGATE__SOURCE[9999999999]", "x")]).len(),
            1,
            "hostile names are refused, not allocated"
        );
    }

    #[test]
    fn out_of_range_values_say_what_is_allowed() {
        assert_eq!(
            problems("[source]\nwidth = 99999\nframerate = 0\n", &[]),
            [
                "source.width: 99999 is out of range; allowed 16 to 7680 (from FILE)",
                "source.framerate: 0 is out of range; allowed 1 to 120 (from FILE)",
            ]
        );
        assert_eq!(
            problems(
                "[webrtc]\nudp_port_min = 50000\nudp_port_max = 40000\n",
                &[]
            ),
            ["webrtc.udp_port_min (50000) is greater than webrtc.udp_port_max (40000) (from FILE)"]
        );
        assert_eq!(
            problems("[encoder]\nbitrate_kbps = 50\n", &[]),
            ["encoder.bitrate_kbps: 50 is out of range; allowed 100 to 50000 (from FILE)"]
        );
        assert_eq!(
            problems(
                "[webrtc]\ngop_cache_kb = 10\ngop_cache_max_age_ms = 100\ngop_cache_pace_kbps = 0\n",
                &[]
            ),
            [
                "webrtc.gop_cache_kb: 10 is out of range; allowed 64 to 65536 (from FILE)",
                "webrtc.gop_cache_max_age_ms: 100 is out of range; allowed 500 to 60000 (from FILE)",
                "webrtc.gop_cache_pace_kbps: 0 is out of range; allowed 500 to 1000000 (from FILE)",
            ]
        );
        assert!(
            problems("[webrtc]\ngop_cache_kb = 0\n", &[]).is_empty(),
            "0 turns it off"
        );
        assert!(
            problems(
                "[webrtc]\nudp_port_min = 40000\nudp_port_max = 40100\n",
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn required_keys_per_source_kind() {
        assert_eq!(
            problems("[source]\nkind = \"rtsp\"\n", &[]),
            ["source.url is required when source.kind = \"rtsp\""]
        );
        assert_eq!(
            problems("[source]\nkind = \"file\"\n", &[]),
            ["source.path is required when source.kind = \"file\""]
        );
        let p = problems(
            "[source]\nkind = \"file\"\npath = \"/nonexistent/camgate.mp4\"\n",
            &[],
        );
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("source.path: cannot open /nonexistent/camgate.mp4"),
            "{p:?}"
        );
        // A directory is refused; a named pipe (a live stream) is taken.
        let p = problems("[source]\nkind = \"file\"\npath = \"/tmp\"\n", &[]);
        assert!(
            p[0].starts_with("source.path: /tmp is not a regular file or named pipe"),
            "{p:?}"
        );
        let fifo = std::env::temp_dir().join(format!("camgate-cfg-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let toml = format!("[source]\nkind = \"file\"\npath = \"{}\"\n", fifo.display());
        assert!(problems(&toml, &[]).is_empty());
        let _ = std::fs::remove_file(&fifo);
        assert!(
            problems(
                "[source]\nkind = \"rtsp\"\nurl = \"rtsp://u:p@192.0.2.1/s\"\n",
                &[]
            )
            .is_empty()
        );
        let p = problems("[source]\nkind = \"rtsp\"\nurl = \"http://cam/x\"\n", &[]);
        assert!(
            p[0].starts_with("source.url: unsupported scheme \"http\""),
            "{p:?}"
        );
    }

    #[test]
    fn required_keys_in_kvs_mode() {
        assert_eq!(
            problems("[signaling]\nmode = \"kvs\"\n", &[]),
            [
                "kvs.region is required when signaling.mode = \"kvs\" (unless kvs.channel_arn gives it)",
                "kvs.channel_name or kvs.channel_arn is required when signaling.mode = \"kvs\"",
            ]
        );
        // The region comes from the ARN.
        let f = TempFile::new(
            "[signaling]\nmode = \"kvs\"\n[kvs]\nchannel_arn = \"arn:aws:kinesisvideo:eu-west-1:123456789012:channel/cam/1700000000000\"\n",
        );
        let s = load_from(Some(f.path()), &[]).unwrap();
        assert_eq!(s.kvs.effective_region(), Some("eu-west-1"));
        let p = problems(
            "[signaling]\nmode = \"kvs\"\n[kvs]\nregion = \"us-east-1\"\nchannel_name = \"cam 1\"\n",
            &[],
        );
        assert_eq!(
            p,
            [
                "kvs.channel_name: \"cam 1\" is not a channel name; expected 1 to 256 of a-z A-Z 0-9 _ . - (from FILE)"
            ]
        );
    }

    #[test]
    fn iot_keys_are_all_or_nothing() {
        let p = problems("[kvs.iot]\ncert = \"/etc/camgate/cert.pem\"\n", &[]);
        let keys: Vec<&str> = p.iter().map(|m| m.split(' ').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "kvs.iot.endpoint",
                "kvs.iot.key",
                "kvs.iot.role_alias",
                "kvs.iot.thing_name"
            ]
        );
        assert!(p[0].contains("(set: kvs.iot.cert)"), "{p:?}");
    }

    #[test]
    fn plain_http_iot_endpoint_only_next_to_a_plain_http_emulator() {
        let iot = "[kvs.iot]\nendpoint = \"http://127.0.0.1:8443\"\ncert = \"/c\"\nkey = \"/k\"\nrole_alias = \"r\"\nthing_name = \"t\"\n";
        let p = problems(iot, &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("kvs.iot.endpoint: \"http://127.0.0.1:8443\" is plain http://"),
            "{p:?}"
        );
        let with_emulator = format!("[kvs]\nendpoint_url = \"http://127.0.0.1:4566\"\n{iot}");
        assert!(problems(&with_emulator, &[]).is_empty());
    }

    #[test]
    fn audio_keys_are_checked_against_each_other() {
        let p = problems(
            "[audio]\nsource = \"camera\"\nbitrate_kbps = 2\ndevice = \"hw:1\"\ntalkback_sink = \"speaker\"\n",
            &[],
        );
        let keys: Vec<&str> = p
            .iter()
            .map(|m| m.split([' ', ':']).next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "audio.source",
                "audio.device",
                "audio.bitrate_kbps",
                "audio.talkback_sink"
            ],
            "{p:?}"
        );
        assert!(p[0].contains("source.kind = \"rtsp\" or \"file\""), "{p:?}");
        assert!(p[3].contains("alsa:"), "{p:?}");
        let s = load_from(
            None,
            &env(&[
                ("CAMGATE__AUDIO__SOURCE", "alsa"),
                ("CAMGATE__AUDIO__DEVICE", "plughw:CARD=Mic"),
                ("CAMGATE__AUDIO__TALKBACK_SINK", "file:/tmp/talk.wav"),
            ]),
        )
        .unwrap();
        assert_eq!(s.audio.source, AudioSource::Alsa);
        assert_eq!(s.audio.device.as_deref(), Some("plughw:CARD=Mic"));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let f = TempFile::new(
            "[source]\nkind = \"v4l\"\nwidth = \"wide\"\nheight = 5\n[webrtc]\nmax_viewers = 0\nstun_urls = [\"turn:x\"]\n",
        );
        let err = load_from(Some(f.path()), &[]).unwrap_err();
        assert_eq!(err.problems().len(), 5, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration (5 problems):\n  "),
            "{text}"
        );
        assert_eq!(text.lines().count(), 6);
    }

    #[test]
    fn file_errors_name_the_file() {
        let missing = Path::new("/nonexistent/camgate.toml");
        let err = load_from(Some(missing), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::FileNotFound { .. }));
        assert_eq!(
            err.to_string(),
            "config file /nonexistent/camgate.toml does not exist"
        );
        assert!(matches!(
            load(Some(missing)),
            Err(ConfigError::FileNotFound { .. })
        ));

        let f = TempFile::new("[source]\nwidth = \n");
        let err = load_from(Some(f.path()), &[]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(text.contains(&f.path().display().to_string()), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn default_file_is_used_only_when_present() {
        let f = TempFile::new("");
        assert_eq!(
            sources::choose_file(None, f.path()).unwrap().as_deref(),
            Some(f.path())
        );
        assert_eq!(
            sources::choose_file(None, Path::new("/nonexistent/x.toml")).unwrap(),
            None
        );
        assert!(sources::choose_file(Some(Path::new("/nonexistent/x.toml")), f.path()).is_err());
    }

    #[test]
    fn shipped_file_is_the_default_configuration() {
        let s = load_from(Some(&shipped()), &[]).unwrap();
        assert_eq!(without_provenance(s), Settings::default());
    }

    /// Every key appears in the shipped file, active or as a commented-out example, under its
    /// section, and the file mentions no key that does not exist.
    #[test]
    fn shipped_file_documents_every_key() {
        let text = std::fs::read_to_string(shipped()).unwrap();
        let mut section = String::new();
        let mut documented = Vec::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            // `key = value` lines, active or commented with a single "# ".
            let candidate = line.strip_prefix("# ").unwrap_or(line);
            if let Some((k, _)) = candidate.split_once(" = ")
                && !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                documented.push(format!("{section}.{k}"));
            }
        }
        let keys: Vec<String> = Settings::keys().iter().map(|k| k.to_string()).collect();
        let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(k)).collect();
        let extra: Vec<&String> = documented.iter().filter(|k| !keys.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "not documented in camgate.toml: {missing:?}"
        );
        assert!(extra.is_empty(), "not settings: {extra:?}");
    }

    #[test]
    fn redacted_toml_masks_secrets_and_reads_back() {
        let f = TempFile::new(
            "[source]\nkind = \"rtsp\"\nurl = \"rtsp://admin:hunter2@192.0.2.7/s\"\n[webrtc]\nhost_addresses = [\"127.0.0.1\"]\n",
        );
        let s = load_from(
            Some(f.path()),
            &env(&[
                ("CAMGATE__SOURCE__URL", "rtsp://192.0.2.7/s"),
                ("CAMGATE__SOURCE__USERNAME", "admin"),
                ("CAMGATE__SOURCE__PASSWORD", "s3cret"),
            ]),
        )
        .unwrap();
        let out = s.to_redacted_toml();
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("password = \"***\""), "{out}");
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(
            problems("[source]\npassword = 987654\n", &[]),
            ["source.password: invalid type (value not shown), expected a string (from FILE)"]
        );

        let with_url = Settings {
            source: SourceSettings {
                url: Some("rtsp://admin:hunter2@192.0.2.7/s".into()),
                ..Settings::default().source
            },
            ..Settings::default()
        };
        let out = with_url.to_redacted_toml();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(
            out.contains("url = \"rtsp://admin:***@192.0.2.7/s\""),
            "{out}"
        );
        assert!(!format!("{with_url:?}").contains("hunter2"));

        // Without secrets, the printed configuration is a config file that loads to the same.
        let mut plain = s.clone();
        plain.source.password = None;
        plain.source.username = None;
        let printed = TempFile::new(&plain.to_redacted_toml());
        let back = load_from(Some(printed.path()), &[]).unwrap();
        assert_eq!(without_provenance(back), without_provenance(plain));
    }

    #[test]
    fn publish_needs_a_url_and_never_shows_its_secrets() {
        assert_eq!(
            problems("[publish]\nenabled = true\n", &[]),
            ["publish.whip_url is required when publish.enabled = true"]
        );
        let bad = problems("[publish]\nwhip_url = \"ftp://sfu/SECRETPATH\"\n", &[]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with("publish.whip_url: expected an http"),
            "{bad:?}"
        );
        assert!(!bad[0].contains("SECRETPATH"), "{bad:?}");
        let both = problems(
            "[publish]\nwhip_url = \"http://u:p@sfu/whip\"\nbearer_token = \"t\"\n",
            &[],
        );
        assert!(both[0].starts_with("publish.bearer_token:"), "{both:?}");
        assert!(
            problems("[publish]\nbearer_token = \"two words\"\n", &[])[0]
                .starts_with("publish.bearer_token: must be non-empty")
        );

        // The token from the environment, masked wherever the settings are printed.
        let s = load_from(
            None,
            &env(&[
                ("CAMGATE__PUBLISH__ENABLED", "true"),
                (
                    "CAMGATE__PUBLISH__WHIP_URL",
                    "https://customer-x.cloudflarestream.com/KEY123/webRTC/publish",
                ),
                ("CAMGATE__PUBLISH__BEARER_TOKEN", "tok-s3cret"),
            ]),
        )
        .unwrap();
        assert!(s.publish.enabled);
        assert_eq!(s.publish.bearer_token.as_deref(), Some("tok-s3cret"));
        let out = s.to_redacted_toml();
        for secret in ["tok-s3cret", "KEY123"] {
            assert!(!out.contains(secret), "{out}");
            assert!(!format!("{s:?}").contains(secret));
        }
        assert!(out.contains("bearer_token = \"***\""), "{out}");
        assert!(
            out.contains("whip_url = \"https://customer-x.cloudflarestream.com/***\""),
            "{out}"
        );
        // A type error names the key without the value.
        assert_eq!(
            problems("", &[("CAMGATE__PUBLISH__ENABLED", "maybe")]).len(),
            1
        );
    }
}
