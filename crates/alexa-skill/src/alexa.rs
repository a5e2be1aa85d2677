//! Alexa Smart Home message shapes (payload version 3): the directive the skill receives and
//! the events it returns (reference `kvs-signaling-and-alexa.md` §5.2–5.3).
//!
//! Directives are read leniently (unknown members ignored, `scope` and `cookie` kept as they
//! came so that they can be echoed); events are built as JSON so their shape reads like the
//! documentation.

use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cameras::{Camera, DisplayCategory};

/// `{"directive": {...}}`, the Lambda's input.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub directive: Directive,
}

#[derive(Debug, Deserialize)]
pub struct Directive {
    pub header: Header,
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    #[serde(default)]
    pub payload: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub message_id: String,
    /// Links the event to the directive; echoed whenever the directive had one.
    #[serde(default)]
    pub correlation_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub endpoint_id: String,
    /// The linked account's bearer token; echoed verbatim.
    #[serde(default)]
    pub scope: Option<Value>,
}

/// What every event needs that the skill cannot compute purely: a fresh message id and the
/// time (for `timeOfSample`). The driver makes one per event; tests pass fixed ones.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub message_id: String,
    pub now: SystemTime,
}

impl Stamp {
    pub fn fresh() -> Stamp {
        Stamp {
            message_id: uuid::Uuid::new_v4().to_string(),
            now: SystemTime::now(),
        }
    }
}

/// Alexa's error types the skill returns (`Alexa.ErrorResponse` payload `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// No master answered the offer in time: the camera is off or offline.
    EndpointUnreachable,
    /// The directive names an endpoint the skill does not have.
    NoSuchEndpoint,
    /// KVS throttled the call (SendAlexaOfferToMaster allows 5 per second per channel).
    RateLimitExceeded,
    /// A directive the skill does not handle, or one missing what it must carry.
    InvalidDirective,
    /// Everything else; the message says what.
    InternalError,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::EndpointUnreachable => "ENDPOINT_UNREACHABLE",
            ErrorType::NoSuchEndpoint => "NO_SUCH_ENDPOINT",
            ErrorType::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorType::InvalidDirective => "INVALID_DIRECTIVE",
            ErrorType::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// Where an event goes back to: the directive's correlation token and endpoint.
#[derive(Debug, Clone, Default)]
pub struct ReplyTo {
    pub correlation_token: Option<String>,
    pub endpoint: Option<Endpoint>,
}

impl ReplyTo {
    pub fn of(d: &Directive) -> ReplyTo {
        ReplyTo {
            correlation_token: d.header.correlation_token.clone(),
            endpoint: d.endpoint.clone(),
        }
    }

    fn header(&self, namespace: &str, name: &str, stamp: &Stamp) -> Value {
        let mut h = json!({
            "namespace": namespace,
            "name": name,
            "messageId": stamp.message_id,
            "payloadVersion": "3",
        });
        if let Some(t) = &self.correlation_token {
            h["correlationToken"] = json!(t);
        }
        h
    }

    /// `{"event": {header, endpoint?, payload}}`.
    pub fn event(&self, namespace: &str, name: &str, payload: Value, stamp: &Stamp) -> Value {
        let mut event = json!({"header": self.header(namespace, name, stamp)});
        if let Some(ep) = &self.endpoint {
            let mut e = json!({"endpointId": ep.endpoint_id});
            if let Some(scope) = &ep.scope {
                e["scope"] = scope.clone();
            }
            event["endpoint"] = e;
        }
        event["payload"] = payload;
        json!({ "event": event })
    }

    /// `Alexa.ErrorResponse` (namespace `Alexa` for every directive, which RTCSessionController
    /// requires).
    pub fn error(&self, kind: ErrorType, message: &str, stamp: &Stamp) -> Value {
        self.event(
            "Alexa",
            "ErrorResponse",
            json!({"type": kind.as_str(), "message": message}),
            stamp,
        )
    }
}

/// ISO 8601 UTC with milliseconds, as Alexa's `timeOfSample` wants.
pub fn iso8601(t: SystemTime) -> String {
    use aws_smithy_types::date_time::{DateTime, Format};
    let dt = DateTime::from(t);
    // Whole milliseconds: Alexa's samples use `2017-02-03T16:20:50.52Z`-style times.
    let ms = DateTime::from_millis(dt.to_millis().unwrap_or(0));
    ms.fmt(Format::DateTime)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The discovery entry of one camera (reference §5.3).
pub fn discovery_endpoint(c: &Camera) -> Value {
    let mut capabilities = vec![
        json!({"type": "AlexaInterface", "interface": "Alexa", "version": "3"}),
        json!({
            "type": "AlexaInterface", "interface": "Alexa.RTCSessionController", "version": "3",
            "configuration": {"isFullDuplexAudioSupported": c.full_duplex},
        }),
    ];
    let categories = match c.display_category {
        DisplayCategory::Camera => json!(["CAMERA"]),
        DisplayCategory::Doorbell => {
            capabilities.push(json!({
                "type": "AlexaInterface", "interface": "Alexa.DoorbellEventSource",
                "version": "3", "proactivelyReported": true,
            }));
            json!(["DOORBELL", "CAMERA"])
        }
    };
    capabilities.push(json!({
        "type": "AlexaInterface", "interface": "Alexa.EndpointHealth", "version": "3",
        "properties": {
            "supported": [{"name": "connectivity"}],
            "proactivelyReported": true,
            "retrievable": true,
        },
    }));
    json!({
        "endpointId": c.endpoint_id.as_str(),
        "manufacturerName": "camgate",
        "description": c.description.as_deref().unwrap_or("Camera served by camgate over Amazon Kinesis Video Streams"),
        "friendlyName": c.friendly_name,
        "displayCategories": categories,
        "cookie": {},
        "capabilities": capabilities,
    })
}

/// The `Alexa.EndpointHealth` connectivity property.
pub fn connectivity_ok(now: SystemTime) -> Value {
    json!({
        "namespace": "Alexa.EndpointHealth",
        "name": "connectivity",
        "value": {"value": "OK"},
        "timeOfSample": iso8601(now),
        "uncertaintyInMilliseconds": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn time_of_sample_is_iso8601_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(iso8601(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
