//! lease example (in progress).
fn main() {}
