//! The SDK defects of DESIGN.md / WIRE.md C45 and C46 against a broker
//! *without* `sdk_compat`, i.e. with the forms every stored broker document
//! gives. These checks pin the SDK's failure: the broker is right here, the
//! SDK is not, and that is why every other test turns `sdk_compat` on. If a
//! future SDK accepts the standard forms, these assertions fail and the
//! switch can go.

use super::*;

pub(crate) async fn run(transport: Transport) {
    let ctx = Ctx::start_with(Leg { transport, auth: Auth::Anonymous }, false).await;
    tokio::time::timeout(SCENARIO_LIMIT, Box::pin(scenario(&ctx))).await.expect("scenario finished");
    ctx.finish().await;
}

async fn scenario(ctx: &Ctx) {
    let a = ctx.client().await;

    // C45: the broker sends Queue NOTIFY as `id, route, u64 ready, u64
    // delayed, u64 inflight` (BROKER.md §5.4). cntryl-fitz 0.2.0 reads
    // `id, route, bytes`: the first counter becomes a length and the
    // notification fails with a protocol error instead of reporting the
    // counters.
    let queue = a.queue().unwrap();
    let mut watch = queue.subscribe("queue://interop/defect/*").await.unwrap();
    queue.enqueue("queue://interop/defect/q", b"x", None).await.unwrap();
    let e = kind(next(&mut watch, "Queue NOTIFY").await, FitzErrorKind::Protocol, "C45");
    assert!(matches!(&e, FitzError::Protocol(m) if m == "Queue NOTIFY response has trailing bytes"), "{e:?}");
    watch.unsubscribe().await.unwrap();

    // C46: the broker answers Stream SUBSCRIBE with `00 01 u64` (10 bytes,
    // WIRE.md §8.6); cntryl-fitz 0.2.0 also reads a `bytes` after the id and
    // fails the SUBSCRIBE with a codec error, although the broker registered
    // the subscription.
    let e = kind(a.stream().unwrap().subscribe("stream://interop/defect/*").await, FitzErrorKind::Protocol, "C46");
    assert!(matches!(&e, FitzError::Codec(m) if m == "Not enough bytes"), "{e:?}");

    // The connection survives both: the next request works.
    assert!(!a.lease().unwrap().query("lease://interop/defect/l").await.unwrap().held);
}
