//! One broker world: the shared core plus the seven domains. A world is
//! behind one mutex; every request, tick and cleanup runs to completion
//! under it, so domains never see concurrent changes.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::core::{Close, Core, Handled, Request, SessionId};
use crate::{kv, lease, notice, queue, rpc, schedule, stream};

/// A domain of the broker.
pub(crate) trait Domain {
    /// Handles one request of the domain's range.
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled;
    /// Time-driven work (expiries, long-poll ends, fires); called often.
    fn tick(&mut self, _core: &mut Core) {}
    /// Drops everything `session` owned (BROKER.md §2.4).
    fn cleanup(&mut self, _core: &mut Core, _session: SessionId) {}
}

pub(crate) struct World {
    pub(crate) core: Core,
    pub(crate) kv: kv::Kv,
    pub(crate) queue: queue::Queue,
    pub(crate) rpc: rpc::Rpc,
    pub(crate) lease: lease::Lease,
    pub(crate) notice: notice::Notice,
    pub(crate) stream: stream::Stream,
    pub(crate) schedule: schedule::Schedule,
}

impl World {
    pub(crate) fn new(cfg: Arc<BrokerConfig>, clock: Arc<Clock>) -> Self {
        Self {
            core: Core::new(cfg, clock),
            kv: kv::Kv::default(),
            queue: queue::Queue::default(),
            rpc: rpc::Rpc::default(),
            lease: lease::Lease::default(),
            notice: notice::Notice::default(),
            stream: stream::Stream::default(),
            schedule: schedule::Schedule::default(),
        }
    }

    /// Routes a request to its domain by type range (WIRE.md §7).
    pub(crate) fn dispatch(&mut self, req: &Request<'_>) -> Handled {
        let t = req.to.msg_type;
        if t.is_notify() {
            return Err(Close("client sent a NOTIFY type"));
        }
        if t.domain().is_some_and(|d| d != fitz_wire::Domain::Control)
            && let Some(inj) = self.core.take_injected(t)
        {
            match inj.code {
                Some(code) => self.core.error(req.to, code, &inj.message),
                None => self.core.plain_error(req.to, &inj.message),
            }
            return Ok(());
        }
        let core = &mut self.core;
        match t.0 {
            100..=199 => self.kv.handle(core, req),
            200..=299 => self.queue.handle(core, req),
            300..=399 => self.rpc.handle(core, req),
            400..=499 => self.lease.handle(core, req),
            500..=599 => self.notice.handle(core, req),
            600..=699 => self.stream.handle(core, req),
            700..=799 => self.schedule.handle(core, req),
            // Outside every domain range: ignored without a reply by the
            // broker generation the clients were tested against (WIRE.md §3.4).
            _ => Ok(()),
        }
    }

    pub(crate) fn tick(&mut self) {
        let core = &mut self.core;
        self.kv.tick(core);
        self.queue.tick(core);
        self.rpc.tick(core);
        self.lease.tick(core);
        self.notice.tick(core);
        self.stream.tick(core);
        self.schedule.tick(core);
    }

    pub(crate) fn cleanup(&mut self, session: SessionId) {
        let core = &mut self.core;
        self.kv.cleanup(core, session);
        self.queue.cleanup(core, session);
        self.rpc.cleanup(core, session);
        self.lease.cleanup(core, session);
        self.notice.cleanup(core, session);
        self.stream.cleanup(core, session);
        self.schedule.cleanup(core, session);
        core.sessions.remove(&session);
    }
}
