//! Emulator of Amazon Kinesis Video Streams WebRTC signaling for camgate tests.
//!
//! It speaks the real wire protocols (reference `kvs-signaling-and-alexa.md` §1, §2, §6) on
//! 127.0.0.1 only, over plain HTTP / WS: a daemon under test gets [`Emulator::control_plane_url`]
//! as its `endpoint_url` and then uses the endpoints GetSignalingChannelEndpoint returns.
//!
//! * Control plane (rest-json, SigV4-verified): `POST /describeSignalingChannel`,
//!   `/createSignalingChannel`, `/getSignalingChannelEndpoint`, `/deleteSignalingChannel`.
//! * Channel HTTPS API: `POST /v1/get-ice-server-config`, `/v1/send-alexa-offer-to-master`.
//! * Data plane: presigned `GET /?X-Amz-ChannelARN=…[&X-Amz-ClientId=…]` WebSocket upgrade.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kvs_emulator::{Emulator, EmulatorConfig};
//!
//! let emu = Emulator::start(EmulatorConfig::default()).await?;
//! let channel = emu.create_channel("front-door")?;
//! // ... start the daemon with endpoint_url = emu.control_plane_url() and the credentials of
//! // emu.credentials() ...
//! emu.wait_for(&channel.name, Duration::from_secs(5), |s| s.master_connected).await;
//! let mut viewer = emu.connect_viewer(&channel.name, "viewer-1").await?;
//! viewer.send_offer("v=0\r\n...", None).await?;
//! let answer = viewer.next_message(Duration::from_secs(5)).await?;
//! assert_eq!(answer.message_type.as_deref(), Some("SDP_ANSWER"));
//! let alexa_answer_sdp = emu.send_alexa_offer(&channel.name, "viewer-1234", "v=0\r\n...").await?;
//! # Ok(()) }
//! ```
//!
//! Choices where the real service is UNVERIFIED (all configurable or documented here):
//! a superseded master/viewer socket stays open but unrouted ([`SupersededPolicy`]); idle
//! and max-duration closes use 1001 "Going away"; ICE candidates for offline recipients are
//! stored like SDPs; a SendAlexaOfferToMaster that gets no answer within
//! [`EmulatorConfig::alexa_answer_timeout`] fails with HTTP 504 `GatewayTimeoutException`
//! "Endpoint request timed out" (API Gateway integration timeout); an upgrade that fails SigV4
//! gets 403 `AccessDeniedException` with the AWS message in the body.
//!
//! TURN: GetIceServerConfig lists [`EmulatorConfig::turn_servers`] in the service's shape
//! (`turn:…?transport=udp`, `turns:…?transport=udp`, `turns:…?transport=tcp`, `Ttl`). The
//! credentials are random unless [`EmulatorConfig::turn_secret`] is set; then they are TURN
//! REST API credentials ([`turn_rest_credentials`], id = the request's `ClientId`, else the
//! channel name) that a coturn started with `--use-auth-secret --static-auth-secret=<secret>`
//! accepts until `Ttl` runs out. The real service's username suffix is opaque; this one is not.

mod client;
mod config;
mod hub;
mod limits;
mod rest;
mod server;
pub mod sigv4;
mod ws;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

pub use client::{
    ClientError, Envelope, IceServerEntry, SignalingClient, StatusResponse, b64,
    get_ice_server_config_raw, presigned_connect_url, sdp_payload, send_alexa_offer_raw,
};
pub use config::{EmulatorConfig, TestCredentials};
pub use hub::{ChannelInfo, ChannelStats, SupersededPolicy};
pub use rest::turn_rest_credentials;

use hub::{Hub, HubConfig};
use server::{InjectedFailure, Outbound, Shared};

/// The operations a failure can be injected into with [`Emulator::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    DescribeSignalingChannel,
    CreateSignalingChannel,
    GetSignalingChannelEndpoint,
    DeleteSignalingChannel,
    GetIceServerConfig,
    SendAlexaOfferToMaster,
    /// The WebSocket upgrade without `X-Amz-ClientId`.
    ConnectAsMaster,
    /// The WebSocket upgrade with `X-Amz-ClientId`.
    ConnectAsViewer,
}

/// Counters across all channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmulatorStats {
    /// REST calls that passed SigV4.
    pub rest_requests: u64,
    /// REST calls and upgrades refused by SigV4 verification.
    pub rejected_signatures: u64,
    /// Failures served from the `fail_next` queue.
    pub injected_failures: u64,
    /// Calls left unanswered by `hang_next`.
    pub hung_requests: u64,
}

/// Errors of the emulator's own API.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("channel {0} already exists")]
    ChannelExists(String),
    #[error("unknown channel {0}")]
    NoSuchChannel(String),
    #[error("channel {0} has no master connected")]
    NoMaster(String),
}

/// A running emulated KVS signaling service. Dropping it stops the listener and every connection.
pub struct Emulator {
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Emulator {
    /// Binds 127.0.0.1 (`config.port`, 0 = any free port) and starts serving.
    pub async fn start(config: EmulatorConfig) -> Result<Self, EmulatorError> {
        let listener = server::listen(config.port)
            .await
            .map_err(|source| EmulatorError::Bind {
                port: config.port,
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                port: config.port,
                source,
            })?
            .port();
        let hub = Hub::new(HubConfig {
            region: config.region.clone(),
            account_id: config.account_id.clone(),
            message_ttl: config.message_ttl,
            max_viewers: config.max_viewers,
            connects_per_second: config.connects_per_second,
            sdp_tps: config.sdp_tps,
            candidate_tps: config.candidate_tps,
            alexa_tps: config.alexa_tps,
            max_payload_chars: config.max_payload_chars,
            superseded: config.superseded,
            store_candidates: config.store_candidates,
        });
        let shared = Arc::new(Shared::new(config, port, hub));
        let accept = server::spawn_accept_loop(shared.clone(), listener);
        Ok(Self {
            shared,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// `http://127.0.0.1:PORT`: the `endpoint_url` to give the daemon / AWS SDK.
    pub fn control_plane_url(&self) -> String {
        self.shared.http_endpoint()
    }

    /// The WSS endpoint GetSignalingChannelEndpoint returns (`ws://127.0.0.1:PORT`).
    pub fn signaling_ws_url(&self) -> String {
        self.shared.ws_endpoint()
    }

    /// The HTTPS endpoint GetSignalingChannelEndpoint returns (`http://127.0.0.1:PORT`).
    pub fn channel_https_url(&self) -> String {
        self.shared.http_endpoint()
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    pub fn region(&self) -> &str {
        &self.shared.cfg.region
    }

    /// The credentials the built-in clients sign with (the first configured key).
    pub fn credentials(&self) -> TestCredentials {
        self.shared
            .cfg
            .credentials
            .first()
            .cloned()
            .unwrap_or_default()
    }

    /// Pre-provisions an ACTIVE channel with the configured message TTL.
    pub fn create_channel(&self, name: &str) -> Result<ChannelInfo, EmulatorError> {
        let now_ms = rest::wall_ms(&self.shared);
        self.shared
            .with(|st| st.hub.create_channel(name, None, now_ms))
            .ok_or_else(|| EmulatorError::ChannelExists(name.to_owned()))
    }

    pub fn channel(&self, name: &str) -> Option<ChannelInfo> {
        self.shared
            .read(|st| st.hub.arn_of(name).and_then(|a| st.hub.info(a)).cloned())
    }

    /// Deletes a channel: its sockets are closed (1001) and its ARN answers 404 from now on,
    /// even after a re-create (which gets a new ARN).
    pub fn delete_channel(&self, name: &str) -> Result<(), EmulatorError> {
        self.shared.with(|st| {
            let arn = st
                .hub
                .arn_of(name)
                .map(str::to_owned)
                .ok_or_else(|| EmulatorError::NoSuchChannel(name.to_owned()))?;
            if let Some(actions) = st.hub.delete_channel(&arn) {
                st.apply(actions);
            }
            Ok(())
        })
    }

    /// Counters of one channel (`None` for an unknown channel).
    pub fn stats(&self, name: &str) -> Option<ChannelStats> {
        self.shared.read(|st| {
            let arn = st.hub.arn_of(name)?.to_owned();
            st.hub.stats(&arn, Instant::now())
        })
    }

    pub fn global_stats(&self) -> EmulatorStats {
        self.shared.read(|st| st.global.clone())
    }

    /// Waits until `pred` holds for the channel's stats (re-checked on every state change), or
    /// `timeout` passes. Returns whether it held.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&ChannelStats) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stats(name).is_some_and(|s| pred(&s)) {
                return true;
            }
            // Stored messages expire without any event, so re-check at least every 50 ms.
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let step = deadline.min(now + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(step, notified).await;
        }
    }

    fn to_master(&self, name: &str, out: Outbound) -> Result<u64, EmulatorError> {
        self.shared.with(|st| {
            let arn = st
                .hub
                .arn_of(name)
                .ok_or_else(|| EmulatorError::NoSuchChannel(name.to_owned()))?;
            let conn = st
                .hub
                .master_of(arn)
                .ok_or_else(|| EmulatorError::NoMaster(name.to_owned()))?;
            st.send(conn, out);
            Ok(conn)
        })
    }

    /// Sends `{"messageType":"GO_AWAY"}` to the master and closes its socket with 1001 after
    /// `grace` (the service allows up to one minute).
    pub fn go_away(&self, name: &str, grace: Duration) -> Result<(), EmulatorError> {
        let conn = self.to_master(name, Outbound::Text(hub::envelope("GO_AWAY", None, None)))?;
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            shared.with(|st| st.send(conn, Outbound::Close(1001, "Going away".into())));
        });
        self.shared.with(|st| st.track(task));
        Ok(())
    }

    /// Sends `{"messageType":"RECONNECT_ICE_SERVER"}` to the master.
    pub fn reconnect_ice_server(&self, name: &str) -> Result<(), EmulatorError> {
        self.to_master(
            name,
            Outbound::Text(hub::envelope("RECONNECT_ICE_SERVER", None, None)),
        )
        .map(|_| ())
    }

    /// Drops the master's TCP connection without a close frame.
    pub fn drop_master(&self, name: &str) -> Result<(), EmulatorError> {
        self.to_master(name, Outbound::Abort).map(|_| ())
    }

    /// Closes the master's socket with a close frame (`code`, e.g. 1001).
    pub fn close_master(&self, name: &str, code: u16, reason: &str) -> Result<(), EmulatorError> {
        self.to_master(name, Outbound::Close(code, reason.to_owned()))
            .map(|_| ())
    }

    /// Sends `text` verbatim to the master: malformed JSON, API-Gateway style
    /// `{"message":"Endpoint request timed out",...}`, unknown messageType, STATUS_RESPONSE...
    pub fn inject_raw_frame(&self, name: &str, text: &str) -> Result<(), EmulatorError> {
        self.to_master(name, Outbound::Text(text.to_owned()))
            .map(|_| ())
    }

    /// The next call of `api` fails with `status` / `error_type` (queued; one per call).
    /// Applied after SigV4 verification. For the Connect* APIs the upgrade is refused.
    pub fn fail_next(&self, api: Api, status: u16, error_type: &str) {
        let message = match error_type {
            "ResourceNotFoundException" => "The requested channel is not found or not active.",
            "ClientLimitExceededException" => "Rate exceeded",
            _ => "Injected failure",
        };
        self.fail_next_with_message(api, status, error_type, message);
    }

    pub fn fail_next_with_message(&self, api: Api, status: u16, error_type: &str, message: &str) {
        let failure = InjectedFailure {
            status,
            error_type: error_type.to_owned(),
            message: message.to_owned(),
        };
        self.shared
            .with(|st| st.failures.entry(api).or_default().push_back(failure));
    }

    /// The next call of `api` (a REST operation) is accepted and never answered: a hung
    /// control plane. Queued; one per call. Applied after SigV4 verification.
    pub fn hang_next(&self, api: Api) {
        self.shared
            .with(|st| *st.hangs.entry(api).or_default() += 1);
    }

    /// From now on requests signed with `access_key_id` are refused with 403, as the service
    /// refuses expired or revoked temporary credentials. The other configured keys still work.
    pub fn revoke_credentials(&self, access_key_id: &str) {
        self.shared
            .with(|st| st.revoked.push(access_key_id.to_owned()));
    }

    /// The emulator's clock runs `skew` ahead of the host's: requests signed now look old and
    /// get 403 "Signature expired: …".
    pub fn set_clock_skew(&self, skew: Duration) {
        self.shared.set_skew_ms(skew.as_millis() as i64);
    }

    /// The emulator's clock runs `skew` behind: requests get 403 "Signature not yet current: …".
    pub fn set_clock_behind(&self, skew: Duration) {
        self.shared.set_skew_ms(-(skew.as_millis() as i64));
    }

    pub fn clear_clock_skew(&self) {
        self.shared.set_skew_ms(0);
    }

    /// The emulator's current wall clock (what it puts in `Date`).
    pub fn now(&self) -> SystemTime {
        self.shared.now()
    }

    /// Outage: closes the listening socket (connections are refused) and drops every open
    /// connection without a close frame. Channels, stats and stored messages survive.
    pub async fn stop(&self) {
        let accept = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await;
        }
        let tasks = self.shared.with(|st| std::mem::take(&mut st.tasks));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Listens again on the same port after [`stop`](Self::stop).
    pub async fn restart(&self) -> Result<(), EmulatorError> {
        let port = self.shared.port;
        let listener = server::listen(port)
            .await
            .map_err(|source| EmulatorError::Bind { port, source })?;
        let accept = server::spawn_accept_loop(self.shared.clone(), listener);
        if let Some(old) = self
            .accept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(accept)
        {
            old.abort();
        }
        Ok(())
    }

    /// `stop()`, wait `down_for`, `restart()`: a service outage of known length. Borrow-only,
    /// so it can run in `tokio::join!` with the rest of a test.
    pub async fn outage(&self, down_for: Duration) -> Result<(), EmulatorError> {
        self.stop().await;
        tokio::time::sleep(down_for).await;
        self.restart().await
    }

    /// A presigned connect URL for `name` (master when `client_id` is `None`), signed now with
    /// [`credentials`](Self::credentials), valid 300 s.
    pub fn presigned_url(
        &self,
        name: &str,
        client_id: Option<&str>,
    ) -> Result<String, ClientError> {
        let info = self
            .channel(name)
            .ok_or_else(|| ClientError::NoSuchChannel(name.to_owned()))?;
        Ok(presigned_connect_url(
            &self.signaling_ws_url(),
            &info.arn,
            client_id,
            &self.credentials(),
            self.region(),
            SystemTime::now(),
            300,
        )?)
    }

    /// ConnectAsViewer with a properly presigned URL.
    pub async fn connect_viewer(
        &self,
        name: &str,
        client_id: &str,
    ) -> Result<SignalingClient, ClientError> {
        let url = self.presigned_url(name, Some(client_id))?;
        SignalingClient::connect(&url, Some(client_id)).await
    }

    /// ConnectAsMaster with a properly presigned URL (for tests of the emulator itself or of
    /// a viewer-side component).
    pub async fn connect_master(&self, name: &str) -> Result<SignalingClient, ClientError> {
        let url = self.presigned_url(name, None)?;
        SignalingClient::connect(&url, None).await
    }

    /// GetIceServerConfig for `name` as the C SDK calls it (signed, `"Service":"TURN"`, with
    /// `ClientId` when given). With [`EmulatorConfig::turn_secret`] set, the credentials of
    /// every entry are accepted by a coturn sharing that secret until they expire.
    pub async fn get_ice_server_config(
        &self,
        name: &str,
        client_id: Option<&str>,
    ) -> Result<Vec<IceServerEntry>, ClientError> {
        let info = self
            .channel(name)
            .ok_or_else(|| ClientError::NoSuchChannel(name.to_owned()))?;
        get_ice_server_config_raw(
            &self.channel_https_url(),
            &info.arn,
            client_id,
            &self.credentials(),
            self.region(),
        )
        .await
    }

    /// SendAlexaOfferToMaster as the skill Lambda does it: wraps `sdp` as
    /// `{"type":"offer","sdp":…}`, base64, signs, POSTs, and returns the `sdp` of the master's
    /// answer (or the decoded answer itself if it is not JSON).
    pub async fn send_alexa_offer(
        &self,
        name: &str,
        sender_client_id: &str,
        sdp: &str,
    ) -> Result<String, ClientError> {
        let info = self
            .channel(name)
            .ok_or_else(|| ClientError::NoSuchChannel(name.to_owned()))?;
        let answer = send_alexa_offer_raw(
            &self.channel_https_url(),
            &info.arn,
            sender_client_id,
            &sdp_payload("offer", sdp),
            &self.credentials(),
            self.region(),
        )
        .await?;
        let envelope = Envelope {
            raw: String::new(),
            message_type: None,
            sender_client_id: None,
            payload: client::decode_payload(&answer),
            message_payload: Some(answer.clone()),
            status_response: None,
        };
        envelope
            .sdp()
            .ok_or(ClientError::BadResponse(format!("answer payload {answer}")))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            accept.abort();
        }
        for task in self.shared.with(|st| std::mem::take(&mut st.tasks)) {
            task.abort();
        }
    }
}
