//! RPC (BROKER.md §6, §15.5): workers, calls, streamed responses, terminal
//! errors, budgets, cancellation (capability bit 3), linked calls, sharing.

use std::time::Instant;

use cntryl_fitz::client_domains::rpc::{
    RpcCancellationOutcome, RpcClient, RpcRequest, RpcResponseFrame, RpcResponseStream, RpcWorker,
};
use tokio::sync::mpsc;

use super::*;

const ECHO: &str = "rpc://interop/svc/echo";
const HOLD: &str = "rpc://interop/svc/hold";

/// What the test workers observe.
#[derive(Debug)]
enum Seen {
    Request { worker: &'static str, route: String, body: Vec<u8>, budget: Option<Duration> },
    Cancelled { body: Vec<u8> },
    Error(String),
}

/// `01, u32 code, str message`: a terminal RPC error body (WIRE.md §8.3).
fn error_body(code: u32, message: &str) -> Vec<u8> {
    let mut b = vec![1];
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    b.extend_from_slice(message.as_bytes());
    b
}

/// Serves `worker` until it ends; every request is handled on a task of
/// its own.
fn serve(mut worker: RpcWorker, rpc: RpcClient, name: &'static str, seen: mpsc::UnboundedSender<Seen>) {
    tokio::spawn(async move {
        while let Some(req) = worker.next().await {
            match req {
                Ok(req) => {
                    tokio::spawn(handle(req, rpc.clone(), name, seen.clone()));
                }
                Err(e) => {
                    let _ = seen.send(Seen::Error(e.to_string()));
                }
            }
        }
    });
}

async fn handle(mut req: RpcRequest, rpc: RpcClient, name: &'static str, seen: mpsc::UnboundedSender<Seen>) {
    let body = req.body.clone();
    let _ = seen.send(Seen::Request {
        worker: name,
        route: req.route.clone(),
        body: body.clone(),
        budget: req.remaining_time(),
    });
    let result = async {
        match body.as_slice() {
            b"stream" => {
                req.respond(b"a", false).await?;
                req.respond(b"b", false).await?;
                req.respond(b"c", true).await
            }
            b"empty-end" => {
                req.respond(b"x", false).await?;
                req.finish().await
            }
            b"fail" => req.respond(&error_body(6010, "handler failed"), true).await,
            b"not-an-rpc-code" => req.respond(&error_body(7001, "schedule code"), true).await,
            b"chain" => {
                let mut child = rpc.call_from_request(&req, ECHO, b"via-chain").await?;
                while let Some(frame) = child.next().await {
                    req.respond(&frame?.body, false).await?;
                }
                drop(child);
                req.finish().await
            }
            b if b.starts_with(b"hold") => {
                // Never answers; waits for the broker's cancellation signal,
                // then releases the invocation (the SDK acknowledges it).
                req.cancellation.cancelled().await;
                let _ = seen.send(Seen::Cancelled { body });
                drop(req);
                Ok(())
            }
            _ => {
                let reply = format!("{name}|{}|{}", req.route, String::from_utf8_lossy(&body));
                req.respond(reply.as_bytes(), true).await
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = seen.send(Seen::Error(e.to_string()));
    }
}

/// Every frame of a response stream until it ends.
async fn frames(s: &mut RpcResponseStream) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, s.next()).await.expect("RPC response frame") {
            Some(Ok(RpcResponseFrame { body, sequence })) => out.push((body, sequence)),
            Some(Err(e)) => panic!("unexpected RPC error after {out:?}: {e}"),
            None => return out,
        }
    }
}

fn f(body: &str, seq: u64) -> (Vec<u8>, u64) {
    (body.as_bytes().to_vec(), seq)
}

/// The next observation of the workers (skipping nothing).
async fn seen_next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    let s = tokio::time::timeout(WAIT, rx.recv()).await.expect("worker observation").expect("channel open");
    if let Seen::Error(e) = &s {
        panic!("worker failed: {e}");
    }
    s
}

async fn expect_request(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    want_body: &[u8],
) -> (&'static str, String, Option<Duration>) {
    match seen_next(rx).await {
        Seen::Request { worker, route, body, budget } if body == want_body => (worker, route, budget),
        other => panic!("expected the request {:?}, saw {other:?}", String::from_utf8_lossy(want_body)),
    }
}

async fn expect_cancelled(rx: &mut mpsc::UnboundedReceiver<Seen>, want_body: &[u8]) {
    match seen_next(rx).await {
        Seen::Cancelled { body } if body == want_body => {}
        other => panic!("expected the cancellation of {:?}, saw {other:?}", String::from_utf8_lossy(want_body)),
    }
}

async fn quiet_workers(rx: &mut mpsc::UnboundedReceiver<Seen>, what: &str) {
    if let Ok(Some(s)) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("{what}: unexpected {s:?}");
    }
}

pub(crate) async fn scenario(ctx: &Ctx) {
    let w = ctx.client().await;
    let caller_client = ctx.client().await;
    let caller = caller_client.rpc().unwrap();
    let (tx, mut seen) = mpsc::unbounded_channel();

    // SDK defect (WIRE.md C58): the SDK ignores whatever follows the status
    // byte of a registration OK, so the exact `00 00 00 00 00` the broker
    // sends (C70) cannot be told from other forms through it; only success
    // is checked here.
    let worker = w.rpc().unwrap().register_worker("rpc://interop/svc/*", 4).await.unwrap();
    serve(worker, w.rpc().unwrap(), "w1", tx.clone());

    // Echo: one terminal frame, sequence 0, then the stream ends. The worker
    // sees the concrete route; no budget was sent, none is forwarded.
    let mut s = caller.call(ECHO, b"hi").await.unwrap();
    assert_eq!(frames(&mut s).await, [f("w1|rpc://interop/svc/echo|hi", 0)]);
    let (_, route, budget) = expect_request(&mut seen, b"hi").await;
    assert_eq!((route.as_str(), budget), (ECHO, None));
    // Cancelling a finished call is answered locally by the SDK.
    assert_eq!(s.cancel().await, RpcCancellationOutcome::AlreadyTerminal);

    // A streamed response: three frames, sequences 0..2, forwarded unchanged.
    let mut s = caller.call("rpc://interop/svc/stream", b"stream").await.unwrap();
    assert_eq!(frames(&mut s).await, [f("a", 0), f("b", 1), f("c", 2)]);
    expect_request(&mut seen, b"stream").await;
    // An empty end frame is forwarded like any other (the SDK surfaces it).
    let mut s = caller.call("rpc://interop/svc/x", b"empty-end").await.unwrap();
    assert_eq!(frames(&mut s).await, [f("x", 0), f("", 1)]);
    expect_request(&mut seen, b"empty-end").await;

    // A handler error: a terminal body `01 code str` with an RPC code is
    // the SDK's terminal `FitzError::Domain`, after which the stream ends.
    let mut s = caller.call("rpc://interop/svc/x", b"fail").await.unwrap();
    let (code, msg) = domain(next(&mut s, "terminal error").await, "handler error");
    assert_eq!((code, msg.as_str()), (6010, "handler failed"));
    assert!(tokio::time::timeout(WAIT, s.next()).await.unwrap().is_none());
    expect_request(&mut seen, b"fail").await;
    // SDK quirk WIRE.md C60, where the SDK agrees with the spec: the same
    // shape with a code outside 6001-6013 is data; the broker forwards it
    // untouched.
    let mut s = caller.call("rpc://interop/svc/x", b"not-an-rpc-code").await.unwrap();
    assert_eq!(frames(&mut s).await, [(error_body(7001, "schedule code"), 0)]);
    expect_request(&mut seen, b"not-an-rpc-code").await;

    // No worker for the route: terminal 6004 from the broker, at once.
    let started = Instant::now();
    let mut s = caller.call("rpc://interop/nobody/here", b"x").await.unwrap();
    let (code, msg) = domain(next(&mut s, "6004").await, "call without a worker");
    assert_eq!((code, msg.as_str()), (6004, "No workers registered for route"));
    assert!(started.elapsed() < Duration::from_millis(500), "6004 took {:?}", started.elapsed());
    assert!(s.next().await.is_none());

    // call_with_timeout: the budget reaches the (supporting) worker.
    let mut s = caller.call_with_timeout(ECHO, b"budget", Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(frames(&mut s).await, [f("w1|rpc://interop/svc/echo|budget", 0)]);
    let (_, _, budget) = expect_request(&mut seen, b"budget").await;
    let budget = budget.expect("a forwarded budget");
    assert!(budget > Duration::ZERO && budget <= Duration::from_secs(5), "{budget:?}");
    // A call that outlives its budget ends with the SDK's Timeout; the SDK
    // sends a deadline cancellation, which the broker forwards to the worker.
    let started = Instant::now();
    let mut s = caller.call_with_timeout(HOLD, b"hold-deadline", Some(Duration::from_millis(300))).await.unwrap();
    expect_request(&mut seen, b"hold-deadline").await;
    kind(next(&mut s, "timeout").await, FitzErrorKind::Timeout, "call past its budget");
    assert!(started.elapsed() >= Duration::from_millis(300));
    expect_cancelled(&mut seen, b"hold-deadline").await;
    assert!(s.next().await.is_none());

    // Explicit cancellation of a dispatched call: the broker answers 305
    // `04 uuid 02` (Forwarded) and signals the worker.
    let mut s = caller.call(HOLD, b"hold-1").await.unwrap();
    expect_request(&mut seen, b"hold-1").await;
    assert_eq!(s.cancel().await, RpcCancellationOutcome::Forwarded);
    expect_cancelled(&mut seen, b"hold-1").await;
    assert_eq!(s.cancel().await, RpcCancellationOutcome::Forwarded, "the outcome is kept");
    assert!(tokio::time::timeout(WAIT, s.next()).await.unwrap().is_none(), "a cancelled call ends");

    // Cancellation of a queued call (credit 1, busy): `04 uuid 01`
    // (QueuedRemoved); the call never reaches the worker, not even after the
    // busy call is cancelled and its credit acknowledged (kind 3).
    let single = w.rpc().unwrap().register_worker("rpc://interop/single/*", 1).await.unwrap();
    serve(single, w.rpc().unwrap(), "single", tx.clone());
    let mut busy = caller.call("rpc://interop/single/a", b"hold-busy").await.unwrap();
    expect_request(&mut seen, b"hold-busy").await;
    let mut queued = caller.call("rpc://interop/single/a", b"hold-queued").await.unwrap();
    assert_eq!(queued.cancel().await, RpcCancellationOutcome::QueuedRemoved);
    assert_eq!(busy.cancel().await, RpcCancellationOutcome::Forwarded);
    expect_cancelled(&mut seen, b"hold-busy").await;
    quiet_workers(&mut seen, "a removed call is never dispatched").await;
    // The credit came back: the next call is served.
    let mut s = caller.call("rpc://interop/single/a", b"after").await.unwrap();
    assert_eq!(frames(&mut s).await, [f("single|rpc://interop/single/a|after", 0)]);
    expect_request(&mut seen, b"after").await;

    // A linked downstream call from inside a handler (call_from_request):
    // the worker calls ECHO (served by itself) and streams the result back.
    let mut s = caller.call("rpc://interop/svc/chain", b"chain").await.unwrap();
    assert_eq!(frames(&mut s).await, [f("w1|rpc://interop/svc/echo|via-chain", 0), f("", 1)]);
    expect_request(&mut seen, b"chain").await;
    let (_, route, _) = expect_request(&mut seen, b"via-chain").await;
    assert_eq!(route, ECHO);

    // Two workers (two sessions) on one pattern share the calls.
    let (wa, wb) = (ctx.client().await, ctx.client().await);
    serve(
        wa.rpc().unwrap().register_worker("rpc://interop/shared/**", 1).await.unwrap(),
        wa.rpc().unwrap(),
        "wa",
        tx.clone(),
    );
    serve(
        wb.rpc().unwrap().register_worker("rpc://interop/shared/**", 1).await.unwrap(),
        wb.rpc().unwrap(),
        "wb",
        tx.clone(),
    );
    let mut served = Vec::new();
    for i in 0..4 {
        let body = format!("share-{i}");
        let mut s = caller.call("rpc://interop/shared/job", body.as_bytes()).await.unwrap();
        let got = frames(&mut s).await;
        assert_eq!(got.len(), 1);
        let (worker, _, _) = expect_request(&mut seen, body.as_bytes()).await;
        assert_eq!(String::from_utf8(got[0].0.clone()).unwrap(), format!("{worker}|rpc://interop/shared/job|{body}"));
        served.push(worker);
    }
    assert!(served.contains(&"wa") && served.contains(&"wb"), "both workers serve: {served:?}");

    // A worker that deregisters while holding a call: the caller gets 6002;
    // after deregistration the route has no worker (6004).
    let gone_client = ctx.client().await;
    let mut gone = gone_client.rpc().unwrap().register_worker("rpc://interop/gone/*", 1).await.unwrap();
    let mut s = caller.call("rpc://interop/gone/x", b"held").await.unwrap();
    let held = next(&mut gone, "request at the deregistering worker").await.unwrap();
    assert_eq!((held.route.as_str(), held.body.as_slice()), ("rpc://interop/gone/x", b"held".as_slice()));
    gone.deregister().await.unwrap();
    let (code, _) = domain(next(&mut s, "6002").await, "worker deregistered");
    assert_eq!(code, 6002);
    drop(held);
    let mut s = caller.call("rpc://interop/gone/x", b"again").await.unwrap();
    coded(next(&mut s, "6004 after deregistration").await, 6004, "call after deregistration");
}
