//! `io::Assembler`: frames split at any byte boundary come out whole, and
//! bad prefixes are typed errors.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use fitz_client::io::{Assembler, Copied, IoError};
use proptest::prelude::*;

type Out = Option<Result<Copied<64>, IoError<()>>>;

fn prefixed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Feeds `wire` in chunks of the given sizes; returns the frames.
fn run(wire: &[u8], cuts: &[usize]) -> Vec<Result<Vec<u8>, IoError<()>>> {
    let mut asm = Assembler::<64>::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap()).clamp(1, rest.len());
        let mut chunk = &rest[..n];
        while !chunk.is_empty() {
            let (used, done): (usize, Out) = asm.feed(chunk);
            chunk = &chunk[used..];
            match done {
                Some(Ok(f)) => out.push(Ok(f.as_ref().to_vec())),
                Some(Err(e)) => {
                    out.push(Err(e));
                    return out;
                }
                None => assert!(chunk.is_empty(), "bytes left over without a frame"),
            }
        }
        rest = &rest[n..];
    }
    out
}

proptest! {
    #[test]
    fn frames_survive_any_split(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..=64), 1..8),
                                cuts in prop::collection::vec(1usize..20, 1..8)) {
        let wire: Vec<u8> = bodies.iter().flat_map(|b| prefixed(b)).collect();
        let got = run(&wire, &cuts);
        let want: Vec<Result<Vec<u8>, IoError<()>>> = bodies.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_frame_larger_than_m_is_refused_at_its_prefix() {
    let wire = prefixed(&[7u8; 65]);
    assert_eq!(run(&wire, &[3]), vec![Err(IoError::FrameTooLarge { len: 65 })]);
}

#[test]
fn an_empty_frame_is_malformed() {
    assert_eq!(run(&[0, 0, 0, 0, 1], &[5]), vec![Err(IoError::Frame(fitz_wire::FrameError::EmptyFrame))]);
}

#[test]
fn reset_forgets_a_partial_frame() {
    let mut asm = Assembler::<64>::new();
    let (used, done): (usize, Out) = asm.feed(&[0, 0, 0, 9, 1, 2]);
    assert_eq!((used, done), (6, None));
    asm.reset();
    let (used, done): (usize, Out) = asm.feed(&prefixed(b"ok"));
    assert_eq!(used, 6);
    assert_eq!(done.unwrap().unwrap().as_ref(), b"ok");
}
