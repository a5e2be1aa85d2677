//! STUN/TURN servers for new sessions, refreshed in the background.
//!
//! KVS TURN credentials live 300 s. Fetching them lazily when an offer arrives puts a REST round
//! trip (and its failure modes) on the offer path, which has broken Alexa sessions in the C SDK;
//! fetching once leaves new sessions with expired credentials after five minutes. So we refetch
//! at a jittered 50–80 % of the shortest TTL, retry failures with backoff, and hand out only
//! servers whose credentials are still good (STUN needs none and is always there).

use std::time::{Duration, Instant};

use super::IceServer;
use super::backoff::{Backoff, BackoffConfig, Jitter};

/// One TURN server as GetIceServerConfig returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    pub uris: Vec<String>,
    pub username: String,
    pub password: String,
    pub ttl: Duration,
}

/// The STUN server of the channel's region (not returned by the service).
pub fn stun_url(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("stun:stun.kinesisvideo.{region}.{suffix}:443")
}

#[derive(Debug, Clone, Copy)]
pub struct RefreshConfig {
    /// A TURN entry is withheld once it is within this much of expiry: a session created with it
    /// needs time to allocate.
    pub grace: Duration,
    /// Refresh point, as a fraction of the shortest TTL, drawn uniformly from this range.
    pub refresh_fraction: (f64, f64),
    /// Retry pacing after a failed fetch.
    pub retry: BackoffConfig,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            grace: Duration::from_secs(30),
            refresh_fraction: (0.5, 0.8),
            retry: BackoffConfig {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(30),
                reset_after: Duration::ZERO,
            },
        }
    }
}

/// Sans-IO ICE config cache: tells the driver when to fetch, keeps what was fetched.
pub struct IceRefresher {
    cfg: RefreshConfig,
    /// The region's KVS STUN server; None when turned off (`kvs.region_stun = false`).
    stun: Option<String>,
    turn: Vec<(TurnServer, Instant)>,
    fetched_at: Option<Instant>,
    next_fetch: Option<Instant>,
    in_flight: bool,
    retry: Backoff,
    jitter: Jitter,
}

impl std::fmt::Debug for IceRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceRefresher")
            .field("stun", &self.stun)
            .field("turn", &self.turn.len())
            .field("fetched_at", &self.fetched_at)
            .field("next_fetch", &self.next_fetch)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl IceRefresher {
    /// `retry_jitter` paces retries, `jitter` picks the refresh point.
    pub fn new(region: &str, cfg: RefreshConfig, jitter: Jitter, retry_jitter: Jitter) -> Self {
        IceRefresher {
            cfg,
            stun: Some(stun_url(region)),
            turn: Vec::new(),
            fetched_at: None,
            next_fetch: None,
            in_flight: false,
            retry: Backoff::new(cfg.retry, retry_jitter),
            jitter,
        }
    }

    /// Leaves the region's STUN server out of [`IceRefresher::current`]: for devices with no
    /// route to it (a private network that reaches AWS only through a proxy) and for tests,
    /// which must not send anything off the machine.
    pub fn without_region_stun(mut self) -> Self {
        self.stun = None;
        self
    }

    /// Arms the first fetch (normally the connection chain fetches first and reports it here).
    pub fn start(&mut self, now: Instant) {
        if self.fetched_at.is_none() && self.next_fetch.is_none() && !self.in_flight {
            self.next_fetch = Some(now);
        }
    }

    /// True if the driver should start a fetch now; the refresher then waits for a result.
    pub fn poll_fetch(&mut self, now: Instant) -> bool {
        match self.next_fetch {
            Some(t) if !self.in_flight && now >= t => {
                self.in_flight = true;
                self.next_fetch = None;
                true
            }
            _ => false,
        }
    }

    /// A fetch was started elsewhere (the connection chain's GetIceConfig).
    pub fn fetch_started(&mut self) {
        self.in_flight = true;
        self.next_fetch = None;
    }

    /// Next instant at which `poll_fetch` may return true.
    pub fn deadline(&self) -> Option<Instant> {
        if self.in_flight {
            None
        } else {
            self.next_fetch
        }
    }

    pub fn on_fetched(&mut self, now: Instant, servers: Vec<TurnServer>) {
        self.in_flight = false;
        self.fetched_at = Some(now);
        self.turn = servers
            .into_iter()
            .filter(|s| !s.uris.is_empty())
            .map(|s| {
                let exp = now + s.ttl;
                (s, exp)
            })
            .collect();
        // No TURN at all (or a zero TTL) is still a valid answer; look again in a minute.
        let min_ttl = self
            .turn
            .iter()
            .map(|(s, _)| s.ttl)
            .min()
            .filter(|t| !t.is_zero())
            .unwrap_or(Duration::from_secs(60));
        let (lo, hi) = self.cfg.refresh_fraction;
        let r = (self.jitter)();
        let r = if r.is_finite() {
            r.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let frac = lo + (hi - lo) * r;
        // Never refresh later than the point where entries start being withheld.
        let by_fraction = min_ttl.mul_f64(frac);
        let by_grace = min_ttl.saturating_sub(self.cfg.grace);
        let wait = if by_grace.is_zero() {
            by_fraction
        } else {
            by_fraction.min(by_grace)
        };
        self.next_fetch = Some(now + wait.max(Duration::from_secs(1)));
        // A success ends the failure streak.
        self.retry.reset();
    }

    pub fn on_failed(&mut self, now: Instant) {
        self.in_flight = false;
        let d = self.retry.next_delay(now);
        self.next_fetch = Some(now + d.max(Duration::from_millis(100)));
    }

    /// The servers to give a session created now: STUN plus every TURN entry not near expiry.
    pub fn current(&self, now: Instant) -> Vec<IceServer> {
        let mut out: Vec<IceServer> = self
            .stun
            .iter()
            .map(|stun| IceServer {
                urls: vec![stun.clone()],
                username: None,
                credential: None,
            })
            .collect();
        for (s, exp) in &self.turn {
            if now + self.cfg.grace < *exp {
                out.push(IceServer {
                    urls: s.uris.clone(),
                    username: Some(s.username.clone()),
                    credential: Some(s.password.clone()),
                });
            }
        }
        out
    }

    /// Age of the last successful fetch.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.fetched_at.map(|t| now.saturating_duration_since(t))
    }

    /// Number of TURN entries currently usable.
    pub fn usable_turn(&self, now: Instant) -> usize {
        self.turn
            .iter()
            .filter(|(_, exp)| now + self.cfg.grace < *exp)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::fixed_jitter;

    fn turn(ttl: u64, tag: &str) -> TurnServer {
        TurnServer {
            uris: vec![
                format!("turn:{tag}.example:443?transport=udp"),
                format!("turns:{tag}.example:443?transport=tcp"),
            ],
            username: format!("1700000000:{tag}"),
            password: "pw".into(),
            ttl: Duration::from_secs(ttl),
        }
    }

    fn refresher(j: f64) -> IceRefresher {
        IceRefresher::new(
            "eu-west-1",
            RefreshConfig::default(),
            fixed_jitter(j),
            fixed_jitter(0.999),
        )
    }

    #[test]
    fn region_stun_can_be_left_out() {
        let t0 = Instant::now();
        let r = refresher(0.5).without_region_stun();
        assert!(r.current(t0).is_empty());
    }

    #[test]
    fn stun_url_per_region() {
        assert_eq!(
            stun_url("eu-west-1"),
            "stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443"
        );
        assert_eq!(
            stun_url("cn-north-1"),
            "stun:stun.kinesisvideo.cn-north-1.amazonaws.com.cn:443"
        );
    }

    #[test]
    fn refresh_lands_between_50_and_80_percent_of_smallest_ttl() {
        for (j, expect) in [(0.0, 150), (1.0, 240), (0.5, 195)] {
            let t0 = Instant::now();
            let mut r = refresher(j);
            r.start(t0);
            assert!(r.poll_fetch(t0));
            assert!(!r.poll_fetch(t0), "one fetch at a time");
            r.on_fetched(t0, vec![turn(600, "a"), turn(300, "b")]);
            assert_eq!(
                r.deadline(),
                Some(t0 + Duration::from_secs(expect)),
                "jitter {j}"
            );
            assert!(!r.poll_fetch(t0 + Duration::from_secs(expect - 1)));
            assert!(r.poll_fetch(t0 + Duration::from_secs(expect)));
        }
    }

    #[test]
    fn current_has_regional_stun_and_only_unexpired_turn() {
        let t0 = Instant::now();
        let mut r = refresher(0.5);
        // Before any fetch: STUN only.
        let only_stun = r.current(t0);
        assert_eq!(only_stun.len(), 1);
        assert_eq!(
            only_stun[0].urls,
            vec!["stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443"]
        );
        assert!(only_stun[0].username.is_none());

        r.fetch_started();
        r.on_fetched(t0, vec![turn(300, "a"), turn(100, "b")]);
        let now = r.current(t0 + Duration::from_secs(10));
        assert_eq!(now.len(), 3);
        assert_eq!(now[1].username.as_deref(), Some("1700000000:a"));
        assert_eq!(now[1].credential.as_deref(), Some("pw"));
        // "b" expires at 100 s, withheld from 70 s (grace 30 s).
        assert_eq!(r.current(t0 + Duration::from_secs(70)).len(), 2);
        // "a" withheld from 270 s; STUN stays.
        let late = r.current(t0 + Duration::from_secs(270));
        assert_eq!(late.len(), 1);
        assert!(late[0].urls[0].starts_with("stun:"));
        assert_eq!(r.usable_turn(t0 + Duration::from_secs(269)), 1);
    }

    #[test]
    fn failures_retry_with_growing_backoff_and_keep_old_servers() {
        let t0 = Instant::now();
        let mut r = refresher(0.5);
        r.fetch_started();
        r.on_fetched(t0, vec![turn(300, "a")]);
        let due = r.deadline().unwrap();
        assert!(r.poll_fetch(due));
        r.on_failed(due);
        let first = r.deadline().unwrap() - due;
        assert!(r.poll_fetch(due + first));
        r.on_failed(due + first);
        let second = r.deadline().unwrap() - (due + first);
        assert!(second > first, "{second:?} !> {first:?}");
        assert!(second <= Duration::from_secs(30));
        // The previous credentials are still handed out while valid.
        assert_eq!(r.usable_turn(due + first), 1);
        // Success resets the retry streak.
        let t1 = due + first + second;
        assert!(r.poll_fetch(t1));
        r.on_fetched(t1, vec![turn(300, "c")]);
        let d = r.deadline().unwrap();
        assert!(r.poll_fetch(d));
        r.on_failed(d);
        assert!(r.deadline().unwrap() - d <= Duration::from_secs(1));
    }

    #[test]
    fn empty_or_short_ttl_answers_still_schedule_a_refresh() {
        let t0 = Instant::now();
        let mut r = refresher(0.0);
        r.fetch_started();
        r.on_fetched(t0, vec![]);
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(30)));
        r.fetch_started();
        r.on_fetched(t0, vec![turn(20, "tiny")]);
        // 50 % of 20 s; withheld immediately since TTL < grace.
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(r.usable_turn(t0), 0);
    }
}
