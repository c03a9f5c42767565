//! Schedule (BROKER.md §10, §15.6): CREATE (upsert), invalid cron, LIST
//! (total_count, paging), list_by_selector, LIST_V2, CREATE_BATCH, CANCEL,
//! SUBSCRIBE with a cron fire driven by the manual clock, UNSUBSCRIBE.

use cntryl_fitz::client_domains::schedule::{ScheduleDeliveryMode, ScheduleEntry, ScheduleSubscription};

use super::*;

const MINUTE: &str = "schedule://interop/jobs/minute/run";
const NIGHTLY: &str = "schedule://interop/jobs/nightly/run";
const REPORT: &str = "schedule://interop/other/report/run";
// Schedules other than MINUTE use 29 February crons: valid, but they cannot
// fire during the few minutes of broker time a run covers (except on that
// day at that hour), so every NOTIFY below comes from MINUTE.

fn entry(route: &str, cron: &str, mode: ScheduleDeliveryMode, payload: &str) -> ScheduleEntry {
    ScheduleEntry { route: route.into(), cron: cron.into(), delivery_mode: mode, payload: payload.as_bytes().to_vec() }
}

fn routes(entries: &[ScheduleEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.route.as_str()).collect()
}

/// Waits for a single-delivery fire and returns which registration got it
/// ("a" or "b"); the other one must get nothing.
async fn one_of(a: &mut ScheduleSubscription, b: &mut ScheduleSubscription) -> &'static str {
    let (who, n) = tokio::select! {
        n = a.next() => ("a", n),
        n = b.next() => ("b", n),
        () = tokio::time::sleep(WAIT) => panic!("single delivery: nothing within {WAIT:?}"),
    };
    let n = n.expect("subscription open").unwrap();
    assert_eq!((n.route.as_str(), n.payload.as_slice()), (MINUTE, b"one".as_slice()));
    let other = if who == "a" { b } else { a };
    nothing(other, "single delivery reaches one registration").await;
    who
}

pub(crate) async fn scenario(ctx: &Ctx) {
    let a = ctx.client().await;
    let b = ctx.client().await;
    let (sa, sb) = (a.schedule().unwrap(), b.schedule().unwrap());

    let empty = sa.list(None, None).await.unwrap();
    assert_eq!((empty.total_count, empty.entries.len()), (0, 0));

    // CREATE returns the route (no id on the wire, WIRE.md C28).
    let id = sa.create(MINUTE, "* * * * *", ScheduleDeliveryMode::Broadcast, b"tick").await.unwrap();
    assert_eq!(id, MINUTE);

    // An invalid cron: the plain envelope carries no code, so the SDK
    // reports a domain error with code 0 and the broker's message.
    for bad in ["not a cron", "61 * * * *", "* * * *", "0 0 31 2 *"] {
        let e = kind(sa.create(NIGHTLY, bad, ScheduleDeliveryMode::Single, b"").await, FitzErrorKind::Domain, bad);
        match e {
            FitzError::Domain { code: 0, message } => {
                assert!(message.starts_with("invalid cron expression"), "{bad}: {message}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }

    // LIST: total_count and the entry as created.
    let page = sb.list(None, None).await.unwrap();
    assert_eq!(page.total_count, 1);
    assert_eq!(page.entries, [entry(MINUTE, "* * * * *", ScheduleDeliveryMode::Broadcast, "tick")]);

    // CREATE_BATCH (706): all entries are created...
    sa.create_batch(&[
        entry(NIGHTLY, "0 2 29 2 *", ScheduleDeliveryMode::Single, "n"),
        entry(REPORT, "30 6 29 2 *", ScheduleDeliveryMode::Broadcast, "r"),
    ])
    .await
    .unwrap();
    // ...or none when one entry is invalid (plain error, code 0).
    let (code, msg) = domain(
        sa.create_batch(&[
            entry("schedule://interop/other/extra/run", "0 3 29 2 *", ScheduleDeliveryMode::Single, "x"),
            entry("schedule://interop/other/broken/run", "nope", ScheduleDeliveryMode::Single, "x"),
        ])
        .await,
        "CREATE_BATCH with an invalid entry",
    );
    assert_eq!(code, 0, "{msg}");
    assert!(msg.starts_with("invalid cron expression"), "{msg}");

    // LIST paging in route order; total_count counts everything.
    let page = sb.list(None, None).await.unwrap();
    assert_eq!(page.total_count, 3);
    assert_eq!(routes(&page.entries), [MINUTE, NIGHTLY, REPORT]);
    assert_eq!(page.entries[1], entry(NIGHTLY, "0 2 29 2 *", ScheduleDeliveryMode::Single, "n"));
    let page = sb.list(Some(1), Some(1)).await.unwrap();
    assert_eq!((page.total_count, routes(&page.entries)), (3, vec![NIGHTLY]));
    let page = sb.list(Some(3), Some(10)).await.unwrap();
    assert_eq!((page.total_count, page.entries.len()), (3, 0));

    // CREATE is an upsert by route.
    sa.create(NIGHTLY, "0 4 29 2 *", ScheduleDeliveryMode::Broadcast, b"n2").await.unwrap();
    let page = sb.list(Some(1), Some(1)).await.unwrap();
    assert_eq!(page.entries, [entry(NIGHTLY, "0 4 29 2 *", ScheduleDeliveryMode::Broadcast, "n2")]);
    assert_eq!(page.total_count, 3);

    // list_by_selector pages LIST and filters client-side.
    let jobs = sb.list_by_selector("schedule://interop/jobs/*/run").await.unwrap();
    assert_eq!(routes(&jobs), [MINUTE, NIGHTLY]);
    let all = sb.list_by_selector("schedule://interop/**").await.unwrap();
    assert_eq!(all.len(), 3);

    // LIST_V2 (707): an opaque continuation string.
    let v1 = sb.list_v2(None, Some(2)).await.unwrap();
    assert_eq!(routes(&v1.entries), [MINUTE, NIGHTLY]);
    assert!(v1.has_more);
    let cont = v1.continuation.expect("a continuation");
    let v2 = sb.list_v2(Some(&cont), Some(2)).await.unwrap();
    assert_eq!(routes(&v2.entries), [REPORT]);
    assert!(!v2.has_more && v2.continuation.is_none(), "{v2:?}");
    // A forged continuation: the coded 7004 of LIST_V2.
    coded(sb.list_v2(Some("not-a-cursor"), Some(2)).await, 7004, "forged LIST_V2 continuation");

    // SUBSCRIBE (4-segment patterns). A `* * * * *` schedule fires once per
    // minute boundary: after 61 s of broker time, exactly one NOTIFY per
    // matching registration, with the fired route and the payload; a
    // pattern that matches nothing due gets nothing.
    let mut watch_b = sb.subscribe("schedule://interop/jobs/*/*").await.unwrap();
    let mut watch_a = sa.subscribe(MINUTE).await.unwrap();
    let mut other = sb.subscribe("schedule://interop/other/**").await.unwrap();
    ctx.advance(Duration::from_secs(61));
    let n = next(&mut watch_b, "schedule NOTIFY").await.unwrap();
    assert_eq!((n.route.as_str(), n.payload.as_slice()), (MINUTE, b"tick".as_slice()));
    let n = next(&mut watch_a, "broadcast to a second session").await.unwrap();
    assert_eq!((n.route.as_str(), n.payload.as_slice()), (MINUTE, b"tick".as_slice()));
    nothing(&mut watch_b, "exactly one fire").await;
    nothing(&mut other, "nothing due under other/").await;

    // Single delivery: one registration per fire, rotating.
    sa.create(MINUTE, "* * * * *", ScheduleDeliveryMode::Single, b"one").await.unwrap();
    ctx.advance(Duration::from_secs(60));
    let first = one_of(&mut watch_a, &mut watch_b).await;
    ctx.advance(Duration::from_secs(60));
    let second = one_of(&mut watch_a, &mut watch_b).await;
    assert_ne!(first, second, "the receiver rotates");

    // CANCEL (idempotent) stops the fires and removes the schedule.
    sa.cancel(MINUTE).await.unwrap();
    sa.cancel(MINUTE).await.unwrap();
    let page = sb.list(None, None).await.unwrap();
    assert_eq!((page.total_count, routes(&page.entries)), (2, vec![NIGHTLY, REPORT]));
    ctx.advance(Duration::from_secs(60));
    nothing(&mut watch_b, "no fire after CANCEL").await;
    nothing(&mut watch_a, "no fire after CANCEL").await;

    // UNSUBSCRIBE, then a re-created schedule fires only to live registrations.
    watch_a.unsubscribe().await.unwrap();
    other.unsubscribe().await.unwrap();
    sa.create(MINUTE, "* * * * *", ScheduleDeliveryMode::Broadcast, b"back").await.unwrap();
    ctx.advance(Duration::from_secs(61));
    let n = next(&mut watch_b, "fire after re-create").await.unwrap();
    assert_eq!((n.route.as_str(), n.payload.as_slice()), (MINUTE, b"back".as_slice()));
    watch_b.unsubscribe().await.unwrap();
    for r in [MINUTE, NIGHTLY, REPORT] {
        sa.cancel(r).await.unwrap();
    }
    assert_eq!(sb.list(None, None).await.unwrap().total_count, 0);
}
