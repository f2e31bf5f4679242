//! `FlowRecord<'a>`: typed accessors over one flow record's bytes, read through a compiled
//! [`Plan`]. Nothing is copied out of the datagram until an accessor is called, and no accessor
//! can panic: every read goes through a bounds-checked slice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::UnixMicros;
use crate::sampling::Sampling;

/// Where one field's bytes are inside a record. `len == 0` means the template lacks the field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub offset: u16,
    pub len: u16,
}

impl Slot {
    pub const ABSENT: Slot = Slot { offset: 0, len: 0 };

    pub const fn new(offset: u16, len: u16) -> Slot {
        Slot { offset, len }
    }

    pub const fn is_present(&self) -> bool {
        self.len != 0
    }
}

/// How a time field is encoded on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeKind {
    #[default]
    Absent,
    /// sysUpTime milliseconds (v5 first/last, v9/IPFIX 21/22): relative to the header's
    /// sysUpTime (v5/v9) or to systemInitTimeMilliseconds (IPFIX 160).
    UptimeMs,
    /// dateTimeSeconds (IPFIX 150/151).
    UnixSecs,
    /// dateTimeMilliseconds (IPFIX 152/153).
    UnixMs,
    /// dateTimeMicroseconds, NTP format (IPFIX 154/155).
    NtpMicros,
    /// dateTimeNanoseconds, NTP format (IPFIX 156/157).
    NtpNanos,
    /// flowStart/EndDeltaMicroseconds (IPFIX 158/159): microseconds before the export time.
    DeltaMicros,
}

/// A compiled template: for every field goflow stores, where it is in a record.
/// `Copy` and free of Drop, so a batch can keep copies in a bump arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bytes of one record (fixed-length templates); records are this far apart.
    pub record_len: u16,
    pub src_ip: Slot,
    pub dst_ip: Slot,
    pub next_hop: Slot,
    pub src_port: Slot,
    pub dst_port: Slot,
    pub protocol: Slot,
    pub in_bytes: Slot,
    pub in_pkts: Slot,
    pub tcp_flags: Slot,
    pub tos: Slot,
    pub input_if: Slot,
    pub output_if: Slot,
    pub src_as: Slot,
    pub dst_as: Slot,
    pub src_mask: Slot,
    pub dst_mask: Slot,
    pub direction: Slot,
    pub ip_version: Slot,
    pub first_switched: Slot,
    pub first_kind: TimeKind,
    pub last_switched: Slot,
    pub last_kind: TimeKind,
    /// systemInitTimeMilliseconds (160) carried in the data record itself.
    pub system_init: Slot,
    /// samplerId / selectorId (48 / 302): the key into the exporter's sampler table.
    pub sampler_id: Slot,
    /// samplingInterval / samplerRandomInterval (34 / 50) inside the data record.
    pub sampling_interval: Slot,
}

impl Plan {
    /// A plan in which every field is absent.
    pub const EMPTY: Plan = Plan {
        record_len: 0,
        src_ip: Slot::ABSENT,
        dst_ip: Slot::ABSENT,
        next_hop: Slot::ABSENT,
        src_port: Slot::ABSENT,
        dst_port: Slot::ABSENT,
        protocol: Slot::ABSENT,
        in_bytes: Slot::ABSENT,
        in_pkts: Slot::ABSENT,
        tcp_flags: Slot::ABSENT,
        tos: Slot::ABSENT,
        input_if: Slot::ABSENT,
        output_if: Slot::ABSENT,
        src_as: Slot::ABSENT,
        dst_as: Slot::ABSENT,
        src_mask: Slot::ABSENT,
        dst_mask: Slot::ABSENT,
        direction: Slot::ABSENT,
        ip_version: Slot::ABSENT,
        first_switched: Slot::ABSENT,
        first_kind: TimeKind::Absent,
        last_switched: Slot::ABSENT,
        last_kind: TimeKind::Absent,
        system_init: Slot::ABSENT,
        sampler_id: Slot::ABSENT,
        sampling_interval: Slot::ABSENT,
    };
}

/// Facts from the datagram header that every record of the datagram shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketContext {
    /// The exporter's address (the datagram's source address).
    pub exporter: IpAddr,
    /// v9 source id, IPFIX observation domain id, v5 `engine_type << 8 | engine_id`.
    pub observation_domain: u32,
    /// 5, 9 or 10.
    pub version: u16,
    /// The header's export time (v5 with its nanoseconds; v9/IPFIX whole seconds).
    pub export_time_us: UnixMicros,
    /// The header's sysUpTime in milliseconds (v5/v9; 0 for IPFIX).
    pub sys_uptime_ms: u32,
    /// When goflow received the datagram.
    pub received_us: UnixMicros,
    /// systemInitTimeMilliseconds learned from options data (IPFIX), as Unix milliseconds.
    pub system_init_ms: Option<u64>,
}

/// One flow record: its bytes, the plan that says where each field is, and its datagram's
/// context. `Copy`, three pointers and a sampling rate.
#[derive(Clone, Copy, Debug)]
pub struct FlowRecord<'a> {
    bytes: &'a [u8],
    plan: &'a Plan,
    ctx: &'a PacketContext,
    sampling: Sampling,
}

impl<'a> FlowRecord<'a> {
    /// A view over `bytes` read through `plan`. Slots beyond `bytes` read as absent.
    pub fn new(
        bytes: &'a [u8],
        plan: &'a Plan,
        ctx: &'a PacketContext,
        sampling: Sampling,
    ) -> Self {
        FlowRecord {
            bytes,
            plan,
            ctx,
            sampling,
        }
    }

    /// The record's raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn plan(&self) -> &'a Plan {
        self.plan
    }

    pub fn context(&self) -> &'a PacketContext {
        self.ctx
    }

    #[inline]
    fn field(&self, slot: Slot) -> Option<&'a [u8]> {
        if slot.len == 0 {
            return None;
        }
        let start = slot.offset as usize;
        self.bytes.get(start..start + slot.len as usize)
    }

    /// An unsigned integer of 1..=8 bytes (IPFIX reduced-size encoding). Longer fields keep
    /// their low 8 bytes.
    #[inline]
    fn uint(&self, slot: Slot) -> Option<u64> {
        self.field(slot).map(be_uint)
    }

    #[inline]
    fn addr(&self, slot: Slot) -> Option<IpAddr> {
        let b = self.field(slot)?;
        if let Ok(v4) = <[u8; 4]>::try_from(b) {
            Some(IpAddr::V4(Ipv4Addr::from(v4)))
        } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
            Some(IpAddr::V6(Ipv6Addr::from(v6)))
        } else {
            None
        }
    }

    /// The raw address bytes (4 or 16), for encoders that copy them straight to the wire.
    #[inline]
    pub fn src_ip_bytes(&self) -> Option<&'a [u8]> {
        self.field(self.plan.src_ip)
            .filter(|b| b.len() == 4 || b.len() == 16)
    }

    #[inline]
    pub fn dst_ip_bytes(&self) -> Option<&'a [u8]> {
        self.field(self.plan.dst_ip)
            .filter(|b| b.len() == 4 || b.len() == 16)
    }

    pub fn time_received(&self) -> UnixMicros {
        self.ctx.received_us
    }
    pub fn exporter(&self) -> IpAddr {
        self.ctx.exporter
    }
    pub fn observation_domain(&self) -> u32 {
        self.ctx.observation_domain
    }
    /// 5, 9 or 10.
    pub fn netflow_version(&self) -> u16 {
        self.ctx.version
    }
    /// Sampling rate (1 in N; 0 = unknown).
    pub fn sampling_rate(&self) -> u32 {
        self.sampling.rate
    }
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }
    pub fn src_ip(&self) -> Option<IpAddr> {
        self.addr(self.plan.src_ip)
    }
    pub fn dst_ip(&self) -> Option<IpAddr> {
        self.addr(self.plan.dst_ip)
    }
    pub fn next_hop(&self) -> Option<IpAddr> {
        self.addr(self.plan.next_hop)
    }
    pub fn src_port(&self) -> Option<u16> {
        self.uint(self.plan.src_port).map(|v| v as u16)
    }
    pub fn dst_port(&self) -> Option<u16> {
        self.uint(self.plan.dst_port).map(|v| v as u16)
    }
    pub fn protocol(&self) -> Option<u8> {
        self.uint(self.plan.protocol).map(|v| v as u8)
    }
    pub fn in_bytes(&self) -> Option<u64> {
        self.uint(self.plan.in_bytes)
    }
    pub fn in_pkts(&self) -> Option<u64> {
        self.uint(self.plan.in_pkts)
    }
    /// TCP flags (IPFIX tcpControlBits is 16 bits wide; v5/v9 use the low 8).
    pub fn tcp_flags(&self) -> Option<u16> {
        self.uint(self.plan.tcp_flags).map(|v| v as u16)
    }
    pub fn tos(&self) -> Option<u8> {
        self.uint(self.plan.tos).map(|v| v as u8)
    }
    pub fn input_if(&self) -> Option<u32> {
        self.uint(self.plan.input_if).map(|v| v as u32)
    }
    pub fn output_if(&self) -> Option<u32> {
        self.uint(self.plan.output_if).map(|v| v as u32)
    }
    pub fn src_as(&self) -> Option<u32> {
        self.uint(self.plan.src_as).map(|v| v as u32)
    }
    pub fn dst_as(&self) -> Option<u32> {
        self.uint(self.plan.dst_as).map(|v| v as u32)
    }
    pub fn src_mask(&self) -> Option<u8> {
        self.uint(self.plan.src_mask).map(|v| v as u8)
    }
    pub fn dst_mask(&self) -> Option<u8> {
        self.uint(self.plan.dst_mask).map(|v| v as u8)
    }
    /// flowDirection (61): 0 ingress, 1 egress.
    pub fn direction(&self) -> Option<u8> {
        self.uint(self.plan.direction).map(|v| v as u8)
    }
    /// IP version: the ipVersion field (60) when present, else from the source address's family.
    pub fn ip_version(&self) -> Option<u8> {
        if let Some(v) = self.uint(self.plan.ip_version) {
            return Some(v as u8);
        }
        match self.src_ip_bytes().or_else(|| self.dst_ip_bytes())?.len() {
            4 => Some(4),
            _ => Some(6),
        }
    }
    /// Start of the flow as an absolute time; falls back to the export time.
    pub fn first_switched(&self) -> UnixMicros {
        self.time(self.plan.first_switched, self.plan.first_kind)
    }
    /// End of the flow as an absolute time; falls back to the export time.
    pub fn last_switched(&self) -> UnixMicros {
        self.time(self.plan.last_switched, self.plan.last_kind)
    }

    fn time(&self, slot: Slot, kind: TimeKind) -> UnixMicros {
        let export = self.ctx.export_time_us;
        let Some(raw) = self.uint(slot) else {
            return export;
        };
        match kind {
            TimeKind::Absent => export,
            TimeKind::UptimeMs => {
                let system_init = self
                    .uint(self.plan.system_init)
                    .or(self.ctx.system_init_ms)
                    .filter(|_| self.ctx.version == 10);
                match system_init {
                    // IPFIX 21/22: milliseconds since systemInitTimeMilliseconds.
                    Some(init_ms) => {
                        ((init_ms as i64).wrapping_add(raw as i64)).saturating_mul(1000)
                    }
                    // v5/v9: the header's sysUpTime and export time anchor the boot. Wrapping
                    // u32 arithmetic read as i32, so a time a few ms after sysUpTime (or across
                    // the 49.7-day uptime wrap) stays a few ms away rather than 49 days.
                    None => {
                        let behind_ms = self.ctx.sys_uptime_ms.wrapping_sub(raw as u32) as i32;
                        export - i64::from(behind_ms) * 1000
                    }
                }
            }
            TimeKind::UnixSecs => (raw as i64).saturating_mul(1_000_000),
            TimeKind::UnixMs => (raw as i64).saturating_mul(1000),
            TimeKind::NtpMicros | TimeKind::NtpNanos => ntp_to_unix_us(raw),
            TimeKind::DeltaMicros => export - (raw as i64),
        }
    }
}

/// Seconds between the NTP epoch (1900-01-01) and the Unix epoch.
const NTP_UNIX_OFFSET_SECS: i64 = 2_208_988_800;

/// An NTP timestamp (32-bit seconds since 1900, 32-bit fraction) as Unix microseconds.
fn ntp_to_unix_us(raw: u64) -> UnixMicros {
    let secs = (raw >> 32) as i64 - NTP_UNIX_OFFSET_SECS;
    let frac_us = ((raw & 0xffff_ffff) * 1_000_000) >> 32;
    secs * 1_000_000 + frac_us as i64
}

/// Big-endian unsigned integer of any length; bytes beyond the low 8 are ignored.
#[inline]
pub(crate) fn be_uint(b: &[u8]) -> u64 {
    let tail = &b[b.len().saturating_sub(8)..];
    tail.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(version: u16, export_s: i64, uptime: u32) -> PacketContext {
        PacketContext {
            exporter: IpAddr::V4(Ipv4Addr::LOCALHOST),
            observation_domain: 0,
            version,
            export_time_us: export_s * 1_000_000,
            sys_uptime_ms: uptime,
            received_us: 0,
            system_init_ms: None,
        }
    }

    #[test]
    fn uptime_slightly_after_header_stays_close() {
        // LAST_SWITCHED 5 ms after the header's sysUpTime: 5 ms after export, not 49 days.
        let plan = Plan {
            last_switched: Slot::new(0, 4),
            last_kind: TimeKind::UptimeMs,
            ..Plan::default()
        };
        let c = ctx(9, 1_700_000_000, 1000);
        let bytes = 1005u32.to_be_bytes();
        let r = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        assert_eq!(r.last_switched(), 1_700_000_000_000_000 + 5_000);
    }

    #[test]
    fn uptime_across_wrap() {
        // sysUpTime wrapped to 100 ms; the flow started 200 ms before, i.e. at u32::MAX - 99.
        let plan = Plan {
            first_switched: Slot::new(0, 4),
            first_kind: TimeKind::UptimeMs,
            ..Plan::default()
        };
        let c = ctx(5, 1_700_000_000, 100);
        let bytes = (u32::MAX - 99).to_be_bytes();
        let r = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        assert_eq!(r.first_switched(), 1_700_000_000_000_000 - 200_000);
    }

    #[test]
    fn ntp_micros() {
        // 2023-11-14T22:13:20Z + 0.5 s.
        let secs = (1_700_000_000i64 + NTP_UNIX_OFFSET_SECS) as u64;
        assert_eq!(
            ntp_to_unix_us((secs << 32) | 0x8000_0000),
            1_700_000_000_500_000
        );
    }

    #[test]
    fn short_bytes_read_as_absent() {
        let plan = Plan {
            in_bytes: Slot::new(2, 8),
            ..Plan::default()
        };
        let c = ctx(9, 0, 0);
        let r = FlowRecord::new(&[0u8; 6], &plan, &c, Sampling::default());
        assert_eq!(r.in_bytes(), None);
    }

    #[test]
    fn reduced_size_counters() {
        assert_eq!(be_uint(&[0x01, 0x02]), 0x0102);
        assert_eq!(be_uint(&[0xff; 8]), u64::MAX);
        assert_eq!(be_uint(&[0x7f, 0, 0, 0, 0, 0, 0, 0, 1]), 1);
    }
}
