//! End to end through `goflow run` with a postgres backend (real server; address from
//! PGHOST/PGPORT/PGUSER/PGDATABASE, default 127.0.0.1:5432 postgres/test; read back with psql):
//! generator-built packets (`goflow bench --proto mixed --v6-share 40 --write-pcap`: v5, v9 and
//! IPFIX, IPv4 and IPv6) and real captures from tests/data (v5, v9 with sampling options,
//! IPFIX, ICMPv6) are sent over loopback, each original exporter from its own 127.0.0.x address.
//! The same datagrams, with those addresses, are written to a pcap and run through
//! `goflow decode`: every stored row must equal a decoded record in every column but
//! `time_received` (receive time vs capture time), as a multiset (no row lost or doubled).
//! A second test runs two backends at once (PostgreSQL and a JSON-lines file) and checks that
//! every record reaches both. Both run the PostgreSQL backend with its default two COPY
//! connections. Both fail, with the address tried, when psql or the server is missing.

use std::collections::HashMap;
use std::error::Error;
use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow::pcap::{PcapWriter, WriteLink, netflow_datagrams};
use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};
use goflow_writers::json::write_rfc3339;
use goflow_writers::schema::{COLUMNS, ColumnType};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(60);

/// Real captures, each set in the order its templates and options must arrive.
const CAPTURES: &[&[&str]] = &[
    &["nfv5.pcap"],
    &["template.pcap", "data.pcap"],
    &["samplingrate-template.pcap", "samplingrate-data.pcap"],
    &[
        "multiplesamplingrates-template.pcap",
        "multiplesamplingrates-options-template.pcap",
        "multiplesamplingrates-options-data.pcap",
        "multiplesamplingrates-data.pcap",
    ],
    &["ipfixprobe-templates.pcap", "ipfixprobe-data.pcap"],
    &["icmp-template.pcap", "icmp-data.pcap"],
];

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

struct Pg {
    host: String,
    port: String,
    user: String,
    db: String,
}

impl Pg {
    fn from_env() -> Pg {
        Pg {
            host: env_or("PGHOST", "127.0.0.1"),
            port: env_or("PGPORT", "5432"),
            user: env_or("PGUSER", "postgres"),
            db: env_or("PGDATABASE", "test"),
        }
    }

    /// The server from the environment, checked with `SELECT 1`. An unreachable server is an
    /// error, not a skip: these tests exist to run against the real PostgreSQL.
    fn connect() -> Result<Pg, Box<dyn Error>> {
        let pg = Pg::from_env();
        if pg.one("SELECT 1").as_deref() != Some("1") {
            return Err(format!(
                "no PostgreSQL reachable with psql at {}:{} (user {}, database {})",
                pg.host, pg.port, pg.user, pg.db
            )
            .into());
        }
        Ok(pg)
    }

    /// Rows of `sql`, fields split on `|`, NULL as None; None when psql fails.
    fn rows(&self, sql: &str) -> Option<Vec<Vec<Option<String>>>> {
        let out = Command::new("psql")
            .args([
                "-h", &self.host, "-p", &self.port, "-U", &self.user, "-d", &self.db,
            ])
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-F",
                "|",
                "-P",
                "null=<NULL>",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("psql: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.split('|')
                        .map(|f| (f != "<NULL>").then(|| f.to_owned()))
                        .collect()
                })
                .collect(),
        )
    }

    fn one(&self, sql: &str) -> Option<String> {
        self.rows(sql)?.into_iter().next()?.into_iter().next()?
    }
}

/// Stops the daemon (by its PID) and drops the table whatever happens.
struct Cleanup<'a> {
    child: Child,
    pg: &'a Pg,
    table: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self
            .pg
            .rows(&format!("DROP TABLE IF EXISTS {}", self.table));
    }
}

/// Writes `config` into `dir`, starts `goflow run` on it with its log in `dir`, and waits for
/// it to listen. The guard stops the daemon and drops `table` whatever happens.
fn start<'a>(
    pg: &'a Pg,
    dir: &std::path::Path,
    table: &str,
    config: &str,
) -> Result<(Cleanup<'a>, std::path::PathBuf), Box<dyn Error>> {
    let cfg = dir.join("config.yml");
    std::fs::write(&cfg, config)?;
    let log = dir.join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        // The default state_dir (./goflow-state) is then per test, not shared and locked.
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SQL_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()?;
    let mut guard = Cleanup {
        child,
        pg,
        table: table.to_owned(),
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + DEADLINE;
    while !log_text().contains("listening on udp") {
        if Instant::now() > deadline || guard.child.try_wait()?.is_some() {
            return Err(format!("goflow did not start: {}", log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, log))
}

/// A payload and the loopback address its exporter sends from.
type Datagram = (IpAddr, Vec<u8>);

/// Every datagram to send, in order, with the 127.0.0.x address its exporter sends from.
fn datagrams(dir: &std::path::Path) -> Result<Vec<Datagram>, Box<dyn Error>> {
    let generated = dir.join("generated.pcap");
    let status = Command::new(BIN)
        .args([
            "bench",
            "--proto",
            "mixed",
            "--exporters",
            "3",
            "--v6-share",
            "40",
            "--flows",
            "3000",
            "--target",
            "127.0.0.1:9995",
            "--write-pcap",
        ])
        .arg(&generated)
        .stdout(Stdio::null())
        .status()?;
    assert!(status.success(), "goflow bench --write-pcap");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut sets: Vec<Vec<std::path::PathBuf>> = vec![vec![generated]];
    sets.extend(
        CAPTURES
            .iter()
            .map(|set| set.iter().map(|f| data.join(f)).collect()),
    );
    let mut out = Vec::new();
    let mut next = 10u8;
    for (i, set) in sets.iter().enumerate() {
        // Each (set, original exporter) gets its own loopback address.
        let mut mapped: HashMap<IpAddr, IpAddr> = HashMap::new();
        for file in set {
            for (src, payload) in netflow_datagrams(&std::fs::read(file)?)? {
                let ip = *mapped.entry(src.ip()).or_insert_with(|| {
                    next += 1;
                    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + i as u8, next))
                });
                out.push((ip, payload));
            }
        }
    }
    Ok(out)
}

/// A stored or decoded row as text per column (times RFC 3339, addresses as text, NULL None).
type TextRow = Vec<Option<String>>;

fn decoded_rows(pcap: &std::path::Path) -> Result<Vec<TextRow>, Box<dyn Error>> {
    let out = Command::new(BIN).arg("decode").arg(pcap).output()?;
    assert!(out.status.success(), "goflow decode");
    let mut rows = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        rows.push(
            COLUMNS
                .iter()
                .map(|c| match &v[c.name] {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect(),
        );
    }
    Ok(rows)
}

fn stored_rows(pg: &Pg, table: &str) -> Option<Vec<TextRow>> {
    let exprs: Vec<String> = COLUMNS
        .iter()
        .map(|c| match c.ty {
            ColumnType::Time => format!("(extract(epoch from {}) * 1000000)::bigint", c.name),
            ColumnType::Ip => format!("host({})", c.name),
            _ => c.name.to_owned(),
        })
        .collect();
    let rows = pg.rows(&format!("SELECT {} FROM {table}", exprs.join(", ")))?;
    Some(
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .zip(COLUMNS)
                    .map(|(v, c)| match (v, c.ty) {
                        (Some(us), ColumnType::Time) => {
                            let mut b = Vec::new();
                            write_rfc3339(us.parse().unwrap_or(i64::MIN), &mut b);
                            Some(String::from_utf8_lossy(&b).into_owned())
                        }
                        (v, _) => v,
                    })
                    .collect()
            })
            .collect(),
    )
}

/// Rows without `time_received`, sorted.
fn comparable(mut rows: Vec<TextRow>) -> Vec<TextRow> {
    let at = COLUMNS
        .iter()
        .position(|c| c.name == "time_received")
        .unwrap_or(0);
    for r in &mut rows {
        r.remove(at);
    }
    rows.sort();
    rows
}

#[test]
fn every_column_matches_goflow_decode() -> TestResult {
    let pg = Pg::connect()?;
    let dir = tempfile::tempdir()?;
    let table = format!("goflow_t_pgrun_{}", std::process::id());
    let _ = pg.rows(&format!("DROP TABLE IF EXISTS {table}"));
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let collector: SocketAddr = ([127, 0, 0, 1], port).into();

    // What will be sent, also as a capture for `goflow decode`.
    let dgrams = datagrams(dir.path())?;
    let pcap = dir.path().join("sent.pcap");
    {
        let mut w = PcapWriter::new(BufWriter::new(File::create(&pcap)?), WriteLink::Ethernet)?;
        for (i, (ip, payload)) in dgrams.iter().enumerate() {
            w.write_udp(
                1_767_225_600_000_000 + i as i64,
                SocketAddr::new(*ip, 40_000),
                collector,
                payload,
            )?;
        }
        w.flush()?;
    }
    let want = decoded_rows(&pcap)?;
    assert!(want.len() > 3000, "{} decoded records", want.len());
    let ip_version = COLUMNS
        .iter()
        .position(|c| c.name == "ip_version")
        .unwrap_or(0);
    assert!(
        want.iter()
            .any(|r| r.get(ip_version) == Some(&Some("6".into())))
    );

    let config = format!(
        "backends:\n  pg:\n    type: postgres\n    config:\n      SQL_SERVER: {host}\n      \
         SQL_PORT: \"{pgport}\"\n      SQL_USERNAME: {user}\n      SQL_DB: {db}\n      \
         SQL_TABLE: {table}\n      SQL_SSLMODE: disable\n      flush_ms: 100\n\
         frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, workers: 1}}\n    backend: pg\n\
         api: off\n",
        host = pg.host,
        pgport = pg.port,
        user = pg.user,
        db = pg.db,
    );
    let (guard, log) = start(&pg, dir.path(), &table, &config)?;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + DEADLINE;

    let mut sockets: HashMap<IpAddr, UdpSocket> = HashMap::new();
    for (ip, payload) in &dgrams {
        if !sockets.contains_key(ip) {
            sockets.insert(*ip, UdpSocket::bind(SocketAddr::new(*ip, 0))?);
        }
        if let Some(s) = sockets.get(ip) {
            s.send_to(payload, collector)?;
        }
    }

    let count_sql = format!("SELECT count(*) FROM {table}");
    loop {
        let n = pg.one(&count_sql).unwrap_or_default();
        if n == want.len().to_string() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{n:?} of {} rows stored; log: {}", want.len(), log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = stored_rows(&pg, &table).ok_or("SELECT failed")?;
    assert!(
        got.iter().all(|r| r.first().is_some_and(Option::is_some)),
        "time_received is always set"
    );
    let (got, want) = (comparable(got), comparable(want));
    eprintln!(
        "{} rows stored and decoded; first: {:?}",
        got.len(),
        got.first()
    );
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            g, w,
            "stored row vs decoded record (columns after time_received)"
        );
    }
    drop(guard);
    Ok(())
}

/// Two backends at once, PostgreSQL and a JSON-lines file: every record goes to both.
#[test]
fn records_reach_postgres_and_the_file() -> TestResult {
    let pg = Pg::connect()?;
    let dir = tempfile::tempdir()?;
    let table = format!("goflow_run_test_{}", std::process::id());
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let out = dir.path().join("flows.jsonl");
    let config = format!(
        "backends:\n  pg:\n    type: postgres\n    config:\n      SQL_SERVER: {host}\n      SQL_PORT: \"{pgport}\"\n      \
         SQL_USERNAME: {user}\n      SQL_DB: {db}\n      SQL_TABLE: {table}\n      flush_ms: 100\n  \
         out: {{type: file, config: {{path: {out}, flush_ms: 100}}}}\n\
         frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, workers: 2}}\n    backend: [pg, out]\n\
         api: off\n",
        host = pg.host,
        pgport = pg.port,
        user = pg.user,
        db = pg.db,
        out = out.display(),
    );
    let (guard, log) = start(&pg, dir.path(), &table, &config)?;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + DEADLINE;

    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let mut bytes_sum = 0u64;
    for p in 0..10u32 {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: 1_700_000_000 + p,
            flow_sequence: p * 30,
            ..V5Header::default()
        });
        for r in 0..30 {
            let mut fl = sample_flow_v4(p * 30 + r);
            fl.bytes = 100 + u64::from(p * 30 + r);
            bytes_sum += fl.bytes;
            b.push(&fl)?;
        }
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        sock.send_to(&pkt, ("127.0.0.1", port))?;
    }

    let count_sql = format!("SELECT count(*) || ' ' || sum(in_bytes) FROM {table}");
    let want = format!("300 {bytes_sum}");
    loop {
        let rows = pg.one(&count_sql).unwrap_or_default();
        let lines = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count();
        if rows == want && lines == 300 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "postgres has {rows:?}, file {lines} lines; log: {}",
                log_text()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exporter = pg.one(&format!("SELECT DISTINCT host(exporter) FROM {table}"));
    assert_eq!(exporter.as_deref(), Some("127.0.0.1"));
    // The default: two COPY connections (lanes), both taking from the backend's queue.
    assert!(log_text().contains(", 2 connections"), "{}", log_text());
    drop(guard);
    Ok(())
}
