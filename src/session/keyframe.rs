//! Coalescing of keyframe requests (sans-IO).
//!
//! Every joining viewer and every PLI/FIR asks for a keyframe, but a keyframe is the most
//! expensive frame there is and it goes to *everyone*: ten viewers on a lossy link would
//! otherwise turn the stream into a slideshow of IDRs. So requests are merged: at most one
//! reaches the encoder per `min_interval` across all viewers, and a request that arrives inside
//! the window is not lost — it is served when the window ends.

use std::time::{Duration, Instant};

/// Default spacing between two forced keyframes.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// What the driver should do after a request or a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeAction {
    /// Ask the encoder for a keyframe now.
    RequestNow,
    /// A request is pending; call [`KeyframeCoalescer::poll`] at this instant.
    WaitUntil(Instant),
    /// Nothing to do.
    Idle,
}

#[derive(Debug)]
pub struct KeyframeCoalescer {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
    requested: u64,
    sent: u64,
}

impl KeyframeCoalescer {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
            pending: false,
            requested: 0,
            sent: 0,
        }
    }

    /// A viewer wants a keyframe.
    pub fn request(&mut self, now: Instant) -> KeyframeAction {
        self.requested += 1;
        self.pending = true;
        self.poll(now)
    }

    /// Re-evaluate at `now` (after a [`KeyframeAction::WaitUntil`] deadline).
    pub fn poll(&mut self, now: Instant) -> KeyframeAction {
        if !self.pending {
            return KeyframeAction::Idle;
        }
        match self.last_sent {
            Some(last) if now < last + self.min_interval => {
                KeyframeAction::WaitUntil(last + self.min_interval)
            }
            _ => {
                self.pending = false;
                self.last_sent = Some(now);
                self.sent += 1;
                KeyframeAction::RequestNow
            }
        }
    }

    /// (requests received, requests passed to the encoder)
    pub fn counts(&self) -> (u64, u64) {
        (self.requested, self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_request_goes_through_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeCoalescer::new(500 * MS);
        assert_eq!(k.request(t0), KeyframeAction::RequestNow);
        assert_eq!(k.poll(t0 + 10 * MS), KeyframeAction::Idle);
    }

    #[test]
    fn burst_inside_window_becomes_one_deferred_request() {
        let t0 = Instant::now();
        let mut k = KeyframeCoalescer::new(500 * MS);
        assert_eq!(k.request(t0), KeyframeAction::RequestNow);
        for i in 1..=10 {
            assert_eq!(
                k.request(t0 + i * 20 * MS),
                KeyframeAction::WaitUntil(t0 + 500 * MS)
            );
        }
        assert_eq!(
            k.poll(t0 + 499 * MS),
            KeyframeAction::WaitUntil(t0 + 500 * MS)
        );
        assert_eq!(k.poll(t0 + 500 * MS), KeyframeAction::RequestNow);
        assert_eq!(k.poll(t0 + 900 * MS), KeyframeAction::Idle);
        assert_eq!(k.counts(), (11, 2));
    }

    #[test]
    fn request_after_window_is_immediate() {
        let t0 = Instant::now();
        let mut k = KeyframeCoalescer::new(500 * MS);
        k.request(t0);
        assert_eq!(k.request(t0 + 600 * MS), KeyframeAction::RequestNow);
    }
}
