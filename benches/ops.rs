//! What the ops histograms cost the pipeline. `record_batch_256x30` is everything the
//! histograms add to a worker per batch: recording the batch, one record per datagram (256) and
//! the publish check; `..._with_clock` adds the two clock reads that time the batch (which the
//! worker does anyway for its busy-time counter). `pipeline_256x30_json` is the work it instruments: decoding 256
//! NetFlow v5 datagrams of 30 records and encoding every record as a JSON line (the default
//! backend); `pipeline_256x30_decode_only` decodes and reads one field per record (the `null`
//! backend's floor). Recording should cost under 1% of the pipeline. `publish` is the once-a-second merge
//! into the shared hub (off the per-batch path).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use goflow::ops::histogram::{HistogramHub, LocalHistograms};
use goflow_codec::encode::{Flow, V5Builder, V5Header};
use goflow_codec::{Decoder, DecoderConfig};

const BATCH_DATAGRAMS: usize = 256;
const RECORDS_PER_DATAGRAM: usize = 30;

fn datagrams() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(BATCH_DATAGRAMS);
    let mut seq = 0u32;
    for d in 0..BATCH_DATAGRAMS {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: 1_800_000_000,
            flow_sequence: seq,
            ..V5Header::default()
        });
        for r in 0..RECORDS_PER_DATAGRAM {
            let flow = Flow {
                src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, (d % 256) as u8, r as u8)),
                dst_ip: IpAddr::V4(Ipv4Addr::new(192, 168, 1, r as u8)),
                src_port: 1024 + r as u16,
                dst_port: 443,
                protocol: 6,
                bytes: 1500 * (r as u64 + 1),
                packets: r as u64 + 1,
                first_uptime_ms: 3_500_000,
                last_uptime_ms: 3_599_000,
                ..Flow::default()
            };
            // 30 records fit a v5 datagram by definition.
            let _ = b.push(&flow);
        }
        seq = seq.wrapping_add(RECORDS_PER_DATAGRAM as u32);
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        out.push(pkt);
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    g.throughput(Throughput::Elements(
        (BATCH_DATAGRAMS * RECORDS_PER_DATAGRAM) as u64,
    ));
    g.measurement_time(Duration::from_secs(4));

    let pkts = datagrams();
    let exporter = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut out = BytesMut::with_capacity(4 << 20);
    g.bench_function("pipeline_256x30_json", |b| {
        b.iter(|| {
            out.clear();
            for p in &pkts {
                let r = decoder.decode(exporter, 1_800_000_000_000_000, p, |rec| {
                    goflow_writers::json::encode_line(rec, &mut out);
                });
                black_box(&r);
            }
            black_box(out.len())
        })
    });

    let mut rows = 0u64;
    g.bench_function("pipeline_256x30_decode_only", |b| {
        b.iter(|| {
            for p in &pkts {
                let r = decoder.decode(exporter, 1_800_000_000_000_000, p, |rec| {
                    rows += u64::from(black_box(rec).src_port().unwrap_or(0) > 0);
                });
                black_box(&r);
            }
            black_box(rows)
        })
    });

    let hub = Arc::new(HistogramHub::new(&["default"]));
    let mut local = LocalHistograms::new(Arc::clone(&hub));
    // What the histograms add: the worker reads the clock around each batch for its own busy-time
    // counter anyway, so the clock reads are outside this one ...
    let now = Instant::now();
    g.bench_function("record_batch_256x30", |b| {
        b.iter(|| {
            for _ in 0..BATCH_DATAGRAMS {
                local.record_datagram(black_box(RECORDS_PER_DATAGRAM as u64));
            }
            local.record_batch(black_box(150), BATCH_DATAGRAMS as u64);
            local.maybe_publish(black_box(now))
        })
    });
    // ... and inside this one (an upper bound: recording plus two clock reads).
    g.bench_function("record_batch_256x30_with_clock", |b| {
        b.iter(|| {
            let t0 = Instant::now();
            for _ in 0..BATCH_DATAGRAMS {
                local.record_datagram(black_box(RECORDS_PER_DATAGRAM as u64));
            }
            let now = Instant::now();
            let us = now.saturating_duration_since(t0).as_micros() as u64;
            local.record_batch(black_box(us.max(150)), BATCH_DATAGRAMS as u64);
            local.maybe_publish(now)
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("publish", |b| {
        b.iter(|| {
            local.record_batch(150, 256);
            local.record_datagram(30);
            local.publish(Instant::now());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
