//! Queue vectors (legacy and current).

use fitz_wire::queue::*;
use fitz_wire::{Dialect, Payload};
use serde_json::{Value, json};

use crate::Dir;
use crate::util::*;

/// Field names that differ between the legacy and current sets.
const ROUTE_OR_SELECTOR: &[&str] = &["selector", "route"];
const PATTERN: &[&str] = &["selector", "pattern"];
const MESSAGE_ID: &[&str] = &["item_id", "message_id"];
const LEASE_TOKEN: &[&str] = &["token", "lease_token"];

fn opt_u32(f: &Fields, names: &[&str]) -> R<Option<u32>> {
    get_opt_u64(f, names)?.map(u32::try_from).transpose().map_err(|e| e.to_string())
}

pub fn encode(name: &str, f: &Fields, _ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    let run = || -> R<Vec<u8>> {
        match name {
            "QUEUE_ENQUEUE" => {
                let body = get_bytes(f, &["body"])?;
                let delay_seconds = get_opt_u64(f, &["delay_seconds"])?;
                if delay_seconds == Some(0) {
                    return Err("refused: delay_seconds present with 0 (send absent)".into());
                }
                record(&Enqueue { route: get_str(f, &["route"])?, body: &body, delay_seconds })
            }
            "QUEUE_RESERVE" => record(&Reserve {
                route: get_str(f, ROUTE_OR_SELECTOR)?,
                lease_seconds: get_u64(f, &["lease_seconds"])?,
                batch_size: opt_u32(f, &["batch_size"])?,
                wait_seconds: get_opt_u64(f, &["wait_seconds"])?,
            }),
            "QUEUE_EXTEND" => record(&Extend {
                route: get_str(f, &["route"])?,
                message_id: get_u64(f, MESSAGE_ID)?,
                lease_token: get_u64(f, LEASE_TOKEN)?,
                lease_seconds: get_u64(f, &["lease_seconds"])?,
            }),
            "QUEUE_COMPLETE" => record(&Complete {
                route: get_str(f, &["route"])?,
                message_id: get_u64(f, MESSAGE_ID)?,
                lease_token: get_u64(f, LEASE_TOKEN)?,
            }),
            "QUEUE_SUBSCRIBE" => record(&Subscribe { pattern: get_str(f, PATTERN)? }),
            "QUEUE_UNSUBSCRIBE" => record(&Unsubscribe { pattern: get_str(f, PATTERN)? }),
            _ => Err(String::new()),
        }
    };
    is_request(name, "QUEUE_").then(run)
}

/// The RESERVE item layout the vector's request implies.
fn reserve_layout(ctx: &Ctx<'_>) -> R<ReserveLayout> {
    let layout = match (ctx.str("request_selector"), ctx.bool("item_route_on_wire")) {
        (Some(selector), _) => ReserveLayout::for_route(selector),
        (None, Some(true)) => ReserveLayout::Routed,
        (None, _) => ReserveLayout::Exact,
    };
    if let Some(on_wire) = ctx.bool("item_route_on_wire")
        && on_wire != (layout == ReserveLayout::Routed)
    {
        return Err(format!("item_route_on_wire {on_wire} disagrees with {layout:?}"));
    }
    Ok(layout)
}

/// One RESERVE item as the vectors spell it: legacy `id`/`token`, current
/// `message_id`/`lease_token`; exact-layout items take the request route.
fn item_json(item: &ReservedItem<'_>, ctx: &Ctx<'_>) -> Value {
    let (id, token) = match ctx.dialect {
        Dialect::Legacy => ("id", "token"),
        Dialect::Current => ("message_id", "lease_token"),
    };
    let mut o = json!({ id: item.message_id, token: item.lease_token, "body": to_hex(item.body) });
    if let Some(route) = item.route.or_else(|| ctx.str("request_selector")) {
        o["route"] = route.into();
    }
    o
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    Some(match (name, dir) {
        ("QUEUE_ENQUEUE", Dir::C2s) => message(Enqueue::decode(p), |m, o| {
            o.set("route", m.route).bytes("body", m.body).opt_u64("delay_seconds", m.delay_seconds)
        }),
        ("QUEUE_RESERVE", Dir::C2s) => message(Reserve::decode(p), |m, o| {
            o.alias(ROUTE_OR_SELECTOR, m.route)
                .set("lease_seconds", m.lease_seconds)
                .opt_u64("batch_size", m.batch_size.map(u64::from))
                .opt_u64("wait_seconds", m.wait_seconds)
        }),
        ("QUEUE_EXTEND", Dir::C2s) => message(Extend::decode(p), |m, o| {
            o.set("route", m.route)
                .alias(MESSAGE_ID, m.message_id)
                .alias(LEASE_TOKEN, m.lease_token)
                .set("lease_seconds", m.lease_seconds)
        }),
        ("QUEUE_COMPLETE", Dir::C2s) => message(Complete::decode(p), |m, o| {
            o.set("route", m.route).alias(MESSAGE_ID, m.message_id).alias(LEASE_TOKEN, m.lease_token)
        }),
        ("QUEUE_SUBSCRIBE", Dir::C2s) => message(Subscribe::decode(p), |m, o| o.alias(PATTERN, m.pattern)),
        ("QUEUE_UNSUBSCRIBE", Dir::C2s) => message(Unsubscribe::decode(p), |m, o| o.alias(PATTERN, m.pattern)),
        ("QUEUE_ENQUEUE_RESPONSE", Dir::S2c) => {
            reply(decode_enqueue_reply(p), ctx, |v, o| o.alias(MESSAGE_ID, v.message_id))
        }
        ("QUEUE_RESERVE_RESPONSE", Dir::S2c) => reserve_layout(ctx).and_then(|layout| {
            reply(decode_reserve_reply(p, layout), ctx, |v, o| {
                let items: Vec<Value> = v.items.iter().map(|i| item_json(&i, ctx)).collect();
                o.set("items", items)
            })
        }),
        ("QUEUE_SUBSCRIBE_RESPONSE", Dir::S2c) => {
            reply(decode_subscribe_reply(p), ctx, |v, o| o.set("sub_id", v.sub_id))
        }
        ("QUEUE_EXTEND_RESPONSE" | "QUEUE_COMPLETE_RESPONSE" | "QUEUE_UNSUBSCRIBE_RESPONSE", Dir::S2c) => {
            ack(decode_ack_reply(p), ctx)
        }
        ("QUEUE_NOTIFY", Dir::S2c) => message(Notify::decode(p), |m, o| {
            let o = o
                .set("sub_id", m.sub_id)
                .set("route", m.route)
                .set("ready", m.ready)
                .set("delayed", m.delayed)
                .set("inflight", m.inflight);
            if m.form == CountersForm::Wrapped { o.bytes("payload", &m.counters_bytes()) } else { o }
        }),
        _ => return None,
    })
}

#[allow(dead_code)]
fn _ok_is_payload(r: &ReserveOk<'_>) -> usize {
    r.payload_len()
}
