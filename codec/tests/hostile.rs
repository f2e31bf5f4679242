//! Hostile input: valid packets cut at every byte offset, lengths that lie, zero-length sets
//! and templates, field counts 0 and 65535, field lengths 0 and 65535, set lengths below 4,
//! records shorter than their template, wrong versions, cache floods, and random bytes. Each
//! must give a `DecodeError` or a counted drop: no panic, no endless loop (every test here
//! finishes), no unbounded growth (the cache bounds are asserted).

use std::net::{IpAddr, Ipv4Addr};

use goflow_codec::decoder::{decode_stream, decode_visiting, frame_stream};
use goflow_codec::encode::{
    FieldSpec, IPFIX_TYPICAL_V6_TEMPLATE, IpfixBuilder, IpfixHeader, TYPICAL_V4_TEMPLATE,
    V5Builder, V5Header, V9Builder, V9Header, VARIABLE_LENGTH, sample_flow_v4, sample_flow_v6,
};
use goflow_codec::{DecodeError, Decoder, DecoderConfig};
use proptest::prelude::*;

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66));
const NOW: i64 = 1_700_000_000_000_000;

fn v5_packet() -> Vec<u8> {
    let mut b = V5Builder::new(V5Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        sampling_interval: 0x4000 | 100,
        ..V5Header::default()
    });
    for i in 0..30 {
        assert!(b.push(&sample_flow_v4(i)).is_ok());
    }
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn v9_header() -> V9Header {
    V9Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        sequence: 1,
        source_id: 7,
    }
}

/// A v9 packet with a template, an options template, options data and 5 data records.
fn v9_packet() -> Vec<u8> {
    let mut b = V9Builder::new(v9_header());
    let scope = [FieldSpec::new(1, 4)];
    let opts = [FieldSpec::new(48, 1), FieldSpec::new(34, 4)];
    let mut ok = b.template(256, TYPICAL_V4_TEMPLATE).is_ok();
    ok &= b.options_template(257, &scope, &opts).is_ok();
    ok &= b
        .options_data(257, &[scope[0], opts[0], opts[1]], &[0, 1, 64])
        .is_ok();
    for i in 0..5 {
        ok &= b.data(256, TYPICAL_V4_TEMPLATE, &sample_flow_v4(i)).is_ok();
    }
    assert!(ok);
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

/// IPFIX template with a variable-length field and an enterprise field before the ones goflow
/// reads.
fn ipfix_var_template() -> Vec<FieldSpec> {
    let mut f = vec![
        FieldSpec::new(82, VARIABLE_LENGTH),
        FieldSpec::enterprise(1, 8, 29305),
    ];
    f.extend_from_slice(IPFIX_TYPICAL_V6_TEMPLATE);
    f
}

/// An IPFIX message with two templates (one variable-length), options, and data of both.
fn ipfix_packet() -> Vec<u8> {
    let var = ipfix_var_template();
    let mut b = IpfixBuilder::new(IpfixHeader {
        export_time: 1_700_000_000,
        sequence: 0,
        observation_domain: 9,
    });
    let scope = [FieldSpec::new(302, 4)];
    let opts = [FieldSpec::new(305, 4), FieldSpec::new(306, 4)];
    let mut ok = b.template(300, &var).is_ok();
    ok &= b.template(301, TYPICAL_V4_TEMPLATE).is_ok();
    ok &= b.options_template(400, &scope, &opts).is_ok();
    ok &= b
        .options_data(400, &[scope[0], opts[0], opts[1]], &[3, 1, 99])
        .is_ok();
    for i in 0..3 {
        let mut fl = sample_flow_v6(i);
        fl.var_len = 5 + i as u16 * 200; // 1- and 3-byte length forms
        ok &= b.data(300, &var, &fl).is_ok();
    }
    b.close_set();
    for i in 0..3 {
        ok &= b.data(301, TYPICAL_V4_TEMPLATE, &sample_flow_v4(i)).is_ok();
    }
    assert!(ok);
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn records_of(d: &mut Decoder, datagram: &[u8]) -> Result<u32, DecodeError> {
    decode_visiting(d, EXPORTER, NOW, datagram).map(|(o, _)| o.records)
}

/// Sets a big-endian u16 at `at`.
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn full_packets_decode() {
    assert_eq!(records_of(&mut Decoder::default(), &v5_packet()), Ok(30));
    assert_eq!(records_of(&mut Decoder::default(), &v9_packet()), Ok(5));
    assert_eq!(records_of(&mut Decoder::default(), &ipfix_packet()), Ok(6));
}

#[test]
fn truncation_at_every_offset() {
    for (name, full, n) in [
        ("v5", v5_packet(), 30),
        ("v9", v9_packet(), 5),
        ("ipfix", ipfix_packet(), 6),
    ] {
        for cut in 0..full.len() {
            // A fresh decoder (templates in the cut packet itself) ...
            let r = records_of(&mut Decoder::default(), &full[..cut]);
            assert!(r.map_or(true, |k| k <= n), "{name} cut at {cut}: {r:?}");
            // ... and one that already knows the templates.
            let mut primed = Decoder::default();
            assert_eq!(records_of(&mut primed, &full), Ok(n));
            let r = records_of(&mut primed, &full[..cut]);
            match name {
                // The v5 count and the IPFIX message length say more bytes must be there.
                "v5" | "ipfix" => assert!(r.is_err(), "{name} cut at {cut}: {r:?}"),
                _ => assert!(r.map_or(true, |k| k < n), "{name} cut at {cut}: {r:?}"),
            }
        }
    }
}

#[test]
fn wrong_versions() {
    let mut d = Decoder::default();
    for v in [0u16, 1, 5 + 256, 7, 8, 11, 0xffff] {
        let mut p = v9_packet();
        put16(&mut p, 0, v);
        assert_eq!(
            records_of(&mut d, &p),
            Err(DecodeError::UnsupportedVersion { version: v })
        );
    }
    assert!(matches!(
        records_of(&mut d, &[]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        records_of(&mut d, &[0]),
        Err(DecodeError::Truncated { .. })
    ));
    assert_eq!(d.stats().errors_unsupported_version, 7);
    assert_eq!(d.stats().errors_truncated, 2);
}

#[test]
fn v5_count_that_lies() {
    let mut d = Decoder::default();
    let mut p = v5_packet();
    put16(&mut p, 2, 31);
    assert!(matches!(
        records_of(&mut d, &p),
        Err(DecodeError::BadLength { .. })
    ));
    put16(&mut p, 2, 0);
    assert!(matches!(
        records_of(&mut d, &p),
        Err(DecodeError::BadLength { .. })
    ));
    // Count 30 but only 29 records present.
    let p = v5_packet();
    assert!(matches!(
        records_of(&mut d, &p[..p.len() - 1]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn ipfix_message_length_that_lies() {
    let mut d = Decoder::default();
    let mut p = ipfix_packet();
    let len = p.len() as u16;
    put16(&mut p, 2, len + 1);
    assert!(matches!(
        records_of(&mut d, &p),
        Err(DecodeError::Truncated { .. })
    ));
    for short in [0u16, 1, 15] {
        put16(&mut p, 2, short);
        assert!(matches!(
            records_of(&mut d, &p),
            Err(DecodeError::BadLength { .. })
        ));
    }
    // A length of just the header: an empty message, no records.
    put16(&mut p, 2, 16);
    assert_eq!(records_of(&mut d, &p), Ok(0));
}

/// A v9 packet: header then `sets` (id, body) written verbatim with true lengths.
fn v9_with_sets(sets: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = V9Builder::new(v9_header());
    for (id, body) in sets {
        assert!(b.raw_set(*id, body).is_ok());
    }
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn ipfix_with_sets(sets: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = IpfixBuilder::new(IpfixHeader {
        export_time: 1_700_000_000,
        sequence: 0,
        observation_domain: 1,
    });
    for (id, body) in sets {
        assert!(b.raw_set(*id, body).is_ok());
    }
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

#[test]
fn set_lengths_below_four_and_past_the_end() {
    for ipfix in [false, true] {
        let mut p = if ipfix {
            ipfix_with_sets(&[(256, &[0; 8])])
        } else {
            v9_with_sets(&[(256, &[0; 8])])
        };
        let at = if ipfix { 18 } else { 22 };
        for len in 0..4u16 {
            put16(&mut p, at, len);
            let r = records_of(&mut Decoder::default(), &p);
            assert_eq!(r, Err(DecodeError::BadLength { what: "set length" }));
        }
        put16(&mut p, at, 13);
        let r = records_of(&mut Decoder::default(), &p);
        assert_eq!(r, Err(DecodeError::Truncated { what: "set" }));
    }
}

#[test]
fn zero_length_sets_are_empty() {
    // Sets of length 4 (header only): template, options template, data. Nothing to do.
    let mut d = Decoder::default();
    let p = v9_with_sets(&[(0, &[]), (1, &[]), (256, &[])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    let p = ipfix_with_sets(&[(2, &[]), (3, &[]), (256, &[])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    assert_eq!(d.stats().templates_rejected, 0);
}

#[test]
fn field_count_zero() {
    // v9: a template without fields is refused and counted; the next template still counts.
    let mut d = Decoder::default();
    let body = [1, 0, 0, 0, 1, 1, 0, 1, 0, 8, 0, 4];
    let p = v9_with_sets(&[(0, &body)]);
    let o = decode_visiting(&mut d, EXPORTER, NOW, &p).map(|(o, _)| o.templates);
    assert_eq!(o, Ok(1));
    assert_eq!(d.stats().templates_rejected, 1);
    // IPFIX: field count 0 is a withdrawal.
    let p = ipfix_with_sets(&[(2, &[1, 0, 0, 1, 0, 8, 0, 4])]);
    assert!(records_of(&mut d, &p).is_ok());
    assert_eq!(d.template_cache().len(), 2);
    let p = ipfix_with_sets(&[(2, &[1, 0, 0, 0])]);
    assert!(records_of(&mut d, &p).is_ok());
    assert_eq!(d.template_cache().len(), 1);
    assert_eq!(d.stats().templates_withdrawn, 1);
}

#[test]
fn field_count_65535_is_truncated() {
    for ipfix in [false, true] {
        let mut d = Decoder::default();
        let body = [1, 0, 0xff, 0xff, 0, 8, 0, 4, 0, 12, 0, 4];
        let p = if ipfix {
            ipfix_with_sets(&[(2, &body)])
        } else {
            v9_with_sets(&[(0, &body)])
        };
        assert!(matches!(
            records_of(&mut d, &p),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(d.template_cache().is_empty());
    }
}

#[test]
fn field_count_over_the_limit_is_refused() {
    let cfg = DecoderConfig {
        max_fields_per_template: 4,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::new(cfg);
    let mut body = vec![1, 0, 0, 5];
    for _ in 0..5 {
        body.extend_from_slice(&[0, 1, 0, 4]);
    }
    let p = v9_with_sets(&[(0, &body)]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    assert_eq!(d.stats().templates_rejected, 1);
    assert!(d.template_cache().is_empty());
}

#[test]
fn field_length_zero_and_65535() {
    let mut d = Decoder::default();
    // A template whose only field has length 0: its records would take no bytes.
    let p = v9_with_sets(&[(0, &[1, 0, 0, 1, 0, 8, 0, 0])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    assert_eq!(d.stats().templates_rejected, 1);
    // v9 field of 65535 bytes: no record could fit a FlowSet.
    let p = v9_with_sets(&[(0, &[1, 0, 0, 1, 0, 8, 0xff, 0xff])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    assert_eq!(d.stats().templates_rejected, 2);
    // IPFIX 65535 is variable length; a record whose length prefix points past the set
    // is a counted partial record, not a panic.
    let p = ipfix_with_sets(&[
        (2, &[1, 0, 0, 2, 0, 82, 0xff, 0xff, 0, 8, 0, 4]),
        (256, &[255, 0xff, 0xff, 1, 2, 3, 4, 5]),
    ]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    assert_eq!(d.stats().records_truncated, 1);
    // The same template with a fitting record.
    let p = ipfix_with_sets(&[(256, &[2, b'e', b'0', 10, 0, 0, 1, 0, 0, 0])]);
    assert_eq!(records_of(&mut d, &p), Ok(1));
}

#[test]
fn records_shorter_than_their_template() {
    let mut d = Decoder::default();
    let mut b = V9Builder::new(v9_header());
    assert!(b.template(256, TYPICAL_V4_TEMPLATE).is_ok());
    let mut p = Vec::new();
    b.finish(&mut p);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    // 61-byte records; a data set of 40 non-zero bytes holds none.
    let p = v9_with_sets(&[(256, &[0xab; 40])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    assert_eq!(d.stats().records_truncated, 1);
    // 61 + 3 zero bytes of padding: one record, no drop.
    let mut body = vec![0xab; 61];
    body.extend_from_slice(&[0, 0, 0]);
    let p = v9_with_sets(&[(256, &body)]);
    assert_eq!(records_of(&mut d, &p), Ok(1));
    assert_eq!(d.stats().records_truncated, 1);
}

#[test]
fn data_without_template_is_counted() {
    let mut d = Decoder::default();
    let p = v9_with_sets(&[(256, &[0; 64]), (999, &[0; 8])]);
    let o = decode_visiting(&mut d, EXPORTER, NOW, &p).map(|(o, _)| o);
    // Held for their templates (issue 17), counted as lost once they expire unheld.
    assert_eq!(
        o.map(|o| (o.records, o.records_without_template)),
        Ok((0, 0))
    );
    assert_eq!(d.stats().sets_held, 2);
    let late =
        NOW + i64::try_from(goflow_codec::decoder::HELD_MAX_AGE_SECS).unwrap_or(0) * 1_000_000 + 1;
    assert_eq!(d.expire_held(late), 2);
    assert_eq!(d.stats().records_without_template, 2);
    assert_eq!(d.stats().held_expired_sets, 2);
}

#[test]
fn template_ids_below_256_are_refused() {
    let mut d = Decoder::default();
    let p = v9_with_sets(&[(0, &[0, 3, 0, 1, 0, 8, 0, 4])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    let p = ipfix_with_sets(&[(2, &[0, 200, 0, 1, 0, 8, 0, 4])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    assert_eq!(d.stats().templates_rejected, 2);
    assert!(d.template_cache().is_empty());
}

#[test]
fn template_flood_is_bounded_per_exporter_and_in_total() {
    let cfg = DecoderConfig {
        max_templates_per_exporter: 10,
        max_templates_total: 15,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::new(cfg);
    for e in 0..3u8 {
        let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, e));
        for id in 256..276u16 {
            let mut body = id.to_be_bytes().to_vec();
            body.extend_from_slice(&[0, 1, 0, 8, 0, 4]);
            let p = v9_with_sets(&[(0, &body)]);
            assert!(decode_visiting(&mut d, exporter, NOW, &p).is_ok());
        }
    }
    assert_eq!(d.template_cache().len(), 15);
    // Each exporter's own bound refuses 10 of its 20; the total bound evicts templates no data
    // set used (issue 13: a full store no longer shuts out new exporters), oldest first.
    assert_eq!(d.stats().templates_rejected, 30);
    assert_eq!(d.stats().templates_refused_exporter_full, 30);
    assert_eq!(d.stats().templates_evicted, 15);
    let snap = d.exporters();
    assert_eq!(
        snap.iter().map(|e| e.templates).collect::<Vec<_>>(),
        vec![0, 5, 10]
    );
}

#[test]
fn options_with_bad_scope_count_are_refused() {
    let mut d = Decoder::default();
    // IPFIX options template 300: 1 field, scope count 0.
    let p = ipfix_with_sets(&[(3, &[1, 44, 0, 1, 0, 0, 0, 34, 0, 4])]);
    assert_eq!(records_of(&mut d, &p), Ok(0));
    // v9 options template whose lengths are not multiples of 4.
    let p = v9_with_sets(&[(1, &[1, 1, 0, 3, 0, 4, 0, 1, 0, 4, 0, 34, 0, 4])]);
    assert!(matches!(
        records_of(&mut d, &p),
        Err(DecodeError::BadLength { .. })
    ));
    assert_eq!(d.stats().templates_rejected, 1);
}

#[test]
fn random_streams_from_valid_packets_agree_on_both_paths() {
    let packets = [v5_packet(), v9_packet(), ipfix_packet()];
    let stream = frame_stream(packets.iter().map(|p| p.as_slice()));
    let (stats, disagreements) = decode_stream(&stream, DecoderConfig::default());
    assert_eq!(disagreements, 0);
    assert_eq!(stats.records, 30 + 5 + 6);
    // Every cut of the stream also agrees.
    for cut in (0..stream.len()).step_by(7) {
        let (_, disagreements) = decode_stream(&stream[..cut], DecoderConfig::default());
        assert_eq!(disagreements, 0, "cut at {cut}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut d = Decoder::default();
        let _ = decode_visiting(&mut d, EXPORTER, NOW, &bytes);
    }

    #[test]
    fn random_bodies_after_valid_headers_never_panic(
        version in prop_oneof![Just(5u16), Just(9u16), Just(10u16)],
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut p = vec![0u8; 24];
        put16(&mut p, 0, version);
        p.extend_from_slice(&body);
        let len = p.len() as u16;
        if version == 10 {
            put16(&mut p, 2, len);
        }
        let mut d = Decoder::default();
        let _ = decode_visiting(&mut d, EXPORTER, NOW, &p);
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut p = [v5_packet(), v9_packet(), ipfix_packet()][which].clone();
        for (at, v) in flips {
            let at = at % p.len();
            p[at] = v;
        }
        let stream = frame_stream([p.as_slice(), p.as_slice()]);
        let (_, disagreements) = decode_stream(&stream, DecoderConfig::default());
        prop_assert_eq!(disagreements, 0);
    }
}

/// Adds the builder-made packets of this file (variable-length and enterprise IPFIX fields,
/// options, several templates per packet) to the fuzz seeds. Run by hand:
/// `cargo test -p goflow-codec --test hostile -- --ignored write_fuzz_seeds_from_builders`.
#[test]
#[ignore = "writes files; run by hand to refresh the fuzz seeds"]
fn write_fuzz_seeds_from_builders() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let packets = [
        ("v5", v5_packet()),
        ("v9", v9_packet()),
        ("ipfix", ipfix_packet()),
    ];
    for (target, p) in &packets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        std::fs::write(dir.join("builder-0"), p).unwrap_or_else(|e| panic!("{e}"));
    }
    let dir = root.join("template_then_data");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
    let stream = frame_stream(packets.iter().map(|(_, p)| p.as_slice()));
    std::fs::write(dir.join("builder-0"), stream).unwrap_or_else(|e| panic!("{e}"));
}
