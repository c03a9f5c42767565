//! The session against the in-memory broker over real TCP, in both
//! dialects: the binding loop here is the minimum (write frames, read
//! frames, feed them), so what is checked is the engine.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, clippy::std_instead_of_core)]

use std::time::Instant;

use fitz_client::{Config, DialectMode, Event, RequestId, Session, State};
use fitz_testkit::{Broker, BrokerConfig};
use fitz_wire::frame::{self, TcpFrame};
use fitz_wire::{Dialect, MsgType, Reply, kv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Conn {
    s: Session<8>,
    io: TcpStream,
    rx: Vec<u8>,
    out: Vec<u8>,
    start: Instant,
    replies: Vec<(RequestId, MsgType, Vec<u8>)>,
    authenticated: Option<Dialect>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr, dialect: DialectMode) -> Conn {
        let io = TcpStream::connect(addr).await.unwrap();
        io.set_nodelay(true).unwrap();
        let cfg = Config { dialect, settle_window_ms: 300, ..Config::default() };
        let mut c = Conn {
            s: Session::new(cfg),
            io,
            rx: Vec::new(),
            out: vec![0u8; 4096],
            start: Instant::now(),
            replies: Vec::new(),
            authenticated: None,
        };
        c.s.connecting(&mut |_| {});
        let n = c.s.connected(c.now(), b"", &mut c.out, &mut |_| {}).unwrap();
        let f = c.out[..n].to_vec();
        c.io.write_all(&f).await.unwrap();
        while c.s.state() != State::Authenticated {
            c.pump().await;
        }
        c
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Reads until one frame is handled or the next deadline passes.
    async fn pump(&mut self) {
        let wait = self.s.poll_timeout().map(|t| t.saturating_sub(self.now())).unwrap_or(2000);
        let read = tokio::time::timeout(std::time::Duration::from_millis(wait), self.io.read_buf(&mut self.rx)).await;
        if let Ok(r) = read {
            assert!(r.unwrap() > 0, "broker closed the connection");
        }
        let now = self.now();
        let (replies, auth) = (&mut self.replies, &mut self.authenticated);
        let mut on = |e: Event<'_>| match e {
            Event::Reply { id, msg_type, payload } => replies.push((id, msg_type, payload.to_vec())),
            Event::Authenticated { dialect, .. } => *auth = Some(dialect),
            _ => {}
        };
        self.s.handle_timeout(now, &mut on).unwrap();
        while let Ok(TcpFrame::Complete { frame, consumed }) = frame::decode_tcp(&self.rx, 1 << 20) {
            self.s.handle_frame(now, frame, &mut on).unwrap();
            self.rx.drain(..consumed);
        }
    }

    async fn send<E: fitz_wire::Encode>(&mut self, msg: &E) -> RequestId {
        let (id, n) = self.s.request(self.now(), msg, 5000, &mut self.out).unwrap();
        let f = self.out[..n].to_vec();
        self.io.write_all(&f).await.unwrap();
        id
    }

    async fn reply(&mut self, id: RequestId) -> Vec<u8> {
        loop {
            if let Some(i) = self.replies.iter().position(|r| r.0 == id) {
                return self.replies.remove(i).2;
            }
            self.pump().await;
        }
    }
}

async fn kv_round_trip(c: &mut Conn, durability: Option<kv::Durability>, persistence: Option<kv::Durability>) {
    let r = "kv://acme/orders/main";
    let id = c.send(&kv::Begin { route: r, mode: kv::Mode::ReadWrite, durability }).await;
    let Reply::Ok(b) = kv::decode_begin_reply(&c.reply(id).await).unwrap() else { panic!() };
    let id = c.send(&kv::Put { tx_id: b.tx_id, route: r, key: b"k", value: b"v" }).await;
    assert_eq!(kv::decode_ack_reply(&c.reply(id).await).unwrap(), Reply::Ok(()));
    let id = c.send(&kv::Get { tx_id: b.tx_id, route: r, key: b"k" }).await;
    let get = c.reply(id).await;
    assert_eq!(kv::decode_get_reply(&get).unwrap(), Reply::Ok(kv::GetOk { value: Some(b"v") }));
    let id = c.send(&kv::Commit { tx_id: b.tx_id, route: r, persistence }).await;
    assert_eq!(kv::decode_ack_reply(&c.reply(id).await).unwrap(), Reply::Ok(()));
}

#[tokio::test]
async fn legacy_broker_is_detected_by_silence() {
    let b = Broker::start(BrokerConfig::anonymous()).await.unwrap();
    let mut c = Conn::open(b.tcp_addr().unwrap(), DialectMode::Auto).await;
    assert_eq!(c.authenticated, Some(Dialect::Legacy));
    kv_round_trip(&mut c, Some(kv::Durability::Sync), None).await;
}

#[tokio::test]
async fn current_broker_is_detected_by_hello_and_requests_pipeline() {
    let b = Broker::start(BrokerConfig::anonymous().with_dialect(Dialect::Current)).await.unwrap();
    let mut c = Conn::open(b.tcp_addr().unwrap(), DialectMode::Auto).await;
    assert_eq!(c.authenticated, Some(Dialect::Current));
    assert!(c.start.elapsed().as_millis() < 300, "SERVER_HELLO ends the window early");
    kv_round_trip(&mut c, None, Some(kv::Durability::Buffered)).await;
    // Three BEGINs on three resources in flight at once, matched by label.
    let mut ids = Vec::new();
    for r in ["kv://a/b/one", "kv://a/b/two", "kv://a/b/three"] {
        ids.push(c.send(&kv::Begin { route: r, mode: kv::Mode::ReadWrite, durability: None }).await);
    }
    for id in ids {
        assert!(matches!(kv::decode_begin_reply(&c.reply(id).await).unwrap(), Reply::Ok(_)));
    }
}
