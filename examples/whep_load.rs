//! Load generator: N receive-only WHEP viewers against a running camgate.
//!
//! ```sh
//! cargo run --release --example whep_load -- http://127.0.0.1:8080/whep 10 20
//! ```
//! connects 10 viewers, receives for 20 s, and prints per-viewer packet and bit rates and the
//! offer → answer times. Viewers count RTP but do not decode (pass `--decode` to decode with
//! GStreamer too), so the machine's CPU goes to the daemon being measured. `--audio` makes
//! them offer Opus as browsers do, so the daemon also sends each one audio.

// The test viewer and its GStreamer plumbing (the rest of tests/support needs test-only env).
#[path = "../tests/support/gst.rs"]
mod gst;
#[path = "../tests/support/sound.rs"]
mod sound;
#[path = "../tests/support/viewer.rs"]
mod viewer;

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let whep = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080/whep".into());
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let secs: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20);
    let decode = args.iter().any(|a| a == "--decode");
    let audio = args.iter().any(|a| a == "--audio");
    let client = reqwest::Client::new();

    let mut viewers = Vec::new();
    let mut answer_ms = Vec::new();
    for _ in 0..n {
        let opts = if audio {
            viewer::ViewerOptions::browser()
        } else {
            viewer::ViewerOptions::video(102)
        };
        let v = viewer::TestViewer::with_options(viewer::ViewerOptions { decode, ..opts }).await;
        let offer = v.offer(true).await;
        let t0 = Instant::now();
        let resp = client
            .post(&whep)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .expect("POST");
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let answer = resp.text().await.unwrap_or_default();
        if status != 201 {
            eprintln!("viewer refused: {status} {answer}");
            continue;
        }
        answer_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        v.accept_answer(&answer).await;
        viewers.push((v, location));
    }
    for (v, _) in &viewers {
        if !v.wait_connected(Duration::from_secs(10)).await {
            eprintln!("a viewer did not connect");
        }
    }
    println!("READY {} viewers", viewers.len());
    let start: Vec<_> = viewers
        .iter()
        .map(|(v, _)| (v.decoded(), v.heard()))
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    for (i, ((v, _), (s, a))) in viewers.iter().zip(&start).enumerate() {
        let e = v.decoded();
        let pps = (e.rtp_packets - s.rtp_packets) as f64 / secs as f64;
        let kbps = (e.rtp_bytes - s.rtp_bytes) as f64 * 8.0 / secs as f64 / 1000.0;
        let audio_pps = (v.heard().rtp_packets - a.rtp_packets) as f64 / secs as f64;
        println!(
            "viewer {i}: {pps:.0} packets/s, {kbps:.0} kbit/s payload, {} frames decoded, {audio_pps:.0} audio packets/s",
            e.frames
        );
    }
    answer_ms.sort_by(|a, b| a.total_cmp(b));
    if let Some(m) = answer_ms.get(answer_ms.len() / 2) {
        println!("offer->answer median {m:.1} ms");
    }
    for (v, location) in &viewers {
        if let Some(l) = location {
            let base = whep.trim_end_matches("/whep");
            let _ = client.delete(format!("{base}{l}")).send().await;
        }
        v.close().await;
    }
}
