//! KV against fitz-testkit on every leg of the matrix (see support).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

mod support;

use fitz_std::Error;
use fitz_std::core::ops::kv::{Persistence, Scan, TxMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_operations() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let route = leg.route("kv", "txn");
        let tx = c.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
        tx.put(b"a", b"1").await.unwrap();
        tx.put(b"b", b"2").await.unwrap();
        tx.insert(b"c", b"3").await.unwrap();
        let dup = tx.insert(b"c", b"x").await.unwrap_err();
        assert!(matches!(&dup, Error::Server(f) if f.code == Some(1006)), "{dup:?}");
        assert_eq!(tx.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(tx.get(b"zz").await.unwrap(), None);
        tx.delete(b"b").await.unwrap();
        tx.put(b"d", b"4").await.unwrap();
        tx.put(b"e", b"5").await.unwrap();
        tx.delete_range(b"d", b"e").await.unwrap();
        tx.commit_with(Persistence::Sync).await.unwrap();

        let ro = c.kv().begin(&route, TxMode::ReadOnly).await.unwrap();
        let page = ro.scan(Scan::default()).await.unwrap();
        let keys: Vec<Vec<u8>> = page.pairs().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec(), b"e".to_vec()]);
        assert!(!page.has_more);
        let first = ro.scan(Scan { limit: Some(1), ..Scan::default() }).await.unwrap();
        assert!(first.has_more);
        let last = first.last_key().unwrap();
        if c.has(fitz_std::core::ops::kv::CAP_SCAN_EXCLUSIVE) {
            let next = ro.scan(Scan { start: Some(&last), after: true, ..Scan::default() }).await.unwrap();
            let keys: Vec<Vec<u8>> = next.pairs().map(|(k, _)| k.to_vec()).collect();
            assert_eq!(keys, vec![b"c".to_vec(), b"e".to_vec()]);
        } else {
            let e = ro.scan(Scan { start: Some(&last), after: true, ..Scan::default() }).await.unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        }
        let rev = ro.scan(Scan { reverse: true, ..Scan::default() }).await.unwrap();
        assert_eq!(rev.pairs().next().unwrap().0.as_ref(), b"e");
        ro.rollback().await.unwrap();
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transaction_rolls_back() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let route = leg.route("kv", "dropped");
        {
            let tx = c.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
            tx.put(b"k", b"v").await.unwrap();
        }
        // The rollback was scheduled: the resource is free again and the
        // write is gone.
        let tx = c.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
        assert_eq!(tx.get(b"k").await.unwrap(), None);
        tx.commit().await.unwrap();
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sees_commits() {
    let m = support::matrix().await;
    support::each_leg(&m, |leg| async move {
        let c = leg.client().await;
        let route = leg.route("kv", "watched");
        let pattern = leg.route("kv", "*");
        let mut changes = c.kv().subscribe(&pattern).await.unwrap();
        let tx = c.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
        tx.put(b"x", b"1").await.unwrap();
        tx.put(b"y", b"2").await.unwrap();
        tx.commit().await.unwrap();
        let ch = changes.next().await.unwrap().unwrap();
        assert_eq!(ch.route(), route);
        assert_eq!(ch.mutation_count, 2);
        c.close().await;
    })
    .await;
}
