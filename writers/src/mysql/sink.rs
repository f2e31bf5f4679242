//! [`MysqlSink`]: ships LOAD DATA lines over one mysql_async connection, on a current-thread
//! tokio runtime the sink owns (the backend thread calls in and blocks). `write` only keeps the
//! chunk (its `Bytes`, no copy); `flush` puts the rows in `last_switched` order (one copy, see
//! [`order`]) and is one transaction: `START TRANSACTION`, one
//! `LOAD DATA LOCAL INFILE` whose file is the flush's rows streamed from memory through the
//! connection's infile handler (cut into pieces below the server's `max_allowed_packet`), the
//! positions upsert, `COMMIT`. Nothing touches disk.
//!
//! LOAD DATA LOCAL turns data errors into warnings and keeps going (the server cannot stop the
//! client mid-file), so every LOAD is checked: the affected rows must equal the rows sent and
//! the warning count must be 0. Otherwise the transaction is rolled back, the first warnings
//! are logged and the flush fails as fatal (the same rows would fail the same way): never a
//! silent partial load.
//!
//! It connects lazily (TCP, plain or TLS as `sslmode` says, or the Unix socket `SQL_SOCKET`)
//! and again after any connection error (the backend's retry paces it), sets the session to
//! UTC and a known sql_mode, reads `local_infile` and `max_allowed_packet` (a server with
//! local_infile OFF is a fatal error that says what to change), and sets the table up on the
//! first connect. Errors are classified: lost connections, lock timeouts, deadlocks and server
//! shutdown are retriable; access denied, unknown database, data and schema errors are fatal
//! and name the config key to fix.
//!
//! [`MysqlSink::lanes`] makes the sinks of one backend's lanes (`connections`): each has its
//! own connection and LOAD, sharing one stats block; only lane 0 runs retention. Positions (see
//! `sink.rs`) are upserted into `<table>_positions` in the flush's transaction.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};
use tokio::runtime::Runtime;

use super::ddl::{self, SchemaError};
use super::{MysqlConfig, SslMode};
use super::{encode, order};
use crate::json::{json_string, write_rfc3339};
use crate::sink::{Chunk, PositionSet, Sink, SinkError};

/// Largest piece of the LOAD stream, whatever the server allows.
pub const LOAD_PIECE_BYTES_MAX: usize = 1 << 20;
/// Headroom below `max_allowed_packet` for a piece (the packet header and then some).
const PACKET_HEADROOM_BYTES: usize = 4096;
/// TCP connect plus handshake and session setup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole flush (LOAD, positions, COMMIT); a server that takes longer is treated as gone.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// Table creation and migration (an ALTER of a big old table copies it).
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(3600);
/// Status and position queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Table size is refreshed at most this often.
const STATUS_REFRESH: Duration = Duration::from_secs(5);
/// Retention runs this often after the first run at start.
const RETENTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// A failed retention run is tried again after this long.
const RETENTION_RETRY: Duration = Duration::from_secs(300);
/// Warnings shown with a failed LOAD.
const WARNINGS_SHOWN: usize = 5;
/// Session settings: UTC (DATETIME values are written as UTC), and a sql_mode without
/// NO_BACKSLASH_ESCAPES (the statements use backslash escapes) whatever the server's default.
const SESSION_SETUP: &str =
    "SET SESSION time_zone = '+00:00', sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'";

/// One lane's connection as last seen.
#[derive(Clone, Copy, Debug, Default)]
struct LaneState {
    connected: bool,
    encrypted: bool,
}

/// Counters and last events of all lanes of one backend, for [`Sink::status`].
#[derive(Debug, Default)]
struct Stats {
    lanes: Vec<LaneState>,
    server_version: Option<String>,
    partitioned: bool,
    max_allowed_packet: Option<u64>,
    rows_written: u64,
    loads: u64,
    last_flush_us: Option<i64>,
    last_flush_ms: f64,
    connects: u64,
    reconnects: u64,
    connect_failures: u64,
    errors: u64,
    last_error: Option<(i64, String)>,
    rejected_loads: u64,
    table_bytes: Option<i64>,
    estimated_rows: Option<i64>,
    refreshed: Option<Instant>,
}

impl Stats {
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
    partitions_dropped: u64,
    rows_deleted: u64,
    last_error: Option<String>,
}

/// The table as set up: the LOAD statement for its layout.
#[derive(Debug)]
struct Table {
    load_sql: String,
    partitioned: bool,
}

/// The MySQL / MariaDB sink. See the module docs.
pub struct MysqlSink {
    cfg: MysqlConfig,
    lane: usize,
    connected_before: bool,
    rt: Option<Runtime>,
    conn: Option<Conn>,
    encrypted: bool,
    /// Largest piece of the LOAD stream for this connection's server.
    piece_max: usize,
    table: Option<Table>,
    /// Chunks of the current flush, in order (one buffer once sorted).
    pending: Vec<Bytes>,
    pending_rows: u64,
    positions: PositionSet,
    schema_rechecked: bool,
    stats: Arc<Mutex<Stats>>,
    retention: Arc<Mutex<RetentionStats>>,
    retention_stop: Option<mpsc::Sender<()>>,
}

impl std::fmt::Debug for MysqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSink")
            .field("cfg", &self.cfg)
            .field("lane", &self.lane)
            .field("connected", &self.conn.is_some())
            .field("pending_rows", &self.pending_rows)
            .finish_non_exhaustive()
    }
}

/// Why a connection attempt failed.
enum ConnectFailure {
    Db(mysql_async::Error),
    /// Set-up that no retry changes (the root certificate file, local_infile OFF).
    Fatal(String),
    Timeout,
}

impl MysqlSink {
    /// A sink for `cfg` (a backend with one lane). Does not connect yet.
    pub fn new(cfg: MysqlConfig) -> MysqlSink {
        MysqlSink::lane(cfg, 0, &Stats::shared(1), &Arc::default())
    }

    /// The sinks of a backend with `n` lanes (at least one), one connection each, sharing
    /// stats and retention (run by lane 0).
    pub fn lanes(cfg: MysqlConfig, n: usize) -> Vec<MysqlSink> {
        let n = n.max(1);
        let stats = Stats::shared(n);
        let retention: Arc<Mutex<RetentionStats>> = Arc::default();
        (0..n)
            .map(|lane| MysqlSink::lane(cfg.clone(), lane, &stats, &retention))
            .collect()
    }

    fn lane(
        cfg: MysqlConfig,
        lane: usize,
        stats: &Arc<Mutex<Stats>>,
        retention: &Arc<Mutex<RetentionStats>>,
    ) -> MysqlSink {
        MysqlSink {
            cfg,
            lane,
            connected_before: false,
            rt: None,
            conn: None,
            encrypted: false,
            piece_max: LOAD_PIECE_BYTES_MAX,
            table: None,
            pending: Vec::new(),
            pending_rows: 0,
            positions: PositionSet::default(),
            schema_rechecked: false,
            stats: Arc::clone(stats),
            retention: Arc::clone(retention),
            retention_stop: None,
        }
    }

    /// Rows the server confirmed (all lanes).
    pub fn rows_written(&self) -> u64 {
        lock(&self.stats).rows_written
    }

    /// LOADs committed (all lanes).
    pub fn loads(&self) -> u64 {
        lock(&self.stats).loads
    }

    /// Successful connects after each lane's first (all lanes).
    pub fn reconnects(&self) -> u64 {
        lock(&self.stats).reconnects
    }

    /// Retention runs finished so far.
    pub fn retention_runs(&self) -> u64 {
        lock(&self.retention).runs
    }

    /// Whether the table is partitioned by day (known after the first connect).
    pub fn partitioned(&self) -> bool {
        self.table.as_ref().is_some_and(|t| t.partitioned)
    }

    /// Connects now (and sets up the table and retention on the first connect). A no-op while
    /// connected.
    pub fn connect(&mut self) -> Result<(), SinkError> {
        self.ensure_session().map_err(|e| self.note(e))
    }

    fn runtime(&mut self) -> Result<&Runtime, SinkError> {
        if self.rt.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SinkError::retriable(format!("mysql: tokio runtime: {e}")))?;
            self.rt = Some(rt);
        }
        self.rt
            .as_ref()
            .ok_or_else(|| SinkError::retriable("mysql: no runtime"))
    }

    fn ensure_session(&mut self) -> Result<(), SinkError> {
        if self.conn.is_some() {
            return self.ensure_table();
        }
        let cfg = self.cfg.clone();
        let server = cfg.server();
        let rt = self.runtime()?;
        let connected = rt.block_on(async {
            tokio::time::timeout(CONNECT_TIMEOUT, open(&cfg))
                .await
                .unwrap_or(Err(ConnectFailure::Timeout))
        });
        let session = match connected {
            Ok(s) => s,
            Err(f) => {
                lock(&self.stats).connect_failures += 1;
                return Err(match f {
                    ConnectFailure::Fatal(msg) => {
                        SinkError::fatal(format!("mysql: connect to {server}: {msg}"))
                    }
                    ConnectFailure::Timeout => SinkError::retriable(format!(
                        "mysql: connect to {server}: timed out after {} s",
                        CONNECT_TIMEOUT.as_secs()
                    )),
                    ConnectFailure::Db(e) => classify(&e, &format!("connect to {server}"), &cfg),
                });
            }
        };
        self.piece_max = piece_len(session.max_allowed_packet);
        self.encrypted = session.encrypted;
        self.conn = Some(session.conn);
        let lanes = {
            let mut s = lock(&self.stats);
            s.connects += 1;
            if self.connected_before {
                s.reconnects += 1;
            }
            s.server_version = Some(session.version.clone());
            s.max_allowed_packet = Some(session.max_allowed_packet);
            if let Some(l) = s.lanes.get_mut(self.lane) {
                *l = LaneState {
                    connected: true,
                    encrypted: session.encrypted,
                };
            }
            s.lanes.len()
        };
        let over = match (&cfg.socket, session.encrypted) {
            (Some(_), _) => "the Unix socket",
            (None, true) => "TLS",
            (None, false) => "plain TCP",
        };
        let which = if lanes > 1 {
            format!(" (connection {} of {lanes})", self.lane + 1)
        } else {
            String::new()
        };
        if self.connected_before {
            log::info!("mysql: reconnected to {server} over {over}{which}");
        } else {
            log::info!(
                "mysql: connected to {server} ({}) over {over} (sslmode {}), table {}, \
                 max_allowed_packet {}{which}",
                session.version,
                cfg.sslmode.as_str(),
                cfg.table,
                session.max_allowed_packet
            );
        }
        self.connected_before = true;
        self.ensure_table()
    }

    fn ensure_table(&mut self) -> Result<(), SinkError> {
        if self.table.is_some() {
            return Ok(());
        }
        let table = self.cfg.table.clone();
        let db = self.cfg.dbname.clone();
        let partition_today = self
            .cfg
            .max_age_days
            .filter(|d| *d > 0)
            .map(|_| now_us().div_euclid(86_400_000_000));
        let (Some(rt), Some(conn)) = (&self.rt, self.conn.as_mut()) else {
            return Err(SinkError::retriable("mysql: not connected"));
        };
        let result = rt.block_on(async {
            tokio::time::timeout(
                SCHEMA_TIMEOUT,
                ddl::ensure_schema(conn, &db, &table, partition_today, self.cfg.columns),
            )
            .await
        });
        let report = match result {
            Ok(Ok(report)) => report,
            Ok(Err(SchemaError::Incompatible(msg))) => {
                return Err(SinkError::fatal(format!("mysql: {msg}")));
            }
            Ok(Err(SchemaError::Db(e))) => {
                let err = classify(&e, &format!("schema setup of table {table}"), &self.cfg);
                if err.is_retriable() || e.is_fatal() {
                    self.drop_session();
                }
                return Err(err);
            }
            Err(_) => {
                self.drop_session();
                return Err(SinkError::retriable(format!(
                    "mysql: schema setup of table {table}: timed out"
                )));
            }
        };
        if report.created {
            let how = if report.partitioned {
                "partitioned by day on last_switched"
            } else {
                "not partitioned"
            };
            log::info!("mysql: created table {table} ({how})");
        }
        if !report.added.is_empty() {
            log::info!(
                "mysql: added columns to table {table}: {}",
                report.added.join(", ")
            );
        }
        if !report.widened.is_empty() {
            log::info!(
                "mysql: widened columns of table {table}: {}",
                report.widened.join(", ")
            );
        }
        if report.layout.has_int_addresses() {
            log::info!(
                "mysql: table {table} keeps IPv4 addresses as INT UNSIGNED (the old collector's \
                 layout); IPv6 goes to its *_ipv6 columns"
            );
        }
        lock(&self.stats).partitioned = report.partitioned;
        self.table = Some(Table {
            load_sql: ddl::load_statement_for(&table, &report.layout, self.cfg.columns),
            partitioned: report.partitioned,
        });
        self.start_retention();
        Ok(())
    }

    fn start_retention(&mut self) {
        let Some(days) = self.cfg.max_age_days.filter(|d| *d > 0) else {
            return;
        };
        if self.lane != 0 || self.retention_stop.is_some() {
            return;
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let cfg = self.cfg.clone();
        let stats = Arc::clone(&self.retention);
        let spawned = thread::Builder::new()
            .name("goflow-mysql-retention".into())
            .spawn(move || retention_loop(cfg, days, stats, stop_rx));
        match spawned {
            Ok(_) => self.retention_stop = Some(stop_tx),
            Err(e) => log::error!("mysql: cannot start the retention thread: {e}"),
        }
    }

    fn drop_session(&mut self) {
        if self.conn.take().is_some()
            && let Some(l) = lock(&self.stats).lanes.get_mut(self.lane)
        {
            l.connected = false;
        }
    }

    /// Puts the flush's rows in `last_switched` order (see [`order`]). A failed flush's rows are
    /// written again after `abort`, so each attempt sorts what it holds.
    fn sort_pending(&mut self) {
        if let Some(field) = order::time_field(self.cfg.columns)
            && let Some(sorted) = order::sorted_by_field(&self.pending, field)
        {
            self.pending = vec![sorted];
        }
    }

    /// The flush's chunks as pieces no larger than the connection allows.
    fn pieces(&self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(self.pending.len());
        for rows in &self.pending {
            let mut at = 0;
            while at < rows.len() {
                let end = (at + self.piece_max).min(rows.len());
                out.push(rows.slice(at..end));
                at = end;
            }
        }
        out
    }

    fn flush_inner(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() && self.positions.is_empty() {
            return Ok(());
        }
        self.ensure_session()?;
        let started = Instant::now();
        self.sort_pending();
        let pieces = self.pieces();
        let rows = self.pending_rows;
        let positions: Vec<(String, u64)> = self.positions.entries().to_vec();
        let table = self.cfg.table.clone();
        let (Some(rt), Some(conn), Some(t)) = (&self.rt, self.conn.as_mut(), &self.table) else {
            return Err(SinkError::retriable("mysql: not connected"));
        };
        let load_sql = t.load_sql.as_str();
        let done = rt.block_on(async {
            tokio::time::timeout(
                FLUSH_TIMEOUT,
                load_transaction(conn, load_sql, pieces, rows, &table, &positions),
            )
            .await
        });
        match done {
            Ok(Ok(())) => {}
            Ok(Err(LoadError::Db(e))) => return Err(self.db_error(&e, "LOAD DATA")),
            Ok(Err(LoadError::Rejected(msg))) => {
                lock(&self.stats).rejected_loads += 1;
                return Err(SinkError::fatal(format!(
                    "mysql: LOAD DATA into table {table}: {msg}; the flush was rolled back"
                )));
            }
            Err(_) => {
                self.drop_session();
                return Err(SinkError::retriable(format!(
                    "mysql: LOAD DATA into table {table}: no answer for {} s, connection dropped",
                    FLUSH_TIMEOUT.as_secs()
                )));
            }
        }
        self.schema_rechecked = false;
        {
            let mut s = lock(&self.stats);
            s.rows_written += rows;
            if rows > 0 {
                s.loads += 1;
            }
            s.last_flush_us = Some(now_us());
            s.last_flush_ms = started.elapsed().as_secs_f64() * 1e3;
        }
        self.pending.clear();
        self.pending_rows = 0;
        self.positions.clear();
        self.refresh_table_stats();
        Ok(())
    }

    /// Classifies an error of a flush; drops the connection when a retry needs a new one, and
    /// re-checks the table once when a column or the table went missing.
    fn db_error(&mut self, e: &mysql_async::Error, what: &str) -> SinkError {
        let table = self.cfg.table.clone();
        let mut err = classify(e, &format!("{what} into table {table}"), &self.cfg);
        if let mysql_async::Error::Server(s) = e
            && matches!(s.code, 1054 | 1146)
            && !self.schema_rechecked
        {
            // A column or the table was dropped under us: set it up again and retry once.
            self.schema_rechecked = true;
            self.table = None;
            err = SinkError::retriable(format!("{err}; re-checking the table's columns"));
        }
        if err.is_retriable() || e.is_fatal() {
            self.drop_session();
        }
        err
    }

    fn note(&mut self, e: SinkError) -> SinkError {
        let mut s = lock(&self.stats);
        s.errors += 1;
        s.last_error = Some((now_us(), e.to_string()));
        drop(s);
        e
    }

    fn committed_positions_inner(&mut self, prefix: &str) -> Result<Vec<(String, u64)>, SinkError> {
        self.ensure_session()?;
        let sql = ddl::select_positions(&self.cfg.table);
        let (Some(rt), Some(conn)) = (&self.rt, self.conn.as_mut()) else {
            return Err(SinkError::retriable("mysql: not connected"));
        };
        let got = rt.block_on(async {
            tokio::time::timeout(
                QUERY_TIMEOUT,
                conn.exec::<(String, u64), _, _>(sql, (prefix, prefix)),
            )
            .await
        });
        match got {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(self.db_error(&e, "reading positions")),
            Err(_) => {
                self.drop_session();
                Err(SinkError::retriable(
                    "mysql: reading positions: timed out, connection dropped",
                ))
            }
        }
    }

    /// Table size and row estimate, at most once per [`STATUS_REFRESH`] across lanes.
    fn refresh_table_stats(&mut self) {
        if self.table.is_none() {
            return;
        }
        {
            let mut s = lock(&self.stats);
            if s.refreshed.is_some_and(|t| t.elapsed() < STATUS_REFRESH) {
                return;
            }
            s.refreshed = Some(Instant::now());
        }
        let table = self.cfg.table.clone();
        let (Some(rt), Some(conn)) = (&self.rt, self.conn.as_mut()) else {
            return;
        };
        let got = rt.block_on(async {
            tokio::time::timeout(
                QUERY_TIMEOUT,
                conn.exec_first::<(Option<i64>, Option<i64>), _, _>(
                    "SELECT CAST(DATA_LENGTH + INDEX_LENGTH AS SIGNED), CAST(TABLE_ROWS AS SIGNED) \
                     FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
                     AND TABLE_NAME = ?",
                    (table.as_str(),),
                ),
            )
            .await
        });
        match got {
            Ok(Ok(Some((bytes, rows)))) => {
                let mut s = lock(&self.stats);
                s.table_bytes = bytes;
                s.estimated_rows = rows;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                log::debug!("mysql: status query: {e}");
                if e.is_fatal() {
                    self.drop_session();
                }
            }
            Err(_) => self.drop_session(),
        }
    }
}

/// A LOAD's failure: the server's or the driver's error, or the checks of what it reported.
enum LoadError {
    Db(mysql_async::Error),
    Rejected(String),
}

impl From<mysql_async::Error> for LoadError {
    fn from(e: mysql_async::Error) -> Self {
        LoadError::Db(e)
    }
}

/// One flush: the LOAD of `pieces` (`rows` rows) and the positions, in one transaction. Any
/// failure after `START TRANSACTION` rolls it back (a later `START TRANSACTION` would otherwise
/// commit what a failed flush left open).
async fn load_transaction(
    conn: &mut Conn,
    load_sql: &str,
    pieces: Vec<Bytes>,
    rows: u64,
    table: &str,
    positions: &[(String, u64)],
) -> Result<(), LoadError> {
    conn.query_drop("START TRANSACTION").await?;
    let result = load_and_commit(conn, load_sql, pieces, rows, table, positions).await;
    if result.is_err() {
        rollback(conn).await;
    }
    result
}

async fn load_and_commit(
    conn: &mut Conn,
    load_sql: &str,
    pieces: Vec<Bytes>,
    rows: u64,
    table: &str,
    positions: &[(String, u64)],
) -> Result<(), LoadError> {
    if !pieces.is_empty() {
        conn.set_infile_handler(async move {
            Ok(futures_util::stream::iter(pieces.into_iter().map(Ok)).boxed())
        });
        conn.query_drop(load_sql).await?;
        let affected = conn.affected_rows();
        let warnings = conn.get_warnings();
        if warnings > 0 || affected != rows {
            let shown = show_warnings(conn).await;
            let mut msg =
                format!("the server stored {affected} of {rows} rows with {warnings} warnings");
            if !shown.is_empty() {
                msg.push_str(" (first: ");
                msg.push_str(&shown.join("; "));
                msg.push(')');
            }
            return Err(LoadError::Rejected(msg));
        }
    }
    if !positions.is_empty() {
        let sql = ddl::upsert_positions(table, positions.len());
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(positions.len() * 2);
        for (name, next) in positions {
            params.push(name.as_str().into());
            params.push((*next).into());
        }
        conn.exec_drop(sql, params).await?;
    }
    conn.query_drop("COMMIT").await?;
    Ok(())
}

async fn rollback(conn: &mut Conn) {
    if let Err(e) = conn.query_drop("ROLLBACK").await {
        log::debug!("mysql: ROLLBACK: {e}");
    }
}

/// The first warnings of the last statement, as `Level code: message`.
async fn show_warnings(conn: &mut Conn) -> Vec<String> {
    let sql = format!("SHOW WARNINGS LIMIT {WARNINGS_SHOWN}");
    match conn.query::<(String, u32, String), _>(sql).await {
        Ok(rows) => rows
            .into_iter()
            .map(|(level, code, msg)| format!("{level} {code}: {msg}"))
            .collect(),
        Err(e) => vec![format!("SHOW WARNINGS failed: {e}")],
    }
}

/// A new connection with its session set up and the server checked.
struct Session {
    conn: Conn,
    encrypted: bool,
    version: String,
    max_allowed_packet: u64,
}

fn opts(cfg: &MysqlConfig, tls: Option<SslOpts>) -> Opts {
    let mut b = OptsBuilder::default()
        .user(Some(cfg.user.clone()))
        .pass(cfg.password.clone())
        .db_name(Some(cfg.dbname.clone()))
        // Never switch a TCP connection to the server's socket behind our back (mysql_async
        // does by default on localhost): the configured path is the one used.
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .stmt_cache_size(16)
        .init(vec![SESSION_SETUP]);
    b = match &cfg.socket {
        Some(path) => b.socket(Some(path.display().to_string())),
        None => b
            .ip_or_hostname(cfg.host.clone())
            .tcp_port(cfg.port)
            .ssl_opts(tls),
    };
    Opts::from(b)
}

/// TLS options for `mode` (`None`: plain).
fn ssl_opts(mode: &SslMode) -> Result<Option<SslOpts>, String> {
    Ok(match mode {
        SslMode::Disable => None,
        SslMode::Prefer | SslMode::Require => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        SslMode::VerifyFull { root_cert } => {
            let pem = std::fs::read(root_cert)
                .map_err(|e| format!("SQL_SSLROOTCERT {}: {e}", root_cert.display()))?;
            if !pem.windows(17).any(|w| w == b"BEGIN CERTIFICATE") {
                return Err(format!(
                    "SQL_SSLROOTCERT {}: no PEM certificate (BEGIN CERTIFICATE) in it",
                    root_cert.display()
                ));
            }
            Some(
                SslOpts::default()
                    .with_root_certs(vec![pem.into()])
                    .with_disable_built_in_roots(true),
            )
        }
    })
}

/// Connects as `cfg` says (for `prefer`, falling back to plain TCP when the server has no TLS
/// or the handshake fails) and checks the server.
async fn open(cfg: &MysqlConfig) -> Result<Session, ConnectFailure> {
    let tls = if cfg.socket.is_some() {
        None
    } else {
        ssl_opts(&cfg.sslmode).map_err(ConnectFailure::Fatal)?
    };
    let encrypted = tls.is_some();
    let (mut conn, encrypted) = match Conn::new(opts(cfg, tls)).await {
        Ok(conn) => (conn, encrypted),
        Err(e) if cfg.sslmode == SslMode::Prefer && encrypted && is_tls_failure(&e) => {
            log::warn!("mysql: TLS failed ({e}); sslmode=prefer, so trying without");
            let conn = Conn::new(opts(cfg, None))
                .await
                .map_err(ConnectFailure::Db)?;
            (conn, false)
        }
        Err(e) => return Err(ConnectFailure::Db(e)),
    };
    let row: Option<(String, u64, u64)> = conn
        .query_first("SELECT VERSION(), @@local_infile, @@max_allowed_packet")
        .await
        .map_err(ConnectFailure::Db)?;
    let Some((version, local_infile, max_allowed_packet)) = row else {
        return Err(ConnectFailure::Fatal(
            "the server did not answer SELECT VERSION()".into(),
        ));
    };
    if local_infile == 0 {
        return Err(ConnectFailure::Fatal(local_infile_off_message()));
    }
    Ok(Session {
        conn,
        encrypted,
        version,
        max_allowed_packet,
    })
}

/// What to change when the server refuses LOAD DATA LOCAL.
pub fn local_infile_off_message() -> String {
    "the server's local_infile is OFF, so it refuses LOAD DATA LOCAL INFILE (goflow's only way \
     to write): run SET GLOBAL local_infile = ON as an admin and add local_infile = ON under \
     [mysqld] in the server's configuration to keep it after a restart (Amazon RDS / Aurora: \
     set local_infile to 1 in the DB parameter group)"
        .into()
}

/// Whether a connect error came from TLS (no TLS on the server, or a failed handshake).
fn is_tls_failure(e: &mysql_async::Error) -> bool {
    matches!(
        e,
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
            | mysql_async::Error::Io(mysql_async::IoError::Tls(_))
    )
}

/// Pieces of the LOAD stream for a server with this `max_allowed_packet`.
fn piece_len(max_allowed_packet: u64) -> usize {
    let allowed = usize::try_from(max_allowed_packet).unwrap_or(usize::MAX);
    allowed
        .saturating_sub(PACKET_HEADROOM_BYTES)
        .clamp(1024, LOAD_PIECE_BYTES_MAX)
}

/// Server error codes a later retry of the same data may not meet again: lock wait timeout,
/// deadlock, too many connections, server shutdown / gone / lost, query interrupted or killed,
/// read-only (a failover in progress), out of memory or disk.
pub fn server_code_is_retriable(code: u16) -> bool {
    matches!(
        code,
        1205 | 1213 | 1040 | 1053 | 1077 | 1079 | 1080 | 1152 | 1153 | 1158
            ..=1161
                | 1184
                | 1203
                | 1290
                | 1317
                | 1836
                | 1927
                | 1037
                | 1038
                | 1041
                | 1021
                | 1030
                | 2006
                | 2013
                | 4031
    )
}

/// A mysql_async error as a [`SinkError`] naming what failed and, for the usual set-up
/// mistakes, the config key to fix.
fn classify(e: &mysql_async::Error, what: &str, cfg: &MysqlConfig) -> SinkError {
    use mysql_async::Error;
    match e {
        Error::Server(s) => {
            let hint = match s.code {
                1045 | 1698 if cfg.password.is_none() => format!(
                    "; check SQL_USERNAME ({}); no password was given: SQL_PASSWORD is not set \
                     (neither in the environment nor in the file)",
                    cfg.user
                ),
                1045 | 1698 => format!(
                    "; check SQL_USERNAME ({}) and the password (SQL_PASSWORD; the environment \
                     variable wins over the file's key)",
                    cfg.user
                ),
                1044 => format!(
                    "; grant user {} access to database {} or fix SQL_DB",
                    cfg.user, cfg.dbname
                ),
                1049 => format!("; create database {} or fix SQL_DB", cfg.dbname),
                1142 | 1227 => format!(
                    "; user {} lacks a privilege on table {} (needs SELECT, INSERT, DELETE, \
                     CREATE, ALTER, INDEX, DROP)",
                    cfg.user, cfg.table
                ),
                1148 | 3948 => format!("; {}", local_infile_off_message()),
                _ => String::new(),
            };
            let text = format!(
                "mysql: {what}: ERROR {} ({}): {}{hint}",
                s.code, s.state, s.message
            );
            if server_code_is_retriable(s.code) {
                SinkError::retriable(text)
            } else {
                SinkError::fatal(text)
            }
        }
        Error::Url(_) => SinkError::fatal(format!("mysql: {what}: {e}")),
        Error::Io(mysql_async::IoError::Tls(_)) => SinkError::fatal(format!(
            "mysql: {what}: {e} (SQL_SSLMODE {}; check SQL_SSLROOTCERT and the server's \
             certificate)",
            cfg.sslmode.as_str()
        )),
        Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            SinkError::fatal(format!(
                "mysql: {what}: the server does not offer TLS but SQL_SSLMODE is {}",
                cfg.sslmode.as_str()
            ))
        }
        Error::Driver(mysql_async::DriverError::UnknownAuthPlugin { .. }) => {
            SinkError::fatal(format!("mysql: {what}: {e}"))
        }
        // Lost connections, refused connects, the driver's view of a closed stream.
        _ => SinkError::retriable(format!("mysql: {what}: {e}")),
    }
}

impl Sink for MysqlSink {
    fn connect(&mut self) -> Result<(), SinkError> {
        MysqlSink::connect(self)
    }

    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
        self.positions.record(chunk);
        if !chunk.rows.is_empty() {
            self.pending.push(chunk.rows.clone());
            self.pending_rows += chunk.count;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_inner().map_err(|e| self.note(e))
    }

    fn abort(&mut self) {
        self.pending.clear();
        self.pending_rows = 0;
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

    fn status(&mut self) -> Vec<(&'static str, String)> {
        self.refresh_table_stats();
        let live = self.conn.is_some();
        let mut s = lock(&self.stats);
        if let Some(l) = s.lanes.get_mut(self.lane) {
            *l = LaneState {
                connected: live,
                encrypted: live && self.encrypted,
            };
        }
        let sessions = s.lanes.iter().filter(|l| l.connected).count();
        let all_encrypted = s.lanes.iter().filter(|l| l.connected).all(|l| l.encrypted);
        let s = &*s;
        let r = lock(&self.retention);
        let opt = |v: Option<i64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
        let time = |v: Option<i64>| v.map_or_else(|| "null".to_string(), json_time);
        let mut out = vec![
            ("server", json_string(&self.cfg.server())),
            (
                "server_version",
                s.server_version
                    .as_deref()
                    .map_or_else(|| "null".to_string(), json_string),
            ),
            ("table", json_string(&self.cfg.table)),
            ("sslmode", json_string(self.cfg.sslmode.as_str())),
            ("connections", s.lanes.len().to_string()),
            ("sessions", sessions.to_string()),
            ("connected", (sessions > 0).to_string()),
            (
                "tls",
                if sessions == 0 {
                    "null".to_string()
                } else {
                    all_encrypted.to_string()
                },
            ),
            ("partitioned", s.partitioned.to_string()),
            (
                "max_allowed_packet",
                s.max_allowed_packet
                    .map_or_else(|| "null".to_string(), |v| v.to_string()),
            ),
            ("table_bytes", opt(s.table_bytes)),
            ("estimated_rows", opt(s.estimated_rows)),
            ("rows_written", s.rows_written.to_string()),
            ("loads", s.loads.to_string()),
            ("last_flush", time(s.last_flush_us)),
            ("last_flush_ms", format!("{:.3}", s.last_flush_ms)),
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
            ("rejected_loads", s.rejected_loads.to_string()),
            (
                "counters_clamped",
                encode::clamped_counters_total().to_string(),
            ),
            ("times_clamped", encode::clamped_times_total().to_string()),
        ];
        if let Some(days) = self.cfg.max_age_days.filter(|d| *d > 0) {
            out.extend([
                ("retention_max_age_days", days.to_string()),
                ("retention_runs", r.runs.to_string()),
                ("retention_last_run", time(r.last_run_us)),
                (
                    "retention_partitions_dropped",
                    r.partitions_dropped.to_string(),
                ),
                ("retention_rows_deleted", r.rows_deleted.to_string()),
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

/// Prunes at start and then every [`RETENTION_INTERVAL`] on its own connection, so a long
/// DELETE never holds up the LOADs. Ends when the sink drops its sender.
fn retention_loop(
    cfg: MysqlConfig,
    days: u32,
    stats: Arc<Mutex<RetentionStats>>,
    stop: mpsc::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("mysql retention: tokio runtime: {e}");
            return;
        }
    };
    let table = cfg.table.clone();
    loop {
        let result: Result<(u64, u64), String> = rt.block_on(async {
            let mut session = tokio::time::timeout(CONNECT_TIMEOUT, open(&cfg))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|f| match f {
                    ConnectFailure::Db(e) => e.to_string(),
                    ConnectFailure::Fatal(m) => m,
                    ConnectFailure::Timeout => "connect timed out".to_string(),
                })?;
            let pruned = ddl::prune(&mut session.conn, &table, days, now_us())
                .await
                .map_err(|e| e.to_string());
            let _ = session.conn.disconnect().await;
            pruned
        });
        let wait = {
            let mut s = lock(&stats);
            s.runs += 1;
            s.last_run_us = Some(now_us());
            match result {
                Ok((parts, rows)) => {
                    s.partitions_dropped += parts;
                    s.rows_deleted += rows;
                    s.last_error = None;
                    log::info!(
                        "mysql retention: dropped {parts} day partitions and deleted {rows} rows \
                         older than {days} days from {table}"
                    );
                    RETENTION_INTERVAL
                }
                Err(e) => {
                    log::warn!("mysql retention on {table}: {e}");
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

/// Connects once with `cfg`, checks the server (local_infile, credentials, database) and
/// disconnects: the start-up check. `Ok` names the server and version.
pub fn check(cfg: &MysqlConfig) -> Result<String, SinkError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SinkError::retriable(format!("mysql: tokio runtime: {e}")))?;
    let server = cfg.server();
    rt.block_on(async {
        match tokio::time::timeout(CONNECT_TIMEOUT, open(cfg)).await {
            Ok(Ok(s)) => {
                let _ = s.conn.disconnect().await;
                Ok(format!("{server} ({})", s.version))
            }
            Ok(Err(ConnectFailure::Db(e))) => {
                Err(classify(&e, &format!("connect to {server}"), cfg))
            }
            Ok(Err(ConnectFailure::Fatal(m))) => {
                Err(SinkError::fatal(format!("mysql: connect to {server}: {m}")))
            }
            Ok(Err(ConnectFailure::Timeout)) | Err(_) => Err(SinkError::retriable(format!(
                "mysql: connect to {server}: timed out after {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    })
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
    fn server_codes() {
        for code in [1205, 1213, 1040, 1053, 2013, 1927] {
            assert!(server_code_is_retriable(code), "{code}");
        }
        for code in [1045, 1049, 1044, 1054, 1146, 1148, 1366] {
            assert!(!server_code_is_retriable(code), "{code}");
        }
    }

    #[test]
    fn pieces_stay_below_max_allowed_packet() {
        assert_eq!(piece_len(16 << 20), LOAD_PIECE_BYTES_MAX);
        assert_eq!(piece_len(64 << 10), (64 << 10) - PACKET_HEADROOM_BYTES);
        assert_eq!(piece_len(0), 1024);
        let mut sink = MysqlSink::new(MysqlConfig::default());
        sink.piece_max = 10;
        sink.pending = vec![Bytes::from(vec![b'x'; 25]), Bytes::from_static(b"abc")];
        let lens: Vec<usize> = sink.pieces().iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![10, 10, 5, 3]);
    }

    #[test]
    fn a_flush_is_sorted_by_its_last_switched_field() {
        let two = crate::schema::ColumnSet::parse(&["last_switched", "exporter"]).expect("columns");

        let mut sink = MysqlSink::new(MysqlConfig {
            columns: two,
            ..MysqlConfig::default()
        });
        let late = Bytes::from_static(b"2026-12-04 10:00:01.000000\tx\n");
        let early = Bytes::from_static(b"2026-12-04 10:00:00.000000\ty\n");
        sink.pending = vec![late.clone(), early.clone()];
        sink.sort_pending();
        assert_eq!(
            sink.pending,
            vec![Bytes::from([&early[..], &late[..]].concat())]
        );
        // A retry after abort() starts from the replayed chunks and sorts them again.
        sink.abort();
        sink.pending = vec![late.clone(), early.clone()];
        sink.sort_pending();
        assert_eq!(sink.pending.len(), 1);
        // Sorting a sorted flush again (a retry without abort) keeps it as it is.
        let sorted = sink.pending.clone();
        sink.sort_pending();
        assert_eq!(sink.pending, sorted);
    }

    #[test]
    fn status_before_connecting_has_no_password() {
        let mut sink = MysqlSink::new(MysqlConfig {
            password: Some("s3cret".into()),
            max_age_days: Some(3),
            ..MysqlConfig::default()
        });
        let status = sink.status();
        assert!(status.iter().all(|(_, v)| !v.contains("s3cret")));
        let get = |k: &str| status.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("rows_written").as_deref(), Some("0"));
        assert_eq!(get("connected").as_deref(), Some("false"));
        assert_eq!(get("retention_max_age_days").as_deref(), Some("3"));
    }

    #[test]
    fn access_denied_names_the_keys() {
        let e = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1045,
            message: "Access denied for user 'x'@'localhost' (using password: YES)".into(),
            state: "28000".into(),
        });
        let cfg = MysqlConfig {
            user: "x".into(),
            ..MysqlConfig::default()
        };
        let err = classify(&e, "connect", &cfg);
        assert!(!err.is_retriable());
        let text = err.to_string();
        assert!(
            text.contains("SQL_USERNAME (x)") && text.contains("SQL_PASSWORD"),
            "{text}"
        );
        let e = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1049,
            message: "Unknown database 'nope'".into(),
            state: "42000".into(),
        });
        assert!(classify(&e, "connect", &cfg).to_string().contains("SQL_DB"));
    }
}
