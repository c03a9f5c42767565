//! rpc example (in progress).
fn main() {}
