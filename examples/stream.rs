//! stream example (in progress).
fn main() {}
