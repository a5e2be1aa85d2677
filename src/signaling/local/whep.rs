//! WHEP (WebRTC-HTTP Egress Protocol, RFC 9725): one POST per viewer.
//!
//! The answer to the POST carries every candidate we gathered, so clients that never trickle
//! (most WHEP players, curl scripts) connect; clients that do trickle may PATCH their own
//! candidates in. A viewer leaves with DELETE on the `Location` it was given, or by just going
//! away — ICE notices that, and the session manager frees the slot.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use webrtc::peer_connection::RTCIceCandidateInit;

use super::{Whep, sdpfrag};
use crate::session::sdp::MAX_OFFER_BYTES;
use crate::session::{OfferRequest, SessionError, SessionId};

pub const SDP: &str = "application/sdp";
const TRICKLE: &str = "application/trickle-ice-sdpfrag";

/// A plain-text error a human can act on.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::info!(status = status.as_u16(), "WHEP request refused: {message}");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// Reads at most `limit` bytes of body within `within`, as UTF-8.
async fn read_body(req: Request, limit: usize, within: Duration) -> Result<String, Response> {
    let bytes =
        match tokio::time::timeout(within, axum::body::to_bytes(req.into_body(), limit)).await {
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within {} s (http.body_timeout_s)",
                        within.as_secs()
                    ),
                ));
            }
            Ok(Err(e)) if is_length_limit(&e) => {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {limit} bytes"),
                ));
            }
            Ok(Err(e)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("request body not received: {e}"),
                ));
            }
            Ok(Ok(b)) => b,
        };
    String::from_utf8(bytes.to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "body is not UTF-8 text"))
}

/// Whether a body error is the size cap (and not a client that hung up or dawdled).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// `POST /whep`: an SDP offer in, `201 Created` with the answer out.
pub async fn post(State(whep): State<Whep>, req: Request) -> Response {
    let received = Instant::now();
    if !content_type_is(req.headers(), SDP) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {SDP}"),
        );
    }
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let taken = whep
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(peer.ip(), received);
        if let Err(wait) = taken {
            crate::http::count(&req, |s| &s.rate_limited);
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many offers from {} (http.offers_per_ip_per_s); try again in {} ms",
                    peer.ip(),
                    wait.as_millis()
                ),
            );
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    let offer = match read_body(req, MAX_OFFER_BYTES, whep.body_timeout).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let sessions = &whep.sessions;
    let answer = sessions
        .offer(OfferRequest {
            viewer: None,
            sdp: offer,
            ice_servers: Vec::new(),
            trickle: None,
        })
        .await;
    match answer {
        Ok(a) => {
            sessions
                .timings()
                .offer_to_answer
                .observe(received.elapsed().as_secs_f64());
            let location = format!("/whep/{}", a.session_id);
            let mut resp = (StatusCode::CREATED, a.sdp).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => session_error(e),
    }
}

fn session_error(e: SessionError) -> Response {
    let status = match &e {
        SessionError::BadOffer(_) | SessionError::Negotiation(_) => StatusCode::BAD_REQUEST,
        SessionError::Full { .. }
        | SessionError::Busy { .. }
        | SessionError::NoPort { .. }
        | SessionError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        SessionError::TooManyCandidates { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        SessionError::Superseded => StatusCode::CONFLICT,
        SessionError::NotFound(_) => StatusCode::NOT_FOUND,
        SessionError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut resp = error(status, e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// The answer to a request for a session that does not exist: the same whether the path
/// could never be a session id or names one that has ended.
fn unknown_session(path: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no session {path}"))
}

/// `DELETE /whep/{id}`: the viewer is leaving.
pub async fn delete(State(whep): State<Whep>, Path(path): Path<String>) -> Response {
    let Ok(id) = SessionId::parse(&path) else {
        return unknown_session(&path);
    };
    if whep.sessions.close(&id).await {
        StatusCode::OK.into_response()
    } else {
        unknown_session(&path)
    }
}

/// `PATCH /whep/{id}`: trickled candidates from the viewer (an SDP fragment).
pub async fn patch(
    State(whep): State<Whep>,
    Path(path): Path<String>,
    req: Request<Body>,
) -> Response {
    if !content_type_is(req.headers(), TRICKLE) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {TRICKLE}"),
        );
    }
    let frag = match read_body(req, 16 * 1024, whep.body_timeout).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let frag = match sdpfrag::parse(&frag) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    // Checked only where a session is needed, so every other answer (a bad body, a fragment
    // with no usable candidate) stays what it is for an unknown id of the right shape.
    let id = SessionId::parse(&path);
    for candidate in frag.candidates {
        let id = match &id {
            Ok(id) => id,
            Err(_) if whep.sessions.ignores_candidate(&candidate) => continue,
            Err(_) => return unknown_session(&path),
        };
        let init = RTCIceCandidateInit {
            candidate,
            sdp_mid: frag.mid.clone(),
            sdp_mline_index: Some(0),
            ..Default::default()
        };
        if let Err(e) = whep.sessions.add_remote_candidate(id, init).await {
            return session_error(e);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
