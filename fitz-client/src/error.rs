//! The client's error type.

use core::fmt;

use fitz_wire::{DecodeError, Domain, EncodeError, Envelope, MsgType, ServerError};

/// Longest server message kept in a [`Fault`] (longer ones are cut at a
/// character boundary).
pub const FAULT_MESSAGE_MAX: usize = 120;

/// An error the broker answered with, owned: code, domain, retryable flag
/// and message (WIRE.md §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which envelope carried it.
    pub envelope: Envelope,
    /// The numeric code (`None` for the uncoded envelope).
    pub code: Option<u32>,
    /// The domain of the request (or of the code, when it is in the table).
    pub domain: Option<Domain>,
    /// True if the error-code table marks the code as safe to retry.
    pub retryable: bool,
    /// The message, cut to [`FAULT_MESSAGE_MAX`] bytes.
    pub message: heapless::String<FAULT_MESSAGE_MAX>,
}

impl Fault {
    /// Owns a decoded server error of a reply to `request`.
    pub fn new(e: &ServerError<'_>, request: MsgType) -> Self {
        let mut message = heapless::String::new();
        for c in e.message.chars() {
            if message.push(c).is_err() {
                break;
            }
        }
        Fault {
            envelope: e.envelope,
            code: e.code,
            domain: e.info().map(|i| i.domain).or_else(|| request.domain()),
            retryable: e.is_retryable(),
            message,
        }
    }

    /// The protocol's name of the code (`ERR_…`), when it is in the table.
    pub fn name(&self) -> Option<&'static str> {
        self.code.and_then(fitz_wire::ErrorCode::lookup).map(|c| c.name)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Fault {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Fault {{ code: {}, message: {} }}", self.code, self.message.as_str());
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.name()) {
            (Some(c), Some(n)) => write!(f, "broker error {c} {n}: {}", self.message),
            (Some(c), None) => write!(f, "broker error {c}: {}", self.message),
            (None, _) => write!(f, "broker error: {}", self.message),
        }
    }
}

/// Why an operation failed. Each cause is its own variant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The broker answered with an error.
    Server(Fault),
    /// The operation's deadline passed.
    Timeout,
    /// The operation was cancelled (RPC cancel, a dropped transaction).
    Cancelled,
    /// The client was closed.
    Closed,
    /// The connection was lost before the reply came; the outcome is
    /// unknown (the request may or may not have been applied).
    ConnectionLost,
    /// The handle belongs to an earlier connection (transaction, append
    /// session, reserved item, lease): the broker has forgotten it.
    StaleHandle,
    /// This subscription's consumer fell behind its bounded buffer; only
    /// this subscription ended.
    Backpressure,
    /// A fixed table is full (request slots, subscription slots, RPC calls)
    /// or a value does not fit its fixed storage.
    Capacity(Capacity),
    /// The request could not be encoded (nothing was sent).
    Encode(EncodeError),
    /// The broker's reply could not be decoded; the connection is suspect.
    Decode(DecodeError),
    /// The broker does not offer what the operation needs (a capability of
    /// the current dialect, or a legacy-only form).
    Unsupported(&'static str),
    /// An argument is not valid (a malformed route, an empty batch…);
    /// nothing was sent.
    Invalid(&'static str),
    /// Authentication failed and the token provider returned the token
    /// that was refused; the client does not retry it.
    AuthenticationFailed,
    /// No connection to the broker could be made (refused, unreachable,
    /// TLS failure, connect timeout) and the reconnect policy gave up.
    Unreachable,
}

/// Which fixed table or storage was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Capacity {
    /// All request slots are in use.
    Requests,
    /// All subscription slots are in use.
    Subscriptions,
    /// All RPC call slots are in use.
    Calls,
    /// All wire registrations are in use.
    Registrations,
    /// A subscribe request is longer than the stored form allows.
    Pattern,
    /// A route is longer than a handle can keep ([`crate::ops::ROUTE_MAX`]).
    Route,
    /// The frame is larger than the transmit buffer.
    Frame,
}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Self {
        Error::Encode(e)
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Server(fault) => fault.fmt(f),
            Error::Timeout => f.write_str("timed out"),
            Error::Cancelled => f.write_str("cancelled"),
            Error::Closed => f.write_str("client closed"),
            Error::ConnectionLost => f.write_str("connection lost before the reply (outcome unknown)"),
            Error::StaleHandle => f.write_str("handle of an earlier connection"),
            Error::Backpressure => f.write_str("subscriber too slow: its buffer overflowed"),
            Error::Capacity(c) => write!(f, "capacity exhausted: {c:?}"),
            Error::Encode(e) => write!(f, "encode: {e:?}"),
            Error::Decode(e) => write!(f, "malformed reply: {e:?}"),
            Error::Unsupported(what) => write!(f, "not supported by this broker: {what}"),
            Error::Invalid(what) => write!(f, "invalid argument: {what}"),
            Error::AuthenticationFailed => f.write_str("authentication failed"),
            Error::Unreachable => f.write_str("no connection to the broker (the reconnect policy gave up)"),
        }
    }
}

impl core::error::Error for Error {}
