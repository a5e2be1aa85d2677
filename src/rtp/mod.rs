//! RTP packetization (sans-IO): H.264 (RFC 6184) and Opus (RFC 7587).
//!
//! Every encoded frame is packetized exactly once, into a [`Frame`] that all viewers share; a
//! viewer only rewrites the 12-byte header through its own [`Stamper`]. That is why payloads are
//! built in one arena and handed out as refcounted [`bytes::Bytes`] slices: with N viewers the
//! per-packet cost is a header write, not a payload copy or an allocation. A [`FramePool`]
//! recycles frames (arena included) once the viewers are done with them.
//!
//! Nothing here does I/O or looks at a clock: the caller passes the GStreamer PTS in, so tests
//! drive the exact code the daemon runs.

mod annexb;
mod frame;
mod h264;
mod opus;
mod params;
mod stamp;

pub use annexb::{NalUnit, NalUnits};
pub use frame::{Frame, FramePool, PacketRef, Packets};
pub use h264::{H264Packetizer, PacketizerStats};
pub use opus::OpusPacketizer;
pub use stamp::{RtpHeader, Stamper};

/// Largest input we accept in one call. A 4K IDR from a hardware encoder is a few MiB; anything
/// far above that is a broken upstream, and refusing it bounds the arena we would have to grow.
pub const MAX_INPUT_LEN: usize = 16 * 1024 * 1024;

/// Default payload budget: keeps every datagram at or below 1200 bytes, a size that crosses
/// tunnels, PPPoE and TURN relays without IP fragmentation (the common WebRTC choice).
///
/// ```text
///   1200  datagram budget
/// -   12  RTP fixed header
/// -    8  one-byte header extension with transport-wide-cc:
///         4 (0xBEDE + length) + 1 (id/len) + 2 (twcc seq) + 1 (padding to 32 bits)
/// -   16  SRTP auth tag (AEAD_AES_128_GCM, the largest profile WebRTC negotiates;
///         HMAC-SHA1-80 needs only 10)
/// = 1164  bytes of RTP payload
/// ```
pub const DEFAULT_MAX_PAYLOAD: usize = 1200 - 12 - 8 - 16;

/// Smallest budget we accept. FU-A works down to 3 bytes, but a budget that small means
/// thousands of packets per frame and points at a configuration mistake, not a real network.
pub const MIN_MAX_PAYLOAD: usize = 100;

/// Largest budget we accept: keeps a datagram with headers under the 65 507-byte UDP limit,
/// and STAP-A's 16-bit NAL size fields can never overflow.
pub const MAX_MAX_PAYLOAD: usize = 65_000;

/// Turns one encoded unit into RTP payloads. One implementation per codec, so the fan-out does
/// not care whether it carries video or audio.
pub trait Payloader {
    /// RTP clock rate (90_000 for H.264, 48_000 for Opus).
    fn clock_rate(&self) -> u32;
    /// Packetize one encoded unit (an H.264 access unit in Annex-B, or one Opus packet) taken at
    /// `pts_ns` (GStreamer PTS, nanoseconds) into `out`, reusing `out`'s buffers.
    ///
    /// On error `out` is left empty (no packets), never half-filled.
    fn packetize_into(
        &mut self,
        input: &[u8],
        pts_ns: u64,
        out: &mut Frame,
    ) -> Result<(), PacketizeError>;
}

/// Packetizer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketizerConfig {
    /// Largest RTP payload (bytes after the RTP header) we may produce.
    /// See [`DEFAULT_MAX_PAYLOAD`] for how the default is derived.
    pub max_payload: usize,
}

impl Default for PacketizerConfig {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl PacketizerConfig {
    /// Checks the budget is within [`MIN_MAX_PAYLOAD`]..=[`MAX_MAX_PAYLOAD`].
    pub fn validate(&self) -> Result<(), PacketizeError> {
        if (MIN_MAX_PAYLOAD..=MAX_MAX_PAYLOAD).contains(&self.max_payload) {
            Ok(())
        } else {
            Err(PacketizeError::InvalidMaxPayload {
                max_payload: self.max_payload,
                min: MIN_MAX_PAYLOAD,
                max: MAX_MAX_PAYLOAD,
            })
        }
    }
}

/// Why an input could not be packetized. Inputs that are merely odd (an AUD, a NAL with the
/// forbidden bit) are skipped and counted in [`PacketizerStats`] instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketizeError {
    /// The encoder handed us a zero-length buffer.
    #[error("empty input")]
    EmptyInput,
    /// The input exceeds [`MAX_INPUT_LEN`].
    #[error("input of {len} bytes exceeds the {max}-byte limit")]
    InputTooLarge {
        /// Input length.
        len: usize,
        /// Limit it broke.
        max: usize,
    },
    /// An H.264 input with no Annex-B start code (`00 00 01`) anywhere: not byte-stream format
    /// (AVC length-prefixed input is the usual cause).
    #[error(
        "no Annex-B start code in {len}-byte access unit (is the stream avc instead of byte-stream?)"
    )]
    NoStartCode {
        /// Input length.
        len: usize,
    },
    /// A single-packet payload (Opus) is larger than the budget; splitting it is not allowed.
    #[error("{len}-byte packet exceeds the {max}-byte payload budget")]
    PayloadTooLarge {
        /// Input length.
        len: usize,
        /// Budget it broke.
        max: usize,
    },
    /// The configured payload budget is outside the accepted range.
    #[error("max_payload {max_payload} outside {min}..={max}")]
    InvalidMaxPayload {
        /// Value configured.
        max_payload: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
}

/// Shared by the payloaders: reject what no codec can packetize before touching `out`.
fn check_input_len(input: &[u8]) -> Result<(), PacketizeError> {
    if input.is_empty() {
        return Err(PacketizeError::EmptyInput);
    }
    if input.len() > MAX_INPUT_LEN {
        return Err(PacketizeError::InputTooLarge {
            len: input.len(),
            max: MAX_INPUT_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
