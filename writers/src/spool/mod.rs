//! The disk spool of one backend: when the backend cannot take rows (down, or slower than the
//! input), its encoded chunks go to append-only, checksummed segment files under
//! `state_dir/spool/<backend>/` (see [`segment`]) instead of being dropped, and are replayed,
//! oldest first, once it takes rows again.
//!
//! Three parties:
//! - **Whoever offers** (a worker through `BackendSender::try_send`, a lane moving the rows of
//!   a failed flush, a lane at shutdown) calls [`Spool::offer`], which never blocks and never
//!   touches the disk: the chunk is queued for the spool's writer thread, bounded in memory
//!   ([`SPOOL_MEMORY_BYTES`]) and on disk (`spool_bytes`). Beyond either bound the *newest* chunk
//!   is refused and counted (`rows_dropped_full`): the spool then holds the start of the outage
//!   unbroken, a replay never races a deletion, and what is on disk is never thrown away.
//! - **The writer thread** appends one record per chunk to the active segment and fsyncs
//!   (`fdatasync`) at most [`SYNC_INTERVAL`] after a write, so a spooled row is on disk within a
//!   second; it starts a new segment every [`SEGMENT_BYTES`], and closes an idle one.
//! - **The replayer thread** reads records up to the fsynced end only (what it hands on can
//!   never be lost by a power cut) and sends each as a positioned chunk (`sink.rs`: stream
//!   `spool/<backend>`, position = record id + 1) to the backend's lane, beside the live data
//!   (new data is written at once, the spool fills in behind it; a dashboard sees the outage's
//!   gap close from its start), with at most [`REPLAY_INFLIGHT_BYTES`] in flight. Before it
//!   starts it asks the sink for the stored position: a SQL sink stores it in the same
//!   transaction as the rows, so after SIGKILL or power loss at any moment every spooled row is
//!   stored exactly once. A sink without transactions (file) keeps no positions: the replayer
//!   writes the position to `position` in the spool directory after each commit the sink made
//!   durable (at least once across a crash between the two). Segments wholly stored are
//!   deleted.
//!
//! Damage (a torn tail after a crash, a flipped byte) is detected by each record's CRC, counted
//! (`damaged_bytes`, `damaged`), logged and skipped; the records after it are replayed. Record
//! ids only grow, also across restarts and an emptied directory: the writer starts at the
//! largest of the ids on disk, the `floor` file (the end of the last closed segment) and the
//! clock in microseconds.

pub mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::backend::PositionedSender;
use crate::durable;
use crate::sink::{Chunk, Position, Stream};
use segment::{
    RECORD_HEADER_BYTES, Read, RecordHeader, encode_record, parse_segment_name, read_record,
    read_segment_header, segment_header, segment_name,
};

/// Chunks waiting in memory for the writer thread, bytes (beyond: refused, counted).
pub const SPOOL_MEMORY_BYTES: u64 = 64 << 20;
/// A new segment is started once the active one holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Written records are fsynced at most this long after they were written.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// An active segment with no write for this long is closed (so it can be deleted once replayed).
pub const IDLE_CLOSE: Duration = Duration::from_secs(2);
/// Replayed bytes handed to the backend and not yet stored, at most.
pub const REPLAY_INFLIGHT_BYTES: u64 = 16 << 20;
/// How long the replayer waits for the sink's stored positions per attempt.
const POSITIONS_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one log line per kind of spool trouble per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The replayer's position file (sinks without transactions).
pub const POSITION_FILE: &str = "position";
/// The end id of the last closed segment.
pub const FLOOR_FILE: &str = "floor";

/// How a backend spools.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// `state_dir/spool/<backend>`.
    pub dir: PathBuf,
    /// Most bytes of segments on disk (and waiting for the writer).
    pub max_bytes: u64,
    /// What wrote the rows (encoder and schema): segments of another format are not replayed.
    pub format: String,
}

/// What the ops API shows about a spool. Counters only grow; the rest are gauges.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// `spool_bytes`.
    pub capacity_bytes: u64,
    /// Bytes of segment files on disk.
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    /// Bytes waiting for the writer thread.
    pub memory_bytes: AtomicU64,
    pub chunks_spooled: AtomicU64,
    pub rows_spooled: AtomicU64,
    /// Rows replayed and stored by the backend.
    pub rows_replayed: AtomicU64,
    /// Chunks and rows refused because the spool was full (the newest are refused).
    pub chunks_dropped_full: AtomicU64,
    pub rows_dropped_full: AtomicU64,
    /// Damaged stretches skipped while replaying, and their bytes.
    pub damaged: AtomicU64,
    pub damaged_bytes: AtomicU64,
    /// Segments written by another format (not replayed; renamed `*.incompatible`).
    pub incompatible_segments: AtomicU64,
    /// Write or fsync failures (the chunk is counted as dropped).
    pub write_errors: AtomicU64,
    /// Receive time (Unix µs) of the oldest row spooled and not yet stored; 0 = none.
    pub oldest_us: AtomicI64,
    /// The stored replay position (the next record id to replay).
    pub position: AtomicU64,
}

impl SpoolStats {
    /// Rows refused or lost (spool full, write errors).
    pub fn rows_dropped(&self) -> u64 {
        self.rows_dropped_full.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One segment file as the writer and replayer share it.
#[derive(Debug)]
struct Seg {
    first: u64,
    path: PathBuf,
    /// Bytes durable on disk (fsynced), all of the file for a closed segment.
    durable: u64,
    /// One past the largest record id in it, when known.
    end: Option<u64>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Segments {
    list: VecDeque<Seg>,
}

/// What the offering side, the writer and the replayer share.
#[derive(Debug)]
struct Shared {
    cfg: SpoolConfig,
    stats: Arc<SpoolStats>,
    segs: Mutex<Segments>,
    /// Wakes the replayer (new durable records, commits, stop).
    kick: Sender<()>,
}

impl Shared {
    fn kick(&self) {
        let _ = self.kick.try_send(());
    }
}

enum Msg {
    Chunk(Chunk),
    Stop,
}

/// A backend's spool: the handle to offer chunks, and its two threads.
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The replayer's wake-up channel, until it starts.
    kicks: Mutex<Option<Receiver<()>>>,
    replayer: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
}

impl Spool {
    /// Opens (creating it if needed) the spool directory, scans its segments and starts the
    /// writer thread. The replayer starts with [`Spool::start_replay`].
    pub fn open(cfg: SpoolConfig, name: &str) -> io::Result<Arc<Spool>> {
        fs::create_dir_all(&cfg.dir)?;
        let stats = Arc::new(SpoolStats {
            capacity_bytes: cfg.max_bytes,
            ..SpoolStats::default()
        });
        let (segs, next_id) = scan(&cfg.dir)?;
        stats.segments.store(segs.len() as u64, Ordering::Relaxed);
        stats
            .bytes
            .store(segs.iter().map(|s| s.durable).sum(), Ordering::Relaxed);
        let (kick, kick_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            cfg,
            stats,
            segs: Mutex::new(Segments { list: segs.into() }),
            kick,
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name(format!("spool-{name}"))
            .spawn(move || SegmentWriter::new(w, next_id).run(&rx))?;
        let spool = Arc::new(Spool {
            shared,
            tx,
            writer: Mutex::new(Some(writer)),
            kicks: Mutex::new(Some(kick_rx)),
            replayer: Mutex::new(None),
        });
        Ok(spool)
    }

    pub fn stats(&self) -> &Arc<SpoolStats> {
        &self.shared.stats
    }

    /// Queues `chunk` for the disk. Never blocks. False (and counted) when the spool is full.
    /// Positioned chunks are never spooled (their stream replays them).
    pub fn offer(&self, chunk: Chunk) -> bool {
        if chunk.position.is_some() {
            return false;
        }
        let s = &self.shared.stats;
        let c = chunk.rows.len() as u64 + RECORD_HEADER_BYTES as u64;
        let on_disk = s.bytes.load(Ordering::Relaxed);
        let taken = s
            .memory_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                let m2 = m.saturating_add(c);
                (m2 <= SPOOL_MEMORY_BYTES
                    && on_disk.saturating_add(m2) <= self.shared.cfg.max_bytes)
                    .then_some(m2)
            })
            .is_ok();
        let rows = chunk.count;
        if taken && self.tx.send(Msg::Chunk(chunk)).is_ok() {
            return true;
        }
        if taken {
            s.memory_bytes.fetch_sub(c, Ordering::AcqRel);
        }
        s.chunks_dropped_full.fetch_add(1, Ordering::Relaxed);
        s.rows_dropped_full.fetch_add(rows, Ordering::Relaxed);
        false
    }

    /// Starts replaying into `sender` (the backend's positioned handle), as stream
    /// `spool/<name>`.
    pub fn start_replay(self: &Arc<Self>, name: &str, sender: PositionedSender) -> io::Result<()> {
        let Some(kicks) = lock(&self.kicks).take() else {
            return Ok(());
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stream = Arc::new(SpoolStream {
            name: format!("spool/{name}"),
            shared: Arc::clone(&self.shared),
            inflight: Mutex::new(VecDeque::new()),
            inflight_bytes: AtomicU64::new(0),
            committed: AtomicU64::new(0),
        });
        let r = Replayer {
            shared: Arc::clone(&self.shared),
            stream,
            sender,
            stop: Arc::clone(&stop),
            kicks,
            keeps_positions: false,
            cursor: None,
            file: None,
            sent_next: 0,
            last_log: None,
            written_position: None,
        };
        let handle = thread::Builder::new()
            .name(format!("replay-{name}"))
            .spawn(move || r.run())?;
        *lock(&self.replayer) = Some((stop, handle));
        Ok(())
    }

    /// Stops the replayer (what it sent and is not stored is read again at the next start).
    pub fn stop_replay(&self) {
        if let Some((stop, h)) = lock(&self.replayer).take() {
            stop.store(true, Ordering::Release);
            self.shared.kick();
            let _ = h.join();
        }
    }

    /// Writes and fsyncs everything offered so far, closes the active segment and stops the
    /// writer. Call after the lanes stopped (they may offer their rows at shutdown).
    pub fn stop_writer(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// Scans the directory: every segment (sorted by first id), the end of the last one (by
/// reading its records), and the next record id. Empty segments (a crash right after one was
/// created) and temporary files are removed.
fn scan(dir: &Path) -> io::Result<(Vec<Seg>, u64)> {
    let mut segs: Vec<Seg> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = parse_segment_name(name) {
            let len = e.metadata()?.len();
            segs.push(Seg {
                first,
                path: e.path(),
                durable: len,
                end: None,
                closed: true,
            });
        }
    }
    segs.sort_by_key(|s| s.first);
    for i in 0..segs.len() {
        if let Some(next) = segs.get(i + 1).map(|s| s.first) {
            segs[i].end = Some(next);
        }
    }
    let mut next_id = read_u64_file(&dir.join(FLOOR_FILE)).unwrap_or(0);
    if let Some(last) = segs.last_mut() {
        let f = File::open(&last.path)?;
        let mut end = last.first;
        let mut records = 0u64;
        if let Some((_, mut at)) = read_segment_header(&f)? {
            loop {
                match read_record(&f, at, last.durable)? {
                    Read::Record { header, end: e, .. } => {
                        end = end.max(header.id.saturating_add(1));
                        records += 1;
                        at = e;
                    }
                    Read::Damaged { resume, .. } => at = resume,
                    Read::End => break,
                }
            }
        }
        last.end = Some(end);
        if records == 0 {
            fs::remove_file(&last.path)?;
            segs.pop();
        }
    }
    for s in &segs {
        next_id = next_id.max(s.end.unwrap_or(s.first));
    }
    next_id = next_id.max(u64::try_from(now_us()).unwrap_or(0));
    Ok((segs, next_id))
}

fn read_u64_file(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The writer thread's state.
struct SegmentWriter {
    shared: Arc<Shared>,
    next_id: u64,
    active: Option<Active>,
    buf: Vec<u8>,
    last_error_log: Option<Instant>,
}

struct Active {
    file: File,
    first: u64,
    len: u64,
    synced: u64,
    last_write: Instant,
    last_sync: Instant,
}

impl SegmentWriter {
    fn new(shared: Arc<Shared>, next_id: u64) -> Self {
        SegmentWriter {
            shared,
            next_id,
            active: None,
            buf: Vec::with_capacity(300 << 10),
            last_error_log: None,
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let wait = match &self.active {
                Some(a) if a.synced < a.len => SYNC_INTERVAL.saturating_sub(a.last_sync.elapsed()),
                Some(_) => IDLE_CLOSE,
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Chunk(c)) => self.append(&c),
                Ok(Msg::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            self.housekeep(false);
        }
        // Whatever was offered before the stop.
        while let Ok(Msg::Chunk(c)) = rx.try_recv() {
            self.append(&c);
        }
        self.housekeep(true);
    }

    fn append(&mut self, c: &Chunk) {
        let cost = c.rows.len() as u64 + RECORD_HEADER_BYTES as u64;
        let s = Arc::clone(&self.shared.stats);
        s.memory_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                Some(m.saturating_sub(cost))
            })
            .ok();
        if let Err(e) = self.write(c) {
            s.write_errors.fetch_add(1, Ordering::Relaxed);
            s.chunks_dropped_full.fetch_add(1, Ordering::Relaxed);
            s.rows_dropped_full.fetch_add(c.count, Ordering::Relaxed);
            if self
                .last_error_log
                .is_none_or(|t| t.elapsed() >= LOG_INTERVAL)
            {
                log::error!(
                    "spool {}: cannot write: {e} ({} rows dropped)",
                    self.shared.cfg.dir.display(),
                    c.count
                );
                self.last_error_log = Some(Instant::now());
            }
            // Start afresh in a new segment (this one keeps what was synced).
            self.close();
            return;
        }
        s.chunks_spooled.fetch_add(1, Ordering::Relaxed);
        s.rows_spooled.fetch_add(c.count, Ordering::Relaxed);
        let _ = s.oldest_us.compare_exchange(
            0,
            c.oldest_received_us.max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn write(&mut self, c: &Chunk) -> io::Result<()> {
        if self.active.is_none() {
            self.open_segment()?;
        }
        let id = self.next_id;
        self.buf.clear();
        let len = u32::try_from(c.rows.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk over 4 GiB"))?;
        encode_record(
            &RecordHeader {
                len,
                id,
                count: c.count,
                oldest_us: c.oldest_received_us,
            },
            &c.rows,
            &mut self.buf,
        );
        let Some(a) = self.active.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        a.file.write_all(&self.buf)?;
        a.len += self.buf.len() as u64;
        a.last_write = Instant::now();
        self.next_id += 1;
        self.shared
            .stats
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        let full = a.len >= SEGMENT_BYTES;
        if a.last_sync.elapsed() >= SYNC_INTERVAL {
            self.sync()?;
        }
        if full {
            self.close();
        }
        Ok(())
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let first = self.next_id;
        let path = self.shared.cfg.dir.join(segment_name(first));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let head = segment_header(&self.shared.cfg.format);
        file.write_all(&head)?;
        file.sync_data()?;
        durable::sync_dir(&self.shared.cfg.dir)?;
        let now = Instant::now();
        self.active = Some(Active {
            file,
            first,
            len: head.len() as u64,
            synced: head.len() as u64,
            last_write: now,
            last_sync: now,
        });
        {
            let mut segs = lock(&self.shared.segs);
            segs.list.push_back(Seg {
                first,
                path,
                durable: head.len() as u64,
                end: None,
                closed: false,
            });
        }
        self.shared.stats.segments.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .bytes
            .fetch_add(head.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Fsyncs the active segment and publishes its durable end to the replayer.
    fn sync(&mut self) -> io::Result<()> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if a.synced < a.len {
            a.file.sync_data()?;
            a.synced = a.len;
            let (first, len) = (a.first, a.len);
            if let Some(s) = lock(&self.shared.segs)
                .list
                .iter_mut()
                .find(|s| s.first == first)
            {
                s.durable = len;
            }
            self.shared.kick();
        }
        a.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs when due; closes an idle segment (or every segment when `stopping`).
    fn housekeep(&mut self, stopping: bool) {
        let due = self
            .active
            .as_ref()
            .is_some_and(|a| a.synced < a.len && a.last_sync.elapsed() >= SYNC_INTERVAL);
        if (due || stopping)
            && let Err(e) = self.sync()
        {
            self.shared
                .stats
                .write_errors
                .fetch_add(1, Ordering::Relaxed);
            log::error!("spool {}: fsync failed: {e}", self.shared.cfg.dir.display());
        }
        let idle = self
            .active
            .as_ref()
            .is_some_and(|a| a.synced == a.len && a.last_write.elapsed() >= IDLE_CLOSE);
        if idle || stopping {
            self.close();
        }
    }

    /// Closes the active segment: what it holds is final; the floor file records its end.
    fn close(&mut self) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        let synced = a.file.sync_data().is_ok();
        let len = if synced { a.len } else { a.synced };
        let end = self.next_id;
        {
            let mut segs = lock(&self.shared.segs);
            if let Some(s) = segs.list.iter_mut().find(|s| s.first == a.first) {
                s.durable = len;
                s.end = Some(end);
                s.closed = true;
            }
        }
        a.synced = len;
        if let Err(e) = durable::write_atomic(
            &self.shared.cfg.dir.join(FLOOR_FILE),
            end.to_string().as_bytes(),
        ) {
            log::error!(
                "spool {}: cannot write {FLOOR_FILE}: {e}",
                self.shared.cfg.dir.display()
            );
        }
        self.shared.kick();
    }
}

/// The spool as a replayable stream: the lane reports commits (and drops) of its chunks here.
#[derive(Debug)]
struct SpoolStream {
    name: String,
    shared: Arc<Shared>,
    /// (position, bytes, oldest receive time) of chunks sent and not stored, in order.
    inflight: Mutex<VecDeque<(u64, u64, i64)>>,
    inflight_bytes: AtomicU64,
    /// The stored position (every record below it is stored).
    committed: AtomicU64,
}

impl SpoolStream {
    fn done(&self, next: u64) {
        let mut q = lock(&self.inflight);
        while q.front().is_some_and(|e| e.0 <= next) {
            if let Some((_, bytes, _)) = q.pop_front() {
                self.inflight_bytes.fetch_sub(bytes, Ordering::AcqRel);
            }
        }
        if let Some(&(_, _, oldest)) = q.front() {
            self.shared.stats.oldest_us.store(oldest, Ordering::Relaxed);
        }
        drop(q);
        self.committed.fetch_max(next, Ordering::AcqRel);
        self.shared
            .stats
            .position
            .fetch_max(next, Ordering::Relaxed);
        self.shared.kick();
    }
}

impl Stream for SpoolStream {
    fn name(&self) -> &str {
        &self.name
    }

    fn committed(&self, next: u64, rows: u64) {
        self.shared
            .stats
            .rows_replayed
            .fetch_add(rows, Ordering::Relaxed);
        self.done(next);
    }

    fn dropped(&self, next: u64, _rows: u64) {
        // Counted by the backend (a fatal error): the spool moves past them.
        self.done(next);
    }
}

/// The replayer thread's state.
struct Replayer {
    shared: Arc<Shared>,
    stream: Arc<SpoolStream>,
    sender: PositionedSender,
    stop: Arc<AtomicBool>,
    kicks: Receiver<()>,
    /// The sink stores positions (else the position file does).
    keeps_positions: bool,
    /// (segment first id, offset of the next record), once the position is known.
    cursor: Option<(u64, u64)>,
    file: Option<(u64, File)>,
    /// One past the last record id sent.
    sent_next: u64,
    last_log: Option<Instant>,
    written_position: Option<u64>,
}

impl Replayer {
    fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        while !self.stop.load(Ordering::Acquire) {
            if self.cursor.is_none() {
                if !self.learn_position() {
                    let _ = self.kicks.recv_timeout(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                backoff = Duration::from_millis(200);
            }
            let sent = self.send_some();
            self.delete_stored();
            self.persist_position(false);
            if !sent {
                let _ = self.kicks.recv_timeout(Duration::from_millis(500));
            }
        }
        self.persist_position(true);
    }

    /// Asks the sink for the stored position; false while it cannot answer.
    fn learn_position(&mut self) -> bool {
        let committed = match self
            .sender
            .committed_positions(&self.stream.name, POSITIONS_TIMEOUT)
        {
            Ok(Some(v)) => {
                self.keeps_positions = true;
                v.into_iter()
                    .find(|(n, _)| *n == self.stream.name)
                    .map_or(0, |(_, p)| p)
            }
            Ok(None) => read_u64_file(&self.shared.cfg.dir.join(POSITION_FILE)).unwrap_or(0),
            Err(e) => {
                self.log(format_args!("cannot read the replay position yet: {e}"));
                return false;
            }
        };
        self.stream.committed.fetch_max(committed, Ordering::AcqRel);
        self.shared
            .stats
            .position
            .fetch_max(committed, Ordering::Relaxed);
        self.sent_next = committed;
        self.written_position = Some(committed);
        let first = lock(&self.shared.segs).list.front().map(|s| s.first);
        self.cursor = Some((first.unwrap_or(0), 0));
        let n = lock(&self.shared.segs).list.len();
        if n > 0 {
            log::info!(
                "spool {}: replaying {n} segments from position {committed}",
                self.shared.cfg.dir.display()
            );
        }
        true
    }

    fn log(&mut self, msg: std::fmt::Arguments<'_>) {
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            log::warn!("spool {}: {msg}", self.shared.cfg.dir.display());
            self.last_log = Some(Instant::now());
        }
    }

    /// Sends records while the in-flight bound allows. True if it sent or skipped anything.
    fn send_some(&mut self) -> bool {
        let mut progressed = false;
        while !self.stop.load(Ordering::Acquire)
            && self.stream.inflight_bytes.load(Ordering::Acquire) < REPLAY_INFLIGHT_BYTES
        {
            match self.next_record() {
                Ok(Some((header, payload))) => {
                    progressed = true;
                    let committed = self.stream.committed.load(Ordering::Acquire);
                    if header.id < committed.max(self.sent_next) {
                        continue;
                    }
                    let next = header.id + 1;
                    let bytes = payload.len() as u64;
                    {
                        let mut q = lock(&self.stream.inflight);
                        if q.is_empty() {
                            self.shared
                                .stats
                                .oldest_us
                                .store(header.oldest_us.max(1), Ordering::Relaxed);
                        }
                        q.push_back((next, bytes, header.oldest_us));
                        self.stream
                            .inflight_bytes
                            .fetch_add(bytes, Ordering::AcqRel);
                    }
                    self.sent_next = next;
                    let chunk = Chunk {
                        rows: Bytes::from(payload),
                        count: header.count,
                        oldest_received_us: header.oldest_us,
                        position: Some(Position {
                            stream: Arc::clone(&self.stream) as Arc<dyn Stream>,
                            next,
                        }),
                    };
                    if self.sender.send(chunk).is_err() {
                        self.stop.store(true, Ordering::Release);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.log(format_args!("cannot read a segment: {e}"));
                    break;
                }
            }
        }
        progressed
    }

    /// The next durable record at the cursor, moving across segments; `None` when there is
    /// nothing more (for now).
    fn next_record(&mut self) -> io::Result<Option<(RecordHeader, Vec<u8>)>> {
        loop {
            let Some((first, offset)) = self.cursor else {
                return Ok(None);
            };
            // The segment at the cursor, or the next one after it.
            let (seg_first, path, durable, closed) = {
                let segs = lock(&self.shared.segs);
                match segs.list.iter().find(|s| s.first >= first) {
                    Some(s) => (s.first, s.path.clone(), s.durable, s.closed),
                    None => return Ok(None),
                }
            };
            let mut offset = if seg_first == first { offset } else { 0 };
            if self.file.as_ref().is_none_or(|(f, _)| *f != seg_first) {
                let file = File::open(&path)?;
                match read_segment_header(&file)? {
                    Some((format, start)) if format == self.shared.cfg.format => {
                        offset = offset.max(start);
                    }
                    Some((format, _)) => {
                        self.incompatible(seg_first, &path, &format);
                        continue;
                    }
                    None if !closed => return Ok(None),
                    None => {
                        self.incompatible(seg_first, &path, "(no header)");
                        continue;
                    }
                }
                self.file = Some((seg_first, file));
            }
            let Some((_, file)) = self.file.as_ref() else {
                return Ok(None);
            };
            match read_record(file, offset, durable)? {
                Read::Record {
                    header,
                    payload,
                    end,
                } => {
                    self.cursor = Some((seg_first, end));
                    return Ok(Some((header, payload)));
                }
                Read::Damaged { resume, bytes } => {
                    let s = &self.shared.stats;
                    s.damaged.fetch_add(1, Ordering::Relaxed);
                    s.damaged_bytes.fetch_add(bytes, Ordering::Relaxed);
                    log::warn!(
                        "spool {}: {bytes} damaged bytes at offset {offset} of {} skipped",
                        self.shared.cfg.dir.display(),
                        path.display()
                    );
                    self.cursor = Some((seg_first, resume));
                }
                Read::End if closed => {
                    // On to the next segment.
                    self.cursor = Some((seg_first.saturating_add(1), 0));
                    self.file = None;
                }
                Read::End => {
                    self.cursor = Some((seg_first, offset));
                    return Ok(None);
                }
            }
        }
    }

    /// A segment of another format: set aside (renamed), counted, not replayed.
    fn incompatible(&mut self, first: u64, path: &Path, format: &str) {
        let s = &self.shared.stats;
        s.incompatible_segments.fetch_add(1, Ordering::Relaxed);
        log::error!(
            "spool {}: {} was written by another format ({format}; this backend writes {}): \
             not replayed, renamed to *.incompatible",
            self.shared.cfg.dir.display(),
            path.display(),
            self.shared.cfg.format
        );
        let mut to = path.as_os_str().to_owned();
        to.push(".incompatible");
        let _ = fs::rename(path, &to);
        self.remove_seg(first);
        self.cursor = Some((first.saturating_add(1), 0));
        self.file = None;
    }

    fn remove_seg(&self, first: u64) {
        let mut segs = lock(&self.shared.segs);
        if let Some(i) = segs.list.iter().position(|s| s.first == first)
            && let Some(s) = segs.list.remove(i)
        {
            let st = &self.shared.stats;
            st.segments.fetch_sub(1, Ordering::Relaxed);
            let _ = st
                .bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    Some(b.saturating_sub(s.durable))
                });
        }
    }

    /// Deletes closed segments whose every record is stored.
    fn delete_stored(&mut self) {
        let committed = self.stream.committed.load(Ordering::Acquire);
        loop {
            let victim = {
                let segs = lock(&self.shared.segs);
                match segs.list.front() {
                    Some(s) if s.closed && s.end.is_some_and(|e| e <= committed) => {
                        Some((s.first, s.path.clone()))
                    }
                    _ => None,
                }
            };
            let Some((first, path)) = victim else { break };
            if self.file.as_ref().is_some_and(|(f, _)| *f == first) {
                self.file = None;
            }
            // The position stays stored (in the sink, or below): a crash before this removal
            // replays nothing twice; one after it finds the segment gone.
            self.persist_position(true);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                self.log(format_args!("cannot remove {}: {e}", path.display()));
                break;
            }
            self.remove_seg(first);
        }
        let empty = lock(&self.shared.segs).list.is_empty();
        if empty && self.stream.inflight_bytes.load(Ordering::Acquire) == 0 {
            self.shared.stats.oldest_us.store(0, Ordering::Relaxed);
        }
    }

    /// For sinks without positions: records the position the sink made durable.
    fn persist_position(&mut self, now: bool) {
        if self.keeps_positions {
            return;
        }
        let p = self.stream.committed.load(Ordering::Acquire);
        if self.written_position == Some(p) || (!now && self.cursor.is_none()) {
            return;
        }
        match durable::write_atomic(
            &self.shared.cfg.dir.join(POSITION_FILE),
            p.to_string().as_bytes(),
        ) {
            Ok(()) => self.written_position = Some(p),
            Err(e) => self.log(format_args!("cannot write {POSITION_FILE}: {e}")),
        }
    }
}
