//! Lifecycle through fitz-testkit's fault relay: reconnect with
//! subscriptions restored before `Authenticated`, pending requests failing
//! promptly, stale handles, authentication failures never retried with the
//! same token, idempotent close. Both transports, both dialects.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fitz_std::core::driver::{Reconnect, Stopped};
use fitz_std::core::ops::kv::TxMode;
use fitz_std::core::{Item, State};
use fitz_std::{Client, Error};
use fitz_testkit::relay::Relay;
use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, Dialect, JwtConfig};
use fitz_wire::{MsgType, notice};

const T: Duration = Duration::from_secs(20);

struct Rig {
    broker: Broker,
    relay: Relay,
    ws: bool,
}

impl Rig {
    async fn new(dialect: Dialect, ws: bool) -> Rig {
        let broker = Broker::start(BrokerConfig::anonymous().with_dialect(dialect)).await.unwrap();
        let upstream = if ws { broker.ws_addr().unwrap() } else { broker.tcp_addr().unwrap() };
        let relay = Relay::start(upstream).await.unwrap();
        Rig { broker, relay, ws }
    }

    fn url(&self) -> String {
        if self.ws { self.relay.ws_url("/ws") } else { self.relay.url_tcp() }
    }

    fn builder(&self) -> fitz_std::Builder {
        Client::builder(self.url()).settle_window(Duration::from_millis(150)).reconnect(Reconnect {
            initial_ms: 20,
            max_ms: 200,
            ..Reconnect::default()
        })
    }

    /// A client that talks to the broker directly (not through the relay).
    async fn direct(&self) -> Client {
        let url = if self.ws { self.broker.ws_url().unwrap() } else { self.broker.tcp_url().unwrap() };
        Client::builder(url).settle_window(Duration::from_millis(150)).connect().await.unwrap()
    }
}

fn rigs() -> Vec<(Dialect, bool)> {
    vec![(Dialect::Legacy, false), (Dialect::Legacy, true), (Dialect::Current, false), (Dialect::Current, true)]
}

async fn wait_state(c: &Client, want: State) {
    tokio::time::timeout(T, async {
        let mut s = c.state();
        while s != want {
            s = c.changed(s).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("state {want:?} not reached (now {:?})", c.state()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_restores_subscriptions_before_authenticated() {
    for (dialect, ws) in rigs() {
        let rig = Rig::new(dialect, ws).await;
        let c = rig.builder().connect().await.unwrap();
        let pattern = "notice://acme/restore/*";
        let mut a = c.subscribe(&notice::Subscribe { pattern }).await.unwrap();
        // A second local subscriber shares the registration.
        let mut b = c.subscribe(&notice::Subscribe { pattern }).await.unwrap();
        let epoch = c.epoch();

        let mut states = c.watch();
        rig.relay.cut_all();
        let mut seen = Vec::new();
        tokio::time::timeout(T, async {
            use futures_util::StreamExt;
            while let Some(s) = states.next().await {
                seen.push(s);
                if s == State::Authenticated {
                    break;
                }
            }
        })
        .await
        .unwrap();
        assert!(seen.contains(&State::Reconnecting), "{dialect:?} ws={ws}: {seen:?}");
        assert_eq!(seen.last(), Some(&State::Authenticated));
        assert_ne!(c.epoch(), epoch, "a new connection has a new epoch");

        // The restore result is already queued when Authenticated shows.
        for sub in [&mut a, &mut b] {
            let first = tokio::time::timeout(Duration::from_millis(1), sub.next()).await;
            assert!(matches!(first, Ok(Some(Ok(Item::Restored)))), "{dialect:?} ws={ws}: {first:?}");
        }

        // And the restored registration delivers to both.
        let other = rig.direct().await;
        other.send(&notice::Publish { route: "notice://acme/restore/x", body: b"after" }).await.unwrap();
        for sub in [&mut a, &mut b] {
            let got = tokio::time::timeout(T, sub.next()).await.unwrap().unwrap().unwrap();
            match got {
                Item::Record { msg_type, payload } => {
                    assert_eq!(msg_type, MsgType::NOTICE_NOTIFY);
                    let n = <notice::Notify<'_> as fitz_wire::Payload<'_>>::decode(&payload).unwrap();
                    assert_eq!(n.body, b"after");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        c.close().await;
        other.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_fails_promptly_and_handles_go_stale() {
    for (dialect, ws) in rigs() {
        let rig = Rig::new(dialect, ws).await;
        let c = rig.builder().connect().await.unwrap();
        let route = "kv://acme/stale/r";
        let tx = c.kv().begin(route, TxMode::ReadWrite).await.unwrap();
        tx.put(b"k", b"v").await.unwrap();

        // Hold every byte in the relay, so the GET stays unanswered, then cut.
        rig.relay.set_delay(Duration::from_secs(30));
        let c2 = c.clone();
        let pending = tokio::spawn(async move {
            let tx = tx;
            let r = tx.get(b"k").await;
            (r, tx)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        rig.relay.set_delay(Duration::ZERO);
        rig.relay.cut_all();
        let (r, tx) = tokio::time::timeout(T, pending).await.expect("the pending GET must fail at once").unwrap();
        assert_eq!(r.unwrap_err(), Error::ConnectionLost, "{dialect:?} ws={ws}");

        wait_state(&c2, State::Authenticated).await;
        assert_eq!(tx.put(b"k", b"w").await.unwrap_err(), Error::StaleHandle, "{dialect:?} ws={ws}");
        // Fresh handles work on the new connection.
        let tx = c.kv().begin(route, TxMode::ReadWrite).await.unwrap();
        tx.put(b"k", b"w").await.unwrap();
        tx.commit().await.unwrap();
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_token_is_never_resent() {
    for dialect in [Dialect::Legacy, Dialect::Current] {
        let cfg = BrokerConfig::anonymous()
            .with_dialect(dialect)
            .with_auth(AuthMode::Jwt(JwtConfig::official("dev-test-secret")));
        let broker = Broker::start(cfg).await.unwrap();
        let bad = TokenSpec::official().sign_with("not-the-secret");
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let r = Client::builder(broker.tcp_url().unwrap())
            .settle_window(Duration::from_millis(300))
            .reconnect(Reconnect {
                initial_ms: 10,
                max_ms: 50,
                first_connect_attempts: Some(5),
                ..Reconnect::default()
            })
            .token_provider(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let t = bad.clone();
                async move { Ok(t) }
            })
            .connect()
            .await;
        assert_eq!(r.err(), Some(Error::AuthenticationFailed), "{dialect:?}");
        // Asked once for the refused connection, once more to see it is the
        // same token; never sent again.
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{dialect:?}");

        // A provider that comes up with a fresh token is retried with it
        // (connect() allows more than its default single first attempt).
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let c = Client::builder(broker.tcp_url().unwrap())
            .settle_window(Duration::from_millis(300))
            .reconnect(Reconnect {
                initial_ms: 10,
                max_ms: 50,
                first_connect_attempts: Some(3),
                ..Reconnect::default()
            })
            .token_provider(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let t = if n == 0 {
                    TokenSpec::official().sign_with("not-the-secret")
                } else {
                    TokenSpec::official().sign()
                };
                async move { Ok(t) }
            })
            .connect()
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_idempotent_and_ends_everything() {
    let rig = Rig::new(Dialect::Current, false).await;
    let c = rig.builder().connect().await.unwrap();
    let mut sub = c.subscribe(&notice::Subscribe { pattern: "notice://acme/close/*" }).await.unwrap();
    let clone = c.clone();
    c.close().await;
    c.close().await;
    assert_eq!(clone.state(), State::Closed);
    assert_eq!(clone.stopped(), Some(Stopped::Closed));
    assert_eq!(sub.next().await.unwrap().unwrap_err(), Error::Closed);
    let e = clone.kv().begin("kv://acme/close/r", TxMode::ReadWrite).await.err();
    assert_eq!(e, Some(Error::Closed));
    // The broker saw the connection go.
    tokio::time::timeout(T, async {
        while rig.relay.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_the_configured_attempts() {
    let rig = Rig::new(Dialect::Current, false).await;
    let c = Client::builder(rig.url())
        .reconnect(Reconnect { initial_ms: 5, max_ms: 20, max_attempts: Some(3), ..Reconnect::default() })
        .connect()
        .await
        .unwrap();
    rig.relay.set_refuse(true);
    rig.relay.cut_all();
    wait_state(&c, State::Closed).await;
    assert_eq!(c.stopped(), Some(Stopped::GaveUp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_fails_fast_as_unreachable() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = tokio::time::timeout(T, Client::builder(format!("tcp://127.0.0.1:{port}")).connect()).await.unwrap();
    assert_eq!(r.err(), Some(Error::Unreachable));
    // start() keeps trying in the background instead.
    let c = Client::builder(format!("tcp://127.0.0.1:{port}"))
        .reconnect(Reconnect { initial_ms: 5, max_ms: 10, ..Reconnect::default() })
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_ne!(c.state(), State::Closed, "still trying");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_heartbeat_detects_a_silent_broker() {
    for dialect in [Dialect::Legacy, Dialect::Current] {
        let rig = Rig::new(dialect, true).await;
        let c = rig.builder().heartbeat(Duration::from_millis(200)).connect().await.unwrap();
        let epoch = c.epoch();
        // The connection stays open but nothing gets through any more (no
        // close, no reset): only the heartbeat can tell.
        rig.relay.set_delay(Duration::from_secs(30));
        let t = std::time::Instant::now();
        tokio::time::timeout(T, async {
            let mut s = c.state();
            while s == State::Authenticated {
                s = c.changed(s).await;
            }
        })
        .await
        .expect("the heartbeat must notice the silent connection");
        let noticed = t.elapsed();
        // Traffic flows again: the client is back on a new connection.
        rig.relay.set_delay(Duration::ZERO);
        rig.relay.cut_all();
        tokio::time::timeout(T, async {
            while !(c.state() == State::Authenticated && c.epoch() != epoch) {
                c.changed(c.state()).await;
            }
        })
        .await
        .expect("reconnected after the silence");
        eprintln!("{dialect:?}: silence noticed after {noticed:?}");
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_name_is_sent_on_every_connection_that_allows_it() {
    for dialect in [Dialect::Current, Dialect::Legacy] {
        let rig = Rig::new(dialect, false).await;
        let c = rig.builder().service_name("  orders-worker ").connect().await.unwrap();
        // A request after CONNECT: SESSION_METADATA went before it.
        c.kv().begin("kv://acme/meta/r", TxMode::ReadOnly).await.unwrap().rollback().await.unwrap();
        let expected: Vec<String> = if dialect == Dialect::Current { vec!["orders-worker".into()] } else { Vec::new() };
        assert_eq!(rig.broker.session_names(), expected, "{dialect:?}");
        // Again after a reconnect.
        let epoch = c.epoch();
        rig.relay.cut_all();
        tokio::time::timeout(T, async {
            while !(c.state() == State::Authenticated && c.epoch() != epoch) {
                c.changed(c.state()).await;
            }
        })
        .await
        .unwrap();
        c.kv().begin("kv://acme/meta/r", TxMode::ReadOnly).await.unwrap().rollback().await.unwrap();
        assert_eq!(rig.broker.session_names(), expected, "{dialect:?} after the reconnect");
        c.close().await;
    }
    let bad = Client::builder("tcp://127.0.0.1:1").service_name("bad\u{7}name").start().err();
    assert_eq!(bad, Some(Error::Invalid("service name")));
}
