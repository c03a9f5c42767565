//! # fitz-testkit
//!
//! An in-memory Fitz broker for host-side tests: it speaks the real wire
//! protocol (through `fitz-wire`, no second codec) over TCP and WebSocket on
//! loopback, in the legacy or the current dialect, with anonymous or HS256
//! JWT authentication, and implements the seven domains as `BROKER.md`
//! describes. Several independent brokers ("worlds") can run in one
//! process. A fault-injecting [`relay`] sits between a client and a broker
//! to cut, delay or fragment connections.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fitz_testkit::{Broker, BrokerConfig};
//! let broker = Broker::start(BrokerConfig::anonymous()).await?;
//! println!("tcp://{}", broker.tcp_addr().unwrap());
//! broker.stop().await;
//! # Ok(()) }
//! ```
//!
//! Time-dependent behaviour (TTLs, visibility timeouts, long polls, cron)
//! follows [`ClockMode`]: real time by default, or scaled or manual for
//! tests that must not sleep.

// A std crate: the workspace's no_std-oriented lints do not apply here.
#![allow(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

mod auth;
mod clock;
mod config;
mod core;
mod kv;
mod lease;
mod notice;
mod queue;
pub mod relay;
mod rpc;
mod schedule;
mod server;
mod stream;
mod subs;
pub mod tokens;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::{AuthMode, BrokerConfig, ClockMode, CurrentDialect, JwtConfig, Limits};
pub use fitz_wire::{Capabilities, Dialect};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running broker. Dropping it stops it (connections are closed).
pub struct Broker {
    shared: Arc<server::Shared>,
    tcp: Option<SocketAddr>,
    ws: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("tcp", &self.tcp).field("ws", &self.ws).finish_non_exhaustive()
    }
}

impl Broker {
    /// Binds the configured listeners and starts serving on the current
    /// tokio runtime.
    pub async fn start(cfg: BrokerConfig) -> std::io::Result<Broker> {
        let cfg = Arc::new(cfg);
        let clock = Arc::new(clock::Clock::new(cfg.clock));
        let shared = Arc::new(server::Shared {
            cfg: cfg.clone(),
            world: Mutex::new(world::World::new(cfg.clone(), clock.clone())),
            clock,
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut tcp = None;
        if let Some(addr) = cfg.tcp {
            let (l, a) = server::bind(addr).await?;
            tcp = Some(a);
            tasks.push(tokio::spawn(server::serve_tcp(l, shared.clone(), stop_rx.clone())));
        }
        let mut ws = None;
        if let Some(addr) = cfg.ws {
            let (l, a) = server::bind(addr).await?;
            ws = Some(a);
            tasks.push(tokio::spawn(server::serve_ws(l, shared.clone(), stop_rx.clone())));
        }
        if cfg.clock != ClockMode::Manual {
            let (shared, mut stop_rx) = (shared.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                let every = shared.clock.tick_interval();
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => shared.world().tick(),
                        _ = stop_rx.changed() => return,
                    }
                }
            }));
        }
        Ok(Broker { shared, tcp, ws, stop, tasks })
    }

    /// Starts a broker on a runtime of its own, in a background thread, for
    /// callers that are not inside tokio (e.g. an embassy executor).
    pub fn start_in_background(cfg: BrokerConfig) -> std::io::Result<BackgroundBroker> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("fitz-testkit".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match Broker::start(cfg).await {
                    Ok(b) => {
                        let mut stop = b.stop.subscribe();
                        let _ = tx.send(Ok((b.tcp, b.ws, b.stop.clone(), b.shared.clone())));
                        let _ = stop.changed().await;
                        b.stop().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
        let (tcp, ws, stop, shared) =
            rx.recv().map_err(|_| std::io::Error::other("broker thread ended before starting"))??;
        Ok(BackgroundBroker { tcp, ws, stop, shared, thread: Some(thread) })
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The bound WebSocket address.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws
    }

    /// `tcp://host:port` of the TCP listener.
    pub fn tcp_url(&self) -> Option<String> {
        self.tcp.map(|a| format!("tcp://{a}"))
    }

    /// `ws://host:port/ws` of the WebSocket listener.
    pub fn ws_url(&self) -> Option<String> {
        self.ws.map(|a| format!("ws://{a}{}", self.shared.cfg.ws_path))
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.shared.cfg
    }

    /// Number of authenticated sessions currently connected.
    pub fn session_count(&self) -> usize {
        self.shared.world().core.sessions.len()
    }

    /// The service names connected sessions declared with SESSION_METADATA
    /// (current dialect), sorted.
    pub fn session_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.shared.world().core.sessions.values().filter_map(|s| s.name.clone()).collect();
        names.sort();
        names
    }

    /// Moves a [`ClockMode::Manual`] clock forward and runs every
    /// time-driven action that became due.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
        self.shared.world().tick();
    }

    /// Makes the next request of `msg_type` fail with this error instead of
    /// being processed (e.g. 4005 queue full, 6003 backpressure): `Some(code)`
    /// sends the coded envelope, `None` the plain one.
    pub fn inject_error(&self, msg_type: fitz_wire::MsgType, code: Option<u32>, message: &str) {
        self.shared.world().core.injected.insert(msg_type.0, core::Injected { code, message: message.to_owned() });
    }

    /// Stops the broker and waits for its listeners to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A broker running on its own runtime thread ([`Broker::start_in_background`]).
/// Dropping it stops the broker and joins the thread.
pub struct BackgroundBroker {
    tcp: Option<SocketAddr>,
    ws: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    shared: Arc<server::Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for BackgroundBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundBroker").field("tcp", &self.tcp).field("ws", &self.ws).finish_non_exhaustive()
    }
}

impl BackgroundBroker {
    /// The bound TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }
    /// The bound WebSocket address.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws
    }
    /// Number of authenticated sessions currently connected.
    pub fn session_count(&self) -> usize {
        self.shared.world().core.sessions.len()
    }
}

impl Drop for BackgroundBroker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
