//! The Kafka backend end to end (issue 15): `goflow run` as a child process, IPFIX from three
//! exporters (half the flows IPv6) into a real Kafka-protocol broker (`GOFLOW_TEST_KAFKA`, e.g.
//! Tansu as `.ci/test` starts it; without one each test prints a "skipping ..." line), every
//! partition read back with `assign()`:
//! - protobuf: each FlowMessage decoded with the checked-in prost decoder; count, byte and
//!   packet sums equal what was sent, every flow once, IPv6 flows with 16-byte addresses, the
//!   exporter as sampler_address and as the key, one partition per exporter; the same figures on
//!   /status, /metrics (promtool-clean where installed) and `goflow stats`;
//! - JSON lines parsed back, with the old collector's environment variables (KAFKA_SERVER,
//!   KAFKA_TOPIC, SSL) winning over wrong values in the file.
//!
//! Each test publishes to a topic of its own.

mod kafka_common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use kafka_common::{BIN, Daemon, Exporters, TestResult, Wire, broker, http_get, read_topic, topic};

#[test]
fn protobuf_flows_arrive_once_with_their_sums_and_show_on_the_ops_api() -> TestResult {
    let Some(servers) =
        broker("protobuf_flows_arrive_once_with_their_sums_and_show_on_the_ops_api")
    else {
        return Ok(());
    };
    let topic = topic("pb");
    let dir = tempfile::tempdir()?;
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            "      KAFKA_SERVER: {servers}\n      KAFKA_TOPIC: {topic}\n      \
             flows_per_message: 16\n      flush_ms: 50\n"
        ),
        None,
        &[],
    )?;
    let mut ex = Exporters::new()?;
    ex.send(d.port, 300)?;
    let (n, bytes, packets) = ex.expected();
    d.wait_for("every flow acknowledged", |d| Ok(d.kafka("flows") >= n))?;

    let rb = read_topic(&servers, &topic, Wire::Protobuf, n)?;
    assert_eq!(
        rb.sums(),
        (n, bytes, packets),
        "count, byte and packet sums"
    );
    let counts = rb.counts();
    assert_eq!(counts.len() as u64, n, "distinct flows");
    assert!(counts.values().all(|&c| c == 1), "a flow arrived twice");
    // Odd flows are IPv6: 16-byte addresses, etype 0x86dd; even ones IPv4.
    for f in &rb.flows {
        let v6 = (f.bytes - 1500) % 2 == 1;
        assert_eq!(f.src_len, if v6 { 16 } else { 4 }, "{f:?}");
        assert_eq!(f.etype, if v6 { 0x86dd } else { 0x0800 }, "{f:?}");
    }
    let exporters: BTreeSet<IpAddr> = ex.addrs().into_iter().collect();
    let seen: BTreeSet<IpAddr> = rb.flows.iter().filter_map(|f| f.exporter).collect();
    assert_eq!(seen, exporters, "sampler_address is the exporter");
    // key: exporter (the default): the exporter's 4 address bytes, one partition each.
    assert_eq!(rb.key_partitions.len(), exporters.len(), "{rb:?}");
    for (key, parts) in &rb.key_partitions {
        assert_eq!(key.len(), 4, "{key:?}");
        assert_eq!(parts.len(), 1, "key {key:?} in partitions {parts:?}");
    }

    // /status: the producer's counters match what was read.
    let st = d.status()?;
    let k = &st["backends"][0]["kafka"];
    assert_eq!(k["flows"], n, "{st}");
    assert_eq!(k["messages"], rb.messages, "{st}");
    assert_eq!(k["in_flight"], 0, "{st}");
    assert_eq!(k["delivery_errors"], 0, "{st}");
    assert_eq!(k["ack_latency_us"]["count"], rb.messages, "{st}");
    assert_eq!(k["connected"], true, "{st}");
    assert!(k["bytes"].as_u64().unwrap_or(0) > 50 * n, "{st}");
    assert_eq!(st["backends"][0]["rows_written"], n, "{st}");

    // /metrics: the same figures, in a page Prometheus accepts.
    let (code, page) = http_get(&d.api, "/metrics")?;
    assert_eq!(code, 200);
    let samples = goflow::ops::metrics::parse(&page)?;
    let get = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.label("backend") == Some("k")
                    && label.is_none_or(|(k, v)| s.label(k) == Some(v))
            })
            .map(|s| s.value)
    };
    assert_eq!(get("goflow_kafka_flows_total", None), Some(n as f64));
    assert_eq!(
        get("goflow_kafka_messages_total", None),
        Some(rb.messages as f64)
    );
    assert_eq!(get("goflow_kafka_in_flight_messages", None), Some(0.0));
    assert_eq!(get("goflow_kafka_connected", None), Some(1.0));
    for reason in [
        "timed_out",
        "broker_down",
        "queue_full",
        "too_large",
        "auth",
        "topic",
        "other",
    ] {
        assert_eq!(
            get(
                "goflow_kafka_delivery_errors_total",
                Some(("reason", reason))
            ),
            Some(0.0),
            "{reason}"
        );
    }
    assert_eq!(
        get("goflow_kafka_ack_latency_seconds_count", None),
        Some(rb.messages as f64)
    );
    assert_eq!(
        get(
            "goflow_kafka_ack_latency_seconds_bucket",
            Some(("le", "+Inf"))
        ),
        Some(rb.messages as f64)
    );
    assert!(get("goflow_kafka_ack_latency_seconds_sum", None).is_some_and(|s| s > 0.0));
    assert!(get("goflow_kafka_bytes_total", None).is_some_and(|b| b > 0.0));
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            use std::io::Write as _;
            p.stdin.take().ok_or("stdin")?.write_all(page.as_bytes())?;
            let out = p.wait_with_output()?;
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => {
            println!("promtool not installed (apt-get install prometheus): skipping that check")
        }
    }

    // goflow stats: the producer section after the histograms.
    let out = Command::new(BIN)
        .args(["stats", "--api", &d.api])
        .env_remove("GOFLOW_CONFIG")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("kafka producer [k]"), "{text}");
    assert!(
        text.contains(&format!("{} flows", n)) && text.contains("produce-to-ack"),
        "{text}"
    );
    assert!(text.contains("delivery errors: 0"), "{text}");
    d.term()?;
    Ok(())
}

#[test]
fn json_lines_parse_back_and_the_environment_wins_over_the_file() -> TestResult {
    let Some(servers) = broker("json_lines_parse_back_and_the_environment_wins_over_the_file")
    else {
        return Ok(());
    };
    let topic = topic("json");
    let dir = tempfile::tempdir()?;
    // The file's server (a port nobody serves), topic and SSL are all wrong; the old collector's
    // variables set them right.
    let mut d = Daemon::start(
        dir.path(),
        "      KAFKA_SERVER: 127.0.0.1:9\n      KAFKA_TOPIC: wrong-topic\n      SSL: true\n      \
         format: json\n      key: flow\n      flows_per_message: 8\n      flush_ms: 50\n",
        None,
        &[
            ("KAFKA_SERVER", servers.as_str()),
            ("KAFKA_TOPIC", topic.as_str()),
            ("SSL", "no"),
        ],
    )?;
    let mut ex = Exporters::new()?;
    ex.send(d.port, 120)?;
    let (n, bytes, packets) = ex.expected();
    d.wait_for("every flow acknowledged", |d| Ok(d.kafka("flows") >= n))?;
    let rb = read_topic(&servers, &topic, Wire::Json, n)?;
    assert_eq!(
        rb.sums(),
        (n, bytes, packets),
        "count, byte and packet sums"
    );
    assert!(
        rb.counts().values().all(|&c| c == 1),
        "a flow arrived twice"
    );
    let v6 = rb.flows.iter().filter(|f| f.src_len == 16).count() as u64;
    assert_eq!(v6, n / 2, "IPv6 flows");
    let exporters: BTreeSet<IpAddr> = ex.addrs().into_iter().collect();
    let seen: BTreeSet<IpAddr> = rb.flows.iter().filter_map(|f| f.exporter).collect();
    assert_eq!(seen, exporters);
    // key: flow: an 8-byte 5-tuple bucket, more keys than exporters.
    assert!(rb.key_partitions.keys().all(|k| k.len() == 8), "{rb:?}");
    assert!(rb.key_partitions.len() > exporters.len(), "{rb:?}");
    assert!(
        !d.log().contains("127.0.0.1:9"),
        "the file's server was used:\n{}",
        d.log()
    );
    d.term()?;
    Ok(())
}
