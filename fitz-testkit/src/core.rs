//! What every domain handler shares: the session table with each session's
//! outbound queue, the clock, the configuration, and reply/notify helpers
//! that encode with fitz-wire (the testkit has no codec of its own).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use fitz_wire::frame::{self, Transport};
use fitz_wire::{Capabilities, Dialect, Encode, MsgType, Payload, Reply, ServerError, Typed};
use tokio::sync::mpsc;

use crate::auth::{Access, Principal};
use crate::clock::Clock;
use crate::config::BrokerConfig;

/// Broker-internal session id (never sent to clients).
pub(crate) type SessionId = u64;

/// What the connection task of a session is told to do.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send one transport frame (without the TCP prefix).
    Frame(Vec<u8>),
    /// Close the connection.
    Close,
}

/// A connected session as the domains see it.
#[derive(Debug)]
pub(crate) struct SessionInfo {
    pub(crate) tx: mpsc::Sender<Out>,
    pub(crate) principal: Principal,
    /// Display name from SESSION_METADATA.
    pub(crate) name: Option<String>,
}

/// Where a reply goes: the session, the label of the request (current
/// dialect) and the request's message type (which the reply carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    pub(crate) session: SessionId,
    pub(crate) label: Option<NonZeroU64>,
    pub(crate) msg_type: MsgType,
}

/// One decoded request handed to a domain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) to: ReplyTo,
    pub(crate) payload: &'a [u8],
    pub(crate) family: u32,
    pub(crate) dialect: Dialect,
    pub(crate) caps: Capabilities,
}

impl Request<'_> {
    pub(crate) fn session(&self) -> SessionId {
        self.to.session
    }
    /// True in the current dialect when `cap` was advertised.
    pub(crate) fn has(&self, cap: Capabilities) -> bool {
        self.dialect == Dialect::Current && self.caps.contains(cap)
    }
}

/// The session must be closed (record-level or undecodable request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close(pub(crate) &'static str);

pub(crate) type Handled = Result<(), Close>;

/// An error a test asked the broker to return for the next request of a type.
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    pub(crate) code: Option<u32>,
    pub(crate) message: String,
}

pub(crate) struct Core {
    pub(crate) cfg: Arc<BrokerConfig>,
    pub(crate) clock: Arc<Clock>,
    pub(crate) sessions: HashMap<SessionId, SessionInfo>,
    pub(crate) injected: HashMap<u16, Injected>,
    next_session: SessionId,
}

impl Core {
    pub(crate) fn new(cfg: Arc<BrokerConfig>, clock: Arc<Clock>) -> Self {
        Self { cfg, clock, sessions: HashMap::new(), injected: HashMap::new(), next_session: 1 }
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    pub(crate) fn add_session(&mut self, info: SessionInfo) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(id, info);
        id
    }

    /// Queues a frame for a session. `must` frames (replies) close a session
    /// whose queue is full; other frames (notifications) are dropped.
    fn push(&mut self, session: SessionId, bytes: Vec<u8>, must: bool) -> bool {
        let Some(s) = self.sessions.get(&session) else { return false };
        match s.tx.try_send(Out::Frame(bytes)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) if must => {
                // A client that does not read its replies: disconnect it.
                let _ = s.tx.try_send(Out::Close);
                false
            }
            Err(_) => false,
        }
    }

    fn encode<E: Encode>(label: Option<NonZeroU64>, msg: &E) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; frame::frame_len(Transport::WebSocket, label.is_some(), msg)];
        let label = label.map(|l| (MsgType::CORRELATED, l));
        frame::encode_frame(Transport::WebSocket, label, msg, &mut buf).ok().map(|_| buf)
    }

    /// Sends `reply` (status byte included) to the request it answers.
    pub(crate) fn reply<'p, T: Payload<'p>>(&mut self, to: ReplyTo, reply: Reply<'p, T>) {
        let msg = Typed::new(to.msg_type, reply);
        self.reply_raw(to, &msg);
    }

    /// Sends any encodable record as the reply to `to` (label applied).
    pub(crate) fn reply_raw<E: Encode>(&mut self, to: ReplyTo, msg: &E) {
        match Self::encode(to.label, msg) {
            Some(bytes) => {
                self.push(to.session, bytes, true);
            }
            None => {
                // Only a reply above 65,535 bytes can fail: the domain must
                // have sized its page; report instead of sending garbage.
                let e = ServerError::coded(internal_code(to.msg_type), "response too large");
                if let Some(bytes) = Self::encode(to.label, &Typed::new(to.msg_type, Reply::<()>::Err(e))) {
                    self.push(to.session, bytes, true);
                }
            }
        }
    }

    /// Success with no fields.
    pub(crate) fn ack(&mut self, to: ReplyTo) {
        self.reply(to, Reply::Ok(()));
    }

    /// A coded error.
    pub(crate) fn error(&mut self, to: ReplyTo, code: u32, message: &str) {
        self.reply::<()>(to, Reply::Err(ServerError::coded(code, message)));
    }

    /// An uncoded (plain) error.
    pub(crate) fn plain_error(&mut self, to: ReplyTo, message: &str) {
        self.reply::<()>(to, Reply::Err(ServerError::uncoded(message)));
    }

    /// An unlabelled record pushed to a session (NOTIFY, RPC deliveries):
    /// dropped if the session's queue is full.
    pub(crate) fn notify<E: Encode>(&mut self, session: SessionId, msg: &E) -> bool {
        match Self::encode(None, msg) {
            Some(bytes) => self.push(session, bytes, false),
            None => false,
        }
    }

    /// An unlabelled record that must arrive (RPC chunks, lifecycle): the
    /// session is closed if it cannot take it.
    pub(crate) fn deliver<E: Encode>(&mut self, session: SessionId, msg: &E) -> bool {
        match Self::encode(None, msg) {
            Some(bytes) => self.push(session, bytes, true),
            None => false,
        }
    }

    /// Checks a permission; on denial answers the coded unauthorized error
    /// of the request's domain (BROKER.md §2.3) and returns false.
    pub(crate) fn authorize(&mut self, req: &Request<'_>, route: &str, access: Access) -> bool {
        let allowed = self.sessions.get(&req.session()).is_some_and(|s| s.principal.permissions.allows(route, access));
        if !allowed {
            self.error(req.to, unauthorized_code(req.to.msg_type), "unauthorized: permission denied");
        }
        allowed
    }

    /// Closes a session from inside the broker (e.g. RPC cancellation grace).
    pub(crate) fn close(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.get(&session) {
            let _ = s.tx.try_send(Out::Close);
        }
    }

    /// Takes an error injected for this message type, if any.
    pub(crate) fn take_injected(&mut self, msg_type: MsgType) -> Option<Injected> {
        self.injected.remove(&msg_type.0)
    }
}

/// The domain's unauthorized code (BROKER.md §2.3).
pub(crate) fn unauthorized_code(t: MsgType) -> u32 {
    use fitz_wire::Domain::*;
    match t.domain() {
        Some(Kv) => 1011,
        Some(Stream) => 2009,
        Some(Notice) => 3009,
        Some(Queue) => 4009,
        Some(Lease) => 5009,
        Some(Rpc) => 6009,
        Some(Schedule) => 7009,
        _ => 0,
    }
}

/// The domain's generic backend-error code, used for internal failures.
pub(crate) fn internal_code(t: MsgType) -> u32 {
    use fitz_wire::Domain::*;
    match t.domain() {
        Some(Kv) => 1009,
        Some(Stream) => 2012,
        Some(Notice) => 3005,
        Some(Queue) => 4007,
        Some(Rpc) => 6010,
        Some(Lease) => 5008,
        Some(Schedule) => 7010,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_codes() {
        for (t, c) in [(100, 1011), (604, 2009), (500, 3009), (200, 4009), (400, 5009), (302, 6009), (700, 7009)] {
            assert_eq!(unauthorized_code(MsgType(t)), c);
        }
    }
}
