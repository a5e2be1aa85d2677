//! The one place secrets are masked before anything is shown: logs, `/stats`, status lines,
//! error messages and `check-config` output.
//!
//! * [`redact_url`]: a URL with its password (`user:***@`) and every secret-looking query
//!   parameter (`token=***`, `X-Amz-Signature=***`, `X-Amz-Credential=***`, …) masked.
//! * [`redact_text`]: free text (a GStreamer error message, a service's error body) with
//!   every URL inside it passed through [`redact_url`] and every other secret-looking
//!   `name=value` (`X-Amz-Security-Token=…`, `Signature=…`, `password=…`) masked.

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query parameter names (matched as case-insensitive substrings) that carry credentials in
/// camera URLs and SigV4 presigned URLs.
const SECRET_QUERY_WORDS: &[&str] = &[
    "token",
    "auth",
    "pass",
    "pwd",
    "secret",
    "key",
    "signature",
    "sig",
    "credential",
    "session",
];

/// True if a query parameter of this name may hold a credential.
pub fn is_secret_query_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_QUERY_WORDS.iter().any(|w| k.contains(w))
}

/// `url` with any password (userinfo or credential-looking query parameter) replaced by `***`.
/// Text that does not parse as a URL keeps its shape with a `user:password@` part and any
/// query masked.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Only fails for URLs that cannot have credentials, which this one has.
                let _ = u.set_password(Some(MASK));
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_query_key(&k) {
                            MASK.to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => redact_unparsed(url),
    }
}

/// Unparseable: still hide `user:password@` if it looks like there is one, and any query.
fn redact_unparsed(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}{}", &rest[at..]),
            None => rest.to_string(),
        },
        None => rest.to_string(),
    };
    // A query may carry a token; without a parse, show none of it.
    let shown = match shown.split_once('?') {
        Some((before, _)) => format!("{before}?{MASK}"),
        None => shown,
    };
    let shown: String = shown.chars().take(128).collect();
    if scheme.is_empty() {
        shown
    } else {
        format!("{scheme}://{shown}")
    }
}

/// Characters that end a URL embedded in prose or in a quoted string.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | ']' | '}' | ',')
}

/// Characters that end a `name=value` value in free text.
fn ends_value(c: char) -> bool {
    ends_url(c) || matches!(c, '&' | ';')
}

/// Masks the value of every `name=value` whose name looks secret, in text without URLs (an
/// AWS "canonical string" in a signature error, an `Authorization` header, a pipeline).
fn redact_assignments(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let name_start = rest[..eq]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .last()
            .map(|(i, _)| i)
            .unwrap_or(eq);
        let value_end = rest[eq + 1..]
            .char_indices()
            .find(|(_, c)| ends_value(*c))
            .map(|(i, _)| eq + 1 + i)
            .unwrap_or(rest.len());
        out.push_str(&rest[..=eq]);
        if name_start < eq && value_end > eq + 1 && is_secret_query_key(&rest[name_start..eq]) {
            out.push_str(MASK);
        } else {
            out.push_str(&rest[eq + 1..value_end]);
        }
        rest = &rest[value_end..];
    }
    out.push_str(rest);
}

/// `text` with every `scheme://…` inside it passed through [`redact_url`], and every other
/// secret-looking `name=value` masked; the rest unchanged.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        // The scheme: letters, digits, `+ - .` right before `://`.
        let scheme_start = rest[..sep]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map(|(i, _)| i)
            .unwrap_or(sep);
        let end = rest[sep..]
            .char_indices()
            .find(|(_, c)| ends_url(*c))
            .map(|(i, _)| sep + i)
            .unwrap_or(rest.len());
        // A sentence may end right after the URL.
        let end = rest[..end]
            .trim_end_matches(['.', ';', ':'])
            .len()
            .max(sep + 3);
        redact_assignments(&rest[..scheme_start], &mut out);
        if scheme_start == sep {
            // `://` without a scheme: not a URL, keep it.
            out.push_str(&rest[sep..end]);
        } else {
            out.push_str(&redact_url(&rest[scheme_start..end]));
        }
        rest = &rest[end..];
    }
    redact_assignments(rest, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_passwords_are_masked() {
        assert_eq!(
            redact_url("rtsp://admin:hunter2@192.0.2.7:554/stream1"),
            "rtsp://admin:***@192.0.2.7:554/stream1"
        );
        assert_eq!(redact_url("rtsp://cam/live"), "rtsp://cam/live");
        assert_eq!(redact_url("no scheme"), "no scheme");
        let odd = redact_url("not a url with user:pw@host");
        assert!(!odd.contains("pw@"), "{odd}");
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        let r = redact_url("rtsp://cam.local/live?channel=1&token=abc123&Password=hunter2&sub=0");
        assert!(r.contains("channel=1") && r.contains("sub=0"), "{r}");
        assert!(!r.contains("abc123") && !r.contains("hunter2"), "{r}");
        let presigned = "wss://m-1.kinesisvideo.eu-west-1.amazonaws.com/?X-Amz-ChannelARN=arn%3Aaws%3Akinesisvideo%3Aeu-west-1%3A1%3Achannel%2Fc%2F1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Feu-west-1%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300&X-Amz-Security-Token=SESSIONTOKEN&X-Amz-SignedHeaders=host&X-Amz-Signature=abcdef0123";
        let r = redact_url(presigned);
        for secret in ["AKIAEXAMPLE", "SESSIONTOKEN", "abcdef0123"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("X-Amz-ChannelARN=arn"), "{r}");
        // Unparseable with a query: none of the query is shown.
        assert_eq!(redact_url("rtsp://[bad/x?token=1"), "rtsp://[bad/x?***");
    }

    #[test]
    fn urls_inside_text_are_masked() {
        let t = "Could not open resource for reading and writing. (Failed to connect to rtsp://admin:hunter2@cam.local:554/live?token=t0k3n.)";
        let r = redact_text(t);
        assert!(!r.contains("hunter2") && !r.contains("t0k3n"), "{r}");
        assert!(r.starts_with("Could not open resource"), "{r}");
        assert!(
            r.contains("rtsp://admin:***@cam.local:554/live?token=***"),
            "{r}"
        );
        assert!(r.ends_with(".)"), "{r}");
        let two = redact_text("'http://u:p1@a/' and \"wss://b/?X-Amz-Signature=s2\"");
        assert!(!two.contains("p1@") && !two.contains("s2"), "{two}");
        assert_eq!(redact_text("no url here: a://"), "no url here: a://");
        assert_eq!(redact_text("odd :// alone"), "odd :// alone");
        assert_eq!(redact_text(""), "");
    }

    #[test]
    fn secret_assignments_outside_urls_are_masked() {
        // The shape of an AWS signature error body, which quotes the canonical request.
        let body = "The Canonical String for this request should have been 'GET\n/\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAKEY%2F20260101&X-Amz-Security-Token=T0KEN&X-Amz-SignedHeaders=host'";
        let r = redact_text(body);
        assert!(!r.contains("ASIAKEY") && !r.contains("T0KEN"), "{r}");
        assert!(r.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"), "{r}");
        let auth = redact_text(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKID/x, SignedHeaders=host, Signature=abc123",
        );
        assert!(!auth.contains("abc123") && !auth.contains("AKID"), "{auth}");
        assert_eq!(
            redact_text("width=1280 height=720"),
            "width=1280 height=720"
        );
        assert_eq!(redact_text("a == b, x="), "a == b, x=");
    }
}
