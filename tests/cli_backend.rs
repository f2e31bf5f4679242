//! A backend that cannot work is found out at start, not when flows arrive (issue 20.1): the
//! real binary with a PostgreSQL backend whose role does not exist logs the failure with what
//! to fix before any flow arrives, /healthz is 503 from its first answer, and at SIGTERM the last
//! lines say plainly that the rows were lost (exit 1). Real PostgreSQL (PGHOST/PGPORT, default
//! 127.0.0.1:5432); the test fails when it is not there.

use std::error::Error;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(30);

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Kills the daemon by its PID if the test ends early.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_log(log: &Path, needle: &str, d: &mut Daemon) -> Result<String, Box<dyn Error>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(log)?;
        if text.contains(needle) {
            return Ok(text);
        }
        if let Some(status) = d.0.try_wait()? {
            return Err(format!("daemon exited ({status}) before {needle:?}: {text}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("no {needle:?} in the log: {text}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_missing_role_is_reported_at_start_and_the_lost_rows_at_the_end() -> TestResult {
    missing_role(false)
}

/// The same with the disk spool on (the default): the rows are not lost but held, and the last
/// lines say where.
#[test]
fn a_missing_role_with_a_spool_says_where_the_rows_are() -> TestResult {
    missing_role(true)
}

fn missing_role(spool: bool) -> TestResult {
    let dir = tempfile::tempdir()?;
    let udp = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let api = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let role = format!("goflow_no_such_role_{}", std::process::id());
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  db:\n    type: postgres\n    config:\n      SQL_SERVER: {}\n      \
             SQL_PORT: {}\n      SQL_USERNAME: {role}\n      SQL_DB: {}\n      \
             SQL_TABLE: cli_no_role\n      connections: 1\n      spool_bytes: {}\n\
             frontends:\n  netflow:\n    backend: db\n    config:\n      bindaddr: 127.0.0.1\n      \
             bindport: {udp}\n      workers: 1\napi: {api}\nstate_dir: {}\n",
            env_or("PGHOST", "127.0.0.1"),
            env_or("PGPORT", "5432"),
            env_or("PGDATABASE", "test"),
            if spool { 1 << 30 } else { 0 },
            dir.path().join("state").display()
        ),
    )?;
    let log = dir.path().join("daemon.log");
    let mut d = Daemon(
        Command::new(BIN)
            .args(["--config", &cfg.display().to_string(), "run"])
            .current_dir(dir.path())
            .env_remove("SQL_PASSWORD")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    // The ops API starts after the first connect attempt: its first answer is already honest.
    let text = wait_for_log(&log, "ops API on", &mut d)?;
    assert!(text.contains("cannot connect at start"), "{text}");
    assert!(
        text.contains(&format!("role \"{role}\" does not exist")),
        "{text}"
    );
    assert!(
        text.contains(&format!("CREATE ROLE {role} LOGIN")),
        "{text}"
    );
    let (code, body) = goflow::ops::client::get(&api.to_string(), "/healthz")?;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("does not exist"), "{body}");

    let bench = Command::new(BIN)
        .args([
            "bench",
            "--target",
            &format!("127.0.0.1:{udp}"),
            "--flows",
            "100",
            "--rate",
            "0",
        ])
        .stderr(Stdio::null())
        .output()?;
    assert!(bench.status.success());
    // Every flow sent was received (a datagram in the socket buffer is drained at shutdown,
    // but wait until the receive loop counted them so the test asserts the backend's loss).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, status) = goflow::ops::client::get(&api.to_string(), "/status")?;
        let v: serde_json::Value = serde_json::from_str(&status)?;
        if v.pointer("/totals/records").and_then(|r| r.as_u64()) == Some(100) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records never reached 100: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status()?;
    assert!(kill.success());
    let status = d.0.wait()?;
    let text = std::fs::read_to_string(&log)?;
    if spool {
        assert_eq!(status.code(), Some(0), "{text}");
        assert!(!text.contains("ROWS LOST"), "{text}");
        let line = text
            .lines()
            .rfind(|l| l.contains("ROWS NOT WRITTEN YET"))
            .ok_or_else(|| format!("no ROWS NOT WRITTEN YET line: {text}"))?;
        assert!(
            line.contains("backend db (postgres) wrote 0 rows and holds 100 rows in its spool"),
            "{line}"
        );
        return Ok(());
    }
    assert_eq!(status.code(), Some(1), "{text}");
    let last = text
        .lines()
        .rfind(|l| l.contains("ROWS LOST"))
        .ok_or_else(|| format!("no ROWS LOST line: {text}"))?;
    assert!(
        last.contains("backend db (postgres) lost 100 rows and wrote 0"),
        "{last}"
    );
    assert!(last.contains("does not exist"), "{last}");
    assert!(last.contains("not stored anywhere"), "{last}");
    Ok(())
}
