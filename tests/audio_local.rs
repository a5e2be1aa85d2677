//! Audio in local mode, end to end, with the real daemon binary: viewers that offer Opus or
//! only G.711 hear the test tone (decoded by GStreamer, checked by FFT), the G.711 encoder runs
//! only while someone needs it, talkback reaches the device's sink (a WAV file here) and lets
//! go of it when the viewer leaves, and bad audio input leaves everyone else playing.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::daemon::{Daemon, test_env, whep_post};
use support::viewer::{AudioKind, Heard, TestViewer, ViewerOptions, dominant_hz, rms};

const SDP: &str = "application/sdp";

fn env_with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = test_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A fresh directory for a test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("camgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Offers, POSTs, applies the answer; returns the viewer and the answer.
async fn join(d: &Daemon, opts: ViewerOptions) -> (TestViewer, String) {
    let v = TestViewer::with_options(opts).await;
    let offer = v.offer(true).await;
    let (status, _, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "WHEP POST failed: {answer}\n{}", d.log());
    v.accept_answer(&answer).await;
    (v, answer)
}

fn audio_section(answer: &str) -> &str {
    let start = answer.find("m=audio").expect("answer has an audio section");
    let rest = &answer[start..];
    match rest[2..].find("m=") {
        Some(end) => &rest[..end + 2],
        None => rest,
    }
}

fn assert_tone(heard: &Heard, hz: f64, what: &str) {
    assert!(
        heard.rms() > 500.0,
        "{what}: silence (rms {:.0}) {heard:?}",
        heard.rms()
    );
    let got = heard.dominant_hz(0.5);
    assert!(
        (got - hz).abs() < 15.0,
        "{what}: heard {got:.0} Hz, expected {hz}"
    );
}

/// Waits (bounded) until `/stats` satisfies `f`; returns the last stats either way.
async fn wait_stats(
    d: &Daemon,
    within: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let f = &f;
    let met = support::wait::until("/stats condition", within, move || async move {
        let s = d.stats().await;
        f(&s).then_some(s)
    })
    .await;
    match met {
        Ok(s) => s,
        Err(_) => d.stats().await,
    }
}

/// A test-pattern daemon whose talkback plays into the WAV file `wav`.
async fn talkback_daemon(wav: &Path) -> Daemon {
    let sink = format!("file:{}", wav.display());
    let d = Daemon::start(
        &env_with(&[
            ("CAMGATE__AUDIO__TALKBACK", "true"),
            ("CAMGATE__AUDIO__TALKBACK_SINK", &sink),
        ]),
        &[],
    );
    d.wait_healthy(Duration::from_secs(15)).await;
    d
}

/// Waits (bounded) until the daemon's talkback has played `n` packets, failing otherwise.
async fn assert_talkback_plays(d: &Daemon, n: u64) {
    let played = |s: &serde_json::Value| {
        s["audio"]["talkback"]["packets_played"]
            .as_u64()
            .unwrap_or(0)
    };
    let s = wait_stats(d, Duration::from_secs(10), |s| played(s) >= n).await;
    assert!(
        played(&s) >= n,
        "talkback played too little: {s}\n{}",
        d.log()
    );
}

/// The samples of a 16-bit PCM WAV file and its rate.
fn read_wav(path: &Path) -> (Vec<i16>, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 44 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "not a WAV"
    );
    let mut i = 12;
    let mut rate = 0;
    while i + 8 <= bytes.len() {
        let id = &bytes[i..i + 4];
        let len = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().unwrap()) as usize;
        let body = i + 8;
        if id == b"fmt " {
            rate = u32::from_le_bytes(bytes[body + 4..body + 8].try_into().unwrap());
        }
        if id == b"data" {
            let end = (body + len).min(bytes.len());
            let samples = bytes[body..end]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return (samples, rate);
        }
        i = body + len + (len & 1);
    }
    panic!("WAV without a data chunk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opus_and_g711_viewers_hear_the_tone_and_g711_runs_only_while_needed() {
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    let (opus, answer) = join(&d, ViewerOptions::browser()).await;
    let audio = audio_section(&answer);
    assert!(audio.starts_with("m=audio 9 "), "audio accepted:\n{answer}");
    assert!(audio.contains("a=rtpmap:111 opus/48000/2"), "{audio}");
    assert!(
        audio.contains("a=sendonly"),
        "audio, no talkback: sendonly\n{audio}"
    );
    let heard = opus.wait_audio(100, Duration::from_secs(10)).await;
    assert_eq!(heard.payload_type, Some(111));
    assert_tone(&heard, 440.0, "Opus viewer");
    assert!(opus.wait_frames(30, Duration::from_secs(10)).await.frames >= 30);

    // Nobody needs G.711 yet: its encoder is off.
    let s = d.stats().await;
    assert_eq!(s["health"]["audio"], "running", "{s}");
    assert_eq!(s["audio"]["g711_viewers"]["pcma"], 0, "{s}");

    let (pcma, answer) = join(
        &d,
        ViewerOptions {
            audio: vec![(8, AudioKind::Pcma)],
            ..ViewerOptions::video(102)
        },
    )
    .await;
    assert!(
        audio_section(&answer).contains("a=rtpmap:8 PCMA/8000"),
        "{answer}"
    );
    let heard = pcma.wait_audio(100, Duration::from_secs(10)).await;
    assert_eq!(heard.codec, Some("PCMA"));
    assert_tone(&heard, 440.0, "PCMA viewer");
    let s = d.stats().await;
    assert_eq!(s["audio"]["g711_viewers"]["pcma"], 1, "{s}");

    pcma.close().await;
    // The viewer's DTLS close_notify ends its session (ICE would take 15 s), and with it the
    // G.711 encoder's last user.
    let s = wait_stats(&d, Duration::from_secs(3), |s| {
        s["audio"]["g711_viewers"]["pcma"] == 0
    })
    .await;
    assert_eq!(
        s["audio"]["g711_viewers"]["pcma"], 0,
        "G.711 encoder still wanted: {s}"
    );
    // The Opus viewer never stopped hearing.
    let before = opus.heard().rtp_packets;
    assert!(
        opus.wait_audio(before + 50, Duration::from_secs(5))
            .await
            .rtp_packets
            >= before + 50
    );
}

/// A viewer talks (a 1 kHz tone, Opus over its own audio track): the daemon plays it into its
/// talkback sink — a WAV file here — and gives the sink back when the viewer leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn talkback_plays_the_viewers_tone_and_releases_the_sink() {
    let dir = temp_dir("talkback");
    let wav = dir.join("talk.wav");
    let d = talkback_daemon(&wav).await;

    let (v, answer) = join(
        &d,
        ViewerOptions {
            talk_tone_hz: Some(1000),
            ..ViewerOptions::browser()
        },
    )
    .await;
    assert!(audio_section(&answer).contains("a=sendrecv"), "{answer}");
    assert!(v.wait_connected(Duration::from_secs(10)).await);
    v.start_talking();
    assert_talkback_plays(&d, 100).await;
    // The viewer hangs up while talking: the sink is released within a second or so.
    v.close().await;
    let s = wait_stats(&d, Duration::from_secs(3), |s| {
        s["audio"]["talkback"]["state"] == "idle"
    })
    .await;
    assert_eq!(
        s["audio"]["talkback"]["state"], "idle",
        "sink not released: {s}"
    );
    let (samples, rate) = read_wav(&wav);
    assert!(
        samples.len() as u32 > rate,
        "less than a second of talkback in {}",
        wav.display()
    );
    let tail = &samples[samples.len() - rate as usize / 2..];
    assert!(rms(tail) > 500.0, "talkback is silence");
    let hz = dominant_hz(tail, rate);
    assert!(
        (hz - 1000.0).abs() < 15.0,
        "talkback played {hz:.0} Hz, not the viewer's 1000 Hz"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad audio input gets a clear answer, and the viewers already watching keep video and audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_audio_input_leaves_everyone_else_playing() {
    let dir = temp_dir("bad-audio");
    let d = talkback_daemon(&dir.join("talk.wav")).await;
    let (watcher, _) = join(&d, ViewerOptions::browser()).await;
    assert!(
        watcher
            .wait_audio(50, Duration::from_secs(10))
            .await
            .rtp_packets
            >= 50
    );

    // An audio-only offer: a clear refusal.
    let audio_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n";
    let (status, _, body) = whep_post(&d.endpoint("whep"), SDP, audio_only.into()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no video m-line"), "{body}");

    // An offer whose only audio codec we do not handle: audio is rejected (port 0), video plays,
    // and the answer stays complete (bundle, candidates in the accepted section).
    let g722 = TestViewer::with_options(ViewerOptions::browser()).await;
    let offer = g722.offer(true).await;
    let offer = offer
        .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 G722/8000")
        .replace("a=rtpmap:0 PCMU/8000\r\n", "")
        .replace("a=rtpmap:8 PCMA/8000\r\n", "")
        .replace("UDP/TLS/RTP/SAVPF 111 0 8", "UDP/TLS/RTP/SAVPF 111");
    let (status, _, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "{answer}");
    assert!(audio_section(&answer).starts_with("m=audio 0 "), "{answer}");
    let video = &answer[answer.find("m=video").unwrap()..];
    assert!(
        video.contains("a=candidate:") && video.contains("a=ice-ufrag:"),
        "{answer}"
    );
    g722.accept_answer(&answer).await;
    assert!(g722.wait_frames(15, Duration::from_secs(15)).await.frames >= 15);
    g722.close().await;

    // A talker whose audio is garbage: counted and dropped, nothing else is disturbed.
    let (noisy, _) = join(
        &d,
        ViewerOptions {
            talk_tone_hz: Some(1000),
            ..ViewerOptions::browser()
        },
    )
    .await;
    assert!(noisy.wait_connected(Duration::from_secs(10)).await);
    let frames = watcher.decoded().frames;
    let packets = watcher.heard().rtp_packets;
    noisy.send_garbage_audio(300).await;
    assert!(
        watcher
            .wait_frames(frames + 30, Duration::from_secs(10))
            .await
            .frames
            >= frames + 30
    );
    assert!(
        watcher
            .wait_audio(packets + 50, Duration::from_secs(10))
            .await
            .rtp_packets
            >= packets + 50
    );
    // The talkback player is still usable: the same viewer now sends a real tone.
    noisy.start_talking();
    assert_talkback_plays(&d, 50).await;
    noisy.close().await;
    assert!(d.stats().await["health"]["ok"].as_bool().unwrap_or(false));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sound card that does not exist: one clear log line, talkback off, audio answered
/// `sendonly`, and the viewer hears the camera.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_sound_card_turns_talkback_off_and_audio_still_plays() {
    let d = Daemon::start(
        &env_with(&[
            ("CAMGATE__AUDIO__TALKBACK", "true"),
            ("CAMGATE__AUDIO__TALKBACK_SINK", "alsa:hw:99"),
        ]),
        &[],
    );
    d.wait_healthy(Duration::from_secs(15)).await;
    let log = d.log();
    assert!(
        log.contains("talkback is off") && log.contains("hw:99"),
        "no clear line about the sound card:\n{log}"
    );
    let (v, answer) = join(
        &d,
        ViewerOptions {
            talk_tone_hz: Some(1000),
            ..ViewerOptions::browser()
        },
    )
    .await;
    assert!(audio_section(&answer).contains("a=sendonly"), "{answer}");
    assert_tone(
        &v.wait_audio(100, Duration::from_secs(10)).await,
        440.0,
        "viewer",
    );
}

/// An RTSP IP camera with AAC (and one with G.711 A-law) audio: viewers hear it as Opus, and
/// its H.264 is still passed through untouched (no encoder in the daemon).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_rtsp_cameras_aac_or_pcma_is_heard_in_opus_and_its_video_is_passed_through() {
    gstreamer::init().unwrap();
    let aac = ["avenc_aac", "voaacenc", "fdkaacenc"]
        .into_iter()
        .find(|e| gstreamer::ElementFactory::find(e).is_some())
        .expect("no AAC encoder installed (gstreamer1.0-libav)");
    for (name, audio) in [
        ("AAC", format!("audiotestsrc is-live=true freq=440 volume=0.5 ! audioconvert ! audioresample ! {aac} ! rtpmp4gpay name=pay1 pt=97")),
        ("PCMA", "audiotestsrc is-live=true freq=440 volume=0.5 ! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1 pt=8".to_string()),
    ] {
        let camera = support::rtsp::RtspServer::start_unshared(&format!(
            "( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline \
             ! rtph264pay name=pay0 pt=96 config-interval=-1 {audio} )"
        ));
        let url = camera.url();
        let d = Daemon::start(
            &env_with(&[("CAMGATE__SOURCE__KIND", "rtsp"), ("CAMGATE__SOURCE__URL", &url)]),
            &[],
        );
        d.wait_healthy(Duration::from_secs(20)).await;
        let (v, answer) = join(&d, ViewerOptions::browser()).await;
        assert!(audio_section(&answer).contains("a=rtpmap:111 opus/48000/2"), "{name}: {answer}");
        let got = v.wait_frames(20, Duration::from_secs(20)).await;
        assert!(got.frames >= 20, "{name}: decoded {} frames\n{}", got.frames, d.log());
        assert_eq!((got.width, got.height), (320, 240), "{name}: the camera's own picture");
        let heard = v.wait_audio(100, Duration::from_secs(15)).await;
        assert_eq!(heard.codec, Some("OPUS"), "{name}");
        assert_tone(&heard, 440.0, &format!("{name} camera"));
        let s = d.stats().await;
        assert_eq!(s["health"]["passthrough"], true, "{name}: {s}");
        assert!(s["health"]["encoder"].is_null(), "{name}: video was re-encoded: {s}");
        assert_eq!(s["audio"]["capture"]["state"], "running", "{name}: {s}");
        v.close().await;
    }
}
