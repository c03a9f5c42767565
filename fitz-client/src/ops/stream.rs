//! Streams (WIRE.md §8.6, §9.3, §11; current dialect §B6).
//!
//! - Append sessions: [`Stream::begin`] opens an [`Appender`] bound to the
//!   connection it was opened on (every operation of an earlier connection
//!   fails with [`Error::StaleHandle`]; dropping it schedules a rollback).
//! - Reads: [`Stream::read_page`] returns one [`Page`] (events and filtered
//!   markers, iterated lazily from the reply, and its cursor);
//!   [`Stream::read`] the same request seen as [`Events`] only. Every page
//!   yields the [`Position`] to continue from; [`Stream::replay`] walks the
//!   pages until the reader has caught up, enforcing the stall rule of
//!   §11.4.
//! - [`Stream::last`], [`Stream::metadata`], and [`Stream::subscribe`] for
//!   commit notifications with their JSON summary.
//!
//! Nothing in the requests depends on the dialect: global (extended-layout)
//! reads and their continuation values are part of both dialects, and
//! status-2 errors of current brokers are decoded everywhere, with their
//! code, into [`Error::Server`]. A legacy broker sends most Stream domain
//! errors without a code: [`is_conflict`] and [`is_session_active`] look at
//! both forms. Selectors are checked locally (the ten forms of §9.3, at most
//! 512 bytes): a broker may close the connection on one it cannot split, so
//! an invalid one fails with [`Error::Invalid`] and nothing is sent.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll};

use fitz_wire::route::{self, SelectorAxis};
use fitz_wire::stream::{self as wire, PageLayout};
use fitz_wire::{MsgType, Payload, Reply};

use crate::client::{BufOf, Client, Shared, Subscription};
use crate::engine::Buf;
use crate::error::Error;
use crate::ops::{ok, poll_record};

pub use fitz_wire::stream::{
    CommitMode, FilterClause as Clause, FilteredReason, NotifySummary, StreamMetadata as Metadata,
};

/// Page size of a [`Query`] unless set.
pub const DEFAULT_LIMIT: u64 = 100;

/// Error code of an optimistic-concurrency conflict on APPEND.
pub const ERR_CONCURRENCY_CONFLICT: u32 = 2001;

/// Error code of a BEGIN on a resource that already has an append session.
pub const ERR_SESSION_ALREADY_ACTIVE: u32 = 2002;

/// True if `e` is an APPEND conflict: the code 2001, or (legacy brokers
/// send it uncoded) a message that says "conflict".
pub fn is_conflict(e: &Error) -> bool {
    server_error_is(e, ERR_CONCURRENCY_CONFLICT, "conflict")
}

/// True if `e` says another append session is open on the resource: the
/// code 2002, or an uncoded message that says "already active".
pub fn is_session_active(e: &Error) -> bool {
    server_error_is(e, ERR_SESSION_ALREADY_ACTIVE, "already active")
}

fn server_error_is(e: &Error, code: u32, text: &str) -> bool {
    match e {
        Error::Server(f) => match f.code {
            Some(c) => c == code,
            None => f.message.contains(text),
        },
        _ => false,
    }
}

/// A selector that is not one of the ten of WIRE.md §9.3.
const INVALID_SELECTOR: Error = Error::Invalid("stream selector (WIRE.md §9.3)");

/// A route that is neither exact nor a selector.
const INVALID_ROUTE: Error = Error::Invalid("stream route (stream://realm/area/resource)");

/// Stream operations of a client: `client.stream()`.
pub struct Stream<'c, H> {
    c: &'c Client<H>,
    timeout_ms: u64,
}

impl<H> Clone for Stream<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H> Copy for Stream<'_, H> {}

impl<H: Shared> Client<H> {
    /// The Stream domain.
    pub fn stream(&self) -> Stream<'_, H> {
        Stream { c: self, timeout_ms: 0 }
    }
}

/// Where a read starts: an offset on the selector's cursor axis (§11.4),
/// plus, after a page of a global selector, the continuation values the
/// next page of the same selector and filter must echo. Only the offset is
/// meant to be stored; [`Position::at`] starts again from a stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Position {
    offset: u64,
    continuation: wire::ReadContinuation,
}

impl Position {
    /// The first offset of the axis.
    pub const START: Position = Position::at(0);

    /// From `offset` (on the selector's axis), without continuation.
    pub const fn at(offset: u64) -> Self {
        Position { offset, continuation: wire::ReadContinuation { cursor_fingerprint: None, captured_watermark: None } }
    }

    /// The offset on the selector's axis.
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

/// A READ: selector, start, page size, byte budget and filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// One of the ten selectors of WIRE.md §9.3.
    pub selector: &'a str,
    /// Where to start.
    pub from: Position,
    /// Most items per page (markers included).
    pub limit: u64,
    /// Byte budget of the page (the broker stops early; at least one item
    /// is returned).
    pub max_bytes: Option<u64>,
    /// Clauses on the records' discriminators, all of which must match;
    /// records that fail them come back as filtered markers. Empty = no
    /// filter.
    pub filter: &'a [Clause<'a>],
}

impl<'a> Query<'a> {
    /// A read of `selector` from its first offset, [`DEFAULT_LIMIT`] items
    /// per page, no byte budget, no filter.
    pub const fn new(selector: &'a str) -> Self {
        Query { selector, from: Position::START, limit: DEFAULT_LIMIT, max_bytes: None, filter: &[] }
    }

    /// Starts at `from` (an offset with [`Position::at`], or a page's
    /// [`Page::next`]).
    pub const fn from(mut self, from: Position) -> Self {
        self.from = from;
        self
    }

    /// Starts at `offset` on the selector's axis.
    pub const fn from_offset(self, offset: u64) -> Self {
        self.from(Position::at(offset))
    }

    /// Sets the page size.
    pub const fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Sets a byte budget.
    pub const fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// Sets the filter.
    pub const fn filter(mut self, clauses: &'a [Clause<'a>]) -> Self {
        self.filter = clauses;
        self
    }
}

/// A committed record: of a page ([`Event::record`]) or from
/// [`Stream::last`]. Body and metadata are parts of the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<P> {
    /// Offset within the resource (0-based, dense).
    pub resource_offset: u64,
    /// Commit-order position within the area.
    pub area_offset: Option<u64>,
    /// Commit-order position within the realm.
    pub realm_offset: Option<u64>,
    /// Commit-order position in the route family; only on pages of global
    /// selectors.
    pub global_offset: Option<u64>,
    /// The body.
    pub body: P,
    /// The metadata given on APPEND.
    pub metadata: Option<P>,
    /// The broker's commit timestamp (unit unspecified: opaque).
    pub created_at: u64,
}

impl<P: Buf> Record<P> {
    fn of(payload: &P, r: &wire::EventRecord<'_>) -> Self {
        Record {
            resource_offset: r.resource_offset,
            area_offset: r.area_offset,
            realm_offset: r.realm_offset,
            global_offset: r.global_offset,
            body: payload.part(r.body),
            metadata: r.metadata.map(|m| payload.part(m)),
            created_at: r.created_at,
        }
    }
}

/// A text part of a reply (decoded, hence valid UTF-8).
fn text<P: Buf>(p: &P) -> &str {
    core::str::from_utf8(p.as_ref()).unwrap_or("")
}

/// An event of a page: a record and its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<P> {
    route: P,
    /// The record.
    pub record: Record<P>,
}

impl<P: Buf> Event<P> {
    /// The record's `stream://realm/area/resource`.
    pub fn route(&self) -> &str {
        text(&self.route)
    }
}

/// One item of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageItem<P> {
    /// A committed record.
    Event(Event<P>),
    /// A committed offset that was skipped (it still advances the cursor).
    Filtered {
        /// The resource, as a part of the reply ([`PageItem::route`]).
        route: P,
        /// The resource offset skipped.
        offset: u64,
        /// Why.
        reason: FilteredReason,
    },
    /// An inclusive range of skipped offsets.
    FilteredRange {
        /// The resource, as a part of the reply ([`PageItem::route`]).
        route: P,
        /// First skipped resource offset.
        from_offset: u64,
        /// Last skipped resource offset.
        to_offset: u64,
        /// Why.
        reason: FilteredReason,
    },
}

impl<P: Buf> PageItem<P> {
    fn of(payload: &P, item: wire::Item<'_>) -> Self {
        let route = payload.part(item.route().as_bytes());
        match item {
            wire::Item::Event { record, .. } => PageItem::Event(Event { route, record: Record::of(payload, &record) }),
            wire::Item::Filtered { offset, reason, .. } => PageItem::Filtered { route, offset, reason },
            wire::Item::FilteredRange { from_offset, to_offset, reason, .. } => {
                PageItem::FilteredRange { route, from_offset, to_offset, reason }
            }
        }
    }

    /// The item's `stream://realm/area/resource`.
    pub fn route(&self) -> &str {
        match self {
            PageItem::Event(e) => e.route(),
            PageItem::Filtered { route, .. } | PageItem::FilteredRange { route, .. } => text(route),
        }
    }

    /// The event, if this is one (not a filtered marker).
    pub fn event(&self) -> Option<&Event<P>> {
        match self {
            PageItem::Event(e) => Some(e),
            _ => None,
        }
    }
}

/// One READ page: a view of the reply. Items are decoded lazily (and
/// validated once, when the page was received).
#[derive(Debug, Clone)]
pub struct Page<P> {
    payload: P,
    layout: PageLayout,
    axis: SelectorAxis,
    from: Position,
    cursor: Option<wire::Cursor>,
    len: usize,
}

impl<P: Buf> Page<P> {
    fn decoded(&self) -> Option<wire::ReadOk<'_>> {
        match wire::decode_read_reply(self.payload.as_ref(), self.layout) {
            Ok(Reply::Ok(ok)) => Some(ok),
            _ => None,
        }
    }

    /// Events and filtered markers, in axis order.
    pub fn items(&self) -> impl Iterator<Item = PageItem<P>> + '_ {
        self.decoded().into_iter().flat_map(|ok| ok.items()).map(|i| PageItem::of(&self.payload, i))
    }

    /// The events only (markers skipped; the cursor still covers them).
    pub fn events(&self) -> impl Iterator<Item = Event<P>> + '_ {
        self.items().filter_map(|i| match i {
            PageItem::Event(e) => Some(e),
            _ => None,
        })
    }

    /// Number of items (markers included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the page holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The page's cursor (`None` for the bare empty reply).
    pub fn cursor(&self) -> Option<&wire::Cursor> {
        self.cursor.as_ref()
    }

    /// More committed records exist on the axis: read again at once.
    pub fn has_more(&self) -> bool {
        self.cursor.is_some_and(|c| c.has_more)
    }

    /// The selector's cursor axis.
    pub fn axis(&self) -> SelectorAxis {
        self.axis
    }

    /// Where the page started.
    pub fn start(&self) -> Position {
        self.from
    }

    /// Where the next read of the same selector and filter continues: the
    /// axis' last offset + 1 (or the same offset when the page reports
    /// none), with the continuation values of a global read.
    ///
    /// A page without items moves only if its cursor reports an offset
    /// beyond the start: brokers answer an empty read at the watermark with
    /// `last_resource_offset` equal to the start (BROKER.md §9.2), and
    /// adding one to it would skip the next record committed there.
    pub fn next(&self) -> Position {
        let Some(c) = self.cursor.as_ref() else { return self.from };
        let from = self.from.offset;
        let offset = match c.last_offset(self.axis) {
            Some(last) if self.len == 0 && last <= from => from,
            _ => c.next_offset(self.axis, from),
        };
        let continuation =
            if self.axis == SelectorAxis::Global { c.continuation() } else { wire::ReadContinuation::default() };
        Position { offset, continuation }
    }

    /// The reply this page views.
    pub fn into_inner(self) -> P {
        self.payload
    }
}

/// A READ seen as events only (what the reference SDKs call `read`): the
/// filtered markers are hidden, the position still moves past them.
#[derive(Debug, Clone)]
pub struct Events<P> {
    page: Page<P>,
}

impl<P: Buf> Events<P> {
    /// The events.
    pub fn iter(&self) -> impl Iterator<Item = Event<P>> + '_ {
        self.page.events()
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True if no event was read (the position may still have moved).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// More committed records exist on the axis.
    pub fn has_more(&self) -> bool {
        self.page.has_more()
    }

    /// Where the next read continues (see [`Page::next`]).
    pub fn next(&self) -> Position {
        self.page.next()
    }

    /// The whole page, markers included.
    pub fn into_page(self) -> Page<P> {
        self.page
    }
}

impl<'c, H: Shared> Stream<'c, H> {
    /// A deadline for each request of this call chain (0 = none).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Opens an append session on the exact route
    /// `stream://realm/area/resource` (one per resource at a time; see
    /// [`is_session_active`]).
    pub async fn begin(&self, route: &str) -> Result<Appender<H>, Error> {
        self.begin_with(route, &[]).await
    }

    /// [`Stream::begin`] with opaque ingest metadata (empty = none).
    pub async fn begin_with(&self, route: &str, ingest_metadata: &[u8]) -> Result<Appender<H>, Error> {
        if !wire::is_concrete_route(route) {
            return Err(INVALID_ROUTE);
        }
        let c = self.c;
        c.ready().await?;
        let epoch = c.epoch();
        let msg = wire::Begin { route, ingest_metadata: (!ingest_metadata.is_empty()).then_some(ingest_metadata) };
        let p = c.round_trip_in(Some(epoch), &msg, self.timeout_ms).await?;
        let begun = ok(wire::decode_begin_reply(p.as_ref()), MsgType::STREAM_BEGIN)?;
        Ok(Appender { c: c.clone(), session_id: begun.session_id, epoch, timeout_ms: self.timeout_ms, open: true })
    }

    /// Reads one page: events and filtered markers, and the cursor.
    pub async fn read_page(&self, q: &Query<'_>) -> Result<Page<BufOf<H>>, Error> {
        let axis = route::stream_selector(q.selector).ok_or(INVALID_SELECTOR)?;
        let layout = PageLayout::from_axis(axis);
        // Continuation values belong to global reads only.
        let continuation =
            if axis == SelectorAxis::Global { q.from.continuation } else { wire::ReadContinuation::default() };
        let msg = wire::Read {
            selector: q.selector,
            from_offset: q.from.offset,
            limit: q.limit,
            max_bytes: q.max_bytes,
            filter: (!q.filter.is_empty()).then_some(wire::Filter::Clauses(q.filter)),
            continuation: Some(continuation),
        };
        let p = self.c.round_trip(&msg, self.timeout_ms).await?;
        let read = ok(wire::decode_read_reply(p.as_ref(), layout), MsgType::STREAM_READ)?;
        let cursor = read.cursor().copied();
        let len = read.page.map_or(0, |pg| usize::try_from(pg.items.len()).unwrap_or(usize::MAX));
        Ok(Page { payload: p, layout, axis, from: Position { continuation, ..q.from }, cursor, len })
    }

    /// Reads one page and keeps only its events ([`Events::next`] still
    /// moves past filtered markers).
    pub async fn read(&self, q: &Query<'_>) -> Result<Events<BufOf<H>>, Error> {
        self.read_page(q).await.map(|page| Events { page })
    }

    /// Pages of `q` from `q.from` until the reader has caught up.
    pub fn replay<'q>(&self, q: Query<'q>) -> Replay<'c, 'q, H> {
        Replay { s: *self, q, unmoved: 0, done: false }
    }

    /// The newest record of the exact route, or `None` for an empty stream
    /// (or a wildcard route).
    pub async fn last(&self, route: &str) -> Result<Option<Record<BufOf<H>>>, Error> {
        if !route_or_selector(route) {
            return Err(INVALID_ROUTE);
        }
        let p = self.c.round_trip(&wire::Last { route }, self.timeout_ms).await?;
        let last = ok(wire::decode_last_reply(p.as_ref()), MsgType::STREAM_LAST)?;
        Ok(last.record.map(|r| Record::of(&p, &r)))
    }

    /// The metadata of the exact route (`None` for a wildcard route).
    /// Absent first/last offsets mean a stream without records; the next
    /// offset to append at is [`Metadata::record_count`].
    pub async fn metadata(&self, route: &str) -> Result<Option<Metadata>, Error> {
        if !route_or_selector(route) {
            return Err(INVALID_ROUTE);
        }
        let p = self.c.round_trip(&wire::GetMetadata { route }, self.timeout_ms).await?;
        Ok(ok(wire::decode_metadata_reply(p.as_ref()), MsgType::STREAM_GET_METADATA)?.metadata)
    }

    /// Subscribes to commit notifications of the resources `selector`
    /// matches (any of the ten selectors). Notifications are wake-ups, not
    /// a log: subscribe first, then read from your own position.
    pub async fn subscribe(&self, selector: &str) -> Result<Notifications<H>, Error> {
        if route::stream_selector(selector).is_none() {
            return Err(INVALID_SELECTOR);
        }
        let sub = self.c.subscribe(&wire::Subscribe { selector }).await?;
        Ok(Notifications { sub })
    }
}

/// LAST and GET_METADATA take an exact route; a wildcard selector is
/// answered empty. Anything else may make the broker close.
fn route_or_selector(route: &str) -> bool {
    wire::is_concrete_route(route) || route::stream_selector(route).is_some()
}

/// Consecutive `has_more` pages without progress before a replay fails
/// (the stall rule of WIRE.md §11.4).
pub const STALL_BOUND: u32 = 2;

/// The pages of a query until caught up ([`Stream::replay`]): every page
/// is yielded, empty or filtered-only ones included; the last one has
/// `has_more = false`.
pub struct Replay<'c, 'q, H> {
    s: Stream<'c, H>,
    q: Query<'q>,
    unmoved: u32,
    done: bool,
}

impl<H: Shared> Replay<'_, '_, H> {
    /// The next page; `None` after the page that caught up (or after an
    /// error). A broker that keeps answering `has_more` without moving the
    /// position ends the replay with a decode error (not retryable).
    pub async fn next(&mut self) -> Option<Result<Page<BufOf<H>>, Error>> {
        if self.done {
            return None;
        }
        let page = match self.s.read_page(&self.q).await {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let next = page.next();
        if page.has_more() {
            if next.offset == self.q.from.offset {
                self.unmoved = self.unmoved.saturating_add(1);
                if self.unmoved >= STALL_BOUND {
                    self.done = true;
                    return Some(Err(Error::Decode(fitz_wire::DecodeError::OutOfRange(
                        "stream cursor (has_more without progress)",
                    ))));
                }
            } else {
                self.unmoved = 0;
            }
        } else {
            self.done = true;
        }
        self.q.from = next;
        Some(Ok(page))
    }

    /// Where the replay stands (store [`Position::offset`] to resume).
    pub fn position(&self) -> Position {
        self.q.from
    }

    /// True once a page reported `has_more = false`.
    pub fn caught_up(&self) -> bool {
        self.done
    }
}

/// An open append session. Dropping it without [`Appender::commit`] or
/// [`Appender::rollback`] schedules a rollback. After a reconnect every
/// operation fails with [`Error::StaleHandle`] (the broker aborted it).
pub struct Appender<H: Shared> {
    c: Client<H>,
    session_id: u64,
    epoch: u32,
    timeout_ms: u64,
    open: bool,
}

/// Optional fields of one APPEND.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extra<'a> {
    /// Opaque per-record metadata (empty = none).
    pub metadata: &'a [u8],
    /// Tag matched by READ filters (empty = none).
    pub discriminator: &'a str,
}

impl<H: Shared> Appender<H> {
    /// The broker's append session id.
    pub fn id(&self) -> u64 {
        self.session_id
    }

    /// Stages `body` at `expected_offset`: the resource's next offset for
    /// the first append of the session, one more for each following one.
    /// Returns the offset the broker assigned (`None` if it did not say). A
    /// wrong offset fails with a conflict ([`is_conflict`]); the session
    /// stays open.
    pub async fn append(&self, expected_offset: u64, body: &[u8]) -> Result<Option<u64>, Error> {
        self.append_with(expected_offset, body, Extra::default()).await
    }

    /// [`Appender::append`] with metadata and a discriminator.
    pub async fn append_with(&self, expected_offset: u64, body: &[u8], extra: Extra<'_>) -> Result<Option<u64>, Error> {
        let msg = wire::Append {
            session_id: self.session_id,
            expected_offset,
            body,
            metadata: (!extra.metadata.is_empty()).then_some(extra.metadata),
            discriminator: (!extra.discriminator.is_empty()).then_some(extra.discriminator),
        };
        let p = self.c.round_trip_in(Some(self.epoch), &msg, self.timeout_ms).await?;
        Ok(ok(wire::decode_append_reply(p.as_ref()), MsgType::STREAM_APPEND)?.offset())
    }

    /// Commits the staged records (buffered).
    pub async fn commit(self) -> Result<(), Error> {
        self.commit_with(CommitMode::Buffered).await
    }

    /// Commits the staged records with `mode`. If the broker refuses (e.g.
    /// an empty batch, which leaves its session open), a rollback is
    /// scheduled.
    pub async fn commit_with(mut self, mode: CommitMode) -> Result<(), Error> {
        let msg = wire::Commit { session_id: self.session_id, mode };
        let p = self.c.round_trip_in(Some(self.epoch), &msg, self.timeout_ms).await?;
        ok(wire::decode_commit_reply(p.as_ref()), MsgType::STREAM_COMMIT)?;
        self.open = false;
        Ok(())
    }

    /// Discards the staged records and ends the session.
    pub async fn rollback(mut self) -> Result<(), Error> {
        let msg = wire::Rollback { session_id: self.session_id };
        let r = match self.c.round_trip_in(Some(self.epoch), &msg, self.timeout_ms).await {
            Ok(p) => ok(wire::decode_ack_reply(p.as_ref()), MsgType::STREAM_ROLLBACK),
            Err(e) => Err(e),
        };
        // Done or refused: either way there is nothing left to undo.
        self.open = false;
        r
    }
}

impl<H: Shared> Drop for Appender<H> {
    fn drop(&mut self) {
        if self.open {
            // Scheduled, not awaited; moot on another connection (the
            // broker aborts a connection's append sessions with it).
            let _ = self.c.forget(&wire::Rollback { session_id: self.session_id }, self.epoch);
        }
    }
}

/// A commit notification (or another event the broker reports).
#[derive(Debug, Clone)]
pub struct Notification<P> {
    payload: P,
}

impl<P: Buf> Notification<P> {
    fn decoded(&self) -> Option<wire::Notify<'_>> {
        wire::Notify::decode(self.payload.as_ref()).ok()
    }

    /// The resource that changed (`stream://realm/area/resource`).
    pub fn route(&self) -> &str {
        self.decoded().map_or("", |n| n.route)
    }

    /// The raw JSON payload, as a part of the record.
    pub fn json(&self) -> P {
        let bytes = self.payload.as_ref();
        // The empty part of the record itself when (never, once checked at
        // delivery) the record does not decode.
        let json = self.decoded().map_or(bytes.get(..0).unwrap_or_default(), |n| n.payload);
        self.payload.part(json)
    }

    /// The lenient JSON view (event kind and offset ranges; all-default
    /// when the payload is not the documented JSON, WIRE.md §11.6).
    pub fn summary(&self) -> NotifySummary<'_> {
        self.decoded().map(|n| n.summary()).unwrap_or_default()
    }
}

/// A Stream subscription: notifications of commits on matching resources.
pub struct Notifications<H: Shared> {
    sub: Subscription<H>,
}

impl<H: Shared> Notifications<H> {
    /// Polls the next notification; `None` once the subscription ended, an
    /// error if it ended abnormally. Restores after a reconnect are skipped
    /// (commits in between are not notified: read from your position).
    /// (`Notifications` is also a `futures_core::Stream` of the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Notification<BufOf<H>>, Error>>> {
        poll_record(&mut self.sub, cx, |payload| match wire::Notify::decode(payload.as_ref()) {
            Ok(_) => Ok(Notification { payload }),
            Err(e) => Err(Error::Decode(e)),
        })
    }

    /// The next notification (see [`Notifications::poll_next`]).
    /// Cancel-safe: dropping the future loses no notification.
    pub async fn next(&mut self) -> Option<Result<Notification<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The raw subscription (restore notices included).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Notifications<H> {
    type Item = Result<Notification<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Notifications::poll_next(self.get_mut(), cx)
    }
}
