//! Lip sync as a viewer experiences it, end to end with real parts: a clapperboard file
//! (a white flash and a 1 kHz beep at the start of every second, each followed by the number
//! of its second), played by the real daemon binary (`source.kind = "file"`, the file's own
//! AAC re-encoded to Opus, its H.264 decoded and re-encoded), received by a real `webrtc`
//! viewer that decodes with GStreamer and times every flash and beep by the socket arrival
//! of the packets that carried it. See `support/avsync.rs` for the signal and the receiver.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::avsync::{self, ID_COUNT, Measurement, SyncViewer, stats};
use support::daemon::{Daemon, test_env, whep_post};

/// An offset any viewer would notice.
const MAX_OFFSET_MS: f64 = 250.0;
/// Pairs to collect (about one per second: 12 s, so the measurement always spans one loop of
/// the 10 s file, where the two pipelines restart apart), and the fewest that make one.
const WANT_PAIRS: usize = 12;
const MIN_PAIRS: usize = 4;

/// WANT_PAIRS, or `AVSYNC_PAIRS` to watch longer (e.g. 180: three minutes, 18 loops, to see
/// how the offset moves from loop to loop).
fn wanted_pairs() -> usize {
    std::env::var("AVSYNC_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WANT_PAIRS)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("camgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The file must play and carry exactly the claps it was written with, where they were
/// written: otherwise a bad offset could be the file's fault, not the daemon's. Returns the
/// file's own offset as a GStreamer player decodes it (flash − beep, ms): AAC encoders prime
/// with 1024 samples that matroska does not tell the decoder to drop, so the audio of the file
/// itself plays ~21 ms late.
fn check_file(path: &std::path::Path) -> f64 {
    let check = avsync::analyse_file(path);
    let seconds = ID_COUNT;
    assert_eq!(
        check.frames,
        seconds * avsync::FPS,
        "decoded frames of the sync file: {check:?}"
    );
    assert!(
        check.audio_samples >= (seconds - 1) * avsync::AUDIO_RATE,
        "decoded audio of the sync file: {} samples",
        check.audio_samples
    );
    let frame_ns = 1_000_000_000 / avsync::FPS;
    let flashes: Vec<_> = check.flashes.iter().map(|(_, k)| *k).collect();
    let beeps: Vec<_> = check.beeps.iter().map(|(_, k)| *k).collect();
    let expected: Vec<_> = (0..seconds as u8).map(Some).collect();
    // The first clap starts the file: nothing dark or quiet before it, so it is no onset (it
    // is one when the daemon loops the file).
    assert_eq!(
        flashes,
        expected[1..],
        "flashes in the file: {:?}",
        check.flashes
    );
    assert_eq!(beeps, expected[1..], "beeps in the file: {:?}", check.beeps);
    for (t, k) in &check.flashes {
        let want = u64::from(k.unwrap()) * 1_000_000_000;
        assert!(t.abs_diff(want) < frame_ns / 2, "flash {k:?} at {t} ns");
    }
    for (t, k) in &check.beeps {
        let want = u64::from(k.unwrap()) * 1_000_000_000;
        assert!(t.abs_diff(want) < 30_000_000, "beep {k:?} at {t} ns");
    }
    let offsets: Vec<f64> = check
        .flashes
        .iter()
        .zip(&check.beeps)
        .map(|((f, _), (b, _))| (*f as f64 - *b as f64) / 1e6)
        .collect();
    let (median, _, _) = stats(&offsets).unwrap();
    eprintln!("MEASURE av offset of the file itself (decoded by GStreamer): median {median:.1} ms");
    median
}

fn report(label: &str, offsets: &[f64], m: &Measurement) -> Option<(f64, f64, f64)> {
    let s = stats(offsets);
    match s {
        Some((median, min, max)) => eprintln!(
            "MEASURE {label}: median {median:.1} ms ({} pairs, min {min:.1}, max {max:.1})",
            offsets.len()
        ),
        None => eprintln!("MEASURE {label}: no pairs ({m:?})"),
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_and_video_of_a_file_reach_the_viewer_in_sync() {
    let dir = temp_dir("avsync");
    let file = dir.join("sync.mkv");
    avsync::make_sync_file(&file, ID_COUNT);
    let file_offset = check_file(&file);

    let mut env = test_env();
    env.extend(
        [
            ("CAMGATE__SOURCE__KIND", "file"),
            ("CAMGATE__SOURCE__PATH", file.to_str().unwrap()),
            ("CAMGATE__AUDIO__SOURCE", "camera"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let d = Daemon::start(&env, &[]);
    d.wait_healthy(Duration::from_secs(20)).await;

    let v = SyncViewer::new().await;
    let offer = v.offer().await;
    let (status, _, answer) = whep_post(&d.endpoint("whep"), "application/sdp", offer).await;
    assert_eq!(status, 201, "WHEP POST failed: {answer}\n{}", d.log());
    assert!(
        answer.contains("m=audio") && answer.contains("a=sendonly"),
        "answer without audio: {answer}"
    );
    v.accept_answer(&answer).await;
    assert!(
        v.wait_connected(Duration::from_secs(15)).await,
        "viewer did not connect\n{}",
        d.log()
    );

    // About `pairs` seconds of claps; bounded well above that for a loaded machine.
    let pairs = wanted_pairs();
    let m = v
        .wait_until(Duration::from_secs(30 + pairs as u64), |m| {
            m.pairs.len() >= pairs
        })
        .await;
    v.close().await;

    for p in &m.pairs {
        eprintln!(
            "  pass {} second {} at {:5.2} s: arrival offset {:6.1} ms, beep in its packet {:6.1} ms, \
             sender reports {} (flash frame {:+.1} ms, beep packet {:+.1} ms late against their stream)",
            p.pass,
            p.id,
            p.at_s,
            p.arrival_offset_ms,
            p.in_packet_offset_ms,
            p.sr_offset_ms
                .map_or("n/a".to_string(), |o| format!("{o:6.1} ms")),
            p.video_late_ms,
            p.audio_late_ms,
        );
    }
    eprintln!(
        "  flashes {}, beeps {}, pairs {} (+{} across a loop point), unreadable IDs {}, \
         video {} packets / {} frames, audio {} packets / {} buffers, sender reports {} video / {} audio",
        m.flashes,
        m.beeps,
        m.pairs.len(),
        m.across_loop,
        m.unreadable,
        m.video_packets,
        m.video_decoded,
        m.audio_packets,
        m.audio_decoded,
        m.video_srs,
        m.audio_srs
    );
    eprintln!(
        "  pass lengths (ms, by arrival of the same second): video {:.1?}, audio {:.1?}",
        m.video_pass_ms, m.audio_pass_ms
    );
    let passes = m.pairs.iter().map(|p| p.pass).max().map_or(0, |p| p + 1);
    for pass in 0..passes {
        let of = |f: fn(&avsync::Pair) -> Option<f64>| -> String {
            let v: Vec<f64> = m
                .pairs
                .iter()
                .filter(|p| p.pass == pass)
                .filter_map(f)
                .collect();
            stats(&v).map_or("n/a".into(), |(median, _, _)| format!("{median:.1} ms"))
        };
        eprintln!(
            "  pass {pass}: median arrival offset {}, beep in its packet {}, sender reports {} ({} pairs)",
            of(|p| Some(p.arrival_offset_ms)),
            of(|p| Some(p.in_packet_offset_ms)),
            of(|p| p.sr_offset_ms),
            m.pairs.iter().filter(|p| p.pass == pass).count()
        );
    }
    // Each pipeline loops on its own end of stream: how far apart that moves them, per loop.
    let pass_median = |pass: usize| {
        let v: Vec<f64> = m
            .pairs
            .iter()
            .filter(|p| p.pass == pass)
            .map(|p| p.in_packet_offset_ms)
            .collect();
        stats(&v).map(|(median, _, _)| median)
    };
    for pass in 1..passes {
        if let (Some(before), Some(after)) = (pass_median(pass - 1), pass_median(pass)) {
            eprintln!(
                "MEASURE av offset change at file loop {pass}: {:+.1} ms (video pass {}, audio pass {})",
                after - before,
                m.video_pass_ms
                    .get(pass - 1)
                    .map_or("n/a".into(), |v| format!("{v:.1} ms")),
                m.audio_pass_ms
                    .get(pass - 1)
                    .map_or("n/a".into(), |v| format!("{v:.1} ms")),
            );
        }
    }
    let arrival = report("av offset at the receiver", &m.arrival_offsets(), &m);
    report(
        "av offset at the receiver, beep timed in its packet",
        &m.in_packet_offsets(),
        &m,
    );
    report("av offset from sender reports", &m.sr_offsets(), &m);
    let first_pass: Vec<f64> = m
        .pairs
        .iter()
        .filter(|p| p.pass == 0)
        .map(|p| p.in_packet_offset_ms)
        .collect();
    if let Some((median, _, _)) = stats(&first_pass) {
        eprintln!(
            "MEASURE av offset added by the daemon (first pass, beep in its packet, minus the file's own): {:.1} ms",
            median - file_offset
        );
    }
    let _ = d.terminate();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        m.errors.is_empty(),
        "receiver decoder errors: {:?}",
        m.errors
    );
    assert!(
        m.pairs.len() >= MIN_PAIRS,
        "only {} flash/beep pairs found: {m:?}",
        m.pairs.len()
    );
    let (median, _, _) = arrival.unwrap();
    assert!(
        median.abs() <= MAX_OFFSET_MS,
        "audio/video offset at the receiver is {median:.0} ms (limit ±{MAX_OFFSET_MS} ms)"
    );
}
