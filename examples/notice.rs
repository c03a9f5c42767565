//! notice example (in progress).
fn main() {}
