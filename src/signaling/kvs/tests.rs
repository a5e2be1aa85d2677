//! The driver against a minimal in-process stand-in for KVS on 127.0.0.1: the three REST calls
//! through the real AWS SDK, and the WebSocket through the real presign + tokio-tungstenite.
//! (Full protocol conformance is tested later against `crates/kvs-emulator`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::*;

const ARN: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam/1700000000000";
const WAIT: Duration = Duration::from_secs(10);

struct FakeState {
    ws_addr: SocketAddr,
    http_addr: SocketAddr,
    describe_status: AtomicU16,
    describes: AtomicUsize,
    endpoint_calls: AtomicUsize,
    ice_calls: AtomicUsize,
    /// Replaces the WSS endpoint handed out (e.g. a TLS listener).
    wss_override: std::sync::Mutex<Option<String>>,
    /// Refuse the next WebSocket upgrade with (status, `Date` header, body).
    refuse_next_ws: Arc<std::sync::Mutex<Option<(u16, String, String)>>>,
    /// Request URIs of refused upgrades.
    refused: Arc<std::sync::Mutex<Vec<String>>>,
}

struct Fake {
    state: Arc<FakeState>,
    conns: mpsc::Receiver<(String, WebSocketStream<TcpStream>)>,
}

async fn describe(State(s): State<Arc<FakeState>>) -> impl IntoResponse {
    s.describes.fetch_add(1, Ordering::SeqCst);
    let status = s.describe_status.load(Ordering::SeqCst);
    if status == 404 {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-ErrorType",
            "ResourceNotFoundException".parse().unwrap(),
        );
        return (
            StatusCode::NOT_FOUND,
            h,
            json!({"message": "The requested channel is not found or not active."}).to_string(),
        );
    }
    (
        StatusCode::OK,
        HeaderMap::new(),
        json!({"ChannelInfo": {"ChannelName": "cam", "ChannelARN": ARN, "ChannelType": "SINGLE_MASTER",
            "ChannelStatus": "ACTIVE", "CreationTime": 1700000000.0,
            "SingleMasterConfiguration": {"MessageTtlSeconds": 60}, "Version": "1"}})
        .to_string(),
    )
}

async fn endpoints(State(s): State<Arc<FakeState>>, body: String) -> impl IntoResponse {
    s.endpoint_calls.fetch_add(1, Ordering::SeqCst);
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["ChannelARN"], ARN);
    assert_eq!(
        v["SingleMasterChannelEndpointConfiguration"]["Role"],
        "MASTER"
    );
    let wss = s
        .wss_override
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| format!("ws://{}", s.ws_addr));
    json!({"ResourceEndpointList": [
        {"Protocol": "WSS", "ResourceEndpoint": wss},
        {"Protocol": "HTTPS", "ResourceEndpoint": format!("http://{}", s.http_addr)}]})
    .to_string()
}

async fn ice(State(s): State<Arc<FakeState>>, body: String) -> impl IntoResponse {
    s.ice_calls.fetch_add(1, Ordering::SeqCst);
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["ChannelARN"], ARN);
    assert_eq!(v["Service"], "TURN");
    json!({"IceServerList": [{"Uris": ["turn:127.0.0.1:3478?transport=udp"],
        "Username": "1700000300:user", "Password": "pw", "Ttl": 300}]})
    .to_string()
}

impl Fake {
    async fn start() -> Fake {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(FakeState {
            ws_addr: ws.local_addr().unwrap(),
            http_addr: http.local_addr().unwrap(),
            describe_status: AtomicU16::new(200),
            describes: AtomicUsize::new(0),
            endpoint_calls: AtomicUsize::new(0),
            ice_calls: AtomicUsize::new(0),
            wss_override: std::sync::Mutex::new(None),
            refuse_next_ws: Arc::default(),
            refused: Arc::default(),
        });
        let app = axum::Router::new()
            .route("/describeSignalingChannel", post(describe))
            .route("/getSignalingChannelEndpoint", post(endpoints))
            .route("/v1/get-ice-server-config", post(ice))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(http, app).await });
        let (tx, conns) = mpsc::channel(8);
        let (refuse, refused) = (state.refuse_next_ws.clone(), state.refused.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws.accept().await {
                let uri = Arc::new(std::sync::Mutex::new(String::new()));
                let u = uri.clone();
                let (refuse, refused) = (refuse.clone(), refused.clone());
                #[allow(clippy::result_large_err)] // the signature is tungstenite's
                let cb = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                               resp| {
                    *u.lock().unwrap() = req.uri().to_string();
                    if let Some((status, date, body)) = refuse.lock().unwrap().take() {
                        refused.lock().unwrap().push(req.uri().to_string());
                        let mut r = tokio_tungstenite::tungstenite::http::Response::new(Some(body));
                        *r.status_mut() = StatusCode::from_u16(status).unwrap();
                        r.headers_mut().insert("date", date.parse().unwrap());
                        return Err(r);
                    }
                    Ok(resp)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await {
                    let uri = uri.lock().unwrap().clone();
                    if tx.send((uri, ws)).await.is_err() {
                        break;
                    }
                }
            }
        });
        Fake { state, conns }
    }

    async fn accept(&mut self) -> (String, WebSocketStream<TcpStream>) {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("master did not connect in time")
            .expect("listener gone")
    }

    fn options(&self) -> KvsOptions {
        KvsOptions {
            region: Some("us-west-2".into()),
            channel_name: Some("cam".into()),
            endpoint_url: Some(format!("http://{}", self.state.http_addr)),
            credentials: Some(aws_credential_types::Credentials::new(
                "AKIDTEST",
                "secret",
                Some("token".into()),
                None,
                "test",
            )),
            ..KvsOptions::default()
        }
    }
}

/// Records what the session layer was asked to do.
struct TestHandler {
    events: mpsc::UnboundedSender<String>,
}

#[async_trait::async_trait]
impl OfferHandler for TestHandler {
    async fn offer(
        &self,
        client_id: &ClientId,
        _offer_sdp: &str,
        ice_servers: Vec<IceServer>,
        candidates: Option<mpsc::Sender<String>>,
    ) -> Result<String, String> {
        let _ = self.events.send(format!(
            "offer {client_id} trickle={} ice={}",
            candidates.is_some(),
            ice_servers.len()
        ));
        if let Some(tx) = candidates {
            for port in [5000, 5001] {
                let c = json!({"candidate": format!("candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host"),
                    "sdpMid": "0", "sdpMLineIndex": 0});
                let _ = tx.send(c.to_string()).await;
            }
        }
        Ok(format!("v=0\r\no=- answer-for-{client_id}\r\n"))
    }

    async fn remote_candidate(&self, client_id: &ClientId, candidate_json: &str) {
        let _ = self
            .events
            .send(format!("candidate {client_id} {candidate_json}"));
    }
}

fn handler() -> (Arc<TestHandler>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(TestHandler { events: tx }), rx)
}

fn envelope(kind: &str, sender: &str, payload: &Value) -> Message {
    Message::text(
        json!({"messageType": kind, "senderClientId": sender,
            "messagePayload": B64.encode(payload.to_string())})
        .to_string(),
    )
}

/// Next text frame from the master, decoded; pings are skipped.
async fn next_message(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time")
            .expect("socket ended")
            .expect("socket error");
        if let Message::Text(t) = m {
            let mut v: Value = serde_json::from_str(t.as_str()).unwrap();
            let payload = B64.decode(v["messagePayload"].as_str().unwrap()).unwrap();
            v["payload"] = serde_json::from_slice(&payload).unwrap();
            return v;
        }
    }
}

/// Waits until the master closes this socket.
async fn closed_by_master(ws: &mut WebSocketStream<TcpStream>) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("master kept the socket open")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(_)) => {}
        }
    }
}

async fn expect_event(rx: &mut mpsc::UnboundedReceiver<String>, prefix: &str) -> String {
    loop {
        let e = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {prefix:?} event in time"))
            .expect("handler gone");
        if e.starts_with(prefix) {
            return e;
        }
    }
}

const TRICKLE_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-options:trickle\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
const ALEXA_OFFER: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

#[tokio::test]
async fn master_answers_trickle_and_alexa_offers_and_recovers_from_go_away_and_close() {
    let mut fake = Fake::start().await;
    let (h, mut events) = handler();
    let master = KvsMaster::start(fake.options(), h).await.unwrap();

    let (uri, mut ws) = fake.accept().await;
    assert!(
        uri.contains("X-Amz-ChannelARN=arn%3Aaws%3Akinesisvideo"),
        "{uri}"
    );
    assert!(uri.contains("X-Amz-Signature="), "{uri}");
    assert!(uri.contains("X-Amz-Security-Token=token"), "{uri}");
    assert!(!uri.contains("X-Amz-ClientId"), "{uri}");

    // A browser viewer: its first candidate overtakes its offer.
    let early = json!({"candidate": "candidate:9 1 udp 1 127.0.0.1 9999 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    ws.send(envelope("ICE_CANDIDATE", "viewer-1", &early))
        .await
        .unwrap();
    ws.send(envelope(
        "SDP_OFFER",
        "viewer-1",
        &json!({"type": "offer", "sdp": TRICKLE_OFFER}),
    ))
    .await
    .unwrap();
    let answer = next_message(&mut ws).await;
    assert_eq!(answer["action"], "SDP_ANSWER");
    assert_eq!(answer["recipientClientId"], "viewer-1");
    assert!(answer["correlationId"].as_str().unwrap().contains('_'));
    assert_eq!(answer["payload"]["type"], "answer");
    assert_eq!(
        answer["payload"]["sdp"],
        "v=0\r\no=- answer-for-viewer-1\r\n"
    );
    for port in [5000, 5001] {
        let c = next_message(&mut ws).await;
        assert_eq!(c["action"], "ICE_CANDIDATE");
        assert_eq!(c["recipientClientId"], "viewer-1");
        assert!(
            c["payload"]["candidate"]
                .as_str()
                .unwrap()
                .contains(&port.to_string())
        );
    }
    let e = expect_event(&mut events, "offer viewer-1").await;
    assert_eq!(e, "offer viewer-1 trickle=true ice=2"); // regional STUN + 1 TURN
    let e = expect_event(&mut events, "candidate viewer-1").await;
    assert!(
        e.contains("9999"),
        "the early candidate reached the session: {e}"
    );

    // API Gateway noise does not disturb anything.
    ws.send(Message::text(
        r#"{"message": "Endpoint request timed out", "connectionId": "x"}"#,
    ))
    .await
    .unwrap();
    // Alexa: no trickle, one complete answer; bare-SDP payload accepted.
    ws.send(Message::text(
        json!({"messageType": "SDP_OFFER", "senderClientId": "alexa-1",
            "messagePayload": B64.encode(ALEXA_OFFER)})
        .to_string(),
    ))
    .await
    .unwrap();
    let answer = next_message(&mut ws).await;
    assert_eq!(answer["recipientClientId"], "alexa-1");
    assert_eq!(
        answer["payload"]["sdp"],
        "v=0\r\no=- answer-for-alexa-1\r\n"
    );
    assert_eq!(
        expect_event(&mut events, "offer alexa-1").await,
        "offer alexa-1 trickle=false ice=2"
    );

    // GO_AWAY: the master drops this socket and re-discovers at once.
    let describes = fake.state.describes.load(Ordering::SeqCst);
    ws.send(Message::text(r#"{"messageType":"GO_AWAY"}"#))
        .await
        .unwrap();
    closed_by_master(&mut ws).await;
    let (_, mut ws2) = fake.accept().await;
    assert_eq!(fake.state.describes.load(Ordering::SeqCst), describes + 1);

    // RECONNECT_ICE_SERVER: fresh ICE config, new socket.
    let ice_calls = fake.state.ice_calls.load(Ordering::SeqCst);
    ws2.send(Message::text(r#"{"messageType":"RECONNECT_ICE_SERVER"}"#))
        .await
        .unwrap();
    closed_by_master(&mut ws2).await;
    let (_, mut ws3) = fake.accept().await;
    assert!(fake.state.ice_calls.load(Ordering::SeqCst) > ice_calls);

    // The service closes the socket (e.g. 1001 at max duration): reconnect with backoff,
    // to the cached endpoint (no new Describe).
    let describes = fake.state.describes.load(Ordering::SeqCst);
    ws3.close(None).await.unwrap();
    let (_, mut ws4) = fake.accept().await;
    assert_eq!(fake.state.describes.load(Ordering::SeqCst), describes);

    // Still answering on the new socket.
    ws4.send(envelope(
        "SDP_OFFER",
        "viewer-2",
        &json!({"type": "offer", "sdp": ALEXA_OFFER}),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_message(&mut ws4).await["recipientClientId"],
        "viewer-2"
    );

    let s = master.stats().snapshot();
    assert_eq!(s.state, "connected");
    assert_eq!(s.connects, 4);
    assert_eq!(s.reconnects_for("go-away"), 1);
    assert_eq!(s.reconnects_for("reconnect-ice-server"), 1);
    assert_eq!(s.reconnects_for("socket-closed"), 1);
    assert_eq!(s.offers, 3);
    assert_eq!(s.offer_to_answer_ms.len(), 3);
    assert!(s.dropped_frames >= 1);
    assert!(s.ice_config_age.is_some());
    master.stop().await;
    closed_by_master(&mut ws4).await;
}

#[tokio::test]
async fn master_pings_an_idle_socket_and_reconnects_before_max_age() {
    let mut fake = Fake::start().await;
    let (h, _events) = handler();
    let opts = KvsOptions {
        ping_interval: Duration::from_millis(200),
        max_connection_age: Duration::from_millis(1500),
        ..fake.options()
    };
    let master = KvsMaster::start(opts, h).await.unwrap();
    let (_, mut ws) = fake.accept().await;
    // The server side must see a Ping on an otherwise silent connection.
    let ping = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Ping(_)) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(ping, "no WebSocket Ping within the interval");
    // Planned reconnect at max age, to a new socket.
    let (_, mut ws2) = fake.accept().await;
    // An answer on the new socket proves the master has taken it up.
    ws2.send(envelope(
        "SDP_OFFER",
        "v",
        &json!({"type": "offer", "sdp": ALEXA_OFFER}),
    ))
    .await
    .unwrap();
    assert_eq!(next_message(&mut ws2).await["recipientClientId"], "v");
    assert!(master.stats().snapshot().reconnects_for("max-age") >= 1);
    master.stop().await;
}

#[tokio::test]
async fn check_walks_every_step_and_names_a_missing_channel() {
    let fake = Fake::start().await;
    let report = check(&fake.options()).await;
    assert!(report.ok(), "{report}");
    assert!(report.steps[3].detail.contains("in sync"), "{report}");
    let names: Vec<_> = report.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "configuration",
            "credentials",
            "describe",
            "clock",
            "endpoints",
            "ice-config",
            "websocket"
        ]
    );

    fake.state.describe_status.store(404, Ordering::SeqCst);
    let report = check(&fake.options()).await;
    let failed = report.failure().expect("should fail");
    assert_eq!(failed.name, "describe");
    assert!(
        failed.detail.contains("channel not found"),
        "{}",
        failed.detail
    );
    assert!(failed.detail.contains("us-west-2"), "{}", failed.detail);
}

#[tokio::test]
async fn check_reports_missing_channel_configuration() {
    let report = check(&KvsOptions::default()).await;
    let failed = report.failure().unwrap();
    assert_eq!(failed.name, "configuration");
    assert!(failed.detail.contains("no channel"), "{}", failed.detail);
}

#[tokio::test]
async fn wss_to_an_untrusted_server_fails_cleanly() {
    // webrtc and the AWS crates compile two rustls backends in; a TLS client without an explicit
    // provider would panic here instead of reporting the certificate problem.
    let fake = Fake::start().await;
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der())
            .unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    *fake.state.wss_override.lock().unwrap() = Some(format!("wss://{addr}"));
    let report = check(&fake.options()).await;
    let failed = report
        .failure()
        .expect("an untrusted certificate must fail");
    assert_eq!(failed.name, "websocket", "{report}");
    assert!(
        failed.detail.contains("cannot open the WebSocket"),
        "{}",
        failed.detail
    );
}

/// `X-Amz-Date` of a presigned URL as a wall-clock time.
fn amz_date(uri: &str) -> std::time::SystemTime {
    let url = url::Url::parse(&format!("ws://x{uri}")).unwrap();
    let d = url
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Date")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // 20261122T183401Z → 2026-11-22T18:34:01Z
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    aws_smithy_types::DateTime::from_str(&iso, aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn signature_expired_on_the_handshake_resigns_with_the_service_clock() {
    use std::time::SystemTime;
    let mut fake = Fake::start().await;
    // The service is an hour ahead of this device.
    let service_now = SystemTime::now() + Duration::from_secs(3600);
    *fake.state.refuse_next_ws.lock().unwrap() = Some((
        403,
        httpdate::fmt_http_date(service_now),
        r#"{"message":"Signature expired: 20231107T044734Z is now earlier than 20231107T045305Z (20231107T045805Z - 5 min.)"}"#.to_owned(),
    ));
    let (h, _events) = handler();
    let master = KvsMaster::start(fake.options(), h).await.unwrap();
    let (uri, mut ws) = fake.accept().await;
    let refused = fake.state.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 1);
    let first = amz_date(&refused[0]);
    let second = amz_date(&uri);
    let ahead = second.duration_since(first).unwrap();
    assert!(
        ahead > Duration::from_secs(3590) && ahead < Duration::from_secs(3610),
        "second attempt signed {ahead:?} after the first"
    );
    // The corrected connection works.
    ws.send(envelope(
        "SDP_OFFER",
        "v",
        &json!({"type": "offer", "sdp": ALEXA_OFFER}),
    ))
    .await
    .unwrap();
    assert_eq!(next_message(&mut ws).await["recipientClientId"], "v");
    assert!(master.stats().snapshot().clock_offset_ms > 3_590_000);
    master.stop().await;
}
