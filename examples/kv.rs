//! kv example (in progress).
fn main() {}
