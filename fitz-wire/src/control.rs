//! Control records: CONNECT (WIRE.md §5.2), SERVER_HELLO (§B2),
//! CORRELATE / CORRELATED (§B3) and SESSION_METADATA (§B4).

use core::num::NonZeroU64;

use crate::codec::{Encode, Field, Message, Payload, Reader, Sink, wire_message};
use crate::error::DecodeError;
use crate::{Capabilities, MsgType};

/// CONNECT (type 1): the token as the raw payload, no length prefix.
/// Anonymous sessions send an empty token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Connect<'a> {
    /// Compact JWT bytes (opaque to the client).
    pub token: &'a [u8],
}

impl<'a> Payload<'a> for Connect<'a> {
    fn payload_len(&self) -> usize {
        self.token.len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(self.token);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Connect { token: r.rest() })
    }
}

impl Message for Connect<'_> {
    const TYPE: MsgType = MsgType::CONNECT;
}

impl<'a> Field<'a> for Capabilities {
    fn wire_len(&self) -> usize {
        4
    }
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u32(self.0);
    }
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.u32().map(Capabilities)
    }
}

/// SERVER_HELLO (type 4): the current dialect's answer to an accepted
/// CONNECT. Readers take the first six bytes and keep the rest as
/// `trailing` (reserved for later fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerHello<'a> {
    /// 1 for every current broker; other values are accepted.
    pub protocol_version: u16,
    /// Advertised capability bits (unknown bits are kept).
    pub capabilities: Capabilities,
    /// Bytes after the capabilities, ignored by readers.
    pub trailing: &'a [u8],
}

impl<'a> Payload<'a> for ServerHello<'a> {
    fn payload_len(&self) -> usize {
        6 + self.trailing.len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u16(self.protocol_version);
        out.put_u32(self.capabilities.0);
        out.put(self.trailing);
    }
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ServerHello { protocol_version: r.u16()?, capabilities: r.field()?, trailing: r.rest() })
    }
}

impl Message for ServerHello<'_> {
    const TYPE: MsgType = MsgType::SERVER_HELLO;
}

/// A correlation label record: CORRELATE (type 2, client → broker) or
/// CORRELATED (type 3, broker → client), carrying a non-zero `u64`.
///
/// Frames are usually built with [`crate::frame::encode_frame`], which
/// writes the label; [`crate::frame::LabelledRecords`] reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Label {
    /// [`MsgType::CORRELATE`] or [`MsgType::CORRELATED`].
    pub msg_type: MsgType,
    /// The correlation value (never 0).
    pub value: NonZeroU64,
}

impl Encode for Label {
    fn msg_type(&self) -> MsgType {
        self.msg_type
    }
    fn payload_len(&self) -> usize {
        8
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(self.value.get());
    }
}

wire_message! {
    /// SESSION_METADATA (type 5): the service name, display metadata only.
    /// Send only with `CAP_SESSION_METADATA`; see [`SessionMetadata::validate_name`].
    pub struct SessionMetadata<'a> = MsgType::SESSION_METADATA;
    {
        /// 1–128 bytes after trimming, no control characters.
        pub service_name: &'a str,
    }
}

impl<'a> SessionMetadata<'a> {
    /// Trims `name` and checks the limits of WIRE.md §B4; returns the
    /// trimmed name, or `None` if it cannot be sent.
    pub fn validate_name(name: &'a str) -> Option<&'a str> {
        let t = name.trim();
        (!t.is_empty() && t.len() <= 128 && !t.chars().any(char::is_control)).then_some(t)
    }
}

/// Runs every control decoder over `payload`, discarding the results.
/// For fuzz targets and property tests: it must never panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    let _ = Connect::decode(payload);
    let _ = ServerHello::decode(payload);
    let _ = SessionMetadata::decode(payload);
}
