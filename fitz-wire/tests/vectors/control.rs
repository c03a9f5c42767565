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
        ("CONNECT", Dir::C2s) => Connect::decode(p).map_err(|e| e.to_string()).and_then(|m| {
            let out = match core::str::from_utf8(m.token) {
                Ok(t) => Out::new().set("token", t),
                Err(_) => Out::new().bytes("token_hex", m.token),
            };
            decoded(out.done(), &m)
        }),
        ("SERVER_HELLO", Dir::S2c) => ServerHello::decode(p).map_err(|e| e.to_string()).and_then(|m| {
            let mut out = Out::new().set("protocol_version", m.protocol_version).set("capabilities", m.capabilities.0);
            if !m.trailing.is_empty() {
                out = out.bytes("trailing", m.trailing);
            }
            decoded(out.done(), &m)
        }),
        ("SESSION_METADATA", Dir::C2s) => SessionMetadata::decode(p)
            .map_err(|e| e.to_string())
            .and_then(|m| decoded(Out::new().set("service_name", m.service_name).done(), &m)),
        // Labels are consumed by the frame parser; one reaching a payload
        // decoder is itself an error.
        ("CORRELATED", _) => Err("a CORRELATED record is never a message".into()),
        _ => return None,
    })
}
