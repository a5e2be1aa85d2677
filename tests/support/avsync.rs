//! Lip sync, measured by content like a clapperboard.
//!
//! - [`make_sync_file`] writes a Matroska file (H.264 + AAC) whose video is black except one
//!   all-white frame at the start of every second, and whose audio is silent except a 1 kHz
//!   beep during the first 50 ms of every second. Each "clap" is followed by its second's
//!   number (0..=9), so a flash is paired with the beep of the same second and never with a
//!   neighbour for any offset under 5 s: on video as four bars on the three frames after the flash
//!   (mean luma stays far below a flash), on audio as a tone of 400 + 100·k Hz from 150 to
//!   300 ms (long after the beep onset that is timed).
//! - [`FlashDetector`] and [`BeepDetector`] find the claps in decoded frames and samples; the
//!   same code checks the file ([`analyse_file`]) and what a viewer receives.
//! - [`SyncViewer`] is a minimal receive-only WebRTC viewer (the `webrtc` crate, like
//!   `viewer.rs`) that records the socket arrival time of every RTP packet and every RTCP
//!   sender report through an interceptor, and decodes with GStreamer (no jitterbuffer, so no
//!   added delay). Each decoded buffer carries, as its PTS, the (unwrapped) RTP timestamp of the
//!   packets it came from, so a flash or beep maps back to the arrival of the packet that
//!   carried it, and to its RTP time for the sender-report view.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use tokio::sync::watch;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};

use super::viewer::dominant_hz;

pub const WIDTH: usize = 640;
pub const HEIGHT: usize = 480;
pub const FPS: u64 = 30;
pub const AUDIO_RATE: u64 = 48_000;
pub const VIDEO_CLOCK: u64 = 90_000;
/// Seconds are numbered 0..ID_COUNT; the file is exactly this long, so the number is also the
/// position in the file.
pub const ID_COUNT: u64 = 10;
pub const BEEP_HZ: f64 = 1000.0;
pub const BEEP_MS: u64 = 50;
/// The ID tone of second k: 400 + 100·k Hz, from 150 to 300 ms into the second.
pub const ID_TONE_START_MS: u64 = 150;
pub const ID_TONE_END_MS: u64 = 300;

fn id_tone_hz(k: u64) -> f64 {
    400.0 + 100.0 * k as f64
}

/// I420 white and black (limited range).
const Y_WHITE: u8 = 235;
const Y_BLACK: u8 = 16;
/// The ID bars: four blocks across a horizontal band in the middle of the picture.
const BAR_TOP: usize = 180;
const BAR_BOTTOM: usize = 300;
const BAR_WIDTH: usize = WIDTH / 4;
/// Frames after the flash that show the bars; the detector reads the second of them.
const ID_FRAMES: u64 = 3;
const ID_READ_AT: u32 = 2;

fn ns(t: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(t)
}

// ---------------------------------------------------------------------------------------------
// The sync file
// ---------------------------------------------------------------------------------------------

/// One I420 frame: `white` for a flash, else black with the bars of `id` (None: plain black).
fn video_frame(white: bool, id: Option<u64>) -> Vec<u8> {
    let (w, h) = (WIDTH, HEIGHT);
    let mut frame = vec![128u8; w * h * 3 / 2];
    let y = &mut frame[..w * h];
    y.fill(if white { Y_WHITE } else { Y_BLACK });
    if let Some(k) = id {
        for row in BAR_TOP..BAR_BOTTOM {
            for bit in 0..4 {
                if k >> bit & 1 == 1 {
                    let start = row * w + bit * BAR_WIDTH;
                    y[start..start + BAR_WIDTH].fill(Y_WHITE);
                }
            }
        }
    }
    frame
}

/// One sample of the sync audio at sample index `n` (mono, 48 kHz).
fn audio_sample(n: u64) -> i16 {
    let second = n / AUDIO_RATE;
    let k = second % ID_COUNT;
    let within = n % AUDIO_RATE;
    let t = within as f64 / AUDIO_RATE as f64;
    let beep_end = AUDIO_RATE * BEEP_MS / 1000;
    let id_start = AUDIO_RATE * ID_TONE_START_MS / 1000;
    let id_end = AUDIO_RATE * ID_TONE_END_MS / 1000;
    let v = if within < beep_end {
        // A hard onset (that is what is timed), a short fade-out against a click at the end.
        let fade_out = ((beep_end - within) as f64 / 240.0).min(1.0);
        0.5 * fade_out * (2.0 * std::f64::consts::PI * BEEP_HZ * t).sin()
    } else if (id_start..id_end).contains(&within) {
        let edge = ((within - id_start).min(id_end - within) as f64 / 240.0).min(1.0);
        0.3 * edge * (2.0 * std::f64::consts::PI * id_tone_hz(k) * t).sin()
    } else {
        0.0
    };
    (v * 32767.0) as i16
}

/// Writes `seconds` of the sync signal to `path` (Matroska: H.264 from x264enc, AAC), with
/// every timestamp and duration set exactly. Blocks until the muxer has finished (bounded).
pub fn make_sync_file(path: &Path, seconds: u64) {
    gst::init().unwrap();
    let aac = if gst::ElementFactory::find("avenc_aac").is_some() {
        "avenc_aac"
    } else {
        "voaacenc"
    };
    let desc = format!(
        "appsrc name=vsrc format=time is-live=false do-timestamp=false \
           caps=video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={FPS}/1,pixel-aspect-ratio=1/1 \
         ! x264enc tune=zerolatency key-int-max=30 bitrate=2000 ! h264parse ! queue ! mux. \
         appsrc name=asrc format=time is-live=false do-timestamp=false \
           caps=audio/x-raw,format=S16LE,layout=interleaved,channels=1,rate={AUDIO_RATE} \
         ! audioconvert ! {aac} ! aacparse ! queue ! mux. \
         matroskamux name=mux ! filesink location=\"{}\"",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap_or_else(|e| panic!("cannot build the sync file writer ({desc}): {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = |name: &str| {
        pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .unwrap()
    };
    let (vsrc, asrc) = (src("vsrc"), src("asrc"));
    // A few frames ahead of the encoder at most, pushing blocks meanwhile (bounded memory).
    for s in [&vsrc, &asrc] {
        s.set_max_bytes(4 * (WIDTH * HEIGHT * 3 / 2) as u64);
        s.set_block(true);
    }
    pipeline.set_state(gst::State::Playing).unwrap();

    let frames = seconds * FPS;
    let audio_chunk = AUDIO_RATE / 50; // 20 ms
    let chunks = seconds * 50;
    // Interleaved in time order so the muxer never waits long for the other stream.
    let (mut f, mut c) = (0u64, 0u64);
    while f < frames || c < chunks {
        let video_pts = f * 1_000_000_000 / FPS;
        let audio_pts = c * 20_000_000;
        if f < frames && (c >= chunks || video_pts <= audio_pts) {
            let within = f % FPS;
            let k = (f / FPS) % ID_COUNT;
            let data = video_frame(within == 0, (1..=ID_FRAMES).contains(&within).then_some(k));
            let mut buf = gst::Buffer::from_mut_slice(data);
            {
                let b = buf.get_mut().unwrap();
                b.set_pts(ns(video_pts));
                b.set_duration(ns((f + 1) * 1_000_000_000 / FPS - video_pts));
            }
            vsrc.push_buffer(buf).expect("push video");
            f += 1;
        } else {
            let first = c * audio_chunk;
            let mut data = Vec::with_capacity(audio_chunk as usize * 2);
            for n in first..first + audio_chunk {
                data.extend_from_slice(&audio_sample(n).to_le_bytes());
            }
            let mut buf = gst::Buffer::from_mut_slice(data);
            {
                let b = buf.get_mut().unwrap();
                b.set_pts(ns(audio_pts));
                b.set_duration(ns(20_000_000));
                b.set_offset(first);
                b.set_offset_end(first + audio_chunk);
            }
            asrc.push_buffer(buf).expect("push audio");
            c += 1;
        }
    }
    vsrc.end_of_stream().unwrap();
    asrc.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(120),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        Some(gst::MessageView::Error(e)) => {
            panic!(
                "writing the sync file failed: {} ({:?})",
                e.error(),
                e.debug()
            )
        }
        _ => panic!("writing the sync file did not finish within 120 s"),
    }
}

// ---------------------------------------------------------------------------------------------
// Detectors
// ---------------------------------------------------------------------------------------------

/// A clap found in a stream: its time in that stream's clock ticks, and the second it belongs
/// to (None if the ID could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clap {
    pub ticks: i64,
    pub id: Option<u8>,
}

/// Finds flashes (a frame whose mean luma exceeds 128 after one that did not) and reads the
/// bars [`ID_READ_AT`] frames later.
#[derive(Debug)]
pub struct FlashDetector {
    /// Clock ticks per frame (3000 at 90 kHz, 30 fps).
    frame_ticks: i64,
    prev_bright: bool,
    pending: Option<(i64, u32)>,
    pub frames: u64,
    /// Mean luma of every flash frame found (diagnostics).
    pub flash_means: Vec<f64>,
}

/// Mean of a GRAY8 plane's region (every 2nd pixel of every 2nd row).
fn region_mean(
    plane: &[u8],
    stride: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> f64 {
    let (mut sum, mut n) = (0u64, 0u64);
    for r in rows.step_by(2) {
        let row = &plane[r * stride..];
        for c in cols.clone().step_by(2) {
            sum += u64::from(row[c]);
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum as f64 / n as f64 }
}

impl FlashDetector {
    pub fn new(frame_ticks: i64) -> Self {
        FlashDetector {
            frame_ticks,
            // A stream that starts on a bright frame has no onset there.
            prev_bright: true,
            pending: None,
            frames: 0,
            flash_means: Vec::new(),
        }
    }

    /// One decoded GRAY8 frame of WIDTH x HEIGHT (or larger) at `ticks`.
    pub fn push(&mut self, ticks: i64, plane: &[u8], stride: usize) -> Option<Clap> {
        self.frames += 1;
        let mean = region_mean(plane, stride, 0..HEIGHT, 0..WIDTH);
        let bright = mean > 128.0;
        let onset = bright && !self.prev_bright;
        self.prev_bright = bright;
        let mut out = None;
        if let Some((at, seen)) = self.pending.as_mut() {
            *seen += 1;
            if *seen == ID_READ_AT {
                let at = *at;
                self.pending = None;
                // The bars must be where they should be: exactly ID_READ_AT frames later.
                let expected = at + i64::from(ID_READ_AT) * self.frame_ticks;
                let id = if (ticks - expected).abs() <= self.frame_ticks / 2 {
                    read_bars(plane, stride)
                } else {
                    None
                };
                out = Some(Clap { ticks: at, id });
            }
        }
        if onset {
            self.flash_means.push(mean);
            if let Some((at, _)) = self.pending.replace((ticks, 0)) {
                out = Some(Clap {
                    ticks: at,
                    id: None,
                });
            }
        }
        out
    }
}

fn read_bars(plane: &[u8], stride: usize) -> Option<u8> {
    let mut k = 0u8;
    for bit in 0..4 {
        let x0 = bit * BAR_WIDTH;
        let m = region_mean(
            plane,
            stride,
            BAR_TOP + 20..BAR_BOTTOM - 20,
            x0 + 30..x0 + BAR_WIDTH - 30,
        );
        if m > 170.0 {
            k |= 1 << bit;
        } else if m > 90.0 {
            return None;
        }
    }
    (u64::from(k) < ID_COUNT).then_some(k)
}

/// Finds beep onsets (a 5 ms window over [`BEEP_ON_RMS`] after at least 300 ms of quiet) in
/// 48 kHz mono samples, and reads the ID tone that follows.
#[derive(Debug, Default)]
pub struct BeepDetector {
    buf: Vec<i16>,
    /// Tick (sample index) of `buf[0]`.
    buf_ticks: i64,
    /// Index in `buf` of the next 5 ms window.
    next: usize,
    quiet: usize,
    pending: Option<i64>,
    /// Discontinuities seen (gaps or overlaps in the timestamps of what was pushed).
    pub discontinuities: u64,
    pub samples: u64,
}

const WINDOW: usize = (AUDIO_RATE / 200) as usize; // 5 ms
const QUIET_WINDOWS: usize = 60; // 300 ms
const BEEP_ON_RMS: f64 = 3000.0;
const QUIET_RMS: f64 = 800.0;

impl BeepDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples starting at `ticks` (48 kHz sample index).
    pub fn push(&mut self, ticks: i64, samples: &[i16]) -> Vec<Clap> {
        self.samples += samples.len() as u64;
        let end = self.buf_ticks + self.buf.len() as i64;
        if self.buf.is_empty() {
            self.buf_ticks = ticks;
        } else if (ticks - end).abs() > 48 {
            // A jump (a file loop, lost packets): start over. A short step out of silence (the
            // daemon looping the file, whose last 700 ms are quiet; its audio timestamps step
            // back a few ms there) keeps the quiet count, so the first beep of the next pass
            // is still an onset.
            self.discontinuities += 1;
            let short_from_quiet =
                (ticks - end).abs() < AUDIO_RATE as i64 && self.pending.is_none();
            self.buf.clear();
            self.buf_ticks = ticks;
            self.next = 0;
            if !short_from_quiet {
                self.quiet = 0;
            }
            self.pending = None;
        }
        self.buf.extend_from_slice(samples);
        let mut found = Vec::new();
        while self.next + WINDOW <= self.buf.len() {
            let w = &self.buf[self.next..self.next + WINDOW];
            if self.pending.is_none() {
                let r = super::viewer::rms(w);
                if r > BEEP_ON_RMS && self.quiet >= QUIET_WINDOWS {
                    // The first loud sample, for sub-window precision.
                    let i = w.iter().position(|s| s.unsigned_abs() > 3000).unwrap_or(0);
                    self.pending = Some(self.buf_ticks + (self.next + i) as i64);
                    self.quiet = 0;
                } else if r < QUIET_RMS {
                    self.quiet += 1;
                } else {
                    self.quiet = 0;
                }
            }
            self.next += WINDOW;
        }
        if let Some(on) = self.pending {
            let per_ms = (AUDIO_RATE / 1000) as i64;
            let from = on + (ID_TONE_START_MS as i64 + 20) * per_ms - self.buf_ticks;
            let to = on + (ID_TONE_END_MS as i64 - 20) * per_ms - self.buf_ticks;
            if to as usize <= self.buf.len() && from >= 0 {
                let hz = dominant_hz(&self.buf[from as usize..to as usize], AUDIO_RATE as u32);
                let k = ((hz - 400.0) / 100.0).round();
                let id = ((0.0..ID_COUNT as f64).contains(&k)
                    && (hz - id_tone_hz(k as u64)).abs() < 30.0)
                    .then_some(k as u8);
                found.push(Clap { ticks: on, id });
                self.pending = None;
            }
        }
        // Keep about a second behind the window position.
        let keep = AUDIO_RATE as usize;
        if self.pending.is_none() && self.next > 2 * keep {
            let cut = self.next - keep;
            self.buf.drain(..cut);
            self.buf_ticks += cut as i64;
            self.next -= cut;
        }
        found
    }
}

// ---------------------------------------------------------------------------------------------
// Checking the file
// ---------------------------------------------------------------------------------------------

/// What decoding the sync file found, in the file's own time (ns).
#[derive(Debug, Default)]
pub struct FileCheck {
    pub frames: u64,
    pub audio_samples: u64,
    pub flashes: Vec<(u64, Option<u8>)>,
    pub beeps: Vec<(u64, Option<u8>)>,
}

/// Decodes `path` (matroskademux, avdec_h264, avdec_aac) and runs the detectors on it.
pub fn analyse_file(path: &Path) -> FileCheck {
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! matroskademux name=m \
         m.video_0 ! queue ! h264parse ! avdec_h264 ! videoconvert \
           ! video/x-raw,format=GRAY8 ! appsink name=v sync=false \
         m.audio_0 ! queue ! aacparse ! avdec_aac ! audioconvert ! audioresample \
           ! audio/x-raw,format=S16LE,channels=1,rate={AUDIO_RATE} ! appsink name=a sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap_or_else(|e| panic!("cannot build the file check ({desc}): {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = |name: &str| {
        pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .unwrap()
    };
    let check = Arc::new(Mutex::new(FileCheck::default()));
    let flashes = Arc::new(Mutex::new(FlashDetector::new((VIDEO_CLOCK / FPS) as i64)));
    let beeps = Arc::new(Mutex::new(BeepDetector::new()));
    {
        let check = check.clone();
        sink("v").set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let (Some(buf), Some(caps)) = (sample.buffer(), sample.caps()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
                    let map = buf.map_readable().unwrap();
                    let pts = buf.pts().map(|t| t.nseconds()).unwrap_or(0);
                    let ticks = (pts as u128 * VIDEO_CLOCK as u128 / 1_000_000_000) as i64;
                    let stride = info.stride()[0] as usize;
                    let mut c = check.lock().unwrap();
                    c.frames += 1;
                    if let Some(clap) = flashes.lock().unwrap().push(ticks, &map, stride) {
                        let t = clap.ticks as u64 * 1_000_000_000 / VIDEO_CLOCK;
                        c.flashes.push((t, clap.id));
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    {
        let check = check.clone();
        sink("a").set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(buf) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let map = buf.map_readable().unwrap();
                    let samples: Vec<i16> = map
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    let pts = buf.pts().map(|t| t.nseconds()).unwrap_or(0);
                    let ticks = (pts as u128 * AUDIO_RATE as u128 / 1_000_000_000) as i64;
                    let mut c = check.lock().unwrap();
                    c.audio_samples += samples.len() as u64;
                    for clap in beeps.lock().unwrap().push(ticks, &samples) {
                        let t = clap.ticks as u64 * 1_000_000_000 / AUDIO_RATE;
                        c.beeps.push((t, clap.id));
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        Some(gst::MessageView::Error(e)) => {
            panic!(
                "the sync file does not play: {} ({:?})",
                e.error(),
                e.debug()
            )
        }
        _ => panic!("decoding the sync file did not finish within 60 s"),
    }
    std::mem::take(&mut *check.lock().unwrap())
}

// ---------------------------------------------------------------------------------------------
// The viewer
// ---------------------------------------------------------------------------------------------

/// A sender report as received: its sender's SSRC, NTP and RTP time, and when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct SrRecord {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp: u32,
    pub arrived: Instant,
}

impl SrRecord {
    /// NTP time in seconds.
    pub fn ntp_secs(&self) -> f64 {
        (self.ntp >> 32) as f64 + (self.ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
    }

    /// The NTP time (s) this report maps RTP timestamp `ts` to, at `rate` Hz.
    pub fn ntp_of(&self, ts: u32, rate: u64) -> f64 {
        self.ntp_secs() + f64::from(ts.wrapping_sub(self.rtp) as i32) / rate as f64
    }
}

/// A clap mapped back to the packets that carried it.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub id: u8,
    /// Socket arrival of the first RTP packet with this timestamp.
    pub arrived: Instant,
    /// Its RTP timestamp (for video: the frame's; for audio: the beep onset's, i.e. the
    /// packet's plus the onset's sample offset in it).
    pub rtp: u32,
    /// Unwrapped RTP timestamp.
    pub ext: i64,
    /// Unwrapped RTP timestamp of the packet it arrived in (the frame's, for video).
    pub packet_ext: i64,
}

/// One received stream: arrival per unwrapped RTP timestamp, and the claps found.
#[derive(Debug, Default)]
pub struct StreamLog {
    pub ssrc: Option<u32>,
    pub packets: u64,
    /// Unwrapped RTP timestamp → (RTP timestamp, first arrival).
    pub arrivals: BTreeMap<i64, (u32, Instant)>,
    /// Claps whose ID could not be read.
    pub unreadable: u64,
    /// Claps whose packets were not found (should not happen).
    pub unmatched: u64,
    pub events: Vec<Event>,
    pub decoded: u64,
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Shared {
    /// (SSRC, RTP timestamp) → first socket arrival, recorded by the interceptor.
    arrivals: Mutex<HashMap<(u32, u32), Instant>>,
    srs: Mutex<Vec<SrRecord>>,
    video: Mutex<StreamLog>,
    audio: Mutex<StreamLog>,
}

/// Records the socket arrival time of every RTP packet and every sender report; passes
/// everything on unchanged. Sits closest to the wire.
struct ArrivalRecorder {
    shared: Arc<Shared>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ArrivalRecorder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        match &msg.message.packet {
            Packet::Rtp(p) => {
                self.shared
                    .arrivals
                    .lock()
                    .unwrap()
                    .entry((p.header.ssrc, p.header.timestamp))
                    .or_insert(msg.now);
            }
            Packet::Rtcp(packets) => {
                let mut srs = self.shared.srs.lock().unwrap();
                for p in packets {
                    if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                        srs.push(SrRecord {
                            ssrc: sr.ssrc,
                            ntp: sr.ntp_time,
                            rtp: sr.rtp_time,
                            arrived: msg.now,
                        });
                    }
                }
            }
            _ => {}
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for ArrivalRecorder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Unwrapped RTP timestamps start here (1000 s of clock), so they and the PTS derived from
/// them stay positive whatever the first timestamp is.
const EXT_BASE_SECONDS: i64 = 1000;

struct Unwrapper {
    last: Option<(u32, i64)>,
    rate: i64,
}

impl Unwrapper {
    fn ext(&mut self, ts: u32) -> i64 {
        let ext = match self.last {
            None => EXT_BASE_SECONDS * self.rate,
            Some((raw, ext)) => ext + i64::from(ts.wrapping_sub(raw) as i32),
        };
        self.last = Some((ts, ext));
        ext
    }
}

fn ext_to_pts(ext: i64, rate: u64) -> gst::ClockTime {
    ns((ext.max(0) as u128 * 1_000_000_000 / rate as u128) as u64)
}

fn pts_to_ext(pts: gst::ClockTime, rate: u64) -> i64 {
    ((pts.nseconds() as u128 * rate as u128 + 500_000_000) / 1_000_000_000) as i64
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

fn stream_log(s: &Shared, kind: Kind) -> &Mutex<StreamLog> {
    match kind {
        Kind::Video => &s.video,
        Kind::Audio => &s.audio,
    }
}

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    shared: Arc<Shared>,
    events: watch::Sender<u64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = if track.kind().await == RtpCodecKind::Audio {
            Kind::Audio
        } else {
            Kind::Video
        };
        let shared = self.shared.clone();
        let events = self.events.clone();
        tokio::spawn(async move { receive(track, kind, shared, events).await });
    }
}

/// Builds the decoder of one stream: appsrc (PTS = unwrapped RTP time) → depayloader →
/// decoder → appsink whose samples go through the detector and become [`Event`]s.
fn decoder(
    kind: Kind,
    pt: u8,
    shared: Arc<Shared>,
    events: watch::Sender<u64>,
) -> (gst::Pipeline, gst_app::AppSrc) {
    let desc = match kind {
        Kind::Video => format!(
            "appsrc name=src is-live=true do-timestamp=false format=time \
               caps=application/x-rtp,media=video,clock-rate={VIDEO_CLOCK},encoding-name=H264,payload={pt} \
             ! rtph264depay ! avdec_h264 ! videoconvert ! video/x-raw,format=GRAY8 \
             ! appsink name=sink sync=false emit-signals=false"
        ),
        Kind::Audio => format!(
            "appsrc name=src is-live=true do-timestamp=false format=time \
               caps=application/x-rtp,media=audio,clock-rate={AUDIO_RATE},encoding-name=OPUS,payload={pt} \
             ! rtpopusdepay ! opusdec ! audioconvert \
             ! audio/x-raw,format=S16LE,channels=1,rate={AUDIO_RATE} \
             ! appsink name=sink sync=false emit-signals=false"
        ),
    };
    let (pipeline, src, sink) = super::gst::app_pipeline(&desc, "sink");
    let mut flashes = FlashDetector::new((VIDEO_CLOCK / FPS) as i64);
    let mut beeps = BeepDetector::new();
    let sh = shared.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buf) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Some(pts) = buf.pts() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                let claps = match kind {
                    Kind::Video => {
                        let Some(info) = sample
                            .caps()
                            .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                        else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        if (info.width() as usize) < WIDTH || (info.height() as usize) < HEIGHT {
                            return Ok(gst::FlowSuccess::Ok);
                        }
                        let ext = pts_to_ext(pts, VIDEO_CLOCK);
                        flashes
                            .push(ext, &map, info.stride()[0] as usize)
                            .into_iter()
                            .collect::<Vec<_>>()
                    }
                    Kind::Audio => {
                        let samples: Vec<i16> = map
                            .chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]]))
                            .collect();
                        beeps.push(pts_to_ext(pts, AUDIO_RATE), &samples)
                    }
                };
                let mut l = stream_log(&sh, kind).lock().unwrap();
                l.decoded += 1;
                for clap in claps {
                    let Some(id) = clap.id else {
                        l.unreadable += 1;
                        continue;
                    };
                    // Video: the frame's own timestamp. Audio: the packet the onset is in
                    // (the latest one starting at or before it).
                    let found = match kind {
                        Kind::Video => l
                            .arrivals
                            .range(clap.ticks - 1..=clap.ticks + 1)
                            .next()
                            .map(|(e, v)| (*e, *v)),
                        Kind::Audio => l
                            .arrivals
                            .range(..=clap.ticks)
                            .next_back()
                            .map(|(e, v)| (*e, *v)),
                    };
                    match found {
                        Some((ext, (raw, arrived))) => {
                            let delta = clap.ticks - ext;
                            l.events.push(Event {
                                id,
                                arrived,
                                rtp: raw.wrapping_add(delta as u32),
                                ext: clap.ticks,
                                packet_ext: ext,
                            });
                            events.send_modify(|n| *n += 1);
                        }
                        None => l.unmatched += 1,
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let bus = pipeline.bus().unwrap();
    std::thread::spawn(move || {
        for msg in bus.iter_timed(gst::ClockTime::NONE) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    stream_log(&shared, kind)
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("{} ({:?})", e.error(), e.debug()));
                }
                gst::MessageView::Eos(_) => break,
                _ => {}
            }
        }
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, src)
}

/// One track's loop: note each packet's arrival under its unwrapped timestamp, then hand the
/// packet to the decoder stamped with that timestamp.
async fn receive(
    track: Arc<dyn TrackRemote>,
    kind: Kind,
    shared: Arc<Shared>,
    events: watch::Sender<u64>,
) {
    let rate = match kind {
        Kind::Video => VIDEO_CLOCK,
        Kind::Audio => AUDIO_RATE,
    };
    let mut unwrap = Unwrapper {
        last: None,
        rate: rate as i64,
    };
    let mut dec: Option<(gst::Pipeline, gst_app::AppSrc)> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let ts = packet.header.timestamp;
                let ext = unwrap.ext(ts);
                let arrived = shared
                    .arrivals
                    .lock()
                    .unwrap()
                    .get(&(packet.header.ssrc, ts))
                    .copied()
                    .unwrap_or_else(Instant::now);
                {
                    let mut l = stream_log(&shared, kind).lock().unwrap();
                    l.ssrc = Some(packet.header.ssrc);
                    l.packets += 1;
                    l.arrivals.entry(ext).or_insert((ts, arrived));
                }
                let (_, src) = dec.get_or_insert_with(|| {
                    decoder(
                        kind,
                        packet.header.payload_type,
                        shared.clone(),
                        events.clone(),
                    )
                });
                if let Ok(bytes) = packet.marshal() {
                    let mut buf = gst::Buffer::from_slice(bytes.to_vec());
                    buf.get_mut().unwrap().set_pts(ext_to_pts(ext, rate));
                    let _ = src.push_buffer(buf);
                }
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
    if let Some((pipeline, src)) = dec {
        let _ = src.end_of_stream();
        let _ = pipeline.set_state(gst::State::Null);
    }
}

/// A receive-only viewer of H.264 (PT 102) and Opus (PT 111) that times every clap.
pub struct SyncViewer {
    pub pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    events: watch::Receiver<u64>,
    shared: Arc<Shared>,
}

pub const VIDEO_PT: u8 = 102;
pub const OPUS_PT: u8 = 111;

impl SyncViewer {
    pub async fn new() -> SyncViewer {
        gst::init().unwrap();
        let mut media = MediaEngine::default();
        let fb = |t: &str, p: &str| RTCPFeedback {
            typ: t.into(),
            parameter: p.into(),
        };
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_H264.into(),
                        clock_rate: VIDEO_CLOCK as u32,
                        channels: 0,
                        sdp_fmtp_line:
                            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                                .into(),
                        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
                    },
                    payload_type: VIDEO_PT,
                },
                RtpCodecKind::Video,
            )
            .unwrap();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_OPUS.into(),
                        clock_rate: AUDIO_RATE as u32,
                        channels: 2,
                        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: OPUS_PT,
                },
                RtpCodecKind::Audio,
            )
            .unwrap();
        let shared = Arc::new(Shared::default());
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .unwrap()
            .with(
                500.into(),
                ArrivalRecorder {
                    shared: shared.clone(),
                    read_queue: VecDeque::new(),
                    write_queue: VecDeque::new(),
                },
            );
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        let (events_tx, events) = watch::channel(0);
        let handler = Arc::new(Handler {
            state: state_tx,
            gathered: gathered_tx,
            shared: shared.clone(),
            events: events_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                // The daemon's check tick, so a test connects as a deployment does.
                camgate::session::fast_ice_checks(SettingEngineBuilder::new())
                    .with_include_loopback_candidate(true)
                    .build(),
            )
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        }
        SyncViewer {
            pc,
            state,
            gathered,
            events,
            shared,
        }
    }

    /// The offer, with every candidate (waits for gathering, bounded).
    pub async fn offer(&self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        let mut g = self.gathered.clone();
        tokio::time::timeout(Duration::from_secs(5), g.wait_for(|d| *d))
            .await
            .expect("gathering did not complete")
            .unwrap();
        self.pc.local_description().await.unwrap().sdp
    }

    pub async fn accept_answer(&self, sdp: &str) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp.to_owned()).unwrap())
            .await
            .unwrap();
    }

    pub async fn wait_connected(&self, within: Duration) -> bool {
        let mut s = self.state.clone();
        matches!(
            tokio::time::timeout(
                within,
                s.wait_for(|s| *s == RTCPeerConnectionState::Connected)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Waits (bounded) until `f` holds for the measurement so far; returns it either way.
    pub async fn wait_until(
        &self,
        within: Duration,
        f: impl Fn(&Measurement) -> bool,
    ) -> Measurement {
        let deadline = tokio::time::Instant::now() + within;
        let mut rx = self.events.clone();
        loop {
            let m = self.measurement();
            if f(&m) {
                return m;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.measurement(),
            }
        }
    }

    pub fn measurement(&self) -> Measurement {
        let v = self.shared.video.lock().unwrap();
        let a = self.shared.audio.lock().unwrap();
        let srs = self.shared.srs.lock().unwrap();
        measure(&v, &a, &srs)
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Pairing and statistics
// ---------------------------------------------------------------------------------------------

/// One flash and the beep of the same second.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub id: u8,
    /// Which pass through the file (0: the one the viewer joined; +1 at every loop of the
    /// video).
    pub pass: usize,
    /// Video flash arrival − audio beep arrival, ms (positive: the picture is late).
    pub arrival_offset_ms: f64,
    /// The same with the beep timed where it lies in its 20 ms packet (packet arrival plus the
    /// onset's offset in the packet), as a receiver playing each packet on arrival sounds it.
    pub in_packet_offset_ms: f64,
    /// The same from the sender reports: NTP of the flash's RTP time − NTP of the beep's.
    pub sr_offset_ms: Option<f64>,
    /// Flash arrival, relative to the first event seen (s), for the report.
    pub at_s: f64,
    /// How much later than its neighbours (±0.5 s, relative to their RTP time) the flash frame
    /// and the beep packet arrived, ms: a large value is one late packet, not a shifted stream.
    pub video_late_ms: f64,
    pub audio_late_ms: f64,
}

#[derive(Debug, Default, Clone)]
pub struct Measurement {
    pub pairs: Vec<Pair>,
    /// Pairs left out because a loop point of either stream lies between flash and beep.
    pub across_loop: usize,
    pub flashes: usize,
    pub beeps: usize,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub video_decoded: u64,
    pub audio_decoded: u64,
    pub unreadable: u64,
    pub unmatched: u64,
    pub video_srs: usize,
    pub audio_srs: usize,
    pub errors: Vec<String>,
    /// How long each pass through the file took per stream, ms (between the same second of
    /// consecutive passes, by arrival): 10 000 plus what each loop costs that pipeline.
    pub video_pass_ms: Vec<f64>,
    pub audio_pass_ms: Vec<f64>,
}

/// Median, min, max of `v` (None if empty).
pub fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((median, s[0], s[n - 1]))
}

impl Measurement {
    pub fn arrival_offsets(&self) -> Vec<f64> {
        self.pairs.iter().map(|p| p.arrival_offset_ms).collect()
    }

    pub fn in_packet_offsets(&self) -> Vec<f64> {
        self.pairs.iter().map(|p| p.in_packet_offset_ms).collect()
    }

    pub fn sr_offsets(&self) -> Vec<f64> {
        self.pairs.iter().filter_map(|p| p.sr_offset_ms).collect()
    }
}

/// Times at which a stream's clap IDs wrapped around (the file looped): the arrival of the
/// first clap of each new pass.
fn loop_points(events: &[Event]) -> Vec<Instant> {
    events
        .windows(2)
        .filter(|w| w[1].id <= w[0].id)
        .map(|w| w[1].arrived)
        .collect()
}

/// For each clap, the time to the same second of the next pass (9 to 11 s later), ms; one
/// median per loop.
fn pass_lengths(events: &[Event]) -> Vec<f64> {
    let mut per_loop: Vec<Vec<f64>> = Vec::new();
    let mut pass = 0;
    for (i, e) in events.iter().enumerate() {
        if i > 0 && e.id <= events[i - 1].id {
            pass += 1;
        }
        let next = events[i + 1..]
            .iter()
            .map(|n| ms_between(n.arrived, e.arrived))
            .zip(&events[i + 1..])
            .find(|(d, n)| n.id == e.id && (9000.0..11000.0).contains(d));
        if let Some((d, _)) = next {
            if per_loop.len() <= pass {
                per_loop.resize(pass + 1, Vec::new());
            }
            per_loop[pass].push(d);
        }
    }
    per_loop
        .iter()
        .filter_map(|v| stats(v).map(|(median, _, _)| median))
        .collect()
}

/// The sender report of `ssrc` nearest in arrival time to `at`.
fn nearest_sr(srs: &[SrRecord], ssrc: Option<u32>, at: Instant) -> Option<SrRecord> {
    let ssrc = ssrc?;
    srs.iter()
        .filter(|s| s.ssrc == ssrc)
        .min_by_key(|s| {
            if s.arrived > at {
                s.arrived - at
            } else {
                at - s.arrived
            }
        })
        .copied()
}

/// Arrival of `e` minus the median arrival its neighbours' RTP times predict, ms.
fn lateness_ms(log: &StreamLog, e: &Event, rate: u64) -> f64 {
    let span = rate as i64 / 2;
    let d = |ext: i64, at: Instant| {
        ms_between(at, e.arrived) - (ext - e.packet_ext) as f64 * 1000.0 / rate as f64
    };
    let mut around: Vec<f64> = log
        .arrivals
        .range(e.packet_ext - span..=e.packet_ext + span)
        .map(|(ext, (_, at))| d(*ext, *at))
        .collect();
    if around.is_empty() {
        return 0.0;
    }
    around.sort_by(|a, b| a.partial_cmp(b).unwrap());
    -around[around.len() / 2]
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64() * 1000.0
    } else {
        -((b - a).as_secs_f64() * 1000.0)
    }
}

/// Pairs every flash with the beep of the same second nearest to it in time (within 5 s, half
/// a pass of the file, so never one from another pass) and computes both offsets.
pub fn measure(video: &StreamLog, audio: &StreamLog, srs: &[SrRecord]) -> Measurement {
    let mut m = Measurement {
        flashes: video.events.len(),
        beeps: audio.events.len(),
        video_packets: video.packets,
        audio_packets: audio.packets,
        video_decoded: video.decoded,
        audio_decoded: audio.decoded,
        unreadable: video.unreadable + audio.unreadable,
        unmatched: video.unmatched + audio.unmatched,
        video_srs: srs.iter().filter(|s| Some(s.ssrc) == video.ssrc).count(),
        audio_srs: srs.iter().filter(|s| Some(s.ssrc) == audio.ssrc).count(),
        errors: video.errors.iter().chain(&audio.errors).cloned().collect(),
        video_pass_ms: pass_lengths(&video.events),
        audio_pass_ms: pass_lengths(&audio.events),
        ..Default::default()
    };
    let first = video
        .events
        .iter()
        .chain(&audio.events)
        .map(|e| e.arrived)
        .min();
    let video_loops = loop_points(&video.events);
    let loops: Vec<Instant> = video_loops
        .iter()
        .copied()
        .chain(loop_points(&audio.events))
        .collect();
    for f in &video.events {
        let Some(b) = audio.events.iter().filter(|b| b.id == f.id).min_by(|x, y| {
            ms_between(f.arrived, x.arrived)
                .abs()
                .partial_cmp(&ms_between(f.arrived, y.arrived).abs())
                .unwrap()
        }) else {
            continue;
        };
        let offset = ms_between(f.arrived, b.arrived);
        if offset.abs() > 5000.0 {
            continue;
        }
        let (lo, hi) = if f.arrived <= b.arrived {
            (f.arrived, b.arrived)
        } else {
            (b.arrived, f.arrived)
        };
        if loops.iter().any(|&t| t > lo && t < hi) {
            m.across_loop += 1;
            continue;
        }
        let sr_offset_ms = match (
            nearest_sr(srs, video.ssrc, f.arrived),
            nearest_sr(srs, audio.ssrc, b.arrived),
        ) {
            (Some(sv), Some(sa)) => {
                Some((sv.ntp_of(f.rtp, VIDEO_CLOCK) - sa.ntp_of(b.rtp, AUDIO_RATE)) * 1000.0)
            }
            _ => None,
        };
        let in_packet_ms = (b.ext - b.packet_ext) as f64 * 1000.0 / AUDIO_RATE as f64;
        m.pairs.push(Pair {
            id: f.id,
            pass: video_loops.iter().filter(|&&t| t <= f.arrived).count(),
            arrival_offset_ms: offset,
            in_packet_offset_ms: offset - in_packet_ms,
            sr_offset_ms,
            at_s: first.map_or(0.0, |t0| ms_between(f.arrived, t0) / 1000.0),
            video_late_ms: lateness_ms(video, f, VIDEO_CLOCK),
            audio_late_ms: lateness_ms(audio, b, AUDIO_RATE),
        });
    }
    m
}
