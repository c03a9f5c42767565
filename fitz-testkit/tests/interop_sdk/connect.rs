//! Handshake, capabilities and authentication (BROKER.md §2, §15.1).

use cntryl_fitz::ConnectionState;

use super::*;

pub(crate) async fn scenario(ctx: &Ctx) {
    // Domain handles need a connection first (SDK behaviour, no broker).
    let idle = ctx.builder().build().unwrap();
    assert_eq!(idle.state(), ConnectionState::Disconnected);
    kind(idle.kv(), FitzErrorKind::ConnectionClosed, "kv() before connect");
    assert_eq!(idle.server_capabilities(), (0, 0), "no HELLO yet");

    // The SDK fails every connect without a SERVER_HELLO (WIRE.md C42): a
    // successful connect proves the HELLO came first and alone (C43).
    let client = ctx.client().await;
    assert_eq!(client.state(), ConnectionState::Authenticated);
    assert_eq!(client.server_capabilities(), (1, 0xF), "HELLO version 1, bits 0-3");
    assert!(client.correlation_enabled(), "bit 0 advertised");
    eventually("the broker counts the session", || async { ctx.broker.session_count() == 1 }).await;

    // A second client is a second session; every request below is labelled
    // (bit 0), so a labelled round trip on each proves correlation works.
    let other = ctx.client().await;
    eventually("two sessions", || async { ctx.broker.session_count() == 2 }).await;
    let q = other.lease().unwrap().query("lease://interop/connect/probe").await.unwrap();
    assert!(!q.held);

    // close() ends the session on the broker.
    other.close().await.unwrap();
    assert_eq!(other.state(), ConnectionState::Closed);
    eventually("the closed session is cleaned up", || async { ctx.broker.session_count() == 1 }).await;
    kind(other.connect().await, FitzErrorKind::Closed, "connect after close");

    match ctx.leg.auth {
        Auth::Anonymous => {
            // Anonymous broker: any token (or none) is accepted (§2.1).
            let any = ctx.builder_with_token("not-a-jwt".into()).build().unwrap();
            any.connect().await.unwrap();
            let any = ctx.keep(any);
            assert_eq!(any.server_capabilities(), (1, 0xF));
            let id = any.queue().unwrap().enqueue("queue://interop/connect/anon", b"x", None).await.unwrap();
            assert!(id > 0, "ENQUEUE returns the message id");
        }
        Auth::Jwt => jwt_checks(ctx).await,
    }
}

async fn jwt_checks(ctx: &Ctx) {
    // An expired token: the broker closes without a frame (§2.1, §15.1);
    // the SDK reports that as its authentication error.
    let expired = ctx.builder_with_token(TokenSpec::official().expired().sign()).build().unwrap();
    let e = kind(expired.connect().await, FitzErrorKind::Authentication, "expired token");
    assert!(e.is_auth_failure(), "{e}");
    assert_eq!(expired.server_capabilities(), (0, 0), "no HELLO for a rejected CONNECT");

    // A token signed with another secret.
    let forged = ctx.builder_with_token(TokenSpec::official().sign_with("not-the-secret")).build().unwrap();
    let e = kind(forged.connect().await, FitzErrorKind::Authentication, "wrongly signed token");
    assert!(e.is_auth_failure(), "{e}");

    // Anonymous access to an authenticated broker.
    let anon = configure(Client::anonymous(ctx.endpoint())).build().unwrap();
    kind(anon.connect().await, FitzErrorKind::Authentication, "no token on a JWT broker");

    eventually("rejected connects leave no session", || async { ctx.broker.session_count() == 1 }).await;

    // A read-only queue token: ENQUEUE (and RESERVE, which needs Write too)
    // is refused with the coded 4009 of the ingress (§2.3); SUBSCRIBE (Read)
    // is allowed and the session stays usable.
    let read_only =
        ctx.builder_with_token(TokenSpec::official().with_permissions(&["queue://**#read"]).sign()).build().unwrap();
    read_only.connect().await.unwrap();
    let read_only = ctx.keep(read_only);
    let queue = read_only.queue().unwrap();
    let msg = coded(queue.enqueue("queue://interop/connect/ro", b"x", None).await, 4009, "enqueue with #read");
    assert!(!msg.is_empty());
    coded(queue.reserve("queue://interop/connect/ro", 30, 1, None).await, 4009, "reserve with #read");
    let watch = queue.subscribe("queue://interop/connect/*").await.unwrap();
    watch.unsubscribe().await.unwrap();
    // Other domains are not granted at all.
    coded(
        read_only.kv().unwrap().begin("kv://interop/connect/ro", cntryl_fitz::TransactionMode::ReadOnly).await,
        1011,
        "KV without a KV permission",
    );
    assert_eq!(read_only.state(), ConnectionState::Authenticated);
}
