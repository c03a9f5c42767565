//! Notices (BROKER.md §8, WIRE.md §8.5): best-effort, non-durable live
//! fan-out. PUBLISH never answers except for the coded unauthorized error
//! of the ingress (§2.3); SUBSCRIBE, UNSUBSCRIBE (by id) and
//! UNSUBSCRIBE_ALL answer with the coded envelope.

use fitz_wire::notice::{self, Publish, Subscribe, Unsubscribe, UnsubscribeAll};
use fitz_wire::route::{self, Scheme};
use fitz_wire::{MsgType, Payload, Reader, Reply};

use crate::auth::Access;
use crate::core::{Close, Core, Handled, Request, SessionId};
use crate::subs::{Registry, SubError};
use crate::world::Domain;

/// 3002: the SUBSCRIBE pattern is not a valid Notice pattern.
const ERR_INVALID_PATTERN: u32 = 3002;
/// 3003: registration quota exceeded.
const ERR_SUBSCRIPTION_LIMIT: u32 = 3003;
/// 3005: used for an undecodable UNSUBSCRIBE / UNSUBSCRIBE_ALL payload.
const ERR_BACKEND: u32 = 3005;

#[derive(Debug, Default)]
pub(crate) struct Notice {
    subs: Registry,
}

impl Notice {
    fn publish(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        // The ingress needs the route for the permission check; a payload
        // whose route cannot be read closes the connection (§2.5).
        let route = Reader::new(req.payload).str().map_err(|_| Close("undecodable notice PUBLISH route"))?;
        if !core.authorize(req, route, Access::Write) {
            return Ok(());
        }
        // Fire-and-forget: a malformed body or an invalid route is dropped
        // silently (§8).
        let Ok(p) = Publish::decode(req.payload) else { return Ok(()) };
        if !route::is_concrete(p.route, Scheme::Notice, 3) {
            return Ok(());
        }
        let targets: Vec<(SessionId, u64)> =
            self.subs.matching(req.family, p.route).map(|s| (s.session, s.id)).collect();
        for (session, sub_id) in targets {
            core.notify(session, &notice::Notify { sub_id, route: p.route, body: p.body });
        }
        Ok(())
    }

    fn subscribe(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let pattern = Reader::new(req.payload).str().map_err(|_| Close("undecodable notice SUBSCRIBE pattern"))?;
        if !core.authorize(req, pattern, Access::Read) {
            return Ok(());
        }
        // Trailing bytes after a readable pattern: a domain error.
        if Subscribe::decode(req.payload).is_err() || !route::is_valid_pattern(pattern, Scheme::Notice, None) {
            core.error(req.to, ERR_INVALID_PATTERN, "invalid subscription pattern");
            return Ok(());
        }
        let l = core.cfg.limits;
        match self.subs.subscribe(req.session(), req.family, pattern, l.wildcard_quota, l.total_quota) {
            Ok(sub_id) => core.reply(req.to, Reply::Ok(notice::SubscribeOk { sub_id })),
            Err(SubError::Quota) => core.error(req.to, ERR_SUBSCRIPTION_LIMIT, "subscription limit exceeded"),
        }
        Ok(())
    }

    fn unsubscribe(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        // No route is involved (no permission check), so a malformed
        // payload is a domain error, not a close.
        match Unsubscribe::decode(req.payload) {
            Ok(u) => {
                // Unknown ids, and ids of other sessions, are a success
                // that changes nothing.
                self.subs.unsubscribe_id(req.session(), u.sub_id);
                core.ack(req.to);
            }
            Err(_) => core.error(req.to, ERR_BACKEND, "malformed unsubscribe request"),
        }
        Ok(())
    }

    fn unsubscribe_all(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        match UnsubscribeAll::decode(req.payload) {
            Ok(UnsubscribeAll) => {
                self.subs.remove_session(req.session());
                core.ack(req.to);
            }
            Err(_) => core.error(req.to, ERR_BACKEND, "malformed unsubscribe-all request"),
        }
        Ok(())
    }
}

impl Domain for Notice {
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        match req.to.msg_type {
            MsgType::NOTICE_PUBLISH => self.publish(core, req),
            MsgType::NOTICE_SUBSCRIBE => self.subscribe(core, req),
            MsgType::NOTICE_UNSUBSCRIBE => self.unsubscribe(core, req),
            MsgType::NOTICE_UNSUBSCRIBE_ALL => self.unsubscribe_all(core, req),
            // 504 is caught by the dispatcher; 505–599 are unsupported (§2.5).
            _ => Err(Close("unsupported notice message type")),
        }
    }

    fn cleanup(&mut self, _core: &mut Core, session: SessionId) {
        self.subs.remove_session(session);
    }
}
