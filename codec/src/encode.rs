//! Packet builders for NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011): the other half of
//! the codec, used by round-trip tests, criterion benches, fuzz seeds and `goflow bench`.
//!
//! A [`Flow`] is a plain value (addresses, ports, counters, times, ...). [`V5Builder`] packs up
//! to 30 of them into a v5 datagram; [`V9Builder`] and [`IpfixBuilder`] build messages of
//! template sets, options template sets, data sets encoded through a template's field list,
//! options data, raw sets and (IPFIX) template withdrawals. Set and message lengths are written
//! as placeholders and back-patched when the set is closed or the message finished. Sequence
//! numbers and export times are the caller's: the builders only write what they are given.
//!
//! No builder panics on what a caller passes: anything the wire format cannot carry (a 31st v5
//! record, a template id below 256, a field longer than a message, a message past its maximum
//! length) is an [`EncodeError`], and the builder is left as it was before the call.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length value that marks an IPFIX field as variable-length (RFC 7011 section 7).
pub const VARIABLE_LENGTH: u16 = 65_535;

/// Largest UDP payload over IPv4: the default maximum message length.
pub const UDP_PAYLOAD_MAX_BYTES: usize = 65_507;

const V5_HEADER_BYTES: usize = 24;
const V5_RECORD_BYTES: usize = 48;
const V5_RECORDS_MAX: usize = 30;
const V9_HEADER_BYTES: usize = 20;
const IPFIX_HEADER_BYTES: usize = 16;
const SET_HEADER_BYTES: usize = 4;

/// v9 flowset ids (RFC 3954 section 5.2).
const V9_TEMPLATE_SET: u16 = 0;
const V9_OPTIONS_TEMPLATE_SET: u16 = 1;
/// IPFIX set ids (RFC 7011 section 3.3.2).
const IPFIX_TEMPLATE_SET: u16 = 2;
const IPFIX_OPTIONS_TEMPLATE_SET: u16 = 3;
/// The smallest template id a data set may refer to.
pub const TEMPLATE_ID_MIN: u16 = 256;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Why a builder refused a call. The builder is unchanged after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message would exceed its maximum length (or v5's 30 records): finish it and start
    /// the next one.
    Full,
    /// A template id below 256 (or 65535 fields, a v9 count past 65535, ...).
    BadTemplate { what: &'static str },
    /// The format cannot carry what was asked (variable-length or enterprise fields in v9, a
    /// value count that does not match the fields).
    Unsupported { what: &'static str },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Full => write!(f, "message full"),
            EncodeError::BadTemplate { what } => write!(f, "bad template: {what}"),
            EncodeError::Unsupported { what } => write!(f, "unsupported: {what}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// One field of a template: information element id, length in bytes ([`VARIABLE_LENGTH`] for a
/// variable-length IPFIX field) and, for IPFIX enterprise-specific elements, the private
/// enterprise number. In v9 options templates the scope fields use the same struct (id = scope
/// type: 1 system, 2 interface, 3 line card, 4 cache, 5 template).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub id: u16,
    pub len: u16,
    pub enterprise: Option<u32>,
}

impl FieldSpec {
    pub const fn new(id: u16, len: u16) -> FieldSpec {
        FieldSpec {
            id,
            len,
            enterprise: None,
        }
    }

    /// An enterprise-specific (IPFIX) field.
    pub const fn enterprise(id: u16, len: u16, pen: u32) -> FieldSpec {
        FieldSpec {
            id,
            len,
            enterprise: Some(pen),
        }
    }

    /// Bytes of this field's entry in a template record.
    fn template_bytes(&self) -> usize {
        if self.enterprise.is_some() { 8 } else { 4 }
    }
}

const fn f(id: u16, len: u16) -> FieldSpec {
    FieldSpec::new(id, len)
}

/// A typical IPv4 template of a Cisco or Juniper router (v9; also valid IPFIX): addresses,
/// ports, protocol, TCP flags, ToS, 8-byte byte and packet counters, interfaces, AS numbers,
/// masks, next hop, last/first switched as sysUpTime milliseconds. 61 bytes per record.
pub const TYPICAL_V4_TEMPLATE: &[FieldSpec] = &[
    f(8, 4),  // sourceIPv4Address
    f(12, 4), // destinationIPv4Address
    f(7, 2),  // sourceTransportPort
    f(11, 2), // destinationTransportPort
    f(4, 1),  // protocolIdentifier
    f(6, 1),  // tcpControlBits
    f(5, 1),  // ipClassOfService
    f(1, 8),  // octetDeltaCount
    f(2, 8),  // packetDeltaCount
    f(10, 4), // ingressInterface
    f(14, 4), // egressInterface
    f(16, 4), // bgpSourceAsNumber
    f(17, 4), // bgpDestinationAsNumber
    f(9, 1),  // sourceIPv4PrefixLength
    f(13, 1), // destinationIPv4PrefixLength
    f(15, 4), // ipNextHopIPv4Address
    f(21, 4), // flowEndSysUpTime (LAST_SWITCHED)
    f(22, 4), // flowStartSysUpTime (FIRST_SWITCHED)
];

/// The IPv6 counterpart of [`TYPICAL_V4_TEMPLATE`], with flowDirection. 98 bytes per record.
pub const TYPICAL_V6_TEMPLATE: &[FieldSpec] = &[
    f(27, 16), // sourceIPv6Address
    f(28, 16), // destinationIPv6Address
    f(62, 16), // ipNextHopIPv6Address
    f(29, 1),  // sourceIPv6PrefixLength
    f(30, 1),  // destinationIPv6PrefixLength
    f(7, 2),
    f(11, 2),
    f(4, 1),
    f(6, 1),
    f(5, 1),
    f(1, 8),
    f(2, 8),
    f(10, 4),
    f(14, 4),
    f(16, 4),
    f(17, 4),
    f(61, 1), // flowDirection
    f(21, 4),
    f(22, 4),
];

/// [`TYPICAL_V4_TEMPLATE`] with absolute times as IPFIX exporters send them:
/// flowStartMilliseconds (152) and flowEndMilliseconds (153). 69 bytes per record.
pub const IPFIX_TYPICAL_V4_TEMPLATE: &[FieldSpec] = &[
    f(8, 4),
    f(12, 4),
    f(7, 2),
    f(11, 2),
    f(4, 1),
    f(6, 1),
    f(5, 1),
    f(1, 8),
    f(2, 8),
    f(10, 4),
    f(14, 4),
    f(16, 4),
    f(17, 4),
    f(9, 1),
    f(13, 1),
    f(15, 4),
    f(152, 8), // flowStartMilliseconds
    f(153, 8), // flowEndMilliseconds
];

/// [`TYPICAL_V6_TEMPLATE`] with flowStart/EndMilliseconds. 106 bytes per record.
pub const IPFIX_TYPICAL_V6_TEMPLATE: &[FieldSpec] = &[
    f(27, 16),
    f(28, 16),
    f(62, 16),
    f(29, 1),
    f(30, 1),
    f(7, 2),
    f(11, 2),
    f(4, 1),
    f(6, 1),
    f(5, 1),
    f(1, 8),
    f(2, 8),
    f(10, 4),
    f(14, 4),
    f(16, 4),
    f(17, 4),
    f(61, 1),
    f(152, 8),
    f(153, 8),
];

/// Bytes of one data record of a fixed-length template (`None` if any field is variable-length).
pub fn record_len(fields: &[FieldSpec]) -> Option<usize> {
    fields.iter().try_fold(0usize, |acc, f| {
        (f.len != VARIABLE_LENGTH).then_some(acc + usize::from(f.len))
    })
}

/// One flow as an exporter would report it. Every builder reads the fields its format or
/// template carries and ignores the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub next_hop: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub tos: u8,
    /// Byte counter (v5 keeps 32 bits and saturates).
    pub bytes: u64,
    /// Packet counter (v5 keeps 32 bits and saturates).
    pub packets: u64,
    pub input_if: u32,
    pub output_if: u32,
    pub src_as: u32,
    pub dst_as: u32,
    pub src_mask: u8,
    pub dst_mask: u8,
    /// flowDirection (61): 0 ingress, 1 egress.
    pub direction: u8,
    /// First/last packet as the exporter's sysUpTime in milliseconds (v5, v9/IPFIX 21/22).
    pub first_uptime_ms: u32,
    pub last_uptime_ms: u32,
    /// First/last packet as Unix milliseconds (IPFIX 150-157).
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    /// The exporter's boot time as Unix milliseconds (IPFIX systemInitTimeMilliseconds, 160).
    pub system_init_ms: u64,
    /// samplerId / selectorId (48 / 302).
    pub sampler_id: u32,
    /// samplingInterval / samplerRandomInterval (34 / 50) when a template carries it.
    pub sampling_interval: u32,
    /// Bytes of filler written for every variable-length field (IPFIX) and every field goflow
    /// does not know (those get zeros of the template's length instead when fixed-length).
    pub var_len: u16,
    /// bgpNextHopIPv4/IPv6Address (18/63).
    pub bgp_next_hop: IpAddr,
    /// sourceMacAddress / postSourceMacAddress (56/81).
    pub src_mac: [u8; 6],
    /// destinationMacAddress / postDestinationMacAddress (80/57).
    pub dst_mac: [u8; 6],
    /// vlanId / dot1qVlanId (58/243).
    pub vlan: u16,
    /// postVlanId / postDot1qVlanId (59/254).
    pub post_vlan: u16,
    /// Top MPLS label (70), written as one bottom-of-stack entry.
    pub mpls_label: u32,
    /// postNATSource/DestinationIPv4/IPv6Address (225/281, 226/282).
    pub post_nat_src_ip: IpAddr,
    pub post_nat_dst_ip: IpAddr,
    /// postNAPTSource/DestinationTransportPort (227/228).
    pub post_nat_src_port: u16,
    pub post_nat_dst_port: u16,
    /// ingressVRFID / egressVRFID (234/235).
    pub ingress_vrf: u32,
    pub egress_vrf: u32,
    /// flowEndReason (136).
    pub flow_end_reason: u8,
    /// forwardingStatus (89).
    pub forwarding_status: u8,
    /// ICMP type and code (32/139 as type * 256 + code, 176-179 separately).
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Responder counters: responderOctets/Packets (232/299), OUT_BYTES/OUT_PKTS (23/24).
    pub out_bytes: u64,
    pub out_pkts: u64,
    /// firewallEvent / NSEL NF_F_FW_EVENT (233/40005).
    pub fw_event: u8,
    /// connectionId / NSEL NF_F_CONN_ID (148).
    pub connection_id: u64,
}

impl Default for Flow {
    fn default() -> Self {
        let zero = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Flow {
            src_ip: zero,
            dst_ip: zero,
            next_hop: zero,
            src_port: 0,
            dst_port: 0,
            protocol: 0,
            tcp_flags: 0,
            tos: 0,
            bytes: 0,
            packets: 0,
            input_if: 0,
            output_if: 0,
            src_as: 0,
            dst_as: 0,
            src_mask: 0,
            dst_mask: 0,
            direction: 0,
            first_uptime_ms: 0,
            last_uptime_ms: 0,
            first_unix_ms: 0,
            last_unix_ms: 0,
            system_init_ms: 0,
            sampler_id: 0,
            sampling_interval: 0,
            var_len: 0,
            bgp_next_hop: zero,
            src_mac: [0; 6],
            dst_mac: [0; 6],
            vlan: 0,
            post_vlan: 0,
            mpls_label: 0,
            post_nat_src_ip: zero,
            post_nat_dst_ip: zero,
            post_nat_src_port: 0,
            post_nat_dst_port: 0,
            ingress_vrf: 0,
            egress_vrf: 0,
            flow_end_reason: 0,
            forwarding_status: 0,
            icmp_type: 0,
            icmp_code: 0,
            out_bytes: 0,
            out_pkts: 0,
            fw_event: 0,
            connection_id: 0,
        }
    }
}

impl Flow {
    /// Sets both time forms from Unix milliseconds and the exporter's boot time (Unix ms):
    /// the uptime forms are `unix - boot`, in wrapping 32-bit milliseconds as on the wire.
    pub fn set_times(&mut self, boot_unix_ms: u64, first_unix_ms: u64, last_unix_ms: u64) {
        self.system_init_ms = boot_unix_ms;
        self.first_unix_ms = first_unix_ms;
        self.last_unix_ms = last_unix_ms;
        self.first_uptime_ms = first_unix_ms.wrapping_sub(boot_unix_ms) as u32;
        self.last_uptime_ms = last_unix_ms.wrapping_sub(boot_unix_ms) as u32;
    }
}

/// Writes `v` as a big-endian unsigned integer filling `dst` (IPFIX reduced-size encoding); a
/// value that does not fit saturates, a field longer than 8 bytes gets leading zeros.
#[inline(always)]
fn put_uint(dst: &mut [u8], v: u64) {
    // The common widths get fixed-size copies (no memcpy call per field).
    match dst {
        [b] => *b = v.min(0xff) as u8,
        [_, _] => dst.copy_from_slice(&(v.min(0xffff) as u16).to_be_bytes()),
        [_, _, _, _] => dst.copy_from_slice(&(v.min(0xffff_ffff) as u32).to_be_bytes()),
        [_, _, _, _, _, _, _, _] => dst.copy_from_slice(&v.to_be_bytes()),
        _ => put_uint_any(dst, v),
    }
}

fn put_uint_any(dst: &mut [u8], v: u64) {
    let len = dst.len();
    if len >= 8 {
        let (zeros, tail) = dst.split_at_mut(len - 8);
        zeros.fill(0);
        tail.copy_from_slice(&v.to_be_bytes());
    } else {
        let max = if len == 0 {
            0
        } else {
            u64::MAX >> (64 - 8 * len)
        };
        dst.copy_from_slice(&v.min(max).to_be_bytes()[8 - len..]);
    }
}

/// Writes an address into `dst`: exact for 4-byte v4 and 16-byte v6 fields, zeros for the
/// other family (as exporters with both families in one template fill the unused one).
#[inline]
fn put_addr(dst: &mut [u8], a: IpAddr) {
    match (a, dst.len()) {
        (IpAddr::V4(v4), 4) => dst.copy_from_slice(&v4.octets()),
        (IpAddr::V6(v6), 16) => dst.copy_from_slice(&v6.octets()),
        _ => dst.fill(0),
    }
}

/// Writes a MAC address into a 6-byte field, zeros otherwise.
fn put_mac(dst: &mut [u8], mac: [u8; 6]) {
    if let Ok(d) = <&mut [u8; 6]>::try_from(dst) {
        *d = mac;
    }
}

fn ntp(unix_ms: u64, nanos: bool) -> u64 {
    let secs = (unix_ms / 1000).wrapping_add(NTP_UNIX_OFFSET_SECS) & 0xffff_ffff;
    let frac = ((unix_ms % 1000) << 32) / 1000;
    // dateTimeMicroseconds leaves the low 11 bits of the fraction zero (RFC 7011 section 6.1.9).
    let frac = if nanos { frac } else { frac & !0x7ff };
    secs << 32 | frac
}

/// Writes one fixed-length field of `flow` as `spec` describes it into `out` (the field's
/// bytes); `export_secs` anchors the delta-time forms.
#[inline]
fn put_field(out: &mut [u8], flow: &Flow, spec: &FieldSpec, export_secs: u32) {
    if spec.enterprise.is_some() {
        out.fill(0);
        return;
    }
    let uint = |out: &mut [u8], v: u64| put_uint(out, v);
    match spec.id {
        1 => uint(out, flow.bytes),
        2 => uint(out, flow.packets),
        4 => uint(out, flow.protocol.into()),
        5 => uint(out, flow.tos.into()),
        6 => uint(out, flow.tcp_flags.into()),
        7 => uint(out, flow.src_port.into()),
        8 | 27 => put_addr(out, flow.src_ip),
        9 | 29 => uint(out, flow.src_mask.into()),
        10 => uint(out, flow.input_if.into()),
        11 => uint(out, flow.dst_port.into()),
        12 | 28 => put_addr(out, flow.dst_ip),
        13 | 30 => uint(out, flow.dst_mask.into()),
        14 => uint(out, flow.output_if.into()),
        15 | 62 => put_addr(out, flow.next_hop),
        16 => uint(out, flow.src_as.into()),
        17 => uint(out, flow.dst_as.into()),
        18 | 63 => put_addr(out, flow.bgp_next_hop),
        21 => uint(out, flow.last_uptime_ms.into()),
        22 => uint(out, flow.first_uptime_ms.into()),
        23 | 232 => uint(out, flow.out_bytes),
        24 | 299 => uint(out, flow.out_pkts),
        231 => uint(out, flow.bytes),
        298 => uint(out, flow.packets),
        32 | 139 => uint(
            out,
            u64::from(flow.icmp_type) << 8 | u64::from(flow.icmp_code),
        ),
        176 | 178 => uint(out, flow.icmp_type.into()),
        177 | 179 => uint(out, flow.icmp_code.into()),
        56 | 81 => put_mac(out, flow.src_mac),
        80 | 57 => put_mac(out, flow.dst_mac),
        58 | 243 => uint(out, flow.vlan.into()),
        59 | 254 => uint(out, flow.post_vlan.into()),
        70 => {
            // One label stack entry: label (20 bits), EXP 0, bottom of stack; TTL omitted.
            let entry = u64::from(flow.mpls_label & 0xf_ffff) << 4 | 1;
            if let Some(head) = out.get_mut(..3) {
                put_uint(head, entry);
            }
            out.get_mut(3..).into_iter().for_each(|t| t.fill(0));
        }
        89 => uint(out, flow.forwarding_status.into()),
        136 => uint(out, flow.flow_end_reason.into()),
        148 => uint(out, flow.connection_id),
        225 | 281 => put_addr(out, flow.post_nat_src_ip),
        226 | 282 => put_addr(out, flow.post_nat_dst_ip),
        227 => uint(out, flow.post_nat_src_port.into()),
        228 => uint(out, flow.post_nat_dst_port.into()),
        233 | 40005 => uint(out, flow.fw_event.into()),
        234 => uint(out, flow.ingress_vrf.into()),
        235 => uint(out, flow.egress_vrf.into()),
        256 => uint(
            out,
            if flow.src_ip.is_ipv4() {
                0x0800
            } else {
                0x86dd
            },
        ),
        323 => uint(out, flow.last_unix_ms),
        34 | 50 => uint(out, flow.sampling_interval.into()),
        48 | 302 => uint(out, flow.sampler_id.into()),
        60 => uint(out, if flow.src_ip.is_ipv4() { 4 } else { 6 }),
        61 => uint(out, flow.direction.into()),
        150 => uint(out, flow.first_unix_ms / 1000),
        151 => uint(out, flow.last_unix_ms / 1000),
        152 => uint(out, flow.first_unix_ms),
        153 => uint(out, flow.last_unix_ms),
        154 => uint(out, ntp(flow.first_unix_ms, false)),
        155 => uint(out, ntp(flow.last_unix_ms, false)),
        156 => uint(out, ntp(flow.first_unix_ms, true)),
        157 => uint(out, ntp(flow.last_unix_ms, true)),
        158 | 159 => {
            let t = if spec.id == 158 {
                flow.first_unix_ms
            } else {
                flow.last_unix_ms
            };
            let export_us = u64::from(export_secs) * 1_000_000;
            uint(out, export_us.saturating_sub(t.saturating_mul(1000)));
        }
        160 => uint(out, flow.system_init_ms),
        _ => out.fill(0),
    }
}

/// Writes a variable-length IPFIX value's length prefix into the front of `dst` and returns
/// the rest: one byte below 255, else 255 and two bytes (RFC 7011 section 7). `long` forces the
/// 3-byte form.
fn put_var_prefix(dst: &mut [u8], n: u16, long: bool) -> &mut [u8] {
    let [hi, lo] = n.to_be_bytes();
    let (long_form, short_form) = ([255, hi, lo], [n as u8]);
    let prefix: &[u8] = if n < 255 && !long {
        &short_form
    } else {
        &long_form
    };
    if dst.len() < prefix.len() {
        return dst; // cannot happen: the caller sized the record with the prefix
    }
    let (head, rest) = dst.split_at_mut(prefix.len());
    head.copy_from_slice(prefix);
    rest
}

fn var_prefix_len(n: u16, long: bool) -> usize {
    if n < 255 && !long { 1 } else { 3 }
}

/// Filler for variable-length values: a recognisable, non-zero pattern.
fn put_filler(dst: &mut [u8]) {
    for (i, b) in dst.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
}

fn patch_u16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(dst) = buf.get_mut(at..at + 2) {
        dst.copy_from_slice(&v.to_be_bytes());
    }
}

/// The ready-made templates, recognised by content so their records are written straight
/// through (the load generator's hot path: a per-field dispatch costs more than the bytes).
/// The bytes are exactly what the generic per-field walk writes; a unit test checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Typical {
    V4,
    V6,
    IpfixV4,
    IpfixV6,
}

/// A cursor writing fixed-size values into a record of known length.
struct Put<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Put<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&mut self, v: [u8; N]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + N) {
            dst.copy_from_slice(&v);
        }
        self.at += N;
    }
    #[inline(always)]
    fn u8(&mut self, v: u8) {
        self.bytes([v]);
    }
    #[inline(always)]
    fn u16(&mut self, v: u16) {
        self.bytes(v.to_be_bytes());
    }
    #[inline(always)]
    fn u32(&mut self, v: u32) {
        self.bytes(v.to_be_bytes());
    }
    #[inline(always)]
    fn u64(&mut self, v: u64) {
        self.bytes(v.to_be_bytes());
    }
    #[inline(always)]
    fn v4(&mut self, a: IpAddr) {
        self.bytes(match a {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(_) => [0; 4],
        });
    }
    #[inline(always)]
    fn v6(&mut self, a: IpAddr) {
        self.bytes(match a {
            IpAddr::V6(v6) => v6.octets(),
            IpAddr::V4(_) => [0; 16],
        });
    }
}

impl Typical {
    #[inline]
    fn of(fields: &[FieldSpec]) -> Option<Typical> {
        // The same slice as last time is the common case: compare addresses before contents.
        for (t, tmpl) in [
            (Typical::V4, TYPICAL_V4_TEMPLATE),
            (Typical::IpfixV4, IPFIX_TYPICAL_V4_TEMPLATE),
            (Typical::V6, TYPICAL_V6_TEMPLATE),
            (Typical::IpfixV6, IPFIX_TYPICAL_V6_TEMPLATE),
        ] {
            if std::ptr::eq(fields, tmpl) {
                return Some(t);
            }
        }
        // Cheap rejects first: length and the first field.
        match (fields.len(), fields.first().map(|f| f.id)) {
            (18, Some(8)) if fields == TYPICAL_V4_TEMPLATE => Some(Typical::V4),
            (18, Some(8)) if fields == IPFIX_TYPICAL_V4_TEMPLATE => Some(Typical::IpfixV4),
            (19, Some(27)) if fields == TYPICAL_V6_TEMPLATE => Some(Typical::V6),
            (19, Some(27)) if fields == IPFIX_TYPICAL_V6_TEMPLATE => Some(Typical::IpfixV6),
            _ => None,
        }
    }

    fn record_len(self) -> usize {
        match self {
            Typical::V4 => 61,
            Typical::IpfixV4 => 69,
            Typical::V6 => 98,
            Typical::IpfixV6 => 106,
        }
    }

    #[inline]
    fn put(self, buf: &mut [u8], fl: &Flow) {
        let mut p = Put { buf, at: 0 };
        let v6 = matches!(self, Typical::V6 | Typical::IpfixV6);
        if v6 {
            p.v6(fl.src_ip);
            p.v6(fl.dst_ip);
            p.v6(fl.next_hop);
            p.u8(fl.src_mask);
            p.u8(fl.dst_mask);
        } else {
            p.v4(fl.src_ip);
            p.v4(fl.dst_ip);
        }
        p.u16(fl.src_port);
        p.u16(fl.dst_port);
        p.u8(fl.protocol);
        p.u8(fl.tcp_flags);
        p.u8(fl.tos);
        p.u64(fl.bytes);
        p.u64(fl.packets);
        p.u32(fl.input_if);
        p.u32(fl.output_if);
        p.u32(fl.src_as);
        p.u32(fl.dst_as);
        if v6 {
            p.u8(fl.direction);
        } else {
            p.u8(fl.src_mask);
            p.u8(fl.dst_mask);
            p.v4(fl.next_hop);
        }
        match self {
            Typical::V4 | Typical::V6 => {
                p.u32(fl.last_uptime_ms);
                p.u32(fl.first_uptime_ms);
            }
            Typical::IpfixV4 | Typical::IpfixV6 => {
                p.u64(fl.first_unix_ms);
                p.u64(fl.last_unix_ms);
            }
        }
        debug_assert_eq!(p.at, self.record_len());
    }
}

// ---------------------------------------------------------------------------------------------
// NetFlow v5

/// NetFlow v5 header fields the caller chooses (version and count are the builder's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V5Header {
    pub sys_uptime_ms: u32,
    pub unix_secs: u32,
    pub unix_nsecs: u32,
    /// Sequence number of the first flow of this packet (v5 counts flows).
    pub flow_sequence: u32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// Raw field: top 2 bits sampling mode, low 14 bits the interval.
    pub sampling_interval: u16,
}

/// Builds NetFlow v5 datagrams of up to 30 records.
#[derive(Clone, Debug, Default)]
pub struct V5Builder {
    pub header: V5Header,
    records: Vec<u8>,
}

impl V5Builder {
    pub fn new(header: V5Header) -> Self {
        V5Builder {
            header,
            records: Vec::with_capacity(V5_RECORDS_MAX * V5_RECORD_BYTES),
        }
    }

    /// Records pushed since the last [`V5Builder::finish`].
    pub fn count(&self) -> usize {
        self.records.len() / V5_RECORD_BYTES
    }

    pub fn is_full(&self) -> bool {
        self.count() >= V5_RECORDS_MAX
    }

    /// Adds one record; [`EncodeError::Full`] past 30. Addresses that are not IPv4 are written
    /// as 0.0.0.0; counters above `u32::MAX` saturate.
    pub fn push(&mut self, flow: &Flow) -> Result<(), EncodeError> {
        if self.is_full() {
            return Err(EncodeError::Full);
        }
        let mut r = [0u8; V5_RECORD_BYTES];
        put_addr(&mut r[0..4], flow.src_ip);
        put_addr(&mut r[4..8], flow.dst_ip);
        put_addr(&mut r[8..12], flow.next_hop);
        put_uint(&mut r[12..14], flow.input_if.into());
        put_uint(&mut r[14..16], flow.output_if.into());
        put_uint(&mut r[16..20], flow.packets);
        put_uint(&mut r[20..24], flow.bytes);
        r[24..28].copy_from_slice(&flow.first_uptime_ms.to_be_bytes());
        r[28..32].copy_from_slice(&flow.last_uptime_ms.to_be_bytes());
        r[32..34].copy_from_slice(&flow.src_port.to_be_bytes());
        r[34..36].copy_from_slice(&flow.dst_port.to_be_bytes());
        r[36..40].copy_from_slice(&[0, flow.tcp_flags, flow.protocol, flow.tos]);
        put_uint(&mut r[40..42], flow.src_as.into());
        put_uint(&mut r[42..44], flow.dst_as.into());
        r[44..48].copy_from_slice(&[flow.src_mask, flow.dst_mask, 0, 0]);
        self.records.extend_from_slice(&r);
        Ok(())
    }

    /// Appends the datagram (header and the records pushed so far) to `out`, empties the
    /// builder (the header stays: the caller advances `flow_sequence`) and returns the bytes
    /// appended. A builder without records yields a header with count 0.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> usize {
        let h = &self.header;
        let count = self.count() as u16;
        out.reserve(V5_HEADER_BYTES + self.records.len());
        out.extend_from_slice(&5u16.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&h.sys_uptime_ms.to_be_bytes());
        out.extend_from_slice(&h.unix_secs.to_be_bytes());
        out.extend_from_slice(&h.unix_nsecs.to_be_bytes());
        out.extend_from_slice(&h.flow_sequence.to_be_bytes());
        out.extend_from_slice(&[h.engine_type, h.engine_id]);
        out.extend_from_slice(&h.sampling_interval.to_be_bytes());
        out.extend_from_slice(&self.records);
        self.records.clear();
        V5_HEADER_BYTES + usize::from(count) * V5_RECORD_BYTES
    }
}

// ---------------------------------------------------------------------------------------------
// The message body both v9 and IPFIX share: sets with back-patched lengths.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpenSet {
    /// Offset of the set header in `buf`.
    start: usize,
    id: u16,
}

#[derive(Clone, Debug)]
struct Body {
    /// Header placeholder followed by the sets.
    buf: Vec<u8>,
    header_len: usize,
    open: Option<OpenSet>,
    /// Pad every set to a multiple of 4 bytes.
    padding: bool,
    max_len: usize,
    /// Template, options template and data records (v9's header count).
    records: u32,
    /// Data records only (IPFIX sequence numbers count these).
    data_records: u32,
}

impl Body {
    fn new(header_len: usize, padding: bool) -> Self {
        Body {
            buf: vec![0; header_len],
            header_len,
            open: None,
            padding,
            max_len: UDP_PAYLOAD_MAX_BYTES,
            records: 0,
            data_records: 0,
        }
    }

    /// Bytes the message would have if finished now (with the open set's padding).
    fn len(&self) -> usize {
        self.buf.len() + self.pad_needed()
    }

    fn pad_needed(&self) -> usize {
        match self.open {
            Some(s) if self.padding => (4 - (self.buf.len() - s.start) % 4) % 4,
            _ => 0,
        }
    }

    /// Checks that `n` more bytes in a set `id` fit, counting a new set header if needed.
    fn reserve(&self, id: u16, n: usize) -> Result<(), EncodeError> {
        let new_set = self.open.is_none_or(|s| s.id != id);
        let mut total = self.buf.len() + n;
        if new_set {
            total += self.pad_needed() + SET_HEADER_BYTES;
        }
        // The set being written will need padding of its own when closed.
        if self.padding {
            total += 3;
        }
        let set_len = if new_set {
            SET_HEADER_BYTES + n
        } else {
            self.open.map_or(0, |s| self.buf.len() - s.start) + n
        };
        if total > self.max_len.min(usize::from(u16::MAX)) || set_len + 3 > usize::from(u16::MAX) {
            return Err(EncodeError::Full);
        }
        Ok(())
    }

    /// Makes set `id` the open one (closing another open set first).
    fn open(&mut self, id: u16) {
        if self.open.is_some_and(|s| s.id == id) {
            return;
        }
        self.close_set();
        self.open = Some(OpenSet {
            start: self.buf.len(),
            id,
        });
        self.buf.extend_from_slice(&id.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]); // length, back-patched by close_set
    }

    /// Pads and back-patches the open set's length.
    fn close_set(&mut self) {
        let Some(s) = self.open.take() else { return };
        if self.padding {
            let pad = (4 - (self.buf.len() - s.start) % 4) % 4;
            self.buf.resize(self.buf.len() + pad, 0);
        }
        let len = (self.buf.len() - s.start) as u16;
        patch_u16(&mut self.buf, s.start + 2, len);
    }

    fn template(
        &mut self,
        set_id: u16,
        id: u16,
        scope: Option<&[FieldSpec]>,
        fields: &[FieldSpec],
        v9: bool,
    ) -> Result<(), EncodeError> {
        if id < TEMPLATE_ID_MIN {
            return Err(EncodeError::BadTemplate {
                what: "template id below 256",
            });
        }
        let scope_fields = scope.unwrap_or(&[]);
        let all = || scope_fields.iter().chain(fields);
        let count = scope_fields.len() + fields.len();
        if count == 0 || count > usize::from(u16::MAX) {
            return Err(EncodeError::BadTemplate {
                what: "field count",
            });
        }
        if v9 {
            if all().any(|f| f.enterprise.is_some()) {
                return Err(EncodeError::Unsupported {
                    what: "enterprise fields in v9",
                });
            }
            if all().any(|f| f.len == VARIABLE_LENGTH) {
                return Err(EncodeError::Unsupported {
                    what: "variable-length fields in v9",
                });
            }
        }
        if all().any(|f| f.len == 0) {
            return Err(EncodeError::BadTemplate {
                what: "zero-length field",
            });
        }
        if all().any(|f| f.id & 0x8000 != 0) {
            return Err(EncodeError::BadTemplate {
                what: "field id above 32767",
            });
        }
        let head = match (scope, v9) {
            (None, _) => 4,
            (Some(_), true) => 6,
            (Some(_), false) => 6,
        };
        let n = head + all().map(FieldSpec::template_bytes).sum::<usize>();
        self.reserve(set_id, n)?;
        self.open(set_id);
        let b = &mut self.buf;
        b.extend_from_slice(&id.to_be_bytes());
        match (scope, v9) {
            (None, _) => b.extend_from_slice(&(count as u16).to_be_bytes()),
            // v9: option scope length and option length, in bytes.
            (Some(s), true) => {
                b.extend_from_slice(&((s.len() * 4) as u16).to_be_bytes());
                b.extend_from_slice(&((fields.len() * 4) as u16).to_be_bytes());
            }
            // IPFIX: field count and scope field count.
            (Some(s), false) => {
                b.extend_from_slice(&(count as u16).to_be_bytes());
                b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            }
        }
        for f in all() {
            match f.enterprise {
                None => b.extend_from_slice(&f.id.to_be_bytes()),
                Some(_) => b.extend_from_slice(&(f.id | 0x8000).to_be_bytes()),
            }
            b.extend_from_slice(&f.len.to_be_bytes());
            if let Some(pen) = f.enterprise {
                b.extend_from_slice(&pen.to_be_bytes());
            }
        }
        self.records += 1;
        Ok(())
    }

    /// Bytes one data record of `flow` takes under `fields`.
    fn data_len(fields: &[FieldSpec], var_len: u16, long_varlen: bool) -> usize {
        fields
            .iter()
            .map(|f| {
                if f.len == VARIABLE_LENGTH {
                    var_prefix_len(var_len, long_varlen) + usize::from(var_len)
                } else {
                    usize::from(f.len)
                }
            })
            .sum()
    }

    fn check_data(id: u16, fields: &[FieldSpec], v9: bool) -> Result<(), EncodeError> {
        if id < TEMPLATE_ID_MIN {
            return Err(EncodeError::BadTemplate {
                what: "template id below 256",
            });
        }
        if v9 && fields.iter().any(|f| f.len == VARIABLE_LENGTH) {
            return Err(EncodeError::Unsupported {
                what: "variable-length fields in v9",
            });
        }
        Ok(())
    }

    fn data(
        &mut self,
        id: u16,
        fields: &[FieldSpec],
        flow: &Flow,
        export_secs: u32,
        v9: bool,
        long_varlen: bool,
    ) -> Result<(), EncodeError> {
        let typical = Typical::of(fields);
        if typical.is_none() {
            Self::check_data(id, fields, v9)?;
        } else if id < TEMPLATE_ID_MIN {
            return Err(EncodeError::BadTemplate {
                what: "template id below 256",
            });
        }
        let n = match typical {
            Some(t) => t.record_len(),
            None => Self::data_len(fields, flow.var_len, long_varlen),
        };
        self.reserve(id, n)?;
        self.open(id);
        // Grow once, then fill the record's bytes.
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        let mut rest = self.buf.get_mut(start..).unwrap_or_default();
        if let Some(t) = typical {
            t.put(rest, flow);
            self.records += 1;
            self.data_records += 1;
            return Ok(());
        }
        for spec in fields {
            let len = if spec.len == VARIABLE_LENGTH {
                rest = put_var_prefix(rest, flow.var_len, long_varlen);
                usize::from(flow.var_len)
            } else {
                usize::from(spec.len)
            };
            let Some((field, tail)) = rest.split_at_mut_checked(len) else {
                break; // cannot happen: n is the sum of the lengths
            };
            if spec.len == VARIABLE_LENGTH {
                put_filler(field);
            } else {
                put_field(field, flow, spec, export_secs);
            }
            rest = tail;
        }
        self.records += 1;
        self.data_records += 1;
        Ok(())
    }

    fn values(
        &mut self,
        id: u16,
        fields: &[FieldSpec],
        values: &[u64],
        v9: bool,
        long_varlen: bool,
    ) -> Result<(), EncodeError> {
        Self::check_data(id, fields, v9)?;
        if fields.len() != values.len() {
            return Err(EncodeError::Unsupported {
                what: "value count differs from field count",
            });
        }
        // A variable-length field carries its value as 8 bytes.
        let n: usize = fields
            .iter()
            .map(|f| {
                if f.len == VARIABLE_LENGTH {
                    var_prefix_len(8, long_varlen) + 8
                } else {
                    usize::from(f.len)
                }
            })
            .sum();
        self.reserve(id, n)?;
        self.open(id);
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        let mut rest = self.buf.get_mut(start..).unwrap_or_default();
        for (spec, &v) in fields.iter().zip(values) {
            let len = if spec.len == VARIABLE_LENGTH {
                rest = put_var_prefix(rest, 8, long_varlen);
                8
            } else {
                usize::from(spec.len)
            };
            let Some((field, tail)) = rest.split_at_mut_checked(len) else {
                break; // cannot happen: n is the sum of the lengths
            };
            put_uint(field, v);
            rest = tail;
        }
        self.records += 1;
        self.data_records += 1;
        Ok(())
    }

    fn raw_set(&mut self, set_id: u16, body: &[u8]) -> Result<(), EncodeError> {
        let total = self.buf.len() + self.pad_needed() + SET_HEADER_BYTES + body.len();
        if total > self.max_len.min(usize::from(u16::MAX)) {
            return Err(EncodeError::Full);
        }
        self.close_set();
        self.open(set_id);
        self.buf.extend_from_slice(body);
        // Raw sets are written exactly as given: no padding.
        let s = self.open.take();
        if let Some(s) = s {
            let len = (self.buf.len() - s.start) as u16;
            patch_u16(&mut self.buf, s.start + 2, len);
        }
        Ok(())
    }

    /// Closes the open set, writes the header `header` computes over the placeholder, appends
    /// the message to `out` and resets the body. Returns the message length.
    fn finish<const N: usize>(
        &mut self,
        out: &mut Vec<u8>,
        header: impl FnOnce(&Body) -> [u8; N],
    ) -> usize {
        self.close_set();
        let h = header(self);
        if let Some(dst) = self.buf.get_mut(..N) {
            dst.copy_from_slice(&h);
        }
        let n = self.buf.len();
        out.extend_from_slice(&self.buf);
        self.buf.truncate(self.header_len);
        self.records = 0;
        self.data_records = 0;
        n
    }
}

// ---------------------------------------------------------------------------------------------
// NetFlow v9

/// NetFlow v9 header fields the caller chooses (version and count are the builder's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V9Header {
    pub sys_uptime_ms: u32,
    pub unix_secs: u32,
    /// Package sequence: v9 counts export packets.
    pub sequence: u32,
    pub source_id: u32,
}

/// Builds NetFlow v9 export packets (RFC 3954). Sets are padded to 4 bytes by default.
#[derive(Clone, Debug)]
pub struct V9Builder {
    pub header: V9Header,
    body: Body,
}

impl V9Builder {
    pub fn new(header: V9Header) -> Self {
        V9Builder {
            header,
            body: Body::new(V9_HEADER_BYTES, true),
        }
    }

    /// Refuse records that would make the packet longer than `max_len` bytes.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.body.max_len = max_len;
    }

    /// Pad flowsets to a multiple of 4 bytes (the default) or not.
    pub fn set_padding(&mut self, padding: bool) {
        self.body.padding = padding;
    }

    /// Bytes the packet would have if finished now.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// No record or set added since the last finish.
    pub fn is_empty(&self) -> bool {
        self.body.buf.len() == self.body.header_len
    }

    /// Records (templates, options templates, data) in the packet so far: the header's count.
    pub fn count(&self) -> u32 {
        self.body.records
    }

    /// Data and options data records in the packet so far.
    pub fn data_records(&self) -> u32 {
        self.body.data_records
    }

    /// Whether one more data record of `fields` would fit.
    pub fn fits(&self, template_id: u16, fields: &[FieldSpec]) -> bool {
        self.body
            .reserve(template_id, Body::data_len(fields, 0, false))
            .is_ok()
    }

    /// Adds a template record (to the open template flowset, or a new one).
    pub fn template(&mut self, id: u16, fields: &[FieldSpec]) -> Result<(), EncodeError> {
        self.count_room()?;
        self.body.template(V9_TEMPLATE_SET, id, None, fields, true)
    }

    /// Adds an options template record: scope fields (id = scope type) and option fields.
    pub fn options_template(
        &mut self,
        id: u16,
        scope: &[FieldSpec],
        options: &[FieldSpec],
    ) -> Result<(), EncodeError> {
        self.count_room()?;
        if scope.is_empty() {
            return Err(EncodeError::BadTemplate {
                what: "options template without scope",
            });
        }
        self.body
            .template(V9_OPTIONS_TEMPLATE_SET, id, Some(scope), options, true)
    }

    /// Adds one data record of `flow` encoded through `fields` (the template `template_id`
    /// announced, here or in an earlier packet).
    pub fn data(
        &mut self,
        template_id: u16,
        fields: &[FieldSpec],
        flow: &Flow,
    ) -> Result<(), EncodeError> {
        self.count_room()?;
        self.body.data(
            template_id,
            fields,
            flow,
            self.header.unix_secs,
            true,
            false,
        )
    }

    /// Adds one options data record: one value per field (scope fields first), each written
    /// big-endian into its field's length (saturating).
    pub fn options_data(
        &mut self,
        template_id: u16,
        fields: &[FieldSpec],
        values: &[u64],
    ) -> Result<(), EncodeError> {
        self.count_room()?;
        self.body.values(template_id, fields, values, true, false)
    }

    /// Appends a flowset with id `set_id` and `body` verbatim (no padding; the length is set):
    /// for hostile-input tests.
    pub fn raw_set(&mut self, set_id: u16, body: &[u8]) -> Result<(), EncodeError> {
        self.body.raw_set(set_id, body)
    }

    /// Closes the open flowset so the next record starts a new one.
    pub fn close_set(&mut self) {
        self.body.close_set();
    }

    fn count_room(&self) -> Result<(), EncodeError> {
        if self.body.records >= u32::from(u16::MAX) {
            return Err(EncodeError::Full);
        }
        Ok(())
    }

    /// Appends the packet to `out` and empties the builder (the header stays; the caller
    /// advances `sequence`). Returns the packet's length.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> usize {
        let h = self.header;
        self.body.finish(out, |body| {
            let mut v = [0u8; V9_HEADER_BYTES];
            v[0..2].copy_from_slice(&9u16.to_be_bytes());
            v[2..4].copy_from_slice(&(body.records as u16).to_be_bytes());
            v[4..8].copy_from_slice(&h.sys_uptime_ms.to_be_bytes());
            v[8..12].copy_from_slice(&h.unix_secs.to_be_bytes());
            v[12..16].copy_from_slice(&h.sequence.to_be_bytes());
            v[16..20].copy_from_slice(&h.source_id.to_be_bytes());
            v
        })
    }
}

// ---------------------------------------------------------------------------------------------
// IPFIX

/// IPFIX message header fields the caller chooses (version and length are the builder's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpfixHeader {
    pub export_time: u32,
    /// Data records sent in this domain before this message (IPFIX counts data records).
    pub sequence: u32,
    pub observation_domain: u32,
}

/// Builds IPFIX messages (RFC 7011). Sets are not padded by default.
#[derive(Clone, Debug)]
pub struct IpfixBuilder {
    pub header: IpfixHeader,
    body: Body,
    long_varlen: bool,
}

impl IpfixBuilder {
    pub fn new(header: IpfixHeader) -> Self {
        IpfixBuilder {
            header,
            body: Body::new(IPFIX_HEADER_BYTES, false),
            long_varlen: false,
        }
    }

    /// Refuse records that would make the message longer than `max_len` bytes.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.body.max_len = max_len;
    }

    /// Pad sets to a multiple of 4 bytes, or not (the default).
    pub fn set_padding(&mut self, padding: bool) {
        self.body.padding = padding;
    }

    /// Write every variable-length value with the 3-byte length prefix, even below 255 bytes.
    pub fn set_long_varlen(&mut self, long: bool) {
        self.long_varlen = long;
    }

    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.buf.len() == self.body.header_len
    }

    /// Data and options data records in the message so far: what the next message's sequence
    /// number must be advanced by.
    pub fn data_records(&self) -> u32 {
        self.body.data_records
    }

    /// Whether one more data record of `fields` (variable-length values of `var_len` bytes)
    /// would fit.
    pub fn fits(&self, template_id: u16, fields: &[FieldSpec], var_len: u16) -> bool {
        self.body
            .reserve(
                template_id,
                Body::data_len(fields, var_len, self.long_varlen),
            )
            .is_ok()
    }

    /// Adds a template record (to the open template set, or a new one).
    pub fn template(&mut self, id: u16, fields: &[FieldSpec]) -> Result<(), EncodeError> {
        self.body
            .template(IPFIX_TEMPLATE_SET, id, None, fields, false)
    }

    /// Adds an options template record; `scope` are its scope fields (at least one).
    pub fn options_template(
        &mut self,
        id: u16,
        scope: &[FieldSpec],
        options: &[FieldSpec],
    ) -> Result<(), EncodeError> {
        if scope.is_empty() {
            return Err(EncodeError::BadTemplate {
                what: "options template without scope",
            });
        }
        self.body
            .template(IPFIX_OPTIONS_TEMPLATE_SET, id, Some(scope), options, false)
    }

    /// Withdraws template `id` (a template record with no fields in a template set).
    pub fn withdraw_template(&mut self, id: u16) -> Result<(), EncodeError> {
        self.withdraw(IPFIX_TEMPLATE_SET, id)
    }

    /// Withdraws options template `id`.
    pub fn withdraw_options_template(&mut self, id: u16) -> Result<(), EncodeError> {
        self.withdraw(IPFIX_OPTIONS_TEMPLATE_SET, id)
    }

    /// Withdraws every template of the domain (template id 2 in a template set).
    pub fn withdraw_all_templates(&mut self) -> Result<(), EncodeError> {
        self.withdraw_raw(IPFIX_TEMPLATE_SET, IPFIX_TEMPLATE_SET)
    }

    /// Withdraws every options template of the domain (template id 3 in an options template set).
    pub fn withdraw_all_options_templates(&mut self) -> Result<(), EncodeError> {
        self.withdraw_raw(IPFIX_OPTIONS_TEMPLATE_SET, IPFIX_OPTIONS_TEMPLATE_SET)
    }

    fn withdraw(&mut self, set_id: u16, id: u16) -> Result<(), EncodeError> {
        if id < TEMPLATE_ID_MIN {
            return Err(EncodeError::BadTemplate {
                what: "template id below 256",
            });
        }
        self.withdraw_raw(set_id, id)
    }

    fn withdraw_raw(&mut self, set_id: u16, id: u16) -> Result<(), EncodeError> {
        self.body.reserve(set_id, 4)?;
        self.body.open(set_id);
        self.body.buf.extend_from_slice(&id.to_be_bytes());
        self.body.buf.extend_from_slice(&0u16.to_be_bytes());
        Ok(())
    }

    /// Adds one data record of `flow` encoded through `fields`. Variable-length fields carry
    /// `flow.var_len` bytes of filler; enterprise fields zeros (or filler when variable).
    pub fn data(
        &mut self,
        template_id: u16,
        fields: &[FieldSpec],
        flow: &Flow,
    ) -> Result<(), EncodeError> {
        self.body.data(
            template_id,
            fields,
            flow,
            self.header.export_time,
            false,
            self.long_varlen,
        )
    }

    /// Adds one options data record: one value per field (scope fields first). A
    /// variable-length field carries its value as 8 bytes.
    pub fn options_data(
        &mut self,
        template_id: u16,
        fields: &[FieldSpec],
        values: &[u64],
    ) -> Result<(), EncodeError> {
        self.body
            .values(template_id, fields, values, false, self.long_varlen)
    }

    /// Appends a set with id `set_id` and `body` verbatim (no padding; the length is set).
    pub fn raw_set(&mut self, set_id: u16, body: &[u8]) -> Result<(), EncodeError> {
        self.body.raw_set(set_id, body)
    }

    /// Closes the open set so the next record starts a new one.
    pub fn close_set(&mut self) {
        self.body.close_set();
    }

    /// Appends the message to `out` and empties the builder (the header stays; the caller
    /// advances `sequence` by [`IpfixBuilder::data_records`], read before finishing).
    /// Returns the message length.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> usize {
        let h = self.header;
        self.body.finish(out, |body| {
            let len = body.buf.len() as u16;
            let mut v = [0u8; IPFIX_HEADER_BYTES];
            v[0..2].copy_from_slice(&10u16.to_be_bytes());
            v[2..4].copy_from_slice(&len.to_be_bytes());
            v[4..8].copy_from_slice(&h.export_time.to_be_bytes());
            v[8..12].copy_from_slice(&h.sequence.to_be_bytes());
            v[12..16].copy_from_slice(&h.observation_domain.to_be_bytes());
            v
        })
    }
}

/// A handy flow for tests: IPv4 TCP 10.0.0.1:12345 -> 192.0.2.1:443 with every field set.
pub fn sample_flow_v4(i: u32) -> Flow {
    let mut fl = Flow {
        src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
        dst_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        next_hop: IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
        src_port: 12_345u16.wrapping_add(i as u16),
        dst_port: 443,
        protocol: 6,
        tcp_flags: 0x1b,
        tos: 0x10,
        bytes: 1500 + u64::from(i),
        packets: 3 + u64::from(i),
        input_if: 10,
        output_if: 20,
        src_as: 64_512,
        dst_as: 65_000,
        src_mask: 24,
        dst_mask: 16,
        direction: 0,
        ..Flow::default()
    };
    fl.set_times(
        1_700_000_000_000 - 3_600_000,
        1_700_000_000_000 - 5_000,
        1_700_000_000_000 - 1_000,
    );
    fl
}

/// The IPv6 counterpart of [`sample_flow_v4`].
pub fn sample_flow_v6(i: u32) -> Flow {
    Flow {
        src_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16)),
        dst_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
        next_hop: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        src_mask: 64,
        dst_mask: 48,
        protocol: 17,
        direction: 1,
        ..sample_flow_v4(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decoder;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn typical_fast_path_matches_the_generic_walk() {
        for (t, fields) in [
            (Typical::V4, TYPICAL_V4_TEMPLATE),
            (Typical::V6, TYPICAL_V6_TEMPLATE),
            (Typical::IpfixV4, IPFIX_TYPICAL_V4_TEMPLATE),
            (Typical::IpfixV6, IPFIX_TYPICAL_V6_TEMPLATE),
        ] {
            assert_eq!(Typical::of(fields), Some(t));
            assert_eq!(record_len(fields), Some(t.record_len()));
            for fl in [sample_flow_v4(7), sample_flow_v6(9)] {
                let mut fast = vec![0u8; t.record_len()];
                t.put(&mut fast, &fl);
                let mut slow = vec![0u8; t.record_len()];
                let mut at = 0;
                for spec in fields {
                    let len = usize::from(spec.len);
                    put_field(&mut slow[at..at + len], &fl, spec, 0);
                    at += len;
                }
                assert_eq!(fast, slow, "{t:?}");
            }
        }
        assert_eq!(Typical::of(&TYPICAL_V4_TEMPLATE[1..]), None);
    }

    #[test]
    fn template_record_lengths() {
        assert_eq!(record_len(TYPICAL_V4_TEMPLATE), Some(61));
        assert_eq!(record_len(TYPICAL_V6_TEMPLATE), Some(98));
        assert_eq!(record_len(IPFIX_TYPICAL_V4_TEMPLATE), Some(69));
        assert_eq!(record_len(IPFIX_TYPICAL_V6_TEMPLATE), Some(106));
        assert_eq!(TYPICAL_V4_TEMPLATE.len(), 18);
        assert_eq!(record_len(&[f(1, 4), f(82, VARIABLE_LENGTH)]), None);
    }

    #[test]
    fn v5_golden_header_and_record() {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 0x0102_0304,
            unix_secs: 1_700_000_000,
            unix_nsecs: 5,
            flow_sequence: 77,
            engine_type: 1,
            engine_id: 2,
            sampling_interval: 0x4000 | 100,
        });
        let fl = sample_flow_v4(0);
        b.push(&fl).expect("builder accepts it");
        let mut out = Vec::new();
        assert_eq!(b.finish(&mut out), 72);
        #[rustfmt::skip]
        let header: [u8; 24] = [
            0, 5,                   // version
            0, 1,                   // count
            1, 2, 3, 4,             // sys_uptime
            0x65, 0x53, 0xf1, 0x00, // unix_secs 1700000000
            0, 0, 0, 5,             // unix_nsecs
            0, 0, 0, 77,            // flow_sequence
            1, 2,                   // engine type, id
            0x40, 100,              // sampling: mode 1, interval 100
        ];
        assert_eq!(&out[..24], &header);
        #[rustfmt::skip]
        let record: [u8; 48] = [
            10, 0, 0, 0,            // srcaddr
            192, 0, 2, 1,           // dstaddr
            10, 255, 0, 1,          // nexthop
            0, 10, 0, 20,           // input, output
            0, 0, 0, 3,             // packets
            0, 0, 0x05, 0xdc,       // bytes 1500
            0x00, 0x36, 0xda, 0xf8, // first: 3595000 ms uptime
            0x00, 0x36, 0xea, 0x98, // last: 3599000
            0x30, 0x39, 0x01, 0xbb, // ports 12345, 443
            0, 0x1b, 6, 0x10,       // pad, tcp flags, protocol, tos
            0xfc, 0x00, 0xfd, 0xe8, // src AS 64512, dst AS 65000
            24, 16, 0, 0,           // masks, pad
        ];
        assert_eq!(&out[24..], &record);
        // The builder is empty again and keeps its header.
        assert_eq!(b.count(), 0);
        assert_eq!(b.header.flow_sequence, 77);
    }

    #[test]
    fn v5_refuses_a_31st_record_and_saturates_counters() {
        let mut b = V5Builder::default();
        let mut fl = sample_flow_v4(1);
        fl.bytes = u64::MAX;
        for _ in 0..30 {
            b.push(&fl).expect("builder accepts it");
        }
        assert_eq!(b.push(&fl), Err(EncodeError::Full));
        let mut out = Vec::new();
        assert_eq!(b.finish(&mut out), 24 + 30 * 48);
        assert_eq!(u16_at(&out, 2), 30);
        assert_eq!(u32_at(&out, 24 + 20), u32::MAX);
    }

    #[test]
    fn v5_decodes_through_the_decoder() {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: 1_700_000_000,
            flow_sequence: 1000,
            sampling_interval: 10,
            ..V5Header::default()
        });
        let flows: Vec<Flow> = (0..30).map(sample_flow_v4).collect();
        for fl in &flows {
            b.push(fl).expect("builder accepts it");
        }
        let mut out = Vec::new();
        b.finish(&mut out);
        let mut dec = Decoder::default();
        let exporter = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut seen = Vec::new();
        let outcome = dec
            .decode(exporter, 1, &out, |r| {
                seen.push((
                    r.src_ip(),
                    r.dst_ip(),
                    r.next_hop(),
                    r.src_port(),
                    r.dst_port(),
                    r.protocol(),
                    r.in_bytes(),
                    r.in_pkts(),
                    r.tcp_flags(),
                    r.src_as(),
                    r.dst_mask(),
                    r.first_switched(),
                    r.last_switched(),
                    r.sampling_rate(),
                ));
            })
            .expect("v5 decodes");
        assert_eq!(outcome.records, 30);
        for (fl, s) in flows.iter().zip(&seen) {
            assert_eq!(s.0, Some(fl.src_ip));
            assert_eq!(s.1, Some(fl.dst_ip));
            assert_eq!(s.2, Some(fl.next_hop));
            assert_eq!(s.3, Some(fl.src_port));
            assert_eq!(s.4, Some(fl.dst_port));
            assert_eq!(s.5, Some(fl.protocol));
            assert_eq!(s.6, Some(fl.bytes));
            assert_eq!(s.7, Some(fl.packets));
            assert_eq!(s.8, Some(u16::from(fl.tcp_flags)));
            assert_eq!(s.9, Some(fl.src_as));
            assert_eq!(s.10, Some(fl.dst_mask));
            assert_eq!(s.11, fl.first_unix_ms as i64 * 1000);
            assert_eq!(s.12, fl.last_unix_ms as i64 * 1000);
            assert_eq!(s.13, 10);
        }
    }

    #[test]
    fn v9_golden_template_and_data() {
        let mut b = V9Builder::new(V9Header {
            sys_uptime_ms: 1000,
            unix_secs: 1_700_000_000,
            sequence: 7,
            source_id: 0x0102_0304,
        });
        b.template(256, &[f(8, 4), f(1, 2)])
            .expect("builder accepts it");
        let fl = Flow {
            src_ip: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
            bytes: 0x1_0000, // saturates in a 2-byte field
            ..Flow::default()
        };
        b.data(256, &[f(8, 4), f(1, 2)], &fl)
            .expect("builder accepts it");
        assert_eq!(b.count(), 2);
        let mut out = Vec::new();
        let n = b.finish(&mut out);
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            0, 9, 0, 2,                 // version, count (1 template + 1 data record)
            0, 0, 0x03, 0xe8,           // sys_uptime 1000
            0x65, 0x53, 0xf1, 0x00,     // unix_secs
            0, 0, 0, 7,                 // sequence
            1, 2, 3, 4,                 // source id
            0, 0, 0, 16,                // template flowset, length 16
            1, 0, 0, 2,                 // template 256, 2 fields
            0, 8, 0, 4,                 // sourceIPv4Address, 4
            0, 1, 0, 2,                 // octetDeltaCount, 2
            1, 0, 0, 12,                // data flowset 256, length 4 + 6 + 2 padding
            1, 2, 3, 4, 0xff, 0xff,     // record
            0, 0,                       // padding
        ];
        assert_eq!(out, want);
        assert_eq!(n, want.len());
        assert!(b.is_empty());
    }

    #[test]
    fn v9_options_template_golden() {
        let mut b = V9Builder::new(V9Header::default());
        b.set_padding(false);
        let scope = [f(1, 4)];
        let opts = [f(34, 4), f(35, 1)];
        b.options_template(300, &scope, &opts)
            .expect("builder accepts it");
        b.options_data(300, &[f(1, 4), f(34, 4), f(35, 1)], &[7, 1000, 2])
            .expect("builder accepts it");
        let mut out = Vec::new();
        b.finish(&mut out);
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            0, 1, 0, 22,                // options template flowset, length
            1, 44, 0, 4, 0, 8,          // template 300, scope length 4, option length 8
            0, 1, 0, 4,                 // scope: system, 4 bytes
            0, 34, 0, 4, 0, 35, 0, 1,   // samplingInterval 4, samplingAlgorithm 1
            1, 44, 0, 13,               // data flowset 300
            0, 0, 0, 7, 0, 0, 3, 0xe8, 2,
        ];
        assert_eq!(&out[20..], &want[..]);
        assert_eq!(u16_at(&out, 2), 2);
    }

    #[test]
    fn ipfix_golden_header_varlen_enterprise_withdrawal() {
        let mut b = IpfixBuilder::new(IpfixHeader {
            export_time: 1_700_000_000,
            sequence: 42,
            observation_domain: 9,
        });
        let fields = [
            f(8, 4),
            f(82, VARIABLE_LENGTH),
            FieldSpec::enterprise(1, 2, 29_305),
        ];
        b.template(256, &fields).expect("builder accepts it");
        let fl = Flow {
            src_ip: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
            var_len: 3,
            ..Flow::default()
        };
        b.data(256, &fields, &fl).expect("builder accepts it");
        let long = Flow { var_len: 300, ..fl };
        b.data(256, &fields, &long).expect("builder accepts it");
        b.withdraw_template(257).expect("builder accepts it");
        b.withdraw_all_templates().expect("builder accepts it");
        assert_eq!(b.data_records(), 2);
        let mut out = Vec::new();
        let n = b.finish(&mut out);
        assert_eq!(u16_at(&out, 0), 10);
        assert_eq!(usize::from(u16_at(&out, 2)), n);
        assert_eq!(u32_at(&out, 4), 1_700_000_000);
        assert_eq!(u32_at(&out, 8), 42);
        assert_eq!(u32_at(&out, 12), 9);
        #[rustfmt::skip]
        let tmpl: [u8; 24] = [
            0, 2, 0, 24,                // template set, length
            1, 0, 0, 3,                 // template 256, 3 fields
            0, 8, 0, 4,
            0, 82, 0xff, 0xff,          // interfaceName, variable length
            0x80, 1, 0, 2, 0, 0, 0x72, 0x79, // enterprise bit, PEN 29305
        ];
        assert_eq!(&out[16..40], &tmpl);
        // Data set: 4 + (4 + 1 + 3 + 2) + (4 + 3 + 300 + 2).
        assert_eq!(u16_at(&out, 40), 256);
        assert_eq!(u16_at(&out, 42), 4 + 10 + 309);
        assert_eq!(&out[44..52], &[1, 2, 3, 4, 3, b'a', b'b', b'c']);
        let second = 44 + 10;
        assert_eq!(&out[second + 4..second + 7], &[255, 1, 44]);
        // Withdrawals: one template set with two records, 256+1 and the all-templates id 2.
        let w = 40 + 4 + 10 + 309;
        assert_eq!(&out[w..], &[0, 2, 0, 12, 1, 1, 0, 0, 0, 2, 0, 0]);
    }

    #[test]
    fn ipfix_long_varlen_form_below_255() {
        let mut b = IpfixBuilder::new(IpfixHeader::default());
        b.set_long_varlen(true);
        let fields = [f(82, VARIABLE_LENGTH)];
        let fl = Flow {
            var_len: 2,
            ..Flow::default()
        };
        b.data(256, &fields, &fl).expect("builder accepts it");
        let mut out = Vec::new();
        b.finish(&mut out);
        assert_eq!(&out[16..], &[1, 0, 0, 9, 255, 0, 2, b'a', b'b']);
    }

    #[test]
    fn refusals_leave_the_builder_unchanged() {
        let mut b = V9Builder::new(V9Header::default());
        assert!(matches!(
            b.template(255, TYPICAL_V4_TEMPLATE),
            Err(EncodeError::BadTemplate { .. })
        ));
        assert!(matches!(
            b.template(256, &[]),
            Err(EncodeError::BadTemplate { .. })
        ));
        assert!(matches!(
            b.template(256, &[f(82, VARIABLE_LENGTH)]),
            Err(EncodeError::Unsupported { .. })
        ));
        assert!(matches!(
            b.template(256, &[FieldSpec::enterprise(1, 4, 9)]),
            Err(EncodeError::Unsupported { .. })
        ));
        assert!(matches!(
            b.options_data(256, &[f(1, 4)], &[1, 2]),
            Err(EncodeError::Unsupported { .. })
        ));
        assert!(b.is_empty());
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn packing_stops_at_max_len() {
        let mut b = V9Builder::new(V9Header::default());
        b.set_max_len(1400);
        b.template(256, TYPICAL_V4_TEMPLATE)
            .expect("builder accepts it");
        let fl = sample_flow_v4(3);
        let mut n = 0;
        while b.fits(256, TYPICAL_V4_TEMPLATE) {
            b.data(256, TYPICAL_V4_TEMPLATE, &fl)
                .expect("builder accepts it");
            n += 1;
        }
        assert_eq!(
            b.data(256, TYPICAL_V4_TEMPLATE, &fl),
            Err(EncodeError::Full)
        );
        let mut out = Vec::new();
        let len = b.finish(&mut out);
        assert!(len <= 1400, "{len}");
        assert!(len > 1400 - 61 - 3, "{len}");
        assert_eq!(u16_at(&out, 2), n + 1);
        // A huge max_len is still capped by the 16-bit lengths.
        let mut b = IpfixBuilder::new(IpfixHeader::default());
        b.set_max_len(usize::MAX);
        let big = [f(82, VARIABLE_LENGTH)];
        let fl = Flow {
            var_len: 60_000,
            ..Flow::default()
        };
        b.data(256, &big, &fl).expect("builder accepts it");
        assert_eq!(b.data(256, &big, &fl), Err(EncodeError::Full));
    }

    #[test]
    fn times_and_addresses_in_other_forms() {
        let mut fl = sample_flow_v6(1);
        fl.set_times(1_000_000, 1_700_000_000_250, 1_700_000_001_500);
        let fields = [
            f(150, 4),
            f(154, 8),
            f(156, 8),
            f(158, 4),
            f(160, 8),
            f(8, 4),
            f(27, 16),
            f(60, 1),
        ];
        let mut b = IpfixBuilder::new(IpfixHeader {
            export_time: 1_700_000_002,
            ..IpfixHeader::default()
        });
        b.data(256, &fields, &fl).expect("builder accepts it");
        let mut out = Vec::new();
        b.finish(&mut out);
        let r = &out[20..];
        assert_eq!(u32_at(r, 0), 1_700_000_000);
        let ntp_secs = (1_700_000_000u64 + NTP_UNIX_OFFSET_SECS) as u32;
        assert_eq!(u32_at(r, 4), ntp_secs);
        assert_eq!(u32_at(r, 8), (((250u64 << 32) / 1000) as u32) & !0x7ff);
        assert_eq!(u32_at(r, 12), ntp_secs);
        assert_eq!(u32_at(r, 20), 1_750_000); // 1.75 s before the export time, in µs
        assert_eq!(&r[24..32], &1_000_000u64.to_be_bytes());
        assert_eq!(&r[32..36], &[0, 0, 0, 0]); // v6 address in a v4 field
        assert_eq!(r[52], 6);
    }

    /// Any sequence of builder calls with any fields, lengths and values: no panic, and every
    /// finished message's lengths agree with its bytes.
    mod no_panic {
        use super::*;
        use proptest::prelude::*;

        fn spec() -> impl Strategy<Value = FieldSpec> + Clone {
            (
                prop_oneof![0u16..200, any::<u16>()],
                prop_oneof![Just(0u16), 1u16..20, Just(VARIABLE_LENGTH), any::<u16>()],
                proptest::option::of(any::<u32>()),
            )
                .prop_map(|(id, len, enterprise)| FieldSpec {
                    id,
                    len,
                    enterprise,
                })
        }

        #[derive(Debug, Clone)]
        enum Op {
            Template(u16, Vec<FieldSpec>),
            Options(u16, Vec<FieldSpec>, Vec<FieldSpec>),
            Data(u16, Vec<FieldSpec>, u16),
            Values(u16, Vec<FieldSpec>, Vec<u64>),
            Raw(u16, Vec<u8>),
            Withdraw(u16),
            Close,
            Finish,
        }

        fn op() -> impl Strategy<Value = Op> {
            let fields = proptest::collection::vec(spec(), 0..40);
            prop_oneof![
                (any::<u16>(), fields.clone()).prop_map(|(i, f)| Op::Template(i, f)),
                (any::<u16>(), fields.clone(), fields.clone())
                    .prop_map(|(i, s, f)| Op::Options(i, s, f)),
                (any::<u16>(), fields.clone(), any::<u16>())
                    .prop_map(|(i, f, v)| Op::Data(i, f, v)),
                (
                    any::<u16>(),
                    fields,
                    proptest::collection::vec(any::<u64>(), 0..40)
                )
                    .prop_map(|(i, f, v)| Op::Values(i, f, v)),
                (
                    any::<u16>(),
                    proptest::collection::vec(any::<u8>(), 0..3000)
                )
                    .prop_map(|(i, b)| Op::Raw(i, b)),
                any::<u16>().prop_map(Op::Withdraw),
                Just(Op::Close),
                Just(Op::Finish),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn builders_never_panic(ops in proptest::collection::vec(op(), 0..30),
                                    max in prop_oneof![Just(1400usize), any::<usize>()],
                                    padding in any::<bool>()) {
                let mut v9 = V9Builder::new(V9Header::default());
                let mut ipfix = IpfixBuilder::new(IpfixHeader::default());
                v9.set_max_len(max);
                ipfix.set_max_len(max);
                ipfix.set_padding(padding);
                ipfix.set_long_varlen(padding);
                let mut out = Vec::new();
                let fl = sample_flow_v6(1);
                for op in ops {
                    match op {
                        Op::Template(i, f) => {
                            let _ = v9.template(i, &f);
                            let _ = ipfix.template(i, &f);
                        }
                        Op::Options(i, s, f) => {
                            let _ = v9.options_template(i, &s, &f);
                            let _ = ipfix.options_template(i, &s, &f);
                        }
                        Op::Data(i, f, var_len) => {
                            let fl = Flow { var_len, ..fl };
                            let _ = v9.data(i, &f, &fl);
                            let _ = ipfix.data(i, &f, &fl);
                        }
                        Op::Values(i, f, v) => {
                            let _ = v9.options_data(i, &f, &v);
                            let _ = ipfix.options_data(i, &f, &v);
                        }
                        Op::Raw(i, b) => {
                            let _ = v9.raw_set(i, &b);
                            let _ = ipfix.raw_set(i, &b);
                        }
                        Op::Withdraw(i) => {
                            let _ = ipfix.withdraw_template(i);
                            let _ = ipfix.withdraw_all_options_templates();
                        }
                        Op::Close => {
                            v9.close_set();
                            ipfix.close_set();
                        }
                        Op::Finish => {
                            out.clear();
                            let n = v9.finish(&mut out);
                            prop_assert_eq!(n, out.len());
                            prop_assert!(n <= 65_535);
                            out.clear();
                            let n = ipfix.finish(&mut out);
                            prop_assert_eq!(usize::from(u16_at(&out, 2)), n);
                            // The sets tile the message exactly.
                            let mut at = 16;
                            while at < n {
                                let len = usize::from(u16_at(&out, at + 2));
                                prop_assert!(len >= 4);
                                at += len;
                            }
                            prop_assert_eq!(at, n);
                        }
                    }
                }
                let mut v5 = V5Builder::default();
                for _ in 0..40 {
                    let _ = v5.push(&fl);
                }
                prop_assert_eq!(v5.finish(&mut out), 24 + 30 * 48);
            }
        }
    }
}
