//! Schedule vectors (legacy and current).

use fitz_wire::Payload;
use fitz_wire::schedule::*;
use serde_json::{Value, json};

use crate::Dir;
use crate::util::*;

fn delivery_mode(f: &Fields) -> R<DeliveryMode> {
    match get_str(f, &["delivery_mode"])? {
        "broadcast" => Ok(DeliveryMode::Broadcast),
        "single" => Ok(DeliveryMode::Single),
        m => Err(format!("unknown delivery_mode {m}")),
    }
}

fn delivery_mode_name(m: DeliveryMode) -> &'static str {
    match m {
        DeliveryMode::Broadcast => "broadcast",
        DeliveryMode::Single => "single",
    }
}

/// An entry read from the vector, owning its bytes.
struct OwnedEntry {
    route: String,
    cron: String,
    delivery_mode: DeliveryMode,
    payload: Vec<u8>,
}

impl OwnedEntry {
    fn read(f: &Fields) -> R<Self> {
        Ok(Self {
            route: get_str(f, &["route"])?.to_owned(),
            cron: get_str(f, &["cron"])?.to_owned(),
            delivery_mode: delivery_mode(f)?,
            payload: get_bytes(f, &["payload"])?,
        })
    }

    fn entry(&self) -> Entry<'_> {
        Entry { route: &self.route, cron: &self.cron, delivery_mode: self.delivery_mode, payload: &self.payload }
    }
}

fn entry_json(e: Entry<'_>) -> Value {
    json!({
        "route": e.route,
        "cron": e.cron,
        "delivery_mode": delivery_mode_name(e.delivery_mode),
        "payload": to_hex(e.payload),
    })
}

pub fn encode(name: &str, f: &Fields, _ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    let run = || -> R<Vec<u8>> {
        match name {
            "SCHEDULE_CREATE" => {
                let e = OwnedEntry::read(f)?;
                record(&e.entry().to_create())
            }
            "SCHEDULE_CANCEL" => record(&Cancel { route: get_str(f, &["route"])? }),
            "SCHEDULE_LIST" => record(&List::new(get_opt_u64(f, &["offset"])?, get_opt_u64(f, &["limit"])?)),
            "SCHEDULE_SUBSCRIBE" => record(&Subscribe { pattern: get_str(f, &["pattern"])? }),
            "SCHEDULE_UNSUBSCRIBE" => record(&Unsubscribe { pattern: get_str(f, &["pattern"])? }),
            "SCHEDULE_CREATE_BATCH" => {
                let owned = field(f, &["entries"])?
                    .as_array()
                    .ok_or("entries is not an array")?
                    .iter()
                    .map(|v| {
                        v.as_object().ok_or_else(|| "entry is not an object".to_owned()).and_then(OwnedEntry::read)
                    })
                    .collect::<R<Vec<_>>>()?;
                let entries: Vec<Entry<'_>> = owned.iter().map(OwnedEntry::entry).collect();
                record(&CreateBatch::new(&entries))
            }
            "SCHEDULE_LIST_V2" => {
                record(&ListV2 { continuation: get_opt_str(f, &["continuation"])?, limit: get_opt_u64(f, &["limit"])? })
            }
            _ => Err(String::new()),
        }
    };
    is_request(name, "SCHEDULE_").then(run)
}

/// The entries of a list or batch as the vectors write them.
fn list_json<'a>(entries: impl IntoIterator<Item = Entry<'a>>) -> Value {
    Value::Array(entries.into_iter().map(entry_json).collect())
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    Some(match (name, dir) {
        ("SCHEDULE_CREATE", Dir::C2s) => message(Create::decode(p), |m, o| {
            o.set("route", m.route)
                .set("cron", m.cron)
                .set("delivery_mode", delivery_mode_name(m.delivery_mode))
                .bytes("payload", m.payload)
        }),
        ("SCHEDULE_CANCEL", Dir::C2s) => message(Cancel::decode(p), |m, o| o.set("route", m.route)),
        ("SCHEDULE_LIST", Dir::C2s) => {
            message(List::decode(p), |m, o| o.opt_u64("offset", m.offset).opt_u64("limit", m.limit))
        }
        ("SCHEDULE_SUBSCRIBE", Dir::C2s) => message(Subscribe::decode(p), |m, o| o.set("pattern", m.pattern)),
        ("SCHEDULE_UNSUBSCRIBE", Dir::C2s) => message(Unsubscribe::decode(p), |m, o| o.set("pattern", m.pattern)),
        ("SCHEDULE_CREATE_BATCH", Dir::C2s) => CreateBatch::decode(p).map_err(|e| e.to_string()).and_then(|m| {
            if usize::try_from(m.entries.len()).ok() != Some(m.entries.iter().count()) {
                return Err("entry count disagrees with the iterator".into());
            }
            decoded(Out::new().set("entries", list_json(m.entries)).done(), &m)
        }),
        ("SCHEDULE_LIST_V2", Dir::C2s) => {
            message(ListV2::decode(p), |m, o| o.opt_str("continuation", m.continuation).opt_u64("limit", m.limit))
        }
        ("SCHEDULE_LIST_RESPONSE", Dir::S2c) => reply(decode_list_reply(p), ctx, |v, o| {
            o.set("total_count", v.total_count).set("entries", list_json(v.entries))
        }),
        ("SCHEDULE_LIST_V2_RESPONSE", Dir::S2c) => reply(decode_list_v2_reply(p), ctx, |v, o| {
            o.set("version", ListV2Ok::VERSION)
                .set("has_more", v.has_more)
                .opt_str("continuation", v.continuation)
                .set("entries", list_json(v.entries))
        }),
        ("SCHEDULE_SUBSCRIBE_RESPONSE", Dir::S2c) => {
            reply(decode_subscribe_reply(p), ctx, |v, o| o.set("sub_id", v.sub_id))
        }
        (
            "SCHEDULE_CREATE_RESPONSE"
            | "SCHEDULE_CANCEL_RESPONSE"
            | "SCHEDULE_UNSUBSCRIBE_RESPONSE"
            | "SCHEDULE_CREATE_BATCH_RESPONSE",
            Dir::S2c,
        ) => ack(decode_ack_reply(p), ctx),
        ("SCHEDULE_NOTIFY", Dir::S2c) => message(Notify::decode(p), |m, o| {
            o.set("sub_id", m.sub_id).set("route", m.route).bytes("payload", m.payload)
        }),
        _ => return None,
    })
}
