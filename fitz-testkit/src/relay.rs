//! A fault-injecting TCP relay: sits between a client and a broker and can
//! cut connections, refuse new ones, delay or fragment bytes.
//!
//! The relay works at the TCP level, so it carries Fitz-over-TCP and
//! WebSocket alike (point a WebSocket client at [`Relay::ws_url`] and the
//! relay at the broker's WebSocket port). It is the "live-disconnect seam"
//! the clients' reconnect tests need: a connection can be cut while both
//! peers believe it is healthy, without any WebSocket close handshake or
//! Fitz-level goodbye.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fitz_testkit::relay::Relay;
//! use fitz_testkit::{Broker, BrokerConfig};
//!
//! let broker = Broker::start(BrokerConfig::anonymous()).await?;
//! let relay = Relay::start(broker.tcp_addr().unwrap()).await?;
//! // Connect the client under test to `relay.url_tcp()` …
//! relay.cut_all(); // … and it loses its connection.
//! relay.stop().await;
//! # Ok(()) }
//! ```
//!
//! Memory is bounded: each direction of each connection copies through one
//! fixed buffer of [`BUFFER`] bytes, and a slow receiver slows the sender
//! down (TCP back-pressure) instead of queueing bytes in the relay.

use core::net::SocketAddr;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Size of the copy buffer of each direction of each connection.
pub const BUFFER: usize = 16 * 1024;

/// The knobs a test turns while the relay runs.
#[derive(Debug, Default)]
struct Knobs {
    /// Sleep before every forwarded chunk.
    delay: Duration,
    /// Forward in chunks of at most this many bytes.
    fragment: Option<usize>,
    /// Close new connections at once.
    refuse: bool,
    /// Cut the next accepted connection after this many client bytes.
    cut_next: Option<u64>,
    /// Cut with a TCP reset instead of a FIN.
    reset: bool,
}

#[derive(Debug)]
struct Inner {
    upstream: SocketAddr,
    knobs: Mutex<Knobs>,
    /// Bumped by `cut_all`; every connection watches it.
    cut: watch::Sender<u64>,
    live: AtomicUsize,
}

impl Inner {
    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running relay. Dropping it stops it: the listener closes and every
/// relayed connection is cut.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `127.0.0.1:0` and relays every accepted connection to
    /// `upstream`, on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<Relay> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await
    }

    /// Like [`Relay::start`] with an explicit listen address (port 0 picks
    /// one).
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Relay> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(0u64);
        let inner = Arc::new(Inner { upstream, knobs: Mutex::new(Knobs::default()), cut, live: AtomicUsize::new(0) });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, inner.clone(), stop_rx));
        Ok(Relay { addr, inner, stop, task: Some(task) })
    }

    /// The relay's listening address (what the client connects to).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address every connection is relayed to.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    /// `tcp://host:port` of the relay.
    pub fn url_tcp(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// `ws://host:port/path` of the relay (for an upstream that is a
    /// WebSocket listener); a missing leading `/` is added.
    pub fn ws_url(&self, path: &str) -> String {
        if path.starts_with('/') { format!("ws://{}{path}", self.addr) } else { format!("ws://{}/{path}", self.addr) }
    }

    /// Abruptly closes every connection the relay has accepted, on both
    /// sides, without any close handshake. New connections are relayed as
    /// usual afterwards. (A connection the kernel has completed but the
    /// relay not yet accepted is not affected; wait for
    /// [`Relay::connection_count`] when that matters.)
    pub fn cut_all(&self) {
        self.inner.cut.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// The next accepted connection is closed right after it is accepted
    /// (the broker never sees it). Later connections are relayed.
    pub fn cut_next(&self) {
        self.cut_next_after(0);
    }

    /// The next accepted connection is cut after exactly `n` bytes from the
    /// client have been forwarded to the broker (`0`: right after accept).
    pub fn cut_next_after(&self, n: u64) {
        self.inner.knobs().cut_next = Some(n);
    }

    /// Sleeps `delay` before forwarding every chunk, in both directions
    /// (`Duration::ZERO`: no delay). Applies to live connections too.
    pub fn set_delay(&self, delay: Duration) {
        self.inner.knobs().delay = delay;
    }

    /// Forwards in chunks of at most `n` bytes, each written and flushed on
    /// its own (`Some(0)` counts as `Some(1)`); `None` forwards what was
    /// read in one write. Applies to live connections too.
    pub fn set_fragment(&self, n: Option<usize>) {
        self.inner.knobs().fragment = n.map(|n| n.max(1));
    }

    /// While `true`, new connections are closed as soon as they are
    /// accepted, as if the broker were down; live connections stay.
    pub fn set_refuse(&self, refuse: bool) {
        self.inner.knobs().refuse = refuse;
    }

    /// While `true`, cuts (and refusals) close with a TCP reset (`SO_LINGER`
    /// 0, the peer reads `ECONNRESET`) instead of an orderly FIN. Off by
    /// default.
    pub fn set_reset(&self, reset: bool) {
        self.inner.knobs().reset = reset;
    }

    /// Connections currently relayed (accepted, upstream reached, not yet
    /// closed).
    pub fn connection_count(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Stops listening, cuts every connection and waits for the relay's
    /// tasks to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    // Dropping the set (when this task ends) aborts every connection task,
    // which drops, and so closes, both of its sockets.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of descriptors and the like: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (refuse, cut_after, reset) = {
                    let mut k = inner.knobs();
                    let cut_after = if k.refuse { None } else { k.cut_next.take() };
                    (k.refuse, cut_after, k.reset)
                };
                if refuse || cut_after == Some(0) {
                    close(client, reset);
                    continue;
                }
                // Subscribe now, so a `cut_all` from here on reaches it.
                let cut = inner.cut.subscribe();
                conns.spawn(relay_connection(client, inner.clone(), cut, cut_after));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    conns.shutdown().await;
}

fn close(stream: TcpStream, reset: bool) {
    if reset {
        let _ = stream.set_zero_linger();
    }
    drop(stream);
}

/// Decrements the live count when a relayed connection ends.
struct Live(Arc<Inner>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn relay_connection(
    mut client: TcpStream,
    inner: Arc<Inner>,
    mut cut: watch::Receiver<u64>,
    cut_after: Option<u64>,
) {
    let mut server = tokio::select! {
        connected = TcpStream::connect(inner.upstream) => match connected {
            Ok(s) => s,
            Err(_) => {
                // The broker is down: the client sees its connection close.
                let reset = inner.knobs().reset;
                close(client, reset);
                return;
            }
        },
        _ = cut.changed() => {
            let reset = inner.knobs().reset;
            close(client, reset);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    inner.live.fetch_add(1, Ordering::SeqCst);
    let _live = Live(inner.clone());
    {
        let (client_rd, client_wr) = client.split();
        let (server_rd, server_wr) = server.split();
        let mut budget = cut_after;
        let up = pump(client_rd, server_wr, &inner, budget.as_mut());
        let down = pump(server_rd, client_wr, &inner, None);
        tokio::pin!(up, down);
        // Each direction ends on EOF (passing the half-close on) or on an
        // error; the connection ends when both have, on a used-up
        // `cut_next_after` budget, or on a cut.
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                pumped = &mut up, if !up_done => {
                    if pumped == Pumped::Budget {
                        break;
                    }
                    up_done = true;
                }
                _ = &mut down, if !down_done => down_done = true,
                _ = cut.changed() => break,
            }
        }
    }
    let reset = inner.knobs().reset;
    close(client, reset);
    close(server, reset);
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// EOF or an I/O error.
    Ended,
    /// The `cut_next_after` budget was used up.
    Budget,
}

/// Copies one direction through one fixed buffer. With a budget, forwards
/// at most that many bytes and then reports [`Pumped::Budget`].
async fn pump<R, W>(mut rd: R, mut wr: W, inner: &Inner, mut budget: Option<&mut u64>) -> Pumped
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    // On the heap, so that the connection future stays small.
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = wr.shutdown().await;
                return Pumped::Ended;
            }
            Ok(n) => n,
        };
        let mut take = n;
        if let Some(left) = budget.as_deref_mut() {
            take = take.min(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= take as u64;
        }
        let data = buf.get(..take).unwrap_or_default();
        let (delay, fragment) = {
            let k = inner.knobs();
            (k.delay, k.fragment)
        };
        for chunk in data.chunks(fragment.unwrap_or(BUFFER).max(1)) {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if wr.write_all(chunk).await.is_err() || wr.flush().await.is_err() {
                return Pumped::Ended;
            }
        }
        if budget.as_deref() == Some(&0) {
            return Pumped::Budget;
        }
    }
}
