//! Per-worker decode and encode, and the state the daemon shares with the ops API.
//!
//! Each worker thread owns a [`worker::Pipeline`]: per batch it decodes every datagram with its
//! own decoder (templates, samplers and sequence state stay inside one worker: the receive side
//! sends every datagram of one exporter address to the same worker), encodes each record into
//! every backend's buffer, and hands each backend one chunk through a queue that never blocks.
//! [`Shared`] holds what the summary line and the ops API read: per-worker [`WorkerCounters`]
//! (atomics added once per batch, a per-exporter snapshot about once a second) and per-backend
//! [`BackendStats`]. `Shared` is also the ops API's [`OpsSource`](crate::ops::OpsSource).

pub mod counters;
mod status;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use goflow_codec::UnixMicros;
use goflow_writers::backend::BackendStats;

use crate::ops::HistogramHub;

pub use counters::{WorkerCounters, WorkerSnapshot};
pub use worker::{BatchObserver, EncoderFactory, NoObserver, Pipeline};

use crate::ingest::{ReceiverChoice, ReceiverKind};

/// The daemon's shared state: written by workers and backends, read by the summary line and
/// the ops API. Everything in it is cheap to read at any time.
#[derive(Debug)]
pub struct Shared {
    /// When the daemon started (Unix microseconds, and monotonic).
    pub started_us: UnixMicros,
    pub started: Instant,
    /// Where the configuration came from (a path, or "built-in defaults").
    pub config_source: String,
    /// The listen address.
    pub bind: SocketAddr,
    /// The configured receive back-end (`auto` resolves per worker: see [`WorkerCounters::receiver`]).
    pub receiver_choice: ReceiverChoice,
    /// One entry per worker, in socket order.
    pub workers: Vec<Arc<WorkerCounters>>,
    /// One entry per running backend, in the order the frontend names them.
    pub backends: Vec<Arc<BackendStats>>,
    /// Set when shutdown has begun (receiving stops, queues drain).
    pub stopping: AtomicBool,
    /// Latency and size histograms: workers publish into it, backends record flushes.
    pub histograms: Arc<HistogramHub>,
    /// The decoder bounds every worker runs with (shown on /status).
    pub decoder: goflow_codec::DecoderConfig,
    /// The Kafka frontend's counters, when it runs.
    pub consumers: Vec<Arc<crate::consume::ConsumerStats>>,
}

/// Totals over every worker and backend, read once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub batches: u64,
    pub datagrams: u64,
    pub bytes: u64,
    pub records: u64,
    pub records_without_template: u64,
    pub truncated: u64,
    pub kernel_drops: u64,
    pub decode_errors: u64,
    pub sequence_missing: u64,
    /// Rows written by all backends together.
    pub rows_written: u64,
    /// Rows the backends could not queue or store.
    pub rows_dropped: u64,
}

impl Shared {
    /// Shared state for `workers` workers and the given backends.
    pub fn new(
        config_source: String,
        bind: SocketAddr,
        receiver_choice: ReceiverChoice,
        workers: usize,
        backends: Vec<Arc<BackendStats>>,
        histograms: Arc<HistogramHub>,
    ) -> Shared {
        Shared {
            started_us: worker::unix_micros(),
            started: Instant::now(),
            config_source,
            bind,
            receiver_choice,
            workers: (0..workers)
                .map(|i| Arc::new(WorkerCounters::new(i)))
                .collect(),
            backends,
            stopping: AtomicBool::new(false),
            histograms,
            decoder: goflow_codec::DecoderConfig::default(),
            consumers: Vec::new(),
        }
    }

    /// The receive back-end in use: the first started worker's (all workers resolve `auto` the
    /// same way). `None` before any worker has started.
    pub fn receiver_kind(&self) -> Option<ReceiverKind> {
        self.workers.iter().find_map(|w| w.receiver.get().copied())
    }

    /// Workers whose receive loop is running.
    pub fn running_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.running.load(Ordering::Relaxed))
            .count()
    }

    /// Sums every worker's and backend's counters.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for w in &self.workers {
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            t.batches += get(&w.batches);
            t.datagrams += get(&w.datagrams);
            t.bytes += get(&w.bytes);
            t.records += get(&w.records);
            t.records_without_template += get(&w.records_without_template);
            t.truncated += get(&w.truncated);
            t.kernel_drops += get(&w.kernel_drops);
            t.decode_errors += w.decode_errors();
            t.sequence_missing += get(&w.sequence_missing);
        }
        for b in &self.backends {
            t.rows_written += b.rows_written.load(Ordering::Relaxed);
            t.rows_dropped += b.rows_dropped();
        }
        t
    }
}
