//! Notices (WIRE.md §8.5): best-effort, non-durable live fan-out.
//!
//! PUBLISH has no reply, so [`Notice::publish`] only checks the route and
//! queues the frame. Subscriptions are registrations of the engine: local
//! subscribers with the same pattern share one wire subscription (WIRE.md
//! §10.3), the last one to leave sends UNSUBSCRIBE (by id), and they are
//! restored after a reconnect.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll};

use fitz_wire::notice as wire;
use fitz_wire::route::{self, Scheme};
use fitz_wire::{MsgType, Payload};

use crate::client::{BufOf, Client, Shared, Subscription};
use crate::engine::Buf;
use crate::error::Error;
use crate::ops::{ok, poll_record};

/// Notice operations of a client: `client.notice()`.
pub struct Notice<'c, H> {
    c: &'c Client<H>,
    timeout_ms: u64,
}

impl<H: Shared> Client<H> {
    /// The Notice domain.
    pub fn notice(&self) -> Notice<'_, H> {
        Notice { c: self, timeout_ms: 0 }
    }
}

impl<'c, H: Shared> Notice<'c, H> {
    /// A deadline for each request of this call chain (0 = none). PUBLISH
    /// has no reply and is never timed.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Publishes `body` on the concrete route `notice://realm/area/resource`
    /// (exactly three segments). Fire-and-forget: `Ok` means the frame was
    /// queued; the broker confirms nothing and drops deliveries under
    /// backpressure.
    pub async fn publish(&self, route: &str, body: &[u8]) -> Result<(), Error> {
        if !route::is_concrete(route, Scheme::Notice, 3) {
            return Err(Error::Invalid("notice route must be notice://realm/area/resource without wildcards"));
        }
        self.c.send(&wire::Publish { route, body }).await
    }

    /// Subscribes to notices on routes matching `pattern` (any depth,
    /// whole-segment `*` and `**`). Another local subscriber of the same
    /// pattern shares its wire subscription: both receive every notice.
    pub async fn subscribe(&self, pattern: &str) -> Result<Notices<H>, Error> {
        if !route::is_valid_pattern(pattern, Scheme::Notice, None) {
            return Err(Error::Invalid("notice pattern"));
        }
        let sub = self.c.subscribe(&wire::Subscribe { pattern }).await?;
        Ok(Notices { sub })
    }

    /// Removes every Notice subscription of the connection (UNSUBSCRIBE_ALL)
    /// and ends every local Notice subscriber: their `next` returns `None`.
    pub async fn unsubscribe_all(&self) -> Result<(), Error> {
        let p = self.c.round_trip(&wire::UnsubscribeAll, self.timeout_ms).await?;
        ok(wire::decode_ack_reply(p.as_ref()), MsgType::NOTICE_UNSUBSCRIBE_ALL)?;
        self.c.drop_registrations(MsgType::NOTICE_SUBSCRIBE);
        Ok(())
    }
}

/// A delivered notice.
#[derive(Debug, Clone)]
pub struct Notification<P> {
    payload: P,
    body: P,
}

impl<P: Buf> Notification<P> {
    /// The concrete route it was published on (never the pattern).
    pub fn route(&self) -> &str {
        wire::Notify::decode(self.payload.as_ref()).map(|n| n.route).unwrap_or("")
    }

    /// The published body, as a part of the received frame (no copy).
    pub fn body(&self) -> &P {
        &self.body
    }

    /// The published body, owned.
    pub fn into_body(self) -> P {
        self.body
    }
}

/// A Notice subscription: notices on matching routes, in publish order.
/// Dropping it unsubscribes (on the wire once no other local subscriber of
/// the same pattern is left).
pub struct Notices<H: Shared> {
    sub: Subscription<H>,
}

impl<H: Shared> Notices<H> {
    /// Polls the next notice; `None` once the subscription ended (e.g.
    /// after [`Notice::unsubscribe_all`]), an error if it ended abnormally
    /// (e.g. [`Error::Backpressure`]). Restores after a reconnect are
    /// skipped (notices published while disconnected are lost). (`Notices`
    /// is also a `futures_core::Stream` of the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Notification<BufOf<H>>, Error>>> {
        poll_record(&mut self.sub, cx, |payload| match wire::Notify::decode(payload.as_ref()) {
            Ok(n) => Ok(Notification { body: payload.part(n.body), payload }),
            Err(e) => Err(Error::Decode(e)),
        })
    }

    /// The next notice (see [`Notices::poll_next`]). Cancel-safe: dropping
    /// the future loses no notice.
    pub async fn next(&mut self) -> Option<Result<Notification<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Leaves the subscription (the same as dropping it).
    pub fn unsubscribe(self) {
        drop(self);
    }

    /// The raw subscription (restore notices included).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Notices<H> {
    type Item = Result<Notification<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Notices::poll_next(self.get_mut(), cx)
    }
}
