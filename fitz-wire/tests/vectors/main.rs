//! Golden-vector conformance test (see `golden/README` of the spec).
//!
//! Reads every `*.json` under `FITZ_VECTORS_DIR` (default: this crate's copy
//! in `tests/vectors/golden`), recursing into sub-folders, and checks every
//! vector: `accept` → decode succeeds, the decoded fields equal `fields`,
//! and re-encoding gives exactly `hex`; `reject` → encoding or decoding
//! fails with a typed error, without panicking. Prints one line per failing
//! vector and a final `N passed, M failed`; exits non-zero if M > 0 or N = 0.
//!
//! Messages are dispatched by the vector's `name`, so new vector files in
//! the same schema are picked up without code changes.

#![allow(
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::std_instead_of_core
)]

mod control;
mod kv;
mod lease;
mod notice;
mod queue;
mod rpc;
mod schedule;
mod stream;
mod util;

use std::num::NonZeroU64;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fitz_wire::frame::{self, LabelledRecords, TcpFrame, Transport};
use fitz_wire::{Capabilities, Dialect, MsgType, Record};
use serde_json::Value;
use util::{Ctx, Decoded, Fields, R, to_hex};

type EncodeFn = fn(&str, &Fields, &Ctx<'_>) -> Option<R<Vec<u8>>>;
type DecodeFn = fn(&str, Dir, &[u8], &Ctx<'_>) -> Option<R<Decoded>>;

/// Direction of a vector.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    C2s,
    S2c,
}

const DOMAINS: &[(EncodeFn, DecodeFn)] = &[
    (control::encode, control::decode),
    (kv::encode, kv::decode),
    (queue::encode, queue::decode),
    (rpc::encode, rpc::decode),
    (lease::encode, lease::decode),
    (notice::encode, notice::decode),
    (stream::encode, stream::decode),
    (schedule::encode, schedule::decode),
];

fn encode_any(name: &str, f: &Fields, ctx: &Ctx<'_>) -> R<Vec<u8>> {
    DOMAINS.iter().find_map(|(e, _)| e(name, f, ctx)).unwrap_or_else(|| Err(format!("no encoder for {name}")))
}

fn decode_any(name: &str, dir: Dir, payload: &[u8], ctx: &Ctx<'_>) -> R<Decoded> {
    DOMAINS
        .iter()
        .find_map(|(_, d)| d(name, dir, payload, ctx))
        .unwrap_or_else(|| Err(format!("no decoder for {name} ({dir:?})")))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    Ok(())
}

fn label_of(fields: &Fields) -> R<Option<NonZeroU64>> {
    match fields.get("correlation") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(NonZeroU64::new(util::u64_of(v)?).ok_or("correlation 0")?)),
    }
}

fn compare(ours: &Fields, theirs: &Fields) -> R<()> {
    for (k, want) in theirs {
        // The label and a bare record's type are checked at the frame level.
        if k == "correlation" || (k == "msg_type" && !ours.contains_key(k)) {
            continue;
        }
        match ours.get(k) {
            None => return Err(format!("field `{k}` not produced by the decoder (want {want})")),
            Some(got) if got != want => return Err(format!("field `{k}`: got {got}, want {want}")),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Splits TCP bytes into exactly one frame and its records.
fn split(bytes: &[u8], dir: Dir) -> Result<Vec<fitz_wire::frame::Labelled<'_>>, String> {
    let frame = match frame::decode_tcp(bytes, frame::BROKER_MAX_FRAME).map_err(|e| format!("frame: {e}"))? {
        TcpFrame::Complete { frame, consumed } if consumed == bytes.len() => frame,
        TcpFrame::Complete { consumed, .. } => return Err(format!("{} bytes after the frame", bytes.len() - consumed)),
        TcpFrame::Incomplete { needed } => return Err(format!("frame incomplete, {needed} more bytes needed")),
    };
    let records = match dir {
        Dir::C2s => LabelledRecords::from_client(frame),
        Dir::S2c => LabelledRecords::from_broker(frame),
    };
    records.collect::<Result<Vec<_>, _>>().map_err(|e| format!("records: {e}"))
}

fn check(v: &Value, file_dialect: Option<&str>) -> R<()> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).ok_or_else(|| format!("vector lacks `{k}`"));
    let name = s("name")?;
    let dir = match s("direction")? {
        "c2s" => Dir::C2s,
        "s2c" => Dir::S2c,
        d => return Err(format!("unknown direction {d}")),
    };
    let expect = s("expect")?;
    let bytes = util::hex(s("hex")?)?;
    let empty = serde_json::Map::new();
    let fields = v.get("fields").and_then(Value::as_object).unwrap_or(&empty);
    let null = Value::Null;
    let raw_ctx = v.get("context").unwrap_or(&null);
    let dialect = match v.get("dialect").and_then(Value::as_str).or(file_dialect) {
        Some("current") => Dialect::Current,
        _ => Dialect::Legacy,
    };
    let capabilities = Capabilities(
        raw_ctx.get("capabilities").and_then(Value::as_u64).and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
    );
    let ctx = Ctx { dialect, capabilities, raw: raw_ctx };
    let msg_type = v.get("msg_type").and_then(Value::as_u64);

    match (dir, expect) {
        (Dir::C2s, "accept") => {
            let record_bytes = encode_any(name, fields, &ctx)?;
            let record = Record::parse_exact(&record_bytes).map_err(|e| format!("own record: {e}"))?;
            let label = label_of(fields)?;
            let mut buf = vec![0u8; frame::frame_len(Transport::Tcp, label.is_some(), &record)];
            let n = frame::encode_frame(Transport::Tcp, label.map(|l| (MsgType::CORRELATE, l)), &record, &mut buf)
                .map_err(|e| format!("frame encode: {e}"))?;
            if buf[..n] != bytes[..] {
                return Err(format!("encoded\n      {}\n    want\n      {}", to_hex(&buf[..n]), to_hex(&bytes)));
            }
            // The broker's view: decode the golden bytes back.
            let recs = split(&bytes, dir)?;
            let [one] = recs.as_slice() else { return Err(format!("{} records in a client frame", recs.len())) };
            if one.label != label {
                return Err(format!("label {:?}, want {label:?}", one.label));
            }
            if Some(u64::from(one.record.msg_type.0)) != msg_type {
                return Err(format!("msg_type {} want {msg_type:?}", one.record.msg_type.0));
            }
            let d = decode_any(name, dir, one.record.payload, &ctx)?;
            compare(&d.fields, fields)?;
            if d.reencoded != one.record.payload {
                return Err(format!("re-encoded payload {} != {}", to_hex(&d.reencoded), to_hex(one.record.payload)));
            }
            Ok(())
        }
        // A refusal must be the encoder's typed error (domain modules prefix
        // it with `refused:`), not a vector the harness failed to read.
        (Dir::C2s, "reject") => match encode_any(name, fields, &ctx) {
            Err(e) if e.starts_with("refused:") => Ok(()),
            Err(e) => Err(format!("not refused by the encoder: {e}")),
            Ok(b) => Err(format!("encoder accepted it: {}", to_hex(&b))),
        },
        (Dir::S2c, "accept") => {
            let recs = split(&bytes, dir)?;
            let want_type = msg_type.ok_or("accept vector without msg_type")?;
            let one = recs
                .iter()
                .find(|r| u64::from(r.record.msg_type.0) == want_type)
                .ok_or_else(|| format!("no record of type {want_type} in the frame"))?;
            if fields.contains_key("correlation") && one.label != label_of(fields)? {
                return Err(format!("label {:?}, want {:?}", one.label, label_of(fields)?));
            }
            for other in recs.iter().filter(|r| !std::ptr::eq(*r, one)) {
                // Every other record of the frame must decode too (e.g. a NOTIFY after a reply).
                let other_name = other.record.msg_type.name().unwrap_or("?");
                decode_any(other_name, dir, other.record.payload, &ctx)
                    .map_err(|e| format!("companion record {other_name}: {e}"))?;
            }
            let d = decode_any(name, dir, one.record.payload, &ctx)?;
            compare(&d.fields, fields)?;
            if d.reencoded != one.record.payload {
                return Err(format!("re-encoded payload {} != {}", to_hex(&d.reencoded), to_hex(one.record.payload)));
            }
            if recs.len() == 1 {
                let rec = Record { msg_type: one.record.msg_type, payload: &d.reencoded };
                let mut buf = vec![0u8; frame::frame_len(Transport::Tcp, one.label.is_some(), &rec)];
                let label = one.label.map(|l| (MsgType::CORRELATED, l));
                let n = frame::encode_frame(Transport::Tcp, label, &rec, &mut buf).map_err(|e| e.to_string())?;
                if buf[..n] != bytes[..] {
                    return Err(format!("re-encoded frame {} != {}", to_hex(&buf[..n]), to_hex(&bytes)));
                }
            }
            Ok(())
        }
        (Dir::S2c, "reject") => {
            let Ok(recs) = split(&bytes, dir) else { return Ok(()) };
            let target = msg_type.map(|t| recs.iter().find(|r| u64::from(r.record.msg_type.0) == t));
            let one = match target {
                Some(Some(r)) => r,
                // The frame parsed but holds no record of the type the vector names.
                _ => return Err("frame decoded without error and no record to reject".into()),
            };
            if !DOMAINS.iter().any(|(_, d)| d(name, dir, &[], &ctx).is_some()) {
                return Err(format!("no decoder for {name} ({dir:?})"));
            }
            match decode_any(name, dir, one.record.payload, &ctx) {
                Err(_) => Ok(()),
                Ok(d) => Err(format!("decoder accepted it: {:?}", Value::Object(d.fields).to_string())),
            }
        }
        (_, e) => Err(format!("unknown expect {e}")),
    }
}

fn main() -> ExitCode {
    let dir = std::env::var_os("FITZ_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/golden"));
    let mut files = Vec::new();
    if let Err(e) = collect(&dir, &mut files) {
        eprintln!("cannot read vectors under {}: {e}", dir.display());
        println!("0 passed, 1 failed");
        return ExitCode::FAILURE;
    }
    std::panic::set_hook(Box::new(|_| {}));
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &files {
        let doc: Value = match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(e) => {
                println!("FAIL {}: unreadable: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        let schema = doc.get("schema").and_then(Value::as_str).unwrap_or("");
        if !schema.starts_with("fitz-wire-vectors/") {
            // Not a vector file (another JSON document that happens to live here).
            continue;
        }
        let file_dialect = doc.get("dialect").and_then(Value::as_str);
        let vectors = doc.get("vectors").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let (mut fp, mut ff) = (0usize, 0usize);
        for v in vectors {
            let id = v.get("id").and_then(Value::as_str).unwrap_or("<no id>");
            let outcome = catch_unwind(AssertUnwindSafe(|| check(v, file_dialect)))
                .unwrap_or_else(|_| Err("PANICKED".to_owned()));
            match outcome {
                Ok(()) => fp += 1,
                Err(e) => {
                    ff += 1;
                    println!("FAIL {id}: {e}");
                }
            }
        }
        let rel = path.strip_prefix(&dir).unwrap_or(path);
        println!("{:<28} {fp:>4} passed, {ff} failed", rel.display());
        passed += fp;
        failed += ff;
    }
    println!("vectors from {}", dir.display());
    println!("{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
