//! Notices against fitz-testkit on every leg of the matrix (see support).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use fitz_std::core::ops::notice::{Notices, Notification};
use fitz_std::core::{Core, Shared};
use fitz_std::{Client, Error, Handle};

/// Generous bound for anything the broker should deliver promptly.
const WAIT: Duration = Duration::from_secs(10);

async fn next(sub: &mut Notices<Handle>) -> Notification<Bytes> {
    tokio::time::timeout(WAIT, sub.next()).await.expect("no notice in time").expect("subscription ended").unwrap()
}

async fn ended(sub: &mut Notices<Handle>) -> bool {
    tokio::time::timeout(WAIT, sub.next()).await.expect("subscription still open").is_none()
}

/// NOTIFY records of this client that matched no local subscriber.
fn unmatched(c: &Client) -> u64 {
    c.shared().with(|e| e.unmatched())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fans_out_to_every_matching_subscription() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let a = leg.client().await;
        let b = leg.client().await;
        let route = leg.route("notice", "fan");
        let pattern = leg.route("notice", "*");
        let mut a_exact = a.notice().subscribe(&route).await.unwrap();
        let mut a_wild = a.notice().subscribe(&pattern).await.unwrap();
        let mut b_wild = b.notice().subscribe(&pattern).await.unwrap();
        a.notice().publish(&route, b"one").await.unwrap();
        a.notice().publish(&route, b"two").await.unwrap();
        // Every subscription (the publisher's own included) gets both, in
        // publish order, with the concrete route.
        for sub in [&mut a_exact, &mut a_wild, &mut b_wild] {
            for body in [&b"one"[..], b"two"] {
                let n = next(sub).await;
                assert_eq!(n.route(), route);
                assert_eq!(n.body().as_ref(), body);
            }
        }
        // A route the pattern does not match reaches nobody.
        let elsewhere = leg.route("notice", "fan").replace("/fan", "-other/fan");
        b.notice().publish(&elsewhere, b"three").await.unwrap();
        b.notice().publish(&route, b"four").await.unwrap();
        assert_eq!(next(&mut b_wild).await.body().as_ref(), b"four");
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_subscribers_of_one_pattern_share_a_registration() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let route = leg.route("notice", "shared");
        let pattern = leg.route("notice", "*");
        let mut first = c.notice().subscribe(&pattern).await.unwrap();
        let mut second = c.notice().subscribe(&pattern).await.unwrap();
        let before = unmatched(&c);
        c.notice().publish(&route, b"x").await.unwrap();
        // The broker sends one NOTIFY for the one pattern string; both
        // local subscribers get it.
        assert_eq!(next(&mut first).await.body().as_ref(), b"x");
        let n = next(&mut second).await;
        assert_eq!((n.route(), n.body().as_ref()), (route.as_str(), &b"x"[..]));
        // The first one leaves: the registration stays for the second.
        first.unsubscribe();
        c.notice().publish(&route, b"y").await.unwrap();
        assert_eq!(next(&mut second).await.into_body().as_ref(), b"y");
        assert_eq!(unmatched(&c), before);
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let other = leg.client().await;
        let gone = leg.route("notice", "gone");
        let probe = leg.route("notice", "probe");
        let mut sub = c.notice().subscribe(&gone).await.unwrap();
        let mut probe_sub = c.notice().subscribe(&probe).await.unwrap();
        let mut witness = other.notice().subscribe(&gone).await.unwrap();
        c.notice().publish(&gone, b"before").await.unwrap();
        assert_eq!(next(&mut sub).await.body().as_ref(), b"before");
        assert_eq!(next(&mut witness).await.body().as_ref(), b"before");

        sub.unsubscribe();
        let before = unmatched(&c);
        c.notice().publish(&gone, b"after").await.unwrap();
        c.notice().publish(&probe, b"probe").await.unwrap();
        // The notice was published (another session still gets it)...
        assert_eq!(next(&mut witness).await.body().as_ref(), b"after");
        // ...and this connection's deliveries are in order: had the broker
        // still held the subscription, its NOTIFY would have come (and
        // matched nothing) before the probe's.
        assert_eq!(next(&mut probe_sub).await.body().as_ref(), b"probe");
        assert_eq!(unmatched(&c), before);
        c.close().await;
        other.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_all_ends_every_subscription() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let exact = leg.route("notice", "all");
        let pattern = leg.route("notice", "*");
        let mut s1 = c.notice().subscribe(&exact).await.unwrap();
        let mut s2 = c.notice().subscribe(&pattern).await.unwrap();
        let mut s3 = c.notice().subscribe(&pattern).await.unwrap();
        c.notice().publish(&exact, b"live").await.unwrap();
        for s in [&mut s1, &mut s2, &mut s3] {
            assert_eq!(next(s).await.body().as_ref(), b"live");
        }

        c.notice().timeout_ms(10_000).unsubscribe_all().await.unwrap();
        for s in [&mut s1, &mut s2, &mut s3] {
            assert!(ended(s).await);
        }
        // New subscriptions work, and the old ones are gone on the broker:
        // their NOTIFYs would arrive before the probe's and match nothing.
        let probe = leg.route("notice", "after-all");
        let mut probe_sub = c.notice().subscribe(&probe).await.unwrap();
        let before = unmatched(&c);
        c.notice().publish(&exact, b"dead").await.unwrap();
        c.notice().publish(&probe, b"probe").await.unwrap();
        let n = next(&mut probe_sub).await;
        assert_eq!((n.route(), n.body().as_ref()), (probe.as_str(), &b"probe"[..]));
        assert_eq!(unmatched(&c), before);
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_routes_are_refused_locally() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let n = c.notice();
        let wild = leg.route("notice", "*");
        for route in [wild.as_str(), "notice://realm/area", "notice://a/b/c/d", "kv://a/b/c", "notice://a//c"] {
            let e = n.publish(route, b"x").await.unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{route}: {e:?}");
        }
        for pattern in ["notice://a/ord*/c", "rpc://a/b/c", "notice://a/**/**/c", "notice:/a/b/c"] {
            let e = n.subscribe(pattern).await.err().unwrap();
            assert!(matches!(e, Error::Invalid(_)), "{pattern}: {e:?}");
        }
        // Nothing was sent: the connection is fine.
        let route = leg.route("notice", "valid");
        let mut sub = n.subscribe(&route).await.unwrap();
        n.publish(&route, b"ok").await.unwrap();
        assert_eq!(next(&mut sub).await.body().as_ref(), b"ok");
        c.close().await;
    })
    .await;
}
