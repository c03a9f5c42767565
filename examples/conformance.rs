//! The cross-language conformance suite (CS-001 … CS-018) run by fitz-std.
//!
//! ```sh
//! cargo run -p fitz-std --example conformance
//! ```
//!
//! The scenario list (ids, titles, priorities, which transports and auth
//! modes each one runs on) is read at run time from the broker repository's
//! `conformance-suite.yaml` (`FITZ_CONFORMANCE_SUITE`, default
//! `../shared/spec/conformance-suite.yaml`); the scenarios themselves are
//! the code below. The matrix is {tcp, websocket} × {anonymous, valid_jwt},
//! plus invalid_jwt legs for the scenarios that list it; set
//! `CONFORMANCE_TRANSPORT` / `CONFORMANCE_AUTH_MODE` to run one leg.
//!
//! Brokers: the four addresses of BROKER.md §13 when set
//! (`FITZ_BROKER_ANON_TCP_ADDR`, `FITZ_BROKER_ANON_WS_ADDR`,
//! `FITZ_BROKER_AUTH_TCP_ADDR`, `FITZ_BROKER_AUTH_WS_ADDR`, tokens from
//! `FITZ_BROKER_JWT_HMAC_SECRET` / `_AUDIENCE` / `_TENANT`); otherwise two
//! fitz-testkit brokers (anonymous and JWT) started here, in the dialect of
//! `FITZ_CONFORMANCE_DIALECT` (`current`, the default, or `legacy`).
//! CS-009 and CS-010 cut the connection of the same client through
//! fitz-testkit's fault relay, placed in front of the leg's endpoint.
//!
//! Results go to `CONFORMANCE_OUTPUT` (default
//! `target/conformance-results.json`) in the suite's result schema; the last
//! line printed is `N passed, M failed`; the exit status is non-zero unless
//! every P0 and P1 scenario passed.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used, clippy::indexing_slicing)]

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use fitz_std::core::State;
use fitz_std::core::ops::kv::TxMode;
use fitz_std::core::ops::stream::{Clause, PageItem, Query};
use fitz_std::rpc::{Failure, WorkerEvent};
use fitz_std::{Client, Error};
use fitz_testkit::relay::Relay;
use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, Dialect, JwtConfig};
use fitz_wire::schedule::DeliveryMode;
use serde_json::json;

type Evidence = Vec<String>;
type Outcome = Result<Evidence, String>;
type Scenario = for<'a> fn(&'a Leg) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A scenario of the suite file.
struct Spec {
    id: String,
    title: String,
    priority: String,
    transports: Vec<String>,
    auth_modes: Vec<String>,
}

/// One cell of the matrix.
struct Leg {
    transport: &'static str,
    url: String,
    token: Option<String>,
    /// A relay in front of `url`.
    relay: Relay,
    relay_url: String,
    /// A route prefix unique to this leg and run.
    tag: String,
}

impl Leg {
    fn builder(&self, url: &str) -> fitz_std::Builder {
        let b = Client::builder(url.to_owned()).settle_window(Duration::from_millis(300));
        match &self.token {
            Some(t) => b.token(t.clone()),
            None => b.anonymous(),
        }
    }

    async fn client(&self) -> Result<Client, String> {
        self.builder(&self.url).connect().await.map_err(|e| format!("connect: {e}"))
    }

    fn route(&self, scheme: &str, name: &str) -> String {
        format!("{scheme}://{}/{}/{name}", self.tag, self.transport)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn with_scheme(addr: String) -> String {
    if addr.contains("://") { addr } else { format!("tcp://{addr}") }
}

fn token(valid: bool) -> String {
    let mut spec = TokenSpec::official();
    if let Some(s) = env("FITZ_BROKER_JWT_HMAC_SECRET") {
        spec.secret = s;
    }
    if let Some(a) = env("FITZ_BROKER_JWT_AUDIENCE") {
        spec.audience = a;
    }
    if let Some(t) = env("FITZ_BROKER_JWT_TENANT") {
        spec.tenant = t;
    }
    if valid { spec.sign() } else { spec.sign_with(&format!("{}-invalid", spec.secret)) }
}

/// Reads the scenario list from the suite file (a file of the broker's
/// repository: never copied into this project).
fn load_suite() -> Result<Vec<Spec>, String> {
    let path = env("FITZ_CONFORMANCE_SUITE").unwrap_or_else(|| "../shared/spec/conformance-suite.yaml".into());
    let text = std::fs::read_to_string(&path)
        .or_else(|_| std::fs::read_to_string(format!("../{path}")))
        .map_err(|e| format!("cannot read the suite file {path}: {e}"))?;
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let doc = docs.first().ok_or("empty suite file")?;
    let list = doc["scenarios"].as_vec().ok_or("no scenarios in the suite file")?;
    let strings = |v: &yaml_rust2::Yaml| -> Vec<String> {
        v.as_vec().map(|l| l.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    Ok(list
        .iter()
        .map(|s| Spec {
            id: s["id"].as_str().unwrap_or("?").to_owned(),
            title: s["title"].as_str().unwrap_or("").to_owned(),
            priority: s["priority"].as_str().unwrap_or("P1").to_owned(),
            transports: strings(&s["setup"]["transport"]),
            auth_modes: strings(&s["setup"]["auth_mode"]),
        })
        .collect())
}

fn scenario(id: &str) -> Option<Scenario> {
    Some(match id {
        "CS-001" => |l| Box::pin(cs001(l)),
        "CS-002" => |l| Box::pin(cs002(l)),
        "CS-003" => |l| Box::pin(cs003(l)),
        "CS-004" => |l| Box::pin(cs004(l)),
        "CS-005" => |l| Box::pin(cs005(l)),
        "CS-006" => |l| Box::pin(cs006(l)),
        "CS-007" => |l| Box::pin(cs007(l)),
        "CS-008" => |l| Box::pin(cs008(l)),
        "CS-009" => |l| Box::pin(cs009(l)),
        "CS-010" => |l| Box::pin(cs010(l)),
        "CS-011" => |l| Box::pin(cs011(l)),
        "CS-012" => |l| Box::pin(cs012(l)),
        "CS-013" => |l| Box::pin(cs013(l)),
        "CS-014" => |l| Box::pin(cs014(l)),
        "CS-015" => |l| Box::pin(cs015(l)),
        "CS-016" => |l| Box::pin(cs016(l)),
        "CS-017" => |l| Box::pin(cs017(l)),
        "CS-018" => |l| Box::pin(cs018(l)),
        _ => return None,
    })
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn e2s(e: Error) -> String {
    format!("{e} ({e:?})")
}

// ----- P0 ----------------------------------------------------------------

async fn cs001(l: &Leg) -> Outcome {
    let c = l.builder(&l.url).start().map_err(e2s)?;
    let mut states = vec![format!("{:?}", c.state())];
    let mut s = c.state();
    while s != State::Authenticated {
        s = c.changed(s).await;
        states.push(format!("{s:?}"));
        check!(s != State::Closed, "closed before authenticating: {states:?}");
    }
    let tx = c.kv().begin(&l.route("kv", "cs001"), TxMode::ReadOnly).await.map_err(e2s)?;
    let got = tx.get(b"absent").await.map_err(e2s)?;
    tx.rollback().await.map_err(e2s)?;
    let dialect = c.dialect();
    c.close().await;
    Ok(vec![format!("states: {}", states.join(" -> ")), format!("dialect {dialect:?}; kv get -> {got:?}")])
}

async fn cs002(l: &Leg) -> Outcome {
    let r = l.builder(&l.url).no_reconnect().connect().await;
    match r {
        Err(Error::AuthenticationFailed) => Ok(vec!["connect -> Error::AuthenticationFailed".into()]),
        Err(e) => Err(format!("connect failed, but not as an authentication error: {e:?}")),
        Ok(c) => {
            let s = c.state();
            c.close().await;
            Err(format!("connect succeeded with an invalid token (state {s:?})"))
        }
    }
}

async fn cs003(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("kv", "cs003");
    let tx = c.kv().begin(&route, TxMode::ReadWrite).await.map_err(e2s)?;
    tx.put(b"greeting", b"hello").await.map_err(e2s)?;
    tx.commit().await.map_err(e2s)?;
    let tx = c.kv().begin(&route, TxMode::ReadOnly).await.map_err(e2s)?;
    let got = tx.get(b"greeting").await.map_err(e2s)?;
    tx.rollback().await.map_err(e2s)?;
    c.close().await;
    check!(got.as_deref() == Some(&b"hello"[..]), "read after commit returned {got:?}");
    Ok(vec!["begin/put/commit ok; read-after-commit = \"hello\"".into()])
}

async fn cs004(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let r = fitz_std::rpc::call_once(&c.rpc().timeout_ms(5000), &l.route("rpc", "nobody-serves-this"), b"?").await;
    let after = c.kv().begin(&l.route("kv", "cs004"), TxMode::ReadOnly).await.map_err(e2s)?;
    drop(after);
    c.close().await;
    match r {
        Err(Error::Server(f)) if f.code.is_some() => Ok(vec![format!(
            "rpc to an unserved route -> Error::Server code {:?} {:?} domain {:?}",
            f.code,
            f.name(),
            f.domain
        )]),
        other => Err(format!("expected a typed domain error, got {other:?}")),
    }
}

async fn cs005(l: &Leg) -> Outcome {
    let c = l.client().await?;
    // A cron expression the broker cannot parse: a malformed request.
    let r = c.schedule().create(&l.route("schedule", "cs005/x"), "not a cron", DeliveryMode::Broadcast, b"").await;
    let e = match r {
        Err(Error::Server(f)) => f,
        other => return Err(format!("expected a broker error for a malformed request, got {other:?}")),
    };
    // Still usable.
    let route = l.route("kv", "cs005");
    let tx = c.kv().begin(&route, TxMode::ReadWrite).await.map_err(e2s)?;
    tx.put(b"k", b"v").await.map_err(e2s)?;
    tx.commit().await.map_err(e2s)?;
    c.close().await;
    Ok(vec![format!("malformed cron -> Error::Server {:?} \"{}\"", e.code, e.message), "next KV transaction ok".into()])
}

async fn cs006(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let tx = c.kv().begin(&l.route("kv", "cs006"), TxMode::ReadWrite).await.map_err(e2s)?;
    tx.insert(b"k", b"1").await.map_err(e2s)?;
    let dup = tx.insert(b"k", b"2").await;
    tx.rollback().await.map_err(e2s)?;
    c.close().await;
    match dup {
        Err(Error::Server(f)) if f.code == Some(1006) => Ok(vec![format!(
            "duplicate INSERT -> code 1006 {:?}, domain {:?}, retryable {}",
            f.name(),
            f.domain,
            f.retryable
        )]),
        other => Err(format!("expected code 1006, got {other:?}")),
    }
}

async fn cs007(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("rpc", "cs007-slow");
    // A worker that never answers.
    let mut worker = c.rpc().serve(&route, 4).await.map_err(e2s)?;
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(Ok(ev)) = worker.next().await {
            held.push(ev);
        }
    });
    let t = Instant::now();
    let r = fitz_std::rpc::call_once(&c.rpc().timeout_ms(300), &route, b"wait").await;
    let took = t.elapsed();
    check!(r == Err(Error::Timeout), "expected Error::Timeout, got {r:?}");
    let tx = c.kv().begin(&l.route("kv", "cs007"), TxMode::ReadOnly).await.map_err(e2s)?;
    tx.rollback().await.map_err(e2s)?;
    hold.abort();
    c.close().await;
    Ok(vec![format!("call with a 300 ms deadline -> Error::Timeout after {took:?}"), "next request ok".into()])
}

async fn cs008(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("rpc", "cs008-slow");
    let mut worker = c.rpc().serve(&route, 4).await.map_err(e2s)?;
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
    let watch = tokio::spawn(async move {
        let mut seen_tx = Some(seen_tx);
        let mut held = Vec::new();
        while let Some(Ok(ev)) = worker.next().await {
            match ev {
                WorkerEvent::Cancelled(c) => {
                    if let Some(tx) = seen_tx.take() {
                        let _ = tx.send(format!("worker saw the cancellation ({:?})", c.reason));
                    }
                }
                other => held.push(other),
            }
        }
    });
    let call = fitz_std::rpc::call(&c.rpc(), &route, b"wait").await.map_err(e2s)?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = call.cancel().await.map_err(e2s)?;
    let mut ev = vec![format!("Call::cancel -> {status:?} (a cancellation, not a timeout)")];
    if c.has(fitz_std::rpc::CAP_CANCELLATION) {
        check!(status.is_some(), "the broker supports cancellation but did not answer");
        let seen = tokio::time::timeout(Duration::from_secs(5), seen_rx).await;
        check!(matches!(seen, Ok(Ok(_))), "the worker was not signalled");
        ev.push(seen.unwrap().unwrap());
    } else {
        ev.push("legacy broker: the call is abandoned locally (no RPC_CANCEL in this dialect)".into());
    }
    let tx = c.kv().begin(&l.route("kv", "cs008"), TxMode::ReadOnly).await.map_err(e2s)?;
    tx.rollback().await.map_err(e2s)?;
    ev.push("next request ok".into());
    watch.abort();
    c.close().await;
    Ok(ev)
}

// ----- P1 ----------------------------------------------------------------

fn describe<P: fitz_std::core::Buf>(item: &PageItem<P>) -> String {
    match item {
        PageItem::Event(e) => format!("record@{}", e.record.resource_offset),
        PageItem::Filtered { offset, .. } => format!("filtered@{offset}"),
        PageItem::FilteredRange { from_offset, to_offset, .. } => format!("filtered@{from_offset}..={to_offset}"),
    }
}

fn relay_builder(l: &Leg) -> fitz_std::Builder {
    l.builder(&l.relay_url).reconnect(fitz_std::core::driver::Reconnect {
        initial_ms: 50,
        max_ms: 400,
        ..Default::default()
    })
}

async fn cs009(l: &Leg) -> Outcome {
    let c = relay_builder(l).connect().await.map_err(e2s)?;
    let route = l.route("kv", "cs009");
    let tx = c.kv().begin(&route, TxMode::ReadWrite).await.map_err(e2s)?;
    // Hold the bytes in the relay so the request stays in flight, then cut.
    l.relay.set_delay(Duration::from_secs(30));
    let pending = tokio::spawn(async move { (tx.get(b"k").await, tx) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    l.relay.set_delay(Duration::ZERO);
    l.relay.cut_all();
    let (r, _tx) = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .map_err(|_| "the in-flight request did not fail promptly".to_string())?
        .map_err(|e| e.to_string())?;
    let failed_after = t.elapsed();
    check!(r == Err(Error::ConnectionLost), "expected Error::ConnectionLost, got {r:?}");
    let mut s = c.state();
    let mut states = vec![format!("{s:?}")];
    tokio::time::timeout(Duration::from_secs(10), async {
        while s != State::Authenticated {
            s = c.changed(s).await;
            states.push(format!("{s:?}"));
        }
    })
    .await
    .map_err(|_| format!("no reconnect: {states:?}"))?;
    check!(states.iter().any(|s| s == "Reconnecting"), "no Reconnecting state: {states:?}");
    c.close().await;
    Ok(vec![
        format!("in-flight GET -> Error::ConnectionLost {failed_after:?} after the cut"),
        format!("states after the cut: {}", states.join(" -> ")),
    ])
}

async fn cs010(l: &Leg) -> Outcome {
    let c = relay_builder(l).connect().await.map_err(e2s)?;
    let other = l.client().await?;
    let notice_pattern = l.route("notice", "*");
    let mut notices = c.notice().subscribe(&notice_pattern).await.map_err(e2s)?;
    let rpc_route = l.route("rpc", "cs010-echo");
    let serving =
        fitz_std::rpc::serve(
            &c.rpc(),
            &rpc_route,
            4,
            |req, _chunks| async move { Ok::<_, Failure>(req.body().clone()) },
        )
        .await
        .map_err(e2s)?;
    let kv_route = l.route("kv", "cs010");
    let tx = c.kv().begin(&kv_route, TxMode::ReadWrite).await.map_err(e2s)?;
    let epoch = c.epoch();

    let t = Instant::now();
    l.relay.cut_all();
    let mut s = c.state();
    let mut states = vec![format!("{s:?}")];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(s == State::Authenticated && c.epoch() != epoch) {
            s = c.changed(s).await;
            states.push(format!("{s:?}"));
        }
    })
    .await
    .map_err(|_| format!("no reconnect: {states:?}"))?;
    let back_after = t.elapsed();
    let mut ev = vec![
        format!("same client instance; states: {}", states.join(" -> ")),
        format!("re-authenticated {back_after:?} after the cut (backoff 50 ms initial)"),
    ];
    // Stale handle.
    let stale = tx.put(b"k", b"v").await;
    check!(stale == Err(Error::StaleHandle), "old transaction: expected StaleHandle, got {stale:?}");
    ev.push("old KV transaction -> Error::StaleHandle".into());
    // Subscription rebuilt.
    other.notice().publish(&l.route("notice", "after"), b"after").await.map_err(e2s)?;
    let n = tokio::time::timeout(Duration::from_secs(5), notices.next())
        .await
        .map_err(|_| "no notification after the reconnect".to_string())?;
    check!(matches!(&n, Some(Ok(x)) if x.body().as_ref() == b"after"), "unexpected {n:?}");
    ev.push("notice subscription restored and delivering".into());
    // Worker registration rebuilt.
    let echo = fitz_std::rpc::call_once(&other.rpc().timeout_ms(5000), &rpc_route, b"ping").await.map_err(e2s)?;
    check!(echo.as_ref() == b"ping", "echo returned {echo:?}");
    ev.push("RPC worker re-registered and answering".into());
    // New requests succeed.
    let tx = c.kv().begin(&kv_route, TxMode::ReadWrite).await.map_err(e2s)?;
    tx.put(b"k", b"v").await.map_err(e2s)?;
    tx.commit().await.map_err(e2s)?;
    ev.push("new KV transaction ok".into());
    serving.stop();
    c.close().await;
    other.close().await;
    Ok(ev)
}

/// Appends `n` records to `route` in one session.
async fn append(c: &Client, route: &str, bodies: &[(&[u8], Option<&str>)]) -> Result<(), String> {
    use fitz_std::core::ops::stream::Extra;
    let last = c.stream().last(route).await.map_err(e2s)?;
    let mut next = last.map_or(0, |r| r.resource_offset + 1);
    let s = c.stream().begin(route).await.map_err(e2s)?;
    for (body, disc) in bodies {
        s.append_with(next, body, Extra { metadata: &[], discriminator: disc.unwrap_or("") }).await.map_err(e2s)?;
        next += 1;
    }
    s.commit().await.map_err(e2s)
}

async fn cs011(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("stream", "cs011");
    let bodies: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
    let recs: Vec<(&[u8], Option<&str>)> = bodies.iter().map(|b| (b.as_slice(), None)).collect();
    append(&c, &route, &recs).await?;
    let page = c.stream().read_page(&Query::new(&route).limit(100)).await.map_err(e2s)?;
    let offsets: Vec<u64> = page.events().map(|e| e.record.resource_offset).collect();
    c.close().await;
    check!(offsets == (0..20).collect::<Vec<u64>>(), "offsets {offsets:?}");
    Ok(vec!["20 records read back at offsets 0..19 in order, no gap or duplicate".into()])
}

async fn cs012(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("stream", "cs012");
    let bodies: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i]).collect();
    let recs: Vec<(&[u8], Option<&str>)> = bodies.iter().map(|b| (b.as_slice(), None)).collect();
    append(&c, &route, &recs).await?;
    let mut replay = c.stream().replay(Query::new(&route).limit(3));
    let (mut pages, mut records) = (0, 0);
    while let Some(page) = replay.next().await {
        let page = page.map_err(e2s)?;
        pages += 1;
        records += page.events().count();
    }
    c.close().await;
    check!(records == 7, "replay returned {records} records");
    Ok(vec![format!("replay of 7 records in pages of 3: {pages} pages, then the iterator ended (None)")])
}

async fn cs013(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("stream", "cs013");
    let s = c.stream().begin(&route).await.map_err(e2s)?;
    s.append(0, b"first").await.map_err(e2s)?;
    let bad = s.append(7, b"out of order").await;
    let fault = match bad {
        Err(Error::Server(f)) => f,
        other => return Err(format!("expected a mid-flight server error, got {other:?}")),
    };
    s.rollback().await.map_err(e2s)?;
    let stats = c.stats();
    check!(stats.in_flight == 0, "{} requests still in flight after cleanup", stats.in_flight);
    // The route is free again.
    let s = c.stream().begin(&route).await.map_err(e2s)?;
    s.rollback().await.map_err(e2s)?;
    c.close().await;
    Ok(vec![
        format!("append at a wrong offset mid-session -> Error::Server {:?} \"{}\"", fault.code, fault.message),
        "rolled back; nothing left in flight; the stream accepts a new session".into(),
    ])
}

async fn cs014(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16u32 {
        let c = c.clone();
        let kv = l.route("kv", &format!("cs014-{i}"));
        let queue = l.route("queue", &format!("cs014-{i}"));
        let stream = l.route("stream", &format!("cs014-{i}"));
        tasks.spawn(async move {
            let value = format!("value-{i}");
            let kv_task = async {
                let tx = c.kv().begin(&kv, TxMode::ReadWrite).await?;
                tx.put(b"k", value.as_bytes()).await?;
                let got = tx.get(b"k").await?;
                tx.commit().await?;
                Ok::<_, Error>(got)
            };
            let (qs, ss) = (c.queue(), c.stream());
            let q_task = qs.enqueue(&queue, value.as_bytes());
            let s_task = ss.last(&stream);
            let (got, q, s) = tokio::join!(kv_task, q_task, s_task);
            let got = got?;
            q?;
            s?;
            Ok::<_, Error>((i, got, value))
        });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, got, value) = r.map_err(|e| e.to_string())?.map_err(e2s)?;
        check!(got.as_deref() == Some(value.as_bytes()), "task {i}: read {got:?}, wrote {value}");
        n += 1;
    }
    let stats = c.stats();
    c.close().await;
    Ok(vec![
        format!("{n} tasks × (KV txn, queue enqueue, stream last) concurrently; every reply matched its request"),
        format!("most requests in flight at once: {}", stats.max_in_flight),
    ])
}

async fn cs015(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("rpc", "cs015-slow");
    let mut worker = c.rpc().serve(&route, 4).await.map_err(e2s)?;
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(Ok(ev)) = worker.next().await {
            held.push(ev);
        }
    });
    let call = fitz_std::rpc::call(&c.rpc(), &route, b"wait").await.map_err(e2s)?;
    let mut notices = c.notice().subscribe(&l.route("notice", "cs015/*")).await.map_err(e2s)?;
    let call_task = tokio::spawn(async move { call.reply().await });
    let sub_task = tokio::spawn(async move { notices.next().await.map(|r| r.map(|_| ())) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.close().await;
    let call_r = call_task.await.map_err(|e| e.to_string())?;
    let sub_r = sub_task.await.map_err(|e| e.to_string())?;
    c.close().await;
    hold.abort();
    check!(call_r == Err(Error::Closed) || call_r == Err(Error::ConnectionLost), "active call ended with {call_r:?}");
    check!(sub_r == Some(Err(Error::Closed)), "active subscription ended with {sub_r:?}");
    let after = c.kv().begin(&l.route("kv", "cs015"), TxMode::ReadOnly).await.err();
    check!(after == Some(Error::Closed), "request after close: {after:?}");
    Ok(vec![
        format!("close during an RPC call -> {call_r:?}; during a subscription -> {sub_r:?}"),
        "second close() returned normally; requests after close -> Error::Closed".into(),
    ])
}

async fn cs016(l: &Leg) -> Outcome {
    let c = l.client().await?;
    let route = l.route("stream", "cs016");
    append(&c, &route, &[(b"a", Some("proj.alpha")), (b"b", Some("audit.beta")), (b"c", Some("proj.gamma"))]).await?;
    let filter = [Clause::StartsWith("proj.")];
    let page = c.stream().read_page(&Query::new(&route).limit(10).filter(&filter)).await.map_err(e2s)?;
    let items: Vec<String> = page.items().map(|i| describe(&i)).collect();
    let matched: Vec<u64> = page.events().map(|e| e.record.resource_offset).collect();
    let next = page.next();
    c.close().await;
    check!(matched == vec![0, 2], "matching offsets {matched:?} (items {items:?})");
    check!(items.len() == 3, "expected 2 records and 1 filtered marker in offset order, got {items:?}");
    Ok(vec![format!("filtered read: {}", items.join(", ")), format!("cursor advanced to {}", next.offset())])
}

async fn cs017(l: &Leg) -> Outcome {
    let c = l.client().await?;
    // Two realms, records of both, a filter that keeps some.
    let realm_a = format!("stream://{}a/{}/r", l.tag, l.transport);
    let realm_b = format!("stream://{}b/{}/r", l.tag, l.transport);
    for route in [&realm_a, &realm_b] {
        let recs: Vec<(&[u8], Option<&str>)> =
            vec![(b"1", Some("keep.x")), (b"2", Some("drop.y")), (b"3", Some("keep.z")), (b"4", Some("drop.w"))];
        append(&c, route, &recs).await?;
    }
    let filter = [Clause::StartsWith("keep.")];
    let mut replay = c.stream().replay(Query::new("stream://**").limit(2).filter(&filter));
    let (mut pages, mut routes, mut last_offset, mut filtered_only) = (0, Vec::new(), None::<u64>, 0);
    while let Some(page) = replay.next().await {
        let page = page.map_err(e2s)?;
        pages += 1;
        if page.events().count() == 0 && !page.is_empty() {
            filtered_only += 1;
        }
        for e in page.events() {
            if e.route().contains(&l.tag) {
                routes.push(e.route().to_owned());
            }
            let g = e.record.global_offset.ok_or("a global read returned a record without its global offset")?;
            if let Some(prev) = last_offset {
                check!(g > prev, "global offsets went back: {prev} then {g}");
            }
            last_offset = Some(g);
        }
    }
    c.close().await;
    check!(pages >= 2, "only {pages} page(s)");
    check!(routes.contains(&realm_a) && routes.contains(&realm_b), "routes {routes:?}");
    Ok(vec![
        format!("stream://** filtered replay: {pages} pages ({filtered_only} with markers only), then completed"),
        format!("records of this run kept their concrete routes: {routes:?}"),
    ])
}

async fn cs018(l: &Leg) -> Outcome {
    const LIMIT: usize = 16;
    const BURST: usize = 64;
    let c = l.builder(&l.url).max_in_flight(LIMIT).connect().await.map_err(e2s)?;
    let route = l.route("rpc", "cs018-slow");
    let serving = fitz_std::rpc::serve(&c.rpc(), &route, 64, |req, _chunks| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, Failure>(req.body().clone())
    })
    .await
    .map_err(e2s)?;
    let caller = l.builder(&l.url).max_in_flight(LIMIT).connect().await.map_err(e2s)?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let caller = caller.clone();
        let route = route.clone();
        let kv = l.route("kv", &format!("cs018-{i}"));
        tasks.spawn(async move {
            // Requests of the client (KV) and calls both drain.
            let tx = caller.kv().begin(&kv, TxMode::ReadWrite).await?;
            tx.put(b"k", b"v").await?;
            tx.commit().await?;
            fitz_std::rpc::call_once(&caller.rpc().timeout_ms(10_000), &route, &[i as u8]).await
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())?.map_err(e2s)?;
        ok += 1;
    }
    let stats = caller.stats();
    caller.close().await;
    let after = caller.stats();
    serving.stop();
    c.close().await;
    check!(stats.max_in_flight <= LIMIT, "observed {} requests in flight, ceiling {LIMIT}", stats.max_in_flight);
    check!(stats.limited + stats.serialized > 0, "no request was ever held back");
    check!(after.in_flight == 0, "{} requests still active after close", after.in_flight);
    Ok(vec![
        format!(
            "observed_max_inflight={} (ceiling {LIMIT}); burst of {BURST} all completed ({ok})",
            stats.max_in_flight
        ),
        format!(
            "backpressure_or_queueing_event: {} waits at the ceiling, {} behind a same-type request (no correlation)",
            stats.limited, stats.serialized
        ),
        format!("post_close_active_work_count={}", after.in_flight),
    ])
}

// ----- the run -----------------------------------------------------------

async fn endpoints(dialect: Dialect) -> Result<(Vec<(&'static str, &'static str, String)>, Vec<Broker>), String> {
    let external = [
        "FITZ_BROKER_ANON_TCP_ADDR",
        "FITZ_BROKER_AUTH_TCP_ADDR",
        "FITZ_BROKER_ANON_WS_ADDR",
        "FITZ_BROKER_AUTH_WS_ADDR",
    ]
    .iter()
    .any(|v| env(v).is_some());
    if external {
        let get = |v: &str, d: &str| env(v).map(with_scheme).unwrap_or_else(|| d.to_owned());
        return Ok((
            vec![
                ("tcp", "anonymous", get("FITZ_BROKER_ANON_TCP_ADDR", "tcp://127.0.0.1:4191")),
                ("websocket", "anonymous", get("FITZ_BROKER_ANON_WS_ADDR", "ws://127.0.0.1:4190/ws")),
                ("tcp", "auth", get("FITZ_BROKER_AUTH_TCP_ADDR", "tcp://127.0.0.1:4091")),
                ("websocket", "auth", get("FITZ_BROKER_AUTH_WS_ADDR", "ws://127.0.0.1:4090/ws")),
            ],
            Vec::new(),
        ));
    }
    let anon = Broker::start(BrokerConfig::anonymous().with_dialect(dialect)).await.map_err(|e| e.to_string())?;
    let auth = Broker::start(
        BrokerConfig::anonymous()
            .with_dialect(dialect)
            .with_auth(AuthMode::Jwt(JwtConfig::official("dev-test-secret"))),
    )
    .await
    .map_err(|e| e.to_string())?;
    let list = vec![
        ("tcp", "anonymous", anon.tcp_url().unwrap()),
        ("websocket", "anonymous", anon.ws_url().unwrap()),
        ("tcp", "auth", auth.tcp_url().unwrap()),
        ("websocket", "auth", auth.ws_url().unwrap()),
    ];
    Ok((list, vec![anon, auth]))
}

async fn relay_for(url: &str) -> Result<(Relay, String), String> {
    let (ws, rest) = match url.split_once("://") {
        Some(("ws", r)) => (true, r),
        Some((_, r)) => (false, r),
        None => (false, url),
    };
    let (hostport, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let upstream = tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let relay = Relay::start(upstream).await.map_err(|e| e.to_string())?;
    let url = if ws { relay.ws_url(&format!("/{path}")) } else { relay.url_tcp() };
    Ok((relay, url))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("conformance: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, String> {
    let suite = load_suite()?;
    let dialect = match env("FITZ_CONFORMANCE_DIALECT").as_deref() {
        Some("legacy") => Dialect::Legacy,
        _ => Dialect::Current,
    };
    let only_transport = env("CONFORMANCE_TRANSPORT").map(|t| if t == "ws" { "websocket".to_owned() } else { t });
    let only_auth = env("CONFORMANCE_AUTH_MODE");
    let (endpoints, _brokers) = endpoints(dialect).await?;
    let run_tag = format!(
        "cf{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 100_000
    );
    println!(
        "fitz-std conformance: {} scenarios from the suite file, dialect {:?}{}",
        suite.len(),
        dialect,
        if _brokers.is_empty() { " (external broker)" } else { " (fitz-testkit)" }
    );

    let mut results = Vec::new();
    let (mut passed, mut failed, mut gating_failed) = (0, 0, 0);
    for transport in ["tcp", "websocket"] {
        for auth_mode in ["anonymous", "valid_jwt", "invalid_jwt"] {
            if only_transport.as_deref().is_some_and(|t| t != transport) {
                continue;
            }
            if only_auth.as_deref().is_some_and(|a| a != auth_mode && auth_mode != "invalid_jwt") {
                continue;
            }
            let endpoint = if auth_mode == "anonymous" { "anonymous" } else { "auth" };
            let url =
                endpoints.iter().find(|(t, a, _)| *t == transport && *a == endpoint).map(|e| e.2.clone()).unwrap();
            let (relay, relay_url) = relay_for(&url).await?;
            let leg = Leg {
                transport,
                token: match auth_mode {
                    "anonymous" => None,
                    "valid_jwt" => Some(token(true)),
                    _ => Some(token(false)),
                },
                url,
                relay,
                relay_url,
                tag: format!("{run_tag}{}", &auth_mode[..1]),
            };
            for spec in &suite {
                if !spec.transports.iter().any(|t| t == transport) || !spec.auth_modes.iter().any(|a| a == auth_mode) {
                    continue;
                }
                let t = Instant::now();
                let (verdict, evidence) = match scenario(&spec.id) {
                    None => ("not_implemented", vec![format!("no scenario {} in this runner", spec.id)]),
                    Some(f) => match tokio::time::timeout(Duration::from_secs(45), f(&leg)).await {
                        Ok(Ok(ev)) => ("pass", ev),
                        Ok(Err(why)) => ("fail", vec![why]),
                        Err(_) => ("fail", vec!["timed out after 45 s".into()]),
                    },
                };
                let latency_ms = t.elapsed().as_millis() as u64;
                if verdict == "pass" {
                    passed += 1;
                } else {
                    failed += 1;
                    if spec.priority == "P0" || spec.priority == "P1" {
                        gating_failed += 1;
                    }
                }
                println!(
                    "{:<7} {} {:<10} {:<12} {:<4} {:>6} ms  {}  {}",
                    verdict,
                    spec.id,
                    transport,
                    auth_mode,
                    spec.priority,
                    latency_ms,
                    spec.title,
                    evidence.join(" | ")
                );
                results.push(json!({
                    "scenario_id": spec.id,
                    "client": "fitz-std",
                    "transport": transport,
                    "auth_mode": auth_mode,
                    "verdict": verdict,
                    "evidence": evidence,
                    "latency_ms": latency_ms,
                    "priority": spec.priority,
                    "dialect": format!("{dialect:?}").to_lowercase(),
                }));
            }
            leg.relay.stop().await;
        }
    }
    let out = env("CONFORMANCE_OUTPUT").unwrap_or_else(|| "target/conformance-results.json".into());
    if let Some(dir) = std::path::Path::new(&out).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap()).map_err(|e| format!("{out}: {e}"))?;
    println!("results written to {out}");
    println!("{passed} passed, {failed} failed");
    Ok(gating_failed == 0 && passed > 0)
}
