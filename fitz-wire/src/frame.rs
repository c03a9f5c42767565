//! Transport frames (WIRE.md §2.2, §2.3, §B3).
//!
//! On TCP a frame is `[u32 frame_len][frame_len bytes]`; on WebSocket it is
//! one binary message with no prefix. A frame holds one record, or in the
//! current dialect a correlation label followed by the record it labels.

use core::num::NonZeroU64;

use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use crate::MsgType;
use crate::codec::{Encode, Sink, SliceWriter};
use crate::error::EncodeError;
use crate::record::{self, FrameError, LabelError, Record, Records};

pub use crate::record::FrameError as Error;

/// Length of the TCP length prefix.
pub const TCP_PREFIX: usize = 4;
/// The broker's default maximum transport frame (1 MiB).
pub const BROKER_MAX_FRAME: u32 = 1_048_576;
/// A maximum that holds any single record plus a correlation label.
pub const MAX_LABELLED_RECORD: u32 = (record::MAX_RECORD + LABEL_RECORD_LEN) as u32;
/// Length of a CORRELATE/CORRELATED record (1 + 2 + 8).
pub const LABEL_RECORD_LEN: usize = 11;

/// Which transport a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Transport {
    /// `u32` length prefix.
    Tcp,
    /// One binary message, no prefix.
    WebSocket,
}

/// Result of looking for one TCP frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TcpFrame<'a> {
    /// A whole frame is present.
    Complete {
        /// The frame without its prefix.
        frame: &'a [u8],
        /// Bytes of `buf` it used, prefix included.
        consumed: usize,
    },
    /// At least `needed` more bytes are required.
    Incomplete {
        /// Minimum number of further bytes before a frame can be complete.
        needed: usize,
    },
}

/// Looks for one TCP frame at the start of `buf`. The length is checked
/// against `max` as soon as the prefix is there, before any payload byte is
/// awaited, so a peer cannot make the caller buffer an oversized frame.
#[inline]
pub fn decode_tcp(buf: &[u8], max: u32) -> Result<TcpFrame<'_>, FrameError> {
    let Ok((prefix, rest)) = U32::read_from_prefix(buf) else {
        return Ok(TcpFrame::Incomplete { needed: TCP_PREFIX - buf.len() });
    };
    let len = prefix.get();
    if len == 0 {
        return Err(FrameError::EmptyFrame);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let n = usize::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    match rest.get(..n) {
        Some(frame) => Ok(TcpFrame::Complete { frame, consumed: TCP_PREFIX + n }),
        None => Ok(TcpFrame::Incomplete { needed: n - rest.len() }),
    }
}

/// What to do with a TCP frame larger than the maximum (WIRE.md §13 item 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Oversize {
    /// Report [`FrameError::TooLarge`]; the connection should be closed.
    Reject,
    /// Discard the frame's bytes as they arrive and report it.
    Skip,
}

/// What [`TcpDeframer::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Deframed<'a> {
    /// A whole frame; drop `consumed` bytes from the buffer after use.
    Frame {
        /// The frame without its prefix.
        frame: &'a [u8],
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
    /// Nothing complete yet: read at least `needed` more bytes.
    NeedMore {
        /// Minimum number of further bytes.
        needed: usize,
    },
    /// Bytes of an oversized frame were discarded (only with [`Oversize::Skip`]).
    Discarded {
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
        /// True when the whole oversized frame has now been discarded.
        finished: bool,
    },
}

/// Incremental TCP deframer over a caller-owned receive buffer.
///
/// Feed it the unconsumed bytes of the buffer after every read; it never
/// copies and keeps only the skip state between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TcpDeframer {
    max: u32,
    oversize: Oversize,
    skipping: usize,
}

impl TcpDeframer {
    /// A deframer that accepts frames up to `max` bytes (prefix excluded).
    pub const fn new(max: u32, oversize: Oversize) -> Self {
        Self { max, oversize, skipping: 0 }
    }

    /// The configured maximum.
    pub const fn max_frame(&self) -> u32 {
        self.max
    }

    /// True while an oversized frame is being discarded.
    pub const fn is_skipping(&self) -> bool {
        self.skipping > 0
    }

    /// Looks at the unconsumed bytes `buf`.
    pub fn poll<'a>(&mut self, buf: &'a [u8]) -> Result<Deframed<'a>, FrameError> {
        if self.skipping > 0 {
            if buf.is_empty() {
                return Ok(Deframed::NeedMore { needed: self.skipping });
            }
            let n = self.skipping.min(buf.len());
            self.skipping -= n;
            return Ok(Deframed::Discarded { consumed: n, finished: self.skipping == 0 });
        }
        match decode_tcp(buf, self.max) {
            Ok(TcpFrame::Complete { frame, consumed }) => Ok(Deframed::Frame { frame, consumed }),
            Ok(TcpFrame::Incomplete { needed }) => Ok(Deframed::NeedMore { needed }),
            Err(FrameError::TooLarge { len, .. }) if self.oversize == Oversize::Skip => {
                self.skipping = usize::try_from(len).unwrap_or(usize::MAX);
                let n = self.skipping.min(buf.len() - TCP_PREFIX);
                self.skipping -= n;
                Ok(Deframed::Discarded { consumed: TCP_PREFIX + n, finished: self.skipping == 0 })
            }
            Err(e) => Err(e),
        }
    }
}

/// A record of a frame together with the correlation label before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Labelled<'a> {
    /// The label's value, if the record was labelled.
    pub label: Option<NonZeroU64>,
    /// The record.
    pub record: Record<'a>,
}

/// Iterator over the records of a frame that binds each label record
/// (`label_type`: CORRELATED on the client, CORRELATE on the broker) to the
/// record after it and checks the label rules of WIRE.md §B3. Stops after
/// the first error, which is fatal for the connection.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LabelledRecords<'a> {
    records: Records<'a>,
    label_type: MsgType,
}

impl<'a> LabelledRecords<'a> {
    /// Records sent by a broker (labels are CORRELATED, type 3).
    pub const fn from_broker(frame: &'a [u8]) -> Self {
        Self { records: Records::new(frame), label_type: MsgType::CORRELATED }
    }

    /// Records sent by a client (labels are CORRELATE, type 2).
    pub const fn from_client(frame: &'a [u8]) -> Self {
        Self { records: Records::new(frame), label_type: MsgType::CORRELATE }
    }

    fn fail(&mut self, e: FrameError) -> Option<Result<Labelled<'a>, FrameError>> {
        self.records = Records::new(&[]);
        Some(Err(e))
    }
}

impl<'a> Iterator for LabelledRecords<'a> {
    type Item = Result<Labelled<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = match self.records.next()? {
            Ok(r) => r,
            Err(e) => return self.fail(e.into()),
        };
        if first.msg_type != self.label_type {
            return Some(Ok(Labelled { label: None, record: first }));
        }
        let value = match <[u8; 8]>::try_from(first.payload) {
            Ok(b) => u64::from_be_bytes(b),
            Err(_) => {
                let n = u16::try_from(first.payload.len()).unwrap_or(u16::MAX);
                return self.fail(FrameError::Label(LabelError::WrongLength(n)));
            }
        };
        let Some(label) = NonZeroU64::new(value) else {
            return self.fail(FrameError::Label(LabelError::Zero));
        };
        match self.records.next() {
            None => self.fail(FrameError::Label(LabelError::Dangling)),
            Some(Err(e)) => self.fail(e.into()),
            Some(Ok(r)) if (1..=5).contains(&r.msg_type.0) => {
                self.fail(FrameError::Label(LabelError::LabelsControl(r.msg_type)))
            }
            Some(Ok(record)) => Some(Ok(Labelled { label: Some(label), record })),
        }
    }
}

/// Exact length of the transport frame that carries `msg`, with an
/// optional correlation label, on `transport`.
#[inline]
pub fn frame_len<E: Encode + ?Sized>(transport: Transport, labelled: bool, msg: &E) -> usize {
    let prefix = if transport == Transport::Tcp { TCP_PREFIX } else { 0 };
    let label = if labelled { LABEL_RECORD_LEN } else { 0 };
    prefix + label + record::encoded_len(msg)
}

/// Writes a whole transport frame into `buf`: the TCP prefix (on TCP), a
/// label record of type `label_type` if `label` is given, then `msg`.
/// Returns the number of bytes written. Nothing useful is left in `buf`
/// on error.
pub fn encode_frame<E: Encode + ?Sized>(
    transport: Transport,
    label: Option<(MsgType, NonZeroU64)>,
    msg: &E,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let plan = Plan::new(transport, label, msg)?;
    if plan.total > buf.len() {
        return Err(EncodeError::BufferTooSmall { needed: plan.total, available: buf.len() });
    }
    let mut w = SliceWriter::new(buf);
    plan.write(label, msg, &mut w);
    if w.overflowed() || w.position() != plan.total {
        return Err(EncodeError::BufferTooSmall { needed: plan.total, available: w.position() });
    }
    Ok(plan.total)
}

/// Like [`encode_frame`] into any [`Sink`] (e.g. `bytes::BytesMut`).
pub fn write_frame<E: Encode + ?Sized, S: Sink + ?Sized>(
    transport: Transport,
    label: Option<(MsgType, NonZeroU64)>,
    msg: &E,
    out: &mut S,
) -> Result<usize, EncodeError> {
    let plan = Plan::new(transport, label, msg)?;
    plan.write(label, msg, out);
    Ok(plan.total)
}

/// Everything checked and sized before the first byte is written, so the
/// payload length is computed once.
struct Plan {
    prefix: Option<U32>,
    header: record::RecordHeader,
    total: usize,
}

impl Plan {
    fn new<E: Encode + ?Sized>(
        transport: Transport,
        label: Option<(MsgType, NonZeroU64)>,
        msg: &E,
    ) -> Result<Self, EncodeError> {
        let header = record::header_for(msg)?;
        let body =
            if label.is_some() { LABEL_RECORD_LEN } else { 0 } + header.encoded_len() + usize::from(header.payload_len);
        let (prefix, total) = match transport {
            Transport::Tcp => {
                let len = u32::try_from(body).map_err(|_| EncodeError::FrameTooLarge { len: body })?;
                (Some(U32::new(len)), TCP_PREFIX + body)
            }
            Transport::WebSocket => (None, body),
        };
        Ok(Plan { prefix, header, total })
    }

    fn write<E: Encode + ?Sized, S: Sink + ?Sized>(&self, label: Option<(MsgType, NonZeroU64)>, msg: &E, out: &mut S) {
        if let Some(p) = &self.prefix {
            out.put(p.as_bytes());
        }
        if let Some((msg_type, value)) = label {
            let l = crate::control::Label { msg_type, value };
            record::RecordHeader { msg_type, payload_len: 8 }.write(out);
            l.write_payload(out);
        }
        self.header.write(out);
        msg.write_payload(out);
    }
}

/// Writes `msg` as one unlabelled TCP frame into `buf`.
#[inline]
pub fn encode_tcp<E: Encode + ?Sized>(msg: &E, buf: &mut [u8]) -> Result<usize, EncodeError> {
    encode_frame(Transport::Tcp, None, msg, buf)
}

/// Runs the deframer (both oversize policies, several maxima), the record
/// splitter and both label parsers over `data`, discarding the results.
/// For fuzz targets and property tests: it must never panic.
#[doc(hidden)]
pub fn decode_all(data: &[u8]) {
    for max in [0, 7, 64, BROKER_MAX_FRAME] {
        let _ = decode_tcp(data, max);
        for policy in [Oversize::Reject, Oversize::Skip] {
            let mut d = TcpDeframer::new(max, policy);
            let mut rest = data;
            // Bounded: each step consumes at least one byte or stops.
            for _ in 0..=data.len() {
                match d.poll(rest) {
                    Ok(Deframed::Frame { consumed, .. } | Deframed::Discarded { consumed, .. }) if consumed > 0 => {
                        rest = rest.get(consumed..).unwrap_or_default();
                    }
                    _ => break,
                }
            }
        }
    }
    Records::new(data).for_each(drop);
    LabelledRecords::from_broker(data).for_each(drop);
    LabelledRecords::from_client(data).for_each(drop);
    let _ = Record::parse_exact(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_reports_needed() {
        assert_eq!(decode_tcp(&[0, 0], 100), Ok(TcpFrame::Incomplete { needed: 2 }));
        assert_eq!(decode_tcp(&[0, 0, 0, 3, 1], 100), Ok(TcpFrame::Incomplete { needed: 2 }));
        assert_eq!(decode_tcp(&[0, 0, 0, 0], 100), Err(FrameError::EmptyFrame));
        assert_eq!(decode_tcp(&[0, 0, 1, 0], 100), Err(FrameError::TooLarge { len: 256, max: 100 }));
    }

    #[test]
    fn skip_discards_oversized_frame_then_resumes() {
        let mut d = TcpDeframer::new(4, Oversize::Skip);
        let bytes = [0, 0, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0, 3, 1, 0, 0];
        assert_eq!(d.poll(&bytes[..7]), Ok(Deframed::Discarded { consumed: 7, finished: false }));
        assert_eq!(d.poll(&bytes[7..10]), Ok(Deframed::Discarded { consumed: 3, finished: true }));
        assert_eq!(d.poll(&bytes[10..]), Ok(Deframed::Frame { frame: &[1, 0, 0], consumed: 7 }));
    }
}
