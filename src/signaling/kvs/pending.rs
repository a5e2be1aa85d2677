//! Remote ICE candidates that arrive before their viewer's offer.
//!
//! Ordering between an SDP and its candidates is not guaranteed by the service, so candidates for
//! a sender we have no session for yet are parked here and handed over once the offer has been
//! applied. Bounded on every axis: a viewer (or a hostile peer) spraying candidates or sender ids
//! must not grow memory without limit, and stale queues expire.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::client_id::ClientId;

#[derive(Debug, Clone, Copy)]
pub struct PendingLimits {
    pub per_sender: usize,
    pub senders: usize,
    pub ttl: Duration,
}

impl Default for PendingLimits {
    fn default() -> Self {
        PendingLimits {
            per_sender: 50,
            senders: 100,
            ttl: Duration::from_secs(20),
        }
    }
}

#[derive(Debug)]
struct Queue {
    /// When the first candidate of this queue arrived; the whole queue expires with it.
    created: Instant,
    items: VecDeque<String>,
}

/// Early candidates keyed by sender client id.
#[derive(Debug, Default)]
pub struct PendingCandidates {
    limits: PendingLimits,
    queues: HashMap<ClientId, Queue>,
    dropped: u64,
}

impl PendingCandidates {
    pub fn new(limits: PendingLimits) -> Self {
        PendingCandidates {
            limits,
            queues: HashMap::new(),
            dropped: 0,
        }
    }

    /// Parks a candidate. Returns false if it was dropped because a bound was hit.
    pub fn push(&mut self, now: Instant, sender: &ClientId, candidate_json: String) -> bool {
        self.expire(now);
        if !self.queues.contains_key(sender) && self.queues.len() >= self.limits.senders {
            self.dropped += 1;
            return false;
        }
        let q = self.queues.entry(sender.clone()).or_insert_with(|| Queue {
            created: now,
            items: VecDeque::new(),
        });
        if q.items.len() >= self.limits.per_sender {
            self.dropped += 1;
            return false;
        }
        q.items.push_back(candidate_json);
        true
    }

    /// Takes every unexpired candidate parked for `sender`, oldest first.
    pub fn take(&mut self, now: Instant, sender: &ClientId) -> Vec<String> {
        self.expire(now);
        self.queues
            .remove(sender)
            .map(|q| q.items.into_iter().collect())
            .unwrap_or_default()
    }

    /// Drops queues older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.limits.ttl;
        let before: usize = self.queues.values().map(|q| q.items.len()).sum();
        self.queues
            .retain(|_, q| now.saturating_duration_since(q.created) < ttl);
        let after: usize = self.queues.values().map(|q| q.items.len()).sum();
        self.dropped += (before - after) as u64;
    }

    pub fn senders(&self) -> usize {
        self.queues.len()
    }

    /// Candidates dropped so far (bounds or expiry).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    #[test]
    fn queued_candidates_are_delivered_in_order_once() {
        let t0 = Instant::now();
        let mut p = PendingCandidates::new(PendingLimits::default());
        assert!(p.push(t0, &id("v1"), "a".into()));
        assert!(p.push(t0, &id("v1"), "b".into()));
        assert!(p.push(t0, &id("v2"), "c".into()));
        assert_eq!(p.take(t0, &id("v1")), vec!["a", "b"]);
        assert!(p.take(t0, &id("v1")).is_empty());
        assert_eq!(p.take(t0, &id("v2")), vec!["c"]);
    }

    #[test]
    fn per_sender_and_sender_count_are_bounded() {
        let t0 = Instant::now();
        let mut p = PendingCandidates::new(PendingLimits::default());
        for i in 0..60 {
            p.push(t0, &id("v"), format!("{i}"));
        }
        for s in 0..150 {
            p.push(t0, &id(&format!("s{s}")), "x".into());
        }
        assert_eq!(p.senders(), 100);
        assert_eq!(p.take(t0, &id("v")).len(), 50);
        assert_eq!(p.dropped(), 10 + 51);
    }

    #[test]
    fn queues_expire_after_20s() {
        let t0 = Instant::now();
        let mut p = PendingCandidates::new(PendingLimits::default());
        p.push(t0, &id("v"), "a".into());
        p.push(t0 + Duration::from_secs(15), &id("v"), "b".into());
        assert!(p.take(t0 + Duration::from_secs(20), &id("v")).is_empty());
        assert_eq!(p.dropped(), 2);
        p.push(t0, &id("w"), "a".into());
        assert_eq!(p.take(t0 + Duration::from_secs(19), &id("w")), vec!["a"]);
    }
}
