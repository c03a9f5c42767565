//! Listeners and connections. A connection task moves bytes and runs the
//! session protocol (CONNECT, dialect, labels); requests go to the world.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard};

use fitz_wire::control::{Connect, ServerHello, SessionMetadata};
use fitz_wire::frame::{Deframed, LabelledRecords, Oversize, TcpDeframer};
use fitz_wire::{Capabilities, Dialect, MsgType, Payload, Record};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as HttpRequest, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth;
use crate::config::{AuthMode, BrokerConfig};
use crate::core::{Close, Out, ReplyTo, Request, SessionId, SessionInfo};
use crate::world::World;

/// State shared by every task of one broker.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<BrokerConfig>,
    pub(crate) world: Mutex<World>,
    pub(crate) clock: Arc<crate::clock::Clock>,
}

impl Shared {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        // A panic in a handler poisons the lock; the state is still the
        // best there is, so keep serving.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session protocol of one connection, independent of the transport.
struct Connection {
    shared: Arc<Shared>,
    session: Option<(SessionId, Dialect, Capabilities, u32)>,
    rx: Option<mpsc::Receiver<Out>>,
    metadata_seen: bool,
}

impl Connection {
    fn new(shared: Arc<Shared>) -> Self {
        Self { shared, session: None, rx: None, metadata_seen: false }
    }

    /// Authenticates and registers the session; queues SERVER_HELLO in the
    /// current dialect.
    fn open(&mut self, token: &[u8]) -> Result<(), Close> {
        let cfg = &self.shared.cfg;
        let principal = auth::authenticate(&cfg.auth, token).map_err(|_| Close("connect failed"))?;
        let family = principal.family;
        let caps = if cfg.dialect == Dialect::Current { cfg.current.capabilities } else { Capabilities::NONE };
        let (tx, rx) = mpsc::channel(cfg.limits.outbound_frames.max(16));
        if cfg.dialect == Dialect::Current {
            let hello = ServerHello { protocol_version: cfg.current.version, capabilities: caps, trailing: &[] };
            let mut buf = vec![0u8; fitz_wire::record::encoded_len(&hello)];
            fitz_wire::record::encode(&hello, &mut buf).map_err(|_| Close("hello"))?;
            // The channel is empty and has room: this cannot fail.
            let _ = tx.try_send(Out::Frame(buf));
        }
        let info = SessionInfo { tx, principal, name: None };
        let id = self.shared.world().core.add_session(info);
        self.session = Some((id, cfg.dialect, caps, family));
        self.rx = Some(rx);
        Ok(())
    }

    /// Handles one transport frame from the client.
    fn on_frame(&mut self, frame: &[u8]) -> Result<(), Close> {
        let mut records = LabelledRecords::from_client(frame);
        let first = records.next().ok_or(Close("empty frame"))?.map_err(|_| Close("malformed frame"))?;
        if records.next().is_some() {
            // One request per frame (a label and its request count as one).
            return Err(Close("several requests in one frame"));
        }
        let Some((id, dialect, caps, family)) = self.session else {
            if first.label.is_some() {
                return Err(Close("label before CONNECT"));
            }
            if first.record.msg_type == MsgType::CONNECT {
                let token = Connect::decode(first.record.payload).map_err(|_| Close("bad CONNECT"))?.token;
                return self.open(token);
            }
            // Anonymous brokers treat any first record as authenticating
            // (BROKER.md §2.1); authenticated ones close.
            if self.shared.cfg.auth != AuthMode::Anonymous {
                return Err(Close("unauthenticated: connect required"));
            }
            self.open(&[])?;
            return self.on_frame(frame);
        };
        let correlation = dialect == Dialect::Current && caps.contains(Capabilities::CORRELATION);
        if first.label.is_some() && !correlation {
            return Err(Close("CORRELATE without the capability"));
        }
        let Record { msg_type, payload } = first.record;
        match msg_type.0 {
            // A second CONNECT is ignored (BROKER.md §2.1).
            1 => return Ok(()),
            5 if dialect == Dialect::Current && caps.contains(Capabilities::SESSION_METADATA) => {
                if !self.metadata_seen {
                    self.metadata_seen = true;
                    // An invalid record is ignored (WIRE.md C52).
                    if let Ok(m) = SessionMetadata::decode(payload)
                        && let Some(name) = SessionMetadata::validate_name(m.service_name)
                        && let Some(s) = self.shared.world().core.sessions.get_mut(&id)
                    {
                        s.name = Some(name.to_owned());
                    }
                }
                return Ok(());
            }
            0..=99 => return Err(Close("unsupported control record")),
            _ => {}
        }
        // Labels on messages without a reply are ignored (WIRE.md C54).
        let label: Option<NonZeroU64> = first.label.filter(|_| msg_type.is_labelable());
        let req = Request { to: ReplyTo { session: id, label, msg_type }, payload, family, dialect, caps };
        self.shared.world().dispatch(&req)
    }

    async fn recv(&mut self) -> Option<Out> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    fn authenticated(&self) -> bool {
        self.session.is_some()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some((id, ..)) = self.session {
            self.shared.world().cleanup(id);
        }
    }
}

pub(crate) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(tcp_session(stream, shared.clone(), stop.clone()));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn tcp_session(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let max = shared.cfg.limits.max_frame;
    let deadline = tokio::time::Instant::now() + shared.cfg.limits.connect_timeout;
    let mut conn = Connection::new(shared);
    let mut deframer = TcpDeframer::new(max, Oversize::Reject);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    'conn: loop {
        tokio::select! {
            msg = conn.recv() => {
                out.clear();
                let mut next = msg;
                // Batch every frame that is ready into one write.
                loop {
                    match next {
                        Some(Out::Frame(f)) => {
                            out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
                            out.extend_from_slice(&f);
                        }
                        Some(Out::Close) | None => {
                            let _ = wr.write_all(&out).await;
                            break 'conn;
                        }
                    }
                    if out.len() > 256 * 1024 { break; }
                    next = match conn.rx.as_mut().map(mpsc::Receiver::try_recv) {
                        Some(Ok(m)) => Some(m),
                        _ => break,
                    };
                }
                if wr.write_all(&out).await.is_err() { break; }
            }
            read = rd.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match deframer.poll(&buf) {
                        Ok(Deframed::Frame { frame, consumed }) => {
                            let result = conn.on_frame(frame);
                            buf.drain(..consumed);
                            if result.is_err() { break 'conn; }
                        }
                        Ok(Deframed::NeedMore { needed }) => {
                            buf.reserve(needed);
                            break;
                        }
                        // Oversized or empty frame: close before buffering it.
                        Ok(Deframed::Discarded { .. }) | Err(_) => break 'conn,
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if !conn.authenticated() => break,
            _ = stop.changed() => break,
        }
    }
    let _ = wr.shutdown().await;
}

pub(crate) async fn serve_ws(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(ws_session(stream, shared.clone(), stop.clone()));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn ws_session(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let path = shared.cfg.ws_path.clone();
    // The error type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let check_path = move |req: &HttpRequest, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == path {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(Some("not found".into()));
            *e.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(e)
        }
    };
    let max = usize::try_from(shared.cfg.limits.max_frame).unwrap_or(usize::MAX);
    let config = WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config)).await else {
        return;
    };
    let deadline = tokio::time::Instant::now() + shared.cfg.limits.connect_timeout;
    let mut conn = Connection::new(shared);
    let mut close_reason: Option<&'static str> = None;
    loop {
        tokio::select! {
            msg = conn.recv() => match msg {
                Some(Out::Frame(f)) => {
                    if ws.feed(Message::Binary(f.into())).await.is_err() { break; }
                    while let Some(Ok(Out::Frame(f))) = conn.rx.as_mut().map(mpsc::Receiver::try_recv) {
                        if ws.feed(Message::Binary(f.into())).await.is_err() { break; }
                    }
                    if ws.flush().await.is_err() { break; }
                }
                Some(Out::Close) | None => break,
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Binary(data))) => {
                    if let Err(Close(reason)) = conn.on_frame(&data) {
                        close_reason = Some(reason);
                        break;
                    }
                }
                // Pongs are queued by tungstenite; make sure they go out.
                Some(Ok(Message::Ping(_))) => { let _ = ws.flush().await; }
                // Text messages are ignored (BROKER.md §2.5).
                Some(Ok(Message::Text(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            _ = tokio::time::sleep_until(deadline), if !conn.authenticated() => break,
            _ = stop.changed() => break,
        }
    }
    let frame = close_reason.map(|r| tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy,
        reason: r.into(),
    });
    let _ = ws.close(frame).await;
}

/// Binds a listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
