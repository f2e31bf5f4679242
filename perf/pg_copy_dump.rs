//! `pg_copy_dump CAPTURE OUT`: decodes every NetFlow/IPFIX datagram of a pcap (as `goflow decode`
//! does: one decoder, source address as exporter, capture time as receive time) and writes the
//! records as one PostgreSQL binary COPY stream (header, goflow's own row encoder, trailer) to
//! OUT. perf/postgres.sh loads OUT with `psql \copy ... FROM ... WITH (FORMAT binary)` to measure
//! the server's ceiling for exactly the rows goflow writes. Prints `rows bytes` on stdout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use bytes::BytesMut;
use goflow_codec::{Decoder, DecoderConfig};
use goflow_writers::pg;
use goflow_writers::sink::RowEncoder;

/// Bytes buffered before a write to OUT.
const WRITE_BYTES: usize = 4 << 20;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg_copy_dump: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [capture, out_path] = args.as_slice() else {
        anyhow::bail!("usage: pg_copy_dump CAPTURE.pcap OUT.copy");
    };
    let bytes = std::fs::read(capture).with_context(|| format!("reading {capture}"))?;
    let mut out =
        BufWriter::new(File::create(out_path).with_context(|| format!("creating {out_path}"))?);
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut enc = pg::encoder();
    let mut buf = BytesMut::with_capacity(WRITE_BYTES + pg::encode::ROW_LEN_MAX * 64);
    pg::encode::write_header(&mut buf);
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
        if buf.len() >= WRITE_BYTES && io_err.is_none() {
            written += buf.len() as u64;
            io_err = out.write_all(&buf).err();
            buf.clear();
        }
    })?;
    pg::encode::write_trailer(&mut buf);
    written += buf.len() as u64;
    if let Some(e) = io_err {
        return Err(e).with_context(|| format!("writing {out_path}"));
    }
    out.write_all(&buf)
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {out_path}"))?;
    println!("{rows} {written}");
    Ok(())
}
