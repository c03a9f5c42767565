//! Property tests: for every message type, encode → decode → encode is the
//! identity for arbitrary field values within protocol limits, encoding and
//! decoding allocate nothing (a counting global allocator checks every
//! round trip), and decoding arbitrary bytes never panics.
//!
//! `FITZ_PROPTEST_CASES` sets the number of arbitrary-bytes cases per
//! decoder family (default 125,000: over a million across the nine
//! families of this file).

#![allow(
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::std_instead_of_core
)]

#[macro_use]
mod common;
mod frame;
mod kv;
mod lease;
mod notice;
mod queue;
mod rpc;
mod schedule;
mod stream;
