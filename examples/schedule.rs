//! schedule example (in progress).
fn main() {}
