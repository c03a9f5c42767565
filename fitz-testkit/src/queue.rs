//! Work queues (BROKER.md §5; current dialect §15.2, §15.6).
//!
//! Per route family, one queue per concrete route. A message is delayed,
//! ready or inflight (reserved); COMPLETE deletes it. Ready messages are
//! handed out FIFO by the time they became ready. Time-driven moves (delay
//! maturing, reservation expiry, long polls ending) run from `tick` and,
//! lazily, before every request, so a request never sees a state the clock
//! has already passed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use fitz_wire::codec::Reader;
use fitz_wire::queue::{self, CountersForm, ReserveLayout, ReservedItem, ReservedItems};
use fitz_wire::route::{self, Scheme};
use fitz_wire::{MsgType, Payload, Reply};

use crate::auth::Access;
use crate::core::{Close, Core, Handled, ReplyTo, Request, SessionId};
use crate::subs::{Registry, SubError};
use crate::world::Domain;

/// Largest RESERVE batch (BROKER.md §5.2).
const MAX_BATCH: u32 = 1024;
/// Parked (long-polling) RESERVEs one session may have at once.
const MAX_PARKED_PER_SESSION: usize = 1024;
/// Room for the items of a RESERVE page: one record minus the status byte
/// and the item count.
const PAGE_BUDGET: usize = fitz_wire::record::MAX_PAYLOAD - 1 - 4;

/// (family, concrete route `queue://realm/area/resource`)
type QueueKey = (u32, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its delay (its due time is in `Q::delayed`).
    Delayed,
    /// In `Q::ready`.
    Ready,
    /// Reserved by `session` until `expires` (also in `Q::inflight`).
    Inflight { session: SessionId, expires: u64 },
}

#[derive(Debug)]
struct Msg {
    body: Vec<u8>,
    state: State,
    /// The token of the current (or, once it ended, the last) reservation;
    /// 0 before the first one.
    token: u64,
    /// The session whose reservation expired last: its EXTEND/COMPLETE with
    /// that token answers "inflight expired" rather than "not found".
    expired_owner: Option<SessionId>,
}

/// Why an EXTEND or COMPLETE failed (BROKER.md §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckError {
    InvalidToken,
    Expired,
    NotFound,
}

impl AckError {
    /// The text of the plain envelope (the code is not on the wire).
    fn message(self) -> &'static str {
        match self {
            AckError::InvalidToken => "invalid lease token",
            AckError::Expired => "inflight reservation expired",
            AckError::NotFound => "message not found",
        }
    }
}

/// One queue.
#[derive(Debug, Default)]
struct Q {
    msgs: HashMap<u64, Msg>,
    /// Ready message ids in the order they became ready.
    ready: VecDeque<u64>,
    /// (due, id) of delayed messages.
    delayed: BTreeSet<(u64, u64)>,
    /// (expires, id) of reserved messages.
    inflight: BTreeSet<(u64, u64)>,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Q {
    fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The earliest time something in this queue changes by itself.
    fn next_due(&self) -> Option<u64> {
        let d = self.delayed.first().map(|&(t, _)| t);
        let i = self.inflight.first().map(|&(t, _)| t);
        match (d, i) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves every delayed message that is due and every reservation that
    /// expired at `now` to ready, in time order.
    fn advance(&mut self, now: u64) {
        loop {
            let d = self.delayed.first().copied().filter(|&(t, _)| t <= now);
            let i = self.inflight.first().copied().filter(|&(t, _)| t <= now);
            let (entry, expired) = match (d, i) {
                (Some(a), Some(b)) if b.0 < a.0 => (b, true),
                (Some(a), _) => (a, false),
                (None, Some(b)) => (b, true),
                (None, None) => return,
            };
            if expired {
                self.inflight.remove(&entry);
            } else {
                self.delayed.remove(&entry);
            }
            let id = entry.1;
            if let Some(m) = self.msgs.get_mut(&id) {
                if let State::Inflight { session, .. } = m.state {
                    m.expired_owner = Some(session);
                }
                m.state = State::Ready;
                self.ready.push_back(id);
            }
        }
    }

    /// EXTEND (`lease_ms` set) or COMPLETE (`None`) of message `id`.
    fn ack(
        &mut self,
        id: u64,
        session: SessionId,
        token: u64,
        now: u64,
        lease_ms: Option<u64>,
    ) -> Result<(), AckError> {
        let msg = self.msgs.get_mut(&id).ok_or(AckError::NotFound)?;
        match msg.state {
            State::Inflight { session: owner, expires } if owner == session => {
                if token != msg.token {
                    return Err(AckError::InvalidToken);
                }
                self.inflight.remove(&(expires, id));
                if now >= expires {
                    // Not swept yet: back to ready now.
                    msg.state = State::Ready;
                    msg.expired_owner = Some(session);
                    self.ready.push_back(id);
                    return Err(AckError::Expired);
                }
                match lease_ms {
                    Some(ms) => {
                        let expires = now.saturating_add(ms);
                        msg.state = State::Inflight { session, expires };
                        self.inflight.insert((expires, id));
                    }
                    None => {
                        self.msgs.remove(&id);
                    }
                }
                Ok(())
            }
            State::Ready | State::Delayed if msg.expired_owner == Some(session) => {
                Err(if token == msg.token { AckError::Expired } else { AckError::InvalidToken })
            }
            _ => Err(AckError::NotFound),
        }
    }
}

/// A RESERVE waiting for a message (`wait_seconds > 0`).
#[derive(Debug)]
struct Parked {
    to: ReplyTo,
    family: u32,
    /// Exact route or pattern, as sent.
    route: String,
    batch: usize,
    lease_ms: u64,
    deadline: u64,
}

/// One message handed to a reservation.
#[derive(Debug)]
struct Pick {
    key: QueueKey,
    id: u64,
    token: u64,
    /// Wire length of the item in the page's layout.
    size: usize,
}

/// Queue ready counts before an operation, to detect the 0 → >0 edge.
type Touched = BTreeMap<QueueKey, usize>;

#[derive(Debug, Default)]
pub(crate) struct Queue {
    queues: BTreeMap<QueueKey, Q>,
    /// Message ids, broker-wide (so increasing per queue even after an
    /// emptied queue was dropped).
    next_id: u64,
    /// Parked RESERVEs in arrival order.
    parked: Vec<Parked>,
    subs: Registry,
}

/// The queues of `family` that `pattern` (exact route or wildcard) selects,
/// in sorted realm/area/resource order.
fn matching_keys(queues: &BTreeMap<QueueKey, Q>, family: u32, pattern: &str) -> Vec<QueueKey> {
    if ReserveLayout::for_route(pattern) == ReserveLayout::Exact {
        let key = (family, pattern.to_owned());
        return if queues.contains_key(&key) { vec![key] } else { Vec::new() };
    }
    let mut keys: Vec<QueueKey> = queues
        .range((family, String::new())..)
        .take_while(|(k, _)| k.0 == family)
        .filter(|(k, _)| route::matches(pattern, &k.1))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort_by(|a, b| a.1.split('/').cmp(b.1.split('/')));
    keys
}

/// True if a queue `pattern` selects has a ready message.
fn any_ready(queues: &BTreeMap<QueueKey, Q>, family: u32, pattern: &str) -> bool {
    if ReserveLayout::for_route(pattern) == ReserveLayout::Exact {
        return queues.get(&(family, pattern.to_owned())).is_some_and(|q| !q.ready.is_empty());
    }
    queues
        .range((family, String::new())..)
        .take_while(|(k, _)| k.0 == family)
        .any(|(k, q)| !q.ready.is_empty() && route::matches(pattern, &k.1))
}

/// A fresh random lease token: never 0 and never the previous one.
fn fresh_token(previous: u64) -> u64 {
    loop {
        let t: u64 = rand::random();
        if t != 0 && t != previous {
            return t;
        }
    }
}

/// Reserves up to `batch` ready messages from the queues `pattern` selects
/// for `session`, as many as one record holds. A message too large for an
/// otherwise empty page is dropped (dead-letter, WIRE.md §8.2); the second
/// value says whether that happened.
fn take(
    queues: &mut BTreeMap<QueueKey, Q>,
    now: u64,
    session: SessionId,
    family: u32,
    pattern: &str,
    batch: usize,
    lease_ms: u64,
) -> (Vec<Pick>, bool) {
    let routed = ReserveLayout::for_route(pattern) == ReserveLayout::Routed;
    let mut picks = Vec::new();
    let mut dead = false;
    let mut budget = PAGE_BUDGET;
    let expires = now.saturating_add(lease_ms);
    'queues: for key in matching_keys(queues, family, pattern) {
        let Some(q) = queues.get_mut(&key) else { continue };
        let route_len = if routed { 4 + key.1.len() } else { 0 };
        while picks.len() < batch {
            let Some(&id) = q.ready.front() else { break };
            let Some(msg) = q.msgs.get_mut(&id) else {
                q.ready.pop_front();
                continue;
            };
            let size = route_len + 8 + 8 + 4 + msg.body.len();
            if size > PAGE_BUDGET {
                q.ready.pop_front();
                q.msgs.remove(&id);
                dead = true;
                continue;
            }
            if size > budget {
                break 'queues;
            }
            budget -= size;
            q.ready.pop_front();
            msg.token = fresh_token(msg.token);
            msg.state = State::Inflight { session, expires };
            msg.expired_owner = None;
            q.inflight.insert((expires, id));
            picks.push(Pick { key: key.clone(), id, token: msg.token, size });
        }
        if picks.len() >= batch {
            break;
        }
    }
    (picks, dead)
}

/// The reply to an undecodable request: close if even its route cannot be
/// read (BROKER.md §2.5), else a coded bad request.
fn undecodable(core: &mut Core, req: &Request<'_>) -> Handled {
    let mut r = Reader::new(req.payload);
    if r.str().is_err() {
        return Err(Close("undecodable Queue request"));
    }
    core.error(req.to, 4006, "bad request: malformed payload");
    Ok(())
}

impl Queue {
    /// Sends a RESERVE page with `picks` (empty: zero items).
    fn reply_page(&self, core: &mut Core, to: ReplyTo, layout: ReserveLayout, picks: &[Pick]) {
        let items = picks.iter().filter_map(|p| {
            let msg = self.queues.get(&p.key)?.msgs.get(&p.id)?;
            Some(ReservedItem {
                route: (layout == ReserveLayout::Routed).then_some(p.key.1.as_str()),
                message_id: p.id,
                lease_token: p.token,
                body: &msg.body,
            })
        });
        let mut buf = vec![0u8; picks.iter().map(|p| p.size).sum()];
        match ReservedItems::write_into(items, layout, &mut buf) {
            Ok(items) => core.reply(to, Reply::Ok(queue::ReserveOk { items, bare: false })),
            Err(_) => core.error(to, 4007, "reserve page could not be built"),
        }
    }

    fn drop_empty_queues(&mut self) {
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// Sends the availability NOTIFY of queue `key` to `targets`.
    fn notify_counts(core: &mut Core, key: &QueueKey, q: &Q, targets: &[(SessionId, u64)]) {
        let form = if core.cfg.sdk_compat { CountersForm::Wrapped } else { CountersForm::Inline };
        for &(session, sub_id) in targets {
            core.notify(
                session,
                &queue::Notify {
                    sub_id,
                    route: &key.1,
                    ready: count(q.ready.len()),
                    delayed: count(q.delayed.len()),
                    inflight: count(q.inflight.len()),
                    form,
                },
            );
        }
    }

    /// After queues changed: serves parked RESERVEs, sends the NOTIFY of
    /// every queue whose ready count went from 0 to more, drops queues that
    /// became empty.
    fn settle(&mut self, core: &mut Core, touched: Touched) {
        if touched.is_empty() {
            return;
        }
        let any = touched.keys().any(|k| self.queues.get(k).is_some_and(|q| !q.ready.is_empty()));
        if any && !self.parked.is_empty() {
            self.serve_parked(core);
        }
        for (key, before) in &touched {
            let Some(q) = self.queues.get(key) else { continue };
            if *before == 0 && !q.ready.is_empty() {
                let targets: Vec<(SessionId, u64)> =
                    self.subs.matching(key.0, &key.1).map(|s| (s.session, s.id)).collect();
                Self::notify_counts(core, key, q, &targets);
            }
        }
        for key in touched.keys() {
            if self.queues.get(key).is_some_and(Q::is_empty) {
                self.queues.remove(key);
            }
        }
    }

    /// Answers, in arrival order, every parked RESERVE that a ready message
    /// now satisfies.
    fn serve_parked(&mut self, core: &mut Core) {
        let now = core.now();
        let mut dead = false;
        let mut i = 0;
        while let Some(p) = self.parked.get(i) {
            if !any_ready(&self.queues, p.family, &p.route) {
                i += 1;
                continue;
            }
            let (picks, d) = take(&mut self.queues, now, p.to.session, p.family, &p.route, p.batch, p.lease_ms);
            dead |= d;
            if picks.is_empty() {
                i += 1;
                continue;
            }
            let p = self.parked.remove(i);
            self.reply_page(core, p.to, ReserveLayout::for_route(&p.route), &picks);
        }
        if dead {
            self.drop_empty_queues();
        }
    }

    /// Runs the time-driven moves that became due (delays, expiries).
    fn catch_up(&mut self, core: &mut Core) {
        let now = core.now();
        let mut touched = Touched::new();
        for (key, q) in &mut self.queues {
            if q.next_due().is_some_and(|t| t <= now) {
                touched.insert(key.clone(), q.ready.len());
                q.advance(now);
            }
        }
        self.settle(core, touched);
    }

    fn enqueue(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let Ok(m) = queue::Enqueue::decode(req.payload) else { return undecodable(core, req) };
        if !route::is_concrete(m.route, Scheme::Queue, 3) {
            core.error(req.to, 4006, "bad request: invalid queue route");
            return Ok(());
        }
        if !core.authorize(req, m.route, Access::Write) {
            return Ok(());
        }
        let delay_ms = match m.delay_seconds {
            None | Some(0) => None,
            Some(s) => match s.checked_mul(1000) {
                Some(ms) => Some(ms),
                None => {
                    core.error(req.to, 4006, "bad request: delay seconds overflow");
                    return Ok(());
                }
            },
        };
        let now = core.now();
        self.next_id += 1;
        let id = self.next_id;
        let key = (req.family, m.route.to_owned());
        let q = self.queues.entry(key.clone()).or_default();
        let mut touched = Touched::new();
        touched.insert(key, q.ready.len());
        let state = match delay_ms {
            Some(ms) => {
                q.delayed.insert((now.saturating_add(ms), id));
                State::Delayed
            }
            None => {
                q.ready.push_back(id);
                State::Ready
            }
        };
        q.msgs.insert(id, Msg { body: m.body.to_vec(), state, token: 0, expired_owner: None });
        core.reply(req.to, Reply::Ok(queue::EnqueueOk { message_id: id }));
        self.settle(core, touched);
        Ok(())
    }

    fn reserve(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let Ok(m) = queue::Reserve::decode(req.payload) else { return undecodable(core, req) };
        let layout = m.layout();
        let valid = match layout {
            ReserveLayout::Exact => route::is_concrete(m.route, Scheme::Queue, 3),
            ReserveLayout::Routed => route::is_valid_pattern(m.route, Scheme::Queue, Some(3)),
        };
        if !valid {
            core.error(req.to, 4006, "bad request: invalid queue route or pattern");
            return Ok(());
        }
        if !core.authorize(req, m.route, Access::Write) {
            return Ok(());
        }
        let batch = match m.batch_size {
            None | Some(0) => 1,
            Some(n) if n <= MAX_BATCH => usize::try_from(n).unwrap_or(1),
            Some(_) => {
                core.error(req.to, 4006, "bad request: batch size above 1024");
                return Ok(());
            }
        };
        let Some(lease_ms) = m.lease_seconds.checked_mul(1000) else {
            core.error(req.to, 4006, "bad request: lease seconds overflow");
            return Ok(());
        };
        let now = core.now();
        let wait = m.wait_seconds.unwrap_or(0);
        let (picks, dead) = take(&mut self.queues, now, req.session(), req.family, m.route, batch, lease_ms);
        if picks.is_empty() && wait > 0 {
            if self.parked.iter().filter(|p| p.to.session == req.session()).count() >= MAX_PARKED_PER_SESSION {
                core.error(req.to, 4006, "bad request: too many waiting reserves on this session");
            } else {
                self.parked.push(Parked {
                    to: req.to,
                    family: req.family,
                    route: m.route.to_owned(),
                    batch,
                    lease_ms,
                    deadline: now.saturating_add(wait.saturating_mul(1000)),
                });
            }
        } else {
            self.reply_page(core, req.to, layout, &picks);
        }
        if dead {
            self.drop_empty_queues();
        }
        Ok(())
    }

    /// EXTEND and COMPLETE (BROKER.md §5.3): plain errors.
    fn acknowledge(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let parsed = match req.to.msg_type {
            MsgType::QUEUE_EXTEND => queue::Extend::decode(req.payload)
                .map(|m| (m.route, m.message_id, m.lease_token, Some(m.lease_seconds))),
            _ => queue::Complete::decode(req.payload).map(|m| (m.route, m.message_id, m.lease_token, None)),
        };
        let Ok((route_str, id, token, lease_seconds)) = parsed else { return undecodable(core, req) };
        if !route::is_concrete(route_str, Scheme::Queue, 3) {
            core.plain_error(req.to, "bad request: invalid queue route");
            return Ok(());
        }
        if !core.authorize(req, route_str, Access::Write) {
            return Ok(());
        }
        let lease_ms = match lease_seconds.map(|s| s.checked_mul(1000)) {
            Some(None) => {
                core.plain_error(req.to, "bad request: lease seconds overflow");
                return Ok(());
            }
            Some(Some(ms)) => Some(ms),
            None => None,
        };
        let now = core.now();
        let key = (req.family, route_str.to_owned());
        let mut touched = Touched::new();
        let result = match self.queues.get_mut(&key) {
            Some(q) => {
                touched.insert(key, q.ready.len());
                q.ack(id, req.session(), token, now, lease_ms)
            }
            None => Err(AckError::NotFound),
        };
        match result {
            Ok(()) => core.ack(req.to),
            Err(e) => core.plain_error(req.to, e.message()),
        }
        self.settle(core, touched);
        Ok(())
    }

    /// SUBSCRIBE / UNSUBSCRIBE (BROKER.md §5.4): plain errors.
    fn subscribe(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let pattern = match req.to.msg_type {
            MsgType::QUEUE_SUBSCRIBE => queue::Subscribe::decode(req.payload).map(|m| m.pattern),
            _ => queue::Unsubscribe::decode(req.payload).map(|m| m.pattern),
        };
        let Ok(pattern) = pattern else { return undecodable(core, req) };
        if !route::is_valid_pattern(pattern, Scheme::Queue, Some(3)) {
            core.plain_error(req.to, "invalid subscription pattern");
            return Ok(());
        }
        if !core.authorize(req, pattern, Access::Read) {
            return Ok(());
        }
        if req.to.msg_type == MsgType::QUEUE_UNSUBSCRIBE {
            self.subs.unsubscribe_pattern(req.session(), pattern);
            core.ack(req.to);
            return Ok(());
        }
        let l = core.cfg.limits;
        let sub_id = match self.subs.subscribe(req.session(), req.family, pattern, l.wildcard_quota, l.total_quota) {
            Ok(id) => id,
            Err(SubError::Quota) => {
                core.plain_error(req.to, "subscription limit exceeded");
                return Ok(());
            }
        };
        core.reply(req.to, Reply::Ok(queue::SubscribeOk { sub_id }));
        // The current availability, after the reply (BROKER.md §3.1, §5.4).
        for key in matching_keys(&self.queues, req.family, pattern) {
            if let Some(q) = self.queues.get(&key).filter(|q| !q.ready.is_empty()) {
                Self::notify_counts(core, &key, q, &[(req.session(), sub_id)]);
            }
        }
        Ok(())
    }

    /// Answers the parked RESERVEs whose wait ended with an empty page, in
    /// deadline order.
    fn end_long_polls(&mut self, core: &mut Core) {
        let now = core.now();
        if !self.parked.iter().any(|p| p.deadline <= now) {
            return;
        }
        let (mut due, keep): (Vec<Parked>, Vec<Parked>) =
            core::mem::take(&mut self.parked).into_iter().partition(|p| p.deadline <= now);
        self.parked = keep;
        due.sort_by_key(|p| p.deadline);
        for p in due {
            self.reply_page(core, p.to, ReserveLayout::for_route(&p.route), &[]);
        }
    }
}

impl Domain for Queue {
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let t = req.to.msg_type;
        if !matches!(
            t,
            MsgType::QUEUE_ENQUEUE
                | MsgType::QUEUE_RESERVE
                | MsgType::QUEUE_EXTEND
                | MsgType::QUEUE_COMPLETE
                | MsgType::QUEUE_SUBSCRIBE
                | MsgType::QUEUE_UNSUBSCRIBE
        ) {
            return Err(Close("unsupported Queue message type"));
        }
        // Lazy sweep: what the clock already passed happens first.
        self.catch_up(core);
        match t {
            MsgType::QUEUE_ENQUEUE => self.enqueue(core, req),
            MsgType::QUEUE_RESERVE => self.reserve(core, req),
            MsgType::QUEUE_EXTEND | MsgType::QUEUE_COMPLETE => self.acknowledge(core, req),
            _ => self.subscribe(core, req),
        }
    }

    fn tick(&mut self, core: &mut Core) {
        self.catch_up(core);
        self.end_long_polls(core);
    }

    fn cleanup(&mut self, core: &mut Core, session: SessionId) {
        self.parked.retain(|p| p.to.session != session);
        self.subs.remove_session(session);
        // Reserved messages go back to ready at once (BROKER.md §2.4).
        let mut touched = Touched::new();
        for (key, q) in &mut self.queues {
            let mine: Vec<(u64, u64)> = q
                .inflight
                .iter()
                .filter(|(_, id)| {
                    matches!(q.msgs.get(id).map(|m| m.state), Some(State::Inflight { session: s, .. }) if s == session)
                })
                .copied()
                .collect();
            if mine.is_empty() {
                continue;
            }
            touched.insert(key.clone(), q.ready.len());
            let mut ids: Vec<u64> = Vec::with_capacity(mine.len());
            for entry in mine {
                q.inflight.remove(&entry);
                ids.push(entry.1);
            }
            ids.sort_unstable();
            for id in ids {
                if let Some(m) = q.msgs.get_mut(&id) {
                    m.state = State::Ready;
                    m.expired_owner = None;
                    q.ready.push_back(id);
                }
            }
        }
        self.settle(core, touched);
    }
}
