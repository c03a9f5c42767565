use fitz_wire::route::SelectorAxis;
use fitz_wire::stream::*;
use fitz_wire::{Payload, Reply, ServerError};
use proptest::prelude::*;

use crate::common::*;

fn commit_mode() -> impl Strategy<Value = CommitMode> {
    prop_oneof![Just(CommitMode::Buffered), Just(CommitMode::Sync)]
}

fn reason() -> impl Strategy<Value = FilteredReason> {
    prop_oneof![
        Just(FilteredReason::Unspecified),
        Just(FilteredReason::ServerFilter),
        Just(FilteredReason::Permission),
        Just(FilteredReason::Projection),
    ]
}

fn layout() -> impl Strategy<Value = PageLayout> {
    prop_oneof![Just(PageLayout::Compatibility), Just(PageLayout::Extended)]
}

/// A segment of a concrete route: non-empty, no `/`, `*` or control characters.
fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._\\-é]{1,8}"
}

fn concrete_route() -> impl Strategy<Value = String> {
    (segment(), segment(), segment()).prop_map(|(r, a, s)| format!("stream://{r}/{a}/{s}"))
}

/// Owned filter clause values; borrowed into [`FilterClause`]s per case.
#[derive(Debug, Clone)]
enum OwnedClause {
    Equals(String),
    NotEquals(String),
    StartsWith(String),
    AnyOf(Vec<String>),
}

fn clause() -> impl Strategy<Value = OwnedClause> {
    prop_oneof![
        text().prop_map(OwnedClause::Equals),
        text().prop_map(OwnedClause::NotEquals),
        text().prop_map(OwnedClause::StartsWith),
        prop::collection::vec(text(), 0..4).prop_map(OwnedClause::AnyOf),
    ]
}

fn anyof_refs(owned: &[OwnedClause]) -> Vec<Vec<&str>> {
    owned
        .iter()
        .map(|c| match c {
            OwnedClause::AnyOf(vs) => vs.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn borrow_clauses<'a>(owned: &'a [OwnedClause], refs: &'a [Vec<&'a str>]) -> Vec<FilterClause<'a>> {
    owned
        .iter()
        .zip(refs)
        .map(|(c, r)| match c {
            OwnedClause::Equals(v) => FilterClause::Equals(v),
            OwnedClause::NotEquals(v) => FilterClause::NotEquals(v),
            OwnedClause::StartsWith(v) => FilterClause::StartsWith(v),
            OwnedClause::AnyOf(_) => FilterClause::AnyOf(r),
        })
        .collect()
}

/// The same clause as seen through a parsed [`FilterSet`].
fn same_clause(parsed: Clause<'_>, built: &FilterClause<'_>) -> bool {
    match (parsed, built) {
        (Clause::Equals(a), FilterClause::Equals(b))
        | (Clause::NotEquals(a), FilterClause::NotEquals(b))
        | (Clause::StartsWith(a), FilterClause::StartsWith(b)) => a == *b,
        (Clause::AnyOf(vs), FilterClause::AnyOf(ws)) => vs.iter().eq(ws.iter().copied()),
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct OwnedRecord {
    resource_offset: u64,
    area_offset: Option<u64>,
    realm_offset: Option<u64>,
    global_offset: Option<u64>,
    body: Vec<u8>,
    metadata: Option<Vec<u8>>,
    created_at: u64,
}

fn record() -> impl Strategy<Value = OwnedRecord> {
    (
        any::<u64>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        bytes(),
        prop::option::of(bytes()),
        any::<u64>(),
    )
        .prop_map(|(resource_offset, area_offset, realm_offset, global_offset, body, metadata, created_at)| {
            OwnedRecord { resource_offset, area_offset, realm_offset, global_offset, body, metadata, created_at }
        })
}

impl OwnedRecord {
    /// The record as it reads back in `layout` (no global offset in the
    /// compatibility layout).
    fn view(&self, layout: PageLayout) -> EventRecord<'_> {
        EventRecord {
            resource_offset: self.resource_offset,
            area_offset: self.area_offset,
            realm_offset: self.realm_offset,
            global_offset: if layout.is_extended() { self.global_offset } else { None },
            body: &self.body,
            metadata: self.metadata.as_deref(),
            created_at: self.created_at,
        }
    }
}

#[derive(Debug, Clone)]
enum OwnedItem {
    Event(String, OwnedRecord),
    Filtered(String, u64, FilteredReason),
    Range(String, u64, u64, FilteredReason),
}

fn item() -> impl Strategy<Value = OwnedItem> {
    prop_oneof![
        (concrete_route(), record()).prop_map(|(r, rec)| OwnedItem::Event(r, rec)),
        (concrete_route(), any::<u64>(), reason()).prop_map(|(r, o, why)| OwnedItem::Filtered(r, o, why)),
        (concrete_route(), any::<u64>(), any::<u64>(), reason())
            .prop_map(|(r, a, b, why)| OwnedItem::Range(r, a, b, why)),
    ]
}

impl OwnedItem {
    fn view(&self, layout: PageLayout) -> Item<'_> {
        match self {
            OwnedItem::Event(route, rec) => Item::Event { route, record: rec.view(layout) },
            OwnedItem::Filtered(route, offset, reason) => Item::Filtered { route, offset: *offset, reason: *reason },
            OwnedItem::Range(route, from_offset, to_offset, reason) => {
                Item::FilteredRange { route, from_offset: *from_offset, to_offset: *to_offset, reason: *reason }
            }
        }
    }
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (
        any::<u64>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<bool>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
    )
        .prop_map(|(r, a, re, g, has_more, fp, wm)| Cursor {
            last_resource_offset: r,
            last_area_offset: a,
            last_realm_offset: re,
            last_global_offset: g,
            has_more,
            cursor_fingerprint: fp,
            captured_watermark: wm,
        })
}

/// The cursor as it reads back in `layout`.
fn cursor_in(c: Cursor, layout: PageLayout) -> Cursor {
    if layout.is_extended() {
        c
    } else {
        Cursor { last_global_offset: None, cursor_fingerprint: None, captured_watermark: None, ..c }
    }
}

fn metadata() -> impl Strategy<Value = StreamMetadata> {
    (any::<Option<u64>>(), any::<Option<u64>>(), any::<[u64; 3]>(), any::<Option<u64>>(), any::<[u64; 2]>()).prop_map(
        |(first_offset, last_offset, [record_count, max_batch_events, max_batch_bytes], ttl_seconds, [aw, rw])| {
            StreamMetadata {
                first_offset,
                last_offset,
                record_count,
                max_batch_events,
                max_batch_bytes,
                ttl_seconds,
                area_watermark: aw,
                realm_watermark: rw,
            }
        },
    )
}

/// Coded, uncoded or status-2 errors (every Stream reply accepts all three).
fn stream_err() -> impl Strategy<Value = (u8, u32, String)> {
    (0u8..3, any::<u32>(), text())
}

fn stream_error((shape, code, msg): &(u8, u32, String)) -> ServerError<'_> {
    match shape {
        0 => ServerError::coded(*code, msg),
        1 => ServerError::uncoded(msg),
        _ => ServerError::status2(*code, msg),
    }
}

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn requests(session_id: u64, offset: u64, limit: u64, route in text(), data in bytes(),
                meta in prop::option::of(bytes()), disc in prop::option::of(text()), mode in commit_mode(),
                max_bytes: Option<u64>, clauses in prop::option::of(prop::collection::vec(clause(), 0..5)),
                raw_filter in prop::option::of(bytes()), continuation in prop::option::of(any::<(Option<u64>, Option<u64>)>()),
                notify_route in concrete_route()) {
        roundtrip!(Begin { route: &route, ingest_metadata: meta.as_deref() }, Begin::decode);
        let append = Append { session_id, expected_offset: offset, body: &data, metadata: meta.as_deref(),
                              discriminator: disc.as_deref() };
        roundtrip!(append, Append::decode);
        roundtrip!(Commit { session_id, mode }, Commit::decode);
        roundtrip!(Rollback { session_id }, Rollback::decode);

        let owned = clauses.unwrap_or_default();
        let refs = anyof_refs(&owned);
        let built = borrow_clauses(&owned, &refs);
        let continuation = continuation.map(|(cursor_fingerprint, captured_watermark)| {
            ReadContinuation { cursor_fingerprint, captured_watermark }
        });
        let read = Read { selector: &route, from_offset: offset, limit, max_bytes,
                          filter: Some(Filter::Clauses(&built)), continuation };
        roundtrip!(read, Read::decode);
        // The broker's view of the filter: the raw blob parses back to the clauses.
        let payload = payload_bytes(&read);
        let decoded = Read::decode(&payload).unwrap();
        let blob = decoded.filter.and_then(|f| f.raw()).unwrap();
        let set = FilterSet::parse(blob).unwrap();
        prop_assert_eq!(set.len() as usize, built.len());
        prop_assert!(set.iter().zip(&built).all(|(p, b)| same_clause(p, b)));
        let mut blob_buf = vec![0u8; blob.len()];
        prop_assert_eq!(write_filter_blob(&built, &mut blob_buf).unwrap(), blob);
        // Any raw blob (valid or not) survives a READ unchanged.
        let raw = Read { filter: raw_filter.as_deref().map(Filter::Raw), ..Read::new(&route, offset, limit) };
        roundtrip!(raw, Read::decode);
        roundtrip!(Read { continuation: None, ..raw }, Read::decode);

        roundtrip!(Last { route: &route }, Last::decode);
        roundtrip!(GetMetadata { route: &route }, GetMetadata::decode);
        roundtrip!(Subscribe { selector: &route }, Subscribe::decode);
        roundtrip!(Unsubscribe { selector: &route }, Unsubscribe::decode);
        roundtrip!(Notify { sub_id: session_id, route: &notify_route, payload: &data }, Notify::decode);
    }

    #[test]
    fn replies(session_id: u64, data in bytes(), opt_data in prop::option::of(bytes()), rec in prop::option::of(record()),
               meta in prop::option::of(metadata()), empty_data: bool, err in stream_err(), use_err: bool) {
        let e = stream_error(&err);
        roundtrip_payload!(pick(use_err, e, BeginOk { session_id, data: &data }), decode_begin_reply);
        let append = AppendOk { data: opt_data.as_deref() };
        roundtrip_payload!(pick(use_err, e, append), decode_append_reply);
        prop_assert_eq!(append.offset(), opt_data.as_deref().and_then(|d| d.try_into().ok()).map(u64::from_be_bytes));
        roundtrip_payload!(pick(use_err, e, CommitOk { data: &data }), decode_commit_reply);
        roundtrip_payload!(if use_err { Reply::Err(e) } else { Reply::Ok(()) }, decode_ack_reply);
        let last = LastOk { record: rec.as_ref().map(|r| r.view(PageLayout::Compatibility)) };
        roundtrip_payload!(pick(use_err, e, last), decode_last_reply);
        roundtrip_payload!(pick(use_err, e, MetadataOk { metadata: meta }), decode_metadata_reply);
        roundtrip_payload!(pick(use_err, e, SubscribeOk { sub_id: session_id, empty_data }), decode_subscribe_reply);
        // READ replies: the bare form in both layouts.
        for l in [PageLayout::Compatibility, PageLayout::Extended] {
            roundtrip_payload!(pick(use_err, e, ReadOk { page: None }), |p| decode_read_reply(p, l));
        }
    }

    #[test]
    fn read_pages(items in prop::collection::vec(item(), 0..8), cur in cursor(), l in layout(),
                  err in stream_err(), use_err: bool, from_offset: u64) {
        let views: Vec<Item<'_>> = items.iter().map(|i| i.view(l)).collect();
        let mut buf = vec![0u8; 8192];
        let written = Items::write_into(views.iter().copied(), l, &mut buf).unwrap();
        prop_assert_eq!(written.len() as usize, items.len());
        let page = Page { items: written, cursor: cursor_in(cur, l) };
        let ok = ReadOk { page: Some(page) };
        let reply = pick(use_err, stream_error(&err), ok);
        roundtrip_payload!(reply, |p| decode_read_reply(p, l));
        let selector = if l.is_extended() { "stream://**" } else { "stream://r/a/s" };
        roundtrip_payload!(reply, |p| decode_read_reply_for(p, selector));
        // The iterator yields the items back.
        let bytes = payload_bytes(&reply);
        if let Reply::Ok(back) = decode_read_reply(&bytes, l).unwrap() {
            let got: Vec<Item<'_>> = back.items().collect();
            prop_assert_eq!(&got, &views);
            prop_assert_eq!(back.cursor(), Some(&cursor_in(cur, l)));
            for axis in [SelectorAxis::Resource, SelectorAxis::Area, SelectorAxis::Realm, SelectorAxis::Global] {
                let want = cursor_in(cur, l).last_offset(axis).and_then(|v| v.checked_add(1)).unwrap_or(from_offset);
                prop_assert_eq!(back.next_offset(axis, from_offset), want);
            }
        }
        // A buffer one byte short refuses the last item and keeps the others.
        if let Some(last) = views.last() {
            let total = written.as_bytes().len();
            let mut short = vec![0u8; total - 1];
            let mut w = PageWriter::new(&mut short, l);
            for v in &views[..views.len() - 1] {
                w.push(v).unwrap();
            }
            prop_assert!(w.push(last).is_err());
            prop_assert_eq!(w.len() as usize, views.len() - 1);
        }
    }
}

/// A JSON value for a summary key: mostly valid numbers, sometimes another type.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        6 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => "[a-z_]{0,12}".prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => prop::collection::vec(any::<u8>(), 0..3).prop_map(|v| serde_json::json!({"nested": [v, {"x": null}]})),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "event",
                "first_resource_offset",
                "last_resource_offset",
                "first_area_offset",
                "last_area_offset",
                "first_realm_offset",
                "last_realm_offset",
                "first_global_offset",
                "last_global_offset",
                "batch_size",
                "previous",
                "watermark",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z_]{1,10}",
    ]
}

/// What fitz-py reports for a JSON object (WIRE.md §11.6, C64).
fn expected_summary(map: &serde_json::Map<String, serde_json::Value>) -> NotifySummary<'_> {
    let mut out = NotifySummary::default();
    match map.get("event") {
        None => {}
        Some(serde_json::Value::String(e)) => out.event = e,
        Some(_) => return NotifySummary::default(),
    }
    let slots: [(&str, &mut u64); 11] = [
        ("first_resource_offset", &mut out.first_resource_offset),
        ("last_resource_offset", &mut out.last_resource_offset),
        ("first_area_offset", &mut out.first_area_offset),
        ("last_area_offset", &mut out.last_area_offset),
        ("first_realm_offset", &mut out.first_realm_offset),
        ("last_realm_offset", &mut out.last_realm_offset),
        ("first_global_offset", &mut out.first_global_offset),
        ("last_global_offset", &mut out.last_global_offset),
        ("batch_size", &mut out.batch_size),
        ("previous", &mut out.previous),
        ("watermark", &mut out.watermark),
    ];
    let mut bad = false;
    for (k, slot) in slots {
        match map.get(k) {
            None => {}
            Some(v) => match v.as_u64() {
                Some(n) if v.is_u64() => *slot = n,
                _ => bad = true,
            },
        }
    }
    if bad { NotifySummary::default() } else { out }
}

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn notify_summary_matches_a_json_parser(entries in prop::collection::vec((json_key(), json_value()), 0..8),
                                            pretty: bool) {
        let map: serde_json::Map<String, serde_json::Value> = entries.into_iter().collect();
        let text = if pretty {
            serde_json::to_string_pretty(&map).unwrap()
        } else {
            serde_json::to_string(&map).unwrap()
        };
        let want = expected_summary(&map);
        prop_assert_eq!(NotifySummary::parse(text.as_bytes()), want);
        // Anything that is not one whole object gives the defaults.
        prop_assert_eq!(NotifySummary::parse(&text.as_bytes()[..text.len() - 1]), NotifySummary::default());
        let wrapped = format!("[{text}]");
        prop_assert_eq!(NotifySummary::parse(wrapped.as_bytes()), NotifySummary::default());
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn json_like_bytes_never_panic(data in "[\\[\\]{}\":,0-9a-zA-Z \\\\.eE+\\-]{0,64}") {
        let _ = NotifySummary::parse(data.as_bytes());
        decode_all(data.as_bytes());
    }
}

never_panics!(decode_all);
