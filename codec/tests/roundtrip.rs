//! Round trip through the fuzz entry points: packets built with `codec::encode` (IPv4 and IPv6,
//! variable-length and enterprise IPFIX fields, several templates and sets per packet) go
//! through exactly the functions the fuzz targets call (`decode_as_version`, `decode_stream`)
//! and through `decode_visiting`, and every record's fields are compared with the flows that
//! went in. (roundtrip_encode.rs checks the builders field by field through `Decoder::decode`.)

use std::net::{IpAddr, Ipv6Addr};

use goflow_codec::decoder::{decode_as_version, decode_stream, decode_visiting, frame_stream};
use goflow_codec::encode::{
    FieldSpec, Flow, IPFIX_TYPICAL_V4_TEMPLATE, IPFIX_TYPICAL_V6_TEMPLATE, IpfixBuilder,
    IpfixHeader, TYPICAL_V4_TEMPLATE, TYPICAL_V6_TEMPLATE, V9Builder, V9Header, VARIABLE_LENGTH,
    sample_flow_v4, sample_flow_v6,
};
use goflow_codec::{Decoder, DecoderConfig, FlowRecord};

const EXPORTER: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99));
const SECS: u32 = 1_700_000_000;

/// Source, destination, destination port and bytes: fields every typical template carries.
type Fields = (Option<IpAddr>, Option<IpAddr>, Option<u16>, Option<u64>);

/// The fields every typical template carries, as read back.
fn fields(r: &FlowRecord<'_>) -> Fields {
    (r.src_ip(), r.dst_ip(), r.dst_port(), r.in_bytes())
}

fn sent(f: &Flow) -> Fields {
    (
        Some(f.src_ip),
        Some(f.dst_ip),
        Some(f.dst_port),
        Some(f.bytes),
    )
}

/// v9: two templates (IPv4, IPv6) and two data sets of each in one packet.
fn v9_mixed(flows4: &[Flow], flows6: &[Flow]) -> Vec<u8> {
    let mut b = V9Builder::new(V9Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: SECS,
        sequence: 1,
        source_id: 2,
    });
    let mut ok = b.template(300, TYPICAL_V4_TEMPLATE).is_ok();
    ok &= b.template(301, TYPICAL_V6_TEMPLATE).is_ok();
    for (f4, f6) in flows4.iter().zip(flows6) {
        ok &= b.data(300, TYPICAL_V4_TEMPLATE, f4).is_ok();
        b.close_set();
        ok &= b.data(301, TYPICAL_V6_TEMPLATE, f6).is_ok();
        b.close_set();
    }
    assert!(ok);
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

/// IPFIX: a variable-length template (1- and 3-byte length forms, an enterprise field) and the
/// typical IPv4 template, data of both in one message.
fn ipfix_mixed(flows_var: &[Flow], flows4: &[Flow], long_varlen: bool) -> Vec<u8> {
    let mut var = vec![
        FieldSpec::enterprise(7, 4, 9),
        FieldSpec::new(82, VARIABLE_LENGTH),
    ];
    var.extend_from_slice(IPFIX_TYPICAL_V6_TEMPLATE);
    var.push(FieldSpec::enterprise(12, VARIABLE_LENGTH, 29305));
    let mut b = IpfixBuilder::new(IpfixHeader {
        export_time: SECS,
        sequence: 0,
        observation_domain: 5,
    });
    b.set_long_varlen(long_varlen);
    let mut ok = b.template(400, &var).is_ok();
    ok &= b.template(401, IPFIX_TYPICAL_V4_TEMPLATE).is_ok();
    for f in flows_var {
        ok &= b.data(400, &var, f).is_ok();
    }
    b.close_set();
    for f in flows4 {
        ok &= b.data(401, IPFIX_TYPICAL_V4_TEMPLATE, f).is_ok();
    }
    assert!(ok);
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn decoded(datagram: &[u8]) -> Vec<Fields> {
    let mut d = Decoder::default();
    let mut got = Vec::new();
    let r = d.decode(EXPORTER, 0, datagram, |r| got.push(fields(r)));
    assert!(r.is_ok(), "{r:?}");
    got
}

#[test]
fn v9_two_templates_interleaved_sets() {
    let f4: Vec<Flow> = (0..3).map(sample_flow_v4).collect();
    let f6: Vec<Flow> = (0..3).map(sample_flow_v6).collect();
    let p = v9_mixed(&f4, &f6);
    let want: Vec<_> = f4
        .iter()
        .zip(&f6)
        .flat_map(|(a, b)| [sent(a), sent(b)])
        .collect();
    assert_eq!(decoded(&p), want);
    assert_eq!(decode_as_version(9, &p), 6);
}

#[test]
fn ipfix_variable_length_both_length_forms() {
    for long in [false, true] {
        let fv: Vec<Flow> = (0..4)
            .map(|i| Flow {
                var_len: [0, 3, 254, 300][i as usize],
                ..sample_flow_v6(i)
            })
            .collect();
        let f4: Vec<Flow> = (0..2).map(sample_flow_v4).collect();
        let p = ipfix_mixed(&fv, &f4, long);
        let want: Vec<_> = fv.iter().chain(&f4).map(sent).collect();
        assert_eq!(decoded(&p), want, "long form {long}");
        assert_eq!(decode_as_version(10, &p), 6);
    }
}

#[test]
fn streams_of_builder_packets_through_the_fuzz_entry_point() {
    let f4: Vec<Flow> = (0..5).map(sample_flow_v4).collect();
    let f6: Vec<Flow> = (0..5).map(sample_flow_v6).collect();
    let packets = [
        v9_mixed(&f4, &f6),
        ipfix_mixed(&f6, &f4, false),
        ipfix_mixed(&f6, &f4, true),
    ];
    let stream = frame_stream(packets.iter().map(Vec::as_slice));
    let (stats, disagreements) = decode_stream(&stream, DecoderConfig::default());
    assert_eq!(disagreements, 0);
    assert_eq!(stats.records, 30);
    assert_eq!(stats.errors_truncated + stats.errors_bad_length, 0);
    // decode_visiting folds the same values whichever decoder instance reads them.
    let mut a = Decoder::default();
    let mut b = Decoder::default();
    for p in &packets {
        assert_eq!(
            decode_visiting(&mut a, EXPORTER, 1, p),
            decode_visiting(&mut b, EXPORTER, 1, p)
        );
    }
}
