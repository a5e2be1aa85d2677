//! The WHIP publish policy, sans-IO: events and `now` in, actions out.
//!
//! One publication at a time. The driver (`driver.rs`) does what the actions say (build a
//! peer and POST its offer, DELETE a resource, sleep) and reports back what happened; every
//! decision about *when* to try again and *why* lives here, so it is tested on a virtual
//! clock.
//!
//! Retry policy:
//! - every failure (refused, unreachable, timed out, no connection, connection dropped) waits
//!   for the shared [`Backoff`] (full jitter, ceiling doubling up to 30 s);
//! - a `Retry-After` from the server is a floor on that wait (capped at
//!   [`MAX_RETRY_AFTER`] so a misconfigured server cannot park us for a day);
//! - 401/403 (a wrong or expired token) wait the full cap every time: retrying faster cannot
//!   fix a token, and the error says what to change;
//! - a publication that stayed up for [`BackoffConfig::reset_after`] forgets earlier
//!   failures.

use std::time::{Duration, Instant};

use crate::backoff::{Backoff, BackoffConfig, Jitter};

/// Longest `Retry-After` we honour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The backoff for republishing: 500 ms doubling to a 30 s cap; a publication that stays up
/// for a minute counts as healthy.
pub fn backoff_config() -> BackoffConfig {
    BackoffConfig {
        base: Duration::from_millis(500),
        cap: Duration::from_secs(30),
        reset_after: Duration::from_secs(60),
    }
}

/// Why a publication attempt failed or ended (the `cause` label of the republish counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// 401 or 403: the bearer token is wrong or expired.
    Unauthorized,
    /// 503 (with or without `Retry-After`), or 429.
    Unavailable,
    /// Another 4xx/5xx, or a 2xx that is not a usable 201.
    Refused,
    /// The server could not be reached (connect refused, DNS, TLS, reset).
    Network,
    /// No HTTP answer within the request timeout.
    Timeout,
    /// The server's answer SDP was unusable.
    BadAnswer,
    /// ICE/DTLS never came up after the answer.
    ConnectFailed,
    /// The connection was up, then ICE/DTLS failed or the server closed it.
    Dropped,
    /// Our own side failed (building the peer, creating the offer).
    Local,
}

impl Cause {
    pub const ALL: [Cause; 9] = [
        Cause::Unauthorized,
        Cause::Unavailable,
        Cause::Refused,
        Cause::Network,
        Cause::Timeout,
        Cause::BadAnswer,
        Cause::ConnectFailed,
        Cause::Dropped,
        Cause::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Unauthorized => "unauthorized",
            Cause::Unavailable => "unavailable",
            Cause::Refused => "refused",
            Cause::Network => "network",
            Cause::Timeout => "timeout",
            Cause::BadAnswer => "bad_answer",
            Cause::ConnectFailed => "connect_failed",
            Cause::Dropped => "dropped",
            Cause::Local => "local",
        }
    }

    /// Its slot in per-cause counters: the declaration order, as in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The cause of an HTTP status that is not our 201.
    pub fn of_status(status: u16) -> Cause {
        match status {
            401 | 403 => Cause::Unauthorized,
            429 | 503 => Cause::Unavailable,
            _ => Cause::Refused,
        }
    }
}

/// A failed attempt, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// For logs, health and `/stats`: what went wrong, in words (never the token).
    pub detail: String,
}

impl Failure {
    pub fn new(cause: Cause, detail: impl Into<String>) -> Failure {
        Failure {
            cause,
            retry_after: None,
            detail: detail.into(),
        }
    }
}

/// What the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin publishing.
    Start,
    /// A wait the machine asked for is over.
    Timer,
    /// The server answered 201; `resource` is the absolute URL of the `Location`.
    Created { resource: String },
    /// ICE and DTLS are up: media flows.
    Connected,
    /// The attempt (or the running publication) failed.
    Failed(Failure),
    /// Shutting down: release the resource and stop.
    Stop,
}

/// What the driver must do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build a peer, make the offer and POST it to the endpoint.
    Post,
    /// DELETE this resource (best effort: the publication is over either way).
    Delete { resource: String },
    /// Report nothing back until this instant, then [`Event::Timer`].
    WaitUntil(Instant),
    /// Wait for the connection to come up or fail ([`Event::Connected`] / [`Event::Failed`]).
    AwaitConnection,
    /// Media flows; wait for it to fail or for [`Event::Stop`].
    Run,
    /// Finished: nothing more will happen.
    Done,
}

/// The machine's state, as health and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started.
    Idle,
    /// Building the offer and waiting for the server's 201.
    Posting,
    /// Answered; ICE/DTLS connecting.
    Connecting,
    /// Media flows to the server.
    Publishing,
    /// Waiting before the next attempt.
    Backoff,
    /// Stopped (shutdown).
    Stopped,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Idle,
        Phase::Posting,
        Phase::Connecting,
        Phase::Publishing,
        Phase::Backoff,
        Phase::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Posting => "posting",
            Phase::Connecting => "connecting",
            Phase::Publishing => "publishing",
            Phase::Backoff => "backoff",
            Phase::Stopped => "stopped",
        }
    }
}

/// The publish state machine.
pub struct PublishMachine {
    /// Where we are.
    phase: Phase,
    /// The resource of the current publication (from `Location`), to DELETE when it ends.
    resource: Option<String>,
    /// When the current backoff ends (in [`Phase::Backoff`]).
    retry_at: Option<Instant>,
    /// Paces republishing; shared type with the KVS signaling client.
    backoff: Backoff,
    /// The cap of the backoff, which is also the fixed wait after a token is refused.
    cap: Duration,
    /// The last failure, kept until the next successful connection (for health).
    last_failure: Option<Failure>,
}

impl std::fmt::Debug for PublishMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishMachine")
            .field("phase", &self.phase)
            .field("resource", &self.resource.as_ref().map(|_| "…"))
            .field("retry_at", &self.retry_at)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl PublishMachine {
    pub fn new(cfg: BackoffConfig, jitter: Jitter) -> PublishMachine {
        PublishMachine {
            phase: Phase::Idle,
            resource: None,
            retry_at: None,
            backoff: Backoff::new(cfg, jitter),
            cap: cfg.cap,
            last_failure: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the next attempt is due, while in [`Phase::Backoff`].
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The last failure since the last time media flowed.
    pub fn last_failure(&self) -> Option<&Failure> {
        self.last_failure.as_ref()
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        if self.phase == Phase::Stopped {
            return vec![Action::Done];
        }
        match event {
            Event::Stop => {
                self.phase = Phase::Stopped;
                self.retry_at = None;
                let mut out: Vec<Action> = self
                    .resource
                    .take()
                    .map(|resource| Action::Delete { resource })
                    .into_iter()
                    .collect();
                out.push(Action::Done);
                out
            }
            Event::Start if self.phase == Phase::Idle => self.post(),
            Event::Timer if self.phase == Phase::Backoff => match self.retry_at {
                Some(t) if now < t => vec![Action::WaitUntil(t)],
                _ => self.post(),
            },
            Event::Created { resource } if self.phase == Phase::Posting => {
                self.resource = Some(resource);
                self.phase = Phase::Connecting;
                vec![Action::AwaitConnection]
            }
            Event::Connected if self.phase == Phase::Connecting => {
                self.phase = Phase::Publishing;
                self.last_failure = None;
                self.backoff.on_healthy(now);
                vec![Action::Run]
            }
            Event::Failed(f)
                if matches!(
                    self.phase,
                    Phase::Posting | Phase::Connecting | Phase::Publishing
                ) =>
            {
                self.fail(f, now)
            }
            // Anything else is out of order (a late report): keep doing what we do.
            _ => self.current(),
        }
    }

    fn post(&mut self) -> Vec<Action> {
        self.phase = Phase::Posting;
        self.retry_at = None;
        vec![Action::Post]
    }

    fn current(&self) -> Vec<Action> {
        match self.phase {
            Phase::Idle => vec![],
            Phase::Posting => vec![],
            Phase::Connecting => vec![Action::AwaitConnection],
            Phase::Publishing => vec![Action::Run],
            Phase::Backoff => self.retry_at.map(Action::WaitUntil).into_iter().collect(),
            Phase::Stopped => vec![Action::Done],
        }
    }

    fn fail(&mut self, f: Failure, now: Instant) -> Vec<Action> {
        if self.phase == Phase::Publishing {
            self.backoff.on_unhealthy(now);
        }
        let mut wait = self.backoff.next_delay(now);
        if f.cause == Cause::Unauthorized {
            // A token does not fix itself faster for being retried.
            wait = self.cap;
        }
        if let Some(ra) = f.retry_after {
            wait = wait.max(ra.min(MAX_RETRY_AFTER));
        }
        let until = now + wait;
        self.phase = Phase::Backoff;
        self.retry_at = Some(until);
        self.last_failure = Some(f);
        let mut out: Vec<Action> = self
            .resource
            .take()
            .map(|resource| Action::Delete { resource })
            .into_iter()
            .collect();
        out.push(Action::WaitUntil(until));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::fixed_jitter;

    fn machine(jitter: f64) -> PublishMachine {
        PublishMachine::new(backoff_config(), fixed_jitter(jitter))
    }

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    fn created() -> Event {
        Event::Created {
            resource: "http://sfu/whip/r/1".into(),
        }
    }

    /// Drives one full cycle to Publishing.
    fn publish(m: &mut PublishMachine, now: Instant) {
        assert_eq!(m.handle(Event::Timer, now), vec![Action::Post]);
        assert_eq!(m.handle(created(), now), vec![Action::AwaitConnection]);
        assert_eq!(m.handle(Event::Connected, now), vec![Action::Run]);
    }

    #[test]
    fn posts_connects_and_deletes_on_stop() {
        let t0 = Instant::now();
        let mut m = machine(0.5);
        assert_eq!(m.handle(Event::Start, t0), vec![Action::Post]);
        assert_eq!(m.phase(), Phase::Posting);
        assert_eq!(m.handle(created(), t0), vec![Action::AwaitConnection]);
        assert_eq!(m.handle(Event::Connected, t0), vec![Action::Run]);
        assert_eq!(m.phase(), Phase::Publishing);
        assert_eq!(
            m.handle(Event::Stop, t0 + s(5)),
            vec![
                Action::Delete {
                    resource: "http://sfu/whip/r/1".into()
                },
                Action::Done
            ]
        );
        assert_eq!(m.phase(), Phase::Stopped);
        // Nothing after stopping, whatever arrives late.
        assert_eq!(m.handle(Event::Connected, t0 + s(6)), vec![Action::Done]);
    }

    #[test]
    fn stop_before_any_resource_deletes_nothing() {
        let t0 = Instant::now();
        let mut m = machine(0.5);
        m.handle(Event::Start, t0);
        assert_eq!(m.handle(Event::Stop, t0), vec![Action::Done]);
    }

    #[test]
    fn failures_back_off_exponentially_to_the_30s_cap_and_retry_when_due() {
        let mut now = Instant::now();
        // Jitter just under 1 shows each ceiling.
        let mut m = machine(0.999_999);
        m.handle(Event::Start, now);
        let mut waits = Vec::new();
        for _ in 0..9 {
            let out = m.handle(Event::Failed(Failure::new(Cause::Network, "refused")), now);
            let [Action::WaitUntil(t)] = out[..] else {
                panic!("{out:?}")
            };
            assert_eq!(m.phase(), Phase::Backoff);
            waits.push((t - now).as_millis());
            // Early timer: keep waiting; due timer: post.
            assert_eq!(
                m.handle(Event::Timer, t - Duration::from_millis(1)),
                vec![Action::WaitUntil(t)]
            );
            now = t;
            assert_eq!(m.handle(Event::Timer, now), vec![Action::Post]);
        }
        assert_eq!(
            waits,
            vec![499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]
        );
    }

    #[test]
    fn a_dropped_publication_deletes_its_resource_then_waits() {
        let t0 = Instant::now();
        let mut m = machine(0.0);
        m.handle(Event::Start, t0);
        m.handle(created(), t0);
        m.handle(Event::Connected, t0);
        let out = m.handle(
            Event::Failed(Failure::new(Cause::Dropped, "ICE failed")),
            t0 + s(10),
        );
        assert_eq!(
            out,
            vec![
                Action::Delete {
                    resource: "http://sfu/whip/r/1".into()
                },
                Action::WaitUntil(t0 + s(10))
            ]
        );
        assert_eq!(m.last_failure().map(|f| f.cause), Some(Cause::Dropped));
        // Stop during backoff: the resource is already released.
        assert_eq!(m.handle(Event::Stop, t0 + s(10)), vec![Action::Done]);
    }

    #[test]
    fn retry_after_is_a_floor_on_the_wait_and_is_bounded() {
        let t0 = Instant::now();
        let mut m = machine(0.5);
        m.handle(Event::Start, t0);
        let busy = Failure {
            cause: Cause::Unavailable,
            retry_after: Some(s(7)),
            detail: "503".into(),
        };
        assert_eq!(
            m.handle(Event::Failed(busy), t0),
            vec![Action::WaitUntil(t0 + s(7))]
        );
        assert_eq!(m.handle(Event::Timer, t0 + s(7)), vec![Action::Post]);
        let absurd = Failure {
            cause: Cause::Unavailable,
            retry_after: Some(s(86_400)),
            detail: "503".into(),
        };
        assert_eq!(
            m.handle(Event::Failed(absurd), t0 + s(7)),
            vec![Action::WaitUntil(t0 + s(7) + MAX_RETRY_AFTER)]
        );
    }

    #[test]
    fn a_refused_token_retries_slowly_every_time() {
        let mut now = Instant::now();
        let mut m = machine(0.0);
        m.handle(Event::Start, now);
        for _ in 0..3 {
            let out = m.handle(Event::Failed(Failure::new(Cause::Unauthorized, "401")), now);
            assert_eq!(out, vec![Action::WaitUntil(now + s(30))]);
            now += s(30);
            assert_eq!(m.handle(Event::Timer, now), vec![Action::Post]);
        }
    }

    #[test]
    fn a_publication_up_for_a_minute_forgets_earlier_failures() {
        let mut now = Instant::now();
        let mut m = machine(0.999_999);
        m.handle(Event::Start, now);
        for _ in 0..6 {
            let out = m.handle(Event::Failed(Failure::new(Cause::Timeout, "t")), now);
            let [Action::WaitUntil(t)] = out[..] else {
                panic!("{out:?}")
            };
            now = t;
            m.handle(Event::Timer, now);
        }
        assert!(m.last_failure().is_some());
        m.handle(created(), now);
        m.handle(Event::Connected, now);
        assert!(m.last_failure().is_none(), "connected clears the error");
        // Up for 61 s, then dropped: back to the first step (ceiling 500 ms).
        let dropped = now + s(61);
        let wait = |out: Vec<Action>, from: Instant| match out.last() {
            Some(Action::WaitUntil(t)) => (*t - from).as_millis(),
            other => panic!("{other:?}"),
        };
        let out = m.handle(Event::Failed(Failure::new(Cause::Dropped, "gone")), dropped);
        assert_eq!(wait(out, dropped), 499);
        // Up for only 5 s: the exponent keeps growing (ceiling 1 s).
        now = dropped + s(1);
        publish(&mut m, now);
        let out = m.handle(
            Event::Failed(Failure::new(Cause::Dropped, "gone")),
            now + s(5),
        );
        assert_eq!(wait(out, now + s(5)), 999);
    }

    #[test]
    fn late_reports_are_ignored() {
        let t0 = Instant::now();
        let mut m = machine(0.5);
        // Before start nothing happens.
        assert!(m.handle(Event::Connected, t0).is_empty());
        m.handle(Event::Start, t0);
        // Connected while posting is out of order.
        assert!(m.handle(Event::Connected, t0).is_empty());
        let out = m.handle(Event::Failed(Failure::new(Cause::Network, "x")), t0);
        let [Action::WaitUntil(t)] = out[..] else {
            panic!("{out:?}")
        };
        // A failure reported again while backing off does not extend the wait.
        assert_eq!(
            m.handle(Event::Failed(Failure::new(Cause::Network, "x")), t0),
            vec![Action::WaitUntil(t)]
        );
        assert_eq!(m.handle(created(), t0), vec![Action::WaitUntil(t)]);
    }

    #[test]
    fn status_codes_map_to_causes() {
        assert_eq!(Cause::of_status(401), Cause::Unauthorized);
        assert_eq!(Cause::of_status(403), Cause::Unauthorized);
        assert_eq!(Cause::of_status(503), Cause::Unavailable);
        assert_eq!(Cause::of_status(429), Cause::Unavailable);
        assert_eq!(Cause::of_status(500), Cause::Refused);
        assert_eq!(Cause::of_status(404), Cause::Refused);
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
