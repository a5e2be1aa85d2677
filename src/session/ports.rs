//! UDP port allocation inside `webrtc.udp_port_min..=udp_port_max` (sans-IO).
//!
//! `webrtc` 0.21 has no port-range setting, so each peer is bound to an explicit port we pick
//! here; a firewall then needs only that range opened.

use std::collections::HashSet;

#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl PortPool {
    /// `None` range means ephemeral ports (the pool always hands out 0).
    pub fn new(range: Option<(u16, u16)>) -> Self {
        let (min, max) = range.unwrap_or((0, 0));
        Self {
            min,
            max,
            next: min,
            in_use: HashSet::new(),
        }
    }

    fn ephemeral(&self) -> bool {
        self.min == 0 && self.max == 0
    }

    /// The next free port (round robin, so a just-released port cools down), or None when
    /// the whole range is taken.
    pub fn acquire(&mut self) -> Option<u16> {
        if self.ephemeral() {
            return Some(0);
        }
        let span = u32::from(self.max - self.min) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if self.next >= self.max {
                self.min
            } else {
                self.next + 1
            };
            if self.in_use.insert(port) {
                return Some(port);
            }
        }
        None
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    pub fn size(&self) -> usize {
        if self.ephemeral() {
            usize::MAX
        } else {
            usize::from(self.max - self.min) + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_always_zero() {
        let mut p = PortPool::new(None);
        assert_eq!(p.acquire(), Some(0));
        assert_eq!(p.acquire(), Some(0));
    }

    #[test]
    fn range_is_exhausted_then_reused() {
        let mut p = PortPool::new(Some((40000, 40002)));
        assert_eq!(p.acquire(), Some(40000));
        assert_eq!(p.acquire(), Some(40001));
        assert_eq!(p.acquire(), Some(40002));
        assert_eq!(p.acquire(), None);
        p.release(40001);
        assert_eq!(p.acquire(), Some(40001));
    }

    #[test]
    fn wraps_at_the_top_of_the_port_space() {
        let mut p = PortPool::new(Some((65534, 65535)));
        assert_eq!(p.acquire(), Some(65534));
        assert_eq!(p.acquire(), Some(65535));
        p.release(65534);
        assert_eq!(p.acquire(), Some(65534));
    }
}
