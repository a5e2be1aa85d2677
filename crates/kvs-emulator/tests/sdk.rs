//! The real AWS SDK crates talk to the emulator: proves paths, bodies, error shapes and SigV4
//! verification match what the SDK sends and expects.

use std::time::Duration;

use aws_sdk_kinesisvideo as kv;
use aws_sdk_kinesisvideosignaling as sig;
use kv::types::{ChannelProtocol, ChannelRole, SingleMasterChannelEndpointConfiguration};
use kvs_emulator::{Api, Emulator, EmulatorConfig, TestCredentials};

fn creds(c: &TestCredentials) -> kv::config::Credentials {
    kv::config::Credentials::new(
        &c.access_key_id,
        &c.secret_access_key,
        c.session_token.clone(),
        None,
        "kvs-emulator-test",
    )
}

fn control_client(emu: &Emulator, c: &TestCredentials) -> kv::Client {
    let conf = kv::Config::builder()
        .behavior_version(kv::config::BehaviorVersion::latest())
        .region(kv::config::Region::new(emu.region().to_owned()))
        .credentials_provider(creds(c))
        .endpoint_url(emu.control_plane_url())
        .build();
    kv::Client::from_conf(conf)
}

fn signaling_client(emu: &Emulator, endpoint: &str, c: &TestCredentials) -> sig::Client {
    let conf = sig::Config::builder()
        .behavior_version(sig::config::BehaviorVersion::latest())
        .region(sig::config::Region::new(emu.region().to_owned()))
        .credentials_provider(sig::config::Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            c.session_token.clone(),
            None,
            "kvs-emulator-test",
        ))
        .endpoint_url(endpoint)
        .build();
    sig::Client::from_conf(conf)
}

fn session_creds() -> TestCredentials {
    TestCredentials::new("ASIAEMULATORSESSION1", "session-secret").with_session_token("the-token")
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig {
        credentials: vec![TestCredentials::default(), session_creds()],
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sdk_control_plane_round_trip() {
    let emu = emulator().await;
    let client = control_client(&emu, &emu.credentials());

    let created = client
        .create_signaling_channel()
        .channel_name("sdk-cam")
        .send()
        .await
        .unwrap();
    let arn = created.channel_arn().unwrap().to_owned();
    assert!(
        arn.starts_with("arn:aws:kinesisvideo:us-west-2:123456789012:channel/sdk-cam/"),
        "{arn}"
    );
    assert_eq!(arn.rsplit('/').next().unwrap().len(), 13);

    let described = client
        .describe_signaling_channel()
        .channel_name("sdk-cam")
        .send()
        .await
        .unwrap();
    let info = described.channel_info().unwrap();
    assert_eq!(info.channel_arn(), Some(arn.as_str()));
    assert_eq!(info.channel_status(), Some(&kv::types::Status::Active));
    assert_eq!(
        info.channel_type(),
        Some(&kv::types::ChannelType::SingleMaster)
    );
    assert_eq!(
        info.single_master_configuration()
            .unwrap()
            .message_ttl_seconds(),
        Some(60)
    );
    let created_secs = info.creation_time().unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((created_secs - now).abs() < 60);
    let by_arn = client
        .describe_signaling_channel()
        .channel_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_arn.channel_info().unwrap().channel_name(),
        Some("sdk-cam")
    );

    let endpoints = client
        .get_signaling_channel_endpoint()
        .channel_arn(&arn)
        .single_master_channel_endpoint_configuration(
            SingleMasterChannelEndpointConfiguration::builder()
                .protocols(ChannelProtocol::Wss)
                .protocols(ChannelProtocol::Https)
                .role(ChannelRole::Master)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let list = endpoints.resource_endpoint_list();
    assert_eq!(list.len(), 2);
    let find = |p: ChannelProtocol| {
        list.iter()
            .find(|e| e.protocol() == Some(&p))
            .and_then(|e| e.resource_endpoint())
            .unwrap()
            .to_owned()
    };
    assert_eq!(find(ChannelProtocol::Wss), emu.signaling_ws_url());
    let https = find(ChannelProtocol::Https);
    assert_eq!(https, emu.channel_https_url());

    // The channel HTTPS API, with temporary (session-token) credentials.
    let signaling = signaling_client(&emu, &https, &session_creds());
    let ice = signaling
        .get_ice_server_config()
        .channel_arn(&arn)
        .client_id("ProducerMaster")
        .service(sig::types::Service::Turn)
        .send()
        .await
        .unwrap();
    let servers = ice.ice_server_list();
    assert_eq!(servers.len(), 2);
    for s in servers {
        assert_eq!(s.uris().len(), 3);
        assert!(s.uris()[0].starts_with("turn:127.0.0.1:"), "{:?}", s.uris());
        assert!(s.uris()[2].ends_with("?transport=tcp"));
        assert_eq!(s.ttl(), Some(300));
        let (expiry, _) = s.username().unwrap().split_once(':').unwrap();
        let expiry: i64 = expiry.parse().unwrap();
        assert!((expiry - (now + 300)).abs() < 60);
        assert!(!s.password().unwrap().is_empty());
    }
    assert_eq!(emu.stats("sdk-cam").unwrap().get_ice_server_config_calls, 1);

    // Delete, then the channel is gone for both lookups.
    let version = info.version().unwrap().to_owned();
    client
        .delete_signaling_channel()
        .channel_arn(&arn)
        .current_version(version)
        .send()
        .await
        .unwrap();
    let err = client
        .describe_signaling_channel()
        .channel_name("sdk-cam")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = signaling
        .get_ice_server_config()
        .channel_arn(&arn)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
}

#[tokio::test]
async fn sdk_sees_signature_and_injected_failures() {
    let emu = emulator().await;
    emu.create_channel("cam").unwrap();

    // Unknown key and wrong secret: 403, counted.
    let stranger = control_client(&emu, &TestCredentials::new("AKIAUNKNOWN000000000", "x"));
    let err = stranger
        .describe_signaling_channel()
        .channel_name("cam")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    let bad_secret = control_client(
        &emu,
        &TestCredentials::new(emu.credentials().access_key_id, "wrong"),
    );
    let err = bad_secret
        .describe_signaling_channel()
        .channel_name("cam")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    let err = err.into_service_error();
    assert!(
        err.to_string().contains("InvalidSignatureException")
            || format!("{err:?}").contains("does not match"),
        "{err:?}"
    );
    assert_eq!(emu.global_stats().rejected_signatures, 2);

    let client = control_client(&emu, &emu.credentials());
    // A 404 and a throttle are surfaced as the modeled errors.
    emu.fail_next(
        Api::DescribeSignalingChannel,
        404,
        "ResourceNotFoundException",
    );
    let err = client
        .describe_signaling_channel()
        .channel_name("cam")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    emu.fail_next(
        Api::DescribeSignalingChannel,
        400,
        "ClientLimitExceededException",
    );
    let err = client
        .describe_signaling_channel()
        .channel_name("cam")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_client_limit_exceeded_exception(), "{err:?}");
    // A 500 is transient: the SDK's standard retry gets through on the second attempt.
    emu.fail_next(Api::DescribeSignalingChannel, 500, "InternalFailure");
    client
        .describe_signaling_channel()
        .channel_name("cam")
        .send()
        .await
        .unwrap();
    assert_eq!(emu.global_stats().injected_failures, 3);
}

#[tokio::test]
async fn clock_skew_gives_403_signature_expired_with_a_date_header() {
    let emu = emulator().await;
    emu.create_channel("cam").unwrap();
    emu.set_clock_skew(Duration::from_secs(15 * 60));
    // Raw request so the message and Date header can be inspected as a device would.
    let body = br#"{"ChannelName":"cam"}"#;
    let url = url::Url::parse(&emu.control_plane_url()).unwrap();
    let creds = emu.credentials();
    let headers = kvs_emulator::sigv4::sign_post(
        &kvs_emulator::sigv4::host_header_value(&url),
        "/describeSignalingChannel",
        body,
        kvs_emulator::sigv4::SigningKeyMaterial {
            access_key_id: &creds.access_key_id,
            secret_access_key: &creds.secret_access_key,
            session_token: None,
        },
        emu.region(),
        std::time::SystemTime::now(),
    );
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!(
            "{}/describeSignalingChannel",
            emu.control_plane_url()
        ))
        .body(body.to_vec());
    for (n, v) in &headers {
        req = req.header(n, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let date = resp
        .headers()
        .get("date")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let server_time = httpdate::parse_http_date(&date).unwrap();
    let ahead = server_time
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(14 * 60),
        "Date header shows the emulator's clock"
    );
    let v: serde_json::Value = resp.json().await.unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(message.starts_with("Signature expired: "), "{message}");
    assert!(message.ends_with(" - 5 min.)"), "{message}");
    assert_eq!(v["Message"], v["message"]);

    emu.set_clock_behind(Duration::from_secs(15 * 60));
    let err = control_client(&emu, &creds)
        .describe_signaling_channel()
        .channel_name("cam")
        .send()
        .await;
    // The SDK may correct its clock from the Date header and retry; either way the emulator
    // refused at least one "not yet current" request.
    let _ = err;
    assert!(emu.global_stats().rejected_signatures >= 2);
    emu.clear_clock_skew();
    control_client(&emu, &creds)
        .describe_signaling_channel()
        .channel_name("cam")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn sdk_send_alexa_offer_to_master_returns_the_masters_answer() {
    let emu = emulator().await;
    let arn = emu.create_channel("cam").unwrap().arn;
    let mut master = emu.connect_master("cam").await.unwrap();
    let answerer = tokio::spawn(async move {
        let offer = master.next_message(Duration::from_secs(5)).await.unwrap();
        assert_eq!(offer.message_type.as_deref(), Some("SDP_OFFER"));
        assert_eq!(offer.sender_client_id.as_deref(), Some("viewer-7d6a"));
        assert_eq!(offer.sdp().as_deref(), Some("v=0\r\nalexa-offer\r\n"));
        master
            .send_answer(Some("viewer-7d6a"), "v=0\r\nmaster-answer\r\n", None)
            .await
            .unwrap();
        master
    });
    let signaling = signaling_client(&emu, &emu.channel_https_url(), &emu.credentials());
    let out = signaling
        .send_alexa_offer_to_master()
        .channel_arn(&arn)
        .sender_client_id("viewer-7d6a")
        .message_payload(kvs_emulator::sdp_payload("offer", "v=0\r\nalexa-offer\r\n"))
        .send()
        .await
        .unwrap();
    let _master = answerer.await.unwrap();
    assert_eq!(
        out.answer(),
        Some(kvs_emulator::sdp_payload("answer", "v=0\r\nmaster-answer\r\n").as_str())
    );
}

#[tokio::test]
async fn ice_config_with_a_turn_secret_hands_out_turn_rest_credentials() {
    let emu = Emulator::start(EmulatorConfig {
        turn_secret: Some("coturn-shared-secret".into()),
        turn_servers: vec!["127.0.0.1:3478".into()],
        ice_ttl: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let channel = emu.create_channel("turn-cam").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let check = |username: &str, password: &str, id: &str| {
        let (expiry, rest) = username.split_once(':').unwrap();
        assert_eq!(rest, id, "{username}");
        let expiry: u64 = expiry.parse().unwrap();
        assert!(expiry.abs_diff(now + 120) < 30, "{username}");
        assert_eq!(
            (username.to_owned(), password.to_owned()),
            kvs_emulator::turn_rest_credentials("coturn-shared-secret", expiry, id)
        );
    };

    // The real SDK, as the daemon calls it (ClientId given): the id is the ClientId.
    let signaling = signaling_client(&emu, &emu.channel_https_url(), &emu.credentials());
    let ice = signaling
        .get_ice_server_config()
        .channel_arn(&channel.arn)
        .client_id("ProducerMaster")
        .service(sig::types::Service::Turn)
        .send()
        .await
        .unwrap();
    let servers = ice.ice_server_list();
    assert_eq!(servers.len(), 1);
    let s = &servers[0];
    assert_eq!(
        s.uris(),
        [
            "turn:127.0.0.1:3478?transport=udp",
            "turns:127.0.0.1:3478?transport=udp",
            "turns:127.0.0.1:3478?transport=tcp"
        ]
    );
    assert_eq!(s.ttl(), Some(120));
    check(
        s.username().unwrap(),
        s.password().unwrap(),
        "ProducerMaster",
    );

    // Without ClientId (GStreamer, the JS example): the id is the channel name.
    let entries = emu.get_ice_server_config("turn-cam", None).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].ttl, 120);
    assert_eq!(entries[0].uris, s.uris());
    check(&entries[0].username, &entries[0].password, "turn-cam");
}
