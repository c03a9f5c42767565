use fitz_wire::frame::{self, Deframed, LabelledRecords, Oversize, TcpDeframer, Transport};
use fitz_wire::{MsgType, Record};
use proptest::prelude::*;

use crate::common::*;

proptest! {
    #![proptest_config(roundtrip_config())]

    #[test]
    fn records_roundtrip(ty: u16, payload in prop::collection::vec(any::<u8>(), 0..600), label: Option<std::num::NonZeroU64>) {
        let rec = Record { msg_type: MsgType(ty), payload: &payload };
        let buf = encode_frame_checked(&rec);
        prop_assert_eq!(payload_of(&buf, MsgType(ty)), &payload[..]);
        // Labelled frames (current dialect) parse back to the same label and record
        // unless the record is itself a control record (which may not be labelled).
        let mut lb = vec![0u8; frame::frame_len(Transport::WebSocket, label.is_some(), &rec)];
        let n = frame::encode_frame(Transport::WebSocket, label.map(|l| (MsgType::CORRELATED, l)), &rec, &mut lb).unwrap();
        prop_assert_eq!(n, lb.len());
        let got: Result<Vec<_>, _> = LabelledRecords::from_broker(&lb).collect();
        match (label, ty) {
            (Some(_), 1..=5) => prop_assert!(got.is_err()),
            (None, 3) => prop_assert!(got.is_err()),
            _ => {
                let got = got.unwrap();
                prop_assert_eq!(got.len(), 1);
                prop_assert_eq!(got[0].label, label);
                prop_assert_eq!(got[0].record, rec);
            }
        }
    }

    #[test]
    fn deframer_reassembles_any_split(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..6),
                                      cuts in prop::collection::vec(1usize..16, 1..40)) {
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&(f.len() as u32).to_be_bytes());
            wire.extend_from_slice(f);
        }
        let mut d = TcpDeframer::new(1024, Oversize::Reject);
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut cuts = cuts.into_iter().cycle();
        while fed < wire.len() {
            let n = cuts.next().unwrap().min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            loop {
                match d.poll(&buf).unwrap() {
                    Deframed::Frame { frame, consumed } => {
                        out.push(frame.to_vec());
                        buf.drain(..consumed);
                    }
                    Deframed::NeedMore { needed } => {
                        prop_assert!(needed > 0);
                        break;
                    }
                    Deframed::Discarded { .. } => unreachable!(),
                }
            }
        }
        prop_assert_eq!(out, frames);
    }
}

never_panics!(frame::decode_all, fitz_wire::control::decode_all);
