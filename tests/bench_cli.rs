//! `goflow bench` end to end: what it writes to a pcap is checked with an independent decoder
//! (tshark: no malformed packets; its record count and byte/packet sums equal bench's summary)
//! and with `goflow decode`; what it sends over loopback arrives from the right exporter
//! addresses with the summary's flow count; bad arguments exit with status 2.
//! Rate accuracy is measured by perf/bench-rate.sh, never asserted here.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn goflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_goflow"))
        .args(args)
        .output()
        .expect("run goflow")
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "goflow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).expect("summary is JSON")
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// tshark's view of a capture: frames it flags (malformed or expert info), and the number, byte
/// sum and packet sum of the flow records it decodes.
fn tshark_totals(pcap: &Path) -> (usize, u64, u64, u64) {
    let p = pcap.to_str().expect("utf-8 path");
    let flagged = Command::new("tshark")
        .args([
            "-r",
            p,
            "-d",
            "udp.port==2055,cflow",
            "-Y",
            "_ws.malformed || _ws.expert",
        ])
        .output()
        .expect("tshark");
    assert!(flagged.status.success());
    let flagged = String::from_utf8_lossy(&flagged.stdout).lines().count();
    let fields = Command::new("tshark")
        .args(["-r", p, "-d", "udp.port==2055,cflow", "-T", "fields"])
        .args(["-e", "cflow.octets", "-e", "cflow.packets"])
        .args(["-E", "occurrence=a", "-E", "aggregator=,"])
        .output()
        .expect("tshark");
    assert!(fields.status.success());
    let (mut n, mut bytes, mut packets) = (0u64, 0u64, 0u64);
    for line in String::from_utf8_lossy(&fields.stdout).lines() {
        let (o, p) = line.split_once('\t').unwrap_or((line, ""));
        for v in o.split(',').filter(|s| !s.is_empty()) {
            n += 1;
            bytes += v.parse::<u64>().expect("octets");
        }
        for v in p.split(',').filter(|s| !s.is_empty()) {
            packets += v.parse::<u64>().expect("packets");
        }
    }
    (flagged, n, bytes, packets)
}

/// `goflow decode`'s totals: records, byte sum, packet sum.
fn decode_totals(pcap: &Path) -> (u64, u64, u64, Vec<Value>) {
    let out = goflow(&["decode", pcap.to_str().expect("utf-8 path")]);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let sum = |k: &str| {
        lines
            .iter()
            .map(|l| l[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    (lines.len() as u64, sum("in_bytes"), sum("in_pkts"), lines)
}

fn write_pcap(dir: &Path, proto: &str, seed: &str) -> (std::path::PathBuf, Value) {
    let path = dir.join(format!("{proto}-{seed}.pcap"));
    let s = summary(&goflow(&[
        "bench",
        "--proto",
        proto,
        "--flows",
        "2000",
        "--v6-share",
        "25",
        "--template-every",
        "7",
        "--seed",
        seed,
        "--write-pcap",
        path.to_str().expect("utf-8 path"),
    ]));
    (path, s)
}

#[test]
fn pcap_totals_match_tshark_and_goflow_decode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tshark = tshark_available();
    if !tshark {
        eprintln!("tshark not installed: checking against goflow decode only");
    }
    for proto in ["v5", "v9", "ipfix", "mixed"] {
        let (path, s) = write_pcap(dir.path(), proto, "1");
        assert_eq!(s["proto"], proto);
        assert_eq!(s["flows"], 2000, "{proto}");
        let (flows, bytes, packets) = (
            s["flows"].as_u64().expect("flows"),
            s["sum_bytes"].as_u64().expect("sum_bytes"),
            s["sum_packets"].as_u64().expect("sum_packets"),
        );
        assert!(bytes > 0 && packets > 0);
        if tshark {
            let (flagged, n, b, p) = tshark_totals(&path);
            assert_eq!(flagged, 0, "{proto}: tshark flags packets");
            assert_eq!((n, b, p), (flows, bytes, packets), "{proto}: tshark");
        }
        let (n, b, p, lines) = decode_totals(&path);
        assert_eq!((n, b, p), (flows, bytes, packets), "{proto}: goflow decode");
        // 25 % of the v9/IPFIX flows are IPv6; v5 carries IPv4 only.
        let v6 = lines.iter().filter(|l| l["ip_version"] == 6).count();
        match proto {
            "v5" => assert_eq!(v6, 0),
            "mixed" => assert!(v6 > 100 && v6 < 500, "{proto}: {v6} IPv6 flows of 2000"),
            _ => assert!(v6 > 350 && v6 < 650, "{proto}: {v6} IPv6 flows of 2000"),
        }
    }
}

#[test]
fn same_seed_same_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = |path: &Path| -> Vec<Value> {
        decode_totals(path)
            .3
            .into_iter()
            .map(|mut l| {
                // Header times follow the clock; everything else follows the seed.
                for k in ["time_received", "first_switched", "last_switched"] {
                    l[k] = Value::Null;
                }
                l
            })
            .collect()
    };
    let (a, _) = write_pcap(dir.path(), "ipfix", "1");
    let b = dir.path().join("again.pcap");
    std::fs::copy(&a, &b).expect("copy");
    let (a2, _) = write_pcap(dir.path(), "ipfix", "1");
    let (c, _) = write_pcap(dir.path(), "ipfix", "2");
    assert_eq!(flows(&b), flows(&a2));
    assert_ne!(flows(&b), flows(&c));
}

/// Reads v5 datagrams until `flows` records arrived (or the deadline): the source addresses
/// seen and the records counted from the headers.
fn receive_v5(sock: &UdpSocket, flows: u64) -> (Vec<SocketAddr>, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let (mut sources, mut n) = (Vec::new(), 0u64);
    while n < flows && Instant::now() < deadline {
        if let Ok((len, from)) = sock.recv_from(&mut buf) {
            assert!(len >= 24 && buf[1] == 5);
            n += u64::from(u16::from_be_bytes([buf[2], buf[3]]));
            if !sources.contains(&from) {
                sources.push(from);
            }
        }
    }
    (sources, n)
}

#[test]
fn sends_over_loopback_from_each_exporter() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let Ok(sock) = UdpSocket::bind(bind) else {
            eprintln!("cannot bind {bind}: skipped");
            continue;
        };
        let target = sock.local_addr().expect("addr").to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_goflow"))
            .args(["bench", "--proto", "v5", "--flows", "300", "--rate", "0"])
            .args(["--exporters", "2", "--target", &target])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (sources, n) = receive_v5(&sock, 300);
        let out = child.wait_with_output().expect("wait");
        let s = summary(&out);
        assert_eq!(n, 300, "{bind}");
        assert_eq!(s["flows"], 300);
        let exporters = s["exporters"].as_array().expect("exporters");
        assert_eq!(exporters.len(), 2);
        let mut want: Vec<String> = exporters
            .iter()
            .map(|e| e["address"].as_str().expect("address").to_string())
            .collect();
        let mut got: Vec<String> = sources.iter().map(|a| a.to_string()).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{bind}");
        if bind.starts_with("127") {
            assert!(want.iter().any(|a| a.starts_with("127.0.0.2:")), "{want:?}");
        }
        // v5 sequence numbers count flows; every datagram carries 30, so each exporter's last
        // sequence number plus 30 is the flows it sent.
        let mut sent = 0;
        for e in exporters {
            assert_eq!(e["first_sequence"], 0);
            sent += e["last_sequence"].as_u64().expect("sequence") + 30;
        }
        assert_eq!(sent, 300);
    }
}

#[test]
fn replays_a_capture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nfv5.pcap");
    let out = dir.path().join("replay.pcap");
    let s = summary(&goflow(&[
        "bench",
        "--pcap",
        capture.to_str().expect("utf-8"),
        "--flows",
        "100",
        "--write-pcap",
        out.to_str().expect("utf-8"),
    ]));
    // The capture holds one 29-record datagram: replayed whole four times.
    assert_eq!(s["flows"], 116);
    assert_eq!(s["datagrams"], 4);
    assert_eq!(s["sum_bytes"], 4 * 88_345);
    let (n, b, _, _) = decode_totals(&out);
    assert_eq!((n, b), (116, 4 * 88_345));
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["bench", "--rate", "-1"][..],
        &["bench", "--rate", "fast"],
        &["bench", "--proto", "v7"],
        &["bench", "--target", "not-an-address"],
        &["bench", "--exporters", "0"],
        &["bench", "--v6-share", "101"],
        &["bench", "--duration", "1", "--flows", "5"],
    ] {
        let out = goflow(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}
