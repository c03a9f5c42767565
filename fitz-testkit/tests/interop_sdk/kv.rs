//! KV (BROKER.md §4, §15.3): transactions, every data operation, SCAN
//! paging with `start_exclusive` (capability bit 2), watches.

use cntryl_fitz::client_domains::kv::{KvGetResult, KvPair, KvScanOptions, KvTransaction};
use cntryl_fitz::{KvDurability, TransactionMode};

use super::*;

const R: &str = "kv://interop/kv/users";

fn found(v: &[u8]) -> KvGetResult {
    KvGetResult::Found(v.to_vec())
}

fn keys(pairs: &[KvPair]) -> Vec<&[u8]> {
    pairs.iter().map(|p| p.key.as_slice()).collect()
}

async fn scan(
    tx: &KvTransaction,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
    limit: Option<u32>,
    reverse: bool,
    exclusive: bool,
) -> (Vec<Vec<u8>>, bool) {
    let options = KvScanOptions {
        start_key: start.map(<[u8]>::to_vec),
        end_key: end.map(<[u8]>::to_vec),
        limit,
        reverse,
        start_exclusive: exclusive,
    };
    let page = tx.scan(&options).await.unwrap();
    (keys(&page.pairs).into_iter().map(<[u8]>::to_vec).collect(), page.has_more)
}

fn k(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

pub(crate) async fn scenario(ctx: &Ctx) {
    let a = ctx.client().await;
    let b = ctx.client().await;
    let kv_a = a.kv().unwrap();
    let kv_b = b.kv().unwrap();

    // b watches the area with a wildcard and a's resource exactly.
    let mut watch = kv_b.subscribe("kv://interop/kv/*").await.unwrap();
    let mut exact = kv_a.subscribe(R).await.unwrap();

    let tx = kv_a.begin(R, TransactionMode::ReadWrite).await.unwrap();
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
        tx.put(key.as_bytes(), value.as_bytes()).await.unwrap();
    }
    // Read-your-writes inside the transaction; a missing key is not an error.
    assert_eq!(tx.get(b"a").await.unwrap(), found(b"1"));
    assert_eq!(tx.get(b"zz").await.unwrap(), KvGetResult::NotFound);
    // PUT is an upsert.
    tx.put(b"b", b"22").await.unwrap();
    assert_eq!(tx.get(b"b").await.unwrap(), found(b"22"));
    // INSERT: new key ok, existing key 1006, the transaction stays open.
    tx.insert(b"f", b"6").await.unwrap();
    coded(tx.insert(b"a", b"other").await, 1006, "INSERT of an existing key");
    assert_eq!(tx.get(b"a").await.unwrap(), found(b"1"), "the failed INSERT changed nothing");

    // The resource is locked: a second ReadWrite BEGIN from another client
    // fails at once with 1004 (never blocks, §4.2).
    coded(kv_b.begin(R, TransactionMode::ReadWrite).await, 1004, "second ReadWrite BEGIN");
    // ReadOnly never waits and sees only committed data (nothing yet).
    let ro = kv_b.begin(R, TransactionMode::ReadOnly).await.unwrap();
    assert_eq!(ro.get(b"a").await.unwrap(), KvGetResult::NotFound, "uncommitted writes are invisible");
    coded(ro.put(b"x", b"y").await, 1005, "PUT in a ReadOnly transaction");
    coded(ro.insert(b"x", b"y").await, 1005, "INSERT in a ReadOnly transaction");
    coded(ro.delete(b"a").await, 1005, "DELETE in a ReadOnly transaction");
    coded(ro.delete_range(b"a", b"z").await, 1005, "DELETE_RANGE in a ReadOnly transaction");
    ro.commit(KvDurability::Buffered).await.unwrap();

    // DELETE (one key) and DELETE_RANGE (half-open [c, d)).
    tx.delete(b"e").await.unwrap();
    tx.delete(b"never-there").await.unwrap();
    tx.delete_range(b"c", b"d").await.unwrap();
    coded(tx.delete_range(b"d", b"c").await, 1007, "DELETE_RANGE with start >= end");
    assert_eq!(tx.get(b"c").await.unwrap(), KvGetResult::NotFound);
    assert_eq!(tx.get(b"d").await.unwrap(), found(b"4"), "the end bound is exclusive");

    // SCAN: order, bounds, limit/has_more, reverse, start_exclusive paging.
    assert_eq!(scan(&tx, None, None, None, false, false).await, (k(&["a", "b", "d", "f"]), false));
    assert_eq!(scan(&tx, Some(b"b"), Some(b"f"), None, false, false).await, (k(&["b", "d"]), false));
    assert_eq!(scan(&tx, None, None, Some(2), false, false).await, (k(&["a", "b"]), true));
    assert_eq!(scan(&tx, Some(b"b"), None, Some(2), false, true).await, (k(&["d", "f"]), false));
    assert_eq!(scan(&tx, None, None, None, true, false).await, (k(&["f", "d", "b", "a"]), false));
    assert_eq!(scan(&tx, None, None, Some(2), true, false).await, (k(&["f", "d"]), true));
    assert_eq!(scan(&tx, Some(b"d"), None, Some(2), true, true).await, (k(&["b", "a"]), false));
    // Reverse bounds: start is the inclusive upper bound, end the exclusive lower one.
    assert_eq!(scan(&tx, Some(b"d"), Some(b"a"), None, true, false).await, (k(&["d", "b"]), false));
    // Values come back with their keys.
    let page = tx.scan(&KvScanOptions { limit: Some(1), ..KvScanOptions::default() }).await.unwrap();
    assert_eq!(page.pairs, vec![KvPair { key: b"a".to_vec(), value: b"1".to_vec() }]);

    // COMMIT (Sync): 5 PUTs + 1 PUT + 1 INSERT + 2 DELETEs + 1 DELETE_RANGE
    // succeeded = 10 mutations; the failed INSERT and DELETE_RANGE do not count.
    tx.commit(KvDurability::Sync).await.unwrap();
    let n = next(&mut watch, "KV NOTIFY after the commit").await.unwrap();
    assert_eq!(n.route, R, "the concrete route");
    assert_eq!(n.mutation_count, 10);
    let n = next(&mut exact, "KV NOTIFY to the committer's own exact watch").await.unwrap();
    assert_eq!((n.route.as_str(), n.mutation_count), (R, 10));

    // ROLLBACK discards and releases the lock; it produces no NOTIFY.
    let tx = kv_a.begin(R, TransactionMode::ReadWrite).await.unwrap();
    tx.put(b"g", b"7").await.unwrap();
    tx.rollback().await.unwrap();
    nothing(&mut watch, "no NOTIFY for a rollback").await;

    // The other client now gets the lock, sees the committed data, and its
    // Buffered commit notifies everyone (the committer included).
    let tx = kv_b.begin(R, TransactionMode::ReadWrite).await.unwrap();
    assert_eq!(tx.get(b"g").await.unwrap(), KvGetResult::NotFound, "rolled back");
    assert_eq!(tx.get(b"b").await.unwrap(), found(b"22"), "committed");
    assert_eq!(scan(&tx, None, None, None, false, false).await, (k(&["a", "b", "d", "f"]), false));
    tx.put(b"h", b"8").await.unwrap();
    tx.commit(KvDurability::Buffered).await.unwrap();
    let n = next(&mut watch, "KV NOTIFY for b's own commit").await.unwrap();
    assert_eq!((n.route.as_str(), n.mutation_count), (R, 1));
    let n = next(&mut exact, "KV NOTIFY to a").await.unwrap();
    assert_eq!((n.route.as_str(), n.mutation_count), (R, 1));

    // A ReadOnly commit and an empty ReadWrite commit notify nobody.
    let ro = kv_a.begin(R, TransactionMode::ReadOnly).await.unwrap();
    assert_eq!(ro.get(b"h").await.unwrap(), found(b"8"));
    ro.commit(KvDurability::Sync).await.unwrap();
    kv_a.begin(R, TransactionMode::ReadWrite).await.unwrap().commit(KvDurability::Buffered).await.unwrap();
    nothing(&mut watch, "no NOTIFY without mutations").await;

    // Another resource of the area reaches the wildcard watch with its own route.
    let other = "kv://interop/kv/orders";
    let tx = kv_a.begin(other, TransactionMode::ReadWrite).await.unwrap();
    tx.put(b"o", b"1").await.unwrap();
    tx.commit(KvDurability::Sync).await.unwrap();
    let n = next(&mut watch, "KV NOTIFY for another resource").await.unwrap();
    assert_eq!((n.route.as_str(), n.mutation_count), (other, 1));

    watch.unsubscribe().await.unwrap();
    exact.unsubscribe().await.unwrap();
}
