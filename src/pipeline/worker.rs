//! One worker's batch processing: every datagram of a wake-up is decoded with the worker's own
//! [`Decoder`] (its template cache, samplers and sequence state), each record is encoded into
//! every backend's buffer by that backend's [`RowEncoder`]. As soon as a buffer holds
//! [`CHUNK_BYTES`] or [`CHUNK_ROWS`] (checked after each datagram), or at the end of a batch once
//! its oldest row is [`CHUNK_MAX_AGE`] old, each buffer leaves as one [`Chunk`], offered to its
//! backend's queue without blocking.
//! Counters are added once per batch; the decoder's per-exporter snapshot is copied out about
//! once a second. [`run`] is the receive loop around it, including the drain at shutdown.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use goflow_codec::{Decoder, DecoderConfig, UnixMicros};
use goflow_writers::backend::BackendSender;
use goflow_writers::sink::{Chunk, RowEncoder};

use super::counters::{self, BatchTally, WorkerCounters};
use crate::ingest::{Datagram, Receiver};

/// How long one receive call waits before the loop checks the stop flag.
pub const RECV_POLL: Duration = Duration::from_millis(100);
/// How often the decoder's per-exporter state is copied out for the ops API.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Templates are expired (TTL) this often.
pub const TEMPLATE_EXPIRY_INTERVAL: Duration = Duration::from_secs(10);
/// The decoder's saved state is handed out when it changed (checked every
/// [`SNAPSHOT_INTERVAL`]), and at least this often while it holds anything, so the refresh
/// times on disk (from which the TTL counts after a restart) stay recent.
pub const SAVE_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Capacity of a backend's batch buffer: a chunk's worth and room for the datagram that
/// fills it (a full buffer is shipped after the datagram that crossed [`CHUNK_BYTES`]).
const BATCH_BUFFER_BYTES: usize = CHUNK_BYTES + (64 << 10);
/// Encoded rows are handed to the backends once a buffer holds this many bytes ...
pub const CHUNK_BYTES: usize = 256 << 10;
/// ... or this many rows ...
pub const CHUNK_ROWS: u64 = 8192;
/// ... or its oldest row is this old, whichever comes first. Under load a batch is often a
/// handful of datagrams; shipping each as its own chunk would wake every backend thread once
/// per batch (a context switch per wake-up), which cost more than decoding.
pub const CHUNK_MAX_AGE: Duration = Duration::from_millis(20);
/// After a batch of fewer than this many datagrams ...
pub const COALESCE_BELOW: usize = 32;
/// ... the worker waits this long before receiving again, so the next batch is bigger. At
/// 1 Gbit/s of 1500-byte datagrams that is 83 datagrams (125 KB) waiting in the socket buffer.
pub const COALESCE_WAIT: Duration = Duration::from_millis(1);
/// The socket's drop counter is read this often.
pub const DROPS_READ_INTERVAL: Duration = Duration::from_millis(100);
/// The longest the drain at shutdown takes (it normally ends as soon as the kernel's queue is
/// empty: [`Receiver::close_intake`] stops new arrivals).
pub const DRAIN_MAX: Duration = Duration::from_secs(2);
/// The wait after the queue looked empty, for io_uring completions still in flight.
pub const DRAIN_SETTLE: Duration = Duration::from_millis(20);
/// At most one receive-error log line per worker per this interval.
const RECV_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Observes batches for the ops API's histograms. Called on the worker thread; implementations
/// must not block or lock on the hot path.
pub trait BatchObserver: Send {
    /// One decoded datagram and the records it carried.
    fn datagram(&mut self, _records: u32) {}
    /// One batch: its decode+encode time and how many datagrams it held.
    fn batch(&mut self, _busy: Duration, _datagrams: u64) {}
    /// Called once per wake-up (with or without a batch), e.g. to publish.
    fn tick(&mut self, _now: Instant) {}
    /// Called once when the worker stops.
    fn finish(&mut self, _now: Instant) {}
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl BatchObserver for NoObserver {}

impl BatchObserver for crate::ops::LocalHistograms {
    fn datagram(&mut self, records: u32) {
        self.record_datagram(u64::from(records));
    }
    fn batch(&mut self, busy: Duration, datagrams: u64) {
        self.record_batch(
            u64::try_from(busy.as_micros()).unwrap_or(u64::MAX),
            datagrams,
        );
    }
    fn tick(&mut self, now: Instant) {
        self.maybe_publish(now);
    }
    fn finish(&mut self, now: Instant) {
        self.publish(now);
    }
}

/// Makes a fresh encoder for one worker (one per worker per backend).
pub type EncoderFactory = Arc<dyn Fn() -> Box<dyn RowEncoder> + Send + Sync>;

/// One backend as a worker sees it: its encoder, its batch buffer, its queue.
struct Output {
    encoder: Box<dyn RowEncoder>,
    buf: BytesMut,
    /// Buffers of shipped chunks come back here once their backend is done with them.
    pool: BufferPool,
    sender: BackendSender,
}

/// A worker's decode-and-encode state.
pub struct Pipeline {
    decoder: Decoder,
    outputs: Vec<Output>,
    counters: Arc<WorkerCounters>,
    observer: Box<dyn BatchObserver>,
    tally: BatchTally,
    /// Receive time of the current batch (the clock is read once, at its first datagram).
    batch_us: Option<UnixMicros>,
    batch_started: Option<Instant>,
    /// Rows encoded into the outputs' buffers and not shipped yet, and since when (monotonic,
    /// and the receive time of the oldest).
    pending_rows: u64,
    pending: Option<(Instant, UnixMicros)>,
    last_snapshot: Instant,
    last_expiry: Instant,
    /// The decoder generation last handed out as saved state, and when.
    saved: Option<(u64, Instant)>,
    /// The last reload (`WorkerCounters::reload_seq`) applied.
    reload_seen: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("worker", &self.counters.index)
            .field("outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline writing to `backends` (an encoder factory and a queue each).
    pub fn new(
        decoder: DecoderConfig,
        backends: &[(EncoderFactory, BackendSender)],
        counters: Arc<WorkerCounters>,
        observer: Box<dyn BatchObserver>,
    ) -> Pipeline {
        let now = Instant::now();
        Pipeline {
            decoder: Decoder::new(decoder),
            outputs: backends
                .iter()
                .map(|(make, sender)| Output {
                    encoder: make(),
                    buf: BytesMut::with_capacity(BATCH_BUFFER_BYTES),
                    pool: BufferPool::default(),
                    sender: sender.clone(),
                })
                .collect(),
            counters,
            observer,
            tally: BatchTally::default(),
            batch_us: None,
            batch_started: None,
            pending_rows: 0,
            pending: None,
            last_snapshot: now,
            last_expiry: now,
            saved: None,
            reload_seen: 0,
        }
    }

    /// Applies a reloaded `sampling:` setting put in the counters (between batches: no
    /// datagram is decoded half with the old rates).
    fn apply_reload(&mut self) {
        let seq = self.counters.reload_seq.load(Ordering::Acquire);
        if seq == self.reload_seen {
            return;
        }
        self.reload_seen = seq;
        if let Some(sampling) = counters::lock(&self.counters.sampling_reload).clone() {
            self.decoder.set_sampling(sampling);
        }
    }

    /// Loads templates and sampling state saved by an earlier run into the decoder (before the
    /// first datagram). Returns what was restored.
    pub fn restore(
        &mut self,
        state: &goflow_codec::decoder::saved::SavedState,
    ) -> goflow_codec::decoder::saved::RestoreOutcome {
        let out = self.decoder.restore(state, unix_micros());
        // What was restored is already on disk; the ops API lists it at once.
        let now = Instant::now();
        self.saved = Some((self.decoder.generation(), now));
        self.publish_snapshot(now);
        out
    }

    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// Decodes one datagram of the current batch and encodes its records into every backend's
    /// buffer.
    pub fn datagram(&mut self, d: &Datagram<'_>) {
        let now_us = match self.batch_us {
            Some(t) => t,
            None => {
                self.batch_started = Some(Instant::now());
                let t = unix_micros();
                self.batch_us = Some(t);
                t
            }
        };
        self.tally.datagrams += 1;
        self.tally.bytes += d.payload.len() as u64;
        if d.truncated {
            self.tally.truncated += 1;
            return;
        }
        let Pipeline {
            decoder, outputs, ..
        } = self;
        // Exporters reaching a dual-stack socket arrive as ::ffff:a.b.c.d; key them as IPv4.
        let exporter = d.source.ip().to_canonical();
        // Counted in the callback: records handed out before a decode error count too.
        let mut records: u32 = 0;
        let _ = decoder.decode(exporter, now_us, d.payload, |rec| {
            records = records.saturating_add(1);
            for o in outputs.iter_mut() {
                o.encoder.encode(rec, &mut o.buf);
            }
        });
        self.tally.records += u64::from(records);
        self.observer.datagram(records);
        if records > 0 {
            self.pending_rows += u64::from(records);
            if self.pending.is_none() {
                let since = self.batch_started.unwrap_or_else(Instant::now);
                self.pending = Some((since, now_us));
            }
            // A full buffer leaves at once, not at the end of the batch: chunks stay close to
            // CHUNK_BYTES, so the buffer handed on is never regrown.
            if self.pending_rows >= CHUNK_ROWS
                || self.outputs.iter().any(|o| o.buf.len() >= CHUNK_BYTES)
            {
                self.ship();
            }
        }
    }

    /// Ends the batch: hands each backend its chunk (dropped and counted when its queue is full),
    /// adds the batch to the counters, refreshes the snapshot when due.
    pub fn end_batch(&mut self, kernel_drops: u64) {
        let now = Instant::now();
        if let Some(received_us) = self.batch_us.take() {
            self.tally.add_to(&self.counters);
            counters::store_decoder_stats(&self.counters, self.decoder.stats());
            self.counters
                .last_datagram_us
                .store(received_us, Ordering::Relaxed);
            let busy = self
                .batch_started
                .take()
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.counters.busy_ns.fetch_add(
                u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.observer.batch(busy, self.tally.datagrams);
            self.tally = BatchTally::default();
        }
        let before = self
            .counters
            .kernel_drops
            .swap(kernel_drops, Ordering::Relaxed);
        if kernel_drops > before {
            self.counters
                .last_kernel_drop_us
                .store(unix_micros(), Ordering::Relaxed);
        }
        // Full buffers already left in `datagram`; what remains leaves once it is old enough.
        if let Some((since, _)) = self.pending
            && now.saturating_duration_since(since) >= CHUNK_MAX_AGE
        {
            self.ship();
        }
        self.observer.tick(now);
        if now.saturating_duration_since(self.last_snapshot) >= SNAPSHOT_INTERVAL {
            self.publish_snapshot(now);
        }
    }

    /// Hands every backend the rows encoded since the last chunk (dropped and counted by the
    /// backend when its queue is full).
    fn ship(&mut self) {
        let Some((_, oldest_received_us)) = self.pending.take() else {
            return;
        };
        let count = std::mem::take(&mut self.pending_rows);
        for o in &mut self.outputs {
            let chunk = Chunk {
                rows: take_rows(&mut o.buf, &o.pool),
                count,
                oldest_received_us,
                position: None,
            };
            o.sender.try_send(chunk);
        }
    }

    /// How long the next receive call may wait: [`RECV_POLL`], or less while encoded rows wait
    /// for their chunk (so they leave within [`CHUNK_MAX_AGE`] even when traffic stops).
    pub fn poll_timeout(&self) -> Duration {
        match self.pending {
            None => RECV_POLL,
            Some((since, _)) => CHUNK_MAX_AGE
                .saturating_sub(since.elapsed())
                .max(Duration::from_millis(1)),
        }
    }

    /// Brings the ops API's mirror of the decoder's per-exporter state and templates up to date
    /// with what changed since the last call (and expires old templates and idle exporters
    /// when due). Costs the changes, not the exporters or templates held; the expiry pass every
    /// [`TEMPLATE_EXPIRY_INTERVAL`] walks the bounded tables once.
    pub fn publish_snapshot(&mut self, now: Instant) {
        let now_us = unix_micros();
        if now.saturating_duration_since(self.last_expiry) >= self.expiry_interval() {
            self.decoder.expire_templates(now_us);
            self.decoder.expire_held(now_us);
            self.decoder.expire_idle(now_us);
            self.last_expiry = now;
        }
        let exporters = self.decoder.take_exporter_changes();
        let templates = self.decoder.take_template_changes(now_us);
        let c = &self.counters;
        c.templates.store(
            self.decoder.template_cache().len() as u64,
            Ordering::Relaxed,
        );
        c.exporters
            .store(self.decoder.exporter_count() as u64, Ordering::Relaxed);
        c.sequence_streams
            .store(self.decoder.stream_count() as u64, Ordering::Relaxed);
        let (held_bytes, held_sets) = self.decoder.held();
        c.held_bytes.store(held_bytes as u64, Ordering::Relaxed);
        c.held_sets.store(held_sets as u64, Ordering::Relaxed);
        counters::store_decoder_stats(c, self.decoder.stats());
        let decoder = self.decoder.stats().clone();
        let any = !self.decoder.template_cache().is_empty();
        let mut snap = counters::lock(&c.snapshot);
        snap.apply(exporters, templates);
        snap.taken_us = now_us;
        snap.decoder = decoder;
        drop(snap);
        self.last_snapshot = now;
        self.hand_out_saved(now, any, false);
    }

    /// Copies the decoder's saved state out for the state_dir writer when it changed, when
    /// it holds anything and [`SAVE_REFRESH_INTERVAL`] has passed, or when `force`d.
    fn hand_out_saved(&mut self, now: Instant, any: bool, force: bool) {
        let generation = self.decoder.generation();
        let due = match self.saved {
            None => generation != 0,
            Some((g, at)) => {
                g != generation
                    || (any && now.saturating_duration_since(at) >= SAVE_REFRESH_INTERVAL)
            }
        };
        if !(due || force && any) {
            return;
        }
        let state = Arc::new(self.decoder.save());
        *counters::lock(&self.counters.saved) = Some(state);
        self.counters.saved_seq.fetch_add(1, Ordering::Release);
        self.saved = Some((generation, now));
    }

    /// How often templates and idle exporters are expired: [`TEMPLATE_EXPIRY_INTERVAL`], or
    /// half the shorter lifetime when that is shorter (at least a second).
    fn expiry_interval(&self) -> Duration {
        let c = self.decoder.config();
        let half = c.template_ttl_secs.min(c.exporter_idle_secs) / 2;
        TEMPLATE_EXPIRY_INTERVAL.min(Duration::from_secs(half.max(1)))
    }

    /// Final bookkeeping when the worker stops.
    pub fn finish(&mut self) {
        self.ship();
        let now = Instant::now();
        self.publish_snapshot(now);
        // The refresh times as of now, for the final save at shutdown.
        self.hand_out_saved(now, !self.decoder.template_cache().is_empty(), true);
        self.observer.finish(now);
    }
}

/// Takes a buffer's rows as one chunk's bytes. A full buffer (the usual case under load) is
/// handed on whole, without a copy, and the worker goes on with a buffer from `pool` (the
/// buffer of an earlier chunk, still warm in the cache and already faulted in) or a new one; a
/// small one (shipped because it got old) is copied out to an exact-size allocation, so a
/// queue of small chunks never pins a full buffer's memory per chunk.
fn take_rows(buf: &mut BytesMut, pool: &BufferPool) -> Bytes {
    if buf.len() < CHUNK_BYTES / 2 {
        let rows = Bytes::copy_from_slice(buf);
        buf.clear();
        rows
    } else {
        let full = std::mem::replace(buf, pool.take());
        Bytes::from_owner(Pooled {
            buf: full,
            pool: pool.clone(),
        })
    }
}

/// Most buffers a pool keeps (a few chunks' worth: the rest of a backlog is freed).
const POOL_BUFFERS: usize = 8;

/// Batch buffers that came back from backends, for reuse. Shared by one worker's output and the
/// chunks it shipped; locked once per chunk.
#[derive(Clone, Default)]
struct BufferPool(Arc<std::sync::Mutex<Vec<BytesMut>>>);

impl BufferPool {
    fn take(&self) -> BytesMut {
        counters::lock(&self.0)
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(BATCH_BUFFER_BYTES))
    }

    fn give(&self, mut buf: BytesMut) {
        buf.clear();
        let mut free = counters::lock(&self.0);
        if free.len() < POOL_BUFFERS {
            free.push(buf);
        }
    }
}

/// A shipped chunk's buffer: its bytes while the backend needs them, then back to the pool.
struct Pooled {
    buf: BytesMut,
    pool: BufferPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> UnixMicros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The worker's receive loop: batches until `stop` is set, then stops the kernel queueing more
/// for this socket ([`Receiver::close_intake`]) and drains what it already holds, so every
/// datagram delivered before the stop is decoded and queued, and the drain ends however fast
/// exporters keep sending. The drain is bounded by [`DRAIN_MAX`] too (for a kernel that refuses
/// the filter).
pub fn run(receiver: &mut Receiver, pipeline: &mut Pipeline, stop: &AtomicBool) {
    let counters = Arc::clone(pipeline.counters());
    counters.running.store(true, Ordering::Relaxed);
    let mut errors = RecvErrors::default();
    let mut drops_read = Instant::now();
    let mut turns: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        turns += 1;
        counters.heartbeat.store(turns, Ordering::Relaxed);
        pipeline.apply_reload();
        let result = receiver.recv_batch(pipeline.poll_timeout(), |d| pipeline.datagram(d));
        if drops_read.elapsed() >= DROPS_READ_INTERVAL {
            receiver.refresh_drops();
            drops_read = Instant::now();
        }
        pipeline.end_batch(receiver.kernel_drops());
        match result {
            // A small batch: traffic is arriving, but slowly enough that each wake-up would
            // take only a few datagrams. Letting them gather costs at most COALESCE_WAIT of
            // latency and saves a sleep and wake-up per handful of datagrams, which cost more
            // than decoding them.
            Ok(n) if (1..COALESCE_BELOW).contains(&n) => std::thread::sleep(COALESCE_WAIT),
            Ok(_) => {}
            Err(e) => errors.note(&counters, &e),
        }
    }
    let closed = match receiver.close_intake() {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "worker {}: cannot stop the socket's intake ({e}); draining for at most {:?}",
                counters.index,
                DRAIN_MAX
            );
            false
        }
    };
    // Drain. A zero-timeout call processes whatever the kernel has already completed; one
    // short wait afterwards catches completions still in flight (io_uring posts them
    // asynchronously) before the socket is closed.
    let deadline = Instant::now() + DRAIN_MAX;
    let mut quiet_rounds = 0;
    let mut drained = 0usize;
    while quiet_rounds < 2 {
        if Instant::now() >= deadline {
            log::warn!(
                "worker {}: drain stopped after {:?} ({drained} datagrams); the rest is left",
                counters.index,
                DRAIN_MAX
            );
            break;
        }
        let timeout = if quiet_rounds == 0 {
            Duration::ZERO
        } else {
            DRAIN_SETTLE
        };
        match receiver.recv_batch(timeout, |d| pipeline.datagram(d)) {
            Ok(0) => quiet_rounds += 1,
            // With the intake closed what arrives was queued before: keep going. Without it,
            // new datagrams keep coming; the deadline ends it.
            Ok(n) => {
                drained += n;
                if closed {
                    quiet_rounds = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                errors.note(&counters, &e);
                quiet_rounds += 1;
            }
        }
        pipeline.end_batch(receiver.kernel_drops());
    }
    receiver.refresh_drops();
    pipeline.end_batch(receiver.kernel_drops());
    pipeline.finish();
    counters.running.store(false, Ordering::Relaxed);
}

/// Receive errors: counted, logged at most once per interval.
#[derive(Default)]
struct RecvErrors {
    last_log: Option<Instant>,
    unlogged: u64,
}

impl RecvErrors {
    fn note(&mut self, counters: &WorkerCounters, e: &io::Error) {
        if e.kind() == io::ErrorKind::Interrupted {
            return;
        }
        counters.recv_errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= RECV_ERROR_LOG_INTERVAL)
        {
            log::error!(
                "worker {}: receive failed: {e} ({} more since the last message)",
                counters.index,
                self.unlogged
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        // A persistent error must not spin a core.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};
    use goflow_writers::backend::{Backend, BackendOptions};
    use goflow_writers::file::{JsonEncoder, NullSink};
    use std::net::SocketAddr;

    fn v5(records: u32) -> Vec<u8> {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 1000,
            unix_secs: 1_700_000_000,
            ..V5Header::default()
        });
        for i in 0..records {
            assert!(b.push(&sample_flow_v4(i)).is_ok());
        }
        let mut out = Vec::new();
        b.finish(&mut out);
        out
    }

    #[test]
    fn full_buffers_ship_without_a_copy_and_come_back_to_the_pool() {
        let pool = BufferPool::default();
        let mut buf = pool.take();
        buf.extend_from_slice(&[7u8; CHUNK_BYTES]);
        let at = buf.as_ptr();
        let rows = take_rows(&mut buf, &pool);
        assert_eq!(rows.as_ptr(), at, "the chunk is the buffer itself");
        assert_eq!(rows.len(), CHUNK_BYTES);
        assert!(buf.is_empty() && buf.capacity() >= BATCH_BUFFER_BYTES);
        let copy = rows.clone();
        drop(rows);
        assert!(counters::lock(&pool.0).is_empty(), "still referenced");
        drop(copy);
        assert_eq!(counters::lock(&pool.0).len(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), at, "reused");
        assert!(again.is_empty());

        // Small buffers are copied out; the pool keeps at most POOL_BUFFERS.
        let mut small = BytesMut::from(&b"abc"[..]);
        let rows = take_rows(&mut small, &pool);
        assert_eq!(&rows[..], b"abc");
        assert!(small.is_empty());
        for _ in 0..POOL_BUFFERS + 3 {
            pool.give(BytesMut::with_capacity(16));
        }
        assert_eq!(counters::lock(&pool.0).len(), POOL_BUFFERS);
    }

    #[test]
    fn one_batch_counts_once_and_ships_one_chunk() {
        let backend = Backend::spawn(
            Box::new(NullSink::default()),
            BackendOptions::new("t", "null"),
        )
        .expect("spawn");
        let make: EncoderFactory =
            Arc::new(|| Box::new(JsonEncoder::default()) as Box<dyn RowEncoder>);
        let counters = Arc::new(WorkerCounters::new(0));
        let mut p = Pipeline::new(
            DecoderConfig::default(),
            &[(make, backend.sender())],
            Arc::clone(&counters),
            Box::new(NoObserver),
        );
        let source: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        let pkt = v5(30);
        p.datagram(&Datagram {
            source,
            payload: &pkt,
            truncated: false,
        });
        p.datagram(&Datagram {
            source,
            payload: &[],
            truncated: true,
        });
        // Not NetFlow at all: a decode error, counted by kind.
        p.datagram(&Datagram {
            source,
            payload: &[0, 42, 0, 0],
            truncated: false,
        });
        p.end_batch(5);
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(get(&counters.batches), 1);
        assert_eq!(get(&counters.datagrams), 3);
        assert_eq!(get(&counters.bytes), pkt.len() as u64 + 4);
        assert_eq!(get(&counters.records), 30);
        assert_eq!(get(&counters.truncated), 1);
        assert_eq!(get(&counters.kernel_drops), 5);
        assert_eq!(get(&counters.decode_unsupported_version), 1);
        // An empty wake-up changes nothing but the drop counter.
        p.end_batch(6);
        assert_eq!(get(&counters.batches), 1);
        assert_eq!(get(&counters.kernel_drops), 6);
        p.finish();
        let snap = counters.snapshot();
        assert_eq!(snap.exporters.len(), 1);
        assert_eq!(snap.decoder.records, 30);
        let stats = Arc::clone(backend.stats());
        drop(p);
        backend.shutdown();
        assert_eq!(stats.rows_written.load(Ordering::Relaxed), 30);
        assert_eq!(stats.flushes.load(Ordering::Relaxed), 1);
    }
}
