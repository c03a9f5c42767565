//! RPC against fitz-testkit on every leg of the matrix (see support).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use fitz_std::rpc::{
    self, CAP_CANCELLATION, CancelStatus, Cancellation, Failure, Invocation, SignalReason, TerminalError, Worker,
    WorkerEvent,
};
use fitz_std::{Error, Handle};
use fitz_testkit::Dialect;
use fitz_wire::Domain;

/// Generous bound for anything the broker should do promptly.
const WAIT: Duration = Duration::from_secs(10);
/// Deadline of calls that are expected to complete.
const CALL_MS: u64 = 10_000;

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

async fn next_event(w: &mut Worker<Handle>) -> WorkerEvent<Handle> {
    loop {
        match within(w.next()).await.expect("worker ended").unwrap() {
            WorkerEvent::Restored => continue,
            ev => return ev,
        }
    }
}

async fn next_request(w: &mut Worker<Handle>) -> Invocation<Handle> {
    match next_event(w).await {
        WorkerEvent::Request(inv) => inv,
        WorkerEvent::Cancelled(c) => panic!("expected a request, got {c:?}"),
        WorkerEvent::Restored => unreachable!(),
    }
}

async fn next_cancel(w: &mut Worker<Handle>) -> Cancellation {
    match next_event(w).await {
        WorkerEvent::Cancelled(c) => c,
        WorkerEvent::Request(inv) => panic!("expected a cancellation, got a request for {}", inv.request.route()),
        WorkerEvent::Restored => unreachable!(),
    }
}

/// True if the worker has nothing queued right now (polled once).
async fn idle(w: &mut Worker<Handle>) -> bool {
    let mut next = std::pin::pin!(w.next());
    std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx).is_pending())).await
}

fn server_code(e: &Error) -> Option<u32> {
    match e {
        Error::Server(f) => f.code,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reaches_worker_and_returns_reply() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let worker_client = leg.client().await;
        let caller = leg.client().await;
        let cancellation = caller.has(CAP_CANCELLATION);
        if let Some(d) = leg.dialect {
            // fitz-testkit advertises every capability in the current dialect.
            assert_eq!(cancellation, d == Dialect::Current);
        }
        let route = leg.route("rpc", "echo");
        let mut w = worker_client.rpc().serve(&route, 4).await.unwrap();
        assert_eq!(w.supports_cancellation(), cancellation);

        // Random version-4 UUIDs.
        let id = rpc::new_id();
        assert_ne!(id, rpc::new_id());
        assert_eq!((id.0[6] >> 4, id.0[8] >> 6), (4, 0b10));
        let call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"ping", id).await.unwrap();
        assert_eq!(call.id(), id);
        let inv = next_request(&mut w).await;
        assert_eq!(inv.request.route(), route);
        assert_eq!(inv.request.body().as_ref(), b"ping");
        if cancellation {
            // A fresh invocation UUID and the remaining budget.
            assert_ne!(inv.request.id(), id);
            let budget = inv.request.budget_ms().unwrap();
            assert!(budget > 0 && u64::from(budget) <= CALL_MS, "{budget}");
        } else {
            assert_eq!(inv.request.id(), id);
            assert_eq!(inv.request.budget_ms(), None);
        }
        assert_eq!(inv.responder.id(), inv.request.id());
        inv.responder.finish(b"pong").await.unwrap();
        assert_eq!(within(call.reply()).await.unwrap().as_ref(), b"pong");

        // A wildcard worker, and a one-shot call through it.
        let wild = leg.route("rpc", "wild/*");
        let op = leg.route("rpc", "wild/op");
        let mut ww = worker_client.rpc().serve(&wild, 1).await.unwrap();
        let pending = tokio::spawn({
            let caller = caller.clone();
            let op = op.clone();
            async move { caller.rpc().timeout_ms(CALL_MS).call_once(&op, b"hi", rpc::new_id()).await }
        });
        let inv = next_request(&mut ww).await;
        assert_eq!(inv.request.route(), op);
        let (req, responder) = inv.into_parts();
        let mut echo = b"re:".to_vec();
        echo.extend_from_slice(req.body());
        responder.finish(&echo).await.unwrap();
        assert_eq!(within(pending).await.unwrap().unwrap().as_ref(), b"re:hi");

        // The std conveniences: a handler on tasks, calls with their own id.
        let helped = leg.route("rpc", "helped");
        let serving = rpc::serve(&worker_client.rpc(), &helped, 2, |req, _| async move {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(req.body());
            Ok::<_, Failure>(out)
        })
        .await
        .unwrap();
        let reply = rpc::call_once(&caller.rpc().timeout_ms(CALL_MS), &helped, b"x").await.unwrap();
        assert_eq!(reply.as_ref(), b"echo:x");
        let mut call = rpc::call(&caller.rpc().timeout_ms(CALL_MS), &helped, b"y").await.unwrap();
        let chunk = within(call.next()).await.unwrap().unwrap();
        assert_eq!((chunk.sequence, chunk.last, chunk.body.as_ref()), (0, true, &b"echo:y"[..]));
        assert!(within(call.next()).await.is_none());
        serving.stop();
        worker_client.close().await;
        caller.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_arrives_in_order() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let worker_client = leg.client().await;
        let caller = leg.client().await;
        let route = leg.route("rpc", "stream");
        let mut w = worker_client.rpc().serve(&route, 1).await.unwrap();
        let mut call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"count", rpc::new_id()).await.unwrap();
        let (_, mut responder) = next_request(&mut w).await.into_parts();
        for body in [&b"a"[..], b"b", b"c"] {
            responder.send(body).await.unwrap();
        }
        assert_eq!(responder.sequence(), 3);
        responder.finish(b"").await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = within(call.next()).await {
            let chunk = chunk.unwrap();
            got.push((chunk.sequence, chunk.last, chunk.body.to_vec()));
        }
        assert_eq!(
            got,
            vec![(0, false, b"a".to_vec()), (1, false, b"b".to_vec()), (2, false, b"c".to_vec()), (3, true, vec![])]
        );
        assert!(call.next().await.is_none());

        // The same through the std worker: chunks, then the returned body.
        let helped = leg.route("rpc", "stream-helped");
        let serving = rpc::serve(&worker_client.rpc(), &helped, 1, |req, chunks| async move {
            let n: u8 = req.body().first().copied().unwrap_or(0);
            for i in 0..n {
                chunks.send(&[i]).await?;
            }
            Ok::<_, Failure>(b"done".to_vec())
        })
        .await
        .unwrap();
        let mut call = rpc::call(&caller.rpc().timeout_ms(CALL_MS), &helped, &[4]).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = within(call.next()).await {
            got.push(chunk.unwrap().body.to_vec());
        }
        assert_eq!(got, vec![vec![0], vec![1], vec![2], vec![3], b"done".to_vec()]);
        serving.stop();
        worker_client.close().await;
        caller.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_errors_end_the_call() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let worker_client = leg.client().await;
        let caller = leg.client().await;

        // No worker: the broker's 6004.
        let nobody = leg.route("rpc", "nobody");
        let mut call = caller.rpc().timeout_ms(CALL_MS).call(&nobody, b"", rpc::new_id()).await.unwrap();
        let e = within(call.next()).await.unwrap().unwrap_err();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!((f.code, f.domain, f.name()), (Some(6004), Some(Domain::Rpc), Some("ERR_ROUTE_NOT_REGISTERED")));
        assert!(within(call.next()).await.is_none());

        // The worker fails the call, before and after a chunk.
        let route = leg.route("rpc", "failing");
        let mut w = worker_client.rpc().serve(&route, 2).await.unwrap();
        let call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"1", rpc::new_id()).await.unwrap();
        let inv = next_request(&mut w).await;
        inv.responder.fail(TerminalError::new(6010, "boom").unwrap()).await.unwrap();
        let e = within(call.reply()).await.unwrap_err();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!((f.code, f.message.as_str(), f.retryable), (Some(6010), "boom", false));

        let mut call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"2", rpc::new_id()).await.unwrap();
        let (_, mut responder) = next_request(&mut w).await.into_parts();
        responder.send(b"partial").await.unwrap();
        responder.fail(TerminalError::new(6003, "saturated").unwrap()).await.unwrap();
        assert_eq!(within(call.next()).await.unwrap().unwrap().body.as_ref(), b"partial");
        let e = within(call.next()).await.unwrap().unwrap_err();
        assert_eq!(server_code(&e), Some(6003));
        assert!(within(call.next()).await.is_none());

        // The error shape with a code outside 6001–6013 is data.
        let mut data_call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"3", rpc::new_id()).await.unwrap();
        let inv = next_request(&mut w).await;
        let shaped = [1, 0, 0, 0x03, 0xEC, 0, 0, 0, 1, b'x'];
        inv.responder.finish(&shaped).await.unwrap();
        let chunk = within(data_call.next()).await.unwrap().unwrap();
        assert_eq!((chunk.last, chunk.body.as_ref()), (true, &shaped[..]));

        // A worker cannot send such a code as an error.
        let call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"4", rpc::new_id()).await.unwrap();
        let inv = next_request(&mut w).await;
        let e = inv.responder.fail(TerminalError { code: 1004, message: "no" }).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        drop(call);

        // std worker: failures and panics become terminal errors.
        let helped = leg.route("rpc", "failing-helped");
        let serving = rpc::serve(&worker_client.rpc(), &helped, 2, |req, _| async move {
            match req.body().as_ref() {
                b"busy" => Err(Failure::saturated("try later")),
                b"panic" => panic!("handler bug"),
                _ => Ok(Vec::new()),
            }
        })
        .await
        .unwrap();
        let e = rpc::call_once(&caller.rpc().timeout_ms(CALL_MS), &helped, b"busy").await.unwrap_err();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!((f.code, f.message.as_str(), f.retryable), (Some(6003), "try later", true));
        let e = rpc::call_once(&caller.rpc().timeout_ms(CALL_MS), &helped, b"panic").await.unwrap_err();
        assert_eq!(server_code(&e), Some(6010));
        assert!(rpc::call_once(&caller.rpc().timeout_ms(CALL_MS), &helped, b"fine").await.unwrap().is_empty());
        serving.stop();

        // Invalid arguments are refused before anything is sent.
        let r = caller.rpc();
        for bad in [leg.route("rpc", "*"), "rpc://".to_string(), "queue://a/b/c".to_string(), "rpc://a//b".to_string()]
        {
            let e = r.call(&bad, b"", rpc::new_id()).await.err().unwrap();
            assert!(matches!(e, Error::Invalid(_)), "{bad}: {e:?}");
        }
        for (pattern, max) in [(leg.route("rpc", "ok"), 0), (leg.route("rpc", "ok"), 1025), ("rpc://a/o*/c".into(), 1)]
        {
            let e = worker_client.rpc().serve(&pattern, max).await.err().unwrap();
            assert!(matches!(e, Error::Invalid(_)), "{pattern}/{max}: {e:?}");
        }
        worker_client.close().await;
        caller.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_deadline_times_out() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let worker_client = leg.client().await;
        let caller = leg.client().await;
        let cancellation = caller.has(CAP_CANCELLATION);
        let route = leg.route("rpc", "slow");
        let mut w = worker_client.rpc().serve(&route, 1).await.unwrap();
        let mut call = caller.rpc().timeout_ms(300).call(&route, b"slow", rpc::new_id()).await.unwrap();
        let inv = next_request(&mut w).await;
        assert_eq!(within(call.next()).await.unwrap().unwrap_err(), Error::Timeout);
        assert!(within(call.next()).await.is_none());
        if cancellation {
            assert!(inv.request.budget_ms().is_some_and(|b| b <= 300));
            // The caller's cancel (or the broker's own deadline from the
            // budget) reaches the worker.
            let c = next_cancel(&mut w).await;
            assert_eq!(c.invocation_id, inv.request.id());
            assert!(matches!(c.reason, SignalReason::CallerDeadline | SignalReason::BrokerDeadline), "{c:?}");
            inv.responder.release().await.unwrap();
        } else {
            // Nobody listens any more; the answer returns the credit.
            inv.responder.finish(b"late").await.unwrap();
        }
        // The worker's single credit is free again.
        let r = caller.rpc().timeout_ms(CALL_MS);
        let next = r.call_once(&route, b"next", rpc::new_id());
        let (reply, ()) = tokio::join!(next, async {
            let inv = next_request(&mut w).await;
            assert_eq!(inv.request.body().as_ref(), b"next");
            inv.responder.finish(b"ok").await.unwrap();
        });
        assert_eq!(reply.unwrap().as_ref(), b"ok");
        worker_client.close().await;
        caller.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_reaches_the_worker() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let worker_client = leg.client().await;
        let caller = leg.client().await;
        let cancellation = caller.has(CAP_CANCELLATION);
        let route = leg.route("rpc", "cancel");
        let mut w = worker_client.rpc().serve(&route, 1).await.unwrap();

        // Explicit cancel of a running call.
        let a = caller.rpc().timeout_ms(CALL_MS).call(&route, b"a", rpc::new_id()).await.unwrap();
        let inv_a = next_request(&mut w).await;
        // A second call waits in the broker's queue behind the first.
        let b = caller.rpc().timeout_ms(CALL_MS).call(&route, b"b", rpc::new_id()).await.unwrap();
        if cancellation {
            assert_eq!(within(b.cancel()).await.unwrap(), Some(CancelStatus::QueuedRemoved));
            assert_eq!(within(a.cancel()).await.unwrap(), Some(CancelStatus::Forwarded));
            let c = next_cancel(&mut w).await;
            assert_eq!((c.invocation_id, c.reason), (inv_a.request.id(), SignalReason::Explicit));
            inv_a.responder.release().await.unwrap();
            // Dropping an unfinished call cancels it too.
            let dropped = caller.rpc().timeout_ms(CALL_MS).call(&route, b"d", rpc::new_id()).await.unwrap();
            let inv_d = next_request(&mut w).await;
            assert_eq!(inv_d.request.body().as_ref(), b"d");
            drop(dropped);
            let c = next_cancel(&mut w).await;
            assert_eq!((c.invocation_id, c.reason), (inv_d.request.id(), SignalReason::Explicit));
            inv_d.responder.release().await.unwrap();
        } else {
            // Without the capability a cancel is local only.
            assert_eq!(within(a.cancel()).await.unwrap(), None);
            assert_eq!(within(b.cancel()).await.unwrap(), None);
            inv_a.responder.finish(b"unheard").await.unwrap();
            // The queued call still runs; nobody waits for it.
            let inv_b = next_request(&mut w).await;
            assert_eq!(inv_b.request.body().as_ref(), b"b");
            inv_b.responder.finish(b"unheard").await.unwrap();
        }
        // The credit is back, and the removed call never reached the worker.
        let r = caller.rpc().timeout_ms(CALL_MS);
        let next = r.call_once(&route, b"c", rpc::new_id());
        let (reply, ()) = tokio::join!(next, async {
            let inv = next_request(&mut w).await;
            assert_eq!(inv.request.body().as_ref(), b"c");
            inv.responder.finish(b"ok").await.unwrap();
        });
        assert_eq!(reply.unwrap().as_ref(), b"ok");

        // The std worker stops a cancelled handler and releases the call.
        if cancellation {
            let helped = leg.route("rpc", "cancel-helped");
            let started = Arc::new(tokio::sync::Notify::new());
            let stopped = Arc::new(tokio::sync::Notify::new());
            let (s1, s2) = (started.clone(), stopped.clone());
            let serving = rpc::serve(&worker_client.rpc(), &helped, 1, move |req, _| {
                let (started, stopped) = (s1.clone(), s2.clone());
                async move {
                    if req.body().as_ref() == b"hang" {
                        struct Dropped(Arc<tokio::sync::Notify>);
                        impl Drop for Dropped {
                            fn drop(&mut self) {
                                self.0.notify_one();
                            }
                        }
                        let _guard = Dropped(stopped);
                        started.notify_one();
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Failure>(req.body().clone())
                }
            })
            .await
            .unwrap();
            let call = rpc::call(&caller.rpc().timeout_ms(CALL_MS), &helped, b"hang").await.unwrap();
            within(started.notified()).await;
            assert_eq!(within(call.cancel()).await.unwrap(), Some(CancelStatus::Forwarded));
            within(stopped.notified()).await;
            // Released: the single credit serves the next call.
            let reply = rpc::call_once(&caller.rpc().timeout_ms(CALL_MS), &helped, b"after").await.unwrap();
            assert_eq!(reply.as_ref(), b"after");
            serving.stop();
        }
        worker_client.close().await;
        caller.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_max_concurrent_is_respected() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        // One client is caller and worker: its frames reach the broker in
        // the order they were queued, and the broker's answers come back
        // in order.
        let c = leg.client().await;
        let route = leg.route("rpc", "credit");
        let mut w = c.rpc().serve(&route, 1).await.unwrap();
        let mut a = c.rpc().timeout_ms(CALL_MS).call(&route, b"a", rpc::new_id()).await.unwrap();
        let (_, mut responder_a) = next_request(&mut w).await.into_parts();
        let b = c.rpc().timeout_ms(CALL_MS).call(&route, b"b", rpc::new_id()).await.unwrap();
        responder_a.send(b"a0").await.unwrap();
        assert_eq!(within(a.next()).await.unwrap().unwrap().body.as_ref(), b"a0");
        // Had B been dispatched beyond the credit of 1, its REQUEST (sent
        // before the chunk) would have arrived before the chunk.
        assert!(idle(&mut w).await, "a second call was dispatched beyond max_concurrent = 1");
        responder_a.finish(b"a1").await.unwrap();
        assert_eq!(within(a.next()).await.unwrap().unwrap().body.as_ref(), b"a1");
        let inv_b = next_request(&mut w).await;
        assert_eq!(inv_b.request.body().as_ref(), b"b");
        inv_b.responder.finish(b"b0").await.unwrap();
        assert_eq!(within(b.reply()).await.unwrap().as_ref(), b"b0");
        drop(w);

        // The std worker runs at most max_concurrent handlers at once and
        // serves every call.
        let helped = leg.route("rpc", "credit-helped");
        let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a2, p2) = (active.clone(), peak.clone());
        let serving = rpc::serve(&c.rpc(), &helped, 2, move |req, _| {
            let (active, peak) = (a2.clone(), p2.clone());
            async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Failure>(req.body().clone())
            }
        })
        .await
        .unwrap();
        let caller = leg.client().await;
        let mut calls = Vec::new();
        for i in 0..6u8 {
            let caller = caller.clone();
            let helped = helped.clone();
            calls.push(tokio::spawn(async move {
                rpc::call_once(&caller.rpc().timeout_ms(CALL_MS), &helped, &[i]).await.map(|b| b.to_vec())
            }));
        }
        for (i, t) in calls.into_iter().enumerate() {
            assert_eq!(within(t).await.unwrap().unwrap(), vec![i as u8]);
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "peak {peak}");
        serving.stop();
        c.close().await;
        caller.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_end_calls_and_restore_workers() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        if leg.url.starts_with("wss") {
            return;
        }
        // The caller's connection drops: its call ends, the worker is told
        // (current dialect) and its credit comes back.
        let worker_client = leg.client().await;
        let cancellation = worker_client.has(CAP_CANCELLATION);
        let route = leg.route("rpc", "lost-caller");
        let mut w = worker_client.rpc().serve(&route, 1).await.unwrap();
        let (relay, caller) = leg.through_relay().await;
        // A first answered call: a session that never received a frame
        // would take the cut for a refused token (WIRE.md §5.3) and stop.
        let r = caller.rpc().timeout_ms(CALL_MS);
        let warm_up = r.call_once(&route, b"0", rpc::new_id());
        let (reply, ()) = tokio::join!(warm_up, async {
            next_request(&mut w).await.responder.finish(b"0").await.unwrap();
        });
        assert_eq!(reply.unwrap().as_ref(), b"0");
        let mut call = caller.rpc().call(&route, b"a", rpc::new_id()).await.unwrap();
        let inv = next_request(&mut w).await;
        let epoch = caller.epoch();
        relay.cut_all();
        assert_eq!(within(call.next()).await.unwrap().unwrap_err(), Error::ConnectionLost);
        assert!(call.next().await.is_none());
        if cancellation {
            let c = next_cancel(&mut w).await;
            assert_eq!((c.invocation_id, c.reason), (inv.request.id(), SignalReason::CallerDisconnected));
            inv.responder.release().await.unwrap();
        } else {
            inv.responder.finish(b"unheard").await.unwrap();
        }
        support::reconnected(&caller, epoch).await;
        let r = caller.rpc().timeout_ms(CALL_MS);
        let reply = r.call_once(&route, b"b", rpc::new_id());
        let (reply, ()) = tokio::join!(reply, async {
            let inv = next_request(&mut w).await;
            inv.responder.finish(b"b0").await.unwrap();
        });
        assert_eq!(reply.unwrap().as_ref(), b"b0");
        caller.close().await;
        relay.stop().await;

        // The worker's connection drops: the caller gets 6002, the worker
        // is registered again and its old invocation is stale.
        let (relay, worker_client) = leg.through_relay().await;
        let caller = leg.client().await;
        let route = leg.route("rpc", "lost-worker");
        let mut w = worker_client.rpc().serve(&route, 1).await.unwrap();
        let mut call = caller.rpc().timeout_ms(CALL_MS).call(&route, b"a", rpc::new_id()).await.unwrap();
        let inv = next_request(&mut w).await;
        let epoch = worker_client.epoch();
        relay.cut_all();
        assert_eq!(server_code(&within(call.next()).await.unwrap().unwrap_err()), Some(6002));
        support::reconnected(&worker_client, epoch).await;
        assert!(matches!(within(w.next()).await.unwrap().unwrap(), WorkerEvent::Restored));
        assert_eq!(inv.responder.finish(b"stale").await.unwrap_err(), Error::StaleHandle);
        let r = caller.rpc().timeout_ms(CALL_MS);
        let reply = r.call_once(&route, b"b", rpc::new_id());
        let (reply, ()) = tokio::join!(reply, async {
            let inv = next_request(&mut w).await;
            assert_eq!(inv.request.body().as_ref(), b"b");
            inv.responder.finish(b"b1").await.unwrap();
        });
        assert_eq!(reply.unwrap().as_ref(), b"b1");
        worker_client.close().await;
        caller.close().await;
        relay.stop().await;
    })
    .await;
}
