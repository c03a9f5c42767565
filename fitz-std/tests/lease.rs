//! Lease against fitz-testkit on every leg of the matrix (see support),
//! and the managed-lease helper of fitz-std.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fitz_std::core::ops::lease::{AcquireStatus, ListCursor, Observed};
use fitz_std::lease::{ManagedLease, Outcome};
use fitz_std::{Client, Error};
use fitz_testkit::{Broker, BrokerConfig, ClockMode, Dialect};
use fitz_wire::{Domain, Envelope};

/// Generous bound for anything the broker pushes or a reconnect.
const WAIT: Duration = Duration::from_secs(15);

/// `lease://<realm>/<leg>-<name>`: an area of this leg and test alone, so
/// selectors see only this test's leases.
fn area(leg: &support::Leg, name: &str) -> String {
    let any = leg.route("lease", "x");
    format!("{}-{name}", any.strip_suffix("/x").unwrap())
}

fn code(e: &Error) -> Option<u32> {
    match e {
        Error::Server(f) => f.code,
        _ => None,
    }
}

/// True if the leg's broker speaks the current dialect (asked of the
/// connection, so that a real broker is classified too).
fn is_current(c: &Client) -> bool {
    c.dialect().map(|(d, _)| d) == Some(Dialect::Current)
}

/// Polls QUERY until `pred` holds for the lease state.
async fn until_state(c: &Client, route: &str, what: &str, pred: impl Fn(bool, u32, Option<&str>) -> bool) {
    tokio::time::timeout(WAIT, async {
        loop {
            let info = c.lease().query(route).await.unwrap();
            if pred(info.is_held(), info.pending_waiters, info.owner()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{route}: never {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_renew_query_release() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let other = leg.client().await;
        let route = leg.route("lease", "basic");
        let l = c.lease().owner("worker-1").timeout_ms(10_000);

        let free = other.lease().query(&route).await.unwrap();
        assert!(!free.is_held());
        assert_eq!((free.owner(), free.ttl_remaining_secs, free.pending_waiters), (None, None, 0));

        let mut held = l.acquire(&route, 30).await.unwrap();
        assert_eq!((held.status(), held.waited()), (AcquireStatus::Acquired, false));
        assert_eq!((held.route(), held.owner_id(), held.ttl_secs()), (route.as_str(), "worker-1", 30));
        assert_eq!(held.epoch(), c.epoch());

        // The same owner again: the existing holding, same token. Dropping
        // that second handle leaves the lease alone.
        let again = l.acquire(&route, 30).await.unwrap();
        assert_eq!((again.status(), again.token()), (AcquireStatus::AlreadyHeld, held.token()));
        drop(again);

        let info = other.lease().query(&route).await.unwrap();
        assert!(info.is_held());
        assert!(info.owner().unwrap().ends_with("worker-1"), "{:?}", info.owner());
        assert!((1..=30).contains(&info.ttl_remaining_secs.unwrap()), "{info:?}");
        assert_eq!(info.pending_waiters, 0);

        let before = held.token();
        let token = held.renew().await.unwrap();
        assert_eq!(token, held.token());
        match leg.dialect {
            // The legacy broker issues a new token on every renewal, the
            // current one keeps it (WIRE.md C14, C73).
            Some(Dialect::Legacy) => assert_ne!(token, before),
            Some(Dialect::Current) => assert_eq!(token, before),
            None => {}
        }
        held.renew_for(120).await.unwrap();
        assert_eq!(held.ttl_secs(), 120);
        let info = other.lease().query(&route).await.unwrap();
        assert!(info.ttl_remaining_secs.unwrap() > 30, "{info:?}");

        held.release().await.unwrap();
        assert!(!other.lease().query(&route).await.unwrap().is_held());

        // A dropped handle schedules its release.
        {
            let _h = l.acquire(&route, 30).await.unwrap();
            assert!(other.lease().query(&route).await.unwrap().is_held());
        }
        until_state(&other, &route, "released by the dropped handle", |held, _, _| !held).await;
        c.close().await;
        other.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let a = leg.client().await;
        let b = leg.client().await;
        let route = leg.route("lease", "contended");
        let la = a.lease().owner("a").timeout_ms(10_000);
        let lb = b.lease().owner("b").timeout_ms(10_000);

        // Refused locally, nothing sent.
        for bad in ["lease://only/two", "lease://r/*/x", "kv://a/b/c"] {
            let e = la.acquire(bad, 30).await.err().unwrap();
            assert!(matches!(e, Error::Invalid(_)), "{bad}: {e:?}");
            let e = la.query(bad).await.unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad}: {e:?}");
        }
        let e = la.acquire_wait(&route, 30, 31).await.err().unwrap();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        let e = la.acquire(&route, 0).await.err().unwrap();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        let long = "o".repeat(513);
        let e = a.lease().owner(&long).acquire(&route, 30).await.err().unwrap();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");

        // Held by someone else: coded 5001, retryable.
        let held = la.acquire(&route, 30).await.unwrap();
        let e = lb.acquire(&route, 30).await.err().unwrap();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!(
            (f.code, f.retryable, f.envelope, f.domain),
            (Some(5001), true, Envelope::Coded, Some(Domain::Lease))
        );
        assert_eq!(f.name(), Some("ERR_LEASE_HELD"));
        // Waiting longer than the holder keeps it: 5006 in the deferred frame.
        let e = lb.acquire_wait(&route, 30, 1).await.err().unwrap();
        assert_eq!(code(&e), Some(5006), "{e:?}");
        held.release().await.unwrap();

        // A lease that expired and was taken by someone else: renewing or
        // releasing the old handle is refused.
        let short_route = leg.route("lease", "short");
        let mut short = la.acquire(&short_route, 1).await.unwrap();
        let taken = tokio::time::timeout(WAIT, lb.timeout_ms(40_000).acquire_wait(&short_route, 30, 30))
            .await
            .expect("never granted after expiry")
            .unwrap();
        let e = short.renew().await.unwrap_err();
        assert!(matches!(code(&e), Some(5003 | 5004)), "{e:?}");
        let e = short.release().await.unwrap_err();
        assert!(matches!(code(&e), Some(5002 | 5004)), "{e:?}");
        let info = a.lease().query(&short_route).await.unwrap();
        assert!(info.owner().unwrap().ends_with(":b"), "{info:?}");
        taken.release().await.unwrap();
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_acquire_gets_the_deferred_grant() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let a = leg.client().await;
        let b = leg.client().await;
        let route = leg.route("lease", "queued");
        let first = a.lease().owner("first").acquire(&route, 30).await.unwrap();

        let lb = b.lease().owner("second").timeout_ms(10_000);
        let acquiring = lb.acquire_wait(&route, 30, 20);
        tokio::pin!(acquiring);
        // B's own QUERY is answered after its Queued answer (one connection,
        // in order): once it reports the waiter, the Queued answer is in.
        tokio::select! {
            r = &mut acquiring => panic!("granted while held: {:?}", r.err()),
            () = until_state(&b, &route, "queued a waiter", |held, waiters, _| held && waiters == 1) => {}
        }
        // One more poll: the acquisition reads Queued and waits for the grant.
        assert!(tokio::time::timeout(Duration::ZERO, &mut acquiring).await.is_err());
        let first_token = first.token();
        first.release().await.unwrap();

        let granted = tokio::time::timeout(WAIT, acquiring).await.expect("no deferred grant").unwrap();
        assert!(granted.waited());
        assert_eq!(granted.status(), AcquireStatus::Acquired);
        assert_ne!(granted.token(), first_token);
        let info = a.lease().query(&route).await.unwrap();
        assert!(info.owner().unwrap().ends_with("second"), "{info:?}");
        assert_eq!(info.pending_waiters, 0);
        // The granted handle is a normal one.
        let mut granted = granted;
        granted.renew().await.unwrap();
        granted.release().await.unwrap();
        assert!(!a.lease().query(&route).await.unwrap().is_held());
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_report_changes() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let holder = leg.client().await;
        let base = area(&leg, "watch");
        let route = format!("{base}/one");
        let mut w = c.lease().subscribe(&route).await.unwrap();
        let h = holder.lease().acquire(&route, 30).await.unwrap();
        let n = tokio::time::timeout(WAIT, w.next()).await.expect("no NOTIFY on acquire").unwrap().unwrap();
        assert_eq!(n.route(), route);
        h.release().await.unwrap();
        let n = tokio::time::timeout(WAIT, w.next()).await.expect("no NOTIFY on release").unwrap().unwrap();
        assert_eq!(n.route(), route);

        let selector = format!("{base}/*");
        if is_current(&c) {
            let mut all = c.lease().subscribe(&selector).await.unwrap();
            let two = format!("{base}/two");
            let h = holder.lease().acquire(&two, 30).await.unwrap();
            let n = tokio::time::timeout(WAIT, all.next()).await.expect("no wildcard NOTIFY").unwrap().unwrap();
            assert_eq!(n.route(), two);
            h.release().await.unwrap();
        } else {
            let e = c.lease().subscribe(&selector).await.err().unwrap();
            assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        }
        let e = c.lease().subscribe("lease://only/two").await.err().unwrap();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        c.close().await;
        holder.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_in_the_current_dialect() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let l = c.lease().owner("lister").timeout_ms(10_000);
        let base = area(&leg, "list");
        let selector = format!("{base}/*");
        if !is_current(&c) {
            let e = l.list(&selector, None, 0).await.unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
            let mut pages = l.list_pages(&selector, 2);
            let e = pages.next().await.unwrap().unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
            assert!(pages.next().await.is_none());
            let e = l.observe(&selector).await.err().unwrap();
            assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
            // Nothing reached the broker (a legacy one closes on LIST).
            let epoch = c.epoch();
            assert!(!l.query(&format!("{base}/r0")).await.unwrap().is_held());
            assert_eq!(c.epoch(), epoch);
            c.close().await;
            return;
        }
        let routes: Vec<String> = (0..5).map(|i| format!("{base}/r{i}")).collect();
        let mut held = Vec::new();
        for r in &routes {
            held.push(l.acquire(r, 60).await.unwrap());
        }

        let mut pages = l.list_pages(&selector, 2);
        let (mut sizes, mut seen, mut incarnations) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            sizes.push((page.len(), page.next.is_some()));
            for e in page.entries() {
                assert_eq!((e.owner_id(), e.renewals), ("lister", 0));
                assert!((1..=60).contains(&e.expires_in_secs), "{e:?}");
                assert!(e.acquired_at().contains('T'), "{}", e.acquired_at());
                incarnations.insert(e.holder_incarnation);
                seen.insert(e.route().to_owned());
            }
        }
        assert_eq!(sizes, vec![(2, true), (2, true), (1, false)]);
        assert_eq!(seen, routes.iter().cloned().collect::<BTreeSet<_>>());
        assert_eq!(incarnations.len(), 1, "one session holds them all");

        // An exact pattern: one page, no cursor; a renewal is counted.
        held[0].renew().await.unwrap();
        let page = l.list(&routes[0], None, 0).await.unwrap();
        let entries: Vec<_> = page.entries().collect();
        assert_eq!((entries.len(), page.next), (1, None));
        assert_eq!((entries[0].route(), entries[0].renewals), (routes[0].as_str(), 1));
        let page = l.list(&format!("{base}/none"), None, 0).await.unwrap();
        assert!(page.is_empty());

        // A cursor the broker never issued: coded 5011.
        let bogus = ListCursor { snapshot_id: 0x5eed, offset: 2 };
        let e = l.list(&selector, Some(bogus), 2).await.unwrap_err();
        assert_eq!(code(&e), Some(5011), "{e:?}");
        let e = l.list("lease://only/two", None, 0).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");

        for h in held {
            h.release().await.unwrap();
        }
        assert!(l.list(&selector, None, 0).await.unwrap().is_empty());
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_lists_then_follows() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        if !is_current(&c) {
            // Covered by list_pages_in_the_current_dialect.
            c.close().await;
            return;
        }
        let owner = leg.client().await;
        let l = owner.lease().owner("obs").timeout_ms(10_000);
        let base = area(&leg, "observe");
        let routes: Vec<String> = (0..3).map(|i| format!("{base}/o{i}")).collect();
        let mut held = Vec::new();
        for r in &routes {
            held.push(l.acquire(r, 60).await.unwrap());
        }

        let mut obs = c.lease().timeout_ms(10_000).observe(&format!("{base}/*")).await.unwrap();
        assert_eq!(obs.selector(), format!("{base}/*"));
        let mut snapshot = BTreeSet::new();
        loop {
            match tokio::time::timeout(WAIT, obs.next()).await.expect("observer stalled").unwrap().unwrap() {
                Observed::Holder(e) => {
                    assert_eq!(e.owner_id(), "obs");
                    snapshot.insert(e.route().to_owned());
                }
                Observed::Synced => break,
                other => panic!("before Synced: {other:?}"),
            }
        }
        assert_eq!(snapshot, routes.iter().cloned().collect::<BTreeSet<_>>());

        let extra = format!("{base}/o3");
        let h = l.acquire(&extra, 60).await.unwrap();
        match tokio::time::timeout(WAIT, obs.next()).await.expect("no change").unwrap().unwrap() {
            Observed::Held(e) => assert_eq!((e.route(), e.owner_id()), (extra.as_str(), "obs")),
            other => panic!("expected Held: {other:?}"),
        }
        held.remove(0).release().await.unwrap();
        match tokio::time::timeout(WAIT, obs.next()).await.expect("no change").unwrap().unwrap() {
            Observed::Released(ch) => assert_eq!(ch.route(), routes[0]),
            other => panic!("expected Released: {other:?}"),
        }
        h.release().await.unwrap();
        c.close().await;
        owner.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_is_stale_after_reconnect() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        if leg.url.starts_with("wss") {
            return;
        }
        let (relay, c) = leg.through_relay().await;
        let l = c.lease().owner("stale").timeout_ms(10_000);
        let route = leg.route("lease", "stale");
        let mut held = l.acquire(&route, 60).await.unwrap();
        let epoch = c.epoch();

        relay.cut_all();
        support::reconnected(&c, epoch).await;
        assert_eq!(held.renew().await.unwrap_err(), Error::StaleHandle);
        assert_eq!(held.release().await.unwrap_err(), Error::StaleHandle);

        // The broker released it with the old session: free to take again.
        let again = l.timeout_ms(40_000).acquire_wait(&route, 60, 30).await.unwrap();
        assert_eq!(again.epoch(), c.epoch());
        again.release().await.unwrap();
        c.close().await;
        relay.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_lease_renews_and_releases() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let other = leg.client().await;
        let route = leg.route("lease", "managed");
        let managed = ManagedLease::new(&route, Duration::from_secs(3)).owner("managed");
        assert_eq!((managed.ttl_secs(), managed.renew_every()), (3, Duration::from_secs(1)));
        let outcome = managed
            .run_with(&c, |mut fence| {
                let (other, route) = (other.clone(), route.clone());
                async move {
                    let first = fence.token();
                    while fence.renewals() < 4 {
                        assert!(tokio::time::timeout(WAIT, fence.renewed()).await.expect("no renewal"));
                    }
                    // Four renewals a second apart: longer than the TTL, and
                    // still held.
                    let info = other.lease().query(&route).await.unwrap();
                    assert!(info.owner().unwrap().ends_with(":managed"), "{info:?}");
                    (first, fence.renewals())
                }
            })
            .await
            .unwrap();
        let (_, renewals) = outcome.completed().expect("the lease was lost");
        assert!(renewals >= 4);
        assert!(!other.lease().query(&route).await.unwrap().is_held(), "not released after the work");

        // Held by someone else: nothing runs.
        let blocker = other.lease().acquire(&route, 30).await.unwrap();
        let ran = AtomicBool::new(false);
        let e = ManagedLease::run(&c, &route, Duration::from_secs(3), |_| async { ran.store(true, Ordering::SeqCst) })
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(5001), "{e:?}");
        assert!(!ran.load(Ordering::SeqCst));
        blocker.release().await.unwrap();
        c.close().await;
        other.close().await;
    })
    .await;
}

/// Sets its flag when dropped: the work future it lives in was cancelled.
struct Cancelled(Arc<AtomicBool>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Brokers with a manual clock (skipped against a real broker): time only
/// moves when the test says so, which makes renewals and expiry exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_lease_under_a_manual_clock() {
    if support::external() {
        eprintln!("skipped: needs fitz-testkit's manual clock");
        return;
    }
    for dialect in [Dialect::Legacy, Dialect::Current] {
        let cfg = BrokerConfig::anonymous().with_dialect(dialect).with_clock(ClockMode::Manual);
        let broker = Broker::start(cfg).await.unwrap();
        let connect = || Client::builder(broker.tcp_url().unwrap()).settle_window(Duration::from_millis(150)).connect();
        let (c, other) = (connect().await.unwrap(), connect().await.unwrap());
        let route = "lease://manual/clock/job";

        // Broker time runs 6 s, twice the TTL, in steps shorter than it,
        // each after a renewal: the lease stays held only through them.
        let outcome = ManagedLease::run(&c, route, Duration::from_secs(3), |mut fence| {
            let (broker, other) = (&broker, other.clone());
            async move {
                for _ in 0..3 {
                    assert!(tokio::time::timeout(WAIT, fence.renewed()).await.expect("no renewal"));
                    broker.advance(Duration::from_secs(2));
                }
                other.lease().query(route).await.unwrap().is_held()
            }
        })
        .await
        .unwrap();
        assert_eq!(outcome, Outcome::Completed(true), "{dialect:?}");

        // Time jumps past the TTL: the next renewal finds it expired, and
        // the work, which would run forever, is cancelled.
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let run = ManagedLease::run(&c, route, Duration::from_secs(3), move |_| async move {
            let _guard = Cancelled(flag);
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        let advance = async {
            started_rx.await.unwrap();
            broker.advance(Duration::from_secs(10));
        };
        let (outcome, ()) = tokio::time::timeout(WAIT, async { tokio::join!(run, advance) }).await.expect("not lost");
        let Outcome::Lost(e) = outcome.unwrap() else { panic!("{dialect:?}: the work completed") };
        assert_eq!(code(&e), Some(5003), "{dialect:?}: {e:?}");
        assert!(cancelled.load(Ordering::SeqCst), "the work was not dropped");
        assert!(!other.lease().query(route).await.unwrap().is_held());
        c.close().await;
        other.close().await;
        broker.stop().await;
    }
}
