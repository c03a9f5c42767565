//! Errors of this crate, the response envelopes of WIRE.md §6 and the error
//! code table of WIRE.md §6.3.

use crate::Domain;
use crate::codec::{Payload, Reader, Sink};

/// A payload could not be decoded. Never "need more bytes": payloads are
/// decoded only once their record is complete, so a short payload is
/// malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// A field runs past the end of the payload.
    Truncated,
    /// Bytes are left after the last field.
    TrailingBytes,
    /// A `str` field is not valid UTF-8.
    InvalidUtf8,
    /// A `u8` field holds a value the protocol does not list.
    InvalidValue {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: u8,
    },
    /// A response status byte other than those allowed for the operation.
    InvalidStatus(u8),
    /// A status-1 payload matches neither error envelope (WIRE.md §6.2).
    MalformedErrorEnvelope,
    /// A route that must be concrete (`scheme://realm/area/resource`) is not.
    InvalidRoute,
    /// A value is outside its documented range (named).
    OutOfRange(&'static str),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("field runs past the end of the payload"),
            Self::TrailingBytes => f.write_str("trailing bytes after the last field"),
            Self::InvalidUtf8 => f.write_str("string field is not valid UTF-8"),
            Self::InvalidValue { field, value } => write!(f, "invalid {field} value {value}"),
            Self::InvalidStatus(s) => write!(f, "invalid response status {s}"),
            Self::MalformedErrorEnvelope => f.write_str("error envelope matches neither shape"),
            Self::InvalidRoute => f.write_str("route is not a concrete scheme://realm/area/resource route"),
            Self::OutOfRange(what) => write!(f, "{what} out of range"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A message could not be encoded. Nothing was written that the caller
/// should send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload would exceed 65,535 bytes (WIRE.md §2.4).
    PayloadTooLarge {
        /// The payload length that was asked for.
        len: usize,
    },
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A value the protocol cannot carry (e.g. a zero correlation label, a
    /// message type above 65,535, a budget above one day).
    InvalidValue(&'static str),
    /// The session did not advertise a capability this message needs
    /// (WIRE.md §B1: refuse locally, send nothing).
    MissingCapability(crate::Capabilities),
    /// The transport frame would exceed the configured maximum.
    FrameTooLarge {
        /// The frame length.
        len: usize,
    },
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PayloadTooLarge { len } => write!(f, "payload of {len} bytes exceeds 65535"),
            Self::BufferTooSmall { needed, available } => {
                write!(f, "buffer too small: need {needed} bytes, have {available}")
            }
            Self::InvalidValue(what) => write!(f, "invalid value: {what}"),
            Self::MissingCapability(c) => write!(f, "the session lacks capability bits {:#x}", c.0),
            Self::FrameTooLarge { len } => write!(f, "transport frame of {len} bytes exceeds the limit"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// An error reply from the broker (WIRE.md §6.2, and status 2 of §B6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerError<'a> {
    /// `Coded`, `Uncoded` or `Status2` (which envelope carried it).
    pub envelope: Envelope,
    /// The numeric code; `None` for the uncoded envelope.
    pub code: Option<u32>,
    /// Human-readable text; not a stable identifier.
    pub message: &'a str,
}

/// The shape of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Envelope {
    /// Status 1, `u32 code`, `str message`.
    Coded,
    /// Status 1, `str message`.
    Uncoded,
    /// Status 2, `u32 code`, `str message` (Stream, current brokers).
    Status2,
}

impl<'a> ServerError<'a> {
    /// A coded (status 1) error.
    pub const fn coded(code: u32, message: &'a str) -> Self {
        Self { envelope: Envelope::Coded, code: Some(code), message }
    }

    /// An uncoded (status 1) error.
    pub const fn uncoded(message: &'a str) -> Self {
        Self { envelope: Envelope::Uncoded, code: None, message }
    }

    /// A status-2 Stream error.
    pub const fn status2(code: u32, message: &'a str) -> Self {
        Self { envelope: Envelope::Status2, code: Some(code), message }
    }

    /// The entry of the error-code table for this code, if it is known.
    pub fn info(&self) -> Option<&'static ErrorCode> {
        self.code.and_then(ErrorCode::lookup)
    }

    /// True if the table marks the code as safe to retry after backoff.
    pub fn is_retryable(&self) -> bool {
        self.info().is_some_and(|i| i.retry == Retry::Yes)
    }

    /// Decodes the bytes after a status-1 byte with the length test of
    /// WIRE.md §6.2 (`after_status` = payload without its first byte).
    pub fn decode_status1(after_status: &'a [u8]) -> Result<Self, DecodeError> {
        let n = after_status.len();
        // Coded: u32 code, u32 len, message, with len + 8 == n.
        if n >= 8 {
            let mut r = Reader::new(after_status);
            let code = r.u32()?;
            let len = r.u32()?;
            if usize::try_from(len).ok().and_then(|l| l.checked_add(8)) == Some(n) {
                let message = core::str::from_utf8(r.rest()).map_err(|_| DecodeError::InvalidUtf8)?;
                return Ok(Self::coded(code, message));
            }
        }
        if n >= 4 {
            let mut r = Reader::new(after_status);
            let len = r.u32()?;
            if usize::try_from(len).ok().and_then(|l| l.checked_add(4)) == Some(n) {
                let message = core::str::from_utf8(r.rest()).map_err(|_| DecodeError::InvalidUtf8)?;
                return Ok(Self::uncoded(message));
            }
        }
        Err(DecodeError::MalformedErrorEnvelope)
    }

    /// Decodes the bytes after a status-2 byte: `u32 code`, `str message`,
    /// nothing after.
    pub fn decode_status2(after_status: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(after_status);
        let code = r.u32()?;
        let message = r.str()?;
        r.finish()?;
        Ok(Self::status2(code, message))
    }

    /// Encoded length including the status byte.
    pub fn wire_len(&self) -> usize {
        1 + if self.code.is_some() && self.envelope != Envelope::Uncoded { 4 } else { 0 } + 4 + self.message.len()
    }

    /// Writes the status byte and the envelope.
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        match (self.envelope, self.code) {
            (Envelope::Status2, code) => {
                out.put_u8(2);
                out.put_u32(code.unwrap_or(0));
            }
            (Envelope::Coded, code) => {
                out.put_u8(1);
                out.put_u32(code.unwrap_or(0));
            }
            (Envelope::Uncoded, _) => out.put_u8(1),
        }
        out.put_bytes(self.message.as_bytes());
    }
}

impl core::fmt::Display for ServerError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.code, self.info()) {
            (Some(c), Some(i)) => write!(f, "{} ({c}): {}", i.name, self.message),
            (Some(c), None) => write!(f, "error {c}: {}", self.message),
            (None, _) => f.write_str(self.message),
        }
    }
}

/// A response: the operation's success fields after status `0`, or an error.
///
/// Encoding writes the status byte first; decoding is done by
/// [`Reply::decode_with`] (or the per-operation functions built on it),
/// because which statuses are allowed depends on the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reply<'a, T> {
    /// Status 0 and the success fields.
    Ok(T),
    /// Status 1 (or 2 on Stream) and an error envelope.
    Err(ServerError<'a>),
}

/// Which statuses a response may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StatusSet {
    /// 0 and 1 (every domain).
    Standard,
    /// 0, 1 and 2 (Stream responses, WIRE.md §B6).
    Stream,
}

impl<'a, T> Reply<'a, T> {
    /// Decodes a response payload: status, then either `ok` (which must
    /// consume the rest exactly) or an error envelope.
    pub fn decode_with(
        payload: &'a [u8],
        statuses: StatusSet,
        ok: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<Self, DecodeError> {
        let (&status, rest) = payload.split_first().ok_or(DecodeError::Truncated)?;
        match (status, statuses) {
            (0, _) => {
                let mut r = Reader::new(rest);
                let v = ok(&mut r)?;
                r.finish()?;
                Ok(Reply::Ok(v))
            }
            (1, _) => ServerError::decode_status1(rest).map(Reply::Err),
            (2, StatusSet::Stream) => ServerError::decode_status2(rest).map(Reply::Err),
            (s, _) => Err(DecodeError::InvalidStatus(s)),
        }
    }

    /// Converts into a `Result`.
    pub fn into_result(self) -> Result<T, ServerError<'a>> {
        match self {
            Reply::Ok(v) => Ok(v),
            Reply::Err(e) => Err(e),
        }
    }
}

impl<'a, T: Payload<'a>> Reply<'a, T> {
    /// Decodes a response whose success fields are a context-free payload.
    pub fn decode(payload: &'a [u8], statuses: StatusSet) -> Result<Self, DecodeError> {
        Self::decode_with(payload, statuses, T::read_payload)
    }
}

impl<'a, T: Payload<'a>> Payload<'a> for Reply<'a, T> {
    fn payload_len(&self) -> usize {
        match self {
            Reply::Ok(v) => 1 + v.payload_len(),
            Reply::Err(e) => e.wire_len(),
        }
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Reply::Ok(v) => {
                out.put_u8(0);
                v.write_payload(out);
            }
            Reply::Err(e) => e.write(out),
        }
    }
    /// Reads statuses 0 and 1; use [`Reply::decode_with`] for Stream.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let rest = r.rest();
        Self::decode_with(rest, StatusSet::Standard, T::read_payload)
    }
}

/// Whether an operation failing with a code may be retried (WIRE.md §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Retry {
    /// Safe to resend after backoff.
    Yes,
    /// Only if the operation is replay-safe.
    Conditional,
    /// Fatal for this request.
    No,
}

/// One row of the error-code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ErrorCode {
    /// The numeric code.
    pub code: u16,
    /// The protocol's name for it, e.g. `ERR_ISOLATION_CONFLICT`.
    pub name: &'static str,
    /// The domain that owns the code.
    pub domain: Domain,
    /// Whether a retry is safe.
    pub retry: Retry,
}

impl ErrorCode {
    /// Looks a code up in [`ERROR_CODES`] (binary search).
    pub fn lookup(code: u32) -> Option<&'static ErrorCode> {
        let code = u16::try_from(code).ok()?;
        ERROR_CODES.binary_search_by_key(&code, |e| e.code).ok().and_then(|i| ERROR_CODES.get(i))
    }
}

macro_rules! codes {
    ($( $code:literal $name:ident $domain:ident $retry:ident ),* $(,)?) => {
        /// Every error code of WIRE.md §6.3, sorted by code.
        pub const ERROR_CODES: &[ErrorCode] = &[
            $( ErrorCode { code: $code, name: stringify!($name), domain: Domain::$domain, retry: Retry::$retry } ),*
        ];
    };
}

codes! {
    1001 ERR_TRANSACTION_NOT_FOUND Kv No,
    1002 ERR_INVALID_MODE Kv No,
    1003 ERR_KEY_NOT_FOUND Kv No,
    1004 ERR_ISOLATION_CONFLICT Kv Yes,
    1005 ERR_WRITE_IN_READONLY Kv No,
    1006 ERR_KEY_EXISTS Kv No,
    1007 ERR_INVALID_ROUTE Kv No,
    1008 ERR_REALM_MISMATCH Kv No,
    1009 ERR_BACKEND_ERROR Kv Conditional,
    1010 ERR_TRANSACTION_ABORTED Kv No,
    1011 ERR_UNAUTHORIZED Kv No,
    1012 ERR_INVALID_SUBSCRIPTION_PATTERN Kv No,
    1013 ERR_SUBSCRIPTION_LIMIT Kv No,
    1014 ERR_BUSY Kv Yes,
    2001 ERR_CONCURRENCY_CONFLICT Stream No,
    2002 ERR_SESSION_ALREADY_ACTIVE Stream Conditional,
    2003 ERR_SESSION_NOT_FOUND Stream No,
    2004 ERR_INVALID_READ_BOUND Stream No,
    2005 ERR_RESOURCE_NOT_FOUND Stream No,
    2006 ERR_STREAM_FILTER_UNSUPPORTED_VERSION Stream No,
    2007 ERR_STREAM_FILTER_INVALID_PAYLOAD Stream No,
    2009 ERR_UNAUTHORIZED Stream No,
    2010 ERR_INVALID_SUBSCRIPTION_PATTERN Stream No,
    2011 ERR_SUBSCRIPTION_LIMIT Stream No,
    2012 ERR_BACKEND_ERROR Stream Conditional,
    2013 ERR_READ_RESPONSE_TOO_LARGE Stream No,
    2014 ERR_BUSY Stream Yes,
    3001 ERR_INVALID_ROUTE Notice No,
    3002 ERR_INVALID_PATTERN Notice No,
    3003 ERR_SUBSCRIPTION_LIMIT Notice No,
    3004 ERR_TRANSPORT_CLOSED Notice No,
    3005 ERR_BACKEND_ERROR Notice Conditional,
    3006 ERR_BUSY Notice Yes,
    3009 ERR_UNAUTHORIZED Notice No,
    4001 ERR_INVALID_TOKEN Queue No,
    4002 ERR_INFLIGHT_EXPIRED Queue No,
    4003 ERR_MESSAGE_NOT_FOUND Queue No,
    4004 ERR_QUEUE_NOT_FOUND Queue No,
    4005 ERR_QUEUE_FULL Queue Yes,
    4006 ERR_BAD_REQUEST Queue No,
    4007 ERR_BACKEND_ERROR Queue Conditional,
    4009 ERR_UNAUTHORIZED Queue No,
    4010 ERR_INVALID_SUBSCRIPTION_PATTERN Queue No,
    4011 ERR_SUBSCRIPTION_LIMIT Queue No,
    5001 ERR_LEASE_HELD Lease Yes,
    5002 ERR_INVALID_FENCE Lease No,
    5003 ERR_LEASE_EXPIRED Lease No,
    5004 ERR_LEASE_NOT_FOUND Lease No,
    5005 ERR_INVALID_TOKEN Lease No,
    5006 ERR_TIMEOUT Lease Conditional,
    5007 ERR_QUEUE_FULL Lease Yes,
    5008 ERR_BAD_REQUEST Lease No,
    5009 ERR_UNAUTHORIZED Lease No,
    5010 ERR_INVALID_SUBSCRIPTION_ROUTE Lease No,
    5011 ERR_INVALID_LIST_CURSOR Lease No,
    5012 ERR_INVALID_LIST_PATTERN Lease No,
    6001 ERR_RPC_TIMEOUT Rpc Conditional,
    6002 ERR_WORKER_NOT_FOUND Rpc Conditional,
    6003 ERR_RPC_BACKPRESSURE Rpc Yes,
    6004 ERR_ROUTE_NOT_REGISTERED Rpc Yes,
    6005 ERR_CORRELATION_NOT_FOUND Rpc No,
    6006 ERR_RPC_INVALID_SEQUENCE Rpc No,
    6007 ERR_RPC_DUPLICATE_CORRELATION Rpc No,
    6008 ERR_RPC_WRONG_WORKER Rpc No,
    6009 ERR_UNAUTHORIZED Rpc No,
    6010 ERR_BACKEND_ERROR Rpc No,
    6011 ERR_INVALID_ROUTE Rpc No,
    6012 ERR_INVALID_SUBSCRIPTION_PATTERN Rpc No,
    6013 ERR_SUBSCRIPTION_LIMIT Rpc No,
    7001 ERR_SCHEDULE_NOT_FOUND Schedule No,
    7002 ERR_INVALID_CRON Schedule No,
    7003 ERR_SCHEDULE_LIMIT Schedule No,
    7004 ERR_PARSE_ERROR Schedule No,
    7005 ERR_INVALID_TARGET Schedule No,
    7006 ERR_INVALID_SUBSCRIPTION_PATTERN Schedule No,
    7007 ERR_SUBSCRIPTION_LIMIT Schedule No,
    7008 ERR_INVALID_DELIVERY_MODE Schedule No,
    7009 ERR_UNAUTHORIZED Schedule No,
    7010 ERR_BACKEND_ERROR Schedule Yes,
    7011 ERR_TIMEOUT Schedule No,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(ERROR_CODES.windows(2).all(|w| matches!(w, [a, b] if a.code < b.code)));
        assert_eq!(ErrorCode::lookup(1004).map(|e| e.name), Some("ERR_ISOLATION_CONFLICT"));
        assert_eq!(ErrorCode::lookup(2008), None);
        assert_eq!(ErrorCode::lookup(70_000), None);
    }

    #[test]
    fn retry_summary_matches_wire_md() {
        // WIRE.md §6.3 "Retry summary": definitely retryable codes.
        let yes: [u16; 10] = [1004, 1014, 2014, 3006, 4005, 5001, 5007, 6003, 6004, 7010];
        let listed: usize = ERROR_CODES.iter().filter(|e| e.retry == Retry::Yes).count();
        assert_eq!(listed, yes.len());
        for c in yes {
            assert_eq!(ErrorCode::lookup(c.into()).map(|e| e.retry), Some(Retry::Yes), "{c}");
        }
        let cond: [u16; 8] = [1009, 2002, 2012, 3005, 4007, 5006, 6001, 6002];
        for c in cond {
            assert_eq!(ErrorCode::lookup(c.into()).map(|e| e.retry), Some(Retry::Conditional), "{c}");
        }
    }

    #[test]
    fn length_test_prefers_coded() {
        let coded = [0, 0, 0x03, 0xee, 0, 0, 0, 2, b'n', b'o'];
        assert_eq!(ServerError::decode_status1(&coded), Ok(ServerError::coded(1006, "no")));
        let uncoded = [0, 0, 0, 2, b'n', b'o'];
        assert_eq!(ServerError::decode_status1(&uncoded), Ok(ServerError::uncoded("no")));
        assert_eq!(ServerError::decode_status1(&[0, 0, 0, 9]), Err(DecodeError::MalformedErrorEnvelope));
    }
}
