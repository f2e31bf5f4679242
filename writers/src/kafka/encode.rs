//! The Kafka backend's encoder: each record becomes one *framed flow* in the chunk,
//!
//! ```text
//! key_len: u8 | key: key_len bytes | value_len: u32 LE | value: value_len bytes
//! ```
//!
//! where `value` is what goes into a Kafka message value for this flow (a varint-delimited
//! goflow2 `FlowMessage`, or one JSON line) and `key` the message key it belongs under (see
//! [`KeyBy`]). The sink concatenates the values of up to `flows_per_message` flows of one key
//! into one message ([`frames`] reads them back).
//!
//! The protobuf writer is hand-written (no message structs per flow): fields go straight from
//! the record into a fixed scratch buffer, then the buffer's length as a varint and the buffer
//! into the chunk. Field numbers are goflow2's `pb/flow.proto` (`flow.proto` beside this file
//! is the subset goflow writes). Which schema column fills which field is [`PB_FIELDS`]; a
//! schema column without a `FlowMessage` number must be listed in [`PB_UNMAPPED`] (a test
//! checks both lists cover [`crate::schema::COLUMNS`]). Proto3 leaves zero values out, so do
//! we: a decoder reads an absent field as 0.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use goflow_codec::FlowRecord;

use super::{Format, KeyBy};
use crate::json::JsonLines;
use crate::schema::{self, Value, flow_columns};
use crate::sink::RowEncoder;

/// Buckets of the `flow` key: the 5-tuple hash modulo this, as an 8-byte big-endian key, so the
/// partitioner sees few distinct keys (and the sink can fill messages) while connections spread
/// over up to this many partitions.
pub const FLOW_KEY_BUCKETS: u64 = 256;

/// `FlowMessage.type` (`FlowType`) by NetFlow version: NETFLOW_V5 = 2, NETFLOW_V9 = 3,
/// IPFIX = 4, FLOWUNKNOWN = 0.
pub fn flow_type(version: u16) -> u64 {
    match version {
        5 => 2,
        9 => 3,
        10 => 4,
        _ => 0,
    }
}

/// How a column's value becomes a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PbKind {
    /// Integers as varints, addresses as 4 or 16 raw bytes, times as nanoseconds.
    Plain,
    /// `ip_version` 4 / 6 as `etype` 0x0800 / 0x86dd.
    Etype,
}

/// Schema column -> goflow2 `FlowMessage` field number.
pub const PB_FIELDS: &[(&str, u32, PbKind)] = &[
    ("time_received", 110, PbKind::Plain),     // time_received_ns
    ("first_switched", 111, PbKind::Plain),    // time_flow_start_ns
    ("last_switched", 112, PbKind::Plain),     // time_flow_end_ns
    ("exporter", 11, PbKind::Plain),           // sampler_address
    ("observation_domain", 70, PbKind::Plain), // observation_domain_id
    ("sampling_rate", 3, PbKind::Plain),
    ("src_ip", 6, PbKind::Plain), // src_addr
    ("dst_ip", 7, PbKind::Plain), // dst_addr
    ("next_hop", 12, PbKind::Plain),
    ("src_port", 21, PbKind::Plain),
    ("dst_port", 22, PbKind::Plain),
    ("protocol", 20, PbKind::Plain), // proto
    ("in_bytes", 9, PbKind::Plain),  // bytes
    ("in_pkts", 10, PbKind::Plain),  // packets
    ("tcp_flags", 26, PbKind::Plain),
    ("tos", 23, PbKind::Plain),       // ip_tos
    ("input_if", 18, PbKind::Plain),  // in_if
    ("output_if", 19, PbKind::Plain), // out_if
    ("src_as", 14, PbKind::Plain),
    ("dst_as", 15, PbKind::Plain),
    ("src_mask", 16, PbKind::Plain), // src_net
    ("dst_mask", 17, PbKind::Plain), // dst_net
    ("ip_version", 30, PbKind::Etype),
    ("src_mac", 27, PbKind::Plain), // 48-bit MAC in the low bits
    ("dst_mac", 28, PbKind::Plain),
    ("vlan", 33, PbKind::Plain),      // src_vlan
    ("post_vlan", 34, PbKind::Plain), // dst_vlan
    ("forwarding_status", 24, PbKind::Plain),
    ("icmp_type", 31, PbKind::Plain),
    ("icmp_code", 32, PbKind::Plain),
    ("mpls_label", 81, PbKind::Plain), // repeated: one element (parsers take packed or not)
    ("bgp_next_hop", 100, PbKind::Plain),
];

/// Schema columns goflow2's `FlowMessage` has no number for (not written in protobuf; the JSON
/// format carries them).
/// `etype` is written from `ip_version` (field 30 once).
pub const PB_UNMAPPED: &[&str] = &[
    "direction",
    "sampling_source",
    "out_bytes",
    "out_pkts",
    "fw_event",
    "post_nat_src_ip",
    "post_nat_dst_ip",
    "post_nat_src_port",
    "post_nat_dst_port",
    "ingress_vrf",
    "egress_vrf",
    "flow_end_reason",
    "etype",
];

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The field of column `name` (0: none), at compile time.
const fn pb_field(name: &str) -> (u32, PbKind) {
    let mut i = 0;
    while i < PB_FIELDS.len() {
        if str_eq(PB_FIELDS[i].0, name) {
            return (PB_FIELDS[i].1, PB_FIELDS[i].2);
        }
        i += 1;
    }
    (0, PbKind::Plain)
}

/// A `FlowMessage` body at most: every field's tag (2 bytes up to field 2047) and a 10-byte
/// varint or a 16-byte address with its length byte, for every mapped field, plus `type`.
const PB_BODY_MAX: usize = (PB_FIELDS.len() + 1) * 19;

/// The body being written: a fixed buffer and a cursor. Writes past the end are dropped
/// rather than panicking (PB_BODY_MAX makes that impossible; a test checks the worst case).
#[derive(Clone, Debug)]
struct Body {
    buf: [u8; PB_BODY_MAX],
    len: usize,
}

impl Default for Body {
    fn default() -> Self {
        Body {
            buf: [0; PB_BODY_MAX],
            len: 0,
        }
    }
}

/// A field's key (field number and wire type) as varint bytes, padded to two, and how many of
/// them count: computed at compile time for every mapped field (numbers up to 2047 fit in two).
#[derive(Clone, Copy, Debug)]
struct Tag {
    bytes: [u8; 2],
    len: usize,
}

const fn tag(field: u32, wire: u32) -> Tag {
    let t = (field << 3) | wire;
    if t < 0x80 {
        Tag {
            bytes: [t as u8, 0],
            len: 1,
        }
    } else {
        Tag {
            bytes: [(t as u8) | 0x80, (t >> 7) as u8],
            len: 2,
        }
    }
}

/// A mapped column's field: its kind and its keys as a varint (wire type 0) and as bytes (2).
#[derive(Clone, Copy, Debug)]
struct Field {
    kind: PbKind,
    varint: Tag,
    bytes: Tag,
}

const fn field(number: u32, kind: PbKind) -> Field {
    assert!(number < 2048, "a field key must fit in two varint bytes");
    Field {
        kind,
        varint: tag(number, 0),
        bytes: tag(number, 2),
    }
}

/// Writes `v` as a varint into `dst` from `at` (at most 2: after a key); returns the end. Small
/// values (ports, one flow's counters, interfaces) take one or two bytes: straight-line. The
/// rest (nanosecond times take nine) are spread seven bits a byte in one word, without a loop.
#[inline(always)]
fn varint_at(dst: &mut [u8; 12], at: usize, v: u64) -> usize {
    if v < 0x80 {
        dst[at] = v as u8;
        return at + 1;
    }
    if v < 0x4000 {
        dst[at] = (v as u8) | 0x80;
        dst[at + 1] = (v >> 7) as u8;
        return at + 2;
    }
    // Bytes needed: 3 to 10.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    let n = bits.div_ceil(7);
    // The low 56 bits as eight 7-bit groups, each with its continuation bit.
    let mut w = 0u64;
    let mut k = 0;
    while k < 8 {
        w |= ((v >> (7 * k)) & 0x7f) << (8 * k);
        k += 1;
    }
    w |= 0x8080_8080_8080_8080;
    if n < 8 {
        // Keep n bytes; the last one ends the varint.
        w &= (1u64 << (8 * n)) - 1;
        w &= !(0x80u64 << (8 * (n - 1)));
    } else if n == 8 {
        w &= !(0x80u64 << 56);
    }
    if let Some(d) = dst.get_mut(at..at + 8) {
        d.copy_from_slice(&w.to_le_bytes());
    }
    if n >= 9 {
        let hi = v >> 56;
        dst[at + 8] = if n == 10 { (hi as u8) | 0x80 } else { hi as u8 };
        if n == 10 {
            dst[at + 9] = (v >> 63) as u8;
        }
    }
    at + n
}

impl Body {
    /// Twelve bytes at the cursor (a key and a varint), one bounds check for all of them.
    #[inline(always)]
    fn room(&mut self) -> Option<&mut [u8; 12]> {
        self.buf
            .get_mut(self.len..self.len + 12)
            .and_then(|s| <&mut [u8; 12]>::try_from(s).ok())
    }

    /// A varint field (wire type 0); zero is left out (proto3).
    #[inline(always)]
    fn uint(&mut self, key: Tag, v: u64) {
        if v == 0 {
            return;
        }
        let at = self.len;
        if let Some(dst) = self.room() {
            dst[0] = key.bytes[0];
            dst[1] = key.bytes[1];
            self.len = at + varint_at(dst, key.len, v);
        }
    }

    /// A length-delimited field (wire type 2) of fewer than 128 bytes (an address).
    #[inline(always)]
    fn short_bytes(&mut self, key: Tag, b: &[u8]) {
        let at = self.len;
        let n = key.len + 1 + b.len();
        if b.len() >= 0x80 {
            return;
        }
        if let Some(dst) = self.buf.get_mut(at..at + 2 + 1 + b.len()) {
            dst[0] = key.bytes[0];
            dst[1] = key.bytes[1];
            dst[key.len] = b.len() as u8;
            dst[key.len + 1..n].copy_from_slice(b);
            self.len = at + n;
        }
    }

    #[inline(always)]
    fn value(&mut self, f: Field, v: Value) {
        match (f.kind, v) {
            (_, Value::Null) => {}
            (PbKind::Etype, Value::Uint(4)) => self.uint(f.varint, 0x0800),
            (PbKind::Etype, Value::Uint(6)) => self.uint(f.varint, 0x86dd),
            (PbKind::Etype, _) => {}
            (PbKind::Plain, Value::Uint(u)) => self.uint(f.varint, u),
            (PbKind::Plain, Value::Mac(m)) => self.uint(
                f.varint,
                u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]),
            ),
            (PbKind::Plain, Value::Str(_)) => {}
            (PbKind::Plain, Value::Ip(IpAddr::V4(a))) => self.short_bytes(f.bytes, &a.octets()),
            (PbKind::Plain, Value::Ip(IpAddr::V6(a))) => self.short_bytes(f.bytes, &a.octets()),
            // Nanoseconds; a time before 1970 is left out (0).
            (PbKind::Plain, Value::Time(us)) => {
                self.uint(
                    f.varint,
                    u64::try_from(us).unwrap_or(0).saturating_mul(1000),
                );
            }
        }
    }
}

macro_rules! pb_columns {
    ($($name:ident: $ty:ident, $nullable:literal, $read:expr;)*) => {
        /// Every mapped column as its field, each accessor inlined; unmapped columns compile
        /// to nothing.
        #[inline(always)]
        fn put_columns(rec: &FlowRecord<'_>, body: &mut Body) {
            $(
                {
                    const F: (u32, PbKind) = pb_field(stringify!($name));
                    if F.0 != 0 {
                        const FIELD: Field = field(F.0, F.1);
                        body.value(FIELD, schema::read(rec, $read));
                    }
                }
            )*
        }
    };
}
flow_columns!(pb_columns);

/// Appends `rec` as one varint-delimited goflow2 `FlowMessage` (exactly what goflow2 writes per
/// message with its default framing).
pub fn encode_flow_message<B: BufMut + ?Sized>(rec: &FlowRecord<'_>, out: &mut B) {
    let mut body = Body {
        buf: [0; PB_BODY_MAX],
        len: 0,
    };
    encode_into(rec, &mut body, out);
}

/// [`encode_flow_message`] with a scratch body the caller keeps (no buffer zeroed per flow:
/// only the bytes written are read back).
#[inline(always)]
fn encode_into<B: BufMut + ?Sized>(rec: &FlowRecord<'_>, body: &mut Body, out: &mut B) {
    body.len = 0;
    const TYPE: Tag = tag(1, 0);
    body.uint(TYPE, flow_type(rec.netflow_version()));
    put_columns(rec, body);
    let len = body.len;
    // The length prefix: a varint of at most 10 bytes.
    let (mut prefix, mut n, mut v) = ([0u8; 10], 0, len as u64);
    while v >= 0x80 && n < 9 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    out.put_slice(prefix.get(..=n).unwrap_or_default());
    out.put_slice(body.buf.get(..len).unwrap_or_default());
}

/// FNV-1a over the 5-tuple (addresses' raw bytes, ports, protocol).
fn flow_hash(rec: &FlowRecord<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(rec.src_ip_bytes().unwrap_or_default());
    eat(rec.dst_ip_bytes().unwrap_or_default());
    eat(&rec.src_port().unwrap_or(0).to_be_bytes());
    eat(&rec.dst_port().unwrap_or(0).to_be_bytes());
    eat(&[rec.protocol().unwrap_or(0)]);
    h
}

/// The Kafka backend's [`RowEncoder`]: framed flows (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct KafkaEncoder {
    format: Format,
    key: KeyBy,
    json: JsonLines,
    /// The protobuf body scratch, reused flow after flow.
    body: Box<Body>,
}

impl KafkaEncoder {
    pub fn new(format: Format, key: KeyBy) -> KafkaEncoder {
        KafkaEncoder {
            format,
            key,
            json: JsonLines::default(),
            body: Box::default(),
        }
    }

    /// `format: json` messages carry only the columns of `set` (`columns:`); protobuf messages
    /// are goflow2's FlowMessage, whose fields are fixed, and ignore it.
    pub fn with_columns(mut self, set: crate::schema::ColumnSet) -> KafkaEncoder {
        self.json = JsonLines::new(set);
        self
    }
}

impl RowEncoder for KafkaEncoder {
    fn encode(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut) {
        match self.key {
            KeyBy::Exporter => match rec.exporter() {
                IpAddr::V4(a) => {
                    out.put_u8(4);
                    out.put_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.put_u8(16);
                    out.put_slice(&a.octets());
                }
            },
            KeyBy::Flow => {
                out.put_u8(8);
                out.put_u64(flow_hash(rec) % FLOW_KEY_BUCKETS);
            }
            KeyBy::None => out.put_u8(0),
        }
        // The value's length by placeholder and back-patch.
        let at = out.len();
        out.put_u32_le(0);
        match self.format {
            Format::Protobuf => encode_into(rec, &mut self.body, out),
            Format::Json => self.json.encode(rec, out),
        }
        let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
        if let Some(dst) = out.get_mut(at..at + 4) {
            dst.copy_from_slice(&len.to_le_bytes());
        }
    }
}

/// One framed flow read back from a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Reads framed flows; ends at the end of the buffer, or at the first frame that does not fit
/// (then [`Frames::truncated`] is true: the chunk was not written by [`KafkaEncoder`]).
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
    truncated: bool,
}

/// The framed flows of a chunk's rows.
pub fn frames(rows: &[u8]) -> Frames<'_> {
    Frames {
        rest: rows,
        truncated: false,
    }
}

impl Frames<'_> {
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let (&klen, rest) = self.rest.split_first()?;
        let parsed = rest
            .split_at_checked(usize::from(klen))
            .and_then(|(key, rest)| {
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
                let (value, rest) = rest.split_at_checked(len)?;
                Some((Frame { key, value }, rest))
            });
        match parsed {
            Some((f, rest)) => {
                self.rest = rest;
                Some(f)
            }
            None => {
                self.truncated = true;
                self.rest = &[];
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use goflow_codec::{PacketContext, Plan, Sampling, SamplingSource, Slot, UnixMicros};
    use prost::Message;

    use super::*;
    use crate::schema::COLUMNS;

    /// The generated decoder (protoc + prost-build from `flow.proto`, checked in).
    #[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
    pub(crate) mod flowpb {
        include!("flowpb.rs");
    }

    const T: UnixMicros = 1_700_000_000_123_456;

    pub(crate) fn ctx(exporter: IpAddr, version: u16) -> PacketContext {
        PacketContext {
            exporter,
            observation_domain: 7,
            version,
            export_time_us: T,
            sys_uptime_ms: 0,
            received_us: T + 1,
            system_init_ms: None,
        }
    }

    /// src_ip (16 or 4) | dst_ip | src_port | dst_port | protocol | in_bytes (8) | in_pkts (4)
    /// | ip_version (1) | input_if (4) | tcp_flags (1).
    pub(crate) fn record_bytes(src: IpAddr, dst: IpAddr) -> (Plan, Vec<u8>) {
        let a = |ip: IpAddr| match ip {
            IpAddr::V4(v) => v.octets().to_vec(),
            IpAddr::V6(v) => v.octets().to_vec(),
        };
        let (s, d) = (a(src), a(dst));
        let mut b = Vec::new();
        let at = |b: &mut Vec<u8>, bytes: &[u8]| {
            let slot = Slot::new(b.len() as u16, bytes.len() as u16);
            b.extend_from_slice(bytes);
            slot
        };
        let src_ip = at(&mut b, &s);
        let dst_ip = at(&mut b, &d);
        let src_port = at(&mut b, &443u16.to_be_bytes());
        let dst_port = at(&mut b, &51000u16.to_be_bytes());
        let protocol = at(&mut b, &[6]);
        let in_bytes = at(&mut b, &(u64::MAX - 1).to_be_bytes());
        let in_pkts = at(&mut b, &1234u32.to_be_bytes());
        let ip_version = at(&mut b, &[if s.len() == 16 { 6 } else { 4 }]);
        let input_if = at(&mut b, &3u32.to_be_bytes());
        let tcp_flags = at(&mut b, &[0x1b]);
        let plan = Plan {
            record_len: b.len() as u16,
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            protocol,
            in_bytes,
            in_pkts,
            ip_version,
            input_if,
            tcp_flags,
            ..Plan::EMPTY
        };
        (plan, b)
    }

    pub(crate) fn decode_delimited(mut value: &[u8]) -> Vec<flowpb::FlowMessage> {
        let mut out = Vec::new();
        while !value.is_empty() {
            out.push(flowpb::FlowMessage::decode_length_delimited(&mut value).expect("decode"));
        }
        out
    }

    #[test]
    fn every_schema_column_is_mapped_or_listed_unmapped() {
        for c in COLUMNS {
            let mapped = PB_FIELDS.iter().any(|f| f.0 == c.name);
            let unmapped = PB_UNMAPPED.contains(&c.name);
            assert!(
                mapped ^ unmapped,
                "schema column {} needs a FlowMessage field number in kafka::encode::PB_FIELDS \
                 (goflow2's pb/flow.proto) or an entry in PB_UNMAPPED",
                c.name
            );
        }
    }

    #[test]
    fn ipv4_and_ipv6_flows_decode_with_the_generated_decoder() {
        let sampling = Sampling {
            rate: 100,
            source: SamplingSource::Record,
        };
        for (exp, src, dst, version, ftype, etype) in [
            (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
                9,
                3,
                0x0800,
            ),
            (
                IpAddr::V6("2001:db8::ff".parse::<Ipv6Addr>().expect("v6")),
                IpAddr::V6("2001:db8::2".parse::<Ipv6Addr>().expect("v6")),
                IpAddr::V6("2001:db8:1::9".parse::<Ipv6Addr>().expect("v6")),
                10,
                4,
                0x86dd,
            ),
        ] {
            let (plan, bytes) = record_bytes(src, dst);
            let c = ctx(exp, version);
            let rec = FlowRecord::new(&bytes, &plan, &c, sampling);
            let mut out = Vec::new();
            encode_flow_message(&rec, &mut out);
            let msgs = decode_delimited(&out);
            assert_eq!(msgs.len(), 1);
            let m = &msgs[0];
            let raw = |ip: IpAddr| match ip {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            };
            assert_eq!(m.r#type, ftype);
            assert_eq!(m.time_received_ns, (T as u64 + 1) * 1000);
            // No time fields in the plan: first/last fall back to the export time.
            assert_eq!(m.time_flow_start_ns, T as u64 * 1000);
            assert_eq!(m.time_flow_end_ns, T as u64 * 1000);
            assert_eq!(m.sampler_address, raw(exp));
            assert_eq!(m.src_addr, raw(src));
            assert_eq!(m.dst_addr, raw(dst));
            assert_eq!(m.sampling_rate, 100);
            assert_eq!(m.observation_domain_id, 7);
            assert_eq!(m.src_port, 443);
            assert_eq!(m.dst_port, 51000);
            assert_eq!(m.proto, 6);
            assert_eq!(m.bytes, u64::MAX - 1);
            assert_eq!(m.packets, 1234);
            assert_eq!(m.etype, etype);
            assert_eq!(m.in_if, 3);
            assert_eq!(m.tcp_flags, 0x1b);
            assert_eq!(m.out_if, 0);
            assert!(m.next_hop.is_empty());
        }
    }

    #[test]
    fn varints_and_framing_are_byte_exact() {
        // An empty plan, v5, exporter 10.0.0.1, unknown sampling: type, three times, the
        // exporter, the observation domain and the sampling rate.
        let plan = Plan::EMPTY;
        let c = PacketContext {
            exporter: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            observation_domain: 300,
            version: 5,
            export_time_us: 0,
            sys_uptime_ms: 0,
            received_us: 1,
            system_init_ms: None,
        };
        let rec = FlowRecord::new(&[], &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        KafkaEncoder::new(Format::Protobuf, KeyBy::Exporter).encode(&rec, &mut out);
        let expected: &[u8] = &[
            4, 10, 0, 0, 1, // key: the exporter's 4 bytes
            19, 0, 0, 0,  // value length, LE
            18, // FlowMessage length (varint)
            0x08, 2, // type = NETFLOW_V5
            0xf0, 0x06, 0xe8, 0x07, // field 110 (time_received_ns) = 1000 ns
            // first/last switched: 0 (export time 0), left out
            0x5a, 4, 10, 0, 0, 1, // field 11 (sampler_address), 4 bytes
            0xb0, 0x04, 0xac, 0x02, // field 70 (observation_domain_id) = 300
            0x18, 1, // field 3 (sampling_rate) = 1 (unknown sampling is stored as 1)
        ];
        assert_eq!(&out[..], expected);
        let f: Vec<Frame<'_>> = frames(&out).collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].key, &[10, 0, 0, 1]);
        let m = decode_delimited(f[0].value);
        assert_eq!(m[0].observation_domain_id, 300);
        assert_eq!(m[0].time_received_ns, 1000);
    }

    /// The worst case (every field at its longest: a 16-byte address, the type a 10-byte
    /// varint) is written whole: no write is dropped for want of room.
    #[test]
    fn the_largest_body_fits() {
        let mut body = Body {
            buf: [0; PB_BODY_MAX],
            len: 0,
        };
        body.uint(tag(1, 0), u64::MAX);
        assert_eq!(body.len, 1 + 10);
        for (_, number, _) in PB_FIELDS {
            let before = body.len;
            let key = tag(*number, 2);
            body.short_bytes(key, &[0xff; 16]);
            assert_eq!(body.len, before + key.len + 1 + 16, "field {number}");
        }
        assert!(body.len <= PB_BODY_MAX);
        // Varints are as long as they need, byte for byte what a loop writes.
        for v in [
            1u64,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            1 << 35,
            (1 << 56) - 1,
            1 << 56,
            1_767_225_600_500_000_000,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
        ] {
            let mut b = Body::default();
            b.uint(tag(110, 0), v);
            let mut want = vec![0xf0, 0x06];
            let mut x = v;
            while x >= 0x80 {
                want.push((x as u8) | 0x80);
                x >>= 7;
            }
            want.push(x as u8);
            assert_eq!(&b.buf[..b.len], &want[..], "{v}");
        }
    }

    #[test]
    fn json_keys_and_frames() {
        let (plan, bytes) = record_bytes(
            IpAddr::V6("2001:db8::2".parse::<Ipv6Addr>().expect("v6")),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        );
        let c = ctx(IpAddr::V6(Ipv6Addr::LOCALHOST), 10);
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        let mut json = KafkaEncoder::new(Format::Json, KeyBy::Flow);
        json.encode(&rec, &mut out);
        json.encode(&rec, &mut out);
        let mut none = KafkaEncoder::new(Format::Json, KeyBy::None);
        none.encode(&rec, &mut out);
        let mut it = frames(&out);
        let f: Vec<Frame<'_>> = it.by_ref().collect();
        assert!(!it.truncated());
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].key.len(), 8);
        assert_eq!(f[0].key, f[1].key, "one flow, one bucket");
        let bucket = u64::from_be_bytes(f[0].key.try_into().expect("8 bytes"));
        assert!(bucket < FLOW_KEY_BUCKETS);
        assert!(f[2].key.is_empty());
        for fr in &f {
            assert_eq!(fr.value.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(fr.value).expect("json");
            assert_eq!(v["src_ip"], "2001:db8::2");
            assert_eq!(v["in_bytes"], u64::MAX - 1);
            assert_eq!(v["exporter"], "::1");
            for col in COLUMNS {
                assert!(v.get(col.name).is_some(), "{}", col.name);
            }
        }
    }

    #[test]
    fn truncated_frames_are_detected() {
        let (plan, bytes) = record_bytes(
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 4)),
        );
        let c = ctx(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        let mut e = KafkaEncoder::new(Format::Protobuf, KeyBy::Exporter);
        e.encode(&rec, &mut out);
        e.encode(&rec, &mut out);
        for cut in 1..out.len() {
            let mut it = frames(&out[..cut]);
            let n = it.by_ref().count();
            assert!(n <= 1);
            assert!(
                it.truncated() || n == 1 && cut == out.len() / 2,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn flow_types_by_version() {
        assert_eq!(
            [5, 9, 10, 1].map(flow_type),
            [2, 3, 4, 0],
            "NETFLOW_V5, NETFLOW_V9, IPFIX, FLOWUNKNOWN"
        );
    }
}
