//! H.264 payloader, RFC 6184 packetization-mode 1 (single NAL, STAP-A, FU-A).
//!
//! Input is one access unit in Annex-B byte-stream form, as `h264parse` emits with
//! `alignment=au`. Besides splitting NALs into packets this keeps the last SPS/PPS seen and
//! puts them in front of every IDR that arrives without them: cameras such as the Raspberry Pi
//! encoder send parameter sets only once, and a viewer joining later could never decode
//! anything without them.

use super::annexb::NalUnits;
use super::frame::Frame;
use super::stamp::RtpClock;
use super::{PacketizeError, PacketizerConfig, Payloader, check_input_len};

const NAL_TYPE_MASK: u8 = 0x1f;
const FORBIDDEN_BIT: u8 = 0x80;
const NRI_MASK: u8 = 0x60;
const TYPE_IDR: u8 = 5;
const TYPE_SPS: u8 = 7;
const TYPE_PPS: u8 = 8;
const TYPE_AUD: u8 = 9;
const TYPE_FILLER: u8 = 12;
const TYPE_STAP_A: u8 = 24;
const TYPE_FU_A: u8 = 28;
const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;
/// STAP-A: one header byte, then a 16-bit size before each NAL.
const STAP_A_HEADER: usize = 1;
const STAP_A_SIZE_FIELD: usize = 2;
/// FU-A: indicator + FU header replace the NAL's own header byte.
const FU_A_HEADER: usize = 2;

/// What the packetizer saw and skipped; exported as metrics so a misbehaving encoder shows up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketizerStats {
    /// Access units packetized successfully.
    pub access_units: u64,
    /// Inputs rejected with an error (empty, too large, no start code).
    pub rejected_inputs: u64,
    /// RTP packets produced.
    pub packets: u64,
    /// Payload bytes produced.
    pub payload_bytes: u64,
    /// IDRs we prefixed with cached SPS/PPS because their AU lacked them.
    pub params_injected: u64,
    /// IDRs that needed SPS/PPS but none had been seen yet: late viewers cannot decode them.
    pub idr_without_params: u64,
    /// Access unit delimiters dropped (meaningless over RTP).
    pub dropped_aud: u64,
    /// Filler NALs dropped (padding for constant-bitrate links, wasted bandwidth here).
    pub dropped_filler: u64,
    /// NALs dropped because `forbidden_zero_bit` was set (corrupt per the spec).
    pub dropped_forbidden_bit: u64,
    /// NALs of type 0 or 24–31: unspecified in H.264 and, as 24–31, would be mistaken for
    /// RTP aggregation/fragmentation packets by the receiver.
    pub dropped_invalid_type: u64,
    /// Zero-length NALs (two start codes back to back).
    pub dropped_empty: u64,
    /// Bytes before the first start code that were not zero padding.
    pub junk_bytes: u64,
}

/// Where a NAL's bytes come from: the input AU or our parameter-set cache.
#[derive(Debug, Clone, Copy)]
enum Source {
    Input { start: u32, len: u32 },
    CachedSps,
    CachedPps,
}

/// H.264 RFC 6184 packetizer (packetization-mode 1).
#[derive(Debug, Clone)]
pub struct H264Packetizer {
    max_payload: usize,
    clock: RtpClock,
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// NALs of the current AU that will be sent, reused between frames.
    nals: Vec<Source>,
    stats: PacketizerStats,
}

impl Default for H264Packetizer {
    fn default() -> Self {
        Self::with_budget(PacketizerConfig::default().max_payload)
    }
}

impl H264Packetizer {
    /// Fails if `config.max_payload` is outside the accepted range.
    pub fn new(config: PacketizerConfig) -> Result<Self, PacketizeError> {
        config.validate()?;
        Ok(Self::with_budget(config.max_payload))
    }

    fn with_budget(max_payload: usize) -> Self {
        Self {
            max_payload,
            clock: RtpClock::new(90_000),
            sps: Vec::new(),
            pps: Vec::new(),
            nals: Vec::with_capacity(16),
            stats: PacketizerStats::default(),
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> &PacketizerStats {
        &self.stats
    }

    /// Payload budget in use.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The stream's `profile-level-id` (RFC 6184 §8.1: profile_idc, the constraint flags byte
    /// and level_idc, the three bytes after the SPS NAL header) from the last SPS seen; None
    /// before the first one. This is what an SDP answer must declare for the stream we send.
    pub fn profile_level_id(&self) -> Option<u32> {
        match self.sps.get(1..4) {
            Some(&[profile, constraints, level]) => {
                Some(u32::from(profile) << 16 | u32::from(constraints) << 8 | u32::from(level))
            }
            _ => None,
        }
    }

    /// Whether both an SPS and a PPS have been seen, i.e. IDRs can be made self-contained.
    pub fn has_parameter_sets(&self) -> bool {
        !self.sps.is_empty() && !self.pps.is_empty()
    }

    fn bytes<'a>(&'a self, input: &'a [u8], src: Source) -> &'a [u8] {
        match src {
            Source::Input { start, len } => {
                let start = start as usize;
                &input[start..start + len as usize]
            }
            Source::CachedSps => &self.sps,
            Source::CachedPps => &self.pps,
        }
    }

    /// Splits the AU into NALs to send, updating the parameter-set cache and drop counters.
    /// Returns whether the AU holds an IDR slice.
    fn scan(&mut self, input: &[u8]) -> Result<bool, PacketizeError> {
        let units = NalUnits::new(input).ok_or(PacketizeError::NoStartCode { len: input.len() })?;
        self.stats.junk_bytes += units.leading_junk() as u64;
        self.nals.clear();
        let (mut has_sps, mut has_pps, mut has_idr) = (false, false, false);
        for nal in units {
            let Some(&header) = nal.data.first() else {
                self.stats.dropped_empty += 1;
                continue;
            };
            if header & FORBIDDEN_BIT != 0 {
                self.stats.dropped_forbidden_bit += 1;
                continue;
            }
            match header & NAL_TYPE_MASK {
                TYPE_AUD => self.stats.dropped_aud += 1,
                TYPE_FILLER => self.stats.dropped_filler += 1,
                0 | 24..=31 => self.stats.dropped_invalid_type += 1,
                t => {
                    match t {
                        TYPE_SPS => {
                            has_sps = true;
                            self.sps.clear();
                            self.sps.extend_from_slice(nal.data);
                        }
                        TYPE_PPS => {
                            has_pps = true;
                            self.pps.clear();
                            self.pps.extend_from_slice(nal.data);
                        }
                        TYPE_IDR => has_idr = true,
                        _ => {}
                    }
                    // Offsets fit: input is capped at 16 MiB.
                    self.nals.push(Source::Input {
                        start: nal.offset as u32,
                        len: nal.data.len() as u32,
                    });
                }
            }
        }
        if has_idr && !(has_sps && has_pps) {
            if self.has_parameter_sets() {
                self.nals.insert(0, Source::CachedPps);
                self.nals.insert(0, Source::CachedSps);
                self.stats.params_injected += 1;
            } else {
                self.stats.idr_without_params += 1;
            }
        }
        Ok(has_idr)
    }

    /// Upper bound of the payload bytes this AU produces, so the arena is sized once.
    fn capacity_hint(&self, input: &[u8]) -> usize {
        let nals = self.nals.len();
        let fragments = input.len() / (self.max_payload - FU_A_HEADER) + nals;
        input.len() + self.sps.len() + self.pps.len() + 3 * nals + FU_A_HEADER * fragments
    }

    fn emit(&self, input: &[u8], out: &mut Frame) {
        let budget = self.max_payload;
        let nals = &self.nals[..];
        let mut i = 0;
        while i < nals.len() {
            let first = self.bytes(input, nals[i]);
            if first.len() > budget {
                write_fu_a(first, budget, out);
                i += 1;
                continue;
            }
            // Greedily aggregate the following NALs that still fit in one STAP-A.
            let mut size = STAP_A_HEADER + STAP_A_SIZE_FIELD + first.len();
            let mut end = i + 1;
            while let Some(&next) = nals.get(end) {
                let grown = size + STAP_A_SIZE_FIELD + self.bytes(input, next).len();
                if grown > budget {
                    break;
                }
                size = grown;
                end += 1;
            }
            if end - i == 1 {
                let start = out.start_packet();
                out.put_slice(first);
                out.end_packet(start, false);
            } else {
                let run = &nals[i..end];
                // F is always 0 (forbidden NALs were dropped); NRI is the highest of the parts.
                let nri = run
                    .iter()
                    .map(|&s| self.bytes(input, s)[0] & NRI_MASK)
                    .max()
                    .unwrap_or(0);
                let start = out.start_packet();
                out.put_u8(nri | TYPE_STAP_A);
                for &s in run {
                    let nal = self.bytes(input, s);
                    // Fits: every aggregated NAL is at most the budget, itself <= 65 000.
                    out.put_slice(&(nal.len() as u16).to_be_bytes());
                    out.put_slice(nal);
                }
                out.end_packet(start, false);
            }
            i = end;
        }
        out.mark_last();
    }
}

/// Fragments one NAL larger than `budget` into FU-A packets of near-equal size (no runt last
/// fragment, which would waste a packet's worth of overhead for a few bytes).
fn write_fu_a(nal: &[u8], budget: usize, out: &mut Frame) {
    let header = nal[0];
    let indicator = (header & NRI_MASK) | TYPE_FU_A;
    let nal_type = header & NAL_TYPE_MASK;
    let body = &nal[1..];
    let max_chunk = budget - FU_A_HEADER;
    let count = body.len().div_ceil(max_chunk);
    let chunk = body.len().div_ceil(count);
    let mut pieces = body.chunks(chunk).peekable();
    let mut fu_header = nal_type | FU_START;
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            fu_header |= FU_END;
        }
        let start = out.start_packet();
        out.put_u8(indicator);
        out.put_u8(fu_header);
        out.put_slice(piece);
        out.end_packet(start, false);
        fu_header = nal_type;
    }
}

impl Payloader for H264Packetizer {
    fn clock_rate(&self) -> u32 {
        self.clock.rate()
    }

    fn packetize_into(
        &mut self,
        input: &[u8],
        pts_ns: u64,
        out: &mut Frame,
    ) -> Result<(), PacketizeError> {
        let keyframe = match check_input_len(input).and_then(|()| self.scan(input)) {
            Ok(k) => k,
            Err(e) => {
                out.abandon();
                self.stats.rejected_inputs += 1;
                return Err(e);
            }
        };
        out.begin(self.capacity_hint(input));
        self.emit(input, out);
        out.finish(self.clock.timestamp(pts_ns), keyframe);
        self.stats.access_units += 1;
        self.stats.packets += out.len() as u64;
        self.stats.payload_bytes += out.payload_bytes() as u64;
        Ok(())
    }
}
