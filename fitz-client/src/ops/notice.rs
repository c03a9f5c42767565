//! notice (in progress).
