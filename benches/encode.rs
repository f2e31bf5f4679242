//! Row encoders, records in, backend bytes out: PostgreSQL binary COPY rows (the hot path of the
//! postgres backend; target >= 3 M rows/s on one core) and, for comparison, JSON lines. Inputs
//! are NetFlow v5 records read through the codec's static v5 plan, and IPv6 records through a
//! v9-like plan with 16-byte addresses and 8-byte counters. The output buffer is reused across
//! iterations, as a worker reuses its batch buffer. Throughput is in records
//! (`Throughput::Elements`); bytes per row are printed once. Each encoder runs with every column
//! (`all`, the default) and with the old collector's eight (`columns: legacy`), both
//! straight-line code (`schema::ColumnSet`). `kafka_pb` is the Kafka backend's FlowMessage
//! writer (framed, keyed by exporter).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use goflow_codec::v5::V5_PLAN;
use goflow_codec::{FlowRecord, PacketContext, Plan, Sampling, SamplingSource, Slot, TimeKind};
use goflow_writers::json;
use goflow_writers::kafka::{Format, KafkaEncoder, KeyBy};
use goflow_writers::pg;
use goflow_writers::schema::ColumnSet;
use goflow_writers::sink::RowEncoder;

/// Records per timed iteration (one worker batch of about 34 v5 datagrams).
const RECORDS: usize = 1024;

fn ctx(exporter: IpAddr) -> PacketContext {
    PacketContext {
        exporter,
        observation_domain: 258,
        version: 9,
        export_time_us: 1_767_225_600_500_000,
        sys_uptime_ms: 3_600_000,
        received_us: 1_767_225_601_000_000,
        system_init_ms: None,
    }
}

/// `RECORDS` v5 records (48 bytes each) with varying addresses, ports and counters.
fn v5_bytes() -> Vec<u8> {
    let mut b = Vec::with_capacity(RECORDS * 48);
    for i in 0..RECORDS as u32 {
        b.extend_from_slice(&(0x0a00_0000 | i).to_be_bytes()); // srcaddr
        b.extend_from_slice(&(0xc0a8_0000 | ((i * 7) & 0xffff)).to_be_bytes()); // dstaddr
        b.extend_from_slice(&0x0a00_00feu32.to_be_bytes()); // nexthop
        b.extend_from_slice(&[0, 3, 0, 4]); // input, output
        b.extend_from_slice(&(i + 1).to_be_bytes()); // dPkts
        b.extend_from_slice(&((i + 1) * 1400).to_be_bytes()); // dOctets
        b.extend_from_slice(&(3_598_000u32 - i).to_be_bytes()); // first
        b.extend_from_slice(&(3_599_000u32 - i).to_be_bytes()); // last
        b.extend_from_slice(&(1024 + i as u16).to_be_bytes()); // srcport
        b.extend_from_slice(&443u16.to_be_bytes()); // dstport
        b.extend_from_slice(&[0, 0x1b, 6, 0]); // pad, flags, proto, tos
        b.extend_from_slice(&[0xfd, 0xe9, 0xfd, 0xea, 24, 16, 0, 0]); // AS, masks, pad
    }
    b
}

/// A v9-like IPv6 layout: three 16-byte addresses, ports, proto, 8-byte counters, times.
fn v6_plan() -> Plan {
    Plan {
        record_len: 80,
        src_ip: Slot::new(0, 16),
        dst_ip: Slot::new(16, 16),
        next_hop: Slot::new(32, 16),
        src_port: Slot::new(48, 2),
        dst_port: Slot::new(50, 2),
        protocol: Slot::new(52, 1),
        tcp_flags: Slot::new(53, 1),
        in_bytes: Slot::new(54, 8),
        in_pkts: Slot::new(62, 8),
        input_if: Slot::new(70, 2),
        output_if: Slot::new(72, 2),
        first_switched: Slot::new(74, 4),
        first_kind: TimeKind::UptimeMs,
        last_switched: Slot::new(76, 4),
        last_kind: TimeKind::UptimeMs,
        ..Plan::EMPTY
    }
}

fn v6_bytes() -> Vec<u8> {
    let mut b = Vec::with_capacity(RECORDS * 80);
    for i in 0..RECORDS as u32 {
        let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
        b.extend_from_slice(&a.octets());
        b.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1).octets());
        b.extend_from_slice(&Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).octets());
        b.extend_from_slice(&(1024 + i as u16).to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b.extend_from_slice(&[6, 0x1b]);
        b.extend_from_slice(&(u64::from(i) * 1400).to_be_bytes());
        b.extend_from_slice(&u64::from(i + 1).to_be_bytes());
        b.extend_from_slice(&[0, 3, 0, 4]);
        b.extend_from_slice(&(3_598_000u32 - i).to_be_bytes());
        b.extend_from_slice(&(3_599_000u32 - i).to_be_bytes());
    }
    b
}

fn records<'a>(bytes: &'a [u8], plan: &'a Plan, ctx: &'a PacketContext) -> Vec<FlowRecord<'a>> {
    let sampling = Sampling {
        rate: 100,
        source: SamplingSource::V5Header,
    };
    bytes
        .chunks_exact(usize::from(plan.record_len))
        .map(|r| FlowRecord::new(r, plan, ctx, sampling))
        .collect()
}

fn encoders(c: &mut Criterion) {
    let v5 = v5_bytes();
    let v6 = v6_bytes();
    let plan6 = v6_plan();
    let ctx4 = ctx(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let ctx6 = ctx(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let inputs = [
        ("v5", records(&v5, &V5_PLAN, &ctx4)),
        ("v6", records(&v6, &plan6, &ctx6)),
    ];

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for (name, recs) in &inputs {
        for (set_name, set) in [("all", ColumnSet::ALL), ("legacy", ColumnSet::LEGACY)] {
            let id = format!("{name}/{set_name}");
            let mut enc = pg::encoder_for(set);
            let mut out = BytesMut::with_capacity(RECORDS * pg::encode::ROW_LEN_MAX);
            for r in recs {
                enc.encode(r, &mut out);
            }
            eprintln!("pg_copy/{id}: {} bytes per row", out.len() / recs.len());
            g.bench_with_input(BenchmarkId::new("pg_copy", &id), recs, |b, recs| {
                b.iter(|| {
                    out.clear();
                    for r in recs {
                        enc.encode(r, &mut out);
                    }
                    black_box(out.len())
                })
            });
            let mut lines = json::JsonLines::new(set);
            let mut line = Vec::with_capacity(RECORDS * 600);
            g.bench_with_input(BenchmarkId::new("json", &id), recs, |b, recs| {
                b.iter(|| {
                    line.clear();
                    for r in recs {
                        lines.encode(r, &mut line);
                    }
                    black_box(line.len())
                })
            });
        }
        // The Kafka backend's goflow2 FlowMessage writer (every field it has a number for),
        // keyed by exporter.
        let mut enc = KafkaEncoder::new(Format::Protobuf, KeyBy::Exporter);
        let mut out = BytesMut::with_capacity(RECORDS * 700);
        for r in recs {
            enc.encode(r, &mut out);
        }
        eprintln!("kafka_pb/{name}: {} bytes per flow", out.len() / recs.len());
        g.bench_with_input(BenchmarkId::new("kafka_pb", name), recs, |b, recs| {
            b.iter(|| {
                out.clear();
                for r in recs {
                    enc.encode(r, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encoders);
criterion_main!(benches);
