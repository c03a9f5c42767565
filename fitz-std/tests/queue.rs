//! Queue against fitz-testkit on every leg of the matrix (see support).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

mod support;

use std::time::Duration;

use fitz_std::core::ops::queue::{CountersForm, Reserve};
use fitz_std::{Client, Error};
use fitz_testkit::{Broker, BrokerConfig, Dialect};
use fitz_wire::{Domain, Envelope, MsgType};

/// Generous bound for anything the broker pushes or a reconnect.
const WAIT: Duration = Duration::from_secs(15);

/// `queue://<realm>/<leg>-<name>`: an area of this leg and test alone, so
/// wildcards see only this test's queues.
fn area(leg: &support::Leg, name: &str) -> String {
    let any = leg.route("queue", "x");
    format!("{}-{name}", any.strip_suffix("/x").unwrap())
}

fn bodies(page: &fitz_std::core::ops::queue::ReservedPage<fitz_std::Handle>) -> Vec<Vec<u8>> {
    page.messages().map(|m| m.body().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_reserve_extend_complete() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let q = c.queue().timeout_ms(10_000);
        let route = leg.route("queue", "work");
        let mut ids = Vec::new();
        for body in [&b"one"[..], b"two", b"three"] {
            ids.push(q.enqueue(&route, body).await.unwrap());
        }
        assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");

        let page = q.reserve_with(&route, Reserve { lease_seconds: 30, batch: 2, wait_seconds: 0 }).await.unwrap();
        assert_eq!(page.len(), 2);
        assert!(!page.is_routed());
        assert_eq!(page.route(), route);
        assert_eq!(bodies(&page), vec![b"one".to_vec(), b"two".to_vec()]);
        let msgs: Vec<_> = page.messages().collect();
        assert_eq!(msgs[0].message_id(), ids[0]);
        assert_eq!(msgs[1].message_id(), ids[1]);
        assert_eq!(msgs[0].route(), route);
        assert_eq!(msgs[0].epoch(), c.epoch());
        msgs[0].extend(60).await.unwrap();
        msgs[1].extend(1).await.unwrap();
        for msg in msgs {
            msg.complete().await.unwrap();
        }
        // A completed message is gone for good.
        let rest = q.reserve_with(&route, Reserve { batch: 10, ..Reserve::default() }).await.unwrap();
        assert_eq!(bodies(&rest), vec![b"three".to_vec()]);
        let last = rest.messages().next().unwrap();
        assert_eq!(last.message_id(), ids[2]);
        last.complete().await.unwrap();
        let empty = q.reserve(&route, 30).await.unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.messages().count(), 0);
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_reserve_carries_concrete_routes() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let q = c.queue().timeout_ms(10_000);
        let base = area(&leg, "wild");
        let (a, b) = (format!("{base}/a"), format!("{base}/b"));
        q.enqueue(&a, b"for-a").await.unwrap();
        q.enqueue(&b, b"for-b").await.unwrap();
        let pattern = format!("{base}/*");
        let page = q.reserve_with(&pattern, Reserve { batch: 10, ..Reserve::default() }).await.unwrap();
        assert!(page.is_routed());
        let mut got: Vec<(String, Vec<u8>)> =
            page.messages().map(|m| (m.route().to_owned(), m.body().to_vec())).collect();
        got.sort();
        assert_eq!(got, vec![(a.clone(), b"for-a".to_vec()), (b.clone(), b"for-b".to_vec())]);
        // Acknowledged through each item's concrete route.
        for msg in page.messages() {
            msg.extend(30).await.unwrap();
            msg.complete().await.unwrap();
        }
        assert!(q.reserve(&a, 30).await.unwrap().is_empty());
        assert!(q.reserve(&pattern, 30).await.unwrap().is_empty());
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_and_long_polls() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let q = c.queue().timeout_ms(10_000);

        // Far in the future: invisible now.
        let later = leg.route("queue", "later");
        q.enqueue_after(&later, b"later", 600).await.unwrap();
        assert!(q.reserve(&later, 30).await.unwrap().is_empty());

        // Matures while a long poll waits for it.
        let soon = leg.route("queue", "soon");
        let id = q.enqueue_after(&soon, b"soon", 1).await.unwrap();
        let got = tokio::time::timeout(WAIT, async {
            loop {
                let page = q.reserve_with(&soon, Reserve { wait_seconds: 5, ..Reserve::default() }).await.unwrap();
                if let Some(msg) = page.messages().next() {
                    return msg;
                }
            }
        })
        .await
        .expect("the delayed message never became ready");
        assert_eq!((got.message_id(), got.body().as_ref()), (id, &b"soon"[..]));
        got.complete().await.unwrap();

        // A parked RESERVE is answered by a later ENQUEUE from elsewhere.
        let polled = leg.route("queue", "polled");
        let poller = {
            let c = c.clone();
            let polled = polled.clone();
            tokio::spawn(async move {
                let q = c.queue().timeout_ms(10_000);
                let page = q.reserve_with(&polled, Reserve { wait_seconds: 20, ..Reserve::default() }).await.unwrap();
                let msg = page.messages().next().expect("long poll answered empty");
                let body = msg.body().to_vec();
                msg.complete().await.unwrap();
                body
            })
        };
        let producer = leg.client().await;
        // Give the RESERVE time to park; if it has not, it finds the
        // message ready instead, which the assertion accepts too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        producer.queue().enqueue(&polled, b"woken").await.unwrap();
        let body = tokio::time::timeout(WAIT, poller).await.expect("long poll never answered").unwrap();
        assert_eq!(body, b"woken");
        producer.close().await;
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_notifications() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let q = c.queue().timeout_ms(10_000);
        let base = area(&leg, "avail");
        let route = format!("{base}/jobs");
        let mut avail = q.subscribe(&format!("{base}/*")).await.unwrap();
        q.enqueue(&route, b"x").await.unwrap();
        let n = tokio::time::timeout(WAIT, avail.next()).await.expect("no notification").unwrap().unwrap();
        assert_eq!(n.route(), route);
        assert_eq!((n.ready, n.delayed, n.inflight), (1, 0, 0));
        if leg.dialect.is_some() {
            assert_eq!(n.form, CountersForm::Inline);
        }
        // Drain the queue: the next enqueue is a new 0 → 1 edge.
        let page = q.reserve(&route, 30).await.unwrap();
        page.messages().next().unwrap().complete().await.unwrap();
        q.enqueue(&route, b"y").await.unwrap();
        let n = tokio::time::timeout(WAIT, avail.next()).await.expect("no second notification").unwrap().unwrap();
        assert_eq!((n.route(), n.ready), (route.as_str(), 1));

        // An exact-route subscription on a queue that already has ready
        // messages hears about it right away.
        let mut exact = q.subscribe(&route).await.unwrap();
        let n = tokio::time::timeout(WAIT, exact.next()).await.expect("no initial notification").unwrap().unwrap();
        assert_eq!(n.route(), route);
        assert!(n.ready >= 1);

        let e = q.subscribe("queue://only/two").await.err().unwrap();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let q = c.queue().timeout_ms(10_000);
        let route = leg.route("queue", "errors");

        // Refused locally: nothing the broker would close the connection on.
        for bad in ["queue://only/two", "kv://a/b/c", "queue://a/*/c"] {
            let e = q.enqueue(bad, b"x").await.unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad}: {e:?}");
        }
        for batch in [0, 1025] {
            let e = q.reserve_with(&route, Reserve { batch, ..Reserve::default() }).await.err().unwrap();
            assert!(matches!(e, Error::Invalid(_)), "{batch}: {e:?}");
        }
        let e = q.reserve("queue://a/b/c/d", 30).await.err().unwrap();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");

        // A reservation that expired and was handed out again: the old
        // handle's token is refused with the uncoded envelope.
        q.enqueue(&route, b"short").await.unwrap();
        let first = q.reserve(&route, 1).await.unwrap();
        let old = first.messages().next().unwrap();
        let again = tokio::time::timeout(WAIT, async {
            loop {
                let page = q.reserve_with(&route, Reserve { lease_seconds: 30, wait_seconds: 5, ..Reserve::default() });
                if let Some(msg) = page.await.unwrap().messages().next() {
                    return msg;
                }
            }
        })
        .await
        .expect("the expired reservation never came back");
        assert_eq!(again.message_id(), old.message_id());
        assert_ne!(again.lease_token(), old.lease_token());
        let e = old.extend(30).await.unwrap_err();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!((f.envelope, f.code, f.domain), (Envelope::Uncoded, None, Some(Domain::Queue)), "{e:?}");
        assert!(!f.message.is_empty());
        let e = old.complete().await.unwrap_err();
        assert!(matches!(&e, Error::Server(f) if f.code.is_none()), "{e:?}");
        again.complete().await.unwrap();

        // A coded broker error: a read-only token may not enqueue.
        if leg.token.is_some() {
            let ro = Client::builder(leg.url.clone())
                .settle_window(Duration::from_millis(150))
                .token(support::token_with(&["queue://**#read"]))
                .connect()
                .await
                .unwrap();
            let e = ro.queue().enqueue(&route, b"nope").await.unwrap_err();
            let Error::Server(f) = &e else { panic!("{e:?}") };
            assert_eq!((f.code, f.retryable), (Some(4009), false), "{e:?}");
            // The session stays usable.
            assert!(ro.queue().subscribe(&route).await.is_ok());
            ro.close().await;
        }
        c.close().await;
    })
    .await;
}

/// Broker error codes a real broker only sends under load, injected into
/// fitz-testkit (skipped against a real broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_broker_errors() {
    if support::external() {
        eprintln!("skipped: needs fitz-testkit's error injection");
        return;
    }
    for dialect in [Dialect::Legacy, Dialect::Current] {
        let broker = Broker::start(BrokerConfig::anonymous().with_dialect(dialect)).await.unwrap();
        let c = Client::builder(broker.tcp_url().unwrap())
            .settle_window(Duration::from_millis(150))
            .connect()
            .await
            .unwrap();
        let q = c.queue().timeout_ms(10_000);
        let route = "queue://inject/q/full";

        broker.inject_error(MsgType::QUEUE_ENQUEUE, Some(4005), "queue full");
        let e = q.enqueue(route, b"x").await.unwrap_err();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!((f.code, f.retryable, f.envelope), (Some(4005), true, Envelope::Coded), "{e:?}");
        assert_eq!(f.name(), Some("ERR_QUEUE_FULL"));
        // Retried after the backpressure: accepted.
        q.enqueue(route, b"x").await.unwrap();

        broker.inject_error(MsgType::QUEUE_RESERVE, Some(4007), "backend unavailable");
        let e = q.reserve(route, 30).await.err().unwrap();
        assert!(matches!(&e, Error::Server(f) if f.code == Some(4007)), "{e:?}");
        let page = q.reserve(route, 30).await.unwrap();
        let msg = page.messages().next().unwrap();

        // The current dialect's coded acknowledgement errors (§B7).
        broker.inject_error(MsgType::QUEUE_EXTEND, Some(4005), "not admitted");
        let e = msg.extend(30).await.unwrap_err();
        assert!(matches!(&e, Error::Server(f) if f.code == Some(4005) && f.retryable), "{e:?}");
        msg.extend(30).await.unwrap();
        // A domain error of COMPLETE travels uncoded: no code, the text kept.
        broker.inject_error(MsgType::QUEUE_COMPLETE, None, "outcome unknown");
        let e = page.messages().next().unwrap().complete().await.unwrap_err();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!((f.code, f.envelope, f.message.as_str()), (None, Envelope::Uncoded, "outcome unknown"));
        msg.complete().await.unwrap();
        assert!(q.reserve(route, 30).await.unwrap().is_empty());
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_message_is_stale_after_reconnect() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        if leg.url.starts_with("wss") {
            return;
        }
        let (relay, c) = leg.through_relay().await;
        let q = c.queue().timeout_ms(10_000);
        let route = leg.route("queue", "stale");
        q.enqueue(&route, b"kept").await.unwrap();
        let page = q.reserve(&route, 60).await.unwrap();
        let msg = page.messages().next().unwrap();
        let epoch = c.epoch();
        assert_eq!(msg.epoch(), epoch);

        relay.cut_all();
        support::reconnected(&c, epoch).await;
        let e = msg.extend(30).await.unwrap_err();
        assert_eq!(e, Error::StaleHandle);
        let e = msg.complete().await.unwrap_err();
        assert_eq!(e, Error::StaleHandle);

        // The broker put the message back when the old session ended.
        let again = tokio::time::timeout(WAIT, async {
            loop {
                let page = q.reserve_with(&route, Reserve { wait_seconds: 5, ..Reserve::default() }).await.unwrap();
                if let Some(msg) = page.messages().next() {
                    return msg;
                }
            }
        })
        .await
        .expect("message not redelivered");
        assert_eq!(again.body().as_ref(), b"kept");
        again.complete().await.unwrap();
        c.close().await;
        relay.stop().await;
    })
    .await;
}
