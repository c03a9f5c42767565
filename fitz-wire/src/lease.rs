//! Leases, types 400–410 (WIRE.md §8.4, current dialect §B9).
//!
//! Every reply uses the coded error envelope. The layouts are the same in
//! both dialects; the current dialect adds LIST (410) and lets SUBSCRIBE /
//! UNSUBSCRIBE carry wildcard selectors ([`selector_allowed`]).
//!
//! A contended ACQUIRE with `wait_seconds > 0` is answered twice on type
//! 400: first [`AcquireStatus::Queued`] (or `AlreadyQueued`), later the
//! deferred result, which [`decode_acquire_deferred`] reads with its
//! stricter rule (only `Acquired` or `AlreadyHeld`, or a coded error).

use crate::codec::{
    Field, List as CountedList, ListIter, Message, Payload, Reader, Sink, wire_enum, wire_message, wire_struct,
};
use crate::error::{DecodeError, EncodeError, Reply, StatusSet};
use crate::route::{self, Scheme};
use crate::{Dialect, MsgType};

/// Longest `owner_id` the broker accepts, in bytes (WIRE.md §8.4, C12).
pub const MAX_OWNER_ID_LEN: usize = 512;

/// Largest `wait_seconds` of ACQUIRE; larger values are rejected by the
/// broker with 5008, not clamped (WIRE.md §8.4, C55).
pub const MAX_WAIT_SECONDS: u32 = 30;

wire_enum! {
    /// `response_type` of an ACQUIRE OK.
    pub enum AcquireStatus: "lease response type" {
        /// Granted; the token is valid.
        Acquired = 0,
        /// This owner already holds the lease; the token is valid.
        AlreadyHeld = 1,
        /// Waiting in the FIFO queue; a deferred 400 frame will follow.
        Queued = 2,
        /// Already waiting; a deferred 400 frame will follow.
        AlreadyQueued = 3,
    }
}

impl AcquireStatus {
    /// True for `Queued` and `AlreadyQueued`: the token is provisional and
    /// the final result arrives in a second type-400 frame.
    pub const fn is_queued(self) -> bool {
        matches!(self, AcquireStatus::Queued | AcquireStatus::AlreadyQueued)
    }
}

wire_message! {
    /// ACQUIRE (400). OK: [`AcquireOk`], then, if queued, a deferred frame
    /// read with [`decode_acquire_deferred`].
    ///
    /// Decoding accepts any values (the broker answers out-of-range ones
    /// with 5008); [`Acquire::validate`] is the check a client makes before
    /// sending and a broker makes before touching lease state.
    pub struct Acquire<'a> = MsgType::LEASE_ACQUIRE;
    {
        /// Exact `lease://realm/area/resource`.
        pub route: &'a str,
        /// Holder identity, at most [`MAX_OWNER_ID_LEN`] bytes (may be empty).
        pub owner_id: &'a str,
        /// Lease lifetime in seconds, > 0.
        pub ttl_secs: u64,
        /// 0 = fail at once if held; 1–30 = queue and wait.
        pub wait_seconds: u32,
    }
}

impl Acquire<'_> {
    /// Checks the limits of WIRE.md §8.4: `owner_id` at most 512 bytes,
    /// `wait_seconds` at most 30 and `ttl_secs` non-zero. A client refuses
    /// to send a request that fails this; a broker answers it with 5008.
    pub const fn validate(&self) -> Result<(), EncodeError> {
        if self.owner_id.len() > MAX_OWNER_ID_LEN {
            return Err(EncodeError::InvalidValue("lease owner_id longer than 512 bytes"));
        }
        if self.wait_seconds > MAX_WAIT_SECONDS {
            return Err(EncodeError::InvalidValue("lease wait_seconds above 30"));
        }
        if self.ttl_secs == 0 {
            return Err(EncodeError::InvalidValue("lease ttl_secs of 0"));
        }
        Ok(())
    }

    /// [`Acquire::validate`], then [`crate::record::encode`]: writes the
    /// record at the start of `buf` and returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        self.validate()?;
        crate::record::encode(self, buf)
    }
}

wire_message! {
    /// RENEW (401, EXTEND in some clients). OK: [`RenewOk`].
    pub struct Renew<'a> = MsgType::LEASE_RENEW;
    {
        /// Exact route of the lease.
        pub route: &'a str,
        /// The owner given to ACQUIRE.
        pub owner_id: &'a str,
        /// The current fencing token.
        pub fencing_token: u64,
        /// New lifetime in seconds, counted from now.
        pub ttl_secs: u64,
    }
}

wire_message! {
    /// RELEASE (402). OK: empty ([`decode_ack_reply`]).
    pub struct Release<'a> = MsgType::LEASE_RELEASE;
    {
        /// Exact route of the lease.
        pub route: &'a str,
        /// The owner given to ACQUIRE.
        pub owner_id: &'a str,
        /// The current fencing token.
        pub fencing_token: u64,
    }
}

wire_message! {
    /// QUERY (403). OK: [`LeaseState`].
    pub struct Query<'a> = MsgType::LEASE_QUERY;
    {
        /// Exact route of the lease.
        pub route: &'a str,
    }
}

wire_message! {
    /// SUBSCRIBE (407). OK: [`SubscribeOk`] (a bare id, no flag byte).
    pub struct Subscribe<'a> = MsgType::LEASE_SUBSCRIBE;
    {
        /// Exact route (legacy dialect) or selector (current dialect); see
        /// [`selector_allowed`].
        pub route: &'a str,
    }
}

wire_message! {
    /// UNSUBSCRIBE (408), by the original string. OK: empty
    /// ([`decode_ack_reply`]).
    pub struct Unsubscribe<'a> = MsgType::LEASE_UNSUBSCRIBE;
    {
        /// The string given to SUBSCRIBE.
        pub route: &'a str,
    }
}

/// NOTIFY (409, broker → client): the holders of a lease changed.
///
/// The trailing `bytes payload` is always empty today; a decoder rejects a
/// non-empty one (WIRE.md §8.4, C59). It is kept as a field so that a
/// decoded value re-encodes to exactly the bytes received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Notify<'a> {
    /// Subscription id.
    pub sub_id: u64,
    /// The concrete route whose holders changed (also for wildcard watches).
    pub route: &'a str,
    /// Reserved; empty on the wire.
    pub payload: &'a [u8],
}

impl<'a> Notify<'a> {
    /// A notification with the (empty) payload brokers send.
    pub const fn new(sub_id: u64, route: &'a str) -> Self {
        Self { sub_id, route, payload: &[] }
    }
}

impl<'a> Payload<'a> for Notify<'a> {
    fn payload_len(&self) -> usize {
        8 + self.route.wire_len() + self.payload.wire_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.sub_id);
        self.route.write(out);
        self.payload.write(out);
    }
    /// Rejects a non-empty payload with [`DecodeError::OutOfRange`].
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let sub_id = r.u64()?;
        let route = r.str()?;
        let payload = r.bytes()?;
        if !payload.is_empty() {
            return Err(DecodeError::OutOfRange("lease notify payload (must be empty)"));
        }
        Ok(Notify { sub_id, route, payload })
    }
}

impl Message for Notify<'_> {
    const TYPE: MsgType = MsgType::LEASE_NOTIFY;
}

/// A LIST position: the `snapshot_id` and `offset` a page returned, sent
/// back verbatim (with the same pattern) to read the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ListCursor {
    /// The broker's point-in-time snapshot.
    pub snapshot_id: u64,
    /// Position inside the snapshot.
    pub offset: u32,
}

impl<'a> Field<'a> for ListCursor {
    fn wire_len(&self) -> usize {
        12
    }
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.snapshot_id);
        out.put_u32(self.offset);
    }
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ListCursor { snapshot_id: r.u64()?, offset: r.u32()? })
    }
}

/// Reads `u8 flag` (0 or 1, else malformed as `field`) and, when 1, a cursor.
fn read_cursor(r: &mut Reader<'_>, field: &'static str) -> Result<Option<ListCursor>, DecodeError> {
    if r.flag(field)? { r.field().map(Some) } else { Ok(None) }
}

/// LIST (410, current dialect only). OK: [`ListOk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct List<'a> {
    /// Exact route or a selector able to match three segments.
    pub pattern: &'a str,
    /// `None` for the first page, else the previous page's [`ListOk::next`].
    pub cursor: Option<ListCursor>,
    /// Page size: 0 = the broker's default (100); clamped to 500.
    pub limit: u32,
}

impl<'a> Payload<'a> for List<'a> {
    fn payload_len(&self) -> usize {
        self.pattern.wire_len() + self.cursor.wire_len() + 4
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.pattern.write(out);
        self.cursor.write(out);
        out.put_u32(self.limit);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let pattern = r.str()?;
        let cursor = read_cursor(r, "lease list has_cursor")?;
        let limit = r.u32()?;
        Ok(List { pattern, cursor, limit })
    }
}

impl Message for List<'_> {
    const TYPE: MsgType = MsgType::LEASE_LIST;
}

wire_struct! {
    /// ACQUIRE OK (and the deferred result of a queued ACQUIRE).
    pub struct AcquireOk {
        /// Outcome.
        pub status: AcquireStatus,
        /// Fencing token; provisional (ignore it) when `status` is queued.
        pub fencing_token: u64,
    }
}

impl AcquireOk {
    /// The fencing token of a grant, `None` while queued.
    pub const fn granted_token(&self) -> Option<u64> {
        if self.status.is_queued() { None } else { Some(self.fencing_token) }
    }
}

wire_struct! {
    /// RENEW OK: the token to store from now on (it may have changed, C14).
    pub struct RenewOk {
        /// New fencing token.
        pub fencing_token: u64,
    }
}

wire_struct! {
    /// SUBSCRIBE OK: the id, without a flag byte.
    pub struct SubscribeOk {
        /// Subscription id.
        pub sub_id: u64,
    }
}

/// QUERY OK: `u8 0, u32 waiters` (free) or
/// `u8 1, str owner, u64 ttl_remaining, u32 waiters` (held). Any other
/// first byte is malformed. The fencing token is never revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LeaseState<'a> {
    /// Nobody holds the lease.
    Free {
        /// Queued acquisitions (0 in practice).
        pending_waiters: u32,
    },
    /// The lease is held.
    Held {
        /// The holder as the broker reports it (session-scoped, ends with
        /// the `owner_id` given to ACQUIRE).
        owner_id: &'a str,
        /// Remaining lifetime in whole seconds.
        ttl_remaining_secs: u64,
        /// Queued acquisitions.
        pending_waiters: u32,
    },
}

impl<'a> LeaseState<'a> {
    /// True for [`LeaseState::Held`].
    pub const fn is_held(&self) -> bool {
        matches!(self, LeaseState::Held { .. })
    }

    /// Queued acquisitions, in either state.
    pub const fn pending_waiters(&self) -> u32 {
        match *self {
            LeaseState::Free { pending_waiters } | LeaseState::Held { pending_waiters, .. } => pending_waiters,
        }
    }

    /// The holder, if held.
    pub const fn owner_id(&self) -> Option<&'a str> {
        match *self {
            LeaseState::Held { owner_id, .. } => Some(owner_id),
            LeaseState::Free { .. } => None,
        }
    }

    /// Remaining lifetime, if held.
    pub const fn ttl_remaining_secs(&self) -> Option<u64> {
        match *self {
            LeaseState::Held { ttl_remaining_secs, .. } => Some(ttl_remaining_secs),
            LeaseState::Free { .. } => None,
        }
    }
}

impl<'a> Payload<'a> for LeaseState<'a> {
    fn payload_len(&self) -> usize {
        match self {
            LeaseState::Free { .. } => 1 + 4,
            LeaseState::Held { owner_id, .. } => 1 + owner_id.wire_len() + 8 + 4,
        }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        match *self {
            LeaseState::Free { pending_waiters } => {
                out.put_u8(0);
                out.put_u32(pending_waiters);
            }
            LeaseState::Held { owner_id, ttl_remaining_secs, pending_waiters } => {
                out.put_u8(1);
                owner_id.write(out);
                out.put_u64(ttl_remaining_secs);
                out.put_u32(pending_waiters);
            }
        }
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(LeaseState::Free { pending_waiters: r.u32()? }),
            1 => Ok(LeaseState::Held { owner_id: r.str()?, ttl_remaining_secs: r.u64()?, pending_waiters: r.u32()? }),
            value => Err(DecodeError::InvalidValue { field: "lease query held flag", value }),
        }
    }
}

wire_struct! {
    /// One held lease of a LIST page.
    pub struct ListItem<'a> {
        /// Concrete route.
        pub route: &'a str,
        /// The `owner_id` given to ACQUIRE.
        pub owner_id: &'a str,
        /// Opaque, stable for one holder session, different across sessions.
        pub holder_incarnation: u64,
        /// RFC 3339 timestamp of the acquisition (not parsed here).
        pub acquired_at: &'a str,
        /// Remaining lifetime in seconds.
        pub expires_in_secs: u64,
        /// Successful renewals.
        pub renewals: u32,
    }
}

/// LIST OK: `u32 count`, `count` × [`ListItem`], `u8 has_next` and, when it
/// is 1, the cursor of the next page. The items are validated when decoded
/// and iterated lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ListOk<'a> {
    /// The held leases of this page.
    pub items: ListItems<'a>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListCursor>,
}

/// The items of a LIST page, borrowed from the payload. Build one with
/// `ListItems::write_into(items, (), buf)` ([`CountedList::write_into`]).
pub type ListItems<'a> = CountedList<'a, ListItem<'a>, ()>;

/// Iterator over the items of a [`ListItems`].
pub type ListItemsIter<'a> = ListIter<'a, ListItem<'a>, ()>;

impl<'a> Payload<'a> for ListOk<'a> {
    fn payload_len(&self) -> usize {
        4 + self.items.wire_len() + self.next.wire_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.items.write(out);
        self.next.write(out);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let items = ListItems::read(r, ())?;
        let next = read_cursor(r, "lease list has_next")?;
        Ok(ListOk { items, next })
    }
}

/// True if `selector` may be sent in SUBSCRIBE / UNSUBSCRIBE (and, in the
/// current dialect, LIST) of `dialect`: an exact three-segment `lease://`
/// route in both dialects, or a whole-segment `*` / `**` selector able to
/// match three segments in the current one. The broker stays authoritative.
pub fn selector_allowed(selector: &str, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Legacy => route::is_concrete(selector, Scheme::Lease, 3),
        Dialect::Current => route::is_valid_pattern(selector, Scheme::Lease, Some(3)),
    }
}

/// Decodes the first reply to ACQUIRE (any of the four response types).
pub fn decode_acquire_reply(payload: &[u8]) -> Result<Reply<'_, AcquireOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the deferred type-400 frame that ends a queued ACQUIRE: a grant
/// (`Acquired` or `AlreadyHeld`) or a coded error. A second queued answer
/// is malformed (WIRE.md §8.4).
pub fn decode_acquire_deferred(payload: &[u8]) -> Result<Reply<'_, AcquireOk>, DecodeError> {
    Reply::decode_with(payload, StatusSet::Standard, |r| {
        let ok = AcquireOk::read_payload(r)?;
        if ok.status.is_queued() {
            return Err(DecodeError::InvalidValue { field: "lease deferred response type", value: ok.status.to_u8() });
        }
        Ok(ok)
    })
}

/// Decodes the reply to RENEW.
pub fn decode_renew_reply(payload: &[u8]) -> Result<Reply<'_, RenewOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to QUERY.
pub fn decode_query_reply(payload: &[u8]) -> Result<Reply<'_, LeaseState<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to SUBSCRIBE.
pub fn decode_subscribe_reply(payload: &[u8]) -> Result<Reply<'_, SubscribeOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to LIST.
pub fn decode_list_reply(payload: &[u8]) -> Result<Reply<'_, ListOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes a reply with no success fields (RELEASE, UNSUBSCRIBE).
pub fn decode_ack_reply(payload: &[u8]) -> Result<Reply<'_, ()>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Runs every Lease decoder over `payload` and walks every lazy iterator,
/// discarding the results. For fuzz targets and property tests: it must
/// never panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    if let Ok(a) = Acquire::decode(payload) {
        let _ = a.validate();
    }
    let _ = Renew::decode(payload);
    let _ = Release::decode(payload);
    let _ = Query::decode(payload);
    let _ = Subscribe::decode(payload);
    let _ = Unsubscribe::decode(payload);
    let _ = Notify::decode(payload);
    let _ = List::decode(payload);
    let _ = decode_acquire_reply(payload);
    let _ = decode_acquire_deferred(payload);
    let _ = decode_renew_reply(payload);
    let _ = decode_query_reply(payload);
    let _ = decode_subscribe_reply(payload);
    if let Ok(Reply::Ok(list)) = decode_list_reply(payload) {
        for item in list.items {
            let _ = item;
        }
    }
    let _ = decode_ack_reply(payload);
    // The page view over arbitrary bytes, as a broker-side re-check would build it.
    if let Some((head, rest)) = payload.split_first_chunk::<4>()
        && let Ok(items) = ListItems::from_wire(u32::from_be_bytes(*head), rest, ())
    {
        for item in items {
            let _ = item;
        }
    }
    if let Ok(s) = core::str::from_utf8(payload) {
        for d in [Dialect::Legacy, Dialect::Current] {
            let _ = selector_allowed(s, d);
        }
    }
}
