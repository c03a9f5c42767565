//! The sans-IO session.

use core::num::NonZeroU64;

use fitz_wire::control::{Connect, ServerHello};
use fitz_wire::frame::{self, LabelledRecords, Transport};
use fitz_wire::lease::AcquireStatus;
use fitz_wire::{Capabilities, Dialect, Encode, EncodeError, FrameError, MsgType, Payload, Reply};

/// Connection lifecycle, as in the reference client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum State {
    /// No transport.
    Disconnected,
    /// The binding is opening the transport.
    Connecting,
    /// The transport is open; CONNECT not yet sent.
    Connected,
    /// CONNECT sent; waiting out the settle window (or for SERVER_HELLO).
    Authenticating,
    /// Requests may be sent.
    Authenticated,
    /// The transport was lost; the binding is about to reconnect.
    Reconnecting,
    /// Closed for good ([`Session::close`]).
    Closed,
}

/// Which dialect to speak (WIRE.md §B1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DialectMode {
    /// SERVER_HELLO within the settle window → current, none → legacy.
    Auto,
    /// Never wait beyond the settle window; a SERVER_HELLO is a protocol error.
    Legacy,
    /// Wait for SERVER_HELLO up to the connect timeout; fail without it.
    Current,
}

/// Session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Transport framing of the frames the session writes.
    pub transport: Transport,
    /// Dialect selection.
    pub dialect: DialectMode,
    /// The authentication settle window (about 1 s, WIRE.md §5.3).
    pub settle_window_ms: u64,
    /// How long [`DialectMode::Current`] waits for SERVER_HELLO.
    pub connect_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            transport: Transport::Tcp,
            dialect: DialectMode::Auto,
            settle_window_ms: 1000,
            connect_timeout_ms: 10_000,
        }
    }
}

/// A request in flight. Valid for the connection it was sent on only: the
/// epoch changes on every connect, so a reply can never reach a request of
/// an earlier connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestId {
    slot: u16,
    generation: u32,
    epoch: u32,
}

impl RequestId {
    /// The slot index (below the session's `N`).
    pub const fn slot(&self) -> usize {
        self.slot as usize
    }

    /// The connection epoch the request was sent on.
    pub const fn epoch(&self) -> u32 {
        self.epoch
    }
}

/// Why a request could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RequestError {
    /// The session is not authenticated.
    NotReady,
    /// A request of this type is already outstanding and the session may not
    /// pipeline it (no `CAP_CORRELATION`, or a Lease ACQUIRE waiting for its
    /// deferred frame): wait for it and retry.
    Busy,
    /// All `N` slots are in use (pending requests or tombstones).
    Capacity,
    /// The frame could not be encoded (nothing was sent).
    Encode(EncodeError),
}

impl From<EncodeError> for RequestError {
    fn from(e: EncodeError) -> Self {
        RequestError::Encode(e)
    }
}

/// A frame from the broker that breaks the protocol: the binding closes the
/// connection (and reports it), then calls [`Session::handle_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProtocolError {
    /// Malformed framing or correlation label.
    Frame(FrameError),
    /// The first frame after CONNECT was not a SERVER_HELLO (current or auto
    /// dialect), or a SERVER_HELLO came when the legacy dialect was forced.
    UnexpectedFirstFrame(MsgType),
    /// A SERVER_HELLO shorter than 6 bytes.
    BadHello,
    /// The current dialect was forced and no SERVER_HELLO came within the
    /// connect timeout.
    NoHello,
    /// A labelled reply whose type is not its request's.
    LabelTypeMismatch {
        /// The request's type.
        expected: MsgType,
        /// The reply's type.
        got: MsgType,
    },
}

/// Why a request ended without its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FailReason {
    /// Its deadline passed (the slot stays a tombstone until the reply).
    TimedOut,
    /// The connection ended; the outcome is unknown.
    ConnectionLost,
}

/// What the session tells the binding and the domain layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event<'a> {
    /// The lifecycle state changed.
    State(State),
    /// Authentication succeeded in this dialect with these capabilities.
    Authenticated {
        /// Detected (or forced) dialect.
        dialect: Dialect,
        /// Capabilities of SERVER_HELLO (none in the legacy dialect).
        capabilities: Capabilities,
    },
    /// The reply to a request; decode `payload` with the operation's decoder.
    /// A queued Lease ACQUIRE gets two: the Queued answer, then the grant.
    Reply {
        /// The request.
        id: RequestId,
        /// The reply's type (the request's).
        msg_type: MsgType,
        /// The reply payload, borrowed from the received frame.
        payload: &'a [u8],
    },
    /// A request ended without its reply.
    Failed {
        /// The request.
        id: RequestId,
        /// Why.
        reason: FailReason,
    },
    /// A record nobody asked for: NOTIFY (first field = subscription id),
    /// RPC REQUEST to a worker (302), RPC RESPONSE to a caller (303),
    /// RPC_LIFECYCLE (305), or anything else that the domain layer routes.
    Push {
        /// The record's type.
        msg_type: MsgType,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The connection closed during authentication (or before any frame
    /// arrived): the token was probably rejected; do not retry with it.
    AuthenticationFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    busy: bool,
    msg_type: MsgType,
    labelled: bool,
    /// Cancelled or timed out: the reply is swallowed when it comes.
    tombstone: bool,
    /// A Lease ACQUIRE answered Queued: its second frame is still due.
    deferred: bool,
    /// Keep the slot after the reply until [`Session::cancel`] releases it
    /// (the binding stores the reply in a table indexed by slot).
    hold: bool,
    /// Held and answered: waiting for [`Session::cancel`].
    done: bool,
    /// 0 = none.
    deadline: u64,
    generation: u32,
}

const FREE: Slot = Slot {
    busy: false,
    msg_type: MsgType(0),
    labelled: false,
    tombstone: false,
    deferred: false,
    hold: false,
    done: false,
    deadline: 0,
    generation: 0,
};

/// Bits of a label: epoch (24) | generation (20) | slot + 1 (20).
const SLOT_BITS: u32 = 20;
const GEN_BITS: u32 = 20;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

/// The slots whose requests wait for a deadline, in a binary min-heap
/// keyed by deadline, with each slot's position in it: arming, disarming
/// and finding the next deadline cost O(log N) instead of a walk of every
/// slot per frame, and the heap holds exactly the armed slots.
#[derive(Debug, Clone)]
struct Timers<const N: usize> {
    /// Slot indices, heap-ordered by their deadline.
    heap: [u16; N],
    /// Where each slot is in `heap` (`NOT_ARMED` if it is not).
    pos: [u16; N],
    len: usize,
}

const NOT_ARMED: u16 = u16::MAX;

#[cfg(feature = "defmt")]
impl<const N: usize> defmt::Format for Timers<N> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Timers({=usize} armed)", self.len);
    }
}

impl<const N: usize> Timers<N> {
    const fn new() -> Self {
        Timers { heap: [0; N], pos: [NOT_ARMED; N], len: 0 }
    }

    fn key(slots: &[Slot], at: usize, heap: &[u16]) -> u64 {
        heap.get(at).and_then(|&i| slots.get(usize::from(i))).map_or(u64::MAX, |s| s.deadline)
    }

    /// The armed slot with the earliest deadline.
    fn first(&self) -> Option<usize> {
        (self.len > 0).then(|| self.heap.first().map(|&i| usize::from(i))).flatten()
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for at in [a, b] {
            if let Some(&slot) = self.heap.get(at)
                && let Some(p) = self.pos.get_mut(usize::from(slot))
            {
                *p = at as u16;
            }
        }
    }

    fn up(&mut self, slots: &[Slot], mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if Self::key(slots, at, &self.heap) >= Self::key(slots, parent, &self.heap) {
                break;
            }
            self.swap(at, parent);
            at = parent;
        }
    }

    fn down(&mut self, slots: &[Slot], mut at: usize) {
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut min = at;
            for c in [l, r] {
                if c < self.len && Self::key(slots, c, &self.heap) < Self::key(slots, min, &self.heap) {
                    min = c;
                }
            }
            if min == at {
                return;
            }
            self.swap(at, min);
            at = min;
        }
    }

    /// Brings `slot`'s entry in line with whether it waits for a deadline:
    /// added if it now does, removed if it no longer does.
    fn sync(&mut self, slots: &[Slot], slot: usize) {
        let armed = slots.get(slot).is_some_and(Slot::waits_deadline);
        let at = self.pos.get(slot).copied().unwrap_or(NOT_ARMED);
        if armed && at == NOT_ARMED {
            let (Some(h), Some(p)) = (self.heap.get_mut(self.len), self.pos.get_mut(slot)) else { return };
            *h = slot as u16;
            *p = self.len as u16;
            self.len += 1;
            self.up(slots, self.len - 1);
        } else if !armed && at != NOT_ARMED {
            let at = usize::from(at);
            let last = self.len - 1;
            self.swap(at, last);
            self.len = last;
            if let Some(p) = self.pos.get_mut(slot) {
                *p = NOT_ARMED;
            }
            if at < self.len {
                self.down(slots, at);
                self.up(slots, at);
            }
        }
    }

    fn clear(&mut self) {
        self.pos = [NOT_ARMED; N];
        self.len = 0;
    }
}

/// The sans-IO session with `N` request slots.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Session<const N: usize> {
    cfg: Config,
    state: State,
    dialect: Option<Dialect>,
    caps: Capabilities,
    /// When the settle window (or the HELLO wait) ends.
    auth_deadline: u64,
    /// Any frame received on this connection.
    heard: bool,
    epoch: u32,
    slots: [Slot; N],
    timers: Timers<N>,
}

impl<const N: usize> Session<N> {
    /// A disconnected session.
    pub const fn new(cfg: Config) -> Self {
        // Slot indices travel as u16 in RequestId and in 20 label bits.
        const { assert!(N > 0 && N <= u16::MAX as usize, "Session<N>: N must be 1..=65535") };
        Self {
            cfg,
            state: State::Disconnected,
            dialect: None,
            caps: Capabilities::NONE,
            auth_deadline: 0,
            heard: false,
            epoch: 0,
            slots: [FREE; N],
            timers: Timers::new(),
        }
    }

    /// The lifecycle state.
    pub const fn state(&self) -> State {
        self.state
    }

    /// The dialect of the current connection, once known.
    pub const fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// Capabilities of the current connection.
    pub const fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// Connection epoch: changes on every connect. Handles of an earlier
    /// epoch (transactions, queue items, leases) are stale.
    pub const fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The configuration.
    pub const fn config(&self) -> &Config {
        &self.cfg
    }

    fn set_state(&mut self, s: State, ev: &mut impl FnMut(Event<'_>)) {
        if self.state != s {
            self.state = s;
            ev(Event::State(s));
        }
    }

    /// The binding is opening a transport.
    pub fn connecting(&mut self, ev: &mut impl FnMut(Event<'_>)) {
        if self.state != State::Closed {
            self.set_state(State::Connecting, ev);
        }
    }

    /// The transport is open: writes CONNECT with `token` (fresh from the
    /// token provider for every connection) into `out` and starts the
    /// settle window. Returns the frame length.
    pub fn connected(
        &mut self,
        now: u64,
        token: &[u8],
        out: &mut [u8],
        ev: &mut impl FnMut(Event<'_>),
    ) -> Result<usize, EncodeError> {
        self.epoch = self.epoch.wrapping_add(1) & ((1 << 24) - 1);
        self.dialect = None;
        self.caps = Capabilities::NONE;
        self.heard = false;
        self.set_state(State::Connected, ev);
        let n = frame::encode_frame(self.cfg.transport, None, &Connect { token }, out)?;
        let wait = match self.cfg.dialect {
            DialectMode::Current => self.cfg.connect_timeout_ms,
            DialectMode::Auto | DialectMode::Legacy => self.cfg.settle_window_ms,
        };
        self.auth_deadline = now.saturating_add(wait);
        self.set_state(State::Authenticating, ev);
        Ok(n)
    }

    fn authenticated(&mut self, dialect: Dialect, caps: Capabilities, ev: &mut impl FnMut(Event<'_>)) {
        self.dialect = Some(dialect);
        self.caps = caps;
        self.set_state(State::Authenticated, ev);
        ev(Event::Authenticated { dialect, capabilities: caps });
    }

    /// The next instant [`Session::handle_timeout`] must run, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let auth = (self.state == State::Authenticating).then_some(self.auth_deadline);
        let slots = self.timers.first().and_then(|i| self.slots.get(i)).map(|s| s.deadline);
        match (auth, slots) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs what is due at `now`: the end of the settle window, request
    /// deadlines. An `Err` means the connection must be closed (forced
    /// current dialect without SERVER_HELLO).
    pub fn handle_timeout(&mut self, now: u64, ev: &mut impl FnMut(Event<'_>)) -> Result<(), ProtocolError> {
        if self.state == State::Authenticating && now >= self.auth_deadline {
            match self.cfg.dialect {
                DialectMode::Current => return Err(ProtocolError::NoHello),
                DialectMode::Auto | DialectMode::Legacy => {
                    self.authenticated(Dialect::Legacy, Capabilities::NONE, ev);
                }
            }
        }
        let epoch = self.epoch;
        while let Some(slot) = self.timers.first() {
            let Some(s) = self.slots.get_mut(slot).filter(|s| s.deadline <= now) else { break };
            s.tombstone = true;
            let id = RequestId { slot: slot as u16, generation: s.generation, epoch };
            self.timers.sync(&self.slots, slot);
            ev(Event::Failed { id, reason: FailReason::TimedOut });
        }
        Ok(())
    }

    /// True if a request of `msg_type` would be labelled (pipelined).
    pub fn labels(&self, msg_type: MsgType) -> bool {
        self.dialect == Some(Dialect::Current)
            && self.caps.contains(Capabilities::CORRELATION)
            && msg_type.is_labelable()
    }

    /// Starts a request: takes a slot, writes the frame (labelled when the
    /// session correlates) into `out` and returns the request and the frame
    /// length. `timeout_ms` 0 = no deadline (the caller's own timer).
    pub fn request<E: Encode + ?Sized>(
        &mut self,
        now: u64,
        msg: &E,
        timeout_ms: u64,
        out: &mut [u8],
    ) -> Result<(RequestId, usize), RequestError> {
        self.request_with(now, msg, timeout_ms, false, out)
    }

    /// [`Session::request`], and with `hold` the slot stays taken after its
    /// reply until [`Session::cancel`] releases it, so a binding can keep
    /// the reply in a table indexed by slot until its consumer collects it.
    pub fn request_with<E: Encode + ?Sized>(
        &mut self,
        now: u64,
        msg: &E,
        timeout_ms: u64,
        hold: bool,
        out: &mut [u8],
    ) -> Result<(RequestId, usize), RequestError> {
        if self.state != State::Authenticated {
            return Err(RequestError::NotReady);
        }
        let msg_type = msg.msg_type();
        let labelled = self.labels(msg_type);
        if !labelled && self.slots.iter().any(|s| s.busy && !s.done && !s.labelled && s.msg_type == msg_type) {
            return Err(RequestError::Busy);
        }
        let slot = self.slots.iter().position(|s| !s.busy).ok_or(RequestError::Capacity)?;
        let generation = self.slots.get(slot).map_or(0, |s| (s.generation.wrapping_add(1)) & GEN_MASK as u32);
        let id = RequestId { slot: slot as u16, generation, epoch: self.epoch };
        let label = labelled.then(|| (MsgType::CORRELATE, label_of(id)));
        let n = frame::encode_frame(self.cfg.transport, label, msg, out)?;
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Slot {
                busy: true,
                msg_type,
                labelled,
                tombstone: false,
                deferred: false,
                hold,
                done: false,
                deadline: if timeout_ms == 0 { 0 } else { now.saturating_add(timeout_ms) },
                generation,
            };
        }
        self.timers.sync(&self.slots, slot);
        Ok((id, n))
    }

    /// Writes a message that has no reply (Notice PUBLISH, RPC REQUEST and
    /// RESPONSE, RPC_CANCEL, SESSION_METADATA): never labelled.
    pub fn send<E: Encode + ?Sized>(&self, msg: &E, out: &mut [u8]) -> Result<usize, RequestError> {
        if self.state != State::Authenticated {
            return Err(RequestError::NotReady);
        }
        Ok(frame::encode_frame(self.cfg.transport, None, msg, out)?)
    }

    /// Gives up waiting for `id`: its slot becomes a tombstone that swallows
    /// the reply when it comes (it is never delivered to a later request).
    /// A held slot that was already answered is released.
    pub fn cancel(&mut self, id: RequestId) {
        let epoch = self.epoch;
        let Some(s) = self.slots.get_mut(id.slot()).filter(|s| s.busy && s.generation == id.generation) else {
            return;
        };
        if s.done {
            // Answered slots outlive their connection (the reply is kept).
            *s = Slot { generation: s.generation, ..FREE };
        } else if id.epoch == epoch {
            s.tombstone = true;
        }
        self.timers.sync(&self.slots, id.slot());
    }

    /// Number of slots in use (pending requests and tombstones).
    pub fn in_use(&self) -> usize {
        self.slots.iter().filter(|s| s.busy).count()
    }

    /// Handles one transport frame (without the TCP prefix).
    pub fn handle_frame(
        &mut self,
        now: u64,
        frame: &[u8],
        ev: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let _ = now;
        self.heard = true;
        if self.state == State::Authenticating {
            return self.first_frame(frame, ev);
        }
        for rec in LabelledRecords::from_broker(frame) {
            let rec = rec.map_err(ProtocolError::Frame)?;
            let (ty, payload) = (rec.record.msg_type, rec.record.payload);
            if let Some(label) = rec.label {
                // Cancelled requests and queued ACQUIREs keep their slots, so
                // a label that matches none is not ours: never hand it to an
                // unlabelled request of the same type.
                match self.slot_of_label(label) {
                    Some(slot) => self.complete(slot, ty, payload, ev)?,
                    None => ev(Event::Push { msg_type: ty, payload }),
                }
                continue;
            }
            if ty == MsgType::SERVER_HELLO {
                // Brokers send one; a later one is ignored (WIRE.md §B2).
                continue;
            }
            if ty.is_notify() || matches!(ty.0, 302 | 303 | 305) {
                ev(Event::Push { msg_type: ty, payload });
                continue;
            }
            match self.unlabelled_slot(ty) {
                Some(slot) => self.complete(slot, ty, payload, ev)?,
                None => ev(Event::Push { msg_type: ty, payload }),
            }
        }
        Ok(())
    }

    fn first_frame(&mut self, frame: &[u8], ev: &mut impl FnMut(Event<'_>)) -> Result<(), ProtocolError> {
        let mut records = LabelledRecords::from_broker(frame);
        let first = records.next().ok_or(ProtocolError::BadHello)?.map_err(ProtocolError::Frame)?;
        if first.record.msg_type != MsgType::SERVER_HELLO || first.label.is_some() {
            return Err(ProtocolError::UnexpectedFirstFrame(first.record.msg_type));
        }
        if self.cfg.dialect == DialectMode::Legacy {
            return Err(ProtocolError::UnexpectedFirstFrame(MsgType::SERVER_HELLO));
        }
        let hello = ServerHello::decode(first.record.payload).map_err(|_| ProtocolError::BadHello)?;
        self.authenticated(Dialect::Current, hello.capabilities, ev);
        // Anything after the HELLO in the same frame is handled normally.
        let rest = records.map(|r| r.map(|l| l.record));
        for r in rest {
            let r = r.map_err(ProtocolError::Frame)?;
            ev(Event::Push { msg_type: r.msg_type, payload: r.payload });
        }
        Ok(())
    }

    fn slot_of_label(&self, label: NonZeroU64) -> Option<usize> {
        let v = label.get();
        let slot = usize::try_from((v & SLOT_MASK).checked_sub(1)?).ok()?;
        let generation = ((v >> SLOT_BITS) & GEN_MASK) as u32;
        let epoch = (v >> (SLOT_BITS + GEN_BITS)) as u32;
        let s = self.slots.get(slot)?;
        (epoch == self.epoch && s.busy && !s.done && s.labelled && s.generation == generation).then_some(slot)
    }

    fn unlabelled_slot(&self, ty: MsgType) -> Option<usize> {
        self.slots.iter().position(|s| s.busy && !s.done && !s.labelled && s.msg_type == ty)
    }

    fn complete(
        &mut self,
        slot: usize,
        ty: MsgType,
        payload: &[u8],
        ev: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let Some(s) = self.slots.get_mut(slot) else { return Ok(()) };
        if s.msg_type != ty {
            return Err(ProtocolError::LabelTypeMismatch { expected: s.msg_type, got: ty });
        }
        let id = RequestId { slot: slot as u16, generation: s.generation, epoch: self.epoch };
        // A Queued/AlreadyQueued ACQUIRE keeps its slot for the deferred
        // frame (WIRE.md §8.4): no other ACQUIRE may be sent unlabelled.
        let queued = ty == MsgType::LEASE_ACQUIRE
            && !s.deferred
            && matches!(
                fitz_wire::lease::decode_acquire_reply(payload),
                Ok(Reply::Ok(ok)) if matches!(ok.status, AcquireStatus::Queued | AcquireStatus::AlreadyQueued)
            );
        let deliver = !s.tombstone;
        if queued {
            s.deferred = true;
        } else if deliver && s.hold {
            s.done = true;
            s.deferred = false;
        } else {
            *s = Slot { generation: s.generation, ..FREE };
        }
        self.timers.sync(&self.slots, slot);
        if deliver {
            ev(Event::Reply { id, msg_type: ty, payload });
        }
        Ok(())
    }

    /// The transport closed (or the binding closed it). Every pending
    /// request fails; if authentication had not completed, or nothing was
    /// ever received on this connection, the token was probably rejected.
    pub fn handle_close(&mut self, ev: &mut impl FnMut(Event<'_>)) {
        // A legacy broker confirms nothing: a close before any frame ever
        // arrived on this connection is classified like a close inside the
        // window (WIRE.md §5.3).
        let auth_failure = self.state == State::Authenticating || (self.state == State::Authenticated && !self.heard);
        let epoch = self.epoch;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.busy && !s.done {
                let id = RequestId { slot: i as u16, generation: s.generation, epoch };
                let deliver = !s.tombstone;
                *s = Slot { generation: s.generation, ..FREE };
                if deliver {
                    ev(Event::Failed { id, reason: FailReason::ConnectionLost });
                }
            }
        }
        // No request of this connection waits for a deadline any more.
        self.timers.clear();
        if auth_failure {
            ev(Event::AuthenticationFailed);
        }
        if self.state != State::Closed {
            self.set_state(State::Reconnecting, ev);
        }
    }

    /// Ends the session for good: pending requests fail.
    pub fn close(&mut self, ev: &mut impl FnMut(Event<'_>)) {
        self.handle_close(ev);
        self.set_state(State::Closed, ev);
    }

    /// Marks the session disconnected without reconnecting (the binding
    /// gave up); a later [`Session::connecting`] starts over.
    pub fn disconnected(&mut self, ev: &mut impl FnMut(Event<'_>)) {
        if self.state != State::Closed {
            self.set_state(State::Disconnected, ev);
        }
    }
}

impl Slot {
    /// Pending with a deadline that still matters.
    fn waits_deadline(&self) -> bool {
        self.busy && !self.done && !self.tombstone && self.deadline != 0
    }
}

fn label_of(id: RequestId) -> NonZeroU64 {
    let v = (u64::from(id.epoch) << (SLOT_BITS + GEN_BITS))
        | ((u64::from(id.generation) & GEN_MASK) << SLOT_BITS)
        | (u64::from(id.slot) + 1);
    // slot + 1 ≥ 1, so the value is never 0.
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}
