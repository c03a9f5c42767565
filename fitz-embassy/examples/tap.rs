//! fitz-embassy on the host: an embassy executor and embassy-net stack on a
//! TAP device in a private network namespace, talking to fitz-testkit.
//! Run as root: `cargo run -p fitz-embassy --example tap`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, unreachable_pub)]

#[path = "../tests/support/tap.rs"]
mod tap;

fn main() {
    tap::run();
}
