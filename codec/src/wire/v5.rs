//! NetFlow v5 header (24 bytes) and flow record (48 bytes), as Cisco documents them.

use zerocopy::byteorder::big_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// NetFlow v5 packet header.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct V5Header {
    pub version: U16,
    /// Number of records that follow (1..=30).
    pub count: U16,
    /// Milliseconds since the exporter booted.
    pub sys_uptime: U32,
    pub unix_secs: U32,
    pub unix_nsecs: U32,
    /// Sequence number of the first flow in this packet (counts flows).
    pub flow_sequence: U32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// Top 2 bits: sampling mode; low 14 bits: sampling interval.
    pub sampling_interval: U16,
}

/// NetFlow v5 flow record.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct V5Record {
    pub srcaddr: U32,
    pub dstaddr: U32,
    pub nexthop: U32,
    pub input: U16,
    pub output: U16,
    pub d_pkts: U32,
    pub d_octets: U32,
    /// sysUptime (ms) at the first packet of the flow.
    pub first: U32,
    /// sysUptime (ms) at the last packet of the flow.
    pub last: U32,
    pub srcport: U16,
    pub dstport: U16,
    pub pad1: u8,
    pub tcp_flags: u8,
    pub prot: u8,
    pub tos: u8,
    pub src_as: U16,
    pub dst_as: U16,
    pub src_mask: u8,
    pub dst_mask: u8,
    pub pad2: U16,
}

pub const V5_HEADER_LEN: usize = 24;
pub const V5_RECORD_LEN: usize = 48;
/// The most records a v5 packet may carry.
pub const V5_RECORDS_MAX: usize = 30;

const _: () = assert!(size_of::<V5Header>() == V5_HEADER_LEN);
const _: () = assert!(size_of::<V5Record>() == V5_RECORD_LEN);
