//! Shared helpers of the MySQL / MariaDB integration tests: the server from GOFLOW_TEST_MYSQL
//! (`host:port`; the tests skip with a printed line when it is unset), user/password/database
//! from MYSQL_USER / MYSQL_PASSWORD / MYSQL_DATABASE (default root, none, test), a random table
//! per test dropped at the end, and a small blocking client for reading back what landed.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::net::IpAddr;

use bytes::BytesMut;
use goflow_codec::{Decoder, DecoderConfig};
use goflow_writers::mysql::{self, MysqlConfig, SslMode};
use goflow_writers::schema::{COLUMNS, ColumnType, Value};
use goflow_writers::sink::{Chunk, RowEncoder};
use mysql_async::prelude::Queryable;
use tokio::runtime::Runtime;

/// The server's `(host, port)`, or `None` (after printing why the test is skipped).
pub fn server(test: &str) -> Option<(String, u16)> {
    let Some(addr) = std::env::var("GOFLOW_TEST_MYSQL")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        println!("skipping {test}: GOFLOW_TEST_MYSQL (host:port of a MariaDB/MySQL) is not set");
        return None;
    };
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "3306"));
    Some((
        host.to_string(),
        port.parse().expect("GOFLOW_TEST_MYSQL port"),
    ))
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The sink configuration for `table` on `server` (optionally through another port).
pub fn config(server: &(String, u16), table: &str, port: Option<u16>) -> MysqlConfig {
    MysqlConfig {
        host: server.0.clone(),
        port: port.unwrap_or(server.1),
        socket: None,
        user: env_or("MYSQL_USER", "root"),
        password: std::env::var("MYSQL_PASSWORD").ok(),
        dbname: env_or("MYSQL_DATABASE", "test"),
        table: table.to_string(),
        sslmode: SslMode::Disable,
        max_age_days: None,
        columns: goflow_writers::schema::ColumnSet::ALL,
    }
}

/// A fresh table name: `goflow_t_<what>_<pid>_<n>`.
pub fn random_table(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 100_000);
    format!(
        "goflow_t_{what}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A blocking client for checking the table; drops `table` (and its positions table) when
/// dropped.
pub struct Db {
    rt: Runtime,
    conn: Option<mysql_async::Conn>,
    pub table: String,
}

impl Db {
    pub fn connect(server: &(String, u16), table: &str) -> Db {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cfg = config(server, table, None);
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(cfg.host.clone())
            .tcp_port(cfg.port)
            .user(Some(cfg.user.clone()))
            .pass(cfg.password.clone())
            .db_name(Some(cfg.dbname.clone()))
            .prefer_socket(false)
            .init(vec!["SET SESSION time_zone = '+00:00'"]);
        let conn = rt
            .block_on(mysql_async::Conn::new(opts))
            .unwrap_or_else(|e| panic!("MariaDB at {}:{}: {e}", cfg.host, cfg.port));
        let mut db = Db {
            rt,
            conn: Some(conn),
            table: table.to_string(),
        };
        db.drop_tables();
        db
    }

    fn drop_tables(&mut self) {
        let t = self.t();
        let p = mysql::ddl::quote_ident(&mysql::ddl::positions_table(&self.table));
        self.exec(&format!("DROP TABLE IF EXISTS {t}"));
        self.exec(&format!("DROP TABLE IF EXISTS {p}"));
    }

    /// The quoted table name.
    pub fn t(&self) -> String {
        mysql::ddl::quote_ident(&self.table)
    }

    fn conn(&mut self) -> &mut mysql_async::Conn {
        self.conn.as_mut().expect("connection")
    }

    pub fn exec(&mut self, sql: &str) {
        let rt = &self.rt;
        let conn = self.conn.as_mut().expect("connection");
        rt.block_on(conn.query_drop(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Rows as text (NULL = None).
    pub fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        let rt = &self.rt;
        let conn = self.conn.as_mut().expect("connection");
        let rows: Vec<mysql_async::Row> = rt
            .block_on(conn.query(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match r.as_ref(i) {
                        None | Some(mysql_async::Value::NULL) => None,
                        Some(mysql_async::Value::Bytes(b)) => {
                            Some(String::from_utf8_lossy(b).into_owned())
                        }
                        Some(v) => Some(v.as_sql(true).trim_matches('\'').to_string()),
                    })
                    .collect()
            })
            .collect()
    }

    pub fn one(&mut self, sql: &str) -> Option<String> {
        self.rows(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    pub fn count(&mut self) -> u64 {
        let t = self.t();
        self.one(&format!("SELECT COUNT(*) FROM {t}"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The table holds exactly `rows` rows whose in_bytes and in_pkts add up to `bytes` and
    /// `pkts` (every row stored once).
    pub fn assert_totals(&mut self, rows: u64, bytes: u64, pkts: u64) {
        assert_eq!(self.count(), rows, "every row, once");
        let t = self.t();
        let sum = |db: &mut Db, col: &str| {
            db.one(&format!(
                "SELECT CAST(COALESCE(SUM({col}), 0) AS CHAR) FROM {t}"
            ))
            .unwrap_or_default()
        };
        assert_eq!(sum(self, "in_bytes"), bytes.to_string(), "SUM(in_bytes)");
        assert_eq!(sum(self, "in_pkts"), pkts.to_string(), "SUM(in_pkts)");
    }

    /// Column names of the table, in order.
    pub fn columns(&mut self) -> Vec<String> {
        let table = self.table.clone();
        self.rows(&format!(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"
        ))
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
    }

    /// Every schema column of every row as text (NULL = None), ordered by `order_by`: times
    /// as Unix microseconds, addresses through INET6_NTOA, integers as stored.
    pub fn rows_as_text(&mut self, order_by: &str) -> Vec<Vec<Option<String>>> {
        let exprs: Vec<String> = COLUMNS
            .iter()
            .map(|c| {
                let q = mysql::ddl::quote_ident(c.name);
                match c.ty {
                    ColumnType::Time => format!(
                        "CAST((TO_SECONDS({q}) - 62167219200) * 1000000 + MICROSECOND({q}) AS CHAR)"
                    ),
                    ColumnType::Ip => format!("INET6_NTOA({q})"),
                    _ => format!("CAST({q} AS CHAR)"),
                }
            })
            .collect();
        let t = self.t();
        self.rows(&format!(
            "SELECT {} FROM {t} ORDER BY {order_by}",
            exprs.join(", ")
        ))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if self.conn.is_some() {
            self.drop_tables();
        }
        if let Some(conn) = self.conn.take() {
            let _ = self.rt.block_on(conn.disconnect());
        }
    }
}

/// What a record should read back as: BIGINT UNSIGNED holds every u64; addresses in the
/// server's INET6_NTOA spelling are compared as parsed addresses by the caller.
pub fn expected_text(rec: &goflow_codec::FlowRecord<'_>) -> Vec<Option<String>> {
    COLUMNS
        .iter()
        .map(|c| match (c.read)(rec) {
            Value::Null => None,
            Value::Uint(v) => Some(v.to_string()),
            Value::Ip(ip) => Some(ip.to_string()),
            Value::Time(t) => Some(t.to_string()),
            Value::Mac(m) => Some(
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            Value::Str(s) => Some(s.to_owned()),
        })
        .collect()
}

/// Normalises the address columns of a text row (parsed and printed again) so the server's
/// and Rust's spellings of one address compare equal.
pub fn normalise(mut row: Vec<Option<String>>) -> Vec<Option<String>> {
    for (c, v) in COLUMNS.iter().zip(row.iter_mut()) {
        if c.ty == ColumnType::Ip
            && let Some(s) = v
            && let Ok(ip) = s.parse::<IpAddr>()
        {
            *s = ip.to_string();
        }
    }
    row
}

/// Decodes v5 datagrams (`pg_common::v5_datagram`) and encodes every record as LOAD DATA
/// lines: one chunk per `per_chunk` datagrams. Returns the chunks and (rows, bytes, packets).
pub fn v5_chunks(
    datagrams: usize,
    per_chunk: usize,
    exporter: IpAddr,
) -> (Vec<Chunk>, (u64, u64, u64)) {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut enc = mysql::encoder();
    let mut chunks = Vec::new();
    let mut buf = BytesMut::new();
    let mut count = 0u64;
    let mut totals = (0u64, 0u64, 0u64);
    for d in 0..datagrams {
        let pkt = crate::pg_common::v5_datagram((d * 30) as u32, 30, (d as u32) * 30 + 1);
        decoder
            .decode(exporter, 1_767_225_601_000_000, &pkt, |rec| {
                enc.encode(rec, &mut buf);
                count += 1;
                totals.0 += 1;
                totals.1 += rec.in_bytes().unwrap_or(0);
                totals.2 += rec.in_pkts().unwrap_or(0);
            })
            .expect("decode");
        if (d + 1) % per_chunk == 0 || d + 1 == datagrams {
            chunks.push(Chunk {
                rows: buf.split().freeze(),
                count,
                oldest_received_us: 1_767_225_601_000_000,
                position: None,
            });
            count = 0;
        }
    }
    (chunks, totals)
}
