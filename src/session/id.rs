//! Session ids: what WHEP's `Location` names and PATCH and DELETE act on.
//!
//! Only the session manager makes one ([`SessionId::generate`]); anything else gets one by
//! parsing untrusted text ([`SessionId::parse`], e.g. a WHEP resource path), which accepts
//! exactly the shape the manager produces.

use std::fmt;

/// The id of one viewer session: 32 lowercase hex digits (a random UUID v4 without dashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

/// Text that cannot be a session id, so no session has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a session id ({len} characters; a session id is {SESSION_ID_LEN} lowercase hex digits)"
)]
pub struct BadSessionId {
    /// How long the refused text was: enough to debug with, without echoing it.
    pub len: usize,
}

/// Characters in a session id.
const SESSION_ID_LEN: usize = 32;

impl SessionId {
    /// A new random id. Only the session manager creates sessions, so only it calls this.
    pub(super) fn generate() -> SessionId {
        SessionId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Reads an id from untrusted text (a URL path segment). Anything the manager could not
    /// have produced is refused, so it cannot name a session.
    pub fn parse(s: &str) -> Result<SessionId, BadSessionId> {
        let well_formed = s.len() == SESSION_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(SessionId(s.to_owned()))
        } else {
            Err(BadSessionId { len: s.len() })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SessionId {
    type Err = BadSessionId;

    fn from_str(s: &str) -> Result<SessionId, BadSessionId> {
        SessionId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        for _ in 0..100 {
            let id = SessionId::generate();
            assert_eq!(SessionId::parse(id.as_str()), Ok(id.clone()));
            assert_eq!(id.to_string(), id.as_str());
        }
        assert!(SessionId::parse("0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "nope",
            "0123",
            // One too short, one too long.
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            // Uppercase, dashed UUID, non-hex, non-ASCII, path tricks.
            "0123456789ABCDEF0123456789ABCDEF",
            "01234567-89ab-cdef-0123-456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdé",
            "../../0123456789abcdef0123456789",
        ] {
            assert_eq!(
                SessionId::parse(bad),
                Err(BadSessionId { len: bad.len() }),
                "{bad:?}"
            );
        }
        let long = "a".repeat(10_000);
        assert!(SessionId::parse(&long).is_err());
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"0123456789abcdef0123456789abcdef\""
        );
    }
}
