//! Publishing to an SFU over WHIP (issue #12), against real parts: Janus 1.1 (VideoRoom) in a
//! network namespace, meetecho's simple-whip-server in front of it, a subscriber that decodes
//! through Janus, and a local WHEP viewer that must keep decoding through every fault.
//!
//! The 503/Retry-After test uses a tiny WHIP server of its own: simple-whip-server never
//! sends Retry-After.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, test_env, whep_post};
use support::janus::JanusLab;
use support::viewer::TestViewer;
use support::wait::until;

const SDP: &str = "application/sdp";

fn env_for(lab: Option<&JanusLab>, whip_url: &str, token: &str) -> Vec<(String, String)> {
    let mut env = test_env();
    let hosts = match lab {
        Some(l) => format!("127.0.0.1,{}", l.host_ip),
        None => "127.0.0.1".to_string(),
    };
    for (k, v) in [
        ("CAMGATE__WEBRTC__HOST_ADDRESSES", hosts.as_str()),
        ("CAMGATE__PUBLISH__ENABLED", "true"),
        ("CAMGATE__PUBLISH__WHIP_URL", whip_url),
        // From the environment, as a secret should come.
        ("CAMGATE__PUBLISH__BEARER_TOKEN", token),
    ] {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// A local viewer over WHEP, decoding.
async fn local_viewer(d: &Daemon) -> TestViewer {
    let v = TestViewer::new(102).await;
    let offer = v.offer(true).await;
    let (status, _, answer) = whep_post(&d.endpoint("whep"), SDP, offer).await;
    assert_eq!(status, 201, "{answer}");
    v.accept_answer(&answer).await;
    v
}

async fn publish_stats(d: &Daemon) -> serde_json::Value {
    d.stats().await["publish"].clone()
}

/// Waits until the daemon says it is publishing, with at least `connections` publications.
async fn wait_publishing(d: &Daemon, connections: u64, within: Duration) -> serde_json::Value {
    until("camgate publishing", within, || async {
        let p = publish_stats(d).await;
        (p["state"] == "publishing" && p["connections"].as_u64() >= Some(connections)).then_some(p)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_to_janus_survives_its_restart_and_local_viewers_keep_decoding() {
    let mut lab = JanusLab::start().await;
    lab.create_endpoint("cam", "s3cret-token").await;

    let t0 = Instant::now();
    let d = Daemon::start(
        &env_for(Some(&lab), &lab.whip_url("cam"), "s3cret-token"),
        &[],
    );
    let local = local_viewer(&d).await;

    // A subscriber through Janus decodes camgate's video, and hears its audio (the test tone).
    let sub = lab.subscribe().await;
    let got = sub.wait_frames(10, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 10,
        "subscriber through Janus decoded {got:?}\n{}\n{}",
        d.log(),
        lab.janus_log()
    );
    let first_frame = t0.elapsed();
    let heard = sub.wait_audio(20, Duration::from_secs(10)).await;
    assert!(heard.rtp_packets >= 20, "subscriber heard {heard:?}");
    // The test tone is 440 Hz.
    let hz = heard.dominant_hz(1.0);
    assert!((400.0..480.0).contains(&hz), "heard {hz} Hz");
    eprintln!(
        "MEASURE camgate start -> first frame decoded by a Janus subscriber: {} ms",
        first_frame.as_millis()
    );
    let p = wait_publishing(&d, 1, Duration::from_secs(5)).await;
    assert!(p["video_bytes_sent"].as_u64() > Some(0), "{p}");
    let local_before = local.wait_frames(10, Duration::from_secs(10)).await.frames;
    assert!(local_before >= 10, "local viewer decoded {local_before}");
    sub.close().await;

    // The token never shows: not in the log, not in /stats.
    assert!(!d.log().contains("s3cret-token"));
    assert!(!d.stats().await.to_string().contains("s3cret-token"));

    // Janus crashes and comes back: camgate republishes and a new subscriber decodes.
    let killed = Instant::now();
    lab.kill_janus();
    lab.start_janus().await;
    let restarted = Instant::now();
    let p = wait_publishing(&d, 2, Duration::from_secs(90)).await;
    let republished = Instant::now();
    let causes = &p["republishes"];
    assert!(
        causes["dropped"].as_u64() >= Some(1) || causes["connect_failed"].as_u64() >= Some(1),
        "a republish after the restart is counted: {p}"
    );
    eprintln!(
        "MEASURE republish after a Janus restart: {} ms after the kill, {} ms after Janus was up again",
        (republished - killed).as_millis(),
        (republished - restarted).as_millis()
    );
    // The first 201 said simple-whip-server takes trickle (Accept-Patch): the republish went
    // out at once and its candidates followed in PATCHes.
    assert!(p["trickled_candidates"].as_u64() >= Some(1), "{p}");
    let sub = lab.subscribe().await;
    let got = sub.wait_frames(10, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 10,
        "new subscriber decoded {got:?}\n{}",
        d.log()
    );
    sub.close().await;

    // The local viewer never stopped.
    let local_after = local
        .wait_frames(local_before + 60, Duration::from_secs(10))
        .await;
    assert!(
        local_after.frames >= local_before + 60,
        "local viewer stalled: {local_before} -> {}",
        local_after.frames
    );

    // The metrics say it too.
    let metrics = reqwest::get(d.endpoint("metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("camgate_publish_state{state=\"publishing\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("camgate_publish_republishes_total{cause=\"dropped\"}"));

    // Shutdown DELETEs the resource: the WHIP server frees the endpoint.
    let (clean, _) = d.terminate();
    assert!(clean);
    let ep = lab.endpoint("cam").await.expect("endpoint listed");
    assert_eq!(ep["enabled"], false, "{ep}");
    local.close().await;
}

/// Janus hangs up on camgate (its VideoRoom kicks the publisher): camgate sees the DTLS
/// alert at once, not after ICE's 3 s + 3 s, and publishes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publisher_the_sfu_hangs_up_on_publishes_again() {
    let lab = JanusLab::start().await;
    lab.create_endpoint("cam", "tok").await;
    let d = Daemon::start(&env_for(Some(&lab), &lab.whip_url("cam"), "tok"), &[]);
    wait_publishing(&d, 1, Duration::from_secs(30)).await;
    let publisher = until(
        "camgate in the Janus room",
        Duration::from_secs(10),
        || async { lab.publishers().await.first().copied() },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.janus_log()));

    lab.kick(publisher).await;
    let kicked = Instant::now();
    // Inside ICE's 3 s "disconnected": only the hang-up itself can be noticed this soon.
    let noticed = until("the hang-up noticed", Duration::from_secs(2), || async {
        d.log()
            .contains("the WHIP server closed the connection")
            .then_some(())
    })
    .await;
    assert!(noticed.is_ok(), "{noticed:?}\n{}", d.log());
    eprintln!(
        "MEASURE Janus kick noticed within {} ms",
        kicked.elapsed().as_millis()
    );
    let p = publish_stats(&d).await;
    assert!(p["republishes"]["dropped"].as_u64() >= Some(1), "{p}");

    // It publishes again, and a subscriber through Janus decodes it.
    wait_publishing(&d, 2, Duration::from_secs(30)).await;
    let sub = lab.subscribe().await;
    let got = sub.wait_frames(10, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 10,
        "subscriber after the kick decoded {got:?}\n{}",
        d.log()
    );
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_token_is_a_clear_error_and_local_viewers_still_watch() {
    let lab = JanusLab::start().await;
    lab.create_endpoint("cam", "right-token").await;
    let d = Daemon::start(
        &env_for(Some(&lab), &lab.whip_url("cam"), "wrong-token"),
        &[],
    );
    let local = local_viewer(&d).await;

    let p = until("the token refused", Duration::from_secs(20), || async {
        let p = publish_stats(&d).await;
        (p["republishes"]["unauthorized"].as_u64() >= Some(1)).then_some(p)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(p["state"], "backoff", "{p}");
    let err = p["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("publish.bearer_token"), "{err}");
    // Slowly: the next try is the full 30 s away, not a fast loop.
    assert!(p["retry_in_s"].as_f64() > Some(20.0), "{p}");
    assert!(d.log().contains("refused the token"), "{}", d.log());
    // Health carries it, and the daemon stays healthy for its own viewers.
    let h: serde_json::Value = reqwest::get(d.endpoint("healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["ok"], true, "{h}");
    assert_eq!(h["publish"]["state"], "backoff", "{h}");
    let got = local.wait_frames(30, Duration::from_secs(20)).await;
    assert!(got.frames >= 30, "local viewer decoded {got:?}");
    assert!(lab.publishers().await.is_empty());
    assert!(!d.log().contains("wrong-token"));
    let (clean, _) = d.terminate();
    assert!(clean, "no crash: a clean exit");
    local.close().await;
}

/// A WHIP server that is busy: every POST gets 503 with `Retry-After`.
struct BusyServer {
    url: String,
    /// When each POST arrived.
    posts: tokio::sync::mpsc::UnboundedReceiver<Instant>,
}

async fn busy_server(retry_after_s: u64) -> BusyServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/whip/cam", listener.local_addr().unwrap());
    let (tx, posts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then the body by Content-Length.
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    if text.starts_with("POST ") {
                        let _ = tx.send(Instant::now());
                    }
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after_s}\r\n\
                         Content-Length: 4\r\nConnection: close\r\n\r\nbusy"
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    return;
                }
            });
        }
    });
    BusyServer { url, posts }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_with_retry_after_is_respected() {
    let mut server = busy_server(3).await;
    let d = Daemon::start(&env_for(None, &server.url, "t0ken"), &[]);
    let local = local_viewer(&d).await;

    let first = tokio::time::timeout(Duration::from_secs(20), server.posts.recv())
        .await
        .expect("a first POST")
        .unwrap();
    let p = until("the 503 seen", Duration::from_secs(10), || async {
        let p = publish_stats(&d).await;
        (p["republishes"]["unavailable"].as_u64() >= Some(1)).then_some(p)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let err = p["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("retry after 3 s"), "{err}");
    let second = tokio::time::timeout(Duration::from_secs(20), server.posts.recv())
        .await
        .expect("a second POST")
        .unwrap();
    // Not before the server said (a lower bound: a slow machine only makes it later).
    assert!(
        second - first >= Duration::from_secs(3),
        "retried after {:?}",
        second - first
    );
    let got = local.wait_frames(30, Duration::from_secs(20)).await;
    assert!(got.frames >= 30, "local viewer decoded {got:?}");
    let (clean, _) = d.terminate();
    assert!(clean);
    local.close().await;
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// The cost of publishing, measured: the daemon's CPU with one local viewer, without and then
/// with publishing to Janus, in one run (1280x720@30 test pattern with the test tone). Run by
/// scripts/measure-publish.sh against a release build; ignored in the normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: scripts/measure-publish.sh"]
async fn measure_publish_cost() {
    let secs: u64 = std::env::var("MEASURE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let hz = 100.0; // USER_HZ on Linux
    let lab = JanusLab::start().await;
    lab.create_endpoint("cam", "tok").await;
    let mut results = Vec::new();
    for publish in [false, true] {
        let mut env = env_for(Some(&lab), &lab.whip_url("cam"), "tok");
        env.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "CAMGATE__SOURCE__WIDTH" | "CAMGATE__SOURCE__HEIGHT" | "CAMGATE__PUBLISH__ENABLED"
            )
        });
        env.push(("CAMGATE__PUBLISH__ENABLED".into(), publish.to_string()));
        let d = Daemon::start(&env, &[]);
        let local = local_viewer(&d).await;
        assert!(local.wait_frames(30, Duration::from_secs(20)).await.frames >= 30);
        if publish {
            wait_publishing(&d, 1, Duration::from_secs(20)).await;
        }
        // Settle, then measure.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (t0, f0) = (cpu_ticks(d.pid()), local.decoded().frames);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (t1, f1) = (cpu_ticks(d.pid()), local.decoded().frames);
        let cpu = (t1 - t0) as f64 / hz / secs as f64 * 100.0;
        let sent = if publish {
            let p = publish_stats(&d).await;
            format!(
                ", published {} video bytes",
                p["video_bytes_sent"].as_u64().unwrap_or(0)
            )
        } else {
            String::new()
        };
        eprintln!(
            "MEASURE publish={publish}: daemon CPU {cpu:.1} % of one core over {secs} s, local viewer decoded {} frames{sent}",
            f1 - f0
        );
        results.push(cpu);
        local.close().await;
        let _ = d.terminate();
    }
    eprintln!(
        "MEASURE 1 local viewer + publishing costs {:.2}x 1 local viewer alone (+{:.1} % of a core)",
        results[1] / results[0],
        results[1] - results[0]
    );
}
