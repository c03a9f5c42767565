//! Lease vectors (legacy and current).
//!
//! The legacy set names some fields after fitz-py (`token`, `ttl_seconds`,
//! `owner`, `route` for SUBSCRIBE) and the current one after cntryl-fitz
//! (`fencing_token`, `ttl_secs`, `pattern`): inputs are read under every
//! name and outputs are written under every name.

use fitz_wire::Payload;
use fitz_wire::lease::*;
use serde_json::{Value, json};

use crate::Dir;
use crate::util::*;

const TOKEN: &[&str] = &["token", "fencing_token"];
const TTL: &[&str] = &["ttl_seconds", "ttl_secs"];
const OWNER: &[&str] = &["owner_id", "owner"];
const WATCH: &[&str] = &["route", "pattern"];

fn cursor(f: &Fields, names: &[&str]) -> R<Option<ListCursor>> {
    match names.iter().find_map(|n| f.get(*n)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(c)) => {
            Ok(Some(ListCursor { snapshot_id: get_u64(c, &["snapshot_id"])?, offset: get_u32(c, &["offset"])? }))
        }
        Some(v) => Err(format!("cursor is not an object: {v}")),
    }
}

fn cursor_json(c: Option<ListCursor>) -> Value {
    c.map_or(Value::Null, |c| json!({"snapshot_id": c.snapshot_id, "offset": c.offset}))
}

fn item_json(i: &ListItem<'_>) -> Value {
    json!({
        "route": i.route,
        "owner_id": i.owner_id,
        "holder_incarnation": i.holder_incarnation,
        "acquired_at": i.acquired_at,
        "expires_in_secs": i.expires_in_secs,
        "renewals": i.renewals,
    })
}

pub fn encode(name: &str, f: &Fields, _ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    let run = || -> R<Vec<u8>> {
        match name {
            "LEASE_ACQUIRE" => {
                let m = Acquire {
                    route: get_str(f, &["route"])?,
                    owner_id: get_str(f, OWNER)?,
                    ttl_secs: get_u64(f, TTL)?,
                    wait_seconds: get_u32(f, &["wait_seconds"])?,
                };
                m.validate().map_err(|e| format!("refused: {e}"))?;
                record(&m)
            }
            "LEASE_RENEW" => record(&Renew {
                route: get_str(f, &["route"])?,
                owner_id: get_str(f, OWNER)?,
                fencing_token: get_u64(f, TOKEN)?,
                ttl_secs: get_u64(f, TTL)?,
            }),
            "LEASE_RELEASE" => record(&Release {
                route: get_str(f, &["route"])?,
                owner_id: get_str(f, OWNER)?,
                fencing_token: get_u64(f, TOKEN)?,
            }),
            "LEASE_QUERY" => record(&Query { route: get_str(f, &["route"])? }),
            "LEASE_SUBSCRIBE" => record(&Subscribe { route: get_str(f, WATCH)? }),
            "LEASE_UNSUBSCRIBE" => record(&Unsubscribe { route: get_str(f, WATCH)? }),
            "LEASE_LIST" => record(&List {
                pattern: get_str(f, &["pattern", "route"])?,
                cursor: cursor(f, &["cursor"])?,
                limit: get_u32(f, &["limit"])?,
            }),
            _ => Err(String::new()),
        }
    };
    (is_request(name, "LEASE_") && name != "LEASE_ACQUIRE_DEFERRED").then(run)
}

fn acquire_ok(v: &AcquireOk, o: Out) -> Out {
    o.set("response_type", v.status.to_u8()).alias(TOKEN, v.fencing_token)
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    Some(match (name, dir) {
        ("LEASE_ACQUIRE", Dir::C2s) => message(Acquire::decode(p), |m, o| {
            o.set("route", m.route).alias(OWNER, m.owner_id).alias(TTL, m.ttl_secs).set("wait_seconds", m.wait_seconds)
        }),
        ("LEASE_RENEW", Dir::C2s) => message(Renew::decode(p), |m, o| {
            o.set("route", m.route).alias(OWNER, m.owner_id).alias(TOKEN, m.fencing_token).alias(TTL, m.ttl_secs)
        }),
        ("LEASE_RELEASE", Dir::C2s) => message(Release::decode(p), |m, o| {
            o.set("route", m.route).alias(OWNER, m.owner_id).alias(TOKEN, m.fencing_token)
        }),
        ("LEASE_QUERY", Dir::C2s) => message(Query::decode(p), |m, o| o.set("route", m.route)),
        ("LEASE_SUBSCRIBE", Dir::C2s) => message(Subscribe::decode(p), |m, o| o.alias(WATCH, m.route)),
        ("LEASE_UNSUBSCRIBE", Dir::C2s) => message(Unsubscribe::decode(p), |m, o| o.alias(WATCH, m.route)),
        ("LEASE_LIST", Dir::C2s) => message(List::decode(p), |m, o| {
            o.set("pattern", m.pattern).set("cursor", cursor_json(m.cursor)).set("limit", m.limit)
        }),
        ("LEASE_ACQUIRE_RESPONSE", Dir::S2c) => reply(decode_acquire_reply(p), ctx, acquire_ok),
        ("LEASE_ACQUIRE_DEFERRED", Dir::S2c) => reply(decode_acquire_deferred(p), ctx, acquire_ok),
        ("LEASE_RENEW_RESPONSE", Dir::S2c) => reply(decode_renew_reply(p), ctx, |v, o| o.alias(TOKEN, v.fencing_token)),
        ("LEASE_QUERY_RESPONSE", Dir::S2c) => reply(decode_query_reply(p), ctx, |v, o| {
            o.set("is_held", v.is_held())
                .alias(&["owner", "owner_id"], v.owner_id().map_or(Value::Null, Value::from))
                .alias(
                    &["ttl_remaining", "ttl_remaining_secs"],
                    v.ttl_remaining_secs().map_or(Value::Null, Value::from),
                )
                .alias(&["pending_waiters", "waiters"], v.pending_waiters())
        }),
        ("LEASE_SUBSCRIBE_RESPONSE", Dir::S2c) => {
            reply(decode_subscribe_reply(p), ctx, |v, o| o.set("sub_id", v.sub_id))
        }
        ("LEASE_LIST_RESPONSE", Dir::S2c) => reply(decode_list_reply(p), ctx, |v, o| {
            let items: Vec<Value> = v.items.iter().map(|i| item_json(&i)).collect();
            if items.len() != usize::try_from(v.items.len()).unwrap_or(usize::MAX) {
                return o.set("items", "iterator yielded fewer items than the count");
            }
            o.set("items", items).set("has_next", v.next.is_some()).set("next_cursor", cursor_json(v.next))
        }),
        ("LEASE_RELEASE_RESPONSE" | "LEASE_UNSUBSCRIBE_RESPONSE", Dir::S2c) => ack(decode_ack_reply(p), ctx),
        ("LEASE_NOTIFY", Dir::S2c) => message(Notify::decode(p), |m, o| {
            o.set("sub_id", m.sub_id).set("route", m.route).bytes("payload", m.payload)
        }),
        _ => return None,
    })
}
