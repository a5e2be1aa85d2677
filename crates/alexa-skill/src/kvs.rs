//! The two (cold: three) KVS calls of an `InitiateSessionWithOffer`: DescribeSignalingChannel
//! (only for a channel given by name), GetSignalingChannelEndpoint (VIEWER, HTTPS) and
//! SendAlexaOfferToMaster, all bounded by the directive's deadline.
//!
//! The ARN and the channel's HTTPS endpoint are cached for the life of the Lambda execution
//! environment (warm invocations skip straight to SendAlexaOfferToMaster), and dropped when a
//! call on them fails in a way a stale entry could explain.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kinesisvideo::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideo::types::{
    ChannelProtocol, ChannelRole, SingleMasterChannelEndpointConfiguration,
};
use aws_smithy_types::retry::RetryConfig;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::cameras::{Camera, ChannelArn, ChannelRef};
use crate::skill::{OfferError, SenderClientId};

/// A resolved channel: what warm invocations reuse.
#[derive(Clone)]
struct Resolved {
    arn: ChannelArn,
    /// A signaling client bound to the channel's HTTPS endpoint (VIEWER role).
    signaling: aws_sdk_kinesisvideosignaling::Client,
}

/// How long each part of an offer took (for the log line and the measurements).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// DescribeSignalingChannel + GetSignalingChannelEndpoint (zero when cached).
    pub resolve: Duration,
    /// Whether the channel came from the cache.
    pub cached: bool,
    /// SendAlexaOfferToMaster: KVS delivering the offer and camgate answering it.
    pub send: Duration,
}

pub struct Kvs {
    /// Region and credentials from the standard AWS environment.
    sdk: SdkConfig,
    /// (region, channel) → ARN and endpoint, across warm invocations.
    cache: Mutex<HashMap<(Option<String>, ChannelRef), Resolved>>,
}

impl Kvs {
    /// Loads the standard AWS configuration (`AWS_REGION`, credentials, endpoint overrides).
    pub async fn from_env() -> Result<Kvs, String> {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        if sdk.region().is_none() {
            return Err("AWS_REGION is not set (Lambda sets it; set it when testing)".into());
        }
        Ok(Kvs {
            sdk,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Sends the offer to the channel's master and returns its `Answer` (still encoded), or
    /// why not, by `deadline` at the latest.
    pub async fn send_offer(
        &self,
        camera: &Camera,
        sender: &SenderClientId,
        payload: &str,
        deadline: Instant,
    ) -> (Result<String, OfferError>, Timings) {
        let mut timings = Timings::default();
        let started = Instant::now();
        let channel = &camera.channel;
        let key = (camera.region.clone(), channel.clone());
        let resolved = match tokio::time::timeout_at(deadline, self.resolve(&key)).await {
            Ok(Ok((r, cached))) => {
                timings.cached = cached;
                r
            }
            Ok(Err(e)) => return (Err(e), timings),
            Err(_) => {
                return (
                    Err(OfferError::Other(format!(
                        "KVS did not answer DescribeSignalingChannel/GetSignalingChannelEndpoint for {channel} within {:?}",
                        started.elapsed()
                    ))),
                    timings,
                );
            }
        };
        timings.resolve = started.elapsed();

        let sent = Instant::now();
        // No SDK retries: a retried offer would reach the master twice, and the deadline
        // leaves no room for a second attempt anyway.
        let call = resolved
            .signaling
            .send_alexa_offer_to_master()
            .channel_arn(resolved.arn.as_str())
            .sender_client_id(sender.as_str())
            .message_payload(payload)
            .customize()
            .config_override(
                aws_sdk_kinesisvideosignaling::config::Builder::default()
                    .retry_config(RetryConfig::disabled()),
            )
            .send();
        let result = tokio::time::timeout_at(deadline, call).await;
        timings.send = sent.elapsed();
        let outcome = match result {
            Err(_) => Err(OfferError::NoAnswer(started.elapsed())),
            Ok(Ok(out)) => Ok(out.answer().unwrap_or_default().to_owned()),
            Ok(Err(e)) => {
                let err = map_send_error(e, started.elapsed());
                if matches!(err, OfferError::ChannelNotFound(_) | OfferError::Other(_)) {
                    // The channel may have been recreated or its endpoint moved.
                    self.cache.lock().await.remove(&key);
                }
                Err(err)
            }
        };
        (outcome, timings)
    }

    /// The channel's ARN and HTTPS endpoint, from the cache or from KVS.
    async fn resolve(
        &self,
        key: &(Option<String>, ChannelRef),
    ) -> Result<(Resolved, bool), OfferError> {
        if let Some(r) = self.cache.lock().await.get(key) {
            return Ok((r.clone(), true));
        }
        let (region, channel) = key;
        // The control plane of the channel's region (honours `AWS_ENDPOINT_URL_KINESIS_VIDEO`).
        let mut conf = aws_sdk_kinesisvideo::config::Builder::from(&self.sdk);
        if let Some(r) = region {
            conf = conf.region(aws_config::Region::new(r.clone()));
        }
        let control = aws_sdk_kinesisvideo::Client::from_conf(conf.build());
        let arn = match channel {
            ChannelRef::Arn(a) => a.clone(),
            ChannelRef::Name(name) => {
                let out = control
                    .describe_signaling_channel()
                    .channel_name(name)
                    .send()
                    .await
                    .map_err(|e| map_control_error("DescribeSignalingChannel", channel, e))?;
                let arn = out
                    .channel_info()
                    .and_then(|i| i.channel_arn())
                    .unwrap_or_default();
                ChannelArn::parse(arn).map_err(|p| {
                    OfferError::Other(format!("DescribeSignalingChannel returned {p}"))
                })?
            }
        };
        let out = control
            .get_signaling_channel_endpoint()
            .channel_arn(arn.as_str())
            .single_master_channel_endpoint_configuration(
                SingleMasterChannelEndpointConfiguration::builder()
                    .protocols(ChannelProtocol::Https)
                    .role(ChannelRole::Viewer)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_control_error("GetSignalingChannelEndpoint", channel, e))?;
        let endpoint = out
            .resource_endpoint_list()
            .iter()
            .find(|e| {
                e.protocol()
                    .is_some_and(|p| p.as_str().eq_ignore_ascii_case("HTTPS"))
            })
            .and_then(|e| e.resource_endpoint())
            .ok_or_else(|| {
                OfferError::Other("GetSignalingChannelEndpoint returned no HTTPS endpoint".into())
            })?;
        let mut conf =
            aws_sdk_kinesisvideosignaling::config::Builder::from(&self.sdk).endpoint_url(endpoint);
        if let Some(r) = region {
            conf = conf.region(aws_config::Region::new(r.clone()));
        }
        let conf = conf.build();
        let resolved = Resolved {
            arn,
            signaling: aws_sdk_kinesisvideosignaling::Client::from_conf(conf),
        };
        tracing::info!(%channel, arn = %resolved.arn, endpoint, "channel resolved");
        self.cache
            .lock()
            .await
            .insert(key.clone(), resolved.clone());
        Ok((resolved, false))
    }
}

/// The error text with its sources, without repeating what the outer text already says.
fn chain(e: &dyn std::error::Error) -> String {
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

/// The service's error code (`x-amzn-ErrorType`) and message; empty when the call never got
/// a service answer.
fn code_and_message<E, R>(e: &SdkError<E, R>) -> (&str, &str)
where
    E: ProvideErrorMetadata,
{
    let service = e.as_service_error();
    (
        service.and_then(|s| s.code()).unwrap_or(""),
        service.and_then(|s| s.message()).unwrap_or(""),
    )
}

fn map_control_error<E, R>(op: &str, channel: &ChannelRef, e: SdkError<E, R>) -> OfferError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = code_and_message(&e);
    match code {
        "ResourceNotFoundException" => OfferError::ChannelNotFound(format!("{channel}: {message}")),
        "ClientLimitExceededException" => OfferError::Throttled(format!("{op}: {message}")),
        "" => OfferError::Other(format!("{op}: {}", chain(&e))),
        _ => OfferError::Other(format!("{op}: {code}: {message}")),
    }
}

fn map_send_error<E, R>(e: SdkError<E, R>, waited: Duration) -> OfferError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    const OP: &str = "SendAlexaOfferToMaster";
    let (code, message) = code_and_message(&e);
    match code {
        "ClientLimitExceededException" => OfferError::Throttled(format!("{OP}: {message}")),
        "ResourceNotFoundException" => OfferError::ChannelNotFound(format!("{OP}: {message}")),
        // What the service does when no master answers is unverified (reference §1.6); an
        // API-Gateway-style integration timeout means the same as our own deadline.
        "GatewayTimeoutException" | "RequestTimeoutException" => OfferError::NoAnswer(waited),
        "" if matches!(e, SdkError::TimeoutError(_)) => OfferError::NoAnswer(waited),
        "" => OfferError::Other(format!("{OP}: {}", chain(&e))),
        _ => OfferError::Other(format!("{OP}: {code}: {message}")),
    }
}
