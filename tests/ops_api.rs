//! The ops API end to end: start the real `goflow` binary with a temp config (a JSON-lines file
//! backend, a free UDP port, a free API port), send known NetFlow v5 traffic over loopback, and
//! check what /status, /stats, /metrics, /templates and /healthz say about it, and what
//! `goflow status` and `goflow stats` print. Also: an unreachable daemon, `goflow help`, a
//! taken API port. Every wait polls a condition against a deadline.

use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use goflow::ops::histogram::{HistogramReport, StatsReport};
use goflow::ops::metrics;
use goflow::ops::status::{Health, Status, TemplatesReport};
use goflow_codec::encode::{Flow, V5Builder, V5Header};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
/// Upper bound for the daemon to start, receive, publish and flush.
const DEADLINE: Duration = Duration::from_secs(20);
const DATAGRAMS: u64 = 20;
const RECORDS_PER_DATAGRAM: u64 = 30;
/// The datagrams go out in this many groups (so in at least this many batches).
const GROUPS: u64 = 4;

/// A daemon we started; killed (by its own PID) when the test ends.
struct Daemon {
    child: Child,
    api: String,
    udp_port: u16,
    log: PathBuf,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_udp_port() -> Result<u16, Box<dyn Error>> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_config(
    dir: &Path,
    udp_port: u16,
    api: &str,
    receiver: &str,
) -> Result<(PathBuf, PathBuf), Box<dyn Error>> {
    let out = dir.join("flows.jsonl");
    let cfg = dir.join("config.yml");
    let yaml = format!(
        "backends:\n  flows:\n    type: file\n    config:\n      path: {out}\n      flush_ms: 100\n\
         frontends:\n  netflow:\n    config:\n      bindaddr: 127.0.0.1\n      bindport: {udp_port}\n\
         \x20     receiver: {receiver}\n      workers: 2\n      rcvbuf: 4194304\n    backend: flows\n\
         api: {api}\n",
        out = out.display()
    );
    std::fs::write(&cfg, yaml)?;
    Ok((cfg, out))
}

fn start(receiver: &str) -> Result<Daemon, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let udp_port = free_udp_port()?;
    let api = format!("127.0.0.1:{}", free_tcp_port()?);
    let (cfg, out) = write_config(dir.path(), udp_port, &api, receiver)?;
    let log = dir.path().join("goflow.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .current_dir(dir.path())
        .env_remove("GOFLOW_CONFIG")
        .stdin(Stdio::null())
        .stdout(File::create(dir.path().join("stdout"))?)
        .stderr(File::create(&log)?)
        .spawn()?;
    let mut d = Daemon {
        child,
        api,
        udp_port,
        log,
        out,
        _dir: dir,
    };
    // Up when /healthz says every worker runs and the backend is healthy.
    let t0 = Instant::now();
    loop {
        if let Some(status) = d.child.try_wait()? {
            return Err(format!("goflow exited early ({status}):\n{}", d.log()).into());
        }
        if let Ok((200, _)) = http_get(&d.api, "/healthz") {
            return Ok(d);
        }
        if t0.elapsed() > DEADLINE {
            return Err(format!("goflow not healthy within {DEADLINE:?}:\n{}", d.log()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.0 GET, independent of the code under test: (status, body).
fn http_get(addr: &str, path: &str) -> Result<(u16, String), Box<dyn Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head
        .split(' ')
        .nth(1)
        .ok_or("no status code")?
        .parse::<u16>()?;
    Ok((code, body.to_owned()))
}

fn get_json<T: serde::de::DeserializeOwned>(addr: &str, path: &str) -> Result<T, Box<dyn Error>> {
    let (code, body) = http_get(addr, path)?;
    if code != 200 {
        return Err(format!("{path}: {code} {body}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

/// Polls `f` until it returns Some or the deadline passes.
fn wait_for<T>(
    what: &str,
    d: &Daemon,
    mut f: impl FnMut() -> Result<Option<T>, Box<dyn Error>>,
) -> Result<T, Box<dyn Error>> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if t0.elapsed() > DEADLINE {
            return Err(format!("timed out waiting for {what}; log:\n{}", d.log()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `DATAGRAMS` v5 datagrams of `RECORDS_PER_DATAGRAM` records, consecutive sequence numbers,
/// sampling 1 in 100, in `GROUPS` groups: each group is sent once the daemon has counted the
/// previous one, so the traffic spans at least `GROUPS` batches. Returns the bytes sent.
fn send_v5(d: &Daemon) -> Result<u64, Box<dyn Error>> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let mut bytes = 0u64;
    for g in 0..GROUPS {
        let per = DATAGRAMS / GROUPS;
        bytes += send_v5_group(&sock, d.udp_port, g * per, per)?;
        wait_for("a group of datagrams to be counted", d, || {
            let st: Status = get_json(&d.api, "/status")?;
            Ok((st.totals.datagrams >= (g + 1) * per).then_some(()))
        })?;
    }
    Ok(bytes)
}

fn send_v5_group(sock: &UdpSocket, port: u16, first: u64, n: u64) -> Result<u64, Box<dyn Error>> {
    let mut bytes = 0u64;
    for d in first..first + n {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: 1_800_000_000,
            flow_sequence: (d * RECORDS_PER_DATAGRAM) as u32,
            sampling_interval: 100,
            ..V5Header::default()
        });
        for r in 0..RECORDS_PER_DATAGRAM {
            b.push(&Flow {
                src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, d as u8, r as u8)),
                dst_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                src_port: 1000 + r as u16,
                dst_port: 53,
                protocol: 17,
                bytes: 100,
                packets: 1,
                first_uptime_ms: 3_500_000,
                last_uptime_ms: 3_599_000,
                ..Flow::default()
            })?;
        }
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        bytes += sock.send_to(&pkt, ("127.0.0.1", port))? as u64;
    }
    Ok(bytes)
}

fn hist<'a>(r: &'a StatsReport, name: &str) -> Result<&'a HistogramReport, Box<dyn Error>> {
    r.histograms
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| format!("no histogram {name} in /stats").into())
}

fn goflow(args: &[&str]) -> Result<Output, Box<dyn Error>> {
    Ok(Command::new(BIN)
        .args(args)
        .env_remove("GOFLOW_CONFIG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// With the receiver the kernel allows (io_uring here) and with recvmmsg forced.
#[test]
fn daemon_reports_the_traffic_it_received() -> TestResult {
    for receiver in ["auto", "mmsg"] {
        traffic_is_reported(receiver).map_err(|e| format!("receiver {receiver}: {e}"))?;
    }
    Ok(())
}

fn traffic_is_reported(receiver: &str) -> TestResult {
    let d = start(receiver)?;
    let sent_bytes = send_v5(&d)?;
    let records = DATAGRAMS * RECORDS_PER_DATAGRAM;

    // /status totals equal what was sent, and the backend wrote every row.
    let status: Status = wait_for("/status totals, rows written, exporters", &d, || {
        let st: Status = get_json(&d.api, "/status")?;
        let written = st.backends.first().map(|b| b.rows_written).unwrap_or(0);
        // Exporter snapshots are refreshed by the workers about once a second.
        let seen: u64 = st.exporters.iter().map(|e| e.records).sum();
        Ok((st.totals.records >= records && written >= records && seen >= records).then_some(st))
    })?;
    let t = &status.totals;
    assert_eq!(t.datagrams, DATAGRAMS, "{status:#?}");
    assert_eq!(t.records, records);
    assert_eq!(t.bytes, sent_bytes);
    assert_eq!(t.drops.datagrams(), 0, "{:?}", t.drops);
    assert_eq!(t.drops.records(), 0, "{:?}", t.drops);
    assert_eq!(t.sequence_missing, 0);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    match receiver {
        "mmsg" => assert_eq!(status.receiver.kind, "mmsg"),
        _ => assert!(
            matches!(status.receiver.kind.as_str(), "uring" | "mmsg"),
            "{:?}",
            status.receiver
        ),
    }
    assert_eq!((status.receiver.workers, status.receiver.running), (2, 2));
    let b = status.backends.first().ok_or("no backend")?;
    assert_eq!(
        (b.name.as_str(), b.kind.as_str(), b.healthy),
        ("flows", "file", true)
    );
    assert_eq!((b.rows_written, b.rows_dropped), (records, 0));
    assert!(b.last_flush_unix_us.is_some(), "{b:?}");
    let e = status.exporters.first().ok_or("no exporter")?;
    assert_eq!(status.exporters.len(), 1);
    assert_eq!(e.address, "127.0.0.1");
    assert_eq!(
        (e.datagrams, e.records, e.sequence_missing),
        (DATAGRAMS, records, 0)
    );
    assert_eq!(e.versions, [5]);
    assert_eq!(
        (e.sampling_rate, e.sampling_source.as_str()),
        (100, "v5_header")
    );
    assert!(
        status.msg.contains(&format!("{DATAGRAMS} datagrams")),
        "{}",
        status.msg
    );
    let lines = std::fs::read_to_string(&d.out)?.lines().count() as u64;
    assert_eq!(lines, records);

    // /stats: every histogram has the right count. Workers publish about once a second; the
    // backend records each flush (and a commit age per row made durable) after it commits.
    let batches = status.totals.batches;
    let stats: StatsReport = wait_for("/stats counts", &d, || {
        let s: StatsReport = get_json(&d.api, "/stats")?;
        let n = hist(&s, "datagram_records")?.since_start.count;
        let aged = hist(&s, "commit_age_us")?.since_start.count;
        Ok((n >= DATAGRAMS && aged >= records).then_some(s))
    })?;
    let rpd = &hist(&stats, "datagram_records")?.since_start;
    assert_eq!((rpd.count, rpd.sum), (DATAGRAMS, records));
    assert_eq!(
        (rpd.p50, rpd.max),
        (RECORDS_PER_DATAGRAM, RECORDS_PER_DATAGRAM)
    );
    let dpb = &hist(&stats, "batch_datagrams")?.since_start;
    assert_eq!(dpb.sum, DATAGRAMS);
    let bt = &hist(&stats, "batch_time_us")?.since_start;
    assert_eq!((bt.count, dpb.count), (batches, batches));
    assert!((GROUPS..=DATAGRAMS).contains(&batches), "{bt:?}");
    let flush = hist(&stats, "flush_time_us")?;
    assert_eq!(flush.backend.as_deref(), Some("flows"));
    // Every row is durable now, so no flush is pending: the histogram saw every flush.
    let after: Status = get_json(&d.api, "/status")?;
    let flushes = after.backends.first().map(|b| b.flushes).unwrap_or(0);
    assert!(flushes >= 1);
    assert_eq!(flush.since_start.count, flushes, "{flush:?}");
    let age = &hist(&stats, "commit_age_us")?.since_start;
    assert_eq!(age.count, records, "{age:?}");
    assert!(age.max < 60_000_000, "{age:?}");
    for h in &stats.histograms {
        // The test runs well inside a minute: the window holds everything.
        assert_eq!(h.last_minute.count, h.since_start.count, "{}", h.name);
        let in_buckets: u64 = h.since_start.buckets.iter().map(|b| b.count).sum();
        assert_eq!(in_buckets, h.since_start.count, "{}", h.name);
    }

    // /metrics parses (our strict parser, and promtool where installed) and agrees.
    let (code, page) = http_get(&d.api, "/metrics")?;
    assert_eq!(code, 200);
    let samples = metrics::parse(&page)?;
    let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    assert_eq!(
        value("goflow_receiver_datagrams_total"),
        Some(DATAGRAMS as f64)
    );
    assert_eq!(value("goflow_decoder_records_total"), Some(records as f64));
    assert_eq!(
        value("goflow_decoder_datagram_records_count"),
        Some(DATAGRAMS as f64)
    );
    // The exporter has series of its own (issue 21), with its exact count.
    let own = samples.iter().find(|s| {
        s.name == "goflow_exporter_records_total" && s.label("exporter") == Some("127.0.0.1")
    });
    assert_eq!(own.map(|s| s.value), Some(records as f64), "{page}");
    promtool_check(&page)?;

    // /templates (v5 has none), /healthz, unknown paths.
    let tpl: TemplatesReport = get_json(&d.api, "/templates")?;
    assert!(tpl.exporters.is_empty(), "{tpl:?}");
    let health: Health = get_json(&d.api, "/healthz")?;
    assert!(health.healthy && health.reasons.is_empty(), "{health:?}");
    let (code, body) = http_get(&d.api, "/no/such/thing")?;
    assert_eq!(code, 404);
    let err: serde_json::Value = serde_json::from_str(&body)?;
    assert!(err.get("error").is_some(), "{body}");

    // The client commands.
    let out = goflow(&["status", "--api", &d.api])?;
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.contains(&format!("{DATAGRAMS} datagrams")), "{s}");
    assert!(s.contains(&format!("{records} records")), "{s}");
    assert!(s.contains("drops     none"), "{s}");
    assert!(
        s.contains("flows") && s.contains("127.0.0.1") && s.contains("1:100 v5_header"),
        "{s}"
    );
    let out = goflow(&["status", "--json", "--api", &d.api])?;
    let raw: Status = serde_json::from_slice(&out.stdout)?;
    assert_eq!(raw.totals.records, records);

    let out = goflow(&["stats", "--api", &d.api])?;
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    let section = s
        .split("\n\n")
        .find(|sec| sec.starts_with("records per datagram"))
        .ok_or_else(|| format!("no records-per-datagram table in:\n{s}"))?;
    let row = |label: &str| -> Vec<String> {
        section
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|w| w.first().map(String::as_str) == Some(label))
            .unwrap_or_default()
    };
    let (n, per) = (DATAGRAMS.to_string(), RECORDS_PER_DATAGRAM.to_string());
    // The count says what it counts: datagrams here, rows for the commit age.
    assert_eq!(
        row("datagrams"),
        ["datagrams", n.as_str(), n.as_str()],
        "{section}"
    );
    assert_eq!(row("p50"), ["p50", per.as_str(), per.as_str()], "{section}");
    assert!(section.contains("|█|"), "{section}");
    for title in [
        "batch decode+encode time",
        "row age at commit (datagram received -> row durable)",
        "backend flush duration [flows]",
        "datagrams per batch",
    ] {
        assert!(s.contains(title), "{title} missing:\n{s}");
    }
    let out = goflow(&["stats", "--json", "--api", &d.api])?;
    let raw: StatsReport = serde_json::from_slice(&out.stdout)?;
    assert_eq!(hist(&raw, "datagram_records")?.since_start.count, DATAGRAMS);
    let out = goflow(&["stats", "--watch", "1", "--count", "2", "--api", &d.api])?;
    assert!(out.status.success());
    // Into a pipe: one plain block per refresh, no escape sequences (issue 19).
    assert!(!text(&out.stdout).contains('\x1b'), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout).matches("--- stats at ").count(), 2);
    Ok(())
}

/// `promtool check metrics` on the page; skipped (with a message) where promtool is absent.
fn promtool_check(page: &str) -> TestResult {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("promtool not installed (apt-get install prometheus): skipping that check");
        return Ok(());
    };
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(page.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{page}"
    );
    Ok(())
}

#[test]
fn unreachable_daemon_gives_the_message_and_exit_1() -> TestResult {
    // A port that was free a moment ago and has nothing listening.
    let addr = format!("127.0.0.1:{}", free_tcp_port()?);
    for cmd in [
        &["status"][..],
        &["stats"],
        &["stats", "--json"],
        &["status", "--json"],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--api", addr.as_str()]);
        let out = goflow(&args)?;
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "goflow daemon not reachable at {addr} (is it running? see `api:` in the config)\n"
            ),
            "{cmd:?}"
        );
        assert!(out.stdout.is_empty());
    }
    // The address from the config's `api:` when --api is absent.
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, format!("api: {addr}\n"))?;
    let out = goflow(&["--config", &cfg.display().to_string(), "status"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("not reachable at {addr} ")),
        "{}",
        text(&out.stderr)
    );
    // `api: off`: nothing to talk to, and the message says so.
    std::fs::write(&cfg, "api: off\n")?;
    let out = goflow(&["--config", &cfg.display().to_string(), "stats"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ops API is turned off"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn help_lists_every_subcommand_with_its_purpose() -> TestResult {
    for args in [&["help"][..], &["--help"]] {
        let out = goflow(args)?;
        assert!(out.status.success(), "{args:?}");
        let s = text(&out.stdout);
        let commands: Vec<(String, String)> = s
            .split("Commands:\n")
            .nth(1)
            .ok_or_else(|| format!("no Commands section:\n{s}"))?
            .lines()
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| {
                let l = l.trim_start();
                let (name, purpose) = l.split_once(' ')?;
                Some((name.to_owned(), purpose.trim().to_owned()))
            })
            .collect();
        for cmd in ["run", "decode", "bench", "status", "stats", "help"] {
            let purpose = commands
                .iter()
                .find(|(n, _)| n == cmd)
                .map(|(_, p)| p.as_str())
                .ok_or_else(|| format!("{cmd} missing from {args:?}:\n{s}"))?;
            assert!(purpose.len() >= 10, "{cmd}: {purpose:?}");
        }
        let purpose = |cmd: &str| {
            commands
                .iter()
                .find(|(n, _)| n == cmd)
                .map(|(_, p)| p.clone())
                .unwrap_or_default()
        };
        assert!(purpose("status").starts_with("Show the running daemon's state"));
        assert!(purpose("stats").starts_with("Show the running daemon's latency and size"));
    }
    Ok(())
}

#[test]
fn a_taken_api_port_is_a_clear_error() -> TestResult {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let api = taken.local_addr()?.to_string();
    let dir = tempfile::tempdir()?;
    let (cfg, _) = write_config(dir.path(), free_udp_port()?, &api, "auto")?;
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .current_dir(dir.path())
        .env_remove("GOFLOW_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err("goflow kept running with its API port taken".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .ok_or("no stderr")?
        .read_to_string(&mut err)?;
    assert!(!status.success());
    assert!(
        err.contains(&format!("cannot bind ops API on {api}: ")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    drop(taken);
    Ok(())
}
