//! Offers per client address: a token bucket per IP, sans-IO (the caller passes `now`).
//!
//! Each offer builds a peer connection, binds a socket and gathers candidates, so a single
//! client posting in a loop could starve the device. The bucket lets a viewer reconnect at
//! once (a burst), and refuses a flood with the time until the next offer would be taken.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most addresses tracked; past it the idlest are forgotten (a forgotten address starts with
/// a full bucket, which only ever lets a little more through).
const MAX_TRACKED: usize = 4096;

#[derive(Debug)]
pub struct OfferLimiter {
    /// Offers per second each address earns; 0 turns the limit off.
    rate: f64,
    /// Offers an address may make at once after being quiet.
    burst: f64,
    /// Per address: tokens left and when they were counted.
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl OfferLimiter {
    /// `per_second` offers per address, with a burst of three seconds' worth (at least 3).
    pub fn new(per_second: u32) -> OfferLimiter {
        let rate = f64::from(per_second);
        OfferLimiter {
            rate,
            burst: (rate * 3.0).max(3.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes one offer for `ip` at `now`: Ok, or Err with how long until one would be taken.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.forget_idle(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst, now));
        let earned = now.saturating_duration_since(*at).as_secs_f64() * rate;
        *tokens = (*tokens + earned).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }

    /// Drops addresses whose bucket has refilled (they are indistinguishable from new ones),
    /// and if that frees nothing, the half that were seen least recently.
    fn forget_idle(&mut self, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        self.buckets
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < full_after);
        if self.buckets.len() >= MAX_TRACKED {
            let mut seen: Vec<Instant> = self.buckets.values().map(|(_, at)| *at).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 2];
            self.buckets.retain(|_, (_, at)| *at > cut);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn burst_then_refusal_with_the_wait() {
        let t0 = Instant::now();
        let mut l = OfferLimiter::new(2);
        for _ in 0..6 {
            assert!(l.take(ip(1), t0).is_ok());
        }
        let wait = l.take(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another address is not affected.
        assert!(l.take(ip(2), t0).is_ok());
        // Half a second later one offer is earned again.
        assert!(l.take(ip(1), t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take(ip(1), t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_is_unlimited() {
        let t0 = Instant::now();
        let mut l = OfferLimiter::new(0);
        for _ in 0..1000 {
            assert!(l.take(ip(1), t0).is_ok());
        }
    }

    #[test]
    fn memory_is_bounded_under_a_spray_of_addresses() {
        let t0 = Instant::now();
        let mut l = OfferLimiter::new(1);
        for n in 0..(MAX_TRACKED as u32 * 3) {
            let _ = l.take(ip(n), t0 + Duration::from_millis(u64::from(n)));
        }
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
