//! Fixed-layout wire structures, read in place with zerocopy. All are `Unaligned` (big-endian
//! byte-order types), so they can be cast at any offset of a receive buffer.

pub mod ipfix;
pub mod v5;
pub mod v9;
