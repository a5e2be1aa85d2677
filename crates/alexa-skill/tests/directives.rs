//! Every directive the skill handles, from recorded JSON fixtures (`tests/fixtures/*.directive.json`,
//! shapes from reference §5.2–5.3 and Alexa's Smart Home documentation), through the sans-IO
//! core, compared with the expected event (`*.event.json`). Run with `BLESS=1` to rewrite the
//! expected events after a deliberate change, then review the diff.
//!
//! The KVS outcome of an `InitiateSessionWithOffer` is an input here (the end-to-end test in
//! the workspace's `tests/alexa_skill.rs` drives the real calls), so each error mapping is
//! checked too.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use camgate_alexa_skill::alexa::Stamp;
use camgate_alexa_skill::cameras::{self, Cameras, CamerasError};
use camgate_alexa_skill::skill::{self, OfferError, Step};
use serde_json::{Value, json};

const CAMERAS: &str = r#"[
  {"endpoint_id": "front-door", "friendly_name": "Front Door", "channel_name": "front-door",
   "display_category": "DOORBELL", "full_duplex": true},
  {"endpoint_id": "garage", "friendly_name": "Garage", "description": "Side camera",
   "channel_arn": "arn:aws:kinesisvideo:us-west-2:123456789012:channel/garage/1700000000000"}
]"#;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn directive(name: &str) -> Value {
    let path = fixtures().join(format!("{name}.directive.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn stamp() -> Stamp {
    Stamp {
        message_id: "00000000-0000-4000-8000-000000000001".into(),
        now: UNIX_EPOCH + Duration::from_millis(1_796_000_000_250),
    }
}

fn cams() -> Cameras {
    cameras::parse(CAMERAS).unwrap()
}

/// Compares with `<name>.event.json`, or writes it when `BLESS=1`.
fn expect_event(name: &str, got: &Value) {
    let path = fixtures().join(format!("{name}.event.json"));
    let pretty = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, pretty).unwrap();
        return;
    }
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display())),
    )
    .unwrap();
    assert_eq!(
        got,
        &want,
        "{name}: the event differs from {}\n{pretty}",
        path.display()
    );
}

fn reply(input: &Value, cameras: Result<&Cameras, &CamerasError>) -> Value {
    match skill::handle(input, cameras, &stamp()) {
        Step::Reply(v) => v,
        Step::Offer(r) => panic!("unexpected offer request {r:?}"),
    }
}

fn error(event: &Value) -> (&str, &str) {
    let e = &event["event"];
    assert_eq!(e["header"]["namespace"], "Alexa", "{event}");
    assert_eq!(e["header"]["name"], "ErrorResponse", "{event}");
    (
        e["payload"]["type"].as_str().unwrap(),
        e["payload"]["message"].as_str().unwrap(),
    )
}

#[test]
fn discover_lists_every_camera_with_its_capabilities() {
    let c = cams();
    let ev = reply(&directive("discover"), Ok(&c));
    expect_event("discover", &ev);
    let endpoints = ev["event"]["payload"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    let door = &endpoints[0];
    assert_eq!(door["displayCategories"], json!(["DOORBELL", "CAMERA"]));
    let ifaces: Vec<&str> = door["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["interface"].as_str().unwrap())
        .collect();
    assert_eq!(
        ifaces,
        [
            "Alexa",
            "Alexa.RTCSessionController",
            "Alexa.DoorbellEventSource",
            "Alexa.EndpointHealth"
        ]
    );
    assert_eq!(
        door["capabilities"][1]["configuration"]["isFullDuplexAudioSupported"],
        true
    );
    let garage = &endpoints[1];
    assert_eq!(garage["displayCategories"], json!(["CAMERA"]));
    assert_eq!(garage["description"], "Side camera");
    assert_eq!(garage["capabilities"].as_array().unwrap().len(), 3);
    assert_eq!(
        garage["capabilities"][1]["configuration"]["isFullDuplexAudioSupported"],
        false
    );
    // Discovery events carry no correlation token or endpoint.
    assert!(ev["event"]["header"].get("correlationToken").is_none());
    assert!(ev["event"].get("endpoint").is_none());
}

#[test]
fn accept_grant_is_acknowledged() {
    let c = cams();
    let ev = reply(&directive("accept_grant"), Ok(&c));
    expect_event("accept_grant", &ev);
    assert_eq!(ev["event"]["header"]["name"], "AcceptGrant.Response");
    assert_eq!(ev["event"]["header"]["namespace"], "Alexa.Authorization");
}

#[test]
fn report_state_says_connectivity_ok() {
    let c = cams();
    let d = directive("report_state");
    let ev = reply(&d, Ok(&c));
    expect_event("report_state", &ev);
    assert_eq!(ev["event"]["header"]["name"], "StateReport");
    assert_eq!(
        ev["event"]["header"]["correlationToken"],
        d["directive"]["header"]["correlationToken"]
    );
    assert_eq!(
        ev["event"]["endpoint"]["scope"],
        d["directive"]["endpoint"]["scope"]
    );
    let p = &ev["context"]["properties"][0];
    assert_eq!(p["namespace"], "Alexa.EndpointHealth");
    assert_eq!(p["value"]["value"], "OK");
    assert_eq!(p["timeOfSample"], "2026-11-30T00:53:20.25Z");
}

#[test]
fn session_directives_are_echoed() {
    let c = cams();
    for name in ["session_connected", "session_disconnected"] {
        let d = directive(name);
        let ev = reply(&d, Ok(&c));
        expect_event(name, &ev);
        assert_eq!(
            ev["event"]["header"]["name"],
            d["directive"]["header"]["name"]
        );
        assert_eq!(
            ev["event"]["payload"]["sessionId"],
            d["directive"]["payload"]["sessionId"]
        );
        assert_eq!(
            ev["event"]["header"]["correlationToken"],
            d["directive"]["header"]["correlationToken"]
        );
    }
}

fn offer_request(d: &Value, c: &Cameras) -> skill::OfferRequest {
    match skill::handle(d, Ok(c), &stamp()) {
        Step::Offer(r) => *r,
        Step::Reply(v) => panic!("expected an offer request, got {v}"),
    }
}

fn answer_sdp() -> &'static str {
    "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio0 video0\r\n\
     m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:audio0\r\na=sendrecv\r\n\
     m=video 9 UDP/TLS/RTP/SAVPF 99\r\na=mid:video0\r\na=sendonly\r\n"
}

#[test]
fn initiate_session_passes_the_offer_and_returns_the_answer() {
    let c = cams();
    let d = directive("initiate_session");
    let req = offer_request(&d, &c);
    let offer = d["directive"]["payload"]["offer"]["value"]
        .as_str()
        .unwrap();
    assert_eq!(req.camera.endpoint_id.as_str(), "front-door");
    assert_eq!(
        req.sender.as_str(),
        "alexa-1b2c3d4e-5f60-4718-92a3-b4c5d6e7f809"
    );
    // The payload is the JSON-wrapped offer, base64: what camgate and the SDKs read.
    let wrapped: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&req.payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(wrapped, json!({"type": "offer", "sdp": offer}));

    let answer = base64::engine::general_purpose::STANDARD
        .encode(json!({"type": "answer", "sdp": answer_sdp()}).to_string());
    let ev = req.finish(Ok(answer), &stamp());
    expect_event("initiate_session", &ev);
    let e = &ev["event"];
    assert_eq!(e["header"]["namespace"], "Alexa.RTCSessionController");
    assert_eq!(e["header"]["name"], "AnswerGeneratedForSession");
    assert_eq!(
        e["header"]["correlationToken"],
        d["directive"]["header"]["correlationToken"]
    );
    assert_eq!(e["endpoint"]["endpointId"], "front-door");
    assert_eq!(e["endpoint"]["scope"], d["directive"]["endpoint"]["scope"]);
    assert_eq!(
        e["payload"]["answer"],
        json!({"format": "SDP", "value": answer_sdp()})
    );

    // A raw (not JSON-wrapped) answer is accepted too.
    let raw = base64::engine::general_purpose::STANDARD.encode(answer_sdp());
    let ev = offer_request(&d, &c).finish(Ok(raw), &stamp());
    assert_eq!(ev["event"]["payload"]["answer"]["value"], answer_sdp());
}

#[test]
fn kvs_failures_map_to_alexa_error_types() {
    let c = cams();
    let d = directive("initiate_session");
    let cases = [
        (
            Err(OfferError::NoAnswer(Duration::from_millis(4800))),
            "ENDPOINT_UNREACHABLE",
            "did not answer",
        ),
        (
            Err(OfferError::Throttled("Rate exceeded".into())),
            "RATE_LIMIT_EXCEEDED",
            "throttled",
        ),
        (
            Err(OfferError::ChannelNotFound("channel front-door".into())),
            "INTERNAL_ERROR",
            "channel not found",
        ),
        (
            Err(OfferError::Other(
                "SendAlexaOfferToMaster: NotAuthorizedException: no".into(),
            )),
            "INTERNAL_ERROR",
            "NotAuthorizedException",
        ),
        (
            Ok("not base64 at all!".into()),
            "INTERNAL_ERROR",
            "not usable",
        ),
    ];
    for (outcome, kind, words) in cases {
        let ev = offer_request(&d, &c).finish(outcome, &stamp());
        let (got, message) = error(&ev);
        assert_eq!(got, kind, "{ev}");
        assert!(message.contains(words), "{message:?} lacks {words:?}");
        // Errors still go back to the directive's endpoint and correlation token.
        assert_eq!(ev["event"]["endpoint"]["endpointId"], "front-door");
        assert_eq!(
            ev["event"]["header"]["correlationToken"],
            d["directive"]["header"]["correlationToken"]
        );
    }
    let ev = offer_request(&d, &c).finish(
        Err(OfferError::NoAnswer(Duration::from_millis(4800))),
        &stamp(),
    );
    expect_event("initiate_session_unreachable", &ev);
}

#[test]
fn bad_directives_are_refused_with_the_right_type() {
    let c = cams();
    // A directive this skill does not handle.
    let ev = reply(&directive("power_on"), Ok(&c));
    expect_event("power_on", &ev);
    let (kind, message) = error(&ev);
    assert_eq!(kind, "INVALID_DIRECTIVE");
    assert!(message.contains("Alexa.PowerController.TurnOn"));

    // An endpoint the skill does not have.
    for name in ["initiate_session", "report_state", "session_connected"] {
        let mut d = directive(name);
        d["directive"]["endpoint"]["endpointId"] = json!("attic");
        let ev = reply(&d, Ok(&c));
        let (kind, message) = error(&ev);
        assert_eq!(kind, "NO_SUCH_ENDPOINT", "{name}");
        assert!(message.contains("attic"), "{message}");
    }

    // An offer without a session id, without SDP, or too large for KVS.
    let mut d = directive("initiate_session");
    d["directive"]["payload"]
        .as_object_mut()
        .unwrap()
        .remove("sessionId");
    assert_eq!(error(&reply(&d, Ok(&c))).0, "INVALID_DIRECTIVE");
    let mut d = directive("initiate_session");
    d["directive"]["payload"]["offer"] = json!({"format": "SDP", "value": ""});
    assert_eq!(error(&reply(&d, Ok(&c))).0, "INVALID_DIRECTIVE");
    let mut d = directive("initiate_session");
    d["directive"]["payload"]["offer"]["value"] =
        json!(format!("v=0\r\n{}", "a=x\r\n".repeat(2000)));
    let ev = reply(&d, Ok(&c));
    let (kind, message) = error(&ev);
    assert_eq!(kind, "INTERNAL_ERROR");
    assert!(message.contains("at most 10000"), "{message}");

    // Not a directive at all.
    for junk in [
        json!(null),
        json!({"hello": 1}),
        json!({"directive": {"header": 3}}),
    ] {
        assert_eq!(
            error(&reply(&junk, Ok(&c))).0,
            "INVALID_DIRECTIVE",
            "{junk}"
        );
    }
}

#[test]
fn a_broken_camera_list_fails_every_directive_naming_the_problem() {
    let broken = cameras::parse(r#"[{"endpoint_id": "a", "friendly_name": "A"}]"#).unwrap_err();
    for name in [
        "discover",
        "accept_grant",
        "report_state",
        "initiate_session",
        "session_connected",
        "power_on",
    ] {
        let ev = reply(&directive(name), Err(&broken));
        let (kind, message) = error(&ev);
        assert_eq!(kind, "INTERNAL_ERROR", "{name}");
        assert!(
            message.contains("CAMGATE_CAMERAS[0]")
                && message.contains("channel_name or channel_arn is required"),
            "{name}: {message}"
        );
    }
}
