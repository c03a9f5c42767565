//! RPC: worker registrations, calls, streamed responses (BROKER.md §6;
//! current dialect §15.5).
//!
//! A call lives in `calls` from its REQUEST until its terminal chunk (or a
//! broker-generated terminal error). It is indexed by the caller's UUID
//! (`by_caller`, while the caller still waits for it) and, once dispatched,
//! by the UUID the worker sees (`by_worker`: the caller's UUID for a legacy
//! worker, a fresh invocation UUID for a worker registered with the
//! cancellation extension). Every removal goes through [`Rpc::finish`],
//! which keeps the indexes, the route queues and the worker credit in step.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fitz_wire::route::{self, Scheme};
use fitz_wire::rpc::{
    self as wire, BudgetExtension, CancelReason, CancelStatus, IngressError, RegistrationOk, Response, RpcCancel,
    RpcLifecycle, SignalReason, SubscribeWorker, TerminalError, TerminalResponse, UnsubscribeWorker,
};
use fitz_wire::{Capabilities, MsgType, Payload, Reader, Reply, Uuid};

use crate::auth::Access;
use crate::core::{Close, Core, Handled, Request, SessionId};
use crate::subs::{Registry, SubError};
use crate::world::Domain;

/// Broker-side call timeout (BROKER.md §6.2, §12).
const BROKER_TIMEOUT_MS: u64 = 30_000;
/// Time a supporting worker has to acknowledge a cancellation (kind 3)
/// before its session is closed (`FITZ_RPC_CANCELLATION_GRACE_MS`).
const CANCELLATION_GRACE_MS: u64 = 5_000;
/// Queued calls per route.
const ROUTE_QUEUE_CAP: usize = 1_000;
/// Queued calls per broker.
const BROKER_QUEUE_CAP: usize = 4_096;
/// Round-robin cursors kept before the table is reset.
const MAX_CURSORS: usize = 4_096;

const MSG_TIMEOUT: &str = "Worker did not reply within timeout period";
const MSG_WORKER_GONE: &str = "Worker disconnected or unregistered";
const MSG_BACKPRESSURE: &str = "RPC backpressure: pending request queue full";
const MSG_NO_WORKER: &str = "No workers registered for route";
const MSG_NOT_FOUND: &str = "Correlation not found";
const MSG_SEQUENCE: &str = "Invalid response sequence";
const MSG_DUPLICATE: &str = "Duplicate correlation id";
const MSG_WRONG_WORKER: &str = "Response from a worker that does not own the call";
const MSG_REQUEST_PARSE: &str = "RPC request parse failed";
const MSG_RESPONSE_PARSE: &str = "RPC response parse failed";
const MSG_INVALID_ROUTE: &str = "Invalid RPC call route";
const MSG_INVALID_PATTERN: &str = "Invalid worker subscription";
const MSG_QUOTA: &str = "Worker subscription limit exceeded";

/// (route family, concrete call route)
type RouteKey = (u32, String);
/// (route family, UUID)
type IdKey = (u32, Uuid);

/// Credit and capabilities of one registration (keyed by its registry id).
#[derive(Debug, Clone, Copy)]
struct Credit {
    max: u32,
    used: u32,
    /// Registered with the cancellation extension (`01 01`).
    supports: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting in its route's queue.
    Queued,
    /// Running on a worker; chunks are forwarded to the caller.
    Dispatched { reg: u64, worker: SessionId, invocation: Uuid, next_seq: u64, supports: bool },
    /// Detached from the caller (cancelled, caller gone or deadline) on a
    /// supporting worker: the credit stays held until the worker's kind-3
    /// acknowledgement, its session's end, or the grace period (then the
    /// worker's session is closed).
    Cancelled { reg: u64, worker: SessionId, invocation: Uuid, grace_until: u64, closing: bool },
}

#[derive(Debug)]
struct Call {
    caller: SessionId,
    caller_id: Uuid,
    /// Listed in `by_caller` (the caller may still cancel it or see a
    /// duplicate-UUID error for it).
    attached: bool,
    family: u32,
    route: String,
    /// Kept only while queued.
    body: Vec<u8>,
    /// The caller sent a budget extension.
    budget: bool,
    /// Broker time (ms) after which the call fails with 6001.
    deadline: u64,
    state: State,
}

#[derive(Debug, Default)]
pub(crate) struct Rpc {
    workers: Registry,
    credits: HashMap<u64, Credit>,
    calls: BTreeMap<u64, Call>,
    next_call: u64,
    by_caller: HashMap<IdKey, u64>,
    by_worker: HashMap<IdKey, u64>,
    queues: BTreeMap<RouteKey, VecDeque<u64>>,
    queued: usize,
    cursors: HashMap<RouteKey, u64>,
}

/// Sends a broker-generated terminal error chunk (sequence 0, end).
fn terminal(core: &mut Core, session: SessionId, id: Uuid, code: u32, message: &str) {
    let msg = TerminalResponse { correlation_id: id, sequence: 0, error: TerminalError { code, message } };
    core.deliver(session, &msg);
}

/// The pattern of a 300/301 payload whose rest may be malformed.
fn pattern_prefix(payload: &[u8]) -> Option<&str> {
    Reader::new(payload).str().ok()
}

impl Rpc {
    /// Removes call `id` from every index and queue and releases the credit
    /// it holds.
    fn finish(&mut self, id: u64) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        let key = (call.family, call.caller_id);
        if call.attached && self.by_caller.get(&key) == Some(&id) {
            self.by_caller.remove(&key);
        }
        match call.state {
            State::Queued => {
                let rk = (call.family, call.route.clone());
                if let Some(q) = self.queues.get_mut(&rk) {
                    if let Some(pos) = q.iter().position(|&c| c == id) {
                        q.remove(pos);
                        self.queued = self.queued.saturating_sub(1);
                    }
                    if q.is_empty() {
                        self.queues.remove(&rk);
                    }
                }
            }
            State::Dispatched { reg, invocation, .. } | State::Cancelled { reg, invocation, .. } => {
                let wk = (call.family, invocation);
                if self.by_worker.get(&wk) == Some(&id) {
                    self.by_worker.remove(&wk);
                }
                if let Some(c) = self.credits.get_mut(&reg) {
                    c.used = c.used.saturating_sub(1);
                }
            }
        }
        Some(call)
    }

    /// Ends call `id` with a terminal error to its caller, if the caller
    /// still waits for it (attached and not cancelled).
    fn fail(&mut self, core: &mut Core, id: u64, code: u32, message: &str) {
        if let Some(call) = self.finish(id)
            && call.attached
            && !matches!(call.state, State::Cancelled { .. })
        {
            terminal(core, call.caller, call.caller_id, code, message);
        }
    }

    /// Takes call `id` away from its caller: no more frames, no cancel.
    fn detach(&mut self, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.attached {
            call.attached = false;
            let key = (call.family, call.caller_id);
            if self.by_caller.get(&key) == Some(&id) {
                self.by_caller.remove(&key);
            }
        }
    }

    /// Moves a call dispatched to a supporting worker to `Cancelled` and
    /// signals the worker. Returns false if the signal could not be queued.
    fn signal(&mut self, core: &mut Core, id: u64, reason: SignalReason) -> bool {
        let now = core.now();
        let Some(call) = self.calls.get_mut(&id) else { return false };
        let State::Dispatched { reg, worker, invocation, supports: true, .. } = call.state else { return false };
        if !core.deliver(worker, &RpcLifecycle::Signal { invocation_id: invocation, reason }) {
            return false;
        }
        call.state = State::Cancelled {
            reg,
            worker,
            invocation,
            grace_until: now.saturating_add(CANCELLATION_GRACE_MS),
            closing: false,
        };
        true
    }

    fn has_candidates(&self, family: u32, route: &str) -> bool {
        self.workers.matching(family, route).next().is_some()
    }

    /// The next registration with free credit for `route`, rotating per
    /// route among all matching registrations (exact and wildcard alike).
    fn pick(&mut self, family: u32, route: &str) -> Option<u64> {
        let key = (family, route.to_owned());
        let last = self.cursors.get(&key).copied().unwrap_or(0);
        let credits = &self.credits;
        let free = |id: &u64| credits.get(id).is_some_and(|c| c.used < c.max);
        let mut first = None;
        let mut next = None;
        for id in self.workers.matching(family, route).map(|s| s.id).filter(free) {
            if first.is_none() {
                first = Some(id);
            }
            if id > last {
                next = Some(id);
                break;
            }
        }
        let chosen = next.or(first)?;
        if self.cursors.len() >= MAX_CURSORS && !self.cursors.contains_key(&key) {
            self.cursors.clear();
        }
        self.cursors.insert(key, chosen);
        Some(chosen)
    }

    /// A fresh invocation UUID not in use in `family`.
    fn invocation_id(&self, family: u32) -> Uuid {
        loop {
            let id = Uuid(rand::random());
            if !self.by_worker.contains_key(&(family, id)) && !self.by_caller.contains_key(&(family, id)) {
                return id;
            }
        }
    }

    /// Sends queued or new call `id` to registration `reg`; an expired call
    /// fails with 6001 before it claims any credit.
    fn dispatch(&mut self, core: &mut Core, id: u64, reg: u64) {
        let now = core.now();
        let Some(call) = self.calls.get(&id) else { return };
        if call.deadline <= now {
            self.fail(core, id, 6001, MSG_TIMEOUT);
            return;
        }
        let (Some(sub), Some(credit)) = (self.workers.get(reg), self.credits.get(&reg)) else { return };
        let (worker, supports) = (sub.session, credit.supports);
        let invocation = if supports { self.invocation_id(call.family) } else { call.caller_id };
        let Some(call) = self.calls.get_mut(&id) else { return };
        let budget = (supports && call.budget).then(|| BudgetExtension::saturating(call.deadline - now));
        let body = core::mem::take(&mut call.body);
        call.state = State::Dispatched { reg, worker, invocation, next_seq: 0, supports };
        self.by_worker.insert((call.family, invocation), id);
        if let Some(c) = self.credits.get_mut(&reg) {
            c.used += 1;
        }
        let msg = wire::Request { correlation_id: invocation, route: &call.route, body: &body, budget };
        core.deliver(worker, &msg);
    }

    /// Dispatches queued calls to registrations with free credit, route by
    /// route in FIFO order; fails the queued calls of routes that no
    /// registration matches any more with 6004.
    fn pump(&mut self, core: &mut Core) {
        let routes: Vec<RouteKey> = self.queues.keys().cloned().collect();
        for key in routes {
            let (family, route) = (key.0, key.1.as_str());
            if !self.has_candidates(family, route) {
                let ids: Vec<u64> = self.queues.get(&key).map(|q| q.iter().copied().collect()).unwrap_or_default();
                for id in ids {
                    self.fail(core, id, 6004, MSG_NO_WORKER);
                }
                continue;
            }
            while let Some(&head) = self.queues.get(&key).and_then(VecDeque::front) {
                let Some(reg) = self.pick(family, route) else { break };
                if let Some(q) = self.queues.get_mut(&key) {
                    q.pop_front();
                    self.queued = self.queued.saturating_sub(1);
                    if q.is_empty() {
                        self.queues.remove(&key);
                    }
                }
                self.dispatch(core, head, reg);
            }
        }
    }

    fn register(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let subscribe = req.to.msg_type == MsgType::RPC_SUBSCRIBE_WORKER;
        let parsed = if subscribe {
            SubscribeWorker::decode_with(req.payload, req.has(Capabilities::RPC_CANCELLATION))
                .map(|s| (s.pattern, s.max_concurrent, s.extension.is_some()))
        } else {
            UnsubscribeWorker::decode(req.payload).map(|u| (u.pattern, 1, false))
        };
        let (pattern, max_concurrent, supports) = match parsed {
            Ok(p) => p,
            Err(_) => {
                // Without a readable pattern there is nothing to authorize:
                // close (BROKER.md §2.5). Otherwise a coded error.
                let pattern = pattern_prefix(req.payload).ok_or(Close("undecodable RPC worker registration"))?;
                if core.authorize(req, pattern, Access::All) {
                    core.error(req.to, 6012, "malformed worker registration");
                }
                return Ok(());
            }
        };
        if !core.authorize(req, pattern, Access::All) {
            return Ok(());
        }
        if !route::is_valid_pattern(pattern, Scheme::Rpc, None) {
            core.error(req.to, 6012, MSG_INVALID_PATTERN);
            return Ok(());
        }
        if !subscribe {
            self.unregister(core, req.session(), pattern);
            core.reply(req.to, Reply::Ok(RegistrationOk::EmptyData));
            self.pump(core);
            return Ok(());
        }
        if !SubscribeWorker::MAX_CONCURRENT.contains(&max_concurrent) {
            core.error(req.to, 6012, "max_concurrent must be 1..=1024");
            return Ok(());
        }
        let l = core.cfg.limits;
        match self.workers.subscribe(req.session(), req.family, pattern, l.wildcard_quota, l.total_quota) {
            Ok(id) => {
                // A duplicate keeps its original credit and extension.
                self.credits.entry(id).or_insert(Credit { max: max_concurrent, used: 0, supports });
                core.reply(req.to, Reply::Ok(RegistrationOk::EmptyData));
                self.pump(core);
            }
            Err(SubError::Quota) => core.error(req.to, 6013, MSG_QUOTA),
        }
        Ok(())
    }

    /// Removes `session`'s registration of `pattern`; its dispatched calls
    /// fail with 6002, cancelled ones it still holds are dropped.
    fn unregister(&mut self, core: &mut Core, session: SessionId, pattern: &str) {
        let Some(sub) = self.workers.unsubscribe_pattern(session, pattern) else { return };
        let ids: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, State::Dispatched { reg, .. } | State::Cancelled { reg, .. } if reg == sub.id)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.fail(core, id, 6002, MSG_WORKER_GONE);
        }
        self.credits.remove(&sub.id);
    }

    fn request(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let Ok(r) = wire::Request::decode_with(req.payload, req.has(Capabilities::RPC_CANCELLATION)) else {
            match wire::peek_correlation_id(req.payload) {
                Some(id) => terminal(core, req.session(), id, 6010, MSG_REQUEST_PARSE),
                // Not attributable to a call: the legacy uncorrelated
                // ingress error on type 302 (WIRE.md §4.3, §8.3).
                None => core.reply_raw(req.to, &IngressError { code: 6010, message: MSG_REQUEST_PARSE }),
            }
            return Ok(());
        };
        // A denial is a coded error frame of type 302 (BROKER.md §2.3).
        if !core.authorize(req, r.route, Access::Write) {
            return Ok(());
        }
        let (session, id) = (req.session(), r.correlation_id);
        if !r.has_concrete_route() {
            terminal(core, session, id, 6011, MSG_INVALID_ROUTE);
            return Ok(());
        }
        let key = (req.family, id);
        if self.by_caller.contains_key(&key) {
            terminal(core, session, id, 6007, MSG_DUPLICATE);
            return Ok(());
        }
        if !self.has_candidates(req.family, r.route) {
            terminal(core, session, id, 6004, MSG_NO_WORKER);
            return Ok(());
        }
        let now = core.now();
        let limit = r.budget.map_or(BROKER_TIMEOUT_MS, |b| u64::from(b.remaining_budget_ms()).min(BROKER_TIMEOUT_MS));
        let deadline = now.saturating_add(limit);
        if deadline <= now {
            // A zero budget: expired before it could claim any credit.
            terminal(core, session, id, 6001, MSG_TIMEOUT);
            return Ok(());
        }
        let rk: RouteKey = (req.family, r.route.to_owned());
        let waiting = self.queues.get(&rk).map_or(0, VecDeque::len);
        let reg = if waiting == 0 { self.pick(req.family, r.route) } else { None };
        if reg.is_none() && (waiting >= ROUTE_QUEUE_CAP || self.queued >= BROKER_QUEUE_CAP) {
            terminal(core, session, id, 6003, MSG_BACKPRESSURE);
            return Ok(());
        }
        self.next_call += 1;
        let call_id = self.next_call;
        self.calls.insert(
            call_id,
            Call {
                caller: session,
                caller_id: id,
                attached: true,
                family: req.family,
                route: r.route.to_owned(),
                body: r.body.to_vec(),
                budget: r.budget.is_some(),
                deadline,
                state: State::Queued,
            },
        );
        self.by_caller.insert(key, call_id);
        match reg {
            Some(reg) => self.dispatch(core, call_id, reg),
            None => {
                self.queues.entry(rk).or_default().push_back(call_id);
                self.queued += 1;
            }
        }
        Ok(())
    }

    fn response(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let session = req.session();
        let Ok(resp) = Response::decode(req.payload) else {
            let id = wire::peek_correlation_id(req.payload).ok_or(Close("undecodable RPC RESPONSE"))?;
            terminal(core, session, id, 6010, MSG_RESPONSE_PARSE);
            return Ok(());
        };
        let rid = resp.correlation_id;
        let Some(&id) = self.by_worker.get(&(req.family, rid)) else {
            terminal(core, session, rid, 6005, MSG_NOT_FOUND);
            return Ok(());
        };
        let Some(call) = self.calls.get_mut(&id) else {
            terminal(core, session, rid, 6005, MSG_NOT_FOUND);
            return Ok(());
        };
        match &mut call.state {
            State::Queued => terminal(core, session, rid, 6005, MSG_NOT_FOUND),
            State::Cancelled { worker, .. } => {
                // Chunks of a cancelled invocation are no longer forwarded.
                if *worker != session {
                    terminal(core, session, rid, 6008, MSG_WRONG_WORKER);
                }
            }
            State::Dispatched { worker, next_seq, .. } => {
                if *worker != session {
                    terminal(core, session, rid, 6008, MSG_WRONG_WORKER);
                    return Ok(());
                }
                if resp.sequence != *next_seq {
                    terminal(core, session, rid, 6006, MSG_SEQUENCE);
                    return Ok(());
                }
                *next_seq += 1;
                let (caller, caller_id) = (call.caller, call.caller_id);
                core.deliver(caller, &Response { correlation_id: caller_id, ..resp });
                if resp.stream_end() {
                    self.finish(id);
                    self.pump(core);
                }
            }
        }
        Ok(())
    }

    fn cancel(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if !req.has(Capabilities::RPC_CANCELLATION) {
            return Err(Close("RPC_CANCEL without the capability"));
        }
        // Malformed 304 frames are dropped silently (WIRE.md §B8).
        let Ok(msg) = RpcCancel::decode(req.payload) else { return Ok(()) };
        match msg {
            RpcCancel::Caller { correlation_id, reason } => {
                let status = self.cancel_call(core, req, correlation_id, reason);
                core.deliver(req.session(), &RpcLifecycle::CancelResult { correlation_id, status });
            }
            RpcCancel::WorkerReleased { invocation_id } => {
                let Some(&id) = self.by_worker.get(&(req.family, invocation_id)) else { return Ok(()) };
                let held = self
                    .calls
                    .get(&id)
                    .is_some_and(|c| matches!(c.state, State::Cancelled { worker, .. } if worker == req.session()));
                // Acknowledgements of calls that were not cancelled, or from
                // another session, are ignored.
                if held {
                    self.finish(id);
                    self.pump(core);
                }
            }
        }
        Ok(())
    }

    fn cancel_call(&mut self, core: &mut Core, req: &Request<'_>, uuid: Uuid, reason: CancelReason) -> CancelStatus {
        let Some(&id) = self.by_caller.get(&(req.family, uuid)) else { return CancelStatus::UnknownOrUnauthorized };
        let Some(call) = self.calls.get(&id).filter(|c| c.caller == req.session()) else {
            return CancelStatus::UnknownOrUnauthorized;
        };
        match call.state {
            State::Queued => {
                self.finish(id);
                CancelStatus::QueuedRemoved
            }
            State::Dispatched { supports: false, .. } => CancelStatus::WorkerUnsupported,
            State::Dispatched { supports: true, .. } => {
                let reason = match reason {
                    CancelReason::Explicit => SignalReason::Explicit,
                    CancelReason::CallerDeadline => SignalReason::CallerDeadline,
                };
                if self.signal(core, id, reason) { CancelStatus::Forwarded } else { CancelStatus::ForwardingFailed }
            }
            State::Cancelled { .. } => CancelStatus::AlreadyTerminal,
        }
    }
}

impl Domain for Rpc {
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        match req.to.msg_type {
            MsgType::RPC_SUBSCRIBE_WORKER | MsgType::RPC_UNSUBSCRIBE_WORKER => self.register(core, req),
            MsgType::RPC_REQUEST => self.request(core, req),
            MsgType::RPC_RESPONSE => self.response(core, req),
            MsgType::RPC_CANCEL => self.cancel(core, req),
            _ => Err(Close("unsupported RPC message type")),
        }
    }

    fn tick(&mut self, core: &mut Core) {
        let now = core.now();
        let mut expired = Vec::new();
        let mut overdue = Vec::new();
        for (&id, c) in &self.calls {
            match c.state {
                State::Queued | State::Dispatched { .. } if c.deadline <= now => expired.push(id),
                State::Cancelled { grace_until, closing: false, .. } if grace_until <= now => overdue.push(id),
                _ => {}
            }
        }
        if expired.is_empty() && overdue.is_empty() {
            return;
        }
        for id in expired {
            let Some(call) = self.calls.get(&id) else { continue };
            if let State::Dispatched { supports: true, .. } = call.state {
                let (caller, caller_id, attached) = (call.caller, call.caller_id, call.attached);
                if attached {
                    terminal(core, caller, caller_id, 6001, MSG_TIMEOUT);
                }
                self.detach(id);
                if !self.signal(core, id, SignalReason::BrokerDeadline) {
                    self.finish(id);
                }
            } else {
                self.fail(core, id, 6001, MSG_TIMEOUT);
            }
        }
        for id in overdue {
            if let Some(call) = self.calls.get_mut(&id)
                && let State::Cancelled { worker, closing, .. } = &mut call.state
            {
                *closing = true;
                core.close(*worker);
            }
        }
        self.pump(core);
    }

    fn cleanup(&mut self, core: &mut Core, session: SessionId) {
        // As a worker: registrations go, callers of its calls get 6002.
        let regs: Vec<u64> = self.workers.all().filter(|s| s.session == session).map(|s| s.id).collect();
        self.workers.remove_session(session);
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(call) = self.calls.get(&id) else { continue };
            let works_here = match call.state {
                State::Dispatched { worker, .. } | State::Cancelled { worker, .. } => worker == session,
                State::Queued => false,
            };
            if works_here {
                if call.caller == session {
                    self.finish(id);
                } else {
                    self.fail(core, id, 6002, MSG_WORKER_GONE);
                }
                continue;
            }
            if call.caller != session {
                continue;
            }
            // As a caller: queued calls and calls on legacy workers are
            // discarded (late responses get 6005); supporting workers are
            // told to stop and keep the credit until they acknowledge.
            match call.state {
                State::Dispatched { supports: true, .. } => {
                    self.detach(id);
                    if !self.signal(core, id, SignalReason::CallerDisconnected) {
                        self.finish(id);
                    }
                }
                State::Cancelled { .. } => self.detach(id),
                State::Queued | State::Dispatched { .. } => {
                    self.finish(id);
                }
            }
        }
        for r in regs {
            self.credits.remove(&r);
        }
        self.pump(core);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_error_bytes_match_the_worked_example() {
        let id = Uuid([0x11; 16]);
        let msg = TerminalResponse {
            correlation_id: id,
            sequence: 0,
            error: TerminalError { code: 6004, message: MSG_NO_WORKER },
        };
        let mut buf = vec![0u8; msg.payload_len()];
        let mut w = fitz_wire::SliceWriter::new(&mut buf);
        msg.write_payload(&mut w);
        assert_eq!(buf.len(), 69);
        assert_eq!(buf.get(24..34), Some(&[1, 0, 0, 0, 40, 1, 0, 0, 0x17, 0x74][..]));
    }
}
