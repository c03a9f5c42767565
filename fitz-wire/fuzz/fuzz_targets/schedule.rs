#![no_main]
//! Every schedule decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::schedule::decode_all(data));
