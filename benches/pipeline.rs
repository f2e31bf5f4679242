//! The per-worker pipeline on one batch: datagrams already in memory are decoded by the worker's
//! decoder and every record is encoded into each backend's buffer, then the batch ends (counters,
//! chunk hand-off to a backend thread whose sink discards). No sockets: this is what a worker
//! costs per batch beyond the receive call. Batches of 64 datagrams of NetFlow v5 (30 records
//! each), v9 and IPFIX (typical IPv4 templates, 24 records each); backends `null` (records
//! counted, not encoded) and `file` (JSON lines). Throughput in records.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use goflow::ingest::Datagram;
use goflow::pipeline::{EncoderFactory, NoObserver, Pipeline, WorkerCounters};
use goflow_codec::DecoderConfig;
use goflow_codec::encode::{
    IPFIX_TYPICAL_V4_TEMPLATE, IpfixBuilder, IpfixHeader, TYPICAL_V4_TEMPLATE, V5Builder, V5Header,
    V9Builder, V9Header, sample_flow_v4,
};
use goflow_writers::backend::{Backend, BackendOptions};
use goflow_writers::file::{JsonEncoder, NullEncoder, NullSink};
use goflow_writers::sink::RowEncoder;

/// Datagrams per batch.
const BATCH: usize = 64;
const EXPORT_SECS: u32 = 1_767_225_600;

/// (template datagram if any, `BATCH` data datagrams, records per batch).
fn batch(proto: &str) -> (Option<Vec<u8>>, Vec<Vec<u8>>, u64) {
    let mut data = Vec::with_capacity(BATCH);
    let mut template = None;
    let mut records = 0u64;
    for p in 0..BATCH as u32 {
        let mut pkt = Vec::new();
        match proto {
            "v5" => {
                let mut b = V5Builder::new(V5Header {
                    sys_uptime_ms: 3_600_000,
                    unix_secs: EXPORT_SECS,
                    flow_sequence: p * 30,
                    ..V5Header::default()
                });
                for r in 0..30 {
                    let _ = b.push(&sample_flow_v4(p * 30 + r));
                }
                records += b.count() as u64;
                b.finish(&mut pkt);
            }
            "v9" => {
                let header = V9Header {
                    sys_uptime_ms: 3_600_000,
                    unix_secs: EXPORT_SECS,
                    sequence: p,
                    source_id: 1,
                };
                if template.is_none() {
                    let mut t = V9Builder::new(header);
                    let _ = t.template(256, TYPICAL_V4_TEMPLATE);
                    let mut tp = Vec::new();
                    t.finish(&mut tp);
                    template = Some(tp);
                }
                let mut b = V9Builder::new(header);
                for r in 0..24 {
                    if b.data(256, TYPICAL_V4_TEMPLATE, &sample_flow_v4(p * 24 + r))
                        .is_ok()
                    {
                        records += 1;
                    }
                }
                b.finish(&mut pkt);
            }
            _ => {
                let header = IpfixHeader {
                    export_time: EXPORT_SECS,
                    sequence: p * 24,
                    observation_domain: 1,
                };
                if template.is_none() {
                    let mut t = IpfixBuilder::new(header);
                    let _ = t.template(256, IPFIX_TYPICAL_V4_TEMPLATE);
                    let mut tp = Vec::new();
                    t.finish(&mut tp);
                    template = Some(tp);
                }
                let mut b = IpfixBuilder::new(header);
                for r in 0..24 {
                    if b.data(256, IPFIX_TYPICAL_V4_TEMPLATE, &sample_flow_v4(p * 24 + r))
                        .is_ok()
                    {
                        records += 1;
                    }
                }
                b.finish(&mut pkt);
            }
        }
        data.push(pkt);
    }
    (template, data, records)
}

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_batch");
    let source: SocketAddr = "192.0.2.1:40000"
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([192, 0, 2, 1], 40000)));
    for backend in ["null", "file"] {
        for proto in ["v5", "v9", "ipfix"] {
            let (template, data, records) = batch(proto);
            let sink = Backend::spawn(
                Box::new(NullSink::default()),
                BackendOptions::new("bench", "null"),
            );
            let Ok(sink) = sink else {
                eprintln!("cannot start the backend thread");
                return;
            };
            let make: EncoderFactory = if backend == "null" {
                Arc::new(|| Box::new(NullEncoder) as Box<dyn RowEncoder>)
            } else {
                Arc::new(|| Box::new(JsonEncoder::default()) as Box<dyn RowEncoder>)
            };
            let mut p = Pipeline::new(
                DecoderConfig::default(),
                &[(make, sink.sender())],
                Arc::new(WorkerCounters::new(0)),
                Box::new(NoObserver),
            );
            if let Some(t) = &template {
                p.datagram(&Datagram {
                    source,
                    payload: t,
                    truncated: false,
                });
                p.end_batch(0);
            }
            g.throughput(Throughput::Elements(records));
            g.bench_with_input(BenchmarkId::new(backend, proto), &data, |b, data| {
                b.iter(|| {
                    for d in data {
                        p.datagram(&Datagram {
                            source,
                            payload: black_box(d),
                            truncated: false,
                        });
                    }
                    p.end_batch(0);
                });
            });
            drop(p);
            sink.shutdown();
        }
    }
    g.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
