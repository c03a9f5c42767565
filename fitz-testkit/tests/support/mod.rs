//! A raw-frame client for testkit tests: speaks bytes through fitz-wire so
//! tests can send exactly what a peer would, malformed frames included.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::panic, clippy::std_instead_of_core)]

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::Duration;

use fitz_testkit::{Broker, BrokerConfig};
use fitz_wire::frame::{self, LabelledRecords, TcpFrame, Transport};
use fitz_wire::{Encode, MsgType};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for a frame that should come.
pub const WAIT: Duration = Duration::from_secs(3);

/// One record received, with its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub label: Option<u64>,
    pub msg_type: MsgType,
    pub payload: Vec<u8>,
}

enum Io {
    Tcp(TcpStream, Vec<u8>),
    Ws(Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>),
}

/// A connection speaking raw frames.
pub struct Raw {
    io: Io,
    pending: std::collections::VecDeque<Vec<Rec>>,
}

impl Raw {
    pub async fn tcp(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Raw { io: Io::Tcp(s, Vec::new()), pending: Default::default() }
    }

    pub async fn ws(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Raw { io: Io::Ws(Box::new(ws)), pending: Default::default() }
    }

    /// Connects (TCP) and sends CONNECT with `token`.
    pub async fn connect(addr: SocketAddr, token: &str) -> Raw {
        let mut r = Raw::tcp(addr).await;
        r.send(&fitz_wire::control::Connect { token: token.as_bytes() }).await;
        r
    }

    /// Connects to a current-dialect broker and reads its SERVER_HELLO.
    pub async fn connect_current(addr: SocketAddr, token: &str) -> (Raw, u32) {
        let mut r = Raw::connect(addr, token).await;
        let hello = r.recv_one().await.expect("SERVER_HELLO");
        assert_eq!(hello.msg_type, MsgType::SERVER_HELLO);
        let caps = u32::from_be_bytes(hello.payload[2..6].try_into().unwrap());
        (r, caps)
    }

    /// Sends raw transport-frame bytes (no TCP prefix added for WS).
    pub async fn send_frame(&mut self, frame_body: &[u8]) {
        match &mut self.io {
            Io::Tcp(s, _) => {
                let mut b = (frame_body.len() as u32).to_be_bytes().to_vec();
                b.extend_from_slice(frame_body);
                s.write_all(&b).await.unwrap();
            }
            Io::Ws(ws) => ws.send(Message::Binary(frame_body.to_vec().into())).await.unwrap(),
        }
    }

    /// Sends raw bytes on the socket as they are (TCP only).
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Io::Tcp(s, _) => s.write_all(bytes).await.unwrap(),
            Io::Ws(ws) => ws.send(Message::Binary(bytes.to_vec().into())).await.unwrap(),
        }
    }

    pub async fn send<E: Encode>(&mut self, msg: &E) {
        self.send_labelled(None, msg).await;
    }

    pub async fn send_labelled<E: Encode>(&mut self, label: Option<u64>, msg: &E) {
        let label = label.and_then(NonZeroU64::new).map(|l| (MsgType::CORRELATE, l));
        let mut buf = vec![0u8; frame::frame_len(Transport::WebSocket, label.is_some(), msg)];
        frame::encode_frame(Transport::WebSocket, label, msg, &mut buf).unwrap();
        self.send_frame(&buf).await;
    }

    /// The next transport frame's records, or `None` when the connection
    /// closed (or nothing came within `WAIT`).
    pub async fn recv_frame(&mut self) -> Option<Vec<Rec>> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        tokio::time::timeout(WAIT, self.read_frame()).await.ok().flatten()
    }

    /// Like `recv_frame` with a custom wait; `None` on timeout or close.
    pub async fn recv_frame_within(&mut self, wait: Duration) -> Option<Vec<Rec>> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        tokio::time::timeout(wait, self.read_frame()).await.ok().flatten()
    }

    /// The next frame, which must hold exactly one record.
    pub async fn recv_one(&mut self) -> Option<Rec> {
        let mut f = self.recv_frame().await?;
        assert_eq!(f.len(), 1, "expected one record in the frame: {f:?}");
        f.pop()
    }

    /// The next record of `ty`, setting aside frames of other types
    /// (notifications) for later `recv_*` calls.
    pub async fn recv_type(&mut self, ty: MsgType) -> Option<Rec> {
        let mut skipped = Vec::new();
        let found = loop {
            let Some(f) = tokio::time::timeout(WAIT, self.read_frame()).await.ok().flatten() else { break None };
            if let Some(r) = f.iter().find(|r| r.msg_type == ty).cloned() {
                break Some(r);
            }
            skipped.push(f);
        };
        for f in skipped.into_iter().rev() {
            self.pending.push_front(f);
        }
        found
    }

    /// True if the broker closed the connection within `WAIT` (frames
    /// received before the close are discarded).
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// True if nothing arrives within `wait` and the connection stays open.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        self.pending.is_empty() && tokio::time::timeout(wait, self.read_frame()).await.is_err()
    }

    async fn read_frame(&mut self) -> Option<Vec<Rec>> {
        let body: Vec<u8> = match &mut self.io {
            Io::Tcp(s, buf) => loop {
                match frame::decode_tcp(buf, u32::MAX).unwrap() {
                    TcpFrame::Complete { frame, consumed } => {
                        let f = frame.to_vec();
                        buf.drain(..consumed);
                        break f;
                    }
                    TcpFrame::Incomplete { needed } => {
                        // Read into the heap buffer: a stack array here would
                        // make every test future tens of kilobytes large.
                        buf.reserve(needed.max(4096));
                        if s.read_buf(buf).await.ok()? == 0 {
                            return None;
                        }
                    }
                }
            },
            Io::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(Message::Binary(b)) => break b.to_vec(),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            },
        };
        let recs = LabelledRecords::from_broker(&body)
            .map(|r| {
                let r = r.expect("broker sent a malformed frame");
                Rec {
                    label: r.label.map(NonZeroU64::get),
                    msg_type: r.record.msg_type,
                    payload: r.record.payload.to_vec(),
                }
            })
            .collect();
        Some(recs)
    }
}

/// An anonymous legacy broker on loopback.
pub async fn legacy() -> Broker {
    Broker::start(BrokerConfig::anonymous()).await.unwrap()
}

/// An anonymous current-dialect broker (all capabilities).
pub async fn current() -> Broker {
    Broker::start(BrokerConfig::anonymous().with_dialect(fitz_wire::Dialect::Current)).await.unwrap()
}
