//! Capture against real GStreamer: a live test source encoded with x264enc, an in-process
//! RTSP server passed through without re-encoding, a looping file, and the failure paths
//! (server gone, stalled source, missing camera, bad URL). Every wait is bounded.

mod support;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use camgate::media::{
    AccessUnit, Capture, CaptureOptions, CaptureState, EncoderSpec, RtspTransport, SourceSpec,
    V4l2Format,
};
use gstreamer as gst;
use gstreamer::prelude::*;
use support::rtsp::RtspServer;

use support::gst::{collector, init};

/// Waits for `n` AUs, failing the test after `timeout`.
fn take(rx: &Receiver<AccessUnit>, n: usize, timeout: Duration) -> Vec<AccessUnit> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(au) => out.push(au),
            Err(_) => panic!("only {} of {n} access units within {timeout:?}", out.len()),
        }
    }
    out
}

fn drain(rx: &Receiver<AccessUnit>) {
    while rx.try_recv().is_ok() {}
}

/// Waits (bounded, [`support::wait`]) until `cond` holds; fails the test otherwise.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    if let Err(e) = support::wait::until_blocking(what, timeout, || cond().then_some(())) {
        panic!("{e}");
    }
}

/// NAL unit types in an Annex-B access unit.
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            types.push(data[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

/// Decodes AUs with avdec_h264 in a separate pipeline; returns (frames decoded, width, height).
fn decode(aus: &[AccessUnit]) -> (usize, i32, i32) {
    let (pipeline, src, out) = support::gst::app_pipeline(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au \
         ! h264parse ! avdec_h264 ! appsink name=out sync=false",
        "out",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let first = aus[0].pts_ns;
    for au in aus {
        let mut buf = au.buffer.copy();
        buf.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(au.pts_ns - first));
        src.push_buffer(buf).unwrap();
    }
    src.end_of_stream().unwrap();
    let (mut frames, mut w, mut h) = (0, 0, 0);
    while let Some(sample) = out.try_pull_sample(gst::ClockTime::from_seconds(5)) {
        let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(s.name(), "video/x-raw");
        w = s.get::<i32>("width").unwrap();
        h = s.get::<i32>("height").unwrap();
        frames += 1;
    }
    let bus = pipeline.bus().unwrap();
    assert!(
        bus.pop_filtered(&[gst::MessageType::Error]).is_none(),
        "decoder reported an error"
    );
    pipeline.set_state(gst::State::Null).unwrap();
    (frames, w, h)
}

fn test_options(width: u32, height: u32, encoder: &str) -> CaptureOptions {
    CaptureOptions {
        source: SourceSpec::Test {
            pattern: "ball".into(),
        },
        width,
        height,
        framerate: 30,
        encoder: EncoderSpec {
            name: encoder.into(),
            bitrate_kbps: 1000,
            // Long GOP so that an IDR after a request can only come from the request.
            keyframe_interval_s: 10,
        },
        ..CaptureOptions::default()
    }
}

#[test]
fn test_source_with_x264_delivers_decodable_aus_and_honours_keyframe_requests() {
    init();
    let (sink, rx) = collector();
    let t0 = Instant::now();
    let capture = Capture::start(test_options(640, 480, "x264enc"), sink).unwrap();
    let first = take(&rx, 1, Duration::from_secs(5));
    let first_au = t0.elapsed();
    let mut aus = first;
    aus.extend(take(&rx, 29, Duration::from_secs(5)));
    let thirty = t0.elapsed();

    let types = nal_types(&aus[0].map().unwrap());
    assert!(aus[0].keyframe, "first AU must be a keyframe");
    assert!(
        types.contains(&7) && types.contains(&8) && types.contains(&5),
        "{types:?}"
    );
    assert!(aus[1..].iter().any(|a| !a.keyframe));
    assert!(
        aus.windows(2).all(|w| w[1].pts_ns > w[0].pts_ns),
        "PTS not increasing"
    );
    let (frames, w, h) = decode(&aus);
    assert!(frames >= 28, "decoded {frames} of 30");
    assert_eq!((w, h), (640, 480));

    let status = capture.status();
    assert_eq!(status.state, CaptureState::Running);
    assert_eq!(status.encoder.as_deref(), Some("x264enc"));
    assert!(!status.passthrough && status.keyframe_requests_supported);
    assert_eq!((status.width, status.height), (Some(640), Some(480)));
    assert!(status.frames >= 30);
    assert!(status.last_frame_age.unwrap() < Duration::from_secs(1));

    // Keyframe on request: within 10 frames, with SPS/PPS inline.
    let mut latencies = Vec::new();
    for _ in 0..3 {
        take(&rx, 5, Duration::from_secs(2));
        drain(&rx);
        let asked = Instant::now();
        capture.request_keyframe();
        let mut waited = 0;
        loop {
            let au = take(&rx, 1, Duration::from_secs(2)).remove(0);
            waited += 1;
            if au.keyframe {
                let types = nal_types(&au.map().unwrap());
                assert!(types.contains(&7) && types.contains(&8), "{types:?}");
                latencies.push((asked.elapsed(), waited));
                break;
            }
            assert!(waited < 10, "no keyframe within 10 AUs of the request");
        }
    }
    let t = Instant::now();
    capture.stop();
    let stop = t.elapsed();
    println!(
        "x264enc 640x480@30: first AU after {first_au:?}, 30 AUs after {thirty:?}, \
         keyframe request -> IDR {latencies:?} (time, AUs), stop {stop:?}"
    );
    assert!(stop < Duration::from_secs(2));
}

#[test]
fn openh264_is_selectable_and_delivers() {
    init();
    // Debian 12's gstreamer1.0-plugins-bad ships openh264enc (with libopenh264-7), and
    // scripts/install-deps.sh installs it: a missing element is a broken setup, not a skip.
    assert!(
        gst::ElementFactory::find("openh264enc").is_some(),
        "openh264enc is not installed: run scripts/install-deps.sh --test \
         (gstreamer1.0-plugins-bad, libopenh264-7)"
    );
    let (sink, rx) = collector();
    let capture = Capture::start(test_options(320, 240, "openh264enc"), sink).unwrap();
    let aus = take(&rx, 15, Duration::from_secs(5));
    assert!(aus[0].keyframe);
    assert_eq!(decode(&aus).1, 320);
    drain(&rx);
    capture.request_keyframe();
    let aus = take(&rx, 10, Duration::from_secs(2));
    assert!(
        aus.iter().any(|a| a.keyframe),
        "openh264enc ignored the keyframe request"
    );
    assert_eq!(capture.status().encoder.as_deref(), Some("openh264enc"));
    capture.stop();
}

const SERVED: &str = "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline \
    ! valve name=v drop=false ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

fn rtsp_options(url: String) -> CaptureOptions {
    CaptureOptions {
        source: SourceSpec::Rtsp {
            url,
            transport: RtspTransport::Tcp,
            username: None,
            password: None,
            latency_ms: 0,
        },
        stall_timeout: Duration::from_secs(2),
        startup_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        ..CaptureOptions::default()
    }
}

#[test]
fn rtsp_h264_is_passed_through_without_an_encoder() {
    init();
    let server = RtspServer::start(SERVED);
    let (sink, rx) = collector();
    let t0 = Instant::now();
    let capture = Capture::start(rtsp_options(server.url()), sink).unwrap();
    let mut aus = take(&rx, 1, Duration::from_secs(10));
    let first_au = t0.elapsed();
    aus.extend(take(&rx, 29, Duration::from_secs(5)));
    println!(
        "rtsp passthrough: first AU after {first_au:?}, 30 AUs after {:?}",
        t0.elapsed()
    );
    assert!(aus[0].keyframe, "passthrough must start at an IDR");
    let types = nal_types(&aus[0].map().unwrap());
    assert!(types.contains(&7) && types.contains(&8), "{types:?}");
    let (frames, w, h) = decode(&aus);
    assert!(frames >= 28, "decoded {frames}");
    assert_eq!((w, h), (320, 240));

    let status = capture.status();
    assert!(status.passthrough);
    assert_eq!(status.encoder, None);
    assert!(!status.keyframe_requests_supported);
    let elements = capture.pipeline_elements();
    assert!(elements.iter().any(|e| e == "rtspsrc"), "{elements:?}");
    assert!(elements.iter().any(|e| e == "rtph264depay"), "{elements:?}");
    for e in &elements {
        assert!(
            !e.ends_with("enc") && !e.starts_with("avdec"),
            "{e} in {elements:?}"
        );
    }
    capture.request_keyframe();
    assert_eq!(capture.status().keyframe_requests_ignored, 1);
    let t = Instant::now();
    capture.stop();
    println!("rtsp passthrough: stop took {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn rtsp_server_outage_restarts_with_backoff_and_recovers_into_the_same_sink() {
    init();
    let server = RtspServer::start(SERVED);
    let (sink, rx) = collector();
    let capture = Capture::start(rtsp_options(server.url()), sink).unwrap();
    let before = take(&rx, 10, Duration::from_secs(10));

    server.take_down();
    wait_for(
        "restarts while the server is down",
        Duration::from_secs(15),
        || capture.status().restarts >= 3,
    );
    let status = capture.status();
    let err = status.last_error.clone().unwrap_or_default();
    assert!(!err.is_empty());
    println!(
        "while down: restarts={} state={:?} last_error={err}",
        status.restarts, status.state
    );
    drain(&rx);

    server.bring_back();
    let t = Instant::now();
    let aus = take(&rx, 10, Duration::from_secs(15));
    println!("recovered {:?} after the server came back", t.elapsed());
    assert!(aus[0].keyframe);
    // A new RTSP session restarts the stream clock; viewers must still see time move on.
    assert!(
        aus[0].pts_ns > before[9].pts_ns,
        "PTS went backwards across the restart"
    );
    assert!(decode(&aus).0 >= 9);
    wait_for("Running state", Duration::from_secs(2), || {
        capture.status().state == CaptureState::Running
    });
    capture.stop();
}

#[test]
fn stalled_source_is_restarted() {
    init();
    let server = RtspServer::start(SERVED);
    let (sink, rx) = collector();
    let capture = Capture::start(rtsp_options(server.url()), sink).unwrap();
    take(&rx, 10, Duration::from_secs(10));

    // The camera keeps the connection but sends nothing.
    server.set_quiet(true);
    let t = Instant::now();
    wait_for("a stall restart", Duration::from_secs(10), || {
        capture.status().restarts >= 1
    });
    println!("stall detected after {:?}", t.elapsed());
    let err = capture.status().last_error.unwrap();
    assert!(err.contains("no access unit"), "{err}");

    server.set_quiet(false);
    drain(&rx);
    take(&rx, 10, Duration::from_secs(15));
    capture.stop();
}

#[test]
fn looping_file_keeps_delivering_past_its_end() {
    init();
    let dir = std::env::temp_dir().join(format!("camgate-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clip.mp4");
    // 1 s of video, and of AAC audio (which the video capture must leave undecoded: the
    // audio capture reads it).
    let writer = gst::parse::launch(&format!(
        "videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc ! h264parse ! mp4mux name=mux ! filesink location=\"{}\" \
         audiotestsrc num-buffers=47 samplesperbuffer=1024 ! audioconvert ! avenc_aac ! aacparse ! mux.",
        path.display()
    ))
    .unwrap();
    writer.set_state(gst::State::Playing).unwrap();
    let msg = writer
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("file writer timed out");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)));
    writer.set_state(gst::State::Null).unwrap();

    let (sink, rx) = collector();
    let opts = CaptureOptions {
        source: SourceSpec::File {
            path: path.clone(),
            looping: true,
        },
        width: 320,
        height: 240,
        framerate: 30,
        encoder: EncoderSpec {
            name: "x264enc".into(),
            ..EncoderSpec::default()
        },
        ..CaptureOptions::default()
    };
    let capture = Capture::start(opts, sink).unwrap();
    // 2.5 loops of a 30-frame file.
    let aus = take(&rx, 75, Duration::from_secs(10));
    assert!(
        aus.windows(2).all(|w| w[1].pts_ns > w[0].pts_ns),
        "PTS went backwards"
    );
    let span = aus[74].pts_ns - aus[0].pts_ns;
    assert!(span > 2_000_000_000, "75 AUs span only {span} ns");
    let status = capture.status();
    assert_eq!(status.restarts, 0, "looping must not count as a failure");
    assert!(decode(&aus).0 >= 70);
    let elements = capture.pipeline_elements();
    assert!(
        !elements.iter().any(|e| e.contains("aac") || e == "faad"),
        "the video capture decodes the file's audio too: {elements:?}"
    );
    capture.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_camera_is_retried_with_a_clear_error() {
    init();
    let (sink, _rx) = collector();
    let opts = CaptureOptions {
        source: SourceSpec::V4l2 {
            device: "/dev/video-camgate-missing".into(),
            format: V4l2Format::Raw,
        },
        backoff_min: Duration::from_millis(50),
        ..CaptureOptions::default()
    };
    let capture = Capture::start(opts, sink).unwrap();
    wait_for("restarts", Duration::from_secs(5), || {
        capture.status().restarts >= 2
    });
    let status = capture.status();
    let err = status.last_error.unwrap();
    assert!(
        err.contains("/dev/video-camgate-missing") && err.contains("no such device"),
        "{err}"
    );
    assert!(matches!(
        status.state,
        CaptureState::Restarting { .. } | CaptureState::Starting
    ));
    let t = Instant::now();
    capture.stop();
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn bad_rtsp_urls_fail_or_retry_clearly() {
    init();
    for url in [
        "http://127.0.0.1/x",
        "rtsp://",
        "camera",
        "rtsp://user:secret@/x",
    ] {
        let (sink, _rx) = collector();
        let err = Capture::start(rtsp_options(url.into()), sink)
            .err()
            .unwrap_or_else(|| panic!("{url} accepted"));
        let text = err.to_string();
        assert!(text.contains("RTSP URL"), "{text}");
        assert!(!text.contains("secret"), "password leaked: {text}");
    }
    // Well formed but nobody listens: start succeeds, the supervisor retries, and the error it
    // reports comes from the RTSP source, says it could not connect, and carries no password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (sink, rx) = collector();
    let capture = Capture::start(
        rtsp_options(format!("rtsp://user:secret@127.0.0.1:{port}/x")),
        sink,
    )
    .unwrap();
    wait_for("restarts", Duration::from_secs(10), || {
        capture.status().restarts >= 2
    });
    let status = capture.status();
    let err = status.last_error.expect("a retrying capture reports why");
    assert!(!err.contains("secret"), "password leaked: {err}");
    assert!(
        err.contains("GstRTSPSrc"),
        "the error does not point at the RTSP source: {err}"
    );
    assert!(
        ERR_UNREACHABLE
            .iter()
            .any(|w| err.to_lowercase().contains(w)),
        "the error does not say the camera is unreachable: {err}"
    );
    assert!(
        matches!(
            status.state,
            CaptureState::Restarting { .. } | CaptureState::Starting
        ),
        "{:?}",
        status.state
    );
    assert!(rx.try_recv().is_err(), "no access unit from nowhere");
    capture.stop();
}

/// How rtspsrc words an unreachable camera (GStreamer 1.22: "Could not open resource for
/// reading and writing. (Failed to connect. …)").
const ERR_UNREACHABLE: &[&str] = &["failed to connect", "could not open", "refused"];

#[test]
fn configuration_mistakes_fail_at_start() {
    init();
    let (sink, _rx) = collector();
    let err = Capture::start(test_options(640, 480, "nvh264enc"), sink.clone())
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("nvh264enc") && text.contains("x264enc"),
        "{text}"
    );

    let mut opts = test_options(640, 480, "auto");
    opts.source = SourceSpec::Test {
        pattern: "no-such-pattern".into(),
    };
    let err = Capture::start(opts, sink.clone()).err().unwrap();
    assert!(err.to_string().contains("no-such-pattern"), "{err}");

    let err = Capture::start(test_options(641, 480, "auto"), sink)
        .err()
        .unwrap();
    assert!(err.to_string().contains("641x480"), "{err}");
}

#[test]
fn rtsp_stream_that_is_not_h264_is_reported() {
    init();
    let server = RtspServer::start(
        "( videotestsrc is-live=true ! video/x-raw,format=I420,width=160,height=120,framerate=15/1 \
         ! jpegenc ! rtpjpegpay name=pay0 pt=26 )",
    );
    let (sink, rx) = collector();
    let capture = Capture::start(rtsp_options(server.url()), sink).unwrap();
    wait_for("a restart", Duration::from_secs(10), || {
        capture.status().restarts >= 1
    });
    let err = capture.status().last_error.unwrap();
    assert!(err.contains("not H.264") && err.contains("JPEG"), "{err}");
    assert!(rx.try_recv().is_err(), "JPEG must not reach the sink");
    capture.stop();
}

#[test]
fn encoder_selection_prefers_hardware_and_names_what_is_missing() {
    use camgate::media::select_encoder;
    // What `encoder = "auto"` picks given what each kind of machine has installed.
    let machines: [(&str, &[&str], Option<&str>); 7] = [
        (
            "Raspberry Pi",
            &["v4l2h264enc", "x264enc", "openh264enc"],
            Some("v4l2h264enc"),
        ),
        (
            "Jetson",
            &["nvv4l2h264enc", "x264enc", "openh264enc"],
            Some("nvv4l2h264enc"),
        ),
        (
            "VA-API desktop",
            &["vaapih264enc", "vah264enc", "x264enc"],
            Some("vah264enc"),
        ),
        (
            "legacy VA-API only",
            &["vaapih264enc", "openh264enc"],
            Some("vaapih264enc"),
        ),
        (
            "NVENC desktop",
            &["nvh264enc", "x264enc", "openh264enc"],
            Some("nvh264enc"),
        ),
        ("x264 only", &["x264enc"], Some("x264enc")),
        ("none", &[], None),
    ];
    for (machine, installed, expected) in machines {
        let picked = select_encoder("auto", installed);
        match expected {
            Some(element) => assert_eq!(
                picked.as_ref().map(|c| c.element()).ok(),
                Some(element),
                "{machine}: {picked:?}"
            ),
            None => {
                let err = picked.expect_err(machine).to_string();
                assert!(
                    err.contains("auto") && err.contains("none"),
                    "{machine}: {err}"
                );
            }
        }
    }
    let plain: &[&str] = &["x264enc", "openh264enc"];
    let err = select_encoder("nvv4l2h264enc", plain)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nvv4l2h264enc") && err.contains("x264enc, openh264enc"),
        "{err}"
    );
}

#[test]
fn probe_reports_this_machines_encoders() {
    init();
    let report = camgate::media::probe();
    let x264 = report
        .encoders
        .iter()
        .find(|e| e.element == "x264enc")
        .unwrap();
    assert!(x264.available && !x264.hardware);
    // The registry's answer goes through the same selection: `auto` is the best encoder the
    // report lists as available (x264enc here, or a hardware one on a machine that has it).
    let installed: Vec<&str> = report
        .encoders
        .iter()
        .filter(|e| e.available)
        .map(|e| e.element.as_str())
        .collect();
    assert_eq!(installed, camgate::media::installed_encoders());
    assert_eq!(report.auto_encoder.as_deref(), Ok(installed[0]));
    let text = report.to_string();
    assert!(
        text.contains("x264enc") && text.contains("GStreamer"),
        "{text}"
    );
    println!("{text}");
}
