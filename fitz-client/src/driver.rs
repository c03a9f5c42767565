//! The connection driver: connect, authenticate, move frames, keep time,
//! reconnect with backoff. Generic over the binding's transport, clock and
//! token provider; the binding only spawns [`run`].

use core::future::poll_fn;
use core::task::Poll;

use embassy_futures::select::{Either, Either4, select, select4};

use crate::client::{BufOf, Shared, Trace};
use crate::engine::Core;
use crate::error::Error;
use crate::session::State;

/// Milliseconds since an arbitrary origin, and sleeping until an instant.
#[allow(async_fn_in_trait)]
pub trait Clock {
    /// Now, in milliseconds.
    fn now_ms(&self) -> u64;
    /// Returns at `at_ms` (at once if it has passed).
    async fn sleep_until(&self, at_ms: u64);
}

/// Receives whole frames (without the TCP prefix) as owned views.
#[allow(async_fn_in_trait)]
pub trait FrameRx {
    /// The owned frame.
    type Buf;
    /// Transport error.
    type Error: core::fmt::Debug;
    /// The next frame. Must be cancel-safe: a frame is either returned or
    /// stays buffered.
    async fn recv(&mut self) -> Result<Self::Buf, Self::Error>;
}

/// Sends frames.
#[allow(async_fn_in_trait)]
pub trait FrameTx {
    /// Transport error.
    type Error: core::fmt::Debug;
    /// Writes `frames`: one or more whole frames, each with its TCP length
    /// prefix (a WebSocket transport sends each frame without the prefix
    /// as one binary message; [`tcp_frames`] splits them).
    async fn send(&mut self, frames: &[u8]) -> Result<(), Self::Error>;
}

/// Opens transports. The halves may borrow the connector (an embassy-net
/// socket and its buffers live in it and are reused by every connection).
#[allow(async_fn_in_trait)]
pub trait Connector {
    /// The received-frame type of [`Self::Rx`].
    type Buf;
    /// Receiving half.
    type Rx<'a>: FrameRx<Buf = Self::Buf>
    where
        Self: 'a;
    /// Sending half.
    type Tx<'a>: FrameTx
    where
        Self: 'a;
    /// Connect error.
    type Error: core::fmt::Debug;
    /// Opens a connection to the broker. The halves of the previous
    /// connection are dropped before this is called again.
    async fn connect(&mut self) -> Result<(Self::Rx<'_>, Self::Tx<'_>), Self::Error>;
}

/// A borrowed connector connects as the connector does: the caller keeps
/// it (and can shut its socket down) after [`run`] returns.
impl<C: Connector> Connector for &mut C {
    type Buf = C::Buf;
    type Rx<'a>
        = C::Rx<'a>
    where
        Self: 'a;
    type Tx<'a>
        = C::Tx<'a>
    where
        Self: 'a;
    type Error = C::Error;

    async fn connect(&mut self) -> Result<(Self::Rx<'_>, Self::Tx<'_>), Self::Error> {
        (**self).connect().await
    }
}

/// Supplies the token sent in CONNECT, fresh for every connection.
#[allow(async_fn_in_trait)]
pub trait TokenProvider {
    /// Writes the token into `out` and returns its length (0 =
    /// anonymous). An `Err` is retried with backoff like a connect error.
    async fn token(&mut self, out: &mut [u8]) -> Result<usize, Error>;
}

/// Copies `token` into a provider's `out` buffer and returns its length,
/// or [`Error::Invalid`] if it does not fit: what every provider does last.
pub fn write_token(out: &mut [u8], token: &[u8]) -> Result<usize, Error> {
    let dst = out.get_mut(..token.len()).ok_or(Error::Invalid("token longer than the token buffer"))?;
    dst.copy_from_slice(token);
    Ok(token.len())
}

/// A provider of one token that never changes (empty = anonymous).
#[derive(Debug, Clone, Copy)]
pub struct Fixed<'a>(pub &'a [u8]);

impl TokenProvider for Fixed<'_> {
    async fn token(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        write_token(out, self.0)
    }
}

/// The anonymous provider: an empty token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl TokenProvider for Anonymous {
    async fn token(&mut self, _out: &mut [u8]) -> Result<usize, Error> {
        Ok(0)
    }
}

/// Reconnect policy: jittered exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reconnect {
    /// Reconnect at all after a connection is lost.
    pub enabled: bool,
    /// First delay.
    pub initial_ms: u64,
    /// Largest delay.
    pub max_ms: u64,
    /// Failed attempts in a row before giving up (`None` = never).
    pub max_attempts: Option<u32>,
    /// Connect timeout per attempt.
    pub connect_timeout_ms: u64,
    /// Failed attempts allowed before the first successful connection
    /// (`None` = as `max_attempts`): a client that never reached the
    /// broker can fail fast while one that lost it keeps trying.
    pub first_connect_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            enabled: true,
            initial_ms: 100,
            max_ms: 10_000,
            max_attempts: None,
            connect_timeout_ms: 10_000,
            first_connect_attempts: None,
        }
    }
}

impl Reconnect {
    /// The delay before attempt `attempt` (1-based): `initial · 2^(n-1)`
    /// capped at `max`, then "equal jitter" (half fixed, half random from
    /// `random`).
    pub fn delay(&self, attempt: u32, random: u32) -> u64 {
        let exp = self.initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
        let d = exp.min(self.max_ms);
        let half = d / 2;
        half + if half == 0 { 0 } else { u64::from(random) % (half + 1) }
    }
}

pub use crate::engine::Stopped;

/// A token buffer size that fits any JWT a broker is likely to accept
/// (the `token` buffer of [`run`] bounds the token a provider can write).
pub const TOKEN_MAX: usize = 4096;

/// Hash of a token (FNV-1a), to recognise a refused token without keeping it.
fn token_hash(t: &[u8]) -> u64 {
    t.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The driver's own buffers, provided by the caller (static storage in
/// firmware) so that the [`run`] future stays small.
#[derive(Debug)]
pub struct Buffers<'a, T> {
    /// The second transmit buffer, swapped with the engine's on every
    /// write: at least as large as the engine's (a smaller one fails every
    /// connection).
    pub spare: T,
    /// Where the token provider writes each token; its length bounds the
    /// token ([`TOKEN_MAX`] fits any likely JWT).
    pub token: &'a mut [u8],
}

/// Runs the client's connection until it is closed or gives up: connects,
/// sends CONNECT with a fresh token, moves frames both ways, runs timers,
/// and reconnects with backoff. `random` feeds the backoff jitter. Every
/// buffer comes from the caller ([`Buffers`]), so the future itself stays
/// small.
#[allow(clippy::large_futures)]
pub async fn run<H, C, K, A>(
    h: H,
    mut connector: C,
    clock: K,
    mut tokens: A,
    policy: Reconnect,
    mut random: impl FnMut() -> u32,
    buffers: Buffers<'_, <H::Core as Core>::Tx>,
) -> Stopped
where
    H: Shared,
    C: Connector<Buf = BufOf<H>>,
    K: Clock,
    A: TokenProvider,
{
    let mut failures: u32 = 0;
    let mut ever_authenticated = false;
    let mut refused: Option<u64> = None;
    let Buffers { mut spare, token } = buffers;
    loop {
        if h.with(|e| e.is_closed()) {
            h.trace(Trace::Stopped(Stopped::Closed));
            return Stopped::Closed;
        }
        h.with(|e| e.connecting());
        let deadline = clock.now_ms().saturating_add(policy.connect_timeout_ms);
        let attempt = async {
            let n = tokens.token(token).await.ok()?;
            let token = token.get(..n)?;
            if refused == Some(token_hash(token)) {
                return Some(Err(Refused));
            }
            let conn = connector.connect().await.ok()?;
            Some(Ok((conn, token_hash(token), n)))
        };
        let outcome = match select(attempt, clock.sleep_until(deadline)).await {
            Either::First(o) => o,
            Either::Second(()) => None,
        };
        let mut authenticated = false;
        let mut auth_failed = false;
        match outcome {
            Some(Err(_)) => {
                h.with(|e| {
                    e.disconnected();
                    e.close_with(Stopped::AuthenticationFailed);
                });
                h.trace(Trace::Stopped(Stopped::AuthenticationFailed));
                return Stopped::AuthenticationFailed;
            }
            Some(Ok(((mut rx, mut tx), hash, n))) => {
                // Only whether CONNECT was queued is kept across the await.
                let sent = h.with(|e| e.connected(clock.now_ms(), token.get(..n).unwrap_or(&[])).is_ok());
                if sent {
                    serve(&h, &mut rx, &mut tx, &clock, &mut spare, &mut authenticated).await;
                }
                // An empty (anonymous) token cannot be refused as such: a
                // close that early is a broker or proxy going away, retried.
                auth_failed = h.with(|e| e.connection_closed()) && n > 0;
                if auth_failed {
                    refused = Some(hash);
                } else if authenticated {
                    failures = 0;
                    ever_authenticated = true;
                }
            }
            None => h.trace(Trace::ConnectFailed { attempt: failures.saturating_add(1) }),
        }
        if h.with(|e| e.is_closed()) {
            h.trace(Trace::Stopped(Stopped::Closed));
            return Stopped::Closed;
        }
        failures = failures.saturating_add(1);
        let first_exhausted = !ever_authenticated && policy.first_connect_attempts.is_some_and(|m| failures >= m);
        if !policy.enabled || policy.max_attempts.is_some_and(|m| failures > m) || first_exhausted {
            let why = if auth_failed { Stopped::AuthenticationFailed } else { Stopped::GaveUp };
            h.with(|e| {
                e.disconnected();
                e.close_with(why);
            });
            h.trace(Trace::Stopped(why));
            return why;
        }
        let delay_ms = policy.delay(failures, random());
        h.trace(Trace::Backoff { attempt: failures, delay_ms });
        let wake_at = clock.now_ms().saturating_add(delay_ms);
        // A close during the backoff ends it at once.
        let closed = poll_fn(|cx| {
            h.with(|e| {
                if e.is_closed() {
                    Poll::Ready(())
                } else {
                    e.watch_state(cx);
                    Poll::Pending
                }
            })
        });
        if let Either::First(()) = select(closed, clock.sleep_until(wake_at)).await {
            h.trace(Trace::Stopped(Stopped::Closed));
            return Stopped::Closed;
        }
    }
}

/// The token is one the broker refused before: it is not sent again. (A
/// unit type, so the attempt's result stays small in the run future.)
struct Refused;

/// Why a connection ended.
#[derive(Debug)]
enum Over {
    Rx,
    Tx,
    Protocol,
    Closed,
}

async fn serve<H, R, T, K>(
    h: &H,
    rx: &mut R,
    tx: &mut T,
    clock: &K,
    spare: &mut <H::Core as Core>::Tx,
    authenticated: &mut bool,
) -> Over
where
    H: Shared,
    R: FrameRx<Buf = BufOf<H>>,
    T: FrameTx,
    K: Clock,
{
    let receive = async {
        loop {
            let Ok(frame) = rx.recv().await else { return Over::Rx };
            if h.with(|e| e.handle_frame(clock.now_ms(), &frame)).is_err() {
                return Over::Protocol;
            }
        }
    };
    let transmit = async {
        loop {
            let closed = poll_fn(|cx| {
                h.with(|e| {
                    if e.pending_tx() > 0 {
                        Poll::Ready(false)
                    } else if e.is_closed() {
                        Poll::Ready(true)
                    } else {
                        e.register_writer(cx);
                        Poll::Pending
                    }
                })
            })
            .await;
            if closed {
                return Over::Closed;
            }
            let n = h.with(|e| e.take_tx(spare));
            // A spare smaller than the engine's buffer cannot take its
            // bytes: a binding bug, reported instead of spinning.
            let Some(bytes) = spare.as_ref().get(..n).filter(|b| !b.is_empty()) else { return Over::Tx };
            if tx.send(bytes).await.is_err() {
                return Over::Tx;
            }
        }
    };
    let timers = async {
        loop {
            let next = h.with(|e| e.poll_timeout());
            let mut armed = false;
            let rearm = poll_fn(|cx| {
                if armed {
                    return Poll::Ready(());
                }
                armed = true;
                h.with(|e| e.register_timer(cx));
                Poll::Pending
            });
            match next {
                Some(at) => {
                    if let Either::Second(()) = select(rearm, clock.sleep_until(at)).await
                        && h.with(|e| e.handle_timeout(clock.now_ms())).is_err()
                    {
                        return Over::Protocol;
                    }
                }
                None => rearm.await,
            }
        }
    };
    let watch = async {
        let mut seen = h.with(|e| e.state_changes());
        loop {
            poll_fn(|cx| {
                h.with(|e| {
                    if e.state_changes() != seen {
                        Poll::Ready(())
                    } else {
                        e.watch_state(cx);
                        Poll::Pending
                    }
                })
            })
            .await;
            let (changes, state, closed, dialect, epoch) =
                h.with(|e| (e.state_changes(), e.state(), e.is_closed(), e.dialect(), e.epoch()));
            seen = changes;
            h.trace(Trace::State(state));
            if closed {
                return Over::Closed;
            }
            if state == State::Authenticated && !*authenticated {
                *authenticated = true;
                if let Some((dialect, capabilities)) = dialect {
                    h.trace(Trace::Authenticated { dialect, capabilities, epoch });
                }
            }
        }
    };
    match select4(receive, transmit, timers, watch).await {
        Either4::First(o) | Either4::Second(o) | Either4::Third(o) | Either4::Fourth(o) => o,
    }
}

/// Splits a buffer of TCP frames (as [`FrameTx::send`] receives them) into
/// the frames without their length prefix, for message transports
/// (WebSocket).
pub fn tcp_frames(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    core::iter::from_fn(move || {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (frame, rest) = rest.split_at_checked(len)?;
        bytes = rest;
        Some(frame)
    })
}
