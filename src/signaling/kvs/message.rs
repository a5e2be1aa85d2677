//! The JSON messages on the KVS signaling WebSocket.
//!
//! Parsing is lenient on purpose: the service, the C SDK and browsers disagree on key case, add
//! members nobody documents, and API Gateway pushes its own `{"message": ...}` frames. Anything we
//! cannot use becomes a typed rejection the driver logs and drops — never a panic and never a
//! reason to drop the connection. Building is strict: an oversized or malformed message would be
//! dropped by the service without a word, so we refuse to send it and say why.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use super::client_id::{BadClientId, ClientId};

/// Service limit on `messagePayload` (base64 characters).
pub const MAX_PAYLOAD_CHARS: usize = 10_000;
/// Service limit on client ids and correlation ids.
pub const MAX_ID_CHARS: usize = 256;

/// A frame from the service that we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A viewer's (or Alexa's) SDP offer.
    Offer { sender: ClientId, sdp: String },
    /// An SDP answer; a master never expects one, the driver logs it.
    Answer { sender: ClientId, sdp: String },
    /// A trickled remote candidate, as the compact JSON `{"candidate","sdpMid","sdpMLineIndex"}`.
    Candidate {
        sender: ClientId,
        candidate_json: String,
    },
    /// Delivery/validation failure of something we sent with a correlation id.
    Status(StatusResponse),
    /// The service is about to close this connection.
    GoAway,
    /// The TURN relays are being recycled.
    ReconnectIceServer,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusResponse {
    pub correlation_id: Option<String>,
    pub error_type: Option<String>,
    pub status_code: Option<String>,
    pub description: Option<String>,
    pub success: Option<bool>,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("empty frame")]
    Empty,
    #[error("binary frame ({0} bytes)")]
    Binary(usize),
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    /// Valid JSON but not a signaling envelope, e.g. API Gateway's
    /// `{"message":"Endpoint request timed out",...}`.
    #[error("not a signaling envelope: {0}")]
    NotAnEnvelope(String),
    #[error("{message_type} without senderClientId")]
    MissingSender { message_type: String },
    /// A `senderClientId` the service's rule (`[a-zA-Z0-9_.-]{1,256}`) does not allow.
    #[error("{message_type} with a bad senderClientId {sender:?}: {reason}")]
    BadSender {
        message_type: String,
        /// The start of what was sent, for the log.
        sender: String,
        reason: BadClientId,
    },
    #[error("{message_type} from {sender}: bad payload: {reason}")]
    BadPayload {
        message_type: String,
        sender: ClientId,
        reason: String,
    },
    /// The end-of-candidates marker some browsers send (empty `candidate`).
    #[error("end-of-candidates marker from {sender}")]
    EndOfCandidates { sender: ClientId },
    #[error("unknown messageType {0:?}")]
    UnknownType(String),
}

/// Parses a binary frame: always rejected (the service only speaks text).
pub fn parse_binary(data: &[u8]) -> Rejected {
    if data.is_empty() {
        Rejected::Empty
    } else {
        Rejected::Binary(data.len())
    }
}

/// Parses one text frame from the service.
pub fn parse_frame(text: &str) -> Result<Incoming, Rejected> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Rejected::Empty);
    }
    let value: Value =
        serde_json::from_str(trimmed).map_err(|e| Rejected::NotJson(excerpt(&e.to_string())))?;
    let Value::Object(obj) = value else {
        return Err(Rejected::NotAnEnvelope(excerpt(trimmed)));
    };
    let Some(message_type) = get_str(&obj, "messageType") else {
        return Err(Rejected::NotAnEnvelope(excerpt(trimmed)));
    };
    let message_type = message_type.trim().to_ascii_uppercase();
    let sender_text = get_str(&obj, "senderClientId").unwrap_or_default();
    // Offers, answers and candidates need a sender: a missing one, or one the service would
    // never have stamped, drops the frame like any other malformed message.
    let sender = |message_type: String| match ClientId::parse(sender_text) {
        Ok(id) => Ok((id, message_type)),
        Err(BadClientId::Empty) => Err(Rejected::MissingSender { message_type }),
        Err(reason) => Err(Rejected::BadSender {
            message_type,
            sender: excerpt(sender_text),
            reason,
        }),
    };
    match message_type.as_str() {
        "SDP_OFFER" | "SDP_ANSWER" => {
            let (sender, message_type) = sender(message_type)?;
            let bad = |reason: String| Rejected::BadPayload {
                message_type: message_type.clone(),
                sender: sender.clone(),
                reason,
            };
            let payload = decode_payload(&obj).map_err(bad)?;
            let sdp = sdp_from_payload(&payload).map_err(bad)?;
            if message_type == "SDP_OFFER" {
                Ok(Incoming::Offer { sender, sdp })
            } else {
                Ok(Incoming::Answer { sender, sdp })
            }
        }
        "ICE_CANDIDATE" => {
            let (sender, message_type) = sender(message_type)?;
            let bad = |reason: String| Rejected::BadPayload {
                message_type: message_type.clone(),
                sender: sender.clone(),
                reason,
            };
            let payload = decode_payload(&obj).map_err(bad)?;
            match candidate_from_payload(&payload).map_err(bad)? {
                Some(candidate_json) => Ok(Incoming::Candidate {
                    sender,
                    candidate_json,
                }),
                None => Err(Rejected::EndOfCandidates { sender }),
            }
        }
        "STATUS_RESPONSE" => {
            let status = find(&obj, "statusResponse")
                .and_then(Value::as_object)
                .map(|s| StatusResponse {
                    correlation_id: get_string_like(s, "correlationId"),
                    error_type: get_string_like(s, "errorType"),
                    status_code: get_string_like(s, "statusCode"),
                    description: get_string_like(s, "description"),
                    success: find(s, "success").and_then(Value::as_bool),
                })
                .unwrap_or_default();
            Ok(Incoming::Status(status))
        }
        "GO_AWAY" => Ok(Incoming::GoAway),
        "RECONNECT_ICE_SERVER" => Ok(Incoming::ReconnectIceServer),
        _ => Err(Rejected::UnknownType(excerpt(&message_type))),
    }
}

/// Case-insensitive member lookup.
fn find<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    find(obj, key).and_then(Value::as_str)
}

/// Strings, or numbers rendered as strings (`statusCode` is documented as a string, but be kind).
fn get_string_like(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match find(obj, key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn decode_payload(obj: &Map<String, Value>) -> Result<String, String> {
    let raw = get_str(obj, "messagePayload").ok_or("no messagePayload")?;
    // Tolerate line breaks some encoders insert.
    let compact: String = raw.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = B64
        .decode(compact.as_bytes())
        .map_err(|e| format!("payload is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "payload is not UTF-8".to_owned())
}

/// `{"type":"offer","sdp":"..."}`, or a bare SDP (some Alexa-era senders do that).
fn sdp_from_payload(payload: &str) -> Result<String, String> {
    let t = payload.trim_start();
    if t.starts_with("v=0") {
        return Ok(payload.to_owned());
    }
    let v: Value =
        serde_json::from_str(t).map_err(|_| "payload is neither JSON nor SDP".to_owned())?;
    let obj = v.as_object().ok_or("payload JSON is not an object")?;
    let sdp = get_str(obj, "sdp").ok_or("payload has no sdp")?;
    if !sdp.trim_start().starts_with("v=0") {
        return Err("sdp does not start with v=0".to_owned());
    }
    Ok(sdp.to_owned())
}

/// Returns the normalised candidate JSON, or None for an end-of-candidates marker.
fn candidate_from_payload(payload: &str) -> Result<Option<String>, String> {
    let v: Value =
        serde_json::from_str(payload.trim()).map_err(|_| "candidate is not JSON".to_owned())?;
    let obj = v.as_object().ok_or("candidate JSON is not an object")?;
    let candidate = match find(obj, "candidate") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => "",
        Some(_) => return Err("candidate is not a string".to_owned()),
    };
    if candidate.trim().is_empty() {
        return Ok(None);
    }
    let mut out = Map::new();
    out.insert("candidate".into(), Value::String(candidate.to_owned()));
    match find(obj, "sdpMid") {
        Some(Value::String(s)) => {
            out.insert("sdpMid".into(), Value::String(s.clone()));
        }
        Some(Value::Number(n)) => {
            out.insert("sdpMid".into(), Value::String(n.to_string()));
        }
        _ => {}
    }
    match find(obj, "sdpMLineIndex") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|i| i <= u16::MAX as u64) => {
            out.insert("sdpMLineIndex".into(), Value::Number(n.clone()));
        }
        Some(Value::String(s)) => {
            if let Ok(i) = s.trim().parse::<u16>() {
                out.insert("sdpMLineIndex".into(), Value::from(i));
            }
        }
        _ => {}
    }
    if let Some(Value::String(u)) = find(obj, "usernameFragment") {
        out.insert("usernameFragment".into(), Value::String(u.clone()));
    }
    Ok(Some(Value::Object(out).to_string()))
}

fn excerpt(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Outgoing action (client → service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    SdpAnswer,
    IceCandidate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SdpAnswer => "SDP_ANSWER",
            Action::IceCandidate => "ICE_CANDIDATE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{what} {value:?} is not 1..=256 chars of [a-zA-Z0-9_.-]")]
    BadId { what: &'static str, value: String },
    #[error("{action} payload is {len} base64 chars, over the service limit of 10000")]
    TooLarge { action: &'static str, len: usize },
    #[error("candidate is not valid JSON: {0}")]
    BadCandidate(String),
}

/// `[a-zA-Z0-9_.-]{1,256}`
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Builds the SDP_ANSWER frame for `recipient`.
pub fn build_answer(
    recipient: &ClientId,
    sdp: &str,
    correlation_id: &str,
) -> Result<String, BuildError> {
    build(
        Action::SdpAnswer,
        recipient,
        &answer_payload_json(sdp),
        Some(correlation_id),
    )
}

fn answer_payload_json(sdp: &str) -> String {
    serde_json::json!({"type": "answer", "sdp": sdp}).to_string()
}

/// Length of the `messagePayload` an answer becomes (base64 of the JSON wrapper): what the
/// service's 10 000-character limit applies to.
pub fn answer_payload_chars(sdp: &str) -> usize {
    answer_payload_json(sdp).len().div_ceil(3) * 4
}

/// Builds an ICE_CANDIDATE frame for `recipient` from the candidate JSON the session produced.
pub fn build_candidate(
    recipient: &ClientId,
    candidate_json: &str,
    correlation_id: Option<&str>,
) -> Result<String, BuildError> {
    let v: Value = serde_json::from_str(candidate_json)
        .map_err(|e| BuildError::BadCandidate(e.to_string()))?;
    if !v.is_object() {
        return Err(BuildError::BadCandidate("not an object".into()));
    }
    build(
        Action::IceCandidate,
        recipient,
        &v.to_string(),
        correlation_id,
    )
}

fn build(
    action: Action,
    recipient: &ClientId,
    payload_json: &str,
    correlation_id: Option<&str>,
) -> Result<String, BuildError> {
    let payload = B64.encode(payload_json.as_bytes());
    if payload.len() > MAX_PAYLOAD_CHARS {
        return Err(BuildError::TooLarge {
            action: action.as_str(),
            len: payload.len(),
        });
    }
    let mut msg = Map::new();
    msg.insert("action".into(), action.as_str().into());
    msg.insert("recipientClientId".into(), recipient.as_str().into());
    msg.insert("messagePayload".into(), payload.into());
    if let Some(c) = correlation_id {
        if !valid_id(c) {
            return Err(BuildError::BadId {
                what: "correlationId",
                value: excerpt(c),
            });
        }
        msg.insert("correlationId".into(), c.into());
    }
    Ok(Value::Object(msg).to_string())
}

/// Correlation ids `<unix-ms>_<counter>` (the C SDK's shape), remembered for a while so a
/// STATUS_RESPONSE can say which message to whom failed.
#[derive(Debug)]
pub struct Correlator {
    counter: u64,
    outstanding: HashMap<String, Sent>,
    order: VecDeque<(Instant, String)>,
    capacity: usize,
    keep_for: Duration,
}

/// What a correlation id referred to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub action: Action,
    pub recipient: ClientId,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(512, Duration::from_secs(120))
    }
}

impl Correlator {
    pub fn new(capacity: usize, keep_for: Duration) -> Self {
        Correlator {
            counter: 0,
            outstanding: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            keep_for,
        }
    }

    /// A fresh id for a message sent now; `unix_ms` is the wall clock.
    pub fn next(
        &mut self,
        now: Instant,
        unix_ms: u64,
        action: Action,
        recipient: &ClientId,
    ) -> String {
        self.counter = self.counter.wrapping_add(1);
        let id = format!("{unix_ms}_{}", self.counter);
        self.expire(now);
        while self.order.len() >= self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.outstanding.remove(&old);
            }
        }
        self.order.push_back((now, id.clone()));
        self.outstanding.insert(
            id.clone(),
            Sent {
                action,
                recipient: recipient.clone(),
            },
        );
        id
    }

    /// What a STATUS_RESPONSE refers to, if we still remember it.
    pub fn resolve(&mut self, now: Instant, correlation_id: &str) -> Option<Sent> {
        self.expire(now);
        self.outstanding.get(correlation_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.outstanding.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.keep_for {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.outstanding.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

    fn b64(s: &str) -> String {
        B64.encode(s)
    }

    #[test]
    fn offer_in_json_payload() {
        let payload = b64(&serde_json::json!({"type":"offer","sdp":SDP}).to_string());
        let frame = format!(
            r#"{{"messageType":"SDP_OFFER","messagePayload":"{payload}","senderClientId":"viewer-1"}}"#
        );
        assert_eq!(
            parse_frame(&frame).unwrap(),
            Incoming::Offer {
                sender: id("viewer-1"),
                sdp: SDP.into()
            }
        );
    }

    #[test]
    fn offer_with_pascal_case_keys_unknown_members_and_bare_sdp() {
        let frame = format!(
            r#"{{"MessageType":"sdp_offer","MessagePayload":"{}","SenderClientId":"alexa_1","IceServerList":[],"x":1}}"#,
            b64(SDP)
        );
        assert_eq!(
            parse_frame(&frame).unwrap(),
            Incoming::Offer {
                sender: id("alexa_1"),
                sdp: SDP.into()
            }
        );
    }

    #[test]
    fn offer_without_sender_or_with_garbage_payload_is_rejected() {
        let payload = b64(&serde_json::json!({"type":"offer","sdp":SDP}).to_string());
        let no_sender = format!(r#"{{"messageType":"SDP_OFFER","messagePayload":"{payload}"}}"#);
        assert!(matches!(
            parse_frame(&no_sender),
            Err(Rejected::MissingSender { .. })
        ));
        // A sender the service would never stamp is refused like any malformed frame.
        for bad in ["has space", "a/b", &"v".repeat(257)] {
            let f = format!(
                r#"{{"messageType":"SDP_OFFER","messagePayload":"{payload}","senderClientId":"{bad}"}}"#
            );
            assert!(
                matches!(parse_frame(&f), Err(Rejected::BadSender { .. })),
                "{bad}"
            );
        }
        let empty = format!(
            r#"{{"messageType":"ICE_CANDIDATE","messagePayload":"{payload}","senderClientId":""}}"#
        );
        assert!(matches!(
            parse_frame(&empty),
            Err(Rejected::MissingSender { .. })
        ));
        for bad in ["!!!notbase64", &b64("hello"), &b64(r#"{"type":"offer"}"#)] {
            let f = format!(
                r#"{{"messageType":"SDP_OFFER","messagePayload":"{bad}","senderClientId":"v"}}"#
            );
            assert!(
                matches!(parse_frame(&f), Err(Rejected::BadPayload { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn candidate_is_normalised_and_empty_candidate_ignored() {
        let payload = b64(
            r#"{"Candidate":"candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host","sdpMid":0,"sdpMLineIndex":"0","foo":true}"#,
        );
        let frame = format!(
            r#"{{"messageType":"ICE_CANDIDATE","messagePayload":"{payload}","senderClientId":"v1"}}"#
        );
        let Incoming::Candidate {
            sender,
            candidate_json,
        } = parse_frame(&frame).unwrap()
        else {
            panic!("not a candidate")
        };
        assert_eq!(sender.as_str(), "v1");
        let v: Value = serde_json::from_str(&candidate_json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"candidate":"candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host","sdpMid":"0","sdpMLineIndex":0})
        );

        let empty = b64(r#"{"candidate":"","sdpMid":"0","sdpMLineIndex":0}"#);
        let frame = format!(
            r#"{{"messageType":"ICE_CANDIDATE","messagePayload":"{empty}","senderClientId":"v1"}}"#
        );
        assert_eq!(
            parse_frame(&frame),
            Err(Rejected::EndOfCandidates { sender: id("v1") })
        );
    }

    #[test]
    fn status_response_go_away_reconnect() {
        let f = r#"{"messageType":"STATUS_RESPONSE","statusResponse":{"correlationId":"1697058567743","errorType":"InvalidArgumentException","statusCode":"400","success":false}}"#;
        assert_eq!(
            parse_frame(f).unwrap(),
            Incoming::Status(StatusResponse {
                correlation_id: Some("1697058567743".into()),
                error_type: Some("InvalidArgumentException".into()),
                status_code: Some("400".into()),
                description: None,
                success: Some(false),
            })
        );
        assert_eq!(
            parse_frame(r#"{"messageType":"GO_AWAY"}"#).unwrap(),
            Incoming::GoAway
        );
        assert_eq!(
            parse_frame(r#"{"messageType":"GO_AWAY","messagePayload":"e30="}"#).unwrap(),
            Incoming::GoAway
        );
        assert_eq!(
            parse_frame(r#"{"messageType":"RECONNECT_ICE_SERVER"}"#).unwrap(),
            Incoming::ReconnectIceServer
        );
    }

    #[test]
    fn non_envelopes_are_typed_rejections() {
        let f =
            r#"{"message": "Endpoint request timed out", "connectionId":"abc=", "requestId":"r"}"#;
        assert!(matches!(parse_frame(f), Err(Rejected::NotAnEnvelope(_))));
        assert!(matches!(
            parse_frame("[1,2]"),
            Err(Rejected::NotAnEnvelope(_))
        ));
        assert!(matches!(parse_frame("not json"), Err(Rejected::NotJson(_))));
        assert_eq!(parse_frame("   "), Err(Rejected::Empty));
        assert!(matches!(
            parse_frame(r#"{"messageType":"FOO"}"#),
            Err(Rejected::UnknownType(_))
        ));
        assert_eq!(parse_binary(&[]), Rejected::Empty);
        assert_eq!(parse_binary(&[1, 2, 3]), Rejected::Binary(3));
    }

    #[test]
    fn hostile_frames_never_panic() {
        let long = "é".repeat(1000);
        let inputs = [
            r#"{"messageType":null}"#.to_string(),
            r#"{"messageType":"ICE_CANDIDATE","senderClientId":"v","messagePayload":123}"#.into(),
            format!(r#"{{"messageType":"{long}"}}"#),
            format!(r#"{{"message":"{long}"}}"#),
            r#"{"messageType":"STATUS_RESPONSE","statusResponse":5}"#.into(),
            r#"{"messageType":"ICE_CANDIDATE","senderClientId":"v","messagePayload":"W10="}"#
                .into(),
        ];
        for i in &inputs {
            let _ = parse_frame(i);
        }
    }

    #[test]
    fn answer_frame_round_trips() {
        let msg = build_answer(&id("viewer-abc"), SDP, "1700000000000_1").unwrap();
        let v: Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["action"], "SDP_ANSWER");
        assert_eq!(v["recipientClientId"], "viewer-abc");
        assert_eq!(v["correlationId"], "1700000000000_1");
        let payload = B64.decode(v["messagePayload"].as_str().unwrap()).unwrap();
        let p: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(p, serde_json::json!({"type":"answer","sdp":SDP}));
    }

    #[test]
    fn oversized_answer_is_an_error_not_a_silent_send() {
        let big = format!("{SDP}{}", "a=x\r\n".repeat(2000));
        assert!(matches!(
            build_answer(&id("v"), &big, "1_1"),
            Err(BuildError::TooLarge { len, .. }) if len > MAX_PAYLOAD_CHARS
        ));
        // Just under the limit passes.
        let mut sdp = SDP.to_string();
        while B64
            .encode(serde_json::json!({"type":"answer","sdp":format!("{sdp}a\r\n")}).to_string())
            .len()
            <= MAX_PAYLOAD_CHARS
        {
            sdp.push_str("a\r\n");
        }
        assert!(build_answer(&id("v"), &sdp, "1_1").is_ok());
        assert!(answer_payload_chars(&sdp) <= MAX_PAYLOAD_CHARS);
        assert!(answer_payload_chars(&format!("{sdp}a\r\n")) > MAX_PAYLOAD_CHARS);
        assert_eq!(
            answer_payload_chars(SDP),
            B64.encode(serde_json::json!({"type":"answer","sdp":SDP}).to_string())
                .len()
        );
    }

    #[test]
    fn ids_are_validated() {
        assert!(valid_id("viewer-0f1e.ok_"));
        assert!(!valid_id(""));
        assert!(!valid_id("has space"));
        assert!(!valid_id(&"a".repeat(257)));
        assert!(valid_id(&"a".repeat(256)));
        assert!(matches!(
            build_answer(&id("v"), SDP, "1:1"),
            Err(BuildError::BadId { .. })
        ));
        assert!(matches!(
            build_candidate(&id("v"), "nope", None),
            Err(BuildError::BadCandidate(_))
        ));
        let c = build_candidate(
            &id("v"),
            r#"{"candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0}"#,
            None,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["action"], "ICE_CANDIDATE");
        assert!(v.get("correlationId").is_none());
    }

    #[test]
    fn correlator_names_and_forgets() {
        let t0 = Instant::now();
        let mut c = Correlator::new(2, Duration::from_secs(60));
        let a = c.next(t0, 1_700_000_000_000, Action::SdpAnswer, &id("v1"));
        let b = c.next(t0, 1_700_000_000_000, Action::IceCandidate, &id("v2"));
        assert_eq!(a, "1700000000000_1");
        assert_eq!(b, "1700000000000_2");
        assert!(valid_id(&a));
        assert_eq!(
            c.resolve(t0, &a),
            Some(Sent {
                action: Action::SdpAnswer,
                recipient: id("v1")
            })
        );
        // Capacity 2: a third id evicts the oldest.
        let _ = c.next(t0, 1, Action::SdpAnswer, &id("v3"));
        assert_eq!(c.resolve(t0, &a), None);
        assert!(c.resolve(t0, &b).is_some());
        // And everything expires.
        assert_eq!(c.resolve(t0 + Duration::from_secs(61), &b), None);
        assert!(c.is_empty());
    }
}
