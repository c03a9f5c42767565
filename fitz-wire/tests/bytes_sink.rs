//! With the `bytes` feature, every encoder also writes into `bytes::BufMut`,
//! producing exactly the bytes of the slice encoder.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing, clippy::std_instead_of_core)]

use fitz_wire::frame::{self, Transport};
use fitz_wire::{MsgType, kv};

#[test]
fn bufmut_and_slice_encoders_agree() {
    let put = kv::Put { tx_id: 7, route: "kv://acme/orders/main", key: b"order:1", value: b"{}" };
    let label = std::num::NonZeroU64::new(9).map(|l| (MsgType::CORRELATE, l));
    for transport in [Transport::Tcp, Transport::WebSocket] {
        let len = frame::frame_len(transport, true, &put);
        let mut slice = vec![0u8; len];
        frame::encode_frame(transport, label, &put, &mut slice).unwrap();
        let mut buf = bytes::BytesMut::new();
        let n = frame::write_frame(transport, label, &put, &mut buf).unwrap();
        assert_eq!(n, len);
        assert_eq!(&buf[..], &slice[..]);
    }
    let mut rec = bytes::BytesMut::new();
    fitz_wire::record::write(&put, &mut rec).unwrap();
    assert_eq!(rec.len(), fitz_wire::record::encoded_len(&put));
}

#[test]
fn oversized_payload_is_refused_before_writing() {
    let big = vec![0u8; 70_000];
    let put = kv::Put { tx_id: 7, route: "kv://a/b/c", key: b"k", value: &big };
    let mut buf = bytes::BytesMut::new();
    assert!(matches!(
        frame::write_frame(Transport::Tcp, None, &put, &mut buf),
        Err(fitz_wire::EncodeError::PayloadTooLarge { .. })
    ));
    assert!(buf.is_empty(), "nothing may be written for a refused record");
}
