//! Receive loops (being written).
