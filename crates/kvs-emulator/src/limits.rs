//! Time-based limits (sans-IO): the service's per-second quotas and the per-connection timers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// "N per second" quota as a sliding one-second window, which is how a client hammering the
/// service experiences it: the (N+1)-th call inside any second is refused.
#[derive(Debug, Clone)]
pub(crate) struct RateWindow {
    limit: usize,
    stamps: VecDeque<Instant>,
}

impl RateWindow {
    pub(crate) fn per_second(limit: usize) -> Self {
        Self {
            limit,
            stamps: VecDeque::new(),
        }
    }

    /// Takes one unit if the quota allows it at `now`.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> bool {
        while let Some(&front) = self.stamps.front() {
            if now.saturating_duration_since(front) >= Duration::from_secs(1) {
                self.stamps.pop_front();
            } else {
                break;
            }
        }
        if self.stamps.len() >= self.limit {
            return false;
        }
        self.stamps.push_back(now);
        true
    }
}

/// Why the service ends a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No frame at all (pings included) for the idle timeout.
    Idle,
    /// The connection reached the maximum duration.
    MaxDuration,
}

/// Idle and maximum-duration timers of one WebSocket connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnTimers {
    opened: Instant,
    last_activity: Instant,
    idle: Duration,
    max_duration: Duration,
}

impl ConnTimers {
    pub(crate) fn new(now: Instant, idle: Duration, max_duration: Duration) -> Self {
        Self {
            opened: now,
            last_activity: now,
            idle,
            max_duration,
        }
    }

    /// Any frame from the client (data, ping, pong, close) counts as activity.
    pub(crate) fn on_activity(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// When `check` next needs to run.
    pub(crate) fn deadline(&self) -> Instant {
        (self.last_activity + self.idle).min(self.opened + self.max_duration)
    }

    pub(crate) fn check(&self, now: Instant) -> Option<Expiry> {
        if now >= self.opened + self.max_duration {
            Some(Expiry::MaxDuration)
        } else if now >= self.last_activity + self.idle {
            Some(Expiry::Idle)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_refuses_the_fourth_call_within_a_second() {
        let t0 = Instant::now();
        let mut w = RateWindow::per_second(3);
        assert!(w.try_acquire(t0));
        assert!(w.try_acquire(t0 + Duration::from_millis(100)));
        assert!(w.try_acquire(t0 + Duration::from_millis(200)));
        assert!(!w.try_acquire(t0 + Duration::from_millis(900)));
        assert!(w.try_acquire(t0 + Duration::from_millis(1000)));
        assert!(!w.try_acquire(t0 + Duration::from_millis(1050)));
    }

    #[test]
    fn timers_expire_on_idle_unless_activity_then_on_max_duration() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = ConnTimers::new(t0, s(10), s(25));
        assert_eq!(t.deadline(), t0 + s(10));
        assert_eq!(t.check(t0 + s(9)), None);
        t.on_activity(t0 + s(9));
        assert_eq!(t.check(t0 + s(10)), None);
        assert_eq!(t.check(t0 + s(19)), Some(Expiry::Idle));
        t.on_activity(t0 + s(18));
        assert_eq!(t.deadline(), t0 + s(25));
        assert_eq!(t.check(t0 + s(25)), Some(Expiry::MaxDuration));
    }
}
