//! Shared helpers of the PostgreSQL integration tests: the server address from the environment
//! (PGHOST/PGPORT/PGUSER/PGDATABASE, defaults 127.0.0.1:5432, postgres, test), a random table
//! per test dropped at the end, a small synchronous client for checking what landed, and record
//! builders (hand-written NetFlow v5 datagrams through the real decoder, and a custom plan for
//! IPv6, 64-bit counters and microsecond times).
#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod proxy;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use goflow_codec::{
    Decoder, DecoderConfig, FlowRecord, PacketContext, Plan, Sampling, SamplingSource, Slot,
    TimeKind, UnixMicros,
};
use goflow_writers::pg::{self, PgConfig, SslMode};
use goflow_writers::schema::{COLUMNS, ColumnType, Value};
use goflow_writers::sink::{Chunk, RowEncoder};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, Row};

pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

pub fn pg_host() -> String {
    env_or("PGHOST", "127.0.0.1")
}

pub fn pg_port() -> u16 {
    env_or("PGPORT", "5432").parse().expect("PGPORT")
}

/// The sink configuration for `table` on the test server (optionally through another port).
pub fn pg_config(table: &str, port: Option<u16>) -> PgConfig {
    PgConfig {
        host: pg_host(),
        port: port.unwrap_or_else(pg_port),
        user: env_or("PGUSER", "postgres"),
        password: std::env::var("PGPASSWORD").ok(),
        dbname: env_or("PGDATABASE", "test"),
        table: table.to_string(),
        sslmode: SslMode::Disable,
        max_age_days: None,
        compress_after_days: None,
        columns: goflow_writers::schema::ColumnSet::ALL,
        hypertable: goflow_writers::pg::ddl::Hypertable::Auto,
        exporter_index: true,
        top_keys: goflow_writers::pg::ddl::TOP_KEYS_DEFAULT,
    }
}

/// Waits for `cond` (polled; the backend thread offers no signal), failing after `secs`.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A fresh table name: `goflow_t_<what>_<pid>_<n>_<nanos>`.
pub fn random_table(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "goflow_t_{what}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A blocking client for checking the table; drops `table` when dropped.
pub struct Db {
    rt: Runtime,
    client: Client,
    pub table: String,
}

impl Db {
    pub fn connect(table: &str) -> Db {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cfg = pg_config(table, None);
        let mut c = tokio_postgres::Config::new();
        c.host(&cfg.host)
            .port(cfg.port)
            .user(&cfg.user)
            .dbname(&cfg.dbname);
        if let Some(pw) = &cfg.password {
            c.password(pw.as_bytes());
        }
        let (client, connection) = rt.block_on(c.connect(NoTls)).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {}:{} (set PGHOST/PGPORT/PGUSER/PGDATABASE): {e}",
                cfg.host, cfg.port
            )
        });
        rt.spawn(connection);
        let db = Db {
            rt,
            client,
            table: table.to_string(),
        };
        db.exec(&format!("DROP TABLE IF EXISTS {}", db.t()));
        db.exec(&format!("DROP TABLE IF EXISTS {}", db.positions_t()));
        db
    }

    /// The quoted positions table of the table.
    pub fn positions_t(&self) -> String {
        pg::ddl::quote_table(&pg::ddl::positions_table(&self.table))
    }

    /// The quoted table name.
    pub fn t(&self) -> String {
        pg::ddl::quote_table(&self.table)
    }

    pub fn exec(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub fn query(&self, sql: &str) -> Vec<Row> {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    pub fn one_i64(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows[0].get::<_, Option<i64>>(0).unwrap_or(0)
    }

    pub fn count(&self) -> i64 {
        self.one_i64(&format!("SELECT count(*) FROM {}", self.t()))
    }

    /// The table holds exactly `rows` rows whose in_bytes and in_pkts add up to `bytes` and
    /// `pkts` (every row stored once).
    pub fn assert_totals(&self, rows: u64, bytes: u64, pkts: u64) {
        assert_eq!(self.count(), rows as i64, "every row, once");
        let sum = |col: &str| self.one_i64(&format!("SELECT sum({col})::bigint FROM {}", self.t()));
        assert_eq!(sum("in_bytes"), bytes as i64, "sum(in_bytes)");
        assert_eq!(sum("in_pkts"), pkts as i64, "sum(in_pkts)");
    }

    /// Column names of the table, in order.
    pub fn columns(&self) -> Vec<String> {
        self.query(&format!(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = '{}'::regclass \
             AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            self.t().replace('\'', "''")
        ))
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Every schema column of every row as text (NULL = None), ordered by `order_by`: times as
    /// Unix microseconds, addresses by host(), integers as written.
    pub fn rows_as_text(&self, order_by: &str) -> Vec<Vec<Option<String>>> {
        let exprs: Vec<String> = COLUMNS
            .iter()
            .map(|c| {
                let q = pg::ddl::quote_ident(c.name);
                match c.ty {
                    ColumnType::Time => {
                        format!("((extract(epoch from {q}) * 1000000)::bigint)::text")
                    }
                    ColumnType::Ip => format!("host({q})"),
                    _ => format!("{q}::text"),
                }
            })
            .collect();
        self.query(&format!(
            "SELECT {} FROM {} ORDER BY {order_by}",
            exprs.join(", "),
            self.t()
        ))
        .iter()
        .map(|r| (0..COLUMNS.len()).map(|i| r.get(i)).collect())
        .collect()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let sql = format!(
            "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; {}",
            self.t(),
            self.positions_t(),
            drop_rollup(&self.table)
        );
        let _ = self.rt.block_on(self.client.batch_execute(&sql));
    }
}

/// SQL dropping the plain-PostgreSQL rollup objects of `table` (view, function, data table)
/// and the top-K rollup table.
pub fn drop_rollup(table: &str) -> String {
    format!(
        "DROP VIEW IF EXISTS {}; DROP FUNCTION IF EXISTS {}(); DROP TABLE IF EXISTS {}; \
         DROP TABLE IF EXISTS {}",
        pg::ddl::quote_table(&pg::ddl::rollup_name(table)),
        pg::ddl::quote_table(&pg::ddl::rollup_live_function(table)),
        pg::ddl::quote_table(&pg::ddl::rollup_data_table(table)),
        pg::ddl::quote_table(&pg::ddl::top_name(table)),
    )
}

/// What a record should read back as, per the encoder's policy (counters clamp at i64::MAX).
pub fn expected_text(rec: &FlowRecord<'_>) -> Vec<Option<String>> {
    COLUMNS
        .iter()
        .map(|c| match (c.read)(rec) {
            Value::Null => None,
            Value::Uint(v) => Some(v.min(i64::MAX as u64).to_string()),
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

// ---------------------------------------------------------------------------------------------
// NetFlow v5 datagrams, decoded by the real decoder.
// ---------------------------------------------------------------------------------------------

/// Export time of the v5 datagrams: 2026-01-01T00:00:00.5Z, sysUpTime 3,600,000 ms.
pub const V5_EXPORT_SECS: u32 = 1_767_225_600;
pub const V5_UPTIME_MS: u32 = 3_600_000;

/// One v5 datagram of `n` (1..=30) records; record `i` gets `first_pkts + i` packets and
/// `(first_pkts + i) * 100` bytes.
pub fn v5_datagram(seq: u32, n: u16, first_pkts: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(24 + 48 * n as usize);
    d.extend_from_slice(&5u16.to_be_bytes()); // version
    d.extend_from_slice(&n.to_be_bytes()); // count
    d.extend_from_slice(&V5_UPTIME_MS.to_be_bytes()); // sys_uptime
    d.extend_from_slice(&V5_EXPORT_SECS.to_be_bytes()); // unix_secs
    d.extend_from_slice(&500_000_000u32.to_be_bytes()); // unix_nsecs
    d.extend_from_slice(&seq.to_be_bytes()); // flow_sequence
    d.extend_from_slice(&[1, 2]); // engine type, id
    d.extend_from_slice(&(0x4000u16 | 100).to_be_bytes()); // sampling: mode 1, 1 in 100
    for i in 0..u32::from(n) {
        let pkts = first_pkts + i;
        d.extend_from_slice(&[10, 0, 0, (i % 250) as u8 + 1]); // srcaddr
        d.extend_from_slice(&[192, 168, 1, 2]); // dstaddr
        d.extend_from_slice(&[10, 0, 0, 254]); // nexthop
        d.extend_from_slice(&3u16.to_be_bytes()); // input
        d.extend_from_slice(&4u16.to_be_bytes()); // output
        d.extend_from_slice(&pkts.to_be_bytes()); // dPkts
        d.extend_from_slice(&(pkts * 100).to_be_bytes()); // dOctets
        d.extend_from_slice(&(V5_UPTIME_MS - 2000).to_be_bytes()); // first
        d.extend_from_slice(&(V5_UPTIME_MS - 1000).to_be_bytes()); // last
        d.extend_from_slice(&(1024 + i as u16).to_be_bytes()); // srcport
        d.extend_from_slice(&443u16.to_be_bytes()); // dstport
        d.extend_from_slice(&[0, 0x1b, 6, 0x10]); // pad1, tcp_flags, prot, tos
        d.extend_from_slice(&65001u16.to_be_bytes()); // src_as
        d.extend_from_slice(&65002u16.to_be_bytes()); // dst_as
        d.extend_from_slice(&[24, 16, 0, 0]); // src_mask, dst_mask, pad2
    }
    d
}

/// Decodes v5 datagrams and encodes every record as COPY rows: one chunk per `datagrams_per_chunk`.
/// Returns the chunks and (rows, sum of bytes, sum of packets).
pub fn v5_chunks(
    datagrams: usize,
    datagrams_per_chunk: usize,
    exporter: IpAddr,
) -> (Vec<Chunk>, (u64, u64, u64)) {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut enc = pg::encoder();
    let mut chunks = Vec::new();
    let mut buf = BytesMut::new();
    let mut count = 0u64;
    let mut totals = (0u64, 0u64, 0u64);
    for d in 0..datagrams {
        let pkt = v5_datagram((d * 30) as u32, 30, (d as u32) * 30 + 1);
        decoder
            .decode(exporter, 1_767_225_601_000_000, &pkt, |rec| {
                enc.encode(rec, &mut buf);
                count += 1;
                totals.0 += 1;
                totals.1 += rec.in_bytes().unwrap_or(0);
                totals.2 += rec.in_pkts().unwrap_or(0);
            })
            .expect("decode");
        if (d + 1) % datagrams_per_chunk == 0 || d + 1 == datagrams {
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

// ---------------------------------------------------------------------------------------------
// A custom plan: IPv6-sized addresses, 8-byte counters, microsecond times.
// ---------------------------------------------------------------------------------------------

/// Record layout of [`wide_plan`] (108 bytes).
pub fn wide_plan(addr_len: u16) -> Plan {
    let a = addr_len;
    let base = 3 * a;
    Plan {
        record_len: base + 60,
        src_ip: Slot::new(0, a),
        dst_ip: Slot::new(a, a),
        next_hop: Slot::new(2 * a, a),
        src_port: Slot::new(base, 2),
        dst_port: Slot::new(base + 2, 2),
        protocol: Slot::new(base + 4, 1),
        in_bytes: Slot::new(base + 5, 8),
        in_pkts: Slot::new(base + 13, 8),
        tcp_flags: Slot::new(base + 21, 2),
        tos: Slot::new(base + 23, 1),
        input_if: Slot::new(base + 24, 4),
        output_if: Slot::new(base + 28, 4),
        src_as: Slot::new(base + 32, 4),
        dst_as: Slot::new(base + 36, 4),
        src_mask: Slot::new(base + 40, 1),
        dst_mask: Slot::new(base + 41, 1),
        direction: Slot::new(base + 42, 1),
        ip_version: Slot::new(base + 43, 1),
        // flowStartDeltaMicroseconds (4 bytes) and flowEndMicroseconds (NTP, 8 bytes).
        first_switched: Slot::new(base + 44, 4),
        first_kind: TimeKind::DeltaMicros,
        last_switched: Slot::new(base + 48, 8),
        last_kind: TimeKind::NtpMicros,
        ..Plan::EMPTY
    }
}

/// Fields of one wide record.
#[derive(Clone, Debug)]
pub struct Wide {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub next_hop: IpAddr,
    pub src_port: u16,
    pub in_bytes: u64,
    pub in_pkts: u64,
    pub direction: u8,
    /// Microseconds before the export time the flow started.
    pub start_delta_us: u32,
    /// End of the flow, Unix microseconds.
    pub end_us: UnixMicros,
}

fn addr_bytes(ip: IpAddr, len: u16) -> Vec<u8> {
    match (ip, len) {
        (IpAddr::V4(v4), 4) => v4.octets().to_vec(),
        (IpAddr::V6(v6), 16) => v6.octets().to_vec(),
        (IpAddr::V4(v4), _) => v4.to_ipv6_mapped().octets().to_vec(),
        (IpAddr::V6(_), _) => panic!("v6 address in a v4 plan"),
    }
}

/// Unix microseconds as an NTP timestamp that converts back exactly.
pub fn ntp(us: UnixMicros) -> u64 {
    let secs = us.div_euclid(1_000_000) + 2_208_988_800;
    let frac_us = us.rem_euclid(1_000_000) as u64;
    let frac = (frac_us << 32).div_ceil(1_000_000);
    ((secs as u64) << 32) | frac
}

/// The record bytes for `w` under `wide_plan(addr_len)`.
pub fn wide_bytes(w: &Wide, addr_len: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(addr_bytes(w.src, addr_len));
    b.extend(addr_bytes(w.dst, addr_len));
    b.extend(addr_bytes(w.next_hop, addr_len));
    b.extend_from_slice(&w.src_port.to_be_bytes());
    b.extend_from_slice(&53u16.to_be_bytes());
    b.push(17);
    b.extend_from_slice(&w.in_bytes.to_be_bytes());
    b.extend_from_slice(&w.in_pkts.to_be_bytes());
    b.extend_from_slice(&0x0112u16.to_be_bytes());
    b.push(0xb8);
    b.extend_from_slice(&7u32.to_be_bytes());
    b.extend_from_slice(&4_000_000_000u32.to_be_bytes());
    b.extend_from_slice(&4_200_000_000u32.to_be_bytes());
    b.extend_from_slice(&64_512u32.to_be_bytes());
    b.push(48);
    b.push(128);
    b.push(w.direction);
    b.push(if addr_len == 16 { 6 } else { 4 });
    b.extend_from_slice(&w.start_delta_us.to_be_bytes());
    b.extend_from_slice(&ntp(w.end_us).to_be_bytes());
    b
}

/// An IPFIX-like packet context with a microsecond export time.
pub fn wide_ctx(export_us: UnixMicros, received_us: UnixMicros) -> PacketContext {
    PacketContext {
        exporter: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99)),
        observation_domain: 4_000_000_000,
        version: 10,
        export_time_us: export_us,
        sys_uptime_ms: 0,
        received_us,
        system_init_ms: None,
    }
}

pub fn sampling(rate: u32) -> Sampling {
    Sampling {
        rate,
        source: SamplingSource::Sampler,
    }
}
