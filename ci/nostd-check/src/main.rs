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
    0
}

// The C runtime only (crt1 / __libc_start_main), never Rust's std.
#[link(name = "c")]
unsafe extern "C" {}
