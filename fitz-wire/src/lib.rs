//! # fitz-wire
//!
//! The bytes of the [Fitz](https://github.com/cntryl/fitz) broker protocol,
//! both dialects, as borrowed typed views and back, for every message of
//! every domain: KV, Queue, RPC, Lease, Notice, Stream and Schedule.
//!
//! ## Layers
//!
//! - [`frame`]: transport frames. TCP frames carry a `u32` length prefix,
//!   checked against a maximum before anything is buffered
//!   ([`frame::decode_tcp`], [`frame::TcpDeframer`]); WebSocket messages
//!   are frames as they are. [`frame::LabelledRecords`] walks the records of
//!   a frame and binds current-dialect correlation labels.
//! - [`record`]: `[type][u16 len][payload]` with the one-byte and escaped
//!   type forms.
//! - One module per domain ([`kv`], [`queue`], [`rpc`], [`lease`],
//!   [`notice`], [`stream`], [`schedule`]) plus [`control`]: a struct per
//!   request, reply body and notification. Requests and notifications
//!   implement [`Payload`] and [`Message`]; replies are decoded with
//!   [`Reply`] and the per-operation functions, which take the request
//!   context where WIRE.md says the layout depends on it (Queue RESERVE
//!   items, Stream READ pages).
//! - [`error`]: decode/encode errors, the two error envelopes and the error
//!   code table ([`ERROR_CODES`]).
//!
//! ## Guarantees
//!
//! - `#![no_std]`, no `alloc`, no `unsafe`.
//! - **Zero-copy decoding**: strings and byte fields borrow the input;
//!   multi-item pages (scan pairs, reserved items, stream records, list
//!   entries) are validated once and then iterated lazily; the counted ones
//!   share one type, [`List`], over their [`Element`]s.
//! - **No panics on any input**: every length is checked before it is used
//!   and decoders return [`DecodeError`], [`RecordError`] or [`FrameError`].
//!   Fuzz targets and property tests in this repository exercise that.
//! - **Exact sizes**: [`record::encoded_len`] and [`frame::frame_len`] give
//!   the exact number of bytes before anything is written; encoders fail
//!   with [`EncodeError`] when the buffer is too small or a payload would
//!   exceed 65,535 bytes, and write nothing usable in that case.
//!
//! ## Example
//!
//! ```
//! use fitz_wire::{frame, kv, Payload};
//!
//! let put = kv::Put { tx_id: 42, route: "kv://acme/orders/main", key: b"k", value: b"v" };
//! let mut buf = [0u8; 64];
//! let n = frame::encode_tcp(&put, &mut buf).unwrap();
//! assert_eq!(n, frame::frame_len(frame::Transport::Tcp, false, &put));
//!
//! let frame::TcpFrame::Complete { frame, .. } = frame::decode_tcp(&buf[..n], 1 << 20).unwrap() else {
//!     unreachable!()
//! };
//! let record = fitz_wire::Record::parse_exact(frame).unwrap();
//! assert_eq!(record.msg_type, fitz_wire::MsgType::KV_PUT);
//! assert_eq!(kv::Put::decode(record.payload).unwrap(), put);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod codec;
pub mod control;
pub mod error;
pub mod frame;
pub mod kv;
pub mod lease;
pub mod notice;
pub mod queue;
pub mod record;
pub mod route;
pub mod rpc;
pub mod schedule;
pub mod stream;
mod types;

pub use codec::{
    DynEncode, Element, Encode, Field, List, ListIter, ListWriter, Message, Payload, Reader, Sink, SliceWriter, Typed,
    Uuid,
};
pub use error::{DecodeError, ERROR_CODES, EncodeError, Envelope, ErrorCode, Reply, Retry, ServerError, StatusSet};
pub use record::{FrameError, LabelError, Record, RecordError, RecordHeader, Records};
pub use types::{Capabilities, Dialect, Domain, MsgType};

/// Parses one record that must fill `buf` exactly (a WebSocket message or
/// a TCP frame without its prefix, legacy dialect).
pub fn parse(buf: &[u8]) -> Result<Record<'_>, FrameError> {
    Record::parse_exact(buf)
}

impl TryFrom<u32> for MsgType {
    type Error = EncodeError;
    /// Message types are at most 65,535 (WIRE.md §3.2).
    fn try_from(v: u32) -> Result<Self, EncodeError> {
        u16::try_from(v).map(MsgType).map_err(|_| EncodeError::InvalidValue("message type above 65535"))
    }
}

/// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
