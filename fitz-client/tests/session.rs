//! The sans-IO session with simulated time: the broker side is played by
//! the test with frames built by fitz-wire, so every rule is checked
//! deterministically (no sockets, no clock).
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, clippy::std_instead_of_core)]

use std::num::NonZeroU64;

use fitz_client::{Config, DialectMode, Event, FailReason, ProtocolError, RequestError, RequestId, Session, State};
use fitz_wire::frame::{self, Transport};
use fitz_wire::lease::{AcquireOk, AcquireStatus};
use fitz_wire::{Capabilities, Dialect, Encode, MsgType, Record, Reply, Typed, kv, lease};

/// Owned copy of an event, so tests can collect them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    State(State),
    Authenticated(Dialect, u32),
    Reply(RequestId, MsgType, Vec<u8>),
    Failed(RequestId, FailReason),
    Push(MsgType, Vec<u8>),
    AuthFailed,
}

fn own(e: Event<'_>) -> Ev {
    match e {
        Event::State(s) => Ev::State(s),
        Event::Authenticated { dialect, capabilities } => Ev::Authenticated(dialect, capabilities.0),
        Event::Reply { id, msg_type, payload } => Ev::Reply(id, msg_type, payload.to_vec()),
        Event::Failed { id, reason } => Ev::Failed(id, reason),
        Event::Push { msg_type, payload } => Ev::Push(msg_type, payload.to_vec()),
        Event::AuthenticationFailed => Ev::AuthFailed,
    }
}

/// A session driven by the test, on WebSocket framing (no TCP prefix, so
/// frames are records).
struct Harness {
    s: Session<4>,
    events: Vec<Ev>,
    out: Vec<u8>,
}

impl Harness {
    fn new(dialect: DialectMode) -> Self {
        let cfg = Config { transport: Transport::WebSocket, dialect, settle_window_ms: 1000, connect_timeout_ms: 5000 };
        Harness { s: Session::new(cfg), events: Vec::new(), out: vec![0u8; 1024] }
    }

    fn connect(&mut self, now: u64) -> Vec<u8> {
        let ev = &mut self.events;
        self.s.connecting(&mut |e| ev.push(own(e)));
        let n = self.s.connected(now, b"tok", &mut self.out, &mut |e| ev.push(own(e))).unwrap();
        self.out[..n].to_vec()
    }

    fn frame(&mut self, now: u64, bytes: &[u8]) -> Result<(), ProtocolError> {
        let ev = &mut self.events;
        self.s.handle_frame(now, bytes, &mut |e| ev.push(own(e)))
    }

    fn timeout(&mut self, now: u64) -> Result<(), ProtocolError> {
        let ev = &mut self.events;
        self.s.handle_timeout(now, &mut |e| ev.push(own(e)))
    }

    fn close(&mut self) {
        let ev = &mut self.events;
        self.s.handle_close(&mut |e| ev.push(own(e)));
    }

    fn request<E: Encode>(&mut self, now: u64, msg: &E, timeout: u64) -> Result<(RequestId, Vec<u8>), RequestError> {
        let (id, n) = self.s.request(now, msg, timeout, &mut self.out)?;
        Ok((id, self.out[..n].to_vec()))
    }

    fn take(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.events)
    }

    /// A legacy session, authenticated.
    fn legacy() -> Self {
        let mut h = Harness::new(DialectMode::Auto);
        h.connect(0);
        h.timeout(1000).unwrap();
        h.take();
        h
    }

    /// A current session with `caps`, authenticated.
    fn current(caps: u32) -> Self {
        let mut h = Harness::new(DialectMode::Auto);
        h.connect(0);
        h.frame(5, &hello(caps)).unwrap();
        h.take();
        h
    }
}

fn hello(caps: u32) -> Vec<u8> {
    let h = fitz_wire::control::ServerHello { protocol_version: 1, capabilities: Capabilities(caps), trailing: &[] };
    let mut b = vec![0u8; fitz_wire::record::encoded_len(&h)];
    fitz_wire::record::encode(&h, &mut b).unwrap();
    b
}

/// A broker reply frame, labelled or not.
fn reply<'a, P: fitz_wire::Payload<'a>>(ty: MsgType, label: Option<u64>, r: Reply<'a, P>) -> Vec<u8> {
    let msg = Typed::new(ty, r);
    let label = label.and_then(NonZeroU64::new).map(|l| (MsgType::CORRELATED, l));
    let mut b = vec![0u8; frame::frame_len(Transport::WebSocket, label.is_some(), &msg)];
    frame::encode_frame(Transport::WebSocket, label, &msg, &mut b).unwrap();
    b
}

/// The label the session put on a request frame.
fn label_of(frame_bytes: &[u8]) -> Option<u64> {
    let l = frame::LabelledRecords::from_client(frame_bytes).next().unwrap().unwrap();
    l.label.map(NonZeroU64::get)
}

const R: &str = "kv://acme/orders/main";

fn begin() -> kv::Begin<'static> {
    kv::Begin { route: R, mode: kv::Mode::ReadWrite, durability: None }
}

fn get() -> kv::Get<'static> {
    kv::Get { tx_id: 1, route: R, key: b"k" }
}

#[test]
fn connect_sends_connect_first_and_silence_means_legacy() {
    let mut h = Harness::new(DialectMode::Auto);
    let f = h.connect(100);
    assert_eq!(Record::parse_exact(&f).unwrap(), Record { msg_type: MsgType::CONNECT, payload: b"tok" });
    assert_eq!(h.s.state(), State::Authenticating);
    assert_eq!(h.s.poll_timeout(), Some(1100));
    assert_eq!(h.s.request(100, &begin(), 0, &mut [0u8; 64]), Err(RequestError::NotReady));
    h.timeout(1099).unwrap();
    assert_eq!(h.s.state(), State::Authenticating, "the window is not over yet");
    h.timeout(1100).unwrap();
    assert_eq!(h.s.state(), State::Authenticated);
    assert!(h.take().contains(&Ev::Authenticated(Dialect::Legacy, 0)));
}

#[test]
fn server_hello_ends_the_window_at_once_and_selects_current() {
    let mut h = Harness::new(DialectMode::Auto);
    h.connect(0);
    h.frame(3, &hello(0b0101)).unwrap();
    assert_eq!(h.s.state(), State::Authenticated);
    assert_eq!(h.s.dialect(), Some(Dialect::Current));
    assert_eq!(h.s.capabilities(), Capabilities(5));
    assert!(h.take().contains(&Ev::Authenticated(Dialect::Current, 5)));
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn forced_dialects_refuse_the_other() {
    let mut h = Harness::new(DialectMode::Current);
    h.connect(0);
    h.timeout(1000).unwrap();
    assert_eq!(h.s.state(), State::Authenticating, "current waits beyond the settle window");
    assert_eq!(h.timeout(5000), Err(ProtocolError::NoHello), "no SERVER_HELLO within the connect timeout");
    let mut h = Harness::new(DialectMode::Legacy);
    h.connect(0);
    assert_eq!(h.frame(1, &hello(1)), Err(ProtocolError::UnexpectedFirstFrame(MsgType::SERVER_HELLO)));
    let mut h = Harness::new(DialectMode::Auto);
    h.connect(0);
    let f = reply(MsgType::KV_BEGIN, None, Reply::Ok(kv::BeginOk { tx_id: 1 }));
    assert_eq!(h.frame(1, &f), Err(ProtocolError::UnexpectedFirstFrame(MsgType::KV_BEGIN)));
    assert_eq!(h.frame(1, &[4, 0, 5, 0, 1, 0, 0, 0]), Err(ProtocolError::BadHello), "HELLO shorter than 6 bytes");
}

#[test]
fn close_during_the_window_is_an_authentication_failure() {
    let mut h = Harness::new(DialectMode::Auto);
    h.connect(0);
    h.close();
    assert_eq!(h.take().last(), Some(&Ev::State(State::Reconnecting)));
    assert!(h.events.is_empty());
    let mut h = Harness::new(DialectMode::Auto);
    h.connect(0);
    h.close();
    let evs = h.take();
    assert!(evs.contains(&Ev::AuthFailed), "{evs:?}");
    // A current session that heard its HELLO is not an auth failure.
    let mut h = Harness::current(0);
    h.close();
    assert!(!h.take().contains(&Ev::AuthFailed));
}

#[test]
fn without_correlation_one_request_per_type() {
    let mut h = Harness::legacy();
    let (a, fa) = h.request(0, &begin(), 0).unwrap();
    assert_eq!(label_of(&fa), None);
    assert_eq!(h.request(0, &begin(), 0).err(), Some(RequestError::Busy), "never FIFO-pipelined");
    let (b, _) = h.request(0, &get(), 0).unwrap();
    h.frame(1, &reply(MsgType::KV_GET, None, Reply::Ok(kv::GetOk { value: None }))).unwrap();
    h.frame(2, &reply(MsgType::KV_BEGIN, None, Reply::Ok(kv::BeginOk { tx_id: 9 }))).unwrap();
    let evs = h.take();
    assert!(matches!(&evs[0], Ev::Reply(id, MsgType::KV_GET, _) if *id == b));
    match &evs[1] {
        Ev::Reply(id, MsgType::KV_BEGIN, p) => {
            assert_eq!(*id, a);
            assert_eq!(kv::decode_begin_reply(p).unwrap(), Reply::Ok(kv::BeginOk { tx_id: 9 }));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(h.s.in_use(), 0);
    assert!(h.request(0, &begin(), 0).is_ok(), "the type is free again");
}

#[test]
fn with_correlation_same_type_requests_pipeline_and_match_by_label() {
    let mut h = Harness::current(Capabilities::CORRELATION.0);
    let (a, fa) = h.request(0, &begin(), 0).unwrap();
    let (b, fb) = h.request(0, &begin(), 0).unwrap();
    let (la, lb) = (label_of(&fa).unwrap(), label_of(&fb).unwrap());
    assert_ne!(la, lb);
    // A label that matches no request is passed on, never given to another.
    h.frame(1, &reply(MsgType::KV_BEGIN, Some(la ^ 0xFFFF_0000), Reply::Ok(kv::BeginOk { tx_id: 0 }))).unwrap();
    assert!(matches!(&h.take()[..], [Ev::Push(MsgType::KV_BEGIN, _)]));
    // Replies out of order, each labelled with its request's value.
    h.frame(1, &reply(MsgType::KV_BEGIN, Some(lb), Reply::Ok(kv::BeginOk { tx_id: 2 }))).unwrap();
    h.frame(2, &reply(MsgType::KV_BEGIN, Some(la), Reply::Ok(kv::BeginOk { tx_id: 1 }))).unwrap();
    let evs = h.take();
    fn tx(e: &Ev) -> (RequestId, Reply<'_, kv::BeginOk>) {
        match e {
            Ev::Reply(id, _, p) => (*id, kv::decode_begin_reply(p).unwrap()),
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(tx(&evs[0]), (b, Reply::Ok(kv::BeginOk { tx_id: 2 })));
    assert_eq!(tx(&evs[1]), (a, Reply::Ok(kv::BeginOk { tx_id: 1 })));
    // Types that have no reply are never labelled.
    let n = h.s.send(&fitz_wire::notice::Publish { route: "notice://a/b/c", body: b"x" }, &mut h.out).unwrap();
    assert_eq!(label_of(&h.out[..n]), None);
}

#[test]
fn reply_of_another_type_under_a_label_is_a_protocol_error() {
    let mut h = Harness::current(Capabilities::CORRELATION.0);
    let (_, f) = h.request(0, &begin(), 0).unwrap();
    let l = label_of(&f);
    let bad = reply(MsgType::KV_GET, l, Reply::Ok(kv::GetOk { value: None }));
    assert!(matches!(h.frame(1, &bad), Err(ProtocolError::LabelTypeMismatch { .. })));
}

#[test]
fn timed_out_request_leaves_a_tombstone_that_swallows_the_late_reply() {
    let mut h = Harness::legacy();
    let (a, _) = h.request(0, &begin(), 500).unwrap();
    assert_eq!(h.s.poll_timeout(), Some(500));
    h.timeout(499).unwrap();
    assert!(h.take().is_empty());
    h.timeout(500).unwrap();
    assert_eq!(h.take(), vec![Ev::Failed(a, FailReason::TimedOut)]);
    assert_eq!(h.s.poll_timeout(), None);
    // The tombstone keeps the type busy: a new BEGIN must not receive the old reply.
    assert_eq!(h.request(600, &begin(), 0).err(), Some(RequestError::Busy));
    h.frame(700, &reply(MsgType::KV_BEGIN, None, Reply::Ok(kv::BeginOk { tx_id: 1 }))).unwrap();
    assert!(h.take().is_empty(), "the late reply is swallowed");
    assert_eq!(h.s.in_use(), 0);
    assert!(h.request(800, &begin(), 0).is_ok());
}

#[test]
fn cancelled_labelled_request_keeps_its_value_but_not_its_type() {
    let mut h = Harness::current(Capabilities::CORRELATION.0);
    let (a, fa) = h.request(0, &begin(), 0).unwrap();
    h.s.cancel(a);
    let (b, fb) = h.request(0, &begin(), 0).unwrap();
    assert_ne!(label_of(&fa), label_of(&fb), "the cancelled value stays reserved");
    h.frame(1, &reply(MsgType::KV_BEGIN, label_of(&fa), Reply::Ok(kv::BeginOk { tx_id: 1 }))).unwrap();
    assert!(h.take().is_empty());
    h.frame(2, &reply(MsgType::KV_BEGIN, label_of(&fb), Reply::Ok(kv::BeginOk { tx_id: 2 }))).unwrap();
    assert!(matches!(&h.take()[..], [Ev::Reply(id, ..)] if *id == b));
}

#[test]
fn connection_loss_fails_pending_requests_and_old_ids_go_stale() {
    let mut h = Harness::legacy();
    let (a, _) = h.request(0, &begin(), 0).unwrap();
    let (b, _) = h.request(0, &get(), 0).unwrap();
    h.frame(1, &reply(MsgType::KV_GET, None, Reply::Ok(kv::GetOk { value: None }))).unwrap();
    h.take();
    let epoch = h.s.epoch();
    h.close();
    let evs = h.take();
    assert!(evs.contains(&Ev::Failed(a, FailReason::ConnectionLost)));
    assert!(!evs.iter().any(|e| matches!(e, Ev::Failed(id, _) if *id == b)), "b had completed");
    assert_eq!(h.s.state(), State::Reconnecting);
    h.connect(10);
    assert_ne!(h.s.epoch(), epoch);
    h.timeout(1010).unwrap();
    h.take();
    let (c, _) = h.request(1010, &begin(), 0).unwrap();
    h.s.cancel(a); // a stale id does nothing
    h.frame(1011, &reply(MsgType::KV_BEGIN, None, Reply::Ok(kv::BeginOk { tx_id: 5 }))).unwrap();
    assert!(matches!(&h.take()[..], [Ev::Reply(id, ..)] if *id == c));
}

#[test]
fn queued_lease_acquire_keeps_its_slot_until_the_deferred_frame() {
    let mut h = Harness::legacy();
    let acq = lease::Acquire { route: "lease://a/b/c", owner_id: "o", ttl_secs: 10, wait_seconds: 5 };
    let (a, _) = h.request(0, &acq, 0).unwrap();
    let queued = AcquireOk { status: AcquireStatus::Queued, fencing_token: 0 };
    h.frame(1, &reply(MsgType::LEASE_ACQUIRE, None, Reply::Ok(queued))).unwrap();
    assert!(matches!(&h.take()[..], [Ev::Reply(id, MsgType::LEASE_ACQUIRE, _)] if *id == a));
    assert_eq!(h.request(2, &acq, 0).err(), Some(RequestError::Busy), "ACQUIRE is serialised");
    let granted = AcquireOk { status: AcquireStatus::Acquired, fencing_token: 7 };
    h.frame(3, &reply(MsgType::LEASE_ACQUIRE, None, Reply::Ok(granted))).unwrap();
    match &h.take()[..] {
        [Ev::Reply(id, _, p)] => {
            assert_eq!(*id, a);
            assert_eq!(lease::decode_acquire_deferred(p).unwrap(), Reply::Ok(granted));
        }
        e => panic!("{e:?}"),
    }
    assert!(h.request(4, &acq, 0).is_ok());
}

#[test]
fn pushes_are_routed_out_and_capacity_is_bounded() {
    let mut h = Harness::legacy();
    let n = kv::Notify { sub_id: 3, route: R, mutation_count: 1 };
    let mut f = vec![0u8; fitz_wire::record::encoded_len(&n)];
    fitz_wire::record::encode(&n, &mut f).unwrap();
    h.frame(1, &f).unwrap();
    assert!(matches!(&h.take()[..], [Ev::Push(MsgType::KV_NOTIFY, _)]));
    // An unsolicited reply with no request is passed on, not matched.
    h.frame(2, &reply(MsgType::KV_BEGIN, None, Reply::Ok(kv::BeginOk { tx_id: 1 }))).unwrap();
    assert!(matches!(&h.take()[..], [Ev::Push(MsgType::KV_BEGIN, _)]));
    // Four slots: a fifth request of a distinct type is refused.
    for m in [MsgType::KV_GET, MsgType::KV_PUT, MsgType::KV_DELETE, MsgType::KV_SCAN] {
        h.request(3, &fitz_wire::Record { msg_type: m, payload: &[] }, 0).unwrap();
    }
    assert_eq!(h.request(3, &begin(), 0).err(), Some(RequestError::Capacity));
}

#[test]
fn deadlines_come_due_in_order_however_requests_end() {
    // Four labelled requests with deadlines out of order.
    let mut h = Harness::current(Capabilities::CORRELATION.0);
    let mut ids = Vec::new();
    for (i, t) in [300u64, 100, 400, 200].into_iter().enumerate() {
        let (id, f) = h.request(0, &begin(), t).unwrap();
        ids.push((id, label_of(&f), i));
    }
    assert_eq!(h.s.poll_timeout(), Some(100));
    // The earliest is answered: the next deadline is the next one armed.
    let (_, l, _) = ids[1];
    h.frame(1, &reply(MsgType::KV_BEGIN, l, Reply::Ok(kv::BeginOk { tx_id: 1 }))).unwrap();
    assert_eq!(h.s.poll_timeout(), Some(200));
    // A cancelled request's deadline no longer counts.
    h.s.cancel(ids[3].0);
    assert_eq!(h.s.poll_timeout(), Some(300));
    // Requests that start and end, with deadlines before and after the
    // armed ones: an ended request leaves the heap wherever it sits in it,
    // and the answer stays exact.
    for n in 0..50u64 {
        let timeout = if n % 2 == 0 { 10 } else { 1000 + n };
        let (id, f) = h.request(2 + n, &begin(), timeout).unwrap();
        let expect = if n % 2 == 0 { 12 + n } else { 300 };
        assert_eq!(h.s.poll_timeout(), Some(expect));
        let l = label_of(&f);
        h.frame(3 + n, &reply(MsgType::KV_BEGIN, l, Reply::Ok(kv::BeginOk { tx_id: 2 }))).unwrap();
        assert!(h.take().iter().any(|e| matches!(e, Ev::Reply(r, ..) if *r == id)));
        assert_eq!(h.s.poll_timeout(), Some(300));
    }
    // Only the two requests still armed time out, each at its deadline.
    h.timeout(299).unwrap();
    assert!(h.take().is_empty());
    h.timeout(300).unwrap();
    assert_eq!(h.take(), vec![Ev::Failed(ids[0].0, FailReason::TimedOut)]);
    assert_eq!(h.s.poll_timeout(), Some(400));
    h.timeout(1000).unwrap();
    assert_eq!(h.take(), vec![Ev::Failed(ids[2].0, FailReason::TimedOut)]);
    assert_eq!(h.s.poll_timeout(), None);
}

/// Operations on a session with 4 labelled slots, for the model test.
#[derive(Debug, Clone)]
enum Op {
    Request(u64),
    Reply(usize),
    Cancel(usize),
    Advance(u64),
    LateReply(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (0u64..500).prop_map(Op::Request),
        (0usize..4).prop_map(Op::Reply),
        (0usize..4).prop_map(Op::Cancel),
        (0u64..200).prop_map(Op::Advance),
        (0usize..4).prop_map(Op::LateReply),
    ]
}

proptest::proptest! {
    /// The next deadline and the requests that time out are exactly those
    /// of a plain list of the pending requests, whatever the order in which
    /// requests start, are answered, cancelled or time out.
    #[test]
    fn deadlines_match_a_plain_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::current(Capabilities::CORRELATION.0);
        let mut now = 10u64;
        // (id, label, deadline or 0) of requests still waiting.
        let mut model: Vec<(RequestId, Option<u64>, u64)> = Vec::new();
        // Labels of cancelled or timed-out requests (tombstones).
        let mut tombs: Vec<Option<u64>> = Vec::new();
        for op in ops {
            match op {
                Op::Request(t) => {
                    if let Ok((id, f)) = h.request(now, &get(), t) {
                        model.push((id, label_of(&f), if t == 0 { 0 } else { now + t }));
                    }
                }
                Op::Reply(i) if i < model.len() => {
                    let (id, l, _) = model.remove(i);
                    h.frame(now, &reply(MsgType::KV_GET, l, Reply::Ok(kv::GetOk { value: None }))).unwrap();
                    let replied = h.take().iter().any(|e| matches!(e, Ev::Reply(r, ..) if *r == id));
                    proptest::prop_assert!(replied);
                }
                Op::Cancel(i) if i < model.len() => {
                    let (id, l, _) = model.remove(i);
                    h.s.cancel(id);
                    tombs.push(l);
                }
                Op::LateReply(i) if i < tombs.len() => {
                    let l = tombs.remove(i);
                    h.frame(now, &reply(MsgType::KV_GET, l, Reply::Ok(kv::GetOk { value: None }))).unwrap();
                    let delivered = h.take().iter().any(|e| matches!(e, Ev::Reply(..)));
                    proptest::prop_assert!(!delivered, "a late reply reached nobody");
                }
                Op::Advance(d) => {
                    now += d;
                    h.timeout(now).unwrap();
                    let mut failed: Vec<RequestId> = h
                        .take()
                        .into_iter()
                        .filter_map(|e| match e { Ev::Failed(id, FailReason::TimedOut) => Some(id), _ => None })
                        .collect();
                    let mut due: Vec<RequestId> =
                        model.iter().filter(|m| m.2 != 0 && m.2 <= now).map(|m| m.0).collect();
                    failed.sort_by_key(|id| id.slot());
                    due.sort_by_key(|id| id.slot());
                    proptest::prop_assert_eq!(failed, due);
                    tombs.extend(model.iter().filter(|m| m.2 != 0 && m.2 <= now).map(|m| m.1));
                    model.retain(|m| m.2 == 0 || m.2 > now);
                }
                Op::Reply(_) | Op::Cancel(_) | Op::LateReply(_) => {}
            }
            let expect = model.iter().filter(|m| m.2 != 0).map(|m| m.2).min();
            proptest::prop_assert_eq!(h.s.poll_timeout(), expect);
        }
    }
}
