//! The capture's decisions, without GStreamer or threads: when a quiet pipeline counts as
//! stalled, and how to keep timestamps moving forward. (How long to wait before a restart is
//! [`crate::backoff::Backoff::without_jitter`].)
//! The driver in `capture.rs` feeds these the current time.

use std::time::{Duration, Instant};

/// Whether a running pipeline has gone quiet for too long. Before its first access unit a
/// pipeline gets `startup` (an RTSP camera may take seconds to answer), after it `stall`.
pub fn is_stalled(
    now: Instant,
    started: Instant,
    last_frame: Option<Instant>,
    startup: Duration,
    stall: Duration,
) -> Option<Duration> {
    let (since, limit) = match last_frame {
        Some(t) if t >= started => (t, stall),
        _ => (started, startup.max(stall)),
    };
    (now.saturating_duration_since(since) >= limit).then_some(limit)
}

/// Keeps access-unit timestamps monotonic across pipeline restarts and file loops, where
/// GStreamer's running time starts over at zero. The driver calls [`discontinuity`] when it
/// knows the clock restarts (new pipeline, seek after end of file): the next timestamp then
/// continues one frame after the last one if it would not move forward. Otherwise small
/// backward steps (B-frame reordering from a camera) pass through untouched, and only a jump
/// back by more than `max_reorder` is rebased.
///
/// [`discontinuity`]: PtsContinuity::discontinuity
#[derive(Debug, Clone)]
pub struct PtsContinuity {
    offset: u64,
    last: Option<u64>,
    frame: u64,
    max_reorder: u64,
    pending: bool,
}

impl PtsContinuity {
    pub fn new(frame_duration_ns: u64) -> Self {
        PtsContinuity {
            offset: 0,
            last: None,
            frame: frame_duration_ns.max(1),
            max_reorder: 500_000_000,
            pending: false,
        }
    }

    /// The next timestamp comes from a restarted clock. Must only be called when no frame of
    /// the old clock can still arrive (old pipeline at NULL, or end of stream reached).
    pub fn discontinuity(&mut self) {
        self.pending = true;
    }

    pub fn map(&mut self, running_time_ns: u64) -> u64 {
        let mut out = running_time_ns.saturating_add(self.offset);
        let pending = std::mem::take(&mut self.pending);
        if let Some(last) = self.last
            && (out.saturating_add(self.max_reorder) < last || (pending && out <= last))
        {
            let target = last.saturating_add(self.frame);
            self.offset = target.saturating_sub(running_time_ns);
            out = target;
        }
        self.last = Some(self.last.map_or(out, |l| l.max(out)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn stall_uses_startup_grace_then_stall_timeout() {
        let t0 = Instant::now();
        let (startup, stall) = (10_000 * MS, 2000 * MS);
        assert_eq!(is_stalled(t0 + 9000 * MS, t0, None, startup, stall), None);
        assert_eq!(
            is_stalled(t0 + 10_000 * MS, t0, None, startup, stall),
            Some(startup)
        );
        let f = Some(t0 + 100 * MS);
        assert_eq!(is_stalled(t0 + 2000 * MS, t0, f, startup, stall), None);
        assert_eq!(
            is_stalled(t0 + 2100 * MS, t0, f, startup, stall),
            Some(stall)
        );
        // A frame from the previous pipeline does not count for the new one.
        let restarted = t0 + 3000 * MS;
        assert_eq!(
            is_stalled(t0 + 4000 * MS, restarted, f, startup, stall),
            None
        );
    }

    #[test]
    fn pts_stays_monotonic_across_restart_and_loop() {
        let frame = 33_333_333;
        let mut p = PtsContinuity::new(frame);
        assert_eq!(p.map(0), 0);
        assert_eq!(p.map(5_000_000_000), 5_000_000_000);
        // Restart: running time starts over.
        assert_eq!(p.map(0), 5_000_000_000 + frame);
        assert_eq!(p.map(frame), 5_000_000_000 + 2 * frame);
        // Reordering within a frame or two is left alone.
        assert_eq!(p.map(0), 5_000_000_000 + frame);
        // A forward jump is allowed.
        assert_eq!(
            p.map(60_000_000_000),
            60_000_000_000 + 5_000_000_000 + frame
        );
    }

    #[test]
    fn announced_discontinuity_rebases_even_a_short_jump_back() {
        let frame = 33_333_333;
        let mut p = PtsContinuity::new(frame);
        p.map(100_000_000);
        assert_eq!(p.map(300_000_000), 300_000_000);
        // A pipeline that ran 0.3 s restarts: without the hint this looks like reordering.
        p.discontinuity();
        assert_eq!(p.map(10_000_000), 300_000_000 + frame);
        assert_eq!(p.map(10_000_000 + frame), 300_000_000 + 2 * frame);
        // The hint is used once; a later small step back is left alone again.
        assert_eq!(p.map(10_000_000), 300_000_000 + frame);
        // A restarted clock that is already ahead is kept as is.
        p.discontinuity();
        assert_eq!(p.map(900_000_000), 900_000_000 + 290_000_000 + frame);
    }
}
