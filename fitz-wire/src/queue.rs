//! Work queue, types 200–209 (WIRE.md §8.2, current dialect §B7).
//!
//! ENQUEUE and RESERVE answer errors with the coded envelope; EXTEND,
//! COMPLETE, SUBSCRIBE and UNSUBSCRIBE with the uncoded one, except for
//! pre-dispatch errors and the current dialect's 4005/4007 on EXTEND and
//! COMPLETE, which are coded. Every reply decoder applies the length test of
//! WIRE.md §6.2, so it accepts both shapes; [`domain_error_envelope`] says
//! which one a broker emits for a domain error.
//!
//! Two layouts depend on context:
//!
//! - RESERVE items carry their concrete route only when the request route
//!   contains `*` ([`ReserveLayout`], [`decode_reserve_reply`]).
//! - NOTIFY counters arrive inline (what brokers send) or wrapped in a
//!   `bytes` (the compatibility form cntryl-fitz 0.2.0 reads, C45);
//!   [`Notify`] accepts both and remembers which ([`CountersForm`]).

use crate::MsgType;
use crate::codec::{Field, List, ListIter, Message, Payload, Reader, Sink, flagged_sub_id, wire_message, wire_struct};
use crate::error::{DecodeError, EncodeError, Envelope, Reply, StatusSet};
use crate::route::{Scheme, is_concrete};

wire_message! {
    /// ENQUEUE (200). OK: [`EnqueueOk`]. Errors: coded (4005 = queue full).
    pub struct Enqueue<'a> = MsgType::QUEUE_ENQUEUE;
    {
        /// Exact `queue://realm/area/resource`.
        pub route: &'a str,
        /// Message body (binary-safe).
        pub body: &'a [u8],
        /// Delay before the message becomes ready. Clients send `None` for
        /// no delay and never `Some(0)` (see [`Enqueue::new`]).
        pub delay_seconds: Option<u64>,
    }
}

impl<'a> Enqueue<'a> {
    /// ENQUEUE with a delay in seconds, `0` meaning none (sent as absent,
    /// never as present-with-0, WIRE.md §8.2).
    pub const fn new(route: &'a str, body: &'a [u8], delay_seconds: u64) -> Self {
        let delay_seconds = if delay_seconds == 0 { None } else { Some(delay_seconds) };
        Self { route, body, delay_seconds }
    }
}

wire_message! {
    /// RESERVE (202). OK: [`ReserveOk`], whose item layout depends on
    /// [`Reserve::layout`]. Errors: coded.
    pub struct Reserve<'a> = MsgType::QUEUE_RESERVE;
    {
        /// Exact route, or a wildcard pattern able to match three segments.
        pub route: &'a str,
        /// Reservation (visibility) time.
        pub lease_seconds: u64,
        /// Items wanted, 1…1024. fitz-rs/fitz-py always send it (default 1),
        /// fitz-ts omits it when unset; both encodings are valid (C31).
        pub batch_size: Option<u32>,
        /// Long-poll time; clients send `None` for 0.
        pub wait_seconds: Option<u64>,
    }
}

impl Reserve<'_> {
    /// The item layout of the reply to this request.
    pub fn layout(&self) -> ReserveLayout {
        ReserveLayout::for_route(self.route)
    }
}

wire_message! {
    /// EXTEND (203): extends a reservation. OK: empty. Errors: uncoded
    /// (coded 4005/4007 from current brokers, §B7).
    pub struct Extend<'a> = MsgType::QUEUE_EXTEND;
    {
        /// Exact route; for wildcard reservations the item's concrete route.
        pub route: &'a str,
        /// The reserved message.
        pub message_id: u64,
        /// The reservation's token.
        pub lease_token: u64,
        /// New reservation time.
        pub lease_seconds: u64,
    }
}

wire_message! {
    /// COMPLETE (204): acknowledges and deletes a reserved message. OK:
    /// empty. Errors: uncoded (coded 4005/4007 from current brokers, §B7).
    pub struct Complete<'a> = MsgType::QUEUE_COMPLETE;
    {
        /// Exact route; for wildcard reservations the item's concrete route.
        pub route: &'a str,
        /// The reserved message.
        pub message_id: u64,
        /// The reservation's token.
        pub lease_token: u64,
    }
}

wire_message! {
    /// SUBSCRIBE (207, availability). OK: [`SubscribeOk`]. Errors: uncoded
    /// (4010/4011 arrive as text only). Idempotent.
    pub struct Subscribe<'a> = MsgType::QUEUE_SUBSCRIBE;
    {
        /// Pattern able to match three segments.
        pub pattern: &'a str,
    }
}

wire_message! {
    /// UNSUBSCRIBE (208), by the original pattern string. OK: empty.
    /// Errors: uncoded. Idempotent.
    pub struct Unsubscribe<'a> = MsgType::QUEUE_UNSUBSCRIBE;
    {
        /// The string given to SUBSCRIBE.
        pub pattern: &'a str,
    }
}

/// How the three NOTIFY counters follow the route (WIRE.md §B7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CountersForm {
    /// Three `u64` directly after the route (24 bytes): what brokers send.
    Inline,
    /// The same 24 bytes as a `bytes` field (`00 00 00 18` + 24 bytes): the
    /// only form cntryl-fitz 0.2.0 reads (C45).
    Wrapped,
}

/// NOTIFY (209, broker → client): point-in-time counts of a queue matching a
/// subscription (hints only).
///
/// Decoding accepts both [`CountersForm`]s, telling them apart by what
/// follows the route: exactly 24 bytes (inline) or exactly 28 bytes starting
/// with `00 00 00 18` (wrapped); anything else is malformed. Encoding writes
/// `form`, so a decoded notification re-encodes byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Notify<'a> {
    /// Subscription id.
    pub sub_id: u64,
    /// Concrete queue route (never the pattern).
    pub route: &'a str,
    /// Messages ready to reserve.
    pub ready: u64,
    /// Messages waiting for their delay.
    pub delayed: u64,
    /// Messages reserved and not completed.
    pub inflight: u64,
    /// How the counters are laid out.
    pub form: CountersForm,
}

/// Length of the three counters.
const COUNTERS_LEN: u32 = 24;

impl Notify<'_> {
    /// The 24 counter bytes (`ready`, `delayed`, `inflight`), which the
    /// wrapped form carries as its `bytes` value.
    pub fn counters_bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        let mut w = crate::SliceWriter::new(&mut out);
        w.put_u64(self.ready);
        w.put_u64(self.delayed);
        w.put_u64(self.inflight);
        out
    }
}

impl<'a> Payload<'a> for Notify<'a> {
    fn payload_len(&self) -> usize {
        let wrap = match self.form {
            CountersForm::Inline => 0,
            CountersForm::Wrapped => 4,
        };
        8 + self.route.wire_len() + wrap + 24
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.sub_id);
        self.route.write(out);
        if self.form == CountersForm::Wrapped {
            out.put_u32(COUNTERS_LEN);
        }
        out.put_u64(self.ready);
        out.put_u64(self.delayed);
        out.put_u64(self.inflight);
    }
    /// Reads either form; the form is chosen by the length of what follows
    /// the route, so the reader must end with the payload.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let sub_id = r.u64()?;
        let route = r.str()?;
        let rest = r.peek_rest();
        let form = match rest.len() {
            24 => CountersForm::Inline,
            28 if rest.starts_with(&COUNTERS_LEN.to_be_bytes()) => {
                r.u32()?;
                CountersForm::Wrapped
            }
            n if n < 24 => return Err(DecodeError::Truncated),
            _ => return Err(DecodeError::TrailingBytes),
        };
        Ok(Notify { sub_id, route, ready: r.u64()?, delayed: r.u64()?, inflight: r.u64()?, form })
    }
}

impl Message for Notify<'_> {
    const TYPE: MsgType = MsgType::QUEUE_NOTIFY;
}

wire_struct! {
    /// ENQUEUE OK. A success without the id (or with bytes after it) is
    /// malformed (C62).
    pub struct EnqueueOk {
        /// Opaque broker-assigned message id.
        pub message_id: u64,
    }
}

flagged_sub_id! {
    /// SUBSCRIBE OK: `u8 1` (id present), then the id. Any other first byte, a
    /// missing id or trailing bytes are malformed.
    pub struct SubscribeOk: "queue subscription id flag";
}

/// Which item layout a RESERVE reply uses; it depends on the **request**
/// route (WIRE.md §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReserveLayout {
    /// The request route has no `*`: `u64 message_id`, `u64 lease_token`,
    /// `bytes body`.
    Exact,
    /// The request route contains `*` or `**`: `str concrete_route` first,
    /// which must be an exact `queue://realm/area/resource` route.
    Routed,
}

impl ReserveLayout {
    /// The layout of the reply to a RESERVE for `route`.
    pub fn for_route(route: &str) -> Self {
        if route.contains('*') { ReserveLayout::Routed } else { ReserveLayout::Exact }
    }
}

/// One reserved message, borrowed from the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReservedItem<'a> {
    /// The concrete queue route: `Some` in the [`ReserveLayout::Routed`]
    /// layout, `None` in the exact one (the request route applies).
    pub route: Option<&'a str>,
    /// Opaque message id (for EXTEND / COMPLETE).
    pub message_id: u64,
    /// Opaque reservation token (for EXTEND / COMPLETE).
    pub lease_token: u64,
    /// Message body.
    pub body: &'a [u8],
}

/// True if `route` is an exact `queue://realm/area/resource` route, the
/// only form routed items carry.
fn concrete(route: &str) -> bool {
    is_concrete(route, Scheme::Queue, 3)
}

/// In `layout`: the route (routed layout only, where it must be a concrete
/// `queue://realm/area/resource` route), `u64 message_id`,
/// `u64 lease_token`, `bytes body`.
impl<'a> crate::codec::Element<'a> for ReservedItem<'a> {
    type Layout = ReserveLayout;

    fn read(r: &mut Reader<'a>, layout: ReserveLayout) -> Result<Self, DecodeError> {
        let route = match layout {
            ReserveLayout::Exact => None,
            ReserveLayout::Routed => {
                let route = r.str()?;
                if !concrete(route) {
                    return Err(DecodeError::InvalidRoute);
                }
                Some(route)
            }
        };
        Ok(ReservedItem { route, message_id: r.u64()?, lease_token: r.u64()?, body: r.bytes()? })
    }

    fn wire_len(&self, layout: ReserveLayout) -> usize {
        let route = match (layout, self.route) {
            (ReserveLayout::Routed, Some(route)) => Field::wire_len(&route),
            _ => 0,
        };
        route + 16 + Field::wire_len(&self.body)
    }

    /// In the exact layout the item's route is not written.
    fn write<S: Sink + ?Sized>(&self, out: &mut S, layout: ReserveLayout) {
        if let (ReserveLayout::Routed, Some(route)) = (layout, self.route) {
            Field::write(&route, out);
        }
        out.put_u64(self.message_id);
        out.put_u64(self.lease_token);
        out.put_bytes(self.body);
    }

    /// In the routed layout every item needs a concrete route.
    fn check(&self, layout: ReserveLayout) -> Result<(), EncodeError> {
        match (layout, self.route) {
            (ReserveLayout::Exact, _) => Ok(()),
            (ReserveLayout::Routed, Some(route)) if concrete(route) => Ok(()),
            (ReserveLayout::Routed, _) => Err(EncodeError::InvalidValue("routed item without a concrete queue route")),
        }
    }
}

/// The items of a RESERVE page, borrowed from the payload: validated once
/// when decoded, then iterated lazily. Build one with
/// `ReservedItems::write_into(items, layout, buf)` ([`List::write_into`]).
pub type ReservedItems<'a> = List<'a, ReservedItem<'a>, ReserveLayout>;

/// Iterator over the items of a [`ReservedItems`].
pub type ReservedItemsIter<'a> = ListIter<'a, ReservedItem<'a>, ReserveLayout>;

/// RESERVE OK: `u32 count`, then `count` items in the request's
/// [`ReserveLayout`]. A success with nothing after the status byte is zero
/// items (C36).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReserveOk<'a> {
    /// The reserved messages.
    pub items: ReservedItems<'a>,
    /// The reply was the bare form (`00`, no count). Brokers send the count;
    /// the encoder writes the bare form only when this is set and there are
    /// no items, so a decoded reply re-encodes byte for byte.
    pub bare: bool,
}

impl<'a> ReserveOk<'a> {
    /// Reads the success fields of a RESERVE reply in `layout`.
    pub fn read_with(r: &mut Reader<'a>, layout: ReserveLayout) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(ReserveOk { items: ReservedItems::empty(layout), bare: true });
        }
        Ok(ReserveOk { items: ReservedItems::read(r, layout)?, bare: false })
    }

    const fn is_bare(&self) -> bool {
        self.bare && self.items.is_empty()
    }
}

impl<'a> Payload<'a> for ReserveOk<'a> {
    fn payload_len(&self) -> usize {
        if self.is_bare() { 0 } else { 4 + self.items.wire_len() }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        if !self.is_bare() {
            self.items.write(out);
        }
    }
    /// Reads the [`ReserveLayout::Exact`] layout. The layout is a property of
    /// the request, never guessed from the bytes (WIRE.md §8.2): a client
    /// that sent a wildcard route uses [`decode_reserve_reply`] (or
    /// [`ReserveOk::read_with`]) with [`ReserveLayout::Routed`].
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::read_with(r, ReserveLayout::Exact)
    }
}

/// The envelope a broker uses for a **domain** error of the request type
/// `ty` (WIRE.md §6.2); `None` for a type that is not a Queue request.
/// Pre-dispatch errors, and 4005/4007 on EXTEND/COMPLETE from current
/// brokers (§B7), are coded whatever this says.
pub const fn domain_error_envelope(ty: MsgType) -> Option<Envelope> {
    match ty.0 {
        200 | 202 => Some(Envelope::Coded),
        203 | 204 | 207 | 208 => Some(Envelope::Uncoded),
        _ => None,
    }
}

/// Decodes the reply to ENQUEUE.
pub fn decode_enqueue_reply(payload: &[u8]) -> Result<Reply<'_, EnqueueOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to a RESERVE whose items are in `layout`
/// (use [`Reserve::layout`] of the request that was sent).
pub fn decode_reserve_reply(payload: &[u8], layout: ReserveLayout) -> Result<Reply<'_, ReserveOk<'_>>, DecodeError> {
    Reply::decode_with(payload, StatusSet::Standard, |r| ReserveOk::read_with(r, layout))
}

/// Decodes the reply to SUBSCRIBE.
pub fn decode_subscribe_reply(payload: &[u8]) -> Result<Reply<'_, SubscribeOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes a reply with no success fields (EXTEND, COMPLETE, UNSUBSCRIBE).
pub fn decode_ack_reply(payload: &[u8]) -> Result<Reply<'_, ()>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Runs every Queue decoder, in every context, over `payload` and discards
/// the results. For fuzz targets and property tests: it must never panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    let _ = Enqueue::decode(payload);
    let _ = Reserve::decode(payload).map(|r| r.layout());
    let _ = Extend::decode(payload);
    let _ = Complete::decode(payload);
    let _ = Subscribe::decode(payload);
    let _ = Unsubscribe::decode(payload);
    let _ = Notify::decode(payload).map(|n| n.counters_bytes());
    let _ = decode_enqueue_reply(payload);
    for layout in [ReserveLayout::Exact, ReserveLayout::Routed] {
        if let Ok(Reply::Ok(ok)) = decode_reserve_reply(payload, layout) {
            for item in ok.items {
                let _ = item;
            }
        }
        if let Ok(items) = ReservedItems::from_wire(1, payload, layout) {
            for item in items {
                let _ = item;
            }
        }
    }
    if let Ok(Reply::Ok(ok)) = Reply::<ReserveOk<'_>>::decode(payload, StatusSet::Standard) {
        for item in ok.items {
            let _ = item;
        }
    }
    let _ = decode_subscribe_reply(payload);
    let _ = decode_ack_reply(payload);
}
