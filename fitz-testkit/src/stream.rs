//! Stream append sessions, reads and commit notifications (BROKER.md §9;
//! current dialect §15.6).
//!
//! Every route family keeps one log of committed records in global order;
//! a resource, an area and a realm are lists of positions in that log, so
//! a record's resource, area, realm and global offsets are its index in
//! each list. All four are assigned atomically at COMMIT.
//!
//! Limits (reported by GET_METADATA where they have a field):
//!
//! - an append session stages at most [`MAX_BATCH_EVENTS`] records and
//!   [`MAX_BATCH_BYTES`] bytes (body + metadata + discriminator): beyond
//!   that, "batch too large";
//! - a record must fit alone in a READ page of the extended layout (its
//!   route and the largest cursor included), or APPEND answers "event too
//!   large"; READ answers 2013 should one ever not fit;
//! - one client session holds at most [`MAX_OPEN_APPEND_SESSIONS`] open
//!   append sessions;
//! - commit notifications are coalesced per resource over
//!   [`NOTIFY_DEBOUNCE_MS`] milliseconds of broker time, flushed by `tick`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fitz_wire::codec::Element;
use fitz_wire::route::{self, SelectorAxis};
use fitz_wire::stream::{self, EventRecord, FilterSet, FilteredReason, Item, PageLayout, PageWriter, StreamMetadata};
use fitz_wire::{Dialect, EncodeError, MsgType, Payload, Reply, ServerError};

use crate::auth::Access;
use crate::core::{Close, Core, Handled, Request, SessionId};
use crate::subs::{Registry, SubError};
use crate::world::Domain;

/// Most records one append session may stage.
pub(crate) const MAX_BATCH_EVENTS: usize = 10_000;
/// Most bytes (body + metadata + discriminator) one append session may stage.
pub(crate) const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most append sessions one client session may hold open at once.
pub(crate) const MAX_OPEN_APPEND_SESSIONS: usize = 1024;
/// Commit notifications of one resource are coalesced over this window.
pub(crate) const NOTIFY_DEBOUNCE_MS: u64 = 25;

/// Stream error codes (BROKER.md §9.4).
const CONFLICT: u32 = 2001;
const SESSION_ACTIVE: u32 = 2002;
const SESSION_NOT_FOUND: u32 = 2003;
const INVALID_READ_BOUND: u32 = 2004;
const INVALID_PATTERN: u32 = 2010;
const QUOTA: u32 = 2011;
/// No code is documented for "empty batch", "batch too large", "event too
/// large" and malformed payloads; status 2 needs one, so they use the
/// backend code.
const BACKEND: u32 = 2012;
const READ_TOO_LARGE: u32 = 2013;

/// READ reply bytes around the items: status, `has_session_id`, the
/// page's `u32` length and the item count.
const PAGE_HEADER: usize = 1 + 1 + 4 + 4;
/// Largest cursor of a layout (every optional field present).
const fn cursor_max(layout: PageLayout) -> usize {
    match layout {
        PageLayout::Compatibility => 8 + 9 + 9 + 1,
        PageLayout::Extended => 8 + 9 + 9 + 9 + 1 + 9 + 9,
    }
}
/// Room for items in a READ reply of `layout`.
const fn item_budget(layout: PageLayout) -> usize {
    fitz_wire::record::MAX_PAYLOAD - PAGE_HEADER - cursor_max(layout)
}

/// One committed record.
#[derive(Debug)]
struct Event {
    route: Arc<str>,
    resource_offset: u64,
    area_offset: u64,
    realm_offset: u64,
    global_offset: u64,
    body: Vec<u8>,
    metadata: Option<Vec<u8>>,
    discriminator: Option<String>,
    /// UTC milliseconds of the commit.
    created_at: u64,
}

impl Event {
    fn record(&self) -> EventRecord<'_> {
        EventRecord {
            resource_offset: self.resource_offset,
            area_offset: Some(self.area_offset),
            realm_offset: Some(self.realm_offset),
            global_offset: Some(self.global_offset),
            body: &self.body,
            metadata: self.metadata.as_deref(),
            created_at: self.created_at,
        }
    }
}

/// The committed state of one route family.
#[derive(Debug, Default)]
struct Family {
    /// Every record, index = global offset.
    log: Vec<Event>,
    /// Route → global offsets, index = resource offset.
    resources: HashMap<Arc<str>, Vec<usize>>,
    /// (realm, area) → global offsets, index = area offset.
    areas: HashMap<(String, String), Vec<usize>>,
    /// Realm → global offsets, index = realm offset.
    realms: HashMap<String, Vec<usize>>,
}

impl Family {
    fn resource_len(&self, route: &str) -> u64 {
        self.resources.get(route).map_or(0, |r| r.len() as u64)
    }
}

/// A record staged by APPEND.
#[derive(Debug)]
struct Staged {
    body: Vec<u8>,
    metadata: Option<Vec<u8>>,
    discriminator: Option<String>,
}

/// An open append session.
#[derive(Debug)]
struct AppendSession {
    owner: SessionId,
    family: u32,
    route: Arc<str>,
    staged: Vec<Staged>,
    staged_bytes: usize,
}

/// Commit notification waiting for its debounce window to end.
#[derive(Debug, Clone, Copy)]
struct Pending {
    due: u64,
    first_resource: u64,
    last_resource: u64,
    first_area: u64,
    last_area: u64,
    first_realm: u64,
    last_realm: u64,
    first_global: u64,
    last_global: u64,
    batch_size: u64,
}

impl Pending {
    fn json(&self) -> String {
        format!(
            concat!(
                "{{\"event\":\"committed\",",
                "\"first_resource_offset\":{},\"last_resource_offset\":{},",
                "\"first_area_offset\":{},\"last_area_offset\":{},",
                "\"first_realm_offset\":{},\"last_realm_offset\":{},",
                "\"first_global_offset\":{},\"last_global_offset\":{},",
                "\"batch_size\":{}}}"
            ),
            self.first_resource,
            self.last_resource,
            self.first_area,
            self.last_area,
            self.first_realm,
            self.last_realm,
            self.first_global,
            self.last_global,
            self.batch_size
        )
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stream {
    families: HashMap<u32, Family>,
    sessions: HashMap<u64, AppendSession>,
    /// (family, route) → the open append session on that resource.
    open: HashMap<(u32, Arc<str>), u64>,
    next_session: u64,
    subs: Registry,
    pending: BTreeMap<(u32, Arc<str>), Pending>,
}

/// `stream://realm/area/resource` split into its three segments (which
/// may hold wildcards); `None` when the route cannot be split.
fn split3(route: &str) -> Option<(&str, &str, &str)> {
    let rest = route::strip_scheme(route, route::Scheme::Stream)?;
    let mut it = rest.split('/');
    let (r, a, s) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || [r, a, s].iter().any(|x| x.is_empty() || x.chars().any(char::is_control)) {
        return None;
    }
    Some((r, a, s))
}

/// The canonical form of a valid selector (WIRE.md §9.3).
fn canonical(selector: &str) -> String {
    if selector == "stream://**" {
        return "stream://*/*/*".into();
    }
    match selector.strip_suffix("/**") {
        Some(realm) => format!("{realm}/*/*"),
        None => selector.to_owned(),
    }
}

/// FNV-1a: a fingerprint that is stable across runs and builds.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Answers a Stream domain error: status 2 in the current dialect (unless
/// switched off), otherwise coded for READ and plain for the rest.
fn fail(core: &mut Core, req: &Request<'_>, code: u32, message: &str) {
    if req.dialect == Dialect::Current && core.cfg.current.stream_status2 {
        core.reply::<()>(req.to, Reply::Err(ServerError::status2(code, message)));
    } else if req.to.msg_type == MsgType::STREAM_READ {
        core.error(req.to, code, message);
    } else {
        core.plain_error(req.to, message);
    }
}

/// The records a READ walks, in axis order: positions in the family log.
enum Source<'a> {
    /// A resource, area or realm list.
    Ids(&'a [usize]),
    /// The family log itself (global axis).
    All(usize),
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Ids(ids) => ids.len(),
            Source::All(n) => *n,
        }
    }
    fn global(&self, i: usize) -> Option<usize> {
        match self {
            Source::Ids(ids) => ids.get(i).copied(),
            Source::All(n) => (i < *n).then_some(i),
        }
    }
}

impl Stream {
    fn begin(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let b = stream::Begin::decode(req.payload).map_err(|_| Close("undecodable Stream BEGIN"))?;
        // A route that cannot be split closes (BROKER.md §2.5).
        let (_, _, _) = split3(b.route).ok_or(Close("Stream BEGIN route is not realm/area/resource"))?;
        if !stream::is_concrete_route(b.route) {
            fail(core, req, INVALID_PATTERN, "append needs an exact stream route");
            return Ok(());
        }
        if !core.authorize(req, b.route, Access::Write) {
            return Ok(());
        }
        let route: Arc<str> = Arc::from(b.route);
        if self.open.contains_key(&(req.family, route.clone())) {
            fail(core, req, SESSION_ACTIVE, "session already active");
            return Ok(());
        }
        if self.sessions.values().filter(|s| s.owner == req.session()).count() >= MAX_OPEN_APPEND_SESSIONS {
            fail(core, req, BACKEND, "too many open append sessions");
            return Ok(());
        }
        self.next_session += 1;
        let id = self.next_session;
        self.open.insert((req.family, route.clone()), id);
        self.sessions.insert(
            id,
            AppendSession { owner: req.session(), family: req.family, route, staged: Vec::new(), staged_bytes: 0 },
        );
        core.reply(req.to, Reply::Ok(stream::BeginOk { session_id: id, data: &[] }));
        Ok(())
    }

    /// The append session `id` if the requesting session owns it.
    fn owned(&mut self, req: &Request<'_>, id: u64) -> Option<&mut AppendSession> {
        self.sessions.get_mut(&id).filter(|s| s.owner == req.session())
    }

    fn end_session(&mut self, id: u64) -> Option<AppendSession> {
        let s = self.sessions.remove(&id)?;
        if self.open.get(&(s.family, s.route.clone())) == Some(&id) {
            self.open.remove(&(s.family, s.route.clone()));
        }
        Some(s)
    }

    fn append(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let Ok(a) = stream::Append::decode(req.payload) else {
            fail(core, req, BACKEND, "malformed append");
            return Ok(());
        };
        let Some(s) = self.sessions.get(&a.session_id).filter(|s| s.owner == req.session()) else {
            fail(core, req, SESSION_NOT_FOUND, "session not found");
            return Ok(());
        };
        let committed = self.families.get(&s.family).map_or(0, |f| f.resource_len(&s.route));
        let next = committed + s.staged.len() as u64;
        if a.expected_offset != next {
            fail(core, req, CONFLICT, "concurrency conflict");
            return Ok(());
        }
        // The record alone must fit a READ page in the largest layout.
        let probe = Item::Event {
            route: &s.route,
            record: EventRecord {
                resource_offset: next,
                area_offset: Some(0),
                realm_offset: Some(0),
                global_offset: Some(0),
                body: a.body,
                metadata: a.metadata,
                created_at: 0,
            },
        };
        if Element::wire_len(&probe, PageLayout::Extended) > item_budget(PageLayout::Extended) {
            fail(core, req, BACKEND, "event too large");
            return Ok(());
        }
        let size = a.body.len() + a.metadata.map_or(0, <[u8]>::len) + a.discriminator.map_or(0, str::len);
        if s.staged.len() >= MAX_BATCH_EVENTS || s.staged_bytes.saturating_add(size) > MAX_BATCH_BYTES {
            fail(core, req, BACKEND, "batch too large");
            return Ok(());
        }
        let Some(s) = self.owned(req, a.session_id) else { return Ok(()) };
        s.staged.push(Staged {
            body: a.body.to_vec(),
            metadata: a.metadata.map(<[u8]>::to_vec),
            discriminator: a.discriminator.map(str::to_owned),
        });
        s.staged_bytes += size;
        let offset = next.to_be_bytes();
        core.reply(req.to, Reply::Ok(stream::AppendOk { data: Some(&offset) }));
        Ok(())
    }

    fn commit(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let Ok(c) = stream::Commit::decode(req.payload) else {
            fail(core, req, BACKEND, "malformed commit");
            return Ok(());
        };
        let Some(s) = self.owned(req, c.session_id) else {
            fail(core, req, SESSION_NOT_FOUND, "session not found");
            return Ok(());
        };
        if s.staged.is_empty() {
            // The session stays open.
            fail(core, req, BACKEND, "empty batch");
            return Ok(());
        }
        let Some(s) = self.end_session(c.session_id) else { return Ok(()) };
        let Some((realm, area, _)) = split3(&s.route) else { return Ok(()) };
        let (realm, area) = (realm.to_owned(), area.to_owned());
        let created_at = core.clock.utc_ms();
        let fam = self.families.entry(s.family).or_default();
        let mut first: Option<(u64, u64, u64, u64)> = None;
        let mut last = (0, 0, 0, 0);
        let n = s.staged.len() as u64;
        for rec in s.staged {
            let global = fam.log.len();
            let res = fam.resources.entry(s.route.clone()).or_default();
            let areas = fam.areas.entry((realm.clone(), area.clone())).or_default();
            let realms = fam.realms.entry(realm.clone()).or_default();
            let offsets = (res.len() as u64, areas.len() as u64, realms.len() as u64, global as u64);
            res.push(global);
            areas.push(global);
            realms.push(global);
            fam.log.push(Event {
                route: s.route.clone(),
                resource_offset: offsets.0,
                area_offset: offsets.1,
                realm_offset: offsets.2,
                global_offset: offsets.3,
                body: rec.body,
                metadata: rec.metadata,
                discriminator: rec.discriminator,
                created_at,
            });
            first.get_or_insert(offsets);
            last = offsets;
        }
        let first = first.unwrap_or(last);
        let now = core.now();
        self.pending
            .entry((s.family, s.route.clone()))
            .and_modify(|p| {
                (p.last_resource, p.last_area, p.last_realm, p.last_global) = last;
                p.batch_size += n;
            })
            .or_insert(Pending {
                due: now.saturating_add(NOTIFY_DEBOUNCE_MS),
                first_resource: first.0,
                last_resource: last.0,
                first_area: first.1,
                last_area: last.1,
                first_realm: first.2,
                last_realm: last.2,
                first_global: first.3,
                last_global: last.3,
                batch_size: n,
            });
        core.reply(req.to, Reply::Ok(stream::CommitOk { data: &[] }));
        Ok(())
    }

    fn rollback(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let Ok(r) = stream::Rollback::decode(req.payload) else {
            fail(core, req, BACKEND, "malformed rollback");
            return Ok(());
        };
        if self.owned(req, r.session_id).is_none() {
            fail(core, req, SESSION_NOT_FOUND, "session not found");
            return Ok(());
        }
        self.end_session(r.session_id);
        core.ack(req.to);
        Ok(())
    }

    fn read(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let read = match stream::Read::decode(req.payload) {
            Ok(r) => r,
            Err(_) => {
                // The selector is what the permission check needs: without
                // it the request cannot be routed (BROKER.md §2.5).
                fitz_wire::codec::Reader::new(req.payload).str().map_err(|_| Close("undecodable Stream READ"))?;
                fail(core, req, INVALID_READ_BOUND, "malformed read request");
                return Ok(());
            }
        };
        let Some(axis) = route::stream_selector(read.selector) else {
            fail(core, req, INVALID_PATTERN, "invalid stream selector");
            return Ok(());
        };
        if !core.authorize(req, read.selector, Access::Read) {
            return Ok(());
        }
        let filter = match read.filter.as_ref().and_then(stream::Filter::raw) {
            None => None,
            Some(blob) => match FilterSet::parse(blob) {
                Ok(set) if set.is_empty() => None,
                Ok(set) => Some((set, blob)),
                Err(e) => {
                    fail(core, req, e.code(), &e.to_string());
                    return Ok(());
                }
            },
        };
        let layout = PageLayout::from_axis(axis);
        let empty = Family::default();
        let fam = self.families.get(&req.family).unwrap_or(&empty);
        let watermark = fam.log.len();

        // Global reads: fingerprint of (family, selector, filter) and the
        // watermark captured on the first page (BROKER.md §9.2).
        let mut end = usize::MAX;
        let mut continuation = (None, None);
        if axis == SelectorAxis::Global {
            let canon = canonical(read.selector);
            let fingerprint =
                fnv1a(&[&req.family.to_be_bytes(), canon.as_bytes(), filter.map_or(&[][..], |(_, blob)| blob)]);
            let echoed = read.continuation.unwrap_or_default();
            let captured = match (echoed.cursor_fingerprint, echoed.captured_watermark) {
                (None, None) => None,
                (Some(f), Some(w)) if f == fingerprint && usize::try_from(w).is_ok_and(|w| w <= watermark) => {
                    usize::try_from(w).ok()
                }
                _ => {
                    fail(core, req, INVALID_READ_BOUND, "continuation does not belong to this selector and filter");
                    return Ok(());
                }
            };
            // A snapshot with nothing left from `from_offset` on is
            // replaced by a new one, so a reader that keeps echoing the
            // values still sees later commits.
            let from = usize::try_from(read.from_offset).unwrap_or(usize::MAX);
            let pinned = captured.filter(|&w| {
                (from..w).any(|i| fam.log.get(i).is_some_and(|e| route::matches(read.selector, &e.route)))
            });
            end = pinned.unwrap_or(watermark);
            continuation = (Some(fingerprint), Some(end as u64));
        }

        let source = match axis {
            SelectorAxis::Resource => Source::Ids(fam.resources.get(read.selector).map_or(&[][..], Vec::as_slice)),
            SelectorAxis::Area => {
                let (realm, area, _) = split3(read.selector).unwrap_or_default();
                Source::Ids(fam.areas.get(&(realm.to_owned(), area.to_owned())).map_or(&[][..], Vec::as_slice))
            }
            SelectorAxis::Realm => {
                let realm = route::strip_scheme(read.selector, route::Scheme::Stream)
                    .and_then(|r| r.split('/').next())
                    .unwrap_or_default();
                Source::Ids(fam.realms.get(realm).map_or(&[][..], Vec::as_slice))
            }
            SelectorAxis::Global => Source::All(watermark),
        };
        let end = end.min(source.len());
        let selected = |i: usize| -> Option<&Event> {
            let e = fam.log.get(source.global(i)?)?;
            route::matches(read.selector, &e.route).then_some(e)
        };

        let limit = usize::try_from(read.limit).unwrap_or(usize::MAX);
        let max_bytes = read.max_bytes.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        let mut buf = vec![0u8; item_budget(layout)];
        let mut writer = PageWriter::new(&mut buf, layout);
        let mut last: Option<&Event> = None;
        let mut has_more = false;
        let mut i = usize::try_from(read.from_offset).unwrap_or(usize::MAX);
        if limit > 0 {
            while i < end {
                let Some(e) = selected(i) else {
                    i += 1;
                    continue;
                };
                if writer.len() as usize >= limit {
                    has_more = true;
                    break;
                }
                let passes = filter.is_none_or(|(set, _)| set.matches(e.discriminator.as_deref().unwrap_or("")));
                let item = if passes {
                    Item::Event { route: &e.route, record: e.record() }
                } else {
                    Item::Filtered { route: &e.route, offset: e.resource_offset, reason: FilteredReason::ServerFilter }
                };
                // The byte budget stops the page early; the first item is
                // always returned so that a reader never stalls.
                let size = Element::wire_len(&item, layout);
                if !writer.is_empty() && max_bytes.is_some_and(|m| writer.written().saturating_add(size) > m) {
                    has_more = true;
                    break;
                }
                match writer.push(&item) {
                    Ok(()) => {}
                    Err(EncodeError::BufferTooSmall { .. }) if writer.is_empty() => {
                        fail(core, req, READ_TOO_LARGE, "read response too large");
                        return Ok(());
                    }
                    Err(EncodeError::BufferTooSmall { .. }) => {
                        has_more = true;
                        break;
                    }
                    Err(_) => {
                        fail(core, req, BACKEND, "cannot encode read page");
                        return Ok(());
                    }
                }
                last = Some(e);
                i += 1;
            }
            // Caught up with a pinned snapshot: later commits still count.
            if !has_more && i >= end && end < source.len() {
                has_more = (end..source.len()).any(|j| selected(j).is_some());
            }
        }
        let cursor = match last {
            Some(e) => stream::Cursor {
                last_resource_offset: e.resource_offset,
                last_area_offset: Some(e.area_offset),
                last_realm_offset: Some(e.realm_offset),
                last_global_offset: Some(e.global_offset),
                has_more,
                cursor_fingerprint: continuation.0,
                captured_watermark: continuation.1,
            },
            // An empty page: no axis position to report, the reader keeps
            // its `from_offset` (exact reads: last_resource_offset = from).
            None => stream::Cursor {
                last_resource_offset: read.from_offset,
                has_more: false,
                cursor_fingerprint: continuation.0,
                captured_watermark: continuation.1,
                ..stream::Cursor::default()
            },
        };
        let items = writer.finish();
        core.reply(req.to, Reply::Ok(stream::ReadOk { page: Some(stream::Page { items, cursor }) }));
        Ok(())
    }

    /// LAST and GET_METADATA: the exact resource, `None` for a wildcard
    /// route (answered with an empty OK); closes on a route that cannot be
    /// split.
    fn exact_route<'p>(core: &mut Core, req: &Request<'_>, route: &'p str) -> Result<Option<&'p str>, Close> {
        let concrete = stream::is_concrete_route(route);
        if !concrete && split3(route).is_none() && route::stream_selector(route).is_none() {
            return Err(Close("Stream route is not realm/area/resource"));
        }
        if !core.authorize(req, route, Access::Read) {
            return Ok(None);
        }
        if !concrete {
            core.ack(req.to);
            return Ok(None);
        }
        Ok(Some(route))
    }

    fn last(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let l = stream::Last::decode(req.payload).map_err(|_| Close("undecodable Stream LAST"))?;
        let Some(route) = Self::exact_route(core, req, l.route)? else { return Ok(()) };
        let record = self.families.get(&req.family).and_then(|f| {
            let &g = f.resources.get(route)?.last()?;
            f.log.get(g).map(Event::record)
        });
        core.reply(req.to, Reply::Ok(stream::LastOk { record }));
        Ok(())
    }

    fn metadata(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let m = stream::GetMetadata::decode(req.payload).map_err(|_| Close("undecodable Stream GET_METADATA"))?;
        let Some(route) = Self::exact_route(core, req, m.route)? else { return Ok(()) };
        let (realm, area, _) = split3(route).unwrap_or_default();
        let fam = self.families.get(&req.family);
        let count = fam.map_or(0, |f| f.resource_len(route));
        let area_watermark =
            fam.and_then(|f| f.areas.get(&(realm.to_owned(), area.to_owned()))).map_or(0, |v| v.len() as u64);
        let realm_watermark = fam.and_then(|f| f.realms.get(realm)).map_or(0, |v| v.len() as u64);
        let metadata = StreamMetadata {
            first_offset: (count > 0).then_some(0),
            last_offset: count.checked_sub(1),
            record_count: count,
            max_batch_events: MAX_BATCH_EVENTS as u64,
            max_batch_bytes: MAX_BATCH_BYTES as u64,
            ttl_seconds: None,
            area_watermark,
            realm_watermark,
        };
        core.reply(req.to, Reply::Ok(stream::MetadataOk { metadata: Some(metadata) }));
        Ok(())
    }

    fn subscribe(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let selector = match req.to.msg_type {
            MsgType::STREAM_SUBSCRIBE => stream::Subscribe::decode(req.payload).map(|m| m.selector),
            _ => stream::Unsubscribe::decode(req.payload).map(|m| m.selector),
        }
        .map_err(|_| Close("undecodable Stream subscription"))?;
        if route::stream_selector(selector).is_none() {
            fail(core, req, INVALID_PATTERN, "invalid stream selector");
            return Ok(());
        }
        if !core.authorize(req, selector, Access::Read) {
            return Ok(());
        }
        if req.to.msg_type == MsgType::STREAM_UNSUBSCRIBE {
            self.subs.unsubscribe_pattern(req.session(), selector);
            core.ack(req.to);
            return Ok(());
        }
        let l = core.cfg.limits;
        match self.subs.subscribe(req.session(), req.family, selector, l.wildcard_quota, l.total_quota) {
            Ok(sub_id) => {
                let empty_data = core.cfg.sdk_compat;
                core.reply(req.to, Reply::Ok(stream::SubscribeOk { sub_id, empty_data }));
            }
            Err(SubError::Quota) => fail(core, req, QUOTA, "subscription limit exceeded"),
        }
        Ok(())
    }
}

impl Domain for Stream {
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        match req.to.msg_type {
            MsgType::STREAM_BEGIN => self.begin(core, req),
            MsgType::STREAM_APPEND => self.append(core, req),
            MsgType::STREAM_COMMIT => self.commit(core, req),
            MsgType::STREAM_ROLLBACK => self.rollback(core, req),
            MsgType::STREAM_READ => self.read(core, req),
            MsgType::STREAM_LAST => self.last(core, req),
            MsgType::STREAM_GET_METADATA => self.metadata(core, req),
            MsgType::STREAM_SUBSCRIBE | MsgType::STREAM_UNSUBSCRIBE => self.subscribe(core, req),
            _ => Err(Close("unsupported Stream message type")),
        }
    }

    /// Sends the commit notifications whose debounce window has ended.
    fn tick(&mut self, core: &mut Core) {
        let now = core.now();
        let due: Vec<(u32, Arc<str>)> =
            self.pending.iter().filter(|(_, p)| p.due <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            let Some(p) = self.pending.remove(&key) else { continue };
            let (family, route) = &key;
            let json = p.json();
            let targets: Vec<(SessionId, u64)> =
                self.subs.matching(*family, route).map(|s| (s.session, s.id)).collect();
            for (session, sub_id) in targets {
                core.notify(session, &stream::Notify { sub_id, route, payload: json.as_bytes() });
            }
        }
    }

    /// Aborts the session's append sessions and drops its subscriptions.
    fn cleanup(&mut self, _core: &mut Core, session: SessionId) {
        let mine: Vec<u64> = self.sessions.iter().filter(|(_, s)| s.owner == session).map(|(id, _)| *id).collect();
        for id in mine {
            self.end_session(id);
        }
        self.subs.remove_session(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_split_and_canonicalise() {
        assert_eq!(split3("stream://r/a/s"), Some(("r", "a", "s")));
        assert_eq!(split3("stream://r/*/s"), Some(("r", "*", "s")));
        assert_eq!(split3("stream://r/a"), None);
        assert_eq!(split3("stream://r//s"), None);
        assert_eq!(split3("notice://r/a/s"), None);
        assert_eq!(canonical("stream://**"), "stream://*/*/*");
        assert_eq!(canonical("stream://r/**"), "stream://r/*/*");
        assert_eq!(canonical("stream://*/a/s"), "stream://*/a/s");
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn item_budget_fits_a_record() {
        assert_eq!(item_budget(PageLayout::Compatibility) + PAGE_HEADER + 27, fitz_wire::record::MAX_PAYLOAD);
        assert_eq!(item_budget(PageLayout::Extended) + PAGE_HEADER + 54, fitz_wire::record::MAX_PAYLOAD);
    }
}
