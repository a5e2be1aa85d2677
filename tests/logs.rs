//! What the daemon writes to its logs: `log.format = "json"` is one JSON object per line with
//! the event's fields, and no credential, token or presigned URL appears at any level, even
//! `trace` with every crate's logging on.

mod support;

use std::time::Duration;

use kvs_emulator::EmulatorConfig;
use support::daemon::{Daemon, test_env, whep_post};
use support::kvs::{Kvs, connect_viewer};
use support::viewer::TestViewer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_fields() {
    let mut env = test_env();
    env.retain(|(k, _)| k != "CAMGATE__LOG__FORMAT");
    env.push(("CAMGATE__LOG__FORMAT".into(), "json".into()));
    let daemon = Daemon::start(&env, &[]);
    daemon.wait_healthy(Duration::from_secs(15)).await;
    let viewer = TestViewer::new(102).await;
    let offer = viewer.offer(true).await;
    let (status, _, answer) = whep_post(&daemon.endpoint("whep"), "application/sdp", offer).await;
    assert_eq!(status, 201, "{answer}");
    viewer.accept_answer(&answer).await;
    assert!(viewer.wait_connected(Duration::from_secs(10)).await);
    viewer.close().await;
    let (clean, _) = daemon_stop(daemon);
    let log = clean;

    let mut objects = Vec::new();
    for line in log.lines() {
        // stdout carries the two lines for the person at the terminal; everything on stderr
        // must be JSON.
        if line.starts_with("camgate ") || line.starts_with("camgate: ") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n---\n{log}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        objects.push(v);
    }
    let running = objects
        .iter()
        .find(|v| v["message"].as_str().is_some_and(|m| m.contains("running")))
        .expect("the start line");
    assert!(
        running["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:"))
    );
    let answered = objects
        .iter()
        .find(|v| v["message"] == "answered offer")
        .unwrap_or_else(|| panic!("no answered-offer event\n{log}"));
    assert!(
        answered["session"].as_str().is_some_and(|s| s.len() == 32),
        "{answered}"
    );
    assert_eq!(answered["payload_type"], 102);
}

fn daemon_stop(daemon: Daemon) -> (String, bool) {
    let output = daemon.output.clone();
    let (ok, _) = daemon.terminate();
    let log = output.lock().unwrap().join("\n");
    (log, ok)
}

/// A trace-level run (every crate, every level) in kvs mode with temporary credentials, an
/// RTSP camera URL with a password and a token, a viewer session and the TURN credentials the
/// channel hands out: none of those secrets, and no presigned URL signature, reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    const RTSP_PASSWORD: &str = "Pa55-rtsp-camera-word";
    const RTSP_TOKEN: &str = "t0ken-in-the-camera-query";
    // Nothing listens on this port: the capture fails and retries, logging the URL each time.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("rtsp://admin:{RTSP_PASSWORD}@127.0.0.1:{closed}/live?token={RTSP_TOKEN}");
    // TURN REST credentials (deterministic for a given expiry second and client id), so the
    // passwords the daemon received can be recomputed below.
    const TURN_SECRET: &str = "turn-secret-for-the-log-test";
    // Temporary credentials: the session token travels in every signed request and in the
    // presigned WebSocket URL's query. Only characters that URL-encoding leaves alone, so
    // that an encoded copy is found too.
    let cfg = EmulatorConfig {
        turn_secret: Some(TURN_SECRET.into()),
        credentials: vec![
            kvs_emulator::TestCredentials::new(
                "ASIAEMULATORLOGTEST1",
                "log-test-secret-access-key-0123456789",
            )
            .with_session_token("FwoGZXIvYXdzEJr-session-token-for-the-log-test"),
        ],
        ..EmulatorConfig::default()
    };
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let kvs = Kvs::start(
        cfg,
        &[
            ("RUST_LOG", "trace"),
            ("CAMGATE__SOURCE__KIND", "rtsp"),
            ("CAMGATE__SOURCE__URL", url.as_str()),
        ],
    )
    .await;
    // A viewer session through KVS: offers, answers, candidates.
    let viewer = connect_viewer(&kvs, "viewer-secrets", false).await;
    viewer.viewer.close().await;
    // Let the capture fail at least once so its URL is logged.
    let failed = support::wait::until_true("a capture failure", Duration::from_secs(15), || {
        std::future::ready(kvs.daemon.log().contains("capture pipeline failed"))
    })
    .await;
    if let Err(e) = failed {
        panic!("{e}:\n{}", tail(&kvs.daemon.log()));
    }

    let creds = kvs.emu.credentials();
    let Kvs { daemon, .. } = kvs;
    let (log, _) = daemon_stop(daemon);
    // Trace level really is on (for every target not capped in telemetry.rs).
    let trace_lines = log.lines().filter(|l| l.contains(" TRACE ")).count();
    assert!(
        trace_lines >= 10,
        "a trace run logs TRACE lines; got {trace_lines} in {} bytes",
        log.len()
    );
    assert!(
        log.contains("admin:***@127.0.0.1"),
        "the redacted URL is logged"
    );
    let mut secrets: Vec<(&str, String)> = vec![
        ("AWS secret access key", creds.secret_access_key.clone()),
        ("RTSP password", RTSP_PASSWORD.to_owned()),
        ("RTSP URL token", RTSP_TOKEN.to_owned()),
        ("presigned URL signature", "X-Amz-Signature=".to_owned()),
        (
            "presigned URL session token",
            "X-Amz-Security-Token=".to_owned(),
        ),
        ("SigV4 Authorization header", "Signature=".to_owned()),
    ];
    if let Some(t) = &creds.session_token {
        secrets.push(("AWS session token", t.clone()));
    }
    // Every password the emulator could have handed the daemon (`camgate-master`) during the
    // run: expiry = request time + 300 s TTL.
    let ended_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for t in started_unix.saturating_sub(2)..=ended_unix + 2 {
        let (_, password) =
            kvs_emulator::turn_rest_credentials(TURN_SECRET, t + 300, "camgate-master");
        secrets.push(("TURN credential", password));
    }
    for (what, secret) in &secrets {
        if let Some(at) = log.find(secret.as_str()) {
            let line_start = log[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
            let line_end = log[at..].find('\n').map(|i| at + i).unwrap_or(log.len());
            panic!(
                "{what} in the log ({} bytes at trace level):\n{}",
                log.len(),
                &log[line_start..line_end.min(line_start + 600)]
            );
        }
    }
    eprintln!(
        "MEASURE logs: trace-level kvs run, {} bytes, no secret found",
        log.len()
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One journal entry from the native protocol: `KEY=value` lines, or `KEY\n<u64 LE length>
/// <bytes>\n` for values with newlines.
fn parse_journal_entry(mut b: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    while !b.is_empty() {
        let Some(nl) = b.iter().position(|&c| c == b'\n') else {
            break;
        };
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            b = &b[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            if rest.len() < 8 {
                break;
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..(8 + len).min(rest.len())];
            fields.insert(key, String::from_utf8_lossy(value).into_owned());
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    fields
}

/// `log.format = "journald"` speaks the journal's native protocol with
/// `SYSLOG_IDENTIFIER=camgate` and the events' fields as journal fields. The journal here is
/// this test: a datagram socket bind-mounted over `/run/systemd/journal` in a private mount
/// namespace that only the daemon sees (`unshare -r -m`; no root needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_entries_carry_the_identifier_and_fields() {
    let dir = std::env::temp_dir().join(format!("camgate-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock =
        std::os::unix::net::UnixDatagram::bind(dir.join("socket")).expect("bind journal socket");
    // Read as journald does, all the time: a full socket buffer would block the daemon's
    // logging calls. (tracing-journald probes the socket with an empty datagram first.)
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            if n > 0 {
                sink.lock().unwrap().push(parse_journal_entry(&buf[..n]));
            }
        }
    });

    let mut env = test_env();
    env.retain(|(k, _)| k != "CAMGATE__LOG__FORMAT");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "mkdir -p /run/systemd/journal && mount --bind {} /run/systemd/journal && exec {} run --listen 127.0.0.1:{port}",
        dir.display(),
        env!("CARGO_BIN_EXE_camgate")
    );
    let mut child = std::process::Command::new("unshare")
        // A user namespace too (`-r`), so that this works without root.
        .args(["-r", "-m", "--propagation", "private", "sh", "-c", &script])
        .envs(env)
        .env("CAMGATE__LOG__FORMAT", "journald")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");

    // A viewer, so that session events (with their fields) are logged.
    let base = format!("http://127.0.0.1:{port}/");
    let healthz = format!("{base}healthz");
    support::wait::until_true("daemon healthy", Duration::from_secs(20), || {
        let request = reqwest::get(healthz.clone());
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await
    .unwrap();
    let viewer = TestViewer::new(102).await;
    let offer = viewer.offer(true).await;
    let (status, _, answer) = whep_post(&format!("{base}whep"), "application/sdp", offer).await;
    assert_eq!(status, 201, "{answer}");
    viewer.accept_answer(&answer).await;
    assert!(viewer.wait_connected(Duration::from_secs(10)).await);
    viewer.close().await;
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();

    let entries = received.lock().unwrap().clone();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!entries.is_empty(), "no journal entry arrived");
    for e in &entries {
        assert_eq!(
            e.get("SYSLOG_IDENTIFIER").map(String::as_str),
            Some("camgate"),
            "{e:?}"
        );
        assert!(
            e.contains_key("MESSAGE") && e.contains_key("PRIORITY"),
            "{e:?}"
        );
    }
    let answered = entries
        .iter()
        .find(|e| e.get("MESSAGE").is_some_and(|m| m == "answered offer"))
        .unwrap_or_else(|| panic!("no 'answered offer' entry in {entries:?}"));
    assert!(
        answered.get("SESSION").is_some_and(|s| s.len() == 32),
        "{answered:?}"
    );
    assert_eq!(
        answered.get("PAYLOAD_TYPE").map(String::as_str),
        Some("102")
    );
    // tracing-journald maps INFO to 5 (notice).
    assert_eq!(answered.get("PRIORITY").map(String::as_str), Some("5"));
}
