//! FRAME (bare records), CONNECT, SERVER_HELLO, SESSION_METADATA, CORRELATED.

use fitz_wire::control::{Connect, ServerHello, SessionMetadata};
use fitz_wire::{Capabilities, MsgType, Payload, Record};

use crate::Dir;
use crate::util::*;

pub fn encode(name: &str, f: &Fields, ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    Some(match name {
        "FRAME" => (|| {
            let ty = get_u64(f, &["msg_type"])?;
            let payload = get_bytes(f, &["payload"])?;
            let ty = u32::try_from(ty)
                .map_err(|_| fitz_wire::EncodeError::InvalidValue("message type above 65535"))
                .and_then(MsgType::try_from)
                .map_err(|e| format!("refused: {e}"))?;
            record(&Record { msg_type: ty, payload: &payload }).map_err(|e| format!("refused: {e}"))
        })(),
        "CONNECT" => (|| {
            let token = match get_opt_str(f, &["token"])? {
                Some(t) => t.as_bytes().to_vec(),
                None => get_bytes(f, &["token_hex"])?,
            };
            record(&Connect { token: &token })
        })(),
        "SESSION_METADATA" => (|| {
            let name = get_str(f, &["service_name"])?;
            ctx.capabilities.require(Capabilities::SESSION_METADATA).map_err(|e| format!("refused: {e}"))?;
            let name = SessionMetadata::validate_name(name).ok_or("refused: invalid service name")?;
            record(&SessionMetadata { service_name: name })
        })(),
        _ => return None,
    })
}

pub fn decode(name: &str, dir: Dir, p: &[u8], _ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    Some(match (name, dir) {
        ("FRAME", _) => {
            Ok(Decoded { fields: Out::new().bytes("payload", p).done(), reencoded: p.to_vec() }).map(|mut d| {
                // msg_type is compared at the record level by the runner.
                d.fields.remove("msg_type");
                d
            })
        }
        ("CONNECT", Dir::C2s) => message(Connect::decode(p), |m, o| match core::str::from_utf8(m.token) {
            Ok(t) => o.set("token", t),
            Err(_) => o.bytes("token_hex", m.token),
        }),
        ("SERVER_HELLO", Dir::S2c) => message(ServerHello::decode(p), |m, o| {
            let o = o.set("protocol_version", m.protocol_version).set("capabilities", m.capabilities.0);
            if m.trailing.is_empty() { o } else { o.bytes("trailing", m.trailing) }
        }),
        ("SESSION_METADATA", Dir::C2s) => {
            message(SessionMetadata::decode(p), |m, o| o.set("service_name", m.service_name))
        }
        // Labels are consumed by the frame parser; one reaching a payload
        // decoder is itself an error.
        ("CORRELATED", _) => Err("a CORRELATED record is never a message".into()),
        _ => return None,
    })
}
