//! Benchmarks of the Fitz Rust client (see PERF.md).
