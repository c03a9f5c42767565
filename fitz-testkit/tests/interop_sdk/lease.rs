//! Lease (BROKER.md §7, §15.4): ACQUIRE (free, held, with wait, wait
//! timeout), RENEW, RELEASE, QUERY, watches (exact and wildcard), LIST
//! paging, the observer and the managed `with_lease*` helpers.

use std::collections::BTreeMap;

use cntryl_fitz::client_domains::lease::{
    LeaseAcquireOptions, LeaseClient, LeaseExecutionError, LeaseExecutionOptions, LeaseInfo, ObserveOptions,
};

use super::*;

const L: &str = "lease://interop/locks/a";

fn no_wait() -> LeaseAcquireOptions {
    LeaseAcquireOptions::default()
}

fn wait(seconds: u32) -> LeaseAcquireOptions {
    LeaseAcquireOptions { wait_seconds: seconds }
}

/// QUERY's owner string is session-scoped: `session:<incarnation>:<owner>`.
fn assert_owner(info: &LeaseInfo, owner: &str) {
    assert!(info.held, "{info:?}");
    let o = info.owner_id.as_deref().unwrap();
    assert!(o.starts_with("session:") && o.ends_with(&format!(":{owner}")), "owner string {o:?}");
}

async fn waiters(lease: &LeaseClient, route: &str) -> u32 {
    lease.query(route).await.unwrap().pending_waiters
}

pub(crate) async fn scenario(ctx: &Ctx) {
    let a = ctx.client().await;
    let b = ctx.client().await;
    let (la, lb) = (a.lease().unwrap(), b.lease().unwrap());

    // QUERY of a never-acquired lease: free, no waiters (not an error).
    let q = lb.query(L).await.unwrap();
    assert_eq!(q, LeaseInfo { held: false, owner_id: None, ttl_remaining_secs: None, pending_waiters: 0 });

    // b watches the lease exactly and the area through a wildcard.
    let mut exact = lb.subscribe(L).await.unwrap();
    let mut area = lb.subscribe("lease://interop/locks/*").await.unwrap();

    // ACQUIRE of a free lease: granted, NOTIFY with the concrete route.
    // SDK defect (WIRE.md C59): the SDK ignores anything after the route of
    // a Lease NOTIFY, so the empty payload the broker sends is not checked.
    let mut h = la.acquire(L, "owner-a", 10, no_wait()).await.unwrap();
    assert_eq!(next(&mut exact, "NOTIFY on grant").await.unwrap().route, L);
    assert_eq!(next(&mut area, "wildcard NOTIFY on grant").await.unwrap().route, L);
    let q = lb.query(L).await.unwrap();
    assert_owner(&q, "owner-a");
    assert_eq!((q.ttl_remaining_secs, q.pending_waiters), (Some(10), 0));

    // Held by another client, no wait: 5001 at once.
    let msg = coded(lb.acquire(L, "owner-b", 10, no_wait()).await, 5001, "ACQUIRE of a held lease");
    assert!(msg.starts_with("HeldByOther"), "{msg}");
    // The holder acquiring again keeps its lease (AlreadyHeld).
    let again = la.acquire(L, "owner-a", 10, no_wait()).await.unwrap();
    std::mem::forget(again); // dropping it would release the shared lease
    nothing(&mut exact, "no NOTIFY for a failed or repeated ACQUIRE").await;

    // RENEW: the TTL restarts; the SDK stores the returned token (the
    // testkit keeps it in the current dialect; clients adopt whatever comes
    // back, WIRE.md C14, C73), and a second RENEW with it succeeds.
    ctx.advance(Duration::from_secs(4));
    assert_eq!(la.query(L).await.unwrap().ttl_remaining_secs, Some(6));
    h.extend(30).await.unwrap();
    assert_eq!(la.query(L).await.unwrap().ttl_remaining_secs, Some(30));
    h.extend(20).await.unwrap();
    assert_eq!(la.query(L).await.unwrap().ttl_remaining_secs, Some(20));
    nothing(&mut exact, "no NOTIFY for renewals").await;

    // ACQUIRE with a wait: queued behind the holder (QUERY counts the
    // waiter), granted by the second 400 frame when the holder releases.
    let waiting = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.acquire(L, "owner-b", 15, wait(5)).await })
    };
    eventually("the waiter is queued", || async { waiters(&la, L).await == 1 }).await;
    assert!(!waiting.is_finished());
    h.release().await.unwrap();
    let mut hb = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap().unwrap();
    let q = la.query(L).await.unwrap();
    assert_owner(&q, "owner-b");
    assert_eq!((q.ttl_remaining_secs, q.pending_waiters), (Some(15), 0));
    // NOTIFY for the release and for the grant to the waiter.
    assert_eq!(next(&mut exact, "NOTIFY on release").await.unwrap().route, L);
    assert_eq!(next(&mut exact, "NOTIFY on grant to the waiter").await.unwrap().route, L);

    // A wait that ends without a grant: the deferred frame is 5006.
    let timing_out = {
        let la = la.clone();
        tokio::spawn(async move { la.acquire(L, "owner-a", 10, wait(2)).await })
    };
    eventually("the second waiter is queued", || async { waiters(&lb, L).await == 1 }).await;
    ctx.advance(Duration::from_secs(3));
    let r = tokio::time::timeout(WAIT, timing_out).await.unwrap().unwrap();
    coded(r, 5006, "ACQUIRE whose wait ends");
    assert_eq!(waiters(&lb, L).await, 0);

    // LIST: more leases in the area, paged two at a time from one snapshot.
    let mut others = Vec::new();
    for r in ["lease://interop/locks/b", "lease://interop/locks/c", "lease://interop/locks/d"] {
        others.push(la.acquire(r, "owner-a", 60, no_wait()).await.unwrap());
    }
    others[0].extend(60).await.unwrap();
    let page1 = lb.list("lease://interop/locks/*", None, 2).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let cursor = page1.next_cursor.expect("a cursor for the rest");
    let page2 = lb.list("lease://interop/locks/*", Some(cursor), 2).await.unwrap();
    assert_eq!(page2.items.len(), 2);
    assert!(page2.next_cursor.is_none(), "the last page has no cursor");
    let items: BTreeMap<String, _> = page1.items.into_iter().chain(page2.items).map(|i| (i.route.clone(), i)).collect();
    assert_eq!(
        items.keys().map(String::as_str).collect::<Vec<_>>(),
        ["lease://interop/locks/a", "lease://interop/locks/b", "lease://interop/locks/c", "lease://interop/locks/d"]
    );
    let (ia, ib) = (&items["lease://interop/locks/a"], &items["lease://interop/locks/b"]);
    // (a was granted with 15 s, 3 s before the listing.)
    assert_eq!((ia.owner_id.as_str(), ia.expires_in_secs, ia.renewals), ("owner-b", 12, 0));
    assert_eq!((ib.owner_id.as_str(), ib.expires_in_secs, ib.renewals), ("owner-a", 60, 1));
    assert_eq!(ib.holder_incarnation, items["lease://interop/locks/c"].holder_incarnation, "one session");
    assert_ne!(ia.holder_incarnation, ib.holder_incarnation, "two sessions");
    assert!(ia.acquired_at.contains('T') && ia.acquired_at.len() >= 20, "RFC 3339: {}", ia.acquired_at);
    // The snapshot is gone after its last page: its cursor is now 5011.
    coded(lb.list("lease://interop/locks/*", Some(cursor), 2).await, 5011, "exhausted LIST cursor");
    // An exact pattern: that lease, one page, no cursor; a free one: nothing.
    let page = lb.list(L, None, 0).await.unwrap();
    assert_eq!((page.items.len(), page.next_cursor), (1, None));
    assert!(lb.list("lease://interop/locks/free", None, 0).await.unwrap().items.is_empty());

    // The observer bootstraps from LIST and follows NOTIFYs.
    let observer = lb
        .observe(
            "lease://interop/locks/*",
            ObserveOptions { reconciliation_interval: Duration::from_secs(60), list_page_size: 2 },
        )
        .await
        .unwrap();
    eventually("the observer is ready", || async { observer.is_ready() }).await;
    assert_eq!(observer.snapshot().len(), 4);
    others.pop().unwrap().release().await.unwrap();
    eventually("the observer sees the release", || async { observer.snapshot().len() == 3 }).await;
    observer.close().await;

    // Managed leases: the callback runs while the lease is held and the lease
    // is released afterwards; successive ownerships get increasing tokens.
    let m = "lease://interop/managed/job";
    let value = la.with_lease(m, "mgr", 30, |_cancel| async { Ok::<_, String>(42) }).await.unwrap();
    assert_eq!(value, 42);
    assert!(!lb.query(m).await.unwrap().held, "released after the callback");
    let t1 = la
        .with_lease_authority(m, "mgr", 30, |_c, auth| async move { Ok::<_, String>(auth.fencing_token) })
        .await
        .unwrap();
    let t2 = lb
        .with_lease_authority(m, "mgr", 30, |_c, auth| async move { Ok::<_, String>(auth.fencing_token) })
        .await
        .unwrap();
    assert!(t2 > t1, "fencing tokens increase across ownerships: {t1} then {t2}");
    // A callback error is reported as such, and the lease is still released.
    let r = la
        .with_lease_with_options(m, "mgr", 30, |_c| async { Err::<(), _>("boom") }, LeaseExecutionOptions::default())
        .await;
    assert!(matches!(r, Err(LeaseExecutionError::Callback("boom"))), "{r:?}");
    assert!(!lb.query(m).await.unwrap().held);
    // A held lease: the acquisition error carries the broker's 5001.
    match la.with_lease(L, "mgr", 30, |_c| async { Ok::<_, String>(()) }).await {
        Err(LeaseExecutionError::Acquisition(FitzError::Domain { code: 5001, .. })) => {}
        other => panic!("with_lease on a held lease: {other:?}"),
    }

    hb.extend(15).await.unwrap();
    hb.release().await.unwrap();
    assert!(!la.query(L).await.unwrap().held);
    assert_eq!(next(&mut exact, "NOTIFY on the last release").await.unwrap().route, L);
    exact.unsubscribe().await.unwrap();
    area.unsubscribe().await.unwrap();
}
