//! Alexa end to end: Echo-Show-shaped offers (reference §5.4–5.5) sent through
//! SendAlexaOfferToMaster on the KVS emulator to the real daemon. Every answer is checked
//! against the reference's checklist, then applied by a real WebRTC peer that must decode the
//! video and hear the test tone in Opus (or G.711 when that is all it offered).
//!
//! The peer is a `webrtc` viewer whose own offer is rewritten into Alexa's shape (mids
//! `audio0`/`video0`, port 1, no trickle, H.264 without fmtp, `b=AS`, Alexa's payload types);
//! the answer is mapped back to its mids before it is applied. What is checked is the answer
//! as the daemon sent it.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use kvs_emulator::EmulatorConfig;
use support::alexa::{
    Variant, alexa_offer, answer_for_peer, assert_tone, checklist, payload_chars,
};
use support::kvs::Kvs;
use support::turn::Turn;
use support::viewer::{TestViewer, ViewerOptions};

/// Every variant, one after the other on one daemon: the answer passes the checklist, the
/// peer decodes video that starts with SPS/PPS + IDR, and hears the 440 Hz test tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_alexa_offer_variant_is_answered_by_the_checklist_and_plays() {
    let dir = std::env::temp_dir().join(format!("camgate-alexa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = format!("file:{}", dir.join("talk.wav").display());
    let kvs = Kvs::start(
        EmulatorConfig::default(),
        &[
            ("CAMGATE__AUDIO__TALKBACK", "true"),
            ("CAMGATE__AUDIO__TALKBACK_SINK", sink.as_str()),
        ],
    )
    .await;

    let mut timings = Vec::new();
    for (n, v) in [
        Variant::Canonical,
        Variant::LfRaw,
        Variant::SavpfAs500,
        Variant::NoStaticRtpmap,
        Variant::OpusPcmu,
        Variant::TcpAndComponent2,
        Variant::PcmuOnly,
    ]
    .into_iter()
    .enumerate()
    {
        let peer = TestViewer::with_options(ViewerOptions {
            audio: v.audio(),
            talk_tone_hz: Some(1000),
            ..ViewerOptions::video(99)
        })
        .await;
        let offer = alexa_offer(&peer.offer(true).await, v);
        let payload = if v == Variant::LfRaw {
            base64::engine::general_purpose::STANDARD.encode(&offer)
        } else {
            base64::engine::general_purpose::STANDARD
                .encode(serde_json::json!({"type": "offer", "sdp": offer}).to_string())
        };
        let sender = format!("viewer-5f0c2a9e-{n}");
        let t0 = Instant::now();
        let raw = kvs_emulator::send_alexa_offer_raw(
            &kvs.emu.channel_https_url(),
            &kvs.channel.arn,
            &sender,
            &payload,
            &kvs.emu.credentials(),
            kvs.emu.region(),
        )
        .await
        .unwrap_or_else(|e| panic!("{v:?}: SendAlexaOfferToMaster: {e}\n{}", kvs.daemon.log()));
        let took = t0.elapsed();
        timings.push((v, took));
        let json = base64::engine::general_purpose::STANDARD
            .decode(&raw)
            .expect("answer payload is base64");
        let answer = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|j| j["sdp"].as_str().map(str::to_owned))
            .expect("answer payload is JSON {type, sdp}");
        let problems = checklist(&answer, raw.len(), v);
        assert!(
            problems.is_empty(),
            "{v:?}: checklist failed: {problems:?}\n{answer}"
        );
        assert_eq!(raw.len(), payload_chars(&answer));
        assert!(took < Duration::from_secs(3), "{v:?}: answer took {took:?}");

        peer.accept_answer(&answer_for_peer(&answer)).await;
        let got = peer.wait_frames(15, Duration::from_secs(20)).await;
        assert!(
            got.frames >= 15,
            "{v:?}: decoded {} frames {:?}",
            got.frames,
            got.errors
        );
        assert_eq!(
            got.first_packet_nals,
            vec![7, 8],
            "{v:?}: first packet is SPS+PPS"
        );
        assert_eq!(got.payload_type, Some(99));
        let sent = got.sps_profile_level_id.expect("an SPS arrived");
        assert!(
            answer.contains(&format!("profile-level-id={sent:06x}")),
            "{v:?}: the answer must declare the profile we send ({sent:06x})\n{answer}"
        );
        let heard = peer.wait_audio(75, Duration::from_secs(10)).await;
        let (codec, pt) = if v == Variant::PcmuOnly {
            ("PCMU", 0)
        } else {
            ("OPUS", 96)
        };
        assert_eq!(heard.codec, Some(codec), "{v:?}");
        assert_eq!(heard.payload_type, Some(pt), "{v:?}");
        assert_tone(&heard, 440.0, &format!("{v:?}"));
        peer.close().await;
    }
    for (v, t) in &timings {
        eprintln!("MEASURE alexa {v:?}: offer->answer {} ms", t.as_millis());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `v`'s offer from `peer` as Alexa would; returns the answer SDP and how long it took.
async fn send_as_alexa(
    kvs: &Kvs,
    peer: &TestViewer,
    sender: &str,
    v: Variant,
) -> (String, Duration) {
    let offer = alexa_offer(&peer.offer(true).await, v);
    let payload = base64::engine::general_purpose::STANDARD
        .encode(serde_json::json!({"type": "offer", "sdp": offer}).to_string());
    let t0 = Instant::now();
    let raw = kvs_emulator::send_alexa_offer_raw(
        &kvs.emu.channel_https_url(),
        &kvs.channel.arn,
        sender,
        &payload,
        &kvs.emu.credentials(),
        kvs.emu.region(),
    )
    .await
    .unwrap_or_else(|e| panic!("SendAlexaOfferToMaster: {e}\n{}", kvs.daemon.log()));
    let took = t0.elapsed();
    let json = base64::engine::general_purpose::STANDARD
        .decode(&raw)
        .unwrap();
    let answer = serde_json::from_slice::<serde_json::Value>(&json).unwrap()["sdp"]
        .as_str()
        .unwrap()
        .to_owned();
    (answer, took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Ten Alexa offers from one sender id (each replaces the last session), timed at the
/// emulator's SendAlexaOfferToMaster; returns the median and the last answer.
async fn ten_offers(kvs: &Kvs) -> (Duration, String) {
    let mut times = Vec::new();
    let mut last = String::new();
    // SendAlexaOfferToMaster allows 5 calls per second per channel (reference §6); pace the
    // offers under that, as Alexa's own traffic is.
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    for _ in 0..10 {
        pace.tick().await;
        let peer = TestViewer::with_options(ViewerOptions {
            audio: Variant::Canonical.audio(),
            talk_tone_hz: Some(1000),
            ..ViewerOptions::video(99)
        })
        .await;
        let (answer, took) = send_as_alexa(kvs, &peer, "viewer-timing", Variant::Canonical).await;
        times.push(took);
        last = answer;
        peer.close().await;
    }
    (median(times), last)
}

/// With the channel's TURN server reachable (Debian's coturn on loopback, handed out by the
/// emulator with real TURN REST credentials), the complete answer carries a relay candidate
/// and does not wait for the gathering cap; a viewer restricted to relay candidates decodes
/// video and hears audio that went through coturn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_candidates_come_fast_and_a_relay_only_viewer_plays_through_coturn() {
    let turn = Turn::start().await;
    let cfg = EmulatorConfig {
        turn_servers: vec![format!("127.0.0.1:{}", turn.port)],
        turn_secret: Some(turn.secret.clone()),
        ..EmulatorConfig::default()
    };
    let wav = std::env::temp_dir().join(format!("camgate-alexa-relay-{}.wav", std::process::id()));
    let sink = format!("file:{}", wav.display());
    let kvs = Kvs::start(
        cfg,
        &[
            ("CAMGATE__WEBRTC__GATHER_TIMEOUT_MS", "2000"),
            ("CAMGATE__AUDIO__TALKBACK", "true"),
            ("CAMGATE__AUDIO__TALKBACK_SINK", sink.as_str()),
        ],
    )
    .await;

    let (med, answer) = ten_offers(&kvs).await;
    eprintln!(
        "MEASURE alexa offer->answer, coturn reachable: median of 10 = {} ms",
        med.as_millis()
    );
    assert!(
        answer.contains(" typ relay"),
        "no relay candidate in\n{answer}"
    );
    assert!(
        med < Duration::from_millis(1000),
        "answers waited for the 2 s gathering cap although TURN answered: median {med:?}"
    );

    let (user, pass) = turn.credentials(Duration::from_secs(600));
    let peer = TestViewer::with_options(ViewerOptions {
        audio: Variant::Canonical.audio(),
        talk_tone_hz: Some(1000),
        ice_servers: vec![webrtc::peer_connection::RTCIceServer {
            urls: vec![turn.url()],
            username: user,
            credential: pass,
        }],
        relay_only: true,
        ..ViewerOptions::video(99)
    })
    .await;
    let before = turn.allocations();
    let (answer, _) = send_as_alexa(&kvs, &peer, "viewer-relay-only", Variant::Canonical).await;
    let problems = checklist(&answer, payload_chars(&answer), Variant::Canonical);
    assert!(problems.is_empty(), "{problems:?}\n{answer}");
    peer.accept_answer(&answer_for_peer(&answer)).await;
    let got = peer.wait_frames(15, Duration::from_secs(20)).await;
    assert!(
        got.frames >= 15,
        "relay-only viewer decoded {} frames\n{}",
        got.frames,
        kvs.daemon.log()
    );
    let heard = peer.wait_audio(75, Duration::from_secs(10)).await;
    assert_tone(&heard, 440.0, "relay-only viewer");
    let _ = std::fs::remove_file(&wav);
    // The viewer's own allocation and the daemon's for this session: coturn saw both.
    assert!(
        turn.wait_allocations(before + 2, Duration::from_secs(5))
            .await
            >= before + 2,
        "coturn allocations {} (before {before})\n{}",
        turn.allocations(),
        turn.log()
    );
    peer.close().await;
}

/// With the channel's TURN servers unreachable, answers still come, bounded by the
/// gathering cap (`webrtc.gather_timeout_ms`, default 2000): inside Alexa's 6 s budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_turn_is_bounded_by_the_gathering_cap() {
    // A loopback UDP port with nothing behind it.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = EmulatorConfig {
        turn_servers: vec![format!("127.0.0.1:{closed}")],
        turn_secret: Some("unused".into()),
        ..EmulatorConfig::default()
    };
    let kvs = Kvs::start(cfg, &[]).await;
    let (med, answer) = ten_offers(&kvs).await;
    eprintln!(
        "MEASURE alexa offer->answer, TURN unreachable: median of 10 = {} ms",
        med.as_millis()
    );
    assert!(answer.contains(" typ host"), "{answer}");
    assert!(!answer.contains(" typ relay"), "{answer}");
    assert!(med < Duration::from_secs(3), "median {med:?}");
}
