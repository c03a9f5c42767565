#![no_main]
//! Every rpc decoder over arbitrary bytes: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fitz_wire::rpc::decode_all(data));
