//! Coalescing of keyframe requests (sans-IO).
//!
//! Every joining viewer and every PLI/FIR asks for a keyframe, but a keyframe is the most
//! expensive frame there is and it goes to *everyone*: ten viewers on a lossy link would
//! otherwise turn the stream into a slideshow of IDRs. So requests are merged, with two
//! spacings:
//!
//! - a **repair** (PLI/FIR, a viewer that fell behind) is passed on at most once per
//!   `repair_interval` (500 ms by default) since the last forced keyframe;
//! - a **join** is passed on at most once per `join_interval`, one encoder frame interval: the
//!   encoder cannot emit two IDRs closer than that anyway, and a new viewer sees nothing until
//!   its IDR, so it must not wait out a window opened for somebody else.
//!
//! A request that arrives inside its window is not lost: it is served when the window ends,
//! and one forced keyframe serves every request pending at that moment, whatever its kind.

use std::time::{Duration, Instant};

/// Default spacing between two keyframes forced for repairs (PLI/FIR, losses).
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_millis(500);

/// Why a keyframe is wanted, as far as the spacing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A viewer just connected: it shows nothing until it gets an IDR.
    Join,
    /// A viewer's picture is damaged (PLI/FIR) or it skipped frames; it still shows one.
    Repair,
}

/// The two spacings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframePolicy {
    /// Least time between a forced keyframe and one forced for a repair.
    pub repair_interval: Duration,
    /// Least time between a forced keyframe and one forced for a joining viewer.
    pub join_interval: Duration,
}

impl KeyframePolicy {
    /// The default repair spacing, and joins spaced by one frame at `framerate` fps.
    pub fn for_framerate(framerate: u32) -> Self {
        Self {
            repair_interval: DEFAULT_REPAIR_INTERVAL,
            join_interval: Duration::from_secs(1) / framerate.max(1),
        }
    }

    fn interval(&self, urgency: Urgency) -> Duration {
        match urgency {
            Urgency::Join => self.join_interval,
            Urgency::Repair => self.repair_interval,
        }
    }
}

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
    /// The spacings, fixed for the coalescer's life.
    policy: KeyframePolicy,
    /// When the last keyframe was passed on; None before the first.
    last_sent: Option<Instant>,
    /// A joining viewer waits for a keyframe not yet passed on.
    pending_join: bool,
    /// A repair waits for a keyframe not yet passed on.
    pending_repair: bool,
    /// Requests received, for the status.
    requested: u64,
    /// Keyframes passed on to the encoder, for the status.
    sent: u64,
}

impl KeyframeCoalescer {
    pub fn new(policy: KeyframePolicy) -> Self {
        Self {
            policy,
            last_sent: None,
            pending_join: false,
            pending_repair: false,
            requested: 0,
            sent: 0,
        }
    }

    /// A viewer wants a keyframe; [`Self::poll`] says when to pass it on. For requests that
    /// arrive together, note each one and poll once, so one keyframe serves them all.
    pub fn want(&mut self, urgency: Urgency) {
        self.requested += 1;
        match urgency {
            Urgency::Join => self.pending_join = true,
            Urgency::Repair => self.pending_repair = true,
        }
    }

    /// A viewer wants a keyframe: [`Self::want`] then [`Self::poll`].
    pub fn request(&mut self, urgency: Urgency, now: Instant) -> KeyframeAction {
        self.want(urgency);
        self.poll(now)
    }

    /// Re-evaluate at `now` (after a request, or at a [`KeyframeAction::WaitUntil`] deadline).
    pub fn poll(&mut self, now: Instant) -> KeyframeAction {
        let Some(due) = self.due() else {
            return KeyframeAction::Idle;
        };
        match due {
            Some(at) if now < at => KeyframeAction::WaitUntil(at),
            _ => {
                self.pending_join = false;
                self.pending_repair = false;
                self.last_sent = Some(now);
                self.sent += 1;
                KeyframeAction::RequestNow
            }
        }
    }

    /// None: nothing pending. Some(None): due at once. Some(Some(t)): due at `t`, the earliest
    /// deadline of the kinds pending.
    fn due(&self) -> Option<Option<Instant>> {
        let pending = [
            (self.pending_join, Urgency::Join),
            (self.pending_repair, Urgency::Repair),
        ];
        let interval = pending
            .iter()
            .filter(|(p, _)| *p)
            .map(|(_, u)| self.policy.interval(*u))
            .min()?;
        Some(self.last_sent.map(|last| last + interval))
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

    /// 30 fps: joins 33.3 ms apart at least, repairs 500 ms.
    fn policy() -> KeyframePolicy {
        KeyframePolicy::for_framerate(30)
    }

    #[test]
    fn the_policy_spaces_joins_by_one_frame() {
        assert_eq!(policy().repair_interval, 500 * MS);
        assert_eq!(policy().join_interval, Duration::from_nanos(33_333_333));
        assert_eq!(KeyframePolicy::for_framerate(0).join_interval, 1000 * MS);
    }

    #[test]
    fn first_request_goes_through_at_once() {
        for urgency in [Urgency::Join, Urgency::Repair] {
            let t0 = Instant::now();
            let mut k = KeyframeCoalescer::new(policy());
            assert_eq!(k.request(urgency, t0), KeyframeAction::RequestNow);
            assert_eq!(k.poll(t0 + 10 * MS), KeyframeAction::Idle);
        }
    }

    #[test]
    fn burst_of_repairs_inside_window_becomes_one_deferred_request() {
        let t0 = Instant::now();
        let mut k = KeyframeCoalescer::new(policy());
        assert_eq!(k.request(Urgency::Repair, t0), KeyframeAction::RequestNow);
        for i in 1..=10 {
            assert_eq!(
                k.request(Urgency::Repair, t0 + i * 20 * MS),
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
        let mut k = KeyframeCoalescer::new(policy());
        k.request(Urgency::Repair, t0);
        assert_eq!(
            k.request(Urgency::Repair, t0 + 600 * MS),
            KeyframeAction::RequestNow
        );
    }

    /// The case: viewer A joined (keyframe forced); viewer B joins 5 ms later and must
    /// not wait out A's 500 ms window, only until one frame after A's keyframe.
    #[test]
    fn a_joiner_waits_at_most_one_frame_behind_another_joiner() {
        let t0 = Instant::now();
        let p = policy();
        let mut k = KeyframeCoalescer::new(p);
        assert_eq!(k.request(Urgency::Join, t0), KeyframeAction::RequestNow);
        let b = t0 + 5 * MS;
        let due = t0 + p.join_interval;
        assert_eq!(k.request(Urgency::Join, b), KeyframeAction::WaitUntil(due));
        assert!(due - b <= p.join_interval);
        assert_eq!(k.poll(due), KeyframeAction::RequestNow);
        assert_eq!(k.counts(), (2, 2));
    }

    /// Nor behind a repair's window: a viewer's PLI opened a 500 ms window, a new viewer comes.
    #[test]
    fn a_joiner_waits_at_most_one_frame_behind_a_repair() {
        let t0 = Instant::now();
        let p = policy();
        let mut k = KeyframeCoalescer::new(p);
        assert_eq!(k.request(Urgency::Repair, t0), KeyframeAction::RequestNow);
        assert_eq!(
            k.request(Urgency::Repair, t0 + 10 * MS),
            KeyframeAction::WaitUntil(t0 + 500 * MS)
        );
        // The join pulls the pending repair forward with it: one keyframe serves both.
        let due = t0 + p.join_interval;
        assert_eq!(
            k.request(Urgency::Join, t0 + 20 * MS),
            KeyframeAction::WaitUntil(due)
        );
        assert_eq!(k.poll(due), KeyframeAction::RequestNow);
        assert_eq!(k.poll(t0 + 500 * MS), KeyframeAction::Idle);
        assert_eq!(k.counts(), (3, 2));
    }

    /// A join long after the last keyframe is passed on at once.
    #[test]
    fn a_joiner_after_a_repair_window_goes_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeCoalescer::new(policy());
        k.request(Urgency::Repair, t0);
        assert_eq!(
            k.request(Urgency::Join, t0 + 40 * MS),
            KeyframeAction::RequestNow
        );
    }

    /// Joins keep the repair spacing counted from the last keyframe forced, whatever for: a
    /// repair right after a join's keyframe waits, since that keyframe is already on its way.
    #[test]
    fn a_repair_after_a_join_keeps_the_repair_spacing() {
        let t0 = Instant::now();
        let mut k = KeyframeCoalescer::new(policy());
        k.request(Urgency::Join, t0);
        assert_eq!(
            k.request(Urgency::Repair, t0 + 40 * MS),
            KeyframeAction::WaitUntil(t0 + 500 * MS)
        );
    }

    /// Requests noted together are served by one keyframe, even when one alone would go now.
    #[test]
    fn requests_noted_together_are_served_by_one_keyframe() {
        let t0 = Instant::now();
        let mut k = KeyframeCoalescer::new(policy());
        k.want(Urgency::Repair);
        k.want(Urgency::Join);
        assert_eq!(k.poll(t0), KeyframeAction::RequestNow);
        assert_eq!(k.poll(t0 + 1000 * MS), KeyframeAction::Idle);
        assert_eq!(k.counts(), (2, 1));
    }

    /// Many viewers joining over a second at 30 fps: never more than one keyframe per frame
    /// interval, and no joiner waits longer than one frame interval.
    #[test]
    fn a_stream_of_joiners_gets_at_most_one_keyframe_per_frame() {
        let t0 = Instant::now();
        let p = policy();
        let mut k = KeyframeCoalescer::new(p);
        let mut sent: Vec<Instant> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut waiting_since: Option<Instant> = None;
        // Virtual clock in 1 ms steps; a viewer joins every 7 ms.
        for ms in 0..1000u32 {
            let now = t0 + ms * MS;
            let mut actions = Vec::new();
            if deadline.is_some_and(|d| now >= d) {
                actions.push(k.poll(now));
            }
            if ms % 7 == 0 {
                waiting_since.get_or_insert(now);
                actions.push(k.request(Urgency::Join, now));
            }
            for action in actions {
                match action {
                    KeyframeAction::RequestNow => {
                        sent.push(now);
                        let since = waiting_since.take().unwrap_or(now);
                        assert!(now - since <= p.join_interval + MS);
                        deadline = None;
                    }
                    KeyframeAction::WaitUntil(t) => deadline = Some(t),
                    KeyframeAction::Idle => {}
                }
            }
        }
        for pair in sent.windows(2) {
            assert!(pair[1] - pair[0] >= p.join_interval);
        }
        assert!(sent.len() <= 31, "{} keyframes in a second", sent.len());
    }
}
