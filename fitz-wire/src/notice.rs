//! Notices, types 500–504 (WIRE.md §8.5): best-effort, non-durable live
//! fan-out. Identical in both dialects.
//!
//! PUBLISH has no reply. SUBSCRIBE, UNSUBSCRIBE (by id, unlike the other
//! domains) and UNSUBSCRIBE_ALL answer errors with the coded envelope; the
//! reply decoders apply the length test of WIRE.md §6.2.

use crate::MsgType;
use crate::codec::{Message, Payload, Reader, Sink, flagged_sub_id, wire_message};
use crate::error::{DecodeError, Envelope, Reply, StatusSet};

wire_message! {
    /// PUBLISH (500). No reply on success, and none on failure either: the
    /// broker drops deliveries under backpressure. Never labelled (§B3).
    pub struct Publish<'a> = MsgType::NOTICE_PUBLISH;
    {
        /// Concrete `notice://realm/area/resource` (exactly three segments).
        pub route: &'a str,
        /// Body delivered to every matching subscription.
        pub body: &'a [u8],
    }
}

wire_message! {
    /// SUBSCRIBE (501). OK: [`SubscribeOk`]. Errors: coded (3002 bad
    /// pattern, 3003 quota). Idempotent: the same pattern string returns the
    /// same id.
    pub struct Subscribe<'a> = MsgType::NOTICE_SUBSCRIBE;
    {
        /// Pattern of any depth.
        pub pattern: &'a str,
    }
}

wire_message! {
    /// UNSUBSCRIBE (502), **by subscription id**. OK: empty. Errors: coded.
    /// Idempotent.
    pub struct Unsubscribe = MsgType::NOTICE_UNSUBSCRIBE;
    {
        /// The id SUBSCRIBE returned.
        pub sub_id: u64,
    }
}

/// UNSUBSCRIBE_ALL (503): removes every Notice subscription of the session.
/// Empty payload. OK: empty. Errors: coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnsubscribeAll;

impl<'a> Payload<'a> for UnsubscribeAll {
    fn payload_len(&self) -> usize {
        0
    }
    fn write_payload<S: Sink + ?Sized>(&self, _out: &mut S) {}
    fn read_payload(_r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(UnsubscribeAll)
    }
}

impl Message for UnsubscribeAll {
    const TYPE: MsgType = MsgType::NOTICE_UNSUBSCRIBE_ALL;
}

wire_message! {
    /// NOTIFY (504, broker → client): one published notice, once per
    /// matching subscription. Never acknowledged, never retried.
    pub struct Notify<'a> = MsgType::NOTICE_NOTIFY;
    {
        /// Subscription id.
        pub sub_id: u64,
        /// The published route (never the pattern).
        pub route: &'a str,
        /// The published body.
        pub body: &'a [u8],
    }
}

flagged_sub_id! {
    /// SUBSCRIBE OK: `u8 1` (id present), then the id. Any other first byte
    /// (including the bare form `00 <u64>`, C10), a missing id or trailing
    /// bytes are malformed.
    pub struct SubscribeOk: "notice subscription id flag";
}

/// The envelope a broker uses for a **domain** error of the request type
/// `ty` (WIRE.md §6.2): coded for SUBSCRIBE, UNSUBSCRIBE and
/// UNSUBSCRIBE_ALL; `None` for PUBLISH (no reply) and non-Notice types.
pub const fn domain_error_envelope(ty: MsgType) -> Option<Envelope> {
    match ty.0 {
        501..=503 => Some(Envelope::Coded),
        _ => None,
    }
}

/// Decodes the reply to SUBSCRIBE.
pub fn decode_subscribe_reply(payload: &[u8]) -> Result<Reply<'_, SubscribeOk>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Decodes a reply with no success fields (UNSUBSCRIBE, UNSUBSCRIBE_ALL).
pub fn decode_ack_reply(payload: &[u8]) -> Result<Reply<'_, ()>, DecodeError> {
    Reply::decode(payload, StatusSet::Standard)
}

/// Runs every Notice decoder over `payload` and discards the results. For
/// fuzz targets and property tests: it must never panic.
#[doc(hidden)]
pub fn decode_all(payload: &[u8]) {
    let _ = Publish::decode(payload);
    let _ = Subscribe::decode(payload);
    let _ = Unsubscribe::decode(payload);
    let _ = UnsubscribeAll::decode(payload);
    let _ = Notify::decode(payload);
    let _ = decode_subscribe_reply(payload);
    let _ = decode_ack_reply(payload);
}
