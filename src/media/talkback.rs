//! STUB (replaced by the talkback branch).
use std::path::PathBuf;
use std::time::Duration;

use crate::media::MediaError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkCodec {
    Opus,
    Pcmu,
    Pcma,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalkbackSink {
    Default,
    Alsa(String),
    Pulse(String),
    File(PathBuf),
}

impl std::str::FromStr for TalkbackSink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s.is_empty() || s == "default" => Ok(TalkbackSink::Default),
            Some(("alsa", d)) if !d.is_empty() => Ok(TalkbackSink::Alsa(d.into())),
            Some(("pulse", d)) if !d.is_empty() => Ok(TalkbackSink::Pulse(d.into())),
            Some(("file", d)) if !d.is_empty() => Ok(TalkbackSink::File(d.into())),
            _ => Err(format!(
                "{s:?}: expected default, alsa:DEVICE, pulse:SINK or file:PATH"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TalkbackOptions {
    pub sink: TalkbackSink,
    pub release_after: Duration,
}

#[derive(Clone)]
pub struct Talkback;

#[derive(Debug, Clone, serde::Serialize)]
pub struct TalkbackStatus {
    pub state: String,
}

impl Talkback {
    pub fn start(_opts: TalkbackOptions) -> Result<Talkback, MediaError> {
        Ok(Talkback)
    }
    pub fn talker(
        &self,
        _name: &str,
        _codec: crate::media::audio::AudioCodec,
        _payload_type: u8,
    ) -> Talker {
        Talker
    }
    pub fn status(&self) -> TalkbackStatus {
        TalkbackStatus {
            state: "idle".into(),
        }
    }
}

pub struct Talker;
impl Talker {
    pub fn push(&self, _packet: &rtc::rtp::Packet) {}
}
