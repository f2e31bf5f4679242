//! Round trip: packets built with `codec::encode` are decoded by `codec::Decoder` and every
//! record's fields compared with the flows that went in: v5, v9 and IPFIX, IPv4 and IPv6,
//! several templates and sets per packet, options data carrying sampling rates,
//! variable-length and enterprise-specific IPFIX fields, template withdrawal.

use std::net::{IpAddr, Ipv4Addr};

use goflow_codec::encode::{
    FieldSpec, Flow, IPFIX_TYPICAL_V4_TEMPLATE, IPFIX_TYPICAL_V6_TEMPLATE, IpfixBuilder,
    IpfixHeader, TYPICAL_V4_TEMPLATE, TYPICAL_V6_TEMPLATE, V5Builder, V5Header, V9Builder,
    V9Header, VARIABLE_LENGTH, sample_flow_v4, sample_flow_v6,
};
use goflow_codec::{DatagramOutcome, Decoder, FlowRecord};

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const EXPORT_SECS: u32 = 1_700_000_000;
/// The sample flows' boot time is one hour before the export time.
const UPTIME_MS: u32 = 3_600_000;

/// What a decoded record said, copied out of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    next_hop: Option<IpAddr>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
    tcp_flags: Option<u16>,
    tos: Option<u8>,
    bytes: Option<u64>,
    packets: Option<u64>,
    input_if: Option<u32>,
    output_if: Option<u32>,
    src_as: Option<u32>,
    dst_as: Option<u32>,
    src_mask: Option<u8>,
    dst_mask: Option<u8>,
    first_us: i64,
    last_us: i64,
    sampling_rate: u32,
    domain: u32,
    version: u16,
}

fn seen(r: &FlowRecord<'_>) -> Seen {
    Seen {
        src_ip: r.src_ip(),
        dst_ip: r.dst_ip(),
        next_hop: r.next_hop(),
        src_port: r.src_port(),
        dst_port: r.dst_port(),
        protocol: r.protocol(),
        tcp_flags: r.tcp_flags(),
        tos: r.tos(),
        bytes: r.in_bytes(),
        packets: r.in_pkts(),
        input_if: r.input_if(),
        output_if: r.output_if(),
        src_as: r.src_as(),
        dst_as: r.dst_as(),
        src_mask: r.src_mask(),
        dst_mask: r.dst_mask(),
        first_us: r.first_switched(),
        last_us: r.last_switched(),
        sampling_rate: r.sampling_rate(),
        domain: r.observation_domain(),
        version: r.netflow_version(),
    }
}

/// What the decoder must say for `fl` sent with every field of the typical templates.
fn expected(fl: &Flow, version: u16, domain: u32, sampling_rate: u32) -> Seen {
    Seen {
        src_ip: Some(fl.src_ip),
        dst_ip: Some(fl.dst_ip),
        next_hop: Some(fl.next_hop),
        src_port: Some(fl.src_port),
        dst_port: Some(fl.dst_port),
        protocol: Some(fl.protocol),
        tcp_flags: Some(fl.tcp_flags.into()),
        tos: Some(fl.tos),
        bytes: Some(fl.bytes),
        packets: Some(fl.packets),
        input_if: Some(fl.input_if),
        output_if: Some(fl.output_if),
        src_as: Some(fl.src_as),
        dst_as: Some(fl.dst_as),
        src_mask: Some(fl.src_mask),
        dst_mask: Some(fl.dst_mask),
        first_us: fl.first_unix_ms as i64 * 1000,
        last_us: fl.last_unix_ms as i64 * 1000,
        sampling_rate,
        domain,
        version,
    }
}

fn decode(dec: &mut Decoder, pkt: &[u8]) -> (DatagramOutcome, Vec<Seen>) {
    let mut out = Vec::new();
    let outcome = dec
        .decode(EXPORTER, 1, pkt, |r| out.push(seen(r)))
        .unwrap_or_else(|e| panic!("decode failed: {e}"));
    (outcome, out)
}

fn v9_header(sequence: u32) -> V9Header {
    V9Header {
        sys_uptime_ms: UPTIME_MS,
        unix_secs: EXPORT_SECS,
        sequence,
        source_id: 7,
    }
}

fn ipfix_header(sequence: u32) -> IpfixHeader {
    IpfixHeader {
        export_time: EXPORT_SECS,
        sequence,
        observation_domain: 42,
    }
}

#[test]
fn v5_round_trip() {
    let mut b = V5Builder::new(V5Header {
        sys_uptime_ms: UPTIME_MS,
        unix_secs: EXPORT_SECS,
        flow_sequence: 5,
        engine_type: 1,
        engine_id: 2,
        sampling_interval: 0x4000 | 64,
        ..V5Header::default()
    });
    let flows: Vec<Flow> = (0..7).map(sample_flow_v4).collect();
    for fl in &flows {
        b.push(fl).expect("room for 7");
    }
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, got) = decode(&mut Decoder::default(), &pkt);
    assert_eq!(o.records, 7);
    for (fl, g) in flows.iter().zip(&got) {
        assert_eq!(g, &expected(fl, 5, 0x0102, 64));
    }
}

#[test]
fn v9_two_templates_several_sets_one_packet() {
    let mut b = V9Builder::new(v9_header(0));
    b.template(256, TYPICAL_V4_TEMPLATE).expect("template");
    b.template(257, TYPICAL_V6_TEMPLATE).expect("template");
    let v4: Vec<Flow> = (0..3).map(sample_flow_v4).collect();
    let v6: Vec<Flow> = (0..2).map(sample_flow_v6).collect();
    for fl in &v4 {
        b.data(256, TYPICAL_V4_TEMPLATE, fl).expect("data");
    }
    for fl in &v6 {
        b.data(257, TYPICAL_V6_TEMPLATE, fl).expect("data");
    }
    // A second data set of the first template in the same packet.
    b.data(256, TYPICAL_V4_TEMPLATE, &v4[0]).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);

    let mut dec = Decoder::default();
    let (o, got) = decode(&mut dec, &pkt);
    assert_eq!(o.records, 6);
    assert_eq!(o.templates, 2);
    let want: Vec<Seen> = v4
        .iter()
        .chain(&v6)
        .chain(&v4[..1])
        .map(|fl| expected(fl, 9, 7, 1))
        .collect();
    assert_eq!(got, want);

    // A data-only packet decodes through the cached templates.
    b.header.sequence = 1;
    b.data(257, TYPICAL_V6_TEMPLATE, &v6[1]).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, got) = decode(&mut dec, &pkt);
    assert_eq!(o.records, 1);
    assert_eq!(got, vec![expected(&v6[1], 9, 7, 1)]);
}

#[test]
fn v9_data_before_template_is_held_and_decoded_when_it_arrives() {
    let mut b = V9Builder::new(v9_header(0));
    let fl = sample_flow_v4(1);
    b.data(300, TYPICAL_V4_TEMPLATE, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let mut dec = Decoder::default();
    let (o, got) = decode(&mut dec, &pkt);
    assert!(got.is_empty());
    assert_eq!(o.records_without_template, 0);
    assert_eq!(dec.held().1, 1);
    let mut b = V9Builder::new(v9_header(1));
    b.template(300, TYPICAL_V4_TEMPLATE).expect("template");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, got) = decode(&mut dec, &pkt);
    assert_eq!(o.records, 1);
    assert_eq!(got, vec![expected(&fl, 9, 7, 1)]);
}

#[test]
fn v9_options_sampling_rate_applies_to_data() {
    let mut b = V9Builder::new(v9_header(0));
    let scope = [FieldSpec::new(1, 4)]; // scope: system
    let opts = [FieldSpec::new(34, 4), FieldSpec::new(35, 1)];
    b.options_template(400, &scope, &opts)
        .expect("options template");
    b.options_data(400, &[scope[0], opts[0], opts[1]], &[0, 100, 2])
        .expect("options data");
    b.template(256, TYPICAL_V4_TEMPLATE).expect("template");
    let fl = sample_flow_v4(9);
    b.data(256, TYPICAL_V4_TEMPLATE, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (_, got) = decode(&mut Decoder::default(), &pkt);
    assert_eq!(got, vec![expected(&fl, 9, 7, 100)]);
}

#[test]
fn v9_unpadded_sets_decode_too() {
    let mut b = V9Builder::new(v9_header(0));
    b.set_padding(false);
    b.template(256, TYPICAL_V4_TEMPLATE).expect("template");
    let fl = sample_flow_v4(2);
    b.data(256, TYPICAL_V4_TEMPLATE, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (_, got) = decode(&mut Decoder::default(), &pkt);
    assert_eq!(got, vec![expected(&fl, 9, 7, 1)]);
}

#[test]
fn ipfix_v4_and_v6_with_absolute_times() {
    let mut b = IpfixBuilder::new(ipfix_header(0));
    b.template(256, IPFIX_TYPICAL_V4_TEMPLATE)
        .expect("template");
    b.template(257, IPFIX_TYPICAL_V6_TEMPLATE)
        .expect("template");
    let v4 = sample_flow_v4(4);
    let v6 = sample_flow_v6(5);
    b.data(256, IPFIX_TYPICAL_V4_TEMPLATE, &v4).expect("data");
    b.data(257, IPFIX_TYPICAL_V6_TEMPLATE, &v6).expect("data");
    b.data(256, IPFIX_TYPICAL_V4_TEMPLATE, &v4).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, got) = decode(&mut Decoder::default(), &pkt);
    assert_eq!(o.templates, 2);
    assert_eq!(
        got,
        vec![
            expected(&v4, 10, 42, 1),
            expected(&v6, 10, 42, 1),
            expected(&v4, 10, 42, 1)
        ]
    );
}

#[test]
fn ipfix_variable_length_and_enterprise_fields_are_skipped() {
    // The typical fields with an interfaceName (variable length) and an enterprise field
    // in the middle: the decoder must walk past both.
    let mut fields: Vec<FieldSpec> = IPFIX_TYPICAL_V4_TEMPLATE.to_vec();
    fields.insert(3, FieldSpec::new(82, VARIABLE_LENGTH));
    fields.insert(7, FieldSpec::enterprise(1, 4, 29_305));
    fields.push(FieldSpec::enterprise(2, VARIABLE_LENGTH, 9));
    for long in [false, true] {
        let mut b = IpfixBuilder::new(ipfix_header(0));
        b.set_long_varlen(long);
        b.template(256, &fields).expect("template");
        let mut short = sample_flow_v4(1);
        short.var_len = 5;
        let mut big = sample_flow_v4(2);
        big.var_len = 300; // 3-byte length form
        let mut empty = sample_flow_v4(3);
        empty.var_len = 0;
        for fl in [&short, &big, &empty] {
            b.data(256, &fields, fl).expect("data");
        }
        let mut pkt = Vec::new();
        b.finish(&mut pkt);
        let (o, got) = decode(&mut Decoder::default(), &pkt);
        assert_eq!(o.records, 3, "long form {long}");
        assert_eq!(
            got,
            vec![
                expected(&short, 10, 42, 1),
                expected(&big, 10, 42, 1),
                expected(&empty, 10, 42, 1)
            ],
            "long form {long}"
        );
    }
}

#[test]
fn ipfix_uptime_times_with_system_init_time() {
    // flowStart/EndSysUpTime (22/21) relative to systemInitTimeMilliseconds (160) in the record.
    let fields = [
        FieldSpec::new(8, 4),
        FieldSpec::new(12, 4),
        FieldSpec::new(160, 8),
        FieldSpec::new(22, 4),
        FieldSpec::new(21, 4),
    ];
    let mut b = IpfixBuilder::new(ipfix_header(0));
    b.template(256, &fields).expect("template");
    let fl = sample_flow_v4(1);
    b.data(256, &fields, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (_, got) = decode(&mut Decoder::default(), &pkt);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].first_us, fl.first_unix_ms as i64 * 1000);
    assert_eq!(got[0].last_us, fl.last_unix_ms as i64 * 1000);
}

#[test]
fn ipfix_sampler_options_by_selector_id() {
    // Options: scope selectorId (302), samplingPacketInterval 1 / Space 99 -> 1 in 100.
    let scope = [FieldSpec::new(302, 4)];
    let opts = [FieldSpec::new(305, 4), FieldSpec::new(306, 4)];
    let mut data_fields = IPFIX_TYPICAL_V4_TEMPLATE.to_vec();
    data_fields.push(FieldSpec::new(302, 4));
    let mut b = IpfixBuilder::new(ipfix_header(0));
    b.options_template(500, &scope, &opts)
        .expect("options template");
    b.options_data(500, &[scope[0], opts[0], opts[1]], &[3, 1, 99])
        .expect("options data");
    b.template(256, &data_fields).expect("template");
    let mut fl = sample_flow_v4(1);
    fl.sampler_id = 3;
    b.data(256, &data_fields, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (_, got) = decode(&mut Decoder::default(), &pkt);
    assert_eq!(got, vec![expected(&fl, 10, 42, 100)]);
}

#[test]
fn ipfix_withdrawal_removes_the_template() {
    let mut dec = Decoder::default();
    let fl = sample_flow_v4(1);
    let mut b = IpfixBuilder::new(ipfix_header(0));
    b.template(256, IPFIX_TYPICAL_V4_TEMPLATE)
        .expect("template");
    b.template(257, IPFIX_TYPICAL_V4_TEMPLATE)
        .expect("template");
    b.data(256, IPFIX_TYPICAL_V4_TEMPLATE, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, _) = decode(&mut dec, &pkt);
    assert_eq!(o.records, 1);

    // Withdraw 256 only: 257 still decodes, 256 does not.
    b.header.sequence = 1;
    b.withdraw_template(256).expect("withdraw");
    b.data(256, IPFIX_TYPICAL_V4_TEMPLATE, &fl).expect("data");
    b.data(257, IPFIX_TYPICAL_V4_TEMPLATE, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, got) = decode(&mut dec, &pkt);
    // 256's data is held (issue 17: a template may follow its data).
    assert_eq!((o.records, o.records_without_template), (1, 0));
    assert_eq!(dec.held().1, 1);
    assert_eq!(got, vec![expected(&fl, 10, 42, 1)]);

    // Withdraw all: nothing decodes.
    b.header.sequence = 3;
    b.withdraw_all_templates().expect("withdraw all");
    b.data(257, IPFIX_TYPICAL_V4_TEMPLATE, &fl).expect("data");
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, got) = decode(&mut dec, &pkt);
    assert!(got.is_empty());
    assert_eq!(o.records_without_template, 0);
    assert_eq!(dec.held().1, 2);
}

#[test]
fn packed_datagrams_decode_completely() {
    // The load generator's shape: ~1400-byte datagrams full of records.
    let mut dec = Decoder::default();
    let mut b = V9Builder::new(v9_header(0));
    b.set_max_len(1400);
    b.template(256, TYPICAL_V4_TEMPLATE).expect("template");
    let mut n = 0u32;
    while b.fits(256, TYPICAL_V4_TEMPLATE) {
        b.data(256, TYPICAL_V4_TEMPLATE, &sample_flow_v4(n))
            .expect("fits");
        n += 1;
    }
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    assert!(pkt.len() <= 1400);
    let (o, got) = decode(&mut dec, &pkt);
    assert_eq!(o.records, n);
    assert_eq!(got.len(), n as usize);

    let mut b = IpfixBuilder::new(ipfix_header(0));
    b.set_max_len(1400);
    b.template(256, IPFIX_TYPICAL_V6_TEMPLATE)
        .expect("template");
    let mut n = 0u32;
    while b.fits(256, IPFIX_TYPICAL_V6_TEMPLATE, 0) {
        b.data(256, IPFIX_TYPICAL_V6_TEMPLATE, &sample_flow_v6(n))
            .expect("fits");
        n += 1;
    }
    let mut pkt = Vec::new();
    b.finish(&mut pkt);
    let (o, _) = decode(&mut dec, &pkt);
    assert_eq!(o.records, n);
}
