//! The accept loop: a connection cap, a header-read deadline, optional TLS, and the client's
//! address on every request (for the per-address offer limit).
//!
//! `axum::serve` has none of the first three, and a camera on a LAN must not be held open by
//! clients that connect and never finish a request. Each connection counts against
//! `http.max_connections`, and is closed when `http.header_timeout_s` passes without a
//! complete request head. At the cap, a new connection takes the place of the connection that
//! has been waiting longest with no request in progress (a dawdler, or an idle keep-alive);
//! only when every connection is busy with a request is the new one refused, with a plain
//! `503` and a close. So a flood of slow connections costs a real client nothing but the
//! eviction of one of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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

/// Counters for `/stats` and `/metrics`: what the server is refusing, which is what an attack
/// (or a misconfigured client) looks like from here.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    /// Refused at the cap (every connection busy with a request).
    pub refused: AtomicU64,
    /// Closed at the cap to make room (waiting longest with no request in progress).
    pub evicted: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_failed: AtomicU64,
    /// Requests answered 401 (no token or a wrong one).
    pub unauthorized: AtomicU64,
    /// Anonymous requests refused for naming the host by a DNS name.
    pub forbidden_host: AtomicU64,
    /// WHEP offers refused by the per-address limit (429).
    pub rate_limited: AtomicU64,
}

impl ConnectionStats {
    /// (reason, count) for every kind of refusal, in a fixed order.
    pub fn refusals(&self) -> [(&'static str, u64); 6] {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("connection_cap", n(&self.refused)),
            ("evicted", n(&self.evicted)),
            ("tls_handshake", n(&self.tls_failed)),
            ("unauthorized", n(&self.unauthorized)),
            ("host_name", n(&self.forbidden_host)),
            ("offer_rate", n(&self.rate_limited)),
        ]
    }
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
    let table = Arc::new(Mutex::new(Table::default()));
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
        let admitted = lock(&table).admit(limits.max_connections, Instant::now());
        let (id, close) = match admitted {
            Admit::Yes { id, close, evicted } => {
                if evicted {
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                (id, close)
            }
            Admit::Full => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(refuse(stream));
                continue;
            }
        };
        let app = app.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        let stats = stats.clone();
        let table = table.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            let conn = Conn {
                peer,
                app,
                header_timeout,
                stop,
                close,
                table: table.clone(),
                id,
            };
            match tls {
                None => conn.serve(stream).await,
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    let handshake = tokio::select! {
                        _ = conn.close.cancelled() => None,
                        r = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => Some(r),
                    };
                    match handshake {
                        Some(Ok(Ok(s))) => conn.serve(s).await,
                        Some(Ok(Err(e))) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                        }
                        Some(Err(_)) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake not finished in time");
                        }
                        None => {}
                    }
                }
            }
            lock(&table).remove(id);
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// The open connections, for the cap and its evictions.
#[derive(Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Slot>,
}

struct Slot {
    /// Requests being served on it now; 0 = waiting for a request head.
    in_flight: usize,
    /// Since when it has been waiting with no request in progress.
    idle_since: Instant,
    /// Closes it at once (an eviction).
    close: CancellationToken,
}

enum Admit {
    Yes {
        id: u64,
        close: CancellationToken,
        evicted: bool,
    },
    Full,
}

impl Table {
    fn admit(&mut self, max: usize, now: Instant) -> Admit {
        let mut evicted = false;
        if self.conns.len() >= max {
            let victim = self
                .conns
                .iter()
                .filter(|(_, s)| s.in_flight == 0)
                .min_by_key(|(_, s)| s.idle_since)
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Admit::Full;
            };
            if let Some(s) = self.conns.remove(&victim) {
                s.close.cancel();
            }
            evicted = true;
        }
        self.next += 1;
        let close = CancellationToken::new();
        self.conns.insert(
            self.next,
            Slot {
                in_flight: 0,
                idle_since: now,
                close: close.clone(),
            },
        );
        Admit::Yes {
            id: self.next,
            close,
            evicted,
        }
    }

    fn request_started(&mut self, id: u64) {
        if let Some(s) = self.conns.get_mut(&id) {
            s.in_flight += 1;
        }
    }

    fn request_ended(&mut self, id: u64, now: Instant) {
        if let Some(s) = self.conns.get_mut(&id) {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = now;
            }
        }
    }

    fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

/// Marks a connection busy while a request is served, even if the client goes away and the
/// handler's future is dropped.
struct InFlight {
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.table).request_ended(self.id, Instant::now());
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

/// One accepted connection.
struct Conn {
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
    close: CancellationToken,
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Conn {
    async fn serve<S>(&self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, app, table, id) = (self.peer, self.app.clone(), self.table.clone(), self.id);
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                lock(&table).request_started(id);
                let busy = InFlight {
                    table: table.clone(),
                    id,
                };
                let call = app.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    let r = call.await;
                    drop(busy);
                    r
                }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %self.peer, "HTTP connection ended: {e}");
                }
            }
            _ = self.close.cancelled() => {
                tracing::debug!(peer = %self.peer, "HTTP connection closed to make room (http.max_connections)");
            }
            _ = self.stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_waiting_idle_connection_makes_room() {
        let t0 = Instant::now();
        let mut t = Table::default();
        let ids: Vec<u64> = (0..3)
            .map(|i| match t.admit(3, t0 + Duration::from_millis(i)) {
                Admit::Yes { id, evicted, .. } => {
                    assert!(!evicted);
                    id
                }
                Admit::Full => panic!("room left"),
            })
            .collect();
        // The oldest is busy with a request: the next oldest idle one goes.
        t.request_started(ids[0]);
        let Admit::Yes { evicted, .. } = t.admit(3, t0 + Duration::from_millis(10)) else {
            panic!("an idle connection could make room");
        };
        assert!(evicted);
        assert!(t.conns.contains_key(&ids[0]) && !t.conns.contains_key(&ids[1]));
        // Every connection busy: refused.
        for id in t.conns.keys().copied().collect::<Vec<_>>() {
            if id != ids[0] {
                t.request_started(id);
            }
        }
        assert!(matches!(
            t.admit(3, t0 + Duration::from_millis(20)),
            Admit::Full
        ));
        // A request ends: that connection is idle again and can make room.
        t.request_ended(ids[0], t0 + Duration::from_millis(30));
        assert!(matches!(
            t.admit(3, t0 + Duration::from_millis(40)),
            Admit::Yes { evicted: true, .. }
        ));
    }
}
