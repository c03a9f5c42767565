#![no_main]
//! Every lease decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::lease::decode_all(data));
