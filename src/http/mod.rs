//! The HTTP side of the daemon, shared by every mode: the accept loop with its limits
//! ([`server`]), HTTPS ([`tls`]), bearer tokens ([`auth`]), the per-address offer limit
//! ([`ratelimit`]), and the middleware that decides who may call what.
//!
//! Who may call what:
//! - `/` (the viewer page) and `/healthz`: anyone; `/healthz` gives details only to callers
//!   who could read `/stats`.
//! - WHEP (`/whep`…) and `/stats`: a viewer token when `http.tokens` are set.
//! - `/metrics`: a viewer token or `http.metrics_token`.
//! - With no tokens (loopback, or `http.allow_anonymous`), anonymous requests must name the
//!   host by an IP address, `localhost`, a single-label or a `.local` name. A web page that
//!   re-points its own DNS name at the camera (DNS rebinding) is refused that way.

pub mod auth;
pub mod ratelimit;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use auth::{Access, Tokens};
pub use server::{ConnectionLimits, ConnectionStats};
pub use tls::TlsFiles;

/// `[http]`, validated.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub listen: SocketAddr,
    /// `http.tokens`.
    pub tokens: Vec<String>,
    /// `http.tokens_file`, read at start and on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// `http.metrics_token`.
    pub metrics_token: Option<String>,
    /// `http.allow_anonymous`: listening beyond loopback with no token was asked for.
    pub allow_anonymous: bool,
    /// `http.tls_cert` and `http.tls_key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `http.cors_origins`: other pages' origins allowed to use WHEP; empty = same origin only.
    pub cors_origins: Vec<String>,
    pub limits: ConnectionLimits,
    /// `http.body_timeout_s`: a request body must arrive within this.
    pub body_timeout: Duration,
    /// `http.offers_per_ip_per_s`; 0 = no limit.
    pub offers_per_ip_per_s: u32,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            tokens_file: None,
            metrics_token: None,
            allow_anonymous: false,
            tls: None,
            cors_origins: Vec::new(),
            limits: ConnectionLimits {
                header_timeout: Duration::from_secs(10),
                max_connections: 64,
            },
            body_timeout: Duration::from_secs(10),
            offers_per_ip_per_s: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error(transparent)]
    Tokens(#[from] auth::TokenError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl HttpOptions {
    /// Every viewer token: `http.tokens` plus the file's.
    pub fn load_tokens(&self) -> Result<Vec<String>, auth::TokenError> {
        let mut all = self.tokens.clone();
        if let Some(f) = &self.tokens_file {
            all.extend(auth::read_tokens_file(f)?);
        }
        Ok(all)
    }

    /// The token set and the certificate, as the daemon starts with them.
    pub fn load(&self) -> Result<(Tokens, Option<Arc<TlsFiles>>), HttpSetupError> {
        let tokens = Tokens::new(&self.load_tokens()?, self.metrics_token.as_deref());
        let tls = match &self.tls {
            Some((cert, key)) => Some(TlsFiles::load(cert, key)?),
            None => None,
        };
        Ok((tokens, tls))
    }

    /// SIGHUP: reads the tokens file and the certificate again. What fails to load is logged
    /// and the old value stays, so a typo in a reload never locks everyone out.
    pub fn reload(&self, tokens: &Tokens, tls: Option<&TlsFiles>) {
        match self.load_tokens() {
            Ok(t) => {
                tokens.replace(&t, self.metrics_token.as_deref());
                tracing::info!(tokens = t.len(), "SIGHUP: tokens reloaded");
            }
            Err(e) => tracing::error!("SIGHUP: tokens not reloaded, the old ones stay: {e}"),
        }
        if let Some(files) = tls {
            match files.reload() {
                Ok(()) => tracing::info!(
                    fingerprint = %files.fingerprint(),
                    "SIGHUP: TLS certificate reloaded"
                ),
                Err(e) => {
                    tracing::error!("SIGHUP: TLS certificate not reloaded, the old one stays: {e}")
                }
            }
        }
    }
}

/// What [`identify`] needs: the tokens, and where refusals are counted.
#[derive(Clone)]
pub struct Gate {
    pub tokens: Tokens,
    pub stats: Arc<ConnectionStats>,
}

/// Classifies every request (`Access` in its extensions, with the refusal counters) and
/// refuses anonymous requests that name the host by a DNS name.
pub async fn identify(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let access = gate.tokens.check(authorization);
    req.extensions_mut().insert(gate.stats.clone());
    if access == Access::Open && !anonymous_host_ok(req.headers()) {
        count(&req, |s| &s.forbidden_host);
        return text(
            StatusCode::FORBIDDEN,
            "camgate answers anonymous requests only for an IP address, localhost or a .local \
             name; set http.tokens to reach it by a DNS name",
        );
    }
    req.extensions_mut().insert(access);
    next.run(req).await
}

/// Adds one to a refusal counter, when the request carries them (it always does behind
/// [`identify`]).
pub fn count(req: &Request, which: impl Fn(&ConnectionStats) -> &std::sync::atomic::AtomicU64) {
    if let Some(s) = req.extensions().get::<Arc<ConnectionStats>>() {
        which(s).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Lets through callers with viewer rights. CORS preflights carry no credentials by design
/// and pass, so the CORS layer can answer them.
pub async fn require_viewer(req: Request, next: Next) -> Response {
    match req.extensions().get::<Access>() {
        Some(Access::Open | Access::Viewer) => next.run(req).await,
        _ if req.method() == Method::OPTIONS => next.run(req).await,
        _ => {
            count(&req, |s| &s.unauthorized);
            unauthorized(req.headers())
        }
    }
}

/// Lets through callers who may read `/metrics`.
pub async fn require_metrics(req: Request, next: Next) -> Response {
    match req.extensions().get::<Access>() {
        Some(Access::Open | Access::Viewer | Access::Metrics) => next.run(req).await,
        _ => {
            count(&req, |s| &s.unauthorized);
            unauthorized(req.headers())
        }
    }
}

/// Whether a request may see details (`/healthz`): the same callers as `/stats`, and the
/// metrics scraper.
pub fn may_see_details(access: Option<&Access>) -> bool {
    matches!(
        access,
        Some(Access::Open | Access::Viewer | Access::Metrics)
    )
}

/// `401` with the challenge RFC 6750 §3 describes.
fn unauthorized(headers: &HeaderMap) -> Response {
    let presented = headers.contains_key(header::AUTHORIZATION);
    let challenge = if presented {
        r#"Bearer realm="camgate", error="invalid_token""#
    } else {
        r#"Bearer realm="camgate""#
    };
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        if presented {
            "wrong token"
        } else {
            "this camera needs a token: send Authorization: Bearer <one of http.tokens>"
        },
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// Host names an anonymous request may use: what a DNS-rebinding page cannot make a browser
/// send. A missing Host (HTTP/1.0 tools) is not a browser and passes.
fn anonymous_host_ok(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    host_is_local(host)
}

pub fn host_is_local(host: &str) -> bool {
    let host = host.trim();
    // [v6]:port, [v6], v4:port, name:port, name
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    !name.is_empty()
        && (name == "localhost"
            || name.ends_with(".localhost")
            || name.ends_with(".local")
            || !name.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebinding_names_are_not_local() {
        for ok in [
            "127.0.0.1:8080",
            "192.168.1.5",
            "[::1]:8080",
            "localhost:8080",
            "raspberrypi.local:8080",
            "camera",
            "camera:8080",
        ] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "rebind.attacker.com", "[nope]:1", ""] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }
}
