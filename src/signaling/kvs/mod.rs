//! Amazon Kinesis Video Streams signaling, master role.
//!
//! Layout: sans-IO cores ([`backoff`], [`machine`], [`ice_refresh`], [`message`], [`pending`],
//! [`outbox`]) hold every decision and are tested on a virtual clock; [`presign`], [`control`]
//! and [`iot`] talk to AWS; [`driver`] is the thin tokio task that wires them to a WebSocket;
//! [`check()`] walks the same path step by step for `camgate kvs check`. [`ClientId`] is a
//! viewer's id as checked where it comes off the wire; [`ChannelArn`] the channel's ARN as
//! checked where it comes from the configuration or the API.
//!
//! Use: `KvsMaster::start(opts, handler).await?` with an [`OfferHandler`]; read
//! `master.stats().snapshot()`; `master.stop().await` on shutdown.

pub use crate::backoff;
pub mod arn;
pub mod check;
pub mod client_id;
pub mod control;
pub mod driver;
pub mod ice_refresh;
pub mod iot;
pub mod machine;
pub mod message;
pub mod outbox;
pub mod pending;
pub mod presign;
pub mod stats;

/// Makes aws-lc-rs the process-wide rustls provider unless one is installed already.
///
/// webrtc turns on rustls' `ring` backend and the AWS crates `aws-lc-rs`; with both compiled in,
/// rustls refuses to guess and any TLS client built without an explicit provider (the `wss://`
/// connect in tokio-tungstenite) panics. Called by [`KvsMaster::start`] and [`check()`]; the
/// application may call it earlier. Idempotent.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: some provider is then in place.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// Where SDP offers go: the session layer implements this.
#[async_trait::async_trait]
pub trait OfferHandler: Send + Sync + 'static {
    /// An SDP offer arrived from viewer `client_id` (Alexa ids look like `viewer-<uuid>`).
    /// `ice_servers` are the current (unexpired) STUN/TURN servers to use for this session.
    /// If `candidates` is Some, the viewer trickles: return the answer at once and send each local
    /// candidate (JSON `{"candidate","sdpMid","sdpMLineIndex"}` as a String) to the channel as gathered.
    /// If None, return one complete answer containing every gathered candidate.
    /// A new offer from a client id that has a session replaces that session.
    async fn offer(
        &self,
        client_id: &ClientId,
        offer_sdp: &str,
        ice_servers: Vec<IceServer>,
        candidates: Option<tokio::sync::mpsc::Sender<String>>,
    ) -> Result<String, String>;
    /// A trickled remote candidate (the decoded JSON payload) for viewer `client_id`.
    async fn remote_candidate(&self, client_id: &ClientId, candidate_json: &str);
}

/// A STUN or TURN server handed to a session: the session layer's type, so KVS's servers
/// reach the peer connection unchanged.
pub use crate::session::IceServer;

pub use iot::IotOptions;

use std::time::Duration;

/// Everything the KVS master needs; the application maps its configuration onto this.
#[derive(Debug, Clone, PartialEq)]
pub struct KvsOptions {
    /// AWS region; taken from the channel ARN when one is given, else from here, else from the
    /// environment/profile.
    pub region: Option<String>,
    pub channel_name: Option<String>,
    /// Preferred over the name when both are set. Text as configured: it is parsed into a
    /// [`ChannelArn`] when the control plane is set up, which refuses one that is malformed.
    pub channel_arn: Option<String>,
    /// Control-plane endpoint override (an emulator, a FIPS or dual-stack endpoint).
    pub endpoint_url: Option<String>,
    /// Create the channel if Describe says it does not exist (by name only).
    pub create_channel: bool,
    /// Use an AWS IoT certificate instead of the default credential chain.
    pub iot: Option<IotOptions>,
    /// Fixed credentials (keys from the config file, tests); wins over `iot` and the chain.
    pub credentials: Option<aws_credential_types::Credentials>,
    /// Give sessions the channel region's KVS STUN server (on AWS, always wanted).
    pub region_stun: bool,
    /// Our `ClientId` in GetIceServerConfig.
    pub client_id: String,
    /// Send a WebSocket Ping when nothing was sent for this long (service idle cut: 10 min).
    pub ping_interval: Duration,
    /// Planned reconnect after this long (service maximum: 1 h).
    pub max_connection_age: Duration,
    /// Upper bound for one offer → answer (the session layer's ICE gathering included).
    pub gather_timeout: Duration,
    /// Per REST call attempt.
    pub api_timeout: Duration,
    /// TCP/TLS/WebSocket handshake.
    pub connect_timeout: Duration,
    /// Deadline of each connection step (an API call with its credential fetch, or the
    /// WebSocket connect); past it the step is abandoned and retried with backoff.
    pub step_timeout: Duration,
    /// A Ping unanswered (no Pong, no frame) for this long means the socket is dead.
    pub pong_timeout: Duration,
}

impl KvsOptions {
    /// Plain `ws://`/`http://` endpoints (the WebSocket, the channel's HTTPS endpoint, the IoT
    /// credentials endpoint) are allowed only when the operator pointed `endpoint_url` at a
    /// plain `http://` control plane, i.e. an emulator. Otherwise credentials and presigned
    /// URLs travel over TLS only.
    pub fn allows_plaintext(&self) -> bool {
        self.endpoint_url
            .as_deref()
            .is_some_and(|u| u.len() >= 7 && u[..7].eq_ignore_ascii_case("http://"))
    }
}

impl Default for KvsOptions {
    fn default() -> Self {
        KvsOptions {
            region: None,
            channel_name: None,
            channel_arn: None,
            endpoint_url: None,
            create_channel: false,
            iot: None,
            credentials: None,
            region_stun: true,
            client_id: "camgate-master".into(),
            ping_interval: Duration::from_secs(25),
            max_connection_age: Duration::from_secs(55 * 60),
            gather_timeout: Duration::from_secs(10),
            api_timeout: Duration::from_secs(7),
            connect_timeout: Duration::from_secs(5),
            step_timeout: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(20),
        }
    }
}

pub use arn::{BadChannelArn, ChannelArn};
pub use check::{CheckReport, CheckStep, check};
pub use client_id::{BadClientId, ClientId};
pub use driver::KvsMaster;
pub use stats::{KvsStats, StatsSnapshot};

#[cfg(test)]
mod tests;
