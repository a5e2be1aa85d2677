//! Amazon Kinesis Video Streams signaling, master role.
//!
//! Layout: sans-IO cores ([`backoff`], [`machine`], [`ice_refresh`], [`message`], [`pending`])
//! hold every decision and are tested on a virtual clock; [`presign`], [`control`] and [`iot`]
//! talk to AWS; [`driver`] is the thin tokio task that wires them to a WebSocket.

pub mod backoff;
pub mod ice_refresh;
pub mod machine;
pub mod message;
pub mod pending;
pub mod presign;

/// A STUN or TURN server handed to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}
