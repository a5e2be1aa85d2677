//! H.264 parameter-set ids: which SPS and PPS an IDR slice needs.
//!
//! A stream may carry several SPS and PPS, told apart by their ids (ITU-T H.264 §7.3.2.1.1,
//! §7.3.2.2): a slice header names its PPS (`pic_parameter_set_id`), and that PPS names its SPS
//! (`seq_parameter_set_id`). All three ids are exp-Golomb numbers (§9.1) in the first bytes of
//! their NAL, so we read only those, skipping emulation-prevention bytes on the fly. Nothing
//! here allocates: it runs for every parameter set and IDR slice on the hot path. A full
//! parser (such as the `h264-reader` crate) would decode fields we never use and copy the NAL
//! to remove emulation prevention first.
//!
//! Every function takes a whole NAL unit (header byte first) and returns `None` for anything
//! malformed: truncated, an exp-Golomb number longer than 32 bits, or an id out of range.

/// SPS ids are 0..=31 (§7.4.2.1.1).
pub(crate) const SPS_IDS: usize = 32;
/// PPS ids are 0..=255 (§7.4.2.2).
pub(crate) const PPS_IDS: usize = 256;
/// Largest `slice_type` (§7.4.3, table 7-6).
const MAX_SLICE_TYPE: u32 = 9;

/// Reads bits MSB first from a NAL's payload, dropping emulation-prevention bytes (`03` after
/// `00 00`).
struct Bits<'a> {
    /// Bytes not read yet.
    rest: &'a [u8],
    /// The byte being read.
    byte: u8,
    /// Bits of `byte` not read yet.
    left: u8,
    /// Zero bytes read in a row, to spot emulation prevention.
    zeros: u8,
}

impl<'a> Bits<'a> {
    /// Starts after the NAL header byte; None for an empty NAL.
    fn after_header(nal: &'a [u8]) -> Option<Self> {
        Some(Self {
            rest: nal.get(1..)?,
            byte: 0,
            left: 0,
            zeros: 0,
        })
    }

    fn next_byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        if self.zeros >= 2 && b == 3 {
            self.zeros = 0;
            return self.next_byte();
        }
        self.zeros = if b == 0 {
            self.zeros.saturating_add(1)
        } else {
            0
        };
        Some(b)
    }

    /// Skips whole bytes; only valid before any bit was read.
    fn skip_bytes(&mut self, n: usize) -> Option<()> {
        for _ in 0..n {
            self.next_byte()?;
        }
        Some(())
    }

    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            self.byte = self.next_byte()?;
            self.left = 8;
        }
        self.left -= 1;
        Some(u32::from(self.byte >> self.left) & 1)
    }

    /// `ue(v)`: unsigned exp-Golomb (§9.1); values up to 2^32 - 2.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut v: u64 = 1;
        for _ in 0..zeros {
            v = v << 1 | u64::from(self.bit()?);
        }
        u32::try_from(v - 1).ok()
    }

    /// `ue(v)` that must be below `limit`.
    fn ue_below(&mut self, limit: usize) -> Option<u8> {
        let v = self.ue()?;
        if (v as usize) < limit {
            u8::try_from(v).ok()
        } else {
            None
        }
    }
}

/// An SPS's `seq_parameter_set_id` (after profile_idc, the constraint flags and level_idc).
pub(crate) fn sps_id(nal: &[u8]) -> Option<u8> {
    let mut b = Bits::after_header(nal)?;
    b.skip_bytes(3)?;
    b.ue_below(SPS_IDS)
}

/// A PPS's `(pic_parameter_set_id, seq_parameter_set_id)`.
pub(crate) fn pps_ids(nal: &[u8]) -> Option<(u8, u8)> {
    let mut b = Bits::after_header(nal)?;
    let pps = b.ue_below(PPS_IDS)?;
    let sps = b.ue_below(SPS_IDS)?;
    Some((pps, sps))
}

/// A slice header's `pic_parameter_set_id` (after first_mb_in_slice and slice_type).
pub(crate) fn slice_pps_id(nal: &[u8]) -> Option<u8> {
    let mut b = Bits::after_header(nal)?;
    b.ue()?;
    if b.ue()? > MAX_SLICE_TYPE {
        return None;
    }
    b.ue_below(PPS_IDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_x264_style_parameter_sets() {
        // As x264 writes them (constrained baseline 3.1): SPS id 0, PPS id 0 -> SPS 0, an IDR slice on PPS 0.
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8];
        let pps = [0x68, 0xce, 0x0f, 0xc8];
        let idr = [0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
        assert_eq!(sps_id(&sps), Some(0));
        assert_eq!(pps_ids(&pps), Some((0, 0)));
        assert_eq!(slice_pps_id(&idr), Some(0));
    }

    #[test]
    fn emulation_prevention_bytes_are_skipped() {
        // SPS header bytes 00 00 03 00: the 03 is not data; the id follows: ue "00111" = 6.
        let sps = [0x67, 0x00, 0x00, 0x03, 0x00, 0b0011_1000];
        assert_eq!(sps_id(&sps), Some(6));
    }

    #[test]
    fn malformed_ids_are_none() {
        assert_eq!(sps_id(&[]), None);
        assert_eq!(sps_id(&[0x67, 0x42, 0x00]), None);
        // ue of 32 ones-worth of zeros: longer than 32 bits.
        assert_eq!(sps_id(&[0x67, 1, 2, 3, 0, 0, 0, 0, 0x80]), None);
        // SPS id 32 is out of range: ue "00000100001".
        assert_eq!(sps_id(&[0x67, 1, 2, 3, 0b0000_0100, 0b0010_0000]), None);
        // slice_type 10 is out of range: first_mb 0 ("1"), slice_type "0001011".
        assert_eq!(slice_pps_id(&[0x65, 0b1000_1011, 0x80]), None);
        assert_eq!(pps_ids(&[0x68]), None);
    }
}
