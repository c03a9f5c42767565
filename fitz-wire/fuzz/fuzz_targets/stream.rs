#![no_main]
//! Every stream decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::stream::decode_all(data));
