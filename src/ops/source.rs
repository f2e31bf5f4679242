//! From the daemon's own types to the ops documents: the codec's per-exporter snapshots and
//! template listings (with IANA element names). Pure conversions, so the daemon's
//! [`OpsSource`](super::OpsSource) implementation stays a few lines of reading atomics and
//! calling these.

use std::collections::BTreeMap;
use std::net::IpAddr;

use goflow_codec::decoder::{ExporterSnapshot, TemplateInfo as CodecTemplate};
use goflow_codec::template::TemplateKind;

use super::status::{
    DomainTemplates, ExporterStatus, ExporterTemplates, TEMPLATES_PAGE_MAX, TemplateField,
    TemplateInfo, TemplatesQuery, TemplatesReport,
};

/// One exporter as /status shows it.
pub fn exporter_status(s: &ExporterSnapshot) -> ExporterStatus {
    ExporterStatus {
        address: s.address.to_string(),
        domains: s.domains.clone(),
        versions: s.versions.clone(),
        datagrams: s.datagrams,
        records: s.records,
        bytes: s.bytes,
        no_template_sets: s.no_template_sets,
        errors: s.errors,
        sequence_missing: s.sequence_missing,
        sequence_resets: s.sequence_resets,
        last_seen_unix_us: (s.last_seen_us > 0).then_some(s.last_seen_us),
        sampling_rate: s.sampling.rate,
        sampling_source: s.sampling.source.as_str().to_owned(),
        templates: s.templates as u64,
    }
}

/// Every worker's exporters, one entry per address (workers normally see disjoint exporters;
/// when two saw the same one, counters add up and the latest sampling wins), sorted by address.
pub fn merge_exporters<'a>(
    snapshots: impl IntoIterator<Item = &'a ExporterSnapshot>,
) -> Vec<ExporterStatus> {
    let mut by: BTreeMap<IpAddr, ExporterStatus> = BTreeMap::new();
    for s in snapshots {
        let e = exporter_status(s);
        match by.get_mut(&s.address) {
            None => {
                by.insert(s.address, e);
            }
            Some(m) => {
                for d in e.domains {
                    if !m.domains.contains(&d) {
                        m.domains.push(d);
                    }
                }
                for v in e.versions {
                    if !m.versions.contains(&v) {
                        m.versions.push(v);
                    }
                }
                m.domains.sort_unstable();
                m.versions.sort_unstable();
                m.datagrams += e.datagrams;
                m.records += e.records;
                m.bytes += e.bytes;
                m.no_template_sets += e.no_template_sets;
                m.errors += e.errors;
                m.sequence_missing += e.sequence_missing;
                m.sequence_resets += e.sequence_resets;
                m.templates += e.templates;
                if e.last_seen_unix_us > m.last_seen_unix_us {
                    m.last_seen_unix_us = e.last_seen_unix_us;
                    if e.sampling_rate != 0 {
                        m.sampling_rate = e.sampling_rate;
                        m.sampling_source = e.sampling_source;
                    }
                }
            }
        }
    }
    by.into_values().collect()
}

/// One page (`query`) of every worker's templates, grouped by exporter and domain, ordered by
/// address, domain, id. A template several workers hold (every worker gets the templates
/// restored at start) is listed once, as the most recently announced copy. Only the page's
/// templates are converted; the rest are only counted. Ages are taken at `now_us`.
pub fn templates_report<'a>(
    templates: impl IntoIterator<Item = &'a CodecTemplate>,
    now_us: i64,
    query: &TemplatesQuery,
) -> TemplatesReport {
    let limit = query.limit.clamp(1, TEMPLATES_PAGE_MAX);
    let mut latest: BTreeMap<(IpAddr, u32, u16), &CodecTemplate> = BTreeMap::new();
    for t in templates {
        if query.exporter.is_some_and(|a| a != t.exporter) {
            continue;
        }
        latest
            .entry((t.exporter, t.domain, t.id))
            .and_modify(|k| {
                if t.refreshed_us > k.refreshed_us {
                    *k = t;
                }
            })
            .or_insert(t);
    }
    let total = latest.len() as u64;
    let with_repeated_ies = latest
        .values()
        .filter(|t| !t.repeated_ies.is_empty())
        .count() as u64;
    let mut by: BTreeMap<(IpAddr, u32), Vec<TemplateInfo>> = BTreeMap::new();
    let skip = usize::try_from(query.offset).unwrap_or(usize::MAX);
    let take = usize::try_from(limit).unwrap_or(usize::MAX);
    for t in latest.into_values().skip(skip).take(take) {
        by.entry((t.exporter, t.domain))
            .or_default()
            .push(TemplateInfo {
                id: t.id,
                options: t.kind == TemplateKind::Options,
                fields: t
                    .fields
                    .iter()
                    .map(|f| TemplateField {
                        id: f.id,
                        enterprise: (f.enterprise != 0).then_some(f.enterprise),
                        length: f.len,
                        name: (f.enterprise == 0)
                            .then(|| element_name(f.id))
                            .flatten()
                            .map(str::to_owned),
                    })
                    .collect(),
                repeated_ies: t.repeated_ies.clone(),
                age_secs: u64::try_from(now_us.saturating_sub(t.refreshed_us) / 1_000_000)
                    .unwrap_or(0),
                restored: t.restored,
            });
    }
    let mut exporters: Vec<ExporterTemplates> = Vec::new();
    for ((addr, domain), mut list) in by {
        list.sort_by_key(|t| t.id);
        let address = addr.to_string();
        let dom = DomainTemplates {
            domain,
            templates: list,
        };
        match exporters.last_mut() {
            Some(e) if e.address == address => e.domains.push(dom),
            _ => exporters.push(ExporterTemplates {
                address,
                domains: vec![dom],
            }),
        }
    }
    TemplatesReport {
        total,
        offset: query.offset,
        limit,
        next: (query.offset.saturating_add(limit) < total).then(|| query.offset + limit),
        exporters,
        with_repeated_ies,
    }
}

/// The IANA name (RFC 7012 / the IPFIX registry; NetFlow v9 shares ids 1-127) of the
/// information elements exporters commonly put in templates.
pub fn element_name(id: u16) -> Option<&'static str> {
    Some(match id {
        1 => "octetDeltaCount",
        2 => "packetDeltaCount",
        3 => "deltaFlowCount",
        4 => "protocolIdentifier",
        5 => "ipClassOfService",
        6 => "tcpControlBits",
        7 => "sourceTransportPort",
        8 => "sourceIPv4Address",
        9 => "sourceIPv4PrefixLength",
        10 => "ingressInterface",
        11 => "destinationTransportPort",
        12 => "destinationIPv4Address",
        13 => "destinationIPv4PrefixLength",
        14 => "egressInterface",
        15 => "ipNextHopIPv4Address",
        16 => "bgpSourceAsNumber",
        17 => "bgpDestinationAsNumber",
        18 => "bgpNextHopIPv4Address",
        21 => "flowEndSysUpTime",
        22 => "flowStartSysUpTime",
        23 => "postOctetDeltaCount",
        24 => "postPacketDeltaCount",
        27 => "sourceIPv6Address",
        28 => "destinationIPv6Address",
        29 => "sourceIPv6PrefixLength",
        30 => "destinationIPv6PrefixLength",
        31 => "flowLabelIPv6",
        32 => "icmpTypeCodeIPv4",
        34 => "samplingInterval",
        35 => "samplingAlgorithm",
        48 => "samplerId",
        49 => "samplerMode",
        50 => "samplerRandomInterval",
        52 => "minimumTTL",
        53 => "maximumTTL",
        56 => "sourceMacAddress",
        58 => "vlanId",
        60 => "ipVersion",
        61 => "flowDirection",
        62 => "ipNextHopIPv6Address",
        63 => "bgpNextHopIPv6Address",
        80 => "destinationMacAddress",
        85 => "octetTotalCount",
        86 => "packetTotalCount",
        89 => "forwardingStatus",
        136 => "flowEndReason",
        139 => "icmpTypeCodeIPv6",
        148 => "flowId",
        149 => "observationDomainId",
        150 => "flowStartSeconds",
        151 => "flowEndSeconds",
        152 => "flowStartMilliseconds",
        153 => "flowEndMilliseconds",
        154 => "flowStartMicroseconds",
        155 => "flowEndMicroseconds",
        156 => "flowStartNanoseconds",
        157 => "flowEndNanoseconds",
        158 => "flowStartDeltaMicroseconds",
        159 => "flowEndDeltaMicroseconds",
        160 => "systemInitTimeMilliseconds",
        225 => "postNATSourceIPv4Address",
        226 => "postNATDestinationIPv4Address",
        227 => "postNAPTSourceTransportPort",
        228 => "postNAPTDestinationTransportPort",
        302 => "selectorId",
        305 => "samplingPacketInterval",
        306 => "samplingPacketSpace",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use goflow_codec::template::FieldSpec;
    use goflow_codec::{Sampling, SamplingSource};

    fn snap(addr: &str, domain: u32, records: u64, seen: i64, rate: u32) -> ExporterSnapshot {
        ExporterSnapshot {
            address: addr
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            domains: vec![domain],
            versions: vec![9],
            datagrams: 1,
            records,
            bytes: 100,
            no_template_sets: 1,
            errors: 0,
            sequence_missing: 2,
            sequence_resets: 0,
            sequence_out_of_order: 0,
            last_seen_us: seen,
            sampling: Sampling {
                rate,
                source: SamplingSource::Sampler,
            },
            templates: 1,
        }
    }

    #[test]
    fn exporters_merge_by_address() {
        let a = snap("10.0.0.2", 1, 10, 5, 0);
        let b = snap("10.0.0.1", 0, 30, 7, 100);
        let c = snap("10.0.0.2", 2, 5, 9, 64);
        let m = merge_exporters([&a, &b, &c]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].address, "10.0.0.1");
        assert_eq!(m[1].address, "10.0.0.2");
        assert_eq!(m[1].domains, [1, 2]);
        assert_eq!((m[1].records, m[1].sequence_missing), (15, 4));
        assert_eq!((m[1].bytes, m[1].no_template_sets), (200, 2));
        assert_eq!((m[1].sampling_rate, m[1].last_seen_unix_us), (64, Some(9)));
        assert_eq!(m[1].sampling_source, "sampler");
    }

    #[test]
    fn templates_group_by_exporter_and_domain() {
        let t = |addr: &str, domain, id| CodecTemplate {
            exporter: addr
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            domain,
            id,
            kind: TemplateKind::Data,
            fields: vec![FieldSpec {
                id: 8,
                len: 4,
                enterprise: 0,
            }],
            repeated_ies: if id == 300 { vec![8] } else { Vec::new() },
            learned_us: 0,
            refreshed_us: 0,
            age_secs: 3,
            restored: false,
        };
        // The same template in two workers (restored in both, announced again in one): listed
        // once, as the announced copy.
        let restored = CodecTemplate {
            restored: true,
            ..t("10.0.0.1", 1, 256)
        };
        let announced = CodecTemplate {
            refreshed_us: 5,
            ..t("10.0.0.1", 1, 256)
        };
        let list = [
            t("10.0.0.2", 0, 257),
            t("10.0.0.1", 1, 300),
            restored,
            announced,
            t("10.0.0.1", 0, 999),
        ];
        let all = TemplatesQuery {
            limit: 100,
            ..TemplatesQuery::default()
        };
        let r = templates_report(&list, 3_000_000, &all);
        assert_eq!((r.total, r.next), (4, None));
        assert!(
            r.exporters
                .iter()
                .flat_map(|e| &e.domains)
                .flat_map(|d| &d.templates)
                .all(|t| !t.restored)
        );
        assert_eq!(r.exporters.len(), 2);
        assert_eq!(r.with_repeated_ies, 1);
        assert_eq!(r.exporters[0].domains[1].templates[1].repeated_ies, vec![8]);
        let e = &r.exporters[0];
        assert_eq!(e.address, "10.0.0.1");
        let ids: Vec<(u32, Vec<u16>)> = e
            .domains
            .iter()
            .map(|d| (d.domain, d.templates.iter().map(|t| t.id).collect()))
            .collect();
        assert_eq!(ids, [(0, vec![999]), (1, vec![256, 300])]);
        assert_eq!(
            e.domains[0].templates[0].fields[0],
            TemplateField {
                id: 8,
                enterprise: None,
                length: 4,
                name: Some("sourceIPv4Address".into())
            }
        );
        // Pages of two: the second starts at the first's `next`; an exporter filter counts
        // only its templates.
        let q = |offset, exporter: Option<&str>| TemplatesQuery {
            offset,
            limit: 2,
            exporter: exporter.and_then(|a| a.parse().ok()),
        };
        let p1 = templates_report(&list, 0, &q(0, None));
        assert_eq!((p1.total, p1.limit, p1.next), (4, 2, Some(2)));
        let ids = |r: &TemplatesReport| -> Vec<u16> {
            r.exporters
                .iter()
                .flat_map(|e| &e.domains)
                .flat_map(|d| &d.templates)
                .map(|t| t.id)
                .collect()
        };
        assert_eq!(ids(&p1), [999, 256]);
        let p2 = templates_report(&list, 0, &q(2, None));
        assert_eq!((ids(&p2), p2.next), (vec![300, 257], None));
        let one = templates_report(&list, 0, &q(0, Some("10.0.0.2")));
        assert_eq!((one.total, ids(&one)), (1, vec![257]));
        // A limit of 0 is one template; a huge one is the maximum.
        assert_eq!(
            templates_report(&list, 0, &TemplatesQuery::default()).limit,
            1
        );
        let big = TemplatesQuery {
            limit: u64::MAX,
            ..TemplatesQuery::default()
        };
        assert_eq!(templates_report(&list, 0, &big).limit, TEMPLATES_PAGE_MAX);
    }
}
