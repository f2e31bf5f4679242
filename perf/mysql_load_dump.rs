//! `mysql_load_dump CAPTURE OUT TABLE [COLUMNS]`: decodes every NetFlow/IPFIX datagram of a pcap (as
//! `goflow decode` does: one decoder, source address as exporter, capture time as receive time)
//! and writes the records as LOAD DATA text lines with goflow's own MySQL row encoder to OUT,
//! and the LOAD DATA LOCAL INFILE statement goflow uses for TABLE (reading OUT) to OUT.sql.
//! perf/mysql.sh runs OUT.sql with the mariadb client to measure the server's ceiling for
//! exactly the rows goflow writes, all of them in `last_switched` order: goflow sorts each
//! flush (100 k rows by default) that way, so the server gets the ceiling at least the same help.
//! COLUMNS (comma-separated, as a backend's `columns:`) limits the rows to those columns, as
//! goflow writes them then. Prints `rows bytes` on stdout.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use bytes::BytesMut;
use goflow_codec::{Decoder, DecoderConfig};
use goflow_writers::mysql;
use goflow_writers::schema::ColumnSet;
use goflow_writers::sink::RowEncoder;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mysql_load_dump: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (capture, out_path, table, set) = match args.as_slice() {
        [c, o, t] => (c, o, t, ColumnSet::ALL),
        [c, o, t, cols] => (
            c,
            o,
            t,
            ColumnSet::parse(&cols.split(',').collect::<Vec<_>>())
                .map_err(|e| anyhow::anyhow!("COLUMNS: {e}"))?,
        ),
        _ => anyhow::bail!("usage: mysql_load_dump CAPTURE.pcap OUT.tsv TABLE [COLUMNS]"),
    };
    let bytes = std::fs::read(capture).with_context(|| format!("reading {capture}"))?;
    let mut out = File::create(out_path).with_context(|| format!("creating {out_path}"))?;
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut enc = mysql::encoder_for(set);
    let mut buf = BytesMut::new();
    let mut rows = 0u64;
    goflow::pcap::for_each_udp(&bytes, |ts_us, udp| {
        if !goflow::pcap::is_netflow(udp.payload) {
            return;
        }
        let _ = decoder.decode(udp.src.ip(), ts_us, udp.payload, |rec| {
            enc.encode(rec, &mut buf);
            rows += 1;
        });
    })?;
    let all = buf.freeze();
    let sorted = mysql::order::time_field(set)
        .and_then(|f| mysql::order::sorted_by_field(std::slice::from_ref(&all), f))
        .unwrap_or(all);
    out.write_all(&sorted)
        .with_context(|| format!("writing {out_path}"))?;
    let load = mysql::ddl::load_statement_for(table, &mysql::ddl::Layout::default(), set).replacen(
        "'goflow'",
        &mysql::ddl::quote_str(out_path),
        1,
    );
    std::fs::write(format!("{out_path}.sql"), format!("{load};\n"))
        .with_context(|| format!("writing {out_path}.sql"))?;
    println!("{rows} {}", sorted.len());
    Ok(())
}
