//! The accept loop: a connection cap, a header-read deadline, optional TLS, and the client's
//! address on every request (for the per-address offer limit).
//!
//! `axum::serve` has none of the first three, and a camera on a LAN must not be held open by
//! clients that connect and never finish a request: each connection counts against
//! `http.max_connections` only until `http.header_timeout_s` passes without a complete
//! request head. The cap's refusals are a plain `503` and a close, which costs nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::tls::TlsFiles;

/// Connection-level limits (`[http]`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request head (and a TLS handshake) must arrive within this.
    pub header_timeout: Duration,
    /// Connections open at once; further ones are refused at once.
    pub max_connections: usize,
}

/// Counters for `/stats`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    /// Refused at the cap.
    pub refused: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_failed: AtomicU64,
}

/// Serves `app` on `listener` until `stop` is cancelled; then open connections finish their
/// current request (bounded by one second) and close.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<TlsFiles>>,
    stats: Arc<ConnectionStats>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tls = match tls {
        Some(files) => Some(
            files
                .server_config()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ),
        None => None,
    };
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep
                    // serving, but don't spin.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(stream));
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        let stats = stats.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => connection(stream, peer, app, header_timeout, stop).await,
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, peer, app, header_timeout, stop).await,
                        Ok(Err(e)) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake not finished in time");
                        }
                    }
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Tells a client over the connection cap why, and closes.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = "too many connections (http.max_connections); try again shortly\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn connection<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}
