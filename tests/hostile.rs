//! Hostile exporters against the real binary (issue 13): traffic from many loopback source
//! addresses (the kernel lets a socket bind any 127.0.0.0/8 address, so each test's "spoofed"
//! sources are real sockets), asserting the counters on /status and /metrics and that the
//! daemon recovers. Every wait polls a condition against a deadline; nothing here depends on how
//! fast the machine is.

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goflow::ops::Status;
use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
/// Upper bound for any wait.
const DEADLINE: Duration = Duration::from_secs(30);

/// A daemon this test started; killed by its own PID when the test ends.
struct Daemon {
    child: Child,
    port: u16,
    api: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> Result<u16, Box<dyn Error>> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `goflow run` with the null backend, one mmsg worker (so every source reaches the one
/// decoder whose bounds the test sets) and `limits` (YAML flow mapping body) under
/// `frontends.netflow.config.limits`.
fn start(limits: &str) -> Result<Daemon, Box<dyn Error>> {
    start_with(
        "{type: null}",
        &format!("limits: {{{limits}}}"),
        Stdio::null(),
    )
}

/// Starts `goflow run` with backend `out` (a YAML flow mapping), `netflow` (more keys of
/// `frontends.netflow.config`) and the daemon's stdout going to `stdout`.
fn start_with(backend: &str, netflow: &str, stdout: Stdio) -> Result<Daemon, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("goflow.log");
    let port = free_udp_port()?;
    let api = format!("127.0.0.1:{}", free_tcp_port()?);
    let config = format!(
        "backends:\n  out: {backend}\n\
         frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, receiver: mmsg, workers: 1, {netflow}}}\n    backend: out\n\
         api: {api}\nstate_dir: {state}\n",
        state = dir.path().join("state").display(),
    );
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config)?;
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("GOFLOW_CONFIG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut d = Daemon {
        child,
        port,
        api,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = d.log_text();
        if text.contains("ops API on") && text.contains("listening on udp") {
            return Ok(d);
        }
        if d.child.try_wait()?.is_some() || Instant::now() > deadline {
            return Err(format!("goflow did not start: {text}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn target(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn get(&self, path: &str) -> Result<(u16, String), Box<dyn Error>> {
        Ok(goflow::ops::client::get(&self.api, path)?)
    }

    fn status(&self) -> Result<Status, Box<dyn Error>> {
        let (code, body) = self.get("/status")?;
        if code != 200 {
            return Err(format!("/status: {code} {body}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Polls /status until `done` holds (the workers publish about once a second).
    fn wait_status(
        &self,
        what: &str,
        done: impl Fn(&Status) -> bool,
    ) -> Result<Status, Box<dyn Error>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let st = self.status()?;
            if done(&st) {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}: {:?}", st.totals).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM (to this child's PID only).
    fn sigterm(&self) -> TestResult {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !kill.success() {
            return Err("kill -TERM failed".into());
        }
        Ok(())
    }

    fn wait_exit(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, Box<dyn Error>> {
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A one-record v5 datagram with engine id `engine` and flow sequence `seq`.
fn v5(engine: u8, seq: u32) -> Vec<u8> {
    let mut b = V5Builder::new(V5Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        flow_sequence: seq,
        engine_id: engine,
        ..V5Header::default()
    });
    let _ = b.push(&sample_flow_v4(seq));
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

/// The `i`-th spoofed source: 127.1.x.y (never 127.0.0.1, the test's own address).
fn source(i: u32) -> SocketAddr {
    let [_, _, x, y] = i.to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(127, 1 + (i >> 16) as u8, x, y), 0))
}

/// Sends `datagram(i)` once from each of `n` loopback sources.
fn spray(to: SocketAddr, n: u32, datagram: impl Fn(u32) -> Vec<u8>) -> TestResult {
    for i in 0..n {
        let s = UdpSocket::bind(source(i))?;
        s.send_to(&datagram(i), to)?;
    }
    Ok(())
}

/// Point 1: the exporter table is bounded (the rest decoded, counted as untracked), idle
/// exporters and their sequence streams are forgotten (counted), and a new exporter is tracked
/// again once they are gone.
#[test]
fn exporter_state_is_bounded_counted_and_expires() -> TestResult {
    let d = start("exporters: 100, exporter_idle: 2")?;
    // 300 sources x 2 engine ids: 600 datagrams, 600 records.
    spray(d.target(), 300, |i| v5(0, i))?;
    spray(d.target(), 300, |i| v5(1, i))?;
    let st = d.wait_status("600 datagrams", |s| s.totals.datagrams >= 600)?;
    assert_eq!(
        st.totals.records, 600,
        "every record decoded, tracked or not"
    );
    let s = &st.totals.state;
    assert_eq!(s.exporters_max, 100);
    // Expiry may already have started (2 s idle); what is tracked never exceeds the bound.
    assert!(s.exporters <= 100, "{s:?}");
    assert_eq!(s.exporters_untracked_datagrams, 400, "{s:?}");
    assert!(s.sequence_streams <= 200, "{s:?}");
    let (_, metrics) = d.get("/metrics")?;
    assert!(
        metrics.contains("goflow_decoder_untracked_datagrams_total 400"),
        "{metrics}"
    );
    assert!(
        metrics.contains("goflow_decoder_exporters_max 100"),
        "{metrics}"
    );

    // Idle for 2 s: all forgotten, streams too.
    let st = d.wait_status("idle expiry", |s| s.totals.state.exporters_expired >= 100)?;
    assert_eq!(st.totals.state.exporters_expired, 100);
    assert_eq!(st.totals.state.exporters, 0);
    assert_eq!(st.totals.state.sequence_streams, 0);
    assert!(st.exporters.is_empty(), "{:?}", st.exporters);

    // Room again: a new exporter is tracked, with its own sequence accounting.
    let s = UdpSocket::bind("127.2.0.1:0")?;
    s.send_to(&v5(0, 0), d.target())?;
    s.send_to(&v5(0, 3), d.target())?; // flows 1 and 2 missing
    let st = d.wait_status("the new exporter", |s| {
        s.exporters
            .iter()
            .any(|e| e.address == "127.2.0.1" && e.datagrams == 2)
    })?;
    let e = st
        .exporters
        .iter()
        .find(|e| e.address == "127.2.0.1")
        .ok_or("no exporter")?;
    assert_eq!((e.records, e.sequence_missing, e.errors), (2, 2, 0));
    assert_eq!(st.totals.state.exporters_untracked_datagrams, 400);
    Ok(())
}

/// Point 4: SIGTERM stops receiving at once although an exporter keeps sending (one datagram
/// every 2 ms): the daemon exits while the sender is still running, having decoded what it
/// received.
#[test]
fn sigterm_exits_while_traffic_continues() -> TestResult {
    let mut d = start("")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let to = d.target();
    let sender = std::thread::spawn({
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        move || -> std::io::Result<()> {
            let s = UdpSocket::bind("127.3.0.1:0")?;
            // Bounded: at most 60 s of traffic even if the test fails to stop it.
            let end = Instant::now() + Duration::from_secs(60);
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                s.send_to(&v5(0, seq), to)?;
                seq += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        }
    });
    d.wait_status("traffic", |s| s.totals.records >= 50)?;
    d.sigterm()?;
    // The sender runs on; the daemon must not wait for it to stop.
    let exited = d.wait_exit(Instant::now() + DEADLINE)?;
    let still_sending = !sender.is_finished();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let status = exited.ok_or_else(|| format!("no exit under traffic: {}", d.log_text()))?;
    assert!(status.success(), "{status:?}: {}", d.log_text());
    assert!(still_sending, "the sender stopped before the daemon exited");
    let log = d.log_text();
    assert!(log.contains("stopped: datagrams"), "{log}");
    assert!(
        !log.contains("drain stopped after"),
        "the intake was closed: {log}"
    );
    Ok(())
}

/// A v9 datagram of `source_id` carrying `n` templates (ids 256..) of three fields, none of
/// which any data set uses.
fn v9_templates(seq: u32, n: u16) -> Vec<u8> {
    use goflow_codec::encode::{FieldSpec, V9Builder, V9Header};
    let mut b = V9Builder::new(V9Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        sequence: seq,
        source_id: 0,
    });
    let fields = [
        FieldSpec::new(8, 4),
        FieldSpec::new(12, 4),
        FieldSpec::new(1, 4),
    ];
    for id in 0..n {
        let _ = b.template(256 + id, &fields);
    }
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn metric(text: &str, name_and_labels: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// Point 2: a flood of never-used templates from many sources fills the template store; a real
/// v9 exporter (goflow bench) arriving afterwards still gets its template admitted and all its
/// flows stored, the flood's templates are evicted (counted), and per-exporter refusals are
/// counted by reason.
#[test]
fn template_flood_does_not_shut_out_a_new_exporter() -> TestResult {
    let d = start("templates: 200, templates_per_exporter: 10")?;
    // 100 sources x 10 templates fill the store (200) five times over ...
    spray(d.target(), 100, |i| v9_templates(i, 10))?;
    // ... and one source asks for more than its own bound.
    UdpSocket::bind("127.4.0.1:0")?.send_to(&v9_templates(0, 12), d.target())?;
    let st = d.wait_status("the flood", |s| s.totals.datagrams >= 101)?;
    let s = &st.totals.state;
    assert!(st.totals.templates <= 200, "{:?}", st.totals);
    assert_eq!(s.templates_refused_exporter_full, 2, "{s:?}");
    assert_eq!(s.templates_refused_cache_full, 0, "{s:?}");
    assert_eq!(s.templates_evicted, 1010 - 200, "{s:?}");

    // The real exporter, afterwards: every flow stored.
    let out = Command::new(BIN)
        .args([
            "bench", "--proto", "v9", "--flows", "10000", "--rate", "20000",
        ])
        .args(["--target", &d.target().to_string()])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = d.wait_status("bench's flows", |s| s.totals.records >= 10_000)?;
    assert_eq!(st.totals.records, 10_000);
    assert_eq!(st.totals.drops.no_template, 0, "{:?}", st.totals.drops);
    let (_, m) = d.get("/metrics")?;
    assert_eq!(
        metric(
            &m,
            "goflow_decoder_templates_rejected_total{reason=\"exporter_full\"}"
        ),
        Some(2),
        "{m}"
    );
    assert!(metric(&m, "goflow_decoder_templates_evicted_total").is_some_and(|n| n >= 810));
    Ok(())
}

/// Point 5: every malformed input moves a counter. Refused templates (no fields, ids below
/// 256, zero-length records) by reason; v9 datagrams of 20-23 bytes as truncated; a data set
/// ending in part of a record as truncated_record; data sets without a template in sets and
/// bytes (held first, for the template to come).
#[test]
fn every_drop_is_counted() -> TestResult {
    use goflow_codec::encode::{TYPICAL_V4_TEMPLATE, V9Builder, V9Header};
    let d = start("")?;
    let header = |seq: u32, count: u16| {
        let mut h = Vec::new();
        h.extend_from_slice(&9u16.to_be_bytes());
        h.extend_from_slice(&count.to_be_bytes());
        h.extend_from_slice(&3_600_000u32.to_be_bytes());
        h.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h
    };
    let s = UdpSocket::bind("127.5.0.1:0")?;
    let to = d.target();
    // v9 of 21, 22 and 23 bytes, and a bare 20-byte header announcing one record: truncated.
    for extra in 1..=3usize {
        let mut p = header(extra as u32, 1);
        p.extend(std::iter::repeat_n(0u8, extra));
        s.send_to(&p, to)?;
    }
    s.send_to(&header(4, 1), to)?;
    // A bare header with count 0 is a valid empty export packet: no drop.
    s.send_to(&header(5, 0), to)?;
    // Template set: id 255 (below 256), id 300 with no fields, id 301 with one 0-length field.
    let mut p = header(6, 3);
    let tpl: [u16; 8] = [255, 1, 8, 4, 300, 0, 301, 1];
    let mut body: Vec<u8> = tpl.iter().flat_map(|v| v.to_be_bytes()).collect();
    body.extend_from_slice(&[0, 8, 0, 0]); // 301's field: id 8, length 0
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(body.len() + 4)?.to_be_bytes());
    p.extend_from_slice(&body);
    s.send_to(&p, to)?;
    // A good template, then a data set of 1.5 records (one record, then a partial one).
    let mut b = V9Builder::new(V9Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        sequence: 7,
        source_id: 0,
    });
    b.template(256, TYPICAL_V4_TEMPLATE)?;
    b.data(256, TYPICAL_V4_TEMPLATE, &sample_flow_v4(0))?;
    let mut good = Vec::new();
    b.finish(&mut good);
    s.send_to(&good, to)?;
    let rec_len: usize = TYPICAL_V4_TEMPLATE.iter().map(|f| usize::from(f.len)).sum();
    let mut p = header(8, 2);
    p.extend_from_slice(&256u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(4 + rec_len + rec_len / 2)?.to_be_bytes());
    p.extend(std::iter::repeat_n(1u8, rec_len + rec_len / 2));
    s.send_to(&p, to)?;
    // A data set for template 999, which nobody announced: 40 bytes.
    let mut p = header(9, 1);
    p.extend_from_slice(&999u16.to_be_bytes());
    p.extend_from_slice(&44u16.to_be_bytes());
    p.extend_from_slice(&[7u8; 40]);
    s.send_to(&p, to)?;

    let st = d.wait_status("nine datagrams", |s| {
        s.totals.datagrams >= 9 && s.exporters.iter().any(|e| e.address == "127.5.0.1")
    })?;
    let dr = &st.totals.drops;
    assert_eq!(dr.decode_truncated, 4, "{dr:?}");
    assert_eq!(dr.truncated_record, 1, "{dr:?}");
    // The set for the unknown template is held for it (counted as no_template only if it
    // expires unheld).
    assert_eq!(
        (st.totals.held.sets, st.totals.held.bytes),
        (1, 40),
        "{:?}",
        st.totals.held
    );
    assert_eq!(dr.no_template, 0, "{dr:?}");
    assert_eq!(
        st.totals.records, 2,
        "the good record and the whole one before the partial"
    );
    let s = &st.totals.state;
    assert_eq!(s.templates_refused_malformed, 3, "{s:?}");
    assert_eq!(s.templates_rejected, 3, "{s:?}");
    let e = st
        .exporters
        .iter()
        .find(|e| e.address == "127.5.0.1")
        .ok_or("no exporter")?;
    // The truncated datagrams failed before the exporter was noted; the rest decoded.
    assert_eq!(e.errors, 0, "{e:?}");
    let (_, m) = d.get("/metrics")?;
    for (k, v) in [
        (
            "goflow_decoder_templates_rejected_total{reason=\"malformed\"}",
            3,
        ),
        ("goflow_decoder_no_template_sets_total", 0),
        (
            "goflow_pipeline_dropped_records_total{reason=\"truncated_record\"}",
            1,
        ),
        (
            "goflow_receiver_dropped_datagrams_total{reason=\"decode_truncated\"}",
            4,
        ),
    ] {
        assert_eq!(metric(&m, k), Some(v), "{k}\n{m}");
    }
    Ok(())
}

/// Point 8: an API on a non-loopback address is announced with a warning at start.
#[test]
fn api_on_a_non_loopback_address_is_warned_about() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_udp_port()?;
    let api = free_tcp_port()?;
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  out: {{type: null}}\nfrontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, receiver: mmsg, workers: 1}}\n    backend: out\napi: 0.0.0.0:{api}\nstate_dir: {}\n",
            dir.path().join("state").display()
        ),
    )?;
    let log = dir.path().join("log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut d = Daemon {
        child,
        port,
        api: format!("127.0.0.1:{api}"),
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + DEADLINE;
    while !d.log_text().contains("listening on udp") {
        if d.child.try_wait()?.is_some() || Instant::now() > deadline {
            return Err(format!("did not start: {}", d.log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = d.log_text();
    assert!(
        text.contains("WARN") && text.contains("is not on a loopback address"),
        "{text}"
    );
    d.sigterm()?;
    assert!(d.wait_exit(Instant::now() + DEADLINE)?.is_some());
    Ok(())
}

fn threads_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
}

/// Point 3: after a template flood, /templates answers one bounded page with the total and
/// where the next page starts (and an exporter filter), /status pages its exporter list, and
/// many idle connections plus clients that never read their answer neither stall /healthz
/// nor cost a thread each.
#[test]
fn templates_and_status_are_paged_and_idle_clients_do_not_stall_the_api() -> TestResult {
    use goflow::ops::TemplatesReport;
    use std::io::Write as _;
    let d = start("templates: 20000, templates_per_exporter: 100")?;
    // 500 sources x 20 templates: 10,000 templates.
    spray(d.target(), 500, |i| v9_templates(i, 20))?;
    d.wait_status("10,000 templates", |s| s.totals.templates >= 10_000)?;
    let page = |path: &str| -> Result<(TemplatesReport, usize), Box<dyn Error>> {
        let (code, body) = d.get(path)?;
        if code != 200 {
            return Err(format!("{path}: {code} {body}").into());
        }
        Ok((serde_json::from_str(&body)?, body.len()))
    };
    let count = |r: &TemplatesReport| -> usize {
        r.exporters
            .iter()
            .flat_map(|e| &e.domains)
            .map(|d| d.templates.len())
            .sum()
    };
    let (first, bytes) = page("/templates")?;
    assert_eq!(
        (first.total, first.limit, first.next),
        (10_000, 100, Some(100))
    );
    assert_eq!(count(&first), 100);
    assert!(bytes < 256 << 10, "a default page is {bytes} bytes");
    // Field names come with the ids.
    let f = &first.exporters[0].domains[0].templates[0].fields[0];
    assert_eq!((f.id, f.name.as_deref()), (8, Some("sourceIPv4Address")));
    let (last, _) = page("/templates?offset=9950&limit=100")?;
    assert_eq!((count(&last), last.next), (50, None));
    let (big, _) = page("/templates?limit=1000000")?;
    assert_eq!((big.limit, count(&big), big.next), (1000, 1000, Some(1000)));
    let (one, _) = page("/templates?exporter=127.1.0.7")?;
    assert_eq!((one.total, count(&one)), (20, 20));
    assert!(one.exporters.iter().all(|e| e.address == "127.1.0.7"));
    let (code, body) = d.get("/templates?limit=many")?;
    assert_eq!(code, 400, "{body}");
    let (code, body) = d.get("/status?limit=10&offset=5")?;
    assert_eq!(code, 200, "{body}");
    let st: Status = serde_json::from_str(&body)?;
    assert_eq!(st.exporters.len(), 10);
    assert_eq!((st.exporters_total, st.exporters_next), (500, Some(15)));

    // 400 idle connections (more than the server reads at once), and 8 clients that ask for
    // the largest page and never read it.
    let api: SocketAddr = d.api.parse()?;
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(std::net::TcpStream::connect(api)?);
    }
    for _ in 0..8 {
        let mut s = std::net::TcpStream::connect(api)?;
        s.write_all(b"GET /templates?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        held.push(s);
    }
    for _ in 0..20 {
        let (code, body) = d.get("/healthz")?;
        assert_eq!(code, 200, "{body}");
    }
    let threads = threads_of(d.child.id()).ok_or("no /proc status")?;
    assert!(threads < 40, "{threads} threads with 408 connections open");
    // The others are still answered.
    let (code, body) = d.get("/metrics")?;
    assert_eq!(code, 200, "{body}");
    drop(held);
    Ok(())
}

/// Point 6: the kernel dropping datagrams (receiver saturated: a tiny socket buffer and a
/// burst) makes /healthz 503 with the reason.
#[test]
fn healthz_is_unhealthy_while_the_kernel_drops() -> TestResult {
    let d = start_with("{type: null}", "rcvbuf: 4096", Stdio::null())?;
    let (code, body) = d.get("/healthz")?;
    assert_eq!(code, 200, "{body}");
    let mut b = V5Builder::new(V5Header::default());
    for i in 0..30 {
        let _ = b.push(&sample_flow_v4(i));
    }
    let mut dgram = Vec::new();
    b.finish(&mut dgram);
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let deadline = Instant::now() + DEADLINE;
    let mut sent = 0u64;
    loop {
        for _ in 0..5000 {
            sock.send_to(&dgram, d.target())?;
        }
        sent += 5000;
        if d.status()?.totals.drops.kernel > 0 {
            break;
        }
        if Instant::now() > deadline || sent >= 2_000_000 {
            return Err(format!("no kernel drop after {sent} datagrams").into());
        }
    }
    let (code, body) = d.get("/healthz")?;
    assert_eq!(code, 503, "{body}");
    let h: goflow::ops::status::Health = serde_json::from_str(&body)?;
    assert!(
        h.reasons
            .iter()
            .any(|r| r.starts_with("receiver saturated: the kernel dropped datagrams")),
        "{h:?}"
    );
    Ok(())
}

/// Point 6: a backend whose queue overflows (a dump backend writing into a pipe nobody reads:
/// connected, no error, but full) makes /healthz 503 with the reason.
#[test]
fn healthz_is_unhealthy_while_a_backend_drops_rows() -> TestResult {
    // The daemon's stdout is a pipe this test holds and never reads.
    let d = start_with(
        "{type: dump, config: {queue_bytes: 65536}}",
        "rcvbuf: 4194304",
        Stdio::piped(),
    )?;
    let (code, body) = d.get("/healthz")?;
    assert_eq!(code, 200, "{body}");
    // `goflow status` exits by the daemon's health: 0 now (issue 21).
    let status_cmd = |json: bool| {
        let mut c = Command::new(BIN);
        c.args(["status", "--api", &d.api]);
        if json {
            c.arg("--json");
        }
        c.env_remove("GOFLOW_CONFIG").stdin(Stdio::null()).output()
    };
    for json in [false, true] {
        let out = status_cmd(json)?;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let mut b = V5Builder::new(V5Header::default());
    for i in 0..30 {
        let _ = b.push(&sample_flow_v4(i));
    }
    let mut dgram = Vec::new();
    b.finish(&mut dgram);
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        for _ in 0..100 {
            sock.send_to(&dgram, d.target())?;
        }
        let st = d.status()?;
        if st.backends.first().is_some_and(|b| b.rows_dropped > 0) {
            assert_eq!(st.backends[0].state, "connected", "{:?}", st.backends);
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("no backend drop: {:?}", st.backends).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = d.get("/healthz")?;
    assert_eq!(code, 503, "{body}");
    let h: goflow::ops::status::Health = serde_json::from_str(&body)?;
    assert!(
        h.reasons
            .iter()
            .any(|r| r.starts_with("backend out (dump): dropped rows")),
        "{h:?}"
    );
    // ... and 4 (unhealthy) now, with the reason; --json prints the same JSON as before.
    let out = status_cmd(false)?;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NOT HEALTHY") && text.contains("dropped rows"),
        "{text}"
    );
    let out = status_cmd(true)?;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let st: Status = serde_json::from_slice(&out.stdout)?;
    assert!(st.backends[0].rows_dropped > 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy: backend out (dump)"));
    Ok(())
}

/// Issue 21: per-exporter series on /metrics. Five real exporters each have their own series
/// with their exact counts; a spoofed flood of 1000 one-record sources does not grow the page
/// past the bound (the rest are summed under exporter="other" and counted as folded); the page
/// passes the strict parser and `promtool check metrics`.
#[test]
fn per_exporter_series_stay_bounded_under_a_spoofed_flood() -> TestResult {
    use goflow::ops::metrics::{EXPORTER_SERIES_MAX, parse};
    let d = start("exporters: 5000")?;
    for r in 1..=5u8 {
        let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::new(127, 2, 0, r), 0)))?;
        for seq in 0..20u32 {
            let mut b = V5Builder::new(V5Header {
                flow_sequence: seq * 30,
                ..V5Header::default()
            });
            for i in 0..30 {
                let _ = b.push(&sample_flow_v4(i));
            }
            let mut dgram = Vec::new();
            b.finish(&mut dgram);
            s.send_to(&dgram, d.target())?;
        }
    }
    spray(d.target(), 1000, |i| v5(0, i))?;
    let total = 5 * 600 + 1000;
    d.wait_status("every record", |s| s.totals.records >= total)?;
    // The snapshot the series come from is published about once a second.
    let deadline = Instant::now() + DEADLINE;
    let page = loop {
        let (code, page) = d.get("/metrics")?;
        assert_eq!(code, 200, "{page}");
        let folded = metric(&page, "goflow_exporter_series_folded");
        if folded == Some(1005 - EXPORTER_SERIES_MAX as u64) {
            break page;
        }
        if Instant::now() > deadline {
            return Err(format!("folded {folded:?}: {page}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let samples = parse(&page)?;
    let records: Vec<(&str, f64)> = samples
        .iter()
        .filter(|s| s.name == "goflow_exporter_records_total")
        .map(|s| (s.label("exporter").unwrap_or(""), s.value))
        .collect();
    assert_eq!(
        records.len(),
        EXPORTER_SERIES_MAX + 1,
        "the bound plus other"
    );
    for r in 1..=5 {
        let a = format!("127.2.0.{r}");
        assert!(records.contains(&(a.as_str(), 600.0)), "{a}: {records:?}");
        let seen = samples.iter().find(|s| {
            s.name == "goflow_exporter_last_seen_timestamp_seconds"
                && s.label("exporter") == Some(a.as_str())
        });
        assert!(seen.is_some_and(|s| s.value > 1.7e9), "{a}");
    }
    let sum: f64 = records.iter().map(|(_, v)| v).sum();
    assert_eq!(sum, total as f64, "nothing lost in the fold");
    let other = records.iter().find(|(a, _)| *a == "other").map(|r| r.1);
    assert_eq!(other, Some((1005 - EXPORTER_SERIES_MAX) as f64));
    let exporters: std::collections::BTreeSet<&str> =
        samples.iter().filter_map(|s| s.label("exporter")).collect();
    assert!(
        exporters.len() <= EXPORTER_SERIES_MAX + 1,
        "{}",
        exporters.len()
    );
    // promtool, where installed.
    if let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(page.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}"
        );
    }
    Ok(())
}

/// Issue 21: the periodic summary is quiet while nothing arrives: one line when traffic stops,
/// none during the silence (checked over a whole summary interval), one when it resumes.
#[test]
fn the_summary_is_quiet_while_idle() -> TestResult {
    let d = start("")?;
    let send = || -> TestResult {
        UdpSocket::bind("127.0.0.1:0")?.send_to(&v5(0, 1), d.target())?;
        Ok(())
    };
    send()?;
    let summaries = |t: &str| {
        t.lines()
            .filter(|l| l.contains(" datagrams ") || l.contains("] datagrams "))
            .count()
    };
    let wait_for = |needle: &str| -> Result<String, Box<dyn Error>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = d.log_text();
            if t.contains(needle) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                return Err(format!("no {needle:?} in: {t}").into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let paused = wait_for("the summary pauses until traffic resumes")?;
    assert_eq!(paused.matches("the summary pauses").count(), 1, "{paused}");
    let before = summaries(&paused);
    // A whole interval (10 s) of silence adds nothing at INFO.
    std::thread::sleep(goflow::cmd::run::SUMMARY_INTERVAL + Duration::from_secs(1));
    let quiet = d.log_text();
    assert_eq!(summaries(&quiet), before, "{quiet}");
    assert_eq!(quiet.matches("the summary pauses").count(), 1, "{quiet}");
    send()?;
    let resumed = wait_for("traffic resumed after")?;
    assert_eq!(summaries(&resumed), before + 1, "{resumed}");
    Ok(())
}
