//! Kafka message values back into flow records: goflow2's `FlowMessage` protobuf (each flow
//! prefixed by its length as a varint, one or several per message: what goflow2 and goflow's
//! own Kafka backend write) and goflow's JSON lines (one object per line, the schema's column
//! names: what the `file` backend and goflow's Kafka backend with `format: json` write).
//!
//! A decoded flow is written into a small fixed scratch record and read through a
//! [`Plan`] built for it, so it is a plain [`FlowRecord`] and every backend's own encoder
//! (binary COPY, LOAD DATA, JSON lines, ...) takes it unchanged: no second copy of the writers.
//!
//! Proto3 writes no zero values, so an absent protobuf field reads as 0 for the counters and
//! the 5-tuple (`in_bytes`, `in_pkts`, ports, `protocol`, `tcp_flags`, `tos`, interfaces, AS
//! numbers, masks), as goflow2 means it; the other columns are NULL when absent. JSON says
//! null itself. A message is decoded whole or not at all: the first bad flow makes the message
//! a [`Bad`] one (its reason counted by the caller), and the rows already encoded for it are
//! taken back by the caller.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use goflow_codec::fields::Target;
use goflow_codec::{FlowRecord, PacketContext, Plan, Sampling, SamplingSource, Slot, TimeKind};
use goflow_writers::kafka::Format;
use serde::Deserialize;

/// Why a message was skipped (a closed set: status keys and metric label values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadReason {
    /// An empty value (or a zero-length flow).
    Empty,
    /// A length that runs past the end of the value.
    Truncated,
    /// Not the configured format (invalid protobuf wire data, not JSON).
    Malformed,
    /// Well-formed, but a field holds a value no flow can have (an address of 7 bytes, a time
    /// that is not RFC 3339, ...).
    BadValue,
    /// Looks like the other format (a JSON object on a protobuf frontend, or the reverse).
    WrongFormat,
}

impl BadReason {
    pub const ALL: [BadReason; 5] = [
        BadReason::Empty,
        BadReason::Truncated,
        BadReason::Malformed,
        BadReason::BadValue,
        BadReason::WrongFormat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BadReason::Empty => "empty",
            BadReason::Truncated => "truncated",
            BadReason::Malformed => "malformed",
            BadReason::BadValue => "bad_value",
            BadReason::WrongFormat => "wrong_format",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A message that cannot be decoded: the reason and what was wrong (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bad {
    pub reason: BadReason,
    pub detail: String,
}

fn bad(reason: BadReason, detail: impl Into<String>) -> Bad {
    Bad {
        reason,
        detail: detail.into(),
    }
}

// The scratch record's layout: six 16-byte addresses, then 8-byte big-endian integers, then
// the MACs and the MPLS label stack entry.
const ADDR: usize = 16;
const U64_BASE: usize = 6 * ADDR;

/// The integer fields of the scratch record, in layout order.
#[derive(Clone, Copy, Debug)]
enum U {
    InBytes,
    InPkts,
    OutBytes,
    OutPkts,
    First,
    Last,
    SrcPort,
    DstPort,
    Protocol,
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
    IcmpType,
    IcmpCode,
    Vlan,
    PostVlan,
    ForwardingStatus,
    Etype,
    PostNatSrcPort,
    PostNatDstPort,
    IngressVrf,
    EgressVrf,
    FlowEndReason,
    FwEvent,
}

const U_COUNT: usize = U::FwEvent as usize + 1;
const MAC_BASE: usize = U64_BASE + 8 * U_COUNT;
const MPLS: usize = MAC_BASE + 12;
/// Bytes of the scratch record.
const REC_LEN: usize = MPLS + 3;

impl U {
    const fn offset(self) -> usize {
        U64_BASE + 8 * self as usize
    }

    const fn target(self) -> Target {
        match self {
            U::InBytes => Target::InBytes,
            U::InPkts => Target::InPkts,
            U::OutBytes => Target::OutBytes,
            U::OutPkts => Target::OutPkts,
            U::First => Target::First,
            U::Last => Target::Last,
            U::SrcPort => Target::SrcPort,
            U::DstPort => Target::DstPort,
            U::Protocol => Target::Protocol,
            U::TcpFlags => Target::TcpFlags,
            U::Tos => Target::Tos,
            U::InputIf => Target::InputIf,
            U::OutputIf => Target::OutputIf,
            U::SrcAs => Target::SrcAs,
            U::DstAs => Target::DstAs,
            U::SrcMask => Target::SrcMask,
            U::DstMask => Target::DstMask,
            U::Direction => Target::Direction,
            U::IpVersion => Target::IpVersion,
            U::IcmpType => Target::IcmpType,
            U::IcmpCode => Target::IcmpCode,
            U::Vlan => Target::Vlan,
            U::PostVlan => Target::PostVlan,
            U::ForwardingStatus => Target::ForwardingStatus,
            U::Etype => Target::Etype,
            U::PostNatSrcPort => Target::PostNatSrcPort,
            U::PostNatDstPort => Target::PostNatDstPort,
            U::IngressVrf => Target::IngressVrf,
            U::EgressVrf => Target::EgressVrf,
            U::FlowEndReason => Target::FlowEndReason,
            U::FwEvent => Target::FwEvent,
        }
    }
}

/// The address fields, in layout order.
#[derive(Clone, Copy, Debug)]
enum A {
    Src,
    Dst,
    NextHop,
    BgpNextHop,
    PostNatSrc,
    PostNatDst,
}

impl A {
    const fn target(self) -> Target {
        match self {
            A::Src => Target::SrcIp,
            A::Dst => Target::DstIp,
            A::NextHop => Target::NextHop,
            A::BgpNextHop => Target::BgpNextHop,
            A::PostNatSrc => Target::PostNatSrcIp,
            A::PostNatDst => Target::PostNatDstIp,
        }
    }
}

/// Fields that read as 0 when a protobuf flow leaves them out (proto3 omits zeros).
const PROTO_ZERO_DEFAULTS: [U; 13] = [
    U::InBytes,
    U::InPkts,
    U::SrcPort,
    U::DstPort,
    U::Protocol,
    U::TcpFlags,
    U::Tos,
    U::InputIf,
    U::OutputIf,
    U::SrcAs,
    U::DstAs,
    U::SrcMask,
    U::DstMask,
];

/// The plan of a protobuf flow before its fields are read: the zero-default fields present.
const fn proto_base_plan() -> Plan {
    let mut p = Plan::EMPTY;
    p.record_len = REC_LEN as u16;
    let mut i = 0;
    while i < PROTO_ZERO_DEFAULTS.len() {
        let u = PROTO_ZERO_DEFAULTS[i];
        set_slot(&mut p, u.target(), Slot::new(u.offset() as u16, 8));
        i += 1;
    }
    p
}

/// `Plan::slot_mut` is not const; the few targets a base plan sets, by hand.
const fn set_slot(p: &mut Plan, t: Target, s: Slot) {
    match t {
        Target::InBytes => p.in_bytes = s,
        Target::InPkts => p.in_pkts = s,
        Target::SrcPort => p.src_port = s,
        Target::DstPort => p.dst_port = s,
        Target::Protocol => p.protocol = s,
        Target::TcpFlags => p.tcp_flags = s,
        Target::Tos => p.tos = s,
        Target::InputIf => p.input_if = s,
        Target::OutputIf => p.output_if = s,
        Target::SrcAs => p.src_as = s,
        Target::DstAs => p.dst_as = s,
        Target::SrcMask => p.src_mask = s,
        Target::DstMask => p.dst_mask = s,
        _ => {}
    }
}

const PROTO_BASE: Plan = proto_base_plan();
const JSON_BASE: Plan = {
    let mut p = Plan::EMPTY;
    p.record_len = REC_LEN as u16;
    p
};

/// One flow being assembled: its bytes, its plan, its context.
struct Scratch {
    bytes: [u8; REC_LEN],
    plan: Plan,
    ctx: PacketContext,
    sampling: Sampling,
    received_us: Option<i64>,
    first_us: Option<i64>,
    last_us: Option<i64>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            bytes: [0; REC_LEN],
            plan: Plan::EMPTY,
            ctx: PacketContext {
                exporter: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                observation_domain: 0,
                version: 0,
                export_time_us: 0,
                sys_uptime_ms: 0,
                received_us: 0,
                system_init_ms: None,
            },
            sampling: Sampling::default(),
            received_us: None,
            first_us: None,
            last_us: None,
        }
    }

    fn reset(&mut self, base: &Plan) {
        self.bytes = [0; REC_LEN];
        self.plan = *base;
        self.ctx.exporter = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        self.ctx.observation_domain = 0;
        self.ctx.version = 0;
        self.sampling = Sampling::default();
        self.received_us = None;
        self.first_us = None;
        self.last_us = None;
    }

    fn set_u(&mut self, f: U, v: u64) {
        let off = f.offset();
        if let Some(dst) = self.bytes.get_mut(off..off + 8) {
            dst.copy_from_slice(&v.to_be_bytes());
            *self.plan.slot_mut(f.target()) = Slot::new(off as u16, 8);
        }
    }

    fn set_addr(&mut self, f: A, ip: IpAddr) {
        let off = ADDR * f as usize;
        let len = match ip {
            IpAddr::V4(a) => {
                self.bytes[off..off + 4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                self.bytes[off..off + 16].copy_from_slice(&a.octets());
                16
            }
        };
        *self.plan.slot_mut(f.target()) = Slot::new(off as u16, len);
    }

    /// An address from raw protobuf bytes: 4 or 16 bytes; empty is absent.
    fn set_addr_bytes(&mut self, f: A, b: &[u8]) -> Result<(), Bad> {
        match to_ip(b) {
            Some(ip) => {
                self.set_addr(f, ip);
                Ok(())
            }
            None if b.is_empty() => Ok(()),
            None => Err(bad(
                BadReason::BadValue,
                format!("an address of {} bytes (4 or 16 expected)", b.len()),
            )),
        }
    }

    fn set_mac(&mut self, src: bool, m: [u8; 6]) {
        let off = MAC_BASE + if src { 0 } else { 6 };
        self.bytes[off..off + 6].copy_from_slice(&m);
        let t = if src { Target::SrcMac } else { Target::DstMac };
        *self.plan.slot_mut(t) = Slot::new(off as u16, 6);
    }

    fn set_mpls(&mut self, label: u32) {
        let v = (label & 0xf_ffff) << 4;
        self.bytes[MPLS] = (v >> 16) as u8;
        self.bytes[MPLS + 1] = (v >> 8) as u8;
        self.bytes[MPLS + 2] = v as u8;
        *self.plan.slot_mut(Target::MplsLabel) = Slot::new(MPLS as u16, 3);
    }

    /// Times into the plan: first and last as microseconds before the latest of the three
    /// times (the context's export time), so the codec's arithmetic gives them back exactly.
    /// A flow without its times takes the receive time; without a receive time, `now_us`.
    fn finish_times(&mut self, now_us: i64) {
        let received = self.received_us.unwrap_or(now_us);
        let first = self.first_us.unwrap_or(received);
        let last = self.last_us.unwrap_or(received);
        let export = received.max(first).max(last);
        self.ctx.received_us = received;
        self.ctx.export_time_us = export;
        self.set_u(U::First, u64::try_from(export - first).unwrap_or(0));
        self.set_u(U::Last, u64::try_from(export - last).unwrap_or(0));
        self.plan.first_kind = TimeKind::DeltaMicros;
        self.plan.last_kind = TimeKind::DeltaMicros;
    }

    fn record(&self) -> FlowRecord<'_> {
        FlowRecord::new(&self.bytes, &self.plan, &self.ctx, self.sampling)
    }
}

fn to_ip(b: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        None
    }
}

/// Decodes message values of one format. One per consumer thread (it keeps its scratch).
pub struct MessageDecoder {
    format: Format,
    scratch: Box<Scratch>,
}

impl std::fmt::Debug for MessageDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageDecoder")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl MessageDecoder {
    pub fn new(format: Format) -> MessageDecoder {
        MessageDecoder {
            format,
            scratch: Box::new(Scratch::new()),
        }
    }

    /// Decodes one message value, calling `each` for every flow in it, in order. `now_us`
    /// stands in for a receive time the flow does not carry. Returns the flows decoded; on
    /// `Err` some flows may have been handed to `each` already (the caller takes them back).
    pub fn decode(
        &mut self,
        value: &[u8],
        now_us: i64,
        each: &mut dyn FnMut(&FlowRecord<'_>),
    ) -> Result<u32, Bad> {
        let first = value.iter().find(|b| !b.is_ascii_whitespace());
        if value.is_empty() {
            return Err(bad(BadReason::Empty, "an empty message"));
        }
        match self.format {
            Format::Protobuf => {
                if value.first() == Some(&b'{') {
                    return Err(bad(
                        BadReason::WrongFormat,
                        "a JSON object; this frontend reads protobuf (set `format: json`)",
                    ));
                }
                self.decode_protobuf(value, now_us, each)
            }
            Format::Json => {
                if first.is_none() {
                    return Err(bad(BadReason::Empty, "a message of blanks"));
                }
                if first != Some(&b'{') {
                    return Err(bad(
                        BadReason::WrongFormat,
                        "not a JSON object; this frontend reads JSON lines (protobuf is \
                         `format: protobuf`)",
                    ));
                }
                self.decode_json(value, now_us, each)
            }
        }
    }

    fn decode_protobuf(
        &mut self,
        value: &[u8],
        now_us: i64,
        each: &mut dyn FnMut(&FlowRecord<'_>),
    ) -> Result<u32, Bad> {
        let mut r = Wire::new(value);
        let mut n = 0u32;
        while !r.at_end() {
            let len = r
                .varint()
                .map_err(|e| e.context("a flow's length prefix"))?;
            let body = r
                .take(len)
                .map_err(|e| e.context(&format!("flow {} of {len} bytes", n + 1)))?;
            if body.is_empty() {
                return Err(bad(BadReason::Empty, format!("flow {} is empty", n + 1)));
            }
            self.scratch.reset(&PROTO_BASE);
            read_flow_message(&mut self.scratch, body)
                .map_err(|e| e.context(&format!("flow {}", n + 1)))?;
            self.scratch.finish_times(now_us);
            each(&self.scratch.record());
            n += 1;
        }
        Ok(n)
    }

    fn decode_json(
        &mut self,
        value: &[u8],
        now_us: i64,
        each: &mut dyn FnMut(&FlowRecord<'_>),
    ) -> Result<u32, Bad> {
        let mut n = 0u32;
        for line in value.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let flow: JsonFlow<'_> = serde_json::from_slice(line).map_err(|e| {
                let reason = if e.is_data() {
                    BadReason::BadValue
                } else if e.is_eof() {
                    BadReason::Truncated
                } else {
                    BadReason::Malformed
                };
                bad(reason, format!("line {}: {e}", n + 1))
            })?;
            self.scratch.reset(&JSON_BASE);
            flow.apply(&mut self.scratch)
                .map_err(|e| e.context(&format!("line {}", n + 1)))?;
            self.scratch.finish_times(now_us);
            each(&self.scratch.record());
            n += 1;
        }
        if n == 0 {
            return Err(bad(BadReason::Empty, "no JSON line"));
        }
        Ok(n)
    }
}

impl Bad {
    fn context(self, what: &str) -> Bad {
        Bad {
            reason: self.reason,
            detail: format!("{what}: {}", self.detail),
        }
    }
}

/// A bounded reader of protobuf wire data.
struct Wire<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Wire<'a> {
    fn new(b: &'a [u8]) -> Wire<'a> {
        Wire { b, at: 0 }
    }

    fn at_end(&self) -> bool {
        self.at >= self.b.len()
    }

    fn varint(&mut self) -> Result<u64, Bad> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.b.get(self.at) else {
                return Err(bad(BadReason::Truncated, "a varint runs past the end"));
            };
            self.at += 1;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(bad(BadReason::Malformed, "a varint longer than 10 bytes"))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], Bad> {
        let left = self.b.len() - self.at;
        match usize::try_from(len) {
            Ok(len) if len <= left => {
                let s = &self.b[self.at..self.at + len];
                self.at += len;
                Ok(s)
            }
            _ => Err(bad(
                BadReason::Truncated,
                format!("{len} bytes announced, {left} left"),
            )),
        }
    }
}

/// One field's value.
enum Val<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

/// Reads one `FlowMessage` body (goflow2's `pb/flow.proto` field numbers) into the scratch.
fn read_flow_message(s: &mut Scratch, body: &[u8]) -> Result<(), Bad> {
    let mut r = Wire::new(body);
    let mut vlan_id = None;
    let mut have_vlan = false;
    let mut mpls_done = false;
    while !r.at_end() {
        let key = r.varint()?;
        let field = key >> 3;
        let val = match key & 7 {
            0 => Val::Int(r.varint()?),
            1 => Val::Int(u64::from_le_bytes(r.take(8)?.try_into().unwrap_or([0; 8]))),
            2 => {
                let len = r.varint()?;
                Val::Bytes(r.take(len)?)
            }
            5 => Val::Int(u64::from(u32::from_le_bytes(
                r.take(4)?.try_into().unwrap_or([0; 4]),
            ))),
            w => {
                return Err(bad(
                    BadReason::Malformed,
                    format!("field {field} has wire type {w} (not protobuf, or a group)"),
                ));
            }
        };
        if field == 0 {
            return Err(bad(BadReason::Malformed, "field number 0"));
        }
        match (field, val) {
            (1, Val::Int(t)) => {
                s.ctx.version = match t {
                    2 => 5,
                    3 => 9,
                    4 => 10,
                    _ => 0,
                }
            }
            (110, Val::Int(ns)) => s.received_us = ns_to_us(ns),
            (111, Val::Int(ns)) => s.first_us = ns_to_us(ns),
            (112, Val::Int(ns)) => s.last_us = ns_to_us(ns),
            (3, Val::Int(rate)) if rate > 0 => {
                s.sampling = Sampling {
                    rate: u32::try_from(rate).unwrap_or(u32::MAX),
                    source: SamplingSource::Record,
                }
            }
            (11, Val::Bytes(b)) => match to_ip(b) {
                Some(ip) => s.ctx.exporter = ip,
                None if b.is_empty() => {}
                None => {
                    return Err(bad(
                        BadReason::BadValue,
                        format!("sampler_address of {} bytes", b.len()),
                    ));
                }
            },
            (70, Val::Int(v)) => s.ctx.observation_domain = v as u32,
            (6, Val::Bytes(b)) => s.set_addr_bytes(A::Src, b)?,
            (7, Val::Bytes(b)) => s.set_addr_bytes(A::Dst, b)?,
            (12, Val::Bytes(b)) => s.set_addr_bytes(A::NextHop, b)?,
            (100, Val::Bytes(b)) => s.set_addr_bytes(A::BgpNextHop, b)?,
            (9, Val::Int(v)) => s.set_u(U::InBytes, v),
            (10, Val::Int(v)) => s.set_u(U::InPkts, v),
            (30, Val::Int(v)) => {
                s.set_u(U::Etype, v & 0xffff);
                match v {
                    0x0800 => s.set_u(U::IpVersion, 4),
                    0x86dd => s.set_u(U::IpVersion, 6),
                    _ => {}
                }
            }
            (20, Val::Int(v)) => s.set_u(U::Protocol, v & 0xff),
            (21, Val::Int(v)) => s.set_u(U::SrcPort, v & 0xffff),
            (22, Val::Int(v)) => s.set_u(U::DstPort, v & 0xffff),
            (18, Val::Int(v)) => s.set_u(U::InputIf, v & 0xffff_ffff),
            (19, Val::Int(v)) => s.set_u(U::OutputIf, v & 0xffff_ffff),
            (27, Val::Int(v)) => s.set_mac(true, mac_of(v)),
            (28, Val::Int(v)) => s.set_mac(false, mac_of(v)),
            (33, Val::Int(v)) => {
                have_vlan = true;
                s.set_u(U::Vlan, v & 0xffff);
            }
            (34, Val::Int(v)) => s.set_u(U::PostVlan, v & 0xffff),
            (29, Val::Int(v)) => vlan_id = Some(v & 0xffff),
            (23, Val::Int(v)) => s.set_u(U::Tos, v & 0xff),
            (24, Val::Int(v)) => s.set_u(U::ForwardingStatus, v & 0xff),
            (26, Val::Int(v)) => s.set_u(U::TcpFlags, v & 0xffff),
            (31, Val::Int(v)) => s.set_u(U::IcmpType, v & 0xff),
            (32, Val::Int(v)) => s.set_u(U::IcmpCode, v & 0xff),
            (14, Val::Int(v)) => s.set_u(U::SrcAs, v & 0xffff_ffff),
            (15, Val::Int(v)) => s.set_u(U::DstAs, v & 0xffff_ffff),
            (16, Val::Int(v)) => s.set_u(U::SrcMask, v & 0xff),
            (17, Val::Int(v)) => s.set_u(U::DstMask, v & 0xff),
            // mpls_label is repeated: the first (top) label, packed or not.
            (81, Val::Int(v)) if !mpls_done => {
                mpls_done = true;
                s.set_mpls(v as u32);
            }
            (81, Val::Bytes(b)) if !mpls_done => {
                if let Some(v) = Wire::new(b).varint().ok().filter(|_| !b.is_empty()) {
                    mpls_done = true;
                    s.set_mpls(v as u32);
                }
            }
            // Any other field (sequence numbers, TTLs, AS paths, fields of later goflow2
            // versions): not stored.
            _ => {}
        }
    }
    if !have_vlan && let Some(v) = vlan_id.filter(|&v| v != 0) {
        s.set_u(U::Vlan, v);
    }
    Ok(())
}

fn ns_to_us(ns: u64) -> Option<i64> {
    (ns != 0).then(|| i64::try_from(ns / 1000).unwrap_or(i64::MAX))
}

fn mac_of(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// One JSON line as goflow writes it (writers/src/json.rs): the schema's column names, times
/// as RFC 3339, addresses and MACs as strings, null for absent. Keys goflow does not know are
/// ignored (a newer writer may add columns).
#[derive(Deserialize)]
struct JsonFlow<'a> {
    #[serde(borrow)]
    time_received: Option<Cow<'a, str>>,
    #[serde(borrow)]
    first_switched: Option<Cow<'a, str>>,
    #[serde(borrow)]
    last_switched: Option<Cow<'a, str>>,
    #[serde(borrow)]
    exporter: Option<Cow<'a, str>>,
    observation_domain: Option<u32>,
    sampling_rate: Option<u32>,
    #[serde(borrow)]
    sampling_source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    src_ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dst_ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    next_hop: Option<Cow<'a, str>>,
    #[serde(borrow)]
    bgp_next_hop: Option<Cow<'a, str>>,
    #[serde(borrow)]
    post_nat_src_ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    post_nat_dst_ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    src_mac: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dst_mac: Option<Cow<'a, str>>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
    in_bytes: Option<u64>,
    in_pkts: Option<u64>,
    out_bytes: Option<u64>,
    out_pkts: Option<u64>,
    tcp_flags: Option<u16>,
    tos: Option<u8>,
    input_if: Option<u32>,
    output_if: Option<u32>,
    src_as: Option<u32>,
    dst_as: Option<u32>,
    src_mask: Option<u8>,
    dst_mask: Option<u8>,
    direction: Option<u8>,
    ip_version: Option<u8>,
    fw_event: Option<u8>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    vlan: Option<u16>,
    post_vlan: Option<u16>,
    mpls_label: Option<u32>,
    post_nat_src_port: Option<u16>,
    post_nat_dst_port: Option<u16>,
    ingress_vrf: Option<u32>,
    egress_vrf: Option<u32>,
    flow_end_reason: Option<u8>,
    forwarding_status: Option<u8>,
    etype: Option<u16>,
}

impl JsonFlow<'_> {
    fn apply(&self, s: &mut Scratch) -> Result<(), Bad> {
        let time = |key: &str, v: &Option<Cow<'_, str>>| -> Result<Option<i64>, Bad> {
            v.as_deref()
                .map(|t| {
                    parse_rfc3339_us(t).ok_or_else(|| {
                        bad(
                            BadReason::BadValue,
                            format!("{key} {t:?} is not an RFC 3339 time"),
                        )
                    })
                })
                .transpose()
        };
        s.received_us = time("time_received", &self.time_received)?;
        s.first_us = time("first_switched", &self.first_switched)?;
        s.last_us = time("last_switched", &self.last_switched)?;
        let ip = |key: &str, v: &Option<Cow<'_, str>>| -> Result<Option<IpAddr>, Bad> {
            v.as_deref()
                .map(|t| {
                    t.parse::<IpAddr>().map_err(|_| {
                        bad(
                            BadReason::BadValue,
                            format!("{key} {t:?} is not an IP address"),
                        )
                    })
                })
                .transpose()
        };
        if let Some(e) = ip("exporter", &self.exporter)? {
            s.ctx.exporter = e;
        }
        s.ctx.observation_domain = self.observation_domain.unwrap_or(0);
        let source = match self.sampling_source.as_deref() {
            None => SamplingSource::Unknown,
            Some(t) => match t {
                "unknown" => SamplingSource::Unknown,
                "v5_header" => SamplingSource::V5Header,
                "record" => SamplingSource::Record,
                "sampler" => SamplingSource::Sampler,
                "exporter" => SamplingSource::Exporter,
                "config" => SamplingSource::Config,
                _ => {
                    return Err(bad(
                        BadReason::BadValue,
                        format!("sampling_source {t:?} is not one goflow writes"),
                    ));
                }
            },
        };
        s.sampling = Sampling {
            rate: self.sampling_rate.unwrap_or(1).max(1),
            source,
        };
        for (a, key, v) in [
            (A::Src, "src_ip", &self.src_ip),
            (A::Dst, "dst_ip", &self.dst_ip),
            (A::NextHop, "next_hop", &self.next_hop),
            (A::BgpNextHop, "bgp_next_hop", &self.bgp_next_hop),
            (A::PostNatSrc, "post_nat_src_ip", &self.post_nat_src_ip),
            (A::PostNatDst, "post_nat_dst_ip", &self.post_nat_dst_ip),
        ] {
            if let Some(addr) = ip(key, v)? {
                s.set_addr(a, addr);
            }
        }
        for (src, key, v) in [
            (true, "src_mac", &self.src_mac),
            (false, "dst_mac", &self.dst_mac),
        ] {
            if let Some(t) = v.as_deref() {
                let m = parse_mac(t).ok_or_else(|| {
                    bad(
                        BadReason::BadValue,
                        format!("{key} {t:?} is not a MAC address"),
                    )
                })?;
                s.set_mac(src, m);
            }
        }
        let ints: [(U, Option<u64>); 29] = [
            (U::InBytes, self.in_bytes),
            (U::InPkts, self.in_pkts),
            (U::OutBytes, self.out_bytes),
            (U::OutPkts, self.out_pkts),
            (U::SrcPort, self.src_port.map(u64::from)),
            (U::DstPort, self.dst_port.map(u64::from)),
            (U::Protocol, self.protocol.map(u64::from)),
            (U::TcpFlags, self.tcp_flags.map(u64::from)),
            (U::Tos, self.tos.map(u64::from)),
            (U::InputIf, self.input_if.map(u64::from)),
            (U::OutputIf, self.output_if.map(u64::from)),
            (U::SrcAs, self.src_as.map(u64::from)),
            (U::DstAs, self.dst_as.map(u64::from)),
            (U::SrcMask, self.src_mask.map(u64::from)),
            (U::DstMask, self.dst_mask.map(u64::from)),
            (U::Direction, self.direction.map(u64::from)),
            (U::IpVersion, self.ip_version.map(u64::from)),
            (U::FwEvent, self.fw_event.map(u64::from)),
            (U::IcmpType, self.icmp_type.map(u64::from)),
            (U::IcmpCode, self.icmp_code.map(u64::from)),
            (U::Vlan, self.vlan.map(u64::from)),
            (U::PostVlan, self.post_vlan.map(u64::from)),
            (U::PostNatSrcPort, self.post_nat_src_port.map(u64::from)),
            (U::PostNatDstPort, self.post_nat_dst_port.map(u64::from)),
            (U::IngressVrf, self.ingress_vrf.map(u64::from)),
            (U::EgressVrf, self.egress_vrf.map(u64::from)),
            (U::FlowEndReason, self.flow_end_reason.map(u64::from)),
            (U::ForwardingStatus, self.forwarding_status.map(u64::from)),
            (U::Etype, self.etype.map(u64::from)),
        ];
        for (u, v) in ints {
            if let Some(v) = v {
                s.set_u(u, v);
            }
        }
        if let Some(l) = self.mpls_label {
            s.set_mpls(l);
        }
        Ok(())
    }
}

fn parse_mac(t: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = t.split([':', '-']);
    for b in &mut m {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as Unix microseconds (the fraction cut to
/// microseconds).
pub fn parse_rfc3339_us(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        s.iter()
            .try_fold(0i64, |a, &d| Some(a * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut us = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &b[start..i];
        for k in 0..6 {
            us = us * 10 + digits.get(k).map_or(0, |&d| i64::from(d - b'0'));
        }
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        &sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    Some(secs * 1_000_000 + us)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use goflow_writers::kafka::{KafkaEncoder, KeyBy, encode::frames};
    use goflow_writers::sink::RowEncoder;

    /// Real records, as the UDP frontend sees them: a v5 datagram built with goflow's own
    /// packet builder, decoded by the codec.
    fn with_v5_records(n: u32, f: &mut dyn FnMut(&FlowRecord<'_>)) {
        use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: 1_700_000_000,
            sampling_interval: 0x4000 | 100,
            ..V5Header::default()
        });
        for i in 0..n {
            assert!(b.push(&sample_flow_v4(i)).is_ok());
        }
        let mut dgram = Vec::new();
        b.finish(&mut dgram);
        let mut d = goflow_codec::Decoder::new(goflow_codec::DecoderConfig::default());
        let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        d.decode(exporter, 1_700_000_000_654_321, &dgram, |r| f(r))
            .expect("decodes");
    }

    fn json_lines_of(value: &[u8], format: Format) -> Vec<String> {
        let mut d = MessageDecoder::new(format);
        let mut out = Vec::new();
        d.decode(value, 1, &mut |r| {
            let mut b = Vec::new();
            goflow_writers::json::encode_line(r, &mut b);
            out.push(String::from_utf8(b).expect("utf8"));
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
        out
    }

    #[test]
    fn rfc3339_parses_what_goflow_writes() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_us("2024-02-29T12:34:56.123456Z"),
            Some(1_709_210_096_123_456)
        );
        assert_eq!(
            parse_rfc3339_us("2024-02-29T13:34:56.1234567+01:00"),
            Some(1_709_210_096_123_456)
        );
        assert_eq!(parse_rfc3339_us("1969-12-31T23:59:59.5Z"), Some(-500_000));
        for badt in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56Zjunk",
        ] {
            assert_eq!(parse_rfc3339_us(badt), None, "{badt}");
        }
    }

    #[test]
    fn protobuf_and_json_round_trip_through_the_kafka_encoder() {
        for format in [Format::Protobuf, Format::Json] {
            let mut enc = KafkaEncoder::new(format, KeyBy::Exporter);
            let mut framed = BytesMut::new();
            let mut want = Vec::new();
            with_v5_records(20, &mut |r| {
                enc.encode(r, &mut framed);
                let mut b = Vec::new();
                goflow_writers::json::encode_line(r, &mut b);
                want.push(String::from_utf8(b).expect("utf8"));
            });
            // All flows in one message value, as goflow's producer groups them.
            let mut value = Vec::new();
            for f in frames(&framed) {
                value.extend_from_slice(f.value);
            }
            let got = json_lines_of(&value, format);
            if format == Format::Json {
                assert_eq!(got, want, "JSON is exact");
            } else {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    let g: serde_json::Value = serde_json::from_str(g).expect("json");
                    let w: serde_json::Value = serde_json::from_str(w).expect("json");
                    for key in [
                        "time_received",
                        "first_switched",
                        "last_switched",
                        "exporter",
                        "src_ip",
                        "dst_ip",
                        "src_port",
                        "dst_port",
                        "protocol",
                        "in_bytes",
                        "in_pkts",
                        "ip_version",
                        "sampling_rate",
                        "observation_domain",
                    ] {
                        assert_eq!(g[key], w[key], "{key}: {g} vs {w}");
                    }
                }
            }
        }
    }

    /// A goflow2-style message: one delimited FlowMessage, fields as goflow2 sets them.
    fn goflow2_message(bytes: u64, src: [u8; 4]) -> Vec<u8> {
        let mut body = Vec::new();
        let varint = |out: &mut Vec<u8>, mut v: u64| {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        };
        let field_int = |out: &mut Vec<u8>, f: u64, v: u64| {
            varint(out, f << 3);
            varint(out, v);
        };
        field_int(&mut body, 1, 4); // IPFIX
        field_int(&mut body, 110, 1_700_000_000_123_456_789);
        field_int(&mut body, 9, bytes);
        field_int(&mut body, 10, 3);
        field_int(&mut body, 20, 6);
        field_int(&mut body, 21, 443);
        field_int(&mut body, 30, 0x0800);
        field_int(&mut body, 4, 77); // sequence_num: not stored
        field_int(&mut body, 81, 1234); // mpls label, unpacked
        body.extend_from_slice(&[6 << 3 | 2, 4]);
        body.extend_from_slice(&src);
        body.extend_from_slice(&[7 << 3 | 2, 4, 10, 0, 0, 2]);
        body.extend_from_slice(&[11 << 3 | 2, 4, 192, 0, 2, 1]);
        let mut msg = Vec::new();
        let mut v = body.len() as u64;
        while v >= 0x80 {
            msg.push((v as u8) | 0x80);
            v >>= 7;
        }
        msg.push(v as u8);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn goflow2_messages_one_or_several_flows() {
        let one = goflow2_message(1500, [10, 0, 0, 1]);
        let got = json_lines_of(&one, Format::Protobuf);
        assert_eq!(got.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&got[0]).expect("json");
        assert_eq!(v["in_bytes"], 1500);
        assert_eq!(v["in_pkts"], 3);
        assert_eq!(v["src_ip"], "10.0.0.1");
        assert_eq!(v["dst_ip"], "10.0.0.2");
        assert_eq!(v["exporter"], "192.0.2.1");
        assert_eq!(v["src_port"], 443);
        assert_eq!(v["dst_port"], 0, "absent in proto3 means 0");
        assert_eq!(v["ip_version"], 4);
        assert_eq!(v["etype"], 2048);
        assert_eq!(v["mpls_label"], 1234);
        assert_eq!(v["vlan"], serde_json::Value::Null);
        assert_eq!(v["time_received"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["first_switched"], v["time_received"]);
        assert_eq!(v["sampling_rate"], 1);

        let mut three = one.clone();
        three.extend(goflow2_message(2, [10, 0, 0, 3]));
        three.extend(goflow2_message(3, [10, 0, 0, 4]));
        let got = json_lines_of(&three, Format::Protobuf);
        assert_eq!(got.len(), 3);
        assert!(got[2].contains("\"in_bytes\":3,"), "{}", got[2]);
    }

    #[test]
    fn bad_messages_have_reasons_and_never_panic() {
        let mut d = MessageDecoder::new(Format::Protobuf);
        let mut n = 0;
        let mut count = |_: &FlowRecord<'_>| n += 1;
        let good = goflow2_message(1, [10, 0, 0, 1]);
        let reason = |d: &mut MessageDecoder, v: &[u8], c: &mut dyn FnMut(&FlowRecord<'_>)| {
            d.decode(v, 0, c).map(|_| ()).map_err(|e| e.reason)
        };
        assert_eq!(reason(&mut d, b"", &mut count), Err(BadReason::Empty));
        assert_eq!(
            reason(&mut d, b"{\"in_bytes\":1}", &mut count),
            Err(BadReason::WrongFormat)
        );
        assert_eq!(
            reason(&mut d, &good[..good.len() - 1], &mut count),
            Err(BadReason::Truncated)
        );
        // A length prefix then a group start (wire type 3).
        assert_eq!(
            reason(&mut d, &[2, 0x0b, 0], &mut count),
            Err(BadReason::Malformed)
        );
        // An address of 3 bytes.
        assert_eq!(
            reason(&mut d, &[5, 6 << 3 | 2, 3, 1, 2, 3], &mut count),
            Err(BadReason::BadValue)
        );
        // Good, then garbage: the message is bad (the caller takes the first flow back).
        let mut two = good.clone();
        two.extend_from_slice(&[0xff; 3]);
        assert_eq!(reason(&mut d, &two, &mut count), Err(BadReason::Truncated));

        let mut j = MessageDecoder::new(Format::Json);
        assert_eq!(
            reason(&mut j, &good, &mut count),
            Err(BadReason::WrongFormat)
        );
        assert_eq!(
            reason(&mut j, b"{\"in_bytes\":", &mut count),
            Err(BadReason::Truncated)
        );
        assert_eq!(
            reason(&mut j, b"{\"in_bytes\":\"x\"}", &mut count),
            Err(BadReason::BadValue)
        );
        assert_eq!(
            reason(&mut j, b"{\"src_ip\":\"300.1.1.1\"}", &mut count),
            Err(BadReason::BadValue)
        );
        assert_eq!(reason(&mut j, b"{]", &mut count), Err(BadReason::Malformed));
        assert_eq!(reason(&mut j, b"  \n ", &mut count), Err(BadReason::Empty));

        // Arbitrary bytes: an error or flows, never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400usize {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = d.decode(&v, 0, &mut count);
            let _ = j.decode(&v, 0, &mut count);
        }
    }
}
