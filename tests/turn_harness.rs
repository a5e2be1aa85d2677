//! The TURN test harness and the KVS emulator together, for real: the emulator hands out TURN
//! REST credentials for a local coturn, and a `webrtc` peer (the library the daemon uses)
//! allocates a relay with them. Wrong or expired credentials are refused by coturn (401) and
//! give no relay candidate.
//!
//! Timings (set_local_description → gathering Complete) are printed; run with
//! `-- --nocapture` to see them.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvs_emulator::{Emulator, EmulatorConfig, IceServerEntry, turn_rest_credentials};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use support::turn::Turn;
use tokio::sync::watch;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceErrorEvent, RTCPeerConnectionIceEvent, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

const CHANNEL: &str = "turn-cam";

/// What one relay-only gathering produced.
#[derive(Debug)]
struct Gathered {
    /// The local description once gathering completed (or at the deadline).
    sdp: String,
    /// Candidates from `on_ice_candidate`.
    candidates: Vec<String>,
    /// From set_local_description to the first relay candidate event.
    relay_after: Option<Duration>,
    /// From set_local_description to `on_ice_gathering_state_change(Complete)`.
    complete_after: Option<Duration>,
    /// `on_ice_candidate_error` events (url, code, text).
    errors: Vec<String>,
}

impl Gathered {
    /// Relay candidates of component 1 in the local description (webrtc 0.21 repeats every
    /// candidate as component 2, rtcp-mux or not).
    fn relay_lines(&self) -> Vec<&str> {
        self.sdp
            .lines()
            .filter(|l| {
                l.starts_with("a=candidate")
                    && l.contains(" typ relay")
                    && l.split_whitespace().nth(1) == Some("1")
            })
            .collect()
    }
}

#[derive(Default)]
struct Seen {
    candidates: Vec<String>,
    relay_at: Option<Instant>,
    errors: Vec<String>,
}

struct Handler {
    seen: Arc<Mutex<Seen>>,
    complete: watch::Sender<Option<Instant>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let mut seen = self.seen.lock().unwrap();
            if init.candidate.contains(" typ relay") {
                seen.relay_at.get_or_insert_with(Instant::now);
            }
            seen.candidates.push(init.candidate);
        }
    }
    async fn on_ice_candidate_error(&self, e: RTCPeerConnectionIceErrorEvent) {
        let text = format!("{} {} {}", e.url, e.error_code, e.error_text);
        self.seen.lock().unwrap().errors.push(text);
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.complete.send(Some(Instant::now()));
        }
    }
}

/// A relay-only peer bound to 127.0.0.1 with `servers`, offering one recvonly video
/// section; waits up to `within` for gathering to complete.
async fn gather_relay(servers: Vec<RTCIceServer>, within: Duration) -> Gathered {
    gather(RTCIceTransportPolicy::Relay, servers, within).await
}

/// [`gather_relay`] with any transport policy (`All` also gathers a 127.0.0.1 host candidate,
/// as the daemon does).
async fn gather(
    policy: RTCIceTransportPolicy,
    servers: Vec<RTCIceServer>,
    within: Duration,
) -> Gathered {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (complete_tx, mut complete) = watch::channel(None);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(servers)
                .with_ice_transport_policy(policy)
                .build(),
        )
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_handler(Arc::new(Handler {
            seen: seen.clone(),
            complete: complete_tx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    let t0 = Instant::now();
    pc.set_local_description(offer).await.unwrap();
    let done = tokio::time::timeout(within, complete.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|t| *t));
    let sdp = pc.local_description().await.unwrap().sdp;
    let _ = pc.close().await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    Gathered {
        sdp,
        candidates: seen.candidates,
        relay_after: seen.relay_at.map(|t| t - t0),
        complete_after: done.map(|t| t - t0),
        errors: seen.errors,
    }
}

fn ice_server(entry: &IceServerEntry) -> RTCIceServer {
    RTCIceServer {
        urls: entry.uris.clone(),
        username: entry.username.clone(),
        credential: entry.password.clone(),
    }
}

/// An emulator whose GetIceServerConfig points at `turn` and signs with its secret.
async fn emulator_for(turn: &Turn) -> Emulator {
    let emu = Emulator::start(EmulatorConfig {
        turn_servers: vec![format!("127.0.0.1:{}", turn.port)],
        turn_secret: Some(turn.secret.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    emu.create_channel(CHANNEL).unwrap();
    emu
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_credentials_allocate_a_relay_on_coturn() {
    let turn = Turn::start().await;
    eprintln!(
        "coturn answered STUN {:?} after spawn: {}",
        turn.started_in, turn.command_line
    );
    let emu = emulator_for(&turn).await;

    let entries = emu
        .get_ice_server_config(CHANNEL, Some("ProducerMaster"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    // The service's three URIs; webrtc 0.21 uses only the first and skips the turns: ones.
    assert_eq!(entry.uris[0], turn.url(), "{entries:?}");
    assert_eq!(entry.uris.len(), 3, "{entries:?}");
    assert!(entry.username.ends_with(":ProducerMaster"), "{entries:?}");

    let before = turn.allocations();
    let g = gather_relay(vec![ice_server(entry)], Duration::from_secs(15)).await;
    eprintln!(
        "coturn reachable: relay candidate after {:?}, gathering Complete after {:?}",
        g.relay_after, g.complete_after
    );
    let relays = g.relay_lines();
    assert_eq!(
        relays.len(),
        1,
        "expected one relay candidate in the local description: {g:#?}\n{}",
        turn.log()
    );
    // `... 127.0.0.1 <relay port> typ relay raddr 127.0.0.1 rport <our port>`
    let fields: Vec<&str> = relays[0].split_whitespace().collect();
    let port: u16 = fields[5].parse().unwrap();
    assert_eq!(fields[4], "127.0.0.1", "{}", relays[0]);
    assert!(
        turn.relay_ports.contains(&port),
        "relay port {port} is not coturn's ({:?}): {}",
        turn.relay_ports,
        relays[0]
    );
    assert!(
        !g.sdp.contains(" typ host"),
        "relay policy, yet host candidates:\n{}",
        g.sdp
    );
    assert!(
        g.complete_after.is_some(),
        "gathering never completed: {g:#?}"
    );
    assert_eq!(
        turn.wait_allocations(before + 1, Duration::from_secs(5))
            .await,
        before + 1,
        "coturn logged no allocation:\n{}",
        turn.log()
    );
    assert_eq!(turn.unauthorized(), 0, "{}", turn.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_expired_credentials_are_refused_with_401_and_give_no_relay() {
    let turn = Turn::start().await;
    let emu = emulator_for(&turn).await;
    let good = emu
        .get_ice_server_config(CHANNEL, Some("ProducerMaster"))
        .await
        .unwrap()
        .remove(0);

    // Another secret (an emulator and a coturn that do not match), and the right secret
    // for a username whose expiry has passed.
    let (_, wrong_password) = {
        let (expiry, id) = good.username.split_once(':').unwrap();
        turn_rest_credentials("not-the-secret", expiry.parse().unwrap(), id)
    };
    let expired = turn_rest_credentials(&turn.secret, unix_now() - 60, "ProducerMaster");
    let cases = [
        (
            "wrong secret",
            IceServerEntry {
                password: wrong_password,
                ..good.clone()
            },
        ),
        (
            "expired",
            IceServerEntry {
                username: expired.0,
                password: expired.1,
                ..good.clone()
            },
        ),
    ];
    for (what, entry) in cases {
        let refused_before = turn.unauthorized();
        let g = gather_relay(vec![ice_server(&entry)], Duration::from_secs(15)).await;
        eprintln!(
            "{what} credentials: gathering Complete after {:?}, candidate errors {:?}",
            g.complete_after, g.errors
        );
        assert!(
            g.relay_lines().is_empty() && !g.candidates.iter().any(|c| c.contains("relay")),
            "{what}: a relay candidate with bad credentials: {g:#?}"
        );
        assert!(
            turn.wait_unauthorized(refused_before + 1, Duration::from_secs(5))
                .await
                > refused_before,
            "{what}: coturn did not refuse with 401:\n{}",
            turn.log()
        );
        assert!(
            g.complete_after.is_some(),
            "{what}: gathering never completed after a 401: {g:#?}"
        );
    }
    assert_eq!(turn.allocations(), 0, "{}", turn.log());

    // The same coturn still grants the emulator's real credentials.
    let g = gather_relay(vec![ice_server(&good)], Duration::from_secs(15)).await;
    assert_eq!(g.relay_lines().len(), 1, "{g:#?}\n{}", turn.log());
    assert_eq!(
        turn.wait_allocations(1, Duration::from_secs(5)).await,
        1,
        "{}",
        turn.log()
    );
}

/// Gathering against a TURN port nobody answers on gives no relay candidate and, in webrtc
/// 0.21.1, never reports gathering Complete: the allocation's transaction times out after
/// ~7.8 s (7 sends, RTO 200 ms doubling to 1.6 s), but `TransactionTimeout` carries the id of
/// the first, unauthenticated Allocate while the relayer waits for that id + 1 (the id of the
/// authenticated retry), so it never marks the server finished (turn_relayer.rs,
/// `TurnEvent::TransactionTimeout`). A non-trickle answer that waits for Complete must
/// therefore have its own deadline. When this test fails because Complete now arrives, the
/// library was fixed: note the new time and drop the workaround.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_turn_gives_no_relay_and_never_completes_gathering() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let (username, credential) = turn_rest_credentials("secret", unix_now() + 300, "x");
    let servers = vec![RTCIceServer {
        urls: vec![format!("turn:127.0.0.1:{port}?transport=udp")],
        username,
        credential,
    }];
    // Well past the ~7.8 s transaction timeout.
    let wait = Duration::from_secs(12);
    // Relay only, and the daemon's way (host candidates too): the host candidate does not
    // help, Complete waits for every TURN server.
    let (relay, all) = tokio::join!(
        gather(RTCIceTransportPolicy::Relay, servers.clone(), wait),
        gather(RTCIceTransportPolicy::All, servers, wait)
    );
    for (what, g) in [("relay policy", &relay), ("all policy", &all)] {
        eprintln!(
            "TURN port closed, {what}: gathering Complete after {:?} (waited {wait:?}), \
             candidate errors {:?}",
            g.complete_after, g.errors
        );
        assert!(g.relay_lines().is_empty(), "{what}: {g:#?}");
        assert_eq!(
            g.complete_after, None,
            "{what}: webrtc now completes gathering when TURN does not answer: update this \
             test and the daemon's non-trickle deadline"
        );
    }
    assert!(relay.candidates.is_empty(), "relay policy: {relay:#?}");
    assert!(
        all.candidates.iter().any(|c| c.contains(" typ host")),
        "all policy gathers the host candidate at once: {all:#?}"
    );
}
