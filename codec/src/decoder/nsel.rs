//! NSEL connection accounting, so that `SUM(in_bytes)` over stored records counts every byte of
//! a Cisco ASA / Firepower connection once.
//!
//! Cisco's NSEL guide ("Cisco ASA NetFlow Implementation Guide", flow-update events): an ASA
//! exports one record per event of a connection, keyed by NF_F_CONN_ID (148). Flow-create (1)
//! records carry no traffic; flow-update (5) records, "at timer" and one "at teardown" for the
//! last interval, carry NF_F_FWD/REV_FLOW_DELTA_BYTES (231/232) *since the previous update*; the
//! flow-teardown (2) record carries the connection's *totals*. Without flow-update export (the
//! default) the teardown is the only record with bytes; with it, the teardown repeats what the
//! updates carried, and a short connection that ends before its first update timer has only
//! its teardown. Update and teardown may arrive in either order (the guide says to correlate by
//! event time, records may come out of order).
//!
//! So per (exporter, observation domain, connection id) the decoder remembers what it already
//! handed out for the connection's four counters (bytes and packets, both directions):
//! - a record of any event but teardown and denied (create, update, alert) is a delta: stored as
//!   sent, added to what was handed out; once the teardown was seen, only what the totals leave
//!   is stored (a late "update at teardown" then stores 0);
//! - a teardown stores its totals minus what updates handed out (saturating at 0), and the
//!   connection is kept for [`NSEL_CLOSED_KEEP_SECS`] for late updates;
//! - a teardown of a connection never seen with traffic stores its totals as sent (no entry is
//!   made for connections without updates, so the default ASA export costs one lookup).
//!
//! A record whose counters change is copied with the new values written into its counter
//! fields (never longer than the sent ones: the new values are not larger), and handed out
//! after the datagram's other records. Memory is bounded: at most
//! [`DecoderConfig::max_nsel_connections`](super::DecoderConfig) entries per decoder; a full
//! table evicts the entry at the front of its ring (oldest not recently looked at), counted in
//! `nsel_connections_evicted`: such a connection's teardown then stores its full totals again.
//! Open connections silent for [`NSEL_IDLE_SECS`] are forgotten (ASA's default TCP idle timeout
//! is one hour).

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::UnixMicros;
use crate::record::{PacketContext, Plan, Slot, read_uint};
use crate::sampling::Sampling;
use crate::template::FxHashMap;

/// Default bound on the NSEL connections one decoder remembers (about 100 bytes each).
pub const NSEL_CONNECTIONS: usize = 262_144;
/// Open connections without an event for this long are forgotten.
pub const NSEL_IDLE_SECS: u64 = 7200;
/// A torn-down connection is remembered this long, for an "update at teardown" that arrives
/// after its teardown.
pub const NSEL_CLOSED_KEEP_SECS: u64 = 120;

/// firewallEvent / NF_F_FW_EVENT values.
const EVENT_DELETED: u64 = 2;
const EVENT_DENIED: u64 = 3;

/// Entries examined (aged or moved to the back of the ring) per new entry.
const EXPIRE_PER_INSERT: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    exporter: IpAddr,
    domain: u32,
    id: u64,
}

/// In bytes, in packets, out bytes, out packets.
type Counters = [Option<u64>; 4];

#[derive(Clone, Copy, Debug)]
struct Conn {
    /// What records of this connection handed out so far, per counter.
    reported: [u64; 4],
    /// The teardown's totals, once seen.
    total: Option<[u64; 4]>,
    seen_us: UnixMicros,
    /// Matches this entry's place in the ring.
    seq: u64,
}

/// A record whose counters were rewritten: its copy, handed out after the datagram's records.
#[derive(Debug)]
pub(super) struct Rewritten {
    pub(super) ctx: PacketContext,
    pub(super) plan: Plan,
    pub(super) sampling: Sampling,
    pub(super) bytes: Vec<u8>,
}

/// The connection table of one decoder.
#[derive(Debug)]
pub(super) struct Nsel {
    map: FxHashMap<ConnKey, Conn>,
    /// Every entry once, oldest-looked-at first.
    ring: VecDeque<(ConnKey, u64)>,
    next_seq: u64,
    max: usize,
    idle_us: i64,
    closed_us: i64,
    /// Records rewritten in the current datagram.
    pub(super) rewritten: Vec<Rewritten>,
    pub(super) adjusted: u64,
    pub(super) evicted: u64,
    pub(super) expired: u64,
}

impl Nsel {
    pub(super) fn new(max: usize) -> Self {
        Nsel {
            map: FxHashMap::default(),
            ring: VecDeque::new(),
            next_seq: 0,
            max,
            idle_us: secs_us(NSEL_IDLE_SECS),
            closed_us: secs_us(NSEL_CLOSED_KEEP_SECS),
            rewritten: Vec::new(),
            adjusted: 0,
            evicted: 0,
            expired: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Accounts one record of a template with a connection id and an event. Returns true when
    /// its counters change: the rewritten copy is then queued in `rewritten` and the caller
    /// must not hand out the original.
    pub(super) fn account(
        &mut self,
        rec: &[u8],
        plan: &Plan,
        ctx: &PacketContext,
        sampling: Sampling,
    ) -> bool {
        let (Some(event), Some(id)) = (
            read_uint(rec, plan.fw_event),
            read_uint(rec, plan.connection_id),
        ) else {
            return false;
        };
        let slots = counter_slots(plan);
        let sent: Counters = slots.map(|s| read_uint(rec, s));
        let key = ConnKey {
            exporter: ctx.exporter,
            domain: ctx.observation_domain,
            id,
        };
        let Some(stored) = self.stored(key, event, sent, ctx.received_us) else {
            return false;
        };
        let mut bytes = rec.to_vec();
        for (slot, v) in slots.iter().zip(stored) {
            if let Some(v) = v {
                write_uint(&mut bytes, *slot, v);
            }
        }
        self.adjusted += 1;
        self.rewritten.push(Rewritten {
            ctx: *ctx,
            plan: *plan,
            sampling,
            bytes,
        });
        true
    }

    /// What to store for a record of `event` that sent `sent`; `None` when that is `sent`.
    fn stored(
        &mut self,
        key: ConnKey,
        event: u64,
        sent: Counters,
        now: UnixMicros,
    ) -> Option<Counters> {
        if event == EVENT_DENIED {
            return None;
        }
        let Some(c) = self.map.get_mut(&key) else {
            // Nothing handed out yet: a teardown's totals are the connection's bytes, and a
            // delta without traffic needs no entry.
            if event != EVENT_DELETED && sent.iter().any(|v| v.is_some_and(|v| v > 0)) {
                self.insert(key, sent, now);
            }
            return None;
        };
        c.seen_us = c.seen_us.max(now);
        let mut stored = sent;
        if event == EVENT_DELETED {
            let mut total = c.total.unwrap_or([0; 4]);
            for i in 0..4 {
                if let Some(v) = sent[i] {
                    total[i] = v;
                    let left = v.saturating_sub(c.reported[i]);
                    stored[i] = Some(left);
                    c.reported[i] = c.reported[i].saturating_add(left);
                }
            }
            c.total = Some(total);
        } else {
            for i in 0..4 {
                if let Some(v) = sent[i] {
                    let v = match c.total {
                        Some(t) => v.min(t[i].saturating_sub(c.reported[i])),
                        None => v,
                    };
                    stored[i] = Some(v);
                    c.reported[i] = c.reported[i].saturating_add(v);
                }
            }
        }
        (stored != sent).then_some(stored)
    }

    fn insert(&mut self, key: ConnKey, sent: Counters, now: UnixMicros) {
        if self.max == 0 {
            return;
        }
        self.expire(now, EXPIRE_PER_INSERT);
        while self.map.len() >= self.max {
            let Some((k, seq)) = self.ring.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|c| c.seq == seq) {
                self.map.remove(&k);
                self.evicted += 1;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(
            key,
            Conn {
                reported: sent.map(|v| v.unwrap_or(0)),
                total: None,
                seen_us: now,
                seq,
            },
        );
        self.ring.push_back((key, seq));
    }

    /// Looks at up to `budget` entries at the front of the ring: forgets those past their age
    /// (idle open connections, torn-down ones kept long enough), moves the others to the back.
    pub(super) fn expire(&mut self, now: UnixMicros, budget: usize) {
        for _ in 0..budget.min(self.ring.len()) {
            let Some((k, seq)) = self.ring.pop_front() else {
                return;
            };
            let Some(c) = self.map.get_mut(&k).filter(|c| c.seq == seq) else {
                continue;
            };
            let limit = if c.total.is_some() {
                self.closed_us
            } else {
                self.idle_us
            };
            if now.saturating_sub(c.seen_us) > limit {
                self.map.remove(&k);
                self.expired += 1;
            } else {
                c.seq = self.next_seq;
                self.ring.push_back((k, self.next_seq));
                self.next_seq += 1;
            }
        }
    }
}

fn secs_us(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

/// The slots of the four counters, in [`Counters`] order.
fn counter_slots(plan: &Plan) -> [Slot; 4] {
    [plan.in_bytes, plan.in_pkts, plan.out_bytes, plan.out_pkts]
}

/// Writes `v` big-endian into `slot` of `rec` (the slot's width; `v` fits, as it is not larger
/// than the value the slot held).
fn write_uint(rec: &mut [u8], slot: Slot, v: u64) {
    let start = usize::from(slot.offset);
    let Some(field) = rec.get_mut(start..start + usize::from(slot.len)) else {
        return;
    };
    let be = v.to_be_bytes();
    let n = field.len().min(8);
    let (high, low) = field.split_at_mut(field.len() - n);
    high.fill(0);
    low.copy_from_slice(&be[8 - n..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const E: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    fn key(id: u64) -> ConnKey {
        ConnKey {
            exporter: E,
            domain: 0,
            id,
        }
    }

    fn c(b: u64) -> Counters {
        [Some(b), Some(b / 100), None, None]
    }

    #[test]
    fn write_uint_keeps_the_width() {
        let mut b = [0xffu8; 6];
        write_uint(&mut b, Slot::new(1, 4), 0x0102);
        assert_eq!(b, [0xff, 0, 0, 1, 2, 0xff]);
        let mut b = [0xffu8; 10];
        write_uint(&mut b, Slot::new(0, 10), 7);
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn table_is_bounded_and_counts_evictions() {
        let mut n = Nsel::new(3);
        for id in 0..10 {
            assert_eq!(n.stored(key(id), 5, c(1000), 0), None);
        }
        assert_eq!(n.len(), 3);
        assert_eq!(n.evicted, 7);
        // An evicted connection's teardown stores its totals as sent (None); a remembered
        // one stores what is left.
        let got: Vec<_> = (0..10).map(|id| n.stored(key(id), 2, c(5000), 1)).collect();
        assert_eq!(got.iter().filter(|g| g.is_none()).count(), 7);
        assert_eq!(got.iter().filter(|g| **g == Some(c(4000))).count(), 3);
    }

    #[test]
    fn idle_and_closed_connections_expire() {
        let mut n = Nsel::new(100);
        let s = 1_000_000i64;
        assert_eq!(n.stored(key(1), 5, c(100), 0), None);
        assert_eq!(n.stored(key(2), 5, c(100), 0), None);
        assert_eq!(n.stored(key(2), 2, c(300), s), Some(c(200)));
        // Past the closed keep time, not the idle time: only the torn-down one goes.
        n.expire((NSEL_CLOSED_KEEP_SECS as i64 + 2) * s, 10);
        assert_eq!((n.len(), n.expired), (1, 1));
        n.expire((NSEL_IDLE_SECS as i64 + 2) * s, 10);
        assert_eq!((n.len(), n.expired), (0, 2));
    }
}
