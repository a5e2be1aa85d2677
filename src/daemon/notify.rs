//! What the daemon tells systemd (`sd_notify`), decided sans IO: observations of the capture
//! and the signaling go in with `now`, the messages to send come out. The driver in
//! `daemon/mod.rs` polls it on a timer and sends what it returns.
//!
//! * `READY=1` once the first frame has been captured and the signaling is up (the HTTP
//!   listener is bound before polling starts; in kvs mode the master must be connected, or
//!   [`Policy::kvs_ready_wait`] must have passed, with a STATUS that says why not).
//! * `EXTEND_TIMEOUT_USEC` while start-up is still making progress (a camera warming up, an
//!   RTSP camera being retried), up to [`Policy::startup_limit`].
//! * `WATCHDOG=1` only while healthy: frames flowing, or a capture start/restart in progress
//!   within its budget, and the KVS machine not stuck in one state. AWS being unreachable is
//!   not stuck: every connecting state has a deadline, so the machine keeps moving between
//!   them and backoff; only a state held far past its deadline stops the pings. A wedged
//!   pipeline (frames stopped and no restart happening) or a hung runtime stops the pings, so
//!   systemd restarts the service.
//! * `STATUS=` whenever the line a person reads changes; `STOPPING=1` on shutdown.

use std::time::{Duration, Instant};

use crate::media::CaptureState;

/// One message to systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Status(String),
    Watchdog,
    /// `EXTEND_TIMEOUT_USEC`: systemd waits this much longer for `READY=1` (or for stop).
    ExtendTimeout(Duration),
    Stopping,
}

/// The KVS master as the notifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvsView {
    /// `connected`, `backoff`, `describe`, … (`machine::State::as_str`).
    pub state: &'static str,
    pub last_error: Option<String>,
}

/// What the driver observed at `now`.
#[derive(Debug, Clone)]
pub struct Observation {
    pub now: Instant,
    pub capture: CaptureState,
    /// Frames captured since start; > 0 means the first frame is in.
    pub frames: u64,
    pub last_frame_age: Option<Duration>,
    pub last_capture_error: Option<String>,
    pub viewers: usize,
    /// None in local mode.
    pub kvs: Option<KvsView>,
    /// The WHIP publisher's status (`publish: publishing`), when `publish.enabled`.
    pub publish: Option<String>,
}

/// Timings of the rules; [`Policy::for_stall`] derives them from the stall timeout.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A frame older than this is stale (the daemon's health rule).
    pub stall_after: Duration,
    /// A pipeline may stay in `starting` this long before it counts as wedged.
    pub start_grace: Duration,
    /// Extra time a `restarting` capture may take beyond its announced retry.
    pub restart_grace: Duration,
    /// How long `READY=1` waits for the KVS connection before going ahead without it.
    pub kvs_ready_wait: Duration,
    /// A KVS state other than connected and stopped (describe, get-endpoint, get-ice-config,
    /// connecting, backoff, idle) held this long means the machine is stuck: each has a
    /// deadline well inside it.
    pub kvs_stuck_after: Duration,
    /// Start-up stops asking systemd for more time after this.
    pub startup_limit: Duration,
    /// How much more time each `EXTEND_TIMEOUT_USEC` asks for.
    pub extend_by: Duration,
}

impl Policy {
    pub fn for_stall(stall_after: Duration) -> Policy {
        Policy {
            stall_after,
            // RTSP cameras may take rtspsrc's 20 s TCP timeout to fail; then a restart.
            start_grace: Duration::from_secs(45),
            restart_grace: Duration::from_secs(10),
            kvs_ready_wait: Duration::from_secs(15),
            kvs_stuck_after: Duration::from_secs(60),
            startup_limit: Duration::from_secs(300),
            extend_by: Duration::from_secs(30),
        }
    }

    /// Makes [`Policy::kvs_stuck_after`] comfortably longer than the machine's step deadline
    /// (twice it plus 10 s, never under 60 s), so only a machine that missed its own deadline
    /// counts as stuck.
    pub fn with_kvs_step_timeout(mut self, step_timeout: Option<Duration>) -> Policy {
        if let Some(t) = step_timeout {
            self.kvs_stuck_after = (t * 2 + Duration::from_secs(10)).max(Duration::from_secs(60));
        }
        self
    }
}

pub struct Notifier {
    policy: Policy,
    /// Mode and source, e.g. "local (WHEP), test pattern \"smpte\" 1280x720@30".
    what: String,
    started: Instant,
    ready: bool,
    stopping: bool,
    /// The capture state last seen and since when (to bound starting/restarting).
    capture_since: Option<(CaptureState, Instant)>,
    /// The KVS state last seen and since when.
    kvs_since: Option<(&'static str, Instant)>,
    last_status: Option<String>,
    last_extend: Option<Instant>,
}

impl Notifier {
    pub fn new(policy: Policy, what: String, started: Instant) -> Notifier {
        Notifier {
            policy,
            what,
            started,
            ready: false,
            stopping: false,
            capture_since: None,
            kvs_since: None,
            last_status: None,
            last_extend: None,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The messages for this observation.
    pub fn poll(&mut self, o: &Observation) -> Vec<Notice> {
        if self.stopping {
            return Vec::new();
        }
        let now = o.now;
        let capture_for = self.track_capture(&o.capture, now);
        let kvs_for = o.kvs.as_ref().map(|k| self.track_kvs(k.state, now));
        let mut out = Vec::new();

        let problem = self.problem(o, capture_for, kvs_for);
        if !self.ready {
            let kvs_up = match &o.kvs {
                None => true,
                Some(k) => {
                    k.state == "connected"
                        || now.saturating_duration_since(self.started) >= self.policy.kvs_ready_wait
                }
            };
            if o.frames > 0 && kvs_up {
                self.ready = true;
                out.push(Notice::Ready);
            } else if now.saturating_duration_since(self.started) < self.policy.startup_limit
                && self
                    .last_extend
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.policy.extend_by / 6)
            {
                self.last_extend = Some(now);
                out.push(Notice::ExtendTimeout(self.policy.extend_by));
            }
        }
        if self.ready && problem.as_ref().is_none_or(|p| !p.fatal) {
            out.push(Notice::Watchdog);
        }
        let status = self.status_line(o, problem.as_ref());
        if self.last_status.as_ref() != Some(&status) {
            self.last_status = Some(status.clone());
            out.push(Notice::Status(status));
        }
        out
    }

    /// Shutdown: `STOPPING=1` and a last status; nothing after.
    pub fn stopping(&mut self) -> Vec<Notice> {
        if self.stopping {
            return Vec::new();
        }
        self.stopping = true;
        vec![Notice::Stopping, Notice::Status("stopping".into())]
    }

    fn track_capture(&mut self, state: &CaptureState, now: Instant) -> Duration {
        // `Restarting` carries the attempt and retry time; a new attempt is a new state.
        match &self.capture_since {
            Some((s, since)) if s == state => now.saturating_duration_since(*since),
            _ => {
                self.capture_since = Some((state.clone(), now));
                Duration::ZERO
            }
        }
    }

    fn track_kvs(&mut self, state: &'static str, now: Instant) -> Duration {
        match self.kvs_since {
            Some((s, since)) if s == state => now.saturating_duration_since(since),
            _ => {
                self.kvs_since = Some((state, now));
                Duration::ZERO
            }
        }
    }

    /// What is wrong, if anything; `fatal` problems stop the watchdog pings.
    fn problem(
        &self,
        o: &Observation,
        capture_for: Duration,
        kvs_for: Option<Duration>,
    ) -> Option<Problem> {
        let p = &self.policy;
        let fresh = o.last_frame_age.is_some_and(|a| a <= p.stall_after);
        let capture = if fresh {
            None
        } else {
            let age = match o.last_frame_age {
                Some(a) => format!("no video from the camera for {:.0} s", a.as_secs_f64()),
                None => "no video from the camera yet".to_owned(),
            };
            let err = o
                .last_capture_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            let (state, fatal) = match &o.capture {
                CaptureState::Starting => ("starting", capture_for > p.start_grace),
                CaptureState::Restarting { retry_in, .. } => {
                    ("restarting", capture_for > *retry_in + p.restart_grace)
                }
                // The capture's own stall detection restarts a silent pipeline after
                // `stall_after`; a pipeline still "running" well past that is wedged.
                CaptureState::Running => (
                    "running",
                    o.last_frame_age.is_some_and(|a| a > p.stall_after * 2),
                ),
                CaptureState::Stopped => ("stopped", true),
            };
            let wedged = if fatal && matches!(o.capture, CaptureState::Running) {
                " (pipeline wedged)"
            } else {
                ""
            };
            Some(Problem {
                text: format!("{age}; capture {state}{wedged}{err}"),
                fatal,
            })
        };
        let kvs = match (&o.kvs, kvs_for) {
            (Some(k), Some(held)) if k.state != "connected" => {
                let stuck = k.state != "stopped" && held > p.kvs_stuck_after;
                let err = k
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                Some(Problem {
                    text: if stuck {
                        format!(
                            "KVS stuck in {} for {:.0} s{err}",
                            k.state,
                            held.as_secs_f64()
                        )
                    } else {
                        format!("KVS {}{err}", k.state)
                    },
                    fatal: stuck,
                })
            }
            _ => None,
        };
        match (capture, kvs) {
            (None, None) => None,
            (Some(c), None) => Some(c),
            (None, Some(k)) => Some(k),
            (Some(c), Some(k)) => Some(Problem {
                text: format!("{}; {}", c.text, k.text),
                fatal: c.fatal || k.fatal,
            }),
        }
    }

    fn status_line(&self, o: &Observation, problem: Option<&Problem>) -> String {
        let phase = if self.ready { "streaming" } else { "starting" };
        let mut s = format!("{phase}: {}; {} viewer(s)", self.what, o.viewers);
        if let Some(p) = &o.publish {
            s.push_str("; ");
            s.push_str(p);
        }
        if let Some(p) = problem {
            s.push_str("; ");
            s.push_str(&p.text);
        }
        s
    }
}

struct Problem {
    text: String,
    fatal: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::for_stall(Duration::from_secs(3))
    }

    struct Clock {
        t0: Instant,
    }

    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
    }

    fn obs(now: Instant, state: CaptureState, frames: u64, age_ms: Option<u64>) -> Observation {
        Observation {
            now,
            capture: state,
            frames,
            last_frame_age: age_ms.map(Duration::from_millis),
            last_capture_error: None,
            viewers: 0,
            kvs: None,
            publish: None,
        }
    }

    fn has(n: &[Notice], want: &Notice) -> bool {
        n.contains(want)
    }

    fn pings(n: &[Notice]) -> bool {
        has(n, &Notice::Watchdog)
    }

    #[test]
    fn ready_only_after_the_first_frame_then_pings() {
        let c = Clock { t0: Instant::now() };
        let mut n = Notifier::new(policy(), "local".into(), c.t0);
        let first = n.poll(&obs(c.at(0), CaptureState::Starting, 0, None));
        assert!(!has(&first, &Notice::Ready));
        assert!(!pings(&first), "no watchdog before READY");
        assert!(has(&first, &Notice::ExtendTimeout(Duration::from_secs(30))));
        assert!(matches!(&first[..], [.., Notice::Status(s)] if s.starts_with("starting: local")));
        let second = n.poll(&obs(c.at(100), CaptureState::Starting, 0, None));
        assert!(second.is_empty(), "nothing new: {second:?}");
        let ready = n.poll(&obs(c.at(400), CaptureState::Running, 1, Some(5)));
        assert_eq!(ready[0], Notice::Ready);
        assert!(pings(&ready));
        assert!(
            matches!(ready.last(), Some(Notice::Status(s)) if s == "streaming: local; 0 viewer(s)")
        );
        let later = n.poll(&obs(c.at(900), CaptureState::Running, 15, Some(30)));
        assert_eq!(later, vec![Notice::Watchdog]);
    }

    #[test]
    fn a_wedged_pipeline_stops_the_pings_and_says_why() {
        let c = Clock { t0: Instant::now() };
        let mut n = Notifier::new(policy(), "local".into(), c.t0);
        n.poll(&obs(c.at(0), CaptureState::Running, 1, Some(1)));
        assert!(n.is_ready());
        // Stale but within the stall detector's reach: keep pinging.
        let stale = n.poll(&obs(c.at(4_000), CaptureState::Running, 1, Some(4_000)));
        assert!(pings(&stale));
        assert!(
            matches!(stale.last(), Some(Notice::Status(s)) if s.contains("no video from the camera for 4 s; capture running"))
        );
        // Still "running" at twice the stall time: nothing is restarting it.
        let wedged = n.poll(&obs(c.at(6_500), CaptureState::Running, 1, Some(6_500)));
        assert!(!pings(&wedged), "{wedged:?}");
        assert!(matches!(wedged.last(), Some(Notice::Status(s)) if s.contains("pipeline wedged")));
        // Frames again: pings again.
        let back = n.poll(&obs(c.at(7_000), CaptureState::Running, 2, Some(10)));
        assert!(pings(&back));
    }

    #[test]
    fn restarts_within_their_backoff_keep_pinging_until_they_overrun() {
        let c = Clock { t0: Instant::now() };
        let mut n = Notifier::new(policy(), "rtsp".into(), c.t0);
        n.poll(&obs(c.at(0), CaptureState::Running, 1, Some(1)));
        let restarting = CaptureState::Restarting {
            attempt: 1,
            retry_in: Duration::from_secs(2),
        };
        let r = n.poll(&obs(c.at(5_000), restarting.clone(), 1, Some(5_000)));
        assert!(pings(&r));
        let r = n.poll(&obs(c.at(16_000), restarting.clone(), 1, Some(16_000)));
        assert!(pings(&r), "2 s retry + 10 s grace not yet over");
        let r = n.poll(&obs(c.at(17_500), restarting, 1, Some(17_500)));
        assert!(!pings(&r), "retry overran");
        // A new attempt starts, and gets its own start grace.
        let r = n.poll(&obs(c.at(18_000), CaptureState::Starting, 1, Some(18_000)));
        assert!(pings(&r));
        let r = n.poll(&obs(
            c.at(18_000 + 46_000),
            CaptureState::Starting,
            1,
            Some(64_000),
        ));
        assert!(!pings(&r), "starting beyond the start grace");
    }

    #[test]
    fn kvs_ready_waits_for_the_connection_but_not_forever() {
        let c = Clock { t0: Instant::now() };
        let kvs = |state: &'static str| {
            Some(KvsView {
                state,
                last_error: Some("DescribeSignalingChannel: AccessDeniedException".into()),
            })
        };
        let mut n = Notifier::new(policy(), "kvs".into(), c.t0);
        let mut o = obs(c.at(500), CaptureState::Running, 3, Some(10));
        o.kvs = kvs("describe");
        assert!(!has(&n.poll(&o), &Notice::Ready));
        o.now = c.at(14_000);
        o.kvs = kvs("backoff");
        assert!(!has(&n.poll(&o), &Notice::Ready));
        o.now = c.at(15_000);
        let r = n.poll(&o);
        assert!(has(&r, &Notice::Ready), "bounded wait: {r:?}");
        assert!(
            matches!(r.last(), Some(Notice::Status(s)) if s.contains("KVS backoff: DescribeSignalingChannel: AccessDeniedException")),
            "{r:?}"
        );
        // Backing off is the machine working as designed: keep pinging.
        assert!(pings(&r));

        let mut n = Notifier::new(policy(), "kvs".into(), c.t0);
        o.now = c.at(100);
        o.kvs = kvs("connected");
        assert!(has(&n.poll(&o), &Notice::Ready));
        // Stuck in one connecting state past its limit: no pings.
        o.kvs = kvs("get-endpoint");
        o.now = c.at(1_000);
        assert!(pings(&n.poll(&o)));
        o.now = c.at(62_000);
        let r = n.poll(&o);
        assert!(!pings(&r));
        assert!(
            matches!(r.last(), Some(Notice::Status(s)) if s.contains("KVS stuck in get-endpoint for 61 s"))
        );
    }

    #[test]
    fn aws_unreachable_keeps_pinging_a_stuck_machine_does_not() {
        let c = Clock { t0: Instant::now() };
        let policy = policy().with_kvs_step_timeout(Some(Duration::from_secs(20)));
        assert_eq!(policy.kvs_stuck_after, Duration::from_secs(60));
        assert_eq!(
            policy
                .with_kvs_step_timeout(Some(Duration::from_secs(100)))
                .kvs_stuck_after,
            Duration::from_secs(210)
        );
        let kvs = |state: &'static str| {
            Some(KvsView {
                state,
                last_error: Some("DescribeSignalingChannel: timed out".into()),
            })
        };
        let mut n = Notifier::new(policy, "kvs".into(), c.t0);
        let mut o = obs(c.at(100), CaptureState::Running, 3, Some(10));
        o.kvs = kvs("connected");
        assert!(has(&n.poll(&o), &Notice::Ready));
        // Ten minutes of a network that swallows every call: each Describe runs into its 20 s
        // deadline, backs off up to 10 s, and tries again. The watchdog keeps pinging.
        let mut t = 1_000;
        while t < 600_000 {
            o.now = c.at(t);
            o.kvs = kvs("describe");
            for step in [0, 10_000, 19_900] {
                o.now = c.at(t + step);
                assert!(pings(&n.poll(&o)), "describe at {} ms", t + step);
            }
            t += 20_000;
            o.now = c.at(t);
            o.kvs = kvs("backoff");
            assert!(pings(&n.poll(&o)), "backoff at {t} ms");
            t += 10_000;
        }
        // A machine that stays in one state (here: backoff that never wakes) past the limit
        // is stuck: no more pings, and the status says so.
        o.now = c.at(t + 61_000);
        let r = n.poll(&o);
        assert!(!pings(&r), "{r:?}");
        assert!(
            matches!(r.last(), Some(Notice::Status(s)) if s.contains("KVS stuck in backoff")),
            "{r:?}"
        );
    }

    #[test]
    fn start_up_stops_extending_after_its_limit_and_stopping_is_final() {
        let c = Clock { t0: Instant::now() };
        let mut n = Notifier::new(policy(), "v4l2".into(), c.t0);
        let mut extends = 0;
        for s in 0..400u64 {
            let r = n.poll(&obs(c.at(s * 1000), CaptureState::Starting, 0, None));
            extends += r
                .iter()
                .filter(|x| matches!(x, Notice::ExtendTimeout(_)))
                .count();
        }
        // Every 5 s for 300 s.
        assert_eq!(extends, 60);
        let stop = n.stopping();
        assert_eq!(stop[0], Notice::Stopping);
        assert!(n.stopping().is_empty());
        assert!(
            n.poll(&obs(c.at(500_000), CaptureState::Running, 1, Some(1)))
                .is_empty()
        );
    }

    #[test]
    fn the_status_line_carries_the_publisher() {
        let t0 = Instant::now();
        let mut n = Notifier::new(policy(), "local (WHEP)".into(), t0);
        let mut o = obs(t0, CaptureState::Running, 10, Some(10));
        o.publish = Some("publish: backoff (POST: the WHIP server answered 500)".into());
        let notices = n.poll(&o);
        let status = notices.iter().find_map(|x| match x {
            Notice::Status(s) => Some(s.clone()),
            _ => None,
        });
        let status = status.expect("a STATUS line");
        assert!(
            status.contains("; publish: backoff (POST: the WHIP server answered 500)"),
            "{status}"
        );
    }
}
