//! The generic client as a no_std binding would run it: the driver over an
//! `embedded-io-async` byte stream (tokio's TCP through
//! `embedded-io-adapters`), fixed-size `Copied` frames, a fixed transmit
//! buffer array, a plain mutex — and the same domain APIs fitz-std uses,
//! against fitz-testkit in both dialects.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::std_instead_of_core)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_io_adapters::tokio_1::FromTokio;
use fitz_client::driver::{self, Anonymous, Clock, Connector, Reconnect};
use fitz_client::io::{Copied, TcpRx, TcpTx};
use fitz_client::ops::kv::TxMode;
use fitz_client::{Client, Config, Engine, Shared, State};
use fitz_testkit::{Broker, BrokerConfig, Dialect};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest frame kept (and so the largest delivery).
const M: usize = 2048;
type Small = Engine<Copied<M>, [u8; 4096], 8, 4, 4>;

#[derive(Clone)]
struct Handle(Arc<Mutex<Small>>, Instant);

impl Shared for Handle {
    type Core = Small;
    fn with<R>(&self, f: impl FnOnce(&mut Small) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }
    fn now_ms(&self) -> u64 {
        self.1.elapsed().as_millis() as u64
    }
}

struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    async fn sleep_until(&self, at_ms: u64) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(self.0 + Duration::from_millis(at_ms))).await;
    }
}

struct Tcp(std::net::SocketAddr);

impl Connector for Tcp {
    type Buf = Copied<M>;
    type Rx<'a> = TcpRx<FromTokio<OwnedReadHalf>, [u8; 4096], M>;
    type Tx<'a> = TcpTx<FromTokio<OwnedWriteHalf>>;
    type Error = std::io::Error;
    async fn connect(&mut self) -> Result<(Self::Rx<'_>, Self::Tx<'_>), std::io::Error> {
        let s = TcpStream::connect(self.0).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok((TcpRx::new(FromTokio::new(r), [0; 4096]), TcpTx::new(FromTokio::new(w))))
    }
}

async fn start(addr: std::net::SocketAddr) -> (Client<Handle>, tokio::task::JoinHandle<driver::Stopped>) {
    let origin = Instant::now();
    let cfg = Config { settle_window_ms: 150, ..Config::default() };
    let h = Handle(Arc::new(Mutex::new(Engine::new(cfg, [0; 4096]))), origin);
    let client = Client::new(h.clone());
    let task = tokio::spawn(async move {
        let mut token = [0u8; 64];
        let buffers = driver::Buffers { spare: [0u8; 4096], token: &mut token };
        Box::pin(driver::run(h, Tcp(addr), TokioClock(origin), Anonymous, Reconnect::default(), || 4, buffers)).await
    });
    tokio::time::timeout(Duration::from_secs(10), client.ready()).await.unwrap().unwrap();
    (client, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_client_over_embedded_io_async() {
    for dialect in [Dialect::Legacy, Dialect::Current] {
        let broker = Broker::start(BrokerConfig::anonymous().with_dialect(dialect)).await.unwrap();
        let (c, task) = start(broker.tcp_addr().unwrap()).await;
        assert_eq!(c.state(), State::Authenticated);
        assert_eq!(c.dialect().map(|d| d.0), Some(dialect));

        let tx = c.kv().begin("kv://eio/a/b", TxMode::ReadWrite).await.unwrap();
        tx.put(b"k", b"v").await.unwrap();
        assert_eq!(tx.get(b"k").await.unwrap().as_ref().map(|v| v.as_ref()), Some(&b"v"[..]));
        tx.commit().await.unwrap();

        let mut n = c.notice().subscribe("notice://eio/a/*").await.unwrap();
        c.notice().publish("notice://eio/a/x", b"hello").await.unwrap();
        let got = n.next().await.unwrap().unwrap();
        assert_eq!((got.route(), got.body().as_ref()), ("notice://eio/a/x", &b"hello"[..]));

        // A frame larger than M cannot be kept: the connection ends with a
        // typed error instead of a truncated delivery, and the client
        // reconnects (the oversized value is not read again).
        let tx = c.kv().begin("kv://eio/a/big", TxMode::ReadWrite).await.unwrap();
        tx.put(b"big", &[7u8; 3000]).await.unwrap();
        let epoch = c.epoch();
        assert_eq!(tx.get(b"big").await.unwrap_err(), fitz_client::Error::ConnectionLost);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !(c.state() == State::Authenticated && c.epoch() != epoch) {
                c.changed(c.state()).await;
            }
        })
        .await
        .unwrap();
        c.close();
        assert_eq!(task.await.unwrap(), driver::Stopped::Closed);
    }
}
