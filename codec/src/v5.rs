//! NetFlow v5: a fixed 24-byte header and up to 30 fixed 48-byte records. Decoded through one
//! static [`Plan`], so v5 records read through the same accessors as v9/IPFIX ones.

use zerocopy::FromBytes;

use crate::error::DecodeError;
use crate::record::{Plan, Slot, TimeKind};
use crate::wire::v5::{V5_HEADER_LEN, V5_RECORD_LEN, V5_RECORDS_MAX, V5Header};

/// Where each field sits in a 48-byte v5 record.
pub static V5_PLAN: Plan = Plan {
    record_len: V5_RECORD_LEN as u16,
    src_ip: Slot::new(0, 4),
    dst_ip: Slot::new(4, 4),
    next_hop: Slot::new(8, 4),
    input_if: Slot::new(12, 2),
    output_if: Slot::new(14, 2),
    in_pkts: Slot::new(16, 4),
    in_bytes: Slot::new(20, 4),
    first_switched: Slot::new(24, 4),
    first_kind: TimeKind::UptimeMs,
    last_switched: Slot::new(28, 4),
    last_kind: TimeKind::UptimeMs,
    src_port: Slot::new(32, 2),
    dst_port: Slot::new(34, 2),
    tcp_flags: Slot::new(37, 1),
    protocol: Slot::new(38, 1),
    tos: Slot::new(39, 1),
    src_as: Slot::new(40, 2),
    dst_as: Slot::new(42, 2),
    src_mask: Slot::new(44, 1),
    dst_mask: Slot::new(45, 1),
    ..Plan::EMPTY
};

/// A checked v5 datagram: the header and exactly `count` records' bytes.
#[derive(Debug)]
pub struct V5Packet<'a> {
    pub header: &'a V5Header,
    /// `count * 48` bytes of records; trailing bytes after them are ignored (NetFlow allows it).
    pub records: &'a [u8],
}

impl V5Packet<'_> {
    pub fn count(&self) -> usize {
        self.records.len() / V5_RECORD_LEN
    }

    /// Sampling interval from the header's low 14 bits (0 = unsampled or unknown).
    pub fn sampling_interval(&self) -> u32 {
        u32::from(self.header.sampling_interval.get() & 0x3fff)
    }

    /// v5 sequence numbers count flows.
    pub fn flow_sequence(&self) -> u32 {
        self.header.flow_sequence.get()
    }
}

/// Checks the header and that `count` records are present.
pub fn parse(datagram: &[u8]) -> Result<V5Packet<'_>, DecodeError> {
    let (header, rest) = V5Header::ref_from_prefix(datagram)
        .map_err(|_| DecodeError::Truncated { what: "v5 header" })?;
    if header.version.get() != 5 {
        return Err(DecodeError::UnsupportedVersion {
            version: header.version.get(),
        });
    }
    let count = header.count.get() as usize;
    if count == 0 || count > V5_RECORDS_MAX {
        return Err(DecodeError::BadLength {
            what: "v5 record count",
        });
    }
    let records = rest
        .get(..count * V5_RECORD_LEN)
        .ok_or(DecodeError::Truncated { what: "v5 records" })?;
    debug_assert_eq!(
        V5_HEADER_LEN + records.len(),
        V5_HEADER_LEN + count * V5_RECORD_LEN
    );
    Ok(V5Packet { header, records })
}
