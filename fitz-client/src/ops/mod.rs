//! The domain APIs: one module per domain, each a thin typed layer over
//! [`crate::Client`]: it builds the fitz-wire request, checks what the
//! dialect and capabilities allow, and decodes the reply into views of the
//! received bytes ([`crate::Buf`] parts, no copies).

use core::task::{Context, Poll, ready};

use fitz_wire::{DecodeError, MsgType, Reply};

use crate::client::{BufOf, Shared, Subscription};
use crate::engine::Item;
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

/// Refuses a route a handle could not keep, before anything is sent. The
/// copy is made only once the reply is in ([`own_route`] then cannot
/// fail), so that no operation future carries it across its awaits.
pub(crate) fn check_route(route: &str) -> Result<(), Error> {
    if route.len() <= ROUTE_MAX { Ok(()) } else { Err(Error::Capacity(Capacity::Route)) }
}

/// The success value of a decoded reply, or the broker's error.
pub(crate) fn ok<T>(r: Result<Reply<'_, T>, DecodeError>, request: MsgType) -> Result<T, Error> {
    match r? {
        Reply::Ok(v) => Ok(v),
        Reply::Err(e) => Err(Error::Server(Fault::new(&e, request))),
    }
}

/// Polls `sub` for its next record, skipping restores (the subscription was
/// registered again after a reconnect), and turns the record's payload into
/// a typed item with `decode`: what the `poll_next` of every typed
/// subscription does. `None` once the subscription ended; an error ends it.
///
/// Cancel-safe: a record is taken from the subscriber's queue only in the
/// poll that returns it.
pub(crate) fn poll_record<H: Shared, T>(
    sub: &mut Subscription<H>,
    cx: &mut Context<'_>,
    decode: impl FnOnce(BufOf<H>) -> Result<T, Error>,
) -> Poll<Option<Result<T, Error>>> {
    loop {
        match ready!(sub.poll_next(cx)) {
            None => return Poll::Ready(None),
            Some(Ok(Item::Record { payload, .. })) => return Poll::Ready(Some(decode(payload))),
            Some(Ok(Item::Restored)) => continue,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
        }
    }
}
