use fitz_wire::kv::*;
use fitz_wire::{Payload, Reply};
use proptest::prelude::*;

use crate::common::*;

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::ReadOnly), Just(Mode::ReadWrite)]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![Just(Durability::Buffered), Just(Durability::Sync)]
}

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn requests(tx_id: u64, route in text(), key in bytes(), value in bytes(), m in mode(),
                d in prop::option::of(durability()), limit: Option<u32>, reverse: bool, excl: bool,
                sk in prop::option::of(bytes()), ek in prop::option::of(bytes())) {
        let begin = Begin { route: &route, mode: m, durability: d };
        roundtrip!(begin, Begin::decode);
        let dialect = if d.is_some() { fitz_wire::Dialect::Legacy } else { fitz_wire::Dialect::Current };
        roundtrip!(begin, |p| Begin::decode_dialect(p, dialect));
        let commit = Commit { tx_id, route: &route, persistence: d };
        roundtrip!(commit, Commit::decode);
        let commit_dialect = if d.is_some() { fitz_wire::Dialect::Current } else { fitz_wire::Dialect::Legacy };
        roundtrip!(commit, |p| Commit::decode_dialect(p, commit_dialect));
        roundtrip!(Rollback { tx_id, route: &route }, Rollback::decode);
        roundtrip!(Get { tx_id, route: &route, key: &key }, Get::decode);
        roundtrip!(Put { tx_id, route: &route, key: &key, value: &value }, Put::decode);
        roundtrip!(Insert { tx_id, route: &route, key: &key, value: &value }, Insert::decode);
        roundtrip!(Delete { tx_id, route: &route, key: &key }, Delete::decode);
        roundtrip!(DeleteRange { tx_id, route: &route, start_key: &key, end_key: &value }, DeleteRange::decode);
        let scan = Scan { tx_id, route: &route, start_key: sk.as_deref(), end_key: ek.as_deref(), limit, reverse,
                          start_exclusive: excl };
        roundtrip!(scan, Scan::decode);
        roundtrip!(Subscribe { pattern: &route }, Subscribe::decode);
        roundtrip!(Unsubscribe { pattern: &route }, Unsubscribe::decode);
        roundtrip!(Notify { sub_id: tx_id, route: &route, mutation_count: u64::from(limit.unwrap_or(0)) }, Notify::decode);
    }

    #[test]
    fn replies(tx_id: u64, value in prop::option::of(bytes()), pairs in prop::collection::vec((bytes(), bytes()), 0..8),
               has_more: bool, err in reply_err(), use_err: bool) {
        let e = server_error(&err);
        roundtrip_payload!(pick(use_err, e, BeginOk { tx_id }), decode_begin_reply);
        roundtrip_payload!(pick(use_err, e, GetOk { value: value.as_deref() }), decode_get_reply);
        roundtrip_payload!(pick(use_err, e, SubscribeOk { sub_id: tx_id }), decode_subscribe_reply);
        roundtrip_payload!(if use_err { Reply::Err(e) } else { Reply::Ok(()) }, decode_ack_reply);
        let mut page = vec![0u8; 4096];
        let written = ScanPairs::write_into(pairs.iter().map(|(key, value)| ScanPair { key, value }), (), &mut page).unwrap();
        let scan = pick(use_err, e, ScanOk { pairs: written, has_more });
        roundtrip_payload!(scan, decode_scan_reply);
        if let Reply::Ok(ok) = scan {
            let back: Vec<(Vec<u8>, Vec<u8>)> = ok.pairs.iter().map(|p| (p.key.to_vec(), p.value.to_vec())).collect();
            prop_assert_eq!(back, pairs);
        }
        let _ = Reply::<()>::Ok(()).payload_len();
    }
}

never_panics!(decode_all);
