//! The generic backend: one bounded queue per configured backend, the flush policy, and one or
//! more *lanes* that drain the queue: a lane is a writer thread owning its own [`Sink`] (for
//! PostgreSQL, its own connection), so N lanes ship N flushes at once and one lane's commit does
//! not idle the others. Workers hand the backend [`Chunk`]s through a [`BackendSender`] that
//! never blocks: when the queue's byte bound is reached the chunk is dropped and counted, so a
//! slow or dead backend never stalls receiving.
//!
//! A lane writes each chunk it takes to its sink as it arrives and ends a flush when
//! `flush_rows` rows are pending in that lane or its oldest pending row is `flush_interval` old
//! (and at shutdown). Until a flush succeeds its chunks stay with the lane (and keep counting
//! against the backend's one queue bound): a retriable [`SinkError`] aborts the flush and replays
//! the same chunks after an exponential backoff (100 ms doubling to 5 s); a fatal one is logged
//! (rate-limited per lane), drops that flush's rows (counted) and pauses the lane for the longest
//! backoff before it tries newer rows. While a lane backs off it takes nothing from the queue,
//! so the other lanes carry the load (with one lane, chunks wait in the queue). The daemon stays
//! up either way.
//!
//! **Flushes in flight.** A sink may end a flush without waiting for it to be durable
//! ([`Sink::flush_start`]: a producer waiting for its acknowledgements). The lane then goes on
//! writing the next flush while up to [`BackendOptions::flushes_in_flight`] of its flushes are in
//! flight (at the bound it waits for the oldest). Outcomes are taken oldest first, when the sink
//! wakes the lane: a flush is done (rows counted, positions reported to their streams, its bytes
//! released from the queue bound) only after every older flush of the lane is. A failed one
//! fails every flush in flight after it too: the sink forgets them all ([`Sink::abort`]) and
//! the lane retries all their chunks, oldest first, as above (what a younger flush had delivered
//! is delivered again: at-least-once). Sinks that flush synchronously (PostgreSQL, MySQL, file)
//! settle each flush in `flush_start` itself and behave exactly as with one flush at a time.
//!
//! Shutdown sends one `Shutdown` message per lane behind every queued chunk (the queue is FIFO),
//! so each lane stops after everything queued before it has been taken; each lane then flushes
//! what it holds. The lane that takes the last `Shutdown` also takes anything sent after it.
//!
//! Everything the ops API shows about a backend is in its [`BackendStats`] (atomics plus a mutex
//! for strings), shared by the lanes; the counters are backend totals. `healthy` is false while
//! any lane's last attempt failed: from a lane's error until that lane's next successful flush
//! (a lane that hit a fatal error and then receives no rows stays unhealthy until it does).
//! Each lane publishes its sink's status fields, so a sink used in several lanes should report
//! backend-wide values (as `PgSink::lanes` does). [`BackendOptions::on_flush`] reports each
//! successful flush (duration, age of the rows at commit) to whoever keeps histograms.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Select, Sender};
use goflow_codec::UnixMicros;

use crate::sink::{Chunk, FlushWaker, Sink, SinkError};
use crate::spool::{Spool, SpoolConfig, SpoolStats};

/// What a committed-positions query returns (see [`PositionedSender::committed_positions`]).
pub type PositionsResult = Result<Option<Vec<(String, u64)>>, SinkError>;

/// Bytes a queued chunk costs beyond its rows (the chunk itself, the channel node), so a flood
/// of empty chunks (the `null` backend) is bounded too.
pub const CHUNK_OVERHEAD_BYTES: u64 = 128;
/// First retry delay after an error.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay (and the pause after a fatal error).
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the sink's own status fields are refreshed.
pub const STATUS_REFRESH: Duration = Duration::from_secs(2);
/// At most one error log line per backend lane per this interval (the rest are counted).
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One successful flush, as reported to [`BackendOptions::on_flush`].
#[derive(Clone, Copy, Debug)]
pub struct FlushReport<'a> {
    /// The backend's name.
    pub backend: &'a str,
    /// Rows made durable.
    pub rows: u64,
    /// Time spent in `Sink::flush` (the commit), microseconds.
    pub duration_us: u64,
    /// When the flush completed (Unix microseconds).
    pub committed_us: UnixMicros,
    /// Receive time and row count of every chunk in the flush: `committed_us - received_us` is
    /// the datagram age at commit.
    pub chunks: &'a [(UnixMicros, u64)],
}

impl FlushReport<'_> {
    /// Receive time of the oldest row in the flush.
    pub fn oldest_received_us(&self) -> Option<UnixMicros> {
        self.chunks.iter().map(|c| c.0).min()
    }
}

/// Called on the lane's thread after every successful flush (keep it cheap; lanes may call it
/// concurrently).
pub type FlushHook = Arc<dyn Fn(&FlushReport<'_>) + Send + Sync>;

/// How a backend queues and flushes.
#[derive(Clone)]
pub struct BackendOptions {
    /// The backend's name in the config (thread name, logs, stats).
    pub name: String,
    /// Its type (`file`, `timescale`, ...).
    pub kind: String,
    /// Where it writes, without secrets (for logs and status).
    pub target: String,
    /// Flush once this many rows are pending (in one lane).
    pub flush_rows: u64,
    /// Flush once the oldest pending row (of a lane) is this old.
    pub flush_interval: Duration,
    /// Most flushes one lane keeps in flight (see the module docs; 1 = stop-and-wait). Only
    /// sinks whose flushes settle later ([`Sink::flush_start`]) have more than one; their
    /// chunks stay counted against `queue_bytes` until they are done, which bounds the bytes.
    pub flushes_in_flight: usize,
    /// Most bytes queued or held for retry, all lanes together; beyond it chunks are dropped
    /// and counted.
    pub queue_bytes: u64,
    /// How long shutdown keeps retrying a failing backend before it counts the rest as dropped.
    pub shutdown_timeout: Duration,
    /// Flush observer (the ops API's histograms).
    pub on_flush: Option<FlushHook>,
    /// The disk spool for rows the backend cannot take (`None`: such rows are dropped and
    /// counted). See `spool/mod.rs`.
    pub spool: Option<SpoolConfig>,
}

impl std::fmt::Debug for BackendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendOptions")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("flush_rows", &self.flush_rows)
            .field("flush_interval", &self.flush_interval)
            .field("flushes_in_flight", &self.flushes_in_flight)
            .field("queue_bytes", &self.queue_bytes)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("on_flush", &self.on_flush.is_some())
            .field("spool", &self.spool)
            .finish()
    }
}

impl BackendOptions {
    /// Options with the PostgreSQL defaults (100000 rows, 1 s, 256 MiB, 30 s at shutdown).
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> BackendOptions {
        BackendOptions {
            name: name.into(),
            kind: kind.into(),
            target: String::new(),
            flush_rows: 100_000,
            flush_interval: Duration::from_secs(1),
            flushes_in_flight: 1,
            queue_bytes: 256 << 20,
            shutdown_timeout: Duration::from_secs(30),
            on_flush: None,
            spool: None,
        }
    }
}

/// The strings of a backend's state (behind a mutex: written rarely, read by the ops API).
#[derive(Clone, Debug, Default)]
pub struct BackendDetail {
    /// The most recent error's message.
    pub last_error: Option<String>,
    /// When it happened (Unix microseconds; 0 = never).
    pub last_error_us: UnixMicros,
    /// The sink's own status fields (values are JSON), refreshed every [`STATUS_REFRESH`].
    pub status: Vec<(&'static str, String)>,
}

/// Where a backend stands with its server: every lane connects (and sets up its table) when it
/// starts, before any row arrives ([`Sink::connect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectState {
    /// Some lane has not finished its first connect attempt yet.
    Connecting,
    /// Every lane's last attempt (connect or flush) succeeded.
    Connected,
    /// Some lane's last attempt failed (see `BackendDetail::last_error`); it keeps retrying.
    Failed,
}

impl ConnectState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectState::Connecting => "connecting",
            ConnectState::Connected => "connected",
            ConnectState::Failed => "failed",
        }
    }
}

/// What the ops API shows about one backend. Counters only grow.
#[derive(Debug)]
pub struct BackendStats {
    /// Name, type and target, as configured.
    pub name: String,
    pub kind: String,
    pub target: String,
    /// The queue bound (`queue_bytes`).
    pub queue_capacity_bytes: u64,
    /// Bytes queued or held for retry right now.
    pub queued_bytes: AtomicU64,
    /// Rows made durable by successful flushes.
    pub rows_written: AtomicU64,
    /// Successful flushes.
    pub flushes: AtomicU64,
    /// Flushes handed to a sink and not done yet, all lanes (see the module docs).
    pub flushes_in_flight: AtomicU64,
    /// Chunks and rows dropped because the queue was full.
    pub chunks_dropped_queue_full: AtomicU64,
    pub rows_dropped_queue_full: AtomicU64,
    /// Chunks and rows dropped by a fatal sink error, or still failing at shutdown.
    pub chunks_dropped_failed: AtomicU64,
    pub rows_dropped_failed: AtomicU64,
    /// When rows were last dropped, either way (Unix microseconds; 0 = never).
    pub last_drop_us: AtomicI64,
    /// Sink errors (write or flush), retriable or not.
    pub errors: AtomicU64,
    /// Retries after a retriable error (the sink reconnects as it needs to).
    pub reconnects: AtomicU64,
    /// False while any lane's last attempt failed: from a lane's error until that lane's next
    /// successful flush.
    pub healthy: AtomicBool,
    /// End of the last successful flush (Unix microseconds; 0 = never).
    pub last_flush_us: AtomicI64,
    /// Duration of the last successful flush's commit, microseconds.
    pub last_flush_duration_us: AtomicU64,
    /// Last error (of any lane) and the sink's status fields (as the last lane to refresh them
    /// reported them).
    pub detail: Mutex<BackendDetail>,
    /// The disk spool's counters, when the backend spools.
    pub spool: Option<Arc<SpoolStats>>,
    /// Bumped by [`BackendStats::request_reopen`] (SIGHUP); each lane reopens its sink's
    /// output between flushes when it sees it move.
    pub reopen_requested: AtomicU64,
    /// Lanes that have not finished their first connect attempt, and its condition variable
    /// (see [`BackendStats::wait_connected`]).
    first_connect: (Mutex<usize>, Condvar),
}

impl BackendStats {
    fn new(opts: &BackendOptions) -> BackendStats {
        BackendStats {
            name: opts.name.clone(),
            kind: opts.kind.clone(),
            target: opts.target.clone(),
            queue_capacity_bytes: opts.queue_bytes,
            queued_bytes: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flushes_in_flight: AtomicU64::new(0),
            chunks_dropped_queue_full: AtomicU64::new(0),
            rows_dropped_queue_full: AtomicU64::new(0),
            chunks_dropped_failed: AtomicU64::new(0),
            rows_dropped_failed: AtomicU64::new(0),
            last_drop_us: AtomicI64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_flush_us: AtomicI64::new(0),
            last_flush_duration_us: AtomicU64::new(0),
            detail: Mutex::new(BackendDetail::default()),
            spool: None,
            reopen_requested: AtomicU64::new(0),
            first_connect: (Mutex::new(0), Condvar::new()),
        }
    }

    /// Connecting until every lane made its first connect attempt; then failed while any
    /// lane's last attempt failed, else connected. What `/healthz` and `run` report from the
    /// first second, before any row arrives.
    pub fn connect_state(&self) -> ConnectState {
        if *lock(&self.first_connect.0) > 0 {
            ConnectState::Connecting
        } else if self.healthy.load(Ordering::Relaxed) {
            ConnectState::Connected
        } else {
            ConnectState::Failed
        }
    }

    /// Waits until every lane has made its first connect attempt (or `timeout` passes) and
    /// returns the state then.
    pub fn wait_connected(&self, timeout: Duration) -> ConnectState {
        let (m, cv) = &self.first_connect;
        let guard = lock(m);
        let _guard = cv
            .wait_timeout_while(guard, timeout, |left| *left > 0)
            .unwrap_or_else(PoisonError::into_inner);
        drop(_guard);
        self.connect_state()
    }

    fn first_connect_done(&self) {
        let (m, cv) = &self.first_connect;
        let mut left = lock(m);
        *left = left.saturating_sub(1);
        cv.notify_all();
    }

    /// Rows dropped for any reason (the spool's refusals included).
    pub fn rows_dropped(&self) -> u64 {
        self.rows_dropped_queue_full.load(Ordering::Relaxed)
            + self.rows_dropped_failed.load(Ordering::Relaxed)
            + self.spool.as_ref().map_or(0, |s| s.rows_dropped())
    }

    /// Chunks dropped for any reason.
    pub fn chunks_dropped(&self) -> u64 {
        self.chunks_dropped_queue_full.load(Ordering::Relaxed)
            + self.chunks_dropped_failed.load(Ordering::Relaxed)
    }

    /// Asks every lane to reopen its sink's output ([`Sink::reopen`]: the file backend's file,
    /// after logrotate) between flushes, within [`STATUS_REFRESH`] even without traffic.
    pub fn request_reopen(&self) {
        self.reopen_requested.fetch_add(1, Ordering::Release);
    }

    /// A copy of the strings.
    pub fn detail(&self) -> BackendDetail {
        lock(&self.detail).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_us() -> UnixMicros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// What a chunk counts against the queue bound. Positioned chunks do not go through the queue
/// (their stream's owner bounds what it has in flight), so they cost nothing there.
fn cost(chunk: &Chunk) -> u64 {
    if chunk.position.is_some() {
        return 0;
    }
    chunk.rows.len() as u64 + CHUNK_OVERHEAD_BYTES
}

enum Msg {
    Chunk(Chunk),
    Shutdown,
}

/// What a lane takes from its own channel, in order: positioned chunks of the streams it writes
/// and requests about those streams.
enum LaneMsg {
    Chunk(Chunk),
    /// Answer with the sink's committed positions for streams starting with `prefix`.
    Positions {
        prefix: String,
        reply: Sender<PositionsResult>,
    },
    /// Forget the not yet stored chunks of `stream`; answer with the rows forgotten.
    Cancel {
        stream: String,
        reply: Sender<u64>,
    },
}

/// The lane (of `lanes`) that writes stream `name`: FNV-1a of the name, so a stream always
/// goes to the same lane while the lane count stays the same.
fn lane_of(name: &str, lanes: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(h % lanes.max(1) as u64).unwrap_or(0)
}

/// The handle of a replayable source (the spool's replayer, a Kafka consumer) on a backend:
/// positioned chunks go to the lane that writes their stream (never through the bounded queue:
/// the source bounds what it has in flight, using its [`crate::sink::Stream`] callbacks), and
/// the stored positions can be asked for. Cheap to clone.
#[derive(Clone)]
pub struct PositionedSender {
    lanes: Vec<Sender<LaneMsg>>,
}

impl std::fmt::Debug for PositionedSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PositionedSender")
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl PositionedSender {
    fn lane(&self, stream: &str) -> Result<&Sender<LaneMsg>, SinkError> {
        self.lanes
            .get(lane_of(stream, self.lanes.len()))
            .ok_or_else(|| SinkError::fatal("backend has no lanes"))
    }

    /// Hands a positioned chunk to its stream's lane. Never blocks. Gives the chunk back when it
    /// has no position or the backend has stopped.
    #[allow(
        clippy::result_large_err,
        reason = "the chunk is handed back, as channels do"
    )]
    pub fn send(&self, chunk: Chunk) -> Result<(), Chunk> {
        let Some(p) = &chunk.position else {
            return Err(chunk);
        };
        let Ok(tx) = self.lane(p.stream.name()) else {
            return Err(chunk);
        };
        tx.send(LaneMsg::Chunk(chunk)).map_err(|e| match e.0 {
            LaneMsg::Chunk(c) => c,
            _ => Chunk::default(),
        })
    }

    /// The sink's stored positions of the streams whose names start with `prefix` (asked by
    /// the lane that writes stream `prefix`, after the chunks sent to it before this call are
    /// flushed), or `Ok(None)` when the sink keeps no positions. Blocks up to `timeout`.
    pub fn committed_positions(&self, prefix: &str, timeout: Duration) -> PositionsResult {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.lane(prefix)?
            .send(LaneMsg::Positions {
                prefix: prefix.to_owned(),
                reply,
            })
            .map_err(|_| SinkError::retriable("backend stopped"))?;
        rx.recv_timeout(timeout).map_err(|_| {
            SinkError::retriable(format!(
                "no answer about stored positions within {timeout:?}"
            ))
        })?
    }

    /// Makes the backend forget every chunk of `stream` sent before this call that is not
    /// stored yet (a Kafka partition revoked: its next owner resumes from the stored position).
    /// After `Ok`, no row of them will be stored. Returns the rows forgotten.
    pub fn cancel(&self, stream: &str, timeout: Duration) -> Result<u64, SinkError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.lane(stream)?
            .send(LaneMsg::Cancel {
                stream: stream.to_owned(),
                reply,
            })
            .map_err(|_| SinkError::retriable("backend stopped"))?;
        rx.recv_timeout(timeout)
            .map_err(|_| SinkError::retriable(format!("no answer within {timeout:?}")))
    }
}

/// A worker's handle on a backend's queue. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct BackendSender {
    tx: Sender<Msg>,
    stats: Arc<BackendStats>,
    spool: Option<Arc<Spool>>,
}

impl std::fmt::Debug for BackendSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSender")
            .field("backend", &self.stats.name)
            .finish()
    }
}

impl BackendSender {
    /// Queues `chunk` unless that would pass the byte bound (a chunk into an empty queue is
    /// always taken, whatever its size). With a spool, a chunk goes to the spool instead while
    /// the backend is failing, or when the queue is full. Returns false, and counts the chunk's
    /// rows as dropped, when it was neither queued nor spooled.
    pub fn try_send(&self, chunk: Chunk) -> bool {
        if let Some(spool) = &self.spool
            && !self.stats.healthy.load(Ordering::Relaxed)
        {
            return spool.offer(chunk);
        }
        let c = cost(&chunk);
        let cap = self.stats.queue_capacity_bytes;
        let reserved = self
            .stats
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q == 0 || q.saturating_add(c) <= cap).then(|| q.saturating_add(c))
            })
            .is_ok();
        if reserved {
            let rows = chunk.count;
            match self.tx.send(Msg::Chunk(chunk)) {
                Ok(()) => return true,
                Err(_) => {
                    // Every lane is gone (only after shutdown).
                    self.stats.queued_bytes.fetch_sub(c, Ordering::AcqRel);
                    self.count_dropped(rows);
                }
            }
        } else if let Some(spool) = &self.spool {
            return spool.offer(chunk);
        } else {
            self.count_dropped(chunk.count);
        }
        false
    }

    fn count_dropped(&self, rows: u64) {
        self.stats
            .chunks_dropped_queue_full
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .rows_dropped_queue_full
            .fetch_add(rows, Ordering::Relaxed);
        self.stats.last_drop_us.store(now_us(), Ordering::Relaxed);
    }

    /// The backend's stats.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }
}

/// What the lanes of one backend share besides the queue and the stats.
#[derive(Debug)]
struct LaneShared {
    /// Lanes that have not yet taken their `Shutdown`.
    open: AtomicUsize,
    /// Lanes whose last attempt failed; `BackendStats::healthy` is `failing == 0`, stored while
    /// holding this lock so two lanes changing state at once cannot leave it stale.
    failing: Mutex<usize>,
}

/// A running backend: its lanes (threads), its queue and its stats.
pub struct Backend {
    tx: Sender<Msg>,
    /// One per lane: its positioned chunks and requests.
    lane_tx: Vec<Sender<LaneMsg>>,
    stats: Arc<BackendStats>,
    threads: Vec<JoinHandle<()>>,
    /// Never sent on; dropping it at shutdown wakes lanes that are backing off (they do not read
    /// the queue then, so they would not see their `Shutdown` until their next retry).
    stop: Option<Sender<()>>,
    spool: Option<Arc<Spool>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.stats.name)
            .field("lanes", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Starts a backend with one lane around `sink`.
    pub fn spawn(sink: Box<dyn Sink>, opts: BackendOptions) -> std::io::Result<Backend> {
        Backend::spawn_lanes(vec![sink], opts)
    }

    /// Starts a backend with one lane per sink, all taking chunks from one queue. Lane 0's
    /// thread is `backend-NAME`, the others' `backend-NAME-1`, `backend-NAME-2`, ...
    pub fn spawn_lanes(
        sinks: Vec<Box<dyn Sink>>,
        opts: BackendOptions,
    ) -> std::io::Result<Backend> {
        if sinks.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("backend {}: no sink to write with", opts.name),
            ));
        }
        let lanes = sinks.len();
        let spool = match &opts.spool {
            Some(cfg) => Some(Spool::open(cfg.clone(), &opts.name).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "backend {}: cannot open its spool {}: {e}",
                        opts.name,
                        cfg.dir.display()
                    ),
                )
            })?),
            None => None,
        };
        let mut stats = BackendStats::new(&opts);
        stats.spool = spool.as_ref().map(|s| Arc::clone(s.stats()));
        let stats = Arc::new(stats);
        *lock(&stats.first_connect.0) = lanes;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(LaneShared {
            open: AtomicUsize::new(lanes),
            failing: Mutex::new(0),
        });
        let mut backend = Backend {
            tx,
            lane_tx: Vec::with_capacity(lanes),
            stats,
            threads: Vec::with_capacity(lanes),
            stop: Some(stop_tx),
            spool: spool.clone(),
        };
        for (lane, sink) in sinks.into_iter().enumerate() {
            let name = if lane == 0 {
                format!("backend-{}", opts.name)
            } else {
                format!("backend-{}-{lane}", opts.name)
            };
            let (lane_tx, lane_rx) = crossbeam_channel::unbounded();
            backend.lane_tx.push(lane_tx);
            let writer = Writer::new(
                sink,
                opts.clone(),
                Lane {
                    index: lane,
                    count: lanes,
                    shared: Arc::clone(&shared),
                    stop: stop_rx.clone(),
                    rx: lane_rx,
                },
                Arc::clone(&backend.stats),
                rx.clone(),
                spool.clone(),
            );
            // On an error the lanes already started are stopped (and joined) by Drop.
            let thread = thread::Builder::new()
                .name(name)
                .spawn(move || writer.run())?;
            backend.threads.push(thread);
        }
        if let Some(sp) = &spool {
            sp.start_replay(&opts.name, backend.positioned_sender())?;
        }
        Ok(backend)
    }

    /// A handle for a worker.
    pub fn sender(&self) -> BackendSender {
        BackendSender {
            tx: self.tx.clone(),
            stats: Arc::clone(&self.stats),
            spool: self.spool.clone(),
        }
    }

    /// A handle for a replayable source (positioned chunks).
    pub fn positioned_sender(&self) -> PositionedSender {
        PositionedSender {
            lanes: self.lane_tx.clone(),
        }
    }

    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }

    /// How many lanes (writer threads, sinks) it runs.
    pub fn lanes(&self) -> usize {
        self.threads.len()
    }

    /// Writes and flushes everything queued before this call (each lane retrying a failing sink
    /// for up to `shutdown_timeout`), then stops the lanes. Call after the workers have stopped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        // The replayer first: what it sent and is not stored is read again at the next start.
        if let Some(sp) = &self.spool {
            sp.stop_replay();
        }
        // Behind every queued chunk: each lane takes exactly one and stops.
        for _ in &self.threads {
            let _ = self.tx.send(Msg::Shutdown);
        }
        self.stop = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("backend {}: writer thread panicked", self.stats.name);
            }
        }
        // Last: the lanes may have spooled what they could not write.
        if let Some(sp) = &self.spool {
            sp.stop_writer();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a writer sits among its backend's lanes.
struct Lane {
    index: usize,
    count: usize,
    shared: Arc<LaneShared>,
    /// Disconnects (never receives) when the backend stops.
    stop: Receiver<()>,
    /// This lane's own channel (positioned chunks, requests); read even while backing off.
    rx: Receiver<LaneMsg>,
}

/// A flush in flight: its chunks (at the front of `Writer::pending`) and the sink's id for it
/// (`None`: already durable, done once the older ones are).
struct Flight {
    chunks: usize,
    rows: u64,
    id: Option<u64>,
    started: Instant,
}

/// One lane's state: its sink, the chunks of its current flush, its retry state.
struct Writer {
    sink: Box<dyn Sink>,
    opts: BackendOptions,
    lane: Lane,
    /// `NAME` with one lane, `NAME lane I` with several (logs).
    label: String,
    stats: Arc<BackendStats>,
    rx: Receiver<Msg>,
    /// Chunks not stored yet, oldest first: those of the flushes in flight (`flights`), then
    /// those of the open flush. They stay until their flush is done.
    pending: Vec<Chunk>,
    pending_rows: u64,
    /// When the oldest chunk of the open flush arrived.
    pending_since: Option<Instant>,
    /// How many of `pending` were handed to the sink (in flight or in the open flush).
    written: usize,
    /// Flushes handed to the sink and not settled yet, oldest first; they cover the first
    /// `flight_chunks` of `pending` (`flight_rows` rows).
    flights: VecDeque<Flight>,
    flight_chunks: usize,
    flight_rows: u64,
    /// The sink wakes the lane through `waker` when a flush in flight settles.
    waker: FlushWaker,
    settled: Receiver<()>,
    /// The first this many of `pending` were in a flush whose commit failed and that carried
    /// positions: before retrying, the sink's stored positions say whether it went through.
    unresolved: usize,
    /// Set while waiting to retry (after an error).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The last attempt failed (counted in `LaneShared::failing`).
    failing: bool,
    /// The backend is stopping: read the queue even while backing off, to find the `Shutdown`.
    stopping: bool,
    last_status: Option<Instant>,
    last_error_log: Option<Instant>,
    errors_not_logged: u64,
    /// Scratch for the flush report.
    report_chunks: Vec<(UnixMicros, u64)>,
    spool: Option<Arc<Spool>>,
    /// The last `BackendStats::reopen_requested` acted on.
    reopen_seen: u64,
}

impl Writer {
    fn new(
        sink: Box<dyn Sink>,
        opts: BackendOptions,
        lane: Lane,
        stats: Arc<BackendStats>,
        rx: Receiver<Msg>,
        spool: Option<Arc<Spool>>,
    ) -> Writer {
        let label = if lane.count > 1 {
            format!("{} lane {}", opts.name, lane.index)
        } else {
            opts.name.clone()
        };
        let (waker, settled) = FlushWaker::new();
        Writer {
            sink,
            opts,
            lane,
            label,
            stats,
            rx,
            pending: Vec::new(),
            pending_rows: 0,
            pending_since: None,
            written: 0,
            flights: VecDeque::new(),
            flight_chunks: 0,
            flight_rows: 0,
            waker,
            settled,
            unresolved: 0,
            retry_at: None,
            backoff: RETRY_BACKOFF_MIN,
            failing: false,
            stopping: false,
            last_status: None,
            last_error_log: None,
            errors_not_logged: 0,
            report_chunks: Vec::new(),
            spool,
            reopen_seen: 0,
        }
    }

    fn run(mut self) {
        self.connect(true);
        self.stats.first_connect_done();
        self.refresh_status(Instant::now());
        loop {
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            // Backing off: leave the queue to the other lanes; wake early only to stop, or for
            // this lane's own channel (its streams' chunks wait in `pending` for the retry).
            // With a spool the lane goes on taking the queue, straight into the spool.
            let backing_off = self.retry_at.is_some() && !self.stopping && self.spool.is_none();
            let mut sel = Select::new();
            let own = sel.recv(&self.lane.rx);
            let settled = sel.recv(&self.settled);
            let other = if backing_off {
                sel.recv(&self.lane.stop)
            } else {
                sel.recv(&self.rx)
            };
            let Ok(op) = sel.select_timeout(wait) else {
                self.tick(Instant::now());
                continue;
            };
            match op.index() {
                i if i == own => {
                    if let Ok(m) = op.recv(&self.lane.rx) {
                        self.lane_msg(m);
                    }
                }
                i if i == settled => {
                    let _ = op.recv(&self.settled);
                    self.settle();
                }
                i if i == other && backing_off => {
                    if op.recv(&self.lane.stop).is_err() {
                        self.stopping = true;
                    }
                }
                _ => match op.recv(&self.rx) {
                    Ok(Msg::Chunk(c)) => self.accept(c),
                    Ok(Msg::Shutdown) | Err(_) => break,
                },
            }
            self.tick(Instant::now());
        }
        self.finish();
    }

    fn lane_msg(&mut self, m: LaneMsg) {
        match m {
            LaneMsg::Chunk(c) => self.accept(c),
            LaneMsg::Positions { prefix, reply } => {
                // The session must not be inside a COPY for the query: end the open flush (and
                // wait for the flushes in flight).
                if self.written > 0 && self.retry_at.is_none() && self.flush() {
                    self.wait_flights(0);
                }
                let _ = reply.send(self.sink.committed_positions(&prefix));
            }
            LaneMsg::Cancel { stream, reply } => {
                let _ = reply.send(self.cancel(&stream));
            }
        }
    }

    /// Drops `stream`'s chunks from the current flush (what the sink has of it is aborted and
    /// the rest written again at the next attempt).
    fn cancel(&mut self, stream: &str) -> u64 {
        let of_stream = |c: &Chunk| {
            c.position
                .as_ref()
                .is_some_and(|p| p.stream.name() == stream)
        };
        if !self.pending.iter().any(of_stream) {
            return 0;
        }
        if self.written > 0 {
            self.abort_sink();
        }
        let mut rows = 0;
        let mut kept = Vec::with_capacity(self.pending.len());
        let mut unresolved = 0;
        for (i, c) in self.pending.drain(..).enumerate() {
            if of_stream(&c) {
                rows += c.count;
            } else {
                unresolved += usize::from(i < self.unresolved);
                kept.push(c);
            }
        }
        self.pending = kept;
        self.unresolved = unresolved;
        self.pending_rows -= rows;
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        rows
    }

    /// The next moment something is due: a retry, an age flush, a status refresh.
    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let status = self.last_status.map_or(now, |t| t + STATUS_REFRESH);
        let due = match (self.retry_at, self.pending_since) {
            (Some(r), _) => r,
            (None, Some(since)) => since + self.opts.flush_interval,
            (None, None) => status,
        };
        due.min(status)
    }

    fn accept(&mut self, chunk: Chunk) {
        // An empty positioned chunk still moves its stream on (e.g. past skipped messages).
        if chunk.count == 0 && chunk.rows.is_empty() && chunk.position.is_none() {
            self.release(cost(&chunk));
            return;
        }
        self.pending_rows += chunk.count;
        self.pending.push(chunk);
        self.pending_since.get_or_insert_with(Instant::now);
        if self.retry_at.is_some() && self.spool.is_some() {
            self.spill();
            return;
        }
        if self.retry_at.is_none()
            && self.write_pending()
            && self.pending_rows - self.flight_rows >= self.opts.flush_rows
        {
            self.flush();
        }
    }

    /// Connects the sink (at start, and at each retry while the lane is failing with nothing
    /// to write, so the backend's state follows the server even without traffic). A failure
    /// is logged with the sink's own words (what to fix) and retried with backoff.
    fn connect(&mut self, first: bool) -> bool {
        match self.sink.connect() {
            Ok(()) => {
                if self.failing {
                    self.set_failing(false);
                    self.backoff = RETRY_BACKOFF_MIN;
                    log::info!("backend {}: connected again", self.label);
                    self.last_error_log = None;
                    self.errors_not_logged = 0;
                }
                true
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.set_failing(true);
                {
                    let mut d = lock(&self.stats.detail);
                    d.last_error = Some(e.to_string());
                    d.last_error_us = now_us();
                }
                let now = Instant::now();
                let delay = if e.is_retriable() {
                    let d = self.backoff;
                    self.backoff = (self.backoff * 2).min(RETRY_BACKOFF_MAX);
                    d
                } else {
                    RETRY_BACKOFF_MAX
                };
                self.retry_at = Some(now + delay);
                let when = if first { "at start" } else { "again" };
                if e.is_retriable() {
                    self.log_error(
                        now,
                        format_args!(
                            "cannot connect {when}: {e} (rows are queued, up to queue_bytes, \
                             and retried; next attempt in {delay:?})"
                        ),
                    );
                } else {
                    self.log_error(
                        now,
                        format_args!(
                            "cannot connect {when}: {e} (rows sent to this backend are dropped \
                             until this is fixed; next attempt in {delay:?})"
                        ),
                    );
                }
                false
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        // A sink may settle a flush on its own deadline (no report in time) without a wake.
        if !self.flights.is_empty() {
            self.settle();
        }
        match self.retry_at {
            Some(at) if now >= at => {
                self.retry_at = None;
                if self.pending.is_empty() && self.failing && !self.stopping {
                    self.connect(false);
                } else if !self.pending.is_empty() {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    if self.resolve() && self.write_pending() {
                        self.flush();
                    }
                }
            }
            Some(_) => {}
            None => {
                if self.pending_since.is_some_and(|since| {
                    now.saturating_duration_since(since) >= self.opts.flush_interval
                }) {
                    self.flush();
                }
            }
        }
        // A reopen waits for the sink to be between flushes (nothing of the current one
        // handed to it).
        let reopen = self.stats.reopen_requested.load(Ordering::Acquire);
        if reopen != self.reopen_seen && self.written == 0 {
            self.reopen_seen = reopen;
            self.sink.reopen();
        }
        if self
            .last_status
            .is_none_or(|t| now.saturating_duration_since(t) >= STATUS_REFRESH)
        {
            self.refresh_status(now);
        }
    }

    /// Hands the not yet written pending chunks to the sink. False after an error.
    fn write_pending(&mut self) -> bool {
        while let Some(chunk) = self.pending.get(self.written) {
            if let Err(e) = self.sink.write(chunk) {
                self.fail(&e);
                return false;
            }
            self.written += 1;
        }
        true
    }

    /// Ends the open flush: hands it to the sink, first waiting for the oldest flush in flight
    /// when `flushes_in_flight` are. True when it succeeded or is in flight (or there was
    /// nothing to flush); false after an error.
    fn flush(&mut self) -> bool {
        if self.pending.len() == self.flight_chunks {
            return true;
        }
        if !self.write_pending() {
            return false;
        }
        if !self.flights.is_empty() && !self.wait_flights(self.opts.flushes_in_flight.max(1) - 1) {
            return false;
        }
        let t0 = Instant::now();
        match self.sink.flush_start(&self.waker) {
            Err(e) => {
                if e.is_retriable() && self.pending.iter().any(|c| c.position.is_some()) {
                    // The commit may have gone through with its reply lost: ask before retrying.
                    self.unresolved = self.pending.len();
                }
                self.fail(&e);
                false
            }
            Ok(id) => {
                let open = &self.pending[self.flight_chunks..];
                let rows = open.iter().map(|c| c.count).sum();
                self.flights.push_back(Flight {
                    chunks: open.len(),
                    rows,
                    id,
                    started: t0,
                });
                self.flight_chunks = self.pending.len();
                self.flight_rows += rows;
                self.stats.flushes_in_flight.fetch_add(1, Ordering::Relaxed);
                self.pending_since = None;
                self.settle()
            }
        }
    }

    /// Takes the outcomes of the settled flushes in flight, oldest first, up to the first not
    /// settled: a success is stored, a failure fails every flush in flight (and the open one).
    /// False after a failure.
    fn settle(&mut self) -> bool {
        while let Some(f) = self.flights.front() {
            let outcome = match f.id {
                None => Ok(()),
                Some(id) => match self.sink.flush_outcome(id) {
                    None => return true,
                    Some(r) => r,
                },
            };
            let Some(f) = self.flights.pop_front() else {
                break;
            };
            self.count_flights_done(1);
            self.flight_chunks -= f.chunks;
            self.flight_rows -= f.rows;
            match outcome {
                Ok(()) => {
                    let duration_us =
                        u64::try_from(f.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.stored(f.chunks, duration_us);
                }
                Err(e) => {
                    if e.is_retriable()
                        && self.pending[..f.chunks]
                            .iter()
                            .any(|c| c.position.is_some())
                    {
                        self.unresolved = f.chunks;
                    }
                    self.fail(&e);
                    return false;
                }
            }
        }
        true
    }

    /// Waits until at most `left` flushes are in flight. False after a failure (then none is).
    /// The sink settles every flush it has in flight within its own deadline.
    fn wait_flights(&mut self, left: usize) -> bool {
        loop {
            if !self.settle() {
                return false;
            }
            if self.flights.len() <= left {
                return true;
            }
            let _ = self.settled.recv_timeout(STATUS_REFRESH);
        }
    }

    fn count_flights_done(&self, n: usize) {
        let _ =
            self.stats
                .flushes_in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n as u64))
                });
    }

    /// Aborts the sink's open flush and forgets its flushes in flight: every pending chunk is
    /// written again at the next attempt.
    fn abort_sink(&mut self) {
        self.sink.abort();
        self.written = 0;
        self.count_flights_done(self.flights.len());
        self.flights.clear();
        self.flight_chunks = 0;
        self.flight_rows = 0;
        if !self.pending.is_empty() {
            self.pending_since.get_or_insert_with(Instant::now);
        }
        // A wake of a forgotten flush is stale.
        while self.settled.try_recv().is_ok() {}
    }

    /// Before retrying a flush whose commit failed: asks the sink whether that commit stored
    /// its positions (and so, atomically, its rows). If it did, those chunks are done; if not,
    /// or the sink keeps no positions, they are written again. False when the sink cannot say
    /// (still down): the lane backs off again.
    fn resolve(&mut self) -> bool {
        if self.unresolved == 0 {
            return true;
        }
        let n = self.unresolved.min(self.pending.len());
        // The last position of one stream of that flush tells for the whole (atomic) flush.
        let Some(p) = self.pending[..n]
            .iter()
            .rev()
            .find_map(|c| c.position.clone())
        else {
            self.unresolved = 0;
            return true;
        };
        let name = p.stream.name().to_owned();
        match self.sink.committed_positions(&name) {
            Err(e) => {
                self.fail(&e);
                false
            }
            Ok(found) => {
                self.unresolved = 0;
                let stored = found
                    .and_then(|v| v.into_iter().find(|(s, _)| *s == name))
                    .is_some_and(|(_, at)| at >= p.next);
                if stored {
                    log::info!(
                        "backend {}: the flush whose commit reply was lost is stored ({} at {})",
                        self.label,
                        name,
                        p.next
                    );
                    self.abort_sink();
                    self.stored(n, 0);
                }
                true
            }
        }
    }

    /// Bookkeeping of a successful flush of the first `n` pending chunks.
    fn stored(&mut self, n: usize, duration_us: u64) {
        let committed_us = now_us();
        let done: Vec<Chunk> = self.pending.drain(..n).collect();
        let rows: u64 = done.iter().map(|c| c.count).sum();
        let bytes: u64 = done.iter().map(cost).sum();
        self.pending_rows -= rows;
        self.written = self.written.saturating_sub(n);
        for c in &done {
            if let Some(p) = &c.position {
                p.stream.committed(p.next, c.count);
            }
        }
        self.stats.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_flush_us
            .store(committed_us, Ordering::Relaxed);
        self.stats
            .last_flush_duration_us
            .store(duration_us, Ordering::Relaxed);
        self.set_failing(false);
        if let Some(hook) = &self.opts.on_flush {
            self.report_chunks.clear();
            self.report_chunks
                .extend(done.iter().map(|c| (c.oldest_received_us, c.count)));
            hook(&FlushReport {
                backend: &self.opts.name,
                rows,
                duration_us,
                committed_us,
                chunks: &self.report_chunks,
            });
        }
        if self.pending.is_empty() {
            self.clear_pending();
        }
        self.release(bytes);
        self.backoff = RETRY_BACKOFF_MIN;
        if self.errors_not_logged > 0 || self.last_error_log.is_some() {
            log::info!("backend {}: writing again", self.label);
            self.last_error_log = None;
            self.errors_not_logged = 0;
        }
    }

    fn fail(&mut self, e: &SinkError) {
        self.abort_sink();
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.set_failing(true);
        {
            let mut d = lock(&self.stats.detail);
            d.last_error = Some(e.to_string());
            d.last_error_us = now_us();
        }
        let now = Instant::now();
        let fatal = !e.is_retriable();
        if fatal {
            // Retrying the same rows cannot help: drop them (counted) and pause before newer ones.
            let bytes: u64 = self.pending.iter().map(cost).sum();
            self.stats
                .chunks_dropped_failed
                .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
            self.stats
                .rows_dropped_failed
                .fetch_add(self.pending_rows, Ordering::Relaxed);
            self.stats.last_drop_us.store(now_us(), Ordering::Relaxed);
            let rows = self.pending_rows;
            for c in &self.pending {
                if let Some(p) = &c.position {
                    p.stream.dropped(p.next, c.count);
                }
            }
            self.clear_pending();
            self.release(bytes);
            self.retry_at = Some(now + RETRY_BACKOFF_MAX);
            self.log_error(now, format_args!("{e} (fatal: {rows} rows dropped)"));
        } else {
            self.retry_at = Some(now + self.backoff);
            let delay = self.backoff;
            self.backoff = (self.backoff * 2).min(RETRY_BACKOFF_MAX);
            let spooled = self.spill();
            let rows = self.pending_rows;
            if spooled > 0 {
                self.log_error(
                    now,
                    format_args!(
                        "{e} ({spooled} rows to the spool; retrying {rows} rows in {delay:?})"
                    ),
                );
            } else {
                self.log_error(now, format_args!("{e} (retrying {rows} rows in {delay:?})"));
            }
        }
    }

    /// With a spool: hands the live (unpositioned) pending chunks to it, so a failing backend
    /// holds nothing in memory that a crash could lose; positioned chunks stay for the retry
    /// (their stream reads them again anyway). Not while a failed commit's outcome is unknown
    /// (`unresolved`): its rows may be stored already. Returns the rows handed over.
    fn spill(&mut self) -> u64 {
        let Some(spool) = self.spool.clone() else {
            return 0;
        };
        if self.unresolved > 0 || self.pending.iter().all(|c| c.position.is_some()) {
            return 0;
        }
        if self.written > 0 {
            self.abort_sink();
        }
        let mut kept = Vec::with_capacity(self.pending.len());
        let (mut rows, mut bytes) = (0u64, 0u64);
        for c in self.pending.drain(..) {
            if c.position.is_some() {
                kept.push(c);
            } else {
                rows += c.count;
                bytes += cost(&c);
                // Refused chunks are counted by the spool.
                spool.offer(c);
            }
        }
        self.pending = kept;
        self.pending_rows -= rows;
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        self.release(bytes);
        rows
    }

    /// Records whether this lane's last attempt failed and republishes `healthy`.
    fn set_failing(&mut self, failing: bool) {
        if failing == self.failing {
            return;
        }
        self.failing = failing;
        let mut n = lock(&self.lane.shared.failing);
        *n = if failing {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
        self.stats.healthy.store(*n == 0, Ordering::Relaxed);
    }

    fn log_error(&mut self, now: Instant, msg: std::fmt::Arguments<'_>) {
        let due = self
            .last_error_log
            .is_none_or(|t| now.saturating_duration_since(t) >= ERROR_LOG_INTERVAL);
        if due {
            if self.errors_not_logged > 0 {
                log::error!(
                    "backend {}: {msg} ({} more errors since the last message)",
                    self.label,
                    self.errors_not_logged
                );
            } else {
                log::error!("backend {}: {msg}", self.label);
            }
            self.last_error_log = Some(now);
            self.errors_not_logged = 0;
        } else {
            self.errors_not_logged += 1;
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_rows = 0;
        self.pending_since = None;
        self.written = 0;
        self.unresolved = 0;
        self.count_flights_done(self.flights.len());
        self.flights.clear();
        self.flight_chunks = 0;
        self.flight_rows = 0;
    }

    fn release(&self, bytes: u64) {
        // Saturating: the counter never wraps even if accounting were off by a chunk.
        let _ = self
            .stats
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(bytes))
            });
    }

    fn refresh_status(&mut self, now: Instant) {
        let status = self.sink.status();
        lock(&self.stats.detail).status = status;
        self.last_status = Some(now);
    }

    /// Shutdown: flush what this lane holds, retrying for up to `shutdown_timeout`. Every chunk
    /// queued before the `Shutdown`s has been taken by some lane; the lane that took the last
    /// `Shutdown` (no other lane reads the queue any more) also takes what was sent after it.
    fn finish(&mut self) {
        if self.lane.shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            while let Ok(msg) = self.rx.try_recv() {
                if let Msg::Chunk(c) = msg {
                    self.pending_rows += c.count;
                    self.pending.push(c);
                }
            }
        }
        while let Ok(m) = self.lane.rx.try_recv() {
            self.lane_msg(m);
        }
        // With a spool, shutdown does not wait for a failing backend: one attempt when it is
        // healthy, and what is not stored goes to the spool.
        let timeout = if self.spool.is_some() {
            if self.failing || self.retry_at.is_some() {
                self.unresolved = 0;
                self.spill();
            }
            Duration::ZERO
        } else {
            self.opts.shutdown_timeout
        };
        let deadline = Instant::now() + timeout;
        loop {
            // Nothing (left) to store: no retry to wait for (a fatal error dropped its rows).
            if self.pending.is_empty() {
                break;
            }
            if let Some(at) = self.retry_at.take() {
                let now = Instant::now();
                if at > deadline {
                    break;
                }
                thread::sleep(at.saturating_duration_since(now));
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                if !self.resolve() {
                    continue;
                }
            }
            if self.flush() && self.wait_flights(0) {
                break;
            }
            if self.retry_at.is_none() || Instant::now() >= deadline {
                break;
            }
        }
        if self.spool.is_some() {
            self.unresolved = 0;
            self.spill();
        }
        // Positioned chunks not stored are not lost: their stream resumes from its stored
        // position at the next start.
        let before = self.pending.len();
        self.pending.retain(|c| c.position.is_none());
        if self.pending.len() < before {
            self.abort_sink();
            self.pending_rows = self.pending.iter().map(|c| c.count).sum();
            log::info!(
                "backend {}: {} chunks of replayable streams not stored; they are read again \
                 at the next start",
                self.label,
                before - self.pending.len()
            );
        }
        if !self.pending.is_empty() {
            let rows = self.pending_rows;
            log::error!(
                "backend {}: shutting down with {rows} rows not written (the backend kept failing)",
                self.label
            );
            self.stats
                .chunks_dropped_failed
                .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
            self.stats
                .rows_dropped_failed
                .fetch_add(rows, Ordering::Relaxed);
            self.stats.last_drop_us.store(now_us(), Ordering::Relaxed);
            let bytes: u64 = self.pending.iter().map(cost).sum();
            self.clear_pending();
            self.release(bytes);
            self.abort_sink();
        }
        self.refresh_status(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize;

    /// A sink that records what it stored and fails on command.
    #[derive(Clone, Default)]
    struct Probe {
        stored: Arc<Mutex<Vec<u8>>>,
        current: Arc<Mutex<Vec<u8>>>,
        /// Fail this many flushes (retriable), then succeed.
        fail_flushes: Arc<AtomicUsize>,
        fatal: Arc<AtomicBool>,
        flushes: Arc<AtomicUsize>,
    }

    impl Sink for Probe {
        fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
            lock(&self.current).extend_from_slice(&chunk.rows);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            if self.fatal.load(Ordering::SeqCst) {
                return Err(SinkError::fatal("table is wrong"));
            }
            if self
                .fail_flushes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::retriable("connection lost"));
            }
            let cur = std::mem::take(&mut *lock(&self.current));
            lock(&self.stored).extend_from_slice(&cur);
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn abort(&mut self) {
            lock(&self.current).clear();
        }
    }

    fn chunk(s: &str) -> Chunk {
        Chunk {
            rows: Bytes::copy_from_slice(s.as_bytes()),
            count: s.matches('\n').count() as u64,
            oldest_received_us: 1,
            position: None,
        }
    }

    fn opts(rows: u64, interval_ms: u64) -> BackendOptions {
        BackendOptions {
            flush_rows: rows,
            flush_interval: Duration::from_millis(interval_ms),
            ..BackendOptions::new("t", "test")
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A sink whose connect fails (retriable) this many times, then succeeds.
    struct Unreachable {
        fail_connects: Arc<AtomicUsize>,
        connects: Arc<AtomicUsize>,
    }

    impl Sink for Unreachable {
        fn write(&mut self, _chunk: &Chunk) -> Result<(), SinkError> {
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn connect(&mut self) -> Result<(), SinkError> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            if self
                .fail_connects
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::retriable("connection refused"));
            }
            Ok(())
        }
    }

    /// Regression (issue 20.1): a backend that cannot connect was healthy until rows arrived.
    /// Now each lane connects at start; the state is failed before any row, and it recovers
    /// without traffic once a retry connects.
    #[test]
    fn connects_at_start_and_recovers_without_rows() {
        let fail = Arc::new(AtomicUsize::new(2));
        let connects = Arc::new(AtomicUsize::new(0));
        let sink = Unreachable {
            fail_connects: Arc::clone(&fail),
            connects: Arc::clone(&connects),
        };
        let backend = Backend::spawn(Box::new(sink), opts(10, 60_000)).expect("spawn");
        let stats = Arc::clone(backend.stats());
        assert_eq!(
            stats.wait_connected(Duration::from_secs(10)),
            ConnectState::Failed
        );
        assert!(!stats.healthy.load(Ordering::Relaxed));
        assert!(
            stats
                .detail()
                .last_error
                .is_some_and(|e| e.contains("connection refused"))
        );
        wait_for("a retry that connects", || {
            stats.connect_state() == ConnectState::Connected
        });
        assert_eq!(connects.load(Ordering::SeqCst), 3);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 2);
        backend.shutdown();
    }

    #[test]
    fn a_sink_without_connect_is_connected_at_once() {
        let backend = Backend::spawn(Box::new(Probe::default()), opts(10, 60_000)).expect("spawn");
        assert_eq!(
            backend.stats().wait_connected(Duration::from_secs(10)),
            ConnectState::Connected
        );
        backend.shutdown();
    }

    #[test]
    fn flushes_on_size_and_at_shutdown() {
        let probe = Probe::default();
        let backend = Backend::spawn(Box::new(probe.clone()), opts(2, 60_000)).expect("spawn");
        let tx = backend.sender();
        assert!(tx.try_send(chunk("a\n")));
        assert!(tx.try_send(chunk("b\n")));
        wait_for("size flush", || probe.flushes.load(Ordering::SeqCst) == 1);
        assert!(tx.try_send(chunk("c\n")));
        let stats = Arc::clone(backend.stats());
        backend.shutdown();
        assert_eq!(&*lock(&probe.stored), b"a\nb\nc\n");
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 3);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn flushes_on_age() {
        let probe = Probe::default();
        let backend = Backend::spawn(Box::new(probe.clone()), opts(1_000_000, 20)).expect("spawn");
        assert!(backend.sender().try_send(chunk("a\n")));
        wait_for("age flush", || probe.flushes.load(Ordering::SeqCst) == 1);
        assert_eq!(&*lock(&probe.stored), b"a\n");
    }

    #[test]
    fn retries_the_same_chunks_after_a_retriable_error() {
        let probe = Probe::default();
        probe.fail_flushes.store(2, Ordering::SeqCst);
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = Arc::clone(&seen);
        let mut o = opts(2, 60_000);
        o.on_flush = Some(Arc::new(move |r: &FlushReport<'_>| {
            seen2.fetch_add(r.rows, Ordering::SeqCst);
        }));
        let backend = Backend::spawn(Box::new(probe.clone()), o).expect("spawn");
        let tx = backend.sender();
        assert!(tx.try_send(chunk("a\n")));
        assert!(tx.try_send(chunk("b\n")));
        wait_for("the retried flush", || {
            probe.flushes.load(Ordering::SeqCst) == 1
        });
        let stats = Arc::clone(backend.stats());
        assert_eq!(stats.errors.load(Ordering::Relaxed), 2);
        assert_eq!(stats.reconnects.load(Ordering::Relaxed), 2);
        assert!(stats.healthy.load(Ordering::Relaxed));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        backend.shutdown();
        assert_eq!(&*lock(&probe.stored), b"a\nb\n");
        assert!(
            stats
                .detail()
                .last_error
                .is_some_and(|e| e.contains("connection lost"))
        );
    }

    #[test]
    fn fatal_errors_drop_and_count_and_keep_going() {
        let probe = Probe::default();
        probe.fatal.store(true, Ordering::SeqCst);
        let backend = Backend::spawn(Box::new(probe.clone()), opts(1, 60_000)).expect("spawn");
        let stats = Arc::clone(backend.stats());
        assert!(backend.sender().try_send(chunk("a\nb\n")));
        wait_for("the fatal error", || {
            stats.rows_dropped_failed.load(Ordering::Relaxed) == 2
        });
        assert!(!stats.healthy.load(Ordering::Relaxed));
        probe.fatal.store(false, Ordering::SeqCst);
        assert!(backend.sender().try_send(chunk("c\n")));
        backend.shutdown();
        assert_eq!(&*lock(&probe.stored), b"c\n");
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let probe = Probe::default();
        // Never succeeds: everything stays queued.
        probe.fail_flushes.store(usize::MAX, Ordering::SeqCst);
        let mut o = opts(1, 60_000);
        o.queue_bytes = 3 * (CHUNK_OVERHEAD_BYTES + 2);
        o.shutdown_timeout = Duration::from_millis(10);
        let backend = Backend::spawn(Box::new(probe.clone()), o).expect("spawn");
        let tx = backend.sender();
        let sent = (0..10).filter(|_| tx.try_send(chunk("x\n"))).count();
        assert_eq!(sent, 3);
        let stats = Arc::clone(backend.stats());
        assert_eq!(stats.rows_dropped_queue_full.load(Ordering::Relaxed), 7);
        backend.shutdown();
        assert_eq!(stats.rows_dropped_failed.load(Ordering::Relaxed), 3);
        assert_eq!(stats.rows_dropped(), 10);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    /// One lane's sink for the lane tests: rows land in a store shared by every lane, tagged
    /// with the lane; each lane fails (retriably) on command.
    struct LaneProbe {
        lane: usize,
        stored: Arc<Mutex<Vec<(usize, String)>>>,
        current: Vec<String>,
        /// Fail every flush while set.
        fail: Arc<AtomicBool>,
        /// Fail this many flushes (retriable), then succeed.
        fail_flushes: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
        /// Time a successful flush takes (so the lanes overlap).
        flush_delay: Duration,
    }

    /// What the test keeps of each lane.
    #[derive(Clone, Default)]
    struct LaneHandle {
        fail: Arc<AtomicBool>,
        fail_flushes: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
    }

    impl Sink for LaneProbe {
        fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
            let text = String::from_utf8_lossy(&chunk.rows);
            self.current.extend(text.lines().map(str::to_owned));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            if self.fail.load(Ordering::SeqCst)
                || self
                    .fail_flushes
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(SinkError::retriable("connection lost"));
            }
            thread::sleep(self.flush_delay);
            let lane = self.lane;
            lock(&self.stored).extend(self.current.drain(..).map(|l| (lane, l)));
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn abort(&mut self) {
            self.current.clear();
        }
    }

    /// `n` lane sinks over one store, with a handle on each.
    #[allow(clippy::type_complexity, reason = "test plumbing")]
    fn lane_probes(
        n: usize,
        flush_delay: Duration,
    ) -> (
        Vec<Box<dyn Sink>>,
        Vec<LaneHandle>,
        Arc<Mutex<Vec<(usize, String)>>>,
    ) {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<LaneHandle> = (0..n).map(|_| LaneHandle::default()).collect();
        let sinks = handles
            .iter()
            .enumerate()
            .map(|(lane, h)| {
                Box::new(LaneProbe {
                    lane,
                    stored: Arc::clone(&stored),
                    current: Vec::new(),
                    fail: Arc::clone(&h.fail),
                    fail_flushes: Arc::clone(&h.fail_flushes),
                    flushes: Arc::clone(&h.flushes),
                    flush_delay,
                }) as Box<dyn Sink>
            })
            .collect();
        (sinks, handles, stored)
    }

    /// The stored lines, sorted numerically; each must be `0..n` exactly once.
    fn assert_each_once(stored: &Mutex<Vec<(usize, String)>>, n: usize) {
        let mut got: Vec<usize> = lock(stored)
            .iter()
            .map(|(_, l)| l.parse().expect("a number"))
            .collect();
        got.sort_unstable();
        let want: Vec<usize> = (0..n).collect();
        assert_eq!(got, want, "every row exactly once");
    }

    fn line(i: usize) -> Chunk {
        chunk(&format!("{i}\n"))
    }

    #[test]
    fn lanes_write_every_chunk_once_and_all_take_part() {
        let (sinks, handles, stored) = lane_probes(3, Duration::from_millis(2));
        let backend = Backend::spawn_lanes(sinks, opts(4, 60_000)).expect("spawn");
        assert_eq!(backend.lanes(), 3);
        let stats = Arc::clone(backend.stats());
        let tx = backend.sender();
        for i in 0..600 {
            assert!(tx.try_send(line(i)));
        }
        wait_for("every row", || {
            stats.rows_written.load(Ordering::Relaxed) == 600
        });
        backend.shutdown();
        assert_each_once(&stored, 600);
        let per_lane: Vec<usize> = handles
            .iter()
            .map(|h| h.flushes.load(Ordering::SeqCst))
            .collect();
        assert!(
            per_lane.iter().all(|&f| f > 0),
            "every lane flushed: {per_lane:?}"
        );
        assert_eq!(
            stats.flushes.load(Ordering::Relaxed),
            per_lane.iter().sum::<usize>() as u64,
            "backend flushes are the lanes' total"
        );
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 600);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
        assert!(stats.healthy.load(Ordering::Relaxed));
    }

    /// A lane whose sink fails keeps and retries its own chunks, takes no new ones while it
    /// backs off (the other lanes write them), and the backend stays unhealthy until that lane
    /// writes again: no row lost, none doubled.
    #[test]
    fn a_failing_lane_retries_its_own_chunks_while_the_others_carry_on() {
        let (sinks, handles, stored) = lane_probes(3, Duration::ZERO);
        handles[1].fail.store(true, Ordering::SeqCst);
        let backend = Backend::spawn_lanes(sinks, opts(1, 60_000)).expect("spawn");
        let stats = Arc::clone(backend.stats());
        let tx = backend.sender();
        // Until lane 1 has taken a chunk (and failed to flush it).
        let mut sent = 0;
        while stats.errors.load(Ordering::Relaxed) == 0 {
            assert!(sent < 10_000, "lane 1 never took a chunk");
            assert!(tx.try_send(line(sent)));
            sent += 1;
            thread::sleep(Duration::from_millis(1));
        }
        // Everything sent from now on is written by lanes 0 and 2 while lane 1 keeps failing.
        let first_late = sent;
        for _ in 0..300 {
            assert!(tx.try_send(line(sent)));
            sent += 1;
        }
        wait_for("the late rows, by the healthy lanes", || {
            let s = lock(&stored);
            (first_late..sent).all(|i| s.iter().any(|(_, l)| *l == i.to_string()))
        });
        assert!(
            lock(&stored)
                .iter()
                .all(|(lane, l)| *lane != 1 && l.parse::<usize>().is_ok()),
            "lane 1 stored nothing"
        );
        assert!(
            !stats.healthy.load(Ordering::Relaxed),
            "lane 1 is still failing"
        );
        assert!(stats.errors.load(Ordering::Relaxed) >= 1);
        assert!(
            stats.queued_bytes.load(Ordering::Relaxed) > 0,
            "lane 1's rows are held"
        );

        handles[1].fail.store(false, Ordering::SeqCst);
        wait_for("lane 1's retry", || {
            handles[1].flushes.load(Ordering::SeqCst) >= 1
        });
        wait_for("every row", || {
            stats.rows_written.load(Ordering::Relaxed) == sent as u64
        });
        assert!(stats.healthy.load(Ordering::Relaxed));
        backend.shutdown();
        assert_each_once(&stored, sent);
        assert!(lock(&stored).iter().any(|(lane, _)| *lane == 1));
        assert_eq!(
            stats.reconnects.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
            "every retriable error was retried"
        );
        assert_eq!(stats.rows_dropped(), 0);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    /// Nothing is due before shutdown: every lane flushes what it holds then, a lane whose first
    /// flush fails retries within `shutdown_timeout`, and a lane backing off (which does not read
    /// the queue) is woken and stops.
    #[test]
    fn shutdown_flushes_every_lane() {
        let (sinks, handles, stored) = lane_probes(3, Duration::ZERO);
        handles[2].fail_flushes.store(1, Ordering::SeqCst);
        let backend = Backend::spawn_lanes(sinks, opts(1_000_000, 600_000)).expect("spawn");
        let stats = Arc::clone(backend.stats());
        let tx = backend.sender();
        for i in 0..100 {
            assert!(tx.try_send(line(i)));
        }
        backend.shutdown();
        assert_each_once(&stored, 100);
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 100);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(stats.rows_dropped(), 0);

        // A lane that keeps failing: its rows are dropped (counted) at the deadline, the others'
        // are written, and shutdown does not wait for a backoff past the deadline.
        let (sinks, handles, stored) = lane_probes(2, Duration::ZERO);
        handles[0].fail.store(true, Ordering::SeqCst);
        let mut o = opts(1, 600_000);
        o.shutdown_timeout = Duration::from_millis(50);
        let backend = Backend::spawn_lanes(sinks, o).expect("spawn");
        let stats = Arc::clone(backend.stats());
        let tx = backend.sender();
        let mut sent = 0;
        while stats.errors.load(Ordering::Relaxed) == 0 {
            assert!(sent < 10_000, "lane 0 never took a chunk");
            assert!(tx.try_send(line(sent)));
            sent += 1;
            thread::sleep(Duration::from_millis(1));
        }
        let t0 = Instant::now();
        backend.shutdown();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        let written = stats.rows_written.load(Ordering::Relaxed);
        let dropped = stats.rows_dropped_failed.load(Ordering::Relaxed);
        assert!(dropped >= 1);
        assert_eq!(written + dropped, sent as u64);
        assert_eq!(lock(&stored).len() as u64, written);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    /// A stream that records what the backend reports.
    #[derive(Debug, Default)]
    struct Recorder {
        name: String,
        committed: Mutex<Vec<(u64, u64)>>,
        dropped: Mutex<Vec<(u64, u64)>>,
    }

    impl crate::sink::Stream for Recorder {
        fn name(&self) -> &str {
            &self.name
        }
        fn committed(&self, next: u64, rows: u64) {
            lock(&self.committed).push((next, rows));
        }
        fn dropped(&self, next: u64, rows: u64) {
            lock(&self.dropped).push((next, rows));
        }
    }

    fn recorder(name: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.to_owned(),
            ..Recorder::default()
        })
    }

    fn positioned(s: &Arc<Recorder>, text: &str, next: u64) -> Chunk {
        let stream: Arc<dyn crate::sink::Stream> = s.clone();
        Chunk {
            position: Some(crate::sink::Position { stream, next }),
            ..chunk(text)
        }
    }

    /// A transactional sink: rows and positions of a flush are stored together; on command a
    /// commit goes through but reports a lost connection (the ambiguous case).
    #[derive(Clone, Default)]
    struct TxProbe {
        stored: Arc<Mutex<Vec<u8>>>,
        positions: Arc<Mutex<Vec<(String, u64)>>>,
        current: Vec<u8>,
        set: crate::sink::PositionSet,
        /// Commit, then fail this many flushes (retriable).
        lose_replies: Arc<AtomicUsize>,
        /// Fail this many position queries (retriable).
        fail_queries: Arc<AtomicUsize>,
        lane_of_flush: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for TxProbe {
        fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
            self.current.extend_from_slice(&chunk.rows);
            self.set.record(chunk);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            lock(&self.stored).extend_from_slice(&std::mem::take(&mut self.current));
            let mut p = lock(&self.positions);
            for (n, at) in self.set.entries() {
                match p.iter_mut().find(|(m, _)| m == n) {
                    Some(e) => e.1 = *at,
                    None => p.push((n.clone(), *at)),
                }
                lock(&self.lane_of_flush).push(n.clone());
            }
            self.set.clear();
            if self
                .lose_replies
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::retriable("connection lost at commit"));
            }
            Ok(())
        }
        fn abort(&mut self) {
            self.current.clear();
            self.set.clear();
        }
        fn committed_positions(
            &mut self,
            prefix: &str,
        ) -> Result<Option<Vec<(String, u64)>>, SinkError> {
            if self
                .fail_queries
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::retriable("still down"));
            }
            Ok(Some(
                lock(&self.positions)
                    .iter()
                    .filter(|(n, _)| n.starts_with(prefix))
                    .cloned()
                    .collect(),
            ))
        }
    }

    /// Positioned chunks are stored with their positions, reported to their stream in order,
    /// and the stored positions can be asked for through the backend.
    #[test]
    fn positions_are_stored_with_their_rows_and_reported() {
        let probe = TxProbe::default();
        let backend = Backend::spawn(Box::new(probe.clone()), opts(2, 60_000)).expect("spawn");
        let tx = backend.positioned_sender();
        let s = recorder("spool/a");
        assert!(tx.send(positioned(&s, "a\n", 1)).is_ok());
        assert!(tx.send(positioned(&s, "b\n", 2)).is_ok());
        wait_for("the flush", || lock(&s.committed).len() == 2);
        assert_eq!(*lock(&s.committed), vec![(1, 1), (2, 1)]);
        let got = tx
            .committed_positions("spool/", Duration::from_secs(10))
            .expect("query");
        assert_eq!(got, Some(vec![("spool/a".to_owned(), 2)]));
        // Without a position a chunk is refused (it belongs in the queue).
        assert!(tx.send(chunk("x\n")).is_err());
        let stats = Arc::clone(backend.stats());
        backend.shutdown();
        assert_eq!(&*lock(&probe.stored), b"a\nb\n");
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 2);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    /// A commit that went through but whose reply was lost: the backend asks for the stored
    /// positions (failing once: still down) before retrying, finds the flush stored and does
    /// not write it again.
    #[test]
    fn a_lost_commit_reply_is_resolved_by_the_stored_positions() {
        let probe = TxProbe::default();
        probe.lose_replies.store(1, Ordering::SeqCst);
        probe.fail_queries.store(1, Ordering::SeqCst);
        let backend = Backend::spawn(Box::new(probe.clone()), opts(3, 60_000)).expect("spawn");
        let s = recorder("kafka/g/t/0");
        let ptx = backend.positioned_sender();
        assert!(ptx.send(positioned(&s, "a\n", 10)).is_ok());
        assert!(backend.sender().try_send(chunk("live\n")));
        assert!(ptx.send(positioned(&s, "b\n", 11)).is_ok());
        wait_for("the resolution", || lock(&s.committed).len() == 2);
        let stats = Arc::clone(backend.stats());
        assert!(backend.sender().try_send(chunk("after\n")));
        backend.shutdown();
        let stored = String::from_utf8_lossy(&lock(&probe.stored)).into_owned();
        let mut lines: Vec<&str> = stored.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["a", "after", "b", "live"], "nothing twice");
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 4);
        assert!(stats.errors.load(Ordering::Relaxed) >= 2);
        assert_eq!(stats.rows_dropped(), 0);
    }

    /// Every chunk of one stream goes through one lane, in order, whatever the lane count.
    #[test]
    fn a_stream_is_written_by_one_lane_in_order() {
        let (sinks, _handles, stored) = lane_probes(3, Duration::from_millis(1));
        let backend = Backend::spawn_lanes(sinks, opts(3, 60_000)).expect("spawn");
        let ptx = backend.positioned_sender();
        let streams: Vec<Arc<Recorder>> = (0..4).map(|i| recorder(&format!("s{i}"))).collect();
        for i in 0..200u64 {
            let s = &streams[usize::try_from(i % 4).unwrap_or(0)];
            assert!(ptx.send(positioned(s, &format!("{i}\n"), i + 1)).is_ok());
        }
        backend.shutdown();
        assert_each_once(&stored, 200);
        for (k, s) in streams.iter().enumerate() {
            let nexts: Vec<u64> = lock(&s.committed).iter().map(|c| c.0).collect();
            let want: Vec<u64> = (0..200u64)
                .filter(|i| i % 4 == k as u64)
                .map(|i| i + 1)
                .collect();
            assert_eq!(nexts, want, "stream {k} in order");
            let lanes: std::collections::BTreeSet<usize> = lock(&stored)
                .iter()
                .filter(|(_, l)| l.parse::<u64>().is_ok_and(|i| i % 4 == k as u64))
                .map(|(lane, _)| *lane)
                .collect();
            assert_eq!(lanes.len(), 1, "stream {k} by one lane: {lanes:?}");
        }
    }

    /// Cancel forgets a stream's chunks not stored yet (the lane is failing); a fatal error
    /// reports the dropped chunks to their stream; at shutdown positioned chunks not stored are
    /// left to their stream, not counted as dropped.
    #[test]
    fn cancel_fatal_and_shutdown_with_positions() {
        let probe = Probe::default();
        probe.fail_flushes.store(usize::MAX, Ordering::SeqCst);
        let mut o = opts(1, 60_000);
        o.shutdown_timeout = Duration::from_millis(10);
        let backend = Backend::spawn(Box::new(probe.clone()), o).expect("spawn");
        let stats = Arc::clone(backend.stats());
        let ptx = backend.positioned_sender();
        let (a, b) = (recorder("a"), recorder("b"));
        assert!(ptx.send(positioned(&a, "a1\n", 1)).is_ok());
        assert!(ptx.send(positioned(&b, "b1\n", 1)).is_ok());
        wait_for("a failed flush", || {
            stats.errors.load(Ordering::Relaxed) >= 1
        });
        assert_eq!(ptx.cancel("a", Duration::from_secs(10)).expect("cancel"), 1);
        assert_eq!(ptx.cancel("a", Duration::from_secs(10)).expect("cancel"), 0);
        probe.fail_flushes.store(0, Ordering::SeqCst);
        probe.fatal.store(true, Ordering::SeqCst);
        wait_for("the fatal drop", || !lock(&b.dropped).is_empty());
        assert_eq!(*lock(&b.dropped), vec![(1, 1)]);
        assert!(lock(&a.committed).is_empty() && lock(&a.dropped).is_empty());
        probe.fatal.store(false, Ordering::SeqCst);
        probe.fail_flushes.store(usize::MAX, Ordering::SeqCst);
        assert!(ptx.send(positioned(&a, "a2\n", 2)).is_ok());
        let before = stats.rows_dropped();
        backend.shutdown();
        assert_eq!(
            stats.rows_dropped(),
            before,
            "left to the stream, not dropped"
        );
        assert!(lock(&probe.stored).is_empty());
    }

    #[test]
    fn a_backend_needs_a_sink() {
        assert!(Backend::spawn_lanes(Vec::new(), opts(1, 1)).is_err());
    }

    fn spool_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("goflow-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn spooled(o: BackendOptions, dir: &std::path::Path) -> BackendOptions {
        BackendOptions {
            spool: Some(SpoolConfig {
                dir: dir.to_path_buf(),
                max_bytes: 1 << 30,
                format: "test".into(),
            }),
            ..o
        }
    }

    fn lines(n: std::ops::Range<u32>) -> String {
        n.map(|i| format!("{i}\n")).collect()
    }

    #[test]
    fn a_failing_backend_spools_and_replays_in_order_once() {
        let dir = spool_dir("replay");
        let probe = Probe::default();
        probe.fail_flushes.store(usize::MAX, Ordering::SeqCst);
        let backend =
            Backend::spawn(Box::new(probe.clone()), spooled(opts(1, 10), &dir)).expect("spawn");
        let stats = Arc::clone(backend.stats());
        let sp = stats.spool.clone().expect("spool stats");
        let tx = backend.sender();
        for i in 0..50 {
            assert!(tx.try_send(chunk(&format!("{i}\n"))));
        }
        wait_for("all spooled", || {
            sp.rows_spooled.load(Ordering::Relaxed) == 50
        });
        assert!(lock(&probe.stored).is_empty());
        probe.fail_flushes.store(0, Ordering::SeqCst);
        wait_for("replayed", || {
            sp.rows_replayed.load(Ordering::Relaxed) == 50
        });
        // Every row once. The order is the spool's, oldest record first, which is not always
        // arrival order: at the outage's start the rows that overflowed the full memory queue
        // reach the spool before the queued ones the failing lane hands over (README, "Disk
        // spool").
        let stored = String::from_utf8_lossy(&lock(&probe.stored)).into_owned();
        let mut rows: Vec<u32> = stored.lines().map(|l| l.parse().expect("a row")).collect();
        rows.sort_unstable();
        assert_eq!(
            rows,
            (0..50).collect::<Vec<_>>(),
            "every row once: {stored:?}"
        );
        // Once healthy, new rows go straight to the backend.
        wait_for("healthy", || stats.healthy.load(Ordering::Relaxed));
        assert!(tx.try_send(chunk("live\n")));
        wait_for("live row", || lock(&probe.stored).ends_with(b"live\n"));
        assert_eq!(sp.rows_spooled.load(Ordering::Relaxed), 50);
        // The replayed segments are removed once closed.
        wait_for("segments removed", || {
            sp.segments.load(Ordering::Relaxed) == 0
        });
        assert_eq!(stats.rows_dropped(), 0);
        backend.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_shutdown_while_failing_spools_and_the_next_start_replays_once() {
        let dir = spool_dir("restart");
        let probe = Probe::default();
        probe.fail_flushes.store(usize::MAX, Ordering::SeqCst);
        let mut o = spooled(opts(1_000, 10), &dir);
        o.shutdown_timeout = Duration::from_secs(30);
        let backend = Backend::spawn(Box::new(probe.clone()), o.clone()).expect("spawn");
        let tx = backend.sender();
        for i in 0..20 {
            assert!(tx.try_send(chunk(&format!("{i}\n"))));
        }
        let t0 = Instant::now();
        backend.shutdown();
        // No 30 s of retries: what was held went to the spool.
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert!(lock(&probe.stored).is_empty());

        let healthy = Probe::default();
        let second = Backend::spawn(Box::new(healthy.clone()), o.clone()).expect("spawn");
        let sp = second.stats().spool.clone().expect("spool");
        wait_for("replayed", || {
            sp.rows_replayed.load(Ordering::Relaxed) == 20
        });
        second.shutdown();
        assert_eq!(
            String::from_utf8_lossy(&lock(&healthy.stored)),
            lines(0..20)
        );

        // A third start finds nothing left to replay.
        let third_probe = Probe::default();
        let third = Backend::spawn(Box::new(third_probe.clone()), o).expect("spawn");
        thread::sleep(Duration::from_millis(300));
        third.shutdown();
        assert!(lock(&third_probe.stored).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_spool_refuses_the_newest_and_counts_them() {
        let dir = spool_dir("full");
        let probe = Probe::default();
        probe.fail_flushes.store(usize::MAX, Ordering::SeqCst);
        let mut o = spooled(opts(1, 10), &dir);
        if let Some(s) = o.spool.as_mut() {
            // Room for the segment header and a few records.
            s.max_bytes = 400;
        }
        let backend = Backend::spawn(Box::new(probe.clone()), o).expect("spawn");
        let stats = Arc::clone(backend.stats());
        let sp = stats.spool.clone().expect("spool");
        let tx = backend.sender();
        wait_for("unhealthy", || {
            let _ = tx.try_send(chunk("probe\n"));
            !stats.healthy.load(Ordering::Relaxed)
        });
        for _ in 0..100 {
            let _ = tx.try_send(chunk("0123456789012345678901234567890123456789\n"));
        }
        wait_for("written", || sp.memory_bytes.load(Ordering::Relaxed) == 0);
        let spooled = sp.rows_spooled.load(Ordering::Relaxed);
        let dropped = sp.rows_dropped_full.load(Ordering::Relaxed);
        assert!(dropped > 0 && spooled > 0, "{spooled} {dropped}");
        // The bound counts records; each segment adds its small header.
        assert!(sp.bytes.load(Ordering::Relaxed) <= 400 + 32);
        assert_eq!(stats.rows_dropped(), dropped);
        backend.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A sink whose flushes stay in flight until the test settles them (as a producer's
    /// acknowledgements arrive later, in any order).
    #[derive(Clone, Default)]
    struct InFlight {
        state: Arc<Mutex<InFlightState>>,
    }

    #[derive(Default)]
    struct InFlightState {
        current: Vec<u8>,
        /// id -> (rows, outcome once settled: true = delivered).
        flights: std::collections::BTreeMap<u64, (String, Option<bool>)>,
        next: u64,
        /// Rows of every flush the test settled as delivered (the broker's log: at least once).
        delivered: String,
        aborts: usize,
        max_in_flight: usize,
        waker: Option<FlushWaker>,
    }

    impl Sink for InFlight {
        fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
            lock(&self.state).current.extend_from_slice(&chunk.rows);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            unreachable!("the backend ends flushes with flush_start")
        }
        fn flush_start(&mut self, waker: &FlushWaker) -> Result<Option<u64>, SinkError> {
            let mut s = lock(&self.state);
            let id = s.next;
            s.next += 1;
            let rows = String::from_utf8_lossy(&std::mem::take(&mut s.current)).into_owned();
            s.flights.insert(id, (rows, None));
            s.max_in_flight = s.max_in_flight.max(s.flights.len());
            s.waker = Some(waker.clone());
            Ok(Some(id))
        }
        fn flush_outcome(&mut self, id: u64) -> Option<Result<(), SinkError>> {
            let mut s = lock(&self.state);
            let delivered = s.flights.get(&id)?.1?;
            s.flights.remove(&id);
            Some(if delivered {
                Ok(())
            } else {
                Err(SinkError::retriable("not acknowledged"))
            })
        }
        fn abort(&mut self) {
            let mut s = lock(&self.state);
            s.current.clear();
            s.flights.clear();
            s.aborts += 1;
        }
    }

    impl InFlight {
        /// Settles flight `id` (the broker acknowledged it, or not) and wakes the lane.
        fn settle(&self, id: u64, delivered: bool) {
            let mut s = lock(&self.state);
            let rows = match s.flights.get_mut(&id) {
                Some(f) => {
                    f.1 = Some(delivered);
                    f.0.clone()
                }
                None => panic!("flight {id} is not in flight"),
            };
            if delivered {
                s.delivered.push_str(&rows);
            }
            if let Some(w) = &s.waker {
                w.wake();
            }
        }

        fn in_flight(&self) -> Vec<(u64, String)> {
            lock(&self.state)
                .flights
                .iter()
                .filter(|(_, f)| f.1.is_none())
                .map(|(id, f)| (*id, f.0.clone()))
                .collect()
        }
    }

    /// Several flushes of one lane in flight at once (up to `flushes_in_flight`, then the lane
    /// waits for the oldest); done strictly oldest first, so a younger flush acknowledged
    /// before an older one is not counted; a failed older flush sends itself and every younger
    /// one back to the retry, which writes them again, oldest first: nothing lost, nothing
    /// acknowledged early.
    #[test]
    fn flushes_in_flight_are_done_in_order_and_a_failed_older_one_is_retried() {
        let sink = InFlight::default();
        let mut o = opts(1, 60_000);
        o.flushes_in_flight = 3;
        let backend = Backend::spawn(Box::new(sink.clone()), o).expect("spawn");
        let stats = Arc::clone(backend.stats());
        let tx = backend.sender();
        for c in ["a\n", "b\n", "c\n", "d\n"] {
            assert!(tx.try_send(chunk(c)));
        }
        // Three in flight; the fourth chunk is written, its flush waits for the oldest.
        wait_for("three flushes in flight and the fourth written", || {
            sink.in_flight().len() == 3 && lock(&sink.state).current == b"d\n"
        });
        assert_eq!(
            sink.in_flight(),
            vec![(0, "a\n".into()), (1, "b\n".into()), (2, "c\n".into())]
        );
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 0);
        assert_eq!(stats.flushes_in_flight.load(Ordering::Relaxed), 3);
        sink.settle(0, true);
        wait_for("the fourth flush in flight", || {
            sink.in_flight().last().is_some_and(|f| f.0 == 3)
        });
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 1);
        assert_eq!(lock(&sink.state).max_in_flight, 3);

        // A younger flush is acknowledged first: not done while an older one is not.
        sink.settle(2, true);
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 1);
        // The older one fails: b, c and d go back to the retry, written again in order.
        sink.settle(1, false);
        wait_for("the retry in flight", || {
            sink.in_flight().first().is_some_and(|f| f.0 == 4)
        });
        assert_eq!(sink.in_flight(), vec![(4, "b\nc\nd\n".into())]);
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 1);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.reconnects.load(Ordering::Relaxed), 1);
        assert!(lock(&sink.state).aborts >= 1);
        sink.settle(4, true);
        wait_for("every row done", || {
            stats.rows_written.load(Ordering::Relaxed) == 4
        });
        backend.shutdown();
        assert_eq!(stats.rows_dropped(), 0);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(stats.flushes_in_flight.load(Ordering::Relaxed), 0);
        // At least once: c was delivered by its first flush and again by the retry.
        assert_eq!(lock(&sink.state).delivered, "a\nc\nb\nc\nd\n");
    }

    /// Positions of flushes in flight reach their stream only when the flush is done, in
    /// order; shutdown waits for what is in flight.
    #[test]
    fn positions_of_flushes_in_flight_are_committed_in_order() {
        let sink = InFlight::default();
        let mut o = opts(1, 60_000);
        o.flushes_in_flight = 4;
        let backend = Backend::spawn(Box::new(sink.clone()), o).expect("spawn");
        let ptx = backend.positioned_sender();
        let s = recorder("s");
        for i in 1..=3 {
            assert!(ptx.send(positioned(&s, &format!("{i}\n"), i)).is_ok());
        }
        wait_for("three in flight", || sink.in_flight().len() == 3);
        sink.settle(2, true);
        sink.settle(1, true);
        wait_for("the lane took the wakes", || sink.in_flight().len() == 1);
        assert!(lock(&s.committed).is_empty(), "committed before the oldest");
        // Shutdown waits for the flush in flight.
        let stopping = thread::spawn(move || backend.shutdown());
        sink.settle(0, true);
        stopping.join().expect("shutdown");
        assert_eq!(*lock(&s.committed), vec![(1, 1), (2, 1), (3, 1)]);
    }
}
