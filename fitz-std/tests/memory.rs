//! The in-memory transport with a scripted peer playing the broker: the
//! handshake, replies routed to their callers, 1,000 RPC calls in flight
//! on one client, the call table's limit, and the end of the link.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

use std::time::Duration;

use fitz_std::core::State;
use fitz_std::memory::{self, Peer};
use fitz_std::{Capacity, Client, Error, rpc};
use fitz_wire::frame::{LabelledRecords, Transport, encode_frame};
use fitz_wire::{Capabilities, Encode, MsgType, control, rpc as wire};

const WAIT: Duration = Duration::from_secs(20);

fn frame<E: Encode>(msg: &E) -> Vec<u8> {
    let mut buf = vec![0; 4096];
    let n = encode_frame(Transport::Tcp, None, msg, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Reads frames from the client until `n` RPC requests have come (after
/// answering CONNECT), and returns their (correlation id, body).
async fn collect_requests(peer: &Peer, n: usize) -> Vec<(fitz_wire::Uuid, Vec<u8>)> {
    let mut requests = Vec::new();
    let mut inbox = Vec::new();
    while requests.len() < n {
        inbox.clear();
        tokio::time::timeout(WAIT, peer.recv(&mut inbox)).await.expect("the client sent nothing").unwrap();
        for f in fitz_std::core::driver::tcp_frames(&inbox) {
            for r in LabelledRecords::from_client(f) {
                let r = r.unwrap();
                match r.record.msg_type {
                    MsgType::CONNECT => {
                        let caps = Capabilities::CORRELATION;
                        peer.send(&frame(&control::ServerHello {
                            protocol_version: 1,
                            capabilities: caps,
                            trailing: &[],
                        }))
                        .unwrap();
                    }
                    MsgType::RPC_REQUEST => {
                        let req = wire::Request::decode_with(r.record.payload, false).unwrap();
                        requests.push((req.correlation_id, req.body.to_vec()));
                    }
                    _ => {}
                }
            }
        }
    }
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_are_in_flight_at_once_on_one_client() {
    let (link, peer) = memory::link();
    let client = tokio::time::timeout(WAIT, Client::builder("memory:").connect_in_memory(link)).await.unwrap().unwrap();
    assert_eq!(client.state(), State::Authenticated);
    let calls: Vec<_> = (0..1000u32)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { rpc::call_once(&c.rpc(), "rpc://test/mem/echo", &i.to_be_bytes()).await })
        })
        .collect();
    // Every request reaches the peer before any is answered: all 1,000
    // are in flight at once.
    let requests = collect_requests(&peer, 1000).await;
    // One more than the call table holds fails at once.
    let blockers: Vec<_> = (0..24u32)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { rpc::call_once(&c.rpc(), "rpc://test/mem/wait", b"").await })
        })
        .collect();
    collect_requests(&peer, 24).await;
    assert_eq!(
        rpc::call_once(&client.rpc(), "rpc://test/mem/echo", b"").await,
        Err(Error::Capacity(Capacity::Calls)),
        "{} calls are the limit",
        fitz_std::CALLS
    );
    // Answers in reverse order, each with its request's body.
    for (id, body) in requests.iter().rev() {
        peer.send(&frame(&wire::Response::last(*id, 0, body))).unwrap();
    }
    for (i, call) in calls.into_iter().enumerate() {
        let reply = tokio::time::timeout(WAIT, call).await.unwrap().unwrap().unwrap();
        assert_eq!(reply.as_ref(), &(i as u32).to_be_bytes());
    }
    // The link ends with the peer: waiting calls fail, the client leaves
    // the authenticated state.
    drop(peer);
    for b in blockers {
        let r = tokio::time::timeout(WAIT, b).await.unwrap().unwrap();
        assert!(matches!(r, Err(Error::ConnectionLost | Error::Closed)), "{r:?}");
    }
    let state = tokio::time::timeout(WAIT, client.changed(State::Authenticated)).await.unwrap();
    assert_ne!(state, State::Authenticated);
    client.close().await;
}
