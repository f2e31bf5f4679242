//! The disk spool end to end (issue 17): `goflow run` as a child process writing to a real
//! PostgreSQL through a TCP proxy the test controls (cut = the database is down). Every flow
//! carries a unique byte counter, so the stored rows are checked by count, sum and distinct
//! count: nothing lost, nothing twice.
//! - an outage many times longer than the memory queue at a steady rate: everything arrives;
//! - SIGKILL while spooling, restart, SIGKILL while replaying, restart: exact sums, no
//!   duplicates (the replay position is committed in the rows' own transaction);
//! - a corrupted segment: SIGTERM while the database is down (quick exit, rows spooled), a byte
//!   flipped in one record, restart: that record's rows are missing and counted as damage,
//!   every other row is stored once.
//!
//! PostgreSQL from PGHOST/PGPORT/PGUSER/PGDATABASE (default 127.0.0.1:5432 postgres/test),
//! read back with psql; an unreachable server fails the test.

#[path = "../writers/tests/pg_common/proxy.rs"]
mod proxy;

use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};
use proxy::Proxy;
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(60);
const FLOWS_PER_PACKET: u32 = 30;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

struct Pg {
    host: String,
    port: u16,
    user: String,
    db: String,
}

impl Pg {
    fn connect() -> Result<Pg, Box<dyn Error>> {
        let pg = Pg {
            host: env_or("PGHOST", "127.0.0.1"),
            port: env_or("PGPORT", "5432").parse()?,
            user: env_or("PGUSER", "postgres"),
            db: env_or("PGDATABASE", "test"),
        };
        if pg.one("SELECT 1").as_deref() != Some("1") {
            return Err(format!(
                "no PostgreSQL reachable with psql at {}:{}",
                pg.host, pg.port
            )
            .into());
        }
        Ok(pg)
    }

    fn one(&self, sql: &str) -> Option<String> {
        let out = Command::new("psql")
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
            ])
            .args(["-d", &self.db, "-X", "-A", "-t", "-q", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// (rows, sum of in_bytes, distinct in_bytes) of `table`; zeros while it does not exist.
    fn totals(&self, table: &str) -> (u64, u64, u64) {
        let r = self.one(&format!(
            "SELECT count(*) || ',' || coalesce(sum(in_bytes), 0) || ',' || \
             count(DISTINCT in_bytes) FROM {table}"
        ));
        let v: Vec<u64> = r
            .unwrap_or_default()
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect();
        match v[..] {
            [a, b, c] => (a, b, c),
            _ => (0, 0, 0),
        }
    }
}

/// One test's world: table, proxy, state_dir, and the daemon (restartable).
struct World {
    pg: Pg,
    table: String,
    proxy: Proxy,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    api: String,
    runs: u32,
    exporter: UdpSocket,
    /// Flows sent so far (flow i has in_bytes 1500 + i).
    sent: u32,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self
            .pg
            .one(&format!("DROP TABLE IF EXISTS {} CASCADE", self.table));
        let _ = self
            .pg
            .one(&format!("DROP TABLE IF EXISTS {}_positions", self.table));
    }
}

impl World {
    fn new(tag: &str) -> Result<World, Box<dyn Error>> {
        let pg = Pg::connect()?;
        let table = format!(
            "spool_{tag}_{}_{}",
            std::process::id(),
            Instant::now().elapsed().subsec_nanos() % 100_000
        );
        let proxy = Proxy::start((pg.host.clone(), pg.port));
        Ok(World {
            pg,
            table,
            proxy,
            dir: tempfile::tempdir()?,
            child: None,
            port: 0,
            api: String::new(),
            runs: 0,
            exporter: UdpSocket::bind("127.0.0.1:0")?,
            sent: 0,
        })
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("goflow-{}.log", self.runs)))
            .unwrap_or_default()
    }

    fn start(&mut self) -> TestResult {
        self.runs += 1;
        self.port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        self.api = format!(
            "127.0.0.1:{}",
            TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
        );
        let cfg = self.dir.path().join(format!("config-{}.yml", self.runs));
        std::fs::write(
            &cfg,
            format!(
                "backends:\n  db:\n    type: postgres\n    config:\n      SQL_SERVER: 127.0.0.1\n\
                 \x20     SQL_PORT: {}\n      SQL_USERNAME: {}\n      SQL_DB: {}\n      \
                 SQL_TABLE: {}\n      flush_rows: 600\n      flush_ms: 50\n      \
                 queue_bytes: 65536\n      connections: 1\n\
                 frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {}, \
                 workers: 1}}\n    backend: db\napi: {}\nstate_dir: {}\n",
                self.proxy.port,
                self.pg.user,
                self.pg.db,
                self.table,
                self.port,
                self.api,
                self.state().display()
            ),
        )?;
        let log = self.dir.path().join(format!("goflow-{}.log", self.runs));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .current_dir(self.dir.path())
            .env_remove("GOFLOW_CONFIG")
            .env_remove("STATE_DIRECTORY")
            .env_remove("SQL_PASSWORD")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()?;
        self.child = Some(child);
        self.wait_for("the ops API", |w| Ok(http_get(&w.api, "/status").is_ok()))
    }

    fn wait_for(
        &mut self,
        what: &str,
        mut ok: impl FnMut(&World) -> Result<bool, Box<dyn Error>>,
    ) -> TestResult {
        let t0 = Instant::now();
        loop {
            if ok(self)? {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                return Err(format!(
                    "goflow exited ({status}) waiting for {what}:\n{}",
                    self.log()
                )
                .into());
            }
            if t0.elapsed() > DEADLINE {
                return Err(format!("not {what} within {DEADLINE:?}:\n{}", self.log()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `packets` v5 datagrams of 30 flows, paced (20 per 5 ms) so loopback drops none.
    fn send(&mut self, packets: u32) -> TestResult {
        for p in 0..packets {
            let mut b = V5Builder::new(V5Header {
                sys_uptime_ms: 3_600_000,
                unix_secs: 1_700_000_000,
                flow_sequence: self.sent,
                ..V5Header::default()
            });
            for _ in 0..FLOWS_PER_PACKET {
                b.push(&sample_flow_v4(self.sent))?;
                self.sent += 1;
            }
            let mut pkt = Vec::new();
            b.finish(&mut pkt);
            self.exporter.send_to(&pkt, ("127.0.0.1", self.port))?;
            if p % 20 == 19 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// (rows, sum, distinct) every flow sent so far must produce.
    fn expected(&self) -> (u64, u64, u64) {
        let n = u64::from(self.sent);
        (n, 1500 * n + n * n.saturating_sub(1) / 2, n)
    }

    fn status(&self) -> Result<Value, Box<dyn Error>> {
        let (code, body) = http_get(&self.api, "/status")?;
        if code != 200 {
            return Err(format!("/status: {code}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    fn spool(&self, key: &str) -> u64 {
        self.status()
            .ok()
            .and_then(|s| s["backends"][0]["spool"][key].as_u64())
            .unwrap_or(0)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns how long the exit took.
    fn term(&mut self) -> Result<Duration, Box<dyn Error>> {
        let Some(mut c) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let t0 = Instant::now();
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        while c.try_wait()?.is_none() {
            if t0.elapsed() > DEADLINE {
                let _ = c.kill();
                return Err("no exit after SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(t0.elapsed())
    }

    fn stored(&self) -> (u64, u64, u64) {
        self.pg.totals(&self.table)
    }
}

fn http_get(addr: &str, path: &str) -> Result<(u16, String), Box<dyn Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head.split(' ').nth(1).ok_or("no status")?.parse()?;
    Ok((code, body.to_owned()))
}

#[test]
fn an_outage_longer_than_the_queue_loses_nothing() -> TestResult {
    let mut w = World::new("outage")?;
    w.start()?;
    w.send(20)?;
    w.wait_for("the first rows", |w| Ok(w.stored().0 == 600))?;
    w.proxy.cut();
    // About 3 s at a steady rate: 1500 datagrams, 45,000 rows, ~4 MB of COPY rows against a
    // 64 KiB queue.
    for _ in 0..75 {
        w.send(20)?;
        std::thread::sleep(Duration::from_millis(35));
    }
    w.wait_for("rows spooled", |w| Ok(w.spool("rows_spooled") > 0))?;
    w.proxy.restore();
    let want = w.expected();
    w.wait_for("every row stored", |w| Ok(w.stored().0 >= want.0))?;
    // More live data after the outage, then check once nothing is in flight.
    w.send(20)?;
    let want = w.expected();
    w.wait_for("every row stored", |w| Ok(w.stored().0 >= want.0))?;
    assert_eq!(w.stored(), want);
    let st = w.status()?;
    assert_eq!(st["totals"]["drops"]["kernel"], 0, "{st}");
    assert_eq!(st["backends"][0]["rows_dropped"], 0, "{st}");
    let spooled = w.spool("rows_spooled");
    assert!(spooled > 40_000, "{st}");
    w.wait_for("the spool replayed", |w| {
        Ok(w.spool("rows_replayed") == spooled)
    })?;
    Ok(())
}

#[test]
fn sigkill_while_spooling_and_while_replaying_stores_every_row_once() -> TestResult {
    let mut w = World::new("kill")?;
    w.proxy.cut();
    w.start()?;
    w.send(1500)?;
    let n = u64::from(w.sent);
    w.wait_for("all spooled", |w| {
        Ok(w.spool("rows_spooled") == n && w.spool("memory_bytes") == 0)
    })?;
    w.kill();

    // Second run, database still down: more rows go to the spool after the ones on disk.
    w.start()?;
    w.send(1500)?;
    let n2 = u64::from(w.sent) - n;
    w.wait_for("all spooled", |w| {
        Ok(w.spool("rows_spooled") == n2 && w.spool("memory_bytes") == 0)
    })?;
    assert_eq!(w.stored().0, 0);
    w.proxy.restore();
    w.wait_for("replay under way", |w| Ok(w.spool("rows_replayed") > 0))?;
    let replayed = w.spool("rows_replayed");
    w.kill();
    eprintln!(
        "killed with {replayed} of {} rows replayed",
        u64::from(w.sent)
    );

    w.start()?;
    let want = w.expected();
    w.wait_for("every row stored", |w| Ok(w.stored().0 >= want.0))?;
    w.wait_for("spool emptied", |w| Ok(w.spool("segments") == 0))?;
    assert_eq!(w.stored(), want, "{}", w.log());
    Ok(())
}

#[test]
fn a_corrupted_segment_costs_only_the_damaged_record() -> TestResult {
    use goflow_writers::spool::segment::{Read, read_record, read_segment_header};
    let mut w = World::new("corrupt")?;
    w.proxy.cut();
    w.start()?;
    w.send(600)?;
    let n = u64::from(w.sent);
    w.wait_for("all spooled", |w| {
        Ok(w.spool("rows_spooled") == n && w.spool("memory_bytes") == 0)
    })?;
    let took = w.term()?;
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");

    // Flip one payload byte of a record in the middle of the (one) segment.
    let spool_dir = w.state().join("spool").join("db");
    let seg: PathBuf = std::fs::read_dir(&spool_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .ok_or("no segment")?;
    let (offsets, counts) = records(&seg)?;
    assert!(offsets.len() >= 3, "{} records", offsets.len());
    let mid = offsets.len() / 2;
    let mut bytes = std::fs::read(&seg)?;
    let at = usize::try_from(offsets[mid])? + 36 + 10;
    bytes[at] ^= 0x5a;
    std::fs::write(&seg, &bytes)?;

    w.proxy.restore();
    w.start()?;
    let want = w.expected();
    let lost = counts[mid];
    w.wait_for("the rest stored", |w| Ok(w.stored().0 >= want.0 - lost))?;
    w.wait_for("spool emptied", |w| Ok(w.spool("segments") == 0))?;
    let got = w.stored();
    assert_eq!(got.0, want.0 - lost);
    assert_eq!(got.0, got.2, "no duplicates");
    assert_eq!(w.spool("damaged"), 1);
    assert!(w.spool("damaged_bytes") > 0);
    return Ok(());

    fn records(seg: &Path) -> Result<(Vec<u64>, Vec<u64>), Box<dyn Error>> {
        let f = File::open(seg)?;
        let len = f.metadata()?.len();
        let (_, mut at) = read_segment_header(&f)?.ok_or("no header")?;
        let (mut offsets, mut counts) = (Vec::new(), Vec::new());
        while let Read::Record { header, end, .. } = read_record(&f, at, len)? {
            offsets.push(at);
            counts.push(header.count);
            at = end;
        }
        Ok((offsets, counts))
    }
}
