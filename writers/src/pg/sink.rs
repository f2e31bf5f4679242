//! [`PgSink`]: ships binary COPY rows over one tokio-postgres session, on a current-thread tokio
//! runtime that the sink owns (the backend thread calls in and blocks). One flush is one
//! `COPY <table> (<schema columns>) FROM STDIN (FORMAT binary)`: the first `write` of a flush
//! opens it and sends the header, rows stream in ~1 MiB pieces, `flush` sends the trailer and
//! waits for the server's row count; `abort` drops the COPY (the server rolls it back).
//!
//! It connects lazily (plain or TLS as `sslmode` says, see `tls`) and again after any connection
//! error (the backend's retry paces it), creates or upgrades the table on the first successful
//! connect, and starts a retention thread when `max_age_days` is set and a rollup thread that
//! keeps the per-minute rollup `<table>_1m` (see [`ddl::rollup_name`]) materialized on plain
//! PostgreSQL and the hourly top-K rollup `<table>_1h_top` ([`ddl::top_name`]) on both kinds of
//! server.
//!
//! [`PgSink::lanes`] makes the sinks of one backend's lanes (`connections` in the config): each
//! has its own session and COPY, so several COPYs into the table run at once. They share one
//! stats block (updated per connect and per flush, so a mutex costs nothing) and therefore report
//! the same backend-wide status; each sets the schema up on its own first connect (serialized by
//! an advisory lock in [`ddl::ensure_schema`]); only lane 0 runs retention. Errors are classified:
//! lost connections, timeouts and server shutdown/resource states are retriable; data and schema
//! errors are fatal and name the table and column.
//!
//! Every flush is one transaction (`BEGIN`, the COPY, `COMMIT`). The positions of the flush's
//! positioned chunks (see `sink.rs`: spool replay, Kafka offsets) are upserted into the table's
//! positions table (`<table>_positions`, created with the table) inside it, so rows and
//! positions are committed together: exactly once for replayable streams, also when the
//! connection is lost between the server's commit and its reply (the backend then asks
//! [`Sink::committed_positions`] before it retries). Live chunks without a position are
//! at-least-once in that one case: their retry stores them a second time.

use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode as PqSslMode;
use tokio_postgres::{Client, CopyInSink};

use super::ddl::{self, SchemaError};
use super::encode::{self, COPY_HEADER, COPY_TRAILER};
use super::tls::{self, ConnectError};
use super::{PgConfig, SslMode};
use crate::json::{json_string, write_rfc3339};
use crate::sink::{Chunk, PositionSet, Sink, SinkError};

/// Rows are handed to the connection in pieces of about this size.
pub const COPY_PIECE_BYTES: usize = 1 << 20;
/// Chunks at least this large are sent as they are (no copy into the piece buffer).
const COPY_DIRECT_BYTES: usize = 256 << 10;
/// TCP connect plus startup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One feed or the end of a COPY; a server that accepts nothing for this long is treated as
/// gone (the connection is dropped and the flush retried).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Table creation and migration (create_hypertable may move existing rows).
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(600);
/// The status queries; status must never hold up the backend for long.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Table size and row estimate are refreshed at most this often.
const STATUS_REFRESH: Duration = Duration::from_secs(5);
/// Retention runs this often after the first run at start.
const RETENTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// A failed retention run is tried again after this long.
const RETENTION_RETRY: Duration = Duration::from_secs(300);
/// Plain PostgreSQL: the rollup's closed minutes are materialized this often.
const ROLLUP_INTERVAL: Duration = Duration::from_secs(60);

/// A live session: the client, the task that drives its socket, and whether TLS protects it.
struct Session {
    client: Client,
    task: JoinHandle<()>,
    encrypted: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One lane's session as last seen (on connect, on drop, at its last status refresh).
#[derive(Clone, Copy, Debug, Default)]
struct LaneState {
    connected: bool,
    encrypted: bool,
}

/// Counters and last events of all lanes of one backend, for [`Sink::status`].
#[derive(Debug, Default)]
struct Stats {
    /// Indexed by lane.
    lanes: Vec<LaneState>,
    /// The table is a hypertable (as the last schema check found).
    timescaledb: bool,
    rows_written: u64,
    copies: u64,
    last_flush_us: Option<i64>,
    last_flush_ms: f64,
    last_copy_ms: f64,
    connects: u64,
    reconnects: u64,
    connect_failures: u64,
    errors: u64,
    last_error: Option<(i64, String)>,
    row_count_mismatches: u64,
    table_bytes: Option<i64>,
    estimated_rows: Option<i64>,
    refreshed: Option<Instant>,
}

impl Stats {
    /// The stats block of a backend with `lanes` lanes.
    fn shared(lanes: usize) -> Arc<Mutex<Stats>> {
        Arc::new(Mutex::new(Stats {
            lanes: vec![LaneState::default(); lanes],
            ..Stats::default()
        }))
    }
}

/// What the retention thread reports.
#[derive(Debug, Default)]
struct RetentionStats {
    runs: u64,
    last_run_us: Option<i64>,
    last_removed: u64,
    removed_total: u64,
    last_error: Option<String>,
}

/// What the rollup thread reports.
#[derive(Debug, Default)]
struct RollupStats {
    /// Maintenance rounds finished without an error (each: the per-minute refresh on plain
    /// PostgreSQL or the one history backfill on TimescaleDB, then the top-K refresh).
    runs: u64,
    /// The end of the materialized minutes (Unix seconds).
    materialized_to: Option<i64>,
    /// The end of the materialized hours of the top-K rollup (Unix seconds).
    top_materialized_to: Option<i64>,
    last_error: Option<String>,
}

/// The PostgreSQL sink. See the module docs.
pub struct PgSink {
    cfg: PgConfig,
    /// This sink's index among its backend's lanes (0 with one lane).
    lane: usize,
    /// This lane has had a session before (the next connect is a reconnect).
    connected_before: bool,
    copy_sql: String,
    rt: Option<Runtime>,
    session: Option<Session>,
    /// The open COPY of the current flush, if a write started one.
    copy: Option<Pin<Box<CopyInSink<Bytes>>>>,
    copy_started: Option<Instant>,
    /// Rows handed to the current COPY (checked against the server's count).
    copy_rows: u64,
    /// Rows not yet handed to the connection.
    piece: BytesMut,
    /// Positions of the current flush, stored in its transaction.
    positions: PositionSet,
    /// A `BEGIN` was sent and neither `COMMIT` nor `ROLLBACK` since.
    in_tx: bool,
    schema_ready: bool,
    timescaledb: bool,
    /// The last error was an undefined column/table and the schema was re-checked for it.
    schema_rechecked: bool,
    /// Shared by every lane of the backend.
    stats: Arc<Mutex<Stats>>,
    retention: Arc<Mutex<RetentionStats>>,
    /// Dropping it stops the retention thread (lane 0 only).
    retention_stop: Option<mpsc::Sender<()>>,
    rollup: Arc<Mutex<RollupStats>>,
    /// Dropping it stops the rollup thread (lane 0 only).
    rollup_stop: Option<mpsc::Sender<()>>,
}

impl std::fmt::Debug for PgSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSink")
            .field("cfg", &self.cfg)
            .field("lane", &self.lane)
            .field("connected", &self.session.is_some())
            .field("copy_open", &self.copy.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PgSink {
    /// A sink for `cfg` (a backend with one lane). Does not connect: the first write (or
    /// [`PgSink::connect`]) does.
    pub fn new(cfg: PgConfig) -> PgSink {
        PgSink::lane(cfg, 0, &Stats::shared(1), &Arc::default(), &Arc::default())
    }

    /// The sinks of a backend with `n` lanes (at least one), one connection each, sharing their
    /// stats (so each reports the backend's totals) and retention (run by lane 0). None connects
    /// yet.
    pub fn lanes(cfg: PgConfig, n: usize) -> Vec<PgSink> {
        let n = n.max(1);
        let stats = Stats::shared(n);
        let retention: Arc<Mutex<RetentionStats>> = Arc::default();
        let rollup: Arc<Mutex<RollupStats>> = Arc::default();
        (0..n)
            .map(|lane| PgSink::lane(cfg.clone(), lane, &stats, &retention, &rollup))
            .collect()
    }

    fn lane(
        cfg: PgConfig,
        lane: usize,
        stats: &Arc<Mutex<Stats>>,
        retention: &Arc<Mutex<RetentionStats>>,
        rollup: &Arc<Mutex<RollupStats>>,
    ) -> PgSink {
        PgSink {
            copy_sql: ddl::copy_statement_for(&cfg.table, cfg.columns),
            cfg,
            lane,
            connected_before: false,
            rt: None,
            session: None,
            copy: None,
            copy_started: None,
            copy_rows: 0,
            piece: BytesMut::new(),
            positions: PositionSet::default(),
            in_tx: false,
            schema_ready: false,
            timescaledb: false,
            schema_rechecked: false,
            stats: Arc::clone(stats),
            retention: Arc::clone(retention),
            retention_stop: None,
            rollup: Arc::clone(rollup),
            rollup_stop: None,
        }
    }

    /// The configuration (the password included: do not print it).
    pub fn config(&self) -> &PgConfig {
        &self.cfg
    }

    /// Rows the server confirmed (all lanes).
    pub fn rows_written(&self) -> u64 {
        lock(&self.stats).rows_written
    }

    /// Successful connects after each lane's first (all lanes).
    pub fn reconnects(&self) -> u64 {
        lock(&self.stats).reconnects
    }

    /// COPYs committed (all lanes).
    pub fn copies(&self) -> u64 {
        lock(&self.stats).copies
    }

    /// This sink's lane index.
    pub fn lane_index(&self) -> usize {
        self.lane
    }

    /// Whether the table is a TimescaleDB hypertable (known after the first connect).
    pub fn timescaledb(&self) -> bool {
        self.timescaledb
    }

    /// Retention runs finished so far (each run may remove nothing).
    pub fn retention_runs(&self) -> u64 {
        lock(&self.retention).runs
    }

    /// Rollup refreshes finished so far (lane 0; on TimescaleDB the one history backfill).
    pub fn rollup_runs(&self) -> u64 {
        lock(&self.rollup).runs
    }

    /// Connects now (and sets up the schema and retention on the first connect) instead of
    /// waiting for the first write. A no-op while connected.
    pub fn connect(&mut self) -> Result<(), SinkError> {
        self.ensure_session().map_err(|e| self.note(e))
    }

    fn runtime(&mut self) -> Result<&Runtime, SinkError> {
        if self.rt.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SinkError::retriable(format!("postgres: tokio runtime: {e}")))?;
            self.rt = Some(rt);
        }
        self.rt
            .as_ref()
            .ok_or_else(|| SinkError::retriable("postgres: no runtime"))
    }

    fn pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.cfg.host)
            .port(self.cfg.port)
            .user(&self.cfg.user)
            .dbname(&self.cfg.dbname)
            .application_name("goflow")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(pw) = &self.cfg.password {
            c.password(pw.as_bytes());
        }
        c.ssl_mode(match &self.cfg.sslmode {
            // PostgreSQL has no TLS on Unix sockets; libpq ignores sslmode there too.
            _ if self.cfg.host.starts_with('/') => PqSslMode::Disable,
            SslMode::Disable => PqSslMode::Disable,
            SslMode::Prefer => PqSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull { .. } => PqSslMode::Require,
        });
        c
    }

    /// `user@host:port/db` (never the password), for logs and status.
    fn server(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.cfg.user, self.cfg.host, self.cfg.port, self.cfg.dbname
        )
    }

    /// Connects if needed; on the first success sets up the schema and retention.
    fn ensure_session(&mut self) -> Result<(), SinkError> {
        if self.session.as_ref().is_some_and(|s| !s.client.is_closed()) {
            return self.ensure_schema();
        }
        self.drop_session();
        let config = self.pg_config();
        let server = self.server();
        let mode = self.cfg.sslmode.clone();
        let rt = self.runtime()?;
        let connected = rt.block_on(async {
            tokio::time::timeout(CONNECT_TIMEOUT, tls::connect(&config, &mode)).await
        });
        let tls::Connected {
            client,
            connection,
            encrypted,
        } = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(ConnectError::Setup(msg))) => {
                lock(&self.stats).connect_failures += 1;
                let hint = connect_hint(&self.cfg, None, &msg);
                return Err(SinkError::fatal(format!(
                    "postgres: connect to {server}: {msg}{hint}"
                )));
            }
            Ok(Err(ConnectError::Db(e))) => {
                lock(&self.stats).connect_failures += 1;
                let err = classify(&e, &format!("connect to {server}"));
                let hint = connect_hint(&self.cfg, e.code().map(|c| c.code()), &err.to_string());
                return Err(if err.is_retriable() {
                    SinkError::retriable(format!("{err}{hint}"))
                } else {
                    SinkError::fatal(format!("{err}{hint}"))
                });
            }
            Err(_) => {
                lock(&self.stats).connect_failures += 1;
                return Err(SinkError::retriable(format!(
                    "postgres: connect to {server}: timed out after {} s{}",
                    CONNECT_TIMEOUT.as_secs(),
                    connect_hint(&self.cfg, None, "timed out")
                )));
            }
        };
        let task = rt.spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("postgres connection ended: {e}");
            }
        });
        self.session = Some(Session {
            client,
            task,
            encrypted,
        });
        let lanes = {
            let mut s = lock(&self.stats);
            s.connects += 1;
            if self.connected_before {
                s.reconnects += 1;
            }
            if let Some(l) = s.lanes.get_mut(self.lane) {
                *l = LaneState {
                    connected: true,
                    encrypted,
                };
            }
            s.lanes.len()
        };
        let over = if encrypted { "TLS" } else { "plain TCP" };
        let which = if lanes > 1 {
            format!(" (connection {} of {lanes})", self.lane + 1)
        } else {
            String::new()
        };
        if self.connected_before {
            log::info!("postgres: reconnected to {server} over {over}{which}");
        } else {
            log::info!(
                "postgres: connected to {server} over {over} (sslmode {}), table {}{which}",
                self.cfg.sslmode.as_str(),
                self.cfg.table
            );
        }
        self.connected_before = true;
        self.ensure_schema()
    }

    fn ensure_schema(&mut self) -> Result<(), SinkError> {
        if self.schema_ready {
            return Ok(());
        }
        let table = self.cfg.table.clone();
        let compress = self.cfg.compress_after_days;
        let columns = self.cfg.columns;
        let mode = (self.cfg.hypertable, self.cfg.exporter_index);
        let (Some(rt), Some(session)) = (&self.rt, &self.session) else {
            return Err(SinkError::retriable("postgres: not connected"));
        };
        let result = rt.block_on(async {
            tokio::time::timeout(
                SCHEMA_TIMEOUT,
                ddl::ensure_schema(&session.client, &table, compress, columns, mode),
            )
            .await
        });
        let report = match result {
            Ok(Ok(report)) => report,
            Ok(Err(SchemaError::Incompatible(msg))) => {
                return Err(SinkError::fatal(format!("postgres: {msg}")));
            }
            Ok(Err(SchemaError::Db(e))) => {
                let err = classify(&e, &format!("schema setup of table {}", self.cfg.table));
                if err.is_retriable() {
                    self.drop_session();
                }
                return Err(err);
            }
            Err(_) => {
                self.drop_session();
                return Err(SinkError::retriable(format!(
                    "postgres: schema setup of table {}: timed out",
                    self.cfg.table
                )));
            }
        };
        if report.created {
            log::info!("postgres: created table {}", self.cfg.table);
        }
        if !report.added.is_empty() {
            log::info!(
                "postgres: added columns to table {}: {}",
                self.cfg.table,
                report.added.join(", ")
            );
        }
        if let Some(msg) = &report.compression
            && self.lane == 0
        {
            if report.timescaledb {
                log::info!("postgres: table {}: {msg}", self.cfg.table);
            } else {
                log::warn!("postgres: table {}: {msg}", self.cfg.table);
            }
        }
        self.timescaledb = report.timescaledb;
        lock(&self.stats).timescaledb = report.timescaledb;
        self.schema_ready = true;
        self.start_retention();
        self.start_rollup(report.rollup_created);
        Ok(())
    }

    /// Starts the rollup thread (lane 0, once): on plain PostgreSQL it materializes the closed
    /// minutes of `<table>_1m` every [`ROLLUP_INTERVAL`]; on TimescaleDB the continuous
    /// aggregate's policy does that, and the thread materializes the history of a table the
    /// rollup was just created on once. On both it materializes the closed hours of the top-K
    /// rollup `<table>_1h_top` every [`ROLLUP_INTERVAL`].
    fn start_rollup(&mut self, created: bool) {
        let work = RollupWork {
            backfill: self.timescaledb && created && ddl::rollup_possible(self.cfg.columns),
            minutes: !self.timescaledb && ddl::rollup_possible(self.cfg.columns),
            top_keys: if ddl::top_possible(self.cfg.columns) {
                self.cfg.top_keys
            } else {
                0
            },
        };
        if self.lane != 0
            || self.rollup_stop.is_some()
            || !(work.backfill || work.minutes || work.top_keys > 0)
        {
            return;
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let config = self.pg_config();
        let mode = self.cfg.sslmode.clone();
        let table = self.cfg.table.clone();
        let stats = Arc::clone(&self.rollup);
        let spawned = thread::Builder::new()
            .name("goflow-pg-rollup".into())
            .spawn(move || rollup_loop(config, mode, table, work, stats, stop_rx));
        match spawned {
            Ok(_) => self.rollup_stop = Some(stop_tx),
            Err(e) => log::error!("postgres: cannot start the rollup thread: {e}"),
        }
    }

    /// Starts the retention thread (lane 0, once, when `max_age_days` is set).
    fn start_retention(&mut self) {
        // 0 days means "keep everything" (as `utilities: {max_age: 0}` does).
        let Some(days) = self.cfg.max_age_days.filter(|d| *d > 0) else {
            return;
        };
        if self.lane != 0 || self.retention_stop.is_some() {
            return;
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let config = self.pg_config();
        let mode = self.cfg.sslmode.clone();
        let table = self.cfg.table.clone();
        let timescaledb = self.timescaledb;
        let stats = Arc::clone(&self.retention);
        let spawned = thread::Builder::new()
            .name("goflow-pg-retention".into())
            .spawn(move || {
                retention_loop(config, mode, table, days, timescaledb, stats, stop_rx);
            });
        match spawned {
            Ok(_) => self.retention_stop = Some(stop_tx),
            Err(e) => log::error!("postgres: cannot start the retention thread: {e}"),
        }
    }

    fn drop_session(&mut self) {
        self.copy = None;
        self.in_tx = false;
        if self.session.take().is_some()
            && let Some(l) = lock(&self.stats).lanes.get_mut(self.lane)
        {
            l.connected = false;
        }
    }

    /// Runs one statement of the flush's transaction (`BEGIN`, `COMMIT`, `ROLLBACK`).
    fn tx_statement(&mut self, sql: &'static str) -> Result<(), SinkError> {
        let (Some(rt), Some(session)) = (&self.rt, &self.session) else {
            return Err(SinkError::retriable("postgres: not connected"));
        };
        let done = rt.block_on(async {
            tokio::time::timeout(IO_TIMEOUT, session.client.batch_execute(sql)).await
        });
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.db_error(&e, sql)),
            Err(_) => Err(self.timeout_error(sql)),
        }
    }

    /// Connects if needed and opens the flush's transaction (ending one an error left open).
    fn begin(&mut self) -> Result<(), SinkError> {
        self.ensure_session()?;
        if self.in_tx {
            self.tx_statement("ROLLBACK")?;
            self.in_tx = false;
        }
        self.tx_statement("BEGIN")?;
        self.in_tx = true;
        Ok(())
    }

    /// Stores the flush's positions (inside its transaction).
    fn store_positions(&mut self) -> Result<(), SinkError> {
        if self.positions.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = Vec::new();
        let mut at: Vec<i64> = Vec::new();
        for (name, next) in self.positions.entries() {
            names.push(name);
            at.push(i64::try_from(*next).map_err(|_| {
                SinkError::fatal(format!(
                    "postgres: position {next} of stream {name} does not fit a bigint"
                ))
            })?);
        }
        let (Some(rt), Some(session)) = (&self.rt, &self.session) else {
            return Err(SinkError::retriable("postgres: not connected"));
        };
        let sql = ddl::upsert_positions(&self.cfg.table);
        let done = rt.block_on(async {
            tokio::time::timeout(IO_TIMEOUT, session.client.execute(&sql, &[&names, &at])).await
        });
        match done {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.db_error(&e, "storing positions")),
            Err(_) => Err(self.timeout_error("storing positions")),
        }
    }

    /// Opens the COPY of this flush if none is open and queues the header.
    fn ensure_copy(&mut self) -> Result<(), SinkError> {
        if self.copy.is_some() {
            return Ok(());
        }
        // A transaction open without a COPY is one an error left behind: begin() ends it.
        self.begin()?;
        let (Some(rt), Some(session)) = (&self.rt, &self.session) else {
            return Err(SinkError::retriable("postgres: not connected"));
        };
        let sql = &self.copy_sql;
        let started = rt.block_on(async {
            tokio::time::timeout(IO_TIMEOUT, session.client.copy_in::<_, Bytes>(sql)).await
        });
        let copy = match started {
            Ok(Ok(copy)) => copy,
            Ok(Err(e)) => return Err(self.db_error(&e, "COPY")),
            Err(_) => return Err(self.timeout_error("COPY start")),
        };
        self.copy = Some(Box::pin(copy));
        self.copy_started = Some(Instant::now());
        self.copy_rows = 0;
        self.piece.clear();
        self.piece.reserve(COPY_PIECE_BYTES + COPY_HEADER.len());
        encode::write_header(&mut self.piece);
        Ok(())
    }

    /// Hands `pieces` to the open COPY, in order.
    fn send(&mut self, pieces: Vec<Bytes>) -> Result<(), SinkError> {
        let (Some(rt), Some(copy)) = (&self.rt, self.copy.as_mut()) else {
            return Err(SinkError::retriable("postgres: no COPY in progress"));
        };
        let sent = rt.block_on(async {
            for piece in pieces {
                match tokio::time::timeout(IO_TIMEOUT, copy.feed(piece)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Some(e)),
                    Err(_) => return Err(None),
                }
            }
            Ok(())
        });
        match sent {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(self.db_error(&e, "COPY")),
            Err(None) => Err(self.timeout_error("COPY data")),
        }
    }

    fn write_inner(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
        self.positions.record(chunk);
        if chunk.rows.is_empty() {
            return Ok(());
        }
        self.ensure_copy()?;
        self.copy_rows += chunk.count;
        if chunk.rows.len() >= COPY_DIRECT_BYTES {
            // Big chunks go out as they are, in 1 MiB slices of the same allocation.
            let mut pieces = Vec::with_capacity(chunk.rows.len() / COPY_PIECE_BYTES + 2);
            if !self.piece.is_empty() {
                pieces.push(self.piece.split().freeze());
            }
            let mut at = 0;
            while at < chunk.rows.len() {
                let end = (at + COPY_PIECE_BYTES).min(chunk.rows.len());
                pieces.push(chunk.rows.slice(at..end));
                at = end;
            }
            return self.send(pieces);
        }
        self.piece.put_slice(&chunk.rows);
        if self.piece.len() >= COPY_PIECE_BYTES {
            let piece = self.piece.split().freeze();
            self.piece.reserve(COPY_PIECE_BYTES);
            return self.send(vec![piece]);
        }
        Ok(())
    }

    fn flush_inner(&mut self) -> Result<(), SinkError> {
        if self.copy.is_none() {
            if self.positions.is_empty() {
                return Ok(());
            }
            // Positions without rows (chunks that carried none): a transaction of their own
            // (a transaction open without a COPY is one an error left behind: begin() ends it).
            self.begin()?;
            self.store_positions()?;
            self.tx_statement("COMMIT")?;
            self.in_tx = false;
            self.positions.clear();
            return Ok(());
        }
        let flush_started = Instant::now();
        self.piece.put_slice(&COPY_TRAILER);
        let last = self.piece.split().freeze();
        self.send(vec![last])?;
        let (Some(rt), Some(mut copy)) = (&self.rt, self.copy.take()) else {
            return Err(SinkError::retriable("postgres: no COPY in progress"));
        };
        let finished =
            rt.block_on(async { tokio::time::timeout(IO_TIMEOUT, copy.as_mut().finish()).await });
        let rows = match finished {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(self.db_error(&e, "COPY")),
            Err(_) => return Err(self.timeout_error("COPY end")),
        };
        self.store_positions()?;
        self.tx_statement("COMMIT")?;
        self.in_tx = false;
        self.positions.clear();
        if rows != self.copy_rows {
            lock(&self.stats).row_count_mismatches += 1;
            log::warn!(
                "postgres: COPY into {} stored {rows} rows, {} were sent",
                self.cfg.table,
                self.copy_rows
            );
        }
        self.schema_rechecked = false;
        let copy_ms = self
            .copy_started
            .take()
            .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
        {
            let mut s = lock(&self.stats);
            s.rows_written += rows;
            s.copies += 1;
            s.last_flush_us = Some(now_us());
            s.last_flush_ms = flush_started.elapsed().as_secs_f64() * 1e3;
            s.last_copy_ms = copy_ms;
        }
        self.copy_rows = 0;
        // Under steady load a COPY is open almost all the time; between two is when the table's
        // size can be asked for (rate-limited to one query per STATUS_REFRESH).
        self.refresh_table_stats();
        Ok(())
    }

    /// Classifies a server/client error of the open COPY; drops the session when a retry needs
    /// a new one, and re-checks the schema once when a column or the table went missing.
    fn db_error(&mut self, e: &tokio_postgres::Error, what: &str) -> SinkError {
        self.copy = None;
        let table = self.cfg.table.clone();
        let mut err = classify(e, &format!("{what} into table {table}"));
        let code = e.code().map(|c| c.code());
        if matches!(code, Some("42703" | "42P01")) && !self.schema_rechecked {
            // A column or the table was dropped under us: ADD COLUMN/CREATE TABLE and retry once.
            self.schema_rechecked = true;
            self.schema_ready = false;
            err = SinkError::retriable(format!("{err}; re-checking the table's columns"));
        }
        if err.is_retriable() || self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.drop_session();
        }
        err
    }

    fn timeout_error(&mut self, what: &str) -> SinkError {
        self.drop_session();
        SinkError::retriable(format!(
            "postgres: {what} into table {}: no progress for {} s, connection dropped",
            self.cfg.table,
            IO_TIMEOUT.as_secs()
        ))
    }

    /// Counts and remembers an error on its way out.
    fn note(&mut self, e: SinkError) -> SinkError {
        let mut s = lock(&self.stats);
        s.errors += 1;
        s.last_error = Some((now_us(), e.to_string()));
        drop(s);
        e
    }

    fn committed_positions_inner(&mut self, prefix: &str) -> Result<Vec<(String, u64)>, SinkError> {
        if self.copy.is_some() {
            return Err(SinkError::retriable(
                "postgres: positions asked for while a COPY is open",
            ));
        }
        self.ensure_session()?;
        if self.in_tx {
            self.tx_statement("ROLLBACK")?;
            self.in_tx = false;
        }
        let (Some(rt), Some(session)) = (&self.rt, &self.session) else {
            return Err(SinkError::retriable("postgres: not connected"));
        };
        let sql = ddl::select_positions(&self.cfg.table);
        let got = rt.block_on(async {
            tokio::time::timeout(IO_TIMEOUT, session.client.query(&sql, &[&prefix])).await
        });
        let rows = match got {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(self.db_error(&e, "reading positions")),
            Err(_) => return Err(self.timeout_error("reading positions")),
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row
                .try_get(0)
                .map_err(|e| SinkError::fatal(format!("postgres: positions table: {e}")))?;
            let at: i64 = row
                .try_get(1)
                .map_err(|e| SinkError::fatal(format!("postgres: positions table: {e}")))?;
            out.push((name, u64::try_from(at).unwrap_or(0)));
        }
        Ok(out)
    }

    /// Asks for the table's size and row estimate, at most once per [`STATUS_REFRESH`] across
    /// all lanes (the lane that finds it due claims it), never while this lane's COPY is open.
    fn refresh_table_stats(&mut self) {
        if self.copy.is_some() {
            return;
        }
        let (Some(rt), Some(session)) = (&self.rt, &self.session) else {
            return;
        };
        if session.client.is_closed() || !self.schema_ready {
            return;
        }
        {
            let mut s = lock(&self.stats);
            if s.refreshed.is_some_and(|t| t.elapsed() < STATUS_REFRESH) {
                return;
            }
            s.refreshed = Some(Instant::now());
        }
        let sql = if self.timescaledb {
            "SELECT hypertable_size(r)::bigint, approximate_row_count(r)::bigint \
             FROM (SELECT to_regclass($1) AS r) s"
        } else {
            "SELECT pg_total_relation_size(r)::bigint, \
             (SELECT reltuples::bigint FROM pg_class WHERE oid = r) \
             FROM (SELECT to_regclass($1) AS r) s"
        };
        let table = ddl::quote_table(&self.cfg.table);
        let got = rt.block_on(async {
            tokio::time::timeout(STATUS_TIMEOUT, session.client.query_one(sql, &[&table])).await
        });
        match got {
            Ok(Ok(row)) => {
                let mut s = lock(&self.stats);
                s.table_bytes = row.try_get(0).ok().flatten();
                // reltuples is -1 for a table never vacuumed or analyzed (PostgreSQL 14+).
                s.estimated_rows = row
                    .try_get::<_, Option<i64>>(1)
                    .ok()
                    .flatten()
                    .filter(|n| *n >= 0);
            }
            Ok(Err(e)) => log::debug!("postgres: status query: {e}"),
            Err(_) => {
                // A server too slow to answer this is not one to keep a COPY waiting on.
                self.drop_session();
            }
        }
    }
}

impl Sink for PgSink {
    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
        self.write_inner(chunk).map_err(|e| self.note(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_inner().map_err(|e| self.note(e))
    }

    fn connect(&mut self) -> Result<(), SinkError> {
        PgSink::connect(self)
    }

    fn abort(&mut self) {
        // Dropping the sink half sends CopyFail: the server discards this COPY's rows and the
        // session stays usable; the transaction is rolled back at the next BEGIN (or query).
        self.copy = None;
        self.copy_started = None;
        self.copy_rows = 0;
        self.piece.clear();
        self.positions.clear();
    }

    fn committed_positions(
        &mut self,
        prefix: &str,
    ) -> Result<Option<Vec<(String, u64)>>, SinkError> {
        self.committed_positions_inner(prefix)
            .map(Some)
            .map_err(|e| self.note(e))
    }

    /// Backend-wide values (every lane reports the same totals); `connected` is true while any
    /// lane has a live session, `sessions` says how many of `connections` do, and `tls` is true
    /// only when every live session is encrypted. Other lanes' sessions are as they last saw
    /// them (the backend refreshes each lane's status every few seconds).
    fn status(&mut self) -> Vec<(&'static str, String)> {
        self.refresh_table_stats();
        let live = self
            .session
            .as_ref()
            .filter(|s| !s.client.is_closed())
            .map(|s| s.encrypted);
        let mut s = lock(&self.stats);
        if let Some(l) = s.lanes.get_mut(self.lane) {
            *l = LaneState {
                connected: live.is_some(),
                encrypted: live.unwrap_or(false),
            };
        }
        let sessions = s.lanes.iter().filter(|l| l.connected).count();
        let all_encrypted = s.lanes.iter().filter(|l| l.connected).all(|l| l.encrypted);
        let s = &*s;
        let r = lock(&self.retention);
        let opt_i64 = |v: Option<i64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
        let time = |v: Option<i64>| v.map_or_else(|| "null".to_string(), json_time);
        let mut out = vec![
            ("server", json_string(&self.server())),
            ("table", json_string(&self.cfg.table)),
            ("sslmode", json_string(self.cfg.sslmode.as_str())),
            ("connections", s.lanes.len().to_string()),
            ("sessions", sessions.to_string()),
            ("connected", (sessions > 0).to_string()),
            // Whether the live sessions are encrypted; null while there is none.
            (
                "tls",
                if sessions == 0 {
                    "null".to_string()
                } else {
                    all_encrypted.to_string()
                },
            ),
            ("timescaledb", s.timescaledb.to_string()),
            ("table_bytes", opt_i64(s.table_bytes)),
            ("estimated_rows", opt_i64(s.estimated_rows)),
            ("rows_written", s.rows_written.to_string()),
            ("copies", s.copies.to_string()),
            ("last_flush", time(s.last_flush_us)),
            ("last_flush_ms", format!("{:.3}", s.last_flush_ms)),
            ("last_copy_ms", format!("{:.3}", s.last_copy_ms)),
            ("reconnects", s.reconnects.to_string()),
            ("connect_failures", s.connect_failures.to_string()),
            ("errors", s.errors.to_string()),
            (
                "last_error",
                s.last_error
                    .as_ref()
                    .map_or_else(|| "null".to_string(), |(_, m)| json_string(m)),
            ),
            (
                "last_error_at",
                time(s.last_error.as_ref().map(|(t, _)| *t)),
            ),
            ("row_count_mismatches", s.row_count_mismatches.to_string()),
            (
                "counters_clamped",
                encode::clamped_counters_total().to_string(),
            ),
            ("times_clamped", encode::clamped_times_total().to_string()),
        ];
        if self.schema_ready {
            let r = lock(&self.rollup);
            out.extend([
                (
                    "rollup",
                    json_string(&format!(
                        "{} ({})",
                        ddl::rollup_name(&self.cfg.table),
                        if s.timescaledb {
                            "continuous aggregate"
                        } else {
                            "view over minutes goflow materializes"
                        }
                    )),
                ),
                (
                    "rollup_materialized_to",
                    time(r.materialized_to.map(|t| t * 1_000_000)),
                ),
                (
                    "top_rollup",
                    if ddl::top_possible(self.cfg.columns) && self.cfg.top_keys > 0 {
                        json_string(&format!(
                            "{} (top {} per hour and dimension)",
                            ddl::top_name(&self.cfg.table),
                            self.cfg.top_keys
                        ))
                    } else {
                        "null".to_string()
                    },
                ),
                (
                    "top_materialized_to",
                    time(r.top_materialized_to.map(|t| t * 1_000_000)),
                ),
                (
                    "rollup_last_error",
                    r.last_error
                        .as_deref()
                        .map_or_else(|| "null".to_string(), json_string),
                ),
            ]);
        }
        if let Some(days) = self.cfg.compress_after_days.filter(|d| *d > 0) {
            out.push(("compress_after_days", days.to_string()));
        }
        if let Some(days) = self.cfg.max_age_days.filter(|d| *d > 0) {
            out.extend([
                ("retention_max_age_days", days.to_string()),
                ("retention_runs", r.runs.to_string()),
                ("retention_last_run", time(r.last_run_us)),
                ("retention_last_removed", r.last_removed.to_string()),
                ("retention_removed_total", r.removed_total.to_string()),
                (
                    "retention_last_error",
                    r.last_error
                        .as_deref()
                        .map_or_else(|| "null".to_string(), json_string),
                ),
            ]);
        }
        out
    }
}

/// The single-threaded runtime of a maintenance thread (retention, rollup); None, logged, when
/// it cannot be built.
fn maintenance_runtime(what: &str) -> Option<Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            log::error!("postgres {what}: tokio runtime: {e}");
            None
        }
    }
}

/// A maintenance thread's own session, and the task driving its connection (awaited after the
/// client is dropped).
async fn maintenance_connect(
    config: &tokio_postgres::Config,
    mode: &SslMode,
) -> Result<(Client, JoinHandle<()>), String> {
    let tls::Connected {
        client, connection, ..
    } = tokio::time::timeout(CONNECT_TIMEOUT, tls::connect(config, mode))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| match e {
            ConnectError::Setup(msg) => msg,
            ConnectError::Db(e) => error_text(&e),
        })?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

/// Prunes at start and then every [`RETENTION_INTERVAL`] on its own connection, so a long
/// DELETE never holds up the COPY stream. Ends when the sink drops its sender.
fn retention_loop(
    config: tokio_postgres::Config,
    mode: SslMode,
    table: String,
    days: u32,
    timescaledb: bool,
    stats: Arc<Mutex<RetentionStats>>,
    stop: mpsc::Receiver<()>,
) {
    let Some(rt) = maintenance_runtime("retention") else {
        return;
    };
    loop {
        let result: Result<u64, String> = rt.block_on(async {
            let (client, task) = maintenance_connect(&config, &mode).await?;
            let pruned = ddl::prune(&client, &table, days, timescaledb)
                .await
                .map_err(|e| error_text(&e));
            drop(client);
            let _ = task.await;
            pruned
        });
        let wait = {
            let mut s = lock(&stats);
            s.runs += 1;
            s.last_run_us = Some(now_us());
            match result {
                Ok(n) => {
                    s.last_removed = n;
                    s.removed_total += n;
                    s.last_error = None;
                    let what = if timescaledb { "chunks" } else { "rows" };
                    log::info!(
                        "postgres retention: removed {n} {what} older than {days} days from {table}"
                    );
                    RETENTION_INTERVAL
                }
                Err(e) => {
                    log::warn!("postgres retention on {table}: {e}");
                    s.last_error = Some(e);
                    RETENTION_RETRY
                }
            }
        };
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// What the rollup thread keeps materialized.
#[derive(Clone, Copy, Debug)]
struct RollupWork {
    /// TimescaleDB: the continuous aggregate's history is still to be materialized (once).
    backfill: bool,
    /// Plain PostgreSQL: the per-minute rollup's closed minutes.
    minutes: bool,
    /// The top-K rollup's closed hours with this many keys (0: none).
    top_keys: u32,
}

/// Materializes what `work` names at once and then every [`ROLLUP_INTERVAL`], on its own
/// connection (the TimescaleDB backfill once, retried until it succeeds). Ends when the sink
/// drops its sender, or when nothing periodic is left.
fn rollup_loop(
    config: tokio_postgres::Config,
    mode: SslMode,
    table: String,
    mut work: RollupWork,
    stats: Arc<Mutex<RollupStats>>,
    stop: mpsc::Receiver<()>,
) {
    let Some(rt) = maintenance_runtime("rollup") else {
        return;
    };
    loop {
        let (backfilled, minutes, top, error) = rt.block_on(async {
            let (mut client, task) = match maintenance_connect(&config, &mode).await {
                Ok(c) => c,
                Err(e) => return (false, None, None, Some(e)),
            };
            let mut error = None;
            let mut backfilled = false;
            if work.backfill {
                match ddl::backfill_continuous_aggregate(&client, &table).await {
                    Ok(()) => backfilled = true,
                    Err(e) => error = Some(error_text(&e)),
                }
            }
            let mut minutes = None;
            if work.minutes {
                match ddl::refresh_rollup(&mut client, &table).await {
                    Ok(to) => minutes = to,
                    Err(e) => error = Some(error_text(&e)),
                }
            }
            let mut top = None;
            if work.top_keys > 0 {
                match ddl::refresh_top(&mut client, &table, work.top_keys).await {
                    Ok(to) => top = to,
                    Err(e) => error = Some(error_text(&e)),
                }
            }
            drop(client);
            let _ = task.await;
            (backfilled, minutes, top, error)
        });
        if backfilled {
            work.backfill = false;
            log::info!(
                "postgres: materialized the history of {}",
                ddl::rollup_name(&table)
            );
        }
        {
            let mut s = lock(&stats);
            s.materialized_to = minutes.or(s.materialized_to);
            s.top_materialized_to = top.or(s.top_materialized_to);
            match error {
                None => {
                    s.runs += 1;
                    s.last_error = None;
                }
                Some(e) => {
                    if s.last_error.as_deref() != Some(e.as_str()) {
                        log::warn!("postgres rollup of {table}: {e}");
                    }
                    s.last_error = Some(e);
                }
            }
        }
        if !(work.backfill || work.minutes || work.top_keys > 0) {
            return;
        }
        match stop.recv_timeout(ROLLUP_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Whether an SQLSTATE names a condition a later retry of the same data may not meet again:
/// connection exceptions (08), transaction rollbacks (40), insufficient resources (53),
/// object-in-use/lock (55), operator intervention incl. admin/crash shutdown (57) and system
/// errors (58). Everything else (data 22, integrity 23, schema/syntax 42, auth 28, ...) is fatal.
pub fn sqlstate_is_retriable(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "55" | "57" | "58"))
}

/// A tokio-postgres error as a [`SinkError`] naming `what` failed.
fn classify(e: &tokio_postgres::Error, what: &str) -> SinkError {
    let text = format!("postgres: {what}: {}", error_text(e));
    match e.code() {
        Some(code) if sqlstate_is_retriable(code.code()) => SinkError::retriable(text),
        Some(_) => SinkError::fatal(text),
        None => {
            // Client-side failures without a server code: I/O and closed connections are
            // retriable; bad configuration or authentication setup is not.
            let kind = e.to_string();
            if kind.starts_with("authentication error")
                || kind.starts_with("invalid configuration")
                || kind.starts_with("invalid connection string")
                || (tls::is_handshake_error(e) && !tls::handshake_is_retriable(e))
            {
                SinkError::fatal(text)
            } else {
                SinkError::retriable(text)
            }
        }
    }
}

/// What to fix after a failed connect, as `"; hint: ..."` (empty when nothing specific is
/// known): the role, the database, the password (and whether SQL_PASSWORD was set at all), the
/// server's address, pg_hba.conf, TLS.
fn connect_hint(cfg: &PgConfig, code: Option<&str>, text: &str) -> String {
    let has_password = cfg.password.is_some();
    let t = text.to_ascii_lowercase();
    let hint = match code {
        Some("28000") if t.contains("pg_hba") => format!(
            "the server's pg_hba.conf has no entry for user {} on database {} from this host \
             (add one, or connect as another user or with another SQL_SSLMODE)",
            cfg.user, cfg.dbname
        ),
        Some("28000") if t.contains("role") => format!(
            "the role {} does not exist on the server: create it (CREATE ROLE {} LOGIN \
             PASSWORD '...') or set SQL_USERNAME to an existing one",
            cfg.user, cfg.user
        ),
        Some("3D000") => format!(
            "the database {} does not exist: create it (CREATE DATABASE {} OWNER {}) or set \
             SQL_DB to an existing one",
            cfg.dbname, cfg.dbname, cfg.user
        ),
        Some("28P01") if has_password => format!(
            "the server refused the password for {}: check SQL_PASSWORD (the environment \
             variable wins over the file's key)",
            cfg.user
        ),
        Some("28P01") => format!(
            "the server wants a password for {} and none was given: SQL_PASSWORD is not set \
             (neither in the environment nor in the file)",
            cfg.user
        ),
        Some("42501") => format!(
            "the role {} lacks a privilege it needs (CONNECT on database {}, CREATE on the \
             table's schema, or INSERT on table {})",
            cfg.user, cfg.dbname, cfg.table
        ),
        _ if t.contains("password missing") => format!(
            "the server asks for a password for {} and none was given: SQL_PASSWORD is not set",
            cfg.user
        ),
        _ if t.contains("does not support tls") => "the server offers no TLS: set \
            SQL_SSLMODE: prefer (or disable), or enable ssl on the server"
            .to_owned(),
        _ if t.contains("tls") || t.contains("certificate") => "TLS failed: check \
            SQL_SSLMODE and, for verify-full, SQL_SSLROOTCERT and the server's host name"
            .to_owned(),
        _ if t.contains("connection refused") => format!(
            "nothing accepts connections at {}:{}: is PostgreSQL running there (its \
             listen_addresses and port), and are SQL_SERVER/SQL_PORT right?",
            cfg.host, cfg.port
        ),
        _ if t.contains("timed out") => format!(
            "no answer from {}:{}: a firewall, a wrong address (SQL_SERVER), or the server is \
             down",
            cfg.host, cfg.port
        ),
        _ if t.contains("failed to lookup") || t.contains("name or service not known") => {
            format!("the host name {} does not resolve (SQL_SERVER)", cfg.host)
        }
        _ => return String::new(),
    };
    format!("; hint: {hint}")
}

/// The server's message with its code, detail, hint and context, or the client error chain.
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(column) = db.column() {
            s.push_str(&format!(" (column {column})"));
        }
        for extra in [db.detail(), db.hint(), db.where_()].into_iter().flatten() {
            s.push_str("; ");
            s.push_str(extra);
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn json_time(us: i64) -> String {
    let mut v = Vec::with_capacity(32);
    v.push(b'"');
    write_rfc3339(us, &mut v);
    v.push(b'"');
    String::from_utf8_lossy(&v).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_hints_say_what_to_fix() {
        let cfg = PgConfig {
            user: "flows".into(),
            dbname: "netflow".into(),
            ..PgConfig::default()
        };
        let h = connect_hint(
            &cfg,
            Some("28000"),
            "FATAL 28000: role \"flows\" does not exist",
        );
        assert!(h.contains("CREATE ROLE flows LOGIN"), "{h}");
        let h = connect_hint(&cfg, Some("3D000"), "database \"netflow\" does not exist");
        assert!(h.contains("CREATE DATABASE netflow OWNER flows"), "{h}");
        let h = connect_hint(&cfg, Some("28P01"), "password authentication failed");
        assert!(h.contains("SQL_PASSWORD is not set"), "{h}");
        let with_pw = PgConfig {
            password: Some("x".into()),
            ..cfg.clone()
        };
        let h = connect_hint(&with_pw, Some("28P01"), "password authentication failed");
        assert!(h.contains("check SQL_PASSWORD"), "{h}");
        let h = connect_hint(&cfg, None, "invalid configuration: password missing");
        assert!(h.contains("SQL_PASSWORD is not set"), "{h}");
        let h = connect_hint(&cfg, Some("28000"), "no pg_hba.conf entry for host");
        assert!(h.contains("pg_hba.conf"), "{h}");
        let h = connect_hint(&cfg, None, "error connecting to server: Connection refused");
        assert!(h.contains("127.0.0.1:5432"), "{h}");
        let h = connect_hint(&cfg, None, "server does not support TLS");
        assert!(h.contains("SQL_SSLMODE: prefer"), "{h}");
        assert_eq!(connect_hint(&cfg, Some("22P02"), "bad input"), "");
    }

    #[test]
    fn sqlstates() {
        for code in ["08006", "57P01", "57P03", "53300", "40001", "55P03"] {
            assert!(sqlstate_is_retriable(code), "{code}");
        }
        for code in ["42804", "22P03", "42703", "23502", "28P01", "3D000", ""] {
            assert!(!sqlstate_is_retriable(code), "{code}");
        }
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_time(0), "\"1970-01-01T00:00:00.000000Z\"");
    }

    #[test]
    fn status_before_connecting_has_no_password() {
        let mut sink = PgSink::new(PgConfig {
            password: Some("s3cret".into()),
            max_age_days: Some(3),
            ..PgConfig::default()
        });
        let status = sink.status();
        assert!(status.iter().all(|(_, v)| !v.contains("s3cret")));
        let get = |k: &str| status.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("rows_written").as_deref(), Some("0"));
        assert_eq!(get("connected").as_deref(), Some("false"));
        assert_eq!(get("retention_max_age_days").as_deref(), Some("3"));
        assert_eq!(get("table").as_deref(), Some("\"goflow_records\""));
    }

    /// The lanes of one backend share one stats block: each reports the backend's totals and
    /// how many connections it runs; only lane 0 would run retention.
    #[test]
    fn lanes_share_their_status() {
        let mut lanes = PgSink::lanes(PgConfig::default(), 3);
        assert_eq!(lanes.len(), 3);
        assert_eq!(PgSink::lanes(PgConfig::default(), 0).len(), 1);
        let _ = lanes[1].note(SinkError::retriable("lane 1 lost its connection"));
        for (i, sink) in lanes.iter_mut().enumerate() {
            assert_eq!(sink.lane_index(), i);
            let status = sink.status();
            let get = |k: &str| status.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            assert_eq!(get("connections").as_deref(), Some("3"));
            assert_eq!(get("sessions").as_deref(), Some("0"));
            assert_eq!(get("tls").as_deref(), Some("null"));
            assert_eq!(get("errors").as_deref(), Some("1"), "lane {i}");
            assert!(get("last_error").is_some_and(|e| e.contains("lane 1")));
        }
        let single = PgSink::new(PgConfig::default()).status();
        assert!(single.contains(&("connections", "1".to_string())));
    }
}
