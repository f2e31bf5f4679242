//! Per-batch decode and encode (being written).
