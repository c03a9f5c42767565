//! The async client: what tasks use. Generic over the binding's [`Shared`]
//! handle (an `Arc` of a mutex in std, a `&'static` blocking mutex in
//! embassy); every method locks it briefly and never across an `.await`.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll};

use fitz_wire::{Capabilities, Dialect, DynEncode, Encode, Uuid};

use crate::engine::{Core, Item, SubId};
use crate::error::Error;
use crate::session::{RequestId, State};

/// The binding's shared handle to an engine: cheap to clone, and `with`
/// runs `f` under the binding's lock.
pub trait Shared: Clone {
    /// The engine behind the lock.
    type Core: Core;
    /// Runs `f` with the engine locked. `f` never blocks or awaits.
    fn with<R>(&self, f: impl FnOnce(&mut Self::Core) -> R) -> R;
    /// Now, in milliseconds of the driver's clock (same origin): request
    /// deadlines start from it.
    fn now_ms(&self) -> u64;
    /// Something worth logging happened (the default ignores it). Called
    /// outside the lock.
    fn trace(&self, event: Trace<'_>) {
        let _ = event;
    }
}

/// What the client reports to a binding's logger ([`Shared::trace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Trace<'a> {
    /// The lifecycle state changed.
    State(State),
    /// A connection attempt failed (`reason` is the transport's error).
    ConnectFailed {
        /// Attempt number since the last successful connection.
        attempt: u32,
    },
    /// Reconnecting after this delay.
    Backoff {
        /// Attempt number.
        attempt: u32,
        /// Delay in milliseconds.
        delay_ms: u64,
    },
    /// Authenticated on a new connection.
    Authenticated {
        /// Dialect.
        dialect: Dialect,
        /// Capabilities.
        capabilities: Capabilities,
        /// Connection epoch.
        epoch: u32,
    },
    /// A request was queued for sending.
    Request {
        /// Its type.
        msg_type: fitz_wire::MsgType,
        /// Its id.
        id: RequestId,
    },
    /// A request ended: its reply was taken, or it failed.
    Reply {
        /// The request.
        id: RequestId,
        /// The failure, if it failed.
        error: Option<&'a Error>,
    },
    /// A subscription was confirmed (`msg_type`: the subscribe type).
    Subscribed {
        /// The subscribe type.
        msg_type: fitz_wire::MsgType,
    },
    /// The client stopped for good.
    Stopped(crate::Stopped),
}

/// The received-bytes type of a handle.
pub type BufOf<H> = <<H as Shared>::Core as Core>::Buf;

/// A Fitz client over a shared engine. Clone it freely: clones share the
/// connection.
#[derive(Clone)]
pub struct Client<H> {
    h: H,
}

impl<H: Shared> Client<H> {
    /// A client over `h` (the binding's driver runs the connection).
    pub const fn new(h: H) -> Self {
        Client { h }
    }

    /// The shared handle.
    pub const fn shared(&self) -> &H {
        &self.h
    }

    /// The lifecycle state (`Authenticated` only once subscriptions of the
    /// previous connection are restored).
    pub fn state(&self) -> State {
        self.h.with(|e| e.state())
    }

    /// Dialect and capabilities of the current connection.
    pub fn dialect(&self) -> Option<(Dialect, Capabilities)> {
        self.h.with(|e| e.dialect())
    }

    /// True if the current connection advertised `cap`.
    pub fn has(&self, cap: Capabilities) -> bool {
        self.dialect().is_some_and(|(_, c)| c.contains(cap))
    }

    /// Connection epoch: handles of other epochs are stale.
    pub fn epoch(&self) -> u32 {
        self.h.with(|e| e.epoch())
    }

    /// Waits until the state differs from `seen` and returns the new state.
    pub async fn changed(&self, seen: State) -> State {
        poll_fn(|cx| {
            self.h.with(|e| {
                let s = e.state();
                if s != seen {
                    Poll::Ready(s)
                } else {
                    e.watch_state(cx);
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Waits until the client is authenticated (and restored); fails if it
    /// is closed first.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut s = self.state();
        loop {
            match s {
                State::Authenticated => return Ok(()),
                State::Closed => return Err(Error::Closed),
                _ => s = self.changed(s).await,
            }
        }
    }

    /// Sends a request and returns its pending reply. Waits while the
    /// client is (re)connecting, while a same-type request is outstanding
    /// on a broker without correlation, and while the transmit buffer is
    /// full. `timeout_ms` 0 = no deadline.
    pub async fn request(&self, msg: &dyn DynEncode, timeout_ms: u64) -> Result<Pending<H>, Error> {
        self.request_in(None, msg, timeout_ms).await
    }

    /// [`Client::request`] for a handle of connection `epoch` (a
    /// transaction, an append session…): fails with
    /// [`Error::StaleHandle`] once the client has reconnected.
    pub async fn request_in(
        &self,
        epoch: Option<u32>,
        msg: &dyn DynEncode,
        timeout_ms: u64,
    ) -> Result<Pending<H>, Error> {
        let id = poll_fn(|cx| {
            let now = self.h.now_ms();
            self.h.with(|e| {
                e.set_now(now);
                e.poll_request(cx, msg, timeout_ms, epoch)
            })
        })
        .await?;
        self.h.trace(Trace::Request { msg_type: msg.msg_type(), id });
        Ok(Pending { h: self.h.clone(), id })
    }

    /// Sends a request and waits for its reply payload, for a handle of
    /// connection `epoch` (see [`Client::request_in`]).
    pub async fn round_trip_in(
        &self,
        epoch: Option<u32>,
        msg: &dyn DynEncode,
        timeout_ms: u64,
    ) -> Result<BufOf<H>, Error> {
        let mut p = self.request_in(epoch, msg, timeout_ms).await?;
        p.reply().await
    }

    /// Sends a request of connection `epoch` whose reply nobody waits for
    /// (what a dropped handle schedules); false if it could not be queued.
    pub fn forget(&self, msg: &dyn DynEncode, epoch: u32) -> bool {
        self.h.with(|e| e.forget(msg, epoch))
    }

    /// Sends a request and waits for its reply payload.
    pub async fn round_trip(&self, msg: &dyn DynEncode, timeout_ms: u64) -> Result<BufOf<H>, Error> {
        let mut p = self.request(msg, timeout_ms).await?;
        p.reply().await
    }

    /// Sends a message that has no reply.
    pub async fn send(&self, msg: &dyn DynEncode) -> Result<(), Error> {
        poll_fn(|cx| self.h.with(|e| e.poll_send(cx, msg))).await
    }

    /// Subscribes with a subscribe request of any domain and waits for the
    /// broker's confirmation (immediate when another local subscriber
    /// already holds the same registration).
    pub async fn subscribe(&self, msg: &dyn DynEncode) -> Result<Subscription<H>, Error> {
        let id = self.h.with(|e| e.subscribe(msg))?;
        let sub = Subscription { h: self.h.clone(), id };
        poll_fn(|cx| self.h.with(|e| e.poll_subscribed(cx, id))).await?;
        self.h.trace(Trace::Subscribed { msg_type: msg.msg_type() });
        Ok(sub)
    }

    /// Starts an RPC call; its response chunks come from the returned
    /// subscription. `deadline_ms` 0 = none (otherwise sent as a budget
    /// where the broker supports it, and enforced locally).
    pub async fn call(&self, route: &str, body: &[u8], id: Uuid, deadline_ms: u64) -> Result<Subscription<H>, Error> {
        let id = poll_fn(|cx| {
            let now = self.h.now_ms();
            self.h.with(|e| {
                e.set_now(now);
                e.poll_call(cx, route, body, id, deadline_ms)
            })
        })
        .await?;
        Ok(Subscription { h: self.h.clone(), id })
    }

    /// Forgets every local registration of subscribe type `kind` after a
    /// bulk unsubscribe on the wire (Notice UNSUBSCRIBE_ALL).
    pub fn drop_registrations(&self, kind: fitz_wire::MsgType) {
        self.h.with(|e| e.drop_registrations(kind));
    }

    /// Caps the requests in flight at once (1 to the engine's slot count);
    /// requests beyond it wait for one to finish.
    pub fn set_in_flight_limit(&self, limit: usize) {
        self.h.with(|e| e.set_in_flight_limit(limit));
    }

    /// Counters of the request path (in flight now, the most ever, waits
    /// at the in-flight limit).
    pub fn stats(&self) -> crate::Stats {
        self.h.with(|e| e.stats())
    }

    /// Notifications and pushes that matched no subscriber (e.g. those
    /// still in flight after a subscription ended), dropped and counted.
    pub fn unmatched(&self) -> u64 {
        self.h.with(|e| e.unmatched())
    }

    /// Why the client stopped for good, once it has.
    pub fn stopped(&self) -> Option<crate::Stopped> {
        self.h.with(|e| e.stopped())
    }

    /// Closes the client: pending operations fail with [`Error::Closed`]
    /// and the driver stops. Idempotent.
    pub fn close(&self) {
        self.h.with(|e| e.close());
    }
}

/// A request in flight. Dropping it gives up the reply (the slot becomes a
/// tombstone until the broker answers).
pub struct Pending<H: Shared> {
    h: H,
    id: RequestId,
}

impl<H: Shared> Pending<H> {
    /// The request.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Waits for the reply (for a queued Lease ACQUIRE, call again for the
    /// deferred grant).
    pub async fn reply(&mut self) -> Result<BufOf<H>, Error> {
        let r = poll_fn(|cx| self.h.with(|e| e.poll_reply(cx, self.id))).await;
        self.h.trace(Trace::Reply { id: self.id, error: r.as_ref().err() });
        r
    }
}

impl<H: Shared> Drop for Pending<H> {
    fn drop(&mut self) {
        self.h.with(|e| e.finish_request(self.id));
    }
}

/// A local subscriber (or an RPC call's response stream). Dropping it
/// leaves the registration, which is unsubscribed on the wire when its
/// last subscriber leaves.
pub struct Subscription<H: Shared> {
    h: H,
    id: SubId,
}

impl<H: Shared> Subscription<H> {
    /// Polls the next delivery; `None` once it ended normally.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item<BufOf<H>>, Error>>> {
        self.h.with(|e| e.poll_next(cx, self.id))
    }

    /// The next delivery; `None` once it ended normally.
    pub async fn next(&mut self) -> Option<Result<Item<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl<H: Shared> Drop for Subscription<H> {
    fn drop(&mut self) {
        self.h.with(|e| e.unsubscribe(self.id));
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Subscription<H> {
    type Item = Result<Item<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Subscription::poll_next(self.get_mut(), cx)
    }
}
