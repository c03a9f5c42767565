//! stream (in progress).
