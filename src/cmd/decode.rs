//! `goflow decode FILE.pcap...` (or `-` for standard input): reads pcap/pcapng captures, feeds
//! every NetFlow v5/v9/IPFIX datagram through one [`Decoder`] (the collector's own codec and
//! template cache) in file order, keyed by the packet's source address and stamped with the
//! capture time, and prints one JSON object per flow record on stdout, exactly as the `file`
//! backend writes it. A one-line summary goes to stderr. With `--summary` no JSON is printed:
//! stdout gets a report per exporter (datagrams, records, versions, errors, templates) and what
//! options records taught (sampling rates per domain and sampler, interface names). Exit
//! status 0 unless a file cannot be read.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use goflow_codec::fields::VARIABLE_LENGTH;
use goflow_codec::template::{FieldSpec, TemplateKind};
use goflow_codec::{Decoder, DecoderConfig};
use goflow_writers::json::encode_line;

use crate::pcap;

/// Flush stdout once this much JSON is buffered.
const STDOUT_FLUSH_BYTES: usize = 256 * 1024;

/// Options of `goflow decode`.
#[derive(Debug, Default, clap::Args)]
pub struct DecodeOpt {
    /// pcap or pcapng files, decoded in the order given (templates carry over between files);
    /// `-` reads one capture from standard input (`tcpdump -w - ... | goflow decode -`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print no flow records: a report per exporter (datagrams, records, versions, errors,
    /// templates) and what options records taught (sampling rates, interface names).
    #[arg(long)]
    pub summary: bool,
}

/// Totals over every file, for the summary.
#[derive(Debug, Default)]
struct Totals {
    packets: u64,
    udp: u64,
    netflow_datagrams: u64,
    records: u64,
    /// Decode errors by `DecodeError::kind`.
    errors: BTreeMap<&'static str, u64>,
    skipped: BTreeMap<&'static str, u64>,
    truncated_files: u64,
    unreadable_files: u64,
}

pub use crate::cli::count;

pub fn run(opt: &DecodeOpt) -> anyhow::Result<ExitCode> {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf: Vec<u8> = Vec::with_capacity(STDOUT_FLUSH_BYTES + 4096);
    let mut totals = Totals::default();
    let mut stdout_closed = false;
    let mut options = OptionsReader::default();

    for path in &opt.files {
        let (name, read) = if path.as_os_str() == "-" {
            let mut b = Vec::new();
            (
                "standard input".to_owned(),
                io::stdin()
                    .lock()
                    .read_to_end(&mut b)
                    .map(|_| b)
                    .context("reading standard input"),
            )
        } else {
            (
                path.display().to_string(),
                std::fs::read(path).with_context(|| format!("reading {}", path.display())),
            )
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                eprintln!("goflow decode: {e:#}");
                totals.unreadable_files += 1;
                continue;
            }
        };
        let mut write_err: Option<io::Error> = None;
        let summary = pcap::for_each_udp(&bytes, |ts_us, udp| {
            if !pcap::is_netflow(udp.payload) {
                return;
            }
            totals.netflow_datagrams += 1;
            let exporter = udp.src.ip().to_canonical();
            let result = decoder.decode(exporter, ts_us, udp.payload, |rec| {
                if !opt.summary {
                    encode_line(rec, &mut buf);
                }
            });
            match result {
                Ok(o) => totals.records += u64::from(o.records),
                Err(e) => *totals.errors.entry(e.kind()).or_default() += 1,
            }
            if opt.summary {
                options.datagram(&decoder, exporter, udp.payload);
            }
            if buf.len() >= STDOUT_FLUSH_BYTES && write_err.is_none() {
                if let Err(e) = out.write_all(&buf) {
                    write_err = Some(e);
                }
                buf.clear();
            }
        });
        match summary {
            Ok(s) => {
                totals.packets += s.read.frames;
                totals.udp += s.udp;
                for (kind, n) in [
                    (pcap::Skip::LinkType, s.skipped_link_type),
                    (pcap::Skip::NotUdp, s.skipped_not_udp),
                    (pcap::Skip::Fragment, s.skipped_fragment),
                    (pcap::Skip::Malformed, s.skipped_malformed),
                ] {
                    if n > 0 {
                        *totals.skipped.entry(kind.as_str()).or_default() += n;
                    }
                }
                if s.read.truncated {
                    totals.truncated_files += 1;
                    eprintln!("goflow decode: {name}: capture ends mid-packet; read up to there");
                }
            }
            Err(e) => {
                eprintln!("goflow decode: {name}: {e:#}");
                totals.unreadable_files += 1;
            }
        }
        if let Some(e) = write_err {
            if e.kind() == io::ErrorKind::BrokenPipe {
                stdout_closed = true;
                break;
            }
            return Err(e).context("writing to stdout");
        }
    }
    // Data sets still held for a template that never came: lost for want of one.
    decoder.expire_held(i64::MAX);
    if opt.summary {
        buf.extend_from_slice(report(&totals, &decoder, &options).as_bytes());
    }
    if !stdout_closed {
        match out.write_all(&buf).and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing to stdout");
            }
            _ => {}
        }
    }
    eprintln!("{}", summary_line(&totals, &decoder));
    Ok(if totals.unreadable_files > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The one-line summary on stderr. Every count names its unit: data sets without a template
/// are counted as sets (their records cannot be counted without the template).
fn summary_line(t: &Totals, decoder: &Decoder) -> String {
    let stats = decoder.stats();
    let mut s = format!(
        "goflow decode: {}, {}, {}, {}",
        count(t.packets, "packet", "packets"),
        count(t.udp, "UDP datagram", "UDP datagrams"),
        count(t.netflow_datagrams, "NetFlow datagram", "NetFlow datagrams"),
        count(t.records, "flow record", "flow records"),
    );
    if stats.held_released_records > 0 {
        s.push_str(&format!(
            " ({} decoded once their template arrived)",
            stats.held_released_records
        ));
    }
    if stats.options_records > 0 {
        s.push_str(&format!(
            ", {}",
            count(stats.options_records, "options record", "options records")
        ));
    }
    s.push_str(&format!(
        ", {} ({})",
        count(
            stats.records_without_template,
            "data set without a template",
            "data sets without a template"
        ),
        count(stats.bytes_without_template, "byte", "bytes")
    ));
    let errors: u64 = t.errors.values().sum();
    s.push_str(&format!(", {}", count(errors, "error", "errors")));
    if errors > 0 {
        let by_kind: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
        s.push_str(&format!(" ({})", by_kind.join(" ")));
    }
    if stats.templates_rejected > 0 {
        s.push_str(&format!(
            ", {} rejected",
            count(stats.templates_rejected, "template", "templates")
        ));
    }
    if !t.skipped.is_empty() {
        let by_kind: Vec<String> = t.skipped.iter().map(|(k, n)| format!("{k}={n}")).collect();
        s.push_str(&format!("; skipped: {}", by_kind.join(" ")));
    }
    if t.truncated_files > 0 {
        s.push_str(&format!(
            "; {}",
            count(t.truncated_files, "truncated file", "truncated files")
        ));
    }
    if t.unreadable_files > 0 {
        s.push_str(&format!(
            "; {}",
            count(t.unreadable_files, "unreadable file", "unreadable files")
        ));
    }
    s
}

/// `--summary`: per exporter, then what options records taught.
fn report(t: &Totals, decoder: &Decoder, options: &OptionsReader) -> String {
    let mut out = String::new();
    let stats = decoder.stats();
    let _ = writeln!(
        out,
        "{} in {}: {}, {}, {} without a template",
        count(t.netflow_datagrams, "NetFlow datagram", "NetFlow datagrams"),
        count(t.packets, "packet", "packets"),
        count(t.records, "flow record", "flow records"),
        count(stats.options_records, "options record", "options records"),
        count(stats.records_without_template, "data set", "data sets"),
    );
    let saved = decoder.save();
    let exporters = decoder.exporters();
    if exporters.is_empty() {
        out.push_str("\nno exporters\n");
    }
    for e in &exporters {
        let versions: Vec<String> = e.versions.iter().map(|v| format!("v{v}")).collect();
        let _ = writeln!(
            out,
            "\nexporter {} ({}): {}, {}, {}",
            e.address,
            versions.join(" "),
            count(e.datagrams, "datagram", "datagrams"),
            count(e.records, "flow record", "flow records"),
            count(e.errors, "error", "errors"),
        );
        let templates: Vec<_> = saved
            .templates
            .iter()
            .filter(|s| s.exporter == e.address)
            .collect();
        if !templates.is_empty() {
            let list: Vec<String> = templates
                .iter()
                .map(|s| {
                    let kind = match s.kind {
                        TemplateKind::Data => "",
                        TemplateKind::Options => " options",
                    };
                    format!(
                        "{}{kind} ({}, domain {})",
                        s.id,
                        count(s.fields.len() as u64, "field", "fields"),
                        s.domain
                    )
                })
                .collect();
            let _ = writeln!(out, "  templates: {}", list.join(", "));
        }
        if e.sequence_missing > 0 || e.sequence_resets > 0 {
            let _ = writeln!(
                out,
                "  sequence: {} missing, {}",
                e.sequence_missing,
                count(e.sequence_resets, "reset", "resets")
            );
        }
        let _ = writeln!(
            out,
            "  sampling of its last record: 1 in {} ({})",
            e.sampling.rate,
            e.sampling.source.as_str()
        );
        for d in saved.domains.iter().filter(|d| d.exporter == e.address) {
            let mut learned = Vec::new();
            if let Some(r) = d.default_rate {
                learned.push(format!("1 in {r}"));
            }
            for (id, r) in &d.samplers {
                learned.push(format!("sampler {id}: 1 in {r}"));
            }
            if !learned.is_empty() {
                let _ = writeln!(
                    out,
                    "  sampling from options (domain {}): {}",
                    d.domain,
                    learned.join(", ")
                );
            }
        }
        let names: Vec<_> = options
            .interfaces
            .range((e.address, 0)..=(e.address, u64::MAX))
            .collect();
        if !names.is_empty() {
            let _ = writeln!(out, "  interfaces from options:");
            for ((_, index), i) in names {
                let desc = match &i.description {
                    Some(d) if Some(d) != i.name.as_ref() => format!(" ({d})"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "    {index:>6}  {}{desc}",
                    i.name.as_deref().unwrap_or("-")
                );
            }
        }
    }
    out
}

/// An interface an exporter described in options data.
#[derive(Debug, Default)]
struct Interface {
    name: Option<String>,
    description: Option<String>,
}

/// Reads interface names out of options data records (`--summary` only). The decoder reads
/// the options it needs for sampling itself; names are only for people, so this walks the
/// sets of a datagram a second time against the decoder's options templates.
#[derive(Debug, Default)]
struct OptionsReader {
    /// The decoder's options templates (by exporter, domain, id), refreshed when its
    /// generation moves.
    templates: HashMap<(IpAddr, u32, u16), OptionsTemplate>,
    generation: Option<u64>,
    /// (exporter, ifIndex) -> names.
    interfaces: BTreeMap<(IpAddr, u64), Interface>,
}

#[derive(Debug)]
struct OptionsTemplate {
    ipfix: bool,
    scope_count: u16,
    fields: Vec<FieldSpec>,
}

/// interfaceName, interfaceDescription.
const IE_INTERFACE_NAME: u16 = 82;
const IE_INTERFACE_DESCRIPTION: u16 = 83;
/// ingressInterface, egressInterface, ingress/egressPhysicalInterface.
const IE_INTERFACES: [u16; 4] = [10, 14, 252, 253];
/// NetFlow v9's "Interface" scope field type.
const V9_SCOPE_INTERFACE: u16 = 2;

impl OptionsReader {
    fn datagram(&mut self, decoder: &Decoder, exporter: IpAddr, d: &[u8]) {
        let (ipfix, header, domain) = match d {
            [0, 9, ..] if d.len() >= 20 => (false, 20, be(&d[16..20])),
            [0, 10, ..] if d.len() >= 16 => (true, 16, be(&d[12..16])),
            _ => return,
        };
        if self.generation != Some(decoder.generation()) {
            self.generation = Some(decoder.generation());
            self.templates = decoder
                .save()
                .templates
                .into_iter()
                .filter(|t| t.kind == TemplateKind::Options)
                .map(|t| {
                    (
                        (t.exporter, t.domain, t.id),
                        OptionsTemplate {
                            ipfix: t.ipfix,
                            scope_count: t.scope_count,
                            fields: t.fields,
                        },
                    )
                })
                .collect();
        }
        let domain = u32::try_from(domain).unwrap_or(0);
        let mut rest = d.get(header..).unwrap_or_default();
        while rest.len() >= 4 {
            let id = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            if len < 4 || len > rest.len() {
                return;
            }
            if let Some(t) = self.templates.get(&(exporter, domain, id))
                && t.ipfix == ipfix
            {
                let body = &rest[4..len];
                read_records(t, body, |index, iface| {
                    let e = self.interfaces.entry((exporter, index)).or_default();
                    if iface.name.is_some() {
                        e.name = iface.name;
                    }
                    if iface.description.is_some() {
                        e.description = iface.description;
                    }
                });
            }
            rest = &rest[len..];
        }
    }
}

/// Calls `found` with (ifIndex, names) for every record of `body` that names an interface.
fn read_records(t: &OptionsTemplate, mut body: &[u8], mut found: impl FnMut(u64, Interface)) {
    // A record is at least one byte per field; what remains below that is padding.
    while body.len() >= t.fields.len().max(1) {
        let mut index = None;
        let mut iface = Interface::default();
        for (i, f) in t.fields.iter().enumerate() {
            let len = if f.len == VARIABLE_LENGTH {
                let Some((&first, after)) = body.split_first() else {
                    return;
                };
                body = after;
                if first < 255 {
                    usize::from(first)
                } else {
                    let [a, b, ..] = body else { return };
                    let n = usize::from(u16::from_be_bytes([*a, *b]));
                    body = &body[2..];
                    n
                }
            } else {
                usize::from(f.len)
            };
            let Some(value) = body.get(..len) else {
                return;
            };
            body = &body[len..];
            if f.enterprise != 0 {
                continue;
            }
            let scope = i < usize::from(t.scope_count);
            let is_index = if t.ipfix || !scope {
                IE_INTERFACES.contains(&f.id)
            } else {
                f.id == V9_SCOPE_INTERFACE
            };
            if is_index && index.is_none() && (1..=8).contains(&len) {
                index = Some(be(value));
            } else if !scope && f.id == IE_INTERFACE_NAME {
                iface.name = text(value);
            } else if !scope && f.id == IE_INTERFACE_DESCRIPTION {
                iface.description = text(value);
            }
        }
        if let Some(index) = index
            && (iface.name.is_some() || iface.description.is_some())
        {
            found(index, iface);
        }
        if t.fields.is_empty() {
            return;
        }
    }
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// A string field: UTF-8 (lossy), without the NUL padding exporters put after it.
fn text(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end_matches('\0').trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_singular_and_plural() {
        assert_eq!(count(1, "packet", "packets"), "1 packet");
        assert_eq!(count(0, "packet", "packets"), "0 packets");
        assert_eq!(count(4, "data set", "data sets"), "4 data sets");
    }

    #[test]
    fn reads_interface_names_from_ipfix_and_v9_options_records() {
        // IPFIX: scope ingressInterface (4 bytes), interfaceName variable, description fixed 8.
        let t = OptionsTemplate {
            ipfix: true,
            scope_count: 1,
            fields: vec![
                FieldSpec {
                    id: 10,
                    len: 4,
                    enterprise: 0,
                },
                FieldSpec {
                    id: 82,
                    len: VARIABLE_LENGTH,
                    enterprise: 0,
                },
                FieldSpec {
                    id: 83,
                    len: 8,
                    enterprise: 0,
                },
            ],
        };
        let mut body = Vec::new();
        body.extend_from_slice(&3u32.to_be_bytes());
        body.push(7);
        body.extend_from_slice(b"Gi0/0/1");
        body.extend_from_slice(b"uplink\0\0");
        body.extend_from_slice(&4u32.to_be_bytes());
        body.push(255);
        body.extend_from_slice(&3u16.to_be_bytes());
        body.extend_from_slice(b"Te1");
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&[0, 0, 0]); // padding
        let mut got = Vec::new();
        read_records(&t, &body, |i, f| got.push((i, f.name, f.description)));
        assert_eq!(
            got,
            [
                (3, Some("Gi0/0/1".to_owned()), Some("uplink".to_owned())),
                (4, Some("Te1".to_owned()), None)
            ]
        );

        // v9: scope "Interface" (type 2), IF_NAME 16 bytes; a truncated second record is left.
        let t = OptionsTemplate {
            ipfix: false,
            scope_count: 1,
            fields: vec![
                FieldSpec {
                    id: 2,
                    len: 2,
                    enterprise: 0,
                },
                FieldSpec {
                    id: 82,
                    len: 16,
                    enterprise: 0,
                },
            ],
        };
        let mut body = vec![0, 9];
        let mut name = b"eth0".to_vec();
        name.resize(16, 0);
        body.extend_from_slice(&name);
        body.extend_from_slice(&[0, 10, b'x']);
        let mut got = Vec::new();
        read_records(&t, &body, |i, f| got.push((i, f.name)));
        assert_eq!(got, [(9, Some("eth0".to_owned()))]);
    }
}
