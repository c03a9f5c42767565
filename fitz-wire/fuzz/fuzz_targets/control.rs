#![no_main]
//! Every control decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::control::decode_all(data));
