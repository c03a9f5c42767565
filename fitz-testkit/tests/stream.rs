//! Stream against the in-memory broker through raw frames (BROKER.md §9,
//! §14, §15.6).
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use core::net::SocketAddr;
use core::time::Duration;

use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, ClockMode, CurrentDialect, Dialect, JwtConfig};
use fitz_wire::route::{SelectorAxis, stream_selector};
use fitz_wire::stream::{
    self, CommitMode, Cursor, Filter, FilterClause, FilteredReason, Item, ReadContinuation, write_filter_blob,
};
use fitz_wire::{Envelope, MsgType, Payload, Reply, ServerError};
use support::*;

const R: &str = "stream://acme/app/events";

/// An error reply, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fail {
    envelope: Envelope,
    code: Option<u32>,
    message: String,
}

impl From<ServerError<'_>> for Fail {
    fn from(e: ServerError<'_>) -> Self {
        Fail { envelope: e.envelope, code: e.code, message: e.message.to_owned() }
    }
}

fn plain(message: &str) -> Fail {
    Fail { envelope: Envelope::Uncoded, code: None, message: message.to_owned() }
}

fn coded(code: u32) -> impl Fn(&Fail) -> bool {
    move |f| f.envelope == Envelope::Coded && f.code == Some(code)
}

fn status2(code: u32) -> impl Fn(&Fail) -> bool {
    move |f| f.envelope == Envelope::Status2 && f.code == Some(code)
}

/// One READ item, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum It {
    Event {
        route: String,
        resource: u64,
        area: Option<u64>,
        realm: Option<u64>,
        global: Option<u64>,
        body: Vec<u8>,
        metadata: Option<Vec<u8>>,
        created_at: u64,
    },
    Filtered {
        route: String,
        offset: u64,
        reason: FilteredReason,
    },
}

impl It {
    fn body(&self) -> &[u8] {
        match self {
            It::Event { body, .. } => body,
            It::Filtered { .. } => b"",
        }
    }
}

#[derive(Debug, Clone)]
struct Page {
    items: Vec<It>,
    cursor: Cursor,
}

// The support client's reads are boxed so that the test futures stay small
// whatever those reads hold across their awaits (clippy::large_futures).
async fn reply(c: &mut Raw, ty: MsgType) -> Vec<u8> {
    Box::pin(c.recv_type(ty)).await.expect("a reply").payload
}

async fn quiet(c: &mut Raw, ms: u64) -> bool {
    Box::pin(c.quiet_for(Duration::from_millis(ms))).await
}

async fn closed(c: &mut Raw) -> bool {
    Box::pin(c.closed()).await
}

async fn connect_current(addr: SocketAddr) -> Raw {
    Box::pin(Raw::connect_current(addr, "")).await.0
}

async fn begin(c: &mut Raw, route: &str) -> Result<u64, Fail> {
    c.send(&stream::Begin { route, ingest_metadata: None }).await;
    let p = reply(c, MsgType::STREAM_BEGIN).await;
    match stream::decode_begin_reply(&p).unwrap() {
        Reply::Ok(ok) => {
            assert!(ok.data.is_empty());
            Ok(ok.session_id)
        }
        Reply::Err(e) => Err(e.into()),
    }
}

async fn append_with(
    c: &mut Raw,
    session_id: u64,
    expected_offset: u64,
    body: &[u8],
    metadata: Option<&[u8]>,
    discriminator: Option<&str>,
) -> Result<u64, Fail> {
    c.send(&stream::Append { session_id, expected_offset, body, metadata, discriminator }).await;
    let p = reply(c, MsgType::STREAM_APPEND).await;
    match stream::decode_append_reply(&p).unwrap() {
        Reply::Ok(ok) => Ok(ok.offset().expect("APPEND OK carries the 8-byte offset")),
        Reply::Err(e) => Err(e.into()),
    }
}

async fn append(c: &mut Raw, session_id: u64, expected: u64, body: &[u8]) -> Result<u64, Fail> {
    append_with(c, session_id, expected, body, None, None).await
}

async fn commit(c: &mut Raw, session_id: u64) -> Result<(), Fail> {
    c.send(&stream::Commit { session_id, mode: CommitMode::Sync }).await;
    let p = reply(c, MsgType::STREAM_COMMIT).await;
    stream::decode_commit_reply(&p).unwrap().into_result().map(|_| ()).map_err(Fail::from)
}

async fn rollback(c: &mut Raw, session_id: u64) -> Result<(), Fail> {
    c.send(&stream::Rollback { session_id }).await;
    let p = reply(c, MsgType::STREAM_ROLLBACK).await;
    stream::decode_ack_reply(&p).unwrap().into_result().map_err(Fail::from)
}

/// BEGIN, one APPEND per record (body, discriminator) from `first`, COMMIT.
async fn write(c: &mut Raw, route: &str, first: u64, records: &[(&str, Option<&str>)]) {
    let sid = begin(c, route).await.unwrap();
    for (i, (body, disc)) in records.iter().enumerate() {
        let off = first + i as u64;
        assert_eq!(append_with(c, sid, off, body.as_bytes(), None, *disc).await, Ok(off));
    }
    commit(c, sid).await.unwrap();
}

async fn read_req(c: &mut Raw, r: &stream::Read<'_>) -> Result<Page, Fail> {
    c.send(r).await;
    let p = reply(c, MsgType::STREAM_READ).await;
    match stream::decode_read_reply_for(&p, r.selector).unwrap() {
        Reply::Ok(ok) => {
            let items = ok
                .items()
                .map(|i| match i {
                    Item::Event { route, record } => It::Event {
                        route: route.to_owned(),
                        resource: record.resource_offset,
                        area: record.area_offset,
                        realm: record.realm_offset,
                        global: record.global_offset,
                        body: record.body.to_vec(),
                        metadata: record.metadata.map(<[u8]>::to_vec),
                        created_at: record.created_at,
                    },
                    Item::Filtered { route, offset, reason } => {
                        It::Filtered { route: route.to_owned(), offset, reason }
                    }
                    Item::FilteredRange { .. } => panic!("the broker sends one marker per record"),
                })
                .collect();
            Ok(Page { items, cursor: *ok.cursor().expect("the broker always sends a cursor") })
        }
        Reply::Err(e) => Err(e.into()),
    }
}

async fn read(c: &mut Raw, selector: &str, from: u64, limit: u64) -> Page {
    read_req(c, &stream::Read::new(selector, from, limit)).await.unwrap()
}

fn bodies(p: &Page) -> Vec<String> {
    p.items.iter().map(|i| String::from_utf8(i.body().to_vec()).unwrap()).collect()
}

async fn subscribe(c: &mut Raw, selector: &str) -> Result<u64, Fail> {
    c.send(&stream::Subscribe { selector }).await;
    let p = reply(c, MsgType::STREAM_SUBSCRIBE).await;
    stream::decode_subscribe_reply(&p).unwrap().into_result().map(|ok| ok.sub_id).map_err(Fail::from)
}

fn manual() -> BrokerConfig {
    BrokerConfig { clock: ClockMode::Manual, ..BrokerConfig::anonymous() }
}

// ---------------------------------------------------------------------------
// BROKER.md §14 Stream checklist
// ---------------------------------------------------------------------------

#[tokio::test]
async fn begin_append_commit_returns_offsets() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut c, R).await.unwrap();
    // APPEND OK is `bytes data` holding the assigned resource offset.
    c.send(&stream::Append { session_id: sid, expected_offset: 0, body: b"e0", metadata: None, discriminator: None })
        .await;
    let p = reply(&mut c, MsgType::STREAM_APPEND).await;
    assert_eq!(p, [0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(append(&mut c, sid, 1, b"e1").await, Ok(1));
    assert_eq!(append(&mut c, sid, 2, b"e2").await, Ok(2));
    // COMMIT OK carries a (here empty) `bytes data`, never a bare 00.
    c.send(&stream::Commit { session_id: sid, mode: CommitMode::Buffered }).await;
    assert_eq!(reply(&mut c, MsgType::STREAM_COMMIT).await, [0, 0, 0, 0, 0]);
    // The next session on the resource continues at the committed count;
    // another resource of the same area and realm gets later area/realm
    // offsets, assigned at COMMIT.
    let next = begin(&mut c, R).await.unwrap();
    assert_ne!(next, sid, "append-session ids are never reused");
    assert_eq!(append(&mut c, next, 3, b"e3").await, Ok(3));
    let other = begin(&mut c, "stream://acme/app/other").await.unwrap();
    assert_eq!(append(&mut c, other, 0, b"o0").await, Ok(0));
    commit(&mut c, other).await.unwrap();
    commit(&mut c, next).await.unwrap();
    let page = read(&mut c, "stream://**", 0, 10).await;
    let offsets: Vec<_> = page
        .items
        .iter()
        .map(|i| match i {
            It::Event { route, resource, area, realm, global, .. } => {
                (route.as_str(), *resource, area.unwrap(), realm.unwrap(), global.unwrap())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        offsets,
        [(R, 0, 0, 0, 0), (R, 1, 1, 1, 1), (R, 2, 2, 2, 2), ("stream://acme/app/other", 0, 3, 3, 3), (R, 3, 4, 4, 4),]
    );
}

#[tokio::test]
async fn ordered_read_pages_through_committed_records() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut c, R).await.unwrap();
    assert_eq!(append_with(&mut c, sid, 0, b"r0", Some(b"meta"), Some("kind.a")).await, Ok(0));
    assert_eq!(append(&mut c, sid, 1, b"r1").await, Ok(1));
    commit(&mut c, sid).await.unwrap();
    write(&mut c, R, 2, &[("r2", None), ("r3", None), ("r4", None)]).await;

    let all = read(&mut c, R, 0, 10).await;
    assert_eq!(bodies(&all), ["r0", "r1", "r2", "r3", "r4"]);
    let It::Event { route, resource, global, metadata, created_at, .. } = &all.items[0] else { panic!() };
    assert_eq!((route.as_str(), *resource, *global, metadata.as_deref()), (R, 0, None, Some(&b"meta"[..])));
    assert!(*created_at > 1_600_000_000_000, "created_at is the commit time in UTC milliseconds");
    assert_eq!((all.cursor.last_resource_offset, all.cursor.has_more), (4, false));

    let page = read(&mut c, R, 1, 2).await;
    assert_eq!(bodies(&page), ["r1", "r2"]);
    assert_eq!((page.cursor.last_resource_offset, page.cursor.has_more), (2, true));
    assert_eq!(page.cursor.next_offset(SelectorAxis::Resource, 1), 3);
    let rest = read(&mut c, R, 3, 2).await;
    assert_eq!(bodies(&rest), ["r3", "r4"]);
    assert!(!rest.cursor.has_more);
}

#[tokio::test]
async fn filtered_read_reports_markers() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    write(&mut c, R, 0, &[("alpha", Some("proj.alpha")), ("beta", Some("audit.beta"))]).await;
    let clauses = [FilterClause::Equals("proj.alpha")];
    let mut read = stream::Read::new(R, 0, 10);
    read.filter = Some(Filter::Clauses(&clauses));
    let page = read_req(&mut c, &read).await.unwrap();
    assert_eq!(page.items.len(), 2, "{page:?}");
    assert!(matches!(&page.items[0], It::Event { resource: 0, body, .. } if body == b"alpha"));
    assert_eq!(page.items[1], It::Filtered { route: R.into(), offset: 1, reason: FilteredReason::ServerFilter });
    assert_eq!((page.cursor.last_resource_offset, page.cursor.has_more), (1, false));

    // A filter-only page still advances the cursor; a record without a
    // discriminator is matched as the empty string.
    write(&mut c, R, 2, &[("none", None)]).await;
    let any = ["", "x"];
    let clauses = [FilterClause::AnyOf(&any)];
    let mut read = stream::Read::new(R, 1, 10);
    read.filter = Some(Filter::Clauses(&clauses));
    let page = read_req(&mut c, &read).await.unwrap();
    assert!(matches!(&page.items[0], It::Filtered { offset: 1, .. }));
    assert!(matches!(&page.items[1], It::Event { resource: 2, .. }));
}

#[tokio::test]
async fn offset_conflict_is_2001_and_the_session_stays_open() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    write(&mut c, R, 0, &[("a", None)]).await;
    let sid = begin(&mut c, R).await.unwrap();
    // Legacy dialect: the uncoded envelope, whose message says "conflict".
    assert_eq!(append(&mut c, sid, 0, b"stale").await, Err(plain("concurrency conflict")));
    assert_eq!(append(&mut c, sid, 2, b"ahead").await, Err(plain("concurrency conflict")));
    assert_eq!(append(&mut c, sid, 1, b"b").await, Ok(1));
    assert_eq!(append(&mut c, sid, 1, b"again").await, Err(plain("concurrency conflict")));
    rollback(&mut c, sid).await.unwrap();

    // The current dialect carries the code.
    let b = current().await;
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    let sid = begin(&mut c, R).await.unwrap();
    let e = append(&mut c, sid, 5, b"x").await.unwrap_err();
    assert!(status2(2001)(&e), "{e:?}");
    assert_eq!(append(&mut c, sid, 0, b"x").await, Ok(0));
}

#[tokio::test]
async fn rollback_hides_records() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut c, R).await.unwrap();
    append(&mut c, sid, 0, b"gone").await.unwrap();
    append(&mut c, sid, 1, b"gone too").await.unwrap();
    // Staged records are never visible.
    assert!(read(&mut c, R, 0, 10).await.items.is_empty());
    rollback(&mut c, sid).await.unwrap();
    assert!(read(&mut c, R, 0, 10).await.items.is_empty());
    assert_eq!(rollback(&mut c, sid).await, Err(plain("session not found")), "the session ended");
    // The resource is free again and still starts at 0.
    write(&mut c, R, 0, &[("kept", None)]).await;
    assert_eq!(bodies(&read(&mut c, R, 0, 10).await), ["kept"]);
}

#[tokio::test]
async fn last_returns_the_newest_record() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    c.send(&stream::Last { route: R }).await;
    assert_eq!(reply(&mut c, MsgType::STREAM_LAST).await, [0], "empty stream: nothing after the status");
    write(&mut c, R, 0, &[("first", None), ("last-one", None)]).await;
    c.send(&stream::Last { route: R }).await;
    let p = reply(&mut c, MsgType::STREAM_LAST).await;
    let Reply::Ok(ok) = stream::decode_last_reply(&p).unwrap() else { panic!() };
    let rec = ok.record.unwrap();
    assert_eq!(
        (rec.resource_offset, rec.body, rec.area_offset, rec.realm_offset),
        (1, &b"last-one"[..], Some(1), Some(1))
    );
    for wildcard in ["stream://acme/app/*", "stream://**"] {
        c.send(&stream::Last { route: wildcard }).await;
        assert_eq!(reply(&mut c, MsgType::STREAM_LAST).await, [0], "{wildcard}");
    }
}

#[tokio::test]
async fn metadata_reports_record_count() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let meta = |p: Vec<u8>| match stream::decode_metadata_reply(&p).unwrap() {
        Reply::Ok(ok) => ok.metadata,
        Reply::Err(e) => panic!("{e}"),
    };
    c.send(&stream::GetMetadata { route: R }).await;
    let empty = meta(reply(&mut c, MsgType::STREAM_GET_METADATA).await).unwrap();
    assert_eq!((empty.first_offset, empty.last_offset, empty.record_count), (None, None, 0));
    write(&mut c, "stream://acme/app/before", 0, &[("x", None)]).await;
    write(&mut c, R, 0, &[("a", None), ("b", None)]).await;
    c.send(&stream::GetMetadata { route: R }).await;
    let m = meta(reply(&mut c, MsgType::STREAM_GET_METADATA).await).unwrap();
    assert_eq!((m.first_offset, m.last_offset, m.record_count), (Some(0), Some(1), 2));
    assert_eq!((m.max_batch_events, m.max_batch_bytes, m.ttl_seconds), (10_000, 16 << 20, None));
    assert_eq!((m.area_watermark, m.realm_watermark), (3, 3));
    c.send(&stream::GetMetadata { route: "stream://acme/*/*" }).await;
    assert_eq!(meta(reply(&mut c, MsgType::STREAM_GET_METADATA).await), None, "wildcard: empty OK");
}

#[tokio::test]
async fn read_beyond_the_watermark_is_an_empty_success() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    write(&mut c, R, 0, &[("a", None), ("b", None)]).await;
    for from in [2, 100, u64::MAX] {
        let p = read(&mut c, R, from, 10).await;
        assert!(p.items.is_empty());
        assert_eq!((p.cursor.last_resource_offset, p.cursor.has_more), (from, false));
        assert_eq!((p.cursor.last_area_offset, p.cursor.last_realm_offset), (None, None));
    }
    let p = read(&mut c, R, 0, 0).await;
    assert!(p.items.is_empty() && !p.cursor.has_more, "limit 0: empty success");
    let p = read(&mut c, "stream://acme/app/never-written", 0, 10).await;
    assert!(p.items.is_empty() && !p.cursor.has_more);
    let p = read(&mut c, "stream://**", 7, 10).await;
    assert!(p.items.is_empty() && p.cursor.last_global_offset.is_none() && p.cursor.captured_watermark == Some(2));
}

#[tokio::test]
async fn commit_notify_json_has_the_expected_fields() {
    let b = Broker::start(manual()).await.unwrap();
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    write(&mut c, "stream://older/x/y", 0, &[("o", None)]).await;
    let sub = subscribe(&mut w, "stream://fresh/**").await.unwrap();
    assert_eq!(subscribe(&mut w, "stream://fresh/**").await, Ok(sub), "idempotent");
    let exact = subscribe(&mut w, "stream://fresh/area/res").await.unwrap();
    write(&mut c, "stream://fresh/area/res", 0, &[("one", None)]).await;
    // Debounced: nothing before the 25 ms window of broker time ends.
    assert!(quiet(&mut w, 100).await);
    b.advance(Duration::from_millis(30));
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = reply(&mut w, MsgType::STREAM_NOTIFY).await;
        let n = stream::Notify::decode(&n).unwrap();
        assert_eq!(n.route, "stream://fresh/area/res", "the concrete route");
        let json: serde_json::Value = serde_json::from_slice(n.payload).unwrap();
        got.push((n.sub_id, json));
    }
    got.sort_by_key(|(id, _)| *id);
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [sub, exact], "one NOTIFY per subscription");
    let expected = serde_json::json!({
        "event": "committed",
        "first_resource_offset": 0, "last_resource_offset": 0,
        "first_area_offset": 0, "last_area_offset": 0,
        "first_realm_offset": 0, "last_realm_offset": 0,
        "first_global_offset": 1, "last_global_offset": 1,
        "batch_size": 1,
    });
    assert_eq!(got[0].1, expected);
    assert_eq!(got[1].1, expected);
    w.send(&stream::Unsubscribe { selector: "stream://fresh/area/res" }).await;
    assert_eq!(reply(&mut w, MsgType::STREAM_UNSUBSCRIBE).await, [0]);

    // Rapid commits on one resource: one NOTIFY covering the whole range.
    write(&mut c, "stream://fresh/area/res", 1, &[("two", None), ("three", None)]).await;
    b.advance(Duration::from_millis(10));
    write(&mut c, "stream://fresh/area/res", 3, &[("four", None)]).await;
    assert!(quiet(&mut w, 100).await);
    b.advance(Duration::from_millis(20));
    let n = reply(&mut w, MsgType::STREAM_NOTIFY).await;
    let n = stream::Notify::decode(&n).unwrap();
    let s = n.summary();
    assert_eq!(n.sub_id, sub);
    assert_eq!(s.event, "committed", "never watermark_advanced");
    assert_eq!((s.first_resource_offset, s.last_resource_offset, s.batch_size), (1, 3, 3));
    assert_eq!((s.first_area_offset, s.last_area_offset, s.first_global_offset, s.last_global_offset), (1, 3, 2, 4));
    assert!(quiet(&mut w, 100).await, "exactly one NOTIFY");

    // No NOTIFY for other realms, rollbacks or after UNSUBSCRIBE.
    write(&mut c, "stream://elsewhere/a/b", 0, &[("x", None)]).await;
    let sid = begin(&mut c, "stream://fresh/area/res").await.unwrap();
    append(&mut c, sid, 4, b"rolled back").await.unwrap();
    rollback(&mut c, sid).await.unwrap();
    w.send(&stream::Unsubscribe { selector: "stream://fresh/**" }).await;
    assert_eq!(reply(&mut w, MsgType::STREAM_UNSUBSCRIBE).await, [0]);
    write(&mut c, "stream://fresh/area/res", 4, &[("five", None)]).await;
    b.advance(Duration::from_millis(100));
    assert!(quiet(&mut w, 150).await);
}

// ---------------------------------------------------------------------------
// Selectors, axes and layouts (stream-read-conformance fixture)
// ---------------------------------------------------------------------------

/// Records, in commit (global) order.
const DATA: [(&str, &str); 6] = [
    ("stream://realm/area/resource", "a0"),
    ("stream://realm/area/resource", "a1"),
    ("stream://realm/other/resource", "b0"),
    ("stream://elsewhere/area/resource", "c0"),
    ("stream://realm/area/second", "d0"),
    ("stream://realm/area/resource", "a2"),
];

/// The ten selectors of the fixture with their axis, and what each sees.
const SELECTORS: [(&str, SelectorAxis, &[&str]); 10] = [
    ("stream://realm/area/resource", SelectorAxis::Resource, &["a0", "a1", "a2"]),
    ("stream://realm/area/*", SelectorAxis::Area, &["a0", "a1", "d0", "a2"]),
    ("stream://realm/*/resource", SelectorAxis::Realm, &["a0", "a1", "b0", "a2"]),
    ("stream://realm/*/*", SelectorAxis::Realm, &["a0", "a1", "b0", "d0", "a2"]),
    ("stream://realm/**", SelectorAxis::Realm, &["a0", "a1", "b0", "d0", "a2"]),
    ("stream://*/area/resource", SelectorAxis::Global, &["a0", "a1", "c0", "a2"]),
    ("stream://*/area/*", SelectorAxis::Global, &["a0", "a1", "c0", "d0", "a2"]),
    ("stream://*/*/resource", SelectorAxis::Global, &["a0", "a1", "b0", "c0", "a2"]),
    ("stream://*/*/*", SelectorAxis::Global, &["a0", "a1", "b0", "c0", "d0", "a2"]),
    ("stream://**", SelectorAxis::Global, &["a0", "a1", "b0", "c0", "d0", "a2"]),
];

async fn load(c: &mut Raw) {
    for (route, body) in DATA {
        let sid = begin(c, route).await.unwrap();
        c.send(&stream::GetMetadata { route }).await;
        let p = reply(c, MsgType::STREAM_GET_METADATA).await;
        let Reply::Ok(m) = stream::decode_metadata_reply(&p).unwrap() else { panic!() };
        let next = m.metadata.unwrap().record_count;
        append(c, sid, next, body.as_bytes()).await.unwrap();
        commit(c, sid).await.unwrap();
    }
}

fn axis_offset(item: &It, axis: SelectorAxis) -> u64 {
    let It::Event { resource, area, realm, global, .. } = item else { panic!("{item:?}") };
    match axis {
        SelectorAxis::Resource => *resource,
        SelectorAxis::Area => area.unwrap(),
        SelectorAxis::Realm => realm.unwrap(),
        SelectorAxis::Global => global.unwrap(),
    }
}

#[tokio::test]
async fn selectors_read_on_their_axis_and_layout() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    load(&mut c).await;
    for (selector, axis, want) in SELECTORS {
        assert_eq!(stream_selector(selector), Some(axis), "{selector}");
        // One page with everything: axis order, layout by selector.
        let all = read(&mut c, selector, 0, 100).await;
        assert_eq!(bodies(&all), want, "{selector}");
        let offsets: Vec<u64> = all.items.iter().map(|i| axis_offset(i, axis)).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{selector}: ascending on its axis: {offsets:?}");
        for item in &all.items {
            let It::Event { global, .. } = item else { panic!() };
            assert_eq!(global.is_some(), axis == SelectorAxis::Global, "{selector}: extended layout only for global");
        }
        assert_eq!(all.cursor.last_offset(axis), offsets.last().copied(), "{selector}");
        assert!(!all.cursor.has_more);
        assert_eq!(all.cursor.captured_watermark.is_some(), axis == SelectorAxis::Global);

        // Paging two at a time with the fixture's next-offset rule (and
        // the continuation values of global reads) sees the same records.
        let (mut from, mut seen, mut cont) = (0u64, Vec::new(), ReadContinuation::default());
        for _ in 0..10 {
            let mut r = stream::Read::new(selector, from, 2);
            if axis == SelectorAxis::Global {
                r.continuation = Some(cont);
            }
            let page = read_req(&mut c, &r).await.unwrap();
            seen.extend(bodies(&page));
            if let Some(first) = page.items.first().map(|i| axis_offset(i, axis)) {
                assert!(first >= from, "{selector}: from_offset is on the axis");
            }
            from = page.cursor.next_offset(axis, from);
            cont = page.cursor.continuation();
            if !page.cursor.has_more {
                break;
            }
        }
        assert_eq!(seen, want, "{selector}: paged");
        // Starting in the middle of the axis.
        let mid = read(&mut c, selector, offsets[1], 100).await;
        assert_eq!(bodies(&mid), want[1..], "{selector}: from the second axis offset");
    }
}

#[tokio::test]
async fn invalid_selectors_are_rejected_with_2010() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for selector in [
        "stream://realm/area",
        "stream://realm/area/resource/extra",
        "stream://realm/**/resource",
        "stream://realm/a*ea/resource",
        "stream:///area/resource",
        "notice://realm/area/resource",
        "stream://realm/area/**",
        "stream://*/**",
    ] {
        let e = read_req(&mut c, &stream::Read::new(selector, 0, 10)).await.unwrap_err();
        assert!(coded(2010)(&e), "READ {selector}: {e:?}");
        assert_eq!(subscribe(&mut c, selector).await, Err(plain("invalid stream selector")), "SUBSCRIBE {selector}");
    }
    // Quota: the 129th distinct wildcard selector is refused.
    for i in 0..128 {
        subscribe(&mut c, &format!("stream://r{i}/**")).await.unwrap();
    }
    assert_eq!(subscribe(&mut c, "stream://r128/**").await, Err(plain("subscription limit exceeded")));
    assert!(subscribe(&mut c, "stream://r0/**").await.is_ok(), "a duplicate is answered before the quota");
    assert!(subscribe(&mut c, R).await.is_ok(), "exact selectors do not count");
}

#[tokio::test]
async fn global_reads_pin_the_captured_watermark() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    write(&mut c, R, 0, &[("g0", None), ("g1", None), ("g2", None)]).await;
    let first = read(&mut c, "stream://**", 0, 2).await;
    assert_eq!(bodies(&first), ["g0", "g1"]);
    let cur = first.cursor;
    assert_eq!((cur.last_global_offset, cur.has_more, cur.captured_watermark), (Some(1), true, Some(3)));
    let fingerprint = cur.cursor_fingerprint.unwrap();
    write(&mut c, R, 3, &[("g3", None), ("g4", None)]).await;

    // The next page stays within the snapshot of the first one.
    let mut r = stream::Read::new("stream://**", 2, 10);
    r.continuation = Some(cur.continuation());
    let second = read_req(&mut c, &r).await.unwrap();
    assert_eq!(bodies(&second), ["g2"]);
    assert_eq!(second.cursor.captured_watermark, Some(3));
    assert_eq!(second.cursor.cursor_fingerprint, Some(fingerprint), "stable for (selector, filter)");
    assert!(second.cursor.has_more, "later commits are still pending");
    // An exhausted snapshot is replaced by a new one.
    let mut r = stream::Read::new("stream://**", 3, 10);
    r.continuation = Some(second.cursor.continuation());
    let third = read_req(&mut c, &r).await.unwrap();
    assert_eq!(bodies(&third), ["g3", "g4"]);
    assert_eq!((third.cursor.captured_watermark, third.cursor.has_more), (Some(5), false));

    // The canonical spelling has the same fingerprint; another selector or
    // filter does not, and echoing its continuation is a bad bound.
    let canon = read(&mut c, "stream://*/*/*", 0, 1).await;
    assert_eq!(canon.cursor.cursor_fingerprint, Some(fingerprint));
    let other = read(&mut c, "stream://*/app/*", 0, 1).await;
    assert_ne!(other.cursor.cursor_fingerprint, Some(fingerprint));
    let mut r = stream::Read::new("stream://*/app/*", 1, 10);
    r.continuation = Some(cur.continuation());
    let e = read_req(&mut c, &r).await.unwrap_err();
    assert!(coded(2004)(&e), "{e:?}");
    let clauses = [FilterClause::StartsWith("g")];
    let mut r = stream::Read::new("stream://**", 1, 10);
    r.filter = Some(Filter::Clauses(&clauses));
    r.continuation = Some(cur.continuation());
    assert!(coded(2004)(&read_req(&mut c, &r).await.unwrap_err()));
    let mut r = stream::Read::new("stream://**", 1, 10);
    r.continuation = Some(ReadContinuation { cursor_fingerprint: Some(fingerprint), captured_watermark: Some(99) });
    assert!(coded(2004)(&read_req(&mut c, &r).await.unwrap_err()), "a watermark from the future");
}

#[tokio::test]
async fn max_bytes_and_the_record_limit_stop_pages_early() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let body = [7u8; 100];
    let sid = begin(&mut c, R).await.unwrap();
    for i in 0..3 {
        append(&mut c, sid, i, &body).await.unwrap();
    }
    commit(&mut c, sid).await.unwrap();
    for (max_bytes, n) in [(1, 1), (200, 1), (400, 2), (10_000, 3)] {
        let mut r = stream::Read::new(R, 0, 10);
        r.max_bytes = Some(max_bytes);
        let page = read_req(&mut c, &r).await.unwrap();
        assert_eq!((page.items.len(), page.cursor.has_more), (n, n < 3), "max_bytes {max_bytes}");
    }
    // Records near the record limit: one per page, never an error.
    let big = vec![1u8; 65_000];
    let sid = begin(&mut c, R).await.unwrap();
    append(&mut c, sid, 3, &big).await.unwrap();
    append(&mut c, sid, 4, &big).await.unwrap();
    commit(&mut c, sid).await.unwrap();
    let page = read(&mut c, R, 3, 10).await;
    assert_eq!((page.items.len(), page.cursor.has_more), (1, true));
    let page = read(&mut c, "stream://**", 4, 10).await;
    assert_eq!((page.items.len(), page.cursor.has_more, page.cursor.last_global_offset), (1, false, Some(4)));
    // A record that could never fit a page is refused at APPEND.
    let sid = begin(&mut c, R).await.unwrap();
    assert_eq!(append(&mut c, sid, 5, &[0u8; 65_450]).await, Err(plain("event too large")));
    assert_eq!(append(&mut c, sid, 5, b"small").await, Ok(5), "the session stays usable");
}

// ---------------------------------------------------------------------------
// Append-session errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn second_begin_on_an_open_resource_is_2002() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut a, R).await.unwrap();
    assert_eq!(begin(&mut a, R).await, Err(plain("session already active")), "same session");
    assert_eq!(begin(&mut c, R).await, Err(plain("session already active")), "another session");
    assert!(begin(&mut c, "stream://acme/app/other").await.is_ok(), "other resources are independent");
    append(&mut a, sid, 0, b"x").await.unwrap();
    commit(&mut a, sid).await.unwrap();
    assert!(begin(&mut c, R).await.is_ok(), "free again after COMMIT");

    let b = current().await;
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    begin(&mut c, R).await.unwrap();
    let e = begin(&mut c, R).await.unwrap_err();
    assert!(status2(2002)(&e), "{e:?}");
}

#[tokio::test]
async fn foreign_session_id_is_2003() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut a, R).await.unwrap();
    let not_found = Err(plain("session not found"));
    assert_eq!(append(&mut c, sid, 0, b"x").await, not_found);
    assert_eq!(commit(&mut c, sid).await, Err(plain("session not found")));
    assert_eq!(rollback(&mut c, sid).await, Err(plain("session not found")));
    assert_eq!(append(&mut c, 9_999, 0, b"x").await, Err(plain("session not found")), "unknown id");
    // The owner's session is untouched.
    assert_eq!(append(&mut a, sid, 0, b"mine").await, Ok(0));
    commit(&mut a, sid).await.unwrap();

    let b = current().await;
    let mut a = connect_current(b.tcp_addr().unwrap()).await;
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    let sid = begin(&mut a, R).await.unwrap();
    for e in [
        append(&mut c, sid, 0, b"x").await.unwrap_err(),
        commit(&mut c, sid).await.unwrap_err(),
        rollback(&mut c, sid).await.unwrap_err(),
    ] {
        assert!(status2(2003)(&e), "{e:?}");
    }
}

#[tokio::test]
async fn empty_commit_is_rejected_and_the_session_stays_open() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut c, R).await.unwrap();
    assert_eq!(commit(&mut c, sid).await, Err(plain("empty batch")));
    assert_eq!(append(&mut c, sid, 0, b"late").await, Ok(0));
    commit(&mut c, sid).await.unwrap();
    assert_eq!(bodies(&read(&mut c, R, 0, 10).await), ["late"]);
}

#[tokio::test]
async fn filter_errors_2006_and_2007_keep_the_connection_open() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    write(&mut c, R, 0, &[("a", Some("x"))]).await;
    let cases: [(&[u8], u32); 4] = [
        (b"\x01\xf1\x00\x00\x00\x00", 2006),
        (b"\x00\xf2", 2006),
        (b"\x00\xf1\x00\x00\x00\x01\x04", 2007),
        (b"\x00\xf1\x00\x00\x00\x01\x00\x00\x00\x00\x09ab", 2007),
    ];
    for (blob, code) in cases {
        let mut r = stream::Read::new(R, 0, 10);
        r.filter = Some(Filter::Raw(blob));
        let e = read_req(&mut c, &r).await.unwrap_err();
        assert!(coded(code)(&e), "{blob:?}: {e:?}");
    }
    // Still open, and a valid raw blob works.
    let mut buf = [0u8; 32];
    let blob = write_filter_blob(&[FilterClause::NotEquals("x")], &mut buf).unwrap();
    let mut r = stream::Read::new(R, 0, 10);
    r.filter = Some(Filter::Raw(blob));
    let page = read_req(&mut c, &r).await.unwrap();
    assert!(matches!(page.items.as_slice(), [It::Filtered { offset: 0, .. }]));
}

#[tokio::test]
async fn current_dialect_uses_status2_errors() {
    let b = current().await;
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    let sid = begin(&mut c, R).await.unwrap();
    let e = commit(&mut c, sid).await.unwrap_err();
    assert!(status2(2012)(&e) && e.message == "empty batch", "{e:?}");
    // READ domain errors too; the reply carries the request's label.
    let mut r = stream::Read::new(R, 0, 10);
    r.filter = Some(Filter::Raw(b"\x09\x09"));
    c.send_labelled(Some(41), &r).await;
    let rec = Box::pin(c.recv_one()).await.unwrap();
    assert_eq!(rec.label, Some(41));
    let Reply::Err(e) = stream::decode_read_reply_for(&rec.payload, R).unwrap() else { panic!() };
    assert!(status2(2006)(&e.into()));
    let e = read_req(&mut c, &stream::Read::new("stream://a/b", 0, 1)).await.unwrap_err();
    assert!(status2(2010)(&e), "{e:?}");
    assert!(status2(2010)(&subscribe(&mut c, "stream://a/**/b").await.unwrap_err()));
    // Successes are unchanged.
    assert_eq!(append(&mut c, sid, 0, b"x").await, Ok(0));
    commit(&mut c, sid).await.unwrap();
    let sub = subscribe(&mut c, R).await.unwrap();
    c.send(&stream::Subscribe { selector: R }).await;
    let p = reply(&mut c, MsgType::STREAM_SUBSCRIBE).await;
    assert_eq!(p.len(), 10, "the 9-byte OK form unless sdk_compat");
    assert_eq!(
        stream::decode_subscribe_reply(&p).unwrap(),
        Reply::Ok(stream::SubscribeOk { sub_id: sub, empty_data: false })
    );

    // The knob switches back to status 1: plain, coded for READ.
    let cfg = BrokerConfig {
        dialect: Dialect::Current,
        current: CurrentDialect { stream_status2: false, ..CurrentDialect::default() },
        ..BrokerConfig::anonymous()
    };
    let b = Broker::start(cfg).await.unwrap();
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    let sid = begin(&mut c, R).await.unwrap();
    assert_eq!(commit(&mut c, sid).await, Err(plain("empty batch")));
    let e = read_req(&mut c, &stream::Read::new("stream://a/b", 0, 1)).await.unwrap_err();
    assert!(coded(2010)(&e), "{e:?}");
}

#[tokio::test]
async fn sdk_compat_subscribe_ok_carries_an_empty_bytes() {
    let cfg = BrokerConfig { dialect: Dialect::Current, sdk_compat: true, ..BrokerConfig::anonymous() };
    let b = Broker::start(cfg).await.unwrap();
    let mut c = connect_current(b.tcp_addr().unwrap()).await;
    c.send(&stream::Subscribe { selector: "stream://acme/**" }).await;
    let p = reply(&mut c, MsgType::STREAM_SUBSCRIBE).await;
    assert_eq!(p.len(), 14);
    assert_eq!(&p[10..], [0, 0, 0, 0]);
    let Reply::Ok(ok) = stream::decode_subscribe_reply(&p).unwrap() else { panic!() };
    assert!(ok.empty_data && ok.sub_id > 0);
}

#[tokio::test]
async fn read_only_permission_denies_begin_with_coded_2009() {
    let cfg = BrokerConfig::anonymous().with_auth(AuthMode::Jwt(JwtConfig::official("dev-test-secret")));
    let b = Broker::start(cfg).await.unwrap();
    let token = TokenSpec::official().with_permissions(&["stream://**#read"]).sign();
    let mut c = Raw::connect(b.tcp_addr().unwrap(), &token).await;
    let e = begin(&mut c, R).await.unwrap_err();
    assert!(coded(2009)(&e) && e.message == "unauthorized: permission denied", "{e:?}");
    assert!(read(&mut c, R, 0, 10).await.items.is_empty(), "READ needs only Read");
    assert!(subscribe(&mut c, "stream://**").await.is_ok());
}

// ---------------------------------------------------------------------------
// Session lifecycle
// ---------------------------------------------------------------------------

#[tokio::test]
async fn disconnect_aborts_the_append_session() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut a, R).await.unwrap();
    append(&mut a, sid, 0, b"never committed").await.unwrap();
    assert_eq!(begin(&mut c, R).await, Err(plain("session already active")));
    drop(a);
    let mut fresh = None;
    for _ in 0..50 {
        if let Ok(id) = begin(&mut c, R).await {
            fresh = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = fresh.expect("BEGIN succeeds once the owner is gone");
    // The staged record was discarded: the stream still starts at 0.
    assert_eq!(append(&mut c, fresh, 0, b"new").await, Ok(0));
    commit(&mut c, fresh).await.unwrap();
    assert_eq!(bodies(&read(&mut c, R, 0, 10).await), ["new"]);
}

#[tokio::test]
async fn malformed_stream_frame_closes_only_that_session() {
    let b = legacy().await;
    let mut good = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let sid = begin(&mut good, R).await.unwrap();
    // A BEGIN whose route cannot be read: nothing to authorize, close.
    let mut bad = Raw::connect(b.tcp_addr().unwrap(), "").await;
    bad.send_frame(&[0xff, 0x02, 0x58, 0x00, 0x02, 0x00, 0x00]).await;
    assert!(closed(&mut bad).await);
    // A BEGIN route that is not realm/area/resource also closes.
    let mut bad = Raw::connect(b.tcp_addr().unwrap(), "").await;
    bad.send(&stream::Begin { route: "stream://only/two", ingest_metadata: None }).await;
    assert!(closed(&mut bad).await);
    // A record whose payload runs past its frame.
    let mut bad = Raw::connect(b.tcp_addr().unwrap(), "").await;
    bad.send_frame(&[0xff, 0x02, 0x5c, 0x00, 0x30, 0x00]).await;
    assert!(closed(&mut bad).await);
    // The other session keeps its append session and works on.
    assert_eq!(append(&mut good, sid, 0, b"fine").await, Ok(0));
    commit(&mut good, sid).await.unwrap();
    assert_eq!(bodies(&read(&mut good, R, 0, 10).await), ["fine"]);
}
