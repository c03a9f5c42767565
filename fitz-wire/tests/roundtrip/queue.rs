use fitz_wire::queue::*;
use fitz_wire::{Payload, Reply, StatusSet};
use proptest::prelude::*;

use crate::common::*;

fn form() -> impl Strategy<Value = CountersForm> {
    prop_oneof![Just(CountersForm::Inline), Just(CountersForm::Wrapped)]
}

fn layout() -> impl Strategy<Value = ReserveLayout> {
    prop_oneof![Just(ReserveLayout::Exact), Just(ReserveLayout::Routed)]
}

/// Concrete `queue://realm/area/resource` routes (what routed items carry).
fn concrete_route() -> impl Strategy<Value = String> {
    let seg = "[a-zA-Z0-9._-]{1,12}";
    (seg, seg, seg).prop_map(|(r, a, s)| format!("queue://{r}/{a}/{s}"))
}

/// Items of a RESERVE page: (route, message_id, lease_token, body).
fn items() -> impl Strategy<Value = Vec<(String, u64, u64, Vec<u8>)>> {
    prop::collection::vec((concrete_route(), any::<u64>(), any::<u64>(), bytes()), 0..6)
}

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn requests(route in text(), body in bytes(), delay: Option<u64>, lease_seconds: u64,
                batch_size: Option<u32>, wait: Option<u64>, message_id: u64, lease_token: u64,
                ready: u64, delayed: u64, inflight: u64, f in form()) {
        roundtrip!(Enqueue { route: &route, body: &body, delay_seconds: delay }, Enqueue::decode);
        let reserve = Reserve { route: &route, lease_seconds, batch_size, wait_seconds: wait };
        roundtrip!(reserve, Reserve::decode);
        prop_assert_eq!(reserve.layout() == ReserveLayout::Routed, route.contains('*'));
        roundtrip!(Extend { route: &route, message_id, lease_token, lease_seconds }, Extend::decode);
        roundtrip!(Complete { route: &route, message_id, lease_token }, Complete::decode);
        roundtrip!(Subscribe { pattern: &route }, Subscribe::decode);
        roundtrip!(Unsubscribe { pattern: &route }, Unsubscribe::decode);
        let notify = Notify { sub_id: message_id, route: &route, ready, delayed, inflight, form: f };
        roundtrip!(notify, Notify::decode);
        // The two forms carry the same counters.
        let other = Notify { form: match f { CountersForm::Inline => CountersForm::Wrapped, CountersForm::Wrapped => CountersForm::Inline }, ..notify };
        let other_bytes = payload_bytes(&other);
        let back = Notify::decode(&other_bytes).unwrap();
        prop_assert_eq!((back.ready, back.delayed, back.inflight, back.form), (ready, delayed, inflight, other.form));
    }

    #[test]
    fn replies(message_id: u64, items in items(), l in layout(), bare: bool, err in reply_err(), use_err: bool) {
        let e = server_error(&err);
        roundtrip_payload!(pick(use_err, e, EnqueueOk { message_id }), decode_enqueue_reply);
        roundtrip_payload!(pick(use_err, e, SubscribeOk { sub_id: message_id }), decode_subscribe_reply);
        roundtrip_payload!(if use_err { Reply::Err(e) } else { Reply::Ok(()) }, decode_ack_reply);

        let mut page = vec![0u8; 4096];
        let written = ReservedItems::write_into(
            items.iter().map(|(r, id, tok, b)| ReservedItem { route: Some(r), message_id: *id, lease_token: *tok, body: b }),
            l,
            &mut page,
        ).unwrap();
        prop_assert_eq!(written.len() as usize, items.len());
        prop_assert_eq!(ReservedItems::from_wire(written.len(), written.as_bytes(), l), Ok(written));
        // The bare form is only produced (and decoded) for an empty page.
        let ok = ReserveOk { items: written, bare: bare && items.is_empty() };
        let reply = pick(use_err, e, ok);
        roundtrip_payload!(reply, |p| decode_reserve_reply(p, l));
        if !use_err {
            let back: Vec<(Option<String>, u64, u64, Vec<u8>)> = ok.items.iter()
                .map(|i| (i.route.map(str::to_owned), i.message_id, i.lease_token, i.body.to_vec()))
                .collect();
            let want: Vec<(Option<String>, u64, u64, Vec<u8>)> = items.iter()
                .map(|(r, id, tok, b)| ((l == ReserveLayout::Routed).then(|| r.clone()), *id, *tok, b.clone()))
                .collect();
            prop_assert_eq!(back, want);
            // Without the request, the exact layout is assumed (never guessed).
            if l == ReserveLayout::Exact {
                let buf = payload_bytes(&reply);
                let plain = Reply::<ReserveOk<'_>>::decode(&buf, StatusSet::Standard).unwrap();
                prop_assert_eq!(payload_bytes(&plain), buf);
            }
        }
    }

    #[test]
    fn routed_pages_need_concrete_routes(route in text(), id: u64, body in bytes()) {
        let item = ReservedItem { route: Some(&route), message_id: id, lease_token: id, body: &body };
        let mut page = vec![0u8; 4096];
        let concrete = fitz_wire::route::is_concrete(&route, fitz_wire::route::Scheme::Queue, 3);
        prop_assert_eq!(ReservedItems::write_into([item], ReserveLayout::Routed, &mut page).is_ok(), concrete);
        let none = ReservedItem { route: None, ..item };
        prop_assert!(ReservedItems::write_into([none], ReserveLayout::Routed, &mut page).is_err());
        // The exact layout does not write routes, so any route is fine.
        prop_assert!(ReservedItems::write_into([item], ReserveLayout::Exact, &mut page).is_ok());
        let _ = ReserveOk { items: ReservedItems::empty(ReserveLayout::Exact), bare: true }.payload_len();
    }
}

never_panics!(decode_all);
