//! Running under systemd: the shipped unit (dist/goflow.service) passes `systemd-analyze verify`
//! and carries the settings the README promises; the daemon speaks the notify protocol to a
//! socket this test binds (READY=1 only once its UDP port is bound, WATCHDOG=1 keepalives when
//! WATCHDOG_USEC is set, STOPPING=1 at SIGTERM); SIGHUP reopens the file backend's file,
//! reloads `log_level` and `sampling`, names the keys that need a restart, and loses no
//! datagram sent meanwhile. Every wait polls a condition against a deadline.

use std::error::Error;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const UNIT: &str = include_str!("../dist/goflow.service");
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn the_unit_passes_systemd_analyze_verify() -> TestResult {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP: systemd-analyze is not installed (apt-get install systemd)");
        return Ok(());
    }
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir()?;
    let unit = dir.path().join("goflow.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/goflow", BIN))?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // verify reports unknown keys and bad values as warnings and still exits 0.
    assert!(
        !stderr.contains("goflow.service"),
        "systemd-analyze verify complained: {stderr}"
    );
    Ok(())
}

/// The unit's `Key=value` lines of the [Service] section.
fn service_settings() -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

#[test]
fn the_unit_is_a_notify_service_with_watchdog_own_user_and_hardening() {
    let settings = service_settings();
    let get = |k: &str| {
        settings
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let one = |k: &str| get(k).first().copied().unwrap_or("").to_owned();
    assert_eq!(one("Type"), "notify");
    assert!(!one("WatchdogSec").is_empty());
    assert_eq!(one("StateDirectory"), "goflow");
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert!(one("ExecReload").contains("-HUP"));
    assert!(one("EnvironmentFile").contains("/etc/goflow/"));
    assert!(one("ExecStart").contains("--config /etc/goflow/config.yml run"));
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    // The receiver's io_uring calls are allowed beside @system-service.
    let filters = get("SystemCallFilter").join(" ");
    for call in ["@system-service", "io_uring_setup", "io_uring_enter"] {
        assert!(filters.contains(call), "SystemCallFilter lacks {call}");
    }
    // The unit's command line is one the binary accepts.
    let exec = one("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = Command::new(BIN)
        .args(&args)
        .arg("--help")
        .output()
        .expect("run goflow");
    assert!(out.status.success(), "{exec} --help: {out:?}");
}

/// A daemon this test started; killed by its own PID when the test ends.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: &Path, config: &Path, env: &[(&str, String)]) -> Result<Daemon, Box<dyn Error>> {
        let log = dir.join("goflow.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("GOFLOW_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(Daemon {
            child: cmd.spawn()?,
            log,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) -> TestResult {
        let s = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?;
        if !s.success() {
            return Err(format!("kill {sig} failed").into());
        }
        Ok(())
    }

    /// Polls the log until it holds `what`.
    fn wait_log(&mut self, what: &str) -> Result<String, Box<dyn Error>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.log_text();
            if text.contains(what) {
                return Ok(text);
            }
            if let Some(st) = self.child.try_wait()? {
                return Err(format!("goflow exited ({st}) before logging {what:?}: {text}").into());
            }
            if Instant::now() > deadline {
                return Err(format!("no {what:?} in the log: {text}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self) -> Result<std::process::ExitStatus, Box<dyn Error>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("goflow did not exit: {}", self.log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The notification socket a service manager would listen on.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Result<NotifySocket, Box<dyn Error>> {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(NotifySocket { socket, path })
    }

    /// The next message, or `None` after the read timeout.
    fn next(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Reads messages until one starts with `prefix` (the ones before are returned too).
    fn wait_for(&self, d: &mut Daemon, prefix: &str) -> Result<Vec<String>, Box<dyn Error>> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            if let Some(m) = self.next() {
                let hit = m.starts_with(prefix);
                seen.push(m);
                if hit {
                    return Ok(seen);
                }
                continue;
            }
            if let Some(st) = d.child.try_wait()? {
                return Err(format!(
                    "goflow exited ({st}) before sending {prefix}: {seen:?} {}",
                    d.log_text()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!("no {prefix} from goflow: {seen:?} {}", d.log_text()).into());
            }
        }
    }
}

fn free_udp_port() -> Result<u16, Box<dyn Error>> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(out: &Path, port: u16, extra: &str) -> String {
    format!(
        "backends:\n  out: {{type: file, config: {{path: {out}, flush_ms: 50}}}}\n\
         frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, workers: 2}}\n    backend: out\n\
         api: off\n{extra}",
        out = out.display()
    )
}

#[test]
fn ready_comes_after_the_port_is_bound_then_watchdog_keepalives_and_stopping() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notify = NotifySocket::bind(dir.path())?;
    let port = free_udp_port()?;
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config(&dir.path().join("flows.jsonl"), port, ""))?;
    let mut d = Daemon::start(
        dir.path(),
        &cfg,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            // 0.4 s: a keepalive every 0.2 s.
            ("WATCHDOG_USEC", "400000".to_owned()),
        ],
    )?;
    let seen = notify.wait_for(&mut d, "READY=1")?;
    assert_eq!(seen.len(), 1, "READY=1 is the first message: {seen:?}");
    assert!(
        seen[0].contains("\nSTATUS=receiving on udp 127.0.0.1:"),
        "{seen:?}"
    );
    // By then the port is taken (goflow's sockets hold it) ...
    let taken = UdpSocket::bind(("127.0.0.1", port));
    assert!(
        matches!(&taken, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse),
        "port {port} not bound at READY=1: {taken:?}"
    );
    // ... and start-up is over.
    assert!(
        d.log_text().contains("listening on udp"),
        "{}",
        d.log_text()
    );

    // Keepalives keep coming: at least 3 within 3 s (one every 0.2 s).
    let t0 = Instant::now();
    let mut keepalives = 0;
    while keepalives < 3 && t0.elapsed() < Duration::from_secs(3) {
        if notify.next().is_some_and(|m| m == "WATCHDOG=1") {
            keepalives += 1;
        }
    }
    assert!(
        keepalives >= 3,
        "{keepalives} keepalives; log: {}",
        d.log_text()
    );

    d.signal("-TERM")?;
    notify.wait_for(&mut d, "STOPPING=1")?;
    let status = d.wait_exit()?;
    assert!(status.success(), "{status}: {}", d.log_text());
    Ok(())
}

#[test]
fn without_notify_socket_nothing_changes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_udp_port()?;
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config(&dir.path().join("flows.jsonl"), port, ""))?;
    // A watchdog without a socket is ignored, and a socket path nobody listens on only logs.
    let mut d = Daemon::start(
        dir.path(),
        &cfg,
        &[
            (
                "NOTIFY_SOCKET",
                dir.path().join("nobody.sock").display().to_string(),
            ),
            ("WATCHDOG_USEC", "400000".to_owned()),
        ],
    )?;
    d.wait_log("listening on udp")?;
    d.signal("-TERM")?;
    let status = d.wait_exit()?;
    assert!(status.success(), "{status}: {}", d.log_text());
    Ok(())
}

/// One v5 datagram of one record, flow number `i`, with no sampling in its header.
fn v5(i: u32) -> Vec<u8> {
    let mut b = V5Builder::new(V5Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        flow_sequence: i,
        ..V5Header::default()
    });
    let _ = b.push(&sample_flow_v4(i));
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_rows(d: &mut Daemon, files: &[&Path], n: usize) -> Result<usize, Box<dyn Error>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let have: usize = files.iter().map(|f| lines(f).len()).sum();
        if have >= n {
            return Ok(have);
        }
        if Instant::now() > deadline {
            return Err(format!("{have} of {n} rows; log: {}", d.log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reopens_the_file_reloads_sampling_and_log_level_and_names_the_rest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notify = NotifySocket::bind(dir.path())?;
    let out = dir.path().join("flows.jsonl");
    let rotated = dir.path().join("flows.jsonl.1");
    let port = free_udp_port()?;
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config(&out, port, "sampling:\n  default: 100\n"))?;
    let mut d = Daemon::start(
        dir.path(),
        &cfg,
        &[("NOTIFY_SOCKET", notify.path.display().to_string())],
    )?;
    notify.wait_for(&mut d, "READY=1")?;
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..10 {
        tx.send_to(&v5(i), to)?;
    }
    wait_rows(&mut d, &[&out], 10)?;
    assert!(
        lines(&out)
            .iter()
            .all(|r| r["sampling_rate"] == 100 && r["sampling_source"] == "config")
    );

    // logrotate's `create`: the file is moved away, then the reload. The config changed too:
    // two reloadable keys and one that is not.
    std::fs::rename(&out, &rotated)?;
    let other_port = free_udp_port()?;
    std::fs::write(
        &cfg,
        config(
            &out,
            other_port,
            "sampling:\n  default: 1000\nlog_level: debug\n",
        ),
    )?;
    d.signal("-HUP")?;
    let seen = notify.wait_for(&mut d, "READY=1")?;
    assert!(
        seen.iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
        "{seen:?}"
    );
    let log = d.wait_log("SIGHUP: ")?;
    let line = log
        .lines()
        .find(|l| l.contains("SIGHUP: "))
        .unwrap_or_default();
    assert!(line.contains("reopening file backend out"), "{line}");
    assert!(
        line.contains("applied log_level DEBUG, sampling (0 exporter rates, default 1000)"),
        "{line}"
    );
    assert!(
        line.contains("NOT applied, restart goflow for: frontends.netflow.config.bindport"),
        "{line}"
    );
    // The file is there again at once, without a row arriving.
    d.wait_log("flows.jsonl: reopened (SIGHUP)")?;
    assert!(out.exists());

    // New rows take the new rate and go to the new file; the port stayed the old one.
    for i in 10..20 {
        tx.send_to(&v5(i), to)?;
    }
    wait_rows(&mut d, &[&out], 10)?;
    assert!(
        lines(&out).iter().all(|r| r["sampling_rate"] == 1000),
        "{:?}",
        lines(&out)
    );
    assert_eq!(lines(&rotated).len(), 10);

    // Reloads while datagrams stream in lose none of them.
    let sender = {
        let tx = tx.try_clone()?;
        std::thread::spawn(move || -> std::io::Result<()> {
            for i in 20..3020 {
                tx.send_to(&v5(i), to)?;
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Ok(())
        })
    };
    for _ in 0..5 {
        d.signal("-HUP")?;
        notify.wait_for(&mut d, "READY=1")?;
    }
    sender.join().map_err(|_| "sender panicked")??;
    let have = wait_rows(&mut d, &[&out, &rotated], 3020)?;
    assert_eq!(have, 3020);

    // A config that no longer loads is reported and the running one kept.
    std::fs::write(&cfg, "backends: [\n")?;
    d.signal("-HUP")?;
    d.wait_log("keeping the running configuration")?;
    d.signal("-TERM")?;
    let status = d.wait_exit()?;
    assert!(status.success(), "{status}: {}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("no rows lost"), "{log}");
    assert!(
        !log.contains("kernel 1") && log.contains("drops: kernel 0"),
        "{log}"
    );
    Ok(())
}
