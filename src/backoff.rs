//! Retry pacing: for connections to services (the KVS signaling master, its ICE-server refresh,
//! the WHIP publisher) and for pipeline restarts (video and audio capture, talkback).
//!
//! Services get jitter, pipelines do not ([`Backoff::without_jitter`]): a fleet of cameras that
//! lost a service together must not come back in lock-step, while one pipeline has no fleet to
//! spread and its operator should see a predictable schedule.
//!
//! Two independent brakes for services: an exponential backoff with full jitter (so a fleet of cameras that lost
//! the service at the same moment does not come back in lock-step), and a hard rolling-window cap on
//! connect attempts, because KVS allows only 3 ConnectAsMaster per second per channel and answers
//! anything beyond that with ClientLimitExceededException — which would itself trigger a retry.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Source of uniform randomness in `[0, 1)`. Injected so tests can pin the jitter.
pub type Jitter = Box<dyn FnMut() -> f64 + Send>;

/// The process-wide RNG, for production use.
pub fn system_jitter() -> Jitter {
    Box::new(rand::random::<f64>)
}

/// No jitter: every delay is the ceiling itself.
fn no_jitter() -> Jitter {
    Box::new(|| 1.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First ceiling; doubles per consecutive failure.
    pub base: Duration,
    /// Ceiling never exceeds this.
    pub cap: Duration,
    /// A connection that stayed up this long counts as healthy and forgets earlier failures.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            reset_after: Duration::from_secs(90),
        }
    }
}

/// Exponential backoff with full jitter: the n-th consecutive failure waits a uniform amount in
/// `[0, min(cap, base·2ⁿ))`.
pub struct Backoff {
    cfg: BackoffConfig,
    failures: u32,
    healthy_since: Option<Instant>,
    jitter: Jitter,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("cfg", &self.cfg)
            .field("failures", &self.failures)
            .field("healthy_since", &self.healthy_since)
            .finish()
    }
}

impl Backoff {
    pub fn new(cfg: BackoffConfig, jitter: Jitter) -> Self {
        Backoff {
            cfg,
            failures: 0,
            healthy_since: None,
            jitter,
        }
    }

    /// A schedule without jitter: `base`, then doubling up to `cap`; a run that stayed up for
    /// `reset_after` before failing starts it over. For pipeline restarts, so a camera that
    /// hiccups once a day reconnects after `base` instead of after the previous day's worst
    /// delay.
    pub fn without_jitter(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        Backoff::new(
            BackoffConfig {
                base,
                cap: cap.max(base),
                reset_after,
            },
            no_jitter(),
        )
    }

    /// Upper bound of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        // 2^20 × 100 ms is far past any sane cap; clamping the shift avoids overflow.
        let factor = 1u32 << self.failures.min(20);
        self.cfg.base.saturating_mul(factor).min(self.cfg.cap)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        self.maybe_reset(now);
        self.healthy_since = None;
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let r = (self.jitter)();
        let r = if r.is_finite() {
            r.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if r >= 1.0 {
            return ceiling;
        }
        // Not `mul_f64`, which panics where f64 rounding lands past `Duration::MAX`.
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * r).map_or(ceiling, |d| d.min(ceiling))
    }

    /// The connection is up; if it stays up for `reset_after`, failures are forgotten.
    pub fn on_healthy(&mut self, now: Instant) {
        if self.healthy_since.is_none() {
            self.healthy_since = Some(now);
        }
    }

    /// The connection went down; stop the healthy clock (without forgetting if not yet due).
    pub fn on_unhealthy(&mut self, now: Instant) {
        self.maybe_reset(now);
        self.healthy_since = None;
    }

    /// Forgets every failure (an explicit success).
    pub fn reset(&mut self) {
        self.failures = 0;
        self.healthy_since = None;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn maybe_reset(&mut self, now: Instant) {
        if let Some(since) = self.healthy_since
            && now.saturating_duration_since(since) >= self.cfg.reset_after
        {
            self.failures = 0;
        }
    }
}

/// At most `max` attempts in any rolling `window`.
#[derive(Debug, Clone)]
pub struct RateCap {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RateCap {
    pub fn new(max: usize, window: Duration) -> Self {
        RateCap {
            max: max.max(1),
            window,
            recent: VecDeque::new(),
        }
    }

    /// The KVS ConnectAsMaster limit: 3 per second per channel.
    pub fn kvs_connect() -> Self {
        RateCap::new(3, Duration::from_secs(1))
    }

    /// Earliest instant at which another attempt is allowed (`now` if allowed right away).
    pub fn earliest(&mut self, now: Instant) -> Instant {
        self.expire(now);
        if self.recent.len() < self.max {
            return now;
        }
        match self.recent.front() {
            Some(oldest) => (*oldest + self.window).max(now),
            None => now,
        }
    }

    /// Records an attempt made at `now`.
    pub fn record(&mut self, now: Instant) {
        self.expire(now);
        self.recent.push_back(now);
        while self.recent.len() > self.max {
            self.recent.pop_front();
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(t) = self.recent.front() {
            if now.saturating_duration_since(*t) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn fixed_jitter(v: f64) -> Jitter {
    Box::new(move || v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn without_jitter_doubles_from_base_and_caps() {
        let t0 = Instant::now();
        let mut b = Backoff::without_jitter(ms(500), ms(30_000), ms(60_000));
        let delays: Vec<_> = (0..9)
            .map(|i| b.next_delay(t0 + ms(i)).as_millis())
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn without_jitter_never_overflows() {
        let mut b = Backoff::without_jitter(Duration::from_secs(1), Duration::MAX, Duration::MAX);
        let t0 = Instant::now();
        for _ in 0..100 {
            b.next_delay(t0);
        }
        // The doubling stops at 2^20 × base, far past any cap a config allows.
        assert_eq!(b.next_delay(t0), Duration::from_secs(1 << 20));
    }

    #[test]
    fn a_pipeline_schedule_resets_only_after_a_healthy_minute() {
        let t0 = Instant::now();
        let mut b = Backoff::without_jitter(ms(500), ms(30_000), ms(60_000));
        b.next_delay(t0);
        b.next_delay(t0);
        // Streamed briefly: still escalating.
        b.on_healthy(t0 + ms(1000));
        assert_eq!(b.next_delay(t0 + ms(5000)), ms(2000));
        // Streamed for a minute: back to the base.
        b.on_healthy(t0 + ms(10_000));
        b.on_healthy(t0 + ms(50_000)); // later frames do not move the start
        assert_eq!(b.next_delay(t0 + ms(70_000)), ms(500));
        assert_eq!(b.next_delay(t0 + ms(70_001)), ms(1000));
    }

    #[test]
    fn ceilings_double_from_100ms_to_10s_cap() {
        let t0 = Instant::now();
        // Jitter just under 1 shows the ceiling itself.
        let mut b = Backoff::new(BackoffConfig::default(), fixed_jitter(0.999_999));
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(b.next_delay(t0).as_millis());
        }
        assert_eq!(
            seen,
            vec![99, 199, 399, 799, 1599, 3199, 6399, 9999, 9999, 9999]
        );
    }

    #[test]
    fn full_jitter_stays_within_bounds_for_any_random_value() {
        let t0 = Instant::now();
        let mut i = 0u64;
        // A deterministic spread across [0,1), including the edges and garbage values.
        let values = [0.0, 0.5, 0.999, f64::NAN, -3.0, 7.0, 0.25];
        let mut b = Backoff::new(
            BackoffConfig::default(),
            Box::new(move || {
                i += 1;
                values[(i as usize) % values.len()]
            }),
        );
        for n in 0..40 {
            let ceiling = b.ceiling();
            let d = b.next_delay(t0);
            assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
            assert!(d <= Duration::from_secs(10));
        }
    }

    #[test]
    fn zero_jitter_retries_immediately() {
        let mut b = Backoff::new(BackoffConfig::default(), fixed_jitter(0.0));
        assert_eq!(b.next_delay(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn healthy_period_resets_the_exponent() {
        let t0 = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default(), fixed_jitter(0.5));
        for _ in 0..8 {
            b.next_delay(t0);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(10));
        // Up for only 30 s: not enough to forget.
        b.on_healthy(t0);
        b.on_unhealthy(t0 + Duration::from_secs(30));
        assert_eq!(b.ceiling(), Duration::from_secs(10));
        // Up for 90 s: the next failure starts from 100 ms again.
        b.on_healthy(t0 + Duration::from_secs(40));
        let d = b.next_delay(t0 + Duration::from_secs(130));
        assert_eq!(d, ms(50));
        assert_eq!(b.ceiling(), ms(200));
    }

    #[test]
    fn rate_cap_allows_three_per_rolling_second() {
        let t0 = Instant::now();
        let mut cap = RateCap::kvs_connect();
        for i in 0..3 {
            let t = t0 + ms(i * 10);
            assert_eq!(cap.earliest(t), t);
            cap.record(t);
        }
        // Fourth attempt at 30 ms must wait until the first one leaves the window.
        assert_eq!(cap.earliest(t0 + ms(30)), t0 + ms(1000));
        cap.record(t0 + ms(1000));
        assert_eq!(cap.earliest(t0 + ms(1000)), t0 + ms(1010));
        // Once the window has moved on, attempts are free again.
        assert_eq!(cap.earliest(t0 + ms(5000)), t0 + ms(5000));
    }

    #[test]
    fn rate_cap_never_exceeds_limit_in_any_window() {
        let t0 = Instant::now();
        let mut cap = RateCap::kvs_connect();
        let mut attempts = Vec::new();
        let mut now = t0;
        // A caller that retries as fast as it is allowed.
        for _ in 0..30 {
            now = cap.earliest(now);
            cap.record(now);
            attempts.push(now);
        }
        for (i, a) in attempts.iter().enumerate() {
            let in_window = attempts[i..]
                .iter()
                .filter(|b| b.duration_since(*a) < Duration::from_secs(1))
                .count();
            assert!(in_window <= 3, "{in_window} attempts within 1 s");
        }
    }
}
