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
    is_request(name, "NOTICE_").then(run)
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    Some(match (name, dir) {
        ("NOTICE_PUBLISH", Dir::C2s) => {
            message(Publish::decode(p), |m, o| o.set("route", m.route).bytes("body", m.body))
        }
        ("NOTICE_SUBSCRIBE", Dir::C2s) => {
            message(Subscribe::decode(p), |m, o| o.alias(&["pattern", "selector"], m.pattern))
        }
        ("NOTICE_UNSUBSCRIBE", Dir::C2s) => message(Unsubscribe::decode(p), |m, o| o.set("sub_id", m.sub_id)),
        ("NOTICE_UNSUBSCRIBE_ALL", Dir::C2s) => message(UnsubscribeAll::decode(p), |_, o| o),
        ("NOTICE_SUBSCRIBE_RESPONSE", Dir::S2c) => {
            reply(decode_subscribe_reply(p), ctx, |v, o| o.set("sub_id", v.sub_id))
        }
        ("NOTICE_UNSUBSCRIBE_RESPONSE" | "NOTICE_UNSUBSCRIBE_ALL_RESPONSE", Dir::S2c) => ack(decode_ack_reply(p), ctx),
        ("NOTICE_NOTIFY", Dir::S2c) => {
            message(Notify::decode(p), |m, o| o.set("sub_id", m.sub_id).set("route", m.route).bytes("body", m.body))
        }
        _ => return None,
    })
}

#[allow(dead_code)]
fn _ok_is_payload(r: &SubscribeOk) -> usize {
    r.payload_len()
}
