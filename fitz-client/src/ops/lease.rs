//! Leases (WIRE.md §8.4, §B9).
//!
//! A granted lease is a [`Held`] handle of the connection that acquired it:
//! the broker releases a session's leases when it ends, so after a
//! reconnect [`Held::renew`] and [`Held::release`] fail with
//! [`Error::StaleHandle`] without sending anything.
//!
//! Every request but SUBSCRIBE and LIST needs an exact
//! `lease://realm/area/resource` route (the broker closes the connection on
//! one it cannot split), so routes are checked locally first. Wildcard
//! selectors (SUBSCRIBE, LIST) and LIST itself are current-dialect
//! features: on a legacy connection they fail with [`Error::Unsupported`]
//! and nothing is sent.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll};

use fitz_wire::lease::{self as wire, ListItem};
use fitz_wire::route::{self, Scheme};
use fitz_wire::{Dialect, EncodeError, MsgType, Payload, Reader};

use crate::client::{BufOf, Client, Shared, Subscription};
use crate::engine::{Buf, Item};
use crate::error::{Error, Fault};
use crate::ops::queue::{request_fresh, with_wait};
use crate::ops::{RouteBuf, check_route, ok, own_route, poll_record};

pub use fitz_wire::lease::{AcquireStatus, ListCursor, MAX_OWNER_ID_LEN, MAX_WAIT_SECONDS};

/// An owner id kept by a [`Held`] handle.
pub type OwnerBuf = heapless::String<MAX_OWNER_ID_LEN>;

/// The broker's code for a LIST cursor it no longer knows (WIRE.md §B9).
pub const ERR_INVALID_LIST_CURSOR: u32 = 5011;

/// Lease operations of a client: `client.lease()`.
pub struct Lease<'c, H> {
    c: &'c Client<H>,
    timeout_ms: u64,
    owner: &'c str,
}

impl<H> Clone for Lease<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H> Copy for Lease<'_, H> {}

impl<H: Shared> Client<H> {
    /// The Lease domain (owner id empty until [`Lease::owner`]).
    pub fn lease(&self) -> Lease<'_, H> {
        Lease { c: self, timeout_ms: 0, owner: "" }
    }
}

const BAD_ROUTE: Error = Error::Invalid("lease route (expected lease://realm/area/resource)");

fn exact(route: &str) -> bool {
    route::is_concrete(route, Scheme::Lease, 3)
}

fn invalid(e: EncodeError) -> Error {
    match e {
        EncodeError::InvalidValue(what) => Error::Invalid(what),
        other => Error::Encode(other),
    }
}

/// Why `selector` may not be sent on a connection of `dialect`, if it may
/// not: a wildcard selector on a legacy one is [`Error::Unsupported`],
/// anything else that is not a lease selector [`Error::Invalid`].
fn refuse_selector(selector: &str, dialect: Dialect) -> Option<Error> {
    if wire::selector_allowed(selector, dialect) {
        None
    } else if wire::selector_allowed(selector, Dialect::Current) {
        Some(Error::Unsupported("wildcard lease selector (current dialect)"))
    } else {
        Some(Error::Invalid("lease selector (lease://realm/area/resource or a wildcard able to match it)"))
    }
}

fn text<P: Buf>(p: &P) -> &str {
    // Parts are only ever made of strings the decoder validated.
    core::str::from_utf8(p.as_ref()).unwrap_or("")
}

impl<'c, H: Shared> Lease<'c, H> {
    /// A deadline for each request of this call chain (0 = none). An
    /// ACQUIRE's wait is added to it.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// The holder identity sent with ACQUIRE, RENEW and RELEASE (at most
    /// [`MAX_OWNER_ID_LEN`] bytes; empty by default). The broker scopes it
    /// to the session, so two connections never share a lease.
    pub fn owner(mut self, owner_id: &'c str) -> Self {
        self.owner = owner_id;
        self
    }

    /// Ready, and the dialect of the connection.
    async fn dialect(&self) -> Result<Dialect, Error> {
        loop {
            self.c.ready().await?;
            // Known once authenticated; a reconnect in between waits again.
            if let Some((d, _)) = self.c.dialect() {
                return Ok(d);
            }
        }
    }

    /// Acquires `route` for `ttl_secs`, failing at once (the broker's 5001)
    /// if someone else holds it.
    pub fn acquire(&self, route: &str, ttl_secs: u64) -> impl Future<Output = Result<Held<H>, Error>> {
        self.acquire_wait(route, ttl_secs, 0)
    }

    /// Acquires `route` for `ttl_secs`; if it is held, waits up to
    /// `wait_seconds` (at most [`MAX_WAIT_SECONDS`]) in the broker's FIFO
    /// queue for the grant (5006 when the wait ends first).
    ///
    /// While a queued acquisition waits, no other ACQUIRE can be sent on a
    /// connection without correlation (the engine holds them back). If this
    /// future is dropped while queued, a later grant is discarded and the
    /// lease stays held until its TTL ends or the connection closes.
    pub async fn acquire_wait(&self, route: &str, ttl_secs: u64, wait_seconds: u32) -> Result<Held<H>, Error> {
        if !exact(route) {
            return Err(BAD_ROUTE);
        }
        let msg = wire::Acquire { route, owner_id: self.owner, ttl_secs, wait_seconds };
        msg.validate().map_err(invalid)?;
        // Route and owner are copied into the handle once granted; only
        // their lengths are checked now (`validate` bounds the owner).
        check_route(route)?;
        let c = self.c;
        let timeout_ms = with_wait(self.timeout_ms, u64::from(wait_seconds));
        let (mut pending, epoch) = request_fresh(c, &msg, timeout_ms).await?;
        let mut grant = {
            let first = pending.reply().await?;
            ok(wire::decode_acquire_reply(first.as_ref()), MsgType::LEASE_ACQUIRE)?
        };
        let waited = grant.status.is_queued();
        if waited {
            // Same request, second frame: the session kept the slot for it.
            let deferred = pending.reply().await?;
            grant = ok(wire::decode_acquire_deferred(deferred.as_ref()), MsgType::LEASE_ACQUIRE)?;
        }
        let owner =
            OwnerBuf::try_from(self.owner).map_err(|_| Error::Invalid("lease owner_id longer than 512 bytes"))?;
        Ok(Held {
            c: c.clone(),
            route: own_route(route)?,
            owner,
            token: grant.fencing_token,
            ttl_secs,
            epoch,
            timeout_ms: self.timeout_ms,
            status: grant.status,
            waited,
            owns: grant.status == AcquireStatus::Acquired,
        })
    }

    /// The state of `route`: its holder (as the broker reports it,
    /// session-scoped), remaining TTL and waiters. Safe to retry.
    pub async fn query(&self, route: &str) -> Result<LeaseInfo<BufOf<H>>, Error> {
        if !exact(route) {
            return Err(BAD_ROUTE);
        }
        let p = self.c.round_trip(&wire::Query { route }, self.timeout_ms).await?;
        let state = ok(wire::decode_query_reply(p.as_ref()), MsgType::LEASE_QUERY)?;
        Ok(LeaseInfo {
            owner: state.owner_id().map(|o| p.part(o.as_bytes())),
            ttl_remaining_secs: state.ttl_remaining_secs(),
            pending_waiters: state.pending_waiters(),
        })
    }

    /// Watches the holders of the leases matching `selector` (an exact
    /// route; in the current dialect also a wildcard selector). Dropping the
    /// watch unsubscribes.
    pub async fn subscribe(&self, selector_str: &str) -> Result<Watch<H>, Error> {
        if let Some(e) = refuse_selector(selector_str, self.dialect().await?) {
            return Err(e);
        }
        let sub = self.c.subscribe(&wire::Subscribe { route: selector_str }).await?;
        Ok(Watch { sub })
    }

    /// One LIST page of the leases held under `pattern` (current dialect
    /// only): start with `cursor = None`, continue with the page's
    /// [`ListPage::next`]. `limit` 0 = the broker's default page (100);
    /// larger values are clamped to 500.
    pub async fn list(
        &self,
        pattern: &str,
        cursor: Option<ListCursor>,
        limit: u32,
    ) -> Result<ListPage<BufOf<H>>, Error> {
        let msg = wire::List { pattern, cursor, limit };
        loop {
            // Pinned to the connection the dialect is read from (the epoch
            // is read first): a legacy broker met after a reconnect must
            // never see a LIST.
            self.c.ready().await?;
            let epoch = self.c.epoch();
            let Some((dialect, _)) = self.c.dialect() else { continue };
            if dialect != Dialect::Current {
                return Err(Error::Unsupported("lease LIST (current dialect)"));
            }
            if let Some(e) = refuse_selector(pattern, dialect) {
                return Err(e);
            }
            match self.c.round_trip_in(Some(epoch), &msg, self.timeout_ms).await {
                Err(Error::StaleHandle) => continue,
                Err(e) => return Err(e),
                Ok(p) => {
                    let page = ok(wire::decode_list_reply(p.as_ref()), MsgType::LEASE_LIST)?;
                    return Ok(ListPage { next: page.next, payload: p });
                }
            }
        }
    }

    /// Every LIST page of `pattern`, in order (current dialect only).
    pub fn list_pages<'p>(&self, pattern: &'p str, limit: u32) -> ListPages<'p, H>
    where
        'c: 'p,
    {
        ListPages { lease: *self, pattern, limit, cursor: None, done: false }
    }

    /// Observes the holders of the leases matching `selector` (current
    /// dialect only): subscribes first, then yields the holders of a LIST
    /// snapshot, then each change as it happens. See [`Observer`].
    pub async fn observe(&self, selector_str: &str) -> Result<Observer<H>, Error> {
        if self.dialect().await? != Dialect::Current {
            return Err(Error::Unsupported("lease observer (LIST, current dialect)"));
        }
        let owned = own_route(selector_str)?;
        let watch = self.subscribe(selector_str).await?;
        Ok(Observer {
            c: self.c.clone(),
            selector: owned,
            sub: watch.sub,
            timeout_ms: self.timeout_ms,
            state: Phase::listing(),
        })
    }
}

/// A lease this connection holds. Dropping it without [`Held::release`]
/// schedules a release (nothing blocks) when this handle's acquisition
/// created the holding; a handle of an `AlreadyHeld` answer leaves the
/// holding to the handle that acquired it.
pub struct Held<H: Shared> {
    c: Client<H>,
    route: RouteBuf,
    owner: OwnerBuf,
    token: u64,
    ttl_secs: u64,
    epoch: u32,
    timeout_ms: u64,
    status: AcquireStatus,
    waited: bool,
    owns: bool,
}

impl<H: Shared> Held<H> {
    /// The lease's route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The owner id it was acquired with.
    pub fn owner_id(&self) -> &str {
        &self.owner
    }

    /// The current fencing token (replaced by every renewal).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The TTL of the last grant or renewal, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// `Acquired`, or `AlreadyHeld` when this owner held it already.
    pub fn status(&self) -> AcquireStatus {
        self.status
    }

    /// True if the broker answered Queued first and the grant came in its
    /// deferred frame (the engine keeps both replies, however fast the
    /// grant follows).
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// The connection epoch the lease belongs to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The deadline of each later request of this handle (0 = none).
    pub fn set_timeout_ms(&mut self, ms: u64) {
        self.timeout_ms = ms;
    }

    /// Renews for the TTL of the last grant or renewal; returns the new
    /// token (also stored).
    pub async fn renew(&mut self) -> Result<u64, Error> {
        let ttl = self.ttl_secs;
        self.renew_for(ttl).await
    }

    /// Renews for `ttl_secs` from now (the broker's RENEW, called EXTEND
    /// by some clients); returns the new token (also stored). Fails with
    /// the broker's 5002 (token fenced), 5003 (expired) or 5004 (not held).
    pub async fn renew_for(&mut self, ttl_secs: u64) -> Result<u64, Error> {
        if ttl_secs == 0 {
            return Err(Error::Invalid("lease ttl_secs of 0"));
        }
        let msg = wire::Renew { route: &self.route, owner_id: &self.owner, fencing_token: self.token, ttl_secs };
        let p = self.c.round_trip_in(Some(self.epoch), &msg, self.timeout_ms).await?;
        let renewed = ok(wire::decode_renew_reply(p.as_ref()), MsgType::LEASE_RENEW)?;
        self.token = renewed.fencing_token;
        self.ttl_secs = ttl_secs;
        Ok(renewed.fencing_token)
    }

    /// Releases the lease (the next waiter, if any, is granted it).
    pub async fn release(mut self) -> Result<(), Error> {
        self.owns = false;
        let msg = wire::Release { route: &self.route, owner_id: &self.owner, fencing_token: self.token };
        let p = self.c.round_trip_in(Some(self.epoch), &msg, self.timeout_ms).await?;
        ok(wire::decode_ack_reply(p.as_ref()), MsgType::LEASE_RELEASE)
    }
}

impl<H: Shared> Drop for Held<H> {
    fn drop(&mut self) {
        if self.owns {
            // Scheduled, not awaited; after a reconnect the broker already
            // released it with the old session.
            let msg = wire::Release { route: &self.route, owner_id: &self.owner, fencing_token: self.token };
            let _ = self.c.forget(&msg, self.epoch);
        }
    }
}

/// QUERY result: the holder is a part of the reply.
#[derive(Debug, Clone)]
pub struct LeaseInfo<P> {
    owner: Option<P>,
    /// Remaining lifetime in whole seconds, if held.
    pub ttl_remaining_secs: Option<u64>,
    /// Queued acquisitions.
    pub pending_waiters: u32,
}

impl<P: Buf> LeaseInfo<P> {
    /// True if someone holds the lease.
    pub fn is_held(&self) -> bool {
        self.owner.is_some()
    }

    /// The holder as the broker reports it (`session:<n>` or
    /// `session:<n>:<owner_id>`), if held.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_ref().map(text)
    }
}

/// One held lease of a LIST page; its strings are parts of the reply.
#[derive(Debug, Clone)]
pub struct LeaseEntry<P> {
    route: P,
    owner: P,
    acquired_at: P,
    /// Opaque, stable for the holder's session, different across sessions.
    pub holder_incarnation: u64,
    /// Remaining lifetime in seconds.
    pub expires_in_secs: u64,
    /// Successful renewals.
    pub renewals: u32,
}

impl<P: Buf> LeaseEntry<P> {
    fn of(payload: &P, item: &ListItem<'_>) -> Self {
        LeaseEntry {
            route: payload.part(item.route.as_bytes()),
            owner: payload.part(item.owner_id.as_bytes()),
            acquired_at: payload.part(item.acquired_at.as_bytes()),
            holder_incarnation: item.holder_incarnation,
            expires_in_secs: item.expires_in_secs,
            renewals: item.renewals,
        }
    }

    /// The concrete route.
    pub fn route(&self) -> &str {
        text(&self.route)
    }

    /// The `owner_id` given to ACQUIRE (not session-scoped).
    pub fn owner_id(&self) -> &str {
        text(&self.owner)
    }

    /// RFC 3339 time of the acquisition, as the broker wrote it.
    pub fn acquired_at(&self) -> &str {
        text(&self.acquired_at)
    }
}

/// One LIST page, as a view of the reply.
#[derive(Debug, Clone)]
pub struct ListPage<P> {
    payload: P,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListCursor>,
}

impl<P: Buf> ListPage<P> {
    fn items(&self) -> impl Iterator<Item = ListItem<'_>> + '_ {
        let items = match wire::decode_list_reply(self.payload.as_ref()) {
            Ok(fitz_wire::Reply::Ok(page)) => Some(page.items),
            _ => None,
        };
        items.into_iter().flatten()
    }

    /// The held leases of the page.
    pub fn entries(&self) -> impl Iterator<Item = LeaseEntry<P>> + '_ {
        self.items().map(|item| LeaseEntry::of(&self.payload, &item))
    }

    /// Number of leases on the page.
    pub fn len(&self) -> usize {
        self.items().count()
    }

    /// True if the page holds no lease.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items as (bytes, count).
    fn rest(&self) -> Option<(P, u32)> {
        match wire::decode_list_reply(self.payload.as_ref()) {
            Ok(fitz_wire::Reply::Ok(page)) => Some((self.payload.part(page.items.as_bytes()), page.items.len())),
            _ => None,
        }
    }
}

/// The pages of one LIST scan ([`Lease::list_pages`]).
pub struct ListPages<'p, H> {
    lease: Lease<'p, H>,
    pattern: &'p str,
    limit: u32,
    cursor: Option<ListCursor>,
    done: bool,
}

impl<H: Shared> ListPages<'_, H> {
    /// The next page; `None` after the last one (or after an error).
    pub async fn next(&mut self) -> Option<Result<ListPage<BufOf<H>>, Error>> {
        if self.done {
            return None;
        }
        let r = self.lease.list(self.pattern, self.cursor, self.limit).await;
        match &r {
            Ok(page) => {
                self.cursor = page.next;
                self.done = page.next.is_none();
            }
            Err(_) => self.done = true,
        }
        Some(r)
    }
}

/// The holders of a lease changed (acquired, granted to a waiter,
/// released, expired, holder gone). A hint: ask [`Lease::query`] (or LIST)
/// for the state.
#[derive(Debug, Clone)]
pub struct Changed<P> {
    payload: P,
}

impl<P: Buf> Changed<P> {
    /// The concrete route that changed.
    pub fn route(&self) -> &str {
        wire::Notify::decode(self.payload.as_ref()).map(|n| n.route).unwrap_or("")
    }
}

fn changed<P: Buf>(payload: &P) -> Result<Changed<P>, fitz_wire::DecodeError> {
    wire::Notify::decode(payload.as_ref())?;
    Ok(Changed { payload: payload.clone() })
}

/// A Lease watch.
pub struct Watch<H: Shared> {
    sub: Subscription<H>,
}

impl<H: Shared> Watch<H> {
    /// Polls the next change; `None` once the watch ended, an error if it
    /// ended abnormally (e.g. [`Error::Backpressure`]). Restores after a
    /// reconnect are skipped. (`Watch` is also a `futures_core::Stream` of
    /// the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Changed<BufOf<H>>, Error>>> {
        poll_record(&mut self.sub, cx, |payload| changed(&payload).map_err(Error::Decode))
    }

    /// The next change (see [`Watch::poll_next`]). Cancel-safe: dropping
    /// the future loses no change.
    pub async fn next(&mut self) -> Option<Result<Changed<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The raw subscription (restore notices included).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Watch<H> {
    type Item = Result<Changed<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Watch::poll_next(self.get_mut(), cx)
    }
}

/// What an [`Observer`] reports. Apply them in order as upserts: a route is
/// held by the last `Holder`/`Held` entry seen for it, until `Released`.
#[derive(Debug, Clone)]
pub enum Observed<P> {
    /// A holder of the snapshot.
    Holder(LeaseEntry<P>),
    /// The snapshot is complete; changes follow.
    Synced,
    /// A change: the route is held now, by this entry.
    Held(LeaseEntry<P>),
    /// A change: the route is free now.
    Released(Changed<P>),
    /// The snapshot starts over (after a reconnect, or when the broker
    /// dropped the snapshot being paged): forget what was reported, new
    /// `Holder`s and `Synced` follow.
    Resync,
}

enum Phase<P> {
    /// Paging the snapshot: the unread items of the current page (bytes and
    /// count), and the cursor of the next page.
    Listing { rest: Option<(P, u32)>, next: Option<ListCursor>, started: bool },
    /// Following the watch.
    Live,
    /// Looking up the state of a changed route.
    Resolving(Changed<P>),
}

impl<P> Phase<P> {
    const fn listing() -> Self {
        Phase::Listing { rest: None, next: None, started: false }
    }
}

/// The lease inventory of a selector ([`Lease::observe`]): the holders of a
/// snapshot, then the changes. Nothing is stored beyond the page being
/// read; a change is resolved with an exact LIST of its route. Dropping a
/// [`Observer::next`] future loses nothing: the next call resumes (a page
/// the broker already served starts the snapshot over, [`Observed::Resync`]).
pub struct Observer<H: Shared> {
    c: Client<H>,
    selector: RouteBuf,
    sub: Subscription<H>,
    timeout_ms: u64,
    state: Phase<BufOf<H>>,
}

impl<H: Shared> Observer<H> {
    /// The selector being observed.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    fn is_stale_cursor(e: &Error) -> bool {
        matches!(e, Error::Server(Fault { code: Some(ERR_INVALID_LIST_CURSOR), .. }))
    }

    /// The next observation; `None` once the watch ended, an error if it
    /// (or a LIST) failed. After an error the next call tries again.
    pub async fn next(&mut self) -> Option<Result<Observed<BufOf<H>>, Error>> {
        loop {
            let lease = self.c.lease().timeout_ms(self.timeout_ms);
            match &mut self.state {
                Phase::Listing { rest, next, started } => {
                    if let Some((bytes, left)) = rest.take().filter(|(_, left)| *left > 0) {
                        // The page was validated when it was decoded.
                        let Some((entry, tail)) = take_entry(&bytes) else {
                            return Some(Err(Error::Decode(fitz_wire::DecodeError::Truncated)));
                        };
                        *rest = Some((tail, left - 1));
                        return Some(Ok(Observed::Holder(entry)));
                    }
                    if *started && next.is_none() {
                        self.state = Phase::Live;
                        return Some(Ok(Observed::Synced));
                    }
                    let cursor = *next;
                    match lease.list(&self.selector, cursor, 0).await {
                        Ok(page) => {
                            self.state = Phase::Listing { rest: page.rest(), next: page.next, started: true };
                        }
                        Err(e) if cursor.is_some() && Self::is_stale_cursor(&e) => {
                            self.state = Phase::listing();
                            return Some(Ok(Observed::Resync));
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                Phase::Live => match self.sub.next().await? {
                    Ok(Item::Record { payload, .. }) => match changed(&payload) {
                        Ok(ch) => self.state = Phase::Resolving(ch),
                        Err(e) => return Some(Err(Error::Decode(e))),
                    },
                    Ok(Item::Restored) => {
                        self.state = Phase::listing();
                        return Some(Ok(Observed::Resync));
                    }
                    Err(e) => return Some(Err(e)),
                },
                Phase::Resolving(ch) => {
                    let page = match lease.list(ch.route(), None, 1).await {
                        Ok(page) => page,
                        Err(e) => return Some(Err(e)),
                    };
                    let seen = match page.entries().next() {
                        Some(entry) => Observed::Held(entry),
                        None => Observed::Released(ch.clone()),
                    };
                    self.state = Phase::Live;
                    return Some(Ok(seen));
                }
            }
        }
    }
}

/// Reads the first LIST item of `rest`: the entry and what follows it.
fn take_entry<P: Buf>(rest: &P) -> Option<(LeaseEntry<P>, P)> {
    let bytes = rest.as_ref();
    let mut r = Reader::new(bytes);
    let item = ListItem::read_payload(&mut r).ok()?;
    let tail = bytes.get(bytes.len().saturating_sub(r.remaining())..)?;
    Some((LeaseEntry::of(rest, &item), rest.part(tail)))
}
