//! The Kafka backend's sink: one librdkafka producer per backend (`acks=all`, idempotent), shared
//! by the backend's lanes; each lane's [`KafkaSink`] groups the framed flows of its chunks into
//! messages (up to `flows_per_message` flows of one key, at most [`MESSAGE_BYTES_MAX`] bytes) and
//! hands them to the producer as they fill.
//!
//! **A flush is done when every message of it has its delivery report.** Each message carries
//! (as librdkafka's delivery opaque) a handle on its flush's [`Tracker`]. `flush_start` sends
//! the partly filled messages and returns at once: the flush is in flight, and the lane goes
//! on filling the next one (the backend bounds how many a lane has in flight:
//! `flushes_in_flight`). When the tracker has a report for every message it wakes the lane,
//! which takes the outcomes oldest first (`flush_outcome`). If any report is an error (after
//! librdkafka's own retries, within `message.timeout.ms`), or a report is missing 10 s past
//! that, the flush fails as retriable and the backend writes the chunks of it and of every
//! younger flush again after its backoff: flows are never lost silently; the messages of the
//! failed flushes that were delivered are sent again (at-least-once across attempts, each flow
//! once per attempt). Failures are counted per reason ([`REASONS`]). `flush` (start, then wait
//! for every flush in flight) is the same, stop-and-wait.
//!
//! A broker that is down at start is not an error: the producer connects in the background and
//! the first flushes fail (retriable, `timed_out`) until it is up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::encode::frames;
use super::{KafkaConfig, MESSAGE_BYTES_MAX, sink_timeouts::MESSAGE_TIMEOUT_MS};
use crate::sink::{Chunk, FlushWaker, Sink, SinkError};

/// Delivery failure reasons (a closed set: status keys and metric label values).
pub const REASONS: [&str; 7] = [
    "timed_out",
    "broker_down",
    "queue_full",
    "too_large",
    "auth",
    "topic",
    "other",
];

/// The reason index of a delivery error.
fn reason(e: &KafkaError) -> usize {
    use RDKafkaErrorCode as C;
    let code = match e {
        KafkaError::MessageProduction(c) => *c,
        _ => return 6,
    };
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => 0,
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::NetworkException
        | C::NotLeaderForPartition
        | C::LeaderNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend => 1,
        C::QueueFull => 2,
        C::MessageSizeTooLarge | C::InvalidMessageSize => 3,
        C::SaslAuthenticationFailed
        | C::Authentication
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SSL => 4,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::InvalidTopic => 5,
        _ => 6,
    }
}

/// Whether a delivery error leaves the idempotent producer unusable (librdkafka raises a fatal
/// error, or the broker fenced its producer id or epoch, as after a bump it did not accept):
/// every later message would fail the same way, so the backend's producer is replaced.
fn is_fatal(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageProduction(
            C::Fatal
                | C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::OutOfOrderSequenceNumber
                | C::UnknownProducerId
                | C::InvalidProducerIdMapping
        )
    )
}

/// Buckets of the produce-to-ack histogram: bucket `i` counts acks within `2^i` µs (the last
/// one everything longer).
pub const ACK_BUCKETS: usize = 26;

/// What the ops API shows about a Kafka backend (shared by its lanes and the producer's
/// delivery callback). Counters only grow.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Messages handed to the producer.
    pub messages_sent: AtomicU64,
    /// Delivery reports received (acknowledged or failed): `messages_sent - reports` are in
    /// flight.
    pub reports: AtomicU64,
    /// Messages, flows and value bytes the broker acknowledged.
    pub messages: AtomicU64,
    pub flows: AtomicU64,
    pub bytes: AtomicU64,
    /// Failed deliveries by [`REASONS`] index.
    pub errors: [AtomicU64; REASONS.len()],
    /// Produce-to-ack times of acknowledged messages (see [`ACK_BUCKETS`]), and their sum.
    pub ack_us: [AtomicU64; ACK_BUCKETS],
    pub ack_us_sum: AtomicU64,
    pub ack_us_max: AtomicU64,
    /// Whether the last metadata request reached a broker (cleared by a failed flush).
    pub connected: AtomicBool,
    /// Producers replaced after a fatal error (see [`is_fatal`]).
    pub producer_restarts: AtomicU64,
    /// The first answer was logged.
    announced: AtomicBool,
}

impl KafkaStats {
    pub fn in_flight(&self) -> u64 {
        self.messages_sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.reports.load(Ordering::Relaxed))
    }

    fn record_ack(&self, us: u64) {
        let i = (64 - us.leading_zeros() as usize).min(ACK_BUCKETS - 1);
        self.ack_us[i].fetch_add(1, Ordering::Relaxed);
        self.ack_us_sum.fetch_add(us, Ordering::Relaxed);
        self.ack_us_max.fetch_max(us, Ordering::Relaxed);
    }

    /// The smallest bucket bound (µs) at or below which fraction `q` of the acks fall.
    pub fn ack_quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .ack_us
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return 1u64 << i;
            }
        }
        self.ack_us_max.load(Ordering::Relaxed)
    }

    /// Total failed deliveries.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One flush's delivery reports.
#[derive(Debug, Default)]
struct Tracker {
    state: Mutex<TrackState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct TrackState {
    /// Messages without a report yet.
    pending: u64,
    /// Messages (and their flows) whose report was an error.
    failed: u64,
    failed_flows: u64,
    first_error: Option<String>,
    /// A failure left the producer unusable.
    fatal: bool,
    /// Set when the flush ends (`flush_start`): woken once every message has its report.
    waker: Option<FlushWaker>,
}

impl Tracker {
    fn add(&self) {
        lock(&self.state).pending += 1;
    }

    fn report(&self, failure: Option<(u64, &KafkaError)>) {
        let mut s = lock(&self.state);
        s.pending = s.pending.saturating_sub(1);
        if let Some((flows, e)) = failure {
            s.failed += 1;
            s.failed_flows += flows;
            s.fatal |= is_fatal(e);
            s.first_error.get_or_insert_with(|| e.to_string());
        }
        if s.pending == 0 {
            self.done.notify_all();
            if let Some(w) = &s.waker {
                w.wake();
            }
        }
    }

    /// The flush has ended (no more messages): wake `waker` once every report is in.
    fn seal(&self, waker: &FlushWaker) {
        let mut s = lock(&self.state);
        if s.pending == 0 {
            waker.wake();
        }
        s.waker = Some(waker.clone());
    }

    /// Waits until every message has its report or `deadline` passes.
    fn wait(&self, deadline: Instant) -> MutexGuard<'_, TrackState> {
        let mut s = lock(&self.state);
        while s.pending > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .done
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        s
    }
}

/// A message's delivery opaque (its flush's tracker, what it carries, when it was sent).
#[derive(Debug)]
pub struct Sent {
    tracker: Arc<Tracker>,
    flows: u64,
    bytes: u64,
    at: Instant,
}

/// The producer's context: delivery reports into the stats and the flush's tracker; client
/// errors (a broker unreachable, ...) logged at most once per [`ERROR_LOG_INTERVAL`].
#[derive(Debug)]
pub struct KafkaContext {
    stats: Arc<KafkaStats>,
    backend: String,
    last_log: Mutex<Option<Instant>>,
}

/// How long the connect check waits for a broker's metadata.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// At most one librdkafka error log line per backend per this interval.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let mut last = lock(&self.last_log);
        if last.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
            *last = Some(Instant::now());
            log::warn!("backend {}: kafka: {error}: {reason}", self.backend);
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                let mut last = lock(&self.last_log);
                if last.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
                    *last = Some(Instant::now());
                    log::warn!("backend {}: librdkafka {fac}: {msg}", self.backend);
                }
            }
            _ => log::debug!("backend {}: librdkafka {fac}: {msg}", self.backend),
        }
    }
}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let s = &self.stats;
        s.reports.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                s.messages.fetch_add(1, Ordering::Relaxed);
                s.flows.fetch_add(sent.flows, Ordering::Relaxed);
                s.bytes.fetch_add(sent.bytes, Ordering::Relaxed);
                s.record_ack(u64::try_from(sent.at.elapsed().as_micros()).unwrap_or(u64::MAX));
                sent.tracker.report(None);
            }
            Err((e, _)) => {
                s.errors[reason(e)].fetch_add(1, Ordering::Relaxed);
                sent.tracker.report(Some((sent.flows, e)));
            }
        }
    }
}

type Kproducer = ThreadedProducer<KafkaContext>;

/// The backend's one producer, shared by its lanes, and what it takes to make a new one when a
/// fatal error leaves it unusable: the lane that sees the error replaces it (once per
/// generation), the others pick the new one up at their next write or flush.
struct ProducerSlot {
    config: ClientConfig,
    stats: Arc<KafkaStats>,
    backend: String,
    current: Mutex<(u64, Kproducer)>,
    generation: AtomicU64,
}

impl ProducerSlot {
    fn create(
        config: &ClientConfig,
        stats: &Arc<KafkaStats>,
        backend: &str,
    ) -> Result<Kproducer, KafkaError> {
        config.create_with_context(KafkaContext {
            stats: Arc::clone(stats),
            backend: backend.to_owned(),
            last_log: Mutex::new(None),
        })
    }

    /// The current producer and its generation.
    fn get(&self) -> (u64, Kproducer) {
        let g = lock(&self.current);
        (g.0, g.1.clone())
    }

    /// Replaces generation `seen` (a newer one is kept as it is).
    fn replace(&self, seen: u64, why: &str) {
        let mut g = lock(&self.current);
        if g.0 != seen {
            return;
        }
        match Self::create(&self.config, &self.stats, &self.backend) {
            Ok(p) => {
                log::warn!(
                    "backend {}: kafka producer unusable ({why}): a new producer takes over; \
                     the failed flush is retried",
                    self.backend
                );
                g.1 = p;
                g.0 += 1;
                self.generation.store(g.0, Ordering::Release);
                self.stats.producer_restarts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => log::error!(
                "backend {}: kafka producer unusable ({why}) and no new one: {e}",
                self.backend
            ),
        }
    }
}

/// One message being filled: the values of its flows, back to back.
#[derive(Debug, Default)]
struct Acc {
    key: Box<[u8]>,
    value: Vec<u8>,
    flows: u64,
}

/// Asks the brokers about a backend's topic (start-up log line, `--check`, /healthz).
#[derive(Clone)]
pub struct KafkaProbe {
    producer: Kproducer,
    topic: String,
    stats: Arc<KafkaStats>,
}

impl std::fmt::Debug for KafkaProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProbe")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaProbe {
    /// The topic's partition count from a broker's metadata, or why there is none. Blocks up
    /// to `timeout`.
    pub fn probe(&self, timeout: Duration) -> Result<usize, String> {
        let r = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout);
        let out = match r {
            Ok(md) => match md.topics().first() {
                Some(t) if t.error().is_none() => Ok(t.partitions().len()),
                Some(t) => Err(format!("topic {}: {:?}", self.topic, t.error())),
                None => Err(format!("topic {} not in the metadata", self.topic)),
            },
            Err(e) => Err(e.to_string()),
        };
        self.stats.connected.store(out.is_ok(), Ordering::Relaxed);
        out
    }
}

/// One lane's sink (see the module docs).
pub struct KafkaSink {
    producer: Kproducer,
    /// The backend's shared producer, and the generation of `producer`.
    slot: Arc<ProducerSlot>,
    generation: u64,
    stats: Arc<KafkaStats>,
    topic: String,
    flows_per_message: u64,
    target: String,
    /// Messages being filled, and their index by key (`last` caches the previous flow's).
    accs: Vec<Acc>,
    index: HashMap<Box<[u8]>, usize>,
    last: Option<usize>,
    /// The open flush's delivery reports.
    tracker: Arc<Tracker>,
    /// Messages handed to the producer in the open flush.
    sent: u64,
    /// Flushes in flight, oldest first, and the id of the next one.
    flights: VecDeque<Flight>,
    next_flight: u64,
}

/// A flush in flight: its reports, messages, and when a missing report counts as a failure.
#[derive(Debug)]
struct Flight {
    id: u64,
    tracker: Arc<Tracker>,
    sent: u64,
    deadline: Instant,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("target", &self.target)
            .field("flows_per_message", &self.flows_per_message)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates the backend's producer and `cfg.lanes` sinks sharing it. Fails only on a
    /// property librdkafka rejects (a bad `rdkafka:` entry, a missing CA file, ...), never
    /// because a broker is down. The error text has no secrets.
    pub fn lanes(cfg: &KafkaConfig, backend: &str) -> Result<Vec<KafkaSink>, SinkError> {
        if cfg.server.is_empty() {
            return Err(SinkError::fatal("kafka: KAFKA_SERVER is not set"));
        }
        if cfg.topic.is_empty() {
            return Err(SinkError::fatal("kafka: KAFKA_TOPIC is not set"));
        }
        let mut cc = ClientConfig::new();
        for (k, v) in cfg.producer_properties() {
            cc.set(k, v);
        }
        let stats = Arc::new(KafkaStats::default());
        let producer = ProducerSlot::create(&cc, &stats, backend)
            .map_err(|e| SinkError::fatal(format!("kafka: cannot create the producer: {e}")))?;
        let slot = Arc::new(ProducerSlot {
            config: cc,
            stats: Arc::clone(&stats),
            backend: backend.to_owned(),
            current: Mutex::new((0, producer.clone())),
            generation: AtomicU64::new(0),
        });
        let target = format!("{} topic {}", cfg.server, cfg.topic);
        Ok((0..cfg.lanes.max(1))
            .map(|_| KafkaSink {
                producer: producer.clone(),
                slot: Arc::clone(&slot),
                generation: 0,
                stats: Arc::clone(&stats),
                topic: cfg.topic.clone(),
                flows_per_message: cfg.flows_per_message.max(1) as u64,
                target: target.clone(),
                accs: Vec::new(),
                index: HashMap::new(),
                last: None,
                tracker: Arc::default(),
                sent: 0,
                flights: VecDeque::new(),
                next_flight: 0,
            })
            .collect())
    }

    /// The backend's Kafka counters.
    pub fn stats(&self) -> &Arc<KafkaStats> {
        &self.stats
    }

    /// Asks a broker for the topic's metadata (once while it answers; again after a flush
    /// failed): a broker that is down is a retriable error, logged by the backend, while the
    /// producer keeps trying to connect in the background.
    pub fn check_connected(&self) -> Result<(), SinkError> {
        if self.stats.connected.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.probe_handle().probe(CONNECT_TIMEOUT) {
            Ok(partitions) => {
                if !self.stats.announced.swap(true, Ordering::Relaxed) {
                    log::info!(
                        "kafka: broker answered, {} has {partitions} partitions",
                        self.target
                    );
                }
                Ok(())
            }
            Err(e) => Err(SinkError::retriable(format!(
                "kafka: no broker of {} answered within {CONNECT_TIMEOUT:?}: {e}",
                self.target
            ))),
        }
    }

    /// A handle that asks the brokers about the topic (for another thread).
    pub fn probe_handle(&self) -> KafkaProbe {
        KafkaProbe {
            producer: self.producer.clone(),
            topic: self.topic.clone(),
            stats: Arc::clone(&self.stats),
        }
    }

    /// Picks up a producer another lane put in place of an unusable one.
    fn refresh_producer(&mut self) {
        if self.slot.generation.load(Ordering::Acquire) != self.generation {
            (self.generation, self.producer) = self.slot.get();
        }
    }

    fn acc_for(&mut self, key: &[u8]) -> usize {
        if let Some(i) = self.last
            && self.accs.get(i).is_some_and(|a| *a.key == *key)
        {
            return i;
        }
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                let i = self.accs.len();
                let key: Box<[u8]> = key.into();
                self.accs.push(Acc {
                    key: key.clone(),
                    value: Vec::new(),
                    flows: 0,
                });
                self.index.insert(key, i);
                i
            }
        };
        self.last = Some(i);
        i
    }

    /// Hands message `i` to the producer (waiting while librdkafka's queue is full) and empties
    /// it. A message the producer refuses outright is counted as a failed delivery.
    fn send(&mut self, i: usize) {
        let Some(acc) = self.accs.get_mut(i) else {
            return;
        };
        if acc.flows == 0 {
            return;
        }
        let sent = Box::new(Sent {
            tracker: Arc::clone(&self.tracker),
            flows: acc.flows,
            bytes: acc.value.len() as u64,
            at: Instant::now(),
        });
        self.tracker.add();
        self.sent += 1;
        self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        let mut rec = BaseRecord::with_opaque_to(&self.topic, sent).payload(&acc.value[..]);
        if !acc.key.is_empty() {
            rec = rec.key(&acc.key[..]);
        }
        let deadline = Instant::now() + Duration::from_millis(MESSAGE_TIMEOUT_MS);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    // librdkafka's queue is full: let deliveries drain it.
                    rec = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, r)) => {
                    self.stats.reports.fetch_add(1, Ordering::Relaxed);
                    self.stats.errors[reason(&e)].fetch_add(1, Ordering::Relaxed);
                    r.delivery_opaque
                        .tracker
                        .report(Some((r.delivery_opaque.flows, &e)));
                    break;
                }
            }
        }
        acc.value.clear();
        acc.flows = 0;
    }

    /// The outcome of flight `i` (every report in, or its deadline passed).
    fn outcome(&mut self, f: &Flight) -> Result<(), SinkError> {
        let s = lock(&f.tracker.state);
        let (pending, failed, failed_flows) = (s.pending, s.failed, s.failed_flows);
        let first = s.first_error.clone();
        let fatal = s.fatal;
        drop(s);
        if pending == 0 && failed == 0 {
            return Ok(());
        }
        let why = self
            .producer
            .client()
            .fatal_error()
            .map(|(code, e)| format!("{code:?}: {e}"))
            .or_else(|| fatal.then(|| first.clone().unwrap_or_default()));
        if let Some(why) = why {
            self.slot.replace(self.generation, &why);
            self.refresh_producer();
        }
        // The next connect check asks the brokers again.
        self.stats.connected.store(false, Ordering::Relaxed);
        let sent = f.sent;
        if pending > 0 {
            return Err(SinkError::retriable(format!(
                "kafka: {pending} of {sent} messages without a delivery report after {} s",
                FLUSH_REPORT_WAIT.as_secs()
            )));
        }
        Err(SinkError::retriable(format!(
            "kafka: {failed} of {sent} messages ({failed_flows} flows) not delivered: {}",
            first.unwrap_or_default()
        )))
    }

    fn reset(&mut self) {
        for a in &mut self.accs {
            a.value.clear();
            a.flows = 0;
        }
        // Many distinct keys (exporters) come and go: do not keep them all forever.
        if self.accs.len() > 4096 {
            self.accs.clear();
            self.index.clear();
        }
        self.last = None;
        self.tracker = Arc::default();
        self.sent = 0;
    }
}

/// How long a flush waits for its last delivery report: librdkafka reports every message
/// within `message.timeout.ms`; the margin covers a report that is late in the queue.
const FLUSH_REPORT_WAIT: Duration = Duration::from_millis(MESSAGE_TIMEOUT_MS + 10_000);

impl Sink for KafkaSink {
    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
        self.refresh_producer();
        let mut it = frames(&chunk.rows);
        for f in it.by_ref() {
            let i = self.acc_for(f.key);
            let full = self
                .accs
                .get(i)
                .is_some_and(|a| a.flows > 0 && a.value.len() + f.value.len() > MESSAGE_BYTES_MAX);
            if full {
                self.send(i);
            }
            let Some(a) = self.accs.get_mut(i) else {
                continue;
            };
            a.value.extend_from_slice(f.value);
            a.flows += 1;
            if a.flows >= self.flows_per_message {
                self.send(i);
            }
        }
        if it.truncated() {
            return Err(SinkError::fatal(
                "kafka: a chunk is not in the Kafka encoder's framing",
            ));
        }
        Ok(())
    }

    /// Stop-and-wait: ends the open flush and waits for every flush in flight.
    fn flush(&mut self) -> Result<(), SinkError> {
        let (waker, _woken) = FlushWaker::new();
        self.flush_start(&waker)?;
        let mut first_error = None;
        while let Some((id, tracker, deadline)) = self
            .flights
            .front()
            .map(|f| (f.id, Arc::clone(&f.tracker), f.deadline))
        {
            drop(tracker.wait(deadline));
            if let Some(Err(e)) = self.flush_outcome(id) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn flush_start(&mut self, waker: &FlushWaker) -> Result<Option<u64>, SinkError> {
        self.refresh_producer();
        for i in 0..self.accs.len() {
            self.send(i);
        }
        let id = self.next_flight;
        self.next_flight += 1;
        let tracker = std::mem::take(&mut self.tracker);
        tracker.seal(waker);
        self.flights.push_back(Flight {
            id,
            tracker,
            sent: std::mem::take(&mut self.sent),
            deadline: Instant::now() + FLUSH_REPORT_WAIT,
        });
        Ok(Some(id))
    }

    fn flush_outcome(&mut self, id: u64) -> Option<Result<(), SinkError>> {
        let Some(i) = self.flights.iter().position(|f| f.id == id) else {
            return Some(Err(SinkError::retriable(format!(
                "kafka: flush {id} is not in flight (aborted)"
            ))));
        };
        let f = self.flights.get(i)?;
        let settled = lock(&f.tracker.state).pending == 0 || Instant::now() >= f.deadline;
        if !settled {
            return None;
        }
        let f = self.flights.remove(i)?;
        Some(self.outcome(&f))
    }

    fn abort(&mut self) {
        self.reset();
        // Their reports go to trackers nobody reads: the backend writes their chunks again.
        self.flights.clear();
    }

    fn connect(&mut self) -> Result<(), SinkError> {
        self.check_connected()
    }

    fn status(&mut self) -> Vec<(&'static str, String)> {
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let errors: Vec<String> = REASONS
            .iter()
            .zip(&s.errors)
            .map(|(r, c)| format!("\"{r}\":{}", c.load(Ordering::Relaxed)))
            .collect();
        let acks: u64 = s.ack_us.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let mean = s
            .ack_us_sum
            .load(Ordering::Relaxed)
            .checked_div(acks)
            .unwrap_or(0);
        vec![
            ("messages", n(&s.messages)),
            ("flows", n(&s.flows)),
            ("bytes", n(&s.bytes)),
            ("messages_sent", n(&s.messages_sent)),
            ("in_flight", s.in_flight().to_string()),
            ("delivery_errors", s.errors_total().to_string()),
            (
                "delivery_errors_by_reason",
                format!("{{{}}}", errors.join(",")),
            ),
            (
                "ack_latency_us",
                format!(
                    "{{\"count\":{acks},\"sum\":{},\"mean\":{mean},\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{}}}",
                    s.ack_us_sum.load(Ordering::Relaxed),
                    s.ack_quantile_us(0.5),
                    s.ack_quantile_us(0.9),
                    s.ack_quantile_us(0.99),
                    s.ack_us_max.load(Ordering::Relaxed)
                ),
            ),
            (
                "ack_latency_buckets_us",
                format!(
                    "[{}]",
                    s.ack_us
                        .iter()
                        .map(|c| c.load(Ordering::Relaxed).to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            ("connected", s.connected.load(Ordering::Relaxed).to_string()),
            ("producer_restarts", n(&s.producer_restarts)),
        ]
    }
}

#[cfg(test)]
mod tests {
    //! Fault tests on librdkafka's in-process mock cluster (it keeps 5 MiB per partition: the
    //! tests stay far below). Every flow carries a unique `in_pkts` so a lost or doubled flow
    //! shows.
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use bytes::BytesMut;
    use goflow_codec::{FlowRecord, Sampling};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{Message, Offset, TopicPartitionList};

    use super::*;
    use crate::backend::{Backend, BackendOptions};
    use crate::kafka::encode::tests::{ctx, decode_delimited, record_bytes};
    use crate::kafka::{Format, KafkaEncoder, KeyBy};
    use crate::sink::RowEncoder;

    const PARTITIONS: i32 = 3;

    /// `n` flows from `exporters` exporters (half of them IPv6), flow `i` with in_pkts = i + 1
    /// and in_bytes = 1000 * (i + 1), in chunks of `per_chunk`.
    fn chunks(n: u64, per_chunk: u64, format: Format, key: KeyBy) -> Vec<Chunk> {
        let mut enc = KafkaEncoder::new(format, key);
        let mut out = Vec::new();
        let mut i = 0;
        while i < n {
            let mut rows = BytesMut::new();
            let mut count = 0;
            while count < per_chunk && i < n {
                let exporter = if i % 2 == 0 {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 5) as u8))
                } else {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, (i % 5) as u16))
                };
                let (plan, mut bytes) = record_bytes(exporter, exporter);
                // in_bytes at 16/32 + 2 + 2 + 1 (see record_bytes), then in_pkts.
                let at = plan.in_bytes.offset as usize;
                bytes[at..at + 8].copy_from_slice(&(1000 * (i + 1)).to_be_bytes());
                bytes[at + 8..at + 12].copy_from_slice(&(i as u32 + 1).to_be_bytes());
                let c = ctx(exporter, 10);
                enc.encode(
                    &FlowRecord::new(&bytes, &plan, &c, Sampling::default()),
                    &mut rows,
                );
                count += 1;
                i += 1;
            }
            out.push(Chunk {
                rows: rows.freeze(),
                count,
                oldest_received_us: 0,
                position: None,
            });
        }
        out
    }

    fn config(servers: &str, topic: &str, extra: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            server: servers.to_owned(),
            topic: topic.to_owned(),
            flows_per_message: 7,
            rdkafka: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    /// Reads every partition from the beginning until `flows` flows are read (or 30 s pass):
    /// in_pkts -> times seen, and the message count.
    fn read_back(servers: &str, topic: &str, flows: u64) -> (BTreeMap<u64, u32>, u64) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", "goflow-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut seen = BTreeMap::new();
        let (mut total, mut messages) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while total < flows && Instant::now() < deadline {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.expect("message");
            messages += 1;
            for f in decode_delimited(m.payload().unwrap_or_default()) {
                *seen.entry(f.packets).or_insert(0) += 1;
                total += 1;
            }
        }
        // Anything beyond `flows` (a duplicate) arrives with the rest: look a moment longer.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                messages += 1;
                for f in decode_delimited(m.payload().unwrap_or_default()) {
                    *seen.entry(f.packets).or_insert(0) += 1;
                }
            }
        }
        (seen, messages)
    }

    fn assert_each_once(seen: &BTreeMap<u64, u32>, n: u64) {
        assert_eq!(seen.len() as u64, n, "distinct flows");
        assert!(seen.values().all(|&c| c == 1), "a flow was doubled");
        assert_eq!(seen.keys().next(), Some(&1));
        assert_eq!(seen.keys().last(), Some(&n));
    }

    fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_flush_waits_for_every_ack_and_groups_flows_per_key() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("f1", PARTITIONS, 1).expect("topic");
        let bs = cluster.bootstrap_servers();
        let mut sinks = KafkaSink::lanes(&config(&bs, "f1", &[]), "t").expect("sink");
        let mut sink = sinks.remove(0);
        let n = 1000;
        for c in chunks(n, 100, Format::Protobuf, KeyBy::Exporter) {
            sink.write(&c).expect("write");
        }
        sink.flush().expect("flush");
        let st = Arc::clone(sink.stats());
        assert_eq!(st.in_flight(), 0, "flush returned before every report");
        assert_eq!(st.flows.load(Ordering::Relaxed), n);
        let msgs = st.messages.load(Ordering::Relaxed);
        // 10 exporter keys; per chunk of 100 each key has 10 flows -> one full message of 7
        // per key per chunk, the rest (3 per key per chunk, 30 per key in all) fill more.
        assert!(msgs >= n / 7 && msgs <= n / 7 + 10, "{msgs} messages");
        assert!(st.ack_quantile_us(0.5) > 0);
        let (seen, read_msgs) = read_back(&bs, "f1", n);
        assert_each_once(&seen, n);
        assert_eq!(read_msgs, msgs);
        let status: BTreeMap<_, _> = sink.status().into_iter().collect();
        assert_eq!(status["flows"], n.to_string());
        assert_eq!(status["in_flight"], "0");
        let parsed: serde_json::Value =
            serde_json::from_str(&status["delivery_errors_by_reason"]).expect("json");
        assert_eq!(parsed["timed_out"], 0);
        let _: serde_json::Value = serde_json::from_str(&status["ack_latency_us"]).expect("json");
    }

    /// The broker is down when the backend starts: its connect check and flushes fail
    /// (counted, retried by the backend), nothing is lost, and everything arrives once it is
    /// back.
    #[test]
    fn broker_down_then_up_loses_nothing() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("f2", PARTITIONS, 1).expect("topic");
        let bs = cluster.bootstrap_servers();
        cluster.broker_down(1).expect("down");
        let sinks = KafkaSink::lanes(&config(&bs, "f2", &[("message.timeout.ms", "1500")]), "t")
            .expect("a broker that is down is no error at start");
        let kstats = Arc::clone(sinks[0].stats());
        let mut opts = BackendOptions::new("k", "kafka");
        opts.flush_rows = 500;
        opts.flush_interval = Duration::from_millis(100);
        let backend = Backend::spawn_lanes(
            sinks
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn Sink>)
                .collect(),
            opts,
        )
        .expect("backend");
        let n = 2000;
        let tx = backend.sender();
        for c in chunks(n, 250, Format::Protobuf, KeyBy::Flow) {
            assert!(tx.try_send(c));
        }
        // The connect check (or a flush timing out) fails and is counted.
        wait_for("a failed attempt", 20, || {
            backend.stats().errors.load(Ordering::Relaxed) > 0
        });
        assert_eq!(backend.stats().rows_written.load(Ordering::Relaxed), 0);
        assert!(backend.stats().errors.load(Ordering::Relaxed) > 0);
        cluster.broker_up(1).expect("up");
        wait_for("every row written", 30, || {
            backend.stats().rows_written.load(Ordering::Relaxed) == n
        });
        backend.shutdown();
        assert_eq!(kstats.flows.load(Ordering::Relaxed), n);
        assert_eq!(kstats.in_flight(), 0);
        let (seen, _) = read_back(&bs, "f2", n);
        assert_each_once(&seen, n);
    }

    /// Retriable produce errors are retried inside librdkafka (idempotent: no duplicates);
    /// a non-retriable one fails the flush, is counted by reason and goes back to the
    /// backend's retry, which delivers once the error is gone.
    #[test]
    fn injected_errors_are_retried_counted_and_nothing_is_lost() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("f3", PARTITIONS, 1).expect("topic");
        let bs = cluster.bootstrap_servers();
        let mut sinks = KafkaSink::lanes(
            &config(
                &bs,
                "f3",
                &[("message.timeout.ms", "5000"), ("retry.backoff.ms", "10")],
            ),
            "t",
        )
        .expect("sink");
        let mut sink = sinks.remove(0);
        let st = Arc::clone(sink.stats());
        let n = 700;
        let all = chunks(n, 100, Format::Protobuf, KeyBy::None);

        // Retriable: NOT_ENOUGH_REPLICAS on the first produce requests.
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
        );
        for c in &all[..3] {
            sink.write(c).expect("write");
        }
        sink.flush().expect("retried inside the producer");
        assert_eq!(st.errors_total(), 0);

        // Not retriable: the flush fails and says why; the backend would write it again.
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 50],
        );
        for c in &all[3..] {
            sink.write(c).expect("write");
        }
        let e = sink.flush().expect_err("message too large");
        assert!(e.is_retriable(), "{e}");
        assert!(e.to_string().contains("not delivered"), "{e}");
        assert!(
            st.errors[3].load(Ordering::Relaxed) > 0,
            "counted as too_large"
        );
        let delivered_in_failed = st.flows.load(Ordering::Relaxed) - 300;
        cluster.clear_request_errors(RDKafkaApiKey::Produce);
        sink.abort();
        for c in &all[3..] {
            sink.write(c).expect("write");
        }
        sink.flush().expect("flush after the error cleared");
        let (seen, _) = read_back(&bs, "f3", n + delivered_in_failed);
        // Every flow at least once; doubled only what the failed attempt had delivered.
        assert_eq!(seen.len() as u64, n);
        let doubled = seen.values().filter(|&&c| c > 1).count() as u64;
        assert_eq!(doubled, delivered_in_failed);
        assert!(seen.values().all(|&c| c <= 2));
    }

    /// A fenced idempotent producer (as a broker answers after an epoch bump it did not
    /// accept) fails every later message: the flush fails, the producer is replaced, and the
    /// retry delivers.
    #[test]
    fn a_fenced_producer_is_replaced_and_the_retry_delivers() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("f5", PARTITIONS, 1).expect("topic");
        let bs = cluster.bootstrap_servers();
        let mut sinks =
            KafkaSink::lanes(&config(&bs, "f5", &[("message.timeout.ms", "3000")]), "t")
                .expect("sink");
        let (mut sink, mut other) = (sinks.remove(0), sinks.remove(0));
        let st = Arc::clone(sink.stats());
        let n = 300;
        let all = chunks(n, 100, Format::Protobuf, KeyBy::Exporter);
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 200],
        );
        for c in &all {
            sink.write(c).expect("write");
        }
        assert!(sink.flush().is_err(), "fenced");
        assert_eq!(st.producer_restarts.load(Ordering::Relaxed), 1);
        cluster.clear_request_errors(RDKafkaApiKey::Produce);
        sink.abort();
        for c in &all {
            sink.write(c).expect("write");
        }
        sink.flush().expect("the new producer delivers");
        // The other lane picks the new producer up too.
        other.write(&all[0]).expect("write");
        other.flush().expect("the other lane delivers");
        assert_eq!(other.generation, 1);
        let (seen, _) = read_back(&bs, "f5", n + 100);
        assert_eq!(seen.len() as u64, n);
        assert!(seen.values().all(|&c| c >= 1));
    }

    /// Several flushes of one lane in flight (the broker answers slowly, so a lane that waited
    /// for each flush would have one flush's messages in flight at most), and a burst of
    /// non-retriable produce errors fails some of them: each failed flush and every younger
    /// one go back to the backend's retry. Nothing is lost or dropped, every flow is counted
    /// written once, the failures are counted by reason.
    #[test]
    fn flushes_in_flight_fail_back_to_the_retry_and_lose_nothing() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("f6", PARTITIONS, 1).expect("topic");
        cluster
            .broker_round_trip_time(1, Duration::from_millis(100))
            .expect("rtt");
        let bs = cluster.bootstrap_servers();
        let mut cfg = config(
            &bs,
            "f6",
            &[("message.timeout.ms", "5000"), ("retry.backoff.ms", "10")],
        );
        cfg.lanes = 1;
        let sinks = KafkaSink::lanes(&cfg, "t").expect("sink");
        let kstats = Arc::clone(sinks[0].stats());
        let mut opts = BackendOptions::new("k", "kafka");
        opts.flush_rows = 100;
        opts.flush_interval = Duration::from_millis(50);
        opts.flushes_in_flight = 8;
        let backend = Backend::spawn_lanes(
            sinks
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn Sink>)
                .collect(),
            opts,
        )
        .expect("backend");
        let stats = Arc::clone(backend.stats());
        let n = 3000;
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 2],
        );
        let tx = backend.sender();
        for c in chunks(n, 100, Format::Protobuf, KeyBy::None) {
            assert!(tx.try_send(c));
        }
        let mut most_in_flight = 0;
        wait_for("every row written", 60, || {
            most_in_flight = most_in_flight.max(stats.flushes_in_flight.load(Ordering::Relaxed));
            stats.rows_written.load(Ordering::Relaxed) == n
        });
        backend.shutdown();
        assert!(
            most_in_flight > 1,
            "{most_in_flight} flushes in flight at most"
        );
        assert!(
            most_in_flight <= 8,
            "{most_in_flight} flushes in flight at most"
        );
        assert_eq!(stats.flushes_in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), n);
        assert_eq!(stats.rows_dropped(), 0);
        assert!(
            kstats.errors[3].load(Ordering::Relaxed) > 0,
            "counted as too_large"
        );
        assert!(stats.errors.load(Ordering::Relaxed) > 0, "a flush failed");
        assert_eq!(kstats.in_flight(), 0);
        let (seen, _) = read_back(&bs, "f6", kstats.flows.load(Ordering::Relaxed));
        assert_eq!(seen.len() as u64, n, "every flow, none lost");
    }

    #[test]
    fn json_messages_parse_and_one_flow_per_message() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("f4", PARTITIONS, 1).expect("topic");
        let bs = cluster.bootstrap_servers();
        let mut cfg = config(&bs, "f4", &[]);
        cfg.flows_per_message = 1;
        let mut sink = KafkaSink::lanes(&cfg, "t").expect("sink").remove(0);
        let n = 50;
        for c in chunks(n, 20, Format::Json, KeyBy::Exporter) {
            sink.write(&c).expect("write");
        }
        sink.flush().expect("flush");
        assert_eq!(sink.stats().messages.load(Ordering::Relaxed), n);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bs)
            .set("group.id", "goflow-test")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("f4", p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut pkts = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (pkts.len() as u64) < n && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("one object");
                let key = m.key().unwrap_or_default();
                assert!(key.len() == 4 || key.len() == 16, "exporter key");
                pkts.push(v["in_pkts"].as_u64().expect("in_pkts"));
            }
        }
        pkts.sort_unstable();
        assert_eq!(pkts, (1..=n).collect::<Vec<_>>());
    }
}
