//! `goflow run` end to end: start the real binary with a temp config (a JSON-lines file backend
//! on a free port of 127.0.0.1), send datagrams over loopback, read the JSON lines back and
//! compare them with what `goflow decode` prints for the same datagrams written to a pcap.
//! Every test runs once with `receiver: uring` and once with `receiver: mmsg` (skipped with a
//! message if the kernel refuses io_uring). Inputs: codec-built v5, v9 and IPFIX packets, and
//! the real captures in tests/data. Also: exporter affinity across source ports, and SIGTERM in
//! the middle of a stream (nothing the kernel delivered is lost). Every wait polls a condition
//! against a deadline.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use goflow::pcap::{PcapWriter, WriteLink};
use goflow_codec::encode::{
    Flow, IPFIX_TYPICAL_V4_TEMPLATE, IpfixBuilder, IpfixHeader, TYPICAL_V4_TEMPLATE, V5Builder,
    V5Header, V9Builder, V9Header, sample_flow_v4,
};
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
/// Upper bound for any wait (start, receive, flush, exit).
const DEADLINE: Duration = Duration::from_secs(30);
const EXPORT_SECS: u32 = 1_700_000_000;
const UPTIME_MS: u32 = 3_600_000;

/// Runs a test body once per receive back-end.
macro_rules! both_receivers {
    ($name:ident) => {
        mod $name {
            #[test]
            fn uring() -> super::TestResult {
                super::$name("uring")
            }
            #[test]
            fn mmsg() -> super::TestResult {
                super::$name("mmsg")
            }
        }
    };
}

/// A daemon this test started; killed by its own PID when the test ends.
struct Daemon {
    child: Child,
    port: u16,
    api: Option<u16>,
    out: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Opts<'a> {
    receiver: &'a str,
    workers: usize,
    flush_ms: u64,
    flush_rows: u64,
    api: bool,
}

impl Opts<'_> {
    fn new(receiver: &str) -> Opts<'_> {
        Opts {
            receiver,
            workers: 2,
            flush_ms: 50,
            flush_rows: 10_000,
            api: false,
        }
    }
}

fn free_udp_port() -> Result<u16, Box<dyn Error>> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `goflow run`; `None` when io_uring was asked for and the kernel refused it.
fn start(o: &Opts<'_>) -> Result<Option<Daemon>, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("flows.jsonl");
    let log = dir.path().join("goflow.log");
    let port = free_udp_port()?;
    let api = if o.api { Some(free_tcp_port()?) } else { None };
    // queue_bytes: the SIGTERM test holds 24 000 full-schema JSON lines (about 1 kB each) in
    // the queue until shutdown.
    let config = format!(
        "backends:\n  out: {{type: file, config: {{path: {out}, flush_ms: {ms}, flush_rows: {rows}, queue_bytes: 67108864}}}}\n\
         frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {port}, receiver: {rx}, workers: {w}}}\n    backend: out\n\
         api: {api}\n",
        out = out.display(),
        ms = o.flush_ms,
        rows = o.flush_rows,
        rx = o.receiver,
        w = o.workers,
        api = api.map_or_else(|| "off".to_owned(), |p| format!("127.0.0.1:{p}")),
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
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut d = Daemon {
        child,
        port,
        api,
        out,
        log,
        dir,
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&d.log).unwrap_or_default();
        if text.contains("listening on udp") {
            return Ok(Some(d));
        }
        if let Some(status) = d.child.try_wait()? {
            if o.receiver == "uring" && text.contains("cannot set up the Uring receiver") {
                eprintln!("SKIP: io_uring receive is not available here: {text}");
                return Ok(None);
            }
            return Err(format!("goflow exited at start ({status}): {text}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("goflow did not start: {text}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    fn target(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Polls the output file until it holds `n` lines (and checks it then stays at `n`).
    fn wait_lines(&self, n: usize) -> Result<Vec<String>, Box<dyn Error>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "expected {n} lines, have {} after {DEADLINE:?}; log: {}",
                    lines.len(),
                    self.log_text()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET /status from the ops API.
    fn status(&self) -> Result<Value, Box<dyn Error>> {
        let port = self.api.ok_or("no API configured")?;
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let body = resp
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .ok_or("no HTTP body")?;
        Ok(serde_json::from_str(body)?)
    }

    /// Sends SIGTERM (to this child's PID only) and waits for the exit.
    fn terminate(&mut self) -> Result<ExitStatus, Box<dyn Error>> {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !kill.success() {
            return Err("kill -TERM failed".into());
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("goflow did not exit; log: {}", self.log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `datagrams` from a socket bound to `from` (port 0 = any).
fn send_all(from: SocketAddr, to: SocketAddr, datagrams: &[Vec<u8>]) -> TestResult {
    let s = UdpSocket::bind(from)?;
    for d in datagrams {
        s.send_to(d, to)?;
    }
    Ok(())
}

/// `goflow decode` of a pcap holding `datagrams` (sent from `exporter`), as JSON lines.
fn decode_via_pcap(
    dir: &Path,
    name: &str,
    exporter: SocketAddr,
    datagrams: &[Vec<u8>],
) -> Result<Vec<String>, Box<dyn Error>> {
    let path = dir.join(name);
    let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut w = PcapWriter::new(file, WriteLink::Ethernet)?;
    let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2055);
    for (i, d) in datagrams.iter().enumerate() {
        w.write_udp(1_700_000_000_000_000 + i as i64, exporter, dst, d)?;
    }
    drop(w);
    decode_files(&[path])
}

fn decode_files(files: &[PathBuf]) -> Result<Vec<String>, Box<dyn Error>> {
    let out = Command::new(BIN).arg("decode").args(files).output()?;
    if !out.status.success() {
        return Err(format!(
            "goflow decode failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Lines as sorted, comparable strings without the fields that legitimately differ.
fn normalized(lines: &[String], drop_keys: &[&str]) -> Result<Vec<String>, Box<dyn Error>> {
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let mut v: BTreeMap<String, Value> = serde_json::from_str(l)?;
        for k in drop_keys {
            v.remove(*k);
        }
        out.push(serde_json::to_string(&v)?);
    }
    out.sort();
    Ok(out)
}

fn exporter_of(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("exporter")?.as_str().map(str::to_owned)
}

fn v5_datagrams(count: u32, engine_id: u8) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seq = 0;
    for p in 0..count {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: UPTIME_MS,
            unix_secs: EXPORT_SECS + p,
            flow_sequence: seq,
            engine_id,
            ..V5Header::default()
        });
        for r in 0..30 {
            let mut fl = sample_flow_v4(p * 30 + r);
            fl.bytes = 40 + u64::from(p * 30 + r) * 7;
            // Best effort: a full builder only means this datagram has fewer records.
            let _ = b.push(&fl);
        }
        seq += b.count() as u32;
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        out.push(pkt);
    }
    out
}

/// A template datagram and the data datagrams that use it.
type TemplateAndData = (Vec<u8>, Vec<Vec<u8>>);

/// A v9 template packet, then `count` data packets of `per` records each (template 256).
fn v9_datagrams(count: u32, per: u32) -> Result<TemplateAndData, Box<dyn Error>> {
    let header = |seq| V9Header {
        sys_uptime_ms: UPTIME_MS,
        unix_secs: EXPORT_SECS,
        sequence: seq,
        source_id: 7,
    };
    let mut b = V9Builder::new(header(0));
    b.template(256, TYPICAL_V4_TEMPLATE)?;
    let mut template = Vec::new();
    b.finish(&mut template);
    let mut data = Vec::new();
    for p in 0..count {
        let mut b = V9Builder::new(header(p + 1));
        for r in 0..per {
            let mut fl = sample_flow_v4(p * per + r);
            fl.first_uptime_ms = UPTIME_MS - 5000;
            fl.last_uptime_ms = UPTIME_MS - 1000;
            b.data(256, TYPICAL_V4_TEMPLATE, &fl)?;
        }
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        data.push(pkt);
    }
    Ok((template, data))
}

/// IPFIX: one message with the template and `count` data messages of `per` records.
fn ipfix_datagrams(count: u32, per: u32) -> Result<Vec<Vec<u8>>, Box<dyn Error>> {
    let mut out = Vec::new();
    let mut b = IpfixBuilder::new(IpfixHeader {
        export_time: EXPORT_SECS,
        sequence: 0,
        observation_domain: 42,
    });
    b.template(300, IPFIX_TYPICAL_V4_TEMPLATE)?;
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    out.push(pkt);
    let mut seq = 0;
    for p in 0..count {
        let mut b = IpfixBuilder::new(IpfixHeader {
            export_time: EXPORT_SECS,
            sequence: seq,
            observation_domain: 42,
        });
        for r in 0..per {
            let mut fl: Flow = sample_flow_v4(p * per + r);
            fl.first_unix_ms = u64::from(EXPORT_SECS) * 1000 - 4000;
            fl.last_unix_ms = u64::from(EXPORT_SECS) * 1000 - 10;
            b.data(300, IPFIX_TYPICAL_V4_TEMPLATE, &fl)?;
        }
        seq += b.data_records();
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        out.push(pkt);
    }
    Ok(out)
}

/// Codec-built v5, v9 and IPFIX packets from three exporters: the daemon's JSON lines equal
/// `goflow decode`'s for the same packets (except `time_received`, the receive time).
fn codec_packets_match_decode(receiver: &str) -> TestResult {
    let Some(d) = start(&Opts::new(receiver))? else {
        return Ok(());
    };
    let v5 = v5_datagrams(20, 1);
    let (tpl, v9data) = v9_datagrams(10, 12)?;
    let mut v9 = vec![tpl];
    v9.extend(v9data);
    let ipfix = ipfix_datagrams(10, 8)?;
    let sources: [(&str, &[Vec<u8>]); 3] = [
        ("127.0.0.21", &v5),
        ("127.0.0.22", &v9),
        ("127.0.0.23", &ipfix),
    ];
    let mut expected = Vec::new();
    for (i, (ip, dgrams)) in sources.iter().enumerate() {
        let from = SocketAddr::new(ip.parse()?, 0);
        send_all(from, d.target(), dgrams)?;
        let exporter = SocketAddr::new(ip.parse()?, 40_000);
        expected.extend(decode_via_pcap(
            d.dir.path(),
            &format!("codec-{i}.pcap"),
            exporter,
            dgrams,
        )?);
    }
    assert_eq!(
        expected.len(),
        20 * 30 + 10 * 12 + 10 * 8,
        "goflow decode of the same packets"
    );
    let got = d.wait_lines(expected.len())?;
    assert_eq!(
        normalized(&got, &["time_received"])?,
        normalized(&expected, &["time_received"])?
    );
    Ok(())
}
both_receivers!(codec_packets_match_decode);

/// Capture groups in tests/data: templates before their data, one group per exporter.
const CAPTURE_GROUPS: &[&[&str]] = &[
    &["nfv5.pcap"],
    &["data+templates.pcap"],
    &["template.pcap", "data.pcap"],
    &["datalink-template.pcap", "datalink-data.pcap"],
    &[
        "ethernet-over-mpls-with-control-word-template.pcap",
        "ethernet-over-mpls-with-control-word-data.pcap",
    ],
    &["icmp-template.pcap", "icmp-data.pcap"],
    &["ipfix-srv6-template.pcap", "ipfix-srv6-data.pcap"],
    &["ipfixprobe-templates.pcap", "ipfixprobe-data.pcap"],
    &["juniper-cpid-template.pcap", "juniper-cpid-data.pcap"],
    &["mpls.pcap"],
    &["nat.pcap"],
    &["physicalinterfaces.pcap"],
    &[
        "multiplesamplingrates-options-template.pcap",
        "multiplesamplingrates-options-data.pcap",
        "multiplesamplingrates-template.pcap",
        "multiplesamplingrates-data.pcap",
    ],
    &["options-template.pcap", "options-data.pcap"],
    &["samplingrate-template.pcap", "samplingrate-data.pcap"],
];

/// The UDP payloads of a capture, in file order.
fn capture_payloads(path: &Path) -> Result<Vec<Vec<u8>>, Box<dyn Error>> {
    let bytes = std::fs::read(path)?;
    let mut out = Vec::new();
    goflow::pcap::for_each_frame(&bytes, |frame| {
        if let Ok(udp) = goflow::pcap::udp_in_frame(frame.link, frame.data)
            && goflow::pcap::is_netflow(udp.payload)
        {
            out.push(udp.payload.to_vec());
        }
    })?;
    Ok(out)
}

/// Real exporters' datagrams (tests/data), each capture group from its own loopback address:
/// per exporter, the daemon writes what `goflow decode` prints for the same files.
fn captures_match_decode(receiver: &str) -> TestResult {
    let Some(d) = start(&Opts::new(receiver))? else {
        return Ok(());
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut total = 0;
    for (i, group) in CAPTURE_GROUPS.iter().enumerate() {
        let ip = format!("127.0.0.{}", 40 + i);
        let files: Vec<PathBuf> = group.iter().map(|f| data.join(f)).collect();
        let mut dgrams = Vec::new();
        for f in &files {
            dgrams.extend(capture_payloads(f)?);
        }
        send_all(SocketAddr::new(ip.parse()?, 0), d.target(), &dgrams)?;
        let lines = decode_files(&files)?;
        total += lines.len();
        expected.insert(ip, lines);
    }
    assert!(total > 100, "the captures hold {total} records");
    let got = d.wait_lines(total)?;
    let mut by_exporter: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in got {
        by_exporter
            .entry(exporter_of(&l).unwrap_or_default())
            .or_default()
            .push(l);
    }
    for (ip, lines) in &expected {
        let got = by_exporter.remove(ip).unwrap_or_default();
        assert_eq!(
            normalized(&got, &["time_received", "exporter"])?,
            normalized(lines, &["time_received", "exporter"])?,
            "exporter {ip}"
        );
    }
    assert!(
        by_exporter.is_empty(),
        "unexpected exporters: {:?}",
        by_exporter.keys()
    );
    Ok(())
}
both_receivers!(captures_match_decode);

/// One exporter address sends its v9 template from source port A and data from seven other
/// ports; with two workers every data record still decodes (the socket group sends every
/// datagram of one address to the same worker).
fn affinity_keeps_templates_with_their_exporter(receiver: &str) -> TestResult {
    let Some(d) = start(&Opts::new(receiver))? else {
        return Ok(());
    };
    let (template, data) = v9_datagrams(28, 10)?;
    let ip: IpAddr = "127.0.0.9".parse()?;
    send_all(SocketAddr::new(ip, 0), d.target(), &[template])?;
    let sockets: Vec<UdpSocket> = (0..7)
        .map(|_| UdpSocket::bind(SocketAddr::new(ip, 0)))
        .collect::<Result<_, _>>()?;
    for (i, pkt) in data.iter().enumerate() {
        let s = sockets.get(i % sockets.len()).ok_or("no socket")?;
        s.send_to(pkt, d.target())?;
    }
    let got = d.wait_lines(28 * 10)?;
    assert_eq!(got.len(), 280);
    assert!(
        got.iter()
            .all(|l| exporter_of(l).as_deref() == Some("127.0.0.9"))
    );
    Ok(())
}
both_receivers!(affinity_keeps_templates_with_their_exporter);

/// SIGTERM during a stream: with flushes far away (60 s, 10^8 rows, so only the shutdown flush
/// ends them), after SIGTERM every record of every datagram sent before it is in the file, the
/// counters agree, and the exit code is 0. First N datagrams are confirmed received via /status; then M more are sent
/// and SIGTERM follows immediately (those are still in the socket buffer: the drain takes them).
fn sigterm_loses_nothing(receiver: &str) -> TestResult {
    let mut o = Opts::new(receiver);
    o.flush_ms = 60_000;
    o.flush_rows = 100_000_000;
    o.api = true;
    let Some(mut d) = start(&o)? else {
        return Ok(());
    };
    let first = v5_datagrams(400, 2);
    let second = v5_datagrams(400, 3);
    send_all("127.0.0.31:0".parse()?, d.target(), &first)?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let st = d.status()?;
        let n = st
            .pointer("/totals/datagrams")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if n >= 400 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("daemon saw {n} of 400 datagrams").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    send_all("127.0.0.32:0".parse()?, d.target(), &second)?;
    let status = d.terminate()?;
    let log = d.log_text();
    assert!(status.success(), "exit {status}; log: {log}");
    let lines = d.lines();
    assert_eq!(lines.len(), 800 * 30, "log: {log}");
    assert!(
        log.contains("stopped: datagrams 800, records 24000, rows written 24000"),
        "{log}"
    );
    assert!(log.contains("drops: kernel 0, backend rows 0"), "{log}");
    Ok(())
}
both_receivers!(sigterm_loses_nothing);
