//! Issue 13, point 7: PostgreSQL with the TimescaleDB extension files installed but not in
//! `shared_preload_libraries` (the state right after the distribution package is installed).
//! `CREATE EXTENSION timescaledb` there makes the server end the session, so goflow must
//! check before it tries: for `type: timescale` and `type: postgres` alike it says once what to
//! change, writes every row to a plain table and never loops reconnecting.
//!
//! Runs against the plain server of `$GOFLOW_TEST_PG_PLAIN` (default 127.0.0.1:5432, user
//! postgres, database test). That state exists where TimescaleDB's files were installed for the
//! server's PostgreSQL (`.ci/test` starts ../shared/tools/timescaledb, which does that, and then
//! sets the variable). The tests check the state first: when `$GOFLOW_TEST_PG_PLAIN` is set and
//! the server is not in it they fail, naming what they found; when it is unset they skip with a
//! printed line (a user's `cargo test` on a server without TimescaleDB's files).

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(60);

fn server() -> (String, String) {
    let addr = std::env::var("GOFLOW_TEST_PG_PLAIN")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "127.0.0.1:5432".to_owned());
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (addr, "5432".to_owned()),
    }
}

/// One value of `sql` (psql -Atc) on the plain server, or an error with psql's message.
fn psql(sql: &str) -> Result<String, Box<dyn Error>> {
    let (host, port) = server();
    psql_at(&host, &port, sql)
}

fn psql_at(host: &str, port: &str, sql: &str) -> Result<String, Box<dyn Error>> {
    let out = Command::new("psql")
        .args(["-h", host, "-p", port, "-U", "postgres", "-d", "test"])
        .args(["-X", "-A", "-t", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Kills the daemon (by its PID) and drops the table, whatever happens.
struct Cleanup {
    child: Child,
    table: String,
    server: (String, String),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The table and what schema setup made beside it (the rollup: a continuous aggregate
        // on TimescaleDB, a view, its data table and function on plain PostgreSQL; the top-K
        // table on both), one
        // statement at a time so one that does not apply does not stop the others.
        let t = &self.table;
        for sql in [
            format!("DROP MATERIALIZED VIEW IF EXISTS {t}_1m CASCADE"),
            format!("DROP VIEW IF EXISTS {t}_1m CASCADE"),
            format!("DROP FUNCTION IF EXISTS {t}_1m_live() CASCADE"),
            format!("DROP TABLE IF EXISTS {t}_1m_data CASCADE"),
            format!("DROP TABLE IF EXISTS {t} CASCADE"),
            format!("DROP TABLE IF EXISTS {t}_positions"),
            format!("DROP TABLE IF EXISTS {t}_1h_top"),
        ] {
            let _ = psql_at(&self.server.0, &self.server.1, &sql);
        }
    }
}

fn free_port() -> Result<u16, Box<dyn Error>> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether the server is in the state: the extension available, not created, not
/// preloaded. Not in it: an error when `$GOFLOW_TEST_PG_PLAIN` names the server, else false
/// (the caller skips).
fn check_state(test: &str) -> Result<bool, Box<dyn Error>> {
    let named = std::env::var("GOFLOW_TEST_PG_PLAIN").is_ok_and(|v| !v.is_empty());
    let state = match psql(
        "SELECT coalesce((SELECT installed_version IS NULL FROM pg_available_extensions \
         WHERE name = 'timescaledb')::text, 'missing') || ' ' || \
         (current_setting('shared_preload_libraries') NOT LIKE '%timescaledb%')::text",
    ) {
        Ok(state) => state,
        Err(e) if !named => {
            eprintln!("skipping {test}: no plain PostgreSQL to test against ({e})");
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if state != "true true" && !named {
        eprintln!(
            "skipping {test}: the PostgreSQL at {:?} does not have TimescaleDB installed but \
             not preloaded (got {state:?}); set GOFLOW_TEST_PG_PLAIN to a server in that state",
            server()
        );
        return Ok(false);
    }
    if state != "true true" {
        return Err(format!(
            "the plain PostgreSQL at {:?} is not in the tested state (timescaledb files \
             installed, extension not created, not preloaded): got {state:?}",
            server()
        )
        .into());
    }
    Ok(true)
}

fn run(kind: &str) -> TestResult {
    if !check_state(kind)? {
        return Ok(());
    }
    let (host, port) = server();
    let table = format!("goflow_ops_np_{kind}_{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let udp = free_port()?;
    let api = format!("127.0.0.1:{}", free_tcp_port()?);
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  db:\n    type: {kind}\n    config: {{SQL_SERVER: {host}, SQL_PORT: {port}, \
             SQL_USERNAME: postgres, SQL_DB: test, SQL_TABLE: {table}, flush_ms: 200}}\n\
             frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {udp}, \
             receiver: mmsg, workers: 1}}\n    backend: db\napi: {api}\nstate_dir: {}\n",
            dir.path().join("state").display()
        ),
    )?;
    let log = dir.path().join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("SQL_PASSWORD")
        .env_remove("GOFLOW_CONFIG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut guard = Cleanup {
        child,
        table: table.clone(),
        server: server(),
    };
    let deadline = Instant::now() + DEADLINE;
    while !log_text(&log).contains("listening on udp") {
        if guard.child.try_wait()?.is_some() || Instant::now() > deadline {
            return Err(format!("goflow did not start: {}", log_text(&log)).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Healthy from the first answer: the backend connected and set up its table.
    let (code, body) = goflow::ops::client::get(&api, "/healthz")?;
    assert_eq!(code, 200, "{body}\n{}", log_text(&log));

    // 10 datagrams of 30 flows.
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, udp));
    for seq in 0..10u32 {
        let mut b = V5Builder::new(V5Header {
            flow_sequence: seq * 30,
            ..V5Header::default()
        });
        for i in 0..30 {
            let _ = b.push(&sample_flow_v4(seq * 30 + i));
        }
        let mut d = Vec::new();
        b.finish(&mut d);
        sock.send_to(&d, to)?;
    }
    loop {
        let n = psql(&format!("SELECT count(*) FROM {table}")).unwrap_or_default();
        if n == "300" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{n:?} rows of 300 after 60 s: {}", log_text(&log)).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A plain table: no extension was created, the table is no hypertable.
    assert_eq!(
        psql("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")?,
        "0"
    );
    let text = log_text(&log);
    let hint = text
        .lines()
        .filter(|l| l.contains("not preloaded"))
        .collect::<Vec<_>>();
    assert_eq!(hint.len(), 1, "one line, not {}:\n{text}", hint.len());
    assert!(
        hint[0].contains("shared_preload_libraries") && hint[0].contains("plain table"),
        "{}",
        hint[0]
    );
    assert!(!text.contains("connection closed"), "{text}");
    let (code, body) = goflow::ops::client::get(&api, "/status")?;
    assert_eq!(code, 200, "{body}");
    let st: goflow::ops::Status = serde_json::from_str(&body)?;
    let b = &st.backends[0];
    assert_eq!(
        (b.reconnects, b.errors, b.rows_written),
        (0, 0, 300),
        "{b:?}"
    );
    assert!(b.healthy, "{b:?}");
    drop(guard);
    assert_eq!(
        psql(&format!("SELECT to_regclass('{table}') IS NULL"))?,
        "t",
        "the table was dropped"
    );
    Ok(())
}

#[test]
fn timescale_without_the_preload_writes_a_plain_table_and_says_so_once() -> TestResult {
    run("timescale")
}

#[test]
fn postgres_without_the_preload_writes_a_plain_table_and_says_so_once() -> TestResult {
    run("postgres")
}

/// Starts `goflow run` with one `kind` backend on `host:port` (table `table`, more keys of its
/// `config` in `extra`) and waits until it listens; returns the daemon, its log and API.
fn start(
    host: &str,
    port: &str,
    kind: &str,
    table: &str,
    extra: &str,
) -> Result<(Cleanup, std::path::PathBuf, String, tempfile::TempDir), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let udp = free_port()?;
    let api = format!("127.0.0.1:{}", free_tcp_port()?);
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  db:\n    type: {kind}\n    config: {{SQL_SERVER: {host}, SQL_PORT: {port}, \
             SQL_USERNAME: postgres, SQL_DB: test, SQL_TABLE: {table}, flush_ms: 200{extra}}}\n\
             frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {udp}, \
             receiver: mmsg, workers: 1}}\n    backend: db\napi: {api}\nstate_dir: {}\n",
            dir.path().join("state").display()
        ),
    )?;
    let log = dir.path().join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("SQL_PASSWORD")
        .env_remove("GOFLOW_CONFIG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut guard = Cleanup {
        child,
        table: table.to_owned(),
        server: (host.to_owned(), port.to_owned()),
    };
    let deadline = Instant::now() + DEADLINE;
    while !log_text(&log).contains("listening on udp") {
        if guard.child.try_wait()?.is_some() || Instant::now() > deadline {
            return Err(format!("goflow did not start: {}", log_text(&log)).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((guard, log, api, dir))
}

/// Issue 21: `hypertable: on` where TimescaleDB cannot be loaded is a clear setup failure
/// (not a silent plain table), and /healthz says so.
#[test]
fn hypertable_on_without_the_preload_fails_clearly() -> TestResult {
    if !check_state("hypertable_on_without_the_preload_fails_clearly")? {
        return Ok(());
    }
    let (host, port) = server();
    let table = format!("goflow_ops_ht_on_{}", std::process::id());
    let (_guard, log, api, _dir) = start(&host, &port, "postgres", &table, ", hypertable: on")?;
    let (code, body) = goflow::ops::client::get(&api, "/healthz")?;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("hypertable: on, but TimescaleDB cannot be used"),
        "{body}"
    );
    let text = log_text(&log);
    assert!(text.contains("shared_preload_libraries"), "{text}");
    assert_eq!(
        psql("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")?,
        "0"
    );
    Ok(())
}

/// Issue 21: on TimescaleDB, `hypertable: auto` makes a hypertable and says so once;
/// `hypertable: off` keeps a plain table; both get the (exporter, time) index.
#[test]
fn hypertable_auto_and_off_on_timescaledb() -> TestResult {
    let Some(addr) = std::env::var("GOFLOW_TEST_TIMESCALE")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!("skipping: GOFLOW_TEST_TIMESCALE is not set");
        return Ok(());
    };
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "5433"));
    for (mode, hyper) in [("auto", "1"), ("off", "0")] {
        let table = format!("goflow_ops_ht_{mode}_{}", std::process::id());
        let (_guard, log, api, _dir) = start(
            host,
            port,
            "postgres",
            &table,
            &format!(", hypertable: {mode}"),
        )?;
        let (code, body) = goflow::ops::client::get(&api, "/healthz")?;
        assert_eq!(code, 200, "{mode}: {body}\n{}", log_text(&log));
        let q = |sql: &str| psql_at(host, port, sql);
        assert_eq!(
            q(&format!(
                "SELECT count(*) FROM timescaledb_information.hypertables \
                 WHERE hypertable_name = '{table}'"
            ))?,
            hyper,
            "{mode}"
        );
        assert_eq!(
            q(&format!(
                "SELECT count(*) FROM pg_indexes WHERE tablename = '{table}' \
                 AND indexname = '{table}_exporter_time'"
            ))?,
            "1",
            "{mode}: the (exporter, time) index"
        );
        let said = log_text(&log)
            .matches("is a TimescaleDB hypertable")
            .count();
        assert_eq!(
            said,
            usize::from(mode == "auto"),
            "{mode}: {}",
            log_text(&log)
        );
    }
    Ok(())
}
