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
