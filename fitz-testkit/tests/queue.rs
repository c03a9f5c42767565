//! Queue against the in-memory broker through raw frames (BROKER.md §5, §14).
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use core::time::Duration;

use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, ClockMode, Dialect, JwtConfig};
use fitz_wire::queue::{self, CountersForm, ReserveLayout};
use fitz_wire::{MsgType, Payload, Reply};
use support::*;

const Q: &str = "queue://acme/jobs/main";

/// An error reply: the code (`None` for the plain envelope) and the text.
type Fail = (Option<u32>, String);

/// A reserved item, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    route: Option<String>,
    id: u64,
    token: u64,
    body: Vec<u8>,
}

/// An availability NOTIFY, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    sub_id: u64,
    route: String,
    counts: (u64, u64, u64),
    form: CountersForm,
}

async fn manual() -> Broker {
    Broker::start(BrokerConfig::anonymous().with_clock(ClockMode::Manual)).await.unwrap()
}

fn fail(e: fitz_wire::ServerError<'_>) -> Fail {
    (e.code, e.message.to_owned())
}

async fn enqueue(c: &mut Raw, route: &str, body: &[u8], delay: u64) -> Result<u64, Fail> {
    c.send(&queue::Enqueue::new(route, body, delay)).await;
    let rec = c.recv_type(MsgType::QUEUE_ENQUEUE).await.expect("ENQUEUE reply");
    match queue::decode_enqueue_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.message_id),
        Reply::Err(e) => Err(fail(e)),
    }
}

fn items(payload: &[u8], layout: ReserveLayout) -> Result<Vec<Item>, Fail> {
    match queue::decode_reserve_reply(payload, layout).unwrap() {
        Reply::Ok(ok) => {
            assert!(!ok.bare, "the broker always sends the item count");
            Ok(ok
                .items
                .iter()
                .map(|i| Item {
                    route: i.route.map(str::to_owned),
                    id: i.message_id,
                    token: i.lease_token,
                    body: i.body.to_vec(),
                })
                .collect())
        }
        Reply::Err(e) => Err(fail(e)),
    }
}

fn reserve_msg(route: &str, lease: u64, batch: Option<u32>, wait: u64) -> queue::Reserve<'_> {
    queue::Reserve { route, lease_seconds: lease, batch_size: batch, wait_seconds: (wait > 0).then_some(wait) }
}

async fn reserve_reply(c: &mut Raw, route: &str) -> Result<Vec<Item>, Fail> {
    let rec = c.recv_type(MsgType::QUEUE_RESERVE).await.expect("RESERVE reply");
    items(&rec.payload, ReserveLayout::for_route(route))
}

async fn reserve(c: &mut Raw, route: &str, lease: u64, batch: Option<u32>) -> Result<Vec<Item>, Fail> {
    c.send(&reserve_msg(route, lease, batch, 0)).await;
    reserve_reply(c, route).await
}

async fn ack(c: &mut Raw, ty: MsgType) -> Result<(), Fail> {
    let rec = c.recv_type(ty).await.expect("reply");
    match queue::decode_ack_reply(&rec.payload).unwrap() {
        Reply::Ok(()) => Ok(()),
        Reply::Err(e) => Err(fail(e)),
    }
}

async fn complete(c: &mut Raw, route: &str, it: &Item) -> Result<(), Fail> {
    c.send(&queue::Complete { route, message_id: it.id, lease_token: it.token }).await;
    ack(c, MsgType::QUEUE_COMPLETE).await
}

async fn extend(c: &mut Raw, route: &str, it: &Item, lease: u64) -> Result<(), Fail> {
    c.send(&queue::Extend { route, message_id: it.id, lease_token: it.token, lease_seconds: lease }).await;
    ack(c, MsgType::QUEUE_EXTEND).await
}

async fn subscribe(c: &mut Raw, pattern: &str) -> Result<u64, Fail> {
    c.send(&queue::Subscribe { pattern }).await;
    let rec = c.recv_type(MsgType::QUEUE_SUBSCRIBE).await.expect("SUBSCRIBE reply");
    match queue::decode_subscribe_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.sub_id),
        Reply::Err(e) => Err(fail(e)),
    }
}

async fn notification(c: &mut Raw) -> Note {
    let rec = c.recv_type(MsgType::QUEUE_NOTIFY).await.expect("NOTIFY");
    assert_eq!(rec.label, None, "NOTIFY is never labelled");
    let n = queue::Notify::decode(&rec.payload).unwrap();
    Note { sub_id: n.sub_id, route: n.route.to_owned(), counts: (n.ready, n.delayed, n.inflight), form: n.form }
}

const QUIET: Duration = Duration::from_millis(200);

/// Waits until the broker processed everything `c` sent before (requests
/// of one session are handled in order): an idempotent UNSUBSCRIBE round trip.
async fn sync(c: &mut Raw) {
    c.send(&queue::Unsubscribe { pattern: "queue://sync/sync/sync" }).await;
    ack(c, MsgType::QUEUE_UNSUBSCRIBE).await.unwrap();
}

async fn connect_current(addr: core::net::SocketAddr) -> Raw {
    Raw::connect_current(addr, "").await.0
}

#[tokio::test]
async fn enqueue_returns_positive_increasing_ids() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let a = enqueue(&mut c, Q, b"one", 0).await.unwrap();
    let z = enqueue(&mut c, Q, b"two", 0).await.unwrap();
    assert!(a > 0 && z > a, "{a} {z}");
    // Binary-safe bodies, empty included.
    enqueue(&mut c, Q, &[0, 0xFF, 0], 0).await.unwrap();
    enqueue(&mut c, Q, b"", 0).await.unwrap();
    let got = reserve(&mut c, Q, 30, Some(4)).await.unwrap();
    let bodies: Vec<&[u8]> = got.iter().map(|i| &i.body[..]).collect();
    assert_eq!(bodies, [&b"one"[..], b"two", &[0, 0xFF, 0], b""], "FIFO within a batch");
    assert!(got.iter().all(|i| i.route.is_none()), "exact layout");
}

#[tokio::test]
async fn reserve_then_complete_deletes_the_message() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let id = enqueue(&mut c, Q, b"job", 0).await.unwrap();
    let got = reserve(&mut c, Q, 30, Some(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, &got[0].body[..]), (id, &b"job"[..]));
    assert_ne!(got[0].token, 0);
    assert_eq!(reserve(&mut c, Q, 30, Some(1)).await.unwrap(), [], "a reserved message is invisible");
    complete(&mut c, Q, &got[0]).await.unwrap();
    let again = complete(&mut c, Q, &got[0]).await.unwrap_err();
    assert_eq!(again, (None, "message not found".to_owned()), "plain envelope");
    assert_eq!(reserve(&mut c, Q, 30, Some(1)).await.unwrap(), [], "completed = deleted");
}

#[tokio::test]
async fn expired_reservation_is_redelivered_with_a_new_token() {
    let b = manual().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut other = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let id = enqueue(&mut c, Q, b"job", 0).await.unwrap();
    let first = reserve(&mut c, Q, 1, None).await.unwrap();
    assert_eq!(first.len(), 1);
    b.advance(Duration::from_millis(999));
    assert_eq!(reserve(&mut other, Q, 1, None).await.unwrap(), [], "still reserved");
    b.advance(Duration::from_millis(1));
    let second = reserve(&mut other, Q, 30, None).await.unwrap();
    assert_eq!(second.len(), 1, "reservable again at expiry");
    assert_eq!((second[0].id, &second[0].body[..]), (id, &b"job"[..]));
    assert_ne!(second[0].token, first[0].token, "fresh token per reservation");
    // The first owner lost it: another session now holds the message.
    assert_eq!(complete(&mut c, Q, &first[0]).await.unwrap_err().0, None);
    complete(&mut other, Q, &second[0]).await.unwrap();
}

#[tokio::test]
async fn extend_pushes_the_expiry_and_keeps_the_token() {
    let b = manual().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut other = Raw::connect(b.tcp_addr().unwrap(), "").await;
    enqueue(&mut c, Q, b"job", 0).await.unwrap();
    let got = reserve(&mut c, Q, 1, None).await.unwrap();
    b.advance(Duration::from_millis(500));
    extend(&mut c, Q, &got[0], 3).await.unwrap();
    b.advance(Duration::from_millis(2000));
    assert_eq!(reserve(&mut other, Q, 1, None).await.unwrap(), [], "extended: not back yet");
    // Only the owner may extend (another session: not found).
    assert_eq!(extend(&mut other, Q, &got[0], 3).await.unwrap_err(), (None, "message not found".to_owned()));
    complete(&mut c, Q, &got[0]).await.unwrap();
    // EXTEND after expiry: inflight expired, and the message is ready again.
    enqueue(&mut c, Q, b"late", 0).await.unwrap();
    let late = reserve(&mut c, Q, 1, None).await.unwrap();
    b.advance(Duration::from_millis(1000));
    let err = extend(&mut c, Q, &late[0], 5).await.unwrap_err();
    assert_eq!(err, (None, "inflight reservation expired".to_owned()));
    assert_eq!(reserve(&mut other, Q, 5, None).await.unwrap()[0].id, late[0].id);
}

#[tokio::test]
async fn stale_token_complete_fails_with_invalid_token() {
    let b = manual().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    enqueue(&mut c, Q, b"job", 0).await.unwrap();
    let stale = reserve(&mut c, Q, 1, None).await.unwrap().remove(0);
    b.advance(Duration::from_secs(1));
    let fresh = reserve(&mut c, Q, 30, None).await.unwrap().remove(0);
    assert_eq!(fresh.id, stale.id);
    // 4001 InvalidToken, sent in the plain envelope (no code on the wire).
    let err = complete(&mut c, Q, &stale).await.unwrap_err();
    assert_eq!(err, (None, "invalid lease token".to_owned()));
    let forged = Item { token: fresh.token ^ 1, ..fresh.clone() };
    assert_eq!(extend(&mut c, Q, &forged, 5).await.unwrap_err().1, "invalid lease token");
    complete(&mut c, Q, &fresh).await.unwrap();
}

#[tokio::test]
async fn batch_returns_at_most_the_requested_count() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for i in 0..5u8 {
        enqueue(&mut c, Q, &[i], 0).await.unwrap();
    }
    let first = reserve(&mut c, Q, 30, Some(3)).await.unwrap();
    assert_eq!(first.iter().map(|i| i.body[0]).collect::<Vec<_>>(), [0, 1, 2]);
    let rest = reserve(&mut c, Q, 30, Some(10)).await.unwrap();
    assert_eq!(rest.iter().map(|i| i.body[0]).collect::<Vec<_>>(), [3, 4], "fewer when fewer are ready");
    let mut ids: Vec<u64> = first.iter().chain(&rest).map(|i| i.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    // 1,024 is the largest batch; above it: coded 4006.
    assert_eq!(reserve(&mut c, Q, 30, Some(1024)).await.unwrap(), []);
    assert_eq!(reserve(&mut c, Q, 30, Some(1025)).await.unwrap_err().0, Some(4006));
}

#[tokio::test]
async fn two_consumers_get_different_messages() {
    let b = legacy().await;
    let addr = b.tcp_addr().unwrap();
    let mut p = Raw::connect(addr, "").await;
    enqueue(&mut p, Q, b"a", 0).await.unwrap();
    enqueue(&mut p, Q, b"b", 0).await.unwrap();
    let (mut c1, mut c2) = (Raw::connect(addr, "").await, Raw::connect(addr, "").await);
    c1.send(&reserve_msg(Q, 30, Some(1), 0)).await;
    c2.send(&reserve_msg(Q, 30, Some(1), 0)).await;
    let (r1, r2) = (reserve_reply(&mut c1, Q).await.unwrap(), reserve_reply(&mut c2, Q).await.unwrap());
    assert_eq!((r1.len(), r2.len()), (1, 1));
    assert_ne!(r1[0].id, r2[0].id);
    let mut bodies = [r1[0].body.clone(), r2[0].body.clone()];
    bodies.sort();
    assert_eq!(bodies, [b"a".to_vec(), b"b".to_vec()]);
}

#[tokio::test]
async fn long_poll_is_answered_by_a_later_enqueue() {
    let b = manual().await;
    let mut consumer = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut producer = Raw::connect(b.tcp_addr().unwrap(), "").await;
    consumer.send(&reserve_msg(Q, 30, None, 2)).await;
    sync(&mut consumer).await;
    assert!(consumer.quiet_for(QUIET).await, "parked while nothing is ready");
    b.advance(Duration::from_millis(1500));
    let id = enqueue(&mut producer, Q, b"late", 0).await.unwrap();
    let got = reserve_reply(&mut consumer, Q).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, &got[0].body[..]), (id, &b"late"[..]));
    // The answer came once: the wait ending later sends nothing more.
    b.advance(Duration::from_secs(5));
    assert!(consumer.quiet_for(QUIET).await);
    complete(&mut consumer, Q, &got[0]).await.unwrap();
}

#[tokio::test]
async fn long_poll_ends_with_an_empty_page() {
    let b = manual().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    c.send(&reserve_msg("queue://acme/*/main", 30, Some(5), 2)).await;
    sync(&mut c).await;
    b.advance(Duration::from_millis(1999));
    assert!(c.quiet_for(QUIET).await);
    b.advance(Duration::from_millis(1));
    assert_eq!(reserve_reply(&mut c, "queue://acme/*/main").await.unwrap(), []);
    // A message enqueued after the wait ended stays in the queue.
    enqueue(&mut c, Q, b"x", 0).await.unwrap();
    assert!(c.quiet_for(QUIET).await);
    assert_eq!(reserve(&mut c, Q, 30, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn empty_queue_reserve_is_an_empty_success() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    // No batch (the fitz-ts "zero limit" request) and no wait.
    c.send(&reserve_msg(Q, 30, None, 0)).await;
    let rec = c.recv_type(MsgType::QUEUE_RESERVE).await.unwrap();
    assert_eq!(rec.payload, [0, 0, 0, 0, 0], "status 0, count 0");
    assert_eq!(reserve(&mut c, "queue://**", 30, Some(8)).await.unwrap(), []);
}

#[tokio::test]
async fn delayed_message_is_invisible_until_due() {
    let b = manual().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let id = enqueue(&mut c, Q, b"later", 2).await.unwrap();
    assert_eq!(reserve(&mut c, Q, 30, None).await.unwrap(), []);
    b.advance(Duration::from_millis(1999));
    assert_eq!(reserve(&mut c, Q, 30, None).await.unwrap(), []);
    b.advance(Duration::from_millis(1));
    let got = reserve(&mut c, Q, 30, None).await.unwrap();
    assert_eq!(got.iter().map(|i| i.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn availability_notify_once_then_nothing_after_unsubscribe() {
    let b = manual().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sub = subscribe(&mut w, "queue://acme/**").await.unwrap();
    assert_eq!(subscribe(&mut w, "queue://acme/**").await.unwrap(), sub, "idempotent");
    assert!(w.quiet_for(QUIET).await, "nothing ready: no initial NOTIFY");
    enqueue(&mut c, Q, b"1", 0).await.unwrap();
    let n = notification(&mut w).await;
    assert_eq!(n, Note { sub_id: sub, route: Q.to_owned(), counts: (1, 0, 0), form: CountersForm::Inline });
    // Ready stays above 0: no second NOTIFY.
    enqueue(&mut c, Q, b"2", 0).await.unwrap();
    enqueue(&mut c, Q, b"3", 5).await.unwrap();
    assert!(w.quiet_for(QUIET).await, "edge-triggered");
    // Drain, then a delayed message maturing is a new 0 → 1 edge.
    let got = reserve(&mut c, Q, 30, Some(10)).await.unwrap();
    assert_eq!(got.len(), 2);
    b.advance(Duration::from_secs(5));
    assert_eq!(notification(&mut w).await.counts, (1, 0, 2));
    // A new subscription hears about the non-empty queue at once, after its reply.
    let exact = subscribe(&mut w, Q).await.unwrap();
    assert_ne!(exact, sub);
    assert_eq!(
        notification(&mut w).await,
        Note { sub_id: exact, route: Q.to_owned(), counts: (1, 0, 2), form: CountersForm::Inline }
    );
    // After UNSUBSCRIBE nothing more arrives.
    for p in ["queue://acme/**", Q] {
        w.send(&queue::Unsubscribe { pattern: p }).await;
        ack(&mut w, MsgType::QUEUE_UNSUBSCRIBE).await.unwrap();
    }
    w.send(&queue::Unsubscribe { pattern: "queue://never/sub/scribed" }).await;
    ack(&mut w, MsgType::QUEUE_UNSUBSCRIBE).await.unwrap();
    reserve(&mut c, Q, 30, Some(10)).await.unwrap();
    enqueue(&mut c, Q, b"4", 0).await.unwrap();
    assert!(w.quiet_for(QUIET).await);
}

#[tokio::test]
async fn subscription_patterns_and_quota_use_plain_errors() {
    let mut cfg = BrokerConfig::anonymous();
    cfg.limits.wildcard_quota = 2;
    let b = Broker::start(cfg).await.unwrap();
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for bad in ["queue://a/b", "queue://a/b*/c", "kv://a/b/c", "queue://a/b/c/d"] {
        assert_eq!(subscribe(&mut c, bad).await.unwrap_err().0, None, "{bad}: 4010 is text only");
    }
    subscribe(&mut c, "queue://a/*/*").await.unwrap();
    subscribe(&mut c, "queue://b/**").await.unwrap();
    assert_eq!(subscribe(&mut c, "queue://c/**").await.unwrap_err(), (None, "subscription limit exceeded".to_owned()));
    subscribe(&mut c, "queue://c/d/e").await.expect("exact routes do not count");
}

#[tokio::test]
async fn wildcard_reserve_uses_the_routed_layout_across_queues() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    enqueue(&mut c, "queue://acme/b/jobs", b"b1", 0).await.unwrap();
    enqueue(&mut c, "queue://acme/a/jobs", b"a1", 0).await.unwrap();
    enqueue(&mut c, "queue://acme/a-z/jobs", b"az", 0).await.unwrap();
    enqueue(&mut c, "queue://acme/b/other", b"no", 0).await.unwrap();
    enqueue(&mut c, "queue://zeta/a/jobs", b"no", 0).await.unwrap();
    enqueue(&mut c, "queue://acme/a/jobs", b"a2", 0).await.unwrap();
    let p = "queue://acme/*/jobs";
    let got = reserve(&mut c, p, 30, Some(10)).await.unwrap();
    let seen: Vec<(&str, &[u8])> = got.iter().map(|i| (i.route.as_deref().unwrap(), &i.body[..])).collect();
    assert_eq!(
        seen,
        [
            ("queue://acme/a/jobs", &b"a1"[..]),
            ("queue://acme/a/jobs", b"a2"),
            ("queue://acme/a-z/jobs", b"az"),
            ("queue://acme/b/jobs", b"b1"),
        ],
        "sorted realm/area/resource order, FIFO per queue"
    );
    // Completed through the item's concrete route.
    for it in &got {
        complete(&mut c, it.route.as_deref().unwrap(), it).await.unwrap();
    }
    let rest = reserve(&mut c, "queue://**", 30, Some(10)).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|i| i.route.as_deref().is_some_and(|r| r.starts_with("queue://"))));
    // An invalid pattern is a coded bad request.
    assert_eq!(reserve(&mut c, "queue://acme/j*/x", 30, None).await.unwrap_err().0, Some(4006));
}

#[tokio::test]
async fn disconnect_returns_reserved_messages_immediately() {
    let b = manual().await;
    let addr = b.tcp_addr().unwrap();
    let mut w = Raw::connect(addr, "").await;
    let mut owner = Raw::connect(addr, "").await;
    let mut waiter = Raw::connect(addr, "").await;
    enqueue(&mut owner, Q, b"job", 0).await.unwrap();
    let held = reserve(&mut owner, Q, 3600, None).await.unwrap();
    let sub = subscribe(&mut w, Q).await.unwrap();
    assert!(w.quiet_for(QUIET).await, "ready is 0 while reserved");
    waiter.send(&reserve_msg(Q, 30, None, 60)).await;
    assert!(waiter.quiet_for(QUIET).await);
    // A parked RESERVE of the disconnecting session is dropped with it.
    owner.send(&reserve_msg(Q, 30, None, 60)).await;
    drop(owner);
    // No clock movement: the reservation comes back at once.
    let got = reserve_reply(&mut waiter, Q).await.unwrap();
    assert_eq!((got[0].id, &got[0].body[..]), (held[0].id, &b"job"[..]));
    assert_ne!(got[0].token, held[0].token);
    // The parked waiter took it straight away, so ready never rose above 0.
    assert!(w.quiet_for(QUIET).await);
    let mut again = Raw::connect(addr, "").await;
    drop(waiter);
    assert_eq!(
        notification(&mut w).await,
        Note { sub_id: sub, route: Q.to_owned(), counts: (1, 0, 0), form: CountersForm::Inline }
    );
    assert_eq!(reserve(&mut again, Q, 30, None).await.unwrap()[0].id, held[0].id);
}

#[tokio::test]
async fn read_only_token_cannot_enqueue() {
    let cfg = BrokerConfig::anonymous().with_auth(AuthMode::Jwt(JwtConfig::official("dev-test-secret")));
    let b = Broker::start(cfg).await.unwrap();
    let ro = TokenSpec::official().with_permissions(&["queue://**#read"]).sign();
    let mut c = Raw::connect(b.tcp_addr().unwrap(), &ro).await;
    assert_eq!(
        enqueue(&mut c, Q, b"x", 0).await.unwrap_err(),
        (Some(4009), "unauthorized: permission denied".to_owned())
    );
    // RESERVE needs Write too; SUBSCRIBE only Read.
    assert_eq!(reserve(&mut c, Q, 30, None).await.unwrap_err().0, Some(4009));
    subscribe(&mut c, "queue://**").await.unwrap();
    let rw = TokenSpec::official().sign();
    let mut w = Raw::connect(b.tcp_addr().unwrap(), &rw).await;
    assert!(enqueue(&mut w, Q, b"x", 0).await.unwrap() > 0);
    // COMPLETE's own errors are plain, its unauthorized error is coded.
    let it = Item { route: None, id: 1, token: 1, body: Vec::new() };
    assert_eq!(complete(&mut c, Q, &it).await.unwrap_err().0, Some(4009));
}

#[tokio::test]
async fn current_dialect_parked_reserve_is_overtaken_and_keeps_its_label() {
    let cfg = BrokerConfig::anonymous().with_dialect(Dialect::Current).with_clock(ClockMode::Manual);
    let b = Broker::start(cfg).await.unwrap();
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    let mut p = connect_current(b.tcp_addr().unwrap()).await;
    const EMPTY: &str = "queue://acme/jobs/empty";
    enqueue(&mut p, Q, b"now", 0).await.unwrap();
    c.send_labelled(Some(11), &reserve_msg(EMPTY, 30, None, 30)).await;
    c.send_labelled(Some(12), &reserve_msg(Q, 30, None, 30)).await;
    let rec = c.recv_one().await.unwrap();
    assert_eq!(rec.label, Some(12), "the later RESERVE is not held back");
    let held = items(&rec.payload, ReserveLayout::Exact).unwrap().remove(0);
    assert_eq!(held.body, b"now");
    enqueue(&mut p, EMPTY, b"later", 0).await.unwrap();
    let rec = c.recv_one().await.unwrap();
    assert_eq!(rec.label, Some(11));
    assert_eq!(items(&rec.payload, ReserveLayout::Exact).unwrap()[0].body, b"later");
    // A labelled long poll that ends empty keeps its label too.
    c.send_labelled(Some(13), &reserve_msg(EMPTY, 30, None, 1)).await;
    sync(&mut c).await;
    assert!(c.quiet_for(QUIET).await);
    b.advance(Duration::from_secs(1));
    let rec = c.recv_one().await.unwrap();
    assert_eq!((rec.label, items(&rec.payload, ReserveLayout::Exact).unwrap()), (Some(13), vec![]));
    // Fault injection (§15.6): a coded 4005 COMPLETE leaves the reservation intact.
    b.inject_error(MsgType::QUEUE_COMPLETE, Some(4005), "queue full");
    assert_eq!(complete(&mut c, Q, &held).await.unwrap_err(), (Some(4005), "queue full".to_owned()));
    complete(&mut c, Q, &held).await.unwrap();
}

#[tokio::test]
async fn sdk_compat_notify_wraps_the_counters() {
    let cfg = BrokerConfig { sdk_compat: true, ..BrokerConfig::anonymous().with_dialect(Dialect::Current) };
    let b = Broker::start(cfg).await.unwrap();
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    let sub = subscribe(&mut c, "queue://acme/*/main").await.unwrap();
    enqueue(&mut c, Q, b"x", 0).await.unwrap();
    let rec = c.recv_type(MsgType::QUEUE_NOTIFY).await.unwrap();
    // id, route, then `bytes` of 24: 00 00 00 18 + three u64.
    let tail = &rec.payload[8 + 4 + Q.len()..];
    assert_eq!(&tail[..4], &[0, 0, 0, 24]);
    assert_eq!(tail.len(), 28);
    let n = queue::Notify::decode(&rec.payload).unwrap();
    assert_eq!((n.sub_id, n.route, n.ready, n.delayed, n.inflight, n.form), (sub, Q, 1, 0, 0, CountersForm::Wrapped));
}

#[tokio::test]
async fn malformed_queue_frame_closes_only_that_session() {
    let b = legacy().await;
    let addr = b.tcp_addr().unwrap();
    let mut good = Raw::connect(addr, "").await;
    // Route readable, rest malformed (truncated lease): coded 4006, session kept.
    let mut sloppy = Raw::connect(addr, "").await;
    let mut payload = (Q.len() as u32).to_be_bytes().to_vec();
    payload.extend_from_slice(Q.as_bytes());
    payload.extend_from_slice(&[0, 0, 1]);
    sloppy.send_frame(&record(MsgType::QUEUE_RESERVE, &payload)).await;
    let rec = sloppy.recv_type(MsgType::QUEUE_RESERVE).await.unwrap();
    assert_eq!(items(&rec.payload, ReserveLayout::Exact).unwrap_err().0, Some(4006));
    // Invalid route on ENQUEUE: coded 4006 too.
    assert_eq!(enqueue(&mut sloppy, "queue://a/b", b"x", 0).await.unwrap_err().0, Some(4006));
    assert!(enqueue(&mut sloppy, Q, b"x", 0).await.is_ok());
    // The route itself cannot be read (length runs past the payload): close.
    let mut bad = Raw::connect(addr, "").await;
    bad.send_frame(&record(MsgType::QUEUE_ENQUEUE, &[0, 0, 0, 50, b'q'])).await;
    assert!(bad.closed().await);
    // A client-sent NOTIFY or an unsupported Queue type closes as well.
    let mut odd = Raw::connect(addr, "").await;
    odd.send_frame(&record(MsgType(205), &[])).await;
    assert!(odd.closed().await);
    assert_eq!(reserve(&mut good, Q, 30, None).await.unwrap().len(), 1);
    // The two closed sessions are cleaned up; the other two stay.
    for _ in 0..100 {
        if b.session_count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.session_count(), 2);
}

#[tokio::test]
async fn pages_fit_one_record_and_oversized_messages_are_dead_lettered() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    const SHORT: &str = "queue://a/b/c";
    let big = vec![7u8; 40_000];
    enqueue(&mut c, SHORT, &big, 0).await.unwrap();
    enqueue(&mut c, SHORT, &big, 0).await.unwrap();
    let first = reserve(&mut c, SHORT, 30, Some(2)).await.unwrap();
    assert_eq!(first.len(), 1, "two 40 kB bodies do not fit one record");
    assert_eq!(reserve(&mut c, SHORT, 30, Some(2)).await.unwrap().len(), 1);
    // 65,511 bytes fit an ENQUEUE but not an exact RESERVE item (25 + body).
    let huge = vec![1u8; 65_511];
    enqueue(&mut c, SHORT, &huge, 0).await.unwrap();
    enqueue(&mut c, SHORT, b"small", 0).await.unwrap();
    let got = reserve(&mut c, SHORT, 30, Some(5)).await.unwrap();
    assert_eq!(got.iter().map(|i| &i.body[..]).collect::<Vec<_>>(), [&b"small"[..]]);
    assert_eq!(reserve(&mut c, SHORT, 30, Some(5)).await.unwrap(), [], "dropped, not redelivered");
}

/// One record of a Queue type (one-byte type, `u16` length, payload) as a
/// transport frame.
fn record(ty: MsgType, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![u8::try_from(ty.0).unwrap()];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}
