//! IPFIX message header (RFC 7011 section 3.1): 16 bytes.

use zerocopy::byteorder::big_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// IPFIX message header.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IpfixHeader {
    pub version: U16,
    /// Length of the whole message, header included.
    pub length: U16,
    /// Seconds since the Unix epoch.
    pub export_time: U32,
    /// Data records sent before this message in this domain, modulo 2^32.
    pub sequence: U32,
    pub observation_domain: U32,
}

pub const IPFIX_HEADER_LEN: usize = 16;

const _: () = assert!(size_of::<IpfixHeader>() == IPFIX_HEADER_LEN);
