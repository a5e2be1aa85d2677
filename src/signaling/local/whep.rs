//! WHEP (WebRTC-HTTP Egress Protocol, RFC 9725): one POST per viewer.
//!
//! The answer to the POST carries every candidate we gathered, so clients that never trickle
//! (most WHEP players, curl scripts) connect; clients that do trickle may PATCH their own
//! candidates in. A viewer leaves with DELETE on the `Location` it was given, or by just going
//! away — ICE notices that, and the session manager frees the slot.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use webrtc::peer_connection::RTCIceCandidateInit;

use super::sdpfrag;
use crate::session::sdp::MAX_OFFER_BYTES;
use crate::session::{OfferRequest, SessionError, SessionManager};

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

/// Reads at most `limit` bytes of body, as UTF-8.
async fn read_body(req: Request, limit: usize) -> Result<String, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes"),
            )
        })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "body is not UTF-8 text"))
}

/// `POST /whep`: an SDP offer in, `201 Created` with the answer out.
pub async fn post(State(sessions): State<Arc<SessionManager>>, req: Request) -> Response {
    let received = std::time::Instant::now();
    if !content_type_is(req.headers(), SDP) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {SDP}"),
        );
    }
    let offer = match read_body(req, MAX_OFFER_BYTES).await {
        Ok(o) => o,
        Err(r) => return r,
    };
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
        SessionError::Full { .. } | SessionError::NoPort { .. } | SessionError::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
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

/// `DELETE /whep/{id}`: the viewer is leaving.
pub async fn delete(
    State(sessions): State<Arc<SessionManager>>,
    Path(id): Path<String>,
) -> Response {
    if sessions.close(&id).await {
        StatusCode::OK.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no session {id}"))
    }
}

/// `PATCH /whep/{id}`: trickled candidates from the viewer (an SDP fragment).
pub async fn patch(
    State(sessions): State<Arc<SessionManager>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    if !content_type_is(req.headers(), TRICKLE) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {TRICKLE}"),
        );
    }
    let frag = match read_body(req, 16 * 1024).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let frag = match sdpfrag::parse(&frag) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    for candidate in frag.candidates {
        let init = RTCIceCandidateInit {
            candidate,
            sdp_mid: frag.mid.clone(),
            sdp_mline_index: Some(0),
            ..Default::default()
        };
        if let Err(e) = sessions.add_remote_candidate(&id, init).await {
            return session_error(e);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
