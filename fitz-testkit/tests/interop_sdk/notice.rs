//! Notice (BROKER.md §8): PUBLISH, SUBSCRIBE with `*` / `**`, delivery to
//! the publisher and to other sessions, realm isolation, UNSUBSCRIBE and
//! UNSUBSCRIBE_ALL.
//!
//! PUBLISH has no reply, so "not delivered" is checked with a sentinel: a
//! later publish from the same connection that must arrive first.

use cntryl_fitz::client_domains::notice::{NoticeMessage, NoticeSubscription};

use super::*;

fn msg(route: &str, body: &str) -> NoticeMessage {
    NoticeMessage { route: route.into(), body: body.as_bytes().to_vec() }
}

async fn got(s: &mut NoticeSubscription, what: &str) -> NoticeMessage {
    next(s, what).await.unwrap()
}

pub(crate) async fn scenario(ctx: &Ctx) {
    let a = ctx.client().await;
    let b = ctx.client().await;
    let (na, nb) = (a.notice().unwrap(), b.notice().unwrap());

    // Publishing to nobody succeeds (fire and forget).
    na.publish("notice://interop/news/nobody", b"void").await.unwrap();

    let mut own = na.subscribe("notice://interop/news/*").await.unwrap();
    let mut star = nb.subscribe("notice://interop/*/today").await.unwrap();
    let mut all = nb.subscribe("notice://interop/**").await.unwrap();
    let mut exact = nb.subscribe("notice://interop/news/today").await.unwrap();

    // One publish reaches the publisher itself and every matching
    // subscription of the other session, with the concrete route.
    na.publish("notice://interop/news/today", b"hello").await.unwrap();
    let want = msg("notice://interop/news/today", "hello");
    assert_eq!(got(&mut own, "self-delivery").await, want);
    assert_eq!(got(&mut star, "`*` in the middle").await, want);
    assert_eq!(got(&mut all, "`**`").await, want);
    assert_eq!(got(&mut exact, "exact pattern").await, want);

    // `*` is exactly one segment, `**` any number; realms isolate.
    na.publish("notice://interop/sports/today", b"goal").await.unwrap();
    na.publish("notice://interop/news/late", b"late").await.unwrap();
    na.publish("notice://other/news/today", b"elsewhere").await.unwrap();
    na.publish("notice://interop/news/end", b"end").await.unwrap();
    assert_eq!(got(&mut own, "news/*").await, msg("notice://interop/news/late", "late"));
    assert_eq!(got(&mut own, "news/* sentinel").await, msg("notice://interop/news/end", "end"));
    assert_eq!(got(&mut star, "*/today").await, msg("notice://interop/sports/today", "goal"));
    assert_eq!(got(&mut all, "**").await, msg("notice://interop/sports/today", "goal"));
    assert_eq!(got(&mut all, "**").await, msg("notice://interop/news/late", "late"));
    assert_eq!(got(&mut all, "** sentinel").await, msg("notice://interop/news/end", "end"));
    nothing(&mut star, "nothing else matches */today").await;
    nothing(&mut exact, "nothing else matches the exact pattern").await;

    // Another session publishes too; bodies are opaque bytes.
    nb.publish("notice://interop/news/bin", &[0, 1, 2, 255]).await.unwrap();
    let m = got(&mut own, "publish from the other session").await;
    assert_eq!((m.route.as_str(), m.body.as_slice()), ("notice://interop/news/bin", [0, 1, 2, 255].as_slice()));
    assert_eq!(got(&mut all, "publish from the other session").await.body, [0, 1, 2, 255]);

    // UNSUBSCRIBE (by id): the exact registration is gone, the others stay.
    exact.unsubscribe().await.unwrap();
    let exact_again = nb.subscribe("notice://interop/news/today").await.unwrap();
    exact_again.unsubscribe().await.unwrap();
    na.publish("notice://interop/news/today", b"after-unsub").await.unwrap();
    assert_eq!(got(&mut all, "live registration").await.body, b"after-unsub");
    assert_eq!(got(&mut star, "live registration").await.body, b"after-unsub");
    assert_eq!(got(&mut own, "live registration").await.body, b"after-unsub");

    // UNSUBSCRIBE_ALL: every notice registration of b ends (the SDK ends the
    // handles after the broker's OK); a's registration is untouched.
    nb.unsubscribe_all().await.unwrap();
    assert!(tokio::time::timeout(WAIT, all.next()).await.unwrap().is_none(), "handle ended");
    assert!(tokio::time::timeout(WAIT, star.next()).await.unwrap().is_none(), "handle ended");
    na.publish("notice://interop/news/today", b"after-all").await.unwrap();
    assert_eq!(got(&mut own, "a still subscribed").await.body, b"after-all");

    // b subscribes again (a new SUBSCRIBE on the wire) and receives again.
    let mut fresh = nb.subscribe("notice://interop/**").await.unwrap();
    na.publish("notice://interop/news/today", b"fresh").await.unwrap();
    assert_eq!(got(&mut fresh, "fresh registration").await.body, b"fresh");
    nothing(&mut fresh, "exactly one delivery").await;
    assert_eq!(got(&mut own, "a").await.body, b"fresh");

    fresh.unsubscribe().await.unwrap();
    own.unsubscribe().await.unwrap();
}
