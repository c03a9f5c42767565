//! Notice vectors (legacy and current).

use fitz_wire::Payload;
use fitz_wire::notice::*;

use crate::Dir;
use crate::util::*;

pub fn encode(name: &str, f: &Fields, _ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    let run = || -> R<Vec<u8>> {
        match name {
            "NOTICE_PUBLISH" => {
                let body = get_bytes(f, &["body"])?;
                record(&Publish { route: get_str(f, &["route"])?, body: &body })
            }
            "NOTICE_SUBSCRIBE" => record(&Subscribe { pattern: get_str(f, &["pattern", "selector"])? }),
            "NOTICE_UNSUBSCRIBE" => record(&Unsubscribe { sub_id: get_u64(f, &["sub_id"])? }),
            "NOTICE_UNSUBSCRIBE_ALL" => record(&UnsubscribeAll),
            _ => Err(String::new()),
        }
    };
    if !name.starts_with("NOTICE_") || name.ends_with("_RESPONSE") || name == "NOTICE_NOTIFY" {
        return None;
    }
    Some(run())
}

fn ack(p: &[u8], ctx: &Ctx<'_>) -> R<Decoded> {
    let r = decode_ack_reply(p).map_err(|e| e.to_string())?;
    check_envelope(ctx, &r)?;
    decoded(reply_fields(&r, |_, o| o), &r)
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    let e = |e: fitz_wire::DecodeError| e.to_string();
    Some(match (name, dir) {
        ("NOTICE_PUBLISH", Dir::C2s) => Publish::decode(p)
            .map_err(e)
            .and_then(|m| decoded(Out::new().set("route", m.route).bytes("body", m.body).done(), &m)),
        ("NOTICE_SUBSCRIBE", Dir::C2s) => Subscribe::decode(p)
            .map_err(e)
            .and_then(|m| decoded(Out::new().alias(&["pattern", "selector"], m.pattern).done(), &m)),
        ("NOTICE_UNSUBSCRIBE", Dir::C2s) => {
            Unsubscribe::decode(p).map_err(e).and_then(|m| decoded(Out::new().set("sub_id", m.sub_id).done(), &m))
        }
        ("NOTICE_UNSUBSCRIBE_ALL", Dir::C2s) => {
            UnsubscribeAll::decode(p).map_err(e).and_then(|m| decoded(Out::new().done(), &m))
        }
        ("NOTICE_SUBSCRIBE_RESPONSE", Dir::S2c) => decode_subscribe_reply(p).map_err(e).and_then(|r| {
            check_envelope(ctx, &r)?;
            decoded(reply_fields(&r, |v, o| o.set("sub_id", v.sub_id)), &r)
        }),
        ("NOTICE_UNSUBSCRIBE_RESPONSE" | "NOTICE_UNSUBSCRIBE_ALL_RESPONSE", Dir::S2c) => ack(p, ctx),
        ("NOTICE_NOTIFY", Dir::S2c) => Notify::decode(p).map_err(e).and_then(|m| {
            decoded(Out::new().set("sub_id", m.sub_id).set("route", m.route).bytes("body", m.body).done(), &m)
        }),
        _ => return None,
    })
}

#[allow(dead_code)]
fn _ok_is_payload(r: &SubscribeOk) -> usize {
    r.payload_len()
}
