//! RPC, types 300–305 (WIRE.md §8.3, current dialect §B8).
//!
//! RPC is the only domain with its own correlation id, a 16-byte [`Uuid`]
//! chosen by the caller. REQUEST (302) and RESPONSE (303) have the same
//! layout in both directions and no reply; SUBSCRIBE_WORKER (300) and
//! UNSUBSCRIBE_WORKER (301) are ordinary requests with coded errors.
//!
//! The current dialect adds, behind `CAP_RPC_CANCELLATION`, a registration
//! extension on SUBSCRIBE_WORKER, a budget extension on REQUEST, RPC_CANCEL
//! (304) and RPC_LIFECYCLE (305). The extensions are modelled as an
//! `Option` that is `Some` only when it is on the wire, and their decoders
//! take whether the capability was negotiated, like
//! [`crate::kv::Scan::decode_with`].
//!
//! A call fails in-band: a terminal RESPONSE chunk whose body is exactly
//! `01 + u32 code + str message` with a code in 6001–6013 is an error
//! ([`Response::terminal_error`], [`TerminalError`], [`TerminalResponse`]).

use crate::codec::{Field, Message, Payload, Reader, Sink, wire_enum, wire_message};
use crate::error::{DecodeError, EncodeError, Reply, ServerError, StatusSet};
use crate::route::{self, Scheme};
use crate::{Capabilities, MsgType, Uuid};

/// Reads the correlation UUID at the start of a 302 or 303 payload without
/// decoding the rest: what a broker needs to answer a REQUEST whose UUID is
/// readable but whose rest is malformed with a terminal 6010 (WIRE.md
/// §8.3), and what a receiver routes a 303 frame by (§4.4).
pub fn peek_correlation_id(payload: &[u8]) -> Option<Uuid> {
    payload.first_chunk::<16>().map(|id| Uuid(*id))
}

/// The registration extension of SUBSCRIBE_WORKER (WIRE.md §B8):
/// `u8 version = 1`, `u8 flags = 1` (bit 0: the registration accepts
/// remaining budgets and cancellation signals). It has exactly one valid
/// encoding, `01 01`; a decoder rejects any other version or flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WorkerExtension;

impl WorkerExtension {
    /// The only version defined.
    pub const VERSION: u8 = 1;
    /// The flags byte: bit 0 (cancellation and budgets) set, nothing else.
    pub const FLAGS: u8 = 1;
    /// Encoded length.
    pub const WIRE_LEN: usize = 2;
}

impl<'a> Field<'a> for WorkerExtension {
    #[inline]
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(Self::VERSION);
        out.put_u8(Self::FLAGS);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.expect_u8(Self::VERSION, "rpc worker extension version")?;
        r.expect_u8(Self::FLAGS, "rpc worker extension flags")?;
        Ok(WorkerExtension)
    }
}

/// The budget extension of REQUEST (WIRE.md §B8): `u8 version = 1`,
/// `u8 flags = 1`, `u32 remaining_budget_ms` of at most one day.
///
/// The budget is checked when the value is built ([`BudgetExtension::new`],
/// [`BudgetExtension::saturating`]) and when it is decoded, so every value
/// of this type can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BudgetExtension {
    remaining_budget_ms: u32,
}

impl BudgetExtension {
    /// The only version defined.
    pub const VERSION: u8 = 1;
    /// The flags byte: bit 0 (a budget follows), nothing else.
    pub const FLAGS: u8 = 1;
    /// Encoded length.
    pub const WIRE_LEN: usize = 6;
    /// Largest budget the broker accepts: one day, in milliseconds.
    pub const MAX_MS: u32 = 86_400_000;

    /// A budget of `remaining_budget_ms` (rounded down to whole
    /// milliseconds by the caller); fails above [`Self::MAX_MS`].
    pub const fn new(remaining_budget_ms: u32) -> Result<Self, EncodeError> {
        if remaining_budget_ms > Self::MAX_MS {
            Err(EncodeError::InvalidValue("RPC budget above one day"))
        } else {
            Ok(Self { remaining_budget_ms })
        }
    }

    /// A budget of `remaining_ms`, capped at [`Self::MAX_MS`].
    pub const fn saturating(remaining_ms: u64) -> Self {
        let ms = if remaining_ms > Self::MAX_MS as u64 { Self::MAX_MS } else { remaining_ms as u32 };
        Self { remaining_budget_ms: ms }
    }

    /// The remaining budget in milliseconds (0 to [`Self::MAX_MS`]).
    pub const fn remaining_budget_ms(&self) -> u32 {
        self.remaining_budget_ms
    }
}

impl<'a> Field<'a> for BudgetExtension {
    #[inline]
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(Self::VERSION);
        out.put_u8(Self::FLAGS);
        out.put_u32(self.remaining_budget_ms);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.expect_u8(Self::VERSION, "rpc budget extension version")?;
        r.expect_u8(Self::FLAGS, "rpc budget extension flags")?;
        Self::new(r.u32()?).map_err(|_| DecodeError::OutOfRange("rpc remaining budget"))
    }
}

/// SUBSCRIBE_WORKER (300): registers this connection as a worker for a
/// route or pattern. OK: [`RegistrationOk`]; errors are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubscribeWorker<'a> {
    /// Exact route or wildcard pattern, any depth (`rpc://acme/app/*`).
    pub pattern: &'a str,
    /// Unfinished calls the broker may dispatch to this registration,
    /// 1 to 1,024 (see [`SubscribeWorker::MAX_CONCURRENT`]).
    pub max_concurrent: u32,
    /// The registration extension, sent only when `Some` (needs
    /// `CAP_RPC_CANCELLATION`).
    pub extension: Option<WorkerExtension>,
}

impl<'a> SubscribeWorker<'a> {
    /// The range of `max_concurrent` the broker accepts.
    pub const MAX_CONCURRENT: core::ops::RangeInclusive<u32> = 1..=1024;

    /// Capabilities this request needs: `RPC_CANCELLATION` when the
    /// extension is present.
    pub const fn required_capabilities(&self) -> Capabilities {
        if self.extension.is_some() { Capabilities::RPC_CANCELLATION } else { Capabilities::NONE }
    }

    /// True if `max_concurrent` is within 1..=1024 and `pattern` is a valid
    /// `rpc://` pattern (WIRE.md §9); the broker stays authoritative.
    pub fn is_valid(&self) -> bool {
        Self::MAX_CONCURRENT.contains(&self.max_concurrent) && route::is_valid_pattern(self.pattern, Scheme::Rpc, None)
    }

    /// Decodes SUBSCRIBE_WORKER as a broker does: the two extension bytes
    /// after `max_concurrent` are accepted only when `extension_allowed`
    /// (the capability was advertised); otherwise they are trailing bytes.
    pub fn decode_with(payload: &'a [u8], extension_allowed: bool) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let mut msg = Self::read_payload(&mut r)?;
        if extension_allowed && !r.is_empty() {
            msg.extension = Some(r.field()?);
        }
        r.finish()?;
        Ok(msg)
    }
}

impl<'a> Payload<'a> for SubscribeWorker<'a> {
    fn payload_len(&self) -> usize {
        self.pattern.wire_len() + 4 + self.extension.map_or(0, |e| e.wire_len())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.pattern.write(out);
        out.put_u32(self.max_concurrent);
        if let Some(e) = self.extension {
            e.write(out);
        }
    }
    /// Reads the legacy fields; see [`SubscribeWorker::decode_with`] for the extension.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(SubscribeWorker { pattern: r.str()?, max_concurrent: r.u32()?, extension: None })
    }

    /// Decodes with the extension allowed.
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_with(payload, true)
    }
}

impl Message for SubscribeWorker<'_> {
    const TYPE: MsgType = MsgType::RPC_SUBSCRIBE_WORKER;
}

wire_message! {
    /// UNSUBSCRIBE_WORKER (301), by the original pattern string. OK:
    /// [`RegistrationOk`]; errors are coded.
    pub struct UnsubscribeWorker<'a> = MsgType::RPC_UNSUBSCRIBE_WORKER;
    {
        /// The string given to SUBSCRIBE_WORKER.
        pub pattern: &'a str,
    }
}

/// The OK body of SUBSCRIBE_WORKER and UNSUBSCRIBE_WORKER: a `bytes data`
/// that is always empty (`00 | 00 00 00 00`), or nothing at all after the
/// status (a bare `00`, which decoders accept). A non-empty `data` is
/// malformed (WIRE.md §8.3, C17, C58). The form is kept so that
/// re-encoding gives the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RegistrationOk {
    /// An empty `bytes` (`00 00 00 00`): what brokers send.
    #[default]
    EmptyData,
    /// Nothing after the status byte.
    Bare,
}

impl<'a> Payload<'a> for RegistrationOk {
    fn payload_len(&self) -> usize {
        match self {
            RegistrationOk::EmptyData => 4,
            RegistrationOk::Bare => 0,
        }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        if *self == RegistrationOk::EmptyData {
            out.put_u32(0);
        }
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(RegistrationOk::Bare);
        }
        if r.bytes()?.is_empty() {
            Ok(RegistrationOk::EmptyData)
        } else {
            Err(DecodeError::OutOfRange("RPC registration OK data length"))
        }
    }
}

/// REQUEST (302), the same layout in both directions: caller → broker (no
/// reply; the outcome arrives as [`Response`] frames) and broker → worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// Caller-generated random UUID (towards a worker registered with the
    /// extension: the broker's invocation UUID).
    pub correlation_id: Uuid,
    /// Concrete route (no wildcards), any depth, e.g. `rpc://acme/app/echo`.
    pub route: &'a str,
    /// Request body.
    pub body: &'a [u8],
    /// The budget extension after `body`, sent only when `Some` (needs
    /// `CAP_RPC_CANCELLATION`; callers send it only when they have a deadline).
    pub budget: Option<BudgetExtension>,
}

impl<'a> Request<'a> {
    /// Capabilities this request needs: `RPC_CANCELLATION` when the budget
    /// extension is present.
    pub const fn required_capabilities(&self) -> Capabilities {
        if self.budget.is_some() { Capabilities::RPC_CANCELLATION } else { Capabilities::NONE }
    }

    /// True if `route` is a concrete `rpc://` route of any depth (the
    /// broker answers anything else with a terminal 6011).
    pub fn has_concrete_route(&self) -> bool {
        route::is_concrete_any_depth(self.route, Scheme::Rpc)
    }

    /// Decodes REQUEST with an explicit negotiation state. With
    /// `extension_negotiated` (the session has `CAP_RPC_CANCELLATION`; on a
    /// worker, its registrations carry the extension), what follows `body`
    /// is nothing or exactly the 6-byte budget extension (version 1, flags
    /// 1, at most one day); without it, any byte after `body` is malformed.
    pub fn decode_with(payload: &'a [u8], extension_negotiated: bool) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let mut req = Self::read_payload(&mut r)?;
        if extension_negotiated && !r.is_empty() {
            req.budget = Some(r.field()?);
        }
        r.finish()?;
        Ok(req)
    }
}

impl<'a> Payload<'a> for Request<'a> {
    fn payload_len(&self) -> usize {
        16 + self.route.wire_len() + self.body.wire_len() + self.budget.map_or(0, |b| b.wire_len())
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.correlation_id.write(out);
        self.route.write(out);
        self.body.write(out);
        if let Some(b) = self.budget {
            b.write(out);
        }
    }
    /// Reads the legacy fields; see [`Request::decode_with`] for the extension.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Request { correlation_id: r.field()?, route: r.str()?, body: r.bytes()?, budget: None })
    }

    /// Decodes with the extension allowed.
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_with(payload, true)
    }
}

impl Message for Request<'_> {
    const TYPE: MsgType = MsgType::RPC_REQUEST;
}

/// The legacy uncorrelated ingress error (broker → caller, type 302):
/// `u8 1`, `u32 code`, `str message`, nothing after, and no UUID. Older
/// brokers send it for backpressure, dispatch timeout and an unavailable
/// domain, and a broker may send it for a REQUEST whose UUID cannot be
/// read. It cannot be matched to a call: treat it as an indeterminate
/// failure of the calls still waiting for their first frame, never retry
/// automatically on it (WIRE.md §4.3, §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IngressError<'a> {
    /// The error code (6003, 6010, … on real brokers; not range-checked).
    pub code: u32,
    /// Human-readable text.
    pub message: &'a str,
}

impl<'a> IngressError<'a> {
    /// The same error as a coded [`ServerError`].
    pub const fn server_error(&self) -> ServerError<'a> {
        ServerError::coded(self.code, self.message)
    }
}

impl<'a> Payload<'a> for IngressError<'a> {
    fn payload_len(&self) -> usize {
        1 + 4 + self.message.wire_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(1);
        out.put_u32(self.code);
        self.message.write(out);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        match r.u8()? {
            1 => Ok(IngressError { code: r.u32()?, message: r.str()? }),
            s => Err(DecodeError::InvalidStatus(s)),
        }
    }
}

impl Message for IngressError<'_> {
    const TYPE: MsgType = MsgType::RPC_REQUEST;
}

/// What an inbound 302 frame is, on the worker/caller side (WIRE.md §4.4
/// step 3 as amended by §B12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Inbound<'a> {
    /// A call delivered to a worker.
    Request(Request<'a>),
    /// The legacy ingress error.
    IngressError(IngressError<'a>),
}

impl<'a> Inbound<'a> {
    /// Classifies an inbound 302 payload: a [`Request`] if it decodes as one
    /// with [`Request::decode_with`] under `extension_negotiated`, else an
    /// [`IngressError`] if it is exactly that shape, else the request's
    /// decode error (the frame is dropped; a malformed request never
    /// reaches a handler).
    pub fn classify(payload: &'a [u8], extension_negotiated: bool) -> Result<Self, DecodeError> {
        match Request::decode_with(payload, extension_negotiated) {
            Ok(req) => Ok(Inbound::Request(req)),
            Err(e) => IngressError::decode(payload).map(Inbound::IngressError).map_err(|_| e),
        }
    }
}

impl<'a> Payload<'a> for Inbound<'a> {
    fn payload_len(&self) -> usize {
        match self {
            Inbound::Request(r) => r.payload_len(),
            Inbound::IngressError(e) => e.payload_len(),
        }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Inbound::Request(r) => r.write_payload(out),
            Inbound::IngressError(e) => e.write_payload(out),
        }
    }
    /// Classifies the rest of the reader with the extension allowed.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::classify(r.rest(), true)
    }
}

impl Message for Inbound<'_> {
    const TYPE: MsgType = MsgType::RPC_REQUEST;
}

wire_enum! {
    /// The flags byte of RESPONSE: only bit 0 (stream_end) is defined, and
    /// receivers reject any other bit.
    pub enum ResponseFlags: "rpc response flags" {
        /// More chunks follow.
        More = 0,
        /// The last chunk of the call.
        StreamEnd = 1,
    }
}

/// RESPONSE (303), the same layout in both directions: worker → broker
/// (fire-and-forget) and broker → caller (byte-identical, in sequence
/// order). A one-shot reply is one chunk with sequence 0 and stream_end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Response<'a> {
    /// The call's UUID (a worker echoes the UUID it received).
    pub correlation_id: Uuid,
    /// 0 for the first chunk, then +1 per chunk, no gaps.
    pub sequence: u64,
    /// Whether this is the last chunk.
    pub flags: ResponseFlags,
    /// Chunk data; may be empty.
    pub body: &'a [u8],
}

impl<'a> Response<'a> {
    /// A chunk that is not the last one.
    pub const fn chunk(correlation_id: Uuid, sequence: u64, body: &'a [u8]) -> Self {
        Response { correlation_id, sequence, flags: ResponseFlags::More, body }
    }

    /// The last chunk of a call (a one-shot reply is `last(id, 0, body)`).
    pub const fn last(correlation_id: Uuid, sequence: u64, body: &'a [u8]) -> Self {
        Response { correlation_id, sequence, flags: ResponseFlags::StreamEnd, body }
    }

    /// True if this is the last chunk of the call.
    pub const fn stream_end(&self) -> bool {
        matches!(self.flags, ResponseFlags::StreamEnd)
    }

    /// The call's error, if this chunk follows the terminal error
    /// convention (WIRE.md §8.3, C60): stream_end is set and the body is
    /// exactly `u8 1`, `u32 code`, `str message` (valid UTF-8, nothing
    /// after) with the code in 6001..=6013. The sequence is not checked.
    /// Any other body, including the same shape with another code, is data.
    pub fn terminal_error(&self) -> Option<ServerError<'a>> {
        if !self.stream_end() {
            return None;
        }
        TerminalError::decode(self.body).ok().map(|e| e.server_error())
    }
}

impl<'a> Payload<'a> for Response<'a> {
    fn payload_len(&self) -> usize {
        16 + 8 + 1 + self.body.wire_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.correlation_id.write(out);
        out.put_u64(self.sequence);
        self.flags.write(out);
        self.body.write(out);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Response { correlation_id: r.field()?, sequence: r.u64()?, flags: r.field()?, body: r.bytes()? })
    }
}

impl Message for Response<'_> {
    const TYPE: MsgType = MsgType::RPC_RESPONSE;
}

/// The body of a terminal error chunk: `u8 1`, `u32 code`, `str message`
/// with the code in 6001..=6013 ([`TerminalError::CODES`]).
///
/// Its [`Payload`] implementation is the body encoding: `decode` accepts
/// exactly the convention of WIRE.md §8.3 (shape, code range, UTF-8,
/// nothing after), and the encoder writes the fields as they are, so build
/// values with [`TerminalError::new`] to be sure a receiver recognises them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TerminalError<'a> {
    /// An RPC error code, 6001..=6013.
    pub code: u32,
    /// Human-readable text.
    pub message: &'a str,
}

impl<'a> TerminalError<'a> {
    /// The codes a terminal error may carry.
    pub const CODES: core::ops::RangeInclusive<u32> = 6001..=6013;

    /// A terminal error; fails if `code` is outside [`Self::CODES`] (a body
    /// with such a code would be delivered as data).
    pub const fn new(code: u32, message: &'a str) -> Result<Self, EncodeError> {
        if code >= *Self::CODES.start() && code <= *Self::CODES.end() {
            Ok(TerminalError { code, message })
        } else {
            Err(EncodeError::InvalidValue("RPC terminal error code outside 6001..=6013"))
        }
    }

    /// The same error as a coded [`ServerError`].
    pub const fn server_error(&self) -> ServerError<'a> {
        ServerError::coded(self.code, self.message)
    }

    /// The terminal chunk carrying this error (sequence 0 when the broker
    /// fails a call before any chunk was sent).
    pub const fn response(self, correlation_id: Uuid, sequence: u64) -> TerminalResponse<'a> {
        TerminalResponse { correlation_id, sequence, error: self }
    }

    /// Writes the body into `buf` and returns the written part, to be used
    /// as the `body` of a [`Response::last`].
    pub fn write_body<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        let (needed, available) = (self.payload_len(), buf.len());
        let out = buf.get_mut(..needed).ok_or(EncodeError::BufferTooSmall { needed, available })?;
        let mut w = crate::SliceWriter::new(&mut *out);
        self.write_payload(&mut w);
        if w.overflowed() || w.position() != needed {
            return Err(EncodeError::BufferTooSmall { needed, available });
        }
        Ok(out)
    }
}

impl<'a> Payload<'a> for TerminalError<'a> {
    fn payload_len(&self) -> usize {
        1 + 4 + self.message.wire_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(1);
        out.put_u32(self.code);
        self.message.write(out);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        match r.u8()? {
            1 => {}
            s => return Err(DecodeError::InvalidStatus(s)),
        }
        let code = r.u32()?;
        if !Self::CODES.contains(&code) {
            return Err(DecodeError::OutOfRange("RPC terminal error code"));
        }
        Ok(TerminalError { code, message: r.str()? })
    }
}

/// A terminal error chunk (type 303, stream_end set, body a
/// [`TerminalError`]), encoded without building the body by hand. Decodes
/// only frames that [`Response::terminal_error`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TerminalResponse<'a> {
    /// The call's UUID.
    pub correlation_id: Uuid,
    /// The chunk's sequence (0 for broker-generated errors).
    pub sequence: u64,
    /// The error.
    pub error: TerminalError<'a>,
}

impl<'a> Payload<'a> for TerminalResponse<'a> {
    fn payload_len(&self) -> usize {
        16 + 8 + 1 + 4 + self.error.payload_len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.correlation_id.write(out);
        out.put_u64(self.sequence);
        ResponseFlags::StreamEnd.write(out);
        out.put_u32(u32::try_from(self.error.payload_len()).unwrap_or(u32::MAX));
        self.error.write_payload(out);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let resp = Response::read_payload(r)?;
        if !resp.stream_end() {
            return Err(DecodeError::InvalidValue { field: "rpc terminal response flags", value: resp.flags.to_u8() });
        }
        let error = TerminalError::decode(resp.body)?;
        Ok(TerminalResponse { correlation_id: resp.correlation_id, sequence: resp.sequence, error })
    }
}

impl Message for TerminalResponse<'_> {
    const TYPE: MsgType = MsgType::RPC_RESPONSE;
}

wire_enum! {
    /// Why a caller cancels (RPC_CANCEL kind 1).
    pub enum CancelReason: "rpc cancel reason" {
        /// The caller gave up explicitly (or dropped the response stream).
        Explicit = 1,
        /// The caller's deadline passed.
        CallerDeadline = 2,
    }
}

/// RPC_CANCEL (304, client → broker; no reply, never labelled; needs
/// `CAP_RPC_CANCELLATION` and is never sent to a legacy broker). Kind 1 is
/// 18 bytes, kind 3 is 17. The broker discards malformed frames silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RpcCancel {
    /// Kind 1: a caller gives up on a call. Answered by an
    /// [`RpcLifecycle::CancelResult`].
    Caller {
        /// The caller's UUID of the call.
        correlation_id: Uuid,
        /// Why.
        reason: CancelReason,
    },
    /// Kind 3: a supporting worker has released the handler and request
    /// state of an invocation (sent for every released invocation,
    /// cancelled or not).
    WorkerReleased {
        /// The invocation UUID the worker received.
        invocation_id: Uuid,
    },
}

impl RpcCancel {
    /// Wire kind of [`RpcCancel::Caller`].
    pub const KIND_CALLER: u8 = 1;
    /// Wire kind of [`RpcCancel::WorkerReleased`].
    pub const KIND_WORKER_RELEASED: u8 = 3;

    /// Capabilities this message needs: always `RPC_CANCELLATION`.
    pub const fn required_capabilities(&self) -> Capabilities {
        Capabilities::RPC_CANCELLATION
    }

    /// The wire kind, 1 or 3.
    pub const fn kind(&self) -> u8 {
        match self {
            RpcCancel::Caller { .. } => Self::KIND_CALLER,
            RpcCancel::WorkerReleased { .. } => Self::KIND_WORKER_RELEASED,
        }
    }

    /// The UUID the frame is about (caller's or invocation UUID).
    pub const fn id(&self) -> Uuid {
        match self {
            RpcCancel::Caller { correlation_id, .. } => *correlation_id,
            RpcCancel::WorkerReleased { invocation_id } => *invocation_id,
        }
    }
}

impl<'a> Payload<'a> for RpcCancel {
    fn payload_len(&self) -> usize {
        match self {
            RpcCancel::Caller { .. } => 18,
            RpcCancel::WorkerReleased { .. } => 17,
        }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(self.kind());
        self.id().write(out);
        if let RpcCancel::Caller { reason, .. } = self {
            reason.write(out);
        }
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        match r.u8()? {
            Self::KIND_CALLER => Ok(RpcCancel::Caller { correlation_id: r.field()?, reason: r.field()? }),
            Self::KIND_WORKER_RELEASED => Ok(RpcCancel::WorkerReleased { invocation_id: r.field()? }),
            k => Err(DecodeError::InvalidValue { field: "rpc cancel kind", value: k }),
        }
    }
}

impl Message for RpcCancel {
    const TYPE: MsgType = MsgType::RPC_CANCEL;
}

wire_enum! {
    /// Why the broker tells a worker to stop (RPC_LIFECYCLE kind 2).
    pub enum SignalReason: "rpc lifecycle reason" {
        /// The caller cancelled explicitly.
        Explicit = 1,
        /// The caller's deadline passed.
        CallerDeadline = 2,
        /// The caller disconnected.
        CallerDisconnected = 3,
        /// The broker's own deadline passed.
        BrokerDeadline = 4,
    }
}

wire_enum! {
    /// The broker's answer to a kind-1 cancel (RPC_LIFECYCLE kind 4). The
    /// variant names are those of cntryl-fitz 0.2.0 (the golden vectors'
    /// `outcome` uses them in snake case).
    pub enum CancelStatus: "rpc lifecycle status" {
        /// 1: the queued request was removed.
        QueuedRemoved = 1,
        /// 2: the signal was routed to the worker (not proof that it stopped).
        Forwarded = 2,
        /// 3: the worker does not support cancellation; the call continues
        /// under legacy rules.
        WorkerUnsupported = 3,
        /// 4: already cancelled, awaiting worker cleanup (C68).
        AlreadyTerminal = 4,
        /// 5: unknown or unauthorized UUID, also for calls already
        /// completed or removed.
        UnknownOrUnauthorized = 5,
        /// 6: forwarding to the worker failed.
        ForwardingFailed = 6,
    }
}

/// RPC_LIFECYCLE (305, broker → client; unsolicited, never labelled;
/// sent only with `CAP_RPC_CANCELLATION`). Both kinds are exactly 18
/// bytes. A decode error means the client ignores the frame (unknown kind,
/// reason or status, or another length), as it ignores frames for UUIDs it
/// does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RpcLifecycle {
    /// Kind 2, to the worker running an invocation: stop it, then
    /// acknowledge with [`RpcCancel::WorkerReleased`].
    Signal {
        /// The invocation UUID.
        invocation_id: Uuid,
        /// Why.
        reason: SignalReason,
    },
    /// Kind 4, to a caller: the result of its [`RpcCancel::Caller`].
    CancelResult {
        /// The caller's UUID of the call.
        correlation_id: Uuid,
        /// What the broker did.
        status: CancelStatus,
    },
}

impl RpcLifecycle {
    /// Wire kind of [`RpcLifecycle::Signal`].
    pub const KIND_SIGNAL: u8 = 2;
    /// Wire kind of [`RpcLifecycle::CancelResult`].
    pub const KIND_CANCEL_RESULT: u8 = 4;
    /// Payload length of both kinds.
    pub const WIRE_LEN: usize = 18;

    /// Capabilities a session needs to see this frame: always `RPC_CANCELLATION`.
    pub const fn required_capabilities(&self) -> Capabilities {
        Capabilities::RPC_CANCELLATION
    }

    /// The wire kind, 2 or 4.
    pub const fn kind(&self) -> u8 {
        match self {
            RpcLifecycle::Signal { .. } => Self::KIND_SIGNAL,
            RpcLifecycle::CancelResult { .. } => Self::KIND_CANCEL_RESULT,
        }
    }

    /// The UUID the frame is about (invocation or caller's UUID).
    pub const fn id(&self) -> Uuid {
        match self {
            RpcLifecycle::Signal { invocation_id, .. } => *invocation_id,
            RpcLifecycle::CancelResult { correlation_id, .. } => *correlation_id,
        }
    }
}

impl<'a> Payload<'a> for RpcLifecycle {
    fn payload_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(self.kind());
        self.id().write(out);
        match self {
            RpcLifecycle::Signal { reason, .. } => reason.write(out),
            RpcLifecycle::CancelResult { status, .. } => status.write(out),
        }
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        match r.u8()? {
            Self::KIND_SIGNAL => Ok(RpcLifecycle::Signal { invocation_id: r.field()?, reason: r.field()? }),
            Self::KIND_CANCEL_RESULT => {
                Ok(RpcLifecycle::CancelResult { correlation_id: r.field()?, status: r.field()? })
            }
            k => Err(DecodeError::InvalidValue { field: "rpc lifecycle kind", value: k }),
        }
    }

    /// Decodes exactly 18 bytes of a listed kind, reason or status.
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        match payload.len() {
            n if n < Self::WIRE_LEN => Err(DecodeError::Truncated),
            n if n > Self::WIRE_LEN => Err(DecodeError::TrailingBytes),
            _ => {
                let mut r = Reader::new(payload);
                let v = Self::read_payload(&mut r)?;
                r.finish()?;
                Ok(v)
            }
        }
    }
}

impl Message for RpcLifecycle {
    const TYPE: MsgType = MsgType::RPC_LIFECYCLE;
}

/// Decodes the reply to SUBSCRIBE_WORKER.
pub fn decode_subscribe_worker_reply(payload: &[u8]) -> Result<Reply<'_, RegistrationOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes the reply to UNSUBSCRIBE_WORKER.
pub fn decode_unsubscribe_worker_reply(payload: &[u8]) -> Result<Reply<'_, RegistrationOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Runs every RPC decoder, in every context, over `payload` and discards
/// the results. For fuzz targets and property tests: it must never panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    let _ = peek_correlation_id(payload);
    for negotiated in [false, true] {
        let _ = SubscribeWorker::decode_with(payload, negotiated);
        if let Ok(req) = Request::decode_with(payload, negotiated) {
            let _ = req.has_concrete_route();
        }
        let _ = Inbound::classify(payload, negotiated);
    }
    if let Ok(sub) = SubscribeWorker::decode(payload) {
        let _ = sub.is_valid();
    }
    let _ = UnsubscribeWorker::decode(payload);
    let _ = Request::decode(payload);
    let _ = IngressError::decode(payload);
    let _ = Inbound::decode(payload);
    if let Ok(resp) = Response::decode(payload) {
        let _ = resp.terminal_error();
    }
    let _ = TerminalError::decode(payload);
    let _ = TerminalResponse::decode(payload);
    let _ = RpcCancel::decode(payload);
    let _ = RpcLifecycle::decode(payload);
    let _ = decode_subscribe_worker_reply(payload);
    let _ = decode_unsubscribe_worker_reply(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid =
        Uuid([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);

    fn encode<'a, P: Payload<'a>>(p: &P, buf: &mut [u8]) -> usize {
        let mut w = crate::SliceWriter::new(buf);
        p.write_payload(&mut w);
        assert!(!w.overflowed());
        assert_eq!(w.position(), p.payload_len());
        w.position()
    }

    #[test]
    fn worked_examples() {
        let mut buf = [0u8; 128];
        // §12.4 REQUEST.
        let req = Request { correlation_id: ID, route: "rpc://acme/app/echo", body: b"ping", budget: None };
        let n = encode(&req, &mut buf);
        assert_eq!(n, 47);
        assert_eq!(Request::decode_with(&buf[..n], false), Ok(req));
        assert_eq!(Inbound::classify(&buf[..n], false), Ok(Inbound::Request(req)));
        // §12.4 RESPONSE.
        let resp = Response::last(ID, 0, b"pong");
        let n = encode(&resp, &mut buf);
        assert_eq!(n, 33);
        assert_eq!(buf.get(24), Some(&1));
        assert_eq!(resp.terminal_error(), None);
        // §12.4 terminal error.
        let msg = "No workers registered for route";
        let err = TerminalError::new(6004, msg).unwrap().response(ID, 0);
        let n = encode(&err, &mut buf);
        assert_eq!(n, 69);
        assert_eq!(buf.get(25..34), Some(&[0, 0, 0, 40, 1, 0, 0, 0x17, 0x74][..]));
        let back = Response::decode(&buf[..n]).unwrap();
        assert_eq!(back.terminal_error(), Some(ServerError::coded(6004, msg)));
        assert_eq!(TerminalResponse::decode(&buf[..n]), Ok(err));
        // §12.4 SUBSCRIBE_WORKER and its OK.
        let sub = SubscribeWorker { pattern: "rpc://acme/app/*", max_concurrent: 8, extension: None };
        let n = encode(&sub, &mut buf);
        assert_eq!(n, 24);
        assert_eq!(SubscribeWorker::decode_with(&buf[..n], false), Ok(sub));
        assert_eq!(decode_subscribe_worker_reply(&[0, 0, 0, 0, 0]), Ok(Reply::Ok(RegistrationOk::EmptyData)));
        assert_eq!(decode_subscribe_worker_reply(&[0]), Ok(Reply::Ok(RegistrationOk::Bare)));
        assert!(decode_unsubscribe_worker_reply(&[0, 0, 0, 0, 1, 0]).is_err());
        assert!(decode_unsubscribe_worker_reply(&[0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn cancellation_frames() {
        let mut cancel = [0u8; 18];
        cancel[0] = 1;
        cancel[1..17].copy_from_slice(&ID.0);
        cancel[17] = 1;
        let c = RpcCancel::Caller { correlation_id: ID, reason: CancelReason::Explicit };
        assert_eq!(RpcCancel::decode(&cancel), Ok(c));
        assert_eq!(RpcCancel::decode(&cancel[..17]), Err(DecodeError::Truncated));
        let mut lifecycle = cancel;
        lifecycle[0] = 4;
        lifecycle[17] = 2;
        let l = RpcLifecycle::CancelResult { correlation_id: ID, status: CancelStatus::Forwarded };
        assert_eq!(RpcLifecycle::decode(&lifecycle), Ok(l));
        lifecycle[17] = 7;
        assert!(RpcLifecycle::decode(&lifecycle).is_err());
        lifecycle[0] = 3;
        assert!(RpcLifecycle::decode(&lifecycle).is_err());
        assert_eq!(RpcLifecycle::decode(&cancel[..17]), Err(DecodeError::Truncated));
        assert_eq!(l.required_capabilities(), Capabilities::RPC_CANCELLATION);
    }

    #[test]
    fn budget_extension_is_strict() {
        let req = Request {
            correlation_id: ID,
            route: "rpc://a/b",
            body: b"",
            budget: Some(BudgetExtension::new(BudgetExtension::MAX_MS).unwrap()),
        };
        let mut buf = [0u8; 64];
        let n = encode(&req, &mut buf);
        assert_eq!(Request::decode_with(&buf[..n], true), Ok(req));
        assert_eq!(Request::decode_with(&buf[..n], false), Err(DecodeError::TrailingBytes));
        assert_eq!(req.required_capabilities(), Capabilities::RPC_CANCELLATION);
        // One millisecond over a day.
        buf[n - 1] += 1;
        assert_eq!(Request::decode_with(&buf[..n], true), Err(DecodeError::OutOfRange("rpc remaining budget")));
        assert!(BudgetExtension::new(BudgetExtension::MAX_MS + 1).is_err());
        assert_eq!(BudgetExtension::saturating(u64::MAX).remaining_budget_ms(), BudgetExtension::MAX_MS);
        // Truncated extension.
        assert_eq!(Request::decode_with(&buf[..n - 1], true), Err(DecodeError::Truncated));
    }

    #[test]
    fn ingress_error_is_classified() {
        let e = IngressError { code: 6003, message: "busy" };
        let mut buf = [0u8; 32];
        let n = encode(&e, &mut buf);
        assert_eq!(Inbound::classify(&buf[..n], false), Ok(Inbound::IngressError(e)));
        assert_eq!(e.server_error(), ServerError::coded(6003, "busy"));
        assert_eq!(peek_correlation_id(&buf[..15]), None);
    }
}
