//! Work queue (WIRE.md §8.2, §B7).
//!
//! A reserved message is a handle of the connection that reserved it: the
//! broker ties the reservation to that session, so after a reconnect its
//! [`ReservedMessage::extend`] and [`ReservedMessage::complete`] fail with
//! [`Error::StaleHandle`] without sending anything (the broker has already
//! put the message back in the ready set).
//!
//! The broker closes the connection on a route it cannot split into
//! realm/area/resource, so routes and patterns are checked locally first
//! ([`Error::Invalid`]); the broker stays authoritative for the rest.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll};

use fitz_wire::queue::{self as wire, ReserveLayout};
use fitz_wire::route::{self, Scheme};
use fitz_wire::{MsgType, Payload};

use crate::client::{BufOf, Client, Pending, Shared, Subscription};
use crate::engine::Buf;
use crate::error::Error;
use crate::ops::{RouteBuf, check_route, ok, own_route, poll_record};

pub use fitz_wire::queue::CountersForm;

/// Largest RESERVE batch the broker serves (WIRE.md §8.2).
pub const MAX_BATCH: u32 = 1024;

/// Queue operations of a client: `client.queue()`.
pub struct Queue<'c, H> {
    c: &'c Client<H>,
    timeout_ms: u64,
}

impl<H: Shared> Client<H> {
    /// The Queue domain.
    pub fn queue(&self) -> Queue<'_, H> {
        Queue { c: self, timeout_ms: 0 }
    }
}

/// Options of [`Queue::reserve_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reserve {
    /// Reservation (visibility) time in seconds: the message is invisible
    /// to other consumers until then, unless extended or completed.
    pub lease_seconds: u64,
    /// Messages wanted, 1…[`MAX_BATCH`].
    pub batch: u32,
    /// Long poll: with nothing ready, wait up to this many seconds for a
    /// message (0 = answer at once). The request deadline is extended by
    /// the wait.
    pub wait_seconds: u64,
}

impl Default for Reserve {
    /// One message, reserved for 30 s, no waiting.
    fn default() -> Self {
        Reserve { lease_seconds: 30, batch: 1, wait_seconds: 0 }
    }
}

const BAD_ROUTE: Error = Error::Invalid("queue route (expected queue://realm/area/resource)");
const BAD_PATTERN: Error = Error::Invalid("queue route or pattern (must be able to match queue://realm/area/resource)");

fn concrete(route: &str) -> bool {
    route::is_concrete(route, Scheme::Queue, 3)
}

fn pattern(p: &str) -> bool {
    route::is_valid_pattern(p, Scheme::Queue, Some(3))
}

/// A deadline extended by a long poll's wait (0 stays "none").
pub(crate) fn with_wait(timeout_ms: u64, wait_seconds: u64) -> u64 {
    if timeout_ms == 0 { 0 } else { timeout_ms.saturating_add(wait_seconds.saturating_mul(1000)) }
}

/// Sends `msg` as the first request of a new handle: on the connection that
/// is current when it is sent, whose epoch is returned with it. (A
/// reconnect between reading the epoch and sending fails the send with
/// `StaleHandle` before anything is written; it is simply sent again.)
pub(crate) async fn request_fresh<H: Shared>(
    c: &Client<H>,
    msg: &dyn fitz_wire::DynEncode,
    timeout_ms: u64,
) -> Result<(Pending<H>, u32), Error> {
    loop {
        c.ready().await?;
        let epoch = c.epoch();
        match c.request_in(Some(epoch), msg, timeout_ms).await {
            Ok(p) => return Ok((p, epoch)),
            Err(Error::StaleHandle) => continue,
            Err(e) => return Err(e),
        }
    }
}

impl<'c, H: Shared> Queue<'c, H> {
    /// A deadline for each request of this call chain (0 = none). A long
    /// poll's wait is added to it.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Enqueues `body` on the exact route `queue://realm/area/resource`,
    /// ready at once; returns the broker's message id.
    pub async fn enqueue(&self, route: &str, body: &[u8]) -> Result<u64, Error> {
        self.enqueue_after(route, body, 0).await
    }

    /// Enqueues `body`, invisible to consumers for `delay_seconds` (0 = ready
    /// at once; sent as absent, never as present-with-0).
    pub async fn enqueue_after(&self, route: &str, body: &[u8], delay_seconds: u64) -> Result<u64, Error> {
        if !concrete(route) {
            return Err(BAD_ROUTE);
        }
        let msg = wire::Enqueue::new(route, body, delay_seconds);
        let p = self.c.round_trip(&msg, self.timeout_ms).await?;
        Ok(ok(wire::decode_enqueue_reply(p.as_ref()), MsgType::QUEUE_ENQUEUE)?.message_id)
    }

    /// Reserves one message of `route` (exact, or a pattern able to match
    /// three segments) for `lease_seconds`, without waiting. The page is
    /// empty when nothing is ready.
    pub fn reserve(&self, route: &str, lease_seconds: u64) -> impl Future<Output = Result<ReservedPage<H>, Error>> {
        self.reserve_with(route, Reserve { lease_seconds, ..Reserve::default() })
    }

    /// Reserves up to `opts.batch` messages of `route` (exact, or a pattern
    /// able to match three segments; the items of a pattern carry their
    /// concrete route).
    pub async fn reserve_with(&self, route: &str, opts: Reserve) -> Result<ReservedPage<H>, Error> {
        if !pattern(route) {
            return Err(BAD_PATTERN);
        }
        if !(1..=MAX_BATCH).contains(&opts.batch) {
            return Err(Error::Invalid("queue reserve batch (1..=1024)"));
        }
        check_route(route)?;
        let c = self.c;
        let msg = wire::Reserve {
            route,
            lease_seconds: opts.lease_seconds,
            batch_size: Some(opts.batch),
            wait_seconds: (opts.wait_seconds != 0).then_some(opts.wait_seconds),
        };
        let layout = msg.layout();
        let timeout_ms = with_wait(self.timeout_ms, opts.wait_seconds);
        let (mut pending, epoch) = request_fresh(c, &msg, timeout_ms).await?;
        let p = pending.reply().await?;
        ok(wire::decode_reserve_reply(p.as_ref(), layout), MsgType::QUEUE_RESERVE)?;
        Ok(ReservedPage {
            c: c.clone(),
            payload: p,
            layout,
            route: own_route(route)?,
            epoch,
            timeout_ms: self.timeout_ms,
        })
    }

    /// Subscribes to availability of the queues matching `pattern`: a
    /// notification each time one of them goes from no ready message to
    /// some (and one per matching queue that already has ready messages,
    /// right after subscribing). Dropping the subscription unsubscribes.
    pub async fn subscribe(&self, pattern_str: &str) -> Result<Availability<H>, Error> {
        if !pattern(pattern_str) {
            return Err(BAD_PATTERN);
        }
        let sub = self.c.subscribe(&wire::Subscribe { pattern: pattern_str }).await?;
        Ok(Availability { sub })
    }
}

/// The messages one RESERVE handed out, as views of the reply.
pub struct ReservedPage<H: Shared> {
    c: Client<H>,
    payload: BufOf<H>,
    layout: ReserveLayout,
    /// The request route (the items' route in the exact layout).
    route: RouteBuf,
    epoch: u32,
    timeout_ms: u64,
}

impl<H: Shared> ReservedPage<H> {
    fn items(&self) -> impl Iterator<Item = wire::ReservedItem<'_>> + '_ {
        let items = match wire::decode_reserve_reply(self.payload.as_ref(), self.layout) {
            Ok(fitz_wire::Reply::Ok(page)) => Some(page.items),
            _ => None,
        };
        items.into_iter().flatten()
    }

    /// The reserved messages, each a handle for EXTEND and COMPLETE.
    pub fn messages(&self) -> impl Iterator<Item = ReservedMessage<H>> + '_ {
        self.items().map(|item| ReservedMessage {
            c: self.c.clone(),
            route: match item.route {
                Some(r) => MessageRoute::Reply(self.payload.part(r.as_bytes())),
                None => MessageRoute::Request(self.route.clone()),
            },
            body: self.payload.part(item.body),
            message_id: item.message_id,
            lease_token: item.lease_token,
            epoch: self.epoch,
            timeout_ms: self.timeout_ms,
        })
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.items().count()
    }

    /// True if nothing was reserved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The route or pattern the page was reserved from.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// True if the items carry their concrete route (the request was a
    /// pattern).
    pub fn is_routed(&self) -> bool {
        self.layout == ReserveLayout::Routed
    }

    /// The connection epoch of the reservation.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}

// A handle has no heap to box into; its size is fixed either way.
#[allow(clippy::large_enum_variant)]
enum MessageRoute<P> {
    /// The concrete route, a part of the reply (routed layout).
    Reply(P),
    /// The exact request route.
    Request(RouteBuf),
}

/// One reserved message: its body is a part of the RESERVE reply. It
/// belongs to the connection that reserved it ([`Error::StaleHandle`]
/// after a reconnect). Dropping it without completing leaves the
/// reservation to expire, after which the broker delivers it again.
pub struct ReservedMessage<H: Shared> {
    c: Client<H>,
    route: MessageRoute<BufOf<H>>,
    body: BufOf<H>,
    message_id: u64,
    lease_token: u64,
    epoch: u32,
    timeout_ms: u64,
}

impl<H: Shared> ReservedMessage<H> {
    /// The concrete queue route of the message.
    pub fn route(&self) -> &str {
        match &self.route {
            MessageRoute::Reply(p) => core::str::from_utf8(p.as_ref()).unwrap_or(""),
            MessageRoute::Request(r) => r,
        }
    }

    /// The body, a part of the reply (no copy).
    pub fn body(&self) -> &BufOf<H> {
        &self.body
    }

    /// The broker's message id.
    pub fn message_id(&self) -> u64 {
        self.message_id
    }

    /// The reservation's token.
    pub fn lease_token(&self) -> u64 {
        self.lease_token
    }

    /// The connection epoch of the reservation.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    async fn ack(&self, msg: &dyn fitz_wire::DynEncode, ty: MsgType) -> Result<(), Error> {
        let p = self.c.round_trip_in(Some(self.epoch), msg, self.timeout_ms).await?;
        ok(wire::decode_ack_reply(p.as_ref()), ty)
    }

    /// Extends the reservation to `lease_seconds` from now (the token stays
    /// the same).
    pub async fn extend(&self, lease_seconds: u64) -> Result<(), Error> {
        let msg = wire::Extend {
            route: self.route(),
            message_id: self.message_id,
            lease_token: self.lease_token,
            lease_seconds,
        };
        self.ack(&msg, MsgType::QUEUE_EXTEND).await
    }

    /// Acknowledges the message: the broker deletes it. The future keeps
    /// only the route and ids, not the message and its body.
    pub fn complete(self) -> impl Future<Output = Result<(), Error>> {
        let route = own_route(self.route());
        let (c, message_id, lease_token, epoch, timeout_ms) =
            (self.c.clone(), self.message_id, self.lease_token, self.epoch, self.timeout_ms);
        drop(self);
        async move {
            let msg = wire::Complete { route: &route?, message_id, lease_token };
            let p = c.round_trip_in(Some(epoch), &msg, timeout_ms).await?;
            ok(wire::decode_ack_reply(p.as_ref()), MsgType::QUEUE_COMPLETE)
        }
    }
}

/// A queue became available: point-in-time counts (hints only).
#[derive(Debug, Clone)]
pub struct Available<P> {
    payload: P,
    /// Messages ready to reserve.
    pub ready: u64,
    /// Messages waiting for their delay.
    pub delayed: u64,
    /// Messages reserved and not completed.
    pub inflight: u64,
    /// How the broker laid out the counters.
    pub form: CountersForm,
}

impl<P: Buf> Available<P> {
    /// The concrete queue route.
    pub fn route(&self) -> &str {
        wire::Notify::decode(self.payload.as_ref()).map(|n| n.route).unwrap_or("")
    }
}

/// A Queue availability subscription.
pub struct Availability<H: Shared> {
    sub: Subscription<H>,
}

impl<H: Shared> Availability<H> {
    /// Polls the next notification; `None` once the subscription ended, an
    /// error if it ended abnormally (e.g. [`Error::Backpressure`]).
    /// Restores after a reconnect are skipped. (`Availability` is also a
    /// `futures_core::Stream` of the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Available<BufOf<H>>, Error>>> {
        poll_record(&mut self.sub, cx, |payload| match wire::Notify::decode(payload.as_ref()) {
            Ok(n) => Ok(Available {
                ready: n.ready,
                delayed: n.delayed,
                inflight: n.inflight,
                form: n.form,
                payload: payload.clone(),
            }),
            Err(e) => Err(Error::Decode(e)),
        })
    }

    /// The next notification (see [`Availability::poll_next`]).
    /// Cancel-safe: dropping the future loses no notification.
    pub async fn next(&mut self) -> Option<Result<Available<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The raw subscription (restore notices included).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Availability<H> {
    type Item = Result<Available<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Availability::poll_next(self.get_mut(), cx)
    }
}
