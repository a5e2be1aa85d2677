//! Test clients: a presigned signaling WebSocket (viewer or master) and the Lambda-side
//! SendAlexaOfferToMaster call. They sign with `crate::sigv4`, independently of camgate.

use std::time::{Duration, SystemTime};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::TestCredentials;
use crate::sigv4::{SigningKeyMaterial, presign_url, sign_post};

/// Why a test client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unknown channel {0}")]
    NoSuchChannel(String),
    #[error("bad URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("upgrade refused with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("websocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("no message within {0:?}")]
    Timeout(Duration),
    #[error("connection closed (code {code:?}, reason {reason:?})")]
    Closed { code: Option<u16>, reason: String },
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("API error HTTP {status} {error_type}: {message}")]
    Api {
        status: u16,
        error_type: String,
        message: String,
    },
    #[error("unexpected response: {0}")]
    BadResponse(String),
}

/// The status block of a STATUS_RESPONSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    pub correlation_id: Option<String>,
    pub error_type: Option<String>,
    pub status_code: Option<String>,
    pub description: Option<String>,
}

/// One text frame from the service, parsed leniently (injected frames may not be envelopes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The frame exactly as received.
    pub raw: String,
    pub message_type: Option<String>,
    pub sender_client_id: Option<String>,
    /// `messagePayload` as sent (base64).
    pub message_payload: Option<String>,
    /// `messagePayload` base64-decoded as UTF-8 (`None` if absent or undecodable).
    pub payload: Option<String>,
    pub status_response: Option<StatusResponse>,
}

impl Envelope {
    fn parse(raw: String) -> Self {
        let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let message_payload = s(&v, "messagePayload");
        let payload = message_payload.as_deref().and_then(decode_payload);
        let status_response = v.get("statusResponse").map(|st| StatusResponse {
            correlation_id: s(st, "correlationId"),
            error_type: s(st, "errorType"),
            status_code: s(st, "statusCode"),
            description: s(st, "description"),
        });
        Self {
            message_type: s(&v, "messageType"),
            sender_client_id: s(&v, "senderClientId"),
            message_payload,
            payload,
            status_response,
            raw,
        }
    }

    /// The `sdp` member of a `{"type","sdp"}` payload, or the payload itself if it is bare SDP.
    pub fn sdp(&self) -> Option<String> {
        let payload = self.payload.as_deref()?;
        if payload.starts_with("v=0") {
            return Some(payload.to_owned());
        }
        let v: Value = serde_json::from_str(payload).ok()?;
        v.get("sdp").and_then(Value::as_str).map(str::to_owned)
    }
}

pub(crate) fn decode_payload(s: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    String::from_utf8(bytes).ok()
}

/// Standard base64 (what `messagePayload` carries).
pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `{"type":<kind>,"sdp":<sdp>}` base64-encoded, the payload convention of every SDK.
pub fn sdp_payload(kind: &str, sdp: &str) -> String {
    b64(&json!({"type": kind, "sdp": sdp}).to_string())
}

/// Presigned connect URL for `endpoint` (`ws://host:port`).
pub fn presigned_connect_url(
    endpoint: &str,
    channel_arn: &str,
    client_id: Option<&str>,
    creds: &TestCredentials,
    region: &str,
    time: SystemTime,
    expires_secs: u64,
) -> Result<String, url::ParseError> {
    let mut params = vec![("X-Amz-ChannelARN", channel_arn)];
    if let Some(id) = client_id {
        params.push(("X-Amz-ClientId", id));
    }
    presign_url(
        endpoint,
        &params,
        key_material(creds),
        region,
        time,
        expires_secs,
    )
}

fn key_material(creds: &TestCredentials) -> SigningKeyMaterial<'_> {
    SigningKeyMaterial {
        access_key_id: &creds.access_key_id,
        secret_access_key: &creds.secret_access_key,
        session_token: creds.session_token.as_deref(),
    }
}

/// A signaling WebSocket as a viewer (or master) test client sees it.
pub struct SignalingClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    client_id: Option<String>,
}

impl std::fmt::Debug for SignalingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalingClient")
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl SignalingClient {
    /// Connects to a presigned URL; an HTTP refusal becomes `ClientError::Rejected`.
    pub async fn connect(url: &str, client_id: Option<&str>) -> Result<Self, ClientError> {
        match tokio_tungstenite::connect_async_with_config(url, None, true).await {
            Ok((ws, _)) => Ok(Self {
                ws,
                client_id: client_id.map(str::to_owned),
            }),
            Err(tungstenite::Error::Http(resp)) => Err(ClientError::Rejected {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// `None` for a master.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Sends `{"action","recipientClientId"?,"messagePayload","correlationId"?}`.
    pub async fn send_message(
        &mut self,
        action: &str,
        recipient: Option<&str>,
        payload_b64: &str,
        correlation_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut msg = json!({"action": action, "messagePayload": payload_b64});
        if let Some(r) = recipient {
            msg["recipientClientId"] = r.into();
        }
        if let Some(c) = correlation_id {
            msg["correlationId"] = c.into();
        }
        self.send_raw(&msg.to_string()).await
    }

    /// Viewer → master offer (`{"type":"offer","sdp":…}`).
    pub async fn send_offer(
        &mut self,
        sdp: &str,
        correlation_id: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send_message(
            "SDP_OFFER",
            None,
            &sdp_payload("offer", sdp),
            correlation_id,
        )
        .await
    }

    /// Answer; a master must name the viewer in `recipient`.
    pub async fn send_answer(
        &mut self,
        recipient: Option<&str>,
        sdp: &str,
        correlation_id: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send_message(
            "SDP_ANSWER",
            recipient,
            &sdp_payload("answer", sdp),
            correlation_id,
        )
        .await
    }

    /// Trickled candidate; `candidate_json` is `{"candidate","sdpMid","sdpMLineIndex"}`.
    pub async fn send_candidate(
        &mut self,
        recipient: Option<&str>,
        candidate_json: &str,
        correlation_id: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send_message(
            "ICE_CANDIDATE",
            recipient,
            &b64(candidate_json),
            correlation_id,
        )
        .await
    }

    pub async fn send_raw(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws.send(Message::text(text.to_owned())).await?;
        Ok(())
    }

    /// A WebSocket Ping control frame (keeps the idle timer at bay).
    pub async fn send_ping(&mut self) -> Result<(), ClientError> {
        self.ws.send(Message::Ping(Vec::new().into())).await?;
        Ok(())
    }

    /// Next text frame, skipping control frames. A close becomes `ClientError::Closed` (code
    /// `None` when the TCP connection ended without a close frame).
    pub async fn next_message(&mut self, timeout: Duration) -> Result<Envelope, ClientError> {
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Ok(Envelope::parse(t.as_str().to_owned()));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(ClientError::Closed {
                            code: frame.as_ref().map(|f| u16::from(f.code)),
                            reason: frame
                                .map(|f| f.reason.as_str().to_owned())
                                .unwrap_or_default(),
                        });
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        return Err(ClientError::Closed {
                            code: None,
                            reason: String::new(),
                        });
                    }
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Reads until a Pong arrives (proves the service answers pings).
    pub async fn expect_pong(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Pong(_))) => return Ok(()),
                    Some(Ok(_)) => continue,
                    _ => {
                        return Err(ClientError::Closed {
                            code: None,
                            reason: String::new(),
                        });
                    }
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Polite close (1000).
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws.close(None).await?;
        Ok(())
    }
}

/// SendAlexaOfferToMaster as a skill Lambda makes it: SigV4-signed POST to the channel's HTTPS
/// endpoint. Returns the raw `Answer` (base64).
pub async fn send_alexa_offer_raw(
    https_endpoint: &str,
    channel_arn: &str,
    sender_client_id: &str,
    message_payload: &str,
    creds: &TestCredentials,
    region: &str,
) -> Result<String, ClientError> {
    let path = "/v1/send-alexa-offer-to-master";
    let body = json!({
        "ChannelARN": channel_arn,
        "SenderClientId": sender_client_id,
        "MessagePayload": message_payload,
    })
    .to_string();
    let v = signed_post(https_endpoint, path, &body, creds, region).await?;
    v.get("Answer")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ClientError::BadResponse(v.to_string()))
}

/// One `IceServerList` entry of a GetIceServerConfig response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServerEntry {
    pub uris: Vec<String>,
    pub username: String,
    pub password: String,
    pub ttl: u64,
}

/// GetIceServerConfig as the C SDK makes it: SigV4-signed POST of
/// `{"ChannelARN", ["ClientId",] "Service":"TURN"}` to the channel's HTTPS endpoint.
pub async fn get_ice_server_config_raw(
    https_endpoint: &str,
    channel_arn: &str,
    client_id: Option<&str>,
    creds: &TestCredentials,
    region: &str,
) -> Result<Vec<IceServerEntry>, ClientError> {
    let path = "/v1/get-ice-server-config";
    let mut body = json!({"ChannelARN": channel_arn, "Service": "TURN"});
    if let Some(id) = client_id {
        body["ClientId"] = json!(id);
    }
    let v = signed_post(https_endpoint, path, &body.to_string(), creds, region).await?;
    let list = v
        .get("IceServerList")
        .and_then(Value::as_array)
        .ok_or_else(|| ClientError::BadResponse(v.to_string()))?;
    list.iter()
        .map(|s| {
            let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_owned);
            let uris = s
                .get("Uris")
                .and_then(Value::as_array)
                .map(|u| u.iter().filter_map(Value::as_str).map(str::to_owned))
                .map(Iterator::collect);
            match (uris, text("Username"), text("Password")) {
                (Some(uris), Some(username), Some(password)) => Ok(IceServerEntry {
                    uris,
                    username,
                    password,
                    ttl: s.get("Ttl").and_then(Value::as_u64).unwrap_or(0),
                }),
                _ => Err(ClientError::BadResponse(s.to_string())),
            }
        })
        .collect()
}

/// A SigV4-signed JSON POST; a non-200 answer becomes `ClientError::Api`, a 200 whose body is
/// not a JSON object `ClientError::BadResponse`.
async fn signed_post(
    https_endpoint: &str,
    path: &str,
    body: &str,
    creds: &TestCredentials,
    region: &str,
) -> Result<Value, ClientError> {
    let url = url::Url::parse(https_endpoint)?;
    let host = crate::sigv4::host_header_value(&url);
    let headers = sign_post(
        &host,
        path,
        body.as_bytes(),
        key_material(creds),
        region,
        SystemTime::now(),
    );
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(format!("{}{path}", https_endpoint.trim_end_matches('/')))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status != 200 {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Err(ClientError::Api {
            status,
            error_type: s("__type"),
            message: s("message"),
        });
    }
    if !v.is_object() {
        return Err(ClientError::BadResponse(text));
    }
    Ok(v)
}
