//! `goflow decode FILE.pcap...`: reads pcap/pcapng captures, feeds every NetFlow v5/v9/IPFIX
//! datagram through one [`Decoder`] (the collector's own codec and template cache) in file
//! order, keyed by the packet's source address and stamped with the capture time, and prints one
//! JSON object per flow record on stdout, exactly as the `file` backend writes it. A summary
//! goes to stderr. Exit status 0 unless a file cannot be read.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use goflow_codec::{Decoder, DecoderConfig};
use goflow_writers::json::encode_line;

use crate::pcap;

/// Flush stdout once this much JSON is buffered.
const STDOUT_FLUSH_BYTES: usize = 256 * 1024;

/// Options of `goflow decode`.
#[derive(Debug, Default, clap::Args)]
pub struct DecodeOpt {
    /// pcap or pcapng files, decoded in the order given (templates carry over between files).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Totals over every file, for the summary.
#[derive(Debug, Default)]
struct Totals {
    packets: u64,
    udp: u64,
    netflow_datagrams: u64,
    records: u64,
    records_without_template: u64,
    /// Decode errors by `DecodeError::kind`.
    errors: BTreeMap<&'static str, u64>,
    skipped: BTreeMap<&'static str, u64>,
    truncated_files: u64,
    unreadable_files: u64,
}

pub fn run(opt: &DecodeOpt) -> anyhow::Result<ExitCode> {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf: Vec<u8> = Vec::with_capacity(STDOUT_FLUSH_BYTES + 4096);
    let mut totals = Totals::default();
    let mut stdout_closed = false;

    for path in &opt.files {
        let bytes = match std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        {
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
            let result = decoder.decode(udp.src.ip(), ts_us, udp.payload, |rec| {
                encode_line(rec, &mut buf);
            });
            match result {
                Ok(o) => {
                    totals.records += u64::from(o.records);
                    totals.records_without_template += u64::from(o.records_without_template);
                }
                Err(e) => *totals.errors.entry(e.kind()).or_default() += 1,
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
                    eprintln!(
                        "goflow decode: {}: capture ends mid-packet; read up to there",
                        path.display()
                    );
                }
            }
            Err(e) => {
                eprintln!("goflow decode: {}: {e:#}", path.display());
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
    if !stdout_closed {
        match out.write_all(&buf).and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing to stdout");
            }
            _ => {}
        }
    }
    // Data sets still held for a template that never came: lost for want of one.
    totals.records_without_template += decoder.expire_held(i64::MAX) as u64;
    print_summary(&totals, &decoder);
    Ok(if totals.unreadable_files > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(t: &Totals, decoder: &Decoder) {
    let mut s = format!(
        "goflow decode: {} packets, {} UDP, {} NetFlow datagrams, {} records, {} records without template",
        t.packets, t.udp, t.netflow_datagrams, t.records, t.records_without_template
    );
    let errors: u64 = t.errors.values().sum();
    s.push_str(&format!(", {errors} errors"));
    if errors > 0 {
        let by_kind: Vec<String> = t.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
        s.push_str(&format!(" ({})", by_kind.join(" ")));
    }
    let stats = decoder.stats();
    if stats.templates_rejected > 0 {
        s.push_str(&format!(
            ", {} templates rejected",
            stats.templates_rejected
        ));
    }
    if !t.skipped.is_empty() {
        let by_kind: Vec<String> = t.skipped.iter().map(|(k, n)| format!("{k}={n}")).collect();
        s.push_str(&format!("; skipped: {}", by_kind.join(" ")));
    }
    if t.truncated_files > 0 {
        s.push_str(&format!("; {} truncated files", t.truncated_files));
    }
    if t.unreadable_files > 0 {
        s.push_str(&format!("; {} unreadable files", t.unreadable_files));
    }
    eprintln!("{s}");
}
