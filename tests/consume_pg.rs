//! The Kafka frontend end to end (issue 18): `goflow run` processes as consumer group members
//! reading a real broker (Tansu, `$GOFLOW_TEST_KAFKA`) into a real PostgreSQL, checked by the
//! stored rows: every flow carries a unique byte counter, so count, sum and distinct count say
//! nothing was lost and nothing stored twice.
//! - a goflow collector (netflow -> kafka backend) -> topic -> two consumers -> PostgreSQL;
//! - SIGKILL of one consumer mid-stream, restart: exact;
//! - PostgreSQL cut during consumption (a TCP proxy), and a commit whose reply is lost: exact;
//! - goflow2-format messages written by the test, with a poison message in the middle of the
//!   partition: the good flows are stored, the poison one counted and skipped.
//!
//! Without `$GOFLOW_TEST_KAFKA` each test prints a "skipping" line and passes. PostgreSQL from
//! PGHOST/PGPORT/PGUSER/PGDATABASE (default 127.0.0.1:5432 postgres/test).

#[path = "../writers/tests/pg_common/proxy.rs"]
mod proxy;

use std::error::Error;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};
use goflow_writers::kafka::rdkafka;
use proxy::Proxy;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_goflow");
const DEADLINE: Duration = Duration::from_secs(90);

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn broker(test: &str) -> Option<String> {
    match std::env::var("GOFLOW_TEST_KAFKA") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            println!("skipping {test}: GOFLOW_TEST_KAFKA is not set (a Kafka broker, e.g. Tansu)");
            None
        }
    }
}

/// A name unique to this run.
fn unique(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    format!("consume_{tag}_{}_{t}", std::process::id())
}

struct Pg {
    host: String,
    port: u16,
    user: String,
    db: String,
}

impl Pg {
    fn connect() -> Result<Pg, Box<dyn Error>> {
        let pg = Pg {
            host: env_or("PGHOST", "127.0.0.1"),
            port: env_or("PGPORT", "5432").parse()?,
            user: env_or("PGUSER", "postgres"),
            db: env_or("PGDATABASE", "test"),
        };
        if pg.one("SELECT 1").as_deref() != Some("1") {
            return Err(format!("no PostgreSQL reachable at {}:{}", pg.host, pg.port).into());
        }
        Ok(pg)
    }

    fn one(&self, sql: &str) -> Option<String> {
        let out = Command::new("psql")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args([
                "-U", &self.user, "-d", &self.db, "-X", "-A", "-t", "-q", "-c", sql,
            ])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// (rows, sum of in_bytes, distinct in_bytes) of `table`; zeros while it does not exist.
    fn totals(&self, table: &str) -> (u64, u64, u64) {
        let r = self.one(&format!(
            "SELECT count(*) || ',' || coalesce(sum(in_bytes), 0) || ',' || \
             count(DISTINCT in_bytes) FROM {table}"
        ));
        let v: Vec<u64> = r
            .unwrap_or_default()
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect();
        match v[..] {
            [a, b, c] => (a, b, c),
            _ => (0, 0, 0),
        }
    }
}

/// (rows, sum, distinct) of flows with in_bytes `base .. base + n`.
fn expected(base: u64, n: u64) -> (u64, u64, u64) {
    (n, base * n + n * n.saturating_sub(1) / 2, n)
}

fn create_topic(broker: &str, topic: &str, partitions: i32) -> TestResult {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = block_on(admin.create_topics(
        [&t],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for r in res {
        r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Runs a future to completion on this thread (the admin client's futures need no runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn producer(broker: &str) -> Result<ThreadedProducer<DefaultProducerContext>, Box<dyn Error>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()?)
}

/// Sends every value (keyed by its index, so they spread over the partitions) and waits for
/// the broker's acknowledgements.
fn produce(broker: &str, topic: &str, values: &[Vec<u8>]) -> TestResult {
    let p = producer(broker)?;
    for (i, v) in values.iter().enumerate() {
        let key = (i as u32).to_be_bytes();
        let mut rec = BaseRecord::to(topic).key(&key[..]).payload(&v[..]);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        return Err(e.into());
                    }
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One goflow2 `FlowMessage` (pb/flow.proto numbers), varint-delimited as goflow2 writes it.
fn flow_message(in_bytes: u64, src: [u8; 4]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut int = |f: u64, v: u64| {
        varint(&mut body, f << 3);
        varint(&mut body, v);
    };
    int(1, 3); // NETFLOW_V9
    int(110, 1_700_000_000_000_000_000);
    int(111, 1_699_999_990_000_000_000);
    int(112, 1_699_999_999_000_000_000);
    int(9, in_bytes);
    int(10, 2);
    int(20, 17);
    int(21, 53);
    int(22, 40_000);
    int(30, 0x0800);
    body.extend_from_slice(&[6 << 3 | 2, 4]);
    body.extend_from_slice(&src);
    body.extend_from_slice(&[7 << 3 | 2, 4, 198, 51, 100, 7]);
    body.extend_from_slice(&[11 << 3 | 2, 4, 192, 0, 2, 10]);
    let mut msg = Vec::new();
    varint(&mut msg, body.len() as u64);
    msg.extend_from_slice(&body);
    msg
}

/// Messages of `per_message` flows each, flow i with in_bytes `base + i`.
fn messages(base: u64, flows: u64, per_message: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < flows {
        let mut m = Vec::new();
        for _ in 0..per_message.min(flows - i) {
            m.extend(flow_message(base + i, [10, 1, (i >> 8) as u8, i as u8]));
            i += 1;
        }
        out.push(m);
    }
    out
}

fn http_get(addr: &str, path: &str) -> Result<(u16, String), Box<dyn Error>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head.split(' ').nth(1).ok_or("no status")?.parse()?;
    Ok((code, body.to_owned()))
}

fn status_of(api: &str) -> Result<Value, Box<dyn Error>> {
    let (code, body) = http_get(api, "/status")?;
    if code != 200 {
        return Err(format!("/status: {code}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

/// Partitions assigned to the goflow at `api`, from /status.
fn assigned(api: &str) -> usize {
    status_of(api)
        .ok()
        .and_then(|s| s["kafka"]["partitions"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn free_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `goflow run` child (restartable), with its config and log under a temp dir.
struct Goflow {
    name: String,
    dir: PathBuf,
    config: String,
    api: String,
    child: Option<Child>,
    runs: u32,
}

impl Drop for Goflow {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Goflow {
    /// `body` is the config without `api` and `state_dir` (added here).
    fn new(dir: &std::path::Path, name: &str, body: String) -> Result<Goflow, Box<dyn Error>> {
        let api = format!("127.0.0.1:{}", free_port()?);
        let state = dir.join(format!("state-{name}"));
        let config = format!("{body}api: {api}\nstate_dir: {}\n", state.display());
        Ok(Goflow {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            config,
            api,
            child: None,
            runs: 0,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The current run's log file.
    fn log_path(&self) -> std::path::PathBuf {
        self.dir.join(format!("{}-{}.log", self.name, self.runs))
    }

    fn start(&mut self) -> TestResult {
        self.runs += 1;
        let cfg = self.dir.join(format!("{}.yml", self.name));
        std::fs::write(&cfg, &self.config)?;
        let log = self.dir.join(format!("{}-{}.log", self.name, self.runs));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .current_dir(&self.dir)
            .env_remove("GOFLOW_CONFIG")
            .env_remove("STATE_DIRECTORY")
            .env_remove("SQL_PASSWORD")
            .env_remove("KAFKA_SERVER")
            .env_remove("KAFKA_TOPIC")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()?;
        self.child = Some(child);
        let api = self.api.clone();
        self.wait_for("the ops API", || Ok(http_get(&api, "/status").is_ok()))
    }

    fn wait_for(
        &mut self,
        what: &str,
        mut ok: impl FnMut() -> Result<bool, Box<dyn Error>>,
    ) -> TestResult {
        let t0 = Instant::now();
        loop {
            if ok()? {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                return Err(format!(
                    "{} exited ({status}) waiting for {what}:\n{}",
                    self.name,
                    self.log()
                )
                .into());
            }
            if t0.elapsed() > DEADLINE {
                return Err(format!(
                    "{}: not {what} within {DEADLINE:?}:\n{}",
                    self.name,
                    self.log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self) -> Result<Value, Box<dyn Error>> {
        status_of(&self.api)
    }

    fn metrics(&self) -> Result<String, Box<dyn Error>> {
        Ok(http_get(&self.api, "/metrics")?.1)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn term(&mut self) -> TestResult {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        let t0 = Instant::now();
        while c.try_wait()?.is_none() {
            if t0.elapsed() > DEADLINE {
                let _ = c.kill();
                return Err(format!("{}: no exit after SIGTERM", self.name).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// A test's table, dropped (with its positions table) at the end.
struct Table<'a> {
    pg: &'a Pg,
    name: String,
}

impl Drop for Table<'_> {
    fn drop(&mut self) {
        let _ = self
            .pg
            .one(&format!("DROP TABLE IF EXISTS {} CASCADE", self.name));
        let _ = self
            .pg
            .one(&format!("DROP TABLE IF EXISTS {}_positions", self.name));
    }
}

/// A consumer's config: PostgreSQL at `pg_port` (the server or a proxy), topic, group.
fn consumer_config(pg: &Pg, pg_port: u16, table: &str, broker: &str, topic: &str) -> String {
    format!(
        "backends:\n  db:\n    type: postgres\n    config:\n      SQL_SERVER: {}\n      \
         SQL_PORT: {pg_port}\n      SQL_USERNAME: {}\n      SQL_DB: {}\n      SQL_TABLE: {table}\n      \
         flush_rows: 2000\n      flush_ms: 100\n      connections: 2\n\
         frontends:\n  kafka:\n    config:\n      KAFKA_SERVER: {broker}\n      \
         KAFKA_TOPIC: {topic}\n      group_id: {topic}-g\n      session_timeout_ms: 6000\n    \
         backend: db\n",
        pg.host, pg.user, pg.db
    )
}

fn wait_rows(pg: &Pg, table: &str, want: (u64, u64, u64), who: &mut Goflow) -> TestResult {
    let mut last = (0, 0, 0);
    let r = who.wait_for(&format!("{want:?} stored"), || {
        last = pg.totals(table);
        Ok(last.0 >= want.0)
    });
    r.map_err(|e| format!("{e}\n(last totals {last:?})"))?;
    // Nothing more may arrive (a duplicate after the count is reached).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pg.totals(table), want, "rows, sum, distinct in {table}");
    Ok(())
}

#[test]
fn collector_to_kafka_to_two_consumers_stores_every_flow_once() -> TestResult {
    let Some(broker) = broker("collector_to_kafka_to_two_consumers") else {
        return Ok(());
    };
    let pg = Pg::connect()?;
    let name = unique("two");
    let topic = name.replace('_', "-");
    create_topic(&broker, &topic, 4)?;
    let table = Table {
        pg: &pg,
        name: name.clone(),
    };
    let dir = tempfile::tempdir()?;

    // The collector: NetFlow v5 in, goflow's protobuf out (64 flows a message, key: flow).
    let udp = free_port()?;
    let mut collector = Goflow::new(
        dir.path(),
        "collector",
        format!(
            "backends:\n  k:\n    type: kafka\n    config: {{KAFKA_SERVER: {broker}, \
             KAFKA_TOPIC: {topic}, key: flow}}\nfrontends:\n  netflow:\n    config: \
             {{bindaddr: 127.0.0.1, bindport: {udp}, workers: 1}}\n    backend: k\n"
        ),
    )?;
    collector.start()?;
    let mut a = Goflow::new(
        dir.path(),
        "a",
        consumer_config(&pg, pg.port, &table.name, &broker, &topic),
    )?;
    let mut b = Goflow::new(
        dir.path(),
        "b",
        consumer_config(&pg, pg.port, &table.name, &broker, &topic),
    )?;
    a.start()?;
    b.start()?;
    // Both members hold partitions before the flows arrive (Tansu's JoinGroup takes a few s).
    let (api_a, api_b) = (a.api.clone(), b.api.clone());
    a.wait_for("the group to split the partitions", || {
        let (na, nb) = (assigned(&api_a), assigned(&api_b));
        Ok(na + nb == 4 && na > 0 && nb > 0)
    })?;

    let exporter = UdpSocket::bind("127.0.0.1:0")?;
    let packets = 300u32;
    let mut sent = 0u32;
    for p in 0..packets {
        let mut bld = V5Builder::new(V5Header {
            sys_uptime_ms: 3_600_000,
            unix_secs: 1_700_000_000,
            flow_sequence: sent,
            ..V5Header::default()
        });
        for _ in 0..30 {
            bld.push(&sample_flow_v4(sent))?;
            sent += 1;
        }
        let mut pkt = Vec::new();
        bld.finish(&mut pkt);
        exporter.send_to(&pkt, ("127.0.0.1", udp))?;
        if p % 20 == 19 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // sample_flow_v4(i) has in_bytes 1500 + i.
    wait_rows(&pg, &table.name, expected(1500, u64::from(sent)), &mut a)?;
    // Both consumers wrote some of them.
    let stored = |g: &Goflow| -> u64 {
        g.status()
            .ok()
            .and_then(|s| s["kafka"]["rows_stored"].as_u64())
            .unwrap_or(0)
    };
    let (sa, sb) = (stored(&a), stored(&b));
    assert_eq!(sa + sb, u64::from(sent), "a {sa} + b {sb}");
    assert!(
        sa > 0 && sb > 0,
        "both consumers stored rows: a {sa}, b {sb}"
    );
    let m = a.metrics()?;
    assert!(m.contains("goflow_kafka_consumer_lag{"), "{m}");
    a.term()?;
    b.term()?;
    collector.term()?;
    Ok(())
}

#[test]
fn sigkill_of_a_consumer_mid_stream_and_restart_is_exact() -> TestResult {
    let Some(broker) = broker("sigkill_of_a_consumer_mid_stream") else {
        return Ok(());
    };
    let pg = Pg::connect()?;
    let name = unique("kill");
    let topic = name.replace('_', "-");
    create_topic(&broker, &topic, 4)?;
    let table = Table {
        pg: &pg,
        name: name.clone(),
    };
    let dir = tempfile::tempdir()?;
    let base = 10_000u64;
    let first = 30_000u64;
    produce(&broker, &topic, &messages(base, first, 10))?;

    let cfg = consumer_config(&pg, pg.port, &table.name, &broker, &topic);
    let mut a = Goflow::new(dir.path(), "a", cfg.clone())?;
    let mut b = Goflow::new(dir.path(), "b", cfg)?;
    a.start()?;
    b.start()?;
    // Kill one as soon as rows arrive (it holds unstored rows of its partitions then).
    a.wait_for("the first rows", || Ok(pg.totals(&table.name).0 > 0))?;
    a.kill();
    let after_kill = pg.totals(&table.name).0;
    // More flows while it is down; its partitions move to b after the session timeout.
    let second = 20_000u64;
    produce(&broker, &topic, &messages(base + first, second, 10))?;
    a.start()?;
    wait_rows(&pg, &table.name, expected(base, first + second), &mut b)?;
    assert!(
        after_kill < first + second,
        "the kill came before everything was stored ({after_kill})"
    );
    a.term()?;
    b.term()?;
    Ok(())
}

#[test]
fn a_postgres_outage_and_a_lost_commit_reply_lose_and_repeat_nothing() -> TestResult {
    let Some(broker) = broker("a_postgres_outage") else {
        return Ok(());
    };
    let pg = Pg::connect()?;
    let name = unique("outage");
    let topic = name.replace('_', "-");
    create_topic(&broker, &topic, 2)?;
    let table = Table {
        pg: &pg,
        name: name.clone(),
    };
    let dir = tempfile::tempdir()?;
    let proxy = Proxy::start((pg.host.clone(), pg.port));
    let mut c = Goflow::new(
        dir.path(),
        "c",
        consumer_config(&pg, proxy.port, &table.name, &broker, &topic),
    )?;
    c.start()?;
    let base = 5_000_000u64;
    produce(&broker, &topic, &messages(base, 5000, 50))?;
    wait_rows(&pg, &table.name, expected(base, 5000), &mut c)?;

    // Down: the flows wait in Kafka (the consumer pauses), nothing is lost.
    proxy.cut();
    produce(&broker, &topic, &messages(base + 5000, 20_000, 50))?;
    let api = c.api.clone();
    c.wait_for("the backend to report the outage", || {
        Ok(status_of(&api)?["backends"][0]["healthy"] == Value::Bool(false))
    })?;
    assert_eq!(pg.totals(&table.name).0, 5000, "nothing stored while down");
    proxy.restore();
    wait_rows(&pg, &table.name, expected(base, 25_000), &mut c)?;

    // A commit that reaches the server but whose reply is lost: asked before the retry.
    proxy.lose_next_commit();
    produce(&broker, &topic, &messages(base + 25_000, 5000, 50))?;
    wait_rows(&pg, &table.name, expected(base, 30_000), &mut c)?;
    // The rows of the lost reply are in the table before the lane, retrying, asks the stored
    // offsets what became of them: wait for its answer, then nothing may have been repeated.
    let log = c.log_path();
    c.wait_for("the lost reply resolved from the stored offsets", || {
        Ok(std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("commit reply was lost is stored"))
    })?;
    assert_eq!(
        pg.totals(&table.name),
        expected(base, 30_000),
        "rows, sum, distinct after the lost reply was resolved"
    );
    c.term()?;
    Ok(())
}

#[test]
fn goflow2_messages_with_a_poison_message_in_the_middle() -> TestResult {
    let Some(broker) = broker("goflow2_messages_with_a_poison_message") else {
        return Ok(());
    };
    let pg = Pg::connect()?;
    let name = unique("poison");
    let topic = name.replace('_', "-");
    create_topic(&broker, &topic, 1)?;
    let table = Table {
        pg: &pg,
        name: name.clone(),
    };
    let dir = tempfile::tempdir()?;
    // goflow2's output: one delimited FlowMessage per message; in the middle a message that
    // is not protobuf, one whose flow is cut short and a JSON line.
    let base = 7_000u64;
    let mut values = messages(base, 500, 1);
    let tail = values.split_off(250);
    values.push(b"\xff\xff\xff\xff not a flow".to_vec());
    let mut cut = flow_message(1, [10, 9, 9, 9]);
    cut.truncate(cut.len() - 3);
    values.push(cut);
    values.push(b"{\"in_bytes\": 1}\n".to_vec());
    values.extend(tail);
    produce(&broker, &topic, &values)?;

    let mut c = Goflow::new(
        dir.path(),
        "c",
        consumer_config(&pg, pg.port, &table.name, &broker, &topic),
    )?;
    c.start()?;
    wait_rows(&pg, &table.name, expected(base, 500), &mut c)?;
    let row = pg
        .one(&format!(
            "SELECT src_ip || ' ' || dst_ip || ' ' || exporter || ' ' || protocol || ' ' || \
             dst_port || ' ' || in_pkts || ' ' || ip_version || ' ' || \
             to_char(first_switched AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
             FROM {} WHERE in_bytes = {base}",
            table.name
        ))
        .unwrap_or_default();
    assert_eq!(
        row,
        "10.1.0.0/32 198.51.100.7/32 192.0.2.10/32 17 40000 2 4 2023-11-14 22:13:10"
    );
    let s = c.status()?;
    let bad = &s["kafka"]["bad_messages"];
    let total: u64 = [
        "malformed",
        "truncated",
        "wrong_format",
        "empty",
        "bad_value",
    ]
    .iter()
    .map(|k| bad[*k].as_u64().unwrap_or(0))
    .sum();
    assert_eq!(total, 3, "{bad}");
    assert_eq!(bad["wrong_format"], 1, "{bad}");
    assert!(
        c.log().contains(&format!("{topic}/0 offset 250")),
        "the first bad message is logged with its place:\n{}",
        c.log()
    );
    let m = c.metrics()?;
    assert!(
        m.contains("goflow_kafka_consumer_bad_messages_total{reason=\"wrong_format\"} 1"),
        "{m}"
    );
    c.term()?;
    Ok(())
}
