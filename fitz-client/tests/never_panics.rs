//! Whatever the broker sends, in whatever state, the session never panics
//! and never hands a reply to a request it does not belong to.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::std_instead_of_core)]

use fitz_client::{Config, DialectMode, Event, Session};
use fitz_wire::MsgType;
use fitz_wire::frame::Transport;
use proptest::prelude::*;

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let junk = prop::collection::vec(any::<u8>(), 0..64);
    // Half of the inputs start like a real record so they reach the router.
    let recordish = (prop_oneof![Just(3u8), Just(4u8), Just(100u8), Just(103u8), Just(0xFF)], junk.clone()).prop_map(
        |(t, rest)| {
            let mut v = vec![t];
            v.extend(rest);
            v
        },
    );
    prop::collection::vec(prop_oneof![junk, recordish], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic(mode in 0u8..3, hello_first: bool, frames in frames(), times in prop::collection::vec(0u64..5000, 8)) {
        let dialect = [DialectMode::Auto, DialectMode::Legacy, DialectMode::Current][mode as usize];
        let cfg = Config { transport: Transport::WebSocket, dialect, settle_window_ms: 1000, connect_timeout_ms: 2000 };
        let mut s = Session::<4>::new(cfg);
        let mut out = [0u8; 256];
        let mut replies = Vec::new();
        let mut ev = |e: Event<'_>| {
            if let Event::Reply { id, msg_type, .. } = e {
                replies.push((id, msg_type));
            }
        };
        s.connected(0, b"", &mut out, &mut ev).unwrap();
        if hello_first {
            let _ = s.handle_frame(1, &[4, 0, 6, 0, 1, 0, 0, 0, 1], &mut ev);
        } else {
            let _ = s.handle_timeout(1000, &mut ev);
        }
        let mut sent = Vec::new();
        for t in [MsgType::KV_BEGIN, MsgType::KV_GET] {
            let msg = fitz_wire::Record { msg_type: t, payload: &[] };
            if let Ok((id, _)) = s.request(1000, &msg, 100, &mut out) {
                sent.push((id, t));
            }
        }
        for (f, t) in frames.iter().zip(times.iter().cycle()) {
            let now = 1000 + t;
            if s.handle_frame(now, f, &mut ev).is_err() {
                s.handle_close(&mut ev);
                break;
            }
            let _ = s.handle_timeout(now, &mut ev);
        }
        // Every reply delivered belongs to a request of the same type.
        for (id, ty) in &replies {
            prop_assert!(sent.contains(&(*id, *ty)), "reply {ty:?} delivered to {id:?}");
        }
    }
}
