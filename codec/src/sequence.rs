//! Sequence accounting per (exporter, domain), with each protocol's meaning: v5 counts flows,
//! v9 counts export packets, IPFIX counts data records. Gaps (missing units), resets and
//! out-of-order arrivals are counted, never guessed away.
//!
//! Sequence numbers are u32 and wrap; the distance from the expected number is read as a
//! signed 32-bit value. A small step back is a late (out-of-order) datagram, which also fills
//! part of a gap counted earlier; a step back of more than [`REORDER_WINDOW`] units, or a jump
//! forward of more than [`RESET_JUMP`], is the exporter restarting.

use std::net::IpAddr;

use crate::template::FxHashMap;

/// The farthest back (in units) a datagram counts as late rather than as a restart.
pub const REORDER_WINDOW: u32 = 1 << 16;
/// A forward jump larger than this (in units) is a restart, not a loss.
pub const RESET_JUMP: u32 = 1 << 24;
/// Streams one tracker follows; further ones are not tracked (bounded memory).
pub const STREAMS_MAX: usize = 1 << 16;

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
    /// Datagrams observed.
    pub datagrams: u64,
    /// Whether `expected` is known (false after a datagram whose unit count was unknown).
    pub synced: bool,
}

impl SequenceStats {
    /// Notes a datagram whose first unit is `seq`, carrying `units` units (`None` if the
    /// decoder could not count them, e.g. records of an unknown IPFIX template: the next
    /// datagram then resynchronises without counting a gap). Returns what changed, so callers
    /// keep per-exporter and per-worker sums without walking the streams.
    pub fn observe(&mut self, seq: u32, units: Option<u32>) -> SequenceDelta {
        let before = (self.missing, self.resets, self.out_of_order);
        self.observe_inner(seq, units);
        SequenceDelta {
            missing: i64::try_from(self.missing).unwrap_or(i64::MAX)
                - i64::try_from(before.0).unwrap_or(i64::MAX),
            resets: self.resets - before.1,
            out_of_order: self.out_of_order - before.2,
        }
    }

    fn observe_inner(&mut self, seq: u32, units: Option<u32>) {
        self.datagrams += 1;
        if self.synced {
            let ahead = seq.wrapping_sub(self.expected);
            if ahead == 0 {
                // In order.
            } else if ahead <= RESET_JUMP {
                self.missing += u64::from(ahead);
            } else if self.expected.wrapping_sub(seq) <= REORDER_WINDOW {
                // Late: it fills part of a gap already counted; `expected` stays.
                self.out_of_order += 1;
                self.missing = self.missing.saturating_sub(u64::from(units.unwrap_or(0)));
                return;
            } else {
                self.resets += 1;
            }
        }
        match units {
            Some(n) => {
                self.expected = seq.wrapping_add(n);
                self.synced = true;
            }
            None => self.synced = false,
        }
    }
}

/// What one datagram changed in a stream's counters (`missing` falls when a late datagram
/// fills part of a gap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceDelta {
    pub missing: i64,
    pub resets: u64,
    pub out_of_order: u64,
}

impl SequenceDelta {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: SequenceDelta) {
        self.missing += other.missing;
        self.resets += other.resets;
        self.out_of_order += other.out_of_order;
    }
}

/// Sequence state of every (exporter, domain, version) a decoder has seen.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    streams: FxHashMap<(IpAddr, u32, u16), SequenceStats>,
    /// Datagrams of streams not followed because [`STREAMS_MAX`] were already followed.
    untracked: u64,
}

impl SequenceTracker {
    /// Notes a datagram whose first unit has number `seq` and which carries `units` units.
    pub fn observe(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        version: u16,
        seq: u32,
        units: Option<u32>,
    ) -> SequenceDelta {
        let key = (exporter, domain, version);
        if let Some(s) = self.streams.get_mut(&key) {
            s.observe(seq, units)
        } else if self.streams.len() < STREAMS_MAX {
            let mut s = SequenceStats::default();
            let d = s.observe(seq, units);
            self.streams.insert(key, s);
            d
        } else {
            self.untracked += 1;
            SequenceDelta::default()
        }
    }

    /// Streams followed now.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Datagrams whose stream was not followed (the tracker was full).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Forgets every stream of the exporters for which `gone` is true. Returns how many.
    pub fn forget(&mut self, mut gone: impl FnMut(&IpAddr) -> bool) -> usize {
        let before = self.streams.len();
        self.streams.retain(|(a, _, _), _| !gone(a));
        before - self.streams.len()
    }

    /// Every stream's counters.
    pub fn streams(&self) -> impl Iterator<Item = (&(IpAddr, u32, u16), &SequenceStats)> {
        self.streams.iter()
    }

    /// One stream's counters.
    pub fn stream(&self, exporter: IpAddr, domain: u32, version: u16) -> Option<&SequenceStats> {
        self.streams.get(&(exporter, domain, version))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const E: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn in_order_stream_has_no_gaps() {
        let mut s = SequenceStats::default();
        for i in 0..10u32 {
            s.observe(i * 30, Some(30));
        }
        assert_eq!((s.missing, s.resets, s.out_of_order), (0, 0, 0));
        assert_eq!(s.expected, 300);
        assert_eq!(s.datagrams, 10);
    }

    #[test]
    fn gap_counts_missing_units() {
        // v9: one unit per packet; packets 3 and 4 lost.
        let mut s = SequenceStats::default();
        s.observe(1, Some(1));
        s.observe(2, Some(1));
        s.observe(5, Some(1));
        assert_eq!(s.missing, 2);
        assert_eq!(s.expected, 6);
    }

    #[test]
    fn late_datagram_is_out_of_order_and_fills_the_gap() {
        // IPFIX: records. 10 records at 0, 10 at 20 (10 missing), then the late 10 at 10.
        let mut s = SequenceStats::default();
        s.observe(0, Some(10));
        s.observe(20, Some(10));
        assert_eq!(s.missing, 10);
        s.observe(10, Some(10));
        assert_eq!((s.missing, s.out_of_order), (0, 1));
        assert_eq!(s.expected, 30);
    }

    #[test]
    fn wrap_is_not_a_gap() {
        let mut s = SequenceStats::default();
        s.observe(u32::MAX - 9, Some(10));
        s.observe(0, Some(10));
        assert_eq!((s.missing, s.resets), (0, 0));
        s.observe(10, Some(5));
        assert_eq!(s.expected, 15);
    }

    #[test]
    fn restart_is_a_reset_not_a_loss() {
        let mut s = SequenceStats::default();
        s.observe(5_000_000, Some(30));
        s.observe(0, Some(30));
        assert_eq!((s.missing, s.resets, s.out_of_order), (0, 1, 0));
        // A huge jump forward is a restart too.
        s.observe(3_000_000_000, Some(30));
        assert_eq!((s.missing, s.resets), (0, 2));
        assert_eq!(s.expected, 3_000_000_030);
    }

    #[test]
    fn unknown_unit_count_resyncs() {
        let mut s = SequenceStats::default();
        s.observe(0, Some(10));
        s.observe(10, None);
        s.observe(37, Some(3));
        assert_eq!(s.missing, 0);
        s.observe(41, Some(1));
        assert_eq!(s.missing, 1);
    }

    #[test]
    fn observe_reports_what_changed() {
        let mut s = SequenceStats::default();
        assert_eq!(s.observe(0, Some(10)), SequenceDelta::default());
        let d = s.observe(20, Some(10));
        assert_eq!((d.missing, d.resets, d.out_of_order), (10, 0, 0));
        let d = s.observe(10, Some(10));
        assert_eq!((d.missing, d.resets, d.out_of_order), (-10, 0, 1));
        let d = s.observe(705_032_704, Some(1));
        assert_eq!((d.missing, d.resets), (0, 1));
    }

    #[test]
    fn forget_drops_an_exporters_streams() {
        let mut t = SequenceTracker::default();
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        t.observe(E, 1, 9, 1, Some(1));
        t.observe(E, 2, 9, 1, Some(1));
        t.observe(other, 1, 9, 1, Some(1));
        assert_eq!(t.forget(|a| *a == E), 2);
        assert_eq!(t.len(), 1);
        assert!(t.stream(other, 1, 9).is_some());
    }

    #[test]
    fn tracker_keys_by_exporter_domain_version() {
        let mut t = SequenceTracker::default();
        t.observe(E, 1, 9, 1, Some(1));
        t.observe(E, 2, 9, 100, Some(1));
        t.observe(E, 1, 9, 3, Some(1));
        t.observe(E, 2, 9, 101, Some(1));
        assert_eq!(t.stream(E, 1, 9).map(|s| s.missing), Some(1));
        assert_eq!(t.stream(E, 2, 9).map(|s| s.missing), Some(0));
        assert_eq!(t.streams().count(), 2);
    }
}
