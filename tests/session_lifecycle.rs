//! The session manager on its own, with real WebRTC offers from test viewers: what happens
//! to offers whose callers go away, to quick re-offers from one viewer, and to sessions that
//! never connect.

mod support;

use std::sync::Arc;
use std::time::Duration;

use camgate::session::{
    AudioService, FrameFeed, KeyframeRequests, NetworkOptions, OfferRequest, SessionError,
    SessionManager, SessionOptions,
};
use camgate::signaling::kvs::ClientId;
use support::viewer::TestViewer;
use support::wait;

fn manager(
    max_viewers: usize,
    max_pending: usize,
    connect_timeout: Duration,
) -> Arc<SessionManager> {
    let keyframes = KeyframeRequests::spawn(
        camgate::session::keyframe::KeyframePolicy::for_framerate(30),
        Arc::new(|| {}),
    );
    SessionManager::new(
        SessionOptions {
            max_viewers,
            network: NetworkOptions {
                host_addresses: vec!["127.0.0.1".parse().unwrap()],
                nat_1to1_ips: Vec::new(),
                stun_urls: Vec::new(),
                ice_disconnected_timeout: Duration::from_secs(5),
                ice_failed_timeout: Duration::from_secs(10),
            },
            udp_port_range: None,
            gather_timeout: Duration::from_secs(2),
            connect_timeout,
            max_pending,
            max_remote_candidates: 32,
            candidates: Default::default(),
        },
        FrameFeed::new(8),
        keyframes,
        AudioService::none(),
        Default::default(),
        camgate::metrics::Timings::default(),
    )
}

fn request(viewer: Option<&str>, sdp: String) -> OfferRequest {
    OfferRequest {
        viewer: viewer.map(|v| ClientId::parse(v).expect("a valid client id")),
        sdp,
        ice_servers: Vec::new(),
        trickle: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_quick_offers_from_one_viewer_leave_one_session() {
    let mgr = manager(4, 4, Duration::from_secs(10));
    for round in 0..5 {
        let (a, b) = (TestViewer::new(102).await, TestViewer::new(102).await);
        let (oa, ob) = (a.offer(true).await, b.offer(true).await);
        let (ra, rb) = tokio::join!(
            mgr.offer(request(Some("viewer-1"), oa)),
            mgr.offer(request(Some("viewer-1"), ob))
        );
        let answered: Vec<_> = [&ra, &rb]
            .into_iter()
            .filter_map(|r| r.as_ref().ok())
            .collect();
        assert!(
            !answered.is_empty(),
            "round {round}: neither offer answered: {ra:?} {rb:?}"
        );
        for r in [&ra, &rb] {
            if let Err(e) = r {
                assert!(matches!(e, SessionError::Superseded), "round {round}: {e}");
            }
        }
        // Whatever the interleaving, one session remains, and it is the viewer's.
        let one = wait::until("one session for the viewer", Duration::from_secs(5), || {
            let m = mgr.clone();
            async move { (m.count() == 1).then_some(()) }
        })
        .await;
        assert!(
            one.is_ok(),
            "round {round}: {} sessions: {:?}",
            mgr.count(),
            mgr.summaries()
        );
        let s = mgr.summaries();
        assert_eq!(s[0].viewer.as_deref(), Some("viewer-1"));
        let kept = mgr
            .session_of(&ClientId::parse("viewer-1").unwrap())
            .expect("the viewer's session");
        assert!(
            answered.iter().any(|a| a.session_id == kept),
            "round {round}: the session kept ({kept}) is not one that was answered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offer_whose_caller_goes_away_leaves_nothing_behind() {
    let mgr = manager(2, 2, Duration::from_secs(10));
    let mut answered = Vec::new();
    for i in 0..12u64 {
        let v = TestViewer::new(102).await;
        let offer = v.offer(true).await;
        let m = mgr.clone();
        // The caller gives up during the answer (a cancelled HTTP request, a KVS handler past
        // its deadline): the future is dropped at some await point of the answer, a
        // different one each time. An answer that was already made stays a connecting session.
        let cut = Duration::from_micros(250 * i);
        if let Ok(Ok(a)) = tokio::time::timeout(cut, m.offer(request(None, offer))).await {
            answered.push(a.session_id);
        }
    }
    assert!(
        answered.len() < 12,
        "every answer beat its cut; the test proves nothing"
    );
    // Answers nobody waited for are closed at once. What remains is connecting sessions whose
    // answers were taken: at most `max_pending` of them (an orphan that was registered for a
    // moment may have evicted the oldest one, as any newcomer past the cap does).
    let settled = wait::until("orphaned answers closed", Duration::from_secs(5), || {
        let m = mgr.clone();
        let answered = answered.clone();
        async move {
            let (connected, pending) = m.occupancy();
            let only_answered = m
                .summaries()
                .iter()
                .all(|s| s.id.as_ref().is_some_and(|id| answered.contains(id)));
            (connected == 0 && pending <= 2 && only_answered).then_some(())
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "occupancy {:?}, sessions {:?}, answered {answered:?}",
        mgr.occupancy(),
        mgr.summaries()
    );
    // Both slots are free for real viewers.
    let v = TestViewer::new(102).await;
    let answer = mgr.offer(request(None, v.offer(true).await)).await.unwrap();
    v.accept_answer(&answer.sdp).await;
    assert!(v.wait_connected(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connecting_sessions_have_their_own_cap_and_expire() {
    let mgr = manager(1, 2, Duration::from_secs(2));
    // Three offers that never connect: the third makes room by dropping the first.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let v = TestViewer::new(102).await;
        let a = mgr.offer(request(None, v.offer(true).await)).await.unwrap();
        ids.push(a.session_id);
    }
    let (_, pending) = mgr.occupancy();
    assert_eq!(pending, 2, "{:?}", mgr.summaries());
    // A real viewer still gets in past them, and the one viewer slot is its.
    let v = TestViewer::new(102).await;
    let a = mgr.offer(request(None, v.offer(true).await)).await.unwrap();
    v.accept_answer(&a.sdp).await;
    assert!(v.wait_connected(Duration::from_secs(10)).await);
    let connected = wait::until(
        "the real viewer counted as connected",
        Duration::from_secs(5),
        || {
            let m = mgr.clone();
            async move { (m.occupancy().0 == 1).then_some(()) }
        },
    )
    .await;
    assert!(connected.is_ok(), "{:?}", mgr.occupancy());
    // The others expire after connect_timeout; the viewer stays.
    let expired = wait::until(
        "connecting sessions expired",
        Duration::from_secs(10),
        || {
            let m = mgr.clone();
            async move { (m.occupancy() == (1, 0)).then_some(()) }
        },
    )
    .await;
    assert!(
        expired.is_ok(),
        "{:?} {:?}",
        mgr.occupancy(),
        mgr.summaries()
    );
    assert!(
        ids.iter()
            .all(|id| mgr.summaries().iter().all(|s| s.id.as_ref() != Some(id)))
    );
}
