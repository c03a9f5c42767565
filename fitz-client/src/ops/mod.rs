//! The domain APIs: one module per domain, each a thin typed layer over
//! [`crate::Client`]: it builds the fitz-wire request, checks what the
//! dialect and capabilities allow, and decodes the reply into views of the
//! received bytes ([`crate::Buf`] parts, no copies).

use fitz_wire::{DecodeError, MsgType, Reply};

use crate::error::{Capacity, Error, Fault};

pub mod kv;
pub mod lease;
pub mod notice;
pub mod queue;
pub mod rpc;
pub mod schedule;
pub mod stream;

/// Longest route a handle keeps (transactions, append sessions, leases).
pub const ROUTE_MAX: usize = 256;

/// A route kept by a handle.
pub type RouteBuf = heapless::String<ROUTE_MAX>;

pub(crate) fn own_route(route: &str) -> Result<RouteBuf, Error> {
    RouteBuf::try_from(route).map_err(|_| Error::Capacity(Capacity::Route))
}

/// The success value of a decoded reply, or the broker's error.
pub(crate) fn ok<T>(r: Result<Reply<'_, T>, DecodeError>, request: MsgType) -> Result<T, Error> {
    match r? {
        Reply::Ok(v) => Ok(v),
        Reply::Err(e) => Err(Error::Server(Fault::new(&e, request))),
    }
}
