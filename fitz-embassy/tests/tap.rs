//! fitz-embassy through a real embassy-net stack on a TAP device, against
//! fitz-testkit: every domain, then a reconnect with subscriptions
//! restored. Needs root and `/dev/net/tun`; fails (never skips) without.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, unreachable_pub)]

#[path = "support/tap.rs"]
mod tap;

/// The only test of this binary: it moves its thread into a network
/// namespace of its own.
#[test]
fn every_domain_and_a_reconnect_through_embassy_net_on_tap() {
    tap::run();
}
