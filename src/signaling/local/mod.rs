//! Local signaling: WHEP endpoint and the viewer page, for viewers that reach the daemon
//! directly (same LAN, VPN, or a reverse proxy) with no AWS involved.

pub mod sdpfrag;
pub mod whep;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::ratelimit::OfferLimiter;
use crate::session::SessionManager;

/// The page at `/`: plain HTML and JS, compiled into the binary so there is nothing to install.
pub const PAGE: &str = include_str!("index.html");

/// What the WHEP handlers share.
#[derive(Clone)]
pub struct Whep {
    pub sessions: Arc<SessionManager>,
    /// Offers per client address (`http.offers_per_ip_per_s`).
    pub limiter: Arc<Mutex<OfferLimiter>>,
    /// A request body must arrive within this (`http.body_timeout_s`).
    pub body_timeout: Duration,
}

impl Whep {
    pub fn new(
        sessions: Arc<SessionManager>,
        offers_per_ip_per_s: u32,
        body_timeout: Duration,
    ) -> Whep {
        Whep {
            sessions,
            limiter: Arc::new(Mutex::new(OfferLimiter::new(offers_per_ip_per_s))),
            body_timeout,
        }
    }
}

/// Routes for `/` and `/whep`. WHEP needs a viewer token when tokens are set. CORS is
/// same-origin unless `http.cors_origins` lists other pages' origins (a dashboard, a Home
/// Assistant card): only then do browsers let those pages call WHEP.
pub fn router(whep: Whep, cors_origins: &[String]) -> Router {
    let api = Router::new()
        .route("/whep", post(whep::post).options(options))
        .route(
            "/whep/{id}",
            axum::routing::delete(whep::delete)
                .patch(whep::patch)
                .options(options),
        )
        .route_layer(axum::middleware::from_fn(crate::http::require_viewer))
        .with_state(whep);
    let api = match cors(cors_origins) {
        Some(layer) => api.layer(layer),
        None => api,
    };
    Router::new().route("/", get(page)).merge(api)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Validated as origins by the config; one that still fails to be a header value
        // is left out rather than failing the start.
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
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
            ]),
    )
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
