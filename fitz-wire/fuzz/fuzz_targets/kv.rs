#![no_main]
//! Every kv decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::kv::decode_all(data));
