//! One synthetic exporter of `goflow bench`: its protocol, address, observation domain and
//! sequence space, and the code that turns drawn flows into its next datagram with the
//! `codec::encode` builders. Sequence numbers follow each protocol's meaning: v5 counts flows,
//! v9 counts export packets, IPFIX counts data records. v9/IPFIX exporters send their templates
//! (the typical IPv4 one, and the IPv6 one when IPv6 flows are asked for) in the first datagram
//! and again every `template_every` datagrams, and pack data sets up to [`DATAGRAM_MAX_BYTES`].

use std::collections::VecDeque;
use std::net::SocketAddr;

use goflow_codec::encode::{
    FieldSpec, Flow, IPFIX_TYPICAL_V4_TEMPLATE, IPFIX_TYPICAL_V6_TEMPLATE, IpfixBuilder,
    IpfixHeader, TYPICAL_V4_TEMPLATE, TYPICAL_V6_TEMPLATE, V5Builder, V5Header, V9Builder,
    V9Header, record_len,
};

use super::flowgen::FlowGen;

/// Largest v9/IPFIX datagram the bench builds (fits a 1500-byte MTU with IP/UDP headers).
pub const DATAGRAM_MAX_BYTES: usize = 1400;
const V5_RECORDS_PER_DATAGRAM: usize = 30;
const TEMPLATE_ID_V4: u16 = 256;
const TEMPLATE_ID_V6: u16 = 257;
const SET_HEADER_BYTES: usize = 4;
/// The exporters "booted" this long before the bench started (sysUpTime in the headers).
const UPTIME_AT_START_MS: u64 = 3 * 86_400_000;

/// Wire format of one exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    V5,
    V9,
    Ipfix,
    /// Exporters take turns: v5, v9, IPFIX, v5, ...
    Mixed,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::V5 => "v5",
            Proto::V9 => "v9",
            Proto::Ipfix => "ipfix",
            Proto::Mixed => "mixed",
        }
    }
}

/// Totals of one datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Built {
    pub flows: u64,
    pub bytes: u64,
    pub packets: u64,
}

impl Built {
    fn add(&mut self, fl: &Flow) {
        self.flows += 1;
        self.bytes += fl.bytes;
        self.packets += fl.packets;
    }
}

#[derive(Debug)]
enum Format {
    V5(V5Builder),
    V9(V9Builder),
    Ipfix(IpfixBuilder),
}

/// One exporter's state.
#[derive(Debug)]
pub struct Exporter {
    pub address: SocketAddr,
    pub proto: Proto,
    format: Format,
    boot_unix_ms: u64,
    /// The sequence number the next datagram carries.
    next_sequence: u32,
    pub first_sequence: Option<u32>,
    pub last_sequence: u32,
    datagrams: u64,
    template_every: u64,
    with_v6: bool,
    /// Drawn flows that did not fit the previous datagram.
    pending: VecDeque<Flow>,
    v4: Vec<Flow>,
    v6: Vec<Flow>,
}

impl Exporter {
    /// `proto` must not be `Mixed` (the caller picks one per exporter). `domain` is the v9
    /// source id / IPFIX observation domain; v5 uses its low byte as engine id.
    pub fn new(
        address: SocketAddr,
        proto: Proto,
        domain: u32,
        start_unix_ms: u64,
        template_every: u64,
        with_v6: bool,
    ) -> Self {
        let format = match proto {
            Proto::V5 => Format::V5(V5Builder::new(V5Header {
                engine_id: domain as u8,
                ..V5Header::default()
            })),
            Proto::V9 | Proto::Mixed => {
                let mut b = V9Builder::new(V9Header {
                    source_id: domain,
                    ..V9Header::default()
                });
                b.set_max_len(DATAGRAM_MAX_BYTES);
                Format::V9(b)
            }
            Proto::Ipfix => {
                let mut b = IpfixBuilder::new(IpfixHeader {
                    observation_domain: domain,
                    ..IpfixHeader::default()
                });
                b.set_max_len(DATAGRAM_MAX_BYTES);
                Format::Ipfix(b)
            }
        };
        Exporter {
            address,
            proto,
            format,
            boot_unix_ms: start_unix_ms.saturating_sub(UPTIME_AT_START_MS),
            next_sequence: 0,
            first_sequence: None,
            last_sequence: 0,
            datagrams: 0,
            template_every: template_every.max(1),
            with_v6: with_v6 && proto != Proto::V5,
            pending: VecDeque::new(),
            v4: Vec::with_capacity(32),
            v6: Vec::with_capacity(16),
        }
    }

    fn record_sequence(&mut self, seq: u32) {
        self.first_sequence.get_or_insert(seq);
        self.last_sequence = seq;
    }

    fn draw(&mut self, flow_gen: &mut FlowGen, now_unix_ms: u64) -> Flow {
        self.pending
            .pop_front()
            .unwrap_or_else(|| flow_gen.next_flow(now_unix_ms, self.boot_unix_ms, self.with_v6))
    }

    /// Appends the next datagram (at most `limit` flows, at least one when `limit > 0`) to `out`.
    pub fn next_datagram(
        &mut self,
        flow_gen: &mut FlowGen,
        now_unix_ms: u64,
        limit: u64,
        out: &mut Vec<u8>,
    ) -> Built {
        let mut built = Built::default();
        let uptime = now_unix_ms.saturating_sub(self.boot_unix_ms) as u32;
        let unix_secs = (now_unix_ms / 1000) as u32;
        let templates_due = self.datagrams.is_multiple_of(self.template_every);
        self.datagrams += 1;
        match &mut self.format {
            Format::V5(_) => {
                let n = limit.min(V5_RECORDS_PER_DATAGRAM as u64);
                let mut flows = [Flow::default(); V5_RECORDS_PER_DATAGRAM];
                for slot in flows.iter_mut().take(n as usize) {
                    *slot = self.draw(flow_gen, now_unix_ms);
                }
                let seq = self.next_sequence;
                let Format::V5(b) = &mut self.format else {
                    return built;
                };
                b.header.sys_uptime_ms = uptime;
                b.header.unix_secs = unix_secs;
                b.header.unix_nsecs = (now_unix_ms % 1000) as u32 * 1_000_000;
                b.header.flow_sequence = seq;
                for fl in flows.iter().take(n as usize) {
                    if b.push(fl).is_ok() {
                        built.add(fl);
                    }
                }
                b.finish(out);
                self.next_sequence = seq.wrapping_add(built.flows as u32);
                self.record_sequence(seq);
            }
            Format::V9(_) | Format::Ipfix(_) => {
                self.templated(
                    flow_gen,
                    now_unix_ms,
                    uptime,
                    unix_secs,
                    templates_due,
                    limit,
                    out,
                    &mut built,
                );
            }
        }
        built
    }

    /// v9 and IPFIX: templates when due, then v4 and v6 data sets packed to the size limit.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    fn templated(
        &mut self,
        flow_gen: &mut FlowGen,
        now_unix_ms: u64,
        uptime: u32,
        unix_secs: u32,
        templates_due: bool,
        limit: u64,
        out: &mut Vec<u8>,
        built: &mut Built,
    ) {
        let ipfix = matches!(self.format, Format::Ipfix(_));
        let (t4, t6): (&[FieldSpec], &[FieldSpec]) = if ipfix {
            (IPFIX_TYPICAL_V4_TEMPLATE, IPFIX_TYPICAL_V6_TEMPLATE)
        } else {
            (TYPICAL_V4_TEMPLATE, TYPICAL_V6_TEMPLATE)
        };
        let seq = self.next_sequence;
        let with_v6 = self.with_v6;
        // Header and templates first, so the space left for data is known.
        let base = match &mut self.format {
            Format::V9(b) => {
                b.header.sys_uptime_ms = uptime;
                b.header.unix_secs = unix_secs;
                b.header.sequence = seq;
                if templates_due {
                    let _ = b.template(TEMPLATE_ID_V4, t4);
                    if with_v6 {
                        let _ = b.template(TEMPLATE_ID_V6, t6);
                    }
                    b.close_set();
                }
                b.len()
            }
            Format::Ipfix(b) => {
                b.header.export_time = unix_secs;
                b.header.sequence = seq;
                if templates_due {
                    let _ = b.template(TEMPLATE_ID_V4, t4);
                    if with_v6 {
                        let _ = b.template(TEMPLATE_ID_V6, t6);
                    }
                    b.close_set();
                }
                b.len()
            }
            Format::V5(_) => return,
        };
        // Draw flows while both data sets still fit.
        let pad = !ipfix; // v9 sets are padded to 4 bytes
        let set_len = |n: usize, rec: usize| -> usize {
            if n == 0 {
                return 0;
            }
            let l = SET_HEADER_BYTES + n * rec;
            if pad { l.next_multiple_of(4) } else { l }
        };
        let (r4, r6) = (
            record_len(t4).unwrap_or(usize::MAX / 64),
            record_len(t6).unwrap_or(usize::MAX / 64),
        );
        let mut v4 = std::mem::take(&mut self.v4);
        let mut v6 = std::mem::take(&mut self.v6);
        v4.clear();
        v6.clear();
        while ((v4.len() + v6.len()) as u64) < limit {
            let fl = self.draw(flow_gen, now_unix_ms);
            let (n4, n6) = if fl.src_ip.is_ipv6() {
                (v4.len(), v6.len() + 1)
            } else {
                (v4.len() + 1, v6.len())
            };
            if base + set_len(n4, r4) + set_len(n6, r6) > DATAGRAM_MAX_BYTES {
                self.pending.push_front(fl);
                break;
            }
            if fl.src_ip.is_ipv6() {
                v6.push(fl);
            } else {
                v4.push(fl);
            }
        }
        let data_records = match &mut self.format {
            Format::V9(b) => {
                for fl in &v4 {
                    if b.data(TEMPLATE_ID_V4, t4, fl).is_ok() {
                        built.add(fl);
                    }
                }
                for fl in &v6 {
                    if b.data(TEMPLATE_ID_V6, t6, fl).is_ok() {
                        built.add(fl);
                    }
                }
                b.finish(out);
                1 // v9 counts packets
            }
            Format::Ipfix(b) => {
                for fl in &v4 {
                    if b.data(TEMPLATE_ID_V4, t4, fl).is_ok() {
                        built.add(fl);
                    }
                }
                for fl in &v6 {
                    if b.data(TEMPLATE_ID_V6, t6, fl).is_ok() {
                        built.add(fl);
                    }
                }
                let n = b.data_records();
                b.finish(out);
                n // IPFIX counts data records
            }
            Format::V5(_) => 0,
        };
        self.v4 = v4;
        self.v6 = v6;
        self.next_sequence = seq.wrapping_add(data_records);
        self.record_sequence(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goflow_codec::Decoder;

    fn run(proto: Proto, datagrams: usize, v6: f64) -> (Vec<Vec<u8>>, u64, u64, u64) {
        let addr: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let start = 1_700_000_000_000;
        let mut e = Exporter::new(addr, proto, 5, start, 3, v6 > 0.0);
        let mut fg = FlowGen::new(1, v6);
        let mut out = Vec::new();
        let (mut flows, mut bytes, mut packets) = (0, 0, 0);
        for i in 0..datagrams {
            let mut d = Vec::new();
            let b = e.next_datagram(&mut fg, start + i as u64, u64::MAX, &mut d);
            // v5: 30 records of 48 bytes and a 24-byte header, whatever the limit.
            let max = if proto == Proto::V5 {
                1464
            } else {
                DATAGRAM_MAX_BYTES
            };
            assert!(d.len() <= max, "{}", d.len());
            flows += b.flows;
            bytes += b.bytes;
            packets += b.packets;
            out.push(d);
        }
        (out, flows, bytes, packets)
    }

    #[test]
    fn every_protocol_decodes_to_the_same_totals() {
        for (proto, v6) in [(Proto::V5, 0.0), (Proto::V9, 30.0), (Proto::Ipfix, 30.0)] {
            let (dgrams, flows, bytes, packets) = run(proto, 10, v6);
            let mut dec = Decoder::default();
            let (mut f, mut b, mut p) = (0u64, 0u64, 0u64);
            for d in &dgrams {
                let ip = "127.0.0.1".parse().expect("ip");
                dec.decode(ip, 0, d, |r| {
                    f += 1;
                    b += r.in_bytes().unwrap_or(0);
                    p += r.in_pkts().unwrap_or(0);
                })
                .unwrap_or_else(|e| panic!("{proto:?}: {e}"));
            }
            assert_eq!((f, b, p), (flows, bytes, packets), "{proto:?}");
            assert!(flows >= 10 * 10, "{proto:?} {flows}");
        }
    }

    #[test]
    fn sequence_numbers_per_protocol() {
        let addr: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        for proto in [Proto::V5, Proto::V9, Proto::Ipfix] {
            let mut e = Exporter::new(addr, proto, 1, 1_700_000_000_000, 2, false);
            let mut fg = FlowGen::new(1, 0.0);
            let mut d = Vec::new();
            let a = e.next_datagram(&mut fg, 1_700_000_000_000, u64::MAX, &mut d);
            let b = e.next_datagram(&mut fg, 1_700_000_000_000, 7, &mut d);
            assert_eq!(b.flows, 7);
            assert_eq!(e.first_sequence, Some(0));
            let want = match proto {
                Proto::V9 => 1,
                _ => a.flows as u32,
            };
            assert_eq!(e.last_sequence, want, "{proto:?}");
        }
    }
}
