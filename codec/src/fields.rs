//! The information elements goflow understands: their ids (IANA IPFIX registry, which NetFlow v9
//! shares for ids below 128 and for the ones listed here), which [`Plan`] field each one fills,
//! which lengths the accessor accepts, and which one wins when a template carries several
//! candidates for one column (e.g. octetDeltaCount 1 before octetTotalCount 85 before OUT_BYTES
//! 23). Every other element, and every enterprise-specific one, is skipped by its length.

use crate::record::{Plan, Slot, TimeKind};

pub const IN_BYTES: u16 = 1;
pub const IN_PKTS: u16 = 2;
pub const PROTOCOL: u16 = 4;
pub const TOS: u16 = 5;
pub const TCP_FLAGS: u16 = 6;
pub const L4_SRC_PORT: u16 = 7;
pub const IPV4_SRC_ADDR: u16 = 8;
pub const SRC_MASK: u16 = 9;
pub const INPUT_SNMP: u16 = 10;
pub const L4_DST_PORT: u16 = 11;
pub const IPV4_DST_ADDR: u16 = 12;
pub const DST_MASK: u16 = 13;
pub const OUTPUT_SNMP: u16 = 14;
pub const IPV4_NEXT_HOP: u16 = 15;
pub const SRC_AS: u16 = 16;
pub const DST_AS: u16 = 17;
pub const BGP_IPV4_NEXT_HOP: u16 = 18;
pub const LAST_SWITCHED: u16 = 21;
pub const FIRST_SWITCHED: u16 = 22;
pub const OUT_BYTES: u16 = 23;
pub const OUT_PKTS: u16 = 24;
pub const IPV6_SRC_ADDR: u16 = 27;
pub const IPV6_DST_ADDR: u16 = 28;
pub const IPV6_SRC_MASK: u16 = 29;
pub const IPV6_DST_MASK: u16 = 30;
pub const SAMPLING_INTERVAL: u16 = 34;
pub const SAMPLER_ID: u16 = 48;
pub const SAMPLER_RANDOM_INTERVAL: u16 = 50;
pub const IP_VERSION: u16 = 60;
pub const DIRECTION: u16 = 61;
pub const IPV6_NEXT_HOP: u16 = 62;
pub const OCTET_TOTAL_COUNT: u16 = 85;
pub const PACKET_TOTAL_COUNT: u16 = 86;
pub const FLOW_START_SECONDS: u16 = 150;
pub const FLOW_END_SECONDS: u16 = 151;
pub const FLOW_START_MILLISECONDS: u16 = 152;
pub const FLOW_END_MILLISECONDS: u16 = 153;
pub const FLOW_START_MICROSECONDS: u16 = 154;
pub const FLOW_END_MICROSECONDS: u16 = 155;
pub const FLOW_START_NANOSECONDS: u16 = 156;
pub const FLOW_END_NANOSECONDS: u16 = 157;
pub const FLOW_START_DELTA_MICROSECONDS: u16 = 158;
pub const FLOW_END_DELTA_MICROSECONDS: u16 = 159;
pub const SYSTEM_INIT_TIME_MILLISECONDS: u16 = 160;
pub const INGRESS_PHYSICAL_INTERFACE: u16 = 252;
pub const EGRESS_PHYSICAL_INTERFACE: u16 = 253;
pub const SELECTOR_ID: u16 = 302;
pub const SAMPLING_PACKET_INTERVAL: u16 = 305;
pub const SAMPLING_PACKET_SPACE: u16 = 306;

/// IPFIX field length meaning "variable length, prefixed on the wire".
pub const VARIABLE_LENGTH: u16 = 0xffff;

/// The [`Plan`] field an element fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    SrcIp,
    DstIp,
    NextHop,
    SrcPort,
    DstPort,
    Protocol,
    InBytes,
    InPkts,
    TcpFlags,
    Tos,
    InputIf,
    OutputIf,
    SrcAs,
    DstAs,
    SrcMask,
    DstMask,
    Direction,
    IpVersion,
    First,
    Last,
    SystemInit,
    SamplerId,
    SamplingInterval,
}

/// How many [`Target`]s there are.
pub const TARGETS: usize = Target::SamplingInterval as usize + 1;

/// Which lengths an accessor accepts; any other length makes the element absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// An IPv4 address: exactly 4 bytes.
    V4,
    /// An IPv6 address: exactly 16 bytes.
    V6,
    /// An unsigned integer of 1..=8 bytes (reduced-size encoding).
    Uint,
    /// Exactly 8 bytes (NTP timestamps, dateTimeMilliseconds).
    Eight,
}

impl Width {
    #[inline]
    pub fn accepts(self, len: u16) -> bool {
        match self {
            Width::V4 => len == 4,
            Width::V6 => len == 16,
            Width::Uint => (1..=8).contains(&len),
            Width::Eight => len == 8,
        }
    }
}

/// What goflow does with one element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub target: Target,
    /// Lower wins when a template carries several elements for one target; among equal ranks
    /// the first in the template wins.
    pub rank: u8,
    pub width: Width,
    /// For time targets, how to read the value.
    pub time: TimeKind,
}

const fn m(target: Target, rank: u8, width: Width) -> Option<Mapping> {
    Some(Mapping {
        target,
        rank,
        width,
        time: TimeKind::Absent,
    })
}

const fn t(target: Target, rank: u8, width: Width, time: TimeKind) -> Option<Mapping> {
    Some(Mapping {
        target,
        rank,
        width,
        time,
    })
}

/// The mapping of a non-enterprise element id, or `None` if goflow does not store it.
#[inline]
pub fn lookup(ie: u16) -> Option<Mapping> {
    use Target as T;
    use Width as W;
    match ie {
        IPV4_SRC_ADDR => m(T::SrcIp, 0, W::V4),
        IPV6_SRC_ADDR => m(T::SrcIp, 0, W::V6),
        IPV4_DST_ADDR => m(T::DstIp, 0, W::V4),
        IPV6_DST_ADDR => m(T::DstIp, 0, W::V6),
        IPV4_NEXT_HOP => m(T::NextHop, 0, W::V4),
        IPV6_NEXT_HOP => m(T::NextHop, 0, W::V6),
        BGP_IPV4_NEXT_HOP => m(T::NextHop, 1, W::V4),
        L4_SRC_PORT => m(T::SrcPort, 0, W::Uint),
        L4_DST_PORT => m(T::DstPort, 0, W::Uint),
        PROTOCOL => m(T::Protocol, 0, W::Uint),
        IN_BYTES => m(T::InBytes, 0, W::Uint),
        OCTET_TOTAL_COUNT => m(T::InBytes, 1, W::Uint),
        OUT_BYTES => m(T::InBytes, 2, W::Uint),
        IN_PKTS => m(T::InPkts, 0, W::Uint),
        PACKET_TOTAL_COUNT => m(T::InPkts, 1, W::Uint),
        OUT_PKTS => m(T::InPkts, 2, W::Uint),
        TCP_FLAGS => m(T::TcpFlags, 0, W::Uint),
        TOS => m(T::Tos, 0, W::Uint),
        INPUT_SNMP => m(T::InputIf, 0, W::Uint),
        INGRESS_PHYSICAL_INTERFACE => m(T::InputIf, 1, W::Uint),
        OUTPUT_SNMP => m(T::OutputIf, 0, W::Uint),
        EGRESS_PHYSICAL_INTERFACE => m(T::OutputIf, 1, W::Uint),
        SRC_AS => m(T::SrcAs, 0, W::Uint),
        DST_AS => m(T::DstAs, 0, W::Uint),
        SRC_MASK | IPV6_SRC_MASK => m(T::SrcMask, 0, W::Uint),
        DST_MASK | IPV6_DST_MASK => m(T::DstMask, 0, W::Uint),
        DIRECTION => m(T::Direction, 0, W::Uint),
        IP_VERSION => m(T::IpVersion, 0, W::Uint),
        // Times: the most precise absolute form wins, then sysUpTime, then deltas.
        FLOW_START_NANOSECONDS => t(T::First, 0, W::Eight, TimeKind::NtpNanos),
        FLOW_END_NANOSECONDS => t(T::Last, 0, W::Eight, TimeKind::NtpNanos),
        FLOW_START_MICROSECONDS => t(T::First, 0, W::Eight, TimeKind::NtpMicros),
        FLOW_END_MICROSECONDS => t(T::Last, 0, W::Eight, TimeKind::NtpMicros),
        FLOW_START_MILLISECONDS => t(T::First, 0, W::Uint, TimeKind::UnixMs),
        FLOW_END_MILLISECONDS => t(T::Last, 0, W::Uint, TimeKind::UnixMs),
        FLOW_START_SECONDS => t(T::First, 1, W::Uint, TimeKind::UnixSecs),
        FLOW_END_SECONDS => t(T::Last, 1, W::Uint, TimeKind::UnixSecs),
        FIRST_SWITCHED => t(T::First, 2, W::Uint, TimeKind::UptimeMs),
        LAST_SWITCHED => t(T::Last, 2, W::Uint, TimeKind::UptimeMs),
        FLOW_START_DELTA_MICROSECONDS => t(T::First, 3, W::Uint, TimeKind::DeltaMicros),
        FLOW_END_DELTA_MICROSECONDS => t(T::Last, 3, W::Uint, TimeKind::DeltaMicros),
        SYSTEM_INIT_TIME_MILLISECONDS => m(T::SystemInit, 0, W::Uint),
        SAMPLER_ID => m(T::SamplerId, 0, W::Uint),
        SELECTOR_ID => m(T::SamplerId, 1, W::Uint),
        SAMPLING_INTERVAL => m(T::SamplingInterval, 0, W::Uint),
        SAMPLER_RANDOM_INTERVAL => m(T::SamplingInterval, 1, W::Uint),
        _ => None,
    }
}

/// Builds a [`Plan`] field by field. `Copy` and on the stack: the variable-length walk builds
/// one per record without allocating.
#[derive(Clone, Copy, Debug)]
pub struct PlanBuilder {
    plan: Plan,
    rank: [u8; TARGETS],
}

impl Default for PlanBuilder {
    fn default() -> Self {
        PlanBuilder {
            plan: Plan::EMPTY,
            rank: [u8::MAX; TARGETS],
        }
    }
}

impl PlanBuilder {
    /// Notes that element `ie` (enterprise `enterprise`, 0 = IANA) sits at `offset..offset+len`.
    #[inline]
    pub fn field(&mut self, ie: u16, enterprise: u32, offset: u16, len: u16) {
        if enterprise != 0 {
            return;
        }
        let Some(map) = lookup(ie) else { return };
        if !map.width.accepts(len) {
            return;
        }
        let rank = &mut self.rank[map.target as usize];
        if map.rank >= *rank {
            return;
        }
        *rank = map.rank;
        let slot = Slot::new(offset, len);
        let p = &mut self.plan;
        match map.target {
            Target::SrcIp => p.src_ip = slot,
            Target::DstIp => p.dst_ip = slot,
            Target::NextHop => p.next_hop = slot,
            Target::SrcPort => p.src_port = slot,
            Target::DstPort => p.dst_port = slot,
            Target::Protocol => p.protocol = slot,
            Target::InBytes => p.in_bytes = slot,
            Target::InPkts => p.in_pkts = slot,
            Target::TcpFlags => p.tcp_flags = slot,
            Target::Tos => p.tos = slot,
            Target::InputIf => p.input_if = slot,
            Target::OutputIf => p.output_if = slot,
            Target::SrcAs => p.src_as = slot,
            Target::DstAs => p.dst_as = slot,
            Target::SrcMask => p.src_mask = slot,
            Target::DstMask => p.dst_mask = slot,
            Target::Direction => p.direction = slot,
            Target::IpVersion => p.ip_version = slot,
            Target::First => {
                p.first_switched = slot;
                p.first_kind = map.time;
            }
            Target::Last => {
                p.last_switched = slot;
                p.last_kind = map.time;
            }
            Target::SystemInit => p.system_init = slot,
            Target::SamplerId => p.sampler_id = slot,
            Target::SamplingInterval => p.sampling_interval = slot,
        }
    }

    pub fn finish(mut self, record_len: u16) -> Plan {
        self.plan.record_len = record_len;
        self.plan
    }
}

/// Where the sampling facts are in an options data record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionsPlan {
    pub record_len: u16,
    /// samplerId 48 or selectorId 302 (scope or option field).
    pub sampler_id: Slot,
    /// samplingInterval 34.
    pub interval: Slot,
    /// samplerRandomInterval 50.
    pub random_interval: Slot,
    /// samplingPacketInterval 305.
    pub packet_interval: Slot,
    /// samplingPacketSpace 306.
    pub packet_space: Slot,
    /// systemInitTimeMilliseconds 160.
    pub system_init: Slot,
}

impl OptionsPlan {
    /// Notes an options template field; the first of each kind wins.
    #[inline]
    pub fn field(&mut self, ie: u16, enterprise: u32, offset: u16, len: u16) {
        if enterprise != 0 || !Width::Uint.accepts(len) {
            return;
        }
        let slot = match ie {
            SAMPLER_ID | SELECTOR_ID => &mut self.sampler_id,
            SAMPLING_INTERVAL => &mut self.interval,
            SAMPLER_RANDOM_INTERVAL => &mut self.random_interval,
            SAMPLING_PACKET_INTERVAL => &mut self.packet_interval,
            SAMPLING_PACKET_SPACE => &mut self.packet_space,
            SYSTEM_INIT_TIME_MILLISECONDS => &mut self.system_init,
            _ => return,
        };
        if !slot.is_present() {
            *slot = Slot::new(offset, len);
        }
    }

    /// Whether records of this template say anything goflow keeps.
    pub fn is_useful(&self) -> bool {
        self.interval.is_present()
            || self.random_interval.is_present()
            || self.packet_interval.is_present()
            || self.system_init.is_present()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_lose_to_the_preferred_element_in_any_order() {
        let mut b = PlanBuilder::default();
        b.field(OUT_BYTES, 0, 0, 4);
        b.field(OCTET_TOTAL_COUNT, 0, 4, 8);
        b.field(IN_BYTES, 0, 12, 8);
        b.field(OCTET_TOTAL_COUNT, 0, 20, 8);
        b.field(OUT_PKTS, 0, 28, 4);
        b.field(BGP_IPV4_NEXT_HOP, 0, 32, 4);
        b.field(IPV4_NEXT_HOP, 0, 36, 4);
        b.field(EGRESS_PHYSICAL_INTERFACE, 0, 40, 4);
        let p = b.finish(44);
        assert_eq!(p.in_bytes, Slot::new(12, 8));
        assert_eq!(p.in_pkts, Slot::new(28, 4));
        assert_eq!(p.next_hop, Slot::new(36, 4));
        assert_eq!(p.output_if, Slot::new(40, 4));
        assert_eq!(p.record_len, 44);
    }

    #[test]
    fn bad_lengths_and_enterprise_elements_are_absent() {
        let mut b = PlanBuilder::default();
        b.field(IPV4_SRC_ADDR, 0, 0, 16);
        b.field(IPV6_DST_ADDR, 0, 0, 4);
        b.field(IN_BYTES, 0, 0, 9);
        b.field(IN_PKTS, 0, 0, 0);
        b.field(L4_SRC_PORT, 29305, 0, 2);
        b.field(FLOW_START_MICROSECONDS, 0, 0, 4);
        let p = b.finish(16);
        assert_eq!(
            p,
            Plan {
                record_len: 16,
                ..Plan::EMPTY
            }
        );
    }

    #[test]
    fn time_kinds_follow_the_element() {
        let mut b = PlanBuilder::default();
        b.field(FIRST_SWITCHED, 0, 0, 4);
        b.field(FLOW_START_MILLISECONDS, 0, 4, 8);
        b.field(FLOW_END_DELTA_MICROSECONDS, 0, 12, 4);
        let p = b.finish(16);
        assert_eq!(
            (p.first_switched, p.first_kind),
            (Slot::new(4, 8), TimeKind::UnixMs)
        );
        assert_eq!(
            (p.last_switched, p.last_kind),
            (Slot::new(12, 4), TimeKind::DeltaMicros)
        );
    }
}
