//! Which remote ICE candidates a session takes (sans-IO).
//!
//! Every remote candidate makes the ICE agent send connectivity checks to the address it
//! names, so a client could use a session to make the camera probe any host, or flood the
//! agent with pairs. A session takes at most `webrtc.max_remote_candidates`, in the offer and
//! trickled together, and ignores addresses no viewer can have: multicast, broadcast,
//! unspecified, port 0, and our own HTTP listening socket.

use std::net::{IpAddr, SocketAddr};

/// Why a candidate was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Use,
    /// Skipped silently (logged at debug): a harmless but useless or hostile address.
    Ignore(&'static str),
}

/// What the policy needs to know about us.
#[derive(Debug, Clone, Default)]
pub struct CandidatePolicy {
    /// Sockets that are ours and must never be a check target (the HTTP listener). An
    /// unspecified IP matches any address on that port that could be this host's.
    pub own: Vec<SocketAddr>,
}

/// The address and port of an `a=candidate:` / `candidate:` attribute, when it names an IP
/// (mDNS `.local` names and malformed lines give None and are left to the ICE agent, which
/// resolves or rejects them).
pub fn address_of(candidate: &str) -> Option<(IpAddr, u16)> {
    let attr = candidate.trim();
    let attr = attr.strip_prefix("a=").unwrap_or(attr);
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    let mut f = attr.strip_prefix("candidate:")?.split_whitespace();
    let address = f.nth(4)?;
    let port = f.next()?.parse().ok()?;
    Some((address.parse().ok()?, port))
}

impl CandidatePolicy {
    pub fn judge(&self, candidate: &str) -> Verdict {
        let Some((ip, port)) = address_of(candidate) else {
            return Verdict::Use;
        };
        if port == 0 {
            return Verdict::Ignore("port 0");
        }
        if ip.is_unspecified() {
            return Verdict::Ignore("unspecified address");
        }
        if ip.is_multicast() {
            return Verdict::Ignore("multicast address");
        }
        if let IpAddr::V4(v4) = ip
            && v4.is_broadcast()
        {
            return Verdict::Ignore("broadcast address");
        }
        let ours = self.own.iter().any(|s| {
            s.port() == port && (s.ip() == ip || (s.ip().is_unspecified() && could_be_ours(ip)))
        });
        if ours {
            return Verdict::Ignore("our own HTTP listener");
        }
        Verdict::Use
    }
}

/// An address a wildcard listener would be reachable on from this host: loopback, or any
/// private or link-local one (a LAN address of ours). Public addresses are left alone, since a
/// viewer on the internet may well use our port number on its own address.
fn could_be_ours(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// The offer with candidates the policy ignores removed, and at most `max` kept. Returns the
/// new text and how many were dropped.
pub fn filter_offer(sdp: &str, policy: &CandidatePolicy, max: usize) -> (String, usize) {
    let mut out = String::with_capacity(sdp.len());
    let mut kept = 0usize;
    let mut dropped = 0usize;
    for line in sdp.split_inclusive('\n') {
        let l = line.trim_end();
        if l.starts_with("a=candidate:") {
            if kept >= max || policy.judge(l) != Verdict::Use {
                dropped += 1;
                continue;
            }
            kept += 1;
        }
        out.push_str(line);
    }
    (out, dropped)
}

/// Remote candidates an offer carries.
pub fn count_in(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.trim_start().starts_with("a=candidate:"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(addr: &str, port: u16) -> String {
        format!("candidate:1 1 udp 2130706431 {addr} {port} typ host")
    }

    fn policy() -> CandidatePolicy {
        CandidatePolicy {
            own: vec!["0.0.0.0:8080".parse().unwrap()],
        }
    }

    #[test]
    fn useless_and_hostile_addresses_are_ignored() {
        let p = policy();
        assert_eq!(p.judge(&cand("192.168.1.20", 50000)), Verdict::Use);
        assert_eq!(p.judge(&cand("127.0.0.1", 50000)), Verdict::Use);
        assert_eq!(
            p.judge(&cand("0.0.0.0", 5000)),
            Verdict::Ignore("unspecified address")
        );
        assert_eq!(
            p.judge(&cand("::", 5000)),
            Verdict::Ignore("unspecified address")
        );
        assert_eq!(
            p.judge(&cand("224.0.0.251", 5353)),
            Verdict::Ignore("multicast address")
        );
        assert_eq!(
            p.judge(&cand("ff02::1", 5000)),
            Verdict::Ignore("multicast address")
        );
        assert_eq!(
            p.judge(&cand("255.255.255.255", 5000)),
            Verdict::Ignore("broadcast address")
        );
        assert_eq!(p.judge(&cand("10.0.0.1", 0)), Verdict::Ignore("port 0"));
        assert_eq!(
            p.judge(&cand("127.0.0.1", 8080)),
            Verdict::Ignore("our own HTTP listener")
        );
        assert_eq!(
            p.judge(&cand("192.168.1.2", 8080)),
            Verdict::Ignore("our own HTTP listener")
        );
        // A public address on the same port number is some viewer's, not ours.
        assert_eq!(p.judge(&cand("203.0.113.9", 8080)), Verdict::Use);
        // mDNS names are the agent's business.
        assert_eq!(p.judge(&cand("3f1c0d2e.local", 8080)), Verdict::Use);
    }

    #[test]
    fn addresses_are_read_with_or_without_the_attribute_prefix() {
        assert_eq!(
            address_of("a=candidate:1 1 udp 1 10.1.2.3 4000 typ host"),
            Some(("10.1.2.3".parse().unwrap(), 4000))
        );
        assert_eq!(address_of("candidate:1 1 udp 1 10.1.2.3"), None);
        assert_eq!(address_of("garbage"), None);
    }

    #[test]
    fn offers_keep_at_most_max_usable_candidates() {
        let mut sdp = String::from("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        sdp.push_str(&format!("a={}\r\n", cand("224.0.0.1", 1000)));
        for i in 0..40 {
            sdp.push_str(&format!("a={}\r\n", cand("10.0.0.1", 1000 + i)));
        }
        sdp.push_str("a=mid:0\r\n");
        let (out, dropped) = filter_offer(&sdp, &policy(), 32);
        assert_eq!(count_in(&out), 32);
        assert_eq!(dropped, 9);
        assert!(out.ends_with("a=mid:0\r\n"));
        assert!(!out.contains("224.0.0.1"));
    }
}
