//! Audio payloaders: one encoded frame per RTP packet.
//!
//! - Opus, RFC 7587: exactly one Opus packet per RTP packet, 48 kHz clock whatever the actual
//!   sample rate.
//! - G.711 µ-law/A-law (PCMU/PCMA), RFC 3551 §4.5.14: the 8 kHz samples of one frame (20 ms =
//!   160 bytes) per packet, 8 kHz clock.
//!
//! Both are the same operation with a different clock, so one type serves both.

use super::frame::Frame;
use super::stamp::RtpClock;
use super::{PacketizeError, PacketizerConfig, Payloader, check_input_len};

/// Opus RFC 7587 packetizer (and, built with [`OpusPacketizer::g711`], the G.711 one).
#[derive(Debug, Clone)]
pub struct OpusPacketizer {
    max_payload: usize,
    clock: RtpClock,
    started: bool,
}

impl Default for OpusPacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl OpusPacketizer {
    /// With the default payload budget.
    pub fn new() -> Self {
        Self {
            max_payload: PacketizerConfig::default().max_payload,
            clock: RtpClock::new(48_000),
            started: false,
        }
    }

    /// For G.711 (PCMU or PCMA): 8 kHz clock, one frame of samples per packet.
    pub fn g711() -> Self {
        Self {
            clock: RtpClock::new(8_000),
            ..Self::new()
        }
    }

    /// With a custom budget; fails if it is outside the accepted range.
    pub fn with_config(config: PacketizerConfig) -> Result<Self, PacketizeError> {
        config.validate()?;
        Ok(Self {
            max_payload: config.max_payload,
            ..Self::new()
        })
    }
}

impl Payloader for OpusPacketizer {
    fn clock_rate(&self) -> u32 {
        self.clock.rate()
    }

    /// Opus frames cannot be split across RTP packets, so an oversized one is an error.
    fn packetize_into(
        &mut self,
        input: &[u8],
        pts_ns: u64,
        out: &mut Frame,
    ) -> Result<(), PacketizeError> {
        let checked = check_input_len(input).and(if input.len() > self.max_payload {
            Err(PacketizeError::PayloadTooLarge {
                len: input.len(),
                max: self.max_payload,
            })
        } else {
            Ok(())
        });
        if let Err(e) = checked {
            out.abandon();
            return Err(e);
        }
        out.begin(input.len());
        let start = out.start_packet();
        out.put_slice(input);
        // RFC 7587 §4.1: marker on the first packet of a talkspurt; we never use DTX, so that
        // is only the very first packet of the stream.
        out.end_packet(start, !self.started);
        self.started = true;
        // Every Opus packet decodes on its own: a viewer may start anywhere.
        out.finish(self.clock.timestamp(pts_ns), true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_packet_per_opus_frame_with_48khz_timestamps() {
        let mut p = OpusPacketizer::new();
        assert_eq!(p.clock_rate(), 48_000);
        let mut f = Frame::new();
        p.packetize_into(&[0xfc, 1, 2, 3], 1_000_000_000, &mut f)
            .unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f.packet(0).payload, &[0xfc, 1, 2, 3]);
        assert!(
            f.packet(0).marker,
            "first packet of the stream carries the marker"
        );
        assert_eq!(f.timestamp(), 0);
        assert!(f.is_keyframe());
        p.packetize_into(&[0xfc, 9], 1_020_000_000, &mut f).unwrap();
        assert_eq!(f.len(), 1);
        assert!(!f.packet(0).marker);
        assert_eq!(f.timestamp(), 960);
        assert_eq!(&f.payload(0)[..], &[0xfc, 9]);
    }

    #[test]
    fn g711_counts_8khz_samples() {
        let mut p = OpusPacketizer::g711();
        assert_eq!(p.clock_rate(), 8_000);
        let mut f = Frame::new();
        p.packetize_into(&[0xff; 160], 5_000_000_000, &mut f)
            .unwrap();
        assert_eq!(f.timestamp(), 0);
        p.packetize_into(&[0xff; 160], 5_020_000_000, &mut f)
            .unwrap();
        assert_eq!(f.timestamp(), 160);
        assert_eq!(f.packet(0).payload.len(), 160);
    }

    #[test]
    fn rejects_empty_and_oversized() {
        let mut p = OpusPacketizer::new();
        let mut f = Frame::new();
        p.packetize_into(&[1, 2], 0, &mut f).unwrap();
        assert_eq!(
            p.packetize_into(&[], 0, &mut f),
            Err(PacketizeError::EmptyInput)
        );
        assert!(f.is_empty(), "a rejected input leaves no stale packets");
        let big = vec![0u8; 1165];
        assert_eq!(
            p.packetize_into(&big, 0, &mut f),
            Err(PacketizeError::PayloadTooLarge {
                len: 1165,
                max: 1164
            })
        );
        p.packetize_into(&big[..1164], 0, &mut f).unwrap();
        assert_eq!(f.packet(0).payload.len(), 1164);
        assert!(OpusPacketizer::with_config(PacketizerConfig { max_payload: 10 }).is_err());
    }
}
