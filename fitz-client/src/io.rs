//! Fitz-over-TCP on any [`embedded_io_async`] byte stream: the transport a
//! binding gets for free when its socket implements `Read` and `Write`
//! (embassy-net's `TcpSocket`, tokio through `embedded-io-adapters`).
//!
//! Received frames are copied once, out of the fixed receive buffer into a
//! [`Copied`] of at most `M` bytes, which replies and deliveries share parts
//! of; a frame larger than `M` (or than the receive buffer) ends the
//! connection with [`IoError::FrameTooLarge`]. Nothing allocates.

use embedded_io_async::{Read, Write};
use fitz_wire::frame::{self, TcpFrame};

use crate::driver::{FrameRx, FrameTx};
use crate::engine::Buf;

/// An owned copy of (part of) a received frame, in fixed storage of `M`
/// bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Copied<const M: usize> {
    bytes: heapless::Vec<u8, M>,
}

impl<const M: usize> Copied<M> {
    /// A copy of `bytes`, or `None` if they do not fit.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        heapless::Vec::from_slice(bytes).ok().map(|bytes| Copied { bytes })
    }
}

impl<const M: usize> core::fmt::Debug for Copied<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Copied({} bytes)", self.bytes.len())
    }
}

impl<const M: usize> AsRef<[u8]> for Copied<M> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl<const M: usize> Buf for Copied<M> {
    fn part(&self, sub: &[u8]) -> Self {
        // `sub` is part of `self`, so it always fits.
        Copied::new(sub).unwrap_or_else(|| Copied { bytes: heapless::Vec::new() })
    }
}

/// Why an embedded-io transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IoError<E> {
    /// The stream's own error.
    Io(E),
    /// The peer closed the stream.
    Closed,
    /// A malformed frame prefix.
    Frame(fitz_wire::FrameError),
    /// A frame larger than the receive buffer or than `M`.
    FrameTooLarge {
        /// Its length.
        len: usize,
    },
}

/// The receiving half: frames are assembled in the buffer `B` (an array, or
/// a `&mut [u8]` the caller keeps in static storage) and handed out as
/// [`Copied<M>`].
pub struct TcpRx<R, B, const M: usize> {
    r: R,
    buf: B,
    /// Bytes `start..end` of `buf` are received and not yet handed out.
    start: usize,
    end: usize,
}

impl<R: Read, B: AsMut<[u8]>, const M: usize> TcpRx<R, B, M> {
    /// Frames from `r`, assembled in `buf`. A frame longer than `buf`
    /// (less its 4-byte prefix) cannot be received.
    pub fn new(r: R, buf: B) -> Self {
        TcpRx { r, buf, start: 0, end: 0 }
    }
}

impl<R: Read, B: AsMut<[u8]>, const M: usize> FrameRx for TcpRx<R, B, M> {
    type Buf = Copied<M>;
    type Error = IoError<R::Error>;

    async fn recv(&mut self) -> Result<Copied<M>, Self::Error> {
        let cap = self.buf.as_mut().len();
        let max = u32::try_from(cap.min(M)).unwrap_or(u32::MAX);
        loop {
            let buf = self.buf.as_mut();
            let pending = buf.get(self.start..self.end).unwrap_or(&[]);
            match frame::decode_tcp(pending, max) {
                Ok(TcpFrame::Complete { frame, consumed }) => {
                    let copy = Copied::new(frame).ok_or(IoError::FrameTooLarge { len: frame.len() })?;
                    self.start += consumed;
                    return Ok(copy);
                }
                Ok(TcpFrame::Incomplete { .. }) => {}
                Err(fitz_wire::FrameError::TooLarge { len, .. }) => {
                    return Err(IoError::FrameTooLarge { len: usize::try_from(len).unwrap_or(usize::MAX) });
                }
                Err(e) => return Err(IoError::Frame(e)),
            }
            // Move the partial frame to the front, then read more. Bytes
            // read stay in the buffer if this future is dropped.
            if self.start > 0 {
                buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let room = buf.get_mut(self.end..).unwrap_or(&mut []);
            if room.is_empty() {
                return Err(IoError::FrameTooLarge { len: cap });
            }
            match self.r.read(room).await {
                Ok(0) => return Err(IoError::Closed),
                Ok(n) => self.end += n,
                Err(e) => return Err(IoError::Io(e)),
            }
        }
    }
}

/// Assembles TCP frames from byte chunks as they arrive, straight into a
/// [`Copied<M>`]: for sockets that lend their own receive buffer
/// (embassy-net's `read_with`), so that no second receive buffer is needed.
/// Keeps its state between chunks, so a frame may arrive in any number of
/// pieces.
pub struct Assembler<const M: usize> {
    prefix: [u8; frame::TCP_PREFIX],
    /// Bytes of `prefix` received.
    have: usize,
    /// Body length, once the prefix is complete and valid.
    len: Option<usize>,
    body: heapless::Vec<u8, M>,
}

impl<const M: usize> Default for Assembler<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const M: usize> Assembler<M> {
    /// An assembler waiting for a frame's prefix.
    pub const fn new() -> Self {
        Assembler { prefix: [0; frame::TCP_PREFIX], have: 0, len: None, body: heapless::Vec::new() }
    }

    /// Forgets a partial frame (a new connection starts clean).
    pub fn reset(&mut self) {
        self.have = 0;
        self.len = None;
        self.body.clear();
    }

    /// Takes bytes from `input` and returns how many it took and, when a
    /// frame is complete, the frame. It never takes bytes past the end of
    /// a frame, so the rest of `input` is offered again. A frame longer
    /// than `M` or a malformed prefix is an error, after which the
    /// connection must be dropped (and the assembler reset).
    pub fn feed<E>(&mut self, input: &[u8]) -> (usize, Option<Result<Copied<M>, IoError<E>>>) {
        let mut used = 0;
        let len = match self.len {
            Some(len) => len,
            None => {
                let want = frame::TCP_PREFIX - self.have;
                let take = want.min(input.len());
                let (Some(dst), Some(src)) = (self.prefix.get_mut(self.have..self.have + take), input.get(..take))
                else {
                    return (0, None);
                };
                dst.copy_from_slice(src);
                self.have += take;
                used = take;
                if self.have < frame::TCP_PREFIX {
                    return (used, None);
                }
                let max = u32::try_from(M).unwrap_or(u32::MAX);
                match frame::decode_tcp(&self.prefix, max) {
                    Ok(TcpFrame::Incomplete { needed }) => {
                        self.len = Some(needed);
                        needed
                    }
                    // A prefix alone is never a complete frame (empty
                    // frames are refused), so this is unreachable in
                    // practice: treat it as malformed.
                    Ok(TcpFrame::Complete { .. }) => {
                        return (used, Some(Err(IoError::Frame(fitz_wire::FrameError::EmptyFrame))));
                    }
                    Err(fitz_wire::FrameError::TooLarge { len, .. }) => {
                        let len = usize::try_from(len).unwrap_or(usize::MAX);
                        return (used, Some(Err(IoError::FrameTooLarge { len })));
                    }
                    Err(e) => return (used, Some(Err(IoError::Frame(e)))),
                }
            }
        };
        let rest = input.get(used..).unwrap_or(&[]);
        let take = (len - self.body.len()).min(rest.len());
        if self.body.extend_from_slice(rest.get(..take).unwrap_or(&[])).is_err() {
            // `len <= M` was checked with the prefix.
            return (used + take, Some(Err(IoError::FrameTooLarge { len })));
        }
        used += take;
        if self.body.len() < len {
            return (used, None);
        }
        let frame = Copied { bytes: core::mem::take(&mut self.body) };
        self.have = 0;
        self.len = None;
        (used, Some(Ok(frame)))
    }
}

/// The sending half: writes the engine's frames as they are (TCP framing).
pub struct TcpTx<W> {
    w: W,
    flush: bool,
}

impl<W: Write> TcpTx<W> {
    /// Frames to `w`, flushed after every write (for buffered writers).
    pub fn new(w: W) -> Self {
        TcpTx { w, flush: true }
    }

    /// Frames to `w`, never flushed: for sockets that send what is written
    /// on their own (embassy-net's `TcpSocket`, whose `flush` waits until
    /// the peer acknowledged everything, one round trip per write).
    pub fn unflushed(w: W) -> Self {
        TcpTx { w, flush: false }
    }
}

impl<W: Write> FrameTx for TcpTx<W> {
    type Error = IoError<W::Error>;

    async fn send(&mut self, frames: &[u8]) -> Result<(), Self::Error> {
        self.w.write_all(frames).await.map_err(IoError::Io)?;
        if self.flush {
            self.w.flush().await.map_err(IoError::Io)?;
        }
        Ok(())
    }
}
