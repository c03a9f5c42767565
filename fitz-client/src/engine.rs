//! The engine: a [`Session`] plus the fixed tables that connect it to the
//! tasks using the client. Still sans-IO: the binding's driver feeds it
//! frames and time and drains its transmit buffer; tasks poll it through
//! [`crate::Client`] while holding the binding's lock.
//!
//! Tables (all sized at compile time):
//! - `N` request slots, each with the waker and reply of its task;
//! - `S` wire registrations (a subscribe request kept in its encoded form,
//!   so it can be sent again after a reconnect) and `S` local subscribers,
//!   each with a bounded queue of `Q` deliveries. Several local subscribers
//!   of one registration share it;
//! - `C` RPC call slots, each with a bounded queue of `CQ` response chunks
//!   (and lifecycle signals). Calls have a table of their own so that a
//!   client can keep many more calls in flight than it has subscribers
//!   (calls are short-lived and usually get one chunk) without giving
//!   every call a subscriber's deep queue. By default `C = S` and
//!   `CQ = Q`.

use core::task::{Context, Poll, Waker};

use fitz_wire::frame::{self, Transport};
use fitz_wire::rpc::{self, RpcCancel, RpcLifecycle};
use fitz_wire::{Capabilities, Dialect, Encode, MsgType, Payload, Record, Reply, SliceWriter, Uuid};
use heapless::{Deque, Vec};

use crate::error::{Capacity, Error, Fault};
use crate::session::{Config, Event, FailReason, ProtocolError, RequestError, RequestId, Session, State};

/// Longest subscribe request (payload bytes) a registration stores: the
/// pattern and its fields. Longer patterns are refused with
/// [`Capacity::Pattern`].
pub const SUBSCRIBE_MAX: usize = 264;

/// An owned view of received bytes. Deliveries and replies hand these to
/// tasks; a binding chooses the type: `bytes::Bytes` borrows the receive
/// buffer without copying, a fixed array copies.
pub trait Buf: AsRef<[u8]> + Clone {
    /// The part `sub` of `self` (`sub` is a subslice of `self.as_ref()`).
    fn part(&self, sub: &[u8]) -> Self;
}

#[cfg(feature = "bytes")]
impl Buf for bytes::Bytes {
    fn part(&self, sub: &[u8]) -> Self {
        self.slice_ref(sub)
    }
}

/// Something a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<P> {
    /// A record for this subscriber: NOTIFY, an RPC REQUEST or lifecycle
    /// signal for a worker, an RPC RESPONSE chunk for a caller.
    Record {
        /// Its type.
        msg_type: MsgType,
        /// Its payload.
        payload: P,
    },
    /// The subscription was registered again after a reconnect.
    Restored,
}

/// Why a client stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stopped {
    /// [`crate::Client::close`] was called.
    Closed,
    /// Reconnecting is disabled or its attempts ran out.
    GaveUp,
    /// The broker refused the token and the provider returned it again.
    AuthenticationFailed,
}

/// Identifies a local subscriber (or RPC call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubId {
    index: u16,
    generation: u32,
    /// An RPC call slot, not a subscriber.
    call: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A task waits for the reply.
    User,
    /// The (re)subscription of registration `reg`.
    Subscribe(u16),
}

struct Waiter<P> {
    id: Option<RequestId>,
    purpose: Purpose,
    waker: Option<Waker>,
    result: Option<Result<P, Error>>,
    /// A second reply that came before the first was read: the deferred
    /// grant of a queued Lease ACQUIRE (the only request with two).
    second: Option<P>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegState {
    Free,
    /// To be (re)sent when the session is authenticated and has room.
    NeedSubscribe,
    /// Subscribe request in flight.
    Subscribing,
    /// Registered with this wire id.
    Active,
    /// No subscriber left: unsubscribe when possible, then free.
    NeedUnsubscribe,
}

struct Reg {
    state: RegState,
    /// The subscribe message type.
    kind: MsgType,
    wire_id: u64,
    body: Vec<u8, SUBSCRIBE_MAX>,
    locals: u16,
    /// Sent while restoring after a reconnect.
    restoring: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Reg(u16),
    Call { id: Uuid, next_seq: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LocalState {
    Free,
    /// Waiting for its registration to become active.
    Pending,
    Active,
    /// Ended; the queue still drains, then the error is reported (or the
    /// stream just ends for `None`).
    Ended(Option<Error>),
}

struct Local<P, const Q: usize> {
    state: LocalState,
    generation: u32,
    target: Target,
    queue: Deque<Item<P>, Q>,
    waker: Option<Waker>,
    /// RPC call deadline (0 = none).
    deadline: u64,
}

/// Tasks waiting for something general (readiness, a free slot, room in
/// the transmit buffer). Bounded: when full, everyone is woken and the
/// table starts over (woken tasks register again).
struct Wakers<const W: usize>(Vec<Waker, W>);

impl<const W: usize> Wakers<W> {
    fn register(&mut self, w: &Waker) {
        if self.0.iter().any(|x| x.will_wake(w)) {
            return;
        }
        if self.0.is_full() {
            self.wake_all();
        }
        let _ = self.0.push(w.clone());
    }

    fn wake_all(&mut self) {
        while let Some(w) = self.0.pop() {
            w.wake();
        }
    }
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

/// What the tables need to know from session events, outside the session.
struct Tables<P, const N: usize, const S: usize, const Q: usize, const C: usize, const CQ: usize> {
    waiters: [Waiter<P>; N],
    regs: [Reg; S],
    locals: [Local<P, Q>; S],
    /// RPC calls (target always [`Target::Call`]).
    calls: [Local<P, CQ>; C],
    /// Calls with a deadline armed: `poll_timeout` scans the call table
    /// only when there are some.
    deadlines: usize,
    general: Wakers<32>,
    state_waker: Wakers<8>,
    /// A SERVER_HELLO or the end of the settle window authenticated the
    /// session: the restore phase starts after the session call.
    just_authenticated: bool,
    auth_failed: bool,
    /// Registrations still being restored.
    restoring: usize,
    state_changes: u32,
    /// NOTIFY records that matched no subscriber (counted, dropped).
    unmatched: u64,
}

/// The engine; see the module documentation. `P` is the owned receive view
/// ([`Buf`]), `T` the transmit buffer (`[u8; LEN]`, a boxed slice…); `N`
/// request slots, `S` subscribers with queues of `Q`, `C` RPC calls in
/// flight with queues of `CQ` chunks.
pub struct Engine<P, T, const N: usize, const S: usize, const Q: usize, const C: usize = S, const CQ: usize = Q> {
    session: Session<N>,
    t: Tables<P, N, S, Q, C, CQ>,
    tx: T,
    tx_len: usize,
    writer: Option<Waker>,
    timer: Option<Waker>,
    /// The deadline the timer task sleeps until.
    armed: Option<u64>,
    now: u64,
    closed: Option<Stopped>,
    /// Requests tasks may have in flight at once (at most `N`).
    limit: usize,
    stats: Stats,
    /// Sent as SESSION_METADATA on every connection that allows it.
    service_name: heapless::String<128>,
}

/// Counters of the request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Requests of tasks in flight now (sent, reply not yet collected).
    pub in_flight: usize,
    /// The most ever in flight at once.
    pub max_in_flight: usize,
    /// Times a request waited because the in-flight limit was reached.
    pub limited: u64,
    /// Times a request waited for an outstanding request of its type (no
    /// correlation: one per type on the wire).
    pub serialized: u64,
}

impl<
    P: Buf,
    T: AsRef<[u8]> + AsMut<[u8]>,
    const N: usize,
    const S: usize,
    const Q: usize,
    const C: usize,
    const CQ: usize,
> Engine<P, T, N, S, Q, C, CQ>
{
    /// An engine with a disconnected session. `tx` is the transmit buffer:
    /// its length bounds the frames queued between two writes (and the
    /// largest frame that can be sent).
    pub fn new(cfg: Config, tx: T) -> Self {
        // The transmit buffer holds TCP frames; WebSocket bindings strip
        // the prefix per frame (see `frames`).
        let cfg = Config { transport: Transport::Tcp, ..cfg };
        const { assert!(S <= u16::MAX as usize, "Engine: S must fit u16") };
        const { assert!(C <= u16::MAX as usize, "Engine: C must fit u16") };
        Engine {
            session: Session::new(cfg),
            t: Tables {
                waiters: core::array::from_fn(|_| Waiter {
                    id: None,
                    purpose: Purpose::User,
                    waker: None,
                    result: None,
                    second: None,
                }),
                regs: core::array::from_fn(|_| Reg {
                    state: RegState::Free,
                    kind: MsgType(0),
                    wire_id: 0,
                    body: Vec::new(),
                    locals: 0,
                    restoring: false,
                }),
                locals: core::array::from_fn(|_| free_local()),
                calls: core::array::from_fn(|_| free_local()),
                deadlines: 0,
                general: Wakers(Vec::new()),
                state_waker: Wakers(Vec::new()),
                just_authenticated: false,
                auth_failed: false,
                restoring: 0,
                state_changes: 0,
                unmatched: 0,
            },
            tx,
            tx_len: 0,
            writer: None,
            timer: None,
            armed: None,
            now: 0,
            closed: None,
            limit: N,
            stats: Stats::default(),
            service_name: heapless::String::new(),
        }
    }

    // ----- internals ---------------------------------------------------

    fn tx_cap(&self) -> usize {
        self.tx.as_ref().len()
    }

    /// Whether a frame of `msg` (labelled or not) fits the transmit buffer
    /// now; an error if it never can.
    fn fits<E: Encode + ?Sized>(&self, labelled: bool, msg: &E) -> Result<bool, Error> {
        let need = frame::frame_len(Transport::Tcp, labelled, msg);
        if need > self.tx_cap() {
            return Err(Error::Capacity(Capacity::Frame));
        }
        Ok(need <= self.tx_cap() - self.tx_len)
    }

    /// Appends an unlabelled frame with no reply. `Ok(false)`: no room now.
    fn queue_frame<E: Encode + ?Sized>(&mut self, msg: &E) -> Result<bool, Error> {
        if !self.fits(false, msg)? {
            return Ok(false);
        }
        let out = self.tx.as_mut().get_mut(self.tx_len..).unwrap_or_default();
        match self.session.send(msg, out) {
            Ok(n) => {
                self.tx_len += n;
                wake(&mut self.writer);
                Ok(true)
            }
            Err(RequestError::NotReady) => Ok(false),
            Err(RequestError::Encode(e)) => Err(Error::Encode(e)),
            Err(RequestError::Busy | RequestError::Capacity) => Ok(false),
        }
    }

    /// Starts a request for the engine itself (no task waits): `Ok(None)`
    /// when it has to wait for room.
    fn internal_request<E: Encode + ?Sized>(&mut self, msg: &E, purpose: Purpose) -> Result<Option<RequestId>, Error> {
        if !self.fits(self.session.labels(msg.msg_type()), msg)? {
            return Ok(None);
        }
        let out = self.tx.as_mut().get_mut(self.tx_len..).unwrap_or_default();
        match self.session.request_with(self.now, msg, 0, false, out) {
            Ok((id, n)) => {
                self.tx_len += n;
                if let Some(w) = self.t.waiters.get_mut(id.slot()) {
                    *w = Waiter { id: Some(id), purpose, waker: None, result: None, second: None };
                }
                wake(&mut self.writer);
                Ok(Some(id))
            }
            Err(RequestError::Encode(e)) => Err(Error::Encode(e)),
            Err(RequestError::NotReady | RequestError::Busy | RequestError::Capacity) => Ok(None),
        }
    }

    /// After every session call: start the restore phase, send what the
    /// tables wait for, wake the timer and state watchers.
    fn after_session(&mut self) {
        if core::mem::take(&mut self.t.just_authenticated) {
            // The service name goes first, before any restore or request.
            if !self.service_name.is_empty() && self.session.capabilities().contains(Capabilities::SESSION_METADATA) {
                let name = self.service_name.clone();
                let _ = self.queue_frame(&fitz_wire::control::SessionMetadata { service_name: &name });
            }
            let mut n = 0;
            for reg in self.t.regs.iter_mut() {
                match reg.state {
                    RegState::Free => {}
                    _ if reg.locals == 0 => *reg = free_reg(),
                    _ => {
                        reg.state = RegState::NeedSubscribe;
                        reg.restoring = true;
                        n += 1;
                    }
                }
            }
            self.t.restoring = n;
            self.t.note_state();
        }
        self.pump();
        if self.state() == State::Authenticated {
            self.t.general.wake_all();
        }
        let due = self.session.poll_timeout();
        if let Some(d) = due
            && self.armed.is_none_or(|a| d < a)
        {
            wake(&mut self.timer);
        }
    }

    /// Sends subscribes and unsubscribes that wait for the session or for
    /// room in the transmit buffer.
    fn pump(&mut self) {
        if self.session.state() != State::Authenticated {
            return;
        }
        for i in 0..S {
            let Some(reg) = self.t.regs.get(i) else { continue };
            match reg.state {
                RegState::NeedSubscribe => {
                    let rec = Record { msg_type: reg.kind, payload: &[] };
                    let mut body = [0u8; SUBSCRIBE_MAX];
                    let len = reg.body.len();
                    if let (Some(dst), Some(src)) = (body.get_mut(..len), reg.body.get(..len)) {
                        dst.copy_from_slice(src);
                    }
                    let rec = Record { payload: body.get(..len).unwrap_or(&[]), ..rec };
                    match self.internal_request(&rec, Purpose::Subscribe(i as u16)) {
                        Ok(Some(_)) => {
                            if let Some(r) = self.t.regs.get_mut(i) {
                                r.state = RegState::Subscribing;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => self.t.reg_failed(i, e),
                    }
                }
                RegState::NeedUnsubscribe => {
                    let (kind, wire_id) = (reg.kind, reg.wire_id);
                    let mut body = [0u8; SUBSCRIBE_MAX];
                    let len = reg.body.len();
                    if let (Some(dst), Some(src)) = (body.get_mut(..len), reg.body.get(..len)) {
                        dst.copy_from_slice(src);
                    }
                    // Fire and forget: the reply is swallowed by a tombstone.
                    let sent = match Unsubscribe::of(kind, wire_id, body.get(..len).unwrap_or(&[])) {
                        Some(msg) => {
                            let epoch = self.session.epoch();
                            self.forget(&msg, epoch)
                        }
                        None => true,
                    };
                    if !sent {
                        return;
                    }
                    if let Some(r) = self.t.regs.get_mut(i) {
                        *r = free_reg();
                    }
                }
                RegState::Free | RegState::Subscribing | RegState::Active => {}
            }
        }
    }

    fn poll_ready(&mut self, cx: &Context<'_>) -> Poll<Result<(), Error>> {
        if self.closed.is_some() {
            return Poll::Ready(Err(Error::Closed));
        }
        if self.state() == State::Authenticated {
            Poll::Ready(Ok(()))
        } else {
            self.t.general.register(cx.waker());
            Poll::Pending
        }
    }
}

/// What tasks and drivers do with an engine, whatever its capacities.
/// [`crate::Client`] and the drivers are generic over it, so they carry no
/// const parameters.
pub trait Core {
    /// The owned receive view.
    type Buf: Buf;
    /// The transmit buffer.
    type Tx: AsRef<[u8]> + AsMut<[u8]>;

    /// The lifecycle state as users see it: `Authenticating` until every
    /// subscription and worker of the previous connection is restored.
    fn state(&self) -> State;

    /// Dialect and capabilities of the current connection, once known.
    fn dialect(&self) -> Option<(Dialect, Capabilities)>;

    /// Connection epoch (changes on every connect).
    fn epoch(&self) -> u32;

    /// Counter of state changes, for watchers.
    fn state_changes(&self) -> u32;

    /// NOTIFY records that matched no subscriber so far.
    fn unmatched(&self) -> u64;

    /// Registers `cx` to be woken on the next state change.
    fn watch_state(&mut self, cx: &Context<'_>);

    /// True once [`Core::close`] ran.
    fn is_closed(&self) -> bool;

    /// Tells the engine the time (it never goes back); deadlines of new
    /// requests start from it.
    fn set_now(&mut self, now: u64);

    /// Caps the requests tasks may have in flight (1 to `N`); requests
    /// beyond it wait for one to finish.
    fn set_in_flight_limit(&mut self, limit: usize);

    /// The service name sent as SESSION_METADATA (WIRE.md §B4) right after
    /// SERVER_HELLO on every connection that advertises
    /// `CAP_SESSION_METADATA`. Trimmed; 1–128 bytes without control
    /// characters, else [`Error::Invalid`].
    fn set_service_name(&mut self, name: &str) -> Result<(), Error>;

    /// Counters of the request path.
    fn stats(&self) -> Stats;

    /// Why the client stopped, once it has.
    fn stopped(&self) -> Option<Stopped>;

    /// The driver is opening a transport.
    fn connecting(&mut self);

    /// The transport is open: queues CONNECT with `token` (anything queued
    /// for the previous connection is dropped first).
    fn connected(&mut self, now: u64, token: &[u8]) -> Result<(), Error>;

    /// The transport closed: pending requests fail, subscriptions wait to
    /// be restored. Returns true if this looks like an authentication
    /// failure (closed inside the settle window or before any frame).
    fn connection_closed(&mut self) -> bool;

    /// The driver gave up reconnecting for now.
    fn disconnected(&mut self);

    /// Ends the client: every request, subscriber and call fails with
    /// [`Error::Closed`]; the driver stops.
    fn close(&mut self);

    /// [`Core::close`] with the reason (the first reason sticks).
    fn close_with(&mut self, why: Stopped);

    /// Handles one received frame (without the TCP prefix). `frame` owns
    /// the bytes; replies and deliveries are parts of it. An `Err` means
    /// the connection must be closed.
    fn handle_frame(&mut self, now: u64, frame: &Self::Buf) -> Result<(), ProtocolError>;

    /// The next instant [`Engine::handle_timeout`] must run.
    fn poll_timeout(&mut self) -> Option<u64>;

    /// Registers the timer task, woken when an earlier deadline appears.
    fn register_timer(&mut self, cx: &Context<'_>);

    /// Runs what is due at `now`. An `Err` means the connection must be
    /// closed.
    fn handle_timeout(&mut self, now: u64) -> Result<(), ProtocolError>;

    /// Registers the writer task, woken when bytes are queued.
    fn register_writer(&mut self, cx: &Context<'_>);

    /// Bytes queued for the transport.
    fn pending_tx(&self) -> usize;

    /// Hands the queued bytes to the driver: swaps the transmit buffer with
    /// `spare` (which must be as large) and returns how many bytes of the
    /// new `spare` to write. The bytes are whole TCP frames.
    fn take_tx(&mut self, spare: &mut Self::Tx) -> usize;

    /// Starts a request whose reply a task waits for with
    /// [`Engine::poll_reply`]; `Pending` while the session is not ready,
    /// a same-type request must finish first (no correlation), or the
    /// transmit buffer is full. `timeout_ms` 0 = no deadline. With
    /// `epoch`, the request belongs to a handle of that connection and
    /// fails with [`Error::StaleHandle`] on any other.
    fn poll_request<E: Encode + ?Sized>(
        &mut self,
        cx: &Context<'_>,
        msg: &E,
        timeout_ms: u64,
        epoch: Option<u32>,
    ) -> Poll<Result<RequestId, Error>>;

    /// Sends a request whose reply nobody waits for (a rollback scheduled
    /// by a dropped handle): false if it could not be queued now.
    fn forget<E: Encode + ?Sized>(&mut self, msg: &E, epoch: u32) -> bool;

    /// The reply to `id` (the first one; a queued Lease ACQUIRE can be
    /// polled again for its deferred grant).
    fn poll_reply(&mut self, cx: &Context<'_>, id: RequestId) -> Poll<Result<Self::Buf, Error>>;

    /// The task is done with `id` (reply taken, or it gave up): a reply
    /// that is still due is swallowed when it comes.
    fn finish_request(&mut self, id: RequestId);

    /// Sends a message without reply (Notice PUBLISH, RPC RESPONSE…).
    fn poll_send<E: Encode + ?Sized>(&mut self, cx: &Context<'_>, msg: &E) -> Poll<Result<(), Error>>;

    /// Subscribes a new local subscriber with the subscribe request `msg`
    /// (a SUBSCRIBE of any domain, or SUBSCRIBE_WORKER). A registration
    /// with the same request is shared; otherwise a new one is made. The
    /// subscriber becomes active (see [`Engine::poll_subscribed`]) when the
    /// broker confirms.
    fn subscribe<E: Encode + ?Sized>(&mut self, msg: &E) -> Result<SubId, Error>;

    /// Ready when the subscriber's registration is confirmed (or failed).
    fn poll_subscribed(&mut self, cx: &Context<'_>, id: SubId) -> Poll<Result<(), Error>>;

    /// The next delivery of a subscriber or call; `None` when it ended
    /// without error (a call's last chunk was taken).
    fn poll_next(&mut self, cx: &Context<'_>, id: SubId) -> Poll<Option<Result<Item<Self::Buf>, Error>>>;

    /// Ends a subscriber (its handle was dropped). The registration is
    /// unsubscribed on the wire when its last subscriber leaves.
    fn unsubscribe(&mut self, id: SubId);

    /// Forgets every registration of subscribe type `kind` without telling
    /// the broker (it was told by a bulk unsubscribe such as Notice
    /// UNSUBSCRIBE_ALL): their subscribers end normally.
    fn drop_registrations(&mut self, kind: MsgType);

    /// Starts an RPC call: registers `request.correlation_id` and sends the
    /// REQUEST (with a budget when `deadline_ms` is set and the broker
    /// supports it). Response chunks arrive through [`Engine::poll_next`].
    fn poll_call(
        &mut self,
        cx: &Context<'_>,
        route: &str,
        body: &[u8],
        correlation_id: Uuid,
        deadline_ms: u64,
    ) -> Poll<Result<SubId, Error>>;

    /// The session's current time (as last fed by the driver).
    fn now(&self) -> u64;
}

impl<
    P: Buf,
    T: AsRef<[u8]> + AsMut<[u8]>,
    const N: usize,
    const S: usize,
    const Q: usize,
    const C: usize,
    const CQ: usize,
> Core for Engine<P, T, N, S, Q, C, CQ>
{
    type Buf = P;
    type Tx = T;

    fn state(&self) -> State {
        match self.session.state() {
            State::Authenticated if self.t.restoring > 0 => State::Authenticating,
            s => s,
        }
    }

    fn dialect(&self) -> Option<(Dialect, Capabilities)> {
        self.session.dialect().map(|d| (d, self.session.capabilities()))
    }

    fn epoch(&self) -> u32 {
        self.session.epoch()
    }

    fn state_changes(&self) -> u32 {
        self.t.state_changes
    }

    fn unmatched(&self) -> u64 {
        self.t.unmatched
    }

    fn watch_state(&mut self, cx: &Context<'_>) {
        self.t.state_waker.register(cx.waker());
    }

    fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    fn set_now(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    fn set_in_flight_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, N);
        self.t.general.wake_all();
    }

    fn stats(&self) -> Stats {
        self.stats
    }

    fn set_service_name(&mut self, name: &str) -> Result<(), Error> {
        let name = fitz_wire::control::SessionMetadata::validate_name(name).ok_or(Error::Invalid("service name"))?;
        self.service_name = heapless::String::try_from(name).map_err(|_| Error::Invalid("service name"))?;
        Ok(())
    }

    fn stopped(&self) -> Option<Stopped> {
        self.closed
    }

    fn connecting(&mut self) {
        let t = &mut self.t;
        self.session.connecting(&mut |e| t.on_event(e, None));
        self.after_session();
    }

    fn connected(&mut self, now: u64, token: &[u8]) -> Result<(), Error> {
        self.now = now;
        self.tx_len = 0;
        self.t.auth_failed = false;
        let t = &mut self.t;
        let n = self.session.connected(now, token, self.tx.as_mut(), &mut |e| t.on_event(e, None))?;
        self.tx_len = n;
        self.after_session();
        Ok(())
    }

    fn connection_closed(&mut self) -> bool {
        self.tx_len = 0;
        let t = &mut self.t;
        self.session.handle_close(&mut |e| t.on_event(e, None));
        for reg in self.t.regs.iter_mut() {
            match reg.state {
                RegState::Active | RegState::Subscribing => reg.state = RegState::NeedSubscribe,
                // The broker forgot it with the connection.
                RegState::NeedUnsubscribe => *reg = free_reg(),
                RegState::Free | RegState::NeedSubscribe => {}
            }
        }
        self.t.restoring = 0;
        // The broker forgets calls with their connection: the outcome is
        // unknown.
        for l in self.t.calls.iter_mut() {
            if matches!(l.state, LocalState::Pending | LocalState::Active) {
                l.state = LocalState::Ended(Some(Error::ConnectionLost));
                l.deadline = 0;
                wake(&mut l.waker);
            }
        }
        self.t.deadlines = 0;
        self.after_session();
        core::mem::take(&mut self.t.auth_failed)
    }

    fn disconnected(&mut self) {
        let t = &mut self.t;
        self.session.disconnected(&mut |e| t.on_event(e, None));
        self.after_session();
    }

    fn close(&mut self) {
        self.close_with(Stopped::Closed);
    }

    fn close_with(&mut self, why: Stopped) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(why);
        let t = &mut self.t;
        self.session.close(&mut |e| t.on_event(e, None));
        for l in self.t.locals.iter_mut() {
            if matches!(l.state, LocalState::Pending | LocalState::Active) {
                l.state = LocalState::Ended(Some(Error::Closed));
                wake(&mut l.waker);
            }
        }
        for l in self.t.calls.iter_mut() {
            if matches!(l.state, LocalState::Pending | LocalState::Active) {
                l.state = LocalState::Ended(Some(Error::Closed));
                l.deadline = 0;
                wake(&mut l.waker);
            }
        }
        self.t.deadlines = 0;
        for w in self.t.waiters.iter_mut() {
            if w.id.is_some() && w.result.is_none() {
                w.result = Some(Err(Error::Closed));
                wake(&mut w.waker);
            }
        }
        self.after_session();
        wake(&mut self.writer);
        wake(&mut self.timer);
    }

    fn handle_frame(&mut self, now: u64, frame: &P) -> Result<(), ProtocolError> {
        self.now = now;
        let t = &mut self.t;
        let caps = self.session.capabilities();
        let r = self.session.handle_frame(now, frame.as_ref(), &mut |e| t.on_event(e, Some((frame, caps))));
        self.after_session();
        r
    }

    fn poll_timeout(&mut self) -> Option<u64> {
        let calls = if self.t.deadlines == 0 {
            None
        } else {
            self.t.calls.iter().filter(|l| l.deadline != 0).map(|l| l.deadline).min()
        };
        let next = match (self.session.poll_timeout(), calls) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.armed = next;
        next
    }

    fn register_timer(&mut self, cx: &Context<'_>) {
        self.timer = Some(cx.waker().clone());
    }

    fn handle_timeout(&mut self, now: u64) -> Result<(), ProtocolError> {
        self.now = now;
        let t = &mut self.t;
        let r = self.session.handle_timeout(now, &mut |e| t.on_event(e, None));
        let cancel_allowed = self.session.capabilities().contains(Capabilities::RPC_CANCELLATION);
        for i in 0..C {
            if self.t.deadlines == 0 {
                break;
            }
            let Some(l) = self.t.calls.get_mut(i) else { continue };
            if l.deadline != 0 && now >= l.deadline {
                l.deadline = 0;
                self.t.deadlines = self.t.deadlines.saturating_sub(1);
                if let Target::Call { id, .. } = l.target
                    && matches!(l.state, LocalState::Active)
                {
                    l.state = LocalState::Ended(Some(Error::Timeout));
                    wake(&mut l.waker);
                    if cancel_allowed {
                        let cancel =
                            RpcCancel::Caller { correlation_id: id, reason: rpc::CancelReason::CallerDeadline };
                        let _ = self.queue_frame(&cancel);
                    }
                }
            }
        }
        self.after_session();
        r
    }

    fn register_writer(&mut self, cx: &Context<'_>) {
        self.writer = Some(cx.waker().clone());
    }

    fn pending_tx(&self) -> usize {
        self.tx_len
    }

    fn take_tx(&mut self, spare: &mut T) -> usize {
        let n = self.tx_len;
        if n > 0 && spare.as_ref().len() >= self.tx.as_ref().len() {
            core::mem::swap(&mut self.tx, spare);
            self.tx_len = 0;
            // Room again: send what waited for it.
            self.pump();
            self.t.general.wake_all();
            n
        } else {
            0
        }
    }

    fn forget<E: Encode + ?Sized>(&mut self, msg: &E, epoch: u32) -> bool {
        if epoch != self.session.epoch() || self.state() != State::Authenticated {
            return false;
        }
        match self.internal_request(msg, Purpose::User) {
            Ok(Some(id)) => {
                self.session.cancel(id);
                if let Some(w) = self.t.waiters.get_mut(id.slot()) {
                    w.id = None;
                }
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    fn poll_request<E: Encode + ?Sized>(
        &mut self,
        cx: &Context<'_>,
        msg: &E,
        timeout_ms: u64,
        epoch: Option<u32>,
    ) -> Poll<Result<RequestId, Error>> {
        if let Poll::Ready(Err(e)) = self.poll_ready(cx) {
            return Poll::Ready(Err(e));
        }
        if self.state() != State::Authenticated {
            return Poll::Pending;
        }
        if epoch.is_some_and(|e| e != self.session.epoch()) {
            return Poll::Ready(Err(Error::StaleHandle));
        }
        if self.stats.in_flight >= self.limit {
            self.stats.limited += 1;
            self.t.general.register(cx.waker());
            return Poll::Pending;
        }
        match self.fits(self.session.labels(msg.msg_type()), msg) {
            Err(e) => return Poll::Ready(Err(e)),
            Ok(false) => {
                self.t.general.register(cx.waker());
                wake(&mut self.writer);
                return Poll::Pending;
            }
            Ok(true) => {}
        }
        let out = self.tx.as_mut().get_mut(self.tx_len..).unwrap_or_default();
        match self.session.request_with(self.now, msg, timeout_ms, true, out) {
            Ok((id, n)) => {
                self.tx_len += n;
                self.stats.in_flight += 1;
                self.stats.max_in_flight = self.stats.max_in_flight.max(self.stats.in_flight);
                if let Some(w) = self.t.waiters.get_mut(id.slot()) {
                    *w = Waiter {
                        id: Some(id),
                        purpose: Purpose::User,
                        waker: Some(cx.waker().clone()),
                        result: None,
                        second: None,
                    };
                }
                wake(&mut self.writer);
                if timeout_ms != 0 {
                    let d = self.now.saturating_add(timeout_ms);
                    if self.armed.is_none_or(|a| d < a) {
                        wake(&mut self.timer);
                    }
                }
                Poll::Ready(Ok(id))
            }
            Err(RequestError::Busy | RequestError::NotReady) => {
                self.stats.serialized += 1;
                self.t.general.register(cx.waker());
                Poll::Pending
            }
            Err(RequestError::Capacity) => Poll::Ready(Err(Error::Capacity(Capacity::Requests))),
            Err(RequestError::Encode(e)) => Poll::Ready(Err(Error::Encode(e))),
        }
    }

    fn poll_reply(&mut self, cx: &Context<'_>, id: RequestId) -> Poll<Result<P, Error>> {
        let Some(w) = self.t.waiters.get_mut(id.slot()).filter(|w| w.id == Some(id)) else {
            return Poll::Ready(Err(Error::Closed));
        };
        match w.result.take() {
            Some(r) => {
                w.result = w.second.take().map(Ok);
                Poll::Ready(r)
            }
            None => {
                w.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn finish_request(&mut self, id: RequestId) {
        if let Some(w) = self.t.waiters.get_mut(id.slot()).filter(|w| w.id == Some(id)) {
            *w = Waiter { id: None, purpose: Purpose::User, waker: None, result: None, second: None };
            self.stats.in_flight = self.stats.in_flight.saturating_sub(1);
        }
        self.session.cancel(id);
        self.t.general.wake_all();
    }

    fn poll_send<E: Encode + ?Sized>(&mut self, cx: &Context<'_>, msg: &E) -> Poll<Result<(), Error>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match self.queue_frame(msg) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => {
                self.t.general.register(cx.waker());
                wake(&mut self.writer);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn subscribe<E: Encode + ?Sized>(&mut self, msg: &E) -> Result<SubId, Error> {
        if self.closed.is_some() {
            return Err(Error::Closed);
        }
        let kind = msg.msg_type();
        let len = msg.payload_len();
        let mut body = [0u8; SUBSCRIBE_MAX];
        let Some(dst) = body.get_mut(..len) else { return Err(Error::Capacity(Capacity::Pattern)) };
        let mut w = SliceWriter::new(dst);
        msg.write_payload(&mut w);
        let written = w.position();
        let body = body.get(..written).unwrap_or(&[]);
        let local = self.t.free_local().ok_or(Error::Capacity(Capacity::Subscriptions))?;
        // A broker keeps one worker registration per pattern: the same
        // pattern with other settings cannot be registered twice.
        if kind == MsgType::RPC_SUBSCRIBE_WORKER {
            let pattern = fitz_wire::Reader::new(body).str().ok();
            if self.t.regs.iter().any(|r| {
                r.state != RegState::Free
                    && r.kind == kind
                    && r.body.as_slice() != body
                    && fitz_wire::Reader::new(&r.body).str().ok() == pattern
            }) {
                return Err(Error::Invalid("pattern already served with other settings by this client"));
            }
        }
        let existing = self.t.regs.iter().position(|r| {
            matches!(r.state, RegState::NeedSubscribe | RegState::Subscribing | RegState::Active)
                && r.kind == kind
                && r.body.as_slice() == body
        });
        let (reg, active) = match existing {
            Some(i) => (i, self.t.regs.get(i).is_some_and(|r| r.state == RegState::Active)),
            None => {
                let i = self
                    .t
                    .regs
                    .iter()
                    .position(|r| r.state == RegState::Free)
                    .ok_or(Error::Capacity(Capacity::Registrations))?;
                let r = self.t.regs.get_mut(i).ok_or(Error::Capacity(Capacity::Registrations))?;
                *r = free_reg();
                r.kind = kind;
                r.body.extend_from_slice(body).map_err(|_| Error::Capacity(Capacity::Pattern))?;
                r.state = RegState::NeedSubscribe;
                (i, false)
            }
        };
        if let Some(r) = self.t.regs.get_mut(reg) {
            r.locals += 1;
        }
        let id = self.t.take_local(
            local,
            Target::Reg(reg as u16),
            if active { LocalState::Active } else { LocalState::Pending },
        );
        self.pump();
        Ok(id)
    }

    fn poll_subscribed(&mut self, cx: &Context<'_>, id: SubId) -> Poll<Result<(), Error>> {
        if id.call {
            return match self.t.call_mut(id) {
                Some(l) => poll_subscribed(l, cx),
                None => Poll::Ready(Err(Error::Closed)),
            };
        }
        let Some(l) = self.t.local_mut(id) else { return Poll::Ready(Err(Error::Closed)) };
        poll_subscribed(l, cx)
    }

    fn poll_next(&mut self, cx: &Context<'_>, id: SubId) -> Poll<Option<Result<Item<P>, Error>>> {
        if id.call {
            return match self.t.call_mut(id) {
                Some(l) => poll_next(l, cx),
                None => Poll::Ready(Some(Err(Error::Closed))),
            };
        }
        let Some(l) = self.t.local_mut(id) else { return Poll::Ready(Some(Err(Error::Closed))) };
        poll_next(l, cx)
    }

    fn unsubscribe(&mut self, id: SubId) {
        if id.call {
            let Some(l) = self.t.call_mut(id) else { return };
            let target = l.target;
            let was_live = matches!(l.state, LocalState::Pending | LocalState::Active);
            let armed = l.deadline != 0;
            *l = Local { generation: l.generation, ..free_local() };
            if armed {
                self.t.deadlines = self.t.deadlines.saturating_sub(1);
            }
            // A call abandoned before its last chunk: tell the broker.
            if let Target::Call { id, .. } = target
                && was_live
                && self.session.capabilities().contains(Capabilities::RPC_CANCELLATION)
            {
                let cancel = RpcCancel::Caller { correlation_id: id, reason: rpc::CancelReason::Explicit };
                let _ = self.queue_frame(&cancel);
            }
        } else {
            let Some(l) = self.t.local_mut(id) else { return };
            let target = l.target;
            let was_live = matches!(l.state, LocalState::Pending | LocalState::Active);
            *l = Local { generation: l.generation, ..free_local() };
            if let Target::Reg(r) = target
                && was_live
            {
                self.t.leave_reg(r as usize);
            }
        }
        self.pump();
    }

    fn drop_registrations(&mut self, kind: MsgType) {
        for (i, r) in self.t.regs.iter_mut().enumerate() {
            if r.state != RegState::Free && r.kind == kind {
                let restoring = r.restoring;
                *r = free_reg();
                if restoring {
                    self.t.restoring = self.t.restoring.saturating_sub(1);
                }
                for l in self.t.locals.iter_mut() {
                    if l.target == Target::Reg(i as u16) && matches!(l.state, LocalState::Pending | LocalState::Active)
                    {
                        l.state = LocalState::Ended(None);
                        wake(&mut l.waker);
                    }
                }
            }
        }
        self.t.note_state();
    }

    fn poll_call(
        &mut self,
        cx: &Context<'_>,
        route: &str,
        body: &[u8],
        correlation_id: Uuid,
        deadline_ms: u64,
    ) -> Poll<Result<SubId, Error>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let budget = (deadline_ms != 0 && self.session.capabilities().contains(Capabilities::RPC_CANCELLATION))
            .then(|| rpc::BudgetExtension::saturating(deadline_ms));
        let req = rpc::Request { correlation_id, route, body, budget };
        let Some(slot) = self.t.calls.iter().position(|l| l.state == LocalState::Free) else {
            return Poll::Ready(Err(Error::Capacity(Capacity::Calls)));
        };
        match self.queue_frame(&req) {
            Ok(true) => {
                let Some(l) = self.t.calls.get_mut(slot) else {
                    return Poll::Ready(Err(Error::Capacity(Capacity::Calls)));
                };
                let generation = l.generation.wrapping_add(1);
                *l = Local {
                    state: LocalState::Active,
                    generation,
                    target: Target::Call { id: correlation_id, next_seq: 0 },
                    ..free_local()
                };
                if deadline_ms != 0 {
                    l.deadline = self.now.saturating_add(deadline_ms).max(1);
                    self.t.deadlines += 1;
                    wake(&mut self.timer);
                }
                Poll::Ready(Ok(SubId { index: slot as u16, generation, call: true }))
            }
            Ok(false) => {
                self.t.general.register(cx.waker());
                wake(&mut self.writer);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn now(&self) -> u64 {
        self.now
    }
}

fn free_reg() -> Reg {
    Reg { state: RegState::Free, kind: MsgType(0), wire_id: 0, body: Vec::new(), locals: 0, restoring: false }
}

fn free_local<P, const Q: usize>() -> Local<P, Q> {
    Local {
        state: LocalState::Free,
        generation: 0,
        target: Target::Reg(0),
        queue: Deque::new(),
        waker: None,
        deadline: 0,
    }
}

/// The unsubscribe request of a registration: every domain but Notice
/// unsubscribes by the original string (the first field of its subscribe
/// request), Notice by id (WIRE.md §8).
enum Unsubscribe<'a> {
    Notice(fitz_wire::notice::Unsubscribe),
    Kv(fitz_wire::kv::Unsubscribe<'a>),
    Queue(fitz_wire::queue::Unsubscribe<'a>),
    Lease(fitz_wire::lease::Unsubscribe<'a>),
    Stream(fitz_wire::stream::Unsubscribe<'a>),
    Schedule(fitz_wire::schedule::Unsubscribe<'a>),
    Worker(fitz_wire::rpc::UnsubscribeWorker<'a>),
}

impl<'a> Unsubscribe<'a> {
    fn of(kind: MsgType, wire_id: u64, body: &'a [u8]) -> Option<Self> {
        let pattern = fitz_wire::Reader::new(body).str().ok()?;
        Some(match kind {
            MsgType::NOTICE_SUBSCRIBE => Unsubscribe::Notice(fitz_wire::notice::Unsubscribe { sub_id: wire_id }),
            MsgType::KV_SUBSCRIBE => Unsubscribe::Kv(fitz_wire::kv::Unsubscribe { pattern }),
            MsgType::QUEUE_SUBSCRIBE => Unsubscribe::Queue(fitz_wire::queue::Unsubscribe { pattern }),
            MsgType::LEASE_SUBSCRIBE => Unsubscribe::Lease(fitz_wire::lease::Unsubscribe { route: pattern }),
            MsgType::STREAM_SUBSCRIBE => Unsubscribe::Stream(fitz_wire::stream::Unsubscribe { selector: pattern }),
            MsgType::SCHEDULE_SUBSCRIBE => Unsubscribe::Schedule(fitz_wire::schedule::Unsubscribe { pattern }),
            MsgType::RPC_SUBSCRIBE_WORKER => Unsubscribe::Worker(fitz_wire::rpc::UnsubscribeWorker { pattern }),
            _ => return None,
        })
    }
}

macro_rules! each_unsubscribe {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Unsubscribe::Notice($m) => $e,
            Unsubscribe::Kv($m) => $e,
            Unsubscribe::Queue($m) => $e,
            Unsubscribe::Lease($m) => $e,
            Unsubscribe::Stream($m) => $e,
            Unsubscribe::Schedule($m) => $e,
            Unsubscribe::Worker($m) => $e,
        }
    };
}

impl Encode for Unsubscribe<'_> {
    fn msg_type(&self) -> MsgType {
        each_unsubscribe!(self, m => m.msg_type())
    }
    fn payload_len(&self) -> usize {
        each_unsubscribe!(self, m => Encode::payload_len(m))
    }
    fn write_payload<W: fitz_wire::Sink + ?Sized>(&self, out: &mut W) {
        each_unsubscribe!(self, m => Encode::write_payload(m, out))
    }
}

/// The subscription id in a subscribe reply of registration kind `kind`
/// (RPC worker registrations have none: 0).
fn decode_subscribed(kind: MsgType, payload: &[u8]) -> Result<Result<u64, Fault>, Error> {
    fn id<T>(r: Reply<'_, T>, kind: MsgType, f: impl FnOnce(T) -> u64) -> Result<u64, Fault> {
        match r {
            Reply::Ok(ok) => Ok(f(ok)),
            Reply::Err(e) => Err(Fault::new(&e, kind)),
        }
    }
    Ok(match kind {
        MsgType::NOTICE_SUBSCRIBE => id(fitz_wire::notice::decode_subscribe_reply(payload)?, kind, |o| o.sub_id),
        MsgType::KV_SUBSCRIBE => id(fitz_wire::kv::decode_subscribe_reply(payload)?, kind, |o| o.sub_id),
        MsgType::QUEUE_SUBSCRIBE => id(fitz_wire::queue::decode_subscribe_reply(payload)?, kind, |o| o.sub_id),
        MsgType::LEASE_SUBSCRIBE => id(fitz_wire::lease::decode_subscribe_reply(payload)?, kind, |o| o.sub_id),
        MsgType::STREAM_SUBSCRIBE => id(fitz_wire::stream::decode_subscribe_reply(payload)?, kind, |o| o.sub_id),
        MsgType::SCHEDULE_SUBSCRIBE => id(fitz_wire::schedule::decode_subscribe_reply(payload)?, kind, |o| o.sub_id),
        MsgType::RPC_SUBSCRIBE_WORKER => id(rpc::decode_subscribe_worker_reply(payload)?, kind, |_| 0),
        _ => return Err(Error::Invalid("not a subscribe request")),
    })
}

/// How specific a worker pattern is: more literal segments first, then
/// without `**`, then fewer `*`.
fn specificity(pattern: &str) -> (usize, bool, usize) {
    let rest = fitz_wire::route::split_scheme(pattern).map_or(pattern, |(_, r)| r);
    let (mut literal, mut double, mut single) = (0, false, 0usize);
    for seg in rest.split('/') {
        match seg {
            "**" => double = true,
            "*" => single += 1,
            _ => literal += 1,
        }
    }
    (literal, !double, usize::MAX - single)
}

/// The subscribe type whose NOTIFY type is `notify`.
const fn subscribe_kind(notify: MsgType) -> Option<MsgType> {
    Some(match notify {
        MsgType::KV_NOTIFY => MsgType::KV_SUBSCRIBE,
        MsgType::QUEUE_NOTIFY => MsgType::QUEUE_SUBSCRIBE,
        MsgType::LEASE_NOTIFY => MsgType::LEASE_SUBSCRIBE,
        MsgType::NOTICE_NOTIFY => MsgType::NOTICE_SUBSCRIBE,
        MsgType::STREAM_NOTIFY => MsgType::STREAM_SUBSCRIBE,
        MsgType::SCHEDULE_NOTIFY => MsgType::SCHEDULE_SUBSCRIBE,
        _ => return None,
    })
}

impl<P: Buf, const N: usize, const S: usize, const Q: usize, const C: usize, const CQ: usize>
    Tables<P, N, S, Q, C, CQ>
{
    fn note_state(&mut self) {
        self.state_changes = self.state_changes.wrapping_add(1);
        self.state_waker.wake_all();
    }

    fn on_event(&mut self, e: Event<'_>, frame: Option<(&P, Capabilities)>) {
        match e {
            Event::State(_) => self.note_state(),
            Event::Authenticated { .. } => self.just_authenticated = true,
            Event::AuthenticationFailed => self.auth_failed = true,
            Event::Failed { id, reason } => {
                let Some(w) = self.waiters.get_mut(id.slot()).filter(|w| w.id == Some(id)) else { return };
                match w.purpose {
                    Purpose::User => {
                        w.result = Some(Err(match reason {
                            FailReason::TimedOut => Error::Timeout,
                            FailReason::ConnectionLost => Error::ConnectionLost,
                        }));
                        wake(&mut w.waker);
                    }
                    // Sent again after the reconnect (connection_closed).
                    Purpose::Subscribe(_) => w.id = None,
                }
            }
            Event::Reply { id, msg_type, payload } => {
                let Some((frame, _)) = frame else { return };
                let Some(w) = self.waiters.get_mut(id.slot()).filter(|w| w.id == Some(id)) else { return };
                match w.purpose {
                    Purpose::User => {
                        match w.result {
                            Some(Ok(_)) => w.second = Some(frame.part(payload)),
                            _ => w.result = Some(Ok(frame.part(payload))),
                        }
                        wake(&mut w.waker);
                    }
                    Purpose::Subscribe(reg) => {
                        w.id = None;
                        self.subscribed(reg as usize, msg_type, payload);
                    }
                }
            }
            Event::Push { msg_type, payload } => {
                if let Some((frame, caps)) = frame {
                    self.route(frame, caps, msg_type, payload);
                }
            }
        }
    }

    /// One registration of the restore phase is settled.
    fn restore_step(&mut self) {
        self.restoring = self.restoring.saturating_sub(1);
        if self.restoring == 0 {
            self.note_state();
        }
    }

    fn subscribed(&mut self, reg: usize, kind: MsgType, payload: &[u8]) {
        let Some(r) = self.regs.get_mut(reg) else { return };
        let restoring = core::mem::take(&mut r.restoring);
        if restoring {
            self.restore_step();
        }
        let Some(r) = self.regs.get_mut(reg) else { return };
        match decode_subscribed(kind, payload) {
            Ok(Ok(wire_id)) => {
                if r.locals == 0 {
                    r.wire_id = wire_id;
                    r.state = RegState::NeedUnsubscribe;
                    return;
                }
                r.wire_id = wire_id;
                r.state = RegState::Active;
                for l in self.locals.iter_mut() {
                    if l.target == Target::Reg(reg as u16) {
                        match l.state {
                            LocalState::Pending => {
                                l.state = LocalState::Active;
                                wake(&mut l.waker);
                            }
                            LocalState::Active if restoring => {
                                push(l, Item::Restored);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Ok(Err(fault)) => self.reg_failed(reg, Error::Server(fault)),
            Err(e) => self.reg_failed(reg, e),
        }
    }

    /// Registration `reg` could not be (re)made: its subscribers end with `e`.
    fn reg_failed(&mut self, reg: usize, e: Error) {
        if let Some(r) = self.regs.get_mut(reg) {
            let restoring = r.restoring;
            *r = free_reg();
            if restoring {
                self.restore_step();
            }
        }
        for l in self.locals.iter_mut() {
            if l.target == Target::Reg(reg as u16) && matches!(l.state, LocalState::Pending | LocalState::Active) {
                l.state = LocalState::Ended(Some(e.clone()));
                wake(&mut l.waker);
            }
        }
    }

    /// A subscriber of registration `reg` left.
    fn leave_reg(&mut self, reg: usize) {
        let Some(r) = self.regs.get_mut(reg) else { return };
        r.locals = r.locals.saturating_sub(1);
        if r.locals > 0 {
            return;
        }
        match r.state {
            RegState::Active => r.state = RegState::NeedUnsubscribe,
            // Never sent (or to be restored): nothing to undo on the wire.
            RegState::NeedSubscribe => {
                let restoring = r.restoring;
                *r = free_reg();
                if restoring {
                    self.restore_step();
                }
            }
            // The reply decides (see `subscribed`).
            RegState::Subscribing | RegState::NeedUnsubscribe | RegState::Free => {}
        }
    }

    fn free_local(&self) -> Option<usize> {
        self.locals.iter().position(|l| l.state == LocalState::Free)
    }

    fn take_local(&mut self, i: usize, target: Target, state: LocalState) -> SubId {
        let Some(l) = self.locals.get_mut(i) else { return SubId { index: u16::MAX, generation: 0, call: false } };
        let generation = l.generation.wrapping_add(1);
        *l = Local { state, generation, target, ..free_local() };
        SubId { index: i as u16, generation, call: false }
    }

    fn local_mut(&mut self, id: SubId) -> Option<&mut Local<P, Q>> {
        self.locals
            .get_mut(usize::from(id.index))
            .filter(|l| !id.call && l.generation == id.generation && l.state != LocalState::Free)
    }

    fn call_mut(&mut self, id: SubId) -> Option<&mut Local<P, CQ>> {
        self.calls
            .get_mut(usize::from(id.index))
            .filter(|l| id.call && l.generation == id.generation && l.state != LocalState::Free)
    }

    /// Routes a record nobody asked for: NOTIFY by subscription id, RPC
    /// REQUEST to the first worker whose pattern matches, RESPONSE by the
    /// call's UUID, lifecycle signals to workers and callers.
    fn route(&mut self, frame: &P, caps: Capabilities, ty: MsgType, payload: &[u8]) {
        match ty {
            MsgType::RPC_RESPONSE => {
                let Some(uuid) = rpc::peek_correlation_id(payload) else { return self.unmatched += 1 };
                let Ok(resp) = rpc::Response::decode(payload) else { return self.unmatched += 1 };
                let Some(l) = self.calls.iter_mut().find(|l| {
                    l.state == LocalState::Active && matches!(l.target, Target::Call { id, .. } if id == uuid)
                }) else {
                    return self.unmatched += 1;
                };
                if let Target::Call { next_seq, .. } = &mut l.target {
                    // Chunks arrive in sequence (WIRE.md §8.3); a gap is a
                    // broken call.
                    if resp.sequence != *next_seq {
                        l.state = LocalState::Ended(Some(Error::Decode(fitz_wire::DecodeError::OutOfRange(
                            "rpc response sequence",
                        ))));
                        wake(&mut l.waker);
                        return;
                    }
                    *next_seq += 1;
                }
                push(l, Item::Record { msg_type: ty, payload: frame.part(payload) });
                if resp.stream_end() && l.state == LocalState::Active {
                    l.state = LocalState::Ended(None);
                    if core::mem::take(&mut l.deadline) != 0 {
                        self.deadlines = self.deadlines.saturating_sub(1);
                    }
                }
            }
            MsgType::RPC_REQUEST => {
                let ext = caps.contains(Capabilities::RPC_CANCELLATION);
                let route = match rpc::Inbound::classify(payload, ext) {
                    Ok(rpc::Inbound::Request(req)) => req.route,
                    // Legacy ingress error: goes to the call it names.
                    Ok(rpc::Inbound::IngressError(_)) | Err(_) => return self.unmatched += 1,
                };
                // The most specific matching pattern serves (WIRE.md §8.3),
                // then its first active subscriber.
                let best = self
                    .regs
                    .iter()
                    .enumerate()
                    .filter(|(_, reg)| reg.kind == MsgType::RPC_SUBSCRIBE_WORKER && reg.state == RegState::Active)
                    .filter_map(|(i, reg)| {
                        let p = fitz_wire::Reader::new(&reg.body).str().ok()?;
                        fitz_wire::route::matches(p, route).then(|| (specificity(p), i))
                    })
                    .max_by_key(|(score, _)| *score)
                    .map(|(_, i)| i as u16);
                let Some(l) = best.and_then(|b| {
                    self.locals.iter_mut().find(|l| l.target == Target::Reg(b) && l.state == LocalState::Active)
                }) else {
                    return self.unmatched += 1;
                };
                let reg = match l.target {
                    Target::Reg(r) => usize::from(r),
                    Target::Call { .. } => return,
                };
                if !push(l, Item::Record { msg_type: ty, payload: frame.part(payload) }) {
                    self.leave_reg(reg);
                }
            }
            MsgType::RPC_LIFECYCLE => {
                let Ok(signal) = RpcLifecycle::decode(payload) else { return self.unmatched += 1 };
                match signal {
                    RpcLifecycle::CancelResult { correlation_id, status } => {
                        if let Some(l) = self.calls.iter_mut().find(|l| {
                            l.state == LocalState::Active
                                && matches!(l.target, Target::Call { id, .. } if id == correlation_id)
                        }) {
                            push(l, Item::Record { msg_type: ty, payload: frame.part(payload) });
                            // The broker took the cancel: the call is over
                            // (its handle must not cancel it again). A worker
                            // without cancellation support keeps running it.
                            if status != rpc::CancelStatus::WorkerUnsupported && l.state == LocalState::Active {
                                l.state = LocalState::Ended(Some(Error::Cancelled));
                                if core::mem::take(&mut l.deadline) != 0 {
                                    self.deadlines = self.deadlines.saturating_sub(1);
                                }
                            }
                        }
                    }
                    RpcLifecycle::Signal { .. } => {
                        // The invocation's worker is not named: every worker
                        // subscriber sees it and matches its invocations.
                        let regs = &self.regs;
                        for l in self.locals.iter_mut() {
                            if let Target::Reg(r) = l.target
                                && l.state == LocalState::Active
                                && regs.get(usize::from(r)).is_some_and(|reg| reg.kind == MsgType::RPC_SUBSCRIBE_WORKER)
                            {
                                push(l, Item::Record { msg_type: ty, payload: frame.part(payload) });
                            }
                        }
                    }
                }
            }
            _ => {
                let Some(kind) = subscribe_kind(ty) else { return self.unmatched += 1 };
                let Some(sub_id) = payload.first_chunk::<8>().map(|b| u64::from_be_bytes(*b)) else {
                    return self.unmatched += 1;
                };
                let Some(reg) =
                    self.regs.iter().position(|r| r.kind == kind && r.state == RegState::Active && r.wire_id == sub_id)
                else {
                    return self.unmatched += 1;
                };
                let (mut delivered, mut overflowed) = (false, 0);
                for l in self.locals.iter_mut() {
                    if l.target == Target::Reg(reg as u16) && l.state == LocalState::Active {
                        delivered = true;
                        if !push(l, Item::Record { msg_type: ty, payload: frame.part(payload) }) {
                            overflowed += 1;
                        }
                    }
                }
                if !delivered {
                    self.unmatched += 1;
                }
                // Subscribers that overflowed leave the registration.
                for _ in 0..overflowed {
                    self.leave_reg(reg);
                }
            }
        }
    }
}

/// Queues `item` for a subscriber; a full queue ends only this subscriber
/// with [`Error::Backpressure`] (returns false then). A call's deadline
/// stays armed: the timer clears it (keeping the count of armed deadlines
/// exact) and does not cancel a call that already ended.
fn push<P, const Q: usize>(l: &mut Local<P, Q>, item: Item<P>) -> bool {
    let ok = l.queue.push_back(item).is_ok();
    if !ok {
        l.state = LocalState::Ended(Some(Error::Backpressure));
    }
    wake(&mut l.waker);
    ok
}

fn poll_subscribed<P, const Q: usize>(l: &mut Local<P, Q>, cx: &Context<'_>) -> Poll<Result<(), Error>> {
    match &l.state {
        LocalState::Pending => {
            l.waker = Some(cx.waker().clone());
            Poll::Pending
        }
        LocalState::Active => Poll::Ready(Ok(())),
        LocalState::Ended(e) => Poll::Ready(Err(e.clone().unwrap_or(Error::Closed))),
        LocalState::Free => Poll::Ready(Err(Error::Closed)),
    }
}

fn poll_next<P, const Q: usize>(l: &mut Local<P, Q>, cx: &Context<'_>) -> Poll<Option<Result<Item<P>, Error>>> {
    if let Some(item) = l.queue.pop_front() {
        return Poll::Ready(Some(Ok(item)));
    }
    match &mut l.state {
        LocalState::Ended(e) => Poll::Ready(e.take().map(Err)),
        LocalState::Free => Poll::Ready(None),
        LocalState::Pending | LocalState::Active => {
            l.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}
