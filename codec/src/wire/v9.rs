//! NetFlow v9 packet header (RFC 3954 section 5.1): 20 bytes.

use zerocopy::byteorder::big_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// NetFlow v9 packet header.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct V9Header {
    pub version: U16,
    /// Records (template, options and data) in the packet; informational only.
    pub count: U16,
    /// Milliseconds since the exporter booted.
    pub sys_uptime: U32,
    pub unix_secs: U32,
    /// Counts export packets (not records).
    pub sequence: U32,
    pub source_id: U32,
}

pub const V9_HEADER_LEN: usize = 20;
/// FlowSet id and length.
pub const SET_HEADER_LEN: usize = 4;

const _: () = assert!(size_of::<V9Header>() == V9_HEADER_LEN);
