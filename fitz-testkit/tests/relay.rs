//! The fault-injecting relay in front of the in-memory broker and in front
//! of a plain TCP echo peer (to count bytes exactly).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::large_futures,
    clippy::std_instead_of_core
)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fitz_testkit::relay::Relay;
use fitz_wire::kv::{self, Durability, Mode};
use fitz_wire::{MsgType, Reply};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const R: &str = "kv://acme/orders/main";

/// Sends a KV BEGIN and returns the transaction id (the reply must be OK).
async fn begin(c: &mut Raw, route: &str) -> u64 {
    c.send(&kv::Begin { route, mode: Mode::ReadWrite, durability: Some(Durability::Buffered) }).await;
    let rec = c.recv_type(MsgType::KV_BEGIN).await.expect("BEGIN reply");
    match kv::decode_begin_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => ok.tx_id,
        Reply::Err(e) => panic!("BEGIN failed: {e}"),
    }
}

/// Waits until `f()` holds (at most `WAIT`).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A TCP peer that accepts connections and hands them to the test.
async fn echo_peer() -> (SocketAddr, tokio::sync::mpsc::Receiver<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Reads until EOF or error; returns the bytes and whether it ended by EOF.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("peer did not close");
    out
}

/// True if the socket is closed by the other side (EOF or reset) within `WAIT`.
async fn socket_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut b)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn kv_begin_round_trips_through_the_relay_on_tcp_and_ws() {
    let b = legacy().await;
    let tcp = Relay::start(b.tcp_addr().unwrap()).await.unwrap();
    assert_eq!(tcp.url_tcp(), format!("tcp://{}", tcp.addr()));
    let mut c = Raw::connect(tcp.addr(), "").await;
    assert!(begin(&mut c, R).await > 0);
    assert_eq!(tcp.connection_count(), 1);
    assert_eq!(b.session_count(), 1);

    let ws = Relay::start(b.ws_addr().unwrap()).await.unwrap();
    assert_eq!(ws.ws_url("ws"), ws.ws_url("/ws"));
    let mut w = Raw::ws(&ws.ws_url("/ws")).await;
    w.send(&fitz_wire::control::Connect { token: b"" }).await;
    assert!(begin(&mut w, "kv://acme/orders/other").await > 0);
    assert_eq!(b.session_count(), 2);
}

#[tokio::test]
async fn cut_all_closes_live_connections_and_the_broker_drops_the_sessions() {
    let b = legacy().await;
    let relay = Relay::start(b.tcp_addr().unwrap()).await.unwrap();
    let mut c1 = Raw::connect(relay.addr(), "").await;
    let mut c2 = Raw::connect(relay.addr(), "").await;
    begin(&mut c1, R).await;
    begin(&mut c2, "kv://acme/orders/other").await;
    assert_eq!(b.session_count(), 2);
    assert_eq!(relay.connection_count(), 2);

    relay.cut_all();
    assert!(c1.closed().await, "client 1 sees its connection close");
    assert!(c2.closed().await, "client 2 sees its connection close");
    eventually("broker sessions cleaned up", || b.session_count() == 0).await;
    eventually("relay connections gone", || relay.connection_count() == 0).await;

    // The relay keeps working, and the cut released the RW lock of c1's tx.
    let mut c3 = Raw::connect(relay.addr(), "").await;
    begin(&mut c3, R).await;
    assert_eq!(b.session_count(), 1);
}

#[tokio::test]
async fn cut_all_over_websocket_needs_no_close_handshake() {
    let b = legacy().await;
    let relay = Relay::start(b.ws_addr().unwrap()).await.unwrap();
    let mut w = Raw::ws(&relay.ws_url("/ws")).await;
    w.send(&fitz_wire::control::Connect { token: b"" }).await;
    begin(&mut w, R).await;
    assert_eq!(b.session_count(), 1);
    relay.cut_all();
    assert!(w.closed().await);
    eventually("broker session cleaned up", || b.session_count() == 0).await;
}

#[tokio::test]
async fn cut_next_closes_only_the_next_connection() {
    let b = legacy().await;
    let relay = Relay::start(b.tcp_addr().unwrap()).await.unwrap();
    let mut before = Raw::connect(relay.addr(), "").await;
    begin(&mut before, R).await;

    relay.cut_next();
    let mut cut = Raw::tcp(relay.addr()).await;
    assert!(cut.closed().await, "the next connection is closed at once");
    let mut after = Raw::connect(relay.addr(), "").await;
    begin(&mut after, "kv://acme/orders/other").await;
    begin(&mut before, "kv://acme/orders/third").await;
    assert_eq!(b.session_count(), 2, "the connection before and the one after are untouched");
    assert_eq!(relay.connection_count(), 2);
}

#[tokio::test]
async fn cut_next_after_forwards_exactly_n_client_bytes() {
    let (peer, mut accepted) = echo_peer().await;
    let relay = Relay::start(peer).await.unwrap();
    relay.cut_next_after(5);
    let mut c = TcpStream::connect(relay.addr()).await.unwrap();
    let mut up = accepted.recv().await.unwrap();
    c.write_all(b"0123456789").await.unwrap();
    assert_eq!(read_to_end(&mut up).await, b"01234");
    assert!(socket_closed(&mut c).await, "the client side is cut too");

    // The next connection is relayed in full.
    let mut c = TcpStream::connect(relay.addr()).await.unwrap();
    let mut up = accepted.recv().await.unwrap();
    c.write_all(b"0123456789").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut up).await, b"0123456789");
}

#[tokio::test]
async fn one_byte_fragments_still_deliver_correct_frames() {
    let b = legacy().await;
    let relay = Relay::start(b.tcp_addr().unwrap()).await.unwrap();
    relay.set_fragment(Some(1));
    let mut c = Raw::connect(relay.addr(), "").await;
    let tx1 = begin(&mut c, R).await;
    let tx2 = begin(&mut c, "kv://acme/orders/other").await;
    assert_ne!(tx1, tx2);

    let ws = Relay::start(b.ws_addr().unwrap()).await.unwrap();
    ws.set_fragment(Some(1));
    let mut w = Raw::ws(&ws.ws_url("/ws")).await;
    w.send(&fitz_wire::control::Connect { token: b"" }).await;
    begin(&mut w, "kv://acme/orders/third").await;
}

#[tokio::test]
async fn delay_and_fragment_apply_to_every_chunk() {
    let (peer, mut accepted) = echo_peer().await;
    let relay = Relay::start(peer).await.unwrap();
    relay.set_fragment(Some(2));
    relay.set_delay(Duration::from_millis(30));
    let mut c = TcpStream::connect(relay.addr()).await.unwrap();
    let mut up = accepted.recv().await.unwrap();
    let started = tokio::time::Instant::now();
    c.write_all(b"abcdefgh").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut up).await, b"abcdefgh");
    assert!(started.elapsed() >= Duration::from_millis(4 * 30), "four 2-byte chunks, each delayed");

    // Back to normal: no delay, one write.
    relay.set_delay(Duration::ZERO);
    relay.set_fragment(None);
    let mut c = TcpStream::connect(relay.addr()).await.unwrap();
    let mut up = accepted.recv().await.unwrap();
    c.write_all(b"xyz").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut up).await, b"xyz");
}

#[tokio::test]
async fn half_close_is_passed_on_and_the_other_direction_continues() {
    let (peer, mut accepted) = echo_peer().await;
    let relay = Relay::start(peer).await.unwrap();
    let mut c = TcpStream::connect(relay.addr()).await.unwrap();
    let mut up = accepted.recv().await.unwrap();
    c.write_all(b"request").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut up).await, b"request");
    up.write_all(b"reply").await.unwrap();
    up.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut c).await, b"reply");
    eventually("connection finished", || relay.connection_count() == 0).await;
}

#[tokio::test]
async fn refuse_closes_new_connections_until_lifted() {
    let b = legacy().await;
    let relay = Relay::start(b.tcp_addr().unwrap()).await.unwrap();
    let mut live = Raw::connect(relay.addr(), "").await;
    begin(&mut live, R).await;

    relay.set_refuse(true);
    let mut refused = Raw::connect(relay.addr(), "").await;
    assert!(refused.closed().await, "a new connection is closed as if the broker were down");
    assert_eq!(b.session_count(), 1, "the refused connection never reached the broker");
    begin(&mut live, "kv://acme/orders/other").await;

    relay.set_refuse(false);
    let mut back = Raw::connect(relay.addr(), "").await;
    begin(&mut back, "kv://acme/orders/third").await;
    assert_eq!(b.session_count(), 2);
}

#[tokio::test]
async fn reset_mode_cuts_with_a_tcp_reset() {
    let (peer, mut accepted) = echo_peer().await;
    let relay = Relay::start(peer).await.unwrap();
    relay.set_reset(true);
    let mut c = TcpStream::connect(relay.addr()).await.unwrap();
    let _up = accepted.recv().await.unwrap();
    eventually("relayed", || relay.connection_count() == 1).await;
    relay.cut_all();
    let mut b = [0u8; 8];
    let r = tokio::time::timeout(WAIT, c.read(&mut b)).await.unwrap();
    assert_eq!(r.map_err(|e| e.kind()).err(), Some(std::io::ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client() {
    // Bind and drop to find a port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let relay = Relay::start(dead).await.unwrap();
    let mut c = TcpStream::connect(relay.addr()).await.unwrap();
    assert!(socket_closed(&mut c).await);
    assert_eq!(relay.connection_count(), 0);
}

#[tokio::test]
async fn stop_and_drop_close_everything() {
    let b = legacy().await;
    let relay = Relay::start(b.tcp_addr().unwrap()).await.unwrap();
    let addr = relay.addr();
    let mut c = Raw::connect(addr, "").await;
    begin(&mut c, R).await;
    relay.stop().await;
    assert!(c.closed().await);
    eventually("broker session cleaned up", || b.session_count() == 0).await;
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after stop");

    let relay = Relay::start(b.tcp_addr().unwrap()).await.unwrap();
    let mut c = Raw::connect(relay.addr(), "").await;
    begin(&mut c, R).await;
    drop(relay);
    assert!(c.closed().await);
    eventually("broker session cleaned up", || b.session_count() == 0).await;
}
