#![no_main]
//! Every frame decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::frame::decode_all(data));
