#![no_main]
//! See `camgate::fuzzing::kvs_message` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| camgate::fuzzing::kvs_message(data));
