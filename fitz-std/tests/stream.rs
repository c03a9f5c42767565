//! Streams against fitz-testkit on every leg of the matrix (see support).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use fitz_std::Error;
use fitz_std::core::ops::stream::{
    Clause, CommitMode, Extra, FilteredReason, PageItem, Query, is_conflict, is_session_active,
};
use fitz_testkit::{Broker, BrokerConfig, Dialect};
use fitz_wire::route::SelectorAxis;
use fitz_wire::{Domain, MsgType};

/// Generous bound for anything the broker pushes.
const WAIT: Duration = Duration::from_secs(10);

/// `stream://<realm>/<leg>-<realm>/<name>`: an area of its own for this
/// leg and run, so wildcard and global selectors see only this test's
/// records (the realm alone repeats the area names of other runs).
fn own_area(leg: &support::Leg, area: &str) -> (String, String) {
    let any = leg.route("stream", "x");
    let realm = any.trim_start_matches("stream://").split('/').next().unwrap().to_owned();
    (realm.clone(), format!("{}-{area}-{realm}", leg.slug()))
}

/// The code the current test broker sends (status 2) or `None` for the
/// legacy one's uncoded envelope; `None` check skipped for a real broker.
fn assert_stream_code(leg: &support::Leg, e: &Error, code: u32) {
    let Error::Server(f) = e else { panic!("{}: not a server error: {e:?}", leg.name) };
    assert_eq!(f.domain, Some(Domain::Stream), "{e:?}");
    match leg.dialect {
        Some(Dialect::Current) => assert_eq!(f.code, Some(code), "{e:?}"),
        Some(Dialect::Legacy) => assert_eq!(f.code, None, "{e:?}"),
        None => assert!(f.code.is_none_or(|c| c == code), "{e:?}"),
    }
}

fn bodies<'a>(it: impl Iterator<Item = &'a Bytes>) -> Vec<Vec<u8>> {
    it.map(|b| b.to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_sessions() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let s = c.stream();
        let route = leg.route("stream", "append");
        assert_eq!(s.last(&route).await.unwrap(), None);
        let md = s.metadata(&route).await.unwrap().unwrap();
        assert_eq!((md.record_count, md.first_offset, md.last_offset), (0, None, None));

        let a = s.begin(&route).await.unwrap();
        assert_eq!(a.append(0, b"e0").await.unwrap(), Some(0));
        let extra = Extra { metadata: b"m1", discriminator: "d1" };
        assert_eq!(a.append_with(1, b"e1", extra).await.unwrap(), Some(1));
        // Optimistic concurrency: a wrong expected offset is a conflict and
        // the session stays usable.
        let conflict = a.append(7, b"x").await.unwrap_err();
        assert!(is_conflict(&conflict), "{conflict:?}");
        assert_stream_code(&leg, &conflict, 2001);
        assert_eq!(a.append(2, b"e2").await.unwrap(), Some(2));
        // One append session per resource.
        let busy = s.begin(&route).await.err().expect("second BEGIN must fail");
        assert!(is_session_active(&busy), "{busy:?}");
        assert_stream_code(&leg, &busy, 2002);
        a.commit_with(CommitMode::Sync).await.unwrap();

        let last = s.last(&route).await.unwrap().unwrap();
        assert_eq!((last.resource_offset, last.body.as_ref()), (2, &b"e2"[..]));
        assert_eq!(last.global_offset, None);
        let md = s.metadata(&route).await.unwrap().unwrap();
        assert_eq!((md.record_count, md.first_offset, md.last_offset), (3, Some(0), Some(2)));

        // Rollback discards.
        let a = s.begin_with(&route, b"ingest").await.unwrap();
        a.append(3, b"gone").await.unwrap();
        a.rollback().await.unwrap();
        // A dropped session is rolled back: the resource is free again.
        {
            let a = s.begin(&route).await.unwrap();
            a.append(3, b"dropped").await.unwrap();
        }
        let a = s.begin(&route).await.unwrap();
        // An empty batch is refused (and the session rolled back).
        let empty = a.commit().await.unwrap_err();
        assert!(matches!(&empty, Error::Server(f) if f.domain == Some(Domain::Stream)), "{empty:?}");
        let a = s.begin(&route).await.unwrap();
        assert_eq!(a.append(3, b"e3").await.unwrap(), Some(3));
        a.commit().await.unwrap();
        let md = s.metadata(&route).await.unwrap().unwrap();
        assert_eq!(md.record_count, 4);
        let all = s.read_page(&Query::new(&route)).await.unwrap();
        let got: Vec<_> = all.events().map(|e| e.record.body.to_vec()).collect();
        assert_eq!(got, vec![b"e0".to_vec(), b"e1".to_vec(), b"e2".to_vec(), b"e3".to_vec()]);
        let second = all.events().nth(1).unwrap();
        assert_eq!(second.record.metadata.as_deref(), Some(&b"m1"[..]));

        // Local checks: nothing is sent for a route a broker cannot take.
        let wild = leg.route("stream", "*");
        assert!(matches!(s.begin(&wild).await, Err(Error::Invalid(_))));
        assert!(matches!(s.last("stream://a/b").await, Err(Error::Invalid(_))));
        // A wildcard LAST / GET_METADATA is answered empty.
        assert_eq!(s.last(&wild).await.unwrap(), None);
        assert_eq!(s.metadata(&wild).await.unwrap(), None);
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_with_filters_and_cursors() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let s = c.stream();
        let route = leg.route("stream", "read");
        let a = s.begin(&route).await.unwrap();
        for (i, d) in ["a", "b", "a", "b", "a"].into_iter().enumerate() {
            let body = format!("r{i}");
            let off = a.append_with(i as u64, body.as_bytes(), Extra { discriminator: d, ..Extra::default() });
            assert_eq!(off.await.unwrap(), Some(i as u64));
        }
        a.commit().await.unwrap();

        // One page with everything.
        let page = s.read_page(&Query::new(&route)).await.unwrap();
        assert_eq!((page.len(), page.has_more(), page.axis()), (5, false, SelectorAxis::Resource));
        assert_eq!(page.next().offset(), 5);
        for (i, e) in page.events().enumerate() {
            assert_eq!(e.route(), route);
            assert_eq!(e.record.resource_offset, i as u64);
            assert_eq!(e.record.body.as_ref(), format!("r{i}").as_bytes());
            assert!(e.record.area_offset.is_some() && e.record.global_offset.is_none());
        }

        // Continuing from each page's cursor.
        let mut q = Query::new(&route).limit(2);
        let mut sizes = Vec::new();
        let mut offsets = Vec::new();
        loop {
            let page = s.read_page(&q).await.unwrap();
            sizes.push(page.len());
            offsets.extend(page.events().map(|e| e.record.resource_offset));
            q = q.from(page.next());
            if !page.has_more() {
                break;
            }
        }
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        assert_eq!(q.from.offset(), 5);

        // A filter: non-matching records come back as markers.
        let eq_a = [Clause::Equals("a")];
        let page = s.read_page(&Query::new(&route).filter(&eq_a)).await.unwrap();
        let kinds: Vec<(bool, u64)> = page
            .items()
            .map(|i| match i {
                PageItem::Event(e) => (true, e.record.resource_offset),
                PageItem::Filtered { offset, reason, .. } => {
                    assert_eq!(reason, FilteredReason::ServerFilter);
                    (false, offset)
                }
                PageItem::FilteredRange { from_offset, to_offset, .. } => panic!("range {from_offset}..{to_offset}"),
            })
            .collect();
        assert_eq!(kinds, vec![(true, 0), (false, 1), (true, 2), (false, 3), (true, 4)]);
        assert!(page.items().all(|i| i.route() == route));
        let cursor = page.cursor().unwrap();
        assert_eq!((cursor.last_resource_offset, cursor.has_more), (4, false));

        // Events only: markers hidden, the position still moves past them.
        let any_b = ["b"];
        for clauses in [[Clause::AnyOf(&any_b)], [Clause::NotEquals("a")], [Clause::StartsWith("b")]] {
            let ev = s.read(&Query::new(&route).filter(&clauses)).await.unwrap();
            let got: Vec<u64> = ev.iter().map(|e| e.record.resource_offset).collect();
            assert_eq!(got, vec![1, 3], "{clauses:?}");
            assert_eq!((ev.len(), ev.has_more(), ev.next().offset()), (2, false, 5));
        }
        let both = [Clause::StartsWith("a"), Clause::NotEquals("a")];
        let none = s.read(&Query::new(&route).filter(&both)).await.unwrap();
        assert!(none.is_empty());
        assert_eq!(none.next().offset(), 5);
        let filtered_page = none.into_page();
        assert_eq!(filtered_page.len(), 5);

        // Filter and cursor together.
        let eq_b = [Clause::Equals("b")];
        let ev = s.read(&Query::new(&route).filter(&eq_b).limit(2)).await.unwrap();
        assert_eq!(ev.iter().map(|e| e.record.resource_offset).collect::<Vec<_>>(), vec![1]);
        assert!(ev.has_more());
        let ev = s.read(&Query::new(&route).filter(&eq_b).limit(2).from(ev.next())).await.unwrap();
        assert_eq!(ev.iter().map(|e| e.record.resource_offset).collect::<Vec<_>>(), vec![3]);

        // A byte budget stops the page early (one item at least).
        let small = s.read_page(&Query::new(&route).max_bytes(1)).await.unwrap();
        assert_eq!((small.len(), small.has_more(), small.next().offset()), (1, true, 1));
        // At the watermark: an empty success, position kept.
        let end = s.read_page(&Query::new(&route).from_offset(5)).await.unwrap();
        assert!(end.is_empty() && !end.has_more());
        assert_eq!(end.next().offset(), 5);
        // Invalid selectors never leave the client.
        for bad in ["stream://r/a/**", "stream://r/a", "stream://*/**", "notice://r/a/s"] {
            assert!(matches!(s.read_page(&Query::new(bad)).await, Err(Error::Invalid(_))), "{bad}");
        }
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_marker_conformance() {
    // CS-016 / BROKER.md §9.2: records `proj.alpha`, `audit.beta`, filter
    // Equals `proj.alpha`, READ from 0 limit 10.
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let s = c.stream();
        let route = leg.route("stream", "cs016");
        let a = s.begin(&route).await.unwrap();
        a.append_with(0, b"e0", Extra { discriminator: "proj.alpha", ..Extra::default() }).await.unwrap();
        a.append_with(1, b"e1", Extra { discriminator: "audit.beta", ..Extra::default() }).await.unwrap();
        a.commit().await.unwrap();
        let f = [Clause::Equals("proj.alpha")];
        let page = s.read_page(&Query::new(&route).limit(10).filter(&f)).await.unwrap();
        let items: Vec<_> = page.items().collect();
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0], PageItem::Event(e) if e.record.resource_offset == 0 && e.record.body == "e0"));
        assert!(matches!(&items[1], PageItem::Filtered { offset: 1, reason: FilteredReason::ServerFilter, .. }));
        let cursor = page.cursor().unwrap();
        assert_eq!((cursor.last_resource_offset, cursor.has_more), (1, false));
        assert_eq!(page.next().offset(), 2);
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn area_and_global_reads() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let s = c.stream();
        let (realm, area) = own_area(&leg, "rd");
        let a1 = format!("stream://{realm}/{area}/a1");
        let a2 = format!("stream://{realm}/{area}/a2");
        for (route, bodies) in [(&a1, &["x0", "x1"][..]), (&a2, &["y0"][..]), (&a1, &["x2"][..])] {
            let next = s.metadata(route).await.unwrap().unwrap().record_count;
            let ap = s.begin(route).await.unwrap();
            for (i, b) in bodies.iter().enumerate() {
                ap.append(next + i as u64, b.as_bytes()).await.unwrap();
            }
            ap.commit().await.unwrap();
        }
        let want_bodies = vec![b"x0".to_vec(), b"x1".to_vec(), b"y0".to_vec(), b"x2".to_vec()];

        // Area axis: commit order across the area's resources.
        let area_sel = format!("stream://{realm}/{area}/*");
        let page = s.read_page(&Query::new(&area_sel)).await.unwrap();
        assert_eq!(page.axis(), SelectorAxis::Area);
        let evs: Vec<_> = page.events().collect();
        assert_eq!(bodies(evs.iter().map(|e| &e.record.body)), want_bodies);
        let routes: Vec<&str> = evs.iter().map(|e| e.route()).collect();
        assert_eq!(routes, vec![a1.as_str(), a1.as_str(), a2.as_str(), a1.as_str()]);
        let area_offsets: Vec<_> = evs.iter().map(|e| e.record.area_offset.unwrap()).collect();
        assert!(area_offsets.windows(2).all(|w| w[1] == w[0] + 1), "{area_offsets:?}");
        let first = s.read_page(&Query::new(&area_sel).limit(3).from_offset(area_offsets[0])).await.unwrap();
        assert!(first.has_more());
        assert_eq!(first.next().offset(), area_offsets[2] + 1);
        let rest = s.read_page(&Query::new(&area_sel).from(first.next())).await.unwrap();
        assert_eq!(rest.events().map(|e| e.record.body.to_vec()).collect::<Vec<_>>(), vec![b"x2".to_vec()]);

        // Replay: every page until caught up.
        let mut replay = s.replay(Query::new(&area_sel).limit(1).from_offset(area_offsets[0]));
        let mut seen = Vec::new();
        let mut pages = 0;
        while let Some(page) = replay.next().await {
            let page = page.unwrap();
            pages += 1;
            seen.extend(page.events().map(|e| e.record.body.to_vec()));
        }
        assert_eq!(seen, want_bodies);
        assert!(replay.caught_up() && pages >= 4);
        assert_eq!(replay.position().offset(), area_offsets[3] + 1);

        // Global axis (extended layout) with continuation values.
        let global = format!("stream://*/{area}/*");
        let mut q = Query::new(&global).limit(2);
        let mut seen = Vec::new();
        let mut globals = Vec::new();
        let mut first_global_page = None;
        loop {
            let page = s.read_page(&q).await.unwrap();
            assert_eq!(page.axis(), SelectorAxis::Global);
            for e in page.events() {
                seen.push(e.record.body.to_vec());
                globals.push(e.record.global_offset.expect("global reads carry global offsets"));
            }
            first_global_page.get_or_insert(page.next());
            q = q.from(page.next());
            if !page.has_more() {
                break;
            }
        }
        assert_eq!(seen, want_bodies);
        assert!(globals.windows(2).all(|w| w[0] < w[1]), "{globals:?}");
        let one = format!("stream://*/{area}/a2");
        let only = s.read(&Query::new(&one)).await.unwrap();
        assert_eq!(only.iter().map(|e| e.record.body.to_vec()).collect::<Vec<_>>(), vec![b"y0".to_vec()]);
        // Continuation values belong to their selector and filter.
        if leg.dialect.is_some() {
            let e = s.read_page(&Query::new(&one).from(first_global_page.unwrap())).await.unwrap_err();
            assert!(matches!(&e, Error::Server(f) if f.code == Some(2004)), "{e:?}");
        }
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sees_commits() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let s = c.stream();
        let (realm, area) = own_area(&leg, "watch");
        let route = format!("stream://{realm}/{area}/events");
        let mut exact = s.subscribe(&route).await.unwrap();
        let mut wild = s.subscribe(&format!("stream://{realm}/{area}/*")).await.unwrap();
        assert!(matches!(s.subscribe("stream://r/**/s").await, Err(Error::Invalid(_))));

        let a = s.begin(&route).await.unwrap();
        a.append(0, b"n0").await.unwrap();
        a.append(1, b"n1").await.unwrap();
        a.commit().await.unwrap();
        for sub in [&mut exact, &mut wild] {
            let n = tokio::time::timeout(WAIT, sub.next()).await.expect("notification").unwrap().unwrap();
            assert_eq!(n.route(), route);
            let sum = n.summary();
            assert_eq!(sum.event, "committed");
            assert_eq!((sum.first_resource_offset, sum.last_resource_offset, sum.batch_size), (0, 1, 2));
            assert!(n.json().starts_with(b"{"));
        }
        // The follow pattern: the notification is a wake-up, the log is read.
        let ev = s.read(&Query::new(&route)).await.unwrap();
        assert_eq!(ev.len(), 2);
        c.close().await;
    })
    .await;
}

/// Every leg, reached through a relay that can cut the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_session_is_stale_after_reconnect() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        // `scheme://host:port[/path]`: the relay stands in for host:port.
        let (scheme, rest) = leg.url.split_once("://").unwrap();
        if scheme == "wss" {
            return; // the relay cannot stand in for a TLS endpoint's name
        }
        let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = tokio::net::lookup_host(addr).await.unwrap().next().unwrap();
        let relay = fitz_testkit::relay::Relay::start(upstream).await.unwrap();
        let url = if scheme == "tcp" { relay.url_tcp() } else { relay.ws_url(&format!("/{path}")) };
        let leg = support::Leg { url, ..leg };
        let c = leg.client().await;
        let s = c.stream();
        let route = leg.route("stream", "stale");
        let mut notes = s.subscribe(&route).await.unwrap();
        let a = s.begin(&route).await.unwrap();
        a.append(0, b"lost").await.unwrap();
        let epoch = c.epoch();
        relay.cut_all();
        tokio::time::timeout(WAIT, async {
            while c.epoch() == epoch || c.state() != fitz_std::core::State::Authenticated {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("reconnected");
        assert_eq!(a.append(1, b"x").await.unwrap_err(), Error::StaleHandle);
        drop(a);
        // The broker aborted the session with the connection, so the
        // resource is free and nothing was committed.
        let a = s.begin(&route).await.unwrap();
        assert_eq!(a.append(0, b"kept").await.unwrap(), Some(0));
        a.commit().await.unwrap();
        // The subscription was restored.
        let n = tokio::time::timeout(WAIT, notes.next()).await.expect("notification").unwrap().unwrap();
        assert_eq!((n.route(), n.summary().batch_size), (route.as_str(), 1));
        c.close().await;
    })
    .await;
}

/// Coded errors whatever the operation's usual envelope, with their
/// retryable flag (fitz-testkit only: errors are injected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_keep_their_code() {
    if support::external() {
        eprintln!("skipped: needs fitz-testkit's error injection");
        return;
    }
    for dialect in [Dialect::Legacy, Dialect::Current] {
        let b = Broker::start(BrokerConfig::anonymous().with_dialect(dialect)).await.unwrap();
        let c = fitz_std::Client::builder(b.tcp_url().unwrap())
            .settle_window(Duration::from_millis(150))
            .connect()
            .await
            .unwrap();
        let s = c.stream();
        let route = "stream://acme/inject/log";
        b.inject_error(MsgType::STREAM_READ, Some(2014), "busy");
        let e = s.read_page(&Query::new(route)).await.unwrap_err();
        let Error::Server(f) = &e else { panic!("{e:?}") };
        assert_eq!(
            (f.code, f.retryable, f.domain, f.name()),
            (Some(2014), true, Some(Domain::Stream), Some("ERR_BUSY"))
        );
        let a = s.begin(route).await.unwrap();
        b.inject_error(MsgType::STREAM_APPEND, None, "nope");
        let e = a.append(0, b"x").await.unwrap_err();
        assert!(matches!(&e, Error::Server(f) if f.code.is_none() && f.message == "nope" && !f.retryable), "{e:?}");
        // The connection is fine afterwards.
        assert_eq!(a.append(0, b"x").await.unwrap(), Some(0));
        a.rollback().await.unwrap();
        assert!(s.read_page(&Query::new(route)).await.unwrap().is_empty());
        c.close().await;
    }
}
