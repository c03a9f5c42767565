//! KV against the in-memory broker through raw frames (BROKER.md §4, §14).
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, clippy::std_instead_of_core)]

mod support;

use fitz_wire::kv::{self, Durability, Mode};
use fitz_wire::{Payload, Reply};
use support::*;

const R: &str = "kv://acme/orders/main";

async fn begin(c: &mut Raw, route: &str, mode: Mode) -> Result<u64, u32> {
    c.send(&kv::Begin { route, mode, durability: Some(Durability::Buffered) }).await;
    let rec = c.recv_type(fitz_wire::MsgType::KV_BEGIN).await.expect("BEGIN reply");
    match kv::decode_begin_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.tx_id),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn ack(c: &mut Raw, ty: fitz_wire::MsgType) -> Result<(), u32> {
    let rec = c.recv_type(ty).await.expect("reply");
    match kv::decode_ack_reply(&rec.payload).unwrap() {
        Reply::Ok(()) => Ok(()),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn put(c: &mut Raw, tx_id: u64, key: &[u8], value: &[u8]) -> Result<(), u32> {
    c.send(&kv::Put { tx_id, route: R, key, value }).await;
    ack(c, fitz_wire::MsgType::KV_PUT).await
}

async fn get(c: &mut Raw, tx_id: u64, key: &[u8]) -> Option<Vec<u8>> {
    c.send(&kv::Get { tx_id, route: R, key }).await;
    let rec = c.recv_type(fitz_wire::MsgType::KV_GET).await.unwrap();
    match kv::decode_get_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => ok.value.map(<[u8]>::to_vec),
        Reply::Err(e) => panic!("GET failed: {e}"),
    }
}

async fn commit(c: &mut Raw, tx_id: u64) -> Result<(), u32> {
    c.send(&kv::Commit { tx_id, route: R, persistence: None }).await;
    ack(c, fitz_wire::MsgType::KV_COMMIT).await
}

#[tokio::test]
async fn put_get_commit_and_read_back() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let tx = begin(&mut c, R, Mode::ReadWrite).await.unwrap();
    put(&mut c, tx, b"k1", b"v1").await.unwrap();
    assert_eq!(get(&mut c, tx, b"k1").await.as_deref(), Some(&b"v1"[..]), "a tx reads its own writes");
    assert_eq!(get(&mut c, tx, b"missing").await, None, "a missing key is found=0, not an error");
    commit(&mut c, tx).await.unwrap();
    assert_eq!(commit(&mut c, tx).await, Err(1001), "second COMMIT");
    let ro = begin(&mut c, R, Mode::ReadOnly).await.unwrap();
    assert_eq!(get(&mut c, ro, b"k1").await.as_deref(), Some(&b"v1"[..]));
    c.send(&kv::Put { tx_id: ro, route: R, key: b"x", value: b"y" }).await;
    assert_eq!(ack(&mut c, fitz_wire::MsgType::KV_PUT).await, Err(1005), "write in a ReadOnly tx");
}

#[tokio::test]
async fn insert_existing_key_is_1006_and_tx_stays_usable() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let tx = begin(&mut c, R, Mode::ReadWrite).await.unwrap();
    put(&mut c, tx, b"a", b"1").await.unwrap();
    c.send(&kv::Insert { tx_id: tx, route: R, key: b"a", value: b"2" }).await;
    assert_eq!(ack(&mut c, fitz_wire::MsgType::KV_INSERT).await, Err(1006));
    c.send(&kv::Delete { tx_id: tx, route: R, key: b"a" }).await;
    ack(&mut c, fitz_wire::MsgType::KV_DELETE).await.unwrap();
    assert_eq!(get(&mut c, tx, b"a").await, None);
    c.send(&kv::Rollback { tx_id: tx, route: R }).await;
    ack(&mut c, fitz_wire::MsgType::KV_ROLLBACK).await.unwrap();
}

#[tokio::test]
async fn read_write_conflict_between_sessions_and_release_on_disconnect() {
    let b = legacy().await;
    let mut a = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let _tx = begin(&mut a, R, Mode::ReadWrite).await.unwrap();
    assert_eq!(begin(&mut c, R, Mode::ReadWrite).await, Err(1004));
    assert!(begin(&mut c, R, Mode::ReadOnly).await.is_ok(), "ReadOnly never waits for the lock");
    drop(a);
    // The lock is released when the holder's session ends.
    let mut ok = false;
    for _ in 0..50 {
        if begin(&mut c, R, Mode::ReadWrite).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok);
}

async fn run(c: &mut Raw, s: kv::Scan<'_>) -> (Vec<Vec<u8>>, bool) {
    c.send(&s).await;
    let rec = c.recv_type(fitz_wire::MsgType::KV_SCAN).await.unwrap();
    let Reply::Ok(ok) = kv::decode_scan_reply(&rec.payload).unwrap() else { panic!() };
    (ok.pairs.iter().map(|p| p.key.to_vec()).collect::<Vec<_>>(), ok.has_more)
}

#[tokio::test]
async fn scan_order_limit_reverse_and_delete_range() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let tx = begin(&mut c, R, Mode::ReadWrite).await.unwrap();
    for k in [b"c", b"a", b"d", b"b"] {
        put(&mut c, tx, k, k).await.unwrap();
    }
    let scan = |start: Option<&'static [u8]>, end: Option<&'static [u8]>, limit, reverse| kv::Scan {
        tx_id: tx,
        route: R,
        start_key: start,
        end_key: end,
        limit,
        reverse,
        start_exclusive: false,
    };
    assert_eq!(
        run(&mut c, scan(None, None, None, false)).await,
        (vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()], false)
    );
    assert_eq!(run(&mut c, scan(None, None, Some(2), false)).await, (vec![b"a".to_vec(), b"b".to_vec()], true));
    assert_eq!(
        run(&mut c, scan(Some(b"c"), Some(b"a"), None, true)).await,
        (vec![b"c".to_vec(), b"b".to_vec()], false)
    );
    assert_eq!(run(&mut c, scan(Some(b"c"), Some(b"a"), None, false)).await, (vec![], false), "inverted bounds: empty");
    c.send(&kv::DeleteRange { tx_id: tx, route: R, start_key: b"b", end_key: b"d" }).await;
    ack(&mut c, fitz_wire::MsgType::KV_DELETE_RANGE).await.unwrap();
    assert_eq!(run(&mut c, scan(None, None, None, false)).await.0, vec![b"a".to_vec(), b"d".to_vec()]);
    c.send(&kv::DeleteRange { tx_id: tx, route: R, start_key: b"d", end_key: b"a" }).await;
    assert_eq!(ack(&mut c, fitz_wire::MsgType::KV_DELETE_RANGE).await, Err(1007));
}

#[tokio::test]
async fn wildcard_watch_gets_concrete_route_and_mutation_count() {
    let b = legacy().await;
    let mut w = Raw::connect(b.tcp_addr().unwrap(), "").await;
    w.send(&kv::Subscribe { pattern: "kv://acme/**" }).await;
    let rec = w.recv_type(fitz_wire::MsgType::KV_SUBSCRIBE).await.unwrap();
    let Reply::Ok(sub) = kv::decode_subscribe_reply(&rec.payload).unwrap() else { panic!() };
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let tx = begin(&mut c, R, Mode::ReadWrite).await.unwrap();
    put(&mut c, tx, b"a", b"1").await.unwrap();
    put(&mut c, tx, b"b", b"2").await.unwrap();
    commit(&mut c, tx).await.unwrap();
    let n = w.recv_type(fitz_wire::MsgType::KV_NOTIFY).await.unwrap();
    let n = kv::Notify::decode(&n.payload).unwrap();
    assert_eq!((n.sub_id, n.route, n.mutation_count), (sub.sub_id, R, 2));
    // A read-only commit notifies nobody.
    let ro = begin(&mut c, R, Mode::ReadOnly).await.unwrap();
    commit(&mut c, ro).await.unwrap();
    assert!(w.quiet_for(std::time::Duration::from_millis(200)).await);
}

#[tokio::test]
async fn same_type_requests_are_answered_in_order() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for r in ["kv://a/b/one", "kv://a/b/two", "kv://a/b/three"] {
        c.send(&kv::Begin { route: r, mode: Mode::ReadWrite, durability: Some(Durability::Sync) }).await;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let rec = c.recv_type(fitz_wire::MsgType::KV_BEGIN).await.unwrap();
        let Reply::Ok(ok) = kv::decode_begin_reply(&rec.payload).unwrap() else { panic!() };
        ids.push(ok.tx_id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn current_dialect_layouts_and_labels() {
    let b = current().await;
    let (mut c, caps) = Raw::connect_current(b.tcp_addr().unwrap(), "").await;
    assert_eq!(caps, 0xF);
    c.send_labelled(Some(7), &kv::Begin { route: R, mode: Mode::ReadWrite, durability: None }).await;
    let rec = c.recv_one().await.unwrap();
    assert_eq!(rec.label, Some(7));
    let Reply::Ok(ok) = kv::decode_begin_reply(&rec.payload).unwrap() else { panic!() };
    c.send(&kv::Put { tx_id: ok.tx_id, route: R, key: b"k", value: b"v" }).await;
    assert_eq!(c.recv_one().await.unwrap().label, None, "unlabelled request, unlabelled reply");
    // COMMIT without persistence in the current dialect: 1002, tx stays open.
    c.send(&kv::Commit { tx_id: ok.tx_id, route: R, persistence: None }).await;
    let rec = c.recv_one().await.unwrap();
    assert_eq!(
        kv::decode_ack_reply(&rec.payload).unwrap(),
        Reply::Err(fitz_wire::ServerError::coded(1002, "invalid commit persistence"))
    );
    c.send_labelled(Some(8), &kv::Commit { tx_id: ok.tx_id, route: R, persistence: Some(Durability::Sync) }).await;
    let rec = c.recv_one().await.unwrap();
    assert_eq!((rec.label, kv::decode_ack_reply(&rec.payload).unwrap()), (Some(8), Reply::Ok(())));
    // A legacy BEGIN (with durability) closes a current-dialect connection.
    c.send(&kv::Begin { route: R, mode: Mode::ReadOnly, durability: Some(Durability::Sync) }).await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn malformed_frame_closes_only_that_session() {
    let b = legacy().await;
    let mut good = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let mut bad = Raw::connect(b.tcp_addr().unwrap(), "").await;
    // A record whose payload runs past its frame.
    bad.send_frame(&[100, 0, 9, 0, 0]).await;
    assert!(bad.closed().await);
    assert!(begin(&mut good, R, Mode::ReadOnly).await.is_ok());
    // An oversized frame is refused from its length prefix alone.
    let mut big = Raw::connect(b.tcp_addr().unwrap(), "").await;
    big.send_bytes(&(2u32 << 20).to_be_bytes()).await;
    assert!(big.closed().await);
    assert!(begin(&mut good, R, Mode::ReadOnly).await.is_ok());
}
