//! Bounded memory, shown two ways:
//! - a flood of 1,000,000 notifications to a subscriber that never reads:
//!   resident memory stays flat, only that subscription ends (with
//!   `Backpressure`), and another subscription on the same connection goes
//!   on;
//! - a counting allocator: zero allocations per request in steady state for
//!   KV get and put, Notice publish and Queue enqueue.
//!
//! The broker runs on a runtime of its own (its allocations are not
//! counted); the client runs on a runtime whose threads are marked, and
//! only allocations made on marked threads count.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fitz_std::core::ops::kv::TxMode;
use fitz_std::core::{Item, State};
use fitz_std::{Client, Error};
use fitz_testkit::{BrokerConfig, Dialect};
use fitz_wire::{notice, queue};

struct Counting;

thread_local! {
    /// The id of the client runtime this thread belongs to (0: none).
    static MARKED: Cell<u64> = const { Cell::new(0) };
    /// Bytes this thread allocated and did not free while counted: what
    /// the probe checks, untouched by the other threads' frees.
    static MINE: Cell<i64> = const { Cell::new(0) };
}

fn mine(delta: i64) {
    let _ = MINE.try_with(|m| m.set(m.get() + delta));
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed on counted threads: the client's heap.
static LIVE: AtomicI64 = AtomicI64::new(0);
/// Allocations count only on threads of this runtime id (threads of an
/// earlier test's runtime may still be winding down).
static COUNTED: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn counted() -> bool {
    let id = MARKED.try_with(Cell::get).unwrap_or(0);
    id != 0 && id == COUNTED.load(Ordering::Relaxed)
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
            mine(l.size() as i64);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if counted() {
            LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
            mine(-(l.size() as i64));
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            LIVE.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
            mine(n as i64 - l.size() as i64);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The two tests count allocations process-wide on marked threads: one at
/// a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A runtime whose threads are marked with a fresh id; allocations on them
/// are counted while that id is `COUNTED`. Returns the runtime and its id.
fn client_runtime() -> (tokio::runtime::Runtime, u64) {
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || MARKED.with(|m| m.set(id)))
        .build()
        .unwrap();
    (rt, id)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn zero_allocations_per_request_in_steady_state() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let broker =
        fitz_testkit::Broker::start_in_background(BrokerConfig::anonymous().with_dialect(Dialect::Current)).unwrap();
    let url = format!("tcp://{}", broker.tcp_addr().unwrap());
    let (rt, id) = client_runtime();
    rt.block_on(async move {
        MARKED.with(|m| m.set(id));
        COUNTED.store(id, Ordering::SeqCst);
        let c = Client::builder(url).connect().await.unwrap();
        let tx = c.kv().begin("kv://alloc/kv/r", TxMode::ReadWrite).await.unwrap();
        const N: u64 = 5_000;
        let mut report = Vec::new();
        for op in ["kv put", "kv get", "notice publish", "queue enqueue"] {
            let run = async |n: u64| {
                for i in 0..n {
                    let key = (i % 16).to_be_bytes();
                    match op {
                        "kv put" => tx.put(&key, b"value").await.unwrap(),
                        "kv get" => assert!(tx.get(&key).await.unwrap().is_some()),
                        "notice publish" => {
                            c.send(&notice::Publish { route: "notice://alloc/n/r", body: b"hello" }).await.unwrap()
                        }
                        _ => {
                            let msg = queue::Enqueue { route: "queue://alloc/q/r", body: b"job", delay_seconds: None };
                            let p = c.round_trip(&msg, 0).await.unwrap();
                            assert!(matches!(queue::decode_enqueue_reply(&p), Ok(fitz_wire::Reply::Ok(_))));
                        }
                    }
                }
            };
            // Warm-up: buffers reach their working size.
            run(2_000).await;
            // Windows of N requests. An allocation per request would show
            // N (or more) in every window; the runtime's own one-time
            // growth (tokio's per-worker lists) can land in one of them, so
            // the steady state is a window with none, within three.
            let mut windows = Vec::new();
            for _ in 0..3 {
                let before = ALLOCS.load(Ordering::SeqCst);
                run(N).await;
                windows.push(ALLOCS.load(Ordering::SeqCst) - before);
                if windows.last() == Some(&0) {
                    break;
                }
            }
            report.push((op, windows));
        }
        for (op, windows) in &report {
            eprintln!("{op}: allocations per window of {N} requests: {windows:?}");
        }
        // The counter sees allocations on these threads at all:
        let before = ALLOCS.load(Ordering::SeqCst);
        let v = std::hint::black_box(vec![1u8; 64]);
        assert!(ALLOCS.load(Ordering::SeqCst) > before, "the counting allocator must see this allocation");
        drop(v);
        for (op, windows) in report {
            assert!(windows.contains(&0), "{op}: allocations in every window of {N} requests: {windows:?}");
            assert!(windows.iter().all(|n| *n < 8), "{op}: {windows:?} is more than one-time growth");
        }
        tx.commit().await.unwrap();
        c.close().await;
    });
    drop(broker);
}

#[test]
fn a_million_notifications_to_a_stalled_subscriber_keep_memory_flat() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let broker =
        fitz_testkit::Broker::start_in_background(BrokerConfig::anonymous().with_dialect(Dialect::Current)).unwrap();
    let url = format!("tcp://{}", broker.tcp_addr().unwrap());
    let (rt, id) = client_runtime();
    rt.block_on(async move {
        MARKED.with(|m| m.set(id));
        COUNTED.store(id, Ordering::SeqCst);
        let sub_client = Client::builder(url.clone()).connect().await.unwrap();
        let publisher = Client::builder(url).connect().await.unwrap();
        // Two subscriptions on one connection: the flooded one is never
        // read; the other gets a tick every 1,000 flood messages and is.
        let mut stalled = sub_client.subscribe(&notice::Subscribe { pattern: "notice://flood/a/*" }).await.unwrap();
        let mut live = sub_client.subscribe(&notice::Subscribe { pattern: "notice://flood/b/*" }).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                match live.next().await {
                    Some(Ok(Item::Record { payload, .. })) => {
                        n += 1;
                        let msg = <notice::Notify<'_> as fitz_wire::Payload<'_>>::decode(&payload).unwrap();
                        if msg.body == b"end" {
                            return n;
                        }
                    }
                    other => panic!("the live subscription must go on: {other:?}"),
                }
            }
        });

        // The broker runs in this process too: RSS (printed) includes its
        // queues; the client's own heap is what the allocator counts on
        // the client runtime's threads (asserted).
        let start_rss = rss_kib();
        let start_heap = LIVE.load(Ordering::SeqCst);
        let peak = std::sync::Arc::new(AtomicU64::new(start_rss));
        let peak_heap = std::sync::Arc::new(AtomicI64::new(start_heap));
        let sampler = {
            let (peak, peak_heap) = (peak.clone(), peak_heap.clone());
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    peak_heap.fetch_max(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        const FLOOD: u32 = 1_000_000;
        let t = Instant::now();
        let body = [7u8; 32];
        for i in 0..FLOOD {
            publisher.send(&notice::Publish { route: "notice://flood/a/x", body: &body }).await.unwrap();
            if i % 1000 == 999 {
                publisher.send(&notice::Publish { route: "notice://flood/b/x", body: b"tick" }).await.unwrap();
            }
        }
        let published = t.elapsed();
        // Notice is best effort: repeat the end marker until it arrives.
        let seen = loop {
            publisher.send(&notice::Publish { route: "notice://flood/b/x", body: b"end" }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            if reader.is_finished() {
                break reader.await.unwrap();
            }
        };
        sampler.abort();
        let peak = peak.load(Ordering::Relaxed);
        let heap_growth = (peak_heap.load(Ordering::Relaxed) - start_heap).max(0) / 1024;
        // The heap counter sees this thread's allocations at all (checked
        // on this thread's own count: the runtime's workers free memory
        // concurrently, which the shared counter also sees).
        let before = MINE.with(Cell::get);
        let probe = std::hint::black_box(vec![0u8; 1 << 20]);
        assert!(MINE.with(Cell::get) - before >= 1 << 20, "the heap counter must see a 1 MiB allocation");
        drop(probe);
        // Flood notifications that arrived after the stalled subscription
        // ended (before the broker processed its UNSUBSCRIBE) were dropped.
        let dropped = sub_client.unmatched();
        eprintln!(
            "published {FLOOD} in {published:?}; live subscriber saw {seen} of 1000 ticks + end; \
             {dropped} late flood notifications dropped; client heap peak +{heap_growth} KiB; \
             process RSS (broker included) start {start_rss} KiB, peak {peak} KiB (+{} KiB)",
            peak.saturating_sub(start_rss)
        );

        // Only the stalled subscription ended, after its bounded queue.
        let mut queued = 0;
        let end = loop {
            match stalled.next().await {
                Some(Ok(Item::Record { .. })) => queued += 1,
                other => break other,
            }
        };
        assert_eq!(end, Some(Err(Error::Backpressure)));
        assert_eq!(queued, fitz_std::QUEUE_DEPTH, "exactly one queue's worth was kept");
        // Notice is best effort: under the flood the broker may drop ticks
        // (its queue to this connection is full); the live subscription
        // itself never ends and gets the end marker.
        assert!(seen >= 1, "the live subscription kept receiving ({seen} ticks)");
        assert_eq!(sub_client.state(), State::Authenticated, "the connection itself is fine");
        // 1,000,000 notifications of 60+ bytes would be over 60 MiB if they
        // were kept; the client keeps a fixed queue (whose deliveries pin at
        // most their receive buffers, 64 KiB each).
        assert!(heap_growth < 8 * 1024, "the client's heap grew by {heap_growth} KiB");
        sub_client.close().await;
        publisher.close().await;
    });
    drop(broker);
}
