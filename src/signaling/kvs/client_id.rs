//! KVS signaling client ids: who an offer or candidate came from (`senderClientId`) and who an
//! answer goes to (`recipientClientId`).
//!
//! The service's rule for them is `[a-zA-Z0-9_.-]{1,256}`. A [`ClientId`] exists only once text
//! has passed that rule, so everything past the frame parser (the driver, the session
//! manager) can key sessions on it and address answers with it without checking again.

use std::fmt;

use super::message::MAX_ID_CHARS;

/// A viewer's client id on a KVS signaling channel (Alexa's look like `viewer-<uuid>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

/// Why text is not a client id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadClientId {
    #[error("client id is empty")]
    Empty,
    #[error("client id is {len} characters, over the service limit of {MAX_ID_CHARS}")]
    TooLong { len: usize },
    #[error("client id has a character outside [a-zA-Z0-9_.-] at byte {at}")]
    BadCharacter { at: usize },
}

impl ClientId {
    /// Checks text against the service's rule: 1 to 256 characters of `[a-zA-Z0-9_.-]`.
    pub fn parse(s: &str) -> Result<ClientId, BadClientId> {
        if s.is_empty() {
            return Err(BadClientId::Empty);
        }
        if s.len() > MAX_ID_CHARS {
            return Err(BadClientId::TooLong { len: s.len() });
        }
        if let Some(at) = s
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return Err(BadClientId::BadCharacter { at });
        }
        Ok(ClientId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ClientId {
    type Err = BadClientId;

    fn from_str(s: &str) -> Result<ClientId, BadClientId> {
        ClientId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kvs_viewers_and_alexa_send() {
        for ok in [
            "viewer-1",
            "v",
            "alexa_1",
            "viewer-0f1e.ok_",
            "viewer-6f1c2b0e-3d4a-4b5c-9d8e-7f6a5b4c3d2e",
            "ConsumerViewer",
        ] {
            assert_eq!(
                ClientId::parse(ok).map(|c| c.to_string()),
                Ok(ok.to_owned())
            );
        }
        assert!(ClientId::parse(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn refuses_empty_over_long_and_bad_characters() {
        assert_eq!(ClientId::parse(""), Err(BadClientId::Empty));
        assert_eq!(
            ClientId::parse(&"a".repeat(257)),
            Err(BadClientId::TooLong { len: 257 })
        );
        for (bad, at) in [
            ("has space", 3),
            ("viewer/1", 6),
            ("a:b", 1),
            ("é", 0),
            ("v\n", 1),
            ("v\"}", 1),
        ] {
            assert_eq!(
                ClientId::parse(bad),
                Err(BadClientId::BadCharacter { at }),
                "{bad:?}"
            );
        }
    }
}
