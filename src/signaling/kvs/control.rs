//! The three REST calls a master needs, through the AWS SDK, with errors reduced to what the
//! connection policy and the operator need: HTTP status, error type, message and the response
//! `Date` (clock-skew correction).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    self as cred_provider, ProvideCredentials, SharedCredentialsProvider,
};
use aws_sdk_kinesisvideo::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_kinesisvideo::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesisvideo::error::ProvideErrorMetadata;
use aws_sdk_kinesisvideo::types::{
    ChannelProtocol, ChannelRole, ChannelType, SingleMasterChannelEndpointConfiguration, Status,
};
use aws_sdk_kinesisvideosignaling::types::Service;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use tokio::sync::Mutex;

use super::KvsOptions;
use super::arn::{BadChannelArn, ChannelArn};
use super::ice_refresh::TurnServer;
use super::iot::{IotCredentialsProvider, IotError};
use super::machine::{Endpoints, Failure};

/// Channel named by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRef {
    Name(String),
    Arn(ChannelArn),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no channel configured (set a channel name or ARN)")]
    NoChannel,
    #[error("kvs.channel_arn: {0}")]
    BadChannelArn(BadChannelArn),
    #[error("no AWS region configured and none found in the environment/profile")]
    NoRegion,
    #[error("no AWS credentials: {0}")]
    NoCredentials(String),
    #[error(transparent)]
    Iot(#[from] IotError),
    #[error("{op}: HTTP {status}{}{}", .error_type.as_deref().map(|t| format!(" {t}")).unwrap_or_default(), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Service {
        op: &'static str,
        status: u16,
        error_type: Option<String>,
        message: Option<String>,
        /// The response's `Date` header.
        date: Option<SystemTime>,
    },
    #[error("{op}: timed out")]
    Timeout { op: &'static str },
    #[error("{op}: network error: {detail}")]
    Network { op: &'static str, detail: String },
    #[error("{op}: unexpected response: {detail}")]
    BadResponse { op: &'static str, detail: String },
    #[error("channel {0} is being deleted")]
    ChannelDeleting(String),
}

impl ControlError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ControlError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Seconds the local clock is behind (+) or ahead (−) of the service, if this error is a
    /// signature time failure.
    pub fn clock_skew(&self, local: SystemTime) -> Option<i64> {
        match self.failure(local) {
            Failure::ClockSkew {
                server_date,
                local_date,
            } => Some(super::machine::offset_ms(server_date, local_date) / 1000),
            _ => None,
        }
    }

    /// What the connection policy makes of this error; `local` is our wall clock at the response.
    pub fn failure(&self, local: SystemTime) -> Failure {
        match self {
            ControlError::Service {
                status,
                error_type,
                message,
                date,
                ..
            } => classify(
                *status,
                error_type.as_deref(),
                message.as_deref().unwrap_or(""),
                *date,
                local,
            ),
            ControlError::Timeout { .. } => Failure::Timeout,
            ControlError::NoCredentials(_) => Failure::Denied,
            ControlError::BadResponse { .. } => Failure::Server,
            _ => Failure::Other,
        }
    }
}

/// Maps an HTTP error (REST call or WebSocket upgrade) onto the policy's failure kinds.
pub fn classify(
    status: u16,
    error_type: Option<&str>,
    message: &str,
    date: Option<SystemTime>,
    local: SystemTime,
) -> Failure {
    let et = error_type.unwrap_or("");
    match status {
        401 | 403 => {
            if is_signature_time_error(message)
                && let Some(server_date) = date
            {
                Failure::ClockSkew {
                    server_date,
                    local_date: local,
                }
            } else {
                Failure::Denied
            }
        }
        404 => Failure::NotFound,
        429 => Failure::Throttled,
        400 if et.contains("ClientLimitExceeded") || et.contains("Throttl") => Failure::Throttled,
        400..=499 => Failure::BadRequest,
        500..=599 => Failure::Server,
        _ => Failure::Other,
    }
}

/// The two texts SigV4 uses when the signing time is outside the ±5 min window.
pub fn is_signature_time_error(message: &str) -> bool {
    message.contains("Signature expired") || message.contains("Signature not yet current")
}

/// Remembers the `Date` of the last REST response. The SDK corrects its own signing for skew,
/// but the WebSocket presign is ours: this is how the connection machine learns the service
/// clock before a handshake fails (the C SDK compares every response's `Date` the same way).
#[derive(Debug, Clone, Default)]
struct ServerClock(Arc<std::sync::Mutex<Option<(SystemTime, SystemTime)>>>);

impl Intercept for ServerClock {
    fn name(&self) -> &'static str {
        "camgate-server-clock"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| httpdate::parse_http_date(d).ok());
        if let Some(d) = date {
            let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
            *g = Some((d, SystemTime::now()));
        }
        Ok(())
    }
}

/// Credentials are reused until this long before they expire.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);

/// The one cache of AWS credentials, shared by the SDK calls (whose own identity cache is
/// turned off) and the WebSocket presign, so that one [`CredentialCache::invalidate`] after a
/// 403 makes every later request fetch fresh credentials — from the IoT endpoint too, whose
/// provider keeps a cache of its own.
#[derive(Debug, Clone)]
struct CredentialCache {
    provider: SharedCredentialsProvider,
    iot: Option<IotCredentialsProvider>,
    cached: Arc<Mutex<Option<Credentials>>>,
}

impl CredentialCache {
    async fn get(&self) -> cred_provider::Result {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.expiry()
                .is_none_or(|e| SystemTime::now() + CREDENTIALS_MARGIN < e)
        {
            return Ok(c.clone());
        }
        let c = self.provider.provide_credentials().await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
        if let Some(iot) = &self.iot {
            iot.invalidate().await;
        }
    }
}

impl ProvideCredentials for CredentialCache {
    fn provide_credentials<'a>(&'a self) -> cred_provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        cred_provider::future::ProvideCredentials::new(self.get())
    }
}

/// Control-plane and HTTPS-signaling client for one channel.
#[derive(Debug)]
pub struct ControlPlane {
    sdk: SdkConfig,
    kv: aws_sdk_kinesisvideo::Client,
    region: String,
    channel: ChannelRef,
    create: bool,
    client_id: String,
    creds: CredentialCache,
    clock: ServerClock,
    /// Plain http:// channel endpoints are acceptable (an emulator).
    insecure_ok: bool,
    /// The signaling-API client of the current HTTPS endpoint, reused across calls: the SDK
    /// keeps the clock skew it learns per client, so a new client for every call would sign
    /// each first attempt with the wrong clock on a skewed device (refused, then retried after
    /// the SDK's backoff of up to a second).
    signaling: std::sync::Mutex<Option<(String, aws_sdk_kinesisvideosignaling::Client)>>,
}

impl ControlPlane {
    /// Resolves region and credentials provider (no network I/O except what the provider chain
    /// does to find a region).
    pub async fn new(opts: &KvsOptions) -> Result<Self, ControlError> {
        super::install_crypto_provider();
        let channel = match (&opts.channel_arn, &opts.channel_name) {
            (Some(arn), _) if !arn.is_empty() => {
                ChannelRef::Arn(ChannelArn::parse(arn).map_err(ControlError::BadChannelArn)?)
            }
            (_, Some(name)) if !name.is_empty() => ChannelRef::Name(name.clone()),
            _ => return Err(ControlError::NoChannel),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(opts.connect_timeout)
                .operation_attempt_timeout(opts.api_timeout)
                .operation_timeout(opts.api_timeout * 2)
                .build(),
        );
        // The channel's region wins: signing scope and hosts must match it.
        let region = match &channel {
            ChannelRef::Arn(arn) => Some(arn.region().to_owned()),
            ChannelRef::Name(_) => None,
        }
        .or_else(|| opts.region.clone());
        if let Some(r) = &region {
            loader = loader.region(Region::new(r.clone()));
        }
        let insecure_ok = opts.allows_plaintext();
        let mut iot_provider = None;
        if let Some(c) = &opts.credentials {
            loader = loader.credentials_provider(c.clone());
        } else if let Some(iot) = &opts.iot {
            let p = IotCredentialsProvider::new(iot, insecure_ok)?;
            iot_provider = Some(p.clone());
            loader = loader.credentials_provider(p);
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_owned())
            .ok_or(ControlError::NoRegion)?;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| ControlError::NoCredentials("no credentials provider found".into()))?;
        let creds = CredentialCache {
            provider,
            iot: iot_provider,
            cached: Arc::new(Mutex::new(None)),
        };
        // Our cache replaces the SDK's: the SDK's cannot be told that the service refused
        // what it holds, and would keep signing with it until its expiry.
        let sdk = sdk
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(creds.clone()))
            .identity_cache(IdentityCache::no_cache())
            .build();
        let clock = ServerClock::default();
        let mut kv_conf =
            aws_sdk_kinesisvideo::config::Builder::from(&sdk).interceptor(clock.clone());
        if let Some(url) = &opts.endpoint_url {
            kv_conf = kv_conf.endpoint_url(url);
        }
        let kv = aws_sdk_kinesisvideo::Client::from_conf(kv_conf.build());
        Ok(ControlPlane {
            sdk,
            kv,
            region,
            channel,
            create: opts.create_channel,
            client_id: opts.client_id.clone(),
            creds,
            clock,
            insecure_ok,
            signaling: std::sync::Mutex::new(None),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn channel(&self) -> &ChannelRef {
        &self.channel
    }

    /// `(server Date, local time)` of the most recent REST response.
    pub fn last_server_clock(&self) -> Option<(SystemTime, SystemTime)> {
        *self.clock.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget every cached credential (after the service refused them), the IoT provider's
    /// included: the next request, SDK call or presign, asks the provider again.
    pub async fn invalidate_credentials(&self) {
        self.creds.invalidate().await;
    }

    /// Current credentials for presigning, cached until 5 min before they expire (the same
    /// cache the SDK calls use).
    pub async fn credentials(&self) -> Result<Credentials, ControlError> {
        self.creds
            .get()
            .await
            .map_err(|e| ControlError::NoCredentials(error_chain(&e)))
    }

    /// DescribeSignalingChannel; on 404 creates the channel if allowed. Returns the ARN.
    pub async fn describe(&self) -> Result<ChannelArn, ControlError> {
        const OP: &str = "DescribeSignalingChannel";
        let req = self.kv.describe_signaling_channel();
        let req = match &self.channel {
            ChannelRef::Arn(a) => req.channel_arn(a.as_str()),
            ChannelRef::Name(n) => req.channel_name(n),
        };
        match req.send().await {
            Ok(out) => {
                let info = out
                    .channel_info()
                    .ok_or_else(|| ControlError::BadResponse {
                        op: OP,
                        detail: "no ChannelInfo".into(),
                    })?;
                let arn = info.channel_arn().unwrap_or_default().to_owned();
                if arn.is_empty() {
                    return Err(ControlError::BadResponse {
                        op: OP,
                        detail: "no ChannelARN".into(),
                    });
                }
                if info.channel_status() == Some(&Status::Deleting) {
                    return Err(ControlError::ChannelDeleting(arn));
                }
                answered_arn(OP, &arn)
            }
            Err(e) => {
                let err = map_sdk_error(OP, e);
                match (&self.channel, err.status()) {
                    (ChannelRef::Name(name), Some(404)) if self.create => self.create(name).await,
                    _ => Err(err),
                }
            }
        }
    }

    async fn create(&self, name: &str) -> Result<ChannelArn, ControlError> {
        const OP: &str = "CreateSignalingChannel";
        tracing::info!(channel = name, "KVS channel not found; creating it");
        let out = self
            .kv
            .create_signaling_channel()
            .channel_name(name)
            .channel_type(ChannelType::SingleMaster)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        let arn = out.channel_arn().filter(|a| !a.is_empty()).ok_or_else(|| {
            ControlError::BadResponse {
                op: OP,
                detail: "no ChannelARN".into(),
            }
        })?;
        answered_arn(OP, arn)
    }

    /// GetSignalingChannelEndpoint(MASTER, [WSS, HTTPS]).
    pub async fn endpoints(&self, channel_arn: &ChannelArn) -> Result<Endpoints, ControlError> {
        const OP: &str = "GetSignalingChannelEndpoint";
        let out = self
            .kv
            .get_signaling_channel_endpoint()
            .channel_arn(channel_arn.as_str())
            .single_master_channel_endpoint_configuration(
                SingleMasterChannelEndpointConfiguration::builder()
                    .protocols(ChannelProtocol::Wss)
                    .protocols(ChannelProtocol::Https)
                    .role(ChannelRole::Master)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        let mut wss = None;
        let mut https = None;
        for item in out.resource_endpoint_list() {
            let (Some(p), Some(url)) = (item.protocol(), item.resource_endpoint()) else {
                continue;
            };
            if p.as_str().eq_ignore_ascii_case("WSS") {
                wss = Some(url.to_owned());
            } else if p.as_str().eq_ignore_ascii_case("HTTPS") {
                https = Some(url.to_owned());
            }
        }
        match (wss, https) {
            (Some(wss), Some(https)) => Ok(Endpoints { wss, https }),
            _ => Err(ControlError::BadResponse {
                op: OP,
                detail: "WSS or HTTPS endpoint missing".into(),
            }),
        }
    }

    /// GetIceServerConfig on the channel's HTTPS endpoint.
    pub async fn ice_config(
        &self,
        https_endpoint: &str,
        channel_arn: &ChannelArn,
    ) -> Result<Vec<TurnServer>, ControlError> {
        const OP: &str = "GetIceServerConfig";
        super::presign::check_scheme(https_endpoint, self.insecure_ok).map_err(|e| {
            ControlError::BadResponse {
                op: OP,
                detail: e.to_string(),
            }
        })?;
        let client = self.signaling_client(https_endpoint);
        let out = client
            .get_ice_server_config()
            .channel_arn(channel_arn.as_str())
            .client_id(&self.client_id)
            .service(Service::Turn)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        Ok(out
            .ice_server_list()
            .iter()
            .filter(|s| !s.uris().is_empty())
            .map(|s| TurnServer {
                uris: s.uris().to_vec(),
                username: s.username().unwrap_or_default().to_owned(),
                password: s.password().unwrap_or_default().to_owned(),
                ttl: Duration::from_secs(s.ttl().unwrap_or(300).max(0) as u64),
            })
            .collect())
    }
}

impl ControlPlane {
    /// The signaling-API client for `https_endpoint`, made once per endpoint.
    fn signaling_client(&self, https_endpoint: &str) -> aws_sdk_kinesisvideosignaling::Client {
        let mut g = self.signaling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((endpoint, client)) = g.as_ref()
            && endpoint == https_endpoint
        {
            return client.clone();
        }
        let conf = aws_sdk_kinesisvideosignaling::config::Builder::from(&self.sdk)
            .endpoint_url(https_endpoint)
            .interceptor(self.clock.clone())
            .build();
        let client = aws_sdk_kinesisvideosignaling::Client::from_conf(conf);
        *g = Some((https_endpoint.to_owned(), client.clone()));
        client
    }
}

/// The ARN in an API answer, parsed where it enters: one that is not a signaling channel ARN
/// is a bad response, as a missing one is.
fn answered_arn(op: &'static str, arn: &str) -> Result<ChannelArn, ControlError> {
    ChannelArn::parse(arn).map_err(|e| ControlError::BadResponse {
        op,
        detail: format!("ChannelARN: {e}"),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

fn map_sdk_error<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> ControlError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => return ControlError::Timeout { op },
        SdkError::DispatchFailure(d) if d.is_timeout() => return ControlError::Timeout { op },
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
            let detail = error_chain(&err);
            if detail.to_ascii_lowercase().contains("credentials") {
                return ControlError::NoCredentials(detail);
            }
            return ControlError::Network { op, detail };
        }
        _ => {}
    }
    let Some(raw) = err.raw_response() else {
        return ControlError::Network {
            op,
            detail: error_chain(&err),
        };
    };
    let status = raw.status().as_u16();
    let date = raw
        .headers()
        .get("date")
        .and_then(|d| httpdate::parse_http_date(d).ok());
    let body = raw
        .body()
        .bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let (error_type, mut message) = match err.as_service_error() {
        Some(se) => (
            se.code().map(str::to_owned),
            se.message().map(str::to_owned),
        ),
        None => (None, None),
    };
    // Signature failures may come back in a shape the SDK's parser does not know; keep the
    // raw text so they can still be recognised.
    if message.as_deref().is_none_or(str::is_empty)
        && let Some(b) = body
    {
        message = Some(b.chars().take(300).collect());
    }
    ControlError::Service {
        op,
        status,
        error_type,
        message,
        date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_matches_the_policy_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = now + Duration::from_secs(900);
        let msg = "Signature expired: 20231107T044734Z is now earlier than 20231107T045305Z (20231107T045805Z - 5 min.)";
        assert_eq!(
            classify(403, None, msg, Some(later), now),
            Failure::ClockSkew {
                server_date: later,
                local_date: now
            }
        );
        assert_eq!(
            classify(403, None, "Signature not yet current: x", Some(now), now),
            Failure::ClockSkew {
                server_date: now,
                local_date: now
            }
        );
        // Without a Date header there is nothing to correct with.
        assert_eq!(classify(403, None, msg, None, now), Failure::Denied);
        assert_eq!(
            classify(403, Some("AccessDeniedException"), "denied", Some(now), now),
            Failure::Denied
        );
        assert_eq!(classify(404, None, "", None, now), Failure::NotFound);
        assert_eq!(
            classify(400, Some("ClientLimitExceededException"), "", None, now),
            Failure::Throttled
        );
        assert_eq!(
            classify(400, Some("InvalidArgumentException"), "", None, now),
            Failure::BadRequest
        );
        assert_eq!(classify(503, None, "", None, now), Failure::Server);
    }

    #[test]
    fn service_error_reports_skew_in_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = ControlError::Service {
            op: "DescribeSignalingChannel",
            status: 403,
            error_type: None,
            message: Some("Signature not yet current: ...".into()),
            date: Some(now - Duration::from_secs(420)),
        };
        assert_eq!(e.clock_skew(now), Some(-420));
        assert!(e.to_string().contains("HTTP 403"), "{e}");
    }
}
