//! Local signaling: WHEP endpoint and the viewer page, for viewers that reach the daemon
//! directly (same LAN, VPN, or a reverse proxy) with no AWS involved.

pub mod sdpfrag;
pub mod whep;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::session::SessionManager;

/// The page at `/`: plain HTML and JS, compiled into the binary so there is nothing to install.
pub const PAGE: &str = include_str!("index.html");

/// Routes for `/` and `/whep`. CORS is open: a page served from elsewhere (a dashboard, a
/// Home Assistant card) may play the camera, which is the point of a WHEP endpoint.
pub fn router(sessions: Arc<SessionManager>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            header::RETRY_AFTER,
        ]);
    Router::new()
        .route("/", get(page))
        .route("/whep", post(whep::post).options(options))
        .route(
            "/whep/{id}",
            axum::routing::delete(whep::delete)
                .patch(whep::patch)
                .options(options),
        )
        .layer(cors)
        .with_state(sessions)
}

async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Html(PAGE),
    )
}

/// `OPTIONS /whep`: WHEP clients probe what we accept.
async fn options() -> impl IntoResponse {
    (
        axum::http::StatusCode::NO_CONTENT,
        [("accept-post", whep::SDP)],
    )
}
