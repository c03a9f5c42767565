//! An in-process transport: the client's frames go to a [`Peer`] in the
//! same process instead of a socket, and the peer's frames come back as if
//! a broker had sent them. For tests that script the broker's side, and
//! for measuring the client without a broker or a network stack
//! (`benches/benches/e2e.rs` answers every request with a canned reply).
//!
//! ```no_run
//! # async fn f() -> Result<(), fitz_std::Error> {
//! let (link, peer) = fitz_std::memory::link();
//! let client = fitz_std::Client::builder("memory:").start_in_memory(link)?;
//! let mut frames = Vec::new();
//! // The CONNECT frame (TCP framing: a 4-byte big-endian length, then
//! // the frame); the peer answers with frames built with fitz-wire.
//! peer.recv(&mut frames).await;
//! # drop(client); Ok(()) }
//! ```
//!
//! Both directions carry whole frames with the TCP length prefix, as
//! [`fitz_client::driver::FrameTx::send`] writes them. Frames sent by the
//! peer are checked like a socket's: a frame longer than the builder's
//! [`crate::Builder::max_frame`] ends the connection. Memory: the bytes in
//! transit, in two buffers that are reused once their frames are read.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use fitz_client::driver;
use fitz_wire::frame::{self, TcpFrame};
use tokio::sync::Notify;

/// A new in-memory link: [`Link`] for [`crate::Builder::start_in_memory`],
/// [`Peer`] for the side that plays the broker.
pub fn link() -> (Link, Peer) {
    let shared = Arc::new(Shared {
        pipe: Mutex::new(Pipe {
            to_peer: Vec::new(),
            to_client: BytesMut::new(),
            peer_gone: false,
            client_gone: false,
        }),
        for_client: Notify::new(),
        for_peer: Notify::new(),
    });
    (Link(shared.clone()), Peer(shared))
}

/// The client's end of an in-memory link.
pub struct Link(Arc<Shared>);

/// The broker's end of an in-memory link. Dropping it closes the link:
/// the client sees its connection end (and reconnects, failing, as its
/// policy says).
pub struct Peer(Arc<Shared>);

/// The link was closed by the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkClosed;

impl core::fmt::Display for LinkClosed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("in-memory link closed")
    }
}

impl std::error::Error for LinkClosed {}

struct Pipe {
    /// Frames from the client, TCP framing, not yet taken by the peer.
    to_peer: Vec<u8>,
    /// Frames from the peer, TCP framing, not yet received by the client.
    to_client: BytesMut,
    peer_gone: bool,
    client_gone: bool,
}

struct Shared {
    pipe: Mutex<Pipe>,
    for_client: Notify,
    for_peer: Notify,
}

impl Shared {
    fn pipe(&self) -> std::sync::MutexGuard<'_, Pipe> {
        // Nothing panics while the lock is held.
        self.pipe.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Peer {
    /// Waits until the client has sent something, then appends every frame
    /// it sent since the last call to `out` (TCP framing). `Err` once the
    /// client is gone and nothing is left.
    pub async fn recv(&self, out: &mut Vec<u8>) -> Result<(), LinkClosed> {
        loop {
            {
                let mut p = self.0.pipe();
                if !p.to_peer.is_empty() {
                    out.extend_from_slice(&p.to_peer);
                    p.to_peer.clear();
                    return Ok(());
                }
                if p.client_gone {
                    return Err(LinkClosed);
                }
            }
            // `notify_one` keeps a permit when nobody waits: no wake-up is
            // lost between the check and this wait.
            self.0.for_peer.notified().await;
        }
    }

    /// Sends `frames` (one or more whole frames, TCP framing) to the
    /// client. `Err` if the client is gone.
    pub fn send(&self, frames: &[u8]) -> Result<(), LinkClosed> {
        {
            let mut p = self.0.pipe();
            if p.client_gone {
                return Err(LinkClosed);
            }
            // Grow in large steps: `reserve` reuses the buffer once every
            // frame the client received from it has been dropped.
            if p.to_client.capacity() - p.to_client.len() < frames.len() {
                p.to_client.reserve(frames.len().max(64 * 1024));
            }
            p.to_client.extend_from_slice(frames);
        }
        self.0.for_client.notify_one();
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.0.pipe().peer_gone = true;
        self.0.for_client.notify_one();
    }
}

/// The driver's connector over a [`Link`]: every connection uses the same
/// link; one that finds the peer gone fails.
pub(crate) struct MemoryConnector {
    shared: Arc<Shared>,
    max_frame: u32,
}

impl MemoryConnector {
    pub(crate) fn new(link: Link, max_frame: u32) -> Self {
        MemoryConnector { shared: link.0, max_frame }
    }
}

impl Drop for MemoryConnector {
    fn drop(&mut self) {
        self.shared.pipe().client_gone = true;
        self.shared.for_peer.notify_one();
    }
}

pub(crate) struct MemoryRx {
    shared: Arc<Shared>,
    max_frame: u32,
}

pub(crate) struct MemoryTx {
    shared: Arc<Shared>,
}

impl driver::Connector for MemoryConnector {
    type Buf = Bytes;
    type Rx<'a> = MemoryRx;
    type Tx<'a> = MemoryTx;
    type Error = LinkClosed;

    async fn connect(&mut self) -> Result<(MemoryRx, MemoryTx), LinkClosed> {
        let mut p = self.shared.pipe();
        if p.peer_gone {
            return Err(LinkClosed);
        }
        // A new connection starts with nothing in transit.
        p.to_peer.clear();
        p.to_client.clear();
        drop(p);
        Ok((
            MemoryRx { shared: self.shared.clone(), max_frame: self.max_frame },
            MemoryTx { shared: self.shared.clone() },
        ))
    }
}

/// Why the client's end stopped reading (shown through `Debug` in the
/// driver's logs).
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum RxError {
    Closed,
    Frame(fitz_wire::FrameError),
}

impl driver::FrameRx for MemoryRx {
    type Buf = Bytes;
    type Error = RxError;

    async fn recv(&mut self) -> Result<Bytes, RxError> {
        loop {
            {
                let mut p = self.shared.pipe();
                match frame::decode_tcp(&p.to_client, self.max_frame).map_err(RxError::Frame)? {
                    TcpFrame::Complete { frame, consumed } => {
                        let len = frame.len();
                        let mut whole = p.to_client.split_to(consumed);
                        let _prefix = whole.split_to(consumed - len);
                        return Ok(whole.freeze());
                    }
                    TcpFrame::Incomplete { .. } if p.peer_gone => return Err(RxError::Closed),
                    TcpFrame::Incomplete { .. } => {}
                }
            }
            self.shared.for_client.notified().await;
        }
    }
}

impl driver::FrameTx for MemoryTx {
    type Error = LinkClosed;

    async fn send(&mut self, frames: &[u8]) -> Result<(), LinkClosed> {
        {
            let mut p = self.shared.pipe();
            if p.peer_gone {
                return Err(LinkClosed);
            }
            p.to_peer.extend_from_slice(frames);
        }
        self.shared.for_peer.notify_one();
        Ok(())
    }
}
