//! The body of a WHEP `PATCH`: an SDP fragment (`application/trickle-ice-sdpfrag`,
//! RFC 8840) carrying the viewer's trickled candidates. Pure: text in, candidates out.

use thiserror::Error;

/// What a trickle fragment asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment {
    /// The media section the candidates belong to (`a=mid:`); with BUNDLE every
    /// candidate serves all of them, so only the last one seen is kept.
    pub mid: Option<String>,
    /// Each `a=candidate:` attribute value, without the `a=` prefix, in order.
    pub candidates: Vec<String>,
    /// `a=ice-ufrag:` the fragment names, if any: a new one with no candidates is an ICE
    /// restart, which we refuse.
    pub ufrag: Option<String>,
    /// The fragment says `a=end-of-candidates`.
    pub end_of_candidates: bool,
}

/// Why a fragment is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("ICE restart is not supported; POST a new offer instead")]
    IceRestart,
    #[error("fragment carries {count} candidates; at most {max} are accepted per request")]
    TooManyCandidates { count: usize, max: usize },
}

/// Most candidates one PATCH may carry. A browser trickles one or a few at a time; a
/// fragment with more is refused whole rather than half-applied.
pub const MAX_CANDIDATES_PER_PATCH: usize = 32;

/// Parses a trickle fragment. Lines other than `a=mid`, `a=candidate`, `a=ice-ufrag` and
/// `a=end-of-candidates` are ignored, as RFC 8840 allows.
pub fn parse(frag: &str) -> Result<Fragment, FragmentError> {
    let mut out = Fragment::default();
    for line in frag.lines().map(str::trim) {
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        if let Some(m) = attr.strip_prefix("mid:") {
            out.mid = Some(m.trim().to_owned());
        } else if attr.starts_with("candidate:") {
            out.candidates.push(attr.to_owned());
        } else if let Some(u) = attr.strip_prefix("ice-ufrag:") {
            out.ufrag = Some(u.trim().to_owned());
        } else if attr == "end-of-candidates" {
            out.end_of_candidates = true;
        }
    }
    if out.ufrag.is_some() && out.candidates.is_empty() && !out.end_of_candidates {
        return Err(FragmentError::IceRestart);
    }
    if out.candidates.len() > MAX_CANDIDATES_PER_PATCH {
        return Err(FragmentError::TooManyCandidates {
            count: out.candidates.len(),
            max: MAX_CANDIDATES_PER_PATCH,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_and_mid_are_read() {
        let f = parse(
            "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n",
        )
        .unwrap();
        assert_eq!(f.mid.as_deref(), Some("0"));
        assert_eq!(
            f.candidates,
            ["candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host"]
        );
    }

    #[test]
    fn new_credentials_without_candidates_are_a_restart() {
        assert_eq!(
            parse("a=ice-ufrag:new\r\na=ice-pwd:new\r\n"),
            Err(FragmentError::IceRestart)
        );
    }

    #[test]
    fn end_of_candidates_is_not_a_restart() {
        let f = parse("a=ice-ufrag:abcd\r\na=end-of-candidates\r\n").unwrap();
        assert!(f.end_of_candidates && f.candidates.is_empty());
    }

    #[test]
    fn too_many_candidates_are_refused_whole() {
        let frag: String = (0..=MAX_CANDIDATES_PER_PATCH)
            .map(|i| format!("a=candidate:{i} 1 udp 1 192.0.2.1 {} typ host\n", 1000 + i))
            .collect();
        assert!(matches!(
            parse(&frag),
            Err(FragmentError::TooManyCandidates { .. })
        ));
    }
}
