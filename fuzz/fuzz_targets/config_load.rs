#![no_main]
//! See `camgate::fuzzing::config_load` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| camgate::fuzzing::config_load(data));
