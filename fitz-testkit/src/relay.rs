//! Fault-injecting relay (placeholder).
