//! RPC (WIRE.md §8.3, current dialect §B8): calls and workers.
//!
//! A **call** is identified by a 16-byte UUID the caller supplies (this
//! crate has no random source; fitz-std picks one for you). Its response
//! arrives as a stream of chunks in sequence order; a terminal chunk that
//! follows the error convention (codes 6001–6013) ends it with
//! [`Error::Server`]. With `CAP_RPC_CANCELLATION` a call's deadline is sent
//! as its remaining budget, and a call can be cancelled on the broker.
//!
//! A **worker** is a registration (SUBSCRIBE_WORKER) of a route pattern
//! with a credit of `max_concurrent` unfinished calls; it receives
//! [`Invocation`]s, each with a [`Responder`] that sends the chunks, and,
//! with `CAP_RPC_CANCELLATION`, lifecycle signals telling it to stop an
//! invocation.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll, ready};

use fitz_wire::rpc::{self as wire, CancelReason, RpcCancel, RpcLifecycle, WorkerExtension};
use fitz_wire::{Capabilities, MsgType, Payload};

use crate::client::{BufOf, Client, Shared, Subscription};
use crate::engine::{Buf, Core, Item};
use crate::error::{Error, Fault};
use crate::session::State;

pub use fitz_wire::Uuid;
pub use fitz_wire::rpc::{CancelStatus, SignalReason, TerminalError};

/// The capability behind call budgets, cancellation and lifecycle signals.
pub const CAP_CANCELLATION: Capabilities = Capabilities::RPC_CANCELLATION;

/// RPC operations of a client: `client.rpc()`.
pub struct Rpc<'c, H> {
    c: &'c Client<H>,
    timeout_ms: u64,
}

impl<H: Shared> Client<H> {
    /// The RPC domain.
    pub fn rpc(&self) -> Rpc<'_, H> {
        Rpc { c: self, timeout_ms: 0 }
    }
}

impl<'c, H: Shared> Rpc<'c, H> {
    /// The deadline of each call started from here, in milliseconds (0 =
    /// none; the broker still fails a call after about 30 s). It is sent to
    /// the broker as the call's remaining budget when the broker supports
    /// cancellation, and enforced locally: the call ends with
    /// [`Error::Timeout`] (and is cancelled on the broker where possible).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Starts a call of the concrete route `route` (`rpc://…`, any depth, no
    /// wildcards) with the caller-chosen UUID `id`, which must be unique
    /// among the caller's live calls (random, e.g. a version-4 UUID). The
    /// response chunks come from the returned [`Call`].
    pub async fn call(&self, route: &str, body: &[u8], id: Uuid) -> Result<Call<H>, Error> {
        let probe = wire::Request { correlation_id: id, route, body: &[], budget: None };
        if !probe.has_concrete_route() {
            return Err(Error::Invalid("RPC call route must be a concrete rpc:// route"));
        }
        let sub = self.c.call(route, body, id, self.timeout_ms).await?;
        // Read right after the REQUEST was queued: the connection it went
        // out on (see `Call::poll_item`).
        let epoch = self.c.epoch();
        Ok(Call { sub, c: self.c.clone(), id, epoch, done: false })
    }

    /// A call whose reply is one chunk: the body of its first chunk (see
    /// [`Call::reply`]).
    pub async fn call_once(&self, route: &str, body: &[u8], id: Uuid) -> Result<BufOf<H>, Error> {
        self.call(route, body, id).await?.reply().await
    }

    /// Registers a worker for `pattern` (an exact `rpc://` route or a
    /// pattern with whole-segment `*` / `**`, any depth) that the broker
    /// may give up to `max_concurrent` (1 to 1,024) unfinished calls at
    /// once. With `CAP_RPC_CANCELLATION` the registration carries the
    /// extension: invocations may come with a remaining budget, and the
    /// worker receives cancellation signals. Dropping the [`Worker`]
    /// unregisters it.
    ///
    /// One worker per pattern and client: the engine hands every request
    /// to the first worker whose pattern matches its route.
    pub async fn serve(&self, pattern: &str, max_concurrent: u32) -> Result<Worker<H>, Error> {
        let probe = wire::SubscribeWorker { pattern, max_concurrent, extension: None };
        if !probe.is_valid() {
            return Err(Error::Invalid("RPC worker pattern, or max_concurrent outside 1..=1024"));
        }
        // The extension depends on what the broker advertised.
        self.c.ready().await?;
        let ext = self.c.has(CAP_CANCELLATION);
        let msg = wire::SubscribeWorker { extension: ext.then_some(WorkerExtension), ..probe };
        let sub = self.c.subscribe(&msg).await?;
        let epoch = self.c.epoch();
        Ok(Worker { sub, c: self.c.clone(), ext, epoch })
    }
}

/// Sends a message without reply on connection `epoch` only: checked and
/// queued under one lock, so nothing of an earlier connection leaks onto a
/// later one ([`Error::StaleHandle`]).
async fn send_in<H: Shared>(c: &Client<H>, epoch: u32, msg: &dyn fitz_wire::DynEncode) -> Result<(), Error> {
    poll_fn(|cx| {
        c.shared()
            .with(|e| if e.epoch() != epoch { Poll::Ready(Err(Error::StaleHandle)) } else { e.poll_send(cx, msg) })
    })
    .await
}

/// One chunk of a call's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<P> {
    /// Its position in the response (0, 1, 2, … without gaps).
    pub sequence: u64,
    /// True for the last chunk of the call.
    pub last: bool,
    /// The chunk data, a part of the received frame (no copy).
    pub body: P,
}

/// ERR_RPC_TIMEOUT: the broker's deadline for a call passed.
const RPC_TIMEOUT: u32 = 6001;

/// A call in flight: its response chunks, in order.
///
/// Dropping it before the last chunk abandons the call; with
/// `CAP_RPC_CANCELLATION` the broker is told (RPC_CANCEL) and signals the
/// worker. A lost connection ends it with [`Error::ConnectionLost`] (the
/// broker forgets calls with their connection; the outcome is unknown).
pub struct Call<H: Shared> {
    sub: Subscription<H>,
    c: Client<H>,
    id: Uuid,
    epoch: u32,
    done: bool,
}

impl<H: Shared> Call<H> {
    /// The call's UUID.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The next raw delivery of the call, or the end of its connection.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item<BufOf<H>>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.sub.poll_next(cx) {
            return Poll::Ready(item);
        }
        // The connection the call went out on is gone once the epoch moved
        // or the session left `Authenticated` (checked and watched under
        // one lock, so no change is missed).
        let epoch = self.epoch;
        let lost = self.c.shared().with(|e| {
            let lost = e.epoch() != epoch || e.state() != State::Authenticated;
            if !lost {
                e.watch_state(cx);
            }
            lost
        });
        if !lost {
            return Poll::Pending;
        }
        // A chunk that came in just before the loss is still delivered.
        if let Poll::Ready(Some(item)) = self.sub.poll_next(cx) {
            return Poll::Ready(Some(item));
        }
        self.done = true;
        Poll::Ready(Some(Err(Error::ConnectionLost)))
    }

    /// Polls the next chunk; `None` after the last one. A terminal error
    /// chunk (codes 6002–6013, from the broker or the worker) is returned as
    /// [`Error::Server`]; the call's deadline, local or the broker's (6001),
    /// as [`Error::Timeout`]. After an error the call has ended. (`Call` is
    /// also a `futures_core::Stream` of the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Chunk<BufOf<H>>, Error>>> {
        loop {
            let payload = match ready!(self.poll_item(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(Item::Record { msg_type: MsgType::RPC_RESPONSE, payload })) => payload,
                // A late answer to a cancel, or anything else: not data.
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            let resp = match wire::Response::decode(payload.as_ref()) {
                Ok(r) => r,
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(Error::Decode(e))));
                }
            };
            if resp.stream_end() {
                self.done = true;
            }
            return Poll::Ready(Some(match resp.terminal_error() {
                // The broker's deadline for the call (the budget sent with
                // it, or its own default) is a timeout like the local one:
                // whichever comes first, the caller sees the same error.
                Some(e) if e.code == Some(RPC_TIMEOUT) => Err(Error::Timeout),
                Some(e) => Err(Error::Server(Fault::new(&e, MsgType::RPC_REQUEST))),
                None => Ok(Chunk { sequence: resp.sequence, last: resp.stream_end(), body: payload.part(resp.body) }),
            }));
        }
    }

    /// The next chunk (see [`Call::poll_next`]). Cancel-safe: dropping the
    /// future loses no chunk.
    pub async fn next(&mut self) -> Option<Result<Chunk<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The body of the first chunk: the reply of a one-shot call. If the
    /// worker streams, the chunks after the first are abandoned (the call
    /// is cancelled where the broker supports it); read them with
    /// [`Call::next`] instead.
    pub async fn reply(mut self) -> Result<BufOf<H>, Error> {
        match self.next().await {
            Some(Ok(chunk)) => Ok(chunk.body),
            Some(Err(e)) => Err(e),
            // Calls end only after a chunk or with an error.
            None => Err(Error::ConnectionLost),
        }
    }

    /// Cancels the call and returns the broker's answer: `Some` status
    /// (e.g. [`CancelStatus::Forwarded`] when the worker was signalled,
    /// [`CancelStatus::QueuedRemoved`] when it never ran), or `None` when
    /// there is nothing to ask: the broker lacks `CAP_RPC_CANCELLATION`
    /// (the call is only abandoned locally; the worker carries on), or the
    /// call ended before the broker answered. Chunks still in flight are
    /// discarded. The wait is bounded by the call's deadline, if it has one.
    pub async fn cancel(mut self) -> Result<Option<CancelStatus>, Error> {
        if self.done || !self.c.has(CAP_CANCELLATION) {
            return Ok(None);
        }
        let msg = RpcCancel::Caller { correlation_id: self.id, reason: CancelReason::Explicit };
        match send_in(&self.c, self.epoch, &msg).await {
            Ok(()) => {}
            // The call went with its connection.
            Err(Error::StaleHandle) => return Ok(None),
            Err(e) => return Err(e),
        }
        loop {
            match poll_fn(|cx| self.poll_item(cx)).await {
                None | Some(Err(Error::ConnectionLost)) => return Ok(None),
                Some(Ok(Item::Record { msg_type: MsgType::RPC_LIFECYCLE, payload })) => {
                    if let Ok(RpcLifecycle::CancelResult { correlation_id, status }) =
                        RpcLifecycle::decode(payload.as_ref())
                        && correlation_id == self.id
                    {
                        return Ok(Some(status));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
            }
        }
    }

    /// The raw response stream (chunks as [`Item::Record`]s of type 303,
    /// cancel answers of type 305).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Call<H> {
    type Item = Result<Chunk<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Call::poll_next(self.get_mut(), cx)
    }
}

/// A worker registration: `next` yields what the broker sends it.
/// Dropping it unregisters the pattern (UNSUBSCRIBE_WORKER); the broker
/// then fails the calls still running on it with 6002.
pub struct Worker<H: Shared> {
    sub: Subscription<H>,
    c: Client<H>,
    /// Registered with the cancellation extension.
    ext: bool,
    /// The connection whose invocations are being delivered.
    epoch: u32,
}

/// What a worker receives.
pub enum WorkerEvent<H: Shared> {
    /// A call to serve.
    Request(Invocation<H>),
    /// The broker asks to stop an invocation (caller cancelled, deadline
    /// passed, caller disconnected); only with `CAP_RPC_CANCELLATION`.
    /// Stop its handler and [`Responder::release`] it. Every worker of the
    /// client sees every signal: ignore ids you do not know.
    Cancelled(Cancellation),
    /// The registration was made again after a reconnect: the invocations
    /// received before belong to the lost connection, their responders
    /// fail with [`Error::StaleHandle`].
    Restored,
}

/// A lifecycle signal for an invocation (RPC_LIFECYCLE kind 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancellation {
    /// The invocation to stop ([`Request::id`]).
    pub invocation_id: Uuid,
    /// Why.
    pub reason: SignalReason,
}

/// A call delivered to a worker: the request and the means to answer it.
pub struct Invocation<H: Shared> {
    /// What the caller sent.
    pub request: Request<BufOf<H>>,
    /// Sends the response.
    pub responder: Responder<H>,
}

impl<H: Shared> Invocation<H> {
    /// The request and its responder, apart.
    pub fn into_parts(self) -> (Request<BufOf<H>>, Responder<H>) {
        (self.request, self.responder)
    }
}

/// A request received by a worker: views of the received frame.
#[derive(Debug, Clone)]
pub struct Request<P> {
    payload: P,
    body: P,
    id: Uuid,
    budget_ms: Option<u32>,
    ext: bool,
}

impl<P: Buf> Request<P> {
    /// The UUID the worker answers with: the caller's UUID, or with the
    /// cancellation extension a fresh invocation UUID chosen by the broker
    /// (the one [`Cancellation`]s name).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The concrete route that was called.
    pub fn route(&self) -> &str {
        wire::Request::decode_with(self.payload.as_ref(), self.ext).map(|r| r.route).unwrap_or("")
    }

    /// The request body, a part of the received frame (no copy).
    pub fn body(&self) -> &P {
        &self.body
    }

    /// The caller's remaining budget in milliseconds when the request was
    /// dispatched, if it sent one (current dialect only).
    pub fn budget_ms(&self) -> Option<u32> {
        self.budget_ms
    }
}

/// Answers one invocation: any number of [`Responder::send`] chunks, then
/// exactly one of [`Responder::finish`], [`Responder::fail`] or (after a
/// cancellation) [`Responder::release`]. Those also acknowledge the end of
/// the invocation to a broker with `CAP_RPC_CANCELLATION` (RPC_CANCEL kind
/// 3), which returns the worker's credit of a cancelled call.
///
/// Dropping it unanswered sends nothing: the caller waits until its
/// deadline or the broker's (about 30 s), and the worker's credit stays
/// taken until then; a cancelled invocation that is never released makes
/// the broker close the connection after its grace period.
pub struct Responder<H: Shared> {
    c: Client<H>,
    id: Uuid,
    next_seq: u64,
    epoch: u32,
    ack: bool,
}

impl<H: Shared> Responder<H> {
    /// The invocation's UUID.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The sequence number of the next chunk (the number sent so far).
    pub fn sequence(&self) -> u64 {
        self.next_seq
    }

    /// Sends a chunk that is not the last one.
    pub async fn send(&mut self, body: &[u8]) -> Result<(), Error> {
        send_in(&self.c, self.epoch, &wire::Response::chunk(self.id, self.next_seq, body)).await?;
        self.next_seq += 1;
        Ok(())
    }

    /// Sends the last chunk (the whole reply of a one-shot call) and ends
    /// the invocation.
    pub async fn finish(self, body: &[u8]) -> Result<(), Error> {
        send_in(&self.c, self.epoch, &wire::Response::last(self.id, self.next_seq, body)).await?;
        self.release().await
    }

    /// Fails the call with a terminal error chunk (build it with
    /// [`TerminalError::new`]: 6010 for a handler failure, 6003 for a
    /// saturated worker…) and ends the invocation. A code outside
    /// 6001–6013 would reach the caller as data: it is refused with
    /// [`Error::Invalid`] and nothing is sent.
    pub async fn fail(self, error: TerminalError<'_>) -> Result<(), Error> {
        if !TerminalError::CODES.contains(&error.code) {
            return Err(Error::Invalid("RPC terminal error code outside 6001..=6013"));
        }
        send_in(&self.c, self.epoch, &error.response(self.id, self.next_seq)).await?;
        self.release().await
    }

    /// Ends the invocation without a response: what a worker does after a
    /// [`WorkerEvent::Cancelled`] signal (the broker no longer forwards
    /// chunks of a cancelled call). Without the cancellation extension
    /// there is nothing to send.
    pub async fn release(self) -> Result<(), Error> {
        if !self.ack {
            return Ok(());
        }
        send_in(&self.c, self.epoch, &RpcCancel::WorkerReleased { invocation_id: self.id }).await
    }
}

impl<H: Shared> Worker<H> {
    /// True if the registration carries the cancellation extension (the
    /// broker advertised `CAP_RPC_CANCELLATION`).
    pub fn supports_cancellation(&self) -> bool {
        self.ext
    }

    /// Polls the next event; `None` once the registration ended normally,
    /// an error if it ended abnormally (e.g. [`Error::Backpressure`] when
    /// requests were not taken fast enough, or a refused restore). (`Worker`
    /// is also a `futures_core::Stream` of the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WorkerEvent<H>, Error>>> {
        loop {
            let item = match ready!(self.sub.poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(item)) => item,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            };
            match item {
                Item::Restored => {
                    self.epoch = self.c.epoch();
                    return Poll::Ready(Some(Ok(WorkerEvent::Restored)));
                }
                Item::Record { msg_type: MsgType::RPC_REQUEST, payload } => {
                    if let Some(inv) = self.invocation(payload) {
                        return Poll::Ready(Some(Ok(WorkerEvent::Request(inv))));
                    }
                }
                Item::Record { msg_type: MsgType::RPC_LIFECYCLE, payload } => {
                    if let Ok(RpcLifecycle::Signal { invocation_id, reason }) = RpcLifecycle::decode(payload.as_ref()) {
                        return Poll::Ready(Some(Ok(WorkerEvent::Cancelled(Cancellation { invocation_id, reason }))));
                    }
                }
                Item::Record { .. } => {}
            }
        }
    }

    /// The next event (see [`Worker::poll_next`]). Cancel-safe: dropping
    /// the future loses no event.
    pub async fn next(&mut self) -> Option<Result<WorkerEvent<H>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Decodes an inbound REQUEST; a malformed one never reaches a handler.
    fn invocation(&self, payload: BufOf<H>) -> Option<Invocation<H>> {
        let req = match wire::Inbound::classify(payload.as_ref(), self.ext) {
            Ok(wire::Inbound::Request(req)) => req,
            Ok(wire::Inbound::IngressError(_)) | Err(_) => return None,
        };
        let (id, budget_ms, body) =
            (req.correlation_id, req.budget.map(|b| b.remaining_budget_ms()), payload.part(req.body));
        Some(Invocation {
            request: Request { payload, body, id, budget_ms, ext: self.ext },
            responder: Responder { c: self.c.clone(), id, next_seq: 0, epoch: self.epoch, ack: self.ext },
        })
    }

    /// Unregisters the worker (the same as dropping it).
    pub fn unregister(self) {
        drop(self);
    }

    /// The raw registration (REQUEST and RPC_LIFECYCLE records, restores).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Worker<H> {
    type Item = Result<WorkerEvent<H>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Worker::poll_next(self.get_mut(), cx)
    }
}
