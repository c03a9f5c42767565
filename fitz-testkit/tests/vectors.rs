//! The golden vectors of the official clients (`spec/vectors`, legacy and
//! current sets) against the in-memory broker, through raw frames.
//!
//! - Every c2s `accept` vector is sent, byte for byte, to a broker of its
//!   dialect; the broker must answer what WIRE.md / BROKER.md prescribe and
//!   keep the connection open. One line per failing vector, then
//!   `N passed, M failed`.
//! - A KV BEGIN of one dialect closes a connection of the other (BROKER.md
//!   §15.3, WIRE.md §B5).
//! - s2c `accept` vectors the broker can be made to produce deterministically
//!   are compared byte for byte with what it sends.
//!
//! The vectors are read at run time from fitz-wire's copy
//! (`fitz-wire/tests/vectors/golden`), or from `FITZ_VECTORS_DIR`.
#![allow(missing_docs, clippy::unwrap_used, clippy::panic, clippy::indexing_slicing, clippy::std_instead_of_core)]

mod support;

use std::num::NonZeroU64;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fitz_testkit::{Broker, BrokerConfig, Capabilities, Dialect};
use fitz_wire::control::ServerHello;
use fitz_wire::frame::{self, LabelledRecords, TcpFrame, Transport};
use fitz_wire::queue::ReserveLayout;
use fitz_wire::rpc::{CancelReason, CancelStatus, RpcCancel, RpcLifecycle, SignalReason, TerminalError};
use fitz_wire::{
    DecodeError, Encode, Envelope, MsgType, Payload, Record, Reply, Uuid, kv, lease, notice, queue, rpc, schedule,
    stream,
};
use futures_util::FutureExt;
use serde_json::Value;
use support::*;

// ---------------------------------------------------------------------------
// Loading the vectors
// ---------------------------------------------------------------------------

struct Vector {
    /// Path relative to the vectors folder, e.g. `current/kv.json`.
    file: String,
    id: String,
    dialect: Dialect,
    direction: String,
    expect: String,
    name: String,
    msg_type: Option<u64>,
    fields: Value,
    context: Value,
    /// The complete TCP bytes.
    hex: Vec<u8>,
}

impl Vector {
    /// A field that is present and not `null`.
    fn field(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<&str, String> {
        self.field(key).and_then(Value::as_str).ok_or_else(|| format!("vector field `{key}` is not a string"))
    }

    fn u64(&self, key: &str) -> Result<u64, String> {
        self.field(key).and_then(Value::as_u64).ok_or_else(|| format!("vector field `{key}` is not a u64"))
    }

    fn bytes(&self, key: &str) -> Result<Vec<u8>, String> {
        hex(self.str(key)?)
    }

    fn uuid(&self, key: &str) -> Result<Uuid, String> {
        let b = self.bytes(key)?;
        Ok(Uuid(b.try_into().map_err(|_| format!("vector field `{key}` is not 16 bytes"))?))
    }

    /// The label of the frame (`fields.correlation`), `None` when unlabelled.
    fn correlation(&self) -> Option<u64> {
        self.field("correlation").and_then(Value::as_u64)
    }

    fn is(&self, direction: &str, expect: &str) -> bool {
        self.direction == direction && self.expect == expect
    }
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd hex length {}", s.len()));
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex: {e}"))).collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn vectors_dir() -> PathBuf {
    std::env::var_os("FITZ_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fitz-wire/tests/vectors/golden")))
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read vectors under {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

/// Every vector of every vector file under the folder, in file order.
fn load() -> Vec<Vector> {
    let dir = vectors_dir();
    let mut files = Vec::new();
    json_files(&dir, &mut files);
    let mut out = Vec::new();
    for path in files {
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        if !doc.get("schema").and_then(Value::as_str).unwrap_or("").starts_with("fitz-wire-vectors/") {
            continue; // another JSON document that happens to live there
        }
        let file = path.strip_prefix(&dir).unwrap_or(&path).display().to_string();
        let file_dialect = doc.get("dialect").and_then(Value::as_str);
        for v in doc.get("vectors").and_then(Value::as_array).into_iter().flatten() {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let dialect = match v.get("dialect").and_then(Value::as_str).or(file_dialect) {
                Some("current") => Dialect::Current,
                _ => Dialect::Legacy,
            };
            out.push(Vector {
                file: file.clone(),
                id: s("id"),
                dialect,
                direction: s("direction"),
                expect: s("expect"),
                name: s("name"),
                msg_type: v.get("msg_type").and_then(Value::as_u64),
                fields: v.get("fields").cloned().unwrap_or(Value::Null),
                context: v.get("context").cloned().unwrap_or(Value::Null),
                hex: hex(&s("hex")).unwrap_or_else(|e| panic!("{}: {e}", s("id"))),
            });
        }
    }
    assert!(!out.is_empty(), "no vectors under {}", dir.display());
    out
}

// ---------------------------------------------------------------------------
// Brokers, connections, frames
// ---------------------------------------------------------------------------

/// A follow-up request that proves the connection is still open.
const PROBE_NOTICE: &str = "notice://vectors/probe/alive";
/// The follow-up used after a Notice SUBSCRIBE vector (whose reply has the
/// Notice probe's type).
const PROBE_LEASE: &str = "lease://vectors/probe/alive";

/// One broker of a dialect and a long-lived connection for the vectors that
/// leave no state in their session.
struct Side {
    broker: Broker,
    dialect: Dialect,
    shared: Raw,
}

impl Side {
    async fn start(dialect: Dialect) -> Side {
        let broker = Broker::start(BrokerConfig::anonymous().with_dialect(dialect)).await.unwrap();
        let shared = connect(&broker, dialect).await;
        Side { broker, dialect, shared }
    }

    async fn fresh(&self) -> Raw {
        connect(&self.broker, self.dialect).await
    }

    /// Waits until every session but the shared one is gone (their state
    /// cleaned up), so that the next vector starts from a known state.
    async fn settle(&self) -> Result<(), String> {
        for _ in 0..400 {
            if self.broker.session_count() <= 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!("{} sessions still open 2 s after their connections were dropped", self.broker.session_count()))
    }
}

/// An authenticated connection: CONNECT with an empty token on the
/// anonymous broker, and the SERVER_HELLO in the current dialect.
async fn connect(broker: &Broker, dialect: Dialect) -> Raw {
    let addr = broker.tcp_addr().unwrap();
    match dialect {
        Dialect::Legacy => Raw::connect(addr, "").await,
        Dialect::Current => {
            let (c, caps) = Raw::connect_current(addr, "").await;
            assert_eq!(caps, Capabilities::ALL.0, "the current broker advertises every capability");
            c
        }
    }
}

/// Runs `fut`, turning a panic (e.g. a write on a connection the broker
/// closed) into an error for the one vector.
async fn guarded<F: std::future::Future<Output = Result<T, String>>, T>(fut: F) -> Result<T, String> {
    AssertUnwindSafe(fut).catch_unwind().await.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".into());
        Err(format!("panicked: {msg}"))
    })
}

fn show_one(r: &Rec) -> String {
    let name = r.msg_type.name().unwrap_or("?");
    match r.label {
        Some(l) => format!("[{l}] {name}({}) {}", r.msg_type.0, to_hex(&r.payload)),
        None => format!("{name}({}) {}", r.msg_type.0, to_hex(&r.payload)),
    }
}

fn show(recs: &[Rec]) -> String {
    if recs.is_empty() { "nothing".into() } else { recs.iter().map(show_one).collect::<Vec<_>>().join(", ") }
}

/// The TCP bytes of a transport frame. `Raw` decodes with fitz-wire, which
/// refuses every non-canonical encoding (escaped types ≤ 254, bad lengths),
/// so re-encoding what it returns gives back exactly the bytes received.
fn tcp_bytes(recs: &[Rec]) -> Vec<u8> {
    let mut body = Vec::new();
    for r in recs {
        let rec = Record { msg_type: r.msg_type, payload: &r.payload };
        let label = r.label.and_then(NonZeroU64::new).map(|l| (MsgType::CORRELATED, l));
        let mut buf = vec![0u8; frame::frame_len(Transport::WebSocket, label.is_some(), &rec)];
        frame::encode_frame(Transport::WebSocket, label, &rec, &mut buf).unwrap();
        body.extend_from_slice(&buf);
    }
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// The TCP bytes of one message (unlabelled).
fn tcp_of<E: Encode>(msg: &E) -> Vec<u8> {
    let mut buf = vec![0u8; frame::frame_len(Transport::Tcp, false, msg)];
    frame::encode_frame(Transport::Tcp, None, msg, &mut buf).unwrap();
    buf
}

/// Splits a broker → client vector into its records, checking that
/// [`tcp_bytes`] gives its bytes back unchanged.
fn parse_frame(bytes: &[u8]) -> Result<Vec<Rec>, String> {
    let body = match frame::decode_tcp(bytes, u32::MAX).map_err(|e| format!("vector frame: {e}"))? {
        TcpFrame::Complete { frame, consumed } if consumed == bytes.len() => frame,
        _ => return Err("vector hex is not exactly one TCP frame".into()),
    };
    let recs = LabelledRecords::from_broker(body)
        .map(|r| {
            r.map(|r| Rec {
                label: r.label.map(NonZeroU64::get),
                msg_type: r.record.msg_type,
                payload: r.record.payload.to_vec(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("vector records: {e}"))?;
    if tcp_bytes(&recs) != bytes {
        return Err("vector bytes do not re-encode to themselves".into());
    }
    Ok(recs)
}

fn same_bytes(broker: &[u8], want: &[u8]) -> Result<(), String> {
    if broker == want {
        Ok(())
    } else {
        Err(format!(
            "the broker sent\n      {}\n    the vector (ids taken over) is\n      {}",
            to_hex(broker),
            to_hex(want)
        ))
    }
}

// ---------------------------------------------------------------------------
// c2s: what the broker must do with each request
// ---------------------------------------------------------------------------

/// What a reply decoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Ok,
    Err(Envelope, Option<u32>),
}

fn got<T>(r: Result<Reply<'_, T>, DecodeError>) -> Result<Got, String> {
    match r {
        Ok(Reply::Ok(_)) => Ok(Got::Ok),
        Ok(Reply::Err(e)) => Ok(Got::Err(e.envelope, e.code)),
        Err(e) => Err(format!("the reply does not decode: {e}")),
    }
}

/// The operation's reply decoder (fitz-wire), reduced to [`Got`].
type Decoder = Box<dyn Fn(&[u8]) -> Result<Got, String>>;

macro_rules! dec {
    ($f:path) => {
        Box::new(|p: &[u8]| got($f(p))) as Decoder
    };
}

enum Expect {
    /// Exactly one record of the vector's type, labelled like the request,
    /// that the operation's decoder reads as `want` (NOTIFYs may come
    /// along, e.g. Queue SUBSCRIBE's current availability).
    Reply { want: Got, decode: Decoder },
    /// No answer (CONNECT in the legacy dialect, PUBLISH, SESSION_METADATA,
    /// ignored records).
    Nothing,
    /// CONNECT in the current dialect: SERVER_HELLO alone in its frame, and
    /// nothing for a second CONNECT (WIRE.md §B2).
    Hello,
    /// A terminal 303 to the sender: the vector's UUID, sequence 0,
    /// stream_end, a coded body with this code (WIRE.md §8.3).
    Terminal(u32),
    /// RPC_LIFECYCLE kind 4, status 5 (unknown) for the vector's UUID (§B8).
    CancelUnknown,
    /// The broker closes the connection (WIRE.md §3.4).
    Closes,
}

enum Conn {
    /// The side's long-lived connection: the request leaves no session state.
    Shared,
    /// A new authenticated connection, dropped afterwards.
    Fresh,
    /// A new connection without CONNECT (the vector is the CONNECT).
    Unauthenticated,
}

struct Plan {
    conn: Conn,
    expect: Expect,
    /// Enqueue a message on this route first (so a RESERVE that may wait
    /// for one answers at once).
    enqueue_first: Option<String>,
}

fn on(conn: Conn, expect: Expect) -> Plan {
    Plan { conn, expect, enqueue_first: None }
}

fn reply(want: Got, decode: Decoder) -> Expect {
    Expect::Reply { want, decode }
}

/// A concrete route matched by `selector` (wildcard segments replaced).
fn concrete(selector: &str) -> String {
    let (scheme, path) = selector.split_once("://").unwrap_or(("queue", selector));
    let segs: Vec<&str> = path.split('/').map(|s| if s.contains('*') { "vectors" } else { s }).collect();
    format!("{scheme}://{}", segs.join("/"))
}

/// The expectation for one c2s `accept` vector, by its name.
fn plan(v: &Vector) -> Result<Plan, String> {
    use Conn::{Fresh, Shared, Unauthenticated};
    use Envelope::{Coded, Status2, Uncoded};
    let legacy = v.dialect == Dialect::Legacy;
    let ok = Got::Ok;
    // A KV transaction nobody began (tx 42, 7, 9, 16): coded 1001 (BROKER.md §4.1).
    let no_tx = Got::Err(Coded, Some(1001));
    // A Stream append session nobody began: 2003, plain in the legacy
    // dialect, status 2 in the current one (WIRE.md §6.2, §B6).
    let no_session = if legacy { Got::Err(Uncoded, None) } else { Got::Err(Status2, Some(2003)) };
    Ok(match v.name.as_str() {
        // Legacy: nothing on success (BROKER.md §2.1); current: SERVER_HELLO.
        "CONNECT" => on(Unauthenticated, if legacy { Expect::Nothing } else { Expect::Hello }),
        // No reply, at most once per connection (WIRE.md §B4).
        "SESSION_METADATA" => on(Fresh, Expect::Nothing),
        // Bare records (frame.json) after CONNECT: a second CONNECT and types
        // outside every domain range are ignored; an unknown control type or
        // a type a domain range does not accept closes (WIRE.md §3.4,
        // BROKER.md §2.1, §2.5).
        "FRAME" => match v.msg_type.ok_or("FRAME vector without msg_type")? {
            1 | 800.. => on(Fresh, Expect::Nothing),
            _ => on(Fresh, Expect::Closes),
        },
        "KV_BEGIN" => on(Fresh, reply(ok, dec!(kv::decode_begin_reply))),
        "KV_GET" => on(Shared, reply(no_tx, dec!(kv::decode_get_reply))),
        "KV_SCAN" => on(Shared, reply(no_tx, dec!(kv::decode_scan_reply))),
        "KV_PUT" | "KV_INSERT" | "KV_DELETE" | "KV_DELETE_RANGE" | "KV_COMMIT" | "KV_ROLLBACK" => {
            on(Shared, reply(no_tx, dec!(kv::decode_ack_reply)))
        }
        "KV_SUBSCRIBE" => on(Fresh, reply(ok, dec!(kv::decode_subscribe_reply))),
        "KV_UNSUBSCRIBE" => on(Shared, reply(ok, dec!(kv::decode_ack_reply))),
        "QUEUE_ENQUEUE" => on(Shared, reply(ok, dec!(queue::decode_enqueue_reply))),
        "QUEUE_RESERVE" => {
            let selector = v.str("selector").or_else(|_| v.str("route"))?.to_owned();
            let layout = ReserveLayout::for_route(&selector);
            let waits = v.field("wait_seconds").and_then(Value::as_u64).is_some_and(|w| w > 0);
            Plan {
                conn: Fresh,
                expect: reply(ok, Box::new(move |p| got(queue::decode_reserve_reply(p, layout)))),
                enqueue_first: waits.then(|| concrete(&selector)),
            }
        }
        // Not reserved by this session: 4003, a plain domain error (§5.3).
        "QUEUE_EXTEND" | "QUEUE_COMPLETE" => on(Shared, reply(Got::Err(Uncoded, None), dec!(queue::decode_ack_reply))),
        "QUEUE_SUBSCRIBE" => on(Fresh, reply(ok, dec!(queue::decode_subscribe_reply))),
        "QUEUE_UNSUBSCRIBE" => on(Shared, reply(ok, dec!(queue::decode_ack_reply))),
        "RPC_SUBSCRIBE_WORKER" => on(Fresh, reply(ok, dec!(rpc::decode_subscribe_worker_reply))),
        // Idempotent, also when nothing is registered (BROKER.md §6.1).
        "RPC_UNSUBSCRIBE_WORKER" => on(Shared, reply(ok, dec!(rpc::decode_unsubscribe_worker_reply))),
        // Nothing registered: terminal 6004 at once (BROKER.md §6.2).
        "RPC_REQUEST" => on(Shared, Expect::Terminal(6004)),
        // A response for a call the broker does not know: 6005 to the worker.
        "RPC_RESPONSE" => on(Shared, Expect::Terminal(6005)),
        "RPC_CANCEL" => match v.u64("kind")? {
            1 => on(Shared, Expect::CancelUnknown),
            // An acknowledgement of a call that was not cancelled is ignored (BROKER.md §15.5).
            3 => on(Shared, Expect::Nothing),
            k => return Err(format!("no expectation for RPC_CANCEL kind {k}")),
        },
        "LEASE_ACQUIRE" => on(Fresh, reply(ok, dec!(lease::decode_acquire_reply))),
        // Nobody holds it: 5004 NotHeld (BROKER.md §7.2).
        "LEASE_RENEW" => on(Shared, reply(Got::Err(Coded, Some(5004)), dec!(lease::decode_renew_reply))),
        // Releasing a missing lease succeeds (BROKER.md §7.2).
        "LEASE_RELEASE" => on(Shared, reply(ok, dec!(lease::decode_ack_reply))),
        "LEASE_QUERY" => on(Shared, reply(ok, dec!(lease::decode_query_reply))),
        "LEASE_SUBSCRIBE" => on(Fresh, reply(ok, dec!(lease::decode_subscribe_reply))),
        "LEASE_UNSUBSCRIBE" => on(Shared, reply(ok, dec!(lease::decode_ack_reply))),
        // A cursor of a snapshot this broker never took: 5011 (WIRE.md §B9).
        "LEASE_LIST" => {
            let want = if v.field("cursor").is_some() { Got::Err(Coded, Some(5011)) } else { ok };
            on(Shared, reply(want, dec!(lease::decode_list_reply)))
        }
        "NOTICE_PUBLISH" => on(Shared, Expect::Nothing),
        "NOTICE_SUBSCRIBE" => on(Fresh, reply(ok, dec!(notice::decode_subscribe_reply))),
        // An unknown subscription id is a success (BROKER.md §8).
        "NOTICE_UNSUBSCRIBE" | "NOTICE_UNSUBSCRIBE_ALL" => on(Shared, reply(ok, dec!(notice::decode_ack_reply))),
        "STREAM_BEGIN" => on(Fresh, reply(ok, dec!(stream::decode_begin_reply))),
        "STREAM_APPEND" => on(Shared, reply(no_session, dec!(stream::decode_append_reply))),
        "STREAM_COMMIT" => on(Shared, reply(no_session, dec!(stream::decode_commit_reply))),
        "STREAM_ROLLBACK" => on(Shared, reply(no_session, dec!(stream::decode_ack_reply))),
        "STREAM_READ" => {
            let selector = v.str("selector")?.to_owned();
            on(Shared, reply(ok, Box::new(move |p| got(stream::decode_read_reply_for(p, &selector)))))
        }
        "STREAM_LAST" => on(Shared, reply(ok, dec!(stream::decode_last_reply))),
        "STREAM_GET_METADATA" => on(Shared, reply(ok, dec!(stream::decode_metadata_reply))),
        "STREAM_SUBSCRIBE" => on(Fresh, reply(ok, dec!(stream::decode_subscribe_reply))),
        "STREAM_UNSUBSCRIBE" => on(Shared, reply(ok, dec!(stream::decode_ack_reply))),
        "SCHEDULE_CREATE" | "SCHEDULE_CANCEL" | "SCHEDULE_UNSUBSCRIBE" | "SCHEDULE_CREATE_BATCH" => {
            on(Shared, reply(ok, dec!(schedule::decode_ack_reply)))
        }
        "SCHEDULE_LIST" => on(Shared, reply(ok, dec!(schedule::decode_list_reply))),
        "SCHEDULE_LIST_V2" => on(Shared, reply(ok, dec!(schedule::decode_list_v2_reply))),
        "SCHEDULE_SUBSCRIBE" => on(Fresh, reply(ok, dec!(schedule::decode_subscribe_reply))),
        other => return Err(format!("no expectation for a c2s vector named {other}: add one")),
    })
}

/// Sends the follow-up request and returns every record received before
/// its reply. The reply must come (the connection is open) and be an
/// unlabelled success alone in its frame.
async fn probe(c: &mut Raw, v: &Vector) -> Result<Vec<Rec>, String> {
    let ty = if v.msg_type == Some(u64::from(MsgType::NOTICE_SUBSCRIBE.0)) {
        c.send(&lease::Query { route: PROBE_LEASE }).await;
        MsgType::LEASE_QUERY
    } else {
        c.send(&notice::Subscribe { pattern: PROBE_NOTICE }).await;
        MsgType::NOTICE_SUBSCRIBE
    };
    let mut before = Vec::new();
    loop {
        let Some(frame) = c.recv_frame().await else {
            return Err(format!(
                "connection closed (or silent for {WAIT:?}) before the follow-up {} was answered; received: {}",
                ty.name().unwrap_or("?"),
                show(&before)
            ));
        };
        let Some(pos) = frame.iter().position(|r| r.msg_type == ty) else {
            before.extend(frame);
            continue;
        };
        let (head, tail) = frame.split_at(pos);
        before.extend_from_slice(head);
        let [r] = tail else { return Err(format!("the follow-up reply shares its frame: {}", show(tail))) };
        let ok = r.label.is_none()
            && if ty == MsgType::LEASE_QUERY {
                matches!(lease::decode_query_reply(&r.payload), Ok(Reply::Ok(_)))
            } else {
                matches!(notice::decode_subscribe_reply(&r.payload), Ok(Reply::Ok(_)))
            };
        if !ok {
            return Err(format!("follow-up answered wrongly: {}", show_one(r)));
        }
        return Ok(before);
    }
}

fn check_hello(frame: &[Rec]) -> Result<(), String> {
    let [r] = frame else { return Err(format!("SERVER_HELLO must be alone in its frame: {}", show(frame))) };
    if r.msg_type != MsgType::SERVER_HELLO || r.label.is_some() {
        return Err(format!("first frame after CONNECT is not an unlabelled SERVER_HELLO: {}", show_one(r)));
    }
    let h = ServerHello::decode(&r.payload).map_err(|e| format!("SERVER_HELLO does not decode: {e}"))?;
    if r.payload.len() != 6 || h.protocol_version != 1 || h.capabilities != Capabilities::ALL {
        return Err(format!("SERVER_HELLO {h:?}, want version 1, bits 0xF, 6 bytes"));
    }
    Ok(())
}

fn judge(expect: &Expect, v: &Vector, recs: &[Rec]) -> Result<(), String> {
    match expect {
        Expect::Nothing => {
            if recs.is_empty() {
                Ok(())
            } else {
                Err(format!("expected no answer, got {}", show(recs)))
            }
        }
        Expect::Reply { want, decode } => {
            let ty = v.msg_type.ok_or("vector without msg_type")?;
            let (mine, other): (Vec<&Rec>, Vec<&Rec>) = recs.iter().partition(|r| u64::from(r.msg_type.0) == ty);
            if let Some(o) = other.iter().find(|r| !r.msg_type.is_notify()) {
                return Err(format!("unexpected record {} besides the reply", show_one(o)));
            }
            let [r] = mine.as_slice() else {
                return Err(format!("{} records of type {ty}, want exactly one: {}", mine.len(), show(recs)));
            };
            if r.label != v.correlation() {
                return Err(format!("reply label {:?}, want {:?}: {}", r.label, v.correlation(), show_one(r)));
            }
            let g = decode(&r.payload).map_err(|e| format!("{e}: {}", show_one(r)))?;
            if g == *want { Ok(()) } else { Err(format!("reply {g:?}, want {want:?}: {}", show_one(r))) }
        }
        Expect::Terminal(code) => {
            let uuid = v.uuid("correlation_id")?;
            let [r] = recs else { return Err(format!("want one terminal 303, got {}", show(recs))) };
            if r.msg_type != MsgType::RPC_RESPONSE || r.label.is_some() {
                return Err(format!("want an unlabelled 303, got {}", show_one(r)));
            }
            let resp =
                rpc::Response::decode(&r.payload).map_err(|e| format!("303 does not decode ({e}): {}", show_one(r)))?;
            let e = resp.terminal_error();
            let right = resp.correlation_id == uuid
                && resp.sequence == 0
                && resp.stream_end()
                && e.is_some_and(|e| e.code == Some(*code) && e.envelope == Envelope::Coded);
            if right { Ok(()) } else { Err(format!("want terminal {code} for {uuid:?}, got {resp:?} ({e:?})")) }
        }
        Expect::CancelUnknown => {
            let uuid = v.uuid("correlation_id")?;
            let [r] = recs else { return Err(format!("want one RPC_LIFECYCLE, got {}", show(recs))) };
            let want = RpcLifecycle::CancelResult { correlation_id: uuid, status: CancelStatus::UnknownOrUnauthorized };
            match RpcLifecycle::decode(&r.payload) {
                Ok(l) if r.msg_type == MsgType::RPC_LIFECYCLE && r.label.is_none() && l == want => Ok(()),
                other => Err(format!("want {want:?}, got {} ({other:?})", show_one(r))),
            }
        }
        Expect::Hello | Expect::Closes => Err("internal: judged elsewhere".into()),
    }
}

async fn enqueue(c: &mut Raw, route: &str) -> Result<(), String> {
    c.send(&queue::Enqueue { route, body: b"vectors", delay_seconds: None }).await;
    let r = c.recv_type(MsgType::QUEUE_ENQUEUE).await.ok_or("setup ENQUEUE unanswered")?;
    match queue::decode_enqueue_reply(&r.payload) {
        Ok(Reply::Ok(_)) => Ok(()),
        other => Err(format!("setup ENQUEUE on {route} failed: {other:?}")),
    }
}

/// Sends the vector's bytes and checks the answer and that the connection
/// is still open afterwards.
async fn exercise(c: &mut Raw, v: &Vector, plan: &Plan) -> Result<(), String> {
    if let Some(route) = &plan.enqueue_first {
        enqueue(c, route).await?;
    }
    c.send_bytes(&v.hex).await;
    match &plan.expect {
        Expect::Closes => {
            if c.closed().await {
                Ok(())
            } else {
                Err(format!("the connection stayed open for {WAIT:?}"))
            }
        }
        Expect::Hello => {
            let f = c.recv_frame().await.ok_or("no SERVER_HELLO: connection closed or silent")?;
            check_hello(&f)?;
            c.send_bytes(&v.hex).await;
            let extra = probe(c, v).await?;
            if extra.is_empty() { Ok(()) } else { Err(format!("a second CONNECT was answered: {}", show(&extra))) }
        }
        expect => {
            let recs = probe(c, v).await?;
            judge(expect, v, &recs)
        }
    }
}

impl Side {
    async fn run(&mut self, v: &Vector, plan: &Plan) -> Result<(), String> {
        let outcome = match plan.conn {
            Conn::Shared => {
                let r = guarded(exercise(&mut self.shared, v, plan)).await;
                if r.is_err() {
                    // Do not let one vector's failure spill into the next ones.
                    self.shared = self.fresh().await;
                }
                r
            }
            Conn::Fresh => {
                let mut c = self.fresh().await;
                guarded(exercise(&mut c, v, plan)).await
            }
            Conn::Unauthenticated => {
                let mut c = Raw::tcp(self.broker.tcp_addr().unwrap()).await;
                guarded(exercise(&mut c, v, plan)).await
            }
        };
        // Whatever the vector left in its session goes with it.
        let settled = self.settle().await;
        outcome.and(settled)
    }
}

#[tokio::test]
async fn c2s_vectors_are_accepted_by_a_broker_of_their_dialect() {
    let vectors = load();
    let mut legacy = Side::start(Dialect::Legacy).await;
    let mut current = Side::start(Dialect::Current).await;
    let (mut passed, mut failed, mut refusals) = (0usize, 0usize, 0usize);
    for v in vectors.iter().filter(|v| v.direction == "c2s") {
        if v.expect == "reject" {
            // Client-side refusals: there are no bytes to send.
            refusals += 1;
            continue;
        }
        let side = match v.dialect {
            Dialect::Legacy => &mut legacy,
            Dialect::Current => &mut current,
        };
        let outcome = match (v.expect.as_str(), plan(v)) {
            ("accept", Ok(p)) => side.run(v, &p).await,
            ("accept", Err(e)) => Err(e),
            (other, _) => Err(format!("unknown expect `{other}`")),
        };
        match outcome {
            Ok(()) => passed += 1,
            Err(e) => {
                failed += 1;
                println!("FAIL {} ({}): {e}", v.id, v.file);
            }
        }
    }
    println!("vectors from {}", vectors_dir().display());
    println!("c2s reject vectors skipped (client-side refusals, no bytes): {refusals}");
    println!("{passed} passed, {failed} failed");
    assert!(failed == 0 && passed > 0, "{passed} passed, {failed} failed");
}

// ---------------------------------------------------------------------------
// Dialect mismatch
// ---------------------------------------------------------------------------

/// A KV BEGIN of one dialect does not decode in the other: the broker
/// closes the connection (BROKER.md §15.3, WIRE.md §B5). Both directions,
/// from the vectors' own bytes.
#[tokio::test]
async fn kv_begin_of_the_other_dialect_closes_the_connection() {
    let vectors = load();
    let legacy = Side::start(Dialect::Legacy).await;
    let current = Side::start(Dialect::Current).await;
    let (mut to_current, mut to_legacy, mut failures) = (0usize, 0usize, Vec::new());
    // Labelled frames are left out: a legacy broker refuses them for the label alone.
    for v in vectors.iter().filter(|v| v.is("c2s", "accept") && v.name == "KV_BEGIN" && v.correlation().is_none()) {
        let (target, count) = match v.dialect {
            Dialect::Legacy => (&current, &mut to_current),
            Dialect::Current => (&legacy, &mut to_legacy),
        };
        *count += 1;
        let mut c = target.fresh().await;
        c.send_bytes(&v.hex).await;
        if !c.closed().await {
            failures.push(format!("FAIL {}: a {:?} broker kept the connection open", v.id, target.dialect));
        }
    }
    for f in &failures {
        println!("{f}");
    }
    println!(
        "KV BEGIN across dialects: {to_current} legacy → current, {to_legacy} current → legacy, {} failed",
        failures.len()
    );
    assert!(to_current > 0 && to_legacy > 0 && failures.is_empty());
}

// ---------------------------------------------------------------------------
// s2c: the broker emits the bytes the official clients accept
// ---------------------------------------------------------------------------

/// OK replies with no variable field, whose request (the c2s vector of the
/// same file and label) succeeds without any setup.
const ACK_FORMS: &[&str] = &[
    "KV_UNSUBSCRIBE_RESPONSE",
    "QUEUE_UNSUBSCRIBE_RESPONSE",
    "LEASE_RELEASE_RESPONSE",
    "LEASE_UNSUBSCRIBE_RESPONSE",
    "NOTICE_UNSUBSCRIBE_RESPONSE",
    "NOTICE_UNSUBSCRIBE_ALL_RESPONSE",
    "STREAM_UNSUBSCRIBE_RESPONSE",
    "SCHEDULE_CREATE_RESPONSE",
    "SCHEDULE_CANCEL_RESPONSE",
    "SCHEDULE_UNSUBSCRIBE_RESPONSE",
    "SCHEDULE_CREATE_BATCH_RESPONSE",
    "RPC_SUBSCRIBE_WORKER_RESPONSE",
    "RPC_UNSUBSCRIBE_WORKER_RESPONSE",
];

/// OK replies whose only variable field is the subscription id, at the end.
const SUB_ID_FORMS: &[&str] = &[
    "KV_SUBSCRIBE_RESPONSE",
    "QUEUE_SUBSCRIBE_RESPONSE",
    "LEASE_SUBSCRIBE_RESPONSE",
    "NOTICE_SUBSCRIBE_RESPONSE",
    "STREAM_SUBSCRIBE_RESPONSE",
    "SCHEDULE_SUBSCRIBE_RESPONSE",
];

enum S2c {
    Compared,
    Skipped,
}

/// The next frame, which must hold one record.
async fn one_frame(c: &mut Raw, what: &str) -> Result<Vec<Rec>, String> {
    let f = c.recv_frame().await.ok_or_else(|| format!("no {what}: connection closed or silent"))?;
    if f.len() == 1 { Ok(f) } else { Err(format!("{what}: want one record in the frame, got {}", show(&f))) }
}

/// Replies: the c2s vector of the same file, name and label is sent, and the
/// reply must be the s2c vector's bytes (with the broker's subscription id).
async fn reply_form(side: &Side, v: &Vector, all: &[Vector]) -> Result<S2c, String> {
    if v.field("status").and_then(Value::as_str) != Some("ok") {
        return Ok(S2c::Skipped); // error texts are the broker's own
    }
    if v.name == "STREAM_SUBSCRIBE_RESPONSE" && v.fields.get("data").is_some() {
        return Ok(S2c::Skipped); // the SDK-compatibility form, off by default (WIRE.md §B6, C46)
    }
    let request = v.name.strip_suffix("_RESPONSE").unwrap_or("");
    let Some(req) = all
        .iter()
        .find(|c| c.file == v.file && c.is("c2s", "accept") && c.name == request && c.correlation() == v.correlation())
    else {
        return Ok(S2c::Skipped);
    };
    let mut c = side.fresh().await;
    c.send_bytes(&req.hex).await;
    let got = one_frame(&mut c, &format!("reply to {}", req.id)).await?;
    let mut want = parse_frame(&v.hex)?;
    if SUB_ID_FORMS.contains(&v.name.as_str()) {
        let ([w], [g]) = (want.as_mut_slice(), got.as_slice()) else { return Err("want one record".into()) };
        let (wn, gn) = (w.payload.len(), g.payload.len());
        if wn < 8 || gn < 8 || w.payload[wn - 8..] != v.u64("sub_id")?.to_be_bytes() {
            return Err(format!("the subscription id is not the last 8 bytes: {} / {}", show_one(w), show_one(g)));
        }
        w.payload[wn - 8..].copy_from_slice(&g.payload[gn - 8..]);
    }
    same_bytes(&tcp_bytes(&got), &tcp_bytes(&want))?;
    Ok(S2c::Compared)
}

/// Notice NOTIFY: subscribe with the vector's pattern, publish its route and
/// body; the NOTIFY must be the vector's bytes with the broker's id.
async fn notice_notify(side: &Side, v: &Vector) -> Result<S2c, String> {
    let pattern = v.context["subscription"]["pattern"].as_str().ok_or("no context.subscription.pattern")?;
    let (route, body) = (v.str("route")?, v.bytes("body")?);
    let mut c = side.fresh().await;
    c.send(&notice::Subscribe { pattern }).await;
    let r = c.recv_type(MsgType::NOTICE_SUBSCRIBE).await.ok_or("SUBSCRIBE unanswered")?;
    let Ok(Reply::Ok(sub)) = notice::decode_subscribe_reply(&r.payload) else {
        return Err(format!("SUBSCRIBE failed: {}", show_one(&r)));
    };
    c.send(&notice::Publish { route, body: &body }).await;
    let got = one_frame(&mut c, "NOTIFY").await?;
    let mut want = parse_frame(&v.hex)?;
    let [w] = want.as_mut_slice() else { return Err("want one record".into()) };
    if w.payload.len() < 8 || w.payload[..8] != v.u64("sub_id")?.to_be_bytes() {
        return Err("the vector's payload does not start with its sub_id".into());
    }
    w.payload[..8].copy_from_slice(&sub.sub_id.to_be_bytes());
    same_bytes(&tcp_bytes(&got), &tcp_bytes(&want))?;
    Ok(S2c::Compared)
}

/// A terminal error chunk: the vector is exactly the terminal-error encoding
/// of its fields, and the broker's 6004 for a call nobody serves is that
/// same encoding with its own code and message.
async fn terminal_shape(side: &Side, v: &Vector) -> Result<S2c, String> {
    let uuid = v.uuid("correlation_id")?;
    let code = u32::try_from(v.u64("error_code")?).map_err(|e| e.to_string())?;
    let vector_err = TerminalError::new(code, v.str("error_message")?).map_err(|e| e.to_string())?;
    same_bytes(&tcp_of(&vector_err.response(uuid, v.u64("sequence")?)), &v.hex)
        .map_err(|e| format!("the vector is not the terminal-error encoding of its fields: {e}"))?;
    let route = v.context["pending_call"]["route"].as_str().unwrap_or("rpc://vectors/s2c/unserved");
    let mut c = side.fresh().await;
    c.send(&rpc::Request { correlation_id: uuid, route, body: b"", budget: None }).await;
    let got = one_frame(&mut c, "terminal 303").await?;
    let resp = rpc::Response::decode(&got[0].payload).map_err(|e| format!("303 does not decode: {e}"))?;
    let e = resp.terminal_error().ok_or_else(|| format!("not a terminal error: {}", show(&got)))?;
    // BROKER.md §6.2 gives this body literally.
    if e.code != Some(6004) || e.message != "No workers registered for route" {
        return Err(format!("want 6004 \"No workers registered for route\", got {e:?}"));
    }
    let broker_err = TerminalError::new(6004, e.message).map_err(|e| e.to_string())?;
    same_bytes(&tcp_bytes(&got), &tcp_of(&broker_err.response(uuid, 0)))?;
    Ok(S2c::Compared)
}

async fn register_worker(c: &mut Raw, pattern: &str, extension: Option<rpc::WorkerExtension>) -> Result<(), String> {
    c.send(&rpc::SubscribeWorker { pattern, max_concurrent: 1, extension }).await;
    let r = c.recv_type(MsgType::RPC_SUBSCRIBE_WORKER).await.ok_or("SUBSCRIBE_WORKER unanswered")?;
    match rpc::decode_subscribe_worker_reply(&r.payload) {
        Ok(Reply::Ok(_)) => Ok(()),
        other => Err(format!("SUBSCRIBE_WORKER {pattern} failed: {other:?}")),
    }
}

/// A call delivered to a worker registered without the extension is the
/// caller's payload unchanged (WIRE.md §8.3), so the caller sends the
/// vector's bytes and the worker must receive them.
async fn request_forwarding(side: &Side, v: &Vector) -> Result<S2c, String> {
    if v.field("extension").is_some() {
        return Ok(S2c::Skipped); // invocation UUID and remaining budget are the broker's
    }
    let mut worker = side.fresh().await;
    let patterns: Vec<&str> = match v.context["registered_workers"].as_array() {
        Some(a) => a.iter().filter_map(Value::as_str).collect(),
        None => vec![v.str("route")?],
    };
    for p in patterns {
        register_worker(&mut worker, p, None).await?;
    }
    let mut caller = side.fresh().await;
    caller.send_bytes(&v.hex).await;
    let got = one_frame(&mut worker, "delivered REQUEST").await?;
    same_bytes(&tcp_bytes(&got), &v.hex)?;
    Ok(S2c::Compared)
}

/// Response chunks reach the caller byte-identical (WIRE.md §8.3): a worker
/// without the extension gets the caller's UUID and sends the vector's
/// bytes (after chunks 0..sequence), which the caller must receive.
async fn response_forwarding(side: &Side, v: &Vector) -> Result<S2c, String> {
    let uuid = v.uuid("correlation_id")?;
    let route = v.context["pending_call"]["route"].as_str().unwrap_or("rpc://vectors/s2c/call");
    let mut worker = side.fresh().await;
    register_worker(&mut worker, route, None).await?;
    let mut caller = side.fresh().await;
    caller.send(&rpc::Request { correlation_id: uuid, route, body: b"", budget: None }).await;
    let delivered = one_frame(&mut worker, "delivered REQUEST").await?;
    let req = rpc::Request::decode_with(&delivered[0].payload, false).map_err(|e| format!("delivered 302: {e}"))?;
    if req.correlation_id != uuid {
        return Err(format!("the worker got {:?}, want the caller's {uuid:?}", req.correlation_id));
    }
    for seq in 0..v.u64("sequence")? {
        worker.send(&rpc::Response::chunk(uuid, seq, b"")).await;
        one_frame(&mut caller, "earlier chunk").await?;
    }
    worker.send_bytes(&v.hex).await;
    let got = one_frame(&mut caller, "forwarded RESPONSE").await?;
    same_bytes(&tcp_bytes(&got), &v.hex)?;
    Ok(S2c::Compared)
}

/// RPC_LIFECYCLE: a call dispatched to a supporting worker and cancelled by
/// its caller gives the caller kind 4 status 2 (forwarded) and the worker
/// kind 2 reason 1 with its invocation UUID (WIRE.md §B8).
async fn lifecycle(side: &Side, v: &Vector) -> Result<S2c, String> {
    let kind = v.u64("kind")?;
    let scenario = (kind == 4 && v.field("status").and_then(Value::as_u64) == Some(2))
        || (kind == 2 && v.field("reason").and_then(Value::as_u64) == Some(1));
    if !scenario {
        return Ok(S2c::Skipped);
    }
    let uuid = if kind == 4 { v.uuid("correlation_id")? } else { Uuid([0x5a; 16]) };
    let route = "rpc://vectors/s2c/cancel";
    let mut worker = side.fresh().await;
    register_worker(&mut worker, route, Some(rpc::WorkerExtension)).await?;
    let mut caller = side.fresh().await;
    caller.send(&rpc::Request { correlation_id: uuid, route, body: b"", budget: None }).await;
    let delivered = one_frame(&mut worker, "delivered REQUEST").await?;
    let invocation = rpc::Request::decode_with(&delivered[0].payload, true)
        .map_err(|e| format!("delivered 302: {e}"))?
        .correlation_id;
    caller.send(&RpcCancel::Caller { correlation_id: uuid, reason: CancelReason::Explicit }).await;
    let to_caller = one_frame(&mut caller, "RPC_LIFECYCLE kind 4").await?;
    let to_worker = one_frame(&mut worker, "RPC_LIFECYCLE kind 2").await?;
    if kind == 4 {
        same_bytes(&tcp_bytes(&to_caller), &v.hex)?;
    } else {
        let want = RpcLifecycle::Signal { invocation_id: invocation, reason: SignalReason::Explicit };
        let mut w = parse_frame(&v.hex)?;
        let [r] = w.as_mut_slice() else { return Err("want one record".into()) };
        if r.payload.len() != 18 {
            return Err("the vector is not an 18-byte RPC_LIFECYCLE".into());
        }
        r.payload[1..17].copy_from_slice(&invocation.0);
        same_bytes(&tcp_bytes(&to_worker), &tcp_bytes(&w))?;
        same_bytes(&tcp_bytes(&to_worker), &tcp_of(&want))?;
    }
    Ok(S2c::Compared)
}

async fn s2c_one(side: &Side, v: &Vector, all: &[Vector]) -> Result<S2c, String> {
    let name = v.name.as_str();
    if ACK_FORMS.contains(&name) || SUB_ID_FORMS.contains(&name) {
        return reply_form(side, v, all).await;
    }
    match name {
        "NOTICE_NOTIFY" => notice_notify(side, v).await,
        "RPC_RESPONSE" if v.field("error_code").is_some() => terminal_shape(side, v).await,
        "RPC_RESPONSE" => response_forwarding(side, v).await,
        "RPC_REQUEST" => request_forwarding(side, v).await,
        "RPC_LIFECYCLE" => lifecycle(side, v).await,
        // Everything else carries broker-chosen values (tx ids, tokens,
        // offsets, times) or needs state that is not cheap to build.
        _ => Ok(S2c::Skipped),
    }
}

#[tokio::test]
async fn s2c_vectors_match_what_the_broker_sends() {
    let vectors = load();
    let legacy = Side::start(Dialect::Legacy).await;
    let current = Side::start(Dialect::Current).await;
    let (mut compared, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for v in vectors.iter().filter(|v| v.is("s2c", "accept")) {
        let side = match v.dialect {
            Dialect::Legacy => &legacy,
            Dialect::Current => &current,
        };
        let outcome = guarded(s2c_one(side, v, &vectors)).await;
        let outcome = match side.settle().await {
            Ok(()) => outcome,
            Err(e) => outcome.and(Err(e)),
        };
        match outcome {
            Ok(S2c::Compared) => compared += 1,
            Ok(S2c::Skipped) => skipped += 1,
            Err(e) => {
                failed += 1;
                println!("FAIL {} ({}): {e}", v.id, v.file);
            }
        }
    }
    println!("s2c: {compared} compared byte for byte, {failed} failed, {skipped} not reproducible deterministically");
    assert!(failed == 0 && compared > 0, "{compared} compared, {failed} failed");
}
