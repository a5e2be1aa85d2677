#![no_main]
//! See `camgate::fuzzing::whep_sdpfrag` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| camgate::fuzzing::whep_sdpfrag(data));
