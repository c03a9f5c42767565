//! End-to-end benchmarks: our tokio client (fitz-std) side by side with the
//! official Rust SDK (cntryl-fitz 0.2.0), both against ONE in-process
//! fitz-testkit broker speaking the current dialect, over TCP and over
//! WebSocket.
//!
//! For every benchmark and transport the two clients run alternately in
//! interleaved rounds (ours, theirs, then theirs, ours, …) after a short
//! warm-up each, in the same process and against the same broker; a
//! round is a fixed time window. Throughputs are total operations over
//! total window time; latencies are percentiles of every sample of every
//! round.
//!
//! Allocations: a counting global allocator counts `alloc`/`realloc` calls
//! (not frees, not bytes) on every thread of the process except the
//! broker's (its thread and its runtime's worker and blocking threads set
//! a thread-local flag when they start). The count covers the measured
//! window of a round (the callers' tasks being spawned and joined, every
//! client task, the RPC worker of the client under test) and is divided by
//! the operations of that window.
//!
//! `cargo bench -p benches --bench e2e` (longer windows), or with
//! `FITZ_BENCH_QUICK=1` (short windows, well under two minutes). An
//! optional argument that does not start with `-` keeps only the
//! benchmarks whose name contains it. Prints a table and writes
//! `target/bench-summary.json`. Timings never fail the run; a failing
//! operation does (non-zero exit).
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core,
    clippy::large_futures,
    clippy::panic
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cntryl_fitz::client_domains::kv::KvGetResult;
use cntryl_fitz::{KvDurability, TransactionMode};
use fitz_std::core::ops::kv::TxMode;
use fitz_std::rpc::{self, Failure};
use fitz_testkit::{Broker, BrokerConfig, Dialect};
use futures_util::StreamExt;
use futures_util::future::try_join_all;

// ---------------------------------------------------------------------------
// Counting allocator

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BROKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the broker's threads: their allocations are not counted.
    static BROKER_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    // `try_with`: a thread being torn down counts as a client thread.
    if BROKER_THREAD.try_with(Cell::get).unwrap_or(false) {
        BROKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
    } else {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator and only adds a counter.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::SeqCst)
}

fn mark_broker_thread() {
    BROKER_THREAD.with(|b| b.set(true));
}

// ---------------------------------------------------------------------------
// Plan, samples, results

type Res<T> = Result<T, String>;

macro_rules! fail {
    ($what:literal) => {
        |e| format!(concat!($what, ": {}"), e)
    };
}

#[derive(Clone, Copy)]
struct Plan {
    warmup: Duration,
    window: Duration,
    rounds: usize,
}

impl Plan {
    fn from_env() -> (Plan, bool) {
        let quick = std::env::var("FITZ_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let plan = if quick {
            Plan { warmup: Duration::from_millis(100), window: Duration::from_millis(250), rounds: 2 }
        } else {
            Plan { warmup: Duration::from_millis(500), window: Duration::from_secs(2), rounds: 5 }
        };
        (plan, quick)
    }

    /// Capacity of a latency recorder: more than one caller can complete.
    fn latency_capacity(&self) -> usize {
        usize::try_from(self.window.as_millis()).unwrap_or(1000).saturating_mul(400).max(10_000)
    }
}

/// What one measured window gives.
#[derive(Default)]
struct Sample {
    ops: u64,
    elapsed: Duration,
    allocs: u64,
    latencies_ns: Vec<u64>,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.allocs += other.allocs;
        self.latencies_ns.extend(other.latencies_ns);
    }

    fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn allocs_per_op(&self) -> f64 {
        self.allocs as f64 / (self.ops.max(1)) as f64
    }

    fn percentile_us(&mut self, p: usize) -> f64 {
        self.latencies_ns.sort_unstable();
        let n = self.latencies_ns.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = (n * p / 100).min(n - 1);
        self.latencies_ns[i] as f64 / 1000.0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Ours,
    Theirs,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Ws,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }
}

/// One row of the summary.
struct Row {
    name: String,
    unit: &'static str,
    transport: &'static str,
    ours: f64,
    /// `None` when the official SDK was not run (see `note`).
    theirs: Option<f64>,
    ours_allocs: f64,
    theirs_allocs: Option<f64>,
    ours_ops: u64,
    theirs_ops: u64,
    note: Option<&'static str>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let theirs = self.theirs?;
        Some(if self.unit == "us" { theirs / self.ours } else { self.ours / theirs })
    }
}

// ---------------------------------------------------------------------------
// The measuring loop

/// Runs `op` in a loop on one tokio task per state until the window ends,
/// then awaits `fence` (e.g. proof that fire-and-forget work was
/// processed). Allocations and time cover spawning, the loops, joining and
/// the fence; latencies are recorded per operation when `record`.
async fn measure<S, F, Fut, G>(states: &[Arc<S>], window: Duration, record: usize, op: F, fence: G) -> Res<Sample>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res<()>> + Send + 'static,
    G: Future<Output = Res<()>>,
{
    let op = Arc::new(op);
    let mut recorders: Vec<Vec<u64>> = states.iter().map(|_| Vec::with_capacity(record)).collect();
    let mut handles = Vec::with_capacity(states.len());
    let states: Vec<Arc<S>> = states.to_vec();
    let before = allocs();
    let start = Instant::now();
    let deadline = start + window;
    for (state, mut lat) in states.into_iter().zip(recorders.drain(..)) {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                op(state.clone()).await?;
                if lat.len() < lat.capacity() {
                    lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
                n += 1;
            }
            Ok::<_, String>((n, lat))
        }));
    }
    let mut ops = 0;
    let mut joined = Vec::with_capacity(handles.len());
    for h in handles {
        let (n, lat) = h.await.map_err(fail!("caller task"))??;
        ops += n;
        joined.push(lat);
    }
    fence.await?;
    let elapsed = start.elapsed();
    let allocs = allocs() - before;
    let latencies_ns = joined.into_iter().flatten().collect();
    Ok(Sample { ops, elapsed, allocs, latencies_ns })
}

/// The states back from the finished callers.
fn unshare<S>(states: Vec<Arc<S>>) -> Res<Vec<S>> {
    states.into_iter().map(|s| Arc::try_unwrap(s).map_err(|_| "state still shared".to_owned())).collect()
}

async fn no_fence() -> Res<()> {
    Ok(())
}

// ---------------------------------------------------------------------------
// The clients of one transport

const KEY: &[u8] = b"bench-key";
const VALUE: &[u8] = &[0x5a; 100];
const BODY: &[u8] = &[0x42; 64];
const GET_ROUTE: &str = "kv://bench/kv/get";

struct Clients {
    transport: Transport,
    ours: fitz_std::Client,
    ours_worker: fitz_std::Client,
    serving: rpc::Serving,
    theirs: cntryl_fitz::Client,
    theirs_worker: cntryl_fitz::Client,
    theirsserving: tokio::task::JoinHandle<()>,
    theirs_worker_error: Arc<Mutex<Option<String>>>,
}

fn side_tag(side: Side) -> &'static str {
    match side {
        Side::Ours => "ours",
        Side::Theirs => "theirs",
    }
}

impl Clients {
    async fn connect(transport: Transport, broker: &BrokerUrls) -> Res<Clients> {
        let url = match transport {
            Transport::Tcp => broker.tcp.clone(),
            Transport::Ws => broker.ws.clone(),
        };
        let ours = fitz_std::Client::builder(url.as_str()).connect().await.map_err(fail!("connect (ours)"))?;
        let ours_worker =
            fitz_std::Client::builder(url.as_str()).connect().await.map_err(fail!("connect (ours, worker)"))?;
        let theirs = cntryl_fitz::Client::anonymous(url.as_str()).build().map_err(fail!("build (theirs)"))?;
        theirs.connect().await.map_err(fail!("connect (theirs)"))?;
        let theirs_worker = cntryl_fitz::Client::anonymous(url.as_str()).build().map_err(fail!("build (theirs)"))?;
        theirs_worker.connect().await.map_err(fail!("connect (theirs, worker)"))?;

        // RPC echo workers, each on its client's own worker API.
        let serving = rpc::serve(&ours_worker.rpc(), "rpc://bench/ours/*", 64, |req, _chunks| async move {
            Ok::<_, Failure>(req.body().clone())
        })
        .await
        .map_err(fail!("RPC serve (ours)"))?;
        let mut worker = theirs_worker
            .rpc()
            .map_err(fail!("rpc (theirs)"))?
            .register_worker("rpc://bench/theirs/*", 64)
            .await
            .map_err(fail!("RPC register_worker (theirs)"))?;
        let theirs_worker_error = Arc::new(Mutex::new(None));
        let errors = theirs_worker_error.clone();
        let theirsserving = tokio::spawn(async move {
            while let Some(req) = worker.next().await {
                match req {
                    Ok(mut req) => {
                        let errors = errors.clone();
                        tokio::spawn(async move {
                            let body = std::mem::take(&mut req.body);
                            if let Err(e) = req.respond(&body, true).await {
                                *errors.lock().unwrap() = Some(format!("RPC respond (theirs): {e}"));
                            }
                        });
                    }
                    Err(e) => *errors.lock().unwrap() = Some(format!("RPC worker (theirs): {e}")),
                }
            }
        });

        // The key every get reads.
        let tx = ours.kv().begin(GET_ROUTE, TxMode::ReadWrite).await.map_err(fail!("KV begin (seed)"))?;
        tx.put(KEY, VALUE).await.map_err(fail!("KV put (seed)"))?;
        tx.commit().await.map_err(fail!("KV commit (seed)"))?;

        Ok(Clients { transport, ours, ours_worker, serving, theirs, theirs_worker, theirsserving, theirs_worker_error })
    }

    fn worker_error(&self) -> Res<()> {
        match self.theirs_worker_error.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn close(self) -> Res<()> {
        self.theirsserving.abort();
        drop(self.serving);
        self.ours.close().await;
        self.ours_worker.close().await;
        self.theirs.close().await.map_err(fail!("close (theirs)"))?;
        self.theirs_worker.close().await.map_err(fail!("close (theirs, worker)"))?;
        Ok(())
    }

    // -- KV get: one open read-only transaction per caller, `get` of one
    //    100-byte value in a loop.

    async fn kv_get(&self, side: Side, callers: usize, window: Duration) -> Res<Sample> {
        match side {
            Side::Ours => {
                let kv = self.ours.kv();
                let txs = try_join_all((0..callers).map(|_| kv.begin(GET_ROUTE, TxMode::ReadOnly)))
                    .await
                    .map_err(fail!("KV begin"))?;
                let txs: Vec<_> = txs.into_iter().map(Arc::new).collect();
                let s = measure(
                    &txs,
                    window,
                    0,
                    |tx| async move {
                        match tx.get(KEY).await.map_err(fail!("KV get"))? {
                            Some(v) if v.len() == VALUE.len() => Ok(()),
                            _ => Err("KV get: wrong value".to_owned()),
                        }
                    },
                    no_fence(),
                )
                .await?;
                let txs = unshare(txs)?;
                try_join_all(txs.into_iter().map(|tx| tx.rollback())).await.map_err(fail!("KV rollback"))?;
                Ok(s)
            }
            Side::Theirs => {
                let kv = self.theirs.kv().map_err(fail!("kv"))?;
                let txs = try_join_all((0..callers).map(|_| kv.begin(GET_ROUTE, TransactionMode::ReadOnly)))
                    .await
                    .map_err(fail!("KV begin"))?;
                let txs: Vec<_> = txs.into_iter().map(Arc::new).collect();
                let s = measure(
                    &txs,
                    window,
                    0,
                    |tx| async move {
                        match tx.get(KEY).await.map_err(fail!("KV get"))? {
                            KvGetResult::Found(v) if v.len() == VALUE.len() => Ok(()),
                            _ => Err("KV get: wrong value".to_owned()),
                        }
                    },
                    no_fence(),
                )
                .await?;
                let txs = unshare(txs)?;
                try_join_all(txs.into_iter().map(|tx| tx.rollback())).await.map_err(fail!("KV rollback"))?;
                Ok(s)
            }
        }
    }

    // -- KV put: one open read-write transaction per caller, each on a
    //    resource of its own; `put` of one 100-byte value to one key in a
    //    loop; the transactions are committed after the window.

    async fn kv_put(&self, side: Side, callers: usize, window: Duration) -> Res<Sample> {
        let routes: Vec<String> = (0..callers).map(|i| format!("kv://bench/put-{}/r{i}", side_tag(side))).collect();
        match side {
            Side::Ours => {
                let kv = self.ours.kv();
                let txs = try_join_all(routes.iter().map(|r| kv.begin(r, TxMode::ReadWrite)))
                    .await
                    .map_err(fail!("KV begin"))?;
                let txs: Vec<_> = txs.into_iter().map(Arc::new).collect();
                let s = measure(
                    &txs,
                    window,
                    0,
                    |tx| async move { tx.put(KEY, VALUE).await.map_err(fail!("KV put")) },
                    no_fence(),
                )
                .await?;
                let txs = unshare(txs)?;
                try_join_all(txs.into_iter().map(|tx| tx.commit())).await.map_err(fail!("KV commit"))?;
                Ok(s)
            }
            Side::Theirs => {
                let kv = self.theirs.kv().map_err(fail!("kv"))?;
                let txs = try_join_all(routes.iter().map(|r| kv.begin(r, TransactionMode::ReadWrite)))
                    .await
                    .map_err(fail!("KV begin"))?;
                let txs: Vec<_> = txs.into_iter().map(Arc::new).collect();
                let s = measure(
                    &txs,
                    window,
                    0,
                    |tx| async move { tx.put(KEY, VALUE).await.map_err(fail!("KV put")) },
                    no_fence(),
                )
                .await?;
                let txs = unshare(txs)?;
                try_join_all(txs.into_iter().map(|tx| tx.commit(KvDurability::Buffered)))
                    .await
                    .map_err(fail!("KV commit"))?;
                Ok(s)
            }
        }
    }

    // -- KV transaction latency: begin (read-write) + put + commit
    //    (buffered), one caller, one after the other.

    async fn kv_txn(&self, side: Side, window: Duration, record: usize) -> Res<Sample> {
        let route: &'static str = match side {
            Side::Ours => "kv://bench/txn/ours",
            Side::Theirs => "kv://bench/txn/theirs",
        };
        match side {
            Side::Ours => {
                let states = [Arc::new(self.ours.clone())];
                let op = move |c: Arc<fitz_std::Client>| async move {
                    let tx = c.kv().begin(route, TxMode::ReadWrite).await.map_err(fail!("KV begin"))?;
                    tx.put(KEY, VALUE).await.map_err(fail!("KV put"))?;
                    tx.commit().await.map_err(fail!("KV commit"))
                };
                measure(&states, window, record, op, no_fence()).await
            }
            Side::Theirs => {
                let states = [Arc::new(self.theirs.kv().map_err(fail!("kv"))?)];
                let op = move |kv: Arc<cntryl_fitz::client_domains::kv::KvClient>| async move {
                    let tx = kv.begin(route, TransactionMode::ReadWrite).await.map_err(fail!("KV begin"))?;
                    tx.put(KEY, VALUE).await.map_err(fail!("KV put"))?;
                    tx.commit(KvDurability::Buffered).await.map_err(fail!("KV commit"))
                };
                measure(&states, window, record, op, no_fence()).await
            }
        }
    }

    // -- Notice publish: one caller publishing 64-byte notices to a route
    //    nobody subscribes to, as fast as the client accepts them; the
    //    window ends with a fence: a notice to a route the same client
    //    subscribed to, which the broker handles after every earlier one.

    async fn notice(&self, side: Side, window: Duration) -> Res<Sample> {
        let load: &'static str = match side {
            Side::Ours => "notice://bench/load/ours",
            Side::Theirs => "notice://bench/load/theirs",
        };
        let fence_route = format!("notice://bench/fence/{}", side_tag(side));
        match side {
            Side::Ours => {
                let mut sub = self.ours.notice().subscribe(&fence_route).await.map_err(fail!("subscribe"))?;
                let states = [Arc::new(self.ours.clone())];
                let c = self.ours.clone();
                let fence = async {
                    c.notice().publish(&fence_route, b"fence").await.map_err(fail!("publish (fence)"))?;
                    match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                        Ok(Some(Ok(_))) => Ok(()),
                        Ok(Some(Err(e))) => Err(format!("fence delivery: {e}")),
                        Ok(None) => Err("fence subscription ended".to_owned()),
                        Err(_) => Err("fence not delivered within 30 s".to_owned()),
                    }
                };
                let op = move |c: Arc<fitz_std::Client>| async move {
                    c.notice().publish(load, BODY).await.map_err(fail!("publish"))
                };
                let s = measure(&states, window, 0, op, fence).await?;
                sub.unsubscribe();
                Ok(s)
            }
            Side::Theirs => {
                let notice = self.theirs.notice().map_err(fail!("notice"))?;
                let mut sub = notice.subscribe(&fence_route).await.map_err(fail!("subscribe"))?;
                let states = [Arc::new(notice.clone())];
                let fence = async {
                    notice.publish(&fence_route, b"fence").await.map_err(fail!("publish (fence)"))?;
                    match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                        Ok(Some(Ok(_))) => Ok(()),
                        Ok(Some(Err(e))) => Err(format!("fence delivery: {e}")),
                        Ok(None) => Err("fence subscription ended".to_owned()),
                        Err(_) => Err("fence not delivered within 30 s".to_owned()),
                    }
                };
                let op = move |n: Arc<cntryl_fitz::client_domains::notice::NoticeClient>| async move {
                    n.publish(load, BODY).await.map_err(fail!("publish"))
                };
                let s = measure(&states, window, 0, op, fence).await?;
                sub.unsubscribe().await.map_err(fail!("unsubscribe"))?;
                Ok(s)
            }
        }
    }

    // -- Notice publish -> deliver latency: one caller publishes a 64-byte
    //    notice to a route the same client subscribed to and waits for its
    //    delivery before publishing the next.

    async fn notice_latency(&self, side: Side, window: Duration, record: usize) -> Res<Sample> {
        let route: &'static str = match side {
            Side::Ours => "notice://bench/echo/ours",
            Side::Theirs => "notice://bench/echo/theirs",
        };
        match side {
            Side::Ours => {
                let sub = self.ours.notice().subscribe(route).await.map_err(fail!("subscribe"))?;
                let states = [Arc::new((self.ours.clone(), tokio::sync::Mutex::new(sub)))];
                let op = move |s: Arc<(fitz_std::Client, tokio::sync::Mutex<_>)>| async move {
                    let mut sub = s.1.lock().await;
                    s.0.notice().publish(route, BODY).await.map_err(fail!("publish"))?;
                    match sub.next().await {
                        Some(Ok(n)) if n.body().as_ref() == BODY => Ok(()),
                        Some(Ok(_)) => Err("notice: wrong body".to_owned()),
                        Some(Err(e)) => Err(format!("delivery: {e}")),
                        None => Err("subscription ended".to_owned()),
                    }
                };
                let s = measure(&states, window, record, op, no_fence()).await?;
                let [state] = states;
                let (_, sub) = Arc::try_unwrap(state).map_err(|_| "state still shared".to_owned())?;
                sub.into_inner().unsubscribe();
                Ok(s)
            }
            Side::Theirs => {
                let notice = self.theirs.notice().map_err(fail!("notice"))?;
                let sub = notice.subscribe(route).await.map_err(fail!("subscribe"))?;
                let states = [Arc::new((notice.clone(), tokio::sync::Mutex::new(sub)))];
                let op = move |s: Arc<(cntryl_fitz::client_domains::notice::NoticeClient, tokio::sync::Mutex<_>)>| async move {
                    let mut sub = s.1.lock().await;
                    s.0.publish(route, BODY).await.map_err(fail!("publish"))?;
                    match sub.next().await {
                        Some(Ok(n)) if n.body == BODY => Ok(()),
                        Some(Ok(_)) => Err("notice: wrong body".to_owned()),
                        Some(Err(e)) => Err(format!("delivery: {e}")),
                        None => Err("subscription ended".to_owned()),
                    }
                };
                let s = measure(&states, window, record, op, no_fence()).await?;
                let [state] = states;
                let (_, sub) = Arc::try_unwrap(state).map_err(|_| "state still shared".to_owned())?;
                sub.into_inner().unsubscribe().await.map_err(fail!("unsubscribe"))?;
                Ok(s)
            }
        }
    }

    // -- Queue: one caller enqueues a 64-byte message, reserves it (one
    //    item, 30 s lease) and completes it, one after the other, on a
    //    queue of its own.

    async fn queue(&self, side: Side, window: Duration, record: usize) -> Res<Sample> {
        match side {
            Side::Ours => {
                let route = "queue://bench/q/ours";
                let states = [Arc::new(self.ours.clone())];
                let op = move |c: Arc<fitz_std::Client>| async move {
                    let q = c.queue();
                    q.enqueue(route, BODY).await.map_err(fail!("enqueue"))?;
                    let page = q.reserve(route, 30).await.map_err(fail!("reserve"))?;
                    let m = page.messages().next().ok_or_else(|| "reserve: no message".to_owned())?;
                    if m.body().as_ref() != BODY {
                        return Err("reserve: wrong body".to_owned());
                    }
                    m.complete().await.map_err(fail!("complete"))
                };
                measure(&states, window, record, op, no_fence()).await
            }
            Side::Theirs => {
                let route = "queue://bench/q/theirs";
                let states = [Arc::new(self.theirs.queue().map_err(fail!("queue"))?)];
                let op = move |q: Arc<cntryl_fitz::client_domains::queue::QueueClient>| async move {
                    q.enqueue(route, BODY, None).await.map_err(fail!("enqueue"))?;
                    let items = q.reserve(route, 30, 1, None).await.map_err(fail!("reserve"))?;
                    let m = items.into_iter().next().ok_or_else(|| "reserve: no message".to_owned())?;
                    if m.body != BODY {
                        return Err("reserve: wrong body".to_owned());
                    }
                    m.complete().await.map_err(fail!("complete"))
                };
                measure(&states, window, record, op, no_fence()).await
            }
        }
    }

    // -- Lease: one caller acquires a lease (30 s TTL, no wait) and
    //    releases it, one after the other.

    async fn lease(&self, side: Side, window: Duration, record: usize) -> Res<Sample> {
        match side {
            Side::Ours => {
                let route = "lease://bench/l/ours";
                let states = [Arc::new(self.ours.clone())];
                let op = move |c: Arc<fitz_std::Client>| async move {
                    let held = c.lease().owner("bench-ours").acquire(route, 30).await.map_err(fail!("acquire"))?;
                    held.release().await.map_err(fail!("release"))
                };
                measure(&states, window, record, op, no_fence()).await
            }
            Side::Theirs => {
                let route = "lease://bench/l/theirs";
                let states = [Arc::new(self.theirs.lease().map_err(fail!("lease"))?)];
                let op = move |l: Arc<cntryl_fitz::client_domains::lease::LeaseClient>| async move {
                    let held = l
                        .acquire(
                            route,
                            "bench-theirs",
                            30,
                            cntryl_fitz::client_domains::lease::LeaseAcquireOptions::default(),
                        )
                        .await
                        .map_err(fail!("acquire"))?;
                    held.release().await.map_err(fail!("release"))
                };
                measure(&states, window, record, op, no_fence()).await
            }
        }
    }

    // -- RPC round trip, one call in flight: a 64-byte request to an echo
    //    worker on another connection of the same client library in this
    //    process; the reply's body is checked.

    async fn rpc_call(&self, side: Side, callers: usize, window: Duration, record: usize) -> Res<Sample> {
        let states: Vec<usize> = (0..callers).collect();
        let states: Vec<Arc<usize>> = states.into_iter().map(Arc::new).collect();
        let s = match side {
            Side::Ours => {
                let c = self.ours.clone();
                let op = move |_: Arc<usize>| {
                    let c = c.clone();
                    async move {
                        let reply =
                            rpc::call_once(&c.rpc(), "rpc://bench/ours/echo", BODY).await.map_err(fail!("RPC call"))?;
                        if reply.as_ref() == BODY { Ok(()) } else { Err("RPC: wrong reply".to_owned()) }
                    }
                };
                measure(&states, window, record, op, no_fence()).await?
            }
            Side::Theirs => {
                let rpc = self.theirs.rpc().map_err(fail!("rpc"))?;
                let op = move |_: Arc<usize>| {
                    let rpc = rpc.clone();
                    async move {
                        let mut s = rpc.call("rpc://bench/theirs/echo", BODY).await.map_err(fail!("RPC call"))?;
                        match s.next().await {
                            Some(Ok(f)) if f.body == BODY => Ok(()),
                            Some(Ok(_)) => Err("RPC: wrong reply".to_owned()),
                            Some(Err(e)) => Err(format!("RPC reply: {e}")),
                            None => Err("RPC: no reply".to_owned()),
                        }
                    }
                };
                measure(&states, window, record, op, no_fence()).await?
            }
        };
        self.worker_error()?;
        Ok(s)
    }
}

// ---------------------------------------------------------------------------
// Benchmarks

#[derive(Clone, Copy)]
enum Bench {
    KvGet(usize),
    KvPut(usize),
    KvTxn,
    Notice,
    NoticeLatency,
    Rpc(usize),
    Queue,
    Lease,
}

impl Bench {
    async fn run(self, c: &Clients, side: Side, window: Duration, plan: &Plan) -> Res<Sample> {
        match self {
            Bench::KvGet(n) => c.kv_get(side, n, window).await,
            Bench::KvPut(n) => c.kv_put(side, n, window).await,
            Bench::KvTxn => c.kv_txn(side, window, plan.latency_capacity()).await,
            Bench::Notice => c.notice(side, window).await,
            Bench::NoticeLatency => c.notice_latency(side, window, plan.latency_capacity()).await,
            Bench::Queue => c.queue(side, window, plan.latency_capacity()).await,
            Bench::Lease => c.lease(side, window, plan.latency_capacity()).await,
            Bench::Rpc(n) => c.rpc_call(side, n, window, if n == 1 { plan.latency_capacity() } else { 0 }).await,
        }
    }

    /// (name, unit, value) rows this benchmark reports from its samples.
    fn rows(self) -> Vec<(String, &'static str, Metric)> {
        match self {
            Bench::KvGet(n) => vec![(format!("kv_get_{n}_in_flight"), "ops/s", Metric::Throughput)],
            Bench::KvPut(n) => vec![(format!("kv_put_{n}_in_flight"), "ops/s", Metric::Throughput)],
            Bench::KvTxn => vec![
                ("kv_begin_put_commit_p50".to_owned(), "us", Metric::Percentile(50)),
                ("kv_begin_put_commit_p99".to_owned(), "us", Metric::Percentile(99)),
            ],
            Bench::Notice => vec![("notice_publish".to_owned(), "ops/s", Metric::Throughput)],
            Bench::NoticeLatency => vec![
                ("notice_publish_deliver_p50".to_owned(), "us", Metric::Percentile(50)),
                ("notice_publish_deliver_p99".to_owned(), "us", Metric::Percentile(99)),
            ],
            Bench::Queue => vec![
                ("queue_enqueue_reserve_complete".to_owned(), "ops/s", Metric::Throughput),
                ("queue_enqueue_reserve_complete_p50".to_owned(), "us", Metric::Percentile(50)),
                ("queue_enqueue_reserve_complete_p99".to_owned(), "us", Metric::Percentile(99)),
            ],
            Bench::Lease => vec![
                ("lease_acquire_release".to_owned(), "ops/s", Metric::Throughput),
                ("lease_acquire_release_p50".to_owned(), "us", Metric::Percentile(50)),
                ("lease_acquire_release_p99".to_owned(), "us", Metric::Percentile(99)),
            ],
            Bench::Rpc(1) => vec![
                ("rpc_call_1_in_flight_p50".to_owned(), "us", Metric::Percentile(50)),
                ("rpc_call_1_in_flight_p99".to_owned(), "us", Metric::Percentile(99)),
                ("rpc_call_1_in_flight".to_owned(), "ops/s", Metric::Throughput),
            ],
            Bench::Rpc(n) => vec![(format!("rpc_call_{n}_in_flight"), "ops/s", Metric::Throughput)],
        }
    }
}

#[derive(Clone, Copy)]
enum Metric {
    Throughput,
    Percentile(usize),
}

fn value(s: &mut Sample, m: Metric) -> f64 {
    match m {
        Metric::Throughput => s.throughput(),
        Metric::Percentile(p) => s.percentile_us(p),
    }
}

/// Why the official SDK does not run a benchmark, if it does not.
fn theirs_skipped(bench: Bench, transport: Transport) -> Option<&'static str> {
    let concurrent = matches!(bench, Bench::KvGet(n) | Bench::KvPut(n) | Bench::Rpc(n) if n > 1);
    let forced = std::env::var("FITZ_BENCH_SDK_TCP_CONCURRENT").is_ok_and(|v| !v.is_empty() && v != "0");
    (concurrent && transport == Transport::Tcp && !forced).then_some(
        "cntryl-fitz over TCP with concurrent callers: about 24 ops/s and request timeouts (30 s) in trial runs; \
         skipped (FITZ_BENCH_SDK_TCP_CONCURRENT=1 runs it)",
    )
}

async fn run_bench(c: &Clients, bench: Bench, plan: &Plan) -> Res<Vec<Row>> {
    let skip = theirs_skipped(bench, c.transport);
    let sides: &[Side] = if skip.is_some() { &[Side::Ours] } else { &[Side::Ours, Side::Theirs] };
    // Warm-up: connections, caches, the broker's maps for these routes.
    for &side in sides {
        bench.run(c, side, plan.warmup, plan).await.map_err(|e| format!("{} (warm-up): {e}", side_tag(side)))?;
    }
    let (mut ours, mut theirs) = (Sample::default(), Sample::default());
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 { [Side::Ours, Side::Theirs] } else { [Side::Theirs, Side::Ours] };
        for side in order {
            if !sides.contains(&side) {
                continue;
            }
            let s = bench.run(c, side, plan.window, plan).await.map_err(|e| format!("{}: {e}", side_tag(side)))?;
            match side {
                Side::Ours => ours.add(s),
                Side::Theirs => theirs.add(s),
            }
        }
    }
    let transport = c.transport.name();
    let mut rows = Vec::new();
    for (name, unit, metric) in bench.rows() {
        rows.push(Row {
            name,
            unit,
            transport,
            ours: value(&mut ours, metric),
            theirs: skip.is_none().then(|| value(&mut theirs, metric)),
            ours_allocs: ours.allocs_per_op(),
            theirs_allocs: skip.is_none().then(|| theirs.allocs_per_op()),
            ours_ops: ours.ops,
            theirs_ops: theirs.ops,
            note: skip,
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// The broker, on threads of its own

struct BrokerUrls {
    tcp: String,
    ws: String,
}

struct BrokerThread {
    urls: BrokerUrls,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BrokerThread {
    /// Like `Broker::start_in_background` (a runtime with two workers on
    /// threads of its own), but every thread of that runtime is marked so
    /// that the allocation counts leave the broker out.
    fn start() -> Res<BrokerThread> {
        let (tx, rx) = std::sync::mpsc::channel::<Res<BrokerUrls>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-broker".into())
            .spawn(move || {
                mark_broker_thread();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("bench-broker-rt")
                    .on_thread_start(mark_broker_thread)
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("broker runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let cfg = BrokerConfig::anonymous().with_dialect(Dialect::Current);
                    match Broker::start(cfg).await {
                        Ok(b) => {
                            let urls = match (b.tcp_url(), b.ws_url()) {
                                (Some(tcp), Some(ws)) => Ok(BrokerUrls { tcp, ws }),
                                _ => Err("broker without TCP or WebSocket listener".to_owned()),
                            };
                            let _ = tx.send(urls);
                            let _ = stop_rx.await;
                            b.stop().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("broker start: {e}")));
                        }
                    }
                });
            })
            .map_err(fail!("broker thread"))?;
        let urls = rx.recv().map_err(fail!("broker thread ended"))??;
        Ok(BrokerThread { urls, stop: Some(stop_tx), thread: Some(thread) })
    }
}

impl Drop for BrokerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Main

fn opt(v: Option<f64>, width: usize, prec: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.prec$}"),
        None => format!("{:>width$}", "-"),
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<26} {:<3} {:>5} {:>11} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "benchmark", "tr", "unit", "ours", "theirs", "ratio", "allocs", "allocs", "ops", "ops"
    );
    println!(
        "{:<26} {:<3} {:>5} {:>11} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "", "", "", "", "", "", "/op ours", "/op thr", "ours", "theirs"
    );
    for r in rows {
        println!(
            "{:<26} {:<3} {:>5} {:>11.1} {} {} {:>8.1} {} {:>8} {:>8}",
            r.name,
            r.transport,
            r.unit,
            r.ours,
            opt(r.theirs, 11, 1),
            opt(r.ratio(), 7, 2),
            r.ours_allocs,
            opt(r.theirs_allocs, 8, 1),
            r.ours_ops,
            r.theirs_ops
        );
    }
    println!();
    println!("ratio > 1: ours is better (throughput ours/theirs, latency theirs/ours).");
    println!("allocs/op: alloc+realloc calls on every thread except the broker's, over the measured windows,");
    println!("divided by the operations (RPC: caller and echo worker of the same library both counted).");
    let mut notes: Vec<&str> = rows.iter().filter_map(|r| r.note).collect();
    notes.dedup();
    for n in notes {
        println!("theirs '-': {n}");
    }
}

fn write_json(rows: &[Row]) -> Res<String> {
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::json!({
                "name": r.name,
                "unit": r.unit,
                "ours": round(r.ours),
                "theirs": r.theirs.map(round),
                "ratio": r.ratio().map(round),
                "ours_allocs_per_op": round(r.ours_allocs),
                "theirs_allocs_per_op": r.theirs_allocs.map(round),
                "transport": r.transport,
            });
            if let (Some(note), Some(obj)) = (r.note, v.as_object_mut()) {
                obj.insert("note".to_owned(), note.into());
            }
            v
        })
        .collect();
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    let path = format!("{target}/bench-summary.json");
    let text = serde_json::to_string_pretty(&json).map_err(fail!("JSON"))?;
    std::fs::write(&path, format!("{text}\n")).map_err(fail!("writing bench-summary.json"))?;
    Ok(path)
}

/// Two decimals: enough for the figures, short in the file.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn benches() -> Vec<Bench> {
    vec![
        Bench::KvGet(1),
        Bench::KvGet(64),
        Bench::KvPut(1),
        Bench::KvPut(64),
        Bench::KvTxn,
        Bench::Notice,
        Bench::NoticeLatency,
        Bench::Rpc(1),
        Bench::Queue,
        Bench::Lease,
    ]
}

async fn run(plan: Plan, filter: Option<String>, broker: &BrokerUrls) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    for transport in [Transport::Tcp, Transport::Ws] {
        let clients = Clients::connect(transport, broker).await?;
        for bench in benches() {
            let names = bench.rows();
            if let Some(f) = &filter
                && !names.iter().any(|(n, _, _)| n.contains(f.as_str()))
            {
                continue;
            }
            let started = Instant::now();
            let got = run_bench(&clients, bench, &plan)
                .await
                .map_err(|e| format!("{} over {}: {e}", names[0].0, transport.name()))?;
            for r in &got {
                eprintln!(
                    "e2e: {:<28} {:<3} ours {:>12.1} theirs {} {} ({:.1} s)",
                    r.name,
                    r.transport,
                    r.ours,
                    opt(r.theirs, 12, 1),
                    r.unit,
                    started.elapsed().as_secs_f64()
                );
            }
            rows.extend(got);
        }
        clients.close().await?;
    }
    Ok(rows)
}

fn main() {
    let started = Instant::now();
    let (plan, quick) = Plan::from_env();
    // `cargo bench` passes `--bench`; other flags are ignored too.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    eprintln!(
        "e2e: {} mode: {} rounds of {:?} per client and benchmark, after a {:?} warm-up",
        if quick { "quick" } else { "full" },
        plan.rounds,
        plan.window,
        plan.warmup
    );
    let outcome = (|| -> Res<(Vec<Row>, u64)> {
        let broker = BrokerThread::start()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-client")
            .enable_all()
            .build()
            .map_err(fail!("client runtime"))?;
        let rows = rt.block_on(run(plan, filter, &broker.urls))?;
        drop(rt);
        let broker_allocs = BROKER_ALLOCS.load(Ordering::SeqCst);
        drop(broker);
        Ok((rows, broker_allocs))
    })();
    match outcome {
        Ok((rows, broker_allocs)) => {
            print_table(&rows);
            println!("allocations on the broker's threads (not counted above): {broker_allocs}");
            match write_json(&rows) {
                Ok(path) => println!("wrote {path}"),
                Err(e) => {
                    eprintln!("e2e: {e}");
                    std::process::exit(1);
                }
            }
            println!("e2e: total {:.1} s", started.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("e2e: benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
