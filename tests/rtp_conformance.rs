//! Our RTP output must be what GStreamer's own RFC 6184 depayloader and a real H.264 decoder
//! accept: x264 encodes a test pattern, we packetize and stamp it, and `rtph264depay !
//! avdec_h264` must give back every frame at the right size with no error on the bus.

use camgate::rtp::{
    Frame, H264Packetizer, NalUnits, PacketizerConfig, Payloader, RtpHeader, Stamper,
};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSrc};
use gstreamer_video::VideoInfo;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const GOP: usize = 30;
/// Bounded waits: a stuck pipeline fails the test instead of hanging CI.
const PULL_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(20);

struct AccessUnit {
    data: Vec<u8>,
    pts_ns: u64,
}

fn pipeline(desc: &str) -> (gst::Pipeline, gst::Bus) {
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let bus = pipeline.bus().unwrap();
    (pipeline, bus)
}

/// Error messages the pipeline posted (drains the bus).
fn bus_errors(bus: &gst::Bus) -> Vec<String> {
    let mut errors = Vec::new();
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            errors.push(format!("{} ({:?})", e.error(), e.debug()));
        }
    }
    errors
}

/// `n` frames of x264 output, one Annex-B access unit each, SPS/PPS before every IDR.
fn encode(n: usize) -> Vec<AccessUnit> {
    gst::init().unwrap();
    let (pipeline, bus) = pipeline(&format!(
        "videotestsrc num-buffers={n} pattern=ball \
         ! video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={GOP} \
         ! video/x-h264,profile=constrained-baseline \
         ! h264parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name=sink sync=false"
    ));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .dynamic_cast::<AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut aus = Vec::new();
    while let Some(sample) = sink.try_pull_sample(PULL_TIMEOUT) {
        let buffer = sample.buffer().unwrap();
        let map = buffer.map_readable().unwrap();
        aus.push(AccessUnit {
            data: map.as_slice().to_vec(),
            pts_ns: buffer.pts().unwrap().nseconds(),
        });
    }
    assert!(sink.is_eos(), "encoder stopped before EOS");
    let errors = bus_errors(&bus);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(errors.is_empty(), "encoder errors: {errors:?}");
    assert_eq!(aus.len(), n);
    aus
}

fn nal_types(au: &[u8]) -> Vec<u8> {
    NalUnits::new(au)
        .unwrap()
        .filter_map(|n| n.data.first().map(|h| h & 0x1f))
        .collect()
}

/// The AU rebuilt without SPS/PPS, as a camera that sends them only once would deliver it.
fn strip_parameter_sets(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len());
    for nal in NalUnits::new(au).unwrap() {
        if !matches!(nal.data.first().map(|h| h & 0x1f), Some(7 | 8)) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal.data);
        }
    }
    out
}

/// Serialized RTP packets (header + payload), one `Vec` per access unit.
fn packetize(
    p: &mut H264Packetizer,
    aus: &[AccessUnit],
    stamper: &mut Stamper,
) -> Vec<Vec<Vec<u8>>> {
    let mut frame = Frame::new();
    let mut out = Vec::new();
    for au in aus {
        p.packetize_into(&au.data, au.pts_ns, &mut frame).unwrap();
        assert!(!frame.is_empty());
        let mut packets = Vec::new();
        for pkt in frame.iter() {
            assert!(pkt.payload.len() <= 1164);
            let mut header = [0u8; RtpHeader::LEN];
            stamper
                .next(frame.timestamp(), pkt.marker)
                .write(&mut header);
            let mut bytes = header.to_vec();
            bytes.extend_from_slice(pkt.payload);
            packets.push(bytes);
        }
        assert!(frame.iter().last().unwrap().marker);
        out.push(packets);
    }
    out
}

/// Feeds RTP packets to `rtph264depay ! avdec_h264`; returns the sizes of decoded frames.
fn decode(frames: &[Vec<Vec<u8>>]) -> Vec<(u32, u32, usize)> {
    gst::init().unwrap();
    let (pipeline, bus) = pipeline(
        "appsrc name=src format=time \
           caps=\"application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96\" \
         ! rtph264depay ! avdec_h264 ! video/x-raw,format=I420 ! appsink name=sink sync=false",
    );
    let src = pipeline
        .by_name("src")
        .unwrap()
        .dynamic_cast::<AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .dynamic_cast::<AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for (i, packets) in frames.iter().enumerate() {
        for p in packets {
            let mut buffer = gst::Buffer::from_slice(p.clone());
            buffer
                .get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_nseconds(i as u64 * 33_333_333));
            src.push_buffer(buffer).unwrap();
        }
    }
    src.end_of_stream().unwrap();
    let mut decoded = Vec::new();
    while let Some(sample) = sink.try_pull_sample(PULL_TIMEOUT) {
        let info = VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        decoded.push((info.width(), info.height(), sample.buffer().unwrap().size()));
    }
    assert!(sink.is_eos(), "decoder did not reach EOS");
    let errors = bus_errors(&bus);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(errors.is_empty(), "decoder errors: {errors:?}");
    decoded
}

const I420_SIZE: usize = (WIDTH * HEIGHT * 3 / 2) as usize;

#[test]
fn x264_stream_survives_our_packetizer_and_gstreamer_depayloader() {
    let n = 60;
    let aus = encode(n);
    assert!(
        aus.iter().any(|au| nal_types(&au.data)
            .iter()
            .filter(|&&t| t == 1 || t == 5)
            .count()
            > 1),
        "zerolatency should give multi-slice AUs; the test would not cover them"
    );
    let mut p = H264Packetizer::new(PacketizerConfig::default()).unwrap();
    // Start near both wrap points so sequence numbers and timestamps wrap mid-stream.
    let mut stamper = Stamper::new(0x1234_5678, 96, 65_500, u32::MAX - 45_000);
    let frames = packetize(&mut p, &aus, &mut stamper);
    assert!(
        frames.iter().map(Vec::len).sum::<usize>() > 36,
        "sequence numbers must wrap"
    );
    let decoded = decode(&frames);
    assert_eq!(decoded.len(), n, "every frame decoded");
    for d in decoded {
        assert_eq!(d, (WIDTH, HEIGHT, I420_SIZE));
    }
    assert_eq!(p.stats().access_units, n as u64);
    assert_eq!(p.stats().idr_without_params, 0);
}

#[test]
fn late_viewer_decodes_from_later_idr_when_parameter_sets_came_once() {
    let n = 2 * GOP;
    let mut aus = encode(n);
    // Camera behaviour: SPS/PPS only in the very first AU.
    for au in &mut aus[1..] {
        au.data = strip_parameter_sets(&au.data);
    }
    let second_idr = GOP;
    let types = nal_types(&aus[second_idr].data);
    assert!(
        types.contains(&5),
        "AU {second_idr} should be an IDR: {types:?}"
    );
    assert!(!types.contains(&7) && !types.contains(&8));

    let mut p = H264Packetizer::new(PacketizerConfig::default()).unwrap();
    let mut stamper = Stamper::new(0xCAFE, 96, 1, 0);
    let frames = packetize(&mut p, &aus, &mut stamper);
    assert_eq!(p.stats().params_injected, 1);

    // The viewer joins at the second IDR: it never saw the first AU's parameter sets.
    let decoded = decode(&frames[second_idr..]);
    assert_eq!(
        decoded.len(),
        n - second_idr,
        "every frame from the join point decoded"
    );
    for d in decoded {
        assert_eq!(d, (WIDTH, HEIGHT, I420_SIZE));
    }
}
