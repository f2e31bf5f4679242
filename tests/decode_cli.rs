//! `goflow decode` end to end: the built binary reads captures and prints one JSON object per
//! flow record. Inputs are a pcap written here from `codec::encode` v5 packets (expected values
//! are the flows that went in) and a real Cisco v5 capture (expected values from tshark).

// The expected JSON objects have ~45 keys: more than serde_json's json! recurses by default.
#![recursion_limit = "256"]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};

use goflow::pcap::{PcapWriter, WriteLink};
use goflow_codec::encode::{Flow, V5Builder, V5Header, sample_flow_v4};
use serde_json::Value;

fn goflow_decode(files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_goflow"))
        .arg("decode")
        .args(files)
        .output()
        .expect("run goflow")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn rfc3339(us: i64) -> String {
    let mut v = Vec::new();
    goflow_writers::json::write_rfc3339(us, &mut v);
    String::from_utf8(v).expect("ascii")
}

const EXPORT_SECS: u32 = 1_700_000_000;
const UPTIME_MS: u32 = 3_600_000;

/// Two v5 datagrams from one exporter (30 + 5 flows), one from another (IPv6 transport), and
/// two UDP packets that are not NetFlow.
fn write_capture(path: &Path) -> Vec<(SocketAddr, i64, Flow, u32)> {
    let collector4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2055);
    let collector6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 2055);
    let exp_a = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 50_000);
    let exp_b = SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)),
        50_001,
    );
    let file = std::fs::File::create(path).expect("create pcap");
    let mut w =
        PcapWriter::new(std::io::BufWriter::new(file), WriteLink::Ethernet).expect("pcap header");
    let mut expected = Vec::new();
    let mut seq = 0u32;
    let mut i = 0u32;
    for (exporter, n, ts, rate) in [
        (exp_a, 30u32, 1_700_000_005_000_001i64, 0u16),
        (exp_a, 5, 1_700_000_006_000_000, 0),
        (exp_b, 3, 1_700_000_007_250_000, 0x4000 | 50),
    ] {
        let mut b = V5Builder::new(V5Header {
            sys_uptime_ms: UPTIME_MS,
            unix_secs: EXPORT_SECS,
            flow_sequence: seq,
            engine_type: 0,
            engine_id: 7,
            sampling_interval: rate,
            ..V5Header::default()
        });
        for _ in 0..n {
            let mut fl = sample_flow_v4(i);
            fl.bytes = 40 + u64::from(i) * 97;
            fl.packets = 1 + u64::from(i % 13);
            fl.protocol = [6u8, 17, 1][(i % 3) as usize];
            b.push(&fl).expect("at most 30");
            expected.push((exporter, ts, fl, u32::from(rate & 0x3fff)));
            i += 1;
        }
        seq += n;
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        let dst = if exporter.is_ipv4() {
            collector4
        } else {
            collector6
        };
        w.write_udp(ts, exporter, dst, &pkt).expect("write");
        // Noise: DNS-looking and junk UDP payloads are skipped.
        w.write_udp(ts + 1, exporter, dst, b"\x12\x34\x01\x00")
            .expect("write");
    }
    w.flush().expect("flush");
    expected
}

#[test]
fn decodes_encoded_v5_packets_to_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v5.pcap");
    let expected = write_capture(&path);
    let out = goflow_decode(&[&path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), expected.len(), "stderr: {stderr}");
    for (j, (exporter, ts, fl, rate)) in lines.iter().zip(&expected) {
        let want = serde_json::json!({
            "time_received": rfc3339(*ts),
            "first_switched": rfc3339(fl.first_unix_ms as i64 * 1000),
            "last_switched": rfc3339(fl.last_unix_ms as i64 * 1000),
            "exporter": exporter.ip().to_string(),
            "observation_domain": 7,
            "sampling_rate": (*rate).max(1),
            "src_ip": fl.src_ip.to_string(),
            "dst_ip": fl.dst_ip.to_string(),
            "next_hop": fl.next_hop.to_string(),
            "src_port": fl.src_port,
            "dst_port": fl.dst_port,
            "protocol": fl.protocol,
            "in_bytes": fl.bytes,
            "in_pkts": fl.packets,
            "tcp_flags": fl.tcp_flags,
            "tos": fl.tos,
            "input_if": fl.input_if,
            "output_if": fl.output_if,
            "src_as": fl.src_as,
            "dst_as": fl.dst_as,
            "src_mask": fl.src_mask,
            "dst_mask": fl.dst_mask,
            "direction": null,
            "ip_version": 4,
            // v5 has no sampling source but its header: 0 there means unknown (stored as 1).
            "sampling_source": if *rate == 0 { "unknown" } else { "v5_header" },
            // v5 carries ICMP type and code in the destination port.
            "icmp_type": (fl.protocol == 1).then_some(fl.dst_port >> 8),
            "icmp_code": (fl.protocol == 1).then_some(fl.dst_port & 0xff),
            "out_bytes": null,
            "out_pkts": null,
            "fw_event": null,
            "vlan": null,
            "post_vlan": null,
            "src_mac": null,
            "dst_mac": null,
            "mpls_label": null,
            "bgp_next_hop": null,
            "post_nat_src_ip": null,
            "post_nat_dst_ip": null,
            "post_nat_src_port": null,
            "post_nat_dst_port": null,
            "ingress_vrf": null,
            "egress_vrf": null,
            "flow_end_reason": null,
            "forwarding_status": null,
            "etype": 0x0800,
        });
        assert_eq!(j, &want);
    }
    assert!(
        stderr.contains("6 packets")
            && stderr.contains("3 NetFlow datagrams")
            && stderr.contains("38 flow records")
            && stderr.contains("0 errors"),
        "summary: {stderr}"
    );
}

#[test]
fn not_a_capture_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are not packets\n").expect("write");
    let out = goflow_decode(&[&path]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a pcap or pcapng file"), "{stderr}");
    assert!(stderr.contains("notes.txt"), "{stderr}");

    let missing = dir.path().join("missing.pcap");
    let out = goflow_decode(&[&missing]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pcap"));
}

#[test]
fn truncated_capture_still_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v5.pcap");
    let expected = write_capture(&path);
    let bytes = std::fs::read(&path).expect("read");
    // Cut inside the last NetFlow packet's record: the first two datagrams still decode.
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).expect("write");
    let out = goflow_decode(&[&cut]);
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), expected.len() - 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("mid-packet"));
}

/// A real Cisco NetFlow v5 export (Akvorado test data). Expected values from
/// `tshark -r tests/data/nfv5.pcap -d udp.port==9990,cflow -V`.
#[test]
fn akvorado_nfv5_matches_tshark() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nfv5.pcap");
    let out = goflow_decode(&[&path]);
    assert!(out.status.success());
    let lines = json_lines(&out);
    // tshark: Count: 29.
    assert_eq!(lines.len(), 29);
    // tshark: sums of cflow.octets and cflow.packets over the 29 pdus.
    let sum = |k: &str| {
        lines
            .iter()
            .map(|l| l[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("in_bytes"), 88_345);
    assert_eq!(sum("in_pkts"), 78);
    // tshark pdu 2/29; header SysUptime 2874339 s, CurrentSecs 1680626679, EngineId 3;
    // StartTime 2874315 s and EndTime 2874324 s are 24 and 15 s before the export time.
    let want = serde_json::json!({
        "time_received": "2023-04-05T00:44:45.099595Z",
        "first_switched": "2023-04-04T16:44:15.000000Z",
        "last_switched": "2023-04-04T16:44:24.000000Z",
        "exporter": "10.19.144.41",
        "observation_domain": 3,
        // tshark: SamplingInterval 0 (unknown), stored as 1.
        "sampling_rate": 1,
        "src_ip": "173.194.4.8",
        "dst_ip": "202.160.21.5",
        "next_hop": "61.6.255.150",
        "src_port": 443,
        "dst_port": 37422,
        "protocol": 6,
        "in_bytes": 10262,
        "in_pkts": 7,
        "tcp_flags": 16,
        "tos": 0,
        "input_if": 115,
        "output_if": 86,
        "src_as": 15169,
        "dst_as": 0,
        "src_mask": 19,
        "dst_mask": 27,
        "direction": null,
        "ip_version": 4,
        "sampling_source": "unknown",
        "icmp_type": null,
        "icmp_code": null,
        "out_bytes": null,
        "out_pkts": null,
        "fw_event": null,
        "vlan": null,
        "post_vlan": null,
        "src_mac": null,
        "dst_mac": null,
        "mpls_label": null,
        "bgp_next_hop": null,
        "post_nat_src_ip": null,
        "post_nat_dst_ip": null,
        "post_nat_src_port": null,
        "post_nat_dst_port": null,
        "ingress_vrf": null,
        "egress_vrf": null,
        "flow_end_reason": null,
        "forwarding_status": null,
        "etype": 0x0800,
    });
    assert_eq!(lines[1], want);
}

/// The same capture as pcapng (`editcap -F pcapng nfv5.pcap nfv5.pcapng`) decodes identically.
#[test]
fn pcapng_decodes_like_pcap() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let a = goflow_decode(&[&dir.join("nfv5.pcap")]);
    let b = goflow_decode(&[&dir.join("nfv5.pcapng")]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(json_lines(&a).len(), 29);
    assert_eq!(a.stdout, b.stdout);
}

/// Templates and sampling options learned from one file decode the data of the next (Akvorado
/// v9 captures, one datagram each). Expected values from tshark over the four files merged in
/// this order (`mergecap -a`): 4 flows; flow 1 198.38.121.178:443 -> 91.170.143.87:19624,
/// 1500 octets, 1 packet; SamplerRandomInterval 30000 from the options data.
#[test]
fn templates_and_options_carry_over_between_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let files: Vec<_> = [
        "options-template.pcap",
        "options-data.pcap",
        "template.pcap",
        "data.pcap",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = goflow_decode(&refs);
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    let first = &lines[0];
    assert_eq!(first["src_ip"], "198.38.121.178");
    assert_eq!(first["dst_ip"], "91.170.143.87");
    assert_eq!(first["src_port"], 443);
    assert_eq!(first["dst_port"], 19624);
    assert_eq!(first["in_bytes"], 1500);
    assert_eq!(first["in_pkts"], 1);
    assert!(lines.iter().all(|l| l["sampling_rate"] == 30000));

    // The data alone: nothing decodes, and the summary says why.
    let out = goflow_decode(&[&dir.join("data.pcap")]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One data set of 4 records: counted as what it is (its records cannot be counted
    // without the template), with its bytes.
    assert!(
        stderr.contains("0 flow records, 1 data set without a template ("),
        "{stderr}"
    );

    // --summary: no JSON; per exporter what it sent, and what the options taught.
    let out = Command::new(env!("CARGO_BIN_EXE_goflow"))
        .arg("decode")
        .arg("--summary")
        .args(&files)
        .output()
        .expect("run goflow");
    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!report.contains('{'), "{report}");
    assert!(
        report.contains("4 flow records, 4 options records"),
        "{report}"
    );
    assert!(report.contains("\nexporter "), "{report}");
    assert!(report.contains("1 in 30000"), "{report}");
    assert!(
        report.contains("sampling from options (domain "),
        "{report}"
    );
    assert!(
        report.contains(" options ("),
        "the options template is listed: {report}"
    );
}

#[test]
fn decode_dash_reads_the_capture_from_standard_input() {
    use std::io::Write;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let files = [
        "options-template.pcap",
        "options-data.pcap",
        "template.pcap",
        "data.pcap",
    ];
    let from_files = goflow_decode(&[&dir.join(files[0])]);
    // One capture on stdin, the rest as files: templates carry over between them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_goflow"))
        .arg("decode")
        .arg("-")
        .args(files[1..].iter().map(|f| dir.join(f)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run goflow");
    let capture = std::fs::read(dir.join(files[0])).expect("read capture");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&capture)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(from_files.stdout.is_empty());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["sampling_rate"] == 30000));
}

#[test]
fn summary_names_interfaces_from_options_records() {
    use goflow_codec::encode::FieldSpec;
    use goflow_codec::encode::{IpfixBuilder, IpfixHeader};
    let f = FieldSpec::new;
    // An options template: scope ingressInterface, then interfaceName (variable length) and
    // interfaceDescription (16 bytes); then two interfaces, written as raw sets.
    let mut b = IpfixBuilder::new(IpfixHeader {
        export_time: EXPORT_SECS,
        sequence: 0,
        observation_domain: 7,
    });
    b.options_template(300, &[f(10, 4)], &[f(82, 0xffff), f(83, 16)])
        .expect("options template");
    let mut body = Vec::new();
    for (index, name, desc) in [(3u32, "Gi0/0/1", "uplink to core"), (4, "Gi0/0/2", "")] {
        body.extend_from_slice(&index.to_be_bytes());
        body.push(name.len() as u8);
        body.extend_from_slice(name.as_bytes());
        let mut d = desc.as_bytes().to_vec();
        d.resize(16, 0);
        body.extend_from_slice(&d);
    }
    b.raw_set(300, &body).expect("data set");
    let mut msg = Vec::new();
    b.finish(&mut msg);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ifnames.pcap");
    let file = std::fs::File::create(&path).expect("create");
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), WriteLink::Ethernet).expect("pcap");
    let exporter = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), 4739);
    let collector = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4739);
    w.write_udp(1_700_000_000_000_000, exporter, collector, &msg)
        .expect("write");
    drop(w);
    let out = Command::new(env!("CARGO_BIN_EXE_goflow"))
        .args(["decode", "--summary"])
        .arg(&path)
        .output()
        .expect("run goflow");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("exporter 192.0.2.77 (v10): 1 datagram, 0 flow records, 0 errors"),
        "{report}"
    );
    assert!(report.contains("interfaces from options:"), "{report}");
    assert!(report.contains("3  Gi0/0/1 (uplink to core)"), "{report}");
    assert!(report.contains("4  Gi0/0/2\n"), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 options records"), "{stderr}");
}
