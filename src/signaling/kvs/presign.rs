//! SigV4 query-string presigning of the ConnectAsMaster WebSocket URL.
//!
//! KVS authenticates the WebSocket upgrade through the URL alone: `GET <wss endpoint>/?X-Amz-
//! ChannelARN=<arn>` signed for service `kinesisvideo` in the channel's region, with the session
//! token inside the canonical query (KVS rejects it otherwise). The master sends no ClientId.
//! The signing time includes the clock offset learned from the service, so a device with a wrong
//! clock still produces a URL the service accepts.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use url::Url;

use super::arn::ChannelArn;

/// KVS's SigV4 service name for every signaling call.
pub const SERVICE: &str = "kinesisvideo";
/// How long the presigned URL is valid; it only has to survive the handshake.
pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum PresignError {
    #[error("WebSocket endpoint {endpoint:?} is not a URL: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("SigV4 signing failed: {0}")]
    Sign(String),
    #[error(
        "refusing plain {scheme}:// for a credentialed endpoint ({endpoint}); only wss:// unless kvs.endpoint_url is an http:// URL (an emulator)"
    )]
    Plaintext { scheme: String, endpoint: String },
}

/// Credentials and presigned URLs travel only over TLS: `wss://` (and `https://`), or plain
/// `ws://`/`http://` when `insecure_ok` says the operator asked for it (`kvs.endpoint_url`
/// given as an `http://` URL, i.e. an emulator on loopback). Anything else is refused too.
pub fn check_scheme(endpoint: &str, insecure_ok: bool) -> Result<(), PresignError> {
    let scheme = endpoint
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "wss" | "https" => Ok(()),
        "ws" | "http" if insecure_ok => Ok(()),
        "ws" | "http" => Err(PresignError::Plaintext {
            scheme,
            endpoint: crate::redact::redact_url(endpoint),
        }),
        _ => Err(PresignError::BadEndpoint {
            endpoint: crate::redact::redact_url(endpoint),
            reason: "expected a wss:// URL".into(),
        }),
    }
}

/// What to presign.
#[derive(Debug, Clone)]
pub struct PresignRequest<'a> {
    /// The WSS endpoint exactly as GetSignalingChannelEndpoint returned it (`wss://…`, or `ws://…`
    /// from an emulator).
    pub endpoint: &'a str,
    /// Query parameters to sign, in addition to the SigV4 ones (`X-Amz-ChannelARN` for the master).
    pub params: &'a [(&'a str, &'a str)],
    pub region: &'a str,
    /// Wall-clock signing time (local clock + offset).
    pub time: SystemTime,
    pub expires: Duration,
}

/// The master's connect URL: `<endpoint>/?X-Amz-ChannelARN=<arn>&X-Amz-Algorithm=…&X-Amz-Signature=…`.
pub fn master_url(
    creds: &Credentials,
    endpoint: &str,
    channel_arn: &ChannelArn,
    region: &str,
    time: SystemTime,
) -> Result<Url, PresignError> {
    presign(
        creds,
        &PresignRequest {
            endpoint,
            params: &[("X-Amz-ChannelARN", channel_arn.as_str())],
            region,
            time,
            expires: DEFAULT_EXPIRES,
        },
    )
}

/// Signing time for a local wall clock `now` and a service clock offset.
pub fn signing_time(now: SystemTime, clock_offset_ms: i64) -> SystemTime {
    let d = Duration::from_millis(clock_offset_ms.unsigned_abs());
    if clock_offset_ms >= 0 {
        now.checked_add(d).unwrap_or(now)
    } else {
        now.checked_sub(d).unwrap_or(now)
    }
}

pub fn presign(creds: &Credentials, req: &PresignRequest<'_>) -> Result<Url, PresignError> {
    let bad = |reason: String| PresignError::BadEndpoint {
        endpoint: req.endpoint.to_owned(),
        reason,
    };
    let mut url = Url::parse(req.endpoint).map_err(|e| bad(e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    // The endpoint has no path; the canonical URI is "/". Any query it might carry is replaced.
    if url.path().is_empty() {
        url.set_path("/");
    }
    url.set_query(None);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in req.params {
            q.append_pair(k, v);
        }
    }

    let identity: Identity = creds.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(req.expires);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(req.region)
        .name(SERVICE)
        .time(req.time)
        .settings(settings)
        .build()
        .map_err(|e| PresignError::Sign(e.to_string()))?;
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| PresignError::Sign(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params.into())
        .map_err(|e| PresignError::Sign(e.to_string()))?
        .into_parts();
    let (_headers, extra) = instructions.into_parts();
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &extra {
            q.append_pair(k, v);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(token: Option<&str>) -> Url {
        let creds = Credentials::new(
            "AKIA4F7WJQR7FMMWMNXI",
            "FakeSecretKey",
            token.map(str::to_owned),
            None,
            "test",
        );
        presign(
            &creds,
            &PresignRequest {
                endpoint: "wss://kvs.awsamazon.com",
                params: &[("X-Amz-TestParam", "test-param-value")],
                region: "us-west-2",
                time: httpdate::parse_http_date("Sun, 01 Dec 2019 00:00:00 GMT").unwrap(),
                expires: Duration::from_secs(299),
            },
        )
        .unwrap()
    }

    fn param(url: &Url, name: &str) -> Option<String> {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    #[test]
    fn reference_vector_with_session_token() {
        let url = vector(Some("FakeSessionToken"));
        assert_eq!(
            param(&url, "X-Amz-Signature").as_deref(),
            Some("fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92")
        );
        assert_eq!(
            param(&url, "X-Amz-Security-Token").as_deref(),
            Some("FakeSessionToken")
        );
        assert_eq!(
            param(&url, "X-Amz-Credential").as_deref(),
            Some("AKIA4F7WJQR7FMMWMNXI/20191201/us-west-2/kinesisvideo/aws4_request")
        );
        assert_eq!(param(&url, "X-Amz-Expires").as_deref(), Some("299"));
        assert_eq!(param(&url, "X-Amz-SignedHeaders").as_deref(), Some("host"));
        assert_eq!(url.path(), "/");
        assert_eq!(url.scheme(), "wss");
    }

    #[test]
    fn reference_vector_without_session_token() {
        let url = vector(None);
        assert_eq!(
            param(&url, "X-Amz-Signature").as_deref(),
            Some("be1e78950d956a8a9a1997417099ddbd7455619f3d08c4ad20e1e272179ca695")
        );
        assert_eq!(param(&url, "X-Amz-Security-Token"), None);
    }

    #[test]
    fn master_url_carries_arn_and_no_client_id_and_keeps_scheme() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let arn = "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/cam/1700000000000";
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let channel = ChannelArn::parse(arn).unwrap();
        let url = master_url(&creds, "ws://127.0.0.1:4567", &channel, "eu-west-1", t).unwrap();
        assert_eq!(url.scheme(), "ws");
        assert_eq!(url.port(), Some(4567));
        assert_eq!(param(&url, "X-Amz-ChannelARN").as_deref(), Some(arn));
        assert_eq!(param(&url, "X-Amz-ClientId"), None);
        assert_eq!(param(&url, "X-Amz-Expires").as_deref(), Some("300"));
        assert_eq!(
            param(&url, "X-Amz-Date").as_deref(),
            Some("20231114T221320Z")
        );
        // The raw query encodes the ARN's ':' and '/'.
        assert!(url.query().unwrap().contains("arn%3Aaws%3Akinesisvideo"));
    }

    #[test]
    fn signing_time_applies_offset_both_ways() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(signing_time(t, 1500), t + Duration::from_millis(1500));
        assert_eq!(signing_time(t, -1500), t - Duration::from_millis(1500));
        assert_eq!(signing_time(t, 0), t);
    }

    #[test]
    fn bad_endpoints_are_errors() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let t = SystemTime::UNIX_EPOCH;
        let arn =
            ChannelArn::parse("arn:aws:kinesisvideo:us-east-1:123456789012:channel/c/1").unwrap();
        for e in ["", "not a url", "wss://"] {
            assert!(
                matches!(
                    master_url(&creds, e, &arn, "us-east-1", t),
                    Err(PresignError::BadEndpoint { .. })
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn plain_ws_and_http_only_when_endpoint_url_says_so() {
        use crate::signaling::kvs::KvsOptions;
        let aws = KvsOptions::default();
        assert!(!aws.allows_plaintext());
        let https_override = KvsOptions {
            endpoint_url: Some("https://kinesisvideo-fips.us-east-1.amazonaws.com".into()),
            ..KvsOptions::default()
        };
        assert!(!https_override.allows_plaintext());
        let emulator = KvsOptions {
            endpoint_url: Some("HTTP://127.0.0.1:4566".into()),
            ..KvsOptions::default()
        };
        assert!(emulator.allows_plaintext());

        for insecure_ok in [false, true] {
            assert!(
                check_scheme(
                    "wss://m-1.kinesisvideo.eu-west-1.amazonaws.com",
                    insecure_ok
                )
                .is_ok()
            );
            assert!(
                check_scheme(
                    "https://r-1.kinesisvideo.eu-west-1.amazonaws.com",
                    insecure_ok
                )
                .is_ok()
            );
        }
        for plain in [
            "ws://127.0.0.1:9/",
            "http://127.0.0.1:9",
            "WS://host/?X-Amz-Signature=s3cr3t",
        ] {
            let e = check_scheme(plain, false).unwrap_err();
            assert!(matches!(e, PresignError::Plaintext { .. }), "{plain}: {e}");
            assert!(e.to_string().contains("kvs.endpoint_url"), "{e}");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
            assert!(check_scheme(plain, true).is_ok(), "{plain}");
        }
        assert!(matches!(
            check_scheme("ftp://host/", true),
            Err(PresignError::BadEndpoint { .. })
        ));
    }
}
