//! What the Kafka end-to-end tests share: the broker from `GOFLOW_TEST_KAFKA` (a printed
//! "skipping ..." line when it is unset or does not answer), `goflow run` as a child process,
//! an IPFIX exporter whose flows are each unique (flow `i`: in_bytes 1500 + i, in_pkts 3 + i,
//! IPv6 for odd `i`), and a reader of every partition of a topic (`assign()`, from the
//! beginning) that decodes each message with the checked-in prost decoder of goflow2's
//! `FlowMessage` (writers/src/kafka/flowpb.rs) or parses its JSON lines.
#![allow(dead_code)] // Each test binary uses a different part of it.

#[path = "../../writers/src/kafka/flowpb.rs"]
#[allow(clippy::all, missing_debug_implementations)]
pub mod flowpb;

use std::collections::BTreeMap;
use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow_codec::encode::{
    IPFIX_TYPICAL_V4_TEMPLATE, IPFIX_TYPICAL_V6_TEMPLATE, IpfixBuilder, IpfixHeader,
    sample_flow_v4, sample_flow_v6,
};
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

pub type TestResult = Result<(), Box<dyn Error>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_goflow");
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Flows per IPFIX datagram (half IPv4, half IPv6).
pub const FLOWS_PER_DATAGRAM: u32 = 10;
const EXPORT_SECS: u32 = 1_700_000_000;

/// The broker to test against, or `None` (after a printed "skipping" line) when
/// `GOFLOW_TEST_KAFKA` is unset or nothing answers there.
pub fn broker(test: &str) -> Option<String> {
    let Some(addr) = std::env::var("GOFLOW_TEST_KAFKA")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        println!("skipping {test}: GOFLOW_TEST_KAFKA (host:port of a Kafka broker) is not set");
        return None;
    };
    let reachable = addr
        .parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !reachable {
        println!("skipping {test}: GOFLOW_TEST_KAFKA={addr} does not answer");
        return None;
    }
    Some(addr)
}

/// A topic name of this test run alone.
pub fn topic(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("goflow-e2e-{tag}-{}-{nanos}", std::process::id())
}

pub fn free_tcp_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `goflow run` with a Kafka backend `k`; killed by its own PID when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub api: String,
    pub dir: PathBuf,
    runs: u32,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Daemon {
    /// Starts goflow in `dir` with `backend_config` (the YAML lines under `config:`, indented
    /// by six spaces) and extra environment variables; waits for its ops API.
    pub fn start(
        dir: &Path,
        backend_config: &str,
        state_dir: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<Daemon, Box<dyn Error>> {
        let mut d = Daemon {
            child: None,
            port: 0,
            api: String::new(),
            dir: dir.to_owned(),
            runs: 0,
        };
        d.restart(backend_config, state_dir, env)?;
        Ok(d)
    }

    pub fn restart(
        &mut self,
        backend_config: &str,
        state_dir: Option<&Path>,
        env: &[(&str, &str)],
    ) -> TestResult {
        self.kill();
        self.runs += 1;
        self.port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        self.api = format!("127.0.0.1:{}", free_tcp_port()?);
        let state = state_dir.map_or_else(
            || self.dir.join("state").display().to_string(),
            |p| p.display().to_string(),
        );
        let cfg = self.dir.join(format!("config-{}.yml", self.runs));
        std::fs::write(
            &cfg,
            format!(
                "backends:\n  k:\n    type: kafka\n    config:\n{backend_config}\
                 frontends:\n  netflow:\n    config: {{bindaddr: 127.0.0.1, bindport: {}, \
                 workers: 1}}\n    backend: k\napi: {}\nstate_dir: {state}\n",
                self.port, self.api
            ),
        )?;
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .current_dir(&self.dir)
            .env_remove("GOFLOW_CONFIG")
            .env_remove("STATE_DIRECTORY");
        for v in [
            "KAFKA_SERVER",
            "KAFKA_TOPIC",
            "SSL",
            "SSL_VERIFY",
            "SASL_USER",
            "SASL_PASSWORD",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.log_path())?)
            .spawn()?;
        self.child = Some(child);
        self.wait_for("the ops API", |d| Ok(http_get(&d.api, "/status").is_ok()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("goflow-{}.log", self.runs))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn wait_for(
        &mut self,
        what: &str,
        mut ok: impl FnMut(&Daemon) -> Result<bool, Box<dyn Error>>,
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

    pub fn status(&self) -> Result<Value, Box<dyn Error>> {
        let (code, body) = http_get(&self.api, "/status")?;
        if code != 200 {
            return Err(format!("/status: {code}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// `backends[0].kafka.<key>` of /status (0 when absent).
    pub fn kafka(&self, key: &str) -> u64 {
        self.status()
            .ok()
            .and_then(|s| s["backends"][0]["kafka"][key].as_u64())
            .unwrap_or(0)
    }

    /// `backends[0].spool.<key>` of /status (0 when absent).
    pub fn spool(&self, key: &str) -> u64 {
        self.status()
            .ok()
            .and_then(|s| s["backends"][0]["spool"][key].as_u64())
            .unwrap_or(0)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns how long the exit took.
    pub fn term(&mut self) -> Result<Duration, Box<dyn Error>> {
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
}

pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), Box<dyn Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head.split(' ').nth(1).ok_or("no status")?.parse()?;
    Ok((code, body.to_owned()))
}

/// IPFIX exporters on 127.0.0.1, .2 and .3 (one observation domain each), sending to one
/// goflow port. Flow `i` (counted over all of them) is unique by its counters.
pub struct Exporters {
    socks: Vec<UdpSocket>,
    seq: Vec<u32>,
    /// Flows sent so far.
    pub sent: u32,
}

impl Exporters {
    pub fn new() -> Result<Exporters, Box<dyn Error>> {
        let socks = (1..=3u8)
            .map(|h| UdpSocket::bind((Ipv4Addr::new(127, 0, 0, h), 0)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exporters {
            seq: vec![0; socks.len()],
            socks,
            sent: 0,
        })
    }

    /// The exporters' addresses.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.socks
            .iter()
            .filter_map(|s| s.local_addr().ok().map(|a| a.ip()))
            .collect()
    }

    /// Sends `datagrams` IPFIX messages (templates in each, then FLOWS_PER_DATAGRAM records
    /// alternating IPv4 and IPv6) round-robin over the exporters, 20 per 5 ms so loopback drops
    /// none.
    pub fn send(&mut self, port: u16, datagrams: u32) -> TestResult {
        for d in 0..datagrams {
            let e = (self.sent / FLOWS_PER_DATAGRAM) as usize % self.socks.len();
            let mut b = IpfixBuilder::new(IpfixHeader {
                export_time: EXPORT_SECS,
                sequence: self.seq[e],
                observation_domain: 7 + e as u32,
            });
            b.template(300, IPFIX_TYPICAL_V4_TEMPLATE)?;
            b.template(301, IPFIX_TYPICAL_V6_TEMPLATE)?;
            b.close_set();
            for _ in 0..FLOWS_PER_DATAGRAM {
                let i = self.sent;
                let (id, fields, mut fl) = if i.is_multiple_of(2) {
                    (300, IPFIX_TYPICAL_V4_TEMPLATE, sample_flow_v4(i))
                } else {
                    (301, IPFIX_TYPICAL_V6_TEMPLATE, sample_flow_v6(i))
                };
                fl.first_unix_ms = u64::from(EXPORT_SECS) * 1000 - 4000;
                fl.last_unix_ms = u64::from(EXPORT_SECS) * 1000 - 10;
                b.data(id, fields, &fl)?;
                self.sent += 1;
            }
            self.seq[e] += b.data_records();
            let mut pkt = Vec::new();
            b.finish(&mut pkt);
            self.socks[e].send_to(&pkt, ("127.0.0.1", port))?;
            if d % 20 == 19 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// (flows, sum of bytes, sum of packets) of every flow sent so far.
    pub fn expected(&self) -> (u64, u64, u64) {
        let n = u64::from(self.sent);
        let tri = n * n.saturating_sub(1) / 2;
        (n, 1500 * n + tri, 3 * n + tri)
    }
}

/// One flow read back, whatever the format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub bytes: u64,
    pub packets: u64,
    /// The source address's length in bytes (4 or 16).
    pub src_len: usize,
    pub etype: u32,
    /// The exporter (sampler_address / `exporter`).
    pub exporter: Option<IpAddr>,
}

/// Everything read back from a topic.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub messages: u64,
    pub flows: Vec<Got>,
    /// message key -> partitions it was seen in.
    pub key_partitions: BTreeMap<Vec<u8>, std::collections::BTreeSet<i32>>,
    pub partitions: usize,
}

impl ReadBack {
    /// (flows, sum of bytes, sum of packets).
    pub fn sums(&self) -> (u64, u64, u64) {
        (
            self.flows.len() as u64,
            self.flows.iter().map(|f| f.bytes).sum(),
            self.flows.iter().map(|f| f.packets).sum(),
        )
    }

    /// in_bytes -> times seen.
    pub fn counts(&self) -> BTreeMap<u64, u32> {
        let mut m = BTreeMap::new();
        for f in &self.flows {
            *m.entry(f.bytes).or_insert(0) += 1;
        }
        m
    }
}

/// How a message value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Protobuf,
    Json,
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Parses one message value into its flows.
pub fn parse_value(wire: Wire, mut value: &[u8]) -> Result<Vec<Got>, Box<dyn Error>> {
    let mut out = Vec::new();
    match wire {
        Wire::Protobuf => {
            while !value.is_empty() {
                let m = flowpb::FlowMessage::decode_length_delimited(&mut value)?;
                out.push(Got {
                    bytes: m.bytes,
                    packets: m.packets,
                    src_len: m.src_addr.len(),
                    etype: m.etype,
                    exporter: ip_of(&m.sampler_address),
                });
            }
        }
        Wire::Json => {
            for line in std::str::from_utf8(value)?.lines() {
                let v: Value = serde_json::from_str(line)?;
                let src: IpAddr = v["src_ip"].as_str().ok_or("no src_ip")?.parse()?;
                out.push(Got {
                    bytes: v["in_bytes"].as_u64().ok_or("no in_bytes")?,
                    packets: v["in_pkts"].as_u64().ok_or("no in_pkts")?,
                    src_len: if src.is_ipv6() { 16 } else { 4 },
                    etype: v["etype"].as_u64().map_or(0, |e| e as u32),
                    exporter: v["exporter"].as_str().and_then(|s| s.parse().ok()),
                });
            }
        }
    }
    Ok(out)
}

/// Reads every partition of `topic` from the beginning until at least `want` flows arrived
/// (or the deadline), then a moment longer so a duplicate beyond `want` shows too.
pub fn read_topic(
    servers: &str,
    topic: &str,
    wire: Wire,
    want: u64,
) -> Result<ReadBack, Box<dyn Error>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if parts == 0 {
        return Err(format!("topic {topic} has no partitions").into());
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, i32::try_from(p)?, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut rb = ReadBack {
        partitions: parts,
        ..ReadBack::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut extra_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || extra_until.is_some_and(|t| now > t) {
            break;
        }
        if extra_until.is_none() && rb.flows.len() as u64 >= want {
            extra_until = Some(now + Duration::from_millis(500));
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        rb.messages += 1;
        rb.key_partitions
            .entry(m.key().unwrap_or_default().to_vec())
            .or_default()
            .insert(m.partition());
        rb.flows
            .extend(parse_value(wire, m.payload().unwrap_or_default())?);
    }
    Ok(rb)
}
