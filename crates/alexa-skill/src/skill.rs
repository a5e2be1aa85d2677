//! The skill's logic, sans IO: a directive (and the configured cameras) in, either the event to
//! return or a request to pass an offer to the camera's KVS channel out. The driver (`main.rs`)
//! performs that request with [`crate::kvs::Kvs`] and hands the outcome to
//! [`OfferRequest::finish`], which builds the event.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::alexa::{self, Envelope, ErrorType, ReplyTo, Stamp};
use crate::cameras::{Camera, Cameras, CamerasError};

/// SendAlexaOfferToMaster's `MessagePayload` and `Answer` limit, in base64 characters.
pub const MAX_PAYLOAD_CHARS: usize = 10_000;

/// What to do with a directive.
#[derive(Debug)]
pub enum Step {
    /// Return this event to Alexa.
    Reply(Value),
    /// Pass the offer to the camera's channel, then [`OfferRequest::finish`].
    Offer(Box<OfferRequest>),
}

/// The KVS `SenderClientId` of one Alexa session: `alexa-<sessionId>`, restricted to the
/// service's `[a-zA-Z0-9_.-]{1,256}`. The same session id always gives the same sender id,
/// so an offer Alexa repeats replaces the earlier one at the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderClientId(String);

impl SenderClientId {
    pub fn for_session(session_id: &str) -> SenderClientId {
        let clean: String = session_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(256 - "alexa-".len())
            .collect();
        SenderClientId(format!("alexa-{clean}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `InitiateSessionWithOffer` that needs the camera's answer.
#[derive(Debug)]
pub struct OfferRequest {
    pub camera: Camera,
    pub session_id: String,
    pub sender: SenderClientId,
    /// `base64(JSON {"type":"offer","sdp":<Alexa's offer>})`, as the samples and camgate expect.
    pub payload: String,
    reply: ReplyTo,
}

/// Why the camera's answer did not come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Nothing answered before the deadline (no master connected, or it did not answer).
    #[error(
        "the camera did not answer within {} ms: camgate is not running in kvs mode on this \
         channel, is offline, or is at its viewer limit",
        .0.as_millis()
    )]
    NoAnswer(Duration),
    /// KVS refused the call as throttled.
    #[error("KVS throttled the request: {0}")]
    Throttled(String),
    /// The channel does not exist (or this role may not see it).
    #[error("KVS channel not found: {0}")]
    ChannelNotFound(String),
    /// The master answered something that is not an SDP answer.
    #[error("the camera's answer is not usable: {0}")]
    BadAnswer(String),
    /// Credentials, permissions, network, or an unexpected response.
    #[error("{0}")]
    Other(String),
}

impl OfferError {
    pub fn alexa_type(&self) -> ErrorType {
        match self {
            OfferError::NoAnswer(_) => ErrorType::EndpointUnreachable,
            OfferError::Throttled(_) => ErrorType::RateLimitExceeded,
            OfferError::ChannelNotFound(_) | OfferError::BadAnswer(_) | OfferError::Other(_) => {
                ErrorType::InternalError
            }
        }
    }
}

impl OfferRequest {
    /// The event for the outcome: `AnswerGeneratedForSession` with the answer SDP, or an
    /// `Alexa.ErrorResponse`.
    pub fn finish(self, outcome: Result<String, OfferError>, stamp: &Stamp) -> Value {
        match outcome.and_then(|answer| decode_answer(&answer)) {
            Ok(sdp) => self.reply.event(
                "Alexa.RTCSessionController",
                "AnswerGeneratedForSession",
                json!({"answer": {"format": "SDP", "value": sdp}}),
                stamp,
            ),
            Err(e) => self.reply.error(e.alexa_type(), &e.to_string(), stamp),
        }
    }
}

/// Decodes SendAlexaOfferToMaster's `Answer`: base64 of `{"type":"answer","sdp":…}` (what
/// camgate and the SDKs send) or of a raw SDP; a raw SDP that is not base64 at all is taken
/// too.
pub fn decode_answer(answer: &str) -> Result<String, OfferError> {
    let text = match base64::engine::general_purpose::STANDARD.decode(answer.trim()) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| OfferError::BadAnswer("the decoded answer is not UTF-8".into()))?,
        Err(_) if answer.starts_with("v=0") => answer.to_owned(),
        Err(e) => return Err(OfferError::BadAnswer(format!("not base64: {e}"))),
    };
    let sdp = match serde_json::from_str::<Value>(&text) {
        Ok(v) => match (v["type"].as_str(), v["sdp"].as_str()) {
            (Some("answer") | None, Some(sdp)) => sdp.to_owned(),
            (Some(other), Some(_)) => {
                return Err(OfferError::BadAnswer(format!(
                    "a {other:?} message instead of an answer"
                )));
            }
            _ => return Err(OfferError::BadAnswer("JSON without an sdp member".into())),
        },
        Err(_) => text,
    };
    if !sdp.starts_with("v=0") || !sdp.contains("\nm=") {
        return Err(OfferError::BadAnswer(
            "the SDP has no v=0 line or no media section".into(),
        ));
    }
    Ok(sdp)
}

/// Wraps Alexa's offer the way the public samples do and camgate reads it.
pub fn offer_payload(sdp: &str) -> String {
    let json = json!({"type": "offer", "sdp": sdp}).to_string();
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// Decides what a directive needs. `cameras` is the parsed `CAMGATE_CAMERAS`; when it is
/// broken, every directive fails with `INTERNAL_ERROR` naming the problem.
pub fn handle(input: &Value, cameras: Result<&Cameras, &CamerasError>, stamp: &Stamp) -> Step {
    let envelope: Envelope = match serde_json::from_value(input.clone()) {
        Ok(e) => e,
        Err(e) => {
            return Step::Reply(ReplyTo::default().error(
                ErrorType::InvalidDirective,
                &format!("not an Alexa directive: {e}"),
                stamp,
            ));
        }
    };
    let d = envelope.directive;
    let reply = ReplyTo::of(&d);
    let cameras = match cameras {
        Ok(c) => c,
        Err(e) => {
            return Step::Reply(reply.error(
                ErrorType::InternalError,
                &format!("the skill is misconfigured: {e}"),
                stamp,
            ));
        }
    };
    let camera = || {
        let id = d.endpoint.as_ref().map(|e| e.endpoint_id.as_str());
        match id {
            None => Err(reply.error(
                ErrorType::InvalidDirective,
                "the directive names no endpoint",
                stamp,
            )),
            Some(id) => cameras.find(id).ok_or_else(|| {
                reply.error(
                    ErrorType::NoSuchEndpoint,
                    &format!("no camera with endpoint id {id:?} is configured"),
                    stamp,
                )
            }),
        }
    };
    let session_id = || match d.payload["sessionId"].as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(reply.error(
            ErrorType::InvalidDirective,
            "payload.sessionId is missing",
            stamp,
        )),
    };
    let step = match (d.header.namespace.as_str(), d.header.name.as_str()) {
        ("Alexa.Discovery", "Discover") => {
            let endpoints: Vec<Value> = cameras.iter().map(alexa::discovery_endpoint).collect();
            // Discovery answers carry no endpoint or correlation token.
            Ok(ReplyTo::default().event(
                "Alexa.Discovery",
                "Discover.Response",
                json!({ "endpoints": endpoints }),
                stamp,
            ))
        }
        ("Alexa.Authorization", "AcceptGrant") => Ok(ReplyTo::default().event(
            "Alexa.Authorization",
            "AcceptGrant.Response",
            json!({}),
            stamp,
        )),
        ("Alexa", "ReportState") => camera().map(|_| {
            let mut event = reply.event("Alexa", "StateReport", json!({}), stamp);
            event["context"] = json!({"properties": [alexa::connectivity_ok(stamp.now)]});
            event
        }),
        ("Alexa.RTCSessionController", "InitiateSessionWithOffer") => {
            return match initiate(&d.payload, camera(), session_id(), &reply, stamp) {
                Ok(req) => Step::Offer(Box::new(req)),
                Err(event) => Step::Reply(event),
            };
        }
        ("Alexa.RTCSessionController", name @ ("SessionConnected" | "SessionDisconnected")) => {
            camera().and_then(|_| {
                let id = session_id()?;
                Ok(reply.event(
                    "Alexa.RTCSessionController",
                    name,
                    json!({ "sessionId": id }),
                    stamp,
                ))
            })
        }
        (ns, name) => Err(reply.error(
            ErrorType::InvalidDirective,
            &format!("{ns}.{name} is not a directive this skill handles"),
            stamp,
        )),
    };
    Step::Reply(step.unwrap_or_else(|e| e))
}

fn initiate(
    payload: &Value,
    camera: Result<&Camera, Value>,
    session_id: Result<String, Value>,
    reply: &ReplyTo,
    stamp: &Stamp,
) -> Result<OfferRequest, Value> {
    let camera = camera?;
    let session_id = session_id?;
    let offer = &payload["offer"];
    let sdp = match (offer["format"].as_str(), offer["value"].as_str()) {
        (Some(f), Some(v)) if f.eq_ignore_ascii_case("SDP") && v.starts_with("v=0") => v,
        _ => {
            return Err(reply.error(
                ErrorType::InvalidDirective,
                "payload.offer must be {\"format\": \"SDP\", \"value\": \"v=0…\"}",
                stamp,
            ));
        }
    };
    let encoded = offer_payload(sdp);
    if encoded.len() > MAX_PAYLOAD_CHARS {
        return Err(reply.error(
            ErrorType::InternalError,
            &format!(
                "the offer is {} base64 characters; SendAlexaOfferToMaster takes at most {MAX_PAYLOAD_CHARS}",
                encoded.len()
            ),
            stamp,
        ));
    }
    Ok(OfferRequest {
        camera: camera.clone(),
        sender: SenderClientId::for_session(&session_id),
        session_id,
        payload: encoded,
        reply: reply.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_ids_follow_the_kvs_pattern() {
        let s = SenderClientId::for_session("4f1c9a8e-2d3b-4c5d-9e6f-0a1b2c3d4e5f");
        assert_eq!(s.as_str(), "alexa-4f1c9a8e-2d3b-4c5d-9e6f-0a1b2c3d4e5f");
        let odd = SenderClientId::for_session(&format!("a b/c{}", "x".repeat(400)));
        assert!(odd.as_str().starts_with("alexa-a-b-c"));
        assert_eq!(odd.as_str().len(), 256);
        assert!(crate::cameras::kvs_name_ok(odd.as_str()));
    }

    #[test]
    fn answers_decode_wrapped_or_raw() {
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 99\r\n";
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let wrapped = b64(&json!({"type": "answer", "sdp": sdp}).to_string());
        assert_eq!(decode_answer(&wrapped).unwrap(), sdp);
        assert_eq!(decode_answer(&b64(sdp)).unwrap(), sdp);
        assert_eq!(decode_answer(sdp).unwrap(), sdp);
        let offer = b64(&json!({"type": "offer", "sdp": sdp}).to_string());
        assert!(matches!(
            decode_answer(&offer),
            Err(OfferError::BadAnswer(_))
        ));
        assert!(matches!(
            decode_answer("%%%"),
            Err(OfferError::BadAnswer(_))
        ));
        assert!(matches!(
            decode_answer(&b64("{\"type\":\"answer\"}")),
            Err(OfferError::BadAnswer(_))
        ));
        assert!(matches!(
            decode_answer(&b64("v=0\r\n")),
            Err(OfferError::BadAnswer(_))
        ));
    }
}
