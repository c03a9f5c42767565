//! Leases against the in-memory broker through raw frames (BROKER.md §7,
//! §14, §15.4).
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use core::time::Duration;

use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, ClockMode, Dialect, JwtConfig};
use fitz_wire::lease::{self, AcquireStatus, LeaseState, ListCursor};
use fitz_wire::{MsgType, Payload, Reply};
use support::*;

const R: &str = "lease://acme/jobs/nightly";

// The support client's read future holds a 64 KiB buffer; boxing it keeps
// these tests' futures small (debug builds do not overlap their slots).
async fn recv(c: &mut Raw, ty: MsgType) -> Rec {
    Box::pin(c.recv_type(ty)).await.unwrap_or_else(|| panic!("no reply of type {}", ty.0))
}

async fn one(c: &mut Raw) -> Rec {
    Box::pin(c.recv_one()).await.expect("a frame")
}

async fn quiet(c: &mut Raw) -> bool {
    Box::pin(c.quiet_for(QUIET)).await
}

async fn connect_current(b: &Broker) -> (Raw, u32) {
    Box::pin(Raw::connect_current(b.tcp_addr().unwrap(), "")).await
}

async fn closed(c: &mut Raw) -> bool {
    Box::pin(c.closed()).await
}

type Acquired = Result<(AcquireStatus, u64), u32>;

async fn manual(dialect: Dialect) -> Broker {
    Broker::start(BrokerConfig::anonymous().with_dialect(dialect).with_clock(ClockMode::Manual)).await.unwrap()
}

async fn send_acquire(c: &mut Raw, route: &str, owner: &str, ttl: u64, wait: u32) {
    c.send(&lease::Acquire { route, owner_id: owner, ttl_secs: ttl, wait_seconds: wait }).await;
}

fn decode_acquire(payload: &[u8]) -> Acquired {
    match lease::decode_acquire_reply(payload).unwrap() {
        Reply::Ok(ok) => Ok((ok.status, ok.fencing_token)),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn acquire_reply(c: &mut Raw) -> Acquired {
    let rec = recv(c, MsgType::LEASE_ACQUIRE).await;
    decode_acquire(&rec.payload)
}

/// The deferred second 400 frame of a queued ACQUIRE.
async fn deferred(c: &mut Raw) -> Acquired {
    let rec = recv(c, MsgType::LEASE_ACQUIRE).await;
    match lease::decode_acquire_deferred(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok((ok.status, ok.fencing_token)),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn acquire(c: &mut Raw, route: &str, owner: &str, ttl: u64, wait: u32) -> Acquired {
    send_acquire(c, route, owner, ttl, wait).await;
    acquire_reply(c).await
}

async fn renew(c: &mut Raw, route: &str, owner: &str, token: u64, ttl: u64) -> Result<u64, u32> {
    c.send(&lease::Renew { route, owner_id: owner, fencing_token: token, ttl_secs: ttl }).await;
    let rec = recv(c, MsgType::LEASE_RENEW).await;
    match lease::decode_renew_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.fencing_token),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn ack(c: &mut Raw, ty: MsgType) -> Result<(), u32> {
    let rec = recv(c, ty).await;
    match lease::decode_ack_reply(&rec.payload).unwrap() {
        Reply::Ok(()) => Ok(()),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn release(c: &mut Raw, route: &str, owner: &str, token: u64) -> Result<(), u32> {
    c.send(&lease::Release { route, owner_id: owner, fencing_token: token }).await;
    ack(c, MsgType::LEASE_RELEASE).await
}

/// QUERY: `Ok(None)` free, `Ok(Some((owner, ttl)))` held, plus the waiters.
#[derive(Debug, PartialEq, Eq)]
struct Queried {
    holder: Option<(String, u64)>,
    waiters: u32,
}

async fn query(c: &mut Raw, route: &str) -> Result<Queried, u32> {
    c.send(&lease::Query { route }).await;
    let rec = recv(c, MsgType::LEASE_QUERY).await;
    match lease::decode_query_reply(&rec.payload).unwrap() {
        Reply::Ok(LeaseState::Free { pending_waiters }) => Ok(Queried { holder: None, waiters: pending_waiters }),
        Reply::Ok(LeaseState::Held { owner_id, ttl_remaining_secs, pending_waiters }) => {
            Ok(Queried { holder: Some((owner_id.to_owned(), ttl_remaining_secs)), waiters: pending_waiters })
        }
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn subscribe(c: &mut Raw, route: &str) -> Result<u64, u32> {
    c.send(&lease::Subscribe { route }).await;
    let rec = recv(c, MsgType::LEASE_SUBSCRIBE).await;
    match lease::decode_subscribe_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.sub_id),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn notified(c: &mut Raw) -> (u64, String) {
    let rec = recv(c, MsgType::LEASE_NOTIFY).await;
    let n = lease::Notify::decode(&rec.payload).unwrap();
    assert!(n.payload.is_empty());
    (n.sub_id, n.route.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    route: String,
    owner_id: String,
    incarnation: u64,
    acquired_at: String,
    expires_in: u64,
    renewals: u32,
}

async fn list(
    c: &mut Raw,
    pattern: &str,
    cursor: Option<ListCursor>,
    limit: u32,
) -> Result<(Vec<Item>, Option<ListCursor>), u32> {
    c.send(&lease::List { pattern, cursor, limit }).await;
    let rec = recv(c, MsgType::LEASE_LIST).await;
    match lease::decode_list_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => {
            let items = ok
                .items
                .iter()
                .map(|i| Item {
                    route: i.route.to_owned(),
                    owner_id: i.owner_id.to_owned(),
                    incarnation: i.holder_incarnation,
                    acquired_at: i.acquired_at.to_owned(),
                    expires_in: i.expires_in_secs,
                    renewals: i.renewals,
                })
                .collect();
            Ok((items, ok.next))
        }
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test]
async fn acquire_grants_a_token_and_again_is_already_held_without_ttl_reset() {
    let b = manual(Dialect::Legacy).await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let (status, token) = acquire(&mut c, R, "worker-1", 10, 0).await.unwrap();
    assert_eq!(status, AcquireStatus::Acquired);
    assert!(token > 0);
    b.advance(Duration::from_secs(4));
    assert_eq!(acquire(&mut c, R, "worker-1", 10, 0).await, Ok((AcquireStatus::AlreadyHeld, token)));
    let q = query(&mut c, R).await.unwrap();
    assert_eq!(q.holder.unwrap().1, 6, "AlreadyHeld keeps the TTL");
    // A different owner id of the same session is a different holder.
    assert_eq!(acquire(&mut c, R, "worker-2", 10, 0).await, Err(5001));
    let (_, other) = acquire(&mut c, "lease://acme/jobs/other", "worker-1", 10, 0).await.unwrap();
    assert!(other > token, "tokens increase broker-wide");
}

#[tokio::test]
async fn held_lease_is_5001_across_sessions_with_empty_owner_ids() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    assert_eq!(acquire(&mut a, R, "", 30, 0).await.unwrap().0, AcquireStatus::Acquired);
    assert_eq!(acquire(&mut c, R, "", 30, 0).await, Err(5001), "identity is session-scoped");
    c.send(&lease::Acquire { route: R, owner_id: "", ttl_secs: 30, wait_seconds: 0 }).await;
    let rec = recv(&mut c, MsgType::LEASE_ACQUIRE).await;
    let Reply::Err(e) = lease::decode_acquire_reply(&rec.payload).unwrap() else { panic!() };
    assert!(e.message.starts_with("HeldByOther: session:"), "{}", e.message);
}

#[tokio::test]
async fn extend_returns_a_new_token_and_resets_the_ttl() {
    let b = manual(Dialect::Legacy).await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let (_, t1) = acquire(&mut c, R, "w", 10, 0).await.unwrap();
    b.advance(Duration::from_secs(8));
    let t2 = renew(&mut c, R, "w", t1, 20).await.unwrap();
    assert_ne!(t2, t1, "the legacy broker issues a new token on every renew");
    assert_eq!(query(&mut c, R).await.unwrap().holder.unwrap().1, 20);
    assert_eq!(renew(&mut c, R, "w", t1, 20).await, Err(5002), "the replaced token is fenced");
    assert_eq!(renew(&mut c, R, "w", t2, 0).await, Err(5008), "ttl 0");
    assert_eq!(renew(&mut c, "lease://acme/jobs/none", "w", t2, 5).await, Err(5004), "not held");
    b.advance(Duration::from_secs(25));
    assert_eq!(renew(&mut c, R, "w", t2, 20).await, Err(5003), "the holder's renew after expiry");
    assert_eq!(renew(&mut c, R, "w", t2, 20).await, Err(5004), "the expired lease is gone");
}

#[tokio::test]
async fn stale_extend_and_release_fail_after_a_takeover() {
    let b = manual(Dialect::Legacy).await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let (_, old) = acquire(&mut a, R, "", 1, 0).await.unwrap();
    b.advance(Duration::from_secs(2));
    let (status, new) = acquire(&mut c, R, "", 5, 0).await.unwrap();
    assert_eq!(status, AcquireStatus::Acquired);
    assert!(new > old);
    assert_eq!(renew(&mut a, R, "", old, 5).await, Err(5004));
    assert_eq!(release(&mut a, R, "", old).await, Err(5004));
    assert_eq!(release(&mut c, R, "", old).await, Err(5002), "right owner, stale token");
    assert!(query(&mut a, R).await.unwrap().holder.is_some(), "the failed release changed nothing");
}

#[tokio::test]
async fn release_then_reacquire() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let (_, t1) = acquire(&mut a, R, "a", 30, 0).await.unwrap();
    release(&mut a, R, "a", t1).await.unwrap();
    let (status, t2) = acquire(&mut c, R, "c", 30, 0).await.unwrap();
    assert_eq!(status, AcquireStatus::Acquired);
    assert!(t2 > t1);
    assert_eq!(release(&mut a, "lease://acme/jobs/never", "a", 1).await, Ok(()), "missing lease: success");
}

#[tokio::test]
async fn ttl_expiry_with_the_manual_clock() {
    let b = manual(Dialect::Legacy).await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sub = subscribe(&mut w, R).await.unwrap();
    acquire(&mut a, R, "", 2, 0).await.unwrap();
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()));
    b.advance(Duration::from_millis(1999));
    assert_eq!(acquire(&mut c, R, "", 2, 0).await, Err(5001));
    assert!(quiet(&mut w).await);
    b.advance(Duration::from_millis(1));
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()), "expiry notifies at expiry");
    assert_eq!(query(&mut c, R).await, Ok(Queried { holder: None, waiters: 0 }));
    assert_eq!(acquire(&mut c, R, "", 2, 0).await.unwrap().0, AcquireStatus::Acquired);
}

#[tokio::test]
async fn query_reports_the_held_owner_string_and_free() {
    let b = manual(Dialect::Legacy).await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    assert_eq!(query(&mut c, R).await, Ok(Queried { holder: None, waiters: 0 }), "never acquired: free");
    let (_, t) = acquire(&mut a, R, "py-0123abcd", 30, 0).await.unwrap();
    b.advance(Duration::from_secs(10));
    let q = query(&mut c, R).await.unwrap();
    let (owner, ttl) = q.holder.unwrap();
    assert!(owner.starts_with("session:") && owner.ends_with(":py-0123abcd"), "{owner}");
    assert_eq!((ttl, q.waiters), (20, 0));
    release(&mut a, R, "py-0123abcd", t).await.unwrap();
    assert_eq!(query(&mut c, R).await, Ok(Queried { holder: None, waiters: 0 }), "released: free");
    // An empty owner id gives `session:<n>`, distinct per session.
    acquire(&mut a, R, "", 30, 0).await.unwrap();
    let (oa, _) = query(&mut c, R).await.unwrap().holder.unwrap();
    assert!(oa.starts_with("session:") && oa.matches(':').count() == 1, "{oa}");
    acquire(&mut c, "lease://acme/jobs/c", "", 30, 0).await.unwrap();
    let (oc, _) = query(&mut c, "lease://acme/jobs/c").await.unwrap().holder.unwrap();
    assert_ne!(oa, oc);
    assert_eq!(query(&mut c, "lease://acme/jobs/*").await, Err(5008), "wildcard QUERY");
}

#[tokio::test]
async fn notify_on_acquire_and_release_only() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sub = subscribe(&mut w, R).await.unwrap();
    assert_eq!(subscribe(&mut w, R).await, Ok(sub), "idempotent");
    let (_, t) = acquire(&mut a, R, "a", 30, 0).await.unwrap();
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()));
    let t = renew(&mut a, R, "a", t, 30).await.unwrap();
    assert_eq!(acquire(&mut c, R, "c", 30, 0).await, Err(5001));
    assert_eq!(acquire(&mut a, R, "a", 30, 0).await.unwrap().0, AcquireStatus::AlreadyHeld);
    assert!(quiet(&mut w).await, "no NOTIFY on renew, failed or repeated acquires");
    release(&mut a, R, "a", t).await.unwrap();
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()));
    w.send(&lease::Unsubscribe { route: R }).await;
    ack(&mut w, MsgType::LEASE_UNSUBSCRIBE).await.unwrap();
    w.send(&lease::Unsubscribe { route: R }).await;
    assert_eq!(ack(&mut w, MsgType::LEASE_UNSUBSCRIBE).await, Ok(()), "idempotent");
    acquire(&mut a, R, "a", 30, 0).await.unwrap();
    assert!(quiet(&mut w).await);
}

#[tokio::test]
async fn queued_acquire_is_granted_by_a_deferred_frame_on_release() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let (_, t) = acquire(&mut a, R, "a", 30, 0).await.unwrap();
    let sub = subscribe(&mut w, R).await.unwrap();
    assert_eq!(acquire(&mut c, R, "c", 30, 10).await.unwrap().0, AcquireStatus::Queued);
    assert!(quiet(&mut w).await, "no NOTIFY for a queued acquire");
    assert_eq!(query(&mut a, R).await.unwrap().waiters, 1);
    assert!(quiet(&mut c).await, "nothing until the lease is free");
    release(&mut a, R, "a", t).await.unwrap();
    let (status, granted) = deferred(&mut c).await.unwrap();
    assert_eq!(status, AcquireStatus::Acquired);
    assert!(granted > t);
    // Release, then grant to the waiter: one NOTIFY each.
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()));
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()));
    let (owner, _) = query(&mut a, R).await.unwrap().holder.unwrap();
    assert!(owner.ends_with(":c"), "{owner}");
    release(&mut c, R, "c", granted).await.unwrap();
}

#[tokio::test]
async fn queued_acquire_gets_a_deferred_5006_when_its_wait_ends() {
    let b = manual(Dialect::Legacy).await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    acquire(&mut a, R, "a", 60, 0).await.unwrap();
    assert_eq!(acquire(&mut c, R, "c", 10, 31).await, Err(5008), "wait above 30");
    assert_eq!(acquire(&mut c, R, "c", 0, 5).await, Err(5008), "ttl 0");
    assert_eq!(acquire(&mut c, R, "c", 10, 3).await.unwrap().0, AcquireStatus::Queued);
    assert_eq!(acquire(&mut c, R, "c", 10, 3).await.unwrap().0, AcquireStatus::AlreadyQueued);
    b.advance(Duration::from_millis(2999));
    assert!(quiet(&mut c).await);
    b.advance(Duration::from_millis(1));
    assert_eq!(deferred(&mut c).await, Err(5006));
    assert_eq!(deferred(&mut c).await, Err(5006), "the AlreadyQueued acquisition ends too");
    assert_eq!(query(&mut c, R).await.unwrap().waiters, 0);
    // 100 waiters at most (distinct owners of one session are distinct holders).
    for i in 0..100 {
        send_acquire(&mut c, R, &format!("w{i}"), 10, 30).await;
    }
    for _ in 0..100 {
        assert_eq!(acquire_reply(&mut c).await.unwrap().0, AcquireStatus::Queued);
    }
    assert_eq!(acquire(&mut c, R, "w100", 10, 30).await, Err(5007));
}

#[tokio::test]
async fn disconnect_releases_notifies_and_grants_the_next_waiter() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut d = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    acquire(&mut a, R, "a", 30, 0).await.unwrap();
    // `a` also waits on a lease `d` holds: its waiter goes with it.
    acquire(&mut d, "lease://acme/jobs/d", "d", 30, 0).await.unwrap();
    assert_eq!(acquire(&mut a, "lease://acme/jobs/d", "a", 30, 20).await.unwrap().0, AcquireStatus::Queued);
    assert_eq!(acquire(&mut c, R, "c", 30, 20).await.unwrap().0, AcquireStatus::Queued);
    let sub = subscribe(&mut w, R).await.unwrap();
    drop(a);
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()), "release on disconnect");
    assert_eq!(deferred(&mut c).await.unwrap().0, AcquireStatus::Acquired);
    assert_eq!(notified(&mut w).await, (sub, R.to_owned()), "grant to the waiter");
    assert_eq!(query(&mut d, "lease://acme/jobs/d").await.unwrap().waiters, 0, "the waiter was dropped");
}

#[tokio::test]
async fn current_dialect_labels_both_frames_of_a_contended_acquire() {
    let b = current().await;
    let (mut a, _) = connect_current(&b).await;
    let (mut c, _) = connect_current(&b).await;
    a.send_labelled(Some(5), &lease::Acquire { route: R, owner_id: "a", ttl_secs: 30, wait_seconds: 0 }).await;
    let rec = one(&mut a).await;
    assert_eq!(rec.label, Some(5));
    let (_, t) = decode_acquire(&rec.payload).unwrap();
    c.send_labelled(Some(11), &lease::Acquire { route: R, owner_id: "c", ttl_secs: 30, wait_seconds: 10 }).await;
    let first = one(&mut c).await;
    assert_eq!((first.label, decode_acquire(&first.payload).unwrap().0), (Some(11), AcquireStatus::Queued));
    release(&mut a, R, "a", t).await.unwrap();
    let second = one(&mut c).await;
    assert_eq!(second.label, Some(11), "the deferred frame carries the request's label");
    let Reply::Ok(ok) = lease::decode_acquire_deferred(&second.payload).unwrap() else { panic!() };
    assert_eq!(ok.status, AcquireStatus::Acquired);
    // Unlabelled requests stay unlabelled.
    c.send(&lease::Query { route: R }).await;
    assert_eq!(one(&mut c).await.label, None);
}

#[tokio::test]
async fn current_dialect_renew_keeps_the_token_and_limits_owner_ids() {
    let b = current().await;
    let (mut c, _) = connect_current(&b).await;
    let (_, t) = acquire(&mut c, R, "w", 10, 0).await.unwrap();
    assert_eq!(renew(&mut c, R, "w", t, 10).await, Ok(t));
    assert_eq!(renew(&mut c, R, "w", t, 10).await, Ok(t));
    let long = "x".repeat(513);
    assert_eq!(acquire(&mut c, "lease://acme/jobs/long", &long, 10, 0).await, Err(5008));
    assert_eq!(query(&mut c, "lease://acme/jobs/long").await.unwrap().holder, None, "nothing changed");
    let ok = "x".repeat(512);
    assert_eq!(acquire(&mut c, "lease://acme/jobs/long", &ok, 10, 0).await.unwrap().0, AcquireStatus::Acquired);
}

#[tokio::test]
async fn current_dialect_wildcard_watch_reports_concrete_routes() {
    let b = current().await;
    let (mut w, _) = connect_current(&b).await;
    let (mut c, _) = connect_current(&b).await;
    let wild = subscribe(&mut w, "lease://acme/**").await.unwrap();
    let exact = subscribe(&mut w, R).await.unwrap();
    assert_eq!(subscribe(&mut w, "lease://acme/**/**").await, Err(5010), "adjacent **");
    assert_eq!(subscribe(&mut w, "lease://acme/jo*/x").await, Err(5010), "partial token");
    acquire(&mut c, R, "c", 30, 0).await.unwrap();
    let mut got = vec![notified(&mut w).await, notified(&mut w).await];
    got.sort();
    assert_eq!(got, vec![(wild, R.to_owned()), (exact, R.to_owned())], "one NOTIFY per registration");
    acquire(&mut c, "lease://other/jobs/x", "c", 30, 0).await.unwrap();
    assert!(quiet(&mut w).await);
    // The legacy dialect accepts exact routes only.
    let l = legacy().await;
    let mut lw = Raw::connect(l.tcp_addr().unwrap(), "").await;
    assert_eq!(subscribe(&mut lw, "lease://acme/**").await, Err(5010));
    assert!(subscribe(&mut lw, R).await.is_ok());
}

#[tokio::test]
async fn current_dialect_list_pages_through_a_snapshot() {
    let b = manual(Dialect::Current).await;
    let (mut a, _) = connect_current(&b).await;
    let (mut c, _) = connect_current(&b).await;
    let mut tokens = Vec::new();
    for i in 1..=5 {
        tokens.push(acquire(&mut a, &format!("lease://acme/jobs/r{i}"), "worker-a", 30, 0).await.unwrap().1);
    }
    acquire(&mut c, "lease://acme/jobs/r6", "", 30, 0).await.unwrap();
    acquire(&mut a, "lease://acme/other/x", "worker-a", 30, 0).await.unwrap();
    renew(&mut a, "lease://acme/jobs/r1", "worker-a", tokens[0], 30).await.unwrap();
    renew(&mut a, "lease://acme/jobs/r1", "worker-a", tokens[0], 30).await.unwrap();
    b.advance(Duration::from_secs(10));

    let (page1, next) = list(&mut c, "lease://acme/jobs/*", None, 4).await.unwrap();
    let routes: Vec<&str> = page1.iter().map(|i| i.route.as_str()).collect();
    assert_eq!(
        routes,
        ["lease://acme/jobs/r1", "lease://acme/jobs/r2", "lease://acme/jobs/r3", "lease://acme/jobs/r4"]
    );
    let cursor = next.expect("a second page");
    assert_eq!(cursor.offset, 4);
    let first = &page1[0];
    assert_eq!((first.owner_id.as_str(), first.expires_in, first.renewals), ("worker-a", 20, 2));
    assert!(chrono::DateTime::parse_from_rfc3339(&first.acquired_at).is_ok(), "{}", first.acquired_at);
    assert!(first.acquired_at.ends_with('Z'), "UTC: {}", first.acquired_at);
    assert!(page1.iter().all(|i| i.incarnation == first.incarnation), "stable for one session");

    // A lease taken after the snapshot does not show up in its pages.
    acquire(&mut a, "lease://acme/jobs/r7", "worker-a", 30, 0).await.unwrap();
    let (page2, next) = list(&mut c, "lease://acme/jobs/*", Some(cursor), 4).await.unwrap();
    let routes: Vec<&str> = page2.iter().map(|i| i.route.as_str()).collect();
    assert_eq!(routes, ["lease://acme/jobs/r5", "lease://acme/jobs/r6"]);
    assert_eq!(next, None);
    assert_eq!(page2[1].owner_id, "", "the owner id given to ACQUIRE");
    assert_ne!(page2[1].incarnation, first.incarnation, "different for every session");
    assert_eq!(list(&mut c, "lease://acme/jobs/*", Some(cursor), 4).await, Err(5011), "reused cursor");

    // A cursor is bound to its pattern.
    let (_, next) = list(&mut c, "lease://acme/**", None, 2).await.unwrap();
    let cursor = next.unwrap();
    assert_eq!(list(&mut c, "lease://acme/jobs/*", Some(cursor), 2).await, Err(5011), "other pattern");
    let bogus = ListCursor { snapshot_id: cursor.snapshot_id ^ 1, offset: 2 };
    assert_eq!(list(&mut c, "lease://acme/**", Some(bogus), 2).await, Err(5011), "unknown snapshot");
    assert_eq!(list(&mut c, "lease://acme/**", Some(ListCursor { offset: 3, ..cursor }), 2).await, Err(5011));
    assert_eq!(list(&mut c, "lease://acme/**", Some(cursor), 0).await.unwrap().0.len(), 6, "limit 0 = 100");

    assert_eq!(list(&mut c, "lease://acme/jo*/x", None, 0).await, Err(5012));
    assert_eq!(list(&mut c, "kv://acme/jobs/r1", None, 0).await, Err(5012));
    let (exact, next) = list(&mut c, "lease://acme/jobs/r3", None, 0).await.unwrap();
    assert_eq!((exact.len(), next), (1, None));
    assert_eq!(list(&mut c, "lease://acme/jobs/free", None, 0).await, Ok((vec![], None)));
}

#[tokio::test]
async fn list_on_a_legacy_listener_closes_the_connection() {
    let b = legacy().await;
    let mut bad = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut good = Raw::connect(b.tcp_addr().unwrap(), "").await;
    bad.send(&lease::List { pattern: "lease://acme/**", cursor: None, limit: 0 }).await;
    assert!(closed(&mut bad).await);
    assert!(query(&mut good, R).await.is_ok());
}

#[tokio::test]
async fn read_only_jwt_cannot_acquire() {
    let cfg = BrokerConfig::anonymous().with_auth(AuthMode::Jwt(JwtConfig::official("dev-test-secret")));
    let b = Broker::start(cfg).await.unwrap();
    let token = TokenSpec::official().with_permissions(&["lease://**#read"]).sign();
    let mut c = Raw::connect(b.tcp_addr().unwrap(), &token).await;
    assert_eq!(acquire(&mut c, R, "w", 30, 0).await, Err(5009));
    assert_eq!(renew(&mut c, R, "w", 1, 30).await, Err(5009));
    assert_eq!(release(&mut c, R, "w", 1).await, Err(5009));
    assert_eq!(query(&mut c, R).await, Ok(Queried { holder: None, waiters: 0 }), "read is allowed");
    assert!(subscribe(&mut c, R).await.is_ok());
}

#[tokio::test]
async fn malformed_lease_frame_closes_only_that_session() {
    let b = legacy().await;
    let mut good = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut bad = Raw::connect(b.tcp_addr().unwrap(), "").await;
    // ACQUIRE (FF 01 90) whose route claims 50 bytes but carries one.
    bad.send_frame(&[0xFF, 0x01, 0x90, 0, 5, 0, 0, 0, 50, b'l']).await;
    assert!(closed(&mut bad).await);
    assert_eq!(acquire(&mut good, R, "g", 30, 0).await.unwrap().0, AcquireStatus::Acquired);
    // A route that cannot be split into realm/area/resource closes too.
    let mut short = Raw::connect(b.tcp_addr().unwrap(), "").await;
    short.send(&lease::Query { route: "lease://acme/jobs" }).await;
    assert!(closed(&mut short).await);
    // A decodable route with a bad rest is a coded 5008; the session stays.
    good.send(&fitz_wire::Typed::new(MsgType::LEASE_ACQUIRE, lease::Query { route: R })).await;
    assert_eq!(acquire_reply(&mut good).await, Err(5008));
    assert_eq!(acquire(&mut good, "lease://acme/*/x", "g", 30, 0).await, Err(5008), "wildcard ACQUIRE");
    assert!(query(&mut good, R).await.unwrap().holder.unwrap().0.ends_with(":g"));
}
