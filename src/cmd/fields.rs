//! `goflow fields`: every column of the flow table (writers/src/schema.rs, the one schema) with
//! its type, what PostgreSQL, MySQL, JSON lines and Kafka protobuf store it as, whether NetFlow
//! v5 fills it, and the information elements (v9/IPFIX) that fill it, in the order goflow
//! prefers them when a template carries several. The element list is read from the codec's
//! own table (`goflow_codec::fields::lookup`), so it cannot drift from what is decoded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use goflow_codec::encode::{V5Builder, V5Header, sample_flow_v4};
use goflow_codec::fields::{self as ie, REVERSE_PEN, Target};
use goflow_codec::{Decoder, DecoderConfig};
use goflow_writers::schema::{COLUMNS, ColumnType, Value};
use serde::Serialize;

/// Options of `goflow fields`.
#[derive(Debug, Default, clap::Args)]
pub struct FieldsOpt {
    /// Print JSON (one object per column) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One information element that fills a column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Element {
    pub id: u16,
    /// Private enterprise number (29305: RFC 5103 reverse direction); 0 for IANA.
    pub pen: u32,
    pub name: String,
    /// Lower wins when a template carries several for one column.
    pub rank: u8,
}

/// One column as `goflow fields` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Field {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub nullable: bool,
    pub postgres: &'static str,
    pub mysql: &'static str,
    pub json: &'static str,
    /// goflow2 FlowMessage field number (Kafka `format: protobuf`), when it has one.
    pub kafka_protobuf: Option<u32>,
    /// NetFlow v5 records fill it.
    pub v5: bool,
    pub elements: Vec<Element>,
    /// Where the value comes from besides (or instead of) elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

fn type_name(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Time => "time",
        ColumnType::Ip => "ip",
        ColumnType::U8 => "u8",
        ColumnType::U16 => "u16",
        ColumnType::U32 => "u32",
        ColumnType::U64 => "u64",
        ColumnType::Mac => "mac",
        ColumnType::Text => "text",
    }
}

fn json_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Time => "string (RFC 3339, UTC, µs)",
        ColumnType::Ip => "string",
        ColumnType::U8 | ColumnType::U16 | ColumnType::U32 | ColumnType::U64 => "number",
        ColumnType::Mac => "string (aa:bb:cc:dd:ee:ff)",
        ColumnType::Text => "string",
    }
}

/// The columns a codec target fills.
fn columns_of(t: Target) -> &'static [&'static str] {
    use Target as T;
    match t {
        T::SrcIp | T::SrcIp6 => &["src_ip"],
        T::DstIp | T::DstIp6 => &["dst_ip"],
        T::NextHop | T::NextHop6 => &["next_hop"],
        // The BGP next hop is also the next hop when nothing else says.
        T::BgpNextHop | T::BgpNextHop6 => &["bgp_next_hop", "next_hop"],
        T::SrcMask | T::SrcMask6 => &["src_mask"],
        T::DstMask | T::DstMask6 => &["dst_mask"],
        T::PostNatSrcIp | T::PostNatSrcIp6 => &["post_nat_src_ip"],
        T::PostNatDstIp | T::PostNatDstIp6 => &["post_nat_dst_ip"],
        T::IcmpTypeCode | T::IcmpTypeCode6 => &["icmp_type", "icmp_code"],
        T::IcmpType | T::IcmpType6 => &["icmp_type"],
        T::IcmpCode | T::IcmpCode6 => &["icmp_code"],
        T::SrcPort => &["src_port"],
        T::DstPort => &["dst_port"],
        T::Protocol => &["protocol"],
        T::InBytes => &["in_bytes"],
        T::InPkts => &["in_pkts"],
        T::OutBytes => &["out_bytes"],
        T::OutPkts => &["out_pkts"],
        T::TcpFlags => &["tcp_flags"],
        T::Tos => &["tos"],
        T::InputIf => &["input_if"],
        T::OutputIf => &["output_if"],
        T::SrcAs => &["src_as"],
        T::DstAs => &["dst_as"],
        T::Direction => &["direction"],
        T::IpVersion => &["ip_version"],
        T::First => &["first_switched"],
        T::Last => &["last_switched"],
        T::SystemInit => &["first_switched", "last_switched"],
        T::SamplerId | T::SamplingInterval => &["sampling_rate"],
        T::Vlan => &["vlan"],
        T::PostVlan => &["post_vlan"],
        T::SrcMac => &["src_mac"],
        T::DstMac => &["dst_mac"],
        T::MplsLabel => &["mpls_label"],
        T::PostNatSrcPort => &["post_nat_src_port"],
        T::PostNatDstPort => &["post_nat_dst_port"],
        T::IngressVrf => &["ingress_vrf"],
        T::EgressVrf => &["egress_vrf"],
        T::FlowEndReason => &["flow_end_reason"],
        T::ForwardingStatus => &["forwarding_status"],
        T::Etype => &["etype"],
        T::FwEvent => &["fw_event"],
        // NSEL connection id: used to pair events, not stored.
        T::ConnectionId => &[],
    }
}

/// What fills a column besides elements.
fn note(column: &str) -> Option<&'static str> {
    Some(match column {
        "time_received" => "the collector's clock when the datagram arrived",
        "first_switched" | "last_switched" => {
            "absolute times, or sysUptime-relative (21/22) with the header or systemInitTime (160); else the export time"
        }
        "exporter" => "the datagram's source address",
        "observation_domain" => {
            "v9 source id / IPFIX observation domain (header); v5 engine type and id"
        }
        "sampling_rate" => {
            "v5 header; options data (34, 50, 305-311) by sampler (48, 302); `sampling:` config; 1 when unknown"
        }
        "sampling_source" => {
            "where sampling_rate came from: unknown, v5_header, record, sampler, exporter, config"
        }
        "ip_version" => "else from the addresses' family",
        "etype" => "else from ip_version (0x0800 / 0x86dd)",
        "out_bytes" | "out_pkts" => {
            "NSEL responder / RFC 5103 reverse counters; 23/24 when the forward counter is another element"
        }
        "fw_event" => "NSEL / firewall event; update events carry deltas, teardowns totals",
        _ => return None,
    })
}

/// Names of the elements goflow reads that the ops API's table lacks.
fn more_names(id: u16) -> Option<&'static str> {
    Some(match id {
        57 => "postDestinationMacAddress",
        59 => "postVlanId",
        70 => "mplsTopLabelStackSection",
        81 => "postSourceMacAddress",
        176 => "icmpTypeIPv4",
        177 => "icmpCodeIPv4",
        178 => "icmpTypeIPv6",
        179 => "icmpCodeIPv6",
        231 => "initiatorOctets",
        232 => "responderOctets",
        233 => "firewallEvent",
        234 => "ingressVRFID",
        235 => "egressVRFID",
        243 => "dot1qVlanId",
        252 => "ingressPhysicalInterface",
        253 => "egressPhysicalInterface",
        254 => "postDot1qVlanId",
        256 => "ethernetType",
        281 => "postNATSourceIPv6Address",
        282 => "postNATDestinationIPv6Address",
        298 => "initiatorPackets",
        299 => "responderPackets",
        323 => "observationTimeMilliseconds",
        40005 => "NF_F_FW_EVENT (Cisco NSEL)",
        _ => return None,
    })
}

/// Every column, in table order.
pub fn fields() -> Vec<Field> {
    let mut by_column: BTreeMap<&'static str, Vec<Element>> = BTreeMap::new();
    let mut add = |col: &'static str, id: u16, pen: u32, rank: u8| {
        let name = match (
            pen,
            crate::ops::source::element_name(id).or_else(|| more_names(id)),
        ) {
            (0, Some(n)) => n.to_owned(),
            (REVERSE_PEN, Some(n)) => format!("reverse {n} (RFC 5103)"),
            (0, None) => format!("element {id}"),
            (p, _) => format!("element {id} (PEN {p})"),
        };
        let list = by_column.entry(col).or_default();
        if !list.iter().any(|e| e.id == id && e.pen == pen) {
            list.push(Element {
                id,
                pen,
                name,
                rank,
            });
        }
    };
    for pen in [0, REVERSE_PEN] {
        for id in 0..=u16::MAX {
            let Some(m) = ie::lookup(id, pen) else {
                continue;
            };
            for col in columns_of(m.target) {
                add(col, id, pen, m.rank);
            }
            // Elements the plan builder puts in a second place at the same rank.
            match (id, pen) {
                (ie::OBSERVATION_TIME_MILLISECONDS, 0) => add("last_switched", id, pen, m.rank),
                (ie::OUT_BYTES, 0) => add("out_bytes", id, pen, m.rank),
                (ie::OUT_PKTS, 0) => add("out_pkts", id, pen, m.rank),
                _ => {}
            }
        }
    }
    for list in by_column.values_mut() {
        list.sort_by_key(|e| (e.rank, e.pen, e.id));
    }
    let v5 = v5_columns();
    COLUMNS
        .iter()
        .map(|c| Field {
            name: c.name,
            ty: type_name(c.ty),
            nullable: c.nullable,
            postgres: c.ty.pg_type(),
            mysql: c.ty.mysql_type(),
            json: json_type(c.ty),
            kafka_protobuf: kafka_field(c.name),
            v5: v5.contains(&c.name),
            elements: by_column.remove(c.name).unwrap_or_default(),
            note: note(c.name),
        })
        .collect()
}

#[cfg(feature = "kafka")]
fn kafka_field(column: &str) -> Option<u32> {
    goflow_writers::kafka::encode::PB_FIELDS
        .iter()
        .find(|(name, _, _)| *name == column)
        .map(|(_, n, _)| *n)
}

#[cfg(not(feature = "kafka"))]
fn kafka_field(_column: &str) -> Option<u32> {
    None
}

/// The columns a NetFlow v5 record fills: one decoded, the non-null ones.
fn v5_columns() -> Vec<&'static str> {
    let mut b = V5Builder::new(V5Header {
        sys_uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        ..V5Header::default()
    });
    if b.push(&sample_flow_v4(1)).is_err() {
        return Vec::new();
    }
    let mut d = Vec::new();
    b.finish(&mut d);
    let mut out = Vec::new();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let _ = decoder.decode(
        std::net::IpAddr::from([192, 0, 2, 1]),
        1_700_000_000_000_000,
        &d,
        |rec| {
            out = COLUMNS
                .iter()
                .filter(|c| (c.read)(rec) != Value::Null)
                .map(|c| c.name)
                .collect();
        },
    );
    out
}

pub fn run(opt: &FieldsOpt) -> anyhow::Result<ExitCode> {
    let fields = fields();
    let text = if opt.json {
        let mut s = serde_json::to_string_pretty(&fields)?;
        s.push('\n');
        s
    } else {
        render(&fields)
    };
    super::status::emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn render(fields: &[Field]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<19} {:<5} {:<12} {:<17} {:<7} {:<5} {:<3} FILLED BY (v9/IPFIX elements, preferred first)",
        "COLUMN", "TYPE", "POSTGRES", "MYSQL", "JSON", "KAFKA", "V5"
    );
    for f in fields {
        let elements: Vec<String> = f
            .elements
            .iter()
            .map(|e| {
                if e.pen == 0 {
                    format!("{} {}", e.id, e.name)
                } else {
                    format!("{}/{} {}", e.pen, e.id, e.name)
                }
            })
            .collect();
        let filled = match (elements.is_empty(), f.note) {
            (false, Some(n)) => format!("{}; {n}", elements.join(", ")),
            (false, None) => elements.join(", "),
            (true, Some(n)) => n.to_owned(),
            (true, None) => "-".to_owned(),
        };
        let json = f.json.split(' ').next().unwrap_or(f.json);
        let _ = writeln!(
            out,
            "{:<19} {:<5} {:<12} {:<17} {:<7} {:<5} {:<3} {filled}",
            f.name,
            f.ty,
            f.postgres,
            f.mysql,
            json,
            f.kafka_protobuf.map_or("-".to_owned(), |n| n.to_string()),
            if f.v5 { "yes" } else { "-" },
        );
    }
    out.push_str(
        "\nNULL where a record lacks the value (SQL NULL, JSON null); the first five columns and \
         sampling_rate never are.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_is_listed_and_filled_by_something() {
        let f = fields();
        assert_eq!(f.len(), COLUMNS.len());
        for c in &f {
            assert!(
                !c.elements.is_empty() || c.note.is_some() || c.v5,
                "{}: nothing fills it",
                c.name
            );
        }
        let get = |n: &str| f.iter().find(|c| c.name == n).expect(n);
        let ids = |n: &str| get(n).elements.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids("src_ip"), [8, 27]);
        assert_eq!(&ids("in_bytes")[..4], [1, 85, 231, 23]);
        assert!(
            get("out_bytes")
                .elements
                .iter()
                .any(|e| e.pen == REVERSE_PEN)
        );
        assert!(get("src_ip").v5 && get("in_bytes").v5 && !get("src_mac").v5);
        assert_eq!(get("time_received").ty, "time");
        assert_eq!(get("src_ip").postgres, "inet");
    }
}
