//! # fitz-client
//!
//! The protocol engine of the Fitz client: `#![no_std]`, no allocation, no
//! I/O, no clock. A [`Session`] is fed the frames the transport received and
//! the current time, and it answers with frames to send, [`Event`]s and the
//! next deadline ([`Session::poll_timeout`]). Bindings (tokio, embassy) move
//! bytes and keep time; every protocol rule lives here:
//!
//! - the connection lifecycle (CONNECT first, the authentication settle
//!   window, authentication failures that must not be retried with the same
//!   token);
//! - dialect detection: a SERVER_HELLO inside the settle window selects the
//!   current dialect and its capabilities, its absence the legacy dialect;
//!   either can be forced;
//! - request correlation: with `CAP_CORRELATION`, a fixed table of `N` slots
//!   whose labels encode slot index and generation (O(1) lookup, no
//!   hashing); without it, at most one outstanding request per message type.
//!   Cancelled and timed-out requests leave tombstones until their reply
//!   arrives or the connection ends; a queued Lease ACQUIRE keeps its slot
//!   until its deferred second frame.
//!
//! Memory is the `Session` value itself: `N` slots of a few bytes each,
//! fixed at compile time.
//!
//! This crate is the first step of the client (issue 4): subscriptions, the
//! RPC tables, the domain APIs and the async client are built on this
//! session next.
#![no_std]
#![forbid(unsafe_code)]

mod session;

pub use session::{Config, DialectMode, Event, FailReason, ProtocolError, RequestError, RequestId, Session, State};
