//! # fitz-embassy
//!
//! The [embassy-net] binding of the Fitz client, for firmware: `#![no_std]`,
//! no allocation, every byte in storage the caller provides (a `static`).
//! Like every binding it only moves bytes, keeps time and runs a task; the
//! protocol (lifecycle, correlation, subscriptions, reconnect with backoff,
//! restore after reconnect) is [`fitz_client`]'s.
//!
//! ```rust,no_run
//! use fitz_embassy::{Client, Config, Remote, Resources, Runner};
//! use static_cell::ConstStaticCell;
//!
//! static RESOURCES: ConstStaticCell<Resources<'static>> = ConstStaticCell::new(Resources::new());
//!
//! #[embassy_executor::task]
//! async fn fitz_task(runner: Runner<'static>) -> ! {
//!     runner.run_forever().await
//! }
//!
//! async fn start(spawner: embassy_executor::Spawner, stack: embassy_net::Stack<'static>, seed: u64) {
//!     let broker = embassy_net::Ipv4Address::new(10, 0, 0, 1);
//!     let config = Config::new(Remote::Ip((broker, 4191).into()));
//!     let (client, runner) = fitz_embassy::new(stack, RESOURCES.take(), config, seed);
//!     spawner.spawn(fitz_task(runner).unwrap());
//!     client.ready().await.ok();
//!     client.notice().publish("notice://acme/devices/up", b"hello").await.ok();
//! }
//! # fn main() {}
//! ```
//!
//! ## Memory
//!
//! [`Resources`] holds every buffer and table; its const parameters set
//! the capacities. With the defaults:
//!
//! | part | parameter | default | holds |
//! |---|---|---|---|
//! | reply slots | `N` | 4 | requests in flight at once (with their replies) |
//! | subscribers | `S` | 4 | wire registrations (subscriptions, RPC workers) and local subscribers |
//! | RPC calls | [`CALLS`] | 2 | calls in flight, each with [`CALL_QUEUE_DEPTH`] = 2 response chunks |
//! | delivery queue | `Q` | 4 | deliveries buffered per subscriber |
//! | largest received frame | `M` | 512 B | a reply or delivery, copied once out of the socket |
//! | transmit buffers | `TX` | 2 × 512 B | the engine's, and the one being written |
//! | socket buffers | `SOCKET` | 2 × 1024 B | embassy-net's TCP receive and transmit rings |
//! | token | `TOKEN` | 512 B | the JWT written by the token provider |
//!
//! The measured sizes of each part (`size_of`, on the host and on
//! `thumbv7em-none-eabihf`) are in the repository's PERF.md; the
//! `memory` test prints them.
//!
//! [embassy-net]: https://docs.rs/embassy-net
#![no_std]
#![forbid(unsafe_code)]

use core::cell::RefCell;

use embassy_net::tcp::{self, TcpReader, TcpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, Instant, Timer};
use fitz_client::driver::{self, Buffers, FrameRx, Reconnect, TokenProvider};
use fitz_client::io::{Assembler, Copied, IoError, TcpTx};
use fitz_client::{Core, Engine, Shared, Stopped, Trace};

pub use fitz_client;

/// Reply slots by default.
pub const REQUEST_SLOTS: usize = 4;
/// Subscriber slots by default.
pub const SUBSCRIBERS: usize = 4;
/// Deliveries buffered per subscriber by default.
pub const QUEUE_DEPTH: usize = 4;
/// RPC calls in flight at once.
pub const CALLS: usize = 2;
/// Response chunks buffered per RPC call.
pub const CALL_QUEUE_DEPTH: usize = 2;
/// Largest received frame by default, in bytes.
pub const MAX_FRAME: usize = 512;
/// Size of each of the two transmit buffers by default.
pub const TX_BUFFER: usize = 512;
/// Size of each of the socket's receive and transmit rings by default.
pub const SOCKET_BUFFER: usize = 1024;
/// Size of the token buffer by default.
pub const TOKEN_BUFFER: usize = 512;

/// The engine of a client with these capacities.
pub type EngineOf<'d, const N: usize, const S: usize, const Q: usize, const M: usize> =
    Engine<Copied<M>, &'d mut [u8], N, S, Q, CALLS, CALL_QUEUE_DEPTH>;

type Cell<'d, const N: usize, const S: usize, const Q: usize, const M: usize> =
    Mutex<CriticalSectionRawMutex, RefCell<EngineOf<'d, N, S, Q, M>>>;

/// Every buffer and table of one client, in one place the caller owns
/// (a `static`, through `static_cell::ConstStaticCell` so that it is
/// never built on the stack). The const parameters are the capacities;
/// see the crate documentation for what each holds.
pub struct Resources<
    'd,
    const N: usize = REQUEST_SLOTS,
    const S: usize = SUBSCRIBERS,
    const Q: usize = QUEUE_DEPTH,
    const M: usize = MAX_FRAME,
    const TX: usize = TX_BUFFER,
    const SOCKET: usize = SOCKET_BUFFER,
    const TOKEN: usize = TOKEN_BUFFER,
> {
    engine: Option<Cell<'d, N, S, Q, M>>,
    tx: [u8; TX],
    spare: [u8; TX],
    socket_rx: [u8; SOCKET],
    socket_tx: [u8; SOCKET],
    token: [u8; TOKEN],
    frame: Assembler<M>,
}

impl<
    const N: usize,
    const S: usize,
    const Q: usize,
    const M: usize,
    const TX: usize,
    const SOCKET: usize,
    const TOKEN: usize,
> Resources<'_, N, S, Q, M, TX, SOCKET, TOKEN>
{
    /// Empty storage (all zeroes: it lands in `.bss`).
    #[allow(clippy::new_without_default, reason = "`Default` cannot be const; `ConstStaticCell` needs a const fn")]
    pub const fn new() -> Self {
        Resources {
            engine: None,
            tx: [0; TX],
            spare: [0; TX],
            socket_rx: [0; SOCKET],
            socket_tx: [0; SOCKET],
            token: [0; TOKEN],
            frame: Assembler::new(),
        }
    }
}

/// Where the broker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Remote<'a> {
    /// An IP address and port.
    Ip(IpEndpoint),
    /// A host name resolved with embassy-net's DNS client before every
    /// connection attempt, and a port.
    #[cfg(feature = "dns")]
    Host(&'a str, u16),
    #[doc(hidden)]
    #[cfg(not(feature = "dns"))]
    _Lifetime(core::marker::PhantomData<&'a ()>),
}

/// How the client connects and behaves.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config<'a> {
    /// The broker.
    pub remote: Remote<'a>,
    /// A fixed token sent in CONNECT (`None`: anonymous). Tokens that
    /// expire come from a [`TokenProvider`] given to [`Runner::run_with`].
    pub token: Option<&'a str>,
    /// Reconnect policy (jittered exponential backoff).
    pub reconnect: Reconnect,
    /// Session settings (settle window, dialect).
    pub session: fitz_client::Config,
    /// Sent as SESSION_METADATA where the broker supports it.
    pub service_name: Option<&'a str>,
    /// Requests in flight at once (at most `N`; `None`: `N`).
    pub max_in_flight: Option<usize>,
    /// TCP keep-alive interval (`None`: off).
    pub keepalive: Option<Duration>,
    /// The socket gives up on a peer that acknowledges nothing for this
    /// long (`None`: never).
    pub socket_timeout: Option<Duration>,
}

impl<'a> Config<'a> {
    /// Defaults for `remote`: anonymous, reconnect forever, 30 s keep-alive
    /// and 60 s socket timeout.
    pub fn new(remote: Remote<'a>) -> Self {
        Config {
            remote,
            token: None,
            reconnect: Reconnect::default(),
            session: fitz_client::Config::default(),
            service_name: None,
            max_in_flight: None,
            keepalive: Some(Duration::from_secs(30)),
            socket_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// The shared handle tasks use: a reference to the engine behind a
/// critical-section mutex. `Copy`, so every task can have one.
pub struct Handle<'d, const N: usize, const S: usize, const Q: usize, const M: usize> {
    cell: &'d Cell<'d, N, S, Q, M>,
}

impl<const N: usize, const S: usize, const Q: usize, const M: usize> Clone for Handle<'_, N, S, Q, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<const N: usize, const S: usize, const Q: usize, const M: usize> Copy for Handle<'_, N, S, Q, M> {}

impl<'d, const N: usize, const S: usize, const Q: usize, const M: usize> Shared for Handle<'d, N, S, Q, M> {
    type Core = EngineOf<'d, N, S, Q, M>;

    fn with<R>(&self, f: impl FnOnce(&mut Self::Core) -> R) -> R {
        // The engine never calls back into `with` (wakers only schedule
        // tasks), so the borrow is never taken twice.
        self.cell.lock(|c| f(&mut c.borrow_mut()))
    }

    fn now_ms(&self) -> u64 {
        Instant::now().as_millis()
    }

    fn trace(&self, event: Trace<'_>) {
        #[cfg(feature = "defmt")]
        match event {
            Trace::State(s) => defmt::debug!("fitz: state {}", s),
            Trace::ConnectFailed { attempt } => defmt::warn!("fitz: connect attempt {} failed", attempt),
            Trace::Backoff { attempt, delay_ms } => defmt::info!("fitz: retry {} in {} ms", attempt, delay_ms),
            Trace::Authenticated { dialect, epoch, .. } => {
                defmt::info!("fitz: authenticated ({}), epoch {}", dialect, epoch)
            }
            Trace::Stopped(why) => defmt::warn!("fitz: stopped: {}", why),
            Trace::Request { .. } | Trace::Reply { .. } | Trace::Subscribed { .. } => {}
        }
        #[cfg(not(feature = "defmt"))]
        let _ = event;
    }
}

/// The client tasks use: one pointer, cheap to clone (see
/// [`fitz_client::Client`] for the API).
pub type Client<
    'd,
    const N: usize = REQUEST_SLOTS,
    const S: usize = SUBSCRIBERS,
    const Q: usize = QUEUE_DEPTH,
    const M: usize = MAX_FRAME,
> = fitz_client::Client<Handle<'d, N, S, Q, M>>;

/// The embassy-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock;

impl driver::Clock for EmbassyClock {
    fn now_ms(&self) -> u64 {
        Instant::now().as_millis()
    }

    async fn sleep_until(&self, at_ms: u64) {
        Timer::at(Instant::from_millis(at_ms)).await;
    }
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConnectError {
    /// The TCP connect failed.
    Tcp(tcp::ConnectError),
    /// The host name did not resolve.
    #[cfg(feature = "dns")]
    Dns(embassy_net::dns::Error),
    /// The host name resolved to no address.
    #[cfg(feature = "dns")]
    NoAddress,
}

/// The transport: one embassy-net socket, reused by every connection.
pub struct Connector<'d, const M: usize> {
    #[cfg(feature = "dns")]
    stack: Stack<'d>,
    socket: TcpSocket<'d>,
    frame: &'d mut Assembler<M>,
    remote: Remote<'d>,
}

impl<const M: usize> Connector<'_, M> {
    async fn endpoint(&self) -> Result<IpEndpoint, ConnectError> {
        match self.remote {
            Remote::Ip(ep) => Ok(ep),
            #[cfg(feature = "dns")]
            Remote::Host(name, port) => {
                let addrs =
                    self.stack.dns_query(name, embassy_net::dns::DnsQueryType::A).await.map_err(ConnectError::Dns)?;
                let addr = addrs.first().ok_or(ConnectError::NoAddress)?;
                Ok(IpEndpoint::new(*addr, port))
            }
            #[cfg(not(feature = "dns"))]
            Remote::_Lifetime(_) => Err(ConnectError::Tcp(tcp::ConnectError::NoRoute)),
        }
    }
}

/// The receiving half: frames assembled straight out of the socket's
/// receive ring.
pub struct Rx<'a, const M: usize> {
    reader: TcpReader<'a>,
    frame: &'a mut Assembler<M>,
}

impl<const M: usize> FrameRx for Rx<'_, M> {
    type Buf = Copied<M>;
    type Error = IoError<tcp::Error>;

    async fn recv(&mut self) -> Result<Copied<M>, Self::Error> {
        loop {
            let frame = &mut *self.frame;
            let done = self.reader.read_with(|bytes| frame.feed(bytes)).await.map_err(IoError::Io)?;
            if let Some(done) = done {
                return done;
            }
        }
    }
}

impl<const M: usize> driver::Connector for Connector<'_, M> {
    type Buf = Copied<M>;
    type Rx<'a>
        = Rx<'a, M>
    where
        Self: 'a;
    type Tx<'a>
        = TcpTx<tcp::TcpWriter<'a>>
    where
        Self: 'a;
    type Error = ConnectError;

    async fn connect(&mut self) -> Result<(Self::Rx<'_>, Self::Tx<'_>), ConnectError> {
        // The previous connection, if any, ends with a reset that is sent
        // before the socket is reused.
        if self.socket.state() != tcp::State::Closed {
            self.socket.abort();
            let _ = self.socket.flush().await;
        }
        self.frame.reset();
        let ep = self.endpoint().await?;
        self.socket.connect(ep).await.map_err(ConnectError::Tcp)?;
        let (reader, writer) = self.socket.split();
        Ok((Rx { reader, frame: &mut *self.frame }, TcpTx::unflushed(writer)))
    }
}

/// The connection task's state: run it in its own embassy task with
/// [`Runner::run`] (or [`Runner::run_forever`]).
pub struct Runner<
    'd,
    const N: usize = REQUEST_SLOTS,
    const S: usize = SUBSCRIBERS,
    const Q: usize = QUEUE_DEPTH,
    const M: usize = MAX_FRAME,
> {
    handle: Handle<'d, N, S, Q, M>,
    connector: Connector<'d, M>,
    spare: &'d mut [u8],
    token: &'d mut [u8],
    fixed: Option<&'d str>,
    policy: Reconnect,
    seed: u64,
}

impl<'d, const N: usize, const S: usize, const Q: usize, const M: usize> Runner<'d, N, S, Q, M> {
    /// Runs the connection with the configured token until the client is
    /// closed or gives up (per the reconnect policy).
    pub fn run(self) -> impl Future<Output = Stopped> {
        let fixed = driver::Fixed(self.fixed.unwrap_or("").as_bytes());
        self.run_with(fixed)
    }

    /// Runs the connection with tokens from `tokens`, fresh for every
    /// connection.
    pub async fn run_with(mut self, tokens: impl TokenProvider) -> Stopped {
        let mut seed = self.seed;
        // xorshift64: backoff jitter, not security.
        let random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u32
        };
        let buffers = Buffers { spare: &mut *self.spare, token: &mut *self.token };
        let stopped =
            driver::run(self.handle, &mut self.connector, EmbassyClock, tokens, self.policy, random, buffers).await;
        // A FIN for the broker; a peer that is gone cannot hold the task
        // longer than a second.
        self.connector.socket.close();
        let _ = embassy_time::with_timeout(Duration::from_secs(1), self.connector.socket.flush()).await;
        stopped
    }

    /// [`run`](Self::run), then parks: for an embassy task that must not
    /// return.
    pub async fn run_forever(self) -> ! {
        let _ = self.run().await;
        core::future::pending().await
    }
}

/// Sets up a client in `resources`: returns the client tasks use and the
/// runner to spawn. `seed` (from the chip's RNG) only jitters reconnects.
pub fn new<
    'd,
    const N: usize,
    const S: usize,
    const Q: usize,
    const M: usize,
    const TX: usize,
    const SOCKET: usize,
    const TOKEN: usize,
>(
    stack: Stack<'d>,
    resources: &'d mut Resources<'d, N, S, Q, M, TX, SOCKET, TOKEN>,
    config: Config<'d>,
    seed: u64,
) -> (Client<'d, N, S, Q, M>, Runner<'d, N, S, Q, M>) {
    let Resources { engine, tx, spare, socket_rx, socket_tx, token, frame } = resources;
    let mut e = Engine::new(config.session, &mut tx[..]);
    e.set_in_flight_limit(config.max_in_flight.unwrap_or(N));
    if let Some(name) = config.service_name {
        // A name longer than the engine keeps is refused: none is sent.
        let _ = e.set_service_name(name);
    }
    let cell: &'d Cell<'d, N, S, Q, M> = engine.insert(Mutex::new(RefCell::new(e)));
    let handle = Handle { cell };
    let mut socket = TcpSocket::new(stack, &mut socket_rx[..], &mut socket_tx[..]);
    socket.set_keep_alive(config.keepalive);
    socket.set_timeout(config.socket_timeout);
    let connector = Connector {
        #[cfg(feature = "dns")]
        stack,
        socket,
        frame,
        remote: config.remote,
    };
    let runner = Runner {
        handle,
        connector,
        spare: &mut spare[..],
        token: &mut token[..],
        fixed: config.token,
        policy: config.reconnect,
        // xorshift must not start at zero.
        seed: seed | 1,
    };
    (fitz_client::Client::new(handle), runner)
}
