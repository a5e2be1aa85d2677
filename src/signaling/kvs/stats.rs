//! What the KVS master has been doing, for logs, health checks and metrics.
//!
//! One mutex around a plain struct: updates happen a few times a minute, so contention is not a
//! concern and a consistent snapshot is worth more than lock-free counters.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::histogram::Histogram;

use super::machine::{Cause, State};

/// How many offer → answer times are kept.
const RECENT_SESSIONS: usize = 32;

#[derive(Debug, Default)]
pub struct KvsStats {
    inner: Mutex<Inner>,
    /// Where each offer → answer time (SDP_OFFER received → SDP_ANSWER written to the
    /// WebSocket) is also observed, when metrics are on.
    offer_to_answer: Option<Histogram>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    connects: u64,
    reconnects: [u64; Cause::ALL.len()],
    last_connect: Option<SystemTime>,
    connected_at: Option<Instant>,
    /// Since when the master has not been connected (since the stats were made, before the
    /// first connect); None while connected.
    offline_since: Option<Instant>,
    ice_fetched_at: Option<Instant>,
    ice_refreshes: u64,
    turn_servers: usize,
    offer_to_answer_ms: VecDeque<u64>,
    offers: u64,
    messages_in: u64,
    messages_out: u64,
    dropped_frames: u64,
    errors: u64,
    last_error: Option<String>,
    clock_offset_ms: i64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            state: State::Idle,
            connects: 0,
            reconnects: [0; Cause::ALL.len()],
            last_connect: None,
            connected_at: None,
            offline_since: Some(Instant::now()),
            ice_fetched_at: None,
            ice_refreshes: 0,
            turn_servers: 0,
            offer_to_answer_ms: VecDeque::new(),
            offers: 0,
            messages_in: 0,
            messages_out: 0,
            dropped_frames: 0,
            errors: 0,
            last_error: None,
            clock_offset_ms: 0,
        }
    }
}

/// A consistent copy of the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Signaling state (`connected`, `backoff`, …).
    pub state: &'static str,
    /// Successful WebSocket connects, the first included.
    pub connects: u64,
    /// Successful reconnects by cause (`go-away`, `max-age`, `socket-closed`, …).
    pub reconnects: Vec<(&'static str, u64)>,
    pub last_connect: Option<SystemTime>,
    /// How long the current connection has been up.
    pub connected_for: Option<Duration>,
    /// How long the master has not been connected (since start if it never was); None while
    /// connected.
    pub offline_for: Option<Duration>,
    /// Age of the ICE (TURN) configuration handed to new sessions.
    pub ice_config_age: Option<Duration>,
    pub ice_refreshes: u64,
    pub turn_servers: usize,
    /// Offer received → answer sent, most recent last.
    pub offer_to_answer_ms: Vec<u64>,
    pub offers: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Frames that were not usable messages (non-envelopes, bad payloads, binary).
    pub dropped_frames: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Service clock minus local clock, as learned from signature-time errors.
    pub clock_offset_ms: i64,
}

impl StatsSnapshot {
    /// The snapshot as JSON, for the daemon's `/stats`.
    pub fn to_json(&self) -> serde_json::Value {
        let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
        serde_json::json!({
            "state": self.state,
            "connects": self.connects,
            "reconnects": self.reconnects.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "last_connect_unix_s": self.last_connect
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            "connected_for_s": secs(self.connected_for),
            "offline_s": secs(self.offline_for),
            "ice_config_age_s": secs(self.ice_config_age),
            "ice_refreshes": self.ice_refreshes,
            "turn_servers": self.turn_servers,
            "offer_to_answer_ms": self.offer_to_answer_ms,
            "offers": self.offers,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "dropped_frames": self.dropped_frames,
            "errors": self.errors,
            "last_error": self.last_error,
            "clock_offset_ms": self.clock_offset_ms,
        })
    }

    pub fn total_reconnects(&self) -> u64 {
        self.reconnects.iter().map(|(_, n)| n).sum()
    }

    pub fn reconnects_for(&self, cause: &str) -> u64 {
        self.reconnects
            .iter()
            .find(|(c, _)| *c == cause)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

impl KvsStats {
    pub fn new() -> Self {
        KvsStats::default()
    }

    /// Stats that also observe every offer → answer time into `histogram`.
    pub fn with_offer_to_answer(histogram: Histogram) -> Self {
        KvsStats {
            offer_to_answer: Some(histogram),
            ..KvsStats::default()
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let now = Instant::now();
        self.with(|s| StatsSnapshot {
            state: s.state.as_str(),
            connects: s.connects,
            reconnects: Cause::ALL
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != Cause::Initial)
                .map(|(i, c)| (c.as_str(), s.reconnects[i]))
                .collect(),
            last_connect: s.last_connect,
            connected_for: s.connected_at.map(|t| now.saturating_duration_since(t)),
            offline_for: s.offline_since.map(|t| now.saturating_duration_since(t)),
            ice_config_age: s.ice_fetched_at.map(|t| now.saturating_duration_since(t)),
            ice_refreshes: s.ice_refreshes,
            turn_servers: s.turn_servers,
            offer_to_answer_ms: s.offer_to_answer_ms.iter().copied().collect(),
            offers: s.offers,
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            dropped_frames: s.dropped_frames,
            errors: s.errors,
            last_error: s.last_error.clone(),
            clock_offset_ms: s.clock_offset_ms,
        })
    }

    pub(crate) fn set_state(&self, state: State) {
        self.set_state_at(state, Instant::now());
    }

    pub(crate) fn set_state_at(&self, state: State, now: Instant) {
        self.with(|s| {
            s.state = state;
            if state != State::Connected {
                s.connected_at = None;
                s.offline_since.get_or_insert(now);
            }
        });
    }

    pub(crate) fn connected(&self, cause: Cause, now: Instant) {
        self.with(|s| {
            s.connects += 1;
            if cause != Cause::Initial
                && let Some(i) = Cause::ALL.iter().position(|c| *c == cause)
            {
                s.reconnects[i] += 1;
            }
            s.last_connect = Some(SystemTime::now());
            s.connected_at = Some(now);
            s.offline_since = None;
            s.state = State::Connected;
        });
    }

    pub(crate) fn ice_fetched(&self, now: Instant, turn_servers: usize) {
        self.with(|s| {
            s.ice_fetched_at = Some(now);
            s.ice_refreshes += 1;
            s.turn_servers = turn_servers;
        });
    }

    pub(crate) fn offer_in(&self) {
        self.with(|s| s.offers += 1);
    }

    pub(crate) fn answered(&self, elapsed: Duration) {
        if let Some(h) = &self.offer_to_answer {
            h.observe(elapsed.as_secs_f64());
        }
        self.with(|s| {
            if s.offer_to_answer_ms.len() >= RECENT_SESSIONS {
                s.offer_to_answer_ms.pop_front();
            }
            s.offer_to_answer_ms
                .push_back(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        });
    }

    pub(crate) fn message_in(&self) {
        self.with(|s| s.messages_in += 1);
    }

    pub(crate) fn message_out(&self) {
        self.with(|s| s.messages_out += 1);
    }

    pub(crate) fn dropped_frame(&self) {
        self.with(|s| s.dropped_frames += 1);
    }

    pub(crate) fn error(&self, what: String) {
        self.with(|s| {
            s.errors += 1;
            // Service error bodies may quote a signed request; shown in /stats and /healthz.
            s.last_error = Some(crate::redact::redact_text(&what));
        });
    }

    pub(crate) fn clock_offset(&self, ms: i64) {
        self.with(|s| s.clock_offset_ms = ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconnects_by_cause_and_keeps_recent_answer_times() {
        let st = KvsStats::new();
        let now = Instant::now();
        st.connected(Cause::Initial, now);
        st.connected(Cause::GoAway, now);
        st.connected(Cause::MaxAge, now);
        st.connected(Cause::MaxAge, now);
        for i in 0..40 {
            st.answered(Duration::from_millis(i));
        }
        st.error("x".into());
        let s = st.snapshot();
        assert_eq!(s.connects, 4);
        assert_eq!(s.total_reconnects(), 3);
        assert_eq!(s.reconnects_for("max-age"), 2);
        assert_eq!(s.reconnects_for("go-away"), 1);
        assert_eq!(s.state, "connected");
        assert_eq!(s.offer_to_answer_ms.len(), 32);
        assert_eq!(s.offer_to_answer_ms.last(), Some(&39));
        assert_eq!(s.errors, 1);
        st.set_state(State::Backoff);
        assert_eq!(st.snapshot().connected_for, None);
    }
}
