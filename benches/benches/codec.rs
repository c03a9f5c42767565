//! Codec micro-benchmarks: encode, and decode + walk the borrowed view, for
//! the hot paths of WIRE.md (a small KV PUT, a Notice PUBLISH, an RPC
//! RESPONSE chunk, a 100-item Stream READ page, a 64-item Queue RESERVE
//! page), plus the record-header decode every received record goes through,
//! and the correlation of a labelled reply with 1,024 requests in flight
//! (fitz-client's session).
//!
//! A counting global allocator measures allocations per operation for each
//! benchmark before criterion times it; the counts are printed and written
//! to `target/codec-allocs.json`.
//!
//! `cargo bench -p benches --bench codec` (see PERF.md).
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::std_instead_of_core)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_std::core::{Config, DialectMode, Event, Session};
use fitz_wire::frame::{self, TcpFrame};
use fitz_wire::stream::{self, Cursor, EventRecord, Item, Page, PageLayout, ReadOk};
use fitz_wire::{Capabilities, MsgType, Record, RecordHeader, Reply, Uuid, kv, notice, queue, rpc};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator and only adds a counter.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUTE: &str = "stream://acme/orders/o-1";

/// Allocations of one call of `f` (after a warm-up call).
fn allocs_per_op(mut f: impl FnMut()) -> u64 {
    f();
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..100 {
        f();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) / 100
}

/// Payload of the single record in a TCP frame.
fn payload(frame_bytes: &[u8]) -> &[u8] {
    let TcpFrame::Complete { frame, .. } = frame::decode_tcp(frame_bytes, frame::BROKER_MAX_FRAME).unwrap() else {
        unreachable!()
    };
    Record::parse_exact(frame).unwrap().payload
}

fn encode_frame<E: fitz_wire::Encode>(msg: &E) -> Vec<u8> {
    let mut buf = vec![0u8; frame::frame_len(frame::Transport::Tcp, false, msg)];
    frame::encode_tcp(msg, &mut buf).unwrap();
    buf
}

/// One benchmark: a name, the operation, and how many items it handles.
struct Case<'a> {
    name: &'static str,
    op: Box<dyn FnMut() + 'a>,
    elements: u64,
}

fn run(c: &mut Criterion, cases: Vec<Case<'_>>, allocs: &mut Vec<(String, u64)>) {
    let mut g = c.benchmark_group("codec");
    for mut case in cases {
        let n = allocs_per_op(&mut case.op);
        println!("allocs/op {:<32} {n}", case.name);
        allocs.push((case.name.to_owned(), n));
        g.throughput(Throughput::Elements(case.elements));
        g.bench_function(case.name, |b| b.iter(&mut case.op));
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let mut allocs = Vec::new();

    // Small KV PUT.
    let put = kv::Put { tx_id: 42, route: "kv://acme/orders/main", key: b"order:1001", value: b"{\"qty\":3}" };
    let put_frame = encode_frame(&put);
    // Notice PUBLISH with a 64-byte body.
    let body64 = [0x5au8; 64];
    let publish = notice::Publish { route: "notice://acme/orders/created", body: &body64 };
    let publish_frame = encode_frame(&publish);
    // RPC RESPONSE, one-shot 64-byte reply.
    let response = rpc::Response::last(Uuid([7; 16]), 0, &body64);
    let response_frame = encode_frame(&response);

    // 100-item Stream READ page (resource selector, compatibility layout).
    let bodies: Vec<[u8; 32]> = (0..100u8).map(|i| [i; 32]).collect();
    let items: Vec<Item<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| Item::Event {
            route: ROUTE,
            record: EventRecord {
                resource_offset: i as u64,
                area_offset: Some(1000 + i as u64),
                realm_offset: None,
                global_offset: None,
                body: b,
                metadata: None,
                created_at: 1_767_225_600_000 + i as u64,
            },
        })
        .collect();
    let cursor = Cursor {
        last_resource_offset: 99,
        last_area_offset: Some(1099),
        last_realm_offset: None,
        last_global_offset: None,
        has_more: true,
        cursor_fingerprint: None,
        captured_watermark: None,
    };
    let mut page_buf = vec![0u8; 16_384];
    let page_items =
        stream::Items::write_into(items.iter().copied(), PageLayout::Compatibility, &mut page_buf).unwrap();
    let read_reply = Reply::Ok(ReadOk { page: Some(Page { items: page_items, cursor }) });
    let read_frame = encode_frame(&fitz_wire::codec::Typed::new(fitz_wire::MsgType::STREAM_READ, read_reply));

    // 64-item Queue RESERVE page (exact route).
    let qitems: Vec<queue::ReservedItem<'_>> = bodies[..64]
        .iter()
        .enumerate()
        .map(|(i, b)| queue::ReservedItem { route: None, message_id: i as u64, lease_token: 7 + i as u64, body: b })
        .collect();
    let mut reserve_buf = vec![0u8; 8192];
    let reserved =
        queue::ReservedItems::write_into(qitems.iter().copied(), queue::ReserveLayout::Exact, &mut reserve_buf)
            .unwrap();
    let reserve_reply = Reply::Ok(queue::ReserveOk { items: reserved, bare: false });
    let reserve_frame = encode_frame(&fitz_wire::codec::Typed::new(fitz_wire::MsgType::QUEUE_RESERVE, reserve_reply));

    let mut page_scratch = vec![0u8; 16_384];
    let mut reserve_scratch = vec![0u8; 8192];
    // Each closure owns its output buffer.
    let mut out1 = [0u8; 256];
    let mut out2 = [0u8; 256];
    let mut out3 = [0u8; 256];
    let mut out4 = vec![0u8; 16_384];
    let mut out5 = vec![0u8; 8192];

    let cases: Vec<Case<'_>> = vec![
        Case {
            name: "header_decode",
            op: Box::new(|| {
                black_box(RecordHeader::parse(black_box(&put_frame[4..])).unwrap());
            }),
            elements: 1,
        },
        Case {
            name: "kv_put_encode",
            op: Box::new(|| {
                black_box(frame::encode_tcp(black_box(&put), &mut out1).unwrap());
            }),
            elements: 1,
        },
        Case {
            name: "kv_put_decode",
            op: Box::new(|| {
                let p = payload(black_box(&put_frame));
                black_box(<kv::Put<'_> as fitz_wire::Payload<'_>>::decode(p).unwrap());
            }),
            elements: 1,
        },
        Case {
            name: "notice_publish_encode",
            op: Box::new(|| {
                black_box(frame::encode_tcp(black_box(&publish), &mut out2).unwrap());
            }),
            elements: 1,
        },
        Case {
            name: "notice_publish_decode",
            op: Box::new(|| {
                let p = payload(black_box(&publish_frame));
                black_box(<notice::Publish<'_> as fitz_wire::Payload<'_>>::decode(p).unwrap());
            }),
            elements: 1,
        },
        Case {
            name: "rpc_response_encode",
            op: Box::new(|| {
                black_box(frame::encode_tcp(black_box(&response), &mut out3).unwrap());
            }),
            elements: 1,
        },
        Case {
            name: "rpc_response_decode",
            op: Box::new(|| {
                let p = payload(black_box(&response_frame));
                let r = <rpc::Response<'_> as fitz_wire::Payload<'_>>::decode(p).unwrap();
                black_box(r.terminal_error());
                black_box(r);
            }),
            elements: 1,
        },
        Case {
            name: "stream_read_100_encode",
            op: Box::new(|| {
                let items = stream::Items::write_into(
                    black_box(&items).iter().copied(),
                    PageLayout::Compatibility,
                    &mut page_scratch,
                )
                .unwrap();
                let reply = Reply::Ok(ReadOk { page: Some(Page { items, cursor }) });
                let msg = fitz_wire::codec::Typed::new(fitz_wire::MsgType::STREAM_READ, reply);
                black_box(frame::encode_tcp(&msg, &mut out4).unwrap());
            }),
            elements: 100,
        },
        Case {
            name: "stream_read_100_decode",
            op: Box::new(|| {
                let p = payload(black_box(&read_frame));
                let Reply::Ok(ok) = stream::decode_read_reply(p, PageLayout::Compatibility).unwrap() else {
                    unreachable!()
                };
                let mut sum = 0u64;
                for item in ok.items() {
                    if let Some(r) = item.record() {
                        sum = sum.wrapping_add(r.resource_offset).wrapping_add(r.body.len() as u64);
                    }
                }
                black_box((sum, ok.cursor()));
            }),
            elements: 100,
        },
        Case {
            name: "queue_reserve_64_encode",
            op: Box::new(|| {
                let items = queue::ReservedItems::write_into(
                    black_box(&qitems).iter().copied(),
                    queue::ReserveLayout::Exact,
                    &mut reserve_scratch,
                )
                .unwrap();
                let msg = fitz_wire::codec::Typed::new(
                    fitz_wire::MsgType::QUEUE_RESERVE,
                    Reply::Ok(queue::ReserveOk { items, bare: false }),
                );
                black_box(frame::encode_tcp(&msg, &mut out5).unwrap());
            }),
            elements: 64,
        },
        Case {
            name: "queue_reserve_64_decode",
            op: Box::new(|| {
                let p = payload(black_box(&reserve_frame));
                let Reply::Ok(ok) = queue::decode_reserve_reply(p, queue::ReserveLayout::Exact).unwrap() else {
                    unreachable!()
                };
                let mut sum = 0u64;
                for item in ok.items.iter() {
                    sum = sum.wrapping_add(item.message_id).wrapping_add(item.body.len() as u64);
                }
                black_box(sum);
            }),
            elements: 64,
        },
    ];
    run(c, cases, &mut allocs);
    correlation(c, &mut allocs);

    let json: Vec<String> =
        allocs.iter().map(|(n, a)| format!("  {{\"name\": \"{n}\", \"allocs_per_op\": {a}}}")).collect();
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    let _ = std::fs::write(format!("{target}/codec-allocs.json"), format!("[\n{}\n]\n", json.join(",\n")));
    assert!(allocs.iter().all(|(_, a)| *a == 0), "a codec path allocated: {allocs:?}");
}

/// The label the session put on a request frame (TCP: after the prefix).
fn label_of(tcp_frame: &[u8]) -> u64 {
    let l = frame::LabelledRecords::from_client(&tcp_frame[frame::TCP_PREFIX..]).next().unwrap().unwrap();
    l.label.unwrap().get()
}

/// A session with 1,024 labelled KV GETs in flight; one operation is a
/// reply to the oldest being matched to its request (O(1): the label
/// encodes slot and generation) and a new request taking its slot, so
/// 1,024 stay in flight. The reply frame is encoded in the loop (about a
/// small encode's cost) and the new label read back from the request.
fn correlation(c: &mut Criterion, allocs: &mut Vec<(String, u64)>) {
    const IN_FLIGHT: usize = 1024;
    let cfg = Config { transport: frame::Transport::Tcp, dialect: DialectMode::Auto, ..Config::default() };
    let mut s: Box<Session<IN_FLIGHT>> = Box::new(Session::new(cfg));
    let mut out = vec![0u8; 256];
    s.connecting(&mut |_| {});
    s.connected(0, b"", &mut out, &mut |_| {}).unwrap();
    let hello =
        fitz_wire::control::ServerHello { protocol_version: 1, capabilities: Capabilities::CORRELATION, trailing: &[] };
    let mut hello_rec = vec![0u8; fitz_wire::record::encoded_len(&hello)];
    fitz_wire::record::encode(&hello, &mut hello_rec).unwrap();
    s.handle_frame(1, &hello_rec, &mut |_| {}).unwrap();
    let get = kv::Get { tx_id: 1, route: "kv://acme/orders/main", key: b"order:1001" };
    let mut labels = vec![0u64; IN_FLIGHT];
    for _ in 0..IN_FLIGHT {
        let (id, n) = s.request(2, &get, 5_000, &mut out).unwrap();
        labels[id.slot()] = label_of(&out[..n]);
    }
    let value = [0x42u8; 32];
    let reply = fitz_wire::codec::Typed::new(MsgType::KV_GET, Reply::Ok(kv::GetOk { value: Some(&value) }));
    let mut reply_buf = [0u8; 256];
    let mut next = 0usize;
    let mut op = || {
        let label = core::num::NonZeroU64::new(labels[next]).unwrap();
        let n = frame::encode_frame(
            frame::Transport::WebSocket,
            Some((MsgType::CORRELATED, label)),
            &reply,
            &mut reply_buf,
        )
        .unwrap();
        let mut matched = false;
        s.handle_frame(3, black_box(&reply_buf[..n]), &mut |e| matched |= matches!(e, Event::Reply { .. })).unwrap();
        assert!(matched, "the reply was not matched to its request");
        let (id, m) = s.request(3, &get, 5_000, &mut out).unwrap();
        labels[id.slot()] = label_of(&out[..m]);
        next = (next + 1) % IN_FLIGHT;
    };
    let name = "correlation_1024_in_flight";
    let n = allocs_per_op(&mut op);
    println!("allocs/op {name:<32} {n}");
    allocs.push((name.to_owned(), n));
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| b.iter(&mut op));
    g.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
