//! Ops API (being written).
