//! Notice against the in-memory broker through raw frames (BROKER.md §8,
//! §14).
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use core::time::Duration;

use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, JwtConfig};
use fitz_wire::notice::{self, Publish, Subscribe, Unsubscribe, UnsubscribeAll};
use fitz_wire::{MsgType, Payload, Reply};
use support::*;

const QUIET: Duration = Duration::from_millis(250);

async fn subscribe(c: &mut Raw, pattern: &str) -> Result<u64, u32> {
    c.send(&Subscribe { pattern }).await;
    let rec = c.recv_type(MsgType::NOTICE_SUBSCRIBE).await.expect("SUBSCRIBE reply");
    match notice::decode_subscribe_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.sub_id),
        Reply::Err(e) => Err(e.code.expect("notice errors are coded")),
    }
}

async fn ack(c: &mut Raw, ty: MsgType) -> Result<(), u32> {
    let rec = c.recv_type(ty).await.expect("reply");
    match notice::decode_ack_reply(&rec.payload).unwrap() {
        Reply::Ok(()) => Ok(()),
        Reply::Err(e) => Err(e.code.expect("notice errors are coded")),
    }
}

async fn publish(c: &mut Raw, route: &str, body: &[u8]) {
    c.send(&Publish { route, body }).await;
}

/// The next NOTIFY: (subscription id, route, body).
async fn notify(c: &mut Raw) -> (u64, String, Vec<u8>) {
    let rec = c.recv_type(MsgType::NOTICE_NOTIFY).await.expect("NOTIFY");
    let n = notice::Notify::decode(&rec.payload).unwrap();
    (n.sub_id, n.route.to_owned(), n.body.to_vec())
}

/// Every NOTIFY that arrives until the connection stays quiet.
async fn drain(c: &mut Raw) -> Vec<(u64, String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(f) = c.recv_frame_within(QUIET).await {
        for r in f {
            assert_eq!(r.msg_type, MsgType::NOTICE_NOTIFY, "unexpected frame {r:?}");
            let n = notice::Notify::decode(&r.payload).unwrap();
            out.push((n.sub_id, n.route.to_owned(), n.body.to_vec()));
        }
    }
    out
}

/// A broker that requires JWTs, with tenant `dev` in family 1 and `ops` in
/// family 2.
async fn jwt_broker() -> Broker {
    let mut jwt = JwtConfig::official("dev-test-secret");
    jwt.families.push(("ops".into(), 2));
    Broker::start(BrokerConfig::anonymous().with_auth(AuthMode::Jwt(jwt))).await.unwrap()
}

#[tokio::test]
async fn publisher_receives_its_own_notice() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let id = subscribe(&mut c, "notice://acme/orders/created").await.unwrap();
    assert_ne!(id, 0);
    publish(&mut c, "notice://acme/orders/created", b"hello").await;
    assert_eq!(notify(&mut c).await, (id, "notice://acme/orders/created".into(), b"hello".to_vec()));
    // PUBLISH has no reply: nothing else arrives.
    assert!(c.quiet_for(QUIET).await);
}

#[tokio::test]
async fn fan_out_to_every_subscribed_session() {
    let b = legacy().await;
    let addr = b.tcp_addr().unwrap();
    let (mut s1, mut s2, mut p) =
        (Raw::connect(addr, "").await, Raw::connect(addr, "").await, Raw::connect(addr, "").await);
    let id1 = subscribe(&mut s1, "notice://acme/orders/created").await.unwrap();
    let id2 = subscribe(&mut s2, "notice://acme/orders/created").await.unwrap();
    publish(&mut p, "notice://acme/orders/created", b"one").await;
    publish(&mut p, "notice://acme/orders/created", b"two").await;
    for (c, id) in [(&mut s1, id1), (&mut s2, id2)] {
        let got = drain(c).await;
        let bodies: Vec<_> = got.iter().map(|(i, r, body)| (*i, r.as_str(), body.as_slice())).collect();
        assert_eq!(
            bodies,
            vec![(id, "notice://acme/orders/created", &b"one"[..]), (id, "notice://acme/orders/created", &b"two"[..])],
            "publish order per subscription"
        );
    }
    assert!(p.quiet_for(QUIET).await, "the publisher is not subscribed");
}

#[tokio::test]
async fn one_notify_per_subscription_with_overlapping_patterns() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let exact = subscribe(&mut c, "notice://acme/orders/created").await.unwrap();
    let star = subscribe(&mut c, "notice://acme/*/created").await.unwrap();
    let all = subscribe(&mut c, "notice://acme/**").await.unwrap();
    // The same pattern again: same id, no second delivery path.
    assert_eq!(subscribe(&mut c, "notice://acme/**").await, Ok(all));
    publish(&mut c, "notice://acme/orders/created", b"x").await;
    let mut ids: Vec<u64> = drain(&mut c)
        .await
        .into_iter()
        .map(|(id, route, _)| {
            assert_eq!(route, "notice://acme/orders/created", "the concrete route, never the pattern");
            id
        })
        .collect();
    ids.sort_unstable();
    let mut want = vec![exact, star, all];
    want.sort_unstable();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn publish_without_subscribers_sends_nothing() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    publish(&mut c, "notice://acme/nobody/listens", b"x").await;
    // Invalid routes are dropped silently too (wildcard, wrong depth, scheme).
    publish(&mut c, "notice://acme/*/listens", b"x").await;
    publish(&mut c, "notice://acme/listens", b"x").await;
    publish(&mut c, "kv://acme/a/b", b"x").await;
    assert!(c.quiet_for(QUIET).await);
    // The session is still usable.
    assert!(subscribe(&mut c, "notice://acme/**").await.is_ok());
}

#[tokio::test]
async fn unsubscribe_by_id_stops_delivery() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let a = subscribe(&mut c, "notice://acme/orders/created").await.unwrap();
    let w = subscribe(&mut c, "notice://acme/**").await.unwrap();
    c.send(&Unsubscribe { sub_id: a }).await;
    ack(&mut c, MsgType::NOTICE_UNSUBSCRIBE).await.unwrap();
    publish(&mut c, "notice://acme/orders/created", b"x").await;
    let got: Vec<u64> = drain(&mut c).await.into_iter().map(|n| n.0).collect();
    assert_eq!(got, vec![w]);
    // Unknown ids (and ids already removed) succeed.
    c.send(&Unsubscribe { sub_id: a }).await;
    ack(&mut c, MsgType::NOTICE_UNSUBSCRIBE).await.unwrap();
    c.send(&Unsubscribe { sub_id: 987_654 }).await;
    ack(&mut c, MsgType::NOTICE_UNSUBSCRIBE).await.unwrap();
    // Another session cannot remove a registration it does not own.
    let mut other = Raw::connect(b.tcp_addr().unwrap(), "").await;
    other.send(&Unsubscribe { sub_id: w }).await;
    ack(&mut other, MsgType::NOTICE_UNSUBSCRIBE).await.unwrap();
    publish(&mut c, "notice://acme/orders/created", b"y").await;
    assert_eq!(notify(&mut c).await.0, w);
}

#[tokio::test]
async fn single_star_matches_one_segment_double_star_any() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let one = subscribe(&mut c, "notice://acme/*").await.unwrap();
    let any = subscribe(&mut c, "notice://acme/**").await.unwrap();
    let mid = subscribe(&mut c, "notice://*/orders/*").await.unwrap();
    publish(&mut c, "notice://acme/orders/created", b"x").await;
    let mut got: Vec<u64> = drain(&mut c).await.into_iter().map(|n| n.0).collect();
    got.sort_unstable();
    assert_eq!(got, vec![any, mid], "`notice://acme/*` matches two segments only");
    assert!(!got.contains(&one));
    // Partial wildcards and adjacent `**` are invalid patterns (3002).
    assert_eq!(subscribe(&mut c, "notice://acme/ord*").await, Err(3002));
    assert_eq!(subscribe(&mut c, "notice://acme/**/**").await, Err(3002));
    assert_eq!(subscribe(&mut c, "kv://acme/**").await, Err(3002));
    assert_eq!(subscribe(&mut c, "notice://acme//x").await, Err(3002));
}

#[tokio::test]
async fn realms_and_route_families_are_isolated() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let b_realm = subscribe(&mut c, "notice://B/**").await.unwrap();
    publish(&mut c, "notice://A/x/y", b"a").await;
    assert!(c.quiet_for(QUIET).await, "notice://A/x/y never reaches notice://B/**");
    publish(&mut c, "notice://B/x/y", b"b").await;
    assert_eq!(notify(&mut c).await.0, b_realm);

    // Route families (tenants) never see each other, even with `**`.
    let j = jwt_broker().await;
    let dev = TokenSpec::official().sign();
    let ops = TokenSpec { tenant: "ops".into(), ..TokenSpec::official() }.sign();
    let mut d = Raw::connect(j.tcp_addr().unwrap(), &dev).await;
    let mut o = Raw::connect(j.tcp_addr().unwrap(), &ops).await;
    let dev_id = subscribe(&mut d, "notice://**").await.unwrap();
    let ops_id = subscribe(&mut o, "notice://**").await.unwrap();
    publish(&mut o, "notice://shared/x/y", b"ops").await;
    assert_eq!(notify(&mut o).await, (ops_id, "notice://shared/x/y".into(), b"ops".to_vec()));
    assert!(d.quiet_for(QUIET).await);
    publish(&mut d, "notice://shared/x/y", b"dev").await;
    assert_eq!(notify(&mut d).await.0, dev_id);
    assert!(o.quiet_for(QUIET).await);
}

#[tokio::test]
async fn no_delivery_after_close_and_reconnect() {
    let b = legacy().await;
    let addr = b.tcp_addr().unwrap();
    let mut old = Raw::connect(addr, "").await;
    let old_id = subscribe(&mut old, "notice://acme/**").await.unwrap();
    drop(old);
    // Wait until the broker has cleaned the session up.
    for _ in 0..100 {
        if b.session_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.session_count(), 0);
    let mut fresh = Raw::connect(addr, "").await;
    let mut publisher = Raw::connect(addr, "").await;
    publish(&mut publisher, "notice://acme/a/b", b"x").await;
    assert!(fresh.quiet_for(QUIET).await, "a reconnect restores nothing");
    assert!(publisher.quiet_for(Duration::from_millis(50)).await);
    // The new session gets a new registration.
    let new_id = subscribe(&mut fresh, "notice://acme/**").await.unwrap();
    assert_ne!(new_id, old_id);
    publish(&mut publisher, "notice://acme/a/b", b"y").await;
    assert_eq!(notify(&mut fresh).await, (new_id, "notice://acme/a/b".into(), b"y".to_vec()));
}

#[tokio::test]
async fn unsubscribe_all_removes_every_subscription_of_the_session() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut other = Raw::connect(b.tcp_addr().unwrap(), "").await;
    subscribe(&mut c, "notice://acme/**").await.unwrap();
    subscribe(&mut c, "notice://acme/a/b").await.unwrap();
    let keep = subscribe(&mut other, "notice://acme/**").await.unwrap();
    c.send(&UnsubscribeAll).await;
    ack(&mut c, MsgType::NOTICE_UNSUBSCRIBE_ALL).await.unwrap();
    publish(&mut c, "notice://acme/a/b", b"x").await;
    assert!(c.quiet_for(QUIET).await);
    assert_eq!(notify(&mut other).await.0, keep, "other sessions keep theirs");
    // Nothing left: a second UNSUBSCRIBE_ALL still succeeds.
    c.send(&UnsubscribeAll).await;
    ack(&mut c, MsgType::NOTICE_UNSUBSCRIBE_ALL).await.unwrap();
}

#[tokio::test]
async fn read_only_jwt_publish_gets_a_coded_3009_on_type_500() {
    let j = jwt_broker().await;
    let ro = TokenSpec::official().with_permissions(&["notice://**#read"]).sign();
    let mut c = Raw::connect(j.tcp_addr().unwrap(), &ro).await;
    let id = subscribe(&mut c, "notice://acme/**").await.unwrap();
    publish(&mut c, "notice://acme/a/b", b"x").await;
    let rec = c.recv_one().await.expect("an error frame for the denied PUBLISH");
    assert_eq!(rec.msg_type, MsgType::NOTICE_PUBLISH);
    let Reply::Err(e) = notice::decode_ack_reply(&rec.payload).unwrap() else { panic!("expected an error") };
    assert_eq!((e.code, e.message), (Some(3009), "unauthorized: permission denied"));
    assert!(c.quiet_for(QUIET).await, "the denied publish was not delivered");
    // The session stays open; a writer's publish reaches the reader.
    let mut w = Raw::connect(j.tcp_addr().unwrap(), &TokenSpec::official().sign()).await;
    publish(&mut w, "notice://acme/a/b", b"ok").await;
    assert_eq!(notify(&mut c).await, (id, "notice://acme/a/b".into(), b"ok".to_vec()));
    // Write-only cannot subscribe (write does not imply read).
    let wo = TokenSpec::official().with_permissions(&["notice://**#write"]).sign();
    let mut c2 = Raw::connect(j.tcp_addr().unwrap(), &wo).await;
    assert_eq!(subscribe(&mut c2, "notice://acme/**").await, Err(3009));
}

#[tokio::test]
async fn wildcard_quota_is_3003_after_duplicate_detection() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for i in 0..128 {
        c.send(&Subscribe { pattern: &format!("notice://r{i}/**") }).await;
    }
    for _ in 0..128 {
        let rec = c.recv_type(MsgType::NOTICE_SUBSCRIBE).await.unwrap();
        assert!(matches!(notice::decode_subscribe_reply(&rec.payload).unwrap(), Reply::Ok(_)));
    }
    assert_eq!(subscribe(&mut c, "notice://r128/**").await, Err(3003));
    assert!(subscribe(&mut c, "notice://r0/**").await.is_ok(), "a duplicate is answered before the quota");
    assert!(subscribe(&mut c, "notice://exact/a/b").await.is_ok(), "exact patterns do not count");
}

#[tokio::test]
async fn malformed_frame_closes_only_that_session() {
    let b = legacy().await;
    let addr = b.tcp_addr().unwrap();
    let mut good = Raw::connect(addr, "").await;
    let id = subscribe(&mut good, "notice://acme/**").await.unwrap();
    // A PUBLISH whose route length runs past the payload: no route to check.
    let mut bad = Raw::connect(addr, "").await;
    bad.send_frame(&[0xFF, 0x01, 0xF4, 0x00, 0x05, 0x00, 0x00, 0x00, 0x09, b'n']).await;
    assert!(bad.closed().await);
    // A record running past its frame.
    let mut bad2 = Raw::connect(addr, "").await;
    bad2.send_frame(&[0xFF, 0x01, 0xF5, 0x00, 0x09, 0x00]).await;
    assert!(bad2.closed().await);
    // A client-sent NOTIFY (504) and an unsupported type (505) close too.
    let mut bad3 = Raw::connect(addr, "").await;
    bad3.send(&notice::Notify { sub_id: 1, route: "notice://a/b/c", body: b"" }).await;
    assert!(bad3.closed().await);
    let mut bad4 = Raw::connect(addr, "").await;
    bad4.send_frame(&[0xFF, 0x01, 0xF9, 0x00, 0x00]).await;
    assert!(bad4.closed().await);
    // A malformed UNSUBSCRIBE has no route: a coded error, session kept.
    let mut odd = Raw::connect(addr, "").await;
    odd.send_frame(&[0xFF, 0x01, 0xF6, 0x00, 0x02, 0x00, 0x01]).await;
    assert!(ack(&mut odd, MsgType::NOTICE_UNSUBSCRIBE).await.is_err());
    // The good session keeps working.
    publish(&mut good, "notice://acme/a/b", b"still").await;
    assert_eq!(notify(&mut good).await, (id, "notice://acme/a/b".into(), b"still".to_vec()));
}
