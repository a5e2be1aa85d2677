//! Viewer sessions: one WebRTC peer connection per viewer, fed by one shared fan-out.
//!
//! - [`sdp`]: what we accept in an offer and how we shape the answer (sans-IO).
//! - [`keyframe`]: merging keyframe requests from many viewers (sans-IO).
//! - [`feed`]: the packetized frames every viewer reads, and keyframe requests going back.
//! - [`manager`]: admission (`webrtc.max_viewers`), answering, lifetime and cleanup.
//! - `peer`, `viewer`, `interceptor`: the `webrtc` crate glue.

pub mod feed;
mod interceptor;
pub mod keyframe;
pub mod manager;
mod peer;
mod ports;
pub mod sdp;
mod viewer;

pub use feed::{FrameFeed, KeyframeRequests};
pub use manager::{
    Answer, OfferRequest, SessionError, SessionManager, SessionOptions, SessionSummary,
};
pub use peer::NetworkOptions;

/// A STUN or TURN server for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}
