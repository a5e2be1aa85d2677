#![no_main]
//! See `camgate::fuzzing::rtp_packetizer` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| camgate::fuzzing::rtp_packetizer(data));
