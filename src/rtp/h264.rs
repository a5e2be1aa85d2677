//! H.264 payloader, RFC 6184 packetization-mode 1 (single NAL, STAP-A, FU-A).
//!
//! Input is one access unit in Annex-B byte-stream form, as `h264parse` emits with
//! `alignment=au`. Besides splitting NALs into packets this keeps every SPS and PPS seen, by
//! id, and puts the ones an IDR refers to (its slice header's PPS, and that PPS's SPS) in
//! front of it when its AU lacks them: cameras such as the Raspberry Pi encoder send parameter
//! sets only once, and a viewer joining later could never decode anything without them.
//! Streams with several SPS/PPS (ids other than 0) exist, so the latest one is not enough.

use super::annexb::NalUnits;
use super::frame::Frame;
use super::params::{self, PPS_IDS, SPS_IDS};
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
    /// IDR access units we prefixed with cached SPS/PPS because the AU lacked the ones its
    /// slices refer to.
    pub params_injected: u64,
    /// IDR access units referring to a PPS (or a PPS's SPS) not seen yet: late viewers cannot
    /// decode them.
    pub idr_without_params: u64,
    /// Access unit delimiters dropped (meaningless over RTP).
    pub dropped_aud: u64,
    /// Filler NALs dropped (padding for constant-bitrate links, wasted bandwidth here).
    pub dropped_filler: u64,
    /// SPS, PPS or IDR slices whose ids could not be read (truncated or malformed): sent as
    /// they are, but never cached, and nothing is injected for such a slice.
    pub unparsable_ids: u64,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A NAL of the input: where it starts and how long it is.
    Input { start: u32, len: u32 },
    /// The cached SPS with this id.
    CachedSps(u8),
    /// The cached PPS with this id.
    CachedPps(u8),
}

/// Largest parameter set we cache. Real ones are tens of bytes (a few hundred with scaling
/// lists); a bigger "SPS" is garbage that would otherwise be copied in front of every IDR.
const MAX_PARAM_SET_LEN: usize = 4096;

/// Which parameter-set ids one AU carries itself.
#[derive(Debug, Default, Clone, Copy)]
struct IdSet {
    /// Bit `id` set: the AU holds the SPS with that id (ids are 0..=31).
    sps: u32,
    /// Bit `id` (of 256) set: the AU holds the PPS with that id.
    pps: [u64; 4],
}

impl IdSet {
    fn add_sps(&mut self, id: u8) {
        self.sps |= 1 << (id & 31);
    }
    fn has_sps(&self, id: u8) -> bool {
        self.sps & 1 << (id & 31) != 0
    }
    fn add_pps(&mut self, id: u8) {
        self.pps[usize::from(id >> 6)] |= 1 << (id & 63);
    }
    fn has_pps(&self, id: u8) -> bool {
        self.pps[usize::from(id >> 6)] & 1 << (id & 63) != 0
    }
}

/// H.264 RFC 6184 packetizer (packetization-mode 1).
#[derive(Debug, Clone)]
pub struct H264Packetizer {
    max_payload: usize,
    clock: RtpClock,
    /// Last SPS seen for each id (empty: none yet); buffers are reused when one is replaced.
    sps: Vec<Vec<u8>>,
    /// Last PPS seen for each id (empty: none yet).
    pps: Vec<Vec<u8>>,
    /// The SPS id each cached PPS refers to.
    pps_sps: Vec<u8>,
    /// Id of the last SPS seen, for [`Self::profile_level_id`].
    last_sps: Option<u8>,
    /// NALs of the current AU that will be sent, reused between frames.
    nals: Vec<Source>,
    /// PPS ids the current AU's IDR slices refer to (usually one), reused between frames.
    wanted: Vec<u8>,
    /// Cached parameter sets to put in front of the current AU, reused between frames.
    inject: Vec<Source>,
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
            sps: vec![Vec::new(); SPS_IDS],
            pps: vec![Vec::new(); PPS_IDS],
            pps_sps: vec![0; PPS_IDS],
            last_sps: None,
            nals: Vec::with_capacity(16),
            wanted: Vec::with_capacity(4),
            inject: Vec::with_capacity(4),
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
        let sps = self.last_sps.and_then(|id| self.sps.get(usize::from(id)))?;
        match sps.get(1..4) {
            Some(&[profile, constraints, level]) => {
                Some(u32::from(profile) << 16 | u32::from(constraints) << 8 | u32::from(level))
            }
            _ => None,
        }
    }

    /// Whether an SPS and a PPS have been seen (of any id).
    pub fn has_parameter_sets(&self) -> bool {
        self.sps.iter().any(|s| !s.is_empty()) && self.pps.iter().any(|p| !p.is_empty())
    }

    fn bytes<'a>(&'a self, input: &'a [u8], src: Source) -> &'a [u8] {
        match src {
            Source::Input { start, len } => {
                let start = start as usize;
                &input[start..start + len as usize]
            }
            Source::CachedSps(id) => self.sps.get(usize::from(id)).map_or(&[], Vec::as_slice),
            Source::CachedPps(id) => self.pps.get(usize::from(id)).map_or(&[], Vec::as_slice),
        }
    }

    /// Splits the AU into NALs to send, updating the parameter-set cache and drop counters.
    /// Returns whether the AU holds an IDR slice.
    fn scan(&mut self, input: &[u8]) -> Result<bool, PacketizeError> {
        let units = NalUnits::new(input).ok_or(PacketizeError::NoStartCode { len: input.len() })?;
        self.stats.junk_bytes += units.leading_junk() as u64;
        self.nals.clear();
        self.wanted.clear();
        let mut carried = IdSet::default();
        let mut has_idr = false;
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
                        TYPE_SPS => match params::sps_id(nal.data) {
                            Some(id) if nal.data.len() <= MAX_PARAM_SET_LEN => {
                                carried.add_sps(id);
                                self.last_sps = Some(id);
                                store(&mut self.sps, id, nal.data);
                            }
                            _ => self.stats.unparsable_ids += 1,
                        },
                        TYPE_PPS => match params::pps_ids(nal.data) {
                            Some((id, sps)) if nal.data.len() <= MAX_PARAM_SET_LEN => {
                                carried.add_pps(id);
                                store(&mut self.pps, id, nal.data);
                                if let Some(s) = self.pps_sps.get_mut(usize::from(id)) {
                                    *s = sps;
                                }
                            }
                            _ => self.stats.unparsable_ids += 1,
                        },
                        TYPE_IDR => {
                            has_idr = true;
                            match params::slice_pps_id(nal.data) {
                                Some(id) if !self.wanted.contains(&id) => self.wanted.push(id),
                                Some(_) => {}
                                None => self.stats.unparsable_ids += 1,
                            }
                        }
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
        if has_idr {
            self.inject_parameter_sets(carried);
        }
        Ok(has_idr)
    }

    /// Puts in front of the AU the cached SPS and PPS its IDR slices refer to that it does
    /// not carry itself (all SPS first, as a decoder needs them before the PPS).
    fn inject_parameter_sets(&mut self, carried: IdSet) {
        self.inject.clear();
        let mut missing = false;
        for &pps in &self.wanted {
            if self.bytes(&[], Source::CachedPps(pps)).is_empty() {
                missing = true;
                continue;
            }
            let sps = self.pps_sps.get(usize::from(pps)).copied().unwrap_or(0);
            if carried.has_sps(sps) || self.inject.contains(&Source::CachedSps(sps)) {
                continue;
            }
            if self.bytes(&[], Source::CachedSps(sps)).is_empty() {
                missing = true;
            } else {
                self.inject.push(Source::CachedSps(sps));
            }
        }
        for &pps in &self.wanted {
            if !carried.has_pps(pps) && !self.bytes(&[], Source::CachedPps(pps)).is_empty() {
                self.inject.push(Source::CachedPps(pps));
            }
        }
        if missing {
            self.stats.idr_without_params += 1;
        }
        if !self.inject.is_empty() {
            self.stats.params_injected += 1;
            self.nals.splice(0..0, self.inject.drain(..));
        }
    }

    /// Upper bound of the payload bytes this AU produces, so the arena is sized once.
    fn capacity_hint(&self, input: &[u8]) -> usize {
        let nals = self.nals.len();
        let cached: usize = self
            .nals
            .iter()
            .filter(|s| !matches!(s, Source::Input { .. }))
            .map(|&s| self.bytes(&[], s).len())
            .sum();
        let fragments = (input.len() + cached) / (self.max_payload - FU_A_HEADER) + nals;
        input.len() + cached + 3 * nals + FU_A_HEADER * fragments
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

/// Replaces the cached parameter set `id` with `nal`, reusing its buffer.
fn store(cache: &mut [Vec<u8>], id: u8, nal: &[u8]) {
    if let Some(slot) = cache.get_mut(usize::from(id)) {
        slot.clear();
        slot.extend_from_slice(nal);
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
