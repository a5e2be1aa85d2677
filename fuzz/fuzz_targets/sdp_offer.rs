#![no_main]
//! See `camgate::fuzzing::sdp_offer` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| camgate::fuzzing::sdp_offer(data));
