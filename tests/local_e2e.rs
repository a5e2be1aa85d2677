//! Local mode end to end: the real daemon binary on the test pattern, real WebRTC viewers over
//! loopback that decode what they receive with GStreamer.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, test_env, whep_post};
use support::viewer::TestViewer;

const SDP: &str = "application/sdp";

fn env_with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = test_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Offers, POSTs, applies the answer; returns (viewer, Location, time of the answer).
async fn join(d: &Daemon, pt: u8) -> (TestViewer, String, Instant) {
    let v = TestViewer::new(pt).await;
    let offer = v.offer(true).await;
    let (status, location, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "WHEP POST failed: {answer}\n{}", d.log());
    let answered = Instant::now();
    assert!(
        answer.contains("a=candidate:"),
        "WHEP answer must carry our candidates:\n{answer}"
    );
    v.accept_answer(&answer).await;
    (v, location.expect("201 without Location"), answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_decodes_the_test_pattern_within_two_seconds() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    let (v, location, answered) = join(&d, 102).await;
    let got = v.wait_frames(30, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 30,
        "decoded only {} frames: {got:?}\n{}",
        got.frames,
        d.log()
    );
    assert_eq!((got.width, got.height), (640, 480), "decoded size");
    assert!(got.errors.is_empty(), "decoder errors: {:?}", got.errors);
    assert_eq!(
        got.payload_type,
        Some(102),
        "must use the viewer's payload type"
    );
    let first = got.first_frame_at.unwrap().duration_since(answered);
    assert!(
        first < Duration::from_secs(2),
        "first frame {first:?} after the answer"
    );
    // The first packet is SPS+PPS aggregated in front of the IDR.
    assert_eq!(got.first_packet_nals, vec![7, 8], "first packet NALs");

    let r = reqwest::Client::new()
        .delete(d.endpoint(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_viewers_a_late_joiner_and_the_viewer_cap() {
    let d = Daemon::start(&env_with(&[("CAMGATE__WEBRTC__MAX_VIEWERS", "10")]), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    // Different payload types per viewer: each must get its own.
    let mut viewers = Vec::new();
    for pt in [96u8, 97, 102, 109, 125] {
        viewers.push((pt, join(&d, pt).await));
    }
    for (pt, (v, _, _)) in &viewers {
        let got = v.wait_frames(15, Duration::from_secs(20)).await;
        assert!(
            got.frames >= 15,
            "viewer pt={pt} decoded {} frames",
            got.frames
        );
        assert_eq!(got.payload_type, Some(*pt));
    }
    let ssrcs: std::collections::HashSet<_> = viewers
        .iter()
        .map(|(_, (v, _, _))| v.decoded().ssrc)
        .collect();
    assert_eq!(ssrcs.len(), 5, "every viewer has its own SSRC");

    // A viewer joining 3 s later decodes its very first frame: SPS/PPS + IDR come first.
    tokio::time::sleep(Duration::from_secs(3)).await; // the scenario itself is "3 s later"
    let (late, _, answered) = join(&d, 98).await;
    let got = late.wait_frames(1, Duration::from_secs(5)).await;
    assert!(got.frames >= 1, "late joiner decoded nothing");
    assert_eq!(got.first_packet_nals, vec![7, 8]);
    assert!(
        got.errors.is_empty(),
        "late joiner decoder errors: {:?}",
        got.errors
    );
    assert!(got.first_frame_at.unwrap().duration_since(answered) < Duration::from_secs(2));

    // Fill the remaining slots (10 in all) with viewers that connect and never watch.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(join(&d, 102).await);
    }
    // Only connected viewers count against max_viewers (connecting ones have their own cap).
    let ten = support::wait::until("10 viewers connected", Duration::from_secs(15), || async {
        (d.stats().await["viewers"]["connected"] == 10).then_some(())
    })
    .await;
    assert!(ten.is_ok(), "{ten:?}: {}", d.stats().await);
    let eleventh = TestViewer::new(102).await;
    let offer = eleventh.offer(true).await;
    let (status, _, body) = whep_post(&d.endpoint("whep"), SDP, offer.clone()).await;
    assert_eq!(status, 503, "11th viewer: {body}");
    assert!(
        body.contains("max_viewers"),
        "rejection should name the limit: {body}"
    );

    // DELETE frees a slot for the next one.
    let (_, loc, _) = &idle[0];
    let r = reqwest::Client::new()
        .delete(d.endpoint(loc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _, body) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "slot not freed by DELETE: {body}");

    // Everyone already connected is still receiving.
    for (pt, (v, _, _)) in &viewers {
        let before = v.decoded().frames;
        let got = v.wait_frames(before + 10, Duration::from_secs(10)).await;
        assert!(
            got.frames >= before + 10,
            "viewer pt={pt} stalled at {}",
            got.frames
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_4xx_and_connected_viewers_keep_receiving() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let (v, _, _) = join(&d, 102).await;
    assert!(v.wait_frames(10, Duration::from_secs(20)).await.frames >= 10);

    let whep = d.endpoint("whep");
    let (s, _, body) = whep_post(&whep, SDP, "this is not sdp".into()).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("v=0"), "{body}");

    let vp8 = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
    let (s, _, body) = whep_post(&whep, SDP, vp8.into()).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("H.264"), "{body}");

    let (s, _, body) = whep_post(&whep, SDP, format!("v=0\r\n{}", "a=x\r\n".repeat(20_000))).await;
    assert_eq!(s, 413, "{body}");

    let (s, _, body) = whep_post(&whep, "text/plain", "v=0\r\n".into()).await;
    assert_eq!(s, 415, "{body}");
    assert!(body.contains("application/sdp"), "{body}");

    let r = reqwest::Client::new()
        .delete(d.endpoint("whep/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // PATCH to a path that cannot be a session id is answered as for an id that names no
    // session: 404 when a candidate needs the session, 204 for a fragment without one.
    for path in ["whep/nope", "whep/0123456789abcdef0123456789abcdef"] {
        let patch = |frag: &'static str| {
            reqwest::Client::new()
                .patch(d.endpoint(path))
                .header("content-type", "application/trickle-ice-sdpfrag")
                .body(frag)
                .send()
        };
        let r = patch("a=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n")
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            format!("no session {}\n", &path[5..])
        );
        let r = patch("a=end-of-candidates\r\n").await.unwrap();
        assert_eq!(r.status(), 204, "{path}");
    }

    // A CORS preflight from a page on another origin is answered without letting it in
    // (same origin only by default; tests/local_security.rs covers http.cors_origins).
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &whep)
        .header("origin", "http://example.invalid")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    let before = v.decoded().frames;
    let got = v.wait_frames(before + 15, Duration::from_secs(10)).await;
    assert!(
        got.frames >= before + 15,
        "viewer stalled after bad requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_joins_and_leaves_leave_nothing_behind() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let client = reqwest::Client::new();
    let mut answer_ms = Vec::new();
    let mut first_frame_ms = Vec::new();
    for _ in 0..10 {
        let v = TestViewer::new(102).await;
        let offer = v.offer(true).await;
        let t0 = Instant::now();
        let (status, location, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
        assert_eq!(status, 201, "{answer}");
        answer_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        v.accept_answer(&answer).await;
        let got = v.wait_frames(1, Duration::from_secs(10)).await;
        assert!(got.frames >= 1, "viewer decoded nothing");
        first_frame_ms.push(got.first_frame_at.unwrap().duration_since(t0).as_secs_f64() * 1000.0);
        let r = client
            .delete(d.endpoint(&location.unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        v.close().await;
    }
    let stats = d.stats().await;
    assert_eq!(
        stats["sessions"].as_array().unwrap().len(),
        0,
        "sessions left: {stats}"
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    eprintln!(
        "MEASURE local offer->answer median {:.1} ms, offer->first decoded frame median {:.1} ms (n=10)",
        median(&mut answer_ms),
        median(&mut first_frame_ms)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_the_daemon_within_two_seconds() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let (v, _, _) = join(&d, 102).await;
    assert!(v.wait_frames(5, Duration::from_secs(20)).await.frames >= 5);
    let (ok, took) = d.terminate();
    assert!(ok, "daemon exited with failure on SIGTERM");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

#[test]
fn bad_config_exits_non_zero_and_names_the_key() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_camgate"));
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("CAMGATE__") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        cmd.output().unwrap()
    };
    let out = run(
        &[("CAMGATE__SOURCE__KIND", "v4l")],
        &["run", "--listen", "127.0.0.1:0"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("source.kind") && err.contains("v4l") && err.contains("v4l2"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("camgate-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[source]\nwidth = \"abc\"\n").unwrap();
    let out = run(&[], &["check-config", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.width"), "{err}");

    let out = run(
        &[],
        &["check-config", "--config", "/nonexistent/camgate.toml"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/camgate.toml"));

    // A valid config prints the effective settings with secrets masked.
    std::fs::write(
        &file,
        "[source]\nkind = \"rtsp\"\nurl = \"rtsp://admin:hunter2@127.0.0.1/stream\"\n",
    )
    .unwrap();
    let out = run(&[], &["check-config", "--config", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("kind = \"rtsp\"") && !text.contains("hunter2"),
        "{text}"
    );
}

/// An IP camera on 127.0.0.1 serving 320x240@30 H.264 with a keyframe every `gop` frames.
fn h264_camera(gop: u32) -> support::rtsp::RtspServer {
    gstreamer::init().unwrap();
    support::rtsp::RtspServer::start(&format!(
        "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} \
         ! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    ))
}

/// An H.264 IP camera is relayed as is: no encoder in the daemon's pipeline, frames decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtsp_camera_is_passed_through_without_an_encoder() {
    let camera = h264_camera(30);
    let url = camera.url();
    let d = Daemon::start(
        &env_with(&[
            ("CAMGATE__SOURCE__KIND", "rtsp"),
            ("CAMGATE__SOURCE__URL", &url),
        ]),
        &[],
    );
    d.wait_healthy(Duration::from_secs(20)).await;
    let health: serde_json::Value = reqwest::get(d.endpoint("healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["passthrough"], true, "{health}");
    assert!(health["encoder"].is_null(), "no encoder expected: {health}");

    let (v, _, _) = join(&d, 102).await;
    let got = v.wait_frames(20, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 20,
        "decoded {} frames from the relayed camera\n{}",
        got.frames,
        d.log()
    );
    assert_eq!(
        (got.width, got.height),
        (320, 240),
        "camera's own size is kept"
    );
    assert!(got.errors.is_empty(), "{:?}", got.errors);
}

/// The camera goes away and comes back: health says why it is down, the viewer stays
/// connected through it and decodes again once the camera is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_survives_a_camera_outage() {
    let camera = h264_camera(15);
    let url = camera.url();
    let d = Daemon::start(
        &env_with(&[
            ("CAMGATE__SOURCE__KIND", "rtsp"),
            ("CAMGATE__SOURCE__URL", &url),
            ("CAMGATE__SOURCE__STALL_TIMEOUT_S", "2"),
        ]),
        &[],
    );
    d.wait_healthy(Duration::from_secs(20)).await;
    let (v, _, _) = join(&d, 102).await;
    assert!(v.wait_frames(10, Duration::from_secs(20)).await.frames >= 10);

    camera.take_down();
    // Health turns 503 with a reason a person can act on.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reason = loop {
        let r = client.get(d.endpoint("healthz")).send().await.unwrap();
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            break body["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "health never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason.contains("no video from the camera"), "{reason}");

    camera.bring_back();
    let before = v.decoded().frames;
    let got = v.wait_frames(before + 15, Duration::from_secs(30)).await;
    assert!(
        got.frames >= before + 15,
        "viewer did not get the stream back ({} -> {})\n{}",
        before,
        got.frames,
        d.log()
    );
    assert!(
        v.wait_connected(Duration::from_millis(10)).await,
        "viewer should have stayed connected"
    );
    d.wait_healthy(Duration::from_secs(10)).await;
}

/// A decoder that lost data sends PLI; the daemon answers with a fresh keyframe, and a burst
/// of requests is merged rather than turned into a burst of keyframes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pli_brings_a_fresh_keyframe_and_bursts_are_coalesced() {
    // Keyframes every 10 s on their own, so any keyframe within a second is ours.
    let d = Daemon::start(
        &env_with(&[("CAMGATE__ENCODER__KEYFRAME_INTERVAL_S", "10")]),
        &[],
    );
    d.wait_healthy(Duration::from_secs(15)).await;
    let (v, _, _) = join(&d, 102).await;
    assert!(v.wait_frames(10, Duration::from_secs(20)).await.frames >= 10);
    let k0 = v.decoded().keyframes;
    assert_eq!(k0, 1, "one keyframe at join");

    v.send_pli().await;
    support::wait::until_true(
        "a keyframe within 2 s of a PLI",
        Duration::from_secs(2),
        || {
            let more = v.decoded().keyframes > k0;
            async move { more }
        },
    )
    .await
    .unwrap();

    // Ten PLIs at once: what reaches the encoder (camgate_keyframes_forced_total; the test
    // pattern's x264enc honours every request) is one keyframe now, or at the end of the
    // merge window, and at most one more when that window ends.
    let f1 = keyframes_forced(&d).await;
    let k1 = v.decoded().keyframes;
    for _ in 0..10 {
        v.send_pli().await;
    }
    support::wait::until_true(
        "the daemon counted all 11 PLIs",
        Duration::from_secs(5),
        || {
            let stats = d.stats();
            async move { stats.await["sessions"][0]["keyframe_requests"] == 11 }
        },
    )
    .await
    .unwrap();
    support::wait::until_true(
        "the burst forced a keyframe",
        Duration::from_secs(2),
        || {
            let forced = keyframes_forced(&d);
            async move { forced.await > f1 }
        },
    )
    .await
    .unwrap();
    // Nothing to await for "no third one": a merged follow-up comes at most one window
    // (DEFAULT_REPAIR_INTERVAL) after the previous forced keyframe, so wait for it up to twice
    // that, then count.
    let window = camgate::session::keyframe::DEFAULT_REPAIR_INTERVAL * 2;
    let _ = support::wait::until_true("a merged follow-up keyframe", window, || {
        let forced = keyframes_forced(&d);
        async move { forced.await >= f1 + 2 }
    })
    .await;
    let burst = keyframes_forced(&d).await - f1;
    assert!((1..=2).contains(&burst), "10 PLIs forced {burst} keyframes");
    support::wait::until_true(
        "the viewer decoded the burst's keyframe",
        Duration::from_secs(2),
        || {
            let more = v.decoded().keyframes > k1;
            async move { more }
        },
    )
    .await
    .unwrap();
}

/// `camgate_keyframes_forced_total` from `/metrics`: merged keyframe requests the encoder took.
async fn keyframes_forced(d: &Daemon) -> u64 {
    let text = reqwest::get(d.endpoint("metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix("camgate_keyframes_forced_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no camgate_keyframes_forced_total in /metrics:\n{text}"))
}

/// Not a test on its own: the body of a viewer *process* that
/// `a_vanished_viewer_is_dropped_and_its_slot_freed` starts and then kills with SIGKILL, so the
/// daemon gets no goodbye of any kind (no DELETE, no DTLS close), as with a crashed app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process; run by a_vanished_viewer_is_dropped_and_its_slot_freed"]
async fn viewer_process() {
    let whep = std::env::var("CAMGATE_TEST_WHEP").expect("CAMGATE_TEST_WHEP");
    let v = TestViewer::new(102).await;
    let offer = v.offer(true).await;
    let (status, _, answer) = whep_post(&whep, SDP, offer).await;
    assert_eq!(status, 201);
    v.accept_answer(&answer).await;
    assert!(v.wait_frames(5, Duration::from_secs(20)).await.frames >= 5);
    println!("VIEWER-DECODING");
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_viewer_is_dropped_and_its_slot_freed() {
    use std::io::{BufRead, BufReader};
    let d = Daemon::start(&env_with(&[("CAMGATE__WEBRTC__MAX_VIEWERS", "1")]), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["viewer_process", "--exact", "--ignored", "--nocapture"])
        .env("CAMGATE_TEST_WHEP", d.endpoint("whep"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let decoding = lines.any(|l| l.map(|l| l.contains("VIEWER-DECODING")).unwrap_or(false));
    assert!(decoding, "viewer process never decoded");

    // The slot is taken...
    let other = TestViewer::new(102).await;
    let offer = other.offer(true).await;
    let (status, _, _) = whep_post(&d.endpoint("whep"), SDP, offer.clone()).await;
    assert_eq!(status, 503);

    // ...until the viewer vanishes without a word and ICE gives up on it.
    child.kill().unwrap();
    let _ = child.wait();
    let gone = Instant::now();
    loop {
        let stats = d.stats().await;
        if stats["sessions"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(30),
            "session still alive 30 s after the viewer vanished: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "MEASURE vanished viewer dropped after {:.1} s",
        gone.elapsed().as_secs_f64()
    );
    let (status, _, body) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "slot not freed: {body}");
}

/// A viewer that hangs up (`RTCPeerConnection.close()`, which sends DTLS close_notify) but
/// never DELETEs its resource, as players other than our page and every KVS viewer do: its
/// slot is free within a second, not after ICE gives up on it (5 s disconnected + 10 s
/// failed), so the next viewer of a one-viewer camera gets in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_that_hangs_up_frees_its_slot_at_once() {
    let d = Daemon::start(&env_with(&[("CAMGATE__WEBRTC__MAX_VIEWERS", "1")]), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let (v, _location, _) = join(&d, 102).await;
    assert!(v.wait_frames(5, Duration::from_secs(20)).await.frames >= 5);
    let up = support::wait::until("viewer connected", Duration::from_secs(10), || async {
        (d.stats().await["viewers"]["connected"] == 1).then_some(())
    })
    .await;
    assert!(up.is_ok(), "{up:?}: {}", d.stats().await);

    v.close().await;
    let closed = Instant::now();
    // Well inside ICE's 5 s "disconnected": only the close itself can end the session this soon.
    let gone = support::wait::until("session ended", Duration::from_secs(3), || async {
        d.stats().await["sessions"]
            .as_array()
            .is_some_and(|s| s.is_empty())
            .then_some(())
    })
    .await;
    assert!(
        gone.is_ok(),
        "session still there 3 s after the viewer closed: {}\n{}",
        d.stats().await,
        d.log()
    );
    eprintln!(
        "MEASURE closed viewer's session ended after {} ms",
        closed.elapsed().as_millis()
    );
    assert!(
        d.log().contains("viewer closed the connection"),
        "session ended for another reason:\n{}",
        d.log()
    );
    // The slot is free: the next viewer gets in and decodes.
    let (next, _, _) = join(&d, 102).await;
    assert!(next.wait_frames(5, Duration::from_secs(20)).await.frames >= 5);
    next.close().await;
}

/// (open fds, threads, RSS in KiB) of a process, from /proc.
fn proc_usage(pid: u32) -> (usize, usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (fds, field("Threads:") as usize, field("VmRSS:"))
}

/// A hundred viewers come and go: every socket, task and byte they used is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_joins_and_leaves_leak_no_sockets_threads_or_memory() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let client = reqwest::Client::new();
    let cycle = || async {
        let v = TestViewer::new(102).await;
        let offer = v.offer(true).await;
        let (status, location, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
        assert_eq!(status, 201, "{answer}");
        v.accept_answer(&answer).await;
        assert!(
            v.wait_connected(Duration::from_secs(10)).await,
            "viewer did not connect"
        );
        let r = client
            .delete(d.endpoint(&location.unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        v.close().await;
    };
    // Warm up allocator pools and lazily started threads before taking the baseline.
    for _ in 0..10 {
        cycle().await;
    }
    let (fd0, th0, rss0) = proc_usage(d.pid());
    let started = Instant::now();
    for _ in 0..100 {
        cycle().await;
    }
    let (fd1, th1, rss1) = proc_usage(d.pid());
    eprintln!(
        "MEASURE 100 join/leave cycles in {:.1} s: fds {fd0}->{fd1}, threads {th0}->{th1}, RSS {} -> {} KiB",
        started.elapsed().as_secs_f64(),
        rss0,
        rss1
    );
    let stats = d.stats().await;
    assert_eq!(stats["sessions"].as_array().unwrap().len(), 0, "{stats}");
    assert!(fd1 <= fd0 + 4, "file descriptors grew from {fd0} to {fd1}");
    assert!(th1 <= th0 + 4, "threads grew from {th0} to {th1}");
    assert!(
        rss1 < rss0 + 16 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
}

/// An offer shaped like Alexa's (reference §5.5: audio + video, H.264 on PT 99 with no fmtp,
/// port 1, static audio payload types, CRLF) is answered with exactly one H.264 payload type
/// carrying an explicit packetization-mode=1 fmtp, the offer's mids, and our candidates. The
/// offer's own candidates are left out so no connectivity check leaves the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alexa_shaped_offer_gets_a_well_formed_answer() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let offer = [
        "v=0",
        "o=- 1234567890 1234567890 IN IP4 0.0.0.0",
        "s=a 2 z",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=group:BUNDLE audio0 video0",
        "m=audio 1 UDP/TLS/RTP/SAVPF 96 0 8",
        "a=setup:actpass",
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=sendrecv",
        "a=mid:audio0",
        "a=ssrc:3735928559 cname:user1@host-0a1b2c3d",
        "a=ice-ufrag:AbCd",
        "a=ice-pwd:0123456789abcdefghijkl",
        "a=fingerprint:sha-256 12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0",
        "m=video 1 UDP/TLS/RTP/SAVPF 99",
        "b=AS:2500",
        "a=setup:actpass",
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=rtpmap:99 H264/90000",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=sendrecv",
        "a=mid:video0",
        "a=rtcp-fb:99 nack",
        "a=rtcp-fb:99 nack pli",
        "a=rtcp-fb:99 ccm fir",
        "a=ssrc:3735928560 cname:user1@host-0a1b2c3d",
        "a=ice-ufrag:AbCd",
        "a=ice-pwd:0123456789abcdefghijkl",
        "a=fingerprint:sha-256 12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0",
        "",
    ]
    .join("\r\n");
    let (status, location, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "{answer}");
    let video = answer.split("m=video").nth(1).unwrap_or_default();
    assert!(
        video.trim_start().starts_with(|c: char| c.is_ascii_digit()),
        "{answer}"
    );
    let m_line = format!("m=video{}", video.lines().next().unwrap_or_default());
    assert!(
        m_line.trim_end().ends_with(" 99"),
        "exactly PT 99 in {m_line}"
    );
    assert!(
        video
            .contains("a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id="),
        "explicit fmtp expected:\n{answer}"
    );
    assert!(video.contains("a=mid:video0"), "{answer}");
    assert!(answer.contains("a=group:BUNDLE audio0 video0"), "{answer}");
    assert!(answer.contains("a=setup:active"), "{answer}");
    assert!(!answer.contains("a=ice-options:trickle"), "{answer}");
    assert!(
        video.contains("a=sendonly"),
        "a camera answers video sendonly:\n{answer}"
    );
    // Audio is answered (Opus, the test tone, no talkback in this daemon) in the BUNDLE, and
    // both sections carry the candidates.
    let audio = answer.split("m=video").next().unwrap_or_default();
    assert!(
        audio.contains("m=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"),
        "{answer}"
    );
    assert!(
        audio.contains("a=sendonly") && audio.contains("a=mid:audio0"),
        "{answer}"
    );
    assert!(
        audio.contains("a=candidate:") && video.contains("a=candidate:"),
        "candidates in every section:\n{answer}"
    );
    let r = reqwest::Client::new()
        .delete(d.endpoint(&location.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
