//! The REST operations: control plane (`/describeSignalingChannel`, ...) and the channel HTTPS
//! API (`/v1/get-ice-server-config`, `/v1/send-alexa-offer-to-master`). Shapes follow the
//! botocore models quoted in the reference (§1).

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::Api;
use crate::hub::{AlexaRejection, ChannelInfo, valid_id};
use crate::server::{Shared, error_response, json_response};
use crate::sigv4::{RequestToVerify, verify_header_auth};

type Resp = http::Response<Full<Bytes>>;

const NOT_FOUND_MESSAGE: &str = "The requested channel is not found or not active.";

/// A modeled rest-json error, turned into a response at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {error_type}: {message}")]
struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
        }
    }

    fn into_response(self, shared: &Shared) -> Resp {
        error_response(shared, self.status, self.error_type, &self.message)
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidArgumentException", message)
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        NOT_FOUND_MESSAGE,
    )
}

type ApiResult = Result<Value, ApiError>;

fn str_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

pub(crate) async fn dispatch(shared: &Shared, parts: Parts, body: Bytes) -> Resp {
    let api = match (parts.method.as_str(), parts.uri.path()) {
        ("POST", "/describeSignalingChannel") => Api::DescribeSignalingChannel,
        ("POST", "/createSignalingChannel") => Api::CreateSignalingChannel,
        ("POST", "/getSignalingChannelEndpoint") => Api::GetSignalingChannelEndpoint,
        ("POST", "/deleteSignalingChannel") => Api::DeleteSignalingChannel,
        ("POST", "/v1/get-ice-server-config") => Api::GetIceServerConfig,
        ("POST", "/v1/send-alexa-offer-to-master") => Api::SendAlexaOfferToMaster,
        _ => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "Unknown operation",
            )
            .into_response(shared);
        }
    };
    if shared.cfg.verify_signatures {
        let req = RequestToVerify {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            raw_query: parts.uri.query(),
            headers: &parts.headers,
            body: &body,
        };
        let creds = shared.active_credentials();
        if let Err(e) = verify_header_auth(&req, &creds, &shared.cfg.region, shared.now()) {
            shared.with(|st| st.global.rejected_signatures += 1);
            return error_response(
                shared,
                StatusCode::FORBIDDEN,
                e.error_type(),
                &e.to_string(),
            );
        }
    }
    shared.with(|st| st.global.rest_requests += 1);
    if shared.with(|st| st.take_hang(api)) {
        // Fault: the service accepted the request and never answers (a hung control plane).
        std::future::pending::<()>().await;
    }
    if let Some(f) = shared.with(|st| st.take_failure(api)) {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(shared, status, &f.error_type, &f.message);
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "Request body is not a JSON object",
            );
        }
    };
    let result = match api {
        Api::DescribeSignalingChannel => describe(shared, &body),
        Api::CreateSignalingChannel => create(shared, &body),
        Api::GetSignalingChannelEndpoint => get_endpoint(shared, &body),
        Api::DeleteSignalingChannel => delete(shared, &body),
        Api::GetIceServerConfig => ice_config(shared, &body),
        Api::SendAlexaOfferToMaster => alexa_offer(shared, &body).await,
        Api::ConnectAsMaster | Api::ConnectAsViewer => Err(not_found()),
    };
    match result {
        Ok(value) => json_response(shared, StatusCode::OK, value.to_string()),
        Err(e) => e.into_response(shared),
    }
}

fn channel_json(info: &ChannelInfo) -> Value {
    json!({
        "ChannelName": info.name,
        "ChannelARN": info.arn,
        "ChannelType": "SINGLE_MASTER",
        "ChannelStatus": "ACTIVE",
        "CreationTime": info.creation_time_ms as f64 / 1000.0,
        "SingleMasterConfiguration": {
            "MessageTtlSeconds": info.message_ttl.as_secs().max(1)
        },
        "Version": info.version,
    })
}

fn lookup_by_arn(shared: &Shared, body: &Value) -> Result<ChannelInfo, ApiError> {
    let arn = str_field(body, "ChannelARN").ok_or_else(|| bad_request("ChannelARN is required"))?;
    shared
        .with(|st| st.hub.info(arn).cloned())
        .ok_or_else(not_found)
}

fn describe(shared: &Shared, body: &Value) -> ApiResult {
    let info = match (
        str_field(body, "ChannelName"),
        str_field(body, "ChannelARN"),
    ) {
        (Some(name), None) => {
            shared.with(|st| st.hub.arn_of(name).and_then(|a| st.hub.info(a)).cloned())
        }
        (None, Some(arn)) => shared.with(|st| st.hub.info(arn).cloned()),
        _ => {
            return Err(bad_request(
                "Exactly one of ChannelName or ChannelARN is required",
            ));
        }
    };
    let info = info.ok_or_else(not_found)?;
    Ok(json!({"ChannelInfo": channel_json(&info)}))
}

fn create(shared: &Shared, body: &Value) -> ApiResult {
    let name = str_field(body, "ChannelName")
        .filter(|n| valid_id(n))
        .ok_or_else(|| bad_request("ChannelName must match [a-zA-Z0-9_.-]{1,256}"))?;
    if let Some(t) = body.get("ChannelType")
        && t != "SINGLE_MASTER"
    {
        return Err(bad_request("ChannelType must be SINGLE_MASTER"));
    }
    let ttl = match body.pointer("/SingleMasterConfiguration/MessageTtlSeconds") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|t| (5..=120).contains(t))
                .map(Duration::from_secs)
                .ok_or_else(|| bad_request("MessageTtlSeconds must be between 5 and 120"))?,
        ),
    };
    let now_ms = wall_ms(shared);
    let info = shared
        .with(|st| st.hub.create_channel(name, ttl, now_ms))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "ResourceInUseException",
                format!("The signaling channel {name} already exists"),
            )
        })?;
    Ok(json!({"ChannelARN": info.arn}))
}

pub(crate) fn wall_ms(shared: &Shared) -> u64 {
    shared
        .now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn get_endpoint(shared: &Shared, body: &Value) -> ApiResult {
    lookup_by_arn(shared, body)?;
    let config = body.get("SingleMasterChannelEndpointConfiguration");
    let role = config
        .and_then(|c| str_field(c, "Role"))
        .unwrap_or("MASTER");
    if role != "MASTER" && role != "VIEWER" {
        return Err(bad_request("Role must be MASTER or VIEWER"));
    }
    let protocols: Vec<&str> = match config.and_then(|c| c.get("Protocols")) {
        None => vec!["WSS", "HTTPS"],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(bad_request("Protocols must be a list")),
    };
    if protocols.is_empty() || protocols.len() > 5 {
        return Err(bad_request("Protocols must list 1 to 5 entries"));
    }
    let endpoints = protocols
        .into_iter()
        .map(|p| {
            let endpoint = match p {
                "WSS" | "WEBRTC" => shared.ws_endpoint(),
                "HTTPS" => shared.http_endpoint(),
                other => return Err(bad_request(format!("Unknown protocol {other}"))),
            };
            Ok(json!({"Protocol": p, "ResourceEndpoint": endpoint}))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"ResourceEndpointList": endpoints}))
}

fn delete(shared: &Shared, body: &Value) -> ApiResult {
    let info = lookup_by_arn(shared, body)?;
    if let Some(v) = str_field(body, "CurrentVersion")
        && v != info.version
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "VersionMismatchException",
            "The current version does not match the channel version",
        ));
    }
    shared.with(|st| {
        if let Some(actions) = st.hub.delete_channel(&info.arn) {
            st.apply(actions);
        }
    });
    Ok(json!({}))
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn ice_config(shared: &Shared, body: &Value) -> ApiResult {
    let info = lookup_by_arn(shared, body)?;
    for field in ["ClientId", "Username"] {
        if let Some(v) = body.get(field)
            && !v.as_str().is_some_and(valid_id)
        {
            return Err(bad_request(format!(
                "{field} must match [a-zA-Z0-9_.-]{{1,256}}"
            )));
        }
    }
    if let Some(service) = body.get("Service")
        && service != "TURN"
    {
        return Err(bad_request("Service must be TURN"));
    }
    shared.with(|st| {
        if let Some(stats) = st.hub.stats_mut(&info.arn) {
            stats.get_ice_server_config_calls += 1;
        }
    });
    let ttl = shared.cfg.ice_ttl.as_secs();
    let expiry = wall_ms(shared) / 1000 + ttl;
    // The id part of a TURN REST username: who asked (ClientId was validated above, so it has
    // no ':'), else the channel. Kept short enough that the whole username stays within the
    // C SDK's 256-character limit.
    let rest_id = str_field(body, "ClientId").unwrap_or(&info.name);
    let rest_id: String = rest_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(MAX_TURN_REST_ID)
        .collect();
    let rest_id = if rest_id.is_empty() {
        "emulator".to_owned()
    } else {
        rest_id
    };
    let servers: Vec<Value> = shared
        .cfg
        .turn_servers
        .iter()
        .map(|host| {
            let (username, password) = match &shared.cfg.turn_secret {
                Some(secret) => turn_rest_credentials(secret, expiry, &rest_id),
                None => (format!("{expiry}:{}", random_token(40)), random_token(44)),
            };
            // The service's shape: TURN over UDP (the only one webrtc-rs gathers from), then
            // TURN over DTLS and over TLS on the same host.
            json!({
                "Uris": [
                    format!("turn:{host}?transport=udp"),
                    format!("turns:{host}?transport=udp"),
                    format!("turns:{host}?transport=tcp"),
                ],
                "Username": username,
                "Password": password,
                "Ttl": ttl,
            })
        })
        .collect();
    Ok(json!({"IceServerList": servers}))
}

/// Longest id put after `<expiry>:` in a TURN REST username (the C SDK keeps usernames up to
/// 256 characters).
const MAX_TURN_REST_ID: usize = 200;

/// TURN REST API credentials (draft-uberti-behave-turn-rest, coturn `use-auth-secret`) valid
/// until `expiry_unix` seconds: `("<expiry_unix>:<id>", base64(HMAC-SHA1(secret, username)))`.
/// `id` must not contain `':'` (coturn takes the expiry from before the first one).
pub fn turn_rest_credentials(secret: &str, expiry_unix: u64, id: &str) -> (String, String) {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};

    let username = format!("{expiry_unix}:{id}");
    // HMAC accepts keys of any length; the error arm cannot happen.
    let password = match <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    (username, password)
}

/// Removes the waiter when the HTTP call ends for any reason (answer, timeout, client gone).
struct WaiterGuard<'a> {
    shared: &'a Shared,
    arn: String,
    sender: String,
    waiter: u64,
    answered: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let answered = self.answered;
        self.shared.with(|st| {
            st.waiters.remove(&self.waiter);
            if !answered {
                st.hub.alexa_cancel(&self.arn, &self.sender, self.waiter);
            }
        });
    }
}

async fn alexa_offer(shared: &Shared, body: &Value) -> ApiResult {
    let info = lookup_by_arn(shared, body)?;
    let (Some(sender), Some(payload)) = (
        str_field(body, "SenderClientId"),
        str_field(body, "MessagePayload"),
    ) else {
        return Err(bad_request(
            "SenderClientId and MessagePayload are required",
        ));
    };
    let waiter = shared.next_id();
    let (tx, rx) = oneshot::channel();
    let accepted = shared.with(|st| {
        let result = st
            .hub
            .alexa_offer(&info.arn, sender, payload, waiter, Instant::now());
        if let Ok(actions) = &result {
            st.waiters.insert(waiter, tx);
            st.apply(actions.clone());
        }
        result.map(|_| ())
    });
    accepted.map_err(|rejection| match rejection {
        AlexaRejection::NotFound => not_found(),
        AlexaRejection::Invalid(m) => bad_request(m),
        AlexaRejection::Throttled => ApiError::new(
            StatusCode::BAD_REQUEST,
            "ClientLimitExceededException",
            "Rate exceeded for SendAlexaOfferToMaster",
        ),
    })?;
    let mut guard = WaiterGuard {
        shared,
        arn: info.arn.clone(),
        sender: sender.to_owned(),
        waiter,
        answered: false,
    };
    match tokio::time::timeout(shared.cfg.alexa_answer_timeout, rx).await {
        Ok(Ok(Some(answer))) => {
            guard.answered = true;
            Ok(json!({"Answer": answer}))
        }
        Ok(_) => Err(bad_request(
            "The offer was superseded or the channel was deleted",
        )),
        // The real service's behaviour is UNVERIFIED; this mimics an API Gateway integration
        // timeout, which is what a Lambda would most plausibly see.
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "GatewayTimeoutException",
            "Endpoint request timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::turn_rest_credentials;

    // Vectors computed independently with Python:
    // base64.b64encode(hmac.new(secret, username, hashlib.sha1).digest())
    #[test]
    fn turn_rest_credentials_match_known_vectors() {
        assert_eq!(
            turn_rest_credentials("camgate-turn-secret", 1_700_000_300, "ProducerMaster"),
            (
                "1700000300:ProducerMaster".to_owned(),
                "kSKuaOEp7RJnt2ecQc/R/fPU9JE=".to_owned()
            )
        );
        assert_eq!(
            turn_rest_credentials("north", 1_234_567_890, "front-door").1,
            "ZzrwEC7wksh6gAmo4VduuOikZwI="
        );
    }

    #[test]
    fn turn_rest_password_depends_on_secret_and_username() {
        let (_, a) = turn_rest_credentials("s1", 100, "id");
        let (_, b) = turn_rest_credentials("s2", 100, "id");
        let (_, c) = turn_rest_credentials("s1", 101, "id");
        assert_ne!(a, b);
        assert_ne!(a, c);
        // 20-byte digest -> 28 base64 characters.
        assert_eq!(a.len(), 28);
    }
}
