//! The master's connection state machine, sans-IO.
//!
//! Inputs are [`Event`]s stamped with the current `Instant`; outputs are [`Action`]s for the
//! driver plus [`Machine::deadline`], the instant at which the driver must feed [`Event::Timer`].
//! The driver performs each Call/Connect action and reports exactly one result for it.
//!
//! Policy (see the protocol reference §3.1, §2.5, §6):
//! * Describe → GetEndpoint → GetIceConfig → Connect. Describe/GetEndpoint results are cached
//!   (hours); a plain socket loss reconnects straight to Connect.
//! * Any close or error reconnects with exponential full-jitter backoff, and never more than
//!   3 connects per rolling second (the service's per-channel quota). The loss of a connection
//!   that was up for `stable_after` is not a failure: its retry starts from a clean backoff.
//! * GO_AWAY: close and re-discover at once. RECONNECT_ICE_SERVER: close, refetch ICE, reconnect.
//! * A planned reconnect shortly before the service's 1-hour connection limit.
//! * A Ping whenever nothing was sent for `ping_idle`, far inside the 10-minute idle cut-off;
//!   a Ping followed by `pong_timeout` of silence (no Pong, no frame at all) is a dead socket.
//! * Every step has a deadline (`step_timeout`): Describe, GetEndpoint and GetIceConfig
//!   (credential fetch included) and the WebSocket connect. A step past it is cancelled
//!   ([`Action::CancelCall`]) and handled like any failure of that step with
//!   [`Failure::Timeout`], so a hung provider or call never parks the master.
//! * 401/403 other than a clock error: every cached credential is dropped
//!   ([`Action::InvalidateCredentials`]) before the retry.
//! * 403 "Signature expired / not yet current": take the clock offset from the response `Date`
//!   and retry at once with corrected signing time.
//! * 404 after Describe: the channel may have been re-created under a new ARN → Describe again.

use std::time::{Duration, Instant, SystemTime};

use super::arn::ChannelArn;
use super::backoff::{Backoff, BackoffConfig, Jitter, RateCap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    /// Send a Ping when nothing has been sent for this long.
    pub ping_idle: Duration,
    /// Planned reconnect after this much connected time (the service cuts at 1 h).
    pub max_connection_age: Duration,
    /// After a Ping, give up on the socket if nothing at all (Pong or any other frame) arrives
    /// within this time. A WebSocket server must answer a Ping (RFC 6455 §5.5.2).
    pub pong_timeout: Duration,
    /// Deadline of each step of the connection chain: an API call including the credential
    /// fetch it needs, or the WebSocket connect including presigning.
    pub step_timeout: Duration,
    /// How long Describe/GetEndpoint results are reused.
    pub endpoint_cache_ttl: Duration,
    /// A connection that stayed open this long was healthy. Losing it says something about the
    /// network or the service host of the moment, not that the service refuses us, so the
    /// retry starts from a clean backoff (at most `backoff.base`). A connection lost sooner
    /// counts as a failure, so that a service that accepts and drops at once is retried with
    /// a growing delay.
    pub stable_after: Duration,
    pub backoff: BackoffConfig,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ping_idle: Duration::from_secs(25),
            max_connection_age: Duration::from_secs(55 * 60),
            pong_timeout: Duration::from_secs(20),
            step_timeout: Duration::from_secs(20),
            endpoint_cache_ttl: Duration::from_secs(10 * 3600),
            stable_after: Duration::from_secs(2),
            backoff: BackoffConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Describe,
    GetEndpoint,
    GetIceConfig,
    Connecting,
    Connected,
    Backoff,
    Stopped,
}

impl State {
    /// Every state, for metrics that list each one.
    pub const ALL: [State; 8] = [
        State::Idle,
        State::Describe,
        State::GetEndpoint,
        State::GetIceConfig,
        State::Connecting,
        State::Connected,
        State::Backoff,
        State::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Describe => "describe",
            State::GetEndpoint => "get-endpoint",
            State::GetIceConfig => "get-ice-config",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
        }
    }
}

/// The steps of the connection chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Describe,
    GetEndpoint,
    GetIceConfig,
    Connect,
}

/// Why a (re)connect happens; counted in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Initial,
    SocketClosed,
    SocketError,
    GoAway,
    ReconnectIceServer,
    MaxAge,
    PongTimeout,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Initial,
        Cause::SocketClosed,
        Cause::SocketError,
        Cause::GoAway,
        Cause::ReconnectIceServer,
        Cause::MaxAge,
        Cause::PongTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Initial => "initial",
            Cause::SocketClosed => "socket-closed",
            Cause::SocketError => "socket-error",
            Cause::GoAway => "go-away",
            Cause::ReconnectIceServer => "reconnect-ice-server",
            Cause::MaxAge => "max-age",
            Cause::PongTimeout => "pong-timeout",
        }
    }
}

/// The per-channel endpoints from GetSignalingChannelEndpoint, used exactly as returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub wss: String,
    pub https: String,
}

/// How an API call or the WebSocket handshake failed, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 403 "Signature expired" / "Signature not yet current": `server_date` is the response's
    /// `Date` header, `local_date` our wall clock when it arrived.
    ClockSkew {
        server_date: SystemTime,
        local_date: SystemTime,
    },
    /// 401/403 for any other reason.
    Denied,
    NotFound,
    BadRequest,
    Throttled,
    Server,
    Timeout,
    /// Network errors and anything else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    Stop,
    Timer,
    /// DescribeSignalingChannel (or Create) result: the channel ARN.
    Described(Result<ChannelArn, Failure>),
    GotEndpoints(Result<Endpoints, Failure>),
    GotIceConfig(Result<(), Failure>),
    SocketOpened,
    ConnectFailed(Failure),
    SocketClosed {
        code: Option<u16>,
    },
    SocketError,
    /// Any inbound frame (text, binary, ping).
    FrameReceived,
    /// A Pong for our Ping.
    PongReceived,
    /// We wrote a frame (message or ping).
    FrameSent,
    GoAway,
    ReconnectIceServer,
    /// The `Date` of a service response and our wall clock when it arrived.
    ServerClock {
        server_date: SystemTime,
        local_date: SystemTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CallDescribe,
    CallGetEndpoint {
        channel_arn: ChannelArn,
    },
    CallGetIceConfig {
        channel_arn: ChannelArn,
        https_endpoint: String,
    },
    /// Open the WebSocket; presign with `now + clock_offset_ms` as the signing time.
    Connect {
        wss_endpoint: String,
        channel_arn: ChannelArn,
        clock_offset_ms: i64,
        cause: Cause,
    },
    SendPing,
    CloseSocket {
        cause: Cause,
    },
    /// The call or connect of the current step ran past its deadline: abandon it (its result,
    /// if one still comes, is no longer wanted).
    CancelCall,
    /// The service refused our credentials: forget every cached credential so that the next
    /// call fetches fresh ones from the provider.
    InvalidateCredentials,
}

/// Minimum change in the measured clock offset that justifies an immediate re-sign. A retry with
/// the same offset would fail the same way, so it goes through backoff instead.
const SKEW_RETRY_THRESHOLD_MS: i64 = 1_000;
/// Smaller offsets measured from a `Date` header are noise (1-s resolution, network latency) and
/// harmless (SigV4 allows ±5 min), so the local clock is used as is.
const CLOCK_CORRECT_MIN_MS: i64 = 60_000;

pub struct Machine {
    cfg: MachineConfig,
    state: State,
    channel_arn: Option<ChannelArn>,
    endpoints: Option<(Endpoints, Instant)>,
    clock_offset_ms: i64,
    backoff: Backoff,
    connect_cap: RateCap,
    /// While in Backoff: when to run `pending`.
    wake: Option<Instant>,
    pending: Step,
    next_cause: Cause,
    connected_at: Option<Instant>,
    last_sent: Instant,
    ping_outstanding: Option<Instant>,
    /// When the current Describe/GetEndpoint/GetIceConfig/Connecting step started.
    step_started: Instant,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("state", &self.state)
            .field("channel_arn", &self.channel_arn)
            .field("endpoints", &self.endpoints)
            .field("clock_offset_ms", &self.clock_offset_ms)
            .field("wake", &self.wake)
            .field("pending", &self.pending)
            .finish()
    }
}

impl Machine {
    pub fn new(cfg: MachineConfig, jitter: Jitter, now: Instant) -> Self {
        Machine {
            cfg,
            state: State::Idle,
            channel_arn: None,
            endpoints: None,
            clock_offset_ms: 0,
            backoff: Backoff::new(cfg.backoff, jitter),
            connect_cap: RateCap::kvs_connect(),
            wake: None,
            pending: Step::Describe,
            next_cause: Cause::Initial,
            connected_at: None,
            last_sent: now,
            ping_outstanding: None,
            step_started: now,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms
    }

    pub fn channel_arn(&self) -> Option<&ChannelArn> {
        self.channel_arn.as_ref()
    }

    pub fn endpoints(&self) -> Option<&Endpoints> {
        self.endpoints.as_ref().map(|(e, _)| e)
    }

    pub fn connected_since(&self) -> Option<Instant> {
        if self.state == State::Connected {
            self.connected_at
        } else {
            None
        }
    }

    /// When the driver must deliver [`Event::Timer`] next. Every state but Idle and Stopped
    /// has one.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backoff => self.wake,
            State::Connected => {
                let mut d = self.last_sent + self.cfg.ping_idle;
                if let Some(at) = self.connected_at {
                    d = d.min(at + self.cfg.max_connection_age);
                }
                if let Some(p) = self.ping_outstanding {
                    d = d.min(p + self.cfg.pong_timeout);
                }
                Some(d)
            }
            State::Describe | State::GetEndpoint | State::GetIceConfig | State::Connecting => {
                Some(self.step_started + self.cfg.step_timeout)
            }
            State::Idle | State::Stopped => None,
        }
    }

    /// The step the machine is waiting on, if any.
    fn current_step(&self) -> Option<Step> {
        match self.state {
            State::Describe => Some(Step::Describe),
            State::GetEndpoint => Some(Step::GetEndpoint),
            State::GetIceConfig => Some(Step::GetIceConfig),
            State::Connecting => Some(Step::Connect),
            _ => None,
        }
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.on_event(now, event, &mut out);
        out
    }

    fn on_event(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) {
        if self.state == State::Stopped {
            return;
        }
        match (self.state, event) {
            (_, Event::Stop) => {
                if matches!(self.state, State::Connected | State::Connecting) {
                    out.push(Action::CloseSocket {
                        cause: Cause::Initial,
                    });
                }
                self.state = State::Stopped;
            }
            (
                _,
                Event::ServerClock {
                    server_date,
                    local_date,
                },
            ) => {
                let c = offset_ms(server_date, local_date);
                self.clock_offset_ms = if c.abs() >= CLOCK_CORRECT_MIN_MS {
                    c
                } else {
                    0
                };
            }
            (State::Idle, Event::Start) => {
                self.next_cause = Cause::Initial;
                self.begin(now, out);
            }
            (State::Backoff, Event::Timer) if self.wake.is_some_and(|w| now >= w) => {
                self.wake = None;
                self.run(now, self.pending, out);
            }
            (
                State::Describe | State::GetEndpoint | State::GetIceConfig | State::Connecting,
                Event::Timer,
            ) if now >= self.step_started + self.cfg.step_timeout => {
                out.push(Action::CancelCall);
                match self.current_step() {
                    // As for any other GetIceConfig failure: connect without TURN, the
                    // background refresher keeps trying.
                    Some(Step::GetIceConfig) => self.run(now, Step::Connect, out),
                    Some(step) => self.on_failure(now, step, Failure::Timeout, out),
                    None => {}
                }
            }
            (State::Describe, Event::Described(r)) => match r {
                Ok(arn) => {
                    self.channel_arn = Some(arn);
                    self.run(now, Step::GetEndpoint, out);
                }
                Err(f) => self.on_failure(now, Step::Describe, f, out),
            },
            (State::GetEndpoint, Event::GotEndpoints(r)) => match r {
                Ok(e) => {
                    self.endpoints = Some((e, now));
                    self.run(now, Step::GetIceConfig, out);
                }
                Err(f) => self.on_failure(now, Step::GetEndpoint, f, out),
            },
            (State::GetIceConfig, Event::GotIceConfig(r)) => match r {
                Ok(()) => self.run(now, Step::Connect, out),
                Err(Failure::NotFound) => {
                    self.on_failure(now, Step::GetIceConfig, Failure::NotFound, out)
                }
                Err(f @ Failure::ClockSkew { .. }) if self.skew_changed(f) => {
                    self.on_failure(now, Step::GetIceConfig, f, out)
                }
                Err(Failure::Denied) => {
                    out.push(Action::InvalidateCredentials);
                    self.run(now, Step::Connect, out)
                }
                // Connect anyway: STUN and host candidates still work, and the background
                // refresher keeps trying for TURN. Staying offline for want of relays is worse.
                Err(_) => self.run(now, Step::Connect, out),
            },
            (State::Connecting, Event::SocketOpened) => {
                self.state = State::Connected;
                self.connected_at = Some(now);
                self.last_sent = now;
                self.ping_outstanding = None;
                self.backoff.on_healthy(now);
            }
            (State::Connecting, Event::ConnectFailed(f)) => {
                self.on_failure(now, Step::Connect, f, out)
            }
            (State::Connecting, Event::SocketClosed { .. } | Event::SocketError) => {
                self.on_failure(now, Step::Connect, Failure::Other, out)
            }
            (State::Connected, ev) => self.on_connected(now, ev, out),
            // Late results for calls we no longer wait for, timers that are not due, etc.
            _ => {}
        }
    }

    fn on_connected(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::FrameSent => self.last_sent = now,
            Event::FrameReceived => {
                // Any traffic proves the socket alive.
                self.ping_outstanding = None;
            }
            Event::PongReceived => {
                self.ping_outstanding = None;
            }
            Event::GoAway => {
                // The service is draining this host: re-discover at once (C SDK: → DESCRIBE).
                self.disconnect(now, Cause::GoAway, out);
                self.channel_arn = None;
                self.endpoints = None;
                self.run(now, Step::Describe, out);
            }
            Event::ReconnectIceServer => {
                self.disconnect(now, Cause::ReconnectIceServer, out);
                self.run(now, Step::GetIceConfig, out);
            }
            Event::SocketClosed { .. } => {
                self.lost(now, Cause::SocketClosed);
                self.retry_later(now, Step::Connect, out);
            }
            Event::SocketError => {
                self.lost(now, Cause::SocketError);
                self.retry_later(now, Step::Connect, out);
            }
            Event::Timer => {
                let Some(at) = self.connected_at else { return };
                if now >= at + self.cfg.max_connection_age {
                    // Planned: the old connection was healthy, so no backoff.
                    self.disconnect(now, Cause::MaxAge, out);
                    self.run(now, Step::Connect, out);
                    return;
                }
                if self
                    .ping_outstanding
                    .is_some_and(|p| now >= p + self.cfg.pong_timeout)
                {
                    self.disconnect(now, Cause::PongTimeout, out);
                    self.retry_later(now, Step::Connect, out);
                    return;
                }
                if now >= self.last_sent + self.cfg.ping_idle {
                    out.push(Action::SendPing);
                    self.last_sent = now;
                    self.ping_outstanding.get_or_insert(now);
                }
            }
            _ => {}
        }
    }

    /// We close the socket ourselves.
    fn disconnect(&mut self, now: Instant, cause: Cause, out: &mut Vec<Action>) {
        out.push(Action::CloseSocket { cause });
        self.lost(now, cause);
    }

    /// The socket is gone (closed by either side). This never adds a failure itself: planned
    /// causes (GO_AWAY, RECONNECT_ICE_SERVER, the age limit) go on to their next step at once,
    /// and the others through `retry_later`. A connection that was up for `stable_after` also
    /// clears the failures before it, so its retry waits at most `backoff.base`.
    fn lost(&mut self, now: Instant, cause: Cause) {
        let stable = self
            .connected_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.cfg.stable_after);
        if stable {
            self.backoff.reset();
        } else {
            self.backoff.on_unhealthy(now);
        }
        self.connected_at = None;
        self.ping_outstanding = None;
        self.next_cause = cause;
    }

    /// Start (or restart) the chain from whatever is not cached.
    fn begin(&mut self, now: Instant, out: &mut Vec<Action>) {
        let step = if self.channel_arn.is_none() {
            Step::Describe
        } else if self.endpoints.is_none() {
            Step::GetEndpoint
        } else {
            Step::Connect
        };
        self.run(now, step, out);
    }

    fn run(&mut self, now: Instant, step: Step, out: &mut Vec<Action>) {
        // Fill in whatever an earlier invalidation removed.
        let step = match (step, &self.channel_arn, &self.endpoints) {
            (_, None, _) => Step::Describe,
            (Step::GetIceConfig | Step::Connect, Some(_), None) => Step::GetEndpoint,
            (Step::Connect, Some(_), Some((_, at)))
                if now.saturating_duration_since(*at) >= self.cfg.endpoint_cache_ttl =>
            {
                Step::GetEndpoint
            }
            _ => step,
        };
        self.step_started = now;
        // Every step after Describe has an ARN (the fill-in above saw to that).
        let arn = match step {
            Step::Describe => None,
            _ => self.channel_arn.clone(),
        };
        match (step, arn) {
            (Step::GetEndpoint, Some(arn)) => {
                self.state = State::GetEndpoint;
                out.push(Action::CallGetEndpoint { channel_arn: arn });
            }
            (Step::GetIceConfig, Some(arn)) => {
                let https = self
                    .endpoints
                    .as_ref()
                    .map(|(e, _)| e.https.clone())
                    .unwrap_or_default();
                self.state = State::GetIceConfig;
                out.push(Action::CallGetIceConfig {
                    channel_arn: arn,
                    https_endpoint: https,
                });
            }
            (Step::Connect, Some(arn)) => {
                let earliest = self.connect_cap.earliest(now);
                if earliest > now {
                    self.state = State::Backoff;
                    self.pending = Step::Connect;
                    self.wake = Some(earliest);
                    return;
                }
                self.connect_cap.record(now);
                let wss = self
                    .endpoints
                    .as_ref()
                    .map(|(e, _)| e.wss.clone())
                    .unwrap_or_default();
                self.state = State::Connecting;
                out.push(Action::Connect {
                    wss_endpoint: wss,
                    channel_arn: arn,
                    clock_offset_ms: self.clock_offset_ms,
                    cause: self.next_cause,
                });
            }
            // Describe, or a later step that (contrary to the above) has no ARN: find it.
            (_, _) => {
                self.state = State::Describe;
                out.push(Action::CallDescribe);
            }
        }
    }

    fn retry_later(&mut self, now: Instant, step: Step, out: &mut Vec<Action>) {
        let delay = self.backoff.next_delay(now);
        if delay.is_zero() {
            self.run(now, step, out);
        } else {
            self.state = State::Backoff;
            self.pending = step;
            self.wake = Some(now + delay);
        }
    }

    fn skew_changed(&self, f: Failure) -> bool {
        match f {
            Failure::ClockSkew {
                server_date,
                local_date,
            } => {
                (offset_ms(server_date, local_date) - self.clock_offset_ms).abs()
                    >= SKEW_RETRY_THRESHOLD_MS
            }
            _ => false,
        }
    }

    fn on_failure(&mut self, now: Instant, step: Step, f: Failure, out: &mut Vec<Action>) {
        match f {
            Failure::ClockSkew {
                server_date,
                local_date,
            } => {
                if self.skew_changed(f) {
                    self.clock_offset_ms = offset_ms(server_date, local_date);
                    self.run(now, step, out);
                } else {
                    self.retry_later(now, step, out);
                }
            }
            Failure::Denied => {
                // Revoked, rotated or expired credentials: a retry with the cached ones would
                // be refused the same way.
                out.push(Action::InvalidateCredentials);
                self.retry_later(now, step, out);
            }
            Failure::NotFound => {
                // The channel may have been deleted and re-created under a new ARN.
                self.channel_arn = None;
                self.endpoints = None;
                self.retry_later(now, Step::Describe, out);
            }
            Failure::BadRequest | Failure::Server | Failure::Timeout if step == Step::Connect => {
                // The WSS host may be gone; ask for endpoints again.
                self.endpoints = None;
                self.retry_later(now, Step::GetEndpoint, out);
            }
            _ => self.retry_later(now, step, out),
        }
    }
}

/// `server − local` in milliseconds, signed.
pub fn offset_ms(server: SystemTime, local: SystemTime) -> i64 {
    match server.duration_since(local) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::fixed_jitter;

    const ARN: &str = "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/cam/1700000000000";

    fn arn() -> ChannelArn {
        ChannelArn::parse(ARN).unwrap()
    }

    fn eps() -> Endpoints {
        Endpoints {
            wss: "wss://m-1.example".into(),
            https: "https://r-1.example".into(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A machine with test-sized limits, driven to Connected.
    struct Rig {
        m: Machine,
        now: Instant,
    }

    impl Rig {
        fn new(jitter: f64) -> Self {
            let now = Instant::now();
            let cfg = MachineConfig {
                max_connection_age: secs(600),
                ..MachineConfig::default()
            };
            Rig {
                m: Machine::new(cfg, fixed_jitter(jitter), now),
                now,
            }
        }

        fn ev(&mut self, e: Event) -> Vec<Action> {
            self.m.handle(self.now, e)
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
        }

        /// Advance to the machine's deadline and fire the timer.
        fn fire(&mut self) -> Vec<Action> {
            let d = self.m.deadline().expect("no deadline");
            assert!(d >= self.now, "deadline in the past");
            self.now = d;
            self.ev(Event::Timer)
        }

        fn connect(&mut self) {
            assert_eq!(self.ev(Event::Start), vec![Action::CallDescribe]);
            assert_eq!(
                self.ev(Event::Described(Ok(arn()))),
                vec![Action::CallGetEndpoint { channel_arn: arn() }]
            );
            assert_eq!(
                self.ev(Event::GotEndpoints(Ok(eps()))),
                vec![Action::CallGetIceConfig {
                    channel_arn: arn(),
                    https_endpoint: "https://r-1.example".into()
                }]
            );
            let a = self.ev(Event::GotIceConfig(Ok(())));
            assert!(
                matches!(
                    &a[..],
                    [Action::Connect {
                        cause: Cause::Initial,
                        ..
                    }]
                ),
                "{a:?}"
            );
            assert!(self.ev(Event::SocketOpened).is_empty());
            assert_eq!(self.m.state(), State::Connected);
        }
    }

    fn is_connect(a: &[Action]) -> bool {
        matches!(a, [.., Action::Connect { .. }])
    }

    #[test]
    fn happy_path_connects_with_full_chain() {
        let mut r = Rig::new(0.5);
        r.connect();
        assert_eq!(r.m.channel_arn().map(ChannelArn::as_str), Some(ARN));
        assert_eq!(r.m.endpoints(), Some(&eps()));
    }

    #[test]
    fn pings_when_idle_25s_so_never_30s_silent() {
        let mut r = Rig::new(0.5);
        r.connect();
        let start = r.now;
        let mut last_write = start;
        let mut max_gap = Duration::ZERO;
        // Ten minutes of nothing but timers.
        while r.now + secs(25) < start + secs(600) {
            let a = r.fire();
            if a.contains(&Action::SendPing) {
                max_gap = max_gap.max(r.now - last_write);
                last_write = r.now;
                r.ev(Event::FrameSent);
                r.ev(Event::PongReceived);
            }
        }
        assert_eq!(max_gap, secs(25));
        assert_eq!(r.m.state(), State::Connected);
        // Outgoing messages postpone the ping.
        let mut r = Rig::new(0.5);
        r.connect();
        r.advance(secs(20));
        r.ev(Event::FrameSent);
        assert_eq!(r.m.deadline(), Some(r.now + secs(25)));
        r.advance(secs(24));
        assert!(r.ev(Event::Timer).is_empty());
    }

    #[test]
    fn planned_reconnect_before_max_age_without_backoff() {
        let mut r = Rig::new(0.999);
        r.connect();
        let opened = r.now;
        let mut closed = None;
        for _ in 0..100 {
            let a = r.fire();
            if a.contains(&Action::SendPing) {
                // The service answers every ping.
                r.ev(Event::FrameSent);
                r.ev(Event::PongReceived);
            }
            if a.contains(&Action::CloseSocket {
                cause: Cause::MaxAge,
            }) {
                // Reconnects at once to the cached endpoint (no Describe/GetEndpoint).
                assert!(
                    matches!(&a[..], [_, Action::Connect { cause: Cause::MaxAge, wss_endpoint, .. }] if wss_endpoint == "wss://m-1.example"),
                    "{a:?}"
                );
                closed = Some(r.now);
                break;
            }
        }
        assert_eq!(closed, Some(opened + secs(600)));
    }

    #[test]
    fn socket_close_reconnects_with_backoff_to_cached_endpoint() {
        let mut r = Rig::new(0.999);
        r.connect();
        r.advance(secs(5));
        assert!(r.ev(Event::SocketClosed { code: Some(1001) }).is_empty());
        assert_eq!(r.m.state(), State::Backoff);
        let wake = r.m.deadline().unwrap();
        assert!(wake > r.now && wake <= r.now + Duration::from_millis(100));
        let a = r.fire();
        assert_eq!(
            a,
            vec![Action::Connect {
                wss_endpoint: "wss://m-1.example".into(),
                channel_arn: arn(),
                clock_offset_ms: 0,
                cause: Cause::SocketClosed
            }]
        );
        // Repeated handshake failures grow the delay up to the 10 s cap.
        let mut delays = Vec::new();
        for _ in 0..9 {
            assert_eq!(
                r.ev(Event::ConnectFailed(Failure::Denied)),
                vec![Action::InvalidateCredentials]
            );
            delays.push(r.m.deadline().unwrap() - r.now);
            let a = r.fire();
            // The cause stays the original one until a connection succeeds.
            assert!(
                matches!(
                    &a[..],
                    [Action::Connect {
                        cause: Cause::SocketClosed,
                        ..
                    }]
                ),
                "{a:?}"
            );
        }
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert!(*delays.last().unwrap() <= secs(10));
        assert!(*delays.last().unwrap() > secs(9));
    }

    #[test]
    fn never_more_than_three_connects_per_second_even_with_zero_backoff() {
        let mut r = Rig::new(0.0);
        r.connect();
        let a = r.ev(Event::SocketError);
        assert!(is_connect(&a), "{a:?}");
        let mut connects = vec![r.now];
        for _ in 0..20 {
            let mut a = r.ev(Event::ConnectFailed(Failure::Other));
            if a.is_empty() {
                // Zero jitter but rate-capped: wait for the cap.
                a = r.fire();
            }
            assert!(is_connect(&a), "{a:?}");
            connects.push(r.now);
        }
        for (i, t) in connects.iter().enumerate() {
            let n = connects[i..]
                .iter()
                .filter(|u| u.duration_since(*t) < secs(1))
                .count();
            assert!(n <= 3, "{n} connects within 1 s starting at #{i}");
        }
    }

    /// Fires timers until the machine connects (the 3-per-second quota may hold one back).
    fn fire_until_connect(r: &mut Rig) {
        for _ in 0..3 {
            if is_connect(&r.fire()) {
                return;
            }
        }
        panic!("no connect after three timers");
    }

    /// Drives the machine through `n` failed connects, leaving it connected afterwards.
    fn fail_connects_then_connect(r: &mut Rig, n: usize) {
        r.ev(Event::SocketClosed { code: None });
        for _ in 0..n {
            fire_until_connect(r);
            r.ev(Event::ConnectFailed(Failure::Other));
        }
        fire_until_connect(r);
        assert!(r.ev(Event::SocketOpened).is_empty());
    }

    #[test]
    fn losing_a_stable_connection_retries_from_a_clean_backoff() {
        let mut r = Rig::new(0.999);
        r.connect();
        // A bad spell: eight failed connects push the delay near its 10 s cap.
        fail_connects_then_connect(&mut r, 8);
        assert!(r.m.backoff.failures() >= 8);
        // Up for longer than `stable_after`, then dropped: back within `base`, not 10 s.
        r.advance(secs(3));
        assert!(r.ev(Event::SocketClosed { code: None }).is_empty());
        let wait = r.m.deadline().unwrap() - r.now;
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        fire_until_connect(&mut r);
    }

    #[test]
    fn a_connection_dropped_at_once_still_grows_the_backoff() {
        let mut r = Rig::new(0.999);
        r.connect();
        r.advance(secs(3));
        // A service that accepts and drops at once: each retry waits longer.
        let mut delays = Vec::new();
        r.ev(Event::SocketClosed { code: None });
        for _ in 0..8 {
            delays.push(r.m.deadline().unwrap() - r.now);
            fire_until_connect(&mut r);
            r.ev(Event::SocketOpened);
            r.advance(Duration::from_millis(200));
            r.ev(Event::SocketClosed { code: Some(1011) });
        }
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert!(*delays.last().unwrap() > secs(9), "{delays:?}");
    }

    #[test]
    fn planned_reconnects_never_add_a_failure() {
        let mut r = Rig::new(0.999);
        r.connect();
        fail_connects_then_connect(&mut r, 3);
        let failures = r.m.backoff.failures();
        // GO_AWAY and RECONNECT_ICE_SERVER right after each connect, twenty times: each goes
        // to its next step at once, and the failure count stays where the bad spell left it.
        for i in 0..20 {
            let a = if i % 2 == 0 {
                let a = r.ev(Event::GoAway);
                assert_eq!(a.last(), Some(&Action::CallDescribe), "{a:?}");
                r.ev(Event::Described(Ok(arn())));
                r.ev(Event::GotEndpoints(Ok(eps())))
            } else {
                let a = r.ev(Event::ReconnectIceServer);
                assert!(
                    matches!(a.last(), Some(Action::CallGetIceConfig { .. })),
                    "{a:?}"
                );
                a
            };
            assert!(matches!(a.last(), Some(Action::CallGetIceConfig { .. })));
            let a = r.ev(Event::GotIceConfig(Ok(())));
            if !is_connect(&a) {
                // Only the 3-per-second connect quota may hold a planned reconnect back.
                assert_eq!(r.m.state(), State::Backoff);
                assert!(r.m.deadline().unwrap() <= r.now + secs(1));
                fire_until_connect(&mut r);
            }
            r.ev(Event::SocketOpened);
            assert_eq!(r.m.backoff.failures(), failures);
            r.advance(Duration::from_millis(100));
        }
    }

    #[test]
    fn go_away_rediscovers_immediately() {
        let mut r = Rig::new(0.999);
        r.connect();
        let a = r.ev(Event::GoAway);
        assert_eq!(
            a,
            vec![
                Action::CloseSocket {
                    cause: Cause::GoAway
                },
                Action::CallDescribe
            ]
        );
        r.ev(Event::Described(Ok(arn())));
        r.ev(Event::GotEndpoints(Ok(eps())));
        let a = r.ev(Event::GotIceConfig(Ok(())));
        assert!(
            matches!(
                &a[..],
                [Action::Connect {
                    cause: Cause::GoAway,
                    ..
                }]
            ),
            "{a:?}"
        );
    }

    #[test]
    fn reconnect_ice_server_refetches_ice_then_connects() {
        let mut r = Rig::new(0.999);
        r.connect();
        let a = r.ev(Event::ReconnectIceServer);
        assert_eq!(
            a,
            vec![
                Action::CloseSocket {
                    cause: Cause::ReconnectIceServer
                },
                Action::CallGetIceConfig {
                    channel_arn: arn(),
                    https_endpoint: "https://r-1.example".into()
                }
            ]
        );
        let a = r.ev(Event::GotIceConfig(Ok(())));
        assert!(matches!(
            &a[..],
            [Action::Connect {
                cause: Cause::ReconnectIceServer,
                ..
            }]
        ));
    }

    #[test]
    fn signature_expired_applies_date_offset_and_retries_at_once() {
        let mut r = Rig::new(0.999);
        assert_eq!(r.ev(Event::Start), vec![Action::CallDescribe]);
        let local = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        let server = local + secs(3600);
        let skew = Failure::ClockSkew {
            server_date: server,
            local_date: local,
        };
        // Describe fails with skew → Describe again immediately.
        assert_eq!(
            r.ev(Event::Described(Err(skew))),
            vec![Action::CallDescribe]
        );
        assert_eq!(r.m.clock_offset_ms(), 3_600_000);
        // The same skew again: the offset did not change, so no hot loop — back off.
        assert!(r.ev(Event::Described(Err(skew))).is_empty());
        assert_eq!(r.m.state(), State::Backoff);
        assert_eq!(r.fire(), vec![Action::CallDescribe]);
        r.ev(Event::Described(Ok(arn())));
        r.ev(Event::GotEndpoints(Ok(eps())));
        let a = r.ev(Event::GotIceConfig(Ok(())));
        assert!(
            matches!(
                &a[..],
                [Action::Connect {
                    clock_offset_ms: 3_600_000,
                    ..
                }]
            ),
            "{a:?}"
        );
        // A clock behind the server the other way round on the handshake.
        let behind = Failure::ClockSkew {
            server_date: local - secs(600),
            local_date: local,
        };
        let a = r.ev(Event::ConnectFailed(behind));
        assert!(
            matches!(
                &a[..],
                [Action::Connect {
                    clock_offset_ms: -600_000,
                    ..
                }]
            ),
            "{a:?}"
        );
    }

    #[test]
    fn server_date_on_any_response_corrects_presign_time() {
        let mut r = Rig::new(0.999);
        r.ev(Event::Start);
        let local = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        // The device clock is 10 min behind: learned from a successful Describe's Date.
        r.ev(Event::ServerClock {
            server_date: local + secs(600),
            local_date: local,
        });
        r.ev(Event::Described(Ok(arn())));
        r.ev(Event::GotEndpoints(Ok(eps())));
        let a = r.ev(Event::GotIceConfig(Ok(())));
        assert!(
            matches!(
                &a[..],
                [Action::Connect {
                    clock_offset_ms: 600_000,
                    ..
                }]
            ),
            "{a:?}"
        );
        // Once NTP fixed the clock, a small difference resets the offset.
        r.ev(Event::ServerClock {
            server_date: local + secs(2),
            local_date: local,
        });
        assert_eq!(r.m.clock_offset_ms(), 0);
    }

    #[test]
    fn not_found_redescribes_and_uses_new_arn() {
        let mut r = Rig::new(0.999);
        r.connect();
        r.ev(Event::SocketClosed { code: None });
        r.fire();
        assert!(r.ev(Event::ConnectFailed(Failure::NotFound)).is_empty());
        assert_eq!(r.fire(), vec![Action::CallDescribe]);
        let new_arn = "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/cam/1800000000000";
        assert_eq!(
            r.ev(Event::Described(Ok(ChannelArn::parse(new_arn).unwrap()))),
            vec![Action::CallGetEndpoint {
                channel_arn: ChannelArn::parse(new_arn).unwrap()
            }]
        );
    }

    #[test]
    fn server_errors_on_handshake_refetch_endpoints_but_not_describe() {
        let mut r = Rig::new(0.999);
        r.connect();
        r.ev(Event::SocketError);
        r.fire();
        r.ev(Event::ConnectFailed(Failure::Server));
        assert_eq!(
            r.fire(),
            vec![Action::CallGetEndpoint { channel_arn: arn() }]
        );
    }

    #[test]
    fn api_failures_back_off_and_retry_same_step() {
        let mut r = Rig::new(0.999);
        r.ev(Event::Start);
        for f in [Failure::Throttled, Failure::Timeout, Failure::Server] {
            assert!(r.ev(Event::Described(Err(f))).is_empty());
            assert_eq!(r.fire(), vec![Action::CallDescribe]);
        }
        r.ev(Event::Described(Ok(arn())));
        assert!(
            r.ev(Event::GotEndpoints(Err(Failure::Throttled)))
                .is_empty()
        );
        assert_eq!(
            r.fire(),
            vec![Action::CallGetEndpoint { channel_arn: arn() }]
        );
    }

    #[test]
    fn ice_config_failure_does_not_keep_the_master_offline() {
        let mut r = Rig::new(0.999);
        r.ev(Event::Start);
        r.ev(Event::Described(Ok(arn())));
        r.ev(Event::GotEndpoints(Ok(eps())));
        let a = r.ev(Event::GotIceConfig(Err(Failure::Throttled)));
        assert!(is_connect(&a));
    }

    #[test]
    fn endpoint_cache_expires() {
        let mut r = Rig::new(0.999);
        r.m.cfg.max_connection_age = secs(11 * 3600);
        r.connect();
        r.advance(secs(10 * 3600));
        r.ev(Event::SocketClosed { code: None });
        assert_eq!(
            r.fire(),
            vec![Action::CallGetEndpoint { channel_arn: arn() }]
        );
    }

    #[test]
    fn ping_without_pong_within_the_deadline_is_a_dead_socket() {
        let mut r = Rig::new(0.999);
        r.connect();
        // First ping after 25 idle seconds; the service answers.
        assert_eq!(r.fire(), vec![Action::SendPing]);
        r.ev(Event::FrameSent);
        assert_eq!(r.m.deadline(), Some(r.now + secs(20)));
        r.advance(secs(3));
        r.ev(Event::PongReceived);
        // Any frame answers too: a ping whose reply is an offer is not a dead socket.
        assert_eq!(r.fire(), vec![Action::SendPing]);
        r.ev(Event::FrameSent);
        r.advance(secs(19));
        r.ev(Event::FrameReceived);
        assert!(r.ev(Event::Timer).is_empty());
        // This ping gets nothing back: the socket is declared dead exactly 20 s after it,
        // without waiting for the next ping or the 10-minute idle cut.
        let a = r.fire();
        assert_eq!(a, vec![Action::SendPing]);
        let pinged = r.now;
        r.ev(Event::FrameSent);
        r.advance(secs(19));
        assert!(r.ev(Event::Timer).is_empty());
        let a = r.fire();
        assert_eq!(r.now, pinged + secs(20));
        assert_eq!(
            a,
            vec![Action::CloseSocket {
                cause: Cause::PongTimeout
            }]
        );
        assert_eq!(r.m.state(), State::Backoff);
        // ... and reconnects like after any socket loss.
        assert!(
            matches!(
                &r.fire()[..],
                [Action::Connect {
                    cause: Cause::PongTimeout,
                    ..
                }]
            ),
            "{:?}",
            r.m
        );
    }

    /// Drives to `state` and returns the action that started it.
    fn start_step(r: &mut Rig, state: State) {
        assert_eq!(r.ev(Event::Start), vec![Action::CallDescribe]);
        if state == State::Describe {
            return;
        }
        r.ev(Event::Described(Ok(arn())));
        if state == State::GetEndpoint {
            return;
        }
        r.ev(Event::GotEndpoints(Ok(eps())));
        if state == State::GetIceConfig {
            return;
        }
        r.ev(Event::GotIceConfig(Ok(())));
        assert_eq!(r.m.state(), State::Connecting);
    }

    #[test]
    fn every_step_has_a_deadline_and_a_timeout_backs_off_and_retries() {
        for (state, retry) in [
            (State::Describe, Action::CallDescribe),
            (
                State::GetEndpoint,
                Action::CallGetEndpoint { channel_arn: arn() },
            ),
            // A connect that hangs may be a dead WSS host: endpoints are fetched again.
            (
                State::Connecting,
                Action::CallGetEndpoint { channel_arn: arn() },
            ),
        ] {
            let mut r = Rig::new(0.999);
            start_step(&mut r, state);
            assert_eq!(r.m.state(), state);
            let started = r.now;
            assert_eq!(r.m.deadline(), Some(started + secs(20)), "{state:?}");
            // Nothing happens before the deadline.
            r.advance(secs(19));
            assert!(r.ev(Event::Timer).is_empty(), "{state:?}");
            let a = r.fire();
            assert_eq!(r.now, started + secs(20));
            assert_eq!(a, vec![Action::CancelCall], "{state:?}");
            assert_eq!(r.m.state(), State::Backoff, "{state:?}");
            let wake = r.m.deadline().unwrap();
            assert!(wake > r.now && wake <= r.now + Duration::from_millis(100));
            assert_eq!(r.fire(), vec![retry], "{state:?}");
            // A result of the abandoned call that still arrives is ignored when it no longer
            // fits (a stale connect result in GetEndpoint, say).
            if state == State::Connecting {
                assert!(r.ev(Event::SocketOpened).is_empty());
                assert_eq!(r.m.state(), State::GetEndpoint);
            }
        }
    }

    #[test]
    fn a_hung_ice_config_call_times_out_into_a_connect() {
        let mut r = Rig::new(0.999);
        start_step(&mut r, State::GetIceConfig);
        let a = r.fire();
        assert!(
            matches!(
                &a[..],
                [
                    Action::CancelCall,
                    Action::Connect {
                        cause: Cause::Initial,
                        ..
                    }
                ]
            ),
            "{a:?}"
        );
        assert_eq!(r.m.state(), State::Connecting);
    }

    #[test]
    fn repeated_timeouts_back_off_like_any_failure() {
        let mut r = Rig::new(0.999);
        r.ev(Event::Start);
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert_eq!(r.fire(), vec![Action::CancelCall]);
            let at = r.now;
            assert_eq!(r.fire(), vec![Action::CallDescribe]);
            waits.push(r.now - at);
        }
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert!(*waits.last().unwrap() > secs(9), "{waits:?}");
        // A success ends it.
        r.ev(Event::Described(Ok(arn())));
        assert_eq!(r.m.state(), State::GetEndpoint);
    }

    #[test]
    fn step_timeout_is_configurable() {
        let now = Instant::now();
        let cfg = MachineConfig {
            step_timeout: secs(3),
            ..MachineConfig::default()
        };
        let mut m = Machine::new(cfg, fixed_jitter(0.5), now);
        m.handle(now, Event::Start);
        assert_eq!(m.deadline(), Some(now + secs(3)));
    }

    #[test]
    fn denied_invalidates_credentials_before_every_retry() {
        let mut r = Rig::new(0.999);
        r.ev(Event::Start);
        assert_eq!(
            r.ev(Event::Described(Err(Failure::Denied))),
            vec![Action::InvalidateCredentials]
        );
        assert_eq!(r.fire(), vec![Action::CallDescribe]);
        r.ev(Event::Described(Ok(arn())));
        assert_eq!(
            r.ev(Event::GotEndpoints(Err(Failure::Denied))),
            vec![Action::InvalidateCredentials]
        );
        r.fire();
        r.ev(Event::GotEndpoints(Ok(eps())));
        // GetIceConfig refused: fresh credentials, and connect anyway.
        let a = r.ev(Event::GotIceConfig(Err(Failure::Denied)));
        assert!(
            matches!(
                &a[..],
                [Action::InvalidateCredentials, Action::Connect { .. }]
            ),
            "{a:?}"
        );
        // A clock error is not a credential problem: nothing is invalidated.
        let local = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        let a = r.ev(Event::ConnectFailed(Failure::ClockSkew {
            server_date: local + secs(600),
            local_date: local,
        }));
        assert!(!a.contains(&Action::InvalidateCredentials), "{a:?}");
    }

    #[test]
    fn healthy_connection_resets_backoff() {
        let mut r = Rig::new(0.999);
        r.connect();
        for _ in 0..6 {
            r.ev(Event::SocketError);
            r.fire();
            r.ev(Event::SocketOpened);
        }
        r.ev(Event::SocketError);
        assert!(r.m.deadline().unwrap() - r.now > secs(3));
        r.fire();
        r.ev(Event::SocketOpened);
        r.advance(secs(91));
        r.ev(Event::SocketClosed { code: Some(1006) });
        assert!(r.m.deadline().unwrap() - r.now <= Duration::from_millis(100));
    }

    #[test]
    fn stale_and_stopped_events_are_ignored() {
        let mut r = Rig::new(0.5);
        r.connect();
        assert!(r.ev(Event::Described(Ok(arn()))).is_empty());
        assert!(r.ev(Event::GotEndpoints(Ok(eps()))).is_empty());
        assert_eq!(
            r.ev(Event::Stop),
            vec![Action::CloseSocket {
                cause: Cause::Initial
            }]
        );
        assert!(r.ev(Event::Start).is_empty());
        assert!(r.ev(Event::Timer).is_empty());
        assert_eq!(r.m.deadline(), None);
    }

    #[test]
    fn offset_sign() {
        let t = SystemTime::UNIX_EPOCH + secs(100);
        assert_eq!(offset_ms(t + secs(2), t), 2000);
        assert_eq!(offset_ms(t, t + secs(2)), -2000);
    }
}
