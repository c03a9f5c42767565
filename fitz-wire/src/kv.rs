//! KV transactions, types 100–111 (WIRE.md §8.1, current dialect §B5).
//!
//! Every reply uses the coded error envelope. Two layouts depend on the
//! dialect: BEGIN carries `durability` only in the legacy dialect and
//! COMMIT carries `persistence` only in the current one; both are modelled
//! as an `Option` that is `Some` exactly in the dialect that sends it.

use crate::codec::{Field, List, ListIter, Message, Payload, Reader, Sink, wire_enum, wire_message, wire_struct};
use crate::error::{DecodeError, Reply, StatusSet};
use crate::{Dialect, MsgType};

wire_enum! {
    /// Transaction mode of BEGIN.
    pub enum Mode: "kv mode" {
        /// Snapshot reads; writes fail with 1005.
        ReadOnly = 0,
        /// Exclusive per resource; conflicts fail with 1004.
        ReadWrite = 1,
    }
}

wire_enum! {
    /// Durability (legacy BEGIN) or persistence (current COMMIT).
    pub enum Durability: "kv durability" {
        /// Written to memory, flushed in the background.
        Buffered = 0,
        /// Flushed before the reply.
        Sync = 1,
    }
}

/// BEGIN (100). OK: [`BeginOk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Begin<'a> {
    /// Exact `kv://realm/area/resource`.
    pub route: &'a str,
    /// Transaction mode.
    pub mode: Mode,
    /// `Some` in the legacy dialect (sent at BEGIN), `None` in the current
    /// one (persistence is chosen at COMMIT).
    pub durability: Option<Durability>,
}

/// Reads the byte only one dialect sends at the end of BEGIN / COMMIT:
/// exactly when `present` says so, or, with the dialect unknown (`None`),
/// whenever a byte is left.
fn read_dialect_byte<'a, T: Field<'a>>(r: &mut Reader<'a>, present: Option<bool>) -> Result<Option<T>, DecodeError> {
    if present.unwrap_or(!r.is_empty()) { r.field().map(Some) } else { Ok(None) }
}

impl<'a> Begin<'a> {
    /// Decodes BEGIN as the broker of `dialect` does: the legacy layout has
    /// a durability byte, the current one ends after `mode`.
    pub fn decode_dialect(payload: &'a [u8], dialect: Dialect) -> Result<Self, DecodeError> {
        Reader::decode(payload, |r| Self::read(r, Some(dialect == Dialect::Legacy)))
    }

    fn read(r: &mut Reader<'a>, has_durability: Option<bool>) -> Result<Self, DecodeError> {
        Ok(Begin { route: r.str()?, mode: r.field()?, durability: read_dialect_byte(r, has_durability)? })
    }
}

impl<'a> Payload<'a> for Begin<'a> {
    fn payload_len(&self) -> usize {
        self.route.wire_len() + 1 + usize::from(self.durability.is_some())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.route.write(out);
        self.mode.write(out);
        if let Some(d) = self.durability {
            d.write(out);
        }
    }
    /// Accepts either layout: a durability byte after `mode` is read if present.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::read(r, None)
    }
}

impl Message for Begin<'_> {
    const TYPE: MsgType = MsgType::KV_BEGIN;
}

/// COMMIT (101). OK: empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Commit<'a> {
    /// Transaction id from BEGIN.
    pub tx_id: u64,
    /// The transaction's route.
    pub route: &'a str,
    /// `Some` in the current dialect (required there, ReadOnly included),
    /// `None` in the legacy one.
    pub persistence: Option<Durability>,
}

impl<'a> Commit<'a> {
    /// Decodes COMMIT as the broker of `dialect` does.
    pub fn decode_dialect(payload: &'a [u8], dialect: Dialect) -> Result<Self, DecodeError> {
        Reader::decode(payload, |r| Self::read(r, Some(dialect == Dialect::Current)))
    }

    fn read(r: &mut Reader<'a>, has_persistence: Option<bool>) -> Result<Self, DecodeError> {
        Ok(Commit { tx_id: r.u64()?, route: r.str()?, persistence: read_dialect_byte(r, has_persistence)? })
    }
}

impl<'a> Payload<'a> for Commit<'a> {
    fn payload_len(&self) -> usize {
        8 + self.route.wire_len() + usize::from(self.persistence.is_some())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.tx_id);
        self.route.write(out);
        if let Some(p) = self.persistence {
            p.write(out);
        }
    }
    /// Accepts either layout: a persistence byte after the route is read if present.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::read(r, None)
    }
}

impl Message for Commit<'_> {
    const TYPE: MsgType = MsgType::KV_COMMIT;
}

wire_message! {
    /// ROLLBACK (102). OK: empty.
    pub struct Rollback<'a> = MsgType::KV_ROLLBACK;
    {
        /// Transaction id.
        pub tx_id: u64,
        /// The transaction's route.
        pub route: &'a str,
    }
}

wire_message! {
    /// GET (103). OK: [`GetOk`].
    pub struct Get<'a> = MsgType::KV_GET;
    {
        /// Transaction id.
        pub tx_id: u64,
        /// The transaction's route.
        pub route: &'a str,
        /// Key (binary-safe).
        pub key: &'a [u8],
    }
}

wire_message! {
    /// PUT (104, upsert). OK: empty.
    pub struct Put<'a> = MsgType::KV_PUT;
    {
        /// Transaction id.
        pub tx_id: u64,
        /// The transaction's route.
        pub route: &'a str,
        /// Key.
        pub key: &'a [u8],
        /// Value.
        pub value: &'a [u8],
    }
}

wire_message! {
    /// INSERT (105): fails with 1006 if the key exists. OK: empty.
    pub struct Insert<'a> = MsgType::KV_INSERT;
    {
        /// Transaction id.
        pub tx_id: u64,
        /// The transaction's route.
        pub route: &'a str,
        /// Key.
        pub key: &'a [u8],
        /// Value.
        pub value: &'a [u8],
    }
}

wire_message! {
    /// DELETE (106). OK: empty.
    pub struct Delete<'a> = MsgType::KV_DELETE;
    {
        /// Transaction id.
        pub tx_id: u64,
        /// The transaction's route.
        pub route: &'a str,
        /// Key.
        pub key: &'a [u8],
    }
}

wire_message! {
    /// DELETE_RANGE (107): `start_key` inclusive, `end_key` exclusive. OK: empty.
    pub struct DeleteRange<'a> = MsgType::KV_DELETE_RANGE;
    {
        /// Transaction id.
        pub tx_id: u64,
        /// The transaction's route.
        pub route: &'a str,
        /// First key (inclusive).
        pub start_key: &'a [u8],
        /// End key (exclusive).
        pub end_key: &'a [u8],
    }
}

/// SCAN (108). OK: [`ScanOk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Scan<'a> {
    /// Transaction id.
    pub tx_id: u64,
    /// The transaction's route.
    pub route: &'a str,
    /// Start bound; absent = unbounded.
    pub start_key: Option<&'a [u8]>,
    /// End bound; absent = unbounded.
    pub end_key: Option<&'a [u8]>,
    /// Page size; absent = the broker's cap (1,024), not unlimited.
    pub limit: Option<u32>,
    /// Descending order.
    pub reverse: bool,
    /// Start strictly after `start_key` (needs `CAP_KV_SCAN_EXCLUSIVE`).
    /// Sent as a trailing byte only when true.
    pub start_exclusive: bool,
}

impl<'a> Scan<'a> {
    /// Capabilities this request needs: `KV_SCAN_EXCLUSIVE` when
    /// `start_exclusive` is set.
    pub const fn required_capabilities(&self) -> crate::Capabilities {
        if self.start_exclusive { crate::Capabilities::KV_SCAN_EXCLUSIVE } else { crate::Capabilities::NONE }
    }

    /// Decodes SCAN as a broker does: the trailing `start_exclusive` byte is
    /// accepted only when `exclusive_allowed` (the capability was advertised).
    pub fn decode_with(payload: &'a [u8], exclusive_allowed: bool) -> Result<Self, DecodeError> {
        Reader::decode(payload, |r| {
            let mut scan = Self::read_payload(r)?;
            if exclusive_allowed && !r.is_empty() {
                scan.start_exclusive = r.bool()?;
            }
            Ok(scan)
        })
    }
}

impl<'a> Payload<'a> for Scan<'a> {
    fn payload_len(&self) -> usize {
        8 + self.route.wire_len()
            + self.start_key.wire_len()
            + self.end_key.wire_len()
            + self.limit.wire_len()
            + 1
            + usize::from(self.start_exclusive)
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.tx_id);
        self.route.write(out);
        self.start_key.write(out);
        self.end_key.write(out);
        self.limit.write(out);
        self.reverse.write(out);
        if self.start_exclusive {
            out.put_u8(1);
        }
    }
    /// Reads the legacy fields; see [`Scan::decode_with`] for the trailing byte.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Scan {
            tx_id: r.u64()?,
            route: r.str()?,
            start_key: r.field()?,
            end_key: r.field()?,
            limit: r.field()?,
            reverse: r.bool()?,
            start_exclusive: false,
        })
    }

    /// Decodes with the trailing `start_exclusive` byte allowed.
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_with(payload, true)
    }
}

impl Message for Scan<'_> {
    const TYPE: MsgType = MsgType::KV_SCAN;
}

wire_message! {
    /// SUBSCRIBE (109). OK: [`SubscribeOk`] (no flag byte).
    pub struct Subscribe<'a> = MsgType::KV_SUBSCRIBE;
    {
        /// Pattern able to match three segments.
        pub pattern: &'a str,
    }
}

wire_message! {
    /// UNSUBSCRIBE (110), by the original pattern string. OK: empty.
    pub struct Unsubscribe<'a> = MsgType::KV_UNSUBSCRIBE;
    {
        /// The string given to SUBSCRIBE.
        pub pattern: &'a str,
    }
}

wire_message! {
    /// NOTIFY (111, broker → client): a committed change on a matching resource.
    pub struct Notify<'a> = MsgType::KV_NOTIFY;
    {
        /// Subscription id.
        pub sub_id: u64,
        /// Concrete route that changed.
        pub route: &'a str,
        /// Successful PUT/INSERT/DELETE/DELETE_RANGE calls in the transaction.
        pub mutation_count: u64,
    }
}

wire_struct! {
    /// BEGIN OK.
    pub struct BeginOk {
        /// Opaque transaction id.
        pub tx_id: u64,
    }
}

wire_struct! {
    /// GET OK: `bool found`, then the value only when found (the same bytes
    /// as an `opt<bytes>`).
    pub struct GetOk<'a> {
        /// The value, `None` if the key is absent (not an error).
        pub value: Option<&'a [u8]>,
    }
}

wire_struct! {
    /// SUBSCRIBE OK: the id, without a flag byte.
    pub struct SubscribeOk {
        /// Subscription id.
        pub sub_id: u64,
    }
}

wire_struct! {
    /// One key/value pair of a SCAN page.
    pub struct ScanPair<'a> {
        /// Key.
        pub key: &'a [u8],
        /// Value.
        pub value: &'a [u8],
    }
}

/// Key/value pairs of a SCAN page, borrowed from the payload. Build one with
/// `ScanPairs::write_into(pairs, (), buf)` ([`List::write_into`]).
pub type ScanPairs<'a> = List<'a, ScanPair<'a>, ()>;

/// Iterator over the pairs of a [`ScanPairs`].
pub type ScanPairsIter<'a> = ListIter<'a, ScanPair<'a>, ()>;

/// SCAN OK: `u32 count`, `count` × (`bytes key`, `bytes value`),
/// `bool has_more`. The pairs are validated when decoded and iterated lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScanOk<'a> {
    /// The key/value pairs.
    pub pairs: ScanPairs<'a>,
    /// More matching keys exist. A missing byte is read as `false`
    /// (WIRE.md §8.1, C30); the encoder always writes it.
    pub has_more: bool,
}

impl<'a> Payload<'a> for ScanOk<'a> {
    fn payload_len(&self) -> usize {
        4 + self.pairs.wire_len() + 1
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.pairs.write(out);
        out.put_u8(u8::from(self.has_more));
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let pairs = ScanPairs::read(r, ())?;
        let has_more = if r.is_empty() { false } else { r.bool()? };
        Ok(ScanOk { pairs, has_more })
    }
}

/// Decodes the reply to BEGIN.
pub fn decode_begin_reply(payload: &[u8]) -> Result<Reply<'_, BeginOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to GET.
pub fn decode_get_reply(payload: &[u8]) -> Result<Reply<'_, GetOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to SCAN.
pub fn decode_scan_reply(payload: &[u8]) -> Result<Reply<'_, ScanOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to SUBSCRIBE.
pub fn decode_subscribe_reply(payload: &[u8]) -> Result<Reply<'_, SubscribeOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes a reply with no success fields (COMMIT, ROLLBACK, PUT, INSERT,
/// DELETE, DELETE_RANGE, UNSUBSCRIBE).
pub fn decode_ack_reply(payload: &[u8]) -> Result<Reply<'_, ()>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Runs every KV decoder, in every context, over `payload` and discards the
/// results. For fuzz targets and property tests: it must never panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    for d in [Dialect::Legacy, Dialect::Current] {
        let _ = Begin::decode_dialect(payload, d);
        let _ = Commit::decode_dialect(payload, d);
    }
    let _ = Begin::decode(payload);
    let _ = Commit::decode(payload);
    let _ = Rollback::decode(payload);
    let _ = Get::decode(payload);
    let _ = Put::decode(payload);
    let _ = Insert::decode(payload);
    let _ = Delete::decode(payload);
    let _ = DeleteRange::decode(payload);
    let _ = Scan::decode_with(payload, false);
    let _ = Scan::decode_with(payload, true);
    let _ = Subscribe::decode(payload);
    let _ = Unsubscribe::decode(payload);
    let _ = Notify::decode(payload);
    let _ = decode_begin_reply(payload);
    let _ = decode_get_reply(payload);
    if let Ok(Reply::Ok(scan)) = decode_scan_reply(payload) {
        for pair in scan.pairs {
            let _ = pair;
        }
    }
    let _ = decode_subscribe_reply(payload);
    let _ = decode_ack_reply(payload);
}
