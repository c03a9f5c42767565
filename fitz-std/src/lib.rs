//! # fitz-std
//!
//! The tokio client for the Fitz broker. The protocol engine is
//! [`fitz_client`] (no_std, fixed tables); this crate only moves bytes
//! (TCP, WebSocket, wss), keeps time and runs the connection task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = fitz_std::Client::builder("tcp://127.0.0.1:4191").anonymous().connect().await?;
//! client.notice().publish("notice://acme/app/greeting", b"hello").await?;
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! [`Client`] is cheap to clone and `Send + Sync`; clones share one
//! connection. Replies and deliveries are [`bytes::Bytes`] slices of the
//! receive buffer: nothing is copied. Memory is bounded: the engine's
//! tables are fixed ([`REQUEST_SLOTS`], [`SUBSCRIBERS`], [`QUEUE_DEPTH`],
//! [`CALLS`], [`CALL_QUEUE_DEPTH`]),
//! the transmit buffer and the largest frame accepted are set by the
//! builder.
#![forbid(unsafe_code)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::alloc_instead_of_core)]

pub mod lease;
pub mod memory;
pub mod rpc;
mod transport;

/// The workspace README's examples compile (`cargo test --doc`).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fitz_client::Stopped;
use fitz_client::driver::{self, Reconnect};
use fitz_client::{Config, DialectMode, Engine, State};

pub use fitz_client::{self as core, Capacity, Error, Fault, Item};

#[doc(hidden)]
pub fn engine_size() -> usize {
    std::mem::size_of::<StdEngine>()
}
/// The rustls version fitz-std is built with (for [`Builder::tls_config`]).
pub use rustls;
pub use transport::{Endpoint, TransportError};

/// Requests in flight at once (the correlation table).
pub const REQUEST_SLOTS: usize = 1024;
/// Local subscribers (and wire registrations) at once: subscriptions and
/// RPC workers.
pub const SUBSCRIBERS: usize = 64;
/// Deliveries buffered per subscriber before it ends with
/// [`Error::Backpressure`].
pub const QUEUE_DEPTH: usize = 256;
/// RPC calls in flight at once; one more fails with
/// [`Capacity::Calls`].
pub const CALLS: usize = 1024;
/// Response chunks (and lifecycle signals) buffered per RPC call before it
/// ends with [`Error::Backpressure`]: a one-shot reply needs one; a
/// streamed response is read as it arrives.
pub const CALL_QUEUE_DEPTH: usize = 16;

type StdEngine = Engine<Bytes, Box<[u8]>, REQUEST_SLOTS, SUBSCRIBERS, QUEUE_DEPTH, CALLS, CALL_QUEUE_DEPTH>;

/// The engine behind a std mutex, shared by every clone of a [`Client`],
/// and the origin of its clock.
#[derive(Clone)]
pub struct Handle(Arc<Mutex<StdEngine>>, Instant);

impl fitz_client::Shared for Handle {
    type Core = StdEngine;

    fn with<R>(&self, f: impl FnOnce(&mut StdEngine) -> R) -> R {
        // The engine never panics while locked; if a task did, its state is
        // still consistent (every update is a single assignment).
        let mut g = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.1.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn trace(&self, event: fitz_client::Trace<'_>) {
        use fitz_client::Trace;
        // Each macro checks its callsite's interest first: without a
        // subscriber this is a load and a branch.
        match event {
            Trace::State(state) => tracing::debug!(target: "fitz", ?state, "state"),
            Trace::ConnectFailed { attempt } => tracing::warn!(target: "fitz", attempt, "connect failed"),
            Trace::Backoff { attempt, delay_ms } => {
                tracing::info!(target: "fitz", attempt, delay_ms, "reconnecting after backoff");
            }
            Trace::Authenticated { dialect, capabilities, epoch } => {
                tracing::info!(target: "fitz", ?dialect, capabilities = capabilities.0, epoch, "authenticated");
            }
            Trace::Request { msg_type, id } => {
                tracing::trace!(target: "fitz::request", msg_type = msg_type.0, slot = id.slot(), epoch = id.epoch(), "sent");
            }
            Trace::Reply { id, error: None } => {
                tracing::trace!(target: "fitz::request", slot = id.slot(), epoch = id.epoch(), "reply");
            }
            Trace::Reply { id, error: Some(e) } => {
                tracing::debug!(target: "fitz::request", slot = id.slot(), epoch = id.epoch(), error = %e, "failed");
            }
            Trace::Subscribed { msg_type } => tracing::debug!(target: "fitz", msg_type = msg_type.0, "subscribed"),
            Trace::Stopped(why) => tracing::info!(target: "fitz", ?why, "stopped"),
        }
    }
}

/// The core client type of this binding: every domain API lives on it.
pub type CoreClient = fitz_client::Client<Handle>;

/// A subscription or RPC response stream (a `futures::Stream`).
pub type Subscription = fitz_client::Subscription<Handle>;

struct TokioClock(Instant);

impl driver::Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn sleep_until(&self, at_ms: u64) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(self.0 + Duration::from_millis(at_ms))).await;
    }
}

/// An async token source: called before every (re)connect.
pub type TokenFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, Error>> + Send>> + Send + Sync>;

struct Tokens(Option<TokenFn>);

impl driver::TokenProvider for Tokens {
    async fn token(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        let Some(f) = &self.0 else { return Ok(0) };
        let t = f().await?;
        driver::write_token(out, t.as_bytes())
    }
}

/// Builds a [`Client`].
pub struct Builder {
    url: String,
    tokens: Option<TokenFn>,
    reconnect: Reconnect,
    cfg: Config,
    tx_buffer: usize,
    in_flight: usize,
    service_name: Option<String>,
    max_frame: u32,
    keepalive: Option<Duration>,
    heartbeat: Duration,
    tls: transport::TlsSettings,
}

impl Builder {
    /// Connect anonymously (an empty token). This is the default.
    pub fn anonymous(mut self) -> Self {
        self.tokens = None;
        self
    }

    /// A fixed token (JWT) for every connection.
    pub fn token(self, token: impl Into<String>) -> Self {
        let token: Arc<str> = Arc::from(token.into());
        self.token_provider(move || {
            let t = token.clone();
            async move { Ok(t.to_string()) }
        })
    }

    /// An async token provider, called before every (re)connect. A token
    /// the broker refused is never sent again: if the provider returns it
    /// again, the client stops with [`Error::AuthenticationFailed`].
    pub fn token_provider<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, Error>> + Send + 'static,
    {
        self.tokens = Some(Arc::new(move || Box::pin(f())));
        self
    }

    /// The reconnect policy (enabled, jittered exponential backoff,
    /// attempts).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = policy;
        self
    }

    /// Turns reconnecting off: a lost connection closes the client.
    pub fn no_reconnect(mut self) -> Self {
        self.reconnect.enabled = false;
        self
    }

    /// The authentication settle window (default 1 s; a SERVER_HELLO ends
    /// it at once).
    pub fn settle_window(mut self, d: Duration) -> Self {
        self.cfg.settle_window_ms = millis(d);
        self
    }

    /// Force a dialect instead of detecting it.
    pub fn dialect(mut self, mode: DialectMode) -> Self {
        self.cfg.dialect = mode;
        self
    }

    /// Transmit buffer size (default 256 KiB): frames queued between two
    /// writes; the largest frame that can be sent.
    pub fn tx_buffer(mut self, bytes: usize) -> Self {
        self.tx_buffer = bytes.max(1024);
        self
    }

    /// Requests in flight at once (default and maximum [`REQUEST_SLOTS`]);
    /// more wait for one to finish instead of failing.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.clamp(1, REQUEST_SLOTS);
        self
    }

    /// A service name the broker shows for this client's sessions
    /// (SESSION_METADATA, sent when the broker advertises it). 1–128 bytes
    /// after trimming, no control characters: otherwise connecting fails
    /// with [`Error::Invalid`].
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Largest frame accepted from the broker (default 1 MiB).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }

    /// TCP keepalive interval (default 30 s; `None` turns it off).
    pub fn keepalive(mut self, every: Option<Duration>) -> Self {
        self.keepalive = every;
        self
    }

    /// WebSocket heartbeat: after this long without a message the client
    /// pings, and gives up after the same time again (default 20 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Trusts `der`, a DER-encoded CA certificate, for `wss://` besides the
    /// built-in webpki roots: a private or test CA whose certificates the
    /// broker (or the TLS proxy in front of it) presents. May be called
    /// more than once; every certificate given is trusted.
    ///
    /// The certificate is checked when the client starts: one that does
    /// not parse makes [`Builder::connect`] and [`Builder::start`] fail
    /// with [`Error::Invalid`]`("TLS root certificate")`, whatever the
    /// URL's scheme. Not used when a whole configuration is given with
    /// [`Builder::tls_config`].
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.tls.extra_roots.push(rustls::pki_types::CertificateDer::from(der.into()));
        self
    }

    /// Uses `cfg` as it is for `wss://`, instead of the default one (the
    /// ring provider, the safe default protocol versions, the webpki roots
    /// plus those of [`Builder::add_root_certificate`], which `cfg`
    /// replaces: put extra roots in its own root store). Use it for client
    /// certificates, a custom certificate verifier or another crypto
    /// provider; `cfg` is a rustls 0.23 configuration, the version this
    /// crate depends on.
    pub fn tls_config(mut self, cfg: Arc<rustls::ClientConfig>) -> Self {
        self.tls.config = Some(cfg);
        self
    }

    /// Starts the connection task and waits until the client is
    /// authenticated. Fails with [`Error::Unreachable`] when the first
    /// connection cannot be made (one attempt within the connect timeout,
    /// unless [`Reconnect::first_connect_attempts`] says otherwise; the
    /// reason, e.g. an untrusted certificate, is logged by `tracing` at
    /// warn level), [`Error::AuthenticationFailed`] when the token is
    /// refused, [`Error::Invalid`] for a bad URL or root certificate. Once
    /// connected, the reconnect policy applies.
    pub async fn connect(mut self) -> Result<Client, Error> {
        self.reconnect.first_connect_attempts.get_or_insert(1);
        let client = self.start()?;
        client.authenticated().await
    }

    /// Like [`Builder::connect`], over an in-memory [`memory::Link`]
    /// instead of the URL's transport (the URL is only used in logs): the
    /// [`memory::Peer`] plays the broker, CONNECT included.
    pub async fn connect_in_memory(mut self, link: memory::Link) -> Result<Client, Error> {
        self.reconnect.first_connect_attempts.get_or_insert(1);
        let client = self.start_in_memory(link)?;
        client.authenticated().await
    }

    /// Like [`Builder::start`], over an in-memory [`memory::Link`].
    pub fn start_in_memory(self, link: memory::Link) -> Result<Client, Error> {
        let connector = memory::MemoryConnector::new(link, self.max_frame);
        let (handle, run) = self.launch(connector)?;
        Ok(Client::spawned(handle, tokio::spawn(run)))
    }

    /// Starts the connection task without waiting; operations wait until
    /// the client is authenticated.
    pub fn start(mut self) -> Result<Client, Error> {
        let endpoint = Endpoint::parse(&self.url).map_err(|_| Error::Invalid("broker URL"))?;
        let connector = transport::Connector::new(transport::TransportConfig {
            endpoint,
            max_frame: self.max_frame,
            keepalive: self.keepalive,
            heartbeat: self.heartbeat,
            tls: std::mem::take(&mut self.tls),
        })
        .map_err(|e| {
            tracing::warn!(target: "fitz", error = %e, "TLS configuration refused");
            Error::Invalid("TLS root certificate")
        })?;
        let (handle, run) = self.launch(connector)?;
        Ok(Client::spawned(handle, tokio::spawn(run)))
    }

    /// The engine and the future that runs its connections over
    /// `connector` (spawned by the caller, where the connector's type is
    /// known to be `Send`).
    fn launch<C>(self, connector: C) -> Result<(Handle, impl Future<Output = ()> + 'static), Error>
    where
        C: driver::Connector<Buf = Bytes> + 'static,
    {
        let origin = Instant::now();
        let handle = Handle(build_engine(self.cfg, self.tx_buffer)?, origin);
        let clock = TokioClock(origin);
        let spare = vec![0u8; self.tx_buffer].into_boxed_slice();
        fitz_client::Shared::with(&handle, |e| {
            fitz_client::Core::set_in_flight_limit(e, self.in_flight);
            match &self.service_name {
                Some(name) => fitz_client::Core::set_service_name(e, name),
                None => Ok(()),
            }
        })?;
        let h = handle.clone();
        let (policy, tokens) = (self.reconnect, Tokens(self.tokens));
        let url = self.url.clone();
        let run = async move {
            let mut token = vec![0u8; driver::TOKEN_MAX];
            let mut seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
            let random = move || {
                // xorshift: jitter only, not security.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u32
            };
            let span = tracing::info_span!(target: "fitz", "fitz.connection", %url);
            let _ = tracing::Instrument::instrument(
                driver::run(h, connector, clock, tokens, policy, random, driver::Buffers { spare, token: &mut token }),
                span,
            )
            .await;
        };
        Ok((handle, run))
    }
}

/// Builds the engine (a few hundred KiB of fixed tables) on a thread with
/// a stack large enough for it, so that no caller's stack has to hold it
/// (unoptimised builds move it several times before it reaches the heap).
fn build_engine(cfg: Config, tx_buffer: usize) -> Result<Arc<Mutex<StdEngine>>, Error> {
    let size = std::mem::size_of::<StdEngine>();
    std::thread::Builder::new()
        .name("fitz-engine-init".into())
        .stack_size(8 * size + (1 << 20))
        .spawn(move || Arc::new(Mutex::new(Engine::new(cfg, vec![0u8; tx_buffer].into_boxed_slice()))))
        .map_err(|_| Error::Capacity(Capacity::Requests))?
        .join()
        .map_err(|_| Error::Capacity(Capacity::Requests))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Inner {
    core: CoreClient,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A connected Fitz client. Cheap to clone, `Send + Sync`; the domain APIs
/// ([`CoreClient`]'s methods) are reached through `Deref`.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

impl Deref for Client {
    type Target = CoreClient;

    fn deref(&self) -> &CoreClient {
        &self.0.core
    }
}

impl Deref for Inner {
    type Target = CoreClient;

    fn deref(&self) -> &CoreClient {
        &self.core
    }
}

impl Client {
    fn spawned(handle: Handle, task: tokio::task::JoinHandle<()>) -> Client {
        Client(Arc::new(Inner { core: fitz_client::Client::new(handle), task: Mutex::new(Some(task)) }))
    }

    /// Waits until the first connection is authenticated; the outcome of
    /// [`Builder::connect`].
    async fn authenticated(self) -> Result<Client, Error> {
        let mut state = self.state();
        loop {
            match state {
                State::Authenticated => return Ok(self),
                State::Closed => {
                    return Err(match self.stopped() {
                        Some(Stopped::AuthenticationFailed) => Error::AuthenticationFailed,
                        Some(Stopped::GaveUp) => Error::Unreachable,
                        Some(Stopped::Closed) | None => Error::Closed,
                    });
                }
                s => state = self.changed(s).await,
            }
        }
    }

    /// A builder for `url` (`tcp://host:port`, `ws://host:port/ws`,
    /// `wss://…`).
    pub fn builder(url: impl Into<String>) -> Builder {
        Builder {
            url: url.into(),
            tokens: None,
            reconnect: Reconnect::default(),
            cfg: Config::default(),
            tx_buffer: 256 * 1024,
            in_flight: REQUEST_SLOTS,
            service_name: None,
            max_frame: fitz_wire::frame::BROKER_MAX_FRAME,
            keepalive: Some(Duration::from_secs(30)),
            heartbeat: Duration::from_secs(20),
            tls: transport::TlsSettings::default(),
        }
    }

    /// A watch of the lifecycle state: yields each new state.
    pub fn watch(&self) -> Pin<Box<dyn futures_core::Stream<Item = State> + Send + 'static>> {
        let core = self.0.core.clone();
        let seen = core.state();
        Box::pin(futures_util::stream::unfold((core, seen), |(core, seen)| async move {
            if seen == State::Closed {
                return None;
            }
            let s = core.changed(seen).await;
            Some((s, (core, s)))
        }))
    }

    /// Closes the client: pending operations fail with [`Error::Closed`],
    /// the connection task ends (this waits for it). Idempotent.
    pub async fn close(&self) {
        self.0.core.close();
        let task = self.0.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

// Checked at compile time: a Client crosses tasks and threads.
const _: () = {
    const fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Client>();
    const fn sendable<T: Send + 'static>() {}
    sendable::<Subscription>();
};

impl Drop for Inner {
    fn drop(&mut self) {
        // The last clone is gone: stop the connection task.
        self.core.close();
    }
}
