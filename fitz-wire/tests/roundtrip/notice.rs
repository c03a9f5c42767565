use fitz_wire::notice::*;
use fitz_wire::{Payload, Reply};
use proptest::prelude::*;

use crate::common::*;

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn requests(route in text(), body in bytes(), sub_id: u64) {
        roundtrip!(Publish { route: &route, body: &body }, Publish::decode);
        roundtrip!(Subscribe { pattern: &route }, Subscribe::decode);
        roundtrip!(Unsubscribe { sub_id }, Unsubscribe::decode);
        roundtrip!(UnsubscribeAll, UnsubscribeAll::decode);
        roundtrip!(Notify { sub_id, route: &route, body: &body }, Notify::decode);
    }

    #[test]
    fn replies(sub_id: u64, err in reply_err(), use_err: bool) {
        let e = server_error(&err);
        roundtrip_payload!(pick(use_err, e, SubscribeOk { sub_id }), decode_subscribe_reply);
        roundtrip_payload!(if use_err { Reply::Err(e) } else { Reply::Ok(()) }, decode_ack_reply);
        // The bare form `00 <u64>` (no flag byte) is rejected (C10).
        let mut bare = vec![0u8];
        bare.extend_from_slice(&sub_id.to_be_bytes());
        prop_assert!(decode_subscribe_reply(&bare).is_err());
        let _ = SubscribeOk { sub_id }.payload_len();
    }
}

never_panics!(decode_all);
