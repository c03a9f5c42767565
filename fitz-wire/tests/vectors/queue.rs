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
    if !name.starts_with("QUEUE_") || name.ends_with("_RESPONSE") || name == "QUEUE_NOTIFY" {
        return None;
    }
    Some(run())
}

fn ack(p: &[u8], ctx: &Ctx<'_>) -> R<Decoded> {
    let r = decode_ack_reply(p).map_err(|e| e.to_string())?;
    check_envelope(ctx, &r)?;
    decoded(reply_fields(&r, |_, o| o), &r)
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
    let e = |e: fitz_wire::DecodeError| e.to_string();
    Some(match (name, dir) {
        ("QUEUE_ENQUEUE", Dir::C2s) => Enqueue::decode(p).map_err(e).and_then(|m| {
            let o = Out::new().set("route", m.route).bytes("body", m.body).opt_u64("delay_seconds", m.delay_seconds);
            decoded(o.done(), &m)
        }),
        ("QUEUE_RESERVE", Dir::C2s) => Reserve::decode(p).map_err(e).and_then(|m| {
            let o = Out::new()
                .alias(ROUTE_OR_SELECTOR, m.route)
                .set("lease_seconds", m.lease_seconds)
                .opt_u64("batch_size", m.batch_size.map(u64::from))
                .opt_u64("wait_seconds", m.wait_seconds);
            decoded(o.done(), &m)
        }),
        ("QUEUE_EXTEND", Dir::C2s) => Extend::decode(p).map_err(e).and_then(|m| {
            let o = Out::new()
                .set("route", m.route)
                .alias(MESSAGE_ID, m.message_id)
                .alias(LEASE_TOKEN, m.lease_token)
                .set("lease_seconds", m.lease_seconds);
            decoded(o.done(), &m)
        }),
        ("QUEUE_COMPLETE", Dir::C2s) => Complete::decode(p).map_err(e).and_then(|m| {
            let o = Out::new().set("route", m.route).alias(MESSAGE_ID, m.message_id).alias(LEASE_TOKEN, m.lease_token);
            decoded(o.done(), &m)
        }),
        ("QUEUE_SUBSCRIBE", Dir::C2s) => {
            Subscribe::decode(p).map_err(e).and_then(|m| decoded(Out::new().alias(PATTERN, m.pattern).done(), &m))
        }
        ("QUEUE_UNSUBSCRIBE", Dir::C2s) => {
            Unsubscribe::decode(p).map_err(e).and_then(|m| decoded(Out::new().alias(PATTERN, m.pattern).done(), &m))
        }
        ("QUEUE_ENQUEUE_RESPONSE", Dir::S2c) => decode_enqueue_reply(p).map_err(e).and_then(|r| {
            check_envelope(ctx, &r)?;
            decoded(reply_fields(&r, |v, o| o.alias(MESSAGE_ID, v.message_id)), &r)
        }),
        ("QUEUE_RESERVE_RESPONSE", Dir::S2c) => reserve_layout(ctx).and_then(|layout| {
            let r = decode_reserve_reply(p, layout).map_err(e)?;
            check_envelope(ctx, &r)?;
            let fields = reply_fields(&r, |v, o| {
                let items: Vec<Value> = v.items.iter().map(|i| item_json(&i, ctx)).collect();
                o.set("items", items)
            });
            decoded(fields, &r)
        }),
        ("QUEUE_SUBSCRIBE_RESPONSE", Dir::S2c) => decode_subscribe_reply(p).map_err(e).and_then(|r| {
            check_envelope(ctx, &r)?;
            decoded(reply_fields(&r, |v, o| o.set("sub_id", v.sub_id)), &r)
        }),
        ("QUEUE_EXTEND_RESPONSE" | "QUEUE_COMPLETE_RESPONSE" | "QUEUE_UNSUBSCRIBE_RESPONSE", Dir::S2c) => ack(p, ctx),
        ("QUEUE_NOTIFY", Dir::S2c) => Notify::decode(p).map_err(e).and_then(|m| {
            let mut o = Out::new()
                .set("sub_id", m.sub_id)
                .set("route", m.route)
                .set("ready", m.ready)
                .set("delayed", m.delayed)
                .set("inflight", m.inflight);
            if m.form == CountersForm::Wrapped {
                o = o.bytes("payload", &m.counters_bytes());
            }
            decoded(o.done(), &m)
        }),
        _ => return None,
    })
}

#[allow(dead_code)]
fn _ok_is_payload(r: &ReserveOk<'_>) -> usize {
    r.payload_len()
}
