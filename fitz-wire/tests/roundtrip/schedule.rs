use fitz_wire::schedule::*;
use fitz_wire::{Payload, Reply};
use proptest::prelude::*;

use crate::common::*;

fn delivery_mode() -> impl Strategy<Value = DeliveryMode> {
    prop_oneof![Just(DeliveryMode::Broadcast), Just(DeliveryMode::Single)]
}

/// An entry's owned parts: route, cron, delivery mode, payload.
type OwnedEntry = (String, String, DeliveryMode, Vec<u8>);

fn owned_entry() -> impl Strategy<Value = OwnedEntry> {
    (text(), text(), delivery_mode(), bytes())
}

fn owned_entries() -> impl Strategy<Value = Vec<OwnedEntry>> {
    prop::collection::vec(owned_entry(), 0..8)
}

fn entry((route, cron, delivery_mode, payload): &OwnedEntry) -> Entry<'_> {
    Entry { route, cron, delivery_mode: *delivery_mode, payload }
}

fn owned(e: Entry<'_>) -> OwnedEntry {
    (e.route.to_owned(), e.cron.to_owned(), e.delivery_mode, e.payload.to_vec())
}

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn requests(route in text(), cron in text(), m in delivery_mode(), payload in bytes(), sub_id: u64,
                offset: Option<u64>, limit: Option<u64>, bare: bool, continuation in prop::option::of(text()),
                batch in owned_entries()) {
        let create = Create { route: &route, cron: &cron, delivery_mode: m, payload: &payload };
        roundtrip!(create, Create::decode);
        roundtrip!(Entry::from(create).to_create(), Create::decode);
        roundtrip!(Cancel { route: &route }, Cancel::decode);
        // `bare` is honoured only when both fields are absent.
        let list = List { offset, limit, bare: bare && offset.is_none() && limit.is_none() };
        roundtrip!(list, List::decode);
        roundtrip!(Subscribe { pattern: &route }, Subscribe::decode);
        roundtrip!(Unsubscribe { pattern: &route }, Unsubscribe::decode);
        roundtrip!(Notify { sub_id, route: &route, payload: &payload }, Notify::decode);
        let entries: Vec<Entry<'_>> = batch.iter().map(entry).collect();
        let create_batch = CreateBatch::new(&entries);
        roundtrip!(create_batch, CreateBatch::decode);
        let buf = payload_bytes(&create_batch);
        let decoded = CreateBatch::decode(&buf).unwrap();
        prop_assert_eq!(usize::try_from(decoded.entries.len()).unwrap(), batch.len());
        prop_assert_eq!(decoded.entries.iter().map(owned).collect::<Vec<_>>(), batch.clone());
        let rest = buf.get(4..).unwrap();
        prop_assert_eq!(decoded.entries.as_bytes(), Some(rest));
        prop_assert_eq!(BatchEntries::from_wire(decoded.entries.len(), rest), Ok(decoded.entries));
        roundtrip!(ListV2 { continuation: continuation.as_deref(), limit }, ListV2::decode);
    }

    #[test]
    fn replies(sub_id: u64, total_count: u64, has_more: bool, continuation in prop::option::of(text()),
               list in owned_entries(), err in reply_err(), use_err: bool) {
        let e = server_error(&err);
        roundtrip_payload!(pick(use_err, e, SubscribeOk { sub_id }), decode_subscribe_reply);
        roundtrip_payload!(if use_err { Reply::Err(e) } else { Reply::Ok(()) }, decode_ack_reply);

        let mut page = vec![0u8; 4096];
        let written = write_entries(list.iter().map(entry), &mut page).unwrap();
        prop_assert_eq!(written.len(), list.len());
        prop_assert_eq!(Entries::from_wire(written.as_bytes()), Ok(written));

        let ok = pick(use_err, e, ListOk { total_count, entries: written });
        roundtrip_payload!(ok, decode_list_reply);
        let buf = payload_bytes(&ok);
        if let Reply::Ok(back) = decode_list_reply(&buf).unwrap() {
            prop_assert_eq!(back.entries.iter().map(owned).collect::<Vec<_>>(), list.clone());
        }

        let v2 = pick(use_err, e, ListV2Ok { has_more, continuation: continuation.as_deref(), entries: written });
        roundtrip_payload!(v2, decode_list_v2_reply);
        let buf = payload_bytes(&v2);
        if let Reply::Ok(back) = decode_list_v2_reply(&buf).unwrap() {
            prop_assert_eq!(back.entries.iter().map(owned).collect::<Vec<_>>(), list.clone());
        }

        // A buffer one byte short is refused with the exact size.
        let needed = written.wire_len();
        let mut short = vec![0u8; needed - 1];
        let refused = write_entries(list.iter().map(entry), &mut short);
        prop_assert_eq!(refused, Err(fitz_wire::EncodeError::BufferTooSmall { needed, available: needed - 1 }));

        // The fitting writer keeps the longest prefix of whole entries that
        // fits with the end marker.
        let cap = needed / 2 + 1;
        let mut small = vec![0u8; cap];
        let fit = write_entries_fitting(list.iter().map(entry), &mut small).unwrap();
        let n = fit.len();
        prop_assert!(fit.wire_len() <= cap);
        if let Some(next) = list.get(n) {
            prop_assert!(fit.wire_len() + 1 + entry(next).payload_len() > cap);
        }
        prop_assert_eq!(fit.iter().map(owned).collect::<Vec<_>>(), list.get(..n).unwrap().to_vec());
        prop_assert_eq!(Entries::from_wire(fit.as_bytes()), Ok(fit));
        let mut room = vec![0u8; needed];
        prop_assert_eq!(write_entries_fitting(list.iter().map(entry), &mut room), Ok(written));
        prop_assert!(write_entries_fitting(list.iter().map(entry), &mut []).is_err());
    }
}

never_panics!(decode_all);
