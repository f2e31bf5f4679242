//! The operator CLI end to end, running the real binary: exit codes (0 success, 1 runtime,
//! 2 config, 3 start), the messages that go with them, and `--help` listing the codes.

use std::error::Error;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");

fn goflow(dir: &Path, args: &[&str]) -> Result<Output, Box<dyn Error>> {
    Ok(Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("GOFLOW_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("SQL_PASSWORD")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A config with a null backend, UDP on `udp` and the API on `api` (both on 127.0.0.1).
fn config(dir: &Path, udp: u16, api: &str) -> Result<String, Box<dyn Error>> {
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "backends:\n  n:\n    type: null\nfrontends:\n  netflow:\n    backend: n\n    config:\n      \
             bindaddr: 127.0.0.1\n      bindport: {udp}\n      workers: 1\napi: {api}\nstate_dir: {}\n",
            dir.join("state").display()
        ),
    )?;
    Ok(path.display().to_string())
}

fn free_udp_port() -> Result<u16, Box<dyn Error>> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[test]
fn help_lists_the_exit_codes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = goflow(dir.path(), &["--help"])?;
    assert!(out.status.success());
    let help = text(&out.stdout);
    for line in [
        "Exit codes:",
        "0  success",
        "1  runtime failure",
        "2  configuration or command-line error",
        "3  start failure",
        "4  `goflow status`: the daemon runs but reports itself unhealthy",
    ] {
        assert!(help.contains(line), "{line:?} in {help}");
    }
    Ok(())
}

#[test]
fn a_taken_api_port_is_a_start_failure_that_suggests_api_off() -> TestResult {
    let dir = tempfile::tempdir()?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let api = taken.local_addr()?;
    let cfg = config(dir.path(), free_udp_port()?, &api.to_string())?;
    let out = goflow(dir.path(), &["--config", &cfg, "run"])?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("{api}")), "{stderr}");
    assert!(stderr.contains("`api: off`"), "{stderr}");
    assert!(stderr.contains("another address"), "{stderr}");
    Ok(())
}

#[test]
fn a_taken_udp_port_is_a_start_failure() -> TestResult {
    let dir = tempfile::tempdir()?;
    let taken = UdpSocket::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let cfg = config(dir.path(), port, "off")?;
    let out = goflow(dir.path(), &["--config", &cfg, "run"])?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    Ok(())
}

#[test]
fn config_and_usage_errors_exit_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = goflow(dir.path(), &["run", "--no-such-flag"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    std::fs::write(dir.path().join("bad.yml"), "api: [\n")?;
    let out = goflow(dir.path(), &["--config", "bad.yml", "run"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    Ok(())
}

/// Issue 19: into a pipe, bench writes plain lines (no carriage returns) and ends with its own
/// CPU time; the JSON summary carries it too.
#[test]
fn bench_into_a_pipe_writes_plain_lines_and_its_cpu() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let target = sink.local_addr()?.to_string();
    let out = goflow(
        dir.path(),
        &[
            "bench", "--target", &target, "--rate", "2000", "--flows", "400",
        ],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("bench: sent 400 flows in ") && last.contains("generator CPU "),
        "{last}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert!(v["cpu_seconds"].as_f64().is_some_and(|c| c >= 0.0), "{v}");
    assert!(v["cpu_percent"].as_f64().is_some(), "{v}");
    assert_eq!(v["flows"], 400);
    Ok(())
}

/// A daemon this test started (killed by its PID when the test ends), its log and API address.
struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: &Path, cfg: &str) -> Result<Daemon, Box<dyn Error>> {
        let log = dir.join("daemon.log");
        let child = Command::new(BIN)
            .args(["--config", cfg, "run"])
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut d = Daemon { child, log };
        d.wait_log("listening on udp")?;
        Ok(d)
    }

    /// Waits for `needle` in the daemon's log (the log line is the signal that it happened).
    fn wait_log(&mut self, needle: &str) -> Result<String, Box<dyn Error>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let t = std::fs::read_to_string(&self.log)?;
            if t.contains(needle) {
                return Ok(t);
            }
            if let Some(s) = self.child.try_wait()? {
                return Err(format!("daemon exited ({s}): {t}").into());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("no {needle:?} in: {t}").into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn records(api: &str) -> Result<u64, Box<dyn Error>> {
        let (_, body) = goflow::ops::client::get(api, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v.pointer("/totals/records")
            .and_then(|r| r.as_u64())
            .unwrap_or(0))
    }
}

fn free_tcp_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Issue 20.5: `--api` takes the URL the daemon logs, HOST:PORT and a bare port.
/// Issue 20.4: `bench --config` sends to the config's listen address (0.0.0.0 = loopback).
#[test]
fn api_forms_and_bench_follows_the_config() -> TestResult {
    let dir = tempfile::tempdir()?;
    let udp = free_udp_port()?;
    let port = free_tcp_port()?;
    let api = format!("127.0.0.1:{port}");
    let cfg = config(dir.path(), udp, &api)?;
    // Listen on every address: bench must turn 0.0.0.0 into loopback.
    let text0 = std::fs::read_to_string(&cfg)?.replace("bindaddr: 127.0.0.1", "bindaddr: 0.0.0.0");
    std::fs::write(&cfg, text0)?;
    let mut d = Daemon::start(dir.path(), &cfg)?;
    let log = d.wait_log("ops API on http://")?;
    let url = log
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or("no URL in the log")?
        .to_owned();
    for form in [url.as_str(), api.as_str(), &port.to_string()] {
        let out = goflow(dir.path(), &["status", "--api", form])?;
        assert!(out.status.success(), "--api {form}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("records"),
            "{}",
            text(&out.stdout)
        );
    }
    let out = goflow(dir.path(), &["status", "--api", "127.0.0.1"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no port"),
        "{}",
        text(&out.stderr)
    );

    let out = goflow(
        dir.path(),
        &["--config", &cfg, "bench", "--flows", "60", "--rate", "0"],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Daemon::records(&api)? < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flows never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(Daemon::records(&api)?, 60);
    drop(d);
    Ok(())
}

/// Issue 20.2: `run --check` checks what `run` would trip over, one line per item, exit 3.
#[test]
fn check_finds_what_would_fail_at_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let api = TcpListener::bind("127.0.0.1:0")?;
    let cfg = dir.path().join("check.yml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  out:\n    type: file\n    config:\n      path: {}\n  db:\n    type: postgres\n    \
             config:\n      SQL_SERVER: 127.0.0.1\n      SQL_USERNAME: goflow_check_no_role\n      SQL_DB: test\n      SQL_TABLE: goflow_t_cli_check\n  spare:\n    type: null\n\
             frontends:\n  netflow:\n    backend: [out, db]\n    config:\n      bindaddr: 127.0.0.1\n      \
             bindport: {}\napi: {}\nstate_dir: {}\n",
            dir.path().join("missing/flows.jsonl").display(),
            udp.local_addr()?.port(),
            api.local_addr()?,
            dir.path().join("state").display()
        ),
    )?;
    let out = goflow(
        dir.path(),
        &["--config", &cfg.display().to_string(), "run", "--check"],
    )?;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    for needle in [
        "ok    state_dir ",
        "FAIL  listen udp 127.0.0.1:",
        "already in use",
        "FAIL  ops API 127.0.0.1:",
        "`api: off`",
        "FAIL  backend out (file): cannot create",
        "does not exist (create it",
        "FAIL  backend db (postgres): postgres: connect to goflow_check_no_role@",
        "CREATE ROLE goflow_check_no_role",
        "note  backend spare is defined but no frontend names it",
        "4 checks failed",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in {stdout}");
    }

    // The same with everything fixed: exit 0, every line ok.
    drop(udp);
    drop(api);
    std::fs::create_dir(dir.path().join("missing"))?;
    let fixed = std::fs::read_to_string(&cfg)?
        .replace("goflow_check_no_role", "postgres")
        .replace("  spare:\n    type: null\n", "");
    std::fs::write(&cfg, fixed)?;
    let out = goflow(
        dir.path(),
        &["--config", &cfg.display().to_string(), "run", "--check"],
    )?;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("ok    backend db (postgres): "), "{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // Nothing was created for the file backend.
    assert!(!dir.path().join("missing/flows.jsonl").exists());
    Ok(())
}
