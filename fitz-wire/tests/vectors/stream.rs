//! Stream vectors (legacy and current).

use fitz_wire::Payload;
use fitz_wire::stream::*;
use serde_json::{Value, json};

use crate::Dir;
use crate::util::*;

/// Selector names across the sets (`selector`, `pattern`, `route`).
const SELECTOR: &[&str] = &["selector", "pattern", "route"];

fn commit_mode(f: &Fields) -> R<CommitMode> {
    match get_str(f, &["mode"])? {
        "buffered" => Ok(CommitMode::Buffered),
        "sync" => Ok(CommitMode::Sync),
        m => Err(format!("unknown commit mode {m}")),
    }
}

fn commit_mode_name(m: CommitMode) -> &'static str {
    match m {
        CommitMode::Buffered => "buffered",
        CommitMode::Sync => "sync",
    }
}

fn reason_name(r: FilteredReason) -> Value {
    match r {
        FilteredReason::Unspecified => Value::Null,
        FilteredReason::ServerFilter => "server_filter".into(),
        FilteredReason::Permission => "permission".into(),
        FilteredReason::Projection => "projection".into(),
    }
}

/// Owned clause values read from a vector.
enum OwnedClause {
    One(&'static str, String),
    AnyOf(Vec<String>),
}

fn clauses_of(v: &Value) -> R<Vec<OwnedClause>> {
    let list = v.as_array().ok_or("filter is not a list")?;
    list.iter()
        .map(|c| {
            let kind = c.get("kind").and_then(Value::as_str).ok_or("clause without kind")?;
            let one = |k: &'static str| -> R<OwnedClause> {
                let value = c.get("value").and_then(Value::as_str).ok_or("clause without value")?;
                Ok(OwnedClause::One(k, value.to_owned()))
            };
            match kind {
                "Equals" | "NotEquals" | "StartsWith" => one(match kind {
                    "Equals" => "Equals",
                    "NotEquals" => "NotEquals",
                    _ => "StartsWith",
                }),
                "AnyOf" => {
                    let vs = c.get("values").and_then(Value::as_array).ok_or("AnyOf without values")?;
                    vs.iter()
                        .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| "AnyOf value is not a string".to_owned()))
                        .collect::<R<Vec<_>>>()
                        .map(OwnedClause::AnyOf)
                }
                k => Err(format!("unknown clause kind {k}")),
            }
        })
        .collect()
}

fn clause_json(c: Clause<'_>) -> Value {
    match c {
        Clause::Equals(v) => json!({"kind": "Equals", "value": v}),
        Clause::NotEquals(v) => json!({"kind": "NotEquals", "value": v}),
        Clause::StartsWith(v) => json!({"kind": "StartsWith", "value": v}),
        Clause::AnyOf(vs) => json!({"kind": "AnyOf", "values": vs.iter().collect::<Vec<_>>()}),
    }
}

fn filter_json(f: Option<&Filter<'_>>) -> R<Value> {
    let Some(f) = f else { return Ok(Value::Null) };
    let blob = f.raw().ok_or("decoded filter is not raw")?;
    let set = FilterSet::parse(blob).map_err(|e| format!("filter: {e}"))?;
    Ok(Value::Array(set.iter().map(clause_json).collect()))
}

fn encode_read(f: &Fields) -> R<Vec<u8>> {
    let owned = match f.get("filter") {
        None | Some(Value::Null) => None,
        Some(v) => Some(clauses_of(v)?),
    };
    let any_of: Vec<Vec<&str>> = owned
        .iter()
        .flatten()
        .map(|c| match c {
            OwnedClause::AnyOf(vs) => vs.iter().map(String::as_str).collect(),
            OwnedClause::One(..) => Vec::new(),
        })
        .collect();
    let clauses: Option<Vec<FilterClause<'_>>> = owned.as_ref().map(|cs| {
        cs.iter()
            .zip(&any_of)
            .map(|(c, vs)| match c {
                OwnedClause::One("Equals", v) => FilterClause::Equals(v),
                OwnedClause::One("NotEquals", v) => FilterClause::NotEquals(v),
                OwnedClause::One(_, v) => FilterClause::StartsWith(v),
                OwnedClause::AnyOf(_) => FilterClause::AnyOf(vs),
            })
            .collect()
    });
    let read = Read {
        selector: get_str(f, SELECTOR)?,
        from_offset: get_u64(f, &["from_offset", "start_offset"])?,
        limit: get_u64(f, &["limit"])?,
        max_bytes: get_opt_u64(f, &["max_bytes"])?,
        filter: clauses.as_deref().map(Filter::Clauses),
        // Clients always send both trailing presence bytes.
        continuation: Some(ReadContinuation {
            cursor_fingerprint: get_opt_u64(f, &["cursor_fingerprint"])?,
            captured_watermark: get_opt_u64(f, &["captured_watermark"])?,
        }),
    };
    record(&read)
}

pub fn encode(name: &str, f: &Fields, _ctx: &Ctx<'_>) -> Option<R<Vec<u8>>> {
    let run = || -> R<Vec<u8>> {
        match name {
            "STREAM_BEGIN" => {
                let meta = get_opt_bytes(f, &["ingest_metadata"])?;
                record(&Begin { route: get_str(f, &["route"])?, ingest_metadata: meta.as_deref() })
            }
            "STREAM_APPEND" => {
                let body = get_bytes(f, &["body"])?;
                let metadata = get_opt_bytes(f, &["metadata"])?;
                record(&Append {
                    session_id: get_u64(f, &["session_id"])?,
                    expected_offset: get_u64(f, &["expected_offset"])?,
                    body: &body,
                    metadata: metadata.as_deref(),
                    discriminator: get_opt_str(f, &["discriminator"])?,
                })
            }
            "STREAM_COMMIT" => record(&Commit { session_id: get_u64(f, &["session_id"])?, mode: commit_mode(f)? }),
            "STREAM_ROLLBACK" => record(&Rollback { session_id: get_u64(f, &["session_id"])? }),
            "STREAM_READ" => encode_read(f),
            "STREAM_LAST" => record(&Last { route: get_str(f, &["route"])? }),
            "STREAM_GET_METADATA" => record(&GetMetadata { route: get_str(f, &["route"])? }),
            "STREAM_SUBSCRIBE" => record(&Subscribe { selector: get_str(f, SELECTOR)? }),
            "STREAM_UNSUBSCRIBE" => record(&Unsubscribe { selector: get_str(f, SELECTOR)? }),
            _ => Err(format!("no stream encoder for {name}")),
        }
    };
    is_request(name, "STREAM_").then(run)
}

/// A record as the peers show it: `offset` / `timestamp` names.
fn record_json(r: &EventRecord<'_>) -> Value {
    json!({
        "offset": r.resource_offset,
        "area_offset": r.area_offset,
        "realm_offset": r.realm_offset,
        "global_offset": r.global_offset,
        "body": to_hex(r.body),
        "metadata": r.metadata.map(to_hex),
        "timestamp": r.created_at,
    })
}

fn item_json(i: Item<'_>) -> Value {
    match i {
        Item::Event { route, record } => json!({"kind": "event", "route": route, "record": record_json(&record)}),
        Item::Filtered { route, offset, reason } => {
            json!({"kind": "filtered", "route": route, "offset": offset, "reason": reason_name(reason)})
        }
        Item::FilteredRange { route, from_offset, to_offset, reason } => json!({
            "kind": "filtered_range",
            "route": route,
            "from_offset": from_offset,
            "to_offset": to_offset,
            "reason": reason_name(reason),
        }),
    }
}

/// The cursor as the peers show it: a page without one reads as zeros.
fn cursor_json(c: Option<&Cursor>) -> Value {
    let c = c.copied().unwrap_or_default();
    json!({
        "last_resource_offset": c.last_resource_offset,
        "last_area_offset": c.last_area_offset,
        "last_realm_offset": c.last_realm_offset,
        "last_global_offset": c.last_global_offset,
        "cursor_fingerprint": c.cursor_fingerprint,
        "captured_watermark": c.captured_watermark,
        "has_more": c.has_more,
    })
}

/// The page layout from the vector's context: `extended`, else derived
/// from `request_selector`, else compatibility (error replies only).
fn layout(ctx: &Ctx<'_>) -> R<PageLayout> {
    if let Some(ext) = ctx.bool("extended") {
        return Ok(if ext { PageLayout::Extended } else { PageLayout::Compatibility });
    }
    match ctx.str("request_selector") {
        Some(s) => PageLayout::for_selector(s).ok_or_else(|| format!("invalid request selector {s}")),
        None => Ok(PageLayout::Compatibility),
    }
}

fn summary_json(s: &NotifySummary<'_>) -> Value {
    json!({
        "event": s.event,
        "first_resource_offset": s.first_resource_offset,
        "last_resource_offset": s.last_resource_offset,
        "first_area_offset": s.first_area_offset,
        "last_area_offset": s.last_area_offset,
        "first_realm_offset": s.first_realm_offset,
        "last_realm_offset": s.last_realm_offset,
        "batch_size": s.batch_size,
    })
}

pub fn decode(name: &str, dir: Dir, p: &[u8], ctx: &Ctx<'_>) -> Option<R<Decoded>> {
    Some(match (name, dir) {
        ("STREAM_BEGIN", Dir::C2s) => {
            message(Begin::decode(p), |m, o| o.set("route", m.route).opt_bytes("ingest_metadata", m.ingest_metadata))
        }
        ("STREAM_APPEND", Dir::C2s) => message(Append::decode(p), |m, o| {
            o.set("session_id", m.session_id)
                .set("expected_offset", m.expected_offset)
                .bytes("body", m.body)
                .opt_bytes("metadata", m.metadata)
                .opt_str("discriminator", m.discriminator)
        }),
        ("STREAM_COMMIT", Dir::C2s) => {
            message(Commit::decode(p), |m, o| o.set("session_id", m.session_id).set("mode", commit_mode_name(m.mode)))
        }
        ("STREAM_ROLLBACK", Dir::C2s) => message(Rollback::decode(p), |m, o| o.set("session_id", m.session_id)),
        ("STREAM_READ", Dir::C2s) => Read::decode(p).map_err(|e| e.to_string()).and_then(|m| {
            let cont = m.continuation.unwrap_or_default();
            let o = Out::new()
                .alias(SELECTOR, m.selector)
                .alias(&["from_offset", "start_offset"], m.from_offset)
                .set("limit", m.limit)
                .opt_u64("max_bytes", m.max_bytes)
                .set("filter", filter_json(m.filter.as_ref())?)
                .opt_u64("cursor_fingerprint", cont.cursor_fingerprint)
                .opt_u64("captured_watermark", cont.captured_watermark);
            decoded(o.done(), &m)
        }),
        ("STREAM_LAST", Dir::C2s) => message(Last::decode(p), |m, o| o.set("route", m.route)),
        ("STREAM_GET_METADATA", Dir::C2s) => message(GetMetadata::decode(p), |m, o| o.set("route", m.route)),
        ("STREAM_SUBSCRIBE", Dir::C2s) => message(Subscribe::decode(p), |m, o| o.alias(SELECTOR, m.selector)),
        ("STREAM_UNSUBSCRIBE", Dir::C2s) => message(Unsubscribe::decode(p), |m, o| o.alias(SELECTOR, m.selector)),
        ("STREAM_BEGIN_RESPONSE", Dir::S2c) => {
            reply(decode_begin_reply(p), ctx, |v, o| o.set("session_id", v.session_id).bytes("data", v.data))
        }
        ("STREAM_APPEND_RESPONSE", Dir::S2c) => {
            reply(decode_append_reply(p), ctx, |v, o| o.opt_u64("offset", v.offset()).opt_bytes("data", v.data))
        }
        ("STREAM_COMMIT_RESPONSE", Dir::S2c) => reply(decode_commit_reply(p), ctx, |v, o| o.bytes("data", v.data)),
        ("STREAM_READ_RESPONSE", Dir::S2c) => layout(ctx).and_then(|l| {
            reply(decode_read_reply(p, l), ctx, |v, o| {
                let items: Vec<Value> = v.items().map(item_json).collect();
                o.set("items", items).set("cursor", cursor_json(v.cursor()))
            })
        }),
        ("STREAM_LAST_RESPONSE", Dir::S2c) => {
            reply(decode_last_reply(p), ctx, |v, o| o.set("record", v.record.as_ref().map_or(Value::Null, record_json)))
        }
        // The peers' API view (WIRE.md C63): absent first/last offsets
        // and a missing block read as 0 for the offsets and the count.
        ("STREAM_GET_METADATA_RESPONSE", Dir::S2c) => reply(decode_metadata_reply(p), ctx, |v, o| match &v.metadata {
            Some(m) => o
                .set("first_offset", m.first_offset.unwrap_or(0))
                .set("last_offset", m.last_offset.unwrap_or(0))
                .set("record_count", m.record_count)
                .set("max_batch_events", m.max_batch_events)
                .set("max_batch_bytes", m.max_batch_bytes)
                .opt_u64("ttl_seconds", m.ttl_seconds)
                .set("area_watermark", m.area_watermark)
                .set("realm_watermark", m.realm_watermark),
            None => o
                .set("first_offset", 0)
                .set("last_offset", 0)
                .set("record_count", 0)
                .set("max_batch_events", Value::Null)
                .set("max_batch_bytes", Value::Null)
                .set("ttl_seconds", Value::Null)
                .set("area_watermark", Value::Null)
                .set("realm_watermark", Value::Null),
        }),
        ("STREAM_SUBSCRIBE_RESPONSE", Dir::S2c) => reply(decode_subscribe_reply(p), ctx, |v, o| {
            o.set("sub_id", v.sub_id).set("data", if v.empty_data { Value::from("") } else { Value::Null })
        }),
        ("STREAM_ROLLBACK_RESPONSE" | "STREAM_UNSUBSCRIBE_RESPONSE", Dir::S2c) => ack(decode_ack_reply(p), ctx),
        ("STREAM_NOTIFY", Dir::S2c) => message(Notify::decode(p), |m, o| {
            o.set("sub_id", m.sub_id)
                .set("route", m.route)
                .alias(&["body", "payload"], to_hex(m.payload))
                .set("decoded", summary_json(&m.summary()))
        }),
        _ => return None,
    })
}
