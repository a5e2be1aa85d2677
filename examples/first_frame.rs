//! How long a WHEP viewer waits for its picture: N viewers one after the other, each timed
//! from the offer's POST to the answer, to the connection being up (ICE + DTLS), and to its
//! first *decoded* frame (GStreamer `avdec_h264`, as a user would see it).
//!
//! ```sh
//! cargo run --release --example first_frame -- http://127.0.0.1:8080/whep 10 [gap_ms=1000]
//! ```
//! The viewer is the test viewer of `tests/support/viewer.rs`, so it is the same for any
//! server measured (scripts/measure-first-frame.sh runs it against camgate builds and an aiortc
//! master). Gathering happens before the clock starts (the offer carries its candidates, as
//! WHEP clients send it). Viewers are `gap_ms` apart, one at a time, so one viewer's
//! keyframe does not serve the next. The decoder's plugins are loaded before the first viewer,
//! so it does not pay for them. Prints one line per viewer and a `median` line.

#[path = "../tests/support/gst.rs"]
mod gst;
#[path = "../tests/support/sound.rs"]
mod sound;
#[path = "../tests/support/viewer.rs"]
mod viewer;

use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let whep = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080/whep".into());
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let gap = Duration::from_millis(args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000));
    warm_up_decoder();
    let client = reqwest::Client::new();
    let base = whep.trim_end_matches("/whep").to_owned();

    let (mut answer, mut connected, mut first) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let v = viewer::TestViewer::with_options(viewer::ViewerOptions::video(102)).await;
        let offer = v.offer(true).await;
        let t0 = Instant::now();
        let resp = match client
            .post(&whep)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("viewer {i}: POST failed: {e}");
                v.close().await;
                continue;
            }
        };
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let sdp = resp.text().await.unwrap_or_default();
        let t_answer = t0.elapsed();
        if status != 201 {
            eprintln!("viewer {i}: refused: {status} {sdp}");
            v.close().await;
            continue;
        }
        v.accept_answer(&sdp).await;
        let up = v.wait_connected(WITHIN).await;
        let t_connected = t0.elapsed();
        let decoded = v.wait_frames(1, WITHIN).await;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match (up, decoded.first_frame_at) {
            (true, Some(at)) => {
                let t_first = at.duration_since(t0);
                println!(
                    "viewer {i}: answer {:.1} ms, connected {:.1} ms, first frame {:.1} ms",
                    ms(t_answer),
                    ms(t_connected),
                    ms(t_first)
                );
                answer.push(ms(t_answer));
                connected.push(ms(t_connected));
                first.push(ms(t_first));
            }
            _ => eprintln!(
                "viewer {i}: connected {up}, {} frames decoded in {WITHIN:?}",
                decoded.frames
            ),
        }
        if let Some(l) = location {
            let _ = client.delete(format!("{base}{l}")).send().await;
        }
        v.close().await;
        tokio::time::sleep(gap).await;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    println!(
        "median of {}: answer {:.1} ms, connected {:.1} ms, first frame {:.1} ms",
        first.len(),
        median(&mut answer),
        median(&mut connected),
        median(&mut first)
    );
    if first.len() < n {
        std::process::exit(1);
    }
}

/// Loads the decoding elements once (the first load reads plugins from disk, hundreds of ms),
/// so the first viewer's time is the server's and not this process's start-up.
fn warm_up_decoder() {
    gstreamer::init().expect("GStreamer init");
    for name in [
        "appsrc",
        "rtph264depay",
        "h264parse",
        "avdec_h264",
        "videoconvert",
        "appsink",
    ] {
        if gstreamer::ElementFactory::make(name).build().is_err() {
            eprintln!("GStreamer element {name} is missing");
        }
    }
}
