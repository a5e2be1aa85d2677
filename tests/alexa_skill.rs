//! The Alexa skill end to end, with nothing mocked that runs here: the real
//! `camgate-alexa-skill` binary under a real Lambda Runtime API server (loopback), the KVS
//! emulator between the skill and the daemon, and camgate as the channel's master. An Echo
//! Show is played by a `webrtc` peer whose offer has Alexa's shape (reference §5.5); it must
//! decode the video and hear the audio the skill's answer describes.

mod support;

use std::time::{Duration, Instant};

use kvs_emulator::{Api, EmulatorConfig};
use serde_json::{Value, json};
use support::alexa::{
    Variant, alexa_offer, answer_for_peer, assert_tone, checklist, payload_chars,
};
use support::kvs::{CHANNEL, Kvs};
use support::lambda::{RuntimeApi, Skill, field_ms};
use support::turn::Turn;
use support::viewer::{TestViewer, ViewerOptions};

/// Alexa's budget for the whole exchange; the test's Lambda timeout is the same.
const ALEXA_BUDGET: Duration = Duration::from_secs(6);
const TOKEN: &str = "Atza|linked-account-token";

fn directive(namespace: &str, name: &str, endpoint: Option<&str>, payload: Value) -> Value {
    let mut d = json!({
        "header": {
            "namespace": namespace, "name": name, "payloadVersion": "3",
            "messageId": uuid::Uuid::new_v4().to_string(),
            "correlationToken": format!("corr-{}", uuid::Uuid::new_v4()),
        },
        "payload": payload,
    });
    if let Some(id) = endpoint {
        d["endpoint"] = json!({
            "scope": {"type": "BearerToken", "token": TOKEN},
            "endpointId": id, "cookie": {},
        });
    }
    json!({ "directive": d })
}

fn initiate(endpoint: &str, session: &str, offer: &str) -> Value {
    directive(
        "Alexa.RTCSessionController",
        "InitiateSessionWithOffer",
        Some(endpoint),
        json!({"sessionId": session, "offer": {"format": "SDP", "value": offer}}),
    )
}

fn skill_env(kvs: &Kvs, cameras: Value) -> Vec<(String, String)> {
    let creds = kvs.emu.credentials();
    let mut env = vec![
        ("CAMGATE_CAMERAS".to_owned(), cameras.to_string()),
        // Alexa runs Smart Home Lambdas in us-east-1, eu-west-1 or us-west-2 only; the
        // channel is elsewhere, so the cameras name their region (or their ARN does).
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), creds.access_key_id.clone()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            creds.secret_access_key.clone(),
        ),
        (
            "AWS_ENDPOINT_URL_KINESIS_VIDEO".to_owned(),
            kvs.emu.control_plane_url(),
        ),
    ];
    if let Some(t) = &creds.session_token {
        env.push(("AWS_SESSION_TOKEN".to_owned(), t.clone()));
    }
    env
}

fn event(inv: &support::lambda::Invocation, skill: &Skill) -> Value {
    match &inv.result {
        Ok(v) => v["event"].clone(),
        Err(e) => panic!("the skill failed the invocation: {e}\n{}", skill.log()),
    }
}

fn error_type(ev: &Value) -> (&str, &str) {
    assert_eq!(ev["header"]["namespace"], "Alexa", "{ev}");
    assert_eq!(ev["header"]["name"], "ErrorResponse", "{ev}");
    (
        ev["payload"]["type"].as_str().unwrap_or(""),
        ev["payload"]["message"].as_str().unwrap_or(""),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Discover lists the cameras; an Echo-Show-shaped offer comes back as an
/// `AnswerGeneratedForSession` that a real peer plays (video and Opus audio); the session
/// directives are echoed; ten offers are timed; throttling maps to RATE_LIMIT_EXCEEDED; and
/// with the daemon stopped the same directive is ENDPOINT_UNREACHABLE inside Alexa's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_echo_show_reaches_the_camera_through_the_skill() {
    // Talkback on (into a file), as on a camera with a speaker: the answer's audio is sendrecv.
    let wav = std::env::temp_dir().join(format!("camgate-skill-talk-{}.wav", std::process::id()));
    let sink = format!("file:{}", wav.display());
    // The channel's TURN server is a real coturn, as KVS always hands one out: the daemon's
    // answer carries a relay candidate and does not wait for the gathering cap.
    let turn = Turn::start().await;
    let cfg = EmulatorConfig {
        turn_servers: vec![format!("127.0.0.1:{}", turn.port)],
        turn_secret: Some(turn.secret.clone()),
        ..EmulatorConfig::default()
    };
    let kvs = Kvs::start(
        cfg,
        &[
            ("CAMGATE__AUDIO__TALKBACK", "true"),
            ("CAMGATE__AUDIO__TALKBACK_SINK", sink.as_str()),
            // A hung-up peer keeps its slot until ICE consent fails (tens of seconds); the
            // twelve sessions below come faster than that.
            ("CAMGATE__WEBRTC__MAX_VIEWERS", "16"),
        ],
    )
    .await;
    let api = RuntimeApi::start().await;
    let cameras = json!([
        {"endpoint_id": "front-door", "friendly_name": "Front Door", "channel_name": CHANNEL,
         "region": kvs.emu.region(), "display_category": "DOORBELL", "full_duplex": true},
        {"endpoint_id": "garage", "friendly_name": "Garage", "channel_arn": kvs.channel.arn,
         "display_category": "CAMERA", "full_duplex": false},
    ]);
    let skill = Skill::start(&api, &skill_env(&kvs, cameras));
    let polled = api
        .first_poll(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the skill never polled the Runtime API\n{}", skill.log()));
    let cold_start = polled - skill.spawned;
    assert!(api.init_errors().is_empty(), "{:?}", api.init_errors());

    // Discovery.
    let inv = api
        .invoke(
            directive(
                "Alexa.Discovery",
                "Discover",
                None,
                json!({"scope": {"type": "BearerToken", "token": TOKEN}}),
            ),
            ALEXA_BUDGET,
        )
        .await;
    let ev = event(&inv, &skill);
    assert_eq!(ev["header"]["namespace"], "Alexa.Discovery");
    assert_eq!(ev["header"]["name"], "Discover.Response");
    let endpoints = ev["payload"]["endpoints"].as_array().expect("endpoints");
    let ids: Vec<&str> = endpoints
        .iter()
        .filter_map(|e| e["endpointId"].as_str())
        .collect();
    assert_eq!(ids, ["front-door", "garage"]);
    assert_eq!(endpoints[0]["friendlyName"], "Front Door");
    assert_eq!(endpoints[0]["displayCategories"][0], "DOORBELL");
    let interfaces = |e: &Value| -> Vec<String> {
        e["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["interface"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert!(interfaces(&endpoints[0]).contains(&"Alexa.DoorbellEventSource".to_owned()));
    assert!(!interfaces(&endpoints[1]).contains(&"Alexa.DoorbellEventSource".to_owned()));
    for e in endpoints {
        let rtc = e["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["interface"] == "Alexa.RTCSessionController")
            .expect("RTCSessionController");
        let duplex = e["endpointId"] == "front-door";
        assert_eq!(rtc["configuration"]["isFullDuplexAudioSupported"], duplex);
        assert!(interfaces(e).contains(&"Alexa.EndpointHealth".to_owned()));
    }

    // One Echo Show session, played for real, on each camera (by name, then by ARN).
    let mut first_offer = None;
    for (endpoint, session) in [
        ("front-door", "4f1c9a8e-2d3b-4c5d-9e6f-0a1b2c3d4e5f"),
        ("garage", "9b2d7c6a-1e0f-4a3b-8c5d-6e7f8091a2b3"),
    ] {
        let peer = TestViewer::with_options(ViewerOptions {
            audio: Variant::Canonical.audio(),
            talk_tone_hz: Some(1000),
            ..ViewerOptions::video(99)
        })
        .await;
        let offer = alexa_offer(&peer.offer(true).await, Variant::Canonical);
        let d = initiate(endpoint, session, &offer);
        let inv = api.invoke(d.clone(), ALEXA_BUDGET).await;
        first_offer.get_or_insert(inv.took);
        let ev = event(&inv, &skill);
        assert_eq!(
            ev["header"]["name"],
            "AnswerGeneratedForSession",
            "{ev}\n{}",
            skill.log()
        );
        assert_eq!(ev["header"]["namespace"], "Alexa.RTCSessionController");
        assert_eq!(
            ev["header"]["correlationToken"],
            d["directive"]["header"]["correlationToken"]
        );
        assert_ne!(
            ev["header"]["messageId"],
            d["directive"]["header"]["messageId"]
        );
        assert_eq!(ev["endpoint"]["endpointId"], endpoint);
        assert_eq!(ev["endpoint"]["scope"]["token"], TOKEN);
        assert_eq!(ev["payload"]["answer"]["format"], "SDP");
        let answer = ev["payload"]["answer"]["value"]
            .as_str()
            .expect("answer SDP");
        let problems = checklist(answer, payload_chars(answer), Variant::Canonical);
        assert!(problems.is_empty(), "{problems:?}\n{answer}");
        assert!(
            answer.contains(" typ relay"),
            "no relay candidate:\n{answer}"
        );
        assert!(inv.took < ALEXA_BUDGET, "took {:?}", inv.took);

        peer.accept_answer(&answer_for_peer(answer)).await;
        let got = peer.wait_frames(15, Duration::from_secs(20)).await;
        assert!(
            got.frames >= 15,
            "{endpoint}: decoded {} frames {:?}\n{}",
            got.frames,
            got.errors,
            kvs.daemon.log()
        );
        assert_eq!(got.first_packet_nals, vec![7, 8], "first packet is SPS+PPS");
        let heard = peer.wait_audio(75, Duration::from_secs(10)).await;
        assert_eq!(heard.codec, Some("OPUS"));
        assert_tone(&heard, 440.0, endpoint);

        // The session directives are echoed with the same session id.
        for name in ["SessionConnected", "SessionDisconnected"] {
            let d = directive(
                "Alexa.RTCSessionController",
                name,
                Some(endpoint),
                json!({"sessionId": session}),
            );
            let ev = event(&api.invoke(d.clone(), ALEXA_BUDGET).await, &skill);
            assert_eq!(ev["header"]["name"], name);
            assert_eq!(ev["payload"]["sessionId"], session);
            assert_eq!(
                ev["header"]["correlationToken"],
                d["directive"]["header"]["correlationToken"]
            );
        }
        peer.close().await;
    }
    // The daemon saw two Alexa viewers, under the sender ids the skill derived.
    let log = kvs.daemon.log();
    assert!(
        log.contains("alexa-4f1c9a8e-2d3b-4c5d-9e6f-0a1b2c3d4e5f"),
        "sender id not seen by the daemon:\n{log}"
    );

    // An unknown endpoint never reaches KVS.
    let offers_before = kvs.stats().alexa_offers;
    let inv = api
        .invoke(initiate("attic", "s-1", "v=0\r\n"), ALEXA_BUDGET)
        .await;
    let ev = event(&inv, &skill);
    assert_eq!(error_type(&ev).0, "NO_SUCH_ENDPOINT");
    assert_eq!(kvs.stats().alexa_offers, offers_before);

    // Ten warm offers, timed: directive in → event out, split into the skill's own time,
    // the KVS calls, and camgate's answer (the daemon's offer → answer).
    let mut totals = Vec::new();
    let mut sends = Vec::new();
    let mut own = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    for n in 0..10 {
        pace.tick().await;
        let peer = TestViewer::with_options(ViewerOptions {
            audio: Variant::Canonical.audio(),
            ..ViewerOptions::video(99)
        })
        .await;
        let offer = alexa_offer(&peer.offer(true).await, Variant::Canonical);
        let marker = format!("timing-{n}-{}", uuid::Uuid::new_v4());
        let inv = api
            .invoke(initiate("front-door", &marker, &offer), ALEXA_BUDGET)
            .await;
        let ev = event(&inv, &skill);
        assert_eq!(
            ev["header"]["name"],
            "AnswerGeneratedForSession",
            "offer {n}: {ev}\n{}",
            kvs.daemon.log()
        );
        let line = wait_line(&skill, &marker).await;
        let send = Duration::from_millis(field_ms(&line, "send_ms").expect("send_ms"));
        let resolve = Duration::from_millis(field_ms(&line, "resolve_ms").expect("resolve_ms"));
        assert!(
            line.contains("cached=true"),
            "warm offers use the cache: {line}"
        );
        totals.push(inv.took);
        sends.push(send);
        own.push(inv.took.saturating_sub(send + resolve));
        // Connect and hang up, as an Echo Show does, so the session frees its viewer slot.
        let answer = ev["payload"]["answer"]["value"]
            .as_str()
            .expect("answer SDP");
        peer.accept_answer(&answer_for_peer(answer)).await;
        assert!(
            peer.wait_connected(Duration::from_secs(10)).await,
            "offer {n}: the peer did not connect"
        );
        peer.close().await;
    }
    let stats = kvs.daemon_stats().await;
    let camgate: Vec<Duration> = stats["kvs"]["offer_to_answer_ms"]
        .as_array()
        .expect("kvs.offer_to_answer_ms")
        .iter()
        .rev()
        .take(10)
        .filter_map(|v| v.as_u64().map(Duration::from_millis))
        .collect();
    let (total, send, own_med) = (median(totals), median(sends), median(own));
    eprintln!(
        "MEASURE alexa skill: cold start (spawn -> first Runtime API poll) {:.1} ms; first InitiateSessionWithOffer (cold KVS resolve) {:.1} ms",
        ms(cold_start),
        ms(first_offer.unwrap_or_default())
    );
    eprintln!(
        "MEASURE alexa skill: InitiateSessionWithOffer in -> event out, median of 10 = {:.1} ms; SendAlexaOfferToMaster {:.1} ms (camgate's offer -> answer {:.1} ms); skill's own {:.1} ms",
        ms(total),
        ms(send),
        ms(median(camgate)),
        ms(own_med)
    );
    assert!(total < ALEXA_BUDGET);

    // Throttling by KVS is RATE_LIMIT_EXCEEDED.
    kvs.emu.fail_next(
        Api::SendAlexaOfferToMaster,
        400,
        "ClientLimitExceededException",
    );
    let peer = TestViewer::new(99).await;
    let offer = alexa_offer(&peer.offer(true).await, Variant::Canonical);
    let ev = event(
        &api.invoke(initiate("front-door", "throttled", &offer), ALEXA_BUDGET)
            .await,
        &skill,
    );
    assert_eq!(error_type(&ev).0, "RATE_LIMIT_EXCEEDED", "{ev}");

    // The camera goes away: the same directive is ENDPOINT_UNREACHABLE within the budget.
    let Kvs { emu, daemon, .. } = kvs;
    let (clean, _) = daemon.terminate();
    assert!(clean, "daemon did not stop cleanly");
    assert!(
        emu.wait_for(CHANNEL, Duration::from_secs(10), |s| !s.master_connected)
            .await
    );
    let t0 = Instant::now();
    let inv = api
        .invoke(initiate("front-door", "after-stop", &offer), ALEXA_BUDGET)
        .await;
    let waited = t0.elapsed();
    let ev = event(&inv, &skill);
    let (kind, message) = error_type(&ev);
    assert_eq!(kind, "ENDPOINT_UNREACHABLE", "{ev}");
    assert!(message.contains("did not answer"), "{message}");
    assert!(
        waited < ALEXA_BUDGET,
        "ENDPOINT_UNREACHABLE took {waited:?}"
    );
    eprintln!(
        "MEASURE alexa skill: daemon stopped -> ENDPOINT_UNREACHABLE after {:.0} ms",
        ms(waited)
    );
    peer.close().await;
    let _ = std::fs::remove_file(&wav);
}

/// Waits (bounded) for the skill's log line that names `needle`.
async fn wait_line(skill: &Skill, needle: &str) -> String {
    let what = format!("a log line with {needle}");
    support::wait::until(&what, Duration::from_secs(5), || {
        std::future::ready(skill.lines_with(needle).into_iter().next())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", skill.log()))
}

/// A broken `CAMGATE_CAMERAS` fails every directive with an INTERNAL_ERROR that names the
/// problem, and the log says it too; the binary outside Lambda says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_camera_list_is_named_in_every_answer() {
    let api = RuntimeApi::start().await;
    let env: Vec<(String, String)> = [
        (
            "CAMGATE_CAMERAS",
            r#"[{"endpoint_id": "front-door", "friendly_name": "Front Door"}]"#,
        ),
        ("AWS_REGION", "us-west-2"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
        // Nothing listens here: the skill must not get as far as a KVS call.
        ("AWS_ENDPOINT_URL_KINESIS_VIDEO", "http://127.0.0.1:9"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let skill = Skill::start(&api, &env);
    for d in [
        directive("Alexa.Discovery", "Discover", None, json!({})),
        initiate("front-door", "s-1", "v=0\r\n"),
    ] {
        let inv = api.invoke(d, ALEXA_BUDGET).await;
        let ev = event(&inv, &skill);
        let (kind, message) = error_type(&ev);
        assert_eq!(kind, "INTERNAL_ERROR");
        assert!(
            message.contains("CAMGATE_CAMERAS[0]")
                && message.contains("channel_name or channel_arn"),
            "{message}"
        );
    }
    assert!(
        !skill
            .lines_with("channel_name or channel_arn is required")
            .is_empty(),
        "the problem is not logged:\n{}",
        skill.log()
    );

    let out = std::process::Command::new(support::lambda::skill_binary())
        .env_clear()
        .output()
        .expect("run the skill binary");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_LAMBDA_RUNTIME_API"), "{err}");
}
