//! WebSocket data plane, Alexa offers and fault injection, through real sockets on 127.0.0.1.

use std::time::{Duration, Instant, SystemTime};

use kvs_emulator::{
    Api, ClientError, Emulator, EmulatorConfig, SignalingClient, SupersededPolicy, b64,
    presigned_connect_url,
};

const WAIT: Duration = Duration::from_secs(5);
/// How long to listen to be confident nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

async fn emulator(tweak: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let mut cfg = EmulatorConfig::default();
    tweak(&mut cfg);
    Emulator::start(cfg).await.unwrap()
}

async fn expect_closed(client: &mut SignalingClient, timeout: Duration) -> (Option<u16>, String) {
    loop {
        match client.next_message(timeout).await {
            Err(ClientError::Closed { code, reason }) => return (code, reason),
            Err(e) => panic!("expected a close, got {e}"),
            Ok(_) => continue,
        }
    }
}

async fn expect_rejected(result: Result<SignalingClient, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Rejected { status, body }) => (status, body),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

#[tokio::test]
async fn master_and_viewer_exchange_offer_answer_and_candidates() {
    let emu = emulator(|_| {}).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    let mut viewer = emu.connect_viewer("cam", "viewer-1").await.unwrap();
    assert!(
        emu.wait_for("cam", WAIT, |s| s.master_connected
            && s.viewers_connected == 1)
            .await
    );

    viewer.send_offer("v=0\r\noffer\r\n", None).await.unwrap();
    let offer = master.next_message(WAIT).await.unwrap();
    assert_eq!(offer.message_type.as_deref(), Some("SDP_OFFER"));
    assert_eq!(offer.sender_client_id.as_deref(), Some("viewer-1"));
    assert_eq!(offer.sdp().as_deref(), Some("v=0\r\noffer\r\n"));

    let candidate = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
    viewer.send_candidate(None, candidate, None).await.unwrap();
    let got = master.next_message(WAIT).await.unwrap();
    assert_eq!(got.message_type.as_deref(), Some("ICE_CANDIDATE"));
    assert_eq!(got.sender_client_id.as_deref(), Some("viewer-1"));
    assert_eq!(got.payload.as_deref(), Some(candidate));

    // The master answers in the C SDK's PascalCase with an extra member: keys are matched
    // case-insensitively and unknown members tolerated.
    let answer_payload = kvs_emulator::sdp_payload("answer", "v=0\r\nanswer\r\n");
    master
        .send_raw(&format!(
            r#"{{"action":"SDP_ANSWER","RecipientClientId":"viewer-1","MessagePayload":"{answer_payload}","IceServerList":[]}}"#
        ))
        .await
        .unwrap();
    let answer = viewer.next_message(WAIT).await.unwrap();
    assert_eq!(answer.message_type.as_deref(), Some("SDP_ANSWER"));
    assert_eq!(
        answer.sender_client_id, None,
        "no senderClientId towards viewers"
    );
    assert_eq!(answer.sdp().as_deref(), Some("v=0\r\nanswer\r\n"));
    assert!(
        answer
            .raw
            .starts_with(r#"{"messageType":"SDP_ANSWER","messagePayload":"#)
    );

    master
        .send_candidate(Some("viewer-1"), candidate, None)
        .await
        .unwrap();
    let got = viewer.next_message(WAIT).await.unwrap();
    assert_eq!(got.message_type.as_deref(), Some("ICE_CANDIDATE"));
    assert_eq!(got.payload.as_deref(), Some(candidate));

    assert_eq!(emu.stats("cam").unwrap().messages_routed, 4);
}

#[tokio::test]
async fn offline_recipient_gets_stored_messages_until_ttl_with_sdp_overwrite() {
    let emu = emulator(|c| c.message_ttl = Duration::from_millis(700)).await;
    emu.create_channel("cam").unwrap();
    let mut viewer = emu.connect_viewer("cam", "viewer-1").await.unwrap();
    viewer.send_offer("v=0\r\nfirst\r\n", None).await.unwrap();
    viewer.send_offer("v=0\r\nsecond\r\n", None).await.unwrap();
    viewer
        .send_candidate(None, r#"{"candidate":"c1"}"#, None)
        .await
        .unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.messages_stored == 3).await);

    let mut master = emu.connect_master("cam").await.unwrap();
    let first = master.next_message(WAIT).await.unwrap();
    assert_eq!(
        first.sdp().as_deref(),
        Some("v=0\r\nsecond\r\n"),
        "the newer offer overwrote"
    );
    let second = master.next_message(WAIT).await.unwrap();
    assert_eq!(second.payload.as_deref(), Some(r#"{"candidate":"c1"}"#));
    assert!(matches!(
        master.next_message(QUIET).await,
        Err(ClientError::Timeout(_))
    ));
    assert_eq!(emu.stats("cam").unwrap().messages_overwritten, 1);

    // Stored past the TTL: discarded, a new master gets nothing.
    master.close().await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| !s.master_connected).await);
    viewer.send_offer("v=0\r\nlate\r\n", None).await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.messages_expired == 1).await);
    let mut master = emu.connect_master("cam").await.unwrap();
    assert!(matches!(
        master.next_message(QUIET).await,
        Err(ClientError::Timeout(_))
    ));
}

#[tokio::test]
async fn payload_limit_is_silent_without_correlation_id_and_reported_with_one() {
    let emu = emulator(|_| {}).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    let mut viewer = emu.connect_viewer("cam", "viewer-1").await.unwrap();

    let too_big = "A".repeat(10_004);
    let at_limit = "A".repeat(10_000);
    viewer
        .send_message("SDP_OFFER", None, &too_big, None)
        .await
        .unwrap();
    assert!(
        emu.wait_for("cam", WAIT, |s| s.oversize_payloads == 1)
            .await
    );
    assert!(matches!(
        viewer.next_message(QUIET).await,
        Err(ClientError::Timeout(_))
    ));

    viewer
        .send_message("SDP_OFFER", None, &too_big, Some("corr-1"))
        .await
        .unwrap();
    let status = viewer.next_message(WAIT).await.unwrap();
    assert_eq!(status.message_type.as_deref(), Some("STATUS_RESPONSE"));
    let sr = status.status_response.unwrap();
    assert_eq!(sr.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(sr.error_type.as_deref(), Some("InvalidArgumentException"));
    assert_eq!(sr.status_code.as_deref(), Some("400"));

    // Bad base64 likewise; exactly 10 000 characters still goes through.
    viewer
        .send_message("ICE_CANDIDATE", None, "%%%%", Some("corr-2"))
        .await
        .unwrap();
    let status = viewer.next_message(WAIT).await.unwrap();
    assert_eq!(
        status.status_response.unwrap().correlation_id.as_deref(),
        Some("corr-2")
    );
    viewer
        .send_message("SDP_OFFER", None, &at_limit, None)
        .await
        .unwrap();
    let got = master.next_message(WAIT).await.unwrap();
    assert_eq!(got.message_payload.as_deref().map(str::len), Some(10_000));
}

#[tokio::test]
async fn per_connection_rate_limits_report_client_limit_exceeded() {
    let emu = emulator(|_| {}).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    let mut viewer = emu.connect_viewer("cam", "viewer-1").await.unwrap();
    for i in 0..6 {
        viewer
            .send_message("SDP_OFFER", None, &b64("x"), Some(&format!("c{i}")))
            .await
            .unwrap();
    }
    let status = viewer.next_message(WAIT).await.unwrap();
    let sr = status.status_response.unwrap();
    assert_eq!(sr.correlation_id.as_deref(), Some("c5"));
    assert_eq!(
        sr.error_type.as_deref(),
        Some("ClientLimitExceededException")
    );
    for _ in 0..5 {
        master.next_message(WAIT).await.unwrap();
    }
    assert!(matches!(
        master.next_message(QUIET).await,
        Err(ClientError::Timeout(_))
    ));
}

#[tokio::test]
async fn connects_are_limited_to_three_per_second_per_role_and_viewers_to_max() {
    let emu = emulator(|c| c.max_viewers = 4).await;
    emu.create_channel("cam").unwrap();
    let mut viewers = Vec::new();
    let started = Instant::now();
    for i in 0..3 {
        viewers.push(emu.connect_viewer("cam", &format!("v{i}")).await.unwrap());
    }
    let (status, body) = expect_rejected(emu.connect_viewer("cam", "v3").await).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the test machine was too slow"
    );
    assert_eq!(status, 400);
    assert!(body.contains("ClientLimitExceededException"), "{body}");
    // The master quota is separate.
    let _master = emu.connect_master("cam").await.unwrap();
    assert_eq!(emu.stats("cam").unwrap().connects_throttled, 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    viewers.push(emu.connect_viewer("cam", "v3").await.unwrap());
    // Viewer cap: a fifth distinct id is refused, a repeated id replaces the old socket.
    let (status, _) = expect_rejected(emu.connect_viewer("cam", "v4").await).await;
    assert_eq!(status, 400);
    let mut again = emu.connect_viewer("cam", "v0").await.unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    master
        .send_answer(Some("v0"), "v=0\r\n", None)
        .await
        .unwrap();
    assert!(
        again.next_message(WAIT).await.is_ok(),
        "the newest v0 gets it"
    );
    assert!(matches!(
        viewers[0].next_message(QUIET).await,
        Err(ClientError::Timeout(_))
    ));
}

#[tokio::test]
async fn newest_master_wins_and_the_old_one_stays_open_unrouted() {
    let emu = emulator(|_| {}).await;
    emu.create_channel("cam").unwrap();
    let mut old = emu.connect_master("cam").await.unwrap();
    let mut new = emu.connect_master("cam").await.unwrap();
    let mut viewer = emu.connect_viewer("cam", "v").await.unwrap();
    viewer.send_offer("v=0\r\n", None).await.unwrap();
    assert_eq!(
        new.next_message(WAIT)
            .await
            .unwrap()
            .message_type
            .as_deref(),
        Some("SDP_OFFER")
    );
    assert!(matches!(
        old.next_message(QUIET).await,
        Err(ClientError::Timeout(_))
    ));
    old.send_answer(Some("v"), "v=0\r\n", None).await.unwrap();
    assert!(
        emu.wait_for("cam", WAIT, |s| s.frames_from_superseded == 1)
            .await
    );
    assert!(matches!(
        viewer.next_message(QUIET).await,
        Err(ClientError::Timeout(_))
    ));
    assert_eq!(emu.stats("cam").unwrap().master_connects, 2);
}

#[tokio::test]
async fn superseded_master_can_be_closed_instead() {
    let emu = emulator(|c| c.superseded = SupersededPolicy::Close).await;
    emu.create_channel("cam").unwrap();
    let mut old = emu.connect_master("cam").await.unwrap();
    let _new = emu.connect_master("cam").await.unwrap();
    assert_eq!(expect_closed(&mut old, WAIT).await.0, Some(1001));
}

#[tokio::test]
async fn idle_connections_close_but_pings_keep_them_alive() {
    let emu = emulator(|c| c.idle_timeout = Duration::from_millis(600)).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    let mut silent = emu.connect_viewer("cam", "silent").await.unwrap();
    let opened = Instant::now();
    // The master pings every 150 ms for twice the idle timeout while the viewer stays silent.
    let keep_alive = async {
        let until = Instant::now() + Duration::from_millis(1200);
        while Instant::now() < until {
            master.send_ping().await.unwrap();
            master.expect_pong(WAIT).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let silent_closed = async {
        let closed = expect_closed(&mut silent, WAIT).await;
        (closed, opened.elapsed())
    };
    let ((), ((code, reason), after)) = tokio::join!(keep_alive, silent_closed);
    assert_eq!((code, reason.as_str()), (Some(1001), "Going away"));
    assert!(after >= Duration::from_millis(550), "{after:?}");
    let stats = emu.stats("cam").unwrap();
    assert!(stats.master_connected);
    assert!(stats.master_ping_frames >= 5);
    assert_eq!(stats.idle_closes, 1);
}

#[tokio::test]
async fn connections_end_at_max_duration_with_1001() {
    let emu = emulator(|c| c.max_connection_duration = Duration::from_millis(700)).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    let opened = Instant::now();
    let closing = async {
        loop {
            master.send_ping().await?;
            match master.next_message(Duration::from_millis(100)).await {
                Err(ClientError::Timeout(_)) => continue,
                Err(ClientError::Closed { code, reason }) => return Ok((code, reason)),
                Err(e) => return Err(e),
                Ok(_) => continue,
            }
        }
    };
    let (code, reason) = tokio::time::timeout(WAIT, closing).await.unwrap().unwrap();
    assert_eq!((code, reason.as_str()), (Some(1001), "Going away"));
    assert!(opened.elapsed() >= Duration::from_millis(650));
    assert_eq!(emu.stats("cam").unwrap().max_duration_closes, 1);
}

#[tokio::test]
async fn go_away_then_close_after_grace() {
    let emu = emulator(|_| {}).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.master_connected).await);
    let sent = Instant::now();
    emu.go_away("cam", Duration::from_millis(400)).unwrap();
    let msg = master.next_message(WAIT).await.unwrap();
    assert_eq!(msg.message_type.as_deref(), Some("GO_AWAY"));
    let (code, _) = expect_closed(&mut master, WAIT).await;
    assert_eq!(code, Some(1001));
    assert!(sent.elapsed() >= Duration::from_millis(350));
}

#[tokio::test]
async fn reconnect_ice_server_raw_frames_and_closes_reach_the_master() {
    let emu = emulator(|_| {}).await;
    emu.create_channel("cam").unwrap();
    assert!(matches!(
        emu.reconnect_ice_server("cam"),
        Err(kvs_emulator::EmulatorError::NoMaster(_))
    ));
    let mut master = emu.connect_master("cam").await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.master_connected).await);
    emu.reconnect_ice_server("cam").unwrap();
    assert_eq!(
        master
            .next_message(WAIT)
            .await
            .unwrap()
            .message_type
            .as_deref(),
        Some("RECONNECT_ICE_SERVER")
    );
    for raw in [
        r#"{"message": "Endpoint request timed out", "connectionId":"abc=", "requestId":"r-1"}"#,
        r#"{"messageType":"SOMETHING_NEW","messagePayload":"eyJ9"}"#,
        "this is not json",
    ] {
        emu.inject_raw_frame("cam", raw).unwrap();
        assert_eq!(master.next_message(WAIT).await.unwrap().raw, raw);
    }
    emu.close_master("cam", 1001, "Going away").unwrap();
    assert_eq!(
        expect_closed(&mut master, WAIT).await,
        (Some(1001), "Going away".into())
    );
    assert!(emu.wait_for("cam", WAIT, |s| !s.master_connected).await);

    let mut master = emu.connect_master("cam").await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.master_connected).await);
    emu.drop_master("cam").unwrap();
    assert_eq!(
        expect_closed(&mut master, WAIT).await.0,
        None,
        "no close frame"
    );
    assert!(emu.wait_for("cam", WAIT, |s| !s.master_connected).await);
}

#[tokio::test]
async fn stop_refuses_connections_and_restart_serves_the_same_port() {
    let emu = emulator(|_| {}).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.master_connected).await);
    let port = emu.port();
    emu.stop().await;
    assert_eq!(expect_closed(&mut master, WAIT).await.0, None);
    assert!(!emu.stats("cam").unwrap().master_connected);
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    emu.restart().await.unwrap();
    assert_eq!(emu.port(), port);
    let _master = emu.connect_master("cam").await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.master_connected).await);

    // outage(): refused while down, served again afterwards.
    let probe = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let during = emu.connect_master("cam").await;
        assert!(
            matches!(during, Err(ClientError::WebSocket(_))),
            "{during:?}"
        );
    };
    let (outage, ()) = tokio::join!(emu.outage(Duration::from_millis(400)), probe);
    outage.unwrap();
    emu.connect_master("cam").await.unwrap();
}

#[tokio::test]
async fn upgrade_refusals_bad_signature_skew_expiry_unknown_channel_and_injected() {
    let emu = emulator(|_| {}).await;
    let info = emu.create_channel("cam").unwrap();
    let creds = emu.credentials();
    let url = |creds: &kvs_emulator::TestCredentials, time: SystemTime, expires: u64| {
        presigned_connect_url(
            &emu.signaling_ws_url(),
            &info.arn,
            None,
            creds,
            "us-west-2",
            time,
            expires,
        )
        .unwrap()
    };

    let wrong = kvs_emulator::TestCredentials::new(&creds.access_key_id, "wrong-secret");
    let (status, body) =
        expect_rejected(SignalingClient::connect(&url(&wrong, SystemTime::now(), 300), None).await)
            .await;
    assert_eq!(status, 403);
    assert!(body.contains("does not match"), "{body}");

    let old = SystemTime::now() - Duration::from_secs(400);
    let (status, body) =
        expect_rejected(SignalingClient::connect(&url(&creds, old, 299), None).await).await;
    assert_eq!(status, 403);
    assert!(body.contains("Signature expired"), "{body}");

    emu.set_clock_behind(Duration::from_secs(600));
    let (status, body) = expect_rejected(emu.connect_master("cam").await).await;
    assert_eq!(status, 403);
    assert!(body.contains("Signature not yet current"), "{body}");
    emu.clear_clock_skew();
    assert_eq!(emu.stats("cam").unwrap().rejected_signatures, 3);

    emu.fail_next(Api::ConnectAsMaster, 500, "InternalFailure");
    let (status, _) = expect_rejected(emu.connect_master("cam").await).await;
    assert_eq!(status, 500);

    // Delete → the old ARN is 404 even after re-creating the channel under a new ARN.
    let mut master = emu.connect_master("cam").await.unwrap();
    emu.delete_channel("cam").unwrap();
    assert_eq!(expect_closed(&mut master, WAIT).await.0, Some(1001));
    let (status, body) =
        expect_rejected(SignalingClient::connect(&url(&creds, SystemTime::now(), 300), None).await)
            .await;
    assert_eq!(status, 404);
    assert!(body.contains("ResourceNotFoundException"));
    let recreated = emu.create_channel("cam").unwrap();
    assert_ne!(recreated.arn, info.arn);
    let (status, _) =
        expect_rejected(SignalingClient::connect(&url(&creds, SystemTime::now(), 300), None).await)
            .await;
    assert_eq!(status, 404);
    emu.connect_master("cam").await.unwrap();
}

#[tokio::test]
async fn alexa_offer_is_answered_by_the_master_or_times_out() {
    let emu = emulator(|c| c.alexa_answer_timeout = Duration::from_millis(500)).await;
    emu.create_channel("cam").unwrap();
    let mut master = emu.connect_master("cam").await.unwrap();
    assert!(emu.wait_for("cam", WAIT, |s| s.master_connected).await);

    let answering = async {
        let offer = master.next_message(WAIT).await.unwrap();
        assert_eq!(offer.sender_client_id.as_deref(), Some("viewer-3f2a"));
        assert_eq!(offer.sdp().as_deref(), Some("v=0\r\nalexa\r\n"));
        // A trickled candidate to the Alexa id must not complete the call.
        master
            .send_candidate(Some("viewer-3f2a"), r#"{"candidate":"x"}"#, None)
            .await
            .unwrap();
        master
            .send_answer(Some("viewer-3f2a"), "v=0\r\nanswer\r\n", None)
            .await
            .unwrap();
    };
    let (answer, ()) = tokio::join!(
        emu.send_alexa_offer("cam", "viewer-3f2a", "v=0\r\nalexa\r\n"),
        answering
    );
    assert_eq!(answer.unwrap(), "v=0\r\nanswer\r\n");

    // The master stays silent: 504 after the configured wait.
    let started = Instant::now();
    match emu
        .send_alexa_offer("cam", "viewer-silent", "v=0\r\n")
        .await
    {
        Err(ClientError::Api {
            status, error_type, ..
        }) => {
            assert_eq!(
                (status, error_type.as_str()),
                (504, "GatewayTimeoutException")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(450));
    let stats = emu.stats("cam").unwrap();
    assert_eq!(
        (
            stats.alexa_offers,
            stats.alexa_answers,
            stats.alexa_timeouts
        ),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn alexa_offers_are_limited_to_five_per_second_per_channel() {
    let emu = emulator(|c| c.alexa_answer_timeout = Duration::from_millis(300)).await;
    emu.create_channel("cam").unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("viewer-{i}")).collect();
    let calls: Vec<_> = ids
        .iter()
        .map(|id| emu.send_alexa_offer("cam", id, "v=0\r\n"))
        .collect();
    let results = futures_util::future::join_all(calls).await;
    let throttled = results
        .iter()
        .filter(|r| {
            matches!(r, Err(ClientError::Api { status: 400, error_type, .. }) if error_type == "ClientLimitExceededException")
        })
        .count();
    assert_eq!(throttled, 1, "{results:?}");
}
