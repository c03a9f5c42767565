//! Transports: TCP (`tcp://host:port`), WebSocket (`ws://…/ws`) and
//! WebSocket over TLS (`wss://…`, rustls with the ring provider, trusting
//! the webpki roots plus any roots the builder added, or a client
//! configuration given whole). They move whole frames and nothing else;
//! framing rules come from fitz-wire.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fitz_client::driver::{self, FrameRx, FrameTx};
use fitz_wire::frame::{self, TcpFrame};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `tcp://host:port` (or a bare `host:port`).
    Tcp(String),
    /// `ws://…` or `wss://…`, the whole URL.
    Ws(String),
}

impl Endpoint {
    /// Parses `tcp://host:port`, `host:port`, `ws://…` or `wss://…`.
    pub fn parse(url: &str) -> Result<Self, TransportError> {
        if let Some(rest) = url.strip_prefix("tcp://") {
            return Ok(Endpoint::Tcp(rest.trim_end_matches('/').to_owned()));
        }
        if url.starts_with("ws://") || url.starts_with("wss://") {
            return Ok(Endpoint::Ws(url.to_owned()));
        }
        if !url.contains("://") && url.contains(':') {
            return Ok(Endpoint::Tcp(url.to_owned()));
        }
        Err(TransportError::BadUrl(url.to_owned()))
    }
}

/// A transport failure.
#[derive(Debug)]
pub enum TransportError {
    /// The URL is not `tcp://`, `ws://` or `wss://`.
    BadUrl(String),
    /// Socket error.
    Io(io::Error),
    /// WebSocket or TLS error.
    Ws(tokio_tungstenite::tungstenite::Error),
    /// TLS error: the configuration was refused (a root certificate that
    /// does not parse), or the handshake failed (the broker's certificate
    /// is not trusted, has expired, names another host…).
    Tls(rustls::Error),
    /// The broker sent a malformed or oversized frame prefix.
    Frame(fitz_wire::FrameError),
    /// The connection was closed by the peer.
    Closed,
    /// No frame and no pong within the heartbeat window.
    HeartbeatTimeout,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::BadUrl(u) => write!(f, "not a tcp://, ws:// or wss:// address: {u}"),
            TransportError::Io(e) => write!(f, "socket: {e}"),
            TransportError::Ws(e) => write!(f, "websocket: {e}"),
            TransportError::Tls(e) => write!(f, "tls: {e}"),
            TransportError::Frame(e) => write!(f, "frame: {e:?}"),
            TransportError::Closed => f.write_str("closed by the broker"),
            TransportError::HeartbeatTimeout => f.write_str("no sign of life from the broker"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Transport settings.
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) max_frame: u32,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) heartbeat: Duration,
    pub(crate) tls: TlsSettings,
}

/// What `wss://` trusts.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    /// DER-encoded CA certificates trusted besides the webpki roots.
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    /// A complete client configuration, used as it is (`extra_roots` are
    /// then not used).
    pub(crate) config: Option<Arc<rustls::ClientConfig>>,
}

/// Opens connections for the driver.
pub(crate) struct Connector {
    cfg: TransportConfig,
    /// The TLS client configuration, built once; `None` when the endpoint
    /// does not use TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connector {
    /// Checks the settings and builds the TLS configuration once, so that a
    /// root certificate that does not parse fails here, before any
    /// connection attempt. It is built for `wss://` and whenever roots
    /// were added, whatever the scheme, so that a bad one never goes
    /// unnoticed.
    pub(crate) fn new(cfg: TransportConfig) -> Result<Self, TransportError> {
        let wss = matches!(&cfg.endpoint, Endpoint::Ws(url) if url.starts_with("wss://"));
        let tls = if wss || !cfg.tls.extra_roots.is_empty() {
            Some(tls_config(&cfg.tls).map_err(TransportError::Tls)?)
        } else {
            None
        };
        Ok(Connector { cfg, tls })
    }

    async fn open(&self) -> Result<(Rx, Tx), TransportError> {
        match &self.cfg.endpoint {
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await.map_err(TransportError::Io)?;
                tune(&s, self.cfg.keepalive)?;
                let (r, w) = s.into_split();
                let rx = Rx::Tcp {
                    r,
                    buf: rx_buffer(),
                    spares: (0..RX_SPARES).map(|_| rx_buffer()).collect(),
                    max: self.cfg.max_frame,
                };
                Ok((rx, Tx::Tcp(w)))
            }
            Endpoint::Ws(url) => {
                let tls = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
                let mut ws_cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
                ws_cfg.max_message_size = usize::try_from(self.cfg.max_frame).ok();
                ws_cfg.max_frame_size = usize::try_from(self.cfg.max_frame).ok();
                let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), Some(ws_cfg), true, tls)
                    .await
                    .map_err(ws_connect_error)?;
                if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                    tune(s, self.cfg.keepalive)?;
                }
                let (sink, stream) = ws.split();
                let sink = Arc::new(tokio::sync::Mutex::new(sink));
                let heartbeat = self.cfg.heartbeat;
                Ok((Rx::Ws { stream, sink: sink.clone(), heartbeat, max: self.cfg.max_frame }, Tx::Ws(sink)))
            }
        }
    }
}

impl driver::Connector for Connector {
    type Buf = Bytes;
    type Rx<'a> = Rx;
    type Tx<'a> = Tx;
    type Error = TransportError;

    async fn connect(&mut self) -> Result<(Rx, Tx), TransportError> {
        let opened = self.open().await;
        if let Err(e) = &opened {
            // The driver only counts failed attempts: say why this one failed.
            tracing::warn!(target: "fitz", error = %e, "transport connect failed");
        }
        opened
    }
}

/// Sorts a failed WebSocket connect: a TLS handshake failure arrives as an
/// I/O error wrapping the rustls error, and is reported as
/// [`TransportError::Tls`].
fn ws_connect_error(e: tokio_tungstenite::tungstenite::Error) -> TransportError {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Io(io) => match io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => TransportError::Tls(tls.clone()),
            None => TransportError::Ws(WsError::Io(io)),
        },
        e => TransportError::Ws(e),
    }
}

/// TCP_NODELAY and keepalive.
fn tune(s: &TcpStream, keepalive: Option<Duration>) -> Result<(), TransportError> {
    s.set_nodelay(true).map_err(TransportError::Io)?;
    if let Some(k) = keepalive {
        let sock = socket2::SockRef::from(s);
        let ka = socket2::TcpKeepalive::new().with_time(k).with_interval(k);
        sock.set_tcp_keepalive(&ka).map_err(TransportError::Io)?;
    }
    Ok(())
}

/// The client configuration for `wss://`: the one given whole, else the
/// ring provider with the safe default protocol versions, trusting the
/// webpki roots and the extra roots.
fn tls_config(settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    if let Some(cfg) = &settings.config {
        return Ok(cfg.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in &settings.extra_roots {
        roots.add(der.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsSink = Arc<tokio::sync::Mutex<SplitSink<WsStream, Message>>>;

/// Size of a TCP receive buffer. Frames are handed out as `Bytes` slices of
/// it, so a buffer is only reused once every slice of it is dropped.
const RX_BUFFER: usize = 64 * 1024;
/// Receive buffers kept besides the current one: when the current one is
/// full and still referenced by a reply or delivery, reading continues in a
/// free spare instead of allocating.
const RX_SPARES: usize = 3;

/// Receiving half.
pub(crate) enum Rx {
    Tcp { r: OwnedReadHalf, buf: BytesMut, spares: Vec<BytesMut>, max: u32 },
    Ws { stream: SplitStream<WsStream>, sink: WsSink, heartbeat: Duration, max: u32 },
}

impl FrameRx for Rx {
    type Buf = Bytes;
    type Error = TransportError;

    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        match self {
            Rx::Tcp { r, buf, spares, max } => loop {
                match frame::decode_tcp(buf, *max).map_err(TransportError::Frame)? {
                    TcpFrame::Complete { frame, consumed } => {
                        let len = frame.len();
                        let mut whole = buf.split_to(consumed);
                        let _prefix = whole.split_to(consumed - len);
                        return Ok(whole.freeze());
                    }
                    TcpFrame::Incomplete { needed } => {
                        // Reading into spare capacity is cancel-safe: bytes
                        // read stay in `buf`.
                        make_room(buf, spares, needed.max(16 * 1024));
                        if r.read_buf(buf).await.map_err(TransportError::Io)? == 0 {
                            return Err(TransportError::Closed);
                        }
                    }
                }
            },
            Rx::Ws { stream, sink, heartbeat, max } => loop {
                let next = tokio::time::timeout(*heartbeat, stream.next()).await;
                let msg = match next {
                    Ok(Some(m)) => m.map_err(TransportError::Ws)?,
                    Ok(None) => return Err(TransportError::Closed),
                    Err(_) => {
                        // Quiet for a whole interval: ping, and give the
                        // broker one more interval to answer.
                        sink.lock().await.send(Message::Ping(Bytes::new())).await.map_err(TransportError::Ws)?;
                        match tokio::time::timeout(*heartbeat, stream.next()).await {
                            Ok(Some(m)) => m.map_err(TransportError::Ws)?,
                            Ok(None) => return Err(TransportError::Closed),
                            Err(_) => return Err(TransportError::HeartbeatTimeout),
                        }
                    }
                };
                match msg {
                    Message::Binary(b) => {
                        if b.len() > *max as usize {
                            return Err(TransportError::Frame(fitz_wire::FrameError::TooLarge {
                                len: u32::try_from(b.len()).unwrap_or(u32::MAX),
                                max: *max,
                            }));
                        }
                        return Ok(b);
                    }
                    Message::Close(_) => return Err(TransportError::Closed),
                    // Pings are answered by tungstenite; text is not Fitz.
                    Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Frame(_) => {}
                }
            },
        }
    }
}

/// A receive buffer already in its shared form: the first frame cut from a
/// fresh `BytesMut` allocates its reference count; do it now, not on the
/// request path.
fn rx_buffer() -> BytesMut {
    let mut b = BytesMut::with_capacity(RX_BUFFER);
    b.extend_from_slice(&[0]);
    drop(b.split_to(1));
    let _ = b.try_reclaim(RX_BUFFER);
    b
}

/// Makes room for `want` more bytes without allocating when possible:
/// reclaim the current buffer (every frame cut from it is gone), else move
/// the partial frame to a spare that is free, else grow.
fn make_room(buf: &mut BytesMut, spares: &mut Vec<BytesMut>, want: usize) {
    if buf.capacity() - buf.len() >= want || buf.try_reclaim(want) {
        return;
    }
    if buf.len() + want <= RX_BUFFER
        && let Some(i) = spares.iter_mut().position(|s| {
            s.clear();
            s.try_reclaim(RX_BUFFER)
        })
    {
        let mut next = spares.swap_remove(i);
        next.extend_from_slice(buf);
        let mut old = std::mem::replace(buf, next);
        old.clear();
        spares.push(old);
        return;
    }
    buf.reserve(want);
}

/// Sending half.
pub(crate) enum Tx {
    Tcp(OwnedWriteHalf),
    Ws(WsSink),
}

impl FrameTx for Tx {
    type Error = TransportError;

    async fn send(&mut self, frames: &[u8]) -> Result<(), TransportError> {
        match self {
            // Every frame ready is written at once.
            Tx::Tcp(w) => w.write_all(frames).await.map_err(TransportError::Io),
            Tx::Ws(sink) => {
                let mut sink = sink.lock().await;
                for f in driver::tcp_frames(frames) {
                    sink.feed(Message::Binary(Bytes::copy_from_slice(f))).await.map_err(TransportError::Ws)?;
                }
                sink.flush().await.map_err(TransportError::Ws)
            }
        }
    }
}
