//! Viewer sessions: one WebRTC peer connection per viewer, fed by one shared fan-out.
//!
//! - [`sdp`]: what we accept in an offer and how we shape the answer (sans-IO).
//! - [`keyframe`]: merging keyframe requests from many viewers (sans-IO).
//! - [`feed`]: the packetized frames every viewer reads, and keyframe requests going back.
//! - [`gop`]: the latest GOP of a passed-through camera, and a joining viewer's catch-up
//!   from it (sans-IO).
//! - [`candidate`]: which remote ICE candidates a session takes (sans-IO).
//! - [`id`]: session ids, made by the manager and parsed from WHEP paths.
//! - [`manager`]: admission (`webrtc.max_viewers`, `webrtc.max_pending`), answering, lifetime
//!   and cleanup.
//! - `peer`, `viewer`, `interceptor`: the `webrtc` crate glue.

pub mod audio;
pub mod candidate;
pub mod feed;
pub mod gop;
pub mod id;
mod interceptor;
pub mod keyframe;
pub mod manager;
pub(crate) mod peer;
mod ports;
pub mod sdp;
pub(crate) mod viewer;

pub use audio::{AudioService, G711Demand};
pub use candidate::CandidatePolicy;
pub use feed::{FrameFeed, KeyframeCause, KeyframeRequests};
pub use gop::GopOptions;
pub use id::{BadSessionId, SessionId};
pub use manager::{
    Answer, OfferRequest, SentTotals, SessionError, SessionManager, SessionOptions, SessionSummary,
};
pub use peer::{ICE_CHECK_INTERVAL, NetworkOptions, fast_ice_checks, ice_check_schedule};

/// A STUN or TURN server for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    /// A TURN server whose URLs include one the stack can gather a relay candidate from
    /// (`turn:` over UDP; `webrtc` 0.21 skips `turns:` and TCP transports).
    pub fn has_udp_turn(&self) -> bool {
        self.urls.iter().any(|u| is_udp_turn(u))
    }
}

fn is_udp_turn(url: &str) -> bool {
    url.strip_prefix("turn:").is_some_and(|rest| {
        rest.split_once("?transport=")
            .is_none_or(|(_, t)| t.eq_ignore_ascii_case("udp"))
    })
}

/// The ICE servers for an answer that must carry every candidate (Alexa, non-trickle WHEP):
/// STUN as given, and only the first TURN server, with only its UDP URLs.
///
/// Gathering then ends as soon as that one allocation answers: the reference (§5.4) warns
/// that gathering from every KVS TURN server (each with three URIs) does not fit Alexa's
/// budget, and a second relay candidate adds nothing a viewer needs. Which server is first
/// is KVS's choice. Trickling viewers get every server: their candidates arrive as they come.
pub fn servers_for_complete_answer(servers: &[IceServer]) -> Vec<IceServer> {
    let mut out = Vec::new();
    let mut turn_taken = false;
    for s in servers {
        let is_turn = s
            .urls
            .iter()
            .any(|u| u.starts_with("turn:") || u.starts_with("turns:"));
        if !is_turn {
            out.push(s.clone());
        } else if !turn_taken && s.has_udp_turn() {
            turn_taken = true;
            out.push(IceServer {
                urls: s.urls.iter().filter(|u| is_udp_turn(u)).cloned().collect(),
                ..s.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str]) -> IceServer {
        IceServer {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            username: Some("u".into()),
            credential: Some("p".into()),
        }
    }

    #[test]
    fn complete_answers_gather_from_one_udp_turn_server() {
        let kvs = [
            server(&["stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443"]),
            server(&[
                "turn:1.example:443?transport=udp",
                "turns:1.example:443?transport=udp",
                "turns:1.example:443?transport=tcp",
            ]),
            server(&["turn:2.example:443?transport=udp"]),
        ];
        let picked = servers_for_complete_answer(&kvs);
        assert_eq!(picked.len(), 2);
        assert_eq!(picked[1].urls, vec!["turn:1.example:443?transport=udp"]);
        assert_eq!(picked[1].credential.as_deref(), Some("p"));
        let tls_only = [
            server(&["turns:1.example:443"]),
            server(&["turn:2.example:3478"]),
        ];
        assert_eq!(
            servers_for_complete_answer(&tls_only)[0].urls,
            vec!["turn:2.example:3478"]
        );
        assert!(servers_for_complete_answer(&[]).is_empty());
    }
}
