//! Outgoing signaling messages, paced to the service's per-connection quotas.
//!
//! KVS accepts at most 5 SDP answers and 20 ICE candidates per second per connection and drops
//! the excess (a STATUS_RESPONSE at best). Ten viewers trickling at once exceed that easily, so
//! frames wait here in FIFO order — order matters: a viewer must get its answer before its
//! candidates — and leave as fast as the quotas allow. The queue also carries answers across a
//! reconnect instead of dropping them; entries that waited too long are dropped, since the
//! viewer has given up by then.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::backoff::RateCap;
use super::client_id::ClientId;
use super::message::Action;

#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub answers_per_sec: usize,
    pub candidates_per_sec: usize,
    pub capacity: usize,
    pub max_wait: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            answers_per_sec: 5,
            candidates_per_sec: 20,
            capacity: 500,
            max_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Queued {
    action: Action,
    recipient: ClientId,
    text: String,
    at: Instant,
}

/// A frame that could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub action: Action,
    pub recipient: ClientId,
    pub reason: &'static str,
}

#[derive(Debug)]
pub struct Outbox {
    limits: OutboxLimits,
    answers: RateCap,
    candidates: RateCap,
    queue: VecDeque<Queued>,
}

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            answers: RateCap::new(limits.answers_per_sec, Duration::from_secs(1)),
            candidates: RateCap::new(limits.candidates_per_sec, Duration::from_secs(1)),
            limits,
            queue: VecDeque::new(),
        }
    }

    /// Queues a frame; if the queue is full the oldest candidate (or else the oldest frame) is
    /// dropped and returned.
    pub fn push(
        &mut self,
        now: Instant,
        action: Action,
        recipient: &ClientId,
        text: String,
    ) -> Option<Dropped> {
        let mut dropped = None;
        if self.queue.len() >= self.limits.capacity {
            let idx = self
                .queue
                .iter()
                .position(|q| q.action == Action::IceCandidate)
                .unwrap_or(0);
            dropped = self.queue.remove(idx).map(|q| Dropped {
                action: q.action,
                recipient: q.recipient,
                reason: "outbox full",
            });
        }
        self.queue.push_back(Queued {
            action,
            recipient: recipient.clone(),
            text,
            at: now,
        });
        dropped
    }

    /// Frames too old to be useful are removed and returned.
    pub fn expire(&mut self, now: Instant) -> Vec<Dropped> {
        let mut out = Vec::new();
        while let Some(q) = self.queue.front() {
            if now.saturating_duration_since(q.at) < self.limits.max_wait {
                break;
            }
            if let Some(q) = self.queue.pop_front() {
                out.push(Dropped {
                    action: q.action,
                    recipient: q.recipient,
                    reason: "waited too long",
                });
            }
        }
        out
    }

    /// The next frame allowed to leave now, counted against its quota.
    pub fn pop_ready(&mut self, now: Instant) -> Option<(Action, ClientId, String)> {
        let head = self.queue.front()?;
        let cap = match head.action {
            Action::SdpAnswer => &mut self.answers,
            Action::IceCandidate => &mut self.candidates,
        };
        if cap.earliest(now) > now {
            return None;
        }
        cap.record(now);
        self.queue
            .pop_front()
            .map(|q| (q.action, q.recipient, q.text))
    }

    /// When the head of the queue may leave (None if empty).
    pub fn deadline(&mut self, now: Instant) -> Option<Instant> {
        let head = self.queue.front()?;
        let t = match head.action {
            Action::SdpAnswer => self.answers.earliest(now),
            Action::IceCandidate => self.candidates.earliest(now),
        };
        Some(t.min(head.at + self.limits.max_wait))
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Drains the outbox on a virtual clock, returning send times.
    fn drain(o: &mut Outbox, mut now: Instant) -> Vec<(Instant, Action, ClientId)> {
        let mut sent = Vec::new();
        while !o.is_empty() {
            while let Some((a, r, _)) = o.pop_ready(now) {
                sent.push((now, a, r));
            }
            if let Some(d) = o.deadline(now) {
                now = now.max(d);
            }
        }
        sent
    }

    #[test]
    fn candidates_are_paced_to_20_per_second_and_keep_order() {
        let t0 = Instant::now();
        let mut o = Outbox::new(OutboxLimits::default());
        o.push(t0, Action::SdpAnswer, &id("v1"), "answer".into());
        for i in 0..50 {
            o.push(t0, Action::IceCandidate, &id("v1"), format!("c{i}"));
        }
        let sent = drain(&mut o, t0);
        assert_eq!(sent.len(), 51);
        assert_eq!(sent[0].1, Action::SdpAnswer, "answer leaves first");
        for (i, (t, a, _)) in sent.iter().enumerate() {
            if *a != Action::IceCandidate {
                continue;
            }
            let in_window = sent[i..]
                .iter()
                .filter(|(u, b, _)| *b == Action::IceCandidate && u.duration_since(*t) < ms(1000))
                .count();
            assert!(in_window <= 20, "{in_window} candidates within 1 s");
        }
        // 50 candidates at 20/s take at least two full windows.
        assert!(sent.last().unwrap().0.duration_since(t0) >= ms(2000));
    }

    #[test]
    fn answers_are_paced_to_5_per_second() {
        let t0 = Instant::now();
        let mut o = Outbox::new(OutboxLimits::default());
        for i in 0..6 {
            o.push(t0, Action::SdpAnswer, &id(&format!("v{i}")), "a".into());
        }
        for _ in 0..5 {
            assert!(o.pop_ready(t0).is_some());
        }
        assert!(o.pop_ready(t0).is_none());
        assert_eq!(o.deadline(t0), Some(t0 + ms(1000)));
        assert!(o.pop_ready(t0 + ms(1000)).is_some());
    }

    #[test]
    fn full_queue_drops_candidates_before_answers_and_old_frames_expire() {
        let t0 = Instant::now();
        let mut o = Outbox::new(OutboxLimits {
            capacity: 3,
            ..OutboxLimits::default()
        });
        o.push(t0, Action::SdpAnswer, &id("a"), "x".into());
        o.push(t0, Action::IceCandidate, &id("b"), "x".into());
        o.push(t0, Action::SdpAnswer, &id("c"), "x".into());
        let d = o.push(t0, Action::SdpAnswer, &id("d"), "x".into()).unwrap();
        assert_eq!(d.recipient.as_str(), "b");
        assert_eq!(o.len(), 3);
        let gone = o.expire(t0 + Duration::from_secs(30));
        assert_eq!(gone.len(), 3);
        assert!(o.is_empty());
    }
}
