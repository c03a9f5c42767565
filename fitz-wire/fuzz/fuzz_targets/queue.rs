#![no_main]
//! Every queue decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::queue::decode_all(data));
