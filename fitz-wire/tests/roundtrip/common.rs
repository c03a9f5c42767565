//! Shared strategies, the round-trip assertions and a counting allocator.
//!
//! The allocator counts per thread, so the round-trip macros can assert
//! that encoding and decoding allocate nothing while proptest (which does
//! allocate) runs around them.

use fitz_wire::{Encode, Payload, Record, Reply, ServerError, frame};
use proptest::prelude::*;

struct Counting;

std::thread_local! {
    static ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised
// thread-local that never allocates.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and asserts that it allocated nothing on this thread.
pub fn no_alloc<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let before = ALLOCS.with(std::cell::Cell::get);
    let out = f();
    let n = ALLOCS.with(std::cell::Cell::get) - before;
    assert_eq!(n, 0, "{what} allocated {n} times");
    out
}

/// Cases for the "arbitrary bytes never panic" properties.
pub fn fuzz_cases() -> u32 {
    std::env::var("FITZ_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(125_000)
}

/// Cases for the round-trip properties (cheap but more varied values).
pub fn roundtrip_config() -> ProptestConfig {
    ProptestConfig { cases: 512, ..ProptestConfig::default() }
}

pub fn fuzz_config() -> ProptestConfig {
    ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() }
}

/// Arbitrary byte strings (payload fields), kept small so cases stay fast.
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

/// Arbitrary UTF-8 strings, including multi-byte characters.
pub fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
}

/// Arbitrary input for decoders: mostly short, sometimes up to 300 bytes.
pub fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..32),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

/// Encodes `msg` as one TCP frame, checking that `frame_len` is exact
/// and that a buffer one byte short is refused.
pub fn encode_frame_checked<M: Encode>(msg: &M) -> Vec<u8> {
    let len = frame::frame_len(frame::Transport::Tcp, false, msg);
    let mut buf = vec![0u8; len];
    let mut short = vec![0u8; len - 1];
    let n = no_alloc("encode", || frame::encode_tcp(msg, &mut buf)).expect("encode");
    assert_eq!(n, len, "frame_len must be exact");
    assert!(frame::encode_tcp(msg, &mut short).is_err(), "short buffer must be refused");
    buf
}

/// Parses a TCP frame holding one record of `ty` and returns its payload.
pub fn payload_of(buf: &[u8], ty: fitz_wire::MsgType) -> &[u8] {
    let (frame, consumed) = match no_alloc("deframe", || frame::decode_tcp(buf, u32::MAX)).expect("deframe") {
        frame::TcpFrame::Complete { frame, consumed } => (frame, consumed),
        frame::TcpFrame::Incomplete { .. } => panic!("incomplete frame"),
    };
    assert_eq!(consumed, buf.len());
    let record = no_alloc("record parse", || Record::parse_exact(frame)).expect("record");
    assert_eq!(record.msg_type, ty);
    record.payload
}

/// Writes a payload (e.g. a reply body) into a fresh buffer, checking
/// that `payload_len` is exact.
pub fn payload_bytes<'a, P: Payload<'a>>(value: &P) -> Vec<u8> {
    let mut buf = vec![0u8; value.payload_len()];
    let mut w = fitz_wire::SliceWriter::new(&mut buf);
    no_alloc("write_payload", || value.write_payload(&mut w));
    assert!(!w.overflowed() && w.position() == buf.len(), "payload_len must be exact");
    buf
}

/// encode → frame/record decode → payload decode → encode, for a message:
/// the decoded value must equal the original and re-encode to the same
/// bytes. `$decode` is any `Fn(&[u8]) -> Result<_, DecodeError>`.
#[macro_export]
macro_rules! roundtrip {
    ($msg:expr, $decode:expr) => {{
        let msg = &$msg;
        let buf = $crate::common::encode_frame_checked(msg);
        let payload = $crate::common::payload_of(&buf, fitz_wire::Encode::msg_type(msg));
        let decoded = $crate::common::no_alloc("decode", || ($decode)(payload)).expect("decode");
        assert_eq!(&decoded, msg);
        assert_eq!($crate::common::encode_frame_checked(&decoded), buf);
    }};
}

/// The same for a payload that is not a message on its own (reply bodies,
/// replies): write, decode, compare as values and as bytes.
#[macro_export]
macro_rules! roundtrip_payload {
    ($value:expr, $decode:expr) => {{
        let value = &$value;
        let buf = $crate::common::payload_bytes(value);
        let decoded = $crate::common::no_alloc("decode", || ($decode)(&buf[..])).expect("decode");
        assert_eq!(&decoded, value);
        assert_eq!($crate::common::payload_bytes(&decoded), buf);
    }};
}

/// The "decoding arbitrary bytes never panics" property: a test
/// `arbitrary_bytes_never_panic` in the invoking module that runs every
/// given `decode_all` over [`junk`] input, [`fuzz_cases`] times.
#[macro_export]
macro_rules! never_panics {
    ($($decode_all:path),+ $(,)?) => {
        proptest::proptest! {
            #![proptest_config($crate::common::fuzz_config())]

            #[test]
            fn arbitrary_bytes_never_panic(data in $crate::common::junk()) {
                $( $decode_all(&data); )+
            }
        }
    };
}

/// An arbitrary error envelope: `Some(code)` = coded, `None` = uncoded.
pub fn reply_err() -> impl Strategy<Value = (Option<u32>, String)> {
    (prop::option::of(any::<u32>()), text())
}

/// The error of [`reply_err`] as a [`ServerError`].
pub fn server_error((code, msg): &(Option<u32>, String)) -> ServerError<'_> {
    match code {
        Some(c) => ServerError::coded(*c, msg),
        None => ServerError::uncoded(msg),
    }
}

/// `Reply::Err(e)` if `use_err`, else `Reply::Ok(ok)`.
pub fn pick<'e, T>(use_err: bool, e: ServerError<'e>, ok: T) -> Reply<'e, T> {
    if use_err { Reply::Err(e) } else { Reply::Ok(ok) }
}

#[test]
#[should_panic(expected = "allocated")]
fn counter_sees_allocations() {
    // Proves the zero-allocation assertions above can fail.
    no_alloc("a Vec", || std::hint::black_box(vec![1u8; 16]));
}
