//! The audio codecs camgate speaks, one type for capture, fan-out, SDP and talkback.

use std::fmt;

/// An audio codec we send or receive: Opus for everyone who takes it, G.711 (µ-law PCMU,
/// A-law PCMA) for viewers that offer nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    Opus,
    Pcmu,
    Pcma,
}

impl AudioCodec {
    /// RTP clock rate (RFC 7587 for Opus: always 48 kHz; RFC 3551 for G.711).
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48_000,
            AudioCodec::Pcmu | AudioCodec::Pcma => 8_000,
        }
    }

    /// The `encoding-name` in RTP caps (and in SDP's rtpmap).
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Opus => "OPUS",
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
        }
    }

    /// Lower-case name for logs and stats ("opus", "pcmu", "pcma").
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Opus => "opus",
            AudioCodec::Pcmu => "pcmu",
            AudioCodec::Pcma => "pcma",
        }
    }

    /// From a WebRTC MIME type (`audio/opus`, `audio/PCMU`, `audio/PCMA`; any case).
    pub fn from_mime(mime: &str) -> Option<AudioCodec> {
        let name = mime.strip_prefix("audio/").unwrap_or(mime);
        [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rates() {
        assert_eq!(AudioCodec::from_mime("audio/opus"), Some(AudioCodec::Opus));
        assert_eq!(AudioCodec::from_mime("audio/pcmu"), Some(AudioCodec::Pcmu));
        assert_eq!(AudioCodec::from_mime("PCMA"), Some(AudioCodec::Pcma));
        assert_eq!(AudioCodec::from_mime("audio/G722"), None);
        assert_eq!(AudioCodec::Pcma.clock_rate(), 8_000);
        assert_eq!(AudioCodec::Opus.to_string(), "OPUS");
    }
}
