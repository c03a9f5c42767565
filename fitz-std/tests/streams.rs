//! The typed subscriptions and RPC response streams as `futures::Stream`s:
//! `StreamExt` / `TryStreamExt` combinators over them, against fitz-testkit
//! (every leg of the matrix, see support; schedules on brokers whose clock
//! the test moves).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

mod support;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fitz_std::core::ops::kv::{Change, Changes, TxMode};
use fitz_std::core::ops::lease::{Changed, Watch};
use fitz_std::core::ops::notice::{self, Notices};
use fitz_std::core::ops::queue::{Availability, Available};
use fitz_std::core::ops::schedule::{DeliveryMode, Fire, Fires};
use fitz_std::core::ops::stream::{self, Notifications};
use fitz_std::rpc::{self, Call, Chunk, Invocation, TerminalError, Worker, WorkerEvent};
use fitz_std::{Error, Handle};
use fitz_testkit::{Broker, BrokerConfig, ClockMode, Dialect};
use futures_util::{Stream, StreamExt, TryStreamExt};

/// Generous bound for anything the broker should deliver promptly.
const WAIT: Duration = Duration::from_secs(10);
/// Deadline of calls that are expected to complete.
const CALL_MS: u64 = 10_000;

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// The next `n` items of `s` (through `StreamExt::take` + `collect`), the
/// stream itself staying usable.
async fn take<S: Stream + Unpin>(s: &mut S, n: usize) -> Vec<S::Item> {
    within(s.by_ref().take(n).collect::<Vec<_>>()).await
}

/// A `Stream` of exactly these items, `Unpin` and `Send` (what spawned
/// tasks and `StreamExt` need).
fn assert_stream<S: Stream<Item = Result<T, Error>> + Unpin + Send, T>() {}

#[test]
fn typed_wrappers_are_streams() {
    assert_stream::<Changes<Handle>, Change<Bytes>>();
    assert_stream::<Availability<Handle>, Available<Bytes>>();
    assert_stream::<Watch<Handle>, Changed<Bytes>>();
    assert_stream::<Notices<Handle>, notice::Notification<Bytes>>();
    assert_stream::<Notifications<Handle>, stream::Notification<Bytes>>();
    assert_stream::<Fires<Handle>, Fire<Bytes>>();
    assert_stream::<Call<Handle>, Chunk<Bytes>>();
    assert_stream::<Worker<Handle>, WorkerEvent<Handle>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_with_stream_combinators() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let route = leg.route("notice", "combinators");
        let other = leg.route("notice", "other");
        let mut sub = c.notice().subscribe(&leg.route("notice", "*")).await.unwrap();
        for i in 0..5 {
            c.notice().publish(&route, format!("n{i}").as_bytes()).await.unwrap();
        }

        // take(3).collect(): the first three, in publish order, with the
        // concrete route.
        let first: Vec<_> = take(&mut sub, 3).await.into_iter().map(Result::unwrap).collect();
        let got: Vec<_> = first.iter().map(|n| (n.route().to_owned(), n.body().to_vec())).collect();
        let want: Vec<_> = (0..3).map(|i| (route.clone(), format!("n{i}").into_bytes())).collect();
        assert_eq!(got, want);

        // map_ok + try_collect over the rest: the stream resumes where
        // take left it.
        let rest =
            within(sub.by_ref().take(2).map_ok(notice::Notification::into_body).try_collect::<Vec<_>>()).await.unwrap();
        assert_eq!(rest, vec![Bytes::from_static(b"n3"), Bytes::from_static(b"n4")]);

        // A `next()` future polled while nothing is queued, then dropped,
        // loses nothing: the notice published afterwards is the next item.
        {
            let mut pending = pin!(sub.next());
            let polled = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx).is_pending())).await;
            assert!(polled, "{}: nothing should be queued yet", leg.name);
        }
        c.notice().publish(&other, b"skipped").await.unwrap();
        c.notice().publish(&route, b"n5").await.unwrap();
        // filter: the notice on the other route is skipped, the one after
        // it comes through.
        let wanted = route.clone();
        let mut on_route = sub.by_ref().filter(|n| std::future::ready(n.as_ref().is_ok_and(|n| n.route() == wanted)));
        let n = within(StreamExt::next(&mut on_route)).await.expect("subscription ended").unwrap();
        assert_eq!(n.body().as_ref(), b"n5");

        // UNSUBSCRIBE_ALL ends the stream: collect returns.
        c.notice().unsubscribe_all().await.unwrap();
        let tail = within(sub.collect::<Vec<_>>()).await;
        assert!(tail.is_empty(), "{}: {} items after unsubscribe_all", leg.name, tail.len());
        c.close().await;
    })
    .await;
}

/// The first request a worker receives, through its `Stream`.
async fn request(w: &mut Worker<Handle>) -> Invocation<Handle> {
    let mut requests = w.by_ref().filter_map(|ev| {
        std::future::ready(match ev.unwrap() {
            WorkerEvent::Request(inv) => Some(inv),
            WorkerEvent::Cancelled(_) | WorkerEvent::Restored => None,
        })
    });
    within(StreamExt::next(&mut requests)).await.expect("worker ended")
}

fn server_code(e: &Error) -> Option<u32> {
    match e {
        Error::Server(f) => f.code,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_response_chunks_as_a_stream() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let worker_client = leg.client().await;
        let caller = leg.client().await;
        let route = leg.route("rpc", "stream-ext");
        let mut w = worker_client.rpc().serve(&route, 2).await.unwrap();

        // A streamed reply, collected with TryStreamExt.
        let call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"count", rpc::new_id()).await.unwrap();
        let (req, mut responder) = request(&mut w).await.into_parts();
        assert_eq!((req.route(), req.body().as_ref()), (route.as_str(), &b"count"[..]));
        for body in [&b"a"[..], b"b", b"c"] {
            responder.send(body).await.unwrap();
        }
        responder.finish(b"end").await.unwrap();
        let got = within(call.map_ok(|c| (c.sequence, c.last, c.body.to_vec())).try_collect::<Vec<_>>()).await.unwrap();
        assert_eq!(
            got,
            vec![
                (0, false, b"a".to_vec()),
                (1, false, b"b".to_vec()),
                (2, false, b"c".to_vec()),
                (3, true, b"end".to_vec())
            ]
        );

        // A terminal error chunk is the last item: the stream ends after
        // it (collect returns), and try_collect stops at it.
        let call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"fail", rpc::new_id()).await.unwrap();
        let (_, mut responder) = request(&mut w).await.into_parts();
        responder.send(b"partial").await.unwrap();
        responder.fail(TerminalError::new(6010, "boom").unwrap()).await.unwrap();
        let items = within(call.collect::<Vec<_>>()).await;
        assert_eq!(items.len(), 2, "{}: {items:?}", leg.name);
        assert_eq!(items[0].as_ref().unwrap().body.as_ref(), b"partial");
        assert_eq!(server_code(items[1].as_ref().unwrap_err()), Some(6010), "{:?}", items[1]);

        let mut call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"fail again", rpc::new_id()).await.unwrap();
        let (_, responder) = request(&mut w).await.into_parts();
        responder.fail(TerminalError::new(6010, "again").unwrap()).await.unwrap();
        let e = within(call.by_ref().try_collect::<Vec<_>>()).await.unwrap_err();
        assert_eq!(server_code(&e), Some(6010), "{e:?}");
        // Ended: the inherent `next` and the Stream agree.
        assert!(call.next().await.is_none());
        assert!(StreamExt::next(&mut call).await.is_none());

        worker_client.close().await;
        caller.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_changes_as_a_stream() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let mut changes = c.kv().subscribe(&leg.route("kv", "*")).await.unwrap();
        let mut want = Vec::new();
        for (name, writes) in [("s1", 1u64), ("s2", 2), ("s3", 3)] {
            let route = leg.route("kv", name);
            let tx = c.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
            for k in 0..writes {
                tx.put(&k.to_be_bytes(), b"v").await.unwrap();
            }
            tx.commit().await.unwrap();
            want.push((route, writes));
        }
        let got: Vec<(String, u64)> =
            within(changes.by_ref().take(3).map_ok(|ch| (ch.route().to_owned(), ch.mutation_count)).try_collect())
                .await
                .unwrap();
        assert_eq!(got, want);
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_availability_as_a_stream() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let q = c.queue().timeout_ms(10_000);
        let base = format!("{}-streams", leg.route("queue", "x").strip_suffix("/x").unwrap());
        let mut avail = q.subscribe(&format!("{base}/*")).await.unwrap();
        let (one, two) = (format!("{base}/one"), format!("{base}/two"));
        q.enqueue(&one, b"1").await.unwrap();
        q.enqueue(&two, b"2").await.unwrap();
        let mut got: Vec<_> = take(&mut avail, 2)
            .await
            .into_iter()
            .map(|n| {
                let n = n.unwrap();
                (n.route().to_owned(), n.ready, n.inflight)
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![(one, 1, 0), (two, 1, 0)]);
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_notifications_and_lease_watch_as_streams() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let holder = leg.client().await;

        // Stream: one commit, one notification.
        let s = c.stream();
        let route = leg.route("stream", "streams-notes");
        let mut notes = s.subscribe(&route).await.unwrap();
        let a = s.begin(&route).await.unwrap();
        a.append(0, b"e0").await.unwrap();
        a.append(1, b"e1").await.unwrap();
        a.commit().await.unwrap();
        let n = within(StreamExt::next(&mut notes)).await.expect("subscription ended").unwrap();
        assert_eq!(n.route(), route);
        let sum = n.summary();
        assert_eq!((sum.event, sum.batch_size), ("committed", 2));

        // Lease: acquire and release, two changes of the route.
        let lease = leg.route("lease", "streams");
        let mut watch = c.lease().subscribe(&lease).await.unwrap();
        let h = holder.lease().acquire(&lease, 30).await.unwrap();
        h.release().await.unwrap();
        let routes: Vec<String> =
            within(watch.by_ref().take(2).map_ok(|ch| ch.route().to_owned()).try_collect()).await.unwrap();
        assert_eq!(routes, vec![lease.clone(), lease]);
        c.close().await;
        holder.close().await;
    })
    .await;
}

/// Fires through the Stream: the broker's clock is manual, so every minute
/// boundary is one `advance`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_fires_as_a_stream() {
    if support::external() {
        // Real minute boundaries: covered by tests/schedule.rs.
        return;
    }
    for dialect in [Dialect::Legacy, Dialect::Current] {
        let b =
            Broker::start(BrokerConfig::anonymous().with_dialect(dialect).with_clock(ClockMode::Manual)).await.unwrap();
        for url in [b.tcp_url().unwrap(), b.ws_url().unwrap()] {
            let name = format!("{url} {dialect:?}");
            let c = fitz_std::Client::builder(url.clone())
                .settle_window(Duration::from_millis(150))
                .connect()
                .await
                .unwrap();
            let area = if url.starts_with("ws") { "ws" } else { "tcp" };
            let route = format!("schedule://acme/{area}/streams/tick");
            let mut fires = c.schedule().subscribe(&format!("schedule://acme/{area}/streams/*")).await.unwrap();
            c.schedule().create(&route, "* * * * *", DeliveryMode::Broadcast, b"tick").await.unwrap();
            b.advance(Duration::from_secs(60));
            b.advance(Duration::from_secs(60));
            let got: Vec<_> =
                within(fires.by_ref().take(2).map_ok(|f| (f.route().to_owned(), f.payload.to_vec())).try_collect())
                    .await
                    .unwrap();
            assert_eq!(got, vec![(route.clone(), b"tick".to_vec()); 2], "{name}");
            c.schedule().cancel(&route).await.unwrap();
            c.close().await;
        }
    }
}
