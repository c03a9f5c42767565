use fitz_wire::rpc::*;
use fitz_wire::{Payload, Reply, ServerError, Uuid};
use proptest::prelude::*;

use crate::common::*;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid)
}

fn budget() -> impl Strategy<Value = BudgetExtension> {
    prop_oneof![Just(0u32), Just(BudgetExtension::MAX_MS), 0..=BudgetExtension::MAX_MS,]
        .prop_map(|ms| BudgetExtension::new(ms).unwrap())
}

fn cancel_reason() -> impl Strategy<Value = CancelReason> {
    prop_oneof![Just(CancelReason::Explicit), Just(CancelReason::CallerDeadline)]
}

fn signal_reason() -> impl Strategy<Value = SignalReason> {
    prop_oneof![
        Just(SignalReason::Explicit),
        Just(SignalReason::CallerDeadline),
        Just(SignalReason::CallerDisconnected),
        Just(SignalReason::BrokerDeadline),
    ]
}

fn cancel_status() -> impl Strategy<Value = CancelStatus> {
    (1u8..=6).prop_map(|s| CancelStatus::from_u8(s).unwrap())
}

fn registration_ok() -> impl Strategy<Value = RegistrationOk> {
    prop_oneof![Just(RegistrationOk::EmptyData), Just(RegistrationOk::Bare)]
}

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn requests(id in uuid(), route in text(), body in bytes(), max_concurrent in 1u32..=1024, ext: bool,
                budget in prop::option::of(budget()), sequence: u64, end: bool, reason in cancel_reason(),
                signal in signal_reason(), status in cancel_status()) {
        let extension = ext.then_some(WorkerExtension);
        let sub = SubscribeWorker { pattern: &route, max_concurrent, extension };
        roundtrip!(sub, SubscribeWorker::decode);
        roundtrip!(sub, |p| SubscribeWorker::decode_with(p, ext));
        if ext {
            prop_assert!(SubscribeWorker::decode_with(&payload_bytes(&sub), false).is_err());
        }
        roundtrip!(UnsubscribeWorker { pattern: &route }, UnsubscribeWorker::decode);

        let req = Request { correlation_id: id, route: &route, body: &body, budget };
        roundtrip!(req, Request::decode);
        roundtrip!(req, |p| Request::decode_with(p, budget.is_some()));
        roundtrip!(Inbound::Request(req), |p| Inbound::classify(p, budget.is_some()));
        if budget.is_some() {
            prop_assert!(Request::decode_with(&payload_bytes(&req), false).is_err());
        }
        prop_assert_eq!(peek_correlation_id(&payload_bytes(&req)), Some(id));

        let resp = if end { Response::last(id, sequence, &body) } else { Response::chunk(id, sequence, &body) };
        roundtrip!(resp, Response::decode);
        prop_assert_eq!(resp.stream_end(), end);

        roundtrip!(RpcCancel::Caller { correlation_id: id, reason }, RpcCancel::decode);
        roundtrip!(RpcCancel::WorkerReleased { invocation_id: id }, RpcCancel::decode);
        roundtrip!(RpcLifecycle::Signal { invocation_id: id, reason: signal }, RpcLifecycle::decode);
        roundtrip!(RpcLifecycle::CancelResult { correlation_id: id, status }, RpcLifecycle::decode);
    }

    #[test]
    fn replies(ok in registration_ok(), err in reply_err(), use_err: bool, code: u16, message in text()) {
        let e = server_error(&err);
        roundtrip_payload!(pick(use_err, e, ok), decode_subscribe_worker_reply);
        roundtrip_payload!(pick(use_err, e, ok), decode_unsubscribe_worker_reply);
        let ingress = IngressError { code: u32::from(code), message: &message };
        roundtrip!(ingress, IngressError::decode);
        // A frame that also parses as a request is one (WIRE.md §4.4); for
        // text messages that practically never happens.
        let p = payload_bytes(&ingress);
        if Request::decode_with(&p, false).is_err() {
            prop_assert_eq!(Inbound::classify(&p, false), Ok(Inbound::IngressError(ingress)));
            prop_assert_eq!(Inbound::classify(&p, false).unwrap().payload_len(), p.len());
        }
    }

    #[test]
    fn terminal_errors(id in uuid(), sequence: u64, code in 6001u32..=6013, other: u32, message in text()) {
        // Built by the helper: recognised as the call's error.
        let err = TerminalError::new(code, &message).unwrap();
        let chunk = err.response(id, sequence);
        roundtrip!(chunk, TerminalResponse::decode);
        let frame = encode_frame_checked(&chunk);
        let resp = Response::decode(payload_of(&frame, fitz_wire::MsgType::RPC_RESPONSE)).unwrap();
        prop_assert!(resp.stream_end());
        prop_assert_eq!(resp.terminal_error(), Some(ServerError::coded(code, &message)));
        prop_assert_eq!(TerminalError::decode(resp.body), Ok(err));

        // The same body through write_body and Response::last.
        let mut buf = vec![0u8; err.payload_len()];
        let body = err.write_body(&mut buf).unwrap();
        prop_assert_eq!(Response::last(id, sequence, body).terminal_error(), Some(err.server_error()));
        prop_assert_eq!(payload_bytes(&Response::last(id, sequence, body)), payload_bytes(&chunk));
        prop_assert!(err.write_body(&mut vec![0u8; err.payload_len() - 1]).is_err());
        // Not the last chunk: data.
        prop_assert_eq!(Response::chunk(id, sequence, body).terminal_error(), None);

        // The same shape with a code outside 6001..=6013 is data.
        let outside = if TerminalError::CODES.contains(&other) { other + 1000 } else { other };
        prop_assert!(TerminalError::new(outside, &message).is_err());
        let data = payload_bytes(&TerminalError { code: outside, message: &message });
        prop_assert_eq!(Response::last(id, sequence, &data).terminal_error(), None);
        prop_assert!(TerminalResponse::decode(&payload_bytes(&Response::last(id, sequence, &data))).is_err());
        // As is the right code with anything after the message.
        let mut longer = payload_bytes(&err);
        longer.push(0);
        prop_assert_eq!(Response::last(id, sequence, &longer).terminal_error(), None);
    }
}

never_panics!(decode_all);

#[test]
fn reply_is_payload() {
    let _ = Reply::<RegistrationOk>::Ok(RegistrationOk::Bare).payload_len();
}
