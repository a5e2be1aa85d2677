//! Emulator configuration: quotas and timers default to the real service's values (reference §6)
//! and can be shortened for tests.

use std::time::Duration;

use crate::hub::SupersededPolicy;

/// An access key the emulator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// When set, requests signed with this key must carry exactly this session token.
    pub session_token: Option<String>,
}

impl TestCredentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }
}

impl Default for TestCredentials {
    fn default() -> Self {
        Self::new("AKIAEMULATOR00000001", "emulator/secret/key/for/tests/only")
    }
}

/// How the emulated service behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Region of the credential scope and of every ARN.
    pub region: String,
    /// 12-digit account id used in ARNs.
    pub account_id: String,
    /// Keys the SigV4 verifier accepts. The first one is used by the built-in test clients.
    pub credentials: Vec<TestCredentials>,
    /// `Ttl` of GetIceServerConfig entries (the service returns 300 s).
    pub ice_ttl: Duration,
    /// Retention of undelivered messages for channels created without an explicit
    /// MessageTtlSeconds (the service: 5..120 s, 60 s by default). Sub-second values are fine
    /// for tests; DescribeSignalingChannel then reports at least 1.
    pub message_ttl: Duration,
    /// The service closes every WebSocket with 1001 after this long (1 h).
    pub max_connection_duration: Duration,
    /// Closed after this long without any frame from the client, pings included (10 min).
    pub idle_timeout: Duration,
    /// Concurrent distinct viewer ids per channel (10).
    pub max_viewers: usize,
    /// ConnectAsMaster / ConnectAsViewer per channel per second, each (3).
    pub connects_per_second: usize,
    /// SDP offers and SDP answers per connection per second, each (5).
    pub sdp_tps: usize,
    /// ICE candidates per connection per second (20).
    pub candidate_tps: usize,
    /// SendAlexaOfferToMaster per channel per second (5).
    pub alexa_tps: usize,
    /// Maximum base64 characters in a message payload (10 000).
    pub max_payload_chars: usize,
    /// Fate of a connection replaced by a newer one with the same role / client id.
    pub superseded: SupersededPolicy,
    /// How long SendAlexaOfferToMaster waits for the master's answer before it fails with
    /// 504 (the real wait and error are UNVERIFIED; Alexa itself gives up after ~6 s).
    pub alexa_answer_timeout: Duration,
    /// `host:port` of each TURN server listed by GetIceServerConfig. Loopback by default so a
    /// daemon under test never contacts anything else; point it at a local coturn if wanted.
    pub turn_servers: Vec<String>,
    /// Shared secret of those TURN servers (coturn `--use-auth-secret
    /// --static-auth-secret=<secret>`). `None`: GetIceServerConfig hands out random
    /// credentials no server accepts. `Some`: every entry carries TURN REST API credentials,
    /// `Username` = `<now + ice_ttl as unix seconds>:<ClientId, else the channel name>` and
    /// `Password` = base64(HMAC-SHA1(secret, Username)), so a local coturn accepts them until
    /// they expire (see [`turn_rest_credentials`](crate::turn_rest_credentials)).
    pub turn_secret: Option<String>,
    /// Whether ICE candidates for an offline recipient are stored like SDPs (UNVERIFIED upstream).
    pub store_candidates: bool,
    /// Verify SigV4 on every request (REST and WebSocket upgrade).
    pub verify_signatures: bool,
    /// Listening port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            region: "us-west-2".into(),
            account_id: "123456789012".into(),
            credentials: vec![TestCredentials::default()],
            ice_ttl: Duration::from_secs(300),
            message_ttl: Duration::from_secs(60),
            max_connection_duration: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            max_viewers: 10,
            connects_per_second: 3,
            sdp_tps: 5,
            candidate_tps: 20,
            alexa_tps: 5,
            max_payload_chars: 10_000,
            superseded: SupersededPolicy::KeepOpenUnrouted,
            alexa_answer_timeout: Duration::from_secs(10),
            turn_servers: vec!["127.0.0.1:3478".into(), "127.0.0.1:3479".into()],
            turn_secret: None,
            store_candidates: true,
            verify_signatures: true,
            port: 0,
        }
    }
}
