//! KV vectors (legacy and current).

use fitz_wire::kv::*;
use fitz_wire::{Dialect, Payload, Reply};
use serde_json::{Value, json};

use crate::Dir;
use crate::util::*;

fn mode(f: &Fields) -> R<Mode> {
    match get_str(f, &["mode"])? {
        "read_only" => Ok(Mode::ReadOnly),
        "read_write" => Ok(Mode::ReadWrite),
        m => Err(format!("unknown mode {m}")),
    }
}

fn durability(s: &str) -> R<Durability> {
    match s {
        "buffered" => Ok(Durability::Buffered),
        "sync" => Ok(Durability::Sync),
        d => Err(format!("unknown durability {d}")),
    }
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Buffered => "buffered",
        Durability::Sync => "sync",
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::ReadOnly => "read_only",
        Mode::ReadWrite => "read_write",
    }
}

pub fn encode(name: &str, f: &Fields, ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    let run = || -> R<Vec<u8>> {
        match name {
            "KV_BEGIN" => record(&Begin {
                route: get_str(f, &["route"])?,
                mode: mode(f)?,
                durability: get_opt_str(f, &["durability"])?.map(durability).transpose()?,
            }),
            "KV_COMMIT" => record(&Commit {
                tx_id: get_u64(f, &["tx_id"])?,
                route: get_str(f, &["route"])?,
                persistence: get_opt_str(f, &["persistence"])?.map(durability).transpose()?,
            }),
            "KV_ROLLBACK" => record(&Rollback { tx_id: get_u64(f, &["tx_id"])?, route: get_str(f, &["route"])? }),
            "KV_GET" => record(&Get {
                tx_id: get_u64(f, &["tx_id"])?,
                route: get_str(f, &["route"])?,
                key: &get_bytes(f, &["key"])?,
            }),
            "KV_PUT" | "KV_INSERT" => {
                let (tx_id, route) = (get_u64(f, &["tx_id"])?, get_str(f, &["route"])?);
                let (key, value) = (get_bytes(f, &["key"])?, get_bytes(f, &["value"])?);
                if name == "KV_PUT" {
                    record(&Put { tx_id, route, key: &key, value: &value })
                } else {
                    record(&Insert { tx_id, route, key: &key, value: &value })
                }
            }
            "KV_DELETE" => record(&Delete {
                tx_id: get_u64(f, &["tx_id"])?,
                route: get_str(f, &["route"])?,
                key: &get_bytes(f, &["key"])?,
            }),
            "KV_DELETE_RANGE" => record(&DeleteRange {
                tx_id: get_u64(f, &["tx_id"])?,
                route: get_str(f, &["route"])?,
                start_key: &get_bytes(f, &["start_key"])?,
                end_key: &get_bytes(f, &["end_key"])?,
            }),
            "KV_SCAN" => {
                if f.contains_key("defect") {
                    // A reject vector: the capability-gated form of SCAN
                    // (an exclusive start) must be refused without the bit.
                    let probe = Scan {
                        tx_id: 1,
                        route: "kv://r/a/s",
                        start_key: Some(b"k"),
                        end_key: None,
                        limit: None,
                        reverse: false,
                        start_exclusive: true,
                    };
                    ctx.capabilities.require(probe.required_capabilities()).map_err(|e| format!("refused: {e}"))?;
                    return Err("the gated form was allowed".into());
                }
                let (start, end) = (get_opt_bytes(f, &["start_key"])?, get_opt_bytes(f, &["end_key"])?);
                let scan = Scan {
                    tx_id: get_u64(f, &["tx_id"])?,
                    route: get_str(f, &["route"])?,
                    start_key: start.as_deref(),
                    end_key: end.as_deref(),
                    limit: get_opt_u64(f, &["limit"])?.map(u32::try_from).transpose().map_err(|e| e.to_string())?,
                    reverse: get_bool(f, &["reverse"])?,
                    start_exclusive: f.get("start_exclusive").and_then(Value::as_bool).unwrap_or(false),
                };
                if ctx.dialect == Dialect::Current {
                    ctx.capabilities.require(scan.required_capabilities()).map_err(|e| format!("refused: {e}"))?;
                }
                record(&scan)
            }
            "KV_SUBSCRIBE" => record(&Subscribe { pattern: get_str(f, &["pattern"])? }),
            "KV_UNSUBSCRIBE" => record(&Unsubscribe { pattern: get_str(f, &["pattern"])? }),
            _ => Err(String::new()),
        }
    };
    is_request(name, "KV_").then(run)
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    Some(match (name, dir) {
        ("KV_BEGIN", Dir::C2s) => message(Begin::decode_dialect(p, ctx.dialect), |m, o| {
            let o = o.set("route", m.route).set("mode", mode_name(m.mode));
            match m.durability {
                Some(d) => o.set("durability", durability_name(d)),
                None => o,
            }
        }),
        ("KV_COMMIT", Dir::C2s) => message(Commit::decode_dialect(p, ctx.dialect), |m, o| {
            let o = o.set("tx_id", m.tx_id).set("route", m.route);
            match m.persistence {
                Some(d) => o.set("persistence", durability_name(d)),
                None => o,
            }
        }),
        ("KV_ROLLBACK", Dir::C2s) => message(Rollback::decode(p), |m, o| o.set("tx_id", m.tx_id).set("route", m.route)),
        ("KV_GET", Dir::C2s) => {
            message(Get::decode(p), |m, o| o.set("tx_id", m.tx_id).set("route", m.route).bytes("key", m.key))
        }
        ("KV_PUT", Dir::C2s) => message(Put::decode(p), |m, o| {
            o.set("tx_id", m.tx_id).set("route", m.route).bytes("key", m.key).bytes("value", m.value)
        }),
        ("KV_INSERT", Dir::C2s) => message(Insert::decode(p), |m, o| {
            o.set("tx_id", m.tx_id).set("route", m.route).bytes("key", m.key).bytes("value", m.value)
        }),
        ("KV_DELETE", Dir::C2s) => {
            message(Delete::decode(p), |m, o| o.set("tx_id", m.tx_id).set("route", m.route).bytes("key", m.key))
        }
        ("KV_DELETE_RANGE", Dir::C2s) => message(DeleteRange::decode(p), |m, o| {
            o.set("tx_id", m.tx_id).set("route", m.route).bytes("start_key", m.start_key).bytes("end_key", m.end_key)
        }),
        ("KV_SCAN", Dir::C2s) => {
            let exclusive = ctx.capabilities.contains(fitz_wire::Capabilities::KV_SCAN_EXCLUSIVE);
            message(Scan::decode_with(p, exclusive), |m, o| {
                o.set("tx_id", m.tx_id)
                    .set("route", m.route)
                    .opt_bytes("start_key", m.start_key)
                    .opt_bytes("end_key", m.end_key)
                    .opt_u64("limit", m.limit.map(u64::from))
                    .set("reverse", m.reverse)
                    .set("start_exclusive", m.start_exclusive)
            })
        }
        ("KV_SUBSCRIBE", Dir::C2s) => message(Subscribe::decode(p), |m, o| o.set("pattern", m.pattern)),
        ("KV_UNSUBSCRIBE", Dir::C2s) => message(Unsubscribe::decode(p), |m, o| o.set("pattern", m.pattern)),
        ("KV_BEGIN_RESPONSE", Dir::S2c) => reply(decode_begin_reply(p), ctx, |v, o| o.set("tx_id", v.tx_id)),
        ("KV_GET_RESPONSE", Dir::S2c) => {
            reply(decode_get_reply(p), ctx, |v, o| o.set("found", v.value.is_some()).opt_bytes("value", v.value))
        }
        ("KV_SCAN_RESPONSE", Dir::S2c) => reply(decode_scan_reply(p), ctx, |v, o| {
            let pairs: Vec<Value> =
                v.pairs.iter().map(|pair| json!({"key": to_hex(pair.key), "value": to_hex(pair.value)})).collect();
            o.alias(&["entries", "pairs"], pairs).set("has_more", v.has_more)
        }),
        ("KV_SUBSCRIBE_RESPONSE", Dir::S2c) => reply(decode_subscribe_reply(p), ctx, |v, o| o.set("sub_id", v.sub_id)),
        (
            "KV_COMMIT_RESPONSE"
            | "KV_ROLLBACK_RESPONSE"
            | "KV_PUT_RESPONSE"
            | "KV_INSERT_RESPONSE"
            | "KV_DELETE_RESPONSE"
            | "KV_DELETE_RANGE_RESPONSE"
            | "KV_UNSUBSCRIBE_RESPONSE",
            Dir::S2c,
        ) => ack(decode_ack_reply(p), ctx),
        ("KV_NOTIFY", Dir::S2c) => message(Notify::decode(p), |m, o| {
            o.set("sub_id", m.sub_id).set("route", m.route).set("mutation_count", m.mutation_count)
        }),
        _ => return None,
    })
}

#[allow(dead_code)]
fn _reply_is_payload(r: &Reply<'_, ()>) -> usize {
    r.payload_len()
}
