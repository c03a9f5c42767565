//! Records (WIRE.md §3): `[type: 1 or 3 bytes][payload_len: u16][payload]`.

use zerocopy::byteorder::big_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::MsgType;
use crate::codec::{Encode, Sink, SliceWriter};
use crate::error::EncodeError;

/// Largest record payload (`u16` length field).
pub const MAX_PAYLOAD: usize = 65_535;
/// Largest record: escaped type (3) + length (2) + payload.
pub const MAX_RECORD: usize = 3 + 2 + MAX_PAYLOAD;
/// The escape byte that announces a 2-byte type.
pub const TYPE_ESCAPE: u8 = 0xFF;

/// One-byte-type header, as laid out on the wire.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct ShortHeader {
    ty: u8,
    len: U16,
}

/// Escaped-type header, as laid out on the wire.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct EscapedHeader {
    escape: u8,
    ty: U16,
    len: U16,
}

/// A record could not be split off a transport frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RecordError {
    /// The frame ends inside a record header.
    TruncatedHeader,
    /// An escaped type ≤ 254 (must use the one-byte form).
    NonCanonicalType(u16),
    /// The declared payload runs past the end of the frame.
    PayloadPastEnd {
        /// Declared payload length.
        declared: u16,
        /// Bytes left in the frame after the header.
        available: usize,
    },
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TruncatedHeader => f.write_str("frame ends inside a record header"),
            Self::NonCanonicalType(t) => write!(f, "escaped message type {t} must use the one-byte form"),
            Self::PayloadPastEnd { declared, available } => {
                write!(f, "record payload of {declared} bytes runs past the frame ({available} left)")
            }
        }
    }
}

impl core::error::Error for RecordError {}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecordHeader {
    /// The message type.
    pub msg_type: MsgType,
    /// Payload length.
    pub payload_len: u16,
}

impl RecordHeader {
    /// Parses a header at the start of `buf`; returns it and its length (3 or 5).
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<(RecordHeader, usize), RecordError> {
        match buf.first() {
            Some(&TYPE_ESCAPE) => {
                let (h, _) = EscapedHeader::read_from_prefix(buf).map_err(|_| RecordError::TruncatedHeader)?;
                let ty = h.ty.get();
                if ty <= 254 {
                    return Err(RecordError::NonCanonicalType(ty));
                }
                Ok((RecordHeader { msg_type: MsgType(ty), payload_len: h.len.get() }, 5))
            }
            Some(_) => {
                let (h, _) = ShortHeader::read_from_prefix(buf).map_err(|_| RecordError::TruncatedHeader)?;
                Ok((RecordHeader { msg_type: MsgType(u16::from(h.ty)), payload_len: h.len.get() }, 3))
            }
            None => Err(RecordError::TruncatedHeader),
        }
    }

    /// Encoded length of the header: 3 or 5.
    #[inline]
    pub const fn encoded_len(&self) -> usize {
        self.msg_type.header_len() + 2
    }

    /// Writes the header.
    #[inline]
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        let len = U16::new(self.payload_len);
        match u8::try_from(self.msg_type.0) {
            Ok(ty) if ty != TYPE_ESCAPE => out.put(ShortHeader { ty, len }.as_bytes()),
            _ => out.put(EscapedHeader { escape: TYPE_ESCAPE, ty: U16::new(self.msg_type.0), len }.as_bytes()),
        }
    }
}

/// One record, borrowing its payload from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Record<'a> {
    /// The message type.
    pub msg_type: MsgType,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    /// Splits the first record off `buf`; returns it and the rest.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<(Record<'a>, &'a [u8]), RecordError> {
        let (h, hlen) = RecordHeader::parse(buf)?;
        let body = buf.get(hlen..).unwrap_or_default();
        let n = usize::from(h.payload_len);
        if n > body.len() {
            return Err(RecordError::PayloadPastEnd { declared: h.payload_len, available: body.len() });
        }
        let (payload, rest) = body.split_at(n);
        Ok((Record { msg_type: h.msg_type, payload }, rest))
    }

    /// Parses a buffer that must hold exactly one record.
    pub fn parse_exact(buf: &'a [u8]) -> Result<Record<'a>, FrameError> {
        let (r, rest) = Record::parse(buf)?;
        if rest.is_empty() { Ok(r) } else { Err(FrameError::TrailingBytes) }
    }
}

impl Encode for Record<'_> {
    fn msg_type(&self) -> MsgType {
        self.msg_type
    }
    fn payload_len(&self) -> usize {
        self.payload.len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(self.payload);
    }
}

/// Iterator over the records of one transport frame, back to back
/// (WIRE.md §3.3). Stops after the first error.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    /// Iterates over the records of `frame`.
    #[inline]
    pub const fn new(frame: &'a [u8]) -> Self {
        Self { rest: frame }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Record::parse(self.rest) {
            Ok((r, rest)) => {
                self.rest = rest;
                Some(Ok(r))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Errors of a whole transport frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameError {
    /// A TCP length prefix of 0.
    EmptyFrame,
    /// A TCP length prefix above the configured maximum.
    TooLarge {
        /// The announced frame length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A record inside the frame is malformed.
    Record(RecordError),
    /// Bytes after the expected record(s).
    TrailingBytes,
    /// A malformed correlation label (WIRE.md §B3).
    Label(LabelError),
}

impl From<RecordError> for FrameError {
    fn from(e: RecordError) -> Self {
        FrameError::Record(e)
    }
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::EmptyFrame => f.write_str("TCP frame length 0"),
            Self::TooLarge { len, max } => write!(f, "frame of {len} bytes exceeds the maximum {max}"),
            Self::Record(e) => e.fmt(f),
            Self::TrailingBytes => f.write_str("trailing bytes after the record"),
            Self::Label(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for FrameError {}

/// A CORRELATE/CORRELATED record that breaks WIRE.md §B3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LabelError {
    /// Payload is not exactly 8 bytes.
    WrongLength(u16),
    /// The reserved value 0.
    Zero,
    /// The label is the last record of its frame.
    Dangling,
    /// The label is followed by a control record (types 1–5).
    LabelsControl(MsgType),
}

impl core::fmt::Display for LabelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::WrongLength(n) => write!(f, "correlation label of {n} bytes (expected 8)"),
            Self::Zero => f.write_str("correlation label 0"),
            Self::Dangling => f.write_str("correlation label labels nothing"),
            Self::LabelsControl(t) => write!(f, "correlation label before control record {}", t.0),
        }
    }
}

/// Exact length of the record that carries `msg` (header + payload).
#[inline]
pub fn encoded_len<E: Encode + ?Sized>(msg: &E) -> usize {
    msg.msg_type().header_len() + 2 + msg.payload_len()
}

/// The header `msg` will be written with; fails if the payload is too large.
#[inline]
pub fn header_for<E: Encode + ?Sized>(msg: &E) -> Result<RecordHeader, EncodeError> {
    let len = msg.payload_len();
    let payload_len = u16::try_from(len).map_err(|_| EncodeError::PayloadTooLarge { len })?;
    Ok(RecordHeader { msg_type: msg.msg_type(), payload_len })
}

/// Writes one record into any [`Sink`] (e.g. a `bytes::BufMut` with the
/// `bytes` feature). Checks the payload limit before writing anything.
#[inline]
pub fn write<E: Encode + ?Sized, S: Sink + ?Sized>(msg: &E, out: &mut S) -> Result<usize, EncodeError> {
    let h = header_for(msg)?;
    h.write(out);
    msg.write_payload(out);
    Ok(h.encoded_len() + usize::from(h.payload_len))
}

/// Writes one record at the start of `buf`; returns its length.
#[inline]
pub fn encode<E: Encode + ?Sized>(msg: &E, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let needed = encoded_len(msg);
    let h = header_for(msg)?;
    if needed > buf.len() {
        return Err(EncodeError::BufferTooSmall { needed, available: buf.len() });
    }
    let mut w = SliceWriter::new(buf);
    h.write(&mut w);
    msg.write_payload(&mut w);
    debug_assert_eq!(w.position(), needed, "encoded_len disagrees with the encoder");
    if w.overflowed() || w.position() != needed {
        return Err(EncodeError::BufferTooSmall { needed, available: w.position() });
    }
    Ok(needed)
}
