//! The Kafka frontend's consumer thread: one librdkafka group member that reads the assigned
//! partitions, decodes each message ([`super::decode`]), encodes its flows with every
//! backend's own [`RowEncoder`] and hands them to the backends as *positioned* chunks (see
//! `goflow_writers::sink`): each chunk carries its partition's stream
//! (`kafka/<group>/<topic>/<partition>`) and the offset after its last message.
//!
//! **Exactly once into SQL.** A SQL sink stores the last position of every stream of a flush in
//! the same transaction as the flush's rows (the `<table>_positions` table). When partitions
//! are assigned, the consumer asks each backend for the stored positions and starts each
//! partition there (a backend that is ahead of another skips what it already has), whatever
//! Kafka's committed offset says. When partitions are revoked, every chunk of them not stored
//! yet is cancelled in the backends before the callback returns, so the next owner (which
//! starts from the stored position) cannot see rows written twice. Kafka offsets are still
//! committed, once a second, as what every backend has stored: informational for SQL backends
//! (lag tools), and the position itself for backends that keep none (the file backend:
//! committed after its fsync, so at-least-once).
//!
//! **Bounded.** Positioned chunks do not go through a backend's bounded queue; the consumer
//! bounds what it has handed to each backend and not seen stored, and pauses its partitions
//! while any backend is over its bound (it keeps polling, so the group keeps it).
//!
//! **Bad messages** are counted by reason, the first ones logged with topic, partition and
//! offset, and skipped: their offsets still move the partition's position on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use goflow_codec::UnixMicros;
use goflow_writers::backend::PositionedSender;
use goflow_writers::kafka::rdkafka;
use goflow_writers::sink::{Chunk, Position, RowEncoder, Stream};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList};

use super::decode::MessageDecoder;
use super::stats::{ConsumerStats, PartitionStatus};
use crate::config::KafkaFrontend;

/// Rows of one partition and one backend gathered before they are handed over as a chunk.
const CHUNK_ROWS: u64 = 8192;
/// Bytes of one chunk at most (a chunk is closed after the message that passes this).
const CHUNK_BYTES: usize = 4 << 20;
/// A partly filled chunk is handed over once it is this old.
const CHUNK_AGE: Duration = Duration::from_millis(50);
/// How often offsets are committed to Kafka and /status's partition table is refreshed.
const REFRESH: Duration = Duration::from_secs(1);
/// How long a revocation waits for a backend to forget the revoked partitions' chunks.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one stored-positions query may take before it is asked again.
const POSITIONS_TIMEOUT: Duration = Duration::from_secs(15);
/// Bad messages logged one by one; after that, a summary at most every [`BAD_LOG_INTERVAL`].
const BAD_LOGGED: u64 = 10;
const BAD_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// The poll timeout.
const POLL: Duration = Duration::from_millis(50);

/// One backend the frontend writes to.
pub struct Output {
    /// The backend's name.
    pub name: String,
    pub encoder: Box<dyn RowEncoder>,
    pub sender: PositionedSender,
    /// Rows and bytes the frontend may have handed to it and not seen stored; beyond either,
    /// reading pauses.
    pub max_rows: u64,
    pub max_bytes: u64,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("name", &self.name)
            .field("max_rows", &self.max_rows)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// What one backend has in flight from this frontend.
#[derive(Debug, Default)]
struct Inflight {
    rows: AtomicI64,
    bytes: AtomicI64,
}

/// One partition as one backend sees it: the backend's lane reports stores and drops here.
#[derive(Debug)]
struct PartStream {
    name: String,
    stats: Arc<ConsumerStats>,
    inflight: Arc<Inflight>,
    /// The offset this backend has stored up to (-1: unknown).
    stored: AtomicI64,
    /// Bytes of the chunks handed over and not reported yet, oldest first, with their `next`.
    sizes: Mutex<std::collections::VecDeque<(u64, u64)>>,
}

impl PartStream {
    fn settle(&self, next: u64, rows: u64) {
        self.inflight.rows.fetch_sub(rows as i64, Ordering::AcqRel);
        let mut sizes = self.sizes.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(n, bytes)) = sizes.front() {
            if n > next {
                break;
            }
            sizes.pop_front();
            self.inflight
                .bytes
                .fetch_sub(bytes as i64, Ordering::AcqRel);
        }
    }
}

impl Stream for PartStream {
    fn name(&self) -> &str {
        &self.name
    }

    fn committed(&self, next: u64, rows: u64) {
        self.stored
            .fetch_max(i64::try_from(next).unwrap_or(i64::MAX), Ordering::AcqRel);
        self.stats.rows_stored.fetch_add(rows, Ordering::Relaxed);
        self.settle(next, rows);
    }

    fn dropped(&self, next: u64, rows: u64) {
        self.stats.rows_dropped.fetch_add(rows, Ordering::Relaxed);
        self.settle(next, rows);
    }
}

/// A partly filled chunk of one partition for one backend.
#[derive(Debug, Default)]
struct Pending {
    rows: BytesMut,
    count: u64,
    oldest_us: Option<UnixMicros>,
    /// The offset after the last message in it (0: nothing since the last hand-over).
    next: u64,
}

/// One assigned partition.
#[derive(Debug)]
struct Part {
    topic: String,
    partition: i32,
    /// The offset expected next (-1 until the first message).
    next: i64,
    /// Per backend: its stream, the offset below which it already has everything, its
    /// partly filled chunk.
    streams: Vec<Arc<PartStream>>,
    skip_below: Vec<i64>,
    pending: Vec<Pending>,
    since: Option<Instant>,
    /// The offset last committed to Kafka.
    kafka_committed: i64,
}

/// Everything the consumer thread and the rebalance callback share.
struct State {
    group: String,
    outputs: Vec<Output>,
    inflight: Vec<Arc<Inflight>>,
    parts: HashMap<(String, i32), Part>,
    decoder: MessageDecoder,
    bad_logged: u64,
    last_bad_log: Option<Instant>,
    bad_since_log: u64,
}

impl State {
    fn stream_name(&self, topic: &str, partition: i32) -> String {
        format!("kafka/{}/{topic}/{partition}", self.group)
    }

    /// Hands the partly filled chunk of `part` for backend `b` over (also an empty one whose
    /// offsets moved on: skipped messages advance the stored position too).
    fn ship(outputs: &[Output], inflight: &[Arc<Inflight>], part: &mut Part, b: usize) {
        let p = &mut part.pending[b];
        if p.next == 0 {
            return;
        }
        let rows = p.rows.split().freeze();
        let bytes = rows.len() as u64;
        let stream = Arc::clone(&part.streams[b]);
        stream
            .sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((p.next, bytes));
        inflight[b].rows.fetch_add(p.count as i64, Ordering::AcqRel);
        inflight[b].bytes.fetch_add(bytes as i64, Ordering::AcqRel);
        let chunk = Chunk {
            rows,
            count: p.count,
            oldest_received_us: p.oldest_us.unwrap_or(0),
            position: Some(Position {
                stream: stream as Arc<dyn Stream>,
                next: p.next,
            }),
        };
        p.count = 0;
        p.oldest_us = None;
        p.next = 0;
        if outputs[b].sender.send(chunk).is_err() {
            log::debug!("kafka frontend: backend {} has stopped", outputs[b].name);
        }
    }

    fn ship_all(&mut self, older_than: Option<Duration>) {
        let now = Instant::now();
        for part in self.parts.values_mut() {
            let due = match (older_than, part.since) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(age), Some(t)) => now.saturating_duration_since(t) >= age,
            };
            if due {
                for b in 0..part.pending.len() {
                    State::ship(&self.outputs, &self.inflight, part, b);
                }
                part.since = None;
            }
        }
    }
}

/// The librdkafka context: the rebalance callback and the statistics.
struct Ctx {
    state: Arc<Mutex<State>>,
    stats: Arc<ConsumerStats>,
    stop: Arc<AtomicBool>,
    /// High watermarks from librdkafka's statistics.
    watermarks: Mutex<HashMap<(String, i32), i64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        let mut w = lock(&self.watermarks);
        for (name, t) in s.topics {
            for (p, part) in t.partitions {
                if p >= 0 && part.hi_offset >= 0 {
                    w.insert((name.clone(), p), part.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.stats.set_last_error(format!("{error}: {reason}"));
        log::warn!("kafka frontend: {error}: {reason}");
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(tpl);
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    log::error!("kafka frontend: cannot take the assigned partitions: {e}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(tpl);
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    log::error!("kafka frontend: cannot give the revoked partitions up: {e}");
                }
            }
            other => {
                log::error!("kafka frontend: rebalance error {other:?}; dropping the assignment");
                let all = {
                    let st = lock(&self.state);
                    let mut t = TopicPartitionList::new();
                    for (topic, p) in st.parts.keys() {
                        t.add_partition(topic, *p);
                    }
                    t
                };
                self.on_revoke(&all);
                let _ = consumer.unassign();
            }
        }
    }
}

impl Ctx {
    /// Asks every backend for its stored positions, sets each partition's start offset in
    /// `tpl` and sets the partitions up.
    fn on_assign(&self, tpl: &mut TopicPartitionList) {
        let (group, senders): (String, Vec<(String, PositionedSender)>) = {
            let st = lock(&self.state);
            (
                st.group.clone(),
                st.outputs
                    .iter()
                    .map(|o| (o.name.clone(), o.sender.clone()))
                    .collect(),
            )
        };
        let prefix = format!("kafka/{group}/");
        // Per backend: Some(stored positions) or None (the backend keeps none).
        let mut stored: Vec<Option<HashMap<String, u64>>> = Vec::with_capacity(senders.len());
        for (name, sender) in &senders {
            let mut warned = Instant::now();
            let mut first = true;
            loop {
                match sender.committed_positions(&prefix, POSITIONS_TIMEOUT) {
                    Ok(v) => {
                        stored.push(v.map(|v| v.into_iter().collect()));
                        break;
                    }
                    Err(e) => {
                        if first || warned.elapsed() >= Duration::from_secs(10) {
                            log::warn!(
                                "kafka frontend: backend {name} cannot tell its stored offsets \
                                 yet ({e}); the assigned partitions wait for it"
                            );
                            warned = Instant::now();
                            first = false;
                        }
                        if self.stop.load(Ordering::Relaxed) {
                            // Shutting down: start nowhere (the partitions are given up).
                            stored.push(Some(HashMap::new()));
                            break;
                        }
                        thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        }
        let mut st = lock(&self.state);
        let mut lines = Vec::new();
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|el| (el.topic().to_owned(), el.partition()))
            .collect();
        for (topic, partition) in assigned {
            let name = st.stream_name(&topic, partition);
            let mut streams = Vec::with_capacity(senders.len());
            let mut skip_below = Vec::with_capacity(senders.len());
            let mut all_known = true;
            let mut lowest: Option<i64> = None;
            for (b, s) in stored.iter().enumerate() {
                let at = s
                    .as_ref()
                    .and_then(|m| m.get(&name))
                    .and_then(|&p| i64::try_from(p).ok());
                match at {
                    Some(p) => lowest = Some(lowest.map_or(p, |l| l.min(p))),
                    None => all_known = false,
                }
                skip_below.push(at.unwrap_or(-1));
                streams.push(Arc::new(PartStream {
                    name: name.clone(),
                    stats: Arc::clone(&self.stats),
                    inflight: Arc::clone(&st.inflight[b]),
                    stored: AtomicI64::new(at.unwrap_or(-1)),
                    sizes: Mutex::new(std::collections::VecDeque::new()),
                }));
            }
            let start = match (all_known, lowest) {
                (true, Some(p)) => {
                    lines.push(format!("{topic}/{partition} at stored offset {p}"));
                    Offset::Offset(p)
                }
                _ => {
                    let why = if stored.iter().any(Option::is_none) {
                        "a backend keeps no offsets of its own"
                    } else {
                        "no stored offset yet"
                    };
                    lines.push(format!(
                        "{topic}/{partition} at the group's committed offset ({why})"
                    ));
                    Offset::Invalid
                }
            };
            if let Err(e) = tpl.set_partition_offset(&topic, partition, start) {
                log::error!("kafka frontend: cannot set the start of {topic}/{partition}: {e}");
            }
            let n = streams.len();
            st.parts.insert(
                (topic.clone(), partition),
                Part {
                    topic,
                    partition,
                    next: -1,
                    streams,
                    skip_below,
                    pending: (0..n).map(|_| Pending::default()).collect(),
                    since: None,
                    kafka_committed: -1,
                },
            );
        }
        drop(st);
        if lines.is_empty() {
            log::info!("kafka frontend: assigned no partition");
        } else {
            log::info!("kafka frontend: assigned {}", lines.join(", "));
        }
    }

    /// Forgets the revoked partitions: their unsent rows are dropped here and every chunk of
    /// them a backend has not stored yet is cancelled there, before the callback returns.
    fn on_revoke(&self, tpl: &TopicPartitionList) {
        let (removed, senders) = {
            let mut st = lock(&self.state);
            let mut removed = Vec::new();
            for el in tpl.elements() {
                if let Some(p) = st.parts.remove(&(el.topic().to_owned(), el.partition())) {
                    removed.push(p);
                }
            }
            let senders: Vec<(String, PositionedSender)> = st
                .outputs
                .iter()
                .map(|o| (o.name.clone(), o.sender.clone()))
                .collect();
            (removed, senders)
        };
        let mut names = Vec::new();
        for part in &removed {
            names.push(format!("{}/{}", part.topic, part.partition));
            for (b, (name, sender)) in senders.iter().enumerate() {
                let stream = &part.streams[b];
                match sender.cancel(&stream.name, CANCEL_TIMEOUT) {
                    Ok(rows) => {
                        self.stats.rows_cancelled.fetch_add(rows, Ordering::Relaxed);
                        stream
                            .inflight
                            .rows
                            .fetch_sub(rows as i64, Ordering::AcqRel);
                    }
                    Err(e) => log::error!(
                        "kafka frontend: backend {name} did not confirm forgetting {} ({e}); \
                         its rows may be stored by both this process and the partition's \
                         next owner",
                        stream.name
                    ),
                }
                // Whatever was in flight of it is settled now: stored (reported before the
                // lane took the cancel) or forgotten.
                let left: u64 = lock(&stream.sizes).drain(..).map(|x| x.1).sum();
                stream
                    .inflight
                    .bytes
                    .fetch_sub(left as i64, Ordering::AcqRel);
            }
        }
        if !names.is_empty() {
            log::info!("kafka frontend: revoked {}", names.join(", "));
        }
    }
}

/// The running Kafka frontend.
pub struct ConsumerFrontend {
    thread: Option<JoinHandle<()>>,
    stats: Arc<ConsumerStats>,
}

impl std::fmt::Debug for ConsumerFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerFrontend")
            .field("group", &self.stats.group_id)
            .finish_non_exhaustive()
    }
}

/// librdkafka's consumer properties for `cfg` (the SASL password included: for the client
/// only, never for logs).
pub fn consumer_properties(cfg: &KafkaFrontend) -> Vec<(String, String)> {
    let k = &cfg.kafka;
    let mut p: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, v: String| p.push((key.to_owned(), v));
    set("bootstrap.servers", k.server.clone());
    set("group.id", cfg.group_id.clone());
    // Offsets are goflow's business: stored with the rows, committed to Kafka by hand.
    set("enable.auto.commit", "false".to_owned());
    set("enable.auto.offset.store", "false".to_owned());
    set("auto.offset.reset", cfg.offset_reset.to_owned());
    set("session.timeout.ms", cfg.session_timeout_ms.to_string());
    set(
        "heartbeat.interval.ms",
        (cfg.session_timeout_ms / 3).clamp(100, 3000).to_string(),
    );
    set("statistics.interval.ms", "1000".to_owned());
    set("enable.partition.eof", "false".to_owned());
    set("security.protocol", k.security_protocol().to_owned());
    if let Some(user) = &k.sasl_user {
        set("sasl.mechanisms", k.sasl_mechanism.clone());
        set("sasl.username", user.clone());
        set("sasl.password", k.sasl_password.clone().unwrap_or_default());
    }
    if k.ssl {
        set(
            "enable.ssl.certificate.verification",
            k.ssl_verify.to_string(),
        );
        if !k.ssl_verify {
            set("ssl.endpoint.identification.algorithm", "none".to_owned());
        }
        if let Some(ca) = &k.ssl_ca_file {
            set("ssl.ca.location", ca.display().to_string());
        }
    }
    for (key, v) in &k.rdkafka {
        set(key, v.clone());
    }
    p
}

impl ConsumerFrontend {
    /// Creates the consumer, subscribes and starts the thread. `stop` ends it.
    pub fn start(
        cfg: &KafkaFrontend,
        outputs: Vec<Output>,
        stats: Arc<ConsumerStats>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<ConsumerFrontend> {
        let mut cc = ClientConfig::new();
        for (k, v) in consumer_properties(cfg) {
            cc.set(k, v);
        }
        let inflight = (0..outputs.len())
            .map(|_| Arc::new(Inflight::default()))
            .collect();
        let state = Arc::new(Mutex::new(State {
            group: cfg.group_id.clone(),
            outputs,
            inflight,
            parts: HashMap::new(),
            decoder: MessageDecoder::new(cfg.format),
            bad_logged: 0,
            last_bad_log: None,
            bad_since_log: 0,
        }));
        let ctx = Ctx {
            state: Arc::clone(&state),
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            watermarks: Mutex::new(HashMap::new()),
        };
        let consumer: BaseConsumer<Ctx> = cc
            .create_with_context(ctx)
            .map_err(|e| anyhow::anyhow!("kafka frontend: cannot create the consumer: {e}"))?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| anyhow::anyhow!("kafka frontend: cannot subscribe to {topics:?}: {e}"))?;
        let st = Arc::clone(&stats);
        let thread = thread::Builder::new()
            .name("kafka-consumer".to_owned())
            .spawn(move || run(consumer, state, st, stop))?;
        Ok(ConsumerFrontend {
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<ConsumerStats> {
        &self.stats
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the thread (after the stop flag is set): it hands over what it holds, waits
    /// (bounded) for the backends to store it, commits the offsets and leaves the group.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("kafka frontend: the consumer thread panicked");
        }
    }
}

/// How long shutdown waits for the backends to store what the frontend handed them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn run(
    consumer: BaseConsumer<Ctx>,
    state: Arc<Mutex<State>>,
    stats: Arc<ConsumerStats>,
    stop: Arc<AtomicBool>,
) {
    let mut last_refresh = Instant::now();
    let mut last_age_check = Instant::now();
    let mut rate_base = (Instant::now(), 0u64, 0u64);
    let mut paused = false;
    let mut last_poll_error: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(POLL) {
            None => lock(&state).ship_all(None),
            Some(Err(e)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.set_last_error(e.to_string());
                if last_poll_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    log::warn!("kafka frontend: {e}");
                    last_poll_error = Some(Instant::now());
                }
            }
            Some(Ok(m)) => {
                let mut st = lock(&state);
                handle(
                    &mut st,
                    &stats,
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.payload(),
                );
            }
        }
        let now = Instant::now();
        if now.saturating_duration_since(last_age_check) >= CHUNK_AGE {
            last_age_check = now;
            let mut st = lock(&state);
            st.ship_all(Some(CHUNK_AGE));
            let over = st.outputs.iter().zip(&st.inflight).any(|(o, i)| {
                i.rows.load(Ordering::Acquire) as u64 > o.max_rows
                    || i.bytes.load(Ordering::Acquire) as u64 > o.max_bytes
            });
            let under = st.outputs.iter().zip(&st.inflight).all(|(o, i)| {
                (i.rows.load(Ordering::Acquire).max(0) as u64) <= o.max_rows / 2
                    && (i.bytes.load(Ordering::Acquire).max(0) as u64) <= o.max_bytes / 2
            });
            drop(st);
            if over || (paused && !under) {
                // (Re)pause everything assigned: a partition assigned while paused too.
                if let Ok(a) = consumer.assignment()
                    && consumer.pause(&a).is_ok()
                    && !paused
                {
                    paused = true;
                    stats.paused.store(true, Ordering::Relaxed);
                    log::debug!("kafka frontend: paused (the backends hold their bound)");
                }
            } else if paused && under {
                if let Ok(a) = consumer.assignment() {
                    let _ = consumer.resume(&a);
                }
                paused = false;
                stats.paused.store(false, Ordering::Relaxed);
            }
        }
        if now.saturating_duration_since(last_refresh) >= REFRESH {
            last_refresh = now;
            refresh(&consumer, &state, &stats, &mut rate_base, false);
        }
    }
    // Stopping: hand over what is gathered, let the backends store it, commit, leave.
    lock(&state).ship_all(None);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let left: i64 = lock(&state)
            .inflight
            .iter()
            .map(|i| i.rows.load(Ordering::Acquire).max(0))
            .sum();
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                log::warn!(
                    "kafka frontend: {left} rows not stored after {DRAIN_TIMEOUT:?}; they are \
                     read again at the next start"
                );
            }
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    refresh(&consumer, &state, &stats, &mut rate_base, true);
    consumer.unsubscribe();
    // Leaving the group runs the revocation (nothing is in flight any more).
    drop(consumer);
}

/// Decodes one message into every backend's chunk of its partition.
fn handle(
    st: &mut State,
    stats: &ConsumerStats,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
) {
    let State {
        parts,
        outputs,
        inflight,
        decoder,
        bad_logged,
        last_bad_log,
        bad_since_log,
        ..
    } = st;
    let Some(part) = parts.get_mut(&(topic.to_owned(), partition)) else {
        return;
    };
    if part.next >= 0 && offset < part.next {
        stats.duplicates_skipped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    part.next = offset + 1;
    let value = payload.unwrap_or(&[]);
    stats.messages.fetch_add(1, Ordering::Relaxed);
    stats.bytes.fetch_add(value.len() as u64, Ordering::Relaxed);
    let next = u64::try_from(offset + 1).unwrap_or(0);
    // At most a few backends: small fixed arrays would do, but the lists are short-lived.
    let wanted: Vec<bool> = part.skip_below.iter().map(|&s| offset >= s).collect();
    let marks: Vec<usize> = part.pending.iter().map(|p| p.rows.len()).collect();
    let now = crate::pipeline::worker::unix_micros();
    let mut oldest: Option<UnixMicros> = None;
    let result = {
        let pending = &mut part.pending;
        decoder.decode(value, now, &mut |rec| {
            let t = rec.time_received();
            oldest = Some(oldest.map_or(t, |o: i64| o.min(t)));
            for (b, out) in outputs.iter_mut().enumerate() {
                if wanted[b] {
                    out.encoder.encode(rec, &mut pending[b].rows);
                }
            }
        })
    };
    let flows = match result {
        Ok(n) => u64::from(n),
        Err(bad) => {
            for (p, &m) in part.pending.iter_mut().zip(&marks) {
                p.rows.truncate(m);
            }
            stats.bad[bad.reason.index()].fetch_add(1, Ordering::Relaxed);
            log_bad(
                BadLog {
                    logged: bad_logged,
                    last: last_bad_log,
                    since: bad_since_log,
                },
                topic,
                partition,
                offset,
                &bad,
            );
            0
        }
    };
    stats.flows.fetch_add(flows, Ordering::Relaxed);
    let mut full = false;
    for (b, p) in part.pending.iter_mut().enumerate() {
        if !wanted[b] {
            continue;
        }
        p.count += flows;
        p.next = next;
        if flows > 0 {
            p.oldest_us = match (p.oldest_us, oldest) {
                (Some(a), Some(o)) => Some(a.min(o)),
                (a, o) => a.or(o),
            };
        }
        full |= p.count >= CHUNK_ROWS || p.rows.len() >= CHUNK_BYTES;
    }
    part.since.get_or_insert_with(Instant::now);
    if full {
        for b in 0..part.pending.len() {
            State::ship(outputs, inflight, part, b);
        }
        part.since = None;
    }
}

struct BadLog<'a> {
    logged: &'a mut u64,
    last: &'a mut Option<Instant>,
    since: &'a mut u64,
}

fn log_bad(l: BadLog<'_>, topic: &str, partition: i32, offset: i64, bad: &super::decode::Bad) {
    if *l.logged < BAD_LOGGED {
        *l.logged += 1;
        log::warn!(
            "kafka frontend: skipped the message at {topic}/{partition} offset {offset}: {} \
             ({}){}",
            bad.detail,
            bad.reason.as_str(),
            if *l.logged == BAD_LOGGED {
                "; further bad messages are counted on /metrics and summed up here once a minute"
            } else {
                ""
            }
        );
        *l.last = Some(Instant::now());
        return;
    }
    *l.since += 1;
    if l.last.is_none_or(|t| t.elapsed() >= BAD_LOG_INTERVAL) {
        log::warn!(
            "kafka frontend: skipped {} more bad messages, the last at {topic}/{partition} \
             offset {offset}: {} ({})",
            *l.since,
            bad.detail,
            bad.reason.as_str()
        );
        *l.since = 0;
        *l.last = Some(Instant::now());
    }
}

/// Commits to Kafka what every backend has stored, and refreshes /status's partition table
/// and rates.
fn refresh(
    consumer: &BaseConsumer<Ctx>,
    state: &Arc<Mutex<State>>,
    stats: &ConsumerStats,
    rate_base: &mut (Instant, u64, u64),
    sync: bool,
) {
    let watermarks = lock(&consumer.context().watermarks).clone();
    let mut tpl = TopicPartitionList::new();
    let mut table = Vec::new();
    {
        let mut st = lock(state);
        for part in st.parts.values_mut() {
            let stored = part
                .streams
                .iter()
                .map(|s| s.stored.load(Ordering::Acquire))
                .min()
                .unwrap_or(-1);
            if stored > part.kafka_committed {
                let _ =
                    tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(stored));
                part.kafka_committed = stored;
            }
            let hi = watermarks
                .get(&(part.topic.clone(), part.partition))
                .copied()
                .unwrap_or(-1);
            table.push(PartitionStatus {
                topic: part.topic.clone(),
                partition: part.partition,
                next_offset: part.next,
                stored_offset: stored,
                high_watermark: hi,
                lag: if hi >= 0 {
                    (hi - stored.max(0)).max(0)
                } else {
                    -1
                },
            });
        }
    }
    table.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    stats.set_partitions(table);
    if tpl.count() > 0 {
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = consumer.commit(&tpl, mode) {
            log::debug!("kafka frontend: committing offsets to Kafka: {e}");
        }
    }
    let now = Instant::now();
    let secs = now.saturating_duration_since(rate_base.0).as_secs_f64();
    if secs > 0.0 {
        let rows = stats.rows_stored.load(Ordering::Relaxed);
        let flows = stats.flows.load(Ordering::Relaxed);
        stats.set_rates(
            rows.saturating_sub(rate_base.1) as f64 / secs,
            flows.saturating_sub(rate_base.2) as f64 / secs,
        );
        *rate_base = (now, rows, flows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_properties_keep_offsets_out_of_librdkafka() {
        let cfg = KafkaFrontend {
            kafka: goflow_writers::kafka::KafkaConfig {
                server: "k:9092".to_owned(),
                sasl_user: Some("u".to_owned()),
                sasl_password: Some("pw".to_owned()),
                rdkafka: vec![("fetch.min.bytes".to_owned(), "1".to_owned())],
                ..Default::default()
            },
            topics: vec!["flows".to_owned()],
            group_id: "g".to_owned(),
            format: goflow_writers::kafka::Format::Protobuf,
            session_timeout_ms: 6000,
            offset_reset: "earliest",
            backends: vec!["db".to_owned()],
        };
        let p = consumer_properties(&cfg);
        let get = |k: &str| {
            p.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("enable.auto.commit"), Some("false"));
        assert_eq!(get("enable.auto.offset.store"), Some("false"));
        assert_eq!(get("group.id"), Some("g"));
        assert_eq!(get("session.timeout.ms"), Some("6000"));
        assert_eq!(get("heartbeat.interval.ms"), Some("2000"));
        assert_eq!(get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(get("fetch.min.bytes"), Some("1"));
    }
}
