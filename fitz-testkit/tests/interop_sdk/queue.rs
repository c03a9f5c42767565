//! Queue (BROKER.md §5, §15.6): ENQUEUE with and without delay, RESERVE
//! (batch, exact, wildcard, long poll), EXTEND, COMPLETE, stale tokens,
//! availability watches.

use cntryl_fitz::client_domains::queue::{QueueItem, QueueNotification};

use super::*;

const Q: &str = "queue://interop/jobs/main";
const Q2: &str = "queue://interop/jobs/other";

fn bodies(items: &[QueueItem]) -> Vec<&[u8]> {
    items.iter().map(|i| i.body.as_slice()).collect()
}

/// (ready, delayed, inflight) of an availability NOTIFY.
///
/// SDK defect (WIRE.md C45, DESIGN.md): cntryl-fitz 0.2.0 decodes Queue
/// NOTIFY as `id, route, bytes` and rejects the broker's inline counters
/// (`id, route, u64 ready, u64 delayed, u64 inflight`) with a protocol
/// error. With `sdk_compat` the testkit wraps the counters in a 24-byte
/// `bytes`, which the SDK hands over as an opaque `payload`; the counters
/// are decoded here. Without the switch no availability NOTIFY could be
/// checked through the SDK.
fn counters(n: &QueueNotification) -> (u64, u64, u64) {
    assert_eq!(n.payload.len(), 24, "sdk_compat wraps three u64 counters: {:?}", n.payload);
    let at = |i: usize| u64::from_be_bytes(n.payload[i * 8..i * 8 + 8].try_into().unwrap());
    (at(0), at(1), at(2))
}

pub(crate) async fn scenario(ctx: &Ctx) {
    let a = ctx.client().await;
    let c = ctx.client().await;
    let qa = a.queue().unwrap();
    let qc = c.queue().unwrap();

    // c watches the area; the queue is empty, so no NOTIFY yet.
    let mut watch = qc.subscribe("queue://interop/jobs/*").await.unwrap();
    nothing(&mut watch, "no NOTIFY for an empty queue").await;

    // ENQUEUE returns increasing ids (> 0); the first one makes the queue
    // available (ready 0 -> 1): exactly one NOTIFY, edge-triggered.
    let id1 = qa.enqueue(Q, b"m1", None).await.unwrap();
    let n = next(&mut watch, "availability NOTIFY").await.unwrap();
    assert_eq!(n.route, Q, "the concrete route");
    assert_eq!(counters(&n), (1, 0, 0));
    let id2 = qa.enqueue(Q, b"m2", Some(0)).await.unwrap();
    let id3 = qa.enqueue(Q, b"m3", Some(30)).await.unwrap();
    assert!(0 < id1 && id1 < id2 && id2 < id3, "ids {id1} {id2} {id3}");
    nothing(&mut watch, "no NOTIFY while ready stays above 0 or for a delayed message").await;

    // A new watch on an available queue gets its current state at once.
    let mut late = qc.subscribe(Q).await.unwrap();
    let n = next(&mut late, "current-availability NOTIFY after SUBSCRIBE").await.unwrap();
    assert_eq!((n.route.as_str(), counters(&n)), (Q, (2, 1, 0)));
    late.unsubscribe().await.unwrap();

    // RESERVE a batch from the exact route: FIFO, the delayed message is
    // invisible, items carry the route of the request.
    let items = qa.reserve(Q, 300, 10, None).await.unwrap();
    assert_eq!(bodies(&items), [b"m1".as_slice(), b"m2"]);
    assert!(items.iter().all(|i| i.route == Q));
    assert!(qa.reserve(Q, 300, 10, None).await.unwrap().is_empty(), "nothing else is ready");

    // The delay matures: ready 0 -> 1 again, with two messages inflight.
    ctx.advance(Duration::from_secs(31));
    let n = next(&mut watch, "NOTIFY when the delayed message matures").await.unwrap();
    assert_eq!((n.route.as_str(), counters(&n)), (Q, (1, 0, 2)));

    // EXTEND and COMPLETE with the current token.
    let (m1, m2) = (&items[0], &items[1]);
    m1.extend(600).await.unwrap();
    m2.complete().await.unwrap();
    // The SDK closes a completed handle itself (no request is sent).
    kind(m2.complete().await, FitzErrorKind::StaleHandle, "second COMPLETE on one handle");
    kind(m2.extend(10).await, FitzErrorKind::StaleHandle, "EXTEND after COMPLETE");
    // m1's reservation outlives its original 300 s lease thanks to EXTEND.
    ctx.advance(Duration::from_secs(300));
    m1.complete().await.unwrap();

    // Wildcard RESERVE across the area: items in route order, each with its
    // concrete route.
    qa.enqueue(Q2, b"o1", None).await.unwrap();
    let items = qa.reserve("queue://interop/jobs/*", 60, 10, None).await.unwrap();
    let got: Vec<(&str, &[u8])> = items.iter().map(|i| (i.route.as_str(), i.body.as_slice())).collect();
    assert_eq!(got, [(Q, b"m3".as_slice()), (Q2, b"o1".as_slice())]);
    assert!(qa.reserve("queue://*/jobs/**", 60, 10, None).await.unwrap().is_empty(), "everything is inflight");
    // COMPLETE of an item reserved through a pattern uses its concrete route.
    for i in &items {
        i.complete().await.unwrap();
    }

    // Stale tokens. A 1 s reservation expires: its owner's EXTEND gets
    // "inflight expired" (4002); once the message is reserved again, the old
    // token gets "invalid token" (4001). Both travel in the plain envelope
    // (§5.3), which the SDK reports as code 0 with the message.
    qa.enqueue(Q, b"s1", None).await.unwrap();
    let first = qa.reserve(Q, 1, 1, None).await.unwrap();
    assert_eq!(bodies(&first), [b"s1".as_slice()]);
    ctx.advance(Duration::from_secs(2));
    let (code, msg) = domain(first[0].extend(10).await, "EXTEND after expiry");
    assert_eq!((code, msg.as_str()), (0, "inflight reservation expired"));
    let second = qa.reserve(Q, 30, 1, None).await.unwrap();
    assert_eq!(bodies(&second), [b"s1".as_slice()]);
    let (code, msg) = domain(first[0].complete().await, "COMPLETE with a stale token");
    assert_eq!((code, msg.as_str()), (0, "invalid lease token"));
    second[0].complete().await.unwrap();
    // The failed COMPLETE left the SDK handle usable; the message is gone now.
    let (code, msg) = domain(first[0].complete().await, "COMPLETE of a completed message");
    assert_eq!((code, msg.as_str()), (0, "message not found"));

    // Long poll: a parked RESERVE is answered by the next ENQUEUE...
    let q3 = "queue://interop/poll/q";
    let parked = {
        let qc = qc.clone();
        tokio::spawn(async move { qc.reserve(q3, 30, 5, Some(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!parked.is_finished(), "RESERVE with wait parks on an empty queue");
    qa.enqueue(q3, b"late", None).await.unwrap();
    let items = tokio::time::timeout(WAIT, parked).await.unwrap().unwrap().unwrap();
    assert_eq!(bodies(&items), [b"late".as_slice()]);
    items[0].complete().await.unwrap();
    // ...or, when nothing comes, by an empty result when the wait ends.
    let parked = {
        let qc = qc.clone();
        tokio::spawn(async move { qc.reserve(q3, 30, 1, Some(2)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!parked.is_finished());
    ctx.advance(Duration::from_secs(3));
    let items = tokio::time::timeout(WAIT, parked).await.unwrap().unwrap().unwrap();
    assert!(items.is_empty(), "an ended wait answers an empty success");

    // After UNSUBSCRIBE the queue becoming available again sends nothing
    // (the SDK ends the handle; a further watch on another pattern shows
    // the broker still notifies live registrations).
    watch.unsubscribe().await.unwrap();
    let mut other = qc.subscribe("queue://interop/fresh/*").await.unwrap();
    qa.enqueue("queue://interop/fresh/q", b"f", None).await.unwrap();
    let n = next(&mut other, "NOTIFY on a live watch").await.unwrap();
    assert_eq!((n.route.as_str(), counters(&n)), ("queue://interop/fresh/q", (1, 0, 0)));
    other.unsubscribe().await.unwrap();

    // SDK defect (WIRE.md C62): an ENQUEUE OK without the id would read as
    // id 0; the broker always sends the id, which the ids above confirm.
}
