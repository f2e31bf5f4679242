//! The contract between the pipeline and a backend: a pure [`RowEncoder`] per worker turns
//! records into the backend's row bytes; a [`Sink`] on the backend's own thread ships [`Chunk`]s
//! of those rows. The backend thread (see `backend.rs`) owns the queue between them.
//!
//! # Positions: exactly once from a replayable source
//!
//! A chunk read from a source that can be read again from a point (the disk spool, a Kafka
//! partition) carries a [`Position`]: its [`Stream`] and the point to resume that stream at once
//! the chunk's rows are stored (`next`: the spool's next record, the partition's next offset).
//! The backend writes every chunk of one stream through one lane, in order, so the last
//! position a flush stores for a stream covers every earlier chunk of it.
//!
//! How a sink implements it:
//! - **A sink with transactions** (PostgreSQL, MySQL) keeps positions: `write` records each
//!   positioned chunk's position (a [`PositionSet`] keeps the last per stream); `flush` stores
//!   them *in the same transaction as the rows* (an upsert into a small positions table created
//!   beside the flow table, one row per stream name) and commits both at once; `abort` clears
//!   the set; [`Sink::committed_positions`] reads the table back (`Ok(Some(..))`). A crash, a
//!   SIGKILL or a lost connection at any moment then leaves rows and position both stored or
//!   both not: the stream resumes exactly after what is stored. After a flush whose commit
//!   failed the backend asks `committed_positions` before it retries, so a commit that went
//!   through although its reply was lost is not written twice.
//! - **A sink without transactions** (file, Kafka producer) keeps none and leaves
//!   `committed_positions` at its default `Ok(None)`. Its `flush` must make positioned rows
//!   durable before it returns `Ok` (the file sink fsyncs), or, for a flush in flight
//!   ([`Sink::flush_start`]), before `flush_outcome` says `Ok` (a producer has the broker's
//!   acknowledgements); the backend then reports the commit to the stream, whose owner keeps
//!   the position itself. A crash between the two repeats that flush: at-least-once.
//!
//! The owner of a stream (the spool's replayer, a Kafka consumer) reads `committed_positions`
//! through `backend::PositionedSender` before it starts, skips what is stored, and learns of
//! every later commit (or drop) through its [`Stream`] callbacks.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use goflow_codec::{FlowRecord, UnixMicros};

/// Encodes records into one backend's row format (COPY rows, JSON lines, ...). Pure: no I/O.
/// One per worker per backend.
pub trait RowEncoder: Send + 'static {
    /// Appends one row for `rec` to `out`.
    fn encode(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut);
}

/// Encoded rows handed from a worker to a backend's writer thread, one per batch.
#[derive(Clone, Debug, Default)]
pub struct Chunk {
    /// Concatenated rows, in the encoder's format, without any per-statement framing.
    pub rows: Bytes,
    /// Number of rows in `rows`.
    pub count: u64,
    /// Receive time of the oldest datagram whose records are in this chunk.
    pub oldest_received_us: UnixMicros,
    /// Where the rows came from in a replayable stream (`None` for live data): see the module
    /// docs.
    pub position: Option<Position>,
}

/// A replayable source of chunks (a spool, a Kafka partition), as the backend sees it. The
/// callbacks run on the writing lane's thread right after the event: keep them cheap.
pub trait Stream: Send + Sync + fmt::Debug {
    /// The stream's name: the key its position is stored under (unique per source, stable
    /// across restarts, e.g. `spool/<id>` or `kafka/<group>/<topic>/<partition>`).
    fn name(&self) -> &str;
    /// The rows of chunks up to `next` (this stream's, `rows` of them in this flush) are stored
    /// (with the position, when the sink keeps positions).
    fn committed(&self, _next: u64, _rows: u64) {}
    /// Chunks up to `next` (`rows` rows) were dropped by a fatal sink error (counted by the
    /// backend); nothing of them is stored.
    fn dropped(&self, _next: u64, _rows: u64) {}
}

/// A chunk's place in its [`Stream`].
#[derive(Clone)]
pub struct Position {
    pub stream: Arc<dyn Stream>,
    /// Where the stream resumes once this chunk's rows are stored.
    pub next: u64,
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.stream.name(), self.next)
    }
}

/// The positions a flush has to store: the last `next` per stream name, in first-seen order.
/// For sinks that keep positions (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PositionSet {
    entries: Vec<(String, u64)>,
}

impl PositionSet {
    /// Notes `chunk`'s position, if it has one (a later chunk of a stream replaces the earlier).
    pub fn record(&mut self, chunk: &Chunk) {
        let Some(p) = &chunk.position else {
            return;
        };
        let name = p.stream.name();
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = p.next,
            None => self.entries.push((name.to_owned(), p.next)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (stream name, position) pairs.
    pub fn entries(&self) -> &[(String, u64)] {
        &self.entries
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Ships encoded rows somewhere durable. Runs on its backend's thread and may block.
pub trait Sink: Send + 'static {
    /// Adds a chunk to the current flush; may already send it.
    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError>;
    /// Makes everything written since the last flush durable. On error nothing of the current
    /// flush is assumed stored: the caller retries with the same chunks.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Ends the current flush like [`Sink::flush`], but may return before it is durable, so the
    /// backend goes on writing the next flush meanwhile (a producer waiting for acknowledgements).
    /// `Ok(None)`: it is durable already (the default: `flush`). `Ok(Some(id))`: it is in
    /// flight; once it has settled (durable or failed) the sink calls `waker.wake()` (from any
    /// thread) and reports the outcome through [`Sink::flush_outcome`]`(id)`. The backend keeps
    /// at most `BackendOptions::flushes_in_flight` in flight and takes their outcomes oldest
    /// first, so a flush counts as done only after every older one did.
    fn flush_start(&mut self, _waker: &FlushWaker) -> Result<Option<u64>, SinkError> {
        self.flush().map(|()| None)
    }
    /// The outcome of in-flight flush `id` once it has settled, `None` while it has not. An
    /// `Err` means nothing of that flush is assumed stored (as for `flush`). Called once per
    /// settled flush, in the order of `flush_start`.
    fn flush_outcome(&mut self, _id: u64) -> Option<Result<(), SinkError>> {
        Some(Ok(()))
    }
    /// Drops whatever the current flush holds (after an error, before a retry), and forgets
    /// the flushes in flight (the backend writes their chunks again).
    fn abort(&mut self) {}
    /// Connects now, and sets up what writing needs (a table), instead of at the first write:
    /// the backend calls it when a lane starts and again, with backoff, while the lane cannot
    /// connect, so a server that cannot be used is reported before any row arrives. A sink
    /// that needs no connection (a file opened before) keeps the default. A no-op while
    /// connected.
    fn connect(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Reopens the output by its configured name (SIGHUP, after logrotate moved a file away).
    /// Called between flushes; failures are the sink's to log. The default does nothing.
    fn reopen(&mut self) {}
    /// Backend-specific status fields for the ops API (e.g. table size), as JSON.
    fn status(&mut self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// The stored positions of the streams whose names start with `prefix`, or `Ok(None)` when
    /// this sink keeps no positions (see the module docs). May connect; called between flushes.
    fn committed_positions(
        &mut self,
        _prefix: &str,
    ) -> Result<Option<Vec<(String, u64)>>, SinkError> {
        Ok(None)
    }
}

/// Wakes a backend lane when a flush its sink has in flight settles (see
/// [`Sink::flush_start`]). Cheap to clone; wakes coalesce (the lane then asks for every settled
/// outcome, oldest first).
#[derive(Clone, Debug)]
pub struct FlushWaker(crossbeam_channel::Sender<()>);

impl FlushWaker {
    /// A waker and the receiver the lane waits on.
    pub fn new() -> (FlushWaker, crossbeam_channel::Receiver<()>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (FlushWaker(tx), rx)
    }

    pub fn wake(&self) {
        // Full: a wake is pending already; disconnected: the lane is gone.
        let _ = self.0.try_send(());
    }
}

/// A sink failure, and whether retrying the same data can help.
#[derive(Debug)]
pub struct SinkError {
    retriable: bool,
    message: String,
}

impl SinkError {
    /// A failure a retry may cure (connection lost, server restarting).
    pub fn retriable(message: impl Into<String>) -> Self {
        SinkError {
            retriable: true,
            message: message.into(),
        }
    }

    /// A failure a retry of the same data cannot cure (incompatible table, bad credentials).
    pub fn fatal(message: impl Into<String>) -> Self {
        SinkError {
            retriable: false,
            message: message.into(),
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}
