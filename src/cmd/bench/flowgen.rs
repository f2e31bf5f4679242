//! Synthetic flows for `goflow bench`: a seeded RNG (same seed, same flow values) drawing from
//! plausible distributions: a TCP/UDP/ICMP mix, one side a well-known port and the other an
//! ephemeral one, heavy-tailed packet counts, packet sizes 40-1500 bytes, private sources,
//! public destinations, a few big AS numbers. Byte counters stay below 2^32 so NetFlow v5 carries
//! them unchanged and the summary's sums match what a collector stores.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use goflow_codec::encode::Flow;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

const WELL_KNOWN_PORTS: [u16; 12] = [80, 443, 53, 22, 25, 123, 993, 3306, 5432, 8080, 8443, 179];
const TCP_FLAGS: [u8; 8] = [0x18, 0x10, 0x1b, 0x02, 0x12, 0x11, 0x04, 0x1f];
const BIG_AS: [u32; 8] = [15_169, 13_335, 16_509, 32_934, 8075, 2906, 20_940, 714];
/// Flows end up to this long before the export time.
const LAST_AGE_MS_MAX: u64 = 2000;
/// Flows last up to this long.
const FLOW_DURATION_MS_MAX: u64 = 60_000;
/// Packets per flow: 1 .. 2^PACKETS_LOG2_MAX.
const PACKETS_LOG2_MAX: u32 = 12;

/// Random bits drawn 64 at a time: a flow needs about 200, and one `next_u64` per field would
/// cost more than encoding the flow does.
#[derive(Debug)]
struct Bits {
    rng: SmallRng,
    word: u64,
    left: u32,
}

impl Bits {
    /// `n` (1..=32) random bits.
    #[inline]
    fn take(&mut self, n: u32) -> u64 {
        if self.left < n {
            self.word = self.rng.next_u64();
            self.left = 64;
        }
        let v = self.word & ((1u64 << n) - 1);
        self.word >>= n;
        self.left -= n;
        v
    }

    /// A number in `0..range` from `n` bits (multiply-shift; the bias is below 2^-(n - log2 range)).
    #[inline]
    fn below(&mut self, n: u32, range: u64) -> u64 {
        (self.take(n) * range) >> n
    }

    #[inline]
    fn pick<T: Copy, const N: usize>(&mut self, n: u32, table: &[T; N]) -> T {
        // below() < N, so the index is in bounds (N > 0 for every table here).
        table[self.below(n, N as u64) as usize % N]
    }
}

/// Draws flows.
#[derive(Debug)]
pub struct FlowGen {
    bits: Bits,
    /// Share of IPv6 flows, in 1/10000.
    v6_per_10k: u64,
}

impl FlowGen {
    pub fn new(seed: u64, v6_share_pct: f64) -> Self {
        FlowGen {
            bits: Bits {
                rng: SmallRng::seed_from_u64(seed),
                word: 0,
                left: 0,
            },
            v6_per_10k: (v6_share_pct.clamp(0.0, 100.0) * 100.0).round() as u64,
        }
    }

    /// One flow that ended shortly before `now_unix_ms`, on an exporter booted at
    /// `boot_unix_ms`. IPv6 with the configured share when `allow_v6`.
    pub fn next_flow(&mut self, now_unix_ms: u64, boot_unix_ms: u64, allow_v6: bool) -> Flow {
        let r = &mut self.bits;
        let v6 = allow_v6 && r.below(16, 10_000) < self.v6_per_10k;
        let protocol = match r.below(8, 100) {
            0..70 => 6,
            70..95 => 17,
            _ => 1,
        };
        let well_known = r.pick(8, &WELL_KNOWN_PORTS);
        let ephemeral = 32_768 + r.below(20, 61_000 - 32_768) as u16;
        let (src_port, dst_port) = match protocol {
            // ICMP: type << 8 | code in the destination port, as Cisco exports it.
            1 => (0, [0x0800, 0x0000, 0x0303, 0x0b00][r.take(2) as usize & 3]),
            _ if r.take(1) == 1 => (ephemeral, well_known),
            _ => (well_known, ephemeral),
        };
        let packets = {
            let log = r.below(8, u64::from(PACKETS_LOG2_MAX)) as u32;
            (1u64 << log) + if log == 0 { 0 } else { r.take(log) }
        };
        let size: u64 = if r.below(8, 10) < 6 {
            40 + r.below(12, 81)
        } else {
            500 + r.below(16, 1001)
        };
        let (src_ip, dst_ip, next_hop, src_mask, dst_mask) = if v6 {
            let src = Ipv6Addr::new(
                0x2001,
                0xdb8,
                r.take(16) as u16,
                0,
                0,
                0,
                0,
                r.take(16) as u16,
            );
            let dst = Ipv6Addr::new(
                0x2a00 | r.take(8) as u16,
                r.take(16) as u16,
                r.take(16) as u16,
                0,
                0,
                0,
                0,
                r.take(16) as u16,
            );
            let nh = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1 + r.below(8, 15) as u16);
            (
                IpAddr::V6(src),
                IpAddr::V6(dst),
                IpAddr::V6(nh),
                32 + r.below(8, 33) as u8,
                24 + r.below(8, 25) as u8,
            )
        } else {
            let [a, b] = (r.take(16) as u16).to_be_bytes();
            let src = Ipv4Addr::new(10, a, b, 1 + r.below(12, 254) as u8);
            let [c, d] = (r.take(16) as u16).to_be_bytes();
            let dst = Ipv4Addr::new(1 + r.below(12, 223) as u8, c, d, 1 + r.below(12, 254) as u8);
            let nh = Ipv4Addr::new(10, 255, 0, 1 + r.below(8, 15) as u8);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                IpAddr::V4(nh),
                16 + r.below(8, 17) as u8,
                8 + r.below(8, 17) as u8,
            )
        };
        let last = now_unix_ms.saturating_sub(r.below(16, LAST_AGE_MS_MAX));
        let first = last.saturating_sub(r.below(24, FLOW_DURATION_MS_MAX));
        let tcp_flags = r.pick(8, &TCP_FLAGS);
        let src_as = if r.take(1) == 1 {
            r.pick(8, &BIG_AS)
        } else {
            64_512 + r.below(16, 1023) as u32
        };
        let mut fl = Flow {
            src_ip,
            dst_ip,
            next_hop,
            src_port,
            dst_port,
            protocol,
            tcp_flags: if protocol == 6 { tcp_flags } else { 0 },
            tos: r.pick(8, &[0, 0, 0, 0x20, 0xb8]),
            bytes: packets * size,
            packets,
            input_if: 1 + r.below(12, 63) as u32,
            output_if: 1 + r.below(12, 63) as u32,
            src_as,
            dst_as: 64_512 + r.below(16, 1023) as u32,
            src_mask,
            dst_mask,
            direction: u8::from(r.below(8, 10) < 3),
            ..Flow::default()
        };
        fl.set_times(
            boot_unix_ms,
            first.max(boot_unix_ms),
            last.max(boot_unix_ms),
        );
        fl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_flows_and_plausible_values() {
        let mut a = FlowGen::new(7, 20.0);
        let mut b = FlowGen::new(7, 20.0);
        let now = 1_700_000_000_000;
        let boot = now - 86_400_000;
        let mut v6 = 0;
        for _ in 0..10_000 {
            let fa = a.next_flow(now, boot, true);
            assert_eq!(fa, b.next_flow(now, boot, true));
            assert!(fa.packets >= 1 && fa.bytes >= 40 * fa.packets);
            assert!(fa.bytes <= 1500 * fa.packets && fa.bytes < u64::from(u32::MAX));
            assert!(fa.first_unix_ms <= fa.last_unix_ms && fa.last_unix_ms <= now);
            assert_eq!(fa.src_ip.is_ipv6(), fa.dst_ip.is_ipv6());
            v6 += usize::from(fa.src_ip.is_ipv6());
        }
        assert!((1500..2500).contains(&v6), "{v6}");
        let mut c = FlowGen::new(8, 20.0);
        assert_ne!(c.next_flow(now, boot, true), a.next_flow(now, boot, true));
        let mut none = FlowGen::new(1, 100.0);
        assert!(none.next_flow(now, boot, false).src_ip.is_ipv4());
    }
}
