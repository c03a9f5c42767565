//! RPC domain (BROKER.md §6, §15.5) over raw frames.
#![allow(missing_docs, clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use core::time::Duration;
use std::time::Instant;

use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, ClockMode, CurrentDialect, JwtConfig};
use fitz_wire::rpc::{
    self, BudgetExtension, CancelReason, CancelStatus, IngressError, RegistrationOk, Response, RpcCancel, RpcLifecycle,
    SignalReason, SubscribeWorker, TerminalError, UnsubscribeWorker, WorkerExtension,
};
use fitz_wire::{Capabilities, Dialect, MsgType, Payload, Reply, ServerError, Uuid};
use support::{Raw, current, legacy};

const ROUTE: &str = "rpc://acme/app/echo";

fn uid(n: u8) -> Uuid {
    Uuid([n; 16])
}

/// The raw reply payload to a 300/301 and its decoded code.
async fn registration_reply(c: &mut Raw, ty: MsgType) -> Result<Vec<u8>, u32> {
    let rec = Box::pin(c.recv_type(ty)).await.expect("registration reply");
    match rpc::decode_subscribe_worker_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => {
            assert_eq!(ok, RegistrationOk::EmptyData);
            Ok(rec.payload)
        }
        Reply::Err(e) => Err(e.code.expect("coded error")),
    }
}

async fn register_with(c: &mut Raw, pattern: &str, credit: u32, ext: bool) -> Result<(), u32> {
    let extension = ext.then_some(WorkerExtension);
    c.send(&SubscribeWorker { pattern, max_concurrent: credit, extension }).await;
    let payload = registration_reply(c, MsgType::RPC_SUBSCRIBE_WORKER).await?;
    assert_eq!(payload, [0, 0, 0, 0, 0], "OK is the status byte and an empty bytes");
    Ok(())
}

async fn register(c: &mut Raw, pattern: &str, credit: u32) -> Result<(), u32> {
    register_with(c, pattern, credit, false).await
}

async fn unregister(c: &mut Raw, pattern: &str) -> Result<(), u32> {
    c.send(&UnsubscribeWorker { pattern }).await;
    let payload = registration_reply(c, MsgType::RPC_UNSUBSCRIBE_WORKER).await?;
    assert_eq!(payload, [0, 0, 0, 0, 0]);
    Ok(())
}

/// Waits until the broker has processed everything `c` sent before.
async fn sync(c: &mut Raw) {
    unregister(c, "rpc://sync/barrier").await.unwrap();
}

async fn call(c: &mut Raw, id: Uuid, route: &str, body: &[u8]) {
    c.send(&rpc::Request { correlation_id: id, route, body, budget: None }).await;
}

/// A 302 delivered to a worker: (uuid, route, body, budget).
#[derive(Debug)]
struct Delivered {
    id: Uuid,
    route: String,
    body: Vec<u8>,
    budget: Option<u32>,
}

async fn recv_request(w: &mut Raw) -> Delivered {
    let rec = Box::pin(w.recv_type(MsgType::RPC_REQUEST)).await.expect("a 302 delivery");
    let r = rpc::Request::decode_with(&rec.payload, true).unwrap();
    Delivered {
        id: r.correlation_id,
        route: r.route.to_owned(),
        body: r.body.to_vec(),
        budget: r.budget.map(|b| b.remaining_budget_ms()),
    }
}

/// A 303 received: (uuid, sequence, stream_end, body).
async fn recv_response(c: &mut Raw) -> (Uuid, u64, bool, Vec<u8>) {
    let rec = Box::pin(c.recv_type(MsgType::RPC_RESPONSE)).await.expect("a 303 frame");
    let r = Response::decode(&rec.payload).unwrap();
    (r.correlation_id, r.sequence, r.stream_end(), r.body.to_vec())
}

/// A broker-generated terminal error: asserts sequence 0 and the end flag,
/// returns (uuid, code).
async fn recv_terminal(c: &mut Raw) -> (Uuid, u32) {
    let rec = Box::pin(c.recv_type(MsgType::RPC_RESPONSE)).await.expect("a terminal 303 frame");
    let r = Response::decode(&rec.payload).unwrap();
    assert_eq!((r.sequence, r.stream_end()), (0, true), "terminal errors are seq 0 + end");
    let e = r.terminal_error().expect("a terminal error body");
    (r.correlation_id, e.code.unwrap())
}

async fn recv_lifecycle(c: &mut Raw) -> RpcLifecycle {
    let rec = Box::pin(c.recv_type(MsgType::RPC_LIFECYCLE)).await.expect("a 305 frame");
    assert_eq!(rec.label, None);
    RpcLifecycle::decode(&rec.payload).unwrap()
}

async fn respond(w: &mut Raw, id: Uuid, seq: u64, end: bool, body: &[u8]) {
    let r = if end { Response::last(id, seq, body) } else { Response::chunk(id, seq, body) };
    w.send(&r).await;
}

/// Waits until the broker has cleaned up after a dropped connection.
async fn wait_sessions(b: &Broker, n: usize) {
    for _ in 0..200 {
        if b.session_count() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session count stayed {} (expected {n})", b.session_count());
}

async fn manual(dialect: Dialect) -> Broker {
    Broker::start(BrokerConfig::anonymous().with_dialect(dialect).with_clock(ClockMode::Manual)).await.unwrap()
}

/// A record with any type and payload bytes (malformed ones included).
struct RawRec<'a>(MsgType, &'a [u8]);

impl fitz_wire::Encode for RawRec<'_> {
    fn msg_type(&self) -> MsgType {
        self.0
    }
    fn payload_len(&self) -> usize {
        self.1.len()
    }
    fn write_payload<S: fitz_wire::Sink + ?Sized>(&self, out: &mut S) {
        out.put(self.1);
    }
}

// The raw client's reads hold a 64 KiB buffer; boxing them keeps the test
// futures (pinned on the test thread's stack) small.
async fn next_rec(c: &mut Raw) -> Option<support::Rec> {
    Box::pin(c.recv_one()).await
}

/// Nothing arrives within 200 ms and the connection stays open.
async fn is_quiet(c: &mut Raw) -> bool {
    Box::pin(c.quiet_for(Duration::from_millis(200))).await
}

async fn is_closed(c: &mut Raw) -> bool {
    Box::pin(c.closed()).await
}

// --- BROKER.md §14 RPC checklist -------------------------------------------

#[tokio::test]
async fn echo() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, "rpc://acme/app/*", 1).await.unwrap();
    call(&mut c, uid(1), ROUTE, b"ping").await;
    let d = recv_request(&mut w).await;
    assert_eq!((d.id, d.route.as_str(), d.body.as_slice(), d.budget), (uid(1), ROUTE, &b"ping"[..], None));
    respond(&mut w, d.id, 0, true, b"pong").await;
    // Successful submission is silent: the first frame is the response.
    let rec = next_rec(&mut c).await.unwrap();
    assert_eq!(rec.msg_type, MsgType::RPC_RESPONSE);
    let r = Response::decode(&rec.payload).unwrap();
    assert_eq!(r, Response::last(uid(1), 0, b"pong"));
    assert!(is_quiet(&mut w).await, "the worker gets no reply to its RESPONSE");
}

#[tokio::test]
async fn three_frame_stream_and_empty_end_keep_sequences() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 1).await.unwrap();
    call(&mut c, uid(2), ROUTE, b"count").await;
    let d = recv_request(&mut w).await;
    for (seq, body) in [(0, &b"a"[..]), (1, b"b"), (2, b"c")] {
        respond(&mut w, d.id, seq, false, body).await;
    }
    respond(&mut w, d.id, 3, true, b"").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(recv_response(&mut c).await);
    }
    assert_eq!(
        got,
        vec![
            (uid(2), 0, false, b"a".to_vec()),
            (uid(2), 1, false, b"b".to_vec()),
            (uid(2), 2, false, b"c".to_vec()),
            (uid(2), 3, true, Vec::new()),
        ]
    );
    // The call is over: another chunk is for an unknown correlation.
    respond(&mut w, d.id, 4, true, b"late").await;
    assert_eq!(recv_terminal(&mut w).await, (uid(2), 6005));
}

#[tokio::test]
async fn no_worker_gives_6004_immediately() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let started = Instant::now();
    call(&mut c, uid(3), "rpc://acme/app/nobody", b"x").await;
    let rec = next_rec(&mut c).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    assert_eq!(rec.msg_type, MsgType::RPC_RESPONSE);
    let r = Response::decode(&rec.payload).unwrap();
    assert_eq!((r.correlation_id, r.sequence, r.stream_end()), (uid(3), 0, true));
    assert_eq!(r.terminal_error(), Some(ServerError::coded(6004, "No workers registered for route")));
    // Byte for byte the frame of WIRE.md §12.4.
    let expected = TerminalError::new(6004, "No workers registered for route").unwrap().response(uid(3), 0);
    let mut buf = vec![0u8; expected.payload_len()];
    let mut sw = fitz_wire::SliceWriter::new(&mut buf);
    expected.write_payload(&mut sw);
    assert_eq!(rec.payload, buf);
    // A registration in another route does not match.
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, "rpc://acme/other/*", 1).await.unwrap();
    call(&mut c, uid(4), "rpc://acme/app/nobody", b"x").await;
    assert_eq!(recv_terminal(&mut c).await, (uid(4), 6004));
    assert!(is_quiet(&mut w).await);
}

#[tokio::test]
async fn two_workers_share_calls() {
    let b = legacy().await;
    let mut w1 = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut w2 = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    // Exact and wildcard registrations are equal candidates.
    register(&mut w1, ROUTE, 1).await.unwrap();
    register(&mut w2, "rpc://**", 1).await.unwrap();
    for n in 1..=4 {
        call(&mut c, uid(n), ROUTE, &[n]).await;
    }
    let (mut n1, mut n2) = (0, 0);
    for _ in 0..2 {
        let d = recv_request(&mut w1).await;
        respond(&mut w1, d.id, 0, true, &d.body).await;
        n1 += 1;
        let d = recv_request(&mut w2).await;
        respond(&mut w2, d.id, 0, true, &d.body).await;
        n2 += 1;
    }
    assert_eq!((n1, n2), (2, 2));
    let mut ids: Vec<u8> = Vec::new();
    for _ in 0..4 {
        let (id, _, end, body) = recv_response(&mut c).await;
        assert!(end);
        assert_eq!(body, vec![id.0[0]]);
        ids.push(id.0[0]);
    }
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn concurrent_calls_are_correlated_by_uuid() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, "rpc://acme/*/*", 8).await.unwrap();
    for n in 10..13u8 {
        call(&mut c, uid(n), ROUTE, &[n]).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(recv_request(&mut w).await);
    }
    // Answer in reverse order.
    for d in got.iter().rev() {
        let mut body = b"re:".to_vec();
        body.extend_from_slice(&d.body);
        respond(&mut w, d.id, 0, true, &body).await;
    }
    for _ in 0..3 {
        let (id, seq, end, body) = recv_response(&mut c).await;
        assert_eq!((seq, end), (0, true));
        assert_eq!(body, [&b"re:"[..], &[id.0[0]]].concat());
    }
}

#[tokio::test]
async fn unregister_stops_routing() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, "rpc://acme/app/*", 2).await.unwrap();
    call(&mut c, uid(20), ROUTE, b"in flight").await;
    let d = recv_request(&mut w).await;
    unregister(&mut w, "rpc://acme/app/*").await.unwrap();
    // The dispatched call's caller gets 6002; the worker's late answer 6005.
    assert_eq!(recv_terminal(&mut c).await, (uid(20), 6002));
    respond(&mut w, d.id, 0, true, b"late").await;
    assert_eq!(recv_terminal(&mut w).await, (uid(20), 6005));
    // No new routing to it.
    call(&mut c, uid(21), ROUTE, b"x").await;
    assert_eq!(recv_terminal(&mut c).await, (uid(21), 6004));
    assert!(is_quiet(&mut w).await);
    // Idempotent.
    unregister(&mut w, "rpc://acme/app/*").await.unwrap();
    unregister(&mut w, "rpc://never/registered").await.unwrap();
}

#[tokio::test]
async fn second_call_queues_behind_busy_credit_one_worker() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 1).await.unwrap();
    call(&mut c, uid(30), ROUTE, b"first").await;
    call(&mut c, uid(31), ROUTE, b"second").await;
    let d = recv_request(&mut w).await;
    assert_eq!(d.id, uid(30));
    assert!(is_quiet(&mut w).await, "credit 1: the second call waits");
    respond(&mut w, d.id, 0, true, b"1").await;
    let d = recv_request(&mut w).await;
    assert_eq!((d.id, d.body.as_slice()), (uid(31), &b"second"[..]));
    respond(&mut w, d.id, 0, true, b"2").await;
    assert_eq!(recv_response(&mut c).await, (uid(30), 0, true, b"1".to_vec()));
    assert_eq!(recv_response(&mut c).await, (uid(31), 0, true, b"2".to_vec()));
}

#[tokio::test]
async fn caller_disconnect_has_no_fallout_and_late_response_gets_6005() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 1).await.unwrap();
    call(&mut c, uid(40), ROUTE, b"dispatched").await;
    call(&mut c, uid(41), ROUTE, b"queued").await;
    let d = recv_request(&mut w).await;
    assert_eq!(d.id, uid(40));
    drop(c);
    wait_sessions(&b, 1).await;
    assert!(is_quiet(&mut w).await, "nothing is sent to the worker");
    respond(&mut w, d.id, 0, true, b"late").await;
    assert_eq!(recv_terminal(&mut w).await, (uid(40), 6005));
    // The queued call was discarded, and the credit is free for others.
    let mut c2 = Raw::connect(b.tcp_addr().unwrap(), "").await;
    call(&mut c2, uid(42), ROUTE, b"next").await;
    let d = recv_request(&mut w).await;
    assert_eq!(d.id, uid(42));
    respond(&mut w, d.id, 0, true, b"ok").await;
    assert_eq!(recv_response(&mut c2).await, (uid(42), 0, true, b"ok".to_vec()));
}

#[tokio::test]
async fn worker_failure_body_is_forwarded_as_is() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 2).await.unwrap();
    // fitz-py: a coded 6010 body; fitz-ts: plain text.
    let mut coded = vec![0u8; 64];
    let coded = TerminalError::new(6010, "handler failed: boom").unwrap().write_body(&mut coded).unwrap().to_vec();
    call(&mut c, uid(50), ROUTE, b"a").await;
    call(&mut c, uid(51), ROUTE, b"b").await;
    let d1 = recv_request(&mut w).await;
    let d2 = recv_request(&mut w).await;
    respond(&mut w, d1.id, 0, true, &coded).await;
    respond(&mut w, d2.id, 0, true, b"Error: plain failure").await;
    let rec = Box::pin(c.recv_type(MsgType::RPC_RESPONSE)).await.unwrap();
    let r = Response::decode(&rec.payload).unwrap();
    assert_eq!(r.body, coded.as_slice());
    assert_eq!(r.terminal_error(), Some(ServerError::coded(6010, "handler failed: boom")));
    assert_eq!(recv_response(&mut c).await, (uid(51), 0, true, b"Error: plain failure".to_vec()));
}

// --- failures --------------------------------------------------------------

#[tokio::test]
async fn worker_disconnect_gives_6002() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 1).await.unwrap();
    call(&mut c, uid(60), ROUTE, b"x").await;
    call(&mut c, uid(61), ROUTE, b"queued").await;
    recv_request(&mut w).await;
    drop(w);
    assert_eq!(recv_terminal(&mut c).await, (uid(60), 6002));
    // The queued call has no worker left at all.
    assert_eq!(recv_terminal(&mut c).await, (uid(61), 6004));
    call(&mut c, uid(62), ROUTE, b"x").await;
    assert_eq!(recv_terminal(&mut c).await, (uid(62), 6004));
}

#[tokio::test]
async fn invalid_call_route_gives_6011() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, "rpc://**", 4).await.unwrap();
    for (n, route) in ["rpc://acme/*/echo", "rpc://acme/**", "rpc://acme//echo", "kv://acme/app/echo", "acme/app"]
        .into_iter()
        .enumerate()
    {
        let id = uid(70 + n as u8);
        call(&mut c, id, route, b"x").await;
        assert_eq!(recv_terminal(&mut c).await, (id, 6011), "{route}");
    }
    assert!(is_quiet(&mut w).await);
    // Any depth is fine.
    call(&mut c, uid(79), "rpc://a", b"x").await;
    assert_eq!(recv_request(&mut w).await.route, "rpc://a");
}

#[tokio::test]
async fn duplicate_live_uuid_gives_6007() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 1).await.unwrap();
    call(&mut c, uid(80), ROUTE, b"first").await;
    let d = recv_request(&mut w).await;
    call(&mut c, uid(80), ROUTE, b"again").await;
    assert_eq!(recv_terminal(&mut c).await, (uid(80), 6007));
    assert!(is_quiet(&mut w).await);
    respond(&mut w, d.id, 0, true, b"done").await;
    assert_eq!(recv_response(&mut c).await, (uid(80), 0, true, b"done".to_vec()));
    // Finished: the UUID may be used again.
    call(&mut c, uid(80), ROUTE, b"third").await;
    assert_eq!(recv_request(&mut w).await.body, b"third");
}

#[tokio::test]
async fn response_checks_owner_and_sequence() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut other = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 1).await.unwrap();
    call(&mut c, uid(85), ROUTE, b"x").await;
    let d = recv_request(&mut w).await;
    respond(&mut other, d.id, 0, true, b"not mine").await;
    assert_eq!(recv_terminal(&mut other).await, (uid(85), 6008));
    respond(&mut w, d.id, 1, true, b"skipped 0").await;
    assert_eq!(recv_terminal(&mut w).await, (uid(85), 6006));
    respond(&mut other, uid(99), 0, true, b"?").await;
    assert_eq!(recv_terminal(&mut other).await, (uid(99), 6005));
    // None of that reached the caller; the call still completes.
    respond(&mut w, d.id, 0, true, b"ok").await;
    assert_eq!(recv_response(&mut c).await, (uid(85), 0, true, b"ok".to_vec()));
}

#[tokio::test]
async fn broker_deadline_gives_6001() {
    let b = manual(Dialect::Legacy).await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    register(&mut w, ROUTE, 1).await.unwrap();
    call(&mut c, uid(90), ROUTE, b"slow").await;
    let d = recv_request(&mut w).await;
    b.advance(Duration::from_secs(10));
    call(&mut c, uid(91), ROUTE, b"queued").await;
    sync(&mut c).await;
    b.advance(Duration::from_millis(19_999));
    assert!(is_quiet(&mut c).await);
    b.advance(Duration::from_millis(1));
    assert_eq!(recv_terminal(&mut c).await, (uid(90), 6001));
    // The queued call was dispatched once the timed-out one freed the credit.
    let d2 = recv_request(&mut w).await;
    assert_eq!(d2.id, uid(91));
    respond(&mut w, d.id, 0, true, b"late").await;
    assert_eq!(recv_terminal(&mut w).await, (uid(90), 6005));
    // 30 s after its own receipt the second call times out as well.
    b.advance(Duration::from_secs(10));
    assert_eq!(recv_terminal(&mut c).await, (uid(91), 6001));
}

// --- registration ----------------------------------------------------------

#[tokio::test]
async fn registration_validation_idempotence_and_quota() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for credit in [0, 1025] {
        assert_eq!(register(&mut w, ROUTE, credit).await, Err(6012), "credit {credit}");
    }
    for p in ["rpc://acme/ec*", "rpc://acme/**/**", "kv://acme/app/echo", "rpc://acme//echo", "rpc://", "acme/app"] {
        assert_eq!(register(&mut w, p, 1).await, Err(6012), "{p}");
    }
    assert_eq!(register(&mut w, "rpc://*/app/**", 1024).await, Ok(()));
    // Re-registration keeps the original credit (1).
    register(&mut w, ROUTE, 1).await.unwrap();
    register(&mut w, ROUTE, 5).await.unwrap();
    unregister(&mut w, "rpc://*/app/**").await.unwrap();
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    call(&mut c, uid(1), ROUTE, b"a").await;
    call(&mut c, uid(2), ROUTE, b"b").await;
    recv_request(&mut w).await;
    assert!(is_quiet(&mut w).await, "credit stayed 1");
    // 128 wildcard registrations, then the 129th is refused (a duplicate is not).
    for n in 0..127 {
        register(&mut w, &format!("rpc://w{n}/*"), 1).await.unwrap();
    }
    register(&mut w, "rpc://last/**", 1).await.unwrap();
    assert_eq!(register(&mut w, "rpc://one/more/*", 1).await, Err(6013));
    assert_eq!(register(&mut w, "rpc://last/**", 1).await, Ok(()));
    // Exact ones count only towards the total of 1,024.
    for n in 0..(1024 - 128 - 1) {
        w.send(&SubscribeWorker { pattern: &format!("rpc://e/{n}"), max_concurrent: 1, extension: None }).await;
    }
    for _ in 0..(1024 - 128 - 1) {
        registration_reply(&mut w, MsgType::RPC_SUBSCRIBE_WORKER).await.unwrap();
    }
    assert_eq!(register(&mut w, "rpc://e/1024th", 1).await, Err(6013));
}

#[tokio::test]
async fn jwt_session_without_rpc_all_cannot_register() {
    let cfg = BrokerConfig::anonymous().with_auth(AuthMode::Jwt(JwtConfig::official("dev-test-secret")));
    let b = Broker::start(cfg).await.unwrap();
    let addr = b.tcp_addr().unwrap();
    let spec = TokenSpec::official();
    let mut limited = Raw::connect(addr, &spec.clone().with_permissions(&["kv://**#*", "rpc://**#write"]).sign()).await;
    assert_eq!(register(&mut limited, ROUTE, 1).await, Err(6009));
    assert_eq!(unregister(&mut limited, ROUTE).await, Err(6009));
    let mut w = Raw::connect(addr, &spec.sign()).await;
    register(&mut w, ROUTE, 1).await.unwrap();
    // `#write` is enough to call.
    call(&mut limited, uid(5), ROUTE, b"x").await;
    let d = recv_request(&mut w).await;
    respond(&mut w, d.id, 0, true, b"y").await;
    assert_eq!(recv_response(&mut limited).await, (uid(5), 0, true, b"y".to_vec()));
    // A denied REQUEST is a coded error frame of type 302, not a 303.
    let mut reader = Raw::connect(addr, &spec.with_permissions(&["rpc://**#read"]).sign()).await;
    call(&mut reader, uid(6), ROUTE, b"x").await;
    let rec = next_rec(&mut reader).await.unwrap();
    assert_eq!(rec.msg_type, MsgType::RPC_REQUEST);
    let e = IngressError::decode(&rec.payload).unwrap();
    assert_eq!((e.code, e.message), (6009, "unauthorized: permission denied"));
    assert!(is_quiet(&mut w).await);
}

async fn echo_via(w: &mut Raw, good: &mut Raw, n: u8) {
    call(good, uid(n), ROUTE, b"ping").await;
    let d = recv_request(w).await;
    respond(w, d.id, 0, true, b"pong").await;
    assert_eq!(recv_response(good).await, (uid(n), 0, true, b"pong".to_vec()));
}

#[tokio::test]
async fn malformed_rpc_frames_close_or_are_answered_per_session() {
    let b = legacy().await;
    let addr = b.tcp_addr().unwrap();
    let mut w = Raw::connect(addr, "").await;
    register(&mut w, ROUTE, 4).await.unwrap();
    let mut good = Raw::connect(addr, "").await;
    // REQUEST whose UUID cannot be read: a coded error frame of type 302.
    let mut bad = Raw::connect(addr, "").await;
    bad.send(&RawRec(MsgType::RPC_REQUEST, &[1u8, 2, 3][..])).await;
    let rec = next_rec(&mut bad).await.unwrap();
    assert_eq!(rec.msg_type, MsgType::RPC_REQUEST);
    assert_eq!(IngressError::decode(&rec.payload).unwrap().code, 6010);
    // UUID readable, rest malformed: terminal 6010 for that UUID.
    let mut p = uid(7).0.to_vec();
    p.extend_from_slice(&[0, 0, 0, 50, b'r']);
    bad.send(&RawRec(MsgType::RPC_REQUEST, p.as_slice())).await;
    assert_eq!(recv_terminal(&mut bad).await, (uid(7), 6010));
    // A legacy REQUEST with a budget extension is malformed too.
    let ext = rpc::Request {
        correlation_id: uid(8),
        route: ROUTE,
        body: b"",
        budget: Some(BudgetExtension::new(1000).unwrap()),
    };
    bad.send(&ext).await;
    assert_eq!(recv_terminal(&mut bad).await, (uid(8), 6010));
    assert!(is_quiet(&mut w).await);
    echo_via(&mut w, &mut good, 100).await;
    // Records that cannot be answered close only their session.
    for frame in [
        RawRec(MsgType::RPC_RESPONSE, &[1u8, 2, 3][..]),
        RawRec(MsgType::RPC_CANCEL, &[1u8; 18][..]),
        RawRec(MsgType::RPC_LIFECYCLE, &[4u8; 18][..]),
        RawRec(MsgType(306), &[][..]),
        RawRec(MsgType::RPC_SUBSCRIBE_WORKER, &[0u8, 0, 0, 9, b'r'][..]),
    ] {
        let mut bad = Raw::connect(addr, "").await;
        bad.send(&frame).await;
        assert!(is_closed(&mut bad).await, "{:?}", frame.0);
    }
    echo_via(&mut w, &mut good, 101).await;
    // A registration with a readable pattern but trailing bytes: 6012.
    let mut p = Vec::new();
    let sub = SubscribeWorker { pattern: ROUTE, max_concurrent: 1, extension: Some(WorkerExtension) };
    p.resize(sub.payload_len(), 0);
    sub.write_payload(&mut fitz_wire::SliceWriter::new(&mut p));
    w.send(&RawRec(MsgType::RPC_SUBSCRIBE_WORKER, p.as_slice())).await;
    assert_eq!(registration_reply(&mut w, MsgType::RPC_SUBSCRIBE_WORKER).await, Err(6012));
    echo_via(&mut w, &mut good, 102).await;
    wait_sessions(&b, 3).await;
}

// --- current dialect (CAP_RPC_CANCELLATION) ---------------------------------

async fn call_budget(c: &mut Raw, id: Uuid, body: &[u8], budget_ms: u32) {
    let budget = Some(BudgetExtension::new(budget_ms).unwrap());
    c.send(&rpc::Request { correlation_id: id, route: ROUTE, body, budget }).await;
}

async fn cancel(c: &mut Raw, id: Uuid) {
    c.send(&RpcCancel::Caller { correlation_id: id, reason: CancelReason::Explicit }).await;
}

async fn cancel_result(c: &mut Raw, id: Uuid) -> CancelStatus {
    match recv_lifecycle(c).await {
        RpcLifecycle::CancelResult { correlation_id, status } => {
            assert_eq!(correlation_id, id);
            status
        }
        other => panic!("expected a cancel result, got {other:?}"),
    }
}

#[tokio::test]
async fn current_invocation_uuid_and_budget_mapping() {
    let b = manual(Dialect::Current).await;
    let addr = b.tcp_addr().unwrap();
    let (mut w, caps) = Raw::connect_current(addr, "").await;
    assert!(Capabilities(caps).contains(Capabilities::RPC_CANCELLATION));
    let (mut c, _) = Raw::connect_current(addr, "").await;
    // A labelled registration is answered with its label.
    let sub = SubscribeWorker { pattern: ROUTE, max_concurrent: 1, extension: Some(WorkerExtension) };
    w.send_labelled(Some(7), &sub).await;
    let rec = next_rec(&mut w).await.unwrap();
    assert_eq!((rec.label, rec.msg_type, rec.payload), (Some(7), MsgType::RPC_SUBSCRIBE_WORKER, vec![0, 0, 0, 0, 0]));
    call_budget(&mut c, uid(1), b"one", 5_000).await;
    let d1 = recv_request(&mut w).await;
    assert_ne!(d1.id, uid(1), "a supporting worker gets a fresh invocation UUID");
    assert_eq!((d1.route.as_str(), d1.body.as_slice(), d1.budget), (ROUTE, &b"one"[..], Some(5_000)));
    // Queued for a second: the forwarded budget is what remains.
    call_budget(&mut c, uid(2), b"two", 5_000).await;
    // A budget above the broker's 30 s is capped; no budget, no extension.
    call_budget(&mut c, uid(3), b"three", 86_400_000).await;
    call(&mut c, uid(4), ROUTE, b"four").await;
    sync(&mut c).await;
    b.advance(Duration::from_millis(1_000));
    respond(&mut w, d1.id, 0, true, b"r1").await;
    assert_eq!(recv_response(&mut c).await, (uid(1), 0, true, b"r1".to_vec()));
    let d2 = recv_request(&mut w).await;
    assert_eq!((d2.body.as_slice(), d2.budget), (&b"two"[..], Some(4_000)));
    assert_ne!(d2.id, d1.id);
    respond(&mut w, d2.id, 0, false, b"r2a").await;
    respond(&mut w, d2.id, 1, true, b"r2b").await;
    assert_eq!(recv_response(&mut c).await, (uid(2), 0, false, b"r2a".to_vec()));
    assert_eq!(recv_response(&mut c).await, (uid(2), 1, true, b"r2b".to_vec()));
    let d3 = recv_request(&mut w).await;
    assert_eq!(d3.budget, Some(29_000));
    respond(&mut w, d3.id, 0, true, b"").await;
    let d4 = recv_request(&mut w).await;
    assert_eq!((d4.body.as_slice(), d4.budget), (&b"four"[..], None));
    // Responding with the caller's UUID instead of the invocation's: unknown.
    respond(&mut w, uid(4), 0, true, b"").await;
    assert_eq!(recv_terminal(&mut w).await, (uid(4), 6005));
    respond(&mut w, d4.id, 0, true, b"r4").await;
    assert_eq!(recv_response(&mut c).await, (uid(3), 0, true, Vec::new()));
    assert_eq!(recv_response(&mut c).await, (uid(4), 0, true, b"r4".to_vec()));
    // A worker registered without the extension gets the caller's bytes.
    let (mut legacy_w, _) = Raw::connect_current(addr, "").await;
    register(&mut legacy_w, "rpc://acme/plain/*", 1).await.unwrap();
    // (its budget is enforced by the broker but not forwarded: such a
    // worker would refuse a request with bytes after the body).
    c.send(&rpc::Request {
        correlation_id: uid(5),
        route: "rpc://acme/plain/x",
        body: b"p",
        budget: Some(BudgetExtension::new(3_000).unwrap()),
    })
    .await;
    let d = recv_request(&mut legacy_w).await;
    assert_eq!((d.id, d.body.as_slice(), d.budget), (uid(5), &b"p"[..], None));
    call_budget(&mut c, uid(6), b"six", 3_000).await;
    let d6 = recv_request(&mut w).await;
    assert_eq!(d6.budget, Some(3_000));
    // Budget-bounded deadlines: both calls end with 6001 after 3 s.
    b.advance(Duration::from_millis(2_999));
    assert!(is_quiet(&mut c).await);
    b.advance(Duration::from_millis(1));
    let mut codes = vec![recv_terminal(&mut c).await, recv_terminal(&mut c).await];
    codes.sort();
    assert_eq!(codes, vec![(uid(5), 6001), (uid(6), 6001)]);
    // The supporting worker is told the broker deadline passed.
    assert_eq!(
        recv_lifecycle(&mut w).await,
        RpcLifecycle::Signal { invocation_id: d6.id, reason: SignalReason::BrokerDeadline }
    );
}

#[tokio::test]
async fn current_cancel_of_queued_call_removes_it() {
    let b = current().await;
    let addr = b.tcp_addr().unwrap();
    let (mut w, _) = Raw::connect_current(addr, "").await;
    let (mut c, _) = Raw::connect_current(addr, "").await;
    register_with(&mut w, ROUTE, 1, true).await.unwrap();
    call(&mut c, uid(1), ROUTE, b"busy").await;
    call(&mut c, uid(2), ROUTE, b"queued").await;
    let d = recv_request(&mut w).await;
    cancel(&mut c, uid(2)).await;
    assert_eq!(cancel_result(&mut c, uid(2)).await, CancelStatus::QueuedRemoved);
    cancel(&mut c, uid(2)).await;
    assert_eq!(cancel_result(&mut c, uid(2)).await, CancelStatus::UnknownOrUnauthorized);
    respond(&mut w, d.id, 0, true, b"done").await;
    assert_eq!(recv_response(&mut c).await, (uid(1), 0, true, b"done".to_vec()));
    // Releasing a call that was not cancelled is ignored.
    w.send(&RpcCancel::WorkerReleased { invocation_id: d.id }).await;
    assert!(is_quiet(&mut w).await, "the removed call never reaches the worker");
    // Cancelling another session's call, or an unknown one: status 5.
    let (mut other, _) = Raw::connect_current(addr, "").await;
    call(&mut c, uid(3), ROUTE, b"mine").await;
    recv_request(&mut w).await;
    cancel(&mut other, uid(3)).await;
    assert_eq!(cancel_result(&mut other, uid(3)).await, CancelStatus::UnknownOrUnauthorized);
}

#[tokio::test]
async fn current_cancel_of_dispatched_call_signals_worker_and_ack_frees_credit() {
    let b = current().await;
    let addr = b.tcp_addr().unwrap();
    let (mut w, _) = Raw::connect_current(addr, "").await;
    let (mut c, _) = Raw::connect_current(addr, "").await;
    register_with(&mut w, ROUTE, 1, true).await.unwrap();
    call(&mut c, uid(1), ROUTE, b"long").await;
    call(&mut c, uid(2), ROUTE, b"next").await;
    let d = recv_request(&mut w).await;
    cancel(&mut c, uid(1)).await;
    assert_eq!(
        recv_lifecycle(&mut w).await,
        RpcLifecycle::Signal { invocation_id: d.id, reason: SignalReason::Explicit }
    );
    assert_eq!(cancel_result(&mut c, uid(1)).await, CancelStatus::Forwarded);
    cancel(&mut c, uid(1)).await;
    assert_eq!(cancel_result(&mut c, uid(1)).await, CancelStatus::AlreadyTerminal);
    // Chunks of the cancelled invocation are not forwarded.
    respond(&mut w, d.id, 0, true, b"too late").await;
    assert!(is_quiet(&mut c).await);
    // The credit is held until the kind-3 acknowledgement.
    assert!(is_quiet(&mut w).await);
    w.send(&RpcCancel::WorkerReleased { invocation_id: d.id }).await;
    let d2 = recv_request(&mut w).await;
    assert_eq!(d2.body, b"next");
    respond(&mut w, d2.id, 0, true, b"ok").await;
    assert_eq!(recv_response(&mut c).await, (uid(2), 0, true, b"ok".to_vec()));
}

#[tokio::test]
async fn current_cancel_grace_closes_the_worker() {
    let b = manual(Dialect::Current).await;
    let addr = b.tcp_addr().unwrap();
    let (mut w, _) = Raw::connect_current(addr, "").await;
    let (mut c, _) = Raw::connect_current(addr, "").await;
    register_with(&mut w, ROUTE, 1, true).await.unwrap();
    call(&mut c, uid(1), ROUTE, b"x").await;
    let d = recv_request(&mut w).await;
    cancel(&mut c, uid(1)).await;
    assert_eq!(cancel_result(&mut c, uid(1)).await, CancelStatus::Forwarded);
    assert!(
        matches!(recv_lifecycle(&mut w).await, RpcLifecycle::Signal { invocation_id, .. } if invocation_id == d.id)
    );
    b.advance(Duration::from_millis(4_999));
    sync(&mut w).await;
    b.advance(Duration::from_millis(1));
    assert!(is_closed(&mut w).await, "no acknowledgement within the grace period");
    wait_sessions(&b, 1).await;
    // The caller already has its cancel result: no 6002 for the cancelled call.
    assert!(is_quiet(&mut c).await);
}

#[tokio::test]
async fn current_legacy_worker_and_caller_disconnect() {
    let b = current().await;
    let addr = b.tcp_addr().unwrap();
    let (mut plain, _) = Raw::connect_current(addr, "").await;
    let (mut w, _) = Raw::connect_current(addr, "").await;
    let (mut c, _) = Raw::connect_current(addr, "").await;
    register(&mut plain, "rpc://acme/plain/x", 1).await.unwrap();
    register_with(&mut w, ROUTE, 1, true).await.unwrap();
    // A worker without the extension: the call continues.
    call(&mut c, uid(1), "rpc://acme/plain/x", b"x").await;
    let d = recv_request(&mut plain).await;
    cancel(&mut c, uid(1)).await;
    assert_eq!(cancel_result(&mut c, uid(1)).await, CancelStatus::WorkerUnsupported);
    respond(&mut plain, d.id, 0, true, b"still delivered").await;
    assert_eq!(recv_response(&mut c).await, (uid(1), 0, true, b"still delivered".to_vec()));
    // Caller disconnect: the supporting worker is told (reason 3).
    call(&mut c, uid(2), ROUTE, b"y").await;
    let d = recv_request(&mut w).await;
    drop(c);
    assert_eq!(
        recv_lifecycle(&mut w).await,
        RpcLifecycle::Signal { invocation_id: d.id, reason: SignalReason::CallerDisconnected }
    );
    // Its acknowledgement frees the credit for the next caller.
    w.send(&RpcCancel::WorkerReleased { invocation_id: d.id }).await;
    let (mut c2, _) = Raw::connect_current(addr, "").await;
    call(&mut c2, uid(3), ROUTE, b"z").await;
    let d3 = recv_request(&mut w).await;
    respond(&mut w, d3.id, 0, true, b"fine").await;
    assert_eq!(recv_response(&mut c2).await, (uid(3), 0, true, b"fine".to_vec()));
    // Malformed 304 frames are dropped silently.
    w.send(&RawRec(MsgType::RPC_CANCEL, &[9u8; 18][..])).await;
    assert!(is_quiet(&mut w).await);
    register(&mut w, ROUTE, 1).await.unwrap();
}

#[tokio::test]
async fn current_without_the_capability_rejects_extensions() {
    let cfg = BrokerConfig {
        dialect: Dialect::Current,
        current: CurrentDialect { capabilities: Capabilities(0x7), ..CurrentDialect::default() },
        ..BrokerConfig::anonymous()
    };
    let b = Broker::start(cfg).await.unwrap();
    let addr = b.tcp_addr().unwrap();
    let (mut w, caps) = Raw::connect_current(addr, "").await;
    assert_eq!(caps, 0x7);
    let (mut c, _) = Raw::connect_current(addr, "").await;
    assert_eq!(register_with(&mut w, ROUTE, 1, true).await, Err(6012));
    register(&mut w, ROUTE, 1).await.unwrap();
    call_budget(&mut c, uid(1), b"x", 1_000).await;
    assert_eq!(recv_terminal(&mut c).await, (uid(1), 6010));
    call(&mut c, uid(2), ROUTE, b"plain").await;
    let d = recv_request(&mut w).await;
    assert_eq!((d.id, d.budget), (uid(2), None));
    // 304 is an unsupported type here: close.
    cancel(&mut c, uid(2)).await;
    assert!(is_closed(&mut c).await);
    // And in the legacy dialect.
    let l = legacy().await;
    let mut lc = Raw::connect(l.tcp_addr().unwrap(), "").await;
    lc.send(&RpcCancel::WorkerReleased { invocation_id: uid(3) }).await;
    assert!(is_closed(&mut lc).await);
}
