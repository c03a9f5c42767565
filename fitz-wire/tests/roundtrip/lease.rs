use fitz_wire::lease::*;
use fitz_wire::{EncodeError, Payload, Reply};
use proptest::prelude::*;

use crate::common::*;

fn acquire_status() -> impl Strategy<Value = AcquireStatus> {
    prop_oneof![
        Just(AcquireStatus::Acquired),
        Just(AcquireStatus::AlreadyHeld),
        Just(AcquireStatus::Queued),
        Just(AcquireStatus::AlreadyQueued),
    ]
}

fn cursor() -> impl Strategy<Value = ListCursor> {
    (any::<u64>(), any::<u32>()).prop_map(|(snapshot_id, offset)| ListCursor { snapshot_id, offset })
}

/// Owned fields of one LIST item.
type OwnedItem = (String, String, u64, String, u64, u32);

fn list_item() -> impl Strategy<Value = OwnedItem> {
    (text(), text(), any::<u64>(), text(), any::<u64>(), any::<u32>())
}

fn borrow_item(i: &OwnedItem) -> ListItem<'_> {
    ListItem {
        route: &i.0,
        owner_id: &i.1,
        holder_incarnation: i.2,
        acquired_at: &i.3,
        expires_in_secs: i.4,
        renewals: i.5,
    }
}

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn requests(route in text(), owner in text(), ttl in 1..=u64::MAX, wait in 0..=MAX_WAIT_SECONDS,
                token: u64, sub_id: u64, limit: u32, c in prop::option::of(cursor())) {
        let acquire = Acquire { route: &route, owner_id: &owner, ttl_secs: ttl, wait_seconds: wait };
        prop_assert_eq!(acquire.validate(), Ok(()));
        roundtrip!(acquire, Acquire::decode);
        let mut buf = vec![0u8; fitz_wire::record::encoded_len(&acquire)];
        prop_assert_eq!(acquire.encode(&mut buf), Ok(buf.len()));
        roundtrip!(Renew { route: &route, owner_id: &owner, fencing_token: token, ttl_secs: ttl }, Renew::decode);
        roundtrip!(Release { route: &route, owner_id: &owner, fencing_token: token }, Release::decode);
        roundtrip!(Query { route: &route }, Query::decode);
        roundtrip!(Subscribe { route: &route }, Subscribe::decode);
        roundtrip!(Unsubscribe { route: &route }, Unsubscribe::decode);
        roundtrip!(Notify::new(sub_id, &route), Notify::decode);
        roundtrip!(List { pattern: &route, cursor: c, limit }, List::decode);
    }

    #[test]
    fn acquire_limits_are_refused(wait in (MAX_WAIT_SECONDS + 1).., extra in 1usize..64) {
        let owner = "o".repeat(MAX_OWNER_ID_LEN + extra);
        let mut buf = [0u8; 1024];
        let base = Acquire { route: "lease://r/a/s", owner_id: "node", ttl_secs: 30, wait_seconds: 0 };
        let too_long = Acquire { owner_id: &owner, ..base };
        prop_assert!(matches!(too_long.validate(), Err(EncodeError::InvalidValue(_))));
        prop_assert!(matches!(too_long.encode(&mut buf), Err(EncodeError::InvalidValue(_))));
        let too_long_wait = Acquire { wait_seconds: wait, ..base };
        prop_assert!(matches!(too_long_wait.encode(&mut buf), Err(EncodeError::InvalidValue(_))));
        let no_ttl = Acquire { ttl_secs: 0, ..base };
        prop_assert!(matches!(no_ttl.encode(&mut buf), Err(EncodeError::InvalidValue(_))));
        // The broker still decodes it, to answer 5008.
        roundtrip!(too_long_wait, Acquire::decode);
    }

    #[test]
    fn replies(token: u64, sub_id: u64, status in acquire_status(), owner in text(), ttl: u64, waiters: u32,
               held: bool, items in prop::collection::vec(list_item(), 0..6), next in prop::option::of(cursor()),
               err in reply_err(), use_err: bool) {
        let e = server_error(&err);
        let acquire = AcquireOk { status, fencing_token: token };
        roundtrip_payload!(pick(use_err, e, acquire), decode_acquire_reply);
        prop_assert_eq!(acquire.granted_token().is_none(), status.is_queued());
        let deferred = if status.is_queued() { AcquireOk { status: AcquireStatus::Acquired, ..acquire } } else { acquire };
        roundtrip_payload!(pick(use_err, e, deferred), decode_acquire_deferred);
        if status.is_queued() {
            let queued = payload_bytes(&Reply::<'_, AcquireOk>::Ok(acquire));
            prop_assert!(decode_acquire_deferred(&queued).is_err());
        }
        roundtrip_payload!(pick(use_err, e, RenewOk { fencing_token: token }), decode_renew_reply);
        let state = if held {
            LeaseState::Held { owner_id: &owner, ttl_remaining_secs: ttl, pending_waiters: waiters }
        } else {
            LeaseState::Free { pending_waiters: waiters }
        };
        roundtrip_payload!(pick(use_err, e, state), decode_query_reply);
        roundtrip_payload!(pick(use_err, e, SubscribeOk { sub_id }), decode_subscribe_reply);
        roundtrip_payload!(if use_err { Reply::Err(e) } else { Reply::Ok(()) }, decode_ack_reply);

        let mut page = vec![0u8; 4096];
        let written = ListItems::write_into(items.iter().map(borrow_item), (), &mut page).unwrap();
        prop_assert_eq!(ListItems::from_wire(written.len(), written.as_bytes(), ()), Ok(written));
        let list = pick(use_err, e, ListOk { items: written, next });
        roundtrip_payload!(list, decode_list_reply);
        if let Reply::Ok(ok) = list {
            let back: Vec<ListItem<'_>> = ok.items.iter().collect();
            let want: Vec<ListItem<'_>> = items.iter().map(borrow_item).collect();
            prop_assert_eq!(back, want);
        }
        // A buffer one byte short is refused with the exact size.
        let needed = written.wire_len();
        if needed > 0 {
            let mut short = vec![0u8; needed - 1];
            prop_assert_eq!(
                ListItems::write_into(items.iter().map(borrow_item), (), &mut short),
                Err(EncodeError::BufferTooSmall { needed, available: needed - 1 })
            );
        }
        let _ = Reply::<()>::Ok(()).payload_len();
    }
}

never_panics!(decode_all);
