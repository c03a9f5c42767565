#![no_main]
//! Every notice decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::notice::decode_all(data));
