//! `/metrics` checked by real consumers: the strict OpenMetrics parser of the Python
//! `prometheus_client` package accepts every scrape, and a real Prometheus server scrapes the
//! daemon, reports the target up and returns the series through its query API. A viewer
//! session then moves the viewer gauge, the byte counters and both histograms; in kvs mode
//! (against the emulator) the signaling state, reconnects by cause and the ICE-config age
//! appear and follow what the emulator does.

mod support;

use std::time::{Duration, Instant};

use kvs_emulator::EmulatorConfig;
use support::daemon::{Daemon, test_env, whep_post};
use support::kvs::{CHANNEL, Kvs, connect_viewer};
use support::metrics::{Family, Prometheus, family, parse_openmetrics, sample_value};
use support::viewer::{TestViewer, ViewerOptions};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family the daemon exposes in both modes: (name as the parser reports it, type, unit).
const FAMILIES: &[(&str, &str, &str)] = &[
    ("camgate_build", "info", ""),
    ("camgate_viewers", "gauge", ""),
    ("camgate_viewer_sessions", "gauge", ""),
    ("camgate_http_connections", "gauge", ""),
    ("camgate_http_refused", "counter", ""),
    ("camgate_video_frames_captured", "counter", ""),
    ("camgate_video_frames_sent", "counter", ""),
    ("camgate_video_sent_bytes", "counter", "bytes"),
    ("camgate_keyframe_requests", "counter", ""),
    ("camgate_keyframes_forced", "counter", ""),
    ("camgate_keyframe_requests_ignored", "counter", ""),
    ("camgate_capture_restarts", "counter", ""),
    ("camgate_audio_frames_captured", "counter", ""),
    ("camgate_audio_frames_sent", "counter", ""),
    ("camgate_audio_sent_bytes", "counter", "bytes"),
    ("camgate_offer_to_answer_seconds", "histogram", "seconds"),
    (
        "camgate_offer_to_first_frame_seconds",
        "histogram",
        "seconds",
    ),
];

/// Only in kvs mode.
const KVS_FAMILIES: &[(&str, &str, &str)] = &[
    ("camgate_kvs_signaling_state", "gauge", ""),
    ("camgate_kvs_reconnects", "counter", ""),
    ("camgate_kvs_ice_config_age_seconds", "gauge", "seconds"),
];

/// `GET /metrics`: checks status and content type, returns the text.
async fn scrape(d: &Daemon) -> String {
    let r = reqwest::get(d.endpoint("metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200, "GET /metrics\n{}", d.log());
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(OPENMETRICS),
        "content type of /metrics"
    );
    r.text().await.expect("/metrics body")
}

/// Scrapes and runs the strict parser; a parse error fails the test with the text.
async fn parsed(d: &Daemon) -> Vec<Family> {
    let text = scrape(d).await;
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("the OpenMetrics parser rejects /metrics: {e}\n{text}"))
}

/// Scrapes (bounded polling) until `ok` holds for the parsed families; returns the last ones.
async fn wait_metrics(
    d: &Daemon,
    within: Duration,
    what: &str,
    ok: impl Fn(&[Family]) -> bool,
) -> Vec<Family> {
    let ok = &ok;
    let seen = support::wait::until(what, within, move || async move {
        let f = parsed(d).await;
        ok(&f).then_some(f)
    })
    .await;
    match seen {
        Ok(f) => f,
        Err(e) => panic!("/metrics: {e}:\n{:#?}\n{}", parsed(d).await, d.log()),
    }
}

fn assert_families(families: &[Family], expected: &[(&str, &str, &str)]) {
    for (name, typ, unit) in expected {
        let f = family(families, name).unwrap_or_else(|| {
            panic!(
                "family {name} missing; have {:?}",
                families.iter().map(|f| &f.name).collect::<Vec<_>>()
            )
        });
        assert_eq!(
            (f.typ.as_str(), f.unit.as_str()),
            (*typ, *unit),
            "type/unit of {name}"
        );
        assert!(!f.help.is_empty(), "{name} has no help text");
        assert!(!f.samples.is_empty(), "{name} has no samples");
    }
}

fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(families, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {families:#?}"))
}

/// `host:port` of the daemon's HTTP listener.
fn target(d: &Daemon) -> String {
    d.url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

#[test]
fn the_parser_is_strict() {
    // A harness that accepted anything would let a broken /metrics through.
    let good = "# TYPE a counter\n# HELP a A.\na_total 1\n# EOF\n";
    assert!(
        parse_openmetrics(good).is_ok(),
        "{:?}",
        parse_openmetrics(good)
    );
    for bad in [
        "# TYPE a counter\n# HELP a A.\na_total 1\n",
        "# TYPE a counter\na 1\n# EOF\n",
        "# TYPE a_seconds gauge\n# UNIT a_seconds bytes\na_seconds 1\n# EOF\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 1\n# EOF\n",
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted:\n{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_metrics_parse_strictly_and_prometheus_sees_a_viewer_session() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    // 1. The strict parser accepts the idle daemon's metrics, with every family documented.
    let f = parsed(&d).await;
    assert_families(&f, FAMILIES);
    for (name, ..) in KVS_FAMILIES {
        assert!(family(&f, name).is_none(), "{name} in local mode");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&f, "camgate_build_info", &[("version", version)]),
        1.0
    );
    assert_eq!(value(&f, "camgate_viewers", &[("signaling", "local")]), 0.0);
    assert!(value(&f, "camgate_video_frames_captured_total", &[]) > 0.0);
    assert!(
        value(
            &f,
            "camgate_audio_frames_captured_total",
            &[("codec", "opus")]
        ) > 0.0,
        "the test pattern's tone is captured"
    );
    let restarts = family(&f, "camgate_capture_restarts").unwrap();
    // Every reason is listed from the start (so rate() works at once); audio has no not_h264.
    for (capture, reasons) in [("video", 8), ("audio", 7)] {
        assert_eq!(
            restarts
                .samples
                .iter()
                .filter(|s| s.labels.get("capture").map(String::as_str) == Some(capture))
                .count(),
            reasons,
            "{capture}: every restart reason listed"
        );
    }

    // 2. A real Prometheus scrapes it: target up, series queryable.
    let prom = Prometheus::start(&target(&d)).await;
    if let Err(e) = prom.wait_target_up(Duration::from_secs(30)).await {
        panic!("Prometheus target not up: {e}\n{}\n{}", prom.log(), d.log());
    }
    let within = Duration::from_secs(15);
    for name in [
        "camgate_build_info",
        "camgate_viewers",
        "camgate_video_frames_captured_total",
        "camgate_video_frames_sent_total",
        "camgate_video_sent_bytes_total",
        "camgate_keyframe_requests_total",
        "camgate_keyframes_forced_total",
        "camgate_keyframe_requests_ignored_total",
        "camgate_capture_restarts_total",
        "camgate_audio_frames_captured_total",
        "camgate_audio_frames_sent_total",
        "camgate_audio_sent_bytes_total",
        "camgate_offer_to_answer_seconds_bucket",
        "camgate_offer_to_answer_seconds_count",
        "camgate_offer_to_first_frame_seconds_bucket",
        "camgate_offer_to_first_frame_seconds_sum",
    ] {
        prom.wait_value(&format!("count({name})"), within, |n| n >= 1.0)
            .await
            .unwrap_or_else(|e| panic!("Prometheus has no {name}: {e}"));
    }
    let build = prom.query("camgate_build_info").await;
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].0.get("version").map(String::as_str), Some(version));
    assert_eq!(build[0].0.get("job").map(String::as_str), Some("camgate"));
    prom.wait_value(r#"camgate_viewers{signaling="local"}"#, within, |v| {
        v == 0.0
    })
    .await
    .unwrap();

    // 3. One viewer with video and audio, through WHEP.
    let v = TestViewer::with_options(ViewerOptions::browser()).await;
    let offer = v.offer(true).await;
    let posted = Instant::now();
    let (status, location, answer) = whep_post(&d.endpoint("whep"), "application/sdp", offer).await;
    let round_trip = posted.elapsed();
    assert_eq!(status, 201, "WHEP POST: {answer}\n{}", d.log());
    v.accept_answer(&answer).await;
    let got = v.wait_frames(30, Duration::from_secs(20)).await;
    let to_first_frame = posted.elapsed();
    assert!(got.frames >= 30, "decoded {got:?}\n{}", d.log());
    let heard = v.wait_audio(25, Duration::from_secs(10)).await;
    assert!(heard.rtp_packets >= 25, "heard {heard:?}");

    // 4. Prometheus sees the session: gauge, counters and both histograms moved.
    let expect = |q: &'static str, ok: fn(f64) -> bool| {
        let prom = &prom;
        async move {
            prom.wait_value(q, within, ok)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()))
        }
    };
    expect(r#"camgate_viewers{signaling="local"}"#, |v| v == 1.0).await;
    expect("camgate_video_frames_sent_total", |v| v >= 30.0).await;
    expect("camgate_video_sent_bytes_total", |v| v > 10_000.0).await;
    expect("camgate_audio_frames_sent_total", |v| v >= 25.0).await;
    expect("camgate_audio_sent_bytes_total", |v| v > 0.0).await;
    expect(r#"camgate_keyframe_requests_total{cause="join"}"#, |v| {
        v >= 1.0
    })
    .await;
    expect("camgate_keyframes_forced_total", |v| v >= 1.0).await;
    expect("camgate_offer_to_answer_seconds_count", |v| v == 1.0).await;
    expect("camgate_offer_to_first_frame_seconds_count", |v| v == 1.0).await;
    expect(
        r#"camgate_offer_to_first_frame_seconds_bucket{le="+Inf"}"#,
        |v| v == 1.0,
    )
    .await;
    // The daemon's timings fit inside what the viewer measured around them.
    let answer_s = expect("camgate_offer_to_answer_seconds_sum", |v| v > 0.0).await;
    assert!(
        answer_s <= round_trip.as_secs_f64(),
        "offer→answer {answer_s} s > the POST's round trip {round_trip:?}"
    );
    let first_s = expect("camgate_offer_to_first_frame_seconds_sum", |v| v > 0.0).await;
    assert!(
        answer_s < first_s && first_s <= to_first_frame.as_secs_f64(),
        "offer→first frame {first_s} s: not between offer→answer {answer_s} s and the \
         viewer's 30th decoded frame {to_first_frame:?}"
    );

    // The scrape with a live session (filled histograms) still parses strictly.
    let f = parsed(&d).await;
    assert_eq!(value(&f, "camgate_viewers", &[("signaling", "local")]), 1.0);
    let bytes_live = value(&f, "camgate_video_sent_bytes_total", &[]);

    // 5. The viewer leaves: the gauge drops, the counters keep what was sent.
    let location = location.expect("201 without Location");
    let r = reqwest::Client::new()
        .delete(d.endpoint(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    v.close().await;
    let f = wait_metrics(&d, within, "viewer gone", |f| {
        sample_value(f, "camgate_viewers", &[("signaling", "local")]) == Some(0.0)
    })
    .await;
    assert!(
        value(&f, "camgate_video_sent_bytes_total", &[]) >= bytes_live,
        "bytes sent went down when the session ended"
    );
    expect(r#"camgate_viewers{signaling="local"}"#, |v| v == 0.0).await;
    // Prometheus saw no counter reset across the session's end.
    for q in [
        "resets(camgate_video_sent_bytes_total[5m])",
        "resets(camgate_video_frames_sent_total[5m])",
        "resets(camgate_audio_frames_sent_total[5m])",
    ] {
        expect(q, |v| v == 0.0).await;
    }
    drop(prom);
    let (clean, _) = d.terminate();
    assert!(clean, "daemon did not exit cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kvs_metrics_show_signaling_state_reconnects_and_ice_config_age() {
    let kvs = Kvs::start(EmulatorConfig::default(), &[]).await;
    let d = &kvs.daemon;
    let within = Duration::from_secs(15);
    let connected = |f: &[Family]| {
        sample_value(f, "camgate_kvs_signaling_state", &[("state", "connected")]) == Some(1.0)
    };

    let f = wait_metrics(d, within, "state connected", connected).await;
    assert_families(&f, FAMILIES);
    assert_families(&f, KVS_FAMILIES);
    let states = family(&f, "camgate_kvs_signaling_state").unwrap();
    assert_eq!(states.samples.len(), 8, "every state listed: {states:?}");
    assert_eq!(
        states.samples.iter().map(|s| s.value).sum::<f64>(),
        1.0,
        "exactly one current state: {states:?}"
    );
    let reconnects = family(&f, "camgate_kvs_reconnects").unwrap();
    assert_eq!(reconnects.samples.len(), 6, "{reconnects:?}");
    assert!(reconnects.samples.iter().all(|s| s.value == 0.0));
    let age = value(&f, "camgate_kvs_ice_config_age_seconds", &[]);
    assert!((0.0..60.0).contains(&age), "ICE config age {age}");
    assert_eq!(value(&f, "camgate_viewers", &[("signaling", "kvs")]), 0.0);

    // GO_AWAY: one reconnect with that cause, connected again.
    let connects = kvs.stats().master_connects;
    kvs.emu.go_away(CHANNEL, Duration::from_secs(30)).unwrap();
    assert!(
        kvs.wait(within, |s| s.master_connects > connects).await,
        "no reconnect after GO_AWAY\n{}",
        d.log()
    );
    let f = wait_metrics(d, within, "a go-away reconnect", |f| {
        connected(f)
            && sample_value(f, "camgate_kvs_reconnects_total", &[("cause", "go-away")]) == Some(1.0)
    })
    .await;
    let total: f64 = family(&f, "camgate_kvs_reconnects")
        .unwrap()
        .samples
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 1.0, "only the go-away reconnect");

    // A viewer through KVS: the answer time is observed where the answer leaves.
    let v = connect_viewer(&kvs, "viewer-metrics", false).await;
    let got = v.viewer.wait_frames(10, Duration::from_secs(20)).await;
    assert!(got.frames >= 10, "decoded {got:?}\n{}", d.log());
    let f = wait_metrics(d, within, "the KVS viewer's session", |f| {
        sample_value(f, "camgate_viewers", &[("signaling", "kvs")]) == Some(1.0)
            && sample_value(f, "camgate_offer_to_answer_seconds_count", &[]) == Some(1.0)
            && sample_value(f, "camgate_offer_to_first_frame_seconds_count", &[]) == Some(1.0)
    })
    .await;
    let answer_s = value(&f, "camgate_offer_to_answer_seconds_sum", &[]);
    // The daemon observes the answer once its send returns, which may be a moment after the
    // viewer already holds it: allow 50 ms for that race.
    assert!(
        answer_s > 0.0 && answer_s <= v.offer_to_answer.as_secs_f64() + 0.05,
        "offer→answer {answer_s} s vs the viewer's {:?}",
        v.offer_to_answer
    );
    assert!(value(&f, "camgate_video_sent_bytes_total", &[]) > 0.0);
    v.viewer.close().await;
}
