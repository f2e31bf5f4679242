//! End to end through `goflow run` with a `type: mysql` backend (real MariaDB/MySQL at
//! GOFLOW_TEST_MYSQL=host:port, user root or MYSQL_USER, database test or MYSQL_DATABASE; read
//! back with the `mariadb` client; skipped with a printed line when GOFLOW_TEST_MYSQL is unset).
//! The config is the old collector's config_example.yml with only its placeholder values filled
//! in (plus a table of the test's own and a short flush), the password comes from SQL_PASSWORD
//! alone. Generator-built packets (`goflow bench --proto mixed --v6-share 40`: v5, v9 and IPFIX,
//! IPv4 and IPv6) are sent over loopback; the stored rows must match `goflow decode` of the
//! same datagrams in count, SUM(in_bytes) and SUM(in_pkts), and /status and /metrics must show
//! the backend.

use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow::pcap::netflow_datagrams;

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(90);

struct My {
    host: String,
    port: String,
    user: String,
    db: String,
}

impl My {
    fn from_env() -> Option<My> {
        let addr = std::env::var("GOFLOW_TEST_MYSQL")
            .ok()
            .filter(|v| !v.is_empty())?;
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "3306"));
        let env_or = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| d.to_owned())
        };
        Some(My {
            host: host.to_owned(),
            port: port.to_owned(),
            user: env_or("MYSQL_USER", "root"),
            db: env_or("MYSQL_DATABASE", "test"),
        })
    }

    /// One value of `sql` through the mariadb client.
    fn one(&self, sql: &str) -> Result<String, Box<dyn Error>> {
        let mut cmd = Command::new("mariadb");
        cmd.args([
            "-h", &self.host, "-P", &self.port, "-u", &self.user, "-N", "-B",
        ])
        .arg(&self.db)
        .arg("-e")
        .arg(sql);
        if let Ok(pw) = std::env::var("MYSQL_PASSWORD") {
            cmd.env("MYSQL_PWD", pw);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!("mariadb: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }
}

struct Cleanup<'a> {
    child: Child,
    my: &'a My,
    table: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.my.one(&format!(
            "DROP TABLE IF EXISTS `{0}`; DROP TABLE IF EXISTS `{0}_positions`",
            self.table
        ));
    }
}

fn http_get(addr: &str, path: &str) -> Result<String, Box<dyn Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// The expected rows of `pcap`: (count, SUM(in_bytes), SUM(in_pkts)) from `goflow decode`.
fn decoded_totals(pcap: &std::path::Path) -> Result<(u64, u64, u64), Box<dyn Error>> {
    let out = Command::new(BIN).arg("decode").arg(pcap).output()?;
    assert!(out.status.success(), "goflow decode");
    let mut t = (0u64, 0u64, 0u64);
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        t.0 += 1;
        t.1 += v["in_bytes"].as_u64().unwrap_or(0);
        t.2 += v["in_pkts"].as_u64().unwrap_or(0);
    }
    Ok(t)
}

#[test]
fn old_collector_config_runs_against_mariadb() -> TestResult {
    let Some(my) = My::from_env() else {
        println!(
            "skipping old_collector_config_runs_against_mariadb: GOFLOW_TEST_MYSQL (host:port) \
             is not set"
        );
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let table = format!("goflow_run_my_{}", std::process::id());
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let api = format!("127.0.0.1:{api_port}");

    // The old collector's file, placeholders filled in; a test table and a short flush added.
    let original = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/original-config_example.yml"),
    )?;
    let config = original
        .replace("your-sql-server.com", &my.host)
        .replace("your-sql-username", &my.user)
        .replace(
            "SQL_DB: your-database-name",
            &format!(
                "SQL_DB: {}\n      SQL_PORT: {}\n      SQL_TABLE: {table}\n      flush_ms: 100",
                my.db, my.port
            ),
        )
        .replace("bindaddr: 0.0.0.0", "bindaddr: 127.0.0.1")
        .replace("bindport: 2055", &format!("bindport: {port}"))
        .replace("api: 127.0.0.1:8880", &format!("api: {api}"));
    assert!(config.contains("type: mysql") && config.contains("max_age: 180"));
    let cfg_path = dir.path().join("config.yml");
    std::fs::write(&cfg_path, &config)?;

    let generated = dir.path().join("generated.pcap");
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
            "6000",
            "--target",
            "127.0.0.1:9995",
            "--write-pcap",
        ])
        .arg(&generated)
        .stdout(Stdio::null())
        .status()?;
    assert!(status.success(), "goflow bench --write-pcap");
    let (rows, bytes, pkts) = decoded_totals(&generated)?;
    assert!(rows >= 6000, "{rows}");

    let log = dir.path().join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg_path)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env(
            "SQL_PASSWORD",
            std::env::var("MYSQL_PASSWORD").unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()?;
    let guard = Cleanup {
        child,
        my: &my,
        table: table.clone(),
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + DEADLINE;
    while !log_text().contains("listening on udp") {
        if Instant::now() > deadline {
            return Err(format!("goflow did not start: {}", log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Each generated exporter sends from its own loopback address (its own templates).
    let mut socks: std::collections::HashMap<IpAddr, UdpSocket> = Default::default();
    let mut next = 10u8;
    for (src, payload) in netflow_datagrams(&std::fs::read(&generated)?)? {
        let sock = match socks.entry(src.ip()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                next += 1;
                e.insert(UdpSocket::bind((
                    IpAddr::V4(Ipv4Addr::new(127, 0, 3, next)),
                    0,
                ))?)
            }
        };
        sock.send_to(&payload, ("127.0.0.1", port))?;
        // Paced a little: the test checks storage, not the receive buffer.
        std::thread::sleep(Duration::from_micros(200));
    }

    let want = format!("{rows}\t{bytes}\t{pkts}");
    let sql = format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(in_bytes),0) AS CHAR), \
         CAST(COALESCE(SUM(in_pkts),0) AS CHAR) FROM `{table}`"
    );
    loop {
        let got = my.one(&sql).unwrap_or_default();
        if got == want {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("stored {got:?}, want {want:?}; log: {}", log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v6 = my.one(&format!(
        "SELECT COUNT(*) FROM `{table}` WHERE LENGTH(src_ip) = 16 AND INET6_NTOA(src_ip) LIKE '%:%'"
    ))?;
    assert!(v6.parse::<u64>()? > 0, "IPv6 rows stored: {v6}");
    // Goflow's own table with max_age set: daily partitions.
    let parts = my.one(&format!(
        "SELECT COUNT(*) FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = '{table}' AND PARTITION_NAME IS NOT NULL"
    ))?;
    assert!(parts.parse::<u64>()? >= 4, "partitions: {parts}");

    // The lanes publish their sink's status every few seconds.
    loop {
        let status = http_get(&api, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&status)?;
        let b = v["backends"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == "rdssql").cloned())
            .ok_or_else(|| format!("rdssql in {status}"))?;
        assert_eq!(b["type"], "mysql", "{b}");
        let sink = &b["sink"];
        // Numbers and flags as JSON numbers and booleans, not strings.
        if sink["partitioned"] == true && sink["rows_written"] == rows {
            assert_eq!(sink["connections"], 2, "{b}");
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("/status: {b}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = http_get(&api, "/metrics")?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("goflow_backend_rows_written_total") && l.contains("rdssql")),
        "{metrics}"
    );
    let text = log_text();
    assert!(text.contains("mysql: connected to"), "{text}");
    assert!(text.contains("2 connections"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    drop(guard);
    Ok(())
}

/// Bad credentials: the daemon starts, says at once what is wrong and which keys to fix, and
/// stays up (receiving; the backend keeps retrying).
#[test]
fn bad_credentials_are_named_at_start_and_the_daemon_stays_up() -> TestResult {
    let Some(my) = My::from_env() else {
        println!(
            "skipping bad_credentials_are_named_at_start_and_the_daemon_stays_up: \
             GOFLOW_TEST_MYSQL (host:port) is not set"
        );
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let table = format!("goflow_run_badcreds_{}", std::process::id());
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = format!(
        "backends:\n  rdssql:\n    type: mysql\n    config:\n      SQL_SERVER: {}\n      \
         SQL_PORT: {}\n      SQL_USERNAME: goflow_no_such_user\n      SQL_DB: {}\n      \
         SQL_TABLE: {table}\nfrontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, \
         bindport: {port}}}\n    backend: rdssql\napi: off\n",
        my.host, my.port, my.db
    );
    let cfg_path = dir.path().join("config.yml");
    std::fs::write(&cfg_path, config)?;
    let log = dir.path().join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg_path)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("SQL_PASSWORD", "wrong")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()?;
    let mut guard = Cleanup {
        child,
        my: &my,
        table,
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = log_text();
        if text.contains("listening on udp") && text.contains("SQL_USERNAME") {
            assert!(text.contains("1045") || text.contains("1698"), "{text}");
            assert!(text.contains("SQL_PASSWORD"), "{text}");
            break;
        }
        if Instant::now() > deadline || guard.child.try_wait()?.is_some() {
            return Err(format!("no clear error while running: {text}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(guard.child.try_wait()?.is_none(), "still running");
    assert!(!log_text().contains("panicked"), "{}", log_text());
    Ok(())
}
