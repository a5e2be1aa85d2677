//! The GOP cache end to end: an IP camera (gst-rtsp-server) with a 4 s GOP passed through the
//! real daemon in local mode. A viewer that joins mid-GOP must not wait for the camera's next
//! IDR: it decodes its first picture from the cached GOP, then the live stream.
//!
//! `measure_passthrough_first_frame` (ignored; run by `scripts/measure-gop.sh`) prints offer
//! → first decoded frame for viewers joining at spread-out points of the GOP, for whichever
//! binary `CAMGATE_BIN` names.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, test_env, whep_post};
use support::rtsp::RtspServer;
use support::viewer::TestViewer;
use support::wait::until_true;

const SDP: &str = "application/sdp";

/// An IP camera on 127.0.0.1: 320x240@30 H.264, an IDR every 4 s (120 frames), and a probe
/// that records when each IDR left the encoder.
fn camera_with_4s_gop() -> RtspServer {
    gstreamer::init().unwrap();
    RtspServer::start(
        "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=120 bitrate=1000 \
         ! video/x-h264,profile=constrained-baseline ! identity name=keyframes \
         ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
    )
}

fn daemon_for(camera: &RtspServer, extra: &[(&str, &str)]) -> Daemon {
    let mut env = test_env();
    env.push(("CAMGATE__SOURCE__KIND".into(), "rtsp".into()));
    env.push(("CAMGATE__SOURCE__URL".into(), camera.url()));
    env.push(("CAMGATE__AUDIO__SOURCE".into(), "none".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Daemon::start(&env, &[])
}

/// Offers, POSTs, applies the answer; returns the viewer and when the offer was posted.
async fn join(d: &Daemon) -> (TestViewer, Instant) {
    let v = TestViewer::new(102).await;
    let offer = v.offer(true).await;
    let posted = Instant::now();
    let (status, _, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "WHEP POST failed: {answer}\n{}", d.log());
    v.accept_answer(&answer).await;
    (v, posted)
}

/// Waits until the camera's last IDR is at least `into` old (and the daemon has frames), so
/// a viewer joining now joins mid-GOP. Returns that IDR's time.
async fn mid_gop(camera: &RtspServer, d: &Daemon, into: Duration) -> Instant {
    until_true(
        "the camera to be `into` past an IDR",
        Duration::from_secs(15),
        move || async move {
            let last = camera.keyframe_times().last().copied();
            last.is_some_and(|t| t.elapsed() >= into && t.elapsed() < into + Duration::from_secs(1))
                && d.stats().await["frames_published"].as_u64() > Some(0)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    camera.keyframe_times().last().copied().unwrap()
}

/// The camera's first IDR after `t`, if it has produced one yet.
fn next_idr_after(camera: &RtspServer, t: Instant) -> Option<Instant> {
    camera.keyframe_times().into_iter().find(|k| *k > t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_joining_mid_gop_decodes_before_the_cameras_next_idr() {
    let camera = camera_with_4s_gop();
    let d = daemon_for(&camera, &[]);
    d.wait_healthy(Duration::from_secs(20)).await;

    let last_idr = mid_gop(&camera, &d, Duration::from_secs(1)).await;
    let (v, joined) = join(&d).await;
    assert!(
        v.wait_connected(Duration::from_secs(10)).await,
        "viewer did not connect\n{}",
        d.log()
    );
    // From here on nothing but the next IDR could start a viewer without the cache. Taken
    // after connecting (not at the offer) so that a slow connection on a loaded machine
    // cannot make the test fail: ordering, not timing.
    let connected = Instant::now();
    let got = v.wait_frames(1, Duration::from_secs(15)).await;
    let first = got
        .first_frame_at
        .unwrap_or_else(|| panic!("no frame decoded\n{}", d.log()));
    let next_idr = next_idr_after(&camera, connected);
    assert!(
        next_idr.is_none_or(|idr| first < idr),
        "offer {} ms after an IDR, connected {} ms after the offer, first frame {} ms after \
         connecting, the camera's next IDR {:?} ms after connecting: the viewer waited for it\n{}",
        joined.duration_since(last_idr).as_millis(),
        connected.duration_since(joined).as_millis(),
        first.duration_since(connected).as_millis(),
        next_idr.map(|i| i.duration_since(connected).as_millis()),
        d.log()
    );
    assert!(
        got.keyframes >= 1,
        "the first frame came with SPS/PPS: {got:?}"
    );

    // Then the catch-up hands over to the live stream: frames keep decoding, without decoder
    // errors, across the camera's next IDR.
    let before = v.decoded().frames;
    let got = v.wait_frames(before + 150, Duration::from_secs(20)).await;
    assert!(
        got.frames >= before + 150,
        "decoded {} frames after the first\n{}",
        got.frames,
        d.log()
    );
    assert!(got.errors.is_empty(), "decoder errors: {:?}", got.errors);
    assert!(next_idr_after(&camera, connected).is_some());
    let stats = d.stats().await;
    assert!(
        stats["gop_cache"]["frames"].as_u64() >= Some(1),
        "/stats shows the cache: {stats}"
    );
}

/// With the cache off, the same viewer waits for the camera's next IDR: what the cache saves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_cache_a_viewer_waits_for_the_next_idr() {
    let camera = camera_with_4s_gop();
    let d = daemon_for(&camera, &[("CAMGATE__WEBRTC__GOP_CACHE_KB", "0")]);
    d.wait_healthy(Duration::from_secs(20)).await;

    mid_gop(&camera, &d, Duration::from_secs(1)).await;
    let (v, _) = join(&d).await;
    assert!(v.wait_connected(Duration::from_secs(10)).await);
    let connected = Instant::now();
    let got = v.wait_frames(1, Duration::from_secs(15)).await;
    let first = got
        .first_frame_at
        .unwrap_or_else(|| panic!("no frame decoded\n{}", d.log()));
    let next_idr = next_idr_after(&camera, connected);
    assert!(
        next_idr.is_some_and(|idr| first > idr),
        "first frame {} ms after connecting, next IDR {:?}",
        first.duration_since(connected).as_millis(),
        next_idr.map(|i| i.duration_since(connected).as_millis()),
    );
    assert!(d.stats().await["gop_cache"].is_null());
}

/// Figures, not assertions: offer → first decoded frame for viewers joining at 0.5, 1.5, 2.5
/// and 3.5 s into the 4 s GOP, twice each. Prints one `RESULT` line.
/// `CAMGATE_MEASURE_GOP_CACHE_KB` sets `webrtc.gop_cache_kb` (0: the same binary without the
/// cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run by scripts/measure-gop.sh"]
async fn measure_passthrough_first_frame() {
    let camera = camera_with_4s_gop();
    let kb = std::env::var("CAMGATE_MEASURE_GOP_CACHE_KB").ok();
    let extra: Vec<(&str, &str)> = kb
        .as_deref()
        .map(|kb| ("CAMGATE__WEBRTC__GOP_CACHE_KB", kb))
        .into_iter()
        .collect();
    let d = daemon_for(&camera, &extra);
    d.wait_healthy(Duration::from_secs(20)).await;
    let mut ms = Vec::new();
    for round in 0..8u64 {
        let into = Duration::from_millis(500 + 1000 * (round % 4));
        mid_gop(&camera, &d, into).await;
        let (v, joined) = join(&d).await;
        let got = v.wait_frames(1, Duration::from_secs(15)).await;
        let Some(first) = got.first_frame_at else {
            panic!("no frame decoded\n{}", d.log());
        };
        let took = first.duration_since(joined).as_millis() as u64;
        println!(
            "join {} ms into the GOP: first frame {took} ms",
            into.as_millis()
        );
        ms.push(took);
        v.close().await;
    }
    ms.sort_unstable();
    let median = (ms[3] + ms[4]) / 2;
    println!(
        "RESULT first_frame_ms median={median} min={} max={} all={ms:?}",
        ms[0], ms[7]
    );
}

/// Figures, not assertions: how Chromium plays a viewer that joins 2.5 s into the 4 s GOP
/// (`tests/browser/gop-playout.mjs`): first frame, and how long it then holds each frame
/// (how far behind live it plays). Prints one `RESULT` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run by scripts/measure-gop.sh"]
async fn measure_browser_playout() {
    let camera = camera_with_4s_gop();
    // With sound, as a browser viewer gets it: lip sync is what a wrong timeline would upset.
    let d = daemon_for(&camera, &[("CAMGATE__AUDIO__SOURCE", "test")]);
    d.wait_healthy(Duration::from_secs(20)).await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/gop-playout.mjs");
    let mut results = Vec::new();
    for _ in 0..3 {
        mid_gop(&camera, &d, Duration::from_millis(2500)).await;
        let (script, url) = (script.clone(), d.url.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("node")
                .arg(script)
                .arg(url)
                .output()
                .expect("run node")
        })
        .await
        .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("run: {line}");
        results.push(line);
    }
    println!("RESULT {}", results.join(" "));
}
