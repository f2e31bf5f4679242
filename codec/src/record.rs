//! `FlowRecord<'a>`: typed accessors over one flow record's bytes, read through a compiled
//! [`Plan`]. Nothing is copied out of the datagram until an accessor is called, and no accessor
//! can panic: every read goes through a bounds-checked slice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zerocopy::{FromBytes, IntoBytes};

use crate::UnixMicros;
use crate::fields::Target;
use crate::sampling::{Sampling, SamplingSource};
use crate::v5::V5_PLAN;
use crate::wire::v5::V5Record;

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

/// How a plan picks an address family per record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddrMode {
    /// One family in the template: the primary slots are the only ones.
    #[default]
    Single,
    /// Both families; the record's ipVersion (60) says which one is filled.
    IpVersion,
    /// Both families, no ipVersion: the family whose source or destination address is not
    /// all-zero; IPv4 when both (or neither) are.
    NonZero,
}

/// A compiled template: for every field goflow stores, where it is in a record.
/// `Copy` and free of Drop, so a batch can keep copies in a bump arena. Family pairs (`x` and
/// `x_6`) are both set only in a mixed-family plan ([`AddrMode`] not `Single`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bytes of one record (fixed-length templates); records are this far apart.
    pub record_len: u16,
    pub addr_mode: AddrMode,
    /// Source address (the IPv4 member of the pair in a mixed-family plan).
    pub src_ip: Slot,
    /// IPv6 source address of a mixed-family plan (absent otherwise).
    pub src_ip_6: Slot,
    pub dst_ip: Slot,
    pub dst_ip_6: Slot,
    /// ipNextHop (15/62), else the BGP next hop.
    pub next_hop: Slot,
    pub next_hop_6: Slot,
    /// bgpNextHopIPv4/IPv6Address (18/63).
    pub bgp_next_hop: Slot,
    pub bgp_next_hop_6: Slot,
    pub src_mask: Slot,
    pub src_mask_6: Slot,
    pub dst_mask: Slot,
    pub dst_mask_6: Slot,
    pub post_nat_src_ip: Slot,
    pub post_nat_src_ip_6: Slot,
    pub post_nat_dst_ip: Slot,
    pub post_nat_dst_ip_6: Slot,
    /// icmpTypeCodeIPv4/IPv6 (32/139): type * 256 + code.
    pub icmp_type_code: Slot,
    pub icmp_type_code_6: Slot,
    /// icmpTypeIPv4/IPv6 (176/178).
    pub icmp_type: Slot,
    pub icmp_type_6: Slot,
    /// icmpCodeIPv4/IPv6 (177/179).
    pub icmp_code: Slot,
    pub icmp_code_6: Slot,
    pub src_port: Slot,
    pub dst_port: Slot,
    pub protocol: Slot,
    pub in_bytes: Slot,
    pub in_pkts: Slot,
    /// Responder / reverse counters (NSEL 232/299, RFC 5103, OUT_BYTES/OUT_PKTS 23/24).
    pub out_bytes: Slot,
    pub out_pkts: Slot,
    pub tcp_flags: Slot,
    pub tos: Slot,
    pub input_if: Slot,
    pub output_if: Slot,
    pub src_as: Slot,
    pub dst_as: Slot,
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
    pub vlan: Slot,
    pub post_vlan: Slot,
    pub src_mac: Slot,
    pub dst_mac: Slot,
    /// mplsTopLabelStackSection (70): label in the top 20 bits of the first 3 bytes.
    pub mpls_label: Slot,
    pub post_nat_src_port: Slot,
    pub post_nat_dst_port: Slot,
    pub ingress_vrf: Slot,
    pub egress_vrf: Slot,
    pub flow_end_reason: Slot,
    pub forwarding_status: Slot,
    pub etype: Slot,
    /// firewallEvent (233) or NSEL NF_F_FW_EVENT (40005).
    pub fw_event: Slot,
    /// connectionId / NSEL NF_F_CONN_ID (148).
    pub connection_id: Slot,
}

impl Plan {
    /// A plan in which every field is absent.
    pub const EMPTY: Plan = Plan {
        record_len: 0,
        addr_mode: AddrMode::Single,
        src_ip: Slot::ABSENT,
        src_ip_6: Slot::ABSENT,
        dst_ip: Slot::ABSENT,
        dst_ip_6: Slot::ABSENT,
        next_hop: Slot::ABSENT,
        next_hop_6: Slot::ABSENT,
        bgp_next_hop: Slot::ABSENT,
        bgp_next_hop_6: Slot::ABSENT,
        src_mask: Slot::ABSENT,
        src_mask_6: Slot::ABSENT,
        dst_mask: Slot::ABSENT,
        dst_mask_6: Slot::ABSENT,
        post_nat_src_ip: Slot::ABSENT,
        post_nat_src_ip_6: Slot::ABSENT,
        post_nat_dst_ip: Slot::ABSENT,
        post_nat_dst_ip_6: Slot::ABSENT,
        icmp_type_code: Slot::ABSENT,
        icmp_type_code_6: Slot::ABSENT,
        icmp_type: Slot::ABSENT,
        icmp_type_6: Slot::ABSENT,
        icmp_code: Slot::ABSENT,
        icmp_code_6: Slot::ABSENT,
        src_port: Slot::ABSENT,
        dst_port: Slot::ABSENT,
        protocol: Slot::ABSENT,
        in_bytes: Slot::ABSENT,
        in_pkts: Slot::ABSENT,
        out_bytes: Slot::ABSENT,
        out_pkts: Slot::ABSENT,
        tcp_flags: Slot::ABSENT,
        tos: Slot::ABSENT,
        input_if: Slot::ABSENT,
        output_if: Slot::ABSENT,
        src_as: Slot::ABSENT,
        dst_as: Slot::ABSENT,
        direction: Slot::ABSENT,
        ip_version: Slot::ABSENT,
        first_switched: Slot::ABSENT,
        first_kind: TimeKind::Absent,
        last_switched: Slot::ABSENT,
        last_kind: TimeKind::Absent,
        system_init: Slot::ABSENT,
        sampler_id: Slot::ABSENT,
        sampling_interval: Slot::ABSENT,
        vlan: Slot::ABSENT,
        post_vlan: Slot::ABSENT,
        src_mac: Slot::ABSENT,
        dst_mac: Slot::ABSENT,
        mpls_label: Slot::ABSENT,
        post_nat_src_port: Slot::ABSENT,
        post_nat_dst_port: Slot::ABSENT,
        ingress_vrf: Slot::ABSENT,
        egress_vrf: Slot::ABSENT,
        flow_end_reason: Slot::ABSENT,
        forwarding_status: Slot::ABSENT,
        etype: Slot::ABSENT,
        fw_event: Slot::ABSENT,
        connection_id: Slot::ABSENT,
    };

    /// Whether records carry connection events (a connection id 148 and a firewall event
    /// 233/40005, as Cisco NSEL does): their counters go through the decoder's connection
    /// accounting (`decoder/nsel.rs`).
    #[inline]
    pub fn is_connection_events(&self) -> bool {
        self.connection_id.is_present() && self.fw_event.is_present()
    }

    /// Whether a record of a mixed-family plan is IPv6: its ipVersion (60) if the template has
    /// one and it says 4 or 6; else the family whose source or destination address is not
    /// all-zero, IPv4 when both are (or neither is). The decoder asks once per record of a
    /// mixed-family template and hands the record on with [`Plan::for_family`]'s plan, so the
    /// accessors never branch on the family.
    pub fn record_is_v6(&self, rec: &[u8]) -> bool {
        if self.addr_mode == AddrMode::IpVersion {
            match read_uint(rec, self.ip_version) {
                Some(6) => return true,
                Some(4) => return false,
                _ => {}
            }
        }
        let set = |s: Slot| {
            let start = usize::from(s.offset);
            s.is_present()
                && rec
                    .get(start..start + usize::from(s.len))
                    .is_some_and(|b| b.iter().any(|&x| x != 0))
        };
        if set(self.src_ip) || set(self.dst_ip) {
            return false;
        }
        set(self.src_ip_6) || set(self.dst_ip_6)
    }

    /// The single-family plan a record of this mixed-family plan reads: every family pair's
    /// slot of the record's family (the other family's when the template lacks it), the IPv6
    /// members cleared, [`AddrMode::Single`]. A single-family plan is returned as it is.
    pub fn for_family(&self, v6: bool) -> Plan {
        let mut p = *self;
        if self.addr_mode == AddrMode::Single {
            return p;
        }
        p.addr_mode = AddrMode::Single;
        for (a, b) in crate::fields::PAIRS {
            let (want, other) = if v6 {
                (self.slot(b), self.slot(a))
            } else {
                (self.slot(a), self.slot(b))
            };
            *p.slot_mut(a) = if want.is_present() { want } else { other };
            *p.slot_mut(b) = Slot::ABSENT;
        }
        p
    }

    /// The slot a [`Target`] fills.
    pub fn slot(&self, t: Target) -> Slot {
        match t {
            Target::SrcIp => self.src_ip,
            Target::SrcIp6 => self.src_ip_6,
            Target::DstIp => self.dst_ip,
            Target::DstIp6 => self.dst_ip_6,
            Target::NextHop => self.next_hop,
            Target::NextHop6 => self.next_hop_6,
            Target::BgpNextHop => self.bgp_next_hop,
            Target::BgpNextHop6 => self.bgp_next_hop_6,
            Target::SrcMask => self.src_mask,
            Target::SrcMask6 => self.src_mask_6,
            Target::DstMask => self.dst_mask,
            Target::DstMask6 => self.dst_mask_6,
            Target::PostNatSrcIp => self.post_nat_src_ip,
            Target::PostNatSrcIp6 => self.post_nat_src_ip_6,
            Target::PostNatDstIp => self.post_nat_dst_ip,
            Target::PostNatDstIp6 => self.post_nat_dst_ip_6,
            Target::IcmpTypeCode => self.icmp_type_code,
            Target::IcmpTypeCode6 => self.icmp_type_code_6,
            Target::IcmpType => self.icmp_type,
            Target::IcmpType6 => self.icmp_type_6,
            Target::IcmpCode => self.icmp_code,
            Target::IcmpCode6 => self.icmp_code_6,
            Target::SrcPort => self.src_port,
            Target::DstPort => self.dst_port,
            Target::Protocol => self.protocol,
            Target::InBytes => self.in_bytes,
            Target::InPkts => self.in_pkts,
            Target::OutBytes => self.out_bytes,
            Target::OutPkts => self.out_pkts,
            Target::TcpFlags => self.tcp_flags,
            Target::Tos => self.tos,
            Target::InputIf => self.input_if,
            Target::OutputIf => self.output_if,
            Target::SrcAs => self.src_as,
            Target::DstAs => self.dst_as,
            Target::Direction => self.direction,
            Target::IpVersion => self.ip_version,
            Target::First => self.first_switched,
            Target::Last => self.last_switched,
            Target::SystemInit => self.system_init,
            Target::SamplerId => self.sampler_id,
            Target::SamplingInterval => self.sampling_interval,
            Target::Vlan => self.vlan,
            Target::PostVlan => self.post_vlan,
            Target::SrcMac => self.src_mac,
            Target::DstMac => self.dst_mac,
            Target::MplsLabel => self.mpls_label,
            Target::PostNatSrcPort => self.post_nat_src_port,
            Target::PostNatDstPort => self.post_nat_dst_port,
            Target::IngressVrf => self.ingress_vrf,
            Target::EgressVrf => self.egress_vrf,
            Target::FlowEndReason => self.flow_end_reason,
            Target::ForwardingStatus => self.forwarding_status,
            Target::Etype => self.etype,
            Target::FwEvent => self.fw_event,
            Target::ConnectionId => self.connection_id,
        }
    }

    pub fn slot_mut(&mut self, t: Target) -> &mut Slot {
        match t {
            Target::SrcIp => &mut self.src_ip,
            Target::SrcIp6 => &mut self.src_ip_6,
            Target::DstIp => &mut self.dst_ip,
            Target::DstIp6 => &mut self.dst_ip_6,
            Target::NextHop => &mut self.next_hop,
            Target::NextHop6 => &mut self.next_hop_6,
            Target::BgpNextHop => &mut self.bgp_next_hop,
            Target::BgpNextHop6 => &mut self.bgp_next_hop_6,
            Target::SrcMask => &mut self.src_mask,
            Target::SrcMask6 => &mut self.src_mask_6,
            Target::DstMask => &mut self.dst_mask,
            Target::DstMask6 => &mut self.dst_mask_6,
            Target::PostNatSrcIp => &mut self.post_nat_src_ip,
            Target::PostNatSrcIp6 => &mut self.post_nat_src_ip_6,
            Target::PostNatDstIp => &mut self.post_nat_dst_ip,
            Target::PostNatDstIp6 => &mut self.post_nat_dst_ip_6,
            Target::IcmpTypeCode => &mut self.icmp_type_code,
            Target::IcmpTypeCode6 => &mut self.icmp_type_code_6,
            Target::IcmpType => &mut self.icmp_type,
            Target::IcmpType6 => &mut self.icmp_type_6,
            Target::IcmpCode => &mut self.icmp_code,
            Target::IcmpCode6 => &mut self.icmp_code_6,
            Target::SrcPort => &mut self.src_port,
            Target::DstPort => &mut self.dst_port,
            Target::Protocol => &mut self.protocol,
            Target::InBytes => &mut self.in_bytes,
            Target::InPkts => &mut self.in_pkts,
            Target::OutBytes => &mut self.out_bytes,
            Target::OutPkts => &mut self.out_pkts,
            Target::TcpFlags => &mut self.tcp_flags,
            Target::Tos => &mut self.tos,
            Target::InputIf => &mut self.input_if,
            Target::OutputIf => &mut self.output_if,
            Target::SrcAs => &mut self.src_as,
            Target::DstAs => &mut self.dst_as,
            Target::Direction => &mut self.direction,
            Target::IpVersion => &mut self.ip_version,
            Target::First => &mut self.first_switched,
            Target::Last => &mut self.last_switched,
            Target::SystemInit => &mut self.system_init,
            Target::SamplerId => &mut self.sampler_id,
            Target::SamplingInterval => &mut self.sampling_interval,
            Target::Vlan => &mut self.vlan,
            Target::PostVlan => &mut self.post_vlan,
            Target::SrcMac => &mut self.src_mac,
            Target::DstMac => &mut self.dst_mac,
            Target::MplsLabel => &mut self.mpls_label,
            Target::PostNatSrcPort => &mut self.post_nat_src_port,
            Target::PostNatDstPort => &mut self.post_nat_dst_port,
            Target::IngressVrf => &mut self.ingress_vrf,
            Target::EgressVrf => &mut self.egress_vrf,
            Target::FlowEndReason => &mut self.flow_end_reason,
            Target::ForwardingStatus => &mut self.forwarding_status,
            Target::Etype => &mut self.etype,
            Target::FwEvent => &mut self.fw_event,
            Target::ConnectionId => &mut self.connection_id,
        }
    }
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
    #[inline]
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
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    #[inline]
    pub fn plan(&self) -> &'a Plan {
        self.plan
    }

    #[inline]
    pub fn context(&self) -> &'a PacketContext {
        self.ctx
    }

    #[inline(always)]
    fn field(&self, slot: Slot) -> Option<&'a [u8]> {
        if slot.len == 0 {
            return None;
        }
        let start = slot.offset as usize;
        self.bytes.get(start..start + slot.len as usize)
    }

    /// An unsigned integer of 1..=8 bytes (IPFIX reduced-size encoding). Longer fields keep
    /// their low 8 bytes.
    #[inline(always)]
    fn uint(&self, slot: Slot) -> Option<u64> {
        let len = usize::from(slot.len);
        let end = usize::from(slot.offset) + len;
        // Fast path: one unaligned 8-byte load ending at the field's end, masked to its width
        // (no per-width branch). `end - 8` wraps when the field ends in the first 8 bytes, so
        // the one range check also covers that case, which takes the general read with
        // fields longer than 8 bytes.
        if len.wrapping_sub(1) < 8
            && let Some(w) = self.bytes.get(end.wrapping_sub(8)..end)
            && let Some(w) = w.first_chunk::<8>()
        {
            return Some(u64::from_be_bytes(*w) & (u64::MAX >> (64 - 8 * len)));
        }
        self.field(slot).map(be_uint)
    }

    #[inline(always)]
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
        if let Some(r) = self.v5() {
            return Some(r.srcaddr.as_bytes());
        }
        self.field(self.plan.src_ip)
            .filter(|b| b.len() == 4 || b.len() == 16)
    }

    #[inline]
    pub fn dst_ip_bytes(&self) -> Option<&'a [u8]> {
        if let Some(r) = self.v5() {
            return Some(r.dstaddr.as_bytes());
        }
        self.field(self.plan.dst_ip)
            .filter(|b| b.len() == 4 || b.len() == 16)
    }

    /// The record as a v5 struct when it was decoded through [`V5_PLAN`]: v5's layout is fixed,
    /// so its accessors read constant offsets instead of walking slots (a pointer compare and a
    /// length check, then one load per field). Records whose plan is a copy (arena) take the
    /// slot path, which reads the same bytes.
    #[inline(always)]
    fn v5(&self) -> Option<&'a V5Record> {
        if std::ptr::eq(self.plan, &V5_PLAN) {
            V5Record::ref_from_bytes(self.bytes).ok()
        } else {
            None
        }
    }

    #[inline]
    pub fn time_received(&self) -> UnixMicros {
        self.ctx.received_us
    }
    #[inline]
    pub fn exporter(&self) -> IpAddr {
        self.ctx.exporter
    }
    #[inline]
    pub fn observation_domain(&self) -> u32 {
        self.ctx.observation_domain
    }
    /// 5, 9 or 10.
    #[inline]
    pub fn netflow_version(&self) -> u16 {
        self.ctx.version
    }
    /// Sampling rate (1 in N; 1 when unknown, see [`FlowRecord::sampling_source`]).
    #[inline]
    pub fn sampling_rate(&self) -> u32 {
        self.sampling.rate
    }
    /// Where the sampling rate came from.
    #[inline]
    pub fn sampling_source(&self) -> SamplingSource {
        self.sampling.source
    }
    #[inline]
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }
    #[inline]
    pub fn src_ip(&self) -> Option<IpAddr> {
        if let Some(r) = self.v5() {
            return Some(IpAddr::V4(Ipv4Addr::from(r.srcaddr.get())));
        }
        self.addr(self.plan.src_ip)
    }
    #[inline]
    pub fn dst_ip(&self) -> Option<IpAddr> {
        if let Some(r) = self.v5() {
            return Some(IpAddr::V4(Ipv4Addr::from(r.dstaddr.get())));
        }
        self.addr(self.plan.dst_ip)
    }
    #[inline]
    pub fn next_hop(&self) -> Option<IpAddr> {
        if let Some(r) = self.v5() {
            return Some(IpAddr::V4(Ipv4Addr::from(r.nexthop.get())));
        }
        self.addr(self.plan.next_hop)
    }
    #[inline]
    pub fn src_port(&self) -> Option<u16> {
        if let Some(r) = self.v5() {
            return Some(r.srcport.get());
        }
        self.uint(self.plan.src_port).map(|v| v as u16)
    }
    #[inline]
    pub fn dst_port(&self) -> Option<u16> {
        if let Some(r) = self.v5() {
            return Some(r.dstport.get());
        }
        self.uint(self.plan.dst_port).map(|v| v as u16)
    }
    #[inline]
    pub fn protocol(&self) -> Option<u8> {
        if let Some(r) = self.v5() {
            return Some(r.prot);
        }
        self.uint(self.plan.protocol).map(|v| v as u8)
    }
    #[inline]
    pub fn in_bytes(&self) -> Option<u64> {
        if let Some(r) = self.v5() {
            return Some(u64::from(r.d_octets.get()));
        }
        self.uint(self.plan.in_bytes)
    }
    #[inline]
    pub fn in_pkts(&self) -> Option<u64> {
        if let Some(r) = self.v5() {
            return Some(u64::from(r.d_pkts.get()));
        }
        self.uint(self.plan.in_pkts)
    }
    /// TCP flags (IPFIX tcpControlBits is 16 bits wide; v5/v9 use the low 8).
    #[inline]
    pub fn tcp_flags(&self) -> Option<u16> {
        if let Some(r) = self.v5() {
            return Some(u16::from(r.tcp_flags));
        }
        self.uint(self.plan.tcp_flags).map(|v| v as u16)
    }
    #[inline]
    pub fn tos(&self) -> Option<u8> {
        if let Some(r) = self.v5() {
            return Some(r.tos);
        }
        self.uint(self.plan.tos).map(|v| v as u8)
    }
    #[inline]
    pub fn input_if(&self) -> Option<u32> {
        if let Some(r) = self.v5() {
            return Some(u32::from(r.input.get()));
        }
        self.uint(self.plan.input_if).map(|v| v as u32)
    }
    #[inline]
    pub fn output_if(&self) -> Option<u32> {
        if let Some(r) = self.v5() {
            return Some(u32::from(r.output.get()));
        }
        self.uint(self.plan.output_if).map(|v| v as u32)
    }
    #[inline]
    pub fn src_as(&self) -> Option<u32> {
        if let Some(r) = self.v5() {
            return Some(u32::from(r.src_as.get()));
        }
        self.uint(self.plan.src_as).map(|v| v as u32)
    }
    #[inline]
    pub fn dst_as(&self) -> Option<u32> {
        if let Some(r) = self.v5() {
            return Some(u32::from(r.dst_as.get()));
        }
        self.uint(self.plan.dst_as).map(|v| v as u32)
    }
    #[inline]
    pub fn src_mask(&self) -> Option<u8> {
        if let Some(r) = self.v5() {
            return Some(r.src_mask);
        }
        self.uint(self.plan.src_mask).map(|v| v as u8)
    }
    #[inline]
    pub fn dst_mask(&self) -> Option<u8> {
        if let Some(r) = self.v5() {
            return Some(r.dst_mask);
        }
        self.uint(self.plan.dst_mask).map(|v| v as u8)
    }
    /// flowDirection (61): 0 ingress, 1 egress.
    #[inline]
    pub fn direction(&self) -> Option<u8> {
        if self.v5().is_some() {
            return None;
        }
        self.uint(self.plan.direction).map(|v| v as u8)
    }
    /// IP version: the ipVersion field (60) when present, else from the source address's family.
    #[inline]
    pub fn ip_version(&self) -> Option<u8> {
        if self.v5().is_some() {
            return Some(4);
        }
        if let Some(v) = self.uint(self.plan.ip_version) {
            return Some(v as u8);
        }
        match self.src_ip_bytes().or_else(|| self.dst_ip_bytes())?.len() {
            4 => Some(4),
            _ => Some(6),
        }
    }
    #[inline]
    fn mac(&self, slot: Slot) -> Option<[u8; 6]> {
        self.field(slot).and_then(|b| <[u8; 6]>::try_from(b).ok())
    }

    /// bgpNextHopIPv4/IPv6Address (18/63).
    #[inline]
    pub fn bgp_next_hop(&self) -> Option<IpAddr> {
        self.addr(self.plan.bgp_next_hop)
    }
    /// ICMP type: icmpTypeIPv4/IPv6 (176/178), else from the type-and-code value.
    #[inline]
    pub fn icmp_type(&self) -> Option<u8> {
        if let Some(t) = self.uint(self.plan.icmp_type) {
            return Some(t as u8);
        }
        self.icmp_type_code().map(|tc| (tc >> 8) as u8)
    }
    /// ICMP code: icmpCodeIPv4/IPv6 (177/179), else from the type-and-code value.
    #[inline]
    pub fn icmp_code(&self) -> Option<u8> {
        if let Some(c) = self.uint(self.plan.icmp_code) {
            return Some(c as u8);
        }
        self.icmp_type_code().map(|tc| tc as u8)
    }
    /// type * 256 + code: icmpTypeCodeIPv4/IPv6 (32/139); else, for ICMP and ICMPv6 flows,
    /// the destination port, where v5 and most v9/IPFIX exporters put it.
    #[inline]
    fn icmp_type_code(&self) -> Option<u16> {
        if let Some(v) = self.uint(self.plan.icmp_type_code) {
            return Some(v as u16);
        }
        match self.protocol()? {
            1 | 58 => self.dst_port(),
            _ => None,
        }
    }
    /// vlanId / dot1qVlanId (58 / 243).
    #[inline]
    pub fn vlan(&self) -> Option<u16> {
        self.uint(self.plan.vlan).map(|v| v as u16)
    }
    /// postVlanId / postDot1qVlanId (59 / 254).
    #[inline]
    pub fn post_vlan(&self) -> Option<u16> {
        self.uint(self.plan.post_vlan).map(|v| v as u16)
    }
    /// sourceMacAddress (56), else postSourceMacAddress (81).
    #[inline]
    pub fn src_mac(&self) -> Option<[u8; 6]> {
        self.mac(self.plan.src_mac)
    }
    /// destinationMacAddress (80), else postDestinationMacAddress (57).
    #[inline]
    pub fn dst_mac(&self) -> Option<[u8; 6]> {
        self.mac(self.plan.dst_mac)
    }
    /// The top MPLS label (70): the 20-bit label of the first stack entry.
    #[inline]
    pub fn mpls_label(&self) -> Option<u32> {
        let b = self.field(self.plan.mpls_label)?;
        let [a, b, c, ..] = *b else { return None };
        Some((u32::from(a) << 12) | (u32::from(b) << 4) | (u32::from(c) >> 4))
    }
    /// postNATSourceIPv4/IPv6Address (225/281).
    #[inline]
    pub fn post_nat_src_ip(&self) -> Option<IpAddr> {
        self.addr(self.plan.post_nat_src_ip)
    }
    /// postNATDestinationIPv4/IPv6Address (226/282).
    #[inline]
    pub fn post_nat_dst_ip(&self) -> Option<IpAddr> {
        self.addr(self.plan.post_nat_dst_ip)
    }
    /// postNAPTSourceTransportPort (227).
    #[inline]
    pub fn post_nat_src_port(&self) -> Option<u16> {
        self.uint(self.plan.post_nat_src_port).map(|v| v as u16)
    }
    /// postNAPTDestinationTransportPort (228).
    #[inline]
    pub fn post_nat_dst_port(&self) -> Option<u16> {
        self.uint(self.plan.post_nat_dst_port).map(|v| v as u16)
    }
    /// ingressVRFID (234).
    #[inline]
    pub fn ingress_vrf(&self) -> Option<u32> {
        self.uint(self.plan.ingress_vrf).map(|v| v as u32)
    }
    /// egressVRFID (235).
    #[inline]
    pub fn egress_vrf(&self) -> Option<u32> {
        self.uint(self.plan.egress_vrf).map(|v| v as u32)
    }
    /// flowEndReason (136): 1 idle timeout, 2 active timeout, 3 end of flow, 4 forced end,
    /// 5 lack of resources.
    #[inline]
    pub fn flow_end_reason(&self) -> Option<u8> {
        self.uint(self.plan.flow_end_reason).map(|v| v as u8)
    }
    /// forwardingStatus (89), its low 8 bits: status in the top 2 (1 forwarded, 2 dropped,
    /// 3 consumed), reason code below.
    #[inline]
    pub fn forwarding_status(&self) -> Option<u8> {
        self.uint(self.plan.forwarding_status).map(|v| v as u8)
    }
    /// ethernetType (256), else derived from the IP version (0x0800 / 0x86dd), as goflow2
    /// reports it.
    #[inline]
    pub fn etype(&self) -> Option<u16> {
        if let Some(e) = self.uint(self.plan.etype) {
            return Some(e as u16);
        }
        match self.ip_version()? {
            4 => Some(0x0800),
            6 => Some(0x86dd),
            _ => None,
        }
    }
    /// Responder / reverse-direction bytes: NSEL responderOctets (232), RFC 5103 reverse
    /// octetDeltaCount, or OUT_BYTES (23) when the forward counter is another element.
    #[inline]
    pub fn out_bytes(&self) -> Option<u64> {
        self.uint(self.plan.out_bytes)
    }
    /// Responder / reverse-direction packets (299, RFC 5103, OUT_PKTS 24).
    #[inline]
    pub fn out_pkts(&self) -> Option<u64> {
        self.uint(self.plan.out_pkts)
    }
    /// firewallEvent (233) / NSEL NF_F_FW_EVENT (40005): 1 created, 2 deleted (teardown),
    /// 3 denied, 4 alert, 5 update.
    #[inline]
    pub fn fw_event(&self) -> Option<u8> {
        self.uint(self.plan.fw_event).map(|v| v as u8)
    }
    /// connectionId / NSEL NF_F_CONN_ID (148).
    #[inline]
    pub fn connection_id(&self) -> Option<u64> {
        self.uint(self.plan.connection_id)
    }
    /// Start of the flow as an absolute time; falls back to the export time.
    #[inline]
    pub fn first_switched(&self) -> UnixMicros {
        if let Some(r) = self.v5() {
            return self.uptime_to_unix(r.first.get());
        }
        self.time(self.plan.first_switched, self.plan.first_kind)
    }
    /// End of the flow as an absolute time; falls back to the export time.
    #[inline]
    pub fn last_switched(&self) -> UnixMicros {
        if let Some(r) = self.v5() {
            return self.uptime_to_unix(r.last.get());
        }
        self.time(self.plan.last_switched, self.plan.last_kind)
    }

    /// v5/v9 sysUpTime milliseconds as Unix time: the header's sysUpTime and export time anchor
    /// the boot. Wrapping u32 arithmetic read as i32, so a time a few ms after sysUpTime (or
    /// across the 49.7-day uptime wrap) stays a few ms away rather than 49 days.
    #[inline(always)]
    fn uptime_to_unix(&self, uptime_ms: u32) -> UnixMicros {
        let behind_ms = self.ctx.sys_uptime_ms.wrapping_sub(uptime_ms) as i32;
        self.ctx.export_time_us - i64::from(behind_ms) * 1000
    }

    #[inline(always)]
    fn time(&self, slot: Slot, kind: TimeKind) -> UnixMicros {
        let export = self.ctx.export_time_us;
        let Some(raw) = self.uint(slot) else {
            return export;
        };
        match kind {
            TimeKind::Absent => export,
            TimeKind::UptimeMs if self.ctx.version == 10 => {
                // IPFIX 21/22: milliseconds since systemInitTimeMilliseconds (160), from the
                // record itself or from options data. Without it there is no anchor: export time.
                match self.uint(self.plan.system_init).or(self.ctx.system_init_ms) {
                    Some(init_ms) => (init_ms as i64)
                        .wrapping_add(raw as i64)
                        .saturating_mul(1000),
                    None => export,
                }
            }
            TimeKind::UptimeMs => self.uptime_to_unix(raw as u32),
            TimeKind::UnixSecs => (raw as i64).saturating_mul(1_000_000),
            TimeKind::UnixMs => (raw as i64).saturating_mul(1000),
            TimeKind::NtpMicros | TimeKind::NtpNanos => ntp_to_unix_us(raw),
            TimeKind::DeltaMicros => export.saturating_sub(i64::try_from(raw).unwrap_or(i64::MAX)),
        }
    }
}

/// Seconds between the NTP epoch (1900-01-01) and the Unix epoch.
const NTP_UNIX_OFFSET_SECS: i64 = 2_208_988_800;

/// An NTP timestamp (32-bit seconds since 1900, 32-bit fraction) as Unix microseconds.
#[inline]
fn ntp_to_unix_us(raw: u64) -> UnixMicros {
    let secs = (raw >> 32) as i64 - NTP_UNIX_OFFSET_SECS;
    let frac_us = ((raw & 0xffff_ffff) * 1_000_000) >> 32;
    secs * 1_000_000 + frac_us as i64
}

/// Big-endian unsigned integer of any length; bytes beyond the low 8 are ignored. The common
/// widths take one load each.
#[inline]
pub(crate) fn be_uint(b: &[u8]) -> u64 {
    match *b {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => b
            .iter()
            .skip(b.len().saturating_sub(8))
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
    }
}

/// The unsigned integer at `slot` of `rec`, if present and inside the record.
#[inline]
pub(crate) fn read_uint(rec: &[u8], slot: Slot) -> Option<u64> {
    if slot.len == 0 {
        return None;
    }
    let start = usize::from(slot.offset);
    rec.get(start..start + usize::from(slot.len)).map(be_uint)
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

    /// A plan with first ending at byte 8 and last ending at byte 16 (`len` bytes each).
    fn time_plan(kind: TimeKind, len: u16) -> Plan {
        Plan {
            first_switched: Slot::new(8 - len, len),
            first_kind: kind,
            last_switched: Slot::new(16 - len, len),
            last_kind: kind,
            ..Plan::default()
        }
    }

    fn rec(first: u64, last: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[8 - len..8].copy_from_slice(&first.to_be_bytes()[8 - len..]);
        b[16 - len..16].copy_from_slice(&last.to_be_bytes()[8 - len..]);
        b
    }

    const EXPORT_S: i64 = 1_700_000_000;
    const EXPORT_US: i64 = EXPORT_S * 1_000_000;

    #[test]
    fn v9_uptime_before_header() {
        // sysUpTime 1 h; the flow ran from 10 s to 2 s before the export.
        let plan = time_plan(TimeKind::UptimeMs, 4);
        let c = ctx(9, EXPORT_S, 3_600_000);
        let b = rec(3_590_000, 3_598_000, 4);
        let r = FlowRecord::new(&b[..], &plan, &c, Sampling::default());
        assert_eq!(r.first_switched(), EXPORT_US - 10_000_000);
        assert_eq!(r.last_switched(), EXPORT_US - 2_000_000);
    }

    #[test]
    fn ipfix_uptime_with_system_init_from_record_or_options() {
        // Boot at EXPORT - 1 h (Unix ms); flow at +100 s and +200 s of uptime.
        let boot_ms = (EXPORT_S as u64 - 3600) * 1000;
        let mut plan = time_plan(TimeKind::UptimeMs, 4);
        let b = rec(100_000, 200_000, 4);
        // From options data (the packet context).
        let mut c = ctx(10, EXPORT_S, 0);
        c.system_init_ms = Some(boot_ms);
        let r = FlowRecord::new(&b[..], &plan, &c, Sampling::default());
        assert_eq!(r.first_switched(), (boot_ms as i64 + 100_000) * 1000);
        assert_eq!(r.last_switched(), (boot_ms as i64 + 200_000) * 1000);
        // From the record itself (160 at bytes 16..24), which wins over options data.
        let mut b2 = b.clone();
        b2.extend_from_slice(&(boot_ms + 1000).to_be_bytes());
        plan.system_init = Slot::new(16, 8);
        let r = FlowRecord::new(&b2[..], &plan, &c, Sampling::default());
        assert_eq!(r.first_switched(), (boot_ms as i64 + 101_000) * 1000);
        // Without any systemInitTime: the export time, not a guess.
        plan.system_init = Slot::ABSENT;
        let c = ctx(10, EXPORT_S, 0);
        let r = FlowRecord::new(&b[..], &plan, &c, Sampling::default());
        assert_eq!(r.first_switched(), EXPORT_US);
        assert_eq!(r.last_switched(), EXPORT_US);
    }

    #[test]
    fn ipfix_absolute_forms() {
        let c = ctx(10, EXPORT_S, 0);
        let secs = time_plan(TimeKind::UnixSecs, 4);
        let b = rec(EXPORT_S as u64 - 5, EXPORT_S as u64 - 1, 4);
        let r = FlowRecord::new(&b[..], &secs, &c, Sampling::default());
        assert_eq!(
            (r.first_switched(), r.last_switched()),
            (EXPORT_US - 5_000_000, EXPORT_US - 1_000_000)
        );
        let ms = time_plan(TimeKind::UnixMs, 8);
        let b = rec(EXPORT_S as u64 * 1000 - 1500, EXPORT_S as u64 * 1000 - 1, 8);
        let r = FlowRecord::new(&b[..], &ms, &c, Sampling::default());
        assert_eq!(
            (r.first_switched(), r.last_switched()),
            (EXPORT_US - 1_500_000, EXPORT_US - 1000)
        );
        // NTP: 0.25 s (micro form) and 0.75 s (nano form) past EXPORT - 3 s.
        let ntp_s = (EXPORT_S - 3 + NTP_UNIX_OFFSET_SECS) as u64;
        for kind in [TimeKind::NtpMicros, TimeKind::NtpNanos] {
            let p = time_plan(kind, 8);
            let b = rec((ntp_s << 32) | 0x4000_0000, (ntp_s << 32) | 0xc000_0000, 8);
            let r = FlowRecord::new(&b[..], &p, &c, Sampling::default());
            assert_eq!(r.first_switched(), EXPORT_US - 3_000_000 + 250_000);
            assert_eq!(r.last_switched(), EXPORT_US - 3_000_000 + 750_000);
        }
    }

    #[test]
    fn ipfix_delta_microseconds_count_back_from_export() {
        let c = ctx(10, EXPORT_S, 0);
        let p = time_plan(TimeKind::DeltaMicros, 4);
        let b = rec(2_500_000, 500_000, 4);
        let r = FlowRecord::new(&b[..], &p, &c, Sampling::default());
        assert_eq!(r.first_switched(), EXPORT_US - 2_500_000);
        assert_eq!(r.last_switched(), EXPORT_US - 500_000);
        // A hostile 8-byte delta saturates instead of overflowing.
        let p = time_plan(TimeKind::DeltaMicros, 8);
        let b = rec(u64::MAX, 0, 8);
        let r = FlowRecord::new(&b[..], &p, &c, Sampling::default());
        assert_eq!(r.first_switched(), EXPORT_US - i64::MAX);
    }

    #[test]
    fn absent_times_fall_back_to_export_time() {
        let c = ctx(9, EXPORT_S, 1000);
        let r = FlowRecord::new(&[1, 2, 3], &Plan::EMPTY, &c, Sampling::default());
        assert_eq!(
            (r.first_switched(), r.last_switched()),
            (EXPORT_US, EXPORT_US)
        );
    }

    #[test]
    fn uint_reads_every_width_and_position() {
        // Fields of 1..=8 bytes at offsets 0..=9 of a 20-byte record: both read paths.
        let bytes: Vec<u8> = (1..=20).collect();
        let c = ctx(9, 0, 0);
        for off in 0..10u16 {
            for len in 1..=8u16 {
                let plan = Plan {
                    in_bytes: Slot::new(off, len),
                    ..Plan::default()
                };
                let r = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
                let want = be_uint(&bytes[off as usize..(off + len) as usize]);
                assert_eq!(r.in_bytes(), Some(want), "offset {off} len {len}");
            }
        }
        // 16-byte field: the low 8 bytes.
        let plan = Plan {
            in_bytes: Slot::new(0, 16),
            ..Plan::default()
        };
        let r = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        assert_eq!(
            r.in_bytes(),
            Some(u64::from_be_bytes([9, 10, 11, 12, 13, 14, 15, 16]))
        );
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

    #[test]
    fn v5_fast_path_reads_what_the_plan_says() {
        // A 48-byte v5 record with a distinct value in every byte; the static V5_PLAN takes the
        // fixed-offset path, a copy of it the slot walk: every accessor must agree.
        let bytes: Vec<u8> = (0..48u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let c = ctx(5, 1_700_000_000, 0x8000_0000);
        let copy = V5_PLAN;
        let fast = FlowRecord::new(&bytes, &V5_PLAN, &c, Sampling::default());
        let slow = FlowRecord::new(&bytes, &copy, &c, Sampling::default());
        assert!(fast.v5().is_some() && slow.v5().is_none());
        let all = |r: &FlowRecord<'_>| {
            format!(
                "{:?}",
                (
                    (
                        r.src_ip(),
                        r.dst_ip(),
                        r.next_hop(),
                        r.src_ip_bytes(),
                        r.dst_ip_bytes()
                    ),
                    (
                        r.src_port(),
                        r.dst_port(),
                        r.protocol(),
                        r.in_bytes(),
                        r.in_pkts()
                    ),
                    (
                        r.tcp_flags(),
                        r.tos(),
                        r.input_if(),
                        r.output_if(),
                        r.src_as()
                    ),
                    (
                        r.dst_as(),
                        r.src_mask(),
                        r.dst_mask(),
                        r.direction(),
                        r.ip_version()
                    ),
                    (r.first_switched(), r.last_switched()),
                )
            )
        };
        assert_eq!(all(&fast), all(&slow));
    }
}
