//! Bearer tokens for the HTTP API (RFC 6750 §2.1, as WHEP asks in RFC 9725 §4.5).
//!
//! Tokens come from `http.tokens` and `http.tokens_file` (one per line, `#` comments), and the
//! file is read again on SIGHUP. Only SHA-256 digests are kept, and a presented token is
//! compared against each digest in constant time, so neither its bytes nor its length leak
//! through timing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 characters of `openssl rand -hex 16` is 64 bits; shorter ones
/// can be guessed by anyone on the LAN with patience.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("http.tokens_file: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("http.tokens_file: {path} line {line}: {problem}")]
    Bad {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("http.tokens_file: {path} holds no token")]
    Empty { path: PathBuf },
}

/// Why a token is unusable, or None. Shared by config validation and the tokens file.
pub fn token_problem(token: &str) -> Option<String> {
    if token.len() < MIN_TOKEN_LEN {
        return Some(format!(
            "a token of {} characters is too short; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 16`)",
            token.len()
        ));
    }
    // RFC 6750 b64token: what can travel in an Authorization header unquoted.
    let ok = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    (!ok).then(|| "a token may hold only letters, digits and - . _ ~ + / =".to_string())
}

/// Reads a tokens file: one token per line; blank lines and `#` comments are skipped.
pub fn read_tokens_file(path: &Path) -> Result<Vec<String>, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(problem) = token_problem(t) {
            return Err(TokenError::Bad {
                path: path.to_owned(),
                line: i + 1,
                problem,
            });
        }
        tokens.push(t.to_owned());
    }
    if tokens.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(tokens)
}

/// Who a request is, as far as the API cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No tokens are configured: everyone is let in (loopback, or `http.allow_anonymous`).
    Open,
    /// A valid viewer token was presented.
    Viewer,
    /// `http.metrics_token` was presented: `/metrics` only.
    Metrics,
    /// Tokens are configured and none (or a wrong one) was presented.
    Denied,
}

/// The token sets, swappable at run time (SIGHUP).
#[derive(Clone, Default)]
pub struct Tokens {
    inner: Arc<RwLock<Digests>>,
}

#[derive(Default)]
struct Digests {
    /// Viewer tokens: `http.tokens` plus the file's.
    viewer: Vec<[u8; 32]>,
    /// `http.metrics_token`.
    metrics: Option<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn new(viewer: &[String], metrics: Option<&str>) -> Tokens {
        let t = Tokens::default();
        t.replace(viewer, metrics);
        t
    }

    /// Swaps in a new set (a SIGHUP reload).
    pub fn replace(&self, viewer: &[String], metrics: Option<&str>) {
        let d = Digests {
            viewer: viewer.iter().map(|t| digest(t)).collect(),
            metrics: metrics.map(digest),
        };
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = d;
    }

    /// True when any viewer token is configured (the API is closed to anonymous callers).
    pub fn required(&self) -> bool {
        !self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .viewer
            .is_empty()
    }

    /// Classifies an `Authorization` header value (None when absent).
    pub fn check(&self, authorization: Option<&str>) -> Access {
        let d = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if d.viewer.is_empty() {
            return Access::Open;
        }
        let Some(token) = authorization.and_then(bearer) else {
            return Access::Denied;
        };
        let presented = digest(token);
        // Every digest is compared, match or not, so the time taken says nothing about which.
        let mut viewer = subtle::Choice::from(0);
        for t in &d.viewer {
            viewer |= t.ct_eq(&presented);
        }
        let metrics = d
            .metrics
            .map_or(subtle::Choice::from(0), |m| m.ct_eq(&presented));
        if bool::from(viewer) {
            Access::Viewer
        } else if bool::from(metrics) {
            Access::Metrics
        } else {
            Access::Denied
        }
    }
}

/// The token of a `Bearer` credential; the scheme is case-insensitive (RFC 7235 §2.1).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123";
    const M: &str = "metrics-token-000000";

    #[test]
    fn no_tokens_is_open() {
        assert_eq!(Tokens::new(&[], None).check(None), Access::Open);
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let t = Tokens::new(&[A.into()], Some(M));
        assert_eq!(t.check(None), Access::Denied);
        assert_eq!(t.check(Some("Bearer nope-nope-nope-nope")), Access::Denied);
        assert_eq!(t.check(Some(&format!("Basic {A}"))), Access::Denied);
        assert_eq!(t.check(Some(&format!("Bearer {A}"))), Access::Viewer);
        assert_eq!(t.check(Some(&format!("bearer  {A} "))), Access::Viewer);
        assert_eq!(t.check(Some(&format!("Bearer {M}"))), Access::Metrics);
        assert_eq!(t.check(Some("Bearer ")), Access::Denied);
    }

    #[test]
    fn replace_swaps_the_set() {
        let t = Tokens::new(&[A.into()], None);
        t.replace(&["fedcba9876543210fedc".into()], None);
        assert_eq!(t.check(Some(&format!("Bearer {A}"))), Access::Denied);
        t.replace(&[], None);
        assert_eq!(t.check(None), Access::Open);
    }

    #[test]
    fn weak_tokens_are_named() {
        assert!(token_problem("short").unwrap().contains("too short"));
        assert!(token_problem("has space in the middle").is_some());
        assert!(token_problem(A).is_none());
    }

    #[test]
    fn tokens_file_skips_comments_and_names_bad_lines() {
        let dir = std::env::temp_dir().join(format!("camgate-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokens");
        std::fs::write(&f, format!("# viewers\n\n{A}\n  {M}  \n")).unwrap();
        assert_eq!(
            read_tokens_file(&f).unwrap(),
            vec![A.to_string(), M.to_string()]
        );
        std::fs::write(&f, "# none\n").unwrap();
        assert!(matches!(
            read_tokens_file(&f),
            Err(TokenError::Empty { .. })
        ));
        std::fs::write(&f, format!("{A}\nshort\n")).unwrap();
        let e = read_tokens_file(&f).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("too short"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
