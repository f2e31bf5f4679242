//! Decode throughput: NetFlow v5, and v9 and IPFIX with a realistic fixed-length 18-field
//! template (addresses, ports, protocol, flags, ToS, 8-byte bytes/packets, interfaces, AS
//! numbers, masks, next hop, first/last switched), visiting every schema column of every record
//! (`goflow_codec::decoder::visit` calls every `FlowRecord` accessor). The same packets are
//! decoded with the `netflow_parser` crate in the same run for comparison. Targets (issue 2):
//! at least 20 M records/s per core for v5, 10 M for v9/IPFIX, and 10x netflow_parser.
//! Throughput is in records (`Throughput::Elements`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use goflow_codec::Decoder;
use goflow_codec::decoder::visit;
use goflow_codec::encode::{
    IPFIX_TYPICAL_V4_TEMPLATE, IpfixBuilder, IpfixHeader, TYPICAL_V4_TEMPLATE, V5Builder, V5Header,
    V9Builder, V9Header, sample_flow_v4,
};
use netflow_parser::NetflowParser;

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const NOW_US: i64 = 1_700_000_001_000_000;
/// Datagrams per timed iteration (one receive batch).
const DATAGRAMS: usize = 64;
/// Data records per v9/IPFIX datagram (about 1.4 kB, as routers send).
const RECORDS_PER_DATAGRAM: u32 = 22;

/// One protocol's workload: a datagram announcing the templates, then data-only datagrams.
struct Workload {
    name: &'static str,
    templates: Option<Vec<u8>>,
    datagrams: Vec<Vec<u8>>,
    records: u64,
}

fn v5() -> Workload {
    let mut datagrams = Vec::new();
    for d in 0..DATAGRAMS as u32 {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: 1_700_000_000,
            flow_sequence: d * 30,
            ..V5Header::default()
        });
        for i in 0..30 {
            b.push(&sample_flow_v4(d * 30 + i))
                .unwrap_or_else(|e| panic!("v5 push: {e}"));
        }
        let mut out = Vec::new();
        b.finish(&mut out);
        datagrams.push(out);
    }
    Workload {
        name: "v5",
        templates: None,
        records: DATAGRAMS as u64 * 30,
        datagrams,
    }
}

fn v9() -> Workload {
    let header = |sequence| V9Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        sequence,
        source_id: 1,
    };
    let mut t = V9Builder::new(header(0));
    t.template(256, TYPICAL_V4_TEMPLATE)
        .unwrap_or_else(|e| panic!("v9 template: {e}"));
    let mut templates = Vec::new();
    t.finish(&mut templates);
    let datagrams = (0..DATAGRAMS as u32)
        .map(|d| {
            let mut b = V9Builder::new(header(d + 1));
            data(&mut |fl| b.data(256, TYPICAL_V4_TEMPLATE, fl).is_ok(), d);
            let mut out = Vec::new();
            b.finish(&mut out);
            out
        })
        .collect();
    Workload {
        name: "v9",
        templates: Some(templates),
        records: DATAGRAMS as u64 * u64::from(RECORDS_PER_DATAGRAM),
        datagrams,
    }
}

fn ipfix() -> Workload {
    let header = |sequence| IpfixHeader {
        export_time: 1_700_000_000,
        sequence,
        observation_domain: 1,
    };
    let mut t = IpfixBuilder::new(header(0));
    t.template(256, IPFIX_TYPICAL_V4_TEMPLATE)
        .unwrap_or_else(|e| panic!("ipfix template: {e}"));
    let mut templates = Vec::new();
    t.finish(&mut templates);
    let datagrams = (0..DATAGRAMS as u32)
        .map(|d| {
            let mut b = IpfixBuilder::new(header(d * RECORDS_PER_DATAGRAM));
            data(
                &mut |fl| b.data(256, IPFIX_TYPICAL_V4_TEMPLATE, fl).is_ok(),
                d,
            );
            let mut out = Vec::new();
            b.finish(&mut out);
            out
        })
        .collect();
    Workload {
        name: "ipfix",
        templates: Some(templates),
        records: DATAGRAMS as u64 * u64::from(RECORDS_PER_DATAGRAM),
        datagrams,
    }
}

/// Adds `RECORDS_PER_DATAGRAM` sample flows through `push`.
fn data(push: &mut dyn FnMut(&goflow_codec::encode::Flow) -> bool, d: u32) {
    for i in 0..RECORDS_PER_DATAGRAM {
        let fl = sample_flow_v4(d * RECORDS_PER_DATAGRAM + i);
        assert!(push(&fl), "data record {i} did not fit");
    }
}

/// A decoder that has seen the workload's templates.
fn goflow_decoder(w: &Workload) -> Decoder {
    let mut d = Decoder::default();
    if let Some(t) = &w.templates {
        d.decode(EXPORTER, NOW_US, t, |_| {})
            .unwrap_or_else(|e| panic!("{} templates: {e}", w.name));
    }
    d
}

fn goflow_pass(d: &mut Decoder, w: &Workload) -> (u64, u64) {
    let mut sum = 0u64;
    let mut n = 0u64;
    for p in &w.datagrams {
        let r = d.decode(EXPORTER, NOW_US, black_box(p), |r| {
            sum = sum.wrapping_add(visit(r));
            n += 1;
        });
        black_box(&r);
    }
    (n, sum)
}

fn netflow_parser(w: &Workload) -> NetflowParser {
    let mut p = NetflowParser::default();
    if let Some(t) = &w.templates {
        let r = p.parse_bytes(t);
        assert!(r.error.is_none(), "netflow_parser {} templates", w.name);
    }
    p
}

/// Records netflow_parser found in the workload (checked once, outside the timed loop).
fn netflow_parser_records(w: &Workload) -> u64 {
    use netflow_parser::NetflowPacket;
    use netflow_parser::variable_versions::ipfix::FlowSetBody as IpfixBody;
    use netflow_parser::variable_versions::v9::FlowSetBody as V9Body;
    let mut p = netflow_parser(w);
    let mut n = 0u64;
    for d in &w.datagrams {
        let r = p.parse_bytes(d);
        assert!(
            r.error.is_none(),
            "netflow_parser {}: {:?}",
            w.name,
            r.error
        );
        for pkt in &r.packets {
            n += match pkt {
                NetflowPacket::V5(v) => v.flowsets.len(),
                NetflowPacket::V9(v) => v
                    .flowsets
                    .iter()
                    .map(|s| match &s.body {
                        V9Body::Data(d) => d.fields.len(),
                        _ => 0,
                    })
                    .sum(),
                NetflowPacket::IPFix(v) => v
                    .flowsets
                    .iter()
                    .map(|s| match &s.body {
                        IpfixBody::Data(d) => d.fields.len(),
                        _ => 0,
                    })
                    .sum(),
                _ => 0,
            } as u64;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    for w in [v5(), v9(), ipfix()] {
        let mut d = goflow_decoder(&w);
        assert_eq!(goflow_pass(&mut d, &w).0, w.records, "goflow {}", w.name);
        assert_eq!(d.stats().errors_truncated + d.stats().errors_bad_length, 0);
        assert_eq!(
            netflow_parser_records(&w),
            w.records,
            "netflow_parser {}",
            w.name
        );

        let mut g = c.benchmark_group(format!("decode/{}", w.name));
        g.throughput(Throughput::Elements(w.records));
        g.bench_function(BenchmarkId::new("goflow", DATAGRAMS), |b| {
            b.iter(|| black_box(goflow_pass(&mut d, &w)))
        });
        let mut p = netflow_parser(&w);
        g.bench_function(BenchmarkId::new("netflow_parser", DATAGRAMS), |b| {
            b.iter(|| {
                for dg in &w.datagrams {
                    let r = p.parse_bytes(black_box(dg));
                    black_box(&r);
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
