//! Stream (BROKER.md §9, §15.6): append sessions (BEGIN, APPEND, COMMIT,
//! ROLLBACK), offset conflicts with status 2, READ pages on the resource,
//! area and global axes with cursors and filters, LAST, GET_METADATA,
//! commit notifications.

use cntryl_fitz::client_domains::stream::{
    StreamClient, StreamCommitMode, StreamCommitNotification, StreamDiscriminator, StreamFilterClause, StreamFilterSet,
    StreamReadOptions, StreamReadPage, StreamRecord,
};

use super::*;

const S: &str = "stream://interop/orders/o1";
const S2: &str = "stream://interop/orders/o2";
const AREA: &str = "stream://interop/orders/*";

/// Page items as text.
///
/// SDK limitation: `StreamReadPage::items` holds `StreamReadItem`s, but
/// cntryl-fitz 0.2.0 does not export that type (nor `StreamReadCursor`,
/// `StreamFilteredReason`): it lives in a private module, so callers cannot
/// match on events vs filtered markers. Their `Debug` form is the only
/// public view of a marker, so markers are compared through it; events are
/// also read through `StreamClient::read`, which returns `StreamRecord`s.
fn described(page: &StreamReadPage) -> Vec<String> {
    page.items.iter().map(|i| format!("{i:?}")).collect()
}

fn event(route: &str, offset: u64) -> String {
    format!("Event(StreamRecord {{ route: {route:?}, offset: {offset}, ")
}

fn filtered(route: &str, offset: u64) -> String {
    format!("Filtered {{ route: {route:?}, offset: {offset}, reason: Some(ServerFilter) }}")
}

/// Asserts the page items: `Ok(prefix)` for an event, `Err(text)` for a
/// filtered marker.
fn assert_items(page: &StreamReadPage, want: &[Result<String, String>]) {
    let got = described(page);
    assert_eq!(got.len(), want.len(), "items {got:#?}");
    for (g, w) in got.iter().zip(want) {
        match w {
            Ok(prefix) => assert!(g.starts_with(prefix.as_str()), "{g} should start with {prefix}"),
            Err(text) => assert_eq!(g, text),
        }
    }
}

async fn notification(s: &mut cntryl_fitz::client_domains::stream::StreamSubscription) -> StreamCommitNotification {
    next(s, "Stream commit NOTIFY").await.unwrap()
}

fn disc(d: &str) -> StreamDiscriminator {
    StreamDiscriminator::from(d)
}

fn bodies(records: &[StreamRecord]) -> Vec<(&str, u64, &[u8])> {
    records.iter().map(|r| (r.route.as_str(), r.offset, r.body.as_slice())).collect()
}

async fn opts_page(
    stream: &StreamClient,
    sel: &str,
    from: u64,
    limit: u64,
    o: StreamReadOptions<'_>,
) -> StreamReadPage {
    stream.read_page(sel, from, limit, o).await.unwrap()
}

pub(crate) async fn scenario(ctx: &Ctx) {
    let a = ctx.client().await;
    let b = ctx.client().await;
    let (sa, sb) = (a.stream().unwrap(), b.stream().unwrap());

    // SDK defect (WIRE.md C46, DESIGN.md): cntryl-fitz 0.2.0 needs an extra
    // empty `bytes` after the id in the SUBSCRIBE OK (`00 01 u64 00000000`);
    // the broker's 10-byte reply fails its decoder. `sdk_compat` adds the
    // field; without it this SUBSCRIBE (and every check of the commit
    // notifications below) would fail in the SDK.
    let mut watch = sb.subscribe(AREA).await.unwrap();
    let mut exact = sa.subscribe(S).await.unwrap();

    // A never-written stream: LAST is empty, metadata counts 0 (the broker
    // sends no first/last offset; the SDK shows absent as 0, WIRE.md C63).
    assert_eq!(sa.peek(S).await.unwrap(), None);
    let m = sa.metadata(S).await.unwrap();
    assert_eq!((m.record_count, m.first_offset, m.last_offset), (0, 0, 0));

    // BEGIN (with ingest metadata), two APPENDs (the assigned offsets come
    // back), COMMIT. SDK defect (WIRE.md C61): the SDK fails an APPEND OK
    // without the `bytes` after the status; the broker always sends it, and
    // `Some(offset)` below shows it carries the offset.
    let mut session = sa.begin(S, Some(b"ingest")).await.unwrap();
    assert_eq!(session.append(0, b"e0", Some(b"m0"), Some(&disc("proj.alpha"))).await.unwrap(), Some(0));
    assert_eq!(session.append(1, b"e1", None, Some(&disc("audit.beta"))).await.unwrap(), Some(1));
    // Staged records are invisible until COMMIT.
    assert!(sb.read(S, 0, 10, None, None, None).await.unwrap().is_empty());
    session.commit(StreamCommitMode::Buffered).await.unwrap();
    ctx.advance(Duration::from_millis(30)); // the 25 ms notification window
    let n = notification(&mut watch).await;
    assert_eq!(n.route, S, "the concrete route");
    assert_eq!(n.event, "committed");
    assert_eq!(
        (n.first_resource_offset, n.last_resource_offset, n.first_area_offset, n.last_area_offset),
        (0, 1, 0, 1)
    );
    assert_eq!((n.first_realm_offset, n.last_realm_offset, n.batch_size), (0, 1, 2));
    let json: serde_json::Value = serde_json::from_slice(&n.payload).unwrap();
    assert_eq!(json["event"], "committed");
    assert_eq!(notification(&mut exact).await.batch_size, 2);

    // An offset conflict is the coded 2001 under status 2 (§15.6); the
    // session stays open and continues at the right offset.
    let mut session = sa.begin(S, None).await.unwrap();
    let msg = coded(session.append(5, b"bad", None, None).await, 2001, "APPEND at a wrong offset");
    assert!(msg.contains("APPEND failed"), "{msg}");
    coded(session.append(1, b"bad", None, None).await, 2001, "APPEND at a committed offset");
    assert_eq!(session.append(2, b"e2", None, None).await.unwrap(), Some(2));
    // One append session per resource: another BEGIN gets 2002.
    coded(sb.begin(S, None).await, 2002, "BEGIN while a session is active");
    session.commit(StreamCommitMode::Sync).await.unwrap();
    ctx.advance(Duration::from_millis(30));
    let n = notification(&mut watch).await;
    assert_eq!(
        (n.route.as_str(), n.first_resource_offset, n.last_resource_offset, n.first_area_offset, n.batch_size),
        (S, 2, 2, 2, 1)
    );
    notification(&mut exact).await;

    // ROLLBACK discards; nothing is visible and nothing is notified.
    let mut session = sb.begin(S, None).await.unwrap();
    assert_eq!(session.append(3, b"gone", None, None).await.unwrap(), Some(3));
    session.rollback().await.unwrap();
    ctx.advance(Duration::from_millis(30));
    nothing(&mut watch, "no NOTIFY for a rollback").await;
    // An empty commit is refused (status 2, code 2012) and the session stays open.
    let session = sb.begin(S, None).await.unwrap();
    coded(session.commit(StreamCommitMode::Buffered).await, 2012, "COMMIT of an empty batch");
    coded(sb.begin(S, None).await, 2002, "the empty session is still active");

    // Another resource of the area.
    let mut session = sa.begin(S2, None).await.unwrap();
    session.append(0, b"x0", None, None).await.unwrap();
    session.commit(StreamCommitMode::Buffered).await.unwrap();
    ctx.advance(Duration::from_millis(30));
    let n = notification(&mut watch).await;
    assert_eq!((n.route.as_str(), n.first_resource_offset, n.first_area_offset, n.first_realm_offset), (S2, 0, 3, 3));
    nothing(&mut exact, "the exact watch ignores another resource").await;

    // READ: records with their routes, offsets, metadata, axis offsets.
    let records = sb.read(S, 0, 10, None, None, None).await.unwrap();
    assert_eq!(bodies(&records), [(S, 0, b"e0".as_slice()), (S, 1, b"e1"), (S, 2, b"e2")]);
    assert_eq!(records[0].metadata.as_deref(), Some(b"m0".as_slice()));
    assert_eq!(records[1].metadata, None);
    assert_eq!((records[2].area_offset, records[2].realm_offset, records[2].global_offset), (Some(2), Some(2), None));
    assert!(records.iter().all(|r| r.timestamp > 1_600_000_000_000), "UTC ms timestamps");
    // read_page: limit, cursor and has_more; the next page starts at last + 1.
    let p1 = opts_page(&sb, S, 0, 2, StreamReadOptions::default()).await;
    assert_items(&p1, &[Ok(event(S, 0)), Ok(event(S, 1))]);
    assert_eq!((p1.cursor.last_resource_offset, p1.cursor.has_more), (1, true));
    let p2 = opts_page(&sb, S, p1.cursor.last_resource_offset + 1, 2, StreamReadOptions::default()).await;
    assert_items(&p2, &[Ok(event(S, 2))]);
    assert_eq!((p2.cursor.last_resource_offset, p2.cursor.has_more), (2, false));
    // Reading at the watermark: an empty success.
    let p3 = opts_page(&sb, S, 3, 2, StreamReadOptions::default()).await;
    assert!(p3.items.is_empty());
    assert_eq!((p3.cursor.last_resource_offset, p3.cursor.has_more), (3, false));
    // max_bytes always lets the first item through.
    let p = opts_page(&sb, S, 0, 10, StreamReadOptions { max_bytes: Some(1), ..StreamReadOptions::default() }).await;
    assert_items(&p, &[Ok(event(S, 0))]);
    assert!(p.cursor.has_more);

    // A filter: skipped records come back as filtered markers at their
    // offsets (a record without a discriminator compares as "").
    let only_alpha = StreamFilterSet { clauses: vec![StreamFilterClause::Equals("proj.alpha".into())] };
    let p =
        opts_page(&sb, S, 0, 10, StreamReadOptions { filter: Some(&only_alpha), ..StreamReadOptions::default() }).await;
    assert_items(&p, &[Ok(event(S, 0)), Err(filtered(S, 1)), Err(filtered(S, 2))]);
    assert_eq!((p.cursor.last_resource_offset, p.cursor.has_more), (2, false));
    let prefixed = StreamFilterSet {
        clauses: vec![
            StreamFilterClause::StartsWith("a".into()),
            StreamFilterClause::NotEquals("proj.alpha".into()),
            StreamFilterClause::AnyOf(vec!["audit.beta".into(), "x".into()]),
        ],
    };
    let records = sb.read(S, 0, 10, None, Some(&prefixed), None).await.unwrap();
    assert_eq!(bodies(&records), [(S, 1, b"e1".as_slice())]);

    // The area axis: every resource of the area in commit order.
    let p = opts_page(&sb, AREA, 0, 10, StreamReadOptions::default()).await;
    assert_items(&p, &[Ok(event(S, 0)), Ok(event(S, 1)), Ok(event(S, 2)), Ok(event(S2, 0))]);
    assert_eq!((p.cursor.last_area_offset, p.cursor.has_more), (Some(3), false));

    // The global axis: continuation pinned by fingerprint and watermark.
    let g1 = opts_page(&sb, "stream://**", 0, 2, StreamReadOptions::default()).await;
    assert_items(&g1, &[Ok(event(S, 0)), Ok(event(S, 1))]);
    assert!(g1.cursor.has_more);
    let (fingerprint, watermark) = (g1.cursor.cursor_fingerprint, g1.cursor.captured_watermark);
    assert!(fingerprint.is_some() && watermark == Some(4), "{:?}", g1.cursor);
    let next_from = g1.cursor.last_global_offset.unwrap() + 1;
    let g2 = opts_page(
        &sb,
        "stream://**",
        next_from,
        10,
        StreamReadOptions {
            cursor_fingerprint: fingerprint,
            captured_watermark: watermark,
            ..StreamReadOptions::default()
        },
    )
    .await;
    assert_items(&g2, &[Ok(event(S, 2)), Ok(event(S2, 0))]);
    assert_eq!((g2.cursor.last_global_offset, g2.cursor.has_more), (Some(3), false));
    let records = sb.read("stream://**", 0, 10, None, None, None).await.unwrap();
    assert_eq!(records.iter().map(|r| r.global_offset).collect::<Vec<_>>(), [Some(0), Some(1), Some(2), Some(3)]);

    // LAST (peek) and GET_METADATA.
    let last = sb.peek(S).await.unwrap().expect("a last record");
    assert_eq!((last.route.as_str(), last.offset, last.body.as_slice()), (S, 2, b"e2".as_slice()));
    let m = sb.metadata(S).await.unwrap();
    assert_eq!((m.first_offset, m.last_offset, m.record_count), (0, 2, 3));
    assert_eq!((m.max_batch_events, m.max_batch_bytes, m.ttl_seconds), (10_000, 16 * 1024 * 1024, None));
    assert_eq!((m.area_watermark, m.realm_watermark), (4, 4));

    watch.unsubscribe().await.unwrap();
    exact.unsubscribe().await.unwrap();
    // After UNSUBSCRIBE a new subscription works again (a fresh wire id).
    let mut again = sb.subscribe(S2).await.unwrap();
    let mut session = sa.begin(S2, None).await.unwrap();
    session.append(1, b"x1", None, None).await.unwrap();
    session.commit(StreamCommitMode::Buffered).await.unwrap();
    ctx.advance(Duration::from_millis(30));
    let n = notification(&mut again).await;
    assert_eq!((n.route.as_str(), n.first_resource_offset, n.batch_size), (S2, 1, 1));
    again.unsubscribe().await.unwrap();
}
