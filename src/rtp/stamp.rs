//! RTP timestamps and per-viewer headers.
//!
//! The packetizer computes one media timestamp per frame; each viewer adds its own random
//! offset and sequence numbers through a [`Stamper`], so a frame packetized once can go to many
//! peer connections that each negotiated different SSRCs and payload types.

/// Maps GStreamer PTS (ns) to an RTP clock, counting from the first frame seen.
///
/// GStreamer live pipelines start PTS at 1000 hours, so the absolute value is meaningless for
/// RTP; only the distance to the first frame matters. The result wraps at 2^32 as RFC 3550
/// wants, and a PTS that goes backwards (encoder reset) yields an earlier timestamp instead of
/// an overflow.
#[derive(Debug, Clone)]
pub(crate) struct RtpClock {
    rate: u32,
    first_pts: Option<u64>,
}

impl RtpClock {
    pub(crate) fn new(rate: u32) -> Self {
        Self {
            rate,
            first_pts: None,
        }
    }

    pub(crate) fn rate(&self) -> u32 {
        self.rate
    }

    pub(crate) fn timestamp(&mut self, pts_ns: u64) -> u32 {
        let first = *self.first_pts.get_or_insert(pts_ns);
        // Signed distance: wrapping_sub then reinterpret, so backwards steps are negative.
        let delta = pts_ns.wrapping_sub(first) as i64;
        // floor(delta * rate / 1e9) without overflow or 128-bit division: whole seconds and
        // the (non-negative) remainder separately. Both products fit in i64 by far.
        let rate = i64::from(self.rate);
        let secs = delta.div_euclid(1_000_000_000);
        let rem = delta.rem_euclid(1_000_000_000);
        let ticks = secs.wrapping_mul(rate) + rem * rate / 1_000_000_000;
        // Truncation is the modulo-2^32 wrap RTP timestamps are defined with.
        ticks as u32
    }
}

/// The 12-byte fixed RTP header (RFC 3550 §5.1) without CSRCs or extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Synchronization source of this viewer's stream.
    pub ssrc: u32,
    /// Payload type negotiated with this viewer (7 bits).
    pub payload_type: u8,
    /// Per-viewer, wraps at 2^16.
    pub sequence_number: u16,
    /// Frame timestamp plus the viewer's offset.
    pub timestamp: u32,
    /// Last packet of a video frame.
    pub marker: bool,
}

impl RtpHeader {
    /// Serialized size.
    pub const LEN: usize = 12;

    /// Writes version 2, no padding, no extension, no CSRC.
    pub fn write(&self, out: &mut [u8; 12]) {
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        out[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

/// One viewer's header state: SSRC, payload type, its own sequence numbers and timestamp offset.
#[derive(Debug, Clone)]
pub struct Stamper {
    ssrc: u32,
    payload_type: u8,
    next_seq: u16,
    ts_offset: u32,
}

impl Stamper {
    /// `first_seq` and `ts_offset` should be random (RFC 3550 §5.1) so streams are not
    /// predictable; the caller picks them so tests stay deterministic.
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16, ts_offset: u32) -> Self {
        Self {
            ssrc,
            payload_type,
            next_seq: first_seq,
            ts_offset,
        }
    }

    /// Header for the next packet of this viewer's stream.
    pub fn next(&mut self, frame_ts: u32, marker: bool) -> RtpHeader {
        let header = RtpHeader {
            ssrc: self.ssrc,
            payload_type: self.payload_type,
            sequence_number: self.next_seq,
            timestamp: frame_ts.wrapping_add(self.ts_offset),
            marker,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        header
    }

    /// Sequence number the next packet will carry (for RTCP and NACK bookkeeping).
    pub fn next_sequence_number(&self) -> u16 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        let h = RtpHeader {
            ssrc: 0x1234_5678,
            payload_type: 96,
            sequence_number: 0xABCD,
            timestamp: 0xDEAD_BEEF,
            marker: true,
        };
        let mut b = [0u8; 12];
        h.write(&mut b);
        assert_eq!(
            b,
            [
                0x80,
                0x80 | 96,
                0xAB,
                0xCD,
                0xDE,
                0xAD,
                0xBE,
                0xEF,
                0x12,
                0x34,
                0x56,
                0x78
            ]
        );
        let h = RtpHeader {
            marker: false,
            payload_type: 111,
            ..h
        };
        h.write(&mut b);
        assert_eq!(b[1], 111);
    }

    #[test]
    fn sequence_wraps_and_offset_applies() {
        let mut s = Stamper::new(7, 96, 65534, 1000);
        let a = s.next(u32::MAX, false);
        let b = s.next(0, false);
        let c = s.next(5, true);
        assert_eq!(
            (a.sequence_number, b.sequence_number, c.sequence_number),
            (65534, 65535, 0)
        );
        assert_eq!((a.timestamp, b.timestamp, c.timestamp), (999, 1000, 1005));
        assert!(c.marker && !a.marker);
        assert_eq!(s.next_sequence_number(), 1);
        assert_eq!((a.ssrc, a.payload_type), (7, 96));
    }

    #[test]
    fn clock_is_relative_to_first_pts_and_wraps() {
        const H1000: u64 = 1000 * 3600 * 1_000_000_000;
        let mut c = RtpClock::new(90_000);
        assert_eq!(c.timestamp(H1000), 0);
        assert_eq!(c.timestamp(H1000 + 33_333_333), 2999);
        assert_eq!(c.timestamp(H1000 + 1_000_000_000), 90_000);
        // 2^32 ticks at 90 kHz ≈ 13.25 h: the timestamp wraps instead of saturating.
        let wrap_ns = (1u64 << 32) * 1_000_000_000 / 90_000;
        assert_eq!(c.timestamp(H1000 + wrap_ns + 1_000_000_000), 90_000 - 1);
        // Backwards PTS: one frame before the first one.
        assert_eq!(c.timestamp(H1000 - 1_000_000_000), (-90_000i64) as u32);
        // 48 kHz.
        let mut o = RtpClock::new(48_000);
        assert_eq!(o.timestamp(5), 0);
        assert_eq!(o.timestamp(5 + 20_000_000), 960);
    }
}
