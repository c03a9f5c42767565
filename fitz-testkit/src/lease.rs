//! Leases, types 400–410 (BROKER.md §7; current dialect §15.4, WIRE.md
//! §8.4, §B9).
//!
//! One holder per exact route and route family. The holder identity is the
//! pair (session, `owner_id`); QUERY reports it as `session:<n>` or
//! `session:<n>:<owner_id>` where `<n>` is the session's opaque incarnation
//! (the value LIST reports as `holder_incarnation`). Fencing tokens come
//! from one broker-wide counter. Expiry is checked lazily whenever a route
//! is touched and by the periodic `tick` sweep; both replay the events in
//! time order (an expiry frees the lease at its expiry instant, the next
//! waiter whose wait had not ended by then is granted from that instant).

use std::collections::{BTreeMap, HashMap, VecDeque};

use fitz_wire::lease::{
    self, Acquire, AcquireOk, AcquireStatus, LeaseState, List, ListCursor, ListItem, ListOk, Query, Release, Renew,
    RenewOk, Subscribe, SubscribeOk, Unsubscribe,
};
use fitz_wire::route::{self, Scheme};
use fitz_wire::{Dialect, ListWriter, MsgType, Payload, Reader, Reply};

use crate::auth::Access;
use crate::core::{Close, Core, Handled, ReplyTo, Request, SessionId};
use crate::subs::{Registry, SubError};
use crate::world::Domain;

/// Waiters per lease (BROKER.md §7.2, §12.1).
const MAX_WAITERS: usize = 100;
/// Further AlreadyQueued acquisitions attached to one waiter.
const MAX_ATTACHED: usize = 100;
/// Live LIST snapshots per session; the oldest is evicted beyond this.
const SNAPSHOTS_PER_SESSION: usize = 16;
/// Live LIST snapshots in one broker world.
const SNAPSHOTS_TOTAL: usize = 256;
/// Most leases one wildcard LIST may capture.
const MAX_SCAN: usize = 10_000;
/// Default and largest LIST page.
const LIST_DEFAULT: usize = 100;
const LIST_MAX: usize = 500;
/// Bytes of a LIST OK around the items: status, count, has_next, cursor.
const LIST_OVERHEAD: usize = 1 + 4 + 1 + 12;

const BAD_REQUEST: u32 = 5008;

/// (route family, concrete route)
type Key = (u32, String);

#[derive(Debug, Clone)]
struct Holder {
    session: SessionId,
    owner_id: String,
    token: u64,
    /// Broker time (ms) at which the lease ends.
    expires_at: u64,
    /// UTC ms of the grant.
    acquired_utc_ms: u64,
    renewals: u32,
}

/// A queued acquisition.
#[derive(Debug)]
struct Waiter {
    session: SessionId,
    owner_id: String,
    to: ReplyTo,
    /// AlreadyQueued acquisitions of the same holder: each gets its own
    /// deferred frame (AlreadyHeld on grant, 5006 when the wait ends).
    attached: Vec<ReplyTo>,
    ttl_ms: u64,
    /// Broker time (ms) at which the wait ends.
    deadline: u64,
}

/// The holder of a lease that expired and was not taken since: its RENEW
/// is answered 5003 (instead of 5004) until it renews, releases, someone
/// else acquires, or its session ends.
#[derive(Debug)]
struct Expired {
    session: SessionId,
    owner_id: String,
}

#[derive(Debug, Default)]
struct Entry {
    holder: Option<Holder>,
    waiters: VecDeque<Waiter>,
    expired: Option<Expired>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty() && self.expired.is_none()
    }
}

/// One captured lease of a LIST snapshot.
#[derive(Debug)]
struct SnapItem {
    route: String,
    owner_id: String,
    incarnation: u64,
    acquired_at: String,
    expires_at: u64,
    renewals: u32,
}

#[derive(Debug)]
struct Snapshot {
    /// Creation order, for eviction.
    seq: u64,
    session: SessionId,
    family: u32,
    pattern: String,
    items: Vec<SnapItem>,
    /// The offset the last page handed out.
    next: usize,
}

#[derive(Debug)]
pub(crate) struct Lease {
    leases: BTreeMap<Key, Entry>,
    next_token: u64,
    subs: Registry,
    snapshots: HashMap<u64, Snapshot>,
    next_seq: u64,
    /// Makes incarnations and snapshot ids opaque and different from one
    /// broker instance to the next.
    salt: u64,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            leases: BTreeMap::new(),
            next_token: 0,
            subs: Registry::default(),
            snapshots: HashMap::new(),
            next_seq: 0,
            salt: rand::random(),
        }
    }
}

/// A bijective 64-bit mixer (splitmix64 finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True if `route` is `lease://` and three non-empty segments (wildcards
/// allowed): what the ingress needs to check permissions. Anything else
/// closes the connection (BROKER.md §2.5).
fn splittable(route: &str) -> bool {
    route::strip_scheme(route, Scheme::Lease).is_some_and(|rest| {
        let mut n = 0usize;
        for seg in rest.split('/') {
            if seg.is_empty() {
                return false;
            }
            n += 1;
        }
        n == 3
    })
}

/// The leading `str` of a payload (every Lease request starts with its
/// route or pattern).
fn leading_str(payload: &[u8]) -> Option<&str> {
    Reader::new(payload).str().ok()
}

fn rfc3339(utc_ms: u64) -> String {
    i64::try_from(utc_ms)
        .ok()
        .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Remaining whole seconds, rounded up (a live lease never reports 0).
fn secs_left(expires_at: u64, now: u64) -> u64 {
    expires_at.saturating_sub(now).div_ceil(1000)
}

impl Lease {
    fn incarnation(&self, session: SessionId) -> u64 {
        mix(session ^ self.salt)
    }

    /// The holder string QUERY reports (BROKER.md §7.1).
    fn scoped_owner(&self, session: SessionId, owner_id: &str) -> String {
        let n = self.incarnation(session);
        if owner_id.is_empty() { format!("session:{n}") } else { format!("session:{n}:{owner_id}") }
    }

    fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn notify(&self, core: &mut Core, family: u32, route: &str) {
        let targets: Vec<u64> = self.subs.matching(family, route).map(|s| s.id).collect();
        for id in targets {
            if let Some(s) = self.subs.get(id) {
                core.notify(s.session, &lease::Notify::new(id, route));
            }
        }
    }

    /// Brings `key` up to date at `core.now()`: expiries (with NOTIFY and
    /// grants to waiters, in time order), then ended waits (5006).
    fn settle(&mut self, core: &mut Core, key: &Key) {
        let now = core.now();
        loop {
            let Some(entry) = self.leases.get_mut(key) else { return };
            let Some(h) = entry.holder.as_ref().filter(|h| h.expires_at <= now) else { break };
            let freed_at = h.expires_at;
            if let Some(h) = entry.holder.take() {
                entry.expired = Some(Expired { session: h.session, owner_id: h.owner_id });
            }
            self.notify(core, key.0, &key.1);
            self.grant_next(core, key, freed_at);
        }
        let Some(entry) = self.leases.get_mut(key) else { return };
        let mut ended = Vec::new();
        entry.waiters.retain_mut(|w| {
            if w.deadline <= now {
                ended.push((w.to, ::core::mem::take(&mut w.attached)));
                false
            } else {
                true
            }
        });
        if entry.is_empty() {
            self.leases.remove(key);
        }
        for (to, attached) in ended {
            for t in ::core::iter::once(to).chain(attached) {
                core.error(t, 5006, "Timeout: lease wait ended");
            }
        }
    }

    /// The lease at `key` became free at broker time `at`: grant it to the
    /// first waiter whose wait had not ended by then (answering the others
    /// 5006), with NOTIFY.
    fn grant_next(&mut self, core: &mut Core, key: &Key, at: u64) {
        let now = core.now();
        let utc_now = core.clock.utc_ms();
        loop {
            let Some(entry) = self.leases.get_mut(key) else { return };
            if entry.holder.is_some() {
                return;
            }
            let Some(w) = entry.waiters.pop_front() else { return };
            if !core.sessions.contains_key(&w.session) {
                continue;
            }
            if w.deadline <= at {
                for t in ::core::iter::once(w.to).chain(w.attached) {
                    core.error(t, 5006, "Timeout: lease wait ended");
                }
                continue;
            }
            let token = self.next_token();
            let Some(entry) = self.leases.get_mut(key) else { return };
            entry.expired = None;
            entry.holder = Some(Holder {
                session: w.session,
                owner_id: w.owner_id,
                token,
                expires_at: at.saturating_add(w.ttl_ms),
                acquired_utc_ms: utc_now.saturating_sub(now.saturating_sub(at)),
                renewals: 0,
            });
            core.reply(w.to, Reply::Ok(AcquireOk { status: AcquireStatus::Acquired, fencing_token: token }));
            for t in w.attached {
                core.reply(t, Reply::Ok(AcquireOk { status: AcquireStatus::AlreadyHeld, fencing_token: token }));
            }
            self.notify(core, key.0, &key.1);
            return;
        }
    }

    /// The ingress step of a 400–403 request: closes when its route cannot
    /// be extracted or split into realm/area/resource, answers 5009 and
    /// returns false when it is not permitted.
    fn permitted(core: &mut Core, req: &Request<'_>, access: Access) -> Result<bool, Close> {
        let route = leading_str(req.payload).ok_or(Close("undecodable lease route"))?;
        if !splittable(route) {
            return Err(Close("lease route is not realm/area/resource"));
        }
        Ok(core.authorize(req, route, access))
    }

    fn acquire(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if !Self::permitted(core, req, Access::Write)? {
            return Ok(());
        }
        let Ok(a) = Acquire::decode(req.payload) else {
            core.error(req.to, BAD_REQUEST, "BadRequest: malformed ACQUIRE");
            return Ok(());
        };
        if !route::is_concrete(a.route, Scheme::Lease, 3) {
            core.error(req.to, BAD_REQUEST, "BadRequest: lease route must be exact");
            return Ok(());
        }
        if req.dialect == Dialect::Current && a.owner_id.len() > lease::MAX_OWNER_ID_LEN {
            core.error(req.to, BAD_REQUEST, "BadRequest: owner_id longer than 512 bytes");
            return Ok(());
        }
        if a.wait_seconds > lease::MAX_WAIT_SECONDS {
            core.error(req.to, BAD_REQUEST, "BadRequest: wait_seconds above 30");
            return Ok(());
        }
        let now = core.now();
        let ttl_ms = a.ttl_secs.checked_mul(1000).filter(|ms| *ms > 0 && now.checked_add(*ms).is_some());
        let Some(ttl_ms) = ttl_ms else {
            core.error(req.to, BAD_REQUEST, "BadRequest: invalid ttl");
            return Ok(());
        };
        let key: Key = (req.family, a.route.to_owned());
        self.settle(core, &key);
        let session = req.session();
        let scoped = self.leases.get(&key).and_then(|e| e.holder.as_ref()).map(|h| {
            let mine = h.session == session && h.owner_id == a.owner_id;
            (mine, h.token, self.scoped_owner(h.session, &h.owner_id))
        });
        match scoped {
            None => {
                let token = self.next_token();
                let entry = self.leases.entry(key.clone()).or_default();
                entry.expired = None;
                entry.holder = Some(Holder {
                    session,
                    owner_id: a.owner_id.to_owned(),
                    token,
                    expires_at: now.saturating_add(ttl_ms),
                    acquired_utc_ms: core.clock.utc_ms(),
                    renewals: 0,
                });
                core.reply(req.to, Reply::Ok(AcquireOk { status: AcquireStatus::Acquired, fencing_token: token }));
                self.notify(core, key.0, &key.1);
            }
            Some((true, token, _)) => {
                core.reply(req.to, Reply::Ok(AcquireOk { status: AcquireStatus::AlreadyHeld, fencing_token: token }));
            }
            Some((false, _, owner)) => {
                if a.wait_seconds == 0 {
                    core.error(req.to, 5001, &format!("HeldByOther: {owner}"));
                    return Ok(());
                }
                let Some(entry) = self.leases.get_mut(&key) else { return Ok(()) };
                if let Some(w) = entry.waiters.iter_mut().find(|w| w.session == session && w.owner_id == a.owner_id) {
                    if w.attached.len() >= MAX_ATTACHED {
                        core.error(req.to, 5007, "QueueFull: too many queued acquisitions");
                        return Ok(());
                    }
                    w.attached.push(req.to);
                    let ok = AcquireOk { status: AcquireStatus::AlreadyQueued, fencing_token: 0 };
                    core.reply(req.to, Reply::Ok(ok));
                    return Ok(());
                }
                if entry.waiters.len() >= MAX_WAITERS {
                    core.error(req.to, 5007, "QueueFull: more than 100 waiters");
                    return Ok(());
                }
                entry.waiters.push_back(Waiter {
                    session,
                    owner_id: a.owner_id.to_owned(),
                    to: req.to,
                    attached: Vec::new(),
                    ttl_ms,
                    deadline: now.saturating_add(u64::from(a.wait_seconds) * 1000),
                });
                core.reply(req.to, Reply::Ok(AcquireOk { status: AcquireStatus::Queued, fencing_token: 0 }));
            }
        }
        Ok(())
    }

    fn renew(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if !Self::permitted(core, req, Access::Write)? {
            return Ok(());
        }
        let Ok(r) = Renew::decode(req.payload) else {
            core.error(req.to, BAD_REQUEST, "BadRequest: malformed RENEW");
            return Ok(());
        };
        if !route::is_concrete(r.route, Scheme::Lease, 3) {
            core.error(req.to, BAD_REQUEST, "BadRequest: lease route must be exact");
            return Ok(());
        }
        let now = core.now();
        let Some(ttl_ms) = r.ttl_secs.checked_mul(1000).filter(|ms| *ms > 0 && now.checked_add(*ms).is_some()) else {
            core.error(req.to, BAD_REQUEST, "BadRequest: invalid ttl");
            return Ok(());
        };
        let key: Key = (req.family, r.route.to_owned());
        self.settle(core, &key);
        let session = req.session();
        let fresh = if req.dialect == Dialect::Legacy { Some(self.next_token + 1) } else { None };
        let Some(entry) = self.leases.get_mut(&key) else {
            core.error(req.to, 5004, "NotHeld: lease not held");
            return Ok(());
        };
        match entry.holder.as_mut() {
            Some(h) if h.session != session || h.owner_id != r.owner_id => {
                core.error(req.to, 5004, "NotHeld: lease held by another owner");
            }
            Some(h) if h.token != r.fencing_token => core.error(req.to, 5002, "Fenced: stale fencing token"),
            Some(h) => {
                h.expires_at = now.saturating_add(ttl_ms);
                h.renewals = h.renewals.saturating_add(1);
                if let Some(t) = fresh {
                    h.token = t;
                    self.next_token = t;
                }
                let fencing_token = h.token;
                core.reply(req.to, Reply::Ok(RenewOk { fencing_token }));
            }
            None => {
                if entry.expired.as_ref().is_some_and(|e| e.session == session && e.owner_id == r.owner_id) {
                    entry.expired = None;
                    if entry.is_empty() {
                        self.leases.remove(&key);
                    }
                    core.error(req.to, 5003, "Expired: lease expired");
                } else {
                    core.error(req.to, 5004, "NotHeld: lease not held");
                }
            }
        }
        Ok(())
    }

    fn release(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if !Self::permitted(core, req, Access::Write)? {
            return Ok(());
        }
        let Ok(r) = Release::decode(req.payload) else {
            core.error(req.to, BAD_REQUEST, "BadRequest: malformed RELEASE");
            return Ok(());
        };
        if !route::is_concrete(r.route, Scheme::Lease, 3) {
            core.error(req.to, BAD_REQUEST, "BadRequest: lease route must be exact");
            return Ok(());
        }
        let key: Key = (req.family, r.route.to_owned());
        self.settle(core, &key);
        let session = req.session();
        let Some(entry) = self.leases.get_mut(&key) else {
            // Missing (never acquired, released, expired): success.
            core.ack(req.to);
            return Ok(());
        };
        match entry.holder.as_ref() {
            Some(h) if h.session != session || h.owner_id != r.owner_id => {
                core.error(req.to, 5004, "NotHeld: lease held by another owner");
            }
            Some(h) if h.token != r.fencing_token => core.error(req.to, 5002, "Fenced: stale fencing token"),
            Some(_) => {
                entry.holder = None;
                core.ack(req.to);
                self.notify(core, key.0, &key.1);
                let now = core.now();
                self.grant_next(core, &key, now);
                self.drop_if_empty(&key);
            }
            None => {
                if entry.expired.as_ref().is_some_and(|e| e.session == session && e.owner_id == r.owner_id) {
                    entry.expired = None;
                }
                self.drop_if_empty(&key);
                core.ack(req.to);
            }
        }
        Ok(())
    }

    fn drop_if_empty(&mut self, key: &Key) {
        if self.leases.get(key).is_some_and(Entry::is_empty) {
            self.leases.remove(key);
        }
    }

    fn query(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if !Self::permitted(core, req, Access::Read)? {
            return Ok(());
        }
        let Ok(q) = Query::decode(req.payload) else {
            core.error(req.to, BAD_REQUEST, "BadRequest: malformed QUERY");
            return Ok(());
        };
        if !route::is_concrete(q.route, Scheme::Lease, 3) {
            core.error(req.to, BAD_REQUEST, "BadRequest: lease route must be exact");
            return Ok(());
        }
        let key: Key = (req.family, q.route.to_owned());
        self.settle(core, &key);
        let now = core.now();
        let entry = self.leases.get(&key);
        let pending_waiters = entry.map_or(0, |e| u32::try_from(e.waiters.len()).unwrap_or(u32::MAX));
        match entry.and_then(|e| e.holder.as_ref()) {
            Some(h) => {
                let owner = self.scoped_owner(h.session, &h.owner_id);
                let state = LeaseState::Held {
                    owner_id: &owner,
                    ttl_remaining_secs: secs_left(h.expires_at, now),
                    pending_waiters,
                };
                core.reply(req.to, Reply::Ok(state));
            }
            None => core.reply(req.to, Reply::Ok(LeaseState::Free { pending_waiters })),
        }
        Ok(())
    }

    fn subscribe(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let pattern = leading_str(req.payload).ok_or(Close("undecodable lease subscription"))?;
        let decoded = match req.to.msg_type {
            MsgType::LEASE_SUBSCRIBE => Subscribe::decode(req.payload).map(|m| m.route),
            _ => Unsubscribe::decode(req.payload).map(|m| m.route),
        };
        if decoded.is_err() {
            core.error(req.to, BAD_REQUEST, "BadRequest: malformed request");
            return Ok(());
        }
        if !lease::selector_allowed(pattern, req.dialect) {
            core.error(req.to, 5010, "InvalidSubscription: invalid lease route");
            return Ok(());
        }
        if !core.authorize(req, pattern, Access::Read) {
            return Ok(());
        }
        if req.to.msg_type == MsgType::LEASE_UNSUBSCRIBE {
            self.subs.unsubscribe_pattern(req.session(), pattern);
            core.ack(req.to);
            return Ok(());
        }
        let l = core.cfg.limits;
        match self.subs.subscribe(req.session(), req.family, pattern, l.wildcard_quota, l.total_quota) {
            Ok(sub_id) => core.reply(req.to, Reply::Ok(SubscribeOk { sub_id })),
            Err(SubError::Quota) => core.error(req.to, 5010, "InvalidSubscription: subscription limit exceeded"),
        }
        Ok(())
    }

    fn list(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if req.dialect == Dialect::Legacy {
            return Err(Close("lease LIST is not part of the legacy dialect"));
        }
        let pattern = leading_str(req.payload).ok_or(Close("undecodable lease LIST"))?;
        if !lease::selector_allowed(pattern, Dialect::Current) {
            core.error(req.to, 5012, "InvalidListPattern: invalid lease selector");
            return Ok(());
        }
        if !core.authorize(req, pattern, Access::Read) {
            return Ok(());
        }
        let Ok(l) = List::decode(req.payload) else {
            core.error(req.to, BAD_REQUEST, "BadRequest: malformed LIST");
            return Ok(());
        };
        let limit = match usize::try_from(l.limit).unwrap_or(LIST_MAX) {
            0 => LIST_DEFAULT,
            n => n.min(LIST_MAX),
        };
        let now = core.now();
        if let Some(cursor) = l.cursor {
            let valid = self.snapshots.get(&cursor.snapshot_id).is_some_and(|s| {
                s.family == req.family
                    && s.pattern == l.pattern
                    && usize::try_from(cursor.offset).is_ok_and(|o| o == s.next)
            });
            if !valid {
                core.error(req.to, 5011, "InvalidListCursor: unknown, stale or foreign cursor");
                return Ok(());
            }
            self.serve_page(core, req.to, cursor.snapshot_id, limit, now);
            return Ok(());
        }
        // Bring every matching lease up to date (expiry NOTIFYs included).
        let keys: Vec<Key> =
            self.leases.keys().filter(|(f, r)| *f == req.family && route::matches(l.pattern, r)).cloned().collect();
        for k in &keys {
            self.settle(core, k);
        }
        let mut items = Vec::new();
        for k in &keys {
            let Some(h) = self.leases.get(k).and_then(|e| e.holder.as_ref()) else { continue };
            if items.len() >= MAX_SCAN {
                core.error(req.to, BAD_REQUEST, "BadRequest: selector matches too many leases; narrow it");
                return Ok(());
            }
            items.push(SnapItem {
                route: k.1.clone(),
                owner_id: h.owner_id.clone(),
                incarnation: self.incarnation(h.session),
                acquired_at: rfc3339(h.acquired_utc_ms),
                expires_at: h.expires_at,
                renewals: h.renewals,
            });
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let id = mix(seq ^ self.salt.rotate_left(32));
        let wildcard = route::has_wildcard(l.pattern);
        let snapshot =
            Snapshot { seq, session: req.session(), family: req.family, pattern: l.pattern.to_owned(), items, next: 0 };
        self.snapshots.insert(id, snapshot);
        // An exact pattern is one page without a cursor.
        let limit = if wildcard { limit } else { LIST_MAX };
        if self.serve_page(core, req.to, id, limit, now) {
            self.evict(req.session());
        }
        Ok(())
    }

    /// Answers the page of snapshot `id` that starts at its `next` offset;
    /// drops the snapshot once its last page is out. True if it stays.
    fn serve_page(&mut self, core: &mut Core, to: ReplyTo, id: u64, limit: usize, now: u64) -> bool {
        let Some(s) = self.snapshots.get(&id) else { return false };
        let mut buf = vec![0u8; fitz_wire::record::MAX_PAYLOAD - LIST_OVERHEAD];
        let mut w = ListWriter::<ListItem<'_>>::new(&mut buf, ());
        let mut taken = 0usize;
        for it in s.items.iter().skip(s.next).take(limit) {
            let item = ListItem {
                route: &it.route,
                owner_id: &it.owner_id,
                holder_incarnation: it.incarnation,
                acquired_at: &it.acquired_at,
                expires_in_secs: secs_left(it.expires_at, now),
                renewals: it.renewals,
            };
            if w.push(&item).is_err() {
                break;
            }
            taken += 1;
        }
        let next = s.next + taken;
        let remaining = next < s.items.len();
        if taken == 0 && remaining {
            self.snapshots.remove(&id);
            core.error(to, BAD_REQUEST, "BadRequest: lease too large to list");
            return false;
        }
        let cursor = remaining.then(|| ListCursor { snapshot_id: id, offset: u32::try_from(next).unwrap_or(u32::MAX) });
        let items = w.finish();
        core.reply(to, Reply::Ok(ListOk { items, next: cursor }));
        if remaining && let Some(s) = self.snapshots.get_mut(&id) {
            s.next = next;
            return true;
        }
        self.snapshots.remove(&id);
        false
    }

    /// Keeps at most `SNAPSHOTS_PER_SESSION` snapshots of `session` and
    /// `SNAPSHOTS_TOTAL` in all, dropping the oldest.
    fn evict(&mut self, session: SessionId) {
        loop {
            let mine = self.snapshots.iter().filter(|(_, s)| s.session == session);
            let over_session = mine.clone().count() > SNAPSHOTS_PER_SESSION;
            let victim = if over_session {
                mine.min_by_key(|(_, s)| s.seq).map(|(id, _)| *id)
            } else if self.snapshots.len() > SNAPSHOTS_TOTAL {
                self.snapshots.iter().min_by_key(|(_, s)| s.seq).map(|(id, _)| *id)
            } else {
                None
            };
            match victim {
                Some(id) => {
                    self.snapshots.remove(&id);
                }
                None => return,
            }
        }
    }
}

impl Domain for Lease {
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        match req.to.msg_type {
            MsgType::LEASE_ACQUIRE => self.acquire(core, req),
            MsgType::LEASE_RENEW => self.renew(core, req),
            MsgType::LEASE_RELEASE => self.release(core, req),
            MsgType::LEASE_QUERY => self.query(core, req),
            MsgType::LEASE_SUBSCRIBE | MsgType::LEASE_UNSUBSCRIBE => self.subscribe(core, req),
            MsgType::LEASE_LIST => self.list(core, req),
            _ => Err(Close("unsupported lease message type")),
        }
    }

    fn tick(&mut self, core: &mut Core) {
        let keys: Vec<Key> = self.leases.keys().cloned().collect();
        for k in &keys {
            self.settle(core, k);
        }
    }

    fn cleanup(&mut self, core: &mut Core, session: SessionId) {
        self.subs.remove_session(session);
        self.snapshots.retain(|_, s| s.session != session);
        let now = core.now();
        let keys: Vec<Key> = self.leases.keys().cloned().collect();
        for k in &keys {
            // The session's waiters go without an answer; expiries that
            // were due before the disconnect happen first.
            if let Some(entry) = self.leases.get_mut(k) {
                entry.waiters.retain(|w| w.session != session);
            }
            self.settle(core, k);
            let Some(entry) = self.leases.get_mut(k) else { continue };
            if entry.expired.as_ref().is_some_and(|e| e.session == session) {
                entry.expired = None;
            }
            if entry.holder.as_ref().is_some_and(|h| h.session == session) {
                entry.holder = None;
                self.notify(core, k.0, &k.1);
                self.grant_next(core, k, now);
            }
            self.drop_if_empty(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!(splittable("lease://a/b/c"));
        assert!(splittable("lease://a/*/**"));
        assert!(!splittable("lease://a/b"));
        assert!(!splittable("lease://a//c"));
        assert!(!splittable("kv://a/b/c"));
        assert!(!splittable("lease://a/b/c/d"));
        assert_eq!(secs_left(10_000, 0), 10);
        assert_eq!(secs_left(10_000, 1), 10);
        assert_eq!(secs_left(10_000, 9_001), 1);
        assert_eq!(secs_left(10_000, 10_000), 0);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_ne!(mix(1), mix(2));
    }
}
