//! Annex-B start-code scanner.
//!
//! Emulation prevention guarantees `00 00 01` never occurs inside a NAL unit, so every
//! occurrence is a start code and a SIMD substring search (memchr's `memmem`) finds NAL
//! boundaries at memory speed instead of inspecting each byte in a loop. A 4-byte start code is
//! the 3-byte one preceded by a zero, which (like `trailing_zero_8bits`) we strip from the end of
//! the previous NAL: a valid NAL never ends in a zero byte.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// Built once: constructing a searcher per access unit would cost more than scanning a P frame.
static START_CODE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(&[0, 0, 1]));

/// One NAL unit found in an Annex-B buffer, without its start code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalUnit<'a> {
    /// Where the NAL's first byte (its header) sits in the scanned buffer; lets errors and
    /// tests point at the exact place.
    pub offset: usize,
    /// Header byte plus payload; empty when two start codes follow each other.
    pub data: &'a [u8],
}

/// Iterator over the NAL units of an Annex-B buffer.
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    input: &'a [u8],
    /// Offset of the next NAL's header byte; `input.len()` when exhausted.
    pos: usize,
    leading_junk: usize,
}

impl<'a> NalUnits<'a> {
    /// Starts scanning `input`; `None` when it holds no start code at all.
    pub fn new(input: &'a [u8]) -> Option<Self> {
        let first = START_CODE.find(input)?;
        Some(Self {
            input,
            pos: first + 3,
            leading_junk: strip_trailing_zeros(&input[..first]).len(),
        })
    }

    /// Non-zero bytes before the first start code (zeros there are `leading_zero_8bits`, legal).
    /// Something upstream is broken if this is not 0; the bytes are skipped.
    pub fn leading_junk(&self) -> usize {
        self.leading_junk
    }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = NalUnit<'a>;

    fn next(&mut self) -> Option<NalUnit<'a>> {
        let start = self.pos;
        let rest = self.input.get(start..)?;
        if rest.is_empty() {
            return None;
        }
        let (end, next) = match START_CODE.find(rest) {
            Some(i) => (start + i, start + i + 3),
            None => (self.input.len(), self.input.len()),
        };
        self.pos = next;
        Some(NalUnit {
            offset: start,
            data: strip_trailing_zeros(&self.input[start..end]),
        })
    }
}

/// Usually strips 0 or 1 byte (the lead of a 4-byte start code), so a reverse scan is cheapest.
fn strip_trailing_zeros(b: &[u8]) -> &[u8] {
    let keep = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    &b[..keep]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nals(input: &[u8]) -> Vec<(usize, Vec<u8>)> {
        NalUnits::new(input)
            .unwrap()
            .map(|n| (n.offset, n.data.to_vec()))
            .collect()
    }

    #[test]
    fn three_and_four_byte_start_codes() {
        let input = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        assert_eq!(
            nals(&input),
            vec![
                (4, vec![0x67, 1, 2]),
                (10, vec![0x68, 3]),
                (16, vec![0x65, 4, 5])
            ]
        );
    }

    #[test]
    fn trailing_zeros_are_stripped_and_leading_zeros_are_not_junk() {
        let input = [
            0, 0, 0, 0, 0, 1, 0x41, 9, 0, 0, 0, 0, 0, 0, 1, 0x41, 8, 0, 0,
        ];
        let it = NalUnits::new(&input).unwrap();
        assert_eq!(it.leading_junk(), 0);
        assert_eq!(nals(&input), vec![(6, vec![0x41, 9]), (15, vec![0x41, 8])]);
    }

    #[test]
    fn junk_before_first_start_code_is_counted() {
        let input = [7, 7, 0, 0, 0, 1, 0x41, 1];
        let it = NalUnits::new(&input).unwrap();
        assert_eq!(it.leading_junk(), 2);
        assert_eq!(nals(&input), vec![(6, vec![0x41, 1])]);
    }

    #[test]
    fn empty_nals_and_start_code_at_end() {
        let input = [0, 0, 1, 0, 0, 1, 0x41, 1, 0, 0, 1];
        assert_eq!(nals(&input), vec![(3, vec![]), (6, vec![0x41, 1])]);
    }

    #[test]
    fn no_start_code() {
        assert!(NalUnits::new(&[]).is_none());
        assert!(NalUnits::new(&[0x65, 1, 2, 3, 0, 0]).is_none());
        assert!(NalUnits::new(&[0, 0]).is_none());
    }
}
