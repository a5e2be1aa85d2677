//! The production video path, allocation-counted: a real capture (videotestsrc → x264enc →
//! h264parse → appsink), the daemon's own packetizing sink, and the real `FrameFeed` with a
//! viewer that keeps up. Everything Rust allocates on GStreamer's streaming thread between
//! one access unit and the next is counted: `on_sample`, the sink, the packetizer, the pool
//! and `publish`.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use camgate::media::{AccessUnit, Capture, CaptureOptions, EncoderSpec, SourceSpec};
use camgate::rtp::{H264Packetizer, PacketizerConfig};
use camgate::session::FrameFeed;
use camgate::session::sdp::ProfileLevelId;
use tokio::sync::broadcast::error::RecvError;

use counting_alloc::allocs;
use support::gst::init;

thread_local! {
    /// The streaming thread's count when the sink was last entered.
    static LAST_ENTRY: Cell<Option<u64>> = const { Cell::new(None) };
}

/// What the counting wrapper saw on the streaming thread.
#[derive(Default)]
struct Counts {
    /// Access units the sink was given.
    frames: AtomicU64,
    /// Access units whose whole cycle (from the previous one's entry to theirs) was counted.
    counted: AtomicU64,
    /// Allocations over those cycles.
    allocations: AtomicU64,
}

/// Frames before counting starts: the packetizer's buffers and the frame pool grow to the
/// stream's sizes first (the first IDRs).
const WARM_UP: u64 = 75;
/// Frames counted after warm-up (two seconds at 60 fps, two IDRs).
const COUNTED: u64 = 120;

#[test]
fn production_video_path_allocates_at_most_once_per_frame() {
    init();
    let feed = FrameFeed::new(30);
    let mut rx = feed.subscribe();
    // A viewer that keeps up: reads every frame and lets go of it, as a viewer task does
    // after sending.
    let viewer = std::thread::spawn(move || {
        let (mut frames, mut packets, mut lagged) = (0u64, 0u64, 0u64);
        loop {
            match rx.blocking_recv() {
                Ok(frame) => {
                    frames += 1;
                    packets += frame.len() as u64;
                }
                Err(RecvError::Lagged(n)) => lagged += n,
                Err(RecvError::Closed) => return (frames, packets, lagged),
            }
        }
    });
    let errors = Arc::new(AtomicU64::new(0));
    let inner = camgate::daemon::packetizing_sink(
        H264Packetizer::new(PacketizerConfig::default()).unwrap(),
        feed.clone(),
        errors.clone(),
        ProfileLevelId::default(),
    );
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let sink = Arc::new(move |au: AccessUnit| {
        let now = allocs();
        let previous = LAST_ENTRY.with(|l| l.replace(Some(now)));
        let n = c.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(previous) = previous
            && (WARM_UP..WARM_UP + COUNTED).contains(&n)
        {
            c.allocations.fetch_add(now - previous, Ordering::Relaxed);
            c.counted.fetch_add(1, Ordering::Relaxed);
        }
        inner(au);
    });
    let opts = CaptureOptions {
        source: SourceSpec::Test {
            pattern: "ball".into(),
        },
        width: 320,
        height: 240,
        framerate: 60,
        encoder: EncoderSpec {
            name: "x264enc".into(),
            bitrate_kbps: 1000,
            keyframe_interval_s: 1,
        },
        ..CaptureOptions::default()
    };
    let capture = Capture::start(opts, sink).unwrap();
    let counted =
        support::wait::until_blocking("counted access units", Duration::from_secs(20), || {
            let n = counts.counted.load(Ordering::Relaxed);
            (n >= COUNTED).then_some(n)
        })
        .unwrap();
    capture.stop();
    drop(feed);
    let (frames, packets, lagged) = viewer.join().unwrap();
    let allocations = counts.allocations.load(Ordering::Relaxed);
    println!(
        "production video path: {allocations} allocations over {counted} access units \
         ({:.2} per frame); viewer got {frames} frames, {packets} packets, lagged {lagged}",
        allocations as f64 / counted as f64
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "packetizer errors");
    assert!(
        frames >= WARM_UP + COUNTED,
        "viewer saw only {frames} frames"
    );
    assert!(
        allocations <= counted,
        "{allocations} allocations over {counted} access units: more than one per frame"
    );
}
