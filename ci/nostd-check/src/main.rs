//! no_std / no-alloc proof for fitz-wire and fitz-client (see Cargo.toml).
#![no_std]
#![no_main]

use core::hint::black_box;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    let frame = black_box([0u8, 0, 0, 7, 0x64, 0, 4, 0, 0, 0, 0]);
    let _ = black_box(fitz_wire::frame::decode_tcp(black_box(&frame[..]), 1 << 20));
    let _ = black_box(fitz_wire::parse(black_box(&frame[4..])));
    let put = fitz_wire::kv::Put { tx_id: 1, route: "kv://a/b/c", key: b"k", value: b"v" };
    let mut buf = [0u8; 64];
    let n = fitz_wire::frame::encode_tcp(black_box(&put), &mut buf).unwrap_or(0);
    fitz_wire::kv::decode_all(black_box(&buf[..n]));
    let mut session = fitz_client::Session::<8>::new(fitz_client::Config::default());
    let mut out = [0u8; 64];
    let _ = black_box(session.connected(0, b"", &mut out, &mut |e| {
        black_box(e);
    }));
    let _ = black_box(session.handle_frame(1, black_box(&buf[4..n]), &mut |e| {
        black_box(e);
    }));

    // The engine and the async client's request path, with a copying Buf.
    use fitz_client::Core;
    let mut engine = fitz_client::Engine::<Fixed, [u8; 256], 4, 2, 2>::new(fitz_client::Config::default(), [0; 256]);
    let _ = black_box(engine.connected(0, b""));
    let _ = black_box(engine.handle_timeout(2000));
    let cx = core::task::Context::from_waker(core::task::Waker::noop());
    let _ = black_box(engine.poll_request(&cx, &put, 100, None));
    let sub = fitz_wire::notice::Subscribe { pattern: "notice://a/b/*" };
    let _ = black_box(engine.subscribe(&sub));
    let mut spare = [0u8; 256];
    let _ = black_box(engine.take_tx(&mut spare));
    let _ = black_box(engine.handle_frame(3, &Fixed::of(&buf[4..n])));
    0
}

/// A received frame copied into fixed storage.
#[derive(Clone)]
struct Fixed {
    data: [u8; 64],
    len: usize,
}

impl Fixed {
    fn of(b: &[u8]) -> Self {
        let mut data = [0u8; 64];
        let len = b.len().min(64);
        data[..len].copy_from_slice(&b[..len]);
        Fixed { data, len }
    }
}

impl AsRef<[u8]> for Fixed {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl fitz_client::Buf for Fixed {
    fn part(&self, sub: &[u8]) -> Self {
        Fixed::of(sub)
    }
}

// The C runtime only (crt1 / __libc_start_main), never Rust's std.
#[link(name = "c")]
unsafe extern "C" {}
