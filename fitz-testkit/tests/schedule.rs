//! Schedule against the in-memory broker through raw frames (BROKER.md §10,
//! §14, §15.6). Firing is driven by a manual clock: the broker's UTC time
//! starts at the real time of `Broker::start` and moves only with
//! `Broker::advance`.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod support;

use core::time::Duration;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Timelike, Utc};
use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, ClockMode, Dialect, JwtConfig};
use fitz_wire::schedule::{
    self, Cancel, Create, CreateBatch, DeliveryMode, Entry, List, ListV2, Subscribe, Unsubscribe,
};
use fitz_wire::{Encode, MsgType, Payload, Reply, Sink};
use support::*;

const QUIET: Duration = Duration::from_millis(250);
const MINUTE: u64 = 60_000;

/// An error reply: (code if coded, message).
type Failure = (Option<u32>, String);

/// One LIST entry, owned: (route, cron, delivery mode, payload).
type Item = (String, String, u8, Vec<u8>);

/// A record with any type and payload (for malformed requests).
struct RawMsg(MsgType, Vec<u8>);

impl Encode for RawMsg {
    fn msg_type(&self) -> MsgType {
        self.0
    }
    fn payload_len(&self) -> usize {
        self.1.len()
    }
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(&self.1);
    }
}

/// The payload bytes of a request.
fn payload_of<E: Encode>(m: &E) -> Vec<u8> {
    let mut b = vec![0u8; Encode::payload_len(m)];
    Encode::write_payload(m, &mut fitz_wire::SliceWriter::new(&mut b));
    b
}

fn utc_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A broker on a manual clock, with an estimate of its UTC time (exact to
/// a few milliseconds: the clock starts inside `Broker::start`).
struct Clocked {
    broker: Broker,
    now: u64,
}

impl Clocked {
    async fn start(dialect: Dialect) -> Clocked {
        loop {
            let before = utc_now_ms();
            let cfg = BrokerConfig::anonymous().with_clock(ClockMode::Manual).with_dialect(dialect);
            let broker = Broker::start(cfg).await.unwrap();
            let after = utc_now_ms();
            if after - before < 200 {
                return Clocked { broker, now: (before + after) / 2 };
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.broker.advance(Duration::from_millis(ms));
        self.now += ms;
    }

    /// The next minute boundary at least two seconds ahead (so that what
    /// the test creates now is surely created before it).
    fn next_boundary(&self) -> u64 {
        (self.now + 2_000) / MINUTE * MINUTE + MINUTE
    }

    /// Moves the clock to one second after the next boundary; returns it.
    fn cross_boundary(&mut self) -> u64 {
        let b = self.next_boundary();
        self.advance(b + 1_000 - self.now);
        b
    }

    fn tcp(&self) -> core::net::SocketAddr {
        self.broker.tcp_addr().unwrap()
    }
}

fn failure(e: fitz_wire::ServerError<'_>) -> Failure {
    (e.code, e.message.to_owned())
}

async fn ack(c: &mut Raw, ty: MsgType) -> Result<(), Failure> {
    let rec = c.recv_type(ty).await.expect("reply");
    match schedule::decode_ack_reply(&rec.payload).unwrap() {
        Reply::Ok(()) => Ok(()),
        Reply::Err(e) => Err(failure(e)),
    }
}

async fn create(c: &mut Raw, route: &str, cron: &str, mode: DeliveryMode, payload: &[u8]) -> Result<(), Failure> {
    c.send(&Create { route, cron, delivery_mode: mode, payload }).await;
    ack(c, MsgType::SCHEDULE_CREATE).await
}

async fn cancel(c: &mut Raw, route: &str) -> Result<(), Failure> {
    c.send(&Cancel { route }).await;
    ack(c, MsgType::SCHEDULE_CANCEL).await
}

async fn subscribe(c: &mut Raw, pattern: &str) -> Result<u64, Failure> {
    c.send(&Subscribe { pattern }).await;
    let rec = c.recv_type(MsgType::SCHEDULE_SUBSCRIBE).await.expect("SUBSCRIBE reply");
    match schedule::decode_subscribe_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.sub_id),
        Reply::Err(e) => Err(failure(e)),
    }
}

async fn unsubscribe(c: &mut Raw, pattern: &str) -> Result<(), Failure> {
    c.send(&Unsubscribe { pattern }).await;
    ack(c, MsgType::SCHEDULE_UNSUBSCRIBE).await
}

fn items(entries: schedule::Entries<'_>) -> Vec<Item> {
    entries
        .iter()
        .map(|e| (e.route.to_owned(), e.cron.to_owned(), e.delivery_mode.to_u8(), e.payload.to_vec()))
        .collect()
}

async fn list_req(c: &mut Raw, req: List) -> Result<(u64, Vec<Item>), Failure> {
    c.send(&req).await;
    let rec = c.recv_type(MsgType::SCHEDULE_LIST).await.expect("LIST reply");
    match schedule::decode_list_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok((ok.total_count, items(ok.entries))),
        Reply::Err(e) => Err(failure(e)),
    }
}

async fn list(c: &mut Raw, offset: u64, limit: u64) -> (u64, Vec<Item>) {
    list_req(c, List::new(Some(offset), Some(limit))).await.unwrap()
}

fn routes(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.0.as_str()).collect()
}

/// One LIST_V2 page: (has_more, continuation, items).
async fn list_v2(
    c: &mut Raw,
    continuation: Option<&str>,
    limit: Option<u64>,
) -> Result<(bool, Option<String>, Vec<Item>), Failure> {
    c.send(&ListV2 { continuation, limit }).await;
    let rec = c.recv_type(MsgType::SCHEDULE_LIST_V2).await.expect("LIST_V2 reply");
    match schedule::decode_list_v2_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok((ok.has_more, ok.continuation.map(str::to_owned), items(ok.entries))),
        Reply::Err(e) => Err(failure(e)),
    }
}

/// Every NOTIFY until the connection stays quiet: (id, route, payload).
async fn fired(c: &mut Raw) -> Vec<(u64, String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(f) = c.recv_frame_within(QUIET).await {
        for r in f {
            assert_eq!(r.msg_type, MsgType::SCHEDULE_NOTIFY, "unexpected frame {r:?}");
            let n = schedule::Notify::decode(&r.payload).unwrap();
            out.push((n.sub_id, n.route.to_owned(), n.payload.to_vec()));
        }
    }
    out
}

/// A JWT broker: tenant `dev` in family 1, `ops` in family 2.
async fn jwt_broker() -> Broker {
    let mut jwt = JwtConfig::official("dev-test-secret");
    jwt.families.push(("ops".into(), 2));
    Broker::start(BrokerConfig::anonymous().with_auth(AuthMode::Jwt(jwt))).await.unwrap()
}

const R: &str = "schedule://acme/jobs/report/run";
const EVERY_MINUTE: &str = "* * * * *";

#[tokio::test]
async fn create_is_an_upsert_by_route() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    // Success carries nothing after the status byte.
    c.send(&Create { route: R, cron: "*/5 * * * *", delivery_mode: DeliveryMode::Broadcast, payload: b"x" }).await;
    let rec = c.recv_type(MsgType::SCHEDULE_CREATE).await.unwrap();
    assert_eq!(rec.payload, vec![0]);
    assert_eq!(list(&mut c, 0, 100).await, (1, vec![(R.into(), "*/5 * * * *".into(), 0, b"x".to_vec())]));
    create(&mut c, R, "0 12 * * 1-5", DeliveryMode::Single, b"y").await.unwrap();
    assert_eq!(list(&mut c, 0, 100).await, (1, vec![(R.into(), "0 12 * * 1-5".into(), 1, b"y".to_vec())]));
    create(&mut c, "schedule://other/jobs/report/run", EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    assert_eq!(list(&mut c, 0, 100).await.0, 2);
    // Routes must be concrete with exactly four segments: plain errors.
    for bad in [
        "schedule://acme/jobs/report",
        "schedule://acme/jobs/*/run",
        "schedule://a/b/c/d/e",
        "queue://a/b/c/d",
        "schedule://a//c/d",
    ] {
        let (code, msg) = create(&mut c, bad, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap_err();
        assert_eq!(code, None, "{bad}: uncoded envelope");
        assert!(!msg.is_empty());
    }
    // Delivery mode other than 0/1: plain error, the session stays open.
    let valid = Create { route: R, cron: EVERY_MINUTE, delivery_mode: DeliveryMode::Broadcast, payload: b"" };
    let mut bytes = payload_of(&valid);
    let mode_at = 4 + R.len() + 4 + EVERY_MINUTE.len();
    bytes[mode_at] = 2;
    c.send(&RawMsg(MsgType::SCHEDULE_CREATE, bytes)).await;
    assert_eq!(ack(&mut c, MsgType::SCHEDULE_CREATE).await.unwrap_err().0, None);
    assert_eq!(list(&mut c, 0, 100).await.0, 2, "nothing was created");
    // A definition that could not be listed on its own page is refused.
    let (code, msg) = create(&mut c, R, EVERY_MINUTE, DeliveryMode::Broadcast, &vec![0u8; 65_480]).await.unwrap_err();
    assert_eq!(code, None);
    assert!(msg.contains("too large"), "{msg}");
    create(&mut c, R, EVERY_MINUTE, DeliveryMode::Broadcast, &vec![0u8; 65_400]).await.unwrap();
    assert_eq!(list(&mut c, 0, 0).await.1.len(), 2);
}

#[tokio::test]
async fn invalid_cron_is_a_plain_error() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for bad in [
        "not a cron",
        "",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "*/0 * * * *",
        "a-b * * * *",
    ] {
        let (code, msg) = create(&mut c, R, bad, DeliveryMode::Broadcast, b"").await.unwrap_err();
        assert_eq!(code, None, "{bad:?}: uncoded envelope");
        assert!(msg.contains("cron"), "{bad:?}: {msg}");
    }
    assert_eq!(list(&mut c, 0, 0).await.0, 0);
    // The documented numeric grammar is accepted.
    for ok in ["*/5 * * * *", "0-30/10 1,2,3 1-15 */2 1-5", "0 0 1 1 *", "15 14 * * 0"] {
        create(&mut c, R, ok, DeliveryMode::Broadcast, b"").await.unwrap();
    }
}

#[tokio::test]
async fn never_matching_cron_is_rejected() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for never in ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
        let (code, msg) = create(&mut c, R, never, DeliveryMode::Broadcast, b"").await.unwrap_err();
        assert_eq!(code, None);
        assert!(msg.contains("never"), "{never}: {msg}");
    }
    // 29 February exists (in leap years); both day fields restricted is OR.
    create(&mut c, R, "0 0 29 2 *", DeliveryMode::Broadcast, b"").await.unwrap();
    create(&mut c, "schedule://acme/jobs/report/or", "0 0 31 2 1", DeliveryMode::Broadcast, b"").await.unwrap();
    assert_eq!(list(&mut c, 0, 0).await.0, 2);
}

#[tokio::test]
async fn cancel_stops_firing_and_is_idempotent() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let mut c = Raw::connect(clk.tcp(), "").await;
    let id = subscribe(&mut c, "schedule://acme/**").await.unwrap();
    let keep = "schedule://acme/jobs/report/keep";
    create(&mut c, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"gone").await.unwrap();
    create(&mut c, keep, EVERY_MINUTE, DeliveryMode::Broadcast, b"kept").await.unwrap();
    cancel(&mut c, R).await.unwrap();
    assert_eq!(routes(&list(&mut c, 0, 0).await.1), vec![keep]);
    clk.cross_boundary();
    assert_eq!(fired(&mut c).await, vec![(id, keep.to_owned(), b"kept".to_vec())]);
    // Cancelling again, or something never created, succeeds.
    cancel(&mut c, R).await.unwrap();
    cancel(&mut c, "schedule://never/was/created/here").await.unwrap();
    // A route that is not a schedule route is a plain error.
    assert_eq!(cancel(&mut c, "schedule://acme/jobs").await.unwrap_err().0, None);
    cancel(&mut c, keep).await.unwrap();
    clk.cross_boundary();
    assert!(fired(&mut c).await.is_empty());
}

#[tokio::test]
async fn list_reports_total_count_and_pages_by_offset_and_limit() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    let all =
        ["schedule://b/x/y/z", "schedule://a/x/y/2", "schedule://c/x/y/z", "schedule://a/x/y/1", "schedule://a/w/y/z"];
    for (i, r) in all.iter().enumerate() {
        create(&mut c, r, EVERY_MINUTE, DeliveryMode::Broadcast, &[i as u8]).await.unwrap();
    }
    let mut sorted = all.to_vec();
    sorted.sort_unstable();
    let (total, page) = list(&mut c, 0, 2).await;
    assert_eq!((total, routes(&page)), (5, sorted[..2].to_vec()));
    assert_eq!(routes(&list(&mut c, 2, 2).await.1), sorted[2..4].to_vec());
    assert_eq!(list(&mut c, 4, 2).await, (5, vec![(sorted[4].into(), EVERY_MINUTE.into(), 0, vec![2])]));
    assert_eq!(list(&mut c, 10, 2).await, (5, vec![]));
    // limit 0 = everything that fits; absent fields and the bare payload
    // mean offset 0, limit 100.
    assert_eq!(routes(&list(&mut c, 0, 0).await.1), sorted);
    assert_eq!(routes(&list_req(&mut c, List::new(None, None)).await.unwrap().1), sorted);
    assert_eq!(routes(&list_req(&mut c, List { offset: None, limit: None, bare: true }).await.unwrap().1), sorted);
    assert_eq!(routes(&list_req(&mut c, List::new(Some(3), None)).await.unwrap().1), sorted[3..].to_vec());
    // A malformed LIST is a coded error.
    c.send(&RawMsg(MsgType::SCHEDULE_LIST, vec![1, 0])).await;
    let rec = c.recv_type(MsgType::SCHEDULE_LIST).await.unwrap();
    let Reply::Err(e) = schedule::decode_list_reply(&rec.payload).unwrap() else { panic!() };
    assert_eq!(e.code, Some(7004));

    // Pages are truncated to fit one record; total_count says more exist.
    let b2 = legacy().await;
    let mut c2 = Raw::connect(b2.tcp_addr().unwrap(), "").await;
    let big = vec![7u8; 30_000];
    for r in ["schedule://big/a/b/1", "schedule://big/a/b/2", "schedule://big/a/b/3"] {
        create(&mut c2, r, EVERY_MINUTE, DeliveryMode::Single, &big).await.unwrap();
    }
    let (total, page) = list(&mut c2, 0, 0).await;
    assert_eq!((total, routes(&page)), (3, vec!["schedule://big/a/b/1", "schedule://big/a/b/2"]));
    assert_eq!(routes(&list(&mut c2, 2, 0).await.1), vec!["schedule://big/a/b/3"]);

    // Scope is the caller's route family (every realm, no other tenant).
    let j = jwt_broker().await;
    let mut dev = Raw::connect(j.tcp_addr().unwrap(), &TokenSpec::official().sign()).await;
    let mut ops =
        Raw::connect(j.tcp_addr().unwrap(), &TokenSpec { tenant: "ops".into(), ..TokenSpec::official() }.sign()).await;
    create(&mut dev, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    create(&mut dev, "schedule://realm2/a/b/c", EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    assert_eq!(list(&mut dev, 0, 0).await.0, 2);
    assert_eq!(list(&mut ops, 0, 0).await, (0, vec![]));
}

#[tokio::test]
async fn subscribe_and_unsubscribe() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let mut c = Raw::connect(clk.tcp(), "").await;
    let wild = subscribe(&mut c, "schedule://acme/**").await.unwrap();
    assert_ne!(wild, 0);
    assert_eq!(subscribe(&mut c, "schedule://acme/**").await, Ok(wild), "idempotent per pattern string");
    let exact = subscribe(&mut c, R).await.unwrap();
    let star = subscribe(&mut c, "schedule://*/jobs/*/run").await.unwrap();
    for bad in [
        "schedule://acme/jobs/report",
        "schedule://a/b/c/d/e",
        "schedule://acme/jo*/report/run",
        "notice://acme/**",
        "schedule://acme/**/**",
    ] {
        let (code, msg) = subscribe(&mut c, bad).await.unwrap_err();
        assert_eq!(code, None, "{bad}: uncoded envelope");
        assert!(msg.contains("pattern"), "{bad}: {msg}");
    }
    create(&mut c, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"p").await.unwrap();
    clk.cross_boundary();
    let mut ids: Vec<u64> = fired(&mut c).await.into_iter().map(|n| n.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![wild, exact, star], "one NOTIFY per matching subscription");
    unsubscribe(&mut c, "schedule://acme/**").await.unwrap();
    unsubscribe(&mut c, R).await.unwrap();
    unsubscribe(&mut c, "schedule://never/sub/scribed/here").await.unwrap();
    assert_eq!(unsubscribe(&mut c, "schedule://bad").await.unwrap_err().0, None);
    clk.cross_boundary();
    assert_eq!(fired(&mut c).await, vec![(star, R.to_owned(), b"p".to_vec())]);
}

#[tokio::test]
async fn subscription_quota_messages_are_exact() {
    let b = legacy().await;
    let mut c = Raw::connect(b.tcp_addr().unwrap(), "").await;
    for i in 0..128 {
        c.send(&Subscribe { pattern: &format!("schedule://r{i}/**") }).await;
    }
    for _ in 0..128 {
        let rec = c.recv_type(MsgType::SCHEDULE_SUBSCRIBE).await.unwrap();
        assert!(matches!(schedule::decode_subscribe_reply(&rec.payload).unwrap(), Reply::Ok(_)));
    }
    assert_eq!(
        subscribe(&mut c, "schedule://r128/**").await,
        Err((None, "wildcard subscription limit exceeded (128 per session)".into()))
    );
    assert!(subscribe(&mut c, "schedule://r0/**").await.is_ok(), "duplicates are answered first");
    for i in 0..896 {
        c.send(&Subscribe { pattern: &format!("schedule://e/x/y/{i}") }).await;
    }
    for _ in 0..896 {
        let rec = c.recv_type(MsgType::SCHEDULE_SUBSCRIBE).await.unwrap();
        assert!(matches!(schedule::decode_subscribe_reply(&rec.payload).unwrap(), Reply::Ok(_)));
    }
    assert_eq!(
        subscribe(&mut c, "schedule://e/x/y/last").await,
        Err((None, "total subscription limit exceeded (1024 per session)".into()))
    );
}

#[tokio::test]
async fn every_minute_fires_once_per_minute_without_back_fill() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let mut c = Raw::connect(clk.tcp(), "").await;
    let id = subscribe(&mut c, "schedule://acme/**").await.unwrap();
    create(&mut c, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"tick").await.unwrap();
    clk.advance(0);
    assert!(fired(&mut c).await.is_empty(), "no fire at creation");
    clk.cross_boundary();
    assert_eq!(fired(&mut c).await, vec![(id, R.to_owned(), b"tick".to_vec())]);
    // Within the same minute: nothing more.
    clk.advance(30_000);
    assert!(fired(&mut c).await.is_empty());
    clk.advance(30_000);
    assert_eq!(fired(&mut c).await.len(), 1);
    for _ in 0..3 {
        clk.advance(MINUTE);
        assert_eq!(fired(&mut c).await.len(), 1, "one NOTIFY per minute");
    }
    // A ten-minute gap fires the current boundary only.
    clk.advance(10 * MINUTE);
    assert_eq!(fired(&mut c).await.len(), 1, "missed minutes are not back-filled");
}

#[tokio::test]
async fn never_fires_for_a_boundary_before_its_creation() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let mut c = Raw::connect(clk.tcp(), "").await;
    subscribe(&mut c, "schedule://acme/**").await.unwrap();
    // Created 1.5 s before a boundary: fires at that boundary.
    let b = clk.next_boundary();
    clk.advance(b - 1_500 - clk.now);
    create(&mut c, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    clk.advance(2_500);
    assert_eq!(routes_of(fired(&mut c).await), vec![R]);
    // Created 1 s after a boundary: nothing until the next one.
    let late = "schedule://acme/jobs/report/late";
    create(&mut c, late, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    clk.advance(57_000);
    assert!(fired(&mut c).await.is_empty());
    clk.advance(2_000);
    let mut got = routes_of(fired(&mut c).await);
    got.sort_unstable();
    assert_eq!(got, vec![late, R]);

    // With the real clock, nothing arrives right after creation unless a
    // minute boundary passes in between.
    let real = legacy().await;
    let mut r = Raw::connect(real.tcp_addr().unwrap(), "").await;
    subscribe(&mut r, "schedule://acme/**").await.unwrap();
    let to_boundary = MINUTE - utc_now_ms() % MINUTE;
    if to_boundary < 2_500 {
        tokio::time::sleep(Duration::from_millis(to_boundary + 300)).await;
    }
    create(&mut r, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    assert!(r.quiet_for(Duration::from_millis(1_500)).await);
}

fn routes_of(n: Vec<(u64, String, Vec<u8>)>) -> Vec<String> {
    n.into_iter().map(|n| n.1).collect()
}

#[tokio::test]
async fn cron_is_evaluated_in_utc_with_hour_and_weekday_constraints() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let mut c = Raw::connect(clk.tcp(), "").await;
    subscribe(&mut c, "schedule://utc/**").await.unwrap();
    let b = clk.next_boundary();
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(b as i64).unwrap();
    let (m, h, dom, dow) = (at.minute(), at.hour(), at.day(), at.weekday().num_days_from_sunday());
    let other_dom = dom % 28 + 1;
    let cases = [
        ("match", format!("* {h} * * {dow}"), true),
        ("wrong-hour", format!("* {} * * *", (h + 1) % 24), false),
        ("wrong-weekday", format!("* * * * {}", (dow + 1) % 7), false),
        ("or-days", format!("* {h} {other_dom} * {dow}"), true),
        ("neither-day", format!("* * {other_dom} * {}", (dow + 1) % 7), false),
        ("minute-list", format!("{m},{} {h}-23 * * *", (m + 30) % 60), true),
        ("wrong-minute", format!("{} * * * *", (m + 1) % 60), false),
        ("step", format!("*/1 {h} {dom} * *"), true),
    ];
    for (name, cron, _) in &cases {
        create(&mut c, &format!("schedule://utc/cron/case/{name}"), cron, DeliveryMode::Broadcast, b"").await.unwrap();
    }
    clk.advance(b + 1_000 - clk.now);
    let got: BTreeSet<String> = routes_of(fired(&mut c).await).into_iter().collect();
    let want: BTreeSet<String> =
        cases.iter().filter(|c| c.2).map(|(name, _, _)| format!("schedule://utc/cron/case/{name}")).collect();
    assert_eq!(got, want, "boundary {at}");
}

#[tokio::test]
async fn broadcast_reaches_everyone_single_rotates() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let (mut s1, mut s2) = (Raw::connect(clk.tcp(), "").await, Raw::connect(clk.tcp(), "").await);
    let id1 = subscribe(&mut s1, "schedule://rr/**").await.unwrap();
    let id2 = subscribe(&mut s2, "schedule://rr/jobs/*/*").await.unwrap();
    let (bc, single) = ("schedule://rr/jobs/all/run", "schedule://rr/jobs/one/run");
    create(&mut s1, bc, EVERY_MINUTE, DeliveryMode::Broadcast, b"all").await.unwrap();
    create(&mut s1, single, EVERY_MINUTE, DeliveryMode::Single, b"one").await.unwrap();
    // No subscriber: skipped without any trace.
    create(&mut s1, "schedule://lonely/a/b/c", EVERY_MINUTE, DeliveryMode::Single, b"").await.unwrap();
    let mut receivers = Vec::new();
    for _ in 0..4 {
        clk.cross_boundary();
        let (f1, f2) = (fired(&mut s1).await, fired(&mut s2).await);
        assert!(f1.contains(&(id1, bc.to_owned(), b"all".to_vec())));
        assert!(f2.contains(&(id2, bc.to_owned(), b"all".to_vec())));
        let singles: Vec<u64> = f1.iter().chain(f2.iter()).filter(|n| n.1 == single).map(|n| n.0).collect();
        assert_eq!(singles.len(), 1, "single delivery goes to exactly one subscription");
        assert_eq!(f1.len() + f2.len(), 3);
        receivers.push(singles[0]);
    }
    assert_ne!(receivers[0], receivers[1]);
    assert_eq!(receivers[0], receivers[2]);
    assert_eq!(receivers[1], receivers[3]);
}

#[tokio::test]
async fn subscriptions_end_with_the_session_schedules_do_not() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let mut gone = Raw::connect(clk.tcp(), "").await;
    subscribe(&mut gone, "schedule://acme/**").await.unwrap();
    create(&mut gone, R, EVERY_MINUTE, DeliveryMode::Single, b"d").await.unwrap();
    let mut stay = Raw::connect(clk.tcp(), "").await;
    drop(gone);
    for _ in 0..100 {
        if clk.broker.session_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(clk.broker.session_count(), 1);
    assert_eq!(routes(&list(&mut stay, 0, 0).await.1), vec![R], "schedules are durable");
    let id = subscribe(&mut stay, "schedule://acme/**").await.unwrap();
    clk.cross_boundary();
    // Single delivery only has the live subscription left to choose.
    assert_eq!(fired(&mut stay).await, vec![(id, R.to_owned(), b"d".to_vec())]);
}

#[tokio::test]
async fn read_only_jwt_create_gets_a_coded_7009() {
    let j = jwt_broker().await;
    let ro = TokenSpec::official().with_permissions(&["schedule://**#read"]).sign();
    let mut c = Raw::connect(j.tcp_addr().unwrap(), &ro).await;
    assert_eq!(
        create(&mut c, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await,
        Err((Some(7009), "unauthorized: permission denied".into()))
    );
    assert_eq!(cancel(&mut c, R).await.unwrap_err().0, Some(7009));
    assert_eq!(list(&mut c, 0, 0).await, (0, vec![]), "LIST needs read on schedule://**");
    assert!(subscribe(&mut c, "schedule://acme/**").await.is_ok());
    // Write-only: LIST and SUBSCRIBE are denied with the coded 7009.
    let wo = TokenSpec::official().with_permissions(&["schedule://**#write"]).sign();
    let mut w = Raw::connect(j.tcp_addr().unwrap(), &wo).await;
    create(&mut w, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    assert_eq!(list_req(&mut w, List::new(Some(0), Some(0))).await.unwrap_err().0, Some(7009));
    assert_eq!(subscribe(&mut w, "schedule://acme/**").await.unwrap_err().0, Some(7009));
}

fn entry<'a>(route: &'a str, cron: &'a str) -> Entry<'a> {
    Entry { route, cron, delivery_mode: DeliveryMode::Broadcast, payload: b"b" }
}

#[tokio::test]
async fn current_dialect_create_batch_is_all_or_none() {
    let b = current().await;
    let (mut c, _) = Raw::connect_current(b.tcp_addr().unwrap(), "").await;
    let (r1, r2, r3) = ("schedule://batch/a/b/1", "schedule://batch/a/b/2", "schedule://batch/a/b/3");
    let bad_cron = [entry(r1, EVERY_MINUTE), entry(r2, EVERY_MINUTE), entry(r3, "not a cron")];
    c.send(&CreateBatch::new(&bad_cron)).await;
    assert_eq!(ack(&mut c, MsgType::SCHEDULE_CREATE_BATCH).await.unwrap_err().0, None, "uncoded, as CREATE");
    let bad_route = [entry(r1, EVERY_MINUTE), entry("schedule://batch/a/b", EVERY_MINUTE)];
    c.send(&CreateBatch::new(&bad_route)).await;
    assert_eq!(ack(&mut c, MsgType::SCHEDULE_CREATE_BATCH).await.unwrap_err().0, None);
    let never = [entry(r1, EVERY_MINUTE), entry(r2, "0 0 30 2 *")];
    c.send(&CreateBatch::new(&never)).await;
    assert!(ack(&mut c, MsgType::SCHEDULE_CREATE_BATCH).await.is_err());
    // An unknown delivery mode in any entry: the plain error, nothing created.
    let ok = [entry(r1, EVERY_MINUTE), entry(r2, "0 * * * *")];
    let mut bytes = payload_of(&CreateBatch::new(&ok));
    let last_mode = bytes.len() - 4 - 1 - 1;
    assert_eq!(bytes[last_mode], 0);
    bytes[last_mode] = 9;
    c.send(&RawMsg(MsgType::SCHEDULE_CREATE_BATCH, bytes)).await;
    assert_eq!(ack(&mut c, MsgType::SCHEDULE_CREATE_BATCH).await.unwrap_err().0, None);
    assert_eq!(list(&mut c, 0, 0).await, (0, vec![]), "nothing was created");
    // A valid batch creates all, answered under the request's label.
    let good = [entry(r2, EVERY_MINUTE), entry(r1, "*/2 * * * *"), entry(r3, "0 0 1 1 *")];
    c.send_labelled(Some(42), &CreateBatch::new(&good)).await;
    let rec = c.recv_one().await.unwrap();
    assert_eq!((rec.label, rec.msg_type), (Some(42), MsgType::SCHEDULE_CREATE_BATCH));
    assert_eq!(schedule::decode_ack_reply(&rec.payload).unwrap(), Reply::Ok(()));
    let (total, page) = list(&mut c, 0, 0).await;
    assert_eq!((total, routes(&page)), (3, vec![r1, r2, r3]));
    assert_eq!(page[0].1, "*/2 * * * *");
    // An empty batch is a no-op success.
    c.send(&CreateBatch::new(&[])).await;
    ack(&mut c, MsgType::SCHEDULE_CREATE_BATCH).await.unwrap();
}

#[tokio::test]
async fn current_dialect_list_v2_pages_with_a_continuation() {
    let b = current().await;
    let (mut c, _) = Raw::connect_current(b.tcp_addr().unwrap(), "").await;
    let all = [
        "schedule://v2/a/b/3",
        "schedule://v2/a/b/1",
        "schedule://v2/a/b/5",
        "schedule://v2/a/b/2",
        "schedule://v2/a/b/4",
    ];
    for r in all {
        create(&mut c, r, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    }
    let (more, cont, page) = list_v2(&mut c, None, Some(2)).await.unwrap();
    assert!(more);
    assert_eq!(routes(&page), vec!["schedule://v2/a/b/1", "schedule://v2/a/b/2"]);
    // Created behind the cursor: not served; ahead of it: served.
    create(&mut c, "schedule://v2/a/b/0", EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    create(&mut c, "schedule://v2/a/b/6", EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    let (more, cont, page) = list_v2(&mut c, cont.as_deref(), Some(2)).await.unwrap();
    assert!(more);
    assert_eq!(routes(&page), vec!["schedule://v2/a/b/3", "schedule://v2/a/b/4"]);
    let (more, cont, page) = list_v2(&mut c, cont.as_deref(), Some(2)).await.unwrap();
    assert!(!more, "last page");
    assert_eq!(cont, None);
    assert_eq!(routes(&page), vec!["schedule://v2/a/b/5", "schedule://v2/a/b/6"]);
    // No limit: the default page holds everything here; limit 0 too.
    let (more, cont, page) = list_v2(&mut c, None, None).await.unwrap();
    assert_eq!((more, cont, page.len()), (false, None, 7));
    assert_eq!(list_v2(&mut c, None, Some(0)).await.unwrap().2.len(), 7);
    // A continuation the broker did not issue: coded error.
    assert_eq!(list_v2(&mut c, Some("garbage"), Some(2)).await.unwrap_err().0, Some(7004));
}

#[tokio::test]
async fn create_batch_and_list_v2_close_a_legacy_listener() {
    let b = legacy().await;
    let addr = b.tcp_addr().unwrap();
    let mut good = Raw::connect(addr, "").await;
    create(&mut good, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"").await.unwrap();
    let mut c = Raw::connect(addr, "").await;
    c.send(&CreateBatch::new(&[entry("schedule://x/a/b/c", EVERY_MINUTE)])).await;
    assert!(c.closed().await, "706 is an unsupported type on a legacy listener");
    let mut c2 = Raw::connect(addr, "").await;
    c2.send(&ListV2 { continuation: None, limit: None }).await;
    assert!(c2.closed().await, "707 likewise");
    assert_eq!(routes(&list(&mut good, 0, 0).await.1), vec![R], "the batch created nothing");
}

#[tokio::test]
async fn malformed_frame_closes_only_that_session() {
    let mut clk = Clocked::start(Dialect::Legacy).await;
    let mut good = Raw::connect(clk.tcp(), "").await;
    let id = subscribe(&mut good, "schedule://acme/**").await.unwrap();
    create(&mut good, R, EVERY_MINUTE, DeliveryMode::Broadcast, b"ok").await.unwrap();
    // CREATE whose route length runs past the payload: no route to check.
    let mut bad = Raw::connect(clk.tcp(), "").await;
    bad.send(&RawMsg(MsgType::SCHEDULE_CREATE, vec![0, 0, 0, 9, b's'])).await;
    assert!(bad.closed().await);
    // A SUBSCRIBE whose pattern is not UTF-8.
    let mut bad2 = Raw::connect(clk.tcp(), "").await;
    bad2.send(&RawMsg(MsgType::SCHEDULE_SUBSCRIBE, vec![0, 0, 0, 2, 0xC3, 0x28])).await;
    assert!(bad2.closed().await);
    // A client-sent NOTIFY (705) and an unsupported type (799).
    let mut bad3 = Raw::connect(clk.tcp(), "").await;
    bad3.send(&schedule::Notify { sub_id: 1, route: R, payload: b"" }).await;
    assert!(bad3.closed().await);
    let mut bad4 = Raw::connect(clk.tcp(), "").await;
    bad4.send(&RawMsg(MsgType(799), vec![])).await;
    assert!(bad4.closed().await);
    // A readable route with a truncated rest: plain error, session kept.
    let mut odd = Raw::connect(clk.tcp(), "").await;
    let mut p = (R.len() as u32).to_be_bytes().to_vec();
    p.extend_from_slice(R.as_bytes());
    p.extend_from_slice(&[0, 0]);
    odd.send(&RawMsg(MsgType::SCHEDULE_CREATE, p)).await;
    assert_eq!(ack(&mut odd, MsgType::SCHEDULE_CREATE).await.unwrap_err().0, None);
    assert_eq!(list(&mut odd, 0, 0).await.0, 1);
    // The good session keeps working, firing included.
    assert_eq!(list(&mut good, 0, 0).await.0, 1);
    clk.cross_boundary();
    assert_eq!(fired(&mut good).await, vec![(id, R.to_owned(), b"ok".to_vec())]);
}
