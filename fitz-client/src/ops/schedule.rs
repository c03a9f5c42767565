//! Schedules (WIRE.md §8.7; current-dialect extensions §B10).
//!
//! CREATE (an upsert by route), CANCEL, LIST and SUBSCRIBE work with every
//! broker. CREATE_BATCH (706) and LIST_V2 (707) exist only in the current
//! dialect, and only when the application asks for them: with a legacy
//! broker (which would close the connection on them) they fail with
//! [`Error::Unsupported`] and nothing is sent.
//!
//! Routes are `schedule://realm/area/resource/operation`; patterns must be
//! able to match four segments. Both are checked locally ([`Error::Invalid`],
//! nothing sent). Domain errors of CREATE, CANCEL and SUBSCRIBE come without
//! a code (only the message, in [`Error::Server`]); LIST errors and errors
//! raised before the domain (unauthorized, busy, timeout) carry one.
//!
//! LIST has no selector on the wire: it returns the schedules of the whole
//! route family. [`ListPage::matching`] and [`ListV2Page::matching`] keep
//! the entries a pattern matches.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll};

use fitz_wire::schedule::{self as wire, LIST_MAX_LIMIT};
use fitz_wire::{Dialect, MsgType, Payload};

use crate::client::{BufOf, Client, Shared, Subscription};
use crate::engine::{Buf, Core};
use crate::error::Error;
use crate::ops::{ok, poll_record};
use crate::session::State;

pub use fitz_wire::schedule::{DeliveryMode, Entry as Definition};

/// Schedule operations of a client: `client.schedule()`.
pub struct Schedule<'c, H> {
    c: &'c Client<H>,
    timeout_ms: u64,
}

impl<H: Shared> Client<H> {
    /// The Schedule domain.
    pub fn schedule(&self) -> Schedule<'_, H> {
        Schedule { c: self, timeout_ms: 0 }
    }
}

/// A route that is not `schedule://realm/area/resource/operation`.
const INVALID_ROUTE: Error = Error::Invalid("schedule route (schedule://realm/area/resource/operation)");

/// A text part of a reply (decoded, hence valid UTF-8).
fn text<P: Buf>(p: &P) -> &str {
    core::str::from_utf8(p.as_ref()).unwrap_or("")
}

/// One schedule of a list page; route, cron and payload are parts of the
/// reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEntry<P> {
    route: P,
    cron: P,
    /// Broadcast or single delivery.
    pub delivery_mode: DeliveryMode,
    /// The payload delivered on every fire.
    pub payload: P,
}

impl<P: Buf> ScheduleEntry<P> {
    fn of(payload: &P, e: &wire::Entry<'_>) -> Self {
        ScheduleEntry {
            route: payload.part(e.route.as_bytes()),
            cron: payload.part(e.cron.as_bytes()),
            delivery_mode: e.delivery_mode,
            payload: payload.part(e.payload),
        }
    }

    /// The schedule's route.
    pub fn route(&self) -> &str {
        text(&self.route)
    }

    /// The cron expression.
    pub fn cron(&self) -> &str {
        text(&self.cron)
    }
}

/// One LIST page (a view of the reply).
#[derive(Debug, Clone)]
pub struct ListPage<P> {
    payload: P,
    offset: u64,
    /// Schedules of the route family in total, not only on this page.
    pub total_count: u64,
}

impl<P: Buf> ListPage<P> {
    fn decoded(&self) -> Option<wire::ListOk<'_>> {
        match wire::decode_list_reply(self.payload.as_ref()) {
            Ok(fitz_wire::Reply::Ok(ok)) => Some(ok),
            _ => None,
        }
    }

    /// The entries of the page.
    pub fn entries(&self) -> impl Iterator<Item = ScheduleEntry<P>> + '_ {
        self.decoded().into_iter().flat_map(|l| l.entries).map(|e| ScheduleEntry::of(&self.payload, &e))
    }

    /// The entries whose route `pattern` matches (`*`, `**` segments).
    pub fn matching<'a>(&'a self, pattern: &'a str) -> impl Iterator<Item = ScheduleEntry<P>> + 'a {
        self.entries().filter(move |e| fitz_wire::route::matches(pattern, e.route()))
    }

    /// Number of entries on the page.
    pub fn len(&self) -> usize {
        self.decoded().map_or(0, |l| l.entries.len())
    }

    /// True if the page holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset of the next page, while schedules remain (the page may
    /// hold fewer than asked for: it must fit one record).
    pub fn next_offset(&self) -> Option<u64> {
        let n = u64::try_from(self.len()).unwrap_or(u64::MAX);
        let next = self.offset.saturating_add(n);
        (n > 0 && next < self.total_count).then_some(next)
    }
}

/// One LIST_V2 page (a view of the reply).
#[derive(Debug, Clone)]
pub struct ListV2Page<P> {
    payload: P,
    /// More entries follow: continue with [`ListV2Page::continuation`].
    pub has_more: bool,
}

impl<P: Buf> ListV2Page<P> {
    fn decoded(&self) -> Option<wire::ListV2Ok<'_>> {
        match wire::decode_list_v2_reply(self.payload.as_ref()) {
            Ok(fitz_wire::Reply::Ok(ok)) => Some(ok),
            _ => None,
        }
    }

    /// The opaque value the next page starts from.
    pub fn continuation(&self) -> Option<&str> {
        self.decoded().and_then(|l| l.continuation)
    }

    /// The entries of the page.
    pub fn entries(&self) -> impl Iterator<Item = ScheduleEntry<P>> + '_ {
        self.decoded().into_iter().flat_map(|l| l.entries).map(|e| ScheduleEntry::of(&self.payload, &e))
    }

    /// The entries whose route `pattern` matches.
    pub fn matching<'a>(&'a self, pattern: &'a str) -> impl Iterator<Item = ScheduleEntry<P>> + 'a {
        self.entries().filter(move |e| fitz_wire::route::matches(pattern, e.route()))
    }

    /// Number of entries on the page.
    pub fn len(&self) -> usize {
        self.decoded().map_or(0, |l| l.entries.len())
    }

    /// True if the page holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'c, H: Shared> Schedule<'c, H> {
    /// A deadline for each request of this call chain (0 = none).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    async fn ack(&self, msg: &dyn fitz_wire::DynEncode, ty: MsgType) -> Result<(), Error> {
        let p = self.c.round_trip(msg, self.timeout_ms).await?;
        ok(wire::decode_ack_reply(p.as_ref()), ty)
    }

    /// Sends `msg` to a broker of the current dialect: refused locally for
    /// a legacy one, and sent again if the connection was replaced (and
    /// its dialect checked again) before it went out.
    async fn current_only(&self, msg: &dyn fitz_wire::DynEncode, what: &'static str) -> Result<BufOf<H>, Error> {
        loop {
            self.c.ready().await?;
            // One snapshot, so the dialect is the one of `epoch`.
            let (state, dialect, epoch) = self.c.shared().with(|e| (e.state(), e.dialect(), e.epoch()));
            if state != State::Authenticated {
                // Between connections: wait for the next one.
                continue;
            }
            if !matches!(dialect, Some((Dialect::Current, _))) {
                return Err(Error::Unsupported(what));
            }
            match self.c.round_trip_in(Some(epoch), msg, self.timeout_ms).await {
                Err(Error::StaleHandle) => continue,
                r => return r,
            }
        }
    }

    /// Creates (or replaces) the schedule of `route`: a 5-field UTC cron
    /// expression, a delivery mode and the payload every fire carries.
    pub async fn create(&self, route: &str, cron: &str, mode: DeliveryMode, payload: &[u8]) -> Result<(), Error> {
        if !wire::is_valid_route(route) {
            return Err(INVALID_ROUTE);
        }
        self.ack(&wire::Create { route, cron, delivery_mode: mode, payload }, MsgType::SCHEDULE_CREATE).await
    }

    /// Creates every definition, or none if one is refused (current
    /// dialect only).
    pub async fn create_batch(&self, definitions: &[Definition<'_>]) -> Result<(), Error> {
        if definitions.is_empty() {
            return Err(Error::Invalid("empty schedule batch"));
        }
        if !definitions.iter().all(|d| wire::is_valid_route(d.route)) {
            return Err(INVALID_ROUTE);
        }
        let msg = wire::CreateBatch::new(definitions);
        let p = self.current_only(&msg, "schedule CREATE_BATCH (current dialect)").await?;
        ok(wire::decode_ack_reply(p.as_ref()), MsgType::SCHEDULE_CREATE_BATCH)
    }

    /// Cancels the schedule of `route` (an unknown route succeeds).
    pub async fn cancel(&self, route: &str) -> Result<(), Error> {
        if !wire::is_valid_route(route) {
            return Err(INVALID_ROUTE);
        }
        self.ack(&wire::Cancel { route }, MsgType::SCHEDULE_CANCEL).await
    }

    /// One page of the route family's schedules from `offset`; `limit`
    /// (capped at 1,000) 0 = as many as fit one reply.
    pub async fn list(&self, offset: u64, limit: u64) -> Result<ListPage<BufOf<H>>, Error> {
        let msg = wire::List::new(Some(offset), Some(limit.min(LIST_MAX_LIMIT)));
        let p = self.c.round_trip(&msg, self.timeout_ms).await?;
        let total_count = ok(wire::decode_list_reply(p.as_ref()), MsgType::SCHEDULE_LIST)?.total_count;
        Ok(ListPage { payload: p, offset, total_count })
    }

    /// One LIST_V2 page (current dialect only): from the start, or from a
    /// previous page's continuation; `limit` `None` = the broker's default.
    pub async fn list_v2(&self, continuation: Option<&str>, limit: Option<u64>) -> Result<ListV2Page<BufOf<H>>, Error> {
        let msg = wire::ListV2 { continuation, limit };
        let p = self.current_only(&msg, "schedule LIST_V2 (current dialect)").await?;
        let has_more = ok(wire::decode_list_v2_reply(p.as_ref()), MsgType::SCHEDULE_LIST_V2)?.has_more;
        Ok(ListV2Page { payload: p, has_more })
    }

    /// Subscribes to the fires of schedules whose route `pattern` matches
    /// (an exact route, or a pattern able to match four segments).
    pub async fn subscribe(&self, pattern: &str) -> Result<Fires<H>, Error> {
        if !wire::is_valid_pattern(pattern) {
            return Err(Error::Invalid("schedule pattern (four segments)"));
        }
        let sub = self.c.subscribe(&wire::Subscribe { pattern }).await?;
        Ok(Fires { sub })
    }
}

/// A fired schedule.
#[derive(Debug, Clone)]
pub struct Fire<P> {
    route: P,
    /// The schedule's payload.
    pub payload: P,
}

impl<P: Buf> Fire<P> {
    /// The route of the schedule that fired.
    pub fn route(&self) -> &str {
        text(&self.route)
    }
}

/// A Schedule subscription: the fires of matching schedules (best effort:
/// fires while disconnected are lost).
pub struct Fires<H: Shared> {
    sub: Subscription<H>,
}

impl<H: Shared> Fires<H> {
    /// Polls the next fire; `None` once the subscription ended, an error if
    /// it ended abnormally. Restores after a reconnect are skipped.
    /// (`Fires` is also a `futures_core::Stream` of the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Fire<BufOf<H>>, Error>>> {
        poll_record(&mut self.sub, cx, |payload| match wire::Notify::decode(payload.as_ref()) {
            Ok(n) => Ok(Fire { route: payload.part(n.route.as_bytes()), payload: payload.part(n.payload) }),
            Err(e) => Err(Error::Decode(e)),
        })
    }

    /// The next fire (see [`Fires::poll_next`]). Cancel-safe: dropping the
    /// future loses no fire.
    pub async fn next(&mut self) -> Option<Result<Fire<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The raw subscription (restore notices included).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Fires<H> {
    type Item = Result<Fire<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Fires::poll_next(self.get_mut(), cx)
    }
}
