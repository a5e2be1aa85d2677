//! The page at `/` in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/page.mjs` (playwright-core), plays the daemon's stream, shows what it plays,
//! and comes back by itself when the daemon restarts on the same port. With audio: it starts
//! muted and plays the camera's sound after Unmute, sends the (fake) microphone while "Hold to
//! talk" is held and nothing after, copes with a refused microphone, and says when the camera
//! has no sound.
//!
//! Needs `node` and `npm ci --prefix tests/browser` (playwright-core only; it downloads no
//! browser) and `/usr/bin/chromium` (or `CAMGATE_CHROMIUM`). Missing pieces fail the test with
//! the command to run: a silently skipped browser test would hide a broken page.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::{Daemon, test_env};

/// `tests/browser/page.mjs`, after checking that what it needs is installed.
fn page_script() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "{}/node_modules is missing: run `npm ci --prefix tests/browser` (installs the pinned \
         playwright-core; it never downloads a browser)",
        dir.display()
    );
    let chromium = std::env::var("CAMGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run `apt-get install chromium` (or point CAMGATE_CHROMIUM at one)"
    );
    dir.join("page.mjs")
}

/// One run of `node page.mjs`: its stdout line by line as it comes, its stdin for `RESTARTED`.
struct PageRun {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

/// How a run ended.
struct PageResult {
    success: bool,
    /// The last JSON line the script printed (`Value::Null` if none).
    json: Value,
    output: String,
}

impl PageRun {
    fn start(url: &str, args: &[&str]) -> PageRun {
        let script = page_script();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(url)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `node {}`: {e} (is nodejs installed?)",
                    script.display()
                )
            });
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[page.mjs] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        PageRun {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Waits (bounded) for a stdout line starting with `prefix`; returns the rest of it.
    fn wait_line(&mut self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let rest = line.strip_prefix(prefix).map(str::to_owned);
                    self.seen.push(line);
                    if rest.is_some() {
                        return rest;
                    }
                }
                // Timed out, or the script exited without saying it.
                Err(_) => return None,
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}").expect("write to page.mjs");
        stdin.flush().expect("flush page.mjs stdin");
    }

    /// Waits (bounded) for the script to exit; kills it if it does not.
    fn finish(mut self, within: Duration) -> PageResult {
        let exited = support::wait::until_blocking("page.mjs exit", within, || {
            self.child.try_wait().expect("wait for page.mjs")
        });
        let status = match exited {
            Ok(status) => Some(status),
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        };
        // The pipe is closed now, so this drains and ends.
        self.seen.extend(self.lines.try_iter());
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let json = self
            .seen
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or(Value::Null);
        let output = format!(
            "exit: {}\nstdout:\n{}\nstderr:\n{stderr}",
            status.map_or("killed after timeout".to_string(), |s| s.to_string()),
            self.seen.join("\n")
        );
        PageResult {
            success: status.is_some_and(|s| s.success()),
            json,
            output,
        }
    }
}

impl Drop for PageRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} missing or not a count: {v}"))
}

/// A port that was free a moment ago, so a restarted daemon can come back on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// What every playing page must show: checked by the script, asserted again here on its report.
fn assert_plays(j: &Value, context: &str) {
    assert_eq!(j["resolution"], "640x480", "{context}: video size");
    assert!(as_u64(&j["frames"], "frames") > 0, "{context}: no frames");
    let header = &j["header"];
    assert_eq!(header["state"], "connected", "{context}: #state");
    assert_eq!(header["res"], "640×480", "{context}: #res");
    assert!(
        header["fps"].as_f64().unwrap_or(0.0) > 0.0,
        "{context}: #fps {}",
        header["fps"]
    );
    assert!(
        as_u64(&header["decoded"], "#decoded") > 0,
        "{context}: #decoded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_the_test_pattern_and_shows_what_it_plays() {
    page_script();
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    // CAMGATE_PAGE_SCREENSHOT keeps the picture for a person to look at.
    let keep = std::env::var_os("CAMGATE_PAGE_SCREENSHOT").map(PathBuf::from);
    let shot = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("camgate-page-{}.png", std::process::id()))
    });
    let run = PageRun::start(&d.url, &["--screenshot", shot.to_str().unwrap()]);
    let r = run.finish(Duration::from_secs(60));
    assert!(
        r.success && r.json["ok"] == true,
        "the page did not play:\n{}\n-- daemon --\n{}",
        r.output,
        d.log()
    );
    assert_plays(&r.json, "first connection");
    let first = as_u64(&r.json["firstFrameMs"], "firstFrameMs");
    assert!(
        first < 10_000,
        "first frame {first} ms after opening the page"
    );

    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "screenshot is not a real PNG ({} bytes)",
        png.len()
    );
    if keep.is_none() {
        let _ = std::fs::remove_file(&shot);
    }
}

/// A WHEP player in Chromium that hangs up with `RTCPeerConnection.close()` and no DELETE
/// (`tests/browser/hangup.mjs`): Chromium's DTLS close_notify ends the session within a
/// second, where ICE alone would hold the slot for 15 s (5 s disconnected + 10 s failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_that_hangs_up_without_delete_is_gone_at_once() {
    let script = page_script().with_file_name("hangup.mjs");
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let url = d.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `node {}`: {e}", script.display()))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let j: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    assert!(
        out.status.success() && j.is_object(),
        "hangup.mjs failed:\n{stdout}\n{}\n-- daemon --\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    eprintln!("MEASURE Chromium hangup: {j}");
    assert_eq!(j["sessionsBefore"], 1, "{j}");
    assert!(as_u64(&j["framesDecoded"], "framesDecoded") >= 5, "{j}");
    let gone = j["goneMs"].as_i64().unwrap_or(-1);
    assert!(
        (0..3000).contains(&gone),
        "session listed {gone} ms after Chromium closed (-1: still after 20 s): {j}\n{}",
        d.log()
    );
    assert!(
        d.log().contains("viewer closed the connection"),
        "session ended for another reason:\n{}",
        d.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_again_after_the_daemon_restarts_on_the_same_port() {
    page_script();
    let listen = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&test_env(), &["--listen", &listen]);
    d.wait_healthy(Duration::from_secs(15)).await;
    let url = d.url.clone();

    let mut run = PageRun::start(&url, &["--reconnect"]);
    let playing = run.wait_line("PLAYING ", Duration::from_secs(60));
    let Some(playing) = playing else {
        let r = run.finish(Duration::from_secs(10));
        panic!(
            "the page never played before the restart:\n{}\n-- daemon --\n{}",
            r.output,
            d.log()
        );
    };
    let before: Value = serde_json::from_str(&playing).expect("PLAYING carries JSON");
    assert_plays(&before, "before the restart");

    let stopped = Instant::now();
    let (clean, took) = d.terminate();
    assert!(clean, "daemon did not exit cleanly on SIGTERM ({took:?})");
    let d = Daemon::start(&test_env(), &["--listen", &listen]);
    assert_eq!(d.url, url, "restarted daemon must be on the same address");
    run.send("RESTARTED");
    let gap = stopped.elapsed();

    let r = run.finish(Duration::from_secs(60));
    assert!(
        r.success && r.json["ok"] == true,
        "the page did not play again after the restart:\n{}\n-- new daemon --\n{}",
        r.output,
        d.log()
    );
    assert_plays(&r.json["afterRestart"], "after the restart");
    let reconnect = as_u64(&r.json["reconnectMs"], "reconnectMs");
    assert!(
        reconnect < 15_000,
        "playing again {reconnect} ms after the restart"
    );
    // The page must have noticed: something other than "connected" was shown in between.
    let states = r.json["states"].as_array().expect("states");
    assert!(
        states
            .iter()
            .any(|s| s.as_str().is_some_and(|s| !s.starts_with("connected@"))),
        "the page never showed that it lost the daemon: {states:?}"
    );
    eprintln!(
        "reconnect: daemon down for {} ms, page playing again {reconnect} ms after the restart",
        gap.as_millis()
    );
}

// ---- Audio: the camera's sound, push-to-talk, and what the page shows without them. ----
//
// Some checks below need the daemon to really send audio (the audio capture) or really play
// what a viewer says (talkback). Their messages start with "[needs the audio capture]" or
// "[needs talkback]" so a failure says at once which half is missing.

/// `env` with each `(key, value)` of `set` in place of what it had for that key.
fn env_with(mut env: Vec<(String, String)>, set: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in set {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// A fresh directory for one test's files (kept when the test fails, for a look).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("camgate-page-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Polls `GET /stats` until `pred` holds (Ok with that snapshot) or `within` has passed (Err
/// with the last one).
async fn poll_stats(
    d: &Daemon,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value, Value> {
    let pred = &pred;
    let met = support::wait::until("/stats condition", within, move || async move {
        let s = d.stats().await;
        pred(&s).then_some(s)
    })
    .await;
    match met {
        Ok(s) => Ok(s),
        Err(_) => Err(d.stats().await),
    }
}

/// The one session in a /stats snapshot (the page is the only viewer).
fn the_session(s: &Value) -> Option<&Value> {
    match s["sessions"].as_array().map(Vec::as_slice) {
        Some([one]) => Some(one),
        _ => None,
    }
}

/// Waits for the page's `PLAYING` line and checks it; panics with everything known if it never
/// comes.
fn wait_playing(mut run: PageRun, d: &Daemon, context: &str) -> (PageRun, Value) {
    let Some(line) = run.wait_line("PLAYING ", Duration::from_secs(60)) else {
        let r = run.finish(Duration::from_secs(10));
        panic!(
            "{context}: the page never played:\n{}\n-- daemon --\n{}",
            r.output,
            d.log()
        );
    };
    let j: Value = serde_json::from_str(&line).expect("PLAYING carries JSON");
    assert_plays(&j, context);
    (run, j)
}

/// The answer's audio section as the page saw it: (codec like "opus/111", direction).
fn answer_audio(j: &Value, context: &str) -> (String, String) {
    let a = &j["answerAudio"];
    let codec = a["codec"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: no audio codec in the answer: {a}"));
    assert_ne!(a["port"], 0, "{context}: the answer rejected audio: {a}");
    (
        codec.to_string(),
        a["direction"].as_str().unwrap_or("").to_string(),
    )
}

/// The 16-bit samples of a PCM WAV file (all channels interleaved) and its rate.
fn wav_samples(path: &Path) -> (u32, u16, Vec<i16>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "{} is not a WAV file ({} bytes)",
        path.display(),
        bytes.len()
    );
    let (mut fmt, mut data) = (None, None);
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        match id {
            b"fmt " => fmt = Some(body),
            b"data" => data = Some(body),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    let fmt = fmt.unwrap_or_else(|| panic!("{}: no fmt chunk", path.display()));
    let data = data.unwrap_or_else(|| panic!("{}: no data chunk", path.display()));
    assert!(fmt.len() >= 16, "{}: short fmt chunk", path.display());
    let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
    let rate = u32::from_le_bytes(fmt[4..8].try_into().unwrap());
    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
    assert_eq!(bits, 16, "{}: {bits}-bit samples", path.display());
    // wavenc writes the sizes when the stream ends: an empty data chunk in a file with bytes
    // after the header means the file was not finalized (not drained before it was closed).
    assert!(
        !data.is_empty(),
        "{}: empty data chunk in a {}-byte file (header not finalized?)",
        path.display(),
        bytes.len()
    );
    let samples = data
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    (rate, channels, samples)
}

fn assert_png(path: &Path) {
    let png = std::fs::read(path).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "screenshot is not a real PNG ({} bytes)",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_starts_muted_and_plays_the_camera_sound_after_unmute() {
    page_script();
    // Test pattern → test tone; talkback off: the answer is sendonly.
    let d = Daemon::start(&test_env(), &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    let run = PageRun::start(&d.url, &["--audio"]);
    let (run, playing) = wait_playing(run, &d, "with audio");

    // The answer and the controls the page shows for it.
    let (codec, direction) = answer_audio(&playing, "audio answer");
    assert!(codec.starts_with("opus/"), "audio codec {codec}");
    assert_eq!(
        direction, "sendonly",
        "audio, no talkback: the camera only sends"
    );
    assert_eq!(
        playing["offerOrder"], "audio,video",
        "the page's offer: audio first"
    );
    let ui = &playing["audioUi"];
    assert_eq!(ui["muted"], true, "the video must start muted: {ui}");
    assert_eq!(ui["unmute"]["text"], "Unmute", "Unmute button: {ui}");
    assert_eq!(
        ui["tracks"], "audio+video",
        "one stream with both tracks: {ui}"
    );
    assert!(ui["talk"].is_null(), "a talk button without talkback: {ui}");
    assert!(ui["noaudio"].is_null(), "'no audio' shown with audio: {ui}");

    // The daemon agrees, and (with a real capture) sends this viewer audio.
    let want = format!("{codec} sendonly");
    let session = poll_stats(&d, Duration::from_secs(10), |s| {
        the_session(s).is_some_and(|x| x["audio"] == want.as_str())
    })
    .await;
    assert!(
        session.is_ok(),
        "/stats: the session's audio is not {want:?}: {}",
        session.unwrap_err()
    );
    let sent = poll_stats(&d, Duration::from_secs(10), |s| {
        the_session(s).is_some_and(|x| x["audio_packets_sent"].as_u64().unwrap_or(0) >= 50)
    })
    .await;

    let r = run.finish(Duration::from_secs(60));
    let a = &r.json["audio"];
    assert!(
        a.is_object(),
        "the page's audio checks did not run:\n{}\n-- daemon --\n{}",
        r.output,
        d.log()
    );
    assert_eq!(a["startedMuted"], true, "started muted: {a}");
    assert_eq!(a["muted"], false, "still muted after clicking Unmute: {a}");
    assert_eq!(a["button"], "Mute", "the button after unmuting: {a}");
    eprintln!(
        "audio: heard {} — {} packets and {} samples in the last span, energy +{}, max level {}, header {:?}",
        a["heard"], a["packetsGrew"], a["samplesGrew"], a["energyGrew"], a["maxLevel"], a["header"]
    );

    // What a listener hears: only a daemon with a working audio source can pass these.
    let sent = sent.unwrap_or_else(|s| {
        panic!(
            "[needs the audio capture] the daemon sent this viewer no audio (want ≥ 50 packets): {}",
            the_session(&s).map_or(Value::Null, Clone::clone)
        )
    });
    eprintln!(
        "audio packets sent: {}",
        the_session(&sent).unwrap()["audio_packets_sent"]
    );
    assert!(
        a["inbound"].is_object(),
        "[needs the audio capture] the browser received no audio: {}",
        a["reason"]
    );
    assert!(
        as_u64(&a["samplesGrew"], "samplesGrew") > 0,
        "[needs the audio capture] the browser decoded no new samples: {a}"
    );
    assert!(
        a["energyGrew"].as_f64().unwrap_or(0.0) > 0.0
            && a["maxLevel"].as_f64().unwrap_or(0.0) > 0.0,
        "[needs the audio capture] the browser plays silence after Unmute: {a}"
    );
    let kbps = a["header"].as_str().unwrap_or("");
    assert!(
        kbps.strip_suffix(" kbit/s")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0),
        "[needs the audio capture] the header's audio rate says {kbps:?}"
    );
    assert!(r.success && r.json["ok"] == true, "page.mjs:\n{}", r.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_the_talk_button_plays_the_microphone_on_the_camera() {
    page_script();
    let dir = scratch_dir("talk");
    let wav = dir.join("talk.wav");
    let sink = format!("file:{}", wav.display());
    let env = env_with(
        test_env(),
        &[
            ("CAMGATE__AUDIO__TALKBACK", "true"),
            ("CAMGATE__AUDIO__TALKBACK_SINK", &sink),
        ],
    );
    let d = Daemon::start(&env, &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    let keep = std::env::var_os("CAMGATE_PAGE_TALK_SCREENSHOT").map(PathBuf::from);
    let shot = keep.clone().unwrap_or_else(|| dir.join("page.png"));
    let run = PageRun::start(&d.url, &["--talk", "--screenshot", shot.to_str().unwrap()]);
    let (mut run, playing) = wait_playing(run, &d, "with talkback");

    let (codec, direction) = answer_audio(&playing, "talkback answer");
    assert_eq!(direction, "sendrecv", "audio and talkback: both ways");
    let ui = &playing["audioUi"];
    assert_eq!(ui["talk"]["text"], "Hold to talk", "talk button: {ui}");
    assert_eq!(ui["talk"]["disabled"], false, "talk button: {ui}");
    assert_eq!(ui["unmute"]["text"], "Unmute", "Unmute button: {ui}");

    let want = format!("{codec} sendrecv");
    let snapshot = poll_stats(&d, Duration::from_secs(10), |s| {
        the_session(s).is_some_and(|x| x["audio"] == want.as_str())
    })
    .await
    .unwrap_or_else(|s| panic!("/stats: the session's audio is not {want:?}: {s}"));
    let session = the_session(&snapshot).unwrap();
    // Talkback knows a viewer by its name, which for WHEP is the session id.
    let talker = session["viewer"]
        .as_str()
        .or(session["id"].as_str())
        .expect("session id")
        .to_string();

    // Pressed: the page sends the fake microphone (page.mjs checked packets and energy).
    let Some(talking) = run.wait_line("TALKING ", Duration::from_secs(30)) else {
        let r = run.finish(Duration::from_secs(10));
        panic!(
            "the page never talked:\n{}\n-- daemon --\n{}",
            r.output,
            d.log()
        );
    };
    eprintln!("talking: {talking}");
    // Hold until the camera has played 2 s of it (100 packets of 20 ms), at most 10 s.
    let played = poll_stats(&d, Duration::from_secs(10), |s| {
        let t = &s["audio"]["talkback"];
        t["state"] == "playing"
            && t["talker"] == talker.as_str()
            && t["packets_played"].as_u64().unwrap_or(0) >= 100
    })
    .await;
    run.send("RELEASE");

    // Released: the page stopped sending and still plays; the camera goes quiet.
    let Some(released) = run.wait_line("RELEASED ", Duration::from_secs(30)) else {
        let r = run.finish(Duration::from_secs(10));
        panic!(
            "the page did not release cleanly:\n{}\n-- daemon --\n{}",
            r.output,
            d.log()
        );
    };
    let released: Value = serde_json::from_str(&released).expect("RELEASED carries JSON");
    assert_plays(&released["stillPlaying"], "after talking");
    // While this viewer is still connected (so "idle" is the release, not the viewer leaving).
    let idle = poll_stats(&d, Duration::from_secs(10), |s| {
        let t = &s["audio"]["talkback"];
        t["state"] == "idle" && t["talker"].is_null() && the_session(s).is_some()
    })
    .await;
    run.send("DONE");
    let r = run.finish(Duration::from_secs(60));
    assert!(
        r.success && r.json["ok"] == true,
        "push-to-talk in the page failed:\n{}\n-- daemon --\n{}",
        r.output,
        d.log()
    );
    let t = &r.json["talk"];
    assert!(
        as_u64(&t["released"]["whileHeld"], "whileHeld") >= 50,
        "the page sent too little while held: {t}"
    );
    assert_png(&shot);

    // What the camera played: only a daemon with working talkback can pass these.
    let played = played.unwrap_or_else(|s| {
        panic!(
            "[needs talkback] the camera did not play ≥ 100 packets from viewer {talker} while \
             the button was held: talkback {}",
            s["audio"]["talkback"]
        )
    });
    eprintln!("talkback while held: {}", played["audio"]["talkback"]);
    let idle = idle.unwrap_or_else(|s| {
        panic!(
            "[needs talkback] talkback did not go idle (sink released) after the release: {}",
            s["audio"]["talkback"]
        )
    });
    eprintln!("talkback after release: {}", idle["audio"]["talkback"]);
    assert!(
        wav.is_file(),
        "[needs talkback] {} was not written",
        wav.display()
    );
    let (rate, channels, samples) = wav_samples(&wav);
    let seconds = samples.len() as f64 / f64::from(rate.max(1)) / f64::from(channels.max(1));
    let level = support::viewer::rms(&samples);
    eprintln!("talk.wav: {seconds:.2} s at {rate} Hz x{channels}, rms {level:.0}");
    assert!(
        seconds >= 1.5,
        "[needs talkback] talk.wav holds {seconds:.2} s"
    );
    assert!(
        level > 100.0,
        "[needs talkback] talk.wav is silence (rms {level:.1} of 32768)"
    );
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_microphone_permission_the_page_says_so_and_keeps_playing() {
    page_script();
    let dir = scratch_dir("talk-denied");
    let wav = dir.join("talk.wav");
    let sink = format!("file:{}", wav.display());
    let env = env_with(
        test_env(),
        &[
            ("CAMGATE__AUDIO__TALKBACK", "true"),
            ("CAMGATE__AUDIO__TALKBACK_SINK", &sink),
        ],
    );
    let d = Daemon::start(&env, &[]);
    d.wait_healthy(Duration::from_secs(15)).await;

    let run = PageRun::start(&d.url, &["--talk", "--deny-mic"]);
    let r = run.finish(Duration::from_secs(60));
    assert!(
        r.success && r.json["ok"] == true,
        "the page did not cope with a refused microphone:\n{}\n-- daemon --\n{}",
        r.output,
        d.log()
    );
    assert_plays(&r.json, "before pressing");
    let t = &r.json["talk"];
    assert_eq!(t["denied"], true, "{t}");
    let msg = t["mic"].as_str().unwrap_or("");
    assert!(
        msg.contains("microphone"),
        "the page's microphone message: {msg:?}"
    );
    assert_eq!(
        t["buttonAfter"]["text"], "Hold to talk",
        "the talk button after the refusal: {t}"
    );
    assert_eq!(t["packetsSent"], 0, "audio sent without a microphone: {t}");
    assert_plays(&t["stillPlaying"], "after the refusal");

    // Nothing reached the camera's speaker.
    let s = d.stats().await;
    let played = &s["audio"]["talkback"]["packets_played"];
    assert!(
        played.is_null() || played == 0,
        "talkback played {played} packets without a microphone"
    );
    // The sink is opened once at startup to check it works, which may leave an empty file;
    // no samples may be in it.
    let written = std::fs::metadata(&wav).map(|m| m.len()).unwrap_or(0);
    assert!(
        written <= 44,
        "{} holds {written} bytes written without a microphone",
        wav.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_camera_has_no_audio() {
    page_script();
    // No audio source, talkback on: the camera only listens.
    let dir = scratch_dir("no-audio");
    let sink = format!("file:{}", dir.join("talk.wav").display());
    let cases = [
        ("true", "recvonly", true),
        // Neither: the section is answered but inactive; no audio controls at all.
        ("false", "inactive", false),
    ];
    for (talkback, want, talk) in cases {
        let env = env_with(
            test_env(),
            &[
                ("CAMGATE__AUDIO__SOURCE", "none"),
                ("CAMGATE__AUDIO__TALKBACK", talkback),
                ("CAMGATE__AUDIO__TALKBACK_SINK", &sink),
            ],
        );
        let d = Daemon::start(&env, &[]);
        d.wait_healthy(Duration::from_secs(15)).await;
        let r = PageRun::start(&d.url, &[]).finish(Duration::from_secs(60));
        let context = format!("no audio source, talkback {talkback}");
        assert!(
            r.success && r.json["ok"] == true,
            "{context}: the page did not play:\n{}\n-- daemon --\n{}",
            r.output,
            d.log()
        );
        assert_plays(&r.json, &context);
        let (_, direction) = answer_audio(&r.json, &context);
        assert_eq!(direction, want, "{context}: answer direction");
        let ui = &r.json["audioUi"];
        assert_eq!(
            ui["noaudio"]["text"], "no audio from camera",
            "{context}: {ui}"
        );
        assert!(ui["unmute"].is_null(), "{context}: Unmute shown: {ui}");
        assert!(ui["stat"].is_null(), "{context}: audio rate shown: {ui}");
        assert_eq!(!ui["talk"].is_null(), talk, "{context}: talk button: {ui}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
