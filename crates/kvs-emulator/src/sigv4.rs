//! AWS Signature Version 4: signing (for the test clients) and verification (for the emulator).
//!
//! Written from the SigV4 specification, independently of camgate's own signer, so a bug in one
//! cannot hide the same bug in the other. Everything here is pure: the caller passes the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The only algorithm KVS speaks.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Signing name of every KVS API, control plane and signaling alike.
pub const SERVICE: &str = "kinesisvideo";
/// SHA-256 of the empty string: the payload hash of a presigned WebSocket URL.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// AWS accepts request timestamps this far from its own clock.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (SigV4 `UriEncode`).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Credentials used to sign a request.
#[derive(Debug, Clone, Copy)]
pub struct SigningKeyMaterial<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// SigV4 `UriEncode` of a query name or value.
pub fn uri_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Canonical URI of a request path: non-S3 services encode the (already encoded) path once more.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    utf8_percent_encode(raw_path, UNRESERVED_AND_SLASH).to_string()
}

/// Splits a raw query string into decoded `(name, value)` pairs.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(n), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    // `+` is not a space in SigV4 canonicalisation, but clients that form-encode send it for one.
    percent_decode_str(&s.replace('+', "%20"))
        .decode_utf8_lossy()
        .into_owned()
}

/// Canonical query string: pairs encoded, then sorted by name and value.
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (uri_encode(n), uri_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDDTHHMMSSZ` (the `X-Amz-Date` format).
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses `YYYYMMDDTHHMMSSZ`; `None` for anything else.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

// Howard Hinnant's civil-date algorithms (public domain), days relative to 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hex signature of `string_to_sign` with the key derived for `date8/region/service`.
pub fn signature(
    secret: &str,
    date8: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date8);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign))
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Presigns a KVS WebSocket connect URL the way the JS SDK does: signed header `host` only,
/// session token inside the canonical query, empty-payload hash, `X-Amz-Signature` last.
///
/// `endpoint` is `ws[s]://host[:port]` without a path; `params` are the channel parameters
/// (`X-Amz-ChannelARN`, optionally `X-Amz-ClientId`).
pub fn presign_url(
    endpoint: &str,
    params: &[(&str, &str)],
    creds: SigningKeyMaterial<'_>,
    region: &str,
    time: SystemTime,
    expires_secs: u64,
) -> Result<String, url::ParseError> {
    let url = url::Url::parse(endpoint)?;
    let host = host_header_value(&url);
    let date = amz_date(time);
    let scope = format!("{}/{region}/{SERVICE}/aws4_request", &date[..8]);
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    pairs.push(("X-Amz-Algorithm".into(), ALGORITHM.into()));
    pairs.push((
        "X-Amz-Credential".into(),
        format!("{}/{scope}", creds.access_key_id),
    ));
    pairs.push(("X-Amz-Date".into(), date.clone()));
    pairs.push(("X-Amz-Expires".into(), expires_secs.to_string()));
    pairs.push(("X-Amz-SignedHeaders".into(), "host".into()));
    if let Some(token) = creds.session_token {
        pairs.push(("X-Amz-Security-Token".into(), token.into()));
    }
    let query = canonical_query(&pairs);
    let canonical = format!("GET\n/\n{query}\nhost:{host}\n\nhost\n{EMPTY_SHA256}");
    let sig = signature(
        creds.secret_access_key,
        &date[..8],
        region,
        SERVICE,
        &string_to_sign(&date, &scope, &canonical),
    );
    let base = endpoint.trim_end_matches('/');
    Ok(format!("{base}/?{query}&X-Amz-Signature={sig}"))
}

/// Host header a client sends for `url`: the port only when it is not the scheme's default.
pub fn host_header_value(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// Headers that sign a JSON POST the way the C SDK does (`host;x-amz-date` signed, token unsigned).
pub fn sign_post(
    host: &str,
    path: &str,
    body: &[u8],
    creds: SigningKeyMaterial<'_>,
    region: &str,
    time: SystemTime,
) -> Vec<(String, String)> {
    let date = amz_date(time);
    let scope = format!("{}/{region}/{SERVICE}/aws4_request", &date[..8]);
    let canonical = format!(
        "POST\n{}\n\nhost:{host}\nx-amz-date:{date}\n\nhost;x-amz-date\n{}",
        canonical_uri(path),
        sha256_hex(body)
    );
    let sig = signature(
        creds.secret_access_key,
        &date[..8],
        region,
        SERVICE,
        &string_to_sign(&date, &scope, &canonical),
    );
    let mut headers = vec![
        ("x-amz-date".to_owned(), date),
        (
            "authorization".to_owned(),
            format!(
                "{ALGORITHM} Credential={}/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}",
                creds.access_key_id
            ),
        ),
    ];
    if let Some(token) = creds.session_token {
        headers.push(("x-amz-security-token".to_owned(), token.to_owned()));
    }
    headers
}

/// Why a signature was refused. `Display` is the message AWS puts in the 403 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error(
        "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters: {0}"
    )]
    Malformed(String),
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error("The security token included in the request is invalid.")]
    BadSessionToken,
    #[error("Credential should be scoped to a valid region, not '{0}'.")]
    WrongRegion(String),
    #[error("Credential should be scoped to correct service: 'kinesisvideo'.")]
    WrongService,
    #[error(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP"
    )]
    ScopeDateMismatch,
    #[error("Signature expired: {request} is now earlier than {earliest} ({now} - 5 min.)")]
    Expired {
        request: String,
        earliest: String,
        now: String,
    },
    #[error("Signature not yet current: {request} is still later than {latest} ({now} + 5 min.)")]
    NotYetCurrent {
        request: String,
        latest: String,
        now: String,
    },
    #[error("Signature expired: {request} is now earlier than {earliest} ({now} - {expires} sec.)")]
    PresignExpired {
        request: String,
        earliest: String,
        now: String,
        expires: u64,
    },
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    BadSignature,
}

impl VerifyError {
    /// The `x-amzn-ErrorType` AWS uses for this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            VerifyError::Missing => "MissingAuthenticationTokenException",
            VerifyError::Malformed(_) => "IncompleteSignatureException",
            VerifyError::UnknownAccessKey | VerifyError::BadSessionToken => {
                "UnrecognizedClientException"
            }
            _ => "InvalidSignatureException",
        }
    }
}

/// Secrets the verifier knows: access key id → (secret, session token the key requires).
pub trait CredentialLookup {
    fn lookup(&self, access_key_id: &str) -> Option<(&str, Option<&str>)>;
}

/// What an accepted signature proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
}

struct Scope<'a> {
    access_key_id: &'a str,
    date8: &'a str,
    region: &'a str,
    service: &'a str,
}

fn parse_credential(cred: &str) -> Result<Scope<'_>, VerifyError> {
    let parts: Vec<&str> = cred.split('/').collect();
    match parts.as_slice() {
        [akid, date8, region, service, "aws4_request"] => Ok(Scope {
            access_key_id: akid,
            date8,
            region,
            service,
        }),
        _ => Err(VerifyError::Malformed(format!("Credential={cred}"))),
    }
}

fn check_scope<'c>(
    scope: &Scope<'_>,
    amz: &str,
    region: &str,
    creds: &'c impl CredentialLookup,
    token: Option<&str>,
) -> Result<&'c str, VerifyError> {
    let (secret, required_token) = creds
        .lookup(scope.access_key_id)
        .ok_or(VerifyError::UnknownAccessKey)?;
    if let Some(required) = required_token
        && token != Some(required)
    {
        return Err(VerifyError::BadSessionToken);
    }
    if scope.service != SERVICE {
        return Err(VerifyError::WrongService);
    }
    if scope.region != region {
        return Err(VerifyError::WrongRegion(scope.region.to_owned()));
    }
    if !amz.starts_with(scope.date8) {
        return Err(VerifyError::ScopeDateMismatch);
    }
    Ok(secret)
}

fn check_window(request: SystemTime, amz: &str, now: SystemTime) -> Result<(), VerifyError> {
    if request + MAX_SKEW < now {
        return Err(VerifyError::Expired {
            request: amz.to_owned(),
            earliest: amz_date(now - MAX_SKEW),
            now: amz_date(now),
        });
    }
    if request > now + MAX_SKEW {
        return Err(VerifyError::NotYetCurrent {
            request: amz.to_owned(),
            latest: amz_date(now + MAX_SKEW),
            now: amz_date(now),
        });
    }
    Ok(())
}

fn canonical_headers(headers: &HeaderMap, signed: &str) -> String {
    let mut out = String::new();
    for name in signed.split(';') {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A request as the verifier needs it.
pub struct RequestToVerify<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Verifies `Authorization`-header SigV4 (REST calls), honouring whatever `SignedHeaders` lists.
/// The last step of both verifiers: sign the canonical request with the caller's secret and
/// compare with the signature it sent, in constant time.
fn check_signature(
    secret: &str,
    scope: &Scope<'_>,
    region: &str,
    amz: &str,
    credential: &str,
    canonical: &str,
    sig: &str,
) -> Result<Verified, VerifyError> {
    let credential_scope = &credential[scope.access_key_id.len() + 1..];
    let expected = signature(
        secret,
        scope.date8,
        region,
        SERVICE,
        &string_to_sign(amz, credential_scope, canonical),
    );
    if constant_time_eq(&expected, sig) {
        Ok(Verified {
            access_key_id: scope.access_key_id.to_owned(),
        })
    } else {
        Err(VerifyError::BadSignature)
    }
}

pub fn verify_header_auth(
    req: &RequestToVerify<'_>,
    creds: &impl CredentialLookup,
    region: &str,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(VerifyError::Missing)?;
    let rest = auth
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| VerifyError::Malformed(auth.to_owned()))?;
    let (mut credential, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => sig = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed), Some(sig)) = (credential, signed, sig) else {
        return Err(VerifyError::Malformed(auth.to_owned()));
    };
    let scope = parse_credential(credential)?;
    let amz = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| VerifyError::Malformed("missing X-Amz-Date".into()))?;
    let request_time =
        parse_amz_date(amz).ok_or_else(|| VerifyError::Malformed(format!("X-Amz-Date={amz}")))?;
    let token = req
        .headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    let secret = check_scope(&scope, amz, region, creds, token)?;
    check_window(request_time, amz, now)?;
    let payload_hash = match req
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(h) => h.to_owned(),
        None => sha256_hex(req.body),
    };
    let query = canonical_query(&parse_query(req.raw_query.unwrap_or("")));
    let canonical = format!(
        "{}\n{}\n{query}\n{}\n{signed}\n{payload_hash}",
        req.method,
        canonical_uri(req.path),
        canonical_headers(req.headers, signed)
    );
    check_signature(secret, &scope, region, amz, credential, &canonical, sig)
}

/// Verifies a presigned (query-string) SigV4 request, i.e. a WebSocket connect URL.
pub fn verify_query_auth(
    req: &RequestToVerify<'_>,
    creds: &impl CredentialLookup,
    region: &str,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let pairs = parse_query(req.raw_query.unwrap_or(""));
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if get("X-Amz-Signature").is_none() && get("X-Amz-Credential").is_none() {
        return Err(VerifyError::Missing);
    }
    let malformed = |what: &str| VerifyError::Malformed(format!("missing or bad {what}"));
    if get("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(malformed("X-Amz-Algorithm"));
    }
    let sig = get("X-Amz-Signature").ok_or_else(|| malformed("X-Amz-Signature"))?;
    let credential = get("X-Amz-Credential").ok_or_else(|| malformed("X-Amz-Credential"))?;
    let signed = get("X-Amz-SignedHeaders").ok_or_else(|| malformed("X-Amz-SignedHeaders"))?;
    let amz = get("X-Amz-Date").ok_or_else(|| malformed("X-Amz-Date"))?;
    let request_time = parse_amz_date(amz).ok_or_else(|| malformed("X-Amz-Date"))?;
    let expires: u64 = get("X-Amz-Expires")
        .and_then(|e| e.parse().ok())
        .filter(|e| (1..=604_800).contains(e))
        .ok_or_else(|| malformed("X-Amz-Expires"))?;
    let scope = parse_credential(credential)?;
    let secret = check_scope(&scope, amz, region, creds, get("X-Amz-Security-Token"))?;
    if request_time > now + MAX_SKEW {
        return Err(VerifyError::NotYetCurrent {
            request: amz.to_owned(),
            latest: amz_date(now + MAX_SKEW),
            now: amz_date(now),
        });
    }
    if request_time + Duration::from_secs(expires) < now {
        return Err(VerifyError::PresignExpired {
            request: amz.to_owned(),
            earliest: amz_date(now - Duration::from_secs(expires)),
            now: amz_date(now),
            expires,
        });
    }
    let unsigned: Vec<(String, String)> = pairs
        .iter()
        .filter(|(n, _)| n != "X-Amz-Signature")
        .cloned()
        .collect();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{signed}\n{EMPTY_SHA256}",
        req.method,
        canonical_uri(req.path),
        canonical_query(&unsigned),
        canonical_headers(req.headers, signed)
    );
    check_signature(secret, &scope, region, amz, credential, &canonical, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(&'static str, &'static str, Option<&'static str>);
    impl CredentialLookup for One {
        fn lookup(&self, akid: &str) -> Option<(&str, Option<&str>)> {
            (akid == self.0).then_some((self.1, self.2))
        }
    }

    fn vector_time() -> SystemTime {
        parse_amz_date("20191201T000000Z").unwrap()
    }

    fn vector_url(token: Option<&str>) -> String {
        presign_url(
            "wss://kvs.awsamazon.com",
            &[("X-Amz-TestParam", "test-param-value")],
            SigningKeyMaterial {
                access_key_id: "AKIA4F7WJQR7FMMWMNXI",
                secret_access_key: "FakeSecretKey",
                session_token: token,
            },
            "us-west-2",
            vector_time(),
            299,
        )
        .unwrap()
    }

    fn verify_url(url: &str, creds: &One, now: SystemTime) -> Result<Verified, VerifyError> {
        let parsed = url::Url::parse(url).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", host_header_value(&parsed).parse().unwrap());
        verify_query_auth(
            &RequestToVerify {
                method: "GET",
                path: parsed.path(),
                raw_query: parsed.query(),
                headers: &headers,
                body: b"",
            },
            creds,
            "us-west-2",
            now,
        )
    }

    #[test]
    fn js_sdk_presign_vector_with_and_without_token() {
        let with = vector_url(Some("FakeSessionToken"));
        assert!(with.ends_with(
            "X-Amz-Signature=fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92"
        ));
        assert!(with.starts_with(
            "wss://kvs.awsamazon.com/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299&X-Amz-Security-Token=FakeSessionToken&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value"
        ));
        let without = vector_url(None);
        assert!(without.ends_with(
            "X-Amz-Signature=be1e78950d956a8a9a1997417099ddbd7455619f3d08c4ad20e1e272179ca695"
        ));
    }

    #[test]
    fn verifier_accepts_the_vector_and_rejects_tampering() {
        let creds = One(
            "AKIA4F7WJQR7FMMWMNXI",
            "FakeSecretKey",
            Some("FakeSessionToken"),
        );
        let now = vector_time() + Duration::from_secs(60);
        let url = vector_url(Some("FakeSessionToken"));
        assert!(verify_url(&url, &creds, now).is_ok());
        let tampered = url.replace("test-param-value", "other-value");
        assert_eq!(
            verify_url(&tampered, &creds, now),
            Err(VerifyError::BadSignature)
        );
        // A key that needs a token refuses a URL signed without one.
        assert_eq!(
            verify_url(&vector_url(None), &creds, now),
            Err(VerifyError::BadSessionToken)
        );
        let wrong_secret = One("AKIA4F7WJQR7FMMWMNXI", "Other", Some("FakeSessionToken"));
        assert_eq!(
            verify_url(&url, &wrong_secret, now),
            Err(VerifyError::BadSignature)
        );
        let unknown = One("AKIAOTHER", "FakeSecretKey", None);
        assert_eq!(
            verify_url(&url, &unknown, now),
            Err(VerifyError::UnknownAccessKey)
        );
    }

    #[test]
    fn presign_expiry_and_future_dates_are_refused() {
        let creds = One("AKIA4F7WJQR7FMMWMNXI", "FakeSecretKey", None);
        let url = vector_url(None);
        let late = vector_time() + Duration::from_secs(300);
        let err = verify_url(&url, &creds, late).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Signature expired: 20191201T000000Z"),
            "{err}"
        );
        let early = vector_time() - Duration::from_secs(301);
        let err = verify_url(&url, &creds, early).unwrap_err();
        assert!(
            err.to_string().starts_with("Signature not yet current"),
            "{err}"
        );
    }

    #[test]
    fn header_auth_round_trip_and_skew_messages() {
        let creds = One("AKID", "SECRET", None);
        let t = parse_amz_date("20231107T044734Z").unwrap();
        let body = br#"{"ChannelName":"cam"}"#;
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:9".parse().unwrap());
        let signing = SigningKeyMaterial {
            access_key_id: "AKID",
            secret_access_key: "SECRET",
            session_token: None,
        };
        for (n, v) in sign_post(
            "127.0.0.1:9",
            "/describeSignalingChannel",
            body,
            signing,
            "us-west-2",
            t,
        ) {
            headers.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let req = RequestToVerify {
            method: "POST",
            path: "/describeSignalingChannel",
            raw_query: None,
            headers: &headers,
            body,
        };
        assert!(verify_header_auth(&req, &creds, "us-west-2", t).is_ok());
        let other_body = RequestToVerify { body: b"{}", ..req };
        assert_eq!(
            verify_header_auth(&other_body, &creds, "us-west-2", t),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify_header_auth(&req, &creds, "eu-west-1", t),
            Err(VerifyError::WrongRegion("us-west-2".into()))
        );
        let now = parse_amz_date("20231107T045805Z").unwrap();
        assert_eq!(
            verify_header_auth(&req, &creds, "us-west-2", now)
                .unwrap_err()
                .to_string(),
            "Signature expired: 20231107T044734Z is now earlier than 20231107T045305Z (20231107T045805Z - 5 min.)"
        );
        let before = parse_amz_date("20231107T043000Z").unwrap();
        assert!(
            verify_header_auth(&req, &creds, "us-west-2", before)
                .unwrap_err()
                .to_string()
                .starts_with("Signature not yet current: 20231107T044734Z is still later than")
        );
    }

    #[test]
    fn dates_round_trip() {
        for s in ["19700101T000000Z", "20000229T235959Z", "20391231T120000Z"] {
            assert_eq!(amz_date(parse_amz_date(s).unwrap()), s);
        }
        assert!(parse_amz_date("2019-12-01T00:00:00Z").is_none());
        assert!(parse_amz_date("20191301T000000Z").is_none());
    }
}
