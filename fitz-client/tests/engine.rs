//! The engine with a scripted broker in memory and simulated time (like
//! quinn-proto's `Pair`): deadlines, the restore phase, shared
//! registrations, backpressure. No sockets, no clock.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, clippy::std_instead_of_core)]

use std::task::{Context, Poll, Waker};

use fitz_client::{Buf, Config, Core, DialectMode, Engine, Error, Item, State};
use fitz_wire::frame::{self, Transport};
use std::num::NonZeroU64;

use fitz_wire::frame::LabelledRecords;
use fitz_wire::{Capabilities, Encode, MsgType, Payload, Typed, notice};

/// An owned frame; parts are copies (enough for a test).
#[derive(Clone, Debug, PartialEq)]
struct Owned(Vec<u8>);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Buf for Owned {
    fn part(&self, sub: &[u8]) -> Self {
        Owned(sub.to_vec())
    }
}

/// 8 request slots, 4 subscribers with queues of 4, 16 RPC calls with queues
/// of 2 chunks.
type E = Engine<Owned, Vec<u8>, 8, 4, 4, 16, 2>;

struct Pair {
    e: E,
    now: u64,
    spare: Vec<u8>,
    /// Requests the broker has not answered: type and label.
    outstanding: Vec<(MsgType, Option<NonZeroU64>)>,
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

impl Pair {
    fn new(dialect: DialectMode) -> Pair {
        let cfg = Config { dialect, settle_window_ms: 1000, ..Config::default() };
        Pair { e: Engine::new(cfg, vec![0; 4096]), now: 0, spare: vec![0; 4096], outstanding: Vec::new() }
    }

    /// Connects; with `hello`, the broker answers SERVER_HELLO (current
    /// dialect, correlation); without, the settle window runs out.
    fn connect(&mut self, hello: bool) {
        self.e.connecting();
        self.e.connected(self.now, b"").unwrap();
        self.outstanding.clear();
        let sent = self.sent();
        assert_eq!(sent[0].0, MsgType::CONNECT);
        if hello {
            let caps = Capabilities::CORRELATION | Capabilities::RPC_CANCELLATION;
            let hello = fitz_wire::control::ServerHello { protocol_version: 1, capabilities: caps, trailing: &[] };
            self.deliver(&hello);
        } else {
            self.advance(1000);
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.e.handle_timeout(self.now).unwrap();
    }

    /// Frames the engine queued, as (type, payload) of each record (labels
    /// dropped).
    fn sent(&mut self) -> Vec<(MsgType, Vec<u8>)> {
        let n = self.e.take_tx(&mut self.spare);
        let mut out = Vec::new();
        let mut rest = &self.spare[..n];
        while !rest.is_empty() {
            let frame::TcpFrame::Complete { frame, consumed } = frame::decode_tcp(rest, u32::MAX).unwrap() else {
                panic!("partial frame queued")
            };
            for r in LabelledRecords::from_client(frame) {
                let r = r.unwrap();
                out.push((r.record.msg_type, r.record.payload.to_vec()));
                self.outstanding.push((r.record.msg_type, r.label));
            }
            rest = &rest[consumed..];
        }
        out
    }

    /// The broker sends one record: a reply (to the oldest outstanding
    /// request of its type, with that request's label) or a push.
    fn deliver<M: Encode>(&mut self, msg: &M) {
        let ty = msg.msg_type();
        let label = match self.outstanding.iter().position(|(t, _)| *t == ty) {
            Some(i) => self.outstanding.remove(i).1,
            None => None,
        };
        let mut buf = vec![0; 4096];
        let n =
            frame::encode_frame(Transport::WebSocket, label.map(|l| (MsgType::CORRELATED, l)), msg, &mut buf).unwrap();
        buf.truncate(n);
        self.e.handle_frame(self.now, &Owned(buf)).unwrap();
    }

    /// The broker answers the subscribe of `kind` with sub id `id`.
    fn confirm_notice(&mut self, id: u64) {
        let ok = notice::SubscribeOk { sub_id: id };
        self.deliver(&Typed::new(MsgType::NOTICE_SUBSCRIBE, fitz_wire::Reply::Ok(ok)));
    }

    fn notify(&mut self, id: u64, body: &[u8]) {
        self.deliver(&notice::Notify { sub_id: id, route: "notice://a/b/c", body });
    }
}

fn ready<T>(p: Poll<T>) -> T {
    match p {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("not ready"),
    }
}

#[test]
fn settle_window_selects_legacy_at_its_deadline() {
    let mut p = Pair::new(DialectMode::Auto);
    p.e.connecting();
    p.e.connected(0, b"tok").unwrap();
    assert_eq!(p.e.state(), State::Authenticating);
    assert_eq!(p.e.poll_timeout(), Some(1000));
    p.advance(999);
    assert_eq!(p.e.state(), State::Authenticating);
    p.advance(1);
    assert_eq!(p.e.state(), State::Authenticated);
    assert_eq!(p.e.dialect().map(|d| d.0), Some(fitz_wire::Dialect::Legacy));
}

#[test]
fn request_deadline_in_simulated_time_then_late_reply_is_swallowed() {
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(false);
    let get = fitz_wire::kv::Get { tx_id: 1, route: "kv://a/b/c", key: b"k" };
    let id = ready(p.e.poll_request(&cx(), &get, 250, None)).unwrap();
    assert_eq!(p.sent()[0].0, MsgType::KV_GET);
    assert_eq!(p.e.poll_timeout(), Some(p.now + 250));
    p.advance(249);
    assert!(p.e.poll_reply(&cx(), id).is_pending());
    p.advance(1);
    assert_eq!(ready(p.e.poll_reply(&cx(), id)), Err(Error::Timeout));
    p.e.finish_request(id);
    // Legacy: the tombstone keeps the type busy until the late reply...
    let again = p.e.poll_request(&cx(), &get, 0, None);
    assert!(again.is_pending(), "no same-type request while the late reply is due");
    let ok = fitz_wire::kv::GetOk { value: Some(b"late") };
    p.deliver(&Typed::new(MsgType::KV_GET, fitz_wire::Reply::Ok(ok)));
    // ...which is swallowed; the next request gets its own reply.
    let id2 = ready(p.e.poll_request(&cx(), &get, 0, None)).unwrap();
    let ok = fitz_wire::kv::GetOk { value: Some(b"mine") };
    p.deliver(&Typed::new(MsgType::KV_GET, fitz_wire::Reply::Ok(ok)));
    let reply = ready(p.e.poll_reply(&cx(), id2)).unwrap();
    let got = fitz_wire::kv::decode_get_reply(reply.as_ref()).unwrap();
    assert_eq!(got, fitz_wire::Reply::Ok(fitz_wire::kv::GetOk { value: Some(&b"mine"[..]) }));
}

#[test]
fn shared_registration_sends_one_subscribe_and_fans_out() {
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    let sub = notice::Subscribe { pattern: "notice://a/b/*" };
    let a = p.e.subscribe(&sub).unwrap();
    let b = p.e.subscribe(&sub).unwrap();
    let sent = p.sent();
    assert_eq!(sent.iter().filter(|(t, _)| *t == MsgType::NOTICE_SUBSCRIBE).count(), 1, "{sent:?}");
    assert!(p.e.poll_subscribed(&cx(), a).is_pending());
    p.confirm_notice(7);
    ready(p.e.poll_subscribed(&cx(), a)).unwrap();
    ready(p.e.poll_subscribed(&cx(), b)).unwrap();
    p.notify(7, b"hi");
    for s in [a, b] {
        match ready(p.e.poll_next(&cx(), s)) {
            Some(Ok(Item::Record { msg_type, .. })) => assert_eq!(msg_type, MsgType::NOTICE_NOTIFY),
            other => panic!("{other:?}"),
        }
    }
    // A notification for an unknown id reaches nobody and is counted.
    p.notify(8, b"stray");
    assert_eq!(p.e.unmatched(), 1);
    // The last subscriber leaving unsubscribes on the wire, by id.
    p.e.unsubscribe(a);
    assert!(p.sent().is_empty(), "one subscriber is left");
    p.e.unsubscribe(b);
    let sent = p.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, MsgType::NOTICE_UNSUBSCRIBE);
    assert_eq!(notice::Unsubscribe::decode(&sent[0].1).unwrap(), notice::Unsubscribe { sub_id: 7 });
}

#[test]
fn slow_subscriber_ends_alone_with_backpressure() {
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    let slow = p.e.subscribe(&notice::Subscribe { pattern: "notice://a/b/*" }).unwrap();
    let other = p.e.subscribe(&notice::Subscribe { pattern: "notice://a/*/*" }).unwrap();
    p.sent();
    p.confirm_notice(1);
    p.confirm_notice(2);
    // Q = 4: the fifth delivery overflows the slow subscriber.
    for i in 0..5u8 {
        p.notify(1, &[i]);
        p.notify(2, &[i]);
        // `other` keeps up.
        assert!(matches!(ready(p.e.poll_next(&cx(), other)), Some(Ok(Item::Record { .. }))));
    }
    for _ in 0..4 {
        assert!(matches!(ready(p.e.poll_next(&cx(), slow)), Some(Ok(Item::Record { .. }))));
    }
    assert_eq!(ready(p.e.poll_next(&cx(), slow)), Some(Err(Error::Backpressure)));
    // Its registration had no other subscriber: unsubscribed on the wire.
    let sent = p.sent();
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), vec![MsgType::NOTICE_UNSUBSCRIBE]);
    // The other subscription goes on.
    p.notify(2, b"still");
    assert!(matches!(ready(p.e.poll_next(&cx(), other)), Some(Ok(Item::Record { .. }))));
}

#[test]
fn restore_runs_before_authenticated_and_reports_each_result() {
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    let good = p.e.subscribe(&notice::Subscribe { pattern: "notice://a/good/*" }).unwrap();
    let bad = p.e.subscribe(&notice::Subscribe { pattern: "notice://a/bad/*" }).unwrap();
    p.sent();
    p.confirm_notice(1);
    p.confirm_notice(2);
    let epoch = p.e.epoch();
    assert!(!p.e.connection_closed(), "a close after authentication is not an auth failure");
    assert_eq!(p.e.state(), State::Reconnecting);

    p.now += 500;
    p.connect(true);
    assert_ne!(p.e.epoch(), epoch);
    // SERVER_HELLO arrived, but the subscriptions are not back yet.
    assert_eq!(p.e.state(), State::Authenticating);
    let sent = p.sent();
    assert_eq!(sent.iter().filter(|s| s.0 == MsgType::NOTICE_SUBSCRIBE).count(), 2);
    // User requests wait for the restore.
    let get = fitz_wire::kv::Get { tx_id: 1, route: "kv://a/b/c", key: b"k" };
    assert!(p.e.poll_request(&cx(), &get, 0, None).is_pending());
    p.confirm_notice(11);
    assert_eq!(p.e.state(), State::Authenticating);
    let refused = fitz_wire::ServerError::coded(3002, "pattern refused");
    p.deliver(&Typed::new(MsgType::NOTICE_SUBSCRIBE, fitz_wire::Reply::<notice::SubscribeOk>::Err(refused)));
    assert_eq!(p.e.state(), State::Authenticated);
    assert_eq!(ready(p.e.poll_next(&cx(), good)), Some(Ok(Item::Restored)));
    match ready(p.e.poll_next(&cx(), bad)) {
        Some(Err(Error::Server(f))) => assert_eq!(f.code, Some(3002)),
        other => panic!("{other:?}"),
    }
    // The restored registration has its new id.
    p.notify(11, b"x");
    assert!(matches!(ready(p.e.poll_next(&cx(), good)), Some(Ok(Item::Record { .. }))));
    assert!(p.e.poll_request(&cx(), &get, 0, None).is_ready());
}

#[test]
fn pending_requests_fail_with_connection_lost_and_handles_go_stale() {
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    let epoch = p.e.epoch();
    let get = fitz_wire::kv::Get { tx_id: 1, route: "kv://a/b/c", key: b"k" };
    let id = ready(p.e.poll_request(&cx(), &get, 0, Some(epoch))).unwrap();
    p.e.connection_closed();
    assert_eq!(ready(p.e.poll_reply(&cx(), id)), Err(Error::ConnectionLost));
    p.e.finish_request(id);
    p.connect(true);
    assert_eq!(ready(p.e.poll_request(&cx(), &get, 0, Some(epoch))), Err(Error::StaleHandle));
}

#[test]
fn a_close_inside_the_settle_window_is_an_authentication_failure() {
    let mut p = Pair::new(DialectMode::Auto);
    p.e.connecting();
    p.e.connected(0, b"tok").unwrap();
    assert!(p.e.connection_closed());
}

#[test]
fn frames_larger_than_the_transmit_buffer_are_refused_not_truncated() {
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    let big = vec![0u8; 5000];
    let put = fitz_wire::kv::Put { tx_id: 1, route: "kv://a/b/c", key: b"k", value: &big };
    assert_eq!(ready(p.e.poll_request(&cx(), &put, 0, None)), Err(Error::Capacity(fitz_client::Capacity::Frame)));
    assert!(p.sent().is_empty());
}

#[test]
fn in_flight_limit_queues_requests_beyond_it() {
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    p.e.set_in_flight_limit(2);
    let get = fitz_wire::kv::Get { tx_id: 1, route: "kv://a/b/c", key: b"k" };
    let a = ready(p.e.poll_request(&cx(), &get, 0, None)).unwrap();
    let _b = ready(p.e.poll_request(&cx(), &get, 0, None)).unwrap();
    assert!(p.e.poll_request(&cx(), &get, 0, None).is_pending(), "a third waits");
    assert_eq!(p.sent().len(), 2, "nothing beyond the limit was sent");
    p.e.finish_request(a);
    assert!(ready(p.e.poll_request(&cx(), &get, 0, None)).is_ok());
    let stats = p.e.stats();
    assert_eq!((stats.in_flight, stats.max_in_flight), (2, 2));
    assert!(stats.limited >= 1);
}

#[test]
fn queued_acquire_keeps_both_replies_even_when_the_grant_comes_first() {
    use fitz_wire::lease::{Acquire, AcquireOk, AcquireStatus};
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(false);
    let acquire = Acquire { route: "lease://a/b/c", owner_id: "me", ttl_secs: 10, wait_seconds: 5 };
    let id = ready(p.e.poll_request(&cx(), &acquire, 0, None)).unwrap();
    p.sent();
    let queued = AcquireOk { status: AcquireStatus::Queued, fencing_token: 0 };
    let granted = AcquireOk { status: AcquireStatus::Acquired, fencing_token: 42 };
    // Both frames arrive before the task reads anything.
    p.deliver(&Typed::new(MsgType::LEASE_ACQUIRE, fitz_wire::Reply::Ok(queued)));
    p.outstanding.push((MsgType::LEASE_ACQUIRE, None));
    p.deliver(&Typed::new(MsgType::LEASE_ACQUIRE, fitz_wire::Reply::Ok(granted)));
    let first = ready(p.e.poll_reply(&cx(), id)).unwrap();
    assert_eq!(fitz_wire::lease::decode_acquire_reply(first.as_ref()).unwrap(), fitz_wire::Reply::Ok(queued));
    let second = ready(p.e.poll_reply(&cx(), id)).unwrap();
    assert_eq!(fitz_wire::lease::decode_acquire_deferred(second.as_ref()).unwrap(), fitz_wire::Reply::Ok(granted));
    p.e.finish_request(id);
    // The type is free again.
    assert!(p.e.poll_request(&cx(), &acquire, 0, None).is_ready());
}

/// RPC calls have a table of their own: more calls than subscribers can be
/// in flight, each gets its own response whatever the order, the table
/// has a limit of its own, and subscribers stay available meanwhile.
#[test]
fn calls_beyond_the_subscriber_count_are_in_flight_at_once() {
    use fitz_wire::Uuid;
    use fitz_wire::rpc::Response;
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    let uuid = |i: u8| Uuid([i; 16]);
    let calls: Vec<_> =
        (0..16u8).map(|i| ready(p.e.poll_call(&cx(), "rpc://a/b/c", &[i], uuid(i), 0)).unwrap()).collect();
    assert_eq!(p.sent().iter().filter(|(t, _)| *t == MsgType::RPC_REQUEST).count(), 16);
    assert_eq!(
        ready(p.e.poll_call(&cx(), "rpc://a/b/c", b"", uuid(99), 0)),
        Err(Error::Capacity(fitz_client::Capacity::Calls)),
        "the call table is full"
    );
    // All four subscribers are still free.
    for i in 0..4 {
        let pattern = ["notice://a/b/*", "notice://a/c/*", "notice://a/d/*", "notice://a/e/*"][i];
        p.e.subscribe(&notice::Subscribe { pattern }).unwrap();
    }
    // Replies in reverse order, each to its own call.
    for i in (0..16u8).rev() {
        p.deliver(&Response::last(uuid(i), 0, &[i, i]));
    }
    for (i, id) in calls.iter().enumerate() {
        match ready(p.e.poll_next(&cx(), *id)) {
            Some(Ok(Item::Record { msg_type: MsgType::RPC_RESPONSE, payload })) => {
                let r = Response::decode(payload.as_ref()).unwrap();
                assert_eq!((r.correlation_id, r.body), (uuid(i as u8), &[i as u8, i as u8][..]));
            }
            other => panic!("call {i}: {other:?}"),
        }
        assert_eq!(ready(p.e.poll_next(&cx(), *id)), None, "one-shot reply: the call ended");
        p.e.unsubscribe(*id);
    }
    // The slots are free again.
    assert!(ready(p.e.poll_call(&cx(), "rpc://a/b/c", b"", uuid(99), 0)).is_ok());
}

/// A call's queue is `CQ` chunks deep; a call that does not read ends with
/// backpressure, and its deadline still fires (and is cleared) later
/// without a cancel for the ended call.
#[test]
fn a_call_that_does_not_read_ends_with_backpressure_at_its_queue_depth() {
    use fitz_wire::Uuid;
    use fitz_wire::rpc::Response;
    let mut p = Pair::new(DialectMode::Auto);
    p.connect(true);
    let id = ready(p.e.poll_call(&cx(), "rpc://a/b/c", b"", Uuid([7; 16]), 500)).unwrap();
    let timed = ready(p.e.poll_call(&cx(), "rpc://a/b/c", b"", Uuid([8; 16]), 1000)).unwrap();
    p.sent();
    assert_eq!(p.e.poll_timeout(), Some(500));
    for seq in 0..3 {
        p.deliver(&Response::chunk(Uuid([7; 16]), seq, b"x"));
    }
    assert!(matches!(ready(p.e.poll_next(&cx(), id)), Some(Ok(Item::Record { .. }))));
    assert!(matches!(ready(p.e.poll_next(&cx(), id)), Some(Ok(Item::Record { .. }))));
    assert_eq!(ready(p.e.poll_next(&cx(), id)), Some(Err(Error::Backpressure)));
    p.advance(500);
    assert!(!p.sent().iter().any(|(t, _)| *t == MsgType::RPC_CANCEL), "no cancel for a call that already ended");
    assert_eq!(p.e.poll_timeout(), Some(1000), "the other call's deadline is still armed");
    p.advance(500);
    assert_eq!(ready(p.e.poll_next(&cx(), timed)), Some(Err(Error::Timeout)));
    assert_eq!(
        p.sent().iter().filter(|(t, _)| *t == MsgType::RPC_CANCEL).count(),
        1,
        "the timed-out call is cancelled"
    );
    assert_eq!(p.e.poll_timeout(), None, "no deadline left");
}
