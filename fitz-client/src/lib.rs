//! # fitz-client
//!
//! The protocol engine of the Fitz client: `#![no_std]`, no allocation, no
//! I/O, no clock. Bindings (tokio, embassy) move bytes, keep time and spawn
//! tasks; every protocol rule lives here, in three layers:
//!
//! - [`Session`]: the sans-IO connection state machine. It is fed frames
//!   and the current time and answers with frames, [`Event`]s and the next
//!   deadline: the lifecycle (CONNECT first, the authentication settle
//!   window, authentication failures never retried with the same token),
//!   dialect detection (SERVER_HELLO inside the window selects the current
//!   dialect and its capabilities), and request correlation (a fixed table
//!   of `N` slots whose labels encode slot and generation; one outstanding
//!   request per type without `CAP_CORRELATION`; tombstones for cancelled
//!   requests; the deferred Lease ACQUIRE grant).
//! - [`Engine`]: the session plus fixed tables that connect it to tasks:
//!   reply slots with wakers, `S` wire registrations kept in encoded form
//!   (restored after every reconnect before the state reports
//!   `Authenticated`), `S` local subscribers with bounded queues of `Q`
//!   deliveries (a full queue ends only that subscriber with
//!   [`Error::Backpressure`]), RPC calls matched by their UUID.
//! - [`Client`] and [`driver::run`]: the async API and the connection loop,
//!   generic over the binding's lock ([`Shared`]), transport
//!   ([`driver::Connector`]), clock and token provider.
//! - [`ops`]: the seven domain APIs on [`Client`] (`client.kv()`,
//!   `.queue()`, `.rpc()`, `.lease()`, `.notice()`, `.stream()`,
//!   `.schedule()`), which build requests, refuse locally what the dialect or
//!   capabilities do not allow, and return views of the received bytes.
//!
//! Memory is the `Engine` value and the caller's buffers, fixed at compile
//! time.
#![no_std]
#![forbid(unsafe_code)]

mod client;
pub mod driver;
mod engine;
mod error;
pub mod io;
pub mod ops;
mod session;

pub use client::{BufOf, Client, Pending, Shared, Subscription, Trace};
pub use engine::{Buf, Core, Engine, Item, SUBSCRIBE_MAX, Stats, Stopped, SubId};
pub use error::{Capacity, Error, FAULT_MESSAGE_MAX, Fault};
pub use session::{Config, DialectMode, Event, FailReason, ProtocolError, RequestError, RequestId, Session, State};
