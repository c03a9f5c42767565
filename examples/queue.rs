//! queue example (in progress).
fn main() {}
