//! Packetizer throughput and allocations: ours vs `rtc`'s `H264Payloader` vs a plain copy of
//! the same bytes (the floor no packetizer can beat), and the whole production path (a
//! GStreamer buffer from the appsink → the daemon's sink → a packetized frame in the feed, read
//! by a viewer) against the path as it was before frames were recycled.
//!
//! Run: `cargo bench --bench packetizer`. Each iteration packetizes one access unit; inputs
//! cycle through a corpus so branch predictors and caches see realistic variety.

use std::cell::Cell;
use std::sync::LazyLock;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use camgate::media::{AccessUnit, SourceInfo};
use camgate::rtp::{Frame, H264Packetizer, NalUnits, PacketizerConfig, Payloader};
use camgate::session::FrameFeed;
use camgate::session::sdp::ProfileLevelId;
use divan::counter::{BytesCount, ItemsCount};
use divan::{AllocProfiler, Bencher, black_box};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader as _;

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

const MTU: usize = camgate::rtp::DEFAULT_MAX_PAYLOAD;
const CORPORA: [&str; 3] = ["idr_1080p", "p_1080p", "x264_720p"];

struct Corpus {
    aus: Vec<&'static [u8]>,
    /// The same AUs as GStreamer buffers (wrapping the bytes, not copies), as the appsink
    /// hands them over.
    buffers: Vec<gst::Buffer>,
    /// Packets each AU becomes with our packetizer and with rtc's (for the items counter).
    ours_packets: Vec<usize>,
    rtc_packets: Vec<usize>,
}

/// Pseudo-random payload bytes with no zero byte, so no start code can be emulated.
fn body(len: usize, mut seed: u64) -> impl Iterator<Item = u8> {
    seed |= 1;
    (0..len).map(move |_| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 24) as u8 | 1
    })
}

fn push_nal(au: &mut Vec<u8>, header: u8, len: usize, seed: u64) {
    au.extend_from_slice(&[0, 0, 0, 1, header]);
    au.extend(body(len - 1, seed));
}

/// 1080p IDR as x264/hardware encoders emit it: AUD, SPS, PPS, SEI, 4 slices; 150–250 KB.
fn idr_1080p(total: usize, seed: u64) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x09, 0x10];
    push_nal(&mut au, 0x67, 25, seed);
    push_nal(&mut au, 0x68, 6, seed + 1);
    push_nal(&mut au, 0x06, 650, seed + 2);
    for s in 0..4 {
        push_nal(&mut au, 0x65, total / 4, seed + 3 + s);
    }
    au
}

/// 1080p P frame: AUD and 2 slices, 5–30 KB.
fn p_1080p(total: usize, seed: u64) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x09, 0x30];
    for s in 0..2 {
        push_nal(&mut au, 0x41, total / 2, seed + s);
    }
    au
}

/// ~60 frames of 720p30 x264 at 3 Mbit/s, encoded once at start-up.
fn x264_720p() -> Vec<Vec<u8>> {
    gst::init().expect("gstreamer init");
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=60 pattern=smpte horizontal-speed=6 \
         ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=3000 key-int-max=30 \
         ! video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false",
    )
    .expect("encoder pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.dynamic_cast::<AppSink>().ok())
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let mut aus = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let buffer = sample.buffer().expect("buffer");
        aus.push(buffer.map_readable().expect("map").as_slice().to_vec());
    }
    pipeline.set_state(gst::State::Null).expect("null");
    assert_eq!(aus.len(), 60, "x264 corpus incomplete");
    aus
}

fn build(name: &str) -> Corpus {
    let owned: Vec<Vec<u8>> = match name {
        "idr_1080p" => (0..4)
            .map(|i| idr_1080p(150_000 + i * 33_000, i as u64 * 10))
            .collect(),
        "p_1080p" => (0..26)
            .map(|i| p_1080p(5_000 + i * 1_000, i as u64 * 10))
            .collect(),
        _ => x264_720p(),
    };
    let aus: Vec<&'static [u8]> = owned.into_iter().map(|v| &*v.leak()).collect();
    let mut ours = H264Packetizer::new(PacketizerConfig::default()).expect("config");
    let mut frame = Frame::new();
    let mut theirs = H264Payloader::default();
    let ours_packets = aus
        .iter()
        .map(|au| {
            ours.packetize_into(au, 0, &mut frame).expect("packetize");
            frame.len()
        })
        .collect();
    let rtc_packets = aus
        .iter()
        .map(|au| {
            theirs
                .payload(MTU, &Bytes::from_static(au))
                .expect("rtc")
                .len()
        })
        .collect();
    gst::init().expect("gstreamer init");
    let buffers = aus.iter().map(|&au| gst::Buffer::from_slice(au)).collect();
    Corpus {
        aus,
        buffers,
        ours_packets,
        rtc_packets,
    }
}

static CORPUS: LazyLock<Vec<(&'static str, Corpus)>> =
    LazyLock::new(|| CORPORA.iter().map(|&n| (n, build(n))).collect());

fn corpus(name: &str) -> &'static Corpus {
    CORPUS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| c)
        .expect("corpus")
}

/// Yields (AU, packets) cycling through the corpus.
fn cycle(c: &'static Corpus, packets: &'static [usize]) -> impl Fn() -> (&'static [u8], usize) {
    let next = Cell::new(0usize);
    move || {
        let i = next.get();
        next.set((i + 1) % c.aus.len());
        (c.aus[i], packets[i])
    }
}

fn main() {
    println!(
        "corpus       AUs  avg bytes/AU  packets/AU ours  packets/AU rtc  (payload budget {MTU})"
    );
    for (name, c) in CORPUS.iter() {
        let n = c.aus.len() as f64;
        let bytes: usize = c.aus.iter().map(|a| a.len()).sum();
        println!(
            "{name:<11} {:>4}  {:>12.0}  {:>15.1}  {:>14.1}",
            c.aus.len(),
            bytes as f64 / n,
            c.ours_packets.iter().sum::<usize>() as f64 / n,
            c.rtc_packets.iter().sum::<usize>() as f64 / n,
        );
    }
    divan::main();
}

#[divan::bench(args = CORPORA)]
fn ours(bencher: Bencher, name: &str) {
    let c = corpus(name);
    let mut p = H264Packetizer::new(PacketizerConfig::default()).expect("config");
    let mut frame = Frame::new();
    let mut pts = 0u64;
    bencher
        .with_inputs(cycle(c, &c.ours_packets))
        .input_counter(|(au, _)| BytesCount::of_slice(*au))
        .input_counter(|(_, n)| ItemsCount::new(*n))
        .bench_local_refs(|(au, _)| {
            pts += 33_333_333;
            p.packetize_into(au, pts, &mut frame).expect("packetize");
            black_box(frame.len())
        });
}

#[divan::bench(args = CORPORA)]
fn rtc_payloader(bencher: Bencher, name: &str) {
    let c = corpus(name);
    let mut p = H264Payloader::default();
    bencher
        .with_inputs(cycle(c, &c.rtc_packets))
        .input_counter(|(au, _)| BytesCount::of_slice(*au))
        .input_counter(|(_, n)| ItemsCount::new(*n))
        .bench_local_refs(|(au, _)| p.payload(MTU, &Bytes::from_static(au)).expect("rtc"));
}

#[divan::bench(args = CORPORA)]
fn plain_copy(bencher: Bencher, name: &str) {
    let c = corpus(name);
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    bencher
        .with_inputs(cycle(c, &c.ours_packets))
        .input_counter(|(au, _)| BytesCount::of_slice(*au))
        .bench_local_refs(|(au, _)| {
            buf.clear();
            buf.extend_from_slice(au);
            black_box(buf.len())
        });
}

/// Only the start-code scan our packetizer must do and a copy does not: explains the gap
/// between `ours` and `plain_copy` (ours ≈ scan + copy + per-packet bookkeeping).
#[divan::bench(args = CORPORA)]
fn annexb_scan_only(bencher: Bencher, name: &str) {
    let c = corpus(name);
    bencher
        .with_inputs(cycle(c, &c.ours_packets))
        .input_counter(|(au, _)| BytesCount::of_slice(*au))
        .bench_local_refs(|(au, _)| NalUnits::new(au).map(|n| n.count()));
}

/// A feed with one viewer that keeps up, as the daemon has with one watcher: the bench reads
/// each frame back and drops it, as a viewer task does once it has sent it.
fn feed_with_viewer() -> (FrameFeed, tokio::sync::broadcast::Receiver<Arc<Frame>>) {
    let feed = FrameFeed::new(30);
    let rx = feed.subscribe();
    (feed, rx)
}

/// Yields (AU buffer, packets) cycling through the corpus.
fn cycle_buffers(c: &'static Corpus) -> impl Fn() -> (gst::Buffer, usize) {
    let next = Cell::new(0usize);
    move || {
        let i = next.get();
        next.set((i + 1) % c.aus.len());
        (c.buffers[i].clone(), c.ours_packets[i])
    }
}

/// The production path: `camgate::daemon::packetizing_sink`, the function the capture calls
/// on GStreamer's streaming thread, from the buffer to the frame a viewer reads.
#[divan::bench(args = CORPORA)]
fn sink_path(bencher: Bencher, name: &str) {
    let c = corpus(name);
    let (feed, mut rx) = feed_with_viewer();
    let sink = camgate::daemon::packetizing_sink(
        H264Packetizer::new(PacketizerConfig::default()).expect("config"),
        feed,
        Arc::new(AtomicU64::new(0)),
        ProfileLevelId::default(),
    );
    let mut pts = 0u64;
    bencher
        .with_inputs(cycle_buffers(c))
        .input_counter(|(b, _)| BytesCount::new(b.size()))
        .input_counter(|(_, n)| ItemsCount::new(*n))
        .bench_local_values(|(buffer, _)| {
            pts += 33_333_333;
            sink(AccessUnit {
                buffer,
                pts_ns: pts,
                keyframe: false,
                source: SourceInfo {
                    generation: 1,
                    passthrough: false,
                },
            });
            black_box(rx.try_recv().map(|f| f.len()))
        });
}

/// The same path as it was before (commit 3e6f43d): the AU copied out of the buffer into
/// `Bytes`, a new `Frame` per AU, a new `Arc` for it. The baseline for `sink_path`.
#[divan::bench(args = CORPORA)]
fn sink_path_before(bencher: Bencher, name: &str) {
    let c = corpus(name);
    let (feed, mut rx) = feed_with_viewer();
    let packetizer =
        std::sync::Mutex::new(H264Packetizer::new(PacketizerConfig::default()).expect("config"));
    let mut pts = 0u64;
    bencher
        .with_inputs(cycle_buffers(c))
        .input_counter(|(b, _)| BytesCount::new(b.size()))
        .input_counter(|(_, n)| ItemsCount::new(*n))
        .bench_local_values(|(buffer, _)| {
            pts += 33_333_333;
            let data = Bytes::copy_from_slice(&buffer.map_readable().expect("map"));
            let mut frame = Frame::new();
            let r = packetizer
                .lock()
                .expect("lock")
                .packetize_into(&data, pts, &mut frame);
            if r.is_ok() && !frame.is_empty() {
                feed.publish(Arc::new(frame));
            }
            black_box(rx.try_recv().map(|f| f.len()))
        });
}
