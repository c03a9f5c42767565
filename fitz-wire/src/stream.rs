//! Stream, types 600–609 (WIRE.md §8.6, §11; current dialect §B6).
//!
//! Durable append-only logs: append sessions (BEGIN, APPEND, COMMIT,
//! ROLLBACK), paged reads (READ), LAST, GET_METADATA and commit
//! notifications (SUBSCRIBE, UNSUBSCRIBE, NOTIFY).
//!
//! Every reply accepts statuses 0, 1 and 2 ([`StatusSet::Stream`]): domain
//! errors are uncoded except on READ, pre-dispatch errors are coded, and
//! current brokers may send status 2 with a code on any Stream reply; the
//! length test of WIRE.md §6.2 tells the status-1 shapes apart.
//!
//! Two things need request context:
//!
//! - A READ page is laid out in the **compatibility** or the **extended**
//!   layout depending on the selector the client sent ([`PageLayout`],
//!   [`decode_read_reply`], [`decode_read_reply_for`]).
//! - The filter of a READ is kept as raw bytes by the READ decoder, so that
//!   a broker can answer a bad filter with 2006 or 2007 instead of failing
//!   the whole request; [`FilterSet::parse`] validates it.

use crate::MsgType;
use crate::codec::{
    Field, List, ListIter, ListWriter, Message, Payload, Reader, Sink, wire_enum, wire_message, wire_struct,
};
use crate::error::{DecodeError, EncodeError, Reply, StatusSet};
use crate::route::{self, Scheme, SelectorAxis};

wire_enum! {
    /// Durability of COMMIT.
    pub enum CommitMode: "stream commit mode" {
        /// Written to memory, flushed in the background.
        Buffered = 0,
        /// Flushed before the reply.
        Sync = 1,
    }
}

wire_enum! {
    /// Why a READ item is a filtered marker (WIRE.md §11.3).
    pub enum FilteredReason: "stream filtered reason" {
        /// No reason given.
        Unspecified = 0,
        /// The READ filter (StreamFilterSet) did not match.
        ServerFilter = 1,
        /// The reader may not see the record.
        Permission = 2,
        /// Hidden by a projection.
        Projection = 3,
    }
}

/// True if `route` is an exact `stream://realm/area/resource` route, the
/// only form allowed inside READ items and NOTIFY (WIRE.md C56).
#[inline]
pub fn is_concrete_route(route: &str) -> bool {
    route::is_concrete(route, Scheme::Stream, 3)
}

fn concrete(route: &str) -> Result<(), DecodeError> {
    if is_concrete_route(route) { Ok(()) } else { Err(DecodeError::InvalidRoute) }
}

/// Wire length of an `opt<u64>`.
const fn opt_u64_len(v: Option<u64>) -> usize {
    if v.is_some() { 9 } else { 1 }
}

// ---------------------------------------------------------------------------
// Append sessions
// ---------------------------------------------------------------------------

wire_message! {
    /// BEGIN (600): opens an append session. OK: [`BeginOk`].
    pub struct Begin<'a> = MsgType::STREAM_BEGIN;
    {
        /// Exact `stream://realm/area/resource`.
        pub route: &'a str,
        /// Opaque ingest metadata; sent absent when empty.
        pub ingest_metadata: Option<&'a [u8]>,
    }
}

wire_struct! {
    /// BEGIN OK: both fields are required (WIRE.md §8.6).
    pub struct BeginOk<'a> {
        /// The append session id.
        pub session_id: u64,
        /// Broker-defined opaque bytes; clients skip them.
        pub data: &'a [u8],
    }
}

wire_message! {
    /// APPEND (601): stages one record in an append session. OK: [`AppendOk`].
    pub struct Append<'a> = MsgType::STREAM_APPEND;
    {
        /// Session id from BEGIN.
        pub session_id: u64,
        /// The next resource offset the client expects (0 for a new stream,
        /// +1 per append in the same session); a mismatch fails with 2001.
        pub expected_offset: u64,
        /// Record body.
        pub body: &'a [u8],
        /// Opaque per-record metadata; sent absent when empty.
        pub metadata: Option<&'a [u8]>,
        /// Immutable tag matched by READ filters; sent absent when empty.
        pub discriminator: Option<&'a str>,
    }
}

/// APPEND OK: `bytes data`, or nothing at all after the status byte
/// (accepted, offset unknown; WIRE.md C61).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AppendOk<'a> {
    /// The `data` field; `None` for the bare `00` form.
    pub data: Option<&'a [u8]>,
}

impl AppendOk<'_> {
    /// The assigned resource offset when `data` is exactly 8 bytes;
    /// `None` ("unknown") otherwise.
    pub fn offset(&self) -> Option<u64> {
        self.data.and_then(|d| <[u8; 8]>::try_from(d).ok()).map(u64::from_be_bytes)
    }
}

impl<'a> Payload<'a> for AppendOk<'a> {
    fn payload_len(&self) -> usize {
        self.data.map_or(0, |d| d.wire_len())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        if let Some(d) = self.data {
            out.put_bytes(d);
        }
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let data = if r.is_empty() { None } else { Some(r.bytes()?) };
        Ok(AppendOk { data })
    }
}

wire_message! {
    /// COMMIT (602): makes the staged batch durable and visible. OK: [`CommitOk`].
    pub struct Commit = MsgType::STREAM_COMMIT;
    {
        /// Session id from BEGIN.
        pub session_id: u64,
        /// Buffered or Sync.
        pub mode: CommitMode,
    }
}

wire_struct! {
    /// COMMIT OK: `bytes data` is required (a bare `00` is malformed).
    pub struct CommitOk<'a> {
        /// Opaque bytes; clients skip them.
        pub data: &'a [u8],
    }
}

wire_message! {
    /// ROLLBACK (603): discards the staged batch. OK: empty.
    pub struct Rollback = MsgType::STREAM_ROLLBACK;
    {
        /// Session id from BEGIN.
        pub session_id: u64,
    }
}

// ---------------------------------------------------------------------------
// Filters (WIRE.md §11.7)
// ---------------------------------------------------------------------------

/// The two marker / version bytes that start every StreamFilterSet blob.
pub const FILTER_MARKER: [u8; 2] = [0x00, 0xF1];

const TAG_EQUALS: u8 = 0;
const TAG_NOT_EQUALS: u8 = 1;
const TAG_STARTS_WITH: u8 = 2;
const TAG_ANY_OF: u8 = 3;

/// One clause of a filter, built from caller values for encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FilterClause<'a> {
    /// Tag 0: discriminator == value.
    Equals(&'a str),
    /// Tag 1: discriminator != value.
    NotEquals(&'a str),
    /// Tag 2: discriminator starts with the prefix.
    StartsWith(&'a str),
    /// Tag 3: discriminator equals one of the values.
    AnyOf(&'a [&'a str]),
}

impl FilterClause<'_> {
    /// Encoded length of the clause (tag included).
    pub fn wire_len(&self) -> usize {
        match self {
            Self::Equals(v) | Self::NotEquals(v) | Self::StartsWith(v) => 1 + v.wire_len(),
            Self::AnyOf(vs) => vs.iter().fold(5usize, |n, v| n.saturating_add(v.wire_len())),
        }
    }

    /// Writes the clause.
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Self::Equals(v) => write_str_clause(out, TAG_EQUALS, v),
            Self::NotEquals(v) => write_str_clause(out, TAG_NOT_EQUALS, v),
            Self::StartsWith(v) => write_str_clause(out, TAG_STARTS_WITH, v),
            Self::AnyOf(vs) => {
                out.put_u8(TAG_ANY_OF);
                out.put_u32(u32::try_from(vs.len()).unwrap_or(u32::MAX));
                for v in vs.iter() {
                    v.write(out);
                }
            }
        }
    }

    /// True if a record with `discriminator` passes this clause (a record
    /// without a discriminator is matched as the empty string).
    pub fn matches(&self, discriminator: &str) -> bool {
        match self {
            Self::Equals(v) => discriminator == *v,
            Self::NotEquals(v) => discriminator != *v,
            Self::StartsWith(p) => discriminator.starts_with(p),
            Self::AnyOf(vs) => vs.contains(&discriminator),
        }
    }
}

fn write_str_clause<S: Sink + ?Sized>(out: &mut S, tag: u8, v: &str) {
    out.put_u8(tag);
    v.write(out);
}

/// The `filter` of a READ: either clauses given by the caller (client side)
/// or the raw StreamFilterSet blob as received (broker side; validate it
/// with [`FilterSet::parse`]).
///
/// Two filters are equal when they encode to the same bytes.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Filter<'a> {
    /// Clauses, all of which must match (AND). Encoded as a blob with the
    /// `00 F1` marker. An empty list is valid on the wire but clients send
    /// no filter instead.
    Clauses(&'a [FilterClause<'a>]),
    /// A blob exactly as carried on the wire (after its `u32` length),
    /// not validated.
    Raw(&'a [u8]),
}

impl<'a> Filter<'a> {
    /// Length of the blob (without its `u32` length prefix).
    pub fn blob_len(&self) -> usize {
        match self {
            Self::Clauses(cs) => cs.iter().fold(6usize, |n, c| n.saturating_add(c.wire_len())),
            Self::Raw(b) => b.len(),
        }
    }

    /// Writes the blob (without its `u32` length prefix).
    pub fn write_blob<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Self::Clauses(cs) => {
                out.put(&FILTER_MARKER);
                out.put_u32(u32::try_from(cs.len()).unwrap_or(u32::MAX));
                for c in cs.iter() {
                    c.write(out);
                }
            }
            Self::Raw(b) => out.put(b),
        }
    }

    /// The raw blob, for a filter received on the wire.
    pub const fn raw(&self) -> Option<&'a [u8]> {
        match self {
            Self::Raw(b) => Some(b),
            Self::Clauses(_) => None,
        }
    }
}

/// A [`Sink`] that checks written bytes against an expected slice.
struct EqSink<'x> {
    rest: &'x [u8],
    equal: bool,
}

impl Sink for EqSink<'_> {
    fn put(&mut self, data: &[u8]) {
        match self.rest.strip_prefix(data) {
            Some(tail) if self.equal => self.rest = tail,
            _ => self.equal = false,
        }
    }
}

fn clauses_encode_to(cs: &[FilterClause<'_>], raw: &[u8]) -> bool {
    let f = Filter::Clauses(cs);
    if f.blob_len() != raw.len() {
        return false;
    }
    let mut s = EqSink { rest: raw, equal: true };
    f.write_blob(&mut s);
    s.equal && s.rest.is_empty()
}

impl PartialEq for Filter<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Clauses(a), Self::Clauses(b)) => a == b,
            (Self::Raw(a), Self::Raw(b)) => a == b,
            (Self::Clauses(c), Self::Raw(r)) | (Self::Raw(r), Self::Clauses(c)) => clauses_encode_to(c, r),
        }
    }
}

impl Eq for Filter<'_> {}

/// As a field: `bytes` (u32 length + blob). In a READ it sits behind the
/// `opt` presence byte. Reading yields [`Filter::Raw`].
impl<'a> Field<'a> for Filter<'a> {
    fn wire_len(&self) -> usize {
        4usize.saturating_add(self.blob_len())
    }
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u32(u32::try_from(self.blob_len()).unwrap_or(u32::MAX));
        self.write_blob(out);
    }
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.bytes().map(Filter::Raw)
    }
}

/// Writes the StreamFilterSet blob of `clauses` into `buf` and returns it.
pub fn write_filter_blob<'b>(clauses: &[FilterClause<'_>], buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
    let f = Filter::Clauses(clauses);
    let needed = f.blob_len();
    if needed > buf.len() {
        return Err(EncodeError::BufferTooSmall { needed, available: buf.len() });
    }
    let mut w = crate::SliceWriter::new(buf);
    f.write_blob(&mut w);
    let n = w.position();
    if w.overflowed() || n != needed {
        return Err(EncodeError::BufferTooSmall { needed, available: n });
    }
    Ok(buf.get(..n).unwrap_or_default())
}

/// Why a StreamFilterSet blob was refused, with the broker's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FilterError {
    /// The marker / version bytes are not `00 F1`
    /// (ERR_STREAM_FILTER_UNSUPPORTED_VERSION, 2006).
    UnsupportedVersion,
    /// The blob is malformed after a valid marker, or too short to hold
    /// one (ERR_STREAM_FILTER_INVALID_PAYLOAD, 2007).
    Malformed(DecodeError),
}

impl FilterError {
    /// The Stream error code a broker answers with (2006 or 2007).
    pub const fn code(&self) -> u32 {
        match self {
            Self::UnsupportedVersion => 2006,
            Self::Malformed(_) => 2007,
        }
    }
}

impl core::fmt::Display for FilterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnsupportedVersion => f.write_str("unsupported stream filter marker/version"),
            Self::Malformed(e) => write!(f, "malformed stream filter: {e}"),
        }
    }
}

impl core::error::Error for FilterError {}

/// A validated StreamFilterSet blob, borrowed from the received bytes;
/// clauses are iterated lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FilterSet<'a> {
    clauses: List<'a, Clause<'a>, ()>,
}

impl<'a> FilterSet<'a> {
    /// Validates a blob: marker `00 F1` (else
    /// [`FilterError::UnsupportedVersion`]), `u32` clause count, clauses
    /// with tags 0–3 and UTF-8 strings, nothing after the last clause
    /// (else [`FilterError::Malformed`]).
    pub fn parse(blob: &'a [u8]) -> Result<Self, FilterError> {
        // A byte that differs from the marker is an unknown version, even
        // in a blob too short to hold both marker bytes.
        if blob.iter().zip(FILTER_MARKER.iter()).any(|(a, b)| a != b) {
            return Err(FilterError::UnsupportedVersion);
        }
        Reader::decode(blob, |r| {
            r.array::<2>()?;
            List::read(r, ()).map(|clauses| FilterSet { clauses })
        })
        .map_err(FilterError::Malformed)
    }

    /// Number of clauses.
    pub const fn len(&self) -> u32 {
        self.clauses.len()
    }

    /// True if there is no clause (equivalent to no filter).
    pub const fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The clauses (after the marker).
    pub const fn clauses(&self) -> List<'a, Clause<'a>, ()> {
        self.clauses
    }

    /// Iterates over the clauses.
    pub fn iter(&self) -> FilterClauses<'a> {
        self.clauses.iter()
    }

    /// True if a record with `discriminator` passes every clause (a record
    /// without a discriminator is matched as the empty string).
    pub fn matches(&self, discriminator: &str) -> bool {
        self.iter().all(|c| c.matches(discriminator))
    }
}

impl<'a> IntoIterator for FilterSet<'a> {
    type Item = Clause<'a>;
    type IntoIter = FilterClauses<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One clause of a received [`FilterSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Clause<'a> {
    /// Tag 0: discriminator == value.
    Equals(&'a str),
    /// Tag 1: discriminator != value.
    NotEquals(&'a str),
    /// Tag 2: discriminator starts with the prefix.
    StartsWith(&'a str),
    /// Tag 3: discriminator equals one of the values.
    AnyOf(AnyOfValues<'a>),
}

impl Clause<'_> {
    /// True if a record with `discriminator` passes this clause.
    pub fn matches(&self, discriminator: &str) -> bool {
        match self {
            Self::Equals(v) => discriminator == *v,
            Self::NotEquals(v) => discriminator != *v,
            Self::StartsWith(p) => discriminator.starts_with(p),
            Self::AnyOf(vs) => vs.iter().any(|v| v == discriminator),
        }
    }
}

/// Tag, then a `str` (tags 0–2) or a counted list of `str` (tag 3).
impl<'a> crate::codec::Element<'a> for Clause<'a> {
    type Layout = ();

    fn read(r: &mut Reader<'a>, (): ()) -> Result<Self, DecodeError> {
        match r.u8()? {
            TAG_EQUALS => r.str().map(Clause::Equals),
            TAG_NOT_EQUALS => r.str().map(Clause::NotEquals),
            TAG_STARTS_WITH => r.str().map(Clause::StartsWith),
            TAG_ANY_OF => List::read(r, ()).map(Clause::AnyOf),
            v => Err(DecodeError::InvalidValue { field: "stream filter clause tag", value: v }),
        }
    }

    fn wire_len(&self, (): ()) -> usize {
        match self {
            Self::Equals(v) | Self::NotEquals(v) | Self::StartsWith(v) => 1 + Field::wire_len(v),
            Self::AnyOf(vs) => 5usize.saturating_add(vs.wire_len()),
        }
    }

    fn write<S: Sink + ?Sized>(&self, out: &mut S, (): ()) {
        match self {
            Self::Equals(v) => write_str_clause(out, TAG_EQUALS, v),
            Self::NotEquals(v) => write_str_clause(out, TAG_NOT_EQUALS, v),
            Self::StartsWith(v) => write_str_clause(out, TAG_STARTS_WITH, v),
            Self::AnyOf(vs) => {
                out.put_u8(TAG_ANY_OF);
                vs.write(out);
            }
        }
    }
}

/// The values of a received AnyOf clause, validated, iterated lazily.
pub type AnyOfValues<'a> = List<'a, &'a str, ()>;

/// Iterator over the values of an [`AnyOfValues`].
pub type AnyOfIter<'a> = ListIter<'a, &'a str, ()>;

/// Iterator over the clauses of a [`FilterSet`].
pub type FilterClauses<'a> = ListIter<'a, Clause<'a>, ()>;

// ---------------------------------------------------------------------------
// READ request (WIRE.md §11.1)
// ---------------------------------------------------------------------------

/// The trailing continuation fields of a READ (WIRE.md §11.1): values
/// echoed from the previous page of a **global** read, absent otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadContinuation {
    /// `cursor_fingerprint` of the previous global page.
    pub cursor_fingerprint: Option<u64>,
    /// `captured_watermark` of the previous global page.
    pub captured_watermark: Option<u64>,
}

/// READ (604). OK: [`ReadOk`], decoded with [`decode_read_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Read<'a> {
    /// One of the ten selectors of WIRE.md §9.3 (not checked by the codec).
    pub selector: &'a str,
    /// First offset to return, on the selector's cursor axis.
    pub from_offset: u64,
    /// Maximum number of items in the page.
    pub limit: u64,
    /// Optional byte budget; the broker stops the page early.
    pub max_bytes: Option<u64>,
    /// Optional StreamFilterSet; the decoder keeps it raw.
    pub filter: Option<Filter<'a>>,
    /// `Some` when the two trailing presence-prefixed fields are on the
    /// wire (what clients send, `00 00` when unused); `None` for the older
    /// form that ends after `filter`, which brokers also accept.
    pub continuation: Option<ReadContinuation>,
}

impl<'a> Read<'a> {
    /// A READ as clients send it: no byte budget, no filter, both trailing
    /// continuation fields present and absent.
    pub const fn new(selector: &'a str, from_offset: u64, limit: u64) -> Self {
        Read {
            selector,
            from_offset,
            limit,
            max_bytes: None,
            filter: None,
            continuation: Some(ReadContinuation { cursor_fingerprint: None, captured_watermark: None }),
        }
    }

    /// The selector's cursor axis; `None` for a selector the broker rejects.
    pub fn axis(&self) -> Option<SelectorAxis> {
        route::stream_selector(self.selector)
    }

    /// The layout of the page answering this READ; `None` for a selector
    /// the broker rejects.
    pub fn layout(&self) -> Option<PageLayout> {
        PageLayout::for_selector(self.selector)
    }
}

impl<'a> Payload<'a> for Read<'a> {
    fn payload_len(&self) -> usize {
        self.selector
            .wire_len()
            .saturating_add(16 + self.max_bytes.wire_len())
            .saturating_add(self.filter.wire_len())
            .saturating_add(
                self.continuation.map_or(0, |c| opt_u64_len(c.cursor_fingerprint) + opt_u64_len(c.captured_watermark)),
            )
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.selector.write(out);
        out.put_u64(self.from_offset);
        out.put_u64(self.limit);
        self.max_bytes.write(out);
        self.filter.write(out);
        if let Some(c) = self.continuation {
            c.cursor_fingerprint.write(out);
            c.captured_watermark.write(out);
        }
    }
    /// Reads every field; the two continuation fields are read when bytes
    /// follow `filter` (both must then be present).
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let selector = r.str()?;
        let from_offset = r.u64()?;
        let limit = r.u64()?;
        let max_bytes = r.field()?;
        let filter = r.field()?;
        let continuation = if r.is_empty() {
            None
        } else {
            Some(ReadContinuation { cursor_fingerprint: r.field()?, captured_watermark: r.field()? })
        };
        Ok(Read { selector, from_offset, limit, max_bytes, filter, continuation })
    }
}

impl Message for Read<'_> {
    const TYPE: MsgType = MsgType::STREAM_READ;
}

// ---------------------------------------------------------------------------
// READ page (WIRE.md §11.2–§11.4)
// ---------------------------------------------------------------------------

/// Layout of a READ page, chosen by the request's selector, never by
/// probing the bytes (WIRE.md §11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PageLayout {
    /// Resource, area and realm selectors: no global offset in records,
    /// no global offset or continuation values in the cursor.
    Compatibility,
    /// Global selectors (realm `*` or `stream://**`): records and cursor
    /// carry the ⊕ fields.
    Extended,
}

impl PageLayout {
    /// The layout for a selector axis.
    pub const fn from_axis(axis: SelectorAxis) -> Self {
        if axis.is_extended() { Self::Extended } else { Self::Compatibility }
    }

    /// The layout for a READ selector; `None` for a selector the broker
    /// rejects.
    pub fn for_selector(selector: &str) -> Option<Self> {
        route::stream_selector(selector).map(Self::from_axis)
    }

    /// True for [`PageLayout::Extended`].
    pub const fn is_extended(self) -> bool {
        matches!(self, Self::Extended)
    }
}

/// A committed record (item tag 0 of a READ page, and the LAST reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventRecord<'a> {
    /// Offset within the resource (0-based, dense).
    pub resource_offset: u64,
    /// Commit-order position within the area.
    pub area_offset: Option<u64>,
    /// Commit-order position within the realm.
    pub realm_offset: Option<u64>,
    /// Commit-order position in the whole broker. On the wire only in the
    /// extended layout: ignored when writing, and `None` when reading, the
    /// compatibility layout (LAST included).
    pub global_offset: Option<u64>,
    /// Record body.
    pub body: &'a [u8],
    /// Metadata given on APPEND.
    pub metadata: Option<&'a [u8]>,
    /// Broker commit timestamp (unit unspecified; treat as opaque).
    pub created_at: u64,
}

impl<'a> EventRecord<'a> {
    /// Encoded length in `layout`.
    pub fn wire_len(&self, layout: PageLayout) -> usize {
        let global = if layout.is_extended() { opt_u64_len(self.global_offset) } else { 0 };
        (8 + opt_u64_len(self.area_offset) + opt_u64_len(self.realm_offset) + global + 8)
            .saturating_add(self.body.wire_len())
            .saturating_add(self.metadata.wire_len())
    }

    /// Writes the record in `layout`.
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S, layout: PageLayout) {
        out.put_u64(self.resource_offset);
        self.area_offset.write(out);
        self.realm_offset.write(out);
        if layout.is_extended() {
            self.global_offset.write(out);
        }
        self.body.write(out);
        self.metadata.write(out);
        out.put_u64(self.created_at);
    }

    /// Reads a record in `layout`.
    pub fn read(r: &mut Reader<'a>, layout: PageLayout) -> Result<Self, DecodeError> {
        Ok(EventRecord {
            resource_offset: r.u64()?,
            area_offset: r.field()?,
            realm_offset: r.field()?,
            global_offset: if layout.is_extended() { r.field()? } else { None },
            body: r.bytes()?,
            metadata: r.field()?,
            created_at: r.u64()?,
        })
    }
}

const ITEM_EVENT: u8 = 0;
const ITEM_FILTERED: u8 = 1;
const ITEM_FILTERED_RANGE: u8 = 2;

/// One item of a READ page. Every route is an exact
/// `stream://realm/area/resource` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Item<'a> {
    /// Tag 0: a committed record.
    Event {
        /// The record's resource.
        route: &'a str,
        /// The record.
        record: EventRecord<'a>,
    },
    /// Tag 1: one committed offset that was skipped.
    Filtered {
        /// The resource.
        route: &'a str,
        /// The skipped offset.
        offset: u64,
        /// Why it was skipped.
        reason: FilteredReason,
    },
    /// Tag 2: an inclusive range of skipped offsets.
    FilteredRange {
        /// The resource.
        route: &'a str,
        /// First skipped offset.
        from_offset: u64,
        /// Last skipped offset (inclusive).
        to_offset: u64,
        /// Why they were skipped.
        reason: FilteredReason,
    },
}

impl<'a> Item<'a> {
    /// The item's concrete route.
    pub const fn route(&self) -> &'a str {
        match self {
            Self::Event { route, .. } | Self::Filtered { route, .. } | Self::FilteredRange { route, .. } => route,
        }
    }

    /// The record of an event item; `None` for filtered markers.
    pub const fn record(&self) -> Option<&EventRecord<'a>> {
        match self {
            Self::Event { record, .. } => Some(record),
            _ => None,
        }
    }
}

/// In `layout`: `str route` (an exact stream route), `u8 tag`, then the
/// record (tag 0) or the skipped offset(s) and reason (tags 1 and 2).
impl<'a> crate::codec::Element<'a> for Item<'a> {
    type Layout = PageLayout;

    /// Reads and validates one item in `layout`: concrete route, tag 0–2,
    /// reason 0–3.
    fn read(r: &mut Reader<'a>, layout: PageLayout) -> Result<Self, DecodeError> {
        let route = r.str()?;
        concrete(route)?;
        match r.u8()? {
            ITEM_EVENT => Ok(Item::Event { route, record: EventRecord::read(r, layout)? }),
            ITEM_FILTERED => Ok(Item::Filtered { route, offset: r.u64()?, reason: r.field()? }),
            ITEM_FILTERED_RANGE => {
                Ok(Item::FilteredRange { route, from_offset: r.u64()?, to_offset: r.u64()?, reason: r.field()? })
            }
            v => Err(DecodeError::InvalidValue { field: "stream item tag", value: v }),
        }
    }

    fn wire_len(&self, layout: PageLayout) -> usize {
        let body = match self {
            Self::Event { record, .. } => record.wire_len(layout),
            Self::Filtered { .. } => 9,
            Self::FilteredRange { .. } => 17,
        };
        Field::wire_len(&self.route()).saturating_add(1).saturating_add(body)
    }

    fn write<S: Sink + ?Sized>(&self, out: &mut S, layout: PageLayout) {
        Field::write(&self.route(), out);
        match self {
            Self::Event { record, .. } => {
                out.put_u8(ITEM_EVENT);
                record.write(out, layout);
            }
            Self::Filtered { offset, reason, .. } => {
                out.put_u8(ITEM_FILTERED);
                out.put_u64(*offset);
                reason.write(out);
            }
            Self::FilteredRange { from_offset, to_offset, reason, .. } => {
                out.put_u8(ITEM_FILTERED_RANGE);
                out.put_u64(*from_offset);
                out.put_u64(*to_offset);
                reason.write(out);
            }
        }
    }

    /// Every item route must be an exact stream route.
    fn check(&self, _: PageLayout) -> Result<(), EncodeError> {
        if is_concrete_route(self.route()) {
            Ok(())
        } else {
            Err(EncodeError::InvalidValue("stream item route is not stream://realm/area/resource"))
        }
    }
}

/// The items of a READ page, validated, borrowed and iterated lazily.
/// Build one with `Items::write_into(items, layout, buf)`
/// ([`List::write_into`]) or a [`PageWriter`].
pub type Items<'a> = List<'a, Item<'a>, PageLayout>;

/// Iterator over the items of an [`Items`].
pub type ItemsIter<'a> = ListIter<'a, Item<'a>, PageLayout>;

/// Writes READ items into a caller buffer, one at a time (brokers): stop
/// when [`ListWriter::push`] reports that the next item does not fit (or
/// refuses an item whose route is not an exact stream route; nothing is
/// written for it), then [`ListWriter::finish`] and put the result in a
/// [`Page`] with its cursor.
pub type PageWriter<'b> = ListWriter<'b, Item<'b>, PageLayout>;

impl<'a> Items<'a> {
    /// Iterates over the event records only (markers skipped; keep cursor
    /// progress from the page's [`Cursor`]).
    pub fn events(&self) -> impl Iterator<Item = (&'a str, EventRecord<'a>)> + use<'a> {
        self.iter().filter_map(|i| match i {
            Item::Event { route, record } => Some((route, record)),
            _ => None,
        })
    }
}

/// The cursor that ends every READ page (WIRE.md §11.4).
///
/// The three ⊕ fields (`last_global_offset`, `cursor_fingerprint`,
/// `captured_watermark`) are on the wire only in the extended layout: they
/// are ignored when writing, and `None` when reading, the compatibility
/// layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cursor {
    /// Last resource offset examined.
    pub last_resource_offset: u64,
    /// Last area offset examined.
    pub last_area_offset: Option<u64>,
    /// Last realm offset examined.
    pub last_realm_offset: Option<u64>,
    /// Last global offset examined (extended only).
    pub last_global_offset: Option<u64>,
    /// `true`: read again at once; `false`: caught up with the watermark.
    pub has_more: bool,
    /// Continuation value of global reads (extended only); protocol-private.
    pub cursor_fingerprint: Option<u64>,
    /// Continuation value of global reads (extended only); protocol-private.
    pub captured_watermark: Option<u64>,
}

impl Cursor {
    /// Encoded length in `layout`.
    pub const fn wire_len(&self, layout: PageLayout) -> usize {
        let base = 8 + opt_u64_len(self.last_area_offset) + opt_u64_len(self.last_realm_offset) + 1;
        if layout.is_extended() {
            base + opt_u64_len(self.last_global_offset)
                + opt_u64_len(self.cursor_fingerprint)
                + opt_u64_len(self.captured_watermark)
        } else {
            base
        }
    }

    /// Writes the cursor in `layout`.
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S, layout: PageLayout) {
        out.put_u64(self.last_resource_offset);
        self.last_area_offset.write(out);
        self.last_realm_offset.write(out);
        if layout.is_extended() {
            self.last_global_offset.write(out);
        }
        self.has_more.write(out);
        if layout.is_extended() {
            self.cursor_fingerprint.write(out);
            self.captured_watermark.write(out);
        }
    }

    /// Reads a cursor in `layout`.
    pub fn read(r: &mut Reader<'_>, layout: PageLayout) -> Result<Self, DecodeError> {
        let last_resource_offset = r.u64()?;
        let last_area_offset = r.field()?;
        let last_realm_offset = r.field()?;
        let last_global_offset = if layout.is_extended() { r.field()? } else { None };
        let has_more = r.bool()?;
        let (cursor_fingerprint, captured_watermark) =
            if layout.is_extended() { (r.field()?, r.field()?) } else { (None, None) };
        Ok(Cursor {
            last_resource_offset,
            last_area_offset,
            last_realm_offset,
            last_global_offset,
            has_more,
            cursor_fingerprint,
            captured_watermark,
        })
    }

    /// The `last_*` value of `axis`, if present.
    pub const fn last_offset(&self, axis: SelectorAxis) -> Option<u64> {
        match axis {
            SelectorAxis::Resource => Some(self.last_resource_offset),
            SelectorAxis::Area => self.last_area_offset,
            SelectorAxis::Realm => self.last_realm_offset,
            SelectorAxis::Global => self.last_global_offset,
        }
    }

    /// The `from_offset` of the next READ (WIRE.md §11.4): the `last_*`
    /// value of the selector's axis plus one, or `from_offset` unchanged
    /// when that value is absent (or is `u64::MAX`).
    pub const fn next_offset(&self, axis: SelectorAxis, from_offset: u64) -> u64 {
        match self.last_offset(axis) {
            Some(v) => match v.checked_add(1) {
                Some(n) => n,
                None => from_offset,
            },
            None => from_offset,
        }
    }

    /// The continuation fields to copy into the next READ of the same
    /// global selector and filter.
    pub const fn continuation(&self) -> ReadContinuation {
        ReadContinuation { cursor_fingerprint: self.cursor_fingerprint, captured_watermark: self.captured_watermark }
    }
}

/// A full READ page: items, then the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Page<'a> {
    /// The items; their layout is the page's.
    pub items: Items<'a>,
    /// The cursor (written in the items' layout).
    pub cursor: Cursor,
}

impl<'a> Page<'a> {
    /// The page's layout.
    pub const fn layout(&self) -> PageLayout {
        self.items.layout()
    }

    /// Length of the page (the contents of `bytes page`).
    pub fn wire_len(&self) -> usize {
        4usize.saturating_add(self.items.wire_len()).saturating_add(self.cursor.wire_len(self.layout()))
    }

    /// Writes the page contents (count, items, cursor).
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        self.items.write(out);
        self.cursor.write(out, self.layout());
    }

    /// Decodes the contents of `bytes page`: it must end exactly after the
    /// cursor.
    pub fn decode(page: &'a [u8], layout: PageLayout) -> Result<Self, DecodeError> {
        Reader::decode(page, |r| Ok(Page { items: Items::read(r, layout)?, cursor: Cursor::read(r, layout)? }))
    }
}

/// READ OK: `u8 has_session_id` (always 0) and `bytes page`, or nothing
/// after the status byte (an empty page without a cursor; WIRE.md C36).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadOk<'a> {
    /// The page; `None` for the bare `00` form.
    pub page: Option<Page<'a>>,
}

impl<'a> ReadOk<'a> {
    /// Reads the success fields in `layout`.
    pub fn read_with(r: &mut Reader<'a>, layout: PageLayout) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(ReadOk { page: None });
        }
        r.expect_u8(0, "stream read session flag")?;
        let page = r.bytes()?;
        Page::decode(page, layout).map(|p| ReadOk { page: Some(p) })
    }

    /// The items (none for the bare form).
    pub fn items(&self) -> ItemsIter<'a> {
        match &self.page {
            Some(p) => p.items.iter(),
            None => Items::empty(PageLayout::Compatibility).iter(),
        }
    }

    /// The cursor, if the page has one.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.page.as_ref().map(|p| &p.cursor)
    }

    /// The `from_offset` of the next READ; see [`Cursor::next_offset`]. A
    /// page without a cursor keeps `from_offset`.
    pub fn next_offset(&self, axis: SelectorAxis, from_offset: u64) -> u64 {
        self.cursor().map_or(from_offset, |c| c.next_offset(axis, from_offset))
    }
}

impl<'a> Payload<'a> for ReadOk<'a> {
    fn payload_len(&self) -> usize {
        self.page.as_ref().map_or(0, |p| 5usize.saturating_add(p.wire_len()))
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        if let Some(p) = &self.page {
            out.put_u8(0);
            out.put_u32(u32::try_from(p.wire_len()).unwrap_or(u32::MAX));
            p.write(out);
        }
    }
    /// Reads the **compatibility** layout; use [`decode_read_reply`] (or
    /// [`ReadOk::read_with`]) with the layout of the request.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::read_with(r, PageLayout::Compatibility)
    }
}

// ---------------------------------------------------------------------------
// LAST and GET_METADATA (WIRE.md §11.5)
// ---------------------------------------------------------------------------

wire_message! {
    /// LAST (605): the newest record of a stream. OK: [`LastOk`].
    pub struct Last<'a> = MsgType::STREAM_LAST;
    {
        /// Exact `stream://realm/area/resource`.
        pub route: &'a str,
    }
}

/// LAST OK: nothing (empty stream) or one record in the compatibility
/// layout, without route, tag or length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LastOk<'a> {
    /// The last record; its `global_offset` is always `None`.
    pub record: Option<EventRecord<'a>>,
}

impl<'a> Payload<'a> for LastOk<'a> {
    fn payload_len(&self) -> usize {
        self.record.map_or(0, |rec| rec.wire_len(PageLayout::Compatibility))
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        if let Some(rec) = &self.record {
            rec.write(out, PageLayout::Compatibility);
        }
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(LastOk { record: None });
        }
        EventRecord::read(r, PageLayout::Compatibility).map(|rec| LastOk { record: Some(rec) })
    }
}

wire_message! {
    /// GET_METADATA (606). OK: [`MetadataOk`].
    pub struct GetMetadata<'a> = MsgType::STREAM_GET_METADATA;
    {
        /// Exact `stream://realm/area/resource`.
        pub route: &'a str,
    }
}

wire_struct! {
    /// The metadata block of a GET_METADATA reply. Absent offsets stay
    /// absent here; APIs may show them as 0 (WIRE.md C63).
    pub struct StreamMetadata {
        /// First offset; absent for a stream without records.
        pub first_offset: Option<u64>,
        /// Last offset; absent for a stream without records.
        pub last_offset: Option<u64>,
        /// Number of records.
        pub record_count: u64,
        /// Maximum events per APPEND batch.
        pub max_batch_events: u64,
        /// Maximum bytes per APPEND batch.
        pub max_batch_bytes: u64,
        /// Retention, if any.
        pub ttl_seconds: Option<u64>,
        /// Area watermark.
        pub area_watermark: u64,
        /// Realm watermark.
        pub realm_watermark: u64,
    }
}

/// GET_METADATA OK: nothing (no metadata, e.g. a wildcard route) or the
/// metadata block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MetadataOk {
    /// The block; `None` for the bare `00` form.
    pub metadata: Option<StreamMetadata>,
}

impl<'a> Payload<'a> for MetadataOk {
    fn payload_len(&self) -> usize {
        self.metadata.map_or(0, |m| m.payload_len())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        if let Some(m) = &self.metadata {
            m.write_payload(out);
        }
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(MetadataOk { metadata: None });
        }
        StreamMetadata::read_payload(r).map(|m| MetadataOk { metadata: Some(m) })
    }
}

// ---------------------------------------------------------------------------
// Subscriptions (WIRE.md §8.6, §11.6)
// ---------------------------------------------------------------------------

wire_message! {
    /// SUBSCRIBE (607). OK: [`SubscribeOk`].
    pub struct Subscribe<'a> = MsgType::STREAM_SUBSCRIBE;
    {
        /// One of the ten selectors of WIRE.md §9.3.
        pub selector: &'a str,
    }
}

/// SUBSCRIBE OK: `u8 1`, `u64 subscription_id`, optionally followed by an
/// empty `bytes` (`00 00 00 00`, the form fitz-rs and cntryl-fitz read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubscribeOk {
    /// Subscription id.
    pub sub_id: u64,
    /// True if the reply carries the trailing empty `bytes`. Brokers send
    /// `false` (the 10-byte form) unless emulating the SDK's expectation.
    pub empty_data: bool,
}

impl<'a> Payload<'a> for SubscribeOk {
    fn payload_len(&self) -> usize {
        9 + if self.empty_data { 4 } else { 0 }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(1);
        out.put_u64(self.sub_id);
        if self.empty_data {
            out.put_u32(0);
        }
    }
    /// Rejects a flag other than 1, a missing id and a non-empty `bytes`.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.expect_u8(1, "stream subscribe id flag")?;
        let sub_id = r.u64()?;
        let empty_data = if r.is_empty() {
            false
        } else if r.bytes()?.is_empty() {
            true
        } else {
            return Err(DecodeError::TrailingBytes);
        };
        Ok(SubscribeOk { sub_id, empty_data })
    }
}

wire_message! {
    /// UNSUBSCRIBE (608), by the original selector string. OK: empty.
    pub struct Unsubscribe<'a> = MsgType::STREAM_UNSUBSCRIBE;
    {
        /// The string given to SUBSCRIBE.
        pub selector: &'a str,
    }
}

/// NOTIFY (609, broker → client): a commit or watermark summary for a
/// matching subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Notify<'a> {
    /// Subscription id.
    pub sub_id: u64,
    /// Exact `stream://realm/area/resource`; anything else is a malformed
    /// notification (WIRE.md C56). Brokers must send a concrete route.
    pub route: &'a str,
    /// UTF-8 JSON summary, raw; see [`Notify::summary`]. Not part of the
    /// wire check: any bytes are a valid frame.
    pub payload: &'a [u8],
}

impl<'a> Notify<'a> {
    /// The lenient JSON view of the payload ([`NotifySummary::parse`]).
    pub fn summary(&self) -> NotifySummary<'a> {
        NotifySummary::parse(self.payload)
    }
}

impl<'a> Payload<'a> for Notify<'a> {
    fn payload_len(&self) -> usize {
        8usize.saturating_add(self.route.wire_len()).saturating_add(self.payload.wire_len())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.sub_id);
        self.route.write(out);
        self.payload.write(out);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let sub_id = r.u64()?;
        let route = r.str()?;
        concrete(route)?;
        let payload = r.bytes()?;
        Ok(Notify { sub_id, route, payload })
    }
}

impl Message for Notify<'_> {
    const TYPE: MsgType = MsgType::STREAM_NOTIFY;
}

// ---------------------------------------------------------------------------
// NOTIFY JSON summary (WIRE.md §11.6)
// ---------------------------------------------------------------------------

/// The JSON summary of a Stream NOTIFY, read leniently as fitz-py does
/// (WIRE.md §11.6, C34, C64): unknown keys are ignored and missing numbers
/// are 0; an empty payload, invalid JSON (or UTF-8), a non-object, a
/// non-string `event` or a known numeric key whose value is not a
/// non-negative integer that fits in `u64` give the all-default summary.
/// For repeated keys the last one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NotifySummary<'a> {
    /// `"committed"`, `"watermark_advanced"`, …; empty when absent. Borrowed
    /// as written between the quotes: escape sequences are not decoded.
    pub event: &'a str,
    /// `first_resource_offset`.
    pub first_resource_offset: u64,
    /// `last_resource_offset`.
    pub last_resource_offset: u64,
    /// `first_area_offset`.
    pub first_area_offset: u64,
    /// `last_area_offset`.
    pub last_area_offset: u64,
    /// `first_realm_offset`.
    pub first_realm_offset: u64,
    /// `last_realm_offset`.
    pub last_realm_offset: u64,
    /// `first_global_offset` (newer brokers).
    pub first_global_offset: u64,
    /// `last_global_offset` (newer brokers).
    pub last_global_offset: u64,
    /// `batch_size`.
    pub batch_size: u64,
    /// `previous` (watermark events).
    pub previous: u64,
    /// `watermark` (watermark events).
    pub watermark: u64,
}

impl<'a> NotifySummary<'a> {
    /// Parses a NOTIFY payload; never fails (see the type's documentation).
    pub fn parse(payload: &'a [u8]) -> Self {
        let Ok(text) = core::str::from_utf8(payload) else { return Self::default() };
        json::summary(text).unwrap_or_default()
    }

    fn slot(&mut self, key: &str) -> Option<&mut u64> {
        Some(match key {
            "first_resource_offset" => &mut self.first_resource_offset,
            "last_resource_offset" => &mut self.last_resource_offset,
            "first_area_offset" => &mut self.first_area_offset,
            "last_area_offset" => &mut self.last_area_offset,
            "first_realm_offset" => &mut self.first_realm_offset,
            "last_realm_offset" => &mut self.last_realm_offset,
            "first_global_offset" => &mut self.first_global_offset,
            "last_global_offset" => &mut self.last_global_offset,
            "batch_size" => &mut self.batch_size,
            "previous" => &mut self.previous,
            "watermark" => &mut self.watermark,
            _ => return None,
        })
    }
}

/// A minimal, non-recursive JSON reader for [`NotifySummary`]: validates
/// the whole document (Python's `json` grammar, including `NaN` and
/// `Infinity`) without allocating.
mod json {
    use super::NotifySummary;

    /// Nesting deeper than this is treated as invalid.
    const MAX_DEPTH: u32 = 128;

    struct P<'a> {
        s: &'a str,
        pos: usize,
    }

    /// A value as far as the summary cares.
    enum Value<'a> {
        Str(&'a str),
        Int(u64),
        Other,
    }

    impl<'a> P<'a> {
        fn peek(&self) -> Option<u8> {
            self.s.as_bytes().get(self.pos).copied()
        }

        fn bump(&mut self) -> Option<u8> {
            let b = self.peek()?;
            self.pos += 1;
            Some(b)
        }

        fn eat(&mut self, b: u8) -> Option<()> {
            (self.bump()? == b).then_some(())
        }

        fn eat_word(&mut self, w: &str) -> Option<()> {
            let s: &'a str = self.s;
            let hit = s.as_bytes().get(self.pos..)?.starts_with(w.as_bytes());
            hit.then(|| self.pos += w.len())
        }

        fn ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        /// A string after its opening quote; returns the raw contents.
        fn string(&mut self) -> Option<&'a str> {
            let start = self.pos;
            loop {
                match self.bump()? {
                    b'"' => return self.s.get(start..self.pos - 1),
                    b'\\' => match self.bump()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                if !self.bump()?.is_ascii_hexdigit() {
                                    return None;
                                }
                            }
                        }
                        _ => return None,
                    },
                    c if c < 0x20 => return None,
                    _ => {}
                }
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
            self.pos - start
        }

        /// A number (or `NaN` / `Infinity` / `-Infinity`).
        fn number(&mut self) -> Option<Value<'a>> {
            let start = self.pos;
            let negative = self.peek() == Some(b'-');
            if negative {
                self.pos += 1;
                if self.eat_word("Infinity").is_some() {
                    return Some(Value::Other);
                }
            }
            match self.peek()? {
                b'0' => self.pos += 1,
                b'1'..=b'9' => {
                    self.digits();
                }
                _ => return None,
            }
            let int_end = self.pos;
            let mut integer = !negative;
            if self.peek() == Some(b'.') {
                self.pos += 1;
                integer = false;
                if self.digits() == 0 {
                    return None;
                }
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.pos += 1;
                integer = false;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if self.digits() == 0 {
                    return None;
                }
            }
            let int = self.s.get(start..int_end).filter(|_| integer).and_then(|t| t.parse::<u64>().ok());
            Some(int.map_or(Value::Other, Value::Int))
        }

        fn scalar(&mut self) -> Option<Value<'a>> {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    self.string().map(Value::Str)
                }
                b't' => self.eat_word("true").map(|()| Value::Other),
                b'f' => self.eat_word("false").map(|()| Value::Other),
                b'n' => self.eat_word("null").map(|()| Value::Other),
                b'N' => self.eat_word("NaN").map(|()| Value::Other),
                b'I' => self.eat_word("Infinity").map(|()| Value::Other),
                _ => self.number(),
            }
        }

        /// One value of any kind, nested ones included (iteratively, with
        /// a bit stack of open containers: 1 = object, 0 = array).
        fn value(&mut self) -> Option<Value<'a>> {
            self.ws();
            let first = self.peek()?;
            if first != b'{' && first != b'[' {
                return self.scalar();
            }
            self.pos += 1;
            let mut stack: u128 = u128::from(first == b'{');
            let mut depth: u32 = 1;
            // True right after an opening bracket (the container may close
            // at once), false after a member (`,` or the closer follows).
            let mut open = true;
            loop {
                self.ws();
                let in_object = stack & 1 == 1;
                let closer = if in_object { b'}' } else { b']' };
                let c = self.bump()?;
                if c == closer {
                    stack >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        return Some(Value::Other);
                    }
                    open = false;
                    continue;
                }
                if open {
                    // The first member starts with the byte just read.
                    self.pos -= 1;
                } else if c == b',' {
                    self.ws();
                } else {
                    return None;
                }
                if in_object {
                    self.eat(b'"')?;
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                }
                match self.peek()? {
                    b @ (b'{' | b'[') => {
                        if depth >= MAX_DEPTH {
                            return None;
                        }
                        self.pos += 1;
                        stack = (stack << 1) | u128::from(b == b'{');
                        depth += 1;
                        open = true;
                    }
                    _ => {
                        self.scalar()?;
                        open = false;
                    }
                }
            }
        }
    }

    /// The summary of a top-level object, or `None` when the document is
    /// invalid or the all-default summary applies.
    pub(super) fn summary(s: &str) -> Option<NotifySummary<'_>> {
        let mut p = P { s, pos: 0 };
        let mut out = NotifySummary::default();
        // Last occurrence wins: remember whether the last value of a key
        // was unusable, decide at the end.
        let mut event_bad = false;
        let mut number_bad: u16 = 0;
        p.ws();
        p.eat(b'{')?;
        p.ws();
        if p.peek()? == b'}' {
            p.pos += 1;
        } else {
            loop {
                p.ws();
                p.eat(b'"')?;
                let key = p.string()?;
                p.ws();
                p.eat(b':')?;
                let v = p.value()?;
                if key == "event" {
                    match v {
                        Value::Str(e) => {
                            out.event = e;
                            event_bad = false;
                        }
                        _ => event_bad = true,
                    }
                } else if let Some(i) = KEYS.iter().position(|k| *k == key) {
                    let bit = 1u16 << i;
                    match (v, out.slot(key)) {
                        (Value::Int(n), Some(slot)) => {
                            *slot = n;
                            number_bad &= !bit;
                        }
                        _ => number_bad |= bit,
                    }
                }
                p.ws();
                match p.bump()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        p.ws();
        if p.pos != s.len() || event_bad || number_bad != 0 {
            return None;
        }
        Some(out)
    }

    const KEYS: [&str; 11] = [
        "first_resource_offset",
        "last_resource_offset",
        "first_area_offset",
        "last_area_offset",
        "first_realm_offset",
        "last_realm_offset",
        "first_global_offset",
        "last_global_offset",
        "batch_size",
        "previous",
        "watermark",
    ];
}

// ---------------------------------------------------------------------------
// Reply decoders
// ---------------------------------------------------------------------------

/// Decodes the reply to BEGIN.
pub fn decode_begin_reply(payload: &[u8]) -> Result<Reply<'_, BeginOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Stream)
}

/// Decodes the reply to APPEND.
pub fn decode_append_reply(payload: &[u8]) -> Result<Reply<'_, AppendOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Stream)
}

/// Decodes the reply to COMMIT.
pub fn decode_commit_reply(payload: &[u8]) -> Result<Reply<'_, CommitOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Stream)
}

/// Decodes the reply to READ with the page layout of the request.
pub fn decode_read_reply(payload: &[u8], layout: PageLayout) -> Result<Reply<'_, ReadOk<'_>>, DecodeError> {
    Reply::decode_with(payload, StatusSet::Stream, |r| ReadOk::read_with(r, layout))
}

/// Decodes the reply to READ, taking the layout from the request's
/// selector. Error replies decode whatever the selector; a success reply
/// to a selector the broker would reject is
/// [`DecodeError::OutOfRange`]`("stream selector")`.
pub fn decode_read_reply_for<'a>(payload: &'a [u8], selector: &str) -> Result<Reply<'a, ReadOk<'a>>, DecodeError> {
    let layout = PageLayout::for_selector(selector);
    Reply::decode_with(payload, StatusSet::Stream, |r| {
        ReadOk::read_with(r, layout.ok_or(DecodeError::OutOfRange("stream selector"))?)
    })
}

/// Decodes the reply to LAST.
pub fn decode_last_reply(payload: &[u8]) -> Result<Reply<'_, LastOk<'_>>, DecodeError> {
    Reply::decode(payload, StatusSet::Stream)
}

/// Decodes the reply to GET_METADATA.
pub fn decode_metadata_reply(payload: &[u8]) -> Result<Reply<'_, MetadataOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Stream)
}

/// Decodes the reply to SUBSCRIBE.
pub fn decode_subscribe_reply(payload: &[u8]) -> Result<Reply<'_, SubscribeOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Stream)
}

/// Decodes a reply with no success fields (ROLLBACK, UNSUBSCRIBE).
pub fn decode_ack_reply(payload: &[u8]) -> Result<Reply<'_, ()>, DecodeError> {
    Reply::decode(payload, StatusSet::Stream)
}

fn walk_filter(blob: &[u8]) {
    if let Ok(set) = FilterSet::parse(blob) {
        let _ = set.matches("");
        for clause in set {
            if let Clause::AnyOf(values) = clause {
                for v in values {
                    let _ = v;
                }
            }
        }
    }
}

fn walk_read(reply: Result<Reply<'_, ReadOk<'_>>, DecodeError>) {
    if let Ok(Reply::Ok(ok)) = reply {
        for item in ok.items() {
            let _ = item.record();
        }
        for axis in [SelectorAxis::Resource, SelectorAxis::Area, SelectorAxis::Realm, SelectorAxis::Global] {
            let _ = ok.next_offset(axis, 7);
        }
        if let Some(p) = ok.page {
            for event in p.items.events() {
                let _ = event;
            }
            let _ = p.cursor.continuation();
        }
    }
}

/// Runs every Stream decoder, in every context, over `payload` and
/// discards the results. For fuzz targets and property tests: it must never
/// panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    let _ = Begin::decode(payload);
    let _ = Append::decode(payload);
    let _ = Commit::decode(payload);
    let _ = Rollback::decode(payload);
    if let Ok(read) = Read::decode(payload) {
        let _ = read.layout();
        if let Some(blob) = read.filter.as_ref().and_then(Filter::raw) {
            walk_filter(blob);
        }
    }
    walk_filter(payload);
    let _ = Last::decode(payload);
    let _ = GetMetadata::decode(payload);
    let _ = Subscribe::decode(payload);
    let _ = Unsubscribe::decode(payload);
    if let Ok(n) = Notify::decode(payload) {
        let _ = n.summary();
    }
    let _ = NotifySummary::parse(payload);
    let _ = decode_begin_reply(payload);
    if let Ok(Reply::Ok(a)) = decode_append_reply(payload) {
        let _ = a.offset();
    }
    let _ = decode_commit_reply(payload);
    walk_read(decode_read_reply(payload, PageLayout::Compatibility));
    walk_read(decode_read_reply(payload, PageLayout::Extended));
    walk_read(decode_read_reply_for(payload, "stream://**"));
    walk_read(decode_read_reply_for(payload, "stream://r/a/*"));
    walk_read(decode_read_reply_for(payload, "stream://r/a"));
    if let Ok(page) = Page::decode(payload, PageLayout::Extended) {
        for item in page.items {
            let _ = item;
        }
    }
    let _ = decode_last_reply(payload);
    let _ = decode_metadata_reply(payload);
    let _ = decode_subscribe_reply(payload);
    let _ = decode_ack_reply(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_blob_matches_wire_md_example() {
        let any = ["a", "b"];
        let clauses = [FilterClause::Equals("proj.alpha"), FilterClause::AnyOf(&any)];
        let mut buf = [0u8; 64];
        let blob = write_filter_blob(&clauses, &mut buf).unwrap_or_default();
        let want: &[u8] = b"\x00\xf1\x00\x00\x00\x02\x00\x00\x00\x00\x0aproj.alpha\x03\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x01b";
        assert_eq!(blob, want);
        assert_eq!(Filter::Clauses(&clauses), Filter::Raw(want));
        let set = FilterSet::parse(want);
        assert!(matches!(set, Ok(s) if s.len() == 2 && !s.matches("proj.alpha") && !s.matches("a")));
        let passing = FilterSet::parse(b"\x00\xf1\x00\x00\x00\x02\x01\x00\x00\x00\x01x\x02\x00\x00\x00\x02ab");
        assert!(matches!(passing, Ok(s) if s.matches("abc") && !s.matches("x") && !s.matches("b")));
        assert_eq!(FilterSet::parse(b"\x01\xf1\x00\x00\x00\x00").map(|_| ()), Err(FilterError::UnsupportedVersion));
        assert_eq!(FilterSet::parse(b"\x00\xf1\x00\x00\x00\x01\x04").map_err(|e| e.code()), Err(2007));
        assert_eq!(FilterSet::parse(b"\x00").map_err(|e| e.code()), Err(2007));
    }

    #[test]
    fn notify_summary_is_lenient() {
        let s =
            NotifySummary::parse(br#"{"event":"committed","batch_size":3,"x":[1,{"y":null}],"first_global_offset":9}"#);
        assert_eq!((s.event, s.batch_size, s.first_global_offset), ("committed", 3, 9));
        assert_eq!(NotifySummary::parse(b""), NotifySummary::default());
        assert_eq!(NotifySummary::parse(b"[1]"), NotifySummary::default());
        assert_eq!(NotifySummary::parse(br#"{"event":1,"batch_size":3}"#), NotifySummary::default());
        assert_eq!(NotifySummary::parse(br#"{"event":"c","batch_size":"3"}"#), NotifySummary::default());
        assert_eq!(NotifySummary::parse(br#"{"event":"c","batch_size":3,}"#), NotifySummary::default());
        let w = NotifySummary::parse(br#" {"event":"watermark_advanced","previous":1,"watermark":2} "#);
        assert_eq!((w.event, w.previous, w.watermark), ("watermark_advanced", 1, 2));
        assert_eq!(NotifySummary::parse(br#"{"batch_size":1}"#).batch_size, 1);
        let deep = [b'['; 200];
        assert_eq!(NotifySummary::parse(&deep), NotifySummary::default());
    }

    #[test]
    fn next_offset_keeps_position_without_axis_value() {
        let c = Cursor { last_resource_offset: 4, last_area_offset: Some(10), ..Cursor::default() };
        assert_eq!(c.next_offset(SelectorAxis::Resource, 0), 5);
        assert_eq!(c.next_offset(SelectorAxis::Area, 0), 11);
        assert_eq!(c.next_offset(SelectorAxis::Realm, 3), 3);
        assert_eq!(ReadOk { page: None }.next_offset(SelectorAxis::Resource, 3), 3);
    }
}
