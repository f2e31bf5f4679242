//! PgSink against the real PostgreSQL (address from PGHOST/PGPORT/PGUSER/PGDATABASE, default
//! 127.0.0.1:5432 user postgres db test), a fresh table per test: every column read back (NULLs,
//! IPv6, microsecond times, sampling rate, counters above i64::MAX clamped), exact totals over
//! many COPYs, schema evolution, retention, and fatal (non-retriable) errors that name the table
//! and column.

mod pg_common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use goflow_codec::{FlowRecord, Plan, Slot};
use goflow_writers::pg::{self, PgSink};
use goflow_writers::schema::COLUMNS;
use goflow_writers::sink::{Chunk, RowEncoder, Sink};
use pg_common::*;

fn status_of(sink: &mut PgSink, key: &str) -> Option<String> {
    sink.status()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Every column of every kind of record survives the trip: IPv4 and IPv6 (and a v4 exporter
/// with v6 flows), NULLs for absent fields, microsecond times, sampling rate, u64 counters.
#[test]
fn every_column_reads_back() {
    let table = random_table("cols");
    let db = Db::connect(&table);
    let export = 1_767_225_600_654_321; // 2026-01-01T00:00:00.654321Z
    let received = export + 1_234;
    let ctx = wide_ctx(export, received);
    let plan6 = wide_plan(16);
    let plan4 = wide_plan(4);
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().expect("v6"));
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let wides = [
        (
            Wide {
                src: v6("2001:db8::1"),
                dst: v6("2001:db8:ffff::abcd"),
                next_hop: v6("fe80::1"),
                src_port: 1,
                in_bytes: 1,
                in_pkts: 1,
                direction: 0,
                start_delta_us: 1_500_001,
                end_us: export - 999_999,
            },
            16,
        ),
        (
            Wide {
                src: v4(10, 0, 0, 1),
                dst: v4(255, 255, 255, 255),
                next_hop: v4(0, 0, 0, 0),
                src_port: 65535,
                in_bytes: i64::MAX as u64,
                in_pkts: 2,
                direction: 1,
                start_delta_us: 7,
                end_us: export - 3,
            },
            4,
        ),
        (
            // Above i64::MAX: stored as i64::MAX (the clamp policy), counted.
            Wide {
                src: v6("::1"),
                dst: v6("2001:db8::"),
                next_hop: v6("::"),
                src_port: 0,
                in_bytes: u64::MAX,
                in_pkts: 3,
                direction: 255,
                start_delta_us: 0,
                end_us: 946_684_800_000_001, // one µs after PostgreSQL's epoch
            },
            16,
        ),
    ];
    let bytes: Vec<(Vec<u8>, u16)> = wides.iter().map(|(w, a)| (wide_bytes(w, *a), *a)).collect();
    // A record with almost nothing: only dst_port and in_pkts; everything else NULL.
    let sparse_plan = Plan {
        record_len: 10,
        dst_port: Slot::new(0, 2),
        in_pkts: Slot::new(2, 8),
        ..Plan::EMPTY
    };
    let mut sparse = 2055u16.to_be_bytes().to_vec();
    sparse.extend_from_slice(&4u64.to_be_bytes());

    let mut recs: Vec<FlowRecord<'_>> = bytes
        .iter()
        .map(|(b, a)| {
            let plan = if *a == 16 { &plan6 } else { &plan4 };
            FlowRecord::new(b, plan, &ctx, sampling(1000))
        })
        .collect();
    recs.push(FlowRecord::new(&sparse, &sparse_plan, &ctx, sampling(0)));

    let mut enc = pg::encoder();
    let mut chunks = Vec::new();
    for pair in recs.chunks(2) {
        let mut buf = BytesMut::new();
        for r in pair {
            enc.encode(r, &mut buf);
        }
        chunks.push(Chunk {
            rows: buf.freeze(),
            count: pair.len() as u64,
            oldest_received_us: received,
            position: None,
        });
    }
    assert_eq!(enc.clamped_counters(), 1, "u64::MAX clamped once");

    let mut sink = PgSink::new(pg_config(&table, None));
    for c in &chunks {
        sink.write(c).expect("write");
    }
    sink.flush().expect("flush");
    assert_eq!(sink.rows_written(), 4);

    let got = db.rows_as_text("in_pkts");
    let want: Vec<_> = recs.iter().map(expected_text).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        for (c, col) in COLUMNS.iter().enumerate() {
            assert_eq!(g[c], w[c], "row {i} column {}", col.name);
        }
    }
    // Spot checks of the policy and types, independent of the schema reader.
    let v: Vec<(Option<i64>, i32, Option<i64>)> = db
        .query(&format!(
            "SELECT in_bytes, family(exporter), sampling_rate FROM {} ORDER BY in_pkts",
            db.t()
        ))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(v[1].0, Some(i64::MAX));
    assert_eq!(
        v[2].0,
        Some(i64::MAX),
        "u64::MAX clamps, does not wrap to -1"
    );
    assert_eq!(v[3], (None, 6, Some(0)));
    assert_eq!(v[0].2, Some(1000));
    let micros = db.one_i64(&format!(
        "SELECT (extract(microseconds from time_received) % 1000000)::bigint FROM {} LIMIT 1",
        db.t()
    ));
    assert_eq!(micros, 655_555, "export .654321 + 1234 µs");

    let clamped: u64 = status_of(&mut sink, "counters_clamped")
        .and_then(|v| v.parse().ok())
        .expect("counters_clamped");
    assert!(clamped >= 1);
    assert_eq!(status_of(&mut sink, "rows_written").as_deref(), Some("4"));
    assert_eq!(status_of(&mut sink, "connected").as_deref(), Some("true"));
    let bytes: i64 = status_of(&mut sink, "table_bytes")
        .and_then(|v| v.parse().ok())
        .expect("table_bytes");
    assert!(bytes > 0);
}

/// Many COPYs of v5 records decoded by the real decoder: nothing lost, nothing doubled.
#[test]
fn totals_are_exact_over_many_flushes() {
    let table = random_table("loss");
    let db = Db::connect(&table);
    // 4000 datagrams x 30 records = 120,000 rows in chunks of 25 datagrams (750 rows).
    let (chunks, (rows, bytes, pkts)) = v5_chunks(4000, 25, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut sink = PgSink::new(pg_config(&table, None));
    let started = Instant::now();
    for (i, c) in chunks.iter().enumerate() {
        sink.write(c).expect("write");
        if i % 40 == 39 {
            sink.flush().expect("flush");
        }
    }
    sink.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{rows} rows in {secs:.2} s: {:.0} rows/s through PgSink",
        rows as f64 / secs
    );
    assert_eq!(sink.rows_written(), rows);
    db.assert_totals(rows, bytes, pkts);
    // The v5 header's sampling interval and engine ids came through.
    assert_eq!(
        db.one_i64(&format!(
            "SELECT count(*) FROM {} WHERE sampling_rate = 100 AND observation_domain = 258",
            db.t()
        )),
        rows as i64
    );
}

/// A table from an older version lacks columns: they are added, its rows are kept.
#[test]
fn missing_columns_are_added_and_rows_kept() {
    let table = random_table("evolve");
    let db = Db::connect(&table);
    db.exec(&format!(
        "CREATE TABLE {t} (time_received timestamptz, last_switched timestamptz NOT NULL, \
         src_ip inet, in_bytes bigint, note text); \
         INSERT INTO {t} VALUES (now(), now(), '192.0.2.1', 42, 'old row')",
        t = db.t()
    ));
    let (chunks, (rows, bytes, _)) = v5_chunks(10, 10, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut sink = PgSink::new(pg_config(&table, None));
    sink.write(&chunks[0]).expect("write");
    sink.flush().expect("flush");

    let cols = db.columns();
    for c in COLUMNS {
        assert!(cols.iter().any(|n| n == c.name), "column {} added", c.name);
    }
    assert!(cols.iter().any(|n| n == "note"), "no column dropped");
    assert_eq!(db.count(), rows as i64 + 1);
    assert_eq!(
        db.one_i64(&format!("SELECT sum(in_bytes)::bigint FROM {}", db.t())),
        bytes as i64 + 42
    );
    let old = db.query(&format!(
        "SELECT note, host(src_ip), exporter IS NULL FROM {} WHERE note IS NOT NULL",
        db.t()
    ));
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].get::<_, String>(0), "old row");
    assert_eq!(old[0].get::<_, String>(1), "192.0.2.1");
    assert!(old[0].get::<_, bool>(2));
    // The plain-table path indexes the time column with BRIN.
    assert_eq!(
        db.one_i64(&format!(
            "SELECT count(*) FROM pg_indexes WHERE tablename = '{table}' AND indexdef ILIKE '%USING brin (last_switched)%'"
        )),
        1
    );
}

/// max_age_days: rows older than the cut-off go (in several bounded batches), newer rows stay.
#[test]
fn retention_removes_only_old_rows() {
    let table = random_table("retain");
    let db = Db::connect(&table);
    // Create the table through a sink without retention, then age 25,000 rows by SQL.
    let mut plain = PgSink::new(pg_config(&table, None));
    plain.connect().expect("connect");
    db.exec(&format!(
        "INSERT INTO {t} (time_received, first_switched, last_switched, exporter, \
         observation_domain, sampling_rate, in_bytes) \
         SELECT now(), now() - interval '10 days', now() - interval '10 days' - g * interval '1 s', \
         '127.0.0.1', 0, 0, 1 FROM generate_series(1, 25000) g; \
         INSERT INTO {t} (time_received, first_switched, last_switched, exporter, \
         observation_domain, sampling_rate, in_bytes) \
         SELECT now(), now(), now() - interval '2 days', '127.0.0.1', 0, 0, 1000 \
         FROM generate_series(1, 30) g",
        t = db.t()
    ));
    drop(plain);

    let mut cfg = pg_config(&table, None);
    cfg.max_age_days = Some(3);
    let mut sink = PgSink::new(cfg);
    sink.connect().expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.retention_runs() == 0 {
        assert!(Instant::now() < deadline, "retention did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(db.count(), 30);
    assert_eq!(
        db.one_i64(&format!("SELECT sum(in_bytes)::bigint FROM {}", db.t())),
        30_000
    );
    assert_eq!(
        status_of(&mut sink, "retention_last_removed").as_deref(),
        Some("25000")
    );
    assert_eq!(
        status_of(&mut sink, "retention_last_error").as_deref(),
        Some("null")
    );
}

/// A column with an incompatible type is a fatal error naming the table and column; no panic,
/// and the sink keeps answering (status) and keeps reporting it.
#[test]
fn incompatible_column_type_is_fatal_and_named() {
    let table = random_table("fatal");
    let db = Db::connect(&table);
    db.exec(&format!(
        "CREATE TABLE {} (last_switched timestamptz, src_port inet)",
        db.t()
    ));
    let (chunks, _) = v5_chunks(1, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut sink = PgSink::new(pg_config(&table, None));
    for _ in 0..2 {
        let err = sink.write(&chunks[0]).expect_err("must fail");
        assert!(!err.is_retriable(), "{err}");
        let msg = err.to_string();
        eprintln!("fatal as reported: {msg}");
        assert!(msg.contains("\"src_port\""), "{msg}");
        assert!(msg.contains(&table), "{msg}");
        assert!(msg.contains("inet"), "{msg}");
        sink.abort();
    }
    let last = status_of(&mut sink, "last_error").expect("last_error");
    assert!(last.contains("src_port"), "{last}");
    assert_eq!(status_of(&mut sink, "errors").as_deref(), Some("2"));
    assert_eq!(db.count(), 0);
}

/// An error only the server finds mid-COPY (a NOT NULL column goflow leaves NULL) is fatal,
/// names the column, and the session stays usable after abort.
#[test]
fn server_side_data_error_is_fatal_and_session_recovers() {
    let table = random_table("notnull");
    let db = Db::connect(&table);
    let mut sink = PgSink::new(pg_config(&table, None));
    sink.connect().expect("connect");
    db.exec(&format!(
        "ALTER TABLE {} ALTER COLUMN direction SET NOT NULL",
        db.t()
    ));
    let (chunks, (rows, _, _)) = v5_chunks(2, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let err = sink
        .write(&chunks[0])
        .and_then(|()| sink.flush())
        .expect_err("NOT NULL violated");
    assert!(!err.is_retriable(), "{err}");
    let msg = err.to_string();
    eprintln!("fatal as reported: {msg}");
    assert!(msg.contains("23502"), "{msg}");
    assert!(msg.contains("direction"), "{msg}");
    assert!(msg.contains(&table), "{msg}");
    sink.abort();

    db.exec(&format!(
        "ALTER TABLE {} ALTER COLUMN direction DROP NOT NULL",
        db.t()
    ));
    for c in &chunks {
        sink.write(c).expect("write after abort");
    }
    sink.flush().expect("flush after abort");
    assert_eq!(db.count(), rows as i64);
    assert_eq!(sink.reconnects(), 0, "the same session carried on");
}

/// Nothing to flush: flush is a no-op and opens no COPY (no connection either).
#[test]
fn empty_flush_is_a_no_op() {
    let mut cfg = pg_config(&random_table("empty"), None);
    cfg.port = 1; // nothing listens there: any connect attempt would fail
    let mut sink = PgSink::new(cfg);
    sink.flush().expect("no-op");
    sink.write(&Chunk::default()).expect("empty chunk");
    sink.flush().expect("no-op");
    let err = {
        let (chunks, _) = v5_chunks(1, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
        sink.write(&chunks[0]).expect_err("refused")
    };
    assert!(err.is_retriable(), "connection refused is retriable: {err}");
}

/// `columns: legacy`: goflow creates the table with the old collector's eight columns only,
/// COPY names them, every row and byte arrives; a full table whose NOT NULL columns the set
/// leaves out is refused at setup, naming the column.
#[test]
fn a_column_set_makes_a_narrow_table() {
    use goflow_codec::{Decoder, DecoderConfig};
    use goflow_writers::schema::{ColumnSet, LEGACY_COLUMNS};
    let table = random_table("narrow");
    let db = Db::connect(&table);
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut enc = pg::encoder_for(ColumnSet::LEGACY);
    let mut buf = BytesMut::new();
    let (mut rows, mut bytes, mut pkts) = (0u64, 0u64, 0u64);
    for d in 0..20u32 {
        let pkt = v5_datagram(d * 30, 30, d * 30 + 1);
        decoder
            .decode(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                1_767_225_601_000_000,
                &pkt,
                |rec| {
                    enc.encode(rec, &mut buf);
                    rows += 1;
                    bytes += rec.in_bytes().unwrap_or(0);
                    pkts += rec.in_pkts().unwrap_or(0);
                },
            )
            .expect("decode");
    }
    let chunk = Chunk {
        rows: buf.split().freeze(),
        count: rows,
        oldest_received_us: 1_767_225_601_000_000,
        position: None,
    };
    let cfg = goflow_writers::pg::PgConfig {
        columns: ColumnSet::LEGACY,
        ..pg_config(&table, None)
    };
    let mut sink = PgSink::new(cfg.clone());
    sink.write(&chunk).expect("write");
    sink.flush().expect("flush");
    let mut cols = db.columns();
    cols.sort();
    let mut want: Vec<String> = LEGACY_COLUMNS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(cols, want, "only the set's columns");
    db.assert_totals(rows, bytes, pkts);

    // A table goflow made with every column: time_received is NOT NULL, legacy leaves it out.
    let full = random_table("narrowfull");
    let db2 = Db::connect(&full);
    db2.exec(&goflow_writers::pg::ddl::create_table(&full));
    let mut sink = PgSink::new(goflow_writers::pg::PgConfig {
        columns: ColumnSet::LEGACY,
        ..pg_config(&full, None)
    });
    let err = sink
        .write(&chunk)
        .and_then(|()| sink.flush())
        .expect_err("refused");
    assert!(!err.is_retriable(), "{err}");
    assert!(
        err.to_string().contains("time_received") && err.to_string().contains("columns:"),
        "{err}"
    );
}
