//! The listener on 127.0.0.1 and the state it shares with every connection task. One port serves
//! the control plane, the channel HTTPS API and the WebSocket data plane (clients use the
//! endpoints exactly as GetSignalingChannelEndpoint returns them, so one host is enough).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::EmulatorConfig;
use crate::hub::{Action, ConnId, Hub, WaiterId};
use crate::sigv4::CredentialLookup;
use crate::{Api, EmulatorStats, rest, ws};

/// What a connection task is told to do with its socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(String),
    Close(u16, String),
    /// Drop the TCP connection without a close handshake.
    Abort,
}

/// A failure queued by `Emulator::fail_next`.
#[derive(Debug, Clone)]
pub(crate) struct InjectedFailure {
    pub status: u16,
    pub error_type: String,
    pub message: String,
}

/// Everything behind the lock.
pub(crate) struct State {
    pub hub: Hub,
    pub conns: HashMap<ConnId, mpsc::UnboundedSender<Outbound>>,
    pub waiters: HashMap<WaiterId, oneshot::Sender<Option<String>>>,
    pub failures: HashMap<Api, VecDeque<InjectedFailure>>,
    /// Calls of each API that will never be answered (`Emulator::hang_next`).
    pub hangs: HashMap<Api, u32>,
    /// Access key ids refused from now on (`Emulator::revoke_credentials`).
    pub revoked: Vec<String>,
    pub global: EmulatorStats,
    /// Tasks that own a socket; `stop()` aborts them.
    pub tasks: Vec<JoinHandle<()>>,
}

impl State {
    /// Carries out the hub's decisions. Only queues work, so it is fine under the lock.
    pub(crate) fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { conn, text } => self.send(conn, Outbound::Text(text)),
                Action::Close { conn, code, reason } => {
                    self.send(conn, Outbound::Close(code, reason))
                }
                Action::AlexaAnswer { waiter, payload } => {
                    if let Some(tx) = self.waiters.remove(&waiter) {
                        let _ = tx.send(Some(payload));
                    }
                }
                Action::AlexaAbandoned { waiter } => {
                    if let Some(tx) = self.waiters.remove(&waiter) {
                        let _ = tx.send(None);
                    }
                }
            }
        }
    }

    pub(crate) fn send(&mut self, conn: ConnId, out: Outbound) {
        if let Some(tx) = self.conns.get(&conn) {
            let _ = tx.send(out);
        }
    }

    pub(crate) fn take_failure(&mut self, api: Api) -> Option<InjectedFailure> {
        let failure = self.failures.get_mut(&api)?.pop_front();
        if failure.is_some() {
            self.global.injected_failures += 1;
        }
        failure
    }

    /// True if this call of `api` is to hang (and counts it).
    pub(crate) fn take_hang(&mut self, api: Api) -> bool {
        match self.hangs.get_mut(&api) {
            Some(n) if *n > 0 => {
                *n -= 1;
                self.global.hung_requests += 1;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn track(&mut self, task: JoinHandle<()>) {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task);
    }
}

/// The configured keys minus the revoked ones: what the verifier accepts right now.
pub(crate) struct ActiveCredentials<'a> {
    cfg: &'a EmulatorConfig,
    revoked: Vec<String>,
}

impl CredentialLookup for ActiveCredentials<'_> {
    fn lookup(&self, access_key_id: &str) -> Option<(&str, Option<&str>)> {
        if self.revoked.iter().any(|r| r == access_key_id) {
            return None;
        }
        self.cfg.lookup(access_key_id)
    }
}

impl CredentialLookup for EmulatorConfig {
    fn lookup(&self, access_key_id: &str) -> Option<(&str, Option<&str>)> {
        self.credentials
            .iter()
            .find(|c| c.access_key_id == access_key_id)
            .map(|c| (c.secret_access_key.as_str(), c.session_token.as_deref()))
    }
}

pub(crate) struct Shared {
    pub cfg: EmulatorConfig,
    pub port: u16,
    state: Mutex<State>,
    /// Offset of the emulator's wall clock from the host's, in ms (fault: clock skew).
    skew_ms: AtomicI64,
    next_id: AtomicU64,
    /// Signalled after every state change, so tests can await a condition instead of sleeping.
    pub changed: Notify,
}

impl Shared {
    pub(crate) fn new(cfg: EmulatorConfig, port: u16, hub: Hub) -> Self {
        Self {
            cfg,
            port,
            state: Mutex::new(State {
                hub,
                conns: HashMap::new(),
                waiters: HashMap::new(),
                failures: HashMap::new(),
                hangs: HashMap::new(),
                revoked: Vec::new(),
                global: EmulatorStats::default(),
                tasks: Vec::new(),
            }),
            skew_ms: AtomicI64::new(0),
            next_id: AtomicU64::new(1),
            changed: Notify::new(),
        }
    }

    /// Runs `f` under the lock, then wakes whoever waits for a state change.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.lock());
        self.changed.notify_waiters();
        result
    }

    /// Runs `f` under the lock without waking waiters: for reads, so that a waiter re-checking
    /// its condition does not wake itself forever.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the emulator down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn active_credentials(&self) -> ActiveCredentials<'_> {
        ActiveCredentials {
            cfg: &self.cfg,
            revoked: self.read(|st| st.revoked.clone()),
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The emulator's (possibly skewed) wall clock.
    pub(crate) fn now(&self) -> SystemTime {
        let skew = self.skew_ms.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if skew >= 0 {
            now + Duration::from_millis(skew.unsigned_abs())
        } else {
            now - Duration::from_millis(skew.unsigned_abs())
        }
    }

    pub(crate) fn set_skew_ms(&self, ms: i64) {
        self.skew_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn ws_endpoint(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

/// Binds 127.0.0.1:`port` and serves until the returned task is aborted.
pub(crate) async fn listen(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).await
}

pub(crate) fn spawn_accept_loop(shared: Arc<Shared>, listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    // Signaling messages are small and latency is what tests measure: no Nagle.
                    let _ = stream.set_nodelay(true);
                    stream
                }
                Err(e) => {
                    tracing::warn!("kvs-emulator accept failed: {e}");
                    continue;
                }
            };
            let conn_shared = shared.clone();
            let task = tokio::spawn(async move {
                let svc_shared = conn_shared.clone();
                let service = service_fn(move |req| handle(svc_shared.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
            shared.with(|st| st.track(task));
        }
    })
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return Ok(ws::handshake(shared, req));
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 1 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(error_response(
                &shared,
                StatusCode::PAYLOAD_TOO_LARGE,
                "InvalidArgumentException",
                "Request body too large or unreadable",
            ));
        }
    };
    Ok(rest::dispatch(&shared, parts, body).await)
}

fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A JSON response with the headers every KVS response carries (`Date` from the emulator's
/// clock, so a skewed client can correct itself like the C SDK does).
pub(crate) fn json_response(
    shared: &Shared,
    status: StatusCode,
    body: String,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&httpdate::fmt_http_date(shared.now())) {
        h.insert(http::header::DATE, v);
    }
    resp
}

/// A rest-json error readable by every client family: type in `x-amzn-ErrorType` and in
/// `__type`, message as both `message` and `Message`.
pub(crate) fn error_response(
    shared: &Shared,
    status: StatusCode,
    error_type: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"__type": error_type, "message": message, "Message": message});
    let mut resp = json_response(shared, status, body.to_string());
    if let Ok(v) = http::HeaderValue::from_str(error_type) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}
