//! Schedules, types 700–705 (WIRE.md §8.7) and the current-dialect
//! extensions CREATE_BATCH 706 and LIST_V2 707 (§B10).
//!
//! Error envelopes: LIST uses the coded one; CREATE, CANCEL, SUBSCRIBE,
//! UNSUBSCRIBE and CREATE_BATCH send their domain errors uncoded but
//! pre-dispatch errors coded. Every reply decoder here applies the length
//! test of §6.2, so both shapes are accepted everywhere.
//!
//! Multi-entry payloads (LIST and LIST_V2 pages, CREATE_BATCH requests) are
//! validated once when decoded and then iterated lazily from the payload.

use crate::MsgType;
use crate::codec::{
    Field, List as CountedList, ListIter, Message, Payload, Reader, Sink, flagged_sub_id, wire_enum, wire_message,
    wire_struct,
};
use crate::error::{DecodeError, EncodeError, Reply, StatusSet};
use crate::route::{self, Scheme};

wire_enum! {
    /// How a fire is delivered (`delivery_mode`).
    pub enum DeliveryMode: "schedule delivery_mode" {
        /// Every matching live subscription.
        Broadcast = 0,
        /// One accepting subscription, round-robin per route.
        Single = 1,
    }
}

/// Default page size of LIST when `limit` is absent.
pub const LIST_DEFAULT_LIMIT: u64 = 100;

/// Largest `limit` clients send in LIST (they cap larger values).
pub const LIST_MAX_LIMIT: u64 = 1000;

/// True if `route` is a concrete `schedule://realm/area/resource/operation`
/// route, as CREATE and CANCEL need (WIRE.md §9.2). The broker stays
/// authoritative; decoders do not check this.
pub fn is_valid_route(route: &str) -> bool {
    route::is_concrete(route, Scheme::Schedule, 4)
}

/// True if `pattern` is a SUBSCRIBE pattern able to match four segments
/// (WIRE.md §9.2, §9.4).
pub fn is_valid_pattern(pattern: &str) -> bool {
    route::is_valid_pattern(pattern, Scheme::Schedule, Some(4))
}

wire_message! {
    /// CREATE (700), an upsert by route. OK: empty.
    pub struct Create<'a> = MsgType::SCHEDULE_CREATE;
    {
        /// Exact `schedule://realm/area/resource/operation`.
        pub route: &'a str,
        /// 5-field cron expression.
        pub cron: &'a str,
        /// Delivery mode.
        pub delivery_mode: DeliveryMode,
        /// Delivered verbatim in NOTIFY.
        pub payload: &'a [u8],
    }
}

wire_message! {
    /// CANCEL (701). OK: empty; cancelling an unknown schedule succeeds.
    pub struct Cancel<'a> = MsgType::SCHEDULE_CANCEL;
    {
        /// The schedule's route.
        pub route: &'a str,
    }
}

/// LIST (702): `opt<u64> offset`, `opt<u64> limit`. OK: [`ListOk`].
///
/// The broker also accepts an empty payload (both defaults); `bare` records
/// that form so a decoded request re-encodes byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct List {
    /// Entries to skip; absent = 0.
    pub offset: Option<u64>,
    /// Page size; absent = [`LIST_DEFAULT_LIMIT`], `0` = everything that fits.
    pub limit: Option<u64>,
    /// The empty-payload form. Honoured only when `offset` and `limit` are
    /// both `None`: the encoder then writes nothing. Otherwise ignored (both
    /// presence bytes are always written). Decoders set it only for an
    /// empty payload.
    pub bare: bool,
}

impl List {
    /// A request with both presence bytes, as clients send it.
    pub const fn new(offset: Option<u64>, limit: Option<u64>) -> Self {
        Self { offset, limit, bare: false }
    }

    /// The offset the broker applies (absent = 0).
    pub const fn effective_offset(&self) -> u64 {
        match self.offset {
            Some(o) => o,
            None => 0,
        }
    }

    /// The limit the broker applies (absent = [`LIST_DEFAULT_LIMIT`];
    /// `0` still means "everything that fits").
    pub const fn effective_limit(&self) -> u64 {
        match self.limit {
            Some(l) => l,
            None => LIST_DEFAULT_LIMIT,
        }
    }

    const fn is_bare(&self) -> bool {
        self.bare && self.offset.is_none() && self.limit.is_none()
    }
}

impl<'a> Payload<'a> for List {
    fn payload_len(&self) -> usize {
        if self.is_bare() { 0 } else { self.offset.wire_len() + self.limit.wire_len() }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        if !self.is_bare() {
            self.offset.write(out);
            self.limit.write(out);
        }
    }
    /// An empty reader is the bare form; otherwise both fields are required.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(Self { offset: None, limit: None, bare: true });
        }
        Ok(Self { offset: r.field()?, limit: r.field()?, bare: false })
    }
}

impl Message for List {
    const TYPE: MsgType = MsgType::SCHEDULE_LIST;
}

wire_message! {
    /// SUBSCRIBE (703). OK: [`SubscribeOk`] (`u8 1`, `u64 id`). Idempotent.
    pub struct Subscribe<'a> = MsgType::SCHEDULE_SUBSCRIBE;
    {
        /// Exact route or wildcard pattern able to match four segments.
        pub pattern: &'a str,
    }
}

wire_message! {
    /// UNSUBSCRIBE (704), by the original pattern string. OK: empty.
    pub struct Unsubscribe<'a> = MsgType::SCHEDULE_UNSUBSCRIBE;
    {
        /// The string given to SUBSCRIBE.
        pub pattern: &'a str,
    }
}

wire_message! {
    /// NOTIFY (705, broker → client): a schedule fired.
    pub struct Notify<'a> = MsgType::SCHEDULE_NOTIFY;
    {
        /// Subscription id.
        pub sub_id: u64,
        /// The concrete route of the fired schedule.
        pub route: &'a str,
        /// The schedule's payload.
        pub payload: &'a [u8],
    }
}

wire_struct! {
    /// One schedule definition: an item of a LIST / LIST_V2 page (after its
    /// `u8 1` marker) and of a CREATE_BATCH request; the fields of CREATE.
    pub struct Entry<'a> {
        /// `schedule://realm/area/resource/operation`.
        pub route: &'a str,
        /// 5-field cron expression.
        pub cron: &'a str,
        /// Delivery mode.
        pub delivery_mode: DeliveryMode,
        /// The schedule's payload.
        pub payload: &'a [u8],
    }
}

impl<'a> Entry<'a> {
    /// The CREATE request that defines this schedule.
    pub const fn to_create(&self) -> Create<'a> {
        Create { route: self.route, cron: self.cron, delivery_mode: self.delivery_mode, payload: self.payload }
    }
}

impl<'a> From<Create<'a>> for Entry<'a> {
    fn from(c: Create<'a>) -> Self {
        Entry { route: c.route, cron: c.cron, delivery_mode: c.delivery_mode, payload: c.payload }
    }
}

/// Entry marker: another entry follows.
const MARKER_ENTRY: u8 = 1;
/// Entry marker: end of the list.
const MARKER_END: u8 = 0;

/// The entries of a LIST or LIST_V2 page in wire form (each introduced by
/// `u8 1`, the whole list ended by `u8 0`), borrowed and already validated.
///
/// Built by decoding a page, by [`Entries::from_wire`] or by
/// [`write_entries`] / [`write_entries_fitting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Entries<'a> {
    count: usize,
    /// Markers, entries and the end marker.
    bytes: &'a [u8],
}

impl Default for Entries<'_> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<'a> Entries<'a> {
    /// No entry: just the end marker.
    pub const EMPTY: Entries<'static> = Entries { count: 0, bytes: &[MARKER_END] };

    /// Reads a marker-introduced list from `r`, up to and including the end
    /// marker, validating every entry.
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let start = r.peek_rest();
        let mut probe = Reader::new(start);
        let mut count: usize = 0;
        loop {
            match probe.u8()? {
                MARKER_END => break,
                MARKER_ENTRY => {
                    Entry::read_payload(&mut probe)?;
                    count = count.saturating_add(1);
                }
                v => {
                    return Err(DecodeError::InvalidValue { field: "schedule entry marker", value: v });
                }
            }
        }
        let used = start.len().saturating_sub(probe.remaining());
        let bytes = r.take(used)?;
        Ok(Self { count, bytes })
    }

    /// Checks that `bytes` is exactly a marker-introduced list ended by `u8 0`.
    pub fn from_wire(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        Reader::decode(bytes, Self::read)
    }

    /// Number of entries.
    pub const fn len(&self) -> usize {
        self.count
    }

    /// True if the page holds no entry.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Iterates over the entries.
    pub fn iter(&self) -> EntriesIter<'a> {
        EntriesIter { r: Reader::new(self.bytes), done: false }
    }

    /// Wire length, markers and end marker included.
    pub const fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// The list in wire form, markers and end marker included.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<'a> IntoIterator for Entries<'a> {
    type Item = Entry<'a>;
    type IntoIter = EntriesIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over an [`Entries`] list.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EntriesIter<'a> {
    r: Reader<'a>,
    done: bool,
}

impl<'a> Iterator for EntriesIter<'a> {
    type Item = Entry<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Validated when the list was built; anything unexpected ends the
        // iteration instead of panicking.
        match self.r.u8() {
            Ok(MARKER_ENTRY) => match Entry::read_payload(&mut self.r) {
                Ok(e) => Some(e),
                Err(_) => {
                    self.done = true;
                    None
                }
            },
            _ => {
                self.done = true;
                None
            }
        }
    }
}

/// Writes `entries` in LIST wire form (`u8 1` + entry each, then `u8 0`)
/// into `buf` and returns the list view. Fails, with the exact size
/// needed, if `buf` is too small.
pub fn write_entries<'b, 'e>(
    entries: impl IntoIterator<Item = Entry<'e>>,
    buf: &'b mut [u8],
) -> Result<Entries<'b>, EncodeError> {
    let available = buf.len();
    let mut w = crate::SliceWriter::new(buf);
    let mut count: usize = 0;
    let mut needed: usize = 1;
    for e in entries {
        needed = needed.saturating_add(1).saturating_add(e.payload_len());
        w.put_u8(MARKER_ENTRY);
        e.write_payload(&mut w);
        count = count.saturating_add(1);
    }
    w.put_u8(MARKER_END);
    let n = w.position();
    if w.overflowed() || n != needed {
        return Err(EncodeError::BufferTooSmall { needed, available });
    }
    let bytes = buf.get(..n).unwrap_or_default();
    Ok(Entries { count, bytes })
}

/// Writes as many leading `entries` as fit in `buf` (whole entries only,
/// always leaving room for the end marker) and returns the list; its
/// [`Entries::len`] says how many were taken. For brokers filling a page
/// that must fit in one record: size `buf` as the record's room for the
/// list. The first entry that does not fit is consumed from the iterator
/// but not written. Fails only if `buf` is empty (no room for the end
/// marker).
pub fn write_entries_fitting<'b, 'e>(
    entries: impl IntoIterator<Item = Entry<'e>>,
    buf: &'b mut [u8],
) -> Result<Entries<'b>, EncodeError> {
    let available = buf.len();
    // Room for the entries, the end marker reserved.
    let room = available.checked_sub(1).ok_or(EncodeError::BufferTooSmall { needed: 1, available })?;
    let mut w = crate::SliceWriter::new(buf);
    let mut count: usize = 0;
    let mut used: usize = 0;
    for e in entries {
        let len = 1usize.saturating_add(e.payload_len());
        match used.checked_add(len) {
            Some(total) if total <= room => {
                w.put_u8(MARKER_ENTRY);
                e.write_payload(&mut w);
                used = total;
                count = count.saturating_add(1);
            }
            _ => break,
        }
    }
    w.put_u8(MARKER_END);
    let n = w.position();
    if w.overflowed() {
        return Err(EncodeError::BufferTooSmall { needed: used.saturating_add(1), available });
    }
    let bytes = buf.get(..n).unwrap_or_default();
    Ok(Entries { count, bytes })
}

/// LIST OK: `u64 total_count`, then the [`Entries`]; nothing after the end
/// marker. There is no `has_more`: request again with `offset += len`
/// while `offset + len < total_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ListOk<'a> {
    /// Schedules matching in total (not just on this page).
    pub total_count: u64,
    /// This page's entries.
    pub entries: Entries<'a>,
}

impl<'a> Payload<'a> for ListOk<'a> {
    fn payload_len(&self) -> usize {
        8 + self.entries.wire_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.total_count);
        out.put(self.entries.bytes);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ListOk { total_count: r.u64()?, entries: Entries::read(r)? })
    }
}

flagged_sub_id! {
    /// SUBSCRIBE OK: `u8 1` (id present; any other value is malformed), then
    /// the `u64` id.
    pub struct SubscribeOk: "schedule subscribe id flag";
}

/// The entries of a CREATE_BATCH request: either a caller's slice (to
/// encode) or a validated view of received bytes (`count` entries without
/// markers, a [`crate::codec::List`]). Both forms compare equal when they hold the same
/// entries.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BatchEntries<'a>(BatchRepr<'a>);

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum BatchRepr<'a> {
    Slice(&'a [Entry<'a>]),
    Wire(CountedList<'a, Entry<'a>, ()>),
}

impl<'a> BatchEntries<'a> {
    /// Entries to send.
    pub const fn from_slice(entries: &'a [Entry<'a>]) -> Self {
        Self(BatchRepr::Slice(entries))
    }

    /// Checks that `bytes` holds exactly `count` entries in wire form
    /// (without markers or count).
    pub fn from_wire(count: u32, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        CountedList::from_wire(count, bytes, ()).map(Self::from)
    }

    /// Number of entries (the wire `count`; a slice longer than `u32::MAX`
    /// cannot fit in a record anyway and is reported as `u32::MAX`).
    pub fn len(&self) -> u32 {
        match self.0 {
            BatchRepr::Slice(s) => u32::try_from(s.len()).unwrap_or(u32::MAX),
            BatchRepr::Wire(list) => list.len(),
        }
    }

    /// True if there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates over the entries.
    pub fn iter(&self) -> BatchIter<'a> {
        BatchIter(match self.0 {
            BatchRepr::Slice(s) => BatchIterRepr::Slice(s.iter()),
            BatchRepr::Wire(list) => BatchIterRepr::Wire(list.iter()),
        })
    }

    /// Wire length of the entries (without the count).
    pub fn wire_len(&self) -> usize {
        match self.0 {
            BatchRepr::Slice(s) => s.iter().map(Payload::payload_len).fold(0, usize::saturating_add),
            BatchRepr::Wire(list) => list.wire_len(),
        }
    }

    /// The received bytes (entries without count) for the wire form; `None`
    /// for a slice.
    pub const fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.0 {
            BatchRepr::Slice(_) => None,
            BatchRepr::Wire(list) => Some(list.as_bytes()),
        }
    }

    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        match self.0 {
            BatchRepr::Slice(s) => {
                out.put_u32(self.len());
                s.iter().for_each(|e| e.write_payload(out));
            }
            BatchRepr::Wire(list) => list.write(out),
        }
    }
}

/// The wire form.
impl<'a> From<CountedList<'a, Entry<'a>, ()>> for BatchEntries<'a> {
    fn from(list: CountedList<'a, Entry<'a>, ()>) -> Self {
        Self(BatchRepr::Wire(list))
    }
}

impl PartialEq for BatchEntries<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for BatchEntries<'_> {}

impl<'a> IntoIterator for BatchEntries<'a> {
    type Item = Entry<'a>;
    type IntoIter = BatchIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`BatchEntries`].
#[derive(Debug, Clone)]
pub struct BatchIter<'a>(BatchIterRepr<'a>);

#[cfg(feature = "defmt")]
impl defmt::Format for BatchIter<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "BatchIter");
    }
}

#[derive(Debug, Clone)]
enum BatchIterRepr<'a> {
    Slice(core::slice::Iter<'a, Entry<'a>>),
    Wire(ListIter<'a, Entry<'a>, ()>),
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Entry<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            BatchIterRepr::Slice(it) => it.next().copied(),
            BatchIterRepr::Wire(it) => it.next(),
        }
    }
}

/// CREATE_BATCH (706, current dialect, §B10): `u32 count`, then `count`
/// CREATE entries. OK: empty; errors as for CREATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CreateBatch<'a> {
    /// The schedules to create.
    pub entries: BatchEntries<'a>,
}

impl<'a> CreateBatch<'a> {
    /// A batch to send from a slice of entries.
    pub const fn new(entries: &'a [Entry<'a>]) -> Self {
        Self { entries: BatchEntries::from_slice(entries) }
    }
}

impl<'a> Payload<'a> for CreateBatch<'a> {
    fn payload_len(&self) -> usize {
        4usize.saturating_add(self.entries.wire_len())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.entries.write(out);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(CreateBatch { entries: CountedList::read(r, ())?.into() })
    }
}

impl Message for CreateBatch<'_> {
    const TYPE: MsgType = MsgType::SCHEDULE_CREATE_BATCH;
}

wire_message! {
    /// LIST_V2 (707, current dialect, §B10). OK: [`ListV2Ok`].
    pub struct ListV2<'a> = MsgType::SCHEDULE_LIST_V2;
    {
        /// Continuation of the previous page; absent = from the start.
        pub continuation: Option<&'a str>,
        /// Page size; absent = the broker's default.
        pub limit: Option<u64>,
    }
}

/// LIST_V2 OK: `u8 version` (only [`ListV2Ok::VERSION`] is valid),
/// `bool has_more`, `opt<str> continuation`, then the [`Entries`]; nothing
/// after the end marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ListV2Ok<'a> {
    /// More entries follow: request again with `continuation`.
    pub has_more: bool,
    /// Where the next page starts.
    pub continuation: Option<&'a str>,
    /// This page's entries.
    pub entries: Entries<'a>,
}

impl ListV2Ok<'_> {
    /// The only page version: written by the encoder, required by the decoder.
    pub const VERSION: u8 = 1;
}

impl<'a> Payload<'a> for ListV2Ok<'a> {
    fn payload_len(&self) -> usize {
        2 + self.continuation.wire_len() + self.entries.wire_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(Self::VERSION);
        self.has_more.write(out);
        self.continuation.write(out);
        out.put(self.entries.bytes);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.expect_u8(Self::VERSION, "schedule list_v2 version")?;
        Ok(ListV2Ok { has_more: r.bool()?, continuation: r.field()?, entries: Entries::read(r)? })
    }
}

/// Decodes the reply to LIST (coded errors; the length test accepts both).
pub fn decode_list_reply(payload: &[u8]) -> Result<Reply<'_, ListOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to SUBSCRIBE.
pub fn decode_subscribe_reply(payload: &[u8]) -> Result<Reply<'_, SubscribeOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to LIST_V2.
pub fn decode_list_v2_reply(payload: &[u8]) -> Result<Reply<'_, ListV2Ok<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes a reply with no success fields (CREATE, CANCEL, UNSUBSCRIBE,
/// CREATE_BATCH): anything after a status 0 is malformed (C28).
pub fn decode_ack_reply(payload: &[u8]) -> Result<Reply<'_, ()>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Runs every Schedule decoder over `payload`, walks every lazy list, and
/// discards the results. For fuzz targets and property tests: it must never
/// panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    let _ = Create::decode(payload);
    let _ = Cancel::decode(payload);
    let _ = List::decode(payload);
    let _ = Subscribe::decode(payload);
    let _ = Unsubscribe::decode(payload);
    let _ = Notify::decode(payload);
    if let Ok(batch) = CreateBatch::decode(payload) {
        for e in batch.entries {
            let _ = e;
        }
    }
    let _ = ListV2::decode(payload);
    if let Ok(entries) = Entries::from_wire(payload) {
        for e in entries {
            let _ = e;
        }
    }
    if let Ok(Reply::Ok(list)) = decode_list_reply(payload) {
        for e in list.entries {
            let _ = e;
        }
    }
    let _ = decode_subscribe_reply(payload);
    if let Ok(Reply::Ok(list)) = decode_list_v2_reply(payload) {
        for e in list.entries {
            let _ = e;
        }
    }
    let _ = decode_ack_reply(payload);
}
