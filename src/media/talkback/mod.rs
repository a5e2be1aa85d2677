//! Talkback: audio a viewer sends is played on this device.
//!
//! Each viewer allowed to talk gets a [`Talker`]; the session layer pushes that viewer's RTP
//! packets into it from its own task. Pushing never blocks: packets that are plainly garbage
//! are counted and dropped on the spot, the rest go through a bounded queue to one driver
//! thread, which owns the GStreamer output. One talker is heard at a time (the newest to
//! start sending, see [`floor`]); each talk burst gets a fresh pipeline, and the sound device
//! is closed again after a second of silence so other programs (and the next burst) can
//! open it.
//!
//! Layout: [`floor`] holds the sans-IO rules (floor, release timer, garbage), `player` the
//! GStreamer pipeline and the driver thread.

pub mod floor;
mod player;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::media::MediaError;
use floor::TalkerId;

/// Packets that may wait for the driver: 5 s of one talker's 20 ms packets, or ~1.3 s with
/// four viewers sending at once. Bounds memory while the driver sits in a slow state change
/// (opening a Pulse connection, draining a WAV file).
const QUEUE_PACKETS: u64 = 256;

/// The audio codecs a viewer may talk with: the daemon's one audio codec type.
pub use crate::media::codec::AudioCodec;

/// Where talkback audio is played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalkbackSink {
    /// Whatever `autoaudiosink` finds (PulseAudio, then ALSA, ...).
    Default,
    /// An ALSA device such as `hw:1` or `plughw:CARD=Device`.
    Alsa(String),
    /// A PulseAudio (or PipeWire-Pulse) sink name.
    Pulse(String),
    /// A WAV file (48 kHz mono S16LE), for tests and debugging. Each talk burst rewrites it,
    /// so after the talking is over it holds the last burst.
    File(PathBuf),
}

/// A [`TalkbackSink`] that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid talkback sink `{0}`: expected \"default\" (or empty), \"alsa:<device>\", \"pulse:<device>\" or \"file:<path>\""
)]
pub struct SinkParseError(pub String);

impl FromStr for TalkbackSink {
    type Err = SinkParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SinkParseError(s.to_string());
        let s = s.trim();
        if s.is_empty() || s == "default" {
            return Ok(TalkbackSink::Default);
        }
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        if value.is_empty() {
            return Err(bad());
        }
        match kind {
            "alsa" => Ok(TalkbackSink::Alsa(value.to_string())),
            "pulse" => Ok(TalkbackSink::Pulse(value.to_string())),
            "file" => Ok(TalkbackSink::File(PathBuf::from(value))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for TalkbackSink {
    /// The form [`FromStr`] accepts, so errors and status name the sink as configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TalkbackSink::Default => f.write_str("default"),
            TalkbackSink::Alsa(d) => write!(f, "alsa:{d}"),
            TalkbackSink::Pulse(d) => write!(f, "pulse:{d}"),
            TalkbackSink::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TalkbackOptions {
    /// Where the audio goes.
    pub sink: TalkbackSink,
    /// Silence from the talker after which the sound device is released.
    pub release_after: Duration,
}

impl Default for TalkbackOptions {
    fn default() -> Self {
        TalkbackOptions {
            sink: TalkbackSink::Default,
            release_after: Duration::from_secs(1),
        }
    }
}

/// What the output is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalkbackState {
    /// No talk burst; the device is closed.
    Idle,
    /// A talker's audio is being played; the device is open.
    Playing,
    /// The last attempt to open or use the device failed (the next burst, or the current
    /// talker after a short pause, tries again).
    Error(String),
    /// [`Talkback::stop`] was called.
    Stopped,
}

impl fmt::Display for TalkbackState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TalkbackState::Idle => f.write_str("idle"),
            TalkbackState::Playing => f.write_str("playing"),
            TalkbackState::Error(e) => write!(f, "error: {e}"),
            TalkbackState::Stopped => f.write_str("stopped"),
        }
    }
}

impl serde::Serialize for TalkbackState {
    /// As one string (`"idle"`, `"playing"`, `"error: ..."`), for health pages.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A snapshot for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TalkbackStatus {
    pub state: TalkbackState,
    /// Who holds the floor (also while the output is failing).
    pub talker: Option<String>,
    /// Packets handed to the pipeline.
    pub packets_played: u64,
    /// Packets from talkers that did not hold the floor.
    pub packets_dropped: u64,
    /// Garbage: wrong version or payload type, empty, oversized, malformed Opus, foreign SSRC.
    pub packets_rejected: u64,
    /// Packets lost because the driver's queue was full.
    pub packets_overflowed: u64,
    /// Holder packets lost because the output was failing.
    pub packets_failed: u64,
    /// Talk bursts begun since start.
    pub talk_bursts: u64,
    /// Pipelines reopened within a burst after a decoder or device fault.
    pub reopens: u64,
    pub last_error: Option<String>,
}

/// Messages to the driver thread. Control messages are never dropped; packets are bounded
/// by [`Shared::queued`].
enum Msg {
    Join {
        id: TalkerId,
        name: String,
        codec: AudioCodec,
    },
    Packet {
        id: TalkerId,
        packet: rtc::rtp::Packet,
        /// Arrival, so the floor's timing does not depend on how far behind the driver is.
        at: Instant,
    },
    Leave {
        id: TalkerId,
    },
    Stop,
}

/// Fields that change per burst, not per packet.
#[derive(Debug)]
struct Slow {
    state: TalkbackState,
    talker: Option<String>,
    last_error: Option<String>,
}

/// State shared by the handles, the talkers and the driver.
struct Shared {
    /// Source of talker ids.
    next_id: AtomicU64,
    /// Packets sent to the driver and not yet taken out: enforces [`QUEUE_PACKETS`] on an
    /// unbounded channel, so `Leave` and `Stop` can never be lost to a full queue.
    queued: AtomicU64,
    /// Counted by talkers: garbage that never reached the driver.
    rejected_early: AtomicU64,
    /// Counted by talkers: the queue was full.
    overflowed: AtomicU64,
    /// Published by the driver after each message (the floor's and its own counts).
    played: AtomicU64,
    dropped: AtomicU64,
    rejected_late: AtomicU64,
    failed: AtomicU64,
    bursts: AtomicU64,
    reopens: AtomicU64,
    slow: Mutex<Slow>,
}

impl Shared {
    fn slow(&self) -> MutexGuard<'_, Slow> {
        // A poisoned lock only means a thread panicked while holding it; the status fields
        // are still usable.
        self.slow.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running talkback output. Clones share one driver; it stops when [`Talkback::stop`]
/// is called or the last clone is dropped.
#[derive(Clone)]
pub struct Talkback {
    inner: Arc<Inner>,
}

/// What the clones share; dropping the last one stops the driver.
struct Inner {
    /// Status, counters, talker ids.
    shared: Arc<Shared>,
    /// To the driver; talkers hold clones.
    tx: Sender<Msg>,
    /// Joined on stop, so the device (and a WAV file) is closed when stop returns.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The configured sink, for log lines.
    sink: TalkbackSink,
}

impl Inner {
    fn shutdown(&self) {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = self.tx.send(Msg::Stop);
            if thread.join().is_err() {
                tracing::error!(sink = %self.sink, "talkback driver thread panicked");
            }
            self.shared.slow().state = TalkbackState::Stopped;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Talkback {
    /// Checks that the elements exist and that the sink can be opened right now (a missing
    /// ALSA device, an unreachable Pulse server, no sound card behind `default`, a file in a
    /// missing directory), then starts the driver. The device is closed again before this
    /// returns; each talk burst opens it anew.
    pub fn start(opts: TalkbackOptions) -> Result<Talkback, MediaError> {
        player::check_elements(&opts.sink)?;
        player::probe_sink(&opts.sink)?;
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            queued: AtomicU64::new(0),
            rejected_early: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            played: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected_late: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bursts: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            slow: Mutex::new(Slow {
                state: TalkbackState::Idle,
                talker: None,
                last_error: None,
            }),
        });
        let (tx, rx) = mpsc::channel();
        let driver = player::Driver::new(opts.clone(), shared.clone(), rx);
        let thread = std::thread::Builder::new()
            .name("talkback".into())
            .spawn(move || driver.run())
            .map_err(|e| MediaError::AudioOutput {
                output: opts.sink.to_string(),
                reason: format!("could not start the talkback thread: {e}"),
            })?;
        tracing::info!(sink = %opts.sink, "talkback ready");
        Ok(Talkback {
            inner: Arc::new(Inner {
                shared,
                tx,
                thread: Mutex::new(Some(thread)),
                sink: opts.sink,
            }),
        })
    }

    /// A viewer that may talk. `payload_type` is the PT negotiated for `codec`; packets with
    /// any other PT are rejected.
    pub fn talker(&self, name: &str, codec: AudioCodec, payload_type: u8) -> Talker {
        let shared = &self.inner.shared;
        let id = TalkerId(shared.next_id.fetch_add(1, Ordering::Relaxed));
        // Fails only after stop; such a talker's packets go nowhere, as they should.
        let _ = self.inner.tx.send(Msg::Join {
            id,
            name: name.to_string(),
            codec,
        });
        Talker {
            id,
            name: name.to_string(),
            codec,
            payload_type,
            tx: self.inner.tx.clone(),
            shared: shared.clone(),
            warned: AtomicBool::new(false),
        }
    }

    pub fn status(&self) -> TalkbackStatus {
        let s = &self.inner.shared;
        let slow = s.slow();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TalkbackStatus {
            state: slow.state.clone(),
            talker: slow.talker.clone(),
            packets_played: get(&s.played),
            packets_dropped: get(&s.dropped),
            packets_rejected: get(&s.rejected_early) + get(&s.rejected_late),
            packets_overflowed: get(&s.overflowed),
            packets_failed: get(&s.failed),
            talk_bursts: get(&s.bursts),
            reopens: get(&s.reopens),
            last_error: slow.last_error.clone(),
        }
    }

    /// Stops the driver for every clone: the current burst ends (a WAV file is finalized),
    /// the device is closed, and later packets are ignored. Dropping the last clone does the
    /// same.
    pub fn stop(self) {
        self.inner.shutdown();
    }
}

/// One viewer that may talk. Dropping it tells the driver the viewer left (its burst, if it
/// holds the floor, ends at once).
pub struct Talker {
    /// Its identity for the floor.
    id: TalkerId,
    /// For log lines about its garbage.
    name: String,
    /// What `floor::check` expects from it.
    codec: AudioCodec,
    payload_type: u8,
    /// To the driver.
    tx: Sender<Msg>,
    /// Queue bound and the counters a talker updates itself.
    shared: Arc<Shared>,
    /// Whether its first garbage packet was logged (the rest are only counted).
    warned: AtomicBool,
}

impl Talker {
    /// One RTP packet received from this viewer (header + payload, as the WebRTC stack
    /// parsed it). Never blocks: garbage is counted and dropped here, and a packet that
    /// finds the driver's queue full is counted and dropped too.
    pub fn push(&self, packet: &rtc::rtp::Packet) {
        let shared = &*self.shared;
        if let Err(why) = floor::check(self.codec, self.payload_type, packet) {
            shared.rejected_early.fetch_add(1, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(talker = %self.name, %why, "talkback: rejecting garbage RTP (further rejections are only counted)");
            }
            return;
        }
        if shared.queued.fetch_add(1, Ordering::AcqRel) >= QUEUE_PACKETS {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.overflowed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let msg = Msg::Packet {
            id: self.id,
            packet: packet.clone(),
            at: Instant::now(),
        };
        if self.tx.send(msg).is_err() {
            // The driver has stopped.
            shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Leave { id: self.id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session layer keeps these in async tasks and shares them between them.
    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Talkback>();
        send_sync::<Talker>();
    }

    #[test]
    fn sink_strings_parse_and_round_trip() {
        for (s, want) in [
            ("", TalkbackSink::Default),
            ("default", TalkbackSink::Default),
            (" default ", TalkbackSink::Default),
            ("alsa:hw:1,0", TalkbackSink::Alsa("hw:1,0".into())),
            (
                "pulse:alsa_output.usb",
                TalkbackSink::Pulse("alsa_output.usb".into()),
            ),
            (
                "file:/tmp/a b.wav",
                TalkbackSink::File("/tmp/a b.wav".into()),
            ),
        ] {
            assert_eq!(s.parse::<TalkbackSink>(), Ok(want.clone()), "{s:?}");
            assert_eq!(want.to_string().parse::<TalkbackSink>(), Ok(want));
        }
        for bad in ["alsa", "alsa:", "jack:foo", "hw:0", "file:", "Default"] {
            let err = bad.parse::<TalkbackSink>().unwrap_err().to_string();
            assert!(
                err.contains("alsa:<device>") && err.contains("file:<path>"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn codecs_know_their_rtp_names() {
        assert_eq!(AudioCodec::from_mime("audio/opus"), Some(AudioCodec::Opus));
        assert_eq!(AudioCodec::from_mime("audio/PCMU"), Some(AudioCodec::Pcmu));
        assert_eq!(AudioCodec::from_mime("pcma"), Some(AudioCodec::Pcma));
        assert_eq!(AudioCodec::from_mime("audio/G722"), None);
        assert_eq!(
            [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma].map(AudioCodec::clock_rate),
            [48_000, 8_000, 8_000]
        );
    }

    #[test]
    fn state_serializes_as_one_string() {
        let json = |s: TalkbackState| serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(json(TalkbackState::Idle), "\"idle\"");
        assert_eq!(json(TalkbackState::Playing), "\"playing\"");
        assert_eq!(
            json(TalkbackState::Error("no device".into())),
            "\"error: no device\""
        );
    }
}
