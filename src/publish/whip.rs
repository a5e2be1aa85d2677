//! The WHIP exchange (RFC 9725) over HTTP: POST the offer, PATCH trickled candidates (RFC 8840
//! fragments, `If-Match` the resource's ETag), DELETE the resource. Parsing the server's headers (`Location`, `Link: rel="ice-server"`,
//! `Retry-After`, `ETag`, `Accept-Patch`) is pure and tested here; the requests are
//! `reqwest`'s.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::machine::{Cause, Failure};
use crate::session::IceServer;

/// The media type of a WHIP offer and answer.
pub const SDP: &str = "application/sdp";
/// The media type of a trickle PATCH (RFC 8840).
pub const TRICKLE: &str = "application/trickle-ice-sdpfrag";

/// A bearer token: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// What a 201 told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The answer SDP.
    pub answer: String,
    /// The absolute URL of the session resource (`Location`, resolved against the endpoint).
    pub resource: String,
    /// The resource's `ETag`, for `If-Match` on PATCH.
    pub etag: Option<String>,
    /// The server takes trickled candidates (`Accept-Patch` names the trickle type).
    pub trickle: bool,
    /// STUN/TURN servers from `Link: rel="ice-server"`.
    pub ice_servers: Vec<IceServer>,
}

/// Talks WHIP to one endpoint.
#[derive(Clone)]
pub struct WhipClient {
    /// The HTTP client (connection pool, timeouts).
    http: reqwest::Client,
    /// The WHIP endpoint URL (`publish.whip_url`).
    endpoint: url::Url,
    /// `publish.bearer_token`.
    token: Option<Token>,
}

impl WhipClient {
    pub fn new(
        endpoint: url::Url,
        token: Option<Token>,
        timeout: Duration,
    ) -> Result<Self, String> {
        crate::signaling::kvs::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            // A redirect would carry the token to another host; WHIP servers answer directly.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(WhipClient {
            http,
            endpoint,
            token,
        })
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(&t.0),
            None => req,
        }
    }

    /// POSTs an offer; `Ok` only for a usable 201.
    pub async fn post(&self, offer: &str) -> Result<Created, Failure> {
        let req = self
            .http
            .post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, SDP)
            .header(header::ACCEPT, SDP)
            .body(offer.to_owned());
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(|e| transport_failure("POST", e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| transport_failure("POST", e))?;
        created(&self.endpoint, status, &headers, body, SystemTime::now())
    }

    /// PATCHes a trickle fragment to the resource; `Ok` carries the resource's new ETag, if
    /// the server sent one.
    pub async fn patch(
        &self,
        resource: &str,
        etag: Option<&str>,
        fragment: String,
    ) -> Result<Option<String>, PatchError> {
        let mut req = self
            .http
            .patch(resource)
            .header(header::CONTENT_TYPE, TRICKLE)
            .body(fragment);
        if let Some(e) = etag {
            req = req.header(header::IF_MATCH, e);
        }
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(|e| PatchError::Failed(transport_failure("PATCH", e)))?;
        let status = resp.status();
        match status {
            s if s.is_success() => Ok(resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)),
            // RFC 9725 §4.3.1: the server does not take trickle after all.
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                Err(PatchError::NotSupported)
            }
            _ => Err(PatchError::Failed(status_failure(
                "PATCH",
                status,
                resp.headers(),
                SystemTime::now(),
            ))),
        }
    }

    /// DELETEs the resource; the caller bounds how long it waits.
    pub async fn delete(&self, resource: &str) -> Result<(), Failure> {
        let req = self.http.delete(resource);
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(|e| transport_failure("DELETE", e))?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_failure(
                "DELETE",
                status,
                resp.headers(),
                SystemTime::now(),
            ))
        }
    }
}

/// Why a trickle PATCH did not go through.
#[derive(Debug)]
pub enum PatchError {
    /// 405 or 501: the server does not take trickled candidates.
    NotSupported,
    /// Anything else (logged; the connection may still come up on the offer's candidates).
    Failed(Failure),
}

/// An RFC 8840 fragment for the first bundled section: the ICE credentials, the section's
/// `m=` and `a=mid`, then the candidates (each a `candidate:…` attribute value), and
/// `a=end-of-candidates` when gathering is done.
pub fn trickle_fragment(offer: &str, candidates: &[String], end: bool) -> Option<String> {
    let attr = |name: &str| {
        offer
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(name).map(str::to_owned))
    };
    let ufrag = attr("a=ice-ufrag:")?;
    let pwd = attr("a=ice-pwd:")?;
    let mline = offer.lines().find(|l| l.starts_with("m="))?.trim_end();
    // "m=video 9 UDP/TLS/RTP/SAVPF 102": the port is a placeholder in a fragment.
    let mut parts = mline.splitn(3, ' ');
    let (kind, _port, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let mid = attr("a=mid:")?;
    let mut f =
        format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n{kind} 9 {rest}\r\na=mid:{mid}\r\n");
    for c in candidates {
        let c = c.trim();
        let c = c.strip_prefix("a=").unwrap_or(c);
        if !c.is_empty() {
            f.push_str(&format!("a={c}\r\n"));
        }
    }
    if end {
        f.push_str("a=end-of-candidates\r\n");
    }
    Some(f)
}

fn transport_failure(what: &str, e: reqwest::Error) -> Failure {
    // Without the URL: some services put a secret in its path. The token travels in a header
    // and is never in the message. The error chain names the cause (refused, DNS, TLS).
    let e = e.without_url();
    let mut detail = format!("{what} failed: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(&format!(": {s}"));
        src = s.source();
    }
    let cause = if e.is_timeout() {
        Cause::Timeout
    } else {
        Cause::Network
    };
    Failure::new(cause, detail)
}

/// A non-success status as a failure, with a message a user can act on.
pub fn status_failure(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Failure {
    let cause = Cause::of_status(status.as_u16());
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, now));
    let detail = match cause {
        Cause::Unauthorized => format!(
            "{what}: the WHIP server refused the token ({status}): check publish.bearer_token \
             (wrong or expired); retrying slowly"
        ),
        Cause::Unavailable => match retry_after {
            Some(d) => format!(
                "{what}: the WHIP server is unavailable ({status}); it asks to retry after {} s",
                d.as_secs()
            ),
            None => format!("{what}: the WHIP server is unavailable ({status})"),
        },
        _ => format!("{what}: the WHIP server answered {status}"),
    };
    Failure {
        cause,
        retry_after,
        detail,
    }
}

/// The start of an error body, printable and short, for the log (servers often say why:
/// "Endpoint ID already in use", "Janus unavailable").
fn server_words(body: &str) -> String {
    let text: String = body.chars().filter(|c| !c.is_control()).take(120).collect();
    text.trim().to_string()
}

/// Reads a POST's response: a 201 with an SDP answer and a `Location`, or why not.
pub fn created(
    endpoint: &url::Url,
    status: StatusCode,
    headers: &HeaderMap,
    body: String,
    now: SystemTime,
) -> Result<Created, Failure> {
    if status != StatusCode::CREATED {
        let mut f = status_failure("POST", status, headers, now);
        let said = server_words(&body);
        if !said.is_empty() {
            f.detail.push_str(&format!("; the server said {said:?}"));
        }
        return Err(f);
    }
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Failure::new(Cause::Refused, "POST: 201 without a Location header"))?;
    let resource = endpoint
        .join(location)
        .map_err(|e| {
            Failure::new(
                Cause::Refused,
                format!("POST: bad Location {location:?}: {e}"),
            )
        })?
        .to_string();
    if !body.trim_start().starts_with("v=0") {
        return Err(Failure::new(
            Cause::BadAnswer,
            "POST: 201 whose body is not an SDP answer",
        ));
    }
    let etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let trickle = headers
        .get_all("accept-patch")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(TRICKLE)));
    let ice_servers = ice_servers(headers.get_all(header::LINK).iter());
    Ok(Created {
        answer: body,
        resource,
        etag,
        trickle,
        ice_servers,
    })
}

/// `Retry-After`: delay seconds or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The STUN/TURN servers in `Link` headers with `rel="ice-server"` (RFC 9725 §4.6):
/// `<turn:turn.example.net?transport=udp>; rel="ice-server"; username="u"; credential="p"`.
pub fn ice_servers<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<IceServer> {
    let mut out = Vec::new();
    for v in values {
        let Ok(v) = v.to_str() else { continue };
        for link in split_links(v) {
            if let Some(s) = parse_link(&link) {
                out.push(s);
            }
        }
    }
    out
}

/// Splits a `Link` value into its comma-separated links, minding `<…>` and quotes.
fn split_links(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut in_uri, mut in_quote) = (false, false);
    for c in v.chars() {
        match c {
            '<' if !in_quote => in_uri = true,
            '>' if !in_quote => in_uri = false,
            '"' if !in_uri => in_quote = !in_quote,
            ',' if !in_uri && !in_quote => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn parse_link(link: &str) -> Option<IceServer> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let (uri, params) = rest.split_once('>')?;
    let mut rel = false;
    let (mut username, mut credential) = (None, None);
    for p in split_params(params) {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "rel" => {
                rel = v
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("ice-server"))
            }
            "username" => username = Some(v),
            "credential" => credential = Some(v),
            _ => {}
        }
    }
    let uri = uri.trim();
    let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|s| uri.starts_with(s));
    (rel && scheme_ok).then(|| IceServer {
        urls: vec![uri.to_owned()],
        username,
        credential,
    })
}

/// Splits `; a="x;y"; b=z` into its parameters, minding quotes.
fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    for c in s.chars() {
        if c == '"' {
            in_quote = !in_quote;
        }
        if c == ';' && !in_quote {
            if !cur.trim().is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
            continue;
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn endpoint() -> url::Url {
        url::Url::parse("http://sfu.example:7080/whip/endpoint/cam1").unwrap()
    }

    #[test]
    fn a_201_gives_the_answer_the_resource_and_the_ice_servers() {
        let h = headers(&[
            ("location", "/whip/endpoint/cam1/resource/abc"),
            ("etag", "\"xyz\""),
            ("accept-patch", "application/trickle-ice-sdpfrag"),
            (
                "link",
                "<stun:stun.example.net>; rel=\"ice-server\", <turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"p;a,ss\"; credential-type=\"password\"",
            ),
            ("link", "<https://example.net/doc>; rel=\"help\""),
        ]);
        let c = created(
            &endpoint(),
            StatusCode::CREATED,
            &h,
            "v=0\r\n".into(),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(
            c.resource,
            "http://sfu.example:7080/whip/endpoint/cam1/resource/abc"
        );
        assert_eq!(c.etag.as_deref(), Some("\"xyz\""));
        assert!(c.trickle);
        assert_eq!(
            c.ice_servers,
            vec![
                IceServer {
                    urls: vec!["stun:stun.example.net".into()],
                    username: None,
                    credential: None
                },
                IceServer {
                    urls: vec!["turn:turn.example.net?transport=udp".into()],
                    username: Some("user".into()),
                    credential: Some("p;a,ss".into())
                },
            ]
        );
    }

    #[test]
    fn absolute_locations_are_kept_and_no_trickle_without_accept_patch() {
        let h = headers(&[("location", "https://other.example/r/1")]);
        let c = created(
            &endpoint(),
            StatusCode::CREATED,
            &h,
            "v=0\r\n".into(),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(c.resource, "https://other.example/r/1");
        assert!(!c.trickle);
        assert!(c.ice_servers.is_empty());
    }

    #[test]
    fn refusals_say_what_to_do() {
        let now = SystemTime::now();
        let e = created(
            &endpoint(),
            StatusCode::UNAUTHORIZED,
            &headers(&[]),
            String::new(),
            now,
        )
        .unwrap_err();
        assert_eq!(e.cause, Cause::Unauthorized);
        assert!(e.detail.contains("publish.bearer_token"), "{}", e.detail);
        let e = created(
            &endpoint(),
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("retry-after", "12")]),
            String::new(),
            now,
        )
        .unwrap_err();
        assert_eq!(e.cause, Cause::Unavailable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(12)));
        let e = created(
            &endpoint(),
            StatusCode::OK,
            &headers(&[]),
            "v=0".into(),
            now,
        )
        .unwrap_err();
        assert_eq!(e.cause, Cause::Refused);
        let e = created(
            &endpoint(),
            StatusCode::CREATED,
            &headers(&[]),
            "v=0".into(),
            now,
        )
        .unwrap_err();
        assert!(e.detail.contains("Location"), "{}", e.detail);
        let e = created(
            &endpoint(),
            StatusCode::CREATED,
            &headers(&[("location", "/r")]),
            "<html>".into(),
            now,
        )
        .unwrap_err();
        assert_eq!(e.cause, Cause::BadAnswer);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("30", now), Some(Duration::from_secs(30)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn trickle_fragments_name_the_first_section_and_its_credentials() {
        let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:UF\r\n\
                     a=ice-pwd:PW\r\na=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        let f = trickle_fragment(
            offer,
            &["candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host".into()],
            true,
        )
        .unwrap();
        assert_eq!(
            f,
            "a=ice-ufrag:UF\r\na=ice-pwd:PW\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host\r\na=end-of-candidates\r\n"
        );
        assert!(trickle_fragment("v=0\r\n", &[], true).is_none());
    }

    #[test]
    fn tokens_are_never_printed() {
        let t = Token("s3cret".into());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
