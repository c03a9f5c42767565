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
//! Broker-free rows (transport `mem`, `includes_broker: false` in the
//! JSON): our client alone over `fitz_std::memory`, every request answered
//! at once by an in-process responder on a thread of its own (not
//! counted); they show the client's own cost. Every other row includes the
//! broker, which shares the machine's cores with the clients.
//!
//! `cargo bench -p benches --bench e2e` (longer windows), or with
//! `FITZ_BENCH_QUICK=1` (short windows, about a minute). An optional
//! argument that does not start with `-` keeps only the benchmarks whose
//! name contains it; `FITZ_BENCH_TRANSPORT=tcp|ws|mem` keeps one
//! transport. Prints a table and writes `target/bench-summary.json`,
//! `target/bench-summary.md` (the same table in Markdown) and
//! `target/throughput.png` (KV get throughput against concurrent callers)
//! under `$CARGO_TARGET_DIR` if set. Timings never fail the run; a failing
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
            Plan { warmup: Duration::from_millis(300), window: Duration::from_millis(1500), rounds: 4 }
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
    /// Broker-free: our client over `fitz_std::memory`, answered by an
    /// in-process responder (no broker, no socket).
    Memory,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
            Transport::Memory => "mem",
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
    /// Everything of the official SDK and our RPC worker: absent
    /// broker-free.
    broker: Option<BrokerSide>,
    theirs_worker_error: Arc<Mutex<Option<String>>>,
}

struct BrokerSide {
    ours_worker: fitz_std::Client,
    serving: rpc::Serving,
    theirs: cntryl_fitz::Client,
    theirs_worker: cntryl_fitz::Client,
    theirsserving: tokio::task::JoinHandle<()>,
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
            Transport::Ws | Transport::Memory => broker.ws.clone(),
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

        seed(&ours).await?;
        let broker = Some(BrokerSide { ours_worker, serving, theirs, theirs_worker, theirsserving });
        Ok(Clients { transport, ours, broker, theirs_worker_error })
    }

    /// Our client alone over an in-memory link, answered by
    /// [`respond`] on `responder` (a runtime whose threads are not
    /// counted).
    async fn memory(responder: &tokio::runtime::Handle) -> Res<Clients> {
        let (link, peer) = fitz_std::memory::link();
        responder.spawn(respond(peer));
        let ours = fitz_std::Client::builder("memory:")
            .connect_in_memory(link)
            .await
            .map_err(fail!("connect (ours, in memory)"))?;
        seed(&ours).await?;
        Ok(Clients { transport: Transport::Memory, ours, broker: None, theirs_worker_error: Arc::default() })
    }

    fn theirs(&self) -> Res<&cntryl_fitz::Client> {
        self.broker.as_ref().map(|b| &b.theirs).ok_or_else(|| "no official SDK client broker-free".to_owned())
    }

    fn worker_error(&self) -> Res<()> {
        match self.theirs_worker_error.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn close(self) -> Res<()> {
        self.ours.close().await;
        if let Some(b) = self.broker {
            b.theirsserving.abort();
            drop(b.serving);
            b.ours_worker.close().await;
            b.theirs.close().await.map_err(fail!("close (theirs)"))?;
            b.theirs_worker.close().await.map_err(fail!("close (theirs, worker)"))?;
        }
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
                let kv = self.theirs()?.kv().map_err(fail!("kv"))?;
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
                let kv = self.theirs()?.kv().map_err(fail!("kv"))?;
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
                let states = [Arc::new(self.theirs()?.kv().map_err(fail!("kv"))?)];
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
                    fence_delivered(tokio::time::timeout(Duration::from_secs(30), sub.next()).await)
                };
                let op = move |c: Arc<fitz_std::Client>| async move {
                    c.notice().publish(load, BODY).await.map_err(fail!("publish"))
                };
                let s = measure(&states, window, 0, op, fence).await?;
                sub.unsubscribe();
                Ok(s)
            }
            Side::Theirs => {
                let notice = self.theirs()?.notice().map_err(fail!("notice"))?;
                let mut sub = notice.subscribe(&fence_route).await.map_err(fail!("subscribe"))?;
                let states = [Arc::new(notice.clone())];
                let fence = async {
                    notice.publish(&fence_route, b"fence").await.map_err(fail!("publish (fence)"))?;
                    fence_delivered(tokio::time::timeout(Duration::from_secs(30), sub.next()).await)
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
                type OurNotices = fitz_std::core::ops::notice::Notices<fitz_std::Handle>;
                let op = move |s: Arc<(fitz_std::Client, tokio::sync::Mutex<OurNotices>)>| async move {
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
                type TheirNotices = cntryl_fitz::client_domains::notice::NoticeSubscription;
                let notice = self.theirs()?.notice().map_err(fail!("notice"))?;
                let sub = notice.subscribe(route).await.map_err(fail!("subscribe"))?;
                let states = [Arc::new((notice.clone(), tokio::sync::Mutex::new(sub)))];
                let op = move |s: Arc<(
                    cntryl_fitz::client_domains::notice::NoticeClient,
                    tokio::sync::Mutex<TheirNotices>,
                )>| async move {
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
                let states = [Arc::new(self.theirs()?.queue().map_err(fail!("queue"))?)];
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
                let states = [Arc::new(self.theirs()?.lease().map_err(fail!("lease"))?)];
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
                let rpc = self.theirs()?.rpc().map_err(fail!("rpc"))?;
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

/// The key every get reads.
async fn seed(ours: &fitz_std::Client) -> Res<()> {
    let tx = ours.kv().begin(GET_ROUTE, TxMode::ReadWrite).await.map_err(fail!("KV begin (seed)"))?;
    tx.put(KEY, VALUE).await.map_err(fail!("KV put (seed)"))?;
    tx.commit().await.map_err(fail!("KV commit (seed)"))
}

// ---------------------------------------------------------------------------
// Broker-free: an in-process responder

/// Plays a broker of the current dialect (correlation, RPC cancellation)
/// over an in-memory link, with canned replies built with fitz-wire:
/// SERVER_HELLO to CONNECT; KV BEGIN/GET (the benchmark's 100-byte value)
/// /PUT/COMMIT/ROLLBACK answered OK; RPC REQUEST echoed as a one-shot
/// RESPONSE; a Notice SUBSCRIBE gets the next subscription id, and a
/// PUBLISH to a route that is not a `/load/` route is delivered to the
/// latest subscription; other Notice publishes are dropped. Anything else
/// is ignored (a benchmark that needs it times out and fails).
async fn respond(peer: fitz_std::memory::Peer) {
    use fitz_wire::frame::{LabelledRecords, Transport as Wire, encode_frame};
    use fitz_wire::{Capabilities, Encode, MsgType, Payload, Reply, Typed, control, kv, notice, rpc as wrpc};

    fn put<E: Encode>(out: &mut Vec<u8>, label: Option<std::num::NonZeroU64>, msg: &E) {
        let start = out.len();
        out.resize(start + 64 * 1024, 0);
        let label = label.map(|l| (MsgType::CORRELATED, l));
        let n = encode_frame(Wire::Tcp, label, msg, &mut out[start..]).unwrap_or(0);
        out.truncate(start + n);
    }

    let (mut inbox, mut out) = (Vec::with_capacity(1 << 20), Vec::with_capacity(1 << 20));
    let mut sub_id = 0u64;
    while peer.recv(&mut inbox).await.is_ok() {
        for frame in fitz_std::core::driver::tcp_frames(&inbox) {
            for r in LabelledRecords::from_client(frame) {
                let Ok(r) = r else { continue };
                let (ty, p, label) = (r.record.msg_type, r.record.payload, r.label);
                match ty {
                    MsgType::CONNECT => {
                        let caps = Capabilities::CORRELATION | Capabilities::RPC_CANCELLATION;
                        put(
                            &mut out,
                            None,
                            &control::ServerHello { protocol_version: 1, capabilities: caps, trailing: &[] },
                        );
                    }
                    MsgType::KV_BEGIN => put(&mut out, label, &Typed::new(ty, Reply::Ok(kv::BeginOk { tx_id: 1 }))),
                    MsgType::KV_GET => {
                        put(&mut out, label, &Typed::new(ty, Reply::Ok(kv::GetOk { value: Some(VALUE) })))
                    }
                    MsgType::KV_PUT | MsgType::KV_COMMIT | MsgType::KV_ROLLBACK | MsgType::NOTICE_UNSUBSCRIBE => {
                        put(&mut out, label, &Typed::new(ty, Reply::Ok(())));
                    }
                    MsgType::NOTICE_SUBSCRIBE => {
                        sub_id += 1;
                        put(&mut out, label, &Typed::new(ty, Reply::Ok(notice::SubscribeOk { sub_id })));
                    }
                    MsgType::NOTICE_PUBLISH => {
                        if let Ok(publ) = notice::Publish::decode(p)
                            && !publ.route.contains("/load/")
                        {
                            put(&mut out, None, &notice::Notify { sub_id, route: publ.route, body: publ.body });
                        }
                    }
                    MsgType::RPC_REQUEST => {
                        if let Ok(req) = wrpc::Request::decode_with(p, true) {
                            put(&mut out, None, &wrpc::Response::last(req.correlation_id, 0, req.body));
                        }
                    }
                    _ => {}
                }
            }
        }
        inbox.clear();
        if !out.is_empty() {
            if peer.send(&out).is_err() {
                return;
            }
            out.clear();
        }
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
    if transport == Transport::Memory {
        return Some(
            "broker-free: our client alone over fitz_std::memory, every request answered by an in-process \
             responder with canned replies (no broker, no socket); the official SDK has no such transport",
        );
    }
    let concurrent = matches!(bench, Bench::KvGet(n) | Bench::KvPut(n) | Bench::Rpc(n) if n > 1);
    let forced = std::env::var("FITZ_BENCH_SDK_TCP_CONCURRENT").is_ok_and(|v| !v.is_empty() && v != "0");
    (concurrent && transport == Transport::Tcp && !forced).then_some(
        "cntryl-fitz over TCP with concurrent callers: about 24 ops/s and request timeouts (30 s) in trial runs; \
         skipped (FITZ_BENCH_SDK_TCP_CONCURRENT=1 runs it)",
    )
}

async fn run_bench(c: &Clients, bench: Bench, plan: &Plan) -> Res<Vec<Row>> {
    let mut skip = theirs_skipped(bench, c.transport);
    let mut sides: &[Side] = if skip.is_some() { &[Side::Ours] } else { &[Side::Ours, Side::Theirs] };
    // A failure of the official SDK is its result, not a broken
    // benchmark: the row keeps ours and says why theirs is missing.
    let theirs_failed = |e: String| -> Option<&'static str> {
        eprintln!("e2e: cntryl-fitz failed: {e}");
        Some(Box::leak(format!("cntryl-fitz 0.2.0 failed in this run: {e}").into_boxed_str()))
    };
    // Warm-up: connections, caches, the broker's maps for these routes.
    for &side in sides {
        match bench.run(c, side, plan.warmup, plan).await {
            Ok(_) => {}
            Err(e) if side == Side::Theirs => {
                skip = theirs_failed(e);
                sides = &[Side::Ours];
            }
            Err(e) => return Err(format!("{} (warm-up): {e}", side_tag(side))),
        }
    }
    let (mut ours, mut theirs) = (Sample::default(), Sample::default());
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 { [Side::Ours, Side::Theirs] } else { [Side::Theirs, Side::Ours] };
        for side in order {
            if !sides.contains(&side) {
                continue;
            }
            let s = match bench.run(c, side, plan.window, plan).await {
                Ok(s) => s,
                Err(e) if side == Side::Theirs => {
                    skip = theirs_failed(e);
                    sides = &[Side::Ours];
                    continue;
                }
                Err(e) => return Err(format!("{}: {e}", side_tag(side))),
            };
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
                "includes_broker": r.transport != "mem",
            });
            if let (Some(note), Some(obj)) = (r.note, v.as_object_mut()) {
                obj.insert("note".to_owned(), note.into());
            }
            v
        })
        .collect();
    let path = format!("{}/bench-summary.json", target_dir());
    let text = serde_json::to_string_pretty(&json).map_err(fail!("JSON"))?;
    std::fs::write(&path, format!("{text}\n")).map_err(fail!("writing bench-summary.json"))?;
    Ok(path)
}

fn target_dir() -> String {
    std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned())
}

/// The table of every row as Markdown, for PERF.md (one run, pasted as
/// written).
fn write_markdown(rows: &[Row]) -> Res<String> {
    let mut md = String::from(
        "| benchmark | transport | unit | ours | theirs | ratio | allocs/op ours | allocs/op theirs |\n\
         |---|---|---|---:|---:|---:|---:|---:|\n",
    );
    let f = |v: Option<f64>, unit: &str| match v {
        Some(v) if unit == "ops/s" => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "–".to_owned(),
    };
    for r in rows {
        let transport = match r.transport {
            "mem" => "broker-free",
            t => t,
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
            r.name,
            transport,
            r.unit,
            f(Some(r.ours), r.unit),
            f(r.theirs, r.unit),
            r.ratio().map_or("–".to_owned(), |x| format!("{x:.2}")),
            r.ours_allocs,
            r.theirs_allocs.map_or("–".to_owned(), |x| format!("{x:.2}")),
        ));
    }
    let path = format!("{}/bench-summary.md", target_dir());
    std::fs::write(&path, md).map_err(fail!("writing bench-summary.md"))?;
    Ok(path)
}

/// KV get throughput against concurrent callers, every client and
/// transport that ran the sweep, as a PNG. Needs a TrueType font (DejaVu
/// Sans, as Debian installs it, or `FITZ_BENCH_FONT`).
fn plot(rows: &[Row]) -> Res<String> {
    use plotters::prelude::*;
    let candidates = [
        std::env::var("FITZ_BENCH_FONT").unwrap_or_default(),
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_owned(),
        "/usr/share/fonts/TTF/DejaVuSans.ttf".to_owned(),
    ];
    let font = candidates
        .iter()
        .filter(|p| !p.is_empty())
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| "no TrueType font found (set FITZ_BENCH_FONT)".to_owned())?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font).map_err(|_| "font not usable".to_owned())?;

    let series = |transport: &str, theirs: bool| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.transport == transport && r.unit == "ops/s")
            .filter_map(|r| {
                let n: f64 = r.name.strip_prefix("kv_get_")?.strip_suffix("_in_flight")?.parse().ok()?;
                let y = if theirs { r.theirs? } else { r.ours };
                Some((n, y))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let lines = [
        ("fitz-std, TCP (with broker)", series("tcp", false), RGBColor(0x1f, 0x77, 0xb4)),
        ("fitz-std, WebSocket (with broker)", series("ws", false), RGBColor(0x2c, 0xa0, 0x2c)),
        ("cntryl-fitz 0.2.0, WebSocket (with broker)", series("ws", true), RGBColor(0xd6, 0x27, 0x28)),
        ("cntryl-fitz 0.2.0, TCP (with broker; 1 caller only)", series("tcp", true), RGBColor(0xff, 0x7f, 0x0e)),
        ("fitz-std, broker-free (in-memory responder)", series("mem", false), RGBColor(0x94, 0x67, 0xbd)),
    ];
    let ymax = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(1.0, f64::max) * 3.0;
    let ymin = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(f64::MAX, f64::min).max(1.0) / 3.0;
    let path = format!("{}/throughput.png", target_dir());
    let err = |e: &dyn std::fmt::Debug| format!("plot: {e:?}");
    {
        let root = BitMapBackend::new(&path, (1000, 650)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("KV get throughput vs concurrent callers (one client, one 100-byte value)", ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d((0.8f64..320f64).log_scale(), (ymin..ymax).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("concurrent callers (log scale)")
            .y_desc("operations per second (log scale)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        for (label, data, color) in lines.iter().filter(|l| !l.1.is_empty()) {
            let color = *color;
            chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(data.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(path)
}

/// Two decimals: enough for the figures, short in the file.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// KV get callers of the throughput-vs-concurrency plot.
const SWEEP: [usize; 5] = [1, 4, 16, 64, 256];

fn benches(transport: Transport) -> Vec<Bench> {
    let mut v: Vec<Bench> = SWEEP.iter().map(|&n| Bench::KvGet(n)).collect();
    if transport == Transport::Memory {
        v.extend([
            Bench::KvPut(1),
            Bench::KvPut(64),
            // KV begin+put+commit on an in-process echo.
            Bench::KvTxn,
            Bench::Notice,
            Bench::NoticeLatency,
            Bench::Rpc(1),
            Bench::Rpc(1000),
        ]);
        return v;
    }
    v.extend(vec![
        Bench::KvPut(1),
        Bench::KvPut(64),
        Bench::KvTxn,
        Bench::Notice,
        Bench::NoticeLatency,
        Bench::Rpc(1),
        Bench::Queue,
        Bench::Lease,
        // Last: the official SDK may fail it and leave its worker busy.
        Bench::Rpc(1000),
    ]);
    v
}

async fn run(
    plan: Plan,
    filter: Option<String>,
    broker: &BrokerUrls,
    responder: &tokio::runtime::Handle,
) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    // `FITZ_BENCH_TRANSPORT=tcp|ws|mem` keeps one transport (profiling).
    let only = std::env::var("FITZ_BENCH_TRANSPORT").ok().filter(|t| !t.is_empty());
    for transport in [Transport::Tcp, Transport::Ws, Transport::Memory] {
        if only.as_deref().is_some_and(|t| t != transport.name()) {
            continue;
        }
        let clients = match transport {
            Transport::Memory => Clients::memory(responder).await?,
            _ => Clients::connect(transport, broker).await?,
        };
        for bench in benches(transport) {
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
        // The broker-free responder: one thread, not counted, like the
        // broker's.
        let responder = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-responder")
            .on_thread_start(mark_broker_thread)
            .enable_all()
            .build()
            .map_err(fail!("responder runtime"))?;
        let rows = rt.block_on(run(plan, filter, &broker.urls, responder.handle()))?;
        drop(rt);
        drop(responder);
        let broker_allocs = BROKER_ALLOCS.load(Ordering::SeqCst);
        drop(broker);
        Ok((rows, broker_allocs))
    })();
    match outcome {
        Ok((rows, broker_allocs)) => {
            print_table(&rows);
            println!("allocations on the broker's threads (not counted above): {broker_allocs}");
            match write_json(&rows).and_then(|j| Ok((j, write_markdown(&rows)?))) {
                Ok((json, md)) => println!("wrote {json} and {md}"),
                Err(e) => {
                    eprintln!("e2e: {e}");
                    std::process::exit(1);
                }
            }
            // The plot is for reading: a missing font is reported, not a
            // failure.
            match plot(&rows) {
                Ok(path) => println!("wrote {path}"),
                Err(e) => eprintln!("e2e: no plot: {e}"),
            }
            println!("e2e: total {:.1} s", started.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("e2e: benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}

/// The outcome of waiting for a fence notice, for either client.
fn fence_delivered<T, E: std::fmt::Display>(r: Result<Option<Result<T, E>>, tokio::time::error::Elapsed>) -> Res<()> {
    match r {
        Ok(Some(Ok(_))) => Ok(()),
        Ok(Some(Err(e))) => Err(format!("fence delivery: {e}")),
        Ok(None) => Err("fence subscription ended".to_owned()),
        Err(_) => Err("fence not delivered within 30 s".to_owned()),
    }
}
