//! WebSocket data plane: the presigned upgrade (ConnectAsMaster / ConnectAsViewer) and the thin
//! task that moves frames between one socket and the hub.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::Api;
use crate::hub::{ConnId, ConnectRejection, valid_id};
use crate::limits::{ConnTimers, Expiry};
use crate::server::{Outbound, Shared, error_response};
use crate::sigv4::{RequestToVerify, parse_query, verify_query_auth};

type Resp = Response<Full<Bytes>>;

/// Validates the upgrade and, if everything passes, answers 101 and spawns the socket task.
/// Every refusal is a plain HTTP error before the upgrade, as the service does.
pub(crate) fn handshake(shared: Arc<Shared>, mut req: Request<Incoming>) -> Resp {
    let pairs = parse_query(req.uri().query().unwrap_or(""));
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let Some(arn) = get("X-Amz-ChannelARN") else {
        return error_response(
            &shared,
            StatusCode::BAD_REQUEST,
            "InvalidArgumentException",
            "X-Amz-ChannelARN is required",
        );
    };
    let client_id = get("X-Amz-ClientId");
    if let Some(id) = &client_id
        && (!valid_id(id) || id.starts_with("AWS_"))
    {
        return error_response(
            &shared,
            StatusCode::BAD_REQUEST,
            "InvalidArgumentException",
            "X-Amz-ClientId must match [a-zA-Z0-9_.-]{1,256} and not start with AWS_",
        );
    }
    if shared.cfg.verify_signatures {
        let verdict = verify_query_auth(
            &RequestToVerify {
                method: req.method().as_str(),
                path: req.uri().path(),
                raw_query: req.uri().query(),
                headers: req.headers(),
                body: b"",
            },
            &shared.active_credentials(),
            &shared.cfg.region,
            shared.now(),
        );
        if let Err(e) = verdict {
            shared.with(|st| {
                st.global.rejected_signatures += 1;
                if let Some(stats) = st.hub.stats_mut(&arn) {
                    stats.rejected_signatures += 1;
                }
            });
            return error_response(
                &shared,
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                &e.to_string(),
            );
        }
    }
    let api = match client_id {
        None => Api::ConnectAsMaster,
        Some(_) => Api::ConnectAsViewer,
    };
    if let Some(f) = shared.with(|st| st.take_failure(api)) {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(&shared, status, &f.error_type, &f.message);
    }
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return error_response(
            &shared,
            StatusCode::BAD_REQUEST,
            "InvalidArgumentException",
            "Missing Sec-WebSocket-Key",
        );
    };
    let admitted = shared.with(|st| st.hub.admit(&arn, client_id.as_deref(), Instant::now()));
    match admitted {
        Ok(()) => {}
        Err(ConnectRejection::NotFound) => {
            return error_response(
                &shared,
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "The requested channel is not found or not active.",
            );
        }
        Err(ConnectRejection::Throttled) => {
            return error_response(
                &shared,
                StatusCode::BAD_REQUEST,
                "ClientLimitExceededException",
                "Rate exceeded: too many connections per second for this channel",
            );
        }
        Err(ConnectRejection::TooManyViewers) => {
            return error_response(
                &shared,
                StatusCode::BAD_REQUEST,
                "ClientLimitExceededException",
                "The maximum number of viewers for this channel is reached",
            );
        }
    }
    // Whether KVS echoes a requested subprotocol is UNVERIFIED; echoing the first keeps strict
    // clients (libwebsockets asks for "wss") happy.
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_owned());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let conn = shared.next_id();
    let task_shared = shared.clone();
    let task = tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run(task_shared, conn, arn, client_id, ws).await;
    });
    shared.with(|st| st.track(task));

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&key) {
        h.insert("sec-websocket-accept", v);
    }
    if let Some(v) = protocol.and_then(|p| http::HeaderValue::from_str(&p).ok()) {
        h.insert("sec-websocket-protocol", v);
    }
    resp
}

/// Unregisters the connection however the task ends (closed, errored or aborted by `stop`).
struct ConnGuard {
    shared: Arc<Shared>,
    conn: ConnId,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.with(|st| {
            st.conns.remove(&self.conn);
            st.hub.detach(self.conn);
        });
    }
}

async fn run<S>(
    shared: Arc<Shared>,
    conn: ConnId,
    arn: String,
    client_id: Option<String>,
    ws: WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _guard = ConnGuard {
        shared: shared.clone(),
        conn,
    };
    shared.with(|st| {
        st.conns.insert(conn, tx);
        let actions = st.hub.attach(conn, &arn, client_id, Instant::now());
        st.apply(actions);
    });
    let (mut sink, mut stream) = ws.split();
    let mut timers = ConnTimers::new(
        Instant::now(),
        shared.cfg.idle_timeout,
        shared.cfg.max_connection_duration,
    );
    let close = |code: u16, reason: String| {
        Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    };
    loop {
        let deadline = timers.deadline();
        tokio::select! {
            frame = stream.next() => {
                let now = Instant::now();
                let Some(Ok(frame)) = frame else { return };
                timers.on_activity(now);
                match frame {
                    Message::Text(text) => shared.with(|st| {
                        let actions = st.hub.client_frame(conn, text.as_str(), now);
                        st.apply(actions);
                    }),
                    // tungstenite queues the Pong and flushes it on the next read.
                    Message::Ping(_) => shared.with(|st| st.hub.on_ping(conn)),
                    Message::Close(_) => {
                        let _ = sink.close().await;
                        return;
                    }
                    // Binary frames are not part of the protocol; the service ignores them.
                    _ => {}
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    let _ = sink.send(close(code, reason)).await;
                    // Give the client a moment to complete the close handshake.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                    return;
                }
                Some(Outbound::Abort) | None => return,
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if let Some(expiry) = timers.check(Instant::now()) {
                    shared.with(|st| st.hub.on_expiry(conn, expiry == Expiry::Idle));
                    let _ = sink.send(close(1001, "Going away".into())).await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                    return;
                }
            }
        }
    }
}
