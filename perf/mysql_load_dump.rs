//! `mysql_load_dump CAPTURE OUT TABLE [COLUMNS]`: decodes every NetFlow/IPFIX datagram of a pcap (as
//! `goflow decode` does: one decoder, source address as exporter, capture time as receive time)
//! and writes the records as LOAD DATA text lines with goflow's own MySQL row encoder to OUT,
//! and the LOAD DATA LOCAL INFILE statement goflow uses for TABLE (reading OUT) to OUT.sql.
//! perf/mysql.sh runs OUT.sql with the mariadb client to measure the server's ceiling for
//! exactly the rows goflow writes, in blocks of 100 k rows (goflow's default `flush_rows`) each
//! in `last_switched` order, as goflow sorts each flush. COLUMNS (comma-separated, as a backend's `columns:`) limits
//! the rows to those columns, as goflow writes them then. Prints `rows bytes` on stdout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use bytes::BytesMut;
use goflow_codec::{Decoder, DecoderConfig};
use goflow_writers::mysql;
use goflow_writers::schema::ColumnSet;
use goflow_writers::sink::RowEncoder;

/// Rows per block of OUT, each in `last_switched` order as goflow sorts a flush of its default
/// `flush_rows`.
const SORT_ROWS: u64 = 100_000;

/// Writes the rows in `buf` to `out`, sorted as goflow sorts a flush, and empties `buf`.
fn write_block(
    out: &mut impl Write,
    buf: &mut BytesMut,
    time_field: Option<usize>,
    written: &mut u64,
) -> std::io::Result<()> {
    let rows = buf.split().freeze();
    let sorted = time_field
        .and_then(|f| mysql::order::sorted_by_field(std::slice::from_ref(&rows), f))
        .unwrap_or(rows);
    *written += sorted.len() as u64;
    out.write_all(&sorted)
}

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
    let mut out =
        BufWriter::new(File::create(out_path).with_context(|| format!("creating {out_path}"))?);
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut enc = mysql::encoder_for(set);
    let time_field = mysql::order::time_field(set);
    let mut buf = BytesMut::with_capacity(SORT_ROWS as usize * 256);
    let (mut rows, mut written) = (0u64, 0u64);
    let mut io_err = None;
    goflow::pcap::for_each_udp(&bytes, |ts_us, udp| {
        if !goflow::pcap::is_netflow(udp.payload) {
            return;
        }
        let _ = decoder.decode(udp.src.ip(), ts_us, udp.payload, |rec| {
            enc.encode(rec, &mut buf);
            rows += 1;
        });
        if rows % SORT_ROWS == 0 && io_err.is_none() {
            io_err = write_block(&mut out, &mut buf, time_field, &mut written).err();
        }
    })?;
    if let Some(e) = io_err {
        return Err(e).with_context(|| format!("writing {out_path}"));
    }
    write_block(&mut out, &mut buf, time_field, &mut written)
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {out_path}"))?;
    let load = mysql::ddl::load_statement_for(table, &mysql::ddl::Layout::default(), set).replacen(
        "'goflow'",
        &mysql::ddl::quote_str(out_path),
        1,
    );
    std::fs::write(format!("{out_path}.sql"), format!("{load};\n"))
        .with_context(|| format!("writing {out_path}.sql"))?;
    println!("{rows} {written}");
    Ok(())
}
