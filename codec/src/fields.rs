//! The information elements goflow understands: their ids (IANA IPFIX registry, which NetFlow v9
//! shares for ids below 128 and for the ones listed here, plus Cisco NSEL's 40005), which
//! [`Plan`] field each one fills, which lengths the accessor accepts, and which one wins when a
//! template carries several candidates for one column (e.g. octetDeltaCount 1 before
//! octetTotalCount 85 before initiatorOctets 231 before OUT_BYTES 23). Every other element, and
//! every enterprise-specific one except RFC 5103's reverse counters, is skipped by its length.
//!
//! Two rules for what real templates carry:
//! - **The same element twice** (Huawei VXLAN/tunnel templates: outer header first, then the
//!   flow's own): the **last** occurrence wins, as in nfacctd and goflow2. Different elements for
//!   one column still follow their rank (a repeated lower-ranked element never beats a
//!   higher-ranked one).
//! - **Both address families in one template** (IOS-XR "any" monitors: 8/12 and 27/28, 15/62,
//!   18/63 side by side, one family zero per record): the plan keeps both slots and is marked
//!   [`AddrMode::IpVersion`] (the template has ipVersion 60) or [`AddrMode::NonZero`]; the
//!   template also keeps that plan read as IPv4 and as IPv6 ([`Plan::for_family`]), and the
//!   decoder hands each record on with its family's plan after one branch
//!   ([`Plan::record_is_v6`]), so accessors never test the family.

use crate::record::{AddrMode, Plan, Slot, TimeKind};

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
pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
pub const SAMPLING_INTERVAL: u16 = 34;
pub const SAMPLING_ALGORITHM: u16 = 35;
pub const SAMPLER_ID: u16 = 48;
pub const SAMPLER_MODE: u16 = 49;
pub const SAMPLER_RANDOM_INTERVAL: u16 = 50;
pub const SRC_MAC: u16 = 56;
pub const POST_DST_MAC: u16 = 57;
pub const VLAN_ID: u16 = 58;
pub const POST_VLAN_ID: u16 = 59;
pub const IP_VERSION: u16 = 60;
pub const DIRECTION: u16 = 61;
pub const IPV6_NEXT_HOP: u16 = 62;
pub const BGP_IPV6_NEXT_HOP: u16 = 63;
pub const MPLS_TOP_LABEL: u16 = 70;
pub const DST_MAC: u16 = 80;
pub const POST_SRC_MAC: u16 = 81;
pub const OCTET_TOTAL_COUNT: u16 = 85;
pub const PACKET_TOTAL_COUNT: u16 = 86;
pub const FORWARDING_STATUS: u16 = 89;
pub const FLOW_END_REASON: u16 = 136;
pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
pub const CONNECTION_ID: u16 = 148;
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
pub const ICMP_TYPE_IPV4: u16 = 176;
pub const ICMP_CODE_IPV4: u16 = 177;
pub const ICMP_TYPE_IPV6: u16 = 178;
pub const ICMP_CODE_IPV6: u16 = 179;
pub const POST_NAT_SRC_IPV4: u16 = 225;
pub const POST_NAT_DST_IPV4: u16 = 226;
pub const POST_NAPT_SRC_PORT: u16 = 227;
pub const POST_NAPT_DST_PORT: u16 = 228;
pub const INITIATOR_OCTETS: u16 = 231;
pub const RESPONDER_OCTETS: u16 = 232;
pub const FIREWALL_EVENT: u16 = 233;
pub const INGRESS_VRF_ID: u16 = 234;
pub const EGRESS_VRF_ID: u16 = 235;
pub const DOT1Q_VLAN_ID: u16 = 243;
pub const INGRESS_PHYSICAL_INTERFACE: u16 = 252;
pub const EGRESS_PHYSICAL_INTERFACE: u16 = 253;
pub const POST_DOT1Q_VLAN_ID: u16 = 254;
pub const ETHERNET_TYPE: u16 = 256;
pub const POST_NAT_SRC_IPV6: u16 = 281;
pub const POST_NAT_DST_IPV6: u16 = 282;
pub const INITIATOR_PACKETS: u16 = 298;
pub const RESPONDER_PACKETS: u16 = 299;
pub const SELECTOR_ID: u16 = 302;
pub const SELECTOR_ALGORITHM: u16 = 304;
pub const SAMPLING_PACKET_INTERVAL: u16 = 305;
pub const SAMPLING_PACKET_SPACE: u16 = 306;
pub const SAMPLING_TIME_INTERVAL: u16 = 307;
pub const SAMPLING_TIME_SPACE: u16 = 308;
pub const SAMPLING_SIZE: u16 = 309;
pub const SAMPLING_POPULATION: u16 = 310;
pub const SAMPLING_PROBABILITY: u16 = 311;
pub const OBSERVATION_TIME_MILLISECONDS: u16 = 323;
/// Cisco NSEL NF_F_FW_EVENT (v9 only; the same values as firewallEvent 233).
pub const NSEL_FW_EVENT: u16 = 40005;

/// RFC 5103's private enterprise number for reverse-direction elements (biflows).
pub const REVERSE_PEN: u32 = 29305;

/// IPFIX field length meaning "variable length, prefixed on the wire".
pub const VARIABLE_LENGTH: u16 = 0xffff;

/// The [`Plan`] field an element fills. `*6` targets are the IPv6 member of a family pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    SrcIp,
    SrcIp6,
    DstIp,
    DstIp6,
    NextHop,
    NextHop6,
    BgpNextHop,
    BgpNextHop6,
    SrcMask,
    SrcMask6,
    DstMask,
    DstMask6,
    PostNatSrcIp,
    PostNatSrcIp6,
    PostNatDstIp,
    PostNatDstIp6,
    IcmpTypeCode,
    IcmpTypeCode6,
    IcmpType,
    IcmpType6,
    IcmpCode,
    IcmpCode6,
    SrcPort,
    DstPort,
    Protocol,
    InBytes,
    InPkts,
    OutBytes,
    OutPkts,
    TcpFlags,
    Tos,
    InputIf,
    OutputIf,
    SrcAs,
    DstAs,
    Direction,
    IpVersion,
    First,
    Last,
    SystemInit,
    SamplerId,
    SamplingInterval,
    Vlan,
    PostVlan,
    SrcMac,
    DstMac,
    MplsLabel,
    PostNatSrcPort,
    PostNatDstPort,
    IngressVrf,
    EgressVrf,
    FlowEndReason,
    ForwardingStatus,
    Etype,
    FwEvent,
    ConnectionId,
}

/// How many [`Target`]s there are.
pub const TARGETS: usize = Target::ConnectionId as usize + 1;

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
    /// A MAC address: exactly 6 bytes.
    Mac,
    /// An MPLS label stack entry: at least 3 bytes (label, EXP, bottom-of-stack).
    Label,
}

impl Width {
    #[inline]
    pub fn accepts(self, len: u16) -> bool {
        match self {
            Width::V4 => len == 4,
            Width::V6 => len == 16,
            Width::Uint => (1..=8).contains(&len),
            Width::Eight => len == 8,
            Width::Mac => len == 6,
            Width::Label => (3..=VARIABLE_LENGTH - 1).contains(&len),
        }
    }
}

/// What goflow does with one element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub target: Target,
    /// Lower wins when a template carries several elements for one target; a repeat of the
    /// element already chosen replaces it (last occurrence wins).
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

/// The mapping of element `ie` of enterprise `pen` (0 = IANA), or `None` if goflow does not
/// store it.
#[inline]
pub fn lookup(ie: u16, pen: u32) -> Option<Mapping> {
    use Target as T;
    use Width as W;
    if pen != 0 {
        // RFC 5103 reverse elements: the responder's counters.
        return match (pen, ie) {
            (REVERSE_PEN, IN_BYTES) => m(T::OutBytes, 1, W::Uint),
            (REVERSE_PEN, OCTET_TOTAL_COUNT) => m(T::OutBytes, 2, W::Uint),
            (REVERSE_PEN, IN_PKTS) => m(T::OutPkts, 1, W::Uint),
            (REVERSE_PEN, PACKET_TOTAL_COUNT) => m(T::OutPkts, 2, W::Uint),
            _ => None,
        };
    }
    match ie {
        IPV4_SRC_ADDR => m(T::SrcIp, 0, W::V4),
        IPV6_SRC_ADDR => m(T::SrcIp6, 0, W::V6),
        IPV4_DST_ADDR => m(T::DstIp, 0, W::V4),
        IPV6_DST_ADDR => m(T::DstIp6, 0, W::V6),
        IPV4_NEXT_HOP => m(T::NextHop, 0, W::V4),
        IPV6_NEXT_HOP => m(T::NextHop6, 0, W::V6),
        // The BGP next hop has its own column, and is the next hop when nothing else says.
        BGP_IPV4_NEXT_HOP => m(T::BgpNextHop, 0, W::V4),
        BGP_IPV6_NEXT_HOP => m(T::BgpNextHop6, 0, W::V6),
        POST_NAT_SRC_IPV4 => m(T::PostNatSrcIp, 0, W::V4),
        POST_NAT_SRC_IPV6 => m(T::PostNatSrcIp6, 0, W::V6),
        POST_NAT_DST_IPV4 => m(T::PostNatDstIp, 0, W::V4),
        POST_NAT_DST_IPV6 => m(T::PostNatDstIp6, 0, W::V6),
        L4_SRC_PORT => m(T::SrcPort, 0, W::Uint),
        L4_DST_PORT => m(T::DstPort, 0, W::Uint),
        PROTOCOL => m(T::Protocol, 0, W::Uint),
        // Counters: the flow's own, then totals, then NSEL initiator, then "post" (OUT_*),
        // which some egress-only exporters send instead.
        IN_BYTES => m(T::InBytes, 0, W::Uint),
        OCTET_TOTAL_COUNT => m(T::InBytes, 1, W::Uint),
        INITIATOR_OCTETS => m(T::InBytes, 2, W::Uint),
        OUT_BYTES => m(T::InBytes, 3, W::Uint),
        IN_PKTS => m(T::InPkts, 0, W::Uint),
        PACKET_TOTAL_COUNT => m(T::InPkts, 1, W::Uint),
        INITIATOR_PACKETS => m(T::InPkts, 2, W::Uint),
        OUT_PKTS => m(T::InPkts, 3, W::Uint),
        RESPONDER_OCTETS => m(T::OutBytes, 0, W::Uint),
        RESPONDER_PACKETS => m(T::OutPkts, 0, W::Uint),
        TCP_FLAGS => m(T::TcpFlags, 0, W::Uint),
        TOS => m(T::Tos, 0, W::Uint),
        INPUT_SNMP => m(T::InputIf, 0, W::Uint),
        INGRESS_PHYSICAL_INTERFACE => m(T::InputIf, 1, W::Uint),
        OUTPUT_SNMP => m(T::OutputIf, 0, W::Uint),
        EGRESS_PHYSICAL_INTERFACE => m(T::OutputIf, 1, W::Uint),
        SRC_AS => m(T::SrcAs, 0, W::Uint),
        DST_AS => m(T::DstAs, 0, W::Uint),
        SRC_MASK => m(T::SrcMask, 0, W::Uint),
        IPV6_SRC_MASK => m(T::SrcMask6, 0, W::Uint),
        DST_MASK => m(T::DstMask, 0, W::Uint),
        IPV6_DST_MASK => m(T::DstMask6, 0, W::Uint),
        DIRECTION => m(T::Direction, 0, W::Uint),
        IP_VERSION => m(T::IpVersion, 0, W::Uint),
        ICMP_TYPE_CODE_IPV4 => m(T::IcmpTypeCode, 0, W::Uint),
        ICMP_TYPE_CODE_IPV6 => m(T::IcmpTypeCode6, 0, W::Uint),
        ICMP_TYPE_IPV4 => m(T::IcmpType, 0, W::Uint),
        ICMP_TYPE_IPV6 => m(T::IcmpType6, 0, W::Uint),
        ICMP_CODE_IPV4 => m(T::IcmpCode, 0, W::Uint),
        ICMP_CODE_IPV6 => m(T::IcmpCode6, 0, W::Uint),
        VLAN_ID => m(T::Vlan, 0, W::Uint),
        DOT1Q_VLAN_ID => m(T::Vlan, 1, W::Uint),
        POST_VLAN_ID => m(T::PostVlan, 0, W::Uint),
        POST_DOT1Q_VLAN_ID => m(T::PostVlan, 1, W::Uint),
        SRC_MAC => m(T::SrcMac, 0, W::Mac),
        POST_SRC_MAC => m(T::SrcMac, 1, W::Mac),
        DST_MAC => m(T::DstMac, 0, W::Mac),
        POST_DST_MAC => m(T::DstMac, 1, W::Mac),
        MPLS_TOP_LABEL => m(T::MplsLabel, 0, W::Label),
        POST_NAPT_SRC_PORT => m(T::PostNatSrcPort, 0, W::Uint),
        POST_NAPT_DST_PORT => m(T::PostNatDstPort, 0, W::Uint),
        INGRESS_VRF_ID => m(T::IngressVrf, 0, W::Uint),
        EGRESS_VRF_ID => m(T::EgressVrf, 0, W::Uint),
        FLOW_END_REASON => m(T::FlowEndReason, 0, W::Uint),
        FORWARDING_STATUS => m(T::ForwardingStatus, 0, W::Uint),
        ETHERNET_TYPE => m(T::Etype, 0, W::Uint),
        FIREWALL_EVENT => m(T::FwEvent, 0, W::Uint),
        NSEL_FW_EVENT => m(T::FwEvent, 1, W::Uint),
        CONNECTION_ID => m(T::ConnectionId, 0, W::Uint),
        // Times: the most precise absolute form wins, then sysUpTime, then deltas, then the
        // event time (NSEL 323, which stands for both ends when nothing else does).
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
        OBSERVATION_TIME_MILLISECONDS => t(T::First, 4, W::Uint, TimeKind::UnixMs),
        SYSTEM_INIT_TIME_MILLISECONDS => m(T::SystemInit, 0, W::Uint),
        SAMPLER_ID => m(T::SamplerId, 0, W::Uint),
        SELECTOR_ID => m(T::SamplerId, 1, W::Uint),
        SAMPLING_INTERVAL => m(T::SamplingInterval, 0, W::Uint),
        SAMPLER_RANDOM_INTERVAL => m(T::SamplingInterval, 1, W::Uint),
        _ => None,
    }
}

/// The family pairs: (IPv4 target, IPv6 target). A template carrying both members of any pair
/// is mixed-family.
pub(crate) const PAIRS: [(Target, Target); 11] = [
    (Target::SrcIp, Target::SrcIp6),
    (Target::DstIp, Target::DstIp6),
    (Target::NextHop, Target::NextHop6),
    (Target::BgpNextHop, Target::BgpNextHop6),
    (Target::SrcMask, Target::SrcMask6),
    (Target::DstMask, Target::DstMask6),
    (Target::PostNatSrcIp, Target::PostNatSrcIp6),
    (Target::PostNatDstIp, Target::PostNatDstIp6),
    (Target::IcmpTypeCode, Target::IcmpTypeCode6),
    (Target::IcmpType, Target::IcmpType6),
    (Target::IcmpCode, Target::IcmpCode6),
];

/// Builds a [`Plan`] field by field. `Copy` and on the stack: the variable-length walk builds
/// one per record without allocating.
#[derive(Clone, Copy, Debug)]
pub struct PlanBuilder {
    plan: Plan,
    rank: [u8; TARGETS],
    /// The element chosen for each target, so a repeat of it replaces it.
    chosen: [u16; TARGETS],
}

impl Default for PlanBuilder {
    fn default() -> Self {
        PlanBuilder {
            plan: Plan::EMPTY,
            rank: [u8::MAX; TARGETS],
            chosen: [0; TARGETS],
        }
    }
}

impl PlanBuilder {
    /// Notes that element `ie` (enterprise `enterprise`, 0 = IANA) sits at `offset..offset+len`.
    #[inline]
    pub fn field(&mut self, ie: u16, enterprise: u32, offset: u16, len: u16) {
        let Some(map) = lookup(ie, enterprise) else {
            return;
        };
        if !map.width.accepts(len) {
            return;
        }
        let slot = Slot::new(offset, len);
        self.put(map, ie, slot);
        // Elements that fill a second target at the same rank: the NSEL event time stands for
        // both ends of the flow; OUT_BYTES/OUT_PKTS are the reverse counters too (finish()
        // keeps them there only when the forward counter is another element).
        let second = match (ie, enterprise) {
            (OBSERVATION_TIME_MILLISECONDS, 0) => Target::Last,
            (OUT_BYTES, 0) => Target::OutBytes,
            (OUT_PKTS, 0) => Target::OutPkts,
            _ => return,
        };
        self.put(
            Mapping {
                target: second,
                ..map
            },
            ie,
            slot,
        );
    }

    #[inline]
    fn put(&mut self, map: Mapping, ie: u16, slot: Slot) {
        let i = map.target as usize;
        let (Some(rank), Some(chosen)) = (self.rank.get_mut(i), self.chosen.get_mut(i)) else {
            return;
        };
        // A better-ranked element, or the same element again (last occurrence wins).
        if map.rank > *rank || (map.rank == *rank && ie != *chosen) {
            return;
        }
        *rank = map.rank;
        *chosen = ie;
        *self.plan.slot_mut(map.target) = slot;
        match map.target {
            Target::First => self.plan.first_kind = map.time,
            Target::Last => self.plan.last_kind = map.time,
            _ => {}
        }
    }

    pub fn finish(mut self, record_len: u16) -> Plan {
        let p = &mut self.plan;
        p.record_len = record_len;
        // RFC 5103/NSEL responder counters; OUT_BYTES/OUT_PKTS are the reverse direction only
        // when the forward counter came from elsewhere.
        if p.out_bytes == p.in_bytes {
            p.out_bytes = Slot::ABSENT;
        }
        if p.out_pkts == p.in_pkts {
            p.out_pkts = Slot::ABSENT;
        }
        let mixed = PAIRS
            .iter()
            .any(|&(a, b)| p.slot(a).is_present() && p.slot(b).is_present());
        if mixed {
            p.addr_mode = if p.ip_version.is_present() {
                AddrMode::IpVersion
            } else {
                AddrMode::NonZero
            };
        } else {
            // One family: its slots are the plan's only ones, read without a branch.
            p.addr_mode = AddrMode::Single;
            for (a, b) in PAIRS {
                let v6 = p.slot(b);
                if v6.is_present() {
                    *p.slot_mut(a) = v6;
                    *p.slot_mut(b) = Slot::ABSENT;
                }
            }
        }
        // The next hop falls back to the BGP next hop (per family).
        if !p.next_hop.is_present() {
            p.next_hop = p.bgp_next_hop;
        }
        if !p.next_hop_6.is_present() {
            p.next_hop_6 = p.bgp_next_hop_6;
        }
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
    /// samplingTimeInterval 307.
    pub time_interval: Slot,
    /// samplingTimeSpace 308.
    pub time_space: Slot,
    /// selectorAlgorithm 304.
    pub algorithm: Slot,
    /// samplingSize 309.
    pub size: Slot,
    /// samplingPopulation 310.
    pub population: Slot,
    /// samplingProbability 311 (float32 or float64).
    pub probability: Slot,
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
            SAMPLING_TIME_INTERVAL => &mut self.time_interval,
            SAMPLING_TIME_SPACE => &mut self.time_space,
            SELECTOR_ALGORITHM => &mut self.algorithm,
            SAMPLING_SIZE => &mut self.size,
            SAMPLING_POPULATION => &mut self.population,
            SAMPLING_PROBABILITY if len == 4 || len == 8 => &mut self.probability,
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
            || self.time_interval.is_present()
            || self.size.is_present()
            || self.probability.is_present()
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
        // OUT_BYTES is the reverse direction when the forward counter came from elsewhere.
        assert_eq!(p.out_bytes, Slot::new(0, 4));
        // OUT_PKTS is the only packet counter: the flow's, not a reverse one.
        assert_eq!(p.in_pkts, Slot::new(28, 4));
        assert_eq!(p.out_pkts, Slot::ABSENT);
        assert_eq!(p.next_hop, Slot::new(36, 4));
        assert_eq!(p.bgp_next_hop, Slot::new(32, 4));
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

    #[test]
    fn repeated_element_last_occurrence_wins() {
        // Huawei VXLAN: outer addresses/ports/protocol first, then the inner flow's.
        let mut b = PlanBuilder::default();
        b.field(IPV4_SRC_ADDR, 0, 0, 4);
        b.field(L4_SRC_PORT, 0, 4, 2);
        b.field(PROTOCOL, 0, 6, 1);
        b.field(IPV4_SRC_ADDR, 0, 7, 4);
        b.field(L4_SRC_PORT, 0, 11, 2);
        b.field(PROTOCOL, 0, 13, 1);
        // A repeated lower-ranked element does not beat a better one.
        b.field(IN_BYTES, 0, 14, 4);
        b.field(OCTET_TOTAL_COUNT, 0, 18, 4);
        b.field(OCTET_TOTAL_COUNT, 0, 22, 4);
        let p = b.finish(26);
        assert_eq!(p.src_ip, Slot::new(7, 4));
        assert_eq!(p.src_port, Slot::new(11, 2));
        assert_eq!(p.protocol, Slot::new(13, 1));
        assert_eq!(p.in_bytes, Slot::new(14, 4));
    }

    #[test]
    fn both_families_make_a_mixed_plan() {
        let mut b = PlanBuilder::default();
        b.field(IPV4_SRC_ADDR, 0, 0, 4);
        b.field(IPV4_DST_ADDR, 0, 4, 4);
        b.field(IPV6_SRC_ADDR, 0, 8, 16);
        b.field(IPV6_DST_ADDR, 0, 24, 16);
        let p = b.finish(40);
        assert_eq!(p.addr_mode, AddrMode::NonZero);
        assert_eq!((p.src_ip, p.src_ip_6), (Slot::new(0, 4), Slot::new(8, 16)));
        b.field(IP_VERSION, 0, 40, 1);
        assert_eq!(b.finish(41).addr_mode, AddrMode::IpVersion);
        // One family only: the IPv6 slots move to the plan's only slots.
        let mut b = PlanBuilder::default();
        b.field(IPV6_SRC_ADDR, 0, 0, 16);
        b.field(IPV6_SRC_MASK, 0, 16, 1);
        b.field(BGP_IPV6_NEXT_HOP, 0, 17, 16);
        let p = b.finish(33);
        assert_eq!(p.addr_mode, AddrMode::Single);
        assert_eq!((p.src_ip, p.src_ip_6), (Slot::new(0, 16), Slot::ABSENT));
        assert_eq!(p.src_mask, Slot::new(16, 1));
        assert_eq!(p.bgp_next_hop, Slot::new(17, 16));
        assert_eq!(p.next_hop, Slot::new(17, 16));
    }

    #[test]
    fn nsel_and_reverse_counters() {
        let mut b = PlanBuilder::default();
        b.field(INITIATOR_OCTETS, 0, 0, 4);
        b.field(RESPONDER_OCTETS, 0, 4, 4);
        b.field(INITIATOR_PACKETS, 0, 8, 8);
        b.field(RESPONDER_PACKETS, 0, 16, 8);
        b.field(NSEL_FW_EVENT, 0, 24, 1);
        b.field(OBSERVATION_TIME_MILLISECONDS, 0, 25, 8);
        let p = b.finish(33);
        assert_eq!(
            (p.in_bytes, p.out_bytes),
            (Slot::new(0, 4), Slot::new(4, 4))
        );
        assert_eq!((p.in_pkts, p.out_pkts), (Slot::new(8, 8), Slot::new(16, 8)));
        assert_eq!(p.fw_event, Slot::new(24, 1));
        assert_eq!(p.first_switched, Slot::new(25, 8));
        assert_eq!(p.last_switched, Slot::new(25, 8));
        assert_eq!(p.last_kind, TimeKind::UnixMs);
        let mut b = PlanBuilder::default();
        b.field(IN_BYTES, 0, 0, 8);
        b.field(IN_BYTES, REVERSE_PEN, 8, 8);
        b.field(IN_PKTS, REVERSE_PEN, 16, 4);
        let p = b.finish(20);
        assert_eq!(
            (p.in_bytes, p.out_bytes),
            (Slot::new(0, 8), Slot::new(8, 8))
        );
        assert_eq!((p.in_pkts, p.out_pkts), (Slot::ABSENT, Slot::new(16, 4)));
    }
}
