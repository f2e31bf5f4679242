//! MysqlSink against a real MariaDB/MySQL (GOFLOW_TEST_MYSQL=host:port; skipped with a printed
//! line when unset), a fresh table per test: every column read back (NULLs, IPv6, microsecond
//! times, u64 maxima), addresses made of the bytes LOAD DATA escapes read back with INET6_NTOA,
//! exact totals over many LOADs and two lanes, the old collector's table extended in place,
//! positions stored with the rows, bad credentials, an outage through a TCP proxy, retention
//! (day partitions dropped, DELETE batches).

#![cfg(feature = "mysql")]

mod mysql_common;
mod pg_common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use goflow_codec::{FlowRecord, Plan, Slot};
use goflow_writers::backend::{Backend, BackendOptions};
use goflow_writers::mysql::{self, MysqlSink};
use goflow_writers::sink::{Chunk, Position, RowEncoder, Sink, SinkError, Stream};
use mysql_common::*;
use pg_common::proxy::Proxy;
use pg_common::{Wide, sampling, wide_bytes, wide_ctx, wide_plan};

fn status_of(sink: &mut MysqlSink, key: &str) -> Option<String> {
    sink.status()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn chunk_of(recs: &[FlowRecord<'_>], received: i64) -> Chunk {
    let mut enc = mysql::encoder();
    let mut buf = BytesMut::new();
    for r in recs {
        enc.encode(r, &mut buf);
    }
    Chunk {
        rows: buf.freeze(),
        count: recs.len() as u64,
        oldest_received_us: received,
        position: None,
    }
}

/// Every column of every kind of record survives the trip: IPv4 and IPv6, NULLs for absent
/// fields, microsecond times, sampling rate, u64 counters up to u64::MAX (BIGINT UNSIGNED).
#[test]
fn every_column_reads_back() {
    let Some(server) = server("every_column_reads_back") else {
        return;
    };
    let table = random_table("cols");
    let mut db = Db::connect(&server, &table);
    let export = 1_767_225_600_654_321; // 2026-01-01T00:00:00.654321Z
    let received = export + 1_234;
    let ctx = wide_ctx(export, received);
    let (plan6, plan4) = (wide_plan(16), wide_plan(4));
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().expect("v6"));
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let wide = |src, dst, next_hop, in_bytes, in_pkts, end_us| Wide {
        src,
        dst,
        next_hop,
        src_port: 65535,
        in_bytes,
        in_pkts,
        direction: 1,
        start_delta_us: 1_500_001,
        end_us,
    };
    let wides = [
        (
            wide(
                v6("2001:db8::1"),
                v6("2001:db8:ffff::abcd"),
                v6("fe80::1"),
                1,
                1,
                export - 999_999,
            ),
            16,
        ),
        (
            wide(
                v4(10, 0, 0, 1),
                v4(255, 255, 255, 255),
                v4(0, 0, 0, 0),
                i64::MAX as u64 + 1,
                2,
                export - 3,
            ),
            4,
        ),
        (
            wide(
                v6("::1"),
                v6("2001:db8::"),
                v6("::"),
                u64::MAX,
                u64::MAX,
                946_684_800_000_001,
            ),
            16,
        ),
    ];
    let bytes: Vec<(Vec<u8>, u16)> = wides.iter().map(|(w, a)| (wide_bytes(w, *a), *a)).collect();
    // Almost nothing: only dst_port and in_pkts; everything else NULL.
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
            FlowRecord::new(
                b,
                if *a == 16 { &plan6 } else { &plan4 },
                &ctx,
                sampling(1000),
            )
        })
        .collect();
    recs.push(FlowRecord::new(&sparse, &sparse_plan, &ctx, sampling(0)));

    let mut sink = MysqlSink::new(config(&server, &table, None));
    for pair in recs.chunks(2) {
        sink.write(&chunk_of(pair, received)).expect("write");
    }
    sink.flush().expect("flush");
    assert_eq!(sink.rows_written(), 4);
    assert_eq!(status_of(&mut sink, "rejected_loads").as_deref(), Some("0"));

    let mut want: Vec<Vec<Option<String>>> = recs.iter().map(expected_text).collect();
    want.sort();
    let mut got: Vec<Vec<Option<String>>> = db
        .rows_as_text("last_switched")
        .into_iter()
        .map(normalise)
        .collect();
    got.sort();
    assert_eq!(got, want);
    let max = db.one(&format!(
        "SELECT CAST(MAX(in_bytes) AS CHAR) FROM {}",
        db.t()
    ));
    assert_eq!(max.as_deref(), Some("18446744073709551615"));
    let nulls = db.one(&format!(
        "SELECT COUNT(*) FROM {} WHERE src_ip IS NULL AND in_bytes IS NULL AND src_port IS NULL",
        db.t()
    ));
    assert_eq!(nulls.as_deref(), Some("1"), "the sparse record's NULLs");
}

/// Addresses made of the bytes LOAD DATA treats specially (0x00, 0x09, 0x0A, 0x0D, 0x1A,
/// 0x5C) come back byte for byte, read with INET6_NTOA.
#[test]
fn escaped_address_bytes_read_back() {
    let Some(server) = server("escaped_address_bytes_read_back") else {
        return;
    };
    let table = random_table("esc");
    let mut db = Db::connect(&server, &table);
    let special = [0x00u8, 0x09, 0x0a, 0x0d, 0x1a, 0x5c];
    let mut addrs: Vec<(IpAddr, u16)> = Vec::new();
    for (i, b) in special.iter().enumerate() {
        let n = special[(i + 1) % special.len()];
        addrs.push((IpAddr::V4(Ipv4Addr::new(*b, n, *b, b'N')), 4));
        let mut v6 = [*b; 16];
        v6[0] = b'\\';
        v6[15] = n;
        addrs.push((IpAddr::V6(Ipv6Addr::from(v6)), 16));
    }
    addrs.push((IpAddr::V4(Ipv4Addr::new(0x5c, b'N', 0x09, 0x0a)), 4));
    let ctx = wide_ctx(1_767_225_600_000_000, 1_767_225_600_000_001);
    let (plan6, plan4) = (wide_plan(16), wide_plan(4));
    let bytes: Vec<(Vec<u8>, u16)> = addrs
        .iter()
        .enumerate()
        .map(|(i, (ip, len))| {
            let w = Wide {
                src: *ip,
                dst: *ip,
                next_hop: *ip,
                src_port: i as u16,
                in_bytes: 1,
                in_pkts: 1,
                direction: 0,
                start_delta_us: 0,
                // Later rows end earlier: the flush's sort reorders lines that hold escaped
                // TAB and LF bytes, and each must stay whole.
                end_us: 1_767_225_599_000_000 - i as i64 * 1_000,
            };
            (wide_bytes(&w, *len), *len)
        })
        .collect();
    let recs: Vec<FlowRecord<'_>> = bytes
        .iter()
        .map(|(b, a)| FlowRecord::new(b, if *a == 16 { &plan6 } else { &plan4 }, &ctx, sampling(1)))
        .collect();
    let mut sink = MysqlSink::new(config(&server, &table, None));
    sink.write(&chunk_of(&recs, 0)).expect("write");
    sink.flush().expect("flush");
    let got = db.rows(&format!(
        "SELECT src_port, INET6_NTOA(src_ip), INET6_NTOA(dst_ip), INET6_NTOA(next_hop), \
         LENGTH(src_ip) FROM {} ORDER BY src_port",
        db.t()
    ));
    assert_eq!(got.len(), addrs.len());
    for (row, (ip, len)) in got.iter().zip(&addrs) {
        for v in &row[1..4] {
            let back: IpAddr = v.as_deref().expect("address").parse().expect("parse");
            assert_eq!(back, *ip, "row {row:?}");
        }
        assert_eq!(row[4].as_deref(), Some(len.to_string().as_str()));
    }
}

/// v5 streams over many LOADs, through the backend with two lanes: exact count and sums.
#[test]
fn totals_are_exact_over_many_loads_and_two_lanes() {
    let Some(server) = server("totals_are_exact_over_many_loads_and_two_lanes") else {
        return;
    };
    let table = random_table("lanes");
    let mut db = Db::connect(&server, &table);
    let (chunks, (rows, bytes, pkts)) = v5_chunks(400, 5, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let sinks: Vec<Box<dyn Sink>> = MysqlSink::lanes(config(&server, &table, None), 2)
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn Sink>)
        .collect();
    let mut opts = BackendOptions::new("my", "mysql");
    opts.flush_rows = 3_000;
    let backend = Backend::spawn_lanes(sinks, opts).expect("spawn");
    let sender = backend.sender();
    for c in chunks {
        assert!(sender.try_send(c), "queued");
    }
    let stats = Arc::clone(backend.stats());
    backend.shutdown();
    assert_eq!(stats.rows_dropped(), 0);
    db.assert_totals(rows, bytes, pkts);
    assert_eq!(rows, 12_000);
}

/// The old Go collector's table (its exact DDL) is extended in place: its row is kept, the
/// schema's columns are added, counters widened to 64 bits, and new rows are loaded in its
/// layout (IPv4 as INT UNSIGNED, IPv6 into src_ipv6/dst_ipv6).
#[test]
fn old_collectors_table_is_extended_in_place() {
    let Some(server) = server("old_collectors_table_is_extended_in_place") else {
        return;
    };
    let table = random_table("old");
    let mut db = Db::connect(&server, &table);
    let t = db.t();
    db.exec(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (last_switched datetime NOT NULL, \
         src_ip int(4) unsigned DEFAULT NULL, src_port int(2) unsigned NOT NULL, \
         dst_ip int(4) unsigned DEFAULT NULL, dst_port int(2) unsigned NOT NULL, \
         in_bytes int(8) unsigned NOT NULL, in_pkts int(8) unsigned NOT NULL, \
         protocol int(1) unsigned NOT NULL, src_ipv6 varbinary(16) DEFAULT NULL, \
         dst_ipv6 varbinary(16) DEFAULT NULL, INDEX last_switched_idx (last_switched))"
    ));
    db.exec(&format!(
        "INSERT INTO {t} VALUES (FROM_UNIXTIME(1500000000), INET_ATON('192.0.2.1'), 1, \
         INET_ATON('192.0.2.2'), 2, 4000000000, 3, 6, NULL, NULL)"
    ));
    let ctx = wide_ctx(1_767_225_600_000_000, 1_767_225_600_000_001);
    let (plan6, plan4) = (wide_plan(16), wide_plan(4));
    let w = |src: IpAddr, in_bytes| Wide {
        src,
        dst: src,
        next_hop: src,
        src_port: 9,
        in_bytes,
        in_pkts: 1,
        direction: 0,
        start_delta_us: 0,
        end_us: 1_767_225_599_123_456,
    };
    let b4 = wide_bytes(
        &w(IpAddr::V4(Ipv4Addr::new(10, 9, 0x0a, 0x5c)), u64::MAX),
        4,
    );
    let b6 = wide_bytes(&w("2001:db8::9".parse().expect("v6"), 5), 16);
    let recs = [
        FlowRecord::new(&b4, &plan4, &ctx, sampling(1)),
        FlowRecord::new(&b6, &plan6, &ctx, sampling(1)),
    ];
    let mut sink = MysqlSink::new(config(&server, &table, None));
    sink.write(&chunk_of(&recs, 0)).expect("write");
    sink.flush().expect("flush into the old table");

    let cols = db.columns();
    for c in [
        "src_ipv6",
        "dst_ipv6",
        "exporter",
        "time_received",
        "ip_version",
    ] {
        assert!(cols.iter().any(|n| n == c), "{c} in {cols:?}");
    }
    let rows = db.rows(&format!(
        "SELECT INET_NTOA(src_ip), INET6_NTOA(src_ipv6), CAST(in_bytes AS CHAR), src_port, \
         CAST(MICROSECOND(last_switched) AS CHAR), INET6_NTOA(exporter) \
         FROM {t} ORDER BY last_switched, src_ip"
    ));
    assert_eq!(rows.len(), 3);
    // The old row, untouched (its new columns NULL).
    assert_eq!(rows[0][0].as_deref(), Some("192.0.2.1"));
    assert_eq!(rows[0][2].as_deref(), Some("4000000000"));
    assert_eq!(rows[0][5], None);
    // IPv6 flow: src_ip NULL, address in src_ipv6.
    assert_eq!(rows[1][0], None);
    assert_eq!(rows[1][1].as_deref(), Some("2001:db8::9"));
    // IPv4 flow: the integer form, a u64::MAX counter after widening, microseconds kept.
    assert_eq!(rows[2][0].as_deref(), Some("10.9.10.92"));
    assert_eq!(rows[2][1], None);
    assert_eq!(rows[2][2].as_deref(), Some("18446744073709551615"));
    assert_eq!(rows[2][4].as_deref(), Some("123456"));
    assert!(rows[2][5].is_some());
}

/// A table goflow cannot write (a text address) is a fatal error naming the column.
#[test]
fn incompatible_column_is_fatal_and_named() {
    let Some(server) = server("incompatible_column_is_fatal_and_named") else {
        return;
    };
    let table = random_table("bad");
    let mut db = Db::connect(&server, &table);
    let t = db.t();
    db.exec(&format!(
        "CREATE TABLE {t} (last_switched DATETIME(6) NOT NULL, src_ip VARCHAR(45))"
    ));
    let mut sink = MysqlSink::new(config(&server, &table, None));
    let (chunks, _) = v5_chunks(1, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    sink.write(&chunks[0]).expect("write");
    let err = sink.flush().expect_err("incompatible");
    assert!(!err.is_retriable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`src_ip`") && text.contains("varchar(45)"),
        "{text}"
    );
    assert_eq!(db.count(), 0);
}

/// Bad credentials: a clear, fatal error naming the keys; nothing panics, and the sink works
/// once given the right ones (a new sink, as after a config fix).
#[test]
fn bad_credentials_are_a_clear_fatal_error() {
    let Some(server) = server("bad_credentials_are_a_clear_fatal_error") else {
        return;
    };
    let table = random_table("creds");
    let _db = Db::connect(&server, &table);
    let mut cfg = config(&server, &table, None);
    cfg.user = "goflow_no_such_user".into();
    cfg.password = Some("wrong".into());
    let mut sink = MysqlSink::new(cfg);
    let (chunks, _) = v5_chunks(1, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    sink.write(&chunks[0]).expect("write");
    let err = sink.flush().expect_err("access denied");
    assert!(!err.is_retriable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("1045") || text.contains("1698"), "{text}");
    assert!(
        text.contains("SQL_USERNAME") && text.contains("SQL_PASSWORD"),
        "{text}"
    );
    assert!(status_of(&mut sink, "last_error").is_some_and(|e| e.contains("SQL_PASSWORD")));
    let err = mysql::sink::check(&config(&server, &table, None)).map(|_| ());
    assert!(err.is_ok(), "{err:?}");
    let mut bad_db = config(&server, &table, None);
    bad_db.dbname = "goflow_no_such_db".into();
    let text = mysql::sink::check(&bad_db)
        .expect_err("unknown db")
        .to_string();
    assert!(text.contains("SQL_DB"), "{text}");
}

#[derive(Debug)]
struct TestStream(String);

impl Stream for TestStream {
    fn name(&self) -> &str {
        &self.0
    }
}

/// Positions are stored with the rows and read back by prefix.
#[test]
fn positions_are_stored_with_the_rows() {
    let Some(server) = server("positions_are_stored_with_the_rows") else {
        return;
    };
    let table = random_table("pos");
    let mut db = Db::connect(&server, &table);
    let (mut chunks, (rows, bytes, pkts)) = v5_chunks(6, 2, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let a: Arc<dyn Stream> = Arc::new(TestStream("spool/a".into()));
    let b: Arc<dyn Stream> = Arc::new(TestStream("kafka/g/t/0".into()));
    chunks[0].position = Some(Position {
        stream: Arc::clone(&a),
        next: 5,
    });
    chunks[1].position = Some(Position {
        stream: Arc::clone(&b),
        next: 77,
    });
    chunks[2].position = Some(Position {
        stream: Arc::clone(&a),
        next: 9,
    });
    let mut sink = MysqlSink::new(config(&server, &table, None));
    for c in &chunks {
        sink.write(c).expect("write");
    }
    sink.flush().expect("flush");
    db.assert_totals(rows, bytes, pkts);
    assert_eq!(
        sink.committed_positions("spool/").expect("read"),
        Some(vec![("spool/a".to_string(), 9)])
    );
    assert_eq!(
        sink.committed_positions("").expect("read").map(|v| v.len()),
        Some(2)
    );
    // A position-only flush (no rows) is stored too.
    let empty = Chunk {
        position: Some(Position {
            stream: a,
            next: 10,
        }),
        ..Chunk::default()
    };
    sink.write(&empty).expect("write");
    sink.flush().expect("flush");
    assert_eq!(
        sink.committed_positions("spool/").expect("read"),
        Some(vec![("spool/a".to_string(), 10)])
    );
}

/// Writes `chunks` as one flush; on error aborts and returns it.
fn try_flush(sink: &mut MysqlSink, chunks: &[Chunk]) -> Result<(), SinkError> {
    let result = chunks
        .iter()
        .try_for_each(|c| sink.write(c))
        .and_then(|()| sink.flush());
    if result.is_err() {
        sink.abort();
    }
    result
}

/// An outage: the proxy between the sink and the server is cut (connections closed, new ones
/// refused) for a few seconds while flushes keep coming; retried like the backend retries,
/// every row ends up stored exactly once and the reconnect is counted. Then the same through
/// the backend thread with two lanes.
#[test]
fn outage_through_a_proxy_loses_nothing() {
    let Some(server) = server("outage_through_a_proxy_loses_nothing") else {
        return;
    };
    let table = random_table("outage");
    let mut db = Db::connect(&server, &table);
    let proxy = Proxy::start(server.clone());
    let mut sink = MysqlSink::new(config(&server, &table, Some(proxy.port)));
    let (chunks, (rows, bytes, pkts)) = v5_chunks(600, 25, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let flushes: Vec<&[Chunk]> = chunks.chunks(4).collect();
    try_flush(&mut sink, flushes[0]).expect("first flush");
    proxy.cut();
    let cut_at = Instant::now();
    let mut failed = 0;
    let mut next = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < flushes.len() {
        assert!(
            Instant::now() < deadline,
            "no recovery after {failed} failures"
        );
        if cut_at.elapsed() > Duration::from_secs(3) {
            proxy.restore();
        }
        match try_flush(&mut sink, flushes[next]) {
            Ok(()) => next += 1,
            Err(e) => {
                assert!(e.is_retriable(), "outage errors are retriable: {e}");
                failed += 1;
                thread::sleep(Duration::from_millis(200)); // the backend's backoff
            }
        }
    }
    assert!(failed > 0, "the cut was noticed");
    assert!(sink.reconnects() >= 1);
    db.assert_totals(rows, bytes, pkts);

    // Through the backend thread, two lanes, cut while chunks stream in.
    db.exec(&format!("TRUNCATE TABLE {}", db.t()));
    let sinks: Vec<Box<dyn Sink>> = MysqlSink::lanes(config(&server, &table, Some(proxy.port)), 2)
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn Sink>)
        .collect();
    let mut opts = BackendOptions::new("my", "mysql");
    opts.flush_rows = 1_500;
    opts.flush_interval = Duration::from_millis(100);
    let backend = Backend::spawn_lanes(sinks, opts).expect("spawn");
    let sender = backend.sender();
    for (i, c) in chunks.into_iter().enumerate() {
        if i == 5 {
            proxy.cut();
        }
        if i == 15 {
            thread::sleep(Duration::from_secs(2));
            proxy.restore();
        }
        assert!(sender.try_send(c), "queued");
    }
    let stats = Arc::clone(backend.stats());
    backend.shutdown();
    assert_eq!(stats.rows_dropped(), 0);
    db.assert_totals(rows, bytes, pkts);
}

/// Retention on goflow's own (partitioned) table: whole old days are dropped, today's rows
/// and the days ahead stay; on a plain table old rows go in DELETE batches.
#[test]
fn retention_drops_old_partitions_and_deletes_old_rows() {
    let Some(server) = server("retention_drops_old_partitions_and_deletes_old_rows") else {
        return;
    };
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let today = now_us.div_euclid(86_400_000_000);
    let day_us = 86_400_000_000i64;

    // Rows of a given age, as a chunk.
    let ctx = wide_ctx(now_us, now_us);
    let plan = wide_plan(4);
    let aged = |ages_days: &[i64]| -> Chunk {
        let bytes: Vec<Vec<u8>> = ages_days
            .iter()
            .map(|age| {
                wide_bytes(
                    &Wide {
                        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                        next_hop: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
                        src_port: 1,
                        in_bytes: 1,
                        in_pkts: 1,
                        direction: 0,
                        start_delta_us: 0,
                        end_us: now_us - age * day_us,
                    },
                    4,
                )
            })
            .collect();
        let recs: Vec<FlowRecord<'_>> = bytes
            .iter()
            .map(|b| FlowRecord::new(b, &plan, &ctx, sampling(1)))
            .collect();
        chunk_of(&recs, now_us)
    };

    // Partitioned: created by goflow with max_age set.
    let table = random_table("ret");
    let mut db = Db::connect(&server, &table);
    let mut cfg = config(&server, &table, None);
    cfg.max_age_days = Some(3);
    let mut sink = MysqlSink::new(cfg.clone());
    sink.connect().expect("connect");
    assert!(
        sink.partitioned(),
        "goflow's own table is partitioned by day"
    );
    // Lane 0 ran retention once at start (on the empty table); stop it before making history.
    pg_common::wait_for("the first retention run", 30, || sink.retention_runs() >= 1);
    assert_eq!(
        status_of(&mut sink, "retention_last_error").as_deref(),
        Some("null")
    );
    drop(sink);
    cfg.max_age_days = None;
    let mut sink = MysqlSink::new(cfg.clone());
    // History: split the first day partition so that days 10 and 5 ago have their own.
    let t = db.t();
    let first = mysql::ddl::partition_name(today);
    let bound = |d: i64| d + 1 + mysql::ddl::TO_DAYS_UNIX_EPOCH;
    db.exec(&format!(
        "ALTER TABLE {t} REORGANIZE PARTITION {first} INTO (\
         PARTITION {} VALUES LESS THAN ({}), PARTITION {} VALUES LESS THAN ({}), \
         PARTITION {first} VALUES LESS THAN ({}))",
        mysql::ddl::partition_name(today - 10),
        bound(today - 10),
        mysql::ddl::partition_name(today - 5),
        bound(today - 5),
        bound(today)
    ));
    sink.write(&aged(&[10, 10, 5, 2, 0, 0])).expect("write");
    sink.flush().expect("flush");
    assert_eq!(sink.retention_runs(), 0, "no retention without max_age");
    drop(sink);
    let mut conn_db = ConnFor::new(&cfg);
    let (parts, deleted) = conn_db.prune(3, now_us);
    assert_eq!((parts, deleted), (2, 0), "days 10 and 5 ago dropped whole");
    assert_eq!(db.count(), 3, "two days ago and today stay");
    let names = db.rows(&format!(
        "SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = \
         DATABASE() AND TABLE_NAME = '{table}' ORDER BY PARTITION_ORDINAL_POSITION"
    ));
    let names: Vec<String> = names.into_iter().filter_map(|r| r[0].clone()).collect();
    assert!(
        names.contains(&mysql::ddl::partition_name(today + 2)),
        "{names:?}"
    );
    assert_eq!(names.last().map(String::as_str), Some("pfuture"));

    // Plain (created without max_age): DELETE in batches of 10,000.
    let table2 = random_table("ret2");
    let mut db2 = Db::connect(&server, &table2);
    let mut cfg2 = config(&server, &table2, None);
    let mut sink = MysqlSink::new(cfg2.clone());
    let old: Vec<i64> = vec![9; 12_345];
    sink.write(&aged(&old)).expect("write");
    sink.write(&aged(&[1, 0])).expect("write");
    sink.flush().expect("flush");
    assert!(!sink.partitioned());
    cfg2.max_age_days = Some(3);
    let (parts, deleted) = ConnFor::new(&cfg2).prune(3, now_us);
    assert_eq!((parts, deleted), (0, 12_345));
    assert_eq!(db2.count(), 2);
}

/// A connection for calling ddl functions directly.
struct ConnFor {
    rt: tokio::runtime::Runtime,
    conn: mysql_async::Conn,
    table: String,
}

impl ConnFor {
    fn new(cfg: &goflow_writers::mysql::MysqlConfig) -> ConnFor {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(cfg.host.clone())
            .tcp_port(cfg.port)
            .user(Some(cfg.user.clone()))
            .pass(cfg.password.clone())
            .db_name(Some(cfg.dbname.clone()))
            .prefer_socket(false)
            .init(vec!["SET SESSION time_zone = '+00:00'"]);
        let conn = rt.block_on(mysql_async::Conn::new(opts)).expect("connect");
        ConnFor {
            rt,
            conn,
            table: cfg.table.clone(),
        }
    }

    fn prune(&mut self, days: u32, now_us: i64) -> (u64, u64) {
        self.rt
            .block_on(mysql::ddl::prune(&mut self.conn, &self.table, days, now_us))
            .expect("prune")
    }
}

/// LOAD DATA LOCAL only warns about bad lines: a line short of columns, or a chunk claiming
/// more rows than it holds, fails the flush loudly (fatal, warnings quoted) and stores nothing.
#[test]
fn warnings_or_a_row_mismatch_fail_the_load_and_store_nothing() {
    let Some(server) = server("warnings_or_a_row_mismatch_fail_the_load_and_store_nothing") else {
        return;
    };
    let table = random_table("warn");
    let mut db = Db::connect(&server, &table);
    let (chunks, _) = v5_chunks(2, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut sink = MysqlSink::new(config(&server, &table, None));
    sink.write(&chunks[0]).expect("write");
    sink.write(&Chunk {
        rows: bytes::Bytes::from_static(b"2026-01-01 00:00:00.000000\tshort line\n"),
        count: 1,
        ..Chunk::default()
    })
    .expect("write");
    let err = sink.flush().expect_err("warnings");
    assert!(!err.is_retriable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("warnings") && text.contains("rolled back"),
        "{text}"
    );
    assert!(
        text.contains("Warning 1261") || text.contains("Warning"),
        "{text}"
    );
    sink.abort();
    assert_eq!(db.count(), 0, "nothing of the flush is stored");

    let mut wrong = chunks[1].clone();
    wrong.count += 1;
    sink.write(&wrong).expect("write");
    let err = sink.flush().expect_err("row mismatch");
    assert!(err.to_string().contains("stored 30 of 31 rows"), "{err}");
    sink.abort();
    assert_eq!(db.count(), 0);
    assert_eq!(status_of(&mut sink, "rejected_loads").as_deref(), Some("2"));

    // The connection is still good: the right chunk goes through.
    sink.write(&chunks[1]).expect("write");
    sink.flush().expect("flush");
    assert_eq!(db.count(), 30);
}

/// SQL_SSLMODE against a server without TLS (the test MariaDB has `have_ssl = DISABLED`):
/// `prefer` falls back to plain TCP and writes; `require` is a fatal error that names the key.
#[test]
fn sslmode_prefer_falls_back_and_require_refuses_a_server_without_tls() {
    let Some(server) = server("sslmode_prefer_falls_back_and_require_refuses_a_server_without_tls")
    else {
        return;
    };
    let table = random_table("tls");
    let mut db = Db::connect(&server, &table);
    if db.one("SELECT @@have_ssl").as_deref() == Some("YES") {
        println!("skipping the no-TLS cases: this server offers TLS");
        return;
    }
    let (chunks, (rows, bytes, pkts)) = v5_chunks(2, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut cfg = config(&server, &table, None);
    cfg.sslmode = mysql::SslMode::Prefer;
    let mut sink = MysqlSink::new(cfg.clone());
    for c in &chunks {
        sink.write(c).expect("write");
    }
    sink.flush().expect("prefer: plain TCP");
    db.assert_totals(rows, bytes, pkts);
    assert_eq!(status_of(&mut sink, "tls").as_deref(), Some("false"));

    cfg.sslmode = mysql::SslMode::Require;
    let mut sink = MysqlSink::new(cfg);
    sink.write(&chunks[0]).expect("write");
    let err = sink.flush().expect_err("require without TLS");
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("SQL_SSLMODE is require"), "{err}");
}

/// `columns: legacy`: a table with the old collector's eight columns only, LOAD DATA names
/// them, every row and byte arrives.
#[test]
fn a_column_set_makes_a_narrow_table() {
    use goflow_codec::{Decoder, DecoderConfig};
    use goflow_writers::schema::{ColumnSet, LEGACY_COLUMNS};
    let Some(server) = server("a_column_set_makes_a_narrow_table") else {
        return;
    };
    let table = random_table("narrow");
    let mut db = Db::connect(&server, &table);
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut enc = mysql::encoder_for(ColumnSet::LEGACY);
    let mut buf = BytesMut::new();
    let (mut rows, mut bytes, mut pkts) = (0u64, 0u64, 0u64);
    for d in 0..20u32 {
        let pkt = pg_common::v5_datagram(d * 30, 30, d * 30 + 1);
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
    let mut sink = MysqlSink::new(mysql::MysqlConfig {
        columns: ColumnSet::LEGACY,
        ..config(&server, &table, None)
    });
    sink.connect().expect("connect");
    sink.write(&chunk).expect("write");
    sink.flush().expect("flush");
    let mut cols = db.columns();
    cols.sort();
    let mut want: Vec<String> = LEGACY_COLUMNS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(cols, want, "only the set's columns");
    db.assert_totals(rows, bytes, pkts);
}
