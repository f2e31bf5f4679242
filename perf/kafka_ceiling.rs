//! The Kafka producer's own ceiling, for perf/kafka.sh: reads up to 512 messages goflow
//! published (key and value, so the same sizes and the same compressibility), then publishes
//! them again and again to another topic for `--seconds`, with the producer settings a goflow
//! Kafka backend uses by default (goflow_writers::kafka::KafkaConfig::producer_properties:
//! acks=all, idempotent, lz4, linger.ms 5, batch.size 1 MB), waiting for every acknowledgement.
//! Nothing is received, decoded or encoded: what is left is librdkafka and the broker. Prints one
//! JSON line: messages and flows acknowledged, seconds, flows/s and the process's CPU per flow.
//!
//!   cargo run --release --example kafka_ceiling -- BROKERS SOURCE_TOPIC TARGET_TOPIC SECONDS

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goflow_writers::kafka::KafkaConfig;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

#[derive(Debug, Default)]
struct Counts {
    acked: AtomicU64,
    flows: AtomicU64,
    failed: AtomicU64,
}

struct Ctx(Arc<Counts>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, r: &DeliveryResult<'_>, flows: Box<u64>) {
        match r {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
                self.0.flows.fetch_add(*flows, Ordering::Relaxed);
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Flows in a message value: varint-delimited FlowMessages, or JSON lines.
fn flows_in(v: &[u8]) -> u64 {
    if v.first() == Some(&b'{') {
        return v.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let (mut at, mut n) = (0usize, 0u64);
    while at < v.len() {
        let (mut len, mut shift) = (0usize, 0);
        while let Some(&b) = v.get(at) {
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        at += len;
        n += 1;
    }
    n
}

/// CPU time of the whole process (every librdkafka thread included), seconds.
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, source, target, seconds] = &args[..] else {
        return Err("usage: kafka_ceiling BROKERS SOURCE_TOPIC TARGET_TOPIC SECONDS".into());
    };
    let seconds: f64 = seconds.parse()?;

    // The payloads: goflow's own messages.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{target}-ceiling"))
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(source), Duration::from_secs(10))?;
    let parts = md.topics().first().map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(source, i32::try_from(p)?, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut payloads: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while payloads.len() < 512 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v = m.payload().unwrap_or_default().to_vec();
            let n = flows_in(&v);
            payloads.push((m.key().unwrap_or_default().to_vec(), v, n));
        } else if !payloads.is_empty() {
            break;
        }
    }
    drop(consumer);
    if payloads.is_empty() {
        return Err(format!("no messages in {source}").into());
    }

    let cfg = KafkaConfig {
        server: brokers.clone(),
        topic: target.clone(),
        ..KafkaConfig::default()
    };
    let mut cc = ClientConfig::new();
    for (k, v) in cfg.producer_properties() {
        cc.set(k, v);
    }
    let counts = Arc::new(Counts::default());
    let producer: ThreadedProducer<Ctx> = cc.create_with_context(Ctx(Arc::clone(&counts)))?;
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let until = t0 + Duration::from_secs_f64(seconds);
    let (mut sent, mut i) = (0u64, 0usize);
    while Instant::now() < until {
        let (key, value, flows) = &payloads[i % payloads.len()];
        i += 1;
        let mut rec = BaseRecord::with_opaque_to(target, Box::new(*flows)).payload(&value[..]);
        if !key.is_empty() {
            rec = rec.key(&key[..]);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let (c1, secs) = (cpu_seconds(), t0.elapsed().as_secs_f64());
    let flows = counts.flows.load(Ordering::Relaxed);
    let bytes: usize = payloads.iter().map(|p| p.1.len()).sum();
    println!(
        "{{\"messages_sent\":{sent},\"messages_acked\":{},\"failed\":{},\"flows\":{flows},\
         \"mean_message_bytes\":{},\"seconds\":{secs:.3},\"flows_per_s\":{:.0},\"cpu_s\":{:.3},\
         \"cpu_us_per_flow\":{:.4}}}",
        counts.acked.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        bytes / payloads.len(),
        flows as f64 / secs,
        c1 - c0,
        (c1 - c0) * 1e6 / flows.max(1) as f64
    );
    Ok(())
}
