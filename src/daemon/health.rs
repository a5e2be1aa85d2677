//! The signaling part of `/healthz`, decided from a KVS stats snapshot: pure, so the rule is
//! tested without a daemon.

use std::time::Duration;

use crate::signaling::kvs::StatsSnapshot;

/// The KVS master as `/healthz` reports it (member `signaling`, kvs mode only).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SignalingHealth {
    /// `connected`, `backoff`, `describe`, … (the machine's state).
    pub state: &'static str,
    /// Seconds since the master was last connected (since start if never); None while
    /// connected.
    pub offline_s: Option<f64>,
    /// Offline for longer than `kvs.offline_degraded_after_s`: existing viewers keep their
    /// video, but no new viewer can reach the camera.
    pub degraded: bool,
    /// Why it is degraded, with the last signaling error.
    pub reason: Option<String>,
}

impl SignalingHealth {
    pub fn from_snapshot(snap: &StatsSnapshot, degraded_after: Duration) -> SignalingHealth {
        let offline = snap.offline_for;
        let degraded = offline.is_some_and(|d| d >= degraded_after);
        let reason = degraded.then(|| {
            let mut r = format!(
                "KVS signaling offline for {:.0} s (state {})",
                offline.unwrap_or_default().as_secs_f64(),
                snap.state
            );
            if let Some(e) = &snap.last_error {
                r.push_str("; last error: ");
                r.push_str(e);
            }
            r
        });
        SignalingHealth {
            state: snap.state,
            offline_s: offline.map(|d| d.as_secs_f64()),
            degraded,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::kvs::KvsStats;
    use crate::signaling::kvs::machine::{Cause, State};
    use std::time::Instant;

    #[test]
    fn degraded_only_after_the_threshold_offline() {
        let stats = KvsStats::new();
        let limit = Duration::from_secs(120);
        let mut snap = stats.snapshot();
        // Just started and not connected yet: offline, but not for long.
        let h = SignalingHealth::from_snapshot(&snap, limit);
        assert!(!h.degraded && h.reason.is_none(), "{h:?}");
        assert!(h.offline_s.is_some());
        snap.state = "backoff";
        snap.offline_for = Some(Duration::from_secs(121));
        snap.last_error = Some("DescribeSignalingChannel: timed out".into());
        let h = SignalingHealth::from_snapshot(&snap, limit);
        assert!(h.degraded, "{h:?}");
        let reason = h.reason.unwrap_or_default();
        assert!(
            reason.contains("offline for 121 s (state backoff)")
                && reason.contains("DescribeSignalingChannel: timed out"),
            "{reason}"
        );
        // Connected: neither offline nor degraded, whatever happened before.
        stats.connected(Cause::Initial, Instant::now());
        let h = SignalingHealth::from_snapshot(&stats.snapshot(), limit);
        assert_eq!(h.offline_s, None);
        assert!(!h.degraded);
        // Losing the connection starts the offline clock again.
        stats.set_state_at(State::Backoff, Instant::now() - Duration::from_secs(130));
        let h = SignalingHealth::from_snapshot(&stats.snapshot(), limit);
        assert!(h.degraded && h.offline_s.unwrap_or(0.0) >= 130.0, "{h:?}");
    }
}
