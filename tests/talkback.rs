//! Talkback against real GStreamer: a live tone is encoded to RTP (Opus or PCMU) by a
//! GStreamer pipeline, parsed with the WebRTC stack's RTP parser, pushed into a `Talker`,
//! and played into a WAV file, whose spectrum must show the tone. Also: floor handover
//! between two talkers, garbage RTP, release timing, and sound outputs that do not exist.
//! Every wait is bounded.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use camgate::media::talkback::{
    AudioCodec, Talkback, TalkbackOptions, TalkbackSink, TalkbackState, TalkbackStatus, Talker,
};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rtc::rtp::Packet;
use rtc::rtp::header::Header;
use rtc::shared::marshal::Unmarshal;
use rustfft::{FftPlanner, num_complex::Complex};

const RELEASE: Duration = Duration::from_secs(1);
/// Allowed on top of `release_after` between the last packet and the device being closed
/// (drain the WAV, set the pipeline to NULL, and the polling interval).
const RELEASE_MARGIN: Duration = Duration::from_millis(500);

use support::gst::init;

fn temp_wav(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("camgate-talkback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wav"));
    let _ = std::fs::remove_file(&path);
    path
}

fn start_file(path: &Path) -> Talkback {
    Talkback::start(TalkbackOptions {
        sink: TalkbackSink::File(path.to_path_buf()),
        release_after: RELEASE,
    })
    .unwrap()
}

/// A live tone encoded to RTP, pulled packet by packet.
struct ToneSource {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl ToneSource {
    fn new(freq: u32, codec: AudioCodec, ssrc: u32) -> ToneSource {
        let encode = match codec {
            AudioCodec::Opus => format!(
                "audio/x-raw,rate=48000,channels=1 ! opusenc ! rtpopuspay pt=111 ssrc={ssrc}"
            ),
            AudioCodec::Pcmu => {
                format!("audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay pt=0 ssrc={ssrc}")
            }
            AudioCodec::Pcma => {
                format!("audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay pt=8 ssrc={ssrc}")
            }
        };
        let desc = format!(
            "audiotestsrc freq={freq} is-live=true ! audioconvert ! audioresample ! {encode} \
             ! appsink name=sink sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .unwrap();
        ToneSource { pipeline, sink }
    }

    fn play(&self) {
        self.pipeline.set_state(gst::State::Playing).unwrap();
    }

    /// Every packet the encoder has produced so far, waiting up to `wait` for the first.
    fn packets(&self, wait: Duration) -> Vec<Packet> {
        let mut out = Vec::new();
        let mut timeout = gst::ClockTime::from_nseconds(wait.as_nanos() as u64);
        while let Some(sample) = self.sink.try_pull_sample(timeout) {
            timeout = gst::ClockTime::ZERO;
            let buffer = sample.buffer().unwrap();
            let map = buffer.map_readable().unwrap();
            out.push(Packet::unmarshal(&mut map.as_slice()).unwrap());
        }
        out
    }
}

impl Drop for ToneSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Sends `source`'s packets to `talker` as they are produced, for `duration`; returns when
/// the last one was pushed and how many were.
fn talk(source: &ToneSource, talker: &Talker, duration: Duration) -> (Instant, usize) {
    source.play();
    let end = Instant::now() + duration;
    let mut last = Instant::now();
    let mut n = 0;
    while Instant::now() < end {
        for p in source.packets(Duration::from_millis(50)) {
            talker.push(&p);
            last = Instant::now();
            n += 1;
        }
    }
    source.pipeline.set_state(gst::State::Null).unwrap();
    (last, n)
}

/// Polls `status()` every 5 ms until `cond` holds; fails after `timeout`.
fn wait_status(
    tb: &Talkback,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&TalkbackStatus) -> bool,
) -> TalkbackStatus {
    support::wait::until_blocking(what, timeout, || {
        let s = tb.status();
        cond(&s).then_some(s)
    })
    .unwrap_or_else(|e| panic!("{e}; status {:?}", tb.status()))
}

/// Waits for the release after the last packet, returns how long it took.
fn await_release(tb: &Talkback, last_packet: Instant) -> Duration {
    wait_status(
        tb,
        "the sink to be released",
        RELEASE + RELEASE_MARGIN * 2,
        |s| s.state == TalkbackState::Idle,
    );
    let took = last_packet.elapsed();
    eprintln!("sink released {took:?} after the last packet");
    assert!(
        took >= RELEASE - Duration::from_millis(20),
        "released after only {took:?} of silence"
    );
    assert!(
        took <= RELEASE + RELEASE_MARGIN,
        "released {took:?} after the last packet"
    );
    took
}

/// Mono S16LE samples of a WAV file, checking that its header was finalized (sizes match
/// the file).
fn read_wav(path: &Path) -> (u32, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 44, "WAV of {} bytes", bytes.len());
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let riff_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(riff_len + 8, bytes.len(), "RIFF size not finalized");
    let mut at = 12;
    let mut rate = 0;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        match id {
            b"fmt " => {
                let channels = u16::from_le_bytes(body[2..4].try_into().unwrap());
                rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                let bits = u16::from_le_bytes(body[14..16].try_into().unwrap());
                assert_eq!((channels, bits), (1, 16));
            }
            b"data" => {
                assert_eq!(body.len(), len, "data size not finalized");
                let samples = body
                    .chunks_exact(2)
                    .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
                    .collect();
                return (rate, samples);
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    panic!("no data chunk in {}", path.display());
}

struct Spectrum {
    /// Magnitude per bin.
    mags: Vec<f32>,
    hz_per_bin: f32,
}

impl Spectrum {
    /// Of the middle of `samples` (skipping the start, where decoders ramp up), Hann-windowed.
    fn of(rate: u32, samples: &[f32]) -> Spectrum {
        let n = 16_384.min(samples.len().next_power_of_two() / 2);
        let start = (samples.len() - n) / 2;
        let mut buf: Vec<Complex<f32>> = samples[start..start + n]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let w = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos();
                Complex::new(s * w, 0.0)
            })
            .collect();
        FftPlanner::new().plan_fft_forward(n).process(&mut buf);
        Spectrum {
            mags: buf[..n / 2].iter().map(|c| c.norm()).collect(),
            hz_per_bin: rate as f32 / n as f32,
        }
    }

    fn peak_hz(&self) -> f32 {
        let (bin, _) = self
            .mags
            .iter()
            .enumerate()
            .skip(1)
            .fold(
                (0, 0.0f32),
                |best, (i, &m)| if m > best.1 { (i, m) } else { best },
            );
        bin as f32 * self.hz_per_bin
    }

    /// Strongest magnitude within 10 Hz of `hz`.
    fn around(&self, hz: f32) -> f32 {
        let lo = ((hz - 10.0) / self.hz_per_bin).max(0.0) as usize;
        let hi = (((hz + 10.0) / self.hz_per_bin) as usize).min(self.mags.len() - 1);
        self.mags[lo..=hi].iter().copied().fold(0.0, f32::max)
    }
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// The WAV holds a clear tone of `hz` (± 20 Hz), well above silence; returns its spectrum.
fn assert_tone(path: &Path, hz: f32, min_seconds: f32) -> Spectrum {
    let (rate, samples) = read_wav(path);
    assert_eq!(rate, 48_000);
    let seconds = samples.len() as f32 / rate as f32;
    assert!(seconds >= min_seconds, "only {seconds} s of audio");
    let level = rms(&samples[samples.len() / 4..samples.len() * 3 / 4]);
    let spectrum = Spectrum::of(rate, &samples);
    let peak = spectrum.peak_hz();
    eprintln!(
        "{}: {seconds:.2} s, rms {level:.3}, peak {peak:.1} Hz",
        path.display()
    );
    assert!(level > 0.05, "rms {level}: silence");
    assert!(
        (peak - hz).abs() <= 20.0,
        "dominant {peak} Hz, want {hz} Hz"
    );
    spectrum
}

fn play_tone(codec: AudioCodec, pt: u8, name: &str) {
    init();
    let wav = temp_wav(name);
    let tb = start_file(&wav);
    let talker = tb.talker("alice", codec, pt);
    let source = ToneSource::new(1000, codec, 0x1111);
    let (last, sent) = talk(&source, &talker, Duration::from_millis(1100));
    let playing = tb.status();
    assert_eq!(playing.state, TalkbackState::Playing, "{playing:?}");
    assert_eq!(playing.talker.as_deref(), Some("alice"));
    await_release(&tb, last);
    let s = tb.status();
    assert_eq!(s.talker, None);
    assert_eq!(s.packets_played, sent as u64, "{s:?}");
    assert_eq!(
        (
            s.talk_bursts,
            s.packets_rejected,
            s.packets_dropped,
            s.packets_failed
        ),
        (1, 0, 0, 0),
        "{s:?}"
    );
    assert_tone(&wav, 1000.0, 0.8);
    drop(talker);
    tb.stop();
}

#[test]
fn opus_tone_is_played_and_the_sink_released_after_a_second() {
    play_tone(AudioCodec::Opus, 111, "opus");
}

#[test]
fn pcmu_tone_is_played_and_the_sink_released_after_a_second() {
    play_tone(AudioCodec::Pcmu, 0, "pcmu");
}

#[test]
fn newest_talker_takes_the_floor_and_the_other_is_dropped() {
    init();
    let wav = temp_wav("handover");
    let tb = start_file(&wav);
    let alice = tb.talker("alice", AudioCodec::Opus, 111);
    let bob = tb.talker("bob", AudioCodec::Opus, 111);
    let a = ToneSource::new(400, AudioCodec::Opus, 0xaaaa);
    let b = ToneSource::new(1000, AudioCodec::Opus, 0xbbbb);
    a.play();
    let t0 = Instant::now();
    let (mut a_before, mut a_after, mut b_sent) = (0u64, 0u64, 0u64);
    let mut last = t0;
    let mut b_started = false;
    while t0.elapsed() < Duration::from_millis(2200) {
        if !b_started && t0.elapsed() >= Duration::from_millis(600) {
            b.play();
            b_started = true;
        }
        for p in a.packets(Duration::from_millis(5)) {
            alice.push(&p);
            if b_sent == 0 {
                a_before += 1
            } else {
                a_after += 1
            }
        }
        if b_started {
            for p in b.packets(Duration::ZERO) {
                bob.push(&p);
                b_sent += 1;
                // Bob holds the floor: his silence is what releases the sink.
                last = Instant::now();
            }
        }
        if b_sent > 0 && t0.elapsed() > Duration::from_millis(1000) {
            let s = tb.status();
            assert_eq!(s.talker.as_deref(), Some("bob"), "{s:?}");
        }
    }
    drop((a, b));
    await_release(&tb, last);
    let s = tb.status();
    eprintln!("{s:?}");
    assert_eq!(s.talk_bursts, 2, "{s:?}");
    // Every packet of Alice's after Bob's first one is dropped.
    assert_eq!(s.packets_dropped, a_after, "{s:?}");
    assert_eq!(
        s.packets_played + s.packets_dropped,
        a_before + a_after + b_sent
    );
    // The file holds Bob's burst: his tone, and none of Alice's.
    let spectrum = assert_tone(&wav, 1000.0, 1.0);
    let ratio = spectrum.around(400.0) / spectrum.around(1000.0);
    assert!(ratio < 0.01, "400 Hz at {ratio} of the 1000 Hz peak");
    drop((alice, bob));
    tb.stop();
}

/// Deterministic noise for garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_rtp_is_rejected_and_the_tone_still_plays() {
    init();
    let wav = temp_wav("garbage");
    let tb = start_file(&wav);
    let talker = tb.talker("mallory", AudioCodec::Opus, 111);
    let source = ToneSource::new(1000, AudioCodec::Opus, 0x1234);
    source.play();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut good, mut sure_garbage, mut maybe_garbage) = (0u64, 0u64, 0u64);
    let mut last = Instant::now();
    let end = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < end {
        for p in source.packets(Duration::from_millis(50)) {
            talker.push(&p);
            good += 1;
            // Random bytes, whatever the RTP parser makes of them.
            let len = 12 + (rng.next() % 200) as usize;
            let noise = rng.bytes(len);
            if let Ok(g) = Packet::unmarshal(&mut noise.as_slice()) {
                if g.header.version != 2 || g.header.payload_type != 111 {
                    sure_garbage += 1;
                } else {
                    maybe_garbage += 1;
                }
                talker.push(&g);
            }
            let mut wrong_pt = p.clone();
            wrong_pt.header.payload_type = 0;
            let mut version = p.clone();
            version.header.version = 1;
            let mut truncated = p.clone();
            truncated.payload = Bytes::new();
            // Random payload under another SSRC.
            let mut foreign = p.clone();
            foreign.header.ssrc = 0xdead_beef;
            foreign.payload = Bytes::from(rng.bytes(80));
            // The talker's own stream with impossible Opus framing (code 3, zero frames).
            let mut framing = p.clone();
            framing.payload = Bytes::from_static(&[0x7b, 0x00, 1, 2, 3]);
            for g in [wrong_pt, version, truncated, foreign, framing] {
                talker.push(&g);
                sure_garbage += 1;
            }
            // Random bytes in a payload with a valid table of contents, as a duplicate of
            // the packet just sent: passes every check, the jitter buffer drops it.
            let mut dup = p.clone();
            let mut payload = rng.bytes(60);
            payload[0] = 0x78;
            dup.payload = Bytes::from(payload);
            talker.push(&dup);
            last = Instant::now();
        }
    }
    drop(source);
    await_release(&tb, last);
    let s = tb.status();
    eprintln!("{s:?}; sure garbage {sure_garbage}, maybe {maybe_garbage}");
    assert!(
        s.packets_rejected >= sure_garbage && s.packets_rejected <= sure_garbage + maybe_garbage,
        "{s:?}"
    );
    assert_eq!(s.talk_bursts, 1, "{s:?}");
    assert!(s.packets_played >= good, "{s:?}");
    assert_tone(&wav, 1000.0, 0.8);
    drop(talker);
    tb.stop();
}

#[test]
fn talker_leaving_releases_the_sink_at_once() {
    init();
    let wav = temp_wav("leave");
    let tb = start_file(&wav);
    let talker = tb.talker("alice", AudioCodec::Opus, 111);
    let source = ToneSource::new(1000, AudioCodec::Opus, 0x1111);
    talk(&source, &talker, Duration::from_millis(600));
    assert_eq!(tb.status().state, TalkbackState::Playing);
    let left = Instant::now();
    drop(talker);
    wait_status(&tb, "release on leave", Duration::from_millis(300), |s| {
        s.state == TalkbackState::Idle
    });
    eprintln!("released {:?} after the talker left", left.elapsed());
    assert_tone(&wav, 1000.0, 0.4);
    tb.stop();
}

#[test]
fn stop_finalizes_the_file_while_someone_talks() {
    init();
    let wav = temp_wav("stop");
    let tb = start_file(&wav);
    let talker = tb.talker("alice", AudioCodec::Pcmu, 0);
    let source = ToneSource::new(1000, AudioCodec::Pcmu, 0x1111);
    talk(&source, &talker, Duration::from_millis(700));
    let status = tb.clone();
    tb.stop();
    assert_eq!(status.status().state, TalkbackState::Stopped);
    // Pushing after stop is harmless.
    talker.push(&Packet {
        header: Header {
            version: 2,
            payload_type: 0,
            ..Default::default()
        },
        payload: Bytes::from_static(&[0xff; 160]),
    });
    assert_tone(&wav, 1000.0, 0.4);
}

#[test]
fn missing_alsa_device_fails_at_start_naming_it() {
    init();
    let err = Talkback::start(TalkbackOptions {
        sink: TalkbackSink::Alsa("hw:99".into()),
        release_after: RELEASE,
    })
    .err()
    .expect("hw:99 must not open");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.contains("alsa:hw:99"), "{text}");
}

#[test]
fn unwritable_file_fails_at_start_naming_it() {
    init();
    let path = PathBuf::from("/nonexistent-camgate-dir/out.wav");
    let err = Talkback::start(TalkbackOptions {
        sink: TalkbackSink::File(path),
        release_after: RELEASE,
    })
    .err()
    .expect("a file in a missing directory must not open");
    let text = err.to_string();
    assert!(text.contains("/nonexistent-camgate-dir/out.wav"), "{text}");
}

/// This machine has no sound card and no PulseAudio server; where one exists, these sinks
/// may open, and then there is nothing to check.
#[test]
fn unreachable_pulse_or_no_sound_at_all_fails_at_start() {
    init();
    for sink in [
        TalkbackSink::Pulse("camgate-no-such-sink".into()),
        TalkbackSink::Default,
    ] {
        let name = sink.to_string();
        match Talkback::start(TalkbackOptions {
            sink,
            release_after: RELEASE,
        }) {
            Ok(tb) => {
                eprintln!("{name} opened here; nothing to check");
                tb.stop();
            }
            Err(e) => {
                let text = e.to_string();
                eprintln!("{text}");
                assert!(text.contains(&format!("sound output {name} ")), "{text}");
            }
        }
    }
}

/// `/dev/full` opens fine and then fails every write: a sound output that breaks while
/// playing (an unplugged USB speaker). The failure shows in status, nothing panics, the
/// holder's packets are counted as failed, the output is retried while she keeps talking,
/// and the next burst tries again.
#[test]
fn output_failing_while_playing_is_reported_and_retried() {
    init();
    let tb = Talkback::start(TalkbackOptions {
        sink: TalkbackSink::File("/dev/full".into()),
        release_after: RELEASE,
    })
    .unwrap();
    let talker = tb.talker("alice", AudioCodec::Opus, 111);
    let source = ToneSource::new(1000, AudioCodec::Opus, 0x1111);
    let (last, _) = talk(&source, &talker, Duration::from_millis(3500));
    let s = tb.status();
    eprintln!("{s:?}");
    let TalkbackState::Error(e) = &s.state else {
        panic!("state {:?}", s.state)
    };
    assert!(e.contains("No space left"), "{e}");
    assert_eq!(s.last_error.as_deref(), Some(e.as_str()));
    assert_eq!(s.talker.as_deref(), Some("alice"));
    assert!(s.packets_failed > 0 && s.reopens >= 1, "{s:?}");
    assert_eq!(s.talk_bursts, 1);
    // The burst ends as usual; the error stays visible until an output opens again.
    let s = wait_status(&tb, "the burst to end", RELEASE * 2, |s| s.talker.is_none());
    assert!(last.elapsed() >= RELEASE - Duration::from_millis(20));
    assert!(matches!(s.state, TalkbackState::Error(_)), "{s:?}");
    // The next burst tries again.
    let source = ToneSource::new(1000, AudioCodec::Opus, 0x2222);
    talk(&source, &talker, Duration::from_millis(300));
    assert_eq!(tb.status().talk_bursts, 2);
    drop(talker);
    tb.stop();
}
