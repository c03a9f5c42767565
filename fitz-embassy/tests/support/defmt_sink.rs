//! With the `defmt` feature the library logs through defmt, which needs a
//! global logger at link time; on the host the encoded frames are counted
//! and dropped (a decoder would need the ELF's `.defmt` table).

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) static BYTES: AtomicUsize = AtomicUsize::new(0);

#[defmt::global_logger]
struct Sink;

// SAFETY: the logger keeps no state besides an atomic counter, so
// nested or concurrent acquire/write/release cannot corrupt anything.
#[allow(unsafe_code)]
unsafe impl defmt::Logger for Sink {
    fn acquire() {}
    unsafe fn flush() {}
    unsafe fn release() {}
    unsafe fn write(bytes: &[u8]) {
        BYTES.fetch_add(bytes.len(), Ordering::Relaxed);
    }
}

defmt::timestamp!("{=u64}", 0);

#[defmt::panic_handler]
fn defmt_panic() -> ! {
    panic!("defmt panic")
}
